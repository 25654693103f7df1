"""Direct messages and 1:1 calls by invitation from the room page's "Here now", between
headless Chromium pages (fake camera, WebRTC on loopback), each person in a browser context of
their own. Full-page screenshots of each step go to var/screenshots/direct-*.png."""

from __future__ import annotations

import hashlib
import os
import re

import pytest
from playwright.sync_api import expect

from tests.support import servers
from tests.support.chromium import create_room, join_as_guest, participant, poll_page

pytestmark = pytest.mark.browser

SHOTS = servers.ROOT / "var" / "screenshots"

# Inbound video of the page's direct video call: frames decoded and their size.
INBOUND_VIDEO = """async () => {
  const conv = [...window.parleyDirect.conversations.values()].find(c => c.mode === "video");
  if (!conv || !conv.pc) return null;
  for (const report of (await conv.pc.getStats()).values()) {
    if (report.type === "inbound-rtp" && report.kind === "video") {
      const video = conv.panel.querySelector("video.direct-remote");
      return {framesDecoded: report.framesDecoded || 0, width: report.frameWidth || 0,
              shown: video.videoWidth};
    }
  }
  return null;
}"""
# Every local track the page ever opened, and whether each has ended.
LOCAL_TRACKS = """() => window.parleyDirect.streams.flatMap(
  s => s.getTracks().map(t => [t.kind, t.readyState]))"""
NO_SIDEWAYS_SCROLL = """() => document.scrollingElement.scrollWidth
  <= document.scrollingElement.clientWidth"""


def shot(page, name: str) -> None:
    SHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SHOTS / f"direct-{name}.png"), full_page=True)


def new_room(browser, base_url: str, name: str) -> str:
    context = participant(browser, base_url)
    try:
        return create_room(context.new_page(), name).strip("/").rsplit("/", 1)[-1]
    finally:
        context.close()


def person(browser, base_url: str, slug: str, name: str, **context_options):
    """A context of its own on the room page, once its signaling socket said hello."""
    context = browser.new_context(base_url=base_url, permissions=["camera", "microphone"],
                                  **context_options)
    page = context.new_page()
    join_as_guest(page, f"/rooms/{slug}/", name)
    page.wait_for_function("() => window.parleyDirect && window.parleyDirect.me")
    return context, page


def sees(page, name: str) -> None:
    expect(page.get_by_role("button", name=f"Call {name}")).to_be_visible()


def panel(page, title: str):
    return page.get_by_role("article", name=title)


def expect_video_flowing(page) -> None:
    """Wait until the page decodes the other side's fake camera and shows it."""
    poll_page(page, f"""async () => {{
      const s = await ({INBOUND_VIDEO})();
      return s && s.framesDecoded > 10 && s.width > 0 && s.shown > 0;
    }}""", timeout=30)


def test_a_video_call_by_invitation_and_hanging_up_stops_the_camera(
        chromium_browser, daphne_factory):
    server = daphne_factory()
    slug = new_room(chromium_browser, server.base_url, "Direct video")
    ann_context, ann = person(chromium_browser, server.base_url, slug, "Ann")
    bob_context, bob = person(chromium_browser, server.base_url, slug, "Bob")
    try:
        sees(ann, "Bob")
        ann.get_by_role("button", name="Call Bob").click()
        outgoing = ann.locator(".direct-invitation.outgoing")
        expect(outgoing).to_contain_text("Calling Bob")
        expect(outgoing).to_contain_text("Ringing")
        incoming = bob.locator(".direct-invitation.incoming")
        expect(incoming).to_contain_text("Ann is calling you")
        expect(incoming).to_contain_text("Ringing")
        shot(ann, "video-1-caller-ringing")
        shot(bob, "video-1-callee-invited")
        bob.get_by_role("button", name="Accept").click()

        for page, other in ((ann, "Bob"), (bob, "Ann")):
            call = panel(page, f"Call with {other}")
            expect(call.get_by_role("status")).to_have_text("Connected (peer to peer)",
                                                            timeout=20000)
        expect(outgoing).to_have_count(0)
        expect(incoming).to_have_count(0)
        expect_video_flowing(ann)
        expect_video_flowing(bob)
        shot(ann, "video-2-caller-in-call")
        shot(bob, "video-2-callee-in-call")

        # The microphone and camera toggles switch Bob's local tracks off and on.
        call = panel(bob, "Call with Ann")
        for name in ("Microphone", "Camera"):
            toggle = call.get_by_role("button", name=name)
            toggle.click()
            expect(toggle).to_have_attribute("aria-pressed", "false")
        assert bob.evaluate("""() => [...parleyDirect.conversations.values()][0]
            .localStream.getTracks().map(t => t.enabled)""") == [False, False]
        for name in ("Microphone", "Camera"):
            call.get_by_role("button", name=name).click()

        panel(ann, "Call with Bob").get_by_role("button", name="Hang up").click()
        expect(panel(ann, "Call with Bob").get_by_role("status")).to_have_text("You hung up.")
        expect(panel(bob, "Call with Ann").get_by_role("status")).to_have_text("Ann hung up.")
        for page in (ann, bob):
            tracks = page.evaluate(LOCAL_TRACKS)
            assert sorted(kind for kind, _ in tracks) == ["audio", "video"], tracks
            assert {state for _, state in tracks} == {"ended"}, tracks
        shot(ann, "video-3-caller-hung-up")
        shot(bob, "video-3-callee-after-hang-up")

        # Leaving (the page's close(), as on navigating away) ends a call and its tracks too.
        bob.get_by_role("button", name="Call Ann").click()
        ann.get_by_role("button", name="Accept").click()
        expect(panel(ann, "Call with Bob").last.get_by_role("status")).to_have_text(
            "Connected (peer to peer)", timeout=20000)
        bob.evaluate("window.parleyDirect.close()")
        expect(panel(ann, "Call with Bob").last.get_by_role("status")).to_have_text(
            "Bob hung up.")
        for page in (ann, bob):
            tracks = page.evaluate(LOCAL_TRACKS)
            assert len(tracks) == 4 and {state for _, state in tracks} == {"ended"}, tracks
        ann.get_by_role("button", name="Close the call with Bob").first.click()
        expect(panel(ann, "Call with Bob")).to_have_count(1)
    finally:
        ann_context.close()
        bob_context.close()


def test_a_declined_invitation_and_one_that_times_out(chromium_browser, daphne_factory):
    server = daphne_factory(PARLEY_SIGNAL_INVITE_TIMEOUT_SECONDS="2")
    slug = new_room(chromium_browser, server.base_url, "Unanswered")
    ann_context, ann = person(chromium_browser, server.base_url, slug, "Ann")
    bob_context, bob = person(chromium_browser, server.base_url, slug, "Bob")
    try:
        sees(ann, "Bob")
        ann.get_by_role("button", name="Call Bob").click()
        bob.get_by_role("button", name="Decline").click()
        expect(ann.locator("[data-direct-notice]")).to_have_text("Bob declined your call.")
        expect(bob.locator("[data-direct-notice]")).to_have_text("You declined Ann's call.")
        expect(ann.locator(".direct-invitation")).to_have_count(0)
        shot(ann, "decline-caller")

        ann.get_by_role("button", name="Message Bob").click()
        expect(bob.locator(".direct-invitation.incoming")).to_contain_text(
            "Ann wants to message you")
        shot(bob, "timeout-1-invited")
        expect(ann.locator("[data-direct-notice]")).to_have_text(
            "No answer from Bob: the invitation timed out.", timeout=15000)
        expect(bob.locator("[data-direct-notice]")).to_have_text(
            "You missed a chat from Ann: the invitation timed out.")
        expect(bob.get_by_role("button", name="Accept")).to_have_count(0)
        shot(ann, "timeout-2-caller")
        shot(bob, "timeout-2-callee")
        assert ann.evaluate("window.parleyDirect.conversations.size") == 0
    finally:
        ann_context.close()
        bob_context.close()


def test_direct_chat_and_a_file_peer_to_peer(chromium_browser, daphne_factory, tmp_path):
    """Chat renders like the room chat; a 300 KB file arrives with its name and SHA-256; a file
    over the limit is refused before anything is sent; a third person can message Bob at the
    same time; the page fits a phone."""
    server = daphne_factory(PARLEY_SIGNAL_MAX_FILE_BYTES="400000")
    slug = new_room(chromium_browser, server.base_url, "Direct chat")
    ann_context, ann = person(chromium_browser, server.base_url, slug, "Ann")
    bob_context, bob = person(chromium_browser, server.base_url, slug, "Bob",
                              viewport={"width": 390, "height": 844})
    cat_context = None
    try:
        sees(ann, "Bob")
        ann.get_by_role("button", name="Message Bob").click()
        bob.get_by_role("button", name="Accept").click()
        ann_chat, bob_chat = panel(ann, "Direct chat with Bob"), panel(bob, "Direct chat with Ann")
        ann_box = ann_chat.get_by_role("textbox", name="Message Bob")
        expect(ann_box).to_be_enabled(timeout=20000)
        ann_box.fill("This goes peer to peer")
        ann_box.press("Enter")
        long_word = "x" * 600
        bob_box = bob_chat.get_by_role("textbox", name="Message Ann")
        expect(bob_box).to_be_enabled()
        bob_box.fill(long_word)
        bob_box.press("Enter")
        for chat in (ann_chat, bob_chat):
            messages = chat.locator(".messages li.message")
            expect(messages.locator(".author")).to_have_text(["Ann", "Bob"])
            expect(messages.locator(".text")).to_have_text(["This goes peer to peer", long_word])
            expect(messages.locator("time").first).to_have_text(re.compile(r"\d\d:\d\d"))
        assert bob.evaluate(NO_SIDEWAYS_SCROLL)

        payload = os.urandom(300_000)
        ann_chat.get_by_label("Send file").set_input_files(
            {"name": "notes from Ann.bin", "mimeType": "application/octet-stream",
             "buffer": payload})
        link = bob_chat.get_by_role("link", name="notes from Ann.bin")
        expect(link).to_be_visible(timeout=20000)
        assert link.get_attribute("download") == "notes from Ann.bin"
        digest = bob.evaluate("""async () => {
          const conv = [...parleyDirect.conversations.values()][0];
          const bytes = await conv.files[0].blob.arrayBuffer();
          const hash = await crypto.subtle.digest("SHA-256", bytes);
          return [...new Uint8Array(hash)].map(b => b.toString(16).padStart(2, "0")).join("");
        }""")
        assert digest == hashlib.sha256(payload).hexdigest()
        for page, verb in ((ann, "Sending"), (bob, "Receiving")):
            bar = page.get_by_role("progressbar", name=f"{verb} notes from Ann.bin")
            expect(bar).to_have_attribute("value", "300000")
        expect(ann_chat.get_by_text("Sent", exact=True)).to_be_visible()
        shot(ann, "chat-1-file-sent")
        shot(bob, "chat-1-file-received-390x844")

        ann_chat.get_by_label("Send file").set_input_files(
            {"name": "too big.bin", "mimeType": "application/octet-stream",
             "buffer": b"\0" * 400_001})
        expect(ann_chat.get_by_role("alert")).to_contain_text("files are limited to")
        assert ann.evaluate("[...parleyDirect.conversations.values()][0].sent.length") == 1

        # Cat messages Bob while Ann and Bob talk: a second pair, nobody is turned away.
        cat_context, cat = person(chromium_browser, server.base_url, slug, "Cat")
        cat.get_by_role("button", name="Message Bob").click()
        bob.get_by_role("button", name="Accept").click()
        cat_box = panel(cat, "Direct chat with Bob").get_by_role("textbox", name="Message Bob")
        expect(cat_box).to_be_enabled(timeout=20000)
        cat_box.fill("me too")
        cat_box.press("Enter")
        expect(panel(bob, "Direct chat with Cat").locator(".message .text")).to_have_text(
            ["me too"])
        expect(ann_chat.locator(".message")).to_have_count(2)  # Ann's chat is untouched
        assert bob.evaluate(NO_SIDEWAYS_SCROLL)
        shot(bob, "chat-2-two-chats-390x844")

        ann_chat.get_by_role("button", name="Leave chat").click()
        expect(bob_chat.get_by_role("status")).to_have_text("Ann left the chat.")
        expect(bob_chat.get_by_role("textbox", name="Message Ann")).to_be_disabled()
        shot(bob, "chat-3-other-left-390x844")
    finally:
        ann_context.close()
        bob_context.close()
        if cat_context is not None:
            cat_context.close()
