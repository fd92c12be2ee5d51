"""The toolkit's own issuer keys: rotation, one fetch per cooldown, stale keys while the issuer is down,
bounded waits, https only, no redirects, a size cap; and no import from the broker's package."""

from __future__ import annotations

import ast
import json
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from werkzeug.test import Client

from devtools.oidc_issuer import LocalIssuer
from tests.support import HangingIssuer, ScriptedIssuer
from workload_toolkit import BearerTokenMiddleware, IssuerKeys, trusted_issuer
from workload_toolkit.keys import MAX_DOCUMENT_BYTES, KeysUnavailable

ROOT = Path(__file__).resolve().parent.parent
AUDIENCE = "https://ledger.example.com"


@pytest.fixture
def issuer():
    issuer = LocalIssuer().start()
    yield issuer
    issuer.stop()


def test_the_toolkit_and_the_example_service_import_nothing_from_token_service():
    sources = [*(ROOT / "workload_toolkit").rglob("*.py"), ROOT / "examples" / "protected_service.py"]
    for source in sources:
        for node in ast.walk(ast.parse(source.read_text())):
            names = ([alias.name for alias in node.names] if isinstance(node, ast.Import)
                     else [node.module or ""] if isinstance(node, ast.ImportFrom) else [])
            assert not any(name.split(".")[0] == "token_service" for name in names), source
    # And at run time, through whatever they import in turn: token_service made unimportable.
    program = (
        "import importlib, pkgutil, runpy, sys\n"
        "sys.modules['token_service'] = None\n"
        "import workload_toolkit\n"
        "for module in pkgutil.walk_packages(workload_toolkit.__path__, 'workload_toolkit.'):\n"
        "    importlib.import_module(module.name)\n"
        "runpy.run_path(sys.argv[1])\n"
    )
    result = subprocess.run([sys.executable, "-c", program, str(ROOT / "examples" / "protected_service.py")],
                            cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr


def test_a_rotated_key_is_fetched_once_the_cooldown_allows_and_made_up_kids_fetch_nothing(issuer):
    clock = [1000.0]
    keys = IssuerKeys(cooldown_seconds=30, clock=lambda: clock[0])
    cluster = trusted_issuer("cluster", issuer.url)
    first = issuer.current_kid
    assert keys.key(cluster, first) is not None
    assert issuer.requests == 2  # discovery and JWK set
    for number in range(20):
        assert keys.key(cluster, f"made-up-{number}") is None
    rotated = issuer.rotate()
    assert keys.key(cluster, rotated) is None  # within the cooldown of the last fetch
    assert issuer.requests == 2
    clock[0] += 31
    assert keys.key(cluster, rotated) is not None and keys.key(cluster, first) is not None
    assert issuer.requests == 4
    assert keys.key(cluster, "made-up-again") is None and issuer.requests == 4


def test_while_the_issuer_is_down_its_last_keys_stay_in_use_and_it_is_asked_once_per_cooldown(issuer):
    clock = [1000.0]
    keys = IssuerKeys(cooldown_seconds=30, fresh_seconds=300, stale_seconds=3600, clock=lambda: clock[0])
    cluster = trusted_issuer("cluster", issuer.url)
    kid = issuer.current_kid
    assert keys.key(cluster, kid) is not None
    issuer.down = True
    before = issuer.requests
    clock[0] += 301  # no longer fresh: a refetch, which fails
    for _ in range(10):
        assert keys.key(cluster, kid) is not None
    assert issuer.requests == before + 1
    clock[0] += 31
    assert keys.key(cluster, kid) is not None and issuer.requests == before + 2
    clock[0] += 3600  # too old to trust any longer
    with pytest.raises(KeysUnavailable, match="cannot be fetched"):
        keys.key(cluster, kid)
    issuer.down = False
    clock[0] += 31
    assert keys.key(cluster, kid) is not None


def test_an_issuer_never_reached_is_a_401_saying_its_keys_are_unavailable(issuer):
    issuer.down = True
    middleware = BearerTokenMiddleware(lambda environ, start_response: [], audiences=[AUDIENCE],
                                       issuers=[trusted_issuer("cluster", issuer.url)])
    response = Client(middleware).get("/", headers={"Authorization": f"Bearer {issuer.mint(audience=AUDIENCE)}"})
    assert response.status_code == 401 and "keys are unavailable" in response.text


def test_a_hanging_issuer_holds_callers_no_longer_than_the_timeout_and_gets_one_connection():
    hanging = HangingIssuer()
    try:
        keys = IssuerKeys(timeout=0.5, cooldown_seconds=30)
        stuck = trusted_issuer("stuck", hanging.url)
        latencies: list[float] = []
        errors: list[Exception] = []

        def call() -> None:
            started = time.monotonic()
            try:
                keys.key(stuck, "any")
            except KeysUnavailable as error:
                errors.append(error)
            latencies.append(time.monotonic() - started)

        threads = [threading.Thread(target=call) for _ in range(8)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=10)
        assert len(errors) == 8 and max(latencies) < 1.5, latencies
        started = time.monotonic()
        with pytest.raises(KeysUnavailable):  # cooling down: refused at once
            keys.key(stuck, "any")
        assert time.monotonic() - started < 0.1 and hanging.connections == 1
    finally:
        hanging.close()


@pytest.mark.parametrize("jwks_uri", ["http://keys.example.net/jwks", "ftp://127.0.0.1/jwks", "file:///etc/passwd"])
def test_keys_are_fetched_only_over_https_or_loopback_http(jwks_uri):
    discovery = ScriptedIssuer(lambda path: (200, json.dumps({"jwks_uri": jwks_uri}).encode(), {}))
    try:
        with pytest.raises(KeysUnavailable, match="not https"):
            IssuerKeys().key(trusted_issuer("cluster", discovery.url), "any")
        assert discovery.requests == 1  # the discovery only: the named URL is never fetched
        with pytest.raises(KeysUnavailable, match="not https"):  # nor when configured
            IssuerKeys().key(trusted_issuer("cluster", discovery.url, jwks_uri), "any")
        assert discovery.requests == 1
    finally:
        discovery.close()


def test_a_redirect_is_a_failed_fetch_not_followed(issuer):
    redirecting = ScriptedIssuer(lambda path: (302, b"", {"Location": f"{issuer.url}{path}"}))
    try:
        with pytest.raises(KeysUnavailable, match="HTTP 302"):
            IssuerKeys().key(trusted_issuer("cluster", redirecting.url), issuer.current_kid)
        assert issuer.requests == 0
    finally:
        redirecting.close()


def test_an_oversized_answer_is_a_failed_fetch_with_a_cooldown():
    big = ScriptedIssuer(lambda path: (200, b'{"keys": [' + b" " * MAX_DOCUMENT_BYTES + b"]}", {}))
    try:
        keys = IssuerKeys(cooldown_seconds=30)
        for _ in range(3):
            with pytest.raises(KeysUnavailable, match="more than"):
                keys.key(trusted_issuer("cluster", big.url, f"{big.url}/jwks"), "any")
        assert big.requests == 1
    finally:
        big.close()


@pytest.mark.parametrize("document", [b"[]", b'{"keys": 5}', b'"text"', b"\xff", b"[" * 5000])
def test_an_answer_that_is_not_a_jwk_set_is_a_failed_fetch_not_a_crash(document):
    scripted = ScriptedIssuer(lambda path: (200, document, {}))
    try:
        with pytest.raises(KeysUnavailable, match="cannot be fetched"):
            IssuerKeys().key(trusted_issuer("cluster", scripted.url, f"{scripted.url}/jwks"), "k")
    finally:
        scripted.close()


def test_malformed_and_foreign_keys_are_skipped():
    document = {"keys": [7, {"kid": "bad", "kty": "RSA", "n": 5}, {"kid": "enc", "kty": "RSA", "use": "enc"},
                         {"kid": "hmac", "kty": "oct", "k": "c2VjcmV0"}]}
    scripted = ScriptedIssuer(lambda path: (200, json.dumps(document).encode(), {}))
    try:
        keys, cluster = IssuerKeys(), trusted_issuer("cluster", scripted.url, f"{scripted.url}/jwks")
        assert [keys.key(cluster, kid) for kid in ("bad", "enc", "hmac")] == [None, None, None]
    finally:
        scripted.close()
