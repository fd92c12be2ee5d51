"""Each flow's subjects live in their own namespace, and every legal source subject gets one within
the 127 bytes of google.subject that Google (the emulator) enforces."""

from __future__ import annotations

import base64
import hashlib

import jwt
import pytest

from devtools.local import WORKLOAD_SERVICE_ACCOUNT
from tests.e2e.conftest import JWT_BEARER, LONG_NAMESPACE, SCOPE


@pytest.mark.parametrize("client", ["uri-secret", "uri-jwt"])
def test_a_certificate_cannot_claim_the_subject_of_a_secret_or_assertion_client(uri_stack, client):
    response, audit = uri_stack.post_token(client)
    assert response.status_code == 401 and response.json()["error"] == "invalid_client", response.text
    assert "another flow" in response.json()["error_description"]
    assert "id_token" not in response.json()
    assert audit["logging.googleapis.com/labels"]["reason"] == "client_id_reserved"


def test_a_certificate_named_by_an_ordinary_uri_san_keeps_it_as_subject(uri_stack):
    response, _ = uri_stack.post_token("uri-plain")
    assert response.status_code == 200, response.text
    claims = jwt.decode(response.json()["id_token"], options={"verify_signature": False})
    assert claims["sub"] == claims["client_id"] == "https://inventory.example/device/7"
    assert claims["assertion"] == {"issuer": "", "iss": "", "sub": ""}  # every flow's tokens carry the keys


def test_the_longest_kubernetes_subject_is_exchanged_at_google_under_its_digest(policy_stack, issuer):
    subject = f"system:serviceaccount:{LONG_NAMESPACE}:{'a' * 63}"  # 149 bytes
    response, audit = policy_stack.post_token(None, data={
        "grant_type": JWT_BEARER, "assertion": issuer.mint(audience=policy_stack.audience, subject=subject),
        "scope": SCOPE, "service_account": WORKLOAD_SERVICE_ACCOUNT})
    assert response.status_code == 200, response.text
    claims = jwt.decode(response.json()["id_token"], options={"verify_signature": False})
    digest = base64.urlsafe_b64encode(hashlib.sha256(subject.encode()).digest()).decode().rstrip("=")
    assert claims["sub"] == f"jwt-sha256:prod-cluster:{digest}"
    assert claims["assertion"]["sub"] == subject  # for attribute mappings that need it whole
    # Google accepted the subject (the emulator refuses a google.subject over 127 bytes) and impersonated.
    assert policy_stack.emulator.grant_for(f"Bearer {response.json()['access_token']}").members == {
        f"serviceAccount:{WORKLOAD_SERVICE_ACCOUNT}"}
    assert audit["logging.googleapis.com/labels"]["policy_rule"] == "long-names"


@pytest.fixture
def documented_mapping(policy_stack):
    """The provider's attribute mapping as the README documents it for every flow."""
    provider = next(iter(policy_stack.emulator.providers.values()))
    saved = provider.attribute_mapping
    provider.attribute_mapping = {"google.subject": "assertion.sub",
                                  "attribute.source_issuer": "assertion.assertion.issuer",
                                  "attribute.source_subject": "assertion.assertion.sub"}
    yield f"iam.googleapis.com/{provider.pool_name}"
    provider.attribute_mapping = saved


def test_the_documented_attribute_mapping_evaluates_for_every_flow(policy_stack, issuer, documented_mapping):
    subject = f"system:serviceaccount:{LONG_NAMESPACE}:reader"
    assertion = {"grant_type": JWT_BEARER, "assertion": issuer.mint(audience=policy_stack.audience, subject=subject),
                 "scope": SCOPE}
    for client, data in ((None, assertion), ("client", {"grant_type": "client_credentials", "scope": SCOPE})):
        response, _ = policy_stack.post_token(client, data=data)
        assert response.status_code == 200, response.text  # the federated token: STS evaluated the mapping
        sub = jwt.decode(response.json()["id_token"], options={"verify_signature": False})["sub"]
        members = policy_stack.emulator.grant_for(f"Bearer {response.json()['access_token']}").members
        assert f"principal://{documented_mapping}/subject/{sub}" in members
        if client is None:
            assert f"principalSet://{documented_mapping}/attribute.source_subject/{subject}" in members
            assert f"principalSet://{documented_mapping}/attribute.source_issuer/prod-cluster" in members
