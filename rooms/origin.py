"""Same-origin checks for sockets opened by Parley's own pages (issue #10, item 12).

Channels' AllowedHostsOriginValidator compares only the Origin's host with ALLOWED_HOSTS, so
`http://127.0.0.1:9` (another port, another scheme: another site to the browser) passed. A
page's socket must come from exactly the origin it was served from, scheme and port
included, the way CSRF checks a POST: the Host it asked for, with the scheme of the request
(behind a TLS proxy, X-Forwarded-Proto as SECURE_PROXY_SSL_HEADER says), or an origin listed
in CSRF_TRUSTED_ORIGINS.
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
    scheme = "https" if is_secure(scope, headers) else "http"
    if origin == f"{scheme}://{host}":
        return True
    return origin in {trusted.lower() for trusted in settings.CSRF_TRUSTED_ORIGINS}


def is_secure(scope, headers: dict[bytes, bytes]) -> bool:
    """As Django's request.is_secure() for the same connection: SECURE_PROXY_SSL_HEADER when
    set and present (daphne puts no scheme in a WebSocket scope, even with --proxy-headers),
    else the scope's own scheme."""
    if settings.SECURE_PROXY_SSL_HEADER:
        header, secure_value = settings.SECURE_PROXY_SSL_HEADER
        name = header.removeprefix("HTTP_").replace("_", "-").lower().encode("latin-1")
        if name in headers:
            return headers[name].decode("latin-1").split(",")[0].strip() == secure_value
    return scope.get("scheme") in SECURE_SCHEMES


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
