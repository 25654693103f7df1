"""One redis.asyncio client per event loop and URL, shared by the Redis-backed stores."""

from __future__ import annotations

import asyncio

_clients: dict[tuple[int, str], object] = {}
MAX_CONNECTIONS = 64  # per process and loop; Redis serves each command in microseconds
POOL_WAIT_SECONDS = 10
RETRIES = 3  # 0.05 + 0.1 + 0.2 s of backoff: a restarted Redis answers within that
HEALTH_CHECK_SECONDS = 15


def connection_options(url: str) -> dict:
    """How every Redis connection of Parley's (its own stores and the channel layer's) treats
    a connection that went stale, e.g. after a Redis restart: retry the command on a fresh
    connection a few times within about a second, instead of failing the socket that asked
    (the first socket after a restart was closed before `hello`). Idle pooled connections
    are checked before use once they have been idle HEALTH_CHECK_SECONDS."""
    from redis.asyncio.retry import Retry
    from redis.backoff import ExponentialBackoff
    from redis.exceptions import ConnectionError, TimeoutError

    options = {
        "retry": Retry(ExponentialBackoff(cap=0.5, base=0.05), RETRIES),
        "retry_on_error": [ConnectionError, TimeoutError, ConnectionResetError],
        "health_check_interval": HEALTH_CHECK_SECONDS,
    }
    if not url.startswith("unix:"):  # redis-py's Unix socket connections take no keepalive
        options["socket_keepalive"] = True
    return options


def redis_client(url: str):
    """The client for `url` on the running loop (clients belong to the loop that made them:
    daphne runs one loop, tests and management commands may run several)."""
    import redis.asyncio as aioredis

    key = (id(asyncio.get_running_loop()), url)
    client = _clients.get(key)
    if client is None:
        # A blocking pool: when hundreds of sockets close at once, their presence updates
        # wait for a free connection instead of failing with "Too many connections" (seen in
        # bench/chat_fanout.py at 500 clients).
        pool = aioredis.BlockingConnectionPool.from_url(
            url, max_connections=MAX_CONNECTIONS, timeout=POOL_WAIT_SECONDS, socket_timeout=5,
            **connection_options(url))
        client = _clients[key] = aioredis.Redis(connection_pool=pool)
    return client
