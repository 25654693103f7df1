"""An SFU worker: serves the group calls of the rooms assigned to it.

It talks to the group-call sockets only through the channel layer: commands arrive on its
channel `sfu.worker.<id>`, events go back to each member's socket channel. The same code runs
inside daphne (in-process mode, no Redis) and as `python manage.py sfu` (with Redis, several
workers).

Lifetimes: the worker owns its SfuRooms and one task per room (its lane), which runs that
room's commands one at a time in arrival order (a member's publish offer is applied before its
candidates) while other rooms go on: a negotiation can wait seconds for a connection
(room.SETTLE_TIMEOUT), and one room's wait must not delay another room's join. A lane and its
room are created by the room's first command and end (the room closed) once the room is empty
with nothing queued; `stop()` ends them all. Every command that fails is answered to its
member with an `error` event naming the `command`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets

from aiortc.sdp import candidate_from_sdp
from django.conf import settings

from rooms.protocol import ProtocolError
from signaling.ice import server_ice_servers

from . import hooks, protocol
from .directory import WORKER_HEARTBEAT, worker_directory
from .room import DEFAULT_MAX_MEMBERS, SfuRoom

log = logging.getLogger(__name__)

# The client message each worker command answers (the `command` of its errors).
COMMANDS = {
    "sfu.join": "join", "sfu.publish": "publish", "sfu.subscribe_answer": "subscribe-answer",
    "sfu.candidate": "candidate", "sfu.mute": "mute", "sfu.captions": "captions",
    "sfu.leave": "leave", "sfu.resubscribe": "resubscribe", "sfu.share": "share",
}
# Commands one room may have waiting: a call start is about 60 messages per member (join,
# publish, answers, trickled candidates), so 16 members starting at once fit four times over.
# Past it a command is refused (`call_busy`) rather than held without bound.
ROOM_QUEUE_LIMIT = 4096
# How long stop() waits for its rooms' connections to close before the process may exit
# (SIGTERM "within a few seconds", issue #11).
STOP_GRACE_SECONDS = 5


def worker_channel(worker_id: str) -> str:
    return f"sfu.worker.{worker_id}"


class SfuWorker:
    def __init__(self, channel_layer, worker_id: str | None = None, *,
                 queue_limit: int = ROOM_QUEUE_LIMIT, max_members: int | None = None):
        hooks.check_aiortc()
        self.layer = channel_layer
        self.id = worker_id or secrets.token_hex(6)
        self.channel = worker_channel(self.id)
        self.directory = worker_directory()
        self.queue_limit = queue_limit
        self.max_members = max_members or getattr(settings, "SFU_MAX_MEMBERS",
                                                  DEFAULT_MAX_MEMBERS)
        self.rooms: dict[str, SfuRoom] = {}
        self.members: dict[str, tuple[str, str]] = {}  # member id -> (room key, reply channel)
        # Where to queue each member's commands, kept in arrival order (a leave then a join
        # are both queued before the lane runs either): member id -> (room key, reply).
        self.routes: dict[str, tuple[str, str]] = {}
        self.lanes: dict[str, tuple[asyncio.Queue, asyncio.Task]] = {}  # room key -> lane
        self.tasks: list[asyncio.Task] = []

    def ice_servers(self, member_id: str = "") -> list[dict]:
        """The worker's own ICE servers for a connection it opens for `member_id`: TURN
        credentials minted for `sfu-worker-<id>.<member id>`, fresh for each connection. Per
        member, not one name for the whole worker: coturn's `user-quota` counts allocations
        per username, and one shared name capped a worker at 6 members (12 connections) in
        all its calls (bench/sfu_forwarding.py, 2026-12-01)."""
        identity = f"sfu-worker-{self.id}" + (f".{member_id}" if member_id else "")
        return server_ice_servers(identity)

    def start(self) -> None:
        self.tasks = [asyncio.create_task(self._serve()), asyncio.create_task(self._beat())]

    async def stop(self) -> None:
        """Stop serving and close every room, so no peer connection, engine stream or task
        of this worker outlives it (aiortc's decoder threads end only with their
        connection, and a process exits only once they have).

        The worker leaves the directory before closing its rooms: each member's socket
        watchdog then finds it gone within a heartbeat and sends `worker-lost`, and the
        client's rejoin lands on a live worker (the same path as a crashed worker, minus the
        3.5 s wait)."""
        lanes = [task for _, task in self.lanes.values()]
        for task in self.tasks + lanes:
            task.cancel()
        await asyncio.gather(*self.tasks, *lanes, return_exceptions=True)
        self.lanes.clear()
        with contextlib.suppress(Exception):
            await self.directory.forget(self.id)
        rooms, self.rooms = list(self.rooms.values()), {}
        try:
            async with asyncio.timeout(STOP_GRACE_SECONDS):
                await asyncio.gather(*(self._close_room(room) for room in rooms))
        except TimeoutError:
            # Every connection's media (and so its decoder thread) stopped first; what is
            # left is its transports' goodbyes, e.g. a TURN allocation's deletion that waits
            # out aioice's retries because the TURN server is gone. The process may exit.
            log.warning("peer connections still closing after %s s; stopping anyway",
                        STOP_GRACE_SECONDS)
        self.members.clear()
        self.routes.clear()

    @staticmethod
    async def _close_room(room: SfuRoom) -> None:
        try:
            await room.close()
        except Exception:  # one room must not leave the others' connections open
            log.exception("closing SFU room %s failed", room.key)

    async def _beat(self) -> None:
        while True:
            try:
                await self.directory.beat(self.id, len(self.members))
            except Exception:
                log.warning("SFU worker %s could not report in", self.id, exc_info=True)
            await asyncio.sleep(WORKER_HEARTBEAT)

    async def _serve(self) -> None:
        while True:
            message = await self.layer.receive(self.channel)
            try:
                await self.dispatch(message)
            except Exception:
                log.exception("SFU command %s could not be queued", message.get("type"))

    async def dispatch(self, message: dict) -> None:
        """Queue a command on its room's lane (started by the room's first command)."""
        kind, member_id = message["type"], message["member"]
        if kind == "sfu.join":
            self.routes[member_id] = (message["room"], message["reply"])
        route = self.routes.get(member_id)
        if route is None:
            return  # a command for a member this worker does not know (it restarted)
        if kind == "sfu.leave":
            del self.routes[member_id]
        room_key, reply = route
        lane = self.lanes.get(room_key)
        if lane is None:
            queue: asyncio.Queue = asyncio.Queue(self.queue_limit)
            task = asyncio.create_task(self._run_room(room_key, queue),
                                       name=f"sfu-lane.{room_key}")
            lane = self.lanes[room_key] = (queue, task)
        try:
            lane[0].put_nowait(message)
        except asyncio.QueueFull:
            await self._send(reply, {
                "type": "error", "code": protocol.CALL_BUSY, "command": COMMANDS.get(kind, kind),
                "message": "The call server is busy with this call; send it again shortly.",
            })

    async def _run_room(self, room_key: str, queue: asyncio.Queue) -> None:
        """One room's lane: its commands one at a time; ends once the room is empty and
        nothing is queued, closing the room."""
        while True:
            message = await queue.get()
            await self._run(message)
            room = self.rooms.get(room_key)
            if queue.empty() and (room is None or not room.members):
                del self.lanes[room_key]
                if room is not None:
                    del self.rooms[room_key]
                    await room.close()
                return

    async def _run(self, message: dict) -> None:
        """Handle one command; a failure reaches the member as an `error` event."""
        kind, member_id = message["type"], message["member"]
        command = COMMANDS.get(kind, kind)
        reply = message.get("reply") or self.members.get(member_id, (None, None))[1]
        try:
            await self.handle(message)
            return
        except ProtocolError as refusal:
            event = {**refusal.event(), "command": command}
        except Exception as error:
            log.exception("SFU command %s failed", kind)
            event = {"type": "error", "code": protocol.SFU_FAILED, "command": command,
                     "message": f"The call server failed: {error!r}"}
        if reply:
            with contextlib.suppress(Exception):
                await self._send(reply, event)

    async def handle(self, message: dict) -> None:
        kind, member_id = message["type"], message["member"]
        if kind == "sfu.join":
            room_key = message["room"]
            room = self.rooms.get(room_key)
            if room is None:
                room = self.rooms[room_key] = SfuRoom(
                    room_key, self._member_event, self.ice_servers,
                    max_members=self.max_members)
            self.members[member_id] = (room_key, message["reply"])
            try:
                await room.join(member_id, message["name"], message.get("speaker", ""))
            except BaseException:
                self.members.pop(member_id, None)
                raise
            await self._send(message["reply"], {"type": "joined", "worker": self.id})
            return
        if member_id not in self.members:
            if kind != "sfu.leave":
                raise ProtocolError(protocol.NOT_JOINED, "Not in this call; send 'join'.")
            return
        room_key, reply = self.members[member_id]
        room = self.rooms[room_key]
        if kind == "sfu.publish":
            answer = await room.publish(member_id, message["sdp"], message.get("screen"))
            await self._send(reply, {"type": "publish-answer", "sdp": answer})
        elif kind == "sfu.subscribe_answer":
            await room.subscribe_answer(member_id, message["sdp"])
        elif kind == "sfu.candidate":
            await self._add_candidate(room, member_id, message["target"], message["candidate"])
        elif kind == "sfu.captions":
            await room.set_captions(message["on"])
        elif kind == "sfu.share":
            await room.share_screen(member_id, message["on"])
        elif kind == "sfu.mute":
            await room.set_muted(member_id, message["audio"], message["video"])
        elif kind == "sfu.resubscribe":
            await room.resubscribe(member_id)
        elif kind == "sfu.leave":
            del self.members[member_id]
            await room.leave(member_id)

    async def _add_candidate(self, room: SfuRoom, member_id: str, target: str, init: dict):
        member = room.members.get(member_id)
        if member is None or not init["candidate"]:
            return  # end-of-candidates: aiortc needs no marker
        line = init["candidate"].removeprefix("a=").removeprefix("candidate:")
        candidate = candidate_from_sdp(line)
        candidate.sdpMid = init["sdpMid"]
        candidate.sdpMLineIndex = init["sdpMLineIndex"]
        pc = member.publish_pc if target == "publish" else member.subscribe_pc
        if pc is None or pc.signalingState == "closed" or pc.remoteDescription is None:
            # For a connection already replaced (a publish offer always precedes its own
            # candidates, so a fresh connection only gets the old one's): nothing to add to.
            return
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


async def stop_local_workers() -> None:
    """Stop this event loop's in-process worker, if one runs (daphne's shutdown calls it
    through project/asgi.py): without it daphne stopped listening on SIGTERM and never
    exited, its main thread waiting for the decoder threads of open connections."""
    worker = _local_workers.pop(id(asyncio.get_running_loop()), None)
    if worker is not None:
        await worker.stop()
