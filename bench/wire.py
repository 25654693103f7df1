"""A light asyncio WebSocket client for load generation, and the two chat clients built on it.

The benchmarks run hundreds of sockets in one process and must cost far less per received
frame than the servers they measure (the fan-out issue asks for client CPU per delivery to be
printed as the proof). A general client (`websockets`, python-socketio) spends tens of µs per
frame in its tasks, queues and futures; here a socket is a bare `asyncio.Protocol`: the event
loop hands it bytes, it cuts them into frames in place and calls `on_text(payload)` with the
payload's bytes, with no task, queue or decode in between (`json.loads` takes bytes).

- `WebSocket`: HTTP/1.1 upgrade written by hand, masked client frames, server frames of any
  length incl. fragmented messages, ping -> pong, close handshake. No extensions (no
  permessage-deflate: the servers measured here all run without it by default for clients
  that do not ask).
- `RoomSocket`: Parley's room socket (docs/protocol.md): hello, chat.message in seq order with
  gaps buffered and fetched by `chat.sync` after 700 ms (the browser's GAP_GRACE_MS), backlog,
  acks and the outbox, heartbeats, presence, errors, and the `batch` event (several room events
  in one frame, applied in order as if each came alone).
- `SocketIOClient`: the reference server's Engine.IO v4 / Socket.IO v5 chat: ping "2" ->
  pong "3", connect "40", `42["chat message", text]` out, `42["chat message", text, sid]` in.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import itertools
import json
import os
from collections.abc import Callable
from urllib.parse import urlsplit

GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
TEXT, BINARY, CLOSE, PING, PONG, CONTINUATION = 0x1, 0x2, 0x8, 0x9, 0xA, 0x0
MAX_MESSAGE = 1 << 24  # a server sending more than 16 MiB in one message is broken here


def mask_frame(opcode: int, payload: bytes) -> bytes:
    """One final client frame: clients must mask (RFC 6455 5.3). The XOR runs on two big ints,
    one C operation for the whole payload instead of a Python loop over its bytes."""
    n = len(payload)
    if n < 126:
        head = bytes((0x80 | opcode, 0x80 | n))
    elif n < 1 << 16:
        head = bytes((0x80 | opcode, 0x80 | 126)) + n.to_bytes(2, "big")
    else:
        head = bytes((0x80 | opcode, 0x80 | 127)) + n.to_bytes(8, "big")
    key = os.urandom(4)
    if not n:
        return head + key
    keystream = (key * (n // 4 + 1))[:n]
    masked = (int.from_bytes(payload, "big") ^ int.from_bytes(keystream, "big")).to_bytes(n, "big")
    return head + key + masked


class HandshakeError(ConnectionError):
    pass


class WebSocket(asyncio.Protocol):
    """One client connection. Set `on_text` (called with each text message's bytes) and
    optionally `on_close(code)` before `connect`; `send_text` writes a frame at once."""

    def __init__(self, on_text: Callable[[bytes], None]) -> None:
        self.on_text = on_text
        self.on_close: Callable[[int], None] | None = None
        self.transport: asyncio.Transport | None = None
        self.open = False
        self.close_code: int | None = None
        self.closed: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        self._opened: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._request = b""
        self._accept = b""
        self._buf = b""
        self._fragments: list[bytes] | None = None
        self._upgraded = False
        self._on_open: Callable[[WebSocket], None] | None = None

    @classmethod
    async def connect(
        cls, url: str, on_text: Callable[[bytes], None], headers: dict[str, str] | None = None,
        timeout: float = 10, on_open: Callable[[WebSocket], None] | None = None,
    ) -> WebSocket:
        """Open `ws://host:port/path?query` and complete the upgrade. `on_open(socket)` runs
        once it is upgraded, before its first frame: frames may come with the 101 itself,
        and their handlers may need to answer on the socket before `connect` returns."""
        parts = urlsplit(url)
        if parts.scheme != "ws":
            raise ValueError("only ws:// URLs")
        host, port = parts.hostname or "127.0.0.1", parts.port or 80
        path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        key = base64.b64encode(os.urandom(16))
        lines = [
            f"GET {path} HTTP/1.1", f"Host: {host}:{port}", "Upgrade: websocket",
            "Connection: Upgrade", f"Sec-WebSocket-Key: {key.decode()}",
            "Sec-WebSocket-Version: 13",
            *(f"{name}: {value}" for name, value in (headers or {}).items()),
        ]
        loop = asyncio.get_running_loop()
        async with asyncio.timeout(timeout):
            _, socket = await loop.create_connection(lambda: cls(on_text), host, port)
            socket._on_open = on_open
            socket._accept = base64.b64encode(hashlib.sha1(key + GUID).digest())
            socket.transport.write(("\r\n".join(lines) + "\r\n\r\n").encode())
            await socket._opened
        return socket

    # -- asyncio.Protocol

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def connection_lost(self, exc: Exception | None) -> None:
        self.open = False
        if not self._opened.done():
            self._opened.set_exception(exc or HandshakeError("closed during the handshake"))
        self._finish(1006 if self.close_code is None else self.close_code)

    def data_received(self, data: bytes) -> None:
        if self._buf:
            data = self._buf + data
        if not self._upgraded:
            end = data.find(b"\r\n\r\n")
            if end < 0:
                self._buf = data
                return
            if not self._check_upgrade(data[:end]):
                return
            data = data[end + 4:]
        # The hot loop: most frames are small, final, unmasked text frames (0x81, length < 126).
        pos, size, on_text = 0, len(data), self.on_text
        while size - pos >= 2:
            b0, length = data[pos], data[pos + 1]
            if length < 126:
                start = pos + 2
            elif length == 126:
                if size - pos < 4:
                    break
                length, start = int.from_bytes(data[pos + 2:pos + 4], "big"), pos + 4
            else:
                if size - pos < 10:
                    break
                length, start = int.from_bytes(data[pos + 2:pos + 10], "big"), pos + 10
            end = start + length
            if end > size:
                if length > MAX_MESSAGE:
                    self._fail(1009)
                    return
                break
            pos = end
            if b0 == 0x81:
                on_text(data[start:end])
            else:
                self._other_frame(b0, data[start:end])
                if self.transport is None or self.transport.is_closing():
                    return
        self._buf = data[pos:] if pos < size else b""

    # -- frames

    def _check_upgrade(self, head: bytes) -> bool:
        """A 101 with the right Sec-WebSocket-Accept opens the socket; anything else fails
        `connect` (not data_received: an exception there would only reach the loop's log)."""
        lines = head.split(b"\r\n")
        fields = {}
        for line in lines[1:]:
            name, _, value = line.partition(b":")
            fields[name.strip().lower()] = value.strip()
        status = lines[0].split(b" ", 2)
        if len(status) < 2 or status[1] != b"101" or fields.get(b"sec-websocket-accept") != \
                self._accept:
            self._buf = b""
            refused = lines[0].decode(errors="replace")
            self._opened.set_exception(HandshakeError(f"upgrade refused: {refused}"))
            self.transport.close()
            return False
        self._upgraded = self.open = True
        self._opened.set_result(None)
        if self._on_open is not None:
            self._on_open(self)
        return True

    def _other_frame(self, b0: int, payload: bytes) -> None:
        opcode, fin = b0 & 0x0F, b0 & 0x80
        if opcode == CLOSE:
            code = int.from_bytes(payload[:2], "big") if len(payload) >= 2 else 1005
            self.close_code = code
            if self.open:
                self.open = False
                self.transport.write(mask_frame(CLOSE, payload[:2]))
            self.transport.close()
        elif opcode == PING:
            self.transport.write(mask_frame(PONG, payload))
        elif opcode == PONG:
            pass
        elif opcode in (TEXT, BINARY):  # a first fragment (a final binary is ignored)
            if not fin:
                self._fragments = [payload] if opcode == TEXT else []
        elif opcode == CONTINUATION and self._fragments is not None:
            self._fragments.append(payload)
            if fin:
                whole, self._fragments = b"".join(self._fragments), None
                if whole:
                    self.on_text(whole)
        else:
            self._fail(1002)

    def _fail(self, code: int) -> None:
        self.close_code = code
        if self.transport is not None:
            self.transport.abort()

    def _finish(self, code: int) -> None:
        if not self.closed.done():
            self.closed.set_result(code)
            if self.on_close is not None:
                self.on_close(code)

    # -- API

    def send_text(self, text: str) -> None:
        if not self.open:
            raise ConnectionError("socket is not open")
        self.transport.write(mask_frame(TEXT, text.encode()))

    async def close(self, code: int = 1000, timeout: float = 5) -> None:
        """Send a close frame and wait (at most `timeout`) for the server to close the TCP
        connection, as RFC 6455 has the server do."""
        if self.transport is None:
            return
        if self.open:
            self.open = False
            self.transport.write(mask_frame(CLOSE, code.to_bytes(2, "big")))
        try:
            async with asyncio.timeout(timeout):
                await asyncio.shield(self.closed)
        except TimeoutError:
            self.transport.abort()


GAP_GRACE = 0.7  # seconds a gap may wait before chat.sync (GAP_GRACE_MS in rooms-protocol.js)
_client_ids = itertools.count()


class RoomSocket:
    """One room socket of a Parley guest session, cheap per delivery.

    `on_message(message)` is called for each chat message in seq order (live, from a batch, or
    from a backlog); `outbox` holds what was sent and not yet acknowledged."""

    def __init__(self, base_url: str, slug: str, session_id: str,
                 on_message: Callable[[dict], None] | None = None) -> None:
        self.base_url = base_url.rstrip("/")
        self.slug = slug
        self.session_id = session_id
        self.on_message = on_message
        self.socket: WebSocket | None = None
        self.last_seq: int | None = None
        self.buffered: dict[int, dict] = {}
        self.outbox: dict[str, str] = {}
        self.acks = 0
        self.errors: list[dict] = []
        self.presence: dict[str, str] = {}
        self.gap_syncs = 0  # chat.sync sent because a gap did not fill within GAP_GRACE
        self.heartbeat_syncs = 0  # ... because a heartbeat was ahead of the last applied seq
        self.batches = 0  # batch frames received
        self.batched_events = 0  # events inside them
        self.frames = 0
        self._sync_timer: asyncio.TimerHandle | None = None
        self._hello: asyncio.Future[dict] | None = None
        self._handlers = {
            "chat.message": self._on_message, "chat.ack": self._on_ack,
            "batch": self._on_batch, "chat.backlog": self._on_backlog,
            "heartbeat": self._on_heartbeat, "presence": self._on_presence,
            "error": self._on_error, "hello": self._on_hello,
        }

    @property
    def connected(self) -> bool:
        return self.socket is not None and self.socket.open

    async def connect(self, timeout: float = 20) -> None:
        parts = urlsplit(self.base_url)
        query = "" if self.last_seq is None else f"?after={self.last_seq}"
        self._hello = asyncio.get_running_loop().create_future()
        await WebSocket.connect(
            f"ws://{parts.netloc}/ws/rooms/{self.slug}/{query}", self._on_frame,
            {"Origin": self.base_url, "Cookie": f"sessionid={self.session_id}"}, timeout,
            self._attach,
        )
        async with asyncio.timeout(timeout):
            await self._hello

    def _attach(self, socket: WebSocket) -> None:
        self.socket = socket
        socket.on_close = self._on_close

    async def close(self) -> None:
        if self._sync_timer is not None:
            self._sync_timer.cancel()
        if self.socket is not None:
            await self.socket.close()

    def send(self, text: str) -> None:
        client_id = f"b{next(_client_ids)}"
        self.outbox[client_id] = text
        self._transmit(client_id, text)

    def _transmit(self, client_id: str, text: str) -> None:
        if self.connected:
            self.socket.send_text(json.dumps(
                {"type": "chat.send", "client_id": client_id, "text": text}))

    def _send_sync(self) -> None:
        if self.connected:
            self.socket.send_text(f'{{"type":"chat.sync","after":{self.last_seq}}}')

    # -- events

    def _on_frame(self, payload: bytes) -> None:
        self.frames += 1
        event = json.loads(payload)
        handler = self._handlers.get(event.get("type"))
        if handler is not None:
            handler(event)

    def _on_batch(self, event: dict) -> None:
        self.batches += 1
        self.batched_events += len(event["events"])
        handlers = self._handlers
        for inner in event["events"]:
            handler = handlers.get(inner.get("type"))
            if handler is not None and handler is not self._on_batch:
                handler(inner)

    def _on_hello(self, hello: dict) -> None:
        self.presence = {p["id"]: p["name"] for p in hello["presence"]}
        self._apply_backlog(hello)
        for client_id, text in list(self.outbox.items()):
            self._transmit(client_id, text)
        if self._hello is not None and not self._hello.done():
            self._hello.set_result(hello)

    def _on_backlog(self, event: dict) -> None:
        self._apply_backlog(event)

    def _apply_backlog(self, event: dict) -> None:
        messages = event["messages"]
        if event.get("reset") or self.last_seq is None:
            self.buffered.clear()
            self.last_seq = messages[0]["seq"] - 1 if messages else event["seq"]
        for message in messages:
            self._on_message(message)
        if event.get("more"):
            self._send_sync()

    def _on_message(self, message: dict) -> None:
        last = self.last_seq
        if last is None:
            return
        seq = message["seq"]
        if seq == last + 1 and not self.buffered:  # the usual case: next in order
            self.last_seq = seq
            if self.on_message is not None:
                self.on_message(message)
            return
        if seq <= last:
            return  # seen already
        self.buffered[seq] = message
        while last + 1 in self.buffered:
            message = self.buffered.pop(last + 1)
            last = self.last_seq = message["seq"]
            if self.on_message is not None:
                self.on_message(message)
        if self.buffered:
            self._schedule_sync()

    def _on_heartbeat(self, event: dict) -> None:
        if self.last_seq is not None and event["seq"] > self.last_seq:
            self._schedule_sync(heartbeat=True)

    def _schedule_sync(self, heartbeat: bool = False) -> None:
        """After GAP_GRACE, fetch what is missing if nothing moved meanwhile (as the browser)."""
        if self._sync_timer is not None:
            return
        after = self.last_seq

        def expired() -> None:
            self._sync_timer = None
            if self.last_seq == after:
                if self.buffered:
                    self.gap_syncs += 1
                else:
                    self.heartbeat_syncs += 1
                self._send_sync()
            elif self.buffered:
                self._schedule_sync()

        self._sync_timer = asyncio.get_running_loop().call_later(GAP_GRACE, expired)

    def _on_ack(self, event: dict) -> None:
        if self.outbox.pop(event["client_id"], None) is not None:
            self.acks += 1

    def _on_presence(self, event: dict) -> None:
        for p in event["left"]:
            self.presence.pop(p["id"], None)
        for p in event["joined"]:
            self.presence[p["id"]] = p["name"]

    def _on_error(self, event: dict) -> None:
        self.errors.append(event)
        client_id = event.get("client_id")
        text = self.outbox.get(client_id) if client_id else None
        if text is None:
            return
        if event.get("code") in ("rate_limited", "server_error"):  # not stored: try again
            delay = max(0.25, float(event.get("retry_after") or 1))
            asyncio.get_running_loop().call_later(delay, self._transmit, client_id, text)
        else:
            self.outbox.pop(client_id, None)  # refused for good

    def _on_close(self, code: int) -> None:
        if self._sync_timer is not None:
            self._sync_timer.cancel()
            self._sync_timer = None
        if self._hello is not None and not self._hello.done():
            self._hello.set_exception(ConnectionError(f"closed with {code} before hello"))


class SocketIOClient:
    """One Socket.IO v5 client of the reference chat over Engine.IO v4's websocket transport.

    `on_chat(text, sender_id)` is called for each `chat message` event."""

    def __init__(self, url: str, on_chat: Callable[[str, str], None] | None = None) -> None:
        parts = urlsplit(url)
        self.url = f"ws://{parts.netloc}/socket.io/?EIO=4&transport=websocket"
        self.on_chat = on_chat
        self.socket: WebSocket | None = None
        self.sid: str | None = None
        self.frames = 0
        self._connected: asyncio.Future[None] | None = None

    @property
    def connected(self) -> bool:
        return self.socket is not None and self.socket.open

    async def connect(self, timeout: float = 20) -> None:
        self._connected = asyncio.get_running_loop().create_future()
        await WebSocket.connect(self.url, self._on_frame, timeout=timeout, on_open=self._attach)
        async with asyncio.timeout(timeout):
            await self._connected

    def _attach(self, socket: WebSocket) -> None:
        self.socket = socket
        socket.on_close = self._on_close

    async def close(self) -> None:
        if self.socket is not None:
            await self.socket.close()

    def send(self, text: str) -> None:
        self.socket.send_text("42" + json.dumps(["chat message", text]))

    def _on_frame(self, payload: bytes) -> None:
        self.frames += 1
        if payload[:2] == b"42":  # Socket.IO EVENT on the main namespace
            event = json.loads(payload[2:])
            if event[0] == "chat message" and self.on_chat is not None:
                self.on_chat(event[1], event[2] if len(event) > 2 else "")
        elif payload == b"2":  # Engine.IO ping: answer at once or the server drops us
            self.socket.send_text("3")
        elif payload[:1] == b"0":  # Engine.IO open: ask for the main namespace
            self.socket.send_text("40")
        elif payload[:2] == b"40":  # Socket.IO CONNECT answered
            self.sid = json.loads(payload[2:]).get("sid") if len(payload) > 2 else ""
            if self._connected is not None and not self._connected.done():
                self._connected.set_result(None)
        elif payload[:2] == b"44" and self._connected is not None and not self._connected.done():
            self._connected.set_exception(ConnectionError(payload.decode(errors="replace")))

    def _on_close(self, code: int) -> None:
        if self._connected is not None and not self._connected.done():
            self._connected.set_exception(ConnectionError(f"closed with {code}"))
