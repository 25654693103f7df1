"""The room socket through the full ASGI stack (origin check, session auth, consumer)."""

from __future__ import annotations

import asyncio
import json

import pytest
from channels.db import database_sync_to_async
from django.contrib.auth import get_user_model

from rooms import protocol, services
from rooms.identity import Participant
from rooms.models import Membership, Message, Room
from tests.support.sockets import (
    close_db_connections,
    connected,
    guest_session_key,
    receive_type,
    room_socket,
    user_session_key,
)

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture(autouse=True)
async def close_consumer_db_connections():
    """Leave no connection open in the consumers' thread (PostgreSQL cannot drop the test
    database while one is)."""
    yield
    await close_db_connections()


@pytest.fixture
def fast_limits(settings):
    def apply(**overrides):
        settings.PARLEY = {**settings.PARLEY, **overrides}

    return apply


@database_sync_to_async
def make_room(name="Lounge", private=False) -> Room:
    return services.create_room(name, private=private)


@database_sync_to_async
def seed_messages(room: Room, count: int) -> None:
    author = Participant(key="g:seed", name="Seeder")
    for n in range(count):
        services.post_message(room, author, f"message {n + 1}", f"seed-{n + 1}")


@database_sync_to_async
def stored(room: Room) -> list[tuple[int, str]]:
    return list(Message.objects.filter(room=room).order_by("seq").values_list("seq", "text"))


async def close_code(communicator) -> int:
    ok, _ = await communicator.connect()
    assert ok
    event = await communicator.receive_output(timeout=3)
    assert event["type"] == "websocket.close"
    return event["code"]


# --- handshake and auth ---------------------------------------------------------------------

async def test_unknown_room_closes_4404():
    """A socket for a room that does not exist is closed with 4404."""
    room = await make_room()
    key = await guest_session_key(room, "Ann")
    assert await close_code(room_socket("no-such-room", key)) == protocol.CLOSE_NOT_FOUND


async def test_without_joined_session_closes_4403():
    """No session, or a session that joined another room, gets 4403."""
    room = await make_room()
    other = await make_room("Other")
    assert await close_code(room_socket(room.slug, None)) == protocol.CLOSE_FORBIDDEN
    key = await guest_session_key(other, "Ann")
    assert await close_code(room_socket(room.slug, key)) == protocol.CLOSE_FORBIDDEN


async def test_foreign_origin_is_refused_at_handshake():
    """An Origin outside ALLOWED_HOSTS never reaches the consumer."""
    room = await make_room()
    key = await guest_session_key(room, "Ann")
    communicator = room_socket(room.slug, key, origin=(b"origin", b"http://evil.example"))
    ok, _ = await communicator.connect()
    assert not ok
    missing = room_socket(room.slug, key, origin=None)
    ok, _ = await missing.connect()
    assert not ok


async def test_private_room_admits_members_and_staff_only():
    """Guests and non-members get 4403 in a private room; members and staff get hello."""
    User = get_user_model()
    owner = await database_sync_to_async(User.objects.create_user)("owner", password="pw-123456")
    stranger = await database_sync_to_async(User.objects.create_user)("stranger", password="x")
    staff = await database_sync_to_async(User.objects.create_user)(
        "staff", password="x", is_staff=True
    )
    room = await database_sync_to_async(services.create_room)("Secret", private=True, creator=owner)

    guest = await guest_session_key(room, "Sneaky")
    assert await close_code(room_socket(room.slug, guest)) == protocol.CLOSE_FORBIDDEN
    assert await close_code(
        room_socket(room.slug, await user_session_key(stranger))
    ) == protocol.CLOSE_FORBIDDEN

    for user in (owner, staff):
        communicator, hello = await connected(room.slug, await user_session_key(user))
        assert hello["you"]["name"] == user.username
        assert hello["room"]["private"] is True
        await communicator.disconnect()

    await database_sync_to_async(Membership.objects.create)(room=room, user=stranger)
    communicator, _ = await connected(room.slug, await user_session_key(stranger))
    await communicator.disconnect()


# --- hello, send, ack, ordering -------------------------------------------------------------

async def test_hello_carries_room_identity_presence_and_last_50_messages():
    """hello has the room, my id, who is here, the room's seq and its last 50 messages."""
    room = await make_room()
    await seed_messages(room, 60)
    communicator, hello = await connected(room.slug, await guest_session_key(room, "Ann"))
    assert hello["room"] == {"slug": room.slug, "name": "Lounge", "private": False}
    assert hello["you"]["name"] == "Ann" and hello["you"]["id"].startswith("p")
    assert hello["presence"] == [hello["you"]]
    assert hello["seq"] == 60
    assert [m["seq"] for m in hello["messages"]] == list(range(11, 61))
    assert hello["reset"] is False
    first = hello["messages"][0]
    assert first["text"] == "message 11" and first["author"]["name"] == "Seeder"
    assert set(first) == {"seq", "id", "author", "text", "sent_at"}
    await communicator.disconnect()


async def test_send_is_stored_broadcast_and_acked():
    """chat.send is stored, reaches everyone in the room as chat.message, and is acked."""
    room = await make_room()
    ann, _ = await connected(room.slug, await guest_session_key(room, "Ann"))
    bob, _ = await connected(room.slug, await guest_session_key(room, "Bob"))
    await ann.send_json_to({"type": "chat.send", "text": "hello bob", "client_id": "c1"})

    seen_by_bob = await receive_type(bob, "chat.message")
    # The sender gets its ack straight away and the broadcast through the layer after it.
    ack = await receive_type(ann, "chat.ack")
    seen_by_ann = await receive_type(ann, "chat.message")
    assert seen_by_bob == seen_by_ann
    assert seen_by_bob["text"] == "hello bob" and seen_by_bob["author"]["name"] == "Ann"
    assert ack == {"type": "chat.ack", "client_id": "c1", "seq": 1,
                   "id": seen_by_bob["id"], "sent_at": seen_by_bob["sent_at"]}
    assert await stored(room) == [(1, "hello bob")]
    await ann.disconnect()
    await bob.disconnect()


async def test_resent_client_id_is_stored_once():
    """A re-sent client_id is acked with the first seq and neither stored nor broadcast again."""
    room = await make_room()
    key = await guest_session_key(room, "Ann")
    ann, _ = await connected(room.slug, key)
    bob, _ = await connected(room.slug, await guest_session_key(room, "Bob"))
    frame = {"type": "chat.send", "text": "only once", "client_id": "same-id"}
    await ann.send_json_to(frame)
    first = await receive_type(ann, "chat.ack")
    await ann.disconnect()

    # The same browser session, reconnected, re-sends the message it never saw acked.
    again, _ = await connected(room.slug, key)
    await again.send_json_to(frame)
    second = await receive_type(again, "chat.ack")
    assert second["seq"] == first["seq"] == 1
    await again.send_json_to({"type": "chat.send", "text": "next", "client_id": "other"})
    assert (await receive_type(again, "chat.ack"))["seq"] == 2

    broadcast = [await receive_type(bob, "chat.message"), await receive_type(bob, "chat.message")]
    assert [m["text"] for m in broadcast] == ["only once", "next"]
    assert await stored(room) == [(1, "only once"), (2, "next")]
    await again.disconnect()
    await bob.disconnect()


async def test_concurrent_senders_get_gap_free_ordered_seq(fast_limits):
    """Two clients sending at once: seqs are 1..N without gaps and arrive in order."""
    fast_limits(RATE_BURST=100)
    room = await make_room()
    ann, _ = await connected(room.slug, await guest_session_key(room, "Ann"))
    bob, _ = await connected(room.slug, await guest_session_key(room, "Bob"))
    per_client = 15
    await asyncio.gather(*(
        client.send_json_to({"type": "chat.send", "text": f"{name}{n}", "client_id": f"{name}{n}"})
        for n in range(per_client) for client, name in ((ann, "a"), (bob, "b"))
    ))
    for client in (ann, bob):
        seqs = [(await receive_type(client, "chat.message"))["seq"] for _ in range(2 * per_client)]
        assert seqs == list(range(1, 2 * per_client + 1))
    rows = await stored(room)
    assert [seq for seq, _ in rows] == list(range(1, 2 * per_client + 1))
    await ann.disconnect()
    await bob.disconnect()


# --- resume ----------------------------------------------------------------------------------

async def test_resume_after_gets_exactly_the_missed_messages():
    """?after=<seq> returns the messages after seq, no more and no fewer."""
    room = await make_room()
    await seed_messages(room, 80)
    communicator, hello = await connected(
        room.slug, await guest_session_key(room, "Ann"), query="after=7"
    )
    assert hello["reset"] is False
    assert [m["seq"] for m in hello["messages"]] == list(range(8, 81))
    await communicator.disconnect()


async def test_resume_past_the_limit_or_from_another_history_says_reset(fast_limits):
    """Too far behind, ahead of the room or malformed: reset with the last 50, never a cut list."""
    fast_limits(RESUME_LIMIT=20)
    room = await make_room()
    await seed_messages(room, 60)
    key = await guest_session_key(room, "Ann")
    for query in ("after=10", "after=99", "after=banana"):
        communicator, hello = await connected(room.slug, key, query=query)
        assert hello["reset"] is True, query
        assert [m["seq"] for m in hello["messages"]] == list(range(11, 61))
        await communicator.disconnect()
    communicator, hello = await connected(room.slug, key, query="after=40")
    assert hello["reset"] is False
    assert [m["seq"] for m in hello["messages"]] == list(range(41, 61))
    await communicator.disconnect()


async def test_chat_sync_fills_a_gap_on_a_live_socket():
    """chat.sync {after} answers with chat.backlog holding what came after."""
    room = await make_room()
    communicator, _ = await connected(room.slug, await guest_session_key(room, "Ann"))
    await seed_messages(room, 5)  # stored without a broadcast, as during a Redis blip
    await communicator.send_json_to({"type": "chat.sync", "after": 2})
    backlog = await receive_type(communicator, "chat.backlog")
    assert backlog["seq"] == 5 and backlog["reset"] is False
    assert [m["seq"] for m in backlog["messages"]] == [3, 4, 5]
    await communicator.disconnect()


async def test_heartbeat_carries_the_room_seq(fast_limits):
    """A quiet room still tells each client its current seq."""
    fast_limits(HEARTBEAT_SECONDS=0.05)
    room = await make_room()
    communicator, _ = await connected(room.slug, await guest_session_key(room, "Ann"))
    await seed_messages(room, 3)
    while True:
        beat = await receive_type(communicator, "heartbeat")
        if beat["seq"] == 3:
            break
    await communicator.disconnect()


# --- presence ---------------------------------------------------------------------------------

async def test_presence_counts_a_person_with_two_tabs_once():
    """Join is announced on the first tab, leave only when the last tab closes."""
    room = await make_room()
    ann_key = await guest_session_key(room, "Ann")
    bob, _ = await connected(room.slug, await guest_session_key(room, "Bob"))

    assert (await receive_type(bob, "presence"))["joined"][0]["name"] == "Bob"  # own join
    tab1, hello1 = await connected(room.slug, ann_key)
    joined = await receive_type(bob, "presence")
    assert joined == {"type": "presence", "joined": [hello1["you"]], "left": []}

    tab2, hello2 = await connected(room.slug, ann_key)
    assert hello2["you"] == hello1["you"]
    assert sorted(p["name"] for p in hello2["presence"]) == ["Ann", "Bob"]

    await tab1.disconnect()
    await tab2.send_json_to({"type": "ping"})
    await receive_type(tab2, "pong")
    assert await bob.receive_nothing(timeout=0.2)  # no leave while a tab remains
    await tab2.disconnect()
    left = await receive_type(bob, "presence")
    assert left == {"type": "presence", "joined": [], "left": [hello1["you"]]}
    await bob.disconnect()


# --- bad input -------------------------------------------------------------------------------

BAD_FRAMES = [
    ("{not json", protocol.BAD_JSON),
    ("[1, 2]", protocol.BAD_FRAME),
    (json.dumps({"text": "no type"}), protocol.MISSING_FIELD),
    (json.dumps({"type": "chat.delete"}), protocol.UNKNOWN_TYPE),
    (json.dumps({"type": "chat.send", "client_id": "x"}), protocol.MISSING_FIELD),
    (json.dumps({"type": "chat.send", "text": "hi"}), protocol.MISSING_FIELD),
    (json.dumps({"type": "chat.send", "text": 5, "client_id": "x"}), protocol.INVALID_FIELD),
    (json.dumps({"type": "chat.send", "text": "  ", "client_id": "x"}), protocol.INVALID_FIELD),
    (json.dumps({"type": "chat.send", "text": "hi", "client_id": "has space"}),
     protocol.INVALID_FIELD),
    (json.dumps({"type": "chat.send", "text": "x" * 4001, "client_id": "x"}),
     protocol.TEXT_TOO_LONG),
    (json.dumps({"type": "chat.send", "text": "x" * 40000, "client_id": "x"}),
     protocol.FRAME_TOO_LARGE),
    (json.dumps({"type": "chat.sync", "after": -1}), protocol.INVALID_FIELD),
    (json.dumps({"type": "chat.sync", "after": True}), protocol.INVALID_FIELD),
]


async def test_every_bad_input_gets_an_error_and_the_socket_stays_open(fast_limits):
    """Each malformed frame gets an `error` with its code; the connection keeps working."""
    fast_limits(RATE_BURST=100)
    room = await make_room()
    communicator, _ = await connected(room.slug, await guest_session_key(room, "Ann"))
    for frame, code in BAD_FRAMES:
        await communicator.send_to(text_data=frame)
        error = await receive_type(communicator, "error")
        assert error["code"] == code, frame[:60]
        assert error["message"]
    await communicator.send_to(bytes_data=b"\x00\x01")
    assert (await receive_type(communicator, "error"))["code"] == protocol.BINARY_NOT_SUPPORTED

    await communicator.send_json_to({"type": "chat.send", "text": "x" * 4000, "client_id": "ok"})
    assert (await receive_type(communicator, "chat.ack"))["seq"] == 1
    assert await stored(room) == [(1, "x" * 4000)]
    await communicator.disconnect()


async def test_too_long_text_error_names_the_client_id():
    """A refused chat.send says which message it refused, so the client can drop it."""
    room = await make_room()
    communicator, _ = await connected(room.slug, await guest_session_key(room, "Ann"))
    await communicator.send_json_to({"type": "chat.send", "text": "y" * 5000, "client_id": "k9"})
    error = await receive_type(communicator, "error")
    assert (error["code"], error["client_id"]) == (protocol.TEXT_TOO_LONG, "k9")
    await communicator.disconnect()


async def test_bursts_are_rate_limited_and_not_stored(fast_limits):
    """Past the burst a send is refused with rate_limited (and retry_after); it is not stored."""
    fast_limits(RATE_BURST=3, RATE_PER_SECOND=0.001)
    room = await make_room()
    communicator, _ = await connected(room.slug, await guest_session_key(room, "Ann"))
    for n in range(4):
        frame = {"type": "chat.send", "text": f"m{n}", "client_id": f"m{n}"}
        await communicator.send_json_to(frame)
    replies = []
    while len(replies) < 7:  # 3 acks, their 3 broadcasts, 1 error
        event = await communicator.receive_json_from()
        if event["type"] != "presence":
            replies.append(event)
    acks = [r["client_id"] for r in replies if r["type"] == "chat.ack"]
    errors = [r for r in replies if r["type"] == "error"]
    assert acks == ["m0", "m1", "m2"]
    assert len(errors) == 1 and errors[0]["code"] == protocol.RATE_LIMITED
    assert errors[0]["client_id"] == "m3" and errors[0]["retry_after"] > 0
    assert [text for _, text in await stored(room)] == ["m0", "m1", "m2"]
    await communicator.disconnect()


async def test_a_flood_past_the_hard_limit_closes_4429(fast_limits):
    """A client that keeps sending while refused is disconnected with 4429."""
    fast_limits(RATE_BURST=2, RATE_PER_SECOND=0.001, FLOOD_CLOSE_AFTER=5)
    room = await make_room()
    communicator, _ = await connected(room.slug, await guest_session_key(room, "Ann"))
    for _ in range(2 + 5):
        await communicator.send_json_to({"type": "ping"})
    while True:
        output = await communicator.receive_output(timeout=3)
        if output["type"] == "websocket.close":
            assert output["code"] == protocol.CLOSE_FLOOD
            break
