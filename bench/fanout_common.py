"""What the fan-out benches share (bench/chat_fanout.py, bench/asgi_servers.py, bench/hardening.py).

Two generations: `RoomLoad` / `Tally` / `run_load` (below, the fan-out issue's load: every
client a sender, one fixed total rate, clients on bench/wire.py) and the older `LoadShape` /
`Recorder` / `measure` that bench/hardening.py still uses (a subset of senders, awaitable sends).

The load shape, the senders' fixed-rate schedule, delivery and latency bookkeeping, CPU sampling
of the processes involved, and the results table. Every client runs in the bench process, so
send and receive times come from one clock (`time.perf_counter`).

A message's text is `bench <sender> <index> <perf_counter at send>`; a receiver parses it back,
so latency is receive time minus the sender's send time, for every receiver (the sender too: it
gets its own message back from the room like everybody else).
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import os
import statistics
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field

PREFIX = "bench"


@dataclass(frozen=True)
class LoadShape:
    clients: int  # N, all in one room
    procs: int  # P server processes; clients are spread round-robin over them
    layer: str  # memory | pubsub | core | socketio
    senders: int  # clients 0..senders-1 send (spread over the processes too)
    rate: float  # messages per second per sender
    duration: float  # measured window, seconds
    warmup: float  # seconds of sending before the window (not measured)
    grace: float  # seconds after the last send during which late deliveries still count

    @property
    def warm_count(self) -> int:
        return math.ceil(self.warmup * self.rate)

    @property
    def window_count(self) -> int:
        return max(1, round(self.duration * self.rate))

    @property
    def window_seconds(self) -> float:
        """The measured window: whole sending periods, so it may differ from `duration`."""
        return self.window_count / self.rate

    @property
    def expected_sends(self) -> int:
        return self.senders * self.window_count

    @property
    def expected_deliveries(self) -> int:
        return self.expected_sends * self.clients

    @property
    def expected_rate(self) -> float:
        """Deliveries per second the load asks for (every client receives every message)."""
        return self.senders * self.rate * self.clients


@dataclass
class Recorder:
    """Counts sends and receptions; keeps (send time, latency) of the window's messages."""

    shape: LoadShape
    window_start: float = float("inf")
    window_end: float = float("-inf")
    sent: int = 0  # window messages sent
    send_lags: list[float] = field(default_factory=list)  # actual - scheduled send time
    receptions: int = 0  # every bench message received, window or not
    in_window: int = 0  # receptions whose receive time falls inside the window
    delivered: int = 0  # receptions of window messages (by the end of the grace period)
    samples: list[tuple[float, float]] = field(default_factory=list)  # (sent at, latency)
    target: int | None = None  # deliveries to wait for once sending is over
    complete: asyncio.Event = field(default_factory=asyncio.Event)

    def text(self, sender: int, index: int) -> str:
        return f"{PREFIX} {sender} {index} {time.perf_counter():.6f}"

    def is_window(self, index: int) -> bool:
        return self.shape.warm_count <= index < self.shape.warm_count + self.shape.window_count

    def received(self, text: str) -> None:
        now = time.perf_counter()
        parts = text.split()
        if len(parts) != 4 or parts[0] != PREFIX:
            return
        self.receptions += 1
        if self.window_start <= now < self.window_end:
            self.in_window += 1
        if self.is_window(int(parts[2])):
            sent_at = float(parts[3])
            self.delivered += 1
            self.samples.append((sent_at, now - sent_at))
            if self.target is not None and self.delivered >= self.target:
                self.complete.set()


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far (Linux /proc), 0 when it is gone."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            fields = stat.read().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def system_busy_seconds() -> float:
    """CPU seconds all processes of the machine have spent busy so far (/proc/stat)."""
    with open("/proc/stat") as stat:
        fields = [int(x) for x in stat.readline().split()[1:]]
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)  # idle + iowait
    return (sum(fields[:8]) - idle) / os.sysconf("SC_CLK_TCK")


def wait_for_quiet(limit: float = 30, threshold: float = 15) -> float:
    """Before a run: wait (at most `limit` s) until the rest of the machine uses less than
    `threshold`% of one core over half a second. Returns that last reading, in %."""
    deadline = time.monotonic() + limit
    while True:
        own = cpu_seconds(os.getpid())
        busy = system_busy_seconds()
        time.sleep(0.5)
        other = 100 * ((system_busy_seconds() - busy) - (cpu_seconds(os.getpid()) - own)) / 0.5
        if other < threshold or time.monotonic() > deadline:
            return max(0.0, other)


@dataclass
class Result:
    shape: LoadShape
    sent: int
    delivered: int
    in_window_rate: float
    p50: float | None  # milliseconds
    p99: float | None
    p50_first: float | None  # p50 of the first quarter of the window's messages, ms
    p50_last: float | None  # ... and of the last quarter
    max_send_lag: float  # ms: how late the busiest sender sent (client event loop health)
    cpu: dict[str, float]  # % of one core over the window: bench, server(s), redis, other
    connect_seconds: float
    extra: dict[str, object] = field(default_factory=dict)  # syncs, errors, log findings

    @property
    def lost(self) -> int:
        return self.sent * self.shape.clients - self.delivered  # of the messages actually sent

    @property
    def growing(self) -> bool:
        """Median latency of the window's last quarter over twice (and 50 ms above) the first
        quarter's: a queue building up. Needs 20+ window messages to mean anything."""
        if self.p50_first is None or self.p50_last is None or self.sent < 20:
            return False
        return self.p50_last > 2 * self.p50_first and self.p50_last - self.p50_first > 50

    @property
    def status(self) -> str:
        reasons = []
        if self.sent < self.shape.expected_sends:
            reasons.append("senders fell short")
        if self.lost > 0:
            reasons.append("lost")
        if self.in_window_rate < 0.97 * self.shape.expected_rate:
            reasons.append("rate<expected")
        if self.growing:
            reasons.append("latency growing")
        status = "ok" if not reasons else "SATURATED (" + ", ".join(reasons) + ")"
        if self.cpu.get("other", 0) > 20:
            status += " [other load on the machine]"
        return status


def percentile(values: Sequence[float], q: float) -> float:
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))
    return ordered[index]


async def measure(
    shape: LoadShape,
    senders: Sequence[Callable[[str], Awaitable[None]]],
    recorder: Recorder,
    pids: dict[str, list[int]],
    connect_seconds: float,
) -> Result:
    """Run the fixed-rate senders, wait out the grace period, and sum up the window."""
    assert len(senders) == shape.senders
    total = shape.warm_count + shape.window_count
    t0 = time.perf_counter() + 0.2
    recorder.window_start = t0 + shape.warm_count / shape.rate
    recorder.window_end = recorder.window_start + shape.window_seconds
    spacing = 1 / (shape.senders * shape.rate)  # senders take turns, evenly spaced

    async def sender(k: int, send: Callable[[str], Awaitable[None]]) -> None:
        for j in range(total):
            scheduled = t0 + k * spacing + j / shape.rate
            await asyncio.sleep(max(0.0, scheduled - time.perf_counter()))
            recorder.send_lags.append(time.perf_counter() - scheduled)
            await send(recorder.text(k, j))
            if recorder.is_window(j):
                recorder.sent += 1

    cpu_start: dict[str, float] = {}
    cpu_end: dict[str, float] = {}

    async def sample_cpu() -> None:
        own = [os.getpid()]
        groups = {"bench": own, **pids}
        await asyncio.sleep(max(0.0, recorder.window_start - time.perf_counter()))
        cpu_start.update({name: sum(map(cpu_seconds, ps)) for name, ps in groups.items()})
        cpu_start["all"] = system_busy_seconds()
        await asyncio.sleep(max(0.0, recorder.window_end - time.perf_counter()))
        cpu_end.update({name: sum(map(cpu_seconds, ps)) for name, ps in groups.items()})
        cpu_end["all"] = system_busy_seconds()

    sampler = asyncio.create_task(sample_cpu())
    limit = (total + 1) / shape.rate + 60  # bounded even if sends stall
    async with asyncio.timeout(limit):
        await asyncio.gather(*(sender(k, send) for k, send in enumerate(senders)))
    async with asyncio.timeout(shape.window_seconds + 10):
        await sampler
    recorder.target = recorder.sent * shape.clients
    if recorder.delivered >= recorder.target:
        recorder.complete.set()
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(recorder.complete.wait(), shape.grace)

    cpu = {name: 100 * (cpu_end.get(name, 0) - cpu_start[name]) / shape.window_seconds
           for name in cpu_start}
    # Whatever else ran on the machine during the window (it competes for the same 2 cores).
    cpu["other"] = max(0.0, cpu.pop("all") - sum(cpu.values()))
    samples = sorted(recorder.samples)
    latencies = [lat * 1000 for _, lat in samples]
    quarter = max(1, len(samples) // 4)
    first = [lat * 1000 for _, lat in samples[:quarter]]
    last = [lat * 1000 for _, lat in samples[-quarter:]]
    return Result(
        shape=shape,
        sent=recorder.sent,
        delivered=recorder.delivered,
        in_window_rate=recorder.in_window / shape.window_seconds,
        p50=percentile(latencies, 0.5) if latencies else None,
        p99=percentile(latencies, 0.99) if latencies else None,
        p50_first=statistics.median(first) if first else None,
        p50_last=statistics.median(last) if last else None,
        max_send_lag=max(recorder.send_lags, default=0.0) * 1000,
        cpu=cpu,
        connect_seconds=connect_seconds,
    )


async def bounded_gather(factories: Sequence[Callable[[], Awaitable]], limit: int) -> list:
    """Await each factory's coroutine with at most `limit` in flight; results in order."""
    gate = asyncio.Semaphore(limit)

    async def one(factory):
        async with gate:
            return await factory()

    return await asyncio.gather(*(one(f) for f in factories))


async def close_all(closers: Sequence[Callable[[], Awaitable]], timeout: float = 20) -> None:
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(timeout):
            await bounded_gather(closers, 100)


def fmt(value: float | None, spec: str = ".1f") -> str:
    return "-" if value is None else format(value, spec)


HEADER = (
    f"{'layer':8} {'P':>1} {'N':>4} {'snd':>3} {'rate':>4} {'dur':>4} "
    f"{'expected':>8} {'delivered':>9} {'lost':>6} {'exp/s':>6} {'got/s':>6} "
    f"{'p50 ms':>7} {'p99 ms':>7} {'p50 q1>q4':>11} {'cpu% bench/srv/redis/other':>26} "
    f"{'syncs':>5}  status"
)


def row(result: Result) -> str:
    s = result.shape
    cpu = "/".join(
        fmt(result.cpu.get(name), ".0f") if name in result.cpu else "-"
        for name in ("bench", "server", "redis", "other")
    )
    trend = f"{fmt(result.p50_first)}>{fmt(result.p50_last)}"
    syncs = result.extra.get("syncs", "-")
    return (
        f"{s.layer:8} {s.procs:>1} {s.clients:>4} {s.senders:>3} {s.rate:>4g} "
        f"{s.window_seconds:>4g} {s.expected_deliveries:>8} {result.delivered:>9} "
        f"{result.lost:>6} {s.expected_rate:>6.0f} {result.in_window_rate:>6.0f} "
        f"{fmt(result.p50):>7} {fmt(result.p99):>7} {trend:>11} {cpu:>26} {syncs!s:>5}  "
        f"{result.status}"
    )


# ---- the fan-out issue's load: every client a sender, one total rate (bench/wire.py clients)


@dataclass(frozen=True)
class RoomLoad:
    """`clients` sockets in one room; message m (0, 1, ...) is sent at t0 + m / rate by client
    m % clients, so every client sends and the room gets `rate` messages/s in total."""

    clients: int
    rate: float  # messages per second, all senders together
    duration: float = 20.0  # measured window, seconds
    warmup: float = 2.0
    grace: float = 3.0  # after the last send, late deliveries still count this long
    payload: int = 100  # bytes of message text

    @property
    def warm_count(self) -> int:
        return math.ceil(self.warmup * self.rate)

    @property
    def window_count(self) -> int:
        return max(1, round(self.duration * self.rate))

    @property
    def window_seconds(self) -> float:
        return self.window_count / self.rate

    @property
    def expected_rate(self) -> float:
        return self.rate * self.clients

    @property
    def label(self) -> str:
        return f"{self.clients}x{self.rate:g}/s"


@dataclass
class Tally:
    """Deliveries and latencies of one run. A text is `bench <index> <perf_counter> xxx...`,
    padded to the payload size; the receiver parses index and send time back (one clock)."""

    load: RoomLoad
    window_start: float = float("inf")
    window_end: float = float("-inf")
    sent: int = 0  # window messages sent
    in_window: int = 0  # deliveries received inside the window
    delivered: int = 0  # deliveries of window messages, by the end of the grace period
    latencies: list[float] = field(default_factory=list)  # seconds, window messages
    first_quarter: list[float] = field(default_factory=list)
    last_quarter: list[float] = field(default_factory=list)
    max_lag: float = 0.0  # seconds the scheduler ran behind (client event loop health)
    target: int | None = None
    complete: asyncio.Event = field(default_factory=asyncio.Event)

    def text(self, index: int) -> str:
        head = f"{PREFIX} {index} {time.perf_counter():.6f} "
        return head + "x" * max(0, self.load.payload - len(head))

    def received(self, text: str) -> None:
        """Per delivery, so kept short: one split, two conversions, a few compares."""
        now = time.perf_counter()
        parts = text.split(" ", 3)
        if parts[0] != PREFIX:
            return
        if self.window_start <= now < self.window_end:
            self.in_window += 1
        index = int(parts[1]) - self.load.warm_count
        count = self.load.window_count
        if 0 <= index < count:
            latency = now - float(parts[2])
            self.delivered += 1
            self.latencies.append(latency)
            if index < count // 4:
                self.first_quarter.append(latency)
            elif index >= count - count // 4:
                self.last_quarter.append(latency)
            if self.target is not None and self.delivered >= self.target:
                self.complete.set()


def tree_pids(pid: int) -> list[int]:
    """`pid` and its descendants (granian and tsx run workers as child processes)."""
    found, todo = [], [pid]
    while todo:
        current = todo.pop()
        found.append(current)
        try:
            for task in os.listdir(f"/proc/{current}/task"):
                with open(f"/proc/{current}/task/{task}/children") as children:
                    todo.extend(int(c) for c in children.read().split())
        except OSError:
            continue
    return found


def tree_cpu_seconds(pids: Sequence[int]) -> float:
    return sum(cpu_seconds(p) for pid in pids for p in tree_pids(pid))


@dataclass
class LoadResult:
    load: RoomLoad
    sent: int
    delivered: int
    rate: float  # deliveries/s received during the window
    p50: float | None  # ms
    p99: float | None
    p50_first: float | None
    p50_last: float | None
    max_lag: float  # ms
    cpu: dict[str, float]  # % of one core over the window: bench, server, redis, other
    unacked: int | None = None  # Parley: messages never acknowledged by the end
    notes: list[str] = field(default_factory=list)

    @property
    def lost(self) -> int:
        return self.sent * self.load.clients - self.delivered

    def us_per_delivery(self, who: str) -> float | None:
        """CPU µs that `who` (server, bench, redis) spent per delivery in the window."""
        if who not in self.cpu or not self.rate:
            return None
        return self.cpu[who] / 100 / self.rate * 1e6

    @property
    def saturated(self) -> list[str]:
        load, reasons = self.load, []
        if self.sent < load.window_count:
            reasons.append("senders fell short")
        if self.lost > 0:
            reasons.append("lost")
        if self.unacked:
            reasons.append("unacknowledged")
        if self.rate < 0.97 * load.expected_rate:
            reasons.append("rate<expected")
        if (self.p50_first is not None and self.p50_last is not None
                and self.p50_last > 2 * self.p50_first and self.p50_last - self.p50_first > 50):
            reasons.append("latency growing")
        return reasons

    @property
    def status(self) -> str:
        status = "ok" if not self.saturated else f"SATURATED ({', '.join(self.saturated)})"
        if self.cpu.get("other", 0) > 20:
            status += " [other load on the machine]"
        return status


async def run_load(
    load: RoomLoad, senders: Sequence[Callable[[str], None]], tally: Tally,
    pids: dict[str, list[int]],
) -> LoadResult:
    """Send at the fixed total rate from one scheduler (a send is a buffered socket write),
    sample CPU over the window, wait out the grace period, and sum up."""
    total = load.warm_count + load.window_count
    t0 = time.perf_counter() + 0.2
    tally.window_start = t0 + load.warm_count / load.rate
    tally.window_end = tally.window_start + load.window_seconds
    cpu_start: dict[str, float] = {}
    cpu_end: dict[str, float] = {}
    groups = {"bench": [os.getpid()], **pids}

    async def sample(into: dict[str, float], at: float) -> None:
        await asyncio.sleep(max(0.0, at - time.perf_counter()))
        # The bench process alone: the servers it started are its descendants.
        into.update({name: tree_cpu_seconds(ps) for name, ps in groups.items()})
        into["bench"] = cpu_seconds(os.getpid())
        into["all"] = system_busy_seconds()

    samplers = [asyncio.create_task(sample(cpu_start, tally.window_start)),
                asyncio.create_task(sample(cpu_end, tally.window_end))]
    count = len(senders)
    for m in range(total):
        due = t0 + m / load.rate
        delay = due - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        else:
            tally.max_lag = max(tally.max_lag, -delay)
        try:
            senders[m % count](tally.text(m))
        except ConnectionError:
            continue
        if load.warm_count <= m:
            tally.sent += 1
    await asyncio.gather(*samplers)
    tally.target = tally.sent * load.clients
    if tally.delivered >= tally.target:
        tally.complete.set()
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(tally.complete.wait(), load.grace)
    cpu = {name: 100 * (cpu_end[name] - cpu_start[name]) / load.window_seconds
           for name in cpu_start}
    cpu["other"] = max(0.0, cpu.pop("all") - sum(cpu.values()))
    ms = sorted(lat * 1000 for lat in tally.latencies)
    return LoadResult(
        load=load, sent=tally.sent, delivered=tally.delivered,
        rate=tally.in_window / load.window_seconds,
        p50=percentile(ms, 0.5) if ms else None, p99=percentile(ms, 0.99) if ms else None,
        p50_first=statistics.median(tally.first_quarter) * 1000 if tally.first_quarter else None,
        p50_last=statistics.median(tally.last_quarter) * 1000 if tally.last_quarter else None,
        max_lag=tally.max_lag * 1000, cpu=cpu,
    )


LOAD_HEADER = (
    f"{'server':28} {'shape':>12} {'exp/s':>7} {'got/s':>7} {'p50 ms':>8} {'p99 ms':>8} "
    f"{'lost':>6} {'unack':>5} {'srv cpu%':>8} {'srv µs/d':>8} {'cli µs/d':>8} "
    f"{'other%':>6} {'ratio p50/p99/µs':>17}  status"
)


def load_row(name: str, r: LoadResult, reference: LoadResult | None = None) -> str:
    """One table line; `reference` (the same shape on the reference server) adds ratios
    (ours over the reference's: 3.0 means three times the reference's latency or CPU)."""
    ratio = "-"
    if reference is not None and reference.p50 and reference.p99 and r.p50 is not None:
        ours, theirs = r.us_per_delivery("server"), reference.us_per_delivery("server")
        cpu = f"{ours / theirs:.1f}" if ours and theirs else "-"
        ratio = f"{r.p50 / reference.p50:.1f}/{r.p99 / reference.p99:.1f}/{cpu}"
    unacked = "-" if r.unacked is None else str(r.unacked)
    return (
        f"{name:28} {r.load.label:>12} {r.load.expected_rate:>7.0f} {r.rate:>7.0f} "
        f"{fmt(r.p50):>8} {fmt(r.p99):>8} {r.lost:>6} {unacked:>5} "
        f"{fmt(r.cpu.get('server'), '.0f'):>8} {fmt(r.us_per_delivery('server')):>8} "
        f"{fmt(r.us_per_delivery('bench')):>8} {fmt(r.cpu.get('other'), '.0f'):>6} "
        f"{ratio:>17}  {r.status}"
    )


def git_describe(root: object) -> str:
    import subprocess

    try:
        return subprocess.run(["git", "describe", "--always", "--dirty"], cwd=root,
                              capture_output=True, text=True, timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown"
