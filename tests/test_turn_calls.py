"""Calls through a real TURN server: Debian's coturn started from deploy/coturn/turnserver.conf
(tests/support/turn.py) with the credentials Parley mints (TURN_SECRET, TURN_URLS).

Browsers are relay-only through Parley's own setting (ICE_TRANSPORT_POLICY=relay, which the
pages take from `hello`), so a call that connects at all went through coturn; each test also
reads the selected candidate pair and coturn's log of granted allocations, so the relay is
shown, not assumed. Test-only: coturn may relay to loopback (LOOPBACK_PEERS), since every
peer here is on loopback; the shipped file denies that, as test_deploy_nginx.py checks. The
`netns` test needs no such opening: browsers and the worker are in network namespaces that
meet only at coturn's, and coturn gets just the documented allowed-peer-ip for the worker.
"""

from __future__ import annotations

import ipaddress
import os
import sys

import pytest
from playwright.sync_api import expect

from tests.support import servers
from tests.support.chromium import (
    SELECTED_PAIR,
    create_room,
    join_as_guest,
    join_call_as_guest,
    participant,
    poll_page,
)
from tests.support.servers import free_port
from tests.support.turn import LOOPBACK_PEERS, TURN_SECRET, Coturn


@pytest.fixture
def coturn(tmp_path):
    server = Coturn.start(tmp_path, extra=LOOPBACK_PEERS)
    yield server
    server.stop()


def turn_env(coturn: Coturn) -> dict[str, str]:
    """A daphne's settings: TURN only (no STUN), members' and the worker's credentials minted
    from TURN_SECRET."""
    return {"TURN_SECRET": TURN_SECRET, "TURN_URLS": coturn.url, "ICE_SERVERS": "[]",
            "SFU_ICE_SERVERS": "[]", "ICE_TRANSPORT_POLICY": "relay"}


def relayed_pair(page, pc_expression: str, carried: str = "bytesReceived") -> dict:
    """Wait until the page's connection has a selected pair that has carried media
    (`carried`: "bytesReceived", or "bytesSent" for a publish-only connection); return its
    candidate types."""
    selected = f"""async () => {{
      const pc = {pc_expression};
      return pc ? await ({SELECTED_PAIR})(pc) : null;
    }}"""
    return poll_page(page, f"""async () => {{
      const pair = await ({selected})();
      return pair && pair.{carried} > 0 ? pair : null;
    }}""")


# Inbound video of the direct call's connection: frames decoded and their width.
DIRECT_PC = """[...window.parleyDirect.conversations.values()].find(c => c.mode === "video")?.pc"""
DIRECT_VIDEO = f"""async () => {{
  const pc = {DIRECT_PC};
  if (!pc) return false;
  for (const r of (await pc.getStats()).values()) {{
    if (r.type === "inbound-rtp" && r.kind === "video") {{
      return (r.framesDecoded || 0) > 10 && (r.frameWidth || 0) > 0
        && document.querySelector("video.direct-remote").videoWidth > 0;
    }}
  }}
  return false;
}}"""


def direct_video_call(contexts, room_name: str) -> list:
    """Ann and Bob (one page from each context) on a new room's page: Ann calls Bob from
    "Here now", Bob accepts."""
    pages = [context.new_page() for context in contexts]
    room_path = create_room(pages[0], room_name)
    for page, name in zip(pages, ["Ann", "Bob"], strict=True):
        join_as_guest(page, room_path, name)
    ann, bob = pages
    ann.get_by_role("button", name="Call Bob").click()
    bob.get_by_role("button", name="Accept").click()
    return pages


def direct_status(page):
    return page.locator(".direct-video [data-field=status]")


@pytest.mark.browser
def test_a_relay_only_direct_video_call_goes_through_coturn(
        chromium_browser, daphne_factory, coturn):
    """Two relay-only pages (each gathers relay candidates only) decode each other's camera
    over a selected pair whose local candidate is a coturn relay; coturn granted allocations
    to both members' minted credentials."""
    server = daphne_factory(**turn_env(coturn))
    contexts = [participant(chromium_browser, server.base_url) for _ in range(2)]
    try:
        for page in direct_video_call(contexts, "Relayed direct call"):
            expect(direct_status(page)).to_have_attribute(
                "data-state", "connected", timeout=20000)
            poll_page(page, DIRECT_VIDEO)
            pair = relayed_pair(page, DIRECT_PC)
            assert pair["local"] == "relay", pair
            assert set(pair["gathered"]) == {"relay"}, pair
        members = set(coturn.allocating_identities())
        assert len(members) >= 2, coturn.allocating_identities()
    finally:
        for context in contexts:
            context.close()


# Per remote participant: video frames decoded and audio packets received on the subscribe
# connection (as tests/test_browser_group_call.py reads them).
GROUP_MEDIA = """async () => {
  const call = window.parleyCall;
  if (!call.subscribePc) return false;
  const byMid = {};
  for (const r of (await call.subscribePc.getStats()).values()) {
    if (r.type === "inbound-rtp") byMid[r.mid] = r;
  }
  const others = call.participants.filter(p => !p.you);
  return others.length === 1 && others.every(p =>
    (byMid[p.mids.video] || {}).framesDecoded > 10
    && (byMid[p.mids.audio] || {}).packetsReceived > 10);
}"""


def group_call_pairs(contexts, room_name: str) -> list[tuple[str, dict]]:
    """Two people join a new room's group call from `contexts`; once each page sees and hears
    the other, the selected candidate pair of each of its connections that carried media."""
    pages = [context.new_page() for context in contexts]
    room_path = create_room(pages[0], room_name)
    for page, name in zip(pages, ["Ann", "Bob"], strict=True):
        join_call_as_guest(page, room_path, name)
    pairs = []
    for page in pages:
        expect(page.locator("#call-status")).to_have_attribute("data-state", "live")
        poll_page(page, GROUP_MEDIA, timeout=40)
        for connection, carried in (("publishPc", "bytesSent"),
                                    ("subscribePc", "bytesReceived")):
            pairs.append((connection, relayed_pair(
                page, f"window.parleyCall.{connection}", carried)))
    return pairs


@pytest.mark.browser
@pytest.mark.sfu
def test_a_relay_only_group_call_goes_through_coturn_both_ways(
        chromium_browser, daphne_factory, coturn):
    """Two relay-only pages in a group call see and hear each other through the SFU worker;
    both of each page's connections (publish, subscribe) run over a relay, and the worker
    allocated relays with its own credentials (`sfu-worker-<id>.<member>`), not a member's."""
    server = daphne_factory(**turn_env(coturn))
    contexts = [participant(chromium_browser, server.base_url) for _ in range(2)]
    try:
        for connection, pair in group_call_pairs(contexts, "Relayed group call"):
            assert pair["local"] == "relay", (connection, pair)
            assert set(pair["gathered"]) == {"relay"}, (connection, pair)
        identities = coturn.allocating_identities()
        assert any(identity.startswith("sfu-worker-") for identity in identities), identities
        assert len({i for i in identities if not i.startswith("sfu-worker-")}) >= 2, identities
    finally:
        for context in contexts:
            context.close()


@pytest.mark.sfu
async def test_the_sfu_worker_relays_with_its_own_minted_credentials(settings, coturn):
    """With TURN_SECRET, the worker's connections gather relay candidates from coturn with
    credentials minted for the worker; relay-only aiortc participants (members' credentials)
    exchange audio and video with it over relay-to-relay pairs on both sides."""
    from channels.layers import InMemoryChannelLayer

    from signaling.ice import ice_servers_for
    from signaling.sfu.worker import SfuWorker
    from tests.support.sfu_peers import (
        RelayParticipant,
        add_person,
        room_with_router,
        selected_pair_types,
    )

    settings.ICE_SERVERS = settings.SFU_ICE_SERVERS = []
    settings.TURN_SECRET, settings.TURN_URLS = TURN_SECRET, [coturn.url]
    worker = SfuWorker(InMemoryChannelLayer(), worker_id="w1")
    assert worker.ice_servers("m0")[-1]["username"].endswith(":sfu-worker-w1.m0")
    room, directory = room_with_router(ice_servers=worker.ice_servers)
    people = []
    try:
        for n in range(2):
            people.append(await add_person(room, directory, f"m{n}", participant=RelayParticipant,
                                           ice_servers=ice_servers_for(f"member-{n}")))
        await people[1].wait_for(lambda: people[1].receiving_from("m0", frames=5), timeout=40)
        await people[0].wait_for(lambda: people[0].receiving_from("m1", frames=5), timeout=40)

        for person in people:
            member = room.members[person.id]
            for ours, theirs in ((person.publish_pc, member.publish_pc),
                                 (person.subscribe_pc, member.subscribe_pc)):
                assert selected_pair_types(ours)[0] == "relay"
                worker_side = selected_pair_types(theirs)
                gatherer = theirs.getTransceivers()[0].sender.transport.transport.iceGatherer
                gathered = gatherer.getLocalCandidates()
                assert "relay" in {c.type for c in gathered}, gathered
                # The member has only relay candidates, so the worker's pair ends at one. Its
                # own end is a relay too where its host addresses are all private or reserved
                # (coturn may not relay to them; aioice never offers loopback).
                assert worker_side[1] == "relay", worker_side
                if all(ipaddress.ip_address(c.ip).is_private for c in gathered
                       if c.type == "host"):
                    assert worker_side[0] == "relay", worker_side
        identities = coturn.allocating_identities()
        assert {"sfu-worker-w1.m0", "sfu-worker-w1.m1"} <= set(identities), identities
        assert {"member-0", "member-1"} <= set(identities), identities
    finally:
        for person in people:
            await person.close()
        await room.close()


@pytest.fixture
def turn_only_network():
    """Browser, TURN and worker namespaces (tests/support/turn.py), removed afterwards."""
    from tests.support.turn import TurnOnlyNetwork

    if os.geteuid() != 0:
        pytest.skip("creating network namespaces (ip netns add) needs root; "
                    "deselect with -m 'not netns' elsewhere")
    network = TurnOnlyNetwork()
    try:
        network.create()
        yield network
    finally:
        network.remove()


@pytest.mark.browser
@pytest.mark.sfu
@pytest.mark.netns
def test_a_group_call_between_namespaces_that_meet_only_at_the_turn_server(
        chromium_browser, live_database, turn_only_network, tmp_path):
    """Chromium and daphne in one namespace, the SFU worker in another, coturn in a third
    that forwards nothing: neither end has a route to the other, yet two relay-only pages
    see and hear each other through the worker. coturn runs the shipped file with the
    documented opening for a worker on a private network (allowed-peer-ip, its one
    address) and relays from its worker-side address (relay-ip); the pages' media goes to
    the worker's own address, 10.211.2.2, through their relays."""
    from tests.support import servers
    from tests.support.chromium import launch_in_namespace
    from tests.support.turn import NamespacedProcess, UnixRedis

    net = turn_only_network
    assert not net.has_route(net.browser, net.WORKER_IP)
    assert not net.has_route(net.worker, net.BROWSER_IP)
    assert net.forwarding(net.turn) == "0"

    stops = []
    browser = None
    try:
        (tmp_path / "turn").mkdir()
        coturn = Coturn.start(
            tmp_path / "turn", listening_ip=net.TURN_BROWSER_SIDE, namespace=net.turn,
            extra=f"relay-ip={net.TURN_WORKER_SIDE}\nallowed-peer-ip={net.WORKER_IP}\n")
        stops.append(coturn.stop)
        redis = UnixRedis.start(tmp_path)
        stops.append(redis.stop)
        redis_port = servers.free_port()
        for namespace in (net.browser, net.worker):
            stops.append(redis.forward_into(namespace, redis_port).stop)
        env = {**os.environ, **servers.SERVER_ENV, "DATABASE_URL": live_database.url,
               "REDIS_URL": f"redis://127.0.0.1:{redis_port}/0", "ICE_SERVERS": "[]",
               "SFU_ICE_SERVERS": "[]", "PYTHONUNBUFFERED": "1"}
        for name in ("TURN_SECRET", "TURN_URLS"):
            env.pop(name, None)
        # The worker has no TURN of its own here: coturn reaches it at its address.
        worker = NamespacedProcess.start(net.worker, [sys.executable, "manage.py", "sfu"],
                                         env, "sfu-worker-netns", ready_text="serving on")
        stops.append(worker.stop)
        port = servers.free_port()
        daphne = NamespacedProcess.start(
            net.browser, [sys.executable, "-m", "daphne", "-b", "127.0.0.1", "-p", str(port),
                          "project.asgi:application"],
            {**env, "DEBUG": "0", "STATIC_ROOT": servers.collected_static(),
             "TURN_SECRET": TURN_SECRET, "TURN_URLS": coturn.url,
             "ICE_TRANSPORT_POLICY": "relay"},
            "daphne-netns", url=f"http://127.0.0.1:{port}/healthz")
        stops.append(daphne.stop)

        browser = launch_in_namespace(chromium_browser.browser_type, net.browser, tmp_path)
        contexts = [participant(browser, f"http://127.0.0.1:{port}") for _ in range(2)]
        for connection, pair in group_call_pairs(contexts, "Namespaced group call"):
            assert pair["local"] == "relay", (connection, pair)
            assert pair["remoteAddress"] == net.WORKER_IP, (connection, pair)
        assert len(set(coturn.allocating_identities())) >= 2, coturn.allocating_identities()
    finally:
        if browser is not None:
            browser.close()
        for stop in reversed(stops):
            stop()


# --- the page tells the truth when TURN is the problem (static/parley/ice-health.js) ------

TURN_REFUSED_TEXT = "relay server (TURN) refused"
TURN_UNREACHABLE_TEXT = "relay server (TURN) cannot be reached"


@pytest.mark.browser
@pytest.mark.sfu
def test_a_group_call_whose_turn_server_refuses_the_credentials_says_so_and_offers_a_retry(
        chromium_browser, daphne_factory, coturn):
    """Relay-only, with Parley's TURN_SECRET not the one coturn has (a misconfiguration):
    coturn answers 401, and the page says the relay refused, with "Try again", instead of
    staying on "Joining…" or claiming to be in the call. Trying again fails the same way."""
    server = daphne_factory(**{**turn_env(coturn), "TURN_SECRET": "not-the-coturn-secret"})
    context = participant(chromium_browser, server.base_url)
    try:
        page = context.new_page()
        room_path = create_room(page, "Refused relay")
        join_call_as_guest(page, room_path, "Ann")
        status = page.locator("#call-status")
        expect(status).to_have_attribute("data-state", "media-failed", timeout=20000)
        expect(status).to_contain_text(TURN_REFUSED_TEXT)
        retry = page.get_by_role("button", name="Try again")
        expect(retry).to_be_visible()
        retry.click()
        expect(status).to_have_attribute("data-state", "media-failed", timeout=20000)
        expect(status).to_contain_text(TURN_REFUSED_TEXT)
    finally:
        context.close()


@pytest.mark.browser
def test_a_direct_call_whose_turn_server_is_unreachable_says_so_on_both_sides(
        chromium_browser, daphne_factory):
    """Relay-only with a TURN URL nothing listens at (TCP, so Chromium learns at once): both
    people see that the relay cannot be reached (and can hang up), not an endless
    "Connecting…"."""
    closed = f"turn:127.0.0.1:{free_port()}?transport=tcp"
    server = daphne_factory(TURN_SECRET=TURN_SECRET, TURN_URLS=closed, ICE_SERVERS="[]",
                            ICE_TRANSPORT_POLICY="relay")
    contexts = [participant(chromium_browser, server.base_url) for _ in range(2)]
    try:
        for page in direct_video_call(contexts, "Unreachable relay"):
            status = direct_status(page)
            expect(status).to_have_attribute("data-state", "media-failed", timeout=20000)
            expect(status).to_contain_text(TURN_UNREACHABLE_TEXT)
            expect(page.get_by_role("button", name="Hang up")).to_be_visible()
    finally:
        for context in contexts:
            context.close()


# A stand-in RTCPeerConnection (an EventTarget with the states watchIce reads), driven
# through a script of events; returns what watchIce reported, in order.
WATCH_SCRIPT = """async ([relayOnly, steps]) => {
  const { watchIce } = await import("/static/parley/ice-health.js");
  const pc = new EventTarget();
  Object.assign(pc, { connectionState: "new", iceGatheringState: "new" });
  const reported = [];
  watchIce(pc, { relayOnly, onProblem: (problem) => reported.push(problem) });
  for (const [kind, value] of steps) {
    let event;
    if (kind === "candidate") {
      event = new Event("icecandidate");
      event.candidate = { type: value };
    } else if (kind === "error") {
      event = new Event("icecandidateerror");
      Object.assign(event, { url: "turn:turn.example:3478", errorCode: value, errorText: "x" });
    } else {
      pc[kind === "gathering" ? "iceGatheringState" : "connectionState"] = value;
      event = new Event(kind === "gathering" ? "icegatheringstatechange"
                                             : "connectionstatechange");
    }
    pc.dispatchEvent(event);
  }
  return reported;
}"""


@pytest.mark.browser
@pytest.mark.parametrize(("relay_only", "steps", "expected"), [
    # Host candidates, no TURN: a failed connection is the network's fault.
    (False, [["gathering", "gathering"], ["candidate", "host"], ["gathering", "complete"],
             ["connection", "failed"]], ["ice_failed"]),
    # TURN configured but unreachable, and direct paths failed too: the relay is the news.
    (False, [["candidate", "host"], ["error", 701], ["connection", "failed"]],
     ["turn_unreachable"]),
    # TURN gave a candidate and the pair still failed: not TURN's reachability.
    (True, [["gathering", "gathering"], ["candidate", "relay"], ["gathering", "complete"],
            ["connection", "failed"]], ["ice_failed"]),
    # Relay-only, gathering complete with a 401: refused, said once even when it then fails.
    (True, [["gathering", "gathering"], ["error", 401], ["gathering", "complete"],
            ["connection", "failed"]], ["turn_refused"]),
    # Relay-only, nothing answered: unreachable; connecting later clears it.
    (True, [["gathering", "gathering"], ["gathering", "complete"],
            ["connection", "connected"]], ["turn_unreachable", None]),
    # A healthy call reports nothing.
    (False, [["candidate", "host"], ["connection", "connected"]], []),
])
def test_the_ice_watch_names_the_problem_people_can_act_on(
        chromium_browser, relay_only, steps, expected):
    """ice-health.js's decision, in Chromium, for states a real network takes too long to
    reach in a test (a failed pair is ~30 s of checks; an unanswered UDP relay ~40 s)."""
    page = chromium_browser.new_page()
    try:
        serve_static(page)
        assert page.evaluate(WATCH_SCRIPT, [relay_only, steps]) == expected
    finally:
        page.close()


def serve_static(page, origin: str = "http://parley.test") -> None:
    """Open an empty page at `origin` whose /static/ is this checkout's static/ (no server:
    Playwright answers the requests), so the page can import Parley's ES modules."""
    static = servers.ROOT / "static"

    def answer(route):
        path = route.request.url.removeprefix(origin)
        if path.startswith("/static/"):
            route.fulfill(path=str(static / path.removeprefix("/static/")),
                          content_type="text/javascript")
        else:
            route.fulfill(body="<!doctype html><title>static</title>", content_type="text/html")

    page.route(f"{origin}/**", answer)
    page.goto(f"{origin}/")
