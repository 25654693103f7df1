"""The offline engine turns speech into the Realtime API's transcription events."""

from __future__ import annotations

import pytest

from tests.support.speech import speech_pcm24k
from transcription.offline import OfflineEngine, Resampler

pytestmark = pytest.mark.transcription

CHUNK = 4800  # 100 ms of PCM16 at 24 kHz, as a browser sends


def test_resampler_turns_24k_into_16k():
    resample = Resampler()
    out = b"".join(resample(b"\x10\x00" * 2400) for _ in range(10))  # 1 s
    assert abs(len(out) // 2 - 16000) <= 400  # the filter holds back a few ms


@pytest.mark.parametrize("processes", [0, 1], ids=["threads", "child-process"])
async def test_two_sentences_make_two_ordered_turns(processes):
    pcm = speech_pcm24k(["hello everyone and welcome", "the meeting starts now"])
    engine = OfflineEngine(processes=processes)
    events: list[dict] = []
    await engine.open("ann", events.append)
    for start in range(0, len(pcm), CHUNK):
        await engine.feed("ann", pcm[start:start + CHUNK])
    await engine.close("ann")
    if engine.pool is not None:
        engine.pool.stop()

    kinds = [e["type"] for e in events if not e["type"].endswith(".delta")]
    turn = ["input_audio_buffer.speech_started", "input_audio_buffer.speech_stopped",
            "input_audio_buffer.committed",
            "conversation.item.input_audio_transcription.completed"]
    assert kinds == turn * 2
    first, second = (e for e in events if e["type"] == "input_audio_buffer.committed")
    assert first["previous_item_id"] is None
    assert second["previous_item_id"] == first["item_id"] != second["item_id"]
    started = [e for e in events if e["type"] == "input_audio_buffer.speech_started"]
    stopped = [e for e in events if e["type"] == "input_audio_buffer.speech_stopped"]
    assert started[0]["audio_start_ms"] < stopped[0]["audio_end_ms"] \
        < started[1]["audio_start_ms"] < stopped[1]["audio_end_ms"]
    for item in (first["item_id"], second["item_id"]):
        deltas = [e["delta"] for e in events if e.get("item_id") == item
                  and e["type"].endswith(".delta")]
        final = next(e["transcript"] for e in events if e.get("item_id") == item
                     and e["type"].endswith(".completed"))
        assert final.strip()
        # Deltas only ever append words (revisions wait for the final transcript).
        assert "".join(deltas) == " ".join("".join(deltas).split())



async def test_a_dead_decoder_process_is_reported_not_hung():
    from transcription.offline_pool import DecoderProcessDied

    engine = OfflineEngine(processes=1)
    await engine.open("ann", lambda event: None)
    process = engine.pool.placement["ann"]
    process.process.kill()
    with pytest.raises(DecoderProcessDied):
        for _ in range(100):  # the first feeds may already be on their way
            await engine.feed("ann", b"\0" * CHUNK)
    engine.pool.stop()
