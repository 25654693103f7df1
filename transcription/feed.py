"""The live caption feed (`GET /rooms/<slug>/captions/stream`): a room's captions as
Server-Sent Events, for listeners that only read (overlays, dashboards). docs/protocol.md,
"Caption feed (SSE)", is the wire format.

One feed is one subscription to the room's channel-layer group (the `caption` and
`caption.error` events every room socket gets; transcription/captions.py sends them), so it
works across server processes wherever the channel layer does (Redis). Finals carry the id of
their stored `CaptionSegment` as the SSE `id:`, and a reconnecting client that sends
`Last-Event-ID` (or `?after=`) first gets the finals stored after it, bounded like the room
socket's resume (PARLEY["RESUME_LIMIT"]). The group is joined before the backlog is read, so
nothing stored in between is missed, and live finals the backlog already held are dropped.

A feed owns its channel, its groups and one pending receive; all end in `frames()`'s
`finally`, which runs however the stream ends: Django cancels the response when the client
goes away, and project/asgi.py turns a server stop into the same disconnect.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import weakref
from collections import OrderedDict
from collections.abc import AsyncIterator
from dataclasses import dataclass

from channels.db import database_sync_to_async
from channels.layers import get_channel_layer
from django.conf import settings
from django.db.models import Max

from rooms.access import ACCESS_CHANGED, admits
from rooms.fanout import room_fanout
from rooms.sockets import access_group, user_access_group

from .formats import caption_json
from .models import CaptionSegment

log = logging.getLogger(__name__)

# The reconnection delay suggested to EventSource (`retry:`): soon enough that a restart
# costs a viewer a few seconds of captions, slow enough that a refused feed is not hammered.
RETRY_MS = 3000
# Open turns whose partial text a feed keeps: a room has a few speakers with one open turn
# each; turns that never end (a speaker who vanished) must not grow the feed's memory.
MAX_OPEN_TURNS = 32
# Partial text kept per turn: a turn is cut before Whisper's 30 s window (a few hundred
# characters); a reported one is at most 2,000.
MAX_PARTIAL_CHARS = 4000

# Feeds open in this process, per member. Held weakly: a feed leaves when its stream ends
# (frames()' finally), and one whose response was abandoned before its first byte, so never
# started, leaves when it is garbage collected.
_open: dict[str, weakref.WeakSet[CaptionFeed]] = {}


def feed_limits() -> tuple[int, int]:
    """(feeds per member, feeds per process) allowed at once in this process."""
    return (settings.PARLEY["CAPTION_FEEDS_PER_MEMBER"],
            settings.PARLEY["CAPTION_FEEDS_PER_PROCESS"])


def open_feeds(member_key: str | None = None) -> int:
    """Feeds open in this process (of one member, or all)."""
    if member_key is not None:
        return len(_open.get(member_key, ()))
    return sum(len(feeds) for feeds in _open.values())


def parse_position(value: str | None) -> int | None:
    """The final id a client has (Last-Event-ID or ?after=): None when it sent none, -1 when
    what it sent is not an id (answered as an unknown one)."""
    if value is None or not value.strip():
        return None
    value = value.strip()
    if not value.isascii() or not value.isdigit() or len(value) > 18:
        return -1
    return int(value)


def frame(event: str, data: dict, event_id: int | None = None) -> bytes:
    """One SSE event. JSON escapes line breaks, so `data` is one line."""
    head = f"id: {event_id}\n" if event_id is not None else ""
    body = json.dumps(data, ensure_ascii=False, separators=(",", ":"))
    return f"{head}event: {event}\ndata: {body}\n\n".encode()


KEEPALIVE = b": keepalive\n\n"


@dataclass
class Backlog:
    segments: list[CaptionSegment]
    position: int  # the newest final id the client has once it applied `segments`
    reset: dict | None  # why the resume is not exact, or None


def read_backlog(room_id: int, after: int | None, limit: int) -> Backlog:
    """The finals a client at `after` missed: all of them when at most `limit`, else the
    newest `limit` and a reset saying how many were left out. No `after`: none (live only)."""
    rooms_segments = CaptionSegment.objects.filter(room_id=room_id)
    newest = rooms_segments.aggregate(newest=Max("id"))["newest"] or 0
    if after is None:
        return Backlog([], newest, None)
    if not 0 <= after <= newest:
        return Backlog([], newest, {"reason": "unknown_id", "limit": limit})
    missed = rooms_segments.filter(id__gt=after).order_by("id")
    segments = list(missed[:limit + 1])
    if len(segments) <= limit:
        return Backlog(segments, max(after, newest), None)
    left_out = missed.count() - limit
    segments = list(missed.order_by("-id")[:limit])[::-1]
    return Backlog(segments, newest, {"reason": "too_many_missed", "limit": limit,
                                      "left_out": left_out})


def read_segment(room_id: int, item_id: str) -> CaptionSegment | None:
    return CaptionSegment.objects.filter(room_id=room_id, item_id=item_id).first()


# A stream lasts hours: a thread-sensitive call would pin a thread (and its database
# connection, kept CONN_MAX_AGE) per open feed; these share the default executor's few.
_read_backlog = database_sync_to_async(read_backlog, thread_sensitive=False)
_read_segment = database_sync_to_async(read_segment, thread_sensitive=False)
_admits = database_sync_to_async(admits, thread_sensitive=False)


class Subscription:
    """A feed's view of its room: the room's events through the process's fan-out
    (rooms/fanout.py), access changes through a fresh channel in the access groups; read
    one message at a time; `close()` leaves both."""

    # Room events held for a feed that has not read them: past this it has fallen too far
    # behind to be worth serving, and is ended (its client reconnects and resumes).
    MAX_WAITING = 2000

    def __init__(self, room_id: int, groups: list[str]):
        self.layer = get_channel_layer()
        self.room_id = room_id
        self.groups = groups
        self.channel: str | None = None
        self.fanout = None
        self.waiting: asyncio.Queue[str] = asyncio.Queue()
        self.overflowed = False
        self._receive: asyncio.Task | None = None
        self._next_event: asyncio.Task | None = None

    async def open(self) -> None:
        self.channel = await self.layer.new_channel()
        await self.rejoin()
        self.fanout = room_fanout()
        await self.fanout.join(self.room_id, self)

    async def rejoin(self) -> None:
        """Join the access groups (again: a restarted Redis forgot them)."""
        for group in self.groups:
            await self.layer.group_add(group, self.channel)

    async def room_frames(self, out) -> None:
        """Called by the fan-out with the room's events (a rooms.fanout.Outgoing)."""
        if self.waiting.qsize() + len(out.texts) > self.MAX_WAITING:
            self.overflowed = True
            return
        for text in out.texts:
            self.waiting.put_nowait(text)

    async def next(self, timeout: float) -> dict | None:
        """The next message, or None after `timeout` seconds without one. The pending
        receive survives a timeout: cancelling it would unsubscribe (channels_redis pubsub)."""
        if self.overflowed:
            raise OverflowError("the caption feed fell too far behind its room")
        if self._receive is None:
            self._receive = asyncio.ensure_future(self.layer.receive(self.channel))
        if self._next_event is None:
            self._next_event = asyncio.ensure_future(self.waiting.get())
        done, _ = await asyncio.wait({self._receive, self._next_event}, timeout=timeout,
                                     return_when=asyncio.FIRST_COMPLETED)
        if self._next_event in done:
            event, self._next_event = self._next_event, None
            return {"type": "room.event", "text": event.result()}
        if self._receive in done:
            receive, self._receive = self._receive, None
            return receive.result()
        return None

    async def close(self) -> None:
        if self.fanout is not None:
            await self.fanout.leave(self.room_id, self)
        for task in (self._receive, self._next_event):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task
        if self.channel is not None:
            for group in self.groups:
                with contextlib.suppress(Exception):
                    await self.layer.group_discard(group, self.channel)


class CaptionFeed:
    """One client's caption stream of one room; iterate it for the response's bytes."""

    def __init__(self, room_id: int, member_key: str, after: int | None):
        self.room_id, self.member_key, self.after = room_id, member_key, after
        self.partials: OrderedDict[str, str] = OrderedDict()  # open turn -> text so far
        _open.setdefault(member_key, weakref.WeakSet()).add(self)

    def __aiter__(self) -> AsyncIterator[bytes]:
        return self.frames()

    async def frames(self) -> AsyncIterator[bytes]:
        groups = [access_group(self.room_id)]
        if self.member_key.startswith("u:"):
            groups.append(user_access_group(int(self.member_key[2:])))
        subscription = Subscription(self.room_id, groups)
        try:
            yield f"retry: {RETRY_MS}\n\n".encode()
            async with contextlib.aclosing(self._events(subscription)) as events:
                async for chunk in events:
                    yield chunk
        except Exception:  # the channel layer (Redis) or the database failed us
            log.warning("caption feed of room %s ended by a fault", self.room_id, exc_info=True)
            yield frame("end", {"code": "try_again",
                                "message": "The feed stopped; reconnect to resume."})
        finally:
            await subscription.close()
            feeds = _open.get(self.member_key)
            if feeds is not None:
                feeds.discard(self)
                if not feeds:
                    _open.pop(self.member_key, None)

    async def _events(self, subscription: Subscription) -> AsyncIterator[bytes]:
        """Subscribe, replay the missed finals, then translate live room events."""
        await subscription.open()  # before the backlog: nothing stored meanwhile is lost
        backlog = await _read_backlog(self.room_id, self.after,
                                      settings.PARLEY["RESUME_LIMIT"])
        if backlog.reset is not None:
            yield frame("reset", backlog.reset)
        sent = {segment.pk for segment in backlog.segments}
        for segment in backlog.segments:
            yield final_frame(segment)
        floor = backlog.position if backlog.reset or self.after is None else self.after
        yield frame("ready", {"after": backlog.position, "missed": len(backlog.segments)},
                    backlog.position)
        keepalive = settings.PARLEY["CAPTION_FEED_KEEPALIVE_SECONDS"]
        while True:
            message = await subscription.next(keepalive)
            if message is None:
                yield KEEPALIVE
                with contextlib.suppress(Exception):
                    await subscription.rejoin()
            elif message.get("type") == ACCESS_CHANGED:
                if not await _admits(self.room_id, self.member_key):
                    yield frame("end", {"code": "access_revoked",
                                        "message": "You are no longer in this room."})
                    return
            elif message.get("type") == "room.event":
                out = await self.translate(json.loads(message["text"]), floor, sent)
                if out:
                    yield out

    async def translate(self, event: dict, floor: int, sent: set[int]) -> bytes | None:
        """The SSE event for one room event, or None (chat, presence, a final already sent)."""
        kind = event.get("type")
        if kind == "caption.error":
            return frame("caption.error", {key: event.get(key)
                                           for key in ("speaker", "code", "message")})
        if kind != "caption":
            return None
        item = event["item_id"]
        if not event["final"]:
            text = (self.partials.pop(item, "") + event["text"])[:MAX_PARTIAL_CHARS]
            self.partials[item] = text
            while len(self.partials) > MAX_OPEN_TURNS:
                self.partials.popitem(last=False)
            return frame("partial", {"item_id": item, "speaker": event["speaker"],
                                     "text": text, "delta": event["text"]})
        self.partials.pop(item, None)
        if event.get("failed") or not event["text"]:
            return frame("dropped", {"item_id": item, "speaker": event["speaker"],
                                     "reason": "failed" if event.get("failed") else "empty"})
        segment = await _read_segment(self.room_id, item)
        if segment is None:  # stored before the broadcast; unreadable only if that failed
            return frame("final", {**event_fields(event), "id": None})
        if segment.pk <= floor or segment.pk in sent:
            return None  # the backlog had it, or it predates a feed opened live
        return final_frame(segment)


def final_frame(segment: CaptionSegment) -> bytes:
    return frame("final", {"id": segment.pk, **caption_json(segment)}, segment.pk)


def event_fields(event: dict) -> dict:
    """A final caption event's own fields, for one whose stored segment cannot be read."""
    return {"item_id": event["item_id"], "previous_item_id": event.get("previous_item_id"),
            "speaker": event["speaker"], "text": event["text"], "engine": None,
            "started_at": None, "ended_at": None}


def admit_feed(member_key: str) -> str | None:
    """Why another feed for `member_key` is refused in this process now, or None."""
    per_member, per_process = feed_limits()
    if open_feeds(member_key) >= per_member:
        return f"At most {per_member} caption feeds at once per member: close one first."
    if open_feeds() >= per_process:
        return "This server carries as many caption feeds as it can; try again shortly."
    return None
