"""Google misbehaving: slow, hung, failing, resetting, talking nonsense, or no longer publishing a key.

Every fault gives a bounded answer in the protocol's format (503 with Retry-After, or 403 for a real
refusal), never a 5xx from the framework and never a token; and while Google hangs, discovery, JWKS and
ID-token requests keep being served at concurrency 64 (a bulkhead keeps threads free).
"""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor

import jwt
import pytest

from devtools.local import RUNTIME_SERVICE_ACCOUNT, WORKLOAD_SERVICE_ACCOUNT
from tests.e2e.conftest import NO_TOKEN_CACHE, launch, stop

SCOPE = "https://www.googleapis.com/auth/cloud-platform"
EXCHANGE = {"grant_type": "client_credentials", "scope": SCOPE, "service_account": WORKLOAD_SERVICE_ACCOUNT}
BUDGET = 1.5


@pytest.fixture(scope="module")
def faulty(tmp_path_factory):
    stack, function, servers, log = launch(tmp_path_factory, "faults", {
        "THREADS": "8", "UPSTREAM_TIMEOUT": "0.5", "UPSTREAM_RETRY_BUDGET": str(BUDGET), **NO_TOKEN_CACHE})
    yield stack
    stop(function, servers, log)


@pytest.fixture(autouse=True)
def healthy_again(faulty):
    yield
    faulty.emulator._faults.clear()
    faulty.emulator.latency = {}


def timed(stack, **kwargs):
    started = time.monotonic()
    response, audit = stack.post_token(**kwargs)
    return response, audit, time.monotonic() - started


@pytest.mark.parametrize("fault", [503, 500, 429, "reset", "garbage", "hang:5"])
@pytest.mark.parametrize("service", ["sts", "iam"])
def test_persistent_faults_give_a_bounded_503(faulty, service, fault):
    faulty.emulator.inject(service, *([fault] * 50))
    response, audit, elapsed = timed(faulty, data=EXCHANGE)
    assert response.status_code == 503, response.text
    assert response.json()["error"] == "temporarily_unavailable"
    assert int(response.headers["Retry-After"]) >= 1
    assert "access_token" not in response.json() and "id_token" not in response.json()
    assert elapsed < BUDGET + 2.5  # the retry budget, one timeout past it, and slack
    assert audit["logging.googleapis.com/labels"]["reason"] == "upstream_unavailable"


def test_slow_google_is_waited_for(faulty):
    faulty.emulator.latency = {"sts": 0.3, "iam": 0.3}
    response, _, elapsed = timed(faulty, data=EXCHANGE)
    assert response.status_code == 200 and elapsed >= 0.6


def test_hung_google_does_not_starve_other_requests(faulty):
    faulty.emulator.inject("sts", *(["hang:10"] * 200))
    session = faulty.session(client=None)

    def exchange(_):
        return timed(faulty, data=EXCHANGE)[::2]

    def discovery(_):
        started = time.monotonic()
        response = session.get(f"{faulty.url}/.well-known/openid-configuration", timeout=10)
        return response.status_code, time.monotonic() - started

    def id_token(_):
        response, _, elapsed = timed(faulty)
        return response.status_code, elapsed

    with ThreadPoolExecutor(max_workers=80) as pool:
        hung = [pool.submit(exchange, index) for index in range(16)]
        time.sleep(0.3)  # the exchanges now hold the bulkhead
        others = list(pool.map(discovery, range(32))) + list(pool.map(id_token, range(32)))
        exchanges = [future.result() for future in hung]
    assert all(status == 200 for status, _ in others), others
    assert max(elapsed for _, elapsed in others) < 5
    assert all(response.status_code == 503 for response, _ in exchanges)


def test_a_signing_key_google_no_longer_publishes_is_a_refusal_not_a_crash(tmp_path_factory):
    """The ID token names a kid that is not (or no longer) in the signer's JWKS: STS refuses it."""
    stack, function, servers, log = launch(tmp_path_factory, "stale-key", {"TOKEN_SIGNER": "iam", **NO_TOKEN_CACHE})
    try:
        emulator = stack.emulator
        published = emulator.service_account_key(RUNTIME_SERVICE_ACCOUNT)
        assert stack.post_token(data=EXCHANGE)[0].status_code == 200
        emulator.rotate_key(RUNTIME_SERVICE_ACCOUNT)
        retired = emulator._keys[RUNTIME_SERVICE_ACCOUNT]
        emulator._keys[RUNTIME_SERVICE_ACCOUNT] = published  # publish the old key, sign with the retired one
        original = emulator._signJwt

        def sign_with_retired_key(email, body):
            emulator._keys[email] = retired
            try:
                return original(email, body)
            finally:
                emulator._keys[email] = published

        emulator._signJwt = sign_with_retired_key
        response, audit = stack.post_token(data=EXCHANGE)
        assert response.status_code == 403 and response.json()["error"] == "access_denied"
        assert "kid" in response.json()["error_description"]
        assert audit["logging.googleapis.com/labels"]["reason"] == "sts_refused"
        kid = jwt.get_unverified_header(emulator._signJwt(RUNTIME_SERVICE_ACCOUNT, {"payload": "{}"})["signedJwt"])
        assert kid["kid"] == retired[1]
    finally:
        stop(function, servers, log)


def test_past_the_waiting_limit_a_request_is_refused_at_once(tmp_path_factory):
    """The bulkhead at the edge: with Google hung, a worker holds MAX_WAITING_REQUESTS exchanges; every
    further one gets 503 with Retry-After at once, with its audit line, instead of a growing queue."""
    stack, function, servers, log = launch(tmp_path_factory, "busy", {
        "THREADS": "4", "MAX_WAITING_REQUESTS": "3", "UPSTREAM_TIMEOUT": "2", "UPSTREAM_RETRY_BUDGET": "2"})
    try:
        stack.emulator.inject("sts", *(["hang:5"] * 50))
        with ThreadPoolExecutor(max_workers=9) as pool:
            answers = list(pool.map(lambda _: timed(stack, data=EXCHANGE), range(9)))
        busy = [(response, audit, elapsed) for response, audit, elapsed in answers if response.status_code == 503
                and audit["logging.googleapis.com/labels"]["reason"] == "instance_busy"]
        waited = [answer for answer in answers if answer[1]["logging.googleapis.com/labels"]["reason"]
                  == "upstream_unavailable"]
        assert len(waited) == 3 and len(busy) == 6, [answer[1]["logging.googleapis.com/labels"] for answer in answers]
        for response, audit, elapsed in busy:
            assert response.headers["Retry-After"] == "1" and elapsed < 1.5
            assert response.json()["error"] == "temporarily_unavailable"
            assert "access_token" not in response.text
            assert audit["logging.googleapis.com/labels"]["status"] == "503"
        # The places are given back: with Google healthy again, the next exchanges are answered.
        stack.emulator._faults.clear()
        assert all(timed(stack, data=EXCHANGE)[0].status_code == 200 for _ in range(4))
    finally:
        stop(function, servers, log)
