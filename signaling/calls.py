"""Who can be called and which direct calls exist, shared by every server process.

A signaling connection is one tab of a participant. The directory records, per room and
participant, the live connections (so an invitation can say `not_here`), and each direct
call: its two ends, its mode and whether it is still ringing. The caller's end is the
connection that invited; the callee's end is whichever of the callee's connections accepted
first. Channel names identify connections here and never reach clients.

The rules (who may accept, cancel or hang up what; the limits) are plain functions over
`Call` values; the two stores only make each change atomic: in-process memory (no
REDIS_URL), or Redis keys changed under WATCH/MULTI so two processes never both accept one
invitation or both take a participant's last call. Entries are refreshed by the owning
connections' heartbeats and expire after PRESENCE_TTL_SECONDS, which forgets what a dead
process held.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace

from django.conf import settings

from rooms.redis import redis_client

from . import protocol
from .protocol import CallRefused

RINGING, ACTIVE = "ringing", "active"
CAS_ATTEMPTS = 20


@dataclass(frozen=True)
class End:
    id: str  # the participant's public id
    name: str
    channel: str | None  # the connection speaking for this end; None: callee not yet accepted


@dataclass(frozen=True)
class Call:
    id: str
    room: int
    mode: str
    caller: End
    callee: End
    state: str = RINGING

    def to_json(self) -> str:
        return json.dumps(asdict(self), separators=(",", ":"))

    @classmethod
    def from_json(cls, raw: str | bytes) -> Call:
        data = json.loads(raw)
        return cls(**{**data, "caller": End(**data["caller"]), "callee": End(**data["callee"])})

    def has(self, participant: str) -> bool:
        return participant in (self.caller.id, self.callee.id)

    def other_end(self, channel: str) -> End | None:
        """The end that is not connection `channel` (None if `channel` is neither end)."""
        if channel == self.caller.channel:
            return self.callee
        if channel == self.callee.channel:
            return self.caller
        return None


@dataclass(frozen=True)
class Limits:
    max_pending: int  # invitations one participant may have ringing
    max_calls: int  # calls (ringing or accepted, either end) one participant may be in

    @classmethod
    def from_settings(cls) -> Limits:
        return cls(settings.PARLEY["SIGNAL_MAX_PENDING_INVITES"],
                   settings.PARLEY["SIGNAL_MAX_DIRECT_CALLS"])


# The rules, as plain functions.

def check_invite(call: Call, caller_calls: list[Call], callee_calls: list[Call],
                 limits: Limits) -> None:
    """Refuse an invitation that would break a limit (the caller's first, then the callee's)."""
    mine = [c for c in caller_calls if c.id != call.id]
    if len(mine) >= limits.max_calls:
        raise CallRefused(protocol.TOO_MANY_CALLS,
                          f"You are already in {limits.max_calls} direct calls.")
    ringing = [c for c in mine if c.state == RINGING and c.caller.id == call.caller.id]
    if len(ringing) >= limits.max_pending:
        raise CallRefused(protocol.TOO_MANY_INVITES,
                          f"You already have {limits.max_pending} invitations ringing.")
    if any(c.mode == call.mode and c.has(call.callee.id) for c in mine):
        raise CallRefused(protocol.DUPLICATE_CALL,
                          f"You already have a direct {call.mode} with {call.callee.name}.")
    if len([c for c in callee_calls if c.id != call.id]) >= limits.max_calls:
        raise CallRefused(protocol.BUSY, f"{call.callee.name} is busy in other calls.")


def _known(call: Call | None, call_id: str, room: int) -> Call:
    if call is None or call.room != room:
        raise CallRefused(protocol.UNKNOWN_CALL, "No such call (it may have ended).",
                          call=call_id)
    return call


def accepting(call: Call | None, call_id: str, room: int, participant: str,
              channel: str) -> Call:
    """The call once connection `channel` of `participant` accepted it."""
    call = _known(call, call_id, room)
    if call.callee.id != participant:
        raise CallRefused(protocol.NOT_YOUR_CALL, "This invitation is not for you.", call=call_id)
    if call.state != RINGING:
        raise CallRefused(protocol.NOT_RINGING, "This call was already answered.", call=call_id)
    return replace(call, state=ACTIVE, callee=replace(call.callee, channel=channel))


def ending_reason(call: Call | None, call_id: str, room: int, participant: str, channel: str,
                  action: str) -> str:
    """Why the call ends when connection `channel` sends `action` (decline, cancel, hang-up)."""
    call = _known(call, call_id, room)
    ringing = call.state == RINGING
    is_caller = channel == call.caller.channel
    is_callee = call.callee.id == participant if ringing else channel == call.callee.channel
    if action == "decline" and call.callee.id == participant:
        if not ringing:
            raise CallRefused(protocol.NOT_RINGING, "This call was already answered.",
                              call=call_id)
        return protocol.DECLINED
    if action == "cancel" and is_caller:
        if not ringing:
            raise CallRefused(protocol.NOT_RINGING, "This call was already answered; hang up.",
                              call=call_id)
        return protocol.CANCELLED
    if action == "hang-up" and (is_caller or is_callee):
        if ringing:
            return protocol.CANCELLED if is_caller else protocol.DECLINED
        return protocol.HUNG_UP
    raise CallRefused(protocol.NOT_YOUR_CALL, "This call is not this connection's.", call=call_id)


def relay_target(call: Call | None, call_id: str, room: int, channel: str) -> End:
    """The end an offer/answer/candidate from connection `channel` goes to."""
    call = _known(call, call_id, room)
    other = call.other_end(channel)
    if other is None:
        raise CallRefused(protocol.NOT_YOUR_CALL, "This call is not this connection's.",
                          call=call_id)
    if call.state != ACTIVE:
        raise CallRefused(protocol.NOT_ACCEPTED, "The call has not been accepted yet.",
                          call=call_id)
    return other


# A change: given the stored call (or None), the call to store (None: delete) and a result.
Change = Callable[[Call | None], tuple[Call | None, object]]


class MemoryDirectory:
    """One process's directory (no REDIS_URL)."""

    def __init__(self, ttl: float):
        self.ttl = ttl
        self.here: dict[tuple[int, str], dict[str, tuple[str, float]]] = {}
        self.calls: dict[str, tuple[Call, float]] = {}
        self.index: dict[tuple[int, str], set[str]] = {}

    def _live_connections(self, room: int, participant: str) -> dict[str, tuple[str, float]]:
        connections = self.here.get((room, participant), {})
        cutoff = time.time() - self.ttl
        for channel in [c for c, (_, seen) in connections.items() if seen < cutoff]:
            del connections[channel]
        return connections

    async def arrive(self, room: int, participant: str, name: str, channel: str) -> None:
        """A connection is here (again: each heartbeat calls this)."""
        self.here.setdefault((room, participant), {})[channel] = (name, time.time())

    async def depart(self, room: int, participant: str, channel: str) -> int:
        """A connection left; returns how many of the participant's connections remain."""
        connections = self._live_connections(room, participant)
        connections.pop(channel, None)
        if not connections:
            self.here.pop((room, participant), None)
        return len(connections)

    async def present(self, room: int, participant: str) -> str | None:
        """The participant's name if they have a live connection in the room."""
        connections = self._live_connections(room, participant)
        return next(iter(connections.values()))[0] if connections else None

    def _get(self, call_id: str) -> Call | None:
        entry = self.calls.get(call_id)
        if entry is None:
            return None
        if entry[1] < time.time():
            del self.calls[call_id]
            return None
        return entry[0]

    async def calls_of(self, room: int, participant: str) -> list[Call]:
        ids = self.index.get((room, participant), set())
        calls = [c for c in map(self._get, list(ids)) if c is not None]
        ids.intersection_update(c.id for c in calls)
        return calls

    async def get(self, call_id: str) -> Call | None:
        return self._get(call_id)

    async def invite(self, call: Call, limits: Limits) -> None:
        check_invite(call, await self.calls_of(call.room, call.caller.id),
                     await self.calls_of(call.room, call.callee.id), limits)
        self.calls[call.id] = (call, time.time() + self.ttl)
        for end in (call.caller, call.callee):
            self.index.setdefault((call.room, end.id), set()).add(call.id)

    async def change(self, call_id: str, change: Change) -> object:
        new, result = change(self._get(call_id))
        if new is None:
            self.calls.pop(call_id, None)
        else:
            self.calls[call_id] = (new, time.time() + self.ttl)
        return result

    async def touch(self, call_ids: list[str]) -> None:
        for call_id in call_ids:
            call = self._get(call_id)
            if call is not None:
                self.calls[call_id] = (call, time.time() + self.ttl)


class RedisDirectory:
    """The directory in Redis, shared by every process (REDIS_URL)."""

    def __init__(self, url: str, ttl: float):
        self.url = url
        self.ttl = ttl
        self.expire = max(1, round(ttl))

    def _redis(self):
        return redis_client(self.url)

    @staticmethod
    def _here_key(room: int, participant: str) -> str:
        return f"parley:signal:here:{room}:{participant}"

    @staticmethod
    def _call_key(call_id: str) -> str:
        return f"parley:signal:call:{call_id}"

    @staticmethod
    def _index_key(room: int, participant: str) -> str:
        return f"parley:signal:calls:{room}:{participant}"

    def _live(self, raw: dict) -> dict[str, str]:
        cutoff = time.time() - self.ttl
        live = {}
        for channel, value in raw.items():
            entry = json.loads(value)
            if entry["ts"] >= cutoff:
                live[channel.decode() if isinstance(channel, bytes) else channel] = entry["name"]
        return live

    async def arrive(self, room: int, participant: str, name: str, channel: str) -> None:
        key = self._here_key(room, participant)
        async with self._redis().pipeline(transaction=True) as pipe:
            pipe.hset(key, channel, json.dumps({"name": name, "ts": time.time()}))
            pipe.expire(key, self.expire * 2)
            await pipe.execute()

    async def depart(self, room: int, participant: str, channel: str) -> int:
        key = self._here_key(room, participant)
        redis = self._redis()
        await redis.hdel(key, channel)
        return len(self._live(await redis.hgetall(key)))

    async def present(self, room: int, participant: str) -> str | None:
        live = self._live(await self._redis().hgetall(self._here_key(room, participant)))
        return next(iter(live.values()), None)

    async def _calls_in(self, redis, index_key: str) -> list[Call]:
        ids = sorted(i.decode() if isinstance(i, bytes) else i
                     for i in await redis.smembers(index_key))
        if not ids:
            return []
        raws = await redis.mget([self._call_key(i) for i in ids])
        return [Call.from_json(raw) for raw in raws if raw is not None]

    async def calls_of(self, room: int, participant: str) -> list[Call]:
        index_key = self._index_key(room, participant)
        redis = self._redis()
        calls = await self._calls_in(redis, index_key)
        ids = {i.decode() if isinstance(i, bytes) else i for i in await redis.smembers(index_key)}
        stale = ids - {c.id for c in calls}
        if stale:
            await redis.srem(index_key, *stale)
        return calls

    async def get(self, call_id: str) -> Call | None:
        raw = await self._redis().get(self._call_key(call_id))
        return Call.from_json(raw) if raw is not None else None

    async def invite(self, call: Call, limits: Limits) -> None:
        from redis.exceptions import WatchError

        keys = [self._index_key(call.room, end.id) for end in (call.caller, call.callee)]
        for _ in range(CAS_ATTEMPTS):
            async with self._redis().pipeline(transaction=True) as pipe:
                try:
                    await pipe.watch(*keys)
                    check_invite(call, await self._calls_in(pipe, keys[0]),
                                 await self._calls_in(pipe, keys[1]), limits)
                    pipe.multi()
                    pipe.set(self._call_key(call.id), call.to_json(), ex=self.expire)
                    for key in keys:
                        pipe.sadd(key, call.id)
                        pipe.expire(key, self.expire * 4)
                    await pipe.execute()
                    return
                except WatchError:
                    continue
        raise RuntimeError("the call directory stayed contended")

    async def change(self, call_id: str, change: Change) -> object:
        from redis.exceptions import WatchError

        key = self._call_key(call_id)
        for _ in range(CAS_ATTEMPTS):
            async with self._redis().pipeline(transaction=True) as pipe:
                try:
                    await pipe.watch(key)
                    raw = await pipe.get(key)
                    new, result = change(Call.from_json(raw) if raw is not None else None)
                    pipe.multi()
                    if new is None:
                        pipe.delete(key)
                    else:
                        pipe.set(key, new.to_json(), ex=self.expire)
                    await pipe.execute()
                    return result
                except WatchError:
                    continue
        raise RuntimeError("the call directory stayed contended")

    async def touch(self, call_ids: list[str]) -> None:
        if not call_ids:
            return
        async with self._redis().pipeline(transaction=False) as pipe:
            for call_id in call_ids:
                pipe.expire(self._call_key(call_id), self.expire)
            await pipe.execute()


Directory = MemoryDirectory | RedisDirectory


# What the consumer does with a directory, on top of `change`.

async def accept(directory: Directory, call_id: str, room: int, participant: str,
                 channel: str) -> Call:
    def change(call: Call | None) -> tuple[Call | None, object]:
        accepted = accepting(call, call_id, room, participant, channel)
        return accepted, accepted

    return await directory.change(call_id, change)


async def end(directory: Directory, call_id: str, room: int, participant: str, channel: str,
              action: str) -> tuple[Call, str]:
    """End a call by a client's decline / cancel / hang-up; returns it and the reason."""
    def change(call: Call | None) -> tuple[Call | None, object]:
        return None, (call, ending_reason(call, call_id, room, participant, channel, action))

    return await directory.change(call_id, change)


async def expire_ringing(directory: Directory, call_id: str) -> Call | None:
    """End a call that is still ringing (its invitation timed out); None if it is not."""
    def change(call: Call | None) -> tuple[Call | None, object]:
        if call is None or call.state != RINGING:
            return call, None
        return None, call

    return await directory.change(call_id, change)


async def drop(directory: Directory, call_id: str) -> Call | None:
    """Forget a call whatever its state (an end's socket closed); returns what it was."""
    return await directory.change(call_id, lambda call: (None, call))


_directory: Directory | None = None


def directory() -> Directory:
    """The process-wide directory chosen by settings (Redis when REDIS_URL is set)."""
    global _directory
    if _directory is None:
        ttl = settings.PARLEY["PRESENCE_TTL_SECONDS"]
        _directory = (RedisDirectory(settings.REDIS_URL, ttl) if settings.REDIS_URL
                      else MemoryDirectory(ttl))
    return _directory
