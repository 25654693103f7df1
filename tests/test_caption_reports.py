"""Client-reported captions (browser-direct modes): validated, shared, stored as `client`,
one stream per member."""

from __future__ import annotations

import pytest
from channels.db import database_sync_to_async
from channels.testing import WebsocketCommunicator

from project.asgi import application
from rooms import services
from tests.support.sockets import close_db_connections, connected, guest_session_key, receive_type
from transcription.models import CaptionSegment

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture(autouse=True)
async def cleanup():
    yield
    await close_db_connections()


async def reporter(slug: str, session_key: str) -> WebsocketCommunicator:
    socket = WebsocketCommunicator(
        application, f"/ws/captions/{slug}/",
        headers=[(b"host", b"localhost"), (b"origin", b"http://localhost"),
                 (b"cookie", f"sessionid={session_key}".encode())])
    assert (await socket.connect())[0]
    assert (await socket.receive_json_from())["type"] == "hello"
    return socket


TURN = [
    {"type": "input_audio_buffer.speech_started", "item_id": "item_1", "audio_start_ms": 100},
    {"type": "input_audio_buffer.speech_stopped", "item_id": "item_1", "audio_end_ms": 1900},
    {"type": "input_audio_buffer.committed", "item_id": "item_1", "previous_item_id": None},
    {"type": "conversation.item.input_audio_transcription.delta", "item_id": "item_1",
     "delta": "hello"},
    {"type": "conversation.item.input_audio_transcription.completed", "item_id": "item_1",
     "transcript": "hello there"},
]


async def test_reported_turns_are_shared_and_stored_as_client_reported():
    room = await database_sync_to_async(services.create_room)("Direct", private=False)
    listener, _ = await connected(room.slug, await guest_session_key(room, "Bob"))
    ann = await reporter(room.slug, await guest_session_key(room, "Ann"))
    for event in TURN:
        await ann.send_json_to(event)
    stored = await receive_type(ann, "caption.stored", timeout=5)
    assert stored["item_id"] == "item_1"
    segments = await database_sync_to_async(list)(CaptionSegment.objects.filter(room=room))
    assert [(s.text, s.speaker_name, s.engine) for s in segments] == [
        ("hello there", "Ann", "client")]
    caption = await receive_type(listener, "caption")
    while not caption["final"]:
        caption = await receive_type(listener, "caption")
    assert caption["text"] == "hello there" and caption["speaker"]["name"] == "Ann"
    assert caption["item_id"].endswith(":item_1")  # namespaced by speaker
    await ann.disconnect()
    await listener.disconnect()


BAD_REPORTS = [
    ({"type": "response.create"}, "unknown_type"),
    ({"type": "input_audio_buffer.committed"}, "missing_field"),
    ({"type": "input_audio_buffer.committed", "item_id": "x" * 41}, "invalid_field"),
    ({"type": "input_audio_buffer.speech_started", "item_id": "a", "audio_start_ms": -5},
     "invalid_field"),
    ({"type": "conversation.item.input_audio_transcription.completed", "item_id": "a",
      "transcript": "w " * 1001}, "text_too_long"),
    ({"type": "conversation.item.input_audio_transcription.delta", "item_id": "a",
      "delta": 7}, "invalid_field"),
]


async def test_bad_reports_get_errors_and_the_stream_goes_on():
    room = await database_sync_to_async(services.create_room)("Direct", private=False)
    ann = await reporter(room.slug, await guest_session_key(room, "Ann"))
    for report, code in BAD_REPORTS:
        await ann.send_json_to(report)
        error = await ann.receive_json_from()
        assert error["type"] == "error" and error["code"] == code, report
    await ann.send_json_to(TURN[-1])
    assert (await receive_type(ann, "caption.stored"))["item_id"] == "item_1"
    await ann.disconnect()


async def test_one_stream_per_member_and_a_rate_limit(settings):
    settings.PARLEY = {**settings.PARLEY, "CAPTION_RATE_BURST": 3,
                       "CAPTION_RATE_PER_SECOND": 0.001}
    room = await database_sync_to_async(services.create_room)("Direct", private=False)
    session = await guest_session_key(room, "Ann")
    first = await reporter(room.slug, session)
    second = await reporter(room.slug, session)
    assert (await first.receive_json_from())["type"] == "replaced"
    assert (await first.receive_output())["code"] == 4409
    for event in TURN[:3]:
        await second.send_json_to(event)
    await second.send_json_to(TURN[3])
    assert (await second.receive_json_from())["code"] == "rate_limited"
    await second.disconnect()


async def test_visitors_cannot_report():
    room = await database_sync_to_async(services.create_room)("Direct", private=False)
    socket = WebsocketCommunicator(application, f"/ws/captions/{room.slug}/",
                                   headers=[(b"host", b"localhost"),
                                            (b"origin", b"http://localhost")])
    await socket.connect()
    assert (await socket.receive_output())["code"] == 4403


async def test_a_reporter_cannot_date_captions_into_the_future():
    """audio_start_ms up to 24 h ahead pushed honest captions out of transcript.json: times
    run no further than the report stream has lasted (plus slack)."""
    from datetime import UTC, datetime, timedelta

    from transcription import reports

    room = await database_sync_to_async(services.create_room)("Direct", private=False)
    ann = await reporter(room.slug, await guest_session_key(room, "Ann"))
    for event in [
        {"type": "input_audio_buffer.speech_started", "item_id": "far", "audio_start_ms":
         86_399_999},
        {"type": "input_audio_buffer.speech_stopped", "item_id": "far", "audio_end_ms":
         86_399_999},
        {"type": "conversation.item.input_audio_transcription.completed", "item_id": "far",
         "transcript": "from the future"},
    ]:
        await ann.send_json_to(event)
    assert (await receive_type(ann, "caption.stored"))["item_id"] == "far"
    segment = await database_sync_to_async(CaptionSegment.objects.get)(room=room)
    latest = datetime.now(UTC) + timedelta(milliseconds=reports.AUDIO_AHEAD_SLACK_MS)
    assert segment.started_at <= latest and segment.ended_at <= latest
    await ann.disconnect()
