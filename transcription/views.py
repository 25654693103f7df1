"""Transcript downloads (/rooms/<slug>/transcript.txt|.vtt|.srt, members only), the live
caption feed and its overlay page (/rooms/<slug>/captions/stream|overlay, transcription/feed.py)
and transcription keys (POST /api/transcription-session)."""

from __future__ import annotations

import json
import time

from asgiref.sync import sync_to_async
from django.conf import settings
from django.core.exceptions import RequestDataTooBig
from django.http import (
    Http404,
    HttpRequest,
    HttpResponse,
    HttpResponseForbidden,
    JsonResponse,
    StreamingHttpResponse,
)
from django.shortcuts import get_object_or_404, render
from django.views.decorators.http import require_GET, require_POST

from rooms.identity import participant_for
from rooms.models import Room
from rooms.ratelimit import WindowLimit, client_address
from rooms.views import enter_room

from . import engines, feed, upstream
from .assistant import manager as assistant_manager
from .formats import FORMATS, caption_json
from .keys import KeyGrant, mint_key
from .models import CaptionSegment

MODES = ("proxy", "websocket", "webrtc")
# Keys per browser session per minute: a page asks for one per connection; more is a loop.
MINT_LIMIT_PER_MINUTE = 10
# The body is a slug and a mode (under 200 bytes); anything much bigger is not a request.
MAX_SESSION_BODY_BYTES = 4 * 1024


@require_GET
def transcript(request: HttpRequest, slug: str, extension: str):
    if extension not in FORMATS:
        raise Http404("No such transcript format.")
    room, _participant, refusal = enter_room(request, slug)
    if refusal is not None:
        return refusal
    render, content_type = FORMATS[extension]
    segments = list(CaptionSegment.objects.filter(room=room).order_by("started_at", "id"))
    response = HttpResponse(render(segments), content_type=content_type)
    response["Content-Disposition"] = f'attachment; filename="{room.slug}-transcript.{extension}"'
    return response


RECENT_SEGMENTS = 200


@require_GET
def recent_transcript(request: HttpRequest, slug: str):
    """The room's last RECENT_SEGMENTS final captions as JSON, oldest first: what a late
    joiner's caption panel starts with. Members only."""
    room, _participant, refusal = enter_room(request, slug)
    if refusal is not None:
        return JsonResponse({"error": {"code": "forbidden"}}, status=403)
    newest = CaptionSegment.objects.filter(room=room).order_by("-started_at", "-id")
    segments = reversed(list(newest[:RECENT_SEGMENTS]))
    return JsonResponse({"segments": [caption_json(segment) for segment in segments]})


@require_GET
def captions_page(request: HttpRequest, slug: str):
    """Live captions for everyone in the room, and this member's own microphone as a source."""
    room, participant, refusal = enter_room(request, slug)
    if refusal is not None:
        return refusal
    return render(request, "transcription/captions.html", {
        "room": room, "participant": participant, "engine": engines.engine_name()})


@require_GET
async def caption_stream(request: HttpRequest, slug: str):
    """The room's captions as Server-Sent Events (transcription/feed.py). Members only, as
    the room page; a visitor who has not joined is refused (403), not shown the join form."""
    # Not thread-sensitive: the request's own thread (and its database connection) would be
    # held for as long as the stream lasts.
    room, participant, refusal = await sync_to_async(enter_room, thread_sensitive=False)(
        request, slug)
    if refusal is not None:
        return refusal if refusal.status_code != 200 else HttpResponseForbidden(
            "Join the room first.", content_type="text/plain")
    refused = feed.admit_feed(participant.key)
    if refused is not None:
        return HttpResponse(refused, status=429, content_type="text/plain",
                            headers={"Retry-After": str(feed.RETRY_MS // 1000)})
    after = feed.parse_position(request.headers.get("Last-Event-ID")
                                or request.GET.get("after"))
    response = StreamingHttpResponse(feed.CaptionFeed(room.pk, participant.key, after),
                                     content_type="text/event-stream; charset=utf-8")
    response["Cache-Control"] = "no-cache"
    response["X-Accel-Buffering"] = "no"  # nginx: pass each event on as it comes
    return response


@require_GET
def caption_overlay(request: HttpRequest, slug: str):
    """The last caption lines, large, on a transparent page (an OBS browser source)."""
    room, _participant, refusal = enter_room(request, slug)
    if refusal is not None:
        return refusal
    return render(request, "transcription/caption_overlay.html", {"room": room})


@require_POST
def transcription_session(request: HttpRequest):
    """Mint a short-lived key for a member of a room, for one transcription mode.

    Body (JSON or form): `room` (slug), `mode`: "proxy" (Parley's /v1/realtime socket),
    "websocket" or "webrtc" (the browser talks to OpenAI directly with an ephemeral client
    secret when OPENAI_API_KEY is set, else to Parley's own endpoints of the same protocol).
    CSRF-protected like every POST. Answers as OpenAI's client secrets do (`value`,
    `expires_at`, `session`) plus the URLs to use and whether the page must relay transcripts
    to the room (`relay_captions`: only when OpenAI, not Parley, transcribes).
    """
    body = _session_request(request)
    if isinstance(body, JsonResponse):
        return body
    slug, mode = body.get("room"), body.get("mode", "proxy")
    if not isinstance(slug, str) or mode not in MODES:
        return _error(400, "invalid_request",
                      f"Send 'room' (a slug) and 'mode' (one of {', '.join(MODES)}).")
    room = get_object_or_404(Room, slug=slug)
    participant = participant_for(request.session, request.user, room)
    if participant is None:
        return _error(403, "forbidden", "Only members of the room may transcribe in it.")
    if not _within_rate(request.session) or _address_refused(request):
        return _error(429, "rate_limited", "Too many keys; wait a minute.")
    if mode != "proxy" and engines.engine_name() == "openai":
        try:
            secret = upstream.mint_client_secret()
        except upstream.UpstreamRefused as refusal:
            return _error(502, refusal.code, str(refusal))
        return JsonResponse({**secret, "mode": mode, "provider": "openai",
                             "relay_captions": True, **upstream.urls()})
    value, expires_at = mint_key(KeyGrant(room.pk, participant.key, participant.name))
    secure = request.is_secure()
    host = request.get_host()
    return JsonResponse({
        "value": value,
        "expires_at": expires_at,
        "session": {"type": "transcription", "room": room.slug},
        "mode": mode,
        "provider": "parley",
        "relay_captions": False,  # Parley's endpoints share and store the captions themselves
        "websocket_url": f"{'wss' if secure else 'ws'}://{host}/v1/realtime?intent=transcription",
        "calls_url": f"{'https' if secure else 'http'}://{host}/v1/realtime/calls",
    })


def _session_request(request: HttpRequest) -> dict | JsonResponse:
    """The request's fields as a dict, or the error to answer: 413 past
    MAX_SESSION_BODY_BYTES (checked before the body is read when its length is declared),
    400 for JSON that does not parse (nesting too deep included) or is not an object."""
    too_large = _error(413, "request_too_large",
                       f"The body is limited to {MAX_SESSION_BODY_BYTES} bytes.")
    try:
        declared = int(request.META.get("CONTENT_LENGTH") or 0)
    except ValueError:
        declared = 0
    if declared > MAX_SESSION_BODY_BYTES:
        return too_large
    try:
        raw = request.body
    except RequestDataTooBig:
        return too_large
    if len(raw) > MAX_SESSION_BODY_BYTES:
        return too_large
    if request.content_type != "application/json":
        return request.POST.dict()
    try:
        body = json.loads(raw)
    except (ValueError, RecursionError):  # UnicodeDecodeError is a ValueError
        return _error(400, "invalid_json", "The body is not valid JSON.")
    if not isinstance(body, dict):
        return _error(400, "invalid_request",
                      "Send a JSON object: {\"room\": <slug>, \"mode\": <mode>}.")
    return body


def _address_refused(request: HttpRequest) -> bool:
    # A fresh guest session per request would dodge the session limit; an address may be an
    # office full of members, hence the generous default (60 a minute).
    limit = settings.PARLEY["KEY_MINT_PER_MINUTE_PER_ADDRESS"]
    return WindowLimit("keys.address", limit, 60).hit(client_address(request)) is not None


def _error(status: int, code: str, message: str) -> JsonResponse:
    return JsonResponse({"error": {"code": code, "message": message}}, status=status)


def _within_rate(session) -> bool:
    now = time.time()
    recent = [t for t in session.get("parley_key_times", []) if now - t < 60]
    if len(recent) >= MINT_LIMIT_PER_MINUTE:
        return False
    session["parley_key_times"] = [*recent, now]
    return True


# The room assistant (docs/assistant.md): availability and presence, invite, remove.

async def _assistant_member(request: HttpRequest, slug: str):
    room, participant, refusal = await sync_to_async(enter_room, thread_sensitive=False)(
        request, slug)
    if refusal is not None:
        return room, None, _error(403, "forbidden", "Join the room first.")
    return room, participant, None


@require_GET
async def assistant_status(request: HttpRequest, slug: str):
    """`{available, present, invited_by}` of the room's assistant. Members only."""
    room, _participant, refusal = await _assistant_member(request, slug)
    if refusal is not None:
        return refusal
    return JsonResponse(await assistant_manager.status(room))


@require_POST
async def assistant_invite(request: HttpRequest, slug: str):
    """Invite the assistant (201; 200 if it is already here; 503 unavailable or failed)."""
    room, participant, refusal = await _assistant_member(request, slug)
    if refusal is not None:
        return refusal
    status, body = await assistant_manager.invite(room, participant)
    return JsonResponse(body, status=status)


@require_POST
async def assistant_remove(request: HttpRequest, slug: str):
    """Remove the assistant, wherever its session runs (200)."""
    room, participant, refusal = await _assistant_member(request, slug)
    if refusal is not None:
        return refusal
    status, body = await assistant_manager.remove(room, participant)
    return JsonResponse(body, status=status)


@require_GET
def assistant_page(request: HttpRequest, slug: str):
    """The assistant on its own page: its panel, the chat, a field to ask it."""
    room, _participant, refusal = enter_room(request, slug)
    if refusal is not None:
        return refusal
    return render(request, "transcription/assistant_page.html", {"room": room})


@require_POST
async def assistant_voice(request: HttpRequest, slug: str):
    """`{"on": true|false}`: the assistant joins (or leaves) the room's group call (202)."""
    room, _participant, refusal = await _assistant_member(request, slug)
    if refusal is not None:
        return refusal
    try:
        on = json.loads(request.body or b"{}").get("on")
    except (ValueError, AttributeError):
        on = None
    if not isinstance(on, bool):
        return _error(400, "invalid_field", "Send {\"on\": true} or {\"on\": false}.")
    status, body = await assistant_manager.voice(room, on)
    return JsonResponse(body, status=status)
