"""Parley's OpenAI engine against the stand-in, through the official SDK: the proxy socket
relays the API's events, captions are shared and stored, and every fault knob of the stand-in
ends in a clear error, a recovery, or both."""

from __future__ import annotations

import base64
from contextlib import asynccontextmanager

import pytest
from channels.db import database_sync_to_async
from channels.testing import WebsocketCommunicator

from project.asgi import application
from rooms import services
from tests.support.openai_standin import StandinServer
from tests.support.servers import free_port
from tests.support.sockets import close_db_connections, connected, guest_session_key
from tests.support.speech import said, speech_pcm24k
from transcription import keys
from transcription.models import CaptionSegment

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.transcription]

SENTENCES = ["good morning everyone", "please open the window", "thank you for listening"]
API_KEY = "sk-standin-parley"
COMPLETED = "conversation.item.input_audio_transcription.completed"
FAILED = "conversation.item.input_audio_transcription.failed"
CHUNK = 4800  # 100 ms


@pytest.fixture(scope="module")
def speech() -> list[bytes]:
    """Each sentence on its own, with silence around it."""
    return [speech_pcm24k([sentence], gap_seconds=1.0) for sentence in SENTENCES]


@pytest.fixture
async def standin(settings):
    server = StandinServer(api_key=API_KEY)
    await server.start()
    settings.OPENAI_API_KEY = API_KEY
    settings.OPENAI_BASE_URL = server.base_url
    settings.OPENAI_WS_BASE_URL = server.ws_base_url
    settings.TRANSCRIPTION = {**settings.TRANSCRIPTION, "ENGINE": "auto", "LANGUAGE": "en"}
    yield server
    await server.stop()
    await close_db_connections()


@asynccontextmanager
async def speaker_in(room, name: str = "Ann"):
    key = await database_sync_to_async(keys.mint_key)(
        keys.KeyGrant(room.pk, f"g:{name}", name))
    socket = WebsocketCommunicator(application, "/v1/realtime?intent=transcription",
                                   headers=[(b"host", b"localhost"),
                                            (b"authorization", f"Bearer {key[0]}".encode())])
    assert (await socket.connect())[0]
    try:
        yield socket
    finally:
        await socket.disconnect()


async def say(socket, pcm: bytes) -> None:
    for start in range(0, len(pcm), CHUNK):
        await socket.send_json_to({"type": "input_audio_buffer.append",
                                   "audio": base64.b64encode(pcm[start:start + CHUNK]).decode()})


async def events_until(socket, done, timeout: float = 20) -> list[dict]:
    events = []
    while not events or not done(events):
        events.append(await socket.receive_json_from(timeout=timeout))
    return events


def ends(count: int):
    return lambda events: sum(e["type"] in (COMPLETED, FAILED) for e in events) >= count


@database_sync_to_async
def new_room():
    return services.create_room("Captions", private=False)


@database_sync_to_async
def stored(room) -> list[CaptionSegment]:
    return list(CaptionSegment.objects.filter(room=room).order_by("started_at"))


async def test_speech_is_transcribed_by_openai_shared_and_stored(standin, speech):
    room = await new_room()
    listener, _ = await connected(room.slug, await guest_session_key(room, "Bob"))
    async with speaker_in(room) as ann:
        created = await ann.receive_json_from(timeout=10)
        assert created["type"] == "session.created"
        # Announced once Parley's own settings are in force: the transcription session.
        assert created["session"]["audio"]["input"]["transcription"]["model"] == \
            "gpt-4o-transcribe"
        await say(ann, b"".join(speech))
        events = await events_until(ann, ends(3))
    # Each turn's events in the documented order (turns may interleave: the next one can
    # start before the previous one's transcript arrives).
    for item in {e["item_id"] for e in events if e["type"] == COMPLETED}:
        kinds = [e["type"] for e in events if e.get("item_id") == item]
        assert [k for k in kinds if not k.endswith(".delta")] == [
            "input_audio_buffer.speech_started", "input_audio_buffer.speech_stopped",
            "input_audio_buffer.committed", COMPLETED]
    transcripts = [e["transcript"] for e in events if e["type"] == COMPLETED]
    assert said(transcripts) == SENTENCES

    record = standin.sessions[0]
    assert record.auth == "bearer" and record.query.get("intent") == "transcription"
    segments = await stored(room)
    assert said([s.text for s in segments]) == SENTENCES
    assert {s.engine for s in segments} == {"openai"} and {s.speaker_name for s in segments} \
        == {"Ann"}
    assert [s.previous_item_id for s in segments[1:]] == [s.item_id for s in segments[:-1]]
    finals = []
    while len(finals) < 3:
        caption = await listener.receive_json_from(timeout=10)
        if caption["type"] == "caption" and caption["final"]:
            finals.append(caption["text"])
    assert said(finals) == SENTENCES
    await listener.disconnect()


async def test_failed_turns_are_reported_and_not_stored(standin, speech):
    standin.faults.fail_turns = {1}
    room = await new_room()
    async with speaker_in(room) as ann:
        await ann.receive_json_from(timeout=10)
        await say(ann, speech[0] + speech[1])
        events = await events_until(ann, ends(2))
    ends_seen = [e["type"] for e in events if e["type"] in (COMPLETED, FAILED)]
    assert ends_seen == [FAILED, COMPLETED]
    assert said([s.text for s in await stored(room)]) == [SENTENCES[1]]


async def test_out_of_order_completions_keep_the_spoken_order(standin, speech):
    standin.faults.out_of_order = True
    standin.faults.delay_ms = 50
    room = await new_room()
    async with speaker_in(room) as ann:
        await ann.receive_json_from(timeout=10)
        await say(ann, speech[0] + speech[1])
        events = await events_until(ann, ends(2))
    completed = [e["transcript"] for e in events if e["type"] == COMPLETED]
    assert said(completed) == [SENTENCES[1], SENTENCES[0]]  # as the stand-in sent them
    segments = await stored(room)
    # Stored in spoken order, chained by previous_item_id.
    assert said([s.text for s in segments]) == SENTENCES[:2]
    assert segments[1].previous_item_id == segments[0].item_id


async def test_a_dropped_connection_is_reported_and_recovered(standin, speech):
    room = await new_room()
    async with speaker_in(room) as ann:
        await ann.receive_json_from(timeout=10)
        await say(ann, speech[0])
        await events_until(ann, ends(1))
        standin.faults.drop_after_events = 0  # the next event it would send drops instead
        await say(ann, speech[1])
        events = await events_until(ann, lambda ev: any(
            e["type"] == "error" for e in ev))
        error = next(e for e in events if e["type"] == "error")["error"]
        assert error["code"] == "upstream_connection_lost"
        standin.faults.drop_after_events = None
        await standin.wait_for_sessions(2)
        await say(ann, speech[2])
        events = await events_until(ann, lambda ev: any(
            e["type"] == COMPLETED for e in ev))
    assert said([e["transcript"] for e in events if e["type"] == COMPLETED]) == [SENTENCES[2]]
    texts = [s.text for s in await stored(room)]
    assert said(texts[0]) == SENTENCES[0] and said(texts[-1]) == SENTENCES[2]


async def test_an_expired_session_is_replaced_without_bothering_the_user(standin, speech):
    standin.faults.session_seconds = 0.5
    room = await new_room()
    async with speaker_in(room) as ann:
        await ann.receive_json_from(timeout=10)
        await standin.wait_for_sessions(2)  # the first expired; Parley opened another
        standin.faults.session_seconds = 3600
        await say(ann, speech[0])
        events = await events_until(ann, ends(1))
    assert not [e for e in events if e["type"] == "error"]
    assert said([s.text for s in await stored(room)]) == [SENTENCES[0]]


async def test_rotation_keeps_times_and_turn_order_continuous(standin, speech, settings):
    room = await new_room()
    async with speaker_in(room) as ann:
        await ann.receive_json_from(timeout=10)
        await say(ann, speech[0])
        await events_until(ann, ends(1))
        settings.TRANSCRIPTION = {**settings.TRANSCRIPTION, "ROTATE_SECONDS": 0}
        await say(ann, speech[1][:CHUNK])  # leading silence: a pause, so the rotation happens
        await standin.wait_for_sessions(2)
        settings.TRANSCRIPTION = {**settings.TRANSCRIPTION, "ROTATE_SECONDS": 3300}
        await say(ann, speech[1][CHUNK:])
        await events_until(ann, ends(1))
    segments = await stored(room)
    assert said([s.text for s in segments]) == SENTENCES[:2]
    assert segments[1].previous_item_id == segments[0].item_id
    assert segments[0].ended_at <= segments[1].started_at  # audio time runs on


@pytest.mark.parametrize("fault, code", [("reject_key", "upstream_auth_failed"),
                                         ("quota_exceeded", "upstream_quota_exceeded")])
async def test_refusals_end_the_session_with_a_clear_error(standin, fault, code):
    setattr(standin.faults, fault, True)
    room = await new_room()
    async with speaker_in(room) as ann:
        event = await ann.receive_json_from(timeout=10)
        assert event["type"] == "error" and event["error"]["code"] == code
        assert (await ann.receive_output(timeout=10))["code"] == 4502


async def test_an_unreachable_openai_is_a_clear_error(settings):
    settings.OPENAI_API_KEY = API_KEY
    settings.OPENAI_BASE_URL = f"http://127.0.0.1:{free_port()}/v1"
    settings.OPENAI_WS_BASE_URL = ""
    room = await new_room()
    async with speaker_in(room) as ann:
        event = await ann.receive_json_from(timeout=10)
        assert event["error"]["code"] == "upstream_unavailable"
        assert (await ann.receive_output(timeout=10))["code"] == 4502
    await close_db_connections()


async def test_hostile_frames_leave_no_upstream_connection_open(standin):
    """A member's frames that used to crash the socket (1011) left its OpenAI connection open
    on the server's key for good: now they are refused, and closing ends the connection."""
    from transcription.openai_engine import LIVE_UPSTREAMS

    room = await database_sync_to_async(services.create_room)("Talk", private=False)
    before = len(LIVE_UPSTREAMS)
    for hostile in ('{"type":"session.update","session":{"audio":5}}',
                    '{"type":"session.update","session":{"audio":{"input":[]}}}',
                    '{"type":"session.update","session":{"x":' + "[" * 3000 + "]" * 3000 + "}}"):
        async with speaker_in(room) as socket:
            assert (await socket.receive_json_from(timeout=10))["type"] == "session.created"
            assert len(LIVE_UPSTREAMS) == before + 1
            await socket.send_to(text_data=hostile)
            error = await socket.receive_json_from(timeout=10)
            assert error["type"] == "error", error
        assert len(LIVE_UPSTREAMS) == before
