"""deploy.sh --redis through the real gcloud against the control-plane fake: Memorystore, the VPC connector,
and the function wired to them; re-runs, changed options, a missing network, --destroy.

Every assertion reads the fake's state (what Google would hold). The scenarios run concurrently.
"""

from __future__ import annotations

import copy
import shutil
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from devtools.pki import ensure_dev_pki
from tests.deploy_support import Project, Run

pytestmark = pytest.mark.skipif(shutil.which("gcloud") is None, reason="the Google Cloud CLI is not installed")

LOCATION = "projects/my-project/locations/us-central1"
FUNCTION = f"{LOCATION}/functions/token-service"
INSTANCE = f"{LOCATION}/instances/token-service-redis"
CONNECTOR = f"{LOCATION}/connectors/token-service-vpc"


@pytest.fixture(scope="module")
def ca_pem(tmp_path_factory) -> Path:
    return ensure_dev_pki(tmp_path_factory.mktemp("redis-pki"))["ca"]


def base(ca_pem: Path) -> list[str]:
    # Redis holds the client-secret limits (and jwt-bearer's replay cache): without one of those flows the
    # function refuses REDIS_URL.
    policy = ca_pem.parent / "policy.yaml"
    policy.write_text("clients: []\n")
    return ["--fqdn", "token.example.com", "--ca-cert", str(ca_pem), "--policy", str(policy),
            "--auth-flows", "xlb-mtls-client-credentials,client-secret"]


@dataclass
class State:
    """What Google holds after a run: the instances, connectors and functions by relative name."""

    instances: dict[str, Any]
    connectors: dict[str, Any]
    functions: dict[str, Any]
    auth_strings: dict[str, str]
    secret_payloads: dict[str, bytes]


def snapshot(project: Project) -> State:
    return State(copy.deepcopy(project.api("redis").instances), copy.deepcopy(project.api("vpcaccess").connectors),
                 copy.deepcopy(project.api("functions").functions), dict(project.api("redis").auth_strings),
                 dict(project.api("secretmanager").payloads))


def secret_environment(config: dict[str, Any]) -> dict[str, str]:
    """The function's variables that come from Secret Manager: name -> secret:version."""
    return {entry["key"]: f"{entry['secret']}:{entry['version']}" for entry in config.get("secretEnvironmentVariables")
            or []}


@dataclass
class Played:
    runs: dict[str, tuple[Project, list[Run]]]
    snapshots: dict[str, State]

    def __getitem__(self, name: str) -> tuple[Project, list[Run]]:
        return self.runs[name]


@pytest.fixture(scope="module")
def played(tmp_path_factory, ca_pem) -> Iterator[Played]:
    home = tmp_path_factory.mktemp("deploy-redis")
    snapshots: dict[str, State] = {}
    arguments = base(ca_pem)
    standard = [*arguments, "--redis", "--redis-size-gb", "2"]

    def lifecycle(project: Project) -> list[Run]:
        runs = [project.deploy(*standard), project.deploy(*standard)]
        snapshots["deployed"] = snapshot(project)
        runs.append(project.deploy(*arguments))
        snapshots["without_redis"] = snapshot(project)
        return [*runs, project.deploy("--destroy", "--yes")]

    def changed(project: Project) -> list[Run]:
        return [project.deploy(*arguments, "--redis", "--redis-tier", "basic"),
                project.deploy(*arguments, "--redis", "--redis-tier", "basic", "--redis-size-gb", "3"),
                project.deploy(*arguments, "--redis", "--redis-size-gb", "3")]

    def no_network(project: Project) -> list[Run]:
        project.api("compute").networks.clear()  # compute.skipDefaultNetworkCreation
        return [project.deploy(*arguments, "--redis")]

    scenarios: dict[str, Callable[[Project], list[Run]]] = {
        "lifecycle": lifecycle, "changed": changed, "no_network": no_network}
    projects = {name: Project(home / name) for name in scenarios}
    with ThreadPoolExecutor(max_workers=len(scenarios)) as pool:
        futures = {name: pool.submit(scenario, projects[name]) for name, scenario in scenarios.items()}
        runs = {name: (projects[name], future.result()) for name, future in futures.items()}
    yield Played(runs, snapshots)
    for project in projects.values():
        project.close()


def test_redis_deploys_the_instance_the_connector_and_the_function_wired_to_them(played):
    project, (first, *_) = played["lifecycle"]
    assert first.ok, first
    state = played.snapshots["deployed"]
    instance = state.instances[INSTANCE]
    assert (instance["tier"], instance["memorySizeGb"]) == ("STANDARD_HA", 2)
    assert instance["authorizedNetwork"] == "projects/my-project/global/networks/default"
    assert instance["connectMode"] == "DIRECT_PEERING" and instance["authEnabled"] is True
    connector = state.connectors[CONNECTOR]
    assert (connector["network"], connector["ipCidrRange"], connector["state"]) == ("default", "10.8.0.0/28", "READY")
    assert connector["minInstances"] == 2
    config = state.functions[FUNCTION]["serviceConfig"]
    assert config["vpcConnector"] == CONNECTOR
    assert config["vpcConnectorEgressSettings"] == "PRIVATE_RANGES_ONLY"
    # The URL holds the AUTH string: a Secret Manager version the runtime account reads, never a plain variable.
    assert "REDIS_URL" not in config["environmentVariables"]
    secret, version = secret_environment(config)["REDIS_URL"].split(":")
    assert secret == "token-service-redis-url"
    auth = state.auth_strings[INSTANCE]
    url = state.secret_payloads[f"projects/my-project/secrets/{secret}/versions/{version}"].decode()
    assert url == f"redis://:{auth}@{instance['host']}:{instance['port']}/0"
    for run in played["lifecycle"][1]:
        assert auth not in run.result.stdout + run.result.stderr
    assert {"redis.googleapis.com", "vpcaccess.googleapis.com"} <= project.plane.enabled_services
    created = [event.path for event in first.changes if event.action == "create"]
    position = {kind: next(i for i, path in enumerate(created) if f"/{kind}" in path)
                for kind in ("connectors", "instances", "functions")}
    assert position["connectors"] < position["functions"] and position["instances"] < position["functions"]


def test_a_second_run_changes_nothing(played):
    _, (_, again, *_) = played["lifecycle"]
    assert again.ok, again
    assert again.changes == [], [f"{event.action} {event.path}" for event in again.changes]


def test_without_redis_the_function_leaves_the_vpc_and_the_data_stays(played):
    _, (_, _, plain, _) = played["lifecycle"]
    assert plain.ok, plain
    state = played.snapshots["without_redis"]
    config = state.functions[FUNCTION]["serviceConfig"]
    assert "vpcConnector" not in config and "REDIS_URL" not in config["environmentVariables"]
    assert "REDIS_URL" not in secret_environment(config) and "PROXY_SECRETS" in secret_environment(config)
    assert state.instances.keys() == {INSTANCE} and state.connectors.keys() == {CONNECTOR}
    assert not any(event.api in ("redis", "vpcaccess") for event in plain.changes)


def test_destroy_removes_the_instance_and_the_connector_after_the_function(played):
    project, (*_, destroyed) = played["lifecycle"]
    assert destroyed.ok, destroyed
    assert project.api("redis").instances == {} and project.api("vpcaccess").connectors == {}
    deleted = [event.path for event in destroyed.changes if event.action == "delete"]
    function = next(i for i, path in enumerate(deleted) if "/functions/" in path)
    assert function < next(i for i, path in enumerate(deleted) if "/connectors/" in path)
    assert any("/instances/token-service-redis" in path for path in deleted)
    assert any(path.endswith("/secrets/token-service-redis-url") for path in deleted)


def test_a_new_size_resizes_in_place_and_a_new_tier_is_refused(played):
    project, (first, resized, retiered) = played["changed"]
    assert first.ok and resized.ok, (first, resized)
    assert [(event.api, event.action) for event in resized.changes] == [("redis", "update")]
    assert project.api("redis").instances[INSTANCE]["memorySizeGb"] == 3
    assert retiered.result.returncode == 2
    assert "Memorystore cannot change" in retiered.result.stderr and "BASIC" in retiered.result.stderr
    assert retiered.changes == []
    assert project.api("redis").instances[INSTANCE]["tier"] == "BASIC"


def test_a_missing_network_stops_before_any_redis_resource(played):
    project, (run,) = played["no_network"]
    assert run.result.returncode == 2
    assert "VPC network 'default' does not exist in project my-project" in run.result.stderr
    assert project.api("redis").instances == {} and project.api("vpcaccess").connectors == {}
    assert project.api("functions").functions == {}


@pytest.mark.parametrize(("option", "message"), [
    (["--redis-tier", "premium"], "--redis-tier must be basic or standard"),
    (["--redis-size-gb", "0"], "--redis-size-gb must be a whole number of GB from 1 to 300"),
    (["--redis-size-gb", "301"], "--redis-size-gb must be a whole number of GB from 1 to 300"),
    (["--vpc-connector-range", "10.8.0.0/24"], "must be a /28 range"),
    (["--vpc-connector-range", "10.8.0.8/28"], "does not start on a /28 boundary"),
    (["--vpc-connector-range", "8.8.8.0/28"], "internal (RFC 1918)"),
    (["--network", "Prod_Net"], "is not a VPC network name"),
    (["--auth-flows", "xlb-mtls-client-credentials"], "--auth-flows must enable jwt-bearer or client-secret"),
])
def test_a_bad_option_changes_nothing(tmp_path, ca_pem, option, message):
    project = Project(tmp_path)
    try:
        run = project.deploy(*base(ca_pem), "--redis", *option)
    finally:
        project.close()
    assert run.result.returncode == 2 and message in run.result.stderr, run
    assert "nothing was created or changed" in run.result.stderr
    assert run.changes == [] and project.plane.enabled_services == set()


def test_dry_run_prints_the_plan(tmp_path, ca_pem):
    project = Project(tmp_path)
    try:
        run = project.deploy(*base(ca_pem), "--redis", "--dry-run")
        destroy = project.deploy("--destroy", "--redis", "--dry-run")
    finally:
        project.close()
    assert run.ok and destroy.ok, (run, destroy)
    output = run.result.stdout
    assert "services enable" in output and "redis.googleapis.com" in output and "vpcaccess.googleapis.com" in output
    assert ("vpc-access connectors create token-service-vpc --region=us-central1 --network=default "
            "--range=10.8.0.0/28") in output
    assert "redis instances create token-service-redis --region=us-central1 --tier=standard --size=1" in output
    assert "--connect-mode=direct-peering --enable-auth" in output
    assert "secrets create token-service-redis-url" in output
    deploy_line = next(line for line in output.splitlines() if " functions deploy " in line)
    assert f"--vpc-connector={CONNECTOR}" in deploy_line and "--egress-settings=private-ranges-only" in deploy_line
    assert "REDIS_URL=token-service-redis-url:1" in deploy_line
    assert "redis instances delete token-service-redis" in destroy.result.stdout
    assert "vpc-access connectors delete token-service-vpc" in destroy.result.stdout
    assert "secrets delete token-service-redis-url" in destroy.result.stdout
    assert run.changes == [] and destroy.changes == []
