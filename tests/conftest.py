"""Shared fixtures: a valid configuration and load-balancer headers for a verified certificate."""

from __future__ import annotations

import base64
import hashlib
import io
import json
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from token_service.audit import JsonLineWriter
from token_service.config import load_settings
from token_service.service import TokenService
from token_service.signers import LocalKeySigner

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


@pytest.fixture(scope="session")
def rsa_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


@pytest.fixture
def key_file(tmp_path: Path, rsa_key) -> Path:
    path = tmp_path / "signing-key.pem"
    path.write_bytes(
        rsa_key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    return path


@pytest.fixture
def environ(key_file: Path) -> dict[str, str]:
    return {
        "TOKEN_ISSUER": ISSUER,
        "WORKLOAD_IDENTITY_PROJECT_NUMBER": "123456789012",
        "WORKLOAD_IDENTITY_POOL_ID": "device-pool",
        "WORKLOAD_IDENTITY_PROVIDER_ID": "token-service",
        "TOKEN_SIGNER": "local",
        "SIGNING_KEY_FILE": str(key_file),
    }


class AuditCapture:
    """The audit lines a service wrote, parsed."""

    def __init__(self):
        self.stream = io.StringIO()

    @property
    def entries(self) -> list[dict]:
        return [json.loads(line) for line in self.stream.getvalue().splitlines()]


@pytest.fixture
def audit() -> AuditCapture:
    return AuditCapture()


@pytest.fixture
def service(environ, rsa_key, audit) -> TokenService:
    settings = load_settings(environ)
    return TokenService(settings, LocalKeySigner(rsa_key, "RS256"), JsonLineWriter(audit.stream))
