"""A per-instance cache of the tokens Google issued, so repeated requests spare Google's quotas.

An entry is keyed by a digest of everything that shapes the Google token (``exchange_key``) and
served until ``margin`` seconds before Google's expiry, never past the client's proof (certificate
``notAfter``, assertion ``exp``). Concurrent misses for one key make one Google call: the first
request loads, the others wait for its answer (single flight). A failure is never cached: the
waiters get the same refusal, and the next request tries again. Bounded: the least recently used
entry goes first.
"""

from __future__ import annotations

import hashlib
import json
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping
from typing import Any, Generic, NamedTuple, TypeVar

from token_service.errors import temporarily_unavailable
from token_service.google.exchange import ExchangeRequest

T = TypeVar("T")
# The claims that differ between two ID tokens for the same facts; every other claim is what
# workload identity federation maps into the Google token, so it is part of the key.
TIME_AND_ID_CLAIMS = frozenset({"iat", "exp", "nbf", "jti"})
_KEY_ENCODER = json.JSONEncoder(separators=(",", ":"), sort_keys=True, default=repr)


def exchange_key(*, claims: Mapping[str, Any], policy_rule: str | None, policy_fingerprint: str,
                 request: ExchangeRequest, response_format: str) -> str:
    """The cache key of one exchange: equal only when Google would be asked the same thing.

    The proof's expiry is not part of it: every request's proof is checked before the cache is read,
    and an entry is kept no longer than the proof of the request that fetched it."""
    shaping = {name: value for name, value in claims.items() if name not in TIME_AND_ID_CLAIMS}
    material = {
        "claims": shaping,
        "rule": policy_rule,
        "policy": policy_fingerprint,
        # RFC 6749 section 3.3: scope strings are order-insensitive.
        "scopes": sorted(request.scopes),
        "service_account": request.service_account,
        "audience": request.audience,
        "format": response_format,
    }
    return hashlib.sha256(_KEY_ENCODER.encode(material).encode()).hexdigest()


def fingerprint(value: object) -> str:
    """A digest of a loaded configuration object (the policy): tokens never cross a change of it."""
    return hashlib.sha256(repr(value).encode()).hexdigest()


class _Entry(NamedTuple, Generic[T]):
    value: T
    expires_at: float  # Google's expiry
    serve_until: float  # the margin before it, and never past the client's proof


class _Flight:
    """One Google call in progress for a key; waiters read its outcome once ``done`` is set."""

    def __init__(self) -> None:
        self.done = threading.Event()
        self.entry: _Entry[Any] | None = None
        self.error: BaseException | None = None


class Cached(NamedTuple, Generic[T]):
    value: T
    expires_at: float  # Google's expiry, for the remaining lifetime a hit reports
    hit: bool  # False: this request called Google


class TokenCache(Generic[T]):
    def __init__(self, margin_seconds: int, max_entries: int, wait_seconds: float,
                 clock: Callable[[], float] = time.time):
        self._margin = margin_seconds
        self._max_entries = max_entries
        self._wait_seconds = wait_seconds  # a waiter gives up after this (the loader's retry budget and more)
        self._clock = clock
        self._lock = threading.Lock()
        self._entries: OrderedDict[str, _Entry[T]] = OrderedDict()
        self._flights: dict[str, _Flight] = {}

    def __len__(self) -> int:
        return len(self._entries)

    def fetch(self, key: str, load: Callable[[], tuple[T, float]], valid_until: float | None) -> Cached[T]:
        """The entry for ``key``, or what ``load`` returns: the value and when Google says it expires.

        ``valid_until``: the client's proof expires then; the entry is never served past it."""
        with self._lock:
            entry = self._entries.get(key)
            if entry is not None and self._clock() < entry.serve_until:
                self._entries.move_to_end(key)
                return Cached(entry.value, entry.expires_at, True)
            if entry is not None:
                del self._entries[key]
            flight = self._flights.get(key)
            leading = flight is None
            if flight is None:
                flight = self._flights[key] = _Flight()
        if not leading:
            return self._wait(flight)
        try:
            value, expires_at = load()
            serve_until = expires_at - self._margin
            if valid_until is not None:
                serve_until = min(serve_until, valid_until)
            flight.entry = _Entry(value, expires_at, serve_until)
        except BaseException as failure:
            flight.error = failure
            raise
        finally:
            with self._lock:
                del self._flights[key]
                if flight.entry is not None and self._clock() < flight.entry.serve_until:
                    self._entries[key] = flight.entry
                    while len(self._entries) > self._max_entries:
                        self._entries.popitem(last=False)
            flight.done.set()
        return Cached(value, expires_at, False)

    def replace(self, key: str, value: T) -> None:
        """Keep ``value`` under ``key`` with the entry's expiry (a fresher part of the same answer)."""
        with self._lock:
            entry = self._entries.get(key)
            if entry is not None:
                self._entries[key] = entry._replace(value=value)

    def _wait(self, flight: _Flight) -> Cached[T]:
        if not flight.done.wait(self._wait_seconds):
            raise temporarily_unavailable("Another request for the same token is still waiting on Google; "
                                          "retry after 2 s", 2)
        if flight.error is not None:
            raise flight.error
        assert flight.entry is not None
        return Cached(flight.entry.value, flight.entry.expires_at, True)
