"""Real WebRTC through the signaling relay: aiortc peers invite each other by participant,
on one or two daphne processes.

aiortc gathers every candidate before it returns a description and never trickles, so this
also checks that a peer sending no separate `ice-candidate` connects.
"""

from __future__ import annotations

import asyncio
import contextlib

import pytest
from aiortc import RTCConfiguration, RTCPeerConnection, RTCSessionDescription

from rooms.client import create_public_room, guest_session
from tests.support.signal_client import SignalSocket

pytestmark = pytest.mark.multiprocess


async def talk(caller: SignalSocket, callee: SignalSocket, call: str, text: str) -> list[str]:
    """Connect a data channel for `call` (the caller offers) and exchange one message."""
    config = RTCConfiguration(iceServers=[])
    caller_pc, callee_pc = RTCPeerConnection(config), RTCPeerConnection(config)
    heard: list[str] = []
    done = asyncio.Event()
    try:
        @callee_pc.on("datachannel")
        def on_channel(channel):
            @channel.on("message")
            def on_message(message):
                heard.append(f"callee got {message}")
                channel.send(f"re: {message}")

        channel = caller_pc.createDataChannel("direct")

        @channel.on("open")
        def on_open():
            channel.send(text)

        @channel.on("message")
        def on_reply(message):
            heard.append(f"caller got {message}")
            done.set()

        await caller_pc.setLocalDescription(await caller_pc.createOffer())
        await caller.send(type="offer", call=call, sdp=caller_pc.localDescription.sdp)
        offer = await callee.next("offer")
        assert offer["call"] == call
        await callee_pc.setRemoteDescription(RTCSessionDescription(offer["sdp"], "offer"))
        await callee_pc.setLocalDescription(await callee_pc.createAnswer())
        await callee.send(type="answer", call=call, sdp=callee_pc.localDescription.sdp)
        answer = await caller.next("answer")
        await caller_pc.setRemoteDescription(RTCSessionDescription(answer["sdp"], "answer"))
        async with asyncio.timeout(20):
            await done.wait()
    finally:
        await caller_pc.close()
        await callee_pc.close()
    return heard


async def people(urls: list[str], names: list[str]) -> list[SignalSocket]:
    slug = await create_public_room(urls[0], "p2p")
    sockets = []
    for n, name in enumerate(names):
        url = urls[n % len(urls)]
        socket = SignalSocket(url, slug, await guest_session(url, slug, name))
        await socket.open()
        sockets.append(socket)
    return sockets


async def test_aiortc_peers_talk_through_one_process(daphne_factory):
    server = daphne_factory()
    ann, bob = await people([server.base_url], ["Ann", "Bob"])
    try:
        call = await ann.call(bob)
        heard = await talk(ann, bob, call, "hello over the data channel")
        assert heard == ["callee got hello over the data channel",
                         "caller got re: hello over the data channel"]
        await bob.close()  # Bob goes: Ann is told the call ended
        assert await ann.next("call-ended") == {"type": "call-ended", "call": call,
                                                "reason": "gone"}
    finally:
        await ann.close()
        await bob.close()


@pytest.mark.parametrize("layer", ["pubsub", "core"])
async def test_two_pairs_at_once_across_two_processes(daphne_factory, redis_server, layer):
    """Ann-Bob and Cat-Dan connect in one room at the same time, each pair split across two
    processes; then Cat calls Ann, already in a call: never refused as "room full"."""
    env = {"REDIS_URL": redis_server.url, "REDIS_LAYER": layer}
    one, two = daphne_factory(**env), daphne_factory(**env)
    ann, bob, cat, dan = await people([one.base_url, two.base_url], ["Ann", "Bob", "Cat", "Dan"])
    try:
        first, second = await ann.call(bob), await cat.call(dan)
        heard = await asyncio.gather(talk(ann, bob, first, "one"), talk(cat, dan, second, "two"))
        assert [h[-1] for h in heard] == ["caller got re: one", "caller got re: two"]
        third = await cat.call(ann, "video")
        assert len({first, second, third}) == 3
        await ann.send(type="hang-up", call=first)
        assert (await bob.next("call-ended"))["reason"] == "hung-up"
    finally:
        for socket in (ann, bob, cat, dan):
            with contextlib.suppress(Exception):
                await socket.close()
