"""The per-instance ``jti`` replay cache, in memory: the embedded default store of ``ReplayStore``."""

from __future__ import annotations

import hashlib
import heapq
import threading
import time
from collections.abc import Callable

# An instance's replay cache holds at most this many jti digests (about 205 bytes each, measured: 41 MB).
REPLAY_CACHE_LIMIT = 200_000


class ReplayCache:
    """The ``jti`` values of assertions that earned a token on this instance, each kept until its assertion expires.

    Memory is bounded without ever refusing a fresh assertion: only an assertion that passed every check
    (signature, claims, policy) is recorded, so filling the cache takes tokens the policy grants, not
    forged or denied requests; an entry is a fixed-size digest, whatever the jti's length; it is evicted
    once its assertion has expired (at most ``max_assertion_lifetime`` plus twice the skew after it was
    recorded); and beyond ``limit`` live entries the one closest to expiry goes first. Reaching the limit
    takes ``limit`` granted single-use assertions still within their lifetime on one instance (with the
    default, 55 a second for an hour of one-hour assertions); the cost then is a shorter replay window for
    the entry nearest expiry (someone holding a copy of that assertion could replay it until its exp), not a
    refused client.
    """

    def __init__(self, limit: int = REPLAY_CACHE_LIMIT, clock: Callable[[], float] = time.time):
        self._seen: dict[bytes, float] = {}
        self._expiries: list[tuple[float, bytes]] = []  # a heap: the next entry to expire first
        self._limit = limit
        self._clock = clock
        self._lock = threading.Lock()

    def seen(self, key: str) -> bool:
        """Whether ``key`` was recorded and its assertion has not expired yet."""
        with self._lock:
            return self._seen.get(replay_digest(key), 0) > self._clock()

    def first_use(self, key: str, expires_at: float) -> bool:
        """Record ``key`` until ``expires_at``; False (and nothing recorded) when it is already there."""
        digest = replay_digest(key)
        with self._lock:
            now = self._clock()
            while self._expiries and self._expiries[0][0] <= now:
                self._evict_first()
            if digest in self._seen:
                return False
            while len(self._seen) >= self._limit:
                self._evict_first()
            self._seen[digest] = expires_at
            heapq.heappush(self._expiries, (expires_at, digest))
            return True

    def _evict_first(self) -> None:
        expiry, digest = heapq.heappop(self._expiries)
        if self._seen.get(digest) == expiry:  # else a stale heap entry of a key recorded again since
            del self._seen[digest]


def replay_digest(key: str) -> bytes:
    """A fixed-size key, whatever the jti's length (also the Redis store's key)."""
    return hashlib.sha256(key.encode("utf-8", "surrogatepass")).digest()

