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

import functools
import logging
from collections.abc import Callable

from daphne import ws_protocol

from rooms.protocol import CLOSE_SLOW_READER  # documented in docs/protocol.md

log = logging.getLogger(__name__)

# How long a socket closed for its backlog may take to drain before the connection is dropped.
CLOSE_GRACE_SECONDS = 10


def unsent_bytes(transport) -> int:
    """Bytes a Twisted transport holds that the kernel has not taken (its write buffer)."""
    buffered = getattr(transport, "dataBuffer", b"")
    return len(buffered) - getattr(transport, "offset", 0) + getattr(transport, "_tempDataLen", 0)


class BoundedWebSocketProtocol(ws_protocol.WebSocketProtocol):
    """Daphne's WebSocket protocol, closing a socket that falls too far behind."""

    max_outbound_bytes = 512 * 1024  # set by install() from settings
    behind = False

    def serverSend(self, content, binary=False):
        if self.behind:
            return  # closing: the client resumes from its last seq
        super().serverSend(content, binary)
        self._bound_backlog()

    def _bound_backlog(self) -> None:
        unsent = unsent_bytes(self.transport)
        if unsent > self.max_outbound_bytes:
            self.behind = True
            log.warning("closing a socket %s bytes behind (%s)", unsent, self.client_addr)
            self.closeHandshakeTimeout = CLOSE_GRACE_SECONDS
            self.sendClose(code=CLOSE_SLOW_READER, reason="too far behind")


    def write_prebuilt(self, frame: bytes) -> bool:
        """Write one complete server text frame built by the caller (rooms/fanout.py builds
        a room event's frame once for all of its sockets): what serverSend would write,
        without its per-call work (encoding, framing, autobahn's checks and debug logging:
        most of a room broadcast's cost per socket). False, and nothing written, when this
        connection needs autobahn's own path (compression, a queued or partial send)."""
        if self.state != self.STATE_OPEN or self.behind:
            return True  # closing: dropped, as serverSend drops it (the client resumes)
        if (self._perMessageCompress is not None or self.send_queue
                or self.send_state != self.SEND_STATE_GROUND):
            return False
        self._send_now(frame)
        self._bound_backlog()
        return True

    def _send_now(self, frame: bytes) -> None:
        """Hand `frame` to the kernel at once when nothing is waiting ahead of it; Twisted's
        own write only buffers it and registers the socket with the loop, then unregisters
        it after one send (two epoll_ctl calls and much Python per frame: a third of a
        broadcast's cost). Whatever the kernel does not take waits in Twisted's buffer, in
        order, as any write would."""
        transport = self.transport
        sock = getattr(transport, "socket", None)
        if (sock is not None and not getattr(transport, "TLS", False) and transport.connected
                and not transport.disconnecting and unsent_bytes(transport) == 0):
            try:
                sent = sock.send(frame)
            except OSError:
                sent = 0  # would block, or the connection broke: Twisted's write finds out
            if sent == len(frame):
                return
            frame = frame[sent:]
        transport.write(frame)


def prebuilt_frame_writer(send) -> Callable[[bytes], bool] | None:
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
