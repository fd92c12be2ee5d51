"""The audit lines' way out: whole lines to the instance's shared stdout pipe, in few writes.

Every worker of an instance writes to one pipe, read by Cloud Run's log collector.
A ``write()`` of at most ``PIPE_BUF`` bytes to a pipe is atomic, so lines from two
workers never interleave as long as each write carries whole lines within that size
(``audit.fitted`` keeps every line below it). Each write also wakes the pipe's reader,
which on a loaded instance takes its core from a worker: measured on 2 cores, a write
per line cost the broker about two context switches per token. So on the event loop,
the lines of the requests answered in one loop iteration go out together, in writes of
whole lines of at most ``PIPE_BUF`` bytes. A line is written by the end of the loop
iteration it was logged in; a line from a pool thread (a request that waited on Google)
is handed to the loop too, ahead of its response, which cut the workers' CPU per token
by 3-13 % at concurrency 256 (docs/performance.md). A worker told to stop (SIGTERM)
keeps its loop turning until its last response is out, then dies by that signal without
running ``atexit``: its lines are all written by then, in the loop. The ``atexit`` hook
only serves an interpreter that exits normally. With no loop running, a line is written
at once.
"""

from __future__ import annotations

import asyncio
import atexit
import io
import os
import select
import threading
from collections.abc import Callable
from typing import IO

PIPE_BUF = select.PIPE_BUF

# Runs the callback at the end of this event-loop iteration; False when the calling thread has no loop.
Deferrer = Callable[[Callable[[], None]], bool]


class AtEndOfLoopIteration:
    """A ``Deferrer`` onto the worker's event loop, from the loop itself or from a pool thread.

    A pool thread's line is handed to the loop it last saw running: its request's response leaves
    through that loop after the line's callback (both are queued in order), so the line is written
    first, together with the others of that iteration."""

    def __init__(self) -> None:
        self._loop: asyncio.AbstractEventLoop | None = None

    def __call__(self, callback: Callable[[], None]) -> bool:
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:  # a pool thread
            loop = self._loop
            if loop is None or not loop.is_running():
                return False
            try:
                loop.call_soon_threadsafe(callback)
            except RuntimeError:  # closed meanwhile
                return False
            return True
        self._loop = loop
        # Callbacks scheduled while the loop runs its ready ones wait for the next round: the
        # requests answered in this round log first.
        loop.call_soon(callback)
        return True


class BatchedLines(io.TextIOBase):
    """A text stream for whole lines (each ``write()`` one or more complete lines).

    ``flush()`` does nothing: a line is written at once or is due by the end of the loop
    iteration, so the writers that flush after every line (``logging.StreamHandler`` among
    them) leave the timing to this stream. ``write_pending()`` writes what is due now.
    """

    def __init__(self, target: IO[str], defer: Deferrer | None = None):
        super().__init__()
        self._target = target
        self._defer = defer or AtEndOfLoopIteration()
        self._reset()
        os.register_at_fork(after_in_child=self._reset)
        atexit.register(self.write_pending)

    def _reset(self) -> None:
        # A forked worker starts with its own lock and nothing of the parent's pending.
        self._lock = threading.Lock()
        self._pending: list[str] = []
        self._pending_bytes = 0
        self._due = False

    def writable(self) -> bool:
        return True

    def write(self, lines: str) -> int:
        size = len(lines) if lines.isascii() else len(lines.encode())
        with self._lock:
            if self._pending_bytes + size > PIPE_BUF:
                self._write_locked()
            self._pending.append(lines)
            self._pending_bytes += size
            if not self._due:
                self._due = self._defer(self.write_pending)
                if not self._due:
                    self._write_locked()
        return len(lines)

    def flush(self) -> None:
        pass

    def write_pending(self) -> None:
        """Write what is due now (the deferred call, and at a normal exit)."""
        with self._lock:
            self._due = False
            self._write_locked()

    def _write_locked(self) -> None:
        if not self._pending:
            return
        lines = "".join(self._pending)
        self._pending.clear()
        self._pending_bytes = 0
        self._target.write(lines)
        self._target.flush()
