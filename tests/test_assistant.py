"""The room assistant through the OpenAI stand-in (conversation sessions, official SDK):
invite and removal, a chat question answered (streamed, then stored like any message),
function calls validated and shown, a call for another room refused, budgets and upstream
faults as visible errors, and nothing left running once it leaves."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import pytest
from channels.db import database_sync_to_async
from django.test import AsyncClient

from rooms import services
from rooms.models import Message
from tests.support.openai_standin import Reply, StandinServer
from tests.support.sockets import close_db_connections, connected, guest_session_key
from transcription.assistant import lease, manager
from transcription.models import AssistantUsage, CaptionSegment

pytestmark = [pytest.mark.django_db(transaction=True)]

KEY = "sk-standin-assistant"
WAIT = 10


@pytest.fixture
async def standin(settings):
    server = StandinServer(api_key=KEY)
    await server.start()
    settings.OPENAI_API_KEY = KEY
    settings.OPENAI_BASE_URL = server.base_url
    settings.OPENAI_WS_BASE_URL = server.ws_base_url
    settings.ASSISTANT = {**settings.ASSISTANT, "TICK_SECONDS": 0.05}
    lease.reset()
    yield server
    await manager.stop_all()
    lease.reset()
    await server.stop()
    await close_db_connections()


class Member:
    """A guest in the room: a room socket and an HTTP client with the same session."""

    @classmethod
    async def join(cls, room, name: str = "Ann") -> Member:
        member = cls()
        member.room = room
        key = await guest_session_key(room, name)
        member.socket, member.hello = await connected(room.slug, key)
        member.http = AsyncClient()
        member.http.cookies["sessionid"] = key
        return member

    async def post(self, action: str):
        return await self.http.post(f"/rooms/{self.room.slug}/assistant/{action}")

    async def say(self, text: str, client_id: str) -> None:
        await self.socket.send_json_to({"type": "chat.send", "text": text,
                                        "client_id": client_id})

    async def until(self, predicate) -> tuple[dict, list[dict]]:
        """The first room event `predicate` accepts, and every event before it."""
        seen = []
        while True:
            event = await self.socket.receive_json_from(timeout=WAIT)
            seen.append(event)
            if predicate(event):
                return event, seen


def of(kind: str, **fields):
    return lambda e: e["type"] == kind and all(e.get(k) == v for k, v in fields.items())


async def invited(standin) -> tuple[Member, object]:
    room = await database_sync_to_async(services.create_room)("Planning", private=False)
    ann = await Member.join(room)
    reply = await ann.post("invite")
    assert reply.status_code == 201, reply.content
    joined, _ = await ann.until(lambda e: e["type"] == "presence" and e["joined"]
                                and e["joined"][0]["name"] == "Assistant")
    assert joined["joined"][0]["name"] == "Assistant"
    assert joined["joined"][0]["kind"] == "assistant"
    await ann.until(of("assistant.state", state="listening"))
    return ann, room


async def test_chat_question_streamed_stored_then_removal_ends_everything(standin):
    standin.script.delta_interval_ms = 30
    standin.script.add(Reply(text="Friday at ten works for everyone."))
    ann, room = await invited(standin)
    assert (await ann.post("invite")).status_code == 200  # one assistant per room
    status = (await ann.http.get(f"/rooms/{room.slug}/assistant")).json()
    assert status == {"available": True, "present": True,
                      "invited_by": {"id": ann.hello["you"]["id"], "name": "Ann"}}

    await ann.say("@assistant when do we meet?", "q1")
    message, seen = await ann.until(lambda e: e["type"] == "chat.message"
                                    and e["author"]["name"] == "Assistant")
    deltas = [e["text"] for e in seen if e["type"] == "assistant.delta"]
    assert deltas and all("Friday at ten works for everyone.".startswith(d) for d in deltas)
    assert len(deltas) >= 2 or deltas[0] != message["text"]  # streamed before it was stored
    assert message["text"] == "Friday at ten works for everyone."
    done, _ = await ann.until(of("assistant.done"))
    assert done["seq"] == message["seq"]
    stored = await database_sync_to_async(list)(
        Message.objects.filter(room=room).order_by("seq").values_list("author_name", "text"))
    assert stored == [("Ann", "@assistant when do we meet?"),
                      ("Assistant", "Friday at ten works for everyone.")]
    usage = await database_sync_to_async(AssistantUsage.objects.get)(room=room)
    assert usage.responses == 1 and usage.tokens > 0
    record = standin.sessions[0]
    assert record.kind == "realtime" and record.query == {"model": "gpt-realtime"}
    assert {t["name"] for t in record.config["tools"]} >= {"read_transcript", "post_to_chat"}

    session = manager.local_session(room.pk)
    tasks = session.tasks()
    assert (await ann.post("remove")).status_code == 200
    left, _ = await ann.until(of("assistant.state", state="left"))
    assert left["reason"] == "removed"
    assert all(task.done() for task in tasks)
    assert manager.live_sessions() == [] and await lease.leases().holder(room.pk) is None
    await standin.wait_until(lambda: record.closed, WAIT)
    status = (await ann.http.get(f"/rooms/{room.slug}/assistant")).json()
    assert status["present"] is False
    await ann.socket.disconnect()


async def test_tool_calls_validated_shown_and_scoped_to_the_room(standin):
    ann, room = await invited(standin)
    now = datetime.now(UTC)
    await database_sync_to_async(CaptionSegment.objects.create)(
        room=room, speaker_key="g:bob", speaker_name="Bob", item_id="item_1",
        text="the budget is approved", started_at=now - timedelta(minutes=2),
        ended_at=now - timedelta(minutes=1), engine="openai")
    standin.script.add(
        Reply(call="read_transcript", arguments={"minutes": 10}),
        Reply(text="Summary: {tool_output}"),
        Reply(call="read_recent_chat", arguments={"room": "someone-elses-room", "limit": 5}),
        Reply(call="read_transcript", arguments={"minutes": "ten"}),
        Reply(text="Refused: {tool_output}"))

    await ann.say("@assistant summarise the last ten minutes", "q1")
    tool, _ = await ann.until(of("assistant.tool"))
    assert tool == {"type": "assistant.tool", "name": "read_transcript", "ok": True,
                    "summary": "Assistant looked up the transcript"}
    answer, _ = await ann.until(lambda e: e["type"] == "chat.message"
                                and e["author"]["name"] == "Assistant")
    assert "Bob: the budget is approved" in answer["text"]

    await ann.say("@assistant what did the other room say?", "q2")
    refused, _ = await ann.until(of("assistant.tool"))
    assert (refused["ok"], refused["code"]) == (False, "other_room")
    invalid, _ = await ann.until(of("assistant.tool"))
    assert (invalid["ok"], invalid["code"]) == (False, "invalid_arguments")
    answer, _ = await ann.until(lambda e: e["type"] == "chat.message"
                                and e["author"]["name"] == "Assistant")
    assert "must be an integer" in answer["text"]
    usage = await database_sync_to_async(AssistantUsage.objects.get)(room=room)
    assert usage.tool_calls == 3
    await ann.socket.disconnect()


async def test_budget_rate_and_upstream_faults_are_visible(standin, settings):
    settings.ASSISTANT = {**settings.ASSISTANT, "DAILY_TOKEN_BUDGET": 1,
                          "RESPONSE_BURST": 4, "RESPONSES_PER_MINUTE": 0.001}
    standin.script.add(Reply(error="server_error"), Reply(text="ok"))
    ann, room = await invited(standin)

    await ann.say("@assistant one", "q1")
    error, _ = await ann.until(of("assistant.error"))
    assert error["code"] == "assistant_answer_failed" and "server_error" in error["message"]
    await ann.say("@assistant two", "q2")
    await ann.until(lambda e: e["type"] == "chat.message" and e["author"]["name"] == "Assistant")
    await ann.say("@assistant three", "q3")  # the first answer spent the day's budget
    error, _ = await ann.until(of("assistant.error"))
    assert error["code"] == "assistant_budget_exhausted"

    standin.faults.drop_after_events = 1  # the connection drops at the next event it sends
    settings.ASSISTANT = {**settings.ASSISTANT, "DAILY_TOKEN_BUDGET": 10**6}
    await ann.say("@assistant four", "q4")
    error, _ = await ann.until(of("assistant.error"))
    assert error["code"] == "upstream_connection_lost"
    standin.faults.drop_after_events = None
    await standin.wait_for_sessions(2, WAIT)  # reconnected
    await ann.say("@assistant five", "q5")  # four answers were the burst
    await ann.until(of("assistant.error", code="assistant_rate_limited"))
    usage = await database_sync_to_async(AssistantUsage.objects.get)(room=room)
    assert usage.refused == 2  # the budget's and the rate's
    await ann.socket.disconnect()


async def test_refused_key_and_missing_key_say_so(standin, settings):
    room = await database_sync_to_async(services.create_room)("Planning", private=False)
    ann = await Member.join(room)
    standin.faults.reject_key = True
    reply = await ann.post("invite")
    assert reply.status_code == 503 and reply.json()["error"]["code"] == "upstream_auth_failed"
    await ann.until(of("assistant.state", state="left", reason="failed"))
    assert manager.live_sessions() == []

    settings.OPENAI_API_KEY = ""
    assert (await ann.http.get(f"/rooms/{room.slug}/assistant")).json() == {
        "available": False, "present": False,
        "reason": "unavailable: no OPENAI_API_KEY on this server"}
    reply = await ann.post("invite")
    assert reply.status_code == 503
    assert reply.json()["error"]["code"] == "assistant_unavailable"
    await ann.socket.disconnect()


async def test_leaves_an_empty_room(standin, settings):
    settings.ASSISTANT = {**settings.ASSISTANT, "EMPTY_GRACE_SECONDS": 0}
    ann, room = await invited(standin)
    session = manager.local_session(room.pk)
    await ann.socket.disconnect()
    async with asyncio.timeout(WAIT):
        await session.task
    assert session.end_reason == "room_empty"
    assert manager.live_sessions() == []


def test_admin_shows_usage_against_the_budget(settings, admin_client):
    settings.ASSISTANT = {**settings.ASSISTANT, "DAILY_TOKEN_BUDGET": 1000}
    room = services.create_room("Planning", private=False)
    AssistantUsage.objects.create(room=room, day=datetime.now(UTC).date(), responses=3,
                                  input_tokens=300, output_tokens=100, tool_calls=2)
    page = admin_client.get("/admin/transcription/assistantusage/")
    assert page.status_code == 200
    text = page.content.decode()
    assert "Budget left (tokens)" in text and ">600<" in text


async def test_the_session_is_replaced_between_answers_keeping_the_conversation(standin,
                                                                                settings):
    """Before OpenAI's 60-minute limit (ASSISTANT_ROTATE_SECONDS) a fresh upstream session
    takes over between answers; it is given the conversation so far, the old one is closed,
    and the next question is answered on the new one."""
    standin.script.add(Reply(text="First answer."))
    standin.script.add(Reply(text="Second answer."))
    ann, room = await invited(standin)
    await ann.say("@assistant first question?", "q1")
    await ann.until(lambda e: e["type"] == "chat.message" and e["author"]["name"] == "Assistant")
    await ann.until(of("assistant.done"))

    settings.ASSISTANT = {**settings.ASSISTANT, "ROTATE_SECONDS": 0}
    await standin.wait_until(lambda: len(standin.sessions) >= 2 and standin.sessions[0].closed,
                             WAIT)
    settings.ASSISTANT = {**settings.ASSISTANT, "ROTATE_SECONDS": 3300}
    await ann.say("@assistant second question?", "q2")
    answer, _ = await ann.until(lambda e: e["type"] == "chat.message"
                                and e["author"]["name"] == "Assistant")
    assert answer["text"] == "Second answer."
    await standin.wait_until(lambda: sum(not s.closed for s in standin.sessions) == 1, WAIT)
    current = next(s for s in standin.sessions if not s.closed)
    assert current is not standin.sessions[0]
    # The history (question and answer) went in before the new question and its response.
    events = current.client_events
    assert events.count("conversation.item.create") >= 3, events
    assert events.index("session.update") < events.index("conversation.item.create")
    assert "response.create" in events
    await ann.post("remove")
    await ann.socket.disconnect()


async def test_the_assistant_leaves_when_its_inviter_loses_access(standin):
    """It acts only with the inviting member's rights: when the room turns private, the
    guest who invited it may no longer be there, and neither may it."""
    ann, room = await invited(standin)
    session = manager.local_session(room.pk)
    tasks = session.tasks()
    stopped = asyncio.Event()
    original = session.stop

    def stop(reason: str) -> None:
        if not stopped.is_set():  # the first reason (its own "leaving" echo follows)
            session.stopped_for = reason
            stopped.set()
        original(reason)

    session.stop = stop
    room.is_private = True
    await database_sync_to_async(room.save)()
    async with asyncio.timeout(WAIT):
        await stopped.wait()
        await asyncio.gather(*tasks, return_exceptions=True)
    assert session.stopped_for == "access_lost"
    assert manager.live_sessions() == [] and await lease.leases().holder(room.pk) is None
    record = standin.sessions[0]
    await standin.wait_until(lambda: record.closed, WAIT)
