"""The participant-addressed signaling socket through the full ASGI stack."""

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
NO_CALL = "0123456789abcdef"


@pytest.fixture(autouse=True)
async def close_consumer_db_connections():
    yield
    await close_db_connections()


@pytest.fixture(autouse=True)
def fresh_directory():
    import signaling.calls

    signaling.calls._directory = None
    yield
    signaling.calls._directory = None


@database_sync_to_async
def make_room(name="Lounge"):
    return services.create_room(name, private=False)


class Person:
    """One tab of a participant on the signaling socket."""

    def __init__(self, communicator, hello):
        self.socket, self.hello = communicator, hello
        self.id = hello["you"]["id"]

    async def send(self, **message) -> None:
        await self.socket.send_json_to(message)

    async def next(self, kind: str | None = None) -> dict:
        if kind is None:
            return await self.socket.receive_json_from(timeout=3)
        return await receive_type(self.socket, kind)

    async def nothing(self, timeout: float = 0.1) -> bool:
        return await self.socket.receive_nothing(timeout=timeout)

    async def close(self) -> None:
        await self.socket.disconnect()


async def person(room, name, *, key=None) -> Person:
    key = key or await guest_session_key(room, name)
    return Person(*await connected(room.slug, key, kind="signal"))


async def ringing_call(caller: Person, callee: Person, mode="chat") -> str:
    await caller.send(type="invite", to=callee.id, mode=mode, client_id="c1")
    ringing = await caller.next("ringing")
    invite = await callee.next("invite")
    assert invite["call"] == ringing["call"]
    return ringing["call"]


async def accepted_call(caller: Person, callee: Person, mode="chat") -> str:
    call = await ringing_call(caller, callee, mode)
    await callee.send(type="accept", call=call)
    assert (await callee.next("accepted"))["initiator"] is False
    assert (await caller.next("accepted"))["initiator"] is True
    return call


async def close_all(*people: Person) -> None:
    for p in people:
        await p.close()


async def test_signal_socket_uses_the_room_auth_and_close_codes():
    room = await make_room()
    key = await guest_session_key(room, "Ann")
    for slug, session, code in [("nope", key, 4404), (room.slug, None, 4403)]:
        communicator = room_socket(slug, session, kind="signal")
        assert (await communicator.connect())[0]
        assert (await communicator.receive_output(timeout=3))["code"] == code
    foreign = room_socket(room.slug, key, kind="signal", origin=(b"origin", b"http://x.test"))
    assert not (await foreign.connect())[0]


async def test_hello_names_the_participant_as_the_room_does(settings):
    settings.ICE_SERVERS = [{"urls": ["stun:stun.example.org:3478"]}]
    settings.ICE_TRANSPORT_POLICY = "relay"
    room = await make_room()
    key = await guest_session_key(room, "Ann")
    room_communicator, room_hello = await connected(room.slug, key)
    ann = await person(room, "Ann", key=key)
    assert ann.hello["you"] == room_hello["you"]  # the id others see in presence
    assert "specific" not in json.dumps(ann.hello)  # no channel names on the wire
    assert ann.hello["ice_servers"] == [{"urls": ["stun:stun.example.org:3478"]}]
    assert ann.hello["ice_transport_policy"] == "relay"
    assert ann.hello["limits"] == {"invite_timeout_seconds": 30, "max_pending_invites": 3,
                                   "max_direct_calls": 4, "max_file_bytes": 64 * 1024 * 1024}
    await ann.close()
    await room_communicator.disconnect()


async def test_invitation_rings_every_tab_first_accept_wins_and_relay_is_pairwise():
    room = await make_room()
    ann = await person(room, "Ann")
    bob_key = await guest_session_key(room, "Bob")
    bob_tab1, bob_tab2 = await person(room, "Bob", key=bob_key), await person(room, "Bob",
                                                                               key=bob_key)
    cat = await person(room, "Cat")
    await ann.send(type="invite", to=bob_tab1.id, mode="video", client_id="c1")
    ringing = await ann.next()
    assert ringing == {"type": "ringing", "call": ringing["call"], "client_id": "c1",
                       "to": {"id": bob_tab1.id, "name": "Bob"}, "mode": "video",
                       "expires_in": 30}
    call = ringing["call"]
    assert protocol.CALL_ID_PATTERN.match(call)
    for tab in (bob_tab1, bob_tab2):
        assert await tab.next() == {"type": "invite", "call": call, "mode": "video",
                                    "from": {"id": ann.id, "name": "Ann"}, "expires_in": 30}
    assert await cat.nothing()

    await bob_tab2.send(type="accept", call=call)
    assert await bob_tab2.next() == {"type": "accepted", "call": call, "mode": "video",
                                     "peer": {"id": ann.id, "name": "Ann"}, "initiator": False}
    assert await ann.next() == {"type": "accepted", "call": call, "mode": "video",
                                "peer": {"id": bob_tab1.id, "name": "Bob"}, "initiator": True}
    assert await bob_tab1.next() == {"type": "call-ended", "call": call,
                                     "reason": "answered-elsewhere"}
    await bob_tab1.send(type="accept", call=call)
    assert (await bob_tab1.next("error"))["code"] == protocol.NOT_RINGING

    await ann.send(type="offer", call=call, sdp=SDP)
    assert await bob_tab2.next() == {"type": "offer", "call": call, "sdp": SDP}
    await bob_tab2.send(type="answer", call=call, sdp=SDP)
    await bob_tab2.send(type="ice-candidate", call=call, candidate=CANDIDATE)
    assert (await ann.next())["type"] == "answer"
    candidate = await ann.next()
    assert candidate["type"] == "ice-candidate" and candidate["call"] == call
    assert candidate["candidate"]["candidate"] == CANDIDATE["candidate"]
    # The tab that did not accept, and anyone else, may not speak in this call.
    for outsider in (bob_tab1, cat):
        await outsider.send(type="offer", call=call, sdp=SDP)
        error = await outsider.next("error")
        assert error["code"] == protocol.NOT_YOUR_CALL and error["call"] == call
    assert await ann.nothing() and await bob_tab2.nothing()
    await close_all(ann, bob_tab1, bob_tab2, cat)


async def test_decline_cancel_and_hang_up_tell_both_sides():
    room = await make_room()
    ann, bob = await person(room, "Ann"), await person(room, "Bob")
    call = await ringing_call(ann, bob)
    await ann.send(type="offer", call=call, sdp=SDP)
    assert (await ann.next("error"))["code"] == protocol.NOT_ACCEPTED
    await bob.send(type="decline", call=call)
    assert await bob.next() == {"type": "call-ended", "call": call, "reason": "declined"}
    assert await ann.next() == {"type": "call-ended", "call": call, "reason": "declined"}

    call = await ringing_call(ann, bob)
    await bob.send(type="cancel", call=call)  # only the caller cancels
    assert (await bob.next("error"))["code"] == protocol.NOT_YOUR_CALL
    await ann.send(type="cancel", call=call)
    assert (await ann.next())["reason"] == "cancelled"
    assert (await bob.next())["reason"] == "cancelled"

    call = await accepted_call(ann, bob)
    await bob.send(type="hang-up", call=call)
    assert (await bob.next())["reason"] == "hung-up"
    assert (await ann.next())["reason"] == "hung-up"
    await ann.send(type="offer", call=call, sdp=SDP)
    assert (await ann.next("error"))["code"] == protocol.UNKNOWN_CALL
    await close_all(ann, bob)


async def test_an_unanswered_invitation_times_out_on_both_sides(settings):
    settings.PARLEY = {**settings.PARLEY, "SIGNAL_INVITE_TIMEOUT_SECONDS": 0.2}
    room = await make_room()
    ann, bob = await person(room, "Ann"), await person(room, "Bob")
    call = await ringing_call(ann, bob)
    assert await ann.next("call-ended") == {"type": "call-ended", "call": call,
                                            "reason": "timeout"}
    assert await bob.next("call-ended") == {"type": "call-ended", "call": call,
                                            "reason": "timeout"}
    await bob.send(type="accept", call=call)
    assert (await bob.next("error"))["code"] == protocol.UNKNOWN_CALL
    await close_all(ann, bob)


async def test_a_closing_socket_ends_its_calls():
    room = await make_room()
    ann, bob, cat = [await person(room, n) for n in ("Ann", "Bob", "Cat")]
    call = await accepted_call(ann, bob)
    await bob.close()
    assert await ann.next() == {"type": "call-ended", "call": call, "reason": "gone"}
    # A callee whose last tab closes while it rings: the caller is told too.
    call = await ringing_call(ann, cat)
    await cat.close()
    assert await ann.next() == {"type": "call-ended", "call": call, "reason": "gone"}
    dan = await person(room, "Dan")
    call = await ringing_call(dan, ann)
    await dan.close()
    assert await ann.next() == {"type": "call-ended", "call": call, "reason": "gone"}
    await ann.send(type="invite", to=cat.id, mode="chat")
    assert (await ann.next("error"))["code"] == protocol.NOT_HERE
    await ann.close()


async def test_several_pairs_talk_at_once_and_nobody_is_room_full():
    """Ann-Bob and Cat-Dan in one room; Eve then calls Ann, who is already in a call."""
    room = await make_room()
    ann, bob, cat, dan, eve = [await person(room, n) for n in ("Ann", "Bob", "Cat", "Dan", "Eve")]
    first = await accepted_call(ann, bob, "video")
    second = await accepted_call(cat, dan, "chat")
    third = await accepted_call(eve, ann, "chat")
    await ann.send(type="offer", call=first, sdp=SDP)
    await cat.send(type="offer", call=second, sdp=SDP)
    await eve.send(type="offer", call=third, sdp=SDP)
    assert (await bob.next())["call"] == first
    assert (await dan.next())["call"] == second
    assert (await ann.next())["call"] == third
    assert await cat.nothing() and await eve.nothing()
    await close_all(ann, bob, cat, dan, eve)


async def test_invitation_limits(settings):
    settings.PARLEY = {**settings.PARLEY, "SIGNAL_MAX_PENDING_INVITES": 1,
                       "SIGNAL_MAX_DIRECT_CALLS": 2}
    room = await make_room()
    ann, bob, cat, dan = [await person(room, n) for n in ("Ann", "Bob", "Cat", "Dan")]

    async def refused(sender: Person, to: str, code: str, mode: str = "chat") -> None:
        await sender.send(type="invite", to=to, mode=mode, client_id="x9")
        error = await sender.next("error")
        assert (error["code"], error["client_id"]) == (code, "x9")

    await refused(ann, ann.id, protocol.SELF_CALL)
    await refused(ann, "p000000000000000", protocol.NOT_HERE)
    await ringing_call(ann, bob)
    await refused(ann, cat.id, protocol.TOO_MANY_INVITES)  # one ringing at a time
    await refused(bob, ann.id, protocol.DUPLICATE_CALL)  # a chat between them exists
    await accepted_call(bob, ann, "video")  # another mode is another call
    await refused(cat, ann.id, protocol.BUSY)  # Ann is in two calls
    await refused(ann, dan.id, protocol.TOO_MANY_CALLS)
    await close_all(ann, bob, cat, dan)


BAD_SIGNALS = [
    ({"type": "invite"}, room_protocol.MISSING_FIELD),
    ({"type": "invite", "to": "p1", "mode": "audio"}, room_protocol.INVALID_FIELD),
    ({"type": "invite", "to": "a b", "mode": "chat"}, room_protocol.INVALID_FIELD),
    ({"type": "invite", "to": "p1", "mode": "chat", "client_id": 5}, room_protocol.INVALID_FIELD),
    ({"type": "join", "mode": "chat"}, room_protocol.UNKNOWN_TYPE),
    ({"type": "accept"}, room_protocol.MISSING_FIELD),
    ({"type": "hang-up", "call": "specific.abc!"}, room_protocol.INVALID_FIELD),
    ({"type": "decline", "call": NO_CALL}, protocol.UNKNOWN_CALL),
    ({"type": "offer", "call": NO_CALL}, room_protocol.MISSING_FIELD),
    ({"type": "offer", "call": NO_CALL, "sdp": 42}, room_protocol.INVALID_FIELD),
    ({"type": "offer", "call": NO_CALL, "sdp": "hello"}, room_protocol.INVALID_FIELD),
    ({"type": "offer", "call": NO_CALL, "sdp": SDP + "a=" + "x" * 70000}, protocol.SDP_TOO_LARGE),
    ({"type": "answer", "call": NO_CALL, "sdp": SDP}, protocol.UNKNOWN_CALL),
    ({"type": "ice-candidate", "call": NO_CALL}, room_protocol.MISSING_FIELD),
    ({"type": "ice-candidate", "call": NO_CALL, "candidate": "candidate:1"},
     room_protocol.INVALID_FIELD),
    ({"type": "ice-candidate", "call": NO_CALL, "candidate": {"candidate": "evil"}},
     room_protocol.INVALID_FIELD),
    ({"type": "ice-candidate", "call": NO_CALL, "candidate": {**CANDIDATE, "sdpMLineIndex": -1}},
     room_protocol.INVALID_FIELD),
    ({"type": "ice-candidate", "call": NO_CALL,
      "candidate": {"candidate": CANDIDATE["candidate"]}}, room_protocol.INVALID_FIELD),
    ({"type": "ice-candidate", "call": NO_CALL,
      "candidate": {**CANDIDATE, "candidate": "c" * 2000}}, room_protocol.INVALID_FIELD),
]


async def test_every_bad_signal_gets_an_error_and_the_socket_stays_open():
    room = await make_room()
    ann, bob = await person(room, "Ann"), await person(room, "Bob")
    for frame, code in BAD_SIGNALS:
        await ann.send(**frame)
        error = await ann.next("error")
        assert error["code"] == code, frame
    await ann.socket.send_to(text_data="{oops")
    assert (await ann.next("error"))["code"] == room_protocol.BAD_JSON
    await ann.socket.send_to(bytes_data=b"\x01")
    assert (await ann.next("error"))["code"] == room_protocol.BINARY_NOT_SUPPORTED
    await accepted_call(ann, bob)  # still served
    await close_all(ann, bob)


async def test_signaling_is_rate_capped(settings):
    settings.PARLEY = {**settings.PARLEY, "SIGNAL_RATE_BURST": 3, "SIGNAL_RATE_PER_SECOND": 0.001,
                       "FLOOD_CLOSE_AFTER": 4}
    room = await make_room()
    ann = await person(room, "Ann")
    for _ in range(3):
        await ann.send(type="hang-up", call=NO_CALL)
        assert (await ann.next())["code"] == protocol.UNKNOWN_CALL
    await ann.send(type="hang-up", call=NO_CALL)
    assert (await ann.next())["code"] == room_protocol.RATE_LIMITED
    for _ in range(3):
        await ann.send(type="hang-up", call=NO_CALL)
    while (output := await ann.socket.receive_output(timeout=3))["type"] != "websocket.close":
        pass
    assert output["code"] == room_protocol.CLOSE_FLOOD
