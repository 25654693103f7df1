"""ICE servers: the browser's list (configured servers plus per-user TURN credentials), the
server's own list (SFU workers, with credentials minted for the worker, never a member's),
and the one conversion from those JSON dicts to aiortc's configuration.

Why one conversion: aiortc wants RTCIceServer objects, the settings and pages use the
RTCIceServer dictionaries of the browser API; two call sites converting on their own drifted
(the SFU passed dicts and every join failed once ICE servers were configured).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import time

from aiortc import RTCBundlePolicy, RTCConfiguration, RTCIceServer, RTCPeerConnection
from django.conf import settings

# The RTCIceServer members aiortc knows; anything else a browser list may carry is dropped.
_ICE_SERVER_FIELDS = ("urls", "username", "credential", "credentialType")


def turn_credentials(secret: str, user_id: str, ttl: int, now: float | None = None) -> dict:
    """Time-limited TURN credentials in the coturn REST convention (`use-auth-secret`)."""
    expires = int(now if now is not None else time.time()) + ttl
    username = f"{expires}:{user_id}"
    digest = hmac.new(secret.encode(), username.encode(), hashlib.sha1).digest()
    return {"username": username, "credential": base64.b64encode(digest).decode(),
            "expires_at": expires}


def _with_turn(servers: list[dict], identity: str) -> list[dict]:
    servers = [dict(server) for server in servers]
    if settings.TURN_SECRET and settings.TURN_URLS:
        creds = turn_credentials(settings.TURN_SECRET, identity, settings.TURN_TTL_SECONDS)
        servers.append({
            "urls": list(settings.TURN_URLS),
            "username": creds["username"],
            "credential": creds["credential"],
        })
    return servers


TRANSPORT_POLICIES = ("all", "relay")


def transport_policy() -> str:
    """The `iceTransportPolicy` pages use: "all", or "relay" where operators want every call
    through TURN (it hides members' addresses from each other; it costs relay bandwidth)."""
    return settings.ICE_TRANSPORT_POLICY


def ice_servers_for(user_id: str) -> list[dict]:
    """The RTCIceServer list a member's browser should use."""
    return _with_turn(settings.ICE_SERVERS, user_id)


def server_ice_servers(identity: str) -> list[dict]:
    """The RTCIceServer list of a server-side peer (an SFU worker): SFU_ICE_SERVERS, plus
    TURN credentials minted for `identity` (e.g. `sfu-worker-<id>`), so no member's
    credentials are shared with a whole room or outlive that member."""
    return _with_turn(settings.SFU_ICE_SERVERS, identity)


def rtc_configuration(servers: list[dict] | None = None) -> RTCConfiguration:
    """aiortc's configuration for RTCIceServer dicts. MAX_BUNDLE: with aiortc's default
    policy the second audio/video section of a connection never sends."""
    ice = [RTCIceServer(**{k: v for k, v in server.items() if k in _ICE_SERVER_FIELDS})
           for server in servers or []]
    return RTCConfiguration(iceServers=ice, bundlePolicy=RTCBundlePolicy.MAX_BUNDLE)


def peer_connection(servers: list[dict] | None = None) -> RTCPeerConnection:
    """A server-side (or test) aiortc peer connection for RTCIceServer dicts."""
    return RTCPeerConnection(rtc_configuration(servers))
