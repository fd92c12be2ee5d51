"""The token service with the cache of Google-issued tokens, against the Google emulator.

The emulator validates the broker's ID tokens like STS: it fetches the discovery document and keys
over HTTPS, here from a small TLS server that serves the service's own. Requests go through the
edge's dispatch, with the load balancer's certificate headers.
"""

from __future__ import annotations

import http.server
import json
import ssl
import threading
import time
from urllib.parse import urlencode

import jwt
import pytest

from devtools.google_emulator import local_emulator, serve
from devtools.local import (
    PROJECT_NUMBER,
    RUNTIME_SERVICE_ACCOUNT,
    WORKLOAD_SERVICE_ACCOUNT,
    local_environment,
    proxy_secret_headers,
)
from devtools.oidc_issuer import LocalIssuer
from devtools.pki import ensure_dev_pki
from tests.support import b64, verified_headers
from token_service.assembly import service_from_environment
from token_service.audit import JsonLineWriter
from token_service.config import load_settings
from token_service.edge.dispatch import HttpRequest, dispatch
from token_service.google.exchange import GoogleExchange
from token_service.google.iam_credentials import IamCredentialsClient
from token_service.google.sts import StsClient
from token_service.google.token_cache import TokenCache
from token_service.google.transport import UpstreamClient
from token_service.issuing.signers import load_signer
from token_service.policy import parse_policy
from token_service.service import TokenService

SCOPE = "https://www.googleapis.com/auth/cloud-platform"
READ_ONLY = "https://www.googleapis.com/auth/devstorage.read_only"
AUDIENCE = "https://hello-abc123-uc.a.run.app"
JWT_BEARER = "urn:ietf:params:oauth:grant-type:jwt-bearer"


class Google:
    """The emulator, and the issuer server it fetches the broker's discovery document and keys from."""

    def __init__(self, directory) -> None:
        pki = ensure_dev_pki(directory)
        self.documents: dict[str, bytes] = {}
        documents = self.documents

        class Issuer(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                body = documents.get(self.path, b"{}")
                self.send_response(200 if self.path in documents else 404)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args) -> None:
                pass

        self.issuer = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Issuer)
        tls = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        tls.load_cert_chain(pki["server_cert"], pki["server_key"])
        self.issuer.socket = tls.wrap_socket(self.issuer.socket, server_side=True)
        threading.Thread(target=self.issuer.serve_forever, daemon=True).start()
        port = self.issuer.server_address[1]
        self.emulator = local_emulator(
            issuer=f"https://127.0.0.1:{port}", project_number=PROJECT_NUMBER, pool_id="local-pool",
            provider_id="token-service", ca_file=str(pki["ca"]), runtime_service_account=RUNTIME_SERVICE_ACCOUNT,
            workload_service_account=WORKLOAD_SERVICE_ACCOUNT)
        self.server = serve(self.emulator)
        self.environ = local_environment(directory, port, self.server.server_address[1])

    def calls(self) -> int:
        return self.emulator.requests["sts"] + self.emulator.requests["iam"]

    def close(self) -> None:
        self.server.shutdown()
        self.issuer.shutdown()


@pytest.fixture(scope="module")
def google(tmp_path_factory):
    google = Google(tmp_path_factory.mktemp("google"))
    yield google
    google.close()


class Clock:
    offset = 0.0  # seconds ahead of the real time

    def __call__(self) -> float:
        return time.time() + self.offset


def build(google: Google, audit, *, policy=None, cache=None, clock=None, **environ) -> TokenService:
    settings = load_settings({**google.environ, **environ})
    upstream = UpstreamClient()
    exchange = GoogleExchange(settings.provider, StsClient(upstream, settings.google.sts_endpoint),
                              IamCredentialsClient(upstream, settings.google.iam_credentials_endpoint), 3600)
    service = TokenService(settings, load_signer(settings.signer, settings.google, google.environ, upstream),
                           JsonLineWriter(audit.stream), exchange, clock=clock or time.time,
                           policy=policy and parse_policy(policy), cache=cache)
    publish(google, service)
    return service


def publish(google: Google, service: TokenService) -> None:
    """Serve the service's discovery document and keys, as its issuer URL does."""
    for path in ("/.well-known/openid-configuration", "/jwks"):
        google.documents[path] = dispatch(service, HttpRequest("GET", path, dict(secret_headers(google)))).body


def secret_headers(google: Google) -> dict[str, str]:
    return {name.lower(): value for name, value in proxy_secret_headers(google.environ).items()}


def post(service: TokenService, google: Google, headers=None, **form):
    body = urlencode({"grant_type": "client_credentials", **form}).encode()
    response = dispatch(service, HttpRequest("POST", "/token", {
        "content-type": "application/x-www-form-urlencoded", **secret_headers(google),
        **(headers or verified_headers())}, body))
    return response.status, json.loads(response.body)


def cache_labels(audit) -> list[str | None]:
    return [entry["logging.googleapis.com/labels"].get("cache") for entry in audit.entries]


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def cached(google, audit, clock) -> TokenService:
    return build(google, audit, cache=TokenCache(300, 100, 5, clock), clock=clock)


def test_repeat_requests_make_one_google_call_and_get_the_same_tokens(google, audit, cached, clock):
    before = google.calls()
    answers = [post(cached, google, scope=SCOPE) for _ in range(3)]
    assert google.calls() - before == 1
    assert {status for status, _ in answers} == {200}
    assert len({body["access_token"] for _, body in answers}) == 1
    assert len({body["id_token"] for _, body in answers}) == 1  # the exchanged one, reused while it lasts
    assert cache_labels(audit) == ["miss", "hit", "hit"]
    clock.offset = 100
    status, body = post(cached, google, scope=SCOPE)
    assert status == 200 and answers[0][1]["expires_in"] - 101 <= body["expires_in"] <= answers[0][1]["expires_in"] - 99


def test_a_hit_signs_a_fresh_id_token_once_the_cached_one_is_near_its_end(google, audit, cached, clock):
    _, first = post(cached, google, scope=SCOPE)
    clock.offset = 250  # the 5-minute ID token has 50 s left
    before = google.calls()
    _, second = post(cached, google, scope=SCOPE)
    _, third = post(cached, google, scope=SCOPE)
    assert google.calls() == before and second["access_token"] == first["access_token"]
    assert second["id_token"] != first["id_token"] and third["id_token"] == second["id_token"]
    jtis = [entry["logging.googleapis.com/labels"]["jti"] for entry in audit.entries]
    assert jtis[1] != jtis[0] and jtis[2] == jtis[1]


OTHER_CERTIFICATE = verified_headers(**{"x-client-cert-hash": "B" * 43})
OTHER_SAN = verified_headers(**{"x-client-cert-dnsname-sans": b64("device-2.example.net")})


@pytest.mark.parametrize(("headers", "form"), [
    (OTHER_CERTIFICATE, {"scope": SCOPE}),
    (OTHER_SAN, {"scope": SCOPE}),
    (None, {"scope": f"{SCOPE} {READ_ONLY}"}),
    (None, {"scope": SCOPE, "service_account": WORKLOAD_SERVICE_ACCOUNT}),
    (None, {"audience": f"{AUDIENCE}/other", "service_account": WORKLOAD_SERVICE_ACCOUNT}),
], ids=["certificate", "dns-san", "scope", "service-account", "audience"])
def test_another_certificate_or_request_never_gets_another_keys_token(google, audit, cached, headers, form):
    post(cached, google, scope=SCOPE)
    post(cached, google, audience=AUDIENCE, service_account=WORKLOAD_SERVICE_ACCOUNT)
    issued = {post(cached, google, scope=SCOPE)[1]["access_token"],
              post(cached, google, audience=AUDIENCE, service_account=WORKLOAD_SERVICE_ACCOUNT)[1]["access_token"]}
    status, body = post(cached, google, headers, **form)
    assert status == 200, body
    assert body["access_token"] not in issued
    assert cache_labels(audit)[-1] == "miss"


def test_an_expired_certificate_is_refused_though_its_token_is_cached(google, audit, cached, clock):
    soon = time.strftime("%Y-%m-%dT%H:%M:%S+00:00", time.gmtime(time.time() + 200))
    headers = verified_headers(**{"x-client-cert-valid-not-after": soon})
    assert post(cached, google, headers, scope=SCOPE)[0] == 200
    clock.offset = 201
    status, body = post(cached, google, headers, scope=SCOPE)
    assert status == 401 and "access_token" not in body and "certificate_expired" in body["error_description"]


@pytest.mark.parametrize(("headers", "reason"), [
    (verified_headers(**{"x-client-cert-chain-verified": "false"}), "certificate_not_verified"),
    (verified_headers(**{"x-client-cert-error": "client_cert_validation_failed"}), "certificate_error"),
    (verified_headers(**{"x-client-cert-present": "false"}), "no_client_certificate"),
    ({name: value for name, value in verified_headers().items() if name != "x-client-cert-present"},
     "mtls_headers_missing"),
], ids=["unverified", "error-header", "no-certificate", "no-headers"])
def test_a_hit_still_checks_the_certificate_headers(google, audit, cached, headers, reason):
    assert post(cached, google, scope=SCOPE)[0] == 200
    status, body = post(cached, google, headers, scope=SCOPE)
    assert status == 401 and "access_token" not in body and f"reason: {reason}" in body["error_description"]


def policy(scopes: list[str], rule: str = "meters", claims=None) -> dict:
    return {"rules": [{"name": rule, "certificate": {"spiffe_id": "spiffe://example.net/**"},
                       "allow": {"scopes": scopes, **({"claims": claims} if claims else {})}}]}


def test_a_hit_still_refuses_what_the_policy_now_denies(google, audit, clock):
    cache = TokenCache(300, 100, 5, clock)
    allowing = build(google, audit, policy=policy([SCOPE]), cache=cache, clock=clock)
    status, granted = post(allowing, google, scope=SCOPE)
    assert status == 200, granted
    denying = build(google, audit, policy=policy([READ_ONLY]), cache=cache, clock=clock)
    status, body = post(denying, google, scope=SCOPE)
    assert status == 403 and "access_token" not in body
    assert len(cache) == 1


@pytest.mark.parametrize("changed", [policy([SCOPE], rule="renamed"), policy([SCOPE], claims={"team": "x"}),
                                     policy([SCOPE, READ_ONLY])], ids=["rule", "claims", "allowance"])
def test_a_token_never_crosses_a_policy_change(google, audit, clock, changed):
    cache = TokenCache(300, 100, 5, clock)
    _, first = post(build(google, audit, policy=policy([SCOPE]), cache=cache, clock=clock), google, scope=SCOPE)
    status, second = post(build(google, audit, policy=changed, cache=cache, clock=clock), google, scope=SCOPE)
    assert status == 200 and second["access_token"] != first["access_token"]
    assert cache_labels(audit) == ["miss", "miss"]


def test_a_refusal_from_google_is_not_cached(google, audit, cached):
    status, _ = post(cached, google, scope=SCOPE, service_account="nobody@local-project.iam.gserviceaccount.com")
    assert status == 403
    google.emulator.bindings["nobody@local-project.iam.gserviceaccount.com"] = \
        google.emulator.bindings[WORKLOAD_SERVICE_ACCOUNT]
    try:
        status, _ = post(cached, google, scope=SCOPE, service_account="nobody@local-project.iam.gserviceaccount.com")
    finally:
        del google.emulator.bindings["nobody@local-project.iam.gserviceaccount.com"]
    assert status == 200
    assert cache_labels(audit) == ["miss", "miss"]


def test_the_off_switch_calls_google_every_time_and_labels_nothing(google, audit):
    service = service_from_environment({**google.environ, "GOOGLE_TOKEN_CACHE": "off"}, audit.stream)
    publish(google, service)
    before = google.calls()
    tokens = {post(service, google, scope=SCOPE)[1]["access_token"] for _ in range(3)}
    assert google.calls() - before == 3 and len(tokens) == 3
    assert cache_labels(audit) == [None, None, None]


def test_the_cache_is_on_by_default_and_labels_exchanges_only(google, audit):
    service = service_from_environment(google.environ, audit.stream)
    publish(google, service)
    before = google.calls()
    assert len({post(service, google, scope=SCOPE)[1]["access_token"] for _ in range(3)}) == 1
    assert post(service, google)[0] == 200  # an ID token alone: no exchange, no label
    assert google.calls() - before == 1 and cache_labels(audit) == ["miss", "hit", "hit", None]


def test_a_reused_id_token_never_outlives_the_proof_of_the_request_it_is_served_to(google, audit, tmp_path):
    """Assertions are keyed by what they prove, not by their expiry: a second assertion of the same workload
    gets the cached Google token, and a broker ID token that does not outlive its own assertion."""
    issuer = LocalIssuer().start()
    try:
        policy_file = tmp_path / "policy.json"
        policy_file.write_text(json.dumps({
            "issuers": [{"name": "prod-cluster", "issuer": issuer.url, "jwks": issuer.jwks(), "single_use": False}],
            "rules": [{"name": "payments", "allow": {"scopes": [SCOPE]},
                       "assertion": {"issuer": "prod-cluster", "subject": "system:serviceaccount:payments:*"}}]}))
        service = service_from_environment({**google.environ, "AUTH_FLOWS": "jwt-bearer",
                                            "POLICY_FILE": str(policy_file)}, audit.stream)
        publish(google, service)
        answers = []
        for lifetime in (3600, 120):
            assertion = issuer.mint(audience=service.settings.issuer, lifetime=lifetime)
            answers.append(post(service, google, grant_type=JWT_BEARER, assertion=assertion, scope=SCOPE))
            assertion_exp = jwt.decode(assertion, options={"verify_signature": False})["exp"]
            status, body = answers[-1]
            assert status == 200, body
            assert jwt.decode(body["id_token"], options={"verify_signature": False})["exp"] <= assertion_exp
    finally:
        issuer.stop()
    assert answers[0][1]["access_token"] == answers[1][1]["access_token"]
    assert answers[0][1]["id_token"] != answers[1][1]["id_token"]
    assert cache_labels(audit) == ["miss", "hit"]
