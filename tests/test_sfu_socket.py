"""Group calls through `ws/sfu/<slug>/`: in-process worker, worker processes over Redis, and a
worker killed mid-call. Participants are aiortc peers in the test process."""

from __future__ import annotations

import pytest

from rooms.client import create_public_room, guest_session
from tests.support.sfu_peers import SocketParticipant

pytestmark = [pytest.mark.sfu, pytest.mark.multiprocess]

NAMES = ["Ann", "Bob", "Cat"]


async def people_in_call(urls: list[str], names=NAMES) -> list[SocketParticipant]:
    slug = await create_public_room(urls[0], "group call")
    people = []
    for n, name in enumerate(names):
        url = urls[n % len(urls)]
        person = SocketParticipant(url, slug, await guest_session(url, slug, name))
        await person.connect()
        people.append(person)
    return people


async def everyone_hears_everyone(people: list[SocketParticipant], frames: int = 10) -> None:
    for person in people:
        others = [p.name for p in people if p is not person]
        await person.wait_for(
            lambda p=person, o=others: all(p.receiving_from(n, frames) for n in o)
        )


async def close_all(people) -> None:
    for person in people:
        await person.close()


async def test_group_call_with_the_in_process_worker(daphne_factory):
    """Embedded defaults: the worker runs inside daphne; three people see and hear each other."""
    server = daphne_factory()
    people = await people_in_call([server.base_url])
    try:
        await everyone_hears_everyone(people)
        ann = people[0]
        assert ann.names() == set(NAMES)
        await people[2].send(type="mute", audio=True, video=False)
        await ann.wait_for(lambda: any(
            p["name"] == "Cat" and p["muted"] == {"audio": True, "video": False}
            for p in ann.participants))
        await people[2].close()
        await ann.wait_for(lambda: ann.names() == {"Ann", "Bob"})
    finally:
        await close_all(people)


async def test_group_call_over_two_daphne_processes_and_a_worker_process(
    daphne_factory, redis_server, sfu_worker_factory
):
    """With REDIS_URL: sockets on two processes, media through a separate worker process."""
    env = {"REDIS_URL": redis_server.url}
    one, two = daphne_factory(**env), daphne_factory(**env)
    sfu_worker_factory()
    people = await people_in_call([one.base_url, two.base_url])
    try:
        await everyone_hears_everyone(people)
    finally:
        await close_all(people)


async def test_a_killed_worker_is_replaced_and_clients_rejoin(
    daphne_factory, redis_server, sfu_worker_factory
):
    """Clients are told when their worker dies and rejoin on a restarted one."""
    env = {"REDIS_URL": redis_server.url}
    server = daphne_factory(**env)
    first = sfu_worker_factory()
    people = await people_in_call([server.base_url], names=NAMES[:2])
    try:
        await everyone_hears_everyone(people)
        first.kill()
        sfu_worker_factory()
        for person in people:
            await person.wait_for(lambda p=person: p.joins == 2)
            assert any(e["type"] == "worker-lost" for e in person.events)
        await everyone_hears_everyone(people)
    finally:
        await close_all(people)
