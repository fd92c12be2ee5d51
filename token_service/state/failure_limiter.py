"""The per-instance client-secret failure limiter, in memory: the embedded default ``FailureStore``.

A token bucket per (client id, source address): ``burst`` failures, then one more every
``refill_seconds``; a bucket full again is forgotten.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

BURST = 10
REFILL_SECONDS = 6.0


class FailureLimiter:
    """Per key: ``burst`` failures, then one more every ``refill_seconds``."""

    def __init__(self, burst: int = BURST, refill_seconds: float = REFILL_SECONDS,
                 clock: Callable[[], float] = time.monotonic):
        self._burst = burst
        self._refill = refill_seconds
        self._clock = clock
        self._buckets: dict[tuple[str, str], tuple[float, float]] = {}
        self._lock = threading.Lock()

    def retry_after(self, key: tuple[str, str]) -> int:
        """0 if an attempt may go ahead, else the seconds to wait."""
        with self._lock:
            tokens = self._tokens(key)
            return 0 if tokens >= 1 else max(1, round((1 - tokens) * self._refill))

    def failed(self, key: tuple[str, str]) -> None:
        with self._lock:
            self._buckets[key] = (self._tokens(key) - 1, self._clock())
            if len(self._buckets) > 10_000:  # forget clients whose buckets are full again
                now = self._clock()
                self._buckets = {key: value for key, value in self._buckets.items()
                                 if value[0] + (now - value[1]) / self._refill < self._burst}

    def _tokens(self, key: tuple[str, str]) -> float:
        tokens, since = self._buckets.get(key, (float(self._burst), self._clock()))
        return min(float(self._burst), tokens + (self._clock() - since) / self._refill)
