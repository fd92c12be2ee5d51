"""The ``jwt-bearer`` flow (RFC 7523 section 2.1): a signed assertion as the grant.

The assertion must come from an issuer the policy trusts (Kubernetes projected
service-account tokens, CI tokens, any OIDC issuer), be signed with RS256 or
ES256 by one of its published keys, name this broker in ``aud``, be within its
validity (bounded clock skew, bounded lifetime) and, for single-use issuers,
not be seen before (on this instance, or on any with ``REDIS_URL``).
"""

from __future__ import annotations

import base64
import json
import time
import unicodedata
from collections.abc import Callable
from dataclasses import replace
from typing import Any, NamedTuple

import jwt

from token_service.errors import (
    KeysUnavailable,
    OAuthError,
    Reason,
    StateUnavailable,
    invalid_grant,
    temporarily_unavailable,
)
from token_service.flows.issuer_keys import JwksCache
from token_service.flows.subjects import assertion_subject
from token_service.policy import Policy, TrustedIssuer
from token_service.state import ReplayStore
from token_service.state.replay_cache import ReplayCache

MAX_ASSERTION_BYTES = 8 * 1024
CLOCK_SKEW_SECONDS = 60
ALGORITHMS = ("RS256", "ES256")
# 9999-12-31T23:59:59Z: a NumericDate beyond it is no date any clock will reach.
MAX_NUMERIC_DATE = 253_402_300_799
# An assertion must leave at least this long before its exp: the token it earns never outlives it, and a
# token of a few seconds (or of none, inside the clock skew) is useless to the client. 30 s, not more, so
# that issuers of one-minute assertions (CI systems) still work after delivery and a little clock skew.
MIN_REMAINING_SECONDS = 30
# Header and payload nest at most this deep: real assertions nest two or three levels, and anything
# that walks a deeper claim (the JSON decoder, a policy's claim match, repr) could exhaust the stack.
MAX_JSON_DEPTH = 32
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
        """The broker's subject for this client: one per (issuer, sub), within WIF's 127 bytes."""
        return assertion_subject(self.issuer.name, self.subject)


class AssertionVerifier:
    def __init__(self, policy: Policy, audiences: tuple[str, ...], keys: JwksCache,
                 replays: ReplayStore | None = None, clock: Callable[[], float] = time.time):
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
        claimed = unverified.get("iss")
        claimed = claimed if isinstance(claimed, str) else ""
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
            raise invalid_grant(f"The assertion must be signed with RS256 or ES256, not {_shown(algorithm)}",
                                Reason.INVALID_ASSERTION)
        if header.get("cty") or header.get("crit"):
            raise invalid_grant("Nested or critical-extension assertions are not accepted", Reason.INVALID_ASSERTION)
        try:
            key = self._keys.key(issuer, kid if isinstance(kid, str) else "")
        except KeysUnavailable as error:
            raise temporarily_unavailable(f"The keys of issuer {issuer.name} are unavailable ({error})",
                                          error.retry_after, Reason.ISSUER_KEYS_UNAVAILABLE) from None
        if key is None or key.algorithm_name != algorithm:
            raise invalid_grant(f"Issuer {issuer.name} publishes no {algorithm} key with kid {_shown(kid, 64)}",
                                Reason.INVALID_ASSERTION)
        claims = self._verified_claims(assertion, key, algorithm, issuer)
        if issuer.single_use:
            jti = claims.get("jti")
            if not isinstance(jti, str) or not jti:
                raise invalid_grant(f"Issuer {issuer.name} requires single-use assertions with a jti",
                                    Reason.INVALID_ASSERTION)
            # Only looked up here; recorded by record_use once the policy has granted it.
            try:
                seen = self._replays.seen(_replay_key(issuer, jti))
            except StateUnavailable as error:
                raise _replay_store_unavailable(error) from None
            if seen:
                raise _replayed()
        return VerifiedAssertion(issuer, claims)

    def record_use(self, verified: VerifiedAssertion) -> None:
        """Spend a single-use assertion, once it passed every check including the policy; refuses a replay
        that raced the first use past ``verify``."""
        if not verified.issuer.single_use:
            return
        expires_at = verified.claims["exp"] + CLOCK_SKEW_SECONDS
        try:
            first = self._replays.first_use(_replay_key(verified.issuer, verified.claims["jti"]), expires_at)
        except StateUnavailable as error:
            # Fail closed: without the shared record, a replay at another instance would go unnoticed.
            raise _replay_store_unavailable(error) from None
        if not first:
            raise _replayed()

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
        dates = (("iat", iat), ("exp", exp), *((("nbf", claims["nbf"]),) if "nbf" in claims else ()))
        for name, value in dates:
            # PyJWT lets "1700000000" (a string int() accepts) through; RFC 7519 NumericDate is a number.
            # Bounded too: JSON integers are not, and one past 1.8e308 overflows arithmetic with the
            # clock's float. Comparisons are exact for any int, and false for NaN.
            if (not isinstance(value, int | float) or isinstance(value, bool)
                    or not -MAX_NUMERIC_DATE <= value <= MAX_NUMERIC_DATE):
                raise invalid_grant(f"The assertion's {name} must be a number (seconds since the epoch)",
                                    Reason.INVALID_ASSERTION)
        if iat > now + CLOCK_SKEW_SECONDS:
            raise invalid_grant("The assertion's iat is in the future", Reason.INVALID_ASSERTION)
        if exp <= now:  # accepted by the skew, but a token from it would be born expired
            raise invalid_grant("The assertion has expired", Reason.INVALID_ASSERTION)
        if exp - now < MIN_REMAINING_SECONDS:
            raise invalid_grant(f"The assertion expires in {int(exp - now)} s; it must have at least "
                                f"{MIN_REMAINING_SECONDS} s left to earn a token", Reason.INVALID_ASSERTION)
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


def _replay_key(issuer: TrustedIssuer, jti: str) -> str:
    return f"{issuer.name}\0{jti}"


def _replayed() -> OAuthError:
    return invalid_grant("This assertion was already used", Reason.ASSERTION_REPLAYED)


def _replay_store_unavailable(error: StateUnavailable) -> OAuthError:
    refusal = temporarily_unavailable(f"The replay store is unavailable; retry after {error.retry_after} s",
                                      error.retry_after, Reason.REPLAY_STORE_UNAVAILABLE)
    return replace(refusal, audit_labels=(("replay_store_error", error.detail[:200]),))


def _shown(value: Any, limit: int = 20) -> str:
    """A header value for a message: strings quoted and cut, anything else by type (repr could recurse)."""
    return repr(value[:limit]) if isinstance(value, str) else type(value).__name__


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
    except (ValueError, UnicodeDecodeError, RecursionError):  # RecursionError: thousands of nested brackets
        raise invalid_grant("The assertion is not a well-formed JWT", Reason.INVALID_ASSERTION) from None
    if not isinstance(header, dict) or not isinstance(payload, dict):
        raise invalid_grant("The assertion is not a well-formed JWT", Reason.INVALID_ASSERTION)
    if _depth(header) > MAX_JSON_DEPTH or _depth(payload) > MAX_JSON_DEPTH:
        raise invalid_grant(f"The assertion nests JSON more than {MAX_JSON_DEPTH} levels deep",
                            Reason.INVALID_ASSERTION)
    return header, payload


def _depth(document: Any) -> int:
    """How deep arrays and objects nest (iteratively: a recursive walk is what the limit guards against)."""
    deepest, pending = 0, [(document, 1)]
    while pending:
        value, level = pending.pop()
        if isinstance(value, dict | list):
            deepest = max(deepest, level)
            pending.extend((item, level + 1) for item in (value.values() if isinstance(value, dict) else value))
    return deepest
