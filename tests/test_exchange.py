"""Exchange parameters, and the upstream client's retry and time bounds against the emulator."""

from __future__ import annotations

import time

import pytest

from devtools.google_emulator import GoogleEmulator, serve
from token_service.errors import OAuthError, StsRefused, UpstreamUnavailable
from token_service.google.exchange import parse_exchange_request
from token_service.google.sts import StsClient
from token_service.google.transport import RetryPolicy, UpstreamClient

SA = "workload@p.iam.gserviceaccount.com"
SCOPE = "https://www.googleapis.com/auth/cloud-platform"


@pytest.mark.parametrize(
    ("parameters", "expected"),
    [
        ({}, (False, (), None, None)),
        ({"scope": f"{SCOPE} openid"}, (True, (SCOPE, "openid"), None, None)),
        ({"scope": SCOPE, "service_account": SA}, (True, (SCOPE,), SA, None)),
        ({"service_account": SA, "audience": "https://svc"}, (True, (), SA, "https://svc")),
        ({"service_account": "123456789012345678901", "scope": SCOPE}, (True, (SCOPE,), "123456789012345678901", None)),
    ],
)
def test_valid_combinations(parameters, expected):
    request = parse_exchange_request(parameters)
    assert (request.wanted, request.scopes, request.service_account, request.audience) == expected


@pytest.mark.parametrize(
    "parameters",
    [
        {"service_account": SA},
        {"audience": "https://svc"},
        {"scope": SCOPE, "service_account": SA, "audience": "https://svc"},
        {"scope": SCOPE, "service_account": "sa@p.iam.gserviceaccount.com/../../x"},
        {"scope": SCOPE, "service_account": "sa@evil.example"},
        {"scope": "a  b"},
        {"scope": " ".join(["s"] * 21)},
        {"service_account": SA, "audience": "https://svc with space"},
    ],
)
def test_invalid_combinations(parameters):
    with pytest.raises(OAuthError) as raised:
        parse_exchange_request(parameters)
    assert raised.value.status == 400 and raised.value.error == "invalid_request"


@pytest.fixture
def emulator():
    emulator = GoogleEmulator(providers=[], bindings={}, runtime_service_account="r@p.iam.gserviceaccount.com")
    server = serve(emulator)
    emulator.url = f"http://127.0.0.1:{server.server_address[1]}"
    yield emulator
    server.shutdown()


def sts(emulator, policy: RetryPolicy) -> StsClient:
    return StsClient(UpstreamClient(policy), f"{emulator.url}/v1/token")


def test_refusal_is_returned_without_retrying(emulator):
    with pytest.raises(StsRefused) as raised:
        sts(emulator, RetryPolicy()).exchange("t", "//iam.googleapis.com/bad", SCOPE)
    assert raised.value.status == 400 and raised.value.error == "invalid_request"
    assert emulator.requests["sts"] == 1


def test_an_injected_latency_is_how_long_a_call_takes_with_the_emulators_work_inside_it(emulator):
    """`make bench` compares the production path's p50 with the sum of the injected latencies: each
    call must take that long, not that long plus the emulator's own work."""
    emulator.latency = {"sts": 0.5}
    refuse = emulator.sts_token

    def slow_work(form):
        time.sleep(0.2)
        return refuse(form)

    emulator.sts_token = slow_work
    started = time.monotonic()
    with pytest.raises(StsRefused):
        sts(emulator, RetryPolicy()).exchange("t", "//iam.googleapis.com/bad", SCOPE)
    waited = time.monotonic() - started
    assert 0.5 <= waited < 0.65
    assert 0.2 <= emulator.service_seconds["sts"] < waited  # its own work, reported by the bench


@pytest.mark.parametrize("fault", [503, 500, 429, "reset"])
def test_transient_faults_are_retried(emulator, fault):
    emulator.inject("sts", fault, fault)
    with pytest.raises(StsRefused):  # the third attempt reaches the real (refusing) handler
        sts(emulator, RetryPolicy(base_delay=0.01)).exchange("t", "//iam.googleapis.com/bad", SCOPE)
    assert emulator.requests["sts"] == 3


def test_a_hung_upstream_is_abandoned_within_the_budget(emulator):
    emulator.inject("sts", *["hang:3"] * 10)
    started = time.monotonic()
    with pytest.raises(UpstreamUnavailable) as raised:
        sts(emulator, RetryPolicy(read_timeout=0.2, budget=1.0)).exchange("t", "//x", SCOPE)
    assert time.monotonic() - started < 2.5
    assert raised.value.retry_after >= 1 and "attempts" in raised.value.detail


def test_malformed_success_is_an_upstream_failure_not_a_token(emulator):
    emulator.inject("sts", "garbage")
    with pytest.raises(UpstreamUnavailable):
        sts(emulator, RetryPolicy()).exchange("t", "//x", SCOPE)
