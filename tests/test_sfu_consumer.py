"""The group call socket's validation and joins, through the full ASGI stack."""

from __future__ import annotations

import pytest
from channels.db import database_sync_to_async

from rooms import protocol as room_protocol
from rooms import services
from signaling.sfu import protocol
from tests.support.sockets import (
    close_db_connections,
    connected,
    guest_session_key,
    receive_type,
    room_socket,
    stop_in_process_calls,
)

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.sfu]

SDP = ("v=0\r\no=- 1 2 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\n"
       "m=audio 9 UDP/TLS/RTP/SAVPF 111\r\n")


@pytest.fixture(autouse=True)
async def cleanup():
    yield
    await close_db_connections()
    await stop_in_process_calls()


@database_sync_to_async
def make_room():
    return services.create_room("Call", private=False)


async def test_sfu_socket_uses_the_room_auth_and_close_codes():
    room = await make_room()
    key = await guest_session_key(room, "Ann")
    for slug, session, code in [("nope", key, 4404), (room.slug, None, 4403)]:
        communicator = room_socket(slug, session, kind="sfu")
        assert (await communicator.connect())[0]
        assert (await communicator.receive_output(timeout=3))["code"] == code


async def test_join_reaches_the_in_process_worker():
    room = await make_room()
    ann, hello = await connected(room.slug, await guest_session_key(room, "Ann"), kind="sfu")
    assert hello["type"] == "hello" and len(hello["you"]["member"]) == 16
    await ann.send_json_to({"type": "join"})
    participants = await receive_type(ann, "participants", timeout=10)
    assert [p["name"] for p in participants["participants"]] == ["Ann"]
    assert (await receive_type(ann, "subscribe-offer", timeout=10))["sdp"].startswith("v=0")
    assert (await receive_type(ann, "joined", timeout=10))["worker"] == "local"
    await ann.send_json_to({"type": "join"})
    assert (await receive_type(ann, "error"))["code"] == protocol.ALREADY_JOINED
    await ann.send_json_to({"type": "leave"})
    assert (await receive_type(ann, "left"))["type"] == "left"
    await ann.disconnect()


BAD = [
    ({"type": "publish", "sdp": SDP}, protocol.NOT_JOINED),
    ({"type": "mute", "audio": True, "video": False}, protocol.NOT_JOINED),
    ({"type": "resubscribe"}, protocol.NOT_JOINED),
    ({"type": "share", "on": True}, protocol.NOT_JOINED),
    ({"type": "share", "on": "yes"}, room_protocol.INVALID_FIELD),
    ({"type": "publish", "sdp": SDP, "screen": 7}, room_protocol.INVALID_FIELD),
    ({"type": "publish", "sdp": SDP, "screen": "m" * 65}, room_protocol.INVALID_FIELD),
    ({"type": "publish"}, room_protocol.MISSING_FIELD),
    ({"type": "publish", "sdp": "nonsense"}, room_protocol.INVALID_FIELD),
    ({"type": "subscribe-answer", "sdp": 3}, room_protocol.INVALID_FIELD),
    ({"type": "candidate", "target": "elsewhere", "candidate": {}}, room_protocol.INVALID_FIELD),
    ({"type": "candidate", "target": "publish", "candidate": {"candidate": "x"}},
     room_protocol.INVALID_FIELD),
    ({"type": "mute", "audio": "yes", "video": False}, room_protocol.INVALID_FIELD),
    ({"type": "dance"}, room_protocol.UNKNOWN_TYPE),
    ({}, room_protocol.MISSING_FIELD),
]


async def test_every_bad_message_gets_an_error_and_the_socket_stays_open():
    room = await make_room()
    ann, _ = await connected(room.slug, await guest_session_key(room, "Ann"), kind="sfu")
    for frame, code in BAD:
        await ann.send_json_to(frame)
        assert (await receive_type(ann, "error"))["code"] == code, frame
    await ann.send_to(bytes_data=b"\x00")
    assert (await receive_type(ann, "error"))["code"] == room_protocol.BINARY_NOT_SUPPORTED
    await ann.send_json_to({"type": "join"})
    assert (await receive_type(ann, "joined", timeout=10))["type"] == "joined"
    await ann.disconnect()


async def failure(communicator) -> tuple[str, str]:
    error = await receive_type(communicator, "error", timeout=10)
    return error["code"], error.get("command")


async def test_every_failed_command_reaches_its_member(monkeypatch):
    """Not only `join`: each command the worker fails is answered on the member's socket
    with a code and the command it answers (they were only logged)."""
    from signaling.sfu.room import SfuRoom

    async def broken(*args, **kwargs):
        raise RuntimeError("broken on purpose")

    room = await make_room()
    ann, _ = await connected(room.slug, await guest_session_key(room, "Ann"), kind="sfu")
    await ann.send_json_to({"type": "join"})
    await receive_type(ann, "joined", timeout=10)
    bomb = SDP + "m=audio 9 UDP/TLS/RTP/SAVPF 111\r\n" * 1500
    await ann.send_json_to({"type": "publish", "sdp": bomb})
    assert await failure(ann) == (protocol.TOO_MANY_TRACKS, "publish")
    await ann.send_json_to({"type": "publish", "sdp": SDP})  # no ICE credentials
    assert await failure(ann) == (protocol.PUBLISH_FAILED, "publish")
    await ann.send_json_to({"type": "candidate", "target": "publish", "candidate": {
        "candidate": "candidate:garbage", "sdpMid": "0", "sdpMLineIndex": 0}})
    assert await failure(ann) == (protocol.SFU_FAILED, "candidate")
    await ann.send_json_to({"type": "subscribe-answer", "sdp": SDP})
    assert await failure(ann) == (protocol.ANSWER_FAILED, "subscribe-answer")
    assert (await receive_type(ann, "subscribe-lost", timeout=10))["type"] == "subscribe-lost"
    await ann.send_json_to({"type": "subscribe-answer", "sdp": SDP})
    assert await failure(ann) == (protocol.SUBSCRIBE_LOST, "subscribe-answer")
    await ann.send_json_to({"type": "resubscribe"})
    assert (await receive_type(ann, "subscribe-offer", timeout=10))["sdp"].startswith("v=0")
    monkeypatch.setattr(SfuRoom, "set_muted", broken)
    monkeypatch.setattr(SfuRoom, "set_captions", broken)
    await ann.send_json_to({"type": "mute", "audio": True, "video": False})
    assert await failure(ann) == (protocol.SFU_FAILED, "mute")
    await ann.send_json_to({"type": "captions", "on": True})
    assert await failure(ann) == (protocol.SFU_FAILED, "captions")
    await ann.disconnect()


async def test_a_full_call_refuses_a_join_that_may_be_tried_again(settings):
    settings.SFU_MAX_MEMBERS = 1
    room = await make_room()
    ann, _ = await connected(room.slug, await guest_session_key(room, "Ann"), kind="sfu")
    bob, _ = await connected(room.slug, await guest_session_key(room, "Bob"), kind="sfu")
    await ann.send_json_to({"type": "join"})
    await receive_type(ann, "joined", timeout=10)
    await bob.send_json_to({"type": "join"})
    assert await failure(bob) == (protocol.CALL_FULL, "join")
    await ann.send_json_to({"type": "leave"})
    await receive_type(ann, "left")
    await bob.send_json_to({"type": "join"})  # not `already_joined`: the refusal left him out
    participants = await receive_type(bob, "participants", timeout=10)
    assert [p["name"] for p in participants["participants"]] == ["Bob"]
    assert (await receive_type(bob, "joined", timeout=10))["worker"] == "local"
    await ann.disconnect()
    await bob.disconnect()


async def test_a_join_is_answered_with_ice_and_turn_servers_configured(settings):
    """The worker's rooms get RTCIceServer objects (plain dicts failed every join) and the
    worker's own TURN credentials; a STUN server that does not answer costs no join."""
    from tests.support.servers import free_port

    dead = f"127.0.0.1:{free_port()}"
    settings.ICE_SERVERS = settings.SFU_ICE_SERVERS = [{"urls": f"stun:{dead}"}]
    settings.TURN_SECRET, settings.TURN_URLS = "s3cret", [f"turn:{dead}"]
    room = await make_room()
    ann, hello = await connected(room.slug, await guest_session_key(room, "Ann"), kind="sfu")
    assert hello["ice_servers"][-1]["username"].endswith(f":{hello['you']['id']}")
    await ann.send_json_to({"type": "join"})
    assert (await receive_type(ann, "subscribe-offer", timeout=20))["sdp"].startswith("v=0")
    assert (await receive_type(ann, "joined", timeout=20))["worker"] == "local"
    await ann.disconnect()
