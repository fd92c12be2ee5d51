"""deploy.sh as a user runs it: the real gcloud against a stateful fake of Google's control plane.

Every assertion reads the fake's state (what Google would hold), never deploy.sh's output.
The scenarios are independent projects and run concurrently; each test checks one of them.
"""

from __future__ import annotations

import io
import json
import shutil
import subprocess
import zipfile
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from cryptography import x509

from devtools.control_plane.server import ControlPlane, GoogleError
from devtools.pki import ensure_dev_pki, mint_client
from tests.deploy_support import MTLS_VARIABLES, Project, Run

pytestmark = pytest.mark.skipif(shutil.which("gcloud") is None, reason="the Google Cloud CLI is not installed")

FQDN = "token.example.com"
SECRET_HEADER = "X-Token-Service-Proxy-Secret"
SERVICE = "projects/my-project/locations/us-central1/services/token-service"


def proxies_always_protected(plane: ControlPlane) -> None:
    """The invariant: no moment at which a proxy or the public address serves without mTLS."""
    compute = plane.apis["compute"]
    for name, proxy in compute.target_https_proxies.items():
        if not proxy.get("serverTlsPolicy") or not proxy.get("sslPolicy"):
            plane.violations.append(f"proxy {name} without its mTLS or SSL policy")
    for name, rule in compute.forwarding_rules.items():
        target = rule.get("target", "").rsplit("/", 1)[-1]
        if target not in compute.target_https_proxies:
            plane.violations.append(f"forwarding rule {name} to a missing proxy")


@pytest.fixture(scope="module")
def pki(tmp_path_factory) -> dict[str, Path]:
    directory = tmp_path_factory.mktemp("deploy-pki")
    paths = ensure_dev_pki(directory)
    mint_client(directory, "other-ca-holder", foreign_ca=True)  # makes a second, unrelated root CA
    paths["foreign_ca"] = paths["ca"].parent / "foreign-ca.pem"
    return paths


def base_arguments(pki: dict[str, Path]) -> list[str]:
    return ["--fqdn", FQDN, "--ca-cert", str(pki["ca"]), "--with-monitoring"]


class Scenarios:
    """Runs every scenario once, concurrently; tests read the recorded runs and the fakes' state."""

    def __init__(self, home: Path, pki: dict[str, Path]):
        self.home = home
        self.pki = pki
        self.projects: dict[str, Project] = {}
        self.runs: dict[str, list[Run]] = {}

    def project(self, name: str) -> Project:
        project = Project(self.home / name)
        project.plane.watchers.append(proxies_always_protected)
        self.projects[name] = project
        return project

    def play(self, scenarios: dict[str, Callable[[Project], list[Run]]]) -> None:
        projects = {name: self.project(name) for name in scenarios}
        with ThreadPoolExecutor(max_workers=len(scenarios)) as pool:
            futures = {name: pool.submit(scenario, projects[name]) for name, scenario in scenarios.items()}
            self.runs = {name: future.result() for name, future in futures.items()}


def changed_ca_bundle(pki: dict[str, Path], home: Path) -> Path:
    """Two roots in one file with Windows line ends: the CA rotation users actually do."""
    bundle = home / "new-cas.pem"
    text = pki["ca"].read_text() + pki["foreign_ca"].read_text()
    bundle.write_bytes(text.replace("\n", "\r\n").encode())
    return bundle


@pytest.fixture(scope="module")
def scenarios(tmp_path_factory, pki) -> Iterator[Scenarios]:
    home = tmp_path_factory.mktemp("deploy-scenarios")
    played = Scenarios(home, pki)
    policy = home / "policy.yaml"
    policy.write_text("clients: []\n")
    base = base_arguments(pki)

    def fresh(project: Project) -> list[Run]:
        return [project.deploy(*base, "--output", "json"), project.deploy(*base)]

    def converge(project: Project) -> list[Run]:
        # Google: a new log-based metric is not usable in an alert policy for a while.
        project.api("monitoring").metric_visible_after = 20
        first = project.deploy(*base, ALERT_RETRY_SECONDS="4")
        changed = project.deploy("--fqdn", "tokens.example.org", "--ca-cert", str(changed_ca_bundle(pki, home)),
                                 "--cpu", "4", "--policy", str(policy), "--auth-flows",
                                 "xlb-mtls-client-credentials,client-secret", "--with-monitoring",
                                 "--alert-refusals-per-minute", "30")
        return [first, changed]

    def destroy_and_redeploy(project: Project) -> list[Run]:
        return [project.deploy(*base), project.deploy("--destroy", "--yes"), project.deploy(*base)]

    def rotate(project: Project) -> list[Run]:
        return [project.deploy(*base), project.deploy(*base, "--rotate-proxy-secret"),
                project.deploy(*base, "--finish-proxy-secret-rotation")]

    def org_policy(project: Project) -> list[Run]:
        project.plane.public_access_forbidden = True  # domain-restricted sharing
        refused = project.deploy(*base)
        project.plane.public_access_forbidden = False
        return [refused, project.deploy(*base)]

    def no_invoker_check(project: Project) -> list[Run]:
        project.plane.public_access_forbidden = True
        return [project.deploy(*base, "--invoker", "no-iam-check")]

    def failed_build(project: Project) -> list[Run]:
        project.api("functions").fail_next_build = "Build failed: pip could not resolve the requirements"
        return [project.deploy(*base), project.deploy(*base)]

    played.play({"fresh": fresh, "converge": converge, "destroy": destroy_and_redeploy, "rotate": rotate,
                 "org_policy": org_policy, "no_invoker_check": no_invoker_check, "failed_build": failed_build})
    yield played
    for project in played.projects.values():
        project.close()


# ---- a fresh deploy ---------------------------------------------------------------------------


def test_a_fresh_deploy_builds_the_intended_stack(scenarios):
    run = scenarios.runs["fresh"][0]
    assert run.ok, run
    project = scenarios.projects["fresh"]
    compute, plane = project.api("compute"), project.plane
    proxy = compute.target_https_proxies["token-service-proxy"]
    assert proxy["serverTlsPolicy"].endswith("/locations/global/serverTlsPolicies/token-service-mtls")
    assert proxy["sslPolicy"].endswith("/sslPolicies/token-service-tls12")
    ssl_policy = compute.ssl_policies["token-service-tls12"]
    assert ssl_policy["profile"] == "MODERN" and ssl_policy["minTlsVersion"] == "TLS_1_2"
    tls_policy = project.api("networksecurity").server_tls_policies[
        "projects/my-project/locations/global/serverTlsPolicies/token-service-mtls"]
    assert tls_policy["mtlsPolicy"]["clientValidationMode"] == "ALLOW_INVALID_OR_MISSING_CLIENT_CERT"
    assert tls_policy["mtlsPolicy"]["clientValidationTrustConfig"].endswith("/trustConfigs/token-service-ca")
    neg = compute.network_endpoint_groups["token-service-neg"]
    assert neg["networkEndpointType"] == "SERVERLESS" and neg["cloudRun"]["service"] == "token-service"
    assert "cloudFunction" not in neg
    backend = compute.backend_services["token-service-backend"]
    headers = dict(header.split(":", 1) for header in backend["customRequestHeaders"])
    for variable in MTLS_VARIABLES:
        assert f"{{{variable}}}" in headers.values(), variable
    assert backend["backends"][0]["group"].endswith("/networkEndpointGroups/token-service-neg")
    function = project.api("functions").functions["projects/my-project/locations/us-central1/functions/token-service"]
    assert function["environment"] == "GEN_2" and function["state"] == "ACTIVE"
    assert function["serviceConfig"]["ingressSettings"] == "ALLOW_INTERNAL_AND_GCLB"
    assert function["buildConfig"]["serviceAccount"].endswith("token-service-build@my-project.iam.gserviceaccount.com")
    provider = project.api("iam").workload_identity.providers[
        f"projects/{plane.project_number}/locations/global/workloadIdentityPools/token-service/providers/token-service"]
    assert provider["oidc"]["issuerUri"] == f"https://{FQDN}"
    assert plane.violations == []


def test_the_proxy_never_exists_without_its_policies(scenarios):
    """Order of creation, from the journal: policies first, then the proxy, the address last."""
    run = scenarios.runs["fresh"][0]
    created = [event.path for event in run.changes if event.action in ("create", "insert")]
    kinds = ("trustConfigs", "serverTlsPolicies", "sslPolicies", "targetHttpsProxies", "forwardingRules")
    position = {kind: next(i for i, path in enumerate(created) if kind in path) for kind in kinds}
    assert position["trustConfigs"] < position["serverTlsPolicies"] < position["targetHttpsProxies"]
    assert position["sslPolicies"] < position["targetHttpsProxies"] < position["forwardingRules"]
    assert all(not scenario.plane.violations for scenario in scenarios.projects.values())


def test_least_privilege(scenarios):
    project = scenarios.projects["fresh"]
    iam = project.api("iam")
    runtime = "token-service@my-project.iam.gserviceaccount.com"
    role = iam.roles["projects/my-project/roles/token_service_signJwt"]
    assert role["includedPermissions"] == ["iam.serviceAccounts.signJwt"]
    bindings = iam.policies.get(f"projects/my-project/serviceAccounts/{runtime}")["bindings"]
    assert bindings == [{"role": "projects/my-project/roles/token_service_signJwt",
                         "members": [f"serviceAccount:{runtime}"]}]
    project_roles = {binding["role"] for binding in project.api("crm").policies.get("my-project")["bindings"]
                     if "serviceAccount:token-service-build@my-project.iam.gserviceaccount.com" in binding["members"]}
    assert project_roles == {"roles/storage.objectViewer", "roles/artifactregistry.writer", "roles/logging.logWriter"}


def test_the_load_balancer_sends_the_secret_the_function_accepts(scenarios):
    project = scenarios.projects["fresh"]
    secret = project.api("secretmanager")
    value = secret_lines(project)[0]
    assert len(value) == 64
    backend = project.api("compute").backend_services["token-service-backend"]
    assert f"{SECRET_HEADER}:{value}" in backend["customRequestHeaders"]
    function = project.api("functions").functions["projects/my-project/locations/us-central1/functions/token-service"]
    [mounted] = function["serviceConfig"]["secretEnvironmentVariables"]
    assert mounted["key"] == "PROXY_SECRETS" and mounted["secret"] == "token-service-proxy-secret"
    for run in scenarios.runs["fresh"] + scenarios.runs["converge"] + scenarios.runs["rotate"]:
        assert value not in run.result.stdout + run.result.stderr, "the proxy secret reached the console"
    assert secret.accessible("token-service-proxy-secret", mounted["version"],
                             "serviceAccount:token-service@my-project.iam.gserviceaccount.com") is None


def test_json_summary(scenarios):
    project = scenarios.projects["fresh"]
    summary = json.loads(scenarios.runs["fresh"][0].result.stdout)
    number = project.plane.project_number
    provider = f"projects/{number}/locations/global/workloadIdentityPools/token-service/providers/token-service"
    assert summary["issuer"] == f"https://{FQDN}"
    assert summary["workload_identity_provider"] == provider
    assert summary["audience"] == f"//iam.googleapis.com/{provider}"
    assert summary["load_balancer_ip"] == project.api("compute").addresses["token-service-ip"]["address"]
    assert summary["function_uri"].startswith("https://token-service-")
    assert summary["service_accounts"]["runtime"] == "token-service@my-project.iam.gserviceaccount.com"
    assert "create-cred-config" in summary["create_cred_config"]


def test_the_alert_waits_for_new_metrics(scenarios):
    first = scenarios.runs["converge"][0]
    assert first.ok, first
    assert "not visible to Monitoring yet; retrying" in first.result.stdout
    assert len(scenarios.projects["converge"].api("monitoring").alert_policies) == 1


def test_monitoring(scenarios):
    project = scenarios.projects["fresh"]
    assert set(project.api("logging").metrics) >= {"token_service_tokens_issued", "token_service_refusals",
                                                     "token_service_upstream_latency"}
    [policy] = project.api("monitoring").alert_policies.values()
    assert policy["displayName"] == "token-service refusal rate"


# ---- re-runs ----------------------------------------------------------------------------------


def test_a_second_run_changes_nothing(scenarios):
    run = scenarios.runs["fresh"][1]
    assert run.ok, run
    assert run.changes == [], [f"{event.action} {event.path}" for event in run.changes]


def test_changed_inputs_converge(scenarios):
    run = scenarios.runs["converge"][1]
    assert run.ok, run
    project = scenarios.projects["converge"]
    compute = project.api("compute")
    trust = project.api("certificatemanager").trust_configs[
        "projects/my-project/locations/global/trustConfigs/token-service-ca"]
    anchors = [x509.load_pem_x509_certificate(anchor["pemCertificate"].encode())
               for anchor in trust["trustStores"][0]["trustAnchors"]]
    assert {anchor.subject for anchor in anchors} == {
        x509.load_pem_x509_certificate(scenarios.pki[name].read_bytes()).subject for name in ("ca", "foreign_ca")}
    provider = next(iter(project.api("iam").workload_identity.providers.values()))
    assert provider["oidc"]["issuerUri"] == "https://tokens.example.org"
    [certificate] = compute.ssl_certificates.values()  # the old FQDN's certificate is gone
    assert certificate["managed"]["domains"] == ["tokens.example.org"]
    assert compute.target_https_proxies["token-service-proxy"]["sslCertificates"][0].endswith(certificate["name"])
    function = project.api("functions").functions["projects/my-project/locations/us-central1/functions/token-service"]
    assert function["serviceConfig"]["availableCpu"] == "4" and function["serviceConfig"]["availableMemory"] == "2Gi"
    environment = function["serviceConfig"]["environmentVariables"]
    assert environment["TOKEN_ISSUER"] == "https://tokens.example.org" and environment["POLICY_FILE"] == "policy.yaml"
    files = zipfile.ZipFile(io.BytesIO(project.api("functions").sources[function["name"]]))
    assert files.read("policy.yaml") == b"clients: []\n"
    uploaded = {name.split("/")[0] for name in files.namelist()}
    assert uploaded <= {"main.py", "requirements.txt", "token_service", "policy.yaml", ".gcloudignore"}, uploaded
    [policy] = project.api("monitoring").alert_policies.values()
    assert policy["conditions"][0]["conditionThreshold"]["thresholdValue"] == 0.5
    updated = {event.path.rsplit("/", 1)[-1].split("?")[0] for event in run.changes}
    assert "token-service-ca" in updated and "token-service-proxy" in updated


# ---- destroy ----------------------------------------------------------------------------------


def test_destroy_removes_everything_and_deploy_works_again(scenarios):
    deployed, destroyed, again = scenarios.runs["destroy"]
    assert deployed.ok and destroyed.ok and again.ok, (deployed, destroyed, again)
    deletions = {event.path for event in destroyed.changes if event.action == "delete"}
    for kind in ("forwardingRules", "targetHttpsProxies", "urlMaps", "backendServices", "networkEndpointGroups",
                 "sslCertificates", "sslPolicies", "serverTlsPolicies", "trustConfigs", "addresses", "metrics",
                 "alertPolicies", "functions", "secrets", "providers", "workloadIdentityPools", "serviceAccounts",
                 "roles"):
        assert any(f"/{kind}/" in path for path in deletions), kind
    undeleted = [event.path for event in again.changes if event.action == "undelete"]
    assert any("/workloadIdentityPools/token-service" in path for path in undeleted)
    project = scenarios.projects["destroy"]
    pool = next(iter(project.api("iam").workload_identity.pools.values()))
    assert pool["state"] == "ACTIVE"
    assert project.api("compute").target_https_proxies["token-service-proxy"]["serverTlsPolicy"]


def test_destroy_stops_when_a_read_fails(tmp_path, pki):
    project = Project(tmp_path)
    try:
        assert project.deploy(*base_arguments(pki)).ok
        project.plane.refuse("GET", r"/targetHttpsProxies", GoogleError(
            403, "Required 'compute.targetHttpsProxies.list' permission for 'projects/my-project'", reason="forbidden"))
        run = project.deploy("--destroy", "--yes")
        assert run.result.returncode == 3, run
        assert "compute.targetHttpsProxies.list" in run.result.stderr and "Done" not in run.result.stdout
        assert "token-service-proxy" in project.api("compute").target_https_proxies
    finally:
        project.close()


# ---- the function's invoker and failed deploys ---------------------------------------------------


def test_an_org_policy_refusal_is_repaired_by_the_next_run(scenarios):
    refused, repaired = scenarios.runs["org_policy"]
    assert not refused.ok and "permitted customer" in refused.result.stderr
    assert repaired.ok, repaired
    project = scenarios.projects["org_policy"]
    assert "allUsers" in project.api("run").policies.members(SERVICE, "roles/run.invoker")


def test_no_invoker_iam_check_under_the_org_policy(scenarios):
    [run] = scenarios.runs["no_invoker_check"]
    assert run.ok, run
    run_api = scenarios.projects["no_invoker_check"].api("run")
    assert run_api.invoker_iam_disabled(SERVICE)
    assert run_api.policies.members(SERVICE, "roles/run.invoker") == set()


def test_a_failed_build_is_redeployed(scenarios):
    failed, repaired = scenarios.runs["failed_build"]
    assert not failed.ok
    assert repaired.ok, repaired
    assert any(event.path.endswith("/functions/token-service") or "functions?functionId" in event.path
               for event in repaired.changes)
    function = scenarios.projects["failed_build"].api("functions").functions[
        "projects/my-project/locations/us-central1/functions/token-service"]
    assert function["state"] == "ACTIVE"


# ---- the proxy secret's rotation ----------------------------------------------------------------


def secret_lines(project: Project) -> list[str]:
    function = project.api("functions").functions["projects/my-project/locations/us-central1/functions/token-service"]
    [mounted] = function["serviceConfig"]["secretEnvironmentVariables"]
    secrets = project.api("secretmanager")
    secret = secrets.key("my-project", "token-service-proxy-secret")
    payload = secrets.payloads[f"{secret}/versions/{mounted['version']}"]
    return payload.decode().split()


def test_rotation_keeps_both_values_until_it_finishes(scenarios):
    first, started, finished = scenarios.runs["rotate"]
    assert first.ok and started.ok and finished.ok, (first, started, finished)
    project = scenarios.projects["rotate"]
    headers = project.api("compute").backend_services["token-service-backend"]["customRequestHeaders"]
    sent = next(header.split(":", 1)[1] for header in headers if header.startswith(SECRET_HEADER))
    assert secret_lines(project) == [sent]
    secrets = project.api("secretmanager")
    name = secrets.key("my-project", "token-service-proxy-secret")
    versions = [secrets.payloads[f"{name}/versions/{number}"].decode().split() for number in (1, 2, 3)]
    old, new = versions[0][0], sent
    assert versions == [[old], [new, old], [new]]  # during the rotation the function accepted both
    assert [secrets.versions[f"{name}/versions/{number}"]["state"] for number in (1, 2, 3)] == [
        "DISABLED", "DISABLED", "ENABLED"]
    paths = [event.path for event in started.changes]
    accepts_both = next(i for i, path in enumerate(paths) if path.endswith("/functions/token-service"))
    sends_new = next(i for i, path in enumerate(paths) if path.endswith("/backendServices/token-service-backend"))
    assert accepts_both < sends_new, "the load balancer switched before the function accepted the new value"


def test_pem_normalisation(tmp_path, pki):
    """CRLF line ends and a bundle of two roots become two clean one-certificate anchors."""
    bundle = changed_ca_bundle(pki, tmp_path)
    result = subprocess.run(["bash", "-c", f'source deploy/inputs.sh; pem_certificates "{bundle}"'],
                            capture_output=True, text=True, cwd=Path(__file__).parent.parent)
    lines = result.stdout.splitlines()
    assert len(lines) == 2 and all("\r" not in line for line in lines)
    for line in lines:
        pem = line.replace("\\n", "\n")
        assert pem.count("BEGIN CERTIFICATE") == 1
        x509.load_pem_x509_certificate(pem.encode())
