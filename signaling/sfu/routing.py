from django.urls import path

from .consumers import SfuConsumer

websocket_urlpatterns = [
    path("ws/sfu/<slug:slug>/", SfuConsumer.as_asgi()),
]
