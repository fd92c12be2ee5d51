"""Client policy: which clients may have which tokens.

A YAML file (``POLICY_FILE``) of trusted assertion issuers and ordered rules.
A rule matches a client by what it proved (certificate, signed assertion or
client secret) and says what it may receive. Once a policy is loaded, a client
no rule matches gets nothing (deny by default); without a policy, any client
the load balancer verified gets its ID token and may ask for any exchange, as
the predecessor behaved. Loading validates everything and reports every problem
with its line.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from types import MappingProxyType
from typing import Any, NamedTuple
from urllib.parse import urlsplit

from token_service.errors import ConfigurationError, MalformedValue, OAuthError, Reason
from token_service.mtls import canonical_fingerprint
from token_service.patterns import matches, problem

# Claims the broker sets itself; a rule's extra claims may not replace them.
RESERVED_CLAIMS = frozenset({"iss", "aud", "sub", "iat", "exp", "nbf", "jti", "amr", "client_id", "client",
                             "cnf", "assertion"})
_NAME = re.compile(r"^[a-z0-9][a-z0-9-]{0,39}$")
_CLIENT_ID = re.compile(r"^[A-Za-z0-9._~-]{1,64}$")
_LOOPBACK = ("127.0.0.1", "localhost", "::1")
DEFAULT_MAX_ASSERTION_LIFETIME = 24 * 3600
MAX_SECRET_HASHES = 2  # the current secret and, during a rotation, the next
# What `hash-secret` writes (client_secret.SCRYPT_N, _R, _P; 16-byte salt, 32-byte digest). Nothing
# else: a malformed hash or another cost would make that client's attempts take a different time.
_SECRET_HASH = re.compile(r"^scrypt\$16384\$8\$1\$[A-Za-z0-9+/]{22}==\$[A-Za-z0-9+/]{43}=$")


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


# ---- loading -------------------------------------------------------------------------------------


class _LineDict(dict):
    """A mapping that remembers its line in the policy file, so problems can name it."""

    line = 0


def _load_yaml(text: str) -> Any:
    import yaml  # only deployments with a policy pay for it

    class LineLoader(yaml.SafeLoader):
        pass

    def construct_mapping(loader: LineLoader, node: yaml.MappingNode) -> dict[str, Any]:
        mapping = _LineDict(loader.construct_mapping(node, deep=True))
        mapping.line = node.start_mark.line + 1
        return mapping

    LineLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, construct_mapping)
    return yaml.load(text, Loader=LineLoader)


def load_policy(path: str) -> Policy:
    """Read and validate a policy file; ``ConfigurationError`` lists every problem with its line."""
    import yaml

    try:
        with open(path, encoding="utf-8") as source:
            document = _load_yaml(source.read())
    except OSError as error:
        raise ConfigurationError([f"POLICY_FILE: cannot read {path}: {error.strerror}"]) from None
    except yaml.YAMLError as error:
        raise ConfigurationError([f"POLICY_FILE {path}: not valid YAML: {error}"]) from None
    return parse_policy(document, path)


def parse_policy(document: Any, source: str = "policy") -> Policy:
    checker = _Checker(source)
    if not isinstance(document, dict):
        raise ConfigurationError([f"{source}: the policy must be a mapping with 'rules' (and 'issuers')"])
    checker.keys(document, "policy", {"issuers", "rules"})
    issuers: dict[str, TrustedIssuer] = {}
    for index, item in enumerate(checker.items(document, "issuers", "policy")):
        issuer = _issuer(checker, item, f"issuers[{index}]")
        if issuer is not None:
            if issuer.name in issuers:
                checker.fail(item, f"issuers[{index}]", f"duplicate issuer name {issuer.name!r}")
            issuers[issuer.name] = issuer
    rules: list[Rule] = []
    names: set[str] = set()
    secret_ids: set[str] = set()
    for index, item in enumerate(checker.items(document, "rules", "policy")):
        rule = _rule(checker, item, f"rules[{index}]", issuers)
        if rule is None:
            continue
        if rule.name in names:
            checker.fail(item, f"rules[{index}]", f"duplicate rule name {rule.name!r}")
        names.add(rule.name)
        if rule.client_secret:
            if rule.client_secret.client_id in secret_ids:
                checker.fail(item, f"rules[{index}]", f"client_id {rule.client_secret.client_id!r} in two rules")
            secret_ids.add(rule.client_secret.client_id)
        rules.append(rule)
    if not rules and not checker.problems:
        checker.problems.append(f"{source}: the policy has no rules, so it would refuse every client")
    if checker.problems:
        raise ConfigurationError(checker.problems)
    return Policy(issuers, tuple(rules), source)


class _Checker:
    def __init__(self, source: str):
        self.source = source
        self.problems: list[str] = []

    def fail(self, node: Any, where: str, problem: str) -> None:
        line = getattr(node, "line", 0)
        self.problems.append(f"{self.source} line {line}: {where}: {problem}" if line else
                             f"{self.source}: {where}: {problem}")

    def keys(self, node: dict, where: str, allowed: set[str]) -> None:
        for key in node:
            if key not in allowed:
                self.fail(node, where, f"unknown key {key!r} (allowed: {', '.join(sorted(allowed))})")

    def items(self, node: dict, key: str, where: str) -> list[Any]:
        value = node.get(key, [])
        if not isinstance(value, list):
            self.fail(node, where, f"{key} must be a list")
            return []
        good = []
        for index, item in enumerate(value):
            if isinstance(item, dict):
                good.append(item)
            else:
                self.fail(node, f"{key}[{index}]", "must be a mapping")
        return good

    def text(self, node: dict, key: str, where: str, *, required: bool = False, pattern: re.Pattern | None = None
             ) -> str | None:
        value = node.get(key)
        if value is None:
            if required:
                self.fail(node, where, f"{key} is required")
            return None
        if not isinstance(value, str) or not value or (pattern is not None and not pattern.match(value)):
            self.fail(node, where, f"{key} must be {'a matching ' if pattern else 'a non-empty '}string")
            return None
        return value

    def texts(self, node: dict, key: str, where: str) -> tuple[str, ...]:
        value = node.get(key)
        if value is None:
            return ()
        values = value if isinstance(value, list) else [value]
        if not values or not all(isinstance(item, str) and item for item in values):
            self.fail(node, where, f"{key} must be a string or a list of strings")
            return ()
        return tuple(values)

    def globs(self, node: dict, key: str, where: str) -> tuple[str, ...]:
        """Patterns that identify a client; one that ``patterns.problem`` refuses stops the load, with its line."""
        values = self.texts(node, key, where)
        for value in values:
            refused = problem(value)
            if refused:
                self.fail(node, where, f"{key}: {refused}")
        return values

    def number(self, node: dict, key: str, where: str, low: int, high: int) -> int | None:
        value = node.get(key)
        if value is None:
            return None
        if not isinstance(value, int) or isinstance(value, bool) or not low <= value <= high:
            self.fail(node, where, f"{key} must be a whole number from {low} to {high}")
            return None
        return value


def _issuer(checker: _Checker, node: dict, where: str) -> TrustedIssuer | None:
    checker.keys(node, where, {"name", "issuer", "jwks_uri", "jwks", "single_use", "max_assertion_lifetime"})
    name = checker.text(node, "name", where, required=True, pattern=_NAME)
    issuer = checker.text(node, "issuer", where, required=True)
    jwks_uri = checker.text(node, "jwks_uri", where)
    for label, url in (("issuer", issuer), ("jwks_uri", jwks_uri)):
        if url and not issuer_url_allowed(url):
            checker.fail(node, where, f"{label} must be an https URL (plain http only on loopback)")
    jwks = node.get("jwks")
    if jwks is not None and not (isinstance(jwks, dict) and isinstance(jwks.get("keys"), list) and jwks["keys"]):
        checker.fail(node, where, "jwks must be a JWK set: a mapping with a non-empty 'keys' list")
        jwks = None
    single_use = node.get("single_use", True)
    if not isinstance(single_use, bool):
        checker.fail(node, where, "single_use must be true or false")
    lifetime = checker.number(node, "max_assertion_lifetime", where, 60, 7 * 24 * 3600)
    if name is None or issuer is None:
        return None
    return TrustedIssuer(name, issuer, jwks_uri, dict(jwks) if jwks else None, single_use is not False,
                         lifetime or DEFAULT_MAX_ASSERTION_LIFETIME)


def issuer_url_allowed(url: str) -> bool:
    """Where an issuer's keys may come from: https, or plain http on loopback (local runs and tests).
    Also applied to the ``jwks_uri`` an issuer's discovery names, which the policy never saw."""
    try:
        parts = urlsplit(url)
        host = parts.hostname
    except ValueError:  # e.g. an unclosed IPv6 bracket
        return False
    return bool(host) and (parts.scheme == "https" or (parts.scheme == "http" and host in _LOOPBACK))


def _rule(checker: _Checker, node: dict, where: str, issuers: dict[str, TrustedIssuer]) -> Rule | None:
    checker.keys(node, where, {"name", "certificate", "assertion", "client_secret", "allow"})
    name = checker.text(node, "name", where, required=True, pattern=_NAME)
    kinds = [kind for kind in ("certificate", "assertion", "client_secret") if kind in node]
    if len(kinds) != 1:
        checker.fail(node, where, "a rule matches by exactly one of: certificate, assertion, client_secret")
        return None
    matcher = node[kinds[0]]
    if not isinstance(matcher, dict):
        checker.fail(node, where, f"{kinds[0]} must be a mapping")
        return None
    inner = f"{where}.{kinds[0]}"
    certificate = assertion = secret = None
    if kinds[0] == "certificate":
        checker.keys(matcher, inner, {"spiffe_id", "dns_san", "uri_san", "sha256"})
        certificate = CertificateMatch(
            checker.globs(matcher, "spiffe_id", inner), checker.globs(matcher, "dns_san", inner),
            checker.globs(matcher, "uri_san", inner),
            tuple(_pin(value) for value in checker.texts(matcher, "sha256", inner)),
        )
        if certificate == CertificateMatch():
            checker.fail(matcher, inner, "name at least one of spiffe_id, dns_san, uri_san, sha256 "
                                         "(a rule for every certificate would be a blanket grant)")
    elif kinds[0] == "assertion":
        checker.keys(matcher, inner, {"issuer", "subject", "audience", "claims"})
        issuer = checker.text(matcher, "issuer", inner, required=True)
        if issuer is not None and issuer not in issuers:
            checker.fail(matcher, inner, f"issuer {issuer!r} is not the name of an entry in 'issuers'")
        claims = matcher.get("claims", {})
        if not isinstance(claims, dict):
            checker.fail(matcher, inner, "claims must map claim paths to a value or list of values")
            claims = {}
        claim_patterns = tuple((str(path), checker.globs(claims, path, f"{inner}.claims")) for path in claims)
        assertion = AssertionMatch(issuer or "", checker.globs(matcher, "subject", inner),
                                   checker.globs(matcher, "audience", inner), claim_patterns)
        if not assertion.subject and not claim_patterns:
            checker.fail(matcher, inner, "name a subject or claims to match (not every identity of the issuer)")
    else:
        checker.keys(matcher, inner, {"client_id", "secret_hashes"})
        client_id = checker.text(matcher, "client_id", inner, required=True, pattern=_CLIENT_ID)
        hashes = checker.texts(matcher, "secret_hashes", inner)
        if not 1 <= len(hashes) <= MAX_SECRET_HASHES or not all(_SECRET_HASH.match(value) for value in hashes):
            checker.fail(matcher, inner, "secret_hashes must hold one or two hashes from "
                                         "`python -m token_admin hash-secret` (two during a rotation)")
        secret = SecretMatch(client_id or "", hashes)
    return Rule(name or "", certificate, assertion, secret, _allowance(checker, node.get("allow", {}), where))


def _pin(value: str) -> str:
    """A fingerprint pin in the one spelling the mTLS flow gives the client's digest (canonical base64,
    unpadded); a value that is no 32-byte digest is kept as written and never matches."""
    try:
        return canonical_fingerprint(value)
    except MalformedValue:
        return value.rstrip("=")


def _allowance(checker: _Checker, node: Any, where: str) -> Allowance:
    inner = f"{where}.allow"
    if not isinstance(node, dict):
        checker.fail(node, inner, "allow must be a mapping")
        return Allowance()
    checker.keys(node, inner, {"service_accounts", "scopes", "audiences", "max_token_lifetime", "claims"})
    claims = node.get("claims", {})
    if not isinstance(claims, dict):
        checker.fail(node, inner, "claims must be a mapping of claim names to values")
        claims = {}
    for reserved in sorted(RESERVED_CLAIMS & set(claims)):
        checker.fail(node, inner, f"claims may not set the reserved claim {reserved!r}")
    return Allowance(
        checker.globs(node, "service_accounts", inner), checker.texts(node, "scopes", inner),
        checker.globs(node, "audiences", inner), checker.number(node, "max_token_lifetime", inner, 60, 43200),
        {key: value for key, value in claims.items() if key not in RESERVED_CLAIMS},
    )
