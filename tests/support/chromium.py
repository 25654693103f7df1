"""Headless Debian Chromium driven by Playwright (no browser download), for browser tests.

Switches follow ../shared/notes/browser-webrtc.md: a quiet start on a closed network, fake
camera and microphone, loopback ICE without mDNS names.
"""

from __future__ import annotations

import os
import shutil
from urllib.parse import urlsplit

CHROMIUM = os.environ.get("PARLEY_CHROMIUM", "/usr/bin/chromium")

# Playwright passes its own --disable-features list and a second switch replaces the first,
# so ours repeats Playwright's (from its chromiumSwitches, Playwright 1.65) and adds
# WebRtcHideLocalIpsWithMdns: without it host candidates are mDNS names nobody resolves here.
PLAYWRIGHT_DISABLED_FEATURES = [
    "AvoidUnnecessaryBeforeUnloadCheckSync", "DestroyProfileOnBrowserClose", "HttpsUpgrades",
    "HttpsFirstBalancedModeAutoEnable", "LensOverlay", "MediaRouter", "PaintHolding",
    "ThirdPartyStoragePartitioning", "AvoidCorsURLLoaderRestartOnRedirect",
    "TcpPortRandomizationWin", "OptimizationHints", "NetworkTimeServiceQuerying", "AimEnabled",
    "PreconnectToSearch",
]
DISABLED_FEATURES = [*PLAYWRIGHT_DISABLED_FEATURES, "WebRtcHideLocalIpsWithMdns"]

CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    # Chromium still looks up Google hosts at start; answer locally.
    "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE localhost, EXCLUDE 127.0.0.1",
    # Fake devices, granted without a prompt.
    "--use-fake-device-for-media-stream",
    "--use-fake-ui-for-media-stream",
    "--allow-loopback-in-peer-connection",
    "--autoplay-policy=no-user-gesture-required",
    "--disable-features=" + ",".join(DISABLED_FEATURES),
]


def launch(playwright, extra_args: list[str] | None = None):
    return launch_with(playwright.chromium, extra_args)


def launch_with(browser_type, extra_args: list[str] | None = None):
    """Another Chromium from a running Playwright (e.g. with a WAV as its microphone)."""
    if not shutil.which(CHROMIUM) and not os.path.exists(CHROMIUM):
        raise RuntimeError(f"{CHROMIUM} is missing: `make test` installs Debian's chromium")
    return browser_type.launch(
        executable_path=CHROMIUM, headless=True, args=[*CHROMIUM_ARGS, *(extra_args or [])]
    )


def participant(browser, base_url: str):
    """A new browser context (one person: own cookies) with camera and microphone allowed."""
    return browser.new_context(base_url=base_url, permissions=["camera", "microphone"])


def create_room(page, name: str) -> str:
    """Create a public room from the lobby; returns its path."""
    page.goto("/")
    page.fill("#create-room input[name=name]", name)
    page.click("#create-room button[type=submit]")
    page.wait_for_url("**/rooms/*/")
    return urlsplit(page.url).path


def join_as_guest(page, room_path: str, name: str) -> None:
    """Open a room page (or a call page) and pass its join form."""
    page.goto(room_path)
    page.fill("#join-form input[name=name]", name)
    page.click("#join-form button[type=submit]")
    page.wait_for_url(f"**{room_path}")



# The candidate types of `pc`'s selected pair (and the remote end's address) and of every
# local candidate it gathered, and the bytes sent and received over the selected pair; null
# before a pair is selected.
SELECTED_PAIR = """async (pc) => {
  const stats = await pc.getStats();
  let pair = null;
  const local = [];
  for (const report of stats.values()) {
    if (report.type === "transport" && report.selectedCandidatePairId) {
      pair = stats.get(report.selectedCandidatePairId);
    }
    if (report.type === "local-candidate") local.push(report.candidateType);
  }
  if (!pair) return null;
  const remote = stats.get(pair.remoteCandidateId);
  return {local: stats.get(pair.localCandidateId).candidateType,
          remote: remote.candidateType, remoteAddress: remote.address,
          bytesReceived: pair.bytesReceived || 0, bytesSent: pair.bytesSent || 0,
          gathered: local};
}"""


def launch_in_namespace(browser_type, namespace: str, directory, extra_args=None):
    """A Chromium inside network namespace `namespace`, through a wrapper script that runs
    it with `ip netns exec` (Playwright drives it over pipes, which need no network)."""
    from pathlib import Path

    wrapper = Path(directory) / "chromium-in-namespace"
    wrapper.write_text(f'#!/bin/sh\nexec ip netns exec {namespace} {CHROMIUM} "$@"\n')
    wrapper.chmod(0o755)
    return browser_type.launch(executable_path=str(wrapper), headless=True,
                               args=[*CHROMIUM_ARGS, *(extra_args or [])])


def poll_page(page, script: str, *, timeout: float = 20, interval_ms: int = 250):
    """Evaluate `script` (a function, async allowed) in `page` until it returns something
    truthy, and return that; fail after `timeout` seconds with the last value. Not
    page.wait_for_function: it does not await a Promise, so an async predicate (any that
    reads getStats()) counts as true at once."""
    import time

    deadline = time.monotonic() + timeout
    while True:
        value = page.evaluate(script)
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s; last value: {value!r}")
        page.wait_for_timeout(interval_ms)


def launch_honouring_permissions(browser_type):
    """A Chromium that asks for camera and microphone as a person's browser does (no
    --use-fake-ui-for-media-stream): a context without those permissions is refused
    (NotAllowedError), one with them gets the fake devices. Screen sharing needs the usual
    browser (this one would wait on a picker)."""
    args = [arg for arg in CHROMIUM_ARGS if arg != "--use-fake-ui-for-media-stream"]
    return browser_type.launch(executable_path=CHROMIUM, headless=True, args=args)


def join_call_as_guest(page, room_path: str, name: str) -> None:
    """Open the old group call link (a deep link into the room page that joins the call) and
    pass the join form; the page then joins the call by itself."""
    page.goto(f"{room_path}call/")
    page.fill("#join-form input[name=name]", name)
    page.click("#join-form button[type=submit]")
    page.wait_for_url(f"**{room_path}?join=call")


# The room page's group call (window.parleyCall): per remote participant (by name) and
# source, video frames decoded and audio packets received on the subscribe connection,
# mapped through the server's `participants`.
REMOTE_CALL_MEDIA = """async () => {
  const call = window.parleyCall;
  if (!call.subscribePc) return {};
  const byMid = {};
  for (const r of (await call.subscribePc.getStats()).values()) {
    if (r.type === "inbound-rtp") byMid[r.mid] = r;
  }
  const out = {};
  for (const p of call.participants) {
    if (p.you) continue;
    out[p.name] = {
      frames: (byMid[p.mids.video] || {}).framesDecoded || 0,
      audio: (byMid[p.mids.audio] || {}).packetsReceived || 0,
      screen: (byMid[p.mids.screen] || {}).framesDecoded || 0,
    };
  }
  return out;
}"""
