"""State a flow keeps between requests: the ``jti`` replay cache and the client-secret failure limiter.

Each has two stores with the same interface: in this instance's memory (the embedded default) and
in Redis (``REDIS_URL``), shared by every instance. The flows see only the protocols below;
``stores.build_stores`` picks the implementation at cold start.
"""

from __future__ import annotations

from typing import Protocol


class ReplayStore(Protocol):
    def seen(self, key: str) -> bool:
        """Whether ``key`` was recorded and has not expired; raises ``StateUnavailable``."""

    def first_use(self, key: str, expires_at: float) -> bool:
        """Record ``key`` until ``expires_at`` (epoch seconds); False, nothing recorded, if it is already
        there. Raises ``StateUnavailable`` (then whether it was recorded is unknown)."""


class FailureStore(Protocol):
    def retry_after(self, key: tuple[str, str]) -> int:
        """0 if an attempt may go ahead, else the seconds to wait. Never raises: a limiter degrades."""

    def failed(self, key: tuple[str, str]) -> None:
        """Count one failed attempt for ``key``."""
