"""deploy/ as shipped, for real: Debian's nginx with deploy/nginx/parley.conf (only ports and
paths substituted) terminating TLS in front of two daphne processes that share a Redis and
run the production HTTPS settings of deploy/parley.env.example; Chromium over https/wss.
And deploy/coturn/turnserver.conf in coturn, with credentials as Parley mints them."""

from __future__ import annotations

import asyncio
import datetime
import ipaddress
import json
import os
import shlex
import shutil
import socket
import ssl
import subprocess
import sys
import tempfile
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
import websockets
from playwright.sync_api import expect

from tests.support import servers
from tests.support.chromium import create_room, join_as_guest
from tests.support.turn import Coturn, substitute
from tests.test_settings_security import HTTPS_SETTINGS, example_env

# The shipped nginx and coturn files, as deployed: the database only sits behind them.
pytestmark = pytest.mark.deploy

DEPLOY = servers.ROOT / "deploy"
NGINX = shutil.which("nginx") or "/usr/sbin/nginx"


def self_signed_certificate(directory: Path) -> tuple[Path, Path]:
    """A certificate for 127.0.0.1 and localhost, made here: nothing to trust, nothing kept."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.datetime.now(datetime.UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name).issuer_name(name).public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName(
            [x509.IPAddress(ipaddress.ip_address("127.0.0.1")), x509.DNSName("localhost")]),
            critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = directory / "cert.pem", directory / "key.pem"
    cert_path.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption()))
    return cert_path, key_path


def rendered_site(upstream_ports: list[int], http_port: int, https_port: int,
                  cert: Path, key: Path, webroot: Path) -> str:
    return substitute((DEPLOY / "nginx/parley.conf").read_text(), "deploy/nginx/parley.conf", [
        ("    server 127.0.0.1:8001;\n    server 127.0.0.1:8002;\n",
         "".join(f"    server 127.0.0.1:{port};\n" for port in upstream_ports)),
        ("    listen [::]:80;\n", ""),
        ("    listen [::]:443 ssl http2;\n", ""),
        ("listen 80;", f"listen 127.0.0.1:{http_port};"),
        ("listen 443 ssl http2;", f"listen 127.0.0.1:{https_port} ssl http2;"),
        ("/etc/letsencrypt/live/parley.example.org/fullchain.pem", str(cert)),
        ("/etc/letsencrypt/live/parley.example.org/privkey.pem", str(key)),
        ("/var/www/letsencrypt", str(webroot)),
    ])


@dataclass
class Nginx:
    process: subprocess.Popen
    http_port: int
    https_port: int
    certificate: Path
    directory: Path

    @classmethod
    def start(cls, upstream_ports: list[int]) -> Nginx:
        """A non-daemon nginx whose http {} holds just the site, as Debian's nginx.conf does
        with sites-enabled; its logs and temporary files in a scratch directory."""
        directory = Path(tempfile.mkdtemp(prefix="nginx-", dir=servers.scratch_dir()))
        cert, key = self_signed_certificate(directory)
        (directory / "webroot/.well-known/acme-challenge").mkdir(parents=True)
        http_port, https_port = servers.free_port(), servers.free_port()
        (directory / "parley.conf").write_text(rendered_site(
            upstream_ports, http_port, https_port, cert, key, directory / "webroot"))
        temp_paths = "\n".join(f"    {kind}_temp_path {directory}/{kind};" for kind in
                               ("client_body", "proxy", "fastcgi", "uwsgi", "scgi"))
        # Root would otherwise hand the workers to "nobody", without access to this directory.
        user = "user root;\n" if os.geteuid() == 0 else ""
        (directory / "nginx.conf").write_text(
            f"{user}daemon off;\nworker_processes 1;\npid {directory}/nginx.pid;\n"
            f"error_log {directory}/error.log info;\nevents {{ worker_connections 256; }}\n"
            f"http {{\n    access_log {directory}/access.log;\n{temp_paths}\n"
            f"    include {directory}/parley.conf;\n}}\n")
        process = subprocess.Popen(
            [NGINX, "-p", str(directory), "-c", str(directory / "nginx.conf"),
             "-e", str(directory / "error.log")],
            stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
        server = cls(process, http_port, https_port, cert, directory)

        def listening() -> bool:
            if process.poll() is not None:
                raise RuntimeError(f"nginx exited:\n{server.log()}")
            return servers.port_open(https_port) and servers.port_open(http_port)

        servers.wait_until(listening, timeout=20, what="nginx")
        return server

    @property
    def base_url(self) -> str:
        return f"https://127.0.0.1:{self.https_port}"

    def log(self) -> str:
        return (self.directory / "error.log").read_text(errors="replace")

    def stop(self) -> None:
        servers.stop_process(self.process)


def unit_command(port: int) -> list[str]:
    """deploy/systemd/parley-daphne@.service's daphne command, on `port` for its 800%i.
    (Not the daphne_factory fixture: the unit's --proxy-headers is part of what is tested;
    room sockets take their scheme from it.)"""
    unit = (DEPLOY / "systemd/parley-daphne@.service").read_text()
    line = next(line for line in unit.splitlines() if line.startswith("ExecStart="))
    argv = shlex.split(line.removeprefix("ExecStart="))
    assert argv[0].endswith("/.venv/bin/daphne") and "--proxy-headers" in argv
    # Instances 1 and 2 are the upstreams of deploy/nginx/parley.conf (rendered_site).
    assert argv[argv.index("-b") + 1] == "127.0.0.1" and argv[argv.index("-p") + 1] == "800%i"
    argv[argv.index("-p") + 1] = str(port)
    return [sys.executable, "-m", "daphne", *argv[1:]]


@dataclass
class UnitDaphne:
    port: int
    process: subprocess.Popen
    log_path: Path

    @classmethod
    def start(cls, database_url: str, extra_env: dict[str, str]) -> UnitDaphne:
        """As servers.DaphneProcess starts one (same environment), with the unit's command."""
        port = servers.free_port()
        log_path = servers.log_file(f"daphne-unit-{port}-")
        env = {**os.environ, **servers.SERVER_ENV, "DATABASE_URL": database_url, "DEBUG": "0",
               "STATIC_ROOT": servers.collected_static(), "PYTHONUNBUFFERED": "1", **extra_env}
        with log_path.open("wb") as log:
            process = subprocess.Popen(unit_command(port), cwd=servers.ROOT, env=env,
                                       stdout=log, stderr=subprocess.STDOUT)
        server = cls(port, process, log_path)
        try:
            servers.wait_until(server.healthy, timeout=30, what=f"daphne on {port}")
        except TimeoutError:
            server.stop()
            raise RuntimeError(f"daphne did not start:\n{log_path.read_text()[-3000:]}") from None
        return server

    def healthy(self) -> bool:
        if self.process.poll() is not None:
            raise RuntimeError(f"daphne exited:\n{self.log_path.read_text()[-3000:]}")
        with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/healthz", timeout=2) as reply:
            return reply.status == 200

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def stop(self) -> None:
        servers.stop_process(self.process)


@dataclass
class Site:
    nginx: Nginx
    daphnes: list[UnitDaphne]


@pytest.fixture
def site(live_database, redis_server):
    """nginx over two daphne processes as the units run them, sharing Redis, with the
    documented production HTTPS settings."""
    if not os.path.exists(NGINX):
        pytest.fail("nginx is not installed: `make test` installs Debian's nginx")
    env = {name: value for name, value in example_env().items() if name in HTTPS_SETTINGS}
    env.update(REDIS_URL=redis_server.url)
    daphnes: list[UnitDaphne] = []
    nginx = None
    try:
        daphnes = [UnitDaphne.start(live_database.url, env) for _ in range(2)]
        nginx = Nginx.start([daphne.port for daphne in daphnes])
        yield Site(nginx, daphnes)
    finally:
        if nginx is not None:
            nginx.stop()
        for daphne in daphnes:
            daphne.stop()


def test_nginx_serves_https_with_production_settings_and_upgrades_sockets(site):
    """Plain HTTP is redirected; pages come over TLS with HSTS, secure cookies and the CSP;
    a minted key names wss:// on the page's own host and port, and that Realtime socket
    upgrades through nginx and answers the session events."""
    nginx = site.nginx
    plain = httpx.get(f"http://127.0.0.1:{nginx.http_port}/rooms/x/?a=1")
    assert plain.status_code == 301
    assert plain.headers["location"] == "https://127.0.0.1/rooms/x/?a=1"

    # Straight to daphne (not through the proxy) Django redirects too; /healthz is exempt.
    direct = f"http://127.0.0.1:{site.daphnes[0].port}"
    assert httpx.get(f"{direct}/").status_code == 301
    assert httpx.get(f"{direct}/healthz").status_code == 200

    trust = ssl.create_default_context(cafile=str(nginx.certificate))
    with httpx.Client(base_url=nginx.base_url, verify=trust) as client:
        lobby = client.get("/")
        assert lobby.status_code == 200
        assert lobby.headers["strict-transport-security"] == (
            "max-age=31536000; includeSubDomains; preload")
        policy = lobby.headers["content-security-policy"]
        assert f"connect-src 'self' wss://127.0.0.1:{nginx.https_port};" in policy
        assert "unsafe-inline" not in policy
        assert "secure" in lobby.headers["set-cookie"].lower()  # the CSRF cookie

        room = client.post("/rooms/", data={"name": "Behind nginx",
                                            "csrfmiddlewaretoken": client.cookies["csrftoken"]},
                           headers={"Referer": f"{nginx.base_url}/"})
        assert room.status_code == 302, room.text[:300]
        room_path = room.headers["location"]
        joined = client.post(f"{room_path}join/", data={
            "name": "Robot", "next": room_path,
            "csrfmiddlewaretoken": client.cookies["csrftoken"]},
            headers={"Referer": f"{nginx.base_url}{room_path}"})
        assert joined.status_code == 302, joined.text[:300]
        slug = room_path.strip("/").split("/")[-1]
        minted = client.post("/api/transcription-session", json={"room": slug},
                             headers={"X-CSRFToken": client.cookies["csrftoken"],
                                      "Origin": nginx.base_url})
        assert minted.status_code == 200, minted.text[:300]
        key = minted.json()
        assert key["websocket_url"] == (
            f"wss://127.0.0.1:{nginx.https_port}/v1/realtime?intent=transcription")
        assert key["calls_url"].startswith(f"https://127.0.0.1:{nginx.https_port}/")

    async def session_events() -> list[str]:
        async with websockets.connect(
                key["websocket_url"], ssl=trust,
                subprotocols=["realtime", f"openai-insecure-api-key.{key['value']}"]) as socket:
            created = json.loads(await asyncio.wait_for(socket.recv(), 10))
            await socket.send(json.dumps({"type": "session.update",
                                          "session": {"type": "transcription"}}))
            updated = json.loads(await asyncio.wait_for(socket.recv(), 10))
            return [created["type"], updated["type"]]

    assert asyncio.run(session_events()) == ["session.created", "session.updated"]


def secure_participant(browser, site: Site):
    """A person's browser context on the site; the test's own certificate is not trusted."""
    context = browser.new_context(base_url=site.nginx.base_url, ignore_https_errors=True,
                                  permissions=["camera", "microphone"])
    # Every document reports policy violations to the console, where the test collects them.
    context.add_init_script("document.addEventListener('securitypolicyviolation', (e) =>"
                            " console.error(`CSP violation: ${e.violatedDirective}"
                            " ${e.blockedURI}`));")
    return context


@pytest.mark.browser
@pytest.mark.transcription
def test_two_people_chat_and_caption_over_https_through_nginx(
        chromium_browser, speaking_browser, site):
    """Two pages chat through nginx (and keep chatting when one daphne stops: nginx sends
    the reconnecting sockets to the other); the captions page mints a wss:// key, streams the
    speaker's microphone through it and the listener sees the words. No page breaks the CSP."""
    violations: list[str] = []
    bob_context = secure_participant(chromium_browser, site)
    ann_context = secure_participant(speaking_browser, site)
    try:
        bob = bob_context.new_page()
        ann = ann_context.new_page()
        sockets: list[str] = []
        for page in (bob, ann):
            page.on("console", lambda message: violations.append(message.text)
                    if "Content Security Policy" in message.text
                    or message.text.startswith("CSP violation") else None)
            page.on("websocket", lambda socket: sockets.append(socket.url))
        room_path = create_room(bob, "TLS room")
        join_as_guest(bob, room_path, "Bob")
        join_as_guest(ann, room_path, "Ann")
        expect_live(bob, ann)
        exchange(bob, ann, "over TLS")
        assert all(url.startswith(f"wss://127.0.0.1:{site.nginx.https_port}/ws/")
                   for url in sockets), sockets

        # Stop a process that holds a room socket: its pages reconnect through nginx to the
        # other one and resume.
        serving = next(daphne for daphne in site.daphnes if "WSCONNECT /ws/rooms/" in daphne.log())
        serving.stop()
        expect_live(bob, ann, timeout=20_000)
        exchange(ann, bob, "after a restart")

        ann.goto(f"{room_path}captions/")
        expect_live(ann)
        with ann.expect_response("**/api/transcription-session") as minted:
            ann.click("#mic")
        key = minted.value.json()
        assert key["websocket_url"].startswith(
            f"wss://127.0.0.1:{site.nginx.https_port}/v1/realtime"), key
        lines = bob.locator("#captions [data-captions-transcript] li")
        expect(lines.first.locator(".author")).to_have_text("Ann", timeout=45_000)
        assert any(url.startswith("wss://") and "/v1/realtime" in url for url in sockets)
        ann.click("#mic")
    finally:
        ann_context.close()
        bob_context.close()
    assert violations == []


def expect_live(*pages, timeout: float = 5_000) -> None:
    for page in pages:
        expect(page.locator("#status")).to_have_attribute("data-state", "live", timeout=timeout)


def exchange(sender, receiver, text: str) -> None:
    sender.fill("#send-text", text)
    sender.press("#send-text", "Enter")
    expect(receiver.locator("#messages li.message .text").last).to_have_text(text)


def own_private_address() -> str | None:
    """This machine's address towards the outside if it is a private or reserved one (what a
    TURN relay must not reach), else None."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        try:
            probe.connect(("192.0.2.1", 9))  # picks the route; sends nothing
        except OSError:
            return None
        address = probe.getsockname()[0]
    parsed = ipaddress.ip_address(address)
    return address if parsed.is_private and not parsed.is_loopback else None


def test_coturn_takes_parleys_credentials_and_no_others(tmp_path):
    """The shipped turnserver.conf grants an allocation to credentials minted as Parley mints
    them (signaling/ice.py) and refuses a wrong password; it never relays to loopback."""
    from aioice import stun

    coturn = Coturn.start(tmp_path)
    try:
        with pytest.raises(stun.TransactionFailed):
            coturn.relays_to("127.0.0.1", password="not-the-credential")
        assert coturn.relays_to("127.0.0.1") is False
    finally:
        coturn.stop()


def test_coturn_relays_to_a_private_address_only_where_allowed(tmp_path):
    """The private and reserved networks are denied; allowed-peer-ip (docs/deployment.md, for
    an SFU worker on a private network) opens exactly the address it names."""
    address = own_private_address()
    if address is None:
        pytest.skip("this machine has no private address to relay to")
    coturn = Coturn.start(tmp_path)
    try:
        assert coturn.relays_to(address) is False
    finally:
        coturn.stop()
    coturn = Coturn.start(tmp_path, extra=f"allowed-peer-ip={address}\n")
    try:
        assert coturn.relays_to(address) is True
    finally:
        coturn.stop()
