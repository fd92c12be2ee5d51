"""Signing keys of trusted assertion issuers, cached per issuer.

Keys are fresh for ``fresh_seconds``; an unknown ``kid`` triggers one refetch.
An issuer is fetched at most once per ``cooldown_seconds``, failed fetches
included, and one fetch at a time: it runs on its own thread, so the callers
waiting for it (at most ``max_waiters``; more are answered at once) give up
after ``deadline_seconds`` even when the issuer never answers. A fetch fails
on any answer that is not a usable discovery document and JWK set, and on a
``jwks_uri`` the policy's URL rule would refuse. When a fetch fails, the last
good keys stay in use until ``stale_seconds`` after they were fetched.
"""

from __future__ import annotations

import json
import math
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import jwt
from cryptography.hazmat.primitives.asymmetric.ec import EllipticCurvePublicKey
from cryptography.hazmat.primitives.asymmetric.rsa import RSAPublicKey

from token_service.errors import IssuerAnswerInvalid, KeysUnavailable
from token_service.google.transport import RetryPolicy, UpstreamClient, secure_url
from token_service.policy import TrustedIssuer

# Whatever the client's own policy: one attempt per URL (a retry would be a second fetch inside the
# cooldown), and discovery plus JWK set within about the waiters' deadline.
FETCH_POLICY = RetryPolicy(connect_timeout=1.5, read_timeout=1.5, budget=1.5, max_attempts=1)


@dataclass
class _Fetch:
    deadline: float  # time.monotonic() after which its waiters stop waiting
    done: threading.Event = field(default_factory=threading.Event)


@dataclass
class _Issuer:
    keys: dict[str, jwt.PyJWK] = field(default_factory=dict)
    fetched_at: float | None = None  # last successful fetch
    attempted_at: float | None = None  # last fetch started, successful or not
    failure: str = ""
    fetch: _Fetch | None = None  # in flight
    waiters: int = 0


class JwksCache:
    def __init__(
        self,
        client: UpstreamClient,
        *,
        fresh_seconds: float = 300,
        stale_seconds: float = 24 * 3600,
        cooldown_seconds: float = 30,
        deadline_seconds: float = 3,
        max_waiters: int = 2,
        clock: Callable[[], float] = time.monotonic,
    ):
        self._client = client
        self._fresh = fresh_seconds
        self._stale = stale_seconds
        self._cooldown = cooldown_seconds
        self._deadline = deadline_seconds
        self._max_waiters = max_waiters
        self._clock = clock
        self._issuers: dict[str, _Issuer] = {}
        self._lock = threading.Lock()
        self.fetches = 0

    def key(self, issuer: TrustedIssuer, kid: str) -> jwt.PyJWK | None:
        """The key ``kid`` of ``issuer``; None if the issuer does not publish it.

        Raises ``KeysUnavailable`` when no valid keys are cached and none can be fetched now."""
        if issuer.jwks is not None:
            return _parse(issuer.jwks).get(kid)
        with self._lock:
            state = self._issuers.setdefault(issuer.name, _Issuer())
            now = self._clock()
            if state.fetched_at is not None and now - state.fetched_at < self._fresh and kid in state.keys:
                return state.keys[kid]
            fetch = state.fetch
            if fetch is None:
                if state.attempted_at is not None and now - state.attempted_at < self._cooldown:
                    return self._cached(issuer, state, now, kid)
                fetch = self._start(issuer, state, now)
            if state.waiters >= self._max_waiters:
                # Enough threads already wait on this issuer; the others stay free for other clients.
                return self._cached(issuer, state, now, kid)
            state.waiters += 1
        try:
            fetch.done.wait(max(0.0, fetch.deadline - time.monotonic()))
        finally:
            with self._lock:
                state.waiters -= 1
        with self._lock:
            return self._cached(issuer, state, self._clock(), kid)

    def _start(self, issuer: TrustedIssuer, state: _Issuer, now: float) -> _Fetch:
        fetch = _Fetch(time.monotonic() + self._deadline)
        state.fetch, state.attempted_at = fetch, now
        self.fetches += 1
        threading.Thread(target=self._run, args=(issuer, state, fetch), name=f"jwks-{issuer.name}",
                         daemon=True).start()
        return fetch

    def _run(self, issuer: TrustedIssuer, state: _Issuer, fetch: _Fetch) -> None:
        try:
            keys = self._fetch(issuer)
            failure = ""
        except Exception as error:  # any answer at all from an issuer is its fault, never ours: a 503
            keys, failure = None, f"{type(error).__name__}: {error}"[:500]
        with self._lock:
            if keys is not None:
                state.keys, state.fetched_at = keys, self._clock()
            state.failure, state.fetch = failure, None
        fetch.done.set()

    def _cached(self, issuer: TrustedIssuer, state: _Issuer, now: float, kid: str) -> jwt.PyJWK | None:
        usable = state.fetched_at is not None and now - state.fetched_at < self._stale
        if usable and (kid in state.keys or state.fetch is None):
            return state.keys.get(kid)
        if state.fetch is not None:  # an unknown kid may be in the keys on their way: not a refusal yet
            why = "are being fetched"
        else:
            why = f"cannot be fetched ({state.failure})" if state.failure else "expired"
        raise KeysUnavailable(f"the keys of {issuer.issuer} {why}", self._retry_after(state, now))

    def _retry_after(self, state: _Issuer, now: float) -> int:
        if state.fetch is not None and state.fetch.deadline > time.monotonic():
            return math.ceil(max(state.fetch.deadline - time.monotonic(), 1))
        since = now - (state.attempted_at if state.attempted_at is not None else now)
        return math.ceil(max(self._cooldown - since, 1))

    def _fetch(self, issuer: TrustedIssuer) -> dict[str, jwt.PyJWK]:
        jwks_uri = issuer.jwks_uri
        if jwks_uri is None:
            discovery = self._get_json(f"{issuer.issuer.rstrip('/')}/.well-known/openid-configuration")
            jwks_uri = discovery.get("jwks_uri") if isinstance(discovery, dict) else None
            if not isinstance(jwks_uri, str):
                raise IssuerAnswerInvalid("the discovery document names no jwks_uri")
            if not secure_url(jwks_uri):
                raise IssuerAnswerInvalid(f"the discovery document's jwks_uri {jwks_uri[:200]!r} is not https "
                                 "(plain http only on loopback)")
        document = self._get_json(jwks_uri)
        if not isinstance(document, dict) or not isinstance(document.get("keys"), list):
            raise IssuerAnswerInvalid(f"{jwks_uri[:200]} is not a JWK set (an object with a keys list)")
        return _parse(document)

    def _get_json(self, url: str) -> Any:
        response = self._client.request("GET", f"issuer {url[:200]}", url, policy=FETCH_POLICY)
        if response.status != 200:
            raise IssuerAnswerInvalid(f"HTTP {response.status} from {url[:200]}")
        return json.loads(response.body)


def _parse(document: dict[str, Any]) -> dict[str, jwt.PyJWK]:
    """Keys by kid. JWKs without ``alg`` or ``use`` are kept; the verifier checks the key type fits. Public
    keys only."""
    keys = {}
    for item in document.get("keys", []):
        if not isinstance(item, dict) or item.get("use", "sig") != "sig" or not isinstance(item.get("kid"), str):
            continue
        algorithm = item.get("alg") or {"RSA": "RS256", "EC": "ES256"}.get(str(item.get("kty", "")))
        if algorithm not in ("RS256", "ES256"):
            continue
        try:
            key = jwt.PyJWK(item, algorithm=algorithm)
        except Exception:  # a malformed JWK (wrong types too) is skipped, like a foreign one
            continue
        # With private parameters ("d") PyJWT builds a private key: an RSA one cannot verify (an
        # AttributeError, a 500), and a key its issuer published whole proves nothing, since anyone can sign.
        if isinstance(key.key, RSAPublicKey | EllipticCurvePublicKey):
            keys[item["kid"]] = key
    return keys
