"""Short-lived transcription keys: bound to one room and one member, minted by
`POST /api/transcription-session`, accepted by the Realtime-compatible socket.

Stateless: the key is the member's identity signed with SECRET_KEY and a timestamp, so any
server process can check it; it is useless in another room and after
TRANSCRIPTION_KEY_TTL_SECONDS (default 120 s: enough to open the socket, which may then run
for an hour).
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from django.conf import settings
from django.core import signing

KEY_PREFIX = "ek_parley_"
_SALT = "parley.transcription.key"
# Keys travel as a WebSocket subprotocol, which must be an HTTP token: no ':' (the signer's
# default separator).
_SEPARATOR = "."


@dataclass(frozen=True)
class KeyGrant:
    room_id: int
    speaker_key: str
    speaker_name: str


def key_ttl() -> int:
    return settings.TRANSCRIPTION["KEY_TTL_SECONDS"]


def mint_key(grant: KeyGrant) -> tuple[str, int]:
    """A key for `grant` and its expiry (Unix seconds)."""
    payload = {"r": grant.room_id, "k": grant.speaker_key, "n": grant.speaker_name}
    value = signing.TimestampSigner(salt=_SALT, sep=_SEPARATOR).sign_object(payload, compress=True)
    return KEY_PREFIX + value, int(time.time()) + key_ttl()


def check_key(value: str) -> KeyGrant | None:
    """The grant behind a key, or None when it is not ours, altered or expired."""
    if not value.startswith(KEY_PREFIX):
        return None
    try:
        payload = signing.TimestampSigner(salt=_SALT, sep=_SEPARATOR).unsign_object(
            value.removeprefix(KEY_PREFIX), max_age=key_ttl())
    except signing.BadSignature:  # includes SignatureExpired
        return None
    return KeyGrant(payload["r"], payload["k"], payload["n"])
