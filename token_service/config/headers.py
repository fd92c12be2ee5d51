"""The request headers the load balancer sets: the mTLS header names and the proxy secret's header.

Names come from ``MTLS_HEADER_*`` and ``PROXY_SECRET*`` variables; the defaults
are what deploy.sh (and the predecessor's deployment guide) configure on the
backend service.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import NamedTuple

from token_service.config.reader import EnvironmentReader
from token_service.errors import ConfigurationError
from token_service.request import MtlsHeaderNames

# Header-name settings: (variable, default).
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

class ProxySecretSettings(NamedTuple):
    """The header the load balancer adds and the values accepted in it (none: no check, local runs only)."""

    header: str
    values: tuple[str, ...]

    def __repr__(self) -> str:
        # Settings get printed (a debugger, a failing test's assertion); the values must not be.
        return f"ProxySecretSettings(header={self.header!r}, values=<{len(self.values)} hidden>)"


def mtls_header_names(environ: Mapping[str, str]) -> MtlsHeaderNames:
    """Only the MTLS_HEADER_* settings (for tools that need no full configuration)."""
    reader = EnvironmentReader(environ)
    names = mtls_headers_from(reader)
    if reader.problems:
        raise ConfigurationError(reader.problems)
    return names


def proxy_secret_settings(environ: Mapping[str, str]) -> ProxySecretSettings:
    """Only the PROXY_SECRET* settings (for the dev gateway, which sends what the function accepts)."""
    reader = EnvironmentReader(environ)
    settings = proxy_secret_from(reader, mtls_headers_from(reader))
    if reader.problems:
        raise ConfigurationError(reader.problems)
    return settings


def _header_name(reader: EnvironmentReader, variable: str, default: str) -> str:
    name = reader.get(variable) or default
    if not _HEADER_NAME.match(name):
        reader.fail(f"{variable}={name!r} is not a valid HTTP header name")
    elif name.lower().startswith(_RESERVED_HEADER_PREFIXES):
        reader.fail(f"{variable}={name!r} uses a prefix the load balancer reserves")
    return name


def mtls_headers_from(reader: EnvironmentReader) -> MtlsHeaderNames:
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


def proxy_secret_from(reader: EnvironmentReader, mtls_headers: MtlsHeaderNames) -> ProxySecretSettings:
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
