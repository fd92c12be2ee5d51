"""IAM v1 workload identity pools and their OIDC providers.

Both are soft-deleted as on Google: ``state: DELETED`` with an ``expireTime``
thirty days on, still describable, listed only with ``showDeleted``, their ids
still taken (a create answers 409) until undeleted or purged. A provider
cannot be created or changed in a deleted pool. Names carry the project
NUMBER, as Google returns them, whichever form the request used.
"""

from __future__ import annotations

import datetime
import re
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from devtools.control_plane.server import GoogleError, Request, failed_precondition, invalid, require

if TYPE_CHECKING:
    from devtools.control_plane.iam import IamApi

_ID = re.compile(r"^[a-z0-9-]{4,32}$")
_MAPPED_KEY = re.compile(r"^(google\.subject|google\.groups|attribute\.[a-z0-9_]{1,100})$")
_PROVIDER_KINDS = ("oidc", "aws", "saml", "x509")
_POOL_FIELDS = ("displayName", "description", "disabled")
_PROVIDER_FIELDS = (*_POOL_FIELDS, "attributeMapping", "attributeCondition", "oidc", "oidc.issuerUri",
                    "oidc.allowedAudiences", "oidc.jwksJson")
_PAIRS = {")": "(", "]": "[", "}": "{"}


def _not_found() -> GoogleError:
    return GoogleError(404, "Requested entity was not found.", "NOT_FOUND", "notFound")


def _already_exists() -> GoogleError:
    return GoogleError(409, "Requested entity already exists", "ALREADY_EXISTS", "alreadyExists")


def _check_id(kind: str, value: str | None) -> None:
    if not value or not _ID.match(value) or value.startswith("gcp-"):
        raise invalid(f"Invalid {kind} ID {value!r}: it must be 4 to 32 characters of [a-z0-9-], and the prefix "
                      "'gcp-' is reserved for Google.")


def _check_labels(body: dict[str, Any]) -> None:
    if len(body.get("displayName") or "") > 32:
        raise invalid("Invalid display name: it cannot exceed 32 characters.")
    if len(body.get("description") or "") > 256:
        raise invalid("Invalid description: it cannot exceed 256 characters.")


def _check_cel(expression: Any, what: str) -> None:
    """A light parse of a CEL expression: balanced brackets and quotes, and no more than Google's 2048 chars."""
    if not isinstance(expression, str) or not expression.strip() or len(expression) > 2048:
        raise invalid(f"Invalid {what}: expected a CEL expression of at most 2048 characters.")
    stack: list[str] = []
    quote = ""
    for char in expression:
        if quote:
            quote = "" if char == quote else quote
        elif char in "'\"":
            quote = char
        elif char in "([{":
            stack.append(char)
        elif char in _PAIRS and (not stack or stack.pop() != _PAIRS[char]):
            raise invalid(f"Invalid {what}: unbalanced '{char}' in {expression!r}.")
    if quote or stack:
        raise invalid(f"Invalid {what}: unterminated expression {expression!r}.")


def _check_provider(provider: dict[str, Any]) -> None:
    _check_labels(provider)
    kinds = [kind for kind in _PROVIDER_KINDS if provider.get(kind) is not None]
    if len(kinds) != 1:
        raise invalid("Exactly one of oidc, aws, saml or x509 must be set on a workload identity pool provider.")
    if kinds == ["oidc"]:
        issuer = (provider["oidc"] or {}).get("issuerUri") or ""
        parts = urlsplit(issuer)
        if parts.scheme != "https" or not parts.hostname:
            raise invalid(f"Invalid issuer URI {issuer!r}: an OIDC issuer must be an https URL.")
        audiences = provider["oidc"].get("allowedAudiences") or []
        if not isinstance(audiences, list) or not all(isinstance(a, str) and a for a in audiences):
            raise invalid("Invalid allowed audiences: expected a list of non-empty strings.")
        mapping = provider.get("attributeMapping") or {}
        if "google.subject" not in mapping:
            raise invalid("The attribute mapping of an OIDC provider must map google.subject.")
    mapping = provider.get("attributeMapping") or {}
    if not isinstance(mapping, dict) or len(mapping) > 50:
        raise invalid("Invalid attribute mapping: expected at most 50 attributes.")
    for key, value in mapping.items():
        if not _MAPPED_KEY.match(key):
            raise invalid(f"Invalid attribute mapping key {key!r}: expected google.subject, google.groups or "
                          "attribute.NAME with NAME of [a-z0-9_]{1,100}.")
        _check_cel(value, f"attribute mapping for {key}")
        if "assertion" not in value:
            raise invalid(f"Invalid attribute mapping for {key}: {value!r} does not refer to the assertion.")
    if provider.get("attributeCondition") is not None:
        _check_cel(provider["attributeCondition"], "attribute condition")


class WorkloadIdentity:
    """Pools and providers keyed by relative name with the project number, in Google's JSON shape."""

    def __init__(self, api: IamApi):
        self.api = api
        self.plane = api.plane
        self.pools: dict[str, dict[str, Any]] = {}
        self.providers: dict[str, dict[str, Any]] = {}

    def register(self) -> None:
        pools = r"/v1/projects/([^/]+)/locations/([^/]+)/workloadIdentityPools"
        pool = pools + r"/([^/:]+)"
        providers = pool + r"/providers"
        provider = providers + r"/([^/:]+)"
        route = self.api.route
        route("POST", pools, self.create_pool, "create")
        route("GET", pools, self.list_pools)
        route("GET", pool, self.get_pool)
        route("PATCH", pool, self.update_pool, "update")
        route("DELETE", pool, self.delete_pool, "delete")
        route("POST", pool + ":undelete", self.undelete_pool, "undelete")
        route("POST", providers, self.create_provider, "create")
        route("GET", providers, self.list_providers)
        route("GET", provider, self.get_provider)
        route("PATCH", provider, self.update_provider, "update")
        route("DELETE", provider, self.delete_provider, "delete")
        route("POST", provider + ":undelete", self.undelete_provider, "undelete")

    def pool_exists(self, name: str) -> bool:
        """Whether ``projects/<number>/locations/global/workloadIdentityPools/<id>`` exists and is ACTIVE."""
        pool = self.pools.get(name)
        return pool is not None and pool["state"] == "ACTIVE"

    # -- helpers ---------------------------------------------------------------------------------------------

    def _parent(self, project: str, location: str) -> str:
        self.plane.project(project)
        if location != "global":
            raise invalid(f"Invalid location '{location}': workload identity pools are global.")
        return f"projects/{self.plane.project_number}/locations/global"

    def _pool(self, project: str, location: str, pool_id: str) -> dict[str, Any]:
        pool = self.pools.get(f"{self._parent(project, location)}/workloadIdentityPools/{pool_id}")
        if pool is None:
            raise _not_found()
        return pool

    def _provider(self, project: str, location: str, pool_id: str, provider_id: str) -> dict[str, Any]:
        name = f"{self._parent(project, location)}/workloadIdentityPools/{pool_id}/providers/{provider_id}"
        if name not in self.providers:
            raise _not_found()
        return self.providers[name]

    def _operation(self, resource: dict[str, Any], kind: str) -> dict[str, Any]:
        # gcloud polls <resource>/operations/<id>, then GETs the resource itself: the response stays empty.
        name = f"{resource['name']}/operations/{kind.lower()}-{self.plane.next_id()}"
        metadata = {"@type": f"type.googleapis.com/google.iam.v1.{kind}OperationMetadata"}
        return self.api.operation(name, metadata=metadata)

    @staticmethod
    def _soft_delete(resource: dict[str, Any]) -> None:
        expire = datetime.datetime.now(datetime.UTC) + datetime.timedelta(days=30)
        resource.update(state="DELETED", expireTime=expire.strftime("%Y-%m-%dT%H:%M:%S.%fZ"))

    @staticmethod
    def _undelete(resource: dict[str, Any], what: str) -> None:
        if resource["state"] != "DELETED":
            raise failed_precondition(f"The {what} is not deleted.")
        resource["state"] = "ACTIVE"
        resource.pop("expireTime", None)

    @staticmethod
    def _mask(request: Request, allowed: tuple[str, ...]) -> list[str]:
        mask = [field for field in (request.arg("updateMask") or "").split(",") if field]
        if not mask:
            raise invalid("Invalid value for field 'update_mask': required field not set")
        for field in mask:
            if field not in allowed:
                raise invalid(f"Invalid update_mask path: {field}")
        return mask

    @staticmethod
    def _merge(resource: dict[str, Any], body: dict[str, Any], mask: list[str]) -> dict[str, Any]:
        merged = {key: dict(value) if isinstance(value, dict) else value for key, value in resource.items()}
        for path in mask:
            head, _, tail = path.partition(".")
            source = (body.get(head) or {}) if tail else body
            target = merged.setdefault(head, {}) if tail else merged
            value = source.get(tail or head)
            if value in (None, "", [], {}, False):
                target.pop(tail or head, None)
            else:
                target[tail or head] = value
        return merged

    # -- pools -----------------------------------------------------------------------------------------------

    def create_pool(self, request: Request, project: str, location: str) -> dict[str, Any]:
        parent = self._parent(project, location)
        pool_id = request.arg("workloadIdentityPoolId")
        _check_id("workload identity pool", pool_id)
        name = f"{parent}/workloadIdentityPools/{pool_id}"
        if name in self.pools:  # a DELETED pool keeps its id for 30 days
            raise _already_exists()
        body = request.json()
        _check_labels(body)
        pool = {"name": name, "state": "ACTIVE"}
        pool.update({key: body[key] for key in _POOL_FIELDS if body.get(key)})
        self.pools[name] = pool
        return self._operation(pool, "WorkloadIdentityPool")

    def list_pools(self, request: Request, project: str, location: str) -> dict[str, Any]:
        parent = self._parent(project, location)
        show_deleted = (request.arg("showDeleted") or "").lower() == "true"
        pools = [pool for name, pool in sorted(self.pools.items())
                 if name.startswith(parent + "/") and (show_deleted or pool["state"] != "DELETED")]
        return {"workloadIdentityPools": pools} if pools else {}

    def get_pool(self, request: Request, project: str, location: str, pool_id: str) -> dict[str, Any]:
        return self._pool(project, location, pool_id)

    def update_pool(self, request: Request, project: str, location: str, pool_id: str) -> dict[str, Any]:
        pool = self._pool(project, location, pool_id)
        if pool["state"] == "DELETED":
            raise failed_precondition("Cannot update a deleted workload identity pool.")
        merged = self._merge(pool, request.json(), self._mask(request, _POOL_FIELDS))
        _check_labels(merged)
        self.pools[pool["name"]] = merged
        return self._operation(merged, "WorkloadIdentityPool")

    def delete_pool(self, request: Request, project: str, location: str, pool_id: str) -> dict[str, Any]:
        pool = self._pool(project, location, pool_id)
        if pool["state"] == "DELETED":
            raise failed_precondition("The workload identity pool is already deleted.")
        self._soft_delete(pool)
        return self._operation(pool, "WorkloadIdentityPool")

    def undelete_pool(self, request: Request, project: str, location: str, pool_id: str) -> dict[str, Any]:
        pool = self._pool(project, location, pool_id)
        self._undelete(pool, "workload identity pool")
        return self._operation(pool, "WorkloadIdentityPool")

    # -- providers -------------------------------------------------------------------------------------------

    def _active_pool(self, project: str, location: str, pool_id: str) -> dict[str, Any]:
        pool = self._pool(project, location, pool_id)
        if pool["state"] == "DELETED":
            raise failed_precondition(f"The workload identity pool {pool['name']} is deleted: undelete it before "
                                      "changing its providers.")
        return pool

    def create_provider(self, request: Request, project: str, location: str, pool_id: str) -> dict[str, Any]:
        pool = self._active_pool(project, location, pool_id)
        provider_id = request.arg("workloadIdentityPoolProviderId")
        _check_id("workload identity pool provider", provider_id)
        name = f"{pool['name']}/providers/{provider_id}"
        if name in self.providers:  # a DELETED provider keeps its id for 30 days
            raise _already_exists()
        body = request.json()
        if body.get("oidc") is not None:
            require(body, "attributeMapping")
        provider = {"name": name, "state": "ACTIVE"}
        provider.update({key: body[key] for key in (*_POOL_FIELDS, "attributeMapping", "attributeCondition",
                                                    *_PROVIDER_KINDS) if body.get(key) not in (None, "", {}, False)})
        _check_provider(provider)
        self.providers[name] = provider
        return self._operation(provider, "WorkloadIdentityPoolProvider")

    def list_providers(self, request: Request, project: str, location: str, pool_id: str) -> dict[str, Any]:
        pool = self._pool(project, location, pool_id)
        show_deleted = (request.arg("showDeleted") or "").lower() == "true"
        providers = [provider for name, provider in sorted(self.providers.items())
                     if name.startswith(pool["name"] + "/") and (show_deleted or provider["state"] != "DELETED")]
        return {"workloadIdentityPoolProviders": providers} if providers else {}

    def get_provider(self, request: Request, project: str, location: str, pool_id: str,
                     provider_id: str) -> dict[str, Any]:
        return self._provider(project, location, pool_id, provider_id)

    def update_provider(self, request: Request, project: str, location: str, pool_id: str,
                        provider_id: str) -> dict[str, Any]:
        self._active_pool(project, location, pool_id)
        provider = self._provider(project, location, pool_id, provider_id)
        if provider["state"] == "DELETED":
            raise failed_precondition("Cannot update a deleted workload identity pool provider.")
        mask = self._mask(request, _PROVIDER_FIELDS)
        body = request.json()
        touches_oidc = any(field == "oidc" or field.startswith("oidc.") for field in mask)
        if touches_oidc and provider.get("oidc") is None:
            raise invalid("Cannot change the type of a workload identity pool provider.")
        merged = self._merge(provider, body, mask)
        _check_provider(merged)
        self.providers[provider["name"]] = merged
        return self._operation(merged, "WorkloadIdentityPoolProvider")

    def delete_provider(self, request: Request, project: str, location: str, pool_id: str,
                        provider_id: str) -> dict[str, Any]:
        provider = self._provider(project, location, pool_id, provider_id)
        if provider["state"] == "DELETED":
            raise failed_precondition("The workload identity pool provider is already deleted.")
        self._soft_delete(provider)
        return self._operation(provider, "WorkloadIdentityPoolProvider")

    def undelete_provider(self, request: Request, project: str, location: str, pool_id: str,
                          provider_id: str) -> dict[str, Any]:
        self._active_pool(project, location, pool_id)
        provider = self._provider(project, location, pool_id, provider_id)
        self._undelete(provider, "workload identity pool provider")
        return self._operation(provider, "WorkloadIdentityPoolProvider")
