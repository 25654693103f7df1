"""Call places (memory and real Redis), TURN credentials and the direct call pages."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json

import pytest
from django.test import Client

from rooms import services
from signaling.calls import MemoryCalls, Peer, RedisCalls
from signaling.ice import ice_servers_for, turn_credentials


@pytest.fixture(params=["memory", "redis"])
def calls(request):
    if request.param == "memory":
        return MemoryCalls(ttl=30)
    redis_server = request.getfixturevalue("redis_server")
    return RedisCalls(redis_server.url, ttl=30)


def peer(n: int, who: str | None = None) -> Peer:
    return Peer(id=f"{n:016x}", channel=f"chan-{n}", who=who or f"g:{n}", name=f"P{n}")


async def test_two_places_then_full(calls):
    key = f"parley:call:test-full-{id(calls)}:chat"
    first = await calls.join(key, peer(1))
    assert first.joined and first.other is None and first.evicted is None
    second = await calls.join(key, peer(2))
    assert second.joined and second.other == peer(1)
    third = await calls.join(key, peer(3))
    assert not third.joined
    assert await calls.other(key, peer(1).id) == peer(2)
    assert await calls.other(key, peer(3).id) is None
    assert await calls.leave(key, peer(2).id) == peer(1)
    assert await calls.leave(key, peer(2).id) is None  # already gone
    assert (await calls.join(key, peer(3))).other == peer(1)


async def test_same_participant_takes_over_its_place(calls):
    key = f"parley:call:test-evict-{id(calls)}:video"
    await calls.join(key, peer(1))
    await calls.join(key, peer(2, who="u:9"))
    again = await calls.join(key, peer(3, who="u:9"))
    assert again.joined and again.evicted == peer(2, who="u:9") and again.other == peer(1)
    assert not await calls.refresh(key, peer(2, who="u:9"))  # the old connection lost it
    assert await calls.refresh(key, peer(3, who="u:9"))


async def test_expired_places_are_freed():
    calls = MemoryCalls(ttl=-1)  # everything is already stale
    await calls.join("k", peer(1))
    await calls.join("k", peer(2))
    result = await calls.join("k", peer(3))
    assert result.joined and result.other is None


def test_turn_credentials_follow_the_coturn_rest_convention():
    creds = turn_credentials("s3cret", "p123", ttl=600, now=1_700_000_000)
    assert creds["username"] == "1700000600:p123"
    expected = hmac.new(b"s3cret", b"1700000600:p123", hashlib.sha1).digest()
    assert base64.b64decode(creds["credential"]) == expected
    assert creds["expires_at"] == 1_700_000_600


def test_ice_servers_from_settings_with_turn(settings):
    settings.ICE_SERVERS = [{"urls": "stun:stun.example.org"}]
    assert ice_servers_for("p1") == [{"urls": "stun:stun.example.org"}]
    settings.TURN_SECRET = "s3cret"
    settings.TURN_URLS = ["turn:turn.example.org:3478?transport=udp"]
    servers = ice_servers_for("p1")
    assert servers[1]["urls"] == ["turn:turn.example.org:3478?transport=udp"]
    assert servers[1]["username"].endswith(":p1") and servers[1]["credential"]
    assert "s3cret" not in json.dumps(servers)


@pytest.mark.django_db
def test_direct_pages(client, settings):
    settings.TURN_SECRET, settings.TURN_URLS = "s3cret", ["turn:t.example.org"]
    room = services.create_room("Lounge", private=False)
    page = client.get(f"/rooms/{room.slug}/direct/video/")
    assert b'id="join-form"' in page.content
    joined = client.post(
        f"/rooms/{room.slug}/join/", {"name": "Ann", "next": f"/rooms/{room.slug}/direct/video/"}
    )
    assert joined["Location"] == f"/rooms/{room.slug}/direct/video/"
    page = client.get(f"/rooms/{room.slug}/direct/video/").content.decode()
    assert 'data-mode="video"' in page and 'id="ice-servers"' in page
    assert "turn:t.example.org" in page
    assert client.get(f"/rooms/{room.slug}/direct/chat/").status_code == 200
    assert client.get(f"/rooms/{room.slug}/direct/fax/").status_code == 404
    ice = client.get(f"/rooms/{room.slug}/ice-servers/").json()
    assert ice["iceServers"][0]["username"].count(":") == 1
    assert Client().get(f"/rooms/{room.slug}/ice-servers/").status_code == 403


@pytest.mark.django_db
def test_join_next_must_stay_in_the_room(client):
    room = services.create_room("Lounge", private=False)
    response = client.post(f"/rooms/{room.slug}/join/", {"name": "Ann", "next": "//evil.test/"})
    assert response["Location"] == f"/rooms/{room.slug}/"
