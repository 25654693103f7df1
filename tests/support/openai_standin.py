"""A stand-in for the OpenAI Realtime API's GA transcription interface, for tests and offline
demos (spec: ../shared/notes/transcription-facts.md).

Parley talks to it exactly as to OpenAI: the official SDK (`base_url`/`websocket_base_url`
pointed here), browsers with a plain WebSocket (subprotocols `realtime` +
`openai-insecure-api-key.<key>`) or WebRTC (`POST /v1/realtime/calls`). Transcripts are real:
Parley's offline Whisper model recognises each turn's audio, and an energy VAD on 20 ms frames
finds the turns. Faults (delays, failed turns, dropped
connections, reordered completions, expiry, bad keys, quota) are injected through `Faults`, or
`POST /_standin/faults` for a server in another process.

Choices where the real API is unknown or the brief left it open:
- Bad, missing or expired keys: the WebSocket handshake (and every REST call) is refused with
  HTTP 401 and OpenAI's REST error body, code `invalid_api_key` (also for a missing key).
- `OpenAI-Beta: realtime=v1`: the socket is accepted, gets an `error` of code
  `beta_api_retired`, then close code 1008. Quota: `error` `insufficient_quota` (type
  `insufficient_quota`), close 1008, no `session.created`; REST calls get 429 with that body.
- Session expiry: `error` `session_expired`, then close code 1000 (the SDK's iterator ends).
- Unknown client event types: `error` code `invalid_value`, param `type` (the message lists
  the supported types). GA event types a transcription session has no use for
  (`response.create`, ...) get the same.
- Conversation (`?model=`) sessions answer from a script (`server.script`, `Reply`, or
  `POST /_standin/script`), not a model: text deltas, audio deltas (a 440 Hz tone paced in
  real time, its transcript spread over it) or a function call; `response.cancel` and speech
  under VAD (`interrupt_response`) stop a response (`response.done` status `cancelled`); VAD
  turns create a response (`create_response`). Usage counts a token per 4 characters.
  `output_audio_buffer.clear` and item retrieve/delete get `standin_not_implemented`.
- Unknown keys in a session config: `unknown_parameter` with the key's path as param (catches
  beta-shaped configs such as `input_audio_transcription`). Binary frames: `invalid_json`.
- `audio.input.format` must be `audio/pcm` at 24000 Hz (the real API also takes G.711
  `audio/pcmu` and `audio/pcma`; the stand-in refuses them with `invalid_value`).
- A failed turn's error: type `server_error`, code `transcription_failed`.
- With `out_of_order`, a trailing odd turn's completion waits for its partner turn (pairs are
  decided when the odd turn commits); it never arrives if no further turn is committed.
- A commit under server VAD outside speech commits the retained tail of the buffer (at most
  `prefix_padding_ms`); during speech it ends the turn without `speech_stopped`.
- WebRTC: an ek_ key's bound session decides the session type; with the standard key the
  multipart `session` field does, else a conversation session (as the real API). A WebSocket
  with `?call_id=rtc_...` (standard key) joins that call as a sideband connection and receives
  its events from then on.
- Streaming models (`gpt-realtime-whisper`, `gpt-live-transcribe`) give text after a commit like
  the others (real time-to-first-delta is not modelled).
- With a language model, the decoder gets a dictionary of just the model's words (see
  `lm_dictionary`): the full dictionary makes each decoder take 9-13 s to load.

For tests: `StandinServer.wait_for_sessions()` and `wait_until(predicate)` are event-based and
run on the server's loop (`server.loop`; for `standin_in_thread` use
`asyncio.run_coroutine_threadsafe(..., server.loop)`). `server.client_secrets[value].expires_at`
can be moved into the past to expire an ek_ key without waiting.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import binascii
import contextlib
import copy
import json
import math
import operator
import re
import secrets
import threading
import time
from array import array
from collections import defaultdict, deque
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field, fields
from typing import Any

import av
from aiohttp import WSMsgType, web

INPUT_RATE = 24000
DECODER_RATE = 16000
BYTES_PER_SAMPLE = 2
BYTES_PER_MS = INPUT_RATE * BYTES_PER_SAMPLE // 1000  # 48
FRAME_MS = 20
FRAME_BYTES = FRAME_MS * BYTES_PER_MS  # 960
MIN_COMMIT_MS = 100
SPEECH_START_FRAMES = 3  # 60 ms above the threshold starts speech
MAX_EVENT_BYTES = 16 * 1024 * 1024  # the API allows 15 MiB of audio per append, plus JSON
MAX_PENDING_RTC_EVENTS = 1000  # events queued before the browser's data channel opens
EXPIRY_RECHECK_SECONDS = 0.5  # session_seconds is re-read this often, so changes apply

DEFAULT_TRANSCRIPTION_MODEL = "gpt-4o-transcribe"
DEFAULT_REALTIME_MODEL = "gpt-realtime"
TRANSCRIPTION_MODELS = frozenset({
    "whisper-1", "gpt-transcribe", "gpt-live-transcribe", "gpt-4o-mini-transcribe",
    "gpt-4o-mini-transcribe-2025-12-15", "gpt-4o-transcribe", "gpt-4o-transcribe-diarize",
    "gpt-realtime-whisper",
})
STREAMING_MODELS = frozenset({"gpt-realtime-whisper", "gpt-live-transcribe"})
HANDLED_EVENTS = ("session.update", "input_audio_buffer.append", "input_audio_buffer.commit",
                  "input_audio_buffer.clear")
GA_CLIENT_EVENTS = frozenset({
    *HANDLED_EVENTS, "conversation.item.create", "conversation.item.retrieve",
    "conversation.item.truncate", "conversation.item.delete", "response.create",
    "response.cancel", "output_audio_buffer.clear",
})
HEADERS_OF_INTEREST = ("user-agent", "openai-beta", "origin", "openai-organization",
                       "openai-project", "content-type", "sec-websocket-protocol")
KEY_PROTOCOL = "openai-insecure-api-key."


@dataclass
class Faults:
    """Injected faults. Mutable: each is read at the moment its behaviour happens."""

    delay_ms: int = 0
    fail_turns: set[int] = field(default_factory=set)
    drop_after_events: int | None = None
    out_of_order: bool = False
    session_seconds: float = 3600
    reject_key: bool = False
    quota_exceeded: bool = False

    def update(self, values: dict[str, Any]) -> None:
        """Apply a JSON object of fields (fail_turns as a list); ValueError on bad input."""
        known = {f.name for f in fields(self)}
        unknown = set(values) - known
        if unknown:
            raise ValueError(f"unknown fault(s): {sorted(unknown)}")
        for name, value in values.items():
            if name == "fail_turns":
                if not isinstance(value, list) or not all(_is_int(v) for v in value):
                    raise ValueError("fail_turns must be a list of integers")
                value = set(value)
            elif name in ("out_of_order", "reject_key", "quota_exceeded"):
                if not isinstance(value, bool):
                    raise ValueError(f"{name} must be a boolean")
            elif name == "drop_after_events":
                if value is not None and not _is_int(value):
                    raise ValueError("drop_after_events must be an integer or null")
            elif name == "delay_ms" and not _is_int(value):
                raise ValueError("delay_ms must be an integer")
            elif name == "session_seconds" and not _is_number(value):
                raise ValueError("session_seconds must be a number")
            setattr(self, name, value)

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["fail_turns"] = sorted(self.fail_turns)
        return data


@dataclass
class SessionRecord:
    """What one accepted session saw, for assertions."""

    id: str
    transport: str  # "websocket" | "webrtc"
    auth: str  # "bearer" | "subprotocol" (standard key) | "ephemeral" (an ek_ key)
    query: dict[str, str]
    headers: dict[str, str]
    kind: str = "transcription"  # or "realtime" (a conversation session)
    call_id: str | None = None
    client_events: list[str] = field(default_factory=list)
    server_events: list[str] = field(default_factory=list)
    config: dict[str, Any] = field(default_factory=dict)
    closed: bool = False
    sideband_connections: int = 0

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class ClientSecret:
    value: str
    expires_at: float  # unix time; tests may move it into the past
    session: dict[str, Any]


class ApiError(Exception):
    """An API error, rendered as an `error` event or a REST error body."""

    def __init__(self, code: str | None, message: str, *, param: str | None = None,
                 kind: str = "invalid_request_error", status: int = 400):
        super().__init__(message)
        self.code, self.message, self.param, self.kind, self.status = (
            code, message, param, kind, status)

    def body(self) -> dict[str, Any]:
        return {"error": {"message": self.message, "type": self.kind, "param": self.param,
                          "code": self.code}}

    def response(self) -> web.Response:
        return web.json_response(self.body(), status=self.status)

    def event_error(self, client_event_id: str | None) -> dict[str, Any]:
        return {"type": self.kind, "code": self.code, "message": self.message,
                "param": self.param, "event_id": client_event_id}


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _new_id(prefix: str) -> str:
    return f"{prefix}_{secrets.token_hex(12)}"


def _masked(key: str) -> str:
    return f"{key[:5]}***{key[-4:]}" if len(key) > 12 else "***"


def _bad_key(message: str) -> ApiError:
    return ApiError("invalid_api_key", message, status=401)


def _quota() -> ApiError:
    return ApiError("insufficient_quota", "You exceeded your current quota, please check your "
                    "plan and billing details.", kind="insufficient_quota", status=429)


# --- Session configuration -----------------------------------------------------------------

def _pcm_format() -> dict[str, Any]:
    return {"type": "audio/pcm", "rate": INPUT_RATE}


def _default_turn_detection(kind: str) -> dict[str, Any]:
    if kind == "semantic_vad":
        return {"type": "semantic_vad", "eagerness": "auto"}
    return {"type": "server_vad", "threshold": 0.5, "prefix_padding_ms": 300,
            "silence_duration_ms": 500}


def default_session(kind: str, model: str | None = None) -> dict[str, Any]:
    """A new session object as `session.created` shows it (GA shape)."""
    audio_input = {"format": _pcm_format(), "transcription": None,
                   "turn_detection": _default_turn_detection("server_vad"),
                   "noise_reduction": None}
    if kind == "transcription":
        audio_input["transcription"] = {"model": DEFAULT_TRANSCRIPTION_MODEL, "language": None,
                                        "prompt": ""}
        return {"type": "transcription", "object": "realtime.transcription_session",
                "id": _new_id("sess"), "expires_at": 0, "include": None,
                "audio": {"input": audio_input}}
    return {"type": "realtime", "object": "realtime.session", "id": _new_id("sess"),
            "model": model or DEFAULT_REALTIME_MODEL, "output_modalities": ["audio"],
            "instructions": "", "tools": [], "tool_choice": "auto", "max_output_tokens": "inf",
            "tracing": None, "truncation": "auto", "prompt": None, "expires_at": 0,
            "include": None,
            "audio": {"input": audio_input,
                      "output": {"format": _pcm_format(), "voice": "alloy", "speed": 1.0}}}


_TRANSCRIPTION_KEYS = frozenset({"type", "audio", "include"})
_REALTIME_KEYS = frozenset({
    "type", "audio", "include", "model", "output_modalities", "instructions", "tools",
    "tool_choice", "max_output_tokens", "tracing", "truncation", "prompt", "reasoning",
})


def _require_dict(value: Any, param: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise ApiError("invalid_type", f"Invalid type for '{param}': expected an object.",
                       param=param)
    return value


def _reject_unknown(value: dict[str, Any], allowed: frozenset[str] | set[str],
                    param: str) -> None:
    for key in value:
        if key not in allowed:
            path = f"{param}.{key}" if param else key
            raise ApiError("unknown_parameter", f"Unknown parameter: '{path}'.", param=path)


def apply_session_update(current: dict[str, Any], update: Any) -> dict[str, Any]:
    """The session after `update` (a session.update's `session`); raises ApiError, leaving
    `current` untouched, when anything in it is invalid."""
    update = _require_dict(update, "session")
    kind = current["type"]
    if "type" not in update:
        raise ApiError("missing_required_parameter", "Missing required parameter: "
                       "'session.type'.", param="session.type")
    if update["type"] != kind:
        raise ApiError("invalid_value", f"Invalid value: '{update['type']}'. This is a "
                       f"'{kind}' session; its session.type cannot change.",
                       param="session.type")
    _reject_unknown(update, _TRANSCRIPTION_KEYS if kind == "transcription" else _REALTIME_KEYS,
                    "session")
    new = copy.deepcopy(current)
    if "audio" in update:
        audio = _require_dict(update["audio"], "session.audio")
        _reject_unknown(audio, {"input"} if kind == "transcription" else {"input", "output"},
                        "session.audio")
        if "input" in audio:
            new["audio"]["input"] = _merge_input(new["audio"]["input"], audio["input"],
                                                 "session.audio.input")
        if "output" in audio:
            new["audio"]["output"].update(_require_dict(audio["output"],
                                                        "session.audio.output"))
    if "include" in update:
        include = update["include"]
        if include is not None and (not isinstance(include, list) or any(
                item != "item.input_audio_transcription.logprobs" for item in include)):
            raise ApiError("invalid_value", "Invalid value for 'session.include'.",
                           param="session.include")
        new["include"] = include
    if "tools" in update:
        _check_tools(update["tools"])
    if "output_modalities" in update and update["output_modalities"] not in (["text"],
                                                                              ["audio"]):
        raise ApiError("invalid_value", "output_modalities must be ['text'] or ['audio'].",
                       param="session.output_modalities")
    for key in update.keys() - {"type", "audio", "include"}:
        new[key] = update[key]
    audio_input = new["audio"]["input"]
    model = (audio_input["transcription"] or {}).get("model")
    if model in STREAMING_MODELS and audio_input["turn_detection"] is not None:
        raise ApiError("invalid_value", f"Model '{model}' does not support turn detection: "
                       "set session.audio.input.turn_detection to null.",
                       param="session.audio.input.turn_detection")
    return new


def _merge_input(current: dict[str, Any], update: Any, param: str) -> dict[str, Any]:
    update = _require_dict(update, param)
    _reject_unknown(update, {"format", "transcription", "turn_detection", "noise_reduction"},
                    param)
    new = dict(current)
    if "format" in update:
        fmt = update["format"]
        if not isinstance(fmt, dict) or fmt.get("type") != "audio/pcm" \
                or fmt.get("rate", INPUT_RATE) != INPUT_RATE or set(fmt) - {"type", "rate"}:
            raise ApiError("invalid_value", f"Invalid value for '{param}.format': {fmt!r}. "
                           "This stand-in supports only {'type': 'audio/pcm', 'rate': 24000}.",
                           param=f"{param}.format")
        new["format"] = _pcm_format()
    if "transcription" in update:
        new["transcription"] = _merge_transcription(current["transcription"],
                                                    update["transcription"],
                                                    f"{param}.transcription")
    if "turn_detection" in update:
        new["turn_detection"] = _merge_turn_detection(current["turn_detection"],
                                                      update["turn_detection"],
                                                      f"{param}.turn_detection")
    if "noise_reduction" in update:
        noise = update["noise_reduction"]
        if noise is not None:
            noise = _require_dict(noise, f"{param}.noise_reduction")
            _reject_unknown(noise, {"type", "strength"}, f"{param}.noise_reduction")
            if noise.get("type") not in ("near_field", "far_field"):
                raise ApiError("invalid_value", "Invalid value for noise_reduction.type: "
                               "expected 'near_field' or 'far_field'.",
                               param=f"{param}.noise_reduction.type")
        new["noise_reduction"] = noise
    return new


def _merge_transcription(current: dict[str, Any] | None, update: Any,
                         param: str) -> dict[str, Any] | None:
    if update is None:
        return None
    update = _require_dict(update, param)
    _reject_unknown(update, {"model", "language", "prompt", "delay", "keywords", "languages"},
                    param)
    new = dict(current or {"model": DEFAULT_TRANSCRIPTION_MODEL, "language": None,
                           "prompt": ""})
    if "model" in update and update["model"] not in TRANSCRIPTION_MODELS:
        raise ApiError("invalid_value", f"Invalid value: '{update['model']}'. Supported "
                       f"values are: {', '.join(sorted(TRANSCRIPTION_MODELS))}.",
                       param=f"{param}.model")
    for key in ("language", "prompt"):
        if key in update and update[key] is not None and not isinstance(update[key], str):
            raise ApiError("invalid_type", f"Invalid type for '{param}.{key}': expected a "
                           "string.", param=f"{param}.{key}")
    new.update(update)
    return new


_VAD_FIELDS = {
    "server_vad": {"type", "threshold", "prefix_padding_ms", "silence_duration_ms",
                   "idle_timeout_ms", "create_response", "interrupt_response"},
    "semantic_vad": {"type", "eagerness", "create_response", "interrupt_response"},
}


def _merge_turn_detection(current: dict[str, Any] | None, update: Any,
                          param: str) -> dict[str, Any] | None:
    if update is None:
        return None
    update = _require_dict(update, param)
    kind = update.get("type", (current or {}).get("type"))
    if kind not in _VAD_FIELDS:
        raise ApiError("invalid_value", f"Invalid value: '{kind}'. Supported values are: "
                       "'server_vad' and 'semantic_vad'.", param=f"{param}.type")
    _reject_unknown(update, _VAD_FIELDS[kind], param)
    new = dict(current) if current and current.get("type") == kind \
        else _default_turn_detection(kind)
    if "threshold" in update and not (_is_number(update["threshold"])
                                      and 0 <= update["threshold"] <= 1):
        raise ApiError("invalid_value", "threshold must be a number between 0 and 1.",
                       param=f"{param}.threshold")
    for key in ("prefix_padding_ms", "silence_duration_ms"):
        if key in update and not (_is_int(update[key]) and update[key] >= 0):
            raise ApiError("invalid_value", f"{key} must be a non-negative integer.",
                           param=f"{param}.{key}")
    if "eagerness" in update and update["eagerness"] not in ("low", "medium", "high", "auto"):
        raise ApiError("invalid_value", "eagerness must be low, medium, high or auto.",
                       param=f"{param}.eagerness")
    new.update(update)
    return new


@dataclass(frozen=True)
class _Vad:
    threshold_db: float
    prefix_frames: int
    silence_frames: int

    @classmethod
    def of(cls, turn_detection: dict[str, Any] | None) -> _Vad | None:
        """Energy VAD settings; semantic_vad is treated as server_vad with default numbers."""
        if turn_detection is None:
            return None
        server = turn_detection if turn_detection["type"] == "server_vad" \
            else _default_turn_detection("server_vad")
        threshold = server.get("threshold", 0.5)
        prefix = server.get("prefix_padding_ms", 300)
        silence = server.get("silence_duration_ms", 500)
        return cls(threshold_db=-60 + 50 * threshold, prefix_frames=math.ceil(prefix / FRAME_MS),
                   silence_frames=max(1, math.ceil(silence / FRAME_MS)))


def _dbfs(frame: bytes) -> float:
    samples = array("h")
    samples.frombytes(frame)
    power = sum(map(operator.mul, samples, samples)) / max(1, len(samples))
    return 10 * math.log10(power / 32768**2) if power else -120.0


def split_deltas(transcript: str) -> list[str]:
    """The transcript as 1-3 deltas (2-3 once there are two words) that concatenate to it."""
    words = transcript.split()
    if not words:
        return [transcript]
    pieces = 1 if len(words) == 1 else 2 if len(words) <= 3 else 3
    size, extra = divmod(len(words), pieces)
    deltas, start = [], 0
    for n in range(pieces):
        end = start + size + (n < extra)
        deltas.append((" " if n else "") + " ".join(words[start:end]))
        start = end
    return deltas


# --- Recognition ---------------------------------------------------------------------------

class _Recogniser:
    """One session's recognition with Parley's offline Whisper model (the process's loaded
    model, transcription/offline.py), used only from the session's own thread (a decode can
    take a second, so never on the event loop)."""

    def __init__(self) -> None:
        self.executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="standin-stt")
        self.resample: Any = None
        self.audio: list[Any] = []

    def run(self, ops: list[tuple]) -> list[tuple[asyncio.Future, str | BaseException]]:
        """Apply ("start",) / ("audio", pcm24k) / ("end", future) / ("discard",) in order;
        returns each end's transcript (or exception) for the loop to deliver."""
        results: list[tuple[asyncio.Future, str | BaseException]] = []
        for op in ops:
            if op[0] == "start":
                self._start()
            elif op[0] == "audio":
                self.audio.append(self.resample(bytes(op[1])))
            elif op[0] == "end":
                try:
                    results.append((op[1], self._end()))
                except Exception as exc:  # a broken turn fails alone, as a failed event
                    results.append((op[1], exc))
            elif op[0] == "discard":
                self.audio = []
        return results

    def _start(self) -> None:
        from transcription.offline import Resampler

        # A fresh resampler per utterance: the filter must not carry one turn into the next.
        self.resample, self.audio = Resampler(), []

    def _end(self) -> str:
        import numpy as np

        from transcription.offline import model_location, transcribe, whisper_model

        audio, self.audio = self.audio, []
        if not audio or not sum(len(a) for a in audio):
            return ""
        return transcribe(whisper_model(model_location(""), 1), np.concatenate(audio))

    def close(self) -> None:
        self.executor.shutdown(wait=False, cancel_futures=True)


# --- Conversation sessions -----------------------------------------------------------------
# A `?model=` session holds a conversation (docs: Realtime conversations, GA event names).
# There is no model: each response.create takes the next scripted `Reply` (see `Script`), so
# a test decides what the "model" says or which function it calls, and Parley's code path is
# the one it runs against OpenAI. Without a script the reply echoes the last user text.

OUTPUT_RATE = INPUT_RATE  # output audio is PCM16 mono 24 kHz too
AUDIO_CHUNK_MS = 100  # one response.output_audio.delta per 100 ms of audio
AUDIO_MS_PER_CHAR = 40  # a spoken reply lasts about this long per character of its text
TONE_HZ = 440.0


@dataclass
class Reply:
    """One scripted response. `text` may hold `{tool_output}`: the output of the last
    function_call_output item the client created (so a test sees a tool's result used)."""

    text: str = ""
    call: str | None = None  # call this function (with `arguments`) instead of answering
    arguments: dict[str, Any] | str = field(default_factory=dict)  # str: sent as it is
    error: str | None = None  # answer response.create with an `error` of this code instead
    audio_ms: int | None = None  # spoken length (audio output); None: from the text

    @classmethod
    def of(cls, data: dict[str, Any]) -> Reply:
        known = {f.name for f in fields(cls)}
        if not isinstance(data, dict) or set(data) - known:
            raise ValueError(f"a reply is an object with keys among {sorted(known)}")
        return cls(**data)


@dataclass
class Script:
    """What conversation sessions answer, in order (shared by all of a server's sessions).
    Mutable: read when each response starts."""

    replies: deque[Reply] = field(default_factory=deque)
    delta_interval_ms: int = 0  # pause between text deltas (audio is paced in real time)
    audio_speed: float = 1.0  # >1 sends audio faster than real time

    def add(self, *replies: Reply) -> None:
        self.replies.extend(replies)


def tone_pcm(ms: int, start_sample: int = 0) -> bytes:
    """`ms` of a quiet sine tone as PCM16 mono 24 kHz (the stand-in's "voice")."""
    count = OUTPUT_RATE * ms // 1000
    samples = array("h", (int(8000 * math.sin(2 * math.pi * TONE_HZ * (start_sample + n)
                                              / OUTPUT_RATE)) for n in range(count)))
    return samples.tobytes()


_ITEM_TYPES = frozenset({"message", "function_call", "function_call_output"})
_CONTENT_TYPES = {"user": {"input_text", "input_audio"}, "system": {"input_text"},
                  "assistant": {"output_text", "output_audio"}}


def _check_item(item: Any) -> dict[str, Any]:
    """A conversation.item.create's item, validated as the API does (the parts Parley uses)."""
    item = _require_dict(item, "item")
    kind = item.get("type")
    if kind not in _ITEM_TYPES:
        raise ApiError("invalid_value", f"Invalid value: '{kind}'. Supported values are: "
                       f"{', '.join(sorted(_ITEM_TYPES))}.", param="item.type")
    if kind == "message":
        _reject_unknown(item, {"id", "type", "role", "content", "status", "object"}, "item")
        role = item.get("role")
        if role not in _CONTENT_TYPES:
            raise ApiError("invalid_value", f"Invalid value: '{role}'.", param="item.role")
        content = item.get("content")
        if not isinstance(content, list) or not content:
            raise ApiError("invalid_type", "'item.content' must be a non-empty array.",
                           param="item.content")
        for n, part in enumerate(content):
            part = _require_dict(part, f"item.content[{n}]")
            if part.get("type") not in _CONTENT_TYPES[role]:
                raise ApiError("invalid_value", f"Invalid content type for role '{role}'.",
                               param=f"item.content[{n}].type")
    elif kind == "function_call_output":
        _reject_unknown(item, {"id", "type", "call_id", "output", "object", "status"}, "item")
        for key in ("call_id", "output"):
            if not isinstance(item.get(key), str):
                raise ApiError("missing_required_parameter", f"Missing required parameter: "
                               f"'item.{key}'.", param=f"item.{key}")
    return {"id": item.get("id") or _new_id("item"), "object": "realtime.item",
            "status": "completed", **{k: v for k, v in item.items() if k != "id"}}


def _check_tools(tools: Any) -> None:
    if not isinstance(tools, list):
        raise ApiError("invalid_type", "'session.tools' must be an array.", param="session.tools")
    for n, tool in enumerate(tools):
        param = f"session.tools[{n}]"
        tool = _require_dict(tool, param)
        _reject_unknown(tool, {"type", "name", "description", "parameters"}, param)
        if tool.get("type") != "function" or not isinstance(tool.get("name"), str):
            raise ApiError("invalid_value", "A tool needs type 'function' and a name.",
                           param=param)
        if not isinstance(tool.get("parameters", {}), dict):
            raise ApiError("invalid_type", "'parameters' must be a JSON schema object.",
                           param=f"{param}.parameters")


def _tokens(text: str) -> int:
    return max(1, len(text) // 4)


class _Conversation:
    """The conversation half of a session: items, responses, cancellation, interruption."""

    def _init_conversation(self) -> None:
        self.items: list[dict[str, Any]] = []
        self.response_task: asyncio.Task | None = None
        self.response_id: str | None = None
        self.audio_sample = 0

    async def _conversation_event(self, kind: str, data: dict[str, Any]) -> None:
        if kind == "conversation.item.create":
            item = _check_item(data.get("item"))
            previous = self.items[-1]["id"] if self.items else None
            self.items.append(item)
            await self.send("conversation.item.added", previous_item_id=previous, item=item)
            await self.send("conversation.item.done", previous_item_id=previous, item=item)
        elif kind == "response.create":
            if self.response_task is not None:
                raise ApiError("conversation_already_has_active_response", "Conversation "
                               f"already has an active response in progress: "
                               f"{self.response_id}. Wait until the response is finished "
                               "before creating a new one.")
            self._start_response()
        elif kind == "response.cancel":
            if self.response_task is None:
                raise ApiError("response_cancel_not_active", "Cancellation failed: no active "
                               "response found.")
            await self._cancel_response()
        elif kind == "conversation.item.truncate":
            await self.send("conversation.item.truncated", item_id=data.get("item_id"),
                            content_index=data.get("content_index", 0),
                            audio_end_ms=data.get("audio_end_ms", 0))
        else:
            raise ApiError("standin_not_implemented", f"'{kind}' is not implemented by the "
                           "stand-in.", param="type")

    def _start_response(self) -> None:
        self.response_id = _new_id("resp")
        self.response_task = self.loop.create_task(self._respond(self.response_id))
        self.tasks.add(self.response_task)
        self.response_task.add_done_callback(self.tasks.discard)

    async def _cancel_response(self) -> None:
        task, self.response_task = self.response_task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def _speech_started(self) -> None:
        """Someone speaks over the answer: with interrupt_response (the default under VAD)
        the response is cancelled, as the API does."""
        detection = self.config["audio"]["input"]["turn_detection"] or {}
        if self.config["type"] == "realtime" and self.response_task is not None \
                and detection.get("interrupt_response", True):
            await self._cancel_response()

    def _turn_committed(self, item_id: str, *, vad: bool) -> None:
        if self.config["type"] != "realtime":
            return
        self.items.append({"id": item_id, "type": "message", "role": "user",
                           "content": [{"type": "input_audio", "transcript": None}]})
        detection = self.config["audio"]["input"]["turn_detection"] or {}
        if vad and detection.get("create_response", True) and self.response_task is None:
            self._start_response()

    def _last_user_text(self) -> str:
        for item in reversed(self.items):
            if item.get("type") == "message" and item.get("role") == "user":
                for part in item["content"]:
                    if part.get("type") == "input_text":
                        return part.get("text", "")
                return "(speech)"
        return ""

    def _last_tool_output(self) -> str:
        for item in reversed(self.items):
            if item.get("type") == "function_call_output":
                return item["output"]
        return ""

    async def _respond(self, response_id: str) -> None:
        script: Script = self.server.script
        reply = script.replies.popleft() if script.replies else Reply(
            text=f"You said: {self._last_user_text()}")
        if reply.error is not None:
            self.response_task = None
            await self.send_error(ApiError(reply.error, f"Scripted error: {reply.error}.",
                                           kind="server_error" if reply.error == "server_error"
                                           else "invalid_request_error"))
            return
        audio = "audio" in self.config.get("output_modalities", [])
        response = {"id": response_id, "object": "realtime.response", "status": "in_progress",
                    "status_details": None, "output": [], "usage": None,
                    "output_modalities": ["audio" if audio else "text"]}
        output: list[dict[str, Any]] = []
        status = "completed"
        await self.send("response.created", response=response)
        try:
            if reply.call is not None:
                output.append(await self._function_call(response_id, reply))
            else:
                text = reply.text.replace("{tool_output}", self._last_tool_output())
                output.append(await self._message(response_id, text, audio, reply.audio_ms))
        except asyncio.CancelledError:
            status = "cancelled"
        finally:
            if self.response_id == response_id:
                self.response_task = None
            done = {**response, "status": status, "output": output,
                    "status_details": {"type": "cancelled", "reason": "client_cancelled"}
                    if status == "cancelled" else None,
                    "usage": self._usage(output)}
            self.items.extend(output)
            await asyncio.shield(self.send("response.done", response=done))

    def _usage(self, output: list[dict[str, Any]]) -> dict[str, Any]:
        said = " ".join(json.dumps(item.get("content") or item.get("arguments") or "")
                        for item in output)
        heard = " ".join(json.dumps(item.get("content") or item.get("output") or "")
                         for item in self.items)
        input_tokens, output_tokens = _tokens(heard), _tokens(said)
        return {"total_tokens": input_tokens + output_tokens, "input_tokens": input_tokens,
                "output_tokens": output_tokens,
                "input_token_details": {"text_tokens": input_tokens, "audio_tokens": 0,
                                        "cached_tokens": 0},
                "output_token_details": {"text_tokens": output_tokens, "audio_tokens": 0}}

    async def _function_call(self, response_id: str, reply: Reply) -> dict[str, Any]:
        arguments = reply.arguments if isinstance(reply.arguments, str) \
            else json.dumps(reply.arguments)
        item = {"id": _new_id("item"), "object": "realtime.item", "type": "function_call",
                "status": "in_progress", "name": reply.call, "call_id": _new_id("call"),
                "arguments": ""}
        common = {"response_id": response_id, "item_id": item["id"], "output_index": 0,
                  "call_id": item["call_id"]}
        await self.send("response.output_item.added", response_id=response_id,
                        output_index=0, item=item)
        half = len(arguments) // 2
        for delta in (arguments[:half], arguments[half:]):
            if delta:
                await self.send("response.function_call_arguments.delta", **common, delta=delta)
        await self.send("response.function_call_arguments.done", **common, name=reply.call,
                        arguments=arguments)
        item = {**item, "status": "completed", "arguments": arguments}
        await self.send("response.output_item.done", response_id=response_id, output_index=0,
                        item=item)
        return item

    async def _message(self, response_id: str, text: str, audio: bool,
                       audio_ms: int | None) -> dict[str, Any]:
        script: Script = self.server.script
        kind = "output_audio" if audio else "output_text"
        item = {"id": _new_id("item"), "object": "realtime.item", "type": "message",
                "role": "assistant", "status": "in_progress", "content": []}
        common = {"response_id": response_id, "item_id": item["id"], "output_index": 0,
                  "content_index": 0}
        part: dict[str, Any] = {"type": kind, "transcript": ""} if audio \
            else {"type": kind, "text": ""}
        await self.send("response.output_item.added", response_id=response_id,
                        output_index=0, item=item)
        await self.send("response.content_part.added", **common, part=part)
        said = ""
        try:
            if audio:
                said = await self._speak(common, text, audio_ms, script)
            else:
                for delta in split_deltas(text) if text else []:
                    await self.send("response.output_text.delta", **common, delta=delta)
                    said += delta
                    if script.delta_interval_ms:
                        await asyncio.sleep(script.delta_interval_ms / 1000)
                await self.send("response.output_text.done", **common, text=text)
                said = text
        finally:
            part = {**part, ("transcript" if audio else "text"): said}
            item = {**item, "status": "completed" if said == text else "incomplete",
                    "content": [part]}
        await self.send("response.content_part.done", **common, part=part)
        await self.send("response.output_item.done", response_id=response_id,
                        output_index=0, item=item)
        return item

    async def _speak(self, common: dict[str, Any], text: str, audio_ms: int | None,
                     script: Script) -> str:
        """Audio deltas paced in (about) real time, the transcript spread over them."""
        total = audio_ms if audio_ms is not None else max(AUDIO_CHUNK_MS,
                                                          len(text) * AUDIO_MS_PER_CHAR)
        chunks = max(1, math.ceil(total / AUDIO_CHUNK_MS))
        words = split_deltas(text) if text else []
        said, sent, started = "", 0, self.loop.time()
        for n in range(chunks):
            upto = (n + 1) * len(words) // chunks
            if upto > sent:
                delta = "".join(words[sent:upto])
                sent = upto
                await self.send("response.output_audio_transcript.delta", **common, delta=delta)
                said += delta
            pcm = tone_pcm(AUDIO_CHUNK_MS, self.audio_sample)
            self.audio_sample += len(pcm) // BYTES_PER_SAMPLE
            await self.send("response.output_audio.delta", **common,
                            delta=base64.b64encode(pcm).decode("ascii"))
            due = started + (n + 1) * AUDIO_CHUNK_MS / 1000 / script.audio_speed
            await asyncio.sleep(max(0.0, due - self.loop.time()))  # pacing, as a voice plays
        await self.send("response.output_audio.done", **common)
        await self.send("response.output_audio_transcript.done", **common, transcript=text)
        return text


# --- Transports ----------------------------------------------------------------------------

class _Outlet:
    """Where a session's server events go: a WebSocket or a WebRTC data channel."""

    async def send(self, text: str) -> None:
        raise NotImplementedError

    async def close(self, code: int, reason: str) -> None:
        raise NotImplementedError

    def abort(self) -> None:
        raise NotImplementedError


class _WebSocketOutlet(_Outlet):
    def __init__(self, ws: web.WebSocketResponse, request: web.Request):
        self.ws, self.request = ws, request

    async def send(self, text: str) -> None:
        if not self.ws.closed:
            with contextlib.suppress(ConnectionError, RuntimeError):
                await self.ws.send_str(text)

    async def close(self, code: int, reason: str) -> None:
        with contextlib.suppress(ConnectionError, RuntimeError):
            await self.ws.close(code=code, message=reason.encode())

    def abort(self) -> None:
        """Drop the TCP connection without a close frame, like a network failure."""
        transport = self.request.transport
        if transport is not None:
            transport.abort()
        else:  # pragma: no cover - aiohttp always exposes it while the socket is open
            asyncio.get_running_loop().create_task(self.close(1011, "dropped"))


class _DataChannelOutlet(_Outlet):
    def __init__(self, pc: Any):
        self.pc = pc
        self.channel: Any = None
        self.pending: deque[str] = deque(maxlen=MAX_PENDING_RTC_EVENTS)

    def attach(self, channel: Any) -> None:
        self.channel = channel
        while self.pending:
            channel.send(self.pending.popleft())

    async def send(self, text: str) -> None:
        if self.channel is not None and self.channel.readyState == "open":
            self.channel.send(text)
        elif self.channel is None:
            self.pending.append(text)

    async def close(self, code: int, reason: str) -> None:
        if self.channel is not None and self.channel.readyState == "open":
            self.channel.close()
        await self.pc.close()

    def abort(self) -> None:
        asyncio.get_running_loop().create_task(self.pc.close())


@dataclass
class _Turn:
    item_id: str
    vad: bool  # ended by silence (server VAD) rather than only by a commit
    transcribe: bool
    bytes_fed: int = 0


class _Session(_Conversation):
    """One Realtime session: client events in, server events out, turns recognised."""

    def __init__(self, server: StandinServer, record: SessionRecord, outlet: _Outlet):
        self.server, self.record = server, record
        self.outlets: list[_Outlet] = [outlet]
        self.loop = asyncio.get_running_loop()
        self.created_at = self.loop.time()
        self.lock = asyncio.Lock()  # client events and WebRTC audio, one at a time
        self.send_lock = asyncio.Lock()
        self.events_sent = 0
        self.dropped = self.closed = False
        self.recogniser = _Recogniser()
        self.tasks: set[asyncio.Task] = set()
        # Audio state.
        self.pending = b""  # less than one VAD frame
        self.position = 0  # bytes of audio taken in so far (audio_*_ms count from here)
        self.buffered = 0  # bytes since the last commit or clear
        self.ring: deque[bytes] = deque()  # recent frames outside speech (prefix padding)
        self.loud_run = self.quiet_run = 0
        self.turn: _Turn | None = None
        # Turn bookkeeping.
        self.turn_count = 0
        self.previous_item_id: str | None = None
        self.sent: defaultdict[int, asyncio.Event] = defaultdict(asyncio.Event)
        self.tail = 0  # the turn whose transcription is sent last so far (0: none)
        self.swapped_open: int | None = None  # an odd turn waiting for its partner
        self._init_conversation()

    @property
    def config(self) -> dict[str, Any]:
        return self.record.config

    # Sending.

    async def send(self, kind: str, **payload: Any) -> None:
        if self.dropped or self.closed:
            return
        event = {"type": kind, "event_id": _new_id("event"), **payload}
        text = json.dumps(event)
        async with self.send_lock:
            if self.dropped or self.closed:
                return
            for outlet in list(self.outlets):
                await outlet.send(text)
            self.record.server_events.append(kind)
            self.server._touch()
            self.events_sent += 1
            limit = self.server.faults.drop_after_events
            if limit is not None and self.events_sent >= limit:
                self.dropped = True
                for outlet in self.outlets:
                    outlet.abort()

    async def send_error(self, error: ApiError, client_event_id: str | None = None) -> None:
        await self.send("error", error=error.event_error(client_event_id))

    async def start(self) -> None:
        await self.send("session.created", session=self.config)
        self._spawn(self._expire())

    async def refuse(self, error: ApiError, code: int) -> None:
        """Accepted at the socket level, then refused: one error, then close."""
        await self.send_error(error)
        await self.close(code, error.code or "refused")

    async def close(self, code: int = 1000, reason: str = "") -> None:
        if self.closed:
            return
        async with self.send_lock:  # let an event being written finish first
            self.closed = True
        for outlet in list(self.outlets):
            await outlet.close(code, reason)
        self.shutdown()

    def shutdown(self) -> None:
        self.closed = self.record.closed = True
        for task in list(self.tasks):
            if task is not asyncio.current_task():
                task.cancel()
        self.recogniser.close()
        self.server._live.discard(self)
        if self.record.call_id is not None:
            self.server.calls.pop(self.record.call_id, None)
        self.server._touch()

    def _spawn(self, coro: Any) -> None:
        task = self.loop.create_task(coro)
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    async def _expire(self) -> None:
        while True:
            remaining = self.created_at + self.server.faults.session_seconds - self.loop.time()
            if remaining <= 0:
                break
            await asyncio.sleep(min(remaining, EXPIRY_RECHECK_SECONDS))
        await self.send_error(ApiError("session_expired", "Your session hit the maximum "
                                       "duration of "
                                       f"{self.server.faults.session_seconds:g} seconds."))
        await self.close(1000, "session expired")

    # Client events.

    async def handle_text(self, text: str) -> None:
        async with self.lock:
            client_event_id = None
            try:
                try:
                    data = json.loads(text)
                except ValueError:
                    raise ApiError("invalid_json", "The server could not parse the event as "
                                   "JSON.") from None
                if not isinstance(data, dict):
                    raise ApiError("invalid_json", "An event must be a JSON object.")
                if isinstance(data.get("event_id"), str):
                    client_event_id = data["event_id"]
                kind = data.get("type")
                if not isinstance(kind, str):
                    raise ApiError("missing_required_parameter", "Missing required parameter:"
                                   " 'type'.", param="type")
                self.record.client_events.append(kind)
                self.server._touch()
                await self._dispatch(kind, data)
            except ApiError as error:
                await self.send_error(error, client_event_id)

    async def handle_binary(self) -> None:
        async with self.lock:
            await self.send_error(ApiError("invalid_json", "Binary frames are not supported; "
                                           "send events as JSON text."))

    async def _dispatch(self, kind: str, data: dict[str, Any]) -> None:
        if kind == "session.update":
            self.record.config = apply_session_update(self.config, data.get("session"))
            await self.send("session.updated", session=self.config)
        elif kind == "input_audio_buffer.append":
            await self._feed(_decode_audio(data.get("audio")))
        elif kind == "input_audio_buffer.commit":
            await self._commit()
        elif kind == "input_audio_buffer.clear":
            await self._clear()
        elif kind in GA_CLIENT_EVENTS and self.config["type"] == "realtime":
            await self._conversation_event(kind, data)
        elif kind in GA_CLIENT_EVENTS:
            raise ApiError("invalid_value", f"'{kind}' is not supported in transcription "
                           f"sessions. Supported values are: {', '.join(HANDLED_EVENTS)}.",
                           param="type")
        else:
            raise ApiError("invalid_value", f"Invalid value: '{kind}'. Supported values are: "
                           f"{', '.join(sorted(GA_CLIENT_EVENTS))}.", param="type")

    async def feed_audio(self, pcm: bytes) -> None:
        """Audio from a WebRTC track (already PCM16 mono 24 kHz)."""
        async with self.lock:
            if not self.closed:
                await self._feed(pcm)

    # Audio and turns.

    def _transcribing(self) -> bool:
        return self.config["audio"]["input"]["transcription"] is not None

    def _new_turn(self, vad: bool, ops: list[tuple]) -> _Turn:
        self.turn = _Turn(item_id=_new_id("item"), vad=vad, transcribe=self._transcribing())
        if self.turn.transcribe:
            ops.append(("start",))
        return self.turn

    def _take(self, turn: _Turn, pcm: bytes, ops: list[tuple]) -> None:
        turn.bytes_fed += len(pcm)
        if not (turn.transcribe and pcm):
            return
        if ops and ops[-1][0] == "audio":  # one resampler call per run of frames
            ops[-1][1].extend(pcm)
        else:
            ops.append(("audio", bytearray(pcm)))

    async def _feed(self, pcm: bytes) -> None:
        ops: list[tuple] = []
        self.buffered += len(pcm)
        vad = _Vad.of(self.config["audio"]["input"]["turn_detection"])
        if vad is None or (self.turn is not None and not self.turn.vad):
            pcm, self.pending = self.pending + pcm, b""
            turn = self.turn or self._new_turn(vad=False, ops=ops)
            self._take(turn, pcm, ops)
            self.position += len(pcm)
        else:
            data = self.pending + pcm
            whole = len(data) - len(data) % FRAME_BYTES
            self.pending = data[whole:]
            for offset in range(0, whole, FRAME_BYTES):
                await self._vad_frame(data[offset:offset + FRAME_BYTES], vad, ops)
        await self._run(ops)

    async def _vad_frame(self, frame: bytes, vad: _Vad, ops: list[tuple]) -> None:
        loud = _dbfs(frame) > vad.threshold_db
        self.position += len(frame)
        if self.turn is None:
            self.ring.append(frame)
            while len(self.ring) > vad.prefix_frames + SPEECH_START_FRAMES:
                self.ring.popleft()
            self.loud_run = self.loud_run + 1 if loud else 0
            if self.loud_run < SPEECH_START_FRAMES:
                return
            onset_ms = (self.position - SPEECH_START_FRAMES * FRAME_BYTES) // BYTES_PER_MS
            prefix_ms = (len(self.ring) - SPEECH_START_FRAMES) * FRAME_MS
            turn = self._new_turn(vad=True, ops=ops)
            self._take(turn, b"".join(self.ring), ops)
            self.ring.clear()
            self.loud_run = self.quiet_run = 0
            await self.send("input_audio_buffer.speech_started",
                            audio_start_ms=max(0, onset_ms - prefix_ms), item_id=turn.item_id)
            await self._speech_started()
            return
        self._take(self.turn, frame, ops)
        self.quiet_run = 0 if loud else self.quiet_run + 1
        if self.quiet_run >= vad.silence_frames and self.turn.vad:
            await self._end_turn(ops, audio_end_ms=self.position // BYTES_PER_MS)

    async def _commit(self) -> None:
        if self.buffered < MIN_COMMIT_MS * BYTES_PER_MS:
            raise ApiError("input_audio_buffer_commit_empty", "Error committing input audio "
                           "buffer: buffer too small. Expected at least 100ms of audio, but "
                           f"buffer only has {self.buffered / BYTES_PER_MS:.2f}ms of audio.",
                           param=None)
        ops: list[tuple] = []
        if self.turn is None:  # server VAD, outside speech: what is left of the buffer
            turn = self._new_turn(vad=False, ops=ops)
            self._take(turn, b"".join(self.ring) + self.pending, ops)
            self.position += len(self.pending)
        elif self.pending:
            self._take(self.turn, self.pending, ops)
            self.position += len(self.pending)
        self.pending = b""
        await self._end_turn(ops, audio_end_ms=None)
        await self._run(ops)

    async def _clear(self) -> None:
        ops: list[tuple] = []
        if self.turn is not None and self.turn.transcribe:
            ops.append(("discard",))
        self.turn = None
        self.pending, self.buffered = b"", 0
        self.ring.clear()
        self.loud_run = self.quiet_run = 0
        await self._run(ops)
        await self.send("input_audio_buffer.cleared")

    async def _end_turn(self, ops: list[tuple], audio_end_ms: int | None) -> None:
        turn, self.turn = self.turn, None
        assert turn is not None
        self.ring.clear()
        self.loud_run = self.quiet_run = 0
        self.buffered = 0
        if audio_end_ms is not None:
            await self.send("input_audio_buffer.speech_stopped", audio_end_ms=audio_end_ms,
                            item_id=turn.item_id)
        self.turn_count += 1
        number = self.turn_count
        previous, self.previous_item_id = self.previous_item_id, turn.item_id
        await self.send("input_audio_buffer.committed", item_id=turn.item_id,
                        previous_item_id=previous)
        item = {"id": turn.item_id, "object": "realtime.item", "type": "message",
                "status": "completed", "role": "user",
                "content": [{"type": "input_audio", "transcript": None}]}
        await self.send("conversation.item.added", previous_item_id=previous, item=item)
        await self.send("conversation.item.done", previous_item_id=previous, item=item)
        self._turn_committed(turn.item_id, vad=turn.vad)
        predecessor = self._place_in_send_order(number)
        if not turn.transcribe:
            self.sent[number].set()
            return
        result: asyncio.Future[str] = self.loop.create_future()
        ops.append(("end", result))
        self._spawn(self._transcribe(turn, number, predecessor, result))

    def _place_in_send_order(self, number: int) -> int:
        """The turn whose transcription must be sent before this one's. With out_of_order,
        pairs (1, 2), (3, 4), ... are sent as 2, 1, 4, 3."""
        if self.swapped_open is not None:  # this turn is the partner of a swapped odd turn
            predecessor, self.tail, self.swapped_open = self.tail, self.swapped_open, None
            return predecessor
        if number % 2 == 1 and self.server.faults.out_of_order:
            self.swapped_open = number
            return number + 1
        predecessor, self.tail = self.tail, number
        return predecessor

    async def _run(self, ops: list[tuple]) -> None:
        """Decode on the session's thread; awaiting it paces the reading of the socket."""
        if not ops:
            return
        try:
            results = await self.loop.run_in_executor(self.recogniser.executor,
                                                      self.recogniser.run, ops)
        except RuntimeError:  # the executor was shut down: the session is closing
            results = [(op[1], RuntimeError("session closed")) for op in ops if op[0] == "end"]
        for future, outcome in results:
            if future.done():
                continue
            if isinstance(outcome, BaseException):
                future.set_exception(outcome)
            else:
                future.set_result(outcome)

    async def _transcribe(self, turn: _Turn, number: int, predecessor: int,
                          result: asyncio.Future[str]) -> None:
        try:
            transcript: str | None = await result
        except Exception:
            transcript = None
        delay = self.server.faults.delay_ms
        if delay > 0:
            await asyncio.sleep(delay / 1000)
        if predecessor:
            await self.sent[predecessor].wait()
        common = {"item_id": turn.item_id, "content_index": 0}
        if transcript is None or number in self.server.faults.fail_turns:
            await self.send("conversation.item.input_audio_transcription.failed", **common,
                            error={"type": "server_error", "code": "transcription_failed",
                                   "message": f"Input transcription failed for item "
                                              f"'{turn.item_id}'."})
        else:
            for delta in split_deltas(transcript):
                await self.send("conversation.item.input_audio_transcription.delta", **common,
                                delta=delta)
            await self.send("conversation.item.input_audio_transcription.completed", **common,
                            transcript=transcript,
                            usage={"type": "duration",
                                   "seconds": round(turn.bytes_fed / BYTES_PER_MS / 1000, 3)})
        self.sent[number].set()


def _decode_audio(audio: Any) -> bytes:
    if audio is None:
        raise ApiError("missing_required_parameter", "Missing required parameter: 'audio'.",
                       param="audio")
    if not isinstance(audio, str):
        raise ApiError("invalid_type", "Invalid type for 'audio': expected a base64 string.",
                       param="audio")
    try:
        pcm = base64.b64decode(audio, validate=True)
    except (binascii.Error, ValueError):
        raise ApiError("invalid_value", "Invalid 'audio': not valid base64.",
                       param="audio") from None
    if len(pcm) % BYTES_PER_SAMPLE:
        raise ApiError("invalid_value", "Invalid 'audio': PCM16 audio must have an even number "
                       "of bytes.", param="audio")
    return pcm


# --- The server ----------------------------------------------------------------------------

CORS_HEADERS = {
    "Access-Control-Allow-Origin": "*",
    "Access-Control-Allow-Methods": "GET, POST, OPTIONS",
    "Access-Control-Allow-Headers": "Authorization, Content-Type",
    "Access-Control-Expose-Headers": "Location",
}


@web.middleware
async def _cors(request: web.Request, handler):
    """Browsers post WebRTC offers to the API from another origin (the app's), as to OpenAI."""
    response = await handler(request)
    if not isinstance(response, web.WebSocketResponse):
        response.headers.update(CORS_HEADERS)
    return response


async def _preflight(request: web.Request) -> web.Response:
    return web.Response(status=204)


class StandinServer:
    """The stand-in's HTTP/WebSocket/WebRTC endpoints, on an aiohttp server."""

    def __init__(self, *, api_key: str = "sk-standin-test", faults: Faults | None = None):
        self.api_key = api_key
        self.faults = faults or Faults()
        self.script = Script()  # what conversation sessions answer
        self.sessions: list[SessionRecord] = []
        self.client_secrets: dict[str, ClientSecret] = {}
        self.calls: dict[str, _Session] = {}
        self.port = 0
        self.host = "127.0.0.1"
        self.loop: asyncio.AbstractEventLoop | None = None  # the loop serving it (threads)
        self._live: set[_Session] = set()
        self._peer_connections: set[Any] = set()
        self._runner: web.AppRunner | None = None
        self._changed: asyncio.Event | None = None

    @property
    def base_url(self) -> str:
        return f"http://{self.host}:{self.port}/v1"

    @property
    def ws_base_url(self) -> str:
        return f"ws://{self.host}:{self.port}/v1"

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> None:
        self._changed = asyncio.Event()
        self.loop = asyncio.get_running_loop()
        app = web.Application(client_max_size=MAX_EVENT_BYTES, middlewares=[_cors])
        app.router.add_route("OPTIONS", "/{tail:.*}", _preflight)
        app.router.add_post("/v1/realtime/client_secrets", self._create_client_secret)
        app.router.add_get("/v1/realtime", self._realtime_socket)
        app.router.add_post("/v1/realtime/calls", self._create_call)
        app.router.add_post("/v1/realtime/calls/{call_id}/hangup", self._hangup)
        app.router.add_post("/_standin/faults", self._set_faults)
        app.router.add_get("/_standin/faults", self._get_faults)
        app.router.add_get("/_standin/sessions", self._get_sessions)
        app.router.add_post("/_standin/script", self._set_script)
        self._runner = web.AppRunner(app, shutdown_timeout=2.0, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, host, port)
        await site.start()
        self.host = host
        self.port = self._runner.addresses[0][1]

    async def stop(self) -> None:
        for session in list(self._live):
            await session.close(1001, "server stopping")
        for pc in list(self._peer_connections):
            await pc.close()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def wait_for_sessions(self, count: int, timeout: float = 10) -> None:
        await self.wait_until(lambda: len(self.sessions) >= count, timeout)

    async def wait_until(self, predicate: Callable[[], bool], timeout: float = 10) -> None:
        """Wait (on the server's loop) until `predicate` holds; it is re-checked whenever a
        session is added, sends or receives an event, or closes."""
        assert self._changed is not None, "start() the server first"
        async with asyncio.timeout(timeout):
            while not predicate():
                await self._changed.wait()

    def _touch(self) -> None:
        if self._changed is not None:
            changed, self._changed = self._changed, asyncio.Event()
            changed.set()

    def _add_record(self, record: SessionRecord) -> None:
        self.sessions.append(record)
        self._touch()

    # Authentication.

    def _authenticate(self, key: str | None, *, allow_ephemeral: bool = True
                      ) -> ClientSecret | None:
        """None for the standard key, the ClientSecret for a live ek_; else ApiError 401."""
        if not key:
            raise _bad_key("You didn't provide an API key. You need to provide your API key "
                           "in an Authorization header using Bearer auth.")
        if self.faults.reject_key:
            raise _bad_key(f"Incorrect API key provided: {_masked(key)}.")
        if key == self.api_key:
            return None
        secret = self.client_secrets.get(key) if allow_ephemeral else None
        if secret is None:
            raise _bad_key(f"Incorrect API key provided: {_masked(key)}.")
        if time.time() >= secret.expires_at:
            raise _bad_key(f"The client secret {_masked(key)} has expired.")
        return secret

    @staticmethod
    def _bearer(request: web.Request) -> str | None:
        header = request.headers.get("Authorization", "")
        match = re.fullmatch(r"Bearer\s+(\S+)", header.strip())
        return match.group(1) if match else None

    @staticmethod
    def _headers_of_interest(request: web.Request) -> dict[str, str]:
        headers = {}
        for name, value in request.headers.items():
            lower = name.lower()
            if lower in HEADERS_OF_INTEREST or lower.startswith("x-stainless-"):
                if lower == "sec-websocket-protocol":
                    value = re.sub(re.escape(KEY_PROTOCOL) + r"\S+?(?=,|$)",
                                   KEY_PROTOCOL + "***", value)
                headers[lower] = value
        return headers

    # REST: client secrets.

    async def _create_client_secret(self, request: web.Request) -> web.Response:
        try:
            self._authenticate(self._bearer(request), allow_ephemeral=False)
            if self.faults.quota_exceeded:
                raise _quota()
            body = await _json_body(request)
            _reject_unknown(body, {"expires_after", "session"}, "")
            seconds = 600
            if "expires_after" in body:
                expires = _require_dict(body["expires_after"], "expires_after")
                _reject_unknown(expires, {"anchor", "seconds"}, "expires_after")
                if expires.get("anchor", "created_at") != "created_at":
                    raise ApiError("invalid_value", "Invalid value for 'expires_after.anchor': "
                                   "only 'created_at' is supported.",
                                   param="expires_after.anchor")
                seconds = expires.get("seconds", 600)
                if not _is_int(seconds) or not 10 <= seconds <= 7200:
                    raise ApiError("invalid_value", "Invalid 'expires_after.seconds': expected "
                                   f"an integer between 10 and 7200, got {seconds!r}.",
                                   param="expires_after.seconds")
            session = _session_from_param(body.get("session"))
        except ApiError as error:
            return error.response()
        expires_at = int(time.time()) + seconds
        session["expires_at"] = expires_at
        value = "ek_" + secrets.token_hex(16)
        self.client_secrets[value] = ClientSecret(value, expires_at, session)
        return web.json_response({"value": value, "expires_at": expires_at, "session": session})

    # WebSocket.

    async def _realtime_socket(self, request: web.Request) -> web.StreamResponse:
        offered = [p.strip() for p in request.headers.get("Sec-WebSocket-Protocol", "")
                   .split(",") if p.strip()]
        key, via = self._bearer(request), "bearer"
        if key is None:
            key = next((p[len(KEY_PROTOCOL):] for p in offered if p.startswith(KEY_PROTOCOL)),
                       None)
            via = "subprotocol"
        query = dict(request.query)
        try:
            secret = self._authenticate(key)
            if request.headers.get("Upgrade", "").lower() != "websocket":
                raise ApiError("invalid_request", "This endpoint expects a WebSocket upgrade.")
            if "call_id" in query:
                return await self._sideband(request, query["call_id"], secret)
            if query.get("intent") == "transcription":
                kind, model = "transcription", None
            elif query.get("model"):
                kind, model = "realtime", query["model"]
            elif "intent" in query:
                raise ApiError("invalid_value", f"Invalid value: '{query['intent']}'. "
                               "Supported values are: 'transcription'.", param="intent")
            else:
                raise ApiError("missing_required_parameter", "Missing required parameter: "
                               "'model' (or 'intent' or 'call_id').", param="model")
        except ApiError as error:
            return error.response()
        config = default_session(kind, model)
        if secret is not None and secret.session["type"] == kind:
            config = {**copy.deepcopy(secret.session), "id": config["id"], "expires_at": 0}
        ws = web.WebSocketResponse(protocols=("realtime",), max_msg_size=MAX_EVENT_BYTES)
        await ws.prepare(request)
        record = SessionRecord(id=config["id"], transport="websocket",
                               auth="ephemeral" if secret else via, query=query,
                               headers=self._headers_of_interest(request), kind=kind,
                               config=config)
        session = _Session(self, record, _WebSocketOutlet(ws, request))
        self._live.add(session)
        self._add_record(record)
        try:
            if request.headers.get("OpenAI-Beta", "").strip().lower() == "realtime=v1":
                await session.refuse(ApiError("beta_api_retired", "The Realtime API beta "
                                              "interface (OpenAI-Beta: realtime=v1) was retired;"
                                              " use the GA interface."), 1008)
            elif self.faults.quota_exceeded:
                await session.refuse(_quota(), 1008)
            else:
                await session.start()
                async for message in ws:
                    if message.type == WSMsgType.TEXT:
                        await session.handle_text(message.data)
                    elif message.type == WSMsgType.BINARY:
                        await session.handle_binary()
        finally:
            session.shutdown()
        return ws

    async def _sideband(self, request: web.Request, call_id: str,
                        secret: ClientSecret | None) -> web.StreamResponse:
        """A server joining a WebRTC call's session (standard key only)."""
        if secret is not None:
            raise _bad_key("Joining a call needs the standard API key.")
        session = self.calls.get(call_id)
        if session is None or session.closed:
            raise ApiError("not_found", f"Call '{call_id}' not found.", param="call_id",
                           status=404)
        ws = web.WebSocketResponse(protocols=("realtime",), max_msg_size=MAX_EVENT_BYTES)
        await ws.prepare(request)
        outlet = _WebSocketOutlet(ws, request)
        session.outlets.append(outlet)
        session.record.sideband_connections += 1
        try:
            async for message in ws:
                if message.type == WSMsgType.TEXT:
                    await session.handle_text(message.data)
        finally:
            with contextlib.suppress(ValueError):
                session.outlets.remove(outlet)
        return ws

    # WebRTC.

    async def _create_call(self, request: web.Request) -> web.Response:
        from aiortc import RTCPeerConnection, RTCSessionDescription

        try:
            secret = self._authenticate(self._bearer(request))
            if self.faults.quota_exceeded:
                raise _quota()
            sdp, session_param = await _offer_of(request)
            if secret is not None:
                config = {**copy.deepcopy(secret.session), "id": _new_id("sess"),
                          "expires_at": 0}
            else:
                config = _session_from_param(session_param)
                config["expires_at"] = 0
        except ApiError as error:
            return error.response()
        pc = RTCPeerConnection()
        self._peer_connections.add(pc)
        call_id = _new_id("rtc")
        outlet = _DataChannelOutlet(pc)
        record = SessionRecord(id=config["id"], transport="webrtc",
                               auth="ephemeral" if secret else "bearer", query=dict(request.query),
                               headers=self._headers_of_interest(request), kind=config["type"],
                               call_id=call_id, config=config)
        session = _Session(self, record, outlet)
        self._wire_peer_connection(pc, session, outlet)  # before the offer: it fires "track"
        try:
            await pc.setRemoteDescription(RTCSessionDescription(sdp=sdp, type="offer"))
        except Exception as exc:
            session.shutdown()
            await pc.close()
            self._peer_connections.discard(pc)
            return ApiError("invalid_offer", f"Invalid SDP offer: {exc}", param="sdp").response()
        self._live.add(session)
        self.calls[call_id] = session
        await session.start()
        await pc.setLocalDescription(await pc.createAnswer())
        self._add_record(record)
        return web.Response(status=201, text=pc.localDescription.sdp,
                            content_type="application/sdp",
                            headers={"Location": f"/v1/realtime/calls/{call_id}"})

    def _wire_peer_connection(self, pc: Any, session: _Session,
                              outlet: _DataChannelOutlet) -> None:
        async def end() -> None:
            await session.close()
            self._peer_connections.discard(pc)
            await pc.close()

        @pc.on("datachannel")
        def on_datachannel(channel: Any) -> None:
            if channel.label != "oai-events":
                return
            outlet.attach(channel)
            messages: asyncio.Queue[str | None] = asyncio.Queue()
            channel.on("message", messages.put_nowait)
            channel.on("close", lambda: messages.put_nowait(None))

            async def handle() -> None:
                while (message := await messages.get()) is not None:
                    if isinstance(message, str):
                        await session.handle_text(message)
                    else:
                        await session.handle_binary()
                await end()

            session._spawn(handle())

        @pc.on("track")
        def on_track(track: Any) -> None:
            if track.kind == "audio":
                session._spawn(_consume_audio(track, session))

        @pc.on("connectionstatechange")
        async def on_state() -> None:
            if pc.connectionState in ("failed", "closed"):
                await end()

    async def _hangup(self, request: web.Request) -> web.Response:
        try:
            self._authenticate(self._bearer(request), allow_ephemeral=False)
            session = self.calls.get(request.match_info["call_id"])
            if session is None:
                raise ApiError("not_found", "Call not found.", param="call_id", status=404)
        except ApiError as error:
            return error.response()
        await session.close()
        return web.Response(status=200)

    # Control endpoints for a server in another process.

    async def _set_faults(self, request: web.Request) -> web.Response:
        try:
            self.faults.update(await request.json())
        except (ValueError, TypeError, AttributeError) as exc:
            return web.json_response({"error": str(exc)}, status=400)
        return web.json_response(self.faults.to_json())

    async def _get_faults(self, request: web.Request) -> web.Response:
        return web.json_response(self.faults.to_json())

    async def _set_script(self, request: web.Request) -> web.Response:
        """{"replies": [Reply fields...], "delta_interval_ms": n, "audio_speed": x}: replies
        are appended to the script."""
        try:
            body = await request.json()
            replies = [Reply.of(r) for r in body.get("replies", [])]
            for name in ("delta_interval_ms", "audio_speed"):
                if name in body:
                    if not _is_number(body[name]):
                        raise ValueError(f"{name} must be a number")
                    setattr(self.script, name, body[name])
        except (ValueError, TypeError, AttributeError) as exc:
            return web.json_response({"error": str(exc)}, status=400)
        self.script.add(*replies)
        return web.json_response({"replies": len(self.script.replies)})

    async def _get_sessions(self, request: web.Request) -> web.Response:
        return web.json_response([record.to_json() for record in self.sessions])


async def _json_body(request: web.Request) -> dict[str, Any]:
    raw = await request.read()
    if not raw.strip():
        return {}
    try:
        body = json.loads(raw)
    except ValueError:
        raise ApiError(None, "We could not parse the JSON body of your request.") from None
    return _require_dict(body, "body")


def _session_from_param(param: Any) -> dict[str, Any]:
    """A session object from a request's `session` (absent: a conversation session)."""
    if param is None:
        return default_session("realtime")
    param = _require_dict(param, "session")
    kind = param.get("type")
    if kind not in ("transcription", "realtime"):
        raise ApiError("invalid_value", f"Invalid value: '{kind}'. Supported values are: "
                       "'transcription' and 'realtime'.", param="session.type")
    return apply_session_update(default_session(kind, param.get("model")), param)


async def _offer_of(request: web.Request) -> tuple[str, Any]:
    """The SDP offer and optional session of a call: raw application/sdp, or the SDK's
    multipart form (`sdp`, `session` as JSON)."""
    if request.content_type == "application/sdp":
        return await request.text(), None
    if request.content_type == "multipart/form-data":
        form = await request.post()
        sdp, session = _form_text(form.get("sdp")), _form_text(form.get("session"))
        if not sdp:
            raise ApiError("missing_required_parameter", "Missing required parameter: 'sdp'.",
                           param="sdp")
        try:
            return sdp, json.loads(session) if session else None
        except ValueError:
            raise ApiError("invalid_json", "'session' is not valid JSON.",
                           param="session") from None
    raise ApiError("invalid_request", "Expected Content-Type application/sdp or "
                   "multipart/form-data.", status=415)


def _form_text(value: Any) -> str | None:
    """A multipart field as text, whether aiohttp gave a str, bytes or a file part."""
    if value is None or isinstance(value, str):
        return value
    if isinstance(value, bytes | bytearray):
        return bytes(value).decode()
    return value.file.read().decode()


async def _consume_audio(track: Any, session: _Session) -> None:
    """The browser's Opus track (decoded by aiortc to 48 kHz) as 24 kHz mono PCM."""
    from aiortc.mediastreams import MediaStreamError

    resampler = av.AudioResampler(format="s16", layout="mono", rate=INPUT_RATE)
    while not session.closed:
        try:
            frame = await track.recv()
        except MediaStreamError:
            return
        frame.pts = None
        pcm = b"".join(bytes(out.planes[0])[:out.samples * BYTES_PER_SAMPLE]
                       for out in resampler.resample(frame))
        if pcm:
            await session.feed_audio(pcm)


@contextmanager
def standin_in_thread(**kwargs: Any) -> Iterator[StandinServer]:
    """A StandinServer on its own event loop in a daemon thread (for sync and browser tests);
    `host` and `port` go to start(), the rest to the constructor."""
    host, port = kwargs.pop("host", "127.0.0.1"), kwargs.pop("port", 0)
    server = StandinServer(**kwargs)
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, name="openai-standin", daemon=True)
    thread.start()
    try:
        asyncio.run_coroutine_threadsafe(server.start(host, port), loop).result(timeout=30)
        yield server
    finally:
        with contextlib.suppress(Exception):
            asyncio.run_coroutine_threadsafe(server.stop(), loop).result(timeout=30)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(timeout=10)
        if not thread.is_alive():
            loop.close()


async def _serve(args: argparse.Namespace) -> None:
    server = StandinServer(api_key=args.api_key)
    await server.start(args.host, args.port)
    print(f"OpenAI Realtime stand-in listening on {server.base_url} "
          f"(WebSocket {server.ws_base_url}/realtime)", flush=True)
    try:
        await asyncio.Event().wait()
    finally:
        await server.stop()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8765)
    parser.add_argument("--api-key", default="sk-standin-test")
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(_serve(parser.parse_args(argv)))


if __name__ == "__main__":
    main()
