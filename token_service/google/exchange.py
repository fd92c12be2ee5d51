"""The optional Google step after the ID token: STS, then impersonation.

``scope``                       -> STS federated access token for the client's principal
``scope`` + ``service_account`` -> STS token (cloud-platform) -> generateAccessToken
``service_account`` + ``audience`` -> STS token (cloud-platform) -> generateIdToken

Google's refusals become 403 ``access_denied`` whose description says what was
refused and what to check; Google being unavailable becomes 503 with
``Retry-After``. The upstream error body goes to the audit line only.
"""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Mapping
from types import MappingProxyType
from typing import NamedTuple

from token_service.errors import (
    IamRefused,
    Reason,
    StsRefused,
    UpstreamUnavailable,
    access_denied,
    invalid_request,
    temporarily_unavailable,
    upstream_unavailable,
)
from token_service.google.iam_credentials import SERVICE_ACCOUNT_EMAIL, IamCredentialsClient
from token_service.google.sts import ACCESS_TOKEN_TYPE, ID_TOKEN_TYPE, StsClient
from token_service.google.workload_identity import CLOUD_PLATFORM_SCOPE, WorkloadIdentityProvider

MAX_SCOPES = 20
_SCOPE_TOKEN = re.compile(r"^[\x21\x23-\x5b\x5d-\x7e]{1,256}$")  # RFC 6749 scope-token
_SERVICE_ACCOUNT = re.compile(rf"^({SERVICE_ACCOUNT_EMAIL}|\d{{21}})$")  # an email or a unique id
_AUDIENCE = re.compile(r"^[\x21-\x7e]{1,1024}$")
SLOT_WAIT_SECONDS = 1.0


class ExchangeRequest(NamedTuple):
    scopes: tuple[str, ...] = ()
    service_account: str | None = None
    audience: str | None = None

    @property
    def wanted(self) -> bool:
        return bool(self.scopes or self.service_account or self.audience)


class ExchangedToken(NamedTuple):
    """What goes beside the ID token in the response (RFC 8693 section 2.2.1 names)."""

    access_token: str
    issued_token_type: str
    expires_in: int
    scope: str | None
    summary: str  # for the audit message, e.g. "an access token of sa@..."
    audit: Mapping[str, str] = MappingProxyType({})


def parse_exchange_request(parameters: dict[str, str]) -> ExchangeRequest:
    """Validate ``scope``, ``service_account`` and ``audience`` and their combination."""
    scope = parameters.get("scope", "")
    scopes = tuple(scope.split(" ")) if scope else ()
    if scopes and (len(scopes) > MAX_SCOPES or not all(_SCOPE_TOKEN.match(item) for item in scopes)):
        raise invalid_request(f"The scope parameter must be up to {MAX_SCOPES} space-separated scopes")
    service_account = parameters.get("service_account") or None
    if service_account is not None and not _SERVICE_ACCOUNT.match(service_account):
        raise invalid_request(
            f"The service_account parameter {service_account[:80]!r} is not a service account email"
        )
    audience = parameters.get("audience") or None
    if audience is not None and not _AUDIENCE.match(audience):
        raise invalid_request("The audience parameter must be a printable URI of at most 1024 characters")
    if audience is not None and (scopes or service_account is None):
        raise invalid_request(
            "audience asks for a Google-signed ID token of a service account: send it with "
            "service_account and without scope"
        )
    if service_account is not None and not scopes and audience is None:
        raise invalid_request(
            "service_account needs scope (for an access token) or audience (for an ID token)"
        )
    return ExchangeRequest(scopes, service_account, audience)


class GoogleExchange:
    def __init__(
        self,
        provider: WorkloadIdentityProvider,
        sts: StsClient,
        iam: IamCredentialsClient,
        service_account_token_lifetime: int,
        max_concurrent: int = 8,
    ):
        self._provider = provider
        self._sts = sts
        self._iam = iam
        self._lifetime = service_account_token_lifetime
        self._slots = threading.BoundedSemaphore(max_concurrent)

    def exchange(self, request: ExchangeRequest, id_token: str, client_id: str) -> ExchangedToken:
        """Run the requested exchange or raise ``OAuthError``."""
        # A bulkhead: when Google is slow or hung, at most this many threads wait on it, and a
        # request that finds no slot within SLOT_WAIT_SECONDS is refused, so the other threads
        # stay free. A healthy exchange frees its slot well within that wait.
        if not self._slots.acquire(timeout=SLOT_WAIT_SECONDS):
            raise temporarily_unavailable("Too many requests are waiting on Google; retry after 2 s", 2)
        try:
            return self._exchange(request, id_token, client_id)
        finally:
            self._slots.release()

    def _exchange(self, request: ExchangeRequest, id_token: str, client_id: str) -> ExchangedToken:
        principal = self._provider.principal(client_id)
        impersonating = request.service_account is not None
        # Impersonation needs an STS token that may call IAM; the client's scopes go on the SA token.
        sts_scope = CLOUD_PLATFORM_SCOPE if impersonating else " ".join(request.scopes)
        try:
            federated = self._sts.exchange(id_token, self._provider.sts_audience, sts_scope)
        except StsRefused as refusal:
            raise access_denied(
                f"Google STS refused the ID token ({refusal.error}: {refusal.description[:300]}). Check "
                f"that provider {self._provider.resource_name} exists, is enabled, and trusts this issuer",
                Reason.STS_REFUSED, {"upstream": "sts", "upstream_status": str(refusal.status)}, refusal.body,
            ) from None
        except UpstreamUnavailable as failure:
            raise upstream_unavailable(failure) from None
        if not impersonating:
            return ExchangedToken(
                federated.access_token, ACCESS_TOKEN_TYPE, federated.expires_in, federated.scope,
                "an STS access token", {"exchange": "sts", "principal": principal},
            )
        assert request.service_account is not None
        audit = {"exchange": "impersonation", "principal": principal, "service_account": request.service_account}
        try:
            if request.audience is not None:
                audit["exchange"] = "service_account_id_token"
                token = self._iam.generate_id_token(request.service_account, federated.access_token,
                                                    request.audience)
                return ExchangedToken(token, ID_TOKEN_TYPE, _seconds_left(token), None,
                                      f"an ID token of {request.service_account}", audit)
            granted = self._iam.generate_access_token(
                request.service_account, federated.access_token, list(request.scopes), self._lifetime
            )
        except IamRefused as refusal:
            raise access_denied(
                f"Google IAM refused {refusal.method} for {request.service_account} ({refusal.code}: "
                f"{refusal.message[:300]}). Check that {principal} has roles/iam.workloadIdentityUser "
                "on the service account",
                Reason.IMPERSONATION_REFUSED,
                {**audit, "upstream": "iam", "upstream_status": str(refusal.status)}, refusal.body,
            ) from None
        except UpstreamUnavailable as failure:
            raise upstream_unavailable(failure) from None
        return ExchangedToken(
            granted.token, ACCESS_TOKEN_TYPE, max(0, granted.expires_at - int(time.time())),
            " ".join(request.scopes), f"an access token of {request.service_account}", audit,
        )


def _seconds_left(id_token: str) -> int:
    """How long an ID token Google just signed stays valid (its signature is Google's business)."""
    import jwt  # only the service-account ID token path needs it

    try:
        return max(0, int(jwt.decode(id_token, options={"verify_signature": False})["exp"]) - int(time.time()))
    except (jwt.PyJWTError, KeyError, TypeError, ValueError):
        return 0
