"""Forwarding encoded media: one Publication per published track, one ForwardedTrack per
subscriber of it. Nothing here decodes or encodes.

A new video subscriber sees nothing until a keyframe arrives; it asks the publisher for one
through a throttled PLI. A subscriber that falls behind loses its queue (video: until the
next keyframe, which it requests) instead of growing without bound.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable
from fractions import Fraction

import av
from aiortc import MediaStreamTrack
from aiortc.jitterbuffer import JitterFrame
from aiortc.mediastreams import MediaStreamError
from aiortc.rtcrtpparameters import RTCRtpCodecParameters

from . import hooks

CLOCK = {"audio": Fraction(1, 48000), "video": Fraction(1, 90000)}
# One PLI per publisher per this many seconds at most: a keyframe costs 5-10x a normal frame,
# and several subscribers joining at once (or one with a bad link) must not trigger a storm.
PLI_MIN_INTERVAL = 0.3
# A subscriber further behind than this is dropped to the next keyframe (video, ~3 s at
# 30 fps) or loses its oldest audio (1 s of 20 ms packets).
MAX_QUEUED = {"video": 90, "audio": 50}


def is_vp8_keyframe(data: bytes) -> bool:
    """VP8 frame tag (RFC 6386 9.1): bit 0 of the first byte is 0 on a keyframe."""
    return bool(data) and not data[0] & 0x01


class ForwardedTrack(MediaStreamTrack):
    """What one subscriber's sender reads: the publisher's encoded frames as av.Packet."""

    def __init__(self, publication: Publication):
        super().__init__()
        self.kind = publication.kind
        self.publication = publication
        self.waiting_for_keyframe = publication.kind == "video"
        self._queue: asyncio.Queue[av.Packet | None] = asyncio.Queue()
        self.forwarded = 0

    def push(self, packet: av.Packet, keyframe: bool) -> None:
        if self.readyState != "live":
            return
        if self.waiting_for_keyframe:
            if not keyframe:
                return
            self.waiting_for_keyframe = False
        if self._queue.qsize() >= MAX_QUEUED[self.kind]:
            self._drop_backlog(keyframe)
            if self.waiting_for_keyframe:
                return
        self._queue.put_nowait(packet)

    def _drop_backlog(self, keyframe: bool) -> None:
        while not self._queue.empty():
            self._queue.get_nowait()
        if self.kind == "video" and not keyframe:
            self.waiting_for_keyframe = True
            self.publication.request_keyframe()

    async def recv(self) -> av.Packet:
        if self.readyState != "live":
            raise MediaStreamError
        packet = await self._queue.get()
        if packet is None:
            raise MediaStreamError
        self.forwarded += 1
        return packet

    def stop(self) -> None:
        if self.readyState == "live":
            super().stop()
            self._queue.put_nowait(None)


class Publication:
    """One published track (a participant's microphone, camera or shared screen) and its
    subscribers. `close` drops the subscribers only: a screen publication is closed when
    sharing stops and subscribed to again when it resumes on the same receiver."""

    def __init__(self, owner: str, kind: str, receiver, mid: str | None, *,
                 source: str | None = None):
        self.owner = owner
        self.kind = kind
        self.source = source or kind  # "audio", "video" (camera) or "screen"
        self.receiver = receiver
        self.mid = mid
        self.tracks: set[ForwardedTrack] = set()
        self.frames = 0
        self.keyframes = 0
        self.codec: str | None = None
        # Extra consumers of encoded frames (e.g. live captions), called for every frame.
        self.listeners: list[Callable[[RTCRtpCodecParameters, JitterFrame], None]] = []
        self._last_pli = 0.0
        self._pli_task: asyncio.Task | None = None  # the throttled PLI waiting to go out
        self.tap = hooks.tap_receiver(receiver, self.on_frame)

    def on_frame(self, codec: RTCRtpCodecParameters, frame: JitterFrame) -> None:
        """Called by aiortc (via the tap) for every reassembled encoded frame."""
        self.frames += 1
        self.codec = codec.name
        packet = av.Packet(frame.data)
        packet.pts = frame.timestamp
        packet.time_base = CLOCK[self.kind]
        keyframe = self.kind == "video" and is_vp8_keyframe(frame.data)
        self.keyframes += keyframe
        for track in self.tracks:
            track.push(packet, keyframe)
        for listener in self.listeners:
            listener(codec, frame)

    def subscribe(self) -> ForwardedTrack:
        track = ForwardedTrack(self)
        self.tracks.add(track)
        if self.kind == "video":
            self.request_keyframe()
        return track

    def unsubscribe(self, track: ForwardedTrack) -> None:
        self.tracks.discard(track)
        track.stop()

    def request_keyframe(self) -> None:
        """Ask the publisher for a keyframe, at most once per PLI_MIN_INTERVAL."""
        if self.kind != "video" or self._pli_task is not None:
            return
        wait = self._last_pli + PLI_MIN_INTERVAL - time.monotonic()
        # The publication owns this task: `close` cancels it.
        self._pli_task = asyncio.get_running_loop().create_task(
            self._send_pli(max(0.0, wait)), name=f"pli.{self.owner}")

    async def _send_pli(self, delay: float) -> None:
        if delay:
            await asyncio.sleep(delay)
        self._pli_task = None
        self._last_pli = time.monotonic()
        with contextlib.suppress(ConnectionError, OSError):  # the publisher went away
            await hooks.send_pli(self.receiver)

    def decoded(self) -> MediaStreamTrack:
        """Start decoding this publication (for live captions) and return the track that
        yields its decoded frames. Forwarding goes on unchanged; nothing is decoded until a
        caller asks, and `stop_decoding` ends it."""
        self.tap.decode = True
        return self.receiver.track

    def stop_decoding(self) -> None:
        self.tap.decode = False

    def close(self) -> None:
        if self._pli_task is not None:
            self._pli_task.cancel()
            self._pli_task = None
        for track in list(self.tracks):
            self.unsubscribe(track)
