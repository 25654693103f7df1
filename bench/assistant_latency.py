"""The room assistant's latency and CPU through Parley, against the OpenAI stand-in.

The text path (the spoken path in group calls is not built yet: docs/assistant.md):
- direct: the official SDK straight to the stand-in (a `?model=` conversation session):
  `conversation.item.create` + `response.create` -> the first `response.output_text.delta`.
- parley: a guest's room socket on one daphne: `chat.send` "@assistant ..." -> the first
  `assistant.delta` (and -> the assistant's stored `chat.message`), the assistant invited
  over HTTP as a page does. Parley's path adds storing and broadcasting the question, the
  fan-out hop to the session, the session's item/response events, and the delta broadcast.
Parley's added latency = parley - direct, per percentile, same stand-in, same run, questions
one at a time. CPU: daphne's CPU seconds per answer while answering, and its CPU share with
one assistant present and idle (its ticks: presence, lease, empty-room check).

    .venv/bin/python bench/assistant_latency.py --questions 30
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "tests.settings")

import httpx  # noqa: E402
import websockets  # noqa: E402
from openai import AsyncOpenAI  # noqa: E402

from bench.fanout_common import cpu_seconds  # noqa: E402
from rooms.client import create_public_room, guest_session  # noqa: E402
from tests.support.openai_standin import standin_in_thread  # noqa: E402
from tests.support.servers import DaphneProcess, LiveDatabase  # noqa: E402

KEY = "sk-bench-assistant"


def percentiles(samples: list[float]) -> dict[str, float]:
    ordered = sorted(samples)
    pick = lambda q: ordered[min(len(ordered) - 1, int(q * len(ordered)))]  # noqa: E731
    return {"p50": statistics.median(ordered), "p90": pick(0.9), "max": ordered[-1]}


def fmt(stats: dict[str, float]) -> str:
    return "  ".join(f"{k} {v * 1000:7.1f} ms" for k, v in stats.items())


async def direct(standin, questions: int) -> list[float]:
    client = AsyncOpenAI(api_key=KEY, base_url=standin.base_url,
                         websocket_base_url=standin.ws_base_url, max_retries=0)
    samples = []
    async with client.realtime.connect(model="gpt-realtime") as conn:
        await conn.session.update(session={"type": "realtime", "output_modalities": ["text"]})
        for n in range(questions):
            started = time.perf_counter()
            await conn.conversation.item.create(item={
                "type": "message", "role": "user",
                "content": [{"type": "input_text", "text": f"Ann: question {n}"}]})
            await conn.response.create()
            first = None
            while True:  # raw events, as Parley reads them (the SDK's typed parse is slow)
                event = json.loads(await conn.recv_bytes())
                if event["type"] == "response.output_text.delta" and first is None:
                    first = time.perf_counter() - started
                if event["type"] == "response.done":
                    break
            samples.append(first)
    return samples


def events_of(frame: str) -> list[dict]:
    event = json.loads(frame)
    return event["events"] if event.get("type") == "batch" else [event]


async def through_parley(server: DaphneProcess, questions: int) -> dict:
    base = server.base_url
    slug = await create_public_room(base, "Bench assistant")
    session_id = await guest_session(base, slug, "Ann")
    async with httpx.AsyncClient(base_url=base, cookies={"sessionid": session_id}) as http:
        await http.get(f"/rooms/{slug}/")
        http.headers["X-CSRFToken"] = http.cookies["csrftoken"]
        ws_url = base.replace("http://", "ws://") + f"/ws/rooms/{slug}/"
        async with websockets.connect(ws_url, additional_headers={
                "Cookie": f"sessionid={session_id}", "Origin": base}) as socket:
            await socket.recv()  # hello
            invited = await http.post(f"/rooms/{slug}/assistant/invite")
            assert invited.status_code == 201, invited.text
            first_delta, stored = [], []
            cpu_before, wall_before = cpu_seconds(server.process.pid), time.perf_counter()
            for n in range(questions):
                started = time.perf_counter()
                await socket.send(json.dumps({"type": "chat.send", "text":
                                              f"@assistant question {n}", "client_id": f"q{n}"}))
                first = None
                deadline = asyncio.get_running_loop().time() + 30
                while True:
                    done = False
                    try:
                        async with asyncio.timeout_at(deadline):
                            frame = await socket.recv()
                    except TimeoutError:
                        raise RuntimeError(f"no answer to question {n}; daphne's log:\n"
                                           f"{server.log()[-3000:]}") from None
                    for event in events_of(frame):
                        if event["type"] == "error":
                            raise RuntimeError(f"question {n} refused: {event}")
                        if event["type"] == "assistant.delta" and first is None:
                            first = time.perf_counter() - started
                        if event["type"] == "chat.message" and \
                                event["author"]["name"] == "Assistant":
                            stored.append(time.perf_counter() - started)
                            done = True
                    if done:
                        break
                first_delta.append(first)
            busy_cpu = cpu_seconds(server.process.pid) - cpu_before
            busy_wall = time.perf_counter() - wall_before
            # Idle: the assistant present, nobody asking.
            idle_start, idle_wall = cpu_seconds(server.process.pid), time.perf_counter()
            await asyncio.sleep(10)  # a measuring window, not synchronisation
            idle_cpu = cpu_seconds(server.process.pid) - idle_start
            idle_wall = time.perf_counter() - idle_wall
            await http.post(f"/rooms/{slug}/assistant/remove")
    return {"first_delta": first_delta, "stored": stored,
            "cpu_per_answer": busy_cpu / questions, "busy_share": busy_cpu / busy_wall,
            "idle_share": idle_cpu / idle_wall}


async def main(args: argparse.Namespace) -> None:
    database = LiveDatabase.create()
    try:
        with standin_in_thread(api_key=KEY) as standin:
            server = DaphneProcess.start(database.url, {
                "OPENAI_API_KEY": KEY, "OPENAI_BASE_URL": standin.base_url,
                "OPENAI_WS_BASE_URL": standin.ws_base_url,
                "PARLEY_RATE_BURST": "100000", "PARLEY_RATE_PER_SECOND": "100000",
                "ASSISTANT_RESPONSE_BURST": "100000",
                "ASSISTANT_RESPONSES_PER_MINUTE": "100000"})
            try:
                direct_samples = await direct(standin, args.questions)
                parley = await through_parley(server, args.questions)
            finally:
                server.stop()
    finally:
        database.drop()
    print(f"# bench/assistant_latency.py, {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}"
          f", {platform.node()}, {os.cpu_count()} cores, {args.questions} questions each, "
          "one at a time, stand-in replies 'You said: ...' (3 deltas)")
    d, p = percentiles(direct_samples), percentiles(parley["first_delta"])
    print(f"direct to the stand-in, first text delta:   {fmt(d)}")
    print(f"through Parley, first assistant.delta:      {fmt(p)}")
    print(f"through Parley, answer stored and broadcast: {fmt(percentiles(parley['stored']))}")
    print("Parley's added latency (first delta):       "
          + "  ".join(f"{k} {(p[k] - d[k]) * 1000:7.1f} ms" for k in d))
    print(f"daphne CPU per answer: {parley['cpu_per_answer'] * 1000:.1f} ms "
          f"({parley['busy_share'] * 100:.1f}% of a core while answering back to back)")
    print(f"daphne CPU with one idle assistant present: {parley['idle_share'] * 100:.2f}% "
          "of a core (ticks every ASSISTANT_TICK_SECONDS)")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--questions", type=int, default=30)
    asyncio.run(main(parser.parse_args()))
