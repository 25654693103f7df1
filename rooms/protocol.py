"""The room socket's wire protocol: message shapes, validation, error and close codes.

Documented in docs/protocol.md and mirrored by static/parley/rooms-protocol.js. Every frame is a
JSON text object with a `type`. Parsing raises ProtocolError, which the consumer turns into an
`error` event while keeping the connection open.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, TypedDict

from . import frames

# Close codes (WebSocket private range 4000-4999), sent after the handshake is accepted.
CLOSE_FORBIDDEN = 4403  # no session that joined the room / not a member of a private room
CLOSE_NOT_FOUND = 4404  # no such room
CLOSE_SLOW_READER = 4408  # fell MAX_OUTBOUND_BYTES behind reading (project/transport.py)
CLOSE_FLOOD = 4429  # kept sending past the rate limit after being told to slow down
CLOSE_TRY_AGAIN = 4503  # a server-side fault while admitting (database, Redis): reconnect
CLOSE_TOO_MANY = 4430  # this member already holds as many sockets of this kind as allowed

# Error codes carried by `error` events; the connection stays open after each.
BAD_JSON = frames.BAD_JSON
BAD_FRAME = frames.BAD_FRAME  # valid JSON but not an object
BINARY_NOT_SUPPORTED = frames.BINARY_NOT_SUPPORTED
FRAME_TOO_LARGE = frames.FRAME_TOO_LARGE  # past the socket's frame size or value count
UNKNOWN_TYPE = "unknown_type"
MISSING_FIELD = "missing_field"
INVALID_FIELD = "invalid_field"
TEXT_TOO_LONG = "text_too_long"
RATE_LIMITED = "rate_limited"
SERVER_ERROR = "server_error"
TOO_DEEP = frames.TOO_DEEP  # nested deeper than frames.MAX_DEPTH
BAD_TEXT = frames.BAD_TEXT  # a string with a lone surrogate (not valid Unicode)

CLIENT_ID_PATTERN = re.compile(r"^[A-Za-z0-9_.:-]{1,64}$")


class ProtocolError(Exception):
    def __init__(self, code: str, message: str, *, ref: Any = None):
        super().__init__(message)
        self.code = code
        self.message = message
        self.ref = ref  # the offending client_id, when known, so the client can match it

    def event(self) -> dict:
        event = {"type": "error", "code": self.code, "message": self.message}
        if self.ref is not None:
            event["client_id"] = self.ref
        return event


@dataclass(frozen=True)
class ChatSend:
    text: str
    client_id: str


@dataclass(frozen=True)
class ChatSync:
    after: int


@dataclass(frozen=True)
class Ping:
    pass


ClientMessage = ChatSend | ChatSync | Ping


class AuthorShape(TypedDict):
    id: str
    name: str


class ChatMessageEvent(TypedDict):
    type: str  # "chat.message"
    seq: int
    id: int
    author: AuthorShape
    text: str
    sent_at: str


def parse_frame(text: str | None, binary: bytes | None, *, max_bytes: int) -> dict:
    """Decode one frame into a JSON object (rooms/frames.py), or raise ProtocolError."""
    try:
        return frames.decode_frame(text, binary, max_bytes=max_bytes)
    except frames.FrameError as error:
        raise ProtocolError(error.code, error.message, ref=client_id_in(error.data)) from None


def client_id_in(data: dict | None) -> str | None:
    """The well-formed client_id of a (possibly refused) frame, so the client can match it."""
    client_id = data.get("client_id") if data else None
    if isinstance(client_id, str) and CLIENT_ID_PATTERN.match(client_id):
        return client_id
    return None


def parse_client_message(data: dict, *, max_text_chars: int) -> ClientMessage:
    """Validate a decoded frame into one of the client message types."""
    kind = data.get("type")
    if kind is None:
        raise ProtocolError(MISSING_FIELD, "Missing field 'type'.")
    if kind == "chat.send":
        client_id = _required(data, "client_id", str)
        if not CLIENT_ID_PATTERN.match(client_id):
            raise ProtocolError(
                INVALID_FIELD, "client_id must be 1-64 characters of A-Z a-z 0-9 _ . : -"
            )
        text = _required(data, "text", str, ref=client_id)
        if not text.strip():
            raise ProtocolError(INVALID_FIELD, "text must not be blank.", ref=client_id)
        if len(text) > max_text_chars:
            raise ProtocolError(
                TEXT_TOO_LONG, f"text is limited to {max_text_chars} characters.", ref=client_id
            )
        return ChatSend(text=text, client_id=client_id)
    if kind == "chat.sync":
        after = _required(data, "after", int)
        if isinstance(after, bool) or after < 0:
            raise ProtocolError(INVALID_FIELD, "after must be a non-negative integer.")
        return ChatSync(after=after)
    if kind == "ping":
        return Ping()
    raise ProtocolError(UNKNOWN_TYPE, f"Unknown message type {str(kind)[:40]!r}.")


def _required(data: dict, field: str, kind: type, *, ref: Any = None):
    if field not in data:
        raise ProtocolError(MISSING_FIELD, f"Missing field {field!r}.", ref=ref)
    value = data[field]
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise ProtocolError(
            INVALID_FIELD, f"Field {field!r} must be a {kind.__name__}.", ref=ref
        )
    return value


def parse_after(query_string: bytes) -> int | None:
    """The `after=<seq>` of a reconnecting client's URL; None when absent.

    A malformed value gives -1, which `services.backlog` answers with a reset: the client
    claimed to hold history, and we cannot tell which.
    """
    from urllib.parse import parse_qs

    values = parse_qs(query_string.decode("latin-1")).get("after")
    if not values:
        return None
    try:
        after = int(values[0])
    except ValueError:
        return -1
    return after if after >= 0 else -1
