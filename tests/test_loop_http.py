"""The loop server under the Google emulator: answers in order, at their time, and closes when told."""

from __future__ import annotations

import asyncio
import http.client
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

import pytest

from devtools.loop_http import Answer, LoopHttpServer, Request


@contextmanager
def serving(handler) -> Iterator[LoopHttpServer]:
    server = LoopHttpServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        thread.join(timeout=5)


def _raw_exchange(port: int, *parts: bytes, timeout: float = 5) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        for part in parts:
            sock.sendall(part)
            time.sleep(0.05)
        received = b""
        while chunk := sock.recv(65536):
            received += chunk
        return received


def test_keep_alive_answers_in_order_each_at_its_time():
    delays = {"/slow": 0.3, "/fast": 0.0}

    def handler(request: Request) -> Answer:
        return Answer(200, request.target.encode() + b"|" + request.body, "text/plain",
                      at=request.received + delays[request.target])

    with serving(handler) as server:
        connection = http.client.HTTPConnection(*server.server_address, timeout=5)
        started = time.monotonic()
        connection.request("POST", "/slow", body=b"one")
        first = connection.getresponse()
        assert (first.status, first.read()) == (200, b"/slow|one")
        assert time.monotonic() - started >= 0.29
        connection.request("POST", "/fast", body=b"two")
        second = connection.getresponse()
        assert (second.status, second.read()) == (200, b"/fast|two")
        connection.close()
        # Pipelined on one connection, in one segment or while the first waits: the second answer
        # follows the first, which is due later.
        slow, fast = b"GET /slow HTTP/1.1\r\nHost: x\r\n\r\n", b"GET /fast HTTP/1.1\r\nConnection: close\r\n\r\n"
        for parts in ((slow + fast,), (slow, fast)):
            both = _raw_exchange(server.server_address[1], *parts)
            assert both.index(b"/slow|") < both.index(b"/fast|")
            assert both.count(b"HTTP/1.1 200 OK") == 2


def test_a_headless_answer_closes_the_connection_without_a_response():
    with serving(lambda request: Answer(None, at=request.received + 0.1)) as server:
        started = time.monotonic()
        assert _raw_exchange(server.server_address[1], b"POST /v1/token HTTP/1.1\r\nContent-Length: 0\r\n\r\n") == b""
        assert time.monotonic() - started >= 0.09


@pytest.mark.parametrize("head, status", [
    (b"NONSENSE\r\n\r\n", b"400"),
    (b"GET / SPDY/3\r\n\r\n", b"400"),
    (b"GET / HTTP/1.1\r\nno colon here\r\n\r\n", b"400"),
    (b"POST / HTTP/1.1\r\nContent-Length: ten\r\n\r\n", b"400"),
    (b"POST / HTTP/1.1\r\nContent-Length: -5\r\n\r\n", b"400"),
    (b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", b"501"),
])
def test_a_malformed_request_is_refused_and_the_connection_closed(head, status):
    with serving(lambda request: Answer(200, b"never")) as server:
        answer = _raw_exchange(server.server_address[1], head)
    assert answer.startswith(b"HTTP/1.1 " + status) and b"Connection: close" in answer and b"never" not in answer


def test_work_off_the_loop_and_a_failing_handler():
    def handler(request: Request):
        if request.target == "/broken":
            raise RuntimeError("a bug")
        return asyncio.get_running_loop().run_in_executor(None, lambda: Answer(200, b"from a thread"))

    with serving(handler) as server:
        connection = http.client.HTTPConnection(*server.server_address, timeout=5)
        connection.request("GET", "/threaded")
        answer = connection.getresponse()
        assert (answer.status, answer.read()) == (200, b"from a thread")
        connection.request("GET", "/broken")
        broken = connection.getresponse()
        assert broken.status == 500 and broken.getheader("Connection") == "close"
