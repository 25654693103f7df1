"""Browser-direct transcription (WebSocket and WebRTC) against the OpenAI stand-in: a WAV of
espeak-ng speech is one page's microphone, the page talks to "OpenAI" with an ephemeral key,
relays the words, and a second page shows them; they are stored as client-reported."""

from __future__ import annotations

import json

import pytest
from playwright.sync_api import expect

from tests.support.chromium import create_room, join_as_guest, participant
from tests.support.openai_standin import standin_in_thread
from tests.support.speech import CAPTION_SENTENCES
from transcription.scoring import word_error_rate

pytestmark = [pytest.mark.browser, pytest.mark.transcription]

API_KEY = "sk-standin-browser"


@pytest.fixture
def standin():
    with standin_in_thread(api_key=API_KEY) as server:
        yield server


@pytest.fixture
def server(standin, daphne_factory):
    return daphne_factory(OPENAI_API_KEY=API_KEY, OPENAI_BASE_URL=standin.base_url,
                          OPENAI_WS_BASE_URL=standin.ws_base_url)


@pytest.mark.parametrize("mode", ["websocket", "webrtc"])
def test_direct_mode_captions_reach_the_room_and_are_stored(
        mode, chromium_browser, speaking_browser, standin, server):
    bob_context = participant(chromium_browser, server.base_url)
    ann_context = participant(speaking_browser, server.base_url)
    try:
        bob = bob_context.new_page()
        room_path = create_room(bob, f"Direct {mode}")
        join_as_guest(bob, room_path, "Bob")
        expect(bob.locator("#status")).to_have_attribute("data-state", "live")
        ann = ann_context.new_page()
        join_as_guest(ann, f"{room_path}captions/", "Ann")
        expect(ann.locator("#status")).to_have_attribute("data-state", "live")
        ann.check(f"input[name=mode][value={mode}]")
        ann.click("#mic")

        lines = bob.locator("#captions [data-captions-transcript] li")
        expect(lines).to_have_count(len(CAPTION_SENTENCES), timeout=45_000)
        expect(lines.locator(".author")).to_have_text(["Ann"] * len(CAPTION_SENTENCES))
        shown = lines.locator(".text").all_text_contents()
        assert word_error_rate(" ".join(CAPTION_SENTENCES), " ".join(shown)) <= 0.15, shown
        expect(ann.locator("#captions [data-captions-transcript] li")).to_have_count(
            len(CAPTION_SENTENCES))
        ann.click("#mic")

        stored = bob.request.get(f"{room_path}transcript.json").json()["segments"]
        assert [s["text"] for s in stored] == shown
        assert {s["engine"] for s in stored} == {"client"}
        assert {s["speaker"]["name"] for s in stored} == {"Ann"}
        session = standin.sessions[-1]
        assert session.transport == ("webrtc" if mode == "webrtc" else "websocket")
        assert session.auth == "ephemeral"  # the browser never had the server's key
    finally:
        ann_context.close()
        bob_context.close()


@pytest.mark.parametrize("mode", ["websocket", "webrtc"])
def test_an_expired_key_is_a_clear_error_in_the_page(
        mode, chromium_browser, standin, server):
    context = participant(chromium_browser, server.base_url)
    try:
        page = context.new_page()
        room_path = create_room(page, f"Expired {mode}")
        join_as_guest(page, f"{room_path}captions/", "Ann")
        expect(page.locator("#status")).to_have_attribute("data-state", "live")

        def expire_on_arrival(route):
            reply = route.fetch()
            standin.client_secrets[reply.json()["value"]].expires_at = 0  # already expired
            route.fulfill(response=reply, body=json.dumps(reply.json()))

        page.route("**/api/transcription-session", expire_on_arrival)
        page.check(f"input[name=mode][value={mode}]")
        page.click("#mic")
        error = page.locator("#mic-error")
        expect(error).to_be_visible()
        expect(error).to_contain_text("expired")
        expect(page.locator("#mic-status")).to_have_attribute("data-state", "off")
    finally:
        context.close()
