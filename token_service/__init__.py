"""An OIDC token broker for Google Cloud workload identity federation.

Clients prove who they are with a certificate checked by the Google load
balancer (or a signed assertion, or a client secret); the broker issues a
short-lived ID token that Google's Security Token Service accepts, and on
request exchanges it for Google credentials. The stages, one folder each:
``edge`` (HTTP in and out), ``flows`` (who the client is), ``policy`` (what it
may have), ``issuing`` (claims, signing, responses), ``google`` (STS and IAM),
``audit`` (one line per attempt); ``service`` runs them in that order.

What the entry point and the tools use is below; everything else is internal.
"""

from token_service.assembly import service_from_environment
from token_service.audit.log_pipe import BatchedLines
from token_service.config import MTLS_HEADER_DEFAULTS, Settings, load_settings, mtls_header_names, proxy_secret_settings
from token_service.edge.admission import WaitingRequests
from token_service.edge.client_address import client_ip
from token_service.edge.dispatch import HttpRequest, HttpResponse, answer_busy, answer_token, dispatch, route
from token_service.edge.parsing import MAX_BODY_BYTES, may_wait
from token_service.errors import ConfigurationError, OAuthError, Reason, TokenServiceError
from token_service.service import TokenService

__version__ = "0.1.0"
__all__ = [
    "MAX_BODY_BYTES", "MTLS_HEADER_DEFAULTS", "BatchedLines", "ConfigurationError", "HttpRequest", "HttpResponse",
    "OAuthError", "Reason", "Settings", "TokenService", "TokenServiceError", "WaitingRequests", "answer_busy",
    "answer_token", "client_ip", "dispatch",
    "load_settings", "may_wait", "mtls_header_names", "proxy_secret_settings", "route", "service_from_environment",
]
