"""Which SFU workers are alive and which one serves each room.

Workers beat every WORKER_HEARTBEAT seconds with their load (members served); a worker not
heard from for WORKER_TTL is dead. A room stays on its worker while that worker lives; a room
without a live worker goes to the least loaded live one. In-process mode (no Redis) has one
worker and a dict; with Redis the directory is shared by every daphne process and worker.
"""

from __future__ import annotations

import json
import time

from django.conf import settings

from rooms.redis import redis_client

WORKER_HEARTBEAT = 1.0
# Three missed beats: long enough for a busy worker's event loop, short enough that users wait
# only a few seconds after a crash before they are moved.
WORKER_TTL = 3.5


class MemoryDirectory:
    def __init__(self) -> None:
        self.workers: dict[str, tuple[float, int]] = {}
        self.rooms: dict[str, str] = {}

    async def beat(self, worker_id: str, load: int) -> None:
        self.workers[worker_id] = (time.monotonic(), load)

    async def forget(self, worker_id: str) -> None:
        self.workers.pop(worker_id, None)

    async def alive(self, worker_id: str) -> bool:
        seen = self.workers.get(worker_id)
        return seen is not None and time.monotonic() - seen[0] < WORKER_TTL

    async def assign(self, room_key: str) -> str | None:
        current = self.rooms.get(room_key)
        if current is not None and await self.alive(current):
            return current
        live = [(load, wid) for wid, (seen, load) in self.workers.items()
                if time.monotonic() - seen < WORKER_TTL]
        if not live:
            return None
        chosen = min(live)[1]
        self.rooms[room_key] = chosen
        return chosen


# KEYS[1] room key, KEYS[2] workers hash; ARGV: now, ttl, room ttl.
# Keep the room's worker if alive, else pick the least loaded live worker; atomic, so two
# processes asking at once agree.
_ASSIGN_SCRIPT = """
local now, ttl = tonumber(ARGV[1]), tonumber(ARGV[2])
local function alive(id)
  local raw = redis.call('HGET', KEYS[2], id)
  if not raw then return nil end
  local info = cjson.decode(raw)
  if info.ts >= now - ttl then return info end
  return nil
end
local current = redis.call('GET', KEYS[1])
if current and alive(current) then
  redis.call('EXPIRE', KEYS[1], ARGV[3])
  return current
end
local best, best_load = false, nil
local entries = redis.call('HGETALL', KEYS[2])
for i = 1, #entries, 2 do
  local info = cjson.decode(entries[i + 1])
  if info.ts >= now - ttl and (best_load == nil or info.load < best_load) then
    best, best_load = entries[i], info.load
  end
end
if best then redis.call('SET', KEYS[1], best, 'EX', ARGV[3]) end
return best
"""
WORKERS_KEY = "parley:sfu:workers"
ROOM_ASSIGNMENT_SECONDS = 24 * 3600


class RedisDirectory:
    def __init__(self, url: str):
        self.url = url

    def _redis(self):
        return redis_client(self.url)

    async def beat(self, worker_id: str, load: int) -> None:
        info = json.dumps({"ts": time.time(), "load": load})
        await self._redis().hset(WORKERS_KEY, worker_id, info)

    async def forget(self, worker_id: str) -> None:
        await self._redis().hdel(WORKERS_KEY, worker_id)

    async def alive(self, worker_id: str) -> bool:
        raw = await self._redis().hget(WORKERS_KEY, worker_id)
        return bool(raw) and json.loads(raw)["ts"] >= time.time() - WORKER_TTL

    async def assign(self, room_key: str) -> str | None:
        chosen = await self._redis().eval(
            _ASSIGN_SCRIPT, 2, f"parley:sfu:room:{room_key}", WORKERS_KEY,
            time.time(), WORKER_TTL, ROOM_ASSIGNMENT_SECONDS,
        )
        if not chosen:
            return None
        return chosen.decode() if isinstance(chosen, bytes) else chosen


_directory: MemoryDirectory | RedisDirectory | None = None


def worker_directory() -> MemoryDirectory | RedisDirectory:
    global _directory
    if _directory is None:
        _directory = RedisDirectory(settings.REDIS_URL) if settings.REDIS_URL else MemoryDirectory()
    return _directory
