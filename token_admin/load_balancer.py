"""What Google's load balancer tells the function about a client certificate.

The mTLS custom request headers, in the formats of its documented variables
(https://cloud.google.com/load-balancing/docs/custom-headers): the base64 SHA-256
fingerprint without padding, the serial as colon-separated hex, each SAN
base64-encoded on its own and the encodings joined by commas, RFC 3339 validity.
``simulate`` feeds these headers to the function's own flow, and the local
gateway sends them, so both see a certificate exactly as the deployment will.
"""

from __future__ import annotations

import base64
import hashlib
from collections.abc import Mapping

from cryptography import x509
from cryptography.hazmat.primitives import serialization


def certificate_headers(leaf: x509.Certificate | None, verify_error: str, names: Mapping[str, str],
                        san_shape: str = "each") -> dict[str, str]:
    """The headers (name -> value) for a handshake with ``leaf``; ``verify_error``, the load balancer's
    error code, is empty for a chain it verified. ``names`` maps each variable (``present``,
    ``sha256_fingerprint``...) to its configured header name."""
    values = dict.fromkeys(names, "")
    if leaf is None:
        values.update(present="false", chain_verified="false", error="client_cert_not_provided")
        return {names[attribute]: value for attribute, value in values.items()}
    try:
        sans = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        dns, uris = sans.get_values_for_type(x509.DNSName), sans.get_values_for_type(x509.UniformResourceIdentifier)
    except x509.ExtensionNotFound:
        dns, uris = [], []
    spiffe = [uri for uri in uris if uri.startswith("spiffe://")]
    values.update(
        present="true",
        chain_verified="false" if verify_error else "true",
        error=verify_error,
        sha256_fingerprint=fingerprint_text(leaf.public_bytes(serialization.Encoding.DER)),
        serial_number=serial_text(leaf.serial_number),
        # The load balancer passes a SPIFFE ID only when it is the certificate's one spiffe:// URI SAN.
        spiffe_id=spiffe[0] if len(spiffe) == 1 else "",
        dnsname_sans=encode_sans(dns, san_shape),
        uri_sans=encode_sans([uri for uri in uris if not uri.startswith("spiffe://")], san_shape),
        valid_not_before=leaf.not_valid_before_utc.isoformat(),
        valid_not_after=leaf.not_valid_after_utc.isoformat(),
    )
    return {names[attribute]: value for attribute, value in values.items()}


def fingerprint_text(der: bytes) -> str:
    """The load balancer's fingerprint format: base64 SHA-256, no padding."""
    return base64.b64encode(hashlib.sha256(der).digest()).decode().rstrip("=")


def serial_text(serial: int) -> str:
    """DER INTEGER content bytes as colon-separated hex (a leading 00 when the high bit is set),
    the shape of the load balancer's documented sample "00:c9:77:..."."""
    raw = serial.to_bytes(serial.bit_length() // 8 + 1, "big", signed=True)
    return ":".join(f"{byte:02x}" for byte in raw)


def encode_sans(sans: list[str], shape: str) -> str:
    """Both readings of "comma-separated Base64-encoded list": "each" SAN encoded on its own (what the
    function reads), or the "joined" list encoded once, which cannot tell two SANs from one holding a
    comma; the function reads it as one SAN, so a certificate with several fails closed."""
    if not sans:
        return ""
    if shape == "joined":
        return base64.b64encode(",".join(sans).encode()).decode()
    return ",".join(base64.b64encode(san.encode()).decode() for san in sans)
