"""The ``jwt-bearer`` flow (RFC 7523 section 2.1): a signed assertion as the grant.

The assertion must come from an issuer the policy trusts (Kubernetes projected
service-account tokens, CI tokens, any OIDC issuer), be signed with RS256 or
ES256 by one of its published keys, name this broker in ``aud``, be within its
validity (bounded clock skew, bounded lifetime) and, for single-use issuers,
not be seen before on this instance.
"""

from __future__ import annotations

import base64
import json
import threading
import time
import unicodedata
from collections.abc import Callable
from dataclasses import replace
from typing import Any, NamedTuple

import jwt

from token_service.errors import OAuthError, Reason, invalid_grant, temporarily_unavailable
from token_service.jwks_cache import JwksCache, KeysUnavailable
from token_service.policy import Policy, TrustedIssuer

MAX_ASSERTION_BYTES = 8 * 1024
CLOCK_SKEW_SECONDS = 60
ALGORITHMS = ("RS256", "ES256")
MAX_SUBJECT_BYTES = 127
# Controls (C0, C1), format characters (bidi overrides and isolates, zero-width, BOM), surrogates and the
# line/paragraph separators: in a sub they would make the token's sub and the audit line show a
# different identity than the one it is.
_HIDDEN_CATEGORIES = frozenset({"Cc", "Cf", "Cs", "Zl", "Zp"})


class VerifiedAssertion(NamedTuple):
    issuer: TrustedIssuer
    claims: dict[str, Any]

    @property
    def subject(self) -> str:
        return str(self.claims["sub"])

    @property
    def audiences(self) -> tuple[str, ...]:
        audience = self.claims.get("aud")
        return (audience,) if isinstance(audience, str) else tuple(str(item) for item in audience or ())

    @property
    def client_id(self) -> str:
        """The broker's subject for this client: unique per (issuer, sub)."""
        return f"jwt:{self.issuer.name}:{self.subject}"


class ReplayCache:
    """``jti`` values seen on this instance, each kept until its assertion expires."""

    def __init__(self, limit: int = 100_000, clock: Callable[[], float] = time.time):
        self._seen: dict[str, float] = {}
        self._limit = limit
        self._clock = clock
        self._lock = threading.Lock()

    def first_use(self, key: str, expires_at: float) -> bool:
        with self._lock:
            now = self._clock()
            if len(self._seen) >= self._limit:
                self._seen = {k: exp for k, exp in self._seen.items() if exp > now}
            if len(self._seen) >= self._limit:
                return False  # full of live entries: refusing is the safe answer
            if self._seen.get(key, 0) > now:
                return False
            self._seen[key] = expires_at
            return True


class AssertionVerifier:
    def __init__(self, policy: Policy, audiences: tuple[str, ...], keys: JwksCache,
                 replays: ReplayCache | None = None, clock: Callable[[], float] = time.time):
        self._by_issuer = {issuer.issuer: issuer for issuer in policy.issuers.values()}
        self._audiences = audiences
        self._keys = keys
        self._replays = replays or ReplayCache(clock=clock)
        self._clock = clock

    def verify(self, assertion: str) -> VerifiedAssertion:
        if not assertion:
            raise invalid_grant("The assertion parameter is required", Reason.INVALID_ASSERTION)
        if len(assertion) > MAX_ASSERTION_BYTES:
            raise invalid_grant(f"The assertion exceeds {MAX_ASSERTION_BYTES} bytes", Reason.INVALID_ASSERTION)
        header, unverified = _peek(assertion)
        claimed = str(unverified.get("iss", ""))
        try:
            return self._verify(assertion, header, claimed)
        except OAuthError as error:
            # The claimed issuer (unverified, bounded) tells operators whose tokens are failing.
            raise replace(error, audit_labels=(*error.audit_labels, ("assertion_iss", claimed[:200]))) from None

    def _verify(self, assertion: str, header: dict[str, Any], claimed_issuer: str) -> VerifiedAssertion:
        issuer = self._by_issuer.get(claimed_issuer)
        if issuer is None:
            raise invalid_grant(f"The assertion's issuer {claimed_issuer[:100]!r} is not trusted by "
                                "this token service's policy", Reason.UNTRUSTED_ISSUER)
        algorithm, kid = header.get("alg"), header.get("kid")
        if algorithm not in ALGORITHMS:
            raise invalid_grant(f"The assertion must be signed with RS256 or ES256, not {str(algorithm)[:20]!r}",
                                Reason.INVALID_ASSERTION)
        if header.get("cty") or header.get("crit"):
            raise invalid_grant("Nested or critical-extension assertions are not accepted", Reason.INVALID_ASSERTION)
        try:
            key = self._keys.key(issuer, str(kid or ""))
        except KeysUnavailable as error:
            raise temporarily_unavailable(f"The keys of issuer {issuer.name} are unavailable ({error})",
                                          error.retry_after, Reason.ISSUER_KEYS_UNAVAILABLE) from None
        if key is None or key.algorithm_name != algorithm:
            raise invalid_grant(f"Issuer {issuer.name} publishes no {algorithm} key with kid {str(kid)[:64]!r}",
                                Reason.INVALID_ASSERTION)
        claims = self._verified_claims(assertion, key, algorithm, issuer)
        if issuer.single_use:
            jti = claims.get("jti")
            if not isinstance(jti, str) or not jti:
                raise invalid_grant(f"Issuer {issuer.name} requires single-use assertions with a jti",
                                    Reason.INVALID_ASSERTION)
            if not self._replays.first_use(f"{issuer.name}\0{jti}", claims["exp"] + CLOCK_SKEW_SECONDS):
                raise invalid_grant("This assertion was already used", Reason.ASSERTION_REPLAYED)
        verified = VerifiedAssertion(issuer, claims)
        if len(verified.client_id.encode()) > MAX_SUBJECT_BYTES:
            raise OAuthError(400, "invalid_grant", f"The client id {verified.client_id[:60]!r}... is over "
                             f"{MAX_SUBJECT_BYTES} bytes, the limit of google.subject", Reason.CLIENT_ID_TOO_LONG)
        return verified

    def _verified_claims(self, assertion: str, key: jwt.PyJWK, algorithm: str, issuer: TrustedIssuer) -> dict:
        try:
            claims = jwt.decode(
                assertion, key.key, algorithms=[algorithm], audience=list(self._audiences), issuer=issuer.issuer,
                leeway=CLOCK_SKEW_SECONDS, options={"require": ["iss", "sub", "aud", "exp", "iat"]},
            )
        except jwt.ExpiredSignatureError:
            raise invalid_grant("The assertion has expired", Reason.INVALID_ASSERTION) from None
        except jwt.ImmatureSignatureError:
            raise invalid_grant("The assertion's iat or nbf is in the future", Reason.INVALID_ASSERTION) from None
        except jwt.InvalidAudienceError:
            raise invalid_grant(f"The assertion's aud must name this token service ({self._audiences[0]})",
                                Reason.INVALID_ASSERTION) from None
        except jwt.PyJWTError as error:
            raise invalid_grant(f"The assertion is invalid: {error}", Reason.INVALID_ASSERTION) from None
        now = self._clock()
        iat, exp = claims["iat"], claims["exp"]
        if not isinstance(iat, int | float) or iat > now + CLOCK_SKEW_SECONDS:
            raise invalid_grant("The assertion's iat is in the future", Reason.INVALID_ASSERTION)
        if exp - iat > issuer.max_assertion_lifetime:
            raise invalid_grant(f"The assertion's lifetime exceeds {issuer.max_assertion_lifetime} s, the limit "
                                f"for issuer {issuer.name}", Reason.INVALID_ASSERTION)
        if not isinstance(claims["sub"], str) or not claims["sub"]:
            raise invalid_grant("The assertion's sub must be a non-empty string", Reason.INVALID_ASSERTION)
        hidden = _first_hidden_character(claims["sub"])
        if hidden is not None:
            raise invalid_grant(f"The assertion's sub contains a control or invisible formatting character "
                                f"(U+{ord(hidden[1]):04X} at position {hidden[0]})", Reason.INVALID_ASSERTION)
        return claims


def _first_hidden_character(text: str) -> tuple[int, str] | None:
    return next(((index, char) for index, char in enumerate(text)
                 if unicodedata.category(char) in _HIDDEN_CATEGORIES), None)


def _peek(assertion: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """Header and payload before verification (to pick the issuer and key); strict JSON objects only."""
    parts = assertion.split(".")
    if len(parts) != 3:
        raise invalid_grant("The assertion is not a signed JWT (three base64url parts)", Reason.INVALID_ASSERTION)
    try:
        header, payload = (json.loads(base64.urlsafe_b64decode(part + "=" * (-len(part) % 4))) for part in parts[:2])
    except (ValueError, UnicodeDecodeError):
        raise invalid_grant("The assertion is not a well-formed JWT", Reason.INVALID_ASSERTION) from None
    if not isinstance(header, dict) or not isinstance(payload, dict):
        raise invalid_grant("The assertion is not a well-formed JWT", Reason.INVALID_ASSERTION)
    return header, payload
