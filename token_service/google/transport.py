"""The one HTTP client the process uses to reach Google (and issuers' key sets).

Kept-alive connections per origin, shared by every thread: after warm-up a
request reuses one instead of opening a new TCP/TLS connection. Built on the
standard library's ``http.client``, which the server stack has already
imported: urllib3 would lengthen every cold start and every exchange
(docs/performance.md). Every call has explicit timeouts and a cap on the
answer's size. Retries (full jitter, exponential) happen only on 429, 5xx,
timeouts and connection failures, and stop when the total budget is spent.
"""

from __future__ import annotations

import http.client
import json
import os
import random
import select
import socket
import ssl
import threading
import time
from collections.abc import Mapping
from types import MappingProxyType
from typing import Any, NamedTuple
from urllib.parse import urlsplit

from token_service.errors import TokenServiceError, UpstreamUnavailable

RETRYABLE_STATUSES = frozenset({429, 500, 502, 503, 504})
USER_AGENT = "token-service-python"
MAX_RESPONSE_BYTES = 1 << 20  # Google's answers are a few KiB; a larger one is a fault, not a token
LOOPBACK_HOSTS = ("127.0.0.1", "localhost", "::1")


def secure_url(url: str) -> bool:
    """Where the service may send a request: https, or plain http on loopback (local runs and tests).
    Applied to Google endpoints, policy issuers and the ``jwks_uri`` an issuer's discovery names."""
    try:
        parts = urlsplit(url)
        host = parts.hostname
    except ValueError:  # e.g. an unclosed IPv6 bracket
        return False
    return bool(host) and (parts.scheme == "https" or (parts.scheme == "http" and host in LOOPBACK_HOSTS))


class UpstreamResponse(NamedTuple):
    status: int
    body: bytes
    headers: Mapping[str, str] = MappingProxyType({})  # case-insensitive when from http.client

    def json(self) -> Any:
        return json.loads(self.body)


class RetryPolicy(NamedTuple):
    connect_timeout: float = 3.0
    read_timeout: float = 10.0
    budget: float = 15.0  # seconds for all attempts and back-off together
    base_delay: float = 0.1
    max_delay: float = 2.0
    max_attempts: int = 0  # 0: as many as the budget allows


class _ResponseTooLarge(TokenServiceError):
    pass


Origin = tuple[str, str, int]  # scheme, host, port


class ConnectionPool:
    """Idle kept-alive connections per origin; a connection is used by one thread at a time."""

    def __init__(self, maxsize: int, ca_certs: str | None = None):
        self._maxsize = maxsize
        self._ca_certs = ca_certs
        self._tls: ssl.SSLContext | None = None
        self._lock = threading.Lock()
        self._idle: dict[Origin, list[http.client.HTTPConnection]] = {}
        self.opened = 0
        # A forked worker must not share the parent's sockets.
        os.register_at_fork(after_in_child=self._forget)

    def _forget(self) -> None:
        self._lock = threading.Lock()
        self._idle = {}

    def acquire(self, origin: Origin, connect_timeout: float) -> http.client.HTTPConnection:
        while True:
            with self._lock:
                idle = self._idle.get(origin)
                if not idle:
                    break
                connection = idle.pop()
            # The liveness check is a system call: outside the lock every thread shares.
            if not _dropped(connection):
                return connection
            connection.close()
        scheme, host, port = origin
        if scheme == "https":
            connection: http.client.HTTPConnection = http.client.HTTPSConnection(
                host, port, timeout=connect_timeout, context=self._context())
        else:
            connection = http.client.HTTPConnection(host, port, timeout=connect_timeout)
        with self._lock:
            self.opened += 1
        return connection

    def release(self, origin: Origin, connection: http.client.HTTPConnection) -> None:
        with self._lock:
            idle = self._idle.setdefault(origin, [])
            if len(idle) < self._maxsize:
                idle.append(connection)
                return
        connection.close()

    def _context(self) -> ssl.SSLContext:
        if self._tls is None:  # building it reads the system's CA bundle: once, on first HTTPS use
            self._tls = ssl.create_default_context(cafile=self._ca_certs)
        return self._tls


def _dropped(connection: http.client.HTTPConnection) -> bool:
    """An idle connection the server closed (or wrote to unasked) reads as ready; reusing it
    would fail the request."""
    sock = connection.sock
    if sock is None:
        return True
    readable, _, _ = select.select([sock], [], [], 0)
    return bool(readable)


class UpstreamClient:
    def __init__(self, policy: RetryPolicy | None = None, pool_size: int = 32, ca_certs: str | None = None):
        self.policy = policy or RetryPolicy()
        self.pool = ConnectionPool(pool_size, ca_certs)

    def post(self, service: str, url: str, *, body: bytes, headers: dict[str, str]) -> UpstreamResponse:
        """POST with retries; returns the final answer (any status) or raises ``UpstreamUnavailable``."""
        return self.request("POST", service, url, body=body, headers=headers)

    def request(
        self, method: str, service: str, url: str, *, body: bytes | None = None, headers: dict[str, str] | None = None,
        policy: RetryPolicy | None = None,
    ) -> UpstreamResponse:
        """One call under ``policy`` (default: the client's); returns the final answer (any status) or raises
        ``UpstreamUnavailable``."""
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise UpstreamUnavailable(service, f"not an http(s) URL: {url[:200]}", retry_after=60)
        origin = (parts.scheme, parts.hostname, parts.port or (443 if parts.scheme == "https" else 80))
        target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        all_headers = {"User-Agent": USER_AGENT, **(headers or {})}
        policy = policy or self.policy
        deadline = time.monotonic() + policy.budget
        attempt = 0
        while True:
            remaining = max(deadline - time.monotonic(), 0.01)
            try:
                response = self._once(origin, method, target, body, all_headers,
                                      min(policy.connect_timeout, remaining), min(policy.read_timeout, remaining))
                if response.status not in RETRYABLE_STATUSES:
                    return response
                failure = f"HTTP {response.status}: {response.body[:200].decode('utf-8', 'replace')}"
            except (OSError, http.client.HTTPException) as error:
                failure = f"{type(error).__name__}: {error}"
            except _ResponseTooLarge:
                failure = f"answer larger than {MAX_RESPONSE_BYTES} bytes"
            attempt += 1
            delay = random.uniform(0, min(policy.max_delay, policy.base_delay * 2**attempt))
            if attempt == policy.max_attempts or time.monotonic() + delay >= deadline:
                raise UpstreamUnavailable(service, f"{failure} (after {attempt} attempts)",
                                          retry_after=max(1, round(policy.max_delay * 2)))
            time.sleep(delay)

    def _once(self, origin: Origin, method: str, target: str, body: bytes | None, headers: dict[str, str],
              connect_timeout: float, read_timeout: float) -> UpstreamResponse:
        connection = self.pool.acquire(origin, connect_timeout)
        try:
            if connection.sock is None:
                connection.connect()
                # http.client sends the headers and the body in two writes: with Nagle's algorithm
                # and the server's delayed ACK, the body would wait 40 ms.
                connection.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            connection.sock.settimeout(read_timeout)
            connection.request(method, target, body=body, headers=headers)
            answer = connection.getresponse()
            data = answer.read(MAX_RESPONSE_BYTES + 1)
            if len(data) > MAX_RESPONSE_BYTES:
                raise _ResponseTooLarge
        except BaseException:
            connection.close()
            raise
        if answer.will_close or not answer.isclosed():
            connection.close()
        else:
            self.pool.release(origin, connection)
        return UpstreamResponse(answer.status, data, answer.headers)


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}
