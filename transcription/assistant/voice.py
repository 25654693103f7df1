"""The assistant in the room's group call: it joins the call as a member, through the same
worker commands a group-call socket sends (signaling/sfu/worker.py), so it works wherever the
call's worker runs (in daphne, or a `manage.py sfu` process over Redis).

- Listening: its subscribe connection receives every member's audio as the SFU forwards it;
  each track is decoded by aiortc, resampled to 24 kHz mono, and the tracks are mixed
  (MIX_MS at a time) into the PCM the session appends to its upstream input buffer.
- Speaking: its one published track (`VoiceTrack`) plays the PCM the session hands it
  (`response.output_audio.delta`), paced in real time, and silence otherwise; the SFU
  forwards it to everyone like a person's microphone.
- Interruption: `hush()` drops whatever is not yet played, so the next 20 ms frame is
  silence: the track stops at once.

`CallVoice` is owned by the session's task: `close()` leaves the call and closes both
connections and every task it started.
"""

from __future__ import annotations

import asyncio
import contextlib
import fractions
import logging
import secrets
import time
from collections.abc import Callable

import av
import numpy as np
from aiortc import MediaStreamTrack, RTCSessionDescription
from aiortc.mediastreams import MediaStreamError
from channels.layers import get_channel_layer
from django.conf import settings

from signaling.ice import peer_connection, server_ice_servers
from signaling.sfu.directory import worker_directory
from signaling.sfu.worker import ensure_local_worker, worker_channel

from . import protocol

log = logging.getLogger(__name__)

RATE = 24000  # the Realtime API's PCM16 mono rate, in and out
FRAME_SAMPLES = 480  # 20 ms
FRAME_BYTES = FRAME_SAMPLES * 2
MIX_MS = 40  # the mixer's period: its share of the reply and interruption latency
MAX_BUFFERED_BYTES = RATE * 2 * 5  # per listened track: a stalled mixer drops, never grows
JOIN_TIMEOUT = 15


class VoiceTrack(MediaStreamTrack):
    """The assistant's voice: queued PCM16 24 kHz mono, 20 ms per frame in real time."""

    kind = "audio"

    def __init__(self) -> None:
        super().__init__()
        self.pending = bytearray()
        self.started: float | None = None
        self.samples = 0
        self.spoken_frames = 0  # frames that carried speech (tests, stats)

    def speak(self, pcm: bytes) -> None:
        self.pending.extend(pcm)

    def hush(self) -> None:
        self.pending.clear()

    @property
    def speaking(self) -> bool:
        return bool(self.pending)

    async def recv(self) -> av.AudioFrame:
        if self.readyState != "live":
            raise MediaStreamError
        if self.started is None:
            self.started = time.monotonic()
        else:
            self.samples += FRAME_SAMPLES
            due = self.started + self.samples / RATE
            await asyncio.sleep(max(0.0, due - time.monotonic()))  # real-time pacing
        chunk = bytes(self.pending[:FRAME_BYTES])
        del self.pending[:FRAME_BYTES]
        if chunk:
            self.spoken_frames += 1
        frame = av.AudioFrame(format="s16", layout="mono", samples=FRAME_SAMPLES)
        frame.planes[0].update(chunk.ljust(FRAME_BYTES, b"\0"))
        frame.sample_rate, frame.pts = RATE, self.samples
        frame.time_base = fractions.Fraction(1, RATE)
        return frame


class CallVoice:
    """The assistant as a member of one room's group call (see the module docstring)."""

    def __init__(self, room_id: int, on_audio: Callable[[bytes], None]):
        self.room_key = str(room_id)
        self.on_audio = on_audio
        self.member = f"assistant-{secrets.token_hex(6)}"
        self.voice = VoiceTrack()
        self.layer = get_channel_layer()
        self.channel: str | None = None
        self.worker: str | None = None
        self.publish_pc = self.subscribe_pc = None
        self.buffers: dict[str, bytearray] = {}  # listened track -> PCM not yet mixed
        self.tasks: set[asyncio.Task] = set()
        self.joined = asyncio.Event()
        self.participants: list[dict] = []

    def _spawn(self, coro, name: str) -> asyncio.Task:
        task = asyncio.get_running_loop().create_task(coro, name=f"assistant.voice.{name}")
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)
        return task

    async def start(self) -> None:
        if not settings.REDIS_URL:
            await ensure_local_worker(self.layer)
        self.worker = await worker_directory().assign(self.room_key)
        if self.worker is None:
            raise RuntimeError("No call server is running.")
        self.channel = await self.layer.new_channel("assistant.voice.")
        servers = server_ice_servers(f"assistant-{self.room_key}")
        self.publish_pc, self.subscribe_pc = peer_connection(servers), peer_connection(servers)
        self.subscribe_pc.on("track", self._on_track)
        self._spawn(self._events(), "events")
        self._spawn(self._mix_forever(), "mixer")
        await self._command("sfu.join", room=self.room_key, name=protocol.ASSISTANT_NAME,
                            speaker=protocol.ASSISTANT_KEY, reply=self.channel)
        async with asyncio.timeout(JOIN_TIMEOUT):
            await self.joined.wait()
        self.publish_pc.addTrack(self.voice)
        await self.publish_pc.setLocalDescription(await self.publish_pc.createOffer())
        await self._command("sfu.publish", sdp=self.publish_pc.localDescription.sdp)

    def speak(self, pcm: bytes) -> None:
        self.voice.speak(pcm)

    def hush(self) -> None:
        self.voice.hush()

    def people(self) -> int:
        """Members of the call other than the assistant."""
        return sum(1 for p in self.participants if not p.get("you"))

    async def close(self) -> None:
        if self.worker is not None:
            with contextlib.suppress(Exception):
                await self._command("sfu.leave")
        for task in list(self.tasks):
            task.cancel()
        for task in list(self.tasks):
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        self.voice.stop()
        for pc in (self.publish_pc, self.subscribe_pc):
            if pc is not None:
                with contextlib.suppress(Exception):
                    await asyncio.shield(pc.close())

    async def _command(self, kind: str, **fields) -> None:
        await self.layer.send(worker_channel(self.worker),
                              {"type": kind, "member": self.member, **fields})

    async def _events(self) -> None:
        while True:
            message = await self.layer.receive(self.channel)
            event = message.get("event") or {}
            try:
                await self._event(event)
            except Exception:
                log.warning("the assistant's call event %s failed", event.get("type"),
                            exc_info=True)

    async def _event(self, event: dict) -> None:
        kind = event.get("type")
        if kind == "joined":
            self.joined.set()
        elif kind == "publish-answer":
            await self.publish_pc.setRemoteDescription(
                RTCSessionDescription(event["sdp"], "answer"))
        elif kind == "subscribe-offer":
            pc = self.subscribe_pc
            await pc.setRemoteDescription(RTCSessionDescription(event["sdp"], "offer"))
            await pc.setLocalDescription(await pc.createAnswer())
            await self._command("sfu.subscribe_answer", sdp=pc.localDescription.sdp)
        elif kind == "participants":
            self.participants = event.get("participants", [])
        elif kind == "error":
            log.warning("the call refused the assistant's %s: %s", event.get("command"),
                        event.get("message"))

    def _on_track(self, track) -> None:
        if track.kind == "audio":
            self._spawn(self._listen(track), f"listen.{track.id}")

    async def _listen(self, track) -> None:
        """One member's forwarded audio, decoded, as 24 kHz mono into its mix buffer."""
        resampler = av.AudioResampler(format="s16", layout="mono", rate=RATE)
        buffer = self.buffers.setdefault(track.id, bytearray())
        try:
            while True:
                frame = await track.recv()
                frame.pts = None
                for out in resampler.resample(frame):
                    buffer.extend(bytes(out.planes[0])[:out.samples * 2])
                if len(buffer) > MAX_BUFFERED_BYTES:
                    del buffer[:len(buffer) - MAX_BUFFERED_BYTES]
        except MediaStreamError:
            pass
        finally:
            self.buffers.pop(track.id, None)

    async def _mix_forever(self) -> None:
        while True:
            await asyncio.sleep(MIX_MS / 1000)  # the mixer's period, not a wait on anything
            pcm = self.mix()
            if pcm:
                self.on_audio(pcm)

    def mix(self) -> bytes:
        """Everything each member's track delivered since the last mix, summed (clipped);
        b"" when none came. All of it, not MIX_BYTES: the mixer's period drifts (a sleep
        plus the work), and taking a fixed amount per period let a backlog, and so the
        latency, grow for as long as the call lasted."""
        parts = []
        for buffer in list(self.buffers.values()):
            if buffer:
                parts.append(np.frombuffer(bytes(buffer), dtype=np.int16))
                buffer.clear()
        if not parts:
            return b""
        if len(parts) == 1:
            return parts[0].tobytes()
        mixed = np.zeros(max(len(p) for p in parts), dtype=np.int32)
        for part in parts:
            mixed[:len(part)] += part
        return np.clip(mixed, -32768, 32767).astype(np.int16).tobytes()
