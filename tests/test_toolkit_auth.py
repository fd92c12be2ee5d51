"""The authorized client (cache, refresh ahead of expiry, retry on 401) and the verifying middleware."""

from __future__ import annotations

import http.server
import threading
import time
from typing import ClassVar

import jwt
import pytest
import requests
from werkzeug.test import Client

from devtools.oidc_issuer import LocalIssuer
from workload_toolkit import CLAIMS_KEY, BearerAuth, BearerTokenMiddleware, CachedTokens, IssuerKeys, trusted_issuer
from workload_toolkit.auth import FileTokenSource, Token

AUDIENCE = "https://ledger.example.com"


class CountingSource:
    def __init__(self, lifetime: float, clock):
        self.lifetime, self.clock, self.count = lifetime, clock, 0

    def fetch(self) -> Token:
        self.count += 1
        now = self.clock()
        return Token(f"token-{self.count}", now, now + self.lifetime)


def test_cached_until_a_fifth_of_the_life_is_left():
    clock = [0.0]
    source = CountingSource(1000, lambda: clock[0])
    tokens = CachedTokens(source, clock=lambda: clock[0])
    assert tokens.get() == tokens.get() == "token-1"
    clock[0] = 799
    assert tokens.get() == "token-1"
    clock[0] = 801  # less than 200 s left: refreshed before it expires
    assert tokens.get() == "token-2"


def test_one_refresh_shared_by_concurrent_callers():
    source = CountingSource(3600, time.time)
    tokens = CachedTokens(source)
    threads = [threading.Thread(target=tokens.get) for _ in range(16)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert source.count == 1


def test_projected_token_file_is_re_read_when_it_changes(tmp_path, issuer):
    path = tmp_path / "token"
    path.write_text(issuer.mint(audience=AUDIENCE))
    tokens = CachedTokens(FileTokenSource(str(path)))
    first = tokens.get()
    time.sleep(0.02)
    path.write_text(issuer.mint(audience=AUDIENCE))
    assert tokens.get() != first


class _Service(http.server.BaseHTTPRequestHandler):
    accepted = "token-2"
    seen: ClassVar[list[str]] = []

    def do_GET(self) -> None:
        token = self.headers.get("Authorization", "")
        _Service.seen.append(token)
        self.send_response(200 if token == f"Bearer {self.accepted}" else 401)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args) -> None:
        pass


def test_a_401_is_retried_once_with_a_fresh_token():
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Service)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        source = CountingSource(3600, time.time)
        session = requests.Session()
        session.trust_env = False
        session.auth = BearerAuth(source)
        _Service.seen = []
        response = session.get(f"http://127.0.0.1:{server.server_address[1]}/", timeout=5)
        assert response.status_code == 200
        assert _Service.seen == ["Bearer token-1", "Bearer token-2"]
        _Service.accepted = "never"
        response = session.get(f"http://127.0.0.1:{server.server_address[1]}/", timeout=5)
        assert response.status_code == 401 and source.count == 3  # one retry, not a loop
    finally:
        server.shutdown()


@pytest.fixture
def issuer():
    issuer = LocalIssuer().start()
    yield issuer
    issuer.stop()


def protected(issuer, allow=None) -> Client:
    def app(environ, start_response):
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [environ[CLAIMS_KEY]["sub"].encode()]

    middleware = BearerTokenMiddleware(app, issuers=[trusted_issuer("cluster", issuer.url)], audiences=[AUDIENCE],
                                       allow=allow, keys=IssuerKeys(cooldown_seconds=0))
    return Client(middleware)


def call(client: Client, token: str | None):
    headers = {"Authorization": f"Bearer {token}"} if token is not None else {}
    return client.get("/", headers=headers)


def test_valid_token_reaches_the_view_with_its_claims(issuer):
    response = call(protected(issuer), issuer.mint(audience=AUDIENCE))
    assert response.status_code == 200 and response.text == "system:serviceaccount:payments:api"


def test_missing_token_is_a_bearer_challenge(issuer):
    response = call(protected(issuer), None)
    assert response.status_code == 401 and response.headers["WWW-Authenticate"].startswith("Bearer realm=")


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda issuer: issuer.mint(audience=AUDIENCE)[:-4] + "AAAA", "invalid"),
        (lambda issuer: issuer.mint(audience=AUDIENCE, lifetime=-120), "expired"),
        (lambda issuer: issuer.mint(audience="https://other.example.com"), "not for this service"),
        (lambda issuer: LocalIssuer().start().mint(audience=AUDIENCE), "not trusted"),
        (lambda issuer: jwt.encode({"iss": issuer.url, "aud": AUDIENCE}, None, algorithm="none"), "algorithm"),
        (lambda issuer: "garbage", "not a JWT"),
    ],
    ids=["tampered", "expired", "wrong-audience", "unknown-issuer", "alg-none", "garbage"],
)
def test_bad_tokens_are_refused(issuer, make, message):
    response = call(protected(issuer), make(issuer))
    assert response.status_code == 401
    assert 'error="invalid_token"' in response.headers["WWW-Authenticate"] and message in response.text


def test_key_rotation_is_followed(issuer):
    client = protected(issuer)
    assert call(client, issuer.mint(audience=AUDIENCE)).status_code == 200
    issuer.rotate()
    assert call(client, issuer.mint(audience=AUDIENCE)).status_code == 200


def test_allow_list_refuses_with_403(issuer):
    client = protected(issuer, allow=lambda claims: claims["kubernetes.io"]["namespace"] == "billing")
    response = call(client, issuer.mint(audience=AUDIENCE))
    assert response.status_code == 403 and "insufficient_scope" in response.headers["WWW-Authenticate"]


def _segment(raw: bytes) -> str:
    import base64

    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


@pytest.mark.parametrize("part", ["header", "payload"])
def test_deeply_nested_json_is_an_invalid_token_not_a_crash(issuer, part):
    """3,000 nested `[` (under 8 KB) must not reach the app as a RecursionError (a 500 with a traceback)."""
    nested, header = _segment(b"[" * 3000), _segment(b'{"alg":"RS256","kid":"k"}')
    token = ".".join([nested, _segment(b"{}"), "sig"] if part == "header" else [header, nested, "sig"])
    response = call(protected(issuer), token)
    assert response.status_code == 401 and 'error="invalid_token"' in response.headers["WWW-Authenticate"]

