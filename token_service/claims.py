"""The claims of an issued ID token.

Names match the predecessor and its documented attribute mapping
(``google.subject=assertion.client_id``, ``attribute.client_x5_*``), so existing
workload identity providers keep working. Every ``client`` entry is always
present (empty when the certificate lacks it) so CEL mappings never fail on a
missing key.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any

from token_service.mtls import ClientCertificate


@dataclass(frozen=True)
class IdTokenClaims:
    """The registered claims plus the broker's own, as one JSON-ready mapping."""

    payload: dict[str, Any]

    @property
    def jti(self) -> str:
        return self.payload["jti"]

    @property
    def expires_at(self) -> int:
        return self.payload["exp"]


def certificate_claims(
    *,
    issuer: str,
    audience: str,
    flow: str,
    certificate: ClientCertificate,
    issued_at: int,
    validity_seconds: int,
) -> IdTokenClaims:
    """Claims for a client authenticated by its certificate (RFC 8705)."""
    expires_at = issued_at + validity_seconds
    if certificate.not_after is not None:
        # A token must not outlive the certificate that earned it.
        expires_at = min(expires_at, int(certificate.not_after.timestamp()))
    payload: dict[str, Any] = {
        "iss": issuer,
        "aud": audience,
        "sub": certificate.client_id,
        "iat": issued_at,
        "exp": expires_at,
        "jti": str(uuid.uuid4()),
        "amr": [flow],
        "client_id": certificate.client_id,
        "client": {
            "x5_spiffe": certificate.spiffe_id,
            "x5_dnssan": certificate.dns_sans[0] if certificate.dns_sans else "",
            "x5_urisan": certificate.uri_sans[0] if certificate.uri_sans else "",
            "x5_sha256": certificate.sha256_fingerprint,
            "x5_serial": certificate.serial_number,
            "x5_dnssans": list(certificate.dns_sans),
            "x5_urisans": list(certificate.uri_sans),
        },
        "cnf": {"x5t#S256": certificate.x5t_s256},
    }
    return IdTokenClaims(payload)
