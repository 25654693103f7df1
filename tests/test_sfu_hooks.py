"""The prompt jitter buffer on its own: complete frames out at once, in order, nothing torn."""

from __future__ import annotations

from aiortc.rtp import RtpPacket

from signaling.sfu.hooks import PromptJitterBuffer


def packet(seq: int, timestamp: int, data: bytes, marker: bool = False) -> RtpPacket:
    p = RtpPacket(sequence_number=seq, timestamp=timestamp, marker=int(marker))
    p._data = data
    return p


def test_video_frame_is_released_at_its_marker():
    buffer = PromptJitterBuffer(capacity=64, is_video=True)
    assert buffer.add(packet(10, 900, b"a"))[1] is None
    frame = buffer.add(packet(11, 900, b"b", marker=True))[1]
    assert (frame.data, frame.timestamp) == (b"ab", 900)


def test_reordered_packets_wait_for_the_gap():
    buffer = PromptJitterBuffer(capacity=64, is_video=True)
    buffer.add(packet(20, 100, b"x"))
    assert buffer.add(packet(22, 100, b"z", marker=True))[1] is None  # 21 missing
    assert buffer.add(packet(21, 100, b"y"))[1].data == b"xyz"


def test_a_frame_without_marker_is_released_by_the_next_one():
    buffer = PromptJitterBuffer(capacity=64, is_video=True)
    buffer.add(packet(1, 100, b"a"))
    frame = buffer.add(packet(2, 200, b"b"))[1]
    assert (frame.data, frame.timestamp) == (b"a", 100)


def test_audio_packets_are_frames():
    buffer = PromptJitterBuffer(capacity=16)
    assert buffer.add(packet(5, 960, b"o"))[1].data == b"o"
    assert buffer.add(packet(6, 1920, b"p"))[1].data == b"p"
