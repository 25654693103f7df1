"""Direct-call set-up time in headless Chromium on loopback.

For each call, Ann and Bob open the room page; Ann invites Bob from "Here now" ("Message Bob"
or "Call Bob") and Bob accepts. Measured from the moment Bob's page hears its `accepted` (the
server took the acceptance) to:
- the data channel open on both sides (direct chat), and
- the first decoded remote video frame on both sides (direct video, `loadeddata`).
Page loads and the ringing are not counted. Prints median and p95 over --calls calls per mode.

Usage: .venv/bin/python bench/p2p_setup.py [--calls 20] [--modes chat,video] [--redis]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from playwright.sync_api import sync_playwright  # noqa: E402

from tests.support.chromium import create_room, join_as_guest, launch, participant  # noqa: E402
from tests.support.servers import DaphneProcess, LiveDatabase, RedisServer  # noqa: E402

MARKS = "() => [...window.parleyDirect.conversations.values()][0].marks"


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))
    return ordered[index]


def one_call(browser, ann_url: str, bob_url: str, slug: str, mode: str) -> float:
    """Milliseconds from Bob's acceptance to the later side's data channel open / first frame."""
    target = "channelOpen" if mode == "chat" else "firstFrame"
    path = f"/rooms/{slug}/"
    contexts = [participant(browser, ann_url), participant(browser, bob_url)]
    try:
        ann, bob = (context.new_page() for context in contexts)
        join_as_guest(ann, path, "Ann")
        join_as_guest(bob, path, "Bob")
        for page in (ann, bob):  # each page's signaling socket has said hello
            page.wait_for_function("() => window.parleyDirect && window.parleyDirect.me")
        ann.get_by_role("button", name=f"{'Message' if mode == 'chat' else 'Call'} Bob").click()
        bob.get_by_role("button", name="Accept").click()
        for page in (ann, bob):
            page.wait_for_function(
                f"() => {{ const c = [...window.parleyDirect.conversations.values()][0];"
                f" return c && c.marks.{target} !== undefined; }}", polling=50, timeout=30000
            )
        accepted = bob.evaluate(MARKS)["accepted"]
        done = max(page.evaluate(MARKS)[target] for page in (ann, bob))
        return done - accepted
    finally:
        for context in contexts:
            context.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=20)
    parser.add_argument("--modes", default="chat,video")
    parser.add_argument("--redis", action="store_true",
                        help="two daphne processes sharing a redis-server (one per side)")
    args = parser.parse_args()

    database = LiveDatabase.create()
    redis = RedisServer.from_env_or_new() if args.redis else None
    env = {"REDIS_URL": redis.url} if redis else {}
    servers = [DaphneProcess.start(database.url, env)]
    if redis:
        servers.append(DaphneProcess.start(database.url, env))
    started = time.monotonic()
    try:
        with sync_playwright() as playwright:
            browser = launch(playwright)
            setup = participant(browser, servers[0].base_url)
            print(f"load shape: {args.calls} calls per mode, 2 headless Chromium contexts per "
                  f"call (fake camera 640x480), {len(servers)} daphne process(es)"
                  f"{', Redis pub/sub layer' if redis else ', in-memory layer'}, loopback ICE, "
                  "no STUN/TURN")
            print(f"{'mode':6} {'metric':34} {'n':>3} {'median ms':>10} {'p95 ms':>8} "
                  f"{'min':>6} {'max':>6}")
            for mode in args.modes.split(","):
                slug = create_room(setup.new_page(), f"bench {mode}").strip("/").split("/")[-1]
                # Ann on the first server, Bob on the last: across processes with --redis.
                samples = [
                    one_call(browser, servers[0].base_url, servers[-1].base_url, slug, mode)
                    for _ in range(args.calls)
                ]
                metric = ("accepted -> data channel open" if mode == "chat"
                          else "accepted -> first remote frame")
                print(f"{mode:6} {metric:34} {len(samples):>3} "
                      f"{statistics.median(samples):>10.0f} {percentile(samples, 0.95):>8.0f} "
                      f"{min(samples):>6.0f} {max(samples):>6.0f}")
            browser.close()
    finally:
        for server in servers:
            server.stop()
        if redis:
            redis.stop()
        database.drop()
    print(f"total wall time {time.monotonic() - started:.0f} s")


if __name__ == "__main__":
    main()
