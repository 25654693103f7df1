from django.urls import path

from . import views

urlpatterns = [
    path("rooms/<slug:slug>/direct/<str:mode>/", views.direct, name="direct_call"),
    path("rooms/<slug:slug>/call/", views.group_call, name="group_call"),
    path("rooms/<slug:slug>/ice-servers/", views.ice_servers, name="ice_servers"),
]
