"""Short-lived transcription keys: bound to one room and one member, minted by
`POST /api/transcription-session`, accepted by the Realtime-compatible socket.

Stateless: the key is the member's grant encrypted and authenticated with a key derived from
SECRET_KEY (Fernet: AES-128-CBC and HMAC-SHA256, with its creation time), so any server
process can check it; it is useless in another room and after TRANSCRIPTION_KEY_TTL_SECONDS
(default 120 s: enough to open the socket, which may then run for an hour). Encrypted, not
only signed: the grant holds the speaker key (`u:<user pk>`) and the room's id, and wire ids
never reveal those (rooms/identity.py).
"""

from __future__ import annotations

import base64
import binascii
import json
import time
from dataclasses import dataclass

from cryptography.fernet import Fernet, InvalidToken, MultiFernet
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from django.conf import settings

KEY_PREFIX = "ek_parley_"
_SALT = b"parley.transcription.key"


@dataclass(frozen=True)
class KeyGrant:
    room_id: int
    speaker_key: str
    speaker_name: str


def key_ttl() -> int:
    return settings.TRANSCRIPTION["KEY_TTL_SECONDS"]


def _fernet() -> MultiFernet:
    """Fernet keys derived from SECRET_KEY (minting) and SECRET_KEY_FALLBACKS (checking too),
    so rotating the secret as Django documents keeps keys minted just before valid."""
    secrets = [settings.SECRET_KEY, *getattr(settings, "SECRET_KEY_FALLBACKS", [])]
    return MultiFernet([Fernet(base64.urlsafe_b64encode(
        HKDF(hashes.SHA256(), length=32, salt=_SALT, info=b"fernet").derive(
            secret.encode() if isinstance(secret, str) else secret)))
        for secret in secrets])


def mint_key(grant: KeyGrant) -> tuple[str, int]:
    """A key for `grant` and its expiry (Unix seconds)."""
    payload = json.dumps({"r": grant.room_id, "k": grant.speaker_key, "n": grant.speaker_name},
                         separators=(",", ":")).encode()
    token = _fernet().encrypt(payload)
    # Keys travel as a WebSocket subprotocol, which must be an HTTP token: base64url is, but
    # for its "=" padding, which the length restores.
    return KEY_PREFIX + token.rstrip(b"=").decode("ascii"), int(time.time()) + key_ttl()


def check_key(value: str) -> KeyGrant | None:
    """The grant behind a key, or None when it is not ours, altered or expired."""
    if not value.startswith(KEY_PREFIX) or not value.isascii():
        return None
    token = value.removeprefix(KEY_PREFIX).encode("ascii")
    padded = token + b"=" * (-len(token) % 4)
    try:
        # Only the canonical spelling: base64 decoders ignore the unused bits of the last
        # character, so another spelling of the same bytes would pass as the same key.
        if base64.urlsafe_b64encode(base64.urlsafe_b64decode(padded)) != padded:
            return None
        payload = json.loads(_fernet().decrypt(padded, ttl=key_ttl()))
        return KeyGrant(payload["r"], payload["k"], payload["n"])
    except (InvalidToken, binascii.Error, ValueError, KeyError, TypeError):
        return None  # InvalidToken covers a forged, altered or expired key
