"""Parsing the token endpoint's form body (RFC 6749 sections 3.2 and 4.4).

Input is the raw body and content type; output is a ``TokenRequest`` of plain
strings, or an ``OAuthError`` naming what is wrong with the request.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import NamedTuple
from urllib.parse import parse_qsl

from token_service.errors import Reason, invalid_request
from token_service.responses import EXTERNAL_CREDENTIAL_FORMAT, OAUTH_FORMAT, RESPONSE_FORMATS

FORM_CONTENT_TYPE = "application/x-www-form-urlencoded"
MAX_BODY_BYTES = 16 * 1024
MAX_PARAMETERS = 32
# Room for every load-balancer header at its largest (leaf and chain up to 16 KB of DER each,
# base64-encoded); gunicorn's former 8190 bytes per header cut long chains off.
MAX_HEADER_BYTES = 64 * 1024
MAX_HEADERS = 100
_CONTROL_CHARACTER = re.compile(r"[\x00-\x1f\x7f]")


class TokenRequest(NamedTuple):
    grant_type: str
    response_format: str
    parameters: dict[str, str]


def parse_token_request(body: bytes, content_type: str | None) -> TokenRequest:
    """Parse the form; the grant type may still be empty (the caller refuses it in the
    requested response format, which is known only once the form is parsed)."""
    parameters = parse_form(body, content_type)
    return TokenRequest(parameters.get("grant_type", ""), response_format(parameters), parameters)


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
