"""Chat fan-out: one room, every client a sender, Parley side by side with the reference server.

The fan-out issue's benchmark. A shape "C x R/s" is C sockets in one room and R messages/s in
total: message m is sent at t0 + m/R by client m % C (so every client sends), 100-byte texts,
and every client, the sender included, receives every message: C x R deliveries/s. Shapes
10x100, 50x100, 200x50, 200x100 by default, then a saturation sweep at 200 clients (the rate
stepped up until a step saturates), then optionally `--members 1000`: 1,000 sockets in one room,
one message at a time, the time until its last recipient has it (median over --broadcasts).

Parley rows, for every --database x --layers x --procs (the in-memory layer with 1 process
only: it cannot span processes), each on fresh servers: a new migrated database, a new
redis-server for `redis` (REDIS_URL, the variable daphne reads; REDIS_LAYER passes through
from the environment when set), P daphne processes as tests/support/servers.py starts them.
Clients join as min(C, 20) guest sessions over HTTP (several sockets are tabs of one
participant) and are spread round-robin over the processes. A client applies messages in seq
order, buffers gaps and sends `chat.sync` after 700 ms as the browser does, unwraps `batch`
events, and counts acks: a message still unacknowledged at the end is counted in `unack`.
The per-connection rate limit is raised to 1000/s (10x100/s is 10 messages/s per client) and
the heartbeat is --heartbeat (default 60 s: the bench opens every socket within seconds, so
production's 15 s would arrive as one synchronized wave inside the window).

Reference rows (only with --reference-url and --reference-pid): the tutorial's Socket.IO server
(../shared/notes/reference-server.md), already running; the bench neither builds nor starts
it. It broadcasts to every socket it has, so nothing else should be connected to it.

Latency: send to the receiving client applying the message (in seq order for Parley), one
clock. CPU: % of one core over the window; µs/d = CPU µs per delivery of the server processes
(and their children) and of this bench process (all clients, bench/wire.py). Ratio: Parley over
the reference row of the same shape (p50 / p99 / server µs per delivery). A row is SATURATED
when anything is lost or unacknowledged, the senders fall behind, fewer deliveries/s arrive
than the load asks for, or the median latency of the window's last quarter is over twice the
first quarter's. Each row first waits (at most 30 s) for the machine to be quiet.

Usage: .venv/bin/python bench/chat_fanout.py [--quick] [--shapes 10x100,50x100,200x50,200x100]
    [--sweep 25,50,...] [--procs 1,2] [--layers memory,redis] [--database sqlite,postgres]
    [--members 1000] [--reference-url ws://127.0.0.1:3000 --reference-pid PID]
    [--duration 20] [--sweep-duration 10] [--no-parley] [--wait-for FILE]
PostgreSQL: DATABASE_URL (a postgres:// URL the bench may create databases on), else
postgres://postgres@127.0.0.1:5432/postgres when it answers (as .ci/run); each row gets a fresh
database, dropped afterwards.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime
import os
import platform
import re
import statistics
import sys
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.fanout_common import (  # noqa: E402
    LOAD_HEADER,
    PREFIX,
    LoadResult,
    RoomLoad,
    Tally,
    bounded_gather,
    git_describe,
    load_row,
    percentile,
    run_load,
    system_busy_seconds,
    tree_cpu_seconds,
    wait_for_quiet,
)
from bench.wire import RoomSocket, SocketIOClient  # noqa: E402
from rooms.client import create_public_room, guest_session  # noqa: E402
from tests.support.servers import DaphneProcess, LiveDatabase, RedisServer  # noqa: E402

SESSIONS = 20  # guest joins per run; client i is a tab of session i % SESSIONS
CONNECT_CONCURRENCY = 50
SERVER_ENV = {"PARLEY_RATE_BURST": "1000", "PARLEY_RATE_PER_SECOND": "1000"}
DEFAULT_POSTGRES = "postgres://postgres@127.0.0.1:5432/postgres"
LOG_PATTERN = re.compile(
    r"error|exception|unavailable|failed|could not|over capacity|warning", re.IGNORECASE
)


@dataclass(frozen=True)
class Config:
    """Which server a row runs on."""

    kind: str  # parley | reference
    layer: str = "-"  # memory | redis
    procs: int = 1
    database: str = "-"  # sqlite | postgres

    @property
    def name(self) -> str:
        if self.kind == "reference":
            return "reference (Node, Socket.IO)"
        return f"parley {self.layer} P={self.procs} {self.database}"


# ---- clients


async def connect_parley(
    servers: list[DaphneProcess], clients: int, on_message: Callable[[dict], None]
) -> list[RoomSocket]:
    base = servers[0].base_url
    slug = await create_public_room(base, "bench fanout")
    count = min(clients, SESSIONS)
    sessions = await bounded_gather(
        [lambda i=i: guest_session(base, slug, f"bench{i:02d}") for i in range(count)], 5)
    sockets = [RoomSocket(servers[i % len(servers)].base_url, slug, sessions[i % count],
                          on_message) for i in range(clients)]
    async with asyncio.timeout(300):
        await bounded_gather([s.connect for s in sockets], CONNECT_CONCURRENCY)
    return sockets


async def connect_reference(
    url: str, clients: int, on_chat: Callable[[str, str], None]
) -> list[SocketIOClient]:
    sockets = [SocketIOClient(url, on_chat) for _ in range(clients)]
    async with asyncio.timeout(300):
        await bounded_gather([s.connect for s in sockets], CONNECT_CONCURRENCY)
    return sockets


async def close_sockets(sockets: list) -> None:
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(20):
            await bounded_gather([s.close for s in sockets], 200)


def parley_notes(sockets: list[RoomSocket]) -> list[str]:
    batches = sum(s.batches for s in sockets)
    inside = sum(s.batched_events for s in sockets)
    errors = [e.get("code") for s in sockets for e in s.errors]
    return [
        f"frames received {sum(s.frames for s in sockets)}, batch frames {batches} holding "
        f"{inside} events; chat.sync after a gap {sum(s.gap_syncs for s in sockets)}, after a "
        f"heartbeat {sum(s.heartbeat_syncs for s in sockets)}",
        f"errors {len(errors)} {sorted(set(errors))}; sockets closed by the end: "
        f"{sum(not s.connected for s in sockets)}",
    ]


async def wait_for_acks(sockets: list[RoomSocket], limit: float = 3.0) -> int:
    """Acks trail deliveries a little: give the last ones `limit` seconds."""
    for _ in range(round(limit / 0.1)):
        if not any(s.outbox for s in sockets):
            break
        await asyncio.sleep(0.1)
    return sum(len(s.outbox) for s in sockets)


# ---- servers


class ParleyServers:
    """Fresh database, redis-server (redis layer) and P daphne processes for one row."""

    def __init__(self, config: Config, heartbeat: float) -> None:
        self.config, self.heartbeat = config, heartbeat
        self.database: LiveDatabase | None = None
        self.redis: RedisServer | None = None
        self.servers: list[DaphneProcess] = []

    def __enter__(self) -> ParleyServers:
        saved = os.environ.get("DATABASE_URL")
        try:
            if self.config.database == "postgres":
                os.environ["DATABASE_URL"] = postgres_url()
            else:
                os.environ.pop("DATABASE_URL", None)
            self.database = LiveDatabase.create()
        finally:
            if saved is None:
                os.environ.pop("DATABASE_URL", None)
            else:
                os.environ["DATABASE_URL"] = saved
        env = dict(SERVER_ENV, PARLEY_HEARTBEAT_SECONDS=f"{self.heartbeat:g}")
        if self.config.layer == "redis":
            self.redis = RedisServer.from_env_or_new()
            if not self.redis.owned:  # somebody else's server: start from an empty one
                import redis as redis_py

                redis_py.Redis.from_url(self.redis.url).flushall()
            env["REDIS_URL"] = self.redis.url
        self.servers = [DaphneProcess.start(self.database.url, env)
                        for _ in range(self.config.procs)]
        return self

    @property
    def pids(self) -> dict[str, list[int]]:
        pids = {"server": [s.process.pid for s in self.servers]}
        if self.redis is not None and self.redis.process is not None:
            pids["redis"] = [self.redis.process.pid]
        return pids

    def log_findings(self) -> list[str]:
        """Distinct notable lines (warnings, errors, drops) of the daphne logs."""
        seen: dict[str, int] = {}
        for server in self.servers:
            for line in server.log().splitlines():
                if LOG_PATTERN.search(line) and not line.lstrip().startswith(("raise ", "File ")):
                    key = re.sub(r"\d+", "#", line.strip())[:140]
                    seen[key] = seen.get(key, 0) + 1
        return [f"server log: {count}x {line}" for line, count in list(seen.items())[:4]]

    def __exit__(self, *exc) -> None:
        for server in self.servers:
            server.stop()
            server.log_path.unlink(missing_ok=True)
        if self.redis is not None and self.redis.owned:
            self.redis.stop()
        if self.database is not None:
            self.database.drop()


def postgres_url() -> str:
    url = os.environ.get("DATABASE_URL", "")
    if url.startswith(("postgres://", "postgresql://")):
        return url
    import psycopg

    try:
        with psycopg.connect(DEFAULT_POSTGRES, connect_timeout=3):
            return DEFAULT_POSTGRES
    except psycopg.Error as error:
        raise RuntimeError(f"no PostgreSQL: set DATABASE_URL ({error})") from None


# ---- one row


@dataclass
class Reference:
    url: str
    pid: int


def run_row(config: Config, load: RoomLoad, args, reference: Reference | None) -> LoadResult:
    if config.kind == "reference":
        return asyncio.run(drive_reference(load, reference))
    with ParleyServers(config, args.heartbeat) as servers:
        result = asyncio.run(drive_parley(load, servers))
        result.notes.extend(servers.log_findings())
        return result


async def drive_parley(load: RoomLoad, servers: ParleyServers) -> LoadResult:
    tally = Tally(load)
    sockets = await connect_parley(servers.servers, load.clients,
                                   lambda message: tally.received(message["text"]))
    try:
        result = await run_load(load, [s.send for s in sockets], tally, servers.pids)
        result.unacked = await wait_for_acks(sockets)
        result.notes.extend(parley_notes(sockets))
    finally:
        await close_sockets(sockets)
    return result


async def drive_reference(load: RoomLoad, reference: Reference) -> LoadResult:
    tally = Tally(load)
    sockets = await connect_reference(reference.url, load.clients,
                                      lambda text, _sender: tally.received(text))
    try:
        result = await run_load(load, [s.send for s in sockets], tally,
                                {"server": [reference.pid]})
        result.notes.append(f"sockets closed by the end: {sum(not s.connected for s in sockets)}")
    finally:
        await close_sockets(sockets)
    return result


# ---- --members: one broadcast to a big room


@dataclass
class Broadcasts:
    members: int
    to_last: list[float]  # ms, per broadcast: send to the last recipient
    to_median: list[float]  # ms, per broadcast: send to the median recipient
    missing: int  # deliveries that never came (within 10 s each)
    cpu: float  # server CPU seconds over all broadcasts
    notes: list[str]

    def line(self, name: str, reference: Broadcasts | None) -> str:
        if not self.to_last:
            return f"{name:28} {self.members:>5} members: no broadcast arrived"
        last, mid = statistics.median(self.to_last), statistics.median(self.to_median)
        ratio = ""
        if reference is not None and reference.to_last:
            ratio = f"  ratio {last / statistics.median(reference.to_last):.1f}x"
        cpu = self.cpu / (self.members * len(self.to_last)) * 1e6
        return (f"{name:28} {self.members:>5} members, {len(self.to_last)} broadcasts: to the "
                f"last recipient median {last:.1f} ms (min {min(self.to_last):.1f}, max "
                f"{max(self.to_last):.1f}), to the median recipient {mid:.1f} ms, missing "
                f"{self.missing}, server {cpu:.1f} µs/delivery{ratio}")


class Arrivals:
    """Receive times of the current broadcast; `all_in` is set when every member has it."""

    def __init__(self, members: int) -> None:
        self.members = members
        self.times: list[float] = []
        self.all_in = asyncio.Event()

    def stamp(self, *_: object) -> None:
        self.times.append(time.perf_counter())
        if len(self.times) >= self.members:
            self.all_in.set()


async def broadcasts(
    sockets: list, count: int, pids: list[int], arrivals: Arrivals,
) -> tuple[list[float], list[float], int, float]:
    """Send `count` messages one at a time (from a different socket each time, so from each
    Parley process in turn); each waits, at most 10 s, for every member to have it."""
    to_last, to_median, missing = [], [], 0
    cpu = 0.0
    for k in range(count):
        await asyncio.sleep(0.5)
        arrivals.times.clear()
        arrivals.all_in.clear()
        before = tree_cpu_seconds(pids)
        started = time.perf_counter()
        sockets[k % len(sockets)].send(f"{PREFIX} {k} {started:.6f} " + "x" * 70)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(arrivals.all_in.wait(), 10)
        cpu += tree_cpu_seconds(pids) - before
        times = sorted((t - started) * 1000 for t in arrivals.times)
        missing += len(sockets) - len(times)
        if times:
            to_last.append(times[-1])
            to_median.append(percentile(times, 0.5))
    return to_last, to_median, missing, cpu


def run_members(config: Config, members: int, count: int, args,
                reference: Reference | None) -> Broadcasts:
    async def drive(sockets_factory: Callable[[Arrivals], Awaitable[list]], pids: list[int],
                    notes: Callable[[list], list[str]]) -> Broadcasts:
        arrivals = Arrivals(members)
        sockets = await sockets_factory(arrivals)
        try:
            last, mid, missing, cpu = await broadcasts(sockets, count, pids, arrivals)
            return Broadcasts(members, last, mid, missing, cpu, notes(sockets))
        finally:
            await close_sockets(sockets)

    if config.kind == "reference":
        return asyncio.run(drive(lambda a: connect_reference(reference.url, members, a.stamp),
                                 [reference.pid], lambda s: []))
    with ParleyServers(config, args.heartbeat) as servers:
        return asyncio.run(drive(lambda a: connect_parley(servers.servers, members, a.stamp),
                                 servers.pids["server"], parley_notes))


# ---- main


def configurations(args) -> list[Config]:
    configs = []
    for database in args.database:
        for layer in args.layers:
            for procs in args.procs:
                if layer == "memory" and procs != 1:
                    continue  # the in-memory layer cannot span processes
                configs.append(Config("parley", layer, procs, database))
    return configs


def print_row(name: str, result: LoadResult, reference: LoadResult | None, other: float,
              began: float) -> None:
    print(load_row(name, result, reference), flush=True)
    cpu = ", ".join(f"{name} {result.cpu[name]:.0f}" for name in ("bench", "redis")
                    if name in result.cpu)
    notes = [f"run {time.monotonic() - began:.0f} s, scheduler late by {result.max_lag:.0f} ms "
             f"at worst; p50 first>last quarter {result.p50_first or 0:.1f}>"
             f"{result.p50_last or 0:.1f} ms; cpu% {cpu}"]
    if other >= 15:
        notes.append(f"machine still busy after waiting: {other:.0f}% of a core")
    for note in notes + result.notes:
        print(f"    {note}", flush=True)


def wait_turn(args) -> float:
    """Before each row: wait while --wait-for exists (another job's flag), then for quiet."""
    if args.wait_for:
        while Path(args.wait_for).exists():
            time.sleep(2)
    return wait_for_quiet()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])

    def shapes(text: str) -> list[tuple[int, float]]:
        pairs = []
        for item in text.split(","):
            clients, _, rate = item.partition("x")
            pairs.append((int(clients), float(rate)))
        return pairs

    def words(text: str) -> list[str]:
        return [x for x in text.split(",") if x]

    parser.add_argument("--shapes", type=shapes, default=shapes("10x100,50x100,200x50,200x100"),
                        help="clients x total msgs/s, comma-separated")
    parser.add_argument("--sweep", type=lambda t: [float(x) for x in words(t)],
                        default=[25, 50, 75, 100, 150, 200, 300, 400, 600, 800],
                        help="total msgs/s at --sweep-clients, stepped until one saturates "
                             "('' to skip)")
    parser.add_argument("--sweep-clients", type=int, default=200)
    parser.add_argument("--procs", type=lambda t: [int(x) for x in words(t)], default=[1, 2])
    parser.add_argument("--layers", type=words, default=["memory", "redis"])
    parser.add_argument("--database", type=words, default=["sqlite"])
    parser.add_argument("--members", type=int, default=0,
                        help="also: this many sockets in one room, one broadcast at a time")
    parser.add_argument("--broadcasts", type=int, default=7)
    parser.add_argument("--reference-url", help="the running reference server, ws://host:port")
    parser.add_argument("--reference-pid", type=int, help="its process id (for its CPU)")
    parser.add_argument("--no-parley", action="store_true", help="reference rows only")
    parser.add_argument("--duration", type=float, default=20.0, help="measured seconds")
    parser.add_argument("--sweep-duration", type=float, default=10.0)
    parser.add_argument("--warmup", type=float, default=2.0)
    parser.add_argument("--grace", type=float, default=3.0)
    parser.add_argument("--heartbeat", type=float, default=60.0,
                        help="PARLEY_HEARTBEAT_SECONDS of the daphne processes (15: production)")
    parser.add_argument("--wait-for", help="before each row, wait while this file exists")
    parser.add_argument("--quick", action="store_true",
                        help="debug run: 10x100 and 50x100, 4 s windows, no sweep")
    args = parser.parse_args()
    if args.quick:
        args.shapes = [s for s in args.shapes if s[0] <= 50] or [(10, 100.0)]
        args.duration, args.warmup, args.grace, args.sweep = 4.0, 1.0, 2.0, []
    if bool(args.reference_url) != bool(args.reference_pid):
        parser.error("--reference-url and --reference-pid go together")
    if set(args.layers) - {"memory", "redis"} or set(args.database) - {"sqlite", "postgres"}:
        parser.error("layers: memory, redis; databases: sqlite, postgres")
    reference = Reference(args.reference_url, args.reference_pid) if args.reference_url else None
    configs = [] if args.no_parley else configurations(args)
    if reference is not None:
        configs.insert(0, Config("reference"))

    started = time.monotonic()
    print(f"chat fan-out, {datetime.datetime.now():%Y-%m-%d %H:%M}, commit {git_describe(ROOT)}, "
          f"{os.cpu_count()} cores, Python {platform.python_version()}")
    print(f"load: one room, every client a sender, {args.duration:g} s window "
          f"({args.sweep_duration:g} s in the sweep), {args.warmup:g} s warm-up, "
          f"{args.grace:g} s grace, 100-byte texts; shapes "
          f"{', '.join(f'{c}x{r:g}/s' for c, r in args.shapes)}; sweep at "
          f"{args.sweep_clients} clients: {', '.join(f'{r:g}' for r in args.sweep) or 'none'}")
    print(f"parley: min(C, {SESSIONS}) guest sessions, rate limit 1000/s, heartbeat "
          f"{args.heartbeat:g} s, REDIS_LAYER={os.environ.get('REDIS_LAYER', '(default)')}; "
          f"reference: {reference.url + f' pid {reference.pid}' if reference else 'not given'}")
    busy = system_busy_seconds()
    time.sleep(1)
    print(f"machine before the run: {100 * (system_busy_seconds() - busy):.0f}% of a core busy")
    print(LOAD_HEADER, flush=True)

    rows: dict[tuple[Config, str], LoadResult] = {}

    def one(config: Config, load: RoomLoad) -> LoadResult | None:
        other = wait_turn(args)
        began = time.monotonic()
        try:
            result = run_row(config, load, args, reference)
        except Exception as error:  # one broken configuration should not lose the others
            print(f"{config.name:28} {load.label:>12}  FAILED: {type(error).__name__}: "
                  f"{str(error)[:300]}", flush=True)
            return None
        rows[config, load.label] = result
        ref = rows.get((Config("reference"), load.label)) if config.kind == "parley" else None
        print_row(config.name, result, ref, other, began)
        return result

    for clients, rate in args.shapes:
        load = RoomLoad(clients, rate, args.duration, args.warmup, args.grace)
        for config in configs:
            one(config, load)
    ceilings: dict[str, tuple[float, str]] = {}
    if args.sweep:
        print(f"\nsaturation sweep at {args.sweep_clients} clients", flush=True)
        for config in configs:
            best, at = 0.0, "none"
            for rate in args.sweep:
                load = RoomLoad(args.sweep_clients, rate, args.sweep_duration, args.warmup,
                                args.grace)
                result = one(config, load)
                if result is None or result.saturated:
                    if result is not None:
                        at = f"saturated at {load.label} with {result.rate:.0f}/s"
                    break
                best = max(best, result.rate)
            ceilings[config.name] = (best, at)
        print("\nceiling: best deliveries/s without saturating")
        for name, (best, at) in ceilings.items():
            print(f"  {name:28} {best:>9.0f}  ({at})")
    if args.members:
        print(f"\n{args.members} members in one room, one broadcast at a time", flush=True)
        ref_members = None
        for config in configs:
            wait_turn(args)
            try:
                done = run_members(config, args.members, args.broadcasts, args, reference)
            except Exception as error:
                print(f"{config.name:28} FAILED: {type(error).__name__}: {str(error)[:300]}")
                continue
            if config.kind == "reference":
                ref_members = done
            print(done.line(config.name, ref_members if config.kind == "parley" else None))
            for note in done.notes:
                print(f"    {note}")
    print(f"\ntotal wall time {time.monotonic() - started:.0f} s")


if __name__ == "__main__":
    main()
