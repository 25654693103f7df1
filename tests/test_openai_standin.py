"""The OpenAI Realtime stand-in behaves like the GA transcription API: driven through the
official SDK, a browser-style WebSocket and an aiortc WebRTC client, with real speech."""

from __future__ import annotations

import asyncio
import base64
import fractions
import json
import subprocess
import sys
import time
from array import array
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
from aiortc import AudioStreamTrack, RTCPeerConnection, RTCSessionDescription
from av import AudioFrame
from openai import AsyncOpenAI
from websockets.asyncio.client import ClientConnection
from websockets.asyncio.client import connect as ws_connect
from websockets.exceptions import ConnectionClosed, ConnectionClosedError, InvalidStatus

from tests.support.openai_standin import (
    Faults,
    StandinServer,
    split_deltas,
    standin_in_thread,
)
from tests.support.speech import speech_pcm24k
from transcription.scoring import words_of

pytestmark = pytest.mark.transcription

SENTENCES = ["good morning everyone", "please open the window", "thank you for listening"]
KEY = "sk-standin-test"
CHUNK = 4800  # 100 ms of PCM16 at 24 kHz
TRANSCRIBED = "conversation.item.input_audio_transcription."
COMPLETED = TRANSCRIBED + "completed"
FAILED = TRANSCRIBED + "failed"
DELTA = TRANSCRIBED + "delta"
TURN_VAD = ["input_audio_buffer.speech_started", "input_audio_buffer.speech_stopped",
            "input_audio_buffer.committed", "conversation.item.added",
            "conversation.item.done"]
TURN_MANUAL = TURN_VAD[2:]
MANUAL = {"type": "transcription", "audio": {"input": {"turn_detection": None}}}


@pytest.fixture(scope="module")
def two_sentences() -> bytes:
    return speech_pcm24k(SENTENCES[:2], gap_seconds=1.0)


@pytest.fixture(scope="module")
def sentence_audio() -> list[bytes]:
    """Each sentence alone, with a little silence around it (for manual commits)."""
    return [speech_pcm24k([sentence], gap_seconds=0.3) for sentence in SENTENCES]


@pytest.fixture
async def server():
    server = StandinServer(api_key=KEY)
    await server.start()
    yield server
    await server.stop()


@pytest.fixture(name="sdk")
async def sdk_factory(server):
    """Make SDK clients pointed at the stand-in (closed after the test)."""
    clients: list[AsyncOpenAI] = []

    def make(key: str = KEY) -> AsyncOpenAI:
        clients.append(AsyncOpenAI(api_key=key, base_url=server.base_url,
                                   websocket_base_url=server.ws_base_url, max_retries=0))
        return clients[-1]

    yield make
    for client in clients:
        await client.close()


def transcription(client: AsyncOpenAI, **kwargs: Any):
    """A transcription session as Parley opens it (no reconnect)."""
    return client.realtime.connect(extra_query={"intent": "transcription"},
                                   on_reconnecting=None, **kwargs)


def b64(pcm: bytes) -> str:
    return base64.b64encode(pcm).decode()


async def events_until(conn, done: Callable[[list[dict]], bool],
                       timeout: float = 30) -> list[dict]:
    """SDK events (as dicts) until `done` holds for what has arrived."""
    events: list[dict] = []
    async with asyncio.timeout(timeout):
        while not done(events):
            events.append((await conn.recv()).to_dict())
    return events


def count(kind: str, n: int = 1) -> Callable[[list[dict]], bool]:
    return lambda events: sum(e["type"] == kind for e in events) >= n


async def append_all(conn, pcm: bytes) -> None:
    for start in range(0, len(pcm), CHUNK):
        await conn.input_audio_buffer.append(audio=b64(pcm[start:start + CHUNK]))


class RawSocket:
    """A browser-style WebSocket: plain JSON events, subprotocol auth."""

    def __init__(self, ws: ClientConnection):
        self.ws = ws

    @classmethod
    async def open(cls, server: StandinServer, key: str = KEY,
                   query: str = "intent=transcription") -> RawSocket:
        ws = await ws_connect(f"{server.ws_base_url}/realtime?{query}", max_size=None,
                              subprotocols=["realtime", f"openai-insecure-api-key.{key}"])
        return cls(ws)

    async def send(self, **event: Any) -> None:
        await self.ws.send(json.dumps(event))

    async def next(self, kind: str | None = None, timeout: float = 20) -> dict:
        async with asyncio.timeout(timeout):
            while True:
                event = json.loads(await self.ws.recv())
                if kind is None or event["type"] == kind:
                    return event

    async def close(self) -> None:
        await self.ws.close()


def non_deltas(events: list[dict]) -> list[str]:
    return [e["type"] for e in events if e["type"] != DELTA]


def check_turn_events(events: list[dict], item_id: str, expected: str) -> None:
    """Deltas concatenate to the transcript, which is the spoken sentence."""
    deltas = [e["delta"] for e in events if e["type"] == DELTA and e["item_id"] == item_id]
    completed = next(e for e in events if e["type"] == COMPLETED and e["item_id"] == item_id)
    assert 1 <= len(deltas) <= 3
    assert "".join(deltas) == completed["transcript"]
    assert words_of(completed["transcript"]) == words_of(expected)
    assert completed["content_index"] == 0
    assert completed["usage"]["type"] == "duration" and completed["usage"]["seconds"] > 0


# --- Client secrets ------------------------------------------------------------------------

async def test_client_secret_is_minted_and_parsed_by_the_sdk(server, sdk):
    before = int(time.time())
    secret = await sdk().realtime.client_secrets.create(
        expires_after={"anchor": "created_at", "seconds": 120},
        session={"type": "transcription", "audio": {"input": {
            "transcription": {"model": "gpt-4o-mini-transcribe", "language": "en"},
            "turn_detection": None}}})
    assert secret.value.startswith("ek_")
    assert before + 120 <= secret.expires_at <= int(time.time()) + 120
    session = secret.session
    assert session.type == "transcription" and session.id.startswith("sess_")
    assert session.object == "realtime.transcription_session"
    assert session.audio.input.transcription.model == "gpt-4o-mini-transcribe"
    assert session.audio.input.transcription.language == "en"
    assert session.audio.input.turn_detection is None
    assert session.audio.input.format.type == "audio/pcm" and session.audio.input.format.rate \
        == 24000
    assert server.client_secrets[secret.value].session["audio"]["input"]["turn_detection"] \
        is None


async def test_client_secret_requests_are_validated(server, sdk):
    client = sdk()
    with pytest.raises(openai.BadRequestError) as short:
        await client.realtime.client_secrets.create(expires_after={"anchor": "created_at",
                                                                   "seconds": 5})
    assert short.value.status_code == 400
    assert short.value.code == "invalid_value" and short.value.param == "expires_after.seconds"

    with pytest.raises(openai.BadRequestError) as bad_format:
        await client.realtime.client_secrets.create(session={
            "type": "transcription",
            "audio": {"input": {"format": {"type": "audio/pcm", "rate": 16000}}}})
    assert bad_format.value.param == "session.audio.input.format"

    with pytest.raises(openai.BadRequestError) as streaming_with_vad:
        await client.realtime.client_secrets.create(session={
            "type": "transcription",
            "audio": {"input": {"transcription": {"model": "gpt-realtime-whisper"}}}})
    assert streaming_with_vad.value.param == "session.audio.input.turn_detection"

    with pytest.raises(openai.AuthenticationError) as bad_key:
        await sdk("sk-wrong").realtime.client_secrets.create()
    assert bad_key.value.status_code == 401 and bad_key.value.code == "invalid_api_key"

    minted = await client.realtime.client_secrets.create(session={"type": "transcription"})
    with pytest.raises(openai.AuthenticationError):  # an ek_ cannot mint more
        await sdk(minted.value).realtime.client_secrets.create()
    assert len(server.client_secrets) == 1


# --- Connecting ----------------------------------------------------------------------------

async def test_sdk_connects_with_bearer_and_updates_the_session(server, sdk):
    async with transcription(sdk()) as conn:
        created = (await conn.recv()).to_dict()
        assert created["type"] == "session.created"
        session = created["session"]
        assert session["type"] == "transcription"
        assert session["audio"]["input"] == {
            "format": {"type": "audio/pcm", "rate": 24000},
            "transcription": {"model": "gpt-4o-transcribe", "language": None, "prompt": ""},
            "turn_detection": {"type": "server_vad", "threshold": 0.5,
                               "prefix_padding_ms": 300, "silence_duration_ms": 500},
            "noise_reduction": None}
        await conn.session.update(session={"type": "transcription", "audio": {"input": {
            "transcription": {"model": "gpt-realtime-whisper", "language": "en"},
            "turn_detection": None, "noise_reduction": {"type": "near_field"}}}})
        updated = (await conn.recv()).to_dict()
    assert updated["type"] == "session.updated"
    audio_input = updated["session"]["audio"]["input"]
    assert audio_input["transcription"] == {"model": "gpt-realtime-whisper", "language": "en",
                                            "prompt": ""}
    assert audio_input["turn_detection"] is None
    assert audio_input["noise_reduction"] == {"type": "near_field"}
    record = server.sessions[0]
    assert record.auth == "bearer" and record.transport == "websocket"
    assert record.query == {"intent": "transcription"}
    assert record.headers["user-agent"].startswith("AsyncOpenAI/Python")
    assert "openai-beta" not in record.headers
    assert record.client_events == ["session.update"]
    assert record.server_events == ["session.created", "session.updated"]
    assert record.config["audio"]["input"]["turn_detection"] is None


async def test_browser_subprotocol_auth_with_standard_and_ephemeral_keys(server, sdk):
    browser = await RawSocket.open(server)
    assert browser.ws.subprotocol == "realtime"
    assert (await browser.next())["type"] == "session.created"
    await browser.close()

    secret = await sdk().realtime.client_secrets.create(
        expires_after={"anchor": "created_at", "seconds": 60},
        session={"type": "transcription", "audio": {"input": {
            "transcription": {"model": "whisper-1", "language": "en"}}}})
    browser = await RawSocket.open(server, key=secret.value)
    created = await browser.next()
    await browser.close()
    bound = created["session"]["audio"]["input"]["transcription"]
    assert bound["model"] == "whisper-1" and bound["language"] == "en"
    assert created["session"]["id"] != secret.session.id  # each session its own

    async with transcription(sdk(secret.value)) as conn:  # ek_ as a Bearer key
        assert (await conn.recv()).type == "session.created"
    assert [r.auth for r in server.sessions] == ["subprotocol", "ephemeral", "ephemeral"]
    assert "openai-insecure-api-key.***" in server.sessions[1].headers["sec-websocket-protocol"]
    assert secret.value not in json.dumps([r.to_json() for r in server.sessions])


async def test_bad_and_expired_keys_are_refused_at_the_handshake(server, sdk):
    with pytest.raises(InvalidStatus) as bad:
        async with transcription(sdk("sk-wrong")):
            pass
    assert bad.value.response.status_code == 401
    assert json.loads(bad.value.response.body)["error"]["code"] == "invalid_api_key"

    secret = await sdk().realtime.client_secrets.create(session={"type": "transcription"})
    server.client_secrets[secret.value].expires_at = time.time() - 1
    with pytest.raises(InvalidStatus) as expired:
        await RawSocket.open(server, key=secret.value)
    assert expired.value.response.status_code == 401
    error = json.loads(expired.value.response.body)["error"]
    assert error["code"] == "invalid_api_key" and "expired" in error["message"]
    assert error["type"] == "invalid_request_error" and error["param"] is None

    with pytest.raises(InvalidStatus) as no_purpose:
        await RawSocket.open(server, query="")
    assert no_purpose.value.response.status_code == 400
    assert server.sessions == []


async def test_beta_header_is_answered_with_beta_api_retired(server, sdk):
    async with transcription(sdk(), extra_headers={"OpenAI-Beta": "realtime=v1"}) as conn:
        error = (await conn.recv()).to_dict()
        with pytest.raises(ConnectionClosedError) as closed:
            await conn.recv()
    assert error["type"] == "error" and error["error"]["code"] == "beta_api_retired"
    assert closed.value.rcvd.code == 1008
    assert server.sessions[0].headers["openai-beta"] == "realtime=v1"
    assert server.sessions[0].server_events == ["error"]


async def test_model_url_opens_a_conversation_session(server, sdk):
    async with sdk().realtime.connect(model="gpt-realtime") as conn:
        created = (await conn.recv()).to_dict()
        await conn.session.update(session={"type": "transcription"})
        error = (await conn.recv()).to_dict()
        await conn.session.update(session={"type": "realtime", "instructions": "be brief"})
        updated = (await conn.recv()).to_dict()
    assert created["session"]["type"] == "realtime"
    assert created["session"]["model"] == "gpt-realtime"
    assert error["error"]["code"] == "invalid_value"
    assert error["error"]["param"] == "session.type"
    assert updated["type"] == "session.updated"
    assert updated["session"]["instructions"] == "be brief"
    assert server.sessions[0].kind == "realtime"
    assert server.sessions[0].query == {"model": "gpt-realtime"}


# --- Turns ---------------------------------------------------------------------------------

async def test_server_vad_turns_in_order_with_real_transcripts(server, two_sentences, sdk):
    async with transcription(sdk()) as conn:
        assert (await conn.recv()).type == "session.created"
        await append_all(conn, two_sentences)
        events = await events_until(conn, count(COMPLETED, 2))

    # Each turn's own events come in the documented order; turns may interleave.
    started = [e for e in events if e["type"] == "input_audio_buffer.speech_started"]
    assert len(started) == 2
    for turn in started:
        mine = [e for e in events if e.get("item_id") == turn["item_id"]
                or e.get("item", {}).get("id") == turn["item_id"]]
        assert non_deltas(mine) == [*TURN_VAD, COMPLETED]
        assert mine[-2]["type"] == DELTA
    committed = [e for e in events if e["type"] == "input_audio_buffer.committed"]
    assert committed[0]["previous_item_id"] is None
    assert committed[1]["previous_item_id"] == committed[0]["item_id"]
    stopped = [e for e in events if e["type"] == "input_audio_buffer.speech_stopped"]
    assert started[0]["audio_start_ms"] < stopped[0]["audio_end_ms"] \
        < started[1]["audio_start_ms"] < stopped[1]["audio_end_ms"] \
        <= len(two_sentences) // 48
    added = next(e for e in events if e["type"] == "conversation.item.added")
    assert added["item"] == {"id": committed[0]["item_id"], "object": "realtime.item",
                             "type": "message", "status": "completed", "role": "user",
                             "content": [{"type": "input_audio", "transcript": None}]}
    for turn, sentence in zip(committed, SENTENCES[:2], strict=True):
        check_turn_events(events, turn["item_id"], sentence)
    assert len({e["event_id"] for e in events}) == len(events)


async def test_manual_commits_clear_and_commit_empty(server, sentence_audio, sdk):
    async with transcription(sdk()) as conn:
        await conn.session.update(session=MANUAL)
        await conn.input_audio_buffer.commit()
        await conn.input_audio_buffer.append(audio=b64(b"\0\0" * 2400))  # 100 ms
        await conn.input_audio_buffer.clear()
        await append_all(conn, sentence_audio[2])
        await conn.input_audio_buffer.commit(event_id="commit-1")
        events = await events_until(conn, count(COMPLETED))
    kinds = non_deltas(events)
    assert kinds == ["session.created", "session.updated", "error",
                     "input_audio_buffer.cleared", *TURN_MANUAL, COMPLETED]
    error = events[2]["error"]
    assert error["code"] == "input_audio_buffer_commit_empty"
    assert error["type"] == "invalid_request_error" and error["event_id"] is None
    committed = next(e for e in events if e["type"] == "input_audio_buffer.committed")
    assert committed["previous_item_id"] is None
    check_turn_events(events, committed["item_id"], SENTENCES[2])
    usage = events[-1]["usage"]["seconds"]
    assert usage == round(len(sentence_audio[2]) / 48000, 3)  # the cleared audio is gone


async def test_bad_client_events_get_errors_and_the_session_continues(server):
    browser = await RawSocket.open(server)
    await browser.next("session.created")
    await browser.ws.send("{not json")
    assert (await browser.next())["error"]["code"] == "invalid_json"
    await browser.send(type="input_audio_buffer.append", audio="%%%", event_id="e1")
    error = (await browser.next())["error"]
    assert (error["code"], error["param"], error["event_id"]) == ("invalid_value", "audio", "e1")
    await browser.send(type="input_audio_buffer.append", audio=b64(b"\0\0\0"))
    assert (await browser.next())["error"]["param"] == "audio"
    await browser.send(type="transcription_session.update", session={}, event_id="e2")
    error = (await browser.next())["error"]
    assert (error["code"], error["param"], error["event_id"]) == ("invalid_value", "type", "e2")
    await browser.send(type="session.update", session={"type": "transcription", "audio": {
        "input": {"format": {"type": "audio/pcmu"}}}})
    error = (await browser.next())["error"]
    assert (error["code"], error["param"]) == ("invalid_value", "session.audio.input.format")
    await browser.send(type="session.update", session={"type": "transcription",
                                                       "input_audio_transcription": {}})
    assert (await browser.next())["error"]["code"] == "unknown_parameter"
    await browser.send(type="session.update", session={"type": "transcription", "audio": {
        "input": {"turn_detection": {"type": "semantic_vad"}}}})
    updated = await browser.next()
    await browser.close()
    assert updated["type"] == "session.updated"
    assert updated["session"]["audio"]["input"]["turn_detection"]["type"] == "semantic_vad"
    error_events = server.sessions[0].server_events
    assert error_events == ["session.created", *["error"] * 6, "session.updated"]


def test_deltas_split_words_and_concatenate():
    assert split_deltas("hello") == ["hello"]
    assert split_deltas("open the window") == ["open the", " window"]
    assert split_deltas("please open the window now") == ["please open", " the window", " now"]
    assert split_deltas("") == [""]


# --- Faults --------------------------------------------------------------------------------

async def two_manual_turns(sdk, sentence_audio, until=None) -> list[dict]:
    async with transcription(sdk()) as conn:
        await conn.session.update(session=MANUAL)
        for pcm in sentence_audio[:2]:
            await append_all(conn, pcm)
            await conn.input_audio_buffer.commit()
        return await events_until(conn, until or (
            lambda events: sum(e["type"] in (COMPLETED, FAILED) for e in events) == 2))


async def test_delay_ms_holds_transcriptions_back_but_keeps_order(server, two_sentences, sdk):
    server.faults.delay_ms = 1000  # far longer than the rest of the audio takes to process
    async with transcription(sdk()) as conn:
        await append_all(conn, two_sentences)
        events = await events_until(conn, count(COMPLETED, 2))
    committed = [e["item_id"] for e in events if e["type"] == "input_audio_buffer.committed"]
    completed = [e["item_id"] for e in events if e["type"] == COMPLETED]
    assert completed == committed
    # Held back: the second turn was committed before the first one's text arrived.
    kinds = [(e["type"], e.get("item_id")) for e in events]
    assert kinds.index(("input_audio_buffer.committed", committed[1])) \
        < kinds.index((DELTA, committed[0]))
    for item_id, sentence in zip(committed, SENTENCES[:2], strict=True):
        mine = [e for e in events if e.get("item_id") == item_id
                or e.get("item", {}).get("id") == item_id]
        assert non_deltas(mine) == [*TURN_VAD, COMPLETED]
        check_turn_events(events, item_id, sentence)


async def test_fail_turns_ends_that_turn_in_failed(server, sentence_audio, sdk):
    server.faults.fail_turns = {2}
    events = await two_manual_turns(sdk, sentence_audio)
    first, second = (e["item_id"] for e in events if e["type"] == "input_audio_buffer.committed")
    check_turn_events(events, first, SENTENCES[0])
    failed = next(e for e in events if e["type"] == FAILED)
    assert failed["item_id"] == second and failed["content_index"] == 0
    assert failed["error"]["code"] == "transcription_failed"
    assert not any(e["type"] in (COMPLETED, DELTA) and e["item_id"] == second for e in events)


async def test_out_of_order_swaps_completions_but_not_commits(server, sentence_audio, sdk):
    server.faults.out_of_order = True
    events = await two_manual_turns(sdk, sentence_audio)
    committed = [e for e in events if e["type"] == "input_audio_buffer.committed"]
    assert committed[0]["previous_item_id"] is None
    assert committed[1]["previous_item_id"] == committed[0]["item_id"]
    completed = [e["item_id"] for e in events if e["type"] == COMPLETED]
    assert completed == [committed[1]["item_id"], committed[0]["item_id"]]
    for turn, sentence in zip(committed, SENTENCES[:2], strict=True):
        check_turn_events(events, turn["item_id"], sentence)


async def test_drop_after_events_cuts_the_connection_without_a_close_frame(server, sdk):
    server.faults.drop_after_events = 2
    async with transcription(sdk()) as conn:
        await conn.session.update(session=MANUAL)
        seen = []
        with pytest.raises(ConnectionClosedError) as dropped:
            async for event in conn:
                seen.append(event.type)
    assert seen == ["session.created", "session.updated"]
    assert dropped.value.rcvd is None  # no close frame: an abrupt TCP close
    assert server.sessions[0].server_events == seen


async def test_session_seconds_expires_the_session(server, sdk):
    server.faults.session_seconds = 1.0
    async with transcription(sdk()) as conn:
        seen = [event.to_dict() async for event in conn]  # ends when the server closes
    assert [e["type"] for e in seen] == ["session.created", "error"]
    assert seen[1]["error"]["code"] == "session_expired"
    assert seen[1]["error"]["type"] == "invalid_request_error"
    assert server.sessions[0].closed


async def test_reject_key_refuses_every_key(server, sdk):
    server.faults.reject_key = True
    with pytest.raises(InvalidStatus) as refused:
        async with transcription(sdk()):
            pass
    assert refused.value.response.status_code == 401
    with pytest.raises(openai.AuthenticationError):
        await sdk().realtime.client_secrets.create()
    server.faults.reject_key = False
    async with transcription(sdk()) as conn:
        assert (await conn.recv()).type == "session.created"


async def test_quota_exceeded_refuses_new_sessions(server, sdk):
    server.faults.quota_exceeded = True
    async with transcription(sdk()) as conn:
        error = (await conn.recv()).to_dict()
        with pytest.raises(ConnectionClosed):
            await conn.recv()
    assert error["error"]["code"] == "insufficient_quota"
    assert error["error"]["type"] == "insufficient_quota"
    with pytest.raises(openai.RateLimitError) as quota:
        await sdk().realtime.client_secrets.create()
    assert quota.value.code == "insufficient_quota"


# --- Other processes -----------------------------------------------------------------------

def test_threaded_server_takes_faults_and_reports_sessions():
    with standin_in_thread(faults=Faults(delay_ms=5)) as server:
        url = f"http://127.0.0.1:{server.port}"
        reply = httpx.post(f"{url}/_standin/faults",
                           json={"fail_turns": [1, 3], "out_of_order": True})
        assert reply.status_code == 200
        assert server.faults.fail_turns == {1, 3} and server.faults.out_of_order
        assert server.faults.delay_ms == 5
        assert httpx.post(f"{url}/_standin/faults", json={"nope": 1}).status_code == 400

        async def one_session() -> None:
            browser = await RawSocket.open(server)
            await browser.next("session.created")
            await browser.close()

        asyncio.run(one_session())
        sessions = httpx.get(f"{url}/_standin/sessions").json()
    assert [s["auth"] for s in sessions] == ["subprotocol"]
    assert sessions[0]["server_events"] == ["session.created"]


def test_runs_standalone_as_a_module(unused_tcp_port):
    process = subprocess.Popen(
        [sys.executable, "-m", "tests.support.openai_standin", "--port", str(unused_tcp_port),
         "--api-key", "sk-demo"], stdout=subprocess.PIPE, text=True,
        cwd=Path(__file__).resolve().parents[1])
    try:
        assert "listening on" in process.stdout.readline()
        url = f"http://127.0.0.1:{unused_tcp_port}"
        assert httpx.post(f"{url}/_standin/faults", json={"quota_exceeded": True}).json()[
            "quota_exceeded"] is True
        reply = httpx.post(f"{url}/v1/realtime/client_secrets",
                           headers={"Authorization": "Bearer sk-demo"}, json={})
        assert reply.status_code == 429
    finally:
        process.terminate()
        process.wait(timeout=10)


# --- WebRTC --------------------------------------------------------------------------------

class SpeechTrack(AudioStreamTrack):
    """A microphone playing PCM16 24 kHz speech in real time, as 20 ms frames of 48 kHz."""

    def __init__(self, pcm24k: bytes):
        super().__init__()
        self.pcm = pcm24k
        self.start: float | None = None
        self.sent = 0  # samples at 48 kHz

    async def recv(self) -> AudioFrame:
        if self.start is None:
            self.start = time.time()
        else:  # paced by the media clock, like aiortc's own tracks
            await asyncio.sleep(self.start + self.sent / 48000 - time.time())
        offset = self.sent  # 24 kHz bytes = 48 kHz samples
        samples = array("h")
        samples.frombytes(self.pcm[offset:offset + 960].ljust(960, b"\0"))
        doubled = array("h", (sample for sample in samples for _ in range(2)))
        frame = AudioFrame(format="s16", layout="mono", samples=960)
        frame.planes[0].update(doubled.tobytes())
        frame.sample_rate, frame.pts = 48000, self.sent
        frame.time_base = fractions.Fraction(1, 48000)
        self.sent += 960
        return frame


async def offer_with_speech(pcm24k: bytes) -> tuple[RTCPeerConnection, Any,
                                                    asyncio.Queue[dict]]:
    """A browser-like peer: one audio track, then the `oai-events` channel, offer ready."""
    pc = RTCPeerConnection()
    pc.addTrack(SpeechTrack(pcm24k))
    channel = pc.createDataChannel("oai-events")
    events: asyncio.Queue[dict] = asyncio.Queue()
    channel.on("message", lambda message: events.put_nowait(json.loads(message)))
    await pc.setLocalDescription(await pc.createOffer())
    return pc, channel, events


async def test_webrtc_call_transcribes_the_audio_track(server, sentence_audio, sdk):
    secret = await sdk().realtime.client_secrets.create(session={"type": "transcription"})
    pc, channel, events = await offer_with_speech(sentence_audio[1] + b"\0" * 48000)
    try:
        async with httpx.AsyncClient() as http:
            reply = await http.post(f"{server.base_url}/realtime/calls",
                                    content=pc.localDescription.sdp,
                                    headers={"Authorization": f"Bearer {secret.value}",
                                             "Content-Type": "application/sdp"})
            refused = await http.post(f"{server.base_url}/realtime/calls", content="v=0",
                                      headers={"Authorization": "Bearer ek_unknown",
                                               "Content-Type": "application/sdp"})
        assert reply.status_code == 201
        assert reply.headers["content-type"].startswith("application/sdp")
        call_id = reply.headers["location"].rsplit("/", 1)[1]
        assert reply.headers["location"] == f"/v1/realtime/calls/{call_id}"
        assert call_id.startswith("rtc_")
        assert refused.status_code == 401
        assert refused.json()["error"]["code"] == "invalid_api_key"
        await pc.setRemoteDescription(RTCSessionDescription(reply.text, "answer"))
        # A server joins the call with the standard key (sideband) and sees the same turn.
        async with sdk().realtime.connect(call_id=call_id) as sideband:
            seen = [await asyncio.wait_for(events.get(), 10)]
            assert seen[0]["type"] == "session.created"
            channel.send(json.dumps({"type": "session.update", "session": {
                "type": "transcription",
                "audio": {"input": {"transcription": {"language": "en"}}}}}))
            async with asyncio.timeout(30):
                while seen[-1]["type"] != COMPLETED:
                    seen.append(await events.get())
            joined = await events_until(sideband, count(COMPLETED))
    finally:
        await pc.close()
    updated = [e for e in seen if e["type"] == "session.updated"]
    assert updated[0]["session"]["audio"]["input"]["transcription"]["language"] == "en"
    turn = [e for e in seen if e["type"] != "session.updated"]
    assert non_deltas(turn) == ["session.created", *TURN_VAD, COMPLETED]
    check_turn_events(seen, seen[-1]["item_id"], SENTENCES[1])
    assert joined[-1]["transcript"] == seen[-1]["transcript"]
    record = server.sessions[0]
    assert record.transport == "webrtc" and record.auth == "ephemeral"
    assert record.call_id == call_id and record.sideband_connections == 1
    assert record.client_events == ["session.update"]
    await server.wait_until(lambda: record.closed)  # the client hung up: the server closes


async def test_sdk_creates_and_hangs_up_a_call_with_the_standard_key(server, sdk):
    pc, _, _ = await offer_with_speech(b"")
    client = sdk()
    try:
        reply = await client.realtime.calls.with_raw_response.create(
            sdp=pc.localDescription.sdp, session={"type": "realtime", "model": "gpt-realtime"})
        answer = reply.content.decode()
        call_id = reply.headers["location"].rsplit("/", 1)[1]
        assert reply.status_code == 201 and answer.startswith("v=0")
        await client.realtime.calls.hangup(call_id)
    finally:
        await pc.close()
    record = server.sessions[0]
    assert (record.kind, record.auth, record.call_id) == ("realtime", "bearer", call_id)
    assert record.config["model"] == "gpt-realtime"
    assert record.closed
