"""The offline transcription engine: pocketsphinx, one warm decoder per speaker.

It takes what the Realtime API takes (PCM16 mono 24 kHz) and emits the Realtime API's server
events for a transcription turn, so callers cannot tell the engines apart:
`input_audio_buffer.speech_started` -> `speech_stopped` -> `committed` ->
`conversation.item.input_audio_transcription.delta` (as partial text grows) -> `.completed`.

Audio is resampled to 16 kHz (PyAV), endpointed by pocketsphinx's voice activity detector and
decoded on the speaker's own worker thread (ending an utterance can block for seconds under
load, per ../shared/notes/transcription-facts.md); events come back to the event loop in order.
"""

from __future__ import annotations

import asyncio
import functools
import itertools
import os
import secrets
import tempfile
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import av

INPUT_RATE = 24000
DECODER_RATE = 16000
BYTES_PER_SAMPLE = 2
# A partial transcript is computed at most every this many 30 ms frames of speech (~0.3 s):
# often enough for live captions, rarely enough not to double the decoding cost.
PARTIAL_EVERY_FRAMES = 10

Event = dict
EventSink = Callable[[Event], None]


def new_item_id() -> str:
    return "item_" + secrets.token_hex(10)


@dataclass
class OfflineConfig:
    language: str = "en-us"
    vad_window: float = 0.3  # seconds of audio the endpointer looks at
    vad_ratio: float = 0.9  # fraction of that window that must be speech (or silence)
    lm: str | None = None  # an ARPA model of the expected sentences (OFFLINE_LM); None: general
    dictionary: str | None = None  # pronunciations; None: the LM's words from the full one


@functools.cache
def dictionary_for(lm_path: str) -> Path:
    """The default dictionary cut down to the words of an ARPA model (once per process)."""
    from pocketsphinx import get_model_path

    words = set(Path(lm_path).read_text().split())
    full = Path(get_model_path(), "en-us", "cmudict-en-us.dict")
    with full.open() as entries:
        kept = [line for line in entries if line.split(" ", 1)[0].split("(")[0] in words]
    handle, name = tempfile.mkstemp(prefix="parley-", suffix=".dict")
    with os.fdopen(handle, "w") as out:
        out.writelines(kept)
    return Path(name)


class Resampler:
    """PCM16 mono 24 kHz -> 16 kHz, keeping filter state across chunks."""

    def __init__(self) -> None:
        self._resampler = av.AudioResampler(format="s16", layout="mono", rate=DECODER_RATE)
        self._pts = 0

    def __call__(self, pcm: bytes) -> bytes:
        samples = len(pcm) // BYTES_PER_SAMPLE
        if not samples:
            return b""
        frame = av.AudioFrame(format="s16", layout="mono", samples=samples)
        frame.planes[0].update(pcm[: samples * BYTES_PER_SAMPLE])
        frame.sample_rate, frame.pts = INPUT_RATE, self._pts
        self._pts += samples
        return b"".join(bytes(out.planes[0])[: out.samples * BYTES_PER_SAMPLE]
                        for out in self._resampler.resample(frame))


class SpeakerStream:
    """One speaker's audio turned into transcription events. Not thread-safe: feed it from
    one thread (OfflineEngine gives each speaker its own)."""

    def __init__(self, emit: EventSink, config: OfflineConfig, decoder=None):
        from pocketsphinx import Decoder, Endpointer

        self.emit = emit
        self.resample = Resampler()
        self.endpointer = Endpointer(window=config.vad_window, ratio=config.vad_ratio,
                                     sample_rate=DECODER_RATE)
        options = {}
        if config.lm:
            # Loading the full 134k-word dictionary with a small LM takes seconds; its words'
            # pronunciations alone load in milliseconds.
            options = {"lm": config.lm,
                       "dict": config.dictionary or str(dictionary_for(config.lm))}
        self.decoder = decoder or Decoder(samprate=DECODER_RATE, **options)
        self.pending = b""
        self.item_id: str | None = None
        self.previous_item_id: str | None = None
        self.partial = ""
        self.frames_in_turn = 0
        self.frames_seen = 0

    def feed(self, pcm24k: bytes) -> None:
        self.pending += self.resample(pcm24k)
        size = self.endpointer.frame_bytes
        while len(self.pending) >= size:
            frame, self.pending = self.pending[:size], self.pending[size:]
            self._frame(frame)

    def commit(self) -> None:
        """A manual commit: end the current turn now (no-op between turns)."""
        if self.item_id is not None:
            self._end_turn(self._ms(self.frames_seen))

    def clear(self) -> None:
        """Drop audio not yet decoded."""
        self.pending = b""

    def finish(self) -> None:
        """End of the audio stream: close any open turn."""
        if self.item_id is not None:
            tail = self.endpointer.end_stream(
                self.pending.ljust(self.endpointer.frame_bytes, b"\0"))
            if tail:
                self.decoder.process_raw(tail, False, False)
            self._end_turn(self._ms(self.frames_seen))
        self.pending = b""

    def _ms(self, frames: int) -> int:
        return round(frames * self.endpointer.frame_length * 1000)

    def _frame(self, frame: bytes) -> None:
        was_speaking = self.endpointer.in_speech
        speech = self.endpointer.process(frame)
        self.frames_seen += 1
        if speech is None:
            return
        if not was_speaking:
            self.item_id = new_item_id()
            self.partial, self.frames_in_turn = "", 0
            self.decoder.start_utt()
            self.emit({"type": "input_audio_buffer.speech_started",
                       "audio_start_ms": round(self.endpointer.speech_start * 1000),
                       "item_id": self.item_id})
        self.decoder.process_raw(speech, False, False)
        self.frames_in_turn += 1
        if self.frames_in_turn % PARTIAL_EVERY_FRAMES == 0:
            self._partial()
        if not self.endpointer.in_speech:
            self._end_turn(round(self.endpointer.speech_end * 1000))

    def _partial(self) -> None:
        hyp = self.decoder.hyp()
        words = hyp.hypstr.split() if hyp is not None else []
        known = self.partial.split()
        # A delta only appends: send the new words when the earlier ones still stand. Partials
        # can revise earlier words; then nothing is sent and the final transcript settles it.
        if len(words) > len(known) and words[: len(known)] == known:
            new = " ".join(words[len(known):])
            self.emit({"type": "conversation.item.input_audio_transcription.delta",
                       "item_id": self.item_id, "content_index": 0,
                       "delta": f" {new}" if known else new})
            self.partial = " ".join(words)

    def _end_turn(self, end_ms: int) -> None:
        item_id, previous = self.item_id, self.previous_item_id
        self.emit({"type": "input_audio_buffer.speech_stopped", "audio_end_ms": end_ms,
                   "item_id": item_id})
        self.emit({"type": "input_audio_buffer.committed", "item_id": item_id,
                   "previous_item_id": previous})
        self.decoder.end_utt()
        hyp = self.decoder.hyp()
        transcript = hyp.hypstr if hyp is not None else ""
        self.emit({"type": "conversation.item.input_audio_transcription.completed",
                   "item_id": item_id, "content_index": 0, "transcript": transcript})
        self.previous_item_id, self.item_id = item_id, None


class OfflineEngine:
    """Speaker streams decoded off the event loop; events delivered on it, in order.

    With `processes` > 0 the decoders live in that many child processes (offline_pool.py),
    so speakers use every core; with 0, each speaker gets a thread in this process (what
    tests of the engine itself use), and all speakers share one core (pocketsphinx holds the
    GIL while it decodes)."""

    _thread_names = itertools.count(1)

    def __init__(self, config: OfflineConfig | None = None, processes: int = 0):
        from .offline_pool import ProcessPool

        self.config = config or OfflineConfig()
        self.pool = ProcessPool(self.config, processes) if processes > 0 else None
        self.streams: dict[str, tuple[SpeakerStream, ThreadPoolExecutor] | None] = {}

    async def open(self, speaker: str, on_event: Callable[[Event], None]) -> None:
        """A warm decoder for `speaker`, loaded off the event loop."""
        if self.pool is not None:
            await self.pool.open(speaker, on_event)
            self.streams[speaker] = None
            return
        loop = asyncio.get_running_loop()

        def emit(event: Event) -> None:
            loop.call_soon_threadsafe(on_event, event)

        executor = ThreadPoolExecutor(
            max_workers=1, thread_name_prefix=f"stt-{next(self._thread_names)}")
        stream = await loop.run_in_executor(executor, SpeakerStream, emit, self.config)
        self.streams[speaker] = (stream, executor)

    async def feed(self, speaker: str, pcm24k: bytes) -> None:
        """Queue audio; returns once it is decoded, which is what bounds a fast sender."""
        await self._call(speaker, "feed", pcm24k)

    async def commit(self, speaker: str) -> None:
        await self._call(speaker, "commit")

    async def clear(self, speaker: str) -> None:
        await self._call(speaker, "clear")

    async def close(self, speaker: str) -> None:
        hosted = self.streams.pop(speaker)
        if self.pool is not None:
            await self.pool.close(speaker)
            return
        stream, executor = hosted
        await asyncio.get_running_loop().run_in_executor(executor, stream.finish)
        executor.shutdown(wait=False)

    async def _call(self, speaker: str, operation: str, *args) -> None:
        if self.pool is not None:
            await self.pool.call(operation, speaker, *args)
            return
        stream, executor = self.streams[speaker]
        await asyncio.get_running_loop().run_in_executor(
            executor, getattr(stream, operation), *args)


_shared: OfflineEngine | None = None


def shared_engine() -> OfflineEngine:
    """The process's offline engine (speaker streams are per caller)."""
    global _shared
    if _shared is None:
        from django.conf import settings

        _shared = OfflineEngine(OfflineConfig(lm=settings.TRANSCRIPTION["OFFLINE_LM"] or None),
                                processes=settings.TRANSCRIPTION["OFFLINE_PROCESSES"])
    return _shared
