"""RFC 7523 assertions from a real local issuer (discovery + JWKS over HTTP), and what must be refused."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import threading
import time

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from jwt.algorithms import RSAAlgorithm

from devtools.oidc_issuer import LocalIssuer
from token_service.errors import OAuthError, Reason
from token_service.flows.issuer_keys import JwksCache
from token_service.flows.rfc7523_jwt_bearer import AssertionVerifier
from token_service.google.transport import RetryPolicy, UpstreamClient
from token_service.policy import parse_policy
from token_service.state.replay_cache import ReplayCache

BROKER = "https://token.example.net"
AUDIENCES = (BROKER, f"{BROKER}/token")


@pytest.fixture
def issuer():
    issuer = LocalIssuer().start()
    yield issuer
    issuer.stop()


def policy_for(issuer: LocalIssuer, **options):
    return parse_policy({
        "issuers": [{"name": "prod-cluster", "issuer": issuer.url, **options}],
        "rules": [{"name": "payments", "assertion": {"issuer": "prod-cluster", "subject": "system:serviceaccount:*"}}],
    })


def verifier(issuer: LocalIssuer, cache: JwksCache | None = None, **options) -> AssertionVerifier:
    client = UpstreamClient(RetryPolicy(read_timeout=1, budget=1))
    return AssertionVerifier(policy_for(issuer, **options), AUDIENCES, cache or JwksCache(client))


def refused(verify: AssertionVerifier, assertion: str) -> OAuthError:
    with pytest.raises(OAuthError) as raised:
        verify.verify(assertion)
    return raised.value


def test_kubernetes_projected_token_is_accepted(issuer):
    verified = verifier(issuer).verify(issuer.mint(audience=BROKER))
    assert verified.subject == "system:serviceaccount:payments:api"
    assert verified.client_id == "jwt:prod-cluster:system:serviceaccount:payments:api"
    assert verified.claims["kubernetes.io"]["namespace"] == "payments"


def test_the_longest_legal_kubernetes_subject_gets_a_stable_digest_subject_within_127_bytes(issuer):
    # Namespaces and service-account names are DNS labels of up to 63 characters: a 149-byte sub.
    namespace, account = "n" * 63, "a" * 63
    subject = f"system:serviceaccount:{namespace}:{account}"
    verify = verifier(issuer)
    first = verify.verify(issuer.mint(audience=BROKER, subject=subject))
    again = verify.verify(issuer.mint(audience=BROKER, subject=subject))
    digest = base64.urlsafe_b64encode(hashlib.sha256(subject.encode()).digest()).decode().rstrip("=")
    assert first.client_id == again.client_id == f"jwt-sha256:prod-cluster:{digest}"
    assert len(first.client_id.encode()) <= 127
    assert first.subject == subject  # kept whole for the policy and the token's assertion.sub
    other = verify.verify(issuer.mint(audience=BROKER, subject=subject[:-1] + "b"))
    assert other.client_id != first.client_id


def test_es256_issuer_with_keys_lacking_alg_and_use():
    issuer = LocalIssuer("ES256").start()
    try:
        assert "alg" not in issuer.jwks()["keys"][0]
        assert verifier(issuer).verify(issuer.mint(audience=[f"{BROKER}/token", "other"])).subject
    finally:
        issuer.stop()


def test_inline_jwks_needs_no_fetch(issuer):
    verify = verifier(issuer, jwks=issuer.jwks())
    issuer.down = True
    assert verify.verify(issuer.mint(audience=BROKER)).subject


def test_key_rotation_new_kid_is_fetched_and_retired_kid_refused(issuer):
    cache = JwksCache(UpstreamClient(), cooldown_seconds=0)
    verify = verifier(issuer, cache)
    old_kid = issuer.current_kid
    assert verify.verify(issuer.mint(audience=BROKER))
    issuer.rotate()
    assert verify.verify(issuer.mint(audience=BROKER))  # unknown kid: one refetch finds it
    assert cache.fetches == 2
    old_token = issuer.mint(audience=BROKER, kid=old_kid)
    issuer.retire(old_kid)
    # Still cached and fresh: the old key verifies until the cache refreshes...
    assert verify.verify(old_token)
    cache_fresh = JwksCache(UpstreamClient())
    error = refused(verifier(issuer, cache_fresh), old_token)  # ...a fresh view no longer has it
    assert error.error == "invalid_grant" and "kid" in error.description


def test_unknown_kid_refetch_is_rate_limited_and_collapsed(issuer):
    cache = JwksCache(UpstreamClient(), cooldown_seconds=60)
    verify = verifier(issuer, cache)
    verify.verify(issuer.mint(audience=BROKER))
    forged = jwt.encode({"iss": issuer.url}, "x" * 32, algorithm="HS256")
    header = base64.urlsafe_b64encode(json.dumps({"alg": "RS256", "kid": "nope"}).encode()).decode().rstrip("=")
    unknown = ".".join([header, *forged.split(".")[1:]])
    errors = []

    def attempt():
        try:
            verify.verify(unknown)
        except OAuthError as error:
            errors.append(error)

    threads = [threading.Thread(target=attempt) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(errors) == 8
    assert cache.fetches <= 2  # the first fetch, then at most one refetch for all eight


def test_fetch_failure_keeps_the_last_good_keys(issuer):
    clock = [1000.0]
    cache = JwksCache(UpstreamClient(RetryPolicy(budget=0.5)), fresh_seconds=10, stale_seconds=100,
                      cooldown_seconds=0, clock=lambda: clock[0])
    verify = verifier(issuer, cache)
    assert verify.verify(issuer.mint(audience=BROKER))
    issuer.down = True
    clock[0] += 50  # stale but within the grace period
    assert verify.verify(issuer.mint(audience=BROKER))
    clock[0] += 100  # past it
    error = refused(verify, issuer.mint(audience=BROKER))
    assert error.status == 503 and error.reason is Reason.ISSUER_KEYS_UNAVAILABLE


@pytest.mark.parametrize(
    ("make", "reason", "fragment"),
    [
        (lambda issuer: LocalIssuer().start().mint(audience=BROKER), Reason.UNTRUSTED_ISSUER, "not trusted"),
        (lambda issuer: issuer.mint(audience="https://someone-else"), Reason.INVALID_ASSERTION, "aud"),
        (lambda issuer: issuer.mint(audience=BROKER, lifetime=-120), Reason.INVALID_ASSERTION, "expired"),
        (lambda issuer: issuer.mint(audience=BROKER, iat=int(time.time()) + 600), Reason.INVALID_ASSERTION,
         "future"),
        (lambda issuer: issuer.mint(audience=BROKER, lifetime=48 * 3600), Reason.INVALID_ASSERTION, "lifetime"),
        (lambda issuer: jwt.encode({"iss": issuer.url, "sub": "x", "aud": BROKER}, None, algorithm="none"),
         Reason.INVALID_ASSERTION, "RS256 or ES256"),
        (lambda issuer: issuer.mint(audience=BROKER)[:-20], Reason.INVALID_ASSERTION, "invalid"),
        (lambda issuer: issuer.mint(audience=BROKER).rsplit(".", 1)[0], Reason.INVALID_ASSERTION, "three"),
        (lambda issuer: "x" * 9000, Reason.INVALID_ASSERTION, "exceeds"),
        (lambda issuer: issuer.mint(audience=BROKER, jti=None), Reason.INVALID_ASSERTION, "jti"),
    ],
    ids=["unknown-issuer", "wrong-audience", "expired", "iat-future", "too-long-lived", "alg-none", "truncated",
         "two-parts", "oversized", "no-jti"],
)
def test_refused_assertions(issuer, make, reason, fragment):
    error = refused(verifier(issuer), make(issuer))
    assert error.reason is reason and fragment in error.description
    assert error.status in (400, 401) and error.error in ("invalid_grant", "invalid_request")


@pytest.mark.parametrize(
    "subject",
    ["system:serviceaccount:payments:api\n", "system:serviceaccount:pay\x00ments:api", "system:serviceaccount:\x1b[31m",
     "system:serviceaccount:payments:api\x85", "system:serviceaccount:\u202eipa:stnemyap",
     "system:serviceaccount:\u2066payments\u2069:api", "system:serviceaccount:pay\u200bments:api",
     "system:serviceaccount:payments:api\u2028", "system:serviceaccount:\ufeffpayments:api"],
    ids=["newline", "nul", "escape", "c1-nel", "rlo", "isolate", "zero-width-space", "line-separator", "bom"],
)
def test_subject_with_control_or_bidi_characters_is_refused(issuer, subject):
    """A sub is copied into the token's sub and the audit line: what it shows must be what it is."""
    error = refused(verifier(issuer), issuer.mint(audience=BROKER, subject=subject))
    assert (error.status, error.error, error.reason) == (400, "invalid_grant", Reason.INVALID_ASSERTION)
    assert "sub" in error.description and "U+" in error.description
    assert error.description.isprintable()


def test_subject_with_printable_non_ascii_is_accepted(issuer):
    verified = verifier(issuer).verify(issuer.mint(audience=BROKER, subject="system:serviceaccount:zahlung:büro"))
    assert verified.subject == "system:serviceaccount:zahlung:büro"


def test_hs256_signed_with_the_public_key_is_refused(issuer):
    """Key confusion: the issuer's public key used as an HMAC secret."""
    public_pem = issuer._keys[issuer.current_kid].public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)

    def part(document: dict) -> str:
        return base64.urlsafe_b64encode(json.dumps(document).encode()).decode().rstrip("=")

    signing_input = ".".join([part({"alg": "HS256", "kid": issuer.current_kid}),
                              part({"iss": issuer.url, "sub": "x", "aud": BROKER, "iat": int(time.time()),
                                    "exp": int(time.time()) + 60, "jti": "j"})])
    mac = hmac.new(public_pem, signing_input.encode(), hashlib.sha256).digest()  # PyJWT refuses to make this
    token = signing_input + "." + base64.urlsafe_b64encode(mac).decode().rstrip("=")
    error = refused(verifier(issuer), token)
    assert "RS256 or ES256" in error.description


def test_nested_jwt_is_refused(issuer):
    inner = issuer.mint(audience=BROKER)
    nested = jwt.encode({"iss": issuer.url, "sub": inner}, issuer._keys[issuer.current_kid], algorithm="RS256",
                        headers={"kid": issuer.current_kid, "cty": "JWT"})
    assert "Nested" in refused(verifier(issuer), nested).description


def test_replayed_assertion_is_refused_for_single_use_issuers(issuer):
    verify = verifier(issuer)
    assertion = issuer.mint(audience=BROKER)
    verify.record_use(verify.verify(assertion))  # what the service does once the policy granted it
    error = refused(verify, assertion)
    assert error.reason is Reason.ASSERTION_REPLAYED


def test_a_replay_racing_the_first_use_is_refused_when_spent(issuer):
    verify = verifier(issuer)
    assertion = issuer.mint(audience=BROKER)
    first, second = verify.verify(assertion), verify.verify(assertion)  # both before either is spent
    verify.record_use(first)
    with pytest.raises(OAuthError) as raised:
        verify.record_use(second)
    assert raised.value.reason is Reason.ASSERTION_REPLAYED


def test_reusable_assertions_when_the_issuer_says_so(issuer):
    verify = verifier(issuer, single_use=False)
    assertion = issuer.mint(audience=BROKER)
    assert verify.verify(assertion) and verify.verify(assertion)


# --- through the token service: the replay cache, hostile assertion bytes, the token's lifetime ------------

JWT_BEARER = "urn:ietf:params:oauth:grant-type:jwt-bearer"
ALLOWED = "system:serviceaccount:payments:api"
DENIED = "system:serviceaccount:intruders:api"  # verifies, but no rule admits it


@pytest.fixture
def jwt_service(issuer, environ, rsa_key, audit, tmp_path):
    from token_service.audit import JsonLineWriter
    from token_service.config import load_settings
    from token_service.flows.authentication import Authenticator
    from token_service.issuing.signers import LocalKeySigner
    from token_service.service import TokenService

    policy_file = tmp_path / "policy.yaml"
    policy_file.write_text(json.dumps({
        "issuers": [{"name": "prod-cluster", "issuer": issuer.url, "jwks": issuer.jwks()}],
        "rules": [{"name": "payments", "assertion": {"issuer": "prod-cluster",
                                                     "subject": "system:serviceaccount:payments:*"}}]}))
    settings = load_settings({**environ, "AUTH_FLOWS": "jwt-bearer", "POLICY_FILE": str(policy_file)})
    policy = parse_policy(json.loads(policy_file.read_text()))
    assertions = AssertionVerifier(policy, (settings.issuer, f"{settings.issuer}/token"), JwksCache(UpstreamClient()),
                                   ReplayCache(limit=2))
    authenticator = Authenticator(settings.auth_flows, settings.mtls_headers, assertions)
    return TokenService(settings, LocalKeySigner(rsa_key, "RS256"), JsonLineWriter(audit.stream), policy=policy,
                        authenticator=authenticator)


def exchange(service, assertion: str):
    from urllib.parse import urlencode

    from token_service.edge.dispatch import HttpRequest, dispatch

    body = urlencode({"grant_type": JWT_BEARER, "assertion": assertion}).encode()
    response = dispatch(service, HttpRequest("POST", "/token", {"content-type": "application/x-www-form-urlencoded"},
                                             body))
    return response.status, json.loads(response.body)


def test_assertions_the_policy_denies_use_up_no_replay_slot(jwt_service, issuer):
    for _ in range(100):
        status, body = exchange(jwt_service, issuer.mint(audience=BROKER, subject=DENIED))
        assert (status, body["error"]) == (403, "unauthorized_client")
    status, body = exchange(jwt_service, issuer.mint(audience=BROKER))
    assert status == 200, body


def test_a_full_replay_cache_still_admits_fresh_assertions_and_refuses_replays(jwt_service, issuer):
    assertions = [issuer.mint(audience=BROKER) for _ in range(4)]  # twice the cache's limit
    assert [exchange(jwt_service, assertion)[0] for assertion in assertions] == [200] * 4
    status, body = exchange(jwt_service, assertions[-1])
    assert (status, body["error"]) == (400, "invalid_grant") and "already used" in body["error_description"]


def test_replay_cache_evicts_by_expiry_and_never_refuses_a_fresh_key():
    clock = [0.0]
    cache = ReplayCache(limit=2, clock=lambda: clock[0])
    assert cache.first_use("a", 10) and cache.first_use("b", 20) and cache.first_use("c", 30)
    assert not cache.first_use("c", 30) and not cache.first_use("b", 20)
    clock[0] = 25
    assert cache.first_use("b", 40)  # b's assertion expired: its entry is gone


def _segment(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


@pytest.mark.parametrize("part", ["header", "payload"])
def test_deeply_nested_json_in_an_assertion_is_invalid_grant(jwt_service, part):
    nested = _segment(b"[" * 3000)
    parts = [nested, _segment(b"{}"), "x"] if part == "header" else [_segment(b'{"alg":"RS256"}'), nested, "x"]
    status, body = exchange(jwt_service, ".".join(parts))
    assert (status, body["error"]) == (400, "invalid_grant")


def test_deeply_nested_claim_is_invalid_grant(jwt_service, issuer):
    """Nested within the decoder's limit, yet deep enough to exhaust the stack of whatever walks it later."""
    deep: object = "x"
    for _ in range(100):
        deep = [deep]
    status, body = exchange(jwt_service, issuer.mint(audience=BROKER, deep=deep))
    assert (status, body["error"]) == (400, "invalid_grant")


@pytest.mark.parametrize("claim", ["exp", "iat", "nbf"])
def test_a_signed_assertion_with_a_numeric_string_time_is_invalid_grant(jwt_service, issuer, claim):
    value = str(int(time.time()) + (600 if claim == "exp" else -5))
    status, body = exchange(jwt_service, issuer.mint(audience=BROKER, **{claim: value}))
    assert (status, body["error"]) == (400, "invalid_grant")
    assert claim in body["error_description"]


@pytest.mark.parametrize("claims", [{"exp": 10**400}, {"iat": -(10**400), "exp": time.time() + 600}],
                         ids=["exp-beyond-float", "iat-beyond-float"])
def test_a_signed_assertion_with_a_time_beyond_any_float_is_invalid_grant(jwt_service, issuer, claims):
    """JSON integers have no bound; subtracting the clock's float from one past 1.8e308 overflowed (a 500)."""
    status, body = exchange(jwt_service, issuer.mint(audience=BROKER, **claims))
    assert (status, body["error"]) == (400, "invalid_grant"), body


def test_an_assertion_past_exp_but_within_the_skew_gets_no_token(jwt_service, issuer):
    status, body = exchange(jwt_service, issuer.mint(audience=BROKER, lifetime=-30))
    assert (status, body["error"]) == (400, "invalid_grant"), body
    assert "expire" in body["error_description"]


def test_an_assertion_with_less_than_the_minimum_left_gets_no_token(jwt_service, issuer):
    from token_service.flows.rfc7523_jwt_bearer import MIN_REMAINING_SECONDS

    status, body = exchange(jwt_service, issuer.mint(audience=BROKER, lifetime=MIN_REMAINING_SECONDS - 5))
    assert (status, body["error"]) == (400, "invalid_grant")
    assert f"{MIN_REMAINING_SECONDS} s" in body["error_description"]
    status, body = exchange(jwt_service, issuer.mint(audience=BROKER, lifetime=MIN_REMAINING_SECONDS + 30))
    assert status == 200
    claims = jwt.decode(body["id_token"], options={"verify_signature": False})
    assert claims["exp"] - claims["iat"] >= MIN_REMAINING_SECONDS


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20)
    | st.integers(0, 2**32).map(str),  # numeric strings, as in the "exp": "1700000000" bug
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3),
    max_leaves=12,
)
claim_names = st.sampled_from(["iss", "sub", "aud", "exp", "iat", "nbf", "jti", "kubernetes.io"]) | st.text(max_size=8)
segments = st.one_of(
    st.binary(max_size=200).map(_segment),
    json_values.map(lambda value: _segment(json.dumps(value).encode())),
    st.integers(1, 5000).map(lambda depth: _segment(b"[" * depth + b"{" * depth)),
    st.text(max_size=50),
)


def signed_with_overrides(issuer: LocalIssuer, overrides: dict, headers: dict) -> str:
    """A validly signed assertion whose claims (and header) a generator chose, in part or whole."""
    now = int(time.time())
    claims = {"iss": issuer.url, "sub": ALLOWED, "aud": BROKER, "iat": now, "exp": now + 600,
              "jti": str(time.monotonic_ns()), **overrides}
    header = {"alg": "RS256", "kid": issuer.current_kid, **headers}
    signing_input = f"{_segment(json.dumps(header).encode())}.{_segment(json.dumps(claims).encode())}"
    # Signed by hand: jwt.encode refuses some of these claims (a non-string iss) before signing.
    signature = RSAAlgorithm(RSAAlgorithm.SHA256).sign(signing_input.encode(), issuer._keys[issuer.current_kid])
    return f"{signing_input}.{_segment(signature)}"


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                                   HealthCheck.too_slow])
@given(data=st.data())
def test_any_assertion_bytes_get_rfc6749_json_never_a_5xx(jwt_service, issuer, data):
    kind = data.draw(st.sampled_from(["text", "segments", "signed"]))
    if kind == "text":
        assertion = data.draw(st.text(max_size=9000))
    elif kind == "segments":
        assertion = ".".join(data.draw(st.lists(segments, min_size=1, max_size=4)))
    else:
        overrides = data.draw(st.dictionaries(claim_names, json_values, max_size=4))
        headers = data.draw(st.dictionaries(st.sampled_from(["alg", "kid", "cty", "crit", "x"]), json_values,
                                            max_size=2).map(lambda chosen: {k: v for k, v in chosen.items()
                                                                            if k != "alg"}))
        assertion = signed_with_overrides(issuer, overrides, headers)
    status, body = exchange(jwt_service, assertion)
    assert status < 500, body
    if status == 200:
        claims = jwt.decode(body["id_token"], options={"verify_signature": False})
        assert claims["exp"] - claims["iat"] > 0
    else:
        assert body["error"] in {"invalid_grant", "invalid_request", "unauthorized_client", "invalid_client"}, body
