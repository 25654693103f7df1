"""Helpers for consumer tests: sessions that joined a room, and communicators carrying them."""

from __future__ import annotations

import asyncio
import json
from collections import deque

from channels.db import database_sync_to_async
from channels.testing import WebsocketCommunicator
from django.contrib.auth import BACKEND_SESSION_KEY, HASH_SESSION_KEY, SESSION_KEY
from django.contrib.sessions.backends.db import SessionStore

from project.asgi import application
from rooms.fanout import room_fanout
from rooms.identity import join_as_guest
from rooms.models import Room

ORIGIN = (b"origin", b"http://localhost")


@database_sync_to_async
def guest_session_key(room: Room, name: str) -> str:
    session = SessionStore()
    join_as_guest(session, room, name)
    session.save()
    return session.session_key


@database_sync_to_async
def user_session_key(user) -> str:
    session = SessionStore()
    session[SESSION_KEY] = str(user.pk)
    session[BACKEND_SESSION_KEY] = "django.contrib.auth.backends.ModelBackend"
    session[HASH_SESSION_KEY] = user.get_session_auth_hash()
    session.save()
    return session.session_key


class RoomCommunicator(WebsocketCommunicator):
    """A communicator that reads a `batch` frame (docs/protocol.md) as the events it carries,
    one at a time and in order, as the browser client applies it."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.unbatched: deque[dict] = deque()

    async def receive_json_from(self, timeout: float = 1) -> dict:
        if not self.unbatched:
            event = json.loads(await self.receive_from(timeout))
            if event.get("type") != "batch":
                return event
            self.unbatched.extend(event["events"])
        return self.unbatched.popleft()


class RoomListener:
    """Hears a room's events as its sockets do, through the process's fan-out
    (rooms/fanout.py): `async with RoomListener(room_id) as listener: await listener.next()`."""

    def __init__(self, room_id: int):
        self.room_id = room_id
        self.events: asyncio.Queue[dict] = asyncio.Queue()

    async def __aenter__(self) -> RoomListener:
        await room_fanout().join(self.room_id, self)
        return self

    async def __aexit__(self, *exc) -> None:
        await room_fanout().leave(self.room_id, self)

    async def room_frames(self, out) -> None:
        for text in out.texts:
            self.events.put_nowait(json.loads(text))

    async def next(self, timeout: float = 30) -> dict:
        async with asyncio.timeout(timeout):
            return await self.events.get()


def room_socket(slug: str, session_key: str | None, *, query: str = "",
                origin: tuple[bytes, bytes] | None = ORIGIN,
                kind: str = "rooms") -> WebsocketCommunicator:
    """A communicator for `ws/<kind>/<slug>/` (kind: rooms, signal) carrying the session."""
    headers = [(b"host", b"localhost")]
    if origin is not None:
        headers.append(origin)
    if session_key:
        headers.append((b"cookie", f"sessionid={session_key}".encode()))
    path = f"/ws/{kind}/{slug}/" + (f"?{query}" if query else "")
    return RoomCommunicator(application, path, headers=headers)


async def connected(slug: str, session_key: str, **kwargs) -> tuple[WebsocketCommunicator, dict]:
    """Open a room (or signaling) socket and return it with its `hello`."""
    communicator = room_socket(slug, session_key, **kwargs)
    ok, code = await communicator.connect()
    assert ok, code
    hello = await communicator.receive_json_from()
    assert hello["type"] == "hello", hello
    return communicator, hello


async def receive_type(communicator: WebsocketCommunicator, kind: str, timeout: float = 3) -> dict:
    """The next event of type `kind`, skipping others (presence, heartbeats)."""
    while True:
        event = await communicator.receive_json_from(timeout=timeout)
        if event["type"] == kind:
            return event


@database_sync_to_async
def _close_sync_thread_connections() -> None:
    """Close the connection of the thread that runs consumers' database work."""
    from django.db import connections

    connections.close_all()


async def close_db_connections() -> None:
    """Close the connections of the threads that run consumers' database work: the shared
    sync thread's and the chat writer's (PostgreSQL cannot drop a database still in use)."""
    from rooms import writer

    await _close_sync_thread_connections()
    await writer.close_connections()


async def stop_in_process_calls() -> None:
    """Stop the in-process group-call workers a test started and forget the directory (each
    test runs its own event loop; workers belong to the loop that started them)."""
    from signaling.sfu import directory, worker

    for local in list(worker._local_workers.values()):
        await local.stop()
    worker._local_workers.clear()
    directory._directory = None
