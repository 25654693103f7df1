"""One assistant per room across two daphne processes sharing Redis: invited on one, it
answers a question asked on the other, a second invite anywhere finds it present, and a
removal sent to the other process ends it (the owner hears the request on the room bus)."""

from __future__ import annotations

import asyncio

import httpx
import pytest

from rooms.client import RoomClient, create_public_room, guest_session
from tests.support.openai_standin import Reply, standin_in_thread

pytestmark = [pytest.mark.multiprocess]

KEY = "sk-standin-assistant"


async def member_http(base_url: str, slug: str, session_id: str) -> httpx.AsyncClient:
    http = httpx.AsyncClient(base_url=base_url, cookies={"sessionid": session_id})
    await http.get(f"/rooms/{slug}/")
    http.headers["X-CSRFToken"] = http.cookies["csrftoken"]
    return http


async def test_one_assistant_per_room_across_processes(daphne_factory, redis_server):
    with standin_in_thread(api_key=KEY) as standin:
        env = {"REDIS_URL": redis_server.url, "OPENAI_API_KEY": KEY,
               "OPENAI_BASE_URL": standin.base_url, "OPENAI_WS_BASE_URL": standin.ws_base_url}
        one, two = daphne_factory(**env), daphne_factory(**env)
        standin.script.add(Reply(text="Answered by whichever process owns me."))
        slug = await create_public_room(one.base_url, "Across")
        ann_id = await guest_session(one.base_url, slug, "Ann")
        bob_id = await guest_session(two.base_url, slug, "Bob")
        bob = RoomClient(two.base_url, slug, bob_id)
        await bob.connect()
        ann_http = await member_http(one.base_url, slug, ann_id)
        bob_http = await member_http(two.base_url, slug, bob_id)
        try:
            assert (await ann_http.post(f"/rooms/{slug}/assistant/invite")).status_code == 201
            await bob.wait_for(lambda c: "Assistant" in c.presence.values())
            again = await bob_http.post(f"/rooms/{slug}/assistant/invite")
            assert again.status_code == 200 and again.json()["invited_by"]["name"] == "Ann"
            assert len(standin.sessions) == 1

            await bob.send("@assistant who answers?")
            await bob.wait_for(lambda c: [m["author"]["name"] for m in c.messages.values()]
                               == ["Bob", "Assistant"])

            assert (await bob_http.post(f"/rooms/{slug}/assistant/remove")).status_code == 200
            await bob.wait_for(lambda c: "Assistant" not in c.presence.values())
            status = (await bob_http.get(f"/rooms/{slug}/assistant")).json()
            assert status["present"] is False
            await asyncio.wrap_future(asyncio.run_coroutine_threadsafe(
                standin.wait_until(lambda: standin.sessions[0].closed), standin.loop))
            assert (await bob_http.post(f"/rooms/{slug}/assistant/invite")).status_code == 201
        finally:
            await bob.close()
            await ann_http.aclose()
            await bob_http.aclose()
