"""The OpenAI Realtime API's transcription protocol as Parley's proxy socket speaks it
(`/v1/realtime`): client events in, server events out, errors in the API's shape.

Only what a transcription session uses: `session.update`, `input_audio_buffer.append`,
`.commit` and `.clear`. Audio is PCM16 mono 24 kHz, base64 in `audio`.
"""

from __future__ import annotations

import base64
import binascii
import secrets
from dataclasses import dataclass

from rooms import frames

INPUT_RATE = 24000
# One append carries at most this much decoded audio (~10.9 s); the API allows 15 MiB per
# event, but daphne reads at most 1 MiB per WebSocket message (larger ones end the connection
# with 1009 before Parley sees them), a browser sends 20-100 ms chunks, and a bound keeps one
# client from stalling the engine. Its base64 in an event fits MAX_FRAME_CHARS.
MAX_APPEND_BYTES = 512 * 1024
MAX_FRAME_CHARS = 1_000_000  # under daphne's 1 MiB; past it, `frame_too_large`
MIN_COMMIT_BYTES = INPUT_RATE * 2 // 10  # 100 ms, as the API requires
# Audio a socket may hold that its engine has not taken yet (~44 s): a browser streams in real
# time and never comes near it; a client uploading faster than the engine decodes is told
# `audio_backlog_full` rather than growing the server's memory.
MAX_BACKLOG_BYTES = 2 * 1024 * 1024
MAX_EVENT_ID_CHARS = 128  # echoed back in errors; the SDK's ids are ~30 characters


class RealtimeError(Exception):
    def __init__(self, code: str, message: str, *, param: str | None = None,
                 event_id: str | None = None, kind: str = "invalid_request_error"):
        super().__init__(message)
        self.code, self.message, self.param, self.event_id, self.kind = (
            code, message, param, event_id, kind)

    def event(self) -> dict:
        return server_event("error", error={
            "type": self.kind, "code": self.code, "message": self.message,
            "param": self.param, "event_id": self.event_id,
        })


def server_event(kind: str, **fields) -> dict:
    return {"type": kind, "event_id": "event_" + secrets.token_hex(10), **fields}


@dataclass(frozen=True)
class Append:
    audio: bytes


@dataclass(frozen=True)
class Commit:
    pass


@dataclass(frozen=True)
class Clear:
    pass


@dataclass(frozen=True)
class SessionUpdate:
    session: dict


ClientEvent = Append | Commit | Clear | SessionUpdate


def parse_client_event(text: str | None, binary: bytes | None) -> ClientEvent:
    """One client event from a raw frame (the WebRTC data channel's; the socket's frames are
    decoded by its base class and go straight to `client_event`)."""
    try:
        data = frames.decode_frame(text, binary, max_bytes=MAX_FRAME_CHARS)
    except frames.FrameError as error:
        raise frame_error(error.code, error.message) from None
    return client_event(data)


def frame_error(code: str, message: str) -> RealtimeError:
    """A refused frame (rooms/frames.py codes) in the Realtime API's error shape."""
    if code in (frames.BAD_JSON, frames.BAD_FRAME, frames.BINARY_NOT_SUPPORTED):
        code = "invalid_json"
    return RealtimeError(code, message)


def client_event(data: dict) -> ClientEvent:
    """Validate a decoded client event, every nested field of it."""
    event_id = data.get("event_id") if isinstance(data.get("event_id"), str) else None
    if event_id is not None and len(event_id) > MAX_EVENT_ID_CHARS:
        raise RealtimeError("invalid_value", f"event_id is limited to {MAX_EVENT_ID_CHARS} "
                            "characters.", param="event_id")
    kind = data.get("type")
    if not isinstance(kind, str):
        raise RealtimeError("missing_required_parameter", "Missing 'type'.", param="type",
                            event_id=event_id)
    if kind == "input_audio_buffer.append":
        return Append(_audio(data, event_id))
    if kind == "input_audio_buffer.commit":
        return Commit()
    if kind == "input_audio_buffer.clear":
        return Clear()
    if kind == "session.update":
        session = data.get("session")
        if not isinstance(session, dict):
            raise RealtimeError("missing_required_parameter", "Missing 'session'.",
                                param="session", event_id=event_id)
        check_session(session, event_id)
        return SessionUpdate(session)
    raise RealtimeError("unknown_event_type", f"Unsupported event type {kind[:60]!r}.",
                        param="type", event_id=event_id)


def _audio(data: dict, event_id: str | None) -> bytes:
    audio = data.get("audio")
    if not isinstance(audio, str):
        raise RealtimeError("missing_required_parameter", "Missing 'audio' (base64 PCM16).",
                            param="audio", event_id=event_id)
    try:
        pcm = base64.b64decode(audio, validate=True)
    except (binascii.Error, ValueError):
        raise RealtimeError("invalid_base64", "'audio' is not valid base64.", param="audio",
                            event_id=event_id) from None
    if len(pcm) > MAX_APPEND_BYTES:
        raise RealtimeError("audio_too_large",
                            f"An append carries at most {MAX_APPEND_BYTES} bytes of audio.",
                            param="audio", event_id=event_id)
    if len(pcm) % 2:
        raise RealtimeError("invalid_audio_length", "PCM16 audio has an even number of bytes.",
                            param="audio", event_id=event_id)
    return pcm


# The transcription session as a client may update it, field by field (the GA interface's
# `session.update` for `type: "transcription"`): each value is a checker, a nested shape, or
# a tuple of allowed values. Anything else is refused, as the API refuses unknown parameters:
# the OpenAI engine passes updates upstream, so nothing unchecked may ride along.
def _text(limit: int):
    def check(value) -> bool:
        return isinstance(value, str) and len(value) <= limit
    return check


def _number(low: float, high: float):
    def check(value) -> bool:
        return isinstance(value, int | float) and not isinstance(value, bool) and \
            low <= value <= high
    return check


def _boolean(value) -> bool:
    return isinstance(value, bool)


def _includes(value) -> bool:
    return isinstance(value, list) and len(value) <= 4 and all(
        item in ("item.input_audio_transcription.logprobs",) for item in value)


_TURN_DETECTION = {
    "type": ("server_vad", "semantic_vad"),
    "threshold": _number(0, 1),
    "prefix_padding_ms": _number(0, 10_000),
    "silence_duration_ms": _number(0, 10_000),
    "eagerness": ("low", "medium", "high", "auto"),
    "create_response": _boolean,
    "interrupt_response": _boolean,
    "idle_timeout_ms": _number(0, 600_000),
}
SESSION_SHAPE = {
    "type": ("transcription",),
    "audio": {"input": {
        "format": {"type": ("audio/pcm",), "rate": (INPUT_RATE,)},
        "transcription": {"model": _text(100), "language": _text(16), "prompt": _text(4096)},
        "turn_detection": (None, _TURN_DETECTION),
        "noise_reduction": (None, {"type": ("near_field", "far_field")}),
    }},
    "include": _includes,
}


def check_session(session: dict, event_id: str | None) -> None:
    """Refuse what Parley cannot honour (another session type or audio format) and any field
    that is not in SESSION_SHAPE or not of its type."""
    _check_shape(session, SESSION_SHAPE, "session", event_id)


def _check_shape(value, shape, path: str, event_id: str | None) -> None:
    if isinstance(shape, dict):
        if not isinstance(value, dict):
            raise RealtimeError("invalid_type", f"{path} must be an object.", param=path,
                                event_id=event_id)
        for key, child in value.items():
            if key not in shape:
                raise RealtimeError("unknown_parameter", f"Unknown parameter {path}.{key[:40]}.",
                                    param=f"{path}.{key[:40]}", event_id=event_id)
            _check_shape(child, shape[key], f"{path}.{key}", event_id)
        return
    if isinstance(shape, tuple):
        for option in shape:
            if isinstance(option, dict) and isinstance(value, dict):
                _check_shape(value, option, path, event_id)
                return
            if option is None and value is None or (
                    not isinstance(option, dict) and value == option and
                    type(value) is type(option)):
                return
        if path == "session.audio.input.format.type" or path.endswith("format.rate"):
            raise RealtimeError("unsupported_audio_format",
                                "Input audio must be audio/pcm at 24000 Hz (PCM16 mono).",
                                param="session.audio.input.format", event_id=event_id)
        if path == "session.type":
            raise RealtimeError("invalid_value", "Only transcription sessions are served here.",
                                param=path, event_id=event_id)
        raise RealtimeError("invalid_value", f"{path} has a value Parley does not accept.",
                            param=path, event_id=event_id)
    if not shape(value):
        raise RealtimeError("invalid_value", f"{path} has a value of the wrong type or range.",
                            param=path, event_id=event_id)
