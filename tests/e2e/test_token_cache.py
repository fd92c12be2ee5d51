"""The cache of Google-issued tokens through the real function, gateway and emulator, as deployed:
the IAM signer, so a hit that spared Google shows as no STS, IAM Credentials or signJwt call."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import pytest

from devtools.local import WORKLOAD_SERVICE_ACCOUNT
from tests.e2e.conftest import PRODUCTION_SETTINGS, launch, stop

SCOPE = "https://www.googleapis.com/auth/cloud-platform"
IMPERSONATION = {"grant_type": "client_credentials", "scope": SCOPE, "service_account": WORKLOAD_SERVICE_ACCOUNT}


@pytest.fixture(scope="module")
def cached_stack(tmp_path_factory):
    stack, function, servers, log = launch(tmp_path_factory, "token-cache", PRODUCTION_SETTINGS)
    yield stack
    stop(function, servers, log)


def calls(stack) -> tuple[int, int]:
    return stack.emulator.requests["sts"], stack.emulator.requests["iam"]


def test_repeat_requests_make_one_exchange_and_return_the_same_token(cached_stack):
    before = calls(cached_stack)
    answers = [cached_stack.post_token(data=IMPERSONATION) for _ in range(5)]
    assert [response.status_code for response, _ in answers] == [200] * 5
    sts, iam = calls(cached_stack)
    # One STS exchange; IAM: one signJwt for the broker's ID token and one generateAccessToken.
    assert (sts - before[0], iam - before[1]) == (1, 2)
    tokens = {response.json()["access_token"] for response, _ in answers}
    assert len(tokens) == 1
    grant = cached_stack.emulator.grant_for(f"Bearer {tokens.pop()}")
    assert grant.members == {f"serviceAccount:{WORKLOAD_SERVICE_ACCOUNT}"}
    labels = [audit["logging.googleapis.com/labels"] for _, audit in answers]
    assert [label["cache"] for label in labels] == ["miss", "hit", "hit", "hit", "hit"]
    assert {label["exchange"] for label in labels} == {"impersonation"}
    assert "upstream_seconds" in answers[0][1] and "upstream_seconds" not in answers[1][1]
    expires = [response.json()["expires_in"] for response, _ in answers]
    assert expires == sorted(expires, reverse=True) and expires[0] <= 3600


def test_concurrent_first_requests_for_one_token_make_one_exchange(cached_stack):
    before = calls(cached_stack)
    data = {"grant_type": "client_credentials", "scope": SCOPE}
    with ThreadPoolExecutor(8) as pool:
        answers = list(pool.map(lambda _: cached_stack.post_token("multi", data=data), range(8)))
    assert {response.status_code for response, _ in answers} == {200}
    assert len({response.json()["access_token"] for response, _ in answers}) == 1
    assert calls(cached_stack)[0] - before[0] == 1
    assert sorted(audit["logging.googleapis.com/labels"]["cache"] for _, audit in answers) == ["hit"] * 7 + ["miss"]


def test_another_client_gets_its_own_token_and_an_expired_certificate_none(cached_stack):
    mine, _ = cached_stack.post_token(data=IMPERSONATION)
    theirs, audit = cached_stack.post_token("bare", data=IMPERSONATION)
    assert theirs.status_code == 200 and theirs.json()["access_token"] != mine.json()["access_token"]
    assert audit["logging.googleapis.com/labels"]["cache"] == "miss"
    expired, audit = cached_stack.post_token("expired", data=IMPERSONATION)
    assert expired.status_code == 401 and "access_token" not in expired.json()
    # The gateway, like the load balancer, reports the chain of an expired certificate unverified.
    assert audit["logging.googleapis.com/labels"]["reason"] == "certificate_not_verified"
