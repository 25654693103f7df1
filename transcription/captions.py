"""Shared captions: every transcript event of every speaker goes to the whole room (as
`caption` events on the room socket); final segments are stored, partial text never is."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

from channels.db import database_sync_to_async

from rooms.fanout import room_fanout
from rooms.identity import public_id_for

from .models import CaptionSegment

log = logging.getLogger(__name__)

PARTIAL_INTERVAL = 0.15  # seconds between partial-caption broadcasts of one turn


@database_sync_to_async
def store_segment(room_id: int, speaker_key: str, speaker_name: str, item_id: str,
                  previous_item_id: str | None, text: str, started_at: datetime,
                  ended_at: datetime, engine: str) -> CaptionSegment:
    segment, _ = CaptionSegment.objects.get_or_create(
        room_id=room_id, item_id=item_id,
        defaults={"speaker_key": speaker_key, "speaker_name": speaker_name,
                  "previous_item_id": previous_item_id or "", "text": text,
                  "started_at": started_at, "ended_at": ended_at, "engine": engine},
    )
    return segment


async def broadcast_caption(room_id: int, speaker_key: str, speaker_name: str, item_id: str,
                            previous_item_id: str | None, text: str, final: bool,
                            failed: bool = False) -> None:
    event = {"type": "caption", "speaker": {"id": public_id_for(speaker_key),
                                            "name": speaker_name},
             "item_id": item_id, "previous_item_id": previous_item_id, "text": text,
             "final": final}
    if failed:
        event["failed"] = True
    await broadcast_room(room_id, event)


async def broadcast_room(room_id: int, event: dict) -> None:
    try:
        await room_fanout().publish(room_id, [event])
    except Exception:
        log.warning("caption broadcast failed", exc_info=True)


class SpeakerCaptions:
    """Turns one speaker's transcription events into shared captions and stored segments.

    Fed every engine event in order (any engine: the names are the Realtime API's). Turn times
    are audio offsets from `opened_at`, so segments follow the speech even when audio arrives
    faster than real time.
    """

    def __init__(self, room_id: int, speaker_key: str, speaker_name: str, engine: str, *,
                 clock: Callable[[], float] = time.monotonic):
        self.room_id, self.speaker_key, self.speaker_name = room_id, speaker_key, speaker_name
        self.engine = engine
        self.clock = clock
        self.unsent: dict[str, str] = {}  # partial text held back, per turn
        self.partial_sent_at: dict[str, float] = {}
        self.opened_at = datetime.now(UTC)
        self.turn_started: dict[str, int] = {}
        self.turn_stopped: dict[str, int] = {}
        self.previous_items: dict[str, str | None] = {}
        self.announced: set[str] = set()
        self.committed_at: dict[str, datetime] = {}
        self.last_end = self.opened_at

    async def handle(self, event: dict) -> None:
        kind = event["type"]
        if kind == "input_audio_buffer.speech_started":
            self.turn_started[event["item_id"]] = event["audio_start_ms"]
            await self._open_turn(event["item_id"])
        elif kind == "input_audio_buffer.speech_stopped":
            self.turn_stopped[event["item_id"]] = event["audio_end_ms"]
        elif kind == "input_audio_buffer.committed":
            self.previous_items[event["item_id"]] = event.get("previous_item_id")
            self.committed_at[event["item_id"]] = datetime.now(UTC)
            await self._open_turn(event["item_id"])
        elif kind.endswith("input_audio_transcription.delta"):
            await self._partial(event["item_id"], event["delta"])
        elif kind.endswith("input_audio_transcription.completed"):
            await self._finish(event["item_id"], event["transcript"])
        elif kind.endswith("input_audio_transcription.failed"):
            # Listeners drop the turn's partial line; nothing is stored.
            item = event["item_id"]
            self.unsent.pop(item, None)
            self.partial_sent_at.pop(item, None)
            self.announced.discard(item)
            self.turn_started.pop(item, None)
            self.turn_stopped.pop(item, None)
            await self._broadcast(item, self.previous_items.pop(item, None), "", final=True,
                                  failed=True)
        elif kind == "error" and (event.get("error") or {}).get("code", "").startswith(
                "upstream_"):
            # The engine's own faults (not a client's bad event) concern the whole room.
            error = event["error"]
            await broadcast_room(self.room_id, {
                "type": "caption.error", "speaker": self._speaker(),
                "code": error["code"], "message": error.get("message", "")})

    async def _open_turn(self, item: str) -> None:
        """An empty partial: listeners show the speaker as speaking, and know the turn is open
        (a later turn completing first waits for it; see static/parley/captions.js)."""
        if item not in self.announced:
            self.announced.add(item)
            await self._broadcast(item, None, "", final=False)

    async def _partial(self, item: str, delta: str) -> None:
        """Coalesce partial text: at most one broadcast per turn every PARTIAL_INTERVAL (a
        streaming model sends a delta per token; the room needs a few updates a second).
        Held-back words go out with the next partial, or are superseded by the final text."""
        text = self.unsent.pop(item, "") + delta
        now = self.clock()
        if now - self.partial_sent_at.get(item, -PARTIAL_INTERVAL) < PARTIAL_INTERVAL:
            self.unsent[item] = text
            return
        self.partial_sent_at[item] = now
        await self._broadcast(item, None, text, final=False)

    async def _finish(self, item: str, text: str) -> None:
        self.unsent.pop(item, None)
        self.partial_sent_at.pop(item, None)
        self.announced.discard(item)
        previous = self.previous_items.pop(item, None)
        committed_at = self.committed_at.pop(item, None) or datetime.now(UTC)
        if item in self.turn_started:  # the engine detected the turn: audio times
            start_ms = self.turn_started.pop(item)
            end_ms = max(self.turn_stopped.pop(item, start_ms), start_ms)
            started_at = self.opened_at + timedelta(milliseconds=start_ms)
            ended_at = self.opened_at + timedelta(milliseconds=end_ms)
        else:  # a manual commit: from the previous turn's end to the commit
            started_at, ended_at = min(self.last_end, committed_at), committed_at
        self.last_end = max(self.last_end, ended_at)
        if text:
            await store_segment(self.room_id, self.speaker_key, self.speaker_name, item,
                                previous, text, started_at, ended_at, self.engine)
        await self._broadcast(item, previous, text, final=True)

    async def _broadcast(self, item: str, previous: str | None, text: str, final: bool,
                         failed: bool = False):
        await broadcast_caption(self.room_id, self.speaker_key, self.speaker_name, item,
                                previous, text, final, failed)

    def _speaker(self) -> dict:
        return {"id": public_id_for(self.speaker_key), "name": self.speaker_name}
