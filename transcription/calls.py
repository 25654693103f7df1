"""`POST /v1/realtime/calls`: the Realtime API's WebRTC entry point, answered by Parley.

When Parley transcribes (no OPENAI_API_KEY, or a browser asking Parley rather than OpenAI),
the WebRTC mode still works: the browser posts its SDP offer (one microphone track, a data
channel named `oai-events`) with a key from `POST /api/transcription-session`, as it would to
OpenAI, and gets `201` with the SDP answer and a `Location`. Parley's aiortc peer receives
the Opus audio, decodes and resamples it to PCM16 24 kHz for the configured engine, and sends
the engine's server events on `oai-events`; client events (`session.update`) come back on
it. The words become the room's shared, stored captions as on the proxy socket.

Lifetimes: a RealtimeCall owns its peer connection, its engine stream and two tasks (audio in,
events out). It ends when the data channel or the connection closes or fails, after
CONNECT_TIMEOUT without connecting, or after MAX_CALL_SECONDS; ending closes all of them,
and so does a request that fails or is abandoned before its answer. Calls are kept in CALLS
(per process) from the moment they are created, which is what the per-member limit
(MAX_CALLS_PER_MEMBER) counts.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import json
import secrets

from aiortc import RTCSessionDescription
from django.conf import settings
from django.core.exceptions import RequestDataTooBig
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.views.decorators.csrf import csrf_exempt

from signaling.ice import peer_connection
from signaling.media import pcm_from_track

from . import engines, realtime
from .consumers import presented_key
from .keys import KeyGrant, check_key
from .pipeline import SpeakerPipeline

EVENTS_CHANNEL = "oai-events"
MAX_OFFER_BYTES = 64 * 1024
MAX_CALL_SECONDS = 60 * 60  # as an OpenAI session
CONNECT_TIMEOUT = 30  # a call whose media never arrives is closed after this
CALLS: dict[str, RealtimeCall] = {}
# end() tasks of calls whose request was abandoned mid-answer (kept until done).
_ENDING: set[asyncio.Task] = set()


class BadOffer(ValueError):
    """aiortc could not take the SDP offer (it raises ValueError, AssertionError, IndexError,
    ... from deep inside its parser), or could not answer it."""


class RealtimeCall:
    def __init__(self, grant: KeyGrant):
        self.id = "rtc_" + secrets.token_hex(12)
        self.grant = grant
        self.pc = peer_connection(settings.ICE_SERVERS)
        self.channel = None
        self.unsent: list[str] = []  # events made before the data channel opened
        self.pipeline: SpeakerPipeline | None = None
        self.tasks: set[asyncio.Task] = set()
        self.connected = asyncio.Event()
        self.ended = asyncio.Event()

    async def answer(self, offer_sdp: str) -> str:
        """Runs in a task of its own context (see create_call): the pipeline's relay task,
        which stores captions, is created here and inherits it."""
        self.pipeline = SpeakerPipeline(
            self.grant.room_id, self.grant.speaker_key, self.grant.speaker_name,
            deliver=self._deliver, on_failed=self._end_soon)
        self.pc.on("datachannel", self._on_channel)
        self.pc.on("track", self._on_track)
        self.pc.on("connectionstatechange", self._on_state)
        try:
            await self.pc.setRemoteDescription(RTCSessionDescription(offer_sdp, "offer"))
            await self.pc.setLocalDescription(await self.pc.createAnswer())
        except Exception as error:  # any failure here is the offer's: see BadOffer
            raise BadOffer(str(error) or type(error).__name__) from error
        await self.pipeline.start()
        if self.ended.is_set():  # the connection failed while the engine started
            await self.pipeline.close()
        else:
            self._spawn(self._expire())
        return self.pc.localDescription.sdp

    def _spawn(self, coroutine) -> None:
        task = asyncio.get_running_loop().create_task(coroutine)
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    def _on_channel(self, channel) -> None:
        if channel.label != EVENTS_CHANNEL:
            return
        self.channel = channel
        for text in self.unsent:
            channel.send(text)
        self.unsent.clear()
        channel.on("message", lambda message: self._spawn(self._client_event(message)))
        channel.on("close", lambda: self._spawn(self.end()))

    def _on_track(self, track) -> None:
        if track.kind == "audio":
            self._spawn(self._transcribe(track))

    async def _on_state(self) -> None:
        if self.pc.connectionState == "connected":
            self.connected.set()
        elif self.pc.connectionState in ("failed", "closed"):
            await self.end()

    async def _transcribe(self, track) -> None:
        with contextlib.suppress(Exception):  # the track ends when the call does
            async for pcm in pcm_from_track(track):
                await self.pipeline.stream.feed(pcm)

    async def _client_event(self, message) -> None:
        text = message if isinstance(message, str) else None
        binary = message if isinstance(message, bytes) else None
        stream = self.pipeline.stream
        try:
            event = realtime.parse_client_event(text, binary)
            if isinstance(event, realtime.SessionUpdate):
                await stream.update(event.session)
            elif isinstance(event, realtime.Commit):
                await stream.commit()
            elif isinstance(event, realtime.Clear):
                await stream.clear()
            else:  # over WebRTC the audio is the track
                raise realtime.RealtimeError(
                    "invalid_value", "Audio travels on the media track in a WebRTC call.",
                    param="type")
        except realtime.RealtimeError as error:
            self._send(error.event())
        except engines.EngineFailed:
            pass  # reported through the events

    async def _deliver(self, event: dict) -> None:
        self._send(event)

    async def _end_soon(self) -> None:
        """The engine failed: end the call (from its own task, not the relay's)."""
        self._spawn(self.end())

    def _send(self, event: dict) -> None:
        text = json.dumps(event)
        if self.channel is not None and self.channel.readyState == "open":
            self.channel.send(text)
        elif self.channel is None:
            self.unsent.append(text)

    async def _expire(self) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.connected.wait(), CONNECT_TIMEOUT)
            await asyncio.wait_for(self.ended.wait(), MAX_CALL_SECONDS)
        if not self.ended.is_set():
            await self.end()

    async def end(self) -> None:
        if self.ended.is_set():
            return
        self.ended.set()
        CALLS.pop(self.id, None)
        if self.pipeline is not None:
            await self.pipeline.close()  # the last turn's events still reach the captions
        await self.pc.close()
        current = asyncio.current_task()
        others = [task for task in self.tasks if task is not current]
        for task in others:
            task.cancel()
        # Once end() returns nothing of the call runs any more.
        await asyncio.gather(*others, return_exceptions=True)


@csrf_exempt  # an API authenticated by its bearer key, as OpenAI's
async def create_call(request: HttpRequest) -> HttpResponse:
    if request.method != "POST":
        return _error(405, "method_not_allowed", "POST an SDP offer.")
    key = presented_key({"headers": [(name.lower().encode(), value.encode())
                                     for name, value in request.headers.items()]})
    grant = check_key(key) if key else None
    if grant is None:
        return _error(401, "invalid_api_key", "Missing, invalid or expired transcription key.",
                      kind="authentication_error")
    if request.content_type != "application/sdp":
        return _error(400, "invalid_value", "Send the SDP offer as application/sdp.",
                      param="Content-Type")
    offer = _offer(request)
    if offer is None or b"m=audio" not in offer:
        return _error(400, "invalid_value", "The offer needs an audio section (and is at "
                                            f"most {MAX_OFFER_BYTES} bytes).", param="sdp")
    # Each call holds an engine stream (an upstream OpenAI connection, or a decoder) until it
    # ends. A page has one; the default two lets a reload start its call while the old one
    # is still closing.
    limit = settings.PARLEY["MAX_CALLS_PER_MEMBER"]
    if sum(call.grant.speaker_key == grant.speaker_key for call in CALLS.values()) >= limit:
        return _error(429, "rate_limited", f"At most {limit} calls at once per member: end "
                                           "one first.", kind="rate_limit_error")
    call = RealtimeCall(grant)
    CALLS[call.id] = call  # counted from now on; end() removes it
    # The call outlives this request: its tasks (and aiortc's) must not inherit the request's
    # context, whose thread-sensitive executor for database calls ends with the request.
    detached = asyncio.get_running_loop().create_task(
        call.answer(offer.decode("utf-8", "replace")), context=contextvars.Context())
    try:
        answer = await detached
    except engines.EngineFailed as failure:
        await call.end()
        return _error(502, failure.code, str(failure), kind="server_error")
    except BadOffer as error:
        await call.end()
        return _error(400, "invalid_value", f"Bad SDP offer: {error}", param="sdp")
    except Exception:
        await call.end()
        raise
    except asyncio.CancelledError:
        # The request was abandoned (the client went away): nothing will answer, so end
        # the call from a task of its own, which the cancellation of this one cannot stop.
        ending = asyncio.get_running_loop().create_task(call.end(),
                                                        context=contextvars.Context())
        _ENDING.add(ending)
        ending.add_done_callback(_ENDING.discard)
        raise
    response = HttpResponse(answer, status=201, content_type="application/sdp")
    response["Location"] = f"/v1/realtime/calls/{call.id}"
    return response


def _offer(request: HttpRequest) -> bytes | None:
    """The posted SDP, or None past MAX_OFFER_BYTES (refused before reading a declared
    length, and never more than Django's DATA_UPLOAD_MAX_MEMORY_SIZE read)."""
    try:
        if int(request.META.get("CONTENT_LENGTH") or 0) > MAX_OFFER_BYTES:
            return None
        body = request.body
    except (ValueError, RequestDataTooBig):
        return None
    return body if len(body) <= MAX_OFFER_BYTES else None


def _error(status: int, code: str, message: str, *, kind: str = "invalid_request_error",
           param: str | None = None) -> JsonResponse:
    return JsonResponse({"error": {"message": message, "type": kind, "param": param,
                                   "code": code}}, status=status)
