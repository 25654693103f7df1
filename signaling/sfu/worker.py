"""An SFU worker: serves the group calls of the rooms assigned to it.

It talks to the group-call sockets only through the channel layer: commands arrive on its
channel `sfu.worker.<id>`, events go back to each member's socket channel. The same code runs
inside daphne (in-process mode, no Redis) and as `python manage.py sfu` (with Redis, several
workers).

Lifetimes: the worker owns its SfuRooms; a room is created by its first join and closed when
its last member leaves; `stop()` closes them all.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import time

from aiortc.sdp import candidate_from_sdp
from django.conf import settings

from signaling.ice import server_ice_servers

from . import hooks
from .directory import WORKER_HEARTBEAT, worker_directory
from .room import SfuRoom

log = logging.getLogger(__name__)


def worker_channel(worker_id: str) -> str:
    return f"sfu.worker.{worker_id}"


class SfuWorker:
    def __init__(self, channel_layer, worker_id: str | None = None):
        hooks.check_aiortc()
        self.layer = channel_layer
        self.id = worker_id or secrets.token_hex(6)
        self.channel = worker_channel(self.id)
        self.directory = worker_directory()
        self.rooms: dict[str, SfuRoom] = {}
        self.members: dict[str, tuple[str, str]] = {}  # member id -> (room key, reply channel)
        self.tasks: list[asyncio.Task] = []
        self._ice: tuple[float, list[dict]] | None = None  # (renew after, servers)

    def ice_servers(self) -> list[dict]:
        """The worker's own ICE servers for a new room: TURN credentials are minted for the
        worker (`sfu-worker-<id>`), again once half their lifetime has passed."""
        now = time.time()
        if self._ice is None or now >= self._ice[0]:
            self._ice = (now + settings.TURN_TTL_SECONDS / 2,
                         server_ice_servers(f"sfu-worker-{self.id}"))
        return self._ice[1]

    def start(self) -> None:
        self.tasks = [asyncio.create_task(self._serve()), asyncio.create_task(self._beat())]

    async def stop(self) -> None:
        for task in self.tasks:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        with contextlib.suppress(Exception):
            await self.directory.forget(self.id)
        for room in list(self.rooms.values()):
            await room.close()
        self.rooms.clear()
        self.members.clear()

    async def _beat(self) -> None:
        while True:
            try:
                await self.directory.beat(self.id, len(self.members))
            except Exception:
                log.warning("SFU worker %s could not report in", self.id, exc_info=True)
            await asyncio.sleep(WORKER_HEARTBEAT)

    async def _serve(self) -> None:
        # Commands are handled one at a time, in arrival order: a member's publish offer is
        # always applied before its candidates.
        while True:
            message = await self.layer.receive(self.channel)
            try:
                await self.handle(message)
            except Exception as error:
                log.exception("SFU command %s failed", message.get("type"))
                reply = message.get("reply")
                if reply:
                    await self._send(reply, {"type": "error", "code": "sfu_failed",
                                             "message": f"The call server failed: {error}"})

    async def handle(self, message: dict) -> None:
        kind, member_id = message["type"], message["member"]
        if kind == "sfu.join":
            room_key = message["room"]
            room = self.rooms.get(room_key)
            if room is None:
                room = self.rooms[room_key] = SfuRoom(room_key, self._member_event,
                                                      self.ice_servers())
            self.members[member_id] = (room_key, message["reply"])
            await room.join(member_id, message["name"], message.get("speaker", ""))
            await self._send(message["reply"], {"type": "joined", "worker": self.id})
            return
        if member_id not in self.members:
            return  # a command for a member this worker does not know (it restarted)
        room_key, reply = self.members[member_id]
        room = self.rooms[room_key]
        if kind == "sfu.publish":
            answer = await room.publish(member_id, message["sdp"])
            await self._send(reply, {"type": "publish-answer", "sdp": answer})
        elif kind == "sfu.subscribe_answer":
            await room.subscribe_answer(member_id, message["sdp"])
        elif kind == "sfu.candidate":
            await self._add_candidate(room, member_id, message["target"], message["candidate"])
        elif kind == "sfu.captions":
            await room.set_captions(message["on"])
        elif kind == "sfu.mute":
            await room.set_muted(member_id, message["audio"], message["video"])
        elif kind == "sfu.leave":
            del self.members[member_id]
            await room.leave(member_id)
            if not room.members:
                await room.close()
                del self.rooms[room_key]

    async def _add_candidate(self, room: SfuRoom, member_id: str, target: str, init: dict):
        member = room.members.get(member_id)
        if member is None or not init["candidate"]:
            return  # end-of-candidates: aiortc needs no marker
        pc = member.publish_pc if target == "publish" else member.subscribe_pc
        line = init["candidate"].removeprefix("a=").removeprefix("candidate:")
        candidate = candidate_from_sdp(line)
        candidate.sdpMid = init["sdpMid"]
        candidate.sdpMLineIndex = init["sdpMLineIndex"]
        await pc.addIceCandidate(candidate)

    async def _member_event(self, member_id: str, event: dict) -> None:
        entry = self.members.get(member_id)
        if entry is not None:
            await self._send(entry[1], event)

    async def _send(self, reply_channel: str, event: dict) -> None:
        await self.layer.send(reply_channel, {"type": "sfu.event", "event": event})


_local_workers: dict[int, SfuWorker] = {}


async def ensure_local_worker(channel_layer) -> SfuWorker:
    """In-process mode: the worker living in this process's event loop (started on demand)."""
    loop = asyncio.get_running_loop()
    worker = _local_workers.get(id(loop))
    if worker is None or not worker.tasks or worker.tasks[0].done():
        worker = _local_workers[id(loop)] = SfuWorker(channel_layer, worker_id="local")
        worker.start()
        await worker.directory.beat(worker.id, 0)
    return worker
