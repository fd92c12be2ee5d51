"""Secret Manager through the real gcloud: secrets, versions, access, IAM; and what functions ask of it."""

from __future__ import annotations

import base64
import json
from collections.abc import Callable
from typing import Any

from devtools.control_plane.secrets import ACCESSOR, crc32c
from devtools.control_plane.server import ControlPlane, ControlPlaneServer
from tests.control_plane.conftest import requires_gcloud
from tests.control_plane.rest import call

SECRETS = "secretmanager/v1/projects/my-project/secrets"
KEY = "projects/my-project/secrets/api-key"






def payload(data: bytes) -> dict[str, Any]:
    return {"payload": {"data": base64.b64encode(data).decode(), "dataCrc32c": str(crc32c(data))}}


def test_crc32c_is_castagnoli() -> None:
    assert crc32c(b"123456789") == 0xE3069283  # the check value of CRC-32C


@requires_gcloud
def test_secret_lifecycle_through_gcloud(enabled: ControlPlane, gcloud: Callable[..., Any]) -> None:
    created = gcloud("secrets", "create", "api-key", "--replication-policy=automatic", "--data-file=-", stdin="one")
    assert created.returncode == 0, created.stderr
    api = enabled.apis["secretmanager"]
    assert api.secrets[KEY]["name"] == "projects/123456789012/secrets/api-key"  # Google names it by number
    assert api.secrets[KEY]["replication"] == {"automatic": {}}
    assert api.payloads[f"{KEY}/versions/1"] == b"one"
    assert gcloud("secrets", "versions", "add", "api-key", "--data-file=-", stdin="two").returncode == 0
    accessed = gcloud("secrets", "versions", "access", "latest", "--secret=api-key")
    assert accessed.stdout == "two"
    assert gcloud("secrets", "versions", "disable", "2", "--secret=api-key").returncode == 0
    assert api.versions[f"{KEY}/versions/2"]["state"] == "DISABLED"
    refused = gcloud("secrets", "versions", "access", "latest", "--secret=api-key")
    assert refused.returncode != 0 and "FAILED_PRECONDITION" in refused.stderr and "DISABLED state" in refused.stderr
    assert gcloud("secrets", "versions", "destroy", "1", "--secret=api-key").returncode == 0
    assert api.versions[f"{KEY}/versions/1"]["state"] == "DESTROYED" and f"{KEY}/versions/1" not in api.payloads
    listed = gcloud("secrets", "versions", "list", "api-key", "--format=value(name,state)")
    assert listed.stdout.split("\n")[:2] == ["2\tdisabled", "1\tdestroyed"]
    names = gcloud("secrets", "list", "--filter=name:api-key", "--format=value(name)")
    assert names.stdout.split() == ["api-key"]

    account = "serviceAccount:123456789012-compute@developer.gserviceaccount.com"
    bound = gcloud("secrets", "add-iam-policy-binding", "api-key", f"--member={account}", f"--role={ACCESSOR}")
    assert bound.returncode == 0, bound.stderr
    assert api.policies.members(KEY, ACCESSOR) == {account}
    policy = json.loads(gcloud("secrets", "get-iam-policy", "api-key", "--format=json").stdout)
    assert policy["bindings"] == [{"members": [account], "role": ACCESSOR}]

    assert gcloud("secrets", "delete", "api-key").returncode == 0
    assert api.secrets == {} and api.versions == {}
    missing = gcloud("secrets", "describe", "api-key")
    assert "NOT_FOUND: Secret [projects/123456789012/secrets/api-key] not found." in missing.stderr


def test_secret_refusals(enabled: ControlPlane, server: ControlPlaneServer) -> None:
    status, body = call(server, "POST", f"{SECRETS}?secretId=bad.id", {"replication": {"automatic": {}}})
    assert (status, body["error"]["status"]) == (400, "INVALID_ARGUMENT")
    status, body = call(server, "POST", f"{SECRETS}?secretId={'x' * 256}", {"replication": {"automatic": {}}})
    assert status == 400
    status, body = call(server, "POST", f"{SECRETS}?secretId=api-key", {})
    assert status == 400 and "replication" in body["error"]["message"]
    assert call(server, "POST", f"{SECRETS}?secretId=api-key", {"replication": {"automatic": {}}})[0] == 200
    status, body = call(server, "POST", f"{SECRETS}?secretId=api-key", {"replication": {"automatic": {}}})
    assert (status, body["error"]["status"]) == (409, "ALREADY_EXISTS")
    status, body = call(server, "POST", f"{SECRETS}/api-key:addVersion", payload(b"x" * 65537))
    assert status == 400 and "65536" in body["error"]["message"]
    corrupted = payload(b"value")
    corrupted["payload"]["dataCrc32c"] = "1"
    assert call(server, "POST", f"{SECRETS}/api-key:addVersion", corrupted)[0] == 400
    assert enabled.apis["secretmanager"].versions == {}
    assert call(server, "POST", f"{SECRETS}/api-key:addVersion", payload(b"x" * 65536))[0] == 200
    assert call(server, "POST", f"{SECRETS}/api-key/versions/1:destroy", {})[0] == 200
    status, body = call(server, "GET", f"{SECRETS}/api-key/versions/1:access")
    assert (status, body["error"]["status"]) == (400, "FAILED_PRECONDITION") and "DESTROYED" in body["error"]["message"]
    status, body = call(server, "POST", f"{SECRETS}/api-key/versions/1:enable", {})
    assert status == 400  # a destroyed version stays destroyed


def test_missing_secret_and_version_are_404(enabled: ControlPlane, server: ControlPlaneServer) -> None:
    status, body = call(server, "GET", f"{SECRETS}/nope/versions/latest:access")
    assert (status, body["error"]["status"]) == (404, "NOT_FOUND")
    assert body["error"]["message"] == "Secret [projects/123456789012/secrets/nope] not found."
    call(server, "POST", f"{SECRETS}?secretId=empty", {"replication": {"automatic": {}}})
    status, body = call(server, "GET", f"{SECRETS}/empty/versions/latest:access")
    assert status == 404 and "not found or has no versions" in body["error"]["message"]
    status, body = call(server, "GET", f"{SECRETS}/empty/versions/3")
    assert body["error"]["message"] == "Secret Version [projects/123456789012/secrets/empty/versions/3] not found."


def test_accessible_checks_state_and_grants(enabled: ControlPlane, server: ControlPlaneServer) -> None:
    api = enabled.apis["secretmanager"]
    account = "serviceAccount:123456789012-compute@developer.gserviceaccount.com"
    call(server, "POST", f"{SECRETS}?secretId=api-key", {"replication": {"automatic": {}}})
    call(server, "POST", f"{SECRETS}/api-key:addVersion", payload(b"value"))
    refusal = api.accessible("api-key", "latest", account)
    assert refusal and refusal.startswith("Permission denied on secret: projects/123456789012/secrets/api-key")
    enabled.apis["crm"].policies.policies["my-project"] = {"bindings": [{"role": ACCESSOR, "members": [account]}]}
    assert api.accessible("api-key", "latest", account) is None  # granted on the project
    assert api.accessible("projects/123456789012/secrets/api-key", "1", account) is None
    enabled.apis["crm"].policies.policies.clear()
    api.policies.policies[KEY] = {"bindings": [{"role": ACCESSOR, "members": [account]}]}
    assert api.accessible("api-key", "1", account) is None  # granted on the secret
    assert "not found" in (api.accessible("api-key", "2", account) or "")
    assert "not found" in (api.accessible("other", "latest", account) or "")
    call(server, "POST", f"{SECRETS}/api-key/versions/1:disable", {})
    assert "DISABLED state" in (api.accessible("api-key", "latest", account) or "")
