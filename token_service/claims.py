"""The claims of an issued ID token.

Names match the predecessor and its documented attribute mapping
(``google.subject=assertion.client_id``, ``attribute.client_x5_*``), so existing
workload identity providers keep working. Every ``client`` entry is always
present (empty when the certificate lacks it) so CEL mappings never fail on a
missing key. What the client proved adds its own claims (``client`` and ``cnf``
for a certificate, ``assertion`` for a signed assertion); a policy rule may add
more.
"""

from __future__ import annotations

import uuid
from typing import Any, NamedTuple

from token_service.mtls import ClientCertificate


class IdTokenClaims(NamedTuple):
    """The registered claims plus the broker's own, as one JSON-ready mapping."""

    payload: dict[str, Any]

    @property
    def jti(self) -> str:
        return self.payload["jti"]

    @property
    def expires_at(self) -> int:
        return self.payload["exp"]


def id_token_claims(
    *,
    issuer: str,
    audience: str,
    flow: str,
    client_id: str,
    issued_at: int,
    expires_at: int,
    proof_claims: dict[str, Any],
    extra_claims: dict[str, Any] | None = None,
) -> IdTokenClaims:
    payload: dict[str, Any] = {
        **(extra_claims or {}),
        "iss": issuer,
        "aud": audience,
        "sub": client_id,
        "iat": issued_at,
        "exp": expires_at,
        "jti": str(uuid.uuid4()),
        "amr": [flow],
        "client_id": client_id,
        **proof_claims,
    }
    return IdTokenClaims(payload)


def certificate_proof(certificate: ClientCertificate) -> dict[str, Any]:
    """``client`` (the predecessor's names) and ``cnf`` (RFC 8705 binding) for a certificate."""
    return {
        "client": {
            "x5_spiffe": certificate.spiffe_id,
            "x5_dnssan": certificate.dns_sans[0] if certificate.dns_sans else "",
            "x5_urisan": certificate.uri_sans[0] if certificate.uri_sans else "",
            "x5_sha256": certificate.sha256_fingerprint,
            "x5_serial": certificate.serial_number,
            "x5_dnssans": list(certificate.dns_sans),
            "x5_urisans": list(certificate.uri_sans),
        },
        "assertion": dict(NO_ASSERTION),
        "cnf": {"x5t#S256": certificate.x5t_s256},
    }


# The same keys with no certificate or no assertion: a provider whose attribute mapping reads
# assertion.client.x5_* or assertion.assertion.sub keeps evaluating for clients of every flow.
NO_CERTIFICATE = {"x5_spiffe": "", "x5_dnssan": "", "x5_urisan": "", "x5_sha256": "", "x5_serial": "",
                  "x5_dnssans": [], "x5_urisans": []}
NO_ASSERTION = {"issuer": "", "iss": "", "sub": ""}


def assertion_proof(issuer_name: str, claims: dict[str, Any]) -> dict[str, Any]:
    """Where a jwt-bearer client's identity came from; ``sub`` in full, also when the token's own
    subject is its digest form."""
    return {"client": dict(NO_CERTIFICATE),
            "assertion": {"issuer": issuer_name, "iss": claims["iss"], "sub": claims["sub"]}}


def secret_proof() -> dict[str, Any]:
    return {"client": dict(NO_CERTIFICATE), "assertion": dict(NO_ASSERTION)}
