"""Cloud Functions v2, its source upload and its Cloud Run service, through the real gcloud and direct calls."""

from __future__ import annotations

import base64
import io
import json
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from devtools.control_plane.run import INVOKER_IAM_DISABLED
from devtools.control_plane.secrets import crc32c
from devtools.control_plane.server import ControlPlane, ControlPlaneServer
from tests.control_plane.conftest import requires_gcloud
from tests.control_plane.rest import call

REGION = "us-central1"
LOCATION = f"functions/v2/projects/my-project/locations/{REGION}"
KEY = f"projects/my-project/locations/{REGION}/functions/tokens"
SERVICE = f"projects/my-project/locations/{REGION}/services/tokens"
KNATIVE = "run/apis/serving.knative.dev/v1/namespaces/my-project/services"
RUN_HOST = f"{REGION}-google.fake"
SA = "token-sa@my-project.iam.gserviceaccount.com"
BUILDER = "builder@my-project.iam.gserviceaccount.com"
MAIN = b"async def handle_request(request):\n    return 'ok'\n"
FILES = {"main.py": MAIN, "requirements.txt": b"functions-framework==3.10.2\n"}






def ok(result: tuple[int, Any]) -> Any:
    assert result[0] == 200, result
    return result[1]


def zipped(files: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for name, content in files.items():
            archive.writestr(name, content)
    return buffer.getvalue()


def upload(server: ControlPlaneServer, files: dict[str, bytes]) -> dict[str, Any]:
    answer = ok(call(server, "POST", f"{LOCATION}/functions:generateUploadUrl", {}))
    ok(call(server, "PUT", answer["uploadUrl"].removeprefix("http://google.fake/"), raw=zipped(files)))
    return answer["storageSource"]


def function(source: dict[str, Any], **service: Any) -> dict[str, Any]:
    return {"buildConfig": {"runtime": "python313", "entryPoint": "handle_request", "source": {"storageSource": source},
                            "serviceAccount": f"projects/my-project/serviceAccounts/{BUILDER}"},
            "serviceConfig": {"serviceAccountEmail": SA, "availableCpu": "2", "availableMemory": "1Gi",
                              "maxInstanceRequestConcurrency": 16, "ingressSettings": "ALLOW_INTERNAL_AND_GCLB",
                              "secretEnvironmentVariables": [{"key": "PROXY_SECRETS", "projectId": "123456789012",
                                                              "secret": "proxy", "version": "1"}], **service}}


@pytest.fixture
def ready(enabled: ControlPlane, server: ControlPlaneServer) -> ControlPlane:
    """The runtime and build accounts, the build account's roles, and a secret the runtime account may read."""
    for account in ("token-sa", "builder"):
        ok(call(server, "POST", "iam/v1/projects/my-project/serviceAccounts", {"accountId": account}))
    bindings = [{"role": role, "members": [f"serviceAccount:{BUILDER}"]}
                for role in ("roles/logging.logWriter", "roles/artifactregistry.writer", "roles/storage.objectViewer")]
    ok(call(server, "POST", "crm/v1/projects/my-project:setIamPolicy", {"policy": {"bindings": bindings}}))
    secrets = "secretmanager/v1/projects/my-project/secrets"
    ok(call(server, "POST", f"{secrets}?secretId=proxy", {"replication": {"automatic": {}}}))
    ok(call(server, "POST", f"{secrets}/proxy:addVersion",
            {"payload": {"data": base64.b64encode(b"s").decode(), "dataCrc32c": str(crc32c(b"s"))}}))
    policy = {"bindings": [{"role": "roles/secretmanager.secretAccessor", "members": [f"serviceAccount:{SA}"]}]}
    ok(call(server, "POST", f"{secrets}/proxy:setIamPolicy", {"policy": policy}))
    return enabled


def deploy_arguments(source: Path, label: str) -> list[str]:
    env = source.parent / "env.yaml"
    env.write_text('TOKEN_ISSUER: "https://tokens.example"\nWORKERS: "2"\n')
    return ["functions", "deploy", "tokens", "--gen2", f"--region={REGION}", "--runtime=python313",
            f"--source={source}", "--entry-point=handle_request", "--trigger-http",
            "--ingress-settings=internal-and-gclb", f"--service-account={SA}",
            f"--build-service-account=projects/my-project/serviceAccounts/{BUILDER}", f"--env-vars-file={env}",
            "--set-secrets=PROXY_SECRETS=proxy:1", "--cpu=2", "--memory=1Gi", "--concurrency=16", "--timeout=60s",
            "--min-instances=0", "--max-instances=20", f"--update-labels=deploy_hash={label}"]


@requires_gcloud
def test_deploy_creates_then_patches_the_function_and_rolls_its_service(
        ready: ControlPlane, gcloud: Callable[..., Any], tmp_path: Path) -> None:
    source = tmp_path / "src"
    source.mkdir()
    for name, content in FILES.items():
        (source / name).write_bytes(content)
    created = gcloud(*deploy_arguments(source, "one"))
    assert created.returncode == 0, created.stderr
    api = ready.apis["functions"]
    deployed = api.functions[KEY]
    assert deployed["state"] == "ACTIVE" and deployed["environment"] == "GEN_2"
    assert deployed["labels"]["deploy_hash"] == "one"
    config = deployed["serviceConfig"]
    assert (config["availableCpu"], config["availableMemory"], config["maxInstanceRequestConcurrency"]) == \
        ("2", "1Gi", 16)
    assert config["ingressSettings"] == "ALLOW_INTERNAL_AND_GCLB" and config["serviceAccountEmail"] == SA
    assert config["environmentVariables"]["TOKEN_ISSUER"] == "https://tokens.example"
    assert config["secretEnvironmentVariables"][0]["secret"] == "proxy"
    assert config["service"] == SERVICE and config["uri"].endswith("-uc.a.run.app")
    assert config["revision"].startswith("tokens-00001-")
    assert deployed["buildConfig"]["serviceAccount"].endswith(BUILDER)
    with zipfile.ZipFile(io.BytesIO(api.sources[KEY])) as archive:
        assert archive.read("main.py") == MAIN
    service = ready.apis["run"].services[SERVICE]
    assert service["metadata"]["annotations"]["run.googleapis.com/ingress"] == "internal-and-cloud-load-balancing"
    assert service["status"]["latestReadyRevisionName"] == config["revision"]

    mark = len(ready.journal)
    patched = gcloud(*deploy_arguments(source, "two"))
    assert patched.returncode == 0, patched.stderr
    assert [(event.api, event.action) for event in ready.mutations(mark)] == [("functions", "update")]
    assert api.functions[KEY]["labels"]["deploy_hash"] == "two"
    assert api.functions[KEY]["serviceConfig"]["revision"].startswith("tokens-00002-")
    assert ready.apis["run"].services[SERVICE]["metadata"]["generation"] == 2

    described = json.loads(gcloud("functions", "describe", "tokens", "--gen2", f"--region={REGION}",
                                  "--format=json").stdout)
    assert described["serviceConfig"]["revision"] == api.functions[KEY]["serviceConfig"]["revision"]
    listed = gcloud("functions", "list", f"--regions={REGION}", "--filter=labels.deploy_hash=two",
                    "--format=value(name.basename(),state)")
    assert listed.stdout.split() == ["tokens", "ACTIVE"]


@requires_gcloud
def test_a_failed_build_leaves_the_function_failed_until_the_next_deploy(
        ready: ControlPlane, gcloud: Callable[..., Any], tmp_path: Path) -> None:
    source = tmp_path / "src"
    source.mkdir()
    for name, content in FILES.items():
        (source / name).write_bytes(content)
    api = ready.apis["functions"]
    api.fail_next_build = "pip install failed"
    failed = gcloud(*deploy_arguments(source, "one"))
    assert failed.returncode != 0 and "pip install failed" in failed.stderr
    assert api.functions[KEY]["state"] == "FAILED" and SERVICE not in ready.apis["run"].services
    redeployed = gcloud(*deploy_arguments(source, "one"))
    assert redeployed.returncode == 0, redeployed.stderr
    assert api.functions[KEY]["state"] == "ACTIVE" and SERVICE in ready.apis["run"].services


@requires_gcloud
def test_run_service_iam_and_invoker_check_through_gcloud(
        ready: ControlPlane, server: ControlPlaneServer, gcloud: Callable[..., Any]) -> None:
    ok(call(server, "POST", f"{LOCATION}/functions?functionId=tokens", function(upload(server, FILES))))
    run = ready.apis["run"]
    added = gcloud("run", "services", "add-iam-policy-binding", "tokens", f"--region={REGION}", "--member=allUsers",
                   "--role=roles/run.invoker")
    assert added.returncode == 0, added.stderr
    assert run.policies.members(SERVICE, "roles/run.invoker") == {"allUsers"}
    policy = json.loads(gcloud("run", "services", "get-iam-policy", "tokens", f"--region={REGION}",
                               "--format=json").stdout)
    assert policy["bindings"] == [{"members": ["allUsers"], "role": "roles/run.invoker"}]
    removed = gcloud("run", "services", "remove-iam-policy-binding", "tokens", f"--region={REGION}",
                     "--member=allUsers", "--role=roles/run.invoker")
    assert removed.returncode == 0 and run.policies.members(SERVICE, "roles/run.invoker") == set()
    updated = gcloud("run", "services", "update", "tokens", f"--region={REGION}", "--no-invoker-iam-check")
    assert updated.returncode == 0, updated.stderr
    assert run.invoker_iam_disabled(SERVICE)
    # A redeploy of the function keeps what was set on its service.
    ok(call(server, "PATCH", f"{LOCATION}/functions/tokens?updateMask=labels", {"labels": {"deploy_hash": "x"}}))
    assert run.invoker_iam_disabled(SERVICE) and run.services[SERVICE]["metadata"]["labels"]["deploy_hash"] == "x"
    described = json.loads(gcloud("run", "services", "describe", "tokens", f"--region={REGION}",
                                  "--format=json").stdout)
    assert described["metadata"]["annotations"][INVOKER_IAM_DISABLED] == "true"


@requires_gcloud
def test_delete_removes_the_function_and_its_service(
        ready: ControlPlane, server: ControlPlaneServer, gcloud: Callable[..., Any]) -> None:
    ok(call(server, "POST", f"{LOCATION}/functions?functionId=tokens", function(upload(server, FILES))))
    deleted = gcloud("functions", "delete", "tokens", "--gen2", f"--region={REGION}")
    assert deleted.returncode == 0, deleted.stderr
    assert KEY not in ready.apis["functions"].functions and SERVICE not in ready.apis["run"].services
    status, body = call(server, "GET", f"{LOCATION}/functions/tokens")
    assert (status, body["error"]["status"]) == (404, "NOT_FOUND")
    assert body["error"]["message"] == "Function tokens in region us-central1 in project my-project does not exist"
    status, body = call(server, "GET", f"{KNATIVE}/tokens", host=RUN_HOST)
    assert (status, body["error"]["status"]) == (404, "NOT_FOUND")
