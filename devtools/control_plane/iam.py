"""IAM v1: service accounts and their IAM policies; custom roles and workload identity live beside it.

One ``IamApi`` owns the whole ``iam`` prefix (the server routes by prefix) and
delegates custom roles to ``iam_roles.RoleStore`` and workload identity pools
and providers to ``workload_identity.WorkloadIdentity``. Other modules ask it
``service_account_exists`` and ``role_exists`` when they check an IAM policy.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
from dataclasses import replace
from typing import Any

from devtools.control_plane.iam_policy import PREDEFINED_ROLES, policy_store
from devtools.control_plane.iam_roles import RoleStore, standard_base64
from devtools.control_plane.server import Api, ControlPlane, GoogleError, Request, invalid, require
from devtools.control_plane.workload_identity import WorkloadIdentity

_ACCOUNT_ID = re.compile(r"^[a-z]([-a-z0-9]*[a-z0-9])$")
_GOOGLE_ACCOUNT_ID = r"[a-zA-Z][a-zA-Z\d\-]*[a-zA-Z\d]"  # the pattern Google's refusal quotes
# Roles Google lets one grant on a service account; a project-level role such as roles/run.invoker is refused.
_SERVICE_ACCOUNT_ROLES = frozenset({
    "roles/owner", "roles/editor", "roles/viewer", "roles/iam.serviceAccountAdmin",
    "roles/iam.serviceAccountTokenCreator", "roles/iam.serviceAccountUser", "roles/iam.workloadIdentityUser",
    "roles/iam.serviceAccountOpenIdTokenCreator", "roles/iam.serviceAccountKeyAdmin",
})


def _unknown_account() -> GoogleError:
    return GoogleError(404, "Unknown service account", "NOT_FOUND")


class IamApi(Api):
    prefix = "iam"
    service = "iam.googleapis.com"

    def __init__(self, plane: ControlPlane):
        super().__init__(plane)
        # email -> the service account as Google returns it
        self.service_accounts: dict[str, dict[str, Any]] = {}
        self.roles = RoleStore(plane)
        self.workload_identity = WorkloadIdentity(self)
        # created lazily: the store asks this very Api whether roles and accounts exist
        self._policies: Any = None
        accounts = r"/v1/projects/([^/]+)/serviceAccounts"
        self.route("POST", accounts, self.create_account, "create")
        self.route("GET", accounts, self.list_accounts)
        self.route("GET", accounts + r"/([^/:]+)", self.get_account)
        self.route("DELETE", accounts + r"/([^/:]+)", self.delete_account, "delete")
        self.route("POST", accounts + r"/([^/:]+):getIamPolicy", self.get_account_policy)
        self.route("POST", accounts + r"/([^/:]+):setIamPolicy", self.set_account_policy, "setIamPolicy")
        self.roles.register(self)
        self.workload_identity.register()

    # -- what other modules and tests ask -------------------------------------------------------------------

    def service_account_exists(self, email: str) -> bool:
        if email in self.service_accounts:
            return True
        number = self.plane.project_number
        if email.startswith(f"service-{number}@") and email.endswith(".iam.gserviceaccount.com"):
            return True  # a service agent: Google makes it with the project
        # Google-managed default accounts exist once their API is on; a user-managed one only once created.
        managed = {f"{number}-compute@developer.gserviceaccount.com": "compute.googleapis.com",
                   f"{number}@cloudbuild.gserviceaccount.com": "cloudbuild.googleapis.com"}
        return managed.get(email) in self.plane.enabled_services

    def role_exists(self, role: str) -> bool:
        return role in PREDEFINED_ROLES or self.roles.active(role)

    @property
    def policies(self) -> Any:
        """The IAM policies of service accounts, keyed by ``projects/<id>/serviceAccounts/<email>``."""
        if self._policies is None:
            self._policies = policy_store(self.plane)
        return self._policies

    def account_policy(self, email: str) -> dict[str, Any]:
        return self.policies.get(f"projects/{self.plane.project_id}/serviceAccounts/{email}")

    # -- service accounts -----------------------------------------------------------------------------------

    def _account(self, project: str, key: str) -> dict[str, Any]:
        if project != "-":
            self.plane.project(project)
        account = self.service_accounts.get(key)
        if account is None:  # Google also accepts the account's unique id in place of its email
            account = next((a for a in self.service_accounts.values() if a["uniqueId"] == key), None)
        if account is None:
            raise _unknown_account()
        return account

    def create_account(self, request: Request, project: str) -> dict[str, Any]:
        project_id = self.plane.project(project)
        body = request.json()
        require(body, "accountId")
        account_id = body["accountId"]
        if not 6 <= len(account_id) <= 30:
            raise invalid(f'The account ID "{account_id}" does not have a length between 6 and 30.')
        if not _ACCOUNT_ID.match(account_id):
            raise invalid(f"{account_id} does not match {_GOOGLE_ACCOUNT_ID}.")
        email = f"{account_id}@{project_id}.iam.gserviceaccount.com"
        name = f"projects/{project_id}/serviceAccounts/{email}"
        if email in self.service_accounts:
            raise GoogleError(409, f"Service account {account_id} already exists within project "
                              f"projects/{project_id}.", "ALREADY_EXISTS", "alreadyExists")
        given = body.get("serviceAccount") or {}
        if len(given.get("displayName") or "") > 100:
            raise invalid("Display name must be at most 100 characters.")
        if len(given.get("description") or "") > 256:
            raise invalid("Description must be at most 256 characters.")
        unique_id = str(int(hashlib.sha256(email.encode()).hexdigest(), 16))[:21]
        account = {"name": name, "projectId": project_id, "uniqueId": unique_id, "email": email,
                   "etag": base64.b64encode(b"\x00" + unique_id[:6].encode()).decode(), "oauth2ClientId": unique_id}
        # Only these two are the caller's to set; Google ignores the rest of the body.
        account.update({key: given[key] for key in ("displayName", "description") if given.get(key)})
        self.service_accounts[email] = account
        return account

    def list_accounts(self, request: Request, project: str) -> dict[str, Any]:
        project_id = self.plane.project(project)
        accounts = [a for email, a in sorted(self.service_accounts.items()) if a["projectId"] == project_id]
        return {"accounts": accounts} if accounts else {}

    def get_account(self, request: Request, project: str, key: str) -> dict[str, Any]:
        return self._account(project, key)

    def delete_account(self, request: Request, project: str, key: str) -> dict[str, Any]:
        account = self._account(project, key)
        del self.service_accounts[account["email"]]
        self.policies.policies.pop(account["name"], None)
        return {}

    def _policy_target(self, project: str, key: str, permission: str) -> str:
        try:
            return self._account(project, key)["name"]
        except GoogleError as error:
            # IAM checks the caller's permission first, so a missing account reads as a denial.
            raise GoogleError(403, f"Permission '{permission}' denied on resource (or it may not exist).",
                              "PERMISSION_DENIED") from error

    def get_account_policy(self, request: Request, project: str, key: str) -> dict[str, Any]:
        return self.policies.get(self._policy_target(project, key, "iam.serviceAccounts.getIamPolicy"))

    def set_account_policy(self, request: Request, project: str, key: str) -> dict[str, Any]:
        name = self._policy_target(project, key, "iam.serviceAccounts.setIamPolicy")
        body = request.json()
        policy = body.get("policy")
        for binding in policy.get("bindings") or [] if isinstance(policy, dict) else []:
            role = binding.get("role", "")
            if role in PREDEFINED_ROLES and role not in _SERVICE_ACCOUNT_ROLES:
                raise invalid(f"Role {role} is not supported for this resource.", "badRequest")
        if isinstance(policy, dict) and isinstance(policy.get("etag"), str):
            # gcloud (apitools) sends bytes fields back url-safe encoded; Google compares the bytes.
            policy["etag"] = standard_base64(policy["etag"])
            request = replace(request, raw=json.dumps(body).encode())
        return self.policies.set(name, request)


APIS = (IamApi,)
