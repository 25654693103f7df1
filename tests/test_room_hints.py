"""Room context as hints for the offline engine (transcription/hints.py): what goes into
them, that a stream takes them at its start and again as the chat moves on, and that they
make names and jargon said in the meeting come out as the room writes them."""

from __future__ import annotations

import dataclasses

import pytest
from channels.db import database_sync_to_async

from rooms import services
from rooms.identity import Participant
from tests.support.sockets import close_db_connections
from tests.support.speech import speech_pcm24k
from transcription import engines, hints
from transcription.offline import OfflineConfig, SpeakerStream
from transcription.scoring import words_of

pytestmark = pytest.mark.transcription

CHUNK = 4800


def say(room, name: str, text: str) -> None:
    services.post_message(room, Participant(f"g:{name}", name), text, f"c-{name}-{text[:8]}")


@pytest.mark.django_db
def test_hints_are_the_room_name_its_people_and_recent_chat_newest_kept():
    room = services.create_room("Platform weekly", private=False)
    assert hints.room_hints(room.pk) == ""  # no chat: no hints (a name alone hurt)
    say(room, "Priya", "the cluster upgrade is tonight")
    say(room, "Okonkwo", "grafana alerts are noisy\u202e again\n")
    text = hints.room_hints(room.pk)
    assert text == ("Platform weekly. Priya, Okonkwo. the cluster upgrade is tonight. "
                    "grafana alerts are noisy again.")
    for n in range(40):
        say(room, "Priya", f"line {n} " + "x" * 60)
    long = hints.room_hints(room.pk)
    assert len(long) <= hints.MAX_HINT_CHARS and long.endswith(f"line 39 {'x' * 60}.")
    assert hints.room_hints(room.pk + 1000) == ""


def test_hints_make_the_rooms_words_come_out_as_written():
    """The same audio, decoded without and with the room's words: only with them are the
    name and the product spelled as the room spells them."""
    pcm = speech_pcm24k(["ask okonkwo about the grafana dashboards"], gap_seconds=0.5,
                        voice="en-gb")
    config = dataclasses.replace(OfflineConfig(), partial_interval=3600)
    heard = {}
    for label, given in (("without", ""), ("with", "Platform weekly. Priya, Okonkwo. "
                                                    "grafana alerts are noisy again.")):
        events: list[dict] = []
        stream = SpeakerStream(events.append, config, hints=given)
        for start in range(0, len(pcm), CHUNK):
            stream.feed(pcm[start:start + CHUNK])
        stream.finish()
        heard[label] = words_of(next(e["transcript"] for e in events
                                     if e["type"].endswith(".completed")))
    assert {"okonkwo", "grafana"} <= set(heard["with"]), heard
    assert not {"okonkwo", "grafana"} & set(heard["without"]), heard


@pytest.mark.django_db(transaction=True)
async def test_a_stream_takes_the_rooms_hints_and_follows_the_chat(settings, monkeypatch):
    settings.TRANSCRIPTION = {**settings.TRANSCRIPTION, "ENGINE": "offline",
                              "OFFLINE_PROCESSES": 0, "OFFLINE_ROOM_HINTS": True}
    monkeypatch.setattr("transcription.offline._shared", None)
    room = await database_sync_to_async(services.create_room)("Design review",
                                                              private=False)
    await database_sync_to_async(say)(room, "Siobhan", "postgres is at 80% disk")
    stream = engines.open_stream(lambda event: None, room_id=room.pk)
    try:
        await stream.start()
        assert stream.hints == "Design review. Siobhan. postgres is at 80% disk."
        await database_sync_to_async(say)(room, "Joaquin", "kubernetes notes are in the doc")
        monkeypatch.setattr(hints, "REFRESH_SECONDS", 0.0)
        await stream.feed(b"\0" * CHUNK)
        await stream.refresh
        assert stream.hints.endswith("kubernetes notes are in the doc.")
        hosted, _executor = stream.offline.streams[stream.key]
        assert hosted.hints == stream.hints  # the decoder has them too
    finally:
        await stream.close()
        monkeypatch.setattr("transcription.offline._shared", None)
        await close_db_connections()
