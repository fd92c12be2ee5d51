"""The token endpoint's request, parsed once at the edge (RFC 6749 sections 2.3.1, 3.2 and 4.4).

``read_token_request`` turns the HTTP request into a ``TokenRequest``: the form,
the client credentials, the load balancer's certificate headers, the trace
context and what the audit line records of the request. Nothing below the edge
reads HTTP. A request that cannot be answered carries its refusal as data, so
the attempt is still answered in the asked-for format and audited.
"""

from __future__ import annotations

import base64
import re
from collections.abc import Mapping
from typing import NamedTuple
from urllib.parse import parse_qsl, unquote_plus

from token_service.errors import OAuthError, Reason, invalid_request
from token_service.flows.rfc6749_client_secret import invalid_client_secret
from token_service.request import (
    EXTERNAL_CREDENTIAL_FORMAT,
    OAUTH_FORMAT,
    RESPONSE_FORMATS,
    CertificateHeaders,
    ClientCredentials,
    HttpRequestInfo,
    MtlsHeaderNames,
    TokenRequest,
    Trace,
)

FORM_CONTENT_TYPE = "application/x-www-form-urlencoded"
MAX_BODY_BYTES = 16 * 1024
MAX_PARAMETERS = 32
# Room for every load-balancer header at its largest (leaf and chain up to 16 KB of DER each,
# base64-encoded); gunicorn's former 8190 bytes per header cut long chains off.
MAX_HEADER_BYTES = 64 * 1024
MAX_HEADERS = 100
# The parameters of a request that answers from memory (see may_wait); RFC 8705 lets a certificate
# client send its client_id.
IN_MEMORY_PARAMETERS = frozenset({"grant_type", "client_id", "format"})
_CONTROL_CHARACTER = re.compile(r"[\x00-\x1f\x7f]")
_TRACEPARENT = re.compile(r"^[0-9a-f]{2}-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})$")
_CLOUD_TRACE = re.compile(r"^([0-9a-fA-F]{32})(?:/([0-9]{1,20}))?(?:;o=([01]))?$")
_LARGEST_SPAN = 2**64 - 1


class TokenForm(NamedTuple):
    grant_type: str
    response_format: str
    parameters: dict[str, str]


def read_token_request(headers: Mapping[str, str], body: bytes, names: MtlsHeaderNames,
                       http: HttpRequestInfo) -> TokenRequest:
    """``headers`` maps lower-cased names to values (a repeated header's values joined by commas)."""
    request = TokenRequest(CertificateHeaders.read(headers, names), http, parse_trace(headers))
    try:
        check_headers(headers)
        form = parse_token_request(body, headers.get("content-type"))
    except OAuthError as refusal:
        return request._replace(refusal=refusal)
    try:
        credentials: ClientCredentials | OAuthError | None = presented_credentials(headers, form.parameters)
    except OAuthError as refusal:
        credentials = refusal
    return request._replace(grant_type=form.grant_type, response_format=form.response_format,
                            parameters=form.parameters, credentials=credentials)


def may_wait(request: TokenRequest, signs_in_process: bool) -> bool:
    """Whether answering may wait on the network (Google, an issuer's keys) or on deliberately slow
    hashing (client secrets); the edge gives such requests a thread. Only a refusal, or an ID token
    for a certificate signed in this process, answers from memory: its form has no parameter beyond
    ``IN_MEMORY_PARAMETERS``; a client secret or assertion, or an exchange's ``scope``,
    ``service_account`` or ``audience``, may wait."""
    if request.refusal is not None:
        return False
    if not signs_in_process or request.credentials is not None:
        return True
    return any(name not in IN_MEMORY_PARAMETERS for name in request.parameters)


def parse_token_request(body: bytes, content_type: str | None) -> TokenForm:
    """Parse the form; the grant type may still be empty (the caller refuses it in the
    requested response format, which is known only once the form is parsed)."""
    parameters = parse_form(body, content_type)
    return TokenForm(parameters.get("grant_type", ""), response_format(parameters), parameters)


def presented_credentials(headers: Mapping[str, str], parameters: Mapping[str, str]) -> ClientCredentials | None:
    """The client id and secret, if the request carries them (in exactly one place)."""
    authorization = headers.get("authorization", "")
    in_header = authorization[:6].lower() == "basic "
    in_body = "client_secret" in parameters
    if in_header and in_body:
        raise invalid_request("Send the client secret in the Authorization header or the body, not both")
    if in_body:
        return ClientCredentials(parameters.get("client_id", ""), parameters["client_secret"], "client_secret_post")
    if not in_header:
        return None
    try:
        decoded = base64.b64decode(authorization[6:].strip(), validate=True).decode("utf-8")
        client_id, secret = decoded.split(":", 1)
    except ValueError:  # binascii.Error, UnicodeDecodeError, or no colon
        raise invalid_client_secret("The Basic Authorization header is malformed", basic=True) from None
    # RFC 6749 2.3.1: both parts are form-urlencoded before the Basic encoding.
    return ClientCredentials(unquote_plus(client_id), unquote_plus(secret), "client_secret_basic")


def parse_trace(headers: Mapping[str, str]) -> Trace | None:
    """Trace context from W3C ``traceparent``, else ``X-Cloud-Trace-Context``."""
    match = _TRACEPARENT.match(headers.get("traceparent", "").strip())
    if match:
        return Trace(match.group(1), match.group(2), int(match.group(3), 16) & 1 == 1)
    match = _CLOUD_TRACE.match(headers.get("x-cloud-trace-context", "").strip())
    if match:
        return Trace(match.group(1).lower(), _span_id(match.group(2)), match.group(3) == "1")
    return None


def _span_id(decimal: str | None) -> str | None:
    """X-Cloud-Trace-Context's decimal span as the LogEntry's 16 hex digits; 20 decimal digits reach
    past 2^64, which has no such form and would make a 17-digit spanId: such a span is dropped."""
    if not decimal or int(decimal) > _LARGEST_SPAN:
        return None
    return f"{int(decimal):016x}"


def check_headers(headers: Mapping[str, str]) -> None:
    """Refuse header sets no load balancer sends: too many, or too large in all."""
    size = sum(map(len, headers)) + sum(map(len, headers.values()))
    if len(headers) > MAX_HEADERS or size > MAX_HEADER_BYTES:
        raise invalid_request(
            f"The request carries {len(headers)} headers of {size} bytes; the limits are {MAX_HEADERS} "
            f"headers and {MAX_HEADER_BYTES} bytes", Reason.HEADERS_TOO_LARGE,
        )


def response_format(parameters: dict[str, str]) -> str:
    """The requested response format; an unknown one is an error, not a silent default."""
    requested = parameters.get("format") or OAUTH_FORMAT
    if requested not in RESPONSE_FORMATS:
        raise invalid_request(
            f"Unknown format {requested[:40]!r}; use format={EXTERNAL_CREDENTIAL_FORMAT} or omit it"
        )
    return requested


def parse_form(body: bytes, content_type: str | None) -> dict[str, str]:
    media_type = (content_type or "").split(";", 1)[0].strip().lower()
    if media_type != FORM_CONTENT_TYPE:
        raise invalid_request(
            f"The token endpoint accepts {FORM_CONTENT_TYPE} bodies, not {media_type or 'no content type'}"
        )
    if len(body) > MAX_BODY_BYTES:
        raise invalid_request(
            f"The request body exceeds {MAX_BODY_BYTES} bytes", Reason.BODY_TOO_LARGE
        )
    # Counted here rather than by parse_qsl's max_num_fields, whose ValueError reads like a broken
    # encoding. Strict parsing refuses empty fields, so each '&' separates two parameters.
    count = body.count(b"&") + 1
    if count > MAX_PARAMETERS:
        raise invalid_request(f"The request body has {count} parameters; the limit is {MAX_PARAMETERS}")
    try:
        text = body.decode("utf-8")
        pairs = parse_qsl(text, keep_blank_values=True, strict_parsing=bool(text), encoding="utf-8", errors="strict")
    except (UnicodeDecodeError, ValueError):
        raise invalid_request("The request body is not a valid UTF-8 form encoding") from None
    parameters: dict[str, str] = {}
    for name, value in pairs:
        if name in parameters:
            # RFC 6749 3.2: parameters MUST NOT be included more than once.
            raise invalid_request(f"The parameter {name[:40]!r} appears more than once")
        if _CONTROL_CHARACTER.search(name) or _CONTROL_CHARACTER.search(value):
            raise invalid_request(f"The parameter {name[:40]!r} contains control characters")
        parameters[name] = value
    return parameters
