"""Keys for the browser-direct modes: OpenAI client secrets minted through the SDK (from the
stand-in here), Parley's own keys and URLs without OPENAI_API_KEY; the server's key is never
in a response."""

from __future__ import annotations

import json
import time

import pytest
from django.test import Client

from rooms import services
from tests.support.openai_standin import standin_in_thread

pytestmark = [pytest.mark.django_db, pytest.mark.transcription]

API_KEY = "sk-standin-never-leaves-the-server"


@pytest.fixture
def standin(settings):
    with standin_in_thread(api_key=API_KEY) as server:
        settings.OPENAI_API_KEY = API_KEY
        settings.OPENAI_BASE_URL = server.base_url
        settings.OPENAI_WS_BASE_URL = server.ws_base_url
        yield server


def member(room) -> Client:
    client = Client()
    client.post(f"/rooms/{room.slug}/join/", {"name": "Ann"})
    return client


def mint(client, room, mode: str):
    return client.post("/api/transcription-session", json.dumps({"room": room.slug, "mode": mode}),
                       content_type="application/json")


@pytest.mark.parametrize("mode", ["websocket", "webrtc"])
def test_direct_modes_get_an_openai_client_secret(standin, mode):
    room = services.create_room("Direct", private=False)
    reply = mint(member(room), room, mode)
    assert reply.status_code == 200
    body = reply.json()
    assert API_KEY not in reply.content.decode()
    assert body["value"].startswith("ek_") and body["value"] in standin.client_secrets
    assert body["provider"] == "openai" and body["relay_captions"] is True
    assert body["session"]["type"] == "transcription"
    assert body["websocket_url"] == f"{standin.ws_base_url}/realtime?intent=transcription"
    assert body["calls_url"] == f"{standin.base_url}/realtime/calls"
    secret = standin.client_secrets[body["value"]]
    assert 100 <= body["expires_at"] - time.time() <= 120  # TRANSCRIPTION_KEY_TTL_SECONDS
    assert secret.session["audio"]["input"]["transcription"]["model"] == "gpt-4o-transcribe"


def test_the_proxy_mode_never_asks_openai_for_a_secret(standin):
    room = services.create_room("Direct", private=False)
    body = mint(member(room), room, "proxy").json()
    assert body["value"].startswith("ek_parley_") and not standin.client_secrets
    assert body["relay_captions"] is False


def test_refusals_and_rules_for_direct_keys(standin):
    room = services.create_room("Direct", private=False)
    assert mint(Client(), room, "webrtc").status_code == 403  # not a member
    assert Client(enforce_csrf_checks=True).post(
        "/api/transcription-session", {"room": room.slug, "mode": "webrtc"}).status_code == 403
    standin.faults.reject_key = True
    refused = mint(member(room), room, "websocket")
    assert refused.status_code == 502
    assert refused.json()["error"]["code"] == "upstream_auth_failed"
    assert API_KEY not in refused.content.decode()


def test_without_openai_direct_modes_use_parleys_own_endpoints(settings):
    settings.OPENAI_API_KEY = ""
    room = services.create_room("Direct", private=False)
    body = mint(member(room), room, "webrtc").json()
    assert body["provider"] == "parley" and body["value"].startswith("ek_parley_")
    assert body["calls_url"] == "http://testserver/v1/realtime/calls"
    assert body["websocket_url"] == "ws://testserver/v1/realtime?intent=transcription"
    assert body["relay_captions"] is False
