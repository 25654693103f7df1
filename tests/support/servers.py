"""Real servers for tests and benchmarks: redis-server, daphne, a migrated database.

Readiness is polled (connect until it answers, with a deadline); nothing waits a fixed time.
"""

from __future__ import annotations

import atexit
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

ROOT = Path(__file__).resolve().parents[2]

# Server subprocesses run the production settings, which refuse to start without a
# SECRET_KEY; this one is for tests only (tests/settings.py gives it to pytest's process).
TEST_SECRET_KEY = "parley-tests-only-key-0c4e9b7d2f1a6e3c8b5d0a9f7e2c4b6d1a3f5e7c9b0d2f4a"
SERVER_ENV = {"DJANGO_SETTINGS_MODULE": "project.settings", "SECRET_KEY": TEST_SECRET_KEY}


@cache
def scratch_dir() -> Path:
    """One directory for this run's server logs and collected static files, removed at exit
    (kept when PARLEY_KEEP_TEST_LOGS is set, to read a failed run's server logs)."""
    path = Path(tempfile.mkdtemp(prefix="parley-run-"))
    if not os.environ.get("PARLEY_KEEP_TEST_LOGS"):
        atexit.register(shutil.rmtree, path, ignore_errors=True)
    return path


def log_file(prefix: str) -> Path:
    return Path(tempfile.mkstemp(prefix=prefix, suffix=".log", dir=scratch_dir())[1])


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_until(check, *, timeout: float, what: str, interval: float = 0.05) -> None:
    """Poll `check()` until it returns true; raise with `what` after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    last_error: Exception | None = None
    while time.monotonic() < deadline:
        try:
            if check():
                return
        except OSError as error:  # not ready yet
            last_error = error
        time.sleep(interval)
    raise TimeoutError(f"{what} not ready after {timeout}s (last error: {last_error})")


def stop_process(process: subprocess.Popen) -> None:
    """Terminate, and kill if it has not exited within 10 s."""
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(5)


def port_open(port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(0.5)
        return sock.connect_ex(("127.0.0.1", port)) == 0


@dataclass
class RedisServer:
    """A redis-server of our own (restartable on the same port), or the one REDIS_URL names."""

    port: int
    url: str
    owned: bool
    process: subprocess.Popen | None = None

    @classmethod
    def from_env_or_new(cls) -> RedisServer:
        if os.environ.get("REDIS_URL"):
            url = os.environ["REDIS_URL"]
            return cls(port=urlsplit(url).port or 6379, url=url, owned=False)
        return cls.new()

    @classmethod
    def new(cls) -> RedisServer:
        """A fresh redis-server of our own (tests that stop and restart it need one)."""
        port = free_port()
        server = cls(port=port, url=f"redis://127.0.0.1:{port}/0", owned=True)
        server.start()
        return server

    def start(self) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            raise RuntimeError("redis-server is not installed: run `make test`")
        self.process = subprocess.Popen(
            [binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "no", "--protected-mode", "no"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        wait_until(self._pong, timeout=10, what="redis-server")

    def _pong(self) -> bool:
        with socket.create_connection(("127.0.0.1", self.port), timeout=0.5) as sock:
            sock.sendall(b"PING\r\n")
            return sock.recv(16).startswith(b"+PONG")

    def stop(self) -> None:
        if self.process is not None:
            self.process.terminate()
            self.process.wait(10)
            self.process = None

    def restart(self) -> None:
        if not self.owned:
            raise RuntimeError("cannot restart a Redis server this test session did not start")
        self.stop()
        self.start()


@dataclass
class LiveDatabase:
    """A database for server subprocesses: PostgreSQL when DATABASE_URL says so, else SQLite."""

    url: str
    admin_url: str | None
    name: str | None
    tmpdir: str | None

    @classmethod
    def create(cls) -> LiveDatabase:
        base = os.environ.get("DATABASE_URL", "")
        if base.startswith(("postgres://", "postgresql://")):
            name = f"parley_live_{uuid.uuid4().hex[:10]}"
            cls._admin(base, f'CREATE DATABASE "{name}"')
            parts = urlsplit(base)
            database = cls(urlunsplit(parts._replace(path=f"/{name}")), base, name, None)
        else:
            tmpdir = tempfile.mkdtemp(prefix="parley-live-")
            database = cls(f"sqlite:///{tmpdir}/live.sqlite3", None, None, tmpdir)
        subprocess.run(
            [sys.executable, "manage.py", "migrate", "--noinput", "-v0"],
            cwd=ROOT, env={**os.environ, **SERVER_ENV, "DATABASE_URL": database.url}, check=True,
        )
        return database

    @staticmethod
    def _admin(url: str, statement: str) -> None:
        import psycopg

        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute(statement)

    def drop(self) -> None:
        if self.name:
            self._admin(self.admin_url, f'DROP DATABASE IF EXISTS "{self.name}" WITH (FORCE)')
        if self.tmpdir:
            shutil.rmtree(self.tmpdir, ignore_errors=True)


@cache
def collected_static() -> str:
    """Run collectstatic once per test session, so servers serve hashed files as in production."""
    root = tempfile.mkdtemp(prefix="static-", dir=scratch_dir())
    subprocess.run(
        [sys.executable, "manage.py", "collectstatic", "--noinput", "-v0"],
        cwd=ROOT, env={**os.environ, **SERVER_ENV, "STATIC_ROOT": root}, check=True,
    )
    return root


@dataclass
class DaphneProcess:
    """`daphne project.asgi:application` on a free loopback port."""

    port: int
    process: subprocess.Popen
    log_path: Path

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @classmethod
    def start(cls, database_url: str, extra_env: dict[str, str]) -> DaphneProcess:
        port = free_port()
        log_path = log_file(f"daphne-{port}-")
        env = {
            **os.environ,
            **SERVER_ENV,
            "DATABASE_URL": database_url,
            "DEBUG": "0",
            "STATIC_ROOT": collected_static(),
            "PYTHONUNBUFFERED": "1",
            **extra_env,
        }
        if "REDIS_URL" not in extra_env:
            env.pop("REDIS_URL", None)
        with log_path.open("wb") as log:
            process = subprocess.Popen(
                [sys.executable, "-m", "daphne", "-b", "127.0.0.1", "-p", str(port),
                 "project.asgi:application"],
                cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT,
            )
        server = cls(port, process, log_path)
        try:
            wait_until(server._healthy, timeout=30, what=f"daphne on {port}")
        except TimeoutError:
            server.stop()
            raise RuntimeError(f"daphne did not start:\n{log_path.read_text()[-3000:]}") from None
        return server

    def _healthy(self) -> bool:
        if self.process.poll() is not None:
            raise RuntimeError(f"daphne exited with {self.process.returncode}")
        import urllib.request

        with urllib.request.urlopen(f"{self.base_url}/healthz", timeout=2) as reply:
            return reply.status == 200

    def stop(self) -> None:
        stop_process(self.process)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")


@dataclass
class SfuWorkerProcess:
    """`python manage.py sfu` against a Redis; ready once it reports in to the directory."""

    process: subprocess.Popen
    log_path: Path

    @classmethod
    def start(cls, database_url: str, redis_url: str, extra_env: dict | None = None):
        log_path = log_file("sfu-worker-")
        env = {**os.environ, **SERVER_ENV, "DATABASE_URL": database_url, "REDIS_URL": redis_url,
               "PYTHONUNBUFFERED": "1", **(extra_env or {})}
        with log_path.open("wb") as log:
            process = subprocess.Popen(
                [sys.executable, "manage.py", "sfu"], cwd=ROOT, env=env,
                stdout=log, stderr=subprocess.STDOUT,
            )
        worker = cls(process, log_path)
        wait_until(worker._serving, timeout=30, what="SFU worker")
        return worker

    def _serving(self) -> bool:
        if self.process.poll() is not None:
            raise RuntimeError(f"SFU worker exited:\n{self.log_path.read_text()[-2000:]}")
        return "serving on" in self.log_path.read_text(errors="replace")

    def kill(self) -> None:
        """Die without cleaning up, as a crashed worker does."""
        self.process.kill()
        self.process.wait(10)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.kill()
