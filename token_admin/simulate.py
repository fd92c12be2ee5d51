"""``simulate``: the decision and ID token claims a request would get, computed by the function's code.

A certificate is rendered as the load balancer's headers and read by the live
mTLS flow; an assertion's claims (its signature and times unchecked) and a
client-secret client id go through the live flows' constructors; the policy
decides as it does for a request; the claims come from ``issued_claims``, which
the service signs. Nothing is signed and no Google API is called.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

import jwt
from cryptography import x509

from token_admin.load_balancer import certificate_headers
from token_service.config import MTLS_HEADER_DEFAULTS, Settings, load_settings
from token_service.errors import ConfigurationError, OAuthError
from token_service.flows import authentication
from token_service.flows import rfc8705_mtls as mtls
from token_service.flows.authentication import AuthenticatedClient
from token_service.flows.rfc7523_jwt_bearer import VerifiedAssertion
from token_service.google.exchange import parse_exchange_request
from token_service.policy import Policy, load_policy
from token_service.service import issued_claims

# Only iss and aud depend on these: a simulation needs no deployment.
PLACEHOLDERS = {"TOKEN_ISSUER": "https://token-service.invalid", "WORKLOAD_IDENTITY_PROJECT_NUMBER": "1",
                "WORKLOAD_IDENTITY_POOL_ID": "simulated", "WORKLOAD_IDENTITY_PROVIDER_ID": "simulated"}
RUNTIME_VARIABLES = ("AUTH_FLOWS", "POLICY_FILE", "TOKEN_SIGNER", "SIGNING_KEY_FILE", "K_SERVICE", "PROXY_SECRETS")


def simulate(
    policy_file: str,
    parameters: Mapping[str, str],
    environ: Mapping[str, str],
    *,
    certificate_pem: bytes | None = None,
    assertion: str | None = None,
    client_id: str | None = None,
    token_validity_seconds: int | None = None,
) -> dict[str, Any]:
    """Exactly one of ``certificate_pem``, ``assertion`` and ``client_id`` names the client."""
    policy = load_policy(policy_file)
    settings = _settings(environ)
    if token_validity_seconds is not None:
        settings = settings._replace(token_validity_seconds=token_validity_seconds)
    try:
        wanted = parse_exchange_request(dict(parameters))
    except OAuthError as error:
        return {"decision": "invalid_request", "description": error.description}
    now = time.time()
    try:
        client = _client(settings, policy, now, certificate_pem, assertion, client_id)
    except OAuthError as error:  # the live flow refuses this proof before any rule is consulted
        return {"decision": "deny", "error": error.error, "description": error.description, "rule": ""}
    result: dict[str, Any] = {"flow": client.flow, "client_id": client.client_id}
    try:
        grant = policy.decide(client.facts, wanted.scopes, wanted.service_account, wanted.audience)
        claims = issued_claims(settings, client, grant, now)
    except OAuthError as error:
        return {**result, "decision": "deny", "error": error.error, "description": error.description,
                "rule": dict(error.audit_labels).get("policy_rule", "")}
    return {**result, "decision": "allow", "rule": grant.rule,
            "token_lifetime_seconds": claims.expires_at - claims.payload["iat"],
            "proof_valid_until": client.valid_until, "claims": claims.payload}


def _settings(environ: Mapping[str, str]) -> Settings:
    # The function's deployment-only variables would ask for files and secrets a simulation does not use.
    relevant = {name: value for name, value in environ.items() if name not in RUNTIME_VARIABLES}
    return load_settings({**PLACEHOLDERS, **relevant})


def _client(settings: Settings, policy: Policy, now: float, certificate_pem: bytes | None, assertion: str | None,
            client_id: str | None) -> AuthenticatedClient:
    if certificate_pem is not None:
        names = {attribute: getattr(settings.mtls_headers, attribute) for attribute in MTLS_HEADER_DEFAULTS}
        headers = certificate_headers(x509.load_pem_x509_certificate(certificate_pem), "", names)
        reported = mtls.CertificateHeaders.read({name.lower(): value for name, value in headers.items()},
                                                settings.mtls_headers)
        return authentication.certificate_client(
            mtls.authenticate(reported, settings.mtls_headers, datetime.fromtimestamp(now, tz=UTC)))
    if assertion is not None:
        try:
            claims = jwt.decode(assertion, options={"verify_signature": False})
        except jwt.PyJWTError as error:
            raise ConfigurationError([f"the assertion is not a JWT: {error}"]) from None
        issuer = next((item for item in policy.issuers.values() if item.issuer == claims.get("iss")), None)
        if issuer is None:
            raise ConfigurationError([f"no issuer in the policy has iss {claims.get('iss')!r}"])
        claims.setdefault("sub", "")  # simulate shows what an unverified token would be
        return authentication.assertion_client(VerifiedAssertion(issuer, claims))
    assert client_id is not None
    return authentication.secret_client(client_id, "simulated")
