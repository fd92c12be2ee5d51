"""The token service: one object built at cold start, holding what requests share.

``TokenService.token`` runs one token request from plain values to a plain
result: request form -> flow -> claims -> signer -> response body, and always
one audit line, whatever the outcome.
"""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any, NamedTuple

from token_service.audit import AttemptFacts, AuditRecord, AuditWriter, token_attempt
from token_service.config import Settings
from token_service.errors import (
    OAuthError,
    Reason,
    SigningError,
    UpstreamUnavailable,
    invalid_client,
    invalid_grant,
    invalid_request,
    server_error,
    upstream_unavailable,
)
from token_service.flows import JWT_BEARER_FLOW
from token_service.flows.authentication import AuthenticatedClient, Authenticator
from token_service.google.exchange import ExchangeRequest, GoogleExchange, parse_exchange_request
from token_service.google.token_cache import TokenCache, exchange_key, fingerprint
from token_service.issuing.claims import IdTokenClaims, id_token_claims
from token_service.issuing.discovery import discovery_document
from token_service.issuing.responses import IssuedTokens, error_body, success_body
from token_service.issuing.signers import Signer
from token_service.policy import OPEN_GRANT, Grant, Policy
from token_service.request import (
    EXTERNAL_CREDENTIAL_FORMAT,
    OAUTH_FORMAT,
    CertificateHeaders,
    HttpRequestInfo,
    TokenRequest,
    Trace,
)

_log = logging.getLogger(__name__)
ID_TOKEN_REUSE_SECONDS = 60  # a cached ID token is served again only while it has this long left
# RFC 6749 5.1: token responses must not be cached.
NO_STORE = (("Cache-Control", "no-store"), ("Pragma", "no-cache"))


class TokenResult(NamedTuple):
    status: int
    body: dict[str, Any]
    headers: tuple[tuple[str, str], ...] = NO_STORE


@dataclass
class GoogleCall:
    """The seconds a request waited on Google's exchange, if it made one; set even when the call failed,
    which is why it is filled in rather than returned."""

    seconds: float | None = None


class TokenOutcome(NamedTuple):
    result: TokenResult
    audit: AuditRecord  # the attempt's one line, for the edge to write


class TokenService:
    def __init__(
        self,
        settings: Settings,
        signer: Signer,
        audit: AuditWriter,
        exchange: GoogleExchange | None = None,
        clock: Callable[[], float] = time.time,
        policy: Policy | None = None,
        authenticator: Authenticator | None = None,
        cache: TokenCache[IssuedTokens] | None = None,
    ):
        self.settings = settings
        self.signer = signer
        self.audit = audit  # the edge writes each outcome's record
        self._exchange = exchange
        self._clock = clock
        self._policy = policy
        self._policy_fingerprint = fingerprint(policy) if policy is not None else "open"
        self._cache = cache
        self._authenticator = authenticator or Authenticator(settings.auth_flows, settings.mtls_headers)
        self._names = settings.mtls_headers
        self.discovery = discovery_document(
            issuer=settings.issuer,
            jwks_uri=signer.jwks_uri(settings.issuer),
            algorithm=signer.algorithm,
            enabled_flows=settings.auth_flows,
        )
        self.jwks = signer.public_jwks()

    def token(self, request: TokenRequest) -> TokenOutcome:
        """Answer one POST /token; the outcome holds the response and the attempt's audit record."""
        started = time.monotonic()
        facts = AttemptFacts()
        error = request.refusal
        issued: IssuedTokens | None = None
        try:
            if error is None:
                facts = facts._replace(grant_type=request.grant_type[:64], response_format=request.response_format)
                flow = self._authenticator.flow_for(request)
                facts = facts._replace(flow=flow)
                wanted = self._exchange_request(request.parameters, request.response_format)
                now = self._clock()
                client = self._authenticator.authenticate(flow, request, _utc(now))
                facts = facts._replace(client_labels=client.labels)
                grant = self._grant(client, wanted)
                facts = facts._replace(policy_rule=grant.rule if self._policy is not None else None)
                self._authenticator.record_use(client)
                claims = issued_claims(self.settings, client, grant, now)
                if not wanted.wanted:
                    issued = self._sign(claims)
                    facts = facts._replace(jti=issued.jti, message=f"Issued ID token for client '{client.client_id}'")
                else:
                    call = GoogleCall()
                    try:
                        issued, hit = self._exchanged(claims, client, grant, wanted, request.response_format, call)
                    finally:  # the log-based metric of upstream latency reads this; a refusal Google gave is a miss
                        made = call.seconds is not None
                        facts = facts._replace(upstream_seconds=call.seconds, exchange={
                            "cache": "miss"} if made and self._cache is not None else {})
                    facts = _exchange_facts(facts, issued, hit, client.client_id)
        except OAuthError as refusal:
            error = refusal
        except Exception:
            # Unexpected: the client learns nothing internal, the log gets the traceback.
            _log.exception("token request failed unexpectedly")
            error = server_error("The token service failed unexpectedly; see its logs")
        response_format = facts.response_format or OAUTH_FORMAT
        if error is not None or issued is None:
            error = error or server_error("The token service failed unexpectedly; see its logs")
            result = TokenResult(error.status, error_body(error, response_format), NO_STORE + error.headers)
            facts = facts._replace(message=f"Refused token request: {error.description}")
        else:
            result = TokenResult(200, success_body(issued, response_format))
        record = token_attempt(facts, header_labels=request.certificate.labels(self._names), error=error,
                               trace=request.trace, http_request=request.http,
                               latency_seconds=time.monotonic() - started)
        return TokenOutcome(result, record)

    def refused_at_edge(self, error: OAuthError, *, token_endpoint: bool, certificate: CertificateHeaders,
                        trace: Trace | None, http_request: HttpRequestInfo) -> TokenOutcome:
        """The answer and audit record of a request refused before it reached its endpoint (any path).

        The line records the mTLS headers, which show what a caller that bypassed the load balancer
        tried to forge."""
        what = "token request" if token_endpoint else "request"
        record = token_attempt(
            AttemptFacts(message=f"Refused {what}: {error.description}"),
            header_labels=certificate.labels(self._names), error=error, trace=trace, http_request=http_request,
            latency_seconds=0.0,  # refused before any work that takes time
            event="token" if token_endpoint else "request",
        )
        return TokenOutcome(TokenResult(error.status, error_body(error, OAUTH_FORMAT), NO_STORE + error.headers),
                            record)

    def _exchange_request(self, parameters: dict[str, str], response_format: str) -> ExchangeRequest:
        wanted = parse_exchange_request(parameters)
        if wanted.wanted and response_format == EXTERNAL_CREDENTIAL_FORMAT:
            raise invalid_request(
                "format=external_credential returns the ID token to a Google client library, which "
                "exchanges it itself: omit scope, service_account and audience"
            )
        if wanted.wanted and self._exchange is None:
            raise invalid_request("This deployment does not exchange tokens with Google")
        return wanted

    def _grant(self, client: AuthenticatedClient, wanted: ExchangeRequest) -> Grant:
        if self._policy is None:
            return OPEN_GRANT
        return self._policy.decide(client.facts, wanted.scopes, wanted.service_account, wanted.audience)

    def _exchanged(self, claims: IdTokenClaims, client: AuthenticatedClient, grant: Grant, wanted: ExchangeRequest,
                   response_format: str, call: GoogleCall) -> tuple[IssuedTokens, bool | None]:
        """The ID token and Google's token, from the cache (hit: True) or signed and exchanged now (False;
        None: no cache). ``call`` gets the seconds of the Google call this request made."""
        exchange = self._exchange
        assert exchange is not None  # _exchange_request refuses an exchange without one

        def load() -> tuple[IssuedTokens, float]:
            issued = self._sign(claims)
            started = time.monotonic()
            try:
                exchanged = exchange.exchange(wanted, issued.id_token, client.client_id)
            finally:
                call.seconds = round(time.monotonic() - started, 6)
            return issued._replace(exchanged=exchanged), self._clock() + exchanged.expires_in

        if self._cache is None:
            return load()[0], None
        key = exchange_key(claims=claims.payload, policy_rule=grant.rule if self._policy is not None else None,
                           policy_fingerprint=self._policy_fingerprint, request=wanted,
                           response_format=response_format)
        cached = self._cache.fetch(key, load, client.valid_until)
        issued, exchanged = cached.value, cached.value.exchanged
        if not cached.hit or exchanged is None:
            return issued, False
        now = self._clock()
        if not now + ID_TOKEN_REUSE_SECONDS <= issued.id_token_expires_at <= claims.expires_at:
            # Near its end (or it would outlive this request's proof): sign a fresh one, kept for the hits
            # that follow (with the IAM signer, one signJwt per ID-token lifetime, not per request).
            issued = self._sign(claims)._replace(exchanged=exchanged)
            self._cache.replace(key, issued)
        # What Google's token has left, not what it had when Google issued it.
        return issued._replace(exchanged=exchanged._replace(expires_in=max(0, int(cached.expires_at - now)))), True

    def _sign(self, claims: IdTokenClaims) -> IssuedTokens:
        try:
            id_token = self.signer.sign(claims.payload)
        except SigningError as failure:
            # The cause is the operators' business (audit line); the client learns only that it failed.
            raise replace(server_error(
                "The token service could not sign the ID token; its operators find the cause in the audit log",
                Reason.SIGNING_FAILED,
            ), audit_labels=(("signing_error", str(failure)[:500]),)) from None
        except UpstreamUnavailable as failure:
            raise upstream_unavailable(failure) from None
        return IssuedTokens(id_token=id_token, id_token_expires_at=claims.expires_at, jti=claims.jti)


def _exchange_facts(facts: AttemptFacts, issued: IssuedTokens, hit: bool | None, client_id: str) -> AttemptFacts:
    exchanged = issued.exchanged
    assert exchanged is not None
    labels = {**exchanged.audit, **({} if hit is None else {"cache": "hit" if hit else "miss"})}
    message = (f"Served client '{client_id}' {exchanged.summary} from the cache" if hit
               else f"Issued ID token for client '{client_id}' and {exchanged.summary}")
    return facts._replace(jti=issued.jti, exchange=labels, message=message)


def issued_claims(settings: Settings, client: AuthenticatedClient, grant: Grant, now: float) -> IdTokenClaims:
    """The claims of the ID token ``client`` gets under ``grant`` (also what ``simulate`` shows)."""
    lifetime = min(settings.token_validity_seconds, grant.max_token_lifetime or sys.maxsize)
    expires_at = int(now) + lifetime
    if client.valid_until is not None:  # never outlive the certificate or assertion that earned it
        expires_at = min(expires_at, client.valid_until)
    if expires_at <= int(now):  # the flows refuse such proofs; never sign a token born expired anyway
        if client.flow == JWT_BEARER_FLOW:
            raise invalid_grant("The assertion has expired", Reason.INVALID_ASSERTION)
        raise invalid_client("The client certificate has expired", Reason.CERTIFICATE_EXPIRED)
    return id_token_claims(
        issuer=settings.issuer,
        audience=settings.provider.token_audience,
        flow=client.flow,
        client_id=client.client_id,
        issued_at=int(now),
        expires_at=expires_at,
        proof_claims=client.proof_claims,
        extra_claims=grant.extra_claims,
    )


def _utc(timestamp: float) -> datetime:
    return datetime.fromtimestamp(timestamp, tz=UTC)
