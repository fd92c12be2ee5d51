"""A throwaway real ``redis-server`` on a free loopback port, for tests and the bench.

No persistence (``--save ''``, ``--appendonly no``): each start is empty; or, with ``data_dir``, an
append-only file synced on every write, as a persistent Memorystore keeps it. ``stop`` kills it as a
crash would; ``start`` again brings it back on the same port.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from pathlib import Path

from devtools.local import free_port


class RedisServer:
    def __init__(self, port: int | None = None, data_dir: Path | None = None, password: str | None = None):
        self.port = port or free_port()
        self.data_dir = data_dir
        self.password = password  # as Memorystore's AUTH string
        self._process: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        credentials = f":{self.password}@" if self.password else ""
        return f"redis://{credentials}127.0.0.1:{self.port}/0"

    def start(self, timeout: float = 10.0) -> RedisServer:
        binary = shutil.which("redis-server")
        if binary is None:
            raise RuntimeError("redis-server is not installed (make test installs it: apt-get install redis-server)")
        auth = ["--requirepass", self.password] if self.password else []
        persistence = (["--appendonly", "yes", "--appendfsync", "always", "--dir", str(self.data_dir)]
                       if self.data_dir else ["--appendonly", "no"])
        self._process = subprocess.Popen(
            [binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", *persistence, *auth],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                raise RuntimeError(f"redis-server exited with code {self._process.returncode} while starting")
            if self._answers():
                return self
            time.sleep(0.02)
        self.stop()
        raise RuntimeError("redis-server did not answer PING in time")

    def stop(self) -> None:
        """SIGKILL, as a crash or a failover would take it away."""
        if self._process is not None and self._process.poll() is None:
            self._process.kill()
            self._process.wait()
        self._process = None

    def _answers(self) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=0.5) as connection:
                # Answered (even NOAUTH, by a server with a password): it is up.
                connection.sendall(b"PING\r\n")
                return connection.recv(16)[:1] in (b"+", b"-")
        except OSError:
            return False
