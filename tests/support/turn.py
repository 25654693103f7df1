"""coturn for tests: deploy/coturn/turnserver.conf as shipped, on a free port, with only
ports, addresses, paths, TLS and (where a test asks) peer permissions changed; and network
namespaces that meet only at it. Used by tests/test_deploy_nginx.py and
tests/test_turn_calls.py."""

from __future__ import annotations

import asyncio
import os
import re
import secrets
import shutil
import socket
import subprocess
import sys
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
    """coturn with deploy/coturn/turnserver.conf on a free port (loopback, or an address in
    a namespace of ours), without TLS (no certificate here) and with its verbose log and
    database in `directory`. `extra` is appended (test-only settings, such as
    LOOPBACK_PEERS)."""

    process: subprocess.Popen
    port: int
    directory: Path
    listening_ip: str = "127.0.0.1"
    namespaced: bool = False

    @classmethod
    def start(cls, directory: Path, extra: str = "", listening_ip: str = "127.0.0.1",
              namespace: str | None = None) -> Coturn:
        """`namespace`: run inside that network namespace (ip netns), listening on
        `listening_ip` there."""
        binary = shutil.which("turnserver")
        if binary is None:
            pytest.fail("coturn is not installed: `make test` installs Debian's coturn")
        port = servers.free_port()
        config = substitute((DEPLOY / "coturn/turnserver.conf").read_text(),
                            "deploy/coturn/turnserver.conf", [
            ("listening-port=3478", f"listening-port={port}\nlistening-ip={listening_ip}"),
            ("tls-listening-port=5349", "no-tls\nno-dtls"),
            ("static-auth-secret=replace-with-TURN_SECRET", f"static-auth-secret={TURN_SECRET}"),
            ("cert=", "#cert="), ("pkey=", "#pkey="),
            ("\nsyslog\n", f"\nlog-file={directory}/turn.log\npidfile={directory}/turn.pid\n"
                           f"userdb={directory}/turndb\nsimple-log\nverbose\n{extra}"),
        ])
        (directory / "turnserver.conf").write_text(config)
        prefix = ["ip", "netns", "exec", namespace] if namespace else []
        process = subprocess.Popen(
            [*prefix, binary, "-c", str(directory / "turnserver.conf")],
            stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
        server = cls(process, port, directory, listening_ip, namespace is not None)
        try:
            servers.wait_until(server.answers, timeout=10, what="coturn")
        except TimeoutError:
            server.stop()
            raise
        return server

    @property
    def url(self) -> str:
        """The TURN_URLS entry for this server (UDP: what browsers and aioice relay over)."""
        return f"turn:{self.listening_ip}:{self.port}?transport=udp"

    def answers(self) -> bool:
        """A STUN binding request on the UDP port gets a success response."""
        if self.process.poll() is not None:
            raise RuntimeError(f"coturn exited:\n{self.log()[-2000:]}")
        if self.namespaced:  # out of this namespace's reach: its log says when it listens
            return f"UDP listener opened on: {self.listening_ip}:{self.port}" in self.log()
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
        Parley's usernames are `<expiry>:<identity>`, e.g. `sfu-worker-w1.<member>`, a member id."""
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


class TurnOnlyNetwork:
    """Three network namespaces of our own, a browser's, coturn's and the SFU worker's:

        browser 10.211.1.2 ──veth── 10.211.1.1  turn  10.211.2.1 ──veth── 10.211.2.2 worker

    The turn namespace does not forward (net.ipv4.ip_forward is 0 in a new namespace), and
    neither end has a route to the other's network, so a packet gets from browser to worker
    only through coturn's relay. Each namespace has its own loopback and nothing else: the
    machine's own interfaces are never touched."""

    BROWSER_IP, TURN_BROWSER_SIDE = "10.211.1.2", "10.211.1.1"
    TURN_WORKER_SIDE, WORKER_IP = "10.211.2.1", "10.211.2.2"

    def __init__(self):
        tag = secrets.token_hex(3)
        self.browser = f"parley-test-browser-{tag}"
        self.turn = f"parley-test-turn-{tag}"
        self.worker = f"parley-test-worker-{tag}"
        self.created: list[str] = []

    def create(self) -> None:
        for namespace in (self.browser, self.turn, self.worker):
            subprocess.run(["ip", "netns", "add", namespace], check=True)
            self.created.append(namespace)
            self.ip(namespace, "link", "set", "lo", "up")
        self._link(self.browser, self.BROWSER_IP, "to-browser", self.TURN_BROWSER_SIDE)
        self._link(self.worker, self.WORKER_IP, "to-worker", self.TURN_WORKER_SIDE)

    def _link(self, namespace: str, address: str, turn_side: str, turn_address: str) -> None:
        """A veth pair from `namespace` (its end named to-turn) to the turn namespace."""
        self.ip(namespace, "link", "add", "to-turn", "type", "veth",
                "peer", "name", turn_side, "netns", self.turn)
        self.ip(namespace, "addr", "add", f"{address}/24", "dev", "to-turn")
        self.ip(namespace, "link", "set", "to-turn", "up")
        self.ip(self.turn, "addr", "add", f"{turn_address}/24", "dev", turn_side)
        self.ip(self.turn, "link", "set", turn_side, "up")

    @staticmethod
    def ip(namespace: str, *argv: str) -> subprocess.CompletedProcess:
        return subprocess.run(["ip", "-n", namespace, *argv], check=True,
                              capture_output=True, text=True)

    def has_route(self, namespace: str, address: str) -> bool:
        return subprocess.run(["ip", "-n", namespace, "route", "get", address],
                              capture_output=True).returncode == 0

    def forwarding(self, namespace: str) -> str:
        return subprocess.run(["ip", "netns", "exec", namespace, "sysctl", "-n",
                               "net.ipv4.ip_forward"], check=True, capture_output=True,
                              text=True).stdout.strip()

    def remove(self) -> None:
        """Delete the namespaces (their veths go with them); processes in them must be
        stopped first."""
        for namespace in reversed(self.created):
            subprocess.run(["ip", "netns", "del", namespace], check=False)
        self.created.clear()


@dataclass
class NamespacedProcess:
    """A server process run with `ip netns exec`, ready when its log shows `ready_text`, or
    when `url` answers 200 from inside the namespace (from outside nothing reaches it)."""

    process: subprocess.Popen
    log_path: Path

    @classmethod
    def start(cls, namespace: str, argv: list[str], env: dict[str, str], what: str, *,
              ready_text: str | None = None, url: str | None = None) -> NamespacedProcess:
        log_path = servers.log_file(f"{what}-")
        with log_path.open("wb") as log:
            process = subprocess.Popen(["ip", "netns", "exec", namespace, *argv],
                                       cwd=servers.ROOT, env=env, stdout=log,
                                       stderr=subprocess.STDOUT)
        started = cls(process, log_path)

        def ready() -> bool:
            if process.poll() is not None:
                raise RuntimeError(f"{what} exited:\n{started.log()[-3000:]}")
            if ready_text is not None:
                return ready_text in started.log()
            probe = ("import sys, urllib.request; "
                     f"sys.exit(urllib.request.urlopen({url!r}, timeout=2).status != 200)")
            return subprocess.run(["ip", "netns", "exec", namespace, sys.executable, "-c", probe],
                                  capture_output=True).returncode == 0

        try:
            servers.wait_until(ready, timeout=30, what=what)
        except TimeoutError:
            started.stop()
            raise RuntimeError(f"{what} did not start:\n{started.log()[-3000:]}") from None
        return started

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def stop(self) -> None:
        servers.stop_process(self.process)


# Forwards TCP connections on 127.0.0.1:<argv[1]> to the Unix socket <argv[2]>: Redis for a
# process in a namespace. Parley's Redis client options (rooms/redis.py) do not fit redis-py's
# Unix-socket connections, so the processes get a redis:// URL on their own loopback.
FORWARDER = """
import asyncio, sys

async def pipe(reader, writer):
    try:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    finally:
        writer.close()

async def handle(reader, writer):
    unix_reader, unix_writer = await asyncio.open_unix_connection(sys.argv[2])
    await asyncio.gather(pipe(reader, unix_writer), pipe(unix_reader, writer),
                         return_exceptions=True)

async def main():
    server = await asyncio.start_server(handle, "127.0.0.1", int(sys.argv[1]))
    print("forwarding", flush=True)
    await server.serve_forever()

asyncio.run(main())
"""


@dataclass
class UnixRedis:
    """A redis-server on a Unix socket only: processes in different network namespaces share
    the filesystem, not a loopback (forward_into gives a namespace a TCP port for it)."""

    process: subprocess.Popen
    path: Path

    @classmethod
    def start(cls, directory: Path) -> UnixRedis:
        binary = shutil.which("redis-server")
        if binary is None:
            pytest.fail("redis-server is not installed: run `make test`")
        path = directory / "redis.sock"
        process = subprocess.Popen(
            [binary, "--port", "0", "--unixsocket", str(path), "--unixsocketperm", "700",
             "--save", "", "--appendonly", "no"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        redis = cls(process, path)

        def pong() -> bool:
            if process.poll() is not None:
                raise RuntimeError("redis-server exited")
            with socket.socket(socket.AF_UNIX) as sock:
                sock.settimeout(0.5)
                sock.connect(str(path))
                sock.sendall(b"PING\r\n")
                return sock.recv(16).startswith(b"+PONG")

        servers.wait_until(pong, timeout=10, what="redis-server on a Unix socket")
        return redis

    def forward_into(self, namespace: str, port: int) -> NamespacedProcess:
        """127.0.0.1:`port` inside `namespace` connects to this Redis (TCP only: no UDP
        crosses namespaces this way)."""
        return NamespacedProcess.start(
            namespace, [sys.executable, "-c", FORWARDER, str(port), str(self.path)],
            dict(os.environ), f"redis-forward-{namespace}", ready_text="forwarding")

    def stop(self) -> None:
        servers.stop_process(self.process)
