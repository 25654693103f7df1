"""Rate limits: a per-connection token bucket for socket frames, and per-client windows
counted in Django's cache for HTTP endpoints (room creation, transcription keys)."""

from __future__ import annotations

import ipaddress
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

from django.core.cache import cache

log = logging.getLogger(__name__)


class TokenBucket:
    """Allows `burst` actions at once and `rate` per second after that.

    `strikes` counts refusals since the last allowed action, so a client that keeps sending
    while refused can be disconnected once it passes a hard limit.
    """

    def __init__(self, burst: int, rate: float, clock: Callable[[], float] = time.monotonic):
        self.burst = burst
        self.rate = rate
        self.clock = clock
        self.tokens = float(burst)
        self.updated = clock()
        self.strikes = 0

    def allow(self) -> bool:
        now = self.clock()
        self.tokens = min(self.burst, self.tokens + (now - self.updated) * self.rate)
        self.updated = now
        if self.tokens >= 1:
            self.tokens -= 1
            self.strikes = 0
            return True
        self.strikes += 1
        return False

    def retry_after(self) -> float:
        """Seconds until the next action would be allowed."""
        return max(0.0, (1 - self.tokens) / self.rate)


# IPv6 clients usually hold a whole /64 and can pick any address in it: count the prefix.
IPV6_PREFIX_BITS = 64


def client_address(request) -> str:
    """Who sent an HTTP request, for rate limits: REMOTE_ADDR (daphne --proxy-headers sets it
    from the proxy's X-Forwarded-For; parsing that header here would let clients pick it),
    IPv6 addresses as their /64."""
    address = request.META.get("REMOTE_ADDR") or "unknown"
    try:
        parsed = ipaddress.ip_address(address)
    except ValueError:
        return address
    if parsed.version == 4:
        return str(parsed)
    if parsed.ipv4_mapped is not None:
        return str(parsed.ipv4_mapped)
    return str(ipaddress.ip_network(f"{parsed}/{IPV6_PREFIX_BITS}", strict=False))


@dataclass(frozen=True)
class WindowLimit:
    """At most `limit` actions per `window` seconds for each key, counted in Django's cache.

    Fixed windows (a key's count resets at each multiple of `window`), so a client may do up
    to twice `limit` across a window boundary, never more. The counts are only as shared as
    the cache: the default LocMemCache is per process, so with several server processes a
    client gets `limit` in each unless CACHES names a shared cache (Redis, Memcached).
    Losing the counts (a restart, an eviction) only forgives clients, which is why they live
    in the cache and not in the database, whose write lock chat sends wait for."""

    name: str
    limit: int
    window: int  # seconds

    def hit(self, key: str, clock: Callable[[], float] = time.time) -> float | None:
        """Count one action for `key`: None when allowed, else seconds until the window that
        allows it again."""
        now = clock()
        window_index = int(now // self.window)
        cache_key = f"parley.rate.{self.name}.{window_index}.{key}"
        # add() is a no-op when the key exists, and incr() is atomic in the cache backends
        # Django ships, so concurrent requests each get their own count.
        try:
            cache.add(cache_key, 0, timeout=self.window + 1)
            try:
                count = cache.incr(cache_key)
            except ValueError:  # evicted between add() and incr(): count afresh
                cache.set(cache_key, 1, timeout=self.window + 1)
                count = 1
        except Exception:  # the cache (Redis) is down: forgive rather than fail the request
            log.warning("rate limit %s not counted: cache unavailable", self.name, exc_info=True)
            return None
        if count <= self.limit:
            return None
        return max(1.0, (window_index + 1) * self.window - now)
