"""Loading heavy clients off the critical path, safely under gunicorn's fork.

functions-framework imports ``main.py`` in the master process and gunicorn
then forks the worker: a thread started at import time would not exist in the
worker. ``BackgroundLoader`` therefore starts its thread in the worker right
after the fork (or at first need, in a process that never forks), so the
import overlaps with the wait for the first request instead of delaying it.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from typing import Generic, TypeVar

T = TypeVar("T")


class BackgroundLoader(Generic[T]):
    def __init__(self, name: str, load: Callable[[], T], start_after_fork: bool = True):
        self._name = name
        self._load = load
        self._reset()
        # after_in_child also resets state a parent's thread left behind.
        os.register_at_fork(after_in_child=self._start_in_child if start_after_fork else self._reset)

    def _reset(self) -> None:
        self._lock = threading.Lock()
        self._done = threading.Event()
        self._started = False
        self._value: T | None = None
        self._error: BaseException | None = None

    def _start_in_child(self) -> None:
        # A new process: nothing a parent's thread did can be trusted here.
        self._reset()
        self.start()

    def start(self) -> None:
        with self._lock:
            if self._started:
                return
            self._started = True
        threading.Thread(target=self._run, name=self._name, daemon=True).start()

    def _run(self) -> None:
        try:
            self._value = self._load()
        except BaseException as error:  # handed to every caller of get()
            self._error = error
        finally:
            self._done.set()

    def ready(self) -> bool:
        """Loaded (or failed) already; never waits."""
        return self._done.is_set()

    def get(self) -> T:
        """The loaded value; re-raises what loading raised."""
        self.start()
        self._done.wait()
        if self._error is not None:
            raise self._error
        return self._value  # type: ignore[return-value]
