"""The Compute fake: deploy.sh's load balancer through the real gcloud, and what Google refuses."""

from __future__ import annotations

import json
from types import SimpleNamespace
from typing import Any

import pytest

from devtools.control_plane.server import ControlPlane, ControlPlaneServer
from tests.control_plane import rest
from tests.control_plane.conftest import requires_gcloud

POLICY = "projects/my-project/locations/global/serverTlsPolicies"
BASE = "http://google.fake/compute/v1/projects/my-project"


def call(server: ControlPlaneServer, method: str, path: str, body: dict[str, Any] | None = None,
         ) -> tuple[int, dict[str, Any]]:
    """A direct REST call to the fake's Compute API (no gcloud), answered as Google would."""
    return rest.call(server, method, f"compute/v1/projects/my-project/{path}", body)


@pytest.fixture
def tls_policies(enabled: ControlPlane) -> dict[str, dict[str, Any]]:
    """Server TLS policies ``mtls`` and ``mtls2``, as the networksecurity module keeps them."""
    networksecurity = enabled.apis.get("networksecurity")
    if networksecurity is None:  # that module may not be installed yet: stand in for its state only
        networksecurity = SimpleNamespace(prefix="networksecurity", service="", routes=[], server_tls_policies={})
        enabled.apis["networksecurity"] = networksecurity  # type: ignore[assignment]
    for name in ("mtls", "mtls2"):
        networksecurity.server_tls_policies[f"{POLICY}/{name}"] = {"name": f"{POLICY}/{name}"}
    return networksecurity.server_tls_policies





def ok(answer: tuple[int, dict[str, Any]]) -> dict[str, Any]:
    status, body = answer
    assert status == 200, body
    return body


def refused(answer: tuple[int, dict[str, Any]], code: int, reason: str, text: str = "") -> None:
    status, body = answer
    assert status == code, body
    assert body["error"]["code"] == code
    assert body["error"]["errors"][0]["reason"] == reason, body
    assert text in body["error"]["message"], body


def build_stack(server: ControlPlaneServer, scheme: str = "EXTERNAL_MANAGED") -> None:
    """deploy.sh's load balancer, created over REST with the partial URLs Google also accepts."""
    ok(call(server, "POST", "global/addresses", {"name": "web-ip"}))
    for name, domain in (("web-cert", "a.example.com"), ("web-cert2", "b.example.com")):
        ok(call(server, "POST", "global/sslCertificates", {"name": name, "type": "MANAGED",
                                                          "managed": {"domains": [domain]}}))
    ok(call(server, "POST", "global/sslPolicies", {"name": "web-tls", "profile": "MODERN", "minTlsVersion": "TLS_1_2"}))
    ok(call(server, "POST", "regions/us-central1/networkEndpointGroups",
            {"name": "web-neg", "networkEndpointType": "SERVERLESS", "cloudRun": {"service": "web"}}))
    ok(call(server, "POST", "global/backendServices", {
        "name": "web-be", "loadBalancingScheme": scheme,
        "backends": [{"group": "regions/us-central1/networkEndpointGroups/web-neg"}]}))
    ok(call(server, "POST", "global/urlMaps", {"name": "web-map", "defaultService": "global/backendServices/web-be"}))
    ok(call(server, "POST", "global/targetHttpsProxies", {
        "name": "web-proxy", "urlMap": "global/urlMaps/web-map",
        "sslCertificates": ["global/sslCertificates/web-cert"], "sslPolicy": "global/sslPolicies/web-tls",
        "serverTlsPolicy": f"//networksecurity.googleapis.com/{POLICY}/mtls"}))
    ok(call(server, "POST", "global/forwardingRules", {
        "name": "web-fr", "loadBalancingScheme": scheme, "IPAddress": "global/addresses/web-ip",
        "target": "global/targetHttpsProxies/web-proxy", "portRange": "443"}))


@requires_gcloud
def test_load_balancer_is_built_through_gcloud(gcloud: Any, enabled: ControlPlane,
                                               tls_policies: dict[str, Any]) -> None:
    compute = enabled.apis["compute"]
    steps = [
        ["addresses", "create", "web-ip", "--global"],
        ["ssl-certificates", "create", "web-cert", "--domains=a.example.com", "--global"],
        ["ssl-policies", "create", "web-tls", "--profile=MODERN", "--min-tls-version=1.2", "--global"],
        ["ssl-policies", "update", "web-tls", "--profile=RESTRICTED", "--min-tls-version=1.2", "--global"],
        ["network-endpoint-groups", "create", "web-neg", "--region=us-central1",
         "--network-endpoint-type=serverless", "--cloud-run-service=web"],
        ["backend-services", "create", "web-be", "--global", "--load-balancing-scheme=EXTERNAL_MANAGED"],
        ["backend-services", "add-backend", "web-be", "--global", "--network-endpoint-group=web-neg",
         "--network-endpoint-group-region=us-central1"],
        ["backend-services", "update", "web-be", "--global", "--enable-logging", "--logging-sample-rate=1",
         "--custom-request-header=X-Client-Cert-Present:{client_cert_present}",
         "--custom-request-header=X-Client-Cert-Chain-Verified:{client_cert_chain_verified}"],
        ["url-maps", "create", "web-map", "--default-service=web-be", "--global"],
        ["target-https-proxies", "create", "web-proxy", "--global", "--url-map=web-map", "--ssl-certificates=web-cert",
         f"--server-tls-policy={POLICY}/mtls", "--ssl-policy=web-tls"],
        ["forwarding-rules", "create", "web-fr", "--global", "--load-balancing-scheme=EXTERNAL_MANAGED",
         "--address=web-ip", "--target-https-proxy=web-proxy", "--ports=443"],
    ]
    for step in steps:
        result = gcloud("compute", *step, "--quiet")
        assert result.returncode == 0, (step, result.stderr)

    ip = compute.addresses["web-ip"]["address"]
    assert compute.ssl_certificates["web-cert"]["managed"] == {
        "domains": ["a.example.com"], "status": "PROVISIONING", "domainStatus": {"a.example.com": "PROVISIONING"}}
    assert compute.ssl_policies["web-tls"]["profile"] == "RESTRICTED"
    assert compute.network_endpoint_groups["web-neg"]["cloudRun"] == {"service": "web"}
    backend = compute.backend_services["web-be"]
    assert backend["backends"] == [{"group": f"{BASE}/regions/us-central1/networkEndpointGroups/web-neg"}]
    assert backend["logConfig"] == {"enable": True, "sampleRate": 1.0}
    assert backend["customRequestHeaders"] == ["X-Client-Cert-Present:{client_cert_present}",
                                               "X-Client-Cert-Chain-Verified:{client_cert_chain_verified}"]
    assert compute.url_maps["web-map"]["defaultService"] == f"{BASE}/global/backendServices/web-be"
    proxy = compute.target_https_proxies["web-proxy"]
    assert proxy["serverTlsPolicy"] == f"//networksecurity.googleapis.com/{POLICY}/mtls"
    assert proxy["sslCertificates"] == [f"{BASE}/global/sslCertificates/web-cert"]
    assert proxy["sslPolicy"] == f"{BASE}/global/sslPolicies/web-tls"
    rule = compute.forwarding_rules["web-fr"]
    assert (rule["IPAddress"], rule["portRange"], rule["target"]) == (ip, "443-443",
                                                                     f"{BASE}/global/targetHttpsProxies/web-proxy")

    described = gcloud("compute", "addresses", "describe", "web-ip", "--global", "--format=value(address)")
    assert described.stdout.strip() == ip
    listed = gcloud("compute", "addresses", "list", "--global", "--filter=name=web-ip", "--format=value(name)")
    assert listed.stdout.split() == ["web-ip"]


@requires_gcloud
def test_proxy_updates_through_gcloud(gcloud: Any, server: ControlPlaneServer, enabled: ControlPlane,
                                      tls_policies: dict[str, Any]) -> None:
    build_stack(server)
    proxy = enabled.apis["compute"].target_https_proxies

    assert gcloud("compute", "target-https-proxies", "update", "web-proxy", "--global",
                  f"--server-tls-policy={POLICY}/mtls2").returncode == 0
    assert proxy["web-proxy"]["serverTlsPolicy"] == f"//networksecurity.googleapis.com/{POLICY}/mtls2"
    assert gcloud("compute", "target-https-proxies", "update", "web-proxy", "--global",
                  "--clear-server-tls-policy", "--ssl-certificates=web-cert2").returncode == 0
    assert "serverTlsPolicy" not in proxy["web-proxy"]
    assert proxy["web-proxy"]["sslCertificates"] == [f"{BASE}/global/sslCertificates/web-cert2"]

    before = len(enabled.journal)  # an update that changes nothing sends no PATCH: a re-deploy is quiet
    assert gcloud("compute", "target-https-proxies", "update", "web-proxy", "--global",
                  "--ssl-policy=web-tls").returncode == 0
    assert enabled.mutations(before) == []

    # gcloud's own bug: the full-URI form of --server-tls-policy crashes before any request (deploy.sh must not use it)
    crashed = gcloud("compute", "target-https-proxies", "update", "web-proxy", "--global",
                     f"--server-tls-policy=//networksecurity.googleapis.com/{POLICY}/mtls")
    assert crashed.returncode != 0
    assert "AttributeError" in crashed.stderr and "SelfLink" in crashed.stderr
    assert enabled.mutations(before) == []


@requires_gcloud
def test_removals_through_gcloud(gcloud: Any, server: ControlPlaneServer, enabled: ControlPlane,
                                 tls_policies: dict[str, Any]) -> None:
    build_stack(server)
    compute = enabled.apis["compute"]

    in_use = gcloud("compute", "addresses", "delete", "web-ip", "--global", "--quiet")
    assert in_use.returncode != 0 and "is already being used by" in in_use.stderr
    assert "web-ip" in compute.addresses

    assert gcloud("compute", "network-endpoint-groups", "create", "fn-neg", "--region=us-central1",
                  "--network-endpoint-type=serverless", "--cloud-function-name=fn").returncode == 0
    assert compute.network_endpoint_groups["fn-neg"]["cloudFunction"] == {"function": "fn"}
    assert gcloud("compute", "backend-services", "remove-backend", "web-be", "--global",
                  "--network-endpoint-group=web-neg", "--network-endpoint-group-region=us-central1").returncode == 0
    assert "backends" not in compute.backend_services["web-be"]
    assert gcloud("compute", "network-endpoint-groups", "delete", "web-neg", "--region=us-central1",
                  "--quiet").returncode == 0
    assert "web-neg" not in compute.network_endpoint_groups

    listed = gcloud("compute", "ssl-certificates", "list", "--format=json")  # the aggregated list
    assert sorted(cert["name"] for cert in json.loads(listed.stdout)) == ["web-cert", "web-cert2"]


def test_operations_answer_get_and_wait(server: ControlPlaneServer, enabled: ControlPlane) -> None:
    operation = ok(call(server, "POST", "global/sslPolicies", {"name": "p"}))
    assert (operation["kind"], operation["status"], operation["operationType"]) == ("compute#operation", "DONE",
                                                                                    "insert")
    assert operation["targetLink"] == f"{BASE}/global/sslPolicies/p"
    assert ok(call(server, "GET", f"global/operations/{operation['name']}")) == operation
    assert ok(call(server, "POST", f"global/operations/{operation['name']}/wait")) == operation
    regional = ok(call(server, "POST", "regions/europe-west1/networkEndpointGroups",
                       {"name": "n", "networkEndpointType": "SERVERLESS", "appEngine": {}}))
    assert regional["selfLink"].endswith(f"/regions/europe-west1/operations/{regional['name']}")
    assert ok(call(server, "POST", f"regions/europe-west1/operations/{regional['name']}/wait"))["status"] == "DONE"
    refused(call(server, "GET", "global/operations/operation-nope"), 404, "notFound")


def test_missing_resources_are_googles_404(server: ControlPlaneServer, enabled: ControlPlane) -> None:
    for path in ("global/addresses/x", "global/sslCertificates/x", "global/sslPolicies/x", "global/backendServices/x",
                 "global/urlMaps/x", "global/targetHttpsProxies/x", "global/forwardingRules/x",
                 "regions/us-central1/networkEndpointGroups/x"):
        status, body = call(server, "GET", path)
        assert status == 404
        assert body["error"]["message"] == f"The resource 'projects/my-project/{path}' was not found"
        assert body["error"]["errors"][0] == {"domain": "global", "reason": "notFound",
                                              "message": body["error"]["message"]}
        refused(call(server, "DELETE", path), 404, "notFound")
