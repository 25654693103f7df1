"""Direct chat and direct video pages, and fresh ICE servers for them."""

from __future__ import annotations

from django.http import Http404, HttpRequest, JsonResponse
from django.shortcuts import render
from django.views.decorators.http import require_GET

from rooms.views import enter_room

from .ice import ice_servers_for
from .protocol import MODES


@require_GET
def direct(request: HttpRequest, slug: str, mode: str):
    """The stand-alone direct page: the room's people with Message/Call, and the direct
    partial (until the room page carries it)."""
    if mode not in MODES:
        raise Http404("No such call mode.")
    room, participant, refusal = enter_room(request, slug)
    if refusal is not None:
        return refusal
    return render(request, "signaling/direct.html", {"room": room, "participant": participant})


@require_GET
def group_call(request: HttpRequest, slug: str):
    room, participant, refusal = enter_room(request, slug)
    if refusal is not None:
        return refusal
    return render(request, "signaling/group_call.html", {
        "room": room, "participant": participant,
        "ice_servers": ice_servers_for(participant.public_id),
    })


@require_GET
def ice_servers(request: HttpRequest, slug: str):
    """RTCIceServer list with fresh TURN credentials, for members only (JSON)."""
    _room, participant, refusal = enter_room(request, slug)
    if refusal is not None:
        return JsonResponse({"error": "forbidden"}, status=403)
    return JsonResponse({"iceServers": ice_servers_for(participant.public_id)})
