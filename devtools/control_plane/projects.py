"""Resource Manager v1 (the project, its IAM policy) and Service Usage v1 (which APIs are enabled).

Both are always reachable, as on Google: gcloud needs them to enable everything else.
Service Usage refuses a service name it does not know with the 403 Google answers for a
typo, so a misspelt ``gcloud services enable`` fails here too.
"""

from __future__ import annotations

import uuid
from functools import cached_property
from typing import Any

from devtools.control_plane.iam_policy import policy_store
from devtools.control_plane.server import Api, GoogleError, Request, invalid

# The services a project may enable, as far as deploy.sh and its neighbours go (Google knows many more).
KNOWN_SERVICES = {
    "artifactregistry.googleapis.com": "Artifact Registry API",
    "certificatemanager.googleapis.com": "Certificate Manager API",
    "cloudbuild.googleapis.com": "Cloud Build API",
    "cloudfunctions.googleapis.com": "Cloud Functions API",
    "cloudresourcemanager.googleapis.com": "Cloud Resource Manager API",
    "compute.googleapis.com": "Compute Engine API",
    "iam.googleapis.com": "Identity and Access Management (IAM) API",
    "iamcredentials.googleapis.com": "IAM Service Account Credentials API",
    "logging.googleapis.com": "Cloud Logging API",
    "monitoring.googleapis.com": "Cloud Monitoring API",
    "networksecurity.googleapis.com": "Network Security API",
    "pubsub.googleapis.com": "Cloud Pub/Sub API",
    "redis.googleapis.com": "Google Cloud Memorystore for Redis API",
    "run.googleapis.com": "Cloud Run Admin API",
    "secretmanager.googleapis.com": "Secret Manager API",
    "serviceusage.googleapis.com": "Service Usage API",
    "storage.googleapis.com": "Cloud Storage API",
    "sts.googleapis.com": "Security Token Service API",
    "vpcaccess.googleapis.com": "Serverless VPC Access API",
}
_BATCH_LIMIT = 20  # Google's cap on serviceIds per batchEnable


class ServiceNotFound(GoogleError):
    """Service Usage's answer for a service that does not exist, with the details gcloud prints."""

    def __init__(self, names: list[str]):
        joined = ",".join(names)
        super().__init__(403, f"Not found or permission denied for service(s): {joined}.", "PERMISSION_DENIED")
        self.details = [{"@type": "type.googleapis.com/google.rpc.ErrorInfo",
                         "reason": "SERVICE_CONFIG_NOT_FOUND_OR_PERMISSION_DENIED",
                         "domain": "serviceusage.googleapis.com", "metadata": {"services": joined}}]

    def body(self) -> dict[str, Any]:
        body = super().body()
        body["error"]["details"] = self.details
        return body


class ProjectsApi(Api):
    """cloudresourcemanager v1: projects.get, getIamPolicy, setIamPolicy."""

    prefix = "crm"
    service = ""

    def __init__(self, plane: Any):
        super().__init__(plane)
        self.route("GET", r"/v1/projects/([^/:]+)", self.get)
        self.route("POST", r"/v1/projects/([^/:]+):getIamPolicy", self.get_iam_policy)
        self.route("POST", r"/v1/projects/([^/:]+):setIamPolicy", self.set_iam_policy, "setIamPolicy")

    @cached_property
    def policies(self) -> Any:
        """Project-level IAM policies keyed by project id (other modules check grants here)."""
        return policy_store(self.plane)

    def _project(self, segment: str) -> str:
        try:
            return self.plane.project(segment)
        except GoogleError:
            # Resource Manager does not say whether the project exists.
            raise GoogleError(403, "The caller does not have permission", "PERMISSION_DENIED") from None

    def get(self, request: Request, segment: str) -> dict[str, Any]:
        project = self._project(segment)
        return {"projectNumber": self.plane.project_number, "projectId": project, "lifecycleState": "ACTIVE",
                "name": project, "createTime": "2024-01-01T00:00:00.000Z",
                "parent": {"type": "organization", "id": "100000000001"}}

    def get_iam_policy(self, request: Request, segment: str) -> dict[str, Any]:
        return self.policies.get(self._project(segment))

    def set_iam_policy(self, request: Request, segment: str) -> dict[str, Any]:
        return self.policies.set(self._project(segment), request)


class ServiceUsageApi(Api):
    """serviceusage v1: services.get, list, enable, batchEnable; the plane's enabled_services is the state."""

    prefix = "serviceusage"
    service = ""

    def __init__(self, plane: Any):
        super().__init__(plane)
        self.route("GET", r"/v1/projects/([^/]+)/services", self.list)
        self.route("GET", r"/v1/projects/([^/]+)/services/([^/:]+)", self.get)
        self.route("POST", r"/v1/projects/([^/]+)/services:batchEnable", self.batch_enable, "enable")
        self.route("POST", r"/v1/projects/([^/]+)/services/([^/:]+):enable", self.enable, "enable")

    def _service(self, name: str) -> dict[str, Any]:
        parent = f"projects/{self.plane.project_number}"
        state = "ENABLED" if name in self.plane.enabled_services else "DISABLED"
        return {"name": f"{parent}/services/{name}", "parent": parent, "state": state,
                "config": {"name": name, "title": KNOWN_SERVICES.get(name, name)}}

    def get(self, request: Request, segment: str, name: str) -> dict[str, Any]:
        self.plane.project(segment)
        if name not in KNOWN_SERVICES:
            raise ServiceNotFound([name])
        return self._service(name)

    def list(self, request: Request, segment: str) -> dict[str, Any]:
        self.plane.project(segment)
        wanted = (request.arg("filter") or "").replace(" ", "")
        if wanted not in ("", "state:ENABLED", "state:DISABLED"):
            raise invalid(f"Invalid filter: {request.arg('filter')}")
        services = [self._service(name) for name in sorted(KNOWN_SERVICES)]
        if wanted:
            services = [service for service in services if service["state"] == wanted.split(":")[1]]
        return {"services": services}

    def _enable(self, names: list[str]) -> dict[str, Any]:
        unknown = [name for name in names if name not in KNOWN_SERVICES]
        if unknown:
            raise ServiceNotFound(unknown)
        self.plane.enabled_services.update(names)
        name = f"operations/acat.p2-{self.plane.project_number}-{uuid.uuid4()}"
        return self.operation(name, metadata={
            "@type": "type.googleapis.com/google.protobuf.Empty"}, response={
            "@type": "type.googleapis.com/google.api.serviceusage.v1.BatchEnableServicesResponse",
            "services": [self._service(service) for service in names]})

    def batch_enable(self, request: Request, segment: str) -> dict[str, Any]:
        self.plane.project(segment)
        names = request.json().get("serviceIds") or []
        if not names:
            raise invalid("Invalid value for field 'service_ids': required field not set")
        if len(names) > _BATCH_LIMIT:
            raise invalid(f"Too many services in the request; at most {_BATCH_LIMIT} services may be "
                          "enabled at once.")
        return self._enable(list(names))

    def enable(self, request: Request, segment: str, name: str) -> dict[str, Any]:
        self.plane.project(segment)
        operation = self._enable([name])
        operation["response"] = {"@type": "type.googleapis.com/google.api.serviceusage.v1.EnableServiceResponse",
                                 "service": self._service(name)}
        return operation


APIS = (ProjectsApi, ServiceUsageApi)
