"""Group commit of chat messages, per room and process (issue #13 owns this module).

Every `chat.send` used to be its own transaction, each a round trip through the one thread
that runs all of a process's synchronous database work: under load, sends queued behind each
other and behind backlog reads. Here the sends of a room that arrive while its previous batch
is being stored wait together and are stored as the next batch (services.post_messages: one
transaction), on a thread of their own. Once a batch is stored, each sender gets its result
(and its client an ack), then the batch's messages are broadcast: nothing is acknowledged or
broadcast before it is stored.

Lifetimes: a room's drain task runs while sends are waiting and ends when none are; its
`RoomWriter` is forgotten with it. A socket that closes while its send waits only stops
waiting: the message is stored (the client re-sends its client_id and gets the same seq).
"""

from __future__ import annotations

import asyncio
import logging
from concurrent.futures import ThreadPoolExecutor

from django.db import close_old_connections, connections

from . import services
from .fanout import room_fanout
from .models import Room

log = logging.getLogger(__name__)

# Sends stored in one transaction at most: bounds one batch's time and its broadcast.
MAX_BATCH = 256

# One thread for every room's writes: SQLite has one writer anyway, and on PostgreSQL one
# connection's batches cost less than several connections contending for the room row.
_executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="parley-chat-writer")


def _in_writer_thread(function, *args):
    close_old_connections()
    try:
        return function(*args)
    finally:
        close_old_connections()


async def run_in_writer(function, *args):
    """Run a database write on the writer thread (not the shared sync thread). A plain
    executor hop: asgiref's sync_to_async adds context copying and thread-sensitivity
    bookkeeping this thread does not need, on every batch's critical path."""
    loop = asyncio.get_running_loop()
    return await loop.run_in_executor(_executor, _in_writer_thread, function, *args)


async def close_connections() -> None:
    """Close the writer thread's database connection (tests drop their database after)."""
    await run_in_writer(connections.close_all)


class RoomWriter:
    """The sends of one room waiting to be stored, and the task storing them."""

    def __init__(self, room: Room, forget):
        self.room = room
        self.waiting: list[tuple[services.PostRequest, asyncio.Future]] = []
        self._forget = forget
        self._drain: asyncio.Task | None = None

    async def post(self, request: services.PostRequest) -> services.PostResult:
        future = asyncio.get_running_loop().create_future()
        self.waiting.append((request, future))
        if self._drain is None:
            self._drain = asyncio.get_running_loop().create_task(
                self._store_waiting(), name=f"chat-writer.room.{self.room.pk}")
        return await future

    async def _store_waiting(self) -> None:
        try:
            while self.waiting:
                batch, self.waiting = self.waiting[:MAX_BATCH], self.waiting[MAX_BATCH:]
                await self._store(batch)
        finally:
            self._drain = None
            if not self.waiting:
                self._forget(self)

    async def _store(self, batch: list[tuple[services.PostRequest, asyncio.Future]]) -> None:
        try:
            results = await run_in_writer(
                services.post_messages, self.room, [request for request, _ in batch])
        except Exception as error:
            log.exception("storing %s chat messages failed", len(batch))
            for _, future in batch:
                if not future.done():
                    future.set_exception(error)
            return
        # Senders first (their acks are written before the broadcast reaches their sockets:
        # the fan-out's flusher runs after them), then the room.
        for (_, future), result in zip(batch, results, strict=True):
            if not future.done():  # its socket may have stopped waiting
                future.set_result(result)
        created = [{"type": "chat.message", **services.message_payload(result.message)}
                   for result in results if result.created]
        if created:
            try:
                await room_fanout().publish(self.room.pk, created)
            except Exception:
                # Stored, so never lost: heartbeats carry the seq and clients catch up.
                log.warning("room broadcast failed; clients will catch up by seq", exc_info=True)


_writers: dict[tuple[int, int], RoomWriter] = {}


async def post_message(room: Room, request: services.PostRequest) -> services.PostResult:
    """Store (group-committed) and broadcast one chat message; the stored copy of a re-send."""
    key = (id(asyncio.get_running_loop()), room.pk)
    writer = _writers.get(key)
    if writer is None:
        writer = _writers[key] = RoomWriter(room, lambda w: _writers.pop(key, None)
                                            if _writers.get(key) is w else None)
    return await writer.post(request)
