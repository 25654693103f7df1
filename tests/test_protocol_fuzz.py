"""Protocol fuzzing of every socket through the full ASGI stack (issue #10).

Each case opens a socket, sends random or mutated frames of the socket's documented message
types, then a probe whose answer is known. Every answer before it must be a JSON event; a
close must carry a documented code, never 1011; a second client in the room must still be
served; and once the socket has ended, nothing it started may be left: no socket task, engine
stream, decoder slot, upstream connection, session slot or presence entry.

Deterministic (derandomized) so CI is repeatable; PARLEY_FUZZ_EXAMPLES raises the count.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
from typing import Any

import pytest
from asgiref.sync import sync_to_async
from channels.testing import WebsocketCommunicator
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from project.asgi import application
from rooms import services
from rooms.presence import presence_store
from rooms.sockets import socket_stats
from tests.support.sockets import (
    close_db_connections,
    guest_session_key,
    room_socket,
    stop_in_process_calls,
)
from transcription import engines, keys

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.fuzz]

EXAMPLES = int(os.environ.get("PARLEY_FUZZ_EXAMPLES", "60"))
# A /v1/realtime case opens an offline engine stream (a VAD session, and the model once per
# process): fewer cases.
REALTIME_EXAMPLES = max(1, EXAMPLES // 3)
FUZZ = settings(max_examples=EXAMPLES, deadline=None, derandomize=True, database=None,
                suppress_health_check=[HealthCheck.function_scoped_fixture,
                                       HealthCheck.too_slow])
# Every close code a socket may send (docs/protocol.md); 1011 is not among them.
DOCUMENTED_CLOSES = {1000, 4401, 4403, 4404, 4408, 4409, 4429, 4430, 4502, 4503}

SDP = "v=0\r\no=- 1 2 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\nm=audio 9 UDP/TLS/RTP/SAVPF 111\r\n"
CANDIDATE = {"candidate": "candidate:1 1 udp 1 127.0.0.1 9 typ host", "sdpMid": "0",
             "sdpMLineIndex": 0, "usernameFragment": "abcd"}
PCM = base64.b64encode(b"\x00\x01" * 2400).decode()
# The documented client messages of each socket, valid as they stand; cases mutate them.
TEMPLATES: dict[str, list[dict]] = {
    "rooms": [
        {"type": "chat.send", "client_id": "c-1", "text": "hello"},
        {"type": "chat.sync", "after": 0},
        {"type": "ping"},
    ],
    "signal": [
        {"type": "invite", "to": "p0123456789abcde", "mode": "video", "client_id": "c1"},
        {"type": "accept", "call": "0123456789abcdef"},
        {"type": "decline", "call": "0123456789abcdef"},
        {"type": "cancel", "call": "0123456789abcdef"},
        {"type": "hang-up", "call": "0123456789abcdef"},
        {"type": "offer", "call": "0123456789abcdef", "sdp": SDP},
        {"type": "answer", "call": "0123456789abcdef", "sdp": SDP},
        {"type": "ice-candidate", "call": "0123456789abcdef", "candidate": CANDIDATE},
    ],
    "sfu": [
        {"type": "join"},
        {"type": "publish", "sdp": SDP},
        {"type": "subscribe-answer", "sdp": SDP},
        {"type": "candidate", "target": "publish", "candidate": CANDIDATE},
        {"type": "mute", "audio": True, "video": False},
        {"type": "captions", "on": True},
        {"type": "leave"},
    ],
    "captions": [
        {"type": "input_audio_buffer.speech_started", "item_id": "i1", "audio_start_ms": 10},
        {"type": "input_audio_buffer.speech_stopped", "item_id": "i1", "audio_end_ms": 900},
        {"type": "input_audio_buffer.committed", "item_id": "i1", "previous_item_id": None},
        {"type": "conversation.item.input_audio_transcription.delta", "item_id": "i1",
         "delta": "hel"},
        {"type": "conversation.item.input_audio_transcription.completed", "item_id": "i1",
         "transcript": "hello"},
        {"type": "conversation.item.input_audio_transcription.failed", "item_id": "i1"},
    ],
    "realtime": [
        {"type": "session.update", "session": {
            "type": "transcription", "audio": {"input": {
                "format": {"type": "audio/pcm", "rate": 24000},
                "transcription": {"model": "gpt-4o-transcribe", "language": "en",
                                  "prompt": ""},
                "turn_detection": {"type": "server_vad", "threshold": 0.5,
                                   "prefix_padding_ms": 300, "silence_duration_ms": 500},
                "noise_reduction": {"type": "near_field"}}},
            "include": ["item.input_audio_transcription.logprobs"]}},
        {"type": "input_audio_buffer.append", "audio": PCM, "event_id": "e1"},
        {"type": "input_audio_buffer.commit"},
        {"type": "input_audio_buffer.clear"},
    ],
}
# A frame each socket answers in a known way once everything sent before it is handled.
PROBES = {
    "rooms": ({"type": "ping"}, lambda e: e.get("type") == "pong"),
    "realtime": ({"type": "probe.x"}, lambda e: e.get("type") == "error" and
                 e["error"]["code"] == "unknown_event_type"),
}
DEFAULT_PROBE = ({"type": "probe.x"}, lambda e: e.get("type") == "error" and
                 e.get("code") == "unknown_type")

json_values = st.recursive(
    st.none() | st.booleans() | st.integers(min_value=-2**70, max_value=2**70)
    | st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=30),
    lambda children: st.lists(children, max_size=4)
    | st.dictionaries(st.text(max_size=10), children, max_size=4),
    max_leaves=12)


def paths(value: Any, prefix: tuple = ()) -> list[tuple]:
    """Every path to a value inside nested dicts and lists."""
    found = [prefix] if prefix else []
    if isinstance(value, dict):
        for key, child in value.items():
            found += paths(child, (*prefix, key))
    elif isinstance(value, list):
        for index, child in enumerate(value):
            found += paths(child, (*prefix, index))
    return found


@st.composite
def mutated(draw, kind: str) -> dict:
    """A documented message of `kind`, with a few values replaced, dropped or added."""
    message = json.loads(json.dumps(draw(st.sampled_from(TEMPLATES[kind]))))
    for _ in range(draw(st.integers(0, 3))):
        places = paths(message)
        action = draw(st.sampled_from(["replace", "drop", "add"]))
        path = draw(st.sampled_from(places)) if places else ()
        parent = message
        for step in path[:-1]:
            parent = parent[step]
        if action == "replace" and path:
            parent[path[-1]] = draw(json_values)
        elif action == "drop" and path and isinstance(parent, dict):
            del parent[path[-1]]
        elif isinstance(parent, dict):
            parent[draw(st.text(max_size=10))] = draw(json_values)
    return message


def deep(depth: int) -> str:
    return '{"type":"ping","x":' + "[" * depth + "]" * depth + "}"


raw_frames = st.one_of(
    st.text(min_size=1, max_size=200),
    st.binary(min_size=1, max_size=64),
    st.integers(1, 5000).map(deep),
    st.sampled_from(['{"type":"x\\ud800"}', '{"\\udfff":1}', "[]", "null", '"x"', "{",
                     '{"type":' + "1" * 400 + "}", "\x00"]),
    json_values.map(json.dumps),
)


def frames_for(kind: str):
    """What a case sends: one to three frames, mutated messages or raw ones."""
    one = st.one_of(mutated(kind).map(json.dumps), raw_frames)
    return st.lists(one, min_size=1, max_size=3)


async def open_socket(kind: str, room) -> WebsocketCommunicator:
    if kind == "realtime":
        key = keys.mint_key(keys.KeyGrant(room.pk, "g:fuzz", "Fuzz"))[0]
        communicator = WebsocketCommunicator(application, "/v1/realtime", headers=[
            (b"host", b"localhost"), (b"authorization", f"Bearer {key}".encode())])
    else:
        communicator = room_socket(room.slug, await guest_session_key(room, "Fuzz"), kind=kind)
    ok, _ = await communicator.connect()
    assert ok
    await communicator.receive_json_from(timeout=10)  # hello / session.created
    return communicator


async def no_call_members(deadline: float = 5.0) -> None:
    """The group-call worker (which takes `leave` from its queue in its own time) lists
    nobody once the member's socket ended: polled with a deadline."""
    from signaling.sfu import worker

    loop = asyncio.get_running_loop()
    end = loop.time() + deadline
    while any(w.members for w in worker._local_workers.values()):
        assert loop.time() < end, "a group-call member outlived its socket"
        await asyncio.sleep(0.01)


def held() -> dict:
    return {**socket_stats(), **engines.open_streams()}


async def fuzz_case(kind: str, frames: list) -> None:
    before = held()
    room = await sync_to_async(services.create_room)("Fuzz", private=False)
    observer = room_socket(room.slug, await guest_session_key(room, "Observer"))
    assert (await observer.connect())[0]
    await observer.receive_json_from()  # hello
    socket = await open_socket(kind, room)
    for frame in frames:
        if isinstance(frame, bytes):
            await socket.send_to(bytes_data=frame)
        else:
            await socket.send_to(text_data=frame)
    probe, answered = PROBES.get(kind, DEFAULT_PROBE)
    await socket.send_to(text_data=json.dumps(probe))
    while True:
        output = await socket.receive_output(timeout=10)
        if output["type"] == "websocket.close":
            assert output.get("code", 1000) in DOCUMENTED_CLOSES, (frames, output)
            break
        event = json.loads(output["text"])
        assert isinstance(event, dict) and isinstance(event.get("type"), str), event
        if answered(event):
            break
    await socket.disconnect()
    if kind == "sfu":
        await no_call_members()
    # The other client is still served, and nothing the fuzzed socket started is left.
    await observer.send_json_to({"type": "ping"})
    while (await observer.receive_json_from(timeout=5))["type"] != "pong":
        pass
    present = [p.name for p in await presence_store().members(room.pk)]
    assert present == ["Observer"], frames
    await observer.disconnect()
    assert held() == before, (frames, held(), before)


@pytest.fixture(autouse=True)
async def cleanup():
    yield
    await close_db_connections()
    await stop_in_process_calls()


@pytest.mark.parametrize("kind", [kind for kind in TEMPLATES if kind != "realtime"])
@FUZZ
@given(data=st.data())
async def test_fuzz_socket(kind, data):
    """`kind`: rooms (chat), signal (direct calls), sfu (group calls), captions (client
    reports)."""
    await fuzz_case(kind, data.draw(frames_for(kind), label="frames"))


@settings(FUZZ, max_examples=REALTIME_EXAMPLES)
@given(data=st.data())
async def test_fuzz_realtime_socket(data):
    """The transcription proxy, `/v1/realtime`."""
    await fuzz_case("realtime", data.draw(frames_for("realtime"), label="frames"))
