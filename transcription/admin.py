from django.conf import settings
from django.contrib import admin
from django.http import HttpResponse

from .formats import to_txt
from .models import AssistantUsage, CaptionSegment


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


@admin.register(AssistantUsage)
class AssistantUsageAdmin(admin.ModelAdmin):
    """What the room assistant spent per room and day, against the daily token budget."""

    list_display = ["room", "day", "responses", "input_tokens", "output_tokens",
                    "tool_calls", "refused", "budget_left"]
    list_filter = ["day", "room"]
    search_fields = ["room__slug", "room__name"]
    readonly_fields = [f.name for f in AssistantUsage._meta.fields]
    list_select_related = ["room"]
    date_hierarchy = "day"

    @admin.display(description="Budget left (tokens)")
    def budget_left(self, usage: AssistantUsage) -> int:
        return max(0, settings.ASSISTANT["DAILY_TOKEN_BUDGET"] - usage.tokens)

    def has_add_permission(self, request) -> bool:
        return False  # counted by the assistant
