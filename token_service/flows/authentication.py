"""Who is the client? Pick the flow the request uses and run it.

``client_credentials`` with a client secret (Basic header or body) is the
``client-secret`` flow, without one the ``xlb-mtls-client-credentials`` flow;
the jwt-bearer grant type is the ``jwt-bearer`` flow. Each flow's result
becomes one ``AuthenticatedClient``: its id, the facts the policy matches on,
the claims that record the proof, and how long the proof stays valid.
"""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING, Any, NamedTuple

from token_service.errors import OAuthError, Reason, invalid_client, invalid_request, unsupported_grant_type
from token_service.flows import CLIENT_SECRET_FLOW, FLOW_METADATA, JWT_BEARER_FLOW, XLB_MTLS_FLOW
from token_service.flows import rfc8705_mtls as mtls
from token_service.flows.proof_claims import assertion_proof, certificate_proof, secret_proof
from token_service.flows.rfc6749_client_secret import SecretAuthenticator
from token_service.flows.subjects import secret_subject
from token_service.policy import ClientFacts
from token_service.request import ClientCredentials, MtlsHeaderNames, TokenRequest

if TYPE_CHECKING:  # PyJWT loads only where the jwt-bearer flow is enabled
    from token_service.flows.rfc7523_jwt_bearer import AssertionVerifier, VerifiedAssertion

class AuthenticatedClient(NamedTuple):
    client_id: str
    flow: str
    facts: ClientFacts
    proof_claims: dict[str, Any]
    valid_until: int | None  # the proof's own expiry; no token outlives it
    labels: dict[str, str]
    assertion: VerifiedAssertion | None = None  # a jwt-bearer proof, to spend once the policy granted it


def certificate_client(certificate: mtls.ClientCertificate) -> AuthenticatedClient:
    """The client a (verified) certificate proves; also what `simulate` shows."""
    facts = ClientFacts(flow=XLB_MTLS_FLOW, spiffe_id=certificate.spiffe_id, dns_sans=certificate.dns_sans,
                        uri_sans=certificate.uri_sans, sha256=certificate.sha256_fingerprint)
    not_after = int(certificate.not_after.timestamp()) if certificate.not_after else None
    return AuthenticatedClient(certificate.client_id, XLB_MTLS_FLOW, facts, certificate_proof(certificate),
                               not_after, {"client_id": certificate.client_id})


def assertion_client(verified: VerifiedAssertion) -> AuthenticatedClient:
    """The client a (verified) assertion proves; also what `simulate` shows."""
    facts = ClientFacts(flow=JWT_BEARER_FLOW, issuer_name=verified.issuer.name, subject=verified.subject,
                        audiences=verified.audiences, claims=verified.claims)
    labels = {"client_id": verified.client_id, "assertion_issuer": verified.issuer.name,
              "assertion_iss": verified.issuer.issuer[:200],
              "assertion_sub": verified.subject[:256], "assertion_jti": str(verified.claims.get("jti", ""))[:128]}
    return AuthenticatedClient(verified.client_id, JWT_BEARER_FLOW, facts,
                               assertion_proof(verified.issuer.name, verified.claims),
                               int(verified.claims["exp"]) if "exp" in verified.claims else None, labels, verified)


def secret_client(client_id: str, method: str) -> AuthenticatedClient:
    subject = secret_subject(client_id)
    facts = ClientFacts(flow=CLIENT_SECRET_FLOW, secret_client_id=client_id)
    return AuthenticatedClient(subject, CLIENT_SECRET_FLOW, facts, secret_proof(), None,
                               {"client_id": subject, "auth_method": method})


class Authenticator:
    def __init__(
        self,
        flows: frozenset[str],
        header_names: MtlsHeaderNames,
        assertions: AssertionVerifier | None = None,
        secrets: SecretAuthenticator | None = None,
    ):
        self._flows = flows
        self._names = header_names
        self._assertions = assertions
        self._secrets = secrets

    def flow_for(self, request: TokenRequest) -> str:
        grant_type = request.grant_type
        if not grant_type:
            raise invalid_request("The grant_type parameter is required (e.g. grant_type=client_credentials)")
        candidates = [flow for flow in sorted(self._flows) if FLOW_METADATA[flow][0] == grant_type]
        if not candidates:
            known = {grant for grant, _ in FLOW_METADATA.values()}
            enabled = ", ".join(sorted({FLOW_METADATA[flow][0] for flow in self._flows}))
            raise unsupported_grant_type(
                f"The grant type {grant_type[:64]!r} is not enabled here; enabled: {enabled}",
                Reason.FLOW_DISABLED if grant_type in known else Reason.UNSUPPORTED_GRANT_TYPE,
            )
        if grant_type != "client_credentials":
            return candidates[0]
        with_secret = _credentials(request) is not None
        wanted = CLIENT_SECRET_FLOW if with_secret else XLB_MTLS_FLOW
        if wanted not in candidates:
            raise invalid_client(
                "Client secrets are not accepted here; authenticate with a client certificate" if with_secret
                else "A client secret is required here (client_secret_basic or client_secret_post)",
                Reason.FLOW_DISABLED,
            )
        return wanted

    def authenticate(self, flow: str, request: TokenRequest, now: datetime) -> AuthenticatedClient:
        if flow == XLB_MTLS_FLOW:
            return certificate_client(mtls.authenticate(request.certificate, self._names, now))
        if flow == JWT_BEARER_FLOW:
            assert self._assertions is not None
            return assertion_client(self._assertions.verify(request.parameters.get("assertion", "")))
        return self._secret(request)

    def record_use(self, client: AuthenticatedClient) -> None:
        """Spend the client's single-use assertion: call once the policy granted the request, so a denied
        request leaves its jti unused (raises ``OAuthError`` for a replay)."""
        if client.assertion is not None and self._assertions is not None:
            self._assertions.record_use(client.assertion)

    def _secret(self, request: TokenRequest) -> AuthenticatedClient:
        assert self._secrets is not None
        credentials = _credentials(request)
        if credentials is None:  # flow_for only picks this flow when a secret was presented
            raise OAuthError(401, "invalid_client", "A client secret is required", Reason.INVALID_CLIENT_SECRET)
        # The failure limit keys on the address the load balancer saw (client_address.client_ip).
        return secret_client(self._secrets.authenticate(credentials, request.http.remote_ip), credentials.method)


def _credentials(request: TokenRequest) -> ClientCredentials | None:
    """The presented client secret; a malformed presentation is refused here, once a flow is chosen."""
    if isinstance(request.credentials, OAuthError):
        raise request.credentials
    return request.credentials
