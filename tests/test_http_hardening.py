"""HTTP endpoints under hostile input: room creation is rate-limited and cheap, the lobby is
paginated, transcription keys are limited per address, bad bodies and SDP get 4xx in the API's
shape, calls are limited per member and release what they started, and reported caption
times cannot run ahead of the reporter's stream."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime, timedelta

import pytest
from channels.db import database_sync_to_async
from django.core.cache import cache
from django.db import connection
from django.test import AsyncClient, Client, RequestFactory
from django.test.utils import CaptureQueriesContext

from rooms import services
from rooms.models import Room
from rooms.presence import presence_store
from rooms.ratelimit import WindowLimit, client_address
from tests.support.sockets import close_db_connections
from transcription import calls, keys, reports
from transcription.captions import SpeakerCaptions
from transcription.models import CaptionSegment


@pytest.fixture(autouse=True)
def fresh_rate_counts():
    """Rate-limit counts live in the (per-process) cache: each test starts with none."""
    cache.clear()
    yield
    cache.clear()


def limits(settings, **values):
    settings.PARLEY = {**settings.PARLEY, **values}


# --- the shared window limit ------------------------------------------------------------------

def test_window_limit_counts_per_key_and_resets_with_the_window():
    clock = [1000.0]
    limit = WindowLimit("test", 2, 60)
    assert limit.hit("a", lambda: clock[0]) is None
    assert limit.hit("a", lambda: clock[0]) is None
    assert limit.hit("a", lambda: clock[0]) == 20.0  # until 1020, the next multiple of 60
    assert limit.hit("b", lambda: clock[0]) is None
    clock[0] = 1020.0
    assert limit.hit("a", lambda: clock[0]) is None


@pytest.mark.parametrize(("remote", "counted"), [
    ("203.0.113.7", "203.0.113.7"),
    ("2001:db8:1:2:aaaa::1", "2001:db8:1:2::/64"),  # one host picks any of its /64
    ("::ffff:203.0.113.7", "203.0.113.7"),
    ("", "unknown"),
])
def test_client_address_is_remote_addr_and_ipv6_counts_by_prefix(remote, counted):
    request = RequestFactory().get("/", REMOTE_ADDR=remote,
                                   HTTP_X_FORWARDED_FOR="198.51.100.1")
    assert client_address(request) == counted


# --- room creation ----------------------------------------------------------------------------

@pytest.mark.django_db
def test_room_creation_is_limited_per_session(settings):
    limits(settings, ROOM_CREATE_PER_HOUR=2, ROOM_CREATE_PER_HOUR_PER_ADDRESS=100)
    browser = Client()
    browser.get("/")
    browser.session.save()  # a session of its own, as a browser that joined a room has
    for n in range(2):
        assert browser.post("/rooms/", {"name": f"Room {n}"}).status_code == 302
    refused = browser.post("/rooms/", {"name": "One more"})
    assert refused.status_code == 429
    assert b"You have created too many rooms for now" in refused.content
    assert b'id="create-room"' in refused.content  # the lobby, with its form
    assert 0 < int(refused["Retry-After"]) <= 3600
    assert not Room.objects.filter(name="One more").exists()
    assert Client().post("/rooms/", {"name": "Someone else"}).status_code == 302


@pytest.mark.django_db
def test_room_creation_is_limited_per_address(settings):
    """Fresh sessions (or none) do not dodge the limit; another address is not affected."""
    limits(settings, ROOM_CREATE_PER_HOUR=100, ROOM_CREATE_PER_HOUR_PER_ADDRESS=3)
    assert Client().post("/rooms/", {"name": ""}).status_code == 400  # not counted
    for n in range(3):
        assert Client().post("/rooms/", {"name": f"Room {n}"}).status_code == 302
    assert Client().post("/rooms/", {"name": "Room 3"}).status_code == 429
    elsewhere = Client(REMOTE_ADDR="198.51.100.20")
    assert elsewhere.post("/rooms/", {"name": "Room 3"}).status_code == 302


@pytest.mark.django_db
def test_slug_choice_costs_the_same_queries_however_many_copies_exist():
    def queries_to_create() -> tuple[str, int]:
        with CaptureQueriesContext(connection) as captured:
            room = services.create_room("Book Club", private=False)
        return room.slug, len(captured)

    first = queries_to_create()
    second = queries_to_create()
    for _ in range(20):
        services.create_room("Book Club", private=False)
    later = queries_to_create()
    assert (first[0], second[0], later[0]) == ("book-club", "book-club-2", "book-club-23")
    assert second[1] == later[1] == first[1]
    services.create_room("Book Club 99", private=False)  # a name that looks like a copy
    assert services.create_room("Book Club", private=False).slug == "book-club-100"


@pytest.mark.django_db
def test_a_slug_taken_by_a_racing_create_is_retried(monkeypatch):
    services.create_room("Lounge", private=False)
    real = services._next_slug
    answers = iter(["lounge"])  # what a create that lost the race had read

    monkeypatch.setattr(services, "_next_slug", lambda base: next(answers, None) or real(base))
    assert services.create_room("Lounge", private=False).slug == "lounge-2"


@pytest.mark.django_db
def test_the_lobby_is_paginated_and_asks_presence_for_the_page_only(client, monkeypatch):
    for n in range(53):
        services.create_room(f"Room {n:02d}", private=False)
    store = presence_store()
    asked: list[list[int]] = []
    real = store.members_of

    async def members_of(room_ids):
        asked.append(list(room_ids))
        return await real(room_ids)

    monkeypatch.setattr(store, "members_of", members_of)
    first = client.get("/").content.decode()
    assert "Room 00" in first and "Room 49" in first and "Room 50" not in first
    assert 'href="?page=2"' in first and "Page 1 of 2" in first and 'rel="prev"' not in first
    assert [len(ids) for ids in asked] == [50]
    second = client.get("/", {"page": 2}).content.decode()
    assert "Room 50" in second and "Room 52" in second and "Room 49" not in second
    assert 'href="?page=1"' in second and 'rel="next"' not in second
    assert client.get("/", {"page": "junk"}).status_code == 200


# --- POST /api/transcription-session ----------------------------------------------------------

def member(room, **client_kwargs) -> Client:
    client = Client(**client_kwargs)
    client.post(f"/rooms/{room.slug}/join/", {"name": "Ann"})
    return client


@pytest.mark.django_db
@pytest.mark.parametrize(("body", "code"), [
    ("[]", "invalid_request"), ('"x"', "invalid_request"), ("null", "invalid_request"),
    ("5", "invalid_request"), ("1e999", "invalid_request"), ("[" * 4000, "invalid_json"),
    ("[" * 100_000, "request_too_large"),
])
def test_session_bodies_that_are_not_an_object_get_4xx(body, code):
    """Never a 500: JSON that is not an object, nested past the parser's recursion, or not
    JSON at all; and a body past the bound is refused before it is parsed."""
    room = services.create_room("Talk", private=False)
    reply = member(room).post("/api/transcription-session", body,
                              content_type="application/json")
    status = 413 if code == "request_too_large" else 400
    assert reply.status_code == status and reply.json()["error"]["code"] == code


@pytest.mark.django_db
@pytest.mark.parametrize("content_type", ["application/json",
                                          "application/x-www-form-urlencoded"])
def test_session_bodies_are_bounded(content_type):
    room = services.create_room("Talk", private=False)
    padding = "x" * 5000
    body = json.dumps({"room": room.slug, "pad": padding}) \
        if content_type == "application/json" else f"room={room.slug}&pad={padding}"
    reply = member(room).post("/api/transcription-session", body, content_type=content_type)
    assert reply.status_code == 413 and reply.json()["error"]["code"] == "request_too_large"


@pytest.mark.django_db
def test_keys_are_limited_per_address_whatever_the_session(settings):
    """Fresh guest sessions each get the session's 10 a minute; the address gets no more."""
    limits(settings, KEY_MINT_PER_MINUTE_PER_ADDRESS=3)
    room = services.create_room("Talk", private=False)
    for _ in range(3):
        assert member(room).post("/api/transcription-session",
                                 {"room": room.slug}).status_code == 200
    refused = member(room).post("/api/transcription-session", {"room": room.slug})
    assert refused.status_code == 429 and refused.json()["error"]["code"] == "rate_limited"
    elsewhere = member(room, REMOTE_ADDR="198.51.100.30")
    assert elsewhere.post("/api/transcription-session", {"room": room.slug}).status_code == 200


# --- POST /v1/realtime/calls ------------------------------------------------------------------

class FakeStream:
    """An engine stream that records what was started and closed (no decoder, no upstream)."""

    engine = CaptionSegment.Engine.OFFLINE
    model = "fake"
    opened: list[FakeStream] = []
    starting: asyncio.Event  # set when a stream's start() is called
    hold: asyncio.Event | None = None  # when set by a test, start() waits for it

    def __init__(self, on_event):
        self.on_event = on_event
        self.started = self.closed = False
        FakeStream.opened.append(self)

    async def start(self) -> None:
        FakeStream.starting.set()
        if FakeStream.hold is not None:
            await FakeStream.hold.wait()
        self.started = True
        self.on_event({"type": "session.created", "session": {}})

    async def feed(self, pcm24k: bytes) -> None: ...

    async def commit(self) -> None: ...

    async def clear(self) -> None: ...

    async def update(self, session: dict) -> None: ...

    async def close(self) -> None:
        self.closed = True


@pytest.fixture
async def fake_engine(monkeypatch):
    from transcription import engines

    FakeStream.opened, FakeStream.starting, FakeStream.hold = [], asyncio.Event(), None
    monkeypatch.setattr(engines, "open_stream",
                        lambda on_event, name=None, room_id=None: FakeStream(on_event))
    yield FakeStream
    for call in list(calls.CALLS.values()):
        await call.end()
    await asyncio.gather(*calls._ENDING, return_exceptions=True)
    await close_db_connections()


@database_sync_to_async
def key_for(speaker: str) -> str:
    room = Room.objects.filter(slug="calls").first() or services.create_room(
        "Calls", private=False)
    return keys.mint_key(keys.KeyGrant(room.pk, f"g:{speaker}", speaker))[0]


async def post_offer(sdp: str, key: str):
    return await AsyncClient().post("/v1/realtime/calls", data=sdp,
                                    content_type="application/sdp",
                                    headers={"Authorization": f"Bearer {key}"})


async def browser_offer() -> tuple[object, str]:
    """An offer as a browser makes it (microphone and `oai-events`), never answered."""
    from aiortc.mediastreams import AudioStreamTrack

    from signaling.sfu.room import peer_connection

    pc = peer_connection()
    pc.addTrack(AudioStreamTrack())
    pc.createDataChannel("oai-events")
    await pc.setLocalDescription(await pc.createOffer())
    return pc, pc.localDescription.sdp


# Offers aiortc's parser fails on with an AssertionError (its ValueErrors were handled before).
UNPARSABLE_OFFERS = [
    "v=0\r\nm=audio 9\r\n",
    "v=0\r\nm=audio\r\n",
    "v=0\r\nm=audio 9 UDP/TLS/RTP/SAVPF 111\r\na=candidate:1\r\n",
]


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("sdp", UNPARSABLE_OFFERS)
async def test_sdp_aiortc_cannot_take_gets_400_in_the_apis_shape(fake_engine, sdp):
    reply = await post_offer(sdp, await key_for("ann"))
    assert reply.status_code == 400
    error = reply.json()["error"]
    assert (error["code"], error["param"], error["type"]) == (
        "invalid_value", "sdp", "invalid_request_error")
    assert calls.CALLS == {}
    assert all(not stream.started or stream.closed for stream in fake_engine.opened)


@pytest.mark.django_db(transaction=True)
async def test_calls_are_limited_per_member(fake_engine, settings):
    ann, bob = await key_for("ann"), await key_for("bob")
    peers = []
    try:
        replies = []
        for key in (ann, ann, ann, bob):
            pc, sdp = await browser_offer()
            peers.append(pc)
            replies.append(await post_offer(sdp, key))
        assert [reply.status_code for reply in replies] == [201, 201, 429, 201]
        error = replies[2].json()["error"]
        assert (error["code"], error["type"]) == ("rate_limited", "rate_limit_error")
        first = calls.CALLS[replies[0]["Location"].rsplit("/", 1)[1]]
        await first.end()
        pc, sdp = await browser_offer()
        peers.append(pc)
        assert (await post_offer(sdp, ann)).status_code == 201
        limits(settings, MAX_CALLS_PER_MEMBER=3)
        pc, sdp = await browser_offer()
        peers.append(pc)
        assert (await post_offer(sdp, ann)).status_code == 201
    finally:
        for pc in peers:
            await pc.close()


@pytest.mark.django_db(transaction=True)
async def test_a_call_that_never_connects_releases_everything(fake_engine, monkeypatch):
    """(A guard, not a regression: this already held.) The engine stream, peer connection,
    tasks and registry entry of a call whose media never arrives are all released."""
    monkeypatch.setattr(calls, "CONNECT_TIMEOUT", 0.05)
    pc, sdp = await browser_offer()
    try:
        reply = await post_offer(sdp, await key_for("ann"))
        assert reply.status_code == 201
        call = calls.CALLS[reply["Location"].rsplit("/", 1)[1]]
        tasks = set(call.tasks)
        await asyncio.wait_for(call.ended.wait(), 10)
        # end() returns once everything is stopped; wait for it via the _expire task.
        await asyncio.wait_for(asyncio.gather(*tasks, return_exceptions=True), 10)
    finally:
        await pc.close()
    assert call.id not in calls.CALLS
    assert call.pc.connectionState == "closed"
    assert all(task.done() for task in call.tasks | tasks)
    assert call.pipeline.relay.done()
    [stream] = fake_engine.opened
    assert stream.started and stream.closed


@pytest.mark.django_db(transaction=True)
async def test_an_abandoned_request_ends_its_call(fake_engine):
    """A client that goes away while its call is being set up leaves nothing running."""
    pc, sdp = await browser_offer()
    key = await key_for("ann")
    fake_engine.hold = asyncio.Event()  # the engine takes its time to start
    try:
        request = asyncio.create_task(post_offer(sdp, key))
        await asyncio.wait_for(fake_engine.starting.wait(), 10)
        [call] = calls.CALLS.values()
        request.cancel()
        with pytest.raises(asyncio.CancelledError):
            await request
        await asyncio.wait_for(asyncio.gather(*calls._ENDING), 10)
    finally:
        await pc.close()
    assert call.ended.is_set() and calls.CALLS == {}
    assert call.pc.connectionState == "closed" and call.pipeline.relay.done()
    [stream] = fake_engine.opened
    assert not stream.started  # its start was abandoned with the request


# --- client-reported caption times ------------------------------------------------------------

SPEECH_STARTED = {"type": "input_audio_buffer.speech_started", "item_id": "i1"}


def test_reported_times_are_bounded_by_the_reporters_stream():
    opened = datetime(2026, 11, 23, 9, 0, tzinfo=UTC)
    latest = reports.max_audio_ms(opened, opened + timedelta(seconds=10))
    assert latest == 10_000 + reports.AUDIO_AHEAD_SLACK_MS
    ahead = reports.parse_report({**SPEECH_STARTED, "audio_start_ms": 24 * 3600 * 1000 - 1},
                                 "p1", latest_audio_ms=latest)
    assert ahead["audio_start_ms"] == latest
    honest = reports.parse_report({**SPEECH_STARTED, "audio_start_ms": 9_500}, "p1",
                                  latest_audio_ms=latest)
    assert honest["audio_start_ms"] == 9_500
    assert reports.max_audio_ms(opened, opened - timedelta(seconds=3)) == \
        reports.AUDIO_AHEAD_SLACK_MS  # a clock step back never lowers it below the slack
    # Without a bound (the caller does not know its stream) the old rule holds.
    assert reports.parse_report({**SPEECH_STARTED, "audio_start_ms": 3_600_000}, "p1")[
        "audio_start_ms"] == 3_600_000


@pytest.mark.django_db(transaction=True)
async def test_a_bounded_report_cannot_date_its_caption_in_the_future(monkeypatch):
    """What the report socket stores when it bounds times by its SpeakerCaptions' origin:
    a turn claimed a day ahead is stored no later than now plus the slack."""
    from transcription import captions as captions_module

    async def no_broadcast(*args, **kwargs):
        return None

    monkeypatch.setattr(captions_module, "broadcast_room", no_broadcast)
    room = await database_sync_to_async(services.create_room)("Direct", private=False)
    speaker = SpeakerCaptions(room.pk, "g:mal", "Mal", CaptionSegment.Engine.CLIENT)
    day = 24 * 3600 * 1000 - 1
    for frame in [
        {**SPEECH_STARTED, "audio_start_ms": day},
        {"type": "input_audio_buffer.speech_stopped", "item_id": "i1", "audio_end_ms": day},
        {"type": "conversation.item.input_audio_transcription.completed", "item_id": "i1",
         "transcript": "first forever"},
    ]:
        event = reports.parse_report(frame, "pmal",
                                     latest_audio_ms=reports.max_audio_ms(speaker.opened_at))
        await speaker.handle(event)
    segment = await database_sync_to_async(CaptionSegment.objects.get)(room=room)
    slack = timedelta(milliseconds=reports.AUDIO_AHEAD_SLACK_MS)
    assert segment.started_at <= datetime.now(UTC) + slack
    assert segment.ended_at <= datetime.now(UTC) + slack
    await close_db_connections()
