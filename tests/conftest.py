"""Shared fixtures: a valid configuration and load-balancer headers for a verified certificate."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from tests.support import ISSUER
from token_service.audit import JsonLineWriter
from token_service.config import load_settings
from token_service.issuing.signers import LocalKeySigner
from token_service.service import TokenService


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


@pytest.fixture
def names(environ):
    from token_service.config import load_settings

    return load_settings(environ).mtls_headers
