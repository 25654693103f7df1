"""Who is in each room right now, shared by every server process.

Presence is kept per connection (one entry per open socket) and reported per participant, so a
person with two tabs is present once: `add` says whether this was their first connection,
`remove` whether it was their last. Entries carry a timestamp refreshed by each heartbeat;
entries of a process that died without cleaning up age out after PRESENCE_TTL_SECONDS and are
swept by the survivors, who then announce the leave.

Two stores with one interface: in-process memory (no REDIS_URL) and Redis hashes.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass

from django.conf import settings

from rooms.redis import redis_client


@dataclass(frozen=True)
class Present:
    id: str
    name: str
    # "" for people; "assistant" for the room's assistant (transcription/assistant), which
    # pages show with a badge and without Message/Call buttons (docs/protocol.md, presence).
    kind: str = ""

    def as_dict(self) -> dict:
        if self.kind:
            return {"id": self.id, "name": self.name, "kind": self.kind}
        return {"id": self.id, "name": self.name}


def _unique(entries: list[Present]) -> list[Present]:
    seen: dict[str, Present] = {}
    for entry in entries:
        seen.setdefault(entry.id, entry)
    return sorted(seen.values(), key=lambda p: (p.name.lower(), p.id))


class MemoryPresence:
    """One process's rooms: {room_id: {connection: (Present, last_seen)}}."""

    def __init__(self, ttl: float):
        self.ttl = ttl
        self.rooms: dict[int, dict[str, tuple[Present, float]]] = {}

    async def add(self, room_id: int, connection: str, who: Present) -> bool:
        conns = self.rooms.setdefault(room_id, {})
        first = all(p.id != who.id for p, _ in conns.values())
        conns[connection] = (who, time.time())
        return first

    async def refresh(self, room_id: int, connection: str, who: Present) -> None:
        self.rooms.setdefault(room_id, {})[connection] = (who, time.time())

    async def refresh_many(self, room_id: int, entries: dict[str, Present]) -> None:
        now = time.time()
        conns = self.rooms.setdefault(room_id, {})
        for connection, who in entries.items():
            conns[connection] = (who, now)
        if not conns:
            self.rooms.pop(room_id, None)

    async def remove(self, room_id: int, connection: str) -> Present | None:
        conns = self.rooms.get(room_id, {})
        entry = conns.pop(connection, None)
        if not conns:
            self.rooms.pop(room_id, None)
        if entry is None:
            return None
        who = entry[0]
        return None if any(p.id == who.id for p, _ in conns.values()) else who

    async def sweep(self, room_id: int) -> list[Present]:
        conns = self.rooms.get(room_id, {})
        cutoff = time.time() - self.ttl
        stale = [c for c, (_, seen) in conns.items() if seen < cutoff]
        gone = [conns.pop(c)[0] for c in stale]
        left = {p.id for p, _ in conns.values()}
        return _unique([p for p in gone if p.id not in left])

    async def members(self, room_id: int) -> list[Present]:
        return _unique([p for p, _ in self.rooms.get(room_id, {}).values()])

    async def members_of(self, room_ids: list[int]) -> dict[int, list[Present]]:
        return {room_id: await self.members(room_id) for room_id in room_ids}


class RedisPresence:
    """Presence in one Redis hash per room: field = connection, value = JSON {id, name, ts}."""

    def __init__(self, url: str, ttl: float):
        self.url = url
        self.ttl = ttl

    def _redis(self):
        return redis_client(self.url)

    @staticmethod
    def _key(room_id: int) -> str:
        return f"parley:presence:{room_id}"

    def _fresh(self, raw: dict) -> dict[str, Present]:
        cutoff = time.time() - self.ttl
        out = {}
        for conn, value in raw.items():
            data = json.loads(value)
            if data["ts"] >= cutoff:
                out[conn.decode() if isinstance(conn, bytes) else conn] = Present(
                    data["id"], data["name"], data.get("kind", "")
                )
        return out

    async def add(self, room_id: int, connection: str, who: Present) -> bool:
        redis = self._redis()
        others = self._fresh(await redis.hgetall(self._key(room_id)))
        await self.refresh(room_id, connection, who)
        return all(p.id != who.id for c, p in others.items() if c != connection)

    async def refresh(self, room_id: int, connection: str, who: Present) -> None:
        await self.refresh_many(room_id, {connection: who})

    async def refresh_many(self, room_id: int, entries: dict[str, Present]) -> None:
        """Renew several connections' entries in one command (a room's heartbeat)."""
        if not entries:
            return
        now = time.time()
        mapping = {connection: json.dumps({"id": who.id, "name": who.name, "ts": now,
                                           **({"kind": who.kind} if who.kind else {})})
                   for connection, who in entries.items()}
        await self._redis().hset(self._key(room_id), mapping=mapping)

    async def remove(self, room_id: int, connection: str) -> Present | None:
        redis = self._redis()
        key = self._key(room_id)
        raw = await redis.hget(key, connection)
        removed = await redis.hdel(key, connection)
        if not raw or not removed:
            return None
        data = json.loads(raw)
        rest = self._fresh(await redis.hgetall(key))
        return None if any(p.id == data["id"] for p in rest.values()) else Present(
            data["id"], data["name"], data.get("kind", "")
        )

    async def sweep(self, room_id: int) -> list[Present]:
        redis = self._redis()
        key = self._key(room_id)
        raw = await redis.hgetall(key)
        fresh = self._fresh(raw)
        gone = []
        for conn, value in raw.items():
            name = conn.decode() if isinstance(conn, bytes) else conn
            if name not in fresh and await redis.hdel(key, name):
                data = json.loads(value)
                gone.append(Present(data["id"], data["name"], data.get("kind", "")))
        left = {p.id for p in fresh.values()}
        return _unique([p for p in gone if p.id not in left])

    async def members(self, room_id: int) -> list[Present]:
        return _unique(list(self._fresh(await self._redis().hgetall(self._key(room_id))).values()))

    async def members_of(self, room_ids: list[int]) -> dict[int, list[Present]]:
        if not room_ids:
            return {}
        async with self._redis().pipeline(transaction=False) as pipe:
            for room_id in room_ids:
                pipe.hgetall(self._key(room_id))
            results = await pipe.execute()
        return {
            room_id: _unique(list(self._fresh(raw).values()))
            for room_id, raw in zip(room_ids, results, strict=True)
        }


_store: MemoryPresence | RedisPresence | None = None


def presence_store() -> MemoryPresence | RedisPresence:
    """The process-wide store chosen by settings (Redis when REDIS_URL is set)."""
    global _store
    if _store is None:
        ttl = settings.PARLEY["PRESENCE_TTL_SECONDS"]
        if settings.REDIS_URL:
            _store = RedisPresence(settings.REDIS_URL, ttl)
        else:
            _store = MemoryPresence(ttl)
    return _store
