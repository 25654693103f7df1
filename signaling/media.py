"""Audio from a WebRTC track as PCM16 mono 24 kHz, the rate speech engines take.

Here, in signaling (the lowest app holding WebRTC plumbing, with ice.py, protocol.py and
sfu/hooks.py), because both the SFU's group-call captions and transcription's
`/v1/realtime/calls` read audio this way, and signaling must not import transcription.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import av
from aiortc import MediaStreamTrack

PCM_RATE = 24000


async def pcm_from_track(track: MediaStreamTrack) -> AsyncIterator[bytes]:
    """Decoded frames of an aiortc audio track (48 kHz Opus), resampled, until it ends
    (aiortc's MediaStreamError propagates to the caller)."""
    resampler = av.AudioResampler(format="s16", layout="mono", rate=PCM_RATE)
    while True:
        frame = await track.recv()
        pcm = b"".join(bytes(out.planes[0])[: out.samples * 2]
                       for out in resampler.resample(frame))
        if pcm:
            yield pcm
