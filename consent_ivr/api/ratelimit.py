"""Per-token rate limits: a token bucket each, in memory (one service process answers the API).
A request that finds its bucket empty is refused with how long to wait (`Retry-After`)."""

from __future__ import annotations

import math
import time
from collections.abc import Callable


class RateLimiter:
    def __init__(
        self, rate_per_s: float, burst: int, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.rate = rate_per_s
        self.burst = burst
        self.clock = clock
        self._buckets: dict[int, tuple[float, float]] = {}  # token id: (tokens, when)

    def take(self, key: int, rate: float | None = None) -> int:
        """0 when the request may go; else the whole seconds to wait before the next one."""
        rate = rate or self.rate
        burst = max(self.burst, math.ceil(rate))
        now = self.clock()
        tokens, then = self._buckets.get(key, (float(burst), now))
        tokens = min(float(burst), tokens + (now - then) * rate)
        if tokens >= 1.0:
            self._buckets[key] = (tokens - 1.0, now)
            return 0
        self._buckets[key] = (tokens, now)
        return max(1, math.ceil((1.0 - tokens) / rate))
