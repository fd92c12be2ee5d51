"""Values shared by the unit tests: a verified certificate as the load balancer describes it."""

from __future__ import annotations

import base64
import hashlib

ISSUER = "https://token.example.net"
FINGERPRINT = base64.b64encode(hashlib.sha256(b"certificate").digest()).decode().rstrip("=")


def b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


def verified_headers(**overrides: str) -> dict[str, str]:
    """Lower-cased headers as the load balancer sends them for a verified certificate."""
    headers = {
        "x-client-cert-present": "true",
        "x-client-cert-chain-verified": "true",
        "x-client-cert-error": "",
        "x-client-cert-hash": FINGERPRINT,
        "x-client-cert-serial-number": "00:c9:77:71:db",
        "x-client-cert-spiffe": "spiffe://example.net/ns/prod/sa/meter",
        "x-client-cert-uri-sans": b64("https://device.example.net/1"),
        "x-client-cert-dnsname-sans": b64("device-1.example.net"),
        "x-client-cert-valid-not-before": "2020-01-01T00:00:00+00:00",
        "x-client-cert-valid-not-after": "2099-01-01T00:00:00+00:00",
    }
    headers.update({name.lower(): value for name, value in overrides.items()})
    return headers


def default_names():
    """The header names the function reads without MTLS_HEADER_* settings."""
    from token_service.config import mtls_header_names

    return mtls_header_names({})


def authenticate(headers, names, now):
    """The mTLS flow on a request's lower-cased headers, as the edge reads them."""
    from token_service.flows import rfc8705_mtls as mtls

    return mtls.authenticate(mtls.CertificateHeaders.read(headers, names), names, now)
