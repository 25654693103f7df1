"""Room and chat write paths, testable without a socket.

`post_message` is the one place a chat message is stored: sequence number and insert happen in
one transaction, so a message is either stored with the next gap-free seq or not at all, and an
acknowledgement is only ever sent for a stored row. Broadcasting happens after the commit.
"""

from __future__ import annotations

import re
import secrets
from dataclasses import dataclass

from django.conf import settings
from django.db import IntegrityError, connection, transaction
from django.db.models import Q
from django.db.models.functions import Length
from django.utils import timezone
from django.utils.text import slugify

from .identity import Participant, public_id_for
from .models import Membership, Message, Room

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
    return payload_of(message.seq, message.pk, message.author_key, message.author_name,
                      message.text, message.sent_at)


# The columns payload_of takes, in order: backlogs read them as tuples, not model instances
# (building instances was most of a backlog's cost in bench/chat_fanout.py).
PAYLOAD_COLUMNS = ("seq", "id", "author_key", "author_name", "text", "sent_at")


def payload_of(seq: int, pk: int, author_key: str, author_name: str, text: str,
               sent_at) -> dict:
    return {
        "seq": seq,
        "id": pk,
        "author": {"id": public_id_for(author_key), "name": author_name},
        "text": text,
        "sent_at": sent_at.isoformat().replace("+00:00", "Z"),
    }


@dataclass(frozen=True)
class PostResult:
    message: Message
    created: bool  # False when the client_id had been stored before (a re-send)


@dataclass(frozen=True)
class PostRequest:
    author: Participant
    text: str
    client_id: str

    @property
    def key(self) -> tuple[str, str]:
        return self.author.key, self.client_id


def post_message(room: Room, author: Participant, text: str, client_id: str) -> PostResult:
    """Store a chat message under the room's next seq, or return the earlier copy of a re-send."""
    return post_messages(room, [PostRequest(author, text, client_id)])[0]


def post_messages(room: Room, requests: list[PostRequest]) -> list[PostResult]:
    """Store several chat messages of one room in one transaction (group commit, issue #13):
    one UPDATE ... RETURNING allocates their seq numbers, one INSERT ... RETURNING stores them
    (_insert_messages). Results are in request order; a client_id repeated within the batch is
    stored once. All or nothing, like a single message.

    A re-send of a message stored earlier is rare (a reconnect's outbox), so it is not looked
    for up front: the unique (room, author, client_id) constraint refuses the batch, which is
    then stored one message at a time, each re-send answered with its first copy."""
    fresh: dict[tuple[str, str], PostRequest] = {}
    for request in requests:
        fresh.setdefault(request.key, request)
    try:
        with transaction.atomic():
            last = _allocate_seqs(room.pk, len(fresh))
            rows = [
                Message(room_id=room.pk, seq=last - len(fresh) + n, author_key=r.author.key,
                        author_name=r.author.name, author_user_id=r.author.user_id,
                        client_id=r.client_id, text=r.text)
                for n, r in enumerate(fresh.values(), start=1)
            ]
            _insert_messages(rows)
    except IntegrityError:
        return [_post_one(room, request) for request in requests]
    stored = dict(zip(fresh, rows, strict=True))
    results, seen = [], set()
    for request in requests:
        results.append(PostResult(stored[request.key], created=request.key not in seen))
        seen.add(request.key)
    return results


# Columns _insert_messages writes, and rows per INSERT statement (8 parameters a row: far
# below SQLite's 32,766 and PostgreSQL's 65,535 parameters).
_INSERT_FIELDS = ("room_id", "seq", "author_key", "author_name", "author_user_id", "client_id",
                  "text", "sent_at")
_INSERT_ROWS = 500


def _insert_messages(rows: list[Message]) -> None:
    """Insert unsaved messages of one room with one multi-row INSERT ... RETURNING per
    _INSERT_ROWS (SQLite >= 3.35, PostgreSQL) and give each its id and sent_at, as
    bulk_create would, without its per-row and per-field work: bulk_create was a third of
    the writer thread's time, and the writer holds the GIL the event loop needs meanwhile.
    Ids are matched to rows by seq (unique in the room), not by the order RETURNING gives
    them in, which SQLite leaves unspecified."""
    meta = Message._meta
    quote = connection.ops.quote_name
    column = {field.attname: field.column for field in meta.concrete_fields}
    columns = ", ".join(quote(column[name]) for name in _INSERT_FIELDS)
    now = timezone.now()
    sent_at = connection.ops.adapt_datetimefield_value(now)
    placeholders = "(" + ", ".join(["%s"] * len(_INSERT_FIELDS)) + ")"
    with connection.cursor() as cursor:
        for start in range(0, len(rows), _INSERT_ROWS):
            chunk = rows[start:start + _INSERT_ROWS]
            params = []
            for m in chunk:
                params += [m.room_id, m.seq, m.author_key, m.author_name, m.author_user_id,
                           m.client_id, m.text, sent_at]
            cursor.execute(
                f"INSERT INTO {quote(meta.db_table)} ({columns}) VALUES "
                f"{', '.join([placeholders] * len(chunk))} RETURNING "
                f"{quote(meta.pk.column)}, {quote(column['seq'])}", params)
            ids = {seq: pk for pk, seq in cursor.fetchall()}
            for m in chunk:
                m.pk, m.sent_at = ids[m.seq], now
                m._state.adding, m._state.db = False, connection.alias


def _allocate_seqs(room_id: int, count: int) -> int:
    """Reserve `count` seq numbers of a room; returns the last. The UPDATE takes the room
    row's write lock, so concurrent writers (in any process) queue here and each gets the
    next numbers; a rollback gives them back."""
    with connection.cursor() as cursor:
        cursor.execute(
            f"UPDATE {Room._meta.db_table} SET last_seq = last_seq + %s WHERE id = %s "
            "RETURNING last_seq", [count, room_id])
        return cursor.fetchone()[0]


def _post_one(room: Room, request: PostRequest) -> PostResult:
    existing = _stored_copies(room, [request]).get(request.key)
    if existing is not None:
        return PostResult(existing, created=False)
    try:
        with transaction.atomic():
            message = Message.objects.create(
                room=room, seq=_allocate_seqs(room.pk, 1), author_key=request.author.key,
                author_name=request.author.name, author_user_id=request.author.user_id,
                client_id=request.client_id, text=request.text,
            )
    except IntegrityError:
        existing = _stored_copies(room, [request]).get(request.key)
        if existing is None:
            raise
        return PostResult(existing, created=False)
    return PostResult(message, created=True)


def _stored_copies(room: Room, requests: list[PostRequest]) -> dict[tuple[str, str], Message]:
    """Messages already stored under the requests' (author, client_id): their re-sends."""
    by_author: dict[str, set[str]] = {}
    for request in requests:
        by_author.setdefault(request.author.key, set()).add(request.client_id)
    match = Q()
    for author_key, client_ids in by_author.items():
        match |= Q(author_key=author_key, client_id__in=client_ids)
    return {(m.author_key, m.client_id): m
            for m in Message.objects.filter(match, room=room)}


def current_seq(room_id: int) -> int:
    return Room.objects.values_list("last_seq", flat=True).get(pk=room_id)


def heartbeat_text(seq: int) -> str:
    """The `heartbeat` event (its JSON), which tells a client the room's seq."""
    return f'{{"type":"heartbeat","seq":{int(seq)}}}'


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


def wire_size(row: tuple) -> int:
    """A PAYLOAD_COLUMNS row's size on the wire, about."""
    return len(row[4].encode()) + len(row[3].encode()) + MESSAGE_OVERHEAD_BYTES


def within_budget(rows) -> list[dict]:
    """The payloads of `rows` (PAYLOAD_COLUMNS tuples in seq order) that fit
    BACKLOG_BUDGET_BYTES; at least one."""
    messages, used = [], 0
    for row in rows.iterator(chunk_size=100):
        used += wire_size(row)
        if messages and used > BACKLOG_BUDGET_BYTES:
            break
        messages.append(payload_of(*row))
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
    messages = Message.objects.filter(room=room, seq__lte=seq)
    if after is not None and 0 <= after <= seq and seq - after <= limits["RESUME_LIMIT"]:
        rows = messages.filter(seq__gt=after).order_by("seq").values_list(*PAYLOAD_COLUMNS)
        payloads = within_budget(rows)
        more = bool(payloads) and payloads[-1]["seq"] < seq
        return Backlog(seq, payloads, reset=False, more=more)
    newest = messages.order_by("-seq").values_list(*PAYLOAD_COLUMNS)
    rows = list(newest[: limits["HISTORY_ON_CONNECT"]])[::-1]
    sizes = [wire_size(m) for m in rows]
    while len(rows) > 1 and sum(sizes) > BACKLOG_BUDGET_BYTES:
        rows.pop(0)  # a fresh view is the newest messages: drop the oldest
        sizes.pop(0)
    return Backlog(seq, [payload_of(*m) for m in rows], reset=after is not None)
