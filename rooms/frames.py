"""The one decoding step every Parley socket uses for a client's text frame (issue #10).

JSON from a client is hostile until proven otherwise. `json.loads` alone accepts what later
breaks the server: nesting deep enough to raise RecursionError (a 6 KB frame of `[` crashed
every socket with 1011), and `"\\ud800"` escapes that decode to lone surrogates, which cannot
be encoded back to UTF-8 when the text is stored or relayed. Here each frame is bounded in
size, depth and value count and checked for lone surrogates before any handler sees it;
every refusal is a FrameError with a documented code (docs/protocol.md, "Limits").
"""

from __future__ import annotations

import json
from typing import Any

# How deep a frame may nest. Parley's deepest message (a Realtime `session.update`:
# session.audio.input.turn_detection.*) is five levels; 32 leaves room for growth and is far
# below the ~1,000 levels at which the parser itself would give up.
MAX_DEPTH = 32
# How many JSON values (objects, arrays, strings, numbers, ...) one frame may hold: bounds
# the walk below and what a handler may be asked to look at.
MAX_VALUES = 4096

# Error codes (the same strings as rooms.protocol's; transcription maps them to the
# Realtime API's own error shape).
BAD_JSON = "bad_json"
BAD_FRAME = "bad_frame"
BINARY_NOT_SUPPORTED = "binary_not_supported"
FRAME_TOO_LARGE = "frame_too_large"
TOO_DEEP = "too_deep"
BAD_TEXT = "bad_text"


class FrameError(Exception):
    """A frame refused before any handler saw it."""

    def __init__(self, code: str, message: str):
        super().__init__(message)
        self.code = code
        self.message = message
        # The decoded object when only a nested value was refused: lets the socket name the
        # refused message (its client_id) so the client stops resending it.
        self.data: dict | None = None


def decode_frame(text: str | None, binary: bytes | None, *, max_bytes: int) -> dict[str, Any]:
    """One client frame as a JSON object, or FrameError."""
    if binary is not None:
        raise FrameError(BINARY_NOT_SUPPORTED, "Binary frames are not supported; send JSON.")
    if text is None:
        raise FrameError(BAD_FRAME, "Empty frame.")
    # Characters bound bytes from below (UTF-8 takes 1-4 per character): most frames are
    # judged without encoding them.
    if len(text) > max_bytes or (
            len(text) * 4 > max_bytes and len(text.encode("utf-8", "surrogatepass")) > max_bytes):
        raise FrameError(FRAME_TOO_LARGE, f"Frames are limited to {max_bytes} bytes.")
    try:
        data = json.loads(text)
    except RecursionError:
        raise FrameError(TOO_DEEP, f"JSON may nest at most {MAX_DEPTH} levels.") from None
    except ValueError:
        raise FrameError(BAD_JSON, "The frame is not valid JSON.") from None
    if not isinstance(data, dict):
        raise FrameError(BAD_FRAME, "A frame must be a JSON object with a 'type'.")
    try:
        check_value(data)
    except FrameError as error:
        error.data = data
        raise
    return data


def check_value(value: Any) -> None:
    """Walk a decoded value without recursion: bounded depth and size, no lone surrogates."""
    pending: list[tuple[Any, int]] = [(value, 1)]
    seen = 0
    while pending:
        item, depth = pending.pop()
        seen += 1
        if seen > MAX_VALUES:
            raise FrameError(FRAME_TOO_LARGE, f"A frame may hold at most {MAX_VALUES} values.")
        if isinstance(item, str):
            _check_text(item)
        elif isinstance(item, dict | list):
            if depth >= MAX_DEPTH:
                raise FrameError(TOO_DEEP, f"JSON may nest at most {MAX_DEPTH} levels.")
            if isinstance(item, dict):
                for key, child in item.items():
                    _check_text(key)
                    pending.append((child, depth + 1))
            else:
                pending.extend((child, depth + 1) for child in item)


def _check_text(text: str) -> None:
    # Only a `\ud800`-style escape can produce a lone surrogate (a WebSocket text frame is
    # valid UTF-8); encoding finds one in C at memory speed.
    if text.isascii():
        return
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        raise FrameError(BAD_TEXT, "Text must be valid Unicode (no lone surrogates).") from None
