"""The service built from configuration: the one place where the stages are wired together.

Configuration is read and checked first (``ConfigurationError``: fail closed), then each stage is
built from its settings: the upstream client and signer, Google's exchange, the audit writer, the
policy, the stores a flow remembers with, the flows, and the cache of Google's tokens.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import IO

from token_service.audit import audit_writer
from token_service.config import load_settings
from token_service.flows import CLIENT_SECRET_FLOW, JWT_BEARER_FLOW
from token_service.flows.authentication import Authenticator
from token_service.flows.rfc6749_client_secret import SecretAuthenticator
from token_service.google.exchange import SLOT_WAIT_SECONDS, GoogleExchange
from token_service.google.iam_credentials import IamCredentialsClient
from token_service.google.sts import StsClient
from token_service.google.token_cache import TokenCache
from token_service.google.transport import RetryPolicy, UpstreamClient
from token_service.issuing.responses import IssuedTokens
from token_service.issuing.signers import load_signer
from token_service.policy import load_policy
from token_service.service import TokenService
from token_service.state.stores import build_stores


def service_from_environment(environ: Mapping[str, str], audit_stream: IO[str] | None = None) -> TokenService:
    """Build the service from configuration; raises ``ConfigurationError`` (fail closed).

    Audit lines go to ``audit_stream`` (the deployed function's is ``log_pipe.BatchedLines``),
    or to standard output."""
    settings = load_settings(environ)
    google = settings.google
    # One kept-alive connection per thread that may wait on Google: a call beyond the pool would
    # open (on Google, a TLS handshake) and close a connection of its own.
    upstream = UpstreamClient(RetryPolicy(read_timeout=google.timeout_seconds, budget=google.retry_budget_seconds),
                              pool_size=settings.threads)
    signer = load_signer(settings.signer, settings.google, environ, upstream)
    exchange = GoogleExchange(
        settings.provider,
        StsClient(upstream, google.sts_endpoint),
        IamCredentialsClient(upstream, google.iam_credentials_endpoint),
        google.service_account_token_lifetime,
        google.max_concurrent_exchanges,
    )
    audit = audit_writer(settings.audit_log_handler, settings.project_id, audit_stream)
    policy = load_policy(settings.policy_file) if settings.policy_file else None
    # A process's requests that reach a store run on its THREADS threads: one connection each at most.
    stores = build_stores(settings.redis, settings.threads)
    assertions = None
    if policy and JWT_BEARER_FLOW in settings.auth_flows:
        from token_service.flows.issuer_keys import JwksCache
        from token_service.flows.rfc7523_jwt_bearer import AssertionVerifier

        audiences = (settings.issuer, f"{settings.issuer}/token")
        # A quarter of the threads at most wait on one issuer's keys: a hanging issuer leaves the rest to others.
        keys = JwksCache(UpstreamClient(), max_waiters=max(1, settings.threads // 4))
        assertions = AssertionVerifier(policy, audiences, keys, stores.replays)
    secrets = None
    if policy and CLIENT_SECRET_FLOW in settings.auth_flows:
        secrets = SecretAuthenticator(policy, stores.failures)
    authenticator = Authenticator(settings.auth_flows, settings.mtls_headers, assertions, secrets)
    caching = settings.token_cache  # a request waiting on another's identical exchange waits as long as it may
    cache = TokenCache[IssuedTokens](caching.margin_seconds, caching.max_entries,
                                     google.retry_budget_seconds + SLOT_WAIT_SECONDS + 1) if caching.enabled else None
    return TokenService(settings, signer, audit, exchange, policy=policy, authenticator=authenticator, cache=cache)
