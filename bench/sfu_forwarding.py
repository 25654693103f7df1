"""SFU forwarding: whole rooms of 2..8 participants through a real SFU worker process.

Load shape: one daphne and one `manage.py sfu` worker sharing a redis-server; N aiortc
participants in this process join one group call over `ws/sfu/<slug>/`. Each publishes Opus
audio (20 ms packets) and VGA VP8 video at 30 fps from sources encoded once before the run
(so publishers cost no encoding), and receives everyone else's media without decoding it
(counted and timed on encoded frames). Per room size, after a warm-up, over --duration s:
- worker CPU share of one core (utime+stime of the worker process / wall time);
- forwarded streams (audio + video subscriptions) and streams per core at that CPU share;
- received video frame rate per forwarded video stream (full rate: 30 fps);
- latency from a publisher handing a frame to its sender to a subscriber reassembling it,
  p50/p95, through the SFU and, as a baseline, over a direct connection between two peers;
  the difference is what the SFU adds.

Usage: .venv/bin/python bench/sfu_forwarding.py [--sizes 2,3,4,6,8] [--duration 10]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import statistics
import sys
import time
from fractions import Fraction
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "project.settings")

import av  # noqa: E402
import websockets  # noqa: E402
from aiortc import MediaStreamTrack, RTCSessionDescription  # noqa: E402

from rooms.client import create_public_room, guest_session  # noqa: E402
from signaling.sfu import hooks  # noqa: E402
from signaling.sfu.room import peer_connection  # noqa: E402
from tests.support.servers import (  # noqa: E402
    DaphneProcess,
    LiveDatabase,
    RedisServer,
    SfuWorkerProcess,
)

FPS = 30
WIDTH, HEIGHT = 640, 480
VIDEO_BITRATE = 800_000
GOP = 60  # a keyframe every 2 s, as a browser sends after start-up
WARMUP = 4.0


def encode_video(frames: int) -> list[tuple[bytes, bool]]:
    """VGA VP8 of a moving gradient: (data, keyframe) per frame."""
    codec = av.CodecContext.create("libvpx", "w")
    codec.width, codec.height, codec.pix_fmt = WIDTH, HEIGHT, "yuv420p"
    codec.bit_rate, codec.framerate = VIDEO_BITRATE, Fraction(FPS, 1)
    codec.time_base = Fraction(1, FPS)
    codec.options = {"deadline": "realtime", "cpu-used": "8", "lag-in-frames": "0"}
    codec.gop_size = GOP
    out = []
    for n in range(frames):
        frame = av.VideoFrame(WIDTH, HEIGHT, "yuv420p")
        for index, plane in enumerate(frame.planes):
            row = bytes((x * 3 + n * 5 + index * 40) % 256 for x in range(plane.line_size))
            plane.update(row * (plane.buffer_size // plane.line_size))
        frame.pts = n
        for packet in codec.encode(frame):
            out.append((bytes(packet), bool(packet.is_keyframe)))
    return out


def encode_audio(packets: int) -> list[bytes]:
    codec = av.CodecContext.create("libopus", "w")
    codec.sample_rate, codec.layout, codec.format = 48000, "stereo", "s16"
    codec.bit_rate = 32000
    out = []
    for n in range(packets):
        frame = av.AudioFrame(format="s16", layout="stereo", samples=960)
        frame.planes[0].update(bytes((n * 13 + i) % 251 for i in range(960 * 4)))
        frame.sample_rate, frame.pts = 48000, n * 960
        out.extend(bytes(p) for p in codec.encode(frame))
    return out


class PacketSource(MediaStreamTrack):
    """A publisher track replaying pre-encoded packets in real time, noting send times."""

    def __init__(self, kind: str, packets: list[bytes], interval: float, sent: dict):
        super().__init__()
        self.kind = kind
        self.packets, self.interval, self.sent = packets, interval, sent
        self.clock = Fraction(1, 90000) if kind == "video" else Fraction(1, 48000)
        self.step = int(interval / self.clock)
        self.index, self.start = 0, None

    async def recv(self) -> av.Packet:
        if self.start is None:
            self.start = time.monotonic()
        due = self.start + self.index * self.interval
        await asyncio.sleep(max(0.0, due - time.monotonic()))
        data = self.packets[self.index % len(self.packets)]
        packet = av.Packet(data)
        packet.pts, packet.time_base = self.index * self.step, self.clock
        self.index += 1
        self.sent[hash(data)] = time.monotonic()
        return packet


class Bencher:
    """One participant: publishes PacketSources, times what it receives (never decodes)."""

    def __init__(self, base_url, slug, session_id, video, audio, publishers, stats):
        self.base_url, self.slug, self.session_id = base_url, slug, session_id
        self.video, self.audio, self.stats = video, audio, stats
        # Every publisher sends the same pre-encoded frames, so send times are kept per
        # publisher (member id -> {hash(frame): time}) and looked up by the track's mid.
        self.publishers = publishers
        self.sent: dict[int, float] = {}
        self.owner_by_mid: dict[str, str] = {}
        self.publish_pc, self.subscribe_pc = peer_connection(), peer_connection()
        self.subscribe_pc.on("track", self._on_track)

    async def run(self) -> None:
        netloc = self.base_url.split("://", 1)[1]
        self.socket = await websockets.connect(
            f"ws://{netloc}/ws/sfu/{self.slug}/", origin=self.base_url,
            additional_headers={"Cookie": f"sessionid={self.session_id}"}, max_size=2**20)
        hello = json.loads(await self.socket.recv())
        self.publishers[hello["you"]["member"]] = self.sent
        await self.socket.send(json.dumps({"type": "join"}))
        self.publish_pc.addTrack(PacketSource("audio", self.audio, 0.02, self.sent))
        sender = self.publish_pc.addTrack(PacketSource("video", [d for d, _ in self.video],
                                                       1 / FPS, self.sent))
        hooks.on_keyframe_request(sender, lambda: None)  # pre-encoded: keyframes every GOP
        await self.publish_pc.setLocalDescription(await self.publish_pc.createOffer())
        await self.socket.send(json.dumps(
            {"type": "publish", "sdp": self.publish_pc.localDescription.sdp}))
        async for raw in self.socket:
            event = json.loads(raw)
            if event["type"] == "publish-answer":
                await self.publish_pc.setRemoteDescription(
                    RTCSessionDescription(event["sdp"], "answer"))
            elif event["type"] == "participants":
                self.owner_by_mid = {
                    mid: p["id"] for p in event["participants"] for mid in p["mids"].values()
                }
            elif event["type"] == "subscribe-offer":
                pc = self.subscribe_pc
                await pc.setRemoteDescription(RTCSessionDescription(event["sdp"], "offer"))
                await pc.setLocalDescription(await pc.createAnswer())
                await self.socket.send(json.dumps(
                    {"type": "subscribe-answer", "sdp": pc.localDescription.sdp}))

    def _on_track(self, track) -> None:
        transceiver = next(t for t in self.subscribe_pc.getTransceivers()
                           if t.receiver.track is track)
        kind, mid = track.kind, transceiver.mid
        key = (id(self), mid)

        def on_frame(codec, frame) -> None:
            owner = self.owner_by_mid.get(mid)
            sent = self.publishers.get(owner, {}).get(hash(frame.data))
            self.stats.frame(kind, key, None if sent is None else time.monotonic() - sent)

        hooks.tap_receiver(transceiver.receiver, on_frame)

    async def close(self) -> None:
        with contextlib.suppress(Exception):
            await self.socket.close()
        await self.publish_pc.close()
        await self.subscribe_pc.close()


class Stats:
    def __init__(self) -> None:
        self.recording = False
        self.latency_ms: dict[str, list[float]] = {"audio": [], "video": []}
        self.frames: dict[tuple, int] = {}

    def frame(self, kind: str, key: tuple, latency: float | None) -> None:
        if not self.recording:
            return
        if kind == "video":
            self.frames[key] = self.frames.get(key, 0) + 1
        if latency is not None:
            self.latency_ms[kind].append(latency * 1000)


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else float("nan")


async def run_room(server, worker, size, video, audio, duration) -> dict:
    slug = await create_public_room(server.base_url, f"sfu bench {size}")
    publishers: dict[str, dict[int, float]] = {}
    stats = Stats()
    people = [Bencher(server.base_url, slug,
                      await guest_session(server.base_url, slug, f"P{n}"),
                      video, audio, publishers, stats) for n in range(size)]
    tasks = [asyncio.create_task(p.run()) for p in people]
    try:
        await asyncio.sleep(WARMUP + size * 0.5)  # joins, renegotiations, first keyframes
        stats.recording = True
        cpu0, wall0 = cpu_seconds(worker.process.pid), time.monotonic()
        await asyncio.sleep(duration)
        cpu1, wall1 = cpu_seconds(worker.process.pid), time.monotonic()
        stats.recording = False
    finally:
        for task in tasks:
            task.cancel()
        for person in people:
            await person.close()
    share = (cpu1 - cpu0) / (wall1 - wall0)
    streams = 2 * size * (size - 1)
    fps = [n / (wall1 - wall0) for n in stats.frames.values()]
    return {"size": size, "cpu": share, "streams": streams,
            "per_core": streams / share if share else float("inf"),
            "video_streams_seen": len(stats.frames),
            "fps_median": statistics.median(fps) if fps else 0.0,
            "fps_min": min(fps) if fps else 0.0,
            "v50": pct(stats.latency_ms["video"], 0.5), "v95": pct(stats.latency_ms["video"], 0.95),
            "a50": pct(stats.latency_ms["audio"], 0.5), "a95": pct(stats.latency_ms["audio"], 0.95)}


async def direct_baseline(video, audio, duration) -> dict:
    """Publisher -> subscriber over one direct aiortc connection: the latency floor."""
    sent: dict[int, float] = {}
    stats = Stats()
    sender_pc, receiver_pc = peer_connection(), peer_connection()
    sender_pc.addTrack(PacketSource("audio", audio, 0.02, sent))
    video_sender = sender_pc.addTrack(PacketSource("video", [d for d, _ in video], 1 / FPS, sent))
    hooks.on_keyframe_request(video_sender, lambda: None)

    @receiver_pc.on("track")
    def on_track(track) -> None:
        receiver = next(t.receiver for t in receiver_pc.getTransceivers()
                        if t.receiver.track is track)

        def on_frame(codec, frame, kind=track.kind) -> None:
            at = sent.get(hash(frame.data))
            stats.frame(kind, ("direct", kind), None if at is None else time.monotonic() - at)

        hooks.tap_receiver(receiver, on_frame)

    await sender_pc.setLocalDescription(await sender_pc.createOffer())
    await receiver_pc.setRemoteDescription(sender_pc.localDescription)
    await receiver_pc.setLocalDescription(await receiver_pc.createAnswer())
    await sender_pc.setRemoteDescription(receiver_pc.localDescription)
    await asyncio.sleep(WARMUP)
    stats.recording = True
    await asyncio.sleep(duration)
    stats.recording = False
    await sender_pc.close()
    await receiver_pc.close()
    return {"v50": pct(stats.latency_ms["video"], 0.5), "v95": pct(stats.latency_ms["video"], 0.95),
            "a50": pct(stats.latency_ms["audio"], 0.5), "a95": pct(stats.latency_ms["audio"], 0.95)}


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="2,3,4,6,8")
    parser.add_argument("--duration", type=float, default=10.0)
    args = parser.parse_args()

    print("encoding sources once...", flush=True)
    video = encode_video(FPS * 8)
    audio = encode_audio(50 * 8)
    kbps = sum(len(d) for d, _ in video) * 8 / 8 / 1000
    print(f"load shape: each participant publishes VP8 {WIDTH}x{HEIGHT} {FPS} fps (~{kbps:.0f} "
          f"kbit/s, keyframe every {GOP} frames) + Opus 20 ms; receives all others undecoded; "
          f"one worker process, one daphne, Redis; {args.duration:g} s measured after warm-up; "
          f"{os.cpu_count()} cores shared with the {len(args.sizes.split(','))} rooms' clients",
          flush=True)
    base = await direct_baseline(video, audio, args.duration)
    print(f"direct connection baseline: video p50 {base['v50']:.1f} ms p95 {base['v95']:.1f} ms, "
          f"audio p50 {base['a50']:.1f} ms p95 {base['a95']:.1f} ms", flush=True)
    print(f"{'N':>2} {'worker CPU':>10} {'streams':>7} {'streams/core':>12} "
          f"{'video fps med/min':>17} {'video p50/p95 ms':>16} {'added p50':>9} "
          f"{'audio p50/p95 ms':>16}", flush=True)

    database = LiveDatabase.create()
    redis = RedisServer.from_env_or_new()
    server = DaphneProcess.start(database.url, {"REDIS_URL": redis.url, "LOG_LEVEL": "WARNING",
                                                "PARLEY_SIGNAL_RATE_BURST": "100000"})
    worker = SfuWorkerProcess.start(database.url, redis.url, {"LOG_LEVEL": "WARNING"})
    try:
        for size in (int(s) for s in args.sizes.split(",")):
            r = await run_room(server, worker, size, video, audio, args.duration)
            print(f"{r['size']:>2} {r['cpu'] * 100:>9.0f}% {r['streams']:>7} "
                  f"{r['per_core']:>12.0f} {r['fps_median']:>9.1f}/{r['fps_min']:<7.1f} "
                  f"{r['v50']:>7.1f}/{r['v95']:<8.1f} {r['v50'] - base['v50']:>9.1f} "
                  f"{r['a50']:>7.1f}/{r['a95']:<8.1f}", flush=True)
    finally:
        worker.stop()
        server.stop()
        redis.stop()
        database.drop()


if __name__ == "__main__":
    asyncio.run(main())
