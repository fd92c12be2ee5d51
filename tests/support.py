"""Values shared by the unit tests: a verified certificate as the load balancer describes it."""

from __future__ import annotations

import base64
import hashlib
import http.server
import socket
import socketserver
import threading
from collections.abc import Callable
from typing import Any

ISSUER = "https://token.example.net"
FINGERPRINT = base64.b64encode(hashlib.sha256(b"certificate").digest()).decode().rstrip("=")


def b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


def verified_headers(**overrides: str) -> dict[str, str]:
    """Lower-cased headers as the load balancer sends them for a verified certificate."""
    headers = {
        "x-client-cert-present": "true",
        "x-client-cert-chain-verified": "true",
        "x-client-cert-error": "",
        "x-client-cert-hash": FINGERPRINT,
        "x-client-cert-serial-number": "00:c9:77:71:db",
        "x-client-cert-spiffe": "spiffe://example.net/ns/prod/sa/meter",
        "x-client-cert-uri-sans": b64("https://device.example.net/1"),
        "x-client-cert-dnsname-sans": b64("device-1.example.net"),
        "x-client-cert-valid-not-before": "2020-01-01T00:00:00+00:00",
        "x-client-cert-valid-not-after": "2099-01-01T00:00:00+00:00",
    }
    headers.update({name.lower(): value for name, value in overrides.items()})
    return headers


def default_names():
    """The header names the function reads without MTLS_HEADER_* settings."""
    from token_service.config import mtls_header_names

    return mtls_header_names({})


def authenticate(headers, names, now):
    """The mTLS flow on a request's lower-cased headers, as the edge reads them."""
    from token_service.flows import rfc8705_mtls as mtls

    return mtls.authenticate(mtls.CertificateHeaders.read(headers, names), names, now)


class HangingIssuer:
    """Accepts connections and never answers; counts them."""

    def __init__(self) -> None:
        self._socket = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self._socket.getsockname()[1]}"
        self.connections = 0
        self._held: list[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                connection, _ = self._socket.accept()
            except OSError:
                return
            self.connections += 1
            self._held.append(connection)

    def close(self) -> None:
        self._socket.close()
        for connection in self._held:
            connection.close()


class ScriptedIssuer:
    """Answers every GET with whatever ``answer(path)`` returns: (status, body bytes), or (status, body
    bytes, extra headers); counts the requests."""

    def __init__(self, answer: Callable[[str], tuple[int, bytes] | tuple[int, bytes, dict[str, str]]]) -> None:
        self.answer = answer
        self.requests = 0
        owner = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                owner.requests += 1
                status, body, *extra = owner.answer(self.path)
                self.send_response(status)
                for name, value in {**(extra[0] if extra else {}), "Content-Length": str(len(body))}.items():
                    self.send_header(name, value)
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self._server = socketserver.ThreadingTCPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"
        threading.Thread(target=self._server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
