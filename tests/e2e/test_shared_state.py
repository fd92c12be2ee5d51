"""Two function processes sharing one real redis-server (REDIS_URL), each behind its own gateway, as
two Cloud Functions instances share Memorystore: a jti spent at one is refused at the other; Redis
killed mid-run: jwt-bearer refuses with 503 replay_store_unavailable, the mTLS and client-secret flows
keep working, nothing hangs or fails with 500, every attempt has its audit line; Redis back: jwt-bearer
works again and remembers every assertion spent before the kill."""

from __future__ import annotations

import textwrap
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from devtools.local import (
    free_port,
    local_environment,
    proxy_secret_headers,
    start_emulator,
    start_function,
    start_gateway,
)
from devtools.pki import ensure_dev_pki
from devtools.redis_server import RedisServer
from tests.e2e.conftest import JWT_BEARER, SCANNER_SECRET, Stack
from token_service.flows.rfc6749_client_secret import hash_secret
from token_service.state.redis_connection import PAUSE_SECONDS

REDIS_PASSWORD = "auth-string-5f0c1d2e3b4a"  # Memorystore's AUTH string, in REDIS_URL
SECRET_LOGIN = {"grant_type": "client_credentials", "client_id": "legacy-scanner", "client_secret": SCANNER_SECRET}
# A request never waits on a dead Redis for longer than its timeouts (two 250 ms attempts) and some slack.
PROMPT_SECONDS = 3.0


@pytest.fixture(scope="module")
def redis_server(tmp_path_factory):
    # Persistent (append-only file, synced on every write): a kill and restart keeps the spent jtis.
    server = RedisServer(data_dir=tmp_path_factory.mktemp("redis-data"), password=REDIS_PASSWORD).start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def instances(tmp_path_factory, issuer, redis_server):
    """Two instances of one deployment: the same environment (issuer, policy, REDIS_URL), two processes."""
    local_dir = tmp_path_factory.mktemp("shared")
    pki = ensure_dev_pki(local_dir)
    policy = local_dir / "policy.yaml"
    policy.write_text(textwrap.dedent(f"""\
        issuers:
          - name: prod-cluster
            issuer: {issuer.url}
        rules:
          - name: demo-workloads
            certificate:
              spiffe_id: spiffe://local.test/**
          - name: payments
            assertion:
              issuer: prod-cluster
              subject: system:serviceaccount:payments:*
          - name: scanner
            client_secret:
              client_id: legacy-scanner
              secret_hashes: ["{hash_secret(SCANNER_SECRET)}"]
        """))
    gateway_ports = [free_port(), free_port()]
    emulator, emulator_server = start_emulator(pki["ca"].parent, gateway_ports[0])
    emulator_url = f"http://127.0.0.1:{emulator_server.server_address[1]}"
    env = local_environment(local_dir, gateway_ports[0], emulator_server.server_address[1], {
        "POLICY_FILE": str(policy), "AUTH_FLOWS": "xlb-mtls-client-credentials,jwt-bearer,client-secret",
        "REDIS_URL": redis_server.url})
    stacks, functions, servers, logs = [], [], [emulator_server], []
    try:
        for index, gateway_port in enumerate(gateway_ports):
            log = (local_dir / f"function-{index}.log").open("w")
            logs.append(log)
            functions.append(start_function(env, free_port(), stdout=log, stderr=log))
            function = functions[-1]
            servers.append(start_gateway(pki["ca"].parent, gateway_port, function.url, env))
            stacks.append(Stack(local_dir, pki, {"each": f"https://127.0.0.1:{gateway_port}"}, Path(log.name),
                                emulator, emulator_url, {"client": (str(pki["client_cert"]), str(pki["client_key"]))},
                                function.url, proxy_secret_headers(env)))
        yield stacks, env["TOKEN_ISSUER"]
    finally:
        for server in servers:
            server.shutdown()
        for function in functions:
            function.stop()
        for log in logs:
            log.close()


def assertion_grant(issuer, audience: str) -> dict[str, str]:
    return {"grant_type": JWT_BEARER, "assertion": issuer.mint(audience=audience)}


def reason_of(audit: dict) -> str:
    return audit["logging.googleapis.com/labels"].get("reason", "")


def test_an_assertion_spent_at_one_instance_is_refused_at_the_other(instances, issuer):
    (first, second), audience = instances
    for spender, other in ((first, second), (second, first)):
        grant = assertion_grant(issuer, audience)
        issued, _ = spender.post_token(None, data=grant)
        assert issued.status_code == 200, issued.text
        replay, audit = other.post_token(None, data=grant)
        assert replay.status_code == 400 and replay.json()["error"] == "invalid_grant", replay.text
        assert reason_of(audit) == "assertion_replayed" and "id_token" not in replay.json()


def test_one_assertion_sent_to_both_instances_at_once_earns_one_token(instances, issuer):
    (first, second), audience = instances
    for _ in range(5):
        grant = assertion_grant(issuer, audience)
        with ThreadPoolExecutor(4) as pool:
            answers = list(pool.map(lambda stack, grant=grant: stack.post_token(None, data=grant)[0],
                                    (first, second, first, second)))
        assert sorted(answer.status_code for answer in answers) == [200, 400, 400, 400]


def timed(stack: Stack, client: str | None, data: dict[str, str] | None = None):
    started = time.monotonic()
    response, audit = stack.post_token(client, data=data)
    assert time.monotonic() - started < PROMPT_SECONDS, "a request waited on the dead Redis"
    assert response.status_code != 500, response.text
    return response, audit


def back_within(stack: Stack, issuer, audience: str, seconds: float):
    """jwt-bearer once Redis is back: refused while each worker's store pauses after its last failure."""
    deadline = time.monotonic() + seconds
    while True:
        response, audit = timed(stack, None, assertion_grant(issuer, audience))
        if response.status_code != 503 or time.monotonic() > deadline:
            return response
        assert reason_of(audit) == "replay_store_unavailable"
        time.sleep(0.1)


def test_redis_killed_mid_run_then_back(instances, issuer, redis_server):
    (first, second), audience = instances
    spent = assertion_grant(issuer, audience)
    assert first.post_token(None, data=spent)[0].status_code == 200
    redis_server.stop()
    try:
        for stack in (first, second, first, second):
            refused, audit = timed(stack, None, assertion_grant(issuer, audience))
            assert refused.status_code == 503 and refused.json()["error"] == "temporarily_unavailable"
            assert int(refused.headers["Retry-After"]) >= 1 and "id_token" not in refused.json()
            labels = audit["logging.googleapis.com/labels"]
            assert labels["reason"] == "replay_store_unavailable" and labels["outcome"] == "refused"
            assert refused.json()["error_description"].endswith("(reason: replay_store_unavailable)")
            assert "Connection" in labels["replay_store_error"]

            certificate, audit = timed(stack, "client")
            assert certificate.status_code == 200 and reason_of(audit) == "", certificate.text
            secret, audit = timed(stack, None, SECRET_LOGIN)
            assert secret.status_code == 200 and reason_of(audit) == "", secret.text
            wrong, audit = timed(stack, None, {**SECRET_LOGIN, "client_secret": "wrong"})
            assert wrong.status_code == 401 and reason_of(audit) == "invalid_client_secret"
    finally:
        redis_server.start()
    for stack in (first, second):
        issued = back_within(stack, issuer, audience, seconds=PAUSE_SECONDS + 2)
        assert issued.status_code == 200, issued.text
        # Spent before the kill, at the other instance: the restarted Redis still knows it.
        replay, audit = timed(stack, None, spent)
        assert replay.status_code == 400 and reason_of(audit) == "assertion_replayed"
        # The operators learn where Redis failed and when it came back, never its AUTH string.
        output = stack.audit_file.read_text()
        assert f"Redis at redis://:***@127.0.0.1:{redis_server.port}/0 unavailable for the jti replay" in output
        assert "answers the jti replay cache again" in output and REDIS_PASSWORD not in output
