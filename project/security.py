"""A Content-Security-Policy header on every response (Django 5.2 has none built in).

Parley's pages are same-origin ES modules and a stylesheet, with no inline script or style
(`json_script` data blocks are not scripts), so the policy is `'self'` throughout. Sockets go
to the page's own host; the browser-direct transcription modes also reach OpenAI, whose
origins are allowed only while OpenAI transcribes.
"""

from __future__ import annotations

from urllib.parse import urlsplit

from asgiref.sync import iscoroutinefunction, markcoroutinefunction
from django.conf import settings
from django.core.exceptions import DisallowedHost

HEADER = "Content-Security-Policy"


def origin(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}"


def openai_origins() -> list[str]:
    """Where pages connect in the direct modes: OpenAI's Realtime WebSocket and calls URLs,
    handed out only when OpenAI is the engine (transcription.views.transcription_session)."""
    from transcription import engines, upstream

    if engines.engine_name() != "openai":
        return []
    return sorted({origin(url) for url in upstream.urls().values()})


def own_socket_origin(request) -> list[str]:
    """The page's own host as a ws:/wss: source. CSP Level 3 lets 'self' cover it (Chromium
    156 does: without this source nothing broke); older engines need it spelled out."""
    try:
        host = request.get_host()
    except DisallowedHost:  # the 400 for a bad Host header gets the policy without it
        return []
    return [f"{'wss' if request.is_secure() else 'ws'}://{host}"]


def policy(request) -> str:
    directives = {
        "default-src": ["'self'"],
        "connect-src": ["'self'", *own_socket_origin(request), *openai_origins()],
        "object-src": ["'none'"],
        "base-uri": ["'self'"],
        "form-action": ["'self'"],
        "frame-ancestors": ["'none'"],
    }
    return "; ".join(f"{name} {' '.join(sources)}" for name, sources in directives.items())


class ContentSecurityPolicyMiddleware:
    """Adds the policy unless a view set its own. Django's debug error pages (DEBUG=1 only)
    are left without one: they are inline-styled and -scripted."""

    sync_capable = True
    async_capable = True

    def __init__(self, get_response):
        self.get_response = get_response
        self.async_mode = iscoroutinefunction(get_response)
        if self.async_mode:
            markcoroutinefunction(self)

    def __call__(self, request):
        if self.async_mode:
            return self._acall(request)
        return self.apply(request, self.get_response(request))

    async def _acall(self, request):
        return self.apply(request, await self.get_response(request))

    def apply(self, request, response):
        if HEADER not in response.headers and not (settings.DEBUG and response.status_code >= 400):
            response.headers[HEADER] = policy(request)
        return response
