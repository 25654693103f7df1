"""The only place Parley reaches into aiortc's private internals (aiortc pinned to 1.16.0).

Why: an SFU must forward encoded media. aiortc's sender accepts encoded packets (a track may
return `av.Packet`, which the sender packetizes without encoding), but its receiver only hands
out decoded frames: each reassembled encoded frame is put on a private queue read by a decoder
thread. We replace that queue, per receiver, with one that gives every encoded frame to the SFU
and passes it on to the decoder only when someone needs decoded media (captions).

Also here: a jitter buffer that releases each frame as soon as it is complete (aiortc's
waits for the next frame, and prefetches 80 ms of audio), sending a PLI to a publisher,
and catching a subscriber's keyframe requests (PLI/FIR) on a sender.

tests/test_sfu_hooks.py fails loudly when an aiortc upgrade moves any of this.
"""

from __future__ import annotations

import logging
import queue
from collections.abc import Callable

import aiortc
from aiortc.jitterbuffer import JitterBuffer, JitterFrame
from aiortc.rtcrtpparameters import RTCRtpCodecParameters
from aiortc.rtcrtpreceiver import RTCRtpReceiver
from aiortc.rtcrtpsender import RTCRtpSender

log = logging.getLogger(__name__)

AIORTC_VERSION = "1.16.0"
_DECODER_QUEUE = "_RTCRtpReceiver__decoder_queue"
_JITTER_BUFFER = "_RTCRtpReceiver__jitter_buffer"
_ACTIVE_SSRC = "_RTCRtpReceiver__active_ssrc"
_RTX_SSRC = "_RTCRtpReceiver__rtx_ssrc"
# aiortc's jitter buffers: audio 16 packets, played after 4 (80 ms of 20 ms Opus packets);
# video 512 packets. Same capacities here, no prefetch.
AUDIO_JITTER_CAPACITY = 16
VIDEO_JITTER_CAPACITY = 512

EncodedFrameHandler = Callable[[RTCRtpCodecParameters, JitterFrame], None]


def check_aiortc() -> None:
    """Raise if the installed aiortc is not the one these hooks were written against."""
    if aiortc.__version__ != AIORTC_VERSION:
        raise RuntimeError(
            f"signaling/sfu/hooks.py targets aiortc {AIORTC_VERSION}, found {aiortc.__version__}"
        )
    probe = RTCRtpReceiver.__init__.__code__.co_names
    for name in (_DECODER_QUEUE, _JITTER_BUFFER, _ACTIVE_SSRC, _RTX_SSRC):
        if name not in probe:
            raise RuntimeError(f"aiortc's RTCRtpReceiver no longer sets {name}")
    for name in ("_packets", "_origin", "_is_video", "remove", "_remove_frame"):
        if name not in JitterBuffer.__init__.__code__.co_names and not hasattr(JitterBuffer, name):
            raise RuntimeError(f"aiortc's JitterBuffer no longer has {name}")
    for owner, method in ((RTCRtpReceiver, "_send_rtcp_pli"), (RTCRtpSender, "_send_keyframe")):
        if not callable(getattr(owner, method, None)):
            raise RuntimeError(f"aiortc's {owner.__name__} no longer has {method}")


class PromptJitterBuffer(JitterBuffer):
    """Releases a frame as soon as it is complete, not when the next frame begins.

    aiortc's buffer knows a frame is complete only when a packet with the next timestamp
    arrives, which holds every frame back one frame interval (33 ms at 30 fps) at each hop.
    Here a video frame is complete at its marker bit (set on the last packet of a frame), and
    an audio packet is a whole frame. Frames are still released strictly in sequence order.
    """

    def _remove_frame(self, sequence_number: int) -> JitterFrame | None:
        packets = []
        timestamp = None
        for count in range(self.capacity):
            packet = self._packets[(self._origin + count) % self.capacity]
            if packet is None:
                return None
            if timestamp is not None and packet.timestamp != timestamp:
                # The previous frame ended without a marker (it was lost): release it as
                # aiortc would.
                self.remove(count)
                return JitterFrame(b"".join(p._data for p in packets), timestamp)
            timestamp = packet.timestamp
            packets.append(packet)
            if packet.marker or not self._is_video:
                self.remove(count + 1)
                return JitterFrame(b"".join(p._data for p in packets), timestamp)
        return None


class EncodedFrameTap(queue.Queue):
    """Stands in for a receiver's decoder queue.

    aiortc calls `put((codec, encoded_frame))` on the event loop thread for every complete
    frame, and `put(None)` to stop its decoder thread. Frames go to `on_frame`; they reach the
    decoder only while `decode` is true.
    """

    def __init__(self, on_frame: EncodedFrameHandler, decode: bool = False):
        super().__init__()
        self.on_frame = on_frame
        self.decode = decode

    def put(self, item, block: bool = True, timeout: float | None = None) -> None:
        if item is not None:
            codec, frame = item
            try:
                self.on_frame(codec, frame)
            except Exception:
                # This runs inside aiortc's transport task: an exception escaping here would
                # close the publisher's whole connection.
                log.exception("forwarding a frame failed")
            if not self.decode:
                return
        super().put(item, block, timeout)


def tap_receiver(
    receiver: RTCRtpReceiver, on_frame: EncodedFrameHandler, *, decode: bool = False,
    audio_prefetch: int = 0,
) -> EncodedFrameTap:
    """Route a receiver's encoded frames to `on_frame`.

    Call it from the peer connection's "track" event: before the receiver starts (its decoder
    thread takes the queue when the connection is established).
    """
    tap = EncodedFrameTap(on_frame, decode)
    setattr(receiver, _DECODER_QUEUE, tap)
    if receiver.track.kind == "audio":
        buffer = PromptJitterBuffer(capacity=AUDIO_JITTER_CAPACITY, prefetch=audio_prefetch)
    else:
        buffer = PromptJitterBuffer(capacity=VIDEO_JITTER_CAPACITY, is_video=True)
    setattr(receiver, _JITTER_BUFFER, buffer)
    return tap


def publisher_ssrc(receiver: RTCRtpReceiver) -> int | None:
    """The SSRC the publisher is sending media on now (most recently active, not RTX)."""
    retransmissions = getattr(receiver, _RTX_SSRC)
    active = [(seen, ssrc) for ssrc, seen in getattr(receiver, _ACTIVE_SSRC).items()
              if ssrc not in retransmissions]
    return max(active)[1] if active else None


async def send_pli(receiver: RTCRtpReceiver) -> bool:
    """Ask the publisher behind `receiver` for a keyframe; False if it sent nothing yet."""
    ssrc = publisher_ssrc(receiver)
    if ssrc is None:
        return False
    await receiver._send_rtcp_pli(ssrc)
    return True


def on_keyframe_request(sender: RTCRtpSender, callback: Callable[[], None]) -> None:
    """Call `callback` when the subscriber behind `sender` asks for a keyframe (PLI or FIR).

    aiortc answers those by making its encoder emit a keyframe, which means nothing for a
    sender of pre-encoded packets: the request must travel to the publisher instead.
    """
    sender._send_keyframe = callback
