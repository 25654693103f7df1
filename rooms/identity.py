"""Who a visitor is in a room, for views and sockets alike.

A logged-in user is `u:<pk>`; a guest is `g:<token>`, the token living in the Django session so
that every tab of one browser is the same participant. Clients only ever see `public_id`, an
HMAC of the key, so ids on the wire reveal neither user pks nor session data.
"""

from __future__ import annotations

import functools
import secrets
import unicodedata
from dataclasses import dataclass

from django.contrib.auth import get_user_model
from django.db.models import Q, Value
from django.db.models.functions import Concat, Trim
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


@functools.lru_cache(maxsize=4096)
def public_id_for(key: str) -> str:
    """The id a participant is known by to others: stable, and not their session key. (An
    HMAC per message was a tenth of a backlog's cost: cached.)"""
    return "p" + salted_hmac("parley.participant", key).hexdigest()[:15]


# Display names are stored in CharField(max_length=80) columns (Message.author_name,
# CaptionSegment.speaker_name): the bound for account names, which are cut, not refused.
MAX_DISPLAY_NAME_CHARS = 80
# What a guest may type: enough for a full name, short enough for presence lists and captions.
MAX_GUEST_NAME_CHARS = 40
# Letters and symbols that draw nothing: with them "Bob\u3164" looks exactly like "Bob".
BLANK_GLYPHS = frozenset("\u115f\u1160\u3164\uffa0\u2800")
# Removed outright: control characters (Cc; the whitespace ones become spaces first), format
# characters (Cf: bidi embeddings/overrides/isolates U+202A-202E and U+2066-2069, zero-width
# U+200B-200D, U+FEFF, soft hyphen, tag characters) and lone surrogates (Cs).
_INVISIBLE_CATEGORIES = frozenset({"Cc", "Cf", "Cs"})


class DisplayNameError(ValueError):
    """A name that cannot be shown to others; the message is for the person who typed it."""


def plain_line(text: str) -> str:
    """`text` as one line of what it shows: NFC, without control, format (bidi, zero-width)
    and blank characters, whitespace runs (line breaks included) collapsed to one space.

    Names and captions are written into line-based formats (transcripts) and shown beside
    other people's words, so nothing in them may start a line, reorder the text around it or
    hide inside it."""
    text = unicodedata.normalize("NFC", text)
    kept = []
    for char in text:
        if char.isspace():
            kept.append(" ")
        elif unicodedata.category(char) not in _INVISIBLE_CATEGORIES \
                and char not in BLANK_GLYPHS:
            kept.append(char)
    return " ".join("".join(kept).split())


def clean_display_name(raw: str, *, max_chars: int = MAX_DISPLAY_NAME_CHARS,
                       truncate: bool = False) -> str:
    """The name to show for `raw` (see plain_line), at most `max_chars` long.

    Raises DisplayNameError when nothing visible is left (only spaces, marks or invisible
    characters) or, unless `truncate`, when it is too long. The one gate for every display
    name, guests' and accounts' alike."""
    name = plain_line(raw)
    if len(name) > max_chars:
        if not truncate:
            raise DisplayNameError(f"Use at most {max_chars} characters.")
        name = name[:max_chars].rstrip()
    if not any(unicodedata.category(char)[0] not in "ZCM" for char in name):
        raise DisplayNameError("Use at least one visible letter, digit or symbol.")
    return name


def display_name_for(user) -> str:
    """An account's name as others see it: its full name, else its username, cleaned."""
    for raw in (user.get_full_name(), user.get_username()):
        try:
            return clean_display_name(raw, truncate=True)
        except DisplayNameError:
            continue
    return "Member"  # neither shows anything (only possible for a hand-made account)


def join_as_guest(session, room: Room, name: str) -> None:
    """Record in the session that this browser joined `room` under `name` (already cleaned
    by the join form; guest_name cleans it again on the way out)."""
    if GUEST_TOKEN_KEY not in session:
        session[GUEST_TOKEN_KEY] = secrets.token_urlsafe(16)
    joined = dict(session.get(JOINED_ROOMS_KEY, {}))
    joined[room.slug] = name
    session[JOINED_ROOMS_KEY] = joined


def guest_name(session, room: Room) -> str | None:
    """The guest's name in `room`, cleaned again: a session written before names were
    cleaned may hold anything, and then the guest is asked for a name once more."""
    name = session.get(JOINED_ROOMS_KEY, {}).get(room.slug)
    if not isinstance(name, str):
        return None
    try:
        return clean_display_name(name, max_chars=MAX_GUEST_NAME_CHARS, truncate=True)
    except DisplayNameError:
        return None


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


def is_account_name(name: str) -> bool:
    """Whether `name` (cleaned) is, ignoring case, an account's username or full name.

    Case-insensitivity is the database's: full on PostgreSQL, ASCII letters only on SQLite
    (its LIKE). Names stored with odd spacing are compared as stored."""
    users = get_user_model().objects.annotate(
        parley_full_name=Trim(Concat("first_name", Value(" "), "last_name")))
    username = get_user_model().USERNAME_FIELD
    return users.filter(Q(**{f"{username}__iexact": name})
                        | Q(parley_full_name__iexact=name)).exists()
