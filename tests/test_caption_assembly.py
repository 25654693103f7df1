"""SpeakerCaptions: partial text coalesced (never stored), finals stored with their turn's
times and order, failed turns announced."""

from __future__ import annotations

import pytest

from rooms import services
from transcription import captions
from transcription.models import CaptionSegment

pytestmark = pytest.mark.django_db(transaction=True)


class Clock:
    def __init__(self):
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def broadcasts(monkeypatch) -> list[dict]:
    sent: list[dict] = []

    async def record(room_id, event):
        sent.append(event)

    monkeypatch.setattr(captions, "broadcast_room", record)
    return sent


def turn_events(item: str, previous: str | None, start: int, end: int) -> list[dict]:
    return [
        {"type": "input_audio_buffer.speech_started", "item_id": item, "audio_start_ms": start},
        {"type": "input_audio_buffer.speech_stopped", "item_id": item, "audio_end_ms": end},
        {"type": "input_audio_buffer.committed", "item_id": item, "previous_item_id": previous},
    ]


async def test_partials_are_coalesced_and_finals_stored(broadcasts):
    room = await services_create_room()
    clock = Clock()
    sink = captions.SpeakerCaptions(room.pk, "g:ann", "Ann", "openai", clock=clock)
    for event in turn_events("item_a", None, 500, 2500):
        await sink.handle(event)
    for step, word in enumerate(["good ", "mor", "ning ", "every", "one"]):
        clock.now = step * 0.05  # a delta every 50 ms, as a streaming model sends them
        await sink.handle({"type": "conversation.item.input_audio_transcription.delta",
                           "item_id": "item_a", "delta": word})
    await sink.handle({"type": "conversation.item.input_audio_transcription.completed",
                       "item_id": "item_a", "transcript": "good morning everyone"})
    partials = [e["text"] for e in broadcasts if e["type"] == "caption" and not e["final"]]
    assert partials[0] == ""  # the turn opened
    assert partials[1:] == ["good ", "morning every"]  # t=0 and t=0.15; "one" superseded
    final = broadcasts[-1]
    assert final["final"] and final["text"] == "good morning everyone"
    segment = await CaptionSegment.objects.aget(room=room)
    assert segment.text == "good morning everyone" and segment.engine == "openai"
    assert (segment.ended_at - segment.started_at).total_seconds() == 2.0


async def test_a_failed_turn_is_announced_and_not_stored(broadcasts):
    room = await services_create_room()
    sink = captions.SpeakerCaptions(room.pk, "g:ann", "Ann", "openai")
    for event in turn_events("item_a", None, 0, 1000):
        await sink.handle(event)
    await sink.handle({"type": "conversation.item.input_audio_transcription.failed",
                       "item_id": "item_a", "error": {"code": "x"}})
    assert broadcasts[-1] == {**broadcasts[-1], "final": True, "failed": True, "text": ""}
    assert not await CaptionSegment.objects.filter(room=room).aexists()


async def test_engine_faults_reach_the_room_but_client_errors_do_not(broadcasts):
    room = await services_create_room()
    sink = captions.SpeakerCaptions(room.pk, "g:ann", "Ann", "openai")
    await sink.handle({"type": "error", "error": {"code": "invalid_base64", "message": "x"}})
    await sink.handle({"type": "error", "error": {"code": "upstream_connection_lost",
                                                   "message": "reconnecting"}})
    assert [(e["type"], e["code"]) for e in broadcasts] == [
        ("caption.error", "upstream_connection_lost")]


async def services_create_room():
    from channels.db import database_sync_to_async

    return await database_sync_to_async(services.create_room)("Captions", private=False)
