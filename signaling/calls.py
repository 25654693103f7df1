"""Who holds the two places of a direct call (room + mode), shared by every server process.

A call has at most two peers. Each peer is one signaling connection: an opaque peer id, the
channel name to reach it (never shown to clients) and the participant it belongs to. When the
same participant joins again (a reload, a second tab), the new connection takes over that
participant's place and the old one is evicted, so a reload never finds its own ghost and
gets `room-full`. Places are refreshed by heartbeats and expire after PRESENCE_TTL_SECONDS,
which frees the places of a process that died.

Two stores with one interface: in-process memory (no REDIS_URL) and a Redis hash per call,
changed atomically by a Lua script.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass

from django.conf import settings

from rooms.redis import redis_client

CAPACITY = 2


@dataclass(frozen=True)
class Peer:
    id: str
    channel: str
    who: str  # participant key: same person, same place
    name: str


@dataclass(frozen=True)
class JoinResult:
    joined: bool  # False: the call is full
    other: Peer | None  # the peer already there, if any
    evicted: Peer | None  # this participant's previous connection, now replaced


def call_key(room_id: int, mode: str) -> str:
    return f"parley:call:{room_id}:{mode}"


class MemoryCalls:
    def __init__(self, ttl: float):
        self.ttl = ttl
        self.calls: dict[str, dict[str, tuple[Peer, float]]] = {}

    def _live(self, key: str) -> dict[str, tuple[Peer, float]]:
        peers = self.calls.setdefault(key, {})
        cutoff = time.time() - self.ttl
        for peer_id in [p for p, (_, seen) in peers.items() if seen < cutoff]:
            del peers[peer_id]
        return peers

    async def join(self, key: str, peer: Peer) -> JoinResult:
        peers = self._live(key)
        evicted = next((p for p, _ in peers.values() if p.who == peer.who), None)
        if evicted is not None:
            del peers[evicted.id]
        others = [p for p, _ in peers.values()]
        if len(others) >= CAPACITY:
            return JoinResult(False, None, None)
        peers[peer.id] = (peer, time.time())
        return JoinResult(True, others[0] if others else None, evicted)

    async def leave(self, key: str, peer_id: str) -> Peer | None:
        """Give up a place; returns the peer left behind (None if we held no place)."""
        peers = self._live(key)
        if peers.pop(peer_id, None) is None:
            return None
        remaining = [p for p, _ in peers.values()]
        if not peers:
            self.calls.pop(key, None)
        return remaining[0] if remaining else None

    async def other(self, key: str, peer_id: str) -> Peer | None:
        peers = self._live(key)
        if peer_id not in peers:
            return None
        return next((p for p, _ in peers.values() if p.id != peer_id), None)

    async def refresh(self, key: str, peer: Peer) -> bool:
        """Renew our place; False when we no longer hold one (evicted or expired)."""
        peers = self._live(key)
        if peer.id not in peers:
            return False
        peers[peer.id] = (peer, time.time())
        return True


# KEYS[1] = call hash; ARGV = peer id, peer json, who, now, ttl, capacity.
# Drops expired places and this participant's previous place, then takes a place if free.
_JOIN_SCRIPT = """
local key, peer_id, peer_json, who = KEYS[1], ARGV[1], ARGV[2], ARGV[3]
local now, ttl, capacity = tonumber(ARGV[4]), tonumber(ARGV[5]), tonumber(ARGV[6])
local entries = redis.call('HGETALL', key)
local others, evicted = {}, false
for i = 1, #entries, 2 do
  local place = cjson.decode(entries[i + 1])
  if place.ts < now - ttl then
    redis.call('HDEL', key, entries[i])
  elseif place.peer.who == who then
    redis.call('HDEL', key, entries[i])
    evicted = place.peer
  else
    table.insert(others, place.peer)
  end
end
if #others >= capacity then
  return cjson.encode({joined = false})
end
redis.call('HSET', key, peer_id, cjson.encode({peer = cjson.decode(peer_json), ts = now}))
redis.call('EXPIRE', key, math.ceil(ttl * 4))
return cjson.encode({joined = true, other = others[1] or false, evicted = evicted})
"""


# Renew a place only if it is still ours (not evicted or expired in between).
_REFRESH_SCRIPT = """
if redis.call('HEXISTS', KEYS[1], ARGV[1]) == 1 then
  redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
  return 1
end
return 0
"""


class RedisCalls:
    def __init__(self, url: str, ttl: float):
        self.url = url
        self.ttl = ttl

    def _redis(self):
        return redis_client(self.url)

    def _live(self, raw: dict) -> dict[str, Peer]:
        cutoff = time.time() - self.ttl
        out = {}
        for value in raw.values():
            place = json.loads(value)
            if place["ts"] >= cutoff:
                peer = Peer(**place["peer"])
                out[peer.id] = peer
        return out

    async def join(self, key: str, peer: Peer) -> JoinResult:
        reply = await self._redis().eval(
            _JOIN_SCRIPT, 1, key, peer.id, json.dumps(asdict(peer)), peer.who,
            time.time(), self.ttl, CAPACITY,
        )
        result = json.loads(reply)
        if not result["joined"]:
            return JoinResult(False, None, None)
        other = Peer(**result["other"]) if result.get("other") else None
        evicted = Peer(**result["evicted"]) if result.get("evicted") else None
        return JoinResult(True, other, evicted)

    async def leave(self, key: str, peer_id: str) -> Peer | None:
        redis = self._redis()
        if not await redis.hdel(key, peer_id):
            return None
        remaining = self._live(await redis.hgetall(key))
        return next(iter(remaining.values()), None)

    async def other(self, key: str, peer_id: str) -> Peer | None:
        peers = self._live(await self._redis().hgetall(key))
        if peer_id not in peers:
            return None
        return next((p for p in peers.values() if p.id != peer_id), None)

    async def refresh(self, key: str, peer: Peer) -> bool:
        place = json.dumps({"peer": asdict(peer), "ts": time.time()})
        return bool(await self._redis().eval(_REFRESH_SCRIPT, 1, key, peer.id, place))


_store: MemoryCalls | RedisCalls | None = None


def call_store() -> MemoryCalls | RedisCalls:
    """The process-wide store chosen by settings (Redis when REDIS_URL is set)."""
    global _store
    if _store is None:
        ttl = settings.PARLEY["PRESENCE_TTL_SECONDS"]
        _store = RedisCalls(settings.REDIS_URL, ttl) if settings.REDIS_URL else MemoryCalls(ttl)
    return _store
