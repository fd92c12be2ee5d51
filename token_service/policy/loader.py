"""Reading the client policy: a YAML file (``POLICY_FILE``) of trusted assertion issuers and ordered rules.

Loading validates everything and reports every problem with its line, so a bad
policy stops the cold start with one message that lists them all.
"""

from __future__ import annotations

import re
from typing import Any

from token_service.errors import ConfigurationError, MalformedValue
from token_service.google.transport import secure_url
from token_service.policy.patterns import problem
from token_service.policy.rules import (
    MAX_SECRET_HASHES,
    Allowance,
    AssertionMatch,
    CertificateMatch,
    Policy,
    Rule,
    SecretMatch,
    TrustedIssuer,
)
from token_service.request import canonical_fingerprint

# Claims the broker sets itself; a rule's extra claims may not replace them.
RESERVED_CLAIMS = frozenset({"iss", "aud", "sub", "iat", "exp", "nbf", "jti", "amr", "client_id", "client",
                             "cnf", "assertion"})
# Issuer names and secret client ids hold no colon: flows.subjects relies on it.
_NAME = re.compile(r"^[a-z0-9][a-z0-9-]{0,39}$")
_CLIENT_ID = re.compile(r"^[A-Za-z0-9._~-]{1,64}$")
DEFAULT_MAX_ASSERTION_LIFETIME = 24 * 3600
# What `hash-secret` writes (client_secret.SCRYPT_N, _R, _P; 16-byte salt, 32-byte digest). Nothing
# else: a malformed hash or another cost would make that client's attempts take a different time.
_SECRET_HASH = re.compile(r"^scrypt\$16384\$8\$1\$[A-Za-z0-9+/]{22}==\$[A-Za-z0-9+/]{43}=$")


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
        if url and not secure_url(url):
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
