"""Keys for the browser-direct modes: OpenAI client secrets minted through the SDK (from the
stand-in here), Parley's own keys and URLs without OPENAI_API_KEY; the server's key is never
in a response."""

from __future__ import annotations

import base64
import contextlib
import json
import re
import time
import zlib

import pytest
from django.contrib.auth import get_user_model
from django.test import Client

from rooms import services
from rooms.models import Room
from tests.support.openai_standin import standin_in_thread
from transcription import keys

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


def visible_texts(key: str) -> list[bytes]:
    """What anyone holding a key can read from it without a secret: its text, every
    base64url part of it decoded, and a part inflated when it is zlib data."""
    texts = [key.encode()]
    for part in re.split(r"[.:]", key.removeprefix("ek_parley_")):
        try:
            raw = base64.urlsafe_b64decode(part + "=" * (-len(part) % 4))
        except ValueError:
            continue
        texts.append(raw)
        with contextlib.suppress(zlib.error):
            texts.append(zlib.decompress(raw))
    return texts


def test_parleys_keys_are_opaque(settings):
    """A key names its room and member for the server only: neither the user's pk, the
    speaker key, the room's id nor the name can be read from it."""
    settings.OPENAI_API_KEY = ""
    user = get_user_model().objects.create_user(
        "zq", password="x", pk=987654321, first_name="Zelda", last_name="Quux")
    room = Room.objects.create(pk=55555, name="Opaque", slug="opaque")
    client = Client()
    client.force_login(user)
    value = mint(client, room, "proxy").json()["value"]
    assert value.startswith("ek_parley_")
    assert re.fullmatch(r"ek_parley_[A-Za-z0-9_-]+", value)  # an HTTP token, no padding
    for text in visible_texts(value):
        for secret in (b"987654321", b"55555", b"Zelda", b'"k"', b'"r"'):
            assert secret not in text, (secret, text)
    grant = keys.check_key(value)
    assert grant == keys.KeyGrant(55555, "u:987654321", "Zelda Quux")


def test_check_key_refuses_foreign_altered_and_expired_keys(settings):
    value, _ = keys.mint_key(keys.KeyGrant(7, "g:tok", "Ann"))
    body = value.removeprefix("ek_parley_")
    flipped = body[:40] + ("A" if body[40] != "A" else "B") + body[41:]
    for bad in ("sk-" + body, "ek_parley_" + flipped, value[:-1], value + "A", value + "==",
                "ek_parley_", "ek_parley_é" + body, "ek_parley_a.b.c"):
        assert keys.check_key(bad) is None, bad
    other, _ = keys.mint_key(keys.KeyGrant(7, "g:tok", "Ann"))
    assert other != value  # a fresh IV each time
    minted_with = settings.SECRET_KEY
    settings.SECRET_KEY = "another deployment's secret"
    assert keys.check_key(value) is None
    settings.SECRET_KEY_FALLBACKS = [minted_with]  # a rotation, as Django documents it
    assert keys.check_key(value) == keys.KeyGrant(7, "g:tok", "Ann")
