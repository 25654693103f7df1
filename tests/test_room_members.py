"""Owners see a private room's members and remove them; a removed member's sockets close."""

from __future__ import annotations

import pytest
from channels.db import database_sync_to_async
from django.contrib.auth import get_user_model
from django.test import Client

from rooms import protocol, services
from rooms.models import Membership
from tests.support.sockets import close_db_connections, connected, user_session_key


def make_team() -> tuple:
    users = get_user_model().objects
    owner, ann = users.create_user("owner", password="x"), users.create_user("ann", password="x")
    room = services.create_room("Team", private=True, creator=owner)
    Membership.objects.create(room=room, user=ann)
    return room, owner, ann


def logged_in(user) -> Client:
    client = Client()
    client.force_login(user)
    return client


def remove_url(room, user) -> str:
    return f"/rooms/{room.slug}/members/{user.pk}/remove/"


@pytest.mark.django_db
def test_the_owner_sees_members_with_remove_buttons_and_members_do_not():
    room, owner, ann = make_team()
    html = logged_in(owner).get(f"/rooms/{room.slug}/").content.decode()
    assert 'id="members"' in html and ">ann</span>" in html
    assert f'action="{remove_url(room, ann)}"' in html and 'aria-label="Remove ann"' in html
    assert f'action="{remove_url(room, owner)}"' not in html  # the last owner stays
    assert 'id="members"' not in logged_in(ann).get(f"/rooms/{room.slug}/").content.decode()


@pytest.mark.django_db
def test_only_owners_remove_and_only_by_post_with_csrf():
    room, owner, ann = make_team()
    assert logged_in(ann).post(remove_url(room, owner)).status_code == 403
    assert Client().post(remove_url(room, ann)).status_code == 403
    assert logged_in(owner).get(remove_url(room, ann)).status_code == 405
    strict = Client(enforce_csrf_checks=True)
    strict.force_login(owner)
    assert strict.post(remove_url(room, ann)).status_code == 403
    assert Membership.objects.filter(room=room).count() == 2


@pytest.mark.django_db
def test_the_owner_removes_a_member_who_can_no_longer_enter():
    room, owner, ann = make_team()
    done = logged_in(owner).post(remove_url(room, ann), follow=True)
    assert done.redirect_chain[-1][0] == f"/rooms/{room.slug}/"
    assert b"ann can no longer enter." in done.content
    assert not Membership.objects.filter(room=room, user=ann).exists()
    assert logged_in(ann).get(f"/rooms/{room.slug}/").status_code == 403


@pytest.mark.django_db
def test_the_last_owner_cannot_remove_themselves_but_one_of_two_can():
    room, owner, ann = make_team()
    refused = logged_in(owner).post(remove_url(room, owner), follow=True)
    assert b"the last one cannot be removed" in refused.content
    assert Membership.objects.filter(room=room, user=owner).exists()
    Membership.objects.filter(room=room, user=ann).update(role=Membership.Role.OWNER)
    left = logged_in(owner).post(remove_url(room, owner))
    assert left["Location"] == "/"
    assert list(Membership.objects.filter(room=room).values_list("user__username", flat=True)) \
        == ["ann"]


@pytest.mark.django_db(transaction=True)
async def test_removing_a_member_over_http_closes_their_open_socket():
    """The POST's membership deletion reaches the member's socket: closed with 4403."""
    room, owner, ann = await database_sync_to_async(make_team)()
    socket, _hello = await connected(room.slug, await user_session_key(ann))
    try:
        owner_client = await database_sync_to_async(logged_in)(owner)
        response = await database_sync_to_async(owner_client.post)(remove_url(room, ann))
        assert response.status_code == 302
        while (output := await socket.receive_output(timeout=5))["type"] != "websocket.close":
            pass
        assert output["code"] == protocol.CLOSE_FORBIDDEN
    finally:
        await socket.disconnect()
        await close_db_connections()


@pytest.mark.django_db
def test_adding_an_unknown_username_says_so_beside_the_field():
    room, owner, ann = make_team()
    page = logged_in(owner).post(f"/rooms/{room.slug}/members/", {"username": "nobody"})
    html = page.content.decode()
    assert page.status_code == 400 and 'id="add-member"' in html
    assert '<ul class="errorlist" id="id_username_error"><li>No account has that username.' in html
    assert 'aria-describedby="id_username_error"' in html
    bob = get_user_model().objects.create_user("bob", password="x")
    added = logged_in(owner).post(f"/rooms/{room.slug}/members/", {"username": "bob"})
    assert added["Location"] == f"/rooms/{room.slug}/"
    assert Membership.objects.filter(room=room, user=bob, role="member").exists()
