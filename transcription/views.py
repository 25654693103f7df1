"""Transcript downloads: /rooms/<slug>/transcript.txt|.vtt|.srt, members only."""

from __future__ import annotations

from django.http import Http404, HttpRequest, HttpResponse
from django.views.decorators.http import require_GET

from rooms.views import enter_room

from .formats import FORMATS
from .models import CaptionSegment


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
