"""Live captions end to end: a WAV of espeak-ng speech is one page's microphone; two other
pages in the room and the caption overlay (the SSE feed) show the captions; the stored
transcript matches what was said. No language model of the sentences anywhere: the offline
engine is Whisper tiny.en as shipped."""

from __future__ import annotations

import pytest
from playwright.sync_api import expect

from tests.support.chromium import create_room, join_as_guest, participant
from tests.support.speech import CAPTION_SENTENCES
from transcription.scoring import word_error_rate

pytestmark = [pytest.mark.browser, pytest.mark.transcription]

SENTENCES = CAPTION_SENTENCES
# Measured with Whisper tiny.en on 2026-12-01: 0.0. The bound leaves room for one misheard
# word without letting a broken pipeline pass.
MAX_WORD_ERROR_RATE = 0.15


def test_speech_becomes_everyones_captions_and_is_stored(
        chromium_browser, speaking_browser, daphne_factory):
    server = daphne_factory()
    contexts = [participant(chromium_browser, server.base_url) for _ in range(3)]
    speaker_context = participant(speaking_browser, server.base_url)
    try:
        bob, carol, dave = (context.new_page() for context in contexts)
        room_path = create_room(bob, "Captions")
        join_as_guest(bob, room_path, "Bob")  # the room page
        join_as_guest(carol, f"{room_path}captions/", "Carol")  # the captions page
        for page in (bob, carol):
            expect(page.locator("#status")).to_have_attribute("data-state", "live")
        overlay = contexts[1].new_page()  # Carol's OBS source: the SSE feed
        overlay.goto(f"{room_path}captions/overlay?lines=3&hold=600")
        expect(overlay.locator("#caption-overlay")).to_have_attribute("data-state", "live")

        ann = speaker_context.new_page()
        join_as_guest(ann, f"{room_path}captions/", "Ann")
        expect(ann.locator("#status")).to_have_attribute("data-state", "live")
        ann.click("#mic")
        expect(ann.locator("#mic-status")).not_to_have_attribute("data-state", "starting")

        for page in (bob, carol, ann):
            lines = page.locator("#captions [data-captions-transcript] li")
            expect(lines).to_have_count(len(SENTENCES), timeout=45_000)
            expect(lines.locator(".author")).to_have_text(["Ann"] * len(SENTENCES))
        shown = " ".join(carol.locator("[data-captions-transcript] .text").all_text_contents())
        assert word_error_rate(" ".join(SENTENCES), shown) <= MAX_WORD_ERROR_RATE, shown
        finals = overlay.locator(".overlay-line:not(.partial)")
        expect(finals).to_have_count(len(SENTENCES))
        expect(finals.locator(".speaker")).to_have_text(["Ann:"] * len(SENTENCES))
        on_feed = " ".join(finals.locator(".text").all_text_contents())
        assert word_error_rate(" ".join(SENTENCES), on_feed) <= MAX_WORD_ERROR_RATE, on_feed
        ann.click("#mic")
        expect(ann.locator("#mic-status")).to_have_attribute("data-state", "off")

        stored = bob.request.get(f"{room_path}transcript.txt").text()
        spoken_lines = [line.split(": ", 1)[1] for line in stored.splitlines() if ": " in line]
        error_rate = word_error_rate(" ".join(SENTENCES), " ".join(spoken_lines))
        print(f"stored transcript word error rate: {error_rate:.3f}: {spoken_lines}")
        assert len(spoken_lines) == len(SENTENCES) and all("Ann" in line for line in
                                                          stored.splitlines() if line)
        assert error_rate <= MAX_WORD_ERROR_RATE, stored

        # A late joiner sees the recent transcript; clearing is for one's own view only.
        join_as_guest(dave, room_path, "Dave")
        late = dave.locator("#captions [data-captions-transcript] li")
        expect(late).to_have_count(len(SENTENCES))
        dave.click("#captions [data-action=clear]")
        expect(late).to_have_count(0)
        dave.reload()
        expect(dave.locator("#status")).to_have_attribute("data-state", "live")
        expect(late).to_have_count(0)
        expect(bob.locator("#captions [data-captions-transcript] li")).to_have_count(
            len(SENTENCES))
    finally:
        for context in (*contexts, speaker_context):
            context.close()


def test_webrtc_mode_without_openai_uses_parleys_own_calls_endpoint(
        chromium_browser, speaking_browser, daphne_factory):
    server = daphne_factory()
    bob_context = participant(chromium_browser, server.base_url)
    ann_context = participant(speaking_browser, server.base_url)
    try:
        bob = bob_context.new_page()
        room_path = create_room(bob, "Local WebRTC")
        join_as_guest(bob, room_path, "Bob")
        ann = ann_context.new_page()
        join_as_guest(ann, f"{room_path}captions/", "Ann")
        expect(ann.locator("#status")).to_have_attribute("data-state", "live")
        ann.check("input[name=mode][value=webrtc]")
        ann.click("#mic")
        lines = bob.locator("#captions [data-captions-transcript] li .text")
        expect(lines).to_have_count(len(SENTENCES), timeout=45_000)
        shown = lines.all_text_contents()
        assert word_error_rate(" ".join(SENTENCES), " ".join(shown)) <= MAX_WORD_ERROR_RATE
        stored = bob.request.get(f"{room_path}transcript.json").json()["segments"]
        assert [(s["text"], s["engine"]) for s in stored] == [(t, "offline") for t in shown]
    finally:
        ann_context.close()
        bob_context.close()
