"""Trusted issuers that hang, fail, or answer garbage: bounded waits, one fetch per cooldown, never a 500."""

from __future__ import annotations

import base64
import json
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from jwt.algorithms import ECAlgorithm, RSAAlgorithm

from devtools.oidc_issuer import LocalIssuer
from tests.support import HangingIssuer, ScriptedIssuer
from token_service.errors import OAuthError, Reason
from token_service.flows.issuer_keys import JwksCache
from token_service.flows.rfc7523_jwt_bearer import AssertionVerifier
from token_service.google.transport import MAX_RESPONSE_BYTES, RetryPolicy, UpstreamClient
from token_service.policy import parse_policy

BROKER = "https://token.example.net"
AUDIENCES = (BROKER, f"{BROKER}/token")


def unsigned_assertion(issuer_url: str, kid: str = "nope") -> str:
    def part(value: dict) -> str:
        return base64.urlsafe_b64encode(json.dumps(value).encode()).decode().rstrip("=")

    return ".".join([part({"alg": "RS256", "kid": kid}), part({"iss": issuer_url, "sub": "x"}), "c2ln"])


def verifier_for(urls: dict[str, str], cache: JwksCache, **options: str) -> AssertionVerifier:
    policy = parse_policy({
        "issuers": [{"name": name, "issuer": url, **options} for name, url in urls.items()],
        "rules": [{"name": "any", "assertion": {"issuer": next(iter(urls)), "subject": "system:serviceaccount:*"}}],
    })
    return AssertionVerifier(policy, AUDIENCES, cache)


def outcome(verify: AssertionVerifier, assertion: str) -> tuple[float, OAuthError | None]:
    started = time.monotonic()
    try:
        verify.verify(assertion)
        error = None
    except OAuthError as refusal:
        error = refusal
    return time.monotonic() - started, error


# The client a service builds for issuers is slower than these: a pre-fix cache let it run its whole budget.
SLOW_CLIENT = RetryPolicy(read_timeout=5, budget=10)


def test_a_hanging_issuer_neither_stalls_the_workers_nor_gets_more_than_one_connection():
    hanging, healthy = HangingIssuer(), LocalIssuer().start()
    try:
        verify = verifier_for({"hanging": hanging.url, "healthy": healthy.url},
                              JwksCache(UpstreamClient(SLOW_CLIENT), cooldown_seconds=30))
        outcome(verify, healthy.mint(audience=BROKER))  # the healthy issuer's keys are cached
        workers = ThreadPoolExecutor(max_workers=8)  # like main.py's WAITING_REQUESTS
        stuck = [workers.submit(outcome, verify, unsigned_assertion(hanging.url)) for _ in range(64)]
        time.sleep(0.2)
        others = [workers.submit(outcome, verify, healthy.mint(audience=BROKER)) for _ in range(16)]
        # Other clients keep their normal latency: well under a second, queueing included.
        other_latencies = [future.result(timeout=20)[0] for future in others]
        assert max(other_latencies) < 1.0, other_latencies
        assert all(future.result(timeout=20)[1] is None for future in others)
        # Each assertion for the hanging issuer is answered within the fetch deadline, with a 503.
        for future in stuck:
            latency, error = future.result(timeout=10)
            assert latency < 4.0
            assert error is not None and error.status == 503 and error.reason is Reason.ISSUER_KEYS_UNAVAILABLE
            assert int(dict(error.headers)["Retry-After"]) >= 1
        # Cooling down: refused at once, no new connection.
        latency, error = outcome(verify, unsigned_assertion(hanging.url))
        assert latency < 0.1 and error is not None and error.status == 503
        assert hanging.connections == 1
        workers.shutdown(wait=False)
    finally:
        hanging.close()
        healthy.stop()


def test_an_unavailable_issuer_is_fetched_once_per_cooldown_and_callers_answered_within_the_deadline():
    issuer = LocalIssuer().start()
    try:
        clock = [1000.0]
        verify = verifier_for({"cluster": issuer.url}, JwksCache(UpstreamClient(SLOW_CLIENT), cooldown_seconds=30,
                                                                 clock=lambda: clock[0]))
        outcome(verify, issuer.mint(audience=BROKER))
        clock[0] += 31  # the keys are still fresh, the cooldown of their fetch is over
        issuer.down = True
        before = issuer.requests
        results: list[tuple[float, OAuthError | None]] = []
        threads = [threading.Thread(target=lambda: results.append(outcome(verify, unsigned_assertion(issuer.url))))
                   for _ in range(8)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=10)
        assert len(results) == 8 and max(latency for latency, _ in results) < 4.0
        # An unknown kid: invalid_grant once the refetch failed (the cached keys stay in use), or a 503 to
        # retry while it is in flight; never a long wait.
        assert all(error is not None and error.status in (400, 503) for _, error in results)
        assert issuer.requests - before <= 2  # one refetch: discovery, answered 503, and nothing else
        outcome(verify, unsigned_assertion(issuer.url))
        assert issuer.requests - before <= 2
    finally:
        issuer.stop()


def test_a_discovery_naming_a_plain_http_jwks_uri_is_refused():
    issuer = ScriptedIssuer(lambda path: (200, json.dumps({"jwks_uri": "http://keys.example.net/jwks"}).encode()))
    try:
        verify = verifier_for({"cluster": issuer.url}, JwksCache(UpstreamClient(RetryPolicy(budget=1))))
        _, error = outcome(verify, unsigned_assertion(issuer.url))
        assert error is not None and error.status == 503 and "jwks_uri" in error.description
        assert issuer.requests == 1  # the discovery only: the plain-http URL is never fetched
    finally:
        issuer.close()


def test_a_jwks_over_the_size_cap_is_a_failed_fetch_with_a_cooldown():
    big = b'{"keys": [' + b" " * MAX_RESPONSE_BYTES + b"]}"
    issuer = ScriptedIssuer(lambda path: (200, big))
    try:
        verify = verifier_for({"cluster": issuer.url},
                              JwksCache(UpstreamClient(SLOW_CLIENT), cooldown_seconds=30))
        # An explicit jwks_uri would do as well; discovery answers the same oversized body.
        for _ in range(5):
            latency, error = outcome(verify, unsigned_assertion(issuer.url))
            assert error is not None and error.status == 503 and latency < 4.0
        assert issuer.requests == 1
    finally:
        issuer.close()


@pytest.mark.parametrize("discovery", [b"[]", b'{"keys": 5}', b'"text"', b'{"jwks_uri": 5}', b"\xff"])
def test_a_malformed_discovery_is_a_503_with_a_cooldown(discovery):
    issuer = ScriptedIssuer(lambda path: (200, discovery))
    try:
        verify = verifier_for({"cluster": issuer.url}, JwksCache(UpstreamClient(RetryPolicy(budget=1))))
        for _ in range(5):
            _, error = outcome(verify, unsigned_assertion(issuer.url))
            assert error is not None and error.status == 503 and error.reason is Reason.ISSUER_KEYS_UNAVAILABLE
        assert issuer.requests == 1
    finally:
        issuer.close()


@pytest.mark.parametrize("jwks", [b"[]", b'{"keys": 5}', b'{"keys": [{"kid": "nope", "kty": "RSA", "n": 5}]}'])
def test_a_malformed_jwks_is_never_a_500(jwks):
    issuer = ScriptedIssuer(lambda path: (200, jwks))
    try:
        verify = verifier_for({"cluster": issuer.url}, JwksCache(UpstreamClient(RetryPolicy(budget=1))),
                              jwks_uri=f"{issuer.url}/jwks")
        for _ in range(5):
            _, error = outcome(verify, unsigned_assertion(issuer.url))
            assert error is not None and error.status in (400, 503)
        assert issuer.requests == 1
    finally:
        issuer.close()


@pytest.mark.parametrize("algorithm", ["RS256", "ES256"])
def test_a_jwks_publishing_a_private_key_is_not_used(algorithm):
    """PyJWT builds a private key from a JWK with "d": RS256 verification then failed with an AttributeError
    (a 500), ES256 accepted it. A key its issuer published whole proves nothing: every reader can sign."""
    key = (rsa.generate_private_key(public_exponent=65537, key_size=2048) if algorithm == "RS256"
           else ec.generate_private_key(ec.SECP256R1()))
    encoder = RSAAlgorithm if algorithm == "RS256" else ECAlgorithm
    jwks = json.dumps({"keys": [{**encoder.to_jwk(key, as_dict=True), "kid": "k1"}]}).encode()
    issuer = ScriptedIssuer(lambda path: (200, jwks))
    try:
        verify = verifier_for({"cluster": issuer.url}, JwksCache(UpstreamClient(RetryPolicy(budget=1))),
                              jwks_uri=f"{issuer.url}/jwks")
        now = int(time.time())
        assertion = jwt.encode({"iss": issuer.url, "sub": "system:serviceaccount:a:b", "aud": BROKER, "iat": now,
                                "exp": now + 600, "jti": "j"}, key, algorithm=algorithm, headers={"kid": "k1"})
        _, error = outcome(verify, assertion)
        assert error is not None and (error.status, error.error) == (400, "invalid_grant")
        assert "publishes no" in error.description
    finally:
        issuer.close()


_JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10), children, max_size=4),
    max_leaves=12,
)
_KEYS_DOCUMENT = st.fixed_dictionaries({"keys": _JSON | st.lists(
    st.dictionaries(st.sampled_from(["kid", "kty", "alg", "use", "n", "e", "crv", "x", "y"]), _JSON, max_size=8),
    max_size=3)})
_ANSWER = st.binary(max_size=200) | _JSON.map(lambda value: json.dumps(value).encode()) \
    | _KEYS_DOCUMENT.map(lambda value: json.dumps(value).encode())


@pytest.fixture(scope="module")
def scripted():
    issuer = ScriptedIssuer(lambda path: (200, b""))
    yield issuer
    issuer.close()


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(discovery=_ANSWER, jwks=_ANSWER, status=st.sampled_from([200, 200, 200, 404, 500, 503]))
def test_any_answer_from_an_issuer_is_a_4xx_or_a_503(scripted, discovery, jwks, status):
    def answer(path: str) -> tuple[int, bytes]:
        if path == "/.well-known/openid-configuration":
            try:
                document = json.loads(discovery)
            except ValueError:
                return status, discovery
            if isinstance(document, dict):  # point a well-formed discovery at the JWKS half
                document["jwks_uri"] = f"{scripted.url}/jwks"
                return status, json.dumps(document).encode()
            return status, discovery
        return status, jwks

    scripted.answer = answer
    cache = JwksCache(UpstreamClient(RetryPolicy(read_timeout=1, budget=0.2)), cooldown_seconds=30)
    verify = verifier_for({"cluster": scripted.url}, cache)
    before = scripted.requests
    for _ in range(3):
        _, error = outcome(verify, unsigned_assertion(scripted.url))
        assert error is not None and (error.status < 500 or error.status == 503), error
    assert scripted.requests - before <= 2  # one fetch (discovery + JWKS), then the cooldown
