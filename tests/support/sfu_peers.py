"""aiortc participants for SFU tests and benchmarks: publish a small synthetic camera and a
microphone, answer the SFU's subscribe offers, and decode (and count) what they receive."""

from __future__ import annotations

import asyncio
import contextlib
import fractions
from collections import defaultdict

from aiortc import AudioStreamTrack, RTCSessionDescription, VideoStreamTrack
from aiortc.mediastreams import MediaStreamError
from av import AudioFrame, VideoFrame

from signaling.ice import peer_connection
from signaling.sfu.room import SfuRoom


class SmallCamera(VideoStreamTrack):
    """A 160x120 camera whose colour changes every frame (cheap to encode in tests)."""

    def __init__(self, width: int = 160, height: int = 120):
        super().__init__()
        self.width, self.height = width, height
        self.counter = 0

    async def recv(self) -> VideoFrame:
        pts, time_base = await self.next_timestamp()
        self.counter += 1
        frame = VideoFrame(self.width, self.height, "yuv420p")
        for index, plane in enumerate(frame.planes):
            value = (self.counter * 7 + index * 60) % 255
            plane.update(bytes([value]) * plane.buffer_size)
        frame.pts, frame.time_base = pts, time_base
        return frame


class Participant:
    """One aiortc participant talking to an SfuRoom through an event queue (like a socket)."""

    def __init__(self, room: SfuRoom, member_id: str, name: str,
                 ice_servers: list[dict] | None = None):
        self.room = room
        self.id = member_id
        self.name = name
        self.ice_servers = ice_servers
        self.publish_pc = peer_connection(ice_servers)
        self.subscribe_pc = peer_connection(ice_servers)
        self.events: asyncio.Queue[dict] = asyncio.Queue()
        self.received: list[dict] = []  # every event handled, in order
        self.errors: list[Exception] = []  # what the room raised for our answers
        self.answer_gate: asyncio.Event | None = None  # set: answer subscribe offers
        self.corrupt_answers = 0  # this many next answers lose their ICE password
        self.participants: list[dict] = []
        self.frames: dict[str, int] = defaultdict(int)  # mid -> frames decoded
        self.sizes: dict[str, tuple[int, int]] = {}  # mid -> last video frame size
        self.ended: set[str] = set()  # mids whose track ended
        self.changed = asyncio.Condition()
        self.tasks: list[asyncio.Task] = []
        self.subscribe_pc.on("track", self._on_track)

    async def join(self, camera: VideoStreamTrack | None = None, microphone=None,
                   speaker_key: str = "", publish: bool = True) -> None:
        self.tasks.append(asyncio.create_task(self._handle_events()))
        await self.room.join(self.id, self.name, speaker_key)
        if publish:
            await self.publish(camera, microphone)

    async def publish(self, camera: VideoStreamTrack | None = None, microphone=None,
                      edit=None) -> None:
        """Offer camera and microphone; `edit(sdp)` may spoil the offer. A retry publishes
        on a fresh connection, as the protocol asks after a refused offer."""
        if self.publish_pc.localDescription is not None:
            await self.publish_pc.close()
            self.publish_pc = peer_connection(self.ice_servers)
        self.publish_pc.addTrack(microphone or AudioStreamTrack())
        self.publish_pc.addTrack(camera or SmallCamera())
        await self._offer(edit)

    async def share_screen(self, screen: VideoStreamTrack) -> str:
        """Add a screen section to the publish connection (a renegotiation on it, as a
        browser does on its first share); returns the section's mid."""
        transceiver = self.publish_pc.addTransceiver(screen, direction="sendonly")
        await self.publish_pc.setLocalDescription(await self.publish_pc.createOffer())
        await self._offer(None, screen=transceiver.mid)
        return transceiver.mid

    async def _offer(self, edit, screen: str | None = None) -> None:
        if self.publish_pc.signalingState != "have-local-offer":
            await self.publish_pc.setLocalDescription(await self.publish_pc.createOffer())
        offer = self.publish_pc.localDescription.sdp
        answer = await self.room.publish(self.id, edit(offer) if edit else offer, screen)
        await self.publish_pc.setRemoteDescription(RTCSessionDescription(answer, "answer"))

    async def resubscribe(self) -> None:
        """A fresh subscribe connection (after `subscribe-lost`)."""
        await self.subscribe_pc.close()
        self.frames.clear()
        self.subscribe_pc = peer_connection(self.ice_servers)
        self.subscribe_pc.on("track", self._on_track)
        await self.room.resubscribe(self.id)

    async def deliver(self, event: dict) -> None:
        await self.events.put(event)

    async def _handle_events(self) -> None:
        while True:
            event = await self.events.get()
            self.received.append(event)
            if event["type"] == "subscribe-offer":
                if self.answer_gate is not None:
                    await self.answer_gate.wait()
                pc = self.subscribe_pc
                await pc.setRemoteDescription(RTCSessionDescription(event["sdp"], "offer"))
                await pc.setLocalDescription(await pc.createAnswer())
                answer = pc.localDescription.sdp
                if self.corrupt_answers:
                    self.corrupt_answers -= 1
                    answer = without_ice_password(answer)
                try:
                    await self.room.subscribe_answer(self.id, answer)
                except Exception as error:
                    self.errors.append(error)
            elif event["type"] == "participants":
                self.participants = event["participants"]
            await self._notify()

    def _on_track(self, track) -> None:
        transceiver = next(
            t for t in self.subscribe_pc.getTransceivers() if t.receiver.track is track
        )
        self.tasks.append(asyncio.create_task(self._consume(transceiver.mid, track)))

    async def _consume(self, mid: str, track) -> None:
        try:
            while True:
                frame = await track.recv()
                self.frames[mid] += 1
                if track.kind == "video":
                    self.sizes[mid] = (frame.width, frame.height)
                if self.frames[mid] % 5 == 1:
                    await self._notify()
        except MediaStreamError:
            self.ended.add(mid)
            await self._notify()

    async def _notify(self) -> None:
        async with self.changed:
            self.changed.notify_all()

    async def wait_for(self, predicate, timeout: float = 20) -> None:
        async with asyncio.timeout(timeout):
            async with self.changed:
                await self.changed.wait_for(predicate)

    def mids_of(self, other_id: str) -> dict[str, str]:
        for p in self.participants:
            if p["id"] == other_id:
                return p["mids"]
        return {}

    def receiving_from(self, other_id: str, frames: int) -> bool:
        """Decoding at least `frames` of the other's microphone and camera each."""
        mids = self.mids_of(other_id)
        return ("audio" in mids and "video" in mids
                and all(self.frames[mids[kind]] >= frames for kind in ("audio", "video")))

    async def close(self) -> None:
        for task in self.tasks:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        await self.publish_pc.close()
        await self.subscribe_pc.close()


def without_ice_password(sdp: str) -> str:
    """`sdp` made unusable in a way aiortc notices only while applying it."""
    return "".join(line for line in sdp.splitlines(keepends=True)
                   if not line.startswith("a=ice-pwd:"))


async def poll(check, *, timeout: float = 20, what: str = "condition") -> None:
    """Poll `check()` on the event loop until true; fail after `timeout` seconds."""
    deadline = asyncio.get_running_loop().time() + timeout
    while not check():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.02)


class SpeechMicrophone(AudioStreamTrack):
    """A microphone playing PCM16 mono 24 kHz in real time, then silence."""

    def __init__(self, pcm24k: bytes):
        super().__init__()
        self.pcm = pcm24k
        self.offset = 0

    async def recv(self):
        frame = await super().recv()  # aiortc's paced 20 ms of 48 kHz silence
        chunk = self.pcm[self.offset:self.offset + 960]  # 20 ms at 24 kHz
        self.offset += 960
        speech = AudioFrame(format="s16", layout="mono", samples=480)
        speech.planes[0].update(chunk.ljust(960, b"\0"))
        speech.sample_rate, speech.pts, speech.time_base = 24000, frame.pts // 2, \
            fractions.Fraction(1, 24000)
        return speech


def room_with_router(key: str = "test", **options) -> tuple[SfuRoom, dict[str, Participant]]:
    """An SfuRoom whose events reach the test participants registered in the dict."""
    participants: dict[str, Participant] = {}

    async def send(member_id: str, event: dict) -> None:
        participant = participants.get(member_id)
        if participant is not None:
            await participant.deliver(event)

    return SfuRoom(key, send, **options), participants


async def add_person(room: SfuRoom, directory: dict, member_id: str, *,
                     participant: type[Participant] | None = None, **options) -> Participant:
    """A `participant` (Participant by default) registered with `room_with_router`'s
    directory, joined; `options` go to its constructor (e.g. `ice_servers`)."""
    person = (participant or Participant)(room, member_id, f"Person {member_id}", **options)
    directory[member_id] = person
    await person.join()
    return person




class SocketParticipant:
    """An aiortc participant joining a group call through the real `ws/sfu/<slug>/` socket."""

    def __init__(self, base_url: str, slug: str, session_id: str):
        self.base_url, self.slug, self.session_id = base_url, slug, session_id
        self.socket = None
        self.publish_pc = self.subscribe_pc = None
        self.participants: list[dict] = []
        self.frames: dict[str, int] = defaultdict(int)
        self.sizes: dict[str, tuple[int, int]] = {}
        self.events: list[dict] = []
        self.member: str | None = None
        self.name: str | None = None
        self.joins = 0
        self.changed = asyncio.Condition()
        self.tasks: list[asyncio.Task] = []

    async def connect(self) -> None:
        import json

        import websockets

        netloc = self.base_url.split("://", 1)[1]
        self.socket = await websockets.connect(
            f"ws://{netloc}/ws/sfu/{self.slug}/", origin=self.base_url,
            additional_headers={"Cookie": f"sessionid={self.session_id}"}, max_size=2**20,
        )
        hello = json.loads(await self.socket.recv())
        self.member = hello["you"]["member"]
        self.name = hello["you"]["name"]
        self.tasks.append(asyncio.create_task(self._read()))
        await self.join()

    async def join(self) -> None:
        """Open fresh connections and (re)join: also what a client does after worker-lost."""
        for pc in (self.publish_pc, self.subscribe_pc):
            if pc is not None:
                await pc.close()
        self.frames.clear()
        self.participants = []
        self.publish_pc, self.subscribe_pc = peer_connection(), peer_connection()
        self.subscribe_pc.on("track", self._on_track)
        self.joins += 1
        await self.send(type="join")
        await self._publish()

    async def _publish(self) -> None:
        self.publish_pc.addTrack(AudioStreamTrack())
        self.publish_pc.addTrack(SmallCamera())
        await self.publish_pc.setLocalDescription(await self.publish_pc.createOffer())
        await self.send(type="publish", sdp=self.publish_pc.localDescription.sdp)

    async def send(self, **message) -> None:
        import json

        await self.socket.send(json.dumps(message))

    async def _read(self) -> None:
        import json

        async for raw in self.socket:
            event = json.loads(raw)
            self.events.append(event)
            kind = event["type"]
            if kind == "publish-answer":
                await self.publish_pc.setRemoteDescription(
                    RTCSessionDescription(event["sdp"], "answer"))
            elif kind == "subscribe-offer":
                pc = self.subscribe_pc
                await pc.setRemoteDescription(RTCSessionDescription(event["sdp"], "offer"))
                await pc.setLocalDescription(await pc.createAnswer())
                await self.send(type="subscribe-answer", sdp=pc.localDescription.sdp)
            elif kind == "participants":
                self.participants = event["participants"]
            elif kind == "worker-lost":
                self.member = event["member"]
                await self.join()
            elif kind == "subscribe-lost":  # a fresh subscribe connection, same call
                await self.subscribe_pc.close()
                self.frames.clear()
                self.subscribe_pc = peer_connection()
                self.subscribe_pc.on("track", self._on_track)
                await self.send(type="resubscribe")
            elif kind == "publish-lost":  # publish again, on a fresh connection
                await self.publish_pc.close()
                self.publish_pc = peer_connection()
                await self._publish()
            await self._notify()

    def _on_track(self, track) -> None:
        pc = self.subscribe_pc
        transceiver = next(t for t in pc.getTransceivers() if t.receiver.track is track)
        self.tasks.append(asyncio.create_task(self._consume(pc, transceiver.mid, track)))

    async def _consume(self, pc, mid: str, track) -> None:
        with contextlib.suppress(MediaStreamError):
            while pc is self.subscribe_pc:
                frame = await track.recv()
                self.frames[mid] += 1
                if track.kind == "video":
                    self.sizes[mid] = (frame.width, frame.height)
                if self.frames[mid] % 5 == 1:
                    await self._notify()

    async def _notify(self) -> None:
        async with self.changed:
            self.changed.notify_all()

    async def wait_for(self, predicate, timeout: float = 30) -> None:
        async with asyncio.timeout(timeout):
            async with self.changed:
                await self.changed.wait_for(predicate)

    def names(self) -> set[str]:
        return {p["name"] for p in self.participants}

    def receiving_from(self, name: str, frames: int) -> bool:
        mids = next((p["mids"] for p in self.participants if p["name"] == name), {})
        return len(mids) == 2 and all(self.frames[m] >= frames for m in mids.values())

    async def close(self) -> None:
        for task in self.tasks:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        for pc in (self.publish_pc, self.subscribe_pc):
            if pc is not None:
                await pc.close()
        if self.socket is not None:
            await self.socket.close()


def relay_peer_connection(servers: list[dict] | None = None):
    """An aiortc connection that gathers and uses relay candidates only (aiortc's
    iceTransportPolicy "relay", aioice's TransportPolicy.RELAY): a peer that can reach others
    only through TURN, as a browser behind a NAT that lets nothing else through."""
    from aiortc import RTCIceTransportPolicy, RTCPeerConnection

    from signaling.ice import rtc_configuration

    configuration = rtc_configuration(servers)
    configuration.iceTransportPolicy = RTCIceTransportPolicy.RELAY
    return RTCPeerConnection(configuration)


class RelayParticipant(Participant):
    """A Participant whose first publish and subscribe connections are relay-only (a retry
    or resubscribe gets Participant's ordinary connections)."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.publish_pc = relay_peer_connection(self.ice_servers)
        self.subscribe_pc = relay_peer_connection(self.ice_servers)
        self.subscribe_pc.on("track", self._on_track)


def selected_pair_types(pc) -> tuple[str, str] | None:
    """(local, remote) candidate types of the pair ICE selected for `pc`'s bundled transport,
    e.g. ("relay", "relay"); None before one is selected. aiortc has no candidate-pair
    stats, so this reads aioice's nominated pair (private: Connection._nominated)."""
    for transceiver in pc.getTransceivers():
        dtls = transceiver.sender.transport
        if dtls is None:
            continue
        pair = dtls.transport._connection._nominated.get(1)
        if pair is not None:
            return pair.local_candidate.type, pair.remote_candidate.type
    return None
