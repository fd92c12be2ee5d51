"""The Redis stores against a real redis-server: what two instances sharing it rely on."""

from __future__ import annotations

import contextlib
import json
import socket
import subprocess
import sys
import threading
import time

import pytest
import redis

from devtools.oidc_issuer import LocalIssuer
from devtools.redis_server import RedisServer
from tests.test_jwt_bearer import AUDIENCES, BROKER, policy_for
from token_service.config.shared_state import RedisSettings
from token_service.errors import OAuthError, Reason, StateUnavailable
from token_service.flows.issuer_keys import JwksCache
from token_service.flows.rfc7523_jwt_bearer import AssertionVerifier
from token_service.google.transport import RetryPolicy, UpstreamClient
from token_service.state.redis_connection import COMMAND_TIMEOUT_SECONDS, PAUSE_SECONDS, redis_client
from token_service.state.redis_failure_limiter import RedisFailureLimiter
from token_service.state.redis_replay_cache import RedisReplayCache


@pytest.fixture(scope="module")
def server():
    server = RedisServer().start()
    yield server
    server.stop()


@pytest.fixture
def settings(server) -> RedisSettings:
    redis.Redis.from_url(server.url).flushall()
    return RedisSettings(server.url, "ts:", None)


def instance(settings: RedisSettings, clock=time.time) -> RedisReplayCache:
    """The replay cache of one broker instance: its own client and pool."""
    return RedisReplayCache(redis_client(settings, 4), settings, clock=clock)


def test_an_assertion_spent_at_one_instance_is_seen_and_refused_at_another(settings):
    first, second = instance(settings), instance(settings)
    expires = time.time() + 600
    assert not second.seen("prod\0jti-1")
    assert first.first_use("prod\0jti-1", expires)
    assert second.seen("prod\0jti-1")
    assert not second.first_use("prod\0jti-1", expires)
    assert second.first_use("prod\0jti-2", expires) and not second.seen("other\0jti-1")


def test_keys_are_prefixed_digests_that_expire_with_the_assertion(settings):
    cache = instance(settings)
    cache.first_use("prod\0" + "j" * 5000, time.time() + 600)
    raw = redis.Redis.from_url(settings.url)
    [key] = raw.keys("*")
    assert key.startswith(b"ts:jti:") and len(key) == len("ts:jti:") + 64
    assert 598_000 < raw.pttl(key) <= 600_000


def test_a_spent_assertion_is_forgotten_once_it_expires(settings):
    cache = instance(settings)
    assert cache.first_use("prod\0short", time.time() + 0.2)
    assert cache.seen("prod\0short")
    time.sleep(0.3)
    assert not cache.seen("prod\0short")
    assert cache.first_use("prod\0short", time.time() + 600)


def test_prefixes_keep_deployments_sharing_one_redis_apart(settings):
    staging = instance(settings._replace(key_prefix="staging:"))
    assert instance(settings).first_use("prod\0jti", time.time() + 600)
    assert not staging.seen("prod\0jti") and staging.first_use("prod\0jti", time.time() + 600)


def race(instances: list[RedisReplayCache], jti: str) -> list[bool]:
    """Every instance spends ``jti`` at the same moment, each on its own thread."""
    start = threading.Barrier(len(instances))
    wins: list[bool] = []

    def spend(cache: RedisReplayCache) -> None:
        start.wait()
        wins.append(cache.first_use(jti, time.time() + 600))

    threads = [threading.Thread(target=spend, args=(cache,)) for cache in instances]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return wins


def test_instances_racing_to_spend_one_assertion_let_exactly_one_win(settings):
    instances = [instance(settings) for _ in range(8)]
    for round_ in range(20):
        assert sorted(race(instances, f"prod\0race-{round_}")) == [False] * 7 + [True], round_


def test_redis_down_fails_fast_and_closed_then_recovers(server, settings):
    cache = instance(settings)
    assert cache.first_use("prod\0before", time.time() + 600)  # a pooled connection, which the kill breaks
    server.stop()
    try:
        started = time.monotonic()
        with pytest.raises(StateUnavailable) as raised:
            cache.seen("prod\0x")
        assert time.monotonic() - started < 1.0
        assert raised.value.retry_after >= 1 and "Connection" in raised.value.detail
        # Then the store pauses: no thread waits on Redis again for a while.
        started = time.monotonic()
        with pytest.raises(StateUnavailable) as raised:
            cache.first_use("prod\0x", time.time() + 600)
        assert time.monotonic() - started < 0.05 and "not retried" in raised.value.detail
    finally:
        server.start()
    time.sleep(PAUSE_SECONDS)
    # The restarted Redis is empty (no persistence here); the stale pooled connection is replaced.
    assert cache.first_use("prod\0x", time.time() + 600) and cache.seen("prod\0x")


def test_a_hung_redis_holds_a_request_for_the_timeouts_only(settings):
    """A Redis that accepts connections and never answers (overloaded, half-open network)."""

    with socket.socket() as hung:
        hung.bind(("127.0.0.1", 0))
        hung.listen(16)
        cache = instance(settings._replace(url=f"redis://127.0.0.1:{hung.getsockname()[1]}/0"))
        started = time.monotonic()
        with pytest.raises(StateUnavailable):
            cache.seen("prod\0x")
        assert time.monotonic() - started < 2 * COMMAND_TIMEOUT_SECONDS + 0.2  # one retry
        started = time.monotonic()
        with pytest.raises(StateUnavailable):
            cache.seen("prod\0y")
        assert time.monotonic() - started < 0.05  # paused


def limiter(settings: RedisSettings, burst: int = 3, refill: float = 10.0) -> RedisFailureLimiter:
    return RedisFailureLimiter(redis_client(settings, 4), settings, burst=burst, refill_seconds=refill)


def test_failures_at_any_instance_count_against_one_bucket(settings):
    instances = [limiter(settings) for _ in range(3)]
    key = ("legacy-scanner", "203.0.113.7")
    for index in range(3):
        assert all(each.retry_after(key) == 0 for each in instances)
        instances[index].failed(key)  # one failure at each instance: none alone reached the burst
    waits = [each.retry_after(key) for each in instances]
    assert all(9 <= wait <= 10 for wait in waits), waits
    assert instances[0].retry_after(("legacy-scanner", "198.51.100.1")) == 0  # another source
    assert instances[0].retry_after(("other-client", "203.0.113.7")) == 0  # another client


def test_the_bucket_refills_and_expires_once_full(settings):
    shared = limiter(settings, burst=2, refill=0.2)
    key = ("c", "s")
    shared.failed(key)
    shared.failed(key)
    assert shared.retry_after(key) == 1  # at least a second: Retry-After is whole seconds
    time.sleep(0.25)
    assert limiter(settings, burst=2, refill=0.2).retry_after(key) == 0  # refilled on Redis's clock
    raw = redis.Redis.from_url(settings.url)
    [bucket] = raw.keys("ts:fail:*")
    assert 0 < raw.pttl(bucket) <= 400  # two tokens missing at 0.2 s each
    time.sleep(0.45)
    assert raw.keys("ts:fail:*") == []


def test_concurrent_failures_each_spend_a_token(settings):
    instances = [limiter(settings, burst=10, refill=1000.0) for _ in range(4)]
    start = threading.Barrier(20)

    def fail(shared: RedisFailureLimiter) -> None:
        start.wait()
        shared.failed(("c", "s"))

    threads = [threading.Thread(target=fail, args=(instances[n % 4],)) for n in range(20)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    raw = redis.Redis.from_url(settings.url)
    [bucket] = raw.keys("ts:fail:*")
    assert float(raw.hget(bucket, "tokens")) == pytest.approx(-10, abs=0.01)


def test_redis_down_the_limiter_falls_back_to_the_instance_count(server, settings):
    shared = limiter(settings, burst=2)
    key = ("c", "s")
    server.stop()
    try:
        started = time.monotonic()
        assert shared.retry_after(key) == 0
        shared.failed(key)
        shared.failed(key)
        assert shared.retry_after(key) > 0  # counted by the instance while Redis was away
        assert time.monotonic() - started < 3.0
    finally:
        server.start()
    assert shared.retry_after(key) > 0  # the empty restarted Redis does not wipe the instance's count
    assert limiter(settings, burst=2).retry_after(key) == 0  # another instance: only what Redis knows


def test_a_redis_refusing_the_write_refuses_the_assertion_and_issues_nothing(settings):
    """Redis answers EXISTS but refuses SET (an ACL, as a misconfigured or read-only replica would): the
    spend fails after every check passed, and the assertion earns no token (fail closed)."""
    issuer = LocalIssuer().start()
    raw = redis.Redis.from_url(settings.url)
    try:
        verify = AssertionVerifier(policy_for(issuer), AUDIENCES,
                                   JwksCache(UpstreamClient(RetryPolicy(read_timeout=1, budget=1))),
                                   instance(settings))
        raw.acl_setuser("default", enabled=True, nopass=True, keys=["*"], commands=["+@all", "-set"])
        assertion = issuer.mint(audience=BROKER)
        verified = verify.verify(assertion)  # EXISTS answered: not seen
        with pytest.raises(OAuthError) as raised:
            verify.record_use(verified)
        refusal = raised.value
        assert (refusal.status, refusal.error, refusal.reason) == (503, "temporarily_unavailable",
                                                                     Reason.REPLAY_STORE_UNAVAILABLE)
        assert dict(refusal.headers)["Retry-After"] == "2"
        assert "NoPermissionError" in dict(refusal.audit_labels)["replay_store_error"]
        raw.acl_setuser("default", enabled=True, nopass=True, keys=["*"], commands=["+@all"])
        time.sleep(PAUSE_SECONDS)
        verify.record_use(verify.verify(assertion))  # never spent: the refused attempt left no record
        with pytest.raises(OAuthError) as raised:
            verify.verify(assertion)
        assert raised.value.reason is Reason.ASSERTION_REPLAYED
    finally:
        raw.acl_setuser("default", enabled=True, nopass=True, keys=["*"], commands=["+@all"])
        issuer.stop()


def test_the_redis_client_is_loaded_only_with_redis_url(environ, tmp_path):
    """Cold start: a deployment without REDIS_URL never imports the client library."""
    policy = tmp_path / "policy.yaml"
    policy.write_text("issuers:\n  - name: k\n    issuer: https://issuer.example\nrules:\n"
                      "  - name: r\n    assertion:\n      issuer: k\n      subject: s\n")
    base = {**environ, "AUTH_FLOWS": "jwt-bearer,client-secret", "POLICY_FILE": str(policy)}
    probe = ("import json, os, sys\nfrom token_service.assembly import service_from_environment\n"
             "service_from_environment(json.loads(os.environ['PROBE_ENV']))\nprint('redis' in sys.modules)")
    for extra, loaded in (({}, "False"), ({"REDIS_URL": "redis://127.0.0.1:1/0"}, "True")):
        result = subprocess.run([sys.executable, "-c", probe], env={"PROBE_ENV": json.dumps({**base, **extra})},
                                capture_output=True, text=True, timeout=60)
        assert result.stdout.strip() == loaded, result.stderr


class ReplyLosingProxy:
    """A TCP proxy in front of Redis that forwards the first ``SET`` but loses Redis's answer (closes
    the connection instead), as a network fault or a timeout after the write would."""

    def __init__(self, port: int):
        self._server = socket.create_server(("127.0.0.1", 0))
        self.port = self._server.getsockname()[1]
        self._redis_port = port
        self.lost = 0
        self._losing = False
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            client, _ = self._server.accept()
            upstream = socket.create_connection(("127.0.0.1", self._redis_port))
            threading.Thread(target=self._pipe, args=(upstream, client, False), daemon=True).start()
            threading.Thread(target=self._pipe, args=(client, upstream, True), daemon=True).start()

    def _pipe(self, source: socket.socket, target: socket.socket, commands: bool) -> None:
        with contextlib.suppress(OSError):
            while data := source.recv(65536):
                if not commands and self._losing:  # Redis wrote the key and answered: the answer is lost
                    self._losing = False
                    for end in (source, target):
                        end.shutdown(socket.SHUT_RDWR)
                    return
                if commands and b"\r\nSET\r\n" in data and not self.lost:
                    self.lost, self._losing = 1, True
                target.sendall(data)

    def close(self) -> None:
        self._server.close()


def test_a_spend_whose_answer_was_lost_and_retried_is_not_taken_for_a_replay(server, settings):
    proxy = ReplyLosingProxy(server.port)
    try:
        cache = instance(settings._replace(url=f"redis://127.0.0.1:{proxy.port}/0"))
        assert cache.first_use("prod\0once", time.time() + 600)  # the retried SET found its own key
        assert proxy.lost == 1
        assert not cache.first_use("prod\0once", time.time() + 600)  # a real replay still is one
        assert not instance(settings).first_use("prod\0once", time.time() + 600)
    finally:
        proxy.close()
