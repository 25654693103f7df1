"""The assistant in a group call, through daphne's in-process SFU worker and the OpenAI
stand-in: an aiortc participant speaks a question, receives the assistant's audio track and
decodes its answer (the stand-in's tone), the answer's words become captions attributed to
the assistant; speaking over the next answer stops its audio within a bound of audio
(INTERRUPT_BOUND_FRAMES), measured in received frames, not wall-clock time."""

from __future__ import annotations

import asyncio
import contextlib
import fractions

import httpx
import numpy as np
import pytest
from aiortc import AudioStreamTrack
from aiortc.mediastreams import MediaStreamError
from av import AudioFrame

from rooms.client import create_public_room, guest_session
from tests.support.openai_standin import Reply, standin_in_thread
from tests.support.sfu_peers import SocketParticipant
from tests.support.speech import speech_pcm24k

pytestmark = [pytest.mark.sfu, pytest.mark.multiprocess]

KEY = "sk-standin-assistant"
LOUD_RMS = 500  # the stand-in's tone is ~5,600 RMS; Opus's silence is ~0
# Frames (20 ms) of the answer a participant may still hear once it has started speaking
# over it: its speech reaching the stand-in (encode, SFU, the assistant's jitter buffer and
# decoder, a 40 ms mixing period), the VAD's onset (60 ms of loud frames, later on a soft
# first sound), speech_started back to Parley, and what is already on its way down (the
# SFU's and the listener's queues and jitter buffer). Bound 1.5 s; measured 0.74-0.78 s here.
INTERRUPT_BOUND_FRAMES = 75


class Microphone(AudioStreamTrack):
    """Silence, then whatever `say()` queued, in real time (PCM16 mono 24 kHz)."""

    def __init__(self) -> None:
        super().__init__()
        self.pending = bytearray()

    def say(self, pcm: bytes) -> None:
        self.pending.extend(pcm)

    async def recv(self):
        frame = await super().recv()  # aiortc's paced 20 ms of silence
        chunk = bytes(self.pending[:960])
        del self.pending[:960]
        speech = AudioFrame(format="s16", layout="mono", samples=480)
        speech.planes[0].update(chunk.ljust(960, b"\0"))
        speech.sample_rate, speech.pts = 24000, frame.pts // 2
        speech.time_base = fractions.Fraction(1, 24000)
        return speech


class Listener(SocketParticipant):
    """A participant with a scripted microphone that counts the loud frames it receives."""

    def __init__(self, *args) -> None:
        super().__init__(*args)
        self.microphone = Microphone()
        self.loud: dict[str, int] = {}

    async def _publish(self) -> None:
        self.publish_pc.addTrack(self.microphone)
        await self.publish_pc.setLocalDescription(await self.publish_pc.createOffer())
        await self.send(type="publish", sdp=self.publish_pc.localDescription.sdp)

    async def _consume(self, pc, mid: str, track) -> None:
        with contextlib.suppress(MediaStreamError):
            while pc is self.subscribe_pc:
                frame = await track.recv()
                self.frames[mid] += 1
                if track.kind == "audio":
                    samples = frame.to_ndarray().astype(np.float64)
                    if np.sqrt(np.mean(samples ** 2)) > LOUD_RMS:
                        self.loud[mid] = self.loud.get(mid, 0) + 1
                await self._notify()

    def assistant_mid(self) -> str | None:
        return next((p["mids"].get("audio") for p in self.participants
                     if p["name"] == "Assistant"), None)

    def heard(self) -> int:
        return self.loud.get(self.assistant_mid() or "", 0)


async def poll_json(http: httpx.AsyncClient, path: str, check, timeout: float = 30):
    async with asyncio.timeout(timeout):
        while True:
            body = (await http.get(path)).json()
            if check(body):
                return body
            await asyncio.sleep(0.2)  # polling an endpoint, between looks


async def test_spoken_question_answered_aloud_with_captions_and_interrupted(daphne_factory):
    with standin_in_thread(api_key=KEY) as standin:
        server = daphne_factory(OPENAI_API_KEY=KEY, OPENAI_BASE_URL=standin.base_url,
                                OPENAI_WS_BASE_URL=standin.ws_base_url)
        standin.script.add(Reply(text="It is half past ten.", audio_ms=800),
                           Reply(text="Here is a long answer nobody waits for.",
                                 audio_ms=6000),
                           Reply(text="Sorry, go ahead.", audio_ms=400))
        slug = await create_public_room(server.base_url, "Voice")
        session_id = await guest_session(server.base_url, slug, "Ann")
        ann = Listener(server.base_url, slug, session_id)
        async with httpx.AsyncClient(base_url=server.base_url,
                                     cookies={"sessionid": session_id}) as http:
            await http.get(f"/rooms/{slug}/")
            http.headers["X-CSRFToken"] = http.cookies["csrftoken"]
            try:
                await ann.connect()  # in the room's call (and so present for the room)
                assert (await http.post(f"/rooms/{slug}/assistant/invite")).status_code == 201
                voice = await http.post(f"/rooms/{slug}/assistant/voice", json={"on": True})
                assert voice.status_code == 202
                await ann.wait_for(lambda: ann.assistant_mid() is not None
                                   and ann.frames[ann.assistant_mid()] >= 10)
                assert ann.heard() == 0  # silence until it answers

                ann.microphone.say(speech_pcm24k(["what time is it"], gap_seconds=0.3))
                await ann.wait_for(lambda: ann.heard() >= 20)  # 0.4 s of the answer's tone
                transcript = await poll_json(
                    http, f"/rooms/{slug}/transcript.json",
                    lambda body: any(s["speaker"]["name"] == "Assistant"
                                     for s in body["segments"]))
                spoken = [s["text"] for s in transcript["segments"]
                          if s["speaker"]["name"] == "Assistant"]
                assert spoken == ["It is half past ten."]

                first = ann.heard()
                ann.microphone.say(speech_pcm24k(["tell me everything"], gap_seconds=0.3))
                await ann.wait_for(lambda: ann.heard() >= first + 20)  # the long answer plays
                at_interrupt = ann.heard()
                ann.microphone.say(speech_pcm24k(["stop please"], gap_seconds=0))  # speech at once
                await asyncio.wrap_future(asyncio.run_coroutine_threadsafe(standin.wait_until(
                    lambda: "response.cancel" in standin.sessions[0].client_events
                    or standin.sessions[0].server_events.count("response.done") >= 3,
                    timeout=30), standin.loop))
                heard_after = ann.heard() - at_interrupt
                # Uninterrupted, the long answer would have gone on for 300 frames (6 s).
                assert heard_after <= INTERRUPT_BOUND_FRAMES, heard_after

                assert (await http.post(f"/rooms/{slug}/assistant/remove")).status_code == 200
                await ann.wait_for(lambda: "Assistant" not in ann.names())  # left the call
            finally:
                await ann.close()
                await http.post(f"/rooms/{slug}/assistant/remove")
