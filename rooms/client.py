"""A Python client for the room socket, the twin of static/parley/rooms-protocol.js.

Used by the multi-process tests and bench/chat_fanout.py, and usable by bots: it joins a room
as a guest over HTTP (session cookie + CSRF), applies messages strictly in seq order, fetches
gaps with `chat.sync`, and re-sends unacknowledged messages with their client_id after a
reconnect. It needs `httpx` and `websockets` (requirements-dev.txt).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import uuid
from dataclasses import dataclass, field
from urllib.parse import urlsplit

import httpx
import websockets


async def guest_session(base_url: str, slug: str, name: str) -> str:
    """Join `slug` as guest `name` through the join form; returns the session cookie value."""
    async with httpx.AsyncClient(base_url=base_url, follow_redirects=False) as http:
        page = await http.get(f"/rooms/{slug}/")
        page.raise_for_status()
        token = http.cookies["csrftoken"]
        reply = await http.post(
            f"/rooms/{slug}/join/",
            data={"name": name, "csrfmiddlewaretoken": token},
            headers={"Referer": f"{base_url}/rooms/{slug}/"},
        )
        if reply.status_code != 302:
            raise RuntimeError(f"join failed: {reply.status_code} {reply.text[:200]}")
        return http.cookies["sessionid"]


async def create_public_room(base_url: str, name: str) -> str:
    """Create a public room through the lobby form; returns its slug."""
    async with httpx.AsyncClient(base_url=base_url, follow_redirects=False) as http:
        await http.get("/")
        token = http.cookies["csrftoken"]
        reply = await http.post(
            "/rooms/", data={"name": name, "csrfmiddlewaretoken": token},
            headers={"Referer": f"{base_url}/"},
        )
        if reply.status_code != 302:
            raise RuntimeError(f"create failed: {reply.status_code}")
        return reply.headers["location"].rstrip("/").rsplit("/", 1)[-1]


@dataclass
class RoomClient:
    base_url: str  # http://host:port of one Parley process
    slug: str
    session_id: str
    messages: dict[int, dict] = field(default_factory=dict)  # seq -> message, applied in order
    last_seq: int | None = None
    acks: dict[str, int] = field(default_factory=dict)  # client_id -> seq
    outbox: dict[str, str] = field(default_factory=dict)  # client_id -> text, unacknowledged
    presence: dict[str, str] = field(default_factory=dict)  # id -> name
    errors: list[dict] = field(default_factory=list)
    me: dict | None = None
    hellos: int = 0
    # Reconnect by itself (with back-off, resuming by seq) when the socket drops, as the
    # browser client does; `reconnects` counts how often that happened.
    auto_reconnect: bool = False
    reconnects: int = 0

    def __post_init__(self) -> None:
        self._socket = None
        self._reader: asyncio.Task | None = None
        self._keeper: asyncio.Task | None = None
        self._buffered: dict[int, dict] = {}
        self._changed = asyncio.Condition()
        self.on_message = None  # optional callback(message) for each message applied

    @property
    def ws_url(self) -> str:
        parts = urlsplit(self.base_url)
        query = "" if self.last_seq is None else f"?after={self.last_seq}"
        return f"ws://{parts.netloc}/ws/rooms/{self.slug}/{query}"

    async def connect(self, base_url: str | None = None) -> None:
        """(Re)connect, optionally to another process, resuming after the last applied seq."""
        await self.close()
        if base_url:
            self.base_url = base_url
        await self._open()
        if self.auto_reconnect:
            self._keeper = asyncio.create_task(self._keep_connected())

    async def _open(self) -> None:
        self._socket = await websockets.connect(
            self.ws_url,
            origin=self.base_url,
            additional_headers={"Cookie": f"sessionid={self.session_id}"},
            max_size=2**22,
            open_timeout=10,
        )
        hello = json.loads(await self._socket.recv())
        if hello.get("type") != "hello":
            raise RuntimeError(f"expected hello, got {hello}")
        await self._apply_hello(hello)
        self._reader = asyncio.create_task(self._read())
        if hello.get("more"):
            await self._sync()
        for client_id, text in list(self.outbox.items()):
            await self._send({"type": "chat.send", "client_id": client_id, "text": text})

    async def close(self) -> None:
        if self._keeper is not None:
            self._keeper.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._keeper
            self._keeper = None
        if self._reader is not None:
            self._reader.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._reader
            self._reader = None
        if self._socket is not None:
            with contextlib.suppress(Exception):
                await self._socket.close()
            self._socket = None

    @property
    def connected(self) -> bool:
        return self._reader is not None and not self._reader.done()

    async def send(self, text: str, client_id: str | None = None) -> str:
        client_id = client_id or uuid.uuid4().hex
        self.outbox[client_id] = text
        with contextlib.suppress(Exception):
            await self._send({"type": "chat.send", "client_id": client_id, "text": text})
        return client_id

    async def _send(self, frame: dict) -> None:
        if self._socket is None:
            raise ConnectionError("not connected")
        await self._socket.send(json.dumps(frame))

    async def wait_for(self, predicate, timeout: float = 10.0) -> None:
        """Wait until `predicate(self)` holds, woken by every frame; TimeoutError otherwise."""
        async with asyncio.timeout(timeout):
            async with self._changed:
                await self._changed.wait_for(lambda: predicate(self))

    async def _notify(self) -> None:
        async with self._changed:
            self._changed.notify_all()

    async def _apply_hello(self, hello: dict) -> None:
        self.hellos += 1
        self.me = hello["you"]
        self.presence = {p["id"]: p["name"] for p in hello["presence"]}
        self._apply_backlog(hello)
        await self._notify()

    def _apply_backlog(self, event: dict) -> None:
        if event["reset"] or self.last_seq is None:
            self.messages.clear()
            self._buffered.clear()
            self.last_seq = event["messages"][0]["seq"] - 1 if event["messages"] else event["seq"]
        for message in event["messages"]:
            self._apply_message(message)

    def _apply_message(self, message: dict) -> None:
        if self.last_seq is None or message["seq"] <= self.last_seq:
            return
        self._buffered[message["seq"]] = message
        while self.last_seq + 1 in self._buffered:
            nxt = self._buffered.pop(self.last_seq + 1)
            self.last_seq = nxt["seq"]
            self.messages[nxt["seq"]] = nxt
            if self.on_message is not None:
                self.on_message(nxt)

    async def _read(self) -> None:
        async for raw in self._socket:
            event = json.loads(raw)
            # A server that is behind sends several events in one `batch` frame.
            for inner in event["events"] if event.get("type") == "batch" else [event]:
                await self._apply_event(inner)
            await self._notify()

    async def _apply_event(self, event: dict) -> None:
        kind = event.get("type")
        if kind == "chat.message":
            self._apply_message(event)
            if self._buffered:
                await self._sync()
        elif kind == "chat.backlog":
            self._apply_backlog(event)
            if event.get("more"):  # cut at the server's budget: the rest comes next
                await self._sync()
        elif kind == "chat.ack":
            self.outbox.pop(event["client_id"], None)
            self.acks[event["client_id"]] = event["seq"]
        elif kind == "heartbeat":
            if self.last_seq is not None and event["seq"] > self.last_seq:
                await self._sync()
        elif kind == "presence":
            for p in event["left"]:
                self.presence.pop(p["id"], None)
            for p in event["joined"]:
                self.presence[p["id"]] = p["name"]
        elif kind == "error":
            self.errors.append(event)

    async def _keep_connected(self) -> None:
        """Whenever the reader ends, reopen with back-off (0.1 s doubling to 2 s)."""
        while True:
            with contextlib.suppress(Exception):
                await self._reader
            with contextlib.suppress(Exception):
                await self._socket.close()
            delay = 0.1
            while True:
                await asyncio.sleep(delay)
                try:
                    await self._open()
                    break
                except Exception:
                    delay = min(2.0, delay * 2)
            self.reconnects += 1
            await self._notify()

    async def _sync(self) -> None:
        await self._send({"type": "chat.sync", "after": self.last_seq})
