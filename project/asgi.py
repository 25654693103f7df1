"""ASGI entry point served by daphne: HTTP to Django, WebSockets through Channels.

Room sockets pass the Origin check (exactly our own origin: rooms/origin.py); `/v1/` API
sockets are key-authenticated. All carry the Django session and user.
"""

import os

from django.core.asgi import get_asgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "project.settings")
django_asgi_app = get_asgi_application()

from channels.auth import AuthMiddlewareStack  # noqa: E402
from channels.routing import ProtocolTypeRouter, URLRouter  # noqa: E402
from django.conf import settings  # noqa: E402

import rooms.routing  # noqa: E402
import signaling.routing  # noqa: E402
import signaling.sfu.routing  # noqa: E402
import transcription.routing  # noqa: E402
from project import transport  # noqa: E402
from rooms.origin import SameOriginValidator  # noqa: E402

transport.install(settings.PARLEY["MAX_OUTBOUND_BYTES"])

websocket_urlpatterns = [
    *rooms.routing.websocket_urlpatterns,
    *signaling.routing.websocket_urlpatterns,
    *signaling.sfu.routing.websocket_urlpatterns,
    *transcription.routing.room_websocket_urlpatterns,
]

room_sockets = SameOriginValidator(AuthMiddlewareStack(URLRouter(websocket_urlpatterns)))
api_sockets = AuthMiddlewareStack(URLRouter(transcription.routing.websocket_urlpatterns))


async def websockets(scope, receive, send):
    """`/v1/...` sockets authenticate by key (no Origin from API clients); all others must
    come from our own pages."""
    app = api_sockets if scope["path"].startswith("/v1/") else room_sockets
    return await app(scope, receive, send)


application = ProtocolTypeRouter({"http": django_asgi_app, "websocket": websockets})
