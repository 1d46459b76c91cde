"""Token buckets: pace calls the way a provider's documented rate limits allow (pure, clock
injected). A bucket refills one token every ``every`` seconds up to ``burst``; taking a token when
none is left says how long to wait for it."""

from __future__ import annotations

import time
from collections.abc import Callable


class Bucket:
    def __init__(
        self, every: float, burst: int, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.every = every
        self.burst = burst
        self.clock = clock
        self._tokens = float(burst)
        self._at = clock()

    def take(self) -> float:
        """Reserve one token: seconds to wait before using it (0 when one is there now)."""
        if self.every <= 0:
            return 0.0
        now = self.clock()
        self._tokens = min(float(self.burst), self._tokens + (now - self._at) / self.every)
        self._at = now
        self._tokens -= 1.0
        return 0.0 if self._tokens >= 0 else -self._tokens * self.every
