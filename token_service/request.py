"""The token request as every stage below the edge sees it: plain values, no HTTP.

``edge.parsing`` builds a ``TokenRequest`` from the HTTP request once; the flows,
the service and the audit record read it.
"""

from __future__ import annotations

import base64
from collections.abc import Mapping
from types import MappingProxyType
from typing import NamedTuple

from token_service.errors import MalformedValue, OAuthError

# ``format``: RFC 6749 JSON, or the executable-sourced credential Google client libraries read.
OAUTH_FORMAT = "oauth"
EXTERNAL_CREDENTIAL_FORMAT = "external_credential"
RESPONSE_FORMATS = (OAUTH_FORMAT, EXTERNAL_CREDENTIAL_FORMAT)
_NO_PARAMETERS: Mapping[str, str] = MappingProxyType({})


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
        return tuple(getattr(self, attribute) for attribute in CertificateHeaders._fields)


class CertificateHeaders(NamedTuple):
    """What the load balancer's mTLS headers held in one request (None: the header was absent)."""

    present: str | None = None
    chain_verified: str | None = None
    error: str | None = None
    sha256_fingerprint: str | None = None
    serial_number: str | None = None
    spiffe_id: str | None = None
    uri_sans: str | None = None
    dnsname_sans: str | None = None
    valid_not_before: str | None = None
    valid_not_after: str | None = None

    @classmethod
    def read(cls, headers: Mapping[str, str], names: MtlsHeaderNames) -> CertificateHeaders:
        """The values from ``headers`` (lower-cased names) under the configured ``names``."""
        return cls(*(headers.get(getattr(names, attribute).lower()) for attribute in cls._fields))

    def labels(self, names: MtlsHeaderNames) -> dict[str, str]:
        """Header name (lower-cased) -> value, for each header the request carried."""
        return {getattr(names, attribute).lower(): value for attribute, value in zip(self._fields, self, strict=True)
                if value is not None}


class ClientCredentials(NamedTuple):
    """A client secret as presented: RFC 6749 client_secret_basic or client_secret_post."""

    client_id: str
    secret: str
    method: str  # client_secret_basic | client_secret_post


class Trace(NamedTuple):
    trace_id: str
    span_id: str | None
    sampled: bool


class HttpRequestInfo(NamedTuple):
    method: str
    url: str
    user_agent: str
    remote_ip: str


class TokenRequest(NamedTuple):
    """One POST /token as the layers below the edge see it."""

    certificate: CertificateHeaders  # the load balancer's mTLS headers, as sent
    http: HttpRequestInfo
    trace: Trace | None = None
    grant_type: str = ""
    response_format: str = OAUTH_FORMAT
    parameters: Mapping[str, str] = _NO_PARAMETERS
    # client_secret_basic or client_secret_post; a malformed presentation as its refusal, raised when the
    # client-secret flow is chosen (after the grant type is checked), as RFC 6749 orders the errors.
    credentials: ClientCredentials | OAuthError | None = None
    refusal: OAuthError | None = None  # why the request cannot be answered, found while parsing it


def decode_fingerprint(value: str) -> bytes:
    """Decode a base64 SHA-256 fingerprint, padded or not; ``MalformedValue`` if it is not one."""
    text = value.strip().rstrip("=")
    try:
        digest = base64.b64decode(text + "=" * (-len(text) % 4), validate=True)
    except ValueError as error:  # binascii.Error, or a character outside ASCII
        raise MalformedValue("not base64") from error
    if len(digest) != 32:
        raise MalformedValue("not a SHA-256 digest")
    return digest


def canonical_fingerprint(value: str) -> str:
    """The one spelling of a base64 SHA-256 fingerprint (standard alphabet, unpadded); ``MalformedValue`` if
    it is not 32 bytes. A decoder ignores the last character's two padding bits, so one digest has
    several spellings, and a client id or a policy pin must not depend on which one was sent."""
    return base64.b64encode(decode_fingerprint(value)).decode().rstrip("=")
