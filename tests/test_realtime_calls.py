"""Parley's own `POST /v1/realtime/calls` (the WebRTC mode without OpenAI): an aiortc client
plays speech into it as a browser would, and gets the transcript on `oai-events`."""

from __future__ import annotations

import asyncio
import json

import pytest
from channels.db import database_sync_to_async
from django.test import AsyncClient

import transcription.offline
from rooms import services
from tests.support.sfu_peers import SpeechMicrophone
from tests.support.sockets import close_db_connections
from tests.support.speech import said, speech_pcm24k
from transcription import calls, keys
from transcription.models import CaptionSegment

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.transcription,
              pytest.mark.sfu]

SENTENCE = "please open the window"
COMPLETED = "conversation.item.input_audio_transcription.completed"


@pytest.fixture
async def offline_with_model(settings):
    """The offline engine, in this process (no language model of the test sentence)."""
    settings.TRANSCRIPTION = {**settings.TRANSCRIPTION, "ENGINE": "offline"}
    transcription.offline._shared = None
    yield
    transcription.offline._shared = None
    for call in list(calls.CALLS.values()):
        await call.end()
    await close_db_connections()


@database_sync_to_async
def room_and_key():
    room = services.create_room("Calls", private=False)
    return room, keys.mint_key(keys.KeyGrant(room.pk, "g:ann", "Ann"))[0]


async def post_offer(sdp: str, key: str | None, content_type: str = "application/sdp"):
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    return await AsyncClient().post("/v1/realtime/calls", data=sdp, content_type=content_type,
                                    headers=headers)


async def test_bad_requests_get_the_apis_errors(offline_with_model):
    _room, key = await room_and_key()
    refused = await post_offer("v=0", None)
    assert refused.status_code == 401 and refused.json()["error"]["code"] == "invalid_api_key"
    assert (await post_offer("v=0", "ek_parley_forged")).status_code == 401
    wrong_type = await post_offer("v=0", key, content_type="application/json")
    assert wrong_type.status_code == 400 and wrong_type.json()["error"]["param"] == \
        "Content-Type"
    no_audio = await post_offer("v=0\r\n", key)
    assert no_audio.status_code == 400 and no_audio.json()["error"]["param"] == "sdp"


async def test_a_webrtc_call_is_transcribed_over_oai_events(offline_with_model):
    from signaling.sfu.room import peer_connection

    room, key = await room_and_key()
    pc = peer_connection()
    pc.addTrack(SpeechMicrophone(speech_pcm24k([SENTENCE], gap_seconds=1.0)))
    channel = pc.createDataChannel("oai-events")  # after the track: see docs/sfu.md
    events: asyncio.Queue[dict] = asyncio.Queue()
    channel.on("message", lambda message: events.put_nowait(json.loads(message)))
    try:
        await pc.setLocalDescription(await pc.createOffer())
        reply = await post_offer(pc.localDescription.sdp, key)
        assert reply.status_code == 201
        assert reply["Location"].startswith("/v1/realtime/calls/rtc_")
        assert reply["Content-Type"] == "application/sdp"
        from aiortc import RTCSessionDescription

        await pc.setRemoteDescription(RTCSessionDescription(reply.content.decode(), "answer"))
        seen = []
        while not seen or seen[-1]["type"] != COMPLETED:
            seen.append(await asyncio.wait_for(events.get(), 30))
        kinds = [event["type"] for event in seen]
        assert kinds[0] == "session.created"
        assert "input_audio_buffer.speech_started" in kinds
        assert said(seen[-1]["transcript"]) == SENTENCE
        channel.send(json.dumps({"type": "input_audio_buffer.append", "audio": "AAAAAA=="}))
        error = await asyncio.wait_for(events.get(), 10)
        assert error["type"] == "error" and error["error"]["param"] == "type"
    finally:
        await pc.close()
    segments = await database_sync_to_async(list)(CaptionSegment.objects.filter(room=room))
    assert [(said(s.text), s.speaker_name, s.engine) for s in segments] == [
        (SENTENCE, "Ann", "offline")]
