"""The cache of Google-issued tokens on its own: expiry bounds, single flight, failures, size bound, keys."""

from __future__ import annotations

import threading

import pytest

from token_service.errors import OAuthError, Reason, access_denied
from token_service.google.exchange import ExchangeRequest
from token_service.google.token_cache import TokenCache, exchange_key

SCOPE = "https://www.googleapis.com/auth/cloud-platform"
NOW = 1_800_000_000.0


class Clock:
    def __init__(self) -> None:
        self.now = NOW

    def __call__(self) -> float:
        return self.now


class Loader:
    """Counts loads; each answers a new value valid ``lifetime`` seconds from the clock."""

    def __init__(self, clock: Clock, lifetime: float = 3600) -> None:
        self.clock, self.lifetime, self.calls = clock, lifetime, 0

    def __call__(self) -> tuple[str, float]:
        self.calls += 1
        return f"token-{self.calls}", self.clock() + self.lifetime


@pytest.fixture
def clock() -> Clock:
    return Clock()


def served(cached) -> tuple[str, bool]:
    return cached.value, cached.hit


def cache_of(clock: Clock, margin: int = 300, entries: int = 100, wait: float = 5) -> TokenCache[str]:
    return TokenCache(margin, entries, wait, clock)


def test_a_hit_serves_the_loaded_value_until_the_margin_before_googles_expiry(clock):
    cache, load = cache_of(clock, margin=300), Loader(clock)
    first = cache.fetch("k", load, None)
    assert (first.value, first.hit, first.expires_at) == ("token-1", False, NOW + 3600)
    clock.now = NOW + 3600 - 300 - 1
    assert served(cache.fetch("k", load, None)) == ("token-1", True)
    clock.now = NOW + 3600 - 300
    assert served(cache.fetch("k", load, None)) == ("token-2", False)
    assert load.calls == 2


def test_never_served_past_the_proofs_expiry(clock):
    cache, load = cache_of(clock), Loader(clock)
    not_after = NOW + 600  # the certificate expires long before Google's token
    cache.fetch("k", load, not_after)
    clock.now = not_after - 1
    assert cache.fetch("k", load, not_after).hit
    clock.now = not_after
    assert not cache.fetch("k", load, not_after).hit


def test_a_token_that_would_be_served_for_no_time_is_not_kept(clock):
    cache, load = cache_of(clock, margin=300), Loader(clock, lifetime=200)
    assert cache.fetch("k", load, None).value == "token-1"
    assert cache.fetch("k", load, None).value == "token-2"
    assert len(cache) == 0


def test_keys_never_share_a_value(clock):
    cache, load = cache_of(clock), Loader(clock)
    assert cache.fetch("a", load, None).value == "token-1"
    assert cache.fetch("b", load, None).value == "token-2"
    assert cache.fetch("a", load, None).value == "token-1"


def test_concurrent_misses_for_one_key_make_one_call(clock):
    cache, release, calls, loading = cache_of(clock), threading.Event(), [], threading.Event()

    def slow_load() -> tuple[str, float]:
        calls.append(1)
        loading.set()
        release.wait(5)
        return "shared", clock() + 3600

    results: list[tuple[str, bool]] = []
    threads = [threading.Thread(target=lambda: results.append(served(cache.fetch("k", slow_load, None))))
               for _ in range(20)]
    for thread in threads:
        thread.start()
    loading.wait(5)
    release.set()
    for thread in threads:
        thread.join(5)
    assert len(calls) == 1
    assert sorted(results) == [("shared", False)] + [("shared", True)] * 19


def test_a_failure_is_shared_by_the_waiters_and_not_cached(clock):
    cache, release = cache_of(clock), threading.Event()
    refusal = access_denied("Google STS refused the ID token", Reason.STS_REFUSED)
    attempts, loading = [], threading.Event()

    def failing() -> tuple[str, float]:
        attempts.append(1)
        loading.set()
        release.wait(5)
        raise refusal

    errors: list[BaseException] = []

    def request() -> None:
        try:
            cache.fetch("k", failing, None)
        except OAuthError as error:
            errors.append(error)

    threads = [threading.Thread(target=request) for _ in range(5)]
    for thread in threads:
        thread.start()
    loading.wait(5)
    release.set()
    for thread in threads:
        thread.join(5)
    assert len(attempts) == 1 and len(errors) == 5
    assert {error.reason for error in errors} == {Reason.STS_REFUSED}
    assert served(cache.fetch("k", Loader(clock), None)) == ("token-1", False)  # the next request tries again


def test_a_waiter_gives_up_with_503_when_the_call_it_waits_for_takes_too_long(clock):
    cache, release, started = cache_of(clock, wait=0.2), threading.Event(), threading.Event()

    def hung() -> tuple[str, float]:
        started.set()
        release.wait(5)
        return "late", clock() + 3600

    leader = threading.Thread(target=cache.fetch, args=("k", hung, None))
    leader.start()
    started.wait(5)
    with pytest.raises(OAuthError) as raised:
        cache.fetch("k", hung, None)
    release.set()
    leader.join(5)
    assert raised.value.status == 503 and dict(raised.value.headers)["Retry-After"] == "2"


def test_the_least_recently_used_entry_goes_when_full(clock):
    cache, load = cache_of(clock, entries=2), Loader(clock)
    cache.fetch("a", load, None)
    cache.fetch("b", load, None)
    cache.fetch("a", load, None)  # a is now the most recently used
    cache.fetch("c", load, None)
    assert len(cache) == 2
    assert cache.fetch("a", load, None).hit and cache.fetch("c", load, None).hit
    assert not cache.fetch("b", load, None).hit


SCOPED = ExchangeRequest((SCOPE,))


def key(claims=None, rule="r", policy="p", request=SCOPED, response_format="oauth"):
    claims = claims or {"sub": "client", "client": {"x5_sha256": "A", "x5_serial": "01"}, "team": "demo",
                        "iat": 1, "exp": 2, "jti": "x"}
    return exchange_key(claims=claims, policy_rule=rule, policy_fingerprint=policy, request=request,
                        response_format=response_format)


def test_the_key_ignores_only_the_time_and_id_claims_and_the_order_of_scopes():
    base = key()
    assert key(claims={"sub": "client", "client": {"x5_serial": "01", "x5_sha256": "A"}, "team": "demo",
                       "iat": 9, "exp": 99, "jti": "y"}) == base
    assert key(request=ExchangeRequest(("b", "a"))) == key(request=ExchangeRequest(("a", "b")))


@pytest.mark.parametrize("changed", [
    {"claims": {"sub": "client", "client": {"x5_sha256": "B", "x5_serial": "01"}, "team": "demo"}},
    {"claims": {"sub": "client", "client": {"x5_sha256": "A", "x5_serial": "02"}, "team": "demo"}},
    {"claims": {"sub": "client", "client": {"x5_sha256": "A", "x5_serial": "01"}, "team": "ops"}},
    {"rule": "other"},
    {"policy": "q"},
    {"request": ExchangeRequest((SCOPE, "openid"))},
    {"request": ExchangeRequest((SCOPE,), "sa@p.iam.gserviceaccount.com")},
    {"request": ExchangeRequest((), "sa@p.iam.gserviceaccount.com", "https://a")},
    {"response_format": "external_credential"},
], ids=["fingerprint", "serial", "rule-claim", "rule", "policy", "scope", "service-account", "audience", "format"])
def test_every_fact_that_shapes_the_token_changes_the_key(changed):
    assert key(**changed) != key()


def test_audiences_of_one_service_account_have_their_own_keys():
    first = key(request=ExchangeRequest((), "sa@p.iam.gserviceaccount.com", "https://a"))
    assert first != key(request=ExchangeRequest((), "sa@p.iam.gserviceaccount.com", "https://b"))
