"""HTTP at the edge: plain request values in, plain response values out.

``main.py`` copies the framework's request into an ``HttpRequest`` and an
``HttpResponse`` back; routing, methods and content negotiation live here, and
nothing below this module sees HTTP.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import NamedTuple

from token_service.edge.parsing import may_wait as token_may_wait
from token_service.edge.parsing import parse_trace, read_token_request
from token_service.edge.proxy_secret import ProxySecretCheck, not_through_load_balancer
from token_service.errors import Reason, temporarily_unavailable
from token_service.issuing.discovery import DISCOVERY_PATH
from token_service.request import CertificateHeaders, HttpRequestInfo, TokenRequest
from token_service.service import TokenResult, TokenService

JSON = "application/json"
JWKS_PATHS = ("/jwks", "/.well-known/jwks.json")
# Public metadata: short caching keeps key rotation visible within minutes.
PUBLIC_CACHE = ("Cache-Control", "public, max-age=300")


class HttpRequest(NamedTuple):
    method: str
    path: str
    headers: Mapping[str, str]  # lower-cased names
    body: bytes = b""
    url: str = ""
    remote_ip: str = ""  # client_address.client_ip(): what the audit line records and the secret failure limit keys on


class HttpResponse(NamedTuple):
    status: int
    headers: tuple[tuple[str, str], ...]
    body: bytes


def dispatch(service: TokenService, request: HttpRequest) -> HttpResponse:
    routed = route(service, request)
    return routed if isinstance(routed, HttpResponse) else answer_token(service, routed)


def route(service: TokenService, request: HttpRequest) -> HttpResponse | TokenRequest:
    """The answer, when it is known from memory, or the parsed token request to answer."""
    # Before anything else, on every path: a caller that bypassed the load balancer controls every
    # header, and none of them means anything until the load balancer's secret says it sent them.
    check = ProxySecretCheck(service.settings.proxy_secret)
    admitted = check.admits(request.headers)
    request = request._replace(headers=check.without_secret(request.headers))
    if not admitted:
        return _not_through_load_balancer(service, request)
    path, method = request.path, request.method.upper()
    allowed = _allowed_methods(service, path)
    if allowed is None:
        return _error(404, "invalid_request", f"No endpoint at {path[:100]!r}; see {DISCOVERY_PATH}")
    if method not in allowed:
        return _error(
            405, "invalid_request", f"{path} accepts {', '.join(allowed)}", (("Allow", ", ".join(allowed)),)
        )
    if path == "/token":
        return read_token_request(request.headers, request.body, service.settings.mtls_headers,
                                  _request_info(request, method))
    if path == "/":
        return HttpResponse(307, (("Location", service.settings.issuer + DISCOVERY_PATH),), b"")
    document = service.discovery if path == DISCOVERY_PATH else service.jwks
    assert document is not None
    return HttpResponse(200, (("Content-Type", JSON), PUBLIC_CACHE), b"" if method == "HEAD" else _json(document))


def answer_token(service: TokenService, request: TokenRequest) -> HttpResponse:
    outcome = service.token(request)
    service.audit.write(outcome.audit)
    return _json_response(outcome.result)


def answer_busy(service: TokenService, request: TokenRequest) -> HttpResponse:
    """The answer to a request that may wait when the worker already holds as many as it may
    (``admission.WaitingRequests``): 503 with Retry-After, and its audit line."""
    limit = service.settings.max_waiting_requests
    busy = temporarily_unavailable(
        f"This instance is already answering {limit} requests that wait on Google; retry after 1 s", 1,
        Reason.INSTANCE_BUSY)
    outcome = service.refused_at_edge(busy, token_endpoint=True, certificate=request.certificate,
                                      trace=request.trace, http_request=request.http)
    service.audit.write(outcome.audit)
    return _json_response(outcome.result)


def may_wait(service: TokenService, request: HttpRequest) -> bool:
    """Whether answering may wait on the network or on slow hashing (the edge gives such
    requests a thread); everything else answers from memory. Routes ``request`` to decide: the edge
    that uses this answer calls ``route`` once and ``token_request.may_wait`` itself."""
    if request.path != "/token" or request.method.upper() != "POST":
        return False
    if not ProxySecretCheck(service.settings.proxy_secret).admits(request.headers):
        return False  # refused from memory: a flood that bypasses the load balancer never takes a thread
    routed = route(service, request)
    return isinstance(routed, TokenRequest) and token_may_wait(routed, service.signer.signs_in_process)


def _not_through_load_balancer(service: TokenService, request: HttpRequest) -> HttpResponse:
    method = request.method.upper()
    outcome = service.refused_at_edge(
        not_through_load_balancer(), token_endpoint=request.path == "/token" and method == "POST",
        certificate=CertificateHeaders.read(request.headers, service.settings.mtls_headers),
        trace=parse_trace(request.headers), http_request=_request_info(request, method),
    )
    service.audit.write(outcome.audit)
    return _json_response(outcome.result)


def _json_response(result: TokenResult) -> HttpResponse:
    return HttpResponse(result.status, (("Content-Type", JSON), *result.headers), _json(result.body))


def _request_info(request: HttpRequest, method: str) -> HttpRequestInfo:
    return HttpRequestInfo(
        method=method,
        url=request.url,
        user_agent=request.headers.get("user-agent", ""),
        remote_ip=request.remote_ip,
    )


def _allowed_methods(service: TokenService, path: str) -> tuple[str, ...] | None:
    if path == "/token":
        return ("POST",)
    if path in ("/", DISCOVERY_PATH) or (path in JWKS_PATHS and service.jwks is not None):
        return ("GET", "HEAD")
    return None


def _error(
    status: int, error: str, description: str, headers: tuple[tuple[str, str], ...] = ()
) -> HttpResponse:
    body = _json({"error": error, "error_description": description})
    return HttpResponse(status, (("Content-Type", JSON), *headers), body)


def _json(document: object) -> bytes:
    return json.dumps(document, separators=(",", ":")).encode("ascii")
