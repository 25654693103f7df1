"""Offline decoding in worker processes (OFFLINE_PROCESSES), never on the event loop.

Each DecoderProcess is a child process with one loaded Whisper model, hosting the streams of
many speakers; a speaker stays on one child for its whole stream. The child handles one
request at a time, so its model is never used by two speakers at once, and it skips partial
decodes while more requests wait in its pipe (load shedding: partials go first). The parent
talks to a child over a pipe, with one thread sending and one receiving, so the event loop
never blocks on the pipe.

Order: a child sends a request's events before the request's completion, and the receiving
thread hands both to the event loop in that order, so a caller that awaited a request has
already been handed its events.
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import itertools
import logging
import multiprocessing
import multiprocessing.util  # its exit handler (killing children) must run after ours
import os
import queue
import threading
from collections.abc import Callable

log = logging.getLogger(__name__)


STOP_WAIT_SECONDS = 1.0


class DecoderProcessDied(RuntimeError):
    pass


def serve(conn, config) -> None:
    """The child's main loop: requests in, events and completions out, until the pipe ends.
    Then the child exits at once: the interpreter's own shutdown (the model's and
    onnxruntime's teardown) took seconds, which every daphne stop waited for."""
    from .offline import SpeakerStream

    streams = {}
    while True:
        try:
            operation, stream_id, request, arguments = conn.recv()
        except (EOFError, OSError):
            os._exit(0)  # nothing to flush: every reply went out before the pipe ended
        try:
            if operation == "open":
                streams[stream_id] = SpeakerStream(
                    lambda event, key=stream_id: conn.send(("event", key, event)), config,
                    busy=conn.poll, hints=arguments[0] if arguments else "")
            elif operation in ("feed", "hint", "commit", "clear"):
                getattr(streams[stream_id], operation)(*(arguments or ()))
            elif operation == "close":
                streams.pop(stream_id).finish()
            conn.send(("done", request, None))
        except Exception as error:  # reported to the caller, the child goes on
            conn.send(("done", request, f"{type(error).__name__}: {error}"))


class DecoderProcess:
    """One child process and the two threads that talk to it."""

    _requests = itertools.count(1)

    def __init__(self, config):
        context = multiprocessing.get_context("spawn")  # never fork a threaded server
        self.conn, child_end = context.Pipe()
        self.process = context.Process(target=serve, args=(child_end, config), daemon=True,
                                       name="parley-stt")
        self.process.start()
        child_end.close()
        self.outbox: queue.Queue = queue.Queue()
        self.pending: dict[int, tuple[asyncio.AbstractEventLoop, asyncio.Future]] = {}
        self.sinks: dict[str, tuple[asyncio.AbstractEventLoop, Callable[[dict], None]]] = {}
        self.alive = True
        threading.Thread(target=self._send, name="stt-send", daemon=True).start()
        threading.Thread(target=self._receive, name="stt-receive", daemon=True).start()

    @property
    def load(self) -> int:
        return len(self.sinks)

    async def request(self, operation: str, stream_id: str, arguments: tuple = ()) -> None:
        if not self.alive:
            raise DecoderProcessDied("the decoder process has exited")
        loop = asyncio.get_running_loop()
        future = loop.create_future()
        request = next(self._requests)
        self.pending[request] = (loop, future)
        self.outbox.put((operation, stream_id, request, arguments))
        error = await future
        if error:
            raise DecoderProcessDied(error) if not self.alive else RuntimeError(error)

    def _send(self) -> None:
        while True:
            message = self.outbox.get()
            if message is None:
                return
            try:
                self.conn.send(message)
            except (OSError, ValueError):
                return

    def _receive(self) -> None:
        while True:
            try:
                kind, key, value = self.conn.recv()
            except (EOFError, OSError):
                break
            if kind == "event":
                loop, sink = self.sinks.get(key, (None, None))
                if loop is not None:
                    _call_soon(loop, sink, value)
            else:
                loop, future = self.pending.pop(key)
                _call_soon(loop, _settle, future, value)
        if self.alive:  # not stopped by us
            log.error("offline decoder process %s exited", self.process.pid)
        self.alive = False
        for loop, future in list(self.pending.values()):
            _call_soon(loop, _settle, future, "the decoder process has exited")
        self.pending.clear()

    def stop(self) -> None:
        """End the child. Requests still queued in its pipe (audio of streams whose owners
        are gone) are worth nothing now: it gets a moment to reach the pipe's end, then is
        killed, so a server stop never waits for a decode backlog."""
        self.alive = False
        self.outbox.put(None)
        self.conn.close()
        self.process.join(timeout=STOP_WAIT_SECONDS)
        if self.process.is_alive():
            self.process.kill()
            self.process.join(timeout=5)


def _call_soon(loop: asyncio.AbstractEventLoop, callback, *args) -> None:
    """Hand a reply to the loop that asked. A request whose owner was cancelled can be
    answered after its loop closed (tests run a loop each): that reply has nobody to go to,
    and must not end this thread, which serves every other stream of the process."""
    with contextlib.suppress(RuntimeError):
        loop.call_soon_threadsafe(callback, *args)


def _settle(future: asyncio.Future, error: str | None) -> None:
    if not future.done():
        future.set_result(error)


class ProcessPool:
    """Speaker streams spread over `size` DecoderProcesses (started on first use)."""

    def __init__(self, config, size: int):
        self.config, self.size = config, size
        self.processes: list[DecoderProcess] = []
        self.placement: dict[str, DecoderProcess] = {}

    def _least_loaded(self) -> DecoderProcess:
        self.processes = [p for p in self.processes if p.alive]
        if len(self.processes) < self.size:
            if not self.processes:
                atexit.register(self.stop)
            self.processes.append(DecoderProcess(self.config))
            return self.processes[-1]
        return min(self.processes, key=lambda p: p.load)

    async def open(self, stream_id: str, on_event: Callable[[dict], None],
                   hints: str = "") -> None:
        process = self._least_loaded()
        process.sinks[stream_id] = (asyncio.get_running_loop(), on_event)
        self.placement[stream_id] = process
        try:
            await process.request("open", stream_id, (hints,))
        except Exception:
            self._forget(stream_id)
            raise

    async def call(self, operation: str, stream_id: str, arguments: tuple = ()) -> None:
        await self.placement[stream_id].request(operation, stream_id, arguments)

    async def close(self, stream_id: str) -> None:
        try:
            await self.call("close", stream_id)
        finally:
            self._forget(stream_id)

    def _forget(self, stream_id: str) -> None:
        process = self.placement.pop(stream_id, None)
        if process is not None:
            # Events of the close are already on the loop's queue (sent before "done").
            process.sinks.pop(stream_id, None)

    def stop(self) -> None:
        for process in self.processes:
            process.stop()
        self.processes.clear()
