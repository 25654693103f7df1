"""Who a visitor is in a room, for views and sockets alike.

A logged-in user is `u:<pk>`; a guest is `g:<token>`, the token living in the Django session so
that every tab of one browser is the same participant. Clients only ever see `public_id`, an
HMAC of the key, so ids on the wire reveal neither user pks nor session data.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass

from django.utils.crypto import salted_hmac

from .models import Membership, Room

GUEST_TOKEN_KEY = "parley_guest_token"
JOINED_ROOMS_KEY = "parley_rooms"  # {slug: display name} for rooms this session joined as guest


@dataclass(frozen=True)
class Participant:
    key: str
    name: str
    user_id: int | None = None

    @property
    def public_id(self) -> str:
        return public_id_for(self.key)


def public_id_for(key: str) -> str:
    return "p" + salted_hmac("parley.participant", key).hexdigest()[:15]


def display_name_for(user) -> str:
    return (user.get_full_name() or user.get_username())[:80]


def join_as_guest(session, room: Room, name: str) -> None:
    """Record in the session that this browser joined `room` under `name`."""
    if GUEST_TOKEN_KEY not in session:
        session[GUEST_TOKEN_KEY] = secrets.token_urlsafe(16)
    joined = dict(session.get(JOINED_ROOMS_KEY, {}))
    joined[room.slug] = name
    session[JOINED_ROOMS_KEY] = joined


def guest_name(session, room: Room) -> str | None:
    return session.get(JOINED_ROOMS_KEY, {}).get(room.slug)


def participant_for(session, user, room: Room) -> Participant | None:
    """The participant this session is in `room`, or None when it may not enter.

    Private rooms admit logged-in members and staff only; public rooms admit any logged-in user
    and guests who joined through the join form. Runs database queries: call it from sync code.
    """
    if user is not None and user.is_authenticated:
        if room.is_private and not user.is_staff:
            if not Membership.objects.filter(room=room, user=user).exists():
                return None
        return Participant(key=f"u:{user.pk}", name=display_name_for(user), user_id=user.pk)
    if room.is_private:
        return None
    name = guest_name(session, room)
    token = session.get(GUEST_TOKEN_KEY)
    if not name or not token:
        return None
    return Participant(key=f"g:{token}", name=name)
