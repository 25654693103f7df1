"""Real WebRTC through the signaling relay: two aiortc peers, one or two daphne processes.

aiortc gathers every candidate before it returns a description and never trickles, so this
also checks that a peer sending no separate `ice-candidate` connects.
"""

from __future__ import annotations

import asyncio

import pytest
from aiortc import RTCConfiguration, RTCPeerConnection, RTCSessionDescription

from rooms.client import create_public_room, guest_session
from tests.support.signal_client import SignalSocket

pytestmark = pytest.mark.multiprocess


async def data_channel_call(one_url: str, two_url: str) -> list[str]:
    slug = await create_public_room(one_url, "p2p")
    ann = SignalSocket(one_url, slug, await guest_session(one_url, slug, "Ann"))
    bob = SignalSocket(two_url, slug, await guest_session(two_url, slug, "Bob"))
    config = RTCConfiguration(iceServers=[])
    ann_pc, bob_pc = RTCPeerConnection(config), RTCPeerConnection(config)
    heard: list[str] = []
    done = asyncio.Event()
    try:
        await ann.open()
        await ann.send(type="join", mode="chat")
        assert (await ann.next())["type"] == "waiting"
        await bob.open()
        await bob.send(type="join", mode="chat")
        bob_ready = await bob.next("ready")
        ann_ready = await ann.next("ready")
        assert bob_ready["initiator"] and not ann_ready["initiator"]

        @ann_pc.on("datachannel")
        def on_channel(channel):
            @channel.on("message")
            def on_message(text):
                heard.append(f"ann got {text}")
                channel.send(f"re: {text}")

        channel = bob_pc.createDataChannel("chat")

        @channel.on("open")
        def on_open():
            channel.send("hello over the data channel")

        @channel.on("message")
        def on_reply(text):
            heard.append(f"bob got {text}")
            done.set()

        await bob_pc.setLocalDescription(await bob_pc.createOffer())
        await bob.send(type="offer", sdp=bob_pc.localDescription.sdp, peer=bob_ready["peer"])
        offer = await ann.next("offer")
        await ann_pc.setRemoteDescription(RTCSessionDescription(offer["sdp"], "offer"))
        await ann_pc.setLocalDescription(await ann_pc.createAnswer())
        await ann.send(type="answer", sdp=ann_pc.localDescription.sdp)
        answer = await bob.next("answer")
        await bob_pc.setRemoteDescription(RTCSessionDescription(answer["sdp"], "answer"))
        async with asyncio.timeout(20):
            await done.wait()

        await bob.close()  # Bob goes: Ann is told and waits again
        assert (await ann.next())["type"] == "peer-left"
        assert (await ann.next())["type"] == "waiting"
    finally:
        await ann_pc.close()
        await bob_pc.close()
        await ann.close()
        await bob.close()
    return heard


async def test_aiortc_peers_connect_through_one_process(daphne_factory):
    server = daphne_factory()
    heard = await data_channel_call(server.base_url, server.base_url)
    assert heard == ["ann got hello over the data channel",
                     "bob got re: hello over the data channel"]


@pytest.mark.parametrize("layer", ["pubsub", "core"])
async def test_aiortc_peers_connect_across_two_processes(daphne_factory, redis_server, layer):
    env = {"REDIS_URL": redis_server.url, "REDIS_LAYER": layer}
    one, two = daphne_factory(**env), daphne_factory(**env)
    heard = await data_channel_call(one.base_url, two.base_url)
    assert heard[-1] == "bob got re: hello over the data channel"
