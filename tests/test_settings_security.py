"""Settings that keep a deployment closed: the secret key, HTTPS behind a proxy, the
Content-Security-Policy, and pages that render before collectstatic (issue #10, 3, 6, 11)."""

from __future__ import annotations

import json
import os
import secrets
import shlex
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from project.settings import DEVELOPMENT_SECRET_KEY
from tests.support import servers

ENV_EXAMPLE = servers.ROOT / "deploy/parley.env.example"
# The settings of the example that make HTTPS behind nginx work; tests/test_deploy_nginx.py
# gives them to its daphne processes.
HTTPS_SETTINGS = {
    "PARLEY_BEHIND_PROXY", "SECURE_SSL_REDIRECT", "SESSION_COOKIE_SECURE", "CSRF_COOKIE_SECURE",
    "SECURE_HSTS_SECONDS", "SECURE_HSTS_INCLUDE_SUBDOMAINS", "SECURE_HSTS_PRELOAD",
}


def example_env() -> dict[str, str]:
    """deploy/parley.env.example as systemd's EnvironmentFile= reads it (comments, one
    assignment a line, shell-style quotes)."""
    env = {}
    for line in ENV_EXAMPLE.read_text().splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            name, value = line.split("=", 1)
            words = shlex.split(value)
            assert len(words) == 1, f"quote the value of {name} in {ENV_EXAMPLE.name}"
            env[name.strip()] = words[0]
    return env


def manage(data_dir: Path, *args: str, **env: str) -> subprocess.CompletedProcess:
    """A manage.py command with only the given settings in its environment (none of the test
    run's, whose SECRET_KEY is the test key)."""
    return subprocess.run(
        [sys.executable, "manage.py", *args], cwd=servers.ROOT, capture_output=True, text=True,
        timeout=120, env={"PATH": os.environ["PATH"], "DJANGO_SETTINGS_MODULE": "project.settings",
                          "PARLEY_DATA_DIR": str(data_dir), **env})


def test_production_refuses_to_start_without_a_secret_key(tmp_path):
    """daphne with DEBUG=0 and no SECRET_KEY exits at once, telling the operator what to set."""
    result = subprocess.run(
        [sys.executable, "-m", "daphne", "-b", "127.0.0.1", "-p", str(servers.free_port()),
         "project.asgi:application"],
        cwd=servers.ROOT, capture_output=True, text=True, timeout=60,
        env={"PATH": os.environ["PATH"], "DEBUG": "0", "PARLEY_DATA_DIR": str(tmp_path)})
    assert result.returncode != 0
    assert "ImproperlyConfigured: SECRET_KEY is not set. Set SECRET_KEY to a long random" \
        in result.stderr


@pytest.mark.parametrize("env", [
    pytest.param({"DEBUG": "1"}, id="debug-without-key"),
    pytest.param({"SECRET_KEY": DEVELOPMENT_SECRET_KEY}, id="key-set-to-it"),
])
def test_check_deploy_flags_the_development_key(tmp_path, env):
    result = manage(tmp_path, "check", "--deploy", **env)
    assert result.returncode != 0
    assert "(parley.E001) SECRET_KEY is Parley's built-in development key" in result.stderr


def test_check_deploy_is_clean_in_the_documented_production_configuration(tmp_path):
    """deploy/parley.env.example with a real key: not one warning from `check --deploy`."""
    env = {**example_env(), "SECRET_KEY": secrets.token_urlsafe(50),
           "TURN_SECRET": secrets.token_urlsafe(30),
           "STATIC_ROOT": str(tmp_path / "static")}
    env.pop("PARLEY_DATA_DIR")  # a scratch directory instead of /var/lib/parley
    result = manage(tmp_path, "check", "--deploy", "--fail-level", "WARNING", **env)
    assert result.returncode == 0, result.stderr
    assert "System check identified no issues (0 silenced)." in result.stdout


def test_the_demo_generates_its_key_once_and_keeps_it_private(tmp_path):
    """`make run` (PARLEY_DEMO=1) needs no key: one is generated into the data directory,
    readable by its owner only, reused on the next start, and not flagged by the check."""
    show_key = ["shell", "-v", "0", "-c",
                "from django.conf import settings; print(settings.SECRET_KEY)"]
    first = manage(tmp_path, *show_key, PARLEY_DEMO="1")
    second = manage(tmp_path, *show_key, PARLEY_DEMO="1")
    assert first.returncode == 0, first.stderr
    key = first.stdout.strip()
    assert second.stdout.strip() == key
    assert len(key) >= 50 and key != DEVELOPMENT_SECRET_KEY
    key_file = tmp_path / "secret_key"
    assert key_file.read_text().strip() == key
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    assert "parley.E001" not in manage(tmp_path, "check", "--deploy", PARLEY_DEMO="1").stderr


def directives(response) -> dict[str, list[str]]:
    policy = response.headers["Content-Security-Policy"]
    return {name: sources for name, *sources in
            (part.split() for part in policy.split(";") if part.strip())}


@pytest.mark.django_db
def test_pages_and_static_files_carry_a_same_origin_policy(client):
    policy = directives(client.get("/"))
    assert policy["default-src"] == ["'self'"]
    assert policy["connect-src"] == ["'self'", "ws://testserver"]
    assert policy["frame-ancestors"] == ["'none'"]
    assert policy["object-src"] == ["'none'"]
    assert not any("unsafe" in source for sources in policy.values() for source in sources)
    assert directives(client.get("/static/parley/parley.css"))["default-src"] == ["'self'"]
    assert directives(client.get("/", secure=True))["connect-src"] == [
        "'self'", "wss://testserver"]


@pytest.mark.django_db
def test_openai_origins_are_allowed_only_while_openai_transcribes(client, settings):
    settings.OPENAI_API_KEY = "sk-test"
    assert directives(client.get("/", secure=True))["connect-src"] == [
        "'self'", "wss://testserver", "https://api.openai.com", "wss://api.openai.com"]
    settings.TRANSCRIPTION = {**settings.TRANSCRIPTION, "ENGINE": "offline"}
    assert directives(client.get("/"))["connect-src"] == ["'self'", "ws://testserver"]


def mint(client, forwarded_proto: str) -> dict:
    from rooms.models import Room

    room = Room.objects.create(name="Proxy", slug="proxy")
    page = client.get(f"/rooms/{room.slug}/")
    assert page.status_code == 200
    joined = client.post(f"/rooms/{room.slug}/join/", {"name": "Ann"})
    assert joined.status_code == 302
    # As nginx forwards it: the browser's Host, and the scheme it used.
    reply = client.post("/api/transcription-session", json.dumps({"room": room.slug}),
                        content_type="application/json", HTTP_HOST="testserver",
                        HTTP_X_FORWARDED_PROTO=forwarded_proto)
    assert reply.status_code == 200, reply.content
    return reply.json()


@pytest.mark.django_db
def test_behind_a_tls_proxy_minted_urls_are_wss(client, settings):
    """PARLEY_BEHIND_PROXY=1 (SECURE_PROXY_SSL_HEADER) makes an https page's key wss://."""
    settings.SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
    key = mint(client, "https")
    assert key["websocket_url"] == "wss://testserver/v1/realtime?intent=transcription"
    assert key["calls_url"] == "https://testserver/v1/realtime/calls"


@pytest.mark.django_db
def test_without_the_proxy_setting_a_client_cannot_claim_https(client):
    assert mint(client, "https")["websocket_url"].startswith("ws://testserver/")


def test_pages_render_before_collectstatic(client, settings, tmp_path):
    """DEBUG=0 with no manifest (a fresh checkout, `manage.py runserver`-style starts): pages
    link the plain static names, which whitenoise serves, instead of failing with a 500."""
    settings.STORAGES = {**settings.STORAGES,
                         "staticfiles": {"BACKEND": "project.storage.StaticStorage"}}
    settings.STATIC_ROOT = tmp_path
    page = client.get("/accounts/login/")
    assert page.status_code == 200
    assert 'href="/static/parley/parley.css"' in page.content.decode()
    assert client.get("/static/parley/parley.css").status_code == 200


def test_the_manifest_is_used_where_it_has_the_file(settings, tmp_path):
    from django.contrib.staticfiles.storage import staticfiles_storage

    settings.STORAGES = {**settings.STORAGES,
                         "staticfiles": {"BACKEND": "project.storage.StaticStorage"}}
    settings.STATIC_ROOT = tmp_path
    (tmp_path / "staticfiles.json").write_text(json.dumps(
        {"version": "1.1", "hash": "0", "paths": {"parley/parley.css": "parley/parley.1.css"}}))
    assert staticfiles_storage.url("parley/parley.css") == "/static/parley/parley.1.css"
    assert staticfiles_storage.url("parley/room-page.js") == "/static/parley/room-page.js"
