"""The room assistant's latency and CPU through Parley, against the OpenAI stand-in.

The spoken path (--parts voice): from the end of a spoken question to the first audio of the
answer.
- direct: the SDK to the stand-in, audio out and server VAD, the question's PCM appended in
  20 ms chunks at real-time pace, then silence: last speech chunk sent -> the first
  `response.output_audio.delta` received.
- parley: an aiortc member of the room's group call (daphne's in-process SFU worker) speaks
  the same PCM on its microphone; the assistant is in the call: last speech frame handed to
  aiortc -> the first loud frame of the assistant's track decoded by that member. So Parley's
  share is the way up (Opus, SFU, the assistant's jitter buffer and decoder, the mixer) and
  down (its voice track, Opus, SFU, the member's jitter buffer and decoder). Both include the
  stand-in's 500 ms of silence before its VAD ends the turn.
- CPU of an active assistant: daphne's CPU share over a window with the member in the call
  talking to nobody, then the same with the assistant in the call listening (it decodes and
  mixes the member's audio and streams it upstream), and per spoken answer.

The text path (--parts text):
- direct: the official SDK straight to the stand-in (a `?model=` conversation session):
  `conversation.item.create` + `response.create` -> the first `response.output_text.delta`.
- parley: a guest's room socket on one daphne: `chat.send` "@assistant ..." -> the first
  `assistant.delta` (and -> the assistant's stored `chat.message`), the assistant invited
  over HTTP as a page does. Parley's path adds storing and broadcasting the question, the
  fan-out hop to the session, the session's item/response events, and the delta broadcast.
Parley's added latency = parley - direct, per percentile, same stand-in, same run, questions
one at a time. CPU: daphne's CPU seconds per answer while answering, and its CPU share with
one assistant present and idle (its ticks: presence, lease, empty-room check).

    .venv/bin/python bench/assistant_latency.py --questions 30
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import fractions
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "tests.settings")

import httpx  # noqa: E402
import numpy as np  # noqa: E402
import websockets  # noqa: E402
from aiortc import AudioStreamTrack  # noqa: E402
from aiortc.mediastreams import MediaStreamError  # noqa: E402
from av import AudioFrame  # noqa: E402
from openai import AsyncOpenAI  # noqa: E402

from bench.fanout_common import cpu_seconds  # noqa: E402
from rooms.client import create_public_room, guest_session  # noqa: E402
from tests.support.openai_standin import Reply, standin_in_thread  # noqa: E402
from tests.support.servers import DaphneProcess, LiveDatabase  # noqa: E402
from tests.support.sfu_peers import SocketParticipant  # noqa: E402
from tests.support.speech import speech_pcm24k  # noqa: E402

KEY = "sk-bench-assistant"


def percentiles(samples: list[float]) -> dict[str, float]:
    ordered = sorted(samples)
    pick = lambda q: ordered[min(len(ordered) - 1, int(q * len(ordered)))]  # noqa: E731
    return {"p50": statistics.median(ordered), "p90": pick(0.9), "max": ordered[-1]}


def fmt(stats: dict[str, float]) -> str:
    return "  ".join(f"{k} {v * 1000:7.1f} ms" for k, v in stats.items())


async def direct(standin, questions: int) -> list[float]:
    client = AsyncOpenAI(api_key=KEY, base_url=standin.base_url,
                         websocket_base_url=standin.ws_base_url, max_retries=0)
    samples = []
    async with client.realtime.connect(model="gpt-realtime") as conn:
        await conn.session.update(session={"type": "realtime", "output_modalities": ["text"]})
        for n in range(questions):
            started = time.perf_counter()
            await conn.conversation.item.create(item={
                "type": "message", "role": "user",
                "content": [{"type": "input_text", "text": f"Ann: question {n}"}]})
            await conn.response.create()
            first = None
            while True:  # raw events, as Parley reads them (the SDK's typed parse is slow)
                event = json.loads(await conn.recv_bytes())
                if event["type"] == "response.output_text.delta" and first is None:
                    first = time.perf_counter() - started
                if event["type"] == "response.done":
                    break
            samples.append(first)
    return samples


def events_of(frame: str) -> list[dict]:
    event = json.loads(frame)
    return event["events"] if event.get("type") == "batch" else [event]


async def through_parley(server: DaphneProcess, questions: int) -> dict:
    base = server.base_url
    slug = await create_public_room(base, "Bench assistant")
    session_id = await guest_session(base, slug, "Ann")
    async with httpx.AsyncClient(base_url=base, cookies={"sessionid": session_id}) as http:
        await http.get(f"/rooms/{slug}/")
        http.headers["X-CSRFToken"] = http.cookies["csrftoken"]
        ws_url = base.replace("http://", "ws://") + f"/ws/rooms/{slug}/"
        async with websockets.connect(ws_url, additional_headers={
                "Cookie": f"sessionid={session_id}", "Origin": base}) as socket:
            await socket.recv()  # hello
            invited = await http.post(f"/rooms/{slug}/assistant/invite")
            assert invited.status_code == 201, invited.text
            first_delta, stored = [], []
            cpu_before, wall_before = cpu_seconds(server.process.pid), time.perf_counter()
            for n in range(questions):
                started = time.perf_counter()
                await socket.send(json.dumps({"type": "chat.send", "text":
                                              f"@assistant question {n}", "client_id": f"q{n}"}))
                first = None
                deadline = asyncio.get_running_loop().time() + 30
                while True:
                    done = False
                    try:
                        async with asyncio.timeout_at(deadline):
                            frame = await socket.recv()
                    except TimeoutError:
                        raise RuntimeError(f"no answer to question {n}; daphne's log:\n"
                                           f"{server.log()[-3000:]}") from None
                    for event in events_of(frame):
                        if event["type"] == "error":
                            raise RuntimeError(f"question {n} refused: {event}")
                        if event["type"] == "assistant.delta" and first is None:
                            first = time.perf_counter() - started
                        if event["type"] == "chat.message" and \
                                event["author"]["name"] == "Assistant":
                            stored.append(time.perf_counter() - started)
                            done = True
                    if done:
                        break
                first_delta.append(first)
            busy_cpu = cpu_seconds(server.process.pid) - cpu_before
            busy_wall = time.perf_counter() - wall_before
            # Idle: the assistant present, nobody asking.
            idle_start, idle_wall = cpu_seconds(server.process.pid), time.perf_counter()
            await asyncio.sleep(10)  # a measuring window, not synchronisation
            idle_cpu = cpu_seconds(server.process.pid) - idle_start
            idle_wall = time.perf_counter() - idle_wall
            await http.post(f"/rooms/{slug}/assistant/remove")
    return {"first_delta": first_delta, "stored": stored,
            "cpu_per_answer": busy_cpu / questions, "busy_share": busy_cpu / busy_wall,
            "idle_share": idle_cpu / idle_wall}


QUESTION = "what time is it"
LOUD_RMS = 500


class Microphone(AudioStreamTrack):
    """Silence, then what `say()` queued, in real time; notes when its speech ended."""

    def __init__(self) -> None:
        super().__init__()
        self.pending = bytearray()
        self.speech_left = 0
        self.speech_ended: float | None = None

    def say(self, pcm: bytes, speech_bytes: int) -> None:
        self.pending.extend(pcm)
        self.speech_left, self.speech_ended = speech_bytes, None

    async def recv(self):
        frame = await super().recv()
        chunk = bytes(self.pending[:960])
        del self.pending[:960]
        if self.speech_left > 0:
            self.speech_left -= len(chunk)
            if self.speech_left <= 0:
                self.speech_ended = time.perf_counter()
        speech = AudioFrame(format="s16", layout="mono", samples=480)
        speech.planes[0].update(chunk.ljust(960, b"\0"))
        speech.sample_rate, speech.pts = 24000, frame.pts // 2
        speech.time_base = fractions.Fraction(1, 24000)
        return speech


class Member(SocketParticipant):
    def __init__(self, *args) -> None:
        super().__init__(*args)
        self.microphone = Microphone()
        self.first_loud: float | None = None

    async def _publish(self) -> None:
        self.publish_pc.addTrack(self.microphone)
        await self.publish_pc.setLocalDescription(await self.publish_pc.createOffer())
        await self.send(type="publish", sdp=self.publish_pc.localDescription.sdp)

    async def _consume(self, pc, mid: str, track) -> None:
        with contextlib.suppress(MediaStreamError):
            while pc is self.subscribe_pc:
                frame = await track.recv()
                self.frames[mid] += 1
                if track.kind == "audio" and self.first_loud is None and mid == next(
                        (p["mids"].get("audio") for p in self.participants
                         if p["name"] == "Assistant"), None):
                    samples = frame.to_ndarray().astype(np.float64)
                    if np.sqrt(np.mean(samples ** 2)) > LOUD_RMS:
                        self.first_loud = time.perf_counter()
                await self._notify()


def speech_length(pcm: bytes) -> int:
    """Bytes up to the last 20 ms frame above -40 dBFS (where the speech truly ends)."""
    samples = np.frombuffer(pcm, dtype=np.int16).astype(np.float64)
    frames = samples[:len(samples) // 480 * 480].reshape(-1, 480)
    loud = np.nonzero(np.sqrt((frames ** 2).mean(axis=1)) > 328)[0]
    return int(loud[-1] + 1) * 960 if len(loud) else 0


async def direct_voice(standin, pcm: bytes, rounds: int) -> list[float]:
    client = AsyncOpenAI(api_key=KEY, base_url=standin.base_url,
                         websocket_base_url=standin.ws_base_url, max_retries=0)
    speech = speech_length(pcm)
    samples = []
    async with client.realtime.connect(model="gpt-realtime") as conn:
        await conn.session.update(session={"type": "realtime", "output_modalities": ["audio"]})
        for _ in range(rounds):
            standin.script.add(Reply(text="It is half past ten.", audio_ms=600))
            ended = first = None
            started = time.perf_counter()
            tail = pcm + bytes(48000 * 2)  # then 2 s of silence
            sender = asyncio.create_task(paced_append(conn, tail))
            while first is None:
                event = json.loads(await conn.recv_bytes())
                if event["type"] == "response.output_audio.delta":
                    first = time.perf_counter()
            ended = started + speech / 48000
            samples.append(first - ended)
            await sender
            while json.loads(await conn.recv_bytes())["type"] != "response.done":
                pass
    return samples


async def paced_append(conn, pcm: bytes) -> None:
    started = time.perf_counter()
    for n, offset in enumerate(range(0, len(pcm), 960)):
        await conn.send_raw(json.dumps({"type": "input_audio_buffer.append", "audio":
                            base64.b64encode(pcm[offset:offset + 960]).decode()}))
        await asyncio.sleep(max(0.0, started + (n + 1) * 0.02 - time.perf_counter()))


async def voice_through_parley(server: DaphneProcess, standin, pcm: bytes,
                               rounds: int) -> dict:
    base = server.base_url
    slug = await create_public_room(base, "Bench voice")
    session_id = await guest_session(base, slug, "Ann")
    member = Member(base, slug, session_id)
    pid = server.process.pid
    async with httpx.AsyncClient(base_url=base, cookies={"sessionid": session_id}) as http:
        await http.get(f"/rooms/{slug}/")
        http.headers["X-CSRFToken"] = http.cookies["csrftoken"]
        try:
            await member.connect()
            await member.wait_for(lambda: member.names() == {"Ann"})
            window = 10
            before, wall = cpu_seconds(pid), time.perf_counter()
            await asyncio.sleep(window)  # a measuring window, not synchronisation
            call_only = (cpu_seconds(pid) - before) / (time.perf_counter() - wall)
            assert (await http.post(f"/rooms/{slug}/assistant/invite")).status_code == 201
            await http.post(f"/rooms/{slug}/assistant/voice", json={"on": True})
            await member.wait_for(lambda: "Assistant" in member.names())
            before, wall = cpu_seconds(pid), time.perf_counter()
            await asyncio.sleep(window)  # a measuring window, not synchronisation
            listening = (cpu_seconds(pid) - before) / (time.perf_counter() - wall)
            samples = []
            before = cpu_seconds(pid)
            for _ in range(rounds):
                standin.script.add(Reply(text="It is half past ten.", audio_ms=600))
                member.first_loud = None
                member.microphone.say(pcm, speech_length(pcm))
                await member.wait_for(lambda: member.first_loud is not None, timeout=30)
                samples.append(member.first_loud - member.microphone.speech_ended)
                await asyncio.sleep(2.5)  # let the answer play out before the next question
            per_answer = (cpu_seconds(pid) - before) / rounds
        finally:
            await member.close()
            await http.post(f"/rooms/{slug}/assistant/remove")
    return {"first_audio": samples, "call_only": call_only, "listening": listening,
            "per_answer": per_answer}


async def main(args: argparse.Namespace) -> None:
    database = LiveDatabase.create()
    results: dict = {}
    try:
        with standin_in_thread(api_key=KEY) as standin:
            server = DaphneProcess.start(database.url, {
                "OPENAI_API_KEY": KEY, "OPENAI_BASE_URL": standin.base_url,
                "OPENAI_WS_BASE_URL": standin.ws_base_url,
                "PARLEY_RATE_BURST": "100000", "PARLEY_RATE_PER_SECOND": "100000",
                "ASSISTANT_RESPONSE_BURST": "100000",
                "ASSISTANT_RESPONSES_PER_MINUTE": "100000"})
            try:
                if "voice" in args.parts:
                    pcm = speech_pcm24k([QUESTION], gap_seconds=0.3)
                    results["direct_voice"] = await direct_voice(standin, pcm, args.rounds)
                    results["voice"] = await voice_through_parley(server, standin, pcm,
                                                                  args.rounds)
                if "text" in args.parts:
                    results["direct"] = await direct(standin, args.questions)
                    results["text"] = await through_parley(server, args.questions)
            finally:
                server.stop()
    finally:
        database.drop()
    print(f"# bench/assistant_latency.py, {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}"
          f", {platform.node()}, {os.cpu_count()} cores")
    if "voice" in results:
        voice = results["voice"]
        d, p = percentiles(results["direct_voice"]), percentiles(voice["first_audio"])
        print(f"## spoken: '{QUESTION}' (espeak-ng), {args.rounds} rounds, reply 0.6 s of tone;"
              " both include the stand-in VAD's 500 ms of silence")
        print(f"end of speech -> first audio, direct to the stand-in:     {fmt(d)}")
        print(f"end of speech -> first audio heard, through Parley's call: {fmt(p)}")
        print("Parley's added latency:                                   "
              + "  ".join(f"{k} {(p[k] - d[k]) * 1000:7.1f} ms" for k in d))
        print(f"daphne CPU, one member in the call, no assistant: {voice['call_only'] * 100:.1f}%"
              f" of a core; with the assistant in the call listening: "
              f"{voice['listening'] * 100:.1f}% (the assistant's share: "
              f"{(voice['listening'] - voice['call_only']) * 100:.1f}%); per spoken round "
              f"(question + answer + 2.5 s): {voice['per_answer'] * 1000:.0f} ms")
    if "text" not in results:
        return
    direct_samples, parley = results["direct"], results["text"]
    print(f"## text: {args.questions} questions each, one at a time, stand-in replies "
          "'You said: ...' (3 deltas)")
    d, p = percentiles(direct_samples), percentiles(parley["first_delta"])
    print(f"direct to the stand-in, first text delta:   {fmt(d)}")
    print(f"through Parley, first assistant.delta:      {fmt(p)}")
    print(f"through Parley, answer stored and broadcast: {fmt(percentiles(parley['stored']))}")
    print("Parley's added latency (first delta):       "
          + "  ".join(f"{k} {(p[k] - d[k]) * 1000:7.1f} ms" for k in d))
    print(f"daphne CPU per answer: {parley['cpu_per_answer'] * 1000:.1f} ms "
          f"({parley['busy_share'] * 100:.1f}% of a core while answering back to back)")
    print(f"daphne CPU with one idle assistant present: {parley['idle_share'] * 100:.2f}% "
          "of a core (ticks every ASSISTANT_TICK_SECONDS)")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--questions", type=int, default=30)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--parts", default="voice,text")
    asyncio.run(main(parser.parse_args()))
