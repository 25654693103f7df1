"""Rooms, their members and their messages.

`Room.last_seq` is the room's message counter: it is bumped in the same transaction that
inserts a message, so per-room `Message.seq` is gap-free and ordered (rooms/services.py).
"""

from django.conf import settings
from django.db import models
from django.urls import reverse


class Room(models.Model):
    name = models.CharField(max_length=80)
    slug = models.SlugField(max_length=100, unique=True)
    is_private = models.BooleanField(
        default=False, help_text="Private rooms admit only logged-in members and staff."
    )
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL,
        related_name="+",
    )
    created_at = models.DateTimeField(auto_now_add=True)
    last_seq = models.PositiveBigIntegerField(default=0, editable=False)

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name

    def get_absolute_url(self) -> str:
        return reverse("room", args=[self.slug])


class Membership(models.Model):
    class Role(models.TextChoices):
        OWNER = "owner", "Owner"
        MEMBER = "member", "Member"

    room = models.ForeignKey(Room, on_delete=models.CASCADE, related_name="memberships")
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="room_memberships"
    )
    role = models.CharField(max_length=10, choices=Role.choices, default=Role.MEMBER)
    joined_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["room", "user"], name="membership_once_per_room")
        ]

    def __str__(self) -> str:
        return f"{self.user} in {self.room}"


class Message(models.Model):
    room = models.ForeignKey(Room, on_delete=models.CASCADE, related_name="messages")
    seq = models.PositiveBigIntegerField()
    # Who wrote it: "u:<user pk>" for accounts, "g:<token>" for guests (rooms/identity.py).
    author_key = models.CharField(max_length=64)
    author_name = models.CharField(max_length=80)
    author_user = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL,
        related_name="+",
    )
    # Chosen by the sending client; a re-sent client_id is recognised, not stored twice.
    client_id = models.CharField(max_length=64)
    text = models.TextField()
    sent_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["room", "seq"]
        constraints = [
            models.UniqueConstraint(fields=["room", "seq"], name="message_seq_unique"),
            models.UniqueConstraint(
                fields=["room", "author_key", "client_id"], name="message_client_id_once"
            ),
        ]

    def __str__(self) -> str:
        return f"{self.room.slug}#{self.seq} {self.author_name}: {self.text[:40]}"
