"""VPC networks (Compute Engine v1, read-only here) and the private ranges in use on each.

A new project has the auto-mode ``default`` network, whose regional subnets share
10.128.0.0/9 (Google: https://cloud.google.com/vpc/docs/subnets#ip-ranges); a test
removes it to model ``compute.skipDefaultNetworkCreation``. Serverless VPC Access
connectors and Memorystore instances both take ranges on a network, and Google refuses a
range that overlaps one already in use there; each API reports its own through
``ranges_in(network)``, so neither module needs to know the other.
"""

from __future__ import annotations

import ipaddress
import re
from typing import TYPE_CHECKING, Any

from devtools.control_plane.server import FAKE_HOST, Request, invalid, not_found

if TYPE_CHECKING:
    from devtools.control_plane.compute import ComputeApi
    from devtools.control_plane.server import ControlPlane

_P = r"/v1/projects/([^/]+)"
AUTO_MODE_RANGE = ipaddress.ip_network("10.128.0.0/9")
# What a network field may say: a name, a relative name, or a full URL.
_NETWORK = re.compile(r"^(?:https?://[^/]+/compute/v1/)?(?:projects/([^/]+)/global/networks/)?([^/]+)$")
Range = tuple[str, ipaddress.IPv4Network]


def network(project: str, name: str, auto_mode: bool = True) -> dict[str, Any]:
    self_link = f"http://{FAKE_HOST}/compute/v1/projects/{project}/global/networks/{name}"
    return {"kind": "compute#network", "id": str(abs(hash(name)) % 10**18), "name": name, "selfLink": self_link,
            "autoCreateSubnetworks": auto_mode, "routingConfig": {"routingMode": "REGIONAL"},
            "networkFirewallPolicyEnforcementOrder": "AFTER_CLASSIC_FIREWALL"}


def install(compute: ComputeApi) -> None:
    """Give the Compute fake its networks (the default one) and the two reads gcloud makes."""
    compute.networks = {"default": network(compute.plane.project_id, "default")}

    def list_networks(request: Request, segment: str) -> dict[str, Any]:
        project = compute.plane.project(segment)
        return {"kind": "compute#networkList", "items": list(compute.networks.values()),
                "selfLink": f"http://{FAKE_HOST}/compute/v1/projects/{project}/global/networks"}

    def get_network(request: Request, segment: str, name: str) -> dict[str, Any]:
        project = compute.plane.project(segment)
        if name not in compute.networks:
            raise not_found(f"projects/{project}/global/networks/{name}")
        return compute.networks[name]

    compute.route("GET", rf"{_P}/global/networks", list_networks)
    compute.route("GET", rf"{_P}/global/networks/([^/]+)", get_network)


def resolve(plane: ControlPlane, value: object, field: str) -> str:
    """The relative name ``projects/P/global/networks/N`` of an existing network, or Google's 400."""
    match = _NETWORK.match(value) if isinstance(value, str) else None
    if not match:
        raise invalid(f"Invalid value for field '{field}': {value!r} is not a network name or URL")
    project = plane.project(match.group(1) or plane.project_id)
    compute = plane.apis["compute"]
    if match.group(2) not in compute.networks:
        raise invalid(f"Invalid value for field '{field}': network 'projects/{project}/global/networks/"
                      f"{match.group(2)}' does not exist")
    return f"projects/{project}/global/networks/{match.group(2)}"


def private_range(value: object, field: str, prefix: int) -> ipaddress.IPv4Network:
    """An RFC 1918 range of exactly ``prefix`` bits, as connectors and Memorystore require."""
    try:
        cidr = ipaddress.ip_network(str(value), strict=True)
    except ValueError:
        raise invalid(f"Invalid value for field '{field}': {value!r} is not a valid IPv4 CIDR range") from None
    if not isinstance(cidr, ipaddress.IPv4Network) or not cidr.is_private:
        raise invalid(f"Invalid value for field '{field}': {value} must be an internal (RFC 1918) IPv4 range")
    if cidr.prefixlen != prefix:
        raise invalid(f"Invalid value for field '{field}': {value} must be a /{prefix} range")
    return cidr


def ranges_in(plane: ControlPlane, network_name: str) -> list[Range]:
    """Every range in use on a network: its subnets' and those connectors and instances hold."""
    used: list[Range] = []
    if plane.apis["compute"].networks[network_name.rsplit("/", 1)[-1]].get("autoCreateSubnetworks"):
        used.append(("the network's auto-mode subnets", AUTO_MODE_RANGE))
    for api in plane.apis.values():
        holder = getattr(api, "ranges_in", None)
        if holder is not None:
            used.extend(holder(network_name))
    return used


def refuse_overlap(plane: ControlPlane, network_name: str, cidr: ipaddress.IPv4Network, field: str) -> None:
    for owner, taken in ranges_in(plane, network_name):
        if cidr.overlaps(taken):
            raise invalid(f"Invalid value for field '{field}': {cidr} overlaps {taken} used by {owner} on "
                          f"network {network_name}")


def free_range(plane: ControlPlane, network_name: str, prefix: int) -> ipaddress.IPv4Network:
    """The first unused range of that size in 10.0.0.0/8, as Memorystore allocates a reserved range."""
    taken = [cidr for _, cidr in ranges_in(plane, network_name)]
    for candidate in ipaddress.ip_network("10.0.0.0/8").subnets(new_prefix=prefix):
        if not any(candidate.overlaps(other) for other in taken):
            return candidate
    raise invalid(f"No free /{prefix} range left on network {network_name}")
