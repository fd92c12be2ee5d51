"""Signers: turn a claims set into a signed JWT (RFC 7515/7519).

A signer owns its keys and says where verifiers find the public half
(``jwks_uri``). ``IamSigner`` (the production default) asks the IAM Credentials
``signJwt`` API to sign as the function's own service account, so there is no
key to manage and Google publishes the keys. ``LocalKeySigner`` holds a PEM key
in memory for local runs and tests.
"""

from __future__ import annotations

import base64
import hashlib
import json
from collections.abc import Mapping
from typing import Any, Protocol

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature

from token_service.config import GoogleSettings, SignerSettings
from token_service.errors import ConfigurationError, CredentialsUnavailable, IamRefused, MalformedValue, SigningError
from token_service.google import metadata
from token_service.google.iam_credentials import IamCredentialsClient
from token_service.google.runtime_credentials import RuntimeCredentials, runtime_credentials
from token_service.google.transport import UpstreamClient

MIN_RSA_KEY_BITS = 2048
_PKCS1V15 = padding.PKCS1v15()
_SHA256 = hashes.SHA256()
_ECDSA_SHA256 = ec.ECDSA(_SHA256)


class Signer(Protocol):
    algorithm: str
    signs_in_process: bool  # False: signing waits on the network

    def sign(self, claims: Mapping[str, Any]) -> str:
        """Return the compact JWS of ``claims``; raise ``SigningError`` on failure."""
        ...

    def jwks_uri(self, issuer: str) -> str:
        """Where verifiers (Google STS included) fetch the public keys."""
        ...

    def public_jwks(self) -> dict[str, Any] | None:
        """The JWKS the broker serves itself, or None when the keys live elsewhere."""
        ...


class LocalKeySigner:
    """Signs with a private key held in this process."""

    signs_in_process = True

    def __init__(self, private_key: rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey, algorithm: str):
        _check_key(private_key, algorithm)
        self.algorithm = algorithm
        self._private_key = private_key
        _self_test(private_key)
        public_jwk = _public_jwk(private_key)
        self.key_id = jwk_thumbprint(public_jwk)
        self._jwks = {"keys": [{**public_jwk, "kid": self.key_id, "alg": algorithm, "use": "sig"}]}
        self._header = _b64(_json({"alg": algorithm, "kid": self.key_id, "typ": "JWT"}))

    @classmethod
    def from_pem_file(cls, path: str, algorithm: str) -> LocalKeySigner:
        try:
            with open(path, "rb") as pem:
                # cryptography's RSA validation lengthens every cold start; the self-test
                # in __init__ catches what matters here, a key that signs wrongly.
                key = serialization.load_pem_private_key(pem.read(), password=None,
                                                         unsafe_skip_rsa_key_validation=True)
        except OSError as error:
            raise MalformedValue(f"cannot read {path}: {error.strerror}") from None
        except (ValueError, TypeError) as error:
            raise MalformedValue(f"{path} is not an unencrypted PEM private key ({error})") from None
        if not isinstance(key, (rsa.RSAPrivateKey, ec.EllipticCurvePrivateKey)):
            raise MalformedValue(f"{path} holds a {type(key).__name__}; use an RSA or P-256 EC key")
        return cls(key, algorithm)

    def sign(self, claims: Mapping[str, Any]) -> str:
        # RFC 7515 compact serialization by hand, the header encoded once: PyJWT's jwt.encode cost 4.9 %
        # of ID tokens/s at concurrency 32 in paired runs (docs/performance.md).
        signing_input = self._header + b"." + _b64(_json(dict(claims)))
        key = self._private_key
        if isinstance(key, rsa.RSAPrivateKey):
            signature = key.sign(signing_input, _PKCS1V15, _SHA256)
        else:  # ES256: the JWS form of an ECDSA signature is r || s, 32 bytes each
            r, s = decode_dss_signature(key.sign(signing_input, _ECDSA_SHA256))
            signature = r.to_bytes(32, "big") + s.to_bytes(32, "big")
        return (signing_input + b"." + _b64(signature)).decode("ascii")

    def jwks_uri(self, issuer: str) -> str:
        return f"{issuer}/jwks"

    def public_jwks(self) -> dict[str, Any]:
        return self._jwks


class IamSigner:
    """Signs with IAM Credentials ``signJwt`` as a service account, with the function's own credentials.

    One REST call through the pooled upstream client, like the other IAM calls:
    google-cloud-iam's client would make the same call but costs 0.2-0.35 s to
    import, more than a whole cold start.
    """

    algorithm = "RS256"
    signs_in_process = False

    def __init__(self, service_account: str, google: GoogleSettings, iam: IamCredentialsClient,
                 credentials: RuntimeCredentials):
        self.service_account = service_account
        self._google = google
        self._iam = iam
        self._credentials = credentials

    def sign(self, claims: Mapping[str, Any]) -> str:
        try:
            return self._iam.sign_jwt(self.service_account, self._credentials.access_token(),
                                      _json(dict(claims)).decode("ascii"))
        except CredentialsUnavailable as error:
            raise SigningError(str(error)) from None
        except IamRefused as refusal:
            raise SigningError(
                f"IAM signJwt refused for {self.service_account} ({refusal.status} {refusal.code}: "
                f"{refusal.message}); the service account needs iam.serviceAccounts.signJwt on itself "
                "(deploy.sh grants a custom role holding only that permission)"
            ) from None

    def jwks_uri(self, issuer: str) -> str:
        return self._google.service_account_jwks_uri(self.service_account)

    def public_jwks(self) -> None:
        return None


def load_signer(
    settings: SignerSettings, google: GoogleSettings, environ: Mapping[str, str], upstream: UpstreamClient
) -> Signer:
    """Build the configured signer; a bad key or unknown identity is a configuration error."""
    if settings.kind == "iam":
        email = settings.service_account
        if email is None:
            try:
                email = metadata.runtime_service_account(environ)
            except OSError as error:
                raise ConfigurationError([
                    "SIGNING_SERVICE_ACCOUNT is not set and the metadata server did not name the runtime "
                    f"service account ({error}); set SIGNING_SERVICE_ACCOUNT"
                ]) from None
        return IamSigner(email, google, IamCredentialsClient(upstream, google.iam_credentials_endpoint),
                         runtime_credentials(upstream, environ))
    try:
        return LocalKeySigner.from_pem_file(settings.key_file or "", settings.algorithm)
    except MalformedValue as error:
        raise ConfigurationError([f"SIGNING_KEY_FILE: {error}"]) from None


def jwk_thumbprint(jwk: Mapping[str, Any]) -> str:
    """RFC 7638 thumbprint: SHA-256 over the required members in lexicographic order."""
    required = {"RSA": ("e", "kty", "n"), "EC": ("crv", "kty", "x", "y")}[jwk["kty"]]
    canonical = json.dumps({name: jwk[name] for name in required}, separators=(",", ":"), sort_keys=True)
    return base64.urlsafe_b64encode(hashlib.sha256(canonical.encode()).digest()).decode().rstrip("=")


def _public_jwk(private_key: rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey) -> dict[str, Any]:
    """RFC 7518 section 6 public members."""
    if isinstance(private_key, rsa.RSAPrivateKey):
        numbers = private_key.public_key().public_numbers()
        return {"kty": "RSA", "n": _b64_int(numbers.n), "e": _b64_int(numbers.e)}
    point = private_key.public_key().public_numbers()
    return {"kty": "EC", "crv": "P-256", "x": _b64_int(point.x, 32), "y": _b64_int(point.y, 32)}


def _b64_int(value: int, length: int | None = None) -> str:
    return _b64(value.to_bytes(length or (value.bit_length() + 7) // 8, "big")).decode("ascii")


def _json(document: Any) -> bytes:
    return json.dumps(document, separators=(",", ":")).encode("ascii")


def _b64(data: bytes) -> bytes:
    return base64.urlsafe_b64encode(data).rstrip(b"=")



def _self_test(private_key: rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey) -> None:
    """Sign and verify once: a corrupt key fails here, not in every token."""
    from cryptography.exceptions import InvalidSignature

    message = b"token-service key self-test"
    try:
        if isinstance(private_key, rsa.RSAPrivateKey):
            signature = private_key.sign(message, _PKCS1V15, _SHA256)
            private_key.public_key().verify(signature, message, _PKCS1V15, _SHA256)
        else:
            signature = private_key.sign(message, _ECDSA_SHA256)
            private_key.public_key().verify(signature, message, _ECDSA_SHA256)
    except (InvalidSignature, ValueError):
        raise ValueError("the key fails a sign-and-verify self-test (corrupt key)") from None


def _check_key(private_key: object, algorithm: str) -> None:
    if algorithm == "RS256":
        if not isinstance(private_key, rsa.RSAPrivateKey):
            raise ValueError("RS256 needs an RSA key")
        if private_key.key_size < MIN_RSA_KEY_BITS:
            raise ValueError(f"the RSA key has {private_key.key_size} bits; use at least {MIN_RSA_KEY_BITS}")
    elif algorithm == "ES256":
        if not isinstance(private_key, ec.EllipticCurvePrivateKey) or private_key.curve.name != "secp256r1":
            raise ValueError("ES256 needs a P-256 EC key")
    else:
        raise ValueError(f"unsupported algorithm {algorithm}")
