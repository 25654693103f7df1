"""One redis.asyncio client per event loop and URL, shared by the Redis-backed stores."""

from __future__ import annotations

import asyncio

_clients: dict[tuple[int, str], object] = {}


def redis_client(url: str):
    """The client for `url` on the running loop (clients belong to the loop that made them:
    daphne runs one loop, tests and management commands may run several)."""
    import redis.asyncio as aioredis

    key = (id(asyncio.get_running_loop()), url)
    client = _clients.get(key)
    if client is None:
        client = _clients[key] = aioredis.Redis.from_url(url, socket_timeout=5)
    return client
