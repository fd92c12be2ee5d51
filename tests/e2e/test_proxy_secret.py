"""End to end: the function refuses whoever reaches it without the load balancer's (here: the gateway's)
secret header, whatever certificate headers they forge, and never writes the secret anywhere."""

from __future__ import annotations

import secrets
import uuid

import pytest
import requests

from devtools.local import start_gateway
from tests.e2e.conftest import launch, stop
from tests.support import verified_headers

SECRET_HEADER = "X-Token-Service-Proxy-Secret"
BYPASS_DESCRIPTION = "requests must come through the load balancer (reason: not_through_load_balancer)"


def direct(stack, method: str = "POST", path: str = "/token", headers: dict[str, str] | None = None):
    """Straight to the function, as an internal caller (same VPC, Shared VPC, VPC-SC perimeter) could,
    with certificate headers claiming a verified certificate; returns (response, audit entry)."""
    session = requests.Session()
    session.trust_env = False
    trace_id = uuid.uuid4().hex
    response = session.request(
        method, f"{stack.function_url}{path}",
        data={"grant_type": "client_credentials"} if method == "POST" else None,
        headers={**verified_headers(), "traceparent": f"00-{trace_id}-00f067aa0ba902b7-01", **(headers or {})},
        timeout=10,
    )
    return response, stack.audit_entry(trace_id)


def assert_refused_as_bypass(response, audit) -> None:
    assert response.status_code == 403
    assert response.json() == {"error": "access_denied", "error_description": BYPASS_DESCRIPTION}
    assert "id_token" not in response.text and "access_token" not in response.text
    labels = audit["logging.googleapis.com/labels"]
    assert labels["outcome"] == "refused" and labels["reason"] == "not_through_load_balancer"
    assert labels["status"] == "403" and labels["error"] == "access_denied"
    assert "jti" not in labels and "client_id" not in labels


@pytest.mark.parametrize("secret", [None, "wrong"], ids=["no-secret", "wrong-secret"])
def test_a_direct_call_with_forged_certificate_headers_gets_no_token(stack, secret):
    headers = {} if secret is None else {SECRET_HEADER: secrets.token_hex(32)}
    response, audit = direct(stack, headers=headers)
    assert_refused_as_bypass(response, audit)
    # What was forged is on the line, for whoever investigates.
    forged_hash = verified_headers()["x-client-cert-hash"]
    assert audit["logging.googleapis.com/labels"]["header/x-client-cert-hash"] == forged_hash
    # The same request through the gateway, with a real certificate, is issued a token.
    through, issued = stack.post_token("client", headers={name: value for name, value in verified_headers().items()
                                                          if value})
    assert through.status_code == 200 and "id_token" in through.json()
    assert issued["logging.googleapis.com/labels"]["outcome"] == "issued"


def test_the_same_headers_with_the_gateways_secret_are_trusted(stack):
    """What the check adds: the function trusts these headers only when the load balancer vouches for them."""
    response, audit = direct(stack, headers=stack.proxy_secret_headers)
    assert response.status_code == 200 and "id_token" in response.json()
    assert audit["logging.googleapis.com/labels"]["client_id"] == verified_headers()["x-client-cert-hash"]


@pytest.mark.parametrize(("method", "path"), [("GET", "/.well-known/openid-configuration"), ("GET", "/jwks"),
                                              ("GET", "/"), ("GET", "/nothing"), ("HEAD", "/jwks")])
def test_every_path_needs_the_secret(stack, method, path):
    response, audit = direct(stack, method, path)
    assert response.status_code == 403
    if method != "HEAD":
        assert response.json()["error"] == "access_denied"
    assert audit["logging.googleapis.com/labels"]["reason"] == "not_through_load_balancer"
    # Google's STS fetches discovery through the load balancer, which adds the secret.
    through = stack.session(client=None).request(method, f"{stack.url}{path}", allow_redirects=False, timeout=10)
    assert through.status_code in (200, 307, 404)


def test_the_gateway_overwrites_a_client_sent_secret_header(stack):
    response, audit = stack.post_token("client", headers={SECRET_HEADER: "x" * 64})
    assert response.status_code == 200 and "id_token" in response.json()
    response, audit = stack.post_token(None, headers={SECRET_HEADER: "x" * 64})
    assert audit["logging.googleapis.com/labels"]["reason"] == "no_client_certificate"


def test_rotation_accepts_both_values(tmp_path_factory):
    """deploy.sh's rotation: the secret holds NEW and OLD; the load balancer still sends OLD, then NEW."""
    new, old = secrets.token_hex(32), secrets.token_hex(32)
    stack, function, servers, log = launch(tmp_path_factory, "rotation", {"PROXY_SECRETS": f"{new}\n{old}"})
    # Before the switch, the load balancer still sends the old value.
    stale = start_gateway(stack.pki["ca"].parent, 0, stack.function_url, {"PROXY_SECRETS": old})
    servers.append(stale)
    stack.gateway_urls["stale"] = f"https://127.0.0.1:{stale.server_address[1]}"
    try:
        assert stack.proxy_secret_headers == {SECRET_HEADER: new}  # the gateways send the first value
        for gateway in ("each", "stale"):
            response, _ = stack.post_token("client", gateway=gateway)
            assert response.status_code == 200, (gateway, response.text)
        for value in (new, old):
            response, _ = direct(stack, headers={SECRET_HEADER: value})
            assert response.status_code == 200
        assert_refused_as_bypass(*direct(stack, headers={SECRET_HEADER: secrets.token_hex(32)}))
        assert_refused_as_bypass(*direct(stack, headers={SECRET_HEADER: f"{new},{old}"}))
    finally:
        stop(function, servers, log)
    written = stack.audit_file.read_text()
    assert new not in written and old not in written


@pytest.mark.parametrize("name", ["stack", "iam_stack"])
def test_no_secret_in_the_function_output(request, name):
    """Everything the function wrote (audit lines of both handlers, uvicorn, gunicorn) after accepted,
    refused and wrong-secret requests on every path holds neither the secret nor a wrong one sent."""
    stack = request.getfixturevalue(name)
    wrong = secrets.token_hex(32)
    accepted = stack.post_token("client")[0]
    assert accepted.status_code == 200
    assert stack.post_token(None)[0].status_code == 401
    for method, path in (("POST", "/token"), ("GET", "/.well-known/openid-configuration"), ("GET", "/nothing")):
        assert direct(stack, method, path, headers={SECRET_HEADER: wrong})[0].status_code == 403
    assert direct(stack, headers=stack.proxy_secret_headers)[0].status_code == 200
    written = stack.audit_file.read_text()
    [secret] = stack.proxy_secret_headers.values()
    for value in (secret, wrong):
        assert value not in written and value[:16] not in written
    assert SECRET_HEADER.lower() not in written.lower()
