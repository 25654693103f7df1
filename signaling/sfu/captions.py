"""Live captions in a group call: the worker transcribes each member's incoming audio, so
browsers upload nothing twice. Audio is decoded only while captions are on (hooks.py's tap
passes frames to aiortc's decoder only then).

What turns audio into captions is not signaling's: the transcription app registers it
(`register_transcriber`, from its AppConfig.ready()), so signaling never imports
transcription (rooms <- signaling <- transcription, no cycle).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable

from signaling.media import pcm_from_track

from .media import Publication

log = logging.getLogger(__name__)

# (room id, speaker key, speaker name, PCM16 mono 24 kHz chunks) -> runs until the chunks
# end (the track ended: MediaStreamError) or it is cancelled, storing and broadcasting the
# speaker's captions; it closes its own engine stream either way.
Transcriber = Callable[[int, str, str, AsyncIterator[bytes]], Awaitable[None]]

_transcriber: Transcriber | None = None


def register_transcriber(transcriber: Transcriber | None) -> None:
    """Set what transcribes a call member's audio (None: captions transcribe nothing)."""
    global _transcriber
    _transcriber = transcriber


def registered_transcriber() -> Transcriber | None:
    return _transcriber


class CallCaptions:
    """One task per speaking member: decoded 48 kHz Opus -> 24 kHz mono -> the registered
    transcriber (an engine stream) -> captions."""

    def __init__(self, room_id: int):
        self.room_id = room_id
        self.tasks: dict[str, asyncio.Task] = {}

    def start(self, member_id: str, speaker_key: str, speaker_name: str,
              publication: Publication) -> None:
        if member_id in self.tasks:
            return
        transcriber = _transcriber
        if transcriber is None:
            log.warning("captions are on but no transcriber is registered (is the "
                        "transcription app installed?)")
            return
        self.tasks[member_id] = asyncio.create_task(
            self._transcribe(transcriber, member_id, speaker_key, speaker_name, publication))

    async def stop(self, member_id: str) -> None:
        task = self.tasks.pop(member_id, None)
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def stop_all(self) -> None:
        for member_id in list(self.tasks):
            await self.stop(member_id)

    async def _transcribe(self, transcriber: Transcriber, member_id: str, speaker_key: str,
                          speaker_name: str, publication: Publication) -> None:
        try:
            await transcriber(self.room_id, speaker_key, speaker_name,
                              pcm_from_track(publication.decoded()))
        except asyncio.CancelledError:
            raise
        except Exception:  # the track ended: the member left or stopped publishing
            log.debug("captions for %s ended", member_id, exc_info=True)
        finally:
            publication.stop_decoding()
