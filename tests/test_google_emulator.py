"""The emulator is only worth its tests if it refuses what Google refuses (Google's STS and IAM
Credentials REST references: https://cloud.google.com/iam/docs/reference/sts/rest,
https://cloud.google.com/iam/docs/reference/credentials/rest)."""

from __future__ import annotations

import base64
import json
import time
import urllib.request
from datetime import datetime

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from devtools.google_emulator import (
    TOKEN_CREATOR,
    WORKLOAD_IDENTITY_USER,
    ApiError,
    GoogleEmulator,
    Provider,
    serve,
)

ISSUER = "https://issuer.example"
PROVIDER = Provider("123", "pool-1", "prov-1", ISSUER, {"google.subject": "assertion.client_id"})
AUDIENCE = f"//iam.googleapis.com/{PROVIDER.resource_name}"
RUNTIME = "runtime@p.iam.gserviceaccount.com"
WORKLOAD = "workload@p.iam.gserviceaccount.com"
KEY = rsa.generate_private_key(public_exponent=65537, key_size=2048)
OTHER_KEY = rsa.generate_private_key(public_exponent=65537, key_size=2048)
EC_KEY = ec.generate_private_key(ec.SECP256R1())


@pytest.fixture
def emulator() -> GoogleEmulator:
    emulator = GoogleEmulator(
        providers=[PROVIDER],
        bindings={WORKLOAD: [(WORKLOAD_IDENTITY_USER, f"principalSet://iam.googleapis.com/{PROVIDER.pool_name}/*")],
                  RUNTIME: [(TOKEN_CREATOR, f"serviceAccount:{RUNTIME}")]},
        runtime_service_account=RUNTIME,
    )
    jwks = {"keys": [{**jwt.algorithms.RSAAlgorithm.to_jwk(KEY.public_key(), as_dict=True), "kid": "k1"}]}
    emulator._issuer_keys = lambda issuer: jwt.PyJWKSet.from_dict(jwks)  # no network: the keys as WIF would fetch
    return emulator


def subject_token(key=KEY, headers=None, algorithm="RS256", **overrides) -> str:
    now = int(time.time())
    claims = {"iss": ISSUER, "aud": f"https://iam.googleapis.com/{PROVIDER.resource_name}", "sub": "c1",
              "client_id": "c1", "iat": now, "exp": now + 300, **overrides}
    return jwt.encode({k: v for k, v in claims.items() if v is not None}, key, algorithm=algorithm,
                      headers=headers if headers is not None else {"kid": "k1"})


def _unsigned(header, claims) -> str:  # what PyJWT would refuse to encode
    def segment(value) -> str:
        return base64.urlsafe_b64encode(json.dumps(value).encode()).rstrip(b"=").decode()

    return f"{segment(header)}.{segment(claims)}.c2ln"


def _with_payload_of(token: str, other: str) -> str:
    header, _, signature = token.split(".")
    return f"{header}.{other.split('.')[1]}.{signature}"


def exchange(emulator, token, **form) -> dict:
    return emulator.sts_token({
        "grant_type": "urn:ietf:params:oauth:grant-type:token-exchange", "audience": AUDIENCE,
        "scope": "https://www.googleapis.com/auth/cloud-platform",
        "requested_token_type": "urn:ietf:params:oauth:token-type:access_token",
        "subject_token": token, "subject_token_type": "urn:ietf:params:oauth:token-type:id_token", **form})


def refused(emulator, token, **form) -> dict:
    with pytest.raises(ApiError) as raised:
        exchange(emulator, token, **form)
    assert raised.value.status == 400
    return raised.value.body


def test_valid_token_is_exchanged_for_the_mapped_principal(emulator):
    answer = exchange(emulator, subject_token())
    assert answer["token_type"] == "Bearer" and answer["expires_in"] == 3599
    grant = emulator.grant_for("Bearer " + answer["access_token"])
    assert f"principal://iam.googleapis.com/{PROVIDER.pool_name}/subject/c1" in grant.members


def test_audience_with_the_slash_slash_form_is_accepted(emulator):
    assert exchange(emulator, subject_token(aud=AUDIENCE))["access_token"]


@pytest.mark.parametrize(
    ("token", "fragment"),
    [
        (lambda: jwt.encode({"iss": ISSUER}, None, algorithm="none"), "kid"),
        (lambda: subject_token(headers={}), "kid"),
        (lambda: _unsigned({"alg": "RS256", "kid": ["k1"]}, {"iss": ISSUER}), "kid"),
        (lambda: _unsigned({"alg": "RS256", "kid": "k1"}, ["not", "an", "object"]), "parse"),
        (lambda: jwt.encode({"iss": ISSUER, "sub": "x"}, "public-key-as-secret" * 4, algorithm="HS256",
                            headers={"kid": "k1"}), "RS256"),
        (lambda: subject_token(key=OTHER_KEY), "signature"),
        (lambda: subject_token(key=EC_KEY, algorithm="ES256"), "signature"),
        (lambda: _with_payload_of(subject_token(), subject_token(sub="someone-else")), "signature"),
        (lambda: subject_token(headers={"kid": "unknown"}), "kid"),
        (lambda: subject_token(iss="https://other.example"), "does not match"),
        (lambda: subject_token(exp=int(time.time()) - 1), "expired"),
        (lambda: subject_token(iat=int(time.time()) + 60), "future"),
        (lambda: subject_token(iat=int(time.time()) - 60, exp=int(time.time()) - 60 + 48 * 3600), "48 hours"),
        (lambda: subject_token(aud="https://iam.googleapis.com/projects/123/other"), "audience"),
        (lambda: subject_token(sub=None), "sub"),
        (lambda: subject_token(client_id="x" * 128), "127 bytes"),
        (lambda: "not.a.jwt", "parse"),
    ],
    ids=["alg-none", "no-kid", "kid-not-a-string", "claims-not-an-object",
         "hs256-key-confusion", "bad-signature", "es256-for-an-rsa-key", "payload-swapped",
         "unknown-kid", "wrong-issuer", "expired",
         "iat-in-future", "lifetime-48h", "wrong-audience", "no-sub", "subject-128-bytes", "garbage"],
)
def test_subject_tokens_google_refuses(emulator, token, fragment):
    body = refused(emulator, token())
    assert body["error"] == "invalid_grant"
    assert fragment in body["error_description"]


def test_subject_of_127_bytes_is_accepted(emulator):
    assert exchange(emulator, subject_token(client_id="x" * 127))["access_token"]


def test_malformed_audience_and_unknown_provider(emulator):
    body = refused(emulator, subject_token(), audience="projects/123/pool-1")
    assert body["error"] == "invalid_request" and "full resource name" in body["error_description"]
    body = refused(emulator, subject_token(), audience=AUDIENCE.replace("pool-1", "pool-2"))
    assert body["error"] == "invalid_target"


def test_scope_is_required(emulator):
    assert refused(emulator, subject_token(), scope="")["error"] == "invalid_request"


def iam_refusal(emulator, *args) -> ApiError:
    with pytest.raises(ApiError) as raised:
        emulator.iam_call(*args)
    return raised.value


def test_iam_needs_a_valid_bearer_token_with_an_iam_scope(emulator):
    assert iam_refusal(emulator, WORKLOAD, "generateAccessToken", None, {}).status == 401
    assert iam_refusal(emulator, WORKLOAD, "generateAccessToken", "Bearer nope", {}).status == 401
    narrow = emulator.issue_token({"x"}, {"https://www.googleapis.com/auth/devstorage.read_only"}, 60, "x")
    error = iam_refusal(emulator, WORKLOAD, "generateAccessToken", f"Bearer {narrow}", {"scope": ["s"]})
    assert error.status == 403 and "insufficient authentication scopes" in error.body["error"]["message"]


def test_impersonation_only_for_bound_members(emulator):
    federated = exchange(emulator, subject_token())["access_token"]
    answer = emulator.iam_call(WORKLOAD, "generateAccessToken", f"Bearer {federated}", {"scope": ["a"]})
    datetime.strptime(answer["expireTime"], "%Y-%m-%dT%H:%M:%SZ")  # the form google-auth parses
    error = iam_refusal(emulator, RUNTIME, "generateAccessToken", f"Bearer {federated}", {"scope": ["a"]})
    assert error.status == 403 and error.body["error"]["status"] == "PERMISSION_DENIED"
    assert error.body["error"]["details"][0]["reason"] == "IAM_PERMISSION_DENIED"


def test_access_token_lifetime_and_sign_jwt_exp_limits(emulator):
    federated = exchange(emulator, subject_token())["access_token"]
    error = iam_refusal(emulator, WORKLOAD, "generateAccessToken", f"Bearer {federated}",
                        {"scope": ["a"], "lifetime": "3601s"})
    assert error.status == 400
    runtime = emulator.issue_token({f"serviceAccount:{RUNTIME}"}, {"https://www.googleapis.com/auth/cloud-platform"},
                                   60, RUNTIME)
    far = json.dumps({"exp": int(time.time()) + 13 * 3600})
    assert iam_refusal(emulator, RUNTIME, "signJwt", f"Bearer {runtime}", {"payload": far}).status == 400
    # Federated principals hold workloadIdentityUser, which does not include signJwt.
    assert iam_refusal(emulator, WORKLOAD, "signJwt", f"Bearer {federated}", {"payload": "{}"}).status == 403


def test_http_surface_matches_the_real_clients(emulator):
    """google-cloud-iam's REST transport (percent-encoded @, $alt query) and STS's JSON body."""
    from google.api_core.client_options import ClientOptions
    from google.cloud.iam_credentials_v1 import IAMCredentialsClient
    from google.oauth2.credentials import Credentials

    server = serve(emulator)
    base = f"http://127.0.0.1:{server.server_address[1]}"
    try:
        body = json.dumps({"grantType": "urn:ietf:params:oauth:grant-type:token-exchange", "audience": AUDIENCE,
                           "scope": "https://www.googleapis.com/auth/cloud-platform",
                           "requestedTokenType": "urn:ietf:params:oauth:token-type:access_token",
                           "subjectToken": subject_token(),
                           "subjectTokenType": "urn:ietf:params:oauth:token-type:jwt"}).encode()
        request = urllib.request.Request(f"{base}/v1/token", body, {"Content-Type": "application/json"})
        federated = json.loads(urllib.request.urlopen(request, timeout=5).read())["access_token"]
        client = IAMCredentialsClient(credentials=Credentials(federated), transport="rest",
                                      client_options=ClientOptions(api_endpoint=base))
        answer = client.generate_access_token(name=f"projects/-/serviceAccounts/{WORKLOAD}", scope=["a"])
        assert emulator.grant_for(f"Bearer {answer.access_token}").members == {f"serviceAccount:{WORKLOAD}"}
    finally:
        server.shutdown()
