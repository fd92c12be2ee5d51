"""Signing keys of trusted issuers, fetched on demand and cached per issuer.

Keys are fresh for ``fresh_seconds``; an unknown ``kid`` (a rotation) triggers a refetch. An issuer
is fetched at most once per ``cooldown_seconds``, failed fetches included, so tokens with made-up
kids cannot turn the service into a load generator against the issuer. One fetch per issuer runs at
a time, within ``timeout`` seconds for discovery and JWK set together; callers that need it wait for
it no longer than that. While an issuer is down, its last good keys stay in use until
``stale_seconds`` after they were fetched. Keys come only over https (plain http on loopback, for
local runs), never through a redirect or a proxy, in answers of at most ``MAX_DOCUMENT_BYTES``;
``ca_file`` trusts a private CA instead of the system's (a broker under your own PKI).
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import jwt
import requests

from workload_toolkit.issuers import TrustedIssuer

SIGNING_ALGORITHMS = ("RS256", "ES256")
MAX_DOCUMENT_BYTES = 1 << 20  # a JWK set is a few KiB: more is a fault, not keys
_ALGORITHM_BY_KEY_TYPE = {"RSA": "RS256", "EC": "ES256"}
_LOOPBACK = frozenset({"127.0.0.1", "::1", "localhost"})


class KeysUnavailable(Exception):
    """No usable keys: the issuer could not be reached and nothing cached is still valid."""


@dataclass(frozen=True)
class _Snapshot:
    keys: dict[str, jwt.PyJWK]
    fetched_at: float


@dataclass
class _IssuerState:
    snapshot: _Snapshot | None = None  # replaced whole, never changed: readers need no lock
    attempted_at: float | None = None  # last fetch started, successful or not
    failure: str = ""
    fetching: threading.Lock = field(default_factory=threading.Lock)


class IssuerKeys:
    def __init__(self, *, ca_file: str | None = None, timeout: float = 3.0, fresh_seconds: float = 300,
                 stale_seconds: float = 24 * 3600, cooldown_seconds: float = 30,
                 clock: Callable[[], float] = time.monotonic):
        self._verify: str | bool = ca_file or True
        self._timeout = timeout
        self._fresh = fresh_seconds
        self._stale = stale_seconds
        self._cooldown = cooldown_seconds
        self._clock = clock
        self._issuers: dict[TrustedIssuer, _IssuerState] = {}
        self._lock = threading.Lock()

    def key(self, issuer: TrustedIssuer, kid: str) -> jwt.PyJWK | None:
        """The key ``kid`` of ``issuer``; None if the issuer does not publish it.

        Raises ``KeysUnavailable`` when no valid keys are cached and none can be fetched now."""
        with self._lock:
            state = self._issuers.setdefault(issuer, _IssuerState())
        snapshot = state.snapshot
        if snapshot is not None and kid in snapshot.keys and self._clock() - snapshot.fetched_at < self._fresh:
            return snapshot.keys[kid]
        if not state.fetching.acquire(blocking=False):
            # A refresh is under way: a key already known need not wait for it.
            if snapshot is not None and self._usable(snapshot) and kid in snapshot.keys:
                return snapshot.keys[kid]
            if not state.fetching.acquire(timeout=self._timeout):
                return self._cached(issuer, state, kid)
        try:
            # Whoever held the lock may just have fetched: the cooldown then answers from its result.
            if state.attempted_at is None or self._clock() - state.attempted_at >= self._cooldown:
                self._refresh(issuer, state)
        finally:
            state.fetching.release()
        return self._cached(issuer, state, kid)

    def _usable(self, snapshot: _Snapshot) -> bool:
        return self._clock() - snapshot.fetched_at < self._stale

    def _cached(self, issuer: TrustedIssuer, state: _IssuerState, kid: str) -> jwt.PyJWK | None:
        snapshot = state.snapshot
        if snapshot is not None and self._usable(snapshot):
            return snapshot.keys.get(kid)
        if state.fetching.locked() and not state.failure:
            why = "are being fetched"
        else:
            why = f"cannot be fetched ({state.failure})" if state.failure else "expired"
        raise KeysUnavailable(f"the keys of {issuer.issuer} {why}")

    def _refresh(self, issuer: TrustedIssuer, state: _IssuerState) -> None:
        state.attempted_at = self._clock()
        try:
            keys = self._fetch(issuer, time.monotonic() + self._timeout)
        except Exception as error:  # whatever an issuer answers is its fault: a failed fetch, never a crash
            state.failure = f"{type(error).__name__}: {error}"[:300]
            return
        state.snapshot, state.failure = _Snapshot(keys, self._clock()), ""

    def _fetch(self, issuer: TrustedIssuer, deadline: float) -> dict[str, jwt.PyJWK]:
        with requests.Session() as session:
            # As the broker client: the keys decide which tokens are accepted, so no proxy from the
            # environment sits between the service and the issuer.
            session.trust_env = False
            jwks_uri = issuer.jwks_uri
            if jwks_uri is None:
                discovery = self._get_json(session, f"{issuer.issuer.rstrip('/')}/.well-known/openid-configuration",
                                           deadline)
                jwks_uri = discovery.get("jwks_uri") if isinstance(discovery, dict) else None
                if not isinstance(jwks_uri, str):
                    raise ValueError("the discovery document names no jwks_uri")
            document = self._get_json(session, jwks_uri, deadline)
        if not isinstance(document, dict) or not isinstance(document.get("keys"), list):
            raise ValueError(f"{jwks_uri[:200]} is not a JWK set (an object with a keys list)")
        return _signing_keys(document["keys"])

    def _get_json(self, session: requests.Session, url: str, deadline: float) -> Any:
        if not _fetchable(url):
            raise ValueError(f"{url[:200]!r} is not https (plain http only on loopback)")
        # identity: a compressed answer could inflate far beyond the size cap within one chunk.
        with session.get(url, headers={"Accept": "application/json", "Accept-Encoding": "identity"},
                         timeout=max(deadline - time.monotonic(), 0.01), verify=self._verify,
                         allow_redirects=False, stream=True) as response:
            if response.status_code != 200:
                raise ValueError(f"HTTP {response.status_code} from {url[:200]}")
            body = bytearray()
            for chunk in response.iter_content(64 * 1024):
                body += chunk
                if len(body) > MAX_DOCUMENT_BYTES:
                    raise ValueError(f"{url[:200]} answered more than {MAX_DOCUMENT_BYTES} bytes")
                if time.monotonic() > deadline:  # the timeout bounds each read, not a slow trickle of them
                    raise TimeoutError(f"{url[:200]} did not answer within the fetch's time")
        return json.loads(body)


def _fetchable(url: str) -> bool:
    try:
        parts = urlsplit(url)
        host = parts.hostname
    except ValueError:  # e.g. an unclosed IPv6 bracket
        return False
    return bool(host) and (parts.scheme == "https" or (parts.scheme == "http" and host in _LOOPBACK))


def _signing_keys(items: list[Any]) -> dict[str, jwt.PyJWK]:
    """Keys by kid. JWKs without ``alg`` or ``use`` are kept; the verifier checks the key type fits."""
    keys = {}
    for item in items:
        if not isinstance(item, dict) or item.get("use", "sig") != "sig" or not isinstance(item.get("kid"), str):
            continue
        algorithm = item.get("alg") or _ALGORITHM_BY_KEY_TYPE.get(str(item.get("kty", "")))
        if algorithm not in SIGNING_ALGORITHMS:
            continue
        try:
            keys[item["kid"]] = jwt.PyJWK(item, algorithm=algorithm)
        except Exception:  # a malformed JWK (wrong types too) is skipped, like a foreign one
            continue
    return keys
