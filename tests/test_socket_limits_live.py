"""Issue #10 regressions that need a real daphne: a client that stops reading is closed with
4408 at a bounded backlog and loses nothing; the first socket after a Redis restart is served."""

from __future__ import annotations

import json
import socket
from urllib.parse import urlsplit

import pytest
import websockets

from rooms.client import RoomClient, create_public_room, guest_session

pytestmark = [pytest.mark.multiprocess, pytest.mark.asyncio(loop_scope="function")]

MESSAGE = "x" * 3990  # about the longest chat message: fewest messages to fill buffers


async def stalled_socket(base_url: str, slug: str, session: str):
    """A room socket whose reader has stopped: a 4 KB receive buffer and a client that
    takes one frame off it, then no more (TCP backpressure reaches the server)."""
    host, port = urlsplit(base_url).hostname, urlsplit(base_url).port
    raw = socket.socket()
    raw.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    raw.connect((host, port))
    client = await websockets.connect(
        f"ws://{host}:{port}/ws/rooms/{slug}/", sock=raw, origin=base_url,
        additional_headers={"Cookie": f"sessionid={session}"}, max_queue=1, max_size=2**22)
    hello = json.loads(await client.recv())
    assert hello["type"] == "hello"
    return client


async def test_a_client_that_stops_reading_is_closed_with_4408_and_resumes_losing_nothing(
        daphne_factory):
    limit = 256 * 1024  # above the largest frame Parley sends (a 192 KB backlog)
    server = daphne_factory(PARLEY_MAX_OUTBOUND_BYTES=str(limit), PARLEY_RATE_BURST="5000",
                            PARLEY_RATE_PER_SECOND="5000", PARLEY_FLOOD_CLOSE_AFTER="5000",
                            # What it missed is more than a default resume sends (a reset).
                            PARLEY_RESUME_LIMIT="5000")
    slug = await create_public_room(server.base_url, "slow readers")
    slow_session = await guest_session(server.base_url, slug, "Slow")
    slow = await stalled_socket(server.base_url, slug, slow_session)
    ann = RoomClient(server.base_url, slug, await guest_session(server.base_url, slug, "Ann"))
    await ann.connect()
    try:
        # Enough to fill both kernels' buffers (4 MB at most here) and the bound behind them.
        sent = 1300
        for n in range(sent):
            await ann.send(f"{n} {MESSAGE}")
        await ann.wait_for(lambda c: not c.outbox, timeout=60)
        assert len(ann.acks) == sent  # the fast reader was served all along

        # The slow client reads at last: what was buffered, then the close code.
        seen: list[int] = []
        with pytest.raises(websockets.ConnectionClosed):
            while True:
                event = json.loads(await slow.recv())
                for inner in event["events"] if event["type"] == "batch" else [event]:
                    if inner["type"] == "chat.message":
                        seen.append(inner["seq"])
        assert slow.close_code == 4408
        assert seen == list(range(1, len(seen) + 1)) and len(seen) < sent

        # It comes back after the last seq it saw and gets exactly the rest.
        again = RoomClient(server.base_url, slug, slow_session, last_seq=seen[-1])
        await again.connect()
        await again.wait_for(lambda c: c.last_seq == sent, timeout=30)
        assert sorted(seen + list(again.messages)) == list(range(1, sent + 1))
        await again.close()
    finally:
        await slow.close()
        await ann.close()


async def test_the_first_socket_after_a_redis_restart_gets_hello(daphne_factory, redis_server):
    server = daphne_factory(REDIS_URL=redis_server.url)
    slug = await create_public_room(server.base_url, "redis restart")
    ann = RoomClient(server.base_url, slug, await guest_session(server.base_url, slug, "Ann"))
    await ann.connect()
    await ann.close()
    redis_server.stop()
    redis_server.start()
    # The pooled connections are stale now; the server retries them itself.
    bob = RoomClient(server.base_url, slug, await guest_session(server.base_url, slug, "Bob"))
    await bob.connect()  # raises if closed before `hello`
    await bob.send("after the restart")
    await bob.wait_for(lambda c: not c.outbox, timeout=10)
    await bob.close()


async def test_a_reader_that_falls_behind_catches_up_on_batches_losing_nothing(daphne_factory):
    """Events for a socket whose kernel buffers are full are held, not queued frame by
    frame; once it reads again it gets them as a few `batch` frames, in order, all of them."""
    server = daphne_factory(PARLEY_MAX_OUTBOUND_BYTES=str(64 * 1024 * 1024),
                            PARLEY_RATE_BURST="5000", PARLEY_RATE_PER_SECOND="5000",
                            PARLEY_FLOOD_CLOSE_AFTER="5000")
    slug = await create_public_room(server.base_url, "catching up")
    late = await stalled_socket(server.base_url, slug,
                                await guest_session(server.base_url, slug, "Late"))
    ann = RoomClient(server.base_url, slug, await guest_session(server.base_url, slug, "Ann"))
    await ann.connect()
    try:
        sent = 2500  # 10 MB: more than the kernel buffers between them can take
        for n in range(sent):
            # One at a time: each is stored and broadcast on its own (no group commit, no
            # batch from the room), so only the late socket's own catching up coalesces.
            await ann.send(f"{n} {MESSAGE}")
            await ann.wait_for(lambda c: not c.outbox, timeout=30)

        frames, seen = 0, []
        while len(seen) < sent:
            event = json.loads(await late.recv())
            frames += 1
            for inner in event["events"] if event["type"] == "batch" else [event]:
                if inner["type"] == "chat.message":
                    seen.append(inner["seq"])
        assert seen == list(range(1, sent + 1))
        assert frames < sent * 0.9  # a tenth or more of the messages came coalesced
    finally:
        await late.close()
        await ann.close()
