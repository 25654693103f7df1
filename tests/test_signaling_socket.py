"""The signaling relay through the full ASGI stack."""

from __future__ import annotations

import json

import pytest
from channels.db import database_sync_to_async

from rooms import protocol as room_protocol
from rooms import services
from signaling import protocol
from tests.support.sockets import (
    close_db_connections,
    connected,
    guest_session_key,
    receive_type,
    room_socket,
)

pytestmark = pytest.mark.django_db(transaction=True)

SDP = ("v=0\r\no=- 1 2 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\n"
       "m=application 9 UDP/DTLS/SCTP webrtc-datachannel\r\n")
CANDIDATE = {"candidate": "candidate:1 1 udp 2122260223 127.0.0.1 50000 typ host",
             "sdpMid": "0", "sdpMLineIndex": 0}


@pytest.fixture(autouse=True)
async def close_consumer_db_connections():
    yield
    await close_db_connections()


@pytest.fixture(autouse=True)
def fresh_calls():
    import signaling.calls

    signaling.calls._store = None
    yield
    signaling.calls._store = None


@database_sync_to_async
def make_room(name="Lounge"):
    return services.create_room(name, private=False)


async def signal(room, name, *, key=None):
    key = key or await guest_session_key(room, name)
    communicator, hello = await connected(room.slug, key, kind="signal")
    return communicator, hello


async def joined(room, name, mode="chat", *, key=None):
    communicator, hello = await signal(room, name, key=key)
    await communicator.send_json_to({"type": "join", "mode": mode})
    return communicator, hello


async def test_signal_socket_uses_the_room_auth_and_close_codes():
    room = await make_room()
    key = await guest_session_key(room, "Ann")
    for slug, session, code in [("nope", key, 4404), (room.slug, None, 4403)]:
        communicator = room_socket(slug, session, kind="signal")
        assert (await communicator.connect())[0]
        assert (await communicator.receive_output(timeout=3))["code"] == code
    foreign = room_socket(room.slug, key, kind="signal", origin=(b"origin", b"http://x.test"))
    assert not (await foreign.connect())[0]


async def test_hello_gives_an_opaque_peer_id_and_ice_servers(settings):
    settings.ICE_SERVERS = [{"urls": ["stun:stun.example.org:3478"]}]
    room = await make_room()
    communicator, hello = await signal(room, "Ann")
    assert hello["type"] == "hello"
    assert protocol.PEER_ID_PATTERN.match(hello["you"]["peer"])
    assert "specific" not in json.dumps(hello)  # no channel names on the wire
    assert hello["ice_servers"] == [{"urls": ["stun:stun.example.org:3478"]}]
    assert hello["ice_transport_policy"] == "all"
    await communicator.disconnect()


async def test_hello_tells_pages_to_relay_when_the_operator_says_so(settings):
    settings.ICE_TRANSPORT_POLICY = "relay"
    room = await make_room()
    communicator, hello = await signal(room, "Ann")
    assert hello["ice_transport_policy"] == "relay"
    await communicator.disconnect()


async def test_roles_waiting_ready_and_third_refused():
    """Alone: waiting. Second: both ready, the newcomer initiates. Third: room-full."""
    room = await make_room()
    ann, ann_hello = await joined(room, "Ann")
    assert await ann.receive_json_from() == {"type": "waiting", "mode": "chat"}
    bob, bob_hello = await joined(room, "Bob")
    bob_ready = await bob.receive_json_from()
    ann_ready = await ann.receive_json_from()
    assert bob_ready == {"type": "ready", "mode": "chat", "initiator": True,
                         "peer": ann_hello["you"]["peer"], "peer_name": "Ann"}
    assert ann_ready == {"type": "ready", "mode": "chat", "initiator": False,
                         "peer": bob_hello["you"]["peer"], "peer_name": "Bob"}
    cat, _ = await joined(room, "Cat")
    full = await cat.receive_json_from()
    assert full["type"] == "room-full" and full["mode"] == "chat"
    # Refused, so not joined: relaying is refused too.
    await cat.send_json_to({"type": "offer", "sdp": SDP})
    assert (await cat.receive_json_from())["code"] == protocol.NOT_JOINED
    for communicator in (ann, bob, cat):
        await communicator.disconnect()


async def test_relay_stays_within_room_and_mode():
    """offer/answer/candidates reach only the other peer of the same room and mode."""
    room = await make_room()
    other_room = await make_room("Other")
    ann, _ = await joined(room, "Ann", "chat")
    await receive_type(ann, "waiting")
    bob, bob_hello = await joined(room, "Bob", "chat")
    bob_ready = await receive_type(bob, "ready")
    await receive_type(ann, "ready")
    video_ann, _ = await joined(room, "Ann", "video")  # same person, other mode: separate call
    await receive_type(video_ann, "waiting")
    stranger, _ = await joined(other_room, "Zed", "chat")
    await receive_type(stranger, "waiting")

    await bob.send_json_to({"type": "offer", "sdp": SDP, "peer": bob_ready["peer"]})
    await ann.send_json_to({"type": "answer", "sdp": SDP})
    await bob.send_json_to({"type": "ice-candidate", "candidate": CANDIDATE})
    bob_peer = bob_hello["you"]["peer"]
    assert await ann.receive_json_from() == {"type": "offer", "sdp": SDP, "peer": bob_peer}
    candidate = await ann.receive_json_from()
    assert candidate["type"] == "ice-candidate" and candidate["peer"] == bob_peer
    assert candidate["candidate"]["candidate"] == CANDIDATE["candidate"]
    answer = await bob.receive_json_from()
    assert answer["type"] == "answer" and answer["sdp"] == SDP
    assert await video_ann.receive_nothing(timeout=0.2)
    assert await stranger.receive_nothing(timeout=0.05)
    for communicator in (ann, bob, video_ann, stranger):
        await communicator.disconnect()


async def test_a_peer_that_sends_no_separate_candidates_still_connects():
    """aiortc-style peers put all candidates in the SDP: offer and answer alone are relayed."""
    room = await make_room()
    ann, _ = await joined(room, "Ann")
    await receive_type(ann, "waiting")
    bob, _ = await joined(room, "Bob")
    await receive_type(bob, "ready")
    await receive_type(ann, "ready")
    full_sdp = SDP + "a=candidate:1 1 udp 2122260223 127.0.0.1 50000 typ host\r\n"
    await bob.send_json_to({"type": "offer", "sdp": full_sdp})
    assert (await receive_type(ann, "offer"))["sdp"] == full_sdp
    await ann.send_json_to({"type": "answer", "sdp": full_sdp})
    assert (await receive_type(bob, "answer"))["sdp"] == full_sdp
    await ann.disconnect()
    await bob.disconnect()


async def test_peer_left_and_back_to_waiting():
    room = await make_room()
    ann, _ = await joined(room, "Ann")
    await receive_type(ann, "waiting")
    bob, bob_hello = await joined(room, "Bob")
    await receive_type(bob, "ready")
    await receive_type(ann, "ready")
    await bob.disconnect()
    assert await ann.receive_json_from() == {"type": "peer-left", "peer": bob_hello["you"]["peer"]}
    assert await ann.receive_json_from() == {"type": "waiting", "mode": "chat"}
    # The place is free again.
    cat, _ = await joined(room, "Cat")
    assert (await receive_type(cat, "ready"))["initiator"] is True
    await ann.disconnect()
    await cat.disconnect()


async def test_leave_message_frees_the_place():
    room = await make_room()
    ann, _ = await joined(room, "Ann")
    await receive_type(ann, "waiting")
    bob, _ = await joined(room, "Bob")
    await receive_type(bob, "ready")
    await receive_type(ann, "ready")
    await bob.send_json_to({"type": "leave"})
    assert (await bob.receive_json_from())["type"] == "left"
    assert (await ann.receive_json_from())["type"] == "peer-left"
    await bob.send_json_to({"type": "offer", "sdp": SDP})
    assert (await receive_type(bob, "error"))["code"] == protocol.NOT_JOINED
    await ann.disconnect()
    await bob.disconnect()


async def test_message_for_a_peer_that_is_gone_gets_an_error():
    room = await make_room()
    ann, ann_hello = await joined(room, "Ann")
    await receive_type(ann, "waiting")
    await ann.send_json_to({"type": "offer", "sdp": SDP})
    assert (await ann.receive_json_from())["code"] == protocol.NO_PEER
    bob, bob_hello = await joined(room, "Bob")
    await receive_type(ann, "ready")
    await bob.disconnect()
    await receive_type(ann, "waiting")
    gone = bob_hello["you"]["peer"]
    await ann.send_json_to({"type": "ice-candidate", "candidate": CANDIDATE, "peer": gone})
    error = await ann.receive_json_from()
    assert error["type"] == "error" and error["code"] == protocol.PEER_GONE
    await ann.disconnect()


async def test_same_person_rejoining_replaces_the_old_connection():
    """A reload that arrives before the old socket is gone takes over its place."""
    room = await make_room()
    ann, _ = await joined(room, "Ann")
    await receive_type(ann, "waiting")
    bob_key = await guest_session_key(room, "Bob")
    bob_old, old_hello = await joined(room, "Bob", key=bob_key)
    await receive_type(bob_old, "ready")
    await receive_type(ann, "ready")

    bob_new, new_hello = await joined(room, "Bob", key=bob_key)
    assert (await receive_type(bob_new, "ready"))["initiator"] is True
    assert await bob_old.receive_json_from() == {"type": "replaced"}
    closed = await bob_old.receive_output(timeout=3)
    assert closed == {"type": "websocket.close", "code": protocol.CLOSE_REPLACED}
    assert await ann.receive_json_from() == {"type": "peer-left", "peer": old_hello["you"]["peer"]}
    ready = await ann.receive_json_from()
    assert ready["type"] == "ready" and ready["peer"] == new_hello["you"]["peer"]
    await ann.disconnect()
    await bob_new.disconnect()


BAD_SIGNALS = [
    ({"type": "join"}, room_protocol.MISSING_FIELD),
    ({"type": "join", "mode": "audio"}, room_protocol.INVALID_FIELD),
    ({"type": "hangup"}, room_protocol.UNKNOWN_TYPE),
    ({"type": "offer"}, room_protocol.MISSING_FIELD),
    ({"type": "offer", "sdp": 42}, room_protocol.INVALID_FIELD),
    ({"type": "offer", "sdp": "hello"}, room_protocol.INVALID_FIELD),
    ({"type": "offer", "sdp": SDP + "a=" + "x" * 70000}, protocol.SDP_TOO_LARGE),
    ({"type": "answer", "sdp": SDP, "peer": "specific.abc!"}, room_protocol.INVALID_FIELD),
    ({"type": "ice-candidate"}, room_protocol.MISSING_FIELD),
    ({"type": "ice-candidate", "candidate": "candidate:1"}, room_protocol.INVALID_FIELD),
    ({"type": "ice-candidate", "candidate": {"candidate": "evil"}}, room_protocol.INVALID_FIELD),
    ({"type": "ice-candidate", "candidate": {**CANDIDATE, "sdpMLineIndex": -1}},
     room_protocol.INVALID_FIELD),
    ({"type": "ice-candidate", "candidate": {"candidate": CANDIDATE["candidate"]}},
     room_protocol.INVALID_FIELD),
    ({"type": "ice-candidate", "candidate": {**CANDIDATE, "candidate": "c" * 2000}},
     room_protocol.INVALID_FIELD),
]


async def test_every_bad_signal_gets_an_error_and_the_socket_stays_open():
    room = await make_room()
    ann, _ = await joined(room, "Ann")
    await receive_type(ann, "waiting")
    for frame, code in BAD_SIGNALS:
        await ann.send_json_to(frame)
        error = await receive_type(ann, "error")
        assert error["code"] == code, frame
    await ann.send_to(text_data="{oops")
    assert (await receive_type(ann, "error"))["code"] == room_protocol.BAD_JSON
    await ann.send_to(bytes_data=b"\x01")
    assert (await receive_type(ann, "error"))["code"] == room_protocol.BINARY_NOT_SUPPORTED
    await ann.send_json_to({"type": "join", "mode": "chat"})
    assert (await receive_type(ann, "error"))["code"] == protocol.ALREADY_JOINED
    # Still in the call: a newcomer is paired with Ann.
    bob, _ = await joined(room, "Bob")
    assert (await receive_type(bob, "ready"))["peer_name"] == "Ann"
    await ann.disconnect()
    await bob.disconnect()


async def test_signaling_is_rate_capped(settings):
    settings.PARLEY = {**settings.PARLEY, "SIGNAL_RATE_BURST": 3, "SIGNAL_RATE_PER_SECOND": 0.001,
                       "FLOOD_CLOSE_AFTER": 4}
    room = await make_room()
    ann, _ = await joined(room, "Ann")  # spends 1
    await receive_type(ann, "waiting")
    for _ in range(2):
        await ann.send_json_to({"type": "ice-candidate", "candidate": CANDIDATE})
        assert (await ann.receive_json_from())["code"] == protocol.NO_PEER
    await ann.send_json_to({"type": "ice-candidate", "candidate": CANDIDATE})
    assert (await ann.receive_json_from())["code"] == room_protocol.RATE_LIMITED
    for _ in range(3):
        await ann.send_json_to({"type": "ice-candidate", "candidate": CANDIDATE})
    while (output := await ann.receive_output(timeout=3))["type"] != "websocket.close":
        pass
    assert output["code"] == room_protocol.CLOSE_FLOOD
