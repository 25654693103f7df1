"""Live transcription: engine accuracy and speed, caption latency, concurrent speakers.

Speech is espeak-ng at 150 words/min, PCM16 mono 24 kHz, each sentence generated on its own
and laid out with silent gaps, then mixed with a faint white-noise floor as
tests/support/speech.py does (`sox -m`, noise at vol 0.003; seeded here, so every run hears the
same noise): the bench knows where every sentence's speech truly starts and ends (first/last
10 ms frame above -40 dBFS of its clip). SENTENCES (20 everyday meeting sentences) appear
nowhere else in Parley, and the offline engine (Whisper, no language model) was never tuned on
them; the voices are VOICES.

Parts (--parts, in this order):
- engine: the offline engine in this process, no server. Per model (--models; "" is the
  bundled tiny.en) and voice, one warm SpeakerStream (model loaded before timing) is fed the
  whole set (--engine-gap s of silence around each sentence) in 100 ms chunks as fast as it
  takes them, partials on as in production (their re-decodes are paced by audio seconds, so
  they cost what they cost live). Real-time factor = process CPU and wall time / audio
  duration; word error rate of the concatenated `completed` transcripts (transcription/
  scoring.py: normalised words); the endpointer's turn boundaries against the true ones. Then
  compute settings on en-us: partials off, and OFFLINE_THREADS=2 (CTranslate2 threads). Then
  the same 6 sentences decoded by 1 stream, and by --threads streams on as many threads of this
  process at once (OFFLINE_PROCESSES=0 runs speakers so): do decoding threads use more than one
  core?
- captions: one daphne on the engine, once per OFFLINE_THREADS value in --caption-threads. One
  guest speaks --sentences sentences (voice en-us, 1.5 s gaps) over `/v1/realtime` with a
  minted key, in --chunk-ms chunks at wall-clock pace (the chunk holding audio [t, t+c) is sent
  at t0+t+c, as a microphone would deliver it); --listeners other guests read `caption` events
  on their room sockets. Latency from the true end of a sentence's speech to the final caption
  on every page, and from its true start to the first partial caption with words, per listener
  and overall; the speaker's own events break the delay down.
- speakers: one daphne (Parley's default OFFLINE_PROCESSES unless --offline-processes); for K
  in --speakers, K guests in one fresh room stream --duration s of real-time speech each at the
  same time (voices rotate, starts staggered by 0.37 s, sentence order rotated). Measured: CPU
  (utime+stime / wall, % of one core) of daphne (with its decoder processes), of the stand-in
  and of this bench while they speak; per-turn latency from the true end of speech to
  `completed` on the speaker's socket; turns that ended `.failed` with
  transcription_overloaded; the share of turns that got a partial (partials are shed first
  under load); word error rate of what completed. K is sustained when every sentence completed,
  the p95 is under 3 s, and the median of the run's second half is at most 0.5 s over the first
  half's (no backlog).
- proxy (--engine openai only): the 20 sentences x --proxy-rounds, each sent at once in 100 ms
  appends and committed 0.5 s later with turn detection off, alternating between two open
  sessions: (a) straight to the stand-in, (b) through Parley's `/v1/realtime` (whose OpenAI
  engine talks to the stand-in). Commit -> `committed` and commit -> `completed`, median/p95
  per path, and the differences: the proxy's overhead per event.

With --engine openai, daphne runs Parley's OpenAI engine (TRANSCRIPTION_ENGINE=openai,
OPENAI_* pointing at tests/support/openai_standin.py, started as its own process so daphne's
CPU is Parley's own; the stand-in recognises with the bundled Whisper model) for every part.

Default run: about 9 min (offline), 6 min (--engine openai) on 2 cores.
Usage: .venv/bin/python bench/transcription.py [--parts engine,captions,speakers]
    [--engine offline|openai] [--models ""] [--model ""] [--listeners 2] [--sentences 10]
    [--caption-threads 1,2] [--speakers 1,2,3,4,5,6,8] [--duration 20] [--chunk-ms 100]
    [--engine-gap 1.0] [--threads nproc] [--proxy-rounds 2] [--offline-processes N]
"""

from __future__ import annotations

import argparse
import array
import asyncio
import base64
import contextlib
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import wave
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "project.settings")

from websockets.asyncio.client import ClientConnection, connect  # noqa: E402

from bench.fanout_common import cpu_seconds, system_busy_seconds, wait_for_quiet  # noqa: E402
from rooms.client import create_public_room, guest_session  # noqa: E402
from tests.support.servers import (  # noqa: E402
    DaphneProcess,
    LiveDatabase,
    free_port,
    log_file,
    port_open,
    stop_process,
    wait_until,
)
from transcription.client import mint_guest_key  # noqa: E402
from transcription.offline import OVERLOADED  # noqa: E402
from transcription.scoring import word_error_rate, words_of  # noqa: E402

SENTENCES = [
    "good morning everyone and thank you for joining",
    "can you all hear me clearly",
    "let us start with a quick round of updates",
    "the new schedule begins next monday",
    "please send me the report by friday afternoon",
    "i think we should move the meeting to thursday",
    "the coffee machine on the third floor is broken again",
    "we need two more people for this project",
    "could you share your screen for a moment",
    "the budget was approved yesterday",
    "my train was late this morning",
    "lunch will be delivered at noon",
    "does anyone have questions about the plan",
    "i will write a summary after the call",
    "the weather is nice so we could eat outside",
    "remember to lock the door when you leave",
    "the children are on holiday next week",
    "thank you that was very helpful",
    "let us take a short break",
    "see you all tomorrow at the same time",
]
VOICES = ["en-us", "en-gb", "en-us+f3", "en-us+m7"]
RATE = 24000
BYTES_PER_SECOND = RATE * 2
SPEECH_LEVEL = 328  # -40 dBFS: a 10 ms frame peaking above it is speech
NOISE_VOLUME = "0.003"  # tests/support/speech.py's noise floor
TARGET_S = 3.0  # Ofcom's ceiling for live subtitles (../shared/notes/transcription-facts.md)
TARGET_FINAL_P50_S = 1.2  # issue #12: end of speech -> final caption, one speaker
TARGET_WER = 0.15  # issue #12: unseen sentences, default model
TARGET_SPEAKERS = 4  # issue #12: people speaking at once on 2 cores, p95 under TARGET_S
GROWTH_LIMIT_S = 0.5  # second-half median over first-half median that counts as a backlog
STAGGER_S = 0.37  # speakers' start offsets: turns of different people do not end together
COMPLETED = "conversation.item.input_audio_transcription.completed"
DELTA = "conversation.item.input_audio_transcription.delta"
FAILED = "conversation.item.input_audio_transcription.failed"


# ---------------------------------------------------------------------------------------------
# Speech with a known timeline


@dataclass
class Spoken:
    """PCM16 mono 24 kHz of sentences, with each sentence's true speech span in seconds."""

    pcm: bytes
    sentences: list[str]
    spans: list[tuple[float, float]]
    voice: str

    @property
    def seconds(self) -> float:
        return len(self.pcm) / BYTES_PER_SECOND


def speech_bounds(pcm: bytes) -> tuple[float, float]:
    """First and last 10 ms frame of a clean clip that peaks above SPEECH_LEVEL, in seconds."""
    samples = array.array("h", pcm)
    frame = RATE // 100
    loud = [n for n in range(0, len(samples), frame)
            if max(map(abs, samples[n:n + frame])) > SPEECH_LEVEL]
    return loud[0] / RATE, min(len(samples), loud[-1] + frame) / RATE


def read_wav(path: Path) -> bytes:
    with wave.open(str(path)) as w:
        return w.readframes(w.getnframes())


def write_wav(path: Path, pcm: bytes) -> None:
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(RATE)
        w.writeframes(pcm)


def spoken_clip(sentence: str, voice: str, tmp: Path) -> bytes:
    raw, clip = tmp / "raw.wav", tmp / "clip.wav"
    subprocess.run(["espeak-ng", "-v", voice, "-s", "150", "-w", str(raw), sentence], check=True)
    subprocess.run(["sox", "-R", str(raw), "-r", str(RATE), "-c", "1", "-b", "16", str(clip)],
                   check=True)
    return read_wav(clip)


def with_noise_floor(pcm: bytes, tmp: Path) -> bytes:
    """Mixed as speech.py mixes: `sox -m` (which halves both inputs) with white noise."""
    joined, noise, mixed = tmp / "joined.wav", tmp / "noise.wav", tmp / "mixed.wav"
    write_wav(joined, pcm)
    # -R (every sox call): repeatable mode, a fixed seed for the noise and the dither, so every
    # run hears the same audio (without it, WER moved by up to 3 points between runs).
    subprocess.run(["sox", "-R", "-n", "-r", str(RATE), "-c", "1", "-b", "16", str(noise), "synth",
                    f"{len(pcm) / BYTES_PER_SECOND:.3f}", "whitenoise", "vol", NOISE_VOLUME],
                   check=True)
    subprocess.run(["sox", "-R", "-m", str(joined), str(noise), str(mixed)], check=True)
    return read_wav(mixed)[: len(pcm)]


def speak(sentences: list[str], voice: str, gap: float, lead: float = 0.0) -> Spoken:
    """The sentences with `gap` s of silence before, between and after them (plus `lead`)."""
    if not shutil.which("espeak-ng") or not shutil.which("sox"):
        raise RuntimeError("espeak-ng and sox are missing: `make test` installs them")
    silence = b"\0\0" * round(gap * RATE)
    pcm, spans = bytearray(b"\0\0" * round(lead * RATE)), []
    with tempfile.TemporaryDirectory() as name:
        tmp = Path(name)
        for sentence in sentences:
            pcm += silence
            clip = spoken_clip(sentence, voice, tmp)
            start, end = speech_bounds(clip)
            offset = len(pcm) / BYTES_PER_SECOND
            spans.append((offset + start, offset + end))
            pcm += clip
        pcm += silence
        return Spoken(with_noise_floor(bytes(pcm), tmp), list(sentences), spans, voice)


def chunks(pcm: bytes, seconds: float) -> list[bytes]:
    size = round(seconds * RATE) * 2
    return [pcm[n:n + size] for n in range(0, len(pcm), size)]


# ---------------------------------------------------------------------------------------------
# Figures


def pct(values: list[float], q: float) -> float:
    """Nearest-rank percentile; NaN for no values."""
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    return ordered[min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))]


def med(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


def summary(values: list[float]) -> str:
    """'p50 / p95 / max' in seconds."""
    worst = max(values, default=float("nan"))
    return f"{med(values):5.2f} / {pct(values, 0.95):5.2f} / {worst:5.2f}"


def sentence_index(start: float, end: float, spans: list[tuple[float, float]]) -> int:
    """The sentence a turn [start, end] (seconds) belongs to: most overlap, else nearest."""
    overlaps = [min(e, end) - max(s, start) for s, e in spans]
    best = max(range(len(spans)), key=overlaps.__getitem__)
    if overlaps[best] > 0:
        return best
    return min(range(len(spans)), key=lambda i: max(spans[i][0] - end, start - spans[i][1]))


def runaway(said: str, heard: str) -> bool:
    """A transcript far longer than what was said: Whisper looping ("No, no, no, no, ...")."""
    return len(words_of(heard)) > 2 * len(words_of(said)) + 2


def scored(said: list[str], heard: list[str]) -> tuple[float, int, float]:
    """Sentence-aligned transcripts: (word error rate, runaway sentences, word error rate of
    the other sentences)."""
    kept = [(a, b) for a, b in zip(said, heard, strict=True) if not runaway(a, b)]
    return (word_error_rate(" ".join(said), " ".join(heard)), len(said) - len(kept),
            word_error_rate(" ".join(a for a, _ in kept), " ".join(b for _, b in kept)))


def git_commit() -> str:
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT,
                            capture_output=True, text=True).stdout.strip()
    dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=ROOT,
                           capture_output=True, text=True).stdout.split("\n")
    changed = [line[3:] for line in dirty if line.strip()]
    return commit + (f" + uncommitted changes to {', '.join(changed)}" if changed else "")


def header(part: str, title: str) -> None:
    print(f"== transcription bench, part {part}: {title}", flush=True)
    print(f"commit {git_commit()}; machine: nproc {len(os.sched_getaffinity(0))}, "
          f"python {sys.version.split()[0]}, {time.strftime('%Y-%m-%d %H:%M')}; the rest of the "
          f"machine used {wait_for_quiet():.0f}% of one core just before", flush=True)


# ---------------------------------------------------------------------------------------------
# Part "engine": the offline engine in this process


@dataclass(frozen=True)
class EngineSetting:
    """A label and the OfflineConfig fields that differ from the defaults."""

    label: str
    model: str = ""  # OFFLINE_MODEL; "": the bundled tiny.en
    cpu_threads: int = 1
    partials: bool = True

    def config(self):
        from transcription.offline import OfflineConfig

        return OfflineConfig(model=self.model, cpu_threads=self.cpu_threads,
                             **({} if self.partials else {"partial_interval": 3600.0}))


@dataclass
class Decoded:
    voice: str
    setting: str
    audio_s: float
    cpu_s: float
    wall_s: float
    wer: float
    runaway: int  # sentences whose transcript ran away (see runaway())
    wer_without: float  # word error rate of the other sentences
    turns: int
    sentences: int
    deltas: int
    start_errors: list[float]  # endpointer's turn start - true speech start, per sentence
    end_errors: list[float]  # endpointer's turn end - true speech end, per sentence


def model_name(model: str) -> str:
    return model or "tiny.en (bundled)"


def load_model(setting: EngineSetting) -> float:
    """Load (once per process) the setting's model; seconds it took."""
    from transcription.offline import model_location, whisper_model

    started = time.perf_counter()
    whisper_model(model_location(setting.model), setting.cpu_threads)
    return time.perf_counter() - started


def rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def decode_offline(spoken: Spoken, setting: EngineSetting) -> Decoded:
    """Feed a warm SpeakerStream the whole recording in 100 ms chunks, as fast as it goes."""
    from transcription.offline import SpeakerStream

    events: list[dict] = []
    stream = SpeakerStream(events.append, setting.config())
    cpu0, wall0 = time.process_time(), time.perf_counter()
    for chunk in chunks(spoken.pcm, 0.1):
        stream.feed(chunk)
    stream.finish()
    cpu, wall = time.process_time() - cpu0, time.perf_counter() - wall0
    starts = {e["item_id"]: e["audio_start_ms"] / 1000 for e in events
              if e["type"] == "input_audio_buffer.speech_started"}
    ends = {e["item_id"]: e["audio_end_ms"] / 1000 for e in events
            if e["type"] == "input_audio_buffer.speech_stopped"}
    first: dict[int, float] = {}
    last: dict[int, float] = {}
    heard = [""] * len(spoken.sentences)
    turns = 0
    for event in events:
        if event["type"] == COMPLETED:
            item = event["item_id"]
            index = sentence_index(starts[item], ends[item], spoken.spans)
            first.setdefault(index, starts[item])
            last[index] = ends[item]
            heard[index] = f"{heard[index]} {event['transcript']}".strip()
            turns += 1
    return Decoded(
        spoken.voice, setting.label, spoken.seconds, cpu, wall,
        *scored(spoken.sentences, heard), turns,
        len(spoken.sentences), sum(e["type"] == DELTA for e in events),
        [first[i] - spoken.spans[i][0] for i in first],
        [last[i] - spoken.spans[i][1] for i in last])


def print_decoded(r: Decoded) -> None:
    print(f"{r.setting:31} {r.voice:9} {r.audio_s:7.1f} {r.cpu_s / r.audio_s:7.3f} "
          f"{r.wall_s / r.audio_s:8.3f} {r.wer:6.1%} {r.runaway:>7} {r.wer_without:7.1%} "
          f"{r.turns:>2}/{r.sentences:<2} "
          f"{r.deltas:>6} {med(r.start_errors) * 1000:16.0f} {med(r.end_errors) * 1000:14.0f}",
          flush=True)


def decode_in_threads(spoken: Spoken, count: int) -> tuple[float, float]:
    """`count` warm streams decode `spoken` at once, one thread each: (wall s, CPU share)."""
    from transcription.offline import OfflineConfig, SpeakerStream

    streams = [SpeakerStream(lambda event: None, OfflineConfig()) for _ in range(count)]

    def work(stream: SpeakerStream) -> None:
        for chunk in chunks(spoken.pcm, 0.1):
            stream.feed(chunk)
        stream.finish()

    threads = [threading.Thread(target=work, args=(stream,)) for stream in streams]
    cpu0, wall0 = time.process_time(), time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    wall = time.perf_counter() - wall0
    return wall, (time.process_time() - cpu0) / wall


def report_threads(count: int) -> None:
    spoken = speak(SENTENCES[:6], "en-us", 1.0)
    one_wall, one_share = decode_in_threads(spoken, 1)
    many_wall, many_share = decode_in_threads(spoken, count)
    print(f"threads (default engine, {spoken.seconds:.0f} s of en-us per stream): 1 stream "
          f"{one_wall:.1f} s wall at {one_share:.0%} of a core; {count} streams on {count} "
          f"threads at once {many_wall:.1f} s wall at {many_share:.0%} of a core "
          f"({many_wall / one_wall:.2f}x the time for {count}x the audio; {count} free cores "
          f"would make it 1x)", flush=True)


def part_engine(args) -> None:
    header("engine", "offline engine real-time factor and word error rate, in-process")
    recordings = [speak(SENTENCES, voice, args.engine_gap) for voice in VOICES]
    audio = statistics.mean(r.seconds for r in recordings)
    print(f"load shape: {len(SENTENCES)} sentences x {len(VOICES)} voices "
          f"({', '.join(VOICES)}), espeak-ng 150 wpm, {args.engine_gap:g} s gaps, noise floor; "
          f"~{audio:.0f} s of audio per voice; one warm SpeakerStream per voice and setting, "
          "fed 100 ms chunks as fast as it takes them, in this process; RTF = process "
          "CPU (or wall) time / audio time", flush=True)
    columns = (f"{'setting':31} {'voice':9} {'audio s':>7} {'RTF cpu':>7} {'RTF wall':>8} "
               f"{'WER':>6} {'runaway':>7} {'WER w/o':>7} {'turns':>5} {'deltas':>6} "
               f"{'VAD start err ms':>16} {'VAD end err ms':>14}")
    print(columns, flush=True)
    for model in args.models.split(","):
        setting = EngineSetting(f"{model_name(model)}, partials")
        load_s = load_model(setting)
        results = [decode_offline(r, setting) for r in recordings]
        for r in results:
            print_decoded(r)
        wer = statistics.mean(r.wer for r in results)
        without = statistics.mean(r.wer_without for r in results)
        print(f"{setting.label:31} {'all':9} {'':7} "
              f"{med([r.cpu_s / r.audio_s for r in results]):7.3f} "
              f"{med([r.wall_s / r.audio_s for r in results]):8.3f} {wer:6.1%} "
              f"{sum(r.runaway for r in results):>7} {without:7.1%} (RTF: median, WER: mean); "
              f"model load {load_s:.2f} s, this process's RSS {rss_mb():.0f} MB; WER target "
              f"< {TARGET_WER:.0%}: {'met' if wer < TARGET_WER else 'NOT met'}", flush=True)
    print("runaway: sentences whose transcript has more than twice their words + 2 (Whisper "
          "looping); WER w/o: of the other sentences; VAD err: median over sentences of the "
          "endpointer's audio_start_ms/audio_end_ms minus the true speech start/end (negative: "
          "earlier); deltas: partial-text events sent", flush=True)
    print(f"compute settings, {model_name('')}, voice {VOICES[0]} (same audio):", flush=True)
    print(columns, flush=True)
    for setting in (EngineSetting("1 thread, partials"),
                    EngineSetting("1 thread, no partials", partials=False),
                    EngineSetting("OFFLINE_THREADS=2, partials", cpu_threads=2),
                    EngineSetting("OFFLINE_THREADS=2, no partials", cpu_threads=2,
                                  partials=False)):
        load_model(setting)
        print_decoded(decode_offline(recordings[0], setting))
    report_threads(args.threads)


# ---------------------------------------------------------------------------------------------
# Clients: a speaker on /v1/realtime, a listener on the room socket


@dataclass
class Turn:
    item_id: str
    start_ms: int | None = None
    end_ms: int | None = None
    stopped_at: float | None = None  # monotonic time speech_stopped arrived
    committed_at: float | None = None
    first_delta_at: float | None = None
    completed_at: float | None = None
    failed_at: float | None = None
    failure: str = ""  # the .failed event's error code
    transcript: str = ""

    @property
    def ended_at(self) -> float | None:
        """When the turn's outcome arrived: completed or failed."""
        return self.completed_at or self.failed_at


class SocketClient:
    """A WebSocket and the task reading it; closing stops both."""

    socket: ClientConnection | None = None
    reader: asyncio.Task | None = None

    async def close(self) -> None:
        if self.reader is not None:
            self.reader.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self.reader
        if self.socket is not None:
            with contextlib.suppress(Exception):
                await self.socket.close()


class RealtimeSpeaker(SocketClient):
    """One speaker's Realtime-API transcription socket: sends audio, times the events."""

    def __init__(self, url: str, key: str):
        self.url, self.key = url, key
        self.turns: dict[str, Turn] = {}
        self.errors: list[dict] = []
        self.socket: ClientConnection | None = None
        self.reader: asyncio.Task | None = None
        self.connect_s = float("nan")  # opening the socket -> session.created

    async def connect(self) -> None:
        opened = time.monotonic()
        self.socket = await connect(self.url, additional_headers={
            "Authorization": f"Bearer {self.key}"}, max_size=2**22, open_timeout=30)
        created = json.loads(await self.socket.recv())
        if created.get("type") not in ("session.created", "transcription_session.created"):
            raise RuntimeError(f"expected session.created, got {created}")
        self.connect_s = time.monotonic() - opened
        self.reader = asyncio.create_task(self._read())

    async def _read(self) -> None:
        async for raw in self.socket:
            self.on_event(json.loads(raw), time.monotonic())

    def turn(self, event: dict) -> Turn:
        item = event["item_id"]
        return self.turns.setdefault(item, Turn(item))

    def on_event(self, event: dict, now: float) -> None:
        kind = event.get("type")
        if kind == "input_audio_buffer.speech_started":
            self.turn(event).start_ms = event["audio_start_ms"]
        elif kind == "input_audio_buffer.speech_stopped":
            turn = self.turn(event)
            turn.end_ms, turn.stopped_at = event["audio_end_ms"], now
        elif kind == "input_audio_buffer.committed":
            self.turn(event).committed_at = now
        elif kind == DELTA:
            turn = self.turn(event)
            turn.first_delta_at = turn.first_delta_at or now
        elif kind == COMPLETED:
            turn = self.turn(event)
            turn.completed_at, turn.transcript = now, event.get("transcript", "")
        elif kind == FAILED:
            turn = self.turn(event)
            turn.failed_at, turn.failure = now, (event.get("error") or {}).get("code", "")
        elif kind == "error":
            self.errors.append(event)

    async def send(self, event: dict) -> None:
        await self.socket.send(json.dumps(event))

    async def stream(self, pcm: bytes, chunk_s: float, t0: float) -> None:
        """Send audio at wall-clock pace: the chunk holding [t, t+c) leaves at t0+t+c."""
        for n, chunk in enumerate(chunks(pcm, chunk_s)):
            await asyncio.sleep(max(0.0, t0 + (n + 1) * chunk_s - time.monotonic()))
            await self.send({"type": "input_audio_buffer.append",
                             "audio": base64.b64encode(chunk).decode()})

    def sentence_turns(self, spoken: Spoken) -> dict[int, list[Turn]]:
        """Turns with both boundaries, grouped by the sentence they transcribe."""
        grouped: dict[int, list[Turn]] = {}
        for turn in self.turns.values():
            if turn.start_ms is not None and turn.end_ms is not None:
                index = sentence_index(turn.start_ms / 1000, turn.end_ms / 1000, spoken.spans)
                grouped.setdefault(index, []).append(turn)
        return grouped

    def done(self, spoken: Spoken) -> bool:
        """Every sentence has a turn and every turn an outcome (completed or failed)."""
        grouped = self.sentence_turns(spoken)
        return len(grouped) == len(spoken.spans) and all(
            t.ended_at for t in self.turns.values() if t.start_ms is not None)


class CaptionListener(SocketClient):
    """Another page in the room: its room socket's `caption` events, with arrival times."""

    def __init__(self, base_url: str, slug: str, session_id: str):
        self.base_url, self.slug, self.session_id = base_url, slug, session_id
        self.finals: dict[str, float] = {}  # item_id -> first final caption's arrival
        self.final_text: dict[str, str] = {}
        self.first_partial: dict[str, float] = {}
        self.socket: ClientConnection | None = None
        self.reader: asyncio.Task | None = None

    async def connect(self) -> None:
        netloc = self.base_url.split("://", 1)[1]
        self.socket = await connect(
            f"ws://{netloc}/ws/rooms/{self.slug}/", origin=self.base_url,
            additional_headers={"Cookie": f"sessionid={self.session_id}"}, max_size=2**22)
        hello = json.loads(await self.socket.recv())
        if hello.get("type") != "hello":
            raise RuntimeError(f"expected hello, got {hello}")
        self.reader = asyncio.create_task(self._read())

    async def _read(self) -> None:
        async for raw in self.socket:
            now = time.monotonic()
            event = json.loads(raw)
            if event.get("type") != "caption":
                continue
            item = event["item_id"]
            if event["final"]:
                self.finals.setdefault(item, now)
                self.final_text.setdefault(item, event["text"])
            elif event["text"].strip():  # words (an empty partial only opens the turn)
                self.first_partial.setdefault(item, now)


async def wait_for(predicate: Callable[[], bool], timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            return False
        await asyncio.sleep(0.05)
    return True


# ---------------------------------------------------------------------------------------------
# Servers


@dataclass
class Standin:
    """The OpenAI stand-in (tests/support/openai_standin.py) in its own process."""

    process: subprocess.Popen
    port: int
    api_key: str

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    @property
    def ws_base_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/v1"

    @classmethod
    def start(cls) -> Standin:
        if not (ROOT / "tests/support/openai_standin.py").exists():
            raise RuntimeError("tests/support/openai_standin.py is not there yet")
        port, api_key = free_port(), "sk-bench-standin"
        command = [sys.executable, "-m", "tests.support.openai_standin", "--port", str(port),
                   "--api-key", api_key]
        log = log_file("openai-standin-")
        with log.open("wb") as out:
            process = subprocess.Popen(command, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT,
                                       env={**os.environ, "PYTHONUNBUFFERED": "1"})
        wait_until(lambda: process.poll() is None and port_open(port), timeout=30,
                   what="OpenAI stand-in")
        return cls(process, port, api_key)

    def stop(self) -> None:
        stop_process(self.process)


@dataclass
class Setup:
    """One daphne on the chosen engine (plus the stand-in for --engine openai)."""

    database: LiveDatabase
    server: DaphneProcess
    standin: Standin | None
    model: str

    @classmethod
    def start(cls, args, extra_env: dict[str, str] | None = None) -> Setup:
        """daphne with `extra_env` over --model/--offline-processes (and the stand-in)."""
        env = {"LOG_LEVEL": "WARNING", "TRANSCRIPTION_ENGINE": args.engine}
        if args.model:
            env["OFFLINE_MODEL"] = args.model
        if args.offline_processes is not None:
            env["OFFLINE_PROCESSES"] = str(args.offline_processes)
        env.update(extra_env or {})
        standin = None
        if args.engine == "openai":
            standin = Standin.start()
            env.update(OPENAI_API_KEY=standin.api_key, OPENAI_BASE_URL=standin.base_url,
                       OPENAI_WS_BASE_URL=standin.ws_base_url)
        database = LiveDatabase.create()
        server = DaphneProcess.start(database.url, env)
        model = f"Whisper {model_name(env.get('OFFLINE_MODEL', ''))}"
        if args.engine == "offline":
            model += (f", OFFLINE_PROCESSES={env['OFFLINE_PROCESSES']}"
                      if "OFFLINE_PROCESSES" in env
                      else f", Parley's default OFFLINE_PROCESSES (nproc = {os.cpu_count()})")
            model += f", OFFLINE_THREADS={env.get('OFFLINE_THREADS', '1 (default)')}"
        return cls(database, server, standin, model)

    @property
    def ws_url(self) -> str:
        return f"ws://127.0.0.1:{self.server.port}/v1/realtime?intent=transcription"

    def describe(self) -> str:
        if self.standin is None:
            return f"one daphne, offline engine: {self.model}"
        return (f"one daphne, Parley's OpenAI engine -> the stand-in in its own process "
                f"({self.model}; daphne's CPU is Parley's own)")

    def stop(self) -> None:
        self.server.stop()
        if self.standin is not None:
            self.standin.stop()
        self.database.drop()


async def new_speaker(setup: Setup, slug: str, name: str) -> RealtimeSpeaker:
    """A guest of the room with a minted key, connected (session.created received)."""
    key = (await mint_guest_key(setup.server.base_url, slug, name))["value"]
    speaker = RealtimeSpeaker(setup.ws_url, key)
    await speaker.connect()
    return speaker


# ---------------------------------------------------------------------------------------------
# Part "captions": end-to-end caption latency


@dataclass
class SentenceTimes:
    """One sentence as a speaker's socket saw it (monotonic times; None when missing)."""

    true_start: float
    true_end: float
    vad_end: float | None  # wall time of the endpointer's audio_end_ms
    stopped_at: float | None
    completed_at: float | None
    items: list[str] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)  # error codes of its failed turns


def sentence_times(speaker: RealtimeSpeaker, spoken: Spoken, t0: float) -> list[SentenceTimes]:
    grouped = speaker.sentence_turns(spoken)
    out = []
    for index, (start, end) in enumerate(spoken.spans):
        turns = grouped.get(index, [])
        last = turns[-1] if turns else None
        out.append(SentenceTimes(
            t0 + start, t0 + end,
            t0 + last.end_ms / 1000 if last else None,
            last.stopped_at if last else None,
            last.completed_at if last and all(t.completed_at for t in turns) else None,
            [t.item_id for t in turns], [t.failure for t in turns if t.failed_at]))
    return out


def listener_latencies(listener: CaptionListener, times: list[SentenceTimes]):
    """(end of speech -> final caption, start of speech -> first partial) per sentence."""
    finals, partials = [], []
    for s in times:
        arrivals = [listener.finals.get(item) for item in s.items]
        if s.items and all(arrivals):
            finals.append(max(arrivals) - s.true_end)
        firsts = [listener.first_partial[i] for i in s.items if i in listener.first_partial]
        if firsts:
            partials.append(min(firsts) - s.true_start)
    return finals, partials


def gaps(later: list[float | None], earlier: list[float | None]) -> list[float]:
    return [a - b for a, b in zip(later, earlier, strict=True) if a is not None and b is not None]


async def part_captions(args) -> None:
    header("captions", "caption latency end to end (speaker -> /v1/realtime -> room sockets)")
    spoken = speak(SENTENCES[: args.sentences], "en-us", 1.5)
    threads = args.caption_threads.split(",") if args.engine == "offline" else [None]
    for count in threads:
        await captions_once(args, spoken, {"OFFLINE_THREADS": count} if count else {})


async def captions_once(args, spoken: Spoken, env: dict[str, str]) -> None:
    """One daphne (with `env`), one speaker, --listeners pages: the latencies."""
    setup = Setup.start(args, env)
    try:
        base = setup.server.base_url
        slug = await create_public_room(base, "captions bench")
        listeners = [CaptionListener(base, slug, await guest_session(base, slug, f"Page {n}"))
                     for n in range(1, args.listeners + 1)]
        for listener in listeners:
            await listener.connect()
        speaker = await new_speaker(setup, slug, "Speaker")
        print(f"load shape: {setup.describe()}; 1 speaker streams {len(spoken.spans)} sentences "
              f"(en-us, 1.5 s gaps, {spoken.seconds:.1f} s) over /v1/realtime in "
              f"{args.chunk_ms} ms chunks at wall-clock pace; {len(listeners)} listener(s) on "
              "the room socket", flush=True)
        t0 = time.monotonic() + 0.2
        await speaker.stream(spoken.pcm, args.chunk_ms / 1000, t0)

        def everyone_has_finals() -> bool:
            items = {i for s in sentence_times(speaker, spoken, t0) for i in s.items
                     if speaker.turns[i].completed_at}
            return speaker.done(spoken) and all(items <= set(lis.finals) for lis in listeners)

        await wait_for(everyone_has_finals, timeout=30)
        times = sentence_times(speaker, spoken, t0)
        report_captions(speaker, listeners, spoken, times)
        await speaker.close()
        for listener in listeners:
            await listener.close()
    finally:
        setup.stop()
    print(flush=True)


def report_captions(speaker: RealtimeSpeaker, listeners: list[CaptionListener], spoken: Spoken,
                    times: list[SentenceTimes]) -> None:
    print(f"{'who':10} {'sentences':>9} {'speech end -> final caption s p50/p95/max':>42} "
          f"{'speech start -> 1st partial s p50/p95':>38}", flush=True)
    every_final, every_partial = [], []
    for n, listener in enumerate(listeners, 1):
        finals, partials = listener_latencies(listener, times)
        every_final += finals
        every_partial += partials
        print(f"{f'page {n}':10} {len(finals):>4}/{len(times):<4} {summary(finals):>42} "
              f"{med(partials):>30.2f} / {pct(partials, 0.95):5.2f}  ({len(partials)} with a "
              "partial)", flush=True)
    print(f"{'all':10} {len(every_final):>4}/{len(times) * len(listeners):<4} "
          f"{summary(every_final):>42} {med(every_partial):>30.2f} / "
          f"{pct(every_partial, 0.95):5.2f}", flush=True)
    true_ends = [s.true_end for s in times]
    print("speaker's socket, p50 / p95 / max s:", flush=True)
    print(f"  true speech end -> endpointer's audio_end_ms (timeline): "
          f"{summary(gaps([s.vad_end for s in times], true_ends))}", flush=True)
    print(f"  true speech end -> speech_stopped arrives:               "
          f"{summary(gaps([s.stopped_at for s in times], true_ends))}", flush=True)
    print(f"  endpointer's audio_end_ms -> completed arrives:          "
          f"{summary(gaps([s.completed_at for s in times], [s.vad_end for s in times]))}",
          flush=True)
    print(f"  true speech end -> completed arrives:                    "
          f"{summary(gaps([s.completed_at for s in times], true_ends))}", flush=True)
    hearing = [listener.finals.get(s.items[-1]) if s.items else None
               for listener in listeners for s in times]
    completed = [s.completed_at for _ in listeners for s in times]
    relay_ms = [g * 1000 for g in gaps(hearing, completed)]
    print(f"  completed on speaker's socket -> final caption on a page: {med(relay_ms):.1f} / "
          f"{pct(relay_ms, 0.95):.1f} / {max(relay_ms, default=float('nan')):.1f} ms", flush=True)
    transcript = " ".join(speaker.turns[i].transcript for s in times for i in s.items)
    failed = [code for s in times for code in s.failures]
    print(f"turns: {sum(len(s.items) for s in times)} for {len(times)} sentences, "
          f"{len(failed)} failed ({', '.join(failed) or 'none'}); WER of final transcripts "
          f"{word_error_rate(' '.join(spoken.sentences), transcript):.1%}; errors on the "
          f"speaker's socket: {len(speaker.errors)}; speaker's socket open -> session.created "
          f"{speaker.connect_s:.2f} s", flush=True)
    p50, p95 = med(every_final), pct(every_final, 0.95)
    print(f"targets: end of speech -> final caption p50 {p50:.2f} s "
          f"({'met' if p50 < TARGET_FINAL_P50_S else 'NOT met'}: issue #12 asks under "
          f"{TARGET_FINAL_P50_S:g} s with one speaker); p95 {p95:.2f} s "
          f"({'within' if p95 <= TARGET_S else 'OVER'} Ofcom's {TARGET_S:g} s ceiling for live "
          "subtitles; broadcasters measured a ~5.6 s median)", flush=True)


# ---------------------------------------------------------------------------------------------
# Part "speakers": concurrent speakers on this machine


@dataclass
class SpeakersRow:
    speakers: int
    cpu: dict[str, float]  # process -> share of one core while everyone speaks
    connect_s: list[float]
    turns: int
    expected: int
    latencies: list[float]
    early: float
    late: float
    errors: int
    daphne_children: int
    overloaded: int  # turns ended .failed with transcription_overloaded
    other_failures: int  # turns ended .failed with another code
    with_partial: float  # share of turns that got partial text before their final
    wer: float  # of the completed transcripts against what their sentences said
    runaway: int  # completed sentences whose transcript ran away (see runaway())

    @property
    def sustained(self) -> bool:
        return (self.turns == self.expected and pct(self.latencies, 0.95) < TARGET_S
                and not self.late - self.early > GROWTH_LIMIT_S)


def speaker_audio(index: int, duration: float) -> Spoken:
    """About `duration` s of speech: voice and sentence order rotate per speaker."""
    order = SENTENCES[index * 5 % len(SENTENCES):] + SENTENCES[: index * 5 % len(SENTENCES)]
    picked, seconds = [], 1.5
    for sentence in order:
        if seconds >= duration - 1.5:
            break
        picked.append(sentence)
        seconds += 1.5 + len(sentence.split()) * 0.4  # ~150 words/min
    return speak(picked, VOICES[index % len(VOICES)], 1.5, lead=(index * STAGGER_S) % 1.5)


def process_tree(pid: int) -> list[int]:
    """`pid` and all its descendants (Linux /proc): daphne's decoder processes count as its."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError, IndexError, ValueError):
                parent = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
                children.setdefault(parent, []).append(int(entry.name))
    tree, todo = [], [pid]
    while todo:
        tree.append(todo.pop())
        todo += children.get(tree[-1], [])
    return tree


def cpu_by_process(pids: dict[str, int]) -> dict[str, dict[int, float]]:
    """CPU seconds so far per pid of each named process tree; the bench's own process only
    (daphne and the stand-in are its children)."""
    return {name: {each: cpu_seconds(each)
                   for each in ([pid] if name == "bench" else process_tree(pid))}
            for name, pid in pids.items()}


def processes(setup: Setup) -> dict[str, int]:
    pids = {"daphne": setup.server.process.pid}
    if setup.standin is not None:
        pids["stand-in"] = setup.standin.process.pid
    return {**pids, "bench": os.getpid()}


async def run_speakers(setup: Setup, count: int, audio: list[Spoken],
                       chunk_s: float) -> SpeakersRow:
    slug = await create_public_room(setup.server.base_url, f"speakers bench {count}")
    speakers = [await new_speaker(setup, slug, f"Speaker {n}") for n in range(count)]
    audio = audio[:count]
    pids = processes(setup)
    t0 = time.monotonic() + 0.3
    cpu0 = cpu_by_process(pids)
    busy0 = system_busy_seconds()
    await asyncio.gather(*(s.stream(a.pcm, chunk_s, t0) for s, a in zip(speakers, audio,
                                                                     strict=True)))
    wall = time.monotonic() - t0
    cpu1 = cpu_by_process(pids)
    cpu = {name: sum(seconds - cpu0[name].get(each, 0.0) for each, seconds in cpu1[name].items())
           / wall for name in pids}
    cpu["others"] = max(0.0, (system_busy_seconds() - busy0) / wall - sum(cpu.values()))
    await wait_for(lambda: all(s.done(a) for s, a in zip(speakers, audio, strict=True)),
                   timeout=60)
    latencies, halves, done, expected = [], ([], []), 0, 0
    said, heard = [], []
    half = t0 + max(a.seconds for a in audio) / 2
    for speaker, spoken in zip(speakers, audio, strict=True):
        expected += len(spoken.spans)
        for sentence, s in zip(spoken.sentences, sentence_times(speaker, spoken, t0),
                               strict=True):
            if s.completed_at is not None:
                done += 1
                latencies.append(s.completed_at - s.true_end)
                halves[s.true_end > half].append(s.completed_at - s.true_end)
                said.append(sentence)
                heard.append(" ".join(speaker.turns[i].transcript for i in s.items))
    turns = [t for s in speakers for t in s.turns.values() if t.start_ms is not None]
    overloaded = sum(t.failure == OVERLOADED for t in turns)
    errors = sum(len(s.errors) for s in speakers)
    for speaker in speakers:
        await speaker.close()
    return SpeakersRow(count, cpu, [s.connect_s for s in speakers], done, expected, latencies,
                       med(halves[0]), med(halves[1]), errors, len(cpu1["daphne"]) - 1,
                       overloaded, sum(bool(t.failed_at) for t in turns) - overloaded,
                       sum(bool(t.first_delta_at) for t in turns) / max(1, len(turns)),
                       *scored(said, heard)[:2])


async def part_speakers(args) -> None:
    header("speakers", "concurrent speakers sustained on this machine")
    sizes = [int(k) for k in args.speakers.split(",")]
    audio = [speaker_audio(n, args.duration) for n in range(max(sizes))]
    setup = Setup.start(args)
    try:
        print(f"load shape: {setup.describe()}; K speakers in one room, each streaming "
              f"~{args.duration:g} s of speech (voices {', '.join(VOICES)} in turn, 1.5 s gaps, "
              f"starts staggered by {STAGGER_S} s) over /v1/realtime in {args.chunk_ms} ms "
              "chunks at wall-clock pace, all at once; no listeners; latency = true end of "
              f"speech -> completed on the speaker's socket; sustained = all turns completed, "
              f"p95 < {TARGET_S:g} s, 2nd-half median <= 1st-half + {GROWTH_LIMIT_S} s",
              flush=True)
        names = [*processes(setup), "others"]
        columns = " ".join(f"{name + ' CPU':>12}" for name in names)
        print(f"{'K':>2} {columns} {'connect s':>9} "
              f"{'completed':>9} {'latency s p50/p95/max':>23} {'1st/2nd half p50':>16} "
              f"{'overloaded':>10} {'failed':>6} {'partial':>7} {'WER':>6} {'runaway':>7} "
              f"{'errors':>6} {'sustained':>9}", flush=True)
        best = 0
        for count in sizes:
            row = await run_speakers(setup, count, audio, args.chunk_ms / 1000)
            best = max(best, count) if row.sustained else best
            shares = " ".join(f"{row.cpu[n] * 100:>11.0f}%" for n in names)
            print(f"{count:>2} {shares} {max(row.connect_s):>9.2f} "
                  f"{row.turns:>4}/{row.expected:<4} {summary(row.latencies):>23} "
                  f"{row.early:>7.2f}/{row.late:<8.2f} {row.overloaded:>10} "
                  f"{row.other_failures:>6} {row.with_partial:>7.0%} {row.wer:>6.1%} "
                  f"{row.runaway:>7} {row.errors:>6} {'yes' if row.sustained else 'NO':>9}",
                  flush=True)
        print(f"largest K sustained: {best} (of {args.speakers}) on "
              f"{len(os.sched_getaffinity(0))} cores (shared with this bench's clients); "
              f"target: at least {TARGET_SPEAKERS} with p95 under {TARGET_S:g} s: "
              f"{'met' if best >= TARGET_SPEAKERS else 'NOT met'}", flush=True)
        print("CPU: utime+stime / wall while the speakers stream, % of one core, of each "
              "process tree (daphne's includes its decoder processes, "
              f"{row.daphne_children} in the last run); connect s: the slowest speaker's socket "
              f"open -> session.created; overloaded: turns ended .failed with {OVERLOADED}; "
              "failed: with another code; partial: share of turns with partial text before "
              "their outcome; WER: of the completed sentences; runaway: of them, transcripts "
              "with more than twice their words + 2 (Whisper looping)", flush=True)
    finally:
        setup.stop()


# ---------------------------------------------------------------------------------------------
# Part "proxy": what Parley's proxy adds per event (OpenAI engine, stand-in)


TURN_DETECTION_OFF = {"type": "session.update", "session": {
    "type": "transcription", "audio": {"input": {"turn_detection": None}}}}


SETTLE_S = 0.5  # after a sentence's appends, before its commit: the engine has decoded them


async def commit_one(speaker: RealtimeSpeaker, pcm: bytes) -> tuple[float, float] | None:
    """Appends of `pcm` at once, SETTLE_S, a commit: (commit -> committed, -> completed) s."""
    for chunk in chunks(pcm, 0.1):
        await speaker.send({"type": "input_audio_buffer.append",
                            "audio": base64.b64encode(chunk).decode()})
    await asyncio.sleep(SETTLE_S)
    before = set(speaker.turns)
    sent = time.monotonic()
    await speaker.send({"type": "input_audio_buffer.commit"})

    def new_turn() -> Turn | None:
        return next((t for i, t in speaker.turns.items() if i not in before and t.completed_at),
                    None)

    await wait_for(lambda: new_turn() is not None, timeout=30)
    turn = new_turn()
    if turn is None or turn.committed_at is None:
        return None
    return turn.committed_at - sent, turn.completed_at - sent


async def interleaved_commits(paths: dict[str, RealtimeSpeaker], spoken: Spoken,
                              rounds: int) -> dict[str, list[tuple[float, float] | None]]:
    """Each sentence (with 0.3 s of its silence either side) on every path in turn."""
    for speaker in paths.values():
        await speaker.send(TURN_DETECTION_OFF)
    out: dict[str, list] = {name: [] for name in paths}
    pad = round(0.3 * RATE) * 2
    for _ in range(rounds):
        for start, end in spoken.spans:
            pcm = spoken.pcm[max(0, round(start * RATE) * 2 - pad):round(end * RATE) * 2 + pad]
            for name, speaker in paths.items():
                out[name].append(await commit_one(speaker, pcm))
    return out


def transcript_wer(speaker: RealtimeSpeaker, sentences: list[str]) -> float:
    text = " ".join(t.transcript for t in speaker.turns.values() if t.completed_at)
    return word_error_rate(" ".join(sentences), text)


async def part_proxy(args) -> None:
    header("proxy", "proxy overhead per event: commit -> committed/completed, direct vs Parley")
    spoken = speak(SENTENCES, "en-us", 1.0)
    setup = Setup.start(args, {"TRANSCRIPTION_TURN_DETECTION": "none"})
    try:
        print(f"load shape: {setup.describe()}; {len(spoken.spans)} sentences (en-us) x "
              f"{args.proxy_rounds} rounds, each sent at once in 100 ms appends and committed "
              f"{SETTLE_S:g} s later (turn detection off), the next after its completed, "
              "alternating between two open sessions: (a) straight to the stand-in's "
              "/v1/realtime?intent=transcription with its API key, (b) through Parley's "
              "/v1/realtime with a minted key", flush=True)
        slug = await create_public_room(setup.server.base_url, "proxy bench")
        direct = RealtimeSpeaker(f"{setup.standin.ws_base_url}/realtime?intent=transcription",
                                 setup.standin.api_key)
        await direct.connect()
        paths = {"direct": direct, "through Parley": await new_speaker(setup, slug, "Speaker")}
        results = await interleaved_commits(paths, spoken, args.proxy_rounds)
        for speaker in paths.values():
            await speaker.close()
        report_proxy(paths, results, spoken.sentences * args.proxy_rounds)
    finally:
        setup.stop()


def report_proxy(paths: dict[str, RealtimeSpeaker],
                 results: dict[str, list[tuple[float, float] | None]],
                 sentences: list[str]) -> None:
    print(f"{'path':14} {'n':>3} {'commit -> committed ms p50/p95':>31} "
          f"{'commit -> completed ms p50/p95':>31} {'errors':>6} {'WER':>6}", flush=True)
    for name, values in results.items():
        ok = [v for v in values if v is not None]
        committed, completed = [v[0] * 1000 for v in ok], [v[1] * 1000 for v in ok]
        print(f"{name:14} {len(ok):>3} {med(committed):>23.1f} / {pct(committed, 0.95):5.1f} "
              f"{med(completed):>23.1f} / {pct(completed, 0.95):5.1f} "
              f"{len(paths[name].errors):>6} {transcript_wer(paths[name], sentences):>6.1%}",
              flush=True)
    direct, proxied = results["direct"], results["through Parley"]
    for index, event in ((0, "committed"), (1, "completed")):
        a = [d[index] for d in direct if d is not None]
        b = [p[index] for p in proxied if p is not None]
        paired = [(p[index] - d[index]) * 1000 for d, p in zip(direct, proxied, strict=True)
                  if d is not None and p is not None]
        print(f"proxy overhead per event ({event}): p50 {(med(b) - med(a)) * 1000:+.1f} ms, "
              f"p95 {(pct(b, 0.95) - pct(a, 0.95)) * 1000:+.1f} ms; paired per sentence "
              f"p50 {med(paired):+.1f} ms, p95 {pct(paired, 0.95):+.1f} ms", flush=True)


# ---------------------------------------------------------------------------------------------


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--parts", default=None,
                        help="engine,captions,speakers (offline default) or "
                             "captions,speakers,proxy (openai default)")
    parser.add_argument("--engine", choices=("offline", "openai"), default="offline")
    parser.add_argument("--models", default="",
                        help="engine part: comma-separated OFFLINE_MODEL values (\"\": bundled "
                             "tiny.en; a name needs the network once)")
    parser.add_argument("--model", default="", help="daphne's OFFLINE_MODEL (\"\": bundled)")
    parser.add_argument("--listeners", type=int, default=2)
    parser.add_argument("--sentences", type=int, default=10)
    parser.add_argument("--caption-threads", default="1,2",
                        help="captions part (offline): one run per OFFLINE_THREADS value")
    parser.add_argument("--speakers", default="1,2,3,4,5,6,8")
    parser.add_argument("--duration", type=float, default=20.0)
    parser.add_argument("--chunk-ms", type=int, default=100)
    parser.add_argument("--engine-gap", type=float, default=1.0)
    parser.add_argument("--proxy-rounds", type=int, default=2)
    parser.add_argument("--offline-processes", type=int, default=None,
                        help="daphne's OFFLINE_PROCESSES (decoder processes; 0: threads); "
                             "default: Parley's own default")
    parser.add_argument("--threads", type=int, default=len(os.sched_getaffinity(0)),
                        help="decoding threads in the engine part's thread check (nproc)")
    args = parser.parse_args()
    default = "engine,captions,speakers" if args.engine == "offline" else "captions,speakers,proxy"
    parts = (args.parts or default).split(",")
    if "proxy" in parts and args.engine != "openai":
        parser.error("the proxy part needs --engine openai")
    for part in parts:
        started = time.monotonic()
        if part == "engine":
            part_engine(args)
        else:
            run = {"captions": part_captions, "speakers": part_speakers, "proxy": part_proxy}[part]
            asyncio.run(run(args))
        print(f"part {part} took {time.monotonic() - started:.0f} s\n", flush=True)


if __name__ == "__main__":
    main()
