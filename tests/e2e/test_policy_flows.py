"""End to end with a policy: mTLS, jwt-bearer (a Kubernetes-shaped assertion) and client secrets,
through the gateway and the real functions-framework, with Google emulated."""

from __future__ import annotations

import base64

import jwt
import pytest

from devtools.local import WORKLOAD_SERVICE_ACCOUNT
from devtools.oidc_issuer import LocalIssuer
from devtools.pki import mint_client
from tests.e2e.conftest import ADMIN_URI, JWT_BEARER, SCOPE
from tests.e2e.conftest import SCANNER_SECRET as SECRET


def claims_of(response) -> dict:
    return jwt.decode(response.json()["id_token"], options={"verify_signature": False})


def test_discovery_lists_exactly_the_enabled_flows(policy_stack, stack):
    session = policy_stack.session(client=None)
    document = session.get(f"{policy_stack.url}/.well-known/openid-configuration", timeout=5).json()
    assert document["grant_types_supported"] == ["client_credentials", JWT_BEARER]
    assert sorted(document["token_endpoint_auth_methods_supported"]) == [
        "client_secret_basic", "client_secret_post", "tls_client_auth"]
    default = stack.session(client=None).get(f"{stack.url}/.well-known/openid-configuration", timeout=5).json()
    assert default["grant_types_supported"] == ["client_credentials"]
    assert default["token_endpoint_auth_methods_supported"] == ["tls_client_auth"]


def test_certificate_matching_a_rule_gets_its_claims(policy_stack):
    response, audit = policy_stack.post_token("client")
    assert response.status_code == 200, response.text
    assert claims_of(response)["team"] == "demo"
    assert audit["logging.googleapis.com/labels"]["policy_rule"] == "demo-workloads"


def test_certificate_no_rule_admits_is_denied(policy_stack):
    response, audit = policy_stack.post_token("bare")
    assert response.status_code == 403 and response.json()["error"] == "unauthorized_client"
    labels = audit["logging.googleapis.com/labels"]
    assert labels["reason"] == "policy_denied" and labels["policy_rule"] == ""
    assert "id_token" not in response.json()


def test_rule_limits_what_the_client_may_ask_for(policy_stack):
    response, audit = policy_stack.post_token(data={"grant_type": "client_credentials", "scope": SCOPE,
                                                    "service_account": WORKLOAD_SERVICE_ACCOUNT})
    assert response.status_code == 403 and response.json()["error"] == "access_denied"
    assert "demo-workloads" in response.json()["error_description"]
    assert audit["logging.googleapis.com/labels"]["policy_rule"] == "demo-workloads"


@pytest.fixture(scope="module")
def comma_certificates(policy_stack):
    """Certificates from the dev CA: one whose only URI SAN is the admin rule's, one whose only URI SAN
    holds a comma followed by it, one whose only DNS SAN holds a comma."""
    for name, options in {"admin-console": dict(uris=[ADMIN_URI]),
                          "comma-uri": dict(uris=[f"https://a.example/x,{ADMIN_URI}"]),
                          "comma-dns": dict(dns=["a.example,admin.example"])}.items():
        issued = mint_client(policy_stack.local_dir, name, **options)
        policy_stack.certs[name] = (str(issued.certificate), str(issued.key))
    return policy_stack


IMPERSONATE = {"grant_type": "client_credentials", "scope": SCOPE, "service_account": WORKLOAD_SERVICE_ACCOUNT}


@pytest.mark.parametrize("gateway", ["each", "joined"])
def test_a_uri_san_containing_a_comma_is_one_san_and_matches_no_rule_for_part_of_it(comma_certificates, gateway):
    admin, audit = comma_certificates.post_token("admin-console", data=IMPERSONATE, gateway=gateway)
    assert admin.status_code == 200 and admin.json()["access_token"], admin.text
    assert audit["logging.googleapis.com/labels"]["policy_rule"] == "admin-console"

    response, audit = comma_certificates.post_token("comma-uri", data=IMPERSONATE, gateway=gateway)
    assert response.status_code == 403 and response.json()["error"] == "unauthorized_client", response.text
    assert "access_token" not in response.json()
    labels = audit["logging.googleapis.com/labels"]
    assert labels["reason"] == "policy_denied" and labels["policy_rule"] == ""


@pytest.mark.parametrize("gateway", ["each", "joined"])
def test_a_dns_san_containing_a_comma_is_refused_as_malformed(comma_certificates, gateway):
    response, audit = comma_certificates.post_token("comma-dns", gateway=gateway)
    assert response.status_code == 401 and response.json()["error"] == "invalid_client", response.text
    assert "X-Client-Cert-DNSName-SANs" in response.json()["error_description"]
    assert "DNS SAN containing a comma" in response.json()["error_description"]
    assert audit["logging.googleapis.com/labels"]["reason"] == "malformed_certificate_header"


def test_kubernetes_assertion_without_a_client_certificate(policy_stack, issuer):
    assertion = issuer.mint(audience=policy_stack.audience)
    response, audit = policy_stack.post_token(None, data={
        "grant_type": JWT_BEARER, "assertion": assertion, "scope": SCOPE, "service_account": WORKLOAD_SERVICE_ACCOUNT})
    assert response.status_code == 200, response.text
    claims = claims_of(response)
    assert claims["sub"] == "jwt:prod-cluster:system:serviceaccount:payments:api"
    assert claims["amr"] == ["jwt-bearer"] and claims["assertion"]["issuer"] == "prod-cluster"
    assert policy_stack.emulator.grant_for(f"Bearer {response.json()['access_token']}").members == {
        f"serviceAccount:{WORKLOAD_SERVICE_ACCOUNT}"}
    labels = audit["logging.googleapis.com/labels"]
    assert labels["policy_rule"] == "payments" and labels["assertion_issuer"] == "prod-cluster"
    # The same assertion again: single-use by default.
    replay, audit = policy_stack.post_token(None, data={"grant_type": JWT_BEARER, "assertion": assertion})
    assert replay.status_code == 400 and replay.json()["error"] == "invalid_grant"
    assert audit["logging.googleapis.com/labels"]["reason"] == "assertion_replayed"


@pytest.mark.parametrize(
    ("make", "status", "error"),
    [
        (lambda issuer, aud: issuer.mint(audience="https://someone-else"), 400, "invalid_grant"),
        (lambda issuer, aud: issuer.mint(audience=aud, subject="system:serviceaccount:billing:x"), 403,
         "unauthorized_client"),
        (lambda issuer, aud: LocalIssuer().start().mint(audience=aud), 400, "invalid_grant"),
        (lambda issuer, aud: "", 400, "invalid_grant"),
    ],
    ids=["wrong-audience", "no-rule", "unknown-issuer", "missing"],
)
def test_refused_assertions_end_to_end(policy_stack, issuer, make, status, error):
    response, audit = policy_stack.post_token(None, data={"grant_type": JWT_BEARER,
                                                          "assertion": make(issuer, policy_stack.audience)})
    assert response.status_code == status and response.json()["error"] == error
    assert audit["logging.googleapis.com/labels"]["outcome"] == "refused"


@pytest.mark.parametrize("method", ["basic", "post"])
def test_client_secret(policy_stack, method):
    data = {"grant_type": "client_credentials"}
    headers = {}
    if method == "basic":
        headers["Authorization"] = "Basic " + base64.b64encode(f"legacy-scanner:{SECRET}".encode()).decode()
    else:
        data.update(client_id="legacy-scanner", client_secret=SECRET)
    response, audit = policy_stack.post_token(None, data=data, headers=headers)
    assert response.status_code == 200, response.text
    assert claims_of(response)["sub"] == "secret:legacy-scanner"
    assert audit["logging.googleapis.com/labels"]["auth_method"] == f"client_secret_{method}"
    assert SECRET not in policy_stack.audit_file.read_text()


def test_wrong_client_secret(policy_stack):
    guess = "guessed-secret-0123456789"
    headers = {"Authorization": "Basic " + base64.b64encode(f"legacy-scanner:{guess}".encode()).decode(),
               "X-Forwarded-For": "198.51.100.66"}  # the caller's own claim of its address: not believed
    response, audit = policy_stack.post_token(None, data={"grant_type": "client_credentials"}, headers=headers)
    assert response.status_code == 401 and response.json()["error"] == "invalid_client"
    assert response.headers["WWW-Authenticate"].startswith("Basic")
    labels = audit["logging.googleapis.com/labels"]
    assert labels["reason"] == "invalid_client_secret" and labels["claimed_client_id"] == "legacy-scanner"
    assert audit["httpRequest"]["remoteIp"] == "127.0.0.1"  # the address the gateway (load balancer) saw
    assert guess not in policy_stack.audit_file.read_text()
