"""Inviting and removing the assistant; which sessions run in this process.

A session runs in the process that took the room's lease (lease.py) when it was invited.
Removal may arrive at any process: the owner's session is stopped directly, another
process's is asked through the room's fan-out (an `assistant.state` of `leaving`, which
every process hears and the owner acts on), and a lease left by a dead process expires.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sys

from django.conf import settings

from rooms.fanout import room_fanout
from rooms.identity import Participant
from rooms.models import Room

from . import protocol
from .lease import invited_by, lease_value, leases
from .session import AssistantSession

log = logging.getLogger(__name__)

# How long an invite waits for the upstream session before answering (it keeps connecting
# after that; the room hears how it went).
INVITE_WAIT_SECONDS = 10

_sessions: dict[tuple[int, int], AssistantSession] = {}


def available() -> bool:
    """The assistant needs the server's OpenAI key; without it there is none (never faked)."""
    return bool(settings.OPENAI_API_KEY)


def local_session(room_id: int) -> AssistantSession | None:
    return _sessions.get((id(asyncio.get_running_loop()), room_id))


def live_sessions() -> list[AssistantSession]:
    """Sessions running in this process (every loop), for tests and operators."""
    return list(_sessions.values())


async def status(room: Room) -> dict:
    """What a page shows: available, present, who invited it, this process's state."""
    if not available():
        return {"available": False, "present": False,
                "reason": "unavailable: no OPENAI_API_KEY on this server"}
    holder = await leases().holder(room.pk)
    return {"available": True, "present": holder is not None,
            "invited_by": invited_by(holder)}


async def invite(room: Room, inviter: Participant) -> tuple[int, dict]:
    """(HTTP status, body): 201 invited, 200 already present, 503 unavailable or failed."""
    if not available():
        return 503, {"error": {"code": protocol.UNAVAILABLE,
                               "message": "unavailable: no OPENAI_API_KEY on this server"}}
    who = {"id": inviter.public_id, "name": inviter.name}
    value = lease_value(who)
    if not await leases().acquire(room.pk, value):
        return 200, await status(room)
    _stop_on_daphne_shutdown()
    session = AssistantSession(room, inviter, value)
    key = (id(asyncio.get_running_loop()), room.pk)
    _sessions[key] = session
    task = session.start()
    task.add_done_callback(lambda _: _sessions.pop(key, None)
                           if _sessions.get(key) is session else None)
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(INVITE_WAIT_SECONDS):
            await session.ready.wait()
    if session.failure is not None:
        return 503, {"error": {"code": session.failure.code, "message": str(session.failure)}}
    return 201, {"available": True, "present": True, "invited_by": who}


async def remove(room: Room, by: Participant) -> tuple[int, dict]:
    """End the room's session wherever it runs; 200 once asked (or if there was none)."""
    session = local_session(room.pk)
    if session is not None:
        session.stop(protocol.REMOVED)
        if session.task is not None:
            with contextlib.suppress(Exception, asyncio.CancelledError):
                await asyncio.wait_for(asyncio.shield(session.task), INVITE_WAIT_SECONDS)
    elif await leases().holder(room.pk) is not None:
        await room_fanout().publish(room.pk, [protocol.state_event(
            protocol.LEAVING, invited_by={"id": by.public_id, "name": by.name})])
    return 200, {"available": available(), "present": False}


async def voice(room: Room, on: bool) -> tuple[int, dict]:
    """Bring the assistant into the room's group call (or out of it), wherever it runs."""
    session = local_session(room.pk)
    if session is not None:
        session.set_voice(on)
    elif await leases().holder(room.pk) is not None:
        await room_fanout().publish(room.pk, [{"type": protocol.VOICE, "on": on}])
    else:
        return 409, {"error": {"code": "assistant_absent",
                               "message": "Invite the assistant first."}}
    return 202, {"voice": on}


async def stop_all() -> None:
    """End every session of this loop (server shutdown, tests)."""
    loop_id = id(asyncio.get_running_loop())
    for key, session in list(_sessions.items()):
        if key[0] != loop_id or session.task is None:
            continue
        session.task.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await session.task


_shutdown_hooked = False


def _stop_on_daphne_shutdown() -> None:
    """Under daphne, end this process's sessions when its reactor shuts down (SIGTERM), as
    project/asgi.py does for media: each session then leaves the room (presence, state) and
    gives up its lease, so another process can take the room at once."""
    global _shutdown_hooked
    reactor = sys.modules.get("twisted.internet.reactor")
    if _shutdown_hooked or reactor is None:
        return
    from twisted.internet.defer import Deferred

    _shutdown_hooked = True
    reactor.addSystemEventTrigger(
        "before", "shutdown", lambda: Deferred.fromFuture(asyncio.ensure_future(stop_all())))
