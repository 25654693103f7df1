"""The room page is the meeting (issue #14): people join the group call from the room page in
headless Chromium (fake devices), with camera and microphone or listening only, share a
screen, switch devices, chat while in the call and leave with every local track stopped.
Full-page screenshots of each step are kept under var/screenshots/meeting-*.png."""

from __future__ import annotations

import pytest
from playwright.sync_api import expect

from tests.support import servers
from tests.support.chromium import REMOTE_CALL_MEDIA as REMOTE_MEDIA
from tests.support.chromium import (
    create_room,
    join_as_guest,
    launch_honouring_permissions,
    participant,
    poll_page,
)

pytestmark = [pytest.mark.browser, pytest.mark.sfu]

SHOTS = servers.ROOT / "var" / "screenshots"
PHONE = {"width": 390, "height": 844}
DESKTOP = {"width": 1280, "height": 860}

def media_of(page, name: str) -> dict:
    return page.evaluate(f"async () => ((await ({REMOTE_MEDIA})())[{name!r}] || {{}})")


def wait_for(page, name: str, check: str, timeout: float = 40) -> dict:
    """Poll until `check` (a JS expression over `m`, that person's media) holds."""
    return poll_page(page, f"""async () => {{
        const m = (await ({REMOTE_MEDIA})())[{name!r}];
        return m && ({check}) ? m : null;
    }}""", timeout=timeout)


def shot(page, step: str) -> None:
    SHOTS.mkdir(parents=True, exist_ok=True)
    width = page.viewport_size["width"]
    page.screenshot(path=str(SHOTS / f"meeting-{step}-{width}.png"), full_page=True)


def tile(page, name: str):
    return page.get_by_role("group", name=name, exact=True)


def test_a_meeting_on_the_room_page(chromium_browser, daphne_factory):
    server = daphne_factory()
    ann_context = participant(chromium_browser, server.base_url)
    bob_context = participant(chromium_browser, server.base_url)
    try:
        ann, bob = ann_context.new_page(), bob_context.new_page()
        for page in (ann, bob):
            page.set_viewport_size(DESKTOP)
        room = create_room(ann, "Design review")
        join_as_guest(ann, room, "Ann")
        join_as_guest(bob, room, "Bob")
        # Pre-join: the camera preview runs before joining (permission already granted).
        expect(ann.get_by_role("button", name="Camera")).to_have_attribute("aria-pressed", "true")
        poll_page(ann, "() => document.getElementById('preview').videoWidth > 0")
        expect(ann.locator("#camera-select option")).to_have_text(["fake_device_0"])
        shot(ann, "1-prejoin")

        ann.get_by_role("button", name="Join call").click()
        bob.get_by_label("Listen only").check()
        expect(bob.get_by_role("button", name="Microphone")).to_have_attribute(
            "aria-pressed", "false")
        bob.get_by_role("button", name="Join call").click()
        for page in (ann, bob):
            expect(page.locator("#call-status")).to_contain_text("2 people", timeout=30000)
            expect(page.get_by_role("button", name="Leave call")).to_be_visible()
        # The listener sees and hears Ann; Ann sees Bob's tile as initials, camera off.
        wait_for(bob, "Ann", "m.frames > 10 && m.audio > 10")
        expect(tile(bob, "Ann").locator("video")).to_have_count(1)
        expect(tile(ann, "Bob")).to_have_attribute("data-video-muted", "true")
        expect(tile(ann, "Bob")).to_contain_text("camera off")
        expect(tile(ann, "Bob").locator(".avatar")).to_have_text("B")
        # The same person looks the same in the call and in "Here now" (participant id).
        colour = "e => e.style.backgroundColor"
        assert tile(ann, "Bob").locator(".avatar").evaluate(colour) == ann.locator(
            "#presence li", has_text="Bob").locator(".avatar").evaluate(colour)
        expect(tile(bob, "Ann")).to_have_class("tile speaking", timeout=20000)
        shot(bob, "2-listening")

        # Chat stays live in the call.
        bob.get_by_label("Message", exact=True).fill("Can everyone see the slides?")
        bob.get_by_label("Message", exact=True).press("Enter")
        expect(ann.locator("#messages")).to_contain_text("Can everyone see the slides?")

        # Screen sharing reaches Bob as its own large tile, and stops.
        ann.get_by_role("button", name="Share screen").click()
        expect(ann.get_by_role("button", name="Share screen")).to_have_attribute(
            "aria-pressed", "true")
        screen = bob.get_by_role("region", name="Screen shared by Ann")
        expect(screen).to_have_class("tile screen focus", timeout=30000)
        wait_for(bob, "Ann", "m.screen > 5")
        assert bob.evaluate("() => document.querySelector('.tile.screen video').videoWidth") \
            == 1280
        shot(bob, "3-screen")
        ann.get_by_role("button", name="Share screen").click()
        expect(screen).to_have_count(0, timeout=30000)

        # Camera off turns the camera off (track ended), and Bob sees Ann's initials.
        ann.keyboard.press("Control+e")
        expect(ann.get_by_role("button", name="Camera")).to_have_attribute("aria-pressed", "false")
        expect(tile(bob, "Ann")).to_have_attribute("data-video-muted", "true")
        assert ann.evaluate("() => window.parleyCall.usedTracks.filter(t => t.kind === 'video')"
                            ".every(t => t.readyState === 'ended')")
        # Switching the microphone in the call changes the published track, no rejoin.
        ann.locator("#devices > summary").click()
        before = ann.evaluate("() => window.parleyCall.senders.audio.track.id")
        options = ann.get_by_role("combobox", name="Microphone").locator("option")
        expect(options).to_have_count(3)
        ann.get_by_role("combobox", name="Microphone").select_option(index=2)
        poll_page(ann, f"() => window.parleyCall.senders.audio.track.id !== {before!r}")
        heard = media_of(bob, "Ann")["audio"]
        wait_for(bob, "Ann", f"m.audio > {heard + 20}")
        shot(ann, "4-camera-off")

        ann.set_viewport_size(PHONE)
        shot(ann, "5-phone")
        assert ann.evaluate("() => document.documentElement.scrollWidth"
                            " - document.documentElement.clientWidth") == 0
        ann.set_viewport_size(DESKTOP)

        # Leaving stops every local track the page started (camera light off).
        ann.get_by_role("button", name="Leave call").click()
        expect(ann.get_by_role("button", name="Join call")).to_be_visible()
        states = ann.evaluate("() => window.parleyCall.usedTracks.map(t => t.readyState)")
        assert len(states) >= 4 and set(states) == {"ended"}, states
        expect(tile(bob, "Ann")).to_have_count(0, timeout=20000)
        shot(ann, "6-left")
    finally:
        ann_context.close()
        bob_context.close()


def test_without_camera_permission_one_joins_listening_only_and_is_told(daphne_factory,
                                                                         chromium_browser):
    server = daphne_factory()
    browser = launch_honouring_permissions(chromium_browser.browser_type)
    try:
        context = browser.new_context(base_url=server.base_url)  # no camera, no microphone
        page = context.new_page()
        room = create_room(page, "No devices")
        join_as_guest(page, room, "Dee")
        page.get_by_role("button", name="Join call").click()
        expect(page.locator("#call-status")).to_contain_text("In the call", timeout=30000)
        expect(page.locator("#device-notice")).to_contain_text("listening only")
        expect(page.locator("#device-notice")).to_contain_text("permission")
        for name in ("Microphone", "Camera"):
            expect(page.get_by_role("button", name=name)).to_have_attribute("aria-pressed",
                                                                            "false")
        expect(tile(page, "Dee")).to_contain_text("muted, camera off")
        shot(page, "denied")
    finally:
        browser.close()


# The page's direct video call: frames of the other side decoded (direct-calls.js).
DIRECT_FRAMES = """async () => {
  const conv = [...window.parleyDirect.conversations.values()].find(c => c.mode === "video");
  if (!conv || !conv.pc) return 0;
  for (const r of (await conv.pc.getStats()).values()) {
    if (r.type === "inbound-rtp" && r.kind === "video") return r.framesDecoded || 0;
  }
  return 0;
}"""


def test_a_direct_call_by_invitation_while_the_group_call_runs(chromium_browser, daphne_factory):
    """Ann and Bob are in the room's group call; Cat calls Ann from "Here now"; Ann accepts.
    The 1:1 call carries video both ways while Ann still sees and hears Bob in the group call;
    when it ends, the group call goes on."""
    server = daphne_factory()
    contexts = [participant(chromium_browser, server.base_url) for _ in range(3)]
    try:
        ann, bob, cat = (context.new_page() for context in contexts)
        room = create_room(ann, "Busy room")
        for page, name in ((ann, "Ann"), (bob, "Bob"), (cat, "Cat")):
            join_as_guest(page, room, name)
        for page in (ann, bob):
            page.get_by_role("button", name="Join call").click()
        for page in (ann, bob):
            expect(page.locator("#call-status")).to_contain_text("2 people", timeout=30000)
        wait_for(ann, "Bob", "m.frames > 5 && m.audio > 5")

        cat.get_by_role("button", name="Call Ann").click()
        ann.get_by_role("button", name="Accept").click(timeout=20000)
        poll_page(ann, f"async () => (await ({DIRECT_FRAMES})()) > 10", timeout=30)
        poll_page(cat, f"async () => (await ({DIRECT_FRAMES})()) > 10", timeout=30)
        frames = media_of(ann, "Bob")["frames"]
        wait_for(ann, "Bob", f"m.frames > {frames + 10}")  # the group call flows meanwhile
        shot(ann, "direct-during-call")

        cat.get_by_role("article", name="Call with Ann").get_by_role(
            "button", name="Hang up").click()
        expect(ann.get_by_role("article", name="Call with Cat").get_by_role("status")) \
            .to_have_text("Cat hung up.")
        expect(ann.locator("#call-status")).to_contain_text("2 people")
        frames = media_of(ann, "Bob")["frames"]
        wait_for(ann, "Bob", f"m.frames > {frames + 10}")
    finally:
        for context in contexts:
            context.close()


def test_two_people_with_one_name_are_told_apart_and_one_person_is_one_entry(
        chromium_browser, daphne_factory):
    """Two guests both called Sam get distinct tags and colours in "Here now"; one of them
    in two tabs is still one entry."""
    server = daphne_factory()
    first, second = (participant(chromium_browser, server.base_url) for _ in range(2))
    try:
        page = first.new_page()
        room = create_room(page, "Namesakes")
        join_as_guest(page, room, "Sam")
        other = second.new_page()
        join_as_guest(other, room, "Sam")
        first.new_page().goto(room)  # Sam's second tab
        entries = page.locator("#presence li")
        expect(entries).to_have_count(2)
        tags = entries.locator(".tag").all_text_contents()
        assert len(set(tags)) == 2 and all(tag.startswith("#") for tag in tags), tags
        colours = entries.locator(".avatar").evaluate_all(
            "spans => spans.map(s => s.style.backgroundColor)")
        # A colour from each one's participant id (360 hues: equal for 1 pair in 360).
        assert all(colour.startswith("rgb(") for colour in colours), colours
        expect(page.get_by_role("button", name="Call Sam")).to_have_count(1)
        shot(page, "namesakes")
    finally:
        first.close()
        second.close()
