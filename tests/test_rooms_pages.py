"""Lobby, room pages, guest join, private rooms, admin: plain Django views with CSRF."""

from __future__ import annotations

import pytest
from asgiref.sync import async_to_sync
from django.contrib.auth import get_user_model
from django.test import Client

from rooms import services
from rooms.identity import Participant, public_id_for
from rooms.models import Membership, Message, Room
from rooms.presence import Present, presence_store

pytestmark = pytest.mark.django_db


@pytest.fixture
def user(db):
    return get_user_model().objects.create_user("alice", password="s3cret-pass")


@pytest.fixture
def staff(db):
    return get_user_model().objects.create_user(
        "boss", password="s3cret-pass", is_staff=True, is_superuser=True
    )


def test_lobby_lists_public_rooms_with_who_is_there(client):
    """The lobby shows each visible room and the names present in it now."""
    lounge = services.create_room("Lounge", private=False)
    services.create_room("Hidden", private=True)
    async_to_sync(presence_store().add)(lounge.pk, "conn-1", Present("p1", "Ann"))
    async_to_sync(presence_store().add)(lounge.pk, "conn-2", Present("p1", "Ann"))  # 2nd tab
    page = client.get("/").content.decode()
    assert "Lounge" in page and "1 here: Ann" in page
    assert "Hidden" not in page


def test_lobby_shows_private_rooms_to_their_members(client, user):
    room = services.create_room("Team", private=True, creator=user)
    client.force_login(user)
    assert room.name in client.get("/").content.decode()


def test_create_room_redirects_to_a_unique_slug(client):
    """POST /rooms/ creates the room and redirects to /rooms/<slug>/; equal names differ."""
    first = client.post("/rooms/", {"name": "Book Club"})
    second = client.post("/rooms/", {"name": "Book Club"})
    assert first.status_code == second.status_code == 302
    assert first["Location"] == "/rooms/book-club/"
    assert second["Location"] == "/rooms/book-club-2/"
    assert Room.objects.filter(name="Book Club", is_private=False).count() == 2


def test_create_room_validates_and_private_needs_login(client, user):
    assert client.post("/rooms/", {"name": ""}).status_code == 400
    refused = client.post("/rooms/", {"name": "Secret", "private": "on"})
    assert refused.status_code == 400 and b"Log in to create a private room" in refused.content
    client.force_login(user)
    created = client.post("/rooms/", {"name": "Secret", "private": "on"})
    room = Room.objects.get(slug="secret")
    assert created["Location"] == "/rooms/secret/" and room.is_private
    assert Membership.objects.get(room=room, user=user).role == "owner"


def test_forms_require_csrf(user):
    """Every POST form refuses a request without the CSRF token."""
    room = services.create_room("Lounge", private=False)
    strict = Client(enforce_csrf_checks=True)
    assert strict.post("/rooms/", {"name": "x"}).status_code == 403
    assert strict.post(f"/rooms/{room.slug}/join/", {"name": "Ann"}).status_code == 403


def test_visitor_gets_join_form_then_the_room(client):
    """A visitor without a name sees the join form; after joining, the room page."""
    room = services.create_room("Lounge", private=False)
    page = client.get(f"/rooms/{room.slug}/")
    assert b'id="join-form"' in page.content
    bad = client.post(f"/rooms/{room.slug}/join/", {"name": "  "})
    assert bad.status_code == 400
    joined = client.post(f"/rooms/{room.slug}/join/", {"name": "Ann"})
    assert joined["Location"] == f"/rooms/{room.slug}/"
    page = client.get(f"/rooms/{room.slug}/")
    assert b'id="send-form"' in page.content and b"You are Ann" in page.content


def test_unknown_room_is_404(client):
    assert client.get("/rooms/nope/").status_code == 404
    assert client.post("/rooms/nope/join/", {"name": "Ann"}).status_code == 404


def test_private_room_pages(client, user):
    """Anonymous visitors are told to log in (403), non-members get 403, guests cannot join."""
    owner = get_user_model().objects.create_user("owner", password="x")
    room = services.create_room("Team", private=True, creator=owner)
    response = client.get(f"/rooms/{room.slug}/")
    assert response.status_code == 403 and b"/accounts/login/?next=" in response.content
    assert client.post(f"/rooms/{room.slug}/join/", {"name": "Ann"}).status_code == 403
    client.force_login(user)
    assert client.get(f"/rooms/{room.slug}/").status_code == 403


def test_owner_adds_a_member(client, user):
    owner = get_user_model().objects.create_user("owner", password="x")
    room = services.create_room("Team", private=True, creator=owner)
    client.force_login(user)
    assert client.post(f"/rooms/{room.slug}/members/", {"username": "alice"}).status_code == 403
    client.force_login(owner)
    client.post(f"/rooms/{room.slug}/members/", {"username": "alice"})
    assert Membership.objects.filter(room=room, user=user).exists()
    client.force_login(user)
    assert client.get(f"/rooms/{room.slug}/").status_code == 200


def test_login_and_logout_use_django_auth_views(client, user):
    page = client.get("/accounts/login/")
    assert page.status_code == 200
    response = client.post("/accounts/login/", {"username": "alice", "password": "s3cret-pass"})
    assert response.status_code == 302
    assert b"alice" in client.get("/").content
    client.post("/accounts/logout/")
    assert b"Log in" in client.get("/").content


# --- services ---------------------------------------------------------------------------------

def test_post_message_numbers_each_room_separately():
    one = services.create_room("One", private=False)
    two = services.create_room("Two", private=False)
    ann = Participant("g:ann", "Ann")
    seqs = [services.post_message(room, ann, "hi", f"c{n}").message.seq
            for n, room in enumerate([one, two, one, one, two])]
    assert seqs == [1, 1, 2, 3, 2]
    one.refresh_from_db()
    assert one.last_seq == 3


def test_post_message_recognises_a_resend_by_author_and_client_id():
    room = services.create_room("One", private=False)
    ann, bob = Participant("g:ann", "Ann"), Participant("g:bob", "Bob")
    first = services.post_message(room, ann, "hi", "same")
    again = services.post_message(room, ann, "hi (edited?)", "same")
    other = services.post_message(room, bob, "hi", "same")  # another author's own id
    assert first.created and not again.created and other.created
    assert again.message.pk == first.message.pk and again.message.text == "hi"
    assert Message.objects.filter(room=room).count() == 2


def test_backlog_fresh_resume_and_reset(settings):
    settings.PARLEY = {**settings.PARLEY, "HISTORY_ON_CONNECT": 3, "RESUME_LIMIT": 4}
    room = services.create_room("One", private=False)
    ann = Participant("g:ann", "Ann")
    empty = services.backlog(room, None)
    assert (empty.seq, empty.messages, empty.reset) == (0, [], False)
    for n in range(6):
        services.post_message(room, ann, f"m{n}", f"c{n}")
    fresh = services.backlog(room, None)
    assert [m["seq"] for m in fresh.messages] == [4, 5, 6] and not fresh.reset
    resumed = services.backlog(room, 3)
    assert [m["seq"] for m in resumed.messages] == [4, 5, 6] and not resumed.reset
    assert services.backlog(room, 6).messages == []
    too_far = services.backlog(room, 1)
    assert too_far.reset and [m["seq"] for m in too_far.messages] == [4, 5, 6]
    assert services.backlog(room, 7).reset


def test_message_payload_hides_the_author_key(user):
    room = services.create_room("One", private=False)
    key = f"u:{user.pk}"
    message = services.post_message(room, Participant(key, "Ann", user.pk), "hi", "c").message
    payload = services.message_payload(message)
    assert payload["author"] == {"id": public_id_for(key), "name": "Ann"}
    assert key not in str(payload) and message.author_user == user


# --- admin ------------------------------------------------------------------------------------

def test_admin_lists_rooms_with_message_counts_and_searches(client, staff):
    room = services.create_room("Lounge", private=False)
    services.create_room("Empty", private=False)
    for n in range(3):
        services.post_message(room, Participant("g:a", "Ann"), f"needle {n}", f"c{n}")
    client.force_login(staff)
    rooms_page = client.get("/admin/rooms/room/").content.decode()
    assert "Lounge" in rooms_page and "Empty" in rooms_page
    assert '<td class="field-message_count">3</td>' in rooms_page
    found = client.get("/admin/rooms/message/", {"q": "needle 1"}).content.decode()
    assert "needle 1" in found and "needle 2" not in found
    assert client.get("/admin/rooms/message/", {"room__id__exact": room.pk}).status_code == 200
    assert client.get("/admin/rooms/membership/").status_code == 200


def test_admin_exports_a_rooms_chat_as_text(client, staff):
    room = services.create_room("Lounge", private=False)
    services.post_message(room, Participant("g:a", "Ann"), "first", "c1")
    services.post_message(room, Participant("g:b", "Bob"), "second", "c2")
    client.force_login(staff)
    response = client.post(
        "/admin/rooms/room/", {"action": "export_chat", "_selected_action": [room.pk]}
    )
    assert response["Content-Type"].startswith("text/plain")
    assert 'filename="lounge-chat.txt"' in response["Content-Disposition"]
    lines = response.content.decode().splitlines()
    assert lines[0] == "# Lounge (lounge)"
    assert lines[1].endswith("#1 Ann: first") and lines[2].endswith("#2 Bob: second")
