"""The base of every socket that belongs to a room (chat, signaling, ...).

It owns what all of them share: authorization with the documented close codes, the rate
limit with its flood close, frame decoding, and `error` events for bad input. Subclasses
implement `joined()` and `handle(data)` and stay thin.
"""

from __future__ import annotations

import json
from typing import Any

from autobahn.exception import Disconnected
from channels.consumer import get_handler_name
from channels.db import database_sync_to_async
from channels.generic.websocket import AsyncWebsocketConsumer
from django.conf import settings

from . import protocol
from .identity import Participant, participant_for
from .models import Room
from .presence import Present
from .ratelimit import TokenBucket


@database_sync_to_async
def load_room_and_participant(slug: str, session, user) -> tuple[Room | None, Participant | None]:
    room = Room.objects.filter(slug=slug).first()
    if room is None:
        return None, None
    return room, participant_for(session, user, room)


class RoomSocket(AsyncWebsocketConsumer):
    """A member's socket in one room."""

    room: Room | None = None
    participant: Participant | None = None
    # Names of the settings.PARLEY entries that size this socket's rate limit.
    rate_settings = ("RATE_BURST", "RATE_PER_SECOND")
    frame_setting = "MAX_FRAME_BYTES"

    async def connect(self) -> None:
        """Called on the handshake: refuse with 4404/4403, or accept and call `joined`."""
        self.limits = settings.PARLEY
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
        burst, rate = (self.limits[name] for name in self.rate_settings)
        self.bucket = TokenBucket(burst, rate)
        await self.joined()

    async def joined(self) -> None:
        """Called once the member is admitted."""

    async def handle(self, data: dict) -> None:
        """Called with each decoded client frame; raise ProtocolError to refuse it."""
        raise NotImplementedError

    async def receive(self, text_data: str | None = None, bytes_data: bytes | None = None) -> None:
        """Called for each client frame: every frame spends a token, bad ones get `error`."""
        if self.room is None:
            return
        if not self.bucket.allow():
            if self.bucket.strikes >= self.limits["FLOOD_CLOSE_AFTER"]:
                await self.close(code=protocol.CLOSE_FLOOD)
                return
            await self.send_json({
                "type": "error",
                "code": protocol.RATE_LIMITED,
                "message": "Too many messages; slow down.",
                "retry_after": round(self.bucket.retry_after(), 3),
                **_client_id_of(text_data),
            })
            return
        try:
            data = protocol.parse_frame(
                text_data, bytes_data, max_bytes=self.limits[self.frame_setting]
            )
            await self.handle(data)
        except protocol.ProtocolError as error:
            await self.send_json(error.event())

    async def dispatch(self, message: dict) -> None:
        """Channels' dispatch without its per-message `aclose_old_connections()`: that is a
        round trip through the one sync thread for every room broadcast each socket receives
        (most of a process's CPU at 500 clients in bench/chat_fanout.py). Our handlers reach
        the database only through database_sync_to_async, which closes old connections itself.
        """
        handler = getattr(self, get_handler_name(message), None)
        if handler is None:
            raise ValueError(f"No handler for message type {message['type']}")
        await handler(message)

    async def send(self, text_data: str | None = None, bytes_data: bytes | None = None,
                   close: bool = False) -> None:
        """Send a frame; a frame for a socket the client has just closed is dropped. (A
        broadcast can race the close: daphne then raises Disconnected, which would end the
        consumer before `disconnect()` runs, leaving its presence and heartbeat behind.)"""
        try:
            await super().send(text_data=text_data, bytes_data=bytes_data, close=close)
        except Disconnected:
            pass

    async def send_json(self, content: dict[str, Any]) -> None:
        await self.send(text_data=json.dumps(content, separators=(",", ":"), ensure_ascii=False))


def _client_id_of(text_data: str | None) -> dict:
    """The client_id of a refused frame, so the client knows which message to retry."""
    if not text_data or len(text_data) > 8192:
        return {}
    try:
        data = protocol.parse_frame(text_data, None, max_bytes=8192)
    except protocol.ProtocolError:
        return {}
    client_id = data.get("client_id")
    return {"client_id": client_id} if isinstance(client_id, str) else {}
