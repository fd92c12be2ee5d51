"""Configuration: environment variables, validated once at cold start.

``load_settings`` reads a plain mapping (``os.environ`` in production), checks
every variable and raises one ``ConfigurationError`` that lists every problem,
so a misconfigured deployment fails before it serves a single wrong token.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from typing import NamedTuple
from urllib.parse import urlsplit

from token_service.errors import ConfigurationError

XLB_MTLS_FLOW = "xlb-mtls-client-credentials"
JWT_BEARER_FLOW = "jwt-bearer"
CLIENT_SECRET_FLOW = "client-secret"
KNOWN_FLOWS = frozenset({XLB_MTLS_FLOW, JWT_BEARER_FLOW, CLIENT_SECRET_FLOW})
# Flows whose clients exist only in the policy file.
POLICY_FLOWS = frozenset({JWT_BEARER_FLOW, CLIENT_SECRET_FLOW})
SIGNER_KINDS = ("iam", "local")
SIGNING_ALGORITHMS = ("RS256", "ES256")
AUDIT_LOG_HANDLERS = ("json", "cloud-logging")
# signJwt refuses an exp more than 12 h ahead; WIF allows 48 h. The lower bound wins.
MAX_TOKEN_VALIDITY_MINUTES = 720
# generateAccessToken allows 1 h unless an org policy extends it.
MAX_SERVICE_ACCOUNT_TOKEN_SECONDS = 3600
GOOGLE_ENDPOINT_DEFAULTS = {
    "STS_ENDPOINT": "https://sts.googleapis.com/v1/token",
    "IAM_CREDENTIALS_ENDPOINT": "https://iamcredentials.googleapis.com",
    "SERVICE_ACCOUNT_KEYS_ENDPOINT": "https://www.googleapis.com",
}
_LOOPBACK_HOSTS = ("127.0.0.1", "localhost", "::1")
CLOUD_PLATFORM_SCOPE = "https://www.googleapis.com/auth/cloud-platform"
SERVICE_ACCOUNT_EMAIL = r"[a-z0-9][a-z0-9._-]{0,99}@[a-z0-9][a-z0-9.-]{0,200}\.gserviceaccount\.com"
_SERVICE_ACCOUNT = re.compile(f"^{SERVICE_ACCOUNT_EMAIL}$")

# Header-name settings: (variable, default). The defaults are the names deploy.sh (and the predecessor's
# deployment guide) configures on the backend service.
MTLS_HEADER_DEFAULTS = {
    "present": ("MTLS_HEADER_CLIENT_CERT_PRESENT", "X-Client-Cert-Present"),
    "chain_verified": ("MTLS_HEADER_CLIENT_CERT_CHAIN_VERIFIED", "X-Client-Cert-Chain-Verified"),
    "error": ("MTLS_HEADER_CLIENT_CERT_ERROR", "X-Client-Cert-Error"),
    "sha256_fingerprint": ("MTLS_HEADER_CLIENT_CERT_SHA256_FINGERPRINT", "X-Client-Cert-Hash"),
    "serial_number": ("MTLS_HEADER_CLIENT_CERT_SERIAL_NUMBER", "X-Client-Cert-Serial-Number"),
    "spiffe_id": ("MTLS_HEADER_CLIENT_CERT_SPIFFE_ID", "X-Client-Cert-SPIFFE"),
    "uri_sans": ("MTLS_HEADER_CLIENT_CERT_URI_SANS", "X-Client-Cert-URI-SANs"),
    "dnsname_sans": ("MTLS_HEADER_CLIENT_CERT_DNSNAME_SANS", "X-Client-Cert-DNSName-SANs"),
    "valid_not_before": ("MTLS_HEADER_CLIENT_CERT_VALID_NOT_BEFORE", "X-Client-Cert-Valid-Not-Before"),
    "valid_not_after": ("MTLS_HEADER_CLIENT_CERT_VALID_NOT_AFTER", "X-Client-Cert-Valid-Not-After"),
}
CLIENT_ID_HEADER_VARIABLE = "MTLS_HEADER_CLIENT_ID"
# Only headers that identify the certificate may name the client.
CLIENT_ID_CAPABLE = ("sha256_fingerprint", "spiffe_id", "dnsname_sans", "uri_sans")
# The header the load balancer adds with a secret value, so the function can refuse callers that reach it
# without the load balancer (ingress internal-and-gclb admits them) and could forge every header.
PROXY_SECRETS_VARIABLE = "PROXY_SECRETS"
PROXY_SECRET_HEADER_VARIABLE = "PROXY_SECRET_HEADER"
DEFAULT_PROXY_SECRET_HEADER = "X-Token-Service-Proxy-Secret"
# Two during a rotation: the new value the load balancer is about to send, and the old one it still sends.
MAX_PROXY_SECRETS = 2
MIN_PROXY_SECRET_LENGTH = 32
# Set by Cloud Run (so on Cloud Functions 2nd gen), never by a local run.
ON_GOOGLE_VARIABLE = "K_SERVICE"
_PROXY_SECRET = re.compile(rf"[A-Za-z0-9_-]{{{MIN_PROXY_SECRET_LENGTH},}}")  # fullmatch
_PROXY_SECRET_SEPARATORS = re.compile(r"[\n,]")

_HEADER_NAME = re.compile(r"^[!#$%&'*+.^_`|~0-9A-Za-z-]{1,128}$")
# Google-reserved prefixes the load balancer refuses as custom header names.
_RESERVED_HEADER_PREFIXES = ("x-google", "x-goog-", "x-gfe", "x-amz-")
_PROJECT_NUMBER = re.compile(r"^[1-9][0-9]{0,19}$")
# Pool and provider ids: 4-32 characters, lower-case letters, digits, hyphens.
_POOL_OR_PROVIDER_ID = re.compile(r"^[a-z0-9-]{4,32}$")


class MtlsHeaderNames(NamedTuple):
    """Names of the request headers the load balancer fills from the client certificate."""

    client_id: str
    present: str
    chain_verified: str
    error: str
    sha256_fingerprint: str
    serial_number: str
    spiffe_id: str
    uri_sans: str
    dnsname_sans: str
    valid_not_before: str
    valid_not_after: str

    def certificate_headers(self) -> tuple[str, ...]:
        """Every distinct header name the load balancer sets (the client id is one of them)."""
        return tuple(getattr(self, attribute) for attribute in MTLS_HEADER_DEFAULTS)


class ProxySecretSettings(NamedTuple):
    """The header the load balancer adds and the values accepted in it (none: no check, local runs only)."""

    header: str
    values: tuple[str, ...]

    def __repr__(self) -> str:
        # Settings get printed (a debugger, a failing test's assertion); the values must not be.
        return f"ProxySecretSettings(header={self.header!r}, values=<{len(self.values)} hidden>)"


class WorkloadIdentityProvider(NamedTuple):
    """The workload identity pool provider that trusts this broker as an OIDC issuer."""

    project_number: str
    pool_id: str
    provider_id: str

    @property
    def resource_name(self) -> str:
        return (
            f"projects/{self.project_number}/locations/global/"
            f"workloadIdentityPools/{self.pool_id}/providers/{self.provider_id}"
        )

    @property
    def sts_audience(self) -> str:
        """The audience Google STS expects in a token exchange request."""
        return f"//iam.googleapis.com/{self.resource_name}"

    @property
    def token_audience(self) -> str:
        """The ``aud`` of issued ID tokens: the provider's default allowed audience."""
        return f"https://iam.googleapis.com/{self.resource_name}"

    def principal(self, subject: str) -> str:
        return (
            f"principal://iam.googleapis.com/projects/{self.project_number}/locations/global/"
            f"workloadIdentityPools/{self.pool_id}/subject/{subject}"
        )


class SignerSettings(NamedTuple):
    kind: str
    algorithm: str
    key_file: str | None
    service_account: str | None  # iam signer; None: the runtime service account


class GoogleSettings(NamedTuple):
    """Where Google's APIs are (overridable for Private Service Connect and tests)."""

    sts_endpoint: str
    iam_credentials_endpoint: str
    service_account_keys_endpoint: str
    service_account_token_lifetime: int
    timeout_seconds: float
    retry_budget_seconds: float
    max_concurrent_exchanges: int  # per process; the other threads stay free for everything else

    def service_account_jwks_uri(self, email: str) -> str:
        return f"{self.service_account_keys_endpoint}/service_accounts/v1/metadata/jwk/{email}"


class Settings(NamedTuple):
    issuer: str
    provider: WorkloadIdentityProvider
    auth_flows: frozenset[str]
    token_validity_seconds: int
    mtls_headers: MtlsHeaderNames
    signer: SignerSettings
    google: GoogleSettings
    audit_log_handler: str
    project_id: str | None
    policy_file: str | None
    threads: int  # per worker: the threads that run requests which may wait (see main.py)
    proxy_secret: ProxySecretSettings = ProxySecretSettings(DEFAULT_PROXY_SECRET_HEADER, ())


def load_settings(environ: Mapping[str, str]) -> Settings:
    """Validate every variable; raise ``ConfigurationError`` listing all problems."""
    reader = _Reader(environ)
    issuer = _issuer(reader)
    provider = _provider(reader)
    flows = _auth_flows(reader)
    validity = _token_validity(reader)
    headers = _mtls_headers(reader)
    proxy_secret = _proxy_secret(reader, headers)
    signer = _signer(reader)
    threads = _threads(reader)
    google = _google(reader, threads)
    audit = reader.choice("AUDIT_LOG_HANDLER", AUDIT_LOG_HANDLERS, default="json")
    project_id = reader.get("GOOGLE_CLOUD_PROJECT")
    policy_file = reader.get("POLICY_FILE")
    needing_policy = sorted(flows & POLICY_FLOWS)
    if needing_policy and policy_file is None:
        reader.fail(f"AUTH_FLOWS enables {', '.join(needing_policy)}, whose clients are defined in a policy; "
                    "set POLICY_FILE")
    if reader.problems:
        raise ConfigurationError(reader.problems)
    return Settings(
        issuer=issuer,
        provider=provider,
        auth_flows=flows,
        token_validity_seconds=validity,
        mtls_headers=headers,
        signer=signer,
        google=google,
        audit_log_handler=audit,
        project_id=project_id,
        policy_file=policy_file,
        threads=threads,
        proxy_secret=proxy_secret,
    )


class _Reader:
    """Reads trimmed values (empty counts as unset) and collects problems."""

    def __init__(self, environ: Mapping[str, str]):
        self._environ = environ
        self.problems: list[str] = []

    def get(self, name: str) -> str | None:
        value = self._environ.get(name, "").strip()
        return value or None

    def get_aliased(self, name: str, alias: str) -> str | None:
        value, legacy = self.get(name), self.get(alias)
        if value and legacy and value != legacy:
            self.fail(f"{name}={value!r} and its alias {alias}={legacy!r} disagree; set only {name}")
        return value or legacy

    def choice(self, name: str, allowed: tuple[str, ...], default: str | None) -> str:
        value = self.get(name) or default
        if value is None:
            self.fail(f"{name} is required; one of: {', '.join(allowed)}")
            return ""
        if value not in allowed:
            self.fail(f"{name}={value!r} is not one of: {', '.join(allowed)}")
        return value

    def fail(self, problem: str) -> None:
        self.problems.append(problem)


def _issuer(reader: _Reader) -> str:
    value = reader.get("TOKEN_ISSUER")
    if value is None:
        reader.fail(
            "TOKEN_ISSUER is required: the public https URL of the load balancer, "
            "exactly as in the provider's --issuer-uri (e.g. https://token-service.example.com)"
        )
        return ""
    issuer = value[:-1] if value.endswith("/") else value
    parts = urlsplit(issuer)
    if parts.scheme != "https" or not parts.hostname:
        reader.fail(f"TOKEN_ISSUER={value!r} must be an https URL with a host name")
    elif parts.path or parts.query or parts.fragment or parts.username or parts.password:
        reader.fail(
            f"TOKEN_ISSUER={value!r} must be an origin only (https://host[:port]): the broker "
            "serves discovery at <issuer>/.well-known/openid-configuration"
        )
    return issuer


def _provider(reader: _Reader) -> WorkloadIdentityProvider:
    project = reader.get_aliased(
        "WORKLOAD_IDENTITY_PROJECT_NUMBER", "WORKLOAD_IDENITY_PROJECT_NUMBER"
    )
    pool = reader.get_aliased("WORKLOAD_IDENTITY_POOL_ID", "WORKLOAD_IDENITY_POOL_ID")
    provider = reader.get_aliased("WORKLOAD_IDENTITY_PROVIDER_ID", "WORKLOAD_IDENITY_PROVIDER_ID")
    if project is None:
        reader.fail("WORKLOAD_IDENTITY_PROJECT_NUMBER is required (the project number, not the id)")
    elif not _PROJECT_NUMBER.match(project):
        reader.fail(
            f"WORKLOAD_IDENTITY_PROJECT_NUMBER={project!r} must be the numeric project number "
            "(gcloud projects describe PROJECT --format='value(projectNumber)')"
        )
    for name, value in (("WORKLOAD_IDENTITY_POOL_ID", pool), ("WORKLOAD_IDENTITY_PROVIDER_ID", provider)):
        if value is None:
            reader.fail(f"{name} is required")
        elif not _POOL_OR_PROVIDER_ID.match(value) or value.startswith("gcp-"):
            reader.fail(
                f"{name}={value!r} is not a valid id: 4-32 lower-case letters, digits or "
                "hyphens, not starting with 'gcp-'"
            )
    return WorkloadIdentityProvider(project or "", pool or "", provider or "")


def _auth_flows(reader: _Reader) -> frozenset[str]:
    value = reader.get("AUTH_FLOWS")
    if value is None:
        return frozenset({XLB_MTLS_FLOW})
    flows = frozenset(item.strip() for item in value.split(",") if item.strip())
    unknown = sorted(flows - KNOWN_FLOWS)
    if unknown:
        reader.fail(
            f"AUTH_FLOWS names unknown flows {', '.join(unknown)}; known: {', '.join(sorted(KNOWN_FLOWS))}"
        )
    if not flows:
        reader.fail("AUTH_FLOWS enables no flow")
    return flows


def _token_validity(reader: _Reader) -> int:
    value = reader.get("TOKEN_VALIDITY") or "5"
    if not value.isdigit() or not 1 <= int(value) <= MAX_TOKEN_VALIDITY_MINUTES:
        reader.fail(
            f"TOKEN_VALIDITY={value!r} must be a whole number of minutes from 1 to "
            f"{MAX_TOKEN_VALIDITY_MINUTES}"
        )
        return 0
    return int(value) * 60


def mtls_header_names(environ: Mapping[str, str]) -> MtlsHeaderNames:
    """Only the MTLS_HEADER_* settings (for tools that need no full configuration)."""
    reader = _Reader(environ)
    names = _mtls_headers(reader)
    if reader.problems:
        raise ConfigurationError(reader.problems)
    return names


def proxy_secret_settings(environ: Mapping[str, str]) -> ProxySecretSettings:
    """Only the PROXY_SECRET* settings (for the dev gateway, which sends what the function accepts)."""
    reader = _Reader(environ)
    settings = _proxy_secret(reader, _mtls_headers(reader))
    if reader.problems:
        raise ConfigurationError(reader.problems)
    return settings


def _header_name(reader: _Reader, variable: str, default: str) -> str:
    name = reader.get(variable) or default
    if not _HEADER_NAME.match(name):
        reader.fail(f"{variable}={name!r} is not a valid HTTP header name")
    elif name.lower().startswith(_RESERVED_HEADER_PREFIXES):
        reader.fail(f"{variable}={name!r} uses a prefix the load balancer reserves")
    return name


def _mtls_headers(reader: _Reader) -> MtlsHeaderNames:
    names: dict[str, str] = {}
    for attribute, (variable, default) in MTLS_HEADER_DEFAULTS.items():
        names[attribute] = _header_name(reader, variable, default)
    seen: dict[str, str] = {}
    for attribute, name in names.items():
        other = seen.setdefault(name.lower(), attribute)
        if other != attribute:
            reader.fail(
                f"{MTLS_HEADER_DEFAULTS[attribute][0]} and {MTLS_HEADER_DEFAULTS[other][0]} "
                f"both name the header {name!r}"
            )
    client_id = reader.get(CLIENT_ID_HEADER_VARIABLE) or names["sha256_fingerprint"]
    capable = {names[attribute].lower(): names[attribute] for attribute in CLIENT_ID_CAPABLE}
    if client_id.lower() not in capable:
        reader.fail(
            f"{CLIENT_ID_HEADER_VARIABLE}={client_id!r} cannot identify a client; use one of: "
            + ", ".join(capable.values())
        )
    return MtlsHeaderNames(client_id=capable.get(client_id.lower(), client_id), **names)


def _proxy_secret(reader: _Reader, mtls_headers: MtlsHeaderNames) -> ProxySecretSettings:
    header = _header_name(reader, PROXY_SECRET_HEADER_VARIABLE, DEFAULT_PROXY_SECRET_HEADER)
    if header.lower() in {name.lower() for name in mtls_headers.certificate_headers()}:
        reader.fail(f"{PROXY_SECRET_HEADER_VARIABLE}={header!r} is also an MTLS_HEADER_* name; the secret "
                    "needs a header of its own")
    # No problem message below may quote a value: these messages end up in the cold start's log line.
    raw = reader.get(PROXY_SECRETS_VARIABLE)
    if raw is None:
        if reader.get(ON_GOOGLE_VARIABLE) is not None:
            reader.fail(
                f"set {PROXY_SECRETS_VARIABLE}: on Google ({ON_GOOGLE_VARIABLE} is set) the function must refuse "
                "requests that bypass the load balancer, which sends a secret in the "
                f"{header} header; deploy.sh does this (the secret comes from Secret Manager)"
            )
        return ProxySecretSettings(header, ())
    values = tuple(item.strip() for item in _PROXY_SECRET_SEPARATORS.split(raw) if item.strip())
    if not values:
        reader.fail(f"{PROXY_SECRETS_VARIABLE} is set but holds no value; unset it or give one or two secrets")
    elif len(values) > MAX_PROXY_SECRETS:
        reader.fail(f"{PROXY_SECRETS_VARIABLE} holds {len(values)} values; at most {MAX_PROXY_SECRETS} are "
                    "accepted (the new and the old one during a rotation)")
    else:
        invalid = [str(position) for position, value in enumerate(values, 1) if not _PROXY_SECRET.fullmatch(value)]
        if invalid:
            reader.fail(
                f"{PROXY_SECRETS_VARIABLE}: value {' and '.join(invalid)} of {len(values)} is not a valid secret "
                f"(at least {MIN_PROXY_SECRET_LENGTH} characters of A-Z, a-z, 0-9, _ and -; deploy.sh generates "
                "64 hex digits)"
            )
    return ProxySecretSettings(header, values)


def _signer(reader: _Reader) -> SignerSettings:
    kind = reader.choice("TOKEN_SIGNER", SIGNER_KINDS, default="iam")
    algorithm = reader.choice("SIGNING_ALGORITHM", SIGNING_ALGORITHMS, default="RS256")
    key_file = reader.get("SIGNING_KEY_FILE")
    service_account = reader.get("SIGNING_SERVICE_ACCOUNT")
    if kind == "local" and key_file is None:
        reader.fail("SIGNING_KEY_FILE is required with TOKEN_SIGNER=local (a PEM private key)")
    if kind == "iam":
        if key_file is not None:
            reader.fail("SIGNING_KEY_FILE is set but TOKEN_SIGNER=iam signs with IAM; set TOKEN_SIGNER=local "
                        "to use the key, or remove it")
        if algorithm != "RS256":
            reader.fail("TOKEN_SIGNER=iam signs with RS256 only (IAM signJwt); remove SIGNING_ALGORITHM")
        if service_account is not None and not _SERVICE_ACCOUNT.match(service_account):
            reader.fail(f"SIGNING_SERVICE_ACCOUNT={service_account!r} is not a service account email")
    return SignerSettings(kind=kind, algorithm=algorithm, key_file=key_file, service_account=service_account)


def _google(reader: _Reader, threads: int) -> GoogleSettings:
    endpoints = {}
    for variable, default in GOOGLE_ENDPOINT_DEFAULTS.items():
        value = (reader.get(variable) or default).rstrip("/")
        parts = urlsplit(value)
        loopback = parts.scheme == "http" and parts.hostname in _LOOPBACK_HOSTS
        if not parts.hostname or (parts.scheme != "https" and not loopback):
            reader.fail(f"{variable}={value!r} must be an https URL (plain http only on loopback, for tests)")
        endpoints[variable] = value
    lifetime = reader.get("SERVICE_ACCOUNT_TOKEN_LIFETIME") or str(MAX_SERVICE_ACCOUNT_TOKEN_SECONDS)
    if not lifetime.isdigit() or not 60 <= int(lifetime) <= MAX_SERVICE_ACCOUNT_TOKEN_SECONDS:
        reader.fail(f"SERVICE_ACCOUNT_TOKEN_LIFETIME={lifetime!r} must be whole seconds from 60 to "
                    f"{MAX_SERVICE_ACCOUNT_TOKEN_SECONDS} (IAM's default limit)")
        lifetime = "0"
    timeout = _seconds(reader, "UPSTREAM_TIMEOUT", "10")
    budget = _seconds(reader, "UPSTREAM_RETRY_BUDGET", "20")
    # Three quarters of the threads at most may wait on Google's STS and impersonation, so a hung
    # upstream leaves the others to requests that wait on something else (an issuer's keys).
    exchanges = reader.get("UPSTREAM_MAX_CONCURRENCY") or str(max(1, threads - threads // 4))
    if not exchanges.isdigit() or not 1 <= int(exchanges) <= 1000:
        reader.fail(f"UPSTREAM_MAX_CONCURRENCY={exchanges!r} must be a whole number from 1 to 1000")
        exchanges = "1"
    return GoogleSettings(
        sts_endpoint=endpoints["STS_ENDPOINT"],
        iam_credentials_endpoint=endpoints["IAM_CREDENTIALS_ENDPOINT"],
        service_account_keys_endpoint=endpoints["SERVICE_ACCOUNT_KEYS_ENDPOINT"],
        service_account_token_lifetime=int(lifetime),
        timeout_seconds=timeout,
        retry_budget_seconds=budget,
        max_concurrent_exchanges=int(exchanges),
    )


def _threads(reader: _Reader) -> int:
    # The same variable and default as functions-framework's gunicorn mode (4 per CPU).
    value = reader.get("THREADS") or str(4 * (os.cpu_count() or 1))
    if not value.isdigit() or not 1 <= int(value) <= 1000:
        reader.fail(f"THREADS={value!r} must be a whole number from 1 to 1000")
        return 1
    return int(value)


def _seconds(reader: _Reader, name: str, default: str) -> float:
    value = reader.get(name) or default
    try:
        seconds = float(value)
    except ValueError:
        seconds = -1.0
    if not 0.1 <= seconds <= 300:
        reader.fail(f"{name}={value!r} must be a number of seconds from 0.1 to 300")
    return seconds
