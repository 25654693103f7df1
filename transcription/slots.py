"""How many transcription sessions one member may hold at once (issue #10, item 4).

A session holds an engine stream: a decoder slot in the offline engine (~50 MB each) or an
upstream connection on the server's OpenAI key. One guest opened ten `/v1/realtime` sockets
(+540 MB of decoder memory); so each member (a person, whichever room) gets at most
TRANSCRIPTION["MAX_SESSIONS_PER_MEMBER"] at a time, counted per server process: a page needs
one, and a second covers a reload racing the old socket's close. Released in the owner's
cleanup, however the session ended.
"""

from __future__ import annotations

from collections import Counter

from django.conf import settings

_held: Counter[str] = Counter()


def limit() -> int:
    return settings.TRANSCRIPTION["MAX_SESSIONS_PER_MEMBER"]


def acquire(speaker_key: str) -> bool:
    """Take a slot for `speaker_key`; False when the member already holds `limit()`."""
    if _held[speaker_key] >= limit():
        return False
    _held[speaker_key] += 1
    return True


def release(speaker_key: str) -> None:
    _held[speaker_key] -= 1
    if _held[speaker_key] <= 0:
        del _held[speaker_key]


def held() -> int:
    """Slots held in this process, all members (for tests and operators)."""
    return sum(_held.values())
