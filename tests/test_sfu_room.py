"""The SFU core with aiortc participants in the test process (real WebRTC on loopback)."""

from __future__ import annotations

import asyncio
import time

import pytest

from rooms.protocol import ProtocolError
from signaling.sfu import hooks, protocol
from tests.support.sfu_peers import Participant, SmallCamera, add_person, room_with_router

pytestmark = pytest.mark.sfu


async def call_of(size: int):
    room, directory = room_with_router()
    people = [await add_person(room, directory, f"m{n}") for n in range(size)]
    return room, directory, people


async def close_all(room, people) -> None:
    for person in people:
        await person.close()
    await room.close()


async def assert_everyone_receives_everyone_else(room, people) -> None:
    size = len(people)
    for person in people:
        others = [p.id for p in people if p is not person]
        await person.wait_for(
            lambda person=person, others=others: all(
                person.receiving_from(o, frames=10) for o in others
            ),
            timeout=40,
        )
        video_sizes = [person.sizes[person.mids_of(o)["video"]] for o in others]
        assert video_sizes == [(160, 120)] * (size - 1)
        assert len(person.participants) == size
    stats = room.stats()
    assert stats == {"members": size, "publications": 2 * size,
                     "forwarded_tracks": 2 * size * (size - 1)}
    # Forwarded, not transcoded: each publication's frames went out as they came.
    publication = room.members["m0"].publications["video"]
    assert publication.codec == "VP8" and publication.frames > 10


async def test_everyone_receives_everyone_else():
    """Each of three participants decodes every other participant's audio and video."""
    room, _, people = await call_of(3)
    try:
        await assert_everyone_receives_everyone_else(room, people)
    finally:
        await close_all(room, people)


async def test_six_people_receive_everyone_with_stun_and_turn_configured(settings, tmp_path):
    """The 6-person call as a deployment configures it: a real coturn as STUN and TURN
    server, the worker with its own minted credentials (SFU_ICE_SERVERS plus TURN_SECRET),
    each person with theirs. Everyone decodes everyone; coturn handed out relays to the
    worker and to the people, so the servers took part in every gathering."""
    from channels.layers import InMemoryChannelLayer

    from signaling.ice import ice_servers_for
    from signaling.sfu.worker import SfuWorker
    from tests.support.turn import LOOPBACK_PEERS, TURN_SECRET, Coturn

    coturn = Coturn.start(tmp_path, extra=LOOPBACK_PEERS)
    stun = [{"urls": f"stun:127.0.0.1:{coturn.port}"}]
    settings.ICE_SERVERS = settings.SFU_ICE_SERVERS = stun
    settings.TURN_SECRET, settings.TURN_URLS = TURN_SECRET, [coturn.url]
    room, directory = room_with_router(
        ice_servers=SfuWorker(InMemoryChannelLayer(), worker_id="w6").ice_servers)
    people = []
    try:
        for n in range(6):
            people.append(await add_person(room, directory, f"m{n}",
                                           ice_servers=ice_servers_for(f"member-{n}")))
        await assert_everyone_receives_everyone_else(room, people)
        identities = set(coturn.allocating_identities())
        assert {*(f"sfu-worker-w6.m{n}" for n in range(6)),
                *(f"member-{n}" for n in range(6))} <= identities, identities
    finally:
        await close_all(room, people)
        coturn.stop()


async def test_a_leavers_tracks_are_removed_from_everyone():
    room, _, people = await call_of(3)
    leaver, stayers = people[2], people[:2]
    try:
        for person in stayers:
            await person.wait_for(lambda p=person: p.receiving_from(leaver.id, frames=5))
        mids = {person.id: person.mids_of(leaver.id) for person in stayers}
        leaver_publications = list(room.members[leaver.id].publications.values())
        await room.leave(leaver.id)
        for person in stayers:
            # The participants list drops the leaver, and the leaver's sections of the
            # subscribe connection are renegotiated to inactive (browsers end those tracks).
            def gone(p=person) -> bool:
                directions = {t.mid: t.currentDirection for t in p.subscribe_pc.getTransceivers()}
                return leaver.id not in {q["id"] for q in p.participants} and all(
                    directions[mid] == "inactive" for mid in mids[p.id].values()
                )

            await person.wait_for(gone)
        assert room.stats()["forwarded_tracks"] == 4  # two stayers, two tracks each way
        assert all(not pub.tracks for pub in leaver_publications)
    finally:
        await leaver.close()
        await close_all(room, stayers)


async def test_a_late_joiner_starts_on_a_keyframe_requested_for_it():
    """The publisher is asked for a keyframe (PLI) and the late joiner decodes from it."""
    room, directory, people = await call_of(2)
    try:
        await people[1].wait_for(lambda: people[1].receiving_from("m0", frames=15))
        publication = room.members["m0"].publications["video"]
        keyframes_before = publication.keyframes
        late = await add_person(room, directory, "late")
        people.append(late)
        await late.wait_for(lambda: late.receiving_from("m0", frames=3))
        assert publication.keyframes > keyframes_before  # a new keyframe, made for the PLI
        track = room.members["late"].subscriptions[("m0", "video")].track
        assert not track.waiting_for_keyframe and track.forwarded >= 3
    finally:
        await close_all(room, people)


async def test_audio_is_decoded_only_when_asked():
    """Captions can tap a participant's decoded audio inside the worker on demand."""
    room, _, people = await call_of(2)
    try:
        await people[1].wait_for(lambda: people[1].receiving_from("m0", frames=5))
        publication = room.members["m0"].publications["audio"]
        assert publication.tap.qsize() == 0 and not publication.tap.decode
        frame = await asyncio.wait_for(publication.decoded().recv(), 10)
        assert frame.sample_rate == 48000 and frame.samples > 0
        publication.stop_decoding()
        await people[1].wait_for(lambda: people[1].receiving_from("m0", frames=20))
    finally:
        await close_all(room, people)


async def test_a_publisher_preferring_h264_still_publishes_vp8():
    """The SFU forwards VP8 only: a publisher that offers H264 first is answered with VP8."""
    from aiortc import RTCRtpSender
    from aiortc.sdp import SessionDescription

    room, directory = room_with_router()
    person = Participant(room, "m0", "H264 fan")
    directory[person.id] = person
    original = person.publish_pc.addTrack

    def add_track(track):
        sender = original(track)
        if track.kind == "video":
            transceiver = next(t for t in person.publish_pc.getTransceivers()
                               if t.sender is sender)
            codecs = RTCRtpSender.getCapabilities("video").codecs
            transceiver.setCodecPreferences(
                sorted(codecs, key=lambda c: c.mimeType != "video/H264"))
        return sender

    person.publish_pc.addTrack = add_track
    try:
        await person.join()
        offered = SessionDescription.parse(person.publish_pc.localDescription.sdp).media
        assert [m.rtp.codecs[0].mimeType for m in offered] == ["audio/opus", "video/H264"]
        other = Participant(room, "m1", "Viewer")
        directory[other.id] = other
        await other.join()
        await other.wait_for(lambda: other.receiving_from("m0", frames=5))
        assert room.members["m0"].publications["video"].codec == "VP8"
        await other.close()
    finally:
        await person.close()
        await room.close()


def test_the_aiortc_hooks_still_fit():
    """Fails loudly when an aiortc upgrade moves the internals the SFU relies on."""
    hooks.check_aiortc()


async def test_a_call_works_with_ice_servers_configured(settings):
    """Configured ICE servers reach aiortc as RTCIceServer objects (dicts made every join
    fail), the worker uses its own TURN credentials per member, not a member's, and STUN and TURN
    servers that do not answer leave loopback host candidates working. (Both in one call:
    each gathering waits out aioice's timeout on the dead servers.)"""
    from channels.layers import InMemoryChannelLayer

    from signaling.ice import ice_servers_for
    from signaling.sfu.worker import SfuWorker
    from tests.support.servers import free_port

    dead = f"127.0.0.1:{free_port()}"
    settings.ICE_SERVERS = settings.SFU_ICE_SERVERS = [{"urls": f"stun:{dead}"}]
    settings.TURN_SECRET, settings.TURN_URLS = "s3cret", [f"turn:{dead}"]
    worker = SfuWorker(InMemoryChannelLayer(), worker_id="w1")
    worker_servers = worker.ice_servers("m0")
    assert worker_servers[0] == {"urls": f"stun:{dead}"}
    assert worker_servers[-1]["username"].endswith(":sfu-worker-w1.m0")
    assert ice_servers_for("g:7")[-1]["username"].endswith(":g:7")
    room, directory = room_with_router(ice_servers=worker.ice_servers)
    people = []
    try:
        for n in range(2):  # the server side is tested: people without ICE servers
            people.append(await add_person(room, directory, f"m{n}"))
        await people[1].wait_for(lambda: people[1].receiving_from("m0", frames=5))
        await people[0].wait_for(lambda: people[0].receiving_from("m1", frames=5))
    finally:
        await close_all(room, people)


async def test_a_dead_subscribe_connection_never_breaks_the_room():
    """A member whose subscribe connection dies (closed here, as ICE consent expiry fails
    it) is told and stays in the call; a newcomer's tracks still reach every live member,
    and the member who lost it resubscribes and receives everyone again."""
    room, directory, people = await call_of(3)
    lost = people[1]
    try:
        for person in people:
            others = [p.id for p in people if p is not person]
            await person.wait_for(lambda p=person, o=others: all(
                p.receiving_from(other, frames=5) for other in o))
        await room.members[lost.id].subscribe_pc.close()
        await lost.wait_for(
            lambda: any(e["type"] == "subscribe-lost" for e in lost.received))
        assert lost.id in room.members and room.members[lost.id].subscriptions == {}
        late = await add_person(room, directory, "late")
        people.append(late)
        for person in (people[0], people[2]):
            await person.wait_for(lambda p=person: p.receiving_from("late", frames=5))
        await late.wait_for(lambda: all(late.receiving_from(o, frames=5)
                                        for o in ("m0", "m1", "m2")))
        await lost.resubscribe()
        await lost.wait_for(lambda: all(lost.receiving_from(o, frames=5)
                                        for o in ("m0", "m2", "late")))
    finally:
        await close_all(room, people)


async def test_a_failed_subscribe_answer_never_leaves_an_offer_pending():
    """Ann's first answer fails while a newer offer is due (Bob published meanwhile): she is
    told (`answer_failed`, `subscribe-lost`), resubscribes and gets Bob, instead of waiting
    for new tracks forever behind an offer nobody will answer."""
    from tests.support.sfu_peers import poll

    room, directory = room_with_router()
    ann, bob = Participant(room, "ann", "Ann"), Participant(room, "bob", "Bob")
    directory.update({ann.id: ann, bob.id: bob})
    ann.answer_gate = asyncio.Event()
    try:
        await ann.join()  # her first subscribe offer waits at the gate
        await bob.join()
        await poll(lambda: room.members["ann"].renegotiate, what="a renegotiation due")
        ann.corrupt_answers = 1
        ann.answer_gate.set()
        await ann.wait_for(lambda: any(e["type"] == "subscribe-lost" for e in ann.received))
        assert [getattr(e, "code", None) for e in ann.errors] == ["answer_failed"]
        assert not room.members["ann"].negotiating
        await ann.resubscribe()
        await ann.wait_for(lambda: ann.receiving_from("bob", frames=5))
        await bob.wait_for(lambda: bob.receiving_from("ann", frames=5))
    finally:
        await ann.close()
        await bob.close()
        await room.close()


async def test_closing_a_room_cancels_every_task_it_started():
    """Background work (renegotiations, broadcasts, throttled keyframe requests) belongs to
    the room or its publications, not to a process-wide set: closing the room ends it."""
    room, _, people = await call_of(2)
    try:
        await people[1].wait_for(lambda: people[1].receiving_from("m0", frames=5))
        publication = room.members["m0"].publications["video"]
        publication._last_pli = time.monotonic() + 3600  # the next PLI waits out the throttle
        publication.request_keyframe()
        publication.request_keyframe()  # throttled: no second task
        pli = publication._pli_task
        assert pli is not None and not pli.done()
        room.spawn(asyncio.Event().wait(), name="probe")  # e.g. a renegotiation left waiting
        background = set(room.tasks)
        assert background
    finally:
        await close_all(room, people)
    assert room.tasks == set() and all(task.done() for task in background)
    assert pli.cancelled()
    room.spawn(asyncio.Event().wait(), name="late")  # nothing starts after close
    assert room.tasks == set()


async def test_a_dead_publish_connection_is_replaced_and_the_member_publishes_again():
    """The member stays in the call, is told (`publish-lost`), and others get the tracks of
    the member's fresh publish connection."""
    room, _, people = await call_of(2)
    ann, bob = people
    try:
        await bob.wait_for(lambda: bob.receiving_from(ann.id, frames=5))
        old_mids = bob.mids_of(ann.id)
        dead = room.members[ann.id].publish_pc
        await dead.close()
        await ann.wait_for(lambda: any(e["type"] == "publish-lost" for e in ann.received))
        member = room.members[ann.id]
        assert member.publish_pc is not dead and member.publications == {}
        await bob.wait_for(lambda: bob.mids_of(ann.id) == {})
        await ann.publish()
        await bob.wait_for(lambda: bob.receiving_from(ann.id, frames=5))
        assert set(bob.mids_of(ann.id).values()).isdisjoint(old_mids.values())
    finally:
        await close_all(room, people)


async def test_a_cancelled_close_does_not_break_aiortcs_own_close():
    """aiortc closes a connection itself when the remote end closed DTLS (a client that
    left); the room closing it too and being cancelled meanwhile (room.close cancels its
    tasks) must not cancel aiortc's close future (InvalidStateError, half-closed pc)."""
    from signaling.ice import peer_connection
    from signaling.sfu.room import close_connection

    pc = peer_connection()
    pc.addTransceiver("audio")
    pc.createDataChannel("sfu")
    await pc.setLocalDescription(await pc.createOffer())
    own = asyncio.ensure_future(pc.close())  # aiortc's own close, under way
    await asyncio.sleep(0)
    assert not own.done()
    ours = asyncio.ensure_future(close_connection(pc))
    await asyncio.sleep(0)  # ours now waits for aiortc's close
    ours.cancel()
    await own  # raised InvalidStateError when a plain pc.close() was cancelled
    assert pc.signalingState == "closed" and pc.connectionState == "closed"


async def test_a_long_call_with_many_departures_keeps_its_subscribe_offers_small(
        monkeypatch):
    """Everyone who leaves leaves two inactive sections in the stayers' subscribe
    connections (aiortc cannot remove them); past MAX_INACTIVE_SECTIONS the server replaces
    the connection (`subscribe-lost`) instead of offering an ever larger SDP (after ~29
    departures it outgrew the 64 KiB limit and the stayer could not renegotiate at all).
    After resubscribing, the stayer receives who is there, on an offer with no dead
    sections, and newcomers still reach it."""
    from signaling.sfu import room as room_module

    monkeypatch.setattr(room_module, "MAX_INACTIVE_SECTIONS", 4)
    room, directory, people = await call_of(2)
    stayer = people[0]
    try:
        await stayer.wait_for(lambda: stayer.receiving_from("m1", frames=5))
        for n in range(3):  # three visitors come and go: six inactive sections
            visitor = await add_person(room, directory, f"v{n}")
            await stayer.wait_for(lambda v=visitor: stayer.receiving_from(v.id, frames=1))
            await room.leave(visitor.id)
            await visitor.close()
        await stayer.wait_for(lambda: any(e["type"] == "subscribe-lost"
                                          for e in stayer.received))
        await stayer.resubscribe()
        await stayer.wait_for(lambda: stayer.receiving_from("m1", frames=5))
        server_side = room.members[stayer.id].subscribe_pc
        assert [t.direction for t in server_side.getTransceivers()] == ["sendonly"] * 2
        late = await add_person(room, directory, "late")
        people.append(late)
        await stayer.wait_for(lambda: stayer.receiving_from("late", frames=5))
    finally:
        await close_all(room, people)


async def test_an_offer_answered_before_the_connection_was_up_is_repeated_once_it_is(
        monkeypatch):
    """When a renegotiation cannot wait for the subscribe connection to come up (it waits
    SETTLE_TIMEOUT, 10 s; through TURN a connection took 8-32 s, aioice retransmitting
    its checks), aiortc never starts the senders that answer added. The room repeats the
    offer once the connection is up, so everyone still receives everyone (before, a member
    of a 6-person relayed call could receive nobody). Here no renegotiation waits at all."""
    from signaling.sfu import room as room_module

    async def impatient(pc) -> bool:
        return pc.connectionState == "connected"

    monkeypatch.setattr(room_module, "settled", impatient)
    room, directory = room_with_router()
    people = [Participant(room, f"m{n}", f"Person {n}") for n in range(4)]
    directory.update({p.id: p for p in people})
    try:
        await asyncio.gather(*(p.join() for p in people))
        for person in people:
            others = [p.id for p in people if p is not person]
            await person.wait_for(lambda p=person, o=others: all(
                p.receiving_from(other, frames=5) for other in o), timeout=40)
    finally:
        await close_all(room, people)


async def test_an_answer_does_not_wait_for_the_offer_that_follows_it(monkeypatch):
    """Applying Ann's answer returns at once even when another offer is due and must first
    wait for her connection to come up: in the worker that wait ran in the call's command
    lane, so everyone else's commands (their answers, and with them their ICE) waited too,
    and a relayed 6-person call took 8-32 s to connect instead of about one."""
    from signaling.sfu import room as room_module
    from tests.support.sfu_peers import poll

    up = asyncio.Event()
    real_settled = room_module.settled

    async def waits_until_up(pc) -> bool:
        await up.wait()  # held here by the test, then the real wait
        return await real_settled(pc)

    monkeypatch.setattr(room_module, "settled", waits_until_up)
    room, directory = room_with_router()
    ann, bob = Participant(room, "ann", "Ann"), Participant(room, "bob", "Bob")
    directory.update({ann.id: ann, bob.id: bob})
    ann.answer_gate = asyncio.Event()
    answered = asyncio.Event()
    apply_answer = room.subscribe_answer

    async def tracked(member_id: str, sdp: str) -> None:
        await apply_answer(member_id, sdp)
        if member_id == "ann":
            answered.set()

    room.subscribe_answer = tracked
    try:
        await ann.join()  # her first subscribe offer waits at the gate
        await bob.join()
        await poll(lambda: room.members["ann"].renegotiate, what="a renegotiation due")
        ann.answer_gate.set()
        async with asyncio.timeout(20):  # a failure, not a hang, where the answer waits
            await answered.wait()
        assert not up.is_set()
        up.set()
        await ann.wait_for(lambda: ann.receiving_from("bob", frames=5))
    finally:
        await close_all(room, [ann, bob])


async def test_a_shared_screen_reaches_everyone_as_its_own_track_and_can_stop_and_resume():
    """A screen section published beside the camera is forwarded as a third track
    (`mids.screen`, 320x240 where the camera is 160x120); stopping the share withdraws it
    from everyone; sharing again forwards the same section again, with no new offer from the
    sharer."""
    room, _, people = await call_of(2)
    sharer, viewer = people
    try:
        await viewer.wait_for(lambda: viewer.receiving_from(sharer.id, frames=3))
        mid = await sharer.share_screen(SmallCamera(320, 240))
        assert room.members[sharer.id].screen_mid == mid

        def seeing_screen(frames: int) -> bool:
            screen = viewer.mids_of(sharer.id).get("screen")
            return screen is not None and viewer.frames[screen] >= frames

        await viewer.wait_for(lambda: seeing_screen(5))
        screen_mid = viewer.mids_of(sharer.id)["screen"]
        assert viewer.sizes[screen_mid] == (320, 240)
        assert viewer.sizes[viewer.mids_of(sharer.id)["video"]] == (160, 120)
        sharer_entry = next(p for p in viewer.participants if p["id"] == sharer.id)
        assert sharer_entry["publishing"] == ["audio", "screen", "video"]

        await room.share_screen(sharer.id, False)

        def withdrawn() -> bool:
            directions = {t.mid: t.currentDirection
                          for t in viewer.subscribe_pc.getTransceivers()}
            return ("screen" not in viewer.mids_of(sharer.id)
                    and directions.get(screen_mid) == "inactive")

        await viewer.wait_for(withdrawn)
        assert room.stats()["forwarded_tracks"] == 4

        await room.share_screen(sharer.id, True)
        await viewer.wait_for(lambda: seeing_screen(5))
        assert viewer.mids_of(sharer.id)["screen"] != screen_mid  # a fresh section
        assert room.stats()["forwarded_tracks"] == 5
    finally:
        await close_all(room, people)


async def test_a_second_camera_or_a_share_without_a_screen_section_is_refused():
    room, _, people = await call_of(1)
    (person,) = people
    try:
        with pytest.raises(ProtocolError) as refused:
            await room.share_screen(person.id, True)
        assert refused.value.code == protocol.NO_SCREEN_SECTION
        person.publish_pc.addTransceiver(SmallCamera(), direction="sendonly")
        await person.publish_pc.setLocalDescription(await person.publish_pc.createOffer())
        with pytest.raises(ProtocolError) as refused:
            await room.publish(person.id, person.publish_pc.localDescription.sdp)
        assert refused.value.code == protocol.TOO_MANY_TRACKS
        with pytest.raises(ProtocolError) as refused:
            await room.publish(person.id, person.publish_pc.localDescription.sdp, screen="99")
        assert refused.value.code == protocol.INVALID_FIELD
    finally:
        await close_all(room, people)
