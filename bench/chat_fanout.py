"""Chat fan-out: N clients in one room over P daphne processes, per channel layer.

For every combination of --clients (N), --procs (P) and --layers, on fresh servers (a new
migrated database, a new redis-server, P new daphne processes):
- one public room; N room sockets (rooms.client.RoomClient) spread round-robin over the P
  processes, opened at most 50 at a time;
- guests join through the HTTP join form, but only min(N, 20) times: client i uses session
  i % 20, so several clients are tabs of one participant (fewer presence events, same fan-out);
- a fixed subset of --senders clients (clients 0.., alternating between processes, each its own
  session) sends --rate messages/s each, evenly staggered; every client, senders included,
  receives every message, so the load asks for senders x rate x N deliveries/s;
- --warmup seconds of sending, then a --duration window that is measured; deliveries of the
  window's messages still count during --grace seconds after the last send, later ones are lost.

Latency is from the sender's send call to the receiving client applying the message in seq
order (a message that arrives after a gap waits for the gap to be filled by `chat.sync`, as a
user would see it). Deliveries recovered through `chat.sync` count as delivered.

The daphne processes run with PARLEY_RATE_BURST=1000 and PARLEY_RATE_PER_SECOND=1000 so the
per-connection rate limit does not interfere; the heartbeat stays at its default (15 s).

The `socketio` layer is the reference peer (bench/socketio_peer.py): a tutorial-style
python-socketio room broadcast on uvicorn, 1 process, measured with the same load shape.

Usage: .venv/bin/python bench/chat_fanout.py [--quick] [--clients 10,100,500] [--procs 1,2]
    [--layers memory,pubsub,core,socketio] [--senders 10] [--rate 1] [--duration 10]
"""

from __future__ import annotations

import argparse
import asyncio
import datetime
import os
import platform
import re
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from fanout_common import (  # noqa: E402
    HEADER,
    LoadShape,
    Recorder,
    Result,
    bounded_gather,
    close_all,
    fmt,
    measure,
    row,
)

from rooms.client import RoomClient, create_public_room, guest_session  # noqa: E402
from tests.support.servers import DaphneProcess, LiveDatabase, RedisServer  # noqa: E402

SESSIONS = 20  # guest joins per run; client i is a tab of session i % SESSIONS
CONNECT_CONCURRENCY = 50
SERVER_ENV = {
    "PARLEY_RATE_BURST": "1000",
    "PARLEY_RATE_PER_SECOND": "1000",
}
LOG_PATTERN = re.compile(r"Traceback|ERROR|WARNING|over capacity|Exception", re.IGNORECASE)


class BenchClient(RoomClient):
    """RoomClient that counts the `chat.sync` requests it makes (after a gap or a heartbeat)."""

    def __post_init__(self) -> None:
        super().__post_init__()
        self.gap_syncs = 0
        self.heartbeat_syncs = 0

    async def _sync(self) -> None:
        # A gap leaves a message buffered; a heartbeat ahead of us leaves nothing buffered.
        if self._buffered:
            self.gap_syncs += 1
        else:
            self.heartbeat_syncs += 1
        await super()._sync()


def log_findings(servers: list[DaphneProcess]) -> list[str]:
    """Distinct notable lines of the daphne logs (warnings, errors, over-capacity drops)."""
    seen: dict[str, int] = {}
    for server in servers:
        for line in server.log().splitlines():
            if LOG_PATTERN.search(line):
                key = re.sub(r"\d+", "#", line.strip())[:160]
                seen[key] = seen.get(key, 0) + 1
    return [f"{count}x {line}" for line, count in seen.items()]


async def drive_parley(shape: LoadShape, servers: list[DaphneProcess]) -> Result:
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
        pids = {"server": [s.process.pid for s in servers]}
        result = await measure(
            shape, [c.send for c in clients[: shape.senders]], recorder, pids, connect_seconds
        )
    finally:
        await close_all([client.close for client in clients])
    gap = sum(c.gap_syncs for c in clients)
    beat = sum(c.heartbeat_syncs for c in clients)
    result.extra.update({
        "syncs": gap + beat,
        "notes": [
            f"syncs: {gap} after a gap, {beat} after a heartbeat",
            f"client errors: {sum(len(c.errors) for c in clients)}; "
            f"sockets dropped: {sum(1 for c in clients if c.reconnects or not c.hellos)}",
        ],
    })
    return result


def run_parley(shape: LoadShape) -> Result:
    database = LiveDatabase.create()
    redis = None
    servers: list[DaphneProcess] = []
    try:
        env = dict(SERVER_ENV)
        if shape.layer != "memory":
            redis = RedisServer.from_env_or_new()
            if not redis.owned:  # somebody else's server: start from an empty one
                import redis as redis_py

                redis_py.Redis.from_url(redis.url).flushall()
            env |= {"REDIS_URL": redis.url, "REDIS_LAYER": shape.layer}
        servers = [DaphneProcess.start(database.url, env) for _ in range(shape.procs)]
        if redis is not None and redis.process is not None:
            # cpu of redis is sampled by pid in measure(), through this module-level hook
            pass
        result = asyncio.run(drive_parley_with_redis(shape, servers, redis))
        result.extra.setdefault("notes", []).extend(log_findings(servers)[:6])
        return result
    finally:
        for server in servers:
            server.stop()
        if redis is not None and redis.owned:
            redis.stop()
        database.drop()


async def drive_parley_with_redis(shape, servers, redis) -> Result:
    result = await drive_parley(shape, servers)
    return result


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


def comparisons(results: list[Result]) -> list[str]:
    lines = []
    by_key = {(r.shape.layer, r.shape.procs, r.shape.clients): r for r in results}
    for (layer, procs, clients), core in sorted(by_key.items()):
        pubsub = by_key.get(("pubsub", procs, clients))
        if layer != "core" or pubsub is None or not (core.p50 and pubsub.p50):
            continue
        lines.append(
            f"N={clients:>3} P={procs}: pubsub vs core  p50 {fmt(pubsub.p50)} vs {fmt(core.p50)} "
            f"ms (core/pubsub {core.p50 / pubsub.p50:.2f}x), p99 {fmt(pubsub.p99)} vs "
            f"{fmt(core.p99)} ms ({core.p99 / pubsub.p99:.2f}x), got/s "
            f"{pubsub.in_window_rate:.0f} vs {core.in_window_rate:.0f}, lost "
            f"{pubsub.lost} vs {core.lost}, server cpu {fmt(pubsub.cpu.get('server'), '.0f')}% "
            f"vs {fmt(core.cpu.get('server'), '.0f')}%"
        )
    for (layer, procs, clients), peer in sorted(by_key.items()):
        if layer != "socketio" or not peer.p50:
            continue
        for ours in ("memory", "pubsub", "core"):
            mine = by_key.get((ours, 1, clients))
            if mine is None or not mine.p50:
                continue
            lines.append(
                f"N={clients:>3} P=1: {ours} vs socketio  p50 {fmt(mine.p50)} vs "
                f"{fmt(peer.p50)} ms, p99 {fmt(mine.p99)} vs {fmt(peer.p99)} ms, got/s "
                f"{mine.in_window_rate:.0f} vs {peer.in_window_rate:.0f}, server cpu "
                f"{fmt(mine.cpu.get('server'), '.0f')}% vs {fmt(peer.cpu.get('server'), '.0f')}%"
            )
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])

    def numbers(text: str) -> list[int]:
        return [int(x) for x in text.split(",") if x]

    parser.add_argument("--clients", type=numbers, default=[10, 100, 500])
    parser.add_argument("--procs", type=numbers, default=[1, 2])
    parser.add_argument("--layers", type=lambda t: [x for x in t.split(",") if x],
                        default=["memory", "pubsub", "core", "socketio"])
    parser.add_argument("--senders", type=int, default=10)
    parser.add_argument("--rate", type=float, default=1.0, help="messages/s per sender")
    parser.add_argument("--duration", type=float, default=10.0, help="measured seconds")
    parser.add_argument("--warmup", type=float, default=2.0)
    parser.add_argument("--grace", type=float, default=3.0)
    parser.add_argument("--quick", action="store_true",
                        help="debug run: N=10,100, 3 s windows, 1 s warm-up, 2 s grace")
    args = parser.parse_args()
    if args.quick:
        args.clients = [n for n in args.clients if n <= 100] or [10]
        args.duration, args.warmup, args.grace = 3.0, 1.0, 2.0
    unknown = set(args.layers) - {"memory", "pubsub", "core", "socketio"}
    if unknown:
        parser.error(f"unknown layers: {', '.join(sorted(unknown))}")

    started = time.monotonic()
    database = "PostgreSQL" if os.environ.get("DATABASE_URL", "").startswith("postgres") \
        else "SQLite (WAL)"
    print(f"chat fan-out, {datetime.datetime.now():%Y-%m-%d %H:%M}, {os.cpu_count()} cores, "
          f"Python {platform.python_version()}, database {database}")
    print(f"load: {args.senders} senders x {args.rate:g} msg/s each (staggered), all N clients "
          f"in one room receive every message; {args.warmup:g} s warm-up, {args.duration:g} s "
          f"window, {args.grace:g} s grace; min(N, {SESSIONS}) guest sessions shared by the N "
          f"sockets; daphne rate limit raised to 1000/s, heartbeat 15 s")
    print("expected = window messages x N; got/s = deliveries received during the window / "
          "window; p50 q1>q4 = median latency of the first vs last quarter of the window")
    print(HEADER, flush=True)
    results = []
    for shape in configurations(args):
        began = time.monotonic()
        if shape.layer == "socketio":
            import socketio_peer

            result = socketio_peer.run_peer(shape)
        else:
            result = run_parley(shape)
        results.append(result)
        print(row(result), flush=True)
        notes = [f"connect {result.connect_seconds:.1f} s, run {time.monotonic() - began:.0f} s, "
                 f"max send lag {result.max_send_lag:.0f} ms"]
        notes += result.extra.get("notes", [])
        for note in notes:
            print(f"    {note}", flush=True)
    print()
    for line in comparisons(results):
        print(line)
    print(f"total wall time {time.monotonic() - started:.0f} s")


if __name__ == "__main__":
    main()
