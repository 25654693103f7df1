"""Who may still be in a room, and telling open sockets when that changes (issue #10, item 9).

Admission is decided when a socket opens (rooms/identity.py `participant_for`). Access can be
taken away while it is open: a room made private, a membership removed, an account
deactivated or deleted. Each of those, once committed, is announced to the sockets watching
the room or the account (rooms/sockets.py `watch_access`), and each rechecks `admits()` and
closes with 4403 if the answer is no.
"""

from __future__ import annotations

import logging

from asgiref.sync import async_to_sync
from channels.layers import get_channel_layer
from django.contrib.auth import get_user_model
from django.db import transaction

from .models import Membership, Room

log = logging.getLogger(__name__)

ACCESS_CHANGED = "rooms.access.changed"


def admits(room_id: int, participant_key: str) -> bool:
    """Whether the participant `participant_key` ("u:<pk>" or "g:<token>") may be in the room
    now. Guests stay as long as the room is public; accounts while active, and in a private
    room while members (or staff). Runs queries: call from sync code."""
    room = Room.objects.filter(pk=room_id).first()
    if room is None:
        return False
    if not participant_key.startswith("u:"):
        return not room.is_private
    user = get_user_model().objects.filter(pk=int(participant_key[2:]), is_active=True).first()
    if user is None:
        return False
    if not room.is_private or user.is_staff:
        return True
    return Membership.objects.filter(room=room, user=user).exists()


def announce(group: str) -> None:
    """After the current transaction commits, tell the sockets in `group` to recheck."""

    def send() -> None:
        try:
            async_to_sync(get_channel_layer().group_send)(group, {"type": ACCESS_CHANGED})
        except Exception:  # the change stands; open sockets are rechecked at their next open
            log.warning("could not announce an access change to %s", group, exc_info=True)

    transaction.on_commit(send)
