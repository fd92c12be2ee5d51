"""The Redis client every Redis store of one process shares: one connection pool, short timeouts.

Imported only when ``REDIS_URL`` is set: the client library costs a deployment without Redis
nothing at cold start.
"""

from __future__ import annotations

import logging
import threading
import time

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from token_service.config.shared_state import RedisSettings, redacted

# A command waits at most this long to connect and this long for an answer (Memorystore answers in
# well under a millisecond on the VPC): a dead or unreachable Redis costs a request a fraction of a
# second, never a hung thread.
CONNECT_TIMEOUT_SECONDS = 0.25
COMMAND_TIMEOUT_SECONDS = 0.25
# One retry, at once: a pooled connection Redis closed (restart, failover) fails its first command;
# the retry opens a fresh one. More would multiply the wait when Redis is really gone.
RETRIES = 1
# What a client refused for want of Redis is told to wait.
RETRY_AFTER_SECONDS = 2
# After a failure, a store does not ask Redis for this long (see Availability).
PAUSE_SECONDS = 1.0
# Errors of the store are logged at most this often (a dead Redis would otherwise log every request).
LOG_INTERVAL_SECONDS = 30.0
STORE_ERRORS = (redis.RedisError, OSError)

_log = logging.getLogger(__name__)


def redis_client(settings: RedisSettings, max_connections: int) -> redis.Redis:
    """A client whose pool holds at most ``max_connections`` (a process's request threads); a thread
    finding none free waits ``CONNECT_TIMEOUT_SECONDS``, then fails like a dead Redis."""
    options: dict = {}
    if settings.ssl_ca_certs:
        options["ssl_ca_certs"] = settings.ssl_ca_certs
    url = settings.url.split("?", 1)[0]  # ssl_ca_certs, the one query parameter, is passed explicitly
    pool = redis.BlockingConnectionPool.from_url(
        url, max_connections=max(1, max_connections), timeout=CONNECT_TIMEOUT_SECONDS,
        socket_connect_timeout=CONNECT_TIMEOUT_SECONDS, socket_timeout=COMMAND_TIMEOUT_SECONDS,
        retry=Retry(NoBackoff(), RETRIES), health_check_interval=0,
        # RESP2 and no client metadata: a new connection costs no handshake round trip (RESP3's HELLO,
        # CLIENT SETINFO), and every Redis version Memorystore offers speaks it.
        protocol=2, driver_info=None, **options,
    )
    return redis.Redis(connection_pool=pool)


class Availability:
    """Whether a store should ask Redis now, and the log of its failures (never the URL's password).

    After a failure the store does not ask Redis for ``PAUSE_SECONDS``: against a hung Redis every
    call would hold a request thread for the whole timeout, and a burst of them would take every
    thread. The cost is at most that long of refusals (or of the local limiter) after Redis is back.
    """

    def __init__(self, settings: RedisSettings, what: str, clock=time.monotonic):
        self._where = redacted(settings.url)
        self._what = what
        self._clock = clock
        self._failed_at = float("-inf")
        self._last_error = ""
        self._logged_at = float("-inf")
        self._lock = threading.Lock()

    def paused(self) -> str | None:
        """The last failure while the store should not ask Redis, else None."""
        if self._clock() - self._failed_at < PAUSE_SECONDS:
            return f"{self._last_error} (not retried for {PAUSE_SECONDS:g} s)"
        return None

    def failed(self, error: BaseException) -> None:
        with self._lock:
            now = self._clock()
            self._failed_at, self._last_error = now, describe(error)
            due = now - self._logged_at >= LOG_INTERVAL_SECONDS
            if due:
                self._logged_at = now
        if due:
            _log.warning("Redis at %s unavailable for the %s: %s", self._where, self._what, describe(error))

    def succeeded(self) -> None:
        if self._logged_at != float("-inf"):
            with self._lock:
                recovered, self._logged_at = self._logged_at != float("-inf"), float("-inf")
            if recovered:
                _log.warning("Redis at %s answers the %s again", self._where, self._what)


def describe(error: BaseException) -> str:
    """The error for a log or audit line: its type and message (redis-py's never hold the password)."""
    return f"{type(error).__name__}: {error}"[:200]
