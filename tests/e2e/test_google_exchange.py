"""End to end through Google's contract: STS exchange, impersonation, service-account ID tokens.

Google is the local emulator (devtools/google_emulator.py), which validates like
workload identity federation: it fetches our discovery document and keys over
HTTPS and refuses what Google refuses.
"""

from __future__ import annotations

import json

import jwt
import pytest
import requests

from devtools.google_emulator import WORKLOAD_IDENTITY_USER
from devtools.local import PROJECT_NUMBER, RUNTIME_SERVICE_ACCOUNT, WORKLOAD_SERVICE_ACCOUNT
from tests.e2e.conftest import PRODUCTION_SETTINGS, launch, stop

CLOUD_PLATFORM = "https://www.googleapis.com/auth/cloud-platform"
POOL = f"projects/{PROJECT_NUMBER}/locations/global/workloadIdentityPools/local-pool"


def grant(stack, token: str):
    return stack.emulator.grant_for(f"Bearer {token}")


def client_principal(stack, client: str = "client") -> str:
    response, _ = stack.post_token(client)
    client_id = jwt.decode(response.json()["id_token"], options={"verify_signature": False})["client_id"]
    return f"principal://iam.googleapis.com/{POOL}/subject/{client_id}"


def test_scope_returns_an_sts_token_for_the_clients_principal(stack):
    response, audit = stack.post_token(data={"grant_type": "client_credentials", "scope": CLOUD_PLATFORM})
    assert response.status_code == 200, response.text
    body = response.json()
    assert set(body) == {"id_token", "access_token", "issued_token_type", "token_type", "expires_in", "scope"}
    assert body["issued_token_type"] == "urn:ietf:params:oauth:token-type:access_token"
    assert body["token_type"] == "Bearer" and body["scope"] == CLOUD_PLATFORM
    assert 3500 < body["expires_in"] <= 3600
    federated = grant(stack, body["access_token"])
    assert client_principal(stack) in federated.members
    labels = audit["logging.googleapis.com/labels"]
    assert labels["exchange"] == "sts" and labels["principal"] == client_principal(stack)
    assert body["access_token"] not in stack.audit_file.read_text()


def test_scope_and_service_account_return_the_service_accounts_token(stack):
    scopes = f"{CLOUD_PLATFORM} https://www.googleapis.com/auth/devstorage.read_only"
    response, audit = stack.post_token(data={"grant_type": "client_credentials", "scope": scopes,
                                             "service_account": WORKLOAD_SERVICE_ACCOUNT})
    assert response.status_code == 200, response.text
    body = response.json()
    token = grant(stack, body["access_token"])
    assert token.members == {f"serviceAccount:{WORKLOAD_SERVICE_ACCOUNT}"}
    # The scopes reach IAM as a list, not as one string with spaces (the predecessor's flaw).
    assert token.scopes == set(scopes.split())
    assert body["scope"] == scopes and 3590 <= body["expires_in"] <= 3600
    labels = audit["logging.googleapis.com/labels"]
    assert labels["exchange"] == "impersonation" and labels["service_account"] == WORKLOAD_SERVICE_ACCOUNT


def test_service_account_and_audience_return_a_google_signed_id_token(stack):
    audience = "https://hello-abc123-uc.a.run.app"
    response, audit = stack.post_token(data={"grant_type": "client_credentials", "audience": audience,
                                             "service_account": WORKLOAD_SERVICE_ACCOUNT})
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["issued_token_type"] == "urn:ietf:params:oauth:token-type:id_token"
    certs = requests.get(f"{stack.emulator_url}/oauth2/v3/certs", timeout=5).json()
    key = jwt.PyJWKSet.from_dict(certs)[jwt.get_unverified_header(body["access_token"])["kid"]].key
    claims = jwt.decode(body["access_token"], key, algorithms=["RS256"], audience=audience,
                        issuer="https://accounts.google.com")
    assert claims["email"] == WORKLOAD_SERVICE_ACCOUNT
    assert audit["logging.googleapis.com/labels"]["exchange"] == "service_account_id_token"


def test_unbound_service_account_is_refused_with_what_to_check(stack):
    response, audit = stack.post_token(data={
        "grant_type": "client_credentials", "scope": CLOUD_PLATFORM,
        "service_account": "stranger@local-project.iam.gserviceaccount.com"})
    assert response.status_code == 403
    body = response.json()
    assert body["error"] == "access_denied"
    assert "roles/iam.workloadIdentityUser" in body["error_description"]
    assert client_principal(stack) in body["error_description"]
    assert "access_token" not in body and "id_token" not in body
    labels = audit["logging.googleapis.com/labels"]
    assert labels["reason"] == "impersonation_refused" and labels["upstream_status"] == "403"
    assert "IAM_PERMISSION_DENIED" in audit["upstream_response"]


def test_principal_not_in_the_binding_is_refused(stack):
    restricted = "restricted@local-project.iam.gserviceaccount.com"
    stack.emulator.bindings[restricted] = [(WORKLOAD_IDENTITY_USER, f"principal://iam.googleapis.com/{POOL}/subject/x")]
    response, audit = stack.post_token(data={"grant_type": "client_credentials", "scope": CLOUD_PLATFORM,
                                             "service_account": restricted})
    assert response.status_code == 403 and response.json()["error"] == "access_denied"
    assert audit["logging.googleapis.com/labels"]["reason"] == "impersonation_refused"


def test_unknown_or_disabled_provider_is_refused(stack):
    provider = next(iter(stack.emulator.providers.values()))
    provider.disabled = True
    try:
        response, audit = stack.post_token(data={"grant_type": "client_credentials", "scope": CLOUD_PLATFORM})
    finally:
        provider.disabled = False
    assert response.status_code == 403
    assert "invalid_target" in response.json()["error_description"]
    labels = audit["logging.googleapis.com/labels"]
    assert labels["reason"] == "sts_refused" and labels["upstream_status"] == "400"


@pytest.mark.parametrize(("skew", "message"), [(3600, "expired"), (-3600, "in the future")])
def test_token_google_considers_expired_or_not_yet_issued_is_refused(stack, skew, message):
    stack.emulator.clock_skew = skew
    try:
        response, audit = stack.post_token(data={"grant_type": "client_credentials", "scope": CLOUD_PLATFORM})
    finally:
        stack.emulator.clock_skew = 0
    assert response.status_code == 403 and response.json()["error"] == "access_denied"
    assert message in response.json()["error_description"]
    assert audit["logging.googleapis.com/labels"]["reason"] == "sts_refused"


def test_transient_failures_are_retried(stack):
    stack.emulator.inject("sts", 503, 429)
    response, _ = stack.post_token(data={"grant_type": "client_credentials", "scope": CLOUD_PLATFORM})
    assert response.status_code == 200, response.text


def test_google_unavailable_is_503_with_retry_after(stack):
    stack.emulator.inject("sts", *([503] * 100))
    try:
        response, audit = stack.post_token(data={"grant_type": "client_credentials", "scope": CLOUD_PLATFORM})
    finally:
        stack.emulator.next_fault("sts")
        stack.emulator._faults.clear()
    assert response.status_code == 503
    assert response.json()["error"] == "temporarily_unavailable"
    assert int(response.headers["Retry-After"]) >= 1
    assert audit["logging.googleapis.com/labels"]["reason"] == "upstream_unavailable"


@pytest.mark.parametrize(
    ("data", "fragment"),
    [
        ({"service_account": WORKLOAD_SERVICE_ACCOUNT}, "needs scope"),
        ({"audience": "https://x"}, "service_account"),
        ({"scope": CLOUD_PLATFORM, "audience": "https://x", "service_account": WORKLOAD_SERVICE_ACCOUNT}, "without"),
        ({"scope": CLOUD_PLATFORM, "service_account": "../../evil"}, "not a service account"),
        ({"scope": f"{CLOUD_PLATFORM}\"x"}, "scope"),
        ({"scope": CLOUD_PLATFORM, "format": "external_credential"}, "client library"),
    ],
)
def test_inconsistent_exchange_parameters(stack, data, fragment):
    response, audit = stack.post_token(data={"grant_type": "client_credentials", **data})
    assert response.status_code == 400
    document = response.json()
    message = document.get("error_description") or document.get("message")
    assert fragment in message
    assert audit["logging.googleapis.com/labels"]["outcome"] == "refused"


def test_warm_requests_open_no_new_connection_to_google(stack):
    data = {"grant_type": "client_credentials", "scope": CLOUD_PLATFORM, "service_account": WORKLOAD_SERVICE_ACCOUNT}
    for _ in range(3):  # warm-up: the pool opens what the function's threads need
        assert stack.post_token(data=data)[0].status_code == 200
    before = stack.emulator.connections
    requests_before = stack.emulator.requests["sts"] + stack.emulator.requests["iam"]
    for _ in range(10):
        assert stack.post_token(data=data)[0].status_code == 200
    assert stack.emulator.requests["sts"] + stack.emulator.requests["iam"] - requests_before == 20
    assert stack.emulator.connections == before


def test_iam_signer_token_is_verified_by_google_keys_and_accepted_by_sts(iam_stack):
    response, audit = iam_stack.post_token(data={"grant_type": "client_credentials", "scope": CLOUD_PLATFORM})
    assert response.status_code == 200, response.text
    session = iam_stack.session(client=None)
    discovery = session.get(f"{iam_stack.url}/.well-known/openid-configuration", timeout=5).json()
    assert discovery["jwks_uri"] == (f"{iam_stack.emulator_url}/service_accounts/v1/metadata/jwk/"
                                     f"{RUNTIME_SERVICE_ACCOUNT}")
    assert session.get(f"{iam_stack.url}/jwks", timeout=5).status_code == 404
    jwks = jwt.PyJWKSet.from_dict(requests.get(discovery["jwks_uri"], timeout=5).json())
    token = response.json()["id_token"]
    claims = jwt.decode(token, jwks[jwt.get_unverified_header(token)["kid"]].key, algorithms=["RS256"],
                        audience=f"https://iam.googleapis.com/{POOL}/providers/token-service",
                        issuer=discovery["issuer"])
    assert claims["client"]["x5_dnssan"] == "client.local.test"
    assert audit["logging.googleapis.com/labels"]["exchange"] == "sts"


def test_iam_signer_outside_cloud_functions_finds_application_default_credentials(tmp_path_factory):
    """Without K_SERVICE (a local run with TOKEN_SIGNER=iam), google.auth.default() finds the credentials:
    here the emulated metadata server, which it probes first."""
    settings = {name: value for name, value in PRODUCTION_SETTINGS.items() if name != "K_SERVICE"}
    stack, function, servers, log = launch(tmp_path_factory, "iam-adc", settings)
    try:
        response, audit = stack.post_token()
        assert response.status_code == 200, response.text
        assert audit["logging.googleapis.com/labels"]["outcome"] == "issued"
        assert jwt.get_unverified_header(response.json()["id_token"])["kid"]
        assert stack.emulator.requests["iam"] >= 1
    finally:
        stop(function, servers, log)


def test_iam_signer_refused_is_a_500_that_names_the_fix_in_the_audit_line_only(iam_stack):
    saved = iam_stack.emulator.bindings.pop(RUNTIME_SERVICE_ACCOUNT)
    try:
        response, audit = iam_stack.post_token()
    finally:
        iam_stack.emulator.bindings[RUNTIME_SERVICE_ACCOUNT] = saved
    assert response.status_code == 500 and response.json()["error"] == "server_error"
    assert "serviceAccountTokenCreator" not in response.text
    labels = audit["logging.googleapis.com/labels"]
    assert labels["reason"] == "signing_failed"
    assert "iam.serviceAccounts.signJwt on itself" in labels["signing_error"]
    assert "id_token" not in json.dumps(response.json())
