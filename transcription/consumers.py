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

import contextlib
import json
from urllib.parse import parse_qs

from channels.db import database_sync_to_async
from channels.generic.websocket import AsyncWebsocketConsumer
from channels.security.websocket import AllowedHostsOriginValidator

from rooms.identity import participant_for
from rooms.models import Room
from rooms.sockets import RoomSocket

from . import captions, engines, realtime, reports
from .engines import TranscriptionStream
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
    for protocol in scope.get("subprotocols", []):
        if protocol.startswith(API_KEY_PROTOCOL):
            return protocol.removeprefix(API_KEY_PROTOCOL)
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


def _origin_allowed(scope) -> bool:
    validator = AllowedHostsOriginValidator(lambda *args: None)
    headers = dict(scope.get("headers", []))
    origin = headers.get(b"origin")
    if origin is None:
        return False
    from urllib.parse import urlparse

    return validator.valid_origin(urlparse(origin.decode("latin-1")))


class RealtimeConsumer(AsyncWebsocketConsumer):
    grant: KeyGrant | None = None
    pipeline: SpeakerPipeline | None = None

    async def connect(self) -> None:
        key = presented_key(self.scope)
        if key is not None:
            grant = check_key(key)
        elif _origin_allowed(self.scope):
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
        self.grant = grant
        self.buffered = 0  # bytes appended since the last commit or clear
        self.pipeline = SpeakerPipeline(
            grant.room_id, grant.speaker_key, grant.speaker_name, deliver=self.send_json,
            on_failed=lambda: self.close(code=CLOSE_UPSTREAM_FAILED))
        with contextlib.suppress(engines.EngineFailed):  # relayed, then the socket closes
            await self.pipeline.start()

    async def disconnect(self, code: int) -> None:
        if self.pipeline is not None:
            # Closing ends an open turn; its transcript is still stored and shared.
            await self.pipeline.close()

    async def receive(self, text_data: str | None = None, bytes_data: bytes | None = None):
        if self.pipeline is None or not self.pipeline.started:
            return
        try:
            event = realtime.parse_client_event(text_data, bytes_data)
        except realtime.RealtimeError as error:
            await self.send_json(error.event())
            return
        try:
            await self._apply(event, self.pipeline.stream)
        except engines.EngineFailed:
            pass  # relayed, then the socket closes

    async def _apply(self, event: realtime.ClientEvent, stream: TranscriptionStream) -> None:
        if isinstance(event, realtime.Append):
            self.buffered += len(event.audio)
            # Awaiting the engine is the backpressure: a client sending faster than it takes
            # audio waits here, and the socket's receive buffer fills instead of our memory.
            await stream.feed(event.audio)
        elif isinstance(event, realtime.Commit):
            if self.buffered < realtime.MIN_COMMIT_BYTES:
                await self.send_json(realtime.RealtimeError(
                    "input_audio_buffer_commit_empty",
                    "Commit needs at least 100 ms of audio since the last commit.").event())
                return
            self.buffered = 0
            await stream.commit()
        elif isinstance(event, realtime.Clear):
            self.buffered = 0
            await stream.clear()
        else:
            await stream.update(event.session)

    async def send_json(self, content: dict) -> None:
        await self.send(text_data=json.dumps(content))


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
        event = reports.parse_report(data, self.me.id)
        await self.captions.handle(event)
        if event["type"].endswith(".completed"):
            # Acknowledged only once stored, so a report that was acked is in the database.
            await self.send_json({"type": "caption.stored", "item_id": data["item_id"]})

    async def caption_stream_replaced(self, message: dict) -> None:
        if message["by"] != self.channel_name:
            await self.send_json({"type": "replaced"})
            await self.close(code=CLOSE_REPLACED)

    async def disconnect(self, code: int) -> None:
        if self.room is not None:
            with contextlib.suppress(Exception):
                await self.channel_layer.group_discard(self.stream_group, self.channel_name)
