"""A bound on what daphne buffers for a client that does not read (issue #10, item 7).

Daphne writes every frame the application sends into the socket's Twisted transport at once;
when the client stops reading, the kernel's buffers fill and then the transport's buffer grows
without limit (a never-reading client held ~50 s of a busy room until the ping timeout). ASGI
has no way to tell the application, so the bound lives at the transport: past
PARLEY["MAX_OUTBOUND_BYTES"] unsent bytes, further frames are dropped and the socket is closed
with 4408. The close frame queues behind what is buffered, so a slow but live client still
reads everything sent before it and then the code; it reconnects with `?after=<seq>` and
loses nothing. One that never reads is dropped after CLOSE_GRACE_SECONDS.

Installed by project/asgi.py when daphne serves the application, as autobahn intends:
by setting the protocol class of daphne's WebSocket factory. The same protocol takes room
broadcasts as prebuilt frames (`write_prebuilt`, issue #13), offered to the application as
the `parley.prebuilt_frames` scope extension.
"""

from __future__ import annotations

import asyncio
import functools
import logging
from collections.abc import Callable

from daphne import ws_protocol

from rooms.protocol import CLOSE_SLOW_READER  # documented in docs/protocol.md

log = logging.getLogger(__name__)

# How long a socket closed for its backlog may take to drain before the connection is dropped.
CLOSE_GRACE_SECONDS = 10
# How often a socket that is behind is checked for having caught up with what it was sent.
HOLD_CHECK_SECONDS = 0.05


def unsent_bytes(transport) -> int:
    """Bytes a Twisted transport holds that the kernel has not taken (its write buffer)."""
    buffered = getattr(transport, "dataBuffer", b"")
    return len(buffered) - getattr(transport, "offset", 0) + getattr(transport, "_tempDataLen", 0)


class BoundedWebSocketProtocol(ws_protocol.WebSocketProtocol):
    """Daphne's WebSocket protocol, closing a socket that falls too far behind."""

    max_outbound_bytes = 512 * 1024  # set by install() from settings
    behind = False
    held: list[str] | None = None  # room events waiting for this socket to catch up
    held_bytes = 0  # their size, about (characters)
    _catch_up_check: asyncio.TimerHandle | None = None

    def serverSend(self, content, binary=False):
        if self.behind:
            return  # closing: the client resumes from its last seq
        super().serverSend(content, binary)
        self._bound_backlog()

    def _bound_backlog(self) -> None:
        unsent = unsent_bytes(self.transport) + (self.held_bytes if self.held else 0)
        if unsent > self.max_outbound_bytes:
            self.behind = True
            log.warning("closing a socket %s bytes behind (%s)", unsent, self.client_addr)
            self.closeHandshakeTimeout = CLOSE_GRACE_SECONDS
            self.sendClose(code=CLOSE_SLOW_READER, reason="too far behind")


    def write_prebuilt(self, out) -> bool:
        """Write one flush of room events (a rooms.fanout.Outgoing), whose frames were built
        once for all of the room's sockets: what serverSend would write, without its
        per-call work (encoding, framing, autobahn's checks and debug logging: most of a
        broadcast's cost per socket). False, and nothing written, when this connection
        needs autobahn's own path (compression, a queued or partial send).

        A socket whose kernel buffer is full is behind: its events are held, not queued
        frame by frame, and sent as `batch` frames once it has caught up (checked at the
        next flush, or after HOLD_CHECK_SECONDS), so a slow reader costs fewer frames. What is held
        counts toward the outbound bound."""
        if self.state != self.STATE_OPEN or self.behind:
            return True  # closing: dropped, as serverSend drops it (the client resumes)
        if (self._perMessageCompress is not None or self.send_queue
                or self.send_state != self.SEND_STATE_GROUND):
            return False
        if self.held is not None:
            if unsent_bytes(self.transport):
                self._hold(out.texts)
                return True
            self._send_held(out.texts)  # caught up since: everything, in order
            return True
        full = False
        for frame in out.wire:
            full = self._send_now(frame) or full
        if full:
            self.held, self.held_bytes = [], 0
            self._check_later()
        self._bound_backlog()
        return True

    def _hold(self, texts: list[str]) -> None:
        self.held.extend(texts)
        self.held_bytes += sum(map(len, texts))
        self._bound_backlog()

    def _check_later(self) -> None:
        self._catch_up_check = asyncio.get_running_loop().call_later(
            HOLD_CHECK_SECONDS, self._catch_up)

    def _catch_up(self) -> None:
        """Called every HOLD_CHECK_SECONDS while events are held: send them once the
        socket has taken what was written before."""
        self._catch_up_check = None
        if self.held is None or self.state != self.STATE_OPEN or self.behind:
            self.held = None
            return
        if unsent_bytes(self.transport):
            self._check_later()
            return
        self._send_held([])

    def _send_held(self, more: list[str]) -> None:
        """Send what was held, and `more` after it, as batch frames; hold again if the
        socket falls behind once more."""
        from rooms.fanout import Outgoing

        if self._catch_up_check is not None:
            self._catch_up_check.cancel()
            self._catch_up_check = None
        texts, self.held, self.held_bytes = self.held + more, None, 0
        full = False
        for frame in Outgoing(texts).wire if texts else []:
            full = self._send_now(frame) or full
        if full:
            self.held = []
            self._check_later()
        self._bound_backlog()

    def connectionLost(self, reason):
        if self._catch_up_check is not None:
            self._catch_up_check.cancel()
            self._catch_up_check = None
        self.held = None
        super().connectionLost(reason)

    def _send_now(self, frame: bytes) -> bool:
        """Hand `frame` to the kernel at once when nothing is waiting ahead of it; Twisted's
        own write only buffers it and registers the socket with the loop, then unregisters
        it after one send (two epoll_ctl calls and much Python per frame: a third of a
        broadcast's cost). Whatever the kernel does not take waits in Twisted's buffer, in
        order, as any write would. True when the kernel's buffer was full (the client is
        behind); frames queued behind Twisted's own writes (an ack) do not say so."""
        transport = self.transport
        sock = getattr(transport, "socket", None)
        full = False
        if (sock is not None and not getattr(transport, "TLS", False) and transport.connected
                and not transport.disconnecting and unsent_bytes(transport) == 0):
            try:
                sent = sock.send(frame)
            except OSError:
                sent = 0  # would block, or the connection broke: Twisted's write finds out
            if sent == len(frame):
                return False
            frame, full = frame[sent:], True
        transport.write(frame)
        return full


def prebuilt_frame_writer(send) -> Callable[[object], bool] | None:
    """For an application's ASGI `send` from daphne (a partial of its server's handle_reply
    on the connection's protocol), the connection's write_prebuilt; None otherwise."""
    protocol = send.args[0] if isinstance(send, functools.partial) and send.args else None
    if isinstance(protocol, BoundedWebSocketProtocol):
        return protocol.write_prebuilt
    return None


def install(max_outbound_bytes: int) -> None:
    """Make daphne's WebSocket factory build bounded protocols."""
    BoundedWebSocketProtocol.max_outbound_bytes = max_outbound_bytes
    ws_protocol.WebSocketFactory.protocol = BoundedWebSocketProtocol
