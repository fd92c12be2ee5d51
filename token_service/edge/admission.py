"""The instance's bulkhead: how many requests that may wait one worker holds at once.

A request that may wait (on Google, on an issuer, on slow hashing) holds one of the worker's
threads until its answer. Past ``MAX_WAITING_REQUESTS`` the next one is refused at once with 503
and ``Retry-After`` (``dispatch.answer_busy``) instead of joining a queue that grows while Google is
slow, so a stalled upstream costs the clients a clear retry, not the instance its memory.
"""

from __future__ import annotations


class WaitingRequests:
    """A count of the worker's requests that may wait, bounded by ``limit``.

    Entered and left on the worker's event loop only, so no lock: the loop runs one at a time."""

    def __init__(self, limit: int):
        self.limit = limit
        self.in_flight = 0

    def enter(self) -> bool:
        """Take a place; False (nothing taken) when all ``limit`` are held."""
        if self.in_flight >= self.limit:
            return False
        self.in_flight += 1
        return True

    def leave(self) -> None:
        self.in_flight -= 1
