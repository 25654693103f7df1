from django.urls import path

from . import views

urlpatterns = [
    path("rooms/<slug:slug>/transcript.<str:extension>", views.transcript, name="transcript"),
    path("api/transcription-session", views.transcription_session,
         name="transcription_session"),
]
