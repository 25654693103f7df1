"""The lobby (what Parley is, rooms a page at a time with who is in each), form errors beside
their fields, and the room page's invite link."""

from __future__ import annotations

import pytest
from asgiref.sync import async_to_sync

from rooms import services, views
from rooms.models import Room
from rooms.presence import Present, presence_store

pytestmark = pytest.mark.django_db


def test_the_lobby_says_what_parley_is(client):
    html = client.get("/").content.decode()
    assert "Rooms where people meet in the browser" in html
    assert "private rooms are for members with an account" in html


def test_rooms_are_paginated_with_prev_next_and_the_current_page(client, monkeypatch):
    monkeypatch.setattr(views, "LOBBY_PAGE_SIZE", 2)
    Room.objects.bulk_create(Room(name=f"Room {n}", slug=f"room-{n}") for n in range(5))
    first = client.get("/").content.decode()
    assert 'aria-label="Room pages"' in first
    assert '<span aria-current="page">Page 1 of 3</span>' in first
    assert 'href="?page=2" rel="next" aria-label="Next page"' in first and 'rel="prev"' not in first
    middle = client.get("/?page=2").content.decode()
    assert "Room 2" in middle and "Room 3" in middle and "Room 1<" not in middle
    assert 'href="?page=1" rel="prev"' in middle and 'href="?page=3" rel="next"' in middle
    assert '<span aria-current="page">Page 3 of 3</span>' in client.get("/?page=9").content.decode()


def test_each_room_shows_how_many_are_here_from_one_presence_lookup(client, monkeypatch):
    """Counts per room (people, not tabs), fetched for the whole page in one call."""
    rooms = [services.create_room(name, private=False) for name in ("Alpha", "Beta", "Gamma")]
    store = presence_store()
    for conn, room, who in [("c1", 0, "Ann"), ("c2", 0, "Bob"), ("c3", 0, "Bob"),
                            ("c4", 1, "Cy")]:
        async_to_sync(store.add)(rooms[room].pk, conn, Present(f"p-{who}", who))
    # The room's assistant is mentioned, not counted as a person.
    async_to_sync(store.add)(rooms[1].pk, "c5", Present("p-assistant", "Assistant", "assistant"))
    calls = []
    original = store.members_of

    async def counted(room_ids):
        calls.append(room_ids)
        return await original(room_ids)

    monkeypatch.setattr(store, "members_of", counted)
    html = client.get("/").content.decode()
    assert "2 here: Ann, Bob<" in html and "nobody here" in html
    assert "1 here: Cy (with the assistant)" in html
    assert calls == [[room.pk for room in rooms]]


def test_create_room_errors_are_beside_their_fields(client):
    html = client.post("/rooms/", {"name": "", "private": "on"}).content.decode()
    assert '<ul class="errorlist" id="id_name_error"><li>This field is required.</li></ul>' in html
    assert 'aria-invalid="true" aria-describedby="id_name_error"' in html
    private = client.post("/rooms/", {"name": "Secret", "private": "on"}).content.decode()
    assert '<ul class="errorlist" id="id_private_error"><li>Log in to create a private room.' \
        in private
    assert 'aria-describedby="id_private_error"' in private


def test_join_form_error_is_beside_the_name_field(client):
    room = services.create_room("Lounge", private=False)
    page = client.get(f"/rooms/{room.slug}/").content.decode()
    assert 'id="id_name_helptext">Up to 40 characters' in page
    bad = client.post(f"/rooms/{room.slug}/join/", {"name": "\u200b"}).content.decode()
    assert '<ul class="errorlist" id="id_name_error"><li>Use at least one visible' in bad
    assert 'aria-describedby="id_name_helptext id_name_error"' in bad


def test_the_room_page_has_a_copy_invite_link_button(client):
    room = services.create_room("Lounge", private=False)
    client.post(f"/rooms/{room.slug}/join/", {"name": "Ann"})
    html = client.get(f"/rooms/{room.slug}/").content.decode()
    url = f"http://testserver/rooms/{room.slug}/"
    assert f'id="invite-url" class="invite-url" readonly value="{url}"' in html
    assert '<button type="button" id="copy-invite">Copy invite link</button>' in html
    assert 'id="invite-copied"' in html and 'role="status"' in html
