"""Audio from WebRTC tracks as the engines take it: PCM16 mono 24 kHz."""

from __future__ import annotations

from collections.abc import AsyncIterator

import av

ENGINE_RATE = 24000


async def pcm_from_track(track) -> AsyncIterator[bytes]:
    """Decoded frames of an aiortc audio track (48 kHz Opus), resampled, until it ends
    (aiortc's MediaStreamError propagates to the caller)."""
    resampler = av.AudioResampler(format="s16", layout="mono", rate=ENGINE_RATE)
    while True:
        frame = await track.recv()
        pcm = b"".join(bytes(out.planes[0])[: out.samples * 2]
                       for out in resampler.resample(frame))
        if pcm:
            yield pcm
