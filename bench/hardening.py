"""Resource bounds under abuse (issue #10): what slow readers, crashed transcription sessions
and room-creation spam cost a real daphne, and whether the bounds hold.

Every part starts its own daphne process(es) (tests/support/servers.py: SQLite, embedded
defaults unless said) and measures them from outside: memory is VmRSS from /proc/<pid>/status,
the decoder processes are found through /proc/<pid>/task/*/children. Parts (--parts, in this
order, all by default):

- slow: one daphne (in-memory channel layer), one public room. --clients fast clients
  (rooms.client.RoomClient, one guest session each) each send --rate messages/s of --size
  characters (staggered fixed schedule, bench/fanout_common.measure: --warmup s, then a
  --duration s window, --grace s for late deliveries); every fast client receives every message.
  Plus --stalled readers (tests/test_socket_limits_live.stalled_socket: a 4 KB SO_RCVBUF and
  websockets' max_queue=1; they read `hello`, then nothing). The daphne log says when the bound
  closes a socket ("closing a socket N bytes behind", matched to the reader by its port): all but
  the last stalled reader then resume reading --resume-after s later (a phone that came back),
  reading what was buffered and then the close code; the last one reads only after the run
  (past CLOSE_GRACE_SECONDS, so daphne has dropped it). Run twice: the default bound
  (PARLEY_MAX_OUTBOUND_BYTES 512 KiB) and the bound effectively off (1e9 bytes: the "before").
  Figures: daphne RSS sampled every 0.5 s (before the clients, connected, peak, end, after
  everyone left), the fast clients' delivery latency (send -> applied in seq order, one clock),
  and per stalled reader when it was closed, what it received and its close code.
- crash: one daphne on the offline engine with OFFLINE_PROCESSES=1 (one decoder child; its
  default model, Whisper tiny.en, ~250 MB) and
  TRANSCRIPTION_MAX_SESSIONS_PER_MEMBER=--concurrency. One guest (one member, one key minted by
  POST /api/transcription-session, renewed every 60 s) opens /v1/realtime sessions
  (Authorization: Bearer), --concurrency at a time; a batch may only open once the previous
  batch's slots were released, so slot leaks show as refusals (retried for 30 s, counted). Each
  session waits for `session.created` (its decoder is loaded), then either (abrupt) sends 2.5 s
  of speech, waits for `speech_started` (a turn is open) and vanishes: TCP reset, no close frame;
  or (hostile) sends 1 s of speech and one hostile frame (HOSTILE, in turn) and vanishes the same
  way. --sessions of each kind. RSS of daphne and of the decoder child after one warm-up session,
  after each batch (once both processes are idle), and at the end; growth per crashed session.
  Then: the server's answer to each hostile frame once (read, not vanished), --concurrency
  sessions at once for the same member (all slots free?), and a final session that must
  transcribe speech_pcm24k(["good morning everyone"]) (compared as normalised words).
- spam: (a) one daphne with the default limits (PARLEY_ROOM_CREATE_PER_HOUR 20 per session,
  PARLEY_ROOM_CREATE_PER_HOUR_PER_ADDRESS 60): one client (one session, one address) posts the
  lobby's create form (with CSRF) back to back for --spam-seconds, then --fresh-sessions new
  sessions from the same address post it once each; 302 (created) vs 429 (refused), latency, rooms
  in the database. (b) a second daphne on the same database with both limits at 1,000,000: one
  client creates --creates rooms of one name back to back after 0, 500 and 2,000 copies of that
  name exist (seeded through the ORM in this process), then again after --unrelated rooms of
  other names were added (the slug query's cost in the table's size). Meanwhile, in both (a) and
  (b), a chat client in another room sends --chat-rate messages/s and times send -> `chat.ack`
  (both daphnes run PARLEY_RATE_BURST=100, PARLEY_RATE_PER_SECOND=50 so that client is not
  rate-limited): idle first, then during each phase. Room creation and chat writes share
  Django's one sync thread, so slow creates show up as slow acks.

Default run: about 5 minutes on 2 cores. --save PATH also writes the output to PATH.
Usage: .venv/bin/python bench/hardening.py [--parts slow,crash,spam] [--clients 50] [--rate 1]
    [--size 2000] [--stalled 5] [--duration 20] [--sessions 100] [--concurrency 10]
    [--spam-seconds 10] [--fresh-sessions 100] [--creates 30]
    [--unrelated 30000] [--save bench/results/hardening-<date>.txt]
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import json
import os
import platform
import re
import socket
import statistics
import struct
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import httpx  # noqa: E402
from websockets.asyncio.client import ClientConnection, connect  # noqa: E402
from websockets.exceptions import ConnectionClosed  # noqa: E402

from bench.fanout_common import (  # noqa: E402
    LoadShape,
    Recorder,
    bounded_gather,
    close_all,
    cpu_seconds,
    measure,
    percentile,
    wait_for_quiet,
)
from bench.transcription import git_commit  # noqa: E402
from rooms.client import RoomClient, create_public_room, guest_session  # noqa: E402
from tests.support.servers import (  # noqa: E402
    SERVER_ENV,
    DaphneProcess,
    LiveDatabase,
)
from tests.support.speech import said, speech_pcm24k  # noqa: E402
from tests.test_socket_limits_live import stalled_socket  # noqa: E402

PARTS = ("slow", "crash", "spam")
DEFAULT_BOUND = 512 * 1024
UNBOUNDED = 1_000_000_000
# Only when fast clients send more than 4 msg/s: a room socket's default is 5/s (burst 10).
SLOW_RATE_LIMITS = {"PARLEY_RATE_BURST": "100", "PARLEY_RATE_PER_SECOND": "50"}
MB = 1024 * 1024


# ---------------------------------------------------------------------------------------------
# Measuring processes from outside


def rss_mb(pid: int) -> float | None:
    """Resident memory of a process (VmRSS), MB; None when it is gone."""
    try:
        with open(f"/proc/{pid}/status") as status:
            for line in status:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None


def children(pid: int) -> list[int]:
    found: set[int] = set()
    for task in Path(f"/proc/{pid}/task").glob("*"):
        with contextlib.suppress(OSError):
            found.update(int(child) for child in (task / "children").read_text().split())
    return sorted(found)


def decoder_children(pid: int) -> list[int]:
    """The daphne's multiprocessing children that host decoders (not the resource tracker)."""
    found = []
    for child in children(pid):
        with contextlib.suppress(OSError):
            command = Path(f"/proc/{child}/cmdline").read_bytes()
            if b"spawn_main" in command:
                found.append(child)
    return found


async def wait_idle(pids: list[int], *, below: float = 3.0, limit: float = 20.0) -> float:
    """Wait until `pids` together use under `below`% of a core over 0.5 s (at most `limit` s);
    returns the seconds waited."""
    started = time.monotonic()
    while time.monotonic() - started < limit:
        before = sum(map(cpu_seconds, pids))
        await asyncio.sleep(0.5)
        if 100 * (sum(map(cpu_seconds, pids)) - before) / 0.5 < below:
            break
    return time.monotonic() - started


class Background:
    """A bench helper whose `_run()` loops in a task of its own from start() to stop()."""

    task: asyncio.Task | None = None

    async def _run(self) -> None:
        raise NotImplementedError

    def start(self) -> None:
        self.task = asyncio.create_task(self._run())

    async def stop(self) -> None:
        if self.task is not None:
            self.task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self.task


class RssSampler(Background):
    """VmRSS of one process every `interval` s, on the bench clock."""

    def __init__(self, pid: int, interval: float = 0.5):
        self.pid, self.interval = pid, interval
        self.samples: list[tuple[float, float]] = []

    def sample(self) -> float | None:
        value = rss_mb(self.pid)
        if value is not None:
            self.samples.append((time.perf_counter(), value))
        return value

    async def _run(self) -> None:
        while True:
            self.sample()
            await asyncio.sleep(self.interval)

    def between(self, start: float, end: float) -> list[tuple[float, float]]:
        return [(t, v) for t, v in self.samples if start <= t <= end]


def ms(values: list[float], q: float) -> str:
    return "-" if not values else f"{percentile(values, q) * 1000:.1f}"


def header(part: str, title: str) -> None:
    print(f"\n== hardening bench, part {part}: {title}", flush=True)
    database = "PostgreSQL" if os.environ.get("DATABASE_URL", "").startswith("postgres") \
        else "SQLite (WAL)"
    print(f"commit {git_commit()}; {time.strftime('%Y-%m-%d %H:%M')}; nproc "
          f"{len(os.sched_getaffinity(0))}, Python {platform.python_version()}, database "
          f"{database}; the rest of the machine used {wait_for_quiet():.0f}% of one core just "
          "before", flush=True)


# ---------------------------------------------------------------------------------------------
# Part "slow": a busy room with stalled readers, with and without the outbound bound

CLOSING = re.compile(r"closing a socket (\d+) bytes behind \(\['[^']*', (\d+)\]\)")


class LogWatcher:
    """Follows a daphne log: when (bench clock) the bound closed which socket (by port)."""

    def __init__(self, path: Path):
        self.path = path
        self.offset = path.stat().st_size
        self.closed: dict[int, tuple[float, int]] = {}  # port -> (seen at, unsent bytes)
        self.events: dict[int, asyncio.Event] = {}

    def event(self, port: int) -> asyncio.Event:
        return self.events.setdefault(port, asyncio.Event())

    async def run(self) -> None:
        partial = b""
        while True:
            with self.path.open("rb") as log:
                log.seek(self.offset)
                data = log.read()
            self.offset += len(data)
            now = time.perf_counter()
            lines = (partial + data).split(b"\n")
            partial = lines.pop()
            for line in lines:
                found = CLOSING.search(line.decode(errors="replace"))
                if found:
                    port = int(found.group(2))
                    self.closed[port] = (now, int(found.group(1)))
                    self.event(port).set()
            await asyncio.sleep(0.1)


@dataclass
class Stalled:
    index: int
    socket: ClientConnection
    port: int
    session: str
    never: bool  # reads only after the run
    seqs: list[int] = field(default_factory=list)
    resumed: str = "-"
    frames: int = 0
    chat: int = 0
    received: int = 0  # bytes of text
    last_seq: int | None = None
    last_sent_at: float | None = None  # send time of the last chat message it got
    read_at: float | None = None
    code: int | None = None  # None: still open after reading everything


async def drain(reader: Stalled, quiet: float = 2.0) -> None:
    """Read what is buffered for a stalled reader, then its close code (None when the socket
    is still open and nothing came for `quiet` s)."""
    reader.read_at = time.perf_counter()
    try:
        while True:
            raw = await asyncio.wait_for(reader.socket.recv(), quiet)
            reader.frames += 1
            reader.received += len(raw.encode())
            event = json.loads(raw)
            if event.get("type") == "chat.message":
                reader.chat += 1
                reader.last_seq = event["seq"]
                reader.seqs.append(event["seq"])
                parts = event["text"].split("|", 1)[0].split()
                if len(parts) == 4 and parts[0] == "bench":
                    reader.last_sent_at = float(parts[3])
    except ConnectionClosed:
        reader.code = reader.socket.close_code
    except TimeoutError:
        reader.code = None


async def stalled_reader(reader: Stalled, watcher: LogWatcher, resume_after: float,
                         run_over: asyncio.Event) -> None:
    if not reader.never:
        closed = asyncio.create_task(watcher.event(reader.port).wait())
        over = asyncio.create_task(run_over.wait())
        await asyncio.wait({closed, over}, return_when=asyncio.FIRST_COMPLETED)
        for task in (closed, over):
            task.cancel()
        if reader.port in watcher.closed:
            await asyncio.sleep(resume_after)
        else:
            await run_over.wait()
    else:
        await run_over.wait()
    await drain(reader)


def frame_bytes(messages) -> int:
    """About what messages weigh in a frame (UTF-8, as the server sends them)."""
    return sum(len(json.dumps(m, ensure_ascii=False).encode()) for m in messages)


async def resume(base: str, slug: str, reader: Stalled, last: int) -> str:
    """Reconnect a closed reader as the browser does (`?after=<last seq it saw>`): does it get
    exactly what it missed?"""
    again = RoomClient(base, slug, reader.session, last_seq=reader.last_seq or 0)
    backlogs: list[tuple[bool, int]] = []  # (reset, bytes) per backlog frame applied
    apply_backlog = again._apply_backlog

    def watch(event: dict) -> None:
        backlogs.append((event["reset"], frame_bytes(event["messages"])))
        apply_backlog(event)

    again._apply_backlog = watch
    try:
        await again.connect()
        with contextlib.suppress(TimeoutError):
            await again.wait_for(lambda c: (c.last_seq or 0) >= last or not c.connected,
                                 timeout=20)
        code = None if again.connected else again._socket.close_code
    except ConnectionClosed as closed:
        code = closed.rcvd.code if closed.rcvd else 1006
    finally:
        await again.close()
    first = f"first frame {backlogs[0][1] / 1024:.0f} KB" if backlogs else "no hello"
    if code is not None:
        return f"CLOSED {code} while resuming after={reader.last_seq} ({first})"
    if any(reset for reset, _ in backlogs):
        return f"reset, {len(again.messages)} recent messages (missed > RESUME_LIMIT)"
    complete = sorted(set(reader.seqs) | set(again.messages)) == list(range(1, last + 1))
    return (f"after={reader.last_seq}: +{len(again.messages)} in {len(backlogs)} frames "
            f"({first}), 1..{last} {'complete' if complete else 'INCOMPLETE'}")


async def fresh_join(base: str, slug: str) -> str:
    """A newcomer joins the room after the run: is it served its history, or closed?"""
    client = RoomClient(base, slug, await guest_session(base, slug, "Newcomer"))
    hello: list[int] = []
    apply_hello = client._apply_hello

    async def watch(event: dict) -> None:
        hello.append(frame_bytes(event["messages"]))
        await apply_hello(event)

    client._apply_hello = watch
    try:
        await client.connect()
        await asyncio.sleep(2)
        code = None if client.connected else client._socket.close_code
    except ConnectionClosed as closed:
        code = closed.rcvd.code if closed.rcvd else 1006
    finally:
        await client.close()
    size = f"hello with {len(client.messages)} messages, ~{hello[0] / 1024:.0f} KB" if hello \
        else "no hello"
    return f"{size}; " + ("still connected 2 s later" if code is None else f"CLOSED {code}")


@dataclass
class SlowRun:
    bound: int
    result: object
    rss: dict[str, float]
    peak_at: float
    timeline: list[float]
    stalled: list[Stalled]
    closes: dict[int, tuple[float, int]]
    t0: float
    room_messages: int
    newcomer: str


async def drive_slow(server: DaphneProcess, shape: LoadShape, args, bound: int) -> SlowRun:
    base, pid = server.base_url, server.process.pid
    sampler = RssSampler(pid)
    sampler.start()
    await asyncio.sleep(0.6)
    rss = {"before clients": sampler.sample()}
    slug = await create_public_room(base, "hardening slow readers")
    started = time.perf_counter()
    names = [f"fast{i:02d}" for i in range(shape.clients)] + \
        [f"stalled{i}" for i in range(args.stalled)]
    sessions = await bounded_gather(
        [lambda n=n: guest_session(base, slug, n) for n in names], 5)
    recorder = Recorder(shape)
    clients = [RoomClient(base, slug, session) for session in sessions[: shape.clients]]
    for client in clients:
        client.on_message = lambda message: recorder.received(message["text"].split("|", 1)[0])
    stalled: list[Stalled] = []
    watcher = LogWatcher(server.log_path)
    watching = asyncio.create_task(watcher.run())
    run_over = asyncio.Event()
    readers: list[asyncio.Task] = []
    try:
        await bounded_gather([client.connect for client in clients], 50)
        for i, session in enumerate(sessions[shape.clients:]):
            sock = await stalled_socket(base, slug, session)
            stalled.append(Stalled(i, sock, sock.local_address[1], session,
                                   never=i == args.stalled - 1))
        connect_seconds = time.perf_counter() - started
        await asyncio.sleep(1)
        rss["connected"] = sampler.sample()
        readers = [asyncio.create_task(stalled_reader(r, watcher, args.resume_after, run_over))
                   for r in stalled]

        def sender(client: RoomClient):
            async def send(text: str) -> None:
                text += "|"
                await client.send(text + args.pad * max(0, args.size - len(text)))
            return send

        result = await measure(shape, [sender(c) for c in clients], recorder,
                               {"server": [pid]}, connect_seconds)
        t0 = recorder.window_start - shape.warm_count / shape.rate
        ended = time.perf_counter()
        rss["end of run"] = sampler.sample()
        run_over.set()
        async with asyncio.timeout(60):
            await asyncio.gather(*readers)
        room_messages = max((c.last_seq or 0) for c in clients)
        for reader in stalled:
            if reader.code is not None:
                reader.resumed = await resume(base, slug, reader, room_messages)
        newcomer = await fresh_join(base, slug)
    finally:
        run_over.set()
        for task in readers:
            task.cancel()
        await close_all([client.close for client in clients])
        for reader in stalled:
            with contextlib.suppress(Exception):
                await reader.socket.close()
        watching.cancel()
    await asyncio.sleep(3)
    rss["3 s after all left"] = sampler.sample()
    await sampler.stop()
    during = sampler.between(t0, ended)
    peak_at, peak = max(during, key=lambda s: s[1])
    rss["peak"] = peak
    timeline = [v for t, v in during if round((t - t0) / 0.5) % 4 == 0]
    return SlowRun(bound, result, rss, peak_at - t0, timeline, stalled, watcher.closed, t0,
                   room_messages, newcomer)


def run_slow_once(args, bound: int) -> SlowRun:
    shape = LoadShape(clients=args.clients, procs=1, layer="memory", senders=args.clients,
                      rate=args.rate, duration=args.duration, warmup=args.warmup,
                      grace=args.grace)
    database = LiveDatabase.create()
    server = None
    try:
        limits = SLOW_RATE_LIMITS if args.rate > 4 else {}
        server = DaphneProcess.start(database.url, {
            "PARLEY_MAX_OUTBOUND_BYTES": str(bound), **limits})
        return asyncio.run(drive_slow(server, shape, args, bound))
    finally:
        if server is not None:
            server.stop()
        database.drop()


def report_slow(run: SlowRun, args) -> None:
    r = run.result
    label = "default bound, 512 KiB" if run.bound == DEFAULT_BOUND else \
        f"bound {run.bound} B" if run.bound != UNBOUNDED else "bound off (1e9 B): before"
    print(f"\n-- PARLEY_MAX_OUTBOUND_BYTES={run.bound} ({label})")
    print(f"fast clients: delivered {r.delivered} of {r.sent * r.shape.clients} "
          f"(lost {r.lost}), {r.in_window_rate:.0f} deliveries/s of {r.shape.expected_rate:.0f} "
          f"asked; latency p50 {r.p50:.1f} ms, p99 {r.p99:.1f} ms (p50 first/last quarter "
          f"{r.p50_first:.1f}/{r.p50_last:.1f}); max send lag {r.max_send_lag:.0f} ms; "
          f"status {r.status}")
    print(f"CPU (% of one core over the window): daphne {r.cpu.get('server', 0):.0f}, "
          f"bench {r.cpu.get('bench', 0):.0f}, other {r.cpu.get('other', 0):.0f}; "
          f"room messages {run.room_messages}")
    rss = run.rss
    print(f"daphne RSS MB: before clients {rss['before clients']:.1f}, connected "
          f"{rss['connected']:.1f}, peak {rss['peak']:.1f} (t={run.peak_at:.1f} s), "
          f"end of run {rss['end of run']:.1f}, 3 s after all left "
          f"{rss['3 s after all left']:.1f}")
    print("daphne RSS MB every 2 s from the first send: "
          + " ".join(f"{v:.0f}" for v in run.timeline))
    print(f"{'stalled':9} {'server closed it':>16} {'unsent then':>11} {'read from':>9} "
          f"{'frames':>6} {'chat':>5} {'last seq':>8} {'last sent':>9} {'received':>9} "
          f"{'close':>5}  resumed")
    for reader in run.stalled:
        kind = "never" if reader.never else "resumes"
        closed = run.closes.get(reader.port)
        when = f"t={closed[0] - run.t0:.1f} s" if closed else "-"
        unsent = f"{closed[1] / 1024:.0f} KiB" if closed else "-"
        last_sent = f"t={reader.last_sent_at - run.t0:.1f} s" if reader.last_sent_at else "-"
        code = "open" if reader.code is None else str(reader.code)
        print(f"#{reader.index} {kind:7} {when:>15} {unsent:>11} "
              f"{'t=%.1f s' % (reader.read_at - run.t0):>9} {reader.frames:>6} {reader.chat:>5} "
              f"{reader.last_seq!s:>8} {last_sent:>9} {reader.received / MB:>6.2f} MB "
              f"{code:>5}  {reader.resumed}")
    print(f"a newcomer joining after the run: {run.newcomer}")


def part_slow(args) -> list[SlowRun]:
    header("slow", "per-socket buffer under slow readers")
    frame = len(args.pad.encode()) * args.size + 150  # bytes of a chat.message frame
    rate = args.clients * args.rate
    limits = "PARLEY_RATE_BURST=100, PARLEY_RATE_PER_SECOND=50" if args.rate > 4 else \
        "default rate limits"
    print(f"load: {args.clients} fast clients in one room, each sending {args.rate:g} msg/s of "
          f"{args.size} characters ({args.pad!r} padding: ~{frame / 1024:.0f} KB frames); "
          f"staggered, {rate:g} msg/s in all, {rate * args.clients:.0f} deliveries/s to the "
          f"fast clients, ~{rate * frame / 1024:.0f} KiB/s to each reader; {args.warmup:g} s "
          f"warm-up + {args.duration:g} s window + {args.grace:g} s grace. Plus {args.stalled} "
          f"stalled readers (4 KB SO_RCVBUF, max_queue=1); all but the last resume reading "
          f"{args.resume_after:g} s after the server closes them, the last reads only after "
          f"the run. One daphne, in-memory layer, {limits}. Times t are from the first send.",
          flush=True)
    runs = []
    for bound in (DEFAULT_BOUND, UNBOUNDED):
        run = run_slow_once(args, bound)
        report_slow(run, args)
        runs.append(run)
    bounded, unbounded = runs
    grew = [run.rss["peak"] - run.rss["connected"] for run in runs]
    print(f"\npeak RSS over 'connected': {grew[0]:+.1f} MB with the bound, {grew[1]:+.1f} MB "
          f"without; fast clients p50/p99 {bounded.result.p50:.1f}/{bounded.result.p99:.1f} ms "
          f"with, {unbounded.result.p50:.1f}/{unbounded.result.p99:.1f} ms without", flush=True)
    return runs


# ---------------------------------------------------------------------------------------------
# Part "crash": transcription sessions that vanish, and what the decoder process keeps

HOSTILE = [
    ("session.update audio=5", lambda: json.dumps(
        {"type": "session.update", "session": {"audio": 5}})),
    ("JSON nested 20,000 deep", lambda: '{"type":"session.update","session":'
        + '{"a":' * 20000 + "1" + "}" * 20001),
    ("lone surrogate", lambda: '{"type":"session.update","session":{"type":"\\ud800"}}'),
    ("invalid base64 audio", lambda: json.dumps(
        {"type": "input_audio_buffer.append", "audio": "!!!!"})),
    ("append, 1 MiB + 2 B of audio", lambda: json.dumps(
        {"type": "input_audio_buffer.append",
         "audio": base64.b64encode(bytes(1024 * 1024 + 2)).decode()})),
    ("append, 1,000,000 B (< 1 MiB)", lambda: json.dumps(
        {"type": "input_audio_buffer.append",
         "audio": base64.b64encode(bytes(1_000_000)).decode()})),
    ("append, 780,000 B", lambda: json.dumps(
        {"type": "input_audio_buffer.append",
         "audio": base64.b64encode(bytes(780_000)).decode()})),
    ("binary frame", lambda: os.urandom(4096)),
    ("unknown event type", lambda: json.dumps({"type": "response.create"})),
]


def appends(pcm: bytes, chunk: int = 4800) -> list[str]:
    """Audio as 100 ms `input_audio_buffer.append` events."""
    return [json.dumps({"type": "input_audio_buffer.append",
                        "audio": base64.b64encode(pcm[i:i + chunk]).decode()})
            for i in range(0, len(pcm), chunk)]


class Keys:
    """One guest in one room, and a transcription key for it, renewed when 60 s old."""

    def __init__(self, base_url: str, slug: str):
        self.base_url, self.slug = base_url, slug
        self.http = httpx.AsyncClient(base_url=base_url, follow_redirects=False)
        self.value: str | None = None
        self.minted = 0.0
        self.count = 0

    async def join(self) -> None:
        await self.http.get(f"/rooms/{self.slug}/")
        reply = await self.http.post(
            f"/rooms/{self.slug}/join/",
            data={"name": "Crasher", "csrfmiddlewaretoken": self.http.cookies["csrftoken"]},
            headers={"Referer": f"{self.base_url}/rooms/{self.slug}/"})
        if reply.status_code != 302:
            raise RuntimeError(f"join failed: {reply.status_code}")

    async def key(self) -> str:
        if self.value is None or time.monotonic() - self.minted > 60:
            reply = await self.http.post(
                "/api/transcription-session", json={"room": self.slug, "mode": "proxy"},
                headers={"Referer": f"{self.base_url}/rooms/{self.slug}/",
                         "X-CSRFToken": self.http.cookies["csrftoken"]})
            reply.raise_for_status()
            self.value, self.minted = reply.json()["value"], time.monotonic()
            self.count += 1
        return self.value

    async def close(self) -> None:
        await self.http.aclose()


async def open_session(url: str, key: str, retry_for: float = 30.0
                       ) -> tuple[ClientConnection, int]:
    """A `/v1/realtime` session whose decoder is loaded (`session.created`). While the member
    holds all its slots (`too_many_sessions`) it retries every 0.1 s; returns the socket and
    the number of refusals."""
    refusals = 0
    deadline = time.monotonic() + retry_for
    while True:
        ws = await connect(url, additional_headers={"Authorization": f"Bearer {key}"},
                           max_size=2**22, open_timeout=10)
        event = json.loads(await asyncio.wait_for(ws.recv(), 30))
        if event["type"] == "session.created":
            return ws, refusals
        await ws.close()
        code = (event.get("error") or {}).get("code")
        if code != "too_many_sessions" or time.monotonic() > deadline:
            raise RuntimeError(f"session refused: {event}")
        refusals += 1
        await asyncio.sleep(0.1)


async def wait_event(ws: ClientConnection, kind: str, timeout: float) -> dict | None:
    with contextlib.suppress(TimeoutError, ConnectionClosed):
        async with asyncio.timeout(timeout):
            while True:
                event = json.loads(await ws.recv())
                if event["type"] == kind:
                    return event
    return None


def vanish(ws: ClientConnection) -> None:
    """Drop the connection as a crashed client does: a TCP reset, no close frame."""
    raw = ws.transport.get_extra_info("socket")
    with contextlib.suppress(OSError, AttributeError):
        raw.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    ws.transport.abort()


async def abrupt_session(url: str, key: str, speech: list[str]) -> tuple[int, bool]:
    ws, refusals = await open_session(url, key)
    for frame in speech:
        await ws.send(frame)
    started = await wait_event(ws, "input_audio_buffer.speech_started", 10) is not None
    vanish(ws)
    return refusals, started


async def hostile_session(url: str, key: str, speech: list[str], frame) -> tuple[int, bool]:
    ws, refusals = await open_session(url, key)
    for chunk in speech:
        await ws.send(chunk)
    await ws.send(frame)
    vanish(ws)
    return refusals, True


async def hostile_answer(url: str, key: str, frame) -> str:
    """What the server answers one hostile frame (read this time, not vanished)."""
    ws, _ = await open_session(url, key)
    try:
        await ws.send(frame)
        async with asyncio.timeout(3):
            event = json.loads(await ws.recv())
        error = event.get("error") or {}
        return f"{event['type']} {error.get('code', '')}".strip() + ", socket stays open"
    except ConnectionClosed:
        return f"closed {ws.close_code} {ws.close_reason or ''}".strip()
    except TimeoutError:
        return "no reply in 3 s (taken, as an append is)"
    finally:
        await ws.close()


async def final_session(url: str, key: str, pcm: bytes) -> tuple[str | None, float]:
    ws, _ = await open_session(url, key)
    started = time.perf_counter()
    try:
        for frame in appends(pcm):
            await ws.send(frame)
        event = await wait_event(ws, "conversation.item.input_audio_transcription.completed", 30)
        return (event["transcript"] if event else None), time.perf_counter() - started
    finally:
        await ws.close()


@dataclass
class Snapshot:
    label: str
    crashed: int
    daphne: float
    decoder: float
    decoders: int
    refusals: int = 0
    idle_wait: float = 0.0


async def snapshot(pid: int, label: str, crashed: int, refusals: int = 0) -> Snapshot:
    kids = decoder_children(pid)
    waited = await wait_idle([pid, *kids])
    kids = decoder_children(pid)
    return Snapshot(label, crashed, rss_mb(pid) or 0, sum(rss_mb(k) or 0 for k in kids),
                    len(kids), refusals, waited)


async def drive_crash(server: DaphneProcess, args) -> None:
    base, pid = server.base_url, server.process.pid
    url = f"ws://127.0.0.1:{server.port}/v1/realtime?intent=transcription"
    pcm = speech_pcm24k(["good morning everyone"])
    speech = appends(pcm[: 24000 * 2 * 5 // 2])  # 2.5 s: 1.5 s of silence, then speech
    second = appends(pcm[: 24000 * 2])
    slug = await create_public_room(base, "hardening decoders")
    keys = Keys(base, slug)
    await keys.join()
    snapshots = [Snapshot("daphne started", 0, rss_mb(pid) or 0, 0, 0)]
    try:
        transcript, _ = await final_session(url, await keys.key(), pcm)
        snapshots.append(await snapshot(pid, "after 1 warm-up session", 0))
        print(f"warm-up session transcript: {transcript!r}", flush=True)
        crashed = 0
        started = time.perf_counter()
        for kind in ("abrupt", "hostile"):
            for batch in range(args.sessions // args.concurrency):
                key = await keys.key()
                if kind == "abrupt":
                    jobs = [abrupt_session(url, key, speech) for _ in range(args.concurrency)]
                else:
                    jobs = [hostile_session(url, key, second, HOSTILE[(batch * args.concurrency
                                                                     + i) % len(HOSTILE)][1]())
                            for i in range(args.concurrency)]
                results = await asyncio.gather(*jobs)
                crashed += len(results)
                refusals = sum(r for r, _ in results)
                shot = await snapshot(pid, f"{kind} batch {batch + 1}", crashed, refusals)
                if kind == "abrupt":
                    shot.label += f" ({sum(s for _, s in results)} mid-turn)"
                snapshots.append(shot)
        crash_seconds = time.perf_counter() - started
        await asyncio.sleep(3)
        end = await snapshot(pid, "end: sessions gone, idle, +3 s", crashed)
        snapshots.append(end)

        print(f"{'':36} {'crashed':>7} {'daphne MB':>9} {'decoder MB':>10} {'procs':>5} "
              f"{'slot refusals':>13} {'idle wait':>9}")
        for s in snapshots:
            print(f"{s.label:36} {s.crashed:>7} {s.daphne:>9.1f} {s.decoder:>10.1f} "
                  f"{s.decoders:>5} {s.refusals:>13} {s.idle_wait:>8.1f}s")
        warm = snapshots[1]
        first = next(s for s in snapshots if s.label.startswith("abrupt batch 1"))
        per = lambda a, b, n: (b - a) * 1024 / n  # noqa: E731  KB per session
        batches = [s for s in snapshots if "batch" in s.label]
        slope_d = slope([s.crashed for s in batches], [s.daphne for s in batches])
        slope_c = slope([s.crashed for s in batches], [s.decoder for s in batches])
        print(f"{crashed} crashed sessions in {crash_seconds:.0f} s; growth per crashed session "
              f"(end - warm-up)/{crashed}: daphne {per(warm.daphne, end.daphne, crashed):+.1f} "
              f"KB, decoder {per(warm.decoder, end.decoder, crashed):+.1f} KB; after the first "
              f"batch (end - batch 1)/{crashed - first.crashed}: daphne "
              f"{per(first.daphne, end.daphne, crashed - first.crashed):+.1f} KB, decoder "
              f"{per(first.decoder, end.decoder, crashed - first.crashed):+.1f} KB; "
              f"least-squares slope over the batches: daphne {slope_d * 1024:+.1f} KB, decoder "
              f"{slope_c * 1024:+.1f} KB per session", flush=True)
        print(f"slot refusals while opening (previous batch's slots not yet released): "
              f"{sum(s.refusals for s in snapshots)}; keys minted: {keys.count}")

        print("server's answer to each hostile frame (read this time):")
        for name, make in HOSTILE:
            print(f"  {name:28} -> {await hostile_answer(url, await keys.key(), make())}",
                  flush=True)
        key = await keys.key()
        opened = await asyncio.gather(*(open_session(url, key, retry_for=10)
                                        for _ in range(args.concurrency)),
                                      return_exceptions=True)
        good = [o for o in opened if not isinstance(o, BaseException)]
        print(f"{args.concurrency} sessions at once for the same member afterwards (its limit): "
              f"{len(good)} opened, {sum(r for _, r in good)} refusals on the way")
        for ws, _ in good:
            await ws.close()
        await wait_idle([pid, *decoder_children(pid)])
        transcript, took = await final_session(url, await keys.key(), pcm)
        verdict = "ok" if said(transcript or "") == "good morning everyone" else "FAILED"
        print(f"final session: transcript {transcript!r} in {took:.1f} s "
              f"(speech {len(pcm) / 48000:.1f} s, sent at once): {verdict}")
        last = await snapshot(pid, "after the final sessions", crashed)
        print(f"after the final sessions: daphne {last.daphne:.1f} MB, decoder "
              f"{last.decoder:.1f} MB ({last.decoders} process)", flush=True)
    finally:
        await keys.close()


def slope(xs: list[float], ys: list[float]) -> float:
    if len(xs) < 2:
        return 0.0
    mx, my = statistics.fmean(xs), statistics.fmean(ys)
    den = sum((x - mx) ** 2 for x in xs)
    return sum((x - mx) * (y - my) for x, y in zip(xs, ys, strict=True)) / den if den else 0.0


def part_crash(args) -> None:
    header("crash", "decoder memory after crashed transcription sessions")
    print(f"load: offline engine (its default model), OFFLINE_PROCESSES=1, "
          f"TRANSCRIPTION_MAX_SESSIONS_PER_MEMBER={args.concurrency}; one member; "
          f"{args.sessions} abrupt (2.5 s of speech, wait for speech_started, TCP reset) + "
          f"{args.sessions} hostile (1 s of speech, one hostile frame, TCP reset) sessions, "
          f"{args.concurrency} at a time; hostile frames in turn: "
          + "; ".join(name for name, _ in HOSTILE), flush=True)
    database = LiveDatabase.create()
    server = None
    try:
        server = DaphneProcess.start(database.url, {
            "TRANSCRIPTION_ENGINE": "offline", "OFFLINE_PROCESSES": "1",
            "TRANSCRIPTION_MAX_SESSIONS_PER_MEMBER": str(args.concurrency)})
        asyncio.run(drive_crash(server, args))
        errors = [line for line in server.log().splitlines()
                  if re.search(r"error|exception|traceback", line, re.IGNORECASE)]
        print(f"daphne log: {len(errors)} lines mentioning error/exception"
              + (f", e.g. {errors[0][:160]!r}" if errors else ""))
    finally:
        if server is not None:
            server.stop()
        database.drop()


# ---------------------------------------------------------------------------------------------
# Part "spam": room creation under spam; slug choice against copies and table size


class AckTimer(Background):
    """A chat client in its own room sending at a fixed rate; send -> chat.ack per message,
    tagged with the phase it was sent in."""

    def __init__(self, client: RoomClient, rate: float):
        self.client, self.rate = client, rate
        self.phase = "idle"
        self.sent: dict[str, tuple[float, str]] = {}
        self.latencies: dict[str, list[float]] = {}
        timer = self

        class Acks(dict):
            def __setitem__(self, client_id, seq):
                now = time.perf_counter()
                if client_id in timer.sent:
                    at, phase = timer.sent.pop(client_id)
                    timer.latencies.setdefault(phase, []).append(now - at)
                super().__setitem__(client_id, seq)

        client.acks = Acks()

    async def _run(self) -> None:
        n = 0
        start = time.perf_counter()
        while True:
            n += 1
            await asyncio.sleep(max(0.0, start + n / self.rate - time.perf_counter()))
            client_id = f"ack{n}"
            self.sent[client_id] = (time.perf_counter(), self.phase)
            await self.client.send(f"ack probe {n}", client_id=client_id)

    async def stop(self) -> None:
        await super().stop()
        with contextlib.suppress(TimeoutError):
            await self.client.wait_for(lambda c: not c.outbox, timeout=10)

    def line(self, phase: str) -> str:
        values = self.latencies.get(phase, [])
        return (f"chat acks n={len(values)} p50 {ms(values, 0.5)} ms p99 {ms(values, 0.99)} ms "
                f"max {ms(values, 1.0)} ms")


async def post_create(http: httpx.AsyncClient, name: str) -> tuple[int, float]:
    started = time.perf_counter()
    reply = await http.post("/rooms/", data={"name": name,
                                             "csrfmiddlewaretoken": http.cookies["csrftoken"]},
                            headers={"Referer": f"{http.base_url}/"})
    return reply.status_code, time.perf_counter() - started


def counts_line(results: list[tuple[int, float]]) -> str:
    by_status: dict[int, list[float]] = {}
    for status, took in results:
        by_status.setdefault(status, []).append(took)
    return "; ".join(f"{status}: {len(v)} (p50 {ms(v, 0.5)} ms, p99 {ms(v, 0.99)} ms)"
                     for status, v in sorted(by_status.items()))


async def chat_prober(base: str, rate: float) -> AckTimer:
    slug = await create_public_room(base, "hardening chat probe")
    client = RoomClient(base, slug, await guest_session(base, slug, "Prober"))
    await client.connect()
    timer = AckTimer(client, rate)
    timer.start()
    return timer


async def creator(base: str, *, join: str | None = None,
                  address: str = "127.0.0.1") -> httpx.AsyncClient:
    """An HTTP client with the lobby's CSRF cookie, from `address`; with `join`, it first joins
    that room as a guest, so it has a session (the lobby alone does not start one)."""
    http = httpx.AsyncClient(base_url=base, follow_redirects=False,
                             transport=httpx.AsyncHTTPTransport(local_address=address))
    if join is None:
        await http.get("/")
        return http
    await http.get(f"/rooms/{join}/")
    token = http.cookies["csrftoken"]
    reply = await http.post(f"/rooms/{join}/join/",
                            data={"name": "Spammer", "csrfmiddlewaretoken": token},
                            headers={"Referer": f"{base}/rooms/{join}/"})
    if reply.status_code != 302 or "sessionid" not in http.cookies:
        raise RuntimeError(f"join failed: {reply.status_code}")
    return http


async def back_to_back(http: httpx.AsyncClient, prefix: str, seconds: float
                       ) -> list[tuple[int, float]]:
    results = []
    deadline = time.perf_counter() + seconds
    while time.perf_counter() < deadline:
        results.append(await post_create(http, f"{prefix} {len(results) + 1}"))
    return results


async def drive_spam_limited(server: DaphneProcess, args) -> None:
    base = server.base_url
    timer = await chat_prober(base, args.chat_rate)  # its room is one of 127.0.0.1's 60
    probe = timer.client.slug
    try:
        await asyncio.sleep(3)
        timer.phase = "spam"
        http = await creator(base, join=probe)
        try:
            spam = await back_to_back(http, "spam", args.spam_seconds)
        finally:
            await http.aclose()
        timer.phase = "fresh"
        fresh = []
        for i in range(args.fresh_sessions):
            http = await creator(base, join=probe)
            try:
                fresh.append(await post_create(http, f"fresh {i}"))
            finally:
                await http.aclose()
        timer.phase = "sessionless"
        http = await creator(base, address="127.0.0.2")
        try:
            sessionless = await back_to_back(http, "lobby only", args.spam_seconds / 2)
        finally:
            await http.aclose()
        timer.phase = "after"
        await asyncio.sleep(2)
    finally:
        await timer.stop()
        await timer.client.close()
    print(f"(a1) one guest session (joined a room first), 127.0.0.1, back to back for "
          f"{args.spam_seconds:g} s: {len(spam)} posts ({len(spam) / args.spam_seconds:.0f}/s): "
          f"{counts_line(spam)}")
    print(f"(a2) then {args.fresh_sessions} fresh guest sessions from 127.0.0.1, one post each: "
          f"{counts_line(fresh)}")
    print(f"(a3) one client that only loaded the lobby (CSRF cookie, no session: as "
          f"rooms.client.create_public_room), from 127.0.0.2, back to back for "
          f"{args.spam_seconds / 2:g} s: {len(sessionless)} posts: {counts_line(sessionless)}")
    rooms = await asyncio.to_thread(room_count)
    created = [sum(1 for status, _ in group if status == 302)
               for group in (spam, fresh, sessionless)]
    print(f"     rooms in the database: {rooms} (1 chat probe + {created[0]} + {created[1]} + "
          f"{created[2]})")
    for phase, label in (("idle", "idle, 3 s"), ("spam", "during (a1)"),
                         ("fresh", "during (a2)"), ("sessionless", "during (a3)"),
                         ("after", "after, 2 s")):
        print(f"     {label:12} {timer.line(phase)}")


def setup_django(database_url: str) -> None:
    os.environ.update(SERVER_ENV)
    os.environ["DATABASE_URL"] = database_url
    os.environ["DEBUG"] = "0"
    import logging

    import django

    django.setup()
    # Django's LOGGING gives the root logger a console handler at INFO: keep httpx's request
    # lines out of the results.
    logging.getLogger("httpx").setLevel(logging.WARNING)


def room_count() -> int:
    from django.db import connection

    from rooms.models import Room

    try:
        return Room.objects.count()
    finally:
        connection.close()


def seed(name: str, count: int, *, numbered_from: int = 1) -> None:
    """`count` rooms named `name` with the slugs create_room would give them."""
    from django.db import connection
    from django.utils.text import slugify

    from rooms.models import Room

    base = slugify(name)
    try:
        Room.objects.bulk_create(
            [Room(name=name, slug=base if n == 1 else f"{base}-{n}")
             for n in range(numbered_from, numbered_from + count)], batch_size=1000)
        if connection.vendor == "sqlite":  # daphne's next commit should not pay for this one
            with connection.cursor() as cursor:
                cursor.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    finally:
        connection.close()


async def drive_spam_unlimited(server: DaphneProcess, args) -> None:
    base = server.base_url
    levels = [("standup a", 0), ("standup b", 500), ("standup c", 2000)]
    for name, copies in levels:
        await asyncio.to_thread(seed, name, copies)
    timer = await chat_prober(base, args.chat_rate)
    rows = []
    try:
        await asyncio.sleep(3)
        async with httpx.AsyncClient(base_url=base, follow_redirects=False) as http:
            await http.get("/")
            phases = [(name, copies) for name, copies in levels]
            phases += [("standup d", 0), ("standup c", 2000 + args.creates)]
            for index, (name, copies) in enumerate(phases):
                if index == len(levels):
                    timer.phase = "seeding"
                    await asyncio.to_thread(seed, "unrelated", args.unrelated)
                    await asyncio.sleep(1)
                rooms = await asyncio.to_thread(room_count)
                phase = f"{name} after {copies}"
                timer.phase = phase
                results = [await post_create(http, name) for _ in range(args.creates)]
                timer.phase = f"between {index}"
                await asyncio.sleep(0.5)
                rows.append((name, copies, rooms, results, phase))
        timer.phase = "after"
        await asyncio.sleep(2)
    finally:
        await timer.stop()
        await timer.client.close()
    print(f"(b) limits at 1,000,000; {args.creates} creates of one name back to back per row")
    print(f"    idle before:  {timer.line('idle')}")
    print(f"    {'name':10} {'copies':>6} {'rooms in table':>14}  create p50 / p99 ms  "
          "chat acks meanwhile")
    for name, copies, rooms, results, phase in rows:
        took = [t for s, t in results if s == 302]
        bad = len(results) - len(took)
        note = f" ({bad} not 302)" if bad else ""
        print(f"    {name:10} {copies:>6} {rooms:>14}  {ms(took, 0.5):>7} / {ms(took, 0.99):>7}"
              f"{note}   {timer.line(phase)}")
    print(f"    after, 2 s:   {timer.line('after')}", flush=True)


def part_spam(args) -> None:
    header("spam", "room creation under spam")
    print(f"load: (a) default limits; one guest session posting the create form back to back "
          f"for {args.spam_seconds:g} s, then {args.fresh_sessions} fresh guest sessions once "
          f"each, from 127.0.0.1; then a client without a session from 127.0.0.2 for "
          f"{args.spam_seconds / 2:g} s; (b) limits off; {args.creates} creates per row after "
          f"0/500/2000 copies, then after {args.unrelated} unrelated rooms; chat probe "
          f"{args.chat_rate:g} msg/s in its own room throughout (PARLEY_RATE_BURST=100, "
          "PARLEY_RATE_PER_SECOND=50)",
          flush=True)
    database = LiveDatabase.create()
    setup_django(database.url)
    chat_limits = {"PARLEY_RATE_BURST": "100", "PARLEY_RATE_PER_SECOND": "50"}
    servers = []
    try:
        limited = DaphneProcess.start(database.url, chat_limits)
        servers.append(limited)
        asyncio.run(drive_spam_limited(limited, args))
        limited.stop()
        unlimited = DaphneProcess.start(database.url, {
            **chat_limits, "PARLEY_ROOM_CREATE_PER_HOUR": "1000000",
            "PARLEY_ROOM_CREATE_PER_HOUR_PER_ADDRESS": "1000000"})
        servers.append(unlimited)
        asyncio.run(drive_spam_unlimited(unlimited, args))
    finally:
        for server in servers:
            server.stop()
        database.drop()


# ---------------------------------------------------------------------------------------------


class Tee:
    def __init__(self, stream, path: Path):
        self.stream, self.file = stream, path.open("w")

    def write(self, text: str) -> int:
        self.stream.write(text)
        self.file.write(text)
        return len(text)

    def flush(self) -> None:
        self.stream.flush()
        self.file.flush()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--parts", default=",".join(PARTS),
                        type=lambda t: [p for p in t.split(",") if p])
    parser.add_argument("--clients", type=int, default=30)
    parser.add_argument("--rate", type=float, default=1.0, help="msg/s per fast client")
    parser.add_argument("--size", type=int, default=4000, help="characters per message")
    parser.add_argument("--pad", default="\u20ac",
                        help="character filling messages up to --size (default the euro sign: "
                             "3 bytes in UTF-8, so 12 KB frames, the largest chat frames)")
    parser.add_argument("--stalled", type=int, default=5)
    parser.add_argument("--resume-after", type=float, default=2.0)
    parser.add_argument("--duration", type=float, default=20.0)
    parser.add_argument("--warmup", type=float, default=2.0)
    parser.add_argument("--grace", type=float, default=3.0)
    parser.add_argument("--sessions", type=int, default=100, help="crashed sessions per kind")
    parser.add_argument("--concurrency", type=int, default=10)
    parser.add_argument("--spam-seconds", type=float, default=10.0)
    parser.add_argument("--fresh-sessions", type=int, default=100)
    parser.add_argument("--creates", type=int, default=100)
    parser.add_argument("--unrelated", type=int, default=30000)
    parser.add_argument("--chat-rate", type=float, default=20.0)
    parser.add_argument("--save", type=Path, help="also write the output to this file")
    args = parser.parse_args()
    unknown = set(args.parts) - set(PARTS)
    if unknown:
        parser.error(f"unknown parts: {', '.join(sorted(unknown))}")
    if args.save:
        sys.stdout = Tee(sys.stdout, args.save)
    started = time.monotonic()
    print(f"hardening bench (issue #10), parts {','.join(args.parts)}; "
          f"{time.strftime('%Y-%m-%d %H:%M')}", flush=True)
    for part in PARTS:
        if part in args.parts:
            {"slow": part_slow, "crash": part_crash, "spam": part_spam}[part](args)
    print(f"\ntotal wall time {time.monotonic() - started:.0f} s", flush=True)


if __name__ == "__main__":
    main()
