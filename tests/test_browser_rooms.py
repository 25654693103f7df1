"""Two people chat in one room in headless Chromium, each in their own browser context."""

from __future__ import annotations

import pytest
from playwright.sync_api import expect

from tests.support.chromium import create_room, join_as_guest, participant

pytestmark = pytest.mark.browser


def test_two_pages_chat_and_see_each_other(chromium_browser, daphne_factory):
    """Both go live, see each other present, exchange messages, and see a leave."""
    server = daphne_factory()
    ann_context = participant(chromium_browser, server.base_url)
    bob_context = participant(chromium_browser, server.base_url)
    try:
        ann = ann_context.new_page()
        room_path = create_room(ann, "Browser chat")
        join_as_guest(ann, room_path, "Ann")
        bob = bob_context.new_page()
        join_as_guest(bob, room_path, "Bob")

        for page in (ann, bob):
            expect(page.locator("#status")).to_have_attribute("data-state", "live")
            expect(page.locator("#presence li")).to_have_count(2)
            expect(page.locator("#presence")).to_contain_text("Ann")
            expect(page.locator("#presence")).to_contain_text("Bob")

        ann.fill("#send-text", "Hello Bob, this is Ann")
        ann.press("#send-text", "Enter")
        expect(bob.locator("#messages li.message .text")).to_have_text(["Hello Bob, this is Ann"])
        expect(ann.locator("#messages li.message:not(.pending) .text")).to_have_text(
            ["Hello Bob, this is Ann"]
        )
        expect(ann.locator("#messages li.pending")).to_have_count(0)

        bob.fill("#send-text", "Hi Ann!")
        bob.click("#send-form button")
        expect(ann.locator("#messages li.message .text")).to_have_text(
            ["Hello Bob, this is Ann", "Hi Ann!"]
        )
        expect(ann.locator("#messages li.message .author")).to_have_text(["Ann", "Bob"])

        # History on arrival: a reload shows the conversation in order.
        bob.reload()
        expect(bob.locator("#status")).to_have_attribute("data-state", "live")
        expect(bob.locator("#messages li.message .text")).to_have_text(
            ["Hello Bob, this is Ann", "Hi Ann!"]
        )

        bob_context.close()
        expect(ann.locator("#presence li")).to_have_count(1)
        expect(ann.locator("#presence")).not_to_contain_text("Bob")
    finally:
        ann_context.close()


def test_a_message_sent_while_disconnected_is_delivered_after_reconnect(
    chromium_browser, daphne_factory
):
    """The page shows the drop, keeps the unsent message, and delivers it once back."""
    server = daphne_factory()
    context = participant(chromium_browser, server.base_url)
    other_context = participant(chromium_browser, server.base_url)
    try:
        page = context.new_page()
        room_path = create_room(page, "Outbox")
        join_as_guest(page, room_path, "Ann")
        other = other_context.new_page()
        join_as_guest(other, room_path, "Bob")
        expect(page.locator("#status")).to_have_attribute("data-state", "live")

        # Cut the socket from the page's side and send while it is down.
        page.evaluate("window.parleyRoom.socket.close()")
        expect(page.locator("#status")).to_have_attribute("data-state", "reconnecting")
        page.fill("#send-text", "written while offline")
        page.press("#send-text", "Enter")
        expect(other.locator("#messages li.message .text")).to_have_text(["written while offline"])
        expect(page.locator("#status")).to_have_attribute("data-state", "live")
        expect(page.locator("#messages li.pending")).to_have_count(0)
        expect(page.locator("#messages li.message .text")).to_have_text(["written while offline"])
    finally:
        context.close()
        other_context.close()


def test_an_offline_blip_leaves_one_socket(chromium_browser, daphne_factory):
    """Going offline and back reconnects without leaving the old socket (and presence) behind."""
    server = daphne_factory()
    ann_context = participant(chromium_browser, server.base_url)
    bob_context = participant(chromium_browser, server.base_url)
    try:
        ann = ann_context.new_page()
        sockets = []
        # The room socket's; the page's other sockets (direct calls) are not the subject.
        ann.on("websocket", lambda socket: sockets.append(socket)
               if "/ws/rooms/" in socket.url else None)
        room_path = create_room(ann, "Blip")
        join_as_guest(ann, room_path, "Ann")
        bob = bob_context.new_page()
        join_as_guest(bob, room_path, "Bob")
        expect(bob.locator("#presence li")).to_have_count(2)
        ann_context.set_offline(True)
        expect(ann.locator("#status")).to_have_attribute("data-state", "offline")
        ann_context.set_offline(False)
        expect(ann.locator("#status")).to_have_attribute("data-state", "live")
        ann.evaluate("window.parleyRoom.stop()")
        expect(bob.locator("#presence li")).to_have_count(1)
        for socket in sockets:  # the close event may reach Playwright after the presence
            if not socket.is_closed():
                socket.wait_for_event("close", timeout=5000)
        assert all(socket.is_closed() for socket in sockets)
    finally:
        ann_context.close()
        bob_context.close()
