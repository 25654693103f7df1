"""The ASGI server's share of a room broadcast: a bare broadcasting app on daphne, uvicorn, granian.

No Django, no Channels, no storage: `app` accepts every websocket, keeps the ASGI `send` of
each, and sends every text frame any client sends to every connected socket (the sender
too). What a server costs per delivered frame here is the floor under Parley's own cost on
that server (the fan-out issue, *The ASGI server's share*).

Each server runs in turn, one process, on a free loopback port:
- daphne as Parley runs it (`daphne -b 127.0.0.1 -p PORT bench.asgi_servers:app`);
- uvicorn on the plain asyncio loop with each WebSocket implementation it has
  (`websockets`, `websockets-sansio`, `wsproto`);
- granian `--interface asgi`, one worker, asyncio loop.
The load: --clients sockets (bench/wire.py, all in this process), every one a sender, the
total rate stepped up (--rates, messages/s) until a step saturates (deliveries/s short of
the load, latency growing, or anything lost); the ceiling is the best deliveries/s a server
reached without saturating. CPU is % of one core over the window, server (with its child
processes) and the bench process (all clients); µs/d is CPU µs per delivery.

Usage: .venv/bin/python bench/asgi_servers.py [--servers daphne,uvicorn-websockets,...]
    [--clients 200] [--rates 50,100,200,...] [--duration 5] [--wait-for FILE] [--quick]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime
import os
import platform
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

# ---- the app (imported by the server processes: keep this part free of bench imports)

_sockets: set = set()


async def app(scope, receive, send) -> None:
    """Broadcast every text frame to every socket; answer HTTP with 200 (readiness)."""
    if scope["type"] == "websocket":
        if (await receive())["type"] != "websocket.connect":
            return
        await send({"type": "websocket.accept"})
        _sockets.add(send)
        try:
            while True:
                message = await receive()
                if message["type"] == "websocket.disconnect":
                    return
                text = message.get("text")
                if text is not None:
                    frame = {"type": "websocket.send", "text": text}
                    for other in list(_sockets):
                        try:
                            await other(frame)
                        except Exception:  # closed meanwhile: it leaves the set on its own
                            _sockets.discard(other)
        finally:
            _sockets.discard(send)
    elif scope["type"] == "http":
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(b"content-type", b"text/plain")]})
        await send({"type": "http.response.body", "body": b"ok"})
    elif scope["type"] == "lifespan":
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await send({"type": "lifespan.shutdown.complete"})
                return


# ---- the bench


def commands(port: int) -> dict[str, list[str]]:
    python, bin_dir = sys.executable, Path(sys.executable).parent
    target = "bench.asgi_servers:app"
    uvicorn = [python, "-m", "uvicorn", "--host", "127.0.0.1", "--port", str(port), "--loop",
               "asyncio", "--log-level", "warning", "--no-access-log", "--ws"]
    return {
        "daphne": [python, "-m", "daphne", "-b", "127.0.0.1", "-p", str(port), target],
        "uvicorn-websockets": [*uvicorn, "websockets", target],
        "uvicorn-websockets-sansio": [*uvicorn, "websockets-sansio", target],
        "uvicorn-wsproto": [*uvicorn, "wsproto", target],
        "granian": [str(bin_dir / "granian"), "--interface", "asgi", "--host", "127.0.0.1",
                    "--port", str(port), "--workers", "1", "--loop", "asyncio",
                    "--log-level", "warning", target],
    }


def start(name: str, log_path: Path) -> tuple[subprocess.Popen, int]:
    from tests.support.servers import free_port, wait_until

    port = free_port()
    with log_path.open("ab") as log:
        process = subprocess.Popen(
            commands(port)[name], cwd=ROOT, stdout=log, stderr=subprocess.STDOUT,
            env={**os.environ, "PYTHONPATH": str(ROOT), "PYTHONUNBUFFERED": "1"},
        )

    def ready() -> bool:
        if process.poll() is not None:
            raise RuntimeError(f"{name} exited: {log_path.read_text()[-2000:]}")
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=2) as reply:
            return reply.status == 200

    wait_until(ready, timeout=30, what=name)
    return process, port


async def one_step(port: int, pid: int, load):
    """Connect `load.clients` sockets, run the load, close them."""
    from bench.fanout_common import Tally, bounded_gather, run_load
    from bench.wire import WebSocket

    tally = Tally(load)

    def on_text(payload: bytes) -> None:
        tally.received(payload.decode())

    url = f"ws://127.0.0.1:{port}/"
    sockets = await bounded_gather(
        [lambda: WebSocket.connect(url, on_text)] * load.clients, 50)
    try:
        result = await run_load(load, [s.send_text for s in sockets], tally, {"server": [pid]})
        result.notes.append(f"sockets open at the end: {sum(s.open for s in sockets)}")
    finally:
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(10):
                await asyncio.gather(*(s.close(timeout=3) for s in sockets))
    return result


def main() -> None:
    sys.path.insert(0, str(ROOT))
    from bench.fanout_common import (
        LOAD_HEADER,
        RoomLoad,
        git_describe,
        load_row,
        wait_for_quiet,
    )
    from tests.support.servers import stop_process

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    names = list(commands(0))
    parser.add_argument("--servers", default=",".join(names),
                        help=f"comma-separated, of {', '.join(names)}")
    parser.add_argument("--clients", type=int, default=200)
    parser.add_argument("--rates", default="50,100,200,300,400,600,800,1000,1300,1600",
                        help="total messages/s per step, in order, until one saturates")
    parser.add_argument("--duration", type=float, default=5.0)
    parser.add_argument("--warmup", type=float, default=1.0)
    parser.add_argument("--grace", type=float, default=2.0)
    parser.add_argument("--wait-for", help="before each step, wait while this file exists")
    parser.add_argument("--quick", action="store_true", help="2 s steps, 100 and 200 msgs/s")
    args = parser.parse_args()
    if args.quick:
        args.rates, args.duration = "100,200", 2.0
    rates = [float(r) for r in args.rates.split(",") if r]
    servers = [s for s in args.servers.split(",") if s]
    unknown = set(servers) - set(names)
    if unknown:
        parser.error(f"unknown servers: {', '.join(sorted(unknown))}")

    print(f"ASGI servers, bare broadcasting app, {datetime.datetime.now():%Y-%m-%d %H:%M}, "
          f"commit {git_describe(ROOT)}, {os.cpu_count()} cores, "
          f"Python {platform.python_version()}")
    print(f"load: {args.clients} sockets in this process (bench/wire.py), every one a sender, "
          f"100-byte texts, each sent to all {args.clients}; {args.warmup:g} s warm-up, "
          f"{args.duration:g} s window, {args.grace:g} s grace per step; rates step up "
          f"until one saturates")
    print(LOAD_HEADER, flush=True)
    ceilings: dict[str, float] = {}
    log_path = Path(f"/tmp/asgi-servers-{os.getpid()}.log")
    for name in servers:
        best = 0.0
        for rate in rates:
            load = RoomLoad(clients=args.clients, rate=rate, duration=args.duration,
                            warmup=args.warmup, grace=args.grace)
            while args.wait_for and Path(args.wait_for).exists():
                time.sleep(2)
            other = wait_for_quiet()
            process, port = start(name, log_path)  # fresh per step: no leftovers
            try:
                result = asyncio.run(one_step(port, process.pid, load))
            except Exception as error:
                print(f"{name:28} {load.label:>12}  FAILED: {type(error).__name__}: "
                      f"{str(error)[:200]}", flush=True)
                break
            finally:
                stop_process(process)
            print(load_row(name, result), flush=True)
            if other >= 15:
                print(f"    machine busy before the step: {other:.0f}% of a core")
            if result.max_lag > 50:
                print(f"    the scheduler ran {result.max_lag:.0f} ms late at worst")
            if not result.saturated:
                best = max(best, result.rate)
            else:
                ceilings[name] = best
                print(f"    {name}: saturated at {rate:g} msgs/s; got {result.rate:.0f} "
                      f"deliveries/s", flush=True)
                break
        ceilings.setdefault(name, best)
    print("\nceiling (best deliveries/s without saturating, at the rates tried):")
    for name, best in ceilings.items():
        print(f"  {name:28} {best:>9.0f}")
    with contextlib.suppress(OSError):
        text = log_path.read_text(errors="replace")
        if "Traceback" in text or "ERROR" in text:
            print(f"server log has errors: {log_path}")
        else:
            log_path.unlink()
    print(f"finished {time.strftime('%H:%M')}")


if __name__ == "__main__":
    main()
