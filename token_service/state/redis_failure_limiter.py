"""The client-secret failure limiter in Redis: one token bucket per (client id, source) for all instances.

The same bucket as ``failure_limiter.FailureLimiter`` (``burst`` failures, then one more every
``refill_seconds``), kept in a hash ``<prefix>fail:<sha256 hex>`` that expires once it would be full
again. A Lua script reads, refills and spends it in one step on Redis's clock, so instances racing
on one bucket each spend a token and their clocks never disagree.

Redis unavailable: the per-instance limiter, which counts every failure too, answers alone; a
stranger's guesses are then limited per instance, as without Redis, and the client-secret flow
keeps working.
"""

from __future__ import annotations

import hashlib

import redis

from token_service.config.shared_state import RedisSettings
from token_service.state.failure_limiter import BURST, REFILL_SECONDS, FailureLimiter
from token_service.state.redis_connection import STORE_ERRORS, Availability

# KEYS[1] the bucket; ARGV burst, refill seconds, and 1 to spend a token or 0 to look. Returns the
# tokens left, as a string (Redis turns a Lua number into an integer).
_BUCKET = """
local now = redis.call('TIME')
local t = tonumber(now[1]) + tonumber(now[2]) / 1000000
local burst, refill = tonumber(ARGV[1]), tonumber(ARGV[2])
local state = redis.call('HMGET', KEYS[1], 'tokens', 'since')
local tokens = burst
if state[1] then
  tokens = math.min(burst, tonumber(state[1]) + (t - tonumber(state[2])) / refill)
end
if ARGV[3] == '1' then
  tokens = tokens - 1
  redis.call('HSET', KEYS[1], 'tokens', string.format('%.6f', tokens), 'since', string.format('%.6f', t))
  redis.call('PEXPIRE', KEYS[1], math.ceil((burst - tokens) * refill * 1000))
end
return string.format('%.6f', tokens)
"""


class RedisFailureLimiter:
    def __init__(self, client: redis.Redis, settings: RedisSettings, local: FailureLimiter | None = None,
                 burst: int = BURST, refill_seconds: float = REFILL_SECONDS):
        self._bucket = client.register_script(_BUCKET)
        self._prefix = f"{settings.key_prefix}fail:"
        self._burst = burst
        self._refill = refill_seconds
        self._local = local or FailureLimiter(burst, refill_seconds)
        self._availability = Availability(settings, "client-secret failure limiter")

    def retry_after(self, key: tuple[str, str]) -> int:
        local = self._local.retry_after(key)
        tokens = self._run(key, spend=False)
        shared = 0 if tokens is None or tokens >= 1 else max(1, round((1 - tokens) * self._refill))
        # Never weaker than the instance's own count (which survives a Redis restart).
        return max(local, shared)

    def failed(self, key: tuple[str, str]) -> None:
        self._local.failed(key)
        # A spend retried after its answer was lost may count this failure twice: it errs towards limiting.
        self._run(key, spend=True)

    def _run(self, key: tuple[str, str], spend: bool) -> float | None:
        if self._availability.paused():
            return None
        digest = hashlib.sha256("\0".join(key).encode("utf-8", "surrogatepass")).hexdigest()
        try:
            tokens = float(self._bucket(keys=[self._prefix + digest],
                                        args=[self._burst, self._refill, 1 if spend else 0]))
        except STORE_ERRORS as error:
            self._availability.failed(error)
            return None
        self._availability.succeeded()
        return tokens
