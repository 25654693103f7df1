"""The signaling relay (`ws/signal/<slug>/`): two peers per room and mode, nothing else.

The server never looks inside an offer or candidate beyond its shape check; it forwards it
to the one other peer of the same call, through the channel layer, so the two peers may be
connected to different server processes.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets

from django.urls import NoReverseMatch, reverse

from rooms.sockets import RoomSocket

from . import protocol
from .calls import Peer, call_key, call_store
from .ice import ice_servers_for, transport_policy

log = logging.getLogger(__name__)


class SignalConsumer(RoomSocket):
    """One browser's signaling connection in one room."""

    rate_settings = ("SIGNAL_RATE_BURST", "SIGNAL_RATE_PER_SECOND")
    frame_setting = "SIGNAL_MAX_FRAME_BYTES"
    peer: Peer | None = None
    heartbeat_task: asyncio.Task | None = None  # owned by the base class (spawn)

    async def joined(self) -> None:
        """Called once admitted: say who we are and which ICE servers to use."""
        self.calls = call_store()
        self.peer_id = secrets.token_hex(8)
        self.key: str | None = None
        await self.send_json({
            "type": "hello",
            "you": {**self.me.as_dict(), "peer": self.peer_id},
            "ice_servers": ice_servers_for(self.me.id),
            "ice_transport_policy": transport_policy(),
        })

    async def closed(self) -> None:
        """Called once the socket ended, however it ended (the heartbeat already stopped, so
        the place is not renewed past its TTL): give it up and tell the other peer."""
        if self.peer is not None:
            with contextlib.suppress(Exception):
                await self._leave()

    async def handle(self, data: dict) -> None:
        message = protocol.parse_signal_message(
            data, max_sdp_chars=self.limits["SIGNAL_MAX_SDP_CHARS"]
        )
        if isinstance(message, protocol.Join):
            await self._join(message.mode)
            return
        if self.peer is None:
            raise protocol.ProtocolError(protocol.NOT_JOINED, "Send 'join' first.")
        if isinstance(message, protocol.Leave):
            await self._leave()
            await self.send_json({"type": "left"})
            return
        await self._relay(message)

    async def _join(self, mode: str) -> None:
        if self.peer is not None:
            raise protocol.ProtocolError(protocol.ALREADY_JOINED, "Already in this call.")
        key = call_key(self.room.pk, mode)
        peer = Peer(self.peer_id, self.channel_name, self.participant.key, self.me.name)
        result = await self.calls.join(key, peer)
        if not result.joined:
            await self.send_json({
                "type": "room-full", "mode": mode, "group_call_url": _group_call_url(self.room),
            })
            return
        self.peer, self.key, self.mode = peer, key, mode
        self.heartbeat_task = self.spawn(self._heartbeat(), name="heartbeat")
        if result.evicted is not None:
            await self._deliver_to(result.evicted.channel, type="signal.replaced")
        if result.other is None:
            await self.send_json({"type": "waiting", "mode": mode})
            return
        # The newcomer initiates: it is the one that knows the call can start now.
        events = []
        if result.evicted is not None:
            events.append({"type": "peer-left", "peer": result.evicted.id})
        events.append({"type": "ready", "mode": mode, "initiator": False,
                       "peer": peer.id, "peer_name": peer.name})
        await self._deliver_to(result.other.channel, events=events)
        await self.send_json({"type": "ready", "mode": mode, "initiator": True,
                              "peer": result.other.id, "peer_name": result.other.name})

    async def _relay(self, message: protocol.Relay) -> None:
        other = await self.calls.other(self.key, self.peer.id)
        if other is None or (message.peer is not None and message.peer != other.id):
            if message.peer is None:
                raise protocol.ProtocolError(protocol.NO_PEER, "Nobody else is in this call yet.")
            raise protocol.ProtocolError(protocol.PEER_GONE, "That peer has left the call.")
        event = {"type": message.kind, **message.payload, "peer": self.peer.id}
        await self._deliver_to(other.channel, events=[event])

    async def _leave(self) -> None:
        peer, key = self.peer, self.key
        self.peer = None
        if self.heartbeat_task is not None and self.heartbeat_task is not asyncio.current_task():
            self.heartbeat_task.cancel()
            self.heartbeat_task = None
        other = await self.calls.leave(key, peer.id)
        if other is not None:
            await self._deliver_to(other.channel, events=[
                {"type": "peer-left", "peer": peer.id},
                {"type": "waiting", "mode": self.mode},
            ])

    async def _deliver_to(self, channel: str, **message) -> None:
        message.setdefault("type", "signal.deliver")
        await self.channel_layer.send(channel, message)

    async def signal_deliver(self, message: dict) -> None:
        """Called for events relayed to us by the other peer's connection."""
        if self.peer is None:
            return  # we left or were replaced: nothing is for us any more
        for event in message["events"]:
            await self.send_json(event)

    async def signal_replaced(self, message: dict) -> None:
        """Called when this participant joined the same call from another connection."""
        self.peer = None
        await self.send_json({"type": "replaced"})
        await self.close(code=protocol.CLOSE_REPLACED)

    async def _heartbeat(self) -> None:
        """Keep our place from expiring; take it again if Redis forgot it (restart)."""
        while True:
            await asyncio.sleep(self.limits["HEARTBEAT_SECONDS"])
            if self.peer is None:
                return
            try:
                if not await self.calls.refresh(self.key, self.peer):
                    result = await self.calls.join(self.key, self.peer)
                    if not result.joined:
                        self.peer = None
                        await self.send_json({"type": "room-full", "mode": self.mode,
                                              "group_call_url": _group_call_url(self.room)})
                        return
            except Exception:
                log.warning("could not renew a call place", exc_info=True)


def _group_call_url(room) -> str | None:
    try:
        return reverse("group_call", args=[room.slug])
    except NoReverseMatch:
        return None
