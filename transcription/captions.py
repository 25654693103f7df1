"""Shared captions: every transcript event of every speaker goes to the whole room (as
`caption` events on the room socket); final segments are stored, partial text never is."""

from __future__ import annotations

import logging
from datetime import datetime

from channels.db import database_sync_to_async
from channels.layers import get_channel_layer

from rooms.identity import public_id_for
from rooms.services import room_event, room_group

from .models import CaptionSegment

log = logging.getLogger(__name__)


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
                            previous_item_id: str | None, text: str, final: bool) -> None:
    event = {"type": "caption", "speaker": {"id": public_id_for(speaker_key),
                                            "name": speaker_name},
             "item_id": item_id, "previous_item_id": previous_item_id, "text": text,
             "final": final}
    try:
        await get_channel_layer().group_send(room_group(room_id), room_event(event))
    except Exception:
        log.warning("caption broadcast failed", exc_info=True)
