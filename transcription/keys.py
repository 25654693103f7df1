"""Short-lived transcription keys: bound to one room and one member, minted by
`POST /api/transcription-session`, accepted by the Realtime-compatible socket.

Stateless: the key is the member's identity signed with SECRET_KEY and a timestamp, so any
server process can check it; it is useless after KEY_TTL_SECONDS or in another room.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from django.core import signing

KEY_PREFIX = "ek_parley_"
KEY_TTL_SECONDS = 120  # long enough to open the socket; the socket may then run for an hour
_SALT = "parley.transcription.key"


@dataclass(frozen=True)
class KeyGrant:
    room_id: int
    speaker_key: str
    speaker_name: str


def mint_key(grant: KeyGrant) -> tuple[str, int]:
    """A key for `grant` and its expiry (Unix seconds)."""
    payload = {"r": grant.room_id, "k": grant.speaker_key, "n": grant.speaker_name}
    value = signing.TimestampSigner(salt=_SALT).sign_object(payload, compress=True)
    return KEY_PREFIX + value, int(time.time()) + KEY_TTL_SECONDS


def check_key(value: str) -> KeyGrant | None:
    """The grant behind a key, or None when it is not ours, altered or expired."""
    if not value.startswith(KEY_PREFIX):
        return None
    try:
        payload = signing.TimestampSigner(salt=_SALT).unsign_object(
            value.removeprefix(KEY_PREFIX), max_age=KEY_TTL_SECONDS)
    except signing.BadSignature:  # includes SignatureExpired
        return None
    return KeyGrant(payload["r"], payload["k"], payload["n"])
