from django.urls import path

from .consumers import RealtimeConsumer

# Served outside the Origin check: key-authenticated API clients (the OpenAI SDK) send no
# Origin; the consumer checks it itself when a page authenticates with its cookie.
websocket_urlpatterns = [
    path("v1/realtime", RealtimeConsumer.as_asgi()),
]
