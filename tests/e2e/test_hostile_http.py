"""Malformed HTTP aimed straight at the function, with the load balancer's secret (as an internal caller
that had learnt it could; without it every request is refused first, tests/e2e/test_proxy_secret.py): the
HTTP layer or the function refuses it, never with a 5xx and never with a token."""

from __future__ import annotations

import socket
from urllib.parse import urlsplit

import pytest

from tests.support import verified_headers


def raw(stack, head: bytes, body: bytes = b"") -> tuple[int, bytes]:
    address = urlsplit(stack.function_url)
    with socket.create_connection((address.hostname, address.port), timeout=10) as connection:
        connection.sendall(head + body)
        answer = b""
        while chunk := connection.recv(65536):
            answer += chunk
    status = int(answer.split(b" ", 2)[1])
    return status, answer


def request(headers: dict[str, str | bytes], body: bytes = b"grant_type=client_credentials",
            proxy_secret: dict[str, str] | None = None) -> bytes:
    """A POST /token head; pass the stack's ``proxy_secret_headers`` to get past the edge as the load
    balancer would, so the hostile part is what the function answers."""
    lines = [b"POST /token HTTP/1.1", b"Host: t", b"Connection: close",
             b"Content-Type: application/x-www-form-urlencoded", b"Content-Length: %d" % len(body)]
    for name, value in {**headers, **(proxy_secret or {})}.items():
        lines.append(name.encode() + b": " + (value if isinstance(value, bytes) else value.encode()))
    return b"\r\n".join(lines) + b"\r\n\r\n"


@pytest.mark.parametrize(
    ("override", "statuses"),
    [
        ({"X-Client-Cert-Hash": b"abc\x00def"}, {400}),
        ({"X-Client-Cert-SPIFFE": b"spiffe://x\rInjected: yes"}, {400}),
        ({"X-Client-Cert-DNSName-SANs": b"\xff\xfe"}, {400, 401}),
        ({"X-Client-Cert-Hash": "A" * 9000}, {401}),  # not a fingerprint: the function says so
        ({"X-Client-Cert-SPIFFE": "A" * 70_000}, {431}),
        ({f"X-Filler-{index}": "x" for index in range(120)}, {431}),
    ],
    ids=["nul", "bare-cr", "non-utf8", "oversized-header", "headers-over-64-kib", "too-many-headers"],
)
def test_malformed_headers(stack, override, statuses):
    headers = {**verified_headers(), **override}
    status, answer = raw(stack, request(headers, proxy_secret=stack.proxy_secret_headers),
                         b"grant_type=client_credentials")
    assert status in statuses and b"id_token" not in answer


def test_oversized_body_is_413_json(stack):
    body = b"grant_type=client_credentials&x=" + b"a" * 100_000
    status, answer = raw(stack, request(verified_headers(), body, stack.proxy_secret_headers), body)
    assert status == 413 and b'"error":"invalid_request"' in answer


def test_unknown_parameters_are_ignored_as_rfc_6749_requires(stack):
    body = b"grant_type=client_credentials&colour=blue"
    status, answer = raw(stack, request(verified_headers(), body, stack.proxy_secret_headers), body)
    assert status == 200 and b"id_token" in answer


def test_a_repeated_mtls_header_is_malformed_not_replaced(stack):
    """A second X-Client-Cert-Hash (as a caller appending to the load balancer's could send) must not
    choose the client: the values are joined, as WSGI does, and the joined value is no fingerprint."""
    other = "B" * 43
    head = request(verified_headers(), proxy_secret=stack.proxy_secret_headers).replace(
        b"\r\n\r\n", b"\r\nX-Client-Cert-Hash: " + other.encode() + b"\r\n\r\n")
    status, answer = raw(stack, head, b"grant_type=client_credentials")
    assert status == 401 and b"malformed_certificate_header" in answer and b"id_token" not in answer
