"""What the Compute fake refuses, as Google does: bad bodies, dangling references, deleting what is in use."""

from __future__ import annotations

from typing import Any

import pytest

from devtools.control_plane.server import ControlPlane, ControlPlaneServer
from tests.control_plane.test_compute import POLICY, build_stack, call, ok, refused, tls_policies

__all__ = ["tls_policies"]  # the fixture, shared with test_compute


def test_names_and_duplicates(server: ControlPlaneServer, enabled: ControlPlane) -> None:
    for name in ("Web", "1web", "web-", "w" * 64, "web_ip"):
        refused(call(server, "POST", "global/addresses", {"name": name}), 400, "invalid", "Must be a match of regex")
    ok(call(server, "POST", "global/addresses", {"name": "web-ip"}))
    refused(call(server, "POST", "global/addresses", {"name": "web-ip"}), 409, "alreadyExists",
            "'projects/my-project/global/addresses/web-ip' already exists")
    refused(call(server, "POST", "global/addresses", {"name": "std", "networkTier": "STANDARD"}), 400, "invalid")


@pytest.mark.parametrize("body", [
    {"name": "p", "profile": "STRICT"},
    {"name": "p", "profile": "MODERN", "minTlsVersion": "TLS_1_4"},
    {"name": "p", "profile": "CUSTOM"},
    {"name": "p", "profile": "MODERN", "customFeatures": ["TLS_RSA_WITH_AES_128_GCM_SHA256"]},
])
def test_ssl_policy_enums(server: ControlPlaneServer, enabled: ControlPlane, body: dict[str, Any]) -> None:
    refused(call(server, "POST", "global/sslPolicies", body), 400, "invalid")


def test_ssl_policy_patch_needs_the_current_fingerprint(server: ControlPlaneServer, enabled: ControlPlane) -> None:
    ok(call(server, "POST", "global/sslPolicies", {"name": "p", "profile": "MODERN"}))
    refused(call(server, "PATCH", "global/sslPolicies/p", {"fingerprint": "AAAAAAAAAAA=", "profile": "RESTRICTED"}),
            412, "conditionNotMet")
    refused(call(server, "PATCH", "global/sslPolicies/p", {"profile": "LAX"}), 400, "invalid")
    assert enabled.apis["compute"].ssl_policies["p"]["profile"] == "MODERN"


def test_managed_certificates(server: ControlPlaneServer, enabled: ControlPlane) -> None:
    refused(call(server, "POST", "global/sslCertificates", {"name": "c", "type": "MANAGED"}), 400, "invalid",
            "managed.domains")
    refused(call(server, "POST", "global/sslCertificates", {"name": "c", "type": "MANAGED",
                                                           "managed": {"domains": ["*.example.com"]}}), 400, "invalid")
    refused(call(server, "POST", "global/sslCertificates", {"name": "c", "type": "GOOGLE"}), 400, "invalid")
    ok(call(server, "POST", "global/sslCertificates", {"name": "c", "managed": {"domains": ["a.example.com"]}}))
    status, _ = call(server, "PATCH", "global/sslCertificates/c", {"description": "immutable"})
    assert status == 405


@pytest.mark.parametrize("body", [
    {"name": "n", "networkEndpointType": "SERVERLESS"},
    {"name": "n", "networkEndpointType": "SERVERLESS", "cloudRun": {"service": "a"},
     "cloudFunction": {"function": "f"}},
    {"name": "n", "networkEndpointType": "SERVERLESS", "cloudRun": {}},
    {"name": "n", "networkEndpointType": "SERVERLES", "cloudRun": {"service": "a"}},
    {"name": "n", "networkEndpointType": "SERVERLESS", "cloudRun": {"service": "a"}, "defaultPort": 443},
])
def test_serverless_groups(server: ControlPlaneServer, enabled: ControlPlane, body: dict[str, Any]) -> None:
    refused(call(server, "POST", "regions/us-central1/networkEndpointGroups", body), 400, "invalid")


def test_backend_services(server: ControlPlaneServer, enabled: ControlPlane) -> None:
    refused(call(server, "POST", "global/backendServices", {"name": "b", "loadBalancingScheme": "EXTERNAL_MANGED"}),
            400, "invalid")
    refused(call(server, "POST", "global/backendServices", {
        "name": "b", "backends": [{"group": "regions/us-central1/networkEndpointGroups/nope"}]}), 404, "notFound",
        "projects/my-project/regions/us-central1/networkEndpointGroups/nope")
    refused(call(server, "POST", "global/backendServices", {"name": "b", "backends": [{"group": "web-neg"}]}),
            400, "invalid", "The URL is malformed")
    ok(call(server, "POST", "regions/us-central1/networkEndpointGroups",
            {"name": "neg", "networkEndpointType": "SERVERLESS", "cloudRun": {"service": "web"}}))
    group = {"group": "regions/us-central1/networkEndpointGroups/neg"}
    refused(call(server, "POST", "global/backendServices", {  # the group exists, but in a region
        "name": "b", "backends": [{"group": "global/networkEndpointGroups/neg"}]}), 404, "notFound")
    refused(call(server, "POST", "global/backendServices", {
        "name": "b", "backends": [group], "healthChecks": ["global/healthChecks/hc"]}), 400, "invalid", "healthcheck")
    refused(call(server, "POST", "global/backendServices", {"name": "b", "backends": [group, group]}), 400, "invalid",
            "Duplicate")
    refused(call(server, "POST", "global/backendServices", {"name": "b", "logConfig": {"enable": True,
                                                                                      "sampleRate": 2}}),
            400, "invalid", "sampleRate")


@pytest.mark.parametrize("header", [
    "X-Google-Client:1", "X-Goog-Foo:1", "X-GFE-Foo:1", "X-Amz-Foo:1", "Host:example.com", "Content-Length:1",
    "Connection:close", "X-User-IP:1", "Bad Name:1", "NoColon", "X-Cert:{client_cert_presnt}", "X-Cert:{oops",
    "X-Cert:a\r\nb",
])
def test_custom_request_headers_refused(server: ControlPlaneServer, enabled: ControlPlane, header: str) -> None:
    refused(call(server, "POST", "global/backendServices", {"name": "b", "customRequestHeaders": [header]}), 400,
            "invalid", "customRequestHeaders[0]")


def test_custom_request_headers_accepted_and_limited(server: ControlPlaneServer, enabled: ControlPlane) -> None:
    good = ["X-Client-Cert-Present:{client_cert_present}", "X-Geo:{client_region},{client_city}",
            "X-Tls:{tls_version} {tls_cipher_suite}", "X-Braces:{{literal}}", "X-Empty:"]
    ok(call(server, "POST", "global/backendServices", {"name": "b", "customRequestHeaders": good}))
    refused(call(server, "POST", "global/backendServices", {"name": "c", "customRequestHeaders": ["X-A:1", "x-a:2"]}),
            400, "invalid", "more than once")
    many = [f"X-H{number}:1" for number in range(17)]
    refused(call(server, "POST", "global/backendServices", {"name": "c", "customRequestHeaders": many}), 400,
            "invalid", "At most 16")


def test_dangling_references(server: ControlPlaneServer, enabled: ControlPlane,
                             tls_policies: dict[str, Any]) -> None:
    build_stack(server)
    refused(call(server, "POST", "global/urlMaps", {"name": "m", "defaultService": "global/backendServices/nope"}),
            404, "notFound")
    proxy = {"name": "p", "urlMap": "global/urlMaps/web-map", "sslCertificates": ["global/sslCertificates/web-cert"]}
    for field, value in (("urlMap", "global/urlMaps/nope"), ("sslCertificates", ["global/sslCertificates/nope"]),
                         ("sslPolicy", "global/sslPolicies/nope"), ("serverTlsPolicy", f"{POLICY}/nope")):
        refused(call(server, "POST", "global/targetHttpsProxies", {**proxy, field: value}), 404, "notFound")
    refused(call(server, "POST", "global/targetHttpsProxies", {**proxy, "sslCertificates": []}), 400, "invalid")
    refused(call(server, "POST", "global/targetHttpsProxies", {**proxy, "serverTlsPolicy": "mtls"}), 400, "invalid")
    rule = {"name": "r", "loadBalancingScheme": "EXTERNAL_MANAGED", "target": "global/targetHttpsProxies/web-proxy",
            "portRange": "8443"}
    refused(call(server, "POST", "global/forwardingRules", {**rule, "IPAddress": "global/addresses/nope"}), 404,
            "notFound")
    refused(call(server, "POST", "global/forwardingRules", {**rule, "IPAddress": "203.0.113.9"}), 400, "invalid",
            "not reserved")
    refused(call(server, "POST", "global/forwardingRules", {**rule, "target": "global/targetHttpsProxies/nope"}), 404,
            "notFound")
    refused(call(server, "POST", "global/forwardingRules", {**rule, "loadBalancingScheme": "EXTERNAL"}), 400,
            "invalid", "must match")
    refused(call(server, "POST", "global/forwardingRules", {**rule, "IPAddress": "global/addresses/web-ip",
                                                           "portRange": "443"}), 400, "invalid", "already used")
    assert sorted(enabled.apis["compute"].forwarding_rules) == ["web-fr"]


def test_nothing_in_use_can_be_deleted(server: ControlPlaneServer, enabled: ControlPlane,
                                       tls_policies: dict[str, Any]) -> None:
    build_stack(server)
    order = ["global/addresses/web-ip", "global/targetHttpsProxies/web-proxy", "global/sslCertificates/web-cert",
             "global/sslPolicies/web-tls", "global/urlMaps/web-map", "global/backendServices/web-be",
             "regions/us-central1/networkEndpointGroups/web-neg"]
    for path in order:
        refused(call(server, "DELETE", path), 400, "resourceInUseByAnotherResource", "is already being used by")
    ok(call(server, "DELETE", "global/forwardingRules/web-fr"))
    for path in order:  # in dependency order each delete now succeeds
        ok(call(server, "DELETE", path))
    compute = enabled.apis["compute"]
    assert not (compute.addresses or compute.target_https_proxies or compute.url_maps or compute.backend_services)
    assert [event.action for event in enabled.mutations()].count("delete") == 8
