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
