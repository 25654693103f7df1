"""coturn for tests: deploy/coturn/turnserver.conf as shipped, on a free loopback port, with
only ports, paths, TLS and (where a test asks) peer permissions changed; and the aiortc side of
relay-only calls. Used by tests/test_deploy_nginx.py and tests/test_turn_calls.py."""

from __future__ import annotations

import asyncio
import os
import re
import shutil
import socket
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.support import servers

DEPLOY = servers.ROOT / "deploy"
TURN_SECRET = "turn-test-secret"

# Test-only: the shipped file denies relaying to loopback (and this machine's only other
# address, 192.0.2.2, is in a denied reserved range), and every peer of a test is on loopback.
# allowed-peer-ip takes precedence over the denied ranges; allow-loopback-peers lifts
# coturn's own loopback ban.
LOOPBACK_PEERS = "allow-loopback-peers\nallowed-peer-ip=127.0.0.1\n"


def substitute(text: str, source: str, replacements: list[tuple[str, str]]) -> str:
    """Replace each shipped value, failing if one is gone: the test must notice the shipped
    file changing under it rather than test something else."""
    for old, new in replacements:
        assert old in text, f"{source} no longer contains {old!r}: update this test"
        text = text.replace(old, new)
    return text


@dataclass
class Coturn:
    """coturn with deploy/coturn/turnserver.conf on a free loopback port, without TLS (no
    certificate here) and with its logs and database in `directory`. `extra` is appended
    (test-only settings, such as LOOPBACK_PEERS)."""

    process: subprocess.Popen
    port: int
    directory: Path

    @classmethod
    def start(cls, directory: Path, extra: str = "") -> Coturn:
        binary = shutil.which("turnserver")
        if binary is None:
            pytest.fail("coturn is not installed: `make test` installs Debian's coturn")
        port = servers.free_port()
        config = substitute((DEPLOY / "coturn/turnserver.conf").read_text(),
                            "deploy/coturn/turnserver.conf", [
            ("listening-port=3478", f"listening-port={port}\nlistening-ip=127.0.0.1"),
            ("tls-listening-port=5349", "no-tls\nno-dtls"),
            ("static-auth-secret=replace-with-TURN_SECRET", f"static-auth-secret={TURN_SECRET}"),
            ("cert=", "#cert="), ("pkey=", "#pkey="),
            ("\nsyslog\n", f"\nlog-file={directory}/turn.log\npidfile={directory}/turn.pid\n"
                           f"userdb={directory}/turndb\nsimple-log\nverbose\n{extra}"),
        ])
        (directory / "turnserver.conf").write_text(config)
        process = subprocess.Popen(
            [binary, "-c", str(directory / "turnserver.conf")],
            stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
        server = cls(process, port, directory)
        try:
            servers.wait_until(server.answers, timeout=10, what="coturn")
        except TimeoutError:
            server.stop()
            raise
        return server

    @property
    def url(self) -> str:
        """The TURN_URLS entry for this server (UDP: what browsers and aioice relay over)."""
        return f"turn:127.0.0.1:{self.port}?transport=udp"

    def answers(self) -> bool:
        """A STUN binding request on the UDP port gets a success response."""
        if self.process.poll() is not None:
            raise RuntimeError(f"coturn exited:\n{self.log()[-2000:]}")
        request = bytes.fromhex("0001000021122442") + os.urandom(12)
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
            probe.settimeout(0.5)
            probe.sendto(request, ("127.0.0.1", self.port))
            try:
                return probe.recv(512)[:2] == b"\x01\x01"
            except TimeoutError:
                return False

    def log(self) -> str:
        """coturn's log (simple-log: one file, whatever name coturn gives it)."""
        return "".join(path.read_text(errors="replace")
                       for path in sorted(self.directory.glob("turn*.log")))

    def allocating_identities(self) -> list[str]:
        """The identity of each allocation coturn logged as granted (verbose log), in order:
        Parley's usernames are `<expiry>:<identity>`, e.g. `sfu-worker-w1` or a member id."""
        pattern = re.compile(r"user <\d+:([^>]*)>: incoming packet ALLOCATE processed, success")
        return [match.group(1) for match in pattern.finditer(self.log())]

    def relays_to(self, peer: str, password: str | None = None) -> bool:
        """Whether a datagram sent through an allocation (credentials as Parley mints them,
        or `password` instead) reaches a socket on `peer`."""
        return asyncio.run(self._relay(peer, password))

    async def _relay(self, peer: str, password: str | None) -> bool:
        from aioice import turn

        from signaling.ice import turn_credentials

        credentials = turn_credentials(TURN_SECRET, "member-1", 600)
        loop = asyncio.get_running_loop()
        received = loop.create_future()
        relay, _ = await turn.create_turn_endpoint(
            asyncio.DatagramProtocol, ("127.0.0.1", self.port), credentials["username"],
            password or credentials["credential"], ssl=False, transport="udp")
        listener, _ = await loop.create_datagram_endpoint(
            lambda: Receiver(received), local_addr=(peer, 0))
        try:
            for _ in range(3):  # UDP may drop one: three tries of a second each
                relay.sendto(b"through the relay", listener.get_extra_info("sockname"))
                try:
                    await asyncio.wait_for(asyncio.shield(received), 1)
                    return True
                except TimeoutError:
                    continue
            return False
        finally:
            listener.close()
            relay.close()

    def stop(self) -> None:
        servers.stop_process(self.process)


class Receiver(asyncio.DatagramProtocol):
    def __init__(self, received: asyncio.Future):
        self.received = received

    def datagram_received(self, data, addr):
        if not self.received.done():
            self.received.set_result(data)
