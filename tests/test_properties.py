"""Property-based tests: every parser answers any input with a value or a protocol error, nothing else;
and three fuzz runs through dispatch, with an in-process service, that never see a 5xx other than a 503
for an unavailable issuer, nor an unearned token:

- 10,000 generated token requests (forms, raw bodies, certificate headers, methods, paths);
- 2,000 jwt-bearer assertions, against a policy that trusts one issuer with inline keys and one whose
  discovery answers 503: arbitrary bytes and text, oversized ones, three base64url parts of generated
  JSON (any nesting, wrong types for every registered claim and header member, numbers beyond int64
  and double, NaN-like strings, unicode), and assertions signed with the issuer's real key whose claims
  and header were changed, so that the claims logic decides. Each answer is RFC 6749 JSON with a known
  error, one audit line, a 503 only with Retry-After and only for the unavailable issuer, and a token
  exactly when an oracle written from the rules (not from the verifier) says it is earned; a token's
  assertion is refused when replayed;
- 500 issuer answers: the discovery document and the JWKS are generated (arbitrary and non-UTF-8 bytes,
  any JSON, ``{"keys": 5}``, JWKs with wrong or missing members, private keys, other keys under the
  real kid, documents either side of the size cap, deep nesting, statuses other than 200, a jwks_uri on
  plain http, another host or no URL at all) and served over loopback to a fresh key cache, then an
  assertion naming that issuer is dispatched: any refusal is a 4xx or a 503, a token only when the
  issuer's own discovery and JWKS published the signing key, and always one when they did cleanly.

Each example of the jwt-bearer runs gets a fresh verifier, key cache and replay cache; no network but
loopback, no sleeps. Their counts keep the two together near 30 s on a loaded 2-core machine.
"""

from __future__ import annotations

import base64
import contextlib
import functools
import json
import math
import re
import string
import time
import unicodedata
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any, NamedTuple
from urllib.parse import quote, quote_from_bytes

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from jwt.algorithms import ECAlgorithm, RSAAlgorithm

from tests.support import FINGERPRINT, ISSUER, ScriptedIssuer, authenticate, b64, verified_headers
from token_service.audit import JsonLineWriter
from token_service.config import load_settings
from token_service.edge.dispatch import HttpRequest, HttpResponse, dispatch
from token_service.edge.parsing import parse_token_request, parse_trace
from token_service.errors import MalformedValue, OAuthError, Reason
from token_service.flows import rfc8705_mtls as mtls
from token_service.flows.authentication import Authenticator
from token_service.flows.issuer_keys import JwksCache
from token_service.flows.rfc7523_jwt_bearer import AssertionVerifier
from token_service.google.exchange import parse_exchange_request
from token_service.google.transport import MAX_RESPONSE_BYTES, RetryPolicy, UpstreamClient
from token_service.issuing.signers import LocalKeySigner
from token_service.policy import parse_policy
from token_service.request import decode_fingerprint
from token_service.service import TokenService
from token_service.state.replay_cache import ReplayCache

HEADER_NAMES = list(verified_headers())
text = st.text(alphabet=st.characters(codec="utf-8"), max_size=200)
header_values = st.one_of(text, st.sampled_from(["true", "false", "TRUE", "", FINGERPRINT, b64("a.example"),
                                                 "2099-01-01T00:00:00+00:00", "spiffe://x/y", ","]))


@given(st.binary(max_size=2000), st.one_of(st.none(), text,
                                          st.just("application/x-www-form-urlencoded; charset=utf-8")))
def test_form_parser_never_fails_unexpectedly(body, content_type):
    try:
        request = parse_token_request(body, content_type)
    except OAuthError as error:
        assert error.status in (400, 413)
    else:
        assert isinstance(request.parameters, dict)


@given(text, st.booleans())
def test_san_parser_returns_printable_sans_or_value_error(value, dns):
    try:
        sans = mtls.parse_san_header(value, dns=dns)
    except MalformedValue:
        return
    assert all(san and san.isprintable() for san in sans)
    assert not sans or len(sans) == value.count(",") + 1  # only a raw comma separates
    assert not dns or not any("," in san for san in sans)


@given(text)
def test_fingerprint_decoder_returns_32_bytes_or_value_error(value):
    with contextlib.suppress(MalformedValue):
        assert len(decode_fingerprint(value)) == 32


@settings(suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(overrides=st.dictionaries(st.sampled_from(HEADER_NAMES), header_values))
def test_mtls_flow_answers_any_headers_with_a_certificate_or_invalid_client(overrides, names):
    headers = {**verified_headers(), **overrides}
    from datetime import UTC, datetime

    try:
        certificate = authenticate(headers, names, datetime(2026, 6, 1, tzinfo=UTC))
    except OAuthError as error:
        assert (error.status, error.error) == (401, "invalid_client")
        assert error.description.isprintable() and len(error.description) < 500
    else:
        assert 0 < len(certificate.client_id.encode()) <= 127


@given(st.dictionaries(st.sampled_from(["scope", "service_account", "audience"]), text))
def test_exchange_parameters(parameters):
    try:
        parse_exchange_request(parameters)
    except OAuthError as error:
        assert error.status == 400


@given(st.dictionaries(st.sampled_from(["traceparent", "x-cloud-trace-context"]), text))
def test_trace_parser(headers):
    trace = parse_trace(headers)
    assert trace is None or all(ch in string.hexdigits for ch in trace.trace_id)


# --- the fuzz run ---------------------------------------------------------------------------------

form_values = st.one_of(text, st.sampled_from(["client_credentials", "external_credential",
                                               "urn:ietf:params:oauth:grant-type:jwt-bearer",
                                               "https://www.googleapis.com/auth/cloud-platform"]))
form_pairs = st.lists(st.tuples(st.sampled_from(["grant_type", "format", "scope", "service_account", "audience",
                                                 "assertion", "client_id", "client_secret", "x"]), form_values),
                      max_size=6)


def encode(pairs) -> bytes:
    from urllib.parse import urlencode

    return urlencode(pairs).encode()


requests_strategy = st.tuples(
    st.one_of(form_pairs.map(encode), st.binary(max_size=300)),
    st.dictionaries(st.sampled_from(HEADER_NAMES), header_values),
    st.sampled_from(["application/x-www-form-urlencoded", "application/json", "", "text/plain; charset=x"]),
    st.sampled_from(["POST", "GET", "PUT", "HEAD"]),
    st.sampled_from(["/token", "/", "/jwks", "/.well-known/openid-configuration", "/x", "/token/"]),
)


@settings(max_examples=10_000, deadline=None, suppress_health_check=[HealthCheck.too_slow,
                                                                      HealthCheck.function_scoped_fixture])
@given(generated=requests_strategy)
def test_fuzz_10000_requests_no_5xx_no_unearned_token(service, audit, generated):
    body, overrides, content_type, method, path = generated
    headers = {**verified_headers(), **overrides, "content-type": content_type}
    before = len(audit.stream.getvalue().splitlines())
    response = dispatch(service, HttpRequest(method, path, headers, body))
    assert response.status < 500, response.body
    if path == "/token" and method == "POST":
        document = json.loads(response.body)
        lines = audit.stream.getvalue().splitlines()[before:]
        assert len(lines) == 1, "exactly one audit line per attempt"
        if response.status == 200:
            # A token only for a verified certificate, with the right grant type.
            assert headers.get("x-client-cert-present", "").strip().lower() == "true"
            assert headers.get("x-client-cert-chain-verified", "").strip().lower() == "true"
            assert "id_token" in document
            assert json.loads(lines[0])["logging.googleapis.com/labels"]["outcome"] == "issued"
        else:
            assert "id_token" not in document and "access_token" not in document
            labels = json.loads(lines[0])["logging.googleapis.com/labels"]
            assert labels["reason"] in {reason.value for reason in Reason}


# --- the jwt-bearer fuzz: any assertion, any answer from an issuer --------------------------------
#
# Each example gets a fresh verifier (its JWK cache and replay cache): a cooldown or a spent jti left by one
# example would otherwise answer the next one from memory and hide the case it generated.

JWT_BEARER = "urn:ietf:params:oauth:grant-type:jwt-bearer"
BROKER_AUDIENCES = (ISSUER, f"{ISSUER}/token")
CLUSTER = "https://cluster.example.net"  # trusted with inline keys: never fetched
GRANTED = "system:serviceaccount:payments:api"
GRANTED_SUBJECT = re.compile(r"system:serviceaccount:payments:[^/@:.,\s]*")  # the rule's glob, written out
GRANTED_NAMESPACE = "ledger"  # a second rule admits any subject whose kubernetes.io/namespace claim is this
MAX_LIFETIME = 3600
KID = "key-1"
OAUTH_ERRORS = {"invalid_request", "invalid_client", "invalid_grant", "unauthorized_client",
                "unsupported_grant_type", "invalid_scope", "access_denied", "temporarily_unavailable"}
HIDDEN = {"Cc", "Cf", "Cs", "Zl", "Zp"}
DISCOVERY = "/.well-known/openid-configuration"


class IssuerKeys(NamedTuple):
    real: rsa.RSAPrivateKey  # the trusted issuer's signing key
    attacker: rsa.RSAPrivateKey  # anyone else's, published under the same kid where a test says so
    ec_key: ec.EllipticCurvePrivateKey

    def public_jwk(self, key: Any, kid: str = KID) -> dict[str, Any]:
        encoder = RSAAlgorithm if isinstance(key, rsa.RSAPrivateKey) else ECAlgorithm
        return {**encoder.to_jwk(key.public_key(), as_dict=True), "kid": kid}

    def private_jwk(self, key: Any, kid: str = KID) -> dict[str, Any]:
        encoder = RSAAlgorithm if isinstance(key, rsa.RSAPrivateKey) else ECAlgorithm
        return {**encoder.to_jwk(key, as_dict=True), "kid": kid}


@pytest.fixture(scope="module")
def issuer_keys() -> IssuerKeys:
    return IssuerKeys(rsa.generate_private_key(public_exponent=65537, key_size=2048),
                      rsa.generate_private_key(public_exponent=65537, key_size=2048),
                      ec.generate_private_key(ec.SECP256R1()))


@pytest.fixture(scope="module")
def down_issuer() -> Iterator[ScriptedIssuer]:
    """A trusted issuer whose discovery answers 503: its assertions earn a 503 with Retry-After."""
    server = ScriptedIssuer(lambda path: (503, b'{"error": "down"}'))
    yield server
    server.close()


@pytest.fixture(scope="module")
def fuzzed_issuer() -> Iterator[ScriptedIssuer]:
    """A trusted issuer whose discovery and JWKS answers each example sets."""
    server = ScriptedIssuer(lambda path: (404, b""))
    yield server
    server.close()


class JwtBearerBroker:
    """The settings, signer and policy of a broker with the jwt-bearer flow; a fresh service per example."""

    def __init__(self, environ: dict[str, str], rsa_key: rsa.RSAPrivateKey, audit: Any, tmp_path: Path,
                 policy: dict[str, Any]):
        policy_file = tmp_path / "policy.json"
        policy_file.write_text(json.dumps(policy))
        self.settings = load_settings({**environ, "AUTH_FLOWS": "jwt-bearer", "POLICY_FILE": str(policy_file)})
        self.policy = parse_policy(policy)
        self.signer = LocalKeySigner(rsa_key, "RS256")
        self.writer = JsonLineWriter(audit.stream)
        # Loopback only; one attempt per URL whatever this policy says (jwks_cache.FETCH_POLICY).
        self.client = UpstreamClient(RetryPolicy(budget=2))

    def service(self) -> TokenService:
        # A generous deadline: a fetch on a loaded machine must not turn a case into "keys being fetched".
        keys = JwksCache(self.client, deadline_seconds=30)
        verifier = AssertionVerifier(self.policy, BROKER_AUDIENCES, keys, ReplayCache())
        authenticator = Authenticator(self.settings.auth_flows, self.settings.mtls_headers, verifier)
        return TokenService(self.settings, self.signer, self.writer, policy=self.policy, authenticator=authenticator)


def post_assertion(service: TokenService, assertion: bytes) -> HttpResponse:
    body = b"grant_type=" + quote(JWT_BEARER, safe="").encode() + b"&assertion=" + quote_from_bytes(
        assertion, safe="").encode()
    return dispatch(service, HttpRequest("POST", "/token", {"content-type": "application/x-www-form-urlencoded"},
                                         body))


def attempt(service: TokenService, assertion: bytes, audit: Any) -> tuple[HttpResponse, list[str]]:
    """One token request and the audit lines it wrote."""
    # Emptied first: reading back every earlier example's lines would make the run quadratic.
    audit.stream.seek(0)
    audit.stream.truncate()
    response = post_assertion(service, assertion)
    return response, audit.stream.getvalue().splitlines()


def checked_answer(response: HttpResponse, lines: list[str], unavailable: bool) -> dict[str, Any]:
    """What every answer to a token request must be; returns its JSON body.

    ``unavailable``: whether the assertion names the issuer that cannot be reached (a 503 is allowed)."""
    document = json.loads(response.body)
    headers = dict(response.headers)
    assert len(lines) == 1, "exactly one audit line per attempt"
    labels = json.loads(lines[0])["logging.googleapis.com/labels"]
    assert headers["Cache-Control"] == "no-store"
    if response.status == 200:
        assert labels["outcome"] == "issued" and "id_token" in document
        return document
    assert response.status < 500 or (response.status == 503 and unavailable), response.body
    assert set(document) == {"error", "error_description"} and document["error"] in OAUTH_ERRORS, document
    assert labels["reason"] in {reason.value for reason in Reason}
    if response.status == 503:
        assert (document["error"], labels["reason"]) == ("temporarily_unavailable", "issuer_keys_unavailable")
        assert int(headers["Retry-After"]) >= 1
    return document


def segment(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def rs256(signing_input: str, key: rsa.RSAPrivateKey) -> str:
    return segment(RSAAlgorithm(RSAAlgorithm.SHA256).sign(signing_input.encode(), key))


def render(members: dict[str, str]) -> str:
    """A JSON object from member names and their values as JSON text (which may be no valid JSON)."""
    return "{" + ",".join(f"{json.dumps(name)}:{value}" for name, value in members.items()) + "}"


def depth(document: Any) -> int:
    """How deep arrays and objects nest, read off the JSON text (unlike the verifier's walk of the
    decoded value): the most brackets open at once outside strings."""
    deepest = level = 0
    in_string = escaped = False
    for char in json.dumps(document):
        if in_string:
            escaped, in_string = (False, True) if escaped else (char == "\\", char != '"')
        elif char == '"':
            in_string = True
        elif char in "[{":
            level += 1
            deepest = max(deepest, level)
        elif char in "]}":
            level -= 1
    return deepest


def is_number(value: Any) -> bool:
    # Compared, not converted: math.isfinite(10**400) raises.
    return isinstance(value, int | float) and not isinstance(value, bool) and -1e300 < value < 1e300


# JSON values of every shape; numbers beyond int64 and double, NaN-like strings, unicode, nesting.
NAN_LIKE = ["NaN", "Infinity", "-Infinity", "1e999", "-0", "0x10", " 42", "4_2", "١٢٣", "1700000000", "", "null"]
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats()
    | st.sampled_from([2**63, -(2**63) - 1, 2**1024, 10**4000, 1e308, -1e-308, 0.5])
    | st.text(alphabet=st.characters(codec="utf-8"), max_size=20) | st.sampled_from(NAN_LIKE),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner, max_size=4),
    max_leaves=16,
)
# Values as JSON text, including literals json.dumps never writes but a parser may meet.
RAW_LITERALS = ["1e999", "-1e999", "NaN", "Infinity", "1" + "0" * 400, "1.0e-400", "-0", "1E400", "0.0"]
json_texts = st.one_of(
    json_values.map(json.dumps),
    st.sampled_from(RAW_LITERALS),
    st.integers(30, 1500).map(lambda levels: "[" * levels + "]" * levels),  # beyond the broker's depth limit
)
CLAIM_NAMES = ["iss", "sub", "aud", "exp", "iat", "nbf", "jti", "kubernetes.io"]
HEADER_NAMES_JWT = ["alg", "kid", "typ", "cty", "crit", "b64", "jku", "x5u", "x"]


def often(draw: st.DrawFn, tenths: int) -> bool:
    return draw(st.integers(0, 9)) < tenths


# Strategies are built once, not per draw: hypothesis validates every new one, walking json_values again.
@functools.lru_cache(maxsize=2)
def plausible_claims(now: int, issuers: tuple[str, ...]) -> dict[str, st.SearchStrategy[Any]]:
    """Per claim, values near what the broker checks: right and wrong types, both sides of each limit.

    Times keep at least 5 s from every limit (now, now + 30 s, now + 60 s), so the verdict cannot
    depend on how long the request takes; the lifetime (exp - iat) is exact, both from one ``now``."""
    @st.composite
    def times(draw: st.DrawFn, offsets: list[int]) -> Any:
        if often(draw, 3):  # numbers no clock reaches: beyond int64, beyond any float, not a number
            return draw(st.sampled_from([2**63, 10**400, 10**400, -(10**400), 1e308, math.inf, math.nan]))
        offset = draw(st.sampled_from(offsets))
        return draw(st.sampled_from([now + offset, float(now + offset) + 0.5, str(now + offset)]))

    return {
        "iss": st.sampled_from([*issuers, CLUSTER + "/", "https://untrusted.example.net", 5, [CLUSTER]]),
        "sub": st.sampled_from([GRANTED, "system:serviceaccount:payments:", "system:serviceaccount:intruders:api",
                                "system:serviceaccount:payments:a.b", "system:serviceaccount:payments:ü",
                                "system:serviceaccount:payments:a\u202eb", "system:serviceaccount:payments:a\nb",
                                "system:serviceaccount:payments:" + "a" * 100, "", 5, ["x"]]),
        "aud": st.sampled_from([ISSUER, f"{ISSUER}/token", [ISSUER, "other"], ["other"], [], [ISSUER, 5],
                                ISSUER + "/", "https://someone-else", {"aud": ISSUER}]),
        "exp": times([-7200, -120, -45, -10, 10, 20, 45, 120, 600, 3000, 3590, 3650, 90000]),
        "iat": times([-7200, -3600, -3000, -600, -30, 0, 50, 70, 600]),
        "nbf": times([-600, 0, 50, 70, 600]),
        "jti": st.sampled_from([str(uuid.uuid4()), "", "a" * 300, 5, ["j"]]),
        "kubernetes.io": st.sampled_from([{"namespace": GRANTED_NAMESPACE}, {"namespace": "payments"},
                                          {"namespace": [GRANTED_NAMESPACE]}, GRANTED_NAMESPACE]),
    }


class Assertion(NamedTuple):
    raw: bytes
    header: str = ""  # the JSON texts it was built from, when it was built as a JWT
    payload: str = ""
    signer: str = ""  # "real", "attacker", or "" (a signature that is no signature)


HEADER_TEXTS = st.one_of(json_texts, st.dictionaries(st.sampled_from(HEADER_NAMES_JWT), json_texts,
                                                     max_size=4).map(render))
PAYLOAD_TEXTS = st.one_of(json_texts, st.dictionaries(st.sampled_from(CLAIM_NAMES) | st.text(max_size=8),
                                                      json_texts, max_size=8).map(render))
CHANGED_CLAIMS = st.lists(st.sampled_from(["exp", "exp", "iat", "iat", "nbf", "iss", "sub", "aud", "jti",
                                           "kubernetes.io"]), min_size=1, max_size=2, unique=True)
CHANGES = st.sampled_from(["plausible", "plausible", "plausible", "arbitrary", "remove"])
EXTRA_CLAIMS = st.dictionaries(st.text(max_size=8), json_texts, min_size=1, max_size=2)
CHANGED_HEADER = st.lists(st.sampled_from(HEADER_NAMES_JWT), min_size=1, max_size=2, unique=True)
HEADER_VALUES = st.one_of(st.sampled_from(['"RS256"', '"ES256"', '"HS256"', '"none"', '"rs256"', f'"{KID}"', '""',
                                           "null"]), json_texts)
SIGNERS = st.sampled_from(["real", "real", "real", "real", "attacker", ""])
FAKE_SIGNATURES = st.one_of(st.binary(max_size=300).map(segment), st.text(max_size=20))
SEPARATORS = st.sampled_from([".", ".", ".", ".", "..", ",", ""])


@st.composite
def jwt_like(draw: st.DrawFn, keys: IssuerKeys, issuers: tuple[str, ...], mutated: bool) -> Assertion:
    """Three base64url parts of generated JSON: arbitrary, or (``mutated``) a valid claims set and header
    with some members changed, so that the signature checks pass and the claims logic is what decides."""
    if not mutated:
        header, payload = draw(HEADER_TEXTS), draw(PAYLOAD_TEXTS)
    else:
        now = int(time.time())
        plausible = plausible_claims(now, issuers)
        claims = {"iss": json.dumps(CLUSTER), "sub": json.dumps(GRANTED), "aud": json.dumps(ISSUER),
                  "iat": str(now), "exp": str(now + 600), "jti": json.dumps(str(uuid.uuid4()))}
        # One or two claims, the times more often: changing many at once mostly ends at the first.
        for name in draw(CHANGED_CLAIMS):
            change = draw(CHANGES)
            if change == "remove":
                claims.pop(name, None)
            else:
                claims[name] = json.dumps(draw(plausible[name])) if change == "plausible" else draw(json_texts)
        # Other claims and header members now and then: each mostly ends the verification early, and the
        # claims after it are the point of this branch.
        if often(draw, 3):
            claims.update(draw(EXTRA_CLAIMS))
        header_members = {"alg": json.dumps("RS256"), "kid": json.dumps(KID)}
        if often(draw, 3):
            for name in draw(CHANGED_HEADER):
                header_members[name] = draw(HEADER_VALUES)
        header, payload = render(header_members), render(claims)
    signer = draw(SIGNERS)
    signing_input = f"{segment(header.encode())}.{segment(payload.encode())}"
    if signer:
        signature = rs256(signing_input, keys.real if signer == "real" else keys.attacker)
    else:
        signature = draw(FAKE_SIGNATURES)
    separators = draw(SEPARATORS)
    return Assertion(f"{signing_input}{separators}{signature}".encode("utf-8", "surrogatepass"), header, payload,
                     signer if separators == "." else "")


@functools.cache
def assertions(keys: IssuerKeys, issuers: tuple[str, ...]) -> st.SearchStrategy[Assertion]:
    return st.one_of(
        st.binary(max_size=300).map(Assertion),
        st.text(max_size=300).map(lambda text: Assertion(text.encode("utf-8", "surrogatepass"))),
        # Past the assertion's size limit, and past the form's: repeated rather than drawn byte by byte,
        # which would cost more than the request.
        st.tuples(st.binary(min_size=1, max_size=40), st.sampled_from([8193, 12_000, 20_000])).map(
            lambda drawn: Assertion((drawn[0] * (drawn[1] // len(drawn[0]) + 1))[:drawn[1]])),
        jwt_like(keys, issuers, mutated=False),
        # Weighted: the claims logic is where a signed assertion's hostile values meet arithmetic.
        jwt_like(keys, issuers, mutated=True), jwt_like(keys, issuers, mutated=True),
        jwt_like(keys, issuers, mutated=True),
    )


def verdict(assertion: Assertion, now: float) -> bool | None:
    """Whether the broker must issue a token for this assertion (True), must not (False), or may do either
    (None: a header member or nbf whose handling RFC 7515/7519 leave to the implementation).

    Written from the rules (RFC 7523 and the issue's), not from the verifier's code: signed by the
    trusted key under its kid with RS256, a claims set with the right types and times, a subject that is
    shown as it is, and a policy rule that admits it."""
    if assertion.signer != "real" or len(assertion.raw) > 8192:
        return False
    try:
        header, claims = json.loads(assertion.header), json.loads(assertion.payload)
    except (ValueError, RecursionError):
        return False
    if not isinstance(header, dict) or not isinstance(claims, dict) or max(depth(header), depth(claims)) > 32:
        return False
    if header.get("alg") != "RS256" or header.get("kid") != KID or header.get("cty") or header.get("crit"):
        return False
    if claims.get("iss") != CLUSTER or not all(name in claims for name in ("sub", "aud", "exp", "iat")):
        return False
    exp, iat, sub, aud = claims["exp"], claims["iat"], claims["sub"], claims["aud"]
    jti = claims.get("jti")
    if not is_number(exp) or not is_number(iat) or exp - now < 30 or iat > now + 60 or exp - iat > MAX_LIFETIME:
        return False
    if not isinstance(sub, str) or not sub or any(unicodedata.category(char) in HIDDEN for char in sub):
        return False
    audiences = [aud] if isinstance(aud, str) else aud if isinstance(aud, list) and aud else [5]
    if not all(isinstance(item, str) for item in audiences) or not set(audiences) & set(BROKER_AUDIENCES):
        return False
    if not isinstance(jti, str) or not jti:
        return False
    namespace = claims.get("kubernetes.io")
    namespace = namespace.get("namespace") if isinstance(namespace, dict) else None
    if not GRANTED_SUBJECT.fullmatch(sub) and namespace != GRANTED_NAMESPACE:
        return False
    nbf = claims.get("nbf")
    if is_number(nbf) and nbf > now + 60:
        return False
    undecided = (set(header) - {"alg", "kid", "x"}) or ("nbf" in claims and not is_number(nbf))
    return None if undecided else True


@pytest.fixture
def assertion_broker(environ, rsa_key, audit, tmp_path, issuer_keys, down_issuer) -> JwtBearerBroker:
    """Trusts ``cluster`` (its key inline) and ``down`` (fetched, and unavailable)."""
    return JwtBearerBroker(environ, rsa_key, audit, tmp_path, {
        "issuers": [{"name": "cluster", "issuer": CLUSTER, "max_assertion_lifetime": MAX_LIFETIME,
                     "jwks": {"keys": [issuer_keys.public_jwk(issuer_keys.real)]}},
                    {"name": "down", "issuer": down_issuer.url}],
        "rules": [{"name": "payments", "assertion": {"issuer": "cluster",
                                                     "subject": "system:serviceaccount:payments:*"}},
                  {"name": "ledger", "assertion": {"issuer": "cluster",
                                                   "claims": {"kubernetes.io/namespace": GRANTED_NAMESPACE}}}],
    })


@settings(max_examples=2_000, deadline=None, suppress_health_check=[HealthCheck.too_slow,
                                                                     HealthCheck.function_scoped_fixture,
                                                                     HealthCheck.data_too_large])
@given(data=st.data())
def test_fuzz_2000_assertions_no_5xx_no_unearned_token(assertion_broker, rsa_key, audit, issuer_keys, down_issuer,
                                                       data):
    broker = assertion_broker
    assertion = data.draw(assertions(issuer_keys, (CLUSTER, down_issuer.url)))
    service = broker.service()
    response, lines = attempt(service, assertion.raw, audit)
    now = time.time()
    document = checked_answer(response, lines, unavailable=claimed_issuer(assertion.raw) == down_issuer.url)
    expected = verdict(assertion, now)
    event(f"{response.status}, verdict {expected}")  # --hypothesis-show-statistics: what the run covered
    if response.status == 200:
        assert expected is not False, (assertion, document)
        token = jwt.decode(document["id_token"], rsa_key.public_key(), algorithms=["RS256"], audience=
                           broker.settings.provider.token_audience)
        claims = json.loads(assertion.payload)
        readable = f"jwt:cluster:{claims['sub']}"
        # WIF's google.subject holds 127 bytes: a longer subject is stood for by its digest.
        expected_sub = readable if len(readable.encode()) <= 127 else "jwt-sha256:cluster:"
        assert token["sub"].startswith(expected_sub) and token["exp"] <= claims["exp"]
        # A single-use assertion earns one token.
        replay = checked_answer(*attempt(service, assertion.raw, audit), unavailable=False)
        assert "already used" in replay.get("error_description", ""), replay
    else:
        assert expected is not True, (assertion, document)


def claimed_issuer(raw: bytes) -> Any:
    """The iss of what was sent, where its payload decodes to an object."""
    parts = raw.split(b".")
    if len(parts) != 3:
        return None
    try:
        payload = json.loads(base64.urlsafe_b64decode(parts[1] + b"=" * (-len(parts[1]) % 4)))
    except (ValueError, RecursionError):  # binascii.Error and UnicodeDecodeError are ValueErrors
        return None
    return payload.get("iss") if isinstance(payload, dict) else None


# What an issuer may answer, for its discovery document and its JWKS alike: mostly well-formed (else
# nearly every example would stop at the first malformed byte and no token path would be exercised).
STATUSES = st.sampled_from([200] * 12 + [204, 302, 404, 500, 503])
JWK_MEMBERS = ["kid", "kty", "alg", "use", "n", "e", "crv", "x", "y", "d", "key_ops", "x5c"]
hostile_bytes = st.one_of(
    st.binary(max_size=300),
    st.binary(max_size=60).map(lambda tail: b"\xff\xfe\x00" + tail),  # no UTF-8 (and no UTF-16 JSON either)
    json_values.map(lambda value: json.dumps(value).encode()),
    json_texts.map(str.encode),
    st.sampled_from([b"[]", b'{"keys": 5}', b'{"keys": {}}', b'{"keys": null}', b'{"keys": "x"}', b"null", b"",
                     b'"text"', b"{", b"\xef\xbb\xbf{}"]),
    st.integers(1, 100_000).map(lambda levels: b"[" * levels + b"]" * levels),
    # Either side of the size cap on an answer (upstream.MAX_RESPONSE_BYTES).
    st.sampled_from([-2, 0, 1, 4096]).map(lambda over: b'{"keys": [], "pad": "' + b" " * (
        MAX_RESPONSE_BYTES - 24 + over) + b'"}'),
)


class IssuerAnswers(NamedTuple):
    discovery: tuple[int, bytes]
    jwks: tuple[int, bytes]
    clean: bool  # a well-formed discovery naming the issuer's own /jwks, which publishes the real key as is


@functools.cache
def jwk_entries(keys: IssuerKeys) -> st.SearchStrategy[Any]:
    """Members of a JWKS's keys list besides the real key as it is."""
    real = keys.public_jwk(keys.real)
    return st.one_of(
        st.just(keys.public_jwk(keys.attacker)),  # another key under the real key's kid
        st.just(keys.private_jwk(keys.real)),  # an issuer that publishes its private key
        st.just(keys.public_jwk(keys.ec_key)), st.just(keys.private_jwk(keys.ec_key)),
        st.just(keys.public_jwk(keys.real, kid="other")),
        st.tuples(st.sampled_from(JWK_MEMBERS), json_values).map(lambda change: {**real, change[0]: change[1]}),
        st.sampled_from(JWK_MEMBERS).map(lambda name: {key: value for key, value in real.items() if key != name}),
        st.dictionaries(st.sampled_from(JWK_MEMBERS), json_values, max_size=6),
        json_values,
    )


DISCOVERY_MEMBERS = st.dictionaries(st.text(max_size=10), json_values, max_size=3)


@functools.cache
@st.composite
def issuer_answers(draw: st.DrawFn, keys: IssuerKeys, url: str) -> IssuerAnswers:
    port = url.rsplit(":", 1)[1]
    own_jwks = f"{url}/jwks"
    if often(draw, 6):
        jwks_uri: Any = own_jwks
    elif often(draw, 8):
        jwks_uri = draw(st.sampled_from([
            f"http://localhost:{port}/jwks",  # another name for the same loopback host
            f"{url}/missing", f"{url}/jwks?x=1", f"{url}{DISCOVERY}",
            "http://keys.example.net/jwks",  # plain http off loopback: refused before any request
            f"https://127.0.0.1:{port}/jwks",  # https to a plain-http server: a TLS failure
            "https://127.0.0.2:1/jwks", f"http://[::1]:{port}/jwks", f"http://127.0.0.1:{port}:{port}/jwks",
            "http://[::1/jwks", "ftp://127.0.0.1/jwks", "file:///etc/passwd", "", f"{own_jwks}\r\nHost: x",
            f"{own_jwks}?" + "a" * 5000]))
    else:
        jwks_uri = draw(json_values)
    built_discovery = often(draw, 8)
    if built_discovery:
        members = draw(DISCOVERY_MEMBERS)
        discovery = json.dumps({**members, "issuer": url, "jwks_uri": jwks_uri}).encode()
    else:
        discovery = draw(hostile_bytes)
    real = keys.public_jwk(keys.real)
    key_list = draw(st.lists(jwk_entries(keys), max_size=3))
    if often(draw, 6):
        key_list.insert(draw(st.integers(0, len(key_list))), real)
    built_jwks = often(draw, 8)
    jwks = json.dumps({"keys": key_list}).encode() if built_jwks else draw(hostile_bytes)
    discovery_status, jwks_status = draw(STATUSES), draw(STATUSES)
    clean = (built_discovery and discovery_status == 200 and jwks_uri == own_jwks and built_jwks
             and jwks_status == 200 and [entry for entry in key_list if isinstance(entry, dict)
                                         and entry.get("kid") == KID] == [real])
    return IssuerAnswers((discovery_status, discovery), (jwks_status, jwks), clean)


def publishes(answers: IssuerAnswers, url: str, key: rsa.RSAPrivateKey) -> bool:
    """Whether the issuer, through a discovery document naming a JWKS on its own loopback server,
    published ``key``'s public half (without its private parameters) under the kid KID."""
    port = url.rsplit(":", 1)[1]
    if answers.discovery[0] != 200 or answers.jwks[0] != 200 or len(answers.jwks[1]) > MAX_RESPONSE_BYTES:
        return False
    try:
        discovery, jwks = json.loads(answers.discovery[1]), json.loads(answers.jwks[1])
    except (ValueError, RecursionError):
        return False
    if not isinstance(discovery, dict) or discovery.get("jwks_uri") not in (f"{url}/jwks",
                                                                             f"http://localhost:{port}/jwks"):
        return False
    public = RSAAlgorithm.to_jwk(key.public_key(), as_dict=True)
    return isinstance(jwks, dict) and isinstance(jwks.get("keys"), list) and any(
        isinstance(entry, dict) and entry.get("kid") == KID and entry.get("n") == public["n"]
        and entry.get("e") == public["e"] and "d" not in entry for entry in jwks["keys"])


@pytest.fixture
def answer_broker(environ, rsa_key, audit, tmp_path, fuzzed_issuer) -> JwtBearerBroker:
    """Trusts ``fuzzed``, whose keys come from its discovery document."""
    return JwtBearerBroker(environ, rsa_key, audit, tmp_path, {
        "issuers": [{"name": "fuzzed", "issuer": fuzzed_issuer.url}],
        "rules": [{"name": "payments", "assertion": {"issuer": "fuzzed",
                                                     "subject": "system:serviceaccount:payments:*"}}],
    })


@settings(max_examples=500, deadline=None, suppress_health_check=[HealthCheck.too_slow,
                                                                   HealthCheck.function_scoped_fixture,
                                                                   HealthCheck.data_too_large])
@given(data=st.data())
def test_fuzz_500_issuer_answers_no_5xx_but_503_no_token_from_foreign_keys(answer_broker, audit, issuer_keys,
                                                                          fuzzed_issuer, data):
    url = fuzzed_issuer.url
    answers = data.draw(issuer_answers(issuer_keys, url))
    served: list[str] = []

    def answer(path: str) -> tuple[int, bytes]:
        served.append(path)
        if path == DISCOVERY:
            return answers.discovery
        return answers.jwks if path == "/jwks" else (404, b"")

    fuzzed_issuer.answer = answer
    signer = data.draw(st.sampled_from(["real", "real", "attacker"]))
    now = int(time.time())
    claims = {"iss": url, "sub": GRANTED, "aud": ISSUER, "iat": now, "exp": now + 600, "jti": str(uuid.uuid4())}
    header = {"alg": "RS256", "kid": KID}
    signing_input = f"{segment(json.dumps(header).encode())}.{segment(json.dumps(claims).encode())}"
    key = issuer_keys.real if signer == "real" else issuer_keys.attacker
    response, lines = attempt(answer_broker.service(), f"{signing_input}.{rs256(signing_input, key)}".encode(), audit)
    checked_answer(response, lines, unavailable=True)
    event(f"{response.status}{', clean' if answers.clean else ''}, signed by {signer} key")
    assert served[:1] == [DISCOVERY] and len(served) <= 2, served  # one discovery, at most one JWKS, no retry
    if response.status == 200:
        assert publishes(answers, url, key), (answers.discovery[1][:300], answers.jwks[1][:300])
    if answers.clean and signer == "real":
        assert response.status == 200, response.body
