"""Google's rules for a backend service's custom request and response headers.

From "Create custom headers in backend services" (global external Application
Load Balancer): each entry is ``Name:value``; the name is an RFC 7230 token, not
a reserved or hop-by-hop header and not under Google's prefixes; the value is a
visible-character field value whose ``{variables}`` must be ones the load
balancer knows (``{{`` and ``}}`` are literal braces); at most 16 per list.
"""

from __future__ import annotations

import re
from typing import Any

from devtools.control_plane.server import invalid

MAX_HEADERS = 16
_TOKEN = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
_VALUE = re.compile(r"[\t\x20-\x7e\x80-\xff]*")
_RESERVED = frozenset({"x-user-ip", "cdn-loop", "host", "authority", "content-length", "keep-alive",
                       "transfer-encoding", "te", "connection", "trailer", "upgrade", "proxy-authorization",
                       "proxy-authenticate"})
_RESERVED_PREFIXES = ("x-google", "x-goog-", "x-gfe", "x-amz-")
VARIABLES = frozenset({
    "client_rtt_msec", "client_region", "client_region_subdivision", "client_city", "client_city_lat_long",
    "client_ip_address", "client_port", "client_encrypted", "client_protocol", "client_asn", "server_ip",
    "server_port", "device_request_type", "user_agent_family", "origin_request_header", "cdn_cache_id",
    "cdn_cache_status", "tls_sni_hostname", "tls_version", "tls_cipher_suite", "tls_ja3_fingerprint",
    "tls_ja4_fingerprint",
    "client_cert_present", "client_cert_chain_verified", "client_cert_error", "client_cert_sha256_fingerprint",
    "client_cert_serial_number", "client_cert_spiffe_id", "client_cert_uri_sans", "client_cert_dnsname_sans",
    "client_cert_valid_not_before", "client_cert_valid_not_after", "client_cert_issuer_dn",
    "client_cert_subject_dn", "client_cert_leaf", "client_cert_chain",
})


def check(headers: Any, field: str) -> None:
    """Refuse a custom header list the way Compute does (``field``: e.g. ``resource.customRequestHeaders``)."""
    if headers is None:
        return
    if not isinstance(headers, list) or not all(isinstance(header, str) for header in headers):
        raise invalid(f"Invalid value for field '{field}': '{headers}'. Expected a list of strings.")
    if len(headers) > MAX_HEADERS:
        raise invalid(f"Invalid value for field '{field}': {len(headers)} headers. At most {MAX_HEADERS} custom "
                      "headers are allowed.")
    seen: set[str] = set()
    for index, header in enumerate(headers):
        entry = f"{field}[{index}]"
        name, colon, value = header.partition(":")
        if not colon:
            raise invalid(f"Invalid value for field '{entry}': '{header}'. A custom header must be of the form "
                          "'name:value'.")
        _check_name(name, header, entry)
        if name.lower() in seen:
            raise invalid(f"Invalid value for field '{entry}': '{header}'. Header '{name}' is specified more than "
                          "once.")
        seen.add(name.lower())
        _check_value(value, header, entry)


def _check_name(name: str, header: str, entry: str) -> None:
    if not _TOKEN.fullmatch(name):
        raise invalid(f"Invalid value for field '{entry}': '{header}'. The header name is not a valid HTTP header "
                      "field name.")
    lowered = name.lower()
    if lowered in _RESERVED or lowered.startswith(_RESERVED_PREFIXES):
        raise invalid(f"Invalid value for field '{entry}': '{header}'. The header name '{name}' is reserved and "
                      "cannot be used in a custom header.")


def _check_value(value: str, header: str, entry: str) -> None:
    if not _VALUE.fullmatch(value):
        raise invalid(f"Invalid value for field '{entry}': '{header}'. The header value is not a valid HTTP header "
                      "field value.")
    text = value.replace("{{", "").replace("}}", "")
    for match in re.finditer(r"\{([^{}]*)\}", text):
        if match.group(1) not in VARIABLES:
            raise invalid(f"Invalid value for field '{entry}': '{header}'. Unknown variable '{{{match.group(1)}}}' "
                          "in the header value.")
    if "{" in re.sub(r"\{[^{}]*\}", "", text) or "}" in re.sub(r"\{[^{}]*\}", "", text):
        raise invalid(f"Invalid value for field '{entry}': '{header}'. Unbalanced '{{' or '}}' in the header value; "
                      "write '{{' or '}}' for a literal brace.")
