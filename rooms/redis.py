"""One redis.asyncio client per event loop and URL, shared by the Redis-backed stores."""

from __future__ import annotations

import asyncio

_clients: dict[tuple[int, str], object] = {}
MAX_CONNECTIONS = 64  # per process and loop; Redis serves each command in microseconds
POOL_WAIT_SECONDS = 10


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
            url, max_connections=MAX_CONNECTIONS, timeout=POOL_WAIT_SECONDS, socket_timeout=5)
        client = _clients[key] = aioredis.Redis(connection_pool=pool)
    return client
