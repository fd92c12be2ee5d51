"""Serverless VPC Access v1: the connector through which a function reaches private addresses.

``gcloud compute networks vpc-access connectors create NAME --region R --network N --range
CIDR`` POSTs ``{network, ipCidrRange, minInstances, maxInstances}`` with ``connectorId`` and
waits on the operation. Google's rules, as modelled: the id matches
``^[a-z][-a-z0-9]{0,23}[a-z0-9]$``; the range is an unused RFC 1918 /28 on an existing
network; 2 <= minInstances < maxInstances <= 10; a connector is immutable but for scaling
(https://cloud.google.com/vpc/docs/configure-serverless-vpc-access,
https://cloud.google.com/vpc/docs/reference/vpcaccess/rest/v1/projects.locations.connectors).
"""

from __future__ import annotations

import re
import time
import uuid
from typing import Any

from devtools.control_plane import compute_networks as networks
from devtools.control_plane.run import now
from devtools.control_plane.server import Api, GoogleError, Request, already_exists, invalid

LOCATION = r"/v1/projects/([^/]+)/locations/([^/]+)"
CONNECTOR_ID = re.compile(r"^[a-z][-a-z0-9]{0,23}[a-z0-9]$")
MACHINE_TYPES = ("f1-micro", "e2-micro", "e2-standard-4")


class VpcAccessApi(Api):
    prefix = "vpcaccess"
    service = "vpcaccess.googleapis.com"

    def __init__(self, plane: Any):
        super().__init__(plane)
        self.connectors: dict[str, dict[str, Any]] = {}  # relative name -> Connector
        self.route("GET", LOCATION + "/connectors", self.list)
        self.route("POST", LOCATION + "/connectors", self.create, "create")
        self.route("GET", LOCATION + "/connectors/([^/:]+)", self.get)
        self.route("DELETE", LOCATION + "/connectors/([^/:]+)", self.delete, "delete")

    def _connector(self, segment: str, region: str, name: str) -> str:
        key = f"{self._location(segment, region)}/connectors/{name}"
        if key not in self.connectors:
            raise GoogleError(404, f"Connector {key} not found.", "NOT_FOUND")
        return key

    def ranges_in(self, network: str) -> list[networks.Range]:
        return [(f"connector {key}", networks.private_range(connector["ipCidrRange"], "ipCidrRange", 28))
                for key, connector in self.connectors.items() if connector["_network"] == network]

    def ready(self, name: str) -> bool:
        """Whether ``projects/P/locations/R/connectors/C`` exists and is READY (what a function needs)."""
        return self.connectors.get(name, {}).get("state") == "READY"

    @staticmethod
    def _view(connector: dict[str, Any]) -> dict[str, Any]:
        return {key: value for key, value in connector.items() if not key.startswith("_")}

    def list(self, request: Request, segment: str, region: str) -> dict[str, Any]:
        parent = self._location(segment, region)
        return {"connectors": [self._view(connector) for key, connector in sorted(self.connectors.items())
                               if key.startswith(parent + "/")]}

    def get(self, request: Request, segment: str, region: str, name: str) -> dict[str, Any]:
        return self._view(self.connectors[self._connector(segment, region, name)])

    def create(self, request: Request, segment: str, region: str) -> dict[str, Any]:
        parent = self._location(segment, region)
        connector_id = request.arg("connectorId") or ""
        if not CONNECTOR_ID.match(connector_id):
            raise invalid(f"Invalid value for field 'connector_id': '{connector_id}'. Connector ID must follow the "
                          "pattern ^[a-z][-a-z0-9]{0,23}[a-z0-9]$.")
        key = f"{parent}/connectors/{connector_id}"
        if key in self.connectors:
            raise already_exists(key)
        body = request.json()
        if body.get("subnet"):
            raise invalid("Connectors on an existing subnet are not modelled; give network and ipCidrRange.")
        if not body.get("network") or not body.get("ipCidrRange"):
            raise invalid("Invalid value for field 'connector': either subnet, or network and ip_cidr_range "
                          "must be set.")
        network = networks.resolve(self.plane, body["network"], "network")
        cidr = networks.private_range(body["ipCidrRange"], "ip_cidr_range", 28)
        networks.refuse_overlap(self.plane, network, cidr, "ip_cidr_range")
        least, most = int(body.get("minInstances", 2)), int(body.get("maxInstances", 10))
        if not 2 <= least < most <= 10:
            raise invalid(f"Invalid scaling: min_instances ({least}) must be at least 2 and less than "
                          f"max_instances ({most}), which may be at most 10.")
        machine = body.get("machineType") or "e2-micro"
        if machine not in MACHINE_TYPES:
            raise invalid(f"Invalid value for field 'machine_type': {machine}. Expected one of "
                          f"{', '.join(MACHINE_TYPES)}")
        connector = {"name": key, "network": network.rsplit("/", 1)[-1], "ipCidrRange": str(cidr),
                     "state": "READY", "minInstances": least, "maxInstances": most, "machineType": machine,
                     "minThroughput": least * 100, "maxThroughput": most * 100,
                     "connectedProjects": [self.plane.project_id], "_network": network}
        self.connectors[key] = connector
        return self._operation(parent, key, "CreateConnector", self._view(connector))

    def delete(self, request: Request, segment: str, region: str, name: str) -> dict[str, Any]:
        key = self._connector(segment, region, name)
        del self.connectors[key]
        return self._operation(key.rsplit("/connectors/", 1)[0], key, "DeleteConnector", None)

    def _operation(self, location: str, target: str, method: str, connector: dict[str, Any] | None) -> dict[str, Any]:
        name = f"{location}/operations/{int(time.time() * 1000)}-{uuid.uuid4().hex[:12]}"
        metadata = {"@type": "type.googleapis.com/google.cloud.vpcaccess.v1.OperationMetadata",
                    "method": f"google.cloud.vpcaccess.v1.VpcAccessService.{method}", "createTime": now(),
                    "endTime": now(), "target": target}
        response = ({"@type": "type.googleapis.com/google.cloud.vpcaccess.v1.Connector", **connector} if connector
                    else {"@type": "type.googleapis.com/google.protobuf.Empty"})
        return self.operation(name, response=response, metadata=metadata)


APIS = (VpcAccessApi,)
