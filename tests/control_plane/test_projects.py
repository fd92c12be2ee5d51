"""Resource Manager v1 and Service Usage v1 through the real gcloud, and what they refuse."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from devtools.control_plane.server import ControlPlane, ControlPlaneServer
from tests.control_plane.conftest import requires_gcloud
from tests.control_plane.test_functions import call, ok

SA = "writer@my-project.iam.gserviceaccount.com"


@requires_gcloud
def test_services_enable_and_list(plane: ControlPlane, gcloud: Callable[..., Any]) -> None:
    enabled = gcloud("services", "enable", "run.googleapis.com", "logging.googleapis.com")
    assert enabled.returncode == 0, enabled.stderr
    assert plane.enabled_services == {"run.googleapis.com", "logging.googleapis.com"}
    assert [(event.api, event.action) for event in plane.journal] == [("serviceusage", "enable")]
    listed = gcloud("services", "list", "--enabled", "--format=value(config.name)")
    assert listed.stdout.split() == ["logging.googleapis.com", "run.googleapis.com"]
    refused = gcloud("services", "enable", "logging.googleapis.com", "runn.googleapis.com")
    assert refused.returncode != 0
    assert "Not found or permission denied for service(s): runn.googleapis.com." in refused.stderr
    assert "runn.googleapis.com" not in plane.enabled_services


def test_service_usage_get_and_refusals(plane: ControlPlane, server: ControlPlaneServer) -> None:
    plane.enabled_services.add("run.googleapis.com")
    services = "serviceusage/v1/projects/my-project/services"
    run = ok(call(server, "GET", f"{services}/run.googleapis.com"))
    assert (run["name"], run["state"]) == ("projects/123456789012/services/run.googleapis.com", "ENABLED")
    assert ok(call(server, "GET", f"{services}/cloudbuild.googleapis.com"))["state"] == "DISABLED"
    status, answer = call(server, "GET", f"{services}/cloudbuld.googleapis.com")
    assert (status, answer["error"]["status"]) == (403, "PERMISSION_DENIED")
    assert answer["error"]["details"][0]["reason"] == "SERVICE_CONFIG_NOT_FOUND_OR_PERMISSION_DENIED"
    status, answer = call(server, "POST", f"{services}:batchEnable", {})
    assert status == 400 and "service_ids" in answer["error"]["message"]
    status, answer = call(server, "POST", f"{services}:batchEnable", {"serviceIds": ["run.googleapis.com"] * 21})
    assert status == 400
    operation = ok(call(server, "POST", f"{services}:batchEnable", {"serviceIds": ["compute.googleapis.com"]}))
    assert ok(call(server, "GET", f"serviceusage/v1/{operation['name']}"))["done"] is True
    status, answer = call(server, "GET", "serviceusage/v1/projects/other-project/services/run.googleapis.com")
    assert (status, answer["error"]["status"]) == (403, "PERMISSION_DENIED")


@requires_gcloud
def test_project_describe_and_iam_bindings(plane: ControlPlane, server: ControlPlaneServer,
                                           gcloud: Callable[..., Any]) -> None:
    assert gcloud("projects", "describe", "my-project", "--format=value(projectNumber)").stdout == "123456789012\n"
    by_number = ok(call(server, "GET", "crm/v1/projects/123456789012"))
    assert (by_number["projectId"], by_number["lifecycleState"]) == ("my-project", "ACTIVE")
    plane.enabled_services.add("iam.googleapis.com")
    ok(call(server, "POST", "iam/v1/projects/my-project/serviceAccounts", {"accountId": "writer"}))
    added = gcloud("projects", "add-iam-policy-binding", "my-project", f"--member=serviceAccount:{SA}",
                   "--role=roles/logging.logWriter", "--condition=None")
    assert added.returncode == 0, added.stderr
    policies = plane.apis["crm"].policies
    assert policies.members("my-project", "roles/logging.logWriter") == {f"serviceAccount:{SA}"}
    shown = json.loads(gcloud("projects", "get-iam-policy", "my-project", "--format=json").stdout)
    assert shown["bindings"] == [{"members": [f"serviceAccount:{SA}"], "role": "roles/logging.logWriter"}]
    removed = gcloud("projects", "remove-iam-policy-binding", "my-project", f"--member=serviceAccount:{SA}",
                     "--role=roles/logging.logWriter")
    assert removed.returncode == 0, removed.stderr
    assert policies.members("my-project", "roles/logging.logWriter") == set()
    assert [event.action for event in plane.journal if event.api == "crm"] == ["setIamPolicy", "setIamPolicy"]


def test_project_refusals(plane: ControlPlane, server: ControlPlaneServer) -> None:
    status, answer = call(server, "GET", "crm/v1/projects/someone-elses")
    assert (status, answer["error"]) == (403, {"code": 403, "message": "The caller does not have permission",
                                               "status": "PERMISSION_DENIED"})
    policy = "crm/v1/projects/my-project:setIamPolicy"
    status, answer = call(server, "POST", policy, {"policy": {"bindings": [
        {"role": "roles/logging.logWritter", "members": [f"serviceAccount:{SA}"]}]}})
    assert status == 400 and "Role (roles/logging.logWritter) does not exist" in answer["error"]["message"]
    status, answer = call(server, "POST", policy, {"policy": {"bindings": [
        {"role": "roles/logging.logWriter", "members": [f"serviceAccount:{SA}"]}]}})
    assert status == 400 and f"Service account {SA} does not exist." in answer["error"]["message"]
    assert plane.apis["crm"].policies.members("my-project", "roles/logging.logWriter") == set()
