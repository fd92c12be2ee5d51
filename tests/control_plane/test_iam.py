"""IAM in the control-plane fake: service accounts and their policies, custom roles, workload identity.

Happy paths run the real gcloud and assert on the fake's state; refusals go
straight over HTTP, which is quicker and shows the exact envelope Google sends.
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Callable
from typing import Any

import pytest

from devtools.control_plane.server import ControlPlane, ControlPlaneServer
from tests.control_plane import rest
from tests.control_plane.conftest import requires_gcloud

Gcloud = Callable[..., subprocess.CompletedProcess]
SA = "token-service@my-project.iam.gserviceaccount.com"
POOLS = "/v1/projects/my-project/locations/global/workloadIdentityPools"
POOL_NAME = "projects/123456789012/locations/global/workloadIdentityPools/token-clients"
PROVIDER_NAME = f"{POOL_NAME}/providers/token-lb"
OIDC = {"attributeMapping": {"google.subject": "assertion.client_id"}, "oidc": {"issuerUri": "https://t.example"}}


def call(server: ControlPlaneServer, method: str, path: str, body: Any = None) -> tuple[int, dict[str, Any]]:
    """One request to the fake's IAM API, as gcloud would send it."""
    return rest.call(server, method, f"iam{path}", body)





def refused(server: ControlPlaneServer, method: str, path: str, body: Any, code: int, status: str) -> str:
    answer_code, answer = call(server, method, path, body)
    assert (answer_code, answer["error"]["code"], answer["error"]["status"]) == (code, code, status), answer
    return answer["error"]["message"]


def ok(gcloud: Gcloud, *arguments: str) -> str:
    result = gcloud(*arguments)
    assert result.returncode == 0, result.stderr
    return result.stdout


def new_account(server: ControlPlaneServer, account_id: str = "token-service") -> None:
    assert call(server, "POST", "/v1/projects/my-project/serviceAccounts", {"accountId": account_id})[0] == 200


def new_pool(server: ControlPlaneServer, provider: bool = False) -> None:
    assert call(server, "POST", f"{POOLS}?workloadIdentityPoolId=token-clients", {})[0] == 200
    if provider:
        path = f"{POOLS}/token-clients/providers?workloadIdentityPoolProviderId=token-lb"
        assert call(server, "POST", path, OIDC)[0] == 200


# -- service accounts ---------------------------------------------------------------------------------------------


@requires_gcloud
def test_service_account_lifecycle_through_gcloud(enabled: ControlPlane, gcloud: Gcloud) -> None:
    iam = enabled.api("iam")
    ok(gcloud, "iam", "service-accounts", "create", "token-service", "--display-name=Token Service")
    assert iam.service_accounts[SA]["displayName"] == "Token Service"
    assert iam.service_account_exists(SA)
    described = json.loads(ok(gcloud, "iam", "service-accounts", "describe", SA, "--format=json"))
    assert described["name"] == f"projects/my-project/serviceAccounts/{SA}"
    listed = ok(gcloud, "iam", "service-accounts", "list", f"--filter=email={SA}", "--format=value(email)")
    assert listed.split() == [SA]

    ok(gcloud, "iam", "service-accounts", "add-iam-policy-binding", SA, f"--member=serviceAccount:{SA}",
       "--role=roles/iam.serviceAccountTokenCreator", "--condition=None")
    assert iam.policies.members(f"projects/my-project/serviceAccounts/{SA}", "roles/iam.serviceAccountTokenCreator") \
        == {f"serviceAccount:{SA}"}
    policy = json.loads(ok(gcloud, "iam", "service-accounts", "get-iam-policy", SA, "--format=json"))
    assert policy["bindings"] == iam.account_policy(SA)["bindings"]
    # gcloud sends the etag back url-safe encoded; the read-modify-write must still succeed
    ok(gcloud, "iam", "service-accounts", "remove-iam-policy-binding", SA, f"--member=serviceAccount:{SA}",
       "--role=roles/iam.serviceAccountTokenCreator")
    assert iam.account_policy(SA)["bindings"] == []

    ok(gcloud, "iam", "service-accounts", "delete", SA)
    assert SA not in iam.service_accounts and not iam.service_account_exists(SA)
    assert [event.action for event in enabled.journal] == ["create", "setIamPolicy", "setIamPolicy", "delete"]


def test_service_account_refusals(enabled: ControlPlane, server: ControlPlaneServer) -> None:
    accounts = "/v1/projects/my-project/serviceAccounts"
    assert "length between 6 and 30" in refused(server, "POST", accounts, {"accountId": "tok"}, 400,
                                                 "INVALID_ARGUMENT")
    assert "does not match" in refused(server, "POST", accounts, {"accountId": "token_service"}, 400,
                                       "INVALID_ARGUMENT")
    refused(server, "POST", accounts, {}, 400, "INVALID_ARGUMENT")
    new_account(server)
    assert "already exists within project projects/my-project" in refused(
        server, "POST", accounts, {"accountId": "token-service"}, 409, "ALREADY_EXISTS")
    refused(server, "POST", "/v1/projects/other-project/serviceAccounts", {"accountId": "abcdefg"}, 403,
            "PERMISSION_DENIED")

    policy_path = f"/v1/projects/-/serviceAccounts/{SA}:setIamPolicy"

    def bind(role: str, member: str) -> dict[str, Any]:
        return {"policy": {"bindings": [{"role": role, "members": [member]}]}}

    assert "does not exist" in refused(server, "POST", policy_path, bind("roles/iam.nope", f"serviceAccount:{SA}"),
                                       400, "INVALID_ARGUMENT")
    assert "not supported for this resource" in refused(
        server, "POST", policy_path, bind("roles/run.invoker", f"serviceAccount:{SA}"), 400, "INVALID_ARGUMENT")
    missing = "serviceAccount:ghost-account@my-project.iam.gserviceaccount.com"
    assert "does not exist" in refused(server, "POST", policy_path,
                                       bind("roles/iam.serviceAccountTokenCreator", missing), 400, "INVALID_ARGUMENT")
    assert enabled.api("iam").account_policy(SA)["bindings"] == []
    assert [event.action for event in enabled.journal] == ["create"]


def test_missing_service_account_is_404_and_its_policy_403(enabled: ControlPlane, server: ControlPlaneServer) -> None:
    ghost = "/v1/projects/-/serviceAccounts/ghost-account@my-project.iam.gserviceaccount.com"
    assert refused(server, "GET", ghost, None, 404, "NOT_FOUND") == "Unknown service account"
    refused(server, "DELETE", ghost, None, 404, "NOT_FOUND")
    refused(server, "POST", ghost + ":getIamPolicy", {}, 403, "PERMISSION_DENIED")


def test_iam_answers_403_while_its_api_is_disabled(plane: ControlPlane, server: ControlPlaneServer) -> None:
    message = refused(server, "GET", "/v1/projects/my-project/serviceAccounts", None, 403, "PERMISSION_DENIED")
    assert "iam.googleapis.com" in message


# -- custom roles -------------------------------------------------------------------------------------------------


@requires_gcloud
def test_custom_role_lifecycle_through_gcloud(enabled: ControlPlane, gcloud: Gcloud) -> None:
    iam = enabled.api("iam")
    name = "projects/my-project/roles/tokenSigner"
    ok(gcloud, "iam", "roles", "create", "tokenSigner", "--project=my-project", "--title=Signer",
       "--description=Signs JWTs", "--permissions=iam.serviceAccounts.signJwt", "--stage=GA")
    assert iam.roles[name]["includedPermissions"] == ["iam.serviceAccounts.signJwt"]
    assert iam.role_exists(name)
    ok(gcloud, "iam", "roles", "update", "tokenSigner", "--project=my-project",
       "--permissions=iam.serviceAccounts.signJwt,iam.serviceAccounts.getOpenIdToken")
    described = json.loads(ok(gcloud, "iam", "roles", "describe", "tokenSigner", "--project=my-project",
                              "--format=json"))
    assert described["includedPermissions"] == iam.roles[name]["includedPermissions"] == [
        "iam.serviceAccounts.signJwt", "iam.serviceAccounts.getOpenIdToken"]

    ok(gcloud, "iam", "roles", "delete", "tokenSigner", "--project=my-project")
    assert iam.roles[name]["deleted"] is True and not iam.role_exists(name)
    listed = ok(gcloud, "iam", "roles", "list", "--project=my-project", "--show-deleted",
                "--format=value(name,deleted)")
    assert listed.split() == [name, "True"]
    recreate = gcloud("iam", "roles", "create", "tokenSigner", "--project=my-project", "--title=Signer",
                      "--permissions=iam.serviceAccounts.signJwt")
    assert recreate.returncode == 1 and "marked for deletion" in recreate.stderr
    ok(gcloud, "iam", "roles", "undelete", "tokenSigner", "--project=my-project")
    assert iam.role_exists(name)
    assert [event.action for event in enabled.journal] == ["create", "update", "delete", "undelete"]


def test_custom_role_refusals(enabled: ControlPlane, server: ControlPlaneServer) -> None:
    roles = "/v1/projects/my-project/roles"

    def create(role_id: str, **role: Any) -> dict[str, Any]:
        return {"roleId": role_id, "role": {"title": "t", **role}}

    refused(server, "POST", roles, create("a-b"), 400, "INVALID_ARGUMENT")
    assert refused(server, "POST", roles, create("signer", includedPermissions=["iam.serviceAccounts.fly"]), 400,
                   "INVALID_ARGUMENT") == "Permission iam.serviceAccounts.fly is not valid."
    refused(server, "POST", roles, create("signer", stage="BETTER"), 400, "INVALID_ARGUMENT")
    assert call(server, "POST", roles, create("signer", includedPermissions=["iam.serviceAccounts.signJwt"]))[0] == 200
    assert "already exists" in refused(server, "POST", roles, create("signer"), 409, "ALREADY_EXISTS")
    role = enabled.api("iam").roles["projects/my-project/roles/signer"]
    assert "stage" not in call(server, "GET", f"{roles}/signer")[1]  # ALPHA is the enum's zero: left out
    # a role's list entry is the BASIC view: no permissions unless view=FULL
    assert "includedPermissions" not in call(server, "GET", roles)[1]["roles"][0]
    assert call(server, "GET", f"{roles}?view=FULL")[1]["roles"][0]["includedPermissions"]
    refused(server, "PATCH", f"{roles}/signer?updateMask=includedPermissions",
            {"etag": "BwAAAAAAAAA=", "includedPermissions": []}, 409, "ABORTED")
    refused(server, "PATCH", f"{roles}/signer?updateMask=name", {"etag": role["etag"]}, 400, "INVALID_ARGUMENT")
    refused(server, "POST", f"{roles}/signer:undelete", {}, 400, "FAILED_PRECONDITION")
    assert call(server, "DELETE", f"{roles}/signer")[0] == 200
    refused(server, "PATCH", f"{roles}/signer?updateMask=title", {"title": "x"}, 400, "FAILED_PRECONDITION")
    assert "marked for deletion" in refused(server, "POST", roles, create("signer"), 400, "FAILED_PRECONDITION")
    # a deleted role grants nothing, so a policy may no longer name it
    new_account(server)
    binding = {"role": "projects/my-project/roles/signer", "members": [f"serviceAccount:{SA}"]}
    refused(server, "POST", f"/v1/projects/-/serviceAccounts/{SA}:setIamPolicy",
            {"policy": {"bindings": [binding]}}, 400, "INVALID_ARGUMENT")
    assert refused(server, "GET", f"{roles}/ghost", None, 404, "NOT_FOUND") == \
        "The role named projects/my-project/roles/ghost was not found."


# -- workload identity pools and providers ------------------------------------------------------------------------


@requires_gcloud
def test_pool_and_provider_lifecycle_through_gcloud(enabled: ControlPlane, gcloud: Gcloud) -> None:
    wif = enabled.api("iam").workload_identity
    pool_flags = ("--location=global",)
    provider_flags = ("--location=global", "--workload-identity-pool=token-clients")
    ok(gcloud, "iam", "workload-identity-pools", "create", "token-clients", *pool_flags,
       "--display-name=Token Service clients")
    assert wif.pools[POOL_NAME] == {"name": POOL_NAME, "state": "ACTIVE", "displayName": "Token Service clients"}
    described = json.loads(ok(gcloud, "iam", "workload-identity-pools", "describe", "token-clients", *pool_flags,
                              "--format=json"))
    assert described == wif.pools[POOL_NAME]

    ok(gcloud, "iam", "workload-identity-pools", "providers", "create-oidc", "token-lb", *provider_flags,
       "--issuer-uri=https://token.example.com",
       "--attribute-mapping=google.subject=assertion.client_id,attribute.tier=assertion.tier")
    assert wif.providers[PROVIDER_NAME] == {
        "name": PROVIDER_NAME, "state": "ACTIVE", "oidc": {"issuerUri": "https://token.example.com"},
        "attributeMapping": {"google.subject": "assertion.client_id", "attribute.tier": "assertion.tier"}}
    ok(gcloud, "iam", "workload-identity-pools", "providers", "update-oidc", "token-lb", *provider_flags,
       "--issuer-uri=https://token2.example.com", "--attribute-mapping=google.subject=assertion.sub")
    assert wif.providers[PROVIDER_NAME]["oidc"] == {"issuerUri": "https://token2.example.com"}
    assert wif.providers[PROVIDER_NAME]["attributeMapping"] == {"google.subject": "assertion.sub"}
    ok(gcloud, "iam", "workload-identity-pools", "providers", "delete", "token-lb", *provider_flags)
    assert wif.providers[PROVIDER_NAME]["state"] == "DELETED"

    ok(gcloud, "iam", "workload-identity-pools", "delete", "token-clients", *pool_flags)
    assert wif.pools[POOL_NAME]["state"] == "DELETED" and wif.pools[POOL_NAME]["expireTime"]
    listed = ok(gcloud, "iam", "workload-identity-pools", "list", *pool_flags, "--show-deleted",
                "--format=value(name,state)")
    assert listed.split() == [POOL_NAME, "DELETED"]
    ok(gcloud, "iam", "workload-identity-pools", "undelete", "token-clients", *pool_flags)
    assert wif.pools[POOL_NAME]["state"] == "ACTIVE" and "expireTime" not in wif.pools[POOL_NAME]
    ok(gcloud, "iam", "workload-identity-pools", "providers", "undelete", "token-lb", *provider_flags)
    assert wif.providers[PROVIDER_NAME]["state"] == "ACTIVE"
    assert [event.action for event in enabled.journal] == ["create", "create", "update", "delete", "delete",
                                                           "undelete", "undelete"]


@pytest.mark.parametrize(("pool_id", "body"), [
    ("abc", {}),  # too short
    ("gcp-clients", {}),  # reserved prefix
    ("Token-clients", {}),
    ("token-clients", {"displayName": "x" * 33}),
])
def test_pool_refusals(enabled: ControlPlane, server: ControlPlaneServer, pool_id: str, body: dict[str, Any]) -> None:
    refused(server, "POST", f"{POOLS}?workloadIdentityPoolId={pool_id}", body, 400, "INVALID_ARGUMENT")
    assert not enabled.api("iam").workload_identity.pools


@pytest.mark.parametrize(("provider", "message"), [
    ({**OIDC, "oidc": {"issuerUri": "http://t.example"}}, "https"),
    ({**OIDC, "attributeMapping": {"attribute.x": "assertion.x"}}, "google.subject"),
    ({**OIDC, "attributeMapping": {"google.subject": "assertion.sub", "attribute.X": "assertion.x"}}, "key"),
    ({**OIDC, "attributeMapping": {"google.subject": "assertion.sub", "google.email": "assertion.x"}}, "key"),
    ({**OIDC, "attributeMapping": {"google.subject": "'fixed'"}}, "assertion"),
    ({**OIDC, "attributeMapping": {"google.subject": "assertion.sub["}}, "unterminated"),
    ({**OIDC, "attributeCondition": "assertion.tier == 'gold"}, "unterminated"),
    ({"attributeMapping": OIDC["attributeMapping"]}, "Exactly one"),
    ({"oidc": OIDC["oidc"]}, "attributeMapping"),
])
def test_provider_refusals(enabled: ControlPlane, server: ControlPlaneServer, provider: dict[str, Any],
                           message: str) -> None:
    new_pool(server)
    path = f"{POOLS}/token-clients/providers?workloadIdentityPoolProviderId=token-lb"
    assert message in refused(server, "POST", path, provider, 400, "INVALID_ARGUMENT")
    assert not enabled.api("iam").workload_identity.providers


def test_soft_deleted_pools_and_providers_keep_their_ids(enabled: ControlPlane, server: ControlPlaneServer) -> None:
    new_pool(server, provider=True)
    providers = f"{POOLS}/token-clients/providers"
    update = f"{providers}/token-lb?updateMask=oidc.issuerUri"
    refused(server, "PATCH", update, {"oidc": {"issuerUri": "http://t.example"}}, 400, "INVALID_ARGUMENT")
    refused(server, "PATCH", f"{providers}/token-lb?updateMask=name", {}, 400, "INVALID_ARGUMENT")
    assert call(server, "DELETE", f"{providers}/token-lb")[0] == 200
    refused(server, "POST", f"{providers}?workloadIdentityPoolProviderId=token-lb", OIDC, 409, "ALREADY_EXISTS")
    refused(server, "PATCH", update, {"oidc": {"issuerUri": "https://u.example"}}, 400, "FAILED_PRECONDITION")
    refused(server, "DELETE", f"{providers}/token-lb", None, 400, "FAILED_PRECONDITION")

    assert call(server, "DELETE", f"{POOLS}/token-clients")[0] == 200
    refused(server, "POST", f"{POOLS}?workloadIdentityPoolId=token-clients", {}, 409, "ALREADY_EXISTS")
    refused(server, "POST", f"{providers}?workloadIdentityPoolProviderId=other-lb", OIDC, 400, "FAILED_PRECONDITION")
    refused(server, "POST", f"{providers}/token-lb:undelete", {}, 400, "FAILED_PRECONDITION")
    refused(server, "DELETE", f"{POOLS}/token-clients", None, 400, "FAILED_PRECONDITION")
    assert call(server, "GET", POOLS) == (200, {})  # a deleted pool is listed only with showDeleted
    wif = enabled.api("iam").workload_identity
    assert wif.pools[POOL_NAME]["state"] == wif.providers[PROVIDER_NAME]["state"] == "DELETED"
    assert not wif.pool_exists(POOL_NAME)


def test_missing_pool_or_provider_is_404(enabled: ControlPlane, server: ControlPlaneServer) -> None:
    assert refused(server, "GET", f"{POOLS}/ghost-pool", None, 404, "NOT_FOUND") == "Requested entity was not found."
    refused(server, "POST", f"{POOLS}/ghost-pool/providers?workloadIdentityPoolProviderId=token-lb", OIDC, 404,
            "NOT_FOUND")
    new_pool(server)
    refused(server, "GET", f"{POOLS}/token-clients/providers/ghost-lb", None, 404, "NOT_FOUND")
    refused(server, "GET", "/v1/projects/my-project/locations/europe-west1/workloadIdentityPools", None, 400,
            "INVALID_ARGUMENT")


def test_operations_can_be_polled_and_names_use_the_project_number(enabled: ControlPlane,
                                                                    server: ControlPlaneServer) -> None:
    code, operation = call(server, "POST", f"{POOLS}?workloadIdentityPoolId=token-clients", {})
    assert code == 200 and operation["name"].startswith(POOL_NAME + "/operations/")
    assert call(server, "GET", f"/v1/{operation['name']}") == (200, operation)
    # the number and the id name the same pool
    assert call(server, "GET", f"/v1/{POOL_NAME}")[1] == call(server, "GET", f"{POOLS}/token-clients")[1]
