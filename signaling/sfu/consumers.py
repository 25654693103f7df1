"""The group call socket (`ws/sfu/<slug>/`): authorize, validate, pass to the room's worker.

The socket never touches media. It finds the room's worker in the directory, forwards the
member's commands to it and the worker's events back, and watches the worker: when it stops
reporting in, the client is told (`worker-lost`) and rejoins, landing on a live worker.
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets

from django.conf import settings

from rooms.protocol import ProtocolError
from rooms.sockets import RoomSocket
from signaling.ice import ice_servers_for, transport_policy

from . import protocol
from .directory import WORKER_HEARTBEAT, worker_directory
from .worker import ensure_local_worker, worker_channel


class SfuConsumer(RoomSocket):
    rate_settings = ("SIGNAL_RATE_BURST", "SIGNAL_RATE_PER_SECOND")
    frame_setting = "SIGNAL_MAX_FRAME_BYTES"
    worker_id: str | None = None
    watchdog: asyncio.Task | None = None

    async def joined(self) -> None:
        self.member_id = secrets.token_hex(8)
        self.room_key = str(self.room.pk)
        await self.send_json({
            "type": "hello",
            "you": {**self.me.as_dict(), "member": self.member_id},
            "ice_servers": ice_servers_for(self.me.id),
            "ice_transport_policy": transport_policy(),
        })

    async def closed(self) -> None:
        """Called once the socket ended, however it ended: leave the worker's room, so no
        ghost stays listed (the watchdog was already stopped)."""
        if self.worker_id is not None:
            with contextlib.suppress(Exception):
                await self._to_worker("sfu.leave")

    async def handle(self, data: dict) -> None:
        message = protocol.parse_sfu_message(
            data, max_sdp_chars=self.limits["SIGNAL_MAX_SDP_CHARS"]
        )
        if isinstance(message, protocol.Join):
            await self._join()
            return
        if self.worker_id is None:
            raise ProtocolError(protocol.NOT_JOINED, "Send 'join' first.")
        if isinstance(message, protocol.Publish):
            await self._to_worker("sfu.publish", sdp=message.sdp, screen=message.screen)
        elif isinstance(message, protocol.Share):
            await self._to_worker("sfu.share", on=message.on)
        elif isinstance(message, protocol.SubscribeAnswer):
            await self._to_worker("sfu.subscribe_answer", sdp=message.sdp)
        elif isinstance(message, protocol.Candidate):
            await self._to_worker("sfu.candidate", target=message.target,
                                  candidate=message.candidate)
        elif isinstance(message, protocol.Mute):
            await self._to_worker("sfu.mute", audio=message.audio, video=message.video)
        elif isinstance(message, protocol.Captions):
            await self._to_worker("sfu.captions", on=message.on)
        elif isinstance(message, protocol.Resubscribe):
            await self._to_worker("sfu.resubscribe")
        else:
            await self._to_worker("sfu.leave")
            self._stop_watching()
            await self.send_json({"type": "left"})

    async def _join(self) -> None:
        if self.worker_id is not None:
            raise ProtocolError(protocol.ALREADY_JOINED, "Already in this call.")
        if not settings.REDIS_URL:
            await ensure_local_worker(self.channel_layer)
        worker_id = await worker_directory().assign(self.room_key)
        if worker_id is None:
            raise ProtocolError(protocol.WORKER_UNAVAILABLE,
                                "No call server is running; try again shortly.")
        self.worker_id = worker_id
        await self._to_worker("sfu.join", room=self.room_key, name=self.me.name,
                              speaker=self.participant.key,
                              reply=self.channel_name)
        self.watchdog = self.spawn(self._watch_worker(worker_id), name="watchdog")

    async def _to_worker(self, kind: str, **fields) -> None:
        await self.channel_layer.send(
            worker_channel(self.worker_id), {"type": kind, "member": self.member_id, **fields}
        )

    def _stop_watching(self) -> None:
        self.worker_id = None
        if self.watchdog is not None and self.watchdog is not asyncio.current_task():
            self.watchdog.cancel()
        self.watchdog = None

    async def _watch_worker(self, worker_id: str) -> None:
        directory = worker_directory()
        while True:
            await asyncio.sleep(WORKER_HEARTBEAT)
            try:
                alive = await directory.alive(worker_id)
            except Exception:
                continue  # the directory is unreachable: do not blame the worker
            if not alive:
                self._stop_watching()
                # A new member id: the replacement worker knows nothing of the old one.
                self.member_id = secrets.token_hex(8)
                await self.send_json({
                    "type": "worker-lost", "member": self.member_id,
                    "message": "The call server stopped; rejoining.",
                })
                return

    async def sfu_event(self, message: dict) -> None:
        """Called for each event the worker sends to this member. A refused or failed join
        (`call_full`, `call_busy`, `sfu_failed`) leaves the socket out of the call, so the
        client may send `join` again."""
        event = message["event"]
        if event.get("type") == "error" and event.get("command") == "join":
            self._stop_watching()
        await self.send_json(event)
