"""Certificate Manager trust configs and Network Security server TLS policies (the load balancer's mTLS).

Both APIs answer every change with a finished long-running operation named
``projects/P/locations/L/operations/operation-...``, which gcloud then polls.
A trust config's certificates are checked as the API documents them: each
``pemCertificate`` is one PEM certificate of at most 5 kB that parses as X.509,
and a trust config holds a single trust store. A server TLS policy in the form
Application Load Balancers accept needs an ``mtlsPolicy`` with a client
validation mode and may only name a trust config that exists; neither resource
may be deleted while something still uses it.
"""

from __future__ import annotations

import base64
import binascii
import datetime
import hashlib
import json
import re
from typing import Any

from cryptography import x509

from devtools.control_plane.server import (
    Api,
    ControlPlane,
    GoogleError,
    Request,
    failed_precondition,
    invalid,
    one_of,
)

MAX_PEM_BYTES = 5 * 1024  # "Each certificate provided in PEM format may occupy up to 5kB"
VALIDATION_MODES = ("ALLOW_INVALID_OR_MISSING_CLIENT_CERT", "REJECT_INVALID")
_ID = re.compile(r"[a-z]([a-z0-9-]{0,61}[a-z0-9])?")
# One PEM block; OpenSSL and Go both ignore trailing blanks and CR at a line's end, nothing else.
_PEM = re.compile(r"\s*-----BEGIN CERTIFICATE-----[ \t\r]*\n((?:[A-Za-z0-9+/=]+[ \t\r]*\n)+)"
                  r"-----END CERTIFICATE-----\s*")

_POLICY_REFERENCE = re.compile(r"projects/([^/]+)/locations/([^/]+/serverTlsPolicies/[^/]+)$")


def now() -> str:
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def resource_etag(resource: dict[str, Any]) -> str:
    digest = hashlib.sha256(json.dumps(resource, sort_keys=True).encode()).hexdigest()
    return f'"{digest[:27]}"'


def check_pem(value: Any, field: str) -> None:
    """Refuse anything but exactly one parseable X.509 certificate in PEM form."""
    if not isinstance(value, str) or not value.strip():
        raise invalid(f"Invalid value for field '{field}': required field not set")
    if len(value.encode()) > MAX_PEM_BYTES:
        raise invalid(f"{field}: a PEM certificate may occupy at most 5kB, got {len(value.encode())} bytes")
    blocks = value.count("-----BEGIN")
    if blocks != 1:
        raise invalid(f"{field}: expected exactly one PEM-encoded certificate, found {blocks}")
    match = _PEM.fullmatch(value if value.endswith("\n") else value + "\n")
    if not match:
        raise invalid(f"{field}: failed to parse the PEM certificate: malformed PEM block")
    try:
        der = base64.b64decode("".join(match.group(1).split()), validate=True)
        x509.load_der_x509_certificate(der)
    except (binascii.Error, ValueError) as error:
        raise invalid(f"{field}: failed to parse the PEM certificate: {error}") from error


def check_id(resource_id: str | None, kind: str) -> str:
    if not resource_id or not _ID.fullmatch(resource_id):
        raise invalid(f"{kind} id '{resource_id}' must match [a-z]([a-z0-9-]{{0,61}}[a-z0-9])?")
    return resource_id


class LocationApi(Api):
    """What both APIs share: global-only locations, finished operations, list with the '-' wildcard."""

    api_name = ""
    collection = ""
    kind = ""

    def __init__(self, plane: ControlPlane):
        super().__init__(plane)
        self.resources: dict[str, dict[str, Any]] = {}
        base = rf"/v1/projects/([^/]+)/locations/([^/]+)/{self.collection}"
        self.route("GET", base, self.list)
        self.route("POST", base, self.create, "create")
        self.route("GET", rf"{base}/([^/:]+)", self.get)
        self.route("PATCH", rf"{base}/([^/:]+)", self.patch, "update")
        self.route("DELETE", rf"{base}/([^/:]+)", self.delete, "delete")

    def location(self, project: str, location: str) -> str:
        project_id = self.plane.project(project)
        if location not in ("global", "-"):
            raise invalid(f"Location '{location}' is not supported for {self.kind}; use 'global'")
        return f"projects/{project_id}/locations/{location}"

    def name(self, project: str, location: str, resource_id: str) -> str:
        return f"{self.location(project, location)}/{self.collection}/{resource_id}"

    def lookup(self, name: str) -> dict[str, Any]:
        if name not in self.resources:
            raise GoogleError(404, f"Resource '{name}' was not found", "NOT_FOUND")
        return self.resources[name]

    def finished(self, parent: str, target: str, verb: str, response: dict[str, Any] | None) -> dict[str, Any]:
        operation_id = f"operation-{int(datetime.datetime.now().timestamp() * 1000)}-{self.plane.next_id()}"
        body = {"@type": f"type.googleapis.com/google.cloud.{self.api_name}.v1.{self.kind}", **response} \
            if response is not None else {"@type": "type.googleapis.com/google.protobuf.Empty"}
        metadata = {"@type": f"type.googleapis.com/google.cloud.{self.api_name}.v1.OperationMetadata",
                    "createTime": now(), "endTime": now(), "target": target, "verb": verb,
                    "requestedCancellation": False, "apiVersion": "v1"}
        return self.operation(f"{parent}/operations/{operation_id}", response=body, metadata=metadata)

    def list(self, request: Request, project: str, location: str) -> dict[str, Any]:
        prefix = self.location(project, location).removesuffix("/-") + "/"
        found = [resource for name, resource in sorted(self.resources.items()) if name.startswith(prefix)]
        return {self.collection: found} if found else {}

    def get(self, request: Request, project: str, location: str, resource_id: str) -> dict[str, Any]:
        return self.lookup(self.name(project, location, resource_id))

    def store(self, name: str, body: dict[str, Any], created: str | None = None) -> dict[str, Any]:
        resource = {**body, "name": name, "createTime": created or now(), "updateTime": now()}
        resource.pop("etag", None)
        self.resources[name] = resource
        return resource


class CertificateManagerApi(LocationApi):
    prefix = "certificatemanager"
    service = "certificatemanager.googleapis.com"
    api_name = "certificatemanager"
    collection = "trustConfigs"
    kind = "TrustConfig"

    def __init__(self, plane: ControlPlane):
        super().__init__(plane)
        self.trust_configs = self.resources

    def check(self, body: dict[str, Any]) -> None:
        stores = body.get("trustStores") or []
        if len(stores) > 1:
            raise invalid("trust_stores: a TrustConfig holds a single trust store")
        for index, store in enumerate(stores):
            anchors = store.get("trustAnchors") or []
            if not anchors:
                raise invalid(f"trust_stores[{index}].trust_anchors: at least one trust anchor is required")
            for kind, entries in (("trustAnchors", anchors), ("intermediateCas", store.get("intermediateCas") or [])):
                for position, entry in enumerate(entries):
                    check_pem(entry.get("pemCertificate"), f"trustStores[{index}].{kind}[{position}].pemCertificate")
        for position, entry in enumerate(body.get("allowlistedCertificates") or []):
            check_pem(entry.get("pemCertificate"), f"allowlistedCertificates[{position}].pemCertificate")

    def create(self, request: Request, project: str, location: str) -> dict[str, Any]:
        resource_id = check_id(request.arg("trustConfigId"), "TrustConfig")
        name = self.name(project, location, resource_id)
        if name in self.resources:
            raise GoogleError(409, f"Resource '{name}' already exists", "ALREADY_EXISTS")
        body = request.json()
        self.check(body)
        resource = self.store(name, body)
        resource["etag"] = resource_etag(resource)
        return self.finished(self.location(project, location), name, "create", resource)

    def patch(self, request: Request, project: str, location: str, resource_id: str) -> dict[str, Any]:
        name = self.name(project, location, resource_id)
        existing = self.lookup(name)
        mask = request.arg("updateMask")
        # The API marks updateMask "Required": gcloud's import sends none unless given --update-mask.
        if not mask:
            raise invalid("Invalid value for field 'update_mask': required field not set")
        body = request.json()
        if body.get("etag") and body["etag"] != existing.get("etag"):
            raise GoogleError(409, "The etag does not match the current one; read the resource again", "ABORTED")
        merged = dict(existing)
        for field in (re.sub(r"_([a-z])", lambda m: m.group(1).upper(), f) for f in mask.split(",")):
            one_of(field, ("description", "labels", "trustStores", "allowlistedCertificates"), "update_mask")
            merged[field] = body.get(field)
        self.check(merged)
        resource = self.store(name, {k: v for k, v in merged.items() if v is not None}, existing["createTime"])
        resource["etag"] = resource_etag(resource)
        return self.finished(self.location(project, location), name, "update", resource)

    def delete(self, request: Request, project: str, location: str, resource_id: str) -> dict[str, Any]:
        name = self.name(project, location, resource_id)
        existing = self.lookup(name)
        if request.arg("etag") and request.arg("etag") != existing.get("etag"):
            raise GoogleError(409, "The etag does not match the current one; read the resource again", "ABORTED")
        security = self.plane.apis.get("networksecurity")
        users = security.policies_using(name) if security else []
        if users:
            raise failed_precondition(f"Resource '{name}' is in use by {', '.join(users)}; detach it first")
        del self.resources[name]
        return self.finished(self.location(project, location), name, "delete", None)


class NetworkSecurityApi(LocationApi):
    prefix = "networksecurity"
    service = "networksecurity.googleapis.com"
    api_name = "networksecurity"
    collection = "serverTlsPolicies"
    kind = "ServerTlsPolicy"

    def __init__(self, plane: ControlPlane):
        super().__init__(plane)
        self.server_tls_policies = self.resources

    def policies_using(self, trust_config: str) -> list[str]:
        return [name for name, policy in sorted(self.resources.items())
                if (policy.get("mtlsPolicy") or {}).get("clientValidationTrustConfig") == trust_config]

    def proxies_using(self, policy: str) -> list[str]:
        """Proxies naming the policy in any form: //networksecurity.googleapis.com/..., a URL, a relative name."""
        compute = self.plane.apis.get("compute")
        proxies: dict[str, dict[str, Any]] = getattr(compute, "target_https_proxies", {}) or {}
        users = []
        for name, proxy in sorted(proxies.items()):
            match = _POLICY_REFERENCE.search(proxy.get("serverTlsPolicy") or "")
            if match and match.group(1) in (self.plane.project_id, self.plane.project_number) \
                    and match.group(2) == policy.split("/locations/", 1)[1]:
                users.append(name)
        return users

    def check(self, body: dict[str, Any]) -> None:
        """The form Application Load Balancers accept: an mTLS policy validating against a trust config."""
        mtls = body.get("mtlsPolicy")
        if not isinstance(mtls, dict) or not mtls:
            raise invalid("mtls_policy: required for a ServerTlsPolicy used with Application Load Balancers")
        if body.get("serverCertificate") or body.get("allowOpen") or mtls.get("clientValidationCa"):
            raise invalid("server_certificate, allow_open and mtls_policy.client_validation_ca must be empty "
                          "for a ServerTlsPolicy used with Application Load Balancers")
        one_of(mtls.get("clientValidationMode"), VALIDATION_MODES, "mtls_policy.client_validation_mode")
        reference = mtls.get("clientValidationTrustConfig")
        if not reference:
            if mtls["clientValidationMode"] == "REJECT_INVALID":
                raise invalid("mtls_policy.client_validation_trust_config: REJECT_INVALID requires a TrustConfig")
            return
        match = re.fullmatch(r"projects/([^/]+)/locations/([^/]+)/trustConfigs/([^/]+)", reference)
        if not match:
            raise invalid(f"mtls_policy.client_validation_trust_config '{reference}' must match "
                          "projects/*/locations/*/trustConfigs/*")
        manager = self.plane.apis["certificatemanager"]
        trust_config = manager.trust_configs.get(manager.name(*match.groups()))
        if trust_config is None:
            raise invalid(f"TrustConfig '{reference}' does not exist", "badRequest")
        if mtls["clientValidationMode"] == "REJECT_INVALID" and not (
                trust_config.get("trustStores") or trust_config.get("allowlistedCertificates")):
            raise invalid(f"REJECT_INVALID requires a non-empty TrustConfig; '{reference}' is empty")
        # Store the reference as the trust config's own name (a project number becomes the id).
        mtls["clientValidationTrustConfig"] = manager.name(*match.groups())

    def create(self, request: Request, project: str, location: str) -> dict[str, Any]:
        resource_id = check_id(request.arg("serverTlsPolicyId"), "ServerTlsPolicy")
        name = self.name(project, location, resource_id)
        if name in self.resources:
            raise GoogleError(409, f"Resource '{name}' already exists", "ALREADY_EXISTS")
        body = request.json()
        self.check(body)
        return self.finished(self.location(project, location), name, "create", self.store(name, body))

    def patch(self, request: Request, project: str, location: str, resource_id: str) -> dict[str, Any]:
        name = self.name(project, location, resource_id)
        existing = self.lookup(name)
        body = request.json()
        mask = request.arg("updateMask")
        fields = mask.split(",") if mask else ["description", "labels", "mtlsPolicy", "serverCertificate", "allowOpen"]
        merged = dict(existing)
        for field in (re.sub(r"_([a-z])", lambda m: m.group(1).upper(), f) for f in fields):
            one_of(field, ("description", "labels", "mtlsPolicy", "serverCertificate", "allowOpen"), "update_mask")
            merged[field] = body.get(field)
        merged = {key: value for key, value in merged.items() if value is not None}
        self.check(merged)
        # Google documents that an attached policy's mTLS settings cannot change in place.
        proxies = self.proxies_using(name)
        if proxies and merged.get("mtlsPolicy") != existing.get("mtlsPolicy"):
            raise failed_precondition(f"ServerTlsPolicy '{name}' is attached to {', '.join(proxies)}; its "
                                      "mtls_policy cannot be changed while it is in use")
        resource = self.store(name, merged, existing["createTime"])
        return self.finished(self.location(project, location), name, "update", resource)

    def delete(self, request: Request, project: str, location: str, resource_id: str) -> dict[str, Any]:
        name = self.name(project, location, resource_id)
        self.lookup(name)
        proxies = self.proxies_using(name)
        if proxies:
            raise failed_precondition(f"Resource '{name}' is in use by {', '.join(proxies)}; detach it first")
        del self.resources[name]
        return self.finished(self.location(project, location), name, "delete", None)


APIS: tuple[type[Api], ...] = (CertificateManagerApi, NetworkSecurityApi)
