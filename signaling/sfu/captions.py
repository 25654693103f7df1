"""Live captions in a group call: the worker transcribes each member's incoming audio, so
browsers upload nothing twice. Audio is decoded only while captions are on (hooks.py's tap
passes frames to aiortc's decoder only then)."""

from __future__ import annotations

import asyncio
import contextlib
import logging

from transcription import engines
from transcription.audio import pcm_from_track
from transcription.pipeline import SpeakerPipeline

from .media import Publication

log = logging.getLogger(__name__)


class CallCaptions:
    """One task per speaking member: decoded 48 kHz Opus -> 24 kHz mono -> engine -> captions."""

    def __init__(self, room_id: int):
        self.room_id = room_id
        self.tasks: dict[str, asyncio.Task] = {}

    def start(self, member_id: str, speaker_key: str, speaker_name: str,
              publication: Publication) -> None:
        if member_id in self.tasks:
            return
        self.tasks[member_id] = asyncio.create_task(
            self._transcribe(member_id, speaker_key, speaker_name, publication))

    async def stop(self, member_id: str) -> None:
        task = self.tasks.pop(member_id, None)
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def stop_all(self) -> None:
        for member_id in list(self.tasks):
            await self.stop(member_id)

    async def _transcribe(self, member_id: str, speaker_key: str, speaker_name: str,
                          publication: Publication) -> None:
        pipeline = SpeakerPipeline(self.room_id, speaker_key, speaker_name)
        try:
            await pipeline.start()
            async for pcm in pcm_from_track(publication.decoded()):
                await pipeline.stream.feed(pcm)
        except asyncio.CancelledError:
            raise
        except engines.EngineFailed as failure:  # reported to the room as a caption error
            log.warning("captions for %s stopped: %s", member_id, failure)
        except Exception:  # the track ended: the member left or stopped publishing
            log.debug("captions for %s ended", member_id, exc_info=True)
        finally:
            publication.stop_decoding()
            await pipeline.close()  # ends an open turn, whose captions are still stored
