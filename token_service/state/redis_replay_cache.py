"""The ``jti`` replay cache in Redis, shared by every instance: a replay anywhere is refused.

One key per spent assertion, ``<prefix>jti:<sha256 hex>``, written with ``SET NX PX``: of two
instances spending the same assertion at once, Redis lets exactly one create the key. The key
expires with its assertion, so Redis needs no clean-up and holds at most the live assertions.

The value is a random nonce of the attempt: when the client retries a ``SET`` whose answer was lost
(a timeout after Redis had written it), the retry finds the key taken, and only the nonce tells that
it was taken by this very attempt, not by a replay.
"""

from __future__ import annotations

import math
import secrets
import time
from collections.abc import Callable

import redis

from token_service.config.shared_state import RedisSettings
from token_service.errors import StateUnavailable
from token_service.state.redis_connection import RETRY_AFTER_SECONDS, STORE_ERRORS, Availability, describe
from token_service.state.replay_cache import replay_digest


class RedisReplayCache:
    def __init__(self, client: redis.Redis, settings: RedisSettings, clock: Callable[[], float] = time.time):
        self._client = client
        self._prefix = f"{settings.key_prefix}jti:"
        self._clock = clock
        self._availability = Availability(settings, "jti replay cache")

    def seen(self, key: str) -> bool:
        return bool(self._call(lambda: self._client.exists(self._key(key))))

    def first_use(self, key: str, expires_at: float) -> bool:
        # A time to live, not an absolute PXAT: it measures from this instance's clock, as the
        # assertion's checks did, whatever Redis's clock says.
        ttl_ms = max(1, math.ceil((expires_at - self._clock()) * 1000))
        name, nonce = self._key(key), secrets.token_bytes(16)
        if self._call(lambda: self._client.set(name, nonce, nx=True, px=ttl_ms)):
            return True
        # Taken: by another attempt (a replay), or by this one if a retried SET had been written.
        return self._call(lambda: self._client.get(name)) == nonce

    def _key(self, key: str) -> str:
        return self._prefix + replay_digest(key).hex()

    def _call(self, command: Callable[[], object]) -> object:
        paused = self._availability.paused()
        if paused:
            raise StateUnavailable(paused, RETRY_AFTER_SECONDS)
        try:
            answer = command()
        except STORE_ERRORS as error:
            self._availability.failed(error)
            raise StateUnavailable(describe(error), RETRY_AFTER_SECONDS) from None
        self._availability.succeeded()
        return answer
