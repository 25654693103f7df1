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
by setting the protocol class of daphne's WebSocket factory.
"""

from __future__ import annotations

import logging

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
        unsent = unsent_bytes(self.transport)
        if unsent > self.max_outbound_bytes:
            self.behind = True
            log.warning("closing a socket %s bytes behind (%s)", unsent, self.client_addr)
            self.closeHandshakeTimeout = CLOSE_GRACE_SECONDS
            self.sendClose(code=CLOSE_SLOW_READER, reason="too far behind")


def install(max_outbound_bytes: int) -> None:
    """Make daphne's WebSocket factory build bounded protocols."""
    BoundedWebSocketProtocol.max_outbound_bytes = max_outbound_bytes
    ws_protocol.WebSocketFactory.protocol = BoundedWebSocketProtocol
