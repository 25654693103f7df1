"""Three headless Chromium participants in a group call through the SFU, joined from the room
page (the old /call/ link leads there and joins)."""

from __future__ import annotations

import pytest
from playwright.sync_api import expect

from tests.support.chromium import (
    REMOTE_CALL_MEDIA,
    create_room,
    join_call_as_guest,
    participant,
    poll_page,
)

pytestmark = [pytest.mark.browser, pytest.mark.sfu]

REMOTE_MEDIA = REMOTE_CALL_MEDIA  # per remote participant: frames, audio, screen



def wait_for_media(page, names: list[str], more_than: int = 10) -> None:
    # poll_page, not wait_for_function: that one does not await an async predicate.
    poll_page(page, f"""async () => {{
          const media = await ({REMOTE_MEDIA})();
          return {names!r}.every(n => media[n] && media[n].frames > {more_than}
                                      && media[n].audio > {more_than});
        }}""", timeout=40)


def test_three_people_see_and_hear_each_other_and_one_leaves(chromium_browser, daphne_factory):
    server = daphne_factory()
    contexts = [participant(chromium_browser, server.base_url) for _ in range(3)]
    try:
        pages = [context.new_page() for context in contexts]
        room_path = create_room(pages[0], "Group")
        names = ["Ann", "Bob", "Cat"]
        for page, name in zip(pages, names, strict=True):
            join_call_as_guest(page, room_path, name)
        for page, name in zip(pages, names, strict=True):
            expect(page.locator("#call-status")).to_have_attribute("data-state", "live")
            expect(page.locator("#tiles .tile:not(.screen)")).to_have_count(3, timeout=20000)
            wait_for_media(page, [n for n in names if n != name])

        pages[1].get_by_role("button", name="Microphone").click()
        expect(pages[0].get_by_role("group", name="Bob")).to_have_attribute(
            "data-audio-muted", "true")

        contexts[2].close()
        for page in pages[:2]:
            expect(page.locator("#tiles .tile:not(.screen)")).to_have_count(2, timeout=20000)
            expect(page.locator("#tiles")).not_to_contain_text("Cat")
    finally:
        for context in contexts:
            context.close()


def test_three_people_over_two_processes_and_a_worker_process(
    chromium_browser, daphne_factory, redis_server, sfu_worker_factory
):
    """With REDIS_URL: pages on two daphne processes, media through a separate worker."""
    env = {"REDIS_URL": redis_server.url}
    servers = [daphne_factory(**env), daphne_factory(**env)]
    sfu_worker_factory()
    contexts = [participant(chromium_browser, servers[n % 2].base_url) for n in range(3)]
    try:
        pages = [context.new_page() for context in contexts]
        room_path = create_room(pages[0], "Group over Redis")
        names = ["Ann", "Bob", "Cat"]
        for page, name in zip(pages, names, strict=True):
            join_call_as_guest(page, room_path, name)
        for page, name in zip(pages, names, strict=True):
            wait_for_media(page, [n for n in names if n != name])
    finally:
        for context in contexts:
            context.close()


@pytest.mark.transcription
def test_call_captions_come_from_the_worker_and_reach_everyone(
        chromium_browser, speaking_browser, daphne_factory):
    """Captions on: the SFU worker transcribes Ann's forwarded audio (no second upload); Bob's
    call page and a room page show her words, and they are stored."""
    from tests.support.speech import CAPTION_SENTENCES
    from transcription.scoring import word_error_rate

    server = daphne_factory()
    bob_context = participant(chromium_browser, server.base_url)
    ann_context = participant(speaking_browser, server.base_url)
    try:
        bob = bob_context.new_page()
        room_path = create_room(bob, "Captioned call")
        join_call_as_guest(bob, room_path, "Bob")
        expect(bob.locator("#call-status")).to_have_attribute("data-state", "live")
        bob.click("#toggle-captions")
        expect(bob.locator("#toggle-captions")).to_have_attribute("aria-pressed", "true")

        ann = ann_context.new_page()  # her microphone starts speaking as she joins
        join_call_as_guest(ann, room_path, "Ann")
        expect(ann.locator("#toggle-captions")).to_have_attribute("aria-pressed", "true")
        for page in (bob, ann):
            annes = page.locator("#captions [data-captions-transcript] li").filter(
                has=page.locator(".author", has_text="Ann"))
            expect(annes).to_have_count(len(CAPTION_SENTENCES), timeout=45_000)
        shown = annes.locator(".text").all_text_contents()
        assert word_error_rate(" ".join(CAPTION_SENTENCES), " ".join(shown)) <= 0.15, shown
        stored = bob.request.get(f"{room_path}transcript.json").json()["segments"]
        assert [s["text"] for s in stored if s["speaker"]["name"] == "Ann"] == shown

        bob.click("#toggle-captions")
        expect(ann.locator("#toggle-captions")).to_have_attribute("aria-pressed", "false")
    finally:
        ann_context.close()
        bob_context.close()
