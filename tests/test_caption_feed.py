"""The live caption feed (GET /rooms/<slug>/captions/stream, Server-Sent Events) and its
overlay page: access, events, exact bounded resume, keepalives, cleanup, limits; then through
real daphne processes (a restart, two processes over Redis) and in Chromium."""

from __future__ import annotations

import asyncio
import contextlib
import json
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import httpx
import pytest
import websockets
from asgiref.testing import ApplicationCommunicator
from channels.db import database_sync_to_async
from channels.layers import get_channel_layer
from django.contrib.auth import get_user_model

from project.asgi import application
from rooms import services
from rooms.client import create_public_room, guest_session
from rooms.fanout import room_fanout
from rooms.models import Membership
from tests.support.sockets import close_db_connections, guest_session_key, user_session_key
from transcription import feed
from transcription.captions import SpeakerCaptions
from transcription.models import CaptionSegment

WAIT = 10  # seconds any one awaited condition may take before the test fails


@dataclass
class Event:
    event: str | None = None
    data: dict | None = None
    id: str | None = None
    comments: list[str] = field(default_factory=list)


class EventReader:
    """Parses an SSE byte stream into events (WHATWG rules: fields, comments, blank-line
    dispatch); `next()` returns the next event, keepalive comments attached to it."""

    def __init__(self, chunks):
        self.chunks = chunks
        self.buffer = ""
        self.retry: int | None = None
        self.lines = self._lines()

    async def _lines(self):
        while True:
            while "\n" not in self.buffer:
                chunk = await anext(self.chunks)
                self.buffer += chunk.decode() if isinstance(chunk, bytes) else chunk
            line, self.buffer = self.buffer.split("\n", 1)
            yield line.removesuffix("\r")

    async def next(self, timeout: float = WAIT) -> Event:
        async with asyncio.timeout(timeout):
            event, data = Event(), []
            async for line in self.lines:
                if line == "":
                    if data:
                        event.data = json.loads("\n".join(data))
                        return event
                    continue
                name, _, value = line.partition(":")
                value = value.removeprefix(" ")
                if name == "":
                    event.comments.append(value)
                elif name == "event":
                    event.event = value
                elif name == "data":
                    data.append(value)
                elif name == "id":
                    event.id = value
                elif name == "retry":
                    self.retry = int(value)
            raise EOFError("the stream ended")

    async def comment(self, timeout: float = WAIT) -> str:
        """The next comment line (a keepalive), skipping everything else."""
        async with asyncio.timeout(timeout):
            async for line in self.lines:
                if line.startswith(":"):
                    return line[1:].strip()
            raise EOFError("the stream ended")

    async def until(self, kind: str, timeout: float = WAIT) -> Event:
        """The next event named `kind`, skipping others."""
        async with asyncio.timeout(timeout):
            while (event := await self.next()).event != kind:
                pass
            return event


# In-process: Django's ASGI handler driven as daphne drives it, the in-memory channel layer.

T0 = datetime(2026, 12, 1, 9, 0, tzinfo=UTC)


@pytest.fixture
async def cleanup():
    yield
    await close_db_connections()


def stored(room, n: int, text: str) -> CaptionSegment:
    return CaptionSegment.objects.create(
        room=room, speaker_key="g:ann", speaker_name="Ann", item_id=f"item_{n}", text=text,
        started_at=T0 + timedelta(seconds=n), ended_at=T0 + timedelta(seconds=n + 1),
        engine=CaptionSegment.Engine.CLIENT)


@dataclass
class Feed:
    """A request to the feed through the ASGI application, as daphne makes it: `hang_up()`
    sends the client's `http.disconnect` and waits for the application to finish."""

    app: ApplicationCommunicator
    status_code: int
    headers: dict[str, str]
    reader: EventReader

    def __getitem__(self, name: str) -> str:
        return self.headers[name.lower()]

    async def hang_up(self) -> None:
        await self.app.send_input({"type": "http.disconnect"})
        await self.app.wait(WAIT)


async def open_feed(slug: str, session_key: str | None, *, after: str | None = None,
                    query: str = "") -> Feed:
    headers = [(b"host", b"localhost")]
    if session_key:
        headers.append((b"cookie", f"sessionid={session_key}".encode()))
    if after is not None:
        headers.append((b"last-event-id", after.encode()))
    app = ApplicationCommunicator(application, {
        "type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "GET",
        "scheme": "http", "path": f"/rooms/{slug}/captions/stream",
        "query_string": query.removeprefix("?").encode(), "headers": headers,
        "client": ("127.0.0.1", 50000), "server": ("localhost", 80)})
    await app.send_input({"type": "http.request", "body": b""})
    start = await app.receive_output(WAIT)

    async def chunks():
        while True:
            message = await app.receive_output(WAIT)
            yield message.get("body", b"")
            if not message.get("more_body"):
                return

    return Feed(app, start["status"],
                {name.decode().lower(): value.decode() for name, value in start["headers"]},
                EventReader(chunks()))


async def say(room, name: str, item: str, words: list[str]) -> None:
    """One turn of `name`, as an engine reports it: opened, partial words, the final text.
    Its clock moves 10 s a reading, so no partial is held back (PARTIAL_INTERVAL)."""
    speaker = SpeakerCaptions(room.pk, f"g:{name}", name, "client",
                              clock=iter(range(0, 10**6, 10)).__next__)
    await speaker.handle({"type": "input_audio_buffer.speech_started", "item_id": item,
                          "audio_start_ms": 0})
    for word in words:
        await speaker.handle({"type": "conversation.item.input_audio_transcription.delta",
                              "item_id": item, "delta": word})
    await speaker.handle({"type": "conversation.item.input_audio_transcription.completed",
                          "item_id": item, "transcript": "".join(words)})


# In-process tests use pytest-django's database; the live ones the live database.
in_process = pytest.mark.django_db(transaction=True)


@in_process
async def test_only_members_get_the_stream(cleanup):
    """Visitors who have not joined and non-members of a private room are refused, as for
    the transcript downloads; a member gets an event stream that proxies must not buffer."""
    public = await database_sync_to_async(services.create_room)("Open", private=False)
    private = await database_sync_to_async(services.create_room)("Closed", private=True)
    outsider = await database_sync_to_async(get_user_model().objects.create_user)("eve")

    assert (await open_feed(public.slug, None)).status_code == 403  # not the join form
    login = await open_feed(private.slug, None)  # the page asking a guest to log in
    assert login.status_code == 403
    assert (await open_feed(private.slug, await user_session_key(outsider))).status_code == 403
    assert (await open_feed("no-such-room", None)).status_code == 404

    response = await open_feed(public.slug, await guest_session_key(public, "Ann"))
    assert response.status_code == 200
    assert response["Content-Type"].startswith("text/event-stream")
    assert response["Cache-Control"] == "no-cache" and response["X-Accel-Buffering"] == "no"
    reader = response.reader
    ready = await reader.next()
    assert reader.retry == feed.RETRY_MS
    assert (ready.event, ready.data, ready.id) == ("ready", {"after": 0, "missed": 0}, "0")
    await response.hang_up()


@in_process
async def test_a_live_turn_arrives_as_partials_then_a_final_with_its_id(cleanup):
    """Partials carry the turn's text so far; the final carries the stored segment (its id
    as the event id, speaker, item, times); other room traffic stays out."""
    room = await database_sync_to_async(services.create_room)("Live", private=False)
    response = await open_feed(room.slug, await guest_session_key(room, "Viewer"))
    reader = response.reader
    assert (await reader.next()).event == "ready"

    await room_fanout().publish(room.pk, [{"type": "chat.message", "text": "not a caption"}])
    await say(room, "Ann", "turn_1", ["good ", "morning"])
    events = [await reader.next() for _ in range(4)]
    assert [(e.event, e.data["text"]) for e in events] == [
        ("partial", ""), ("partial", "good "), ("partial", "good morning"),
        ("final", "good morning")]
    assert events[2].data["delta"] == "morning"
    segment = await database_sync_to_async(CaptionSegment.objects.get)(room=room)
    final = events[3]
    assert final.id == str(segment.pk) and final.data["id"] == segment.pk
    assert final.data["item_id"] == "turn_1" and final.data["speaker"]["name"] == "Ann"
    assert final.data["started_at"].endswith("Z") and final.data["ended_at"].endswith("Z")
    assert all(e.id is None for e in events[:3])  # only finals move the resume point
    await response.hang_up()


@in_process
async def test_resume_is_exact_and_bounded(settings, cleanup):
    """Last-Event-ID (or ?after=) gets exactly the finals stored after it; more than
    RESUME_LIMIT missed, or an id the room never had, is said with a `reset`."""
    settings.PARLEY = {**settings.PARLEY, "RESUME_LIMIT": 3}
    room = await database_sync_to_async(services.create_room)("Resume", private=False)
    session = await guest_session_key(room, "Viewer")
    segments = [await database_sync_to_async(stored)(room, n, f"line {n}") for n in range(6)]
    ids = [s.pk for s in segments]

    async def resume(**kwargs) -> list[Event]:
        response = await open_feed(room.slug, session, **kwargs)
        reader = response.reader
        events = []
        while not events or events[-1].event != "ready":
            events.append(await reader.next())
        await response.hang_up()
        return events

    exact = await resume(after=str(ids[3]))
    assert [(e.event, e.id) for e in exact] == [
        ("final", str(ids[4])), ("final", str(ids[5])), ("ready", str(ids[5]))]
    assert [e.data["text"] for e in exact[:2]] == ["line 4", "line 5"]
    assert exact[-1].data == {"after": ids[5], "missed": 2}
    assert [e.id for e in await resume(query=f"?after={ids[2]}")][:3] == [
        str(i) for i in ids[3:6]]

    too_many = await resume(after=str(ids[0]))
    assert too_many[0].event == "reset"
    assert too_many[0].data == {"reason": "too_many_missed", "limit": 3, "left_out": 2}
    assert [e.id for e in too_many[1:4]] == [str(i) for i in ids[3:6]]

    for unknown in ("abc", str(ids[5] + 100), "-1"):
        events = await resume(after=unknown)
        assert [e.event for e in events] == ["reset", "ready"], unknown
        assert events[0].data["reason"] == "unknown_id"
        assert events[1].id == str(ids[5])
    assert [e.event for e in await resume(after=str(ids[5]))] == ["ready"]


@in_process
async def test_a_final_is_sent_once_whether_from_the_backlog_or_live(monkeypatch, cleanup):
    """A turn stored after the feed joined the room's group but before it read its backlog
    comes both ways (broadcast and backlog); it is sent once, and nothing is missed."""
    room = await database_sync_to_async(services.create_room)("Once", private=False)
    session = await guest_session_key(room, "Viewer")
    first = await database_sync_to_async(stored)(room, 0, "before")
    read_backlog = feed._read_backlog

    async def speak_then_read(room_id, after, limit):
        await say(room, "Ann", "turn_between", ["between"])  # subscribed, not yet read
        return await read_backlog(room_id, after, limit)

    monkeypatch.setattr(feed, "_read_backlog", speak_then_read)
    response = await open_feed(room.slug, session, after=str(first.pk))
    reader = response.reader
    backlog = await reader.next()
    assert (backlog.event, backlog.data["text"]) == ("final", "between")
    assert (await reader.next()).event == "ready"
    await say(room, "Ann", "turn_next", ["next"])
    assert (await reader.until("final")).data["text"] == "next"  # "between" was not resent
    await response.hang_up()


@in_process
async def test_keepalives_and_nothing_outlives_the_client(settings, cleanup):
    """Quiet feeds send comment lines; once the client goes, the feed has left the room's
    group and no longer counts."""
    settings.PARLEY = {**settings.PARLEY, "CAPTION_FEED_KEEPALIVE_SECONDS": 0.05}
    room = await database_sync_to_async(services.create_room)("Quiet", private=False)
    response = await open_feed(room.slug, await guest_session_key(room, "Viewer"))
    reader = response.reader
    assert (await reader.next()).event == "ready"
    layer = get_channel_layer()
    assert len(room_fanout().local_receivers(room.pk)) == 1
    assert feed.open_feeds() == 1
    assert await reader.comment() == "keepalive"
    await response.hang_up()
    assert feed.open_feeds() == 0
    assert room_fanout().local_receivers(room.pk) == []
    assert not layer.groups.get(f"rooms.access.{room.pk}")


@in_process
async def test_feeds_per_member_are_bounded(settings, cleanup):
    """Past CAPTION_FEEDS_PER_MEMBER a member gets 429; a closed feed frees its place."""
    settings.PARLEY = {**settings.PARLEY, "CAPTION_FEEDS_PER_MEMBER": 2}
    room = await database_sync_to_async(services.create_room)("Busy", private=False)
    session = await guest_session_key(room, "Viewer")
    feeds = [await open_feed(room.slug, session) for _ in range(2)]
    for each in feeds:
        assert (await each.reader.next()).event == "ready"
    refused = await open_feed(room.slug, session)
    assert refused.status_code == 429 and refused["Retry-After"]
    other = await open_feed(room.slug, await guest_session_key(room, "Other"))
    assert other.status_code == 200
    await feeds[0].hang_up()
    again = await open_feed(room.slug, session)
    assert (await again.reader.next()).event == "ready"
    for each in (feeds[1], other, again):
        await each.hang_up()
    assert feed.open_feeds() == 0


@in_process
async def test_a_member_who_loses_access_is_told_and_the_feed_ends(cleanup):
    room = await database_sync_to_async(services.create_room)("Team", private=True)
    user = await database_sync_to_async(get_user_model().objects.create_user)("bob")
    await database_sync_to_async(Membership.objects.create)(room=room, user=user)
    response = await open_feed(room.slug, await user_session_key(user))
    reader = response.reader
    assert (await reader.next()).event == "ready"
    await database_sync_to_async(Membership.objects.filter(room=room, user=user).delete)()
    end = await reader.until("end")
    assert end.data["code"] == "access_revoked"
    assert [chunk async for chunk in reader.chunks] == [b""]  # the response ended
    await response.app.wait(WAIT)
    assert feed.open_feeds() == 0


@in_process
async def test_a_feed_whose_channel_layer_fails_says_so_and_ends(monkeypatch, cleanup):
    """Redis down at the start: `end` `try_again` (EventSource then reconnects by itself)."""
    room = await database_sync_to_async(services.create_room)("Down", private=False)

    async def unavailable(self):
        raise ConnectionError("redis is down")

    monkeypatch.setattr(feed.Subscription, "open", unavailable)
    response = await open_feed(room.slug, await guest_session_key(room, "Viewer"))
    end = await response.reader.next()
    assert (end.event, end.data["code"]) == ("end", "try_again")
    await response.app.wait(WAIT)
    assert feed.open_feeds() == 0


@in_process
def test_the_overlay_page_is_for_members_and_loads_only_its_own_files(client):
    room = services.create_room("Stage", private=False)
    assert b'id="join-form"' in client.get(f"/rooms/{room.slug}/captions/overlay").content
    client.post(f"/rooms/{room.slug}/join/", {"name": "Ann"})
    page = client.get(f"/rooms/{room.slug}/captions/overlay")
    assert page.status_code == 200
    html = page.content.decode()
    assert f'data-feed="/rooms/{room.slug}/captions/stream"' in html
    assert 'type="module" src="/static/parley/caption-overlay.js"' in html
    assert "<script>" not in html and "style=" not in html  # the CSP allows neither
    assert "default-src 'self'" in page["Content-Security-Policy"]


# Through real daphne processes: the feed as an HTTP client sees it (httpx), captions
# reported over ws/captions/<slug>/ as a browser-direct page reports them.


@contextlib.asynccontextmanager
async def stream(server, slug: str, session_id: str, *, last_id: str | None = None):
    """The feed of `slug` on `server`, read as an EventSource would (Last-Event-ID)."""
    headers = {"Accept": "text/event-stream", "Cookie": f"sessionid={session_id}"}
    if last_id is not None:
        headers["Last-Event-ID"] = last_id
    async with httpx.AsyncClient(base_url=server.base_url, timeout=httpx.Timeout(WAIT, read=None)
                                 ) as http, http.stream("GET", f"/rooms/{slug}/captions/stream",
                                                        headers=headers) as response:
        assert response.status_code == 200, response.status_code
        yield EventReader(response.aiter_bytes())


class Reporter:
    """A member's client-reported captions socket: each `say()` is one finished turn."""

    def __init__(self, socket):
        self.socket = socket

    async def say(self, item: str, words: list[str]) -> None:
        events = [{"type": "input_audio_buffer.speech_started", "item_id": item,
                   "audio_start_ms": 0}]
        events += [{"type": "conversation.item.input_audio_transcription.delta",
                    "item_id": item, "delta": word} for word in words]
        events.append({"type": "conversation.item.input_audio_transcription.completed",
                       "item_id": item, "transcript": "".join(words)})
        for event in events:
            await self.socket.send(json.dumps(event))
        async with asyncio.timeout(WAIT):  # stored: the final is in the database
            while json.loads(await self.socket.recv()).get("type") != "caption.stored":
                pass


@contextlib.asynccontextmanager
async def reporter(server, slug: str, session_id: str):
    async with websockets.connect(
            f"ws://127.0.0.1:{server.port}/ws/captions/{slug}/", origin=server.base_url,
            additional_headers={"Cookie": f"sessionid={session_id}"}, open_timeout=WAIT) as ws:
        assert json.loads(await ws.recv())["type"] == "hello"
        yield Reporter(ws)


async def finals(reader: EventReader, count: int) -> list[Event]:
    return [await reader.until("final") for _ in range(count)]


@pytest.mark.multiprocess
async def test_last_event_id_resumes_exactly_across_a_server_restart(daphne_factory):
    """The feed's server stops mid-stream; what is said meanwhile is stored by another
    process; the viewer reconnects to a new server with Last-Event-ID and gets exactly the
    finals it missed, then live ones, none twice."""
    first = daphne_factory()
    slug = await create_public_room(first.base_url, "Restart")
    viewer = await guest_session(first.base_url, slug, "Viewer")
    ann = await guest_session(first.base_url, slug, "Ann")
    async with stream(first, slug, viewer) as reader:
        await reader.until("ready")
        async with reporter(first, slug, ann) as ann_says:
            await ann_says.say("t1", ["one"])
        (seen,) = await finals(reader, 1)
        assert seen.data["text"] == "one" and seen.id == str(seen.data["id"])
        first.stop()  # with the stream open: daphne ends it
        with pytest.raises((EOFError, httpx.HTTPError)):
            await reader.until("final")
    assert first.process.returncode == 0, first.log()[-2000:]

    meanwhile = daphne_factory()
    async with reporter(meanwhile, slug, ann) as ann_says:
        await ann_says.say("t2", ["two"])
        await ann_says.say("t3", ["three"])
    meanwhile.stop()

    again = daphne_factory()
    async with stream(again, slug, viewer, last_id=seen.id) as reader:
        missed = await finals(reader, 2)
        assert [e.data["text"] for e in missed] == ["two", "three"]
        ready = await reader.next()
        assert ready.event == "ready" and ready.data["missed"] == 2 and ready.id == missed[1].id
        async with reporter(again, slug, ann) as ann_says:
            await ann_says.say("t4", ["four"])
        (live,) = await finals(reader, 1)
        assert live.data["text"] == "four"
    ids = [int(e.id) for e in (seen, *missed, live)]
    assert ids == sorted(ids) and len(set(ids)) == 4


@pytest.mark.multiprocess
@pytest.mark.parametrize("layer", ["pubsub", "core"])
async def test_a_caption_said_on_one_process_reaches_a_feed_on_another(daphne_factory,
                                                                        redis_server, layer):
    """Two daphne processes over a real redis-server: partials then the final, with its id."""
    env = {"REDIS_URL": redis_server.url, "REDIS_LAYER": layer}
    one, two = daphne_factory(**env), daphne_factory(**env)
    slug = await create_public_room(one.base_url, f"Across {layer}")
    viewer = await guest_session(two.base_url, slug, "Viewer")
    ann = await guest_session(one.base_url, slug, "Ann")
    async with stream(two, slug, viewer) as reader:
        await reader.until("ready")
        async with reporter(one, slug, ann) as ann_says:
            await ann_says.say("t1", ["across ", "processes"])
        partials = []
        while (event := await reader.next()).event == "partial":
            partials.append(event.data["text"])
        # The turn opens empty; partials are coalesced (PARTIAL_INTERVAL), so the words may
        # come in one partial or two, or only with the final.
        assert partials[0] == "" and all("across processes".startswith(p) for p in partials)
        assert event.event == "final" and event.data["text"] == "across processes"
        assert event.data["speaker"]["name"] == "Ann" and event.id == str(event.data["id"])


@pytest.mark.multiprocess
async def test_a_client_that_goes_away_frees_its_feed(daphne_factory):
    """Daphne's disconnect ends the feed: with one feed allowed per member, a second is
    refused while the first is open and admitted once its client has gone."""
    server = daphne_factory(PARLEY_CAPTION_FEEDS_PER_MEMBER="1")
    slug = await create_public_room(server.base_url, "Once at a time")
    viewer = await guest_session(server.base_url, slug, "Viewer")
    url = f"{server.base_url}/rooms/{slug}/captions/stream"
    cookies = {"Cookie": f"sessionid={viewer}"}
    async with stream(server, slug, viewer) as reader:
        await reader.until("ready")
        async with httpx.AsyncClient() as http:
            assert (await http.get(url, headers=cookies)).status_code == 429
    async with asyncio.timeout(WAIT), httpx.AsyncClient(timeout=httpx.Timeout(WAIT, read=None)
                                                        ) as http:
        while True:  # the server notices the hang-up a moment after the client made it
            async with http.stream("GET", url, headers=cookies) as response:
                if response.status_code == 200:
                    assert (await EventReader(response.aiter_bytes()).next()).event == "ready"
                    break
                assert response.status_code == 429


def join_over_http(base_url: str, room_path: str, name: str) -> str:
    """Join as guest `name` with a plain HTTP client; returns the session cookie."""
    with httpx.Client(base_url=base_url) as http:
        http.get(room_path)
        reply = http.post(f"{room_path}join/", data={
            "name": name, "csrfmiddlewaretoken": http.cookies["csrftoken"]},
            headers={"Referer": f"{base_url}{room_path}"})
        assert reply.status_code == 302, reply.status_code
        return http.cookies["sessionid"]


@pytest.mark.browser
def test_the_overlay_shows_the_last_lines_large_on_a_transparent_page(chromium_browser,
                                                                       daphne_factory):
    """In Chromium: the overlay follows the feed, a partial line updating in place and its
    final replacing it, keeping the last `lines`, on a transparent page."""
    from playwright.sync_api import expect
    from websockets.sync.client import connect

    from tests.support.chromium import create_room, join_as_guest, participant
    from tests.support.servers import scratch_dir

    server = daphne_factory()
    context = participant(chromium_browser, server.base_url)
    try:
        page = context.new_page()
        page.set_viewport_size({"width": 1280, "height": 720})
        room_path = create_room(page, "On stage")
        join_as_guest(page, room_path, "Viewer")
        page.goto(f"{room_path}captions/overlay?lines=2&size=40")
        overlay = page.locator("#caption-overlay")
        expect(overlay).to_have_attribute("data-state", "live")
        assert page.evaluate("getComputedStyle(document.body).backgroundColor") == \
            "rgba(0, 0, 0, 0)"
        assert page.evaluate("getComputedStyle(document.documentElement).backgroundColor") == \
            "rgba(0, 0, 0, 0)"
        assert page.evaluate("getComputedStyle(document.querySelector('#caption-overlay'))"
                             ".fontSize") == "40px"

        bob = join_over_http(server.base_url, room_path, "Bob")
        lines = page.locator(".overlay-line")
        with connect(f"ws://127.0.0.1:{server.port}/ws/captions/{room_path.split('/')[2]}/",
                     origin=server.base_url,
                     additional_headers={"Cookie": f"sessionid={bob}"}) as report:
            assert json.loads(report.recv(WAIT))["type"] == "hello"

            def send(kind: str, item: str, **fields) -> None:
                report.send(json.dumps({"type": kind, "item_id": item, **fields}))

            send("input_audio_buffer.speech_started", "t1", audio_start_ms=0)
            send("conversation.item.input_audio_transcription.delta", "t1",
                 delta="good morning")
            expect(lines).to_have_count(1)
            expect(lines.first).to_have_class("overlay-line partial")
            expect(lines.first).to_have_text("Bob: good morning")
            send("conversation.item.input_audio_transcription.completed", "t1",
                 transcript="Good morning, everyone.")
            expect(lines.first).to_have_class("overlay-line")
            expect(lines.first.locator(".text")).to_have_text("Good morning, everyone.")
            for n, text in enumerate(["Today we review the plan.", "Then the budget."], 2):
                send("conversation.item.input_audio_transcription.completed", f"t{n}",
                     transcript=text)
            expect(lines.locator(".text")).to_have_text(
                ["Today we review the plan.", "Then the budget."])
            expect(lines.locator(".speaker")).to_have_text(["Bob:", "Bob:"])
        shot = scratch_dir() / "caption-overlay.png"
        page.screenshot(path=str(shot), omit_background=True)
        print(f"overlay screenshot: {shot}")
    finally:
        context.close()
