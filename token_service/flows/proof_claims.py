"""The claims that record how a client proved itself, one shape for every flow.

Names match the predecessor and its documented attribute mapping
(``google.subject=assertion.client_id``, ``attribute.client_x5_*``), so existing
workload identity providers keep working. Every token carries ``client`` and
``assertion`` with every entry present (empty when its flow has none), so CEL
mappings never fail on a missing key; a certificate adds ``cnf`` (RFC 8705).
"""

from __future__ import annotations

from typing import Any

from token_service.flows.rfc8705_mtls import ClientCertificate


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
