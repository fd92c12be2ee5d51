"""A loopback HTTP/1.1 server on one asyncio event loop, for stand-ins of remote services.

A stand-in that answers after an injected latency must hold hundreds of calls at once. With a thread
per connection (``http.server``) that costs each call two GIL hand-offs among hundreds of threads; here
a call that waits is a timer. The handler gets a plain `Request` and returns an `Answer` (or an
awaitable of one, for work that may block, run on the loop's executor) saying what to send and when.
One request at a time per connection, answered in order; keep-alive as HTTP/1.1 has it.
Development tooling only: never deployed.
"""

from __future__ import annotations

import asyncio
import http
import inspect
import threading
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, replace

MAX_HEAD_BYTES = 65536


@dataclass(frozen=True)
class Request:
    method: str
    target: str
    headers: dict[str, str]  # names in lower case
    body: bytes
    received: float  # time.monotonic() when the head was read, the clock of `Answer.at`


@dataclass(frozen=True)
class Answer:
    """``status`` None closes the connection without an answer (a reset, or a hang that gives up)."""

    status: int | None
    body: bytes = b""
    content_type: str = "application/json"
    headers: tuple[tuple[str, str], ...] = ()
    at: float = 0.0  # time.monotonic() before which nothing is sent
    close: bool = False


_BROKEN = Answer(500, b"The stand-in failed: a bug in it.", "text/plain", close=True)
Handler = Callable[[Request], "Answer | Awaitable[Answer]"]


class _Connection(asyncio.Protocol):
    def __init__(self, server: LoopHttpServer):
        self._server = server
        self._buffer = bytearray()
        self._busy = False
        self._transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = transport  # type: ignore[assignment]
        self._server.on_connection()  # asyncio sets TCP_NODELAY on its sockets

    def data_received(self, data: bytes) -> None:
        self._buffer += data
        self._next()

    def connection_lost(self, exc: Exception | None) -> None:
        self._transport = None

    def _next(self) -> None:
        if self._busy or self._transport is None:
            return
        end = self._buffer.find(b"\r\n\r\n")
        if end < 0:
            if len(self._buffer) > MAX_HEAD_BYTES:
                self._write(Answer(431, b"", "text/plain", close=True))
            return
        try:
            method, target, version, headers = _parse_head(bytes(self._buffer[:end]))
            length = int(headers.get("content-length") or 0)
            if length < 0:
                raise ValueError(length)
        except ValueError:
            return self._write(Answer(400, b"Malformed request.", "text/plain", close=True))
        if "transfer-encoding" in headers:
            return self._write(Answer(501, b"Send a Content-Length.", "text/plain", close=True))
        if len(self._buffer) < end + 4 + length:
            return
        body = bytes(self._buffer[end + 4:end + 4 + length])
        del self._buffer[:end + 4 + length]
        keep_alive = headers.get("connection", "").lower() != "close" and version == "HTTP/1.1"
        self._busy = True
        self._transport.pause_reading()
        try:
            answer = self._server.handler(Request(method, target, headers, body, time.monotonic()))
        except Exception:
            return self._write(_BROKEN)
        if inspect.isawaitable(answer):
            asyncio.ensure_future(answer).add_done_callback(lambda done: self._schedule(
                _BROKEN if done.exception() else done.result(), keep_alive))
        else:
            self._schedule(answer, keep_alive)

    def _schedule(self, answer: Answer, keep_alive: bool) -> None:
        if not keep_alive:
            answer = replace(answer, close=True)
        loop = asyncio.get_running_loop()
        if answer.at > loop.time():
            loop.call_at(answer.at, self._write, answer)
        else:
            self._write(answer)

    def _write(self, answer: Answer) -> None:
        transport = self._transport
        if transport is None:
            return
        if answer.status is None:
            transport.close()
            return
        head = [f"HTTP/1.1 {answer.status} {http.HTTPStatus(answer.status).phrase}",
                f"Content-Type: {answer.content_type}", f"Content-Length: {len(answer.body)}",
                *(f"{name}: {value}" for name, value in answer.headers)]
        if answer.close:
            head.append("Connection: close")
        transport.write("\r\n".join(head).encode("latin-1") + b"\r\n\r\n" + answer.body)
        if answer.close:
            transport.close()
            return
        self._busy = False
        transport.resume_reading()
        self._next()


def _parse_head(head: bytes) -> tuple[str, str, str, dict[str, str]]:
    request_line, *lines = head.decode("latin-1").split("\r\n")
    method, target, version = request_line.split(" ")
    if not version.startswith("HTTP/1."):
        raise ValueError(version)
    headers: dict[str, str] = {}
    for line in lines:
        name, colon, value = line.partition(":")
        if not colon or not name or name != name.strip():
            raise ValueError(line)
        name = name.lower()
        headers[name] = f"{headers[name]}, {value.strip()}" if name in headers else value.strip()
    return method, target, version, headers


class LoopHttpServer:
    """Listens on ``address`` once constructed (``server_address`` is known); serves on the thread that
    calls `serve_forever`, until `shutdown` from another."""

    def __init__(self, address: tuple[str, int], handler: Handler, on_connection: Callable[[], None] = lambda: None):
        self.handler = handler
        self.on_connection = on_connection
        self.loop = asyncio.new_event_loop()
        self._server = self.loop.run_until_complete(
            self.loop.create_server(lambda: _Connection(self), *address, backlog=1024, reuse_address=True))
        self.server_address = self._server.sockets[0].getsockname()[:2]
        self._stopped = threading.Event()

    def serve_forever(self) -> None:
        try:
            self.loop.run_forever()
        finally:
            self._server.close()
            self.loop.close()
            self._stopped.set()

    def shutdown(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._stopped.wait(timeout=10)
