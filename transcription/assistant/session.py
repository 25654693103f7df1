"""One room's assistant session: a single task owns everything the session holds.

`AssistantSession.run()` is that task. It joins the room's fan-out as a receiver (it hears
chat like a socket does), appears in presence as `kind: "assistant"`, holds the room's lease
(lease.py) and one upstream conversation (`client.realtime.connect(model=...)`, the official
SDK, automatic reconnects off), and ends all of them in its `finally`, however it ends:
removed, the room empty for EMPTY_GRACE_SECONDS, the inviter's access gone, an upstream
fault it cannot recover from, or the server stopping.

Inside, one loop (`_drive`) takes every input from one inbox, in order: questions from
chat, upstream events (from a reader task per connection), connection losses, ticks, stop
requests. So the conversation's state has one writer and no locks:
question -> conversation.item.create + response.create -> output_text deltas (coalesced
into `assistant.delta` room events) -> function calls run after their response.done, outputs
sent, response.create again (at most MAX_TOOL_ROUNDS) -> the final text stored as the
assistant's chat message (rooms' one write path: seq, ack, resume) -> `assistant.done`.
Partial text is never stored.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import contextvars
import json
import logging
import time
from collections import deque
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from channels.db import database_sync_to_async
from django.conf import settings
from openai import AsyncOpenAI
from websockets.exceptions import ConnectionClosed, InvalidStatus

from rooms import services, writer
from rooms.access import admits
from rooms.fanout import Outgoing, room_fanout
from rooms.identity import Participant, public_id_for
from rooms.models import Room
from rooms.presence import Present, presence_store

from ..captions import broadcast_caption, store_segment
from ..engines import (
    UPSTREAM_AUTH_FAILED,
    UPSTREAM_LOST,
    UPSTREAM_QUOTA,
    UPSTREAM_UNAVAILABLE,
)
from ..models import CaptionSegment
from . import budget, protocol, tools
from .lease import leases
from .voice import CallVoice

log = logging.getLogger(__name__)

DELTA_INTERVAL = 0.1  # seconds between assistant.delta broadcasts of one answer
RECONNECT_DELAYS = (0.5, 2, 5)  # after a dropped connection; then the session ends
AUTH_CODES = {"invalid_api_key", "invalid_authentication", "unauthorized"}
QUOTA_CODES = {"insufficient_quota", "quota_exceeded"}
HISTORY_TURNS = 20  # question/answer pairs carried into a rotated session

DEFAULT_INSTRUCTIONS = (
    "You are Assistant, a helpful participant in a meeting room called {room}. People "
    "address you in the room's chat or speak to you in its call. Answer briefly and plainly, "
    "in the language you are asked in. Use the tools to read the room's recent chat, its "
    "transcript (what was said aloud), who is here, or to search its history, instead of "
    "guessing. Each chat question starts with the asker's name.")


class SessionFailed(Exception):
    def __init__(self, code: str, message: str):
        super().__init__(message)
        self.code = code


def client() -> AsyncOpenAI:
    return AsyncOpenAI(api_key=settings.OPENAI_API_KEY, base_url=settings.OPENAI_BASE_URL,
                       websocket_base_url=settings.OPENAI_WS_BASE_URL or None, max_retries=0)


@dataclass
class Question:
    author: dict  # {id, name}
    text: str


@dataclass
class Answer:
    question: Question
    started: float = field(default_factory=time.monotonic)
    response_id: str | None = None  # of the response in flight, once created
    text: str = ""
    calls: list[tuple[str, str, str]] = field(default_factory=list)  # call_id, name, args
    rounds: int = 0
    sent_at: float = 0.0  # last assistant.delta
    sent_text: str = ""
    voice: bool = False  # a spoken turn in the call: captions, not a chat message
    spoke: bool = False  # its audio has started playing


@dataclass(eq=False)
class Connection:
    sdk: Any  # openai AsyncRealtimeConnection
    opened: float = field(default_factory=time.monotonic)
    reader: asyncio.Task | None = None


class AssistantSession:
    """The assistant in one room, from invite to its end (see the module docstring)."""

    def __init__(self, room: Room, inviter: Participant, lease_value: str):
        self.room, self.inviter, self.lease_value = room, inviter, lease_value
        self.inviter_public = {"id": inviter.public_id, "name": inviter.name}
        self.me = Present(public_id_for(protocol.ASSISTANT_KEY), protocol.ASSISTANT_NAME,
                          protocol.PRESENCE_KIND)
        self.presence_name = f"assistant.{room.pk}"
        self.inbox: asyncio.Queue[tuple] = asyncio.Queue()
        self.waiting: deque[Question] = deque()
        self.answer: Answer | None = None
        self.history: deque[tuple[str, str]] = deque(maxlen=2 * HISTORY_TURNS)
        self.bucket = budget.response_bucket()
        self.connection: Connection | None = None
        self.context = tools.Context(room, inviter.key)
        self.ready = asyncio.Event()  # set once connected, or once it failed to
        self.failure: SessionFailed | None = None
        self.end_reason = protocol.STOPPED
        self.empty_since: float | None = None
        self.task: asyncio.Task | None = None
        self.subtasks: set[asyncio.Task] = set()
        self.voice: CallVoice | None = None  # while it is in the room's group call
        self.client = client()

    # Lifetime

    def start(self) -> asyncio.Task:
        # A fresh context: the task outlives the request that invited it, and must not
        # carry that request's context (asgiref's per-request sync thread among it).
        self.task = asyncio.get_running_loop().create_task(
            self.run(), name=f"assistant.room.{self.room.pk}", context=contextvars.Context())
        return self.task

    def stop(self, reason: str) -> None:
        """Ask the session to end (it ends at its next step; await `self.task` to wait)."""
        self.inbox.put_nowait(("stop", reason))

    def tasks(self) -> list[asyncio.Task]:
        """Every task this session holds (tests check that none outlives it)."""
        own = [self.task] if self.task is not None else []
        voice = list(self.voice.tasks) if self.voice is not None else []
        return own + [t for t in (*self.subtasks, *voice) if not t.done()]

    async def run(self) -> None:
        fanout = room_fanout()
        presence = presence_store()
        joined = False
        try:
            await fanout.join(self.room.pk, self)
            joined = True
            await self._broadcast(self._state(protocol.JOINING))
            try:
                self.connection = await self._connect()
            finally:
                self.ready.set()
            await self._call_presence(presence.add(self.room.pk, self.presence_name, self.me))
            await self._broadcast({"type": "presence", "joined": [self.me.as_dict()],
                                   "left": []})
            await self._broadcast(self._state(protocol.LISTENING))
            self._spawn(self._tick_forever(), "ticker")
            await self._drive()
        except SessionFailed as failure:
            self.failure = failure
            self.end_reason = protocol.FAILED
            if joined:
                await self._broadcast(protocol.error_event(failure.code, str(failure)))
        except asyncio.CancelledError:
            self.end_reason = protocol.STOPPED
            raise
        except Exception:
            log.exception("assistant session of room %s failed", self.room.pk)
            self.end_reason = protocol.FAILED
            await self._broadcast(protocol.error_event(
                protocol.ANSWER_FAILED, "The assistant stopped after an internal error."))
        finally:
            await asyncio.shield(self._cleanup(fanout, presence, joined))

    async def _cleanup(self, fanout, presence, joined: bool) -> None:
        for task in list(self.subtasks):
            task.cancel()
        for task in list(self.subtasks):
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        if self.voice is not None:
            voice, self.voice = self.voice, None
            await voice.close()
        if self.connection is not None:
            await self._close(self.connection)
            self.connection = None
        # Given up before the room hears of the leave, so whoever hears it can invite again.
        with contextlib.suppress(Exception):
            await leases().release(self.room.pk, self.lease_value)
        if self.answer is not None:
            await self._broadcast({"type": protocol.DONE, "response_id": self.answer.response_id,
                                   "seq": None})
            self.answer = None
        gone = await self._call_presence(presence.remove(self.room.pk, self.presence_name))
        if gone is not None:
            await self._broadcast({"type": "presence", "joined": [], "left": [gone.as_dict()]})
        await self._broadcast(protocol.state_event(protocol.LEFT, reason=self.end_reason))
        if joined:
            await fanout.leave(self.room.pk, self)

    def _spawn(self, coro, name: str) -> asyncio.Task:
        task = asyncio.get_running_loop().create_task(
            coro, name=f"assistant.room.{self.room.pk}.{name}")
        self.subtasks.add(task)
        task.add_done_callback(self.subtasks.discard)
        return task

    # The room (a fan-out receiver)

    async def room_frames(self, out: Outgoing) -> None:
        """Called by the fan-out with the room's events: questions to the assistant, and a
        request to leave made in any process."""
        for text in out.texts:
            if '"chat.message"' in text:
                event = json.loads(text)
                if event.get("type") != "chat.message" or \
                        event["author"]["id"] == self.me.id:
                    continue
                question = protocol.addressed(event.get("text", ""))
                if question is not None:
                    self.inbox.put_nowait(("question", Question(event["author"], question)))
            elif '"assistant.voice"' in text:
                event = json.loads(text)
                if event.get("type") == protocol.VOICE and isinstance(event.get("on"), bool):
                    self.set_voice(event["on"])
            elif '"assistant.state"' in text and f'"{protocol.LEAVING}"' in text:
                if json.loads(text).get("state") == protocol.LEAVING:
                    self.stop(protocol.REMOVED)

    def _state(self, state: str) -> dict:
        return protocol.state_event(state, invited_by=self.inviter_public,
                                    voice=self.voice is not None)

    async def _broadcast(self, event: dict) -> None:
        try:
            await room_fanout().publish(self.room.pk, [event])
        except Exception:
            log.warning("assistant broadcast failed", exc_info=True)

    async def _call_presence(self, call):
        try:
            return await call
        except Exception:
            log.warning("presence store unavailable", exc_info=True)
            return None

    # Upstream

    async def _connect(self) -> Connection:
        try:
            sdk = await self.client.realtime.connect(
                model=settings.ASSISTANT["MODEL"]).enter()
        except InvalidStatus as error:
            status = error.response.status_code
            raise SessionFailed(*(
                (UPSTREAM_AUTH_FAILED, "OpenAI refused the server's API key.")
                if status in (401, 403) else
                (UPSTREAM_QUOTA, "OpenAI's quota or rate limit is exhausted.")
                if status == 429 else
                (UPSTREAM_UNAVAILABLE, f"OpenAI answered HTTP {status}."))) from None
        except (OSError, TimeoutError, ConnectionClosed) as error:
            raise SessionFailed(UPSTREAM_UNAVAILABLE, "OpenAI cannot be reached "
                                f"({type(error).__name__}).") from None
        connection = Connection(sdk)
        connection.reader = self._spawn(self._read(connection), "reader")
        with contextlib.suppress(ConnectionClosed):  # refused at once: the reader says why
            await sdk.session.update(session=self.session_config())
            for role, text in self.history:  # a rotated session keeps the conversation
                kind = "input_text" if role == "user" else "output_text"
                await sdk.conversation.item.create(item={
                    "type": "message", "role": role, "content": [{"type": kind, "text": text}]})
        return connection

    def session_config(self) -> dict:
        """Text out, no turn detection; in the call (voice), audio out (with its
        transcript) and server VAD on the call's mixed audio, which starts an answer when
        someone stops speaking and cancels it when someone speaks over it."""
        limits = settings.ASSISTANT
        instructions = limits["INSTRUCTIONS"] or DEFAULT_INSTRUCTIONS.format(
            room=self.room.name)
        voice = self.voice is not None
        turns = {"type": "server_vad", "create_response": True,
                 "interrupt_response": True} if voice else None
        return {"type": "realtime", "output_modalities": ["audio" if voice else "text"],
                "instructions": instructions, "tools": tools.specs(), "tool_choice": "auto",
                "audio": {"input": {"format": {"type": "audio/pcm", "rate": 24000},
                                    "turn_detection": turns},
                          "output": {"format": {"type": "audio/pcm", "rate": 24000},
                                     "voice": limits["VOICE"]}}}

    async def _read(self, connection: Connection) -> None:
        try:
            while True:
                event = json.loads(await connection.sdk.recv_bytes())
                if isinstance(event, dict) and isinstance(event.get("type"), str):
                    self.inbox.put_nowait(("upstream", connection, event))
        except ConnectionClosed:
            self.inbox.put_nowait(("lost", connection))
        except ValueError:
            log.warning("OpenAI sent an event that is not JSON")
            self.inbox.put_nowait(("lost", connection))

    async def _close(self, connection: Connection) -> None:
        if connection.reader is not None:
            connection.reader.cancel()
        with contextlib.suppress(Exception):
            await connection.sdk.close()

    async def _send(self, send) -> bool:
        """Send on the current connection; False (and recovery under way) if it is gone."""
        connection = self.connection
        if connection is None:
            return False
        try:
            await send(connection.sdk)
            return True
        except ConnectionClosed:
            await self._lost(connection)
            return False

    # The one loop

    async def _drive(self) -> None:
        while True:
            item = await self.inbox.get()
            kind = item[0]
            if kind == "stop":
                self.end_reason = item[1]
                await self._broadcast(self._state(protocol.LEAVING))
                return
            if kind == "question":
                await self._question(item[1])
            elif kind == "upstream":
                if item[1] is self.connection:
                    await self._upstream(item[2])
            elif kind == "lost":
                await self._lost(item[1])
            elif kind == "tick":
                await self._tick()
            elif kind == "audio":
                await self._listen(item[1])
            elif kind == "voice":
                await self._set_voice(item[1])

    async def _question(self, question: Question) -> None:
        if not self.bucket.allow():
            await database_sync_to_async(budget.count)(self.room.pk, refused=1)
            await self._broadcast(protocol.error_event(
                protocol.RATE_LIMITED, "The assistant takes at most "
                f"{settings.ASSISTANT['RESPONSES_PER_MINUTE']:g} questions a minute here; "
                "ask again shortly."))
            return
        if self.answer is not None:
            if len(self.waiting) >= settings.ASSISTANT["MAX_WAITING_QUESTIONS"]:
                await self._broadcast(protocol.error_event(
                    protocol.BUSY, "The assistant has too many questions waiting; ask again "
                    "once it has answered."))
                return
            self.waiting.append(question)
            return
        await self._begin(question)

    async def _begin(self, question: Question) -> None:
        if not await database_sync_to_async(budget.within_budget)(self.room.pk):
            await database_sync_to_async(budget.count)(self.room.pk, refused=1)
            await self._broadcast(protocol.error_event(
                protocol.BUDGET_EXHAUSTED, "The assistant has used today's token budget for "
                "this room; it answers again tomorrow (UTC)."))
            return
        self.answer = Answer(question)
        text = f"{question.author.get('name', 'Someone')}: {question.text}"
        self.history.append(("user", text))
        await self._broadcast(self._state(protocol.THINKING))
        item = {"type": "message", "role": "user",
                "content": [{"type": "input_text", "text": text}]}
        if not await self._send(lambda sdk: sdk.conversation.item.create(item=item)):
            return
        await self._send(lambda sdk: sdk.response.create())

    # Voice (the group call)

    def set_voice(self, on: bool) -> None:
        """Ask the session to join (or leave) the room's group call."""
        self.inbox.put_nowait(("voice", on))

    async def _set_voice(self, on: bool) -> None:
        if on == (self.voice is not None):
            return
        if on:
            voice = CallVoice(self.room.pk, lambda pcm: self.inbox.put_nowait(("audio", pcm)))
            try:
                await voice.start()
            except Exception as error:
                log.warning("the assistant could not join the call", exc_info=True)
                await voice.close()
                await self._broadcast(protocol.error_event(
                    protocol.VOICE_FAILED, f"The assistant could not join the call ({error})."))
                return
            self.voice = voice
        else:
            voice, self.voice = self.voice, None
            await voice.close()
        await self._send(lambda sdk: sdk.session.update(session=self.session_config()))
        await self._broadcast(self._state(protocol.LISTENING))

    async def _listen(self, pcm: bytes) -> None:
        """The call's mixed audio, to the upstream input buffer (raw: a typed append
        validates every chunk)."""
        connection = self.connection
        if connection is None or self.voice is None:
            return  # reconnecting: this audio is not heard
        frame = json.dumps({"type": "input_audio_buffer.append",
                            "audio": base64.b64encode(pcm).decode("ascii")})
        try:
            await connection.sdk.send_raw(frame)
        except ConnectionClosed:
            await self._lost(connection)

    async def _voice_turn(self, event: dict) -> bool:
        """Events of spoken turns; True when handled."""
        kind = event["type"]
        answer = self.answer
        if kind == "input_audio_buffer.speech_started":
            if self.voice is not None and (self.voice.voice.speaking or (
                    answer is not None and answer.voice)):
                self.voice.hush()  # stop at once; the API cancels the response itself
            return True
        if kind == "response.created" and answer is None and self.voice is not None:
            # Server VAD started an answer to what was said in the call.
            if not self.bucket.allow() or not await database_sync_to_async(
                    budget.within_budget)(self.room.pk):
                await self._send(lambda sdk: sdk.response.cancel())
                await database_sync_to_async(budget.count)(self.room.pk, refused=1)
                await self._broadcast(protocol.error_event(
                    protocol.BUDGET_EXHAUSTED, "The assistant's answer rate or today's token "
                    "budget is used up; it does not answer now."))
                return True
            self.answer = Answer(Question({"id": "", "name": "call"}, "(spoken)"),
                                 response_id=(event.get("response") or {}).get("id"),
                                 voice=True)
            await self._broadcast(self._state(protocol.THINKING))
            return True
        if kind == "response.output_audio.delta" and answer is not None:
            if self.voice is not None:
                self.voice.speak(base64.b64decode(event.get("delta", "")))
                if not answer.spoke:
                    answer.spoke = True
                    await self._broadcast(self._state(protocol.SPEAKING))
            return True
        return False

    async def _upstream(self, event: dict) -> None:
        kind = event["type"]
        if await self._voice_turn(event):
            return
        answer = self.answer
        if kind == "error":
            await self._upstream_error(event.get("error") or {})
        elif answer is None:
            return
        elif kind == "response.created":
            answer.response_id = (event.get("response") or {}).get("id")
        elif kind in ("response.output_text.delta", "response.output_audio_transcript.delta"):
            answer.text += event.get("delta", "")
            if time.monotonic() - answer.sent_at >= DELTA_INTERVAL:
                await self._send_delta(answer)
        elif kind == "response.function_call_arguments.done":
            answer.calls.append((event.get("call_id", ""), event.get("name", ""),
                                 event.get("arguments", "")))
        elif kind == "response.done":
            await self._response_done(answer, event.get("response") or {})

    async def _send_delta(self, answer: Answer) -> None:
        if answer.text != answer.sent_text:
            answer.sent_at, answer.sent_text = time.monotonic(), answer.text
            if answer.voice:  # a spoken answer is the assistant's captions
                await broadcast_caption(self.room.pk, protocol.ASSISTANT_KEY,
                                        protocol.ASSISTANT_NAME, answer.response_id or "",
                                        None, answer.text, final=False)
                return
            await self._broadcast({"type": protocol.DELTA, "response_id": answer.response_id,
                                   "text": answer.text})

    async def _response_done(self, answer: Answer, response: dict) -> None:
        usage = response.get("usage") or {}
        await database_sync_to_async(budget.count)(
            self.room.pk, responses=1, input_tokens=int(usage.get("input_tokens") or 0),
            output_tokens=int(usage.get("output_tokens") or 0), tool_calls=len(answer.calls))
        status = response.get("status")
        if status in ("failed", "incomplete") and not answer.text:
            details = response.get("status_details") or {}
            reason = (details.get("error") or {}).get("message") or details.get("reason") \
                or status
            await self._finish(error=(protocol.ANSWER_FAILED,
                                      f"The answer could not be completed ({reason})."))
            return
        if status == "cancelled":
            if answer.voice:  # someone spoke over it: what was said stays as said
                await self._finish()
                return
            await self._finish(error=(protocol.ANSWER_FAILED, "The answer was cancelled."))
            return
        if answer.calls:
            calls, answer.calls = answer.calls, []
            answer.rounds += 1
            for call_id, name, arguments in calls:
                outcome = await tools.call(self.context, name, arguments)
                await self._broadcast(outcome.event)
                item = {"type": "function_call_output", "call_id": call_id,
                        "output": outcome.output}
                if not await self._send(lambda sdk, item=item:
                                        sdk.conversation.item.create(item=item)):
                    return
            if answer.rounds > settings.ASSISTANT["MAX_TOOL_ROUNDS"]:
                await self._finish(error=(protocol.ANSWER_FAILED, "The assistant used too "
                                          "many tools for one answer."))
                return
            answer.response_id = None
            await self._send(lambda sdk: sdk.response.create())
            return
        await self._finish()

    async def _finish(self, error: tuple[str, str] | None = None) -> None:
        """End the answer in flight: store its text (or report `error`), then take the next
        waiting question."""
        answer, self.answer = self.answer, None
        if answer is None:
            return
        seq = None
        text = answer.text.strip()[:settings.PARLEY["MAX_TEXT_CHARS"]]
        if error is not None:
            await self._broadcast(protocol.error_event(*error))
        elif answer.voice:
            await self._finish_spoken(answer, text)
        elif text:
            client_id = f"assistant-{answer.response_id or int(time.time() * 1000)}"[:64]
            try:
                result = await writer.post_message(self.room, services.PostRequest(
                    protocol.ASSISTANT, text, client_id))
                seq = result.message.seq
                self.history.append(("assistant", text))
            except Exception:
                log.exception("storing the assistant's answer failed")
                await self._broadcast(protocol.error_event(
                    protocol.ANSWER_FAILED, "The answer could not be stored."))
        await self._broadcast({"type": protocol.DONE, "response_id": answer.response_id,
                               "seq": seq})
        await self._broadcast(self._state(protocol.LISTENING))
        if self.waiting:
            await self._begin(self.waiting.popleft())

    async def _finish_spoken(self, answer: Answer, text: str) -> None:
        """A spoken answer ends as the assistant's final caption, stored like anyone's."""
        item = answer.response_id or f"assistant-{int(time.time() * 1000)}"
        if text:
            now = datetime.now(UTC)
            try:
                await store_segment(self.room.pk, protocol.ASSISTANT_KEY,
                                    protocol.ASSISTANT_NAME, item, None, text,
                                    now - timedelta(seconds=time.monotonic() - answer.started),
                                    now, CaptionSegment.Engine.OPENAI)
            except Exception:
                log.exception("storing the assistant's spoken answer failed")
        await broadcast_caption(self.room.pk, protocol.ASSISTANT_KEY, protocol.ASSISTANT_NAME,
                                item, None, text, final=True)

    async def _upstream_error(self, error: dict) -> None:
        code = error.get("code")
        if code in AUTH_CODES:
            raise SessionFailed(UPSTREAM_AUTH_FAILED, "OpenAI refused the server's API key.")
        if code in QUOTA_CODES or error.get("type") == "insufficient_quota":
            raise SessionFailed(UPSTREAM_QUOTA, "OpenAI's quota is exhausted.")
        if code == "response_cancel_not_active":
            return  # the API had already cancelled it (speech over the answer)
        if code == "session_expired":
            await self._rotate(force=True)
            return
        log.warning("OpenAI error in the assistant of room %s: %s", self.room.pk, error)
        answer = self.answer
        if answer is not None and answer.response_id is None:
            # Refused before a response started (rate limit, bad request): no response.done
            # will follow, so the answer ends here.
            message = error.get("message") or "OpenAI refused the request."
            await self._finish(error=(protocol.ANSWER_FAILED, message))

    async def _lost(self, connection: Connection) -> None:
        if connection is not self.connection:
            return
        self.connection = None
        await self._close(connection)
        if self.answer is not None:
            await self._finish(error=(UPSTREAM_LOST, "The connection to OpenAI dropped "
                                      "during the answer; ask again."))
        await self._broadcast(protocol.error_event(
            UPSTREAM_LOST, "Lost the connection to OpenAI; reconnecting."))
        for delay in RECONNECT_DELAYS:
            await asyncio.sleep(delay)  # backoff between attempts, not synchronisation
            try:
                self.connection = await self._connect()
                return
            except SessionFailed as failure:
                if failure.code != UPSTREAM_UNAVAILABLE:
                    raise
        raise SessionFailed(UPSTREAM_UNAVAILABLE, "OpenAI cannot be reached; the assistant "
                            "left.")

    async def _rotate(self, *, force: bool = False) -> None:
        """A fresh upstream session before the 60-minute limit (between answers), carrying
        the recent conversation; `force` after an expiry, failing an answer in flight."""
        old = self.connection
        if self.answer is not None:
            if not force:
                return
            await self._finish(error=(UPSTREAM_LOST, "The OpenAI session ended during the "
                                      "answer; ask again."))
        self.connection = await self._connect()
        if old is not None:
            await self._close(old)

    # Ticks: presence, lease, an empty room, the inviter's access, rotation, timeouts

    async def _tick_forever(self) -> None:
        while True:
            await asyncio.sleep(settings.ASSISTANT["TICK_SECONDS"])  # a period, not a wait
            self.inbox.put_nowait(("tick",))

    async def _tick(self) -> None:
        presence = presence_store()
        await self._call_presence(presence.refresh(self.room.pk, self.presence_name, self.me))
        try:
            if not await leases().renew(self.room.pk, self.lease_value):
                log.warning("assistant of room %s lost its lease", self.room.pk)
                self.stop(protocol.STOPPED)
                return
        except Exception:
            log.warning("assistant lease renewal failed", exc_info=True)
        members = await self._call_presence(presence.members(self.room.pk))
        if members is not None:
            people = [m for m in members if m.kind != protocol.PRESENCE_KIND]
            now = time.monotonic()
            if people:
                self.empty_since = None
            elif self.empty_since is None:
                self.empty_since = now
            elif now - self.empty_since >= settings.ASSISTANT["EMPTY_GRACE_SECONDS"]:
                self.stop(protocol.ROOM_EMPTY)
                return
        if not await database_sync_to_async(admits)(self.room.pk, self.inviter.key):
            self.stop(protocol.ACCESS_LOST)
            return
        answer = self.answer
        if answer is not None:
            await self._send_delta(answer)
            if time.monotonic() - answer.started > settings.ASSISTANT["ANSWER_TIMEOUT_SECONDS"]:
                if answer.response_id is not None:
                    await self._send(lambda sdk: sdk.response.cancel())
                await self._finish(error=(protocol.ANSWER_FAILED, "The answer took too long."))
        connection = self.connection
        if connection is not None and self.answer is None and \
                time.monotonic() - connection.opened >= settings.ASSISTANT["ROTATE_SECONDS"]:
            await self._rotate()
