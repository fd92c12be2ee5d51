"""A local mTLS gateway that behaves like the Google load balancer in front of the function.

    python -m devtools.gateway --backend http://127.0.0.1:8080 [--port 8443]

Like a backend service with a ServerTlsPolicy in ALLOW_INVALID_OR_MISSING_CLIENT_CERT
mode, it completes the handshake whether or not the client certificate verifies
against the trust config (the dev CA), removes client-supplied headers that share
a name with its custom request headers, and sets those headers in the load
balancer's documented formats
(https://cloud.google.com/load-balancing/docs/https/custom-headers-global), and appends the
client's address and its own to X-Forwarded-For, keeping what the client sent. Header names come
from the same MTLS_HEADER_* variables the function reads. Like the load balancer
deploy.sh configures, it also sends the secret the function requires
(PROXY_SECRETS, the first value; PROXY_SECRET_HEADER), replacing any
client-sent header of that name. Like the load balancer, it lets clients resume TLS sessions; a
resumed connection carries the headers of the certificate its session was verified with.

Development tooling only: never deployed.
"""

from __future__ import annotations

import argparse
import contextlib
import http.client
import http.server
import io
import os
import socket
import socketserver
import sys
import threading
from collections.abc import Mapping
from dataclasses import dataclass, field
from urllib.parse import urlsplit

from cryptography import x509
from cryptography.hazmat.primitives import hashes
from OpenSSL import SSL

from token_admin import load_balancer
from token_service import MTLS_HEADER_DEFAULTS, mtls_header_names, proxy_secret_settings

HOP_BY_HOP = frozenset(
    {"connection", "keep-alive", "proxy-authenticate", "proxy-authorization", "te", "trailer",
     "transfer-encoding", "upgrade", "host", "content-length"}
)
# OpenSSL verification errors -> the load balancer's client_cert_error strings.
X509_V_ERR_UNSPECIFIED = 1
X509_V_ERR_INVALID_PURPOSE = 26
SAN_SHAPES = ("each", "joined")


@dataclass(frozen=True)
class GatewayConfig:
    backend: str
    ca_file: str
    cert_file: str
    key_file: str
    header_names: Mapping[str, str]  # variable attribute -> header name
    san_shape: str = "each"
    # (header name, value): what the load balancer adds so the function knows it came this way.
    proxy_secret: tuple[str, str] | None = field(default=None, repr=False)


def header_names_from_environment(environ: Mapping[str, str]) -> dict[str, str]:
    """The same header names the function reads (MTLS_HEADER_* variables), by LB variable."""
    names = mtls_header_names(environ)
    return {attribute: getattr(names, attribute) for attribute in MTLS_HEADER_DEFAULTS}


def proxy_secret_from_environment(environ: Mapping[str, str]) -> tuple[str, str] | None:
    """The header and value to send, from the function's own PROXY_SECRET* variables: the first value,
    the new one during a rotation (the load balancer switches to it once the function accepts both)."""
    settings = proxy_secret_settings(environ)
    return (settings.header, settings.values[0]) if settings.values else None


def certificate_headers(
    leaf: x509.Certificate | None, verify_errors: list[int], names: Mapping[str, str], san_shape: str
) -> dict[str, str]:
    """The custom request headers the load balancer would add for this handshake."""
    return load_balancer.certificate_headers(leaf, _error_code(verify_errors) if verify_errors else "", names,
                                             san_shape)


def forwarded_for(sent: list[str], client_ip: str) -> str:
    """X-Forwarded-For as the load balancer passes it: what the client sent, then the client's address and
    the load balancer's own (https://cloud.google.com/load-balancing/docs/https#x-forwarded-for_header)."""
    return ",".join([*sent, client_ip, "127.0.0.1"])


def _error_code(errors: list[int]) -> str:
    if X509_V_ERR_INVALID_PURPOSE in errors:
        return "client_cert_chain_invalid_eku"
    return "client_cert_validation_failed"


class _TlsStream(io.RawIOBase):
    """File-like view of a pyOpenSSL connection, for http.server's rfile and wfile."""

    def __init__(self, connection: SSL.Connection):
        self._connection = connection

    def readable(self) -> bool:
        return True

    def writable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        try:
            data = self._connection.recv(len(buffer))
        except (SSL.ZeroReturnError, SSL.SysCallError):
            return 0
        buffer[: len(data)] = data
        return len(data)

    def write(self, data) -> int:
        self._connection.sendall(bytes(data))
        return len(data)


@dataclass
class _Verification:
    """What the verify callback saw during one handshake; it does not run when a session is resumed."""

    ran: bool = False
    errors: list[int] = field(default_factory=list)


class _Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: MtlsGateway

    def setup(self) -> None:
        connection: SSL.Connection = self.request
        verification = _Verification()
        connection.set_app_data(verification)
        try:
            connection.do_handshake()
        except SSL.Error:
            # A failed proof of possession or a broken handshake never reaches the backend.
            self.close_connection = True
            self.rfile = io.BytesIO()
            self.wfile = io.BytesIO()
            return
        leaf = connection.get_peer_certificate(as_cryptography=True)
        config = self.server.config
        errors = self.server.verdict(leaf, verification)
        self.injected = certificate_headers(leaf, errors, config.header_names, config.san_shape)
        self.rfile = io.BufferedReader(_TlsStream(connection))
        self.wfile = _TlsStream(connection)

    def handle_one_request(self) -> None:
        if not hasattr(self, "injected"):
            self.close_connection = True
            return
        super().handle_one_request()

    def _proxy(self) -> None:
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            self.send_error(411, "chunked bodies are not supported by the dev gateway")
            return
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        injected = dict(self.injected)
        if self.server.config.proxy_secret is not None:
            secret_header, secret = self.server.config.proxy_secret
            injected[secret_header] = secret
        injected_lower = {name.lower() for name in injected}
        headers = [
            (name, value) for name, value in self.headers.items()
            if name.lower() not in HOP_BY_HOP and name.lower() not in injected_lower
            and name.lower() != "x-forwarded-for"
        ]
        headers += list(injected.items())
        headers += [("X-Forwarded-For", forwarded_for(self.headers.get_all("X-Forwarded-For") or [],
                                                      self.client_address[0])),
                    ("X-Forwarded-Proto", "https"), ("Host", self.headers.get("Host", ""))]
        backend = urlsplit(self.server.config.backend)
        upstream = http.client.HTTPConnection(backend.hostname, backend.port or 80, timeout=60)
        try:
            upstream.putrequest(self.command, self.path, skip_host=True, skip_accept_encoding=True)
            for name, value in headers:
                upstream.putheader(name, value)
            upstream.putheader("Content-Length", str(len(body)))
            upstream.endheaders(body)
            response = upstream.getresponse()
            payload = response.read()
        except OSError as error:
            self.send_error(502, f"backend unavailable: {error}")
            return
        finally:
            upstream.close()
        self.send_response_only(response.status, response.reason)
        for name, value in response.getheaders():
            if name.lower() not in HOP_BY_HOP:
                self.send_header(name, value)
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(payload)

    do_GET = do_POST = do_HEAD = do_PUT = do_DELETE = do_PATCH = do_OPTIONS = _proxy

    def log_message(self, format: str, *args) -> None:
        if self.server.verbose:
            super().log_message(format, *args)


class MtlsGateway(socketserver.ThreadingMixIn, http.server.HTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, address: tuple[str, int], config: GatewayConfig, verbose: bool = False):
        self.config = config
        self.verbose = verbose
        self.tls = SSL.Context(SSL.TLS_SERVER_METHOD)
        self.tls.set_min_proto_version(SSL.TLS1_2_VERSION)
        self.tls.use_certificate_chain_file(config.cert_file)
        self.tls.use_privatekey_file(config.key_file)
        self.tls.load_verify_locations(config.ca_file)
        self.tls.set_verify(SSL.VERIFY_PEER, _record_verify_result)
        # OpenSSL refuses to resume a session of a context that verifies peers without one (the client
        # gets "internal error"), and clients that resume — Node, OpenSSL, the load balancer — do.
        self.tls.set_session_id(b"devtools.gateway")
        # A resumed session keeps its peer certificate but the verify callback does not run again:
        # the verdict of its full handshake, by certificate (DER SHA-256), stands in.
        self._verdicts: dict[bytes, tuple[int, ...]] = {}
        super().__init__(address, _Handler)

    def verdict(self, leaf: x509.Certificate | None, verification: _Verification) -> list[int]:
        """The verification errors of this handshake's peer certificate, whether or not it was resumed."""
        if leaf is None:
            return []
        key = leaf.fingerprint(hashes.SHA256())
        if verification.ran:
            self._verdicts[key] = tuple(verification.errors)
            return verification.errors
        # Unknown here means a session this gateway did not verify: fail closed.
        return list(self._verdicts.get(key, (X509_V_ERR_UNSPECIFIED,)))

    def get_request(self):
        sock, address = self.socket.accept()
        connection = SSL.Connection(self.tls, sock)
        connection.set_accept_state()
        return connection, address

    def shutdown_request(self, request) -> None:
        with contextlib.suppress(SSL.Error):
            request.shutdown()
        with contextlib.suppress(OSError):
            request.sock_shutdown(socket.SHUT_RDWR)
        request.close()


def _record_verify_result(connection: SSL.Connection, _cert, errnum: int, _depth: int, ok: int) -> bool:
    # ALLOW_INVALID_OR_MISSING_CLIENT_CERT: note the failure, finish the handshake anyway.
    verification: _Verification = connection.get_app_data()
    verification.ran = True
    if not ok:
        verification.errors.append(errnum)
    return True


def serve(host: str, port: int, config: GatewayConfig, verbose: bool = False) -> MtlsGateway:
    """Start the gateway on a background thread and return it (``.shutdown()`` stops it)."""
    gateway = MtlsGateway((host, port), config, verbose)
    threading.Thread(target=gateway.serve_forever, name="mtls-gateway", daemon=True).start()
    return gateway


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m devtools.gateway", description=__doc__.split("\n")[0])
    parser.add_argument("--backend", default="http://127.0.0.1:8080")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8443)
    parser.add_argument("--pki", default=".local/pki", help="folder with ca.pem, server.pem, server-key.pem")
    parser.add_argument("--san-shape", choices=SAN_SHAPES, default="each",
                        help="encode SAN lists item by item (each, what the function reads) or as one joined "
                             "blob (read as a single SAN, so several SANs fail closed)")
    parser.add_argument("--verbose", action="store_true")
    args = parser.parse_args(argv)
    config = GatewayConfig(
        backend=args.backend,
        ca_file=os.path.join(args.pki, "ca.pem"),
        cert_file=os.path.join(args.pki, "server.pem"),
        key_file=os.path.join(args.pki, "server-key.pem"),
        header_names=header_names_from_environment(os.environ),
        san_shape=args.san_shape,
        proxy_secret=proxy_secret_from_environment(os.environ),
    )
    gateway = MtlsGateway((args.host, args.port), config, args.verbose)
    print(f"mTLS gateway on https://{args.host}:{args.port} -> {args.backend}", file=sys.stderr, flush=True)
    with contextlib.suppress(KeyboardInterrupt):
        gateway.serve_forever()
    return 0


if __name__ == "__main__":
    sys.exit(main())
