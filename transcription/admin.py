from django.contrib import admin
from django.http import HttpResponse

from .formats import to_txt
from .models import CaptionSegment


@admin.action(description="Export selected segments as text")
def export_segments(modeladmin, request, queryset):
    segments = list(queryset.select_related("room").order_by("room__slug", "started_at", "id"))
    body = "".join(
        f"# {room}\n{to_txt([s for s in segments if s.room_id == room.pk])}"
        for room in dict.fromkeys(s.room for s in segments)
    )
    response = HttpResponse(body, content_type="text/plain; charset=utf-8")
    response["Content-Disposition"] = 'attachment; filename="captions.txt"'
    return response


@admin.register(CaptionSegment)
class CaptionSegmentAdmin(admin.ModelAdmin):
    list_display = ["room", "speaker_name", "short_text", "started_at", "engine"]
    list_filter = ["engine", "room", "started_at"]
    search_fields = ["text", "speaker_name", "room__slug"]
    readonly_fields = [f.name for f in CaptionSegment._meta.fields]
    list_select_related = ["room"]
    date_hierarchy = "started_at"
    actions = [export_segments]

    @admin.display(description="Text")
    def short_text(self, segment: CaptionSegment) -> str:
        return segment.text if len(segment.text) <= 80 else segment.text[:77] + "..."

    def has_add_permission(self, request) -> bool:
        return False  # segments come from the transcription pipeline
