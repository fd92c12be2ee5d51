"""The whole request path below main.py, with plain values: routing, token endpoint, audit line."""

import json

import jwt
import pytest

from tests.support import FINGERPRINT, ISSUER, verified_headers
from token_service.audit import JsonLineWriter
from token_service.config import load_settings
from token_service.edge.client_address import client_ip
from token_service.edge.dispatch import HttpRequest, dispatch, may_wait
from token_service.errors import Reason
from token_service.issuing.signers import LocalKeySigner
from token_service.service import TokenService

FORM = {"content-type": "application/x-www-form-urlencoded"}


def post_token(service, body: bytes, headers=None):
    request = HttpRequest("POST", "/token", {**FORM, **(headers if headers is not None else verified_headers())},
                          body, url=f"{ISSUER}/token", remote_ip="203.0.113.7")
    response = dispatch(service, request)
    return response, json.loads(response.body)


def header(response, name):
    return dict(response.headers).get(name)


def test_discovery_document(service):
    response = dispatch(service, HttpRequest("GET", "/.well-known/openid-configuration", {}))
    document = json.loads(response.body)
    assert response.status == 200 and header(response, "Content-Type") == "application/json"
    assert document["issuer"] == ISSUER
    assert document["token_endpoint"] == f"{ISSUER}/token"
    assert document["jwks_uri"] == f"{ISSUER}/jwks"
    assert document["id_token_signing_alg_values_supported"] == ["RS256"]
    assert document["grant_types_supported"] == ["client_credentials"]
    assert document["token_endpoint_auth_methods_supported"] == ["tls_client_auth"]


def test_root_redirects_to_discovery(service):
    response = dispatch(service, HttpRequest("GET", "/", {"host": "evil.example"}))
    assert response.status == 307
    # Never derived from the Host header.
    assert header(response, "Location") == f"{ISSUER}/.well-known/openid-configuration"


@pytest.mark.parametrize("path", ["/jwks", "/.well-known/jwks.json"])
def test_jwks_is_served_for_the_local_signer(service, path):
    response = dispatch(service, HttpRequest("GET", path, {}))
    assert response.status == 200
    assert json.loads(response.body)["keys"][0]["kid"] == service.signer.key_id


def test_unknown_path_is_404_json(service):
    response = dispatch(service, HttpRequest("GET", "/admin", {}))
    assert response.status == 404 and json.loads(response.body)["error"] == "invalid_request"


@pytest.mark.parametrize(("method", "path", "allow"), [("GET", "/token", "POST"), ("POST", "/", "GET, HEAD"),
                                                       ("DELETE", "/jwks", "GET, HEAD")])
def test_wrong_method_is_405_with_allow(service, method, path, allow):
    response = dispatch(service, HttpRequest(method, path, {}))
    assert response.status == 405 and header(response, "Allow") == allow
    assert json.loads(response.body)["error"] == "invalid_request"


def test_head_has_no_body(service):
    response = dispatch(service, HttpRequest("HEAD", "/.well-known/openid-configuration", {}))
    assert response.status == 200 and response.body == b""


def test_issues_a_verifiable_id_token(service, audit):
    response, body = post_token(service, b"grant_type=client_credentials")
    assert response.status == 200
    assert set(body) == {"id_token"}
    assert header(response, "Cache-Control") == "no-store" and header(response, "Pragma") == "no-cache"
    jwks = jwt.PyJWKSet.from_dict(json.loads(dispatch(service, HttpRequest("GET", "/jwks", {})).body))
    kid = jwt.get_unverified_header(body["id_token"])["kid"]
    claims = jwt.decode(body["id_token"], jwks[kid].key, algorithms=["RS256"], audience=service.settings.provider
                        .token_audience, issuer=ISSUER)
    assert claims["client_id"] == FINGERPRINT
    [entry] = audit.entries
    labels = entry["logging.googleapis.com/labels"]
    assert entry["severity"] == "INFO"
    assert labels["outcome"] == "issued" and labels["client_id"] == FINGERPRINT and labels["jti"] == claims["jti"]
    assert labels["header/x-client-cert-hash"] == FINGERPRINT
    assert body["id_token"] not in json.dumps(entry)


def test_external_credential_format(service):
    response, body = post_token(service, b"grant_type=client_credentials&format=external_credential")
    assert response.status == 200
    assert body["version"] == 1 and body["success"] is True
    assert body["token_type"] == "urn:ietf:params:oauth:token-type:id_token"
    claims = jwt.decode(body["id_token"], options={"verify_signature": False})
    assert body["expiration_time"] == claims["exp"]


def test_external_credential_error_shape(service):
    response, body = post_token(service, b"grant_type=client_credentials&format=external_credential",
                                verified_headers(**{"X-Client-Cert-Present": "false"}))
    assert response.status == 401
    assert body == {"version": 1, "success": False, "code": "invalid_client", "message": body["message"]}
    assert "client certificate is required" in body["message"]


@pytest.mark.parametrize(
    ("body", "headers", "status", "error", "reason"),
    [
        (b"", None, 400, "invalid_request", Reason.MALFORMED_REQUEST),
        (b"grant_type=password", None, 400, "unsupported_grant_type", Reason.UNSUPPORTED_GRANT_TYPE),
        (b"grant_type=client_credentials&grant_type=client_credentials", None, 400, "invalid_request",
         Reason.MALFORMED_REQUEST),
        (b"grant_type=client_credentials&scope=https://www.googleapis.com/auth/cloud-platform", None, 400,
         "invalid_request", Reason.MALFORMED_REQUEST),
        (b"grant_type=client_credentials", {}, 401, "invalid_client", Reason.MTLS_HEADERS_MISSING),
        (b"grant_type=client_credentials", verified_headers(**{"X-Client-Cert-Chain-Verified": "false"}), 401,
         "invalid_client", Reason.CERTIFICATE_NOT_VERIFIED),
        (b"grant_type=client_credentials", verified_headers(**{"X-Client-Cert-Hash": ""}), 401,
         "invalid_client", Reason.MALFORMED_CERTIFICATE_HEADER),
        (b"x" * 20000, None, 413, "invalid_request", Reason.BODY_TOO_LARGE),
    ],
)
def test_refusals_are_rfc6749_json_never_a_token_and_always_audited(service, audit, body, headers, status,
                                                                    error, reason):
    response, document = post_token(service, body, headers)
    assert response.status == status
    assert set(document) == {"error", "error_description"} and document["error"] == error
    assert document["error_description"]
    assert header(response, "Cache-Control") == "no-store"
    [entry] = audit.entries
    labels = entry["logging.googleapis.com/labels"]
    assert labels["outcome"] == "refused" and labels["reason"] == reason.value
    assert labels["status"] == str(status) and entry["severity"] == "WARNING"


def test_wrong_content_type_is_refused(service, audit):
    request = HttpRequest("POST", "/token", {**verified_headers(), "content-type": "application/json"},
                          b'{"grant_type":"client_credentials"}')
    response = dispatch(service, request)
    assert response.status == 400 and json.loads(response.body)["error"] == "invalid_request"
    assert len(audit.entries) == 1


def test_disabled_flow_is_unsupported_grant_type(environ, rsa_key, audit):
    # Only one flow exists today; a settings object with it disabled stands for a future flow set.
    settings = load_settings(environ)._replace(auth_flows=frozenset())
    service = TokenService(settings, LocalKeySigner(rsa_key, "RS256"), JsonLineWriter(audit.stream))
    response, body = post_token(service, b"grant_type=client_credentials")
    assert response.status == 400 and body["error"] == "unsupported_grant_type"
    assert audit.entries[0]["logging.googleapis.com/labels"]["reason"] == "flow_disabled"


def test_signing_failure_is_a_500_without_details(service, audit, monkeypatch):
    def broken(_claims):
        raise RuntimeError("HSM on fire: key=SECRET")

    monkeypatch.setattr(service.signer, "sign", broken)
    response, body = post_token(service, b"grant_type=client_credentials")
    assert response.status == 500 and body["error"] == "server_error"
    assert "SECRET" not in body["error_description"]
    [entry] = audit.entries
    assert entry["severity"] == "ERROR" and "SECRET" not in json.dumps(entry)


def test_trace_is_recorded(service, audit):
    post_token(service, b"grant_type=client_credentials",
               {**verified_headers(), "traceparent": "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"})
    assert audit.entries[0]["logging.googleapis.com/trace"] == "4bf92f3577b34da6a3ce929d0e0e4736"


@pytest.mark.parametrize(
    ("method", "path", "body", "headers", "waits"),
    [
        ("POST", "/token", b"grant_type=client_credentials", {}, False),
        ("POST", "/token", b"grant_type=client_credentials&client_id=a&format=external_credential", {}, False),
        ("POST", "/token", b"", {}, False),  # refused from memory
        ("GET", "/.well-known/openid-configuration", b"", {}, False),
        ("POST", "/token", b"grant_type=client_credentials&scope=x", {}, True),
        ("POST", "/token", b"grant_type=client_credentials&service_account=a&audience=b", {}, True),
        ("POST", "/token", b"grant_type=urn%3Aietf%3Aparams%3Aoauth%3Agrant-type%3Ajwt-bearer&assertion=x", {}, True),
        ("POST", "/token", b"grant_type=client_credentials&client_id=a&client_secret=b", {}, True),
        ("POST", "/token", b"grant_type=client_credentials", {"authorization": "Basic YTpi"}, True),
        ("POST", "/token", b"grant_type=client_credentials&sc%6Fpe=x", {}, True),  # a percent-encoded name
        ("POST", "/token", b"grant_type=client_credentials&colour=blue", {}, True),  # unknown: erring to a thread
    ],
)
def test_only_requests_answered_from_memory_stay_off_the_thread_pool(service, method, path, body, headers, waits):
    assert may_wait(service, HttpRequest(method, path, {**FORM, **headers}, body)) is waits


def test_with_a_remote_signer_every_token_request_may_wait(service, monkeypatch):
    monkeypatch.setattr(service.signer, "signs_in_process", False)  # what IamSigner says
    assert may_wait(service, HttpRequest("POST", "/token", FORM, b"grant_type=client_credentials"))


@pytest.fixture
def secret_service(environ, tmp_path, audit):
    from token_service.assembly import service_from_environment
    from token_service.flows.rfc6749_client_secret import hash_secret

    policy = tmp_path / "policy.yaml"
    policy.write_text("rules:\n  - name: scanner\n    client_secret:\n      client_id: legacy-scanner\n"
                      f"      secret_hashes: ['{hash_secret('the-real-secret')}']\n")
    return service_from_environment({**environ, "AUTH_FLOWS": "client-secret", "POLICY_FILE": str(policy)},
                                    audit.stream)


def post_secret(service, secret: str, remote_ip: str):
    body = f"grant_type=client_credentials&client_id=legacy-scanner&client_secret={secret}".encode()
    response = dispatch(service, HttpRequest("POST", "/token", FORM, body, url=f"{ISSUER}/token",
                                             remote_ip=remote_ip))
    return response.status, json.loads(response.body)


def test_a_strangers_wrong_secrets_do_not_lock_out_the_real_client(secret_service):
    for _ in range(10):
        assert post_secret(secret_service, "guess", "198.51.100.66")[0] == 401
    assert post_secret(secret_service, "guess", "198.51.100.66")[0] == 429  # the guesser is limited
    status, body = post_secret(secret_service, "the-real-secret", "203.0.113.7")
    assert status == 200 and "id_token" in body


def test_a_refused_secret_attempt_names_the_claimed_client_id_but_never_the_secret(secret_service, audit):
    assert post_secret(secret_service, "guessed-secret-1234", "198.51.100.66")[0] == 401
    (entry,) = audit.entries
    assert entry["logging.googleapis.com/labels"]["claimed_client_id"] == "legacy-scanner"
    assert "guessed-secret-1234" not in json.dumps(entry)


@pytest.mark.parametrize(("forwarded_for", "peer", "address"), [
    ("203.0.113.7,130.211.0.5", "169.254.1.1", "203.0.113.7"),  # Google's load balancer: <client>,<lb>
    # What the caller sent comes first and is not believed: rotating it cannot escape the failure limit.
    ("6.6.6.6, 7.7.7.7,203.0.113.7, 130.211.0.5", "169.254.1.1", "203.0.113.7"),
    ("", "127.0.0.1", "127.0.0.1"),  # no load balancer in front (local runs): the peer
    ("6.6.6.6", "127.0.0.1", "127.0.0.1"),  # not the load balancer's format
])
def test_the_client_address_is_the_one_the_load_balancer_saw(forwarded_for, peer, address):
    assert client_ip(forwarded_for, peer) == address
