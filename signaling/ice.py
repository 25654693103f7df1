"""ICE servers for a page: the configured list plus per-user TURN credentials."""

from __future__ import annotations

import base64
import hashlib
import hmac
import time

from django.conf import settings


def turn_credentials(secret: str, user_id: str, ttl: int, now: float | None = None) -> dict:
    """Time-limited TURN credentials in the coturn REST convention (`use-auth-secret`)."""
    expires = int(now if now is not None else time.time()) + ttl
    username = f"{expires}:{user_id}"
    digest = hmac.new(secret.encode(), username.encode(), hashlib.sha1).digest()
    return {"username": username, "credential": base64.b64encode(digest).decode(),
            "expires_at": expires}


def ice_servers_for(user_id: str) -> list[dict]:
    """The RTCIceServer list a member's browser should use."""
    servers = [dict(server) for server in settings.ICE_SERVERS]
    if settings.TURN_SECRET and settings.TURN_URLS:
        creds = turn_credentials(settings.TURN_SECRET, user_id, settings.TURN_TTL_SECONDS)
        servers.append({
            "urls": list(settings.TURN_URLS),
            "username": creds["username"],
            "credential": creds["credential"],
        })
    return servers
