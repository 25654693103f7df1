from django.urls import path

from .consumers import CaptionReportConsumer, RealtimeConsumer

# Served outside the Origin check: key-authenticated API clients (the OpenAI SDK) send no
# Origin; the consumer checks it itself when a page authenticates with its cookie.
websocket_urlpatterns = [
    path("v1/realtime", RealtimeConsumer.as_asgi()),
]

# Room sockets (Origin-checked, session-authenticated like the chat's).
room_websocket_urlpatterns = [
    path("ws/captions/<slug:slug>/", CaptionReportConsumer.as_asgi()),
]
