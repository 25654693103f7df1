"""Same-origin checks for sockets opened by Parley's own pages (issue #10, item 12).

Channels' AllowedHostsOriginValidator compares only the Origin's host with ALLOWED_HOSTS, so
`http://127.0.0.1:9` (another port, another scheme: another site to the browser) passed. A
page's socket must come from exactly the origin it was served from, scheme and port
included, the way CSRF checks a POST: the Host it asked for, with the scheme of the request
(daphne's --proxy-headers sets it from X-Forwarded-Proto behind a TLS proxy), or an origin
listed in CSRF_TRUSTED_ORIGINS.
"""

from __future__ import annotations

from django.conf import settings
from django.http.request import split_domain_port, validate_host

SECURE_SCHEMES = {"wss", "https"}


def origin_allowed(scope) -> bool:
    headers = dict(scope.get("headers", []))
    origin = headers.get(b"origin", b"").decode("latin-1").lower()
    host = headers.get(b"host", b"").decode("latin-1").lower()
    if not origin or not host:
        return False
    domain, _port = split_domain_port(host)
    if not validate_host(domain, settings.ALLOWED_HOSTS):
        return False
    scheme = "https" if scope.get("scheme") in SECURE_SCHEMES else "http"
    if origin == f"{scheme}://{host}":
        return True
    return origin in {trusted.lower() for trusted in settings.CSRF_TRUSTED_ORIGINS}


class SameOriginValidator:
    """ASGI middleware: refuse (403 at the handshake) a socket from any other origin."""

    def __init__(self, application):
        self.application = application

    async def __call__(self, scope, receive, send):
        if scope["type"] == "websocket" and not origin_allowed(scope):
            await receive()  # websocket.connect
            await send({"type": "websocket.close", "code": 403})
            return
        return await self.application(scope, receive, send)
