"""Final caption segments: one row per finished turn of one speaker. Partial text is never
stored."""

from django.db import models

from rooms.models import Room


class CaptionSegment(models.Model):
    class Engine(models.TextChoices):
        OPENAI = "openai", "OpenAI Realtime"
        OFFLINE = "offline", "Offline (Whisper)"
        CLIENT = "client", "Client-reported"

    room = models.ForeignKey(Room, on_delete=models.CASCADE, related_name="caption_segments")
    speaker_key = models.CharField(max_length=64)
    speaker_name = models.CharField(max_length=80)
    # The Realtime API's conversation item of this turn, and the one before it (turn order).
    item_id = models.CharField(max_length=64)
    previous_item_id = models.CharField(max_length=64, blank=True)
    text = models.TextField()
    started_at = models.DateTimeField()
    ended_at = models.DateTimeField()
    engine = models.CharField(max_length=10, choices=Engine.choices)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["room", "started_at", "id"]
        constraints = [
            models.UniqueConstraint(fields=["room", "item_id"], name="caption_item_once"),
        ]
        indexes = [models.Index(fields=["room", "started_at"])]

    def __str__(self) -> str:
        return f"{self.speaker_name}: {self.text[:60]}"


class AssistantUsage(models.Model):
    """What the room assistant spent in one room on one UTC day (docs/assistant.md): the
    daily token budget is checked against it before each answer, and admins read it."""

    room = models.ForeignKey(Room, on_delete=models.CASCADE, related_name="assistant_usage")
    day = models.DateField()
    responses = models.PositiveIntegerField(default=0)
    input_tokens = models.PositiveBigIntegerField(default=0)
    output_tokens = models.PositiveBigIntegerField(default=0)
    tool_calls = models.PositiveIntegerField(default=0)
    refused = models.PositiveIntegerField(default=0)  # questions refused by rate or budget

    class Meta:
        ordering = ["-day", "room"]
        constraints = [
            models.UniqueConstraint(fields=["room", "day"], name="assistant_usage_once"),
        ]
        verbose_name_plural = "assistant usage"

    @property
    def tokens(self) -> int:
        return self.input_tokens + self.output_tokens

    def __str__(self) -> str:
        return f"{self.room} {self.day}: {self.tokens} tokens"
