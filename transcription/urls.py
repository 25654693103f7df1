from django.urls import path

from . import calls, views

urlpatterns = [
    path("rooms/<slug:slug>/transcript.json", views.recent_transcript, name="recent_transcript"),
    path("rooms/<slug:slug>/captions/", views.captions_page, name="captions"),
    path("rooms/<slug:slug>/captions/stream", views.caption_stream, name="caption_stream"),
    path("rooms/<slug:slug>/captions/overlay", views.caption_overlay, name="caption_overlay"),
    path("rooms/<slug:slug>/transcript.<str:extension>", views.transcript, name="transcript"),
    path("v1/realtime/calls", calls.create_call, name="realtime_calls"),
    path("api/transcription-session", views.transcription_session,
         name="transcription_session"),
    path("rooms/<slug:slug>/assistant", views.assistant_status, name="assistant_status"),
    path("rooms/<slug:slug>/assistant/invite", views.assistant_invite,
         name="assistant_invite"),
    path("rooms/<slug:slug>/assistant/remove", views.assistant_remove,
         name="assistant_remove"),
    path("rooms/<slug:slug>/assistant/page", views.assistant_page, name="assistant_page"),
    path("rooms/<slug:slug>/assistant/voice", views.assistant_voice, name="assistant_voice"),
]
