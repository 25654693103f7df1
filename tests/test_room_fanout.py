"""The per-process room fan-out (rooms/fanout.py), group commit (rooms/writer.py) and the
per-room heartbeat: the pieces that make a room broadcast cost about one frame per socket."""

from __future__ import annotations

import asyncio
import contextlib
import json

import pytest
from channels.db import database_sync_to_async

from rooms import fanout as fanout_module
from rooms import services, writer
from rooms.fanout import BATCH_MAX_BYTES, RedisBus, RoomFanout, frames_for
from rooms.identity import Participant
from rooms.models import Message, Room
from tests.support.servers import RedisServer
from tests.support.sockets import close_db_connections, connected, guest_session_key

pytestmark = pytest.mark.django_db(transaction=True)


class Collector:
    """A receiver that keeps every call the fan-out makes."""

    def __init__(self):
        self.calls: list[tuple[list[str], list[str]]] = []
        self.arrived = asyncio.Event()

    async def room_frames(self, out) -> None:
        self.calls.append((out.frames, out.texts))
        self.arrived.set()

    def texts(self) -> list[str]:
        return [text for _, texts in self.calls for text in texts]

    async def wait_for(self, count: int) -> None:
        async with asyncio.timeout(10):
            while len(self.texts()) < count:
                self.arrived.clear()
                await self.arrived.wait()


@pytest.fixture(autouse=True)
async def close_connections():
    yield
    await close_db_connections()


# --- frames ------------------------------------------------------------------------------

def test_one_event_is_its_own_frame_and_several_are_a_batch_in_order():
    assert frames_for(['{"type":"a"}']) == ['{"type":"a"}']
    frame, = frames_for(['{"type":"a"}', '{"type":"b","n":1}'])
    assert json.loads(frame) == {"type": "batch", "events": [{"type": "a"}, {"type": "b", "n": 1}]}


def test_batches_stay_under_their_size_bound_and_an_oversized_event_travels_alone():
    small = json.dumps({"type": "chat.message", "text": "x" * 1000})
    huge = json.dumps({"type": "chat.message", "text": "y" * (BATCH_MAX_BYTES + 10)})
    texts = [small] * 150 + [huge] + [small] * 3
    frames = frames_for(texts)
    unpacked = []
    for frame in frames:
        event = json.loads(frame)
        unpacked += event["events"] if event["type"] == "batch" else [event]
        if event["type"] == "batch":
            assert len(frame) <= BATCH_MAX_BYTES
    assert unpacked == [json.loads(t) for t in texts]
    assert huge in frames


# --- one process -------------------------------------------------------------------------

async def test_events_that_pile_up_go_out_as_one_batch_to_every_receiver():
    fanout = RoomFanout()
    ann, bob = Collector(), Collector()
    await fanout.join(7, ann)
    await fanout.join(7, bob)
    # Three events queued before the flusher runs (a process that is behind).
    for n in range(3):
        await fanout.publish(7, [{"type": "chat.message", "seq": n + 1}])
    await ann.wait_for(3)
    await bob.wait_for(3)
    assert len(ann.calls) == 1 and ann.calls == bob.calls
    frames, texts = ann.calls[0]
    assert [e["seq"] for e in json.loads(frames[0])["events"]] == [1, 2, 3]
    await fanout.close()


async def test_a_receiver_that_fails_does_not_stop_the_others():
    class Broken:
        async def room_frames(self, out):
            raise RuntimeError("a bug in one receiver")

    fanout = RoomFanout()
    good = Collector()
    await fanout.join(1, Broken())
    await fanout.join(1, good)
    await fanout.publish(1, [{"type": "presence", "joined": [], "left": []}])
    await good.wait_for(1)
    await fanout.close()


async def test_a_room_is_held_while_it_has_receivers_and_its_task_ends_with_the_last():
    fanout = RoomFanout()
    one, two = Collector(), Collector()
    await fanout.join(3, one)
    await fanout.join(3, two)
    flusher = fanout.rooms[3]._flusher
    await fanout.leave(3, one)
    assert not flusher.done()
    await fanout.leave(3, two)
    assert fanout.rooms == {}
    with pytest.raises(asyncio.CancelledError):
        await flusher
    await fanout.publish(3, [{"type": "presence"}])  # nobody here: nothing to do
    assert one.calls == two.calls == []


# --- several processes over a real redis-server -----------------------------------------

def bus_fanout(url: str) -> RoomFanout:
    """A fan-out as a separate server process would have it (its own bus and origin)."""
    fanout = RoomFanout()
    fanout.bus = RedisBus(url, fanout.deliver_local)
    return fanout


async def test_an_event_reaches_the_other_processes_once_and_its_own_at_once(redis_server):
    one, two = bus_fanout(redis_server.url), bus_fanout(redis_server.url)
    here, there = Collector(), Collector()
    await one.join(11, here)
    await two.join(11, there)  # returns once Redis confirmed the subscription
    await one.publish(11, [{"type": "chat.message", "seq": 1}])
    await there.wait_for(1)
    await two.publish(11, [{"type": "chat.message", "seq": 2}, {"type": "chat.message", "seq": 3}])
    await here.wait_for(3)
    await there.wait_for(3)
    assert [json.loads(t)["seq"] for t in here.texts()] == [1, 2, 3]
    assert [json.loads(t)["seq"] for t in there.texts()] == [1, 2, 3]
    await one.close()
    await two.close()


@pytest.fixture
def own_redis():
    """A redis-server this test may stop and restart (never one REDIS_URL names)."""
    server = RedisServer.new()
    yield server
    server.stop()


async def publish_until_heard(fanout: RoomFanout, room_id: int, listener: Collector) -> None:
    """Publish until `listener` (in another process's fan-out) hears it: while Redis is
    coming back each try is either lost or delivered, so the retry is the test's action,
    bounded by the timeout, not a wait for time to pass."""
    async with asyncio.timeout(20):
        while not listener.texts():
            with contextlib.suppress(Exception):  # Redis is still starting
                await fanout.publish(room_id, [{"type": "chat.message", "seq": 1}])
            await asyncio.sleep(0.2)


async def test_the_bus_resubscribes_after_redis_restarts(own_redis):
    one, two = bus_fanout(own_redis.url), bus_fanout(own_redis.url)
    listener = Collector()
    await one.join(12, Collector())
    await two.join(12, listener)
    own_redis.restart()
    await publish_until_heard(one, 12, listener)
    await one.close()
    await two.close()


async def test_a_room_joined_while_redis_is_down_is_subscribed_once_it_is_back(own_redis):
    one, two = bus_fanout(own_redis.url), bus_fanout(own_redis.url)
    listener = Collector()
    await two.join(14, Collector())  # two's reader is up before Redis goes
    own_redis.stop()
    try:
        await one.join(14, listener)  # its SUBSCRIBE fails; the join goes on after a while
    finally:
        own_redis.start()
    await publish_until_heard(two, 14, listener)
    await one.close()
    await two.close()


async def test_leaving_the_last_room_stops_the_redis_reader(redis_server):
    fanout = bus_fanout(redis_server.url)
    receiver = Collector()
    await fanout.join(13, receiver)
    reader = fanout.bus._reader
    assert reader is not None and not reader.done()
    await fanout.leave(13, receiver)
    async with asyncio.timeout(10):
        await reader
    await fanout.close()


# --- group commit ------------------------------------------------------------------------

@database_sync_to_async
def make_room(name: str = "Commits") -> Room:
    return services.create_room(name, private=False)


def request(author: str, client_id: str, text: str = "hi") -> services.PostRequest:
    return services.PostRequest(Participant(key=f"g:{author}", name=author), text, client_id)


@database_sync_to_async
def stored(room: Room) -> list[tuple[int, str, str]]:
    return list(Message.objects.filter(room=room).order_by("seq")
                .values_list("seq", "client_id", "text"))


async def test_a_batch_gets_consecutive_seqs_and_stores_repeats_once():
    room = await make_room()
    await database_sync_to_async(services.post_message)(
        room, Participant(key="g:ann", name="Ann"), "earlier", "a0")
    batch = [request("ann", "a1", "one"), request("bob", "b1", "two"),
             request("ann", "a0", "a re-send"), request("ann", "a1", "one again"),
             request("bob", "b2", "three")]
    results = await database_sync_to_async(services.post_messages)(room, batch)
    assert [(r.message.seq, r.created) for r in results] == [
        (2, True), (3, True), (1, False), (2, False), (4, True)]
    assert await stored(room) == [(1, "a0", "earlier"), (2, "a1", "one"), (3, "b1", "two"),
                                  (4, "b2", "three")]
    assert (await database_sync_to_async(services.current_seq)(room.pk)) == 4


async def test_a_batch_that_races_a_resend_falls_back_to_one_by_one(monkeypatch):
    """The same client_id stored by another connection between the one-by-one look-up and
    its insert: answered with that copy, not an error."""
    room = await make_room()
    real_lookup = services._stored_copies

    def lookup_missing_the_race(room_, requests):
        if requests[0].client_id == "b1" and not Message.objects.filter(client_id="b1"):
            services.post_message(room_, Participant(key="g:bob", name="Bob"), "rival", "b1")
            return {}  # looked before the rival committed
        return real_lookup(room_, requests)

    await database_sync_to_async(services.post_message)(
        room, Participant(key="g:ann", name="Ann"), "earlier", "a0")
    monkeypatch.setattr(services, "_stored_copies", lookup_missing_the_race)
    results = await database_sync_to_async(services.post_messages)(
        room, [request("ann", "a1"), request("bob", "b1", "mine"), request("ann", "a0")])
    assert [(r.message.client_id, r.message.seq, r.created) for r in results] == [
        ("a1", 2, True), ("b1", 3, False), ("a0", 1, False)]
    assert [row[:2] for row in await stored(room)] == [(1, "a0"), (2, "a1"), (3, "b1")]


async def test_sends_that_wait_together_are_stored_in_one_transaction(monkeypatch):
    room = await make_room()
    batches = []
    real = services.post_messages

    def counted(room_, requests):
        batches.append(len(requests))
        return real(room_, requests)

    monkeypatch.setattr(services, "post_messages", counted)
    receiver = Collector()
    fanout = fanout_module.room_fanout()
    await fanout.join(room.pk, receiver)
    results = await asyncio.gather(*(
        writer.post_message(room, request(f"p{n}", f"c{n}", f"message {n}")) for n in range(20)))
    assert batches == [20]
    assert [r.message.seq for r in results] == list(range(1, 21))
    await receiver.wait_for(20)  # broadcast once stored, in seq order
    assert [json.loads(t)["seq"] for t in receiver.texts()] == list(range(1, 21))
    await fanout.leave(room.pk, receiver)
    assert writer._writers == {}  # nothing left waiting: the room's writer is gone


async def test_a_failed_batch_is_an_error_for_each_sender_and_nothing_is_broadcast(monkeypatch):
    room = await make_room()

    def broken(room_, requests):
        raise RuntimeError("the database went away")

    monkeypatch.setattr(services, "post_messages", broken)
    receiver = Collector()
    fanout = fanout_module.room_fanout()
    await fanout.join(room.pk, receiver)
    outcomes = await asyncio.gather(
        *(writer.post_message(room, request("ann", f"c{n}")) for n in range(3)),
        return_exceptions=True)
    assert all(isinstance(o, RuntimeError) for o in outcomes)
    assert receiver.calls == []
    await fanout.leave(room.pk, receiver)


# --- heartbeats --------------------------------------------------------------------------

async def test_one_heartbeat_read_per_room_whatever_the_number_of_sockets(settings,
                                                                         monkeypatch):
    settings.PARLEY = {**settings.PARLEY, "HEARTBEAT_SECONDS": 1}
    room = await make_room("Beats")
    sockets = [(await connected(room.slug, await guest_session_key(room, name)))[0]
               for name in ("Ann", "Bob", "Cy")]
    reads = []
    real = services.current_seq
    monkeypatch.setattr(services, "current_seq", lambda room_id: reads.append(room_id)
                        or real(room_id))

    async def next_heartbeat(socket):
        while (event := await socket.receive_json_from(timeout=5))["type"] != "heartbeat":
            pass
        return event

    beats = [await next_heartbeat(socket) for socket in sockets]
    assert beats == [{"type": "heartbeat", "seq": 0}] * 3
    assert reads == [room.pk]  # one read served all three sockets
    for socket in sockets:
        await socket.disconnect()


# --- prebuilt frames ---------------------------------------------------------------------

def parse_server_frame(data: bytes) -> tuple[bool, int, bytes]:
    """(fin, opcode, payload) of one unmasked frame that is all of `data` (RFC 6455 5.2)."""
    fin, opcode = bool(data[0] & 0x80), data[0] & 0x0F
    assert not data[1] & 0x80  # servers never mask
    length, offset = data[1] & 0x7F, 2
    if length == 126:
        length, offset = int.from_bytes(data[2:4], "big"), 4
    elif length == 127:
        length, offset = int.from_bytes(data[2:10], "big"), 10
    assert len(data) == offset + length
    return fin, opcode, data[offset:]


@pytest.mark.parametrize("text", ["{}", "é" * 200, "€" * 30_000])  # 7-, 16- and 64-bit lengths
def test_a_prebuilt_frame_is_one_final_text_frame_of_the_utf8(text):
    assert parse_server_frame(fanout_module.websocket_frame(text)) == (True, 1, text.encode())
