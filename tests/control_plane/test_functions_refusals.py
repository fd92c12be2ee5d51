"""What Cloud Functions v2 and Cloud Run refuse: at once (400/404/409) or in the deploy operation (FAILED)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from devtools.control_plane.server import ControlPlane, ControlPlaneServer
from tests.control_plane.test_functions import (
    BUILDER,
    FILES,
    KEY,
    KNATIVE,
    LOCATION,
    RUN_HOST,
    SERVICE,
    call,
    function,
    ok,
    ready,  # noqa: F401  (the fixture)
    upload,
)

Change = Callable[[dict[str, Any]], None]


def build(**fields: Any) -> Change:
    return lambda body: body["buildConfig"].update(fields)


def service(**fields: Any) -> Change:
    return lambda body: body["serviceConfig"].update(fields)


IMMEDIATE = [
    ("unknown runtime", build(runtime="python27"), "Invalid runtime: python27"),
    ("no entry point", build(entryPoint=""), "'buildConfig.entryPoint': required field not set"),
    ("unknown ingress", service(ingressSettings="ALLOW_EVERYONE"), "ALLOW_INTERNAL_AND_GCLB"),
    ("missing runtime account", service(serviceAccountEmail="nobody@my-project.iam.gserviceaccount.com"),
     "Service account nobody@my-project.iam.gserviceaccount.com does not exist"),
    ("missing build account", build(serviceAccount="projects/my-project/serviceAccounts/no@x.com"),
     "Service account no@x.com does not exist"),
    ("concurrency 0", service(maxInstanceRequestConcurrency=0), "must be between 1 and 1000"),
    ("concurrency 1001", service(maxInstanceRequestConcurrency=1001), "must be between 1 and 1000"),
    ("timeout over an hour", service(timeoutSeconds=3601), "at most 3600 seconds"),
    ("min over max", service(minInstanceCount=5, maxInstanceCount=2), "greater than or equal to min_instance_count"),
]


@pytest.mark.parametrize(("change", "message"), [case[1:] for case in IMMEDIATE], ids=[c[0] for c in IMMEDIATE])
def test_create_refuses_a_wrong_request(ready: ControlPlane, server: ControlPlaneServer,  # noqa: F811
                                        change: Change, message: str) -> None:
    body = function(upload(server, FILES))
    change(body)
    status, answer = call(server, "POST", f"{LOCATION}/functions?functionId=tokens", body)
    assert (status, answer["error"]["status"]) == (400, "INVALID_ARGUMENT")
    assert message in answer["error"]["message"]
    assert KEY not in ready.apis["functions"].functions


IN_OPERATION = [
    ("fractional cpu with concurrency", service(availableCpu="0.5"), FILES,
     "Could not create Cloud Run service tokens. spec.template.spec.containers.resources.limits.cpu: Invalid value "
     "specified for cpu. Total cpu < 1 is not supported with concurrency > 1."),
    ("too much memory for 1 cpu", service(availableCpu="1", availableMemory="8Gi"), FILES,
     "For 1.0 CPU, memory must be between 128Mi and 4Gi inclusive."),
    ("too little memory for 4 cpu", service(availableCpu="4"), FILES,
     "For 4.0 CPU, memory must be between 2Gi and 16Gi inclusive."),
    ("too little memory for 8 cpu", service(availableCpu="8", availableMemory="2Gi"), FILES,
     "For 8.0 CPU, memory must be between 4Gi and 32Gi inclusive."),
    ("3 cpu", service(availableCpu="3", availableMemory="2Gi"), FILES, "Must be equal to one of [.08-1], 2, 4, 6, 8"),
    ("too much memory for half a cpu", service(availableCpu="0.5", availableMemory="1Gi",
                                               maxInstanceRequestConcurrency=1), FILES,
     "For 0.5 CPU, memory must be between 128Mi and 512Mi inclusive."),
    ("missing secret version", service(secretEnvironmentVariables=[
        {"key": "S", "projectId": "my-project", "secret": "proxy", "version": "7"}]), FILES,
     "env[1].value_from.secret_key_ref.name: Permission denied on secret"),
    ("account may not read the secret", service(serviceAccountEmail=BUILDER), FILES,
     f"Permission denied on secret: projects/123456789012/secrets/proxy/versions/1 for Revision service account "
     f"{BUILDER}"),
    ("no main.py", None, {"requirements.txt": b""}, "missing main.py and GOOGLE_FUNCTION_SOURCE not specified"),
    ("no requirements.txt", None, {"main.py": FILES["main.py"]}, "requirements.txt not found"),
    ("entry point not in main.py", build(entryPoint="serve"), FILES,
     "MissingTargetException: File /workspace/main.py is expected to contain a function named 'serve'"),
]


@pytest.mark.parametrize(("change", "files", "message"), [case[1:] for case in IN_OPERATION],
                         ids=[c[0] for c in IN_OPERATION])
def test_deploy_operation_fails_and_leaves_the_function_failed(
        ready: ControlPlane, server: ControlPlaneServer,  # noqa: F811
        change: Change | None, files: dict[str, bytes], message: str) -> None:
    body = function(upload(server, files))
    if change:
        change(body)
    operation = ok(call(server, "POST", f"{LOCATION}/functions?functionId=tokens", body))
    assert operation["done"] and message in operation["error"]["message"], operation
    assert ok(call(server, "GET", operation["name"].replace("projects/", "functions/v2/projects/", 1)))["error"]
    failed = ready.apis["functions"].functions[KEY]
    assert failed["state"] == "FAILED" and message in failed["stateMessages"][0]["message"]
    assert SERVICE not in ready.apis["run"].services and KEY not in ready.apis["functions"].sources


def test_build_account_needs_the_build_roles(ready: ControlPlane, server: ControlPlaneServer) -> None:  # noqa: F811
    ok(call(server, "POST", "crm/v1/projects/my-project:setIamPolicy", {"policy": {"bindings": [
        {"role": "roles/logging.logWriter", "members": [f"serviceAccount:{BUILDER}"]}]}}))
    operation = ok(call(server, "POST", f"{LOCATION}/functions?functionId=tokens", function(upload(server, FILES))))
    assert "missing permission on the build service account" in operation["error"]["message"]
    assert "roles/artifactregistry.writer, roles/storage.objectViewer" in operation["error"]["message"]
    ok(call(server, "POST", "crm/v1/projects/my-project:setIamPolicy", {"policy": {"bindings": [
        {"role": "roles/cloudbuild.builds.builder", "members": [f"serviceAccount:{BUILDER}"]}]}}))
    patch = f"{LOCATION}/functions/tokens?updateMask=build_config.source"
    operation = ok(call(server, "PATCH", patch, function(upload(server, FILES))))
    assert "error" not in operation and ready.apis["functions"].functions[KEY]["state"] == "ACTIVE"


def test_source_must_be_uploaded_to_an_issued_url(ready: ControlPlane,  # noqa: F811
                                                  server: ControlPlaneServer) -> None:
    status, answer = call(server, "PUT", "upload/0123abcd", raw=b"PK")
    assert (status, answer["error"]["status"]) == (403, "PERMISSION_DENIED")
    issued = ok(call(server, "POST", f"{LOCATION}/functions:generateUploadUrl", {}))["storageSource"]
    operation = ok(call(server, "POST", f"{LOCATION}/functions?functionId=tokens", function(issued)))
    assert "the storage object does not exist" in operation["error"]["message"]


def test_names_masks_and_missing_resources(ready: ControlPlane, server: ControlPlaneServer) -> None:  # noqa: F811
    body = function(upload(server, FILES))
    status, answer = call(server, "POST", f"{LOCATION}/functions?functionId=Tokens_1", body)
    assert status == 400 and "Invalid function id" in answer["error"]["message"]
    status, answer = call(server, "PATCH", f"{LOCATION}/functions/tokens?updateMask=labels", body)
    assert (status, answer["error"]["status"]) == (404, "NOT_FOUND")
    ok(call(server, "POST", f"{LOCATION}/functions?functionId=tokens", body))
    status, answer = call(server, "POST", f"{LOCATION}/functions?functionId=tokens", body)
    assert (status, answer["error"]["status"]) == (409, "ALREADY_EXISTS")
    status, answer = call(server, "PATCH", f"{LOCATION}/functions/tokens?updateMask=service_config.colour", body)
    assert status == 400 and "Invalid field mask path 'service_config.colour'" in answer["error"]["message"]
    status, answer = call(server, "PATCH", f"{LOCATION}/functions/tokens?updateMask=colour", body)
    assert status == 400 and "Invalid field mask path 'colour'" in answer["error"]["message"]
    status, answer = call(server, "GET", "functions/v2/projects/my-project/locations/mars-north1/runtimes")
    assert (status, answer["error"]["status"]) == (404, "NOT_FOUND")
    status, answer = call(server, "GET", f"{KNATIVE}/other", host=RUN_HOST)
    assert status == 404 and answer["error"]["message"] == \
        "Resource 'other' of kind 'SERVICE' in region 'us-central1' in project 'my-project' does not exist."
    status, answer = call(server, "GET", "run/v1/projects/my-project/locations/us-central1/services/other:getIamPolicy")
    assert (status, answer["error"]["status"]) == (404, "NOT_FOUND")


def test_run_refuses_public_access_under_the_org_policy_and_stale_updates(
        ready: ControlPlane, server: ControlPlaneServer) -> None:  # noqa: F811
    ok(call(server, "POST", f"{LOCATION}/functions?functionId=tokens", function(upload(server, FILES))))
    ready.public_access_forbidden = True
    policy = {"policy": {"bindings": [{"role": "roles/run.invoker", "members": ["allUsers"]}]}}
    status, answer = call(server, "POST", f"run/v1/{SERVICE}:setIamPolicy", policy)
    assert (status, answer["error"]["status"]) == (400, "FAILED_PRECONDITION")
    current = ok(call(server, "GET", f"{KNATIVE}/tokens", host=RUN_HOST))
    stale = {**current, "metadata": {**current["metadata"], "resourceVersion": "old"}}
    status, answer = call(server, "PUT", f"{KNATIVE}/tokens", stale, host=RUN_HOST)
    assert (status, answer["error"]["status"]) == (409, "ABORTED")
    wrong = {**current, "metadata": {**current["metadata"], "annotations": {
        "run.googleapis.com/invoker-iam-disabled": "maybe"}}}
    status, answer = call(server, "PUT", f"{KNATIVE}/tokens", wrong, host=RUN_HOST)
    assert (status, answer["error"]["status"]) == (400, "INVALID_ARGUMENT")
    status, answer = call(server, "GET", f"{KNATIVE}/tokens")  # the global host has no Knative surface
    assert status == 400


def test_disabled_api_and_default_build_account(plane: ControlPlane, server: ControlPlaneServer) -> None:
    status, answer = call(server, "GET", f"{LOCATION}/functions/tokens")
    assert (status, answer["error"]["status"]) == (403, "PERMISSION_DENIED")
    assert "cloudfunctions.googleapis.com API has not been used" in answer["error"]["message"]
    plane.enabled_services.add("cloudbuild.googleapis.com")
    account = ok(call(server, "GET", "cloudbuild/v1/projects/my-project/locations/us-central1/defaultServiceAccount"))
    assert account["serviceAccountEmail"].endswith("/123456789012-compute@developer.gserviceaccount.com")
