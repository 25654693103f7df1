"""The room socket (`ws/rooms/<slug>/`): parse, authorize, delegate (docs/protocol.md)."""

from __future__ import annotations

import asyncio
import logging

from autobahn.exception import Disconnected
from channels.db import database_sync_to_async

from . import protocol, services, writer
from .fanout import Outgoing, room_fanout
from .presence import presence_store
from .sockets import RoomSocket

log = logging.getLogger(__name__)

# The ASGI scope extension through which the server takes prebuilt frames (project/asgi.py
# adds it under daphne): {"write": callable(Outgoing) -> bool, False when it cannot}.
PREBUILT_FRAMES = "parley.prebuilt_frames"


class RoomConsumer(RoomSocket):
    """One participant's chat connection to one room. Room events reach it through the
    process's fan-out (rooms/fanout.py), not the channel layer; its heartbeat is the room's
    (RoomHeartbeat)."""

    presence = None  # the presence store, once joined
    fanout = None  # the process's fan-out, once joined
    write_prebuilt = None  # the server's prebuilt-frame writer, when it offers one

    async def joined(self) -> None:
        """Called once admitted: register, send `hello`, announce a first-tab join."""
        room = self.room
        self.presence = presence_store()
        extensions = self.scope.get("extensions") or {}
        self.write_prebuilt = extensions.get(PREBUILT_FRAMES, {}).get("write")
        # Receive the room's events before reading its backlog: nothing stored in between
        # is missed (a message is broadcast only after it is stored).
        self.fanout = room_fanout()
        await self.fanout.join(room.pk, self)
        first_tab = await self._presence_call(
            self.presence.add(room.pk, self.channel_name, self.me)
        )
        after = protocol.parse_after(self.scope.get("query_string", b""))
        backlog = await database_sync_to_async(services.backlog)(room, after)
        members = await self._presence_call(self.presence.members(room.pk)) or [self.me]
        await self.send_json({
            "type": "hello",
            "room": {"slug": room.slug, "name": room.name, "private": room.is_private},
            "you": self.me.as_dict(),
            "presence": [p.as_dict() for p in members],
            "seq": backlog.seq,
            "messages": backlog.messages,
            "reset": backlog.reset,
            "more": backlog.more,
            "heartbeat_seconds": self.limits["HEARTBEAT_SECONDS"],
            "limits": {
                "max_text_chars": self.limits["MAX_TEXT_CHARS"],
                "rate_burst": self.limits["RATE_BURST"],
                "rate_per_second": self.limits["RATE_PER_SECOND"],
            },
        })
        if first_tab:
            await self._broadcast({"type": "presence", "joined": [self.me.as_dict()], "left": []})
        RoomHeartbeat.ensure(room.pk, self.fanout, self.presence, self.limits)

    async def closed(self) -> None:
        """Called once the socket ended, however it ended: leave the room's fan-out, announce
        a last-tab leave."""
        if self.fanout is None:
            return
        await self.fanout.leave(self.room.pk, self)
        RoomHeartbeat.release(self.room.pk, self.fanout)
        if self.presence is None:
            return
        gone = await self._presence_call(self.presence.remove(self.room.pk, self.channel_name))
        if gone is not None:
            await self._broadcast({"type": "presence", "joined": [], "left": [gone.as_dict()]})

    async def handle(self, data: dict) -> None:
        """Called with each decoded frame: chat.send, chat.sync or ping."""
        message = protocol.parse_client_message(data, max_text_chars=self.limits["MAX_TEXT_CHARS"])
        if isinstance(message, protocol.ChatSend):
            await self._chat_send(message)
        elif isinstance(message, protocol.ChatSync):
            backlog = await database_sync_to_async(services.backlog)(self.room, message.after)
            await self.send_json({
                "type": "chat.backlog", "seq": backlog.seq, "messages": backlog.messages,
                "reset": backlog.reset, "more": backlog.more,
            })
        else:
            await self.send_json({"type": "pong"})

    async def _chat_send(self, message: protocol.ChatSend) -> None:
        request = services.PostRequest(self.participant, message.text, message.client_id)
        try:
            # Stored (with other sends of the room, in one transaction) and broadcast.
            result = await writer.post_message(self.room, request)
        except Exception:
            log.exception("storing a chat message failed")
            await self.send_json({
                "type": "error", "code": protocol.SERVER_ERROR,
                "message": "The message was not stored; send it again.",
                "client_id": message.client_id,
            })
            return
        stored = result.message
        await self.send_json({
            "type": "chat.ack", "client_id": message.client_id, "seq": stored.seq,
            "id": stored.pk, "sent_at": stored.sent_at.isoformat().replace("+00:00", "Z"),
        })

    async def room_frames(self, out: Outgoing) -> None:
        """Called by the fan-out with the room's events: write their frames as they are,
        encoded once for all of the room's sockets; under daphne, as prebuilt wire bytes
        straight to the connection (project/transport.py), skipping the per-socket work of
        the ASGI send path."""
        if self._ended:
            return
        write = self.write_prebuilt
        if write is not None and write(out):
            return
        try:
            for frame in out.frames:
                await self.base_send({"type": "websocket.send", "text": frame})
        except Disconnected:
            pass  # the client has just gone; closed() follows

    async def _broadcast(self, event: dict) -> None:
        # The message is already stored; a bus failure (Redis down) only delays delivery:
        # heartbeats carry the room's seq and clients fetch what they missed.
        try:
            await self.fanout.publish(self.room.pk, [event])
        except Exception:
            log.warning("room broadcast failed; clients will catch up by seq", exc_info=True)

    async def _presence_call(self, call):
        try:
            return await call
        except Exception:
            log.warning("presence store unavailable", exc_info=True)
            return None


class RoomHeartbeat:
    """One room's heartbeat in one process, for all of its chat sockets here: every
    HEARTBEAT_SECONDS one read of the room's seq, one `heartbeat` frame written to each
    socket, their presence entries renewed together, stale ones swept. (Per socket, this was
    a database read through the sync thread and three Redis calls each interval.)

    Started by the room's first chat socket in this process, cancelled when its last one
    leaves."""

    _running: dict[tuple[int, int], asyncio.Task] = {}

    @classmethod
    def ensure(cls, room_id: int, fanout, presence, limits) -> None:
        key = (id(fanout), room_id)
        if key not in cls._running:
            beat = cls(room_id, fanout, presence, limits["HEARTBEAT_SECONDS"])
            cls._running[key] = asyncio.get_running_loop().create_task(
                beat.run(), name=f"heartbeat.room.{room_id}")

    @classmethod
    def running(cls) -> int:
        return sum(not task.done() for task in cls._running.values())

    @classmethod
    def release(cls, room_id: int, fanout) -> None:
        if not any(isinstance(r, RoomConsumer) for r in fanout.local_receivers(room_id)):
            task = cls._running.pop((id(fanout), room_id), None)
            if task is not None:
                task.cancel()

    def __init__(self, room_id: int, fanout, presence, interval: float):
        self.room_id, self.fanout, self.presence, self.interval = (
            room_id, fanout, presence, interval)

    def sockets(self) -> list[RoomConsumer]:
        return [r for r in self.fanout.local_receivers(self.room_id)
                if isinstance(r, RoomConsumer)]

    async def run(self) -> None:
        while True:
            await asyncio.sleep(self.interval)
            try:
                await self.beat()
            except Exception:
                log.warning("room %s heartbeat failed", self.room_id, exc_info=True)

    async def beat(self) -> None:
        try:
            seq = await database_sync_to_async(services.current_seq)(self.room_id)
        except Exception:
            log.warning("heartbeat could not read the room's seq", exc_info=True)
        else:
            out = Outgoing([services.heartbeat_text(seq)])
            for socket in self.sockets():
                await socket.room_frames(out)
        # Renew this process's entries (in case Redis restarted and forgot them), then
        # announce whoever another process left behind.
        entries = {socket.channel_name: socket.me for socket in self.sockets()}
        try:
            await self.presence.refresh_many(self.room_id, entries)
            gone = await self.presence.sweep(self.room_id)
        except Exception:
            log.warning("presence store unavailable", exc_info=True)
            return
        if gone:
            event = {"type": "presence", "joined": [], "left": [p.as_dict() for p in gone]}
            try:
                await self.fanout.publish(self.room_id, [event])
            except Exception:
                log.warning("room broadcast failed", exc_info=True)
