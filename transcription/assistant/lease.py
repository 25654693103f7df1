"""One assistant session per room across server processes.

With REDIS_URL a Redis key per room (`parley:assistant:<room>`, SET NX with a TTL the owner
renews every tick) names the owning process's session; a process that died lets it expire
(LEASE_SECONDS) and the room may invite again. Without Redis there is one process and the
lease is a dict. The value is JSON: the session's token and who invited it, which any process
reads to answer "is the assistant here?"."""

from __future__ import annotations

import json
import secrets

from django.conf import settings

from rooms.redis import redis_client

# Long enough to survive a few missed renewals (one per ASSISTANT["TICK_SECONDS"]), short
# enough that a crashed process does not keep a room's assistant "present" for long.
LEASE_SECONDS = 30

_RENEW = """if redis.call('get', KEYS[1]) == ARGV[1] then
  return redis.call('pexpire', KEYS[1], ARGV[2]) else return 0 end"""
_RELEASE = """if redis.call('get', KEYS[1]) == ARGV[1] then
  return redis.call('del', KEYS[1]) else return 0 end"""


def _key(room_id: int) -> str:
    return f"parley:assistant:{room_id}"


class MemoryLeases:
    def __init__(self) -> None:
        self.held: dict[int, str] = {}

    async def acquire(self, room_id: int, value: str) -> bool:
        if room_id in self.held:
            return False
        self.held[room_id] = value
        return True

    async def renew(self, room_id: int, value: str) -> bool:
        return self.held.get(room_id) == value

    async def release(self, room_id: int, value: str) -> None:
        if self.held.get(room_id) == value:
            del self.held[room_id]

    async def holder(self, room_id: int) -> str | None:
        return self.held.get(room_id)


class RedisLeases:
    def __init__(self, url: str):
        self.url = url

    async def acquire(self, room_id: int, value: str) -> bool:
        return bool(await redis_client(self.url).set(_key(room_id), value, nx=True,
                                                     ex=LEASE_SECONDS))

    async def renew(self, room_id: int, value: str) -> bool:
        return bool(await redis_client(self.url).eval(_RENEW, 1, _key(room_id), value,
                                                      LEASE_SECONDS * 1000))

    async def release(self, room_id: int, value: str) -> None:
        await redis_client(self.url).eval(_RELEASE, 1, _key(room_id), value)

    async def holder(self, room_id: int) -> str | None:
        raw = await redis_client(self.url).get(_key(room_id))
        return raw.decode() if isinstance(raw, bytes) else raw


_leases: MemoryLeases | RedisLeases | None = None


def leases() -> MemoryLeases | RedisLeases:
    global _leases
    if _leases is None:
        _leases = RedisLeases(settings.REDIS_URL) if settings.REDIS_URL else MemoryLeases()
    return _leases


def reset() -> None:
    """Forget the process's leases (tests: each runs its own loop)."""
    global _leases
    _leases = None


def lease_value(invited_by: dict) -> str:
    return json.dumps({"token": secrets.token_hex(8), "invited_by": invited_by})


def invited_by(value: str | None) -> dict | None:
    if not value:
        return None
    try:
        return json.loads(value).get("invited_by")
    except (ValueError, AttributeError):
        return None
