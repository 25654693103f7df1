"""The reference peer: a tutorial-style Socket.IO chat (no storage, no acks, no resume).

Clients `join` a room and `chat` into it; the server re-emits each chat to the room. It runs
under daphne like Parley, so the comparison is the application, not the server. Measured by
bench/chat_fanout.py --socketio with the same load shape.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from pathlib import Path

import socketio

ROOT = Path(__file__).resolve().parents[1]

sio = socketio.AsyncServer(async_mode="asgi", cors_allowed_origins="*")
app = socketio.ASGIApp(sio)


@sio.event
async def join(sid, room: str) -> bool:
    await sio.enter_room(sid, room)
    return True


@sio.event
async def chat(sid, data: dict) -> None:
    await sio.emit("chat", data, room=data["room"])


async def run_socketio(n, senders, rate, duration, drive, wait_drained, tally_class, summarize):
    """Start the peer under daphne, connect n clients, drive the load, return the summary."""
    sys.path.insert(0, str(ROOT))
    from tests.support.servers import free_port, port_open, wait_until

    port = free_port()
    server = subprocess.Popen(  # noqa: ASYNC220 (started once, before any load)
        [sys.executable, "-m", "daphne", "-b", "127.0.0.1", "-p", str(port),
         "bench.socketio_peer:app"],
        cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)},
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    clients: list[socketio.AsyncClient] = []
    try:
        wait_until(lambda: port_open(port), timeout=20, what="socket.io peer")
        tally = tally_class(int(duration * rate) * senders * n)
        gate = asyncio.Semaphore(50)

        async def connect() -> socketio.AsyncClient:
            client = socketio.AsyncClient(reconnection=False)
            client.on("chat", lambda data: tally.record({"text": data["text"]}))
            async with gate:
                await client.connect(f"http://127.0.0.1:{port}", transports=["websocket"])
                await client.call("join", "bench")
            return client

        clients = list(await asyncio.gather(*(connect() for _ in range(n))))
        await drive(clients[:senders], rate, duration,
                    lambda c, text: c.emit("chat", {"room": "bench", "text": text}))
        await wait_drained(tally)
        return summarize(tally, duration)
    finally:
        await asyncio.gather(*(c.disconnect() for c in clients), return_exceptions=True)
        server.terminate()
        server.wait(10)
