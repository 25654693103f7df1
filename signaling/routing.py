from django.urls import path

from .consumers import SignalConsumer

websocket_urlpatterns = [
    path("ws/signal/<slug:slug>/", SignalConsumer.as_asgi()),
]
