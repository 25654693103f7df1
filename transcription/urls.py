from django.urls import path

from . import views

urlpatterns = [
    path("rooms/<slug:slug>/transcript.<str:extension>", views.transcript, name="transcript"),
]
