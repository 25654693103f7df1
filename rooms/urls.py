from django.urls import path

from . import accounts, views

urlpatterns = [
    path("", views.lobby, name="lobby"),
    path("rooms/", views.create_room, name="create_room"),
    path("rooms/<slug:slug>/", views.room, name="room"),
    path("rooms/<slug:slug>/join/", views.join_room, name="join_room"),
    path("rooms/<slug:slug>/members/", views.add_member, name="add_member"),
    path("rooms/<slug:slug>/members/<int:user_id>/remove/", views.remove_member,
         name="remove_member"),
    path("healthz", views.healthz, name="healthz"),
    path("favicon.ico", views.favicon, name="favicon"),
    path("accounts/signup/", accounts.signup, name="signup"),
]
