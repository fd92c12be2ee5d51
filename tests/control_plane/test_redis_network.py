"""Memorystore for Redis, Serverless VPC Access and VPC networks: what the fake accepts and refuses.

The refusals go over REST as gcloud sends them (fast); one lifecycle goes through the real gcloud.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from devtools.control_plane.server import ControlPlane, ControlPlaneServer
from tests.control_plane.conftest import requires_gcloud
from tests.control_plane.rest import call

LOCATION = "projects/my-project/locations/us-central1"
INSTANCES = f"redis/v1/{LOCATION}/instances"
CONNECTORS = f"vpcaccess/v1/{LOCATION}/connectors"
FUNCTIONS = f"functions/v2/{LOCATION}/functions"
REDIS_BODY = {"tier": "BASIC", "memorySizeGb": 1, "authorizedNetwork": "projects/my-project/global/networks/default",
              "connectMode": "DIRECT_PEERING"}
CONNECTOR_BODY = {"network": "default", "ipCidrRange": "10.8.0.0/28", "minInstances": 2, "maxInstances": 3}


@pytest.fixture
def networked(enabled: ControlPlane) -> ControlPlane:
    enabled.enabled_services.update({"redis.googleapis.com", "vpcaccess.googleapis.com"})
    return enabled


def refusal(server: ControlPlaneServer, path: str, body: Any) -> str:
    status, answer = call(server, "POST", path, body)
    assert status == 400, answer
    return answer["error"]["message"]


def test_both_apis_must_be_enabled(plane: ControlPlane, server: ControlPlaneServer) -> None:
    plane.enabled_services.add("compute.googleapis.com")
    for path, body in ((f"{INSTANCES}?instanceId=cache", REDIS_BODY), (f"{CONNECTORS}?connectorId=egress",
                                                                       CONNECTOR_BODY)):
        status, answer = call(server, "POST", path, body)
        assert status == 403 and "has not been used in project" in answer["error"]["message"]


@pytest.mark.parametrize(("instance_id", "change", "words"), [
    ("Cache", {}, "instance_id"),
    ("cache-", {}, "instance_id"),
    ("c" * 41, {}, "instance_id"),
    ("cache", {"tier": None}, "'tier': required"),
    ("cache", {"memorySizeGb": None}, "'memorySizeGb': required"),
    ("cache", {"tier": "PREMIUM"}, "instance.tier"),
    ("cache", {"memorySizeGb": 0}, "between 1 and 300"),
    ("cache", {"memorySizeGb": 301}, "between 1 and 300"),
    ("cache", {"authorizedNetwork": "projects/my-project/global/networks/prod"}, "does not exist"),
    ("cache", {"connectMode": "PEERING"}, "connect_mode"),
])
def test_memorystore_refuses_what_google_refuses(networked: ControlPlane, server: ControlPlaneServer,
                                                 instance_id: str, change: dict[str, Any], words: str) -> None:
    body = {key: value for key, value in {**REDIS_BODY, **change}.items() if value is not None}
    assert words in refusal(server, f"{INSTANCES}?instanceId={instance_id}", body)
    assert networked.apis["redis"].instances == {}


@pytest.mark.parametrize(("connector_id", "change", "words"), [
    ("Egress", {}, "Connector ID must follow the pattern"),
    ("a" * 26, {}, "Connector ID must follow the pattern"),
    ("egress", {"ipCidrRange": "10.8.0.0/24"}, "must be a /28 range"),
    ("egress", {"ipCidrRange": "10.8.0.8/28"}, "not a valid IPv4 CIDR range"),
    ("egress", {"ipCidrRange": "8.8.8.0/28"}, "internal (RFC 1918)"),
    ("egress", {"ipCidrRange": "10.128.0.0/28"}, "overlaps 10.128.0.0/9"),
    ("egress", {"network": "prod"}, "does not exist"),
    ("egress", {"ipCidrRange": None}, "network and ip_cidr_range must be set"),
    ("egress", {"minInstances": 1}, "at least 2"),
    ("egress", {"maxInstances": 11}, "at most 10"),
])
def test_vpc_access_refuses_what_google_refuses(networked: ControlPlane, server: ControlPlaneServer,
                                                connector_id: str, change: dict[str, Any], words: str) -> None:
    body = {key: value for key, value in {**CONNECTOR_BODY, **change}.items() if value is not None}
    assert words in refusal(server, f"{CONNECTORS}?connectorId={connector_id}", body)
    assert networked.apis["vpcaccess"].connectors == {}


def test_ranges_on_a_network_never_overlap(networked: ControlPlane, server: ControlPlaneServer) -> None:
    status, created = call(server, "POST", f"{INSTANCES}?instanceId=cache", REDIS_BODY)
    assert status == 200 and created["done"]
    instance = networked.apis["redis"].instances[f"{LOCATION}/instances/cache"]
    assert instance["reservedIpRange"] == "10.0.0.0/29" and (instance["host"], instance["port"]) == ("10.0.0.3", 6379)
    message = refusal(server, f"{CONNECTORS}?connectorId=egress", {**CONNECTOR_BODY, "ipCidrRange": "10.0.0.0/28"})
    assert "overlaps 10.0.0.0/29 used by Redis instance" in message
    assert call(server, "POST", f"{CONNECTORS}?connectorId=egress", CONNECTOR_BODY)[0] == 200
    assert "overlaps 10.8.0.0/28" in refusal(server, f"{CONNECTORS}?connectorId=other", CONNECTOR_BODY)
    status, answer = call(server, "POST", f"{CONNECTORS}?connectorId=egress", {**CONNECTOR_BODY,
                                                                                "ipCidrRange": "10.9.0.0/28"})
    assert status == 409, answer
    status, second = call(server, "POST", f"{INSTANCES}?instanceId=other", REDIS_BODY)
    assert status == 200 and second["response"]["reservedIpRange"] == "10.0.0.8/29"


def test_tier_and_network_never_change(networked: ControlPlane, server: ControlPlaneServer) -> None:
    assert call(server, "POST", f"{INSTANCES}?instanceId=cache", REDIS_BODY)[0] == 200
    status, answer = call(server, "PATCH", f"{INSTANCES}/cache?updateMask=tier", {"tier": "STANDARD_HA"})
    assert status == 400 and "tier cannot be updated" in answer["error"]["message"]
    status, answer = call(server, "PATCH", f"{INSTANCES}/cache?updateMask=memory_size_gb", {"memorySizeGb": 500})
    assert status == 400
    status, answer = call(server, "PATCH", f"{INSTANCES}/cache?updateMask=memory_size_gb", {"memorySizeGb": 5})
    assert status == 200 and networked.apis["redis"].instances[f"{LOCATION}/instances/cache"]["memorySizeGb"] == 5


def test_a_function_needs_a_ready_connector_in_its_region(networked: ControlPlane,
                                                          server: ControlPlaneServer) -> None:
    status, upload = call(server, "POST", f"{FUNCTIONS}:generateUploadUrl", {})
    assert status == 200
    function = {"buildConfig": {"runtime": "python312", "entryPoint": "handle_request",
                                "source": {"storageSource": upload["storageSource"]}},
                "serviceConfig": {"vpcConnector": f"{LOCATION}/connectors/egress",
                                  "vpcConnectorEgressSettings": "PRIVATE_RANGES_ONLY"}}
    assert "does not exist or is not READY" in refusal(server, f"{FUNCTIONS}?functionId=fn", function)
    elsewhere = {**function, "serviceConfig": {"vpcConnector": "projects/my-project/locations/europe-west1/"
                                                               "connectors/egress"}}
    assert "must be in the function's region" in refusal(server, f"{FUNCTIONS}?functionId=fn", elsewhere)
    wrong = {**function, "serviceConfig": {"vpcConnectorEgressSettings": "PRIVATE"}}
    assert "vpc_connector_egress_settings" in refusal(server, f"{FUNCTIONS}?functionId=fn", wrong)
    assert networked.apis["functions"].functions == {}


def test_a_project_without_the_default_network(networked: ControlPlane, server: ControlPlaneServer) -> None:
    networked.apis["compute"].networks.clear()  # compute.skipDefaultNetworkCreation
    assert call(server, "GET", "compute/v1/projects/my-project/global/networks/default")[0] == 404
    assert "does not exist" in refusal(server, f"{INSTANCES}?instanceId=cache", REDIS_BODY)


@requires_gcloud
def test_lifecycle_through_gcloud(networked: ControlPlane, gcloud: Callable[..., Any]) -> None:
    created = gcloud("redis", "instances", "create", "cache", "--region=us-central1", "--tier=standard", "--size=2",
                     "--network=default")
    assert created.returncode == 0, created.stderr
    described = gcloud("redis", "instances", "describe", "cache", "--region=us-central1",
                       "--format=value(tier,memorySizeGb,host,port,state)")
    assert described.stdout.split() == ["STANDARD_HA", "2", "10.0.0.3", "6379", "READY"]
    connector = gcloud("compute", "networks", "vpc-access", "connectors", "create", "egress", "--region=us-central1",
                       "--network=default", "--range=10.8.0.0/28")
    assert connector.returncode == 0, connector.stderr
    refused = gcloud("compute", "networks", "vpc-access", "connectors", "create", "other", "--region=us-central1",
                     "--network=default", "--range=10.8.0.0/28")
    assert refused.returncode != 0 and "overlaps 10.8.0.0/28" in refused.stderr
    assert gcloud("redis", "instances", "delete", "cache", "--region=us-central1").returncode == 0
    assert gcloud("compute", "networks", "vpc-access", "connectors", "delete", "egress",
                  "--region=us-central1").returncode == 0
    assert networked.apis["redis"].instances == {} and networked.apis["vpcaccess"].connectors == {}


def test_the_auth_string_is_read_on_its_own_and_only_while_auth_is_on(networked: ControlPlane,
                                                                       server: ControlPlaneServer) -> None:
    status, created = call(server, "POST", f"{INSTANCES}?instanceId=cache", REDIS_BODY)
    assert status == 200 and "authString" not in created["response"]
    status, answer = call(server, "GET", f"{INSTANCES}/cache/authString")
    assert status == 400 and answer["error"]["status"] == "FAILED_PRECONDITION"
    assert call(server, "PATCH", f"{INSTANCES}/cache?updateMask=auth_enabled", {"authEnabled": True})[0] == 200
    status, answer = call(server, "GET", f"{INSTANCES}/cache/authString")
    assert status == 200 and answer["authString"] == networked.apis["redis"].auth_strings[f"{LOCATION}/instances/cache"]
    assert answer["authString"] not in str(call(server, "GET", f"{INSTANCES}/cache")[1])
