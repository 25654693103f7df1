"""A group-call member's audio into captions: what the SFU's captions run for each speaker
(registered with signaling.sfu.captions in TranscriptionConfig.ready(), so signaling needs no
import of transcription). The audio itself comes from signaling.media.pcm_from_track."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator

from . import engines
from .pipeline import SpeakerPipeline

log = logging.getLogger(__name__)


async def transcribe_call_speaker(room_id: int, speaker_key: str, speaker_name: str,
                                  pcm: AsyncIterator[bytes]) -> None:
    """Feed one speaker's PCM16 24 kHz chunks to an engine stream whose events become the
    room's shared, stored captions, until the chunks end; the stream is closed either way
    (an open turn ends, and its captions are still stored)."""
    pipeline = SpeakerPipeline(room_id, speaker_key, speaker_name)
    try:
        await pipeline.start()
        async for chunk in pcm:
            await pipeline.stream.feed(chunk)
    except engines.EngineFailed as failure:  # reported to the room as a caption error
        log.warning("captions for %s stopped: %s", speaker_key, failure)
    finally:
        await pipeline.close()
