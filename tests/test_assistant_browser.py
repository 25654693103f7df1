"""The assistant's panel in Chromium against a real daphne and the OpenAI stand-in: invite,
the answer streaming into the preview and then stored as a chat message, a tool notice,
removal; and the plain "unavailable" message on a server without OPENAI_API_KEY."""

from __future__ import annotations

import pytest
from playwright.sync_api import expect

from tests.support.chromium import create_room, join_as_guest, participant
from tests.support.openai_standin import Reply, standin_in_thread

pytestmark = [pytest.mark.browser]

KEY = "sk-standin-assistant"


def test_invite_ask_see_it_stream_and_remove(chromium_browser, daphne_factory):
    with standin_in_thread(api_key=KEY) as standin:
        server = daphne_factory(OPENAI_API_KEY=KEY, OPENAI_BASE_URL=standin.base_url,
                                OPENAI_WS_BASE_URL=standin.ws_base_url)
        standin.script.delta_interval_ms = 250  # slow enough to see the preview
        standin.script.add(Reply(call="list_participants"),
                           Reply(text="Ann and Assistant are here right now."))
        context = participant(chromium_browser, server.base_url)
        try:
            page = context.new_page()
            room_path = create_room(page, "Assistant room")
            join_as_guest(page, room_path, "Ann")
            page.goto(f"{room_path}assistant/page")
            panel = page.locator("#assistant")
            expect(panel).to_have_attribute("data-state", "absent")
            panel.get_by_role("button", name="Invite assistant").click()
            expect(panel).to_have_attribute("data-state", "listening")
            expect(panel.get_by_role("button", name="Remove assistant")).to_be_visible()
            expect(panel.get_by_role("button", name="Bring into the group call")).to_be_visible()

            page.fill("#ask-text", "who is here?")
            page.click("#ask-form button[type=submit]")
            expect(panel.locator(".assistant-notices li.tool")).to_have_text(
                "Assistant looked up who is here")
            preview = panel.locator("[data-assistant-preview]")
            expect(preview).to_be_visible()
            answer = page.locator("#messages li", has_text="Ann and Assistant are here")
            expect(answer.locator(".author")).to_have_text("Assistant")
            expect(preview).to_be_hidden()

            panel.get_by_role("button", name="Remove assistant").click()
            expect(panel).to_have_attribute("data-state", "absent")
            expect(panel.get_by_role("button", name="Invite assistant")).to_be_visible()
        finally:
            context.close()


def test_without_a_key_the_page_says_it_is_unavailable(chromium_browser, daphne_factory):
    server = daphne_factory(OPENAI_API_KEY="")
    context = participant(chromium_browser, server.base_url)
    try:
        page = context.new_page()
        room_path = create_room(page, "No key")
        join_as_guest(page, room_path, "Ann")
        page.goto(f"{room_path}assistant/page")
        panel = page.locator("#assistant")
        expect(panel).to_have_attribute("data-state", "unavailable")
        expect(panel.locator("[data-assistant-unavailable]")).to_have_text(
            "Assistant unavailable: no OPENAI_API_KEY on this server")
        expect(panel.get_by_role("button", name="Invite assistant")).to_be_hidden()
    finally:
        context.close()
