"""The client policy's rules and how a request is decided against them.

A rule matches a client by what it proved (certificate, signed assertion or
client secret) and says what it may receive. Once a policy is loaded, a client
no rule matches gets nothing (deny by default); without a policy, any client
the load balancer verified gets its ID token and may ask for any exchange, as
the predecessor behaved. ``loader`` reads and validates the YAML file.
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType
from typing import Any, NamedTuple

from token_service.errors import OAuthError, Reason
from token_service.policy.patterns import matches

MAX_SECRET_HASHES = 2  # the current secret and, during a rotation, the next


class TrustedIssuer(NamedTuple):
    name: str
    issuer: str
    jwks_uri: str | None  # None: discovery at <issuer>/.well-known/openid-configuration
    jwks: dict[str, Any] | None  # inline keys (clusters whose issuer is not reachable)
    single_use: bool
    max_assertion_lifetime: int


class CertificateMatch(NamedTuple):
    spiffe_id: tuple[str, ...] = ()
    dns_san: tuple[str, ...] = ()
    uri_san: tuple[str, ...] = ()
    sha256: tuple[str, ...] = ()


class AssertionMatch(NamedTuple):
    issuer: str  # a TrustedIssuer name
    subject: tuple[str, ...] = ()
    audience: tuple[str, ...] = ()
    claims: tuple[tuple[str, tuple[str, ...]], ...] = ()


class SecretMatch(NamedTuple):
    client_id: str
    secret_hashes: tuple[str, ...]


class Allowance(NamedTuple):
    service_accounts: tuple[str, ...] = ()
    scopes: tuple[str, ...] = ()
    audiences: tuple[str, ...] = ()
    max_token_lifetime: int | None = None
    claims: Mapping[str, Any] = MappingProxyType({})


class Rule(NamedTuple):
    name: str
    certificate: CertificateMatch | None
    assertion: AssertionMatch | None
    client_secret: SecretMatch | None
    allow: Allowance


class ClientFacts(NamedTuple):
    """What a client proved, flattened for matching."""

    flow: str
    spiffe_id: str = ""
    dns_sans: tuple[str, ...] = ()
    uri_sans: tuple[str, ...] = ()
    sha256: str = ""
    issuer_name: str = ""
    subject: str = ""
    audiences: tuple[str, ...] = ()
    claims: Mapping[str, Any] = MappingProxyType({})
    secret_client_id: str = ""


class Grant(NamedTuple):
    rule: str  # "" when no policy is loaded
    max_token_lifetime: int | None
    extra_claims: dict[str, Any]


OPEN_GRANT = Grant(rule="", max_token_lifetime=None, extra_claims={})


class Policy(NamedTuple):
    issuers: dict[str, TrustedIssuer]
    rules: tuple[Rule, ...]
    source: str

    def secret_rule(self, client_id: str) -> Rule | None:
        return next((rule for rule in self.rules
                     if rule.client_secret and rule.client_secret.client_id == client_id), None)

    def decide(
        self, client: ClientFacts, scopes: tuple[str, ...], service_account: str | None, audience: str | None
    ) -> Grant:
        """The grant of the first rule that matches, or ``OAuthError`` (403) naming what failed."""
        rule = next((rule for rule in self.rules if _matches(rule, client)), None)
        if rule is None:
            raise OAuthError(403, "unauthorized_client",
                             f"No rule of the token service policy admits this client ({len(self.rules)} rules "
                             f"checked); ask its operators to add one", Reason.POLICY_DENIED,
                             audit_labels=(("policy_rule", ""),))
        allow = rule.allow

        def refuse(what: str) -> OAuthError:
            return OAuthError(403, "access_denied", f"Policy rule '{rule.name}' does not allow {what}",
                              Reason.POLICY_DENIED, audit_labels=(("policy_rule", rule.name),))

        denied_scopes = [scope for scope in scopes if scope not in allow.scopes]
        if denied_scopes:
            raise refuse(f"the scope {denied_scopes[0]!r}")
        if service_account and not _any_glob(allow.service_accounts, service_account):
            raise refuse(f"impersonating {service_account}")
        if audience and not _any_glob(allow.audiences, audience):
            raise refuse(f"ID tokens for the audience {audience!r}")
        return Grant(rule.name, allow.max_token_lifetime, dict(allow.claims))


def _matches(rule: Rule, client: ClientFacts) -> bool:
    if rule.certificate is not None:
        match = rule.certificate
        if not client.sha256 or client.flow != "xlb-mtls-client-credentials":
            return False
        return (
            (not match.spiffe_id or _any_glob(match.spiffe_id, client.spiffe_id))
            and (not match.dns_san or any(_any_glob(match.dns_san, san) for san in client.dns_sans))
            and (not match.uri_san or any(_any_glob(match.uri_san, san) for san in client.uri_sans))
            and (not match.sha256 or client.sha256.rstrip("=") in match.sha256)
        )
    if rule.assertion is not None:
        match = rule.assertion
        return (
            client.flow == "jwt-bearer"
            and client.issuer_name == match.issuer
            and (not match.subject or _any_glob(match.subject, client.subject))
            and (not match.audience or any(_any_glob(match.audience, aud) for aud in client.audiences))
            and all(_any_glob(patterns, _claim(client.claims, path)) for path, patterns in match.claims)
        )
    if rule.client_secret is not None:
        return client.flow == "client-secret" and client.secret_client_id == rule.client_secret.client_id
    return False


def _any_glob(patterns: tuple[str, ...], value: str) -> bool:
    return matches(patterns, value)


def _claim(claims: Mapping[str, Any], path: str) -> str:
    """A claim by ``/``-separated path (``kubernetes.io/namespace``); non-strings as their JSON text."""
    value: Any = claims
    for part in path.split("/"):
        value = value.get(part) if isinstance(value, Mapping) else None
    if value is None:
        return ""
    return value if isinstance(value, str) else str(value).lower() if isinstance(value, bool) else str(value)
