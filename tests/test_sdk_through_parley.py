"""The official `openai` SDK, pointed at Parley (`websocket_base_url` = Parley's /v1),
transcribes a speech recording through the proxy socket, and the words become the room's
stored captions."""

from __future__ import annotations

import base64

import httpx
import pytest
from openai import AsyncOpenAI

from rooms.client import create_public_room
from tests.support.speech import speech_pcm24k
from transcription.client import mint_guest_key
from transcription.scoring import word_error_rate

pytestmark = [pytest.mark.multiprocess, pytest.mark.transcription]

SENTENCES = ["we will meet again on friday", "the weather is lovely today"]


async def test_the_official_sdk_transcribes_through_parley(daphne_factory):
    server = daphne_factory()
    slug = await create_public_room(server.base_url, "SDK")
    key = await mint_guest_key(server.base_url, slug, "Robot")
    ws_base = server.base_url.replace("http://", "ws://") + "/v1"
    client = AsyncOpenAI(api_key=key["value"], base_url=f"{server.base_url}/v1",
                         websocket_base_url=ws_base)
    pcm = speech_pcm24k(SENTENCES)
    transcripts, kinds = [], []
    async with client.realtime.connect(extra_query={"intent": "transcription"}) as connection:
        created = await connection.recv()
        assert created.type == "session.created"
        await connection.session.update(session={
            "type": "transcription",
            "audio": {"input": {"format": {"type": "audio/pcm", "rate": 24000}}}})
        for start in range(0, len(pcm), 4800):  # 100 ms appends, as fast as Parley takes them
            await connection.input_audio_buffer.append(
                audio=base64.b64encode(pcm[start:start + 4800]).decode())
        async for event in connection:
            kinds.append(event.type)
            if event.type == "conversation.item.input_audio_transcription.completed":
                transcripts.append(event.transcript)
                if len(transcripts) == len(SENTENCES):
                    break
    assert "session.updated" in kinds
    assert kinds.index("input_audio_buffer.speech_started") < kinds.index(
        "input_audio_buffer.committed")
    # Measured 0.27: tiny.en hears espeak's "the weather is" as "but we're very". The bound
    # catches a broken path (no text, wrong audio); accuracy is test_offline_engine.py's.
    assert word_error_rate(" ".join(SENTENCES), " ".join(transcripts)) <= 0.35, transcripts

    async with httpx.AsyncClient(base_url=server.base_url) as http:
        await http.get(f"/rooms/{slug}/")
        await http.post(f"/rooms/{slug}/join/", data={
            "name": "Reader", "csrfmiddlewaretoken": http.cookies["csrftoken"]},
            headers={"Referer": f"{server.base_url}/rooms/{slug}/"})
        stored = (await http.get(f"/rooms/{slug}/transcript.json")).json()["segments"]
    assert [s["text"] for s in stored] == transcripts
    assert {s["speaker"]["name"] for s in stored} == {"Robot"}
    assert {s["engine"] for s in stored} == {"offline"}
