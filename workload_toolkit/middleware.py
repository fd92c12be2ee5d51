"""Verifying middleware for WSGI (Flask, Django, any WSGI app): bearer tokens checked at the door.

    app.wsgi_app = BearerTokenMiddleware(
        app.wsgi_app,
        issuers=[trusted_issuer("broker", "https://token.example.com")],
        audiences=["https://ledger.example.com"],
        allow=lambda claims: claims["sub"].startswith("jwt:prod-cluster:system:serviceaccount:payments:"),
    )
    # in a view: claims = request.environ["workload_toolkit.claims"]

A token is accepted when it is a JWT from one of ``issuers`` (our broker, a
Kubernetes cluster, Google), signed with RS256/ES256 by a key its discovery
document publishes, with an ``aud`` in ``audiences`` and ``exp``/``nbf``/``iat``
within ``leeway`` seconds. Keys are cached with unknown-kid refetch and a
cooldown (``keys``: an ``IssuerKeys``, e.g. with ``ca_file`` for a broker under a
private CA). No token: 401 with ``WWW-Authenticate: Bearer``; a bad token: 401
``error="invalid_token"``; a good token that ``allow`` refuses: 403.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Callable, Iterable
from typing import Any

import jwt

from workload_toolkit.issuers import TrustedIssuer, trusted_issuer
from workload_toolkit.keys import SIGNING_ALGORITHMS, IssuerKeys, KeysUnavailable

CLAIMS_KEY = "workload_toolkit.claims"

__all__ = ["CLAIMS_KEY", "BearerTokenMiddleware", "InvalidToken", "trusted_issuer"]


class BearerTokenMiddleware:
    def __init__(
        self,
        app: Callable,
        *,
        issuers: Iterable[TrustedIssuer],
        audiences: Iterable[str],
        allow: Callable[[dict[str, Any]], bool] | None = None,
        leeway: int = 30,
        keys: IssuerKeys | None = None,
        realm: str = "workload",
    ):
        self._app = app
        self._issuers = {issuer.issuer: issuer for issuer in issuers}
        self._audiences = list(audiences)
        self._allow = allow
        self._leeway = leeway
        self._keys = keys or IssuerKeys()
        self._realm = realm

    def __call__(self, environ: dict[str, Any], start_response: Callable) -> Iterable[bytes]:
        authorization = environ.get("HTTP_AUTHORIZATION", "")
        if not authorization.lower().startswith("bearer ") or not authorization[7:].strip():
            return self._deny(start_response, 401, f'Bearer realm="{self._realm}"', "a bearer token is required")
        try:
            claims = self.verify(authorization[7:].strip())
        except InvalidToken as error:
            challenge = f'Bearer realm="{self._realm}", error="invalid_token", error_description="{error}"'
            return self._deny(start_response, 401, challenge, str(error))
        if self._allow is not None and not self._allow(claims):
            challenge = f'Bearer realm="{self._realm}", error="insufficient_scope"'
            return self._deny(start_response, 403, challenge, f"{claims.get('sub')!s:.100} may not call this service")
        environ[CLAIMS_KEY] = claims
        return self._app(environ, start_response)

    def verify(self, token: str) -> dict[str, Any]:
        """The verified claims, or ``InvalidToken`` saying why not."""
        try:
            header = jwt.get_unverified_header(token)
            issuer_claim = json.loads(base64.urlsafe_b64decode(token.split(".")[1] + "==")).get("iss")
        # RecursionError: a few KB of nested brackets exhaust the JSON decoder's stack; that is the
        # caller's malformed token, not this service's failure.
        except (jwt.PyJWTError, ValueError, IndexError, AttributeError, RecursionError):
            raise InvalidToken("not a JWT") from None
        issuer = self._issuers.get(issuer_claim) if isinstance(issuer_claim, str) else None
        if issuer is None:
            raise InvalidToken("the issuer is not trusted")
        algorithm = header.get("alg")
        if algorithm not in SIGNING_ALGORITHMS:
            raise InvalidToken("the signing algorithm is not allowed")
        try:
            kid = header.get("kid")
            key = self._keys.key(issuer, kid if isinstance(kid, str) else "")
        except KeysUnavailable:
            raise InvalidToken("the issuer's keys are unavailable") from None
        if key is None or key.algorithm_name != algorithm:
            raise InvalidToken("unknown signing key")
        try:
            return jwt.decode(token, key.key, algorithms=[algorithm], audience=self._audiences,
                              issuer=issuer.issuer, leeway=self._leeway, options={"require": ["exp", "iss", "aud"]})
        except jwt.ExpiredSignatureError:
            raise InvalidToken("the token has expired") from None
        except jwt.InvalidAudienceError:
            raise InvalidToken("the token is not for this service") from None
        except (jwt.PyJWTError, RecursionError):
            raise InvalidToken("the token is invalid") from None

    @staticmethod
    def _deny(start_response: Callable, status: int, challenge: str, message: str) -> list[bytes]:
        body = json.dumps({"error": "unauthorized" if status == 401 else "forbidden", "message": message}).encode()
        start_response(f"{status} {'Unauthorized' if status == 401 else 'Forbidden'}", [
            ("Content-Type", "application/json"), ("Content-Length", str(len(body))),
            ("WWW-Authenticate", challenge)])
        return [body]


class InvalidToken(Exception):
    pass
