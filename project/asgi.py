"""ASGI entry point served by daphne: HTTP to Django, WebSockets through Channels.

Room sockets pass the Origin check (exactly our own origin: rooms/origin.py); `/v1/` API
sockets are key-authenticated. All carry the Django session and user.

Shutdown: daphne has no ASGI lifespan, so a Twisted "before shutdown" trigger closes the
process's WebRTC connections (the in-process SFU worker, `/v1/realtime/calls`) before the
loop stops; see close_media. HTTP requests still running (the caption feed's streams) end as
if their clients had hung up; see http.
"""

import asyncio
import gc
import logging
import os
import sys

from django.core.asgi import get_asgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "project.settings")
django_asgi_app = get_asgi_application()

from channels.auth import AuthMiddlewareStack  # noqa: E402
from channels.routing import ProtocolTypeRouter, URLRouter  # noqa: E402
from django.conf import settings  # noqa: E402

import rooms.routing  # noqa: E402
import signaling.routing  # noqa: E402
import signaling.sfu.routing  # noqa: E402
import transcription.routing  # noqa: E402
from project import transport  # noqa: E402
from rooms.consumers import PREBUILT_FRAMES  # noqa: E402
from rooms.origin import SameOriginValidator  # noqa: E402

transport.install(settings.PARLEY["MAX_OUTBOUND_BYTES"])

# The event loop shares the GIL with the chat writer thread (rooms/writer.py), which drops it
# for every database call and must get it back after each: by default a thread waits up to
# 5 ms for it while the loop runs (a room's flush, a burst of frames), so one batch of
# messages waited several such intervals before it was stored and broadcast: a tail of the
# 2-process p99 in bench/chat_fanout.py (issue #13). 0.5 ms bounds each wait.
GIL_SWITCH_INTERVAL_SECONDS = 0.0005
sys.setswitchinterval(GIL_SWITCH_INTERVAL_SECONDS)

websocket_urlpatterns = [
    *rooms.routing.websocket_urlpatterns,
    *signaling.routing.websocket_urlpatterns,
    *signaling.sfu.routing.websocket_urlpatterns,
    *transcription.routing.room_websocket_urlpatterns,
]

room_sockets = SameOriginValidator(AuthMiddlewareStack(URLRouter(websocket_urlpatterns)))
api_sockets = AuthMiddlewareStack(URLRouter(transcription.routing.websocket_urlpatterns))


async def websockets(scope, receive, send):
    """`/v1/...` sockets authenticate by key (no Origin from API clients); all others must
    come from our own pages. Under daphne, room sockets may write room broadcasts as
    prebuilt frames (rooms.consumers.PREBUILT_FRAMES)."""
    write = transport.prebuilt_frame_writer(send)
    if write is not None:
        scope = {**scope, "extensions": {**(scope.get("extensions") or {}),
                                         PREBUILT_FRAMES: {"write": write}}}
    app = api_sockets if scope["path"].startswith("/v1/") else room_sockets
    return await app(scope, receive, send)


# Running HTTP requests (to Django), each with the event that ends it as a hang-up would.
_http_requests: dict[asyncio.Task, asyncio.Event] = {}


async def http(scope, receive, send):
    """Django's HTTP handler, which a server stop ends as a client's disconnect does.

    A streaming response (the caption feed) runs until its client goes. At a stop, daphne
    cancels every application instance, but its loop raises (KeyError) at a request that
    finished on a still-open connection and cancels none after it; and Django's handler,
    when it is cancelled, leaves its response and disconnect tasks running without an owner.
    Either way the response's cleanup never ran and the interpreter crashed (SIGSEGV)
    collecting the tasks at exit. So a cancel, or end_http_requests() at shutdown, becomes an
    `http.disconnect`, which Django answers by cancelling the response itself."""
    stopping = asyncio.Event()

    async def receive_until_stopped():
        message = asyncio.ensure_future(receive())
        stopped = asyncio.ensure_future(stopping.wait())
        try:
            await asyncio.wait({message, stopped}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in (message, stopped):
                task.cancel()
        if message.done() and not message.cancelled():
            return message.result()
        return {"type": "http.disconnect"}

    request = asyncio.ensure_future(django_asgi_app(scope, receive_until_stopped, send))
    _http_requests[request] = stopping
    request.add_done_callback(lambda done: _http_requests.pop(done, None))
    try:
        await asyncio.shield(request)
    except asyncio.CancelledError:
        stopping.set()
        await request
        raise


async def end_http_requests() -> None:
    """End every running HTTP request as if its client had hung up, and wait (bounded)."""
    from signaling.sfu.worker import STOP_GRACE_SECONDS

    for stopping in _http_requests.values():
        stopping.set()
    if _http_requests:
        _done, pending = await asyncio.wait(list(_http_requests), timeout=STOP_GRACE_SECONDS)
        if pending:
            logging.getLogger(__name__).warning("%s HTTP requests still running after %s s; "
                                                "stopping anyway", len(pending),
                                                STOP_GRACE_SECONDS)


application = ProtocolTypeRouter({"http": http, "websocket": websockets})


async def close_media() -> None:
    """Close every peer connection, engine stream and task of the in-process SFU worker and
    of the live `/v1/realtime/calls`. aiortc's decoder threads are not daemons and end only
    when their connection closes: with one open, Python's exit waits for them forever (daphne
    stopped listening on SIGTERM and never ended, holding the offline decoder processes its
    atexit handler would have stopped)."""
    from signaling.sfu.worker import STOP_GRACE_SECONDS, stop_local_workers
    from transcription.calls import CALLS

    try:
        await stop_local_workers()
    except Exception:
        logging.getLogger(__name__).exception("stopping the in-process SFU worker failed")
    ends = [call.end() for call in list(CALLS.values())]
    try:
        async with asyncio.timeout(STOP_GRACE_SECONDS):
            await asyncio.gather(*ends, return_exceptions=True)
    except TimeoutError:
        logging.getLogger(__name__).warning("realtime calls still closing after %s s; "
                                            "stopping anyway", STOP_GRACE_SECONDS)


def close_media_on_daphne_shutdown() -> None:
    """Run close_media and end_http_requests when daphne's Twisted reactor shuts down
    (SIGTERM, SIGINT), alongside daphne's own cancelling of the application instances; the
    reactor waits for all of them."""
    reactor = sys.modules.get("twisted.internet.reactor")
    if reactor is None:
        return  # not served by daphne
    from twisted.internet.defer import Deferred

    for stop in (close_media, end_http_requests):
        reactor.addSystemEventTrigger(
            "before", "shutdown",
            lambda stop=stop: Deferred.fromFuture(asyncio.ensure_future(stop())))


close_media_on_daphne_shutdown()


def freeze_startup_objects() -> None:
    """Move every object alive now out of the garbage collector's reach (gc.freeze): the
    modules, classes and settings of a started process, which live as long as it does. A
    full collection walked all of them (about 180,000) and stopped the event loop for
    70-150 ms a few times a minute under chat load, every socket of the process waiting:
    a tail of bench/chat_fanout.py's p99 (issue #13). Later full collections walk only what
    was made since, a few ms. An object alive at a freeze is never collected if it becomes
    cyclic garbage later, so this runs only at startup."""
    gc.collect()
    gc.freeze()


def freeze_after_startup() -> None:
    """Import what the first requests would (every view, through the URL patterns), then
    freeze; under daphne once more when its reactor starts, after daphne's own imports and
    before the first connection."""
    from django.urls import get_resolver

    import rooms.redis  # noqa: F401  (the Redis client the fan-out and presence load lazily)

    get_resolver().url_patterns  # noqa: B018  (imports every view)
    freeze_startup_objects()
    reactor = sys.modules.get("twisted.internet.reactor")
    if reactor is not None:
        reactor.callWhenRunning(freeze_startup_objects)


freeze_after_startup()
