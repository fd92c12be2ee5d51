"""The load balancer's secret header, checked at the edge (dispatch) before anything else reads a request."""

from __future__ import annotations

import json

import pytest

from tests.support import ISSUER, verified_headers
from token_service.audit import JsonLineWriter
from token_service.config import ProxySecretSettings, load_settings
from token_service.edge.dispatch import HttpRequest, dispatch, may_wait
from token_service.edge.proxy_secret import ProxySecretCheck
from token_service.errors import Reason
from token_service.issuing.signers import LocalKeySigner
from token_service.service import TokenService

NEW = "a1" * 32
OLD = "b2" * 32
HEADER = "x-token-service-proxy-secret"
FORM = {"content-type": "application/x-www-form-urlencoded"}
BYPASS = {"error": "access_denied",
          "error_description": "requests must come through the load balancer (reason: not_through_load_balancer)"}


@pytest.fixture
def guarded(environ, rsa_key, audit) -> TokenService:
    """A service that accepts both secrets of a rotation."""
    environ["PROXY_SECRETS"] = f"{NEW}\n{OLD}"
    return TokenService(load_settings(environ), LocalKeySigner(rsa_key, "RS256"), JsonLineWriter(audit.stream))


def token_request(secret: str | None, **headers: str) -> HttpRequest:
    sent = {**FORM, **verified_headers(), **headers}
    if secret is not None:
        sent[HEADER] = secret
    return HttpRequest("POST", "/token", sent, b"grant_type=client_credentials", url=f"{ISSUER}/token",
                       remote_ip="10.0.0.7")


@pytest.mark.parametrize("secret", [NEW, OLD], ids=["new", "old"])
def test_either_value_of_a_rotation_is_accepted(guarded, audit, secret):
    response = dispatch(guarded, token_request(secret))
    assert response.status == 200 and "id_token" in json.loads(response.body)
    assert audit.entries[0]["logging.googleapis.com/labels"]["outcome"] == "issued"


@pytest.mark.parametrize(
    "secret",
    [None, "", "c3" * 32, NEW[:-1], NEW + "0", NEW.upper(), f"{NEW},{OLD}", f"{NEW} ", "é" * 64],
    ids=["missing", "empty", "other", "prefix", "longer", "case", "both-joined", "trailing-space", "non-ascii"],
)
def test_forged_certificate_headers_without_the_secret_get_403_and_no_token(guarded, audit, secret):
    response = dispatch(guarded, token_request(secret, traceparent="00-4bf92f3577b34da6a3ce929d0e0e4736-"
                                                                  "00f067aa0ba902b7-01"))
    assert response.status == 403
    assert json.loads(response.body) == BYPASS
    assert dict(response.headers)["Content-Type"] == "application/json"
    assert dict(response.headers)["Cache-Control"] == "no-store"
    [entry] = audit.entries
    labels = entry["logging.googleapis.com/labels"]
    assert labels["event"] == "token" and labels["outcome"] == "refused"
    assert labels["reason"] == Reason.NOT_THROUGH_LOAD_BALANCER == "not_through_load_balancer"
    assert labels["error"] == "access_denied" and labels["status"] == "403"
    assert entry["severity"] == "WARNING"
    # What the caller tried to forge is the evidence operators want.
    assert labels["header/x-client-cert-present"] == "true"
    assert entry["logging.googleapis.com/trace"] == "4bf92f3577b34da6a3ce929d0e0e4736"
    assert entry["httpRequest"]["remoteIp"] == "10.0.0.7" and entry["httpRequest"]["status"] == 403


@pytest.mark.parametrize(("method", "path"), [
    ("GET", "/.well-known/openid-configuration"), ("HEAD", "/.well-known/openid-configuration"), ("GET", "/"),
    ("GET", "/jwks"), ("GET", "/.well-known/jwks.json"), ("GET", "/admin"), ("GET", "/token"), ("DELETE", "/jwks"),
])
def test_every_path_is_checked_before_routing(guarded, audit, method, path):
    refused = dispatch(guarded, HttpRequest(method, path, {HEADER: "c3" * 32}))
    assert refused.status == 403 and json.loads(refused.body) == BYPASS
    [entry] = audit.entries
    labels = entry["logging.googleapis.com/labels"]
    assert labels["reason"] == "not_through_load_balancer" and labels["event"] == "request"
    assert entry["httpRequest"]["requestMethod"] == method
    admitted = dispatch(guarded, HttpRequest(method, path, {HEADER: OLD}))
    assert admitted.status in (200, 307, 404, 405)


def test_the_secret_never_reaches_the_log_or_an_answer(guarded, audit, monkeypatch):
    wrong = "d4" * 32
    seen: list[str] = []
    original = guarded.token

    def spy(request):
        seen.append(repr(request))
        return original(request)

    monkeypatch.setattr(guarded, "token", spy)
    answers = [dispatch(guarded, token_request(NEW)), dispatch(guarded, token_request(wrong)),
               dispatch(guarded, token_request(OLD, **{"x-client-cert-present": "false"})),
               dispatch(guarded, HttpRequest("GET", "/nothing", {HEADER: wrong}))]
    assert [answer.status for answer in answers] == [200, 403, 401, 403]
    # Stripped at the edge: the token service below never sees the header or its value.
    assert seen and all(HEADER not in request and NEW not in request and OLD not in request for request in seen)
    written = json.dumps(audit.entries) + "".join(answer.body.decode() for answer in answers)
    assert len(audit.entries) == 4
    for secret in (NEW, OLD, wrong):
        assert secret not in written and secret[:16] not in written
    assert not any(label.endswith("proxy-secret") for entry in audit.entries
                   for label in entry["logging.googleapis.com/labels"])


def test_a_custom_header_name(environ, rsa_key, audit):
    environ.update(PROXY_SECRETS=NEW, PROXY_SECRET_HEADER="X-Edge-Secret")
    service = TokenService(load_settings(environ), LocalKeySigner(rsa_key, "RS256"), JsonLineWriter(audit.stream))
    assert dispatch(service, token_request(None, **{"x-edge-secret": NEW})).status == 200
    assert dispatch(service, token_request(NEW)).status == 403  # the default name is just another header now


def test_without_configured_secrets_nothing_is_checked(service):
    # A local run without the gateway's secret (make run always sets one); on Google config refuses this.
    assert not ProxySecretCheck(service.settings.proxy_secret).enabled
    assert dispatch(service, token_request(None)).status == 200


def test_refusals_stay_off_the_thread_pool(guarded):
    exchange = HttpRequest("POST", "/token", {**FORM, HEADER: "c3" * 32}, b"grant_type=client_credentials&scope=x")
    assert may_wait(guarded, exchange) is False
    assert may_wait(guarded, exchange._replace(headers={**FORM, HEADER: NEW})) is True


def test_check_compares_whole_values():
    check = ProxySecretCheck(ProxySecretSettings("X-Token-Service-Proxy-Secret", (NEW, OLD)))
    assert check.header == HEADER and check.enabled
    assert check.admits({HEADER: NEW}) and check.admits({HEADER: OLD})
    for presented in ("", NEW[:32], NEW + NEW, OLD + "\x00", "ÿ" * 64):
        assert not check.admits({HEADER: presented})
    assert not check.admits({"x-other": NEW})
    headers = {HEADER: NEW, "host": "t"}
    assert check.without_secret(headers) == {"host": "t"} and HEADER in headers  # a copy, the original intact
    untouched = {"host": "t"}
    assert check.without_secret(untouched) is untouched
