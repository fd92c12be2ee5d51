"""A local stand-in for the Google APIs the broker calls, keeping Google's contract.

    python -m devtools.google_emulator --port 8090 --ca .local/pki/ca.pem

One HTTP server (loopback only) emulating:
- STS ``POST /v1/token``: RFC 8693 token exchange of an OIDC token, validated like
  workload identity federation does it
  (https://cloud.google.com/iam/docs/workload-identity-federation-with-other-providers): it fetches
  ``<iss>/.well-known/openid-configuration`` and the JWKS over HTTPS, requires
  ``kid`` and RS256/ES256, ``iat`` in the past, ``exp`` under 48 h after ``iat``, an
  ``aud`` naming the provider, and a ``google.subject`` of at most 127 bytes.
- IAM Credentials ``signJwt``, ``generateAccessToken``, ``generateIdToken`` at the
  REST paths google-auth and google-cloud-iam use, allowed only for members
  bound on the service account, with Google's error envelope.
- The service-account JWKS (``/service_accounts/v1/metadata/jwk/<email>``), the
  Google ID-token keys (``/oauth2/v3/certs``) and the metadata server
  (``GCE_METADATA_HOST``) that tells the runtime identity and its token.

Tokens it issues are random strings that mean nothing to real Google. Tests
can inject latency and failures and count the TCP connections it accepted.
Development tooling only: never deployed.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import hashlib
import json
import re
import secrets
import ssl
import sys
import threading
import time
import urllib.request
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

import jwt
from cryptography.hazmat.primitives.asymmetric import rsa
from jwt.algorithms import RSAAlgorithm

from devtools.loop_http import Answer, LoopHttpServer, Request

TOKEN_EXCHANGE = "urn:ietf:params:oauth:grant-type:token-exchange"
ACCESS_TOKEN_TYPE = "urn:ietf:params:oauth:token-type:access_token"
SUBJECT_TOKEN_TYPES = ("urn:ietf:params:oauth:token-type:jwt", "urn:ietf:params:oauth:token-type:id_token")
IAM_SCOPES = ("https://www.googleapis.com/auth/cloud-platform", "https://www.googleapis.com/auth/iam")
TOKEN_CREATOR = "roles/iam.serviceAccountTokenCreator"
WORKLOAD_IDENTITY_USER = "roles/iam.workloadIdentityUser"
ROLE_PERMISSIONS = {
    TOKEN_CREATOR: {"iam.serviceAccounts.signJwt", "iam.serviceAccounts.getAccessToken",
                    "iam.serviceAccounts.getOpenIdToken"},
    WORKLOAD_IDENTITY_USER: {"iam.serviceAccounts.getAccessToken", "iam.serviceAccounts.getOpenIdToken"},
}
METHOD_PERMISSIONS = {
    "signJwt": "iam.serviceAccounts.signJwt",
    "generateAccessToken": "iam.serviceAccounts.getAccessToken",
    "generateIdToken": "iam.serviceAccounts.getOpenIdToken",
}
MAX_SUBJECT_TOKEN_LIFETIME = 48 * 3600
MAX_SIGN_JWT_EXP = 12 * 3600
MAX_ACCESS_TOKEN_LIFETIME = 3600
MAX_GOOGLE_SUBJECT_BYTES = 127
_AUDIENCE = re.compile(
    r"^//iam\.googleapis\.com/(projects/(\d+)/locations/global/workloadIdentityPools/([^/]+)/providers/([^/]+))$"
)
_IAM_PATH = re.compile(r"^/v1/projects/-/serviceAccounts/([^/:]+):(signJwt|generateAccessToken|generateIdToken)$")
_MAPPING = re.compile(r"^assertion((?:\.[A-Za-z_][A-Za-z0-9_]*)+)$")
_COMPACT_JWS = re.compile(r"([A-Za-z0-9_-]+)\.([A-Za-z0-9_-]+)\.([A-Za-z0-9_-]*)")  # alg none signs nothing


@dataclass
class Provider:
    """A workload identity pool provider of type OIDC."""

    project_number: str
    pool_id: str
    provider_id: str
    issuer_uri: str
    attribute_mapping: dict[str, str] = field(default_factory=lambda: {"google.subject": "assertion.sub"})
    allowed_audiences: list[str] = field(default_factory=list)
    disabled: bool = False

    @property
    def resource_name(self) -> str:
        return (f"projects/{self.project_number}/locations/global/workloadIdentityPools/{self.pool_id}"
                f"/providers/{self.provider_id}")

    @property
    def pool_name(self) -> str:
        return f"projects/{self.project_number}/locations/global/workloadIdentityPools/{self.pool_id}"


@dataclass
class Grant:
    """What an access token issued here stands for."""

    members: frozenset[str]
    scopes: frozenset[str]
    expires_at: float
    subject: str


class ApiError(Exception):
    def __init__(self, status: int, body: dict[str, Any]):
        self.status = status
        self.body = body


def oauth_error(error: str, description: str) -> ApiError:
    return ApiError(400, {"error": error, "error_description": description})


def google_error(code: int, status: str, message: str, reason: str | None = None) -> ApiError:
    error: dict[str, Any] = {"code": code, "message": message, "status": status}
    if reason:
        error["details"] = [{"@type": "type.googleapis.com/google.rpc.ErrorInfo", "reason": reason,
                             "domain": "iam.googleapis.com"}]
    return ApiError(code, {"error": error})


class GoogleEmulator:
    def __init__(
        self,
        *,
        providers: list[Provider],
        bindings: dict[str, list[tuple[str, str]]],
        runtime_service_account: str,
        project_id: str = "local-project",
        ca_file: str | None = None,
    ):
        self.providers = {provider.resource_name: provider for provider in providers}
        self.bindings = bindings  # service account email -> [(role, member)]
        self.runtime_service_account = runtime_service_account
        self.project_id = project_id
        self._tls = ssl.create_default_context(cafile=ca_file) if ca_file else ssl.create_default_context()
        self._lock = threading.Lock()
        self._tokens: dict[str, Grant] = {}
        self._keys: dict[str, tuple[rsa.RSAPrivateKey, str]] = {}
        self._google_key = self._new_key()
        self.latency: dict[str, float] = {}
        self._key_cache: dict[str, tuple[float, dict[str, jwt.PyJWK]]] = {}
        self._fetch_lock = threading.Lock()
        self.clock_skew = 0.0  # seconds Google's clock is ahead of ours (tests of expiry rules)
        self._faults: dict[str, list[int | str]] = {}
        self.connections = 0
        self.requests: Counter[str] = Counter()
        # Seconds from each request line read to its answer ready: the emulator's own work, which
        # happens within the injected latency (the bench reports it, to show it fits).
        self.service_seconds: Counter[str] = Counter()

    def record_service_time(self, service: str, seconds: float) -> None:
        with self._lock:
            self.service_seconds[service] += seconds

    # ---- test controls -------------------------------------------------------------------------
    def inject(self, service: str, *outcomes: int | str) -> None:
        """Answer the next requests to ``service`` (sts, iam, metadata) with these outcomes:
        an HTTP status, ``"reset"`` (close the connection), ``"garbage"`` (malformed JSON) or
        ``"hang:<seconds>"``."""
        with self._lock:
            self._faults.setdefault(service, []).extend(outcomes)

    def next_fault(self, service: str) -> int | str | None:
        with self._lock:
            planned = self._faults.get(service)
            return planned.pop(0) if planned else None

    # ---- keys and tokens -----------------------------------------------------------------------
    @staticmethod
    def _new_key() -> tuple[rsa.RSAPrivateKey, str]:
        return rsa.generate_private_key(public_exponent=65537, key_size=2048), secrets.token_hex(20)

    def service_account_key(self, email: str) -> tuple[rsa.RSAPrivateKey, str]:
        with self._lock:
            if email not in self._keys:
                self._keys[email] = self._new_key()
            return self._keys[email]

    def rotate_key(self, email: str) -> None:
        with self._lock:
            self._keys[email] = self._new_key()

    def jwks(self, key: tuple[rsa.RSAPrivateKey, str]) -> dict[str, Any]:
        public = RSAAlgorithm.to_jwk(key[0].public_key(), as_dict=True)
        return {"keys": [{**public, "kid": key[1], "alg": "RS256", "use": "sig"}]}

    def issue_token(self, members: set[str], scopes: set[str], lifetime: int, subject: str) -> str:
        token = "ya29.emulated." + secrets.token_urlsafe(32)
        with self._lock:
            self._tokens[token] = Grant(frozenset(members), frozenset(scopes), time.time() + lifetime, subject)
        return token

    def grant_for(self, authorization: str | None) -> Grant:
        if not authorization or not authorization.startswith("Bearer "):
            raise google_error(401, "UNAUTHENTICATED",
                               "Request is missing required authentication credential. Expected OAuth 2 access "
                               "token, login cookie or other valid authentication credential.")
        with self._lock:
            grant = self._tokens.get(authorization[7:].strip())
        if grant is None or grant.expires_at <= time.time():
            raise google_error(401, "UNAUTHENTICATED",
                               "Request had invalid authentication credentials. Expected OAuth 2 access token, "
                               "login cookie or other valid authentication credential.", "ACCESS_TOKEN_EXPIRED"
                               if grant else None)
        return grant

    # ---- STS -----------------------------------------------------------------------------------
    def sts_token(self, form: dict[str, str]) -> dict[str, Any]:
        if form.get("grant_type") != TOKEN_EXCHANGE:
            raise oauth_error("unsupported_grant_type", "Invalid value for \"grant_type\".")
        if form.get("requested_token_type") != ACCESS_TOKEN_TYPE:
            raise oauth_error("invalid_request", "Invalid value for \"requested_token_type\".")
        if form.get("subject_token_type") not in SUBJECT_TOKEN_TYPES:
            raise oauth_error("invalid_request", "Invalid value for \"subject_token_type\".")
        match = _AUDIENCE.match(form.get("audience", ""))
        if not match:
            raise oauth_error(
                "invalid_request",
                "Invalid value for \"audience\". This value should be the full resource name of the Identity "
                "Provider. See https://cloud.google.com/iam/docs/reference/sts/rest/v1/TopLevel/token for the "
                "list of possible formats.")
        provider = self.providers.get(match.group(1))
        if provider is None or provider.disabled:
            raise oauth_error(
                "invalid_target",
                "The target service indicated by the \"audience\" parameters is invalid. This might either be "
                "because the pool or provider is disabled or deleted or because it doesn't exist.")
        if not form.get("scope"):
            raise oauth_error("invalid_request", "Invalid value for \"scope\". The scope is required.")
        claims = self._verified_claims(form.get("subject_token", ""), provider)
        subject, attributes = self._mapped_attributes(claims, provider)
        members = {f"principal://iam.googleapis.com/{provider.pool_name}/subject/{subject}",
                   f"principalSet://iam.googleapis.com/{provider.pool_name}/*"}
        members |= {f"principalSet://iam.googleapis.com/{provider.pool_name}/attribute.{name}/{value}"
                    for name, value in attributes.items()}
        token = self.issue_token(members, set(form["scope"].split()), 3600, subject)
        return {"access_token": token, "issued_token_type": ACCESS_TOKEN_TYPE, "token_type": "Bearer",
                "expires_in": 3599}

    def _verified_claims(self, token: str, provider: Provider) -> dict[str, Any]:
        parsed = _parse_compact_jws(token)
        if parsed is None:
            raise oauth_error("invalid_grant", "Unable to parse the ID Token.")
        header, claims, signature = parsed
        if header.get("alg") not in ("RS256", "ES256") or not isinstance(header.get("kid"), str) or not header["kid"]:
            raise oauth_error("invalid_grant",
                              "The ID Token header must contain a 'kid' and an 'alg' of RS256 or ES256.")
        if claims.get("iss") != provider.issuer_uri:
            raise oauth_error("invalid_grant", f"The issuer in ID Token {claims.get('iss')} does not match "
                                               f"the expected ones: {provider.issuer_uri}.")
        key = self._issuer_key(provider.issuer_uri, header["kid"])
        if key is None:
            raise oauth_error("invalid_grant", f"The ID Token's kid {header['kid']} is not in the issuer's JWKS.")
        # The signature is checked with the key's own algorithm, which must be the header's.
        signing_input = token.rpartition(".")[0].encode()
        if key.algorithm_name != header["alg"] or not key.Algorithm.verify(signing_input, key.key, signature):
            raise oauth_error("invalid_grant", "Invalid ID Token signature.")
        now = time.time() + self.clock_skew
        iat, exp = claims.get("iat"), claims.get("exp")
        if not isinstance(iat, int) or not isinstance(exp, int):
            raise oauth_error("invalid_grant", "The ID Token must contain integer 'iat' and 'exp' claims.")
        if iat > now:
            raise oauth_error("invalid_grant", f"ID Token issued at {iat} is in the future.")
        if exp <= now:
            raise oauth_error("invalid_grant", f"ID Token expired at {exp}.")
        if exp - iat >= MAX_SUBJECT_TOKEN_LIFETIME:
            raise oauth_error("invalid_grant", "The ID Token's exp must be less than 48 hours after iat.")
        if not claims.get("sub"):
            raise oauth_error("invalid_grant", "The ID Token must contain a 'sub' claim.")
        audiences = claims.get("aud")
        audiences = [audiences] if isinstance(audiences, str) else list(audiences or [])
        allowed = provider.allowed_audiences or [f"//iam.googleapis.com/{provider.resource_name}",
                                                 f"https://iam.googleapis.com/{provider.resource_name}"]
        if not set(audiences) & set(allowed):
            raise oauth_error("invalid_grant", f"The audience in ID Token {audiences} does not match the expected "
                                               f"audience {allowed[0]}.")
        return claims

    def _issuer_key(self, issuer: str, kid: str) -> jwt.PyJWK | None:
        """The issuer's key ``kid``, cached for 5 minutes like WIF; an unknown kid refetches."""
        with self._fetch_lock:  # one fetch at a time, the others reuse it
            cached = self._key_cache.get(issuer)
            if cached is None or time.monotonic() - cached[0] > 300 or kid not in cached[1]:
                keys = self._issuer_keys(issuer)
                cached = (time.monotonic(), {key.key_id: key for key in keys.keys})
                self._key_cache[issuer] = cached
        return cached[1].get(kid)

    def _issuer_keys(self, issuer: str) -> jwt.PyJWKSet:
        try:
            discovery = self._fetch_json(f"{issuer}/.well-known/openid-configuration")
            return jwt.PyJWKSet.from_dict(self._fetch_json(discovery["jwks_uri"]))
        except (OSError, ValueError, KeyError, jwt.PyJWTError) as error:
            raise oauth_error("invalid_grant", f"Unable to retrieve the OpenID configuration or keys of issuer "
                                               f"{issuer}: {error}") from None

    def _fetch_json(self, url: str) -> Any:
        with urllib.request.urlopen(url, timeout=5, context=self._tls) as response:
            return json.loads(response.read())

    @staticmethod
    def _mapped_attributes(claims: dict[str, Any], provider: Provider) -> tuple[str, dict[str, str]]:
        values: dict[str, str] = {}
        for target, expression in provider.attribute_mapping.items():
            match = _MAPPING.match(expression.strip())
            if not match:
                raise oauth_error("invalid_grant", f"Unsupported attribute mapping {expression!r}.")
            value: Any = claims
            for part in match.group(1).strip(".").split("."):
                if not isinstance(value, dict) or part not in value:
                    # CEL fails on a missing key, and so does the exchange.
                    raise oauth_error("invalid_grant", f"The attribute mapping {target}={expression} could not "
                                                       "be evaluated: no such key in the assertion.")
                value = value[part]
            values[target] = value if isinstance(value, str) else json.dumps(value)
        subject = values.pop("google.subject", "")
        if not subject:
            raise oauth_error("invalid_grant", "The mapped attribute google.subject is empty.")
        if len(subject.encode()) > MAX_GOOGLE_SUBJECT_BYTES:
            raise oauth_error("invalid_grant", "The size of mapped attribute google.subject exceeds the 127 bytes "
                                               "limit. Either modify your attribute mapping or the incoming "
                                               "assertion to produce a mapped attribute that is less than 127 bytes.")
        if sum(len(key) + len(value) for key, value in values.items()) > 8192:
            raise oauth_error("invalid_grant", "The total size of mapped attributes exceeds 8KB.")
        return subject, {key.removeprefix("attribute."): value for key, value in values.items()}

    # ---- IAM Credentials -----------------------------------------------------------------------
    def iam_call(self, email: str, method: str, authorization: str | None, body: dict[str, Any]) -> dict[str, Any]:
        grant = self.grant_for(authorization)
        if not grant.scopes & set(IAM_SCOPES):
            raise google_error(403, "PERMISSION_DENIED", "Request had insufficient authentication scopes.",
                               "ACCESS_TOKEN_SCOPE_INSUFFICIENT")
        permission = METHOD_PERMISSIONS[method]
        granted = {p for role, member in self.bindings.get(email, []) if member in grant.members
                   for p in ROLE_PERMISSIONS.get(role, ())}
        if email not in self.bindings or permission not in granted:
            raise google_error(403, "PERMISSION_DENIED",
                               f"Permission '{permission}' denied on resource (or it may not exist).",
                               "IAM_PERMISSION_DENIED")
        return getattr(self, f"_{method}")(email, body)

    def _signJwt(self, email: str, body: dict[str, Any]) -> dict[str, Any]:
        try:
            claims = json.loads(body["payload"])
            assert isinstance(claims, dict)
        except (KeyError, TypeError, ValueError, AssertionError):
            raise google_error(400, "INVALID_ARGUMENT", "Invalid JWT payload: it must be a JSON object.") from None
        exp = claims.get("exp")
        now = time.time() + self.clock_skew
        if exp is not None and (not isinstance(exp, int) or exp < now or exp > now + MAX_SIGN_JWT_EXP):
            raise google_error(400, "INVALID_ARGUMENT", "Invalid JWT: exp must be an integer timestamp not in "
                                                        "the past and at most 12 hours in the future.")
        key, kid = self.service_account_key(email)
        token = jwt.encode(claims, key, algorithm="RS256", headers={"kid": kid, "typ": "JWT"})
        return {"keyId": kid, "signedJwt": token}

    def _generateAccessToken(self, email: str, body: dict[str, Any]) -> dict[str, Any]:
        scopes = body.get("scope") or []
        if not isinstance(scopes, list) or not scopes:
            raise google_error(400, "INVALID_ARGUMENT", "Scope is required.")
        lifetime_text = body.get("lifetime") or "3600s"
        match = re.fullmatch(r"(\d+)(?:\.\d+)?s", str(lifetime_text))
        lifetime = int(match.group(1)) if match else -1
        if not 0 < lifetime <= MAX_ACCESS_TOKEN_LIFETIME:
            raise google_error(400, "INVALID_ARGUMENT", f"The lifetime must be between 1s and "
                                                        f"{MAX_ACCESS_TOKEN_LIFETIME}s.")
        token = self.issue_token({f"serviceAccount:{email}"}, set(scopes), lifetime, email)
        expire = datetime.fromtimestamp(int(time.time()) + lifetime, tz=UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        return {"accessToken": token, "expireTime": expire}

    def _generateIdToken(self, email: str, body: dict[str, Any]) -> dict[str, Any]:
        audience = body.get("audience")
        if not audience or not isinstance(audience, str):
            raise google_error(400, "INVALID_ARGUMENT", "Audience is required.")
        now = int(time.time())
        unique_id = str(int(hashlib.sha256(email.encode()).hexdigest(), 16))[:21]
        claims = {"iss": "https://accounts.google.com", "aud": audience, "azp": unique_id, "sub": unique_id,
                  "iat": now, "exp": now + 3600}
        if body.get("includeEmail"):
            claims.update(email=email, email_verified=True)
        key, kid = self._google_key
        return {"token": jwt.encode(claims, key, algorithm="RS256", headers={"kid": kid, "typ": "JWT"})}

    # ---- metadata server -----------------------------------------------------------------------
    def metadata(self, path: str, query: dict[str, list[str]]) -> tuple[str, str]:
        """Answer a metadata GET: (content type, body)."""
        prefix = "/computeMetadata/v1/"
        name = path[len(prefix):] if path.startswith(prefix) else None
        if name in ("project/project-id",):
            return "text/plain", self.project_id
        if name == "universe/universe-domain":
            return "text/plain", "googleapis.com"
        match = re.fullmatch(r"instance/service-accounts/([^/]+)/?(email|token|identity)?", name or "")
        if not match or match.group(1) not in ("default", self.runtime_service_account):
            raise ApiError(404, {"error": "not found"})
        item = match.group(2)
        if item == "email":
            return "text/plain", self.runtime_service_account
        if item == "token":
            scopes = set(",".join(query.get("scopes", [])).split(",")) - {""} or set(IAM_SCOPES[:1])
            token = self.issue_token({f"serviceAccount:{self.runtime_service_account}"}, scopes, 3600,
                                     self.runtime_service_account)
            return "application/json", json.dumps({"access_token": token, "expires_in": 3599,
                                                   "token_type": "Bearer"})
        return "application/json", json.dumps({"email": self.runtime_service_account, "aliases": ["default"],
                                               "scopes": list(IAM_SCOPES[:1])})


def _parse_compact_jws(token: str) -> tuple[dict[str, Any], dict[str, Any], bytes] | None:
    """Header, claims and signature of a compact JWS, or None. Parsed here rather than by PyJWT,
    whose per-character check of each segment was most of the emulator's work per exchange."""
    match = _COMPACT_JWS.fullmatch(token)
    if match is None:
        return None
    try:
        header, claims, signature = (base64.urlsafe_b64decode(part + "=" * (-len(part) % 4))
                                     for part in match.groups())
        header, claims = json.loads(header), json.loads(claims)
    except ValueError:  # binascii.Error and JSONDecodeError both are
        return None
    if not isinstance(header, dict) or not isinstance(claims, dict):
        return None
    return header, claims, signature


_METADATA_FLAVOR = (("Metadata-Flavor", "Google"),)
_NOT_FOUND = b'{"error":{"code":404,"status":"NOT_FOUND"}}'


class EmulatorServer(LoopHttpServer):
    """Google's routes over the loop server (devtools/loop_http.py): a call that waits out its injected
    latency is a timer, so the emulator's own cost per call stays small beside the broker under test."""

    def __init__(self, address: tuple[str, int], emulator: GoogleEmulator):
        self.emulator = emulator
        super().__init__(address, self._answer, self._count_connection)

    def _count_connection(self) -> None:
        self.emulator.connections += 1

    def _answer(self, request: Request) -> Answer | Awaitable[Answer]:
        url = urlsplit(request.target)
        if request.method == "GET":
            answer = self._get(request, url.path, url.query)
            if answer.status is not None and (url.path == "/" or url.path.startswith("/computeMetadata/")):
                answer = replace(answer, headers=_METADATA_FLAVOR)
            return answer
        if request.method == "POST":
            return self._post(request, url.path)
        return Answer(501, b"Unsupported method.", "text/plain")

    def _get(self, request: Request, path: str, query: str) -> Answer:
        emulator = self.emulator
        if path == "/":  # google-auth's "is this GCE?" ping
            return Answer(200, b"", "text/plain")
        if path.startswith("/computeMetadata/"):
            if request.headers.get("metadata-flavor") != "Google":
                return Answer(403, b"Missing Metadata-Flavor:Google header.", "text/plain")
            fault = self._fault("metadata", request.received)
            if fault is not None:
                return fault
            try:
                content_type, body = emulator.metadata(path, parse_qs(query))
            except ApiError as error:
                return Answer(error.status, json.dumps(error.body).encode())
            return Answer(200, body.encode(), content_type)
        jwk = re.fullmatch(r"/service_accounts/v1/metadata/jwk/([^/]+)", path)
        if jwk:
            return Answer(200, json.dumps(emulator.jwks(emulator.service_account_key(unquote(jwk.group(1))))).encode())
        if path == "/oauth2/v3/certs":
            return Answer(200, json.dumps(emulator.jwks(emulator._google_key)).encode())
        return Answer(404, _NOT_FOUND)

    def _post(self, request: Request, path: str) -> Answer | Awaitable[Answer]:
        emulator = self.emulator
        iam = _IAM_PATH.match(path)
        service = "sts" if path == "/v1/token" else "iam" if iam else None
        if service is None:
            return Answer(404, _NOT_FOUND)
        emulator.requests[service] += 1
        # A call takes the injected latency, counted from the request's arrival, as if Google
        # answered in exactly that time: the emulator's own work happens within it.
        due = request.received + emulator.latency.get(service, 0.0)
        fault = self._fault(service, due)
        if fault is not None:
            return fault
        if service == "sts":  # may fetch the issuer's keys over the network: off the loop
            return self.loop.run_in_executor(None, self._timed, service, request, due,
                                             lambda: emulator.sts_token(_form(request)))
        return self._timed(service, request, due, lambda: emulator.iam_call(
            unquote(iam.group(1)), iam.group(2), request.headers.get("authorization"), _json_body(request.body)))

    def _timed(self, service: str, request: Request, due: float, work: Callable[[], dict[str, Any]]) -> Answer:
        try:
            status, document = 200, work()
        except ApiError as error:
            status, document = error.status, error.body
        self.emulator.record_service_time(service, time.monotonic() - request.received)
        return Answer(status, json.dumps(document).encode(), at=due)

    def _fault(self, service: str, due: float) -> Answer | None:
        fault = self.emulator.next_fault(service)
        if fault is None:
            return None
        if fault == "reset":
            return Answer(None, at=due)
        if fault == "garbage":
            return Answer(200, b"{not json", at=due)
        if isinstance(fault, str) and fault.startswith("hang:"):
            return Answer(None, at=due + float(fault[5:]))
        status = int(fault)
        body = {"error": {"code": status, "message": "Injected failure.", "status": "UNAVAILABLE"}}
        return Answer(status, json.dumps(body).encode(), at=due)


def _json_body(body: bytes) -> dict[str, Any]:
    try:
        return json.loads(body or b"{}")
    except ValueError:
        raise google_error(400, "INVALID_ARGUMENT", "Invalid JSON payload received.") from None


def _form(request: Request) -> dict[str, str]:
    if "json" in request.headers.get("content-type", ""):
        try:
            document = json.loads(request.body)
        except ValueError:
            raise oauth_error("invalid_request", "Invalid JSON payload received.") from None
        # The REST discovery document names fields in camelCase.
        return {re.sub(r"([A-Z])", lambda m: "_" + m.group(1).lower(), key): str(value)
                for key, value in document.items()}
    if request.headers.get("authorization"):
        raise oauth_error("invalid_request", "Do not send an Authorization header to the token endpoint.")
    return {key: values[0] for key, values in
            parse_qs(request.body.decode(errors="replace"), keep_blank_values=True).items()}


def serve(emulator: GoogleEmulator, port: int = 0) -> EmulatorServer:
    """Start on 127.0.0.1 in a background thread; ``server.server_address[1]`` is the port."""
    server = EmulatorServer(("127.0.0.1", port), emulator)
    threading.Thread(target=server.serve_forever, name="google-emulator", daemon=True).start()
    return server


def local_emulator(*, issuer: str, project_number: str, pool_id: str, provider_id: str, ca_file: str | None,
                   runtime_service_account: str, workload_service_account: str) -> GoogleEmulator:
    """The emulator `make run` starts: the predecessor's attribute mapping, a runtime service account
    that may sign as itself, and one workload service account any client of the pool may impersonate."""
    provider = Provider(
        project_number, pool_id, provider_id, issuer,
        attribute_mapping={
            "google.subject": "assertion.client_id",
            "attribute.client_x5_spiffe": "assertion.client.x5_spiffe",
            "attribute.client_x5_dnssan": "assertion.client.x5_dnssan",
            "attribute.client_x5_urisan": "assertion.client.x5_urisan",
            "attribute.client_x5_sha256": "assertion.client.x5_sha256",
            "attribute.client_x5_serial": "assertion.client.x5_serial",
        },
    )
    pool_members = f"principalSet://iam.googleapis.com/{provider.pool_name}/*"
    return GoogleEmulator(
        providers=[provider],
        bindings={
            runtime_service_account: [(TOKEN_CREATOR, f"serviceAccount:{runtime_service_account}")],
            workload_service_account: [(WORKLOAD_IDENTITY_USER, pool_members)],
        },
        runtime_service_account=runtime_service_account,
        ca_file=ca_file,
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m devtools.google_emulator", description=__doc__.split("\n")[0])
    parser.add_argument("--port", type=int, default=8090)
    parser.add_argument("--issuer", default="https://127.0.0.1:8443")
    parser.add_argument("--ca", default=".local/pki/ca.pem", help="CA that signs the issuer's TLS certificate")
    args = parser.parse_args(argv)
    emulator = local_emulator(
        issuer=args.issuer, project_number="123456789012", pool_id="local-pool", provider_id="token-service",
        ca_file=args.ca, runtime_service_account="token-service@local-project.iam.gserviceaccount.com",
        workload_service_account="workload@local-project.iam.gserviceaccount.com",
    )
    server = EmulatorServer(("127.0.0.1", args.port), emulator)
    print(f"Google emulator on http://127.0.0.1:{args.port}", file=sys.stderr, flush=True)
    with contextlib.suppress(KeyboardInterrupt):
        server.serve_forever()
    return 0


if __name__ == "__main__":
    sys.exit(main())
