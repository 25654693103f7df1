"""Sign-up, the header's account links, private rooms for guests, error pages, favicon."""

from __future__ import annotations

import pytest
from django.contrib.auth import get_user_model
from django.http import HttpRequest
from django.template import loader
from django.urls import include, path

from rooms import services

pytestmark = pytest.mark.django_db

SIGNUP = "/accounts/signup/"
PASSWORD = "a-long-pass-phrase-9"


def boom(request: HttpRequest):
    raise RuntimeError("a server bug")


# This module doubles as a URLconf for the 500 test: Parley's URLs plus one that fails.
urlpatterns = [path("boom/", boom), path("", include("project.urls"))]


def test_signup_creates_the_account_logs_in_and_goes_to_the_lobby(client):
    """Django's UserCreationForm; the new user is logged in and lands in the lobby."""
    page = client.get(SIGNUP)
    assert page.status_code == 200 and b'id="signup-form"' in page.content
    done = client.post(SIGNUP, {"username": "newbie", "password1": PASSWORD,
                                "password2": PASSWORD})
    assert done.status_code == 302 and done["Location"] == "/"
    assert get_user_model().objects.filter(username="newbie").exists()
    lobby = client.get("/").content.decode()
    assert "Logged in as <strong class=\"name\">newbie</strong>" in lobby
    assert 'action="/accounts/logout/"' in lobby and "Sign up" not in lobby


def test_signup_goes_back_to_next_and_never_off_site(client):
    room = services.create_room("Team", private=True)
    back = client.post(f"{SIGNUP}?next=/rooms/{room.slug}/",
                       {"username": "ann", "password1": PASSWORD, "password2": PASSWORD})
    assert back["Location"] == f"/rooms/{room.slug}/"
    client.logout()
    away = client.post(SIGNUP, {"username": "bob", "password1": PASSWORD,
                                "password2": PASSWORD, "next": "https://evil.example/"})
    assert away["Location"] == "/"


def test_signup_errors_are_shown_beside_their_fields(client):
    """A taken username and mismatched passwords: 400, each error tied to its field."""
    get_user_model().objects.create_user("ann", password=PASSWORD)
    page = client.post(SIGNUP, {"username": "ann", "password1": PASSWORD, "password2": "other"})
    html = page.content.decode()
    assert page.status_code == 400
    assert '<ul class="errorlist" id="id_username_error">' in html
    assert "A user with that username already exists." in html
    assert '<ul class="errorlist" id="id_password2_error">' in html
    assert 'aria-invalid="true"' in html
    assert 'aria-describedby="id_username_helptext id_username_error"' in html
    assert get_user_model().objects.count() == 1


def test_signups_per_address_are_limited(client, monkeypatch):
    monkeypatch.setattr("rooms.accounts.SIGNUPS_PER_HOUR_PER_ADDRESS", 1)
    first = client.post(SIGNUP, {"username": "one", "password1": PASSWORD,
                                 "password2": PASSWORD})
    client.logout()
    second = client.post(SIGNUP, {"username": "two", "password1": PASSWORD,
                                  "password2": PASSWORD})
    assert first.status_code == 302
    assert second.status_code == 429 and int(second["Retry-After"]) > 0
    assert b"Too many accounts" in second.content
    assert not get_user_model().objects.filter(username="two").exists()


def test_header_offers_log_in_and_sign_up_that_come_back(client):
    """A visitor sees both links, carrying the page they are on; the current one is marked."""
    room = services.create_room("Lounge", private=False)
    html = client.get(f"/rooms/{room.slug}/").content.decode()
    assert f'href="/accounts/login/?next=/rooms/{room.slug}/"' in html
    assert f'href="/accounts/signup/?next=/rooms/{room.slug}/"' in html
    lobby = client.get("/").content.decode()
    assert '<a href="/" aria-current="page">Rooms</a>' in lobby
    signup = client.get(f"{SIGNUP}?next=/rooms/{room.slug}/").content.decode()
    assert 'aria-current="page">Sign up</a>' in signup
    assert f'href="/accounts/login/?next=/rooms/{room.slug}/"' in signup  # not back to sign-up


def test_log_out_is_a_post_form_in_the_header(client):
    user = get_user_model().objects.create_user("ann", password=PASSWORD)
    client.force_login(user)
    assert client.get("/accounts/logout/").status_code == 405  # Django 5: POST only
    assert client.post("/accounts/logout/")["Location"] == "/"
    assert "Log in" in client.get("/").content.decode()


def test_a_guest_in_a_private_room_is_told_why_and_where_to_go(client):
    """Not a bare login redirect: the reason, and log-in/sign-up links back to the room."""
    room = services.create_room("Board", private=True)
    page = client.get(f"/rooms/{room.slug}/")
    html = page.content.decode()
    assert page.status_code == 403 and 'id="needs-account"' in html
    assert "a guest name is not enough" in html
    assert f'href="/accounts/login/?next=/rooms/{room.slug}/">Log in</a>' in html
    assert f'href="/accounts/signup/?next=/rooms/{room.slug}/">sign up</a>' in html
    # Logged in but not a member: told to ask the owner, with the username to give them.
    client.force_login(get_user_model().objects.create_user("eve", password=PASSWORD))
    refused = client.get(f"/rooms/{room.slug}/").content.decode()
    assert "Ask the room's owner to add you" in refused and ">eve</strong>" in refused


def test_404_is_styled_with_a_way_back(client):
    page = client.get("/no/such/page/")
    html = page.content.decode()
    assert page.status_code == 404 and 'id="error-404"' in html
    assert "parley.css" in html and '<a href="/">Back to the rooms</a>' in html
    assert client.get("/rooms/gone/").status_code == 404


def test_403_is_styled_and_says_why(client):
    """A PermissionDenied from a view renders 403.html with its reason."""
    owner = get_user_model().objects.create_user("owner", password=PASSWORD)
    room = services.create_room("Team", private=True, creator=owner)
    client.force_login(get_user_model().objects.create_user("eve", password=PASSWORD))
    page = client.post(f"/rooms/{room.slug}/members/{owner.pk}/remove/")
    assert page.status_code == 403 and b'id="error-403"' in page.content
    assert b"Only the room&#x27;s owners can remove members." in page.content


def test_csrf_failure_is_styled():
    from django.test import Client

    page = Client(enforce_csrf_checks=True).post("/rooms/", {"name": "x"})
    assert page.status_code == 403 and b"That form could not be sent" in page.content


@pytest.mark.urls(__name__)
def test_500_is_styled_and_needs_no_request_context(client):
    client.raise_request_exception = False
    page = client.get("/boom/")
    assert page.status_code == 500 and b'id="error-500"' in page.content
    assert b'<a href="/">Back to the rooms</a>' in page.content
    # Rendered with no context at all (no request, no user), as Django's handler does.
    assert 'id="error-500"' in loader.get_template("500.html").render()


def test_favicon_is_linked_and_served(client):
    html = client.get("/").content.decode()
    assert '<link rel="icon" href="/static/parley/favicon.svg" type="image/svg+xml">' in html
    redirect = client.get("/favicon.ico")
    assert redirect.status_code == 302 and redirect["Location"] == "/static/parley/favicon.svg"


def test_refusals_from_room_forms_are_the_styled_403(client):
    owner = get_user_model().objects.create_user("owner", password=PASSWORD)
    room = services.create_room("Team", private=True, creator=owner)
    joined = client.post(f"/rooms/{room.slug}/join/", {"name": "Ann"})
    assert joined.status_code == 403 and b'id="error-403"' in joined.content
    client.force_login(get_user_model().objects.create_user("eve", password=PASSWORD))
    added = client.post(f"/rooms/{room.slug}/members/", {"username": "eve"})
    assert added.status_code == 403 and b"Only the room&#x27;s owners can add members." \
        in added.content
