"""The dev gateway must describe certificates exactly as the load balancer's header variables do."""

from __future__ import annotations

import base64
import hashlib

from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

from devtools import gateway
from devtools.pki import ensure_dev_pki, mint_client
from token_admin import load_balancer
from token_service.flows import rfc8705_mtls as mtls

NAMES = gateway.header_names_from_environment({})


def load(path) -> x509.Certificate:
    return x509.load_pem_x509_certificate(path.read_bytes())


def test_no_certificate():
    headers = gateway.certificate_headers(None, [], NAMES, "each")
    assert headers["X-Client-Cert-Present"] == "false"
    assert headers["X-Client-Cert-Error"] == "client_cert_not_provided"
    assert headers["X-Client-Cert-Hash"] == ""


def test_verified_certificate_headers(tmp_path):
    issued = mint_client(tmp_path, "multi", dns=["a.example", "b.example"], uris=["urn:x:1"],
                         spiffe="spiffe://td/ns/a/sa/b")
    cert = load(issued.certificate)
    headers = gateway.certificate_headers(cert, [], NAMES, "each")
    assert headers["X-Client-Cert-Present"] == headers["X-Client-Cert-Chain-Verified"] == "true"
    assert headers["X-Client-Cert-Error"] == ""
    digest = hashlib.sha256(cert.public_bytes(Encoding.DER)).digest()
    assert headers["X-Client-Cert-Hash"] == base64.b64encode(digest).decode().rstrip("=")
    assert headers["X-Client-Cert-SPIFFE"] == "spiffe://td/ns/a/sa/b"
    assert mtls.parse_san_header(headers["X-Client-Cert-DNSName-SANs"], dns=True) == ("a.example", "b.example")
    assert mtls.parse_san_header(headers["X-Client-Cert-URI-SANs"], dns=False) == ("urn:x:1",)  # SPIFFE ID excluded
    assert headers["X-Client-Cert-Valid-Not-After"].endswith("+00:00")


def test_serial_is_colon_hex_of_the_der_integer():
    assert load_balancer.serial_text(0xC97771) == "00:c9:77:71"  # high bit set: DER keeps a 00 byte
    assert load_balancer.serial_text(0x1234) == "12:34"


def test_unverified_certificate_reports_an_error_code(tmp_path):
    ensure_dev_pki(tmp_path)
    cert = load(tmp_path / "pki" / "client.pem")
    headers = gateway.certificate_headers(cert, [20], NAMES, "each")
    assert headers["X-Client-Cert-Chain-Verified"] == "false"
    assert headers["X-Client-Cert-Error"] == "client_cert_validation_failed"
    assert gateway.certificate_headers(cert, [26], NAMES, "each")["X-Client-Cert-Error"] == (
        "client_cert_chain_invalid_eku"
    )


def test_x_forwarded_for_is_appended_to_as_the_load_balancer_does():
    """Google's load balancer appends "<client-ip>,<load-balancer-ip>" to whatever the client sent, so e2e tests
    see the client-chosen entries the function must not trust."""
    assert gateway.forwarded_for([], "198.51.100.7") == "198.51.100.7,127.0.0.1"
    assert gateway.forwarded_for(["6.6.6.6"], "198.51.100.7") == "6.6.6.6,198.51.100.7,127.0.0.1"
    assert gateway.forwarded_for(["6.6.6.6, 7.7.7.7", "8.8.8.8"], "198.51.100.7") == (
        "6.6.6.6, 7.7.7.7,8.8.8.8,198.51.100.7,127.0.0.1")
