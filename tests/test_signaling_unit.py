"""The direct-call directory and its rules (memory and real Redis), TURN credentials, pages."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json

import pytest
from django.test import Client

from rooms import services
from signaling import protocol
from signaling.calls import (
    ACTIVE,
    Call,
    CallRefused,
    End,
    Limits,
    MemoryDirectory,
    RedisDirectory,
    accept,
    drop,
    end,
    expire_ringing,
    relay_target,
)
from signaling.ice import ice_servers_for, turn_credentials


@pytest.fixture(params=["memory", "redis"])
def directory(request):
    if request.param == "memory":
        return MemoryDirectory(ttl=30)
    redis_server = request.getfixturevalue("redis_server")
    return RedisDirectory(redis_server.url, ttl=30)


ROOM = 7
LIMITS = Limits(max_pending=2, max_calls=3)


def new_call(n: int, caller: str, callee: str, mode: str = "chat", room: int = ROOM) -> Call:
    return Call(id=f"{n:016x}", room=room, mode=mode,
                caller=End(caller, caller.upper(), f"chan-{caller}"),
                callee=End(callee, callee.upper(), None))


async def refused(code: str, coroutine) -> None:
    with pytest.raises(CallRefused) as caught:
        await coroutine
    assert caught.value.code == code


async def test_presence_counts_connections(directory):
    room = ROOM * 1000 + id(directory) % 1000
    assert await directory.present(room, "pa") is None
    await directory.arrive(room, "pa", "Ann", "tab-1")
    await directory.arrive(room, "pa", "Ann", "tab-2")
    assert await directory.present(room, "pa") == "Ann"
    assert await directory.present(room + 1, "pa") is None  # another room
    assert await directory.depart(room, "pa", "tab-1") == 1
    assert await directory.depart(room, "pa", "tab-2") == 0
    assert await directory.present(room, "pa") is None


async def test_first_accept_wins_and_only_the_callee_accepts(directory):
    call = new_call(1, "pa", "pb")
    await directory.invite(call, LIMITS)
    await refused(protocol.NOT_YOUR_CALL, accept(directory, call.id, ROOM, "pc", "chan-c"))
    await refused(protocol.UNKNOWN_CALL, accept(directory, call.id, ROOM + 1, "pb", "chan-b"))
    won = await accept(directory, call.id, ROOM, "pb", "chan-b1")
    assert won.state == ACTIVE and won.callee.channel == "chan-b1"
    await refused(protocol.NOT_RINGING, accept(directory, call.id, ROOM, "pb", "chan-b2"))
    assert await expire_ringing(directory, call.id) is None  # accepted: no timeout
    assert (await directory.get(call.id)) == won
    # The tab that did not accept is not an end of the call.
    with pytest.raises(CallRefused):
        relay_target(won, call.id, ROOM, "chan-b2")
    assert relay_target(won, call.id, ROOM, "chan-pa").channel == "chan-b1"
    assert relay_target(won, call.id, ROOM, "chan-b1").channel == "chan-pa"
    await refused(protocol.NOT_YOUR_CALL, end(directory, call.id, ROOM, "pb", "chan-b2", "hang-up"))
    ended, reason = await end(directory, call.id, ROOM, "pb", "chan-b1", "hang-up")
    assert reason == protocol.HUNG_UP and ended == won
    assert await directory.get(call.id) is None


@pytest.mark.parametrize(("who", "channel", "action", "reason"), [
    ("pb", "chan-b", "decline", protocol.DECLINED),
    ("pb", "chan-b", "hang-up", protocol.DECLINED),
    ("pa", "chan-pa", "cancel", protocol.CANCELLED),
    ("pa", "chan-pa", "hang-up", protocol.CANCELLED),
])
async def test_ending_a_ringing_call(directory, who, channel, action, reason):
    call = new_call(2, "pa", "pb")
    await directory.invite(call, LIMITS)
    assert (await end(directory, call.id, ROOM, who, channel, action))[1] == reason
    await refused(protocol.UNKNOWN_CALL, end(directory, call.id, ROOM, who, channel, action))


async def test_only_the_inviting_tab_cancels_and_timeouts_end_ringing_calls(directory):
    call = new_call(3, "pa", "pb")
    await directory.invite(call, LIMITS)
    await refused(protocol.NOT_YOUR_CALL,
                  end(directory, call.id, ROOM, "pa", "other-tab", "cancel"))
    await refused(protocol.NOT_YOUR_CALL, end(directory, call.id, ROOM, "pb", "chan-b", "cancel"))
    assert await expire_ringing(directory, call.id) == call
    assert await directory.get(call.id) is None
    assert await drop(directory, call.id) is None


async def test_limits(directory):
    room = ROOM + 100 + id(directory) % 1000
    calls = [new_call(10, "pa", "pb", room=room), new_call(11, "pa", "pc", room=room)]
    for call in calls:
        await directory.invite(call, LIMITS)
    await refused(protocol.TOO_MANY_INVITES,
                  directory.invite(new_call(12, "pa", "pd", room=room), LIMITS))
    await refused(protocol.DUPLICATE_CALL,
                  directory.invite(new_call(13, "pb", "pa", room=room), LIMITS))
    await directory.invite(new_call(14, "pb", "pa", "video", room=room), LIMITS)
    # Ann is in three calls now (two she rings, one ringing her): busy, and can call no one.
    await refused(protocol.BUSY, directory.invite(new_call(15, "pe", "pa", room=room), LIMITS))
    await accept(directory, calls[0].id, room, "pb", "chan-b")
    await refused(protocol.TOO_MANY_CALLS,
                  directory.invite(new_call(16, "pa", "pf", room=room), LIMITS))
    await drop(directory, calls[1].id)  # a call that ended frees its place
    await directory.invite(new_call(17, "pa", "pf", room=room), LIMITS)
    assert {c.id for c in await directory.calls_of(room, "pa")} == {
        calls[0].id, new_call(14, "pb", "pa").id, new_call(17, "pa", "pf").id}


async def test_two_processes_never_both_accept(redis_server):
    """Two directories on one Redis (two processes) race to accept: exactly one wins."""
    one, two = RedisDirectory(redis_server.url, 30), RedisDirectory(redis_server.url, 30)
    call = new_call(20, "pa", "pb", room=ROOM + 500)
    await one.invite(call, LIMITS)
    results = await asyncio.gather(
        *(accept(d, call.id, call.room, "pb", f"tab-{n}") for n, d in enumerate([one, two] * 4)),
        return_exceptions=True)
    winners = [r for r in results if isinstance(r, Call)]
    assert len(winners) == 1, results
    assert all(isinstance(r, CallRefused) and r.code == protocol.NOT_RINGING
               for r in results if r not in winners)
    assert (await two.get(call.id)).callee.channel == winners[0].callee.channel


def test_expired_entries_are_forgotten():
    directory = MemoryDirectory(ttl=-1)  # everything is already stale
    asyncio.run(directory.arrive(ROOM, "pa", "Ann", "tab"))
    assert asyncio.run(directory.present(ROOM, "pa")) is None
    asyncio.run(directory.invite(new_call(30, "pa", "pb"), LIMITS))
    assert asyncio.run(directory.get(new_call(30, "pa", "pb").id)) is None


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
def test_old_direct_pages_go_to_the_room_and_ice_servers_are_for_members(client, settings):
    settings.TURN_SECRET, settings.TURN_URLS = "s3cret", ["turn:t.example.org"]
    room = services.create_room("Lounge", private=False)
    for mode in ("chat", "video"):
        page = client.get(f"/rooms/{room.slug}/direct/{mode}/")
        assert (page.status_code, page["Location"]) == (302, f"/rooms/{room.slug}/")
    assert client.get(f"/rooms/{room.slug}/direct/fax/").status_code == 404
    assert Client().get(f"/rooms/{room.slug}/ice-servers/").status_code == 403
    client.post(f"/rooms/{room.slug}/join/", {"name": "Ann"})
    ice = client.get(f"/rooms/{room.slug}/ice-servers/").json()
    assert ice["iceServers"][0]["username"].count(":") == 1
    page = client.get(f"/rooms/{room.slug}/").content.decode()
    assert '<section id="direct"' in page and f'data-slug="{room.slug}"' in page


@pytest.mark.django_db
def test_join_next_must_stay_in_the_room(client):
    room = services.create_room("Lounge", private=False)
    response = client.post(f"/rooms/{room.slug}/join/", {"name": "Ann", "next": "//evil.test/"})
    assert response["Location"] == f"/rooms/{room.slug}/"
