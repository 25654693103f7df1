"""Per-connection token bucket for chat sends."""

from __future__ import annotations

import time
from collections.abc import Callable


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
