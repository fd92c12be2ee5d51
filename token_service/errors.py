"""The token service's errors, all under ``TokenServiceError``.

Refusals are data: an ``OAuthError`` is an RFC 6749 error code, an HTTP status
and a stable ``Reason``. Every way a token request can fail is a ``Reason``: the
audit line carries it as a label and operators query by it, so the list is
closed and each value keeps its spelling once released. The other types are what
the service's parts raise to each other; the service turns each into a refusal.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field


class Reason(enum.StrEnum):
    """Why a token request was refused (the audit line's ``reason`` label)."""

    MALFORMED_REQUEST = "malformed_request"
    BODY_TOO_LARGE = "body_too_large"
    HEADERS_TOO_LARGE = "headers_too_large"
    UNSUPPORTED_GRANT_TYPE = "unsupported_grant_type"
    FLOW_DISABLED = "flow_disabled"
    MTLS_HEADERS_MISSING = "mtls_headers_missing"
    NO_CLIENT_CERTIFICATE = "no_client_certificate"
    CERTIFICATE_NOT_VERIFIED = "certificate_not_verified"
    CERTIFICATE_ERROR = "certificate_error"
    CERTIFICATE_EXPIRED = "certificate_expired"
    CERTIFICATE_NOT_YET_VALID = "certificate_not_yet_valid"
    MALFORMED_CERTIFICATE_HEADER = "malformed_certificate_header"
    CLIENT_ID_MISSING = "client_id_missing"
    CLIENT_ID_TOO_LONG = "client_id_too_long"
    CLIENT_ID_RESERVED = "client_id_reserved"
    POLICY_DENIED = "policy_denied"
    UNTRUSTED_ISSUER = "untrusted_issuer"
    INVALID_ASSERTION = "invalid_assertion"
    ASSERTION_REPLAYED = "assertion_replayed"
    ISSUER_KEYS_UNAVAILABLE = "issuer_keys_unavailable"
    REPLAY_STORE_UNAVAILABLE = "replay_store_unavailable"
    INVALID_CLIENT_SECRET = "invalid_client_secret"
    RATE_LIMITED = "rate_limited"
    STS_REFUSED = "sts_refused"
    IMPERSONATION_REFUSED = "impersonation_refused"
    UPSTREAM_UNAVAILABLE = "upstream_unavailable"
    INSTANCE_BUSY = "instance_busy"
    SIGNING_FAILED = "signing_failed"
    INTERNAL_ERROR = "internal_error"
    NOT_THROUGH_LOAD_BALANCER = "not_through_load_balancer"


class TokenServiceError(Exception):
    """The root of every error the token service raises itself."""


class ConfigurationError(TokenServiceError):
    """Every configuration problem found, one per line: the cold start stops."""

    def __init__(self, problems: list[str]):
        self.problems = problems
        super().__init__("invalid configuration:\n" + "\n".join(f"  - {problem}" for problem in problems))


class MalformedValue(TokenServiceError):
    """A value (a load-balancer header, a key file) that is not in the form it must have."""


class CommaInDnsName(MalformedValue):
    """A decoded DNS SAN holds a comma, which no DNS name does."""


class UpstreamUnavailable(TokenServiceError):
    """Google (or an issuer) did not answer usefully within the retry budget."""

    def __init__(self, service: str, detail: str, retry_after: int):
        super().__init__(f"{service} unavailable: {detail}")
        self.service = service
        self.detail = detail
        self.retry_after = retry_after


class StsRefused(TokenServiceError):
    """Google STS answered with an OAuth error (e.g. 400 invalid_grant)."""

    def __init__(self, status: int, error: str, description: str, body: bytes):
        super().__init__(f"{error}: {description}")
        self.status = status
        self.error = error
        self.description = description
        self.body = body


class IamRefused(TokenServiceError):
    """IAM Credentials answered ``method`` with a Google API error."""

    def __init__(self, method: str, status: int, code: str, message: str, body: bytes):
        super().__init__(f"{method}: {status} {code}: {message}")
        self.method = method
        self.status = status
        self.code = code
        self.message = message
        self.body = body


class CredentialsUnavailable(TokenServiceError):
    """No credentials, or Google refused them: a configuration problem, not an outage."""


class SigningError(TokenServiceError):
    """The signer could not produce a token (no claims were issued)."""


class IssuerAnswerInvalid(TokenServiceError):
    """An assertion issuer's discovery document or key set is not what OpenID Connect Discovery specifies."""


class KeysUnavailable(TokenServiceError):
    """No usable keys: the issuer could not be reached and nothing cached is still valid."""

    def __init__(self, message: str, retry_after: int):
        super().__init__(message)
        self.retry_after = retry_after


class StateUnavailable(TokenServiceError):
    """The shared state store (Redis) did not answer in time or refused the command."""

    def __init__(self, detail: str, retry_after: int):
        super().__init__(f"shared state unavailable: {detail}")
        self.detail = detail
        self.retry_after = retry_after


@dataclass(frozen=True)
class OAuthError(TokenServiceError):
    """An RFC 6749 section 5.2 error response, raised by any layer below dispatch."""

    status: int
    error: str
    description: str
    reason: Reason
    headers: tuple[tuple[str, str], ...] = field(default=())
    # For the audit line only, never the client: extra labels and Google's answer.
    audit_labels: tuple[tuple[str, str], ...] = field(default=())
    upstream_response: str = ""

    def __str__(self) -> str:
        return f"{self.error}: {self.description}"


def invalid_request(description: str, reason: Reason = Reason.MALFORMED_REQUEST) -> OAuthError:
    status = {Reason.BODY_TOO_LARGE: 413, Reason.HEADERS_TOO_LARGE: 431}.get(reason, 400)
    return OAuthError(status, "invalid_request", description, reason)


def unsupported_grant_type(description: str, reason: Reason) -> OAuthError:
    return OAuthError(400, "unsupported_grant_type", description, reason)


def invalid_client(description: str, reason: Reason) -> OAuthError:
    # RFC 6749 5.2 asks for a WWW-Authenticate challenge only when the client
    # tried the Authorization header; a TLS client certificate has no scheme.
    return OAuthError(401, "invalid_client", description, reason)


def access_denied(
    description: str, reason: Reason, audit_labels: dict[str, str] | None = None, upstream_response: bytes = b""
) -> OAuthError:
    return OAuthError(
        403, "access_denied", description, reason,
        audit_labels=tuple((audit_labels or {}).items()),
        upstream_response=upstream_response.decode("utf-8", "replace")[:2000],
    )


def temporarily_unavailable(
    description: str, retry_after: int, reason: Reason = Reason.UPSTREAM_UNAVAILABLE
) -> OAuthError:
    return OAuthError(
        503, "temporarily_unavailable", description, reason,
        headers=(("Retry-After", str(retry_after)),),
    )


def invalid_grant(description: str, reason: Reason) -> OAuthError:
    return OAuthError(400, "invalid_grant", description, reason)


def server_error(description: str, reason: Reason = Reason.INTERNAL_ERROR) -> OAuthError:
    return OAuthError(500, "server_error", description, reason)


def upstream_unavailable(failure: UpstreamUnavailable) -> OAuthError:
    """Google (or an issuer) out of reach within the retry budget, as the client sees it."""
    return temporarily_unavailable(
        f"{failure.service} is unavailable; retry after {failure.retry_after} s", failure.retry_after
    )
