import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa

from token_service.config import SignerSettings
from token_service.errors import ConfigurationError
from token_service.issuing.signers import LocalKeySigner, jwk_thumbprint, load_signer


def test_rfc7638_thumbprint_example():
    # The worked example of RFC 7638 section 3.1.
    jwk = {
        "kty": "RSA",
        "n": "0vx7agoebGcQSuuPiLJXZptN9nndrQmbXEps2aiAFbWhM78LhWx4cbbfAAtVT86zwu1RK7aPFFxuhDR1L6tSoc_BJECPebWKRX"
        "jBZCiFV4n3oknjhMstn64tZ_2W-5JsGY4Hc5n9yBXArwl93lqt7_RN5w6Cf0h4QyQ5v-65YGjQR0_FDW2QvzqY368QQMicAtaSqzs8KJZ"
        "gnYb9c7d0zgdAZHzu6qMQvRL5hajrn1n91CbOpbISD08qNLyrdkt-bFTWhAI4vMQFh6WeZu0fM4lFd2NcRwr3XPksINHaQ-G_xBniIqb"
        "w0Ls1jF44-csFCur-kEgU8awapJzKnqDKgw",
        "e": "AQAB",
        "alg": "RS256",
        "kid": "2011-04-29",
    }
    assert jwk_thumbprint(jwk) == "NzbLsXh8uDCcd-6MNwXF4W_7noWXFZAfHkxZsRGC9Xs"


def test_rs256_token_verifies_with_the_served_jwks(rsa_key):
    signer = LocalKeySigner(rsa_key, "RS256")
    token = signer.sign({"sub": "client", "aud": "x"})
    header = jwt.get_unverified_header(token)
    assert header["alg"] == "RS256" and header["kid"] == signer.key_id
    keys = jwt.PyJWKSet.from_dict(signer.public_jwks())
    assert keys[header["kid"]].key_id == signer.key_id
    claims = jwt.decode(token, keys[header["kid"]].key, algorithms=["RS256"], audience="x")
    assert claims["sub"] == "client"
    assert "d" not in signer.public_jwks()["keys"][0]  # never the private part


def test_es256_signer():
    signer = LocalKeySigner(ec.generate_private_key(ec.SECP256R1()), "ES256")
    token = signer.sign({"sub": "client"})
    key = jwt.PyJWKSet.from_dict(signer.public_jwks())[signer.key_id].key
    assert jwt.decode(token, key, algorithms=["ES256"])["sub"] == "client"


def test_jwks_uri_is_under_the_issuer(rsa_key):
    assert LocalKeySigner(rsa_key, "RS256").jwks_uri("https://issuer") == "https://issuer/jwks"


@pytest.mark.parametrize(
    ("key", "algorithm"),
    [
        (ec.generate_private_key(ec.SECP256R1()), "RS256"),
        (rsa.generate_private_key(public_exponent=65537, key_size=1024), "RS256"),
        (ec.generate_private_key(ec.SECP384R1()), "ES256"),
    ],
)
def test_weak_or_mismatched_keys_are_refused(key, algorithm):
    with pytest.raises(ValueError):
        LocalKeySigner(key, algorithm)


def write(path, key, password=None):
    encryption = serialization.BestAvailableEncryption(password) if password else serialization.NoEncryption()
    path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, encryption))
    return str(path)


@pytest.mark.parametrize(
    "make_file",
    [
        lambda tmp: str(tmp / "missing.pem"),
        lambda tmp: (tmp / "garbage.pem").write_text("not a key") and str(tmp / "garbage.pem"),
        lambda tmp: write(tmp / "ed.pem", ed25519.Ed25519PrivateKey.generate()),
        lambda tmp: write(tmp / "locked.pem", rsa.generate_private_key(public_exponent=65537, key_size=2048),
                          b"secret"),
    ],
    ids=["missing", "not-pem", "ed25519", "encrypted"],
)
def test_unusable_key_files_are_configuration_errors(tmp_path, make_file):
    with pytest.raises(ConfigurationError) as raised:
        settings = SignerSettings(kind="local", algorithm="RS256", key_file=make_file(tmp_path), service_account=None)
        load_signer(settings, None, {}, None)
    assert "SIGNING_KEY_FILE" in str(raised.value)


def test_a_corrupt_rsa_key_fails_the_self_test(rsa_key):
    numbers = rsa_key.private_numbers()
    corrupt = rsa.RSAPrivateNumbers(
        numbers.p, numbers.q, numbers.d ^ 2, numbers.dmp1 ^ 2, numbers.dmq1, numbers.iqmp, numbers.public_numbers
    ).private_key(unsafe_skip_rsa_key_validation=True)
    with pytest.raises(ValueError, match="self-test"):
        LocalKeySigner(corrupt, "RS256")
