"""One speaker's transcription pipeline: an engine stream whose events go, in the order the
engine made them, to the client (if any) and to the room's shared captions.

Used by the proxy socket (`/v1/realtime`), the WebRTC endpoint (`/v1/realtime/calls`) and
group-call captions. Lifetime: the owner creates it, `start()`s it, feeds it, and `close()`s
it; closing ends an open turn and returns once that turn's events have been relayed and
stored, then stops the relay task.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable

from . import engines, realtime
from .captions import SpeakerCaptions

log = logging.getLogger(__name__)

_CLOSED = {"type": "parley.closed"}


class SpeakerPipeline:
    def __init__(self, room_id: int, speaker_key: str, speaker_name: str, *,
                 deliver: Callable[[dict], Awaitable[None]] | None = None,
                 on_failed: Callable[[], Awaitable[None]] | None = None):
        """`deliver` sends a server event to the client; `on_failed` runs (in the relay task)
        after the engine reported a fault that ends the stream."""
        self.deliver, self.on_failed = deliver, on_failed
        self.events: asyncio.Queue[dict] = asyncio.Queue()
        self.stream = engines.open_stream(self.events.put_nowait, room_id=room_id)
        self.captions = SpeakerCaptions(room_id, speaker_key, speaker_name, self.stream.engine)
        self.relay = asyncio.create_task(self._relay())
        self.started = False

    async def start(self) -> None:
        """Raises engines.EngineFailed (its error event is relayed like any other)."""
        await self.stream.start()
        self.started = True

    async def close(self) -> None:
        if self.started:
            with contextlib.suppress(Exception):
                await self.stream.close()
        self.events.put_nowait(_CLOSED)
        if self.relay is not asyncio.current_task():
            with contextlib.suppress(asyncio.CancelledError):
                await self.relay

    async def _relay(self) -> None:
        while True:
            event = await self.events.get()
            kind = event["type"]
            if kind == _CLOSED["type"]:
                return
            if kind == "parley.stream_failed":
                if self.on_failed is not None:
                    await self.on_failed()
                continue
            if "event_id" not in event:
                event = realtime.server_event(kind, **{
                    k: v for k, v in event.items() if k != "type"})
            if self.deliver is not None:
                with contextlib.suppress(Exception):  # the client may be gone; captions go on
                    await self.deliver(event)
            try:
                await self.captions.handle(event)
            except Exception:
                log.exception("caption handling failed")
