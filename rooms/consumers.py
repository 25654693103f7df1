"""The room socket (`ws/rooms/<slug>/`): parse, authorize, delegate (docs/protocol.md)."""

from __future__ import annotations

import asyncio
import contextlib
import logging

from channels.db import database_sync_to_async

from . import protocol, services
from .presence import presence_store
from .sockets import RoomSocket

log = logging.getLogger(__name__)


class RoomConsumer(RoomSocket):
    """One participant's chat connection to one room."""

    group: str | None = None
    presence = None  # the presence store, once joined

    async def joined(self) -> None:
        """Called once admitted: register, send `hello`, announce a first-tab join."""
        room = self.room
        self.group = services.room_group(room.pk)
        self.presence = presence_store()

        await self.channel_layer.group_add(self.group, self.channel_name)
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
        self.spawn(self._heartbeat(), name="heartbeat")

    async def closed(self) -> None:
        """Called once the socket ended, however it ended (its heartbeat already stopped:
        a leftover one would re-add this dead channel to the group and refresh its presence
        forever): leave the group, announce a last-tab leave."""
        if self.group is None:
            return
        with contextlib.suppress(Exception):
            await self.channel_layer.group_discard(self.group, self.channel_name)
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
        try:
            result = await database_sync_to_async(services.post_message)(
                self.room, self.participant, message.text, message.client_id
            )
        except Exception:
            log.exception("storing a chat message failed")
            await self.send_json({
                "type": "error", "code": protocol.SERVER_ERROR,
                "message": "The message was not stored; send it again.",
                "client_id": message.client_id,
            })
            return
        payload = services.message_payload(result.message)
        if result.created:
            await self._broadcast({"type": "chat.message", **payload})
        await self.send_json({
            "type": "chat.ack", "client_id": message.client_id, "seq": payload["seq"],
            "id": payload["id"], "sent_at": payload["sent_at"],
        })

    async def room_event(self, message: dict) -> None:
        """Called for each room broadcast: forward it to this client (already JSON)."""
        await self.send(text_data=message["text"])

    async def _broadcast(self, event: dict) -> None:
        # The message is already stored; a layer failure (Redis down) only delays delivery:
        # heartbeats carry the room's seq and clients fetch what they missed.
        try:
            await self.channel_layer.group_send(self.group, services.room_event(event))
        except Exception:
            log.warning("room broadcast failed; clients will catch up by seq", exc_info=True)

    async def _presence_call(self, call):
        try:
            return await call
        except Exception:
            log.warning("presence store unavailable", exc_info=True)
            return None

    async def _heartbeat(self) -> None:
        """Every HEARTBEAT_SECONDS: tell the client the room's seq and renew our registrations."""
        interval = self.limits["HEARTBEAT_SECONDS"]
        while True:
            await asyncio.sleep(interval)
            try:
                seq = await database_sync_to_async(services.current_seq)(self.room.pk)
                await self.send_json({"type": "heartbeat", "seq": seq})
            except Exception:
                log.warning("heartbeat could not read the room's seq", exc_info=True)
            # Re-register in case Redis restarted and forgot us (group membership, presence).
            with contextlib.suppress(Exception):
                await self.channel_layer.group_add(self.group, self.channel_name)
            await self._presence_call(
                self.presence.refresh(self.room.pk, self.channel_name, self.me)
            )
            gone = await self._presence_call(self.presence.sweep(self.room.pk))
            if gone:
                await self._broadcast(
                    {"type": "presence", "joined": [], "left": [p.as_dict() for p in gone]}
                )

