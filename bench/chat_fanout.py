"""Chat fan-out: N clients in one room over P daphne processes, per channel layer.

For every combination of --clients (N), --procs (P) and --layers, on fresh servers (a new
migrated database, a new redis-server, P new daphne processes):
- one public room; N room sockets (rooms.client.RoomClient) spread round-robin over the P
  processes, opened at most 50 at a time;
- guests join through the HTTP join form, but only min(N, 20) times: client i uses session
  i % 20, so several clients are tabs of one participant (fewer presence events, same fan-out);
- a fixed subset of --senders clients (clients 0.., alternating between processes, each its own
  session) sends --rate messages/s each, evenly staggered; every client, senders included,
  receives every message, so the load asks for senders x rate x N deliveries/s. The default,
  10 senders x 0.5 msg/s, is 2500 deliveries/s at N=500: what the Redis layers sustain on 2
  cores (10 x 1 msg/s, 5000/s, saturates every Parley configuration; --rate 1 shows it);
- --warmup seconds of sending, then a --duration window that is measured; deliveries of the
  window's messages still count during --grace seconds after the last send, later ones are lost.

Latency is from the sender's send call to the receiving client applying the message in seq
order (a message that arrives after a gap waits for the gap to be filled by `chat.sync`, as a
user would see it). Deliveries recovered through `chat.sync` count as delivered. A row is
SATURATED when messages are lost, fewer deliveries/s arrive during the window than the load
asks for, or the median latency of the window's last quarter is over twice its first quarter's.

The daphne processes run with PARLEY_RATE_BURST=1000 and PARLEY_RATE_PER_SECOND=1000 so the
per-connection rate limit does not interfere, and PARLEY_HEARTBEAT_SECONDS=--heartbeat (default
60, longer than a run: the bench opens all sockets within seconds, so production's 15 s
heartbeats would arrive as one synchronized wave inside the window; --heartbeat 15 includes it).

CPU columns are % of one core during the window: the bench process (all clients), the server
process(es), redis-server, and everything else on the machine (other load skews figures; each
run first waits, at most 30 s, for the machine to be quiet).

The `socketio` layer is the reference peer (bench/socketio_peer.py): a tutorial-style
python-socketio room broadcast on uvicorn, 1 process, measured with the same load shape.

Usage: .venv/bin/python bench/chat_fanout.py [--quick] [--clients 10,100,500] [--procs 1,2]
    [--layers memory,pubsub,core,socketio] [--senders 10] [--rate 0.5] [--duration 10]
    [--warmup 2] [--grace 3] [--heartbeat 60] [--peer-server uvicorn|daphne]
"""

from __future__ import annotations

import argparse
import asyncio
import datetime
import os
import platform
import re
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from statistics import median

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.fanout_common import (  # noqa: E402
    HEADER,
    LoadShape,
    Recorder,
    Result,
    bounded_gather,
    close_all,
    measure,
    row,
    wait_for_quiet,
)
from rooms.client import RoomClient, create_public_room, guest_session  # noqa: E402
from tests.support.servers import DaphneProcess, LiveDatabase, RedisServer  # noqa: E402

SESSIONS = 20  # guest joins per run; client i is a tab of session i % SESSIONS
CONNECT_CONCURRENCY = 50
SERVER_ENV = {
    "PARLEY_RATE_BURST": "1000",
    "PARLEY_RATE_PER_SECOND": "1000",
}  # + PARLEY_HEARTBEAT_SECONDS from --heartbeat
# Django's log lines here carry no level name: match the messages of rooms/ and libraries' errors.
LOG_PATTERN = re.compile(
    r"error|exception|unavailable|failed|could not|over capacity|warning", re.IGNORECASE
)


class BenchClient(RoomClient):
    """RoomClient that counts the `chat.sync` requests it makes (after a gap or a heartbeat),
    and how live `chat.message` frames arrived: skipping ahead of the next seq (a gap), or
    behind one already seen (late: the layer reordered them; a gap never followed by its late
    message was a drop)."""

    def __post_init__(self) -> None:
        super().__post_init__()
        self.gap_syncs = 0
        self.heartbeat_syncs = 0
        self.live_gaps = 0
        self.live_late = 0
        self.max_live: int | None = None
        self._from_backlog = False

    def _apply_backlog(self, event: dict) -> None:
        self._from_backlog = True
        try:
            super()._apply_backlog(event)
        finally:
            self._from_backlog = False
        if self.max_live is None:
            self.max_live = self.last_seq

    def _apply_message(self, message: dict) -> None:
        if not self._from_backlog and self.max_live is not None:
            seq = message["seq"]
            if seq > self.max_live + 1:
                self.live_gaps += 1
            elif seq < self.max_live:
                self.live_late += 1
            self.max_live = max(self.max_live, seq)
        super()._apply_message(message)

    async def _sync(self) -> None:
        # A gap leaves a message buffered; a heartbeat ahead of us leaves nothing buffered.
        if self._buffered:
            self.gap_syncs += 1
        else:
            self.heartbeat_syncs += 1
        await super()._sync()


def log_findings(servers: list[DaphneProcess], marks: list[int]) -> list[str]:
    """Distinct notable lines (warnings, errors, over-capacity drops) of the daphne logs, before
    and after `marks` (each log's size when the measurement ended and the sockets closed)."""
    found = []
    for when in ("during the run", "while the sockets closed"):
        seen: dict[str, int] = {}
        for server, mark in zip(servers, marks, strict=True):
            if not server.log_path.exists():
                continue
            data = server.log_path.read_bytes()
            part = data[:mark] if when == "during the run" else data[mark:]
            for line in part.decode(errors="replace").splitlines():
                if LOG_PATTERN.search(line) and not line.lstrip().startswith(("raise ", "File ")):
                    key = re.sub(r"\d+", "#", line.strip())[:140]
                    seen[key] = seen.get(key, 0) + 1
        found += [f"{when}: {count}x {line}" for line, count in list(seen.items())[:4]]
    return found


async def drive_parley(
    shape: LoadShape, servers: list[DaphneProcess], pids: dict[str, list[int]]
) -> Result:
    base = servers[0].base_url
    slug = await create_public_room(base, "bench fanout")
    started = time.perf_counter()
    count = min(shape.clients, SESSIONS)
    sessions = await bounded_gather(
        [lambda i=i: guest_session(base, slug, f"bench{i:02d}") for i in range(count)], 5
    )
    recorder = Recorder(shape)
    clients = [
        BenchClient(servers[i % len(servers)].base_url, slug, sessions[i % count])
        for i in range(shape.clients)
    ]
    for client in clients:
        client.on_message = lambda message: recorder.received(message["text"])
    try:
        async with asyncio.timeout(300):
            await bounded_gather([client.connect for client in clients], CONNECT_CONCURRENCY)
        connect_seconds = time.perf_counter() - started
        result = await measure(
            shape, [c.send for c in clients[: shape.senders]], recorder, pids, connect_seconds
        )
        dropped = sum(1 for c in clients if not c.connected)
        marks = [server.log_path.stat().st_size for server in servers]
    finally:
        await close_all([client.close for client in clients])
    gap = sum(c.gap_syncs for c in clients)
    beat = sum(c.heartbeat_syncs for c in clients)
    result.extra.update({
        "syncs": gap + beat,
        "notes": [
            f"syncs: {gap} after a gap, {beat} after a heartbeat; live messages that skipped "
            f"ahead: {sum(c.live_gaps for c in clients)}, arrived late (reordered): "
            f"{sum(c.live_late for c in clients)}",
            f"client errors: {sum(len(c.errors) for c in clients)}; "
            f"sockets dropped by the end of the window: {dropped}",
        ],
        "log_marks": marks,
    })
    return result


def run_parley(shape: LoadShape, heartbeat: float) -> Result:
    """One row: fresh database, fresh redis-server (Redis layers), P daphne processes."""
    database = LiveDatabase.create()
    redis = None
    servers: list[DaphneProcess] = []
    try:
        env = dict(SERVER_ENV, PARLEY_HEARTBEAT_SECONDS=f"{heartbeat:g}")
        if shape.layer != "memory":
            redis = RedisServer.from_env_or_new()
            if not redis.owned:  # somebody else's server: start from an empty one
                import redis as redis_py

                redis_py.Redis.from_url(redis.url).flushall()
            env |= {"REDIS_URL": redis.url, "REDIS_LAYER": shape.layer}
        servers = [DaphneProcess.start(database.url, env) for _ in range(shape.procs)]
        pids = {"server": [s.process.pid for s in servers]}
        if redis is not None and redis.process is not None:
            pids["redis"] = [redis.process.pid]
        result = asyncio.run(drive_parley(shape, servers, pids))
        result.extra["notes"].extend(log_findings(servers, result.extra["log_marks"]))
        return result
    finally:
        for server in servers:
            server.stop()
            server.log_path.unlink(missing_ok=True)
        if redis is not None and redis.owned:
            redis.stop()
        database.drop()


def configurations(args) -> list[LoadShape]:
    shapes = []
    for clients in args.clients:
        for layer in args.layers:
            for procs in args.procs:
                if layer in ("memory", "socketio") and procs != 1:
                    continue  # one process only: the in-memory layer cannot span processes
                shapes.append(LoadShape(
                    clients=clients, procs=procs, layer=layer,
                    senders=min(args.senders, clients), rate=args.rate,
                    duration=args.duration, warmup=args.warmup, grace=args.grace,
                ))
    return shapes


@dataclass
class Summary:
    """Medians over the repeats of one configuration."""

    p50: float
    p99: float
    rate: float
    lost: float
    cpu: float
    runs: int


def summarize(results: list[Result]) -> dict[tuple[str, int, int], Summary]:
    groups: dict[tuple[str, int, int], list[Result]] = {}
    for r in results:
        if r.p50 is not None:
            groups.setdefault((r.shape.layer, r.shape.procs, r.shape.clients), []).append(r)
    return {
        key: Summary(
            p50=median(r.p50 for r in rs), p99=median(r.p99 for r in rs),
            rate=median(r.in_window_rate for r in rs), lost=median(r.lost for r in rs),
            cpu=median(r.cpu.get("server", 0) for r in rs), runs=len(rs),
        )
        for key, rs in groups.items()
    }


def comparisons(results: list[Result]) -> list[str]:
    """pubsub vs core, and each Parley layer vs the Socket.IO peer (medians over repeats)."""
    lines = []
    by_key = summarize(results)

    def side_by_side(a: Summary, b: Summary) -> str:
        return (
            f"p50 {a.p50:.1f} vs {b.p50:.1f} ms ({b.p50 / a.p50:.2f}x), p99 {a.p99:.1f} vs "
            f"{b.p99:.1f} ms ({b.p99 / a.p99:.2f}x), got/s {a.rate:.0f} vs {b.rate:.0f}, "
            f"lost {a.lost:.0f} vs {b.lost:.0f}, server cpu {a.cpu:.0f}% vs {b.cpu:.0f}%"
            + (f" (medians of {a.runs} and {b.runs} runs)" if max(a.runs, b.runs) > 1 else "")
        )

    for (layer, procs, clients), core in sorted(by_key.items()):
        pubsub = by_key.get(("pubsub", procs, clients))
        if layer == "core" and pubsub is not None:
            lines.append(f"N={clients:>3} P={procs}: pubsub vs core      "
                         + side_by_side(pubsub, core))
    for (layer, _procs, clients), peer in sorted(by_key.items()):
        if layer != "socketio":
            continue
        for ours in ("memory", "pubsub", "core"):
            mine = by_key.get((ours, 1, clients))
            if mine is not None:
                lines.append(f"N={clients:>3} P=1: socketio vs {ours:6} "
                             + side_by_side(peer, mine))
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])

    def numbers(text: str) -> list[int]:
        return [int(x) for x in text.split(",") if x]

    parser.add_argument("--clients", type=numbers, default=[10, 100, 500])
    parser.add_argument("--procs", type=numbers, default=[1, 2])
    parser.add_argument("--layers", type=lambda t: [x for x in t.split(",") if x],
                        default=["memory", "pubsub", "core"])
    parser.add_argument("--senders", type=int, default=10)
    parser.add_argument("--rate", type=float, default=0.5, help="messages/s per sender")
    parser.add_argument("--duration", type=float, default=10.0, help="measured seconds")
    parser.add_argument("--warmup", type=float, default=2.0)
    parser.add_argument("--grace", type=float, default=3.0)
    parser.add_argument("--heartbeat", type=float, default=60.0,
                        help="PARLEY_HEARTBEAT_SECONDS of the daphne processes (default 60: "
                             "no heartbeat inside a run; 15 is production's)")
    parser.add_argument("--socketio", action="store_true",
                        help="include the socketio reference peer (also in the default layers)")
    parser.add_argument("--peer-server", choices=["uvicorn", "daphne"], default="uvicorn",
                        help="server the socket.io peer runs on")
    parser.add_argument("--repeat", type=int, default=1,
                        help="run the whole set this many times (interleaved); comparisons use "
                             "medians")
    parser.add_argument("--quick", action="store_true",
                        help="debug run: N=10,100, 4 s windows, 2 s warm-up, 2 s grace")
    args = parser.parse_args()
    if args.quick:
        args.clients = [n for n in args.clients if n <= 100] or [10]
        args.duration, args.warmup, args.grace = 4.0, 2.0, 2.0
    if args.socketio and "socketio" not in args.layers:
        args.layers.append("socketio")
    unknown = set(args.layers) - {"memory", "pubsub", "core", "socketio"}
    if unknown:
        parser.error(f"unknown layers: {', '.join(sorted(unknown))}")

    started = time.monotonic()
    try:
        commit = subprocess.run(
            ["git", "describe", "--always", "--dirty"], cwd=ROOT, capture_output=True,
            text=True, timeout=10,
        ).stdout.strip() or "unknown"
    except (OSError, subprocess.SubprocessError):
        commit = "unknown"
    database = "PostgreSQL" if os.environ.get("DATABASE_URL", "").startswith("postgres") \
        else "SQLite (WAL)"
    print(f"chat fan-out, {datetime.datetime.now():%Y-%m-%d %H:%M}, commit {commit}, "
          f"{os.cpu_count()} cores, Python {platform.python_version()}, database {database}")
    print(f"load: {args.senders} senders x {args.rate:g} msg/s each (staggered), all N clients "
          f"in one room receive every message; {args.warmup:g} s warm-up, {args.duration:g} s "
          f"window, {args.grace:g} s grace; min(N, {SESSIONS}) guest sessions shared by the N "
          f"sockets; daphne rate limit raised to 1000/s, heartbeat {args.heartbeat:g} s")
    print("expected = window messages x N; got/s = deliveries received during the window / "
          "window; p50 q1>q4 = median latency of the first vs last quarter of the window")
    print(HEADER, flush=True)
    results = []
    for shape in configurations(args) * max(1, args.repeat):
        other = wait_for_quiet()
        began = time.monotonic()
        try:
            if shape.layer == "socketio":
                raise RuntimeError("the python-socketio peer is gone: the reference is the "
                                   "tutorial's own Node server (bench/wire.py SocketIOClient)")
            result = run_parley(shape, args.heartbeat)
        except Exception as error:  # one broken configuration should not lose the others
            print(f"{shape.layer:8} {shape.procs:>1} {shape.clients:>4}  FAILED: "
                  f"{type(error).__name__}: {str(error)[:300]}", flush=True)
            continue
        results.append(result)
        print(row(result), flush=True)
        notes = [f"connect {result.connect_seconds:.1f} s, run {time.monotonic() - began:.0f} s, "
                 f"max send lag {result.max_send_lag:.0f} ms"]
        if other >= 15:
            notes.append(f"machine still busy after waiting 30 s: {other:.0f}% of a core")
        notes += result.extra.get("notes", [])
        for note in notes:
            print(f"    {note}", flush=True)
    print("\nratios are right/left: above 1 the right-hand side is slower")
    for line in comparisons(results):
        print(line)
    print(f"total wall time {time.monotonic() - started:.0f} s")


if __name__ == "__main__":
    main()
