"""The stand-in's conversation sessions (`?model=`), through the official SDK: scripted
text answers streamed as deltas, function calls whose output the next answer uses, cancel,
interruption by speech, audio output, errors."""

from __future__ import annotations

import base64

import pytest
from openai import AsyncOpenAI

from tests.support.openai_standin import Reply, StandinServer
from tests.support.speech import speech_pcm24k

KEY = "sk-standin-assistant"
WAIT = 10


@pytest.fixture
async def server():
    server = StandinServer(api_key=KEY)
    await server.start()
    yield server
    await server.stop()


def sdk(server: StandinServer) -> AsyncOpenAI:
    return AsyncOpenAI(api_key=KEY, base_url=server.base_url,
                       websocket_base_url=server.ws_base_url, max_retries=0)


async def until(conn, kind: str) -> list[dict]:
    """Events up to and including the first of type `kind`."""
    seen = []
    while True:
        event = (await conn.recv()).to_dict()
        seen.append(event)
        if event["type"] == kind:
            return seen


async def ask(conn, text: str) -> None:
    await conn.conversation.item.create(item={
        "type": "message", "role": "user", "content": [{"type": "input_text", "text": text}]})
    await conn.response.create()


async def test_text_answer_streams_then_function_call_and_its_output(server):
    server.script.add(Reply(call="read_transcript", arguments={"minutes": 10}),
                      Reply(text="Summary: {tool_output}"))
    tools = [{"type": "function", "name": "read_transcript", "description": "d",
              "parameters": {"type": "object", "properties": {"minutes": {"type": "integer"}}}}]
    async with sdk(server).realtime.connect(model="gpt-realtime") as conn:
        await until(conn, "session.created")
        await conn.session.update(session={"type": "realtime", "output_modalities": ["text"],
                                           "tools": tools})
        await until(conn, "session.updated")
        await ask(conn, "summarise the last ten minutes")
        events = await until(conn, "response.done")
        call = next(e for e in events if e["type"] == "response.function_call_arguments.done")
        assert (call["name"], call["arguments"]) == ("read_transcript", '{"minutes": 10}')
        await conn.conversation.item.create(item={
            "type": "function_call_output", "call_id": call["call_id"],
            "output": "Ann said hello"})
        await conn.response.create()
        events = await until(conn, "response.done")
    deltas = [e["delta"] for e in events if e["type"] == "response.output_text.delta"]
    assert len(deltas) >= 2 and "".join(deltas) == "Summary: Ann said hello"
    done = events[-1]["response"]
    assert done["status"] == "completed" and done["usage"]["total_tokens"] > 0


async def test_bad_events_cancel_and_scripted_errors(server):
    server.script.delta_interval_ms = 200
    server.script.add(Reply(text="one two three four five six"), Reply(error="server_error"))
    async with sdk(server).realtime.connect(model="gpt-realtime") as conn:
        await until(conn, "session.created")
        await conn.session.update(session={"type": "realtime", "tools": [{"type": "nope"}]})
        assert (await until(conn, "error"))[-1]["error"]["param"] == "session.tools[0]"
        await conn.response.cancel()
        error = (await until(conn, "error"))[-1]["error"]
        assert error["code"] == "response_cancel_not_active"
        await conn.session.update(session={"type": "realtime", "output_modalities": ["text"]})
        await ask(conn, "hi")
        await until(conn, "response.output_text.delta")
        await conn.response.create()
        error = (await until(conn, "error"))[-1]["error"]
        assert error["code"] == "conversation_already_has_active_response"
        await conn.response.cancel()
        done = (await until(conn, "response.done"))[-1]["response"]
        assert done["status"] == "cancelled"
        await conn.response.create()
        error = (await until(conn, "error"))[-1]["error"]
        assert error["code"] == "server_error"


async def test_spoken_question_gets_audio_and_speech_interrupts_it(server):
    server.script.add(Reply(text="a long spoken answer", audio_ms=3000))
    pcm = speech_pcm24k(["what time is it"])
    async with sdk(server).realtime.connect(model="gpt-realtime") as conn:
        await until(conn, "session.created")
        await conn.session.update(session={"type": "realtime", "output_modalities": ["audio"]})
        for start in range(0, len(pcm), 4800):
            await conn.input_audio_buffer.append(audio=base64.b64encode(
                pcm[start:start + 4800]).decode())
        events = await until(conn, "response.output_audio.delta")
        assert "input_audio_buffer.committed" in [e["type"] for e in events]
        audio = base64.b64decode(events[-1]["delta"])
        assert len(audio) == 4800 and max(audio) > 0  # 100 ms of PCM16 24 kHz, not silence
        for start in range(0, len(pcm), 4800):  # speaking over the answer
            await conn.input_audio_buffer.append(audio=base64.b64encode(
                pcm[start:start + 4800]).decode())
        events = await until(conn, "response.done")
    assert "input_audio_buffer.speech_started" in [e["type"] for e in events]
    assert events[-1]["response"]["status"] == "cancelled"
