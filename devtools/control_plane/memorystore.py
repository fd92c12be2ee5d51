"""Memorystore for Redis v1: the instance that holds the replay cache and the rate limits.

``gcloud redis instances create ID --region R --tier basic --size 1 --network N`` POSTs
``{tier, memorySizeGb, authorizedNetwork, connectMode, authEnabled}`` with ``instanceId``
and waits on the operation; the instance then has a private ``host`` and ``port`` (6379).
Google's rules, as modelled (https://cloud.google.com/memorystore/docs/redis/reference/rest/
v1/projects.locations.instances): the id is 1-40 of lower-case letters, digits and hyphens,
starting with a letter and not ending with a hyphen; tier and memorySizeGb are required,
1-300 GB; the network must exist; tier and network never change (the size and AUTH do, by
PATCH); DIRECT_PEERING takes a free /29 of the network (PRIVATE_SERVICE_ACCESS needs a private
services connection, not modelled, so it is refused). The AUTH string is never part of the
instance: it is read from ``.../authString``, and only while AUTH is enabled.
"""

from __future__ import annotations

import re
import time
import uuid
from typing import Any

from devtools.control_plane import compute_networks as networks
from devtools.control_plane.run import now
from devtools.control_plane.server import Api, GoogleError, Request, already_exists, invalid, one_of, require

LOCATION = r"/v1/projects/([^/]+)/locations/([^/]+)"
INSTANCE_ID = re.compile(r"^[a-z](?:[-a-z0-9]{0,38}[a-z0-9])?$")
TIERS = ("BASIC", "STANDARD_HA")
CONNECT_MODES = ("CONNECT_MODE_UNSPECIFIED", "DIRECT_PEERING", "PRIVATE_SERVICE_ACCESS")
_UPDATABLE = ("memorySizeGb", "displayName", "labels", "redisConfigs", "replicaCount", "authEnabled")
MIN_GB, MAX_GB = 1, 300


class MemorystoreApi(Api):
    prefix = "redis"
    service = "redis.googleapis.com"

    def __init__(self, plane: Any):
        super().__init__(plane)
        self.instances: dict[str, dict[str, Any]] = {}  # relative name -> Instance
        self.auth_strings: dict[str, str] = {}  # relative name -> AUTH string (never part of the Instance)
        self.route("GET", LOCATION + "/instances", self.list)
        self.route("POST", LOCATION + "/instances", self.create, "create")
        self.route("GET", LOCATION + "/instances/([^/:]+)", self.get)
        self.route("GET", LOCATION + "/instances/([^/:]+)/authString", self.auth_string)
        self.route("PATCH", LOCATION + "/instances/([^/:]+)", self.patch, "update")
        self.route("DELETE", LOCATION + "/instances/([^/:]+)", self.delete, "delete")

    def _instance(self, segment: str, region: str, name: str) -> str:
        key = f"{self._location(segment, region)}/instances/{name}"
        if key not in self.instances:
            raise GoogleError(404, f"Resource '{key}' was not found", "NOT_FOUND")
        return key

    def ranges_in(self, network: str) -> list[networks.Range]:
        return [(f"Redis instance {key}", networks.private_range(instance["reservedIpRange"], "reservedIpRange", 29))
                for key, instance in self.instances.items() if instance["authorizedNetwork"] == network]

    def list(self, request: Request, segment: str, region: str) -> dict[str, Any]:
        parent = self._location(segment, region)
        return {"instances": [instance for key, instance in sorted(self.instances.items())
                              if key.startswith(parent + "/")]}

    def get(self, request: Request, segment: str, region: str, name: str) -> dict[str, Any]:
        return self.instances[self._instance(segment, region, name)]

    def auth_string(self, request: Request, segment: str, region: str, name: str) -> dict[str, Any]:
        key = self._instance(segment, region, name)
        if not self.instances[key]["authEnabled"]:
            raise GoogleError(400, f"AUTH is not enabled on instance {key}.", "FAILED_PRECONDITION")
        return {"authString": self.auth_strings[key]}

    def _set_auth(self, key: str, enabled: bool) -> None:
        if enabled:
            self.auth_strings.setdefault(key, str(uuid.uuid4()))
        else:
            self.auth_strings.pop(key, None)

    def create(self, request: Request, segment: str, region: str) -> dict[str, Any]:
        parent = self._location(segment, region)
        instance_id = request.arg("instanceId") or ""
        if not INSTANCE_ID.match(instance_id):
            raise invalid(f"Invalid value for field 'instance_id': '{instance_id}'. It must be 1 to 40 lower-case "
                          "letters, digits or hyphens, start with a letter and end with a letter or a digit.")
        key = f"{parent}/instances/{instance_id}"
        if key in self.instances:
            raise already_exists(key)
        body = request.json()
        require(body, "tier", "memorySizeGb")
        one_of(body["tier"], TIERS, "instance.tier")
        self._check_size(body["memorySizeGb"])
        mode = body.get("connectMode") or "DIRECT_PEERING"
        one_of(mode, CONNECT_MODES, "instance.connect_mode")
        if mode == "PRIVATE_SERVICE_ACCESS":
            raise GoogleError(400, "Private services access is not configured on the network: create a private "
                              "services connection first.", "FAILED_PRECONDITION")
        network = networks.resolve(self.plane, body.get("authorizedNetwork") or "default", "authorized_network")
        reserved = networks.free_range(self.plane, network, 29)
        instance = {"name": key, "tier": body["tier"], "memorySizeGb": int(body["memorySizeGb"]),
                    "authorizedNetwork": network, "connectMode": "DIRECT_PEERING",
                    "authEnabled": bool(body.get("authEnabled")), "redisVersion": body.get("redisVersion", "REDIS_7_2"),
                    "reservedIpRange": str(reserved), "host": str(reserved.network_address + 3), "port": 6379,
                    "locationId": f"{region}-a", "currentLocationId": f"{region}-a", "state": "READY",
                    "createTime": now(), "transitEncryptionMode": "DISABLED",
                    "labels": body.get("labels") or {}, "displayName": body.get("displayName", "")}
        self.instances[key] = instance
        self._set_auth(key, instance["authEnabled"])
        return self._operation(parent, key, "create", instance)

    def patch(self, request: Request, segment: str, region: str, name: str) -> dict[str, Any]:
        key = self._instance(segment, region, name)
        mask = [field.strip() for field in (request.arg("updateMask") or "").split(",") if field.strip()]
        if not mask:
            raise invalid("update_mask is required: name the fields the request changes.")
        fields = [re.sub(r"_([a-z])", lambda m: m.group(1).upper(), field) for field in mask]
        refused = [field for field in fields if field not in _UPDATABLE]
        if refused:
            raise invalid(f"Invalid update_mask: {', '.join(refused)} cannot be updated.")
        body = request.json()
        if "memorySizeGb" in fields:
            self._check_size(body.get("memorySizeGb"))
        instance = self.instances[key]
        for field in fields:
            if field in body:
                instance[field] = int(body[field]) if field == "memorySizeGb" else body[field]
        self._set_auth(key, bool(instance["authEnabled"]))
        return self._operation(key.rsplit("/instances/", 1)[0], key, "update", instance)

    def delete(self, request: Request, segment: str, region: str, name: str) -> dict[str, Any]:
        key = self._instance(segment, region, name)
        del self.instances[key]
        self._set_auth(key, False)
        return self._operation(key.rsplit("/instances/", 1)[0], key, "delete", None)

    @staticmethod
    def _check_size(size: Any) -> None:
        if not isinstance(size, int) or not MIN_GB <= size <= MAX_GB:
            raise invalid(f"Invalid value for field 'instance.memory_size_gb': {size!r}. Memory size must be "
                          f"between {MIN_GB} and {MAX_GB} GB.")

    def _operation(self, location: str, target: str, verb: str, instance: dict[str, Any] | None) -> dict[str, Any]:
        name = f"{location}/operations/operation-{int(time.time() * 1000)}-{uuid.uuid4().hex[:12]}"
        metadata = {"@type": "type.googleapis.com/google.cloud.redis.v1.OperationMetadata", "createTime": now(),
                    "endTime": now(), "target": target, "verb": verb, "apiVersion": "v1"}
        response = ({"@type": "type.googleapis.com/google.cloud.redis.v1.Instance", **instance} if instance
                    else {"@type": "type.googleapis.com/google.protobuf.Empty"})
        return self.operation(name, response=response, metadata=metadata)


APIS = (MemorystoreApi,)
