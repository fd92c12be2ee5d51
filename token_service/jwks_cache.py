"""Signing keys of trusted assertion issuers, cached per issuer.

Keys are fresh for ``fresh_seconds``; an unknown ``kid`` triggers one refetch,
at most once per ``cooldown_seconds``, and concurrent refetches of one issuer
collapse into a single fetch. When a fetch fails, the last good keys stay in
use until ``stale_seconds`` after they were fetched.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import jwt

from token_service.policy import TrustedIssuer
from token_service.upstream import UpstreamClient, UpstreamUnavailable


class KeysUnavailable(Exception):
    """No usable keys: the issuer could not be reached and nothing cached is still valid."""


@dataclass
class _Entry:
    keys: dict[str, jwt.PyJWK]
    fetched_at: float
    attempted_at: float


class JwksCache:
    def __init__(
        self,
        client: UpstreamClient,
        *,
        fresh_seconds: float = 300,
        stale_seconds: float = 24 * 3600,
        cooldown_seconds: float = 30,
        clock: Callable[[], float] = time.monotonic,
    ):
        self._client = client
        self._fresh = fresh_seconds
        self._stale = stale_seconds
        self._cooldown = cooldown_seconds
        self._clock = clock
        self._entries: dict[str, _Entry] = {}
        self._locks: dict[str, threading.Lock] = {}
        self._guard = threading.Lock()
        self.fetches = 0

    def key(self, issuer: TrustedIssuer, kid: str) -> jwt.PyJWK | None:
        """The key ``kid`` of ``issuer``; None if the issuer does not publish it."""
        if issuer.jwks is not None:
            return _parse(issuer.jwks).get(kid)
        entry = self._entries.get(issuer.name)
        now = self._clock()
        if entry is not None and now - entry.fetched_at < self._fresh and kid in entry.keys:
            return entry.keys[kid]
        entry = self._refresh(issuer, kid)
        return entry.keys.get(kid)

    def _refresh(self, issuer: TrustedIssuer, kid: str) -> _Entry:
        with self._guard:
            lock = self._locks.setdefault(issuer.name, threading.Lock())
        with lock:  # one fetch per issuer at a time; the others wait and reuse its result
            entry = self._entries.get(issuer.name)
            now = self._clock()
            if entry is not None:
                fresh = now - entry.fetched_at < self._fresh
                if (fresh and kid in entry.keys) or now - entry.attempted_at < self._cooldown:
                    return self._usable(entry, now)
            try:
                keys = self._fetch(issuer)
            except (UpstreamUnavailable, ValueError, KeyError, jwt.PyJWTError) as error:
                if entry is None:
                    raise KeysUnavailable(f"cannot fetch the keys of {issuer.issuer}: {error}") from None
                entry.attempted_at = now
                return self._usable(entry, now)
            entry = _Entry(keys, now, now)
            self._entries[issuer.name] = entry
            return entry

    def _usable(self, entry: _Entry, now: float) -> _Entry:
        if now - entry.fetched_at >= self._stale:
            raise KeysUnavailable("the cached keys expired and the issuer cannot be reached")
        return entry

    def _fetch(self, issuer: TrustedIssuer) -> dict[str, jwt.PyJWK]:
        self.fetches += 1
        jwks_uri = issuer.jwks_uri
        if jwks_uri is None:
            discovery = self._get_json(f"{issuer.issuer.rstrip('/')}/.well-known/openid-configuration")
            jwks_uri = str(discovery["jwks_uri"])
        return _parse(self._get_json(jwks_uri))

    def _get_json(self, url: str) -> Any:
        response = self._client.request("GET", f"issuer {url}", url)
        if response.status != 200:
            raise ValueError(f"HTTP {response.status} from {url}")
        return json.loads(response.body)


def _parse(document: dict[str, Any]) -> dict[str, jwt.PyJWK]:
    """Keys by kid. JWKs without ``alg`` or ``use`` are kept; the verifier checks the key type fits."""
    keys = {}
    for item in document.get("keys", []):
        if not isinstance(item, dict) or item.get("use", "sig") != "sig" or "kid" not in item:
            continue
        algorithm = item.get("alg") or {"RSA": "RS256", "EC": "ES256"}.get(item.get("kty", ""))
        if algorithm not in ("RS256", "ES256"):
            continue
        try:
            keys[str(item["kid"])] = jwt.PyJWK(item, algorithm=algorithm)
        except jwt.PyJWTError:
            continue
    return keys
