"""The reference peer: a tutorial-style Socket.IO chat (no storage, no seq, no acks, no resume).

Clients `join` a room and `emit('chat', {room, text})`; the server re-emits each chat to the
whole room, sender included (python-socketio's AsyncServer as an ASGI app). By default it runs
on uvicorn (plain asyncio loop, no uvloop, as `uvicorn app:app` would); `--server daphne` runs
the same app under daphne, so the server is the same as Parley's and only the application
differs. One process. Measured with the load shape of bench/chat_fanout.py by python-socketio's
AsyncClient over the websocket transport (no long-polling upgrade).

Usage:
  .venv/bin/python bench/socketio_peer.py [--clients 10,100,500] [--senders 10] [--rate 0.5]
      [--duration 10] [--server uvicorn|daphne] [--quick]
  .venv/bin/python bench/chat_fanout.py --layers socketio    (same rows, inside the main table)
Needs python-socketio[asyncio_client], aiohttp and uvicorn.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import socketio

ROOT = Path(__file__).resolve().parents[1]
ROOM = "bench"

sio = socketio.AsyncServer(async_mode="asgi", cors_allowed_origins="*")
app = socketio.ASGIApp(sio)


@sio.event
async def join(sid, room: str) -> bool:
    await sio.enter_room(sid, room)
    return True


@sio.event
async def chat(sid, data: dict) -> None:
    await sio.emit("chat", data, room=data["room"])


# ---- measurement (only in the bench process) ----


def server_command(server: str, port: int) -> list[str]:
    if server == "daphne":
        return [sys.executable, "-m", "daphne", "-b", "127.0.0.1", "-p", str(port),
                "bench.socketio_peer:app"]
    return [sys.executable, "-m", "uvicorn", "--host", "127.0.0.1", "--port", str(port),
            "--loop", "asyncio", "--log-level", "warning", "bench.socketio_peer:app"]


def run_peer(shape, server: str = "uvicorn"):
    """One row of the table for the peer: start it, connect, measure, stop."""
    sys.path.insert(0, str(ROOT))
    from tests.support.servers import free_port, port_open, wait_until

    port = free_port()
    log_path = Path(tempfile.mkstemp(prefix=f"socketio-{port}-", suffix=".log")[1])
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            server_command(server, port), cwd=ROOT,
            env={**os.environ, "PYTHONPATH": str(ROOT), "PYTHONUNBUFFERED": "1"},
            stdout=log, stderr=subprocess.STDOUT,
        )
    try:
        wait_until(lambda: port_open(port), timeout=30, what=f"socket.io peer on {server}")
        result = asyncio.run(drive(shape, port, process.pid))
        notes = result.extra.setdefault("notes", [])
        notes.insert(0, f"socket.io peer on {server}, 1 process")
        lines = {}
        for line in log_path.read_text(errors="replace").splitlines():
            if re.search(r"Traceback|ERROR|WARNING|Exception", line, re.IGNORECASE):
                key = re.sub(r"\d+", "#", line.strip())[:160]
                lines[key] = lines.get(key, 0) + 1
        notes.extend(f"{count}x {line}" for line, count in list(lines.items())[:6])
        return result
    finally:
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(5)
        log_path.unlink(missing_ok=True)


async def drive(shape, port: int, pid: int):
    from bench.fanout_common import Recorder, bounded_gather, close_all, measure

    recorder = Recorder(shape)
    url = f"http://127.0.0.1:{port}"
    clients: list[socketio.AsyncClient] = []

    async def connect() -> None:
        client = socketio.AsyncClient(reconnection=False)
        client.on("chat", lambda data: recorder.received(data["text"]))
        clients.append(client)
        await client.connect(url, transports=["websocket"], wait_timeout=10)
        await client.call("join", ROOM, timeout=10)

    def sender(client: socketio.AsyncClient):
        async def send(text: str) -> None:
            await client.emit("chat", {"room": ROOM, "text": text})

        return send

    started = time.perf_counter()
    try:
        async with asyncio.timeout(300):
            await bounded_gather([connect] * shape.clients, 50)
        connect_seconds = time.perf_counter() - started
        result = await measure(
            shape, [sender(c) for c in clients[: shape.senders]], recorder,
            {"server": [pid]}, connect_seconds,
        )
        dropped = sum(1 for c in clients if not c.connected)
    finally:
        await close_all([client.disconnect for client in clients])
    result.extra["notes"] = [f"sockets dropped by the end of the window: {dropped}"]
    return result


def main() -> None:
    sys.path.insert(0, str(ROOT))
    from bench.fanout_common import HEADER, LoadShape, row, wait_for_quiet

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", default="10,100,500")
    parser.add_argument("--senders", type=int, default=10)
    parser.add_argument("--rate", type=float, default=0.5)
    parser.add_argument("--duration", type=float, default=10.0)
    parser.add_argument("--warmup", type=float, default=2.0)
    parser.add_argument("--grace", type=float, default=3.0)
    parser.add_argument("--server", choices=["uvicorn", "daphne"], default="uvicorn")
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    clients = [int(n) for n in args.clients.split(",") if n]
    if args.quick:
        clients = [n for n in clients if n <= 100] or [10]
        args.duration, args.warmup, args.grace = 4.0, 2.0, 2.0
    print(HEADER, flush=True)
    for n in clients:
        shape = LoadShape(clients=n, procs=1, layer="socketio", senders=min(args.senders, n),
                          rate=args.rate, duration=args.duration, warmup=args.warmup,
                          grace=args.grace)
        wait_for_quiet()
        result = run_peer(shape, args.server)
        print(row(result), flush=True)
        for note in result.extra.get("notes", []):
            print(f"    {note}", flush=True)


if __name__ == "__main__":
    main()
