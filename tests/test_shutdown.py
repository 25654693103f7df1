"""Clean shutdown with a group call running: SIGTERM ends daphne (in-process SFU worker) and
`manage.py sfu` (its own process), and the members of a stopping worker rejoin on another;
SIGTERM ends daphne during a `/v1/realtime/calls` WebRTC transcription call too.

Before: daphne stopped listening on SIGTERM and never exited (its main thread waited for
aiortc's non-daemon decoder threads of the call's open connections)."""

from __future__ import annotations

import json
import signal
import subprocess
from pathlib import Path

import httpx
import pytest
from aiortc import RTCSessionDescription

from rooms.client import create_public_room
from signaling.ice import peer_connection
from tests.support.sfu_peers import SpeechMicrophone, poll
from tests.support.speech import speech_pcm24k
from tests.test_sfu_socket import close_all, everyone_hears_everyone, people_in_call
from transcription.client import mint_guest_key

pytestmark = [pytest.mark.sfu, pytest.mark.multiprocess]

# Generous: what is asserted is that the process ends on its own, not how fast.
EXIT_DEADLINE = 15


def exited(process: subprocess.Popen) -> bool:
    return process.poll() is not None


def live_children(pid: int) -> set[int]:
    """Processes whose parent is `pid` and that have not exited (zombies excluded)."""
    children = set()
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue  # gone meanwhile
        if int(fields[1]) == pid and fields[0] != "Z":
            children.add(int(stat.parent.name))
    return children


def gone(pids: set[int]) -> bool:
    for pid in pids:
        try:
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if state != "Z":
            return False
    return True


async def test_daphne_exits_on_sigterm_during_a_captioned_group_call(daphne_factory):
    """SIGTERM with a live call (captions on: offline decoder processes) on the in-process
    worker: daphne ends by itself, and so do its decoder processes."""
    server = daphne_factory(TRANSCRIPTION_ENGINE="offline", OFFLINE_PROCESSES="1")
    people = await people_in_call([server.base_url], names=["Ann", "Bob"])
    try:
        await everyone_hears_everyone(people)
        await people[0].send(type="captions", on=True)
        await people[0].wait_for(lambda: any(
            e["type"] == "participants" and e["captions"] for e in people[0].events))
        await poll(lambda: live_children(server.process.pid), timeout=30,
                   what="an offline decoder process")
        decoders = live_children(server.process.pid)
        server.process.send_signal(signal.SIGTERM)
        await poll(lambda: exited(server.process), timeout=EXIT_DEADLINE,
                   what="daphne exiting after SIGTERM")
        await poll(lambda: gone(decoders), timeout=EXIT_DEADLINE,
                   what="decoder processes exiting with daphne")
    finally:
        await close_all(people)


async def test_a_worker_stopped_by_sigterm_exits_and_its_members_rejoin_another(
    daphne_factory, redis_server, sfu_worker_factory
):
    """`manage.py sfu` serving a call gets SIGTERM: it exits, and its members are told
    (`worker-lost`) and rejoin on the other worker, where they hear each other again."""
    server = daphne_factory(REDIS_URL=redis_server.url)
    first = sfu_worker_factory()
    people = await people_in_call([server.base_url], names=["Ann", "Bob"])
    try:
        await everyone_hears_everyone(people)
        first_id = next(e["worker"] for e in people[0].events if e["type"] == "joined")
        sfu_worker_factory()
        first.process.send_signal(signal.SIGTERM)
        await poll(lambda: exited(first.process), timeout=EXIT_DEADLINE,
                   what="the SFU worker exiting after SIGTERM")
        for person in people:
            await person.wait_for(lambda p=person: p.joins == 2)
            assert any(e["type"] == "worker-lost" for e in person.events)
        await everyone_hears_everyone(people)
        for person in people:
            workers = [e["worker"] for e in person.events if e["type"] == "joined"]
            assert workers[0] == first_id and workers[-1] != first_id
    finally:
        await close_all(people)


@pytest.mark.transcription
async def test_daphne_exits_on_sigterm_during_a_webrtc_transcription_call(daphne_factory):
    """SIGTERM while an aiortc client streams speech into `POST /v1/realtime/calls` (the
    offline engine, a decoder process): daphne ends the call, then exits by itself, and its
    decoder processes with it."""
    server = daphne_factory(TRANSCRIPTION_ENGINE="offline", OFFLINE_PROCESSES="1")
    slug = await create_public_room(server.base_url, "Shutdown during a call")
    key = await mint_guest_key(server.base_url, slug, "Ann", mode="webrtc")
    pc = peer_connection()
    pc.addTrack(SpeechMicrophone(speech_pcm24k(["good morning everyone"] * 20,
                                               gap_seconds=0.5)))
    channel = pc.createDataChannel("oai-events")
    kinds: list[str] = []
    channel.on("message", lambda message: kinds.append(json.loads(message)["type"]))
    try:
        await pc.setLocalDescription(await pc.createOffer())
        async with httpx.AsyncClient(base_url=server.base_url) as http:
            reply = await http.post(
                "/v1/realtime/calls", content=pc.localDescription.sdp,
                headers={"Authorization": f"Bearer {key['value']}",
                         "Content-Type": "application/sdp"})
        assert reply.status_code == 201, reply.text
        await pc.setRemoteDescription(RTCSessionDescription(reply.text, "answer"))
        await poll(lambda: "input_audio_buffer.speech_started" in kinds, timeout=30,
                   what="the call's engine hearing speech")
        decoders = live_children(server.process.pid)
        assert decoders, "the offline engine runs in a decoder process"
        server.process.send_signal(signal.SIGTERM)
        await poll(lambda: exited(server.process), timeout=EXIT_DEADLINE,
                   what="daphne exiting after SIGTERM")
        await poll(lambda: gone(decoders), timeout=EXIT_DEADLINE,
                   what="decoder processes exiting with daphne")
        await poll(lambda: pc.connectionState in ("failed", "closed")
                   or channel.readyState == "closed", timeout=EXIT_DEADLINE,
                   what="the call ending on the client's side")
    finally:
        await pc.close()
