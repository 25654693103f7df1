"""Room and chat write paths, testable without a socket.

`post_message` is the one place a chat message is stored: sequence number and insert happen in
one transaction, so a message is either stored with the next gap-free seq or not at all, and an
acknowledgement is only ever sent for a stored row. Broadcasting happens after the commit.
"""

from __future__ import annotations

import json
import re
import secrets
from dataclasses import dataclass

from django.conf import settings
from django.db import IntegrityError, connection, transaction
from django.db.models import F, Q
from django.db.models.functions import Length
from django.utils.text import slugify

from .identity import Participant, public_id_for
from .models import Membership, Message, Room


def room_group(room_id: int) -> str:
    """The channel-layer group every socket of a room listens on."""
    return f"room.{room_id}"


def room_event(event: dict) -> dict:
    """A channel-layer message that delivers `event` to every socket of a room. The JSON is
    encoded once here, not once per recipient."""
    return {"type": "room.event", "text": json.dumps(event, separators=(",", ":"),
                                                     ensure_ascii=False)}


# Attempts at a free slug before giving up: each is lost only to a concurrent create of the
# same name taking the same slug first, so a second attempt nearly always succeeds.
SLUG_ATTEMPTS = 5


def create_room(name: str, *, private: bool, creator=None) -> Room:
    """Create a room with a unique slug derived from its name (`name`, `name-2`, ...); the
    creator owns it. The slug costs one query however many rooms share the name, made before
    the write transaction; the unique constraint settles races, and the loser tries again."""
    base = slugify(name)[:60] or "room"
    for attempt in range(SLUG_ATTEMPTS):
        slug = _next_slug(base) if attempt < SLUG_ATTEMPTS - 1 else \
            f"{base}-{secrets.token_hex(4)}"  # racing with itself: a random suffix
        try:
            with transaction.atomic():
                room = Room.objects.create(name=name, slug=slug, is_private=private,
                                           created_by=creator)
                if creator is not None:
                    Membership.objects.create(room=room, user=creator,
                                              role=Membership.Role.OWNER)
            return room
        except IntegrityError:
            if not Room.objects.filter(slug=slug).exists():
                raise  # not the slug: some other constraint
    raise IntegrityError(f"No free slug for {base!r} after {SLUG_ATTEMPTS} attempts.")


def _next_slug(base: str) -> str:
    """`base` if no room has it or a numbered copy, else one past the highest `base-N`.

    Numbers without leading zeros sort by length, then text, in numeric order, so the
    database returns only the highest."""
    numbered = rf"^{re.escape(base)}-[1-9][0-9]*$"
    copies = Room.objects.filter(slug__startswith=base)
    if connection.vendor == "sqlite":
        # SQLite runs REGEXP as a Python call per row (254 ms at 200k rooms in
        # bench/hardening.py): narrow to `base` and `base-*` first by a range the unique
        # index answers ('.' follows '-', and no other slug character sorts before it).
        # Only where comparison is bytewise: PostgreSQL's locale collations ignore '-'.
        copies = copies.filter(slug__gte=base, slug__lt=f"{base}.")
    copies = copies.filter(Q(slug=base) | Q(slug__regex=numbered))
    highest = copies.order_by(Length("slug").desc(), "-slug").values_list(
        "slug", flat=True).first()
    if highest is None:
        return base
    number = 1 if highest == base else int(highest.rsplit("-", 1)[1])
    return f"{base}-{number + 1}"


def message_payload(message: Message) -> dict:
    """A stored message as it travels on the wire (`chat.message`)."""
    return {
        "seq": message.seq,
        "id": message.pk,
        "author": {"id": public_id_for(message.author_key), "name": message.author_name},
        "text": message.text,
        "sent_at": message.sent_at.isoformat().replace("+00:00", "Z"),
    }


@dataclass(frozen=True)
class PostResult:
    message: Message
    created: bool  # False when the client_id had been stored before (a re-send)


def post_message(room: Room, author: Participant, text: str, client_id: str) -> PostResult:
    """Store a chat message under the room's next seq, or return the earlier copy of a re-send."""
    existing = _find_resent(room, author, client_id)
    if existing is not None:
        return PostResult(existing, created=False)
    try:
        with transaction.atomic():
            # The UPDATE takes the room row's write lock, so concurrent senders (in any process)
            # queue here and each gets the next number; a rollback gives the number back.
            Room.objects.filter(pk=room.pk).update(last_seq=F("last_seq") + 1)
            seq = Room.objects.values_list("last_seq", flat=True).get(pk=room.pk)
            message = Message.objects.create(
                room=room, seq=seq, author_key=author.key, author_name=author.name,
                author_user_id=author.user_id, client_id=client_id, text=text,
            )
    except IntegrityError:
        # The same client_id raced in through another connection and won.
        existing = _find_resent(room, author, client_id)
        if existing is None:
            raise
        return PostResult(existing, created=False)
    return PostResult(message, created=True)


def _find_resent(room: Room, author: Participant, client_id: str) -> Message | None:
    return Message.objects.filter(room=room, author_key=author.key, client_id=client_id).first()


def current_seq(room_id: int) -> int:
    return Room.objects.values_list("last_seq", flat=True).get(pk=room_id)


@dataclass(frozen=True)
class Backlog:
    """What a (re)connecting client must apply: `reset` means drop local history first."""

    seq: int
    messages: list[dict]
    reset: bool
    more: bool = False  # cut at BACKLOG_BUDGET_BYTES: ask for the rest after the last one


# Bytes of messages one backlog frame may carry (hello or chat.backlog), as UTF-8 on the wire:
# 500 messages of up to 4,000 characters made a 3.3 MB hello, past daphne's 1 MiB frame limit,
# and counting characters let 47 messages of 4,000 '€' make a 555 KB one, past the 512 KiB
# outbound bound on its own (bench/hardening.py). A single message is at most 16 KB.
# Past the budget the frame says `more` and the client asks for the rest with chat.sync.
BACKLOG_BUDGET_BYTES = 192 * 1024
MESSAGE_OVERHEAD_BYTES = 160  # the JSON around a message: seq, ids, author, time


def wire_size(message: Message) -> int:
    return len(message.text.encode()) + len(message.author_name.encode()) + \
        MESSAGE_OVERHEAD_BYTES


def within_budget(rows) -> list[dict]:
    """The payloads of `rows` (in seq order) that fit BACKLOG_BUDGET_BYTES; at least one."""
    messages, used = [], 0
    for row in rows.iterator(chunk_size=100):
        used += wire_size(row)
        if messages and used > BACKLOG_BUDGET_BYTES:
            break
        messages.append(message_payload(row))
    return messages


def backlog(room: Room, after: int | None) -> Backlog:
    """Messages for a client that has seen everything up to `after` (None: a fresh client).

    A fresh client gets the last HISTORY_ON_CONNECT messages. A resuming client gets exactly the
    messages after its seq; when that is more than RESUME_LIMIT, or `after` is from another
    history (beyond the room's seq), it is told to reset and gets the fresh-client view instead,
    never a silently shortened list.
    """
    limits = settings.PARLEY
    seq = current_seq(room.pk)
    if after is not None and 0 <= after <= seq and seq - after <= limits["RESUME_LIMIT"]:
        rows = Message.objects.filter(room=room, seq__gt=after, seq__lte=seq).order_by("seq")
        messages = within_budget(rows)
        more = bool(messages) and messages[-1]["seq"] < seq
        return Backlog(seq, messages, reset=False, more=more)
    newest = Message.objects.filter(room=room, seq__lte=seq).order_by("-seq")
    rows = list(newest[: limits["HISTORY_ON_CONNECT"]])[::-1]
    sizes = [wire_size(m) for m in rows]
    while len(rows) > 1 and sum(sizes) > BACKLOG_BUDGET_BYTES:
        rows.pop(0)  # a fresh view is the newest messages: drop the oldest
        sizes.pop(0)
    return Backlog(seq, [message_payload(m) for m in rows], reset=after is not None)
