"""What bench/chat_fanout.py and bench/socketio_peer.py share.

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
