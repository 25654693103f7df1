"""SFU forwarding: whole rooms of 2..8 participants through a real SFU worker process, direct
and through a real TURN server, and the worker's memory under a hostile publisher.

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
  the difference is what the SFU (and, in the TURN pass, coturn) adds;
- video streams that delivered frames, of those expected, and how long after the joins the
  last one started (the bench waits up to READY_TIMEOUT for all of them before measuring);
- the candidate types of the pair ICE selected on each participant connection.

Passes (--passes): `direct` (host candidates on loopback) and `turn`: coturn started from
deploy/coturn/turnserver.conf (tests/support/turn.py, loopback peers allowed), daphne and the
worker with TURN_SECRET/TURN_URLS, no STUN, ICE_TRANSPORT_POLICY=relay; participants take
their ICE servers and policy from the socket's `hello`, so they gather relay candidates only
and every packet goes through coturn. The TURN pass also reports coturn's CPU share.

Hostile publisher (--hostile-rounds, after the direct pass, on a daphne with the default
signaling rate limit): one member sends rounds of bad `publish` offers (an m-line bomb, an
oversize SDP, garbage, an offer that fails to apply) as fast as the rate limit allows, while
the worker's VmRSS is sampled and other members join the same call, timed join -> joined and
join -> first media, before and during the attack.

The TURN pass lifts coturn's user-quota (--turn-user-quota, default 0: none): all of a
worker's connections share one username, and the shipped 12 allocations hold 6 members.

Usage: .venv/bin/python bench/sfu_forwarding.py [--sizes 2,3,4,6,8] [--duration 10]
       [--passes direct,turn] [--hostile-rounds 100] [--turn-user-quota 0|shipped]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import re
import statistics
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "project.settings")

import av  # noqa: E402
import websockets  # noqa: E402
from aiortc import MediaStreamTrack, RTCPeerConnection, RTCSessionDescription  # noqa: E402

from rooms.client import create_public_room, guest_session  # noqa: E402
from signaling.ice import turn_credentials  # noqa: E402
from signaling.sfu import hooks  # noqa: E402
from signaling.sfu.room import peer_connection  # noqa: E402
from tests.support.servers import (  # noqa: E402
    SERVER_ENV,
    DaphneProcess,
    LiveDatabase,
    RedisServer,
    SfuWorkerProcess,
)
from tests.support.sfu_peers import (  # noqa: E402
    poll,
    relay_peer_connection,
    selected_pair_types,
)
from tests.support.turn import LOOPBACK_PEERS, TURN_SECRET, Coturn  # noqa: E402

FPS = 30
WIDTH, HEIGHT = 640, 480
VIDEO_BITRATE = 800_000
GOP = 60  # a keyframe every 2 s, as a browser sends after start-up
WARMUP = 4.0
READY_TIMEOUT = 30.0  # longest wait, after the warm-up, for every video stream to flow
TURN_WARMUP = 2.0  # extra: relay allocations and permissions before media flows


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


def connection_for(hello: dict) -> RTCPeerConnection:
    """A participant connection as a page would make it from the socket's `hello`: its ICE
    servers, relay candidates only when the policy says `relay`."""
    if hello.get("ice_transport_policy") == "relay":
        return relay_peer_connection(hello["ice_servers"])
    return peer_connection(hello["ice_servers"])


class Bencher:
    """One participant: publishes PacketSources, times what it receives (never decodes).
    `marks` holds when it was welcomed (`hello`), `joined`, and got its first audio and video
    frame (from the member `watch` only, if set; whether or not `stats` is recording);
    `errors` the error events it got, `largest_offer` its largest subscribe offer."""

    def __init__(self, base_url: str, slug: str, session_id: str, video, audio,
                 publishers: dict, stats: Stats):
        self.base_url, self.slug, self.session_id = base_url, slug, session_id
        self.video, self.audio, self.stats = video, audio, stats
        # Every publisher sends the same pre-encoded frames, so send times are kept per
        # publisher (member id -> {hash(frame): time}) and looked up by the track's mid.
        self.publishers = publishers
        self.sent: dict[int, float] = {}
        self.owner_by_mid: dict[str, str] = {}
        self.marks: dict[str, float] = {}
        self.watch: str | None = None
        self.member: str | None = None
        self.errors: list[dict] = []
        self.largest_offer = (0, 0)  # (characters, media sections)
        self.socket = None
        self.publish_pc: RTCPeerConnection | None = None
        self.subscribe_pc: RTCPeerConnection | None = None

    async def run(self) -> None:
        netloc = self.base_url.split("://", 1)[1]
        self.socket = await websockets.connect(
            f"ws://{netloc}/ws/sfu/{self.slug}/", origin=self.base_url,
            additional_headers={"Cookie": f"sessionid={self.session_id}"}, max_size=2**20)
        hello = json.loads(await self.socket.recv())
        self.marks["hello"] = time.monotonic()
        self.publish_pc, self.subscribe_pc = connection_for(hello), connection_for(hello)
        self.subscribe_pc.on("track", self._on_track)
        self.member = hello["you"]["member"]
        self.publishers[self.member] = self.sent
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
            if event["type"] == "joined":
                self.marks["joined"] = time.monotonic()
            elif event["type"] == "publish-answer":
                await self.publish_pc.setRemoteDescription(
                    RTCSessionDescription(event["sdp"], "answer"))
            elif event["type"] == "participants":
                self.owner_by_mid = {
                    mid: p["id"] for p in event["participants"] for mid in p["mids"].values()
                }
            elif event["type"] == "subscribe-offer":
                pc, sdp = self.subscribe_pc, event["sdp"]
                self.largest_offer = max(self.largest_offer, (len(sdp), sdp.count("\nm=")))
                await pc.setRemoteDescription(RTCSessionDescription(event["sdp"], "offer"))
                await pc.setLocalDescription(await pc.createAnswer())
                await self.socket.send(json.dumps(
                    {"type": "subscribe-answer", "sdp": pc.localDescription.sdp}))
            elif event["type"] == "error":
                self.errors.append(event)

    def _on_track(self, track) -> None:
        transceiver = next(t for t in self.subscribe_pc.getTransceivers()
                           if t.receiver.track is track)
        kind, mid = track.kind, transceiver.mid
        key = (id(self), mid)

        def on_frame(codec, frame) -> None:
            now = time.monotonic()
            owner = self.owner_by_mid.get(mid)
            if self.watch is None or owner == self.watch:
                self.marks.setdefault(kind, now)
            sent = self.publishers.get(owner, {}).get(hash(frame.data))
            self.stats.frame(kind, key, None if sent is None else now - sent)

        hooks.tap_receiver(transceiver.receiver, on_frame)

    def pairs(self) -> list[str]:
        """`local-remote` candidate types of each connection's selected pair."""
        found = []
        for pc in (self.publish_pc, self.subscribe_pc):
            types = selected_pair_types(pc) if pc is not None else None
            found.append("-".join(types) if types else "none")
        return found

    async def close(self) -> None:
        with contextlib.suppress(Exception):
            await self.socket.close()
        for pc in (self.publish_pc, self.subscribe_pc):
            if pc is not None:
                await pc.close()


class Stats:
    def __init__(self) -> None:
        self.recording = False
        self.latency_ms: dict[str, list[float]] = {"audio": [], "video": []}
        self.frames: dict[tuple, int] = {}
        self.flowing: dict[tuple, float] = {}  # video stream -> when its first frame came

    def frame(self, kind: str, key: tuple, latency: float | None) -> None:
        if kind == "video":
            self.flowing.setdefault(key, time.monotonic())
        if not self.recording:
            return
        if kind == "video":
            self.frames[key] = self.frames.get(key, 0) + 1
        if latency is not None:
            self.latency_ms[kind].append(latency * 1000)

    def latencies(self) -> dict[str, float]:
        video, audio = self.latency_ms["video"], self.latency_ms["audio"]
        return {"v50": pct(video, 0.5), "v95": pct(video, 0.95),
                "a50": pct(audio, 0.5), "a95": pct(audio, 0.95)}


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else float("nan")


@dataclass
class Deployment:
    """daphne + one SFU worker on their own Redis (so no other worker takes the rooms), and
    coturn for the TURN pass."""

    redis: RedisServer
    server: DaphneProcess
    worker: SfuWorkerProcess
    coturn: Coturn | None


@contextlib.contextmanager
def deployment(database: LiveDatabase, turn_dir: Path | None,
               turn_extra: str = "") -> Iterator[Deployment]:
    coturn = (Coturn.start(turn_dir, extra=LOOPBACK_PEERS + turn_extra)
              if turn_dir is not None else None)
    turn_env = {} if coturn is None else {
        "TURN_SECRET": TURN_SECRET, "TURN_URLS": coturn.url, "ICE_SERVERS": "[]",
        "SFU_ICE_SERVERS": "[]", "ICE_TRANSPORT_POLICY": "relay"}
    stops: list[Callable[[], None]] = [coturn.stop] if coturn is not None else []
    try:
        redis = RedisServer.from_env_or_new()
        stops.append(redis.stop)
        server = DaphneProcess.start(database.url, {
            "REDIS_URL": redis.url, "LOG_LEVEL": "WARNING",
            "PARLEY_SIGNAL_RATE_BURST": "100000", **turn_env})
        stops.append(server.stop)
        worker = SfuWorkerProcess.start(database.url, redis.url,
                                        {"LOG_LEVEL": "WARNING", **turn_env})
        stops.append(worker.stop)
        yield Deployment(redis, server, worker, coturn)
    finally:
        for stop in reversed(stops):
            stop()


async def run_room(deploy: Deployment, size: int, video, audio, duration: float) -> dict:
    server, worker = deploy.server, deploy.worker
    slug = await create_public_room(server.base_url, f"sfu bench {size}")
    publishers: dict[str, dict[int, float]] = {}
    stats = Stats()
    people = [Bencher(server.base_url, slug,
                      await guest_session(server.base_url, slug, f"P{n}"),
                      video, audio, publishers, stats) for n in range(size)]
    tasks = [asyncio.create_task(p.run()) for p in people]
    turn_pid = deploy.coturn.process.pid if deploy.coturn is not None else None
    streams = 2 * size * (size - 1)
    started = time.monotonic()
    try:
        # joins, renegotiations, first keyframes (and relay allocations), then until every
        # video stream has delivered a frame (or READY_TIMEOUT: measured as it is); `ready`:
        # from the joins to the last video stream's first frame
        await asyncio.sleep(WARMUP + size * 0.5 + (TURN_WARMUP if turn_pid else 0.0))
        with contextlib.suppress(AssertionError):
            await poll(lambda: len(stats.flowing) >= streams // 2, timeout=READY_TIMEOUT)
        complete = len(stats.flowing) >= streams // 2
        ready = max(stats.flowing.values()) - started if complete else float("nan")
        stats.recording = True
        cpu0, wall0, own0 = cpu_seconds(worker.process.pid), time.monotonic(), time.process_time()
        turn0 = cpu_seconds(turn_pid) if turn_pid else 0.0
        await asyncio.sleep(duration)
        cpu1, wall1, own1 = cpu_seconds(worker.process.pid), time.monotonic(), time.process_time()
        turn1 = cpu_seconds(turn_pid) if turn_pid else 0.0
        stats.recording = False
        pairs = Counter(pair for person in people for pair in person.pairs())
        errors = Counter(e["code"] for person in people for e in person.errors)
    finally:
        for task in tasks:
            task.cancel()
        for person in people:
            await person.close()
    wall = wall1 - wall0
    share = (cpu1 - cpu0) / wall
    # over every expected video stream: one that delivered nothing counts as 0 fps
    fps = [n / wall for n in stats.frames.values()]
    fps += [0.0] * (streams // 2 - len(fps))
    return {"size": size, "cpu": share, "streams": streams,
            "per_core": streams / share if share else float("inf"),
            "video_streams_seen": len(stats.frames), "ready": ready,
            "fps_median": statistics.median(fps) if fps else 0.0,
            "fps_min": min(fps) if fps else 0.0,
            "turn_cpu": (turn1 - turn0) / wall if turn_pid else None,
            "bench_cpu": (own1 - own0) / wall,
            "pairs": pairs, "errors": errors, **stats.latencies()}


async def direct_baseline(video, audio, duration: float,
                          make: Callable[[], RTCPeerConnection] = peer_connection) -> dict:
    """Publisher -> subscriber over one direct aiortc connection (made by `make`): the
    latency floor."""
    sent: dict[int, float] = {}
    stats = Stats()
    sender_pc, receiver_pc = make(), make()
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
    pair = selected_pair_types(sender_pc)
    await sender_pc.close()
    await receiver_pc.close()
    return {**stats.latencies(), "pair": "-".join(pair) if pair else "none"}


def relayed_baseline_connection(coturn: Coturn) -> RTCPeerConnection:
    """A relay-only connection with credentials minted as Parley mints a member's."""
    credentials = turn_credentials(TURN_SECRET, "bench-baseline", 600)
    return relay_peer_connection([{"urls": [coturn.url], "username": credentials["username"],
                                   "credential": credentials["credential"]}])


def print_header(turn: bool) -> None:
    print(f"{'N':>2} {'worker CPU':>10} {'streams':>7} {'streams/core':>12} "
          f"{'video rx':>8} {'ready s':>7} {'video fps med/min':>17} {'video p50/p95 ms':>16} "
          f"{'added p50':>9} "
          f"{'audio p50/p95 ms':>16} {'coturn CPU' if turn else '':>10} {'bench CPU':>9}  "
          f"selected pairs (participant side)", flush=True)


def print_row(r: dict, base: dict) -> None:
    turn = f"{r['turn_cpu'] * 100:>9.0f}%" if r["turn_cpu"] is not None else f"{'':>10}"
    pairs = ", ".join(f"{pair} x{n}" for pair, n in sorted(r["pairs"].items()))
    rx = f"{r['video_streams_seen']}/{r['streams'] // 2}"
    print(f"{r['size']:>2} {r['cpu'] * 100:>9.0f}% {r['streams']:>7} "
          f"{r['per_core']:>12.0f} {rx:>8} {r['ready']:>7.1f} "
          f"{r['fps_median']:>9.1f}/{r['fps_min']:<7.1f} "
          f"{r['v50']:>7.1f}/{r['v95']:<8.1f} {r['v50'] - base['v50']:>9.1f} "
          f"{r['a50']:>7.1f}/{r['a95']:<8.1f} {turn} {r['bench_cpu'] * 100:>8.0f}%  {pairs}"
          + (f"; errors: {dict(r['errors'])}" if r["errors"] else ""), flush=True)


def print_baseline(label: str, base: dict) -> None:
    print(f"{label}: video p50 {base['v50']:.1f} ms p95 {base['v95']:.1f} ms, "
          f"audio p50 {base['a50']:.1f} ms p95 {base['a95']:.1f} ms (pair {base['pair']})",
          flush=True)


SDP_HEAD = "v=0\r\no=- 1 1 IN IP4 0.0.0.0\r\ns=-\r\nt=0 0\r\n"
AUDIO_SECTION = "m=audio 9 UDP/TLS/RTP/SAVPF 111\r\n"


async def real_offer() -> str:
    """An aiortc publish offer (audio + video), as a client would send it."""
    pc = peer_connection()
    pc.addTrack(PacketSource("audio", [b"\0"], 0.02, {}))
    pc.addTrack(PacketSource("video", [b"\0"], 1 / FPS, {}))
    await pc.setLocalDescription(await pc.createOffer())
    sdp = pc.localDescription.sdp
    await pc.close()
    return sdp


def hostile_offers(valid: str) -> dict[str, str]:
    """The `sdp` of each hostile publish, by name."""
    unapplicable = "".join(line for line in valid.splitlines(keepends=True)
                           if not line.startswith(("a=fingerprint:", "a=ice-ufrag:")))
    return {
        # ~62 KB, just under the 64 KiB SDP limit: 1,900 audio sections
        "m-line bomb": SDP_HEAD + AUDIO_SECTION * 1900,
        "oversize sdp (70 KB)": SDP_HEAD + AUDIO_SECTION + "a=x-pad:" + "x" * 70_000 + "\r\n",
        "oversize frame (200 KB)": SDP_HEAD + AUDIO_SECTION + "a=x-pad:" + "x" * 200_000,
        "garbage": SDP_HEAD + "m=audio nonsense\r\n" + "a=rtpmap:\x01\r\nc=IN\r\n" * 200,
        "unapplicable (no ICE ufrag, no fingerprint)": unapplicable,
    }


class Hostile:
    """A member that joins, then sends `offers` round after round at `rate` frames/s,
    counting what comes back."""

    def __init__(self, base_url: str, slug: str, session_id: str):
        self.base_url, self.slug, self.session_id = base_url, slug, session_id
        self.replies: Counter[str] = Counter()
        self.sent = 0
        self.closed: int | None = None

    async def connect(self) -> None:
        netloc = self.base_url.split("://", 1)[1]
        self.socket = await websockets.connect(
            f"ws://{netloc}/ws/sfu/{self.slug}/", origin=self.base_url,
            additional_headers={"Cookie": f"sessionid={self.session_id}"}, max_size=2**20)
        await self.socket.recv()  # hello
        await self.socket.send(json.dumps({"type": "join"}))
        while json.loads(await self.socket.recv())["type"] != "joined":
            pass
        self.reader = asyncio.create_task(self._read())

    async def _read(self) -> None:
        try:
            async for raw in self.socket:
                event = json.loads(raw)
                if event["type"] == "error":
                    by = "worker" if "command" in event else "socket"
                    self.replies[f"{event['code']} ({by})"] += 1
                elif event["type"] not in ("participants",):
                    self.replies[event["type"]] += 1
        except websockets.ConnectionClosed as closed:
            self.closed = closed.rcvd.code if closed.rcvd else None

    async def attack(self, offers: dict[str, str], rounds: int, rate: float,
                     each_round: Callable[[int], None]) -> float:
        """Send every offer `rounds` times, paced at `rate`, calling `each_round(n)` after
        round n; returns the seconds it took."""
        frames = [json.dumps({"type": "publish", "sdp": sdp}) for sdp in offers.values()]
        start = time.monotonic()
        for n in range(rounds * len(frames)):
            await asyncio.sleep(max(0.0, start + n / rate - time.monotonic()))
            await self.socket.send(frames[n % len(frames)])
            self.sent += 1
            if (n + 1) % len(frames) == 0:
                each_round((n + 1) // len(frames))
        return time.monotonic() - start

    def answered(self) -> int:
        return sum(self.replies.values())


async def timed_join(base_url: str, slug: str, publisher: str, video, audio,
                     timeout: float = 5.0) -> dict:
    """One member joins the call: seconds from its `join` to `joined` and to its first audio
    and video frame from `publisher` (a member id); it leaves once it has both."""
    session = await guest_session(base_url, slug, "Joiner")
    person = Bencher(base_url, slug, session, video, audio, {}, Stats())
    person.watch = publisher
    task = asyncio.create_task(person.run())
    with contextlib.suppress(AssertionError):  # timed out: that mark stays missing
        await poll(lambda: {"audio", "video"} <= person.marks.keys(), timeout=timeout)
    task.cancel()
    await person.close()
    start = person.marks.get("hello", float("nan"))
    return {key: person.marks.get(key, float("nan")) - start
            for key in ("joined", "audio", "video")}


async def churn(base_url: str, slug: str, publisher: str, video, audio, seconds: float,
                pid: int) -> tuple[list[dict], list[float]]:
    """Members join one after another for `seconds`: their timings, and the worker's VmRSS
    sampled every 50 ms meanwhile."""
    joins: list[dict] = []
    samples: list[float] = []
    end = time.monotonic() + seconds

    async def sample() -> None:
        while time.monotonic() < end:
            samples.append(rss_mib(pid))
            await asyncio.sleep(0.05)

    sampler = asyncio.create_task(sample())
    while time.monotonic() < end:
        joins.append(await timed_join(base_url, slug, publisher, video, audio))
    await sampler
    return joins, samples


def join_summary(label: str, joins: list[dict]) -> str:
    def ms(key: str) -> str:
        values = [j[key] * 1000 for j in joins if j[key] == j[key]]  # drop NaN (none seen)
        missing = len(joins) - len(values)
        text = f"{statistics.median(values):.0f}/{pct(values, 0.99):.0f}" if values else "-"
        return text + (f" ({missing} none in 5 s)" if missing else "")

    return (f"{label} ({len(joins)} joins): join->joined median/p99 {ms('joined')} ms, "
            f"->first audio {ms('audio')} ms, ->first video {ms('video')} ms")


async def hostile_publisher(deploy: Deployment, database: LiveDatabase, video, audio,
                            rounds: int) -> None:
    """The hostile-publisher section (printed as it goes): a quiet phase of join churn, then
    the same churn during the attack, so the worker memory that joins alone cost is seen."""
    from django.conf import settings

    rate = settings.PARLEY["SIGNAL_RATE_PER_SECOND"]
    burst = settings.PARLEY["SIGNAL_RATE_BURST"]
    server = DaphneProcess.start(database.url, {"REDIS_URL": deploy.redis.url,
                                                "LOG_LEVEL": "WARNING"})
    pid = deploy.worker.process.pid
    try:
        base_url = server.base_url
        slug = await create_public_room(base_url, "sfu bench hostile")
        publisher = Bencher(base_url, slug, await guest_session(base_url, slug, "Publisher"),
                            video, audio, {}, Stats())
        publisher_task = asyncio.create_task(publisher.run())
        await asyncio.sleep(WARMUP)
        hostile = Hostile(base_url, slug, await guest_session(base_url, slug, "Hostile"))
        await hostile.connect()
        offers = hostile_offers(await real_offer())
        pace = rate * 0.95  # the sustained rate, a little under it so no frame is refused
        seconds = rounds * len(offers) / pace
        print(f"hostile publisher: {rounds} rounds of {len(offers)} publish offers "
              f"({', '.join(f'{name}: {len(sdp):,} chars' for name, sdp in offers.items())}) "
              f"at {pace:g}/s (signaling limit {rate:g}/s, burst {burst}), ~{seconds:.0f} s; "
              f"one publisher in the call; meanwhile other members join the call one after "
              f"another (each leaves once it has the publisher's audio and video); the same "
              f"churn first for {seconds:.0f} s without the attack", flush=True)
        start_rss = rss_mib(pid)
        quiet, quiet_samples = await churn(base_url, slug, publisher.member, video, audio,
                                           seconds, pid)
        await asyncio.sleep(2)
        before = rss_mib(pid)
        by_round: dict[int, float] = {}
        marks = {rounds * q // 4 for q in range(1, 5)}

        def each_round(n: int) -> None:
            if n in marks:
                by_round[n] = rss_mib(pid)

        cpu0 = cpu_seconds(pid)
        attack = asyncio.create_task(hostile.attack(offers, rounds, pace, each_round))
        during, samples = await churn(base_url, slug, publisher.member, video, audio,
                                      seconds, pid)
        took = await attack
        cpu_share = (cpu_seconds(pid) - cpu0) / took
        with contextlib.suppress(AssertionError):  # not all answered: the count shows it
            await poll(lambda: hostile.answered() >= hostile.sent, timeout=10)
        await asyncio.sleep(5)
        after = rss_mib(pid)
        closed = "" if hostile.closed is None else f", socket closed {hostile.closed}"
        print(f"  {hostile.sent} offers sent in {took:.1f} s, {hostile.answered()} refused with "
              f"an error event{closed}: "
              + ", ".join(f"{kind} x{n}" for kind, n in sorted(hostile.replies.items())),
              flush=True)
        print(f"  worker RSS (MiB): {start_rss:.0f} at the start of the quiet churn, peak "
              f"{max(quiet_samples):.0f} during it; {before:.0f} before the attack, peak "
              f"{max(samples):.0f} during it, "
              + ", ".join(f"{by_round[n]:.0f} after round {n}" for n in sorted(by_round))
              + f", {after:.0f} 5 s after; worker CPU during the attack {cpu_share * 100:.0f}% "
              "of a core (with the churn)", flush=True)
        print("  " + join_summary("quiet churn", quiet), flush=True)
        print("  " + join_summary("during the attack", during), flush=True)
        chars, sections = publisher.largest_offer
        print(f"  the publisher (in the call throughout, {len(quiet) + len(during)} members came "
              f"and went): largest subscribe offer {chars:,} chars, {sections} media sections; "
              f"errors it got: {dict(Counter(e['code'] for e in publisher.errors)) or 'none'}",
              flush=True)
        publisher_task.cancel()
        await publisher.close()
        with contextlib.suppress(Exception):
            await hostile.socket.close()
    finally:
        server.stop()


def allocation_outcomes(coturn: Coturn) -> Counter[str]:
    """ALLOCATE requests in coturn's log by outcome: granted, or refused with its error."""
    pattern = re.compile(r"incoming packet ALLOCATE processed, (success|error \d+[^\n]*)")
    return Counter(match.group(1).strip() for match in pattern.finditer(coturn.log()))


async def run_pass(database: LiveDatabase, turn: bool, sizes: list[int], video, audio,
                   duration: float, base: dict, hostile_rounds: int, user_quota: str) -> None:
    quota = "" if user_quota == "shipped" else f"user-quota={user_quota}\n"
    with tempfile.TemporaryDirectory(prefix="bench-turn-") as directory, \
            deployment(database, Path(directory) if turn else None, quota) as deploy:
        if deploy.coturn is not None:
            relayed = await direct_baseline(
                video, audio, duration, lambda: relayed_baseline_connection(deploy.coturn))
            print_baseline("direct connection through coturn (both ends relay-only)", relayed)
            shown = quota.strip() + " (0: none)" if quota else "user-quota as shipped"
            print(f"TURN pass: coturn {deploy.coturn.url} (deploy/coturn/turnserver.conf, "
                  f"loopback peers allowed, {shown}); daphne and worker with TURN_SECRET, "
                  "ICE_SERVERS=[] SFU_ICE_SERVERS=[] ICE_TRANSPORT_POLICY=relay; participants "
                  "take their ICE servers and policy from hello (relay candidates only); "
                  "'added' is against the direct loopback baseline", flush=True)
        else:
            print("direct pass: host candidates on loopback", flush=True)
        print_header(turn)
        for size in sizes:
            print_row(await run_room(deploy, size, video, audio, duration), base)
        if deploy.coturn is not None:
            identities = Counter("worker" if i.startswith("sfu-worker-") else "member"
                                 if i != "bench-baseline" else "baseline"
                                 for i in deploy.coturn.allocating_identities())
            print(f"coturn granted allocations: {identities['member']} to members' minted "
                  f"credentials, {identities['worker']} to the worker's (sfu-worker-<id>), "
                  f"{identities['baseline']} to the baseline's; ALLOCATE outcomes: "
                  + ", ".join(f"{k} x{n}" for k, n in sorted(allocation_outcomes(
                      deploy.coturn).items())), flush=True)
        if not turn and hostile_rounds:
            await hostile_publisher(deploy, database, video, audio, hostile_rounds)


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="2,3,4,6,8")
    parser.add_argument("--duration", type=float, default=10.0)
    parser.add_argument("--passes", default="direct,turn", help="direct, turn or both")
    parser.add_argument("--hostile-rounds", type=int, default=100,
                        help="rounds of hostile offers after the direct pass (0: none)")
    parser.add_argument("--turn-user-quota", default="0",
                        help="coturn user-quota for the TURN pass (0: unlimited) or 'shipped' "
                             "(deploy/coturn/turnserver.conf's: 12 allocations per username, "
                             "and the worker has one username for all its connections)")
    args = parser.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    passes = args.passes.split(",")
    os.environ.setdefault("SECRET_KEY", SERVER_ENV["SECRET_KEY"])  # to read settings.PARLEY

    print("encoding sources once...", flush=True)
    video = encode_video(FPS * 8)
    audio = encode_audio(50 * 8)
    kbps = sum(len(d) for d, _ in video) * 8 / 8 / 1000
    print(f"load shape: each participant publishes VP8 {WIDTH}x{HEIGHT} {FPS} fps (~{kbps:.0f} "
          f"kbit/s, keyframe every {GOP} frames) + Opus 20 ms; receives all others undecoded; "
          f"one worker process, one daphne, Redis; {args.duration:g} s measured after warm-up; "
          f"{os.cpu_count()} cores shared with the {len(sizes)} rooms' clients (and coturn in "
          f"the TURN pass); passes: {', '.join(passes)}", flush=True)
    base = await direct_baseline(video, audio, args.duration)
    print_baseline("direct connection baseline", base)
    database = LiveDatabase.create()
    try:
        for name in passes:
            await run_pass(database, name == "turn", sizes, video, audio, args.duration, base,
                           args.hostile_rounds, args.turn_user_quota)
    finally:
        database.drop()


if __name__ == "__main__":
    asyncio.run(main())
