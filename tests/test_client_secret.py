"""client_secret_basic / client_secret_post against scrypt hashes, with rotation and a failure limit."""

from __future__ import annotations

import base64
import hashlib

import pytest

from token_service.edge.parsing import presented_credentials
from token_service.errors import OAuthError, Reason
from token_service.flows.rfc6749_client_secret import (
    MAX_SECRET_HASHES,
    SCRYPT_N,
    SCRYPT_P,
    SCRYPT_R,
    SecretAuthenticator,
    hash_secret,
    verify_secret,
)
from token_service.policy import parse_policy
from token_service.request import ClientCredentials
from token_service.state.failure_limiter import FailureLimiter

OLD, NEW = "old-secret-0123456789", "new-secret-9876543210"


def authenticator(limiter=None) -> SecretAuthenticator:
    policy = parse_policy({"rules": [{"name": "scanner", "client_secret": {
        "client_id": "legacy-scanner", "secret_hashes": [hash_secret(OLD), hash_secret(NEW)]}}]})
    return SecretAuthenticator(policy, limiter)


def test_hashes_are_salted_and_verify():
    first, second = hash_secret(OLD), hash_secret(OLD)
    assert first != second and first.startswith("scrypt$16384$8$1$")
    assert verify_secret(OLD, first) and not verify_secret(NEW, first)
    assert not verify_secret(OLD, "scrypt$garbage") and not verify_secret(OLD, "bcrypt$x")


def test_both_active_secrets_work_during_a_rotation():
    auth = authenticator()
    for secret in (OLD, NEW):
        assert auth.authenticate(ClientCredentials("legacy-scanner", secret, "client_secret_post")) == "legacy-scanner"


def basic(client_id: str, secret: str) -> dict[str, str]:
    return {"authorization": "Basic " + base64.b64encode(f"{client_id}:{secret}".encode()).decode()}


def test_credentials_from_the_header_or_the_body():
    assert presented_credentials(basic("legacy%2Dscanner", "a%3Ab"), {}) == ClientCredentials(
        "legacy-scanner", "a:b", "client_secret_basic")
    assert presented_credentials({}, {"client_id": "c", "client_secret": "s"}).method == "client_secret_post"
    assert presented_credentials({"authorization": "Bearer x"}, {}) is None
    with pytest.raises(OAuthError) as raised:
        presented_credentials(basic("c", "s"), {"client_secret": "s"})
    assert raised.value.status == 400
    with pytest.raises(OAuthError) as raised:
        presented_credentials({"authorization": "Basic !!!"}, {})
    assert raised.value.status == 401


@pytest.mark.parametrize(("client_id", "secret"), [("legacy-scanner", "wrong"), ("unknown", OLD), ("", OLD)])
def test_wrong_credentials(client_id, secret):
    with pytest.raises(OAuthError) as raised:
        authenticator().authenticate(ClientCredentials(client_id, secret, "client_secret_basic"))
    error = raised.value
    assert (error.status, error.error, error.reason) == (401, "invalid_client", Reason.INVALID_CLIENT_SECRET)
    assert dict(error.headers)["WWW-Authenticate"].startswith("Basic")


def test_failures_are_rate_limited_per_client_without_locking_out_forever():
    clock = [0.0]
    auth = authenticator(FailureLimiter(burst=3, refill_seconds=10, clock=lambda: clock[0]))
    wrong = ClientCredentials("legacy-scanner", "wrong", "client_secret_post")
    for _ in range(3):
        with pytest.raises(OAuthError):
            auth.authenticate(wrong)
    with pytest.raises(OAuthError) as raised:
        auth.authenticate(ClientCredentials("legacy-scanner", OLD, "client_secret_post"))
    assert raised.value.status == 429 and int(dict(raised.value.headers)["Retry-After"]) >= 1
    # Another client is not affected, and the limited one recovers.
    with pytest.raises(OAuthError) as other:
        auth.authenticate(ClientCredentials("someone-else", "x", "client_secret_post"))
    assert other.value.status == 401
    clock[0] += 10
    assert auth.authenticate(ClientCredentials("legacy-scanner", OLD, "client_secret_post")) == "legacy-scanner"


def one_hash_authenticator() -> SecretAuthenticator:
    policy = parse_policy({"rules": [{"name": "batch", "client_secret": {
        "client_id": "batch-job", "secret_hashes": [hash_secret(OLD)]}}]})
    return SecretAuthenticator(policy)


@pytest.mark.parametrize(("make", "client_id"), [
    (authenticator, "legacy-scanner"),  # two hashes: mid-rotation
    (one_hash_authenticator, "batch-job"),  # one hash
    (authenticator, "unknown-client"),  # no such client
])
def test_a_wrong_secret_costs_the_same_scrypt_work_for_every_client_id(monkeypatch, make, client_id):
    """Timing must not tell which client ids exist or are rotating: count the hashes, not the clock."""
    auth = make()  # the policy's hashes are computed before counting starts
    computed = []
    real_scrypt = hashlib.scrypt

    def counting_scrypt(password, *, salt, n, r, p, dklen=64, maxmem=0):
        computed.append((n, r, p, dklen))
        return real_scrypt(password, salt=salt, n=n, r=r, p=p, dklen=dklen, maxmem=maxmem)

    monkeypatch.setattr(hashlib, "scrypt", counting_scrypt)
    with pytest.raises(OAuthError):
        auth.authenticate(ClientCredentials(client_id, "wrong-secret", "client_secret_post"))
    assert computed == [(SCRYPT_N, SCRYPT_R, SCRYPT_P, 32)] * MAX_SECRET_HASHES


def test_one_sources_failures_do_not_lock_out_another():
    """A stranger guessing from elsewhere is limited; the real client, from its own address, still gets in."""
    auth = authenticator(FailureLimiter(burst=3, refill_seconds=10, clock=lambda: 0.0))
    for _ in range(3):
        with pytest.raises(OAuthError):
            auth.authenticate(ClientCredentials("legacy-scanner", "guess", "client_secret_post"), "198.51.100.66")
    with pytest.raises(OAuthError) as raised:
        auth.authenticate(ClientCredentials("legacy-scanner", "guess", "client_secret_post"), "198.51.100.66")
    assert raised.value.status == 429
    real = ClientCredentials("legacy-scanner", OLD, "client_secret_post")
    assert auth.authenticate(real, "203.0.113.7") == "legacy-scanner"


@pytest.mark.parametrize(("claimed", "label"), [
    ("legacy-scanner", "legacy-scanner"),  # a known id, whole
    ("no-such-client", "no-such-client"),  # guessing ids is worth tracing too
    ('evil"\n{"severity":"INFO"}é', "evil????severity???INFO???"),  # no quotes, line breaks or other text
    ("x" * 500, "x" * 64 + "...[500 chars]"),  # bounded, its length kept
])
def test_refused_attempts_carry_the_claimed_client_id_sanitised_and_never_the_secret(claimed, label):
    auth = authenticator(FailureLimiter(burst=1, refill_seconds=10, clock=lambda: 0.0))
    for status in (401, 429):  # a wrong secret, then the limit
        with pytest.raises(OAuthError) as raised:
            auth.authenticate(ClientCredentials(claimed, "the-guessed-secret", "client_secret_post"), "198.51.100.66")
        assert raised.value.status == status
        assert dict(raised.value.audit_labels)["claimed_client_id"] == label
        assert "the-guessed-secret" not in repr(raised.value)
    assert f"'{label}'" in raised.value.description  # the 429 names the client: sanitised there too
