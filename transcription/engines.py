"""One interface, two engines: every transcription stream (the proxy socket, a group call's
speaker) takes PCM16 mono 24 kHz and emits the Realtime API's server events, whichever engine
is behind it.

`open_stream()` picks the engine from settings: OpenAI Realtime when `OPENAI_API_KEY` is set
(or TRANSCRIPTION_ENGINE=openai), the offline Whisper engine otherwise.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import Protocol

from django.conf import settings

from . import hints
from .models import CaptionSegment
from .offline import new_item_id, shared_engine
from .offline_pool import DecoderProcessDied

log = logging.getLogger(__name__)

EventSink = Callable[[dict], None]

# Parley's own error codes, sent as the Realtime API's `error` events (docs/transcription.md).
UPSTREAM_AUTH_FAILED = "upstream_auth_failed"  # the server's OpenAI key was refused
UPSTREAM_QUOTA = "upstream_quota_exceeded"  # OpenAI quota or rate limit
UPSTREAM_UNAVAILABLE = "upstream_unavailable"  # OpenAI cannot be reached; Parley gave up
UPSTREAM_LOST = "upstream_connection_lost"  # dropped; Parley reconnects, audio meanwhile lost
ENGINE_FAILED = "engine_failed"  # the offline decoder process died


class EngineFailed(Exception):
    """The stream cannot go on (its `error` event has been emitted)."""

    def __init__(self, code: str, message: str):
        super().__init__(message)
        self.code = code


class TranscriptionStream(Protocol):
    engine: str  # a CaptionSegment.Engine value, stored with each segment
    model: str

    async def start(self) -> None:
        """Connect; emits `session.created`. Raises EngineFailed."""

    async def feed(self, pcm24k: bytes) -> None:
        """Audio in; returns when the engine took it (the backpressure for fast senders)."""

    async def commit(self) -> None: ...

    async def clear(self) -> None: ...

    async def update(self, session: dict) -> None:
        """Apply a validated `session.update`; emits `session.updated` (or `error`)."""

    async def close(self) -> None:
        """End the stream; an open turn is finished and its events still emitted."""


def open_streams() -> dict[str, int]:
    """What transcription holds in this process: offline decoder streams, OpenAI upstream
    connections, member session slots (issue #10: none may outlive its socket)."""
    from . import offline, slots
    from .openai_engine import LIVE_UPSTREAMS

    engine = offline._shared  # not started just to be counted
    pool = engine.pool if engine is not None else None
    return {"offline": len(engine.streams) if engine is not None else 0,
            "decoder_slots": len(pool.placement) if pool is not None else 0,
            "openai": len(LIVE_UPSTREAMS), "slots": slots.held()}


def engine_name() -> str:
    choice = settings.TRANSCRIPTION["ENGINE"]
    if choice == "auto":
        return "openai" if settings.OPENAI_API_KEY else "offline"
    if choice not in ("openai", "offline"):
        raise ValueError(f"TRANSCRIPTION_ENGINE must be auto, openai or offline, not {choice!r}")
    return choice


def open_stream(on_event: EventSink, name: str | None = None,
                room_id: int | None = None) -> TranscriptionStream:
    """A new, not yet started stream on the configured engine, for a speaker in `room_id`
    (the offline engine takes the room's words as hints)."""
    if (name or engine_name()) == "openai":
        from .openai_engine import OpenAIStream

        return OpenAIStream(on_event)
    return OfflineStream(on_event, room_id)


class OfflineStream:
    """The offline engine behind the stream interface: a stream of the process's shared
    engine (in a decoder process, or a thread of this one). With a room (and
    OFFLINE_ROOM_HINTS), the room's name, people and recent chat are the decoder's hints,
    fetched at the start and again every hints.REFRESH_SECONDS by one task this stream owns."""

    engine = CaptionSegment.Engine.OFFLINE

    _ids = iter(range(1, 1 << 62))

    def __init__(self, on_event: EventSink, room_id: int | None = None):
        self.on_event = on_event
        self.room_id = room_id if settings.TRANSCRIPTION["OFFLINE_ROOM_HINTS"] else None
        self.hints = ""
        self.hinted_at = 0.0
        self.refresh: asyncio.Task | None = None
        self.key = f"offline-{next(self._ids)}"
        self.offline = shared_engine()
        self.model = offline_model_name(self.offline.config.model)
        self.session_id = "sess_" + new_item_id().removeprefix("item_")

    async def start(self) -> None:
        if self.room_id is not None:
            self.hints = await self._room_hints()
        await self._guarded(self.offline.open(self.key, self.on_event, self.hints))
        self.on_event({"type": "session.created", "session": self.describe()})

    async def feed(self, pcm24k: bytes) -> None:
        if (self.room_id is not None and self.refresh is None
                and time.monotonic() - self.hinted_at > hints.REFRESH_SECONDS):
            self.refresh = asyncio.create_task(self._refresh_hints())
        await self._guarded(self.offline.feed(self.key, pcm24k))

    async def _room_hints(self) -> str:
        self.hinted_at = time.monotonic()
        try:
            return await hints.fetch_room_hints(self.room_id)
        except Exception:  # hints help; their absence must never stop captions
            log.warning("room hints for room %s failed", self.room_id, exc_info=True)
            return self.hints

    async def _refresh_hints(self) -> None:
        try:
            fresh = await self._room_hints()
            if fresh != self.hints and self.key in self.offline.streams:
                self.hints = fresh
                await self.offline.hint(self.key, fresh)
        except Exception:  # the next feed or close reports a dead decoder
            log.debug("updating room hints failed", exc_info=True)
        finally:
            self.refresh = None

    async def commit(self) -> None:
        await self._guarded(self.offline.commit(self.key))

    async def clear(self) -> None:
        await self._guarded(self.offline.clear(self.key))
        self.on_event({"type": "input_audio_buffer.cleared"})

    async def _guarded(self, request) -> None:
        try:
            await request
        except DecoderProcessDied:
            message = "The offline decoder stopped; reconnect to start a new session."
            self.on_event({"type": "error", "error": {
                "type": "server_error", "code": ENGINE_FAILED, "message": message,
                "param": None, "event_id": None}})
            self.on_event({"type": "parley.stream_failed", "code": ENGINE_FAILED})
            raise EngineFailed(ENGINE_FAILED, message) from None

    async def update(self, session: dict) -> None:
        # The offline engine has one model and always detects turns itself; the update is
        # acknowledged with what is in force, as the API does.
        self.on_event({"type": "session.updated", "session": self.describe()})

    async def close(self) -> None:
        if self.refresh is not None:
            self.refresh.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self.refresh
        if self.key in self.offline.streams:
            with contextlib.suppress(DecoderProcessDied):
                await self.offline.close(self.key)

    def describe(self) -> dict:
        return session_description(self.session_id, self.model)


def offline_model_name(setting: str) -> str:
    """What sessions report as their model: `whisper-tiny.en` for the bundled weights, else
    `whisper-<name or directory name>`."""
    return "whisper-" + (Path(setting).name if setting else "tiny.en")


def session_description(session_id: str, model: str) -> dict:
    config = settings.TRANSCRIPTION
    return {
        "id": session_id, "object": "realtime.transcription_session", "type": "transcription",
        "audio": {"input": {
            "format": {"type": "audio/pcm", "rate": 24000},
            "transcription": {"model": model, "language": config["LANGUAGE"] or None},
            "turn_detection": {"type": "server_vad"},
            "noise_reduction": None,
        }},
    }


def upstream_session_config() -> dict:
    """The transcription session Parley asks OpenAI for, from settings."""
    config = settings.TRANSCRIPTION
    transcription = {"model": config["MODEL"]}
    if config["LANGUAGE"]:
        transcription["language"] = config["LANGUAGE"]
    if config["PROMPT"]:
        transcription["prompt"] = config["PROMPT"]
    kind = config["TURN_DETECTION"]
    turn_detection = None if kind in ("none", "") else (
        {"type": "semantic_vad"} if kind == "semantic_vad" else {
            "type": "server_vad", "threshold": config["VAD_THRESHOLD"],
            "prefix_padding_ms": config["VAD_PREFIX_MS"],
            "silence_duration_ms": config["VAD_SILENCE_MS"]})
    noise = config["NOISE_REDUCTION"]
    return {"type": "transcription", "audio": {"input": {
        "format": {"type": "audio/pcm", "rate": 24000},
        "transcription": transcription,
        "turn_detection": turn_detection,
        "noise_reduction": None if noise in ("none", "") else {"type": noise},
    }}}
