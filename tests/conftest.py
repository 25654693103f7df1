"""Shared fixtures: sessions for socket tests, a real redis-server, real daphne processes."""

from __future__ import annotations

import pytest

from tests.support import servers


def pytest_collection_modifyitems(config, items):
    """Browser tests last: Playwright's sync API keeps an event loop running in the main
    thread for the rest of the session, which async tests cannot share."""
    items.sort(key=lambda item: item.get_closest_marker("browser") is not None)


@pytest.fixture(autouse=True)
def plain_static_storage(settings):
    """In-process tests render pages without a collectstatic manifest."""
    settings.STORAGES = {
        **settings.STORAGES,
        "staticfiles": {"BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"},
    }


@pytest.fixture(autouse=True)
def fresh_presence():
    """Each test starts with an empty in-process presence store."""
    import rooms.presence

    rooms.presence._store = None
    yield
    rooms.presence._store = None


@pytest.fixture(autouse=True)
def fresh_session_slots():
    """Each test starts with no transcription session slots held (a test that ends with a
    socket still open leaves its slot behind when its event loop is closed under it)."""
    from transcription import slots

    slots._held.clear()
    yield
    slots._held.clear()


@pytest.fixture(autouse=True)
def fresh_rate_counts():
    """HTTP rate limits count in the per-process cache: each test starts from zero."""
    from django.core.cache import cache

    cache.clear()
    yield
    cache.clear()


@pytest.fixture(scope="session")
def redis_server():
    """A real redis-server on a free port (or the one REDIS_URL names), for the session."""
    server = servers.RedisServer.from_env_or_new()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def live_database():
    """A migrated database for daphne subprocesses, separate from pytest-django's."""
    database = servers.LiveDatabase.create()
    yield database
    database.drop()


@pytest.fixture
def daphne_factory(live_database):
    """Start daphne processes serving Parley; all are stopped after the test."""
    started: list[servers.DaphneProcess] = []

    def start(**env) -> servers.DaphneProcess:
        process = servers.DaphneProcess.start(live_database.url, env)
        started.append(process)
        return process

    yield start
    for process in started:
        process.stop()


@pytest.fixture(scope="session")
def chromium_browser():
    """One headless Chromium for the whole session; tests open a context per participant."""
    from playwright.sync_api import sync_playwright

    from tests.support.chromium import launch

    with sync_playwright() as playwright:
        browser = launch(playwright)
        yield browser
        browser.close()


@pytest.fixture
def sfu_worker_factory(live_database, redis_server):
    """Start `manage.py sfu` worker processes on the test Redis; stopped after the test."""
    started: list[servers.SfuWorkerProcess] = []

    def start() -> servers.SfuWorkerProcess:
        worker = servers.SfuWorkerProcess.start(live_database.url, redis_server.url)
        started.append(worker)
        return worker

    yield start
    for worker in started:
        worker.stop()



@pytest.fixture
def speaking_browser(chromium_browser):
    """A second Chromium whose fake microphone plays CAPTION_SENTENCES once per capture."""
    from tests.support.chromium import launch_with
    from tests.support.speech import CAPTION_SENTENCES, speech_wav

    wav = speech_wav(CAPTION_SENTENCES, servers.scratch_dir() / "captions-speech.wav")
    browser = launch_with(chromium_browser.browser_type,
                          [f"--use-file-for-fake-audio-capture={wav}%noloop"])
    yield browser
    browser.close()
