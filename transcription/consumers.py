"""`/v1/realtime`: a Realtime-API-compatible transcription socket (the server-side proxy mode).

Clients speak the Realtime API's client events and get its server events back, so the same
browser code (and the official SDK, via `websocket_base_url`) works against Parley. Auth, as
the API's: `Authorization: Bearer <key>` or the subprotocols `realtime` +
`openai-insecure-api-key.<key>`, with a key from `POST /api/transcription-session`; or, for the
room's own page, its session cookie and `?room=<slug>` (then the Origin must be ours).

Behind it, the configured engine (engines.py): OpenAI Realtime through the official SDK, or
the offline engine. Transcripts become the room's shared captions; final ones are stored.
"""

from __future__ import annotations

import asyncio
import contextlib
from urllib.parse import parse_qs

from channels.db import database_sync_to_async

from rooms import protocol
from rooms.access import admits
from rooms.identity import participant_for
from rooms.models import Room
from rooms.origin import origin_allowed
from rooms.protocol import ProtocolError
from rooms.sockets import ParleySocket, RoomSocket

from . import captions, engines, realtime, reports, slots
from .keys import KeyGrant, check_key
from .models import CaptionSegment
from .pipeline import SpeakerPipeline

CLOSE_UNAUTHORIZED = 4401
CLOSE_UPSTREAM_FAILED = 4502  # after an `error` naming the cause (key refused, quota, gone)
API_KEY_PROTOCOL = "openai-insecure-api-key."

def presented_key(scope) -> str | None:
    for name, value in scope.get("headers", []):
        if name == b"authorization" and value.lower().startswith(b"bearer "):
            return value[7:].decode("latin-1").strip()
    for offered in scope.get("subprotocols", []):
        if offered.startswith(API_KEY_PROTOCOL):
            return offered.removeprefix(API_KEY_PROTOCOL)
    return None


@database_sync_to_async
def grant_from_session(scope) -> KeyGrant | None:
    slug = parse_qs(scope.get("query_string", b"").decode("latin-1")).get("room", [""])[0]
    room = Room.objects.filter(slug=slug).first()
    if room is None:
        return None
    participant = participant_for(scope.get("session"), scope.get("user"), room)
    if participant is None:
        return None
    return KeyGrant(room.pk, participant.key, participant.name)


class RealtimeConsumer(ParleySocket):
    """One speaker's transcription session. Frames are decoded, rate-limited and refused by
    the base class; audio waits in a bounded inbox for the engine, fed by one task in the
    order it came, so a fast sender is refused (`audio_backlog_full`) instead of growing
    daphne's unbounded receive queue: daphne queues every frame it reads whether or not the
    consumer has taken the last one, so awaiting the engine here would bound nothing."""

    rate_settings = ("REALTIME_RATE_BURST", "REALTIME_RATE_PER_SECOND")
    grant: KeyGrant | None = None
    pipeline: SpeakerPipeline | None = None
    holds_slot = False

    def max_frame_bytes(self) -> int:
        return realtime.MAX_FRAME_CHARS

    async def connect(self) -> None:
        key = presented_key(self.scope)
        if key is not None:
            grant = check_key(key)
        elif origin_allowed(self.scope):
            grant = await grant_from_session(self.scope)
        else:
            grant = None
        subprotocol = "realtime" if "realtime" in self.scope.get("subprotocols", []) else None
        await self.accept(subprotocol)
        if grant is None:
            await self.send_json(realtime.RealtimeError(
                "invalid_api_key", "Missing, invalid or expired transcription key.",
                kind="authentication_error").event())
            await self.close(code=CLOSE_UNAUTHORIZED)
            return
        if not slots.acquire(grant.speaker_key):
            await self.send_json(realtime.RealtimeError(
                "too_many_sessions",
                f"You already have {slots.limit()} transcription sessions open; close one.",
                kind="invalid_request_error").event())
            await self.close(code=protocol.CLOSE_TOO_MANY)
            return
        self.holds_slot = True
        self.grant = grant
        if not await database_sync_to_async(admits)(grant.room_id, grant.speaker_key):
            await self.close(code=protocol.CLOSE_FORBIDDEN)  # access ended since the key
            return
        await self.watch_access(grant.room_id, grant.speaker_key)
        self.buffered = 0  # bytes appended since the last commit or clear
        self.inbox: asyncio.Queue[realtime.ClientEvent] = asyncio.Queue()
        self.inbox_bytes = 0  # audio received but not yet taken by the engine
        self.pipeline = SpeakerPipeline(
            grant.room_id, grant.speaker_key, grant.speaker_name, deliver=self.send_json,
            on_failed=lambda: self.close(code=CLOSE_UPSTREAM_FAILED))
        try:
            await self.pipeline.start()
        except engines.EngineFailed:
            return  # relayed, then the socket closes
        self.spawn(self._feed_engine(), name="engine-feed")
        self.admit()

    async def closed(self) -> None:
        """Called once, however the socket ended: close the engine stream (an open turn is
        ended, its transcript still stored and shared), then give the slot back."""
        try:
            if self.pipeline is not None:
                await self.pipeline.close()
        finally:
            if self.holds_slot:
                slots.release(self.grant.speaker_key)
                self.holds_slot = False

    async def handle(self, data: dict) -> None:
        try:
            event = realtime.client_event(data)
            if isinstance(event, realtime.Append):
                self._take_audio(event)
            elif isinstance(event, realtime.Commit):
                if self.buffered < realtime.MIN_COMMIT_BYTES:
                    raise realtime.RealtimeError(
                        "input_audio_buffer_commit_empty",
                        "Commit needs at least 100 ms of audio since the last commit.")
                self.buffered = 0
            elif isinstance(event, realtime.Clear):
                self.buffered = 0
        except realtime.RealtimeError as error:
            await self.send_json(error.event())
            return
        self.inbox.put_nowait(event)

    def _take_audio(self, event: realtime.Append) -> None:
        if self.inbox_bytes + len(event.audio) > realtime.MAX_BACKLOG_BYTES:
            raise realtime.RealtimeError(
                "audio_backlog_full",
                f"{self.inbox_bytes} bytes of audio are still waiting for the engine; send "
                "audio no faster than real time.", param="audio")
        self.buffered += len(event.audio)
        self.inbox_bytes += len(event.audio)

    async def _feed_engine(self) -> None:
        """The one task that talks to the engine, in the order events came."""
        stream = self.pipeline.stream
        while True:
            event = await self.inbox.get()
            try:
                if isinstance(event, realtime.Append):
                    self.inbox_bytes -= len(event.audio)
                    await stream.feed(event.audio)
                elif isinstance(event, realtime.Commit):
                    await stream.commit()
                elif isinstance(event, realtime.Clear):
                    await stream.clear()
                else:
                    await stream.update(event.session)
            except engines.EngineFailed:
                return  # relayed; the pipeline closes the socket

    async def refuse(self, error: ProtocolError, **extra) -> None:
        """Refusals in the Realtime API's error shape."""
        await self.send_json(realtime.frame_error(error.code, error.message).event())

    async def access_revoked(self) -> None:
        await self.send_json(realtime.RealtimeError(
            "access_revoked", "You no longer have access to this room.",
            kind="invalid_request_error").event())
        await self.close(code=protocol.CLOSE_FORBIDDEN)


CLOSE_REPLACED = 4409  # the same member started reporting from another connection


class CaptionReportConsumer(RoomSocket):
    """`ws/captions/<slug>/`: a member's browser relays the transcript events it gets from
    OpenAI (browser-direct modes); they become shared captions, stored as client-reported.

    One stream per member: a new connection replaces the old one (closed with 4409), as a
    reload would. Rate- and size-limited like every room socket (CAPTION_RATE_*)."""

    rate_settings = ("CAPTION_RATE_BURST", "CAPTION_RATE_PER_SECOND")

    async def joined(self) -> None:
        self.stream_group = f"captions.{self.room.pk}.{self.me.id}"
        await self.channel_layer.group_send(
            self.stream_group, {"type": "caption.stream.replaced", "by": self.channel_name})
        await self.channel_layer.group_add(self.stream_group, self.channel_name)
        self.captions = captions.SpeakerCaptions(
            self.room.pk, self.participant.key, self.participant.name,
            CaptionSegment.Engine.CLIENT)
        await self.send_json({"type": "hello", "you": self.me.as_dict(),
                              "limits": {"max_transcript_chars": reports.MAX_TRANSCRIPT_CHARS}})

    async def handle(self, data: dict) -> None:
        # Audio times can run no further ahead than this stream has lasted (plus slack), so
        # a reporter cannot date captions into the future, pushing others' out of view.
        event = reports.parse_report(
            data, self.me.id, latest_audio_ms=reports.max_audio_ms(self.captions.opened_at))
        await self.captions.handle(event)
        if event["type"].endswith(".completed"):
            # Acknowledged only once stored, so a report that was acked is in the database.
            await self.send_json({"type": "caption.stored", "item_id": data["item_id"]})

    async def caption_stream_replaced(self, message: dict) -> None:
        if message["by"] != self.channel_name:
            await self.send_json({"type": "replaced"})
            await self.close(code=CLOSE_REPLACED)

    async def closed(self) -> None:
        if self.room is not None:
            with contextlib.suppress(Exception):
                await self.channel_layer.group_discard(self.stream_group, self.channel_name)
