"""Issue #10 regressions for the socket base class: hostile frames get `error` events, never
a 1011; whatever a socket started ends with it; access taken away closes open sockets; only
our own origin opens a page's socket."""

from __future__ import annotations

import asyncio
import json

import pytest
from channels.db import database_sync_to_async
from channels.testing import WebsocketCommunicator

from project.asgi import application
from rooms import protocol, services
from rooms.consumers import RoomHeartbeat
from rooms.fanout import fanout_stats
from rooms.models import Room
from rooms.presence import presence_store
from rooms.sockets import socket_stats
from signaling.calls import directory
from tests.support.sockets import (
    close_db_connections,
    connected,
    guest_session_key,
    receive_type,
    room_socket,
    stop_in_process_calls,
)
from transcription import engines, keys

pytestmark = pytest.mark.django_db(transaction=True)

DEEP = "[" * 3000 + "]" * 3000  # a 6 KB frame that used to crash every socket with 1011
DEEP_OBJECT = '{"type":"ping","x":' + DEEP + "}"


@pytest.fixture(autouse=True)
async def cleanup():
    yield
    await close_db_connections()
    await stop_in_process_calls()


@database_sync_to_async
def make_room(name: str = "Hard", private: bool = False) -> Room:
    return services.create_room(name, private=private)


def held() -> dict:
    """What this process holds: open sockets by kind, their tasks, engine streams, slots,
    rooms in the fan-out and their heartbeats."""
    return {**socket_stats(), **engines.open_streams(), **fanout_stats(),
            "room_heartbeats": RoomHeartbeat.running()}


@pytest.fixture(autouse=True)
def nothing_left_behind():
    """Whatever a test's sockets held is given back once they have ended."""
    before = held()
    yield
    assert held() == before


async def open_kind(kind: str, room: Room, name: str = "Ann") -> WebsocketCommunicator:
    communicator, _hello = await connected(room.slug, await guest_session_key(room, name),
                                           kind=kind)
    return communicator


async def realtime_socket(room: Room, name: str = "Ann") -> WebsocketCommunicator:
    key = keys.mint_key(keys.KeyGrant(room.pk, f"g:{name}", name))[0]
    communicator = WebsocketCommunicator(
        application, "/v1/realtime?intent=transcription",
        headers=[(b"host", b"localhost"), (b"authorization", f"Bearer {key}".encode())])
    assert (await communicator.connect())[0]
    assert (await communicator.receive_json_from(timeout=10))["type"] == "session.created"
    return communicator


async def next_error(communicator: WebsocketCommunicator) -> str:
    """The code of the next `error` event, skipping presence and the like."""
    return error_code(await receive_type(communicator, "error"))


def error_code(event: dict) -> str:
    """The code of an `error` event in either wire shape (Parley's or the Realtime API's)."""
    assert event["type"] == "error", event
    return event["error"]["code"] if isinstance(event.get("error"), dict) else event["code"]


@pytest.mark.parametrize("kind", ["rooms", "signal", "sfu", "captions"])
async def test_deep_nesting_and_lone_surrogates_are_errors_on_every_room_socket(kind):
    room = await make_room()
    socket = await open_kind(kind, room)
    for frame, code in [(DEEP, protocol.TOO_DEEP), (DEEP_OBJECT, protocol.TOO_DEEP),
                        ('{"type":"ping","x":"x\\ud800"}', protocol.BAD_TEXT),
                        ('{"type":"x\\udfff"}', protocol.BAD_TEXT)]:
        await socket.send_to(text_data=frame)
        assert await next_error(socket) == code
    await socket.send_to(text_data='{"type":"no-such-type"}')  # still served
    assert await next_error(socket) == protocol.UNKNOWN_TYPE
    await socket.disconnect()


async def test_a_chat_message_with_a_lone_surrogate_is_refused_by_client_id_not_retried():
    room = await make_room()
    socket = await open_kind("rooms", room)
    await socket.send_to(text_data='{"type":"chat.send","client_id":"c1","text":"x\\ud800"}')
    error = await receive_type(socket, "error")
    # Not server_error, which the browser outbox retries forever: a refusal it drops.
    assert (error["code"], error["client_id"]) == (protocol.BAD_TEXT, "c1")
    await socket.send_json_to({"type": "chat.send", "client_id": "c2", "text": "x\ufffd"})
    assert (await receive_type(socket, "chat.ack"))["client_id"] == "c2"
    await socket.disconnect()


async def test_a_handler_that_raises_is_a_server_error_and_the_socket_lives(monkeypatch):
    room = await make_room()
    socket = await open_kind("rooms", room)

    def broken(*args, **kwargs):
        raise RuntimeError("a bug a client frame found")

    monkeypatch.setattr(protocol, "parse_client_message", broken)
    await socket.send_json_to({"type": "ping"})
    assert await next_error(socket) == protocol.SERVER_ERROR
    monkeypatch.undo()
    await socket.send_json_to({"type": "ping"})
    assert (await receive_type(socket, "pong"))["type"] == "pong"
    await socket.disconnect()


async def test_a_cancelled_consumer_still_leaves_presence_and_its_call_place():
    """However a consumer ends (here: cancelled, as daphne does past its close timeout),
    its heartbeat stops and what it held is given back."""
    room = await make_room()
    chat = await open_kind("rooms", room, "Ann")
    signal, signal_hello = await connected(room.slug, await guest_session_key(room, "Ann"),
                                           kind="signal")
    assert await directory().present(room.pk, signal_hello["you"]["id"]) == "Ann"
    assert [p.name for p in await presence_store().members(room.pk)] == ["Ann"]
    # The heartbeats run: the signaling socket's, and the room's for its chat sockets.
    assert (held()["tasks"], held()["room_heartbeats"]) == (1, 1)

    for communicator in (chat, signal):
        communicator.future.cancel()
        with pytest.raises(asyncio.CancelledError):
            await communicator.future

    assert await presence_store().members(room.pk) == []
    assert await directory().present(room.pk, signal_hello["you"]["id"]) is None


REALTIME_BAD_SESSIONS = [
    {"audio": 5},
    {"audio": {"input": []}},
    {"audio": {"input": {"format": "audio/pcm"}}},
    {"audio": {"input": {"turn_detection": {"type": "server_vad", "threshold": "high"}}}},
    {"audio": {"input": {"transcription": {"model": ["x"]}}}},
    {"tools": [{"type": "function"}]},  # not a transcription session's: never sent upstream
]


async def test_realtime_session_updates_are_validated_field_by_field():
    room = await make_room()
    socket = await realtime_socket(room)
    for session in REALTIME_BAD_SESSIONS:
        await socket.send_json_to({"type": "session.update", "session": session})
        assert error_code(await socket.receive_json_from(timeout=5)) in (
            "invalid_type", "invalid_value", "unknown_parameter"), session
    await socket.send_to(text_data=DEEP_OBJECT)
    assert error_code(await socket.receive_json_from()) == protocol.TOO_DEEP
    await socket.send_json_to({"type": "session.update", "session": {
        "type": "transcription", "audio": {"input": {"turn_detection": None}}}})
    assert (await socket.receive_json_from(timeout=5))["type"] == "session.updated"
    await socket.disconnect()


async def test_a_member_holds_at_most_two_transcription_sessions():
    room = await make_room()
    first, second = await realtime_socket(room), await realtime_socket(room)
    key = keys.mint_key(keys.KeyGrant(room.pk, "g:Ann", "Ann"))[0]
    third = WebsocketCommunicator(application, "/v1/realtime", headers=[
        (b"host", b"localhost"), (b"authorization", f"Bearer {key}".encode())])
    assert (await third.connect())[0]
    assert error_code(await third.receive_json_from()) == "too_many_sessions"
    assert (await third.receive_output())["code"] == protocol.CLOSE_TOO_MANY
    await third.disconnect()
    other = await realtime_socket(room, "Bob")  # another member is not affected
    await first.disconnect()
    fourth = await realtime_socket(room)  # a slot given back is free again
    for socket in (second, other, fourth):
        await socket.disconnect()


async def test_audio_beyond_the_backlog_bound_is_refused(monkeypatch):
    """Audio the engine has not taken waits in a bounded inbox: with the engine held up,
    the append past MAX_BACKLOG_BYTES is refused, and the socket goes on."""
    import base64

    from transcription import realtime

    gate = asyncio.Event()
    original_feed = engines.OfflineStream.feed

    async def held_up(stream, pcm):
        await gate.wait()  # an engine slower than the sender
        await original_feed(stream, pcm)

    monkeypatch.setattr(engines.OfflineStream, "feed", held_up)
    room = await make_room()
    socket = await realtime_socket(room)
    chunk_bytes = 512 * 1024
    chunk = base64.b64encode(b"\x00" * chunk_bytes).decode()
    # One is being fed; MAX_BACKLOG_BYTES more may wait; the next is refused.
    waiting = realtime.MAX_BACKLOG_BYTES // chunk_bytes
    for _ in range(1 + waiting + 1):
        await socket.send_json_to({"type": "input_audio_buffer.append", "audio": chunk})
    assert error_code(await socket.receive_json_from(timeout=10)) == "audio_backlog_full"
    gate.set()
    await socket.send_json_to({"type": "input_audio_buffer.clear"})
    while (await socket.receive_json_from(timeout=20))["type"] != "input_audio_buffer.cleared":
        pass
    await socket.disconnect()


async def test_realtime_frames_are_rate_limited(settings):
    settings.PARLEY = {**settings.PARLEY, "REALTIME_RATE_BURST": 3,
                       "REALTIME_RATE_PER_SECOND": 0.01}
    room = await make_room()
    socket = await realtime_socket(room)
    for _ in range(4):
        await socket.send_json_to({"type": "input_audio_buffer.clear"})
    events = [await socket.receive_json_from(timeout=5) for _ in range(4)]
    # The refusal is immediate; the three clears come back once the engine did them.
    assert sorted(e["type"] for e in events) == ["error"] + ["input_audio_buffer.cleared"] * 3
    assert [error_code(e) for e in events if e["type"] == "error"] == [protocol.RATE_LIMITED]
    await socket.disconnect()


@database_sync_to_async
def make_private(room: Room) -> None:
    room.is_private = True
    room.save()


async def test_making_a_room_private_closes_every_guest_socket():
    room = await make_room()
    sockets = [await open_kind(kind, room) for kind in ("rooms", "signal", "sfu", "captions")]
    realtime = await realtime_socket(room)
    await make_private(room)
    for socket in sockets:
        while (output := await socket.receive_output(timeout=5))["type"] != "websocket.close":
            pass
        assert output["code"] == protocol.CLOSE_FORBIDDEN
    assert error_code(await realtime.receive_json_from(timeout=5)) == "access_revoked"
    assert (await realtime.receive_output(timeout=5))["code"] == protocol.CLOSE_FORBIDDEN
    # A guest cannot come back either.
    again = room_socket(room.slug, await guest_session_key(room, "Ann"))
    await again.connect()
    assert (await again.receive_output())["code"] == protocol.CLOSE_FORBIDDEN
    for socket in (*sockets, realtime, again):  # the client's side of each close
        await socket.disconnect()


async def test_removing_a_member_closes_their_sockets_only(django_user_model):
    from rooms.models import Membership
    from tests.support.sockets import user_session_key

    room = await make_room("Inner", private=True)
    ann = await database_sync_to_async(django_user_model.objects.create_user)("ann", "", "pw")
    bob = await database_sync_to_async(django_user_model.objects.create_user)("bob", "", "pw")
    for user in (ann, bob):
        await database_sync_to_async(Membership.objects.create)(room=room, user=user)
    ann_socket, _ = await connected(room.slug, await user_session_key(ann))
    bob_socket, _ = await connected(room.slug, await user_session_key(bob))
    await database_sync_to_async(Membership.objects.filter(user=ann).delete)()
    while (output := await ann_socket.receive_output(timeout=5))["type"] != "websocket.close":
        pass
    assert output["code"] == protocol.CLOSE_FORBIDDEN
    await ann_socket.disconnect()
    await bob_socket.send_json_to({"type": "ping"})
    assert (await receive_type(bob_socket, "pong"))["type"] == "pong"
    await bob_socket.disconnect()


@pytest.mark.parametrize("origin,scheme,admitted", [
    (b"http://localhost", "ws", True),
    (b"http://localhost:9", "ws", False),  # another port is another site
    (b"https://localhost", "ws", False),  # another scheme too
    (b"https://localhost", "wss", True),  # a TLS proxy's socket (daphne --proxy-headers)
    (b"http://evil.example", "ws", False),
])
async def test_sockets_admit_only_our_own_origin(origin, scheme, admitted):
    room = await make_room()
    session = await guest_session_key(room, "Ann")
    communicator = WebsocketCommunicator(application, f"/ws/rooms/{room.slug}/", headers=[
        (b"host", b"localhost"), (b"origin", origin), (b"cookie", f"sessionid={session}".encode())])
    communicator.scope["scheme"] = scheme
    ok, _ = await communicator.connect()
    assert ok is admitted
    if ok:
        assert (await communicator.receive_json_from())["type"] == "hello"
        await communicator.disconnect()


def test_frame_decoding_bounds():
    from rooms import frames

    for text, code in [
        ('{"a":' + "[" * 40 + "]" * 40 + "}", frames.TOO_DEEP),
        ("[1]", frames.BAD_FRAME),
        ('{"a":' * 40 + "1" + "}" * 40, frames.TOO_DEEP),
        (json.dumps({"type": "x", "v": list(range(frames.MAX_VALUES))}), frames.FRAME_TOO_LARGE),
        ('{"type":"\\ud83d"}', frames.BAD_TEXT),
        ("é" * 3000, frames.FRAME_TOO_LARGE),  # 3,000 characters, 6,000 bytes
    ]:
        with pytest.raises(frames.FrameError) as refused:
            frames.decode_frame(text, None, max_bytes=5000)
        assert refused.value.code == code, text[:40]
    # A valid surrogate pair is one character, not a lone surrogate.
    assert frames.decode_frame('{"type":"\\ud83d\\ude00"}', None, max_bytes=100) == {
        "type": "\U0001f600"}


def test_the_browser_client_mirrors_the_close_and_error_codes():
    """static/parley/rooms-protocol.js holds the same wire constants as rooms/protocol.py."""
    import re
    from pathlib import Path

    source = (Path(__file__).resolve().parents[1] / "static/parley/rooms-protocol.js").read_text()
    js_closes = dict(re.findall(r"export const (CLOSE_\w+) = (\d+);", source))
    py_closes = {name: str(value) for name, value in vars(protocol).items()
                 if name.startswith("CLOSE_")}
    assert js_closes == py_closes
    block = re.search(r"export const ErrorCode = Object.freeze\(\{(.*?)\}\);", source, re.S)
    js_errors = dict(re.findall(r'(\w+): "(\w+)"', block.group(1)))
    py_errors = {name: value for name, value in vars(protocol).items()
                 if isinstance(value, str) and name.isupper() and not name.startswith("CLOSE_")
                 and re.fullmatch(r"[a-z_]+", value)}
    assert js_errors == py_errors


@database_sync_to_async
def seed_long_messages(room: Room, count: int) -> None:
    from rooms.identity import Participant

    author = Participant(key="g:seed", name="Seeder")
    for n in range(count):
        services.post_message(room, author, f"{n} " + "€" * 3990, f"long-{n}")


async def test_a_resume_of_long_messages_comes_in_budgeted_frames():
    """Hello and chat.backlog carry at most 192 KiB of UTF-8 (3 bytes a '€' here): a resume
    of 60 such messages is cut with `more`, and syncing gets exactly the rest."""
    room = await make_room()
    await seed_long_messages(room, 60)
    session = await guest_session_key(room, "Ann")
    socket = room_socket(room.slug, session, query="after=0")
    assert (await socket.connect())[0]
    output = await socket.receive_output()
    hello = json.loads(output["text"])
    assert hello["type"] == "hello" and hello["more"] is True
    assert len(output["text"].encode()) <= services.BACKLOG_BUDGET_BYTES + 2048
    seqs = [m["seq"] for m in hello["messages"]]
    while True:
        await socket.send_json_to({"type": "chat.sync", "after": seqs[-1]})
        backlog = {}
        while backlog.get("type") != "chat.backlog":  # skipping presence
            output = await socket.receive_output()
            backlog = json.loads(output["text"])
        assert len(output["text"].encode()) <= services.BACKLOG_BUDGET_BYTES + 2048
        seqs += [m["seq"] for m in backlog["messages"]]
        if not backlog["more"]:
            break
    assert seqs == list(range(1, 61))
    await socket.disconnect()
