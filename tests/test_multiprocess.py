"""Two real daphne processes sharing one real redis-server and one database."""

from __future__ import annotations

import pytest

from rooms.client import RoomClient, create_public_room, guest_session

pytestmark = [pytest.mark.multiprocess, pytest.mark.asyncio(loop_scope="function")]

LAYERS = ["pubsub", "core"]


def start_pair(daphne_factory, redis_server, layer: str):
    env = {
        "REDIS_URL": redis_server.url,
        "REDIS_LAYER": layer,
        # Fast heartbeats so a client notices missed messages within a test's patience.
        "PARLEY_HEARTBEAT_SECONDS": "0.3",
        "PARLEY_PRESENCE_TTL_SECONDS": "5",
    }
    return daphne_factory(**env), daphne_factory(**env)


async def two_clients(one, two, room_name: str) -> tuple[RoomClient, RoomClient]:
    slug = await create_public_room(one.base_url, room_name)
    ann = RoomClient(one.base_url, slug, await guest_session(one.base_url, slug, "Ann"))
    bob = RoomClient(two.base_url, slug, await guest_session(two.base_url, slug, "Bob"))
    await ann.connect()
    await bob.connect()
    return ann, bob


def texts(client: RoomClient) -> list[str]:
    return [m["text"] for m in client.messages.values()]


@pytest.mark.parametrize("layer", LAYERS)
async def test_messages_and_presence_cross_processes(daphne_factory, redis_server, layer):
    """A message sent on one process reaches a client on the other; presence is shared."""
    one, two = start_pair(daphne_factory, redis_server, layer)
    ann, bob = await two_clients(one, two, f"cross {layer}")
    try:
        await ann.wait_for(lambda c: "Bob" in c.presence.values())
        await ann.send("from process one")
        await bob.wait_for(lambda c: texts(c) == ["from process one"])
        await bob.send("from process two")
        await ann.wait_for(lambda c: texts(c) == ["from process one", "from process two"])
        assert [m["seq"] for m in ann.messages.values()] == [1, 2]
    finally:
        await ann.close()
        await bob.close()


@pytest.mark.parametrize("layer", LAYERS)
async def test_reconnect_to_the_other_process_resumes_exactly(daphne_factory, redis_server, layer):
    """A client that drops and comes back on the other process gets exactly what it missed."""
    one, two = start_pair(daphne_factory, redis_server, layer)
    ann, bob = await two_clients(one, two, f"resume {layer}")
    try:
        await ann.send("before")
        await bob.wait_for(lambda c: texts(c) == ["before"])
        await bob.close()
        for n in range(3):
            await ann.send(f"missed {n}")
        await ann.wait_for(lambda c: not c.outbox)
        await bob.connect(one.base_url)  # resumes with ?after=1 on the other process
        assert bob.hellos == 2
        assert texts(bob) == ["before", "missed 0", "missed 1", "missed 2"]
        assert list(bob.messages) == [1, 2, 3, 4]
    finally:
        await ann.close()
        await bob.close()


@pytest.mark.parametrize("layer", LAYERS)
async def test_redis_restart_loses_no_acknowledged_message(daphne_factory, redis_server, layer):
    """Redis goes away mid-conversation and comes back empty: every acked message arrives."""
    one, two = start_pair(daphne_factory, redis_server, layer)
    ann, bob = await two_clients(one, two, f"blip {layer}")
    ann.auto_reconnect = bob.auto_reconnect = True
    await ann.connect()
    await bob.connect()
    try:
        await ann.send("before the blip")
        await bob.wait_for(lambda c: texts(c) == ["before the blip"])

        redis_server.stop()
        during = [await ann.send(f"during {n}") for n in range(3)]
        redis_server.start()
        after = [await ann.send(f"after {n}") for n in range(3)]
        await bob.send("bob after the blip")

        await ann.wait_for(lambda c: not c.outbox, timeout=20)
        await bob.wait_for(lambda c: not c.outbox, timeout=20)
        acked = {ann.acks[cid] for cid in during + after} | set(bob.acks.values())
        await bob.wait_for(lambda c: acked <= set(c.messages), timeout=20)
        await ann.wait_for(lambda c: acked <= set(c.messages), timeout=20)
        assert sorted(texts(bob)) == sorted(
            ["before the blip", "bob after the blip"]
            + [f"during {n}" for n in range(3)] + [f"after {n}" for n in range(3)]
        )
        assert list(bob.messages) == list(range(1, 9))
        assert texts(ann) == texts(bob)
    finally:
        await ann.close()
        await bob.close()
