"""OpenAI Realtime transcription through the official `openai` SDK (GA interface).

One stream is one speaker. It holds one upstream connection
(`client.realtime.connect(extra_query={"intent": "transcription"})`, the SDK's automatic
reconnect off: a reconnect would silently start an empty session) and relays its server
events, which are already the events Parley's clients speak. What it adds:

- Rotation: sessions end at 60 minutes, so after TRANSCRIPTION_ROTATE_SECONDS a fresh
  connection takes over at the next pause between turns; the old one is closed once its last
  completions arrive. An unexpected `session_expired` rotates at once.
- Continuity across connections: audio times are offset by the audio sent before the
  connection opened, and a connection's first turn is chained (`previous_item_id`) to the last
  turn of the one before, so captions stay ordered per speaker.
- Faults as clear errors (engines.py's codes): a refused key or exhausted quota ends the
  stream; a dropped connection is reported, turns in flight are marked failed, and Parley
  reconnects with backoff, dropping (not buffering) audio meanwhile.
- Backpressure: an append returns once the SDK's socket has taken it, so a client sending
  faster than the upstream reads waits, and nothing queues without bound.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import logging
import time
from dataclasses import dataclass, field

from django.conf import settings
from openai import AsyncOpenAI
from websockets.exceptions import ConnectionClosed, InvalidStatus

from .engines import (
    UPSTREAM_AUTH_FAILED,
    UPSTREAM_LOST,
    UPSTREAM_QUOTA,
    UPSTREAM_UNAVAILABLE,
    EngineFailed,
    EventSink,
    upstream_session_config,
)
from .models import CaptionSegment
from .realtime import RealtimeError

log = logging.getLogger(__name__)

BYTES_PER_MS = 48  # PCM16 mono 24 kHz
RECONNECT_DELAYS = (0.25, 0.5, 1, 2, 4, 8)
DRAIN_TIMEOUT = 30.0  # how long a replaced connection may take to deliver its last turns
CLOSE_TIMEOUT = 15.0  # how long closing waits for the final turn's transcript
AUTH_CODES = {"invalid_api_key", "invalid_authentication", "unauthorized"}
QUOTA_CODES = {"insufficient_quota", "rate_limit_exceeded", "quota_exceeded"}
TRANSCRIPT_END = ("conversation.item.input_audio_transcription.completed",
                  "conversation.item.input_audio_transcription.failed")


def client() -> AsyncOpenAI:
    return AsyncOpenAI(api_key=settings.OPENAI_API_KEY, base_url=settings.OPENAI_BASE_URL,
                       websocket_base_url=settings.OPENAI_WS_BASE_URL or None)


# Every open upstream connection in this process (tests and the fuzz suite check that none
# outlives its stream: each holds a session on the server's API key).
LIVE_UPSTREAMS: set[Upstream] = set()


@dataclass(eq=False)
class Upstream:
    """One SDK connection (one OpenAI session)."""

    connection: object  # openai AsyncRealtimeConnection
    offset_ms: float  # audio sent on earlier connections
    opened_at: float = field(default_factory=time.monotonic)
    own_updates: int = 1  # session.updated replies to Parley's own updates, not relayed
    first_commit: bool = True
    pending: set[str] = field(default_factory=set)  # committed turns awaiting transcripts
    retiring: bool = False
    reader: asyncio.Task | None = None
    done: asyncio.Event = field(default_factory=asyncio.Event)


class OpenAIStream:
    engine = CaptionSegment.Engine.OPENAI

    def __init__(self, on_event: EventSink):
        self.on_event = on_event
        self.config = upstream_session_config()
        self.model = self.config["audio"]["input"]["transcription"]["model"]
        self.manual_turns = self.config["audio"]["input"]["turn_detection"] is None
        self.client = client()
        self.current: Upstream | None = None
        self.retired: set[Upstream] = set()
        self.retiring_tasks: set[asyncio.Task] = set()  # shut a retired upstream once drained
        self.announced = False
        self.audio_ms = 0.0  # the client's audio timeline: sent or dropped
        self.uncommitted = 0  # bytes since the last commit (manual turns)
        self.in_turn = False
        self.last_item: str | None = None
        self.failure: EngineFailed | None = None
        self.recovering: asyncio.Task | None = None
        self.dropped_bytes = 0
        self.closing = False

    # The stream interface (engines.TranscriptionStream)

    async def start(self) -> None:
        try:
            self.current = await self._connect(offset_ms=0)
        except EngineFailed as failure:
            raise self._fail(failure.code, str(failure)) from None

    async def feed(self, pcm24k: bytes) -> None:
        if self.failure is not None:
            raise self.failure
        if self._rotation_due():
            await self._rotate()
        upstream = self.current
        if upstream is None:  # reconnecting: live captions skip this audio
            self.dropped_bytes += len(pcm24k)
            self.audio_ms += len(pcm24k) / BYTES_PER_MS
            return
        # The SDK's typed append validates each event; audio chunks go raw (same wire event).
        frame = json.dumps({"type": "input_audio_buffer.append",
                            "audio": base64.b64encode(pcm24k).decode("ascii")})
        try:
            await upstream.connection.send_raw(frame)
        except ConnectionClosed:
            self._lost(upstream)
            return
        self.audio_ms += len(pcm24k) / BYTES_PER_MS
        self.uncommitted += len(pcm24k)

    async def commit(self) -> None:
        await self._send_typed(lambda c: c.input_audio_buffer.commit())
        self.uncommitted = 0

    async def clear(self) -> None:
        await self._send_typed(lambda c: c.input_audio_buffer.clear())
        self.uncommitted = 0

    async def update(self, session: dict) -> None:
        merged = _merge(self.config, session)
        self.manual_turns = merged["audio"]["input"].get("turn_detection", {}) is None
        self.config = merged
        await self._send_typed(lambda c: c.session.update(session=session))

    async def close(self) -> None:
        self.closing = True
        if self.recovering is not None:
            self.recovering.cancel()
        upstream = self.current
        if upstream is not None and self.in_turn and not self.manual_turns:
            # The speaker left mid-turn: end the turn so its words are still transcribed.
            with contextlib.suppress(Exception):
                await upstream.connection.input_audio_buffer.commit()
        for each in [u for u in (upstream, *self.retired) if u is not None]:
            each.retiring = True
            if not each.pending and not (each is upstream and self.in_turn):
                each.done.set()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(each.done.wait(), CLOSE_TIMEOUT)
            await self._shut(each)
        self.current = None
        for task in list(self.retiring_tasks):  # their upstreams were shut just above
            task.cancel()

    # Connections

    async def _connect(self, offset_ms: float) -> Upstream:
        try:
            connection = await self.client.realtime.connect(
                extra_query={"intent": "transcription"}).enter()
        except InvalidStatus as error:
            status = error.response.status_code
            raise EngineFailed(*(
                (UPSTREAM_AUTH_FAILED, "OpenAI refused the server's API key.")
                if status in (401, 403) else
                (UPSTREAM_QUOTA, "OpenAI's quota or rate limit is exhausted.")
                if status == 429 else
                (UPSTREAM_UNAVAILABLE, f"OpenAI answered HTTP {status}."))) from None
        except (OSError, TimeoutError, ConnectionClosed) as error:
            raise EngineFailed(UPSTREAM_UNAVAILABLE,
                               f"OpenAI cannot be reached ({type(error).__name__}).") from None
        upstream = Upstream(connection, offset_ms)
        LIVE_UPSTREAMS.add(upstream)
        upstream.reader = asyncio.create_task(self._read(upstream))
        with contextlib.suppress(ConnectionClosed):  # e.g. refused at once: the reader says why
            await connection.session.update(session=self.config)
        return upstream

    def _rotation_due(self) -> bool:
        upstream = self.current
        if upstream is None or self.in_turn or (self.manual_turns and self.uncommitted):
            return False
        age = time.monotonic() - upstream.opened_at
        return age >= settings.TRANSCRIPTION["ROTATE_SECONDS"]

    async def _rotate(self) -> None:
        old = self.current
        self.current = None  # audio arriving while the new connection opens is skipped
        try:
            self.current = await self._connect(offset_ms=self.audio_ms)
        except EngineFailed:  # keep the old session; try again at the next pause
            self.current = old
            old.opened_at = time.monotonic() - settings.TRANSCRIPTION["ROTATE_SECONDS"] + 5
            return
        if old is not None:
            self._retire(old)

    def _retire(self, upstream: Upstream) -> None:
        upstream.retiring = True
        self.retired.add(upstream)
        if not upstream.pending:
            upstream.done.set()

        async def shut_when_done() -> None:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(upstream.done.wait(), DRAIN_TIMEOUT)
            await self._shut(upstream)

        task = asyncio.get_running_loop().create_task(shut_when_done())
        self.retiring_tasks.add(task)
        task.add_done_callback(self.retiring_tasks.discard)

    async def _shut(self, upstream: Upstream) -> None:
        self.retired.discard(upstream)
        LIVE_UPSTREAMS.discard(upstream)
        if upstream.reader is not None:
            upstream.reader.cancel()
        with contextlib.suppress(Exception):
            await upstream.connection.close()
        self._fail_pending(upstream, "The transcription session ended first.")

    async def _send_typed(self, send) -> None:
        if self.failure is not None:
            raise self.failure
        upstream = self.current
        if upstream is None:
            return
        try:
            await send(upstream.connection)
        except ConnectionClosed:
            self._lost(upstream)

    # Events from OpenAI

    async def _read(self, upstream: Upstream) -> None:
        try:
            while True:
                event = json.loads(await upstream.connection.recv_bytes())
                if isinstance(event, dict) and isinstance(event.get("type"), str):
                    self._handle(upstream, event)
                if upstream.retiring and not upstream.pending:
                    upstream.done.set()
        except ConnectionClosed:
            if not upstream.retiring:
                self._lost(upstream)
            upstream.done.set()
        except ValueError:
            log.warning("OpenAI sent an event that is not JSON")
            self._lost(upstream)

    def _handle(self, upstream: Upstream, event: dict) -> None:
        kind = event["type"]
        if kind == "session.created":
            return  # announced once Parley's own settings are in force (session.updated)
        if kind == "session.updated" and upstream.own_updates:
            upstream.own_updates -= 1
            if not self.announced:
                self.announced = True
                self.on_event({**event, "type": "session.created"})
            return
        if kind == "error":
            self._upstream_error(upstream, event)
            return
        if upstream is not self.current and kind.startswith("input_audio_buffer.speech"):
            return  # a retired connection's VAD saw only its tail of silence
        if kind == "input_audio_buffer.speech_started":
            self.in_turn = True
            event = {**event, "audio_start_ms": round(
                event.get("audio_start_ms", 0) + upstream.offset_ms)}
        elif kind == "input_audio_buffer.speech_stopped":
            self.in_turn = False
            event = {**event, "audio_end_ms": round(
                event.get("audio_end_ms", 0) + upstream.offset_ms)}
        elif kind == "input_audio_buffer.committed":
            item = event.get("item_id")
            upstream.pending.add(item)
            if upstream.first_commit or not event.get("previous_item_id"):
                event = {**event, "previous_item_id": self.last_item}
            upstream.first_commit = False
            self.last_item = item
            self.uncommitted = 0
        elif kind in TRANSCRIPT_END:
            upstream.pending.discard(event.get("item_id"))
        self.on_event(event)

    def _upstream_error(self, upstream: Upstream, event: dict) -> None:
        error = event.get("error") or {}
        code = error.get("code")
        if code == "session_expired":
            if upstream is self.current and not self.closing:
                self.current = None
                self._retire(upstream)
                self._recover(UPSTREAM_LOST, report=False)
            return
        if code in AUTH_CODES:
            self._fail(UPSTREAM_AUTH_FAILED, "OpenAI refused the server's API key.")
        elif code in QUOTA_CODES or error.get("type") == "insufficient_quota":
            self._fail(UPSTREAM_QUOTA, "OpenAI's quota or rate limit is exhausted.")
        else:  # about something the client sent: the client's to see
            self.on_event(event)

    def _lost(self, upstream: Upstream) -> None:
        LIVE_UPSTREAMS.discard(upstream)  # dropped: nothing left open upstream
        self._fail_pending(upstream, "The connection to OpenAI dropped before this turn's "
                                     "transcript arrived.")
        if upstream is self.current and not self.closing and self.failure is None:
            self.current = None
            self.in_turn = False
            self._recover(UPSTREAM_LOST, report=True)

    def _recover(self, code: str, *, report: bool) -> None:
        if report:
            self._error(code, "Lost the connection to OpenAI; reconnecting. Speech until then "
                              "is not transcribed.")
        if self.recovering is None or self.recovering.done():
            self.recovering = asyncio.get_running_loop().create_task(self._reconnect())

    async def _reconnect(self) -> None:
        for delay in RECONNECT_DELAYS:
            await asyncio.sleep(delay)  # backoff between attempts, not synchronisation
            if self.closing:
                return
            try:
                self.current = await self._connect(offset_ms=self.audio_ms)
                return
            except EngineFailed as failure:
                if failure.code != UPSTREAM_UNAVAILABLE:  # a refusal: retrying won't help
                    self._fail(failure.code, str(failure))
                    return
        self._fail(UPSTREAM_UNAVAILABLE, "OpenAI cannot be reached; transcription stopped.")

    def _fail_pending(self, upstream: Upstream, message: str) -> None:
        for item in sorted(upstream.pending):
            self.on_event({"type": "conversation.item.input_audio_transcription.failed",
                           "item_id": item, "content_index": 0,
                           "error": {"type": "server_error", "code": UPSTREAM_LOST,
                                     "message": message}})
        upstream.pending.clear()
        upstream.done.set()

    def _fail(self, code: str, message: str) -> EngineFailed:
        """Report a fault that ends the stream; the consumer closes the client's socket."""
        self.failure = EngineFailed(code, message)
        self._error(code, message)
        self.on_event({"type": "parley.stream_failed", "code": code})
        return self.failure

    def _error(self, code: str, message: str) -> None:
        self.on_event(RealtimeError(code, message, kind="server_error").event())


def _merge(base: dict, update: dict) -> dict:
    merged = dict(base)
    for key, value in update.items():
        merged[key] = _merge(base[key], value) if isinstance(value, dict) and isinstance(
            base.get(key), dict) else value
    return merged
