"""The settings: environment variables, validated once at cold start.

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

from token_service.config.headers import (
    DEFAULT_PROXY_SECRET_HEADER,
    MtlsHeaderNames,
    ProxySecretSettings,
    mtls_headers_from,
    proxy_secret_from,
)
from token_service.config.reader import EnvironmentReader
from token_service.config.shared_state import RedisSettings, redis_from
from token_service.errors import ConfigurationError
from token_service.flows import KNOWN_FLOWS, POLICY_FLOWS, XLB_MTLS_FLOW
from token_service.google.iam_credentials import SERVICE_ACCOUNT_EMAIL
from token_service.google.transport import secure_url
from token_service.google.workload_identity import WorkloadIdentityProvider

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
_PROJECT_NUMBER = re.compile(r"^[1-9][0-9]{0,19}$")
# Pool and provider ids: 4-32 characters, lower-case letters, digits, hyphens.
_POOL_OR_PROVIDER_ID = re.compile(r"^[a-z0-9-]{4,32}$")
_SERVICE_ACCOUNT = re.compile(f"^{SERVICE_ACCOUNT_EMAIL}$")


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


class TokenCacheSettings(NamedTuple):
    """The per-instance cache of Google-issued tokens (docs/architecture.md#calls-to-google)."""

    enabled: bool = True
    margin_seconds: int = 300  # served until this long before Google's expiry
    max_entries: int = 10_000


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
    max_waiting_requests: int = 16  # per worker: past this many requests that may wait, 503 at once
    proxy_secret: ProxySecretSettings = ProxySecretSettings(DEFAULT_PROXY_SECRET_HEADER, ())
    redis: RedisSettings | None = None  # None: each instance keeps its state in memory
    token_cache: TokenCacheSettings = TokenCacheSettings()


def load_settings(environ: Mapping[str, str]) -> Settings:
    """Validate every variable; raise ``ConfigurationError`` listing all problems."""
    reader = EnvironmentReader(environ)
    issuer = _issuer(reader)
    provider = _provider(reader)
    flows = _auth_flows(reader)
    validity = _token_validity(reader)
    headers = mtls_headers_from(reader)
    proxy_secret = proxy_secret_from(reader, headers)
    signer = _signer(reader)
    threads = _threads(reader)
    max_waiting = reader.get("MAX_WAITING_REQUESTS") or str(threads)
    if not max_waiting.isdigit() or not 1 <= int(max_waiting) <= 10_000:
        reader.fail(f"MAX_WAITING_REQUESTS={max_waiting!r} must be a whole number from 1 to 10000")
        max_waiting = "1"
    google = _google(reader, threads)
    token_cache = _token_cache(reader, google.service_account_token_lifetime)
    audit = reader.choice("AUDIT_LOG_HANDLER", AUDIT_LOG_HANDLERS, default="json")
    project_id = reader.get("GOOGLE_CLOUD_PROJECT")
    policy_file = reader.get("POLICY_FILE")
    redis = redis_from(reader)
    needing_policy = sorted(flows & POLICY_FLOWS)
    if needing_policy and policy_file is None:
        reader.fail(f"AUTH_FLOWS enables {', '.join(needing_policy)}, whose clients are defined in a policy; "
                    "set POLICY_FILE")
    if redis is not None and not flows & POLICY_FLOWS:
        reader.fail("REDIS_URL is set but no flow keeps state in it: AUTH_FLOWS enables neither jwt-bearer "
                    "nor client-secret; remove REDIS_URL")
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
        max_waiting_requests=int(max_waiting),
        proxy_secret=proxy_secret,
        redis=redis,
        token_cache=token_cache,
    )


def _issuer(reader: EnvironmentReader) -> str:
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


def _provider(reader: EnvironmentReader) -> WorkloadIdentityProvider:
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


def _auth_flows(reader: EnvironmentReader) -> frozenset[str]:
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


def _token_validity(reader: EnvironmentReader) -> int:
    value = reader.get("TOKEN_VALIDITY") or "5"
    if not value.isdigit() or not 1 <= int(value) <= MAX_TOKEN_VALIDITY_MINUTES:
        reader.fail(
            f"TOKEN_VALIDITY={value!r} must be a whole number of minutes from 1 to "
            f"{MAX_TOKEN_VALIDITY_MINUTES}"
        )
        return 0
    return int(value) * 60


def _signer(reader: EnvironmentReader) -> SignerSettings:
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


def _google(reader: EnvironmentReader, threads: int) -> GoogleSettings:
    endpoints = {}
    for variable, default in GOOGLE_ENDPOINT_DEFAULTS.items():
        value = (reader.get(variable) or default).rstrip("/")
        if not secure_url(value):
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


def _token_cache(reader: EnvironmentReader, lifetime: int) -> TokenCacheSettings:
    enabled = reader.choice("GOOGLE_TOKEN_CACHE", ("on", "off"), default="on") == "on"
    # The shortest Google token lives SERVICE_ACCOUNT_TOKEN_LIFETIME (STS's live an hour): a margin as
    # long would never serve a hit. The default fits any lifetime.
    margin = reader.get("GOOGLE_TOKEN_CACHE_MARGIN_SECONDS") or str(min(300, lifetime // 2))
    if not margin.isdigit() or (lifetime and int(margin) >= lifetime):
        reader.fail(f"GOOGLE_TOKEN_CACHE_MARGIN_SECONDS={margin!r} must be whole seconds, fewer than "
                    f"SERVICE_ACCOUNT_TOKEN_LIFETIME ({lifetime})")
        margin = "0"
    entries = reader.get("GOOGLE_TOKEN_CACHE_MAX_ENTRIES") or "10000"
    if not entries.isdigit() or not 1 <= int(entries) <= 1_000_000:
        reader.fail(f"GOOGLE_TOKEN_CACHE_MAX_ENTRIES={entries!r} must be a whole number from 1 to 1000000")
        entries = "1"
    return TokenCacheSettings(enabled, int(margin), int(entries))


def _threads(reader: EnvironmentReader) -> int:
    # The same variable and default as functions-framework's gunicorn mode (4 per CPU).
    value = reader.get("THREADS") or str(4 * (os.cpu_count() or 1))
    if not value.isdigit() or not 1 <= int(value) <= 1000:
        reader.fail(f"THREADS={value!r} must be a whole number from 1 to 1000")
        return 1
    return int(value)


def _seconds(reader: EnvironmentReader, name: str, default: str) -> float:
    value = reader.get(name) or default
    try:
        seconds = float(value)
    except ValueError:
        seconds = -1.0
    if not 0.1 <= seconds <= 300:
        reader.fail(f"{name}={value!r} must be a number of seconds from 0.1 to 300")
    return seconds
