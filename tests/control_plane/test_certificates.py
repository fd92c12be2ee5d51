"""Certificate Manager trust configs and Network Security server TLS policies, through the real gcloud."""

from __future__ import annotations

import datetime
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from devtools.control_plane.server import ControlPlane, ControlPlaneServer
from tests.control_plane.conftest import requires_gcloud
from tests.control_plane.rest import call

LOCATION = "projects/my-project/locations/global"
TC = f"{LOCATION}/trustConfigs/tc"
POLICY = f"{LOCATION}/serverTlsPolicies/tls"



def ca_pem(name: str) -> str:
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    start = datetime.datetime.now(datetime.UTC)
    certificate = (x509.CertificateBuilder().subject_name(subject).issuer_name(subject).public_key(key.public_key())
                   .serial_number(x509.random_serial_number()).not_valid_before(start)
                   .not_valid_after(start + datetime.timedelta(days=30))
                   .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
                   .sign(key, hashes.SHA256()))
    return certificate.public_bytes(serialization.Encoding.PEM).decode()





def trust_config(*anchors: str, intermediates: tuple[str, ...] = ()) -> dict[str, Any]:
    store: dict[str, Any] = {"trustAnchors": [{"pemCertificate": pem} for pem in anchors]}
    if intermediates:
        store["intermediateCas"] = [{"pemCertificate": pem} for pem in intermediates]
    return {"trustStores": [store]}


def policy(mode: str = "ALLOW_INVALID_OR_MISSING_CLIENT_CERT", trust: str = TC) -> dict[str, Any]:
    return {"mtlsPolicy": {"clientValidationMode": mode, "clientValidationTrustConfig": trust}}


@requires_gcloud
def test_trust_config_and_policy_through_gcloud(enabled: ControlPlane, gcloud: Callable[..., Any],
                                                tmp_path: Path) -> None:
    root, intermediate = ca_pem("root"), ca_pem("intermediate")
    escaped = [pem.replace("\n", "\\n") for pem in (root, intermediate)]  # one line, as deploy.sh's pem_line writes
    (tmp_path / "tc.yaml").write_text(f'name: tc\ntrustStores:\n- trustAnchors:\n  - pemCertificate: "{escaped[0]}"\n'
                                      f'  intermediateCas:\n  - pemCertificate: "{escaped[1]}"\n')
    (tmp_path / "p.yaml").write_text(f"name: tls\nmtlsPolicy:\n  clientValidationMode: ALLOW_INVALID_OR_MISSING_CLIENT_"
                                     f"CERT\n  clientValidationTrustConfig: {TC}\n")
    imported = gcloud("certificate-manager", "trust-configs", "import", "tc", f"--source={tmp_path / 'tc.yaml'}",
                      "--location=global")
    assert imported.returncode == 0, imported.stderr
    manager = enabled.apis["certificatemanager"]
    assert manager.trust_configs[TC]["trustStores"][0]["trustAnchors"][0]["pemCertificate"] == root
    assert manager.trust_configs[TC]["trustStores"][0]["intermediateCas"][0]["pemCertificate"] == intermediate
    described = gcloud("certificate-manager", "trust-configs", "describe", "tc", "--location=global", "--format=json")
    assert json.loads(described.stdout)["name"] == TC
    listed = gcloud("certificate-manager", "trust-configs", "list", "--location=global", "--format=value(name)")
    assert listed.stdout.split() == ["tc"]

    assert gcloud("network-security", "server-tls-policies", "import", "tls", f"--source={tmp_path / 'p.yaml'}",
                  "--location=global").returncode == 0
    security = enabled.apis["networksecurity"]
    assert security.server_tls_policies[POLICY]["mtlsPolicy"]["clientValidationTrustConfig"] == TC
    refused = gcloud("certificate-manager", "trust-configs", "delete", "tc", "--location=global")
    assert refused.returncode != 0 and "FAILED_PRECONDITION" in refused.stderr and TC in manager.trust_configs

    enabled.apis["compute"].target_https_proxies["proxy"] = {
        "name": "proxy", "serverTlsPolicy": f"//networksecurity.googleapis.com/{POLICY}"}
    refused = gcloud("network-security", "server-tls-policies", "delete", "tls", "--location=global")
    assert refused.returncode != 0 and "in use by proxy" in refused.stderr and POLICY in security.server_tls_policies
    del enabled.apis["compute"].target_https_proxies["proxy"]
    assert gcloud("network-security", "server-tls-policies", "delete", "tls", "--location=global").returncode == 0
    assert POLICY not in security.server_tls_policies
    assert gcloud("certificate-manager", "trust-configs", "delete", "tc", "--location=global").returncode == 0
    assert manager.trust_configs == {}


@pytest.fixture
def tc(enabled: ControlPlane, server: ControlPlaneServer) -> ControlPlaneServer:
    status, body = call(server, "POST", f"certificatemanager/v1/{LOCATION}/trustConfigs?trustConfigId=tc",
                        trust_config(ca_pem("root")))
    assert status == 200 and body["done"], body
    polled = call(server, "GET", f"certificatemanager/v1/{body['name']}")  # as gcloud polls an operation
    assert polled == (200, body) and body["name"].startswith(f"{LOCATION}/operations/")
    return server


@pytest.mark.parametrize("pem, why", [
    (lambda: ca_pem("a") + ca_pem("b"), "two certificates"),
    (lambda: ca_pem("a").replace("\n-----END", "AAAA\n-----END"), "base64 that is not a certificate"),
    (lambda: ca_pem("a")[:200] + "\n-----END CERTIFICATE-----\n", "truncated"),
    (lambda: ca_pem("a")[:120] + "\r" + ca_pem("a")[120:], "a CR inside a base64 line"),
    (lambda: "subject=CN=a\n" + ca_pem("a"), "stray text before the block"),
    (lambda: ca_pem("a").replace("CERTIFICATE", "PUBLIC KEY"), "not a certificate block"),
    (lambda: "-----BEGIN CERTIFICATE-----\n" + "QUFB" * 1400 + "\n-----END CERTIFICATE-----\n", "over 5kB"),
])
def test_trust_config_refuses_a_bad_certificate(enabled: ControlPlane, server: ControlPlaneServer,
                                               pem: Callable[[], str], why: str) -> None:
    status, body = call(server, "POST", f"certificatemanager/v1/{LOCATION}/trustConfigs?trustConfigId=tc",
                        trust_config(ca_pem("root"), intermediates=(pem(),)))
    assert (status, body["error"]["status"]) == (400, "INVALID_ARGUMENT"), why
    assert TC not in enabled.apis["certificatemanager"].trust_configs


def test_trust_config_accepts_crlf_line_ends_and_refuses_an_empty_store(enabled: ControlPlane,
                                                                        server: ControlPlaneServer) -> None:
    collection = f"certificatemanager/v1/{LOCATION}/trustConfigs"
    assert call(server, "POST", f"{collection}?trustConfigId=crlf",
                trust_config(ca_pem("root").replace("\n", "\r\n")))[0] == 200
    status, body = call(server, "POST", f"{collection}?trustConfigId=empty",
                        {"trustStores": [{"intermediateCas": [{"pemCertificate": ca_pem("i")}]}]})
    assert status == 400 and "trust anchor" in body["error"]["message"]
    status, _ = call(server, "POST", f"{collection}?trustConfigId=two", {"trustStores": [
        trust_config(ca_pem("a"))["trustStores"][0], trust_config(ca_pem("b"))["trustStores"][0]]})
    assert status == 400
    status, body = call(server, "POST", f"{collection}?trustConfigId=crlf", trust_config(ca_pem("root")))
    assert (status, body["error"]["status"]) == (409, "ALREADY_EXISTS")
    # gcloud's import over an existing trust config sends PATCH without the updateMask the API requires
    status, body = call(server, "PATCH", f"{collection}/crlf", trust_config(ca_pem("other")))
    assert status == 400 and "update_mask" in body["error"]["message"]


@pytest.mark.parametrize("body, message", [
    (policy(mode="REJECT_ALL"), "client_validation_mode"),
    (policy(trust=f"{LOCATION}/trustConfigs/missing"), "does not exist"),
    (policy(trust="tc"), "must match"),
    ({"description": "no mTLS"}, "mtls_policy"),
    ({**policy(), "allowOpen": True}, "must be empty"),
])
def test_server_tls_policy_refusals(tc: ControlPlaneServer, body: dict[str, Any], message: str) -> None:
    status, answer = call(tc, "POST", f"networksecurity/v1/{LOCATION}/serverTlsPolicies?serverTlsPolicyId=tls", body)
    assert (status, answer["error"]["status"]) == (400, "INVALID_ARGUMENT")
    assert message in answer["error"]["message"]
    assert POLICY not in tc.plane.apis["networksecurity"].server_tls_policies


def test_attached_policy_keeps_its_mtls_settings(tc: ControlPlaneServer) -> None:
    collection = f"networksecurity/v1/{LOCATION}/serverTlsPolicies"
    assert call(tc, "POST", f"{collection}?serverTlsPolicyId=tls", policy())[0] == 200
    assert call(tc, "PATCH", f"{collection}/tls", policy(mode="REJECT_INVALID"))[0] == 200  # not attached yet
    tc.plane.apis["compute"].target_https_proxies["proxy"] = {
        "serverTlsPolicy": f"https://networksecurity.googleapis.com/v1/{POLICY}"}
    status, body = call(tc, "PATCH", f"{collection}/tls", policy())
    assert (status, body["error"]["status"]) == (400, "FAILED_PRECONDITION")
    assert tc.plane.apis["networksecurity"].server_tls_policies[POLICY]["mtlsPolicy"]["clientValidationMode"] == \
        "REJECT_INVALID"
    assert call(tc, "PATCH", f"{collection}/tls", {**policy(mode="REJECT_INVALID"), "description": "d"})[0] == 200


def test_missing_resources_are_404(tc: ControlPlaneServer) -> None:
    for path in (f"certificatemanager/v1/{LOCATION}/trustConfigs/nope",
                 f"networksecurity/v1/{LOCATION}/serverTlsPolicies/nope"):
        status, body = call(tc, "GET", path)
        assert status == 404 and body["error"]["status"] == "NOT_FOUND" and "nope" in body["error"]["message"]
    status, body = call(tc, "DELETE", f"networksecurity/v1/{LOCATION}/serverTlsPolicies/nope")
    assert status == 404
