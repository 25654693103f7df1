"""The Realtime-compatible proxy: key minting, the `/v1/realtime` socket, shared captions."""

from __future__ import annotations

import base64
import json
import re

import pytest
from channels.db import database_sync_to_async
from channels.testing import WebsocketCommunicator
from django.test import Client

from project.asgi import application
from rooms import services
from tests.support.sockets import close_db_connections, connected, guest_session_key, receive_type
from tests.support.speech import speech_pcm24k
from transcription import keys
from transcription.models import CaptionSegment

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.transcription]


@pytest.fixture(autouse=True)
async def cleanup():
    yield
    await close_db_connections()


def member_client(room) -> Client:
    client = Client()
    client.post(f"/rooms/{room.slug}/join/", {"name": "Ann"})
    return client


def test_key_minting_rules():
    room = services.create_room("Talk", private=False)
    assert Client(enforce_csrf_checks=True).post(
        "/api/transcription-session", {"room": room.slug}).status_code == 403  # no CSRF token
    assert Client().post("/api/transcription-session",
                         {"room": room.slug}).status_code == 403  # not a member
    client = member_client(room)
    assert client.post("/api/transcription-session",
                       {"room": room.slug, "mode": "carrier-pigeon"}).status_code == 400
    assert client.post("/api/transcription-session", {"room": "nope"}).status_code == 404
    reply = client.post("/api/transcription-session",
                        json.dumps({"room": room.slug, "mode": "proxy"}),
                        content_type="application/json").json()
    assert reply["value"].startswith("ek_") and reply["expires_at"] > 0
    # A key travels as a WebSocket subprotocol, so it must be an HTTP token.
    assert re.fullmatch(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+", reply["value"])
    assert reply["websocket_url"].endswith("/v1/realtime?intent=transcription")
    grant = keys.check_key(reply["value"])
    assert grant.room_id == room.pk and grant.speaker_name == "Ann"
    assert keys.check_key(reply["value"][:-2] + "xx") is None
    for _ in range(9):  # ten keys a minute
        assert client.post("/api/transcription-session", {"room": room.slug}).status_code == 200
    assert client.post("/api/transcription-session", {"room": room.slug}).status_code == 429


def test_keys_expire(settings):
    room = services.create_room("Talk", private=False)
    value, _ = keys.mint_key(keys.KeyGrant(room.pk, "g:x", "X"))
    assert keys.check_key(value) is not None
    settings.TRANSCRIPTION = {**settings.TRANSCRIPTION, "KEY_TTL_SECONDS": -1}
    assert keys.check_key(value) is None


@database_sync_to_async
def key_for(room, name="Ann") -> str:
    return keys.mint_key(keys.KeyGrant(room.pk, f"g:{name}", name))[0]


async def open_realtime(key: str | None, *, how: str = "bearer"):
    headers, subprotocols = [(b"host", b"localhost")], []
    if key and how == "bearer":
        headers.append((b"authorization", f"Bearer {key}".encode()))
    elif key:
        subprotocols = ["realtime", f"openai-insecure-api-key.{key}"]
    communicator = WebsocketCommunicator(application, "/v1/realtime?intent=transcription",
                                         headers=headers, subprotocols=subprotocols)
    ok, subprotocol = await communicator.connect()
    assert ok
    return communicator, subprotocol


async def test_bad_or_missing_key_is_refused_with_4401():
    for key in (None, "ek_parley_forged", "sk-real-looking"):
        communicator, _ = await open_realtime(key)
        error = await communicator.receive_json_from()
        assert error["type"] == "error" and error["error"]["code"] == "invalid_api_key"
        assert (await communicator.receive_output())["code"] == 4401


async def test_both_auth_forms_open_a_transcription_session():
    room = await database_sync_to_async(services.create_room)("Talk", private=False)
    key = await key_for(room)
    for how in ("bearer", "subprotocol"):
        communicator, subprotocol = await open_realtime(key, how=how)
        created = await communicator.receive_json_from()
        assert created["type"] == "session.created"
        assert created["session"]["type"] == "transcription"
        assert subprotocol == ("realtime" if how == "subprotocol" else None)
        await communicator.disconnect()


def append(pcm: bytes) -> dict:
    return {"type": "input_audio_buffer.append", "audio": base64.b64encode(pcm).decode()}


BAD_EVENTS = [
    ("{nope", "invalid_json"),
    (json.dumps({"audio": "AAAA"}), "missing_required_parameter"),
    (json.dumps({"type": "response.create"}), "unknown_event_type"),
    (json.dumps({"type": "input_audio_buffer.append"}), "missing_required_parameter"),
    (json.dumps({"type": "input_audio_buffer.append", "audio": "***"}), "invalid_base64"),
    (json.dumps(append(b"\x00\x01\x02")), "invalid_audio_length"),
    (json.dumps(append(b"\x00" * (512 * 1024 + 2))), "audio_too_large"),
    (json.dumps(append(b"\x00" * 760_000)), "frame_too_large"),  # daphne's 1 MiB, nearly
    (json.dumps({"type": "session.update", "session": {"type": "transcription", "audio": {
        "input": {"format": {"type": "audio/pcm", "rate": 16000}}}}}),
     "unsupported_audio_format"),
    (json.dumps({"type": "session.update", "session": {"type": "realtime"}}), "invalid_value"),
    (json.dumps({"type": "input_audio_buffer.commit"}), "input_audio_buffer_commit_empty"),
]


async def test_every_bad_event_gets_an_error_and_the_session_continues():
    room = await database_sync_to_async(services.create_room)("Talk", private=False)
    communicator, _ = await open_realtime(await key_for(room))
    await communicator.receive_json_from()  # session.created
    for frame, code in BAD_EVENTS:
        await communicator.send_to(text_data=frame)
        event = await communicator.receive_json_from(timeout=5)
        assert event["type"] == "error" and event["error"]["code"] == code, frame[:80]
    await communicator.send_json_to({"type": "session.update", "session": {
        "type": "transcription", "audio": {"input": {"format": {"type": "audio/pcm",
                                                                  "rate": 24000}}}}})
    assert (await communicator.receive_json_from())["type"] == "session.updated"
    await communicator.send_json_to({"type": "input_audio_buffer.clear"})
    assert (await communicator.receive_json_from())["type"] == "input_audio_buffer.cleared"
    await communicator.disconnect()


async def test_speech_becomes_stored_shared_captions():
    room = await database_sync_to_async(services.create_room)("Talk", private=False)
    listener, _ = await connected(room.slug, await guest_session_key(room, "Bob"))
    speaker, _ = await open_realtime(await key_for(room, "Ann"))
    await speaker.receive_json_from()  # session.created
    pcm = speech_pcm24k(["good morning everyone"])
    for start in range(0, len(pcm), 4800):
        await speaker.send_json_to(append(pcm[start:start + 4800]))
    kinds = []
    while not kinds or kinds[-1] != "conversation.item.input_audio_transcription.completed":
        kinds.append((await speaker.receive_json_from(timeout=20))["type"])
    assert [k for k in kinds if not k.endswith(".delta")] == [
        "input_audio_buffer.speech_started", "input_audio_buffer.speech_stopped",
        "input_audio_buffer.committed", "conversation.item.input_audio_transcription.completed"]
    caption = await receive_type(listener, "caption", timeout=10)
    while not caption["final"]:
        caption = await receive_type(listener, "caption", timeout=10)
    assert caption["speaker"]["name"] == "Ann" and caption["text"]
    stored = await database_sync_to_async(list)(CaptionSegment.objects.filter(room=room))
    assert [(s.item_id, s.text, s.engine) for s in stored] == [
        (caption["item_id"], caption["text"], "offline")]
    assert stored[0].started_at < stored[0].ended_at
    await speaker.disconnect()
    await listener.disconnect()
