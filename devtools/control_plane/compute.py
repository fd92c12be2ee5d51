"""Compute Engine v1, as far as deploy.sh's load balancer goes.

Addresses, Google-managed SSL certificates, SSL policies, serverless network
endpoint groups, backend services, URL maps, target HTTPS proxies and global
forwarding rules. Every change answers with a finished ``compute#operation``
(gcloud then waits on it with ``.../operations/NAME/wait``). References between
resources must resolve, and a resource still referenced cannot be deleted, as on
Google. What each kind accepts is checked in ``compute_rules``.
"""

from __future__ import annotations

import datetime
import re
from collections.abc import Iterable
from typing import Any

from devtools.control_plane import compute_networks
from devtools.control_plane import compute_rules as rules
from devtools.control_plane.compute_refs import Ref, link, relative, short_kind
from devtools.control_plane.server import FAKE_HOST, Api, ControlPlane, GoogleError, Request, invalid, not_found

_P = r"/v1/projects/([^/]+)"
_GLOBAL = ("addresses", "sslCertificates", "sslPolicies", "backendServices", "urlMaps", "targetHttpsProxies",
           "forwardingRules")
_KINDS = {"addresses": "compute#address", "sslCertificates": "compute#sslCertificate",
          "sslPolicies": "compute#sslPolicy", "networkEndpointGroups": "compute#networkEndpointGroup",
          "backendServices": "compute#backendService", "urlMaps": "compute#urlMap",
          "targetHttpsProxies": "compute#targetHttpsProxy", "forwardingRules": "compute#forwardingRule"}
_NAME = re.compile(r"[a-z]([-a-z0-9]{0,61}[a-z0-9])?")
# Compute's PATCH and PUT exist only for these; the others are immutable or use set* methods.
_PATCHABLE = ("sslPolicies", "backendServices", "urlMaps", "targetHttpsProxies", "forwardingRules")
_UPDATABLE = ("backendServices", "urlMaps")
_OUTPUT_ONLY = ("kind", "id", "creationTimestamp", "selfLink", "name", "region", "fingerprint", "usedBy", "users",
                "status", "enabledFeatures", "warnings", "size")


def _now() -> str:
    return datetime.datetime.now(datetime.UTC).isoformat(timespec="milliseconds")


def _filtered(request: Request, items: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    """Compute's list ``filter`` in the one form gcloud rewrites ``--filter=name=X`` to: ``FIELD eq|ne "RE2"``."""
    match = re.fullmatch(r'(\w+) (eq|ne) "?(.*?)"?', request.arg("filter") or "")
    if not match:
        return list(items)
    field, operator, pattern = match.groups()
    return [item for item in items if bool(re.fullmatch(pattern, str(item.get(field, "")))) == (operator == "eq")]


class ComputeApi(Api):
    prefix = "compute"
    service = "compute.googleapis.com"

    def __init__(self, plane: ControlPlane):
        super().__init__(plane)
        self.addresses: dict[str, dict[str, Any]] = {}
        self.ssl_certificates: dict[str, dict[str, Any]] = {}
        self.ssl_policies: dict[str, dict[str, Any]] = {}
        self.network_endpoint_groups: dict[str, dict[str, Any]] = {}
        self.backend_services: dict[str, dict[str, Any]] = {}
        self.url_maps: dict[str, dict[str, Any]] = {}
        self.target_https_proxies: dict[str, dict[str, Any]] = {}
        self.forwarding_rules: dict[str, dict[str, Any]] = {}
        self.operations: dict[str, dict[str, Any]] = {}
        collections = "|".join(_GLOBAL)
        self.route("GET", rf"{_P}/global/({collections})", self.list_global)
        self.route("POST", rf"{_P}/global/({collections})", self.insert_global, "create")
        self.route("GET", rf"{_P}/global/({collections})/([^/]+)", self.get_global)
        self.route("DELETE", rf"{_P}/global/({collections})/([^/]+)", self.delete_global, "delete")
        self.route("PATCH", rf"{_P}/global/({collections})/([^/]+)", self.patch_global, "update")
        self.route("PUT", rf"{_P}/global/({collections})/([^/]+)", self.update_global, "update")
        negs = rf"{_P}/regions/([^/]+)/networkEndpointGroups"
        self.route("GET", negs, self.list_negs)
        self.route("POST", negs, self.insert_neg, "create")
        self.route("GET", rf"{negs}/([^/]+)", self.get_neg)
        self.route("DELETE", rf"{negs}/([^/]+)", self.delete_neg, "delete")
        self.route("GET", rf"{_P}/aggregated/({collections}|networkEndpointGroups)", self.aggregated)
        self.route("GET", rf"{_P}/global/operations/([^/]+)", self.get_global_operation)
        self.route("POST", rf"{_P}/global/operations/([^/]+)/wait", self.get_global_operation)
        self.route("GET", rf"{_P}/regions/([^/]+)/operations/([^/]+)", self.get_region_operation)
        self.route("POST", rf"{_P}/regions/([^/]+)/operations/([^/]+)/wait", self.get_region_operation)
        self.networks: dict[str, dict[str, Any]] = {}
        compute_networks.install(self)

    # -- state -------------------------------------------------------------------------------------------------

    def store(self, collection: str) -> dict[str, dict[str, Any]]:
        """The resources of a collection; one that is not modelled (instance groups...) is empty."""
        return {"addresses": self.addresses, "sslCertificates": self.ssl_certificates,
                "sslPolicies": self.ssl_policies, "networkEndpointGroups": self.network_endpoint_groups,
                "backendServices": self.backend_services, "urlMaps": self.url_maps,
                "targetHttpsProxies": self.target_https_proxies,
                "forwardingRules": self.forwarding_rules}.get(collection, {})

    def find(self, ref: Ref) -> dict[str, Any]:
        """The resource a reference names, or Google's 404 for it."""
        resource = self.store(ref.collection).get(ref.name)
        if resource is None or (resource.get("region", "").rsplit("/", 1)[-1] or None) != ref.region:
            raise not_found(ref.relative)
        return resource

    def users(self, target: str) -> list[str]:
        """Self links of the resources whose references name ``target`` (a self link)."""
        found = []
        for collection in _KINDS:
            for resource in self.store(collection).values():
                if target in rules.references(collection, resource):
                    found.append(resource["selfLink"])
        return found

    def server_tls_policy_exists(self, name: str) -> bool:
        """Whether the networksecurity module knows ``projects/P/locations/L/serverTlsPolicies/T``."""
        networksecurity = self.plane.apis.get("networksecurity")
        return name in getattr(networksecurity, "server_tls_policies", {})

    def _view(self, collection: str, resource: dict[str, Any]) -> dict[str, Any]:
        """A stored resource as Google returns it: with the fields Google derives at read time."""
        view = dict(resource)
        if collection == "addresses":
            users = [rule["selfLink"] for rule in self.forwarding_rules.values()
                     if rule.get("IPAddress") == resource["address"]]
            view["status"] = "IN_USE" if users else "RESERVED"
            if users:
                view["users"] = users
        elif collection == "backendServices":
            used_by = [{"reference": user} for user in self.users(resource["selfLink"])]
            if used_by:
                view["usedBy"] = used_by
        return view

    # -- operations --------------------------------------------------------------------------------------------

    def compute_operation(self, project: str, kind: str, target: str, target_id: str,
                          region: str | None = None) -> dict[str, Any]:
        name = f"operation-{self.plane.next_id()}-{target_id[-8:]}"
        scope = f"regions/{region}" if region else "global"
        now = _now()
        operation = {"kind": "compute#operation", "id": target_id, "name": name, "operationType": kind,
                     "targetLink": target, "targetId": target_id, "status": "DONE", "progress": 100,
                     "user": "deployer@example.com", "insertTime": now, "startTime": now, "endTime": now,
                     "selfLink": f"http://{FAKE_HOST}/compute/v1/projects/{project}/{scope}/operations/{name}"}
        if region:
            operation["region"] = f"http://{FAKE_HOST}/compute/v1/projects/{project}/regions/{region}"
        self.operations[f"{scope}/{name}"] = operation
        return operation

    def get_global_operation(self, request: Request, project: str, name: str) -> dict[str, Any]:
        self.plane.project(project)
        return self._operation(project, "global", name)

    def get_region_operation(self, request: Request, project: str, region: str, name: str) -> dict[str, Any]:
        self.plane.project(project)
        return self._operation(project, f"regions/{region}", name)

    def _operation(self, project: str, scope: str, name: str) -> dict[str, Any]:
        operation = self.operations.get(f"{scope}/{name}")
        if operation is None:
            raise not_found(f"projects/{project}/{scope}/operations/{name}")
        return operation

    # -- global collections ------------------------------------------------------------------------------------

    def list_global(self, request: Request, project: str, collection: str) -> dict[str, Any]:
        project = self.plane.project(project)
        items = [self._view(collection, item) for item in _filtered(request, self.store(collection).values())]
        return self._list(project, f"global/{collection}", _KINDS[collection], items)

    def get_global(self, request: Request, project: str, collection: str, name: str) -> dict[str, Any]:
        project = self.plane.project(project)
        return self._view(collection, self.find(Ref(project, collection, name)))

    def insert_global(self, request: Request, project: str, collection: str) -> dict[str, Any]:
        project = self.plane.project(project)
        resource = self._new(project, collection, request.json())
        resource.update(rules.check(self, collection, project, resource))
        self.store(collection)[resource["name"]] = resource
        return self.compute_operation(project, "insert", resource["selfLink"], resource["id"])

    def delete_global(self, request: Request, project: str, collection: str, name: str) -> dict[str, Any]:
        project = self.plane.project(project)
        resource = self.find(Ref(project, collection, name))
        self._refuse_in_use(collection, resource)
        del self.store(collection)[name]
        return self.compute_operation(project, "delete", resource["selfLink"], resource["id"])

    def patch_global(self, request: Request, project: str, collection: str, name: str) -> dict[str, Any]:
        return self._change(request, project, collection, name, "patch")

    def update_global(self, request: Request, project: str, collection: str, name: str) -> dict[str, Any]:
        return self._change(request, project, collection, name, "update")

    def _change(self, request: Request, project: str, collection: str, name: str, verb: str) -> dict[str, Any]:
        project = self.plane.project(project)
        allowed = _PATCHABLE if verb == "patch" else _UPDATABLE
        if collection not in allowed:
            raise GoogleError(405, f"Method {request.method} not allowed on {collection}", "METHOD_NOT_ALLOWED")
        current = self.find(Ref(project, collection, name))
        body = request.json()
        if body.get("fingerprint") is not None and not rules.same_fingerprint(body["fingerprint"], current):
            raise GoogleError(412, "Invalid fingerprint. The resource was changed since it was read; read it "
                              "again and retry.", "FAILED_PRECONDITION", "conditionNotMet")
        if body.get("name") not in (None, name):
            raise invalid(f"Invalid value for field 'resource.name': '{body['name']}'. The name of a resource "
                          "cannot be changed.")
        if verb == "patch":  # a field sent as null is cleared; the others are merged
            changed = {**current, **{key: value for key, value in body.items() if key not in _OUTPUT_ONLY}}
            changed = {key: value for key, value in changed.items() if value is not None}
        else:
            changed = {key: value for key, value in current.items() if key in _OUTPUT_ONLY}
            changed.update({key: value for key, value in body.items() if key not in _OUTPUT_ONLY})
        changed.update(rules.check(self, collection, project, changed))
        self.store(collection)[name] = changed
        return self.compute_operation(project, verb, changed["selfLink"], changed["id"])

    # -- network endpoint groups (regional) -------------------------------------------------------------------

    def list_negs(self, request: Request, project: str, region: str) -> dict[str, Any]:
        project = self.plane.project(project)
        items = [neg for neg in _filtered(request, self.network_endpoint_groups.values())
                 if neg["region"].endswith(f"/{region}")]
        return self._list(project, f"regions/{region}/networkEndpointGroups", _KINDS["networkEndpointGroups"], items)

    def aggregated(self, request: Request, project: str, collection: str) -> dict[str, Any]:
        """``list`` without a scope flag: every scope's resources, keyed ``global`` or ``regions/R``."""
        project = self.plane.project(project)
        scoped: dict[str, Any] = {}
        for item in _filtered(request, self.store(collection).values()):
            scope = f"regions/{item['region'].rsplit('/', 1)[-1]}" if "region" in item else "global"
            scoped.setdefault(scope, {collection: []})[collection].append(self._view(collection, item))
        return {"kind": f"{_KINDS[collection]}AggregatedList", "id": f"projects/{project}/aggregated/{collection}",
                "items": scoped, "selfLink": f"http://{FAKE_HOST}/compute/v1/projects/{project}/aggregated/{collection}"}

    def get_neg(self, request: Request, project: str, region: str, name: str) -> dict[str, Any]:
        project = self.plane.project(project)
        return self.find(Ref(project, "networkEndpointGroups", name, region))

    def insert_neg(self, request: Request, project: str, region: str) -> dict[str, Any]:
        project = self.plane.project(project)
        rules.require_region(region)
        resource = self._new(project, "networkEndpointGroups", request.json(), region)
        resource.update(rules.check(self, "networkEndpointGroups", project, resource))
        self.network_endpoint_groups[resource["name"]] = resource
        return self.compute_operation(project, "insert", resource["selfLink"], resource["id"], region)

    def delete_neg(self, request: Request, project: str, region: str, name: str) -> dict[str, Any]:
        project = self.plane.project(project)
        resource = self.find(Ref(project, "networkEndpointGroups", name, region))
        self._refuse_in_use("networkEndpointGroups", resource)
        del self.network_endpoint_groups[name]
        return self.compute_operation(project, "delete", resource["selfLink"], resource["id"], region)

    # -- shared ------------------------------------------------------------------------------------------------

    def _new(self, project: str, collection: str, body: dict[str, Any], region: str | None = None) -> dict[str, Any]:
        name = body.get("name")
        if not name:
            raise invalid("Invalid value for field 'resource.name': ''. Must be a match of regex "
                          "'(?:[a-z](?:[-a-z0-9]{0,61}[a-z0-9])?)'")
        if not isinstance(name, str) or not _NAME.fullmatch(name):
            raise invalid(f"Invalid value for field 'resource.name': '{name}'. Must be a match of regex "
                          "'(?:[a-z](?:[-a-z0-9]{0,61}[a-z0-9])?)'")
        ref = Ref(project, collection, name, region)
        if name in self.store(collection):
            raise GoogleError(409, f"The resource '{ref.relative}' already exists", "ALREADY_EXISTS",
                              "alreadyExists")
        resource = {key: value for key, value in body.items() if key not in _OUTPUT_ONLY and value is not None}
        resource.update({"kind": _KINDS[collection], "id": str(7_000_000_000_000_000_000 + int(self.plane.next_id())),
                         "creationTimestamp": _now(), "name": name, "selfLink": link(ref)})
        if region:
            resource["region"] = f"http://{FAKE_HOST}/compute/v1/projects/{project}/regions/{region}"
        return resource

    def _refuse_in_use(self, collection: str, resource: dict[str, Any]) -> None:
        users = self.users(resource["selfLink"])
        if collection == "addresses":
            users += [rule["selfLink"] for rule in self.forwarding_rules.values()
                      if rule.get("IPAddress") == resource["address"]]
        if users:
            raise invalid(f"The {short_kind(collection)} resource '{relative(resource['selfLink'])}' is already "
                          f"being used by '{relative(users[0])}'", "resourceInUseByAnotherResource")

    @staticmethod
    def _list(project: str, path: str, kind: str, items: list[dict[str, Any]]) -> dict[str, Any]:
        listing: dict[str, Any] = {"kind": f"{kind}List", "id": f"projects/{project}/{path}",
                                   "selfLink": f"http://{FAKE_HOST}/compute/v1/projects/{project}/{path}"}
        if items:  # Compute leaves out an empty items list
            listing["items"] = items
        return listing


APIS = (ComputeApi,)
