"""The one HTTP client the process uses to reach Google.

A single urllib3 pool, shared by every thread: after warm-up a request reuses a
kept-alive connection instead of opening a new TCP/TLS one. Every call has
explicit timeouts. Retries (full jitter, exponential) happen only on 429, 5xx,
timeouts and connection failures, and stop when the total budget is spent.
"""

from __future__ import annotations

import json
import random
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from token_service.background import BackgroundLoader

RETRYABLE_STATUSES = frozenset({429, 500, 502, 503, 504})
USER_AGENT = "token-service-python"


@dataclass(frozen=True)
class UpstreamResponse:
    status: int
    body: bytes
    headers: Mapping[str, str] = field(default_factory=dict)  # case-insensitive when from urllib3

    def json(self) -> Any:
        return json.loads(self.body)


class UpstreamUnavailable(Exception):
    """Google did not answer usefully within the retry budget."""

    def __init__(self, service: str, detail: str, retry_after: int):
        super().__init__(f"{service} unavailable: {detail}")
        self.service = service
        self.detail = detail
        self.retry_after = retry_after


@dataclass(frozen=True)
class RetryPolicy:
    connect_timeout: float = 3.0
    read_timeout: float = 10.0
    budget: float = 15.0  # seconds for all attempts and back-off together
    base_delay: float = 0.1
    max_delay: float = 2.0


class UpstreamClient:
    def __init__(self, policy: RetryPolicy | None = None, pool_size: int = 32, ca_certs: str | None = None,
                 preload: bool = False):
        self.policy = policy or RetryPolicy()

        def pool() -> Any:
            import urllib3

            return urllib3.PoolManager(num_pools=8, maxsize=pool_size, block=False, retries=False,
                                       ca_certs=ca_certs, headers={"User-Agent": USER_AGENT})

        # urllib3 costs 50-100 ms to import: ``preload`` (when the first token already needs Google)
        # imports it in the background right after the fork, else the first call does.
        self._pool = BackgroundLoader("upstream-pool", pool, start_after_fork=preload)

    def post(self, service: str, url: str, *, body: bytes, headers: dict[str, str]) -> UpstreamResponse:
        """POST with retries; returns the final answer (any status) or raises ``UpstreamUnavailable``."""
        return self.request("POST", service, url, body=body, headers=headers)

    def request(
        self, method: str, service: str, url: str, *, body: bytes | None = None, headers: dict[str, str] | None = None
    ) -> UpstreamResponse:
        import urllib3

        pool = self._pool.get()
        policy = self.policy
        deadline = time.monotonic() + policy.budget
        attempt = 0
        while True:
            remaining = deadline - time.monotonic()
            timeout = urllib3.Timeout(
                connect=min(policy.connect_timeout, max(remaining, 0.01)),
                read=min(policy.read_timeout, max(remaining, 0.01)),
            )
            try:
                answer = pool.request(method, url, body=body, headers=headers, timeout=timeout,
                                            redirect=False)
                response = UpstreamResponse(answer.status, answer.data, answer.headers)
                if response.status not in RETRYABLE_STATUSES:
                    return response
                failure = f"HTTP {response.status}: {response.body[:200].decode('utf-8', 'replace')}"
            except urllib3.exceptions.HTTPError as error:
                failure = f"{type(error).__name__}: {error}"
            attempt += 1
            delay = random.uniform(0, min(policy.max_delay, policy.base_delay * 2**attempt))
            if time.monotonic() + delay >= deadline:
                raise UpstreamUnavailable(service, f"{failure} (after {attempt} attempts)",
                                          retry_after=max(1, round(policy.max_delay * 2)))
            time.sleep(delay)


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}
