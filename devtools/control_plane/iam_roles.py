"""IAM v1 custom roles of a project, the predefined roles, and the permissions a custom role may hold.

A deleted custom role is soft-deleted as on Google: still describable with
``deleted: true``, listed only with ``showDeleted``, its id still taken (a
create is refused until it is purged), and it grants nothing meanwhile.
"""

from __future__ import annotations

import base64
import re
from typing import Any

from devtools.control_plane.iam_policy import PREDEFINED_ROLES
from devtools.control_plane.server import (
    Api,
    ControlPlane,
    GoogleError,
    Request,
    failed_precondition,
    invalid,
    one_of,
    require,
)

_ROLE_ID = re.compile(r"^[a-zA-Z0-9_.]{3,64}$")
STAGES = ("ALPHA", "BETA", "GA", "DEPRECATED", "DISABLED", "EAP")
_MUTABLE = ("title", "description", "includedPermissions", "stage")
# Permissions a custom role may name (Google knows thousands; an unknown one must fail as it does there).
PERMISSIONS = {
    "iam.serviceAccounts.signJwt": "Sign JWTs as the service account",
    "iam.serviceAccounts.signBlob": "Sign blobs as the service account",
    "iam.serviceAccounts.getAccessToken": "Create OAuth2 access tokens for the service account",
    "iam.serviceAccounts.getOpenIdToken": "Create OpenID Connect identity tokens for the service account",
    "iam.serviceAccounts.get": "View service accounts",
    "iam.serviceAccounts.actAs": "Act as the service account",
    "iam.serviceAccounts.implicitDelegation": "Delegate the service account's authority",
    "run.routes.invoke": "Invoke Cloud Run services",
    "secretmanager.versions.access": "Access secret versions",
    "logging.logEntries.create": "Write log entries",
    "monitoring.timeSeries.create": "Write metric data",
}


def standard_base64(value: str) -> str:
    """An etag as Google wrote it: apitools re-encodes bytes fields url-safe (``-_`` for ``+/``)."""
    return value.replace("-", "+").replace("_", "/")


def _not_found(name: str) -> GoogleError:
    return GoogleError(404, f"The role named {name} was not found.", "NOT_FOUND", "notFound")


class RoleStore:
    """Custom roles keyed by relative name ``projects/<project id>/roles/<ID>``, as Google returns them."""

    def __init__(self, plane: ControlPlane):
        self.plane = plane
        self.roles: dict[str, dict[str, Any]] = {}
        self._versions = 0

    def register(self, api: Api) -> None:
        roles = r"/v1/projects/([^/]+)/roles"
        api.route("POST", roles, self.create, "create")
        api.route("GET", roles, self.list)
        api.route("GET", roles + r"/([^/:]+)", self.get)
        api.route("PATCH", roles + r"/([^/:]+)", self.update, "update")
        api.route("DELETE", roles + r"/([^/:]+)", self.delete, "delete")
        api.route("POST", roles + r"/([^/:]+):undelete", self.undelete, "undelete")
        api.route("GET", r"/v1/roles/([^/:]+)", self.get_predefined)
        api.route("POST", r"/v1/permissions:queryTestablePermissions", self.testable_permissions)

    def __getitem__(self, name: str) -> dict[str, Any]:
        return self.roles[name]

    def __contains__(self, name: str) -> bool:
        return name in self.roles

    def active(self, name: str) -> bool:
        role = self.roles.get(name)
        return role is not None and not role.get("deleted")

    def _etag(self) -> str:
        self._versions += 1
        return base64.b64encode(b"\x07" + self._versions.to_bytes(6, "big")).decode()

    def _role(self, project: str, role_id: str) -> dict[str, Any]:
        name = f"projects/{self.plane.project(project)}/roles/{role_id}"
        if name not in self.roles:
            raise _not_found(name)
        return self.roles[name]

    @staticmethod
    def _check(role: dict[str, Any]) -> None:
        if len(role.get("title") or "") > 100:
            raise invalid("The title of a role must be at most 100 characters.")
        if len(role.get("description") or "") > 256:
            raise invalid("The description of a role must be at most 256 characters.")
        if role.get("stage") is not None:
            one_of(role["stage"], STAGES, "role.stage")
        permissions = role.get("includedPermissions") or []
        if not isinstance(permissions, list):
            raise invalid("Invalid value at 'role.included_permissions': expected a list of strings")
        for permission in permissions:
            if permission not in PERMISSIONS:
                raise invalid(f"Permission {permission} is not valid.")

    @staticmethod
    def _shown(role: dict[str, Any], full: bool = True) -> dict[str, Any]:
        shown = dict(role)
        if shown.get("stage") == "ALPHA":  # the enum's zero value: Google's JSON leaves it out
            del shown["stage"]
        if not full:
            shown.pop("includedPermissions", None)
        return shown

    def create(self, request: Request, project: str) -> dict[str, Any]:
        project_id = self.plane.project(project)
        body = request.json()
        require(body, "roleId")
        role_id = body["roleId"]
        if not _ROLE_ID.match(role_id):
            raise invalid(f"The role_id ({role_id}) is invalid: it must match [a-zA-Z0-9_\\.]{{3,64}}.")
        name = f"projects/{project_id}/roles/{role_id}"
        existing = self.roles.get(name)
        if existing is not None and existing.get("deleted"):
            # Google keeps a deleted role's id for weeks, and says so with a precondition, not a conflict.
            raise failed_precondition(f"You can't create a role_id ({role_id}) which has been marked for deletion.")
        if existing is not None:
            raise GoogleError(409, f"A role named {role_id} in projects/{project_id} already exists.",
                              "ALREADY_EXISTS", "alreadyExists")
        given = body.get("role") or {}
        self._check(given)
        role = {"name": name, "title": given.get("title") or role_id, "stage": given.get("stage") or "ALPHA",
                "etag": self._etag()}
        role.update({key: given[key] for key in ("description", "includedPermissions") if given.get(key)})
        self.roles[name] = role
        return self._shown(role)

    def list(self, request: Request, project: str) -> dict[str, Any]:
        project_id = self.plane.project(project)
        show_deleted = (request.arg("showDeleted") or "").lower() == "true"
        view = request.arg("view", "BASIC")
        one_of(view, ("BASIC", "FULL"), "view")
        roles = [self._shown(role, view == "FULL") for name, role in sorted(self.roles.items())
                 if name.startswith(f"projects/{project_id}/") and (show_deleted or not role.get("deleted"))]
        return {"roles": roles} if roles else {}

    def get(self, request: Request, project: str, role_id: str) -> dict[str, Any]:
        return self._shown(self._role(project, role_id))

    def update(self, request: Request, project: str, role_id: str) -> dict[str, Any]:
        role = self._role(project, role_id)
        if role.get("deleted"):
            raise failed_precondition(f"You can't update role_id ({role_id}) which has been marked for deletion.")
        body = request.json()
        if body.get("etag") and standard_base64(body["etag"]) != role["etag"]:
            raise GoogleError(409, "The etag in the request does not match the role's current etag: the role was "
                              "changed concurrently. Read it again and retry.", "ABORTED", "aborted")
        mask = [field for field in (request.arg("updateMask") or "").split(",") if field]
        for field in mask:
            if field not in _MUTABLE:
                raise invalid(f"Invalid update_mask path: {field}")
        # Without a mask Google replaces every mutable field the body carries.
        fields = mask or [field for field in _MUTABLE if field in body]
        updated = dict(role)
        for field in fields:
            if body.get(field) in (None, "", []):
                updated.pop(field, None)
            else:
                updated[field] = body[field]
        updated.setdefault("title", role_id)
        updated.setdefault("stage", "ALPHA")
        self._check(updated)
        updated["etag"] = self._etag()
        self.roles[role["name"]] = updated
        return self._shown(updated)

    def delete(self, request: Request, project: str, role_id: str) -> dict[str, Any]:
        role = self._role(project, role_id)
        if role.get("deleted"):
            raise failed_precondition(f"You can't delete role_id ({role_id}) which is already deleted.")
        role.update(deleted=True, etag=self._etag())
        return self._shown(role)

    def undelete(self, request: Request, project: str, role_id: str) -> dict[str, Any]:
        role = self._role(project, role_id)
        if not role.get("deleted"):
            raise failed_precondition(f"You can't undelete role_id ({role_id}) which is not deleted.")
        del role["deleted"]
        role["etag"] = self._etag()
        return self._shown(role)

    def get_predefined(self, request: Request, role_id: str) -> dict[str, Any]:
        name = f"roles/{role_id}"
        if name not in PREDEFINED_ROLES:
            raise _not_found(name)
        return {"name": name, "title": role_id, "stage": "GA", "etag": "AA=="}

    def testable_permissions(self, request: Request) -> dict[str, Any]:
        require(request.json(), "fullResourceName")
        return {"permissions": [{"name": name, "title": title, "stage": "GA"}
                                for name, title in sorted(PERMISSIONS.items())]}
