"""The base of every Parley socket (chat, signaling, group calls, captions, `/v1/realtime`).

`ParleySocket` owns what none of them may get wrong on its own (issue #10):
- one decoding step for client frames (rooms/frames.py: size, depth, lone surrogates), the
  rate limit with its flood close, and an `error` event for every refused frame;
- a handler that raises is a `server_error` event, never a 1011 close: a client frame can
  find a bug, but it cannot take the socket (and what the socket holds) down with it;
- every task a connection starts is created by `spawn()` and cancelled however the
  connection ends, then `closed()` runs exactly once, even when a handler raised (Channels
  skips `disconnect()` then);
- access: a socket watching a room is closed (4403) when the member loses access to it.

`RoomSocket` adds room admission with the documented close codes. Subclasses implement
`joined()`, `handle(data)` and `closed()` and stay thin.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections import Counter
from collections.abc import Coroutine
from typing import Any

from autobahn.exception import Disconnected
from channels.consumer import get_handler_name
from channels.db import database_sync_to_async
from channels.exceptions import StopConsumer
from channels.generic.websocket import AsyncWebsocketConsumer
from django.conf import settings

from . import protocol
from .access import admits
from .identity import Participant, participant_for
from .models import Room
from .presence import Present
from .ratelimit import TokenBucket

log = logging.getLogger(__name__)

# The server could not admit the socket right now (its database or Redis did not answer).
# Clients reconnect with backoff, as after any drop. (WebSocket's own 1013 says the same, but
# daphne's autobahn lets a server send only 1000 and 3000-4999.)
CLOSE_TRY_AGAIN = protocol.CLOSE_TRY_AGAIN
# How long `closed()` may take (ending an open transcription turn waits for the engine's
# last events) before the rest of the cleanup goes on without it.
CLEANUP_SECONDS = 15

# Open sockets per class and the tasks they own, for tests and operators (socket_stats()).
_open_sockets: Counter[str] = Counter()
_owned_tasks: set[asyncio.Task] = set()


def socket_stats() -> dict[str, int]:
    """Open sockets by kind and the tasks they own, in this process."""
    return {**{k: v for k, v in _open_sockets.items() if v}, "tasks": len(_owned_tasks)}


def access_group(room_id: int) -> str:
    """The group told when a room's access rules change (rooms/signals.py)."""
    return f"rooms.access.{room_id}"


def user_access_group(user_id: int) -> str:
    """The group told when an account is deactivated or removed."""
    return f"rooms.access.user.{user_id}"


class ParleySocket(AsyncWebsocketConsumer):
    """One client connection: decoding, limits, task ownership and cleanup."""

    # Names of the settings.PARLEY entries that size this socket's rate limit and frames.
    rate_settings = ("RATE_BURST", "RATE_PER_SECOND")
    frame_setting = "MAX_FRAME_BYTES"
    bucket: TokenBucket | None = None  # set once the socket is admitted
    _ended = False
    accepted = False
    _watched: tuple[int, str] | None = None

    async def __call__(self, scope, receive, send) -> None:
        self.limits = settings.PARLEY
        self.tasks: set[asyncio.Task] = set()
        self.kind = type(self).__name__
        _open_sockets[self.kind] += 1
        try:
            await super().__call__(scope, receive, send)
        finally:
            await self._end()
            _open_sockets[self.kind] -= 1

    def max_frame_bytes(self) -> int:
        return self.limits[self.frame_setting]

    def admit(self) -> None:
        """Start accepting client frames (subclasses call this once authorized)."""
        burst, rate = (self.limits[name] for name in self.rate_settings)
        self.bucket = TokenBucket(burst, rate)

    def spawn(self, coroutine: Coroutine, *, name: str) -> asyncio.Task:
        """Run `coroutine` for as long as this connection lives, at most."""
        task = asyncio.get_running_loop().create_task(coroutine, name=f"{self.kind}.{name}")
        self.tasks.add(task)
        _owned_tasks.add(task)
        task.add_done_callback(self._task_done)
        return task

    def _task_done(self, task: asyncio.Task) -> None:
        self.tasks.discard(task)
        _owned_tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("socket task %s failed", task.get_name(), exc_info=task.exception())

    async def websocket_connect(self, message: dict) -> None:
        """Called on the handshake. A server-side fault while admitting (database or Redis
        unreachable) closes with 1013 rather than failing the handshake with a 500."""
        try:
            await super().websocket_connect(message)
        except StopConsumer:
            raise
        except Exception:
            log.exception("admitting a socket failed")
            if not self.accepted:
                await self.accept()
            await self.close(code=CLOSE_TRY_AGAIN)

    async def accept(self, subprotocol: str | None = None, headers=None) -> None:
        self.accepted = True
        await super().accept(subprotocol, headers)

    async def disconnect(self, code: int) -> None:
        """Called when the socket closes: clean up now (the finally in __call__ repeats it
        for the ways a consumer can end without this call)."""
        await self._end()

    async def closed(self) -> None:
        """Called once, after this connection's tasks were cancelled: release what it holds."""

    async def _end(self) -> None:
        if self._ended:
            return
        self._ended = True
        for task in list(self.tasks):
            task.cancel()
        if self.tasks:
            await asyncio.gather(*self.tasks, return_exceptions=True)
        try:
            await asyncio.wait_for(self.closed(), CLEANUP_SECONDS)
        except Exception:
            log.exception("cleaning up a %s failed", self.kind)
        if self._watched is not None:
            for group in self._access_groups():
                with contextlib.suppress(Exception):
                    await self.channel_layer.group_discard(group, self.channel_name)

    # Client frames

    async def receive(self, text_data: str | None = None, bytes_data: bytes | None = None) -> None:
        """Called for each client frame: every frame spends a token, bad ones get `error`."""
        if self.bucket is None or self._ended:
            return
        if not self.bucket.allow():
            if self.bucket.strikes >= self.limits["FLOOD_CLOSE_AFTER"]:
                await self.close(code=protocol.CLOSE_FLOOD)
                return
            await self.refuse(protocol.ProtocolError(
                protocol.RATE_LIMITED, "Too many messages; slow down.",
                ref=_client_id_of(text_data)),
                retry_after=round(self.bucket.retry_after(), 3))
            return
        try:
            data = protocol.parse_frame(text_data, bytes_data, max_bytes=self.max_frame_bytes())
            await self.handle(data)
        except protocol.ProtocolError as error:
            await self.refuse(error)
        except Exception:
            log.exception("%s failed to handle a frame", self.kind)
            await self.refuse(protocol.ProtocolError(
                protocol.SERVER_ERROR, "The server could not handle that message."))

    async def handle(self, data: dict) -> None:
        """Called with each decoded client frame; raise ProtocolError to refuse it."""
        raise NotImplementedError

    async def refuse(self, error: protocol.ProtocolError, **extra) -> None:
        """Tell the client a frame was refused (subclasses with another wire shape override)."""
        await self.send_json({**error.event(), **extra})

    # Server side

    async def dispatch(self, message: dict) -> None:
        """Channels' dispatch, minus two things. Its per-message `aclose_old_connections()`
        is a round trip through the one sync thread for every room broadcast each socket
        receives (most of a process's CPU at 500 clients in bench/chat_fanout.py); our
        handlers reach the database only through database_sync_to_async, which closes old
        connections itself. And a failing handler of a server-side message is logged, not
        allowed to end the consumer (and skip its cleanup)."""
        handler = getattr(self, get_handler_name(message), None)
        if handler is None:
            raise ValueError(f"No handler for message type {message['type']}")
        if message["type"].startswith("websocket."):
            await handler(message)
            return
        try:
            await handler(message)
        except Exception:
            log.exception("%s failed to handle %s", self.kind, message["type"])

    async def send(self, text_data: str | None = None, bytes_data: bytes | None = None,
                   close: bool = False) -> None:
        """Send a frame; a frame for a socket the client has just closed is dropped. (A
        broadcast can race the close: daphne then raises Disconnected.)"""
        try:
            await super().send(text_data=text_data, bytes_data=bytes_data, close=close)
        except Disconnected:
            pass

    async def send_json(self, content: dict[str, Any]) -> None:
        await self.send(text_data=json.dumps(content, separators=(",", ":"), ensure_ascii=False))

    # Access

    async def watch_access(self, room_id: int, participant_key: str) -> None:
        """Close this socket (4403) if the member loses access to the room while it is open."""
        self._watched = (room_id, participant_key)
        for group in self._access_groups():
            await self.channel_layer.group_add(group, self.channel_name)

    def _access_groups(self) -> list[str]:
        room_id, key = self._watched
        groups = [access_group(room_id)]
        if key.startswith("u:"):
            groups.append(user_access_group(int(key[2:])))
        return groups

    async def rooms_access_changed(self, message: dict) -> None:
        """Called when a room's privacy or members, or an account, changed: recheck."""
        room_id, key = self._watched
        if not await database_sync_to_async(admits)(room_id, key):
            await self.access_revoked()

    async def access_revoked(self) -> None:
        await self.close(code=protocol.CLOSE_FORBIDDEN)


@database_sync_to_async
def load_room_and_participant(slug: str, session, user) -> tuple[Room | None, Participant | None]:
    room = Room.objects.filter(slug=slug).first()
    if room is None:
        return None, None
    return room, participant_for(session, user, room)


class RoomSocket(ParleySocket):
    """A member's socket in one room."""

    room: Room | None = None
    participant: Participant | None = None

    async def connect(self) -> None:
        """Called on the handshake: refuse with 4404/4403, or accept and call `joined`."""
        slug = self.scope["url_route"]["kwargs"]["slug"]
        room, participant = await load_room_and_participant(
            slug, self.scope.get("session"), self.scope.get("user")
        )
        # Accept before closing so the browser sees our close code, not a bare 403.
        await self.accept()
        if room is None:
            await self.close(code=protocol.CLOSE_NOT_FOUND)
            return
        if participant is None:
            await self.close(code=protocol.CLOSE_FORBIDDEN)
            return
        self.room, self.participant = room, participant
        self.me = Present(participant.public_id, participant.name)
        await self.watch_access(room.pk, participant.key)
        self.admit()
        await self.joined()

    async def joined(self) -> None:
        """Called once the member is admitted."""


def _client_id_of(text_data: str | None) -> str | None:
    """The client_id of a rate-limited frame, so the client knows which message to retry."""
    if not text_data or len(text_data) > 8192:
        return None
    try:
        data = protocol.parse_frame(text_data, None, max_bytes=8192)
    except protocol.ProtocolError as error:
        return error.ref
    return protocol.client_id_in(data)
