"""Cloud Functions v2 (2nd gen): the function, its source upload, its deploy operation, its Cloud Run service.

``gcloud functions deploy`` GETs the function, lists runtimes, asks Service Usage about run,
cloudbuild and artifactregistry, calls generateUploadUrl, PUTs the zip to that URL (the "upload"
prefix, no auth), then creates or patches (``updateMask``) and polls the operation. A deploy that
the request already condemns is refused with a 400; one that fails in the build or in Cloud Run
leaves the function FAILED and the operation carrying the error, as Google does. A successful
deploy rolls the Cloud Run service (run.py) to a new revision.

Tests read ``FunctionsApi.functions`` (relative name -> Function resource) and
``FunctionsApi.sources`` (relative name -> the zip bytes of the revision that serves);
``fail_next_build`` makes the next create or patch fail in the build with that message.
"""

from __future__ import annotations

import copy
import re
import time
import uuid
from typing import Any

from devtools.control_plane import function_checks as checks
from devtools.control_plane.run import RunApi, now, service_url
from devtools.control_plane.server import REGIONS, Api, GoogleError, Request, already_exists, invalid

LOCATION = r"/v2/projects/([^/]+)/locations/([^/]+)"
_RPC_INVALID_ARGUMENT = 3
# What a custom build service account needs on the project: the builder role, or these three.
BUILDER_ROLE = "roles/cloudbuild.builds.builder"
BUILD_ROLES = ("roles/logging.logWriter", "roles/artifactregistry.writer", "roles/storage.objectViewer")
# The Function fields an update_mask may name (Function, BuildConfig, ServiceConfig in Google's v2 schema).
_MASK_FIELDS = {
    "labels": (), "eventTrigger": (), "description": (), "kmsKeyName": (),
    "buildConfig": ("runtime", "entryPoint", "source", "serviceAccount", "environmentVariables", "dockerRepository",
                    "dockerRegistry", "workerPool", "automaticUpdatePolicy", "onDeployUpdatePolicy"),
    "serviceConfig": ("availableCpu", "availableMemory", "environmentVariables", "ingressSettings",
                      "maxInstanceCount", "minInstanceCount", "maxInstanceRequestConcurrency", "serviceAccountEmail",
                      "timeoutSeconds", "secretEnvironmentVariables", "secretVolumes", "vpcConnector",
                      "vpcConnectorEgressSettings", "allTrafficOnLatestRevision", "binaryAuthorizationPolicy",
                      "securityLevel"),
}


def _camel(path: str) -> list[str]:
    return [re.sub(r"_([a-z])", lambda m: m.group(1).upper(), part) for part in path.split(".")]


class FunctionsApi(Api):
    prefix = "functions"
    service = "cloudfunctions.googleapis.com"

    def __init__(self, plane: Any):
        super().__init__(plane)
        self.functions: dict[str, dict[str, Any]] = {}
        self.sources: dict[str, bytes] = {}
        self.uploads: dict[str, bytes | None] = {}  # storage object -> zip bytes once PUT
        self.fail_next_build: str | None = None
        self.route("GET", LOCATION + "/runtimes", self.runtimes)
        self.route("POST", LOCATION + "/functions:generateUploadUrl", self.generate_upload_url)
        self.route("GET", LOCATION + "/functions", self.list)
        self.route("POST", LOCATION + "/functions", self.create, "create")
        self.route("GET", LOCATION + "/functions/([^/:]+)", self.get)
        self.route("PATCH", LOCATION + "/functions/([^/:]+)", self.patch, "update")
        self.route("DELETE", LOCATION + "/functions/([^/:]+)", self.delete, "delete")
        # gcloud functions list (GA) also lists 1st gen functions through v1; there are none here.
        self.route("GET", r"/v1/projects/([^/]+)/locations", self.v1_locations)
        self.route("GET", r"/v1/projects/([^/]+)/locations/([^/]+)/functions", self.v1_list)

    @property
    def run(self) -> RunApi:
        return self.plane.apis["run"]

    def _function(self, segment: str, region: str, name: str) -> tuple[str, dict[str, Any]]:
        key = f"{self._location(segment, region)}/functions/{name}"
        function = self.functions.get(key)
        if function is None:
            raise GoogleError(404, f"Function {name} in region {region} in project {key.split('/')[1]} does not exist",
                              "NOT_FOUND")
        return key, function

    # reads

    def runtimes(self, request: Request, segment: str, region: str) -> dict[str, Any]:
        self._location(segment, region)
        return {"runtimes": [{"name": name, "displayName": title, "stage": "GA", "environment": "GEN_2"}
                             for name, title in checks.RUNTIMES.items()]}

    def get(self, request: Request, segment: str, region: str, name: str) -> dict[str, Any]:
        return self._function(segment, region, name)[1]

    def list(self, request: Request, segment: str, region: str) -> dict[str, Any]:
        parent = self._location(segment, region, any_region=True).removesuffix("/-")
        wanted = request.arg("filter") or ""
        match = re.fullmatch(r'\s*environment\s*=\s*"?(GEN_1|GEN_2)"?\s*', wanted)
        if wanted and not match:
            raise invalid(f"Invalid filter: {wanted}")
        found = [function for key, function in sorted(self.functions.items()) if key.startswith(parent + "/")
                 and (not match or function["environment"] == match.group(1))]
        return {"functions": found}

    def v1_locations(self, request: Request, segment: str) -> dict[str, Any]:
        project = self.plane.project(segment)
        return {"locations": [{"name": f"projects/{project}/locations/{region}", "locationId": region}
                              for region in REGIONS]}

    def v1_list(self, request: Request, segment: str, region: str) -> dict[str, Any]:
        self._location(segment, region, any_region=True)
        return {}

    # the source upload

    def generate_upload_url(self, request: Request, segment: str, region: str) -> dict[str, Any]:
        self._location(segment, region)
        upload = uuid.uuid4().hex
        self.uploads[f"{upload}.zip"] = None
        return {"uploadUrl": f"http://google.fake/upload/{upload}", "storageSource": {
            "bucket": f"gcf-v2-uploads-{self.plane.project_number}.{region}.cloudfunctions.appspot.com",
            "object": f"{upload}.zip"}}

    # changes

    def create(self, request: Request, segment: str, region: str) -> dict[str, Any]:
        parent = self._location(segment, region)
        name = request.arg("functionId") or ""
        if not checks.FUNCTION_ID.match(name):
            raise invalid(f"Invalid function id '{name}': it must start with a lowercase letter, contain only "
                          "lowercase letters, digits and hyphens, end with a letter or digit and have at most "
                          "63 characters.")
        key = f"{parent}/functions/{name}"
        if key in self.functions:
            raise already_exists(key)
        body = request.json()
        function = {"buildConfig": body.get("buildConfig") or {}, "serviceConfig": body.get("serviceConfig") or {},
                    "labels": body.get("labels") or {}, "createTime": now()}
        return self._deploy(key, function, "create")

    def patch(self, request: Request, segment: str, region: str, name: str) -> dict[str, Any]:
        key, current = self._function(segment, region, name)
        body = request.json()
        mask = request.arg("updateMask") or ""
        if not mask:
            raise invalid("update_mask is required: name the fields the request changes.")
        function = copy.deepcopy(current)
        for path in mask.split(","):
            parts = _camel(path.strip())
            children = _MASK_FIELDS.get(parts[0])
            if children is None or (len(parts) > 1 and parts[1] not in children) or (len(parts) > 2):
                raise invalid(f"Invalid field mask path '{path}': no such field in Function.")
            source: Any = body
            for part in parts:
                source = source.get(part) if isinstance(source, dict) else None
            target = function
            for part in parts[:-1]:
                target = target.setdefault(part, {})
            if source is None:
                target.pop(parts[-1], None)
            else:
                target[parts[-1]] = copy.deepcopy(source)
        return self._deploy(key, function, "update")

    def delete(self, request: Request, segment: str, region: str, name: str) -> dict[str, Any]:
        key, _ = self._function(segment, region, name)
        del self.functions[key]
        self.sources.pop(key, None)
        self.run.remove(f"projects/{self.plane.project_id}/locations/{region}/services/{name}")
        return self._operation(key, "delete", None, None)

    def _deploy(self, key: str, function: dict[str, Any], verb: str) -> dict[str, Any]:
        project, region, name = key.split("/")[1], key.split("/")[3], key.rsplit("/", 1)[1]
        build, config = function["buildConfig"], function["serviceConfig"]
        for field, default in (("availableMemory", "256M"), ("availableCpu", "0.1666"), ("timeoutSeconds", 60),
                               ("maxInstanceCount", 100), ("maxInstanceRequestConcurrency", 1),
                               ("ingressSettings", "ALLOW_ALL"), ("serviceAccountEmail",
                               f"{self.plane.project_number}-compute@developer.gserviceaccount.com")):
            config.setdefault(field, default)
        checks.check_request(function, self.plane.apis["iam"].service_account_exists)
        checks.check_connector(config, region, self.plane.apis["vpcaccess"].ready)
        config.setdefault("environmentVariables", {})["LOG_EXECUTION_ID"] = "true"
        function.update(name=key, environment="GEN_2", updateTime=now(),
                        url=f"https://{region}-{project}.cloudfunctions.net/{name}")
        build.update(build=f"projects/{self.plane.project_number}/locations/{region}/builds/{uuid.uuid4()}",
                     dockerRepository=f"projects/{project}/locations/{region}/repositories/gcf-artifacts")
        service = f"projects/{project}/locations/{region}/services/{name}"
        source = self.uploads.get(build["source"]["storageSource"]["object"])
        error = self._failure(function, source, service)
        if error:
            function.update(state="FAILED", stateMessages=[{"severity": "ERROR", "type": "DeploymentFailed",
                                                            "message": error}])
        else:
            assert source is not None
            function.update(state="ACTIVE", stateMessages=[])
            config.update(service=service, uri=service_url(name, self.plane.project_number),
                          allTrafficOnLatestRevision=True)
            config["revision"] = self.run.publish(service, function)
            self.sources[key] = source
        self.functions[key] = function
        return self._operation(key, verb, function, error)

    def _failure(self, function: dict[str, Any], source: bytes | None, service: str) -> str | None:
        """Why the build or the Cloud Run revision fails, in the operation's words; None when it succeeds."""
        error = checks.build_error(source) or self._build_account_error(function["buildConfig"])
        if error is None and self.fail_next_build is not None:
            error, self.fail_next_build = f"Build failed with status: FAILURE and message: {self.fail_next_build}", None
        if error is not None:
            return error
        assert source is not None
        error = checks.service_error(function, source) or self._secret_error(function["serviceConfig"])
        if error is None:
            return None
        action = "update" if service in self.run.services else "create"
        return f"Could not {action} Cloud Run service {service.rsplit('/', 1)[1]}. {error}"

    def _build_account_error(self, build: dict[str, Any]) -> str | None:
        """A user-chosen build service account needs the build's roles on the project (Google's custom-SA guide)."""
        if not build.get("serviceAccount"):
            return None  # the default build account: gcloud warns; not modelled
        member = "serviceAccount:" + build["serviceAccount"].rsplit("/", 1)[1]
        granted = {role for role in (BUILDER_ROLE, *BUILD_ROLES)
                   if member in self.plane.apis["crm"].policies.members(self.plane.project_id, role)}
        missing = [] if BUILDER_ROLE in granted else [role for role in BUILD_ROLES if role not in granted]
        if not missing:
            return None
        return ("Build failed with status: FAILURE. Could not build the function due to a missing permission on the "
                "build service account. If you didn't revoke that permission explicitly, this could be caused by a "
                "change in the organization policies. Please refer to the following documentation for more details "
                "and resolution: https://cloud.google.com/functions/docs/troubleshooting#build-service-account "
                f"({member} lacks {', '.join(missing)} on project {self.plane.project_id})")

    def _secret_error(self, config: dict[str, Any]) -> str | None:
        member = f"serviceAccount:{config['serviceAccountEmail']}"
        plain = len(config.get("environmentVariables") or {})  # Cloud Run lists them first in the container's env
        for index, secret in enumerate(config.get("secretEnvironmentVariables") or [], start=plain):
            if secret.get("projectId") not in (None, self.plane.project_id, self.plane.project_number):
                return f"spec.template.spec.containers.env[{index}]: secrets of another project are not modelled"
            problem = self.plane.apis["secretmanager"].accessible(secret.get("secret", ""),
                                                                  secret.get("version", "latest"), member)
            if problem:
                return f"spec.template.spec.containers.env[{index}].value_from.secret_key_ref.name: {problem}"
        return None

    def _operation(self, key: str, verb: str, function: dict[str, Any] | None, error: str | None) -> dict[str, Any]:
        location = key.rsplit("/functions/", 1)[0]
        name = f"{location}/operations/operation-{int(time.time() * 1000)}-{uuid.uuid4().hex[:13]}"
        stages = [{"name": stage, "state": "COMPLETE", "message": ""} for stage in ("BUILD", "SERVICE")]
        metadata = {"@type": "type.googleapis.com/google.cloud.functions.v2.OperationMetadata",
                    "createTime": now(), "endTime": now(), "target": key, "verb": verb, "apiVersion": "v2",
                    "cancelRequested": False, "stages": [] if verb == "delete" else stages,
                    "operationType": f"{verb.upper()}_FUNCTION"}
        if error:
            operation = {"name": name, "done": True, "metadata": metadata,
                         "error": {"code": _RPC_INVALID_ARGUMENT, "message": error}}
            self.plane.operations[name] = operation
            return operation
        # a snapshot: the stored function changes with the next deploy, the finished operation does not
        response = {"@type": "type.googleapis.com/google.cloud.functions.v2.Function", **copy.deepcopy(function or {})}
        return self.operation(name, response=response if function else {
            "@type": "type.googleapis.com/google.protobuf.Empty"}, metadata=metadata)


class UploadApi(Api):
    """The signed Cloud Storage URL that generateUploadUrl hands out: gcloud PUTs the source zip to it."""

    prefix = "upload"
    service = ""

    def __init__(self, plane: Any):
        super().__init__(plane)
        self.route("PUT", r"/([0-9a-f]+)", self.put)

    def put(self, request: Request, upload: str) -> dict[str, Any]:
        uploads = self.plane.apis["functions"].uploads
        if f"{upload}.zip" not in uploads:
            raise GoogleError(403, "Invalid signature: the upload URL was not issued or has expired.",
                              "PERMISSION_DENIED")
        uploads[f"{upload}.zip"] = request.raw
        return {}


class CloudBuildApi(Api):
    """The one Cloud Build call gcloud makes on a deploy without --build-service-account: which account builds.

    Reached only when ENDPOINTS maps ``cloudbuild`` to this prefix.
    """

    prefix = "cloudbuild"
    service = "cloudbuild.googleapis.com"

    def __init__(self, plane: Any):
        super().__init__(plane)
        self.route("GET", r"/v1/projects/([^/]+)/locations/([^/]+)/defaultServiceAccount", self.default_account)

    def default_account(self, request: Request, segment: str, region: str) -> dict[str, Any]:
        project = self.plane.project(segment)
        email = f"{self.plane.project_number}-compute@developer.gserviceaccount.com"
        return {"name": f"projects/{project}/locations/{region}/defaultServiceAccount",
                "serviceAccountEmail": f"projects/{project}/serviceAccounts/{email}"}


APIS = (FunctionsApi, RunApi, UploadApi, CloudBuildApi)
