"""Accessibility in headless Chromium (issue #14): axe-core (from the npm registry, installed
by `make test` into tests/js/) finds no serious or critical violation on any page, in the
states a person meets (before and in a call, with someone else present, an incoming
invitation); the call can be joined and left with the keyboard alone."""

from __future__ import annotations

import pytest
from playwright.sync_api import expect

from tests.support import servers
from tests.support.chromium import create_room, join_as_guest, participant

pytestmark = pytest.mark.browser

AXE = servers.ROOT / "tests" / "js" / "node_modules" / "axe-core" / "axe.min.js"
SHOTS = servers.ROOT / "var" / "screenshots"

# The violations of impact serious or critical, one line each (rule, impact, first targets).
SERIOUS = """async () => {
  const result = await axe.run(document, { resultTypes: ["violations"] });
  return result.violations
    .filter((v) => v.impact === "serious" || v.impact === "critical")
    .map((v) => `${v.id} (${v.impact}): ${v.help} at `
      + v.nodes.slice(0, 3).map((n) => n.target.join(" ")).join(", "));
}"""


def check(page, name: str) -> None:
    """Run axe-core on the page as it is now; keep a screenshot of what was checked."""
    if not AXE.exists():
        pytest.fail(f"{AXE} is missing: `make test` installs it (cd tests/js && npm ci)")
    SHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SHOTS / f"axe-{name}.png"), full_page=True)
    page.add_script_tag(path=str(AXE))
    violations = page.evaluate(SERIOUS)
    assert violations == [], f"{name}: {violations}"


def test_no_serious_violation_on_any_page(chromium_browser, daphne_factory):
    server = daphne_factory()
    # bypass_csp: axe-core is injected as an inline script, which Parley's CSP refuses.
    visitor = chromium_browser.new_context(base_url=server.base_url, bypass_csp=True)
    ann_context = chromium_browser.new_context(base_url=server.base_url, bypass_csp=True,
                                               permissions=["camera", "microphone"])
    bob_context = chromium_browser.new_context(base_url=server.base_url, bypass_csp=True,
                                               permissions=["camera", "microphone"])
    try:
        page = visitor.new_page()
        for path, name in (("/", "lobby"), ("/accounts/login/", "login"),
                           ("/accounts/signup/", "signup"), ("/rooms/no-such-room/", "404")):
            page.goto(path)
            check(page, name)
        page.goto("/accounts/signup/")
        page.click("#signup-form button[type=submit]")  # the form's errors beside its fields
        check(page, "signup-errors")

        ann = ann_context.new_page()
        room = create_room(ann, "Accessible room")
        page.goto(room)
        check(page, "join-form")
        join_as_guest(ann, room, "Ann")
        bob = bob_context.new_page()
        join_as_guest(bob, room, "Bob")
        expect(ann.get_by_role("button", name="Message Bob")).to_be_visible()
        check(ann, "room-prejoin")
        ann.get_by_role("button", name="Join call").click()
        expect(ann.locator("#call-status")).to_contain_text("In the call", timeout=30000)
        check(ann, "room-in-call")
        bob.get_by_role("button", name="Call Ann").click()
        expect(ann.get_by_role("button", name="Accept")).to_be_visible(timeout=20000)
        check(ann, "room-incoming-call")
        ann.get_by_role("button", name="Decline").click()
        for path, name in ((f"{room}captions/", "captions"),
                           (f"{room}captions/overlay", "caption-overlay"),
                           (f"{room}assistant/page", "assistant")):
            bob.goto(path)
            check(bob, name)

        # An owner's private room (members listed, the add form), and a guest refused it.
        page.goto("/accounts/signup/")
        page.fill("#id_username", "owner-olga")
        page.fill("#id_password1", "a-long-pass-phrase-9")
        page.fill("#id_password2", "a-long-pass-phrase-9")
        page.click("#signup-form button[type=submit]")
        page.fill("#create-room input[name=name]", "Board")
        page.check("#create-room input[name=private]")
        page.click("#create-room button[type=submit]")
        page.wait_for_url("**/rooms/board/")
        check(page, "room-owner")
        bob.goto("/rooms/board/")
        expect(bob.locator("#needs-account")).to_be_visible()
        check(bob, "private-room-guest")
    finally:
        for context in (visitor, ann_context, bob_context):
            context.close()


def press_tab_until(page, name: str, limit: int = 80) -> None:
    """Move the focus with Tab alone until it is on the control named `name`."""
    for _ in range(limit):
        page.keyboard.press("Tab")
        focused = page.evaluate("() => { const e = document.activeElement;"
                                " return e ? (e.getAttribute('aria-label') || e.textContent || '')"
                                ".trim() : ''; }")
        if focused == name:
            return
    raise AssertionError(f"Tab never reached {name!r}")


def test_the_call_works_with_the_keyboard_alone(chromium_browser, daphne_factory):
    server = daphne_factory()
    context = participant(chromium_browser, server.base_url)
    try:
        page = context.new_page()
        room = create_room(page, "Keyboard")
        join_as_guest(page, room, "Kim")
        press_tab_until(page, "Microphone")
        page.keyboard.press("Enter")
        expect(page.get_by_role("button", name="Microphone")).to_have_attribute(
            "aria-pressed", "false")
        press_tab_until(page, "Join call")
        page.keyboard.press("Enter")
        expect(page.locator("#call-status")).to_contain_text("In the call", timeout=30000)
        expect(page.get_by_role("group", name="Kim")).to_contain_text("muted")
        press_tab_until(page, "Leave call")
        page.keyboard.press(" ")
        expect(page.get_by_role("button", name="Join call")).to_be_visible()
        page.keyboard.press("Tab")  # the focus stays in the page, on the call bar
        page.get_by_label("Message", exact=True).focus()
        page.keyboard.type("typed, not clicked")
        page.keyboard.press("Enter")
        expect(page.locator("#messages")).to_contain_text("typed, not clicked")
    finally:
        context.close()
