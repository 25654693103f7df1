"""The product's plain pages in headless Chromium at 1280 wide and on a 390x844 phone: no
sideways scrolling with long names and text, sign-up, the invite link. Full-page screenshots
are kept under var/screenshots/ for a person to look at."""

from __future__ import annotations

import re
import subprocess
import sys

import pytest
from playwright.sync_api import expect

from tests.support import servers
from tests.support.chromium import join_as_guest

pytestmark = pytest.mark.browser

SHOTS = servers.ROOT / "var" / "screenshots"
PHONE = {"width": 390, "height": 844}
DESKTOP = {"width": 1280, "height": 900}
LONG_ROOM = "Quarterlyplanningandretrospectiveforthewholeengineeringorganisation" + "X" * 12
LONG_GUEST = "Maximiliana" + "W" * 29  # a guest's 40 characters, unbroken
MEMBER = "Annabelle" + "q" * 40
LONG_TEXT = "https://example.org/" + "averyveryverylongpath" * 12
PASSWORD = "a-long-pass-phrase-9"

SEED = f"""
from rooms import services
from django.contrib.auth import get_user_model
from rooms.models import Room
if not Room.objects.filter(slug__startswith="seeded-").exists():
    Room.objects.bulk_create(Room(name=f"Seeded room {{n:02}}", slug=f"seeded-{{n}}")
                             for n in range(55))
    services.create_room({LONG_ROOM!r}, private=False)
    services.create_room("Board", private=True)
    get_user_model().objects.create_user({MEMBER!r}, password="x")
"""

# How far the page scrolls sideways: 0 when nothing is wider than the window.
OVERFLOW = "() => document.documentElement.scrollWidth - document.documentElement.clientWidth"


@pytest.fixture
def server(daphne_factory, live_database):
    subprocess.run([sys.executable, "manage.py", "shell", "-c", SEED], cwd=servers.ROOT,
                   env={**servers.os.environ, **servers.SERVER_ENV,
                        "DATABASE_URL": live_database.url}, check=True)
    return daphne_factory()


def look(page, name: str) -> None:
    """Save a full-page screenshot and, on the phone, require no sideways scrolling."""
    SHOTS.mkdir(parents=True, exist_ok=True)
    width = page.viewport_size["width"]
    page.screenshot(path=str(SHOTS / f"{name}-{width}.png"), full_page=True)
    if width == PHONE["width"]:
        assert page.evaluate(OVERFLOW) == 0, f"{name} scrolls sideways at {width}px"


@pytest.mark.parametrize("viewport", [DESKTOP, PHONE], ids=["desktop", "phone"])
def test_pages_fit_the_screen_with_long_names(chromium_browser, server, viewport):
    """Lobby, sign-up (with its errors), the room with a long name and message, the
    private-room page for guests and a 404, at both sizes."""
    context = chromium_browser.new_context(base_url=server.base_url, viewport=viewport)
    try:
        page = context.new_page()
        page.goto("/")
        # The session's database holds other tests' rooms too: at least the 56 seeded ones.
        expect(page.locator("#lobby-pages [aria-current=page]")).to_have_text(
            re.compile(r"Page 1 of [2-9]\d*"))
        look(page, "lobby")

        page.goto("/accounts/signup/")
        page.fill("#id_username", "Bartholomew" + "x" * 60)
        page.fill("#id_password1", PASSWORD)
        page.fill("#id_password2", "not the same")
        page.click("#signup-form button[type=submit]")
        expect(page.locator("#id_password2_error")).to_contain_text("didn’t match")
        look(page, "signup-errors")

        page.goto("/")
        page.click(f"text={LONG_ROOM}")
        page.wait_for_url("**/rooms/*/")
        join_as_guest(page, page.url.removeprefix(server.base_url), LONG_GUEST)
        expect(page.locator("#status")).to_have_attribute("data-state", "live")
        page.fill("#send-text", LONG_TEXT)
        page.press("#send-text", "Enter")
        # The room is shared by both viewports' runs: the newest message is this run's.
        expect(page.locator("#messages li.message:not(.pending) .text").last).to_have_text(
            LONG_TEXT)
        look(page, "room")

        page.goto("/rooms/board/")
        expect(page.locator("#needs-account")).to_contain_text("a guest name is not enough")
        look(page, "private-room-guest")
        page.goto("/rooms/no-such-room/")
        look(page, "not-found")
    finally:
        context.close()


def test_sign_up_then_the_header_says_who_is_logged_in(chromium_browser, server):
    context = chromium_browser.new_context(base_url=server.base_url, viewport=PHONE)
    try:
        page = context.new_page()
        page.goto("/rooms/board/")
        page.click("#needs-account >> text=sign up")
        name = "Constantinople" + "z" * 50
        page.fill("#id_username", name)
        page.fill("#id_password1", PASSWORD)
        page.fill("#id_password2", PASSWORD)
        page.click("#signup-form button[type=submit]")
        page.wait_for_url("**/rooms/board/")  # back where they were: now not a member
        expect(page.locator(".topbar .who")).to_have_text(f"Logged in as {name}")
        expect(page.locator("main")).to_contain_text("Ask the room's owner to add you")
        look(page, "private-room-account")

        # Their own private room: they own it, add a member, see and remove them.
        page.goto("/")
        page.fill("#create-room input[name=name]", "Team of " + name)
        page.check("#create-room input[name=private]")
        page.click("#create-room button[type=submit]")
        page.wait_for_url("**/rooms/*/")
        page.fill("#add-member input[name=username]", MEMBER)
        page.click("#add-member button[type=submit]")
        expect(page.locator("#members li")).to_have_count(2)
        for viewport in (PHONE, DESKTOP):
            page.set_viewport_size(viewport)
            look(page, "room-owner")
        page.get_by_role("button", name=f"Remove {MEMBER}").click()
        expect(page.locator(".flash")).to_contain_text(f"{MEMBER} can no longer enter.")
        expect(page.locator("#members li")).to_have_count(1)
        page.click(".topbar button:text('Log out')")
        expect(page.locator(".topbar")).to_contain_text("Sign up")
    finally:
        context.close()


def test_copy_invite_link_copies_or_selects_the_address(chromium_browser, server):
    """With the clipboard: the room's URL is copied and "Copied" shown beside the button.
    Without (refused): the address is selected for copying by hand."""
    context = chromium_browser.new_context(
        base_url=server.base_url, viewport=PHONE,
        permissions=["clipboard-read", "clipboard-write"])
    try:
        page = context.new_page()
        join_as_guest(page, "/rooms/seeded-1/", "Ann")
        page.get_by_role("button", name="Copy invite link").click()
        expect(page.locator("#invite-copied")).to_have_text("Copied")
        copied = page.evaluate("navigator.clipboard.readText()")
        assert copied == f"{server.base_url}/rooms/seeded-1/"
        look(page, "room-invite-copied")

        page.add_init_script(
            "navigator.clipboard.writeText = () => Promise.reject(new Error('denied'))")
        page.reload()
        page.get_by_role("button", name="Copy invite link").click()
        expect(page.locator("#invite-copied")).to_contain_text("press Ctrl+C")
        selected = page.evaluate("""() => { const f = document.activeElement;
            return f.id === "invite-url" && f.selectionStart === 0
                && f.selectionEnd === f.value.length; }""")
        assert selected
    finally:
        context.close()
