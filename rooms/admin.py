from django.contrib import admin
from django.db.models import Count
from django.http import HttpResponse

from .models import Membership, Message, Room


def chat_as_text(room: Room) -> str:
    """A room's whole chat as plain text, one line per message."""
    lines = [f"# {room.name} ({room.slug})"]
    for message in room.messages.order_by("seq").iterator():
        stamp = message.sent_at.strftime("%Y-%m-%d %H:%M:%S")
        lines.append(f"[{stamp}] #{message.seq} {message.author_name}: {message.text}")
    return "\n".join(lines) + "\n"


@admin.action(description="Export chat as text")
def export_chat(modeladmin, request, queryset):
    body = "\n".join(chat_as_text(room) for room in queryset.order_by("slug"))
    response = HttpResponse(body, content_type="text/plain; charset=utf-8")
    name = queryset.first().slug if queryset.count() == 1 else "rooms"
    response["Content-Disposition"] = f'attachment; filename="{name}-chat.txt"'
    return response


class MembershipInline(admin.TabularInline):
    model = Membership
    extra = 0
    autocomplete_fields = ["user"]


@admin.register(Room)
class RoomAdmin(admin.ModelAdmin):
    list_display = ["name", "slug", "is_private", "message_count", "last_seq", "created_at"]
    list_filter = ["is_private", "created_at"]
    search_fields = ["name", "slug"]
    prepopulated_fields = {"slug": ["name"]}
    readonly_fields = ["last_seq", "created_at"]
    inlines = [MembershipInline]
    actions = [export_chat]

    def get_queryset(self, request):
        return super().get_queryset(request).annotate(_message_count=Count("messages"))

    @admin.display(description="Messages", ordering="_message_count")
    def message_count(self, room: Room) -> int:
        return room._message_count


@admin.register(Membership)
class MembershipAdmin(admin.ModelAdmin):
    list_display = ["room", "user", "role", "joined_at"]
    list_filter = ["role", "room__is_private"]
    search_fields = ["room__name", "room__slug", "user__username"]
    autocomplete_fields = ["room", "user"]


@admin.register(Message)
class MessageAdmin(admin.ModelAdmin):
    list_display = ["room", "seq", "author_name", "short_text", "sent_at"]
    list_filter = ["room", "sent_at"]
    search_fields = ["text", "author_name", "room__slug"]
    readonly_fields = [f.name for f in Message._meta.fields]
    list_select_related = ["room"]

    @admin.display(description="Text")
    def short_text(self, message: Message) -> str:
        return message.text if len(message.text) <= 80 else message.text[:77] + "..."

    def has_add_permission(self, request) -> bool:
        # Messages enter through the room socket only, where seq is assigned.
        return False
