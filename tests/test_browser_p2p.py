"""Direct chat and direct video between two headless Chromium pages (WebRTC on loopback)."""

from __future__ import annotations

import pytest
from playwright.sync_api import expect

from tests.support.chromium import create_room, join_as_guest, participant, poll_page

pytestmark = pytest.mark.browser

# Inbound video stats of the page's current peer connection: frames decoded and size.
INBOUND_VIDEO = """async () => {
  const pc = window.parleyCall && window.parleyCall.pc;
  if (!pc) return null;
  const stats = await pc.getStats();
  for (const report of stats.values()) {
    if (report.type === "inbound-rtp" && report.kind === "video") {
      return {framesDecoded: report.framesDecoded || 0, width: report.frameWidth || 0};
    }
  }
  return null;
}"""


def new_room(browser, base_url: str, name: str) -> str:
    context = participant(browser, base_url)
    try:
        return create_room(context.new_page(), name).strip("/").rsplit("/", 1)[-1]
    finally:
        context.close()


def open_call(browser, base_url: str, slug: str, mode: str, name: str):
    context = participant(browser, base_url)
    page = context.new_page()
    join_as_guest(page, f"/rooms/{slug}/direct/{mode}/", name)
    return context, page


def decoded_frames(page) -> int:
    stats = page.evaluate(INBOUND_VIDEO)
    return stats["framesDecoded"] if stats else 0


def expect_video_flowing(page, *, more_than: int = 0) -> int:
    """Wait until the page decodes the remote camera (frames growing, size known)."""
    status = page.locator("#call-status")
    expect(status).to_have_attribute("data-state", "connected", timeout=20000)
    # poll_page, not wait_for_function: that one does not await an async predicate.
    poll_page(page, f"""async () => {{
          const s = await ({INBOUND_VIDEO})();
          const v = document.getElementById('remote-video');
          return s && s.framesDecoded > {more_than} + 10 && s.width > 0 && v.videoWidth > 0;
        }}""", timeout=20)
    return decoded_frames(page)


def test_direct_chat_over_a_data_channel(chromium_browser, daphne_factory):
    """(a) Two pages open a data channel and exchange messages both ways."""
    server = daphne_factory()
    slug = new_room(chromium_browser, server.base_url, "Direct chat")
    ann_context, ann = open_call(chromium_browser, server.base_url, slug, "chat", "Ann")
    expect(ann.locator("#call-status")).to_have_attribute("data-state", "waiting")
    bob_context, bob = open_call(chromium_browser, server.base_url, slug, "chat", "Bob")
    try:
        for page in (ann, bob):
            expect(page.locator("#call-status")).to_have_attribute("data-state", "connected")
            expect(page.locator("#direct-text")).to_be_enabled()
        ann.fill("#direct-text", "psst, Bob")
        ann.press("#direct-text", "Enter")
        expect(bob.locator("#direct-messages li .text")).to_have_text(["psst, Bob"])
        bob.fill("#direct-text", "hi Ann")
        bob.press("#direct-text", "Enter")
        expect(ann.locator("#direct-messages li .text")).to_have_text(["psst, Bob", "hi Ann"])
        assert bob.evaluate("window.parleyCall.channel.readyState") == "open"

        # A third person is refused with a pointer elsewhere.
        cat_context, cat = open_call(chromium_browser, server.base_url, slug, "chat", "Cat")
        expect(cat.locator("#call-status")).to_have_attribute("data-state", "room-full")
        cat_context.close()

        bob_context.close()
        expect(ann.locator("#call-status")).to_have_attribute("data-state", "peer-left")
    finally:
        ann_context.close()
        bob_context.close()


def test_direct_video_both_ways_and_reload(chromium_browser, daphne_factory):
    """(b) Each page decodes the other's fake camera; (d) a reload brings the call back."""
    server = daphne_factory()
    slug = new_room(chromium_browser, server.base_url, "Direct video")
    ann_context, ann = open_call(chromium_browser, server.base_url, slug, "video", "Ann")
    bob_context, bob = open_call(chromium_browser, server.base_url, slug, "video", "Bob")
    try:
        expect_video_flowing(ann)
        expect_video_flowing(bob)

        # Mute and camera off toggle the local tracks.
        bob.click("#mute")
        bob.click("#camera")
        assert bob.evaluate(
            "window.parleyCall.localStream.getTracks().map(t => t.enabled)"
        ) == [False, False]
        bob.click("#mute")
        bob.click("#camera")

        bob.reload()
        expect_video_flowing(bob)
        expect_video_flowing(ann)  # Ann's new connection decodes Bob again

        ann.click("#hang-up")
        expect(ann.locator("#call-status")).to_have_attribute("data-state", "hung-up")
        expect(bob.locator("#call-status")).to_have_attribute("data-state", "peer-left")
        ann.click("#rejoin")
        expect_video_flowing(ann)
    finally:
        ann_context.close()
        bob_context.close()


def test_direct_video_across_two_processes(chromium_browser, daphne_factory, redis_server):
    """(c) The two pages are served by two daphne processes sharing Redis."""
    env = {"REDIS_URL": redis_server.url}
    one, two = daphne_factory(**env), daphne_factory(**env)
    slug = new_room(chromium_browser, one.base_url, "Two processes")
    ann_context, ann = open_call(chromium_browser, one.base_url, slug, "video", "Ann")
    bob_context, bob = open_call(chromium_browser, two.base_url, slug, "video", "Bob")
    try:
        expect_video_flowing(ann)
        expect_video_flowing(bob)
    finally:
        ann_context.close()
        bob_context.close()
