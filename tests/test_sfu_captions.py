"""Live captions in a group call: the worker transcribes a participant's forwarded audio."""

from __future__ import annotations

import pytest
from channels.db import database_sync_to_async

from rooms import services
from tests.support.sfu_peers import Participant, SpeechMicrophone, room_with_router
from tests.support.sockets import RoomListener, close_db_connections
from tests.support.speech import speech_pcm24k
from transcription.models import CaptionSegment

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.sfu,
              pytest.mark.transcription]


@pytest.fixture(autouse=True)
async def cleanup():
    yield
    await close_db_connections()


async def test_a_speakers_audio_becomes_shared_stored_captions():
    room = await database_sync_to_async(services.create_room)("Call", private=False)
    listener = await RoomListener(room.pk).__aenter__()

    sfu, directory = room_with_router(str(room.pk))
    await sfu.set_captions(True)
    ann = Participant(sfu, "m-ann", "Ann")
    bob = Participant(sfu, "m-bob", "Bob")
    directory.update({ann.id: ann, bob.id: bob})
    try:
        await ann.join(microphone=SpeechMicrophone(speech_pcm24k(["good morning everyone"])),
                       speaker_key="g:ann")
        await bob.join(speaker_key="g:bob")
        await bob.wait_for(lambda: bob.receiving_from("m-ann", frames=5))

        final = None
        while final is None:
            event = await listener.next()
            if event["type"] == "caption" and event["final"]:
                final = event
        assert final["speaker"]["name"] == "Ann" and final["text"]
        publication = sfu.members["m-ann"].publications["audio"]
        assert publication.tap.decode  # decoded while captions are on
        await sfu.set_captions(False)
        assert not publication.tap.decode
        stored = await database_sync_to_async(list)(CaptionSegment.objects.filter(room=room))
        first = next(s for s in stored if s.item_id == final["item_id"])
        assert (first.speaker_name, first.speaker_key, first.text) == (
            "Ann", "g:ann", final["text"])
    finally:
        await ann.close()
        await bob.close()
        await sfu.close()
        await listener.__aexit__()


def test_transcription_plugs_captions_into_the_sfu():
    """signaling does not import transcription: transcription's AppConfig.ready() registers
    what group-call captions run for each speaker."""
    from signaling.sfu.captions import registered_transcriber
    from transcription.audio import transcribe_call_speaker

    assert registered_transcriber() is transcribe_call_speaker
