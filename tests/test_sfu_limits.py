"""What a group call refuses, and that a refusal leaves the member (and the room) usable:
publish offers bounded before anything is allocated, failed offers undone, members per call."""

from __future__ import annotations

import asyncio

import pytest

from rooms.protocol import ProtocolError
from signaling.sfu import protocol
from tests.support.sfu_peers import Participant, room_with_router, without_ice_password

pytestmark = pytest.mark.sfu


BOMB_SECTION = "m=audio 9 UDP/TLS/RTP/SAVPF 111\r\n"


def as_audio_bomb(sdp: str) -> str:
    """The offer plus as many bare audio sections as fit under the 64 KiB SDP limit (the
    m-line bomb: ~1,800 sections)."""
    count = (64 * 1024 - len(sdp)) // len(BOMB_SECTION)
    return sdp + BOMB_SECTION * count


async def test_a_publish_offer_with_too_many_sections_is_refused_before_allocating():
    """~1,800 audio sections (under the socket's 64 KiB SDP limit) are refused naming the
    limit, with no transceiver created; the member's next, valid publish works."""
    room, directory = room_with_router()
    bomber, viewer = Participant(room, "m0", "Bomber"), Participant(room, "m1", "Viewer")
    directory.update({bomber.id: bomber, viewer.id: viewer})
    try:
        await bomber.join(publish=False)
        await viewer.join()
        member = room.members[bomber.id]
        publish_pc = member.publish_pc
        with pytest.raises(ProtocolError) as refused:
            await bomber.publish(edit=as_audio_bomb)
        assert refused.value.code == protocol.TOO_MANY_TRACKS
        assert "at most 1 audio, 1 camera video and 1 screen video" in refused.value.message
        sections = as_audio_bomb(bomber.publish_pc.localDescription.sdp).count("m=audio")
        assert sections > 1500 and f"{sections} audio" in refused.value.message
        assert member.publish_pc is publish_pc and publish_pc.getTransceivers() == []
        assert member.publications == {}
        await bomber.publish()
        await viewer.wait_for(lambda: viewer.receiving_from(bomber.id, frames=5))
    finally:
        await bomber.close()
        await viewer.close()
        await room.close()


async def test_a_publish_that_fails_to_apply_is_undone_and_a_retry_works():
    """aiortc refuses the offer while applying it (no ICE password): the member gets
    `publish_failed`, keeps no half-made transceivers, and publishes on a fresh connection."""
    room, directory = room_with_router()
    ann, bob = Participant(room, "m0", "Ann"), Participant(room, "m1", "Bob")
    directory.update({ann.id: ann, bob.id: bob})
    try:
        await bob.join()
        await ann.join(publish=False)
        for _ in range(3):  # each failure is undone, so failures do not pile up
            with pytest.raises(ProtocolError) as failed:
                await ann.publish(edit=without_ice_password)
            assert failed.value.code == protocol.PUBLISH_FAILED
            assert room.members[ann.id].publish_pc.getTransceivers() == []
        await ann.publish()
        await bob.wait_for(lambda: bob.receiving_from(ann.id, frames=5))
        await ann.wait_for(lambda: ann.receiving_from(bob.id, frames=5))
        assert room.stats()["publications"] == 4
    finally:
        await ann.close()
        await bob.close()
        await room.close()


async def test_a_call_has_at_most_max_members():
    room, directory = room_with_router(max_members=2)
    people = [Participant(room, f"m{n}", f"P{n}") for n in range(3)]
    directory.update({p.id: p for p in people})
    try:
        await room.join("m0", "P0")
        await room.join("m1", "P1")
        with pytest.raises(ProtocolError) as full:
            await room.join("m2", "P2")
        assert full.value.code == protocol.CALL_FULL and "2 members" in full.value.message
        assert sorted(room.members) == ["m0", "m1"]
        await room.leave("m1")
        await room.join("m2", "P2")  # a place that frees up can be taken
        assert sorted(room.members) == ["m0", "m2"]
    finally:
        for person in people:
            await person.close()
        await room.close()


# --- the worker: one lane per call ---------------------------------------------------------

SDP = ("v=0\r\no=- 1 2 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\n"
       "m=audio 9 UDP/TLS/RTP/SAVPF 111\r\n")


class StuckPublish:
    """Patches SfuRoom.publish so that publishing in call `key` hangs until released, as a
    negotiation waiting on a connection that never comes up does (room.SETTLE_TIMEOUT)."""

    def __init__(self, monkeypatch, key: str):
        from signaling.sfu.room import SfuRoom

        self.entered, self.release = asyncio.Event(), asyncio.Event()
        original = SfuRoom.publish

        async def publish(room, member_id: str, sdp: str, screen: str | None = None) -> str:
            if room.key == key:
                self.entered.set()
                await self.release.wait()
            return await original(room, member_id, sdp, screen)

        monkeypatch.setattr(SfuRoom, "publish", publish)


async def next_event(layer, channel: str, kind: str, timeout: float = 10) -> dict:
    async with asyncio.timeout(timeout):
        while True:
            message = await layer.receive(channel)
            if message["event"]["type"] == kind:
                return message["event"]


@pytest.fixture
async def worker_and_layer():
    from channels.layers import InMemoryChannelLayer

    from signaling.sfu.worker import SfuWorker

    layer = InMemoryChannelLayer()
    made = []

    def make(**options):
        worker = SfuWorker(layer, **options)
        worker.start()
        made.append(worker)
        return worker

    yield make, layer
    for worker in made:
        await worker.stop()


async def join(layer, worker, room: str, member: str) -> str:
    reply = await layer.new_channel()
    await layer.send(worker.channel, {"type": "sfu.join", "member": member, "room": room,
                                      "name": member, "reply": reply})
    return reply


async def test_a_stuck_call_does_not_delay_another_calls_join(worker_and_layer, monkeypatch):
    make, layer = worker_and_layer
    worker = make(worker_id="lanes")
    stuck = StuckPublish(monkeypatch, "slow")
    slow = await join(layer, worker, "slow", "s1")
    assert (await next_event(layer, slow, "joined"))["worker"] == "lanes"
    await layer.send(worker.channel, {"type": "sfu.publish", "member": "s1", "sdp": SDP})
    async with asyncio.timeout(10):
        await stuck.entered.wait()
    fast = await join(layer, worker, "fast", "f1")
    assert (await next_event(layer, fast, "joined"))["worker"] == "lanes"
    stuck.release.set()  # the slow call then goes on where it was
    failed = await next_event(layer, slow, "error")
    assert (failed["code"], failed["command"]) == (protocol.PUBLISH_FAILED, "publish")


async def test_a_calls_queue_is_bounded(worker_and_layer, monkeypatch):
    make, layer = worker_and_layer
    worker = make(worker_id="bounded", queue_limit=2)
    stuck = StuckPublish(monkeypatch, "slow")
    slow = await join(layer, worker, "slow", "s1")
    await next_event(layer, slow, "joined")
    await layer.send(worker.channel, {"type": "sfu.publish", "member": "s1", "sdp": SDP})
    await stuck.entered.wait()
    for _ in range(3):  # two wait in the queue, the third is refused
        await layer.send(worker.channel, {"type": "sfu.mute", "member": "s1",
                                          "audio": True, "video": False})
    busy = await next_event(layer, slow, "error")
    assert (busy["code"], busy["command"]) == (protocol.CALL_BUSY, "mute")
    stuck.release.set()
    assert (await next_event(layer, slow, "error"))["code"] == protocol.PUBLISH_FAILED


async def test_the_last_leave_ends_the_calls_lane_and_room(worker_and_layer):
    make, layer = worker_and_layer
    worker = make(worker_id="ends")
    reply = await join(layer, worker, "r", "m1")
    await next_event(layer, reply, "joined")
    room = worker.rooms["r"]
    _, lane = worker.lanes["r"]
    await layer.send(worker.channel, {"type": "sfu.leave", "member": "m1"})
    await lane
    assert worker.rooms == {} and worker.lanes == {} and worker.members == {}
    assert room.closed and room.tasks == set()


async def test_stop_returns_when_a_connection_never_finishes_closing(worker_and_layer,
                                                                      monkeypatch):
    """A close stuck on the network (a TURN allocation's deletion waiting for a TURN server
    that is gone) does not hold the worker's stop, so SIGTERM still ends the process; the
    other call's connections are closed meanwhile, not after it."""
    from signaling.sfu import room as room_module
    from signaling.sfu import worker as worker_module

    make, layer = worker_and_layer
    worker = make(worker_id="stuck-close")
    for room, member in (("a", "a1"), ("b", "b1")):
        await next_event(layer, await join(layer, worker, room, member), "joined")
    stuck_pc = worker.rooms["a"].members["a1"].publish_pc
    other_pcs = [worker.rooms["b"].members["b1"].publish_pc,
                 worker.rooms["b"].members["b1"].subscribe_pc]
    never = asyncio.Event()
    real_close = room_module.close_connection

    async def close_connection(pc):
        if pc is stuck_pc:
            await never.wait()
        await real_close(pc)

    monkeypatch.setattr(room_module, "close_connection", close_connection)
    monkeypatch.setattr(worker_module, "STOP_GRACE_SECONDS", 0.5)
    async with asyncio.timeout(30):  # a failure, not a hang, where stop() waits forever
        await worker.stop()
    assert worker.rooms == {} and worker.lanes == {}
    assert [pc.connectionState for pc in other_pcs] == ["closed", "closed"]
    never.set()
    await real_close(stuck_pc)
