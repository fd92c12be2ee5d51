"""Cloud Run admin API v1: the Knative-style Service behind each 2nd gen function, and its IAM policy.

gcloud reaches Cloud Run through the regional host ``<region>-google.fake``; the region is
the host's prefix. Services are created and rebuilt by functions.py on every deploy (as Cloud
Functions does); ``gcloud run services update`` may change service-level annotations such as
``run.googleapis.com/invoker-iam-disabled`` but, like Google, refuses a stale resourceVersion,
a renamed service and a value that is not a boolean.
"""

from __future__ import annotations

import hashlib
import random
import string
import time
from functools import cached_property
from typing import Any

from devtools.control_plane.iam_policy import policy_store
from devtools.control_plane.server import FAKE_HOST, Api, GoogleError, Request, invalid

KNATIVE = r"/apis/serving\.knative\.dev/v1/namespaces/([^/]+)/services"
INVOKER_IAM_DISABLED = "run.googleapis.com/invoker-iam-disabled"
INGRESS = "run.googleapis.com/ingress"
# Cloud Functions' ingressSettings -> the Cloud Run ingress annotation it sets on the service
INGRESS_ANNOTATIONS = {"ALLOW_ALL": "all", "ALLOW_INTERNAL_ONLY": "internal",
                       "ALLOW_INTERNAL_AND_GCLB": "internal-and-cloud-load-balancing"}
_BOOLEANS = ("true", "false")  # compared case-insensitively: gcloud sends Python's "True"


def now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S.000000Z", time.gmtime())


def service_url(name: str, project_number: str) -> str:
    digest = hashlib.sha256(f"{project_number}/{name}".encode()).hexdigest()[:10]
    return f"https://{name}-{digest}-uc.a.run.app"


def _resource_version() -> str:
    return "".join(random.choices(string.ascii_letters + string.digits, k=16))


class RunApi(Api):
    """Services keyed ``projects/P/locations/R/services/NAME``; IAM policies in ``policies`` by the same key."""

    prefix = "run"
    service = "run.googleapis.com"

    def __init__(self, plane: Any):
        super().__init__(plane)
        self.services: dict[str, dict[str, Any]] = {}
        self.route("GET", KNATIVE, self.list)
        self.route("GET", KNATIVE + r"/([^/]+)", self.get)
        self.route("PUT", KNATIVE + r"/([^/]+)", self.replace, "update")
        iam = r"/v1/projects/([^/]+)/locations/([^/]+)/services/([^/:]+)"
        self.route("GET", iam + ":getIamPolicy", self.get_iam_policy)
        self.route("POST", iam + ":getIamPolicy", self.get_iam_policy)
        self.route("POST", iam + ":setIamPolicy", self.set_iam_policy, "setIamPolicy")

    @cached_property
    def policies(self) -> Any:
        return policy_store(self.plane)

    def region(self, request: Request) -> str:
        region = request.host.removesuffix(f"-{FAKE_HOST}")
        if region == request.host:
            raise invalid("Cloud Run's Knative API is served by regional endpoints only")
        return region

    def key(self, project: str, region: str, name: str) -> str:
        return f"projects/{project}/locations/{region}/services/{name}"

    def _lookup(self, key: str, name: str) -> dict[str, Any]:
        service = self.services.get(key)
        if service is None:
            raise GoogleError(404, f"Resource '{name}' of kind 'SERVICE' in region '{key.split('/')[3]}' in "
                              f"project '{key.split('/')[1]}' does not exist.", "NOT_FOUND")
        return service

    # Knative surface

    def list(self, request: Request, namespace: str) -> dict[str, Any]:
        project, region = self.plane.project(namespace), self.region(request)
        prefix = self.key(project, region, "")
        items = [service for key, service in sorted(self.services.items()) if key.startswith(prefix)]
        return {"apiVersion": "serving.knative.dev/v1", "kind": "ServiceList", "items": items,
                "metadata": {}, "unreachable": []}

    def get(self, request: Request, namespace: str, name: str) -> dict[str, Any]:
        return self._lookup(self.key(self.plane.project(namespace), self.region(request), name), name)

    def replace(self, request: Request, namespace: str, name: str) -> dict[str, Any]:
        key = self.key(self.plane.project(namespace), self.region(request), name)
        current = self._lookup(key, name)
        body = request.json()
        metadata = body.get("metadata") or {}
        if metadata.get("name") != name:
            raise invalid(f"metadata.name: Service name '{metadata.get('name')}' does not match the name "
                          f"'{name}' in the request.")
        version = metadata.get("resourceVersion")
        if version and version != current["metadata"]["resourceVersion"]:
            raise GoogleError(409, f"Conflict for resource '{name}': version '{version}' was specified but "
                              f"current version is '{current['metadata']['resourceVersion']}'.", "ABORTED")
        annotations = metadata.get("annotations") or {}
        if annotations.get(INVOKER_IAM_DISABLED, "false").lower() not in _BOOLEANS:
            raise invalid(f"metadata.annotations[{INVOKER_IAM_DISABLED}]: Invalid value "
                          f"'{annotations[INVOKER_IAM_DISABLED]}': must be 'true' or 'false'.")
        if annotations.get(INGRESS, "all") not in INGRESS_ANNOTATIONS.values():
            raise invalid(f"metadata.annotations[{INGRESS}]: Invalid value '{annotations[INGRESS]}'.")
        if INVOKER_IAM_DISABLED in annotations:
            annotations[INVOKER_IAM_DISABLED] = annotations[INVOKER_IAM_DISABLED].lower()
        # Only what a user may change outside Cloud Functions is taken; the template stays the function's.
        kept = {key: value for key, value in current["metadata"]["annotations"].items()
                if key.startswith("serving.knative.dev/")}
        current["metadata"]["annotations"] = {**annotations, **kept}
        current["metadata"]["annotations"][INGRESS + "-status"] = annotations.get(INGRESS, "all")
        current["metadata"]["labels"] = metadata.get("labels") or {}
        self._bump(current)
        return current

    def invoker_iam_disabled(self, key: str) -> bool:
        return self.services[key]["metadata"]["annotations"].get(INVOKER_IAM_DISABLED) == "true"

    def _bump(self, service: dict[str, Any]) -> None:
        metadata = service["metadata"]
        metadata["generation"] += 1
        metadata["resourceVersion"] = _resource_version()
        service["status"]["observedGeneration"] = metadata["generation"]

    # IAM

    def _iam_key(self, project_segment: str, region: str, name: str) -> str:
        key = self.key(self.plane.project(project_segment), region, name)
        self._lookup(key, name)
        return key

    def get_iam_policy(self, request: Request, project: str, region: str, name: str) -> dict[str, Any]:
        return self.policies.get(self._iam_key(project, region, name))

    def set_iam_policy(self, request: Request, project: str, region: str, name: str) -> dict[str, Any]:
        return self.policies.set(self._iam_key(project, region, name), request)

    # Called by Cloud Functions

    def publish(self, key: str, function: dict[str, Any]) -> str:
        """Create or roll the function's service to a new revision; returns the revision name."""
        name = key.rsplit("/", 1)[1]
        config = function["serviceConfig"]
        current = self.services.get(key)
        count = int(current["status"]["latestCreatedRevisionName"].split("-")[-2]) + 1 if current else 1
        revision = f"{name}-{count:05d}-{''.join(random.choices(string.ascii_lowercase, k=3))}"
        url = service_url(name, self.plane.project_number)
        annotations = dict(current["metadata"]["annotations"]) if current else {
            "serving.knative.dev/creator": "service-" + self.plane.project_number
            + "@gcf-admin-robot.iam.gserviceaccount.com"}
        annotations[INGRESS] = annotations[INGRESS + "-status"] = INGRESS_ANNOTATIONS[config["ingressSettings"]]
        annotations["serving.knative.dev/lastModifier"] = annotations["serving.knative.dev/creator"]
        annotations["cloudfunctions.googleapis.com/function-id"] = name
        env = [{"name": k, "value": v} for k, v in sorted((config.get("environmentVariables") or {}).items())]
        env += [{"name": secret["key"], "valueFrom": {"secretKeyRef": {"name": secret["secret"],
                                                                        "key": secret["version"]}}}
                for secret in config.get("secretEnvironmentVariables") or []]
        labels = {**(function.get("labels") or {}), "goog-managed-by": "cloudfunctions",
                  "cloud.googleapis.com/location": key.split("/")[3]}
        service: dict[str, Any] = {
            "apiVersion": "serving.knative.dev/v1", "kind": "Service",
            "metadata": {
                "name": name, "namespace": self.plane.project_number, "labels": labels, "annotations": annotations,
                "selfLink": f"/apis/serving.knative.dev/v1/namespaces/{self.plane.project_number}/services/{name}",
                "uid": current["metadata"]["uid"] if current else hashlib.md5(key.encode()).hexdigest(),
                "generation": current["metadata"]["generation"] if current else 0,
                "creationTimestamp": current["metadata"]["creationTimestamp"] if current else now()},
            "spec": {"template": {
                "metadata": {"name": revision, "annotations": {
                    "autoscaling.knative.dev/minScale": str(config.get("minInstanceCount", 0)),
                    "autoscaling.knative.dev/maxScale": str(config.get("maxInstanceCount", 100))}},
                "spec": {"containerConcurrency": config.get("maxInstanceRequestConcurrency", 1),
                         "timeoutSeconds": config.get("timeoutSeconds", 60),
                         "serviceAccountName": config.get("serviceAccountEmail", ""),
                         "containers": [{"name": "worker", "image": f"us-central1-docker.pkg.dev/"
                                         f"{self.plane.project_id}/gcf-artifacts/{name}:version_{count}",
                                         "ports": [{"name": "http1", "containerPort": 8080}], "env": env,
                                         "resources": {"limits": {"cpu": config.get("availableCpu", "1"),
                                                                  "memory": config.get("availableMemory")}}}]}},
                "traffic": [{"percent": 100, "latestRevision": True}]},
            "status": {"url": url, "address": {"url": url}, "latestReadyRevisionName": revision,
                       "latestCreatedRevisionName": revision,
                       "traffic": [{"revisionName": revision, "percent": 100, "latestRevision": True}],
                       "conditions": [{"type": kind, "status": "True", "lastTransitionTime": now()}
                                      for kind in ("Ready", "ConfigurationsReady", "RoutesReady")]}}
        self._bump(service)
        self.services[key] = service
        return revision

    def remove(self, key: str) -> None:
        self.services.pop(key, None)
        self.policies.policies.pop(key, None)
