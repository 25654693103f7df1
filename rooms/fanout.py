"""Room broadcasts, fanned out once per process (issue #13 owns this module).

A room event (a chat message, a presence change, a caption) used to be one channel-layer
message and one consumer dispatch per socket: at 200 sockets that was most of a process's CPU.
Here each process holds one `LocalRoom` per room with sockets in it; an event is encoded once,
appended to the room's queue, and the room's flusher writes it to every local receiver. When
several events are waiting by the time the flusher runs (the process is behind), they go out
as one `batch` frame (docs/protocol.md), so the cost per recipient falls as the load rises.

Other processes hear of the event through a `Bus`: the in-memory default has none (one
process), the Redis bus publishes each event on the room's Redis channel and keeps one
subscription per room per process. An event is delivered locally at once and skipped when it
comes back from Redis (each process tags what it publishes).

Lifetimes: a `LocalRoom` and its flusher task exist while the room has a local receiver; the
Redis reader exists while any room is subscribed. Receivers are registered by their owner
(a socket, a caption feed) and removed by it when it ends.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import secrets
from collections.abc import Callable, Iterable
from typing import Protocol

from django.conf import settings

log = logging.getLogger(__name__)

# The largest batch frame, in UTF-8 bytes: well below the outbound bound (MAX_OUTBOUND_BYTES,
# 512 KiB), so a batch alone never closes a socket for being behind. Longer runs go out as
# several frames.
BATCH_MAX_BYTES = 64 * 1024
BATCH_PREFIX = '{"type":"batch","events":['


def encode_event(event: dict) -> str:
    """The JSON text of one server event, as every recipient receives it."""
    return json.dumps(event, separators=(",", ":"), ensure_ascii=False)


def frames_for(texts: list[str]) -> list[str]:
    """The frames that carry `texts` in order: the event itself when it is alone, else
    `batch` events of at most BATCH_MAX_BYTES (an oversized event travels on its own)."""
    if len(texts) == 1:
        return texts
    frames, run, size = [], [], 0
    for text in texts:
        length = len(text) if text.isascii() else len(text.encode())
        if run and size + length + 1 > BATCH_MAX_BYTES:
            frames.append(_batch(run))
            run, size = [], 0
        run.append(text)
        size += length + 1
    frames.append(_batch(run))
    return frames


def _batch(run: list[str]) -> str:
    return run[0] if len(run) == 1 else BATCH_PREFIX + ",".join(run) + "]}"


def websocket_frame(text: str) -> bytes:
    """`text` as one complete, unmasked WebSocket text frame (RFC 6455 5.2), the bytes a
    server writes: built once for all of a room's sockets instead of once per socket."""
    payload = text.encode()
    n = len(payload)
    if n < 126:
        head = bytes((0x81, n))
    elif n < 1 << 16:
        head = bytes((0x81, 126)) + n.to_bytes(2, "big")
    else:
        head = bytes((0x81, 127)) + n.to_bytes(8, "big")
    return head + payload


class Outgoing:
    """What one flush sends: the events (`texts`), the frames that carry them (`frames`),
    and those frames as wire bytes (`wire`, built on first use, once for every socket)."""

    __slots__ = ("texts", "frames", "_wire")

    def __init__(self, texts: list[str]):
        self.texts = texts
        self.frames = frames_for(texts)
        self._wire: list[bytes] | None = None

    @property
    def wire(self) -> list[bytes]:
        if self._wire is None:
            self._wire = [websocket_frame(frame) for frame in self.frames]
        return self._wire


class Receiver(Protocol):
    """Something that wants a room's events: a room socket, a caption feed."""

    async def room_frames(self, out: Outgoing) -> None:
        """Called with each flush of the room's events. Must not wait on its client: a slow
        one is bounded by the transport (project/transport.py)."""


class LocalRoom:
    """One room's receivers in this process and the events waiting for them."""

    def __init__(self, room_id: int):
        self.room_id = room_id
        self.receivers: dict[Receiver, None] = {}  # ordered set
        self.pending: list[str] = []
        self._wake = asyncio.Event()
        self._flusher = asyncio.get_running_loop().create_task(
            self._flush_forever(), name=f"fanout.room.{room_id}")

    def post(self, texts: Iterable[str]) -> None:
        self.pending.extend(texts)
        self._wake.set()

    async def _flush_forever(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            texts, self.pending = self.pending, []
            if not texts:
                continue
            out = Outgoing(texts)
            for receiver in list(self.receivers):
                try:
                    await receiver.room_frames(out)
                except Exception:
                    log.exception("delivering room %s events failed", self.room_id)

    def close(self) -> None:
        self._flusher.cancel()


class Bus(Protocol):
    """How one process's room events reach the other processes."""

    async def subscribe(self, room_id: int) -> None: ...

    async def unsubscribe(self, room_id: int) -> None: ...

    async def publish(self, room_id: int, texts: list[str]) -> None: ...

    async def close(self) -> None: ...


class RoomFanout:
    """This process's rooms: who receives their events, and the bus to other processes."""

    def __init__(self, bus: Bus | None = None):
        self.bus = bus
        self.rooms: dict[int, LocalRoom] = {}
        self.loop = asyncio.get_running_loop()

    async def join(self, room_id: int, receiver: Receiver) -> None:
        """Start delivering the room's events to `receiver`. Returns once events published
        anywhere from now on will reach it, so a backlog read after this misses nothing."""
        room = self.rooms.get(room_id)
        if room is None:
            room = self.rooms[room_id] = LocalRoom(room_id)
        room.receivers[receiver] = None
        if self.bus is not None:
            await self.bus.subscribe(room_id)

    async def leave(self, room_id: int, receiver: Receiver) -> None:
        room = self.rooms.get(room_id)
        if room is None:
            return
        room.receivers.pop(receiver, None)
        if not room.receivers:
            await self._forget(room_id)

    async def _forget(self, room_id: int) -> None:
        room = self.rooms.pop(room_id, None)
        if room is not None:
            room.close()
            if self.bus is not None:
                await self.bus.unsubscribe(room_id)

    def local_receivers(self, room_id: int) -> list[Receiver]:
        room = self.rooms.get(room_id)
        return list(room.receivers) if room else []

    def deliver_local(self, room_id: int, texts: list[str]) -> None:
        """Queue already-encoded events for this process's receivers of the room."""
        room = self.rooms.get(room_id)
        if room is not None:
            room.post(texts)

    async def publish(self, room_id: int, events: list[dict]) -> list[str]:
        """Send events to every receiver of the room in every process; returns their text.
        Local receivers get them at once; the bus sends them on in the background and logs
        what it could not send (clients catch up by seq)."""
        texts = [encode_event(event) for event in events]
        self.deliver_local(room_id, texts)
        if self.bus is not None:
            await self.bus.publish(room_id, texts)
        return texts

    async def close(self) -> None:
        for room_id in list(self.rooms):
            await self._forget(room_id)
        if self.bus is not None:
            await self.bus.close()


class RedisBus:
    """Room events through Redis pub/sub: one channel per room, one subscription per room per
    process, all on one connection read by one task. Events published while Redis is away are
    lost; heartbeats carry the room's seq and clients fetch what they missed."""

    CHANNEL_PREFIX = "parley:room:"
    RETRY_MAX_SECONDS = 2.0
    # How long a join waits for Redis to confirm the room's subscription before going on
    # without it (Redis away: heartbeats repair what the socket misses).
    SUBSCRIBE_WAIT_SECONDS = 2.0

    def __init__(self, url: str, deliver: Callable[[int, list[str]], None]):
        self.url = url
        self.deliver = deliver
        self.origin = secrets.token_hex(6)  # tags this process's publishes
        self.rooms: dict[int, asyncio.Event] = {}  # wanted rooms -> set once confirmed
        self._pubsub = None
        self._stale = False  # a subscribe failed: the connection's subscriptions are unknown
        self._lock = asyncio.Lock()  # one subscribe/unsubscribe/reconnect at a time
        self._reader: asyncio.Task | None = None
        self._outbox: list[tuple[str, str]] = []  # (channel, data) waiting for the publisher
        self._publisher: asyncio.Task | None = None

    def _channel(self, room_id: int) -> str:
        return f"{self.CHANNEL_PREFIX}{room_id}"

    def _redis(self):
        from rooms.redis import redis_client

        return redis_client(self.url)

    async def subscribe(self, room_id: int) -> None:
        confirmed = self.rooms.get(room_id)
        if confirmed is None:
            confirmed = self.rooms[room_id] = asyncio.Event()
            try:
                async with self._lock:
                    if self._pubsub is None:
                        self._pubsub = self._redis().pubsub()
                    await self._pubsub.subscribe(self._channel(room_id))
            except Exception:
                log.warning("subscribing to room %s failed; the reader retries", room_id,
                            exc_info=True)
                self._stale = True  # the reader starts over on a new connection
            if self._reader is None or self._reader.done():
                self._reader = asyncio.get_running_loop().create_task(
                    self._read(), name="fanout.redis-reader")
        try:
            async with asyncio.timeout(self.SUBSCRIBE_WAIT_SECONDS):
                await confirmed.wait()
        except TimeoutError:
            log.warning("Redis did not confirm room %s's subscription; going on", room_id)

    async def unsubscribe(self, room_id: int) -> None:
        if self.rooms.pop(room_id, None) is None:
            return
        with contextlib.suppress(Exception):
            async with self._lock:
                if self._pubsub is not None:
                    await self._pubsub.unsubscribe(self._channel(room_id))

    async def publish(self, room_id: int, texts: list[str]) -> None:
        """Queue the events for Redis and return: one publisher task sends everything
        queued, in order, in one pipeline per round trip, so a busy room's next batch is
        not stored only after the previous one's Redis round trip (the writer awaits this)."""
        channel = self._channel(room_id)
        self._outbox.extend((channel, f"{self.origin} {text}") for text in texts)
        if self._publisher is None:
            self._publisher = asyncio.get_running_loop().create_task(
                self._publish_queued(), name="fanout.redis-publisher")

    async def _publish_queued(self) -> None:
        """Send the queued events until none is left. Events that fail with Redis away are
        dropped (and logged): heartbeats carry the seq and clients fetch what they missed."""
        try:
            while self._outbox:
                queued, self._outbox = self._outbox, []
                try:
                    async with self._redis().pipeline(transaction=False) as pipe:
                        for channel, data in queued:
                            pipe.publish(channel, data)
                        await pipe.execute()
                except Exception:
                    log.warning("room broadcast of %s events failed; clients will catch up "
                                "by seq", len(queued), exc_info=True)
        finally:
            self._publisher = None

    async def _read(self) -> None:
        """Deliver what other processes publish, for as long as a room is wanted; after a
        Redis fault, start over on a new connection with every wanted room."""
        delay = 0.1
        prefix_length = len(self.CHANNEL_PREFIX)
        while True:
            if not self.rooms:
                await self._drop()
                if not self.rooms:
                    return
            try:
                if self._stale:
                    self._stale = False
                    await self._drop()
                if self._pubsub is None:
                    await self._resubscribe()
                message = await self._pubsub.get_message(timeout=1.0)
                delay = 0.1
            except asyncio.CancelledError:
                raise
            except Exception:
                log.warning("room bus lost Redis; resubscribing in %.1f s", delay, exc_info=True)
                await self._drop()
                await asyncio.sleep(delay)
                delay = min(self.RETRY_MAX_SECONDS, delay * 2)
                continue
            if message is None:
                continue
            kind = message["type"]
            room_id = int(message["channel"][prefix_length:])
            if kind == "message":
                origin, _, text = message["data"].decode().partition(" ")
                if origin != self.origin:
                    self.deliver(room_id, [text])
            elif kind == "subscribe" and room_id in self.rooms:
                self.rooms[room_id].set()

    async def _resubscribe(self) -> None:
        async with self._lock:
            self._pubsub = self._redis().pubsub()
            await self._pubsub.subscribe(*(self._channel(r) for r in self.rooms))

    async def _drop(self) -> None:
        for confirmed in self.rooms.values():
            confirmed.clear()
        async with self._lock:
            pubsub, self._pubsub = self._pubsub, None
        if pubsub is not None:
            with contextlib.suppress(Exception):
                await pubsub.aclose()

    async def close(self) -> None:
        self.rooms.clear()
        if self._publisher is not None:  # send what is queued, then stop
            with contextlib.suppress(Exception):
                await asyncio.shield(self._publisher)
        if self._reader is not None:
            self._reader.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._reader
            self._reader = None
        await self._drop()


_fanouts: dict[int, RoomFanout] = {}


def fanout_stats() -> dict[str, int]:
    """Rooms with receivers in this process (every loop), for tests and operators."""
    return {"fanout_rooms": sum(len(f.rooms) for f in _fanouts.values())}


def room_fanout() -> RoomFanout:
    """This event loop's fan-out (daphne runs one loop; tests run one per test)."""
    loop = asyncio.get_running_loop()
    fanout = _fanouts.get(id(loop))
    if fanout is None or fanout.loop is not loop:
        fanout = _fanouts[id(loop)] = RoomFanout()
        if settings.REDIS_URL:
            fanout.bus = RedisBus(settings.REDIS_URL, fanout.deliver_local)
    return fanout
