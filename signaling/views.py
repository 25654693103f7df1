"""The old direct pages (a redirect to the room), the group call page, fresh ICE servers."""

from __future__ import annotations

from django.http import Http404, HttpRequest, JsonResponse
from django.shortcuts import redirect
from django.views.decorators.http import require_GET

from rooms.views import enter_room

from .ice import ice_servers_for
from .protocol import MODES


@require_GET
def direct(request: HttpRequest, slug: str, mode: str):
    """The old direct chat / direct video pages: direct conversations live on the room page
    now (Message / Call <name> in "Here now"), so they send people there."""
    if mode not in MODES:
        raise Http404("No such call mode.")
    return redirect("room", slug=slug)


@require_GET
def group_call(request: HttpRequest, slug: str):
    """The old group call page: a deep link into the room page, which joins the call
    (issue #14: one room, one meeting)."""
    room, _participant, refusal = enter_room(request, slug)
    if refusal is not None:
        return refusal
    return redirect(f"{room.get_absolute_url()}?join=call")


@require_GET
def ice_servers(request: HttpRequest, slug: str):
    """RTCIceServer list with fresh TURN credentials, for members only (JSON)."""
    _room, participant, refusal = enter_room(request, slug)
    if refusal is not None:
        return JsonResponse({"error": "forbidden"}, status=403)
    return JsonResponse({"iceServers": ice_servers_for(participant.public_id)})
