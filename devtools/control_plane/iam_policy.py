"""IAM policies as every Google API keeps them: getIamPolicy / setIamPolicy with an etag.

Google refuses a policy that names a role that does not exist, or a service
account that does not exist; ``check`` does the same, so a deploy that binds a
role before creating it fails here as it would on Google.
"""

from __future__ import annotations

import base64
import hashlib
import json
from collections.abc import Callable
from typing import Any

from devtools.control_plane.server import ControlPlane, GoogleError, Request, invalid

# Predefined roles deploy.sh may bind (Google has many more; a typo must fail as it does there).
PREDEFINED_ROLES = frozenset({
    "roles/run.invoker",
    "roles/secretmanager.secretAccessor",
    "roles/logging.logWriter",
    "roles/artifactregistry.writer",
    "roles/artifactregistry.reader",
    "roles/storage.objectViewer",
    "roles/cloudbuild.builds.builder",
    "roles/iam.serviceAccountTokenCreator",
    "roles/iam.serviceAccountUser",
    "roles/iam.workloadIdentityUser",
    "roles/monitoring.metricWriter",
})
_PUBLIC_MEMBERS = ("allUsers", "allAuthenticatedUsers")
_MEMBER_KINDS = ("user:", "group:", "domain:", "serviceAccount:", "principal://", "principalSet://", "deleted:")


def etag(policy: dict[str, Any]) -> str:
    digest = hashlib.sha256(json.dumps(policy.get("bindings", []), sort_keys=True).encode()).digest()
    return base64.b64encode(digest[:8]).decode()


class PolicyStore:
    """The IAM policies of one kind of resource, keyed by resource name."""

    def __init__(self, role_exists: Callable[[str], bool], account_exists: Callable[[str], bool],
                 public_members_refused: Callable[[], bool] = lambda: False):
        self.policies: dict[str, dict[str, Any]] = {}
        self._role_exists = role_exists
        self._account_exists = account_exists
        self._public_members_refused = public_members_refused

    def get(self, resource: str) -> dict[str, Any]:
        policy = self.policies.get(resource, {"version": 1, "bindings": []})
        return {**policy, "etag": etag(policy)}

    def set(self, resource: str, request: Request) -> dict[str, Any]:
        body = request.json()
        policy = body.get("policy")
        if not isinstance(policy, dict):
            raise invalid("Invalid value for field 'policy': required field not set")
        # gcloud sends the etag back url-safe encoded.
        sent = str(policy.get("etag", "")).replace("-", "+").replace("_", "/")
        if sent and sent != self.get(resource)["etag"]:
            raise GoogleError(409, "There were concurrent policy changes. Please retry the whole "
                              "read-modify-write with exponential backoff.", "ABORTED")
        bindings = policy.get("bindings") or []
        self.check(bindings)
        stored = {"version": policy.get("version", 1), "bindings": [b for b in bindings if b.get("members")]}
        self.policies[resource] = stored
        return self.get(resource)

    def members(self, resource: str, role: str) -> set[str]:
        return {member for binding in self.policies.get(resource, {}).get("bindings", [])
                if binding.get("role") == role for member in binding.get("members", [])}

    def check(self, bindings: list[dict[str, Any]]) -> None:
        for binding in bindings:
            role = binding.get("role", "")
            if not self._role_exists(role):
                raise invalid(f"Role ({role}) does not exist in the resource's hierarchy.", "badRequest")
            for member in binding.get("members", []):
                if member in _PUBLIC_MEMBERS:
                    if self._public_members_refused():
                        raise GoogleError(
                            400, "One or more users named in the policy do not belong to a permitted customer, "
                            "perhaps due to an organization policy.", "FAILED_PRECONDITION")
                    continue
                if not member.startswith(_MEMBER_KINDS):
                    raise invalid(f"Invalid member type for member '{member}'")
                if member.startswith("serviceAccount:") and not self._account_exists(member.split(":", 1)[1]):
                    raise invalid(f"Service account {member.split(':', 1)[1]} does not exist.", "badRequest")


def policy_store(plane: ControlPlane) -> PolicyStore:
    """IAM policies checked against ``plane``'s roles and service accounts (iam.py)."""
    iam = plane.apis["iam"]
    return PolicyStore(iam.role_exists, iam.service_account_exists, lambda: plane.public_access_forbidden)
