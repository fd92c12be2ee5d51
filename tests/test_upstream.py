"""The pooled upstream client: connection reuse, stale connections, size cap, fork safety."""

from __future__ import annotations

import http.server
import os
import socket
import socketserver
import threading
import time

import pytest

from token_service.errors import UpstreamUnavailable
from token_service.google.transport import MAX_RESPONSE_BYTES, RetryPolicy, UpstreamClient


class _Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _Server

    def do_GET(self) -> None:
        self.server.requests += 1
        if self.path == "/redirect":
            self.send_response(302)
            self.send_header("Location", "/x")
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        body = self.server.body
        if self.server.chunked:
            self.send_response(200)
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            for start in range(0, len(body), 7):
                piece = body[start:start + 7]
                self.wfile.write(b"%x\r\n%s\r\n" % (len(piece), piece))
            self.wfile.write(b"0\r\n\r\n")
        else:
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
        if self.server.close_after_answer:
            # Answered, then the server drops the idle connection, as a front end does after its
            # keep-alive timeout, without saying so in the answer.
            self.close_connection = True

    def log_message(self, format: str, *args: object) -> None:
        pass


class _Server(socketserver.ThreadingMixIn, http.server.HTTPServer):
    daemon_threads = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.requests = 0
        self.connections = 0
        self.body = b'{"ok":true}'
        self.chunked = False
        self.close_after_answer = False

    def get_request(self):
        self.connections += 1
        return super().get_request()


@pytest.fixture
def server():
    server = _Server()
    threading.Thread(target=server.serve_forever, daemon=True).start()
    server.url = f"http://127.0.0.1:{server.server_address[1]}/x"
    yield server
    server.shutdown()


def test_sequential_calls_reuse_one_connection(server):
    client = UpstreamClient()
    for _ in range(20):
        assert client.request("GET", "test", server.url).json() == {"ok": True}
    assert server.connections == 1 and client.pool.opened == 1


def test_connections_send_without_waiting_for_acks(server):
    """http.client writes a POST's headers and body apart: under Nagle's algorithm the body waits
    for the server's delayed ACK, 40 ms on half the calls of the production path."""
    client = UpstreamClient()
    client.request("GET", "test", server.url)
    [connection] = client.pool._idle[("http", "127.0.0.1", server.server_address[1])]
    assert connection.sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY)


def test_a_connection_the_server_closed_while_idle_is_replaced_without_a_retry(server):
    server.close_after_answer = True
    client = UpstreamClient(RetryPolicy(base_delay=5, max_delay=5))  # a retry would show as seconds
    started = time.monotonic()
    for _ in range(5):
        assert client.request("GET", "test", server.url).status == 200
        time.sleep(0.05)  # the server's close reaches us while the connection is idle
    assert time.monotonic() - started < 2
    assert server.requests == 5 and server.connections == 5


def test_chunked_answers_are_read_whole_and_the_connection_kept(server):
    server.chunked, server.body = True, b'{"access_token":"' + b"a" * 100 + b'"}'
    client = UpstreamClient()
    for _ in range(3):
        assert client.request("GET", "test", server.url).body == server.body
    assert server.connections == 1


@pytest.mark.parametrize("chunked", [False, True])
def test_an_oversized_answer_is_an_upstream_failure_not_a_body(server, chunked):
    server.chunked, server.body = chunked, b"x" * (MAX_RESPONSE_BYTES + 1)
    with pytest.raises(UpstreamUnavailable) as raised:
        UpstreamClient(RetryPolicy(budget=0.3, base_delay=0.01)).request("GET", "test", server.url)
    assert f"larger than {MAX_RESPONSE_BYTES} bytes" in raised.value.detail


def test_a_redirect_is_answered_as_it_came_not_followed(server):
    """An issuer's JWKS URL redirecting elsewhere must not make us trust keys from elsewhere."""
    answer = UpstreamClient().request("GET", "test", server.url.replace("/x", "/redirect"))
    assert answer.status == 302 and answer.headers["location"] == "/x"
    assert server.requests == 1


@pytest.mark.parametrize("url", ["ftp://example.com/x", "file:///etc/passwd", "https:///nohost", "x"])
def test_only_http_urls_are_fetched(url):
    with pytest.raises(UpstreamUnavailable) as raised:
        UpstreamClient().request("GET", "test", url)
    assert "not an http(s) URL" in raised.value.detail


def test_a_forked_worker_opens_its_own_connections(server):
    client = UpstreamClient()
    client.request("GET", "test", server.url)
    read, write = os.pipe()
    child = os.fork()
    if child == 0:  # pragma: no cover - the child reports through the pipe
        try:
            client.request("GET", "test", server.url)
            os.write(write, str(client.pool.opened).encode())
        finally:
            os._exit(0)
    os.close(write)
    os.waitpid(child, 0)
    opened_in_child = int(os.read(read, 16) or b"-1")
    os.close(read)
    assert opened_in_child == 2  # one inherited count, plus a connection of its own
    assert server.connections == 2
