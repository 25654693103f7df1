"""The OpenAI Realtime API's transcription protocol as Parley's proxy socket speaks it
(`/v1/realtime`): client events in, server events out, errors in the API's shape.

Only what a transcription session uses: `session.update`, `input_audio_buffer.append`,
`.commit` and `.clear`. Audio is PCM16 mono 24 kHz, base64 in `audio`.
"""

from __future__ import annotations

import base64
import binascii
import json
import secrets
from dataclasses import dataclass

INPUT_RATE = 24000
# One append carries at most this much decoded audio (~21 s); the API allows 15 MiB per event,
# but a browser sends 20-100 ms chunks and a bound keeps one client from stalling the engine.
MAX_APPEND_BYTES = 1024 * 1024
MAX_FRAME_CHARS = 2 * MAX_APPEND_BYTES  # base64 of the above plus JSON
MIN_COMMIT_BYTES = INPUT_RATE * 2 // 10  # 100 ms, as the API requires


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
    if binary is not None:
        raise RealtimeError("invalid_json", "Binary frames are not supported; send JSON text.")
    if text is None or len(text) > MAX_FRAME_CHARS:
        raise RealtimeError("invalid_json", f"Events are limited to {MAX_FRAME_CHARS} characters.")
    try:
        data = json.loads(text)
    except ValueError:
        raise RealtimeError("invalid_json", "The event is not valid JSON.") from None
    if not isinstance(data, dict):
        raise RealtimeError("invalid_json", "An event must be a JSON object.")
    event_id = data.get("event_id") if isinstance(data.get("event_id"), str) else None
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


def check_session(session: dict, event_id: str | None) -> None:
    """Refuse what Parley cannot honour: another session type or another audio format."""
    if session.get("type", "transcription") != "transcription":
        raise RealtimeError("invalid_value", "Only transcription sessions are served here.",
                            param="session.type", event_id=event_id)
    audio_format = (session.get("audio") or {}).get("input", {}).get("format") or {}
    if audio_format.get("type", "audio/pcm") != "audio/pcm" or \
            audio_format.get("rate", INPUT_RATE) != INPUT_RATE:
        raise RealtimeError("unsupported_audio_format",
                            "Input audio must be audio/pcm at 24000 Hz (PCM16 mono).",
                            param="session.audio.input.format", event_id=event_id)
