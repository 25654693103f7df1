"""`/v1/realtime`: a Realtime-API-compatible transcription socket (the server-side proxy mode).

Clients speak the Realtime API's client events and get its server events back, so the same
browser code (and the official SDK, via `websocket_base_url`) works against Parley. Auth, as
the API's: `Authorization: Bearer <key>` or the subprotocols `realtime` +
`openai-insecure-api-key.<key>`, with a key from `POST /api/transcription-session`; or, for the
room's own page, its session cookie and `?room=<slug>` (then the Origin must be ours).

Behind it: the offline engine (OpenAI's engine is the open issue's next part). Transcripts
become the room's shared captions; final ones are stored.
"""

from __future__ import annotations

import asyncio
import json
import secrets
from urllib.parse import parse_qs

from channels.db import database_sync_to_async
from channels.generic.websocket import AsyncWebsocketConsumer
from channels.security.websocket import AllowedHostsOriginValidator

from rooms.identity import participant_for
from rooms.models import Room

from . import captions, realtime
from .keys import KeyGrant, check_key
from .models import CaptionSegment
from .offline import shared_engine

CLOSE_UNAUTHORIZED = 4401
API_KEY_PROTOCOL = "openai-insecure-api-key."
OFFLINE_MODEL = "pocketsphinx-en-us"

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
        self.stream = self.channel_name
        self.buffered = 0  # bytes appended since the last commit or clear
        self.captions = captions.SpeakerCaptions(grant.room_id, grant.speaker_key,
                                                 grant.speaker_name, CaptionSegment.Engine.OFFLINE)
        # Engine events are relayed by one task, in the order the engine made them.
        self.engine_events: asyncio.Queue[dict] = asyncio.Queue()
        self.relay_task = asyncio.create_task(self._relay_events())
        self.engine = shared_engine()
        self.engine.open(self.stream, self._on_engine_event)
        self.session_id = "sess_" + secrets.token_hex(12)
        await self.send_json(realtime.server_event(
            "session.created", session=realtime.session_description(self.session_id,
                                                                     OFFLINE_MODEL)))

    async def disconnect(self, code: int) -> None:
        if self.grant is not None:
            if self.stream in self.engine.streams:
                await self.engine.close(self.stream)
            self.relay_task.cancel()

    async def receive(self, text_data: str | None = None, bytes_data: bytes | None = None):
        if self.grant is None:
            return
        try:
            event = realtime.parse_client_event(text_data, bytes_data)
        except realtime.RealtimeError as error:
            await self.send_json(error.event())
            return
        if isinstance(event, realtime.Append):
            self.buffered += len(event.audio)
            # Awaiting the decoder is the backpressure: a client sending faster than real time
            # waits here, and the socket's receive buffer fills instead of our memory.
            await self.engine.feed(self.stream, event.audio)
        elif isinstance(event, realtime.Commit):
            if self.buffered < realtime.MIN_COMMIT_BYTES:
                await self.send_json(realtime.RealtimeError(
                    "input_audio_buffer_commit_empty",
                    "Commit needs at least 100 ms of audio since the last commit.").event())
                return
            self.buffered = 0
            await self.engine.commit(self.stream)
        elif isinstance(event, realtime.Clear):
            self.buffered = 0
            await self.engine.clear(self.stream)
            await self.send_json(realtime.server_event("input_audio_buffer.cleared"))
        else:
            await self.send_json(realtime.server_event(
                "session.updated", session=realtime.session_description(self.session_id,
                                                                        OFFLINE_MODEL)))

    def _on_engine_event(self, event: dict) -> None:
        """Called on the event loop for each engine event, in order."""
        self.engine_events.put_nowait(event)

    async def _relay_events(self) -> None:
        while True:
            await self._relay(await self.engine_events.get())

    async def _relay(self, event: dict) -> None:
        await self.send_json(realtime.server_event(event["type"], **{
            k: v for k, v in event.items() if k != "type"}))
        await self.captions.handle(event)

    async def send_json(self, content: dict) -> None:
        await self.send(text_data=json.dumps(content))
