"""ASGI entry point served by daphne: HTTP to Django, WebSockets through Channels.

Sockets pass the Origin check (hosts in ALLOWED_HOSTS) and carry the Django session and user.
"""

import os

from django.core.asgi import get_asgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "project.settings")
django_asgi_app = get_asgi_application()

from channels.auth import AuthMiddlewareStack  # noqa: E402
from channels.routing import ProtocolTypeRouter, URLRouter  # noqa: E402
from channels.security.websocket import AllowedHostsOriginValidator  # noqa: E402

import rooms.routing  # noqa: E402
import signaling.routing  # noqa: E402
import signaling.sfu.routing  # noqa: E402

websocket_urlpatterns = [
    *rooms.routing.websocket_urlpatterns,
    *signaling.routing.websocket_urlpatterns,
    *signaling.sfu.routing.websocket_urlpatterns,
]

application = ProtocolTypeRouter(
    {
        "http": django_asgi_app,
        "websocket": AllowedHostsOriginValidator(
            AuthMiddlewareStack(URLRouter(websocket_urlpatterns))
        ),
    }
)
