"""End to end: TLS client certificates -> mTLS gateway -> functions-framework -> verified ID token."""

from __future__ import annotations

import base64
import hashlib
import json
import signal
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor

import jwt
import pytest
import requests
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

from tests.e2e.conftest import launch, stop
from tests.support import verified_headers
from token_service.audit.log_pipe import PIPE_BUF


def certificate(path: str) -> x509.Certificate:
    with open(path, "rb") as pem:
        return x509.load_pem_x509_certificate(pem.read())


def fingerprint(cert: x509.Certificate) -> str:
    return base64.b64encode(hashlib.sha256(cert.public_bytes(Encoding.DER)).digest()).decode().rstrip("=")


def verify_with_discovery(stack, token: str) -> dict:
    """Verify as a relying party would: only the discovery document and its JWKS."""
    session = stack.session(client=None)  # Google fetches discovery without a client certificate
    discovery = session.get(f"{stack.url}/.well-known/openid-configuration", timeout=10).json()
    jwks = jwt.PyJWKSet.from_dict(session.get(discovery["jwks_uri"], timeout=10).json())
    header = jwt.get_unverified_header(token)
    assert header["alg"] in discovery["id_token_signing_alg_values_supported"]
    return jwt.decode(
        token, jwks[header["kid"]].key, algorithms=discovery["id_token_signing_alg_values_supported"],
        issuer=discovery["issuer"],
        audience="https://iam.googleapis.com/projects/123456789012/locations/global/"
                 "workloadIdentityPools/local-pool/providers/token-service",
        options={"require": ["iss", "aud", "exp", "iat", "sub", "jti"]},
    )


def test_trusted_certificate_gets_a_token_whose_claims_are_the_certificates(stack):
    response, audit = stack.post_token("client")
    assert response.status_code == 200, response.text
    assert response.headers["Cache-Control"] == "no-store"
    claims = verify_with_discovery(stack, response.json()["id_token"])
    cert = certificate(stack.certs["client"][0])
    assert claims["iss"] == stack.url
    assert claims["sub"] == claims["client_id"] == fingerprint(cert)
    assert claims["exp"] - claims["iat"] == 300
    assert claims["amr"] == ["xlb-mtls-client-credentials"]
    client = claims["client"]
    assert client["x5_sha256"] == fingerprint(cert)
    assert int(client["x5_serial"].replace(":", ""), 16) == cert.serial_number
    assert client["x5_dnssan"] == "client.local.test"
    assert client["x5_spiffe"] == "spiffe://local.test/ns/demo/sa/workload"
    assert client["x5_urisan"] == ""
    digest = hashlib.sha256(cert.public_bytes(Encoding.DER)).digest()
    assert claims["cnf"]["x5t#S256"] == base64.urlsafe_b64encode(digest).decode().rstrip("=")
    labels = audit["logging.googleapis.com/labels"]
    assert audit["severity"] == "INFO" and labels["outcome"] == "issued"
    assert labels["client_id"] == fingerprint(cert) and labels["jti"] == claims["jti"]
    assert labels["header/x-client-cert-chain-verified"] == "true"
    assert response.json()["id_token"] not in stack.audit_file.read_text()


def test_several_dns_and_uri_sans(stack):
    response, _ = stack.post_token("multi")
    assert response.status_code == 200, response.text
    client = verify_with_discovery(stack, response.json()["id_token"])["client"]
    cert = certificate(stack.certs["multi"][0])
    sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    uris = sans.get_values_for_type(x509.UniformResourceIdentifier)
    assert client["x5_dnssans"] == sans.get_values_for_type(x509.DNSName) == ["a.fleet.example", "b.fleet.example"]
    assert client["x5_dnssan"] == "a.fleet.example"
    assert client["x5_spiffe"] == "spiffe://fleet.example/ns/meters/sa/meter-42"
    assert client["x5_urisans"] == [uri for uri in uris if not uri.startswith("spiffe:")]
    assert client["x5_urisan"] == "https://inventory.example/device/42"


def test_a_joined_list_of_sans_is_never_split(stack):
    """The other reading of "comma-separated Base64-encoded list", one encoding of the joined list, is
    indistinguishable from one SAN holding commas; a decoded SAN is never split, so it fails closed."""
    response, audit = stack.post_token("multi", gateway="joined")
    assert response.status_code == 401 and "DNS SAN containing a comma" in response.json()["error_description"]
    assert audit["logging.googleapis.com/labels"]["reason"] == "malformed_certificate_header"


def test_certificate_without_sans(stack):
    response, _ = stack.post_token("bare")
    assert response.status_code == 200, response.text
    client = verify_with_discovery(stack, response.json()["id_token"])["client"]
    assert client["x5_dnssan"] == client["x5_urisan"] == client["x5_spiffe"] == ""


def test_spiffe_id_as_client_id(spiffe_stack):
    response, audit = spiffe_stack.post_token("multi")
    assert response.status_code == 200, response.text
    claims = verify_with_discovery(spiffe_stack, response.json()["id_token"])
    assert claims["sub"] == claims["client_id"] == "spiffe://fleet.example/ns/meters/sa/meter-42"
    assert claims["exp"] - claims["iat"] == 600
    assert audit["logging.googleapis.com/labels"]["client_id"] == claims["client_id"]


def test_spiffe_client_id_missing_from_certificate(spiffe_stack):
    response, audit = spiffe_stack.post_token("bare")
    assert response.status_code == 401
    assert response.json()["error"] == "invalid_client"
    assert "X-Client-Cert-SPIFFE" in response.json()["error_description"]
    assert audit["logging.googleapis.com/labels"]["reason"] == "client_id_missing"


@pytest.mark.parametrize(
    ("client", "reason", "lb_error"),
    [
        (None, "no_client_certificate", "client_cert_not_provided"),
        ("foreign", "certificate_not_verified", "client_cert_validation_failed"),
        ("expired", "certificate_not_verified", "client_cert_validation_failed"),
        ("no-eku", "certificate_not_verified", "client_cert_chain_invalid_eku"),
    ],
)
def test_refused_certificates(stack, client, reason, lb_error):
    response, audit = stack.post_token(client)
    assert response.status_code == 401
    body = response.json()
    assert set(body) == {"error", "error_description"} and body["error"] == "invalid_client"
    if client is not None:
        assert lb_error in body["error_description"]
    labels = audit["logging.googleapis.com/labels"]
    assert labels["outcome"] == "refused" and labels["reason"] == reason
    assert labels["header/x-client-cert-error"] == lb_error
    assert "jti" not in labels


def test_external_credential_format_through_the_gateway(stack):
    response, _ = stack.post_token(data={"grant_type": "client_credentials", "format": "external_credential"})
    body = response.json()
    assert response.status_code == 200 and body["success"] is True and body["version"] == 1
    claims = verify_with_discovery(stack, body["id_token"])
    assert body["expiration_time"] == claims["exp"]


def test_client_supplied_certificate_headers_are_replaced(stack):
    forged = {"X-Client-Cert-Hash": base64.b64encode(b"\0" * 32).decode(), "x-client-cert-present": "true",
              "X-Client-Cert-Chain-Verified": "true", "X-Client-Cert-SPIFFE": "spiffe://evil/admin"}
    response, _ = stack.post_token("client", headers=forged)
    claims = verify_with_discovery(stack, response.json()["id_token"])
    assert claims["client_id"] == fingerprint(certificate(stack.certs["client"][0]))
    assert claims["client"]["x5_spiffe"] == "spiffe://local.test/ns/demo/sa/workload"
    response, audit = stack.post_token(None, headers=forged)
    assert response.status_code == 401
    assert audit["logging.googleapis.com/labels"]["header/x-client-cert-present"] == "false"


def test_audit_url_never_holds_the_query_string(stack):
    trace_id = uuid.uuid4().hex
    response = stack.session("client").post(
        f"{stack.url}/token?client_secret=leak-me", data={"grant_type": "client_credentials"},
        headers={"traceparent": f"00-{trace_id}-00f067aa0ba902b7-01"}, timeout=10)
    assert response.status_code == 200, response.text
    assert stack.audit_entry(trace_id)["httpRequest"]["requestUrl"] == f"{stack.url}/token"
    assert "leak-me" not in stack.audit_file.read_text()


def test_audit_remote_ip_is_the_address_the_load_balancer_saw_not_one_the_client_sent(stack):
    response, audit = stack.post_token("client", headers={"X-Forwarded-For": "6.6.6.6"})
    assert response.status_code == 200, response.text
    assert audit["httpRequest"]["remoteIp"] == "127.0.0.1"


@pytest.mark.parametrize(
    ("data", "status", "error"),
    [
        ({}, 400, "invalid_request"),
        ({"grant_type": "password"}, 400, "unsupported_grant_type"),
        ({"grant_type": "client_credentials", "format": "saml"}, 400, "invalid_request"),
    ],
)
def test_bad_requests_through_the_gateway(stack, data, status, error):
    response, audit = stack.post_token(data=data)
    assert response.status_code == status and response.json()["error"] == error
    assert audit["logging.googleapis.com/labels"]["outcome"] == "refused"


def test_discovery_redirect_and_errors_through_the_gateway(stack):
    session = stack.session(client=None)
    root = session.get(stack.url + "/", allow_redirects=False, timeout=10)
    assert root.status_code == 307 and root.headers["Location"] == f"{stack.url}/.well-known/openid-configuration"
    assert session.get(stack.url + "/nothing", timeout=10).status_code == 404
    wrong = session.get(stack.url + "/token", timeout=10)
    assert wrong.status_code == 405 and wrong.headers["Allow"] == "POST"


@pytest.mark.parametrize("handler", ["json", "cloud-logging"])
def test_concurrent_attempts_on_two_workers_each_log_one_whole_line(tmp_path_factory, handler):
    """Two workers share the stdout pipe and batch their lines: none is lost, split or repeated."""
    overrides = {"WORKERS": "2", "THREADS": "8", "AUDIT_LOG_HANDLER": handler, "GOOGLE_CLOUD_PROJECT": "local-project"}
    stack, function, servers, log = launch(tmp_path_factory, f"two-workers-{handler}", overrides)
    try:
        with ThreadPoolExecutor(max_workers=24) as pool:
            results = list(pool.map(lambda _: stack.post_token(), range(120)))
        assert all(response.status_code == 200 for response, _ in results)
        assert len({audit["logging.googleapis.com/labels"]["jti"] for _, audit in results}) == 120
        written = [text for text in stack.audit_file.read_text().split("\n") if text.strip()]
        token_lines = [entry for entry in map(json.loads, written)
                       if entry.get("logging.googleapis.com/labels", {}).get("event") == "token"]
        assert len(token_lines) == 120
    finally:
        stop(function, servers, log)


@pytest.mark.parametrize("handler", ["json", "cloud-logging"])
def test_lines_of_hostile_length_stay_whole_json_on_two_workers_behind_a_slow_pipe_reader(tmp_path_factory, handler):
    """Every free-form field of the line enlarged at once (URL, user agent, remote address, certificate
    headers, client id, error text), two workers, a log reader that lags: each line is one whole
    JSON line within PIPE_BUF, so no write is split around another worker's."""
    overrides = {"WORKERS": "2", "THREADS": "8", "AUDIT_LOG_HANDLER": handler, "GOOGLE_CLOUD_PROJECT": "local-project"}
    stack, function, servers, log = launch(tmp_path_factory, f"slow-pipe-{handler}", overrides, slow_pipe=True)
    large = {"User-Agent": "u" * 8000, "Host": "h" * 8000 + ".example",
             # As the load balancer passes it: a client-chosen entry, then the client's and its own address.
             "X-Forwarded-For": "6" * 8000 + "," + "2" * 16000 + ",127.0.0.1"}
    kinds = [
        {**verified_headers(), **stack.proxy_secret_headers, **large},  # issued
        {**verified_headers(**{"X-Client-Cert-Hash": "c" * 9000, "X-Client-Cert-SPIFFE": "s" * 9000}),
         **stack.proxy_secret_headers, **large},  # refused: client id and header values at length
        {**verified_headers(**{"X-Client-Cert-Error": "e" * 9000}), **large},  # refused: not through it
    ]

    def post(number: int) -> int:
        return requests.post(f"{stack.function_url}/token?{'q' * 2000}", data={"grant_type": "client_credentials"},
                             headers=kinds[number % len(kinds)], timeout=30).status_code

    try:
        with ThreadPoolExecutor(max_workers=24) as pool:
            statuses = list(pool.map(post, range(360)))
    finally:
        stop(function, servers, log)
    assert statuses.count(200) == statuses.count(403) == 120, sorted(set(statuses))
    written = [text for text in stack.audit_file.read_bytes().split(b"\n") if text.strip()]
    entries = [json.loads(text) for text in written]  # a write split around another worker's breaks two lines
    assert all(len(text) < PIPE_BUF for text in written)
    attempts = [entry for entry in entries if entry.get("logging.googleapis.com/labels", {}).get("event") == "token"]
    assert len(attempts) == 360
    assert all(entry["httpRequest"]["remoteIp"].endswith("...[16000 chars]") for entry in attempts)


def test_a_stopping_instance_writes_the_line_of_every_token_it_answered(tmp_path_factory):
    """SIGTERM (Cloud Run scaling an instance in) mid-burst: each token that reached its client has its
    audit line, though the workers die by the signal without running atexit."""
    stack, function, servers, log = launch(tmp_path_factory, "stopping", {"WORKERS": "2", "THREADS": "8"})
    answered: list[str] = []
    finished = threading.Event()

    def client() -> None:
        session = stack.session(client=None)  # straight to the function, as the load balancer calls it
        while not finished.is_set():
            try:
                response = session.post(f"{stack.function_url}/token", data={"grant_type": "client_credentials"},
                                        headers={**verified_headers(), **stack.proxy_secret_headers}, timeout=10)
            except requests.ConnectionError:  # the instance has stopped listening
                time.sleep(0.01)
                continue
            if response.status_code == 200:
                answered.append(response.json()["id_token"])

    try:
        with ThreadPoolExecutor(max_workers=16) as pool:
            try:
                for _ in range(16):
                    pool.submit(client)
                deadline = time.monotonic() + 30
                while len(answered) < 200 and time.monotonic() < deadline:
                    time.sleep(0.01)
                function.process.send_signal(signal.SIGTERM)  # while requests are in flight
                exit_code = function.process.wait(timeout=30)
            finally:
                finished.set()
    finally:
        stop(function, servers, log)
    assert exit_code == 0
    issued = {entry["logging.googleapis.com/labels"]["jti"] for entry in stack.audit_entries()
              if entry.get("logging.googleapis.com/labels", {}).get("outcome") == "issued"}
    tokens = {jwt.decode(token, options={"verify_signature": False})["jti"] for token in answered}
    assert len(tokens) >= 200 and tokens <= issued
