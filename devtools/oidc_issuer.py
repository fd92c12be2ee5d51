"""A local OIDC issuer that mints assertions for the jwt-bearer flow (tests and demos).

It serves ``/.well-known/openid-configuration`` and ``/jwks`` on loopback, like a
Kubernetes API server's service-account issuer, and mints tokens shaped like
projected service-account tokens. Keys can be rotated (a new ``kid`` appears)
and retired. Development tooling only: never deployed.
"""

from __future__ import annotations

import http.server
import json
import secrets
import socketserver
import threading
import time
import uuid
from typing import Any

import jwt
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from jwt.algorithms import ECAlgorithm, RSAAlgorithm


class LocalIssuer:
    def __init__(self, algorithm: str = "RS256"):
        self.algorithm = algorithm
        self._keys: dict[str, Any] = {}
        self.current_kid = self.rotate()
        self.requests = 0
        self.down = False  # answer 503 while True
        self._server: socketserver.TCPServer | None = None

    @property
    def url(self) -> str:
        assert self._server is not None
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def rotate(self) -> str:
        """Add a new signing key and sign with it from now on; returns its kid."""
        key = (rsa.generate_private_key(public_exponent=65537, key_size=2048) if self.algorithm == "RS256"
               else ec.generate_private_key(ec.SECP256R1()))
        kid = secrets.token_hex(8)
        self._keys[kid] = key
        self.current_kid = kid
        return kid

    def retire(self, kid: str) -> None:
        self._keys.pop(kid, None)

    def jwks(self) -> dict[str, Any]:
        keys = []
        for kid, key in self._keys.items():
            encoder = RSAAlgorithm if self.algorithm == "RS256" else ECAlgorithm
            keys.append({**encoder.to_jwk(key.public_key(), as_dict=True), "kid": kid})  # no alg, no use
        return {"keys": keys}

    def mint(self, *, audience: str | list[str], subject: str = "system:serviceaccount:payments:api",
             lifetime: int = 3600, kid: str | None = None, **claims: Any) -> str:
        """A Kubernetes-shaped projected service-account token."""
        now = int(time.time())
        namespace, _, name = subject.removeprefix("system:serviceaccount:").partition(":")
        payload = {
            "iss": self.url, "sub": subject, "aud": audience, "iat": now, "nbf": now, "exp": now + lifetime,
            "jti": str(uuid.uuid4()),
            "kubernetes.io": {"namespace": namespace, "serviceaccount": {"name": name, "uid": str(uuid.uuid4())},
                              "pod": {"name": f"{name}-7d4b9c", "uid": str(uuid.uuid4())}},
            **claims,
        }
        payload = {name: value for name, value in payload.items() if value is not None}  # None: omit the claim
        kid = kid or self.current_kid
        return jwt.encode(payload, self._keys[kid], algorithm=self.algorithm, headers={"kid": kid})

    def start(self) -> LocalIssuer:
        issuer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                issuer.requests += 1
                if issuer.down:
                    status, body = 503, {"error": "down"}
                elif self.path == "/.well-known/openid-configuration":
                    status, body = 200, {"issuer": issuer.url, "jwks_uri": f"{issuer.url}/jwks",
                                         "response_types_supported": ["id_token"],
                                         "subject_types_supported": ["public"],
                                         "id_token_signing_alg_values_supported": [issuer.algorithm]}
                elif self.path == "/jwks":
                    status, body = 200, issuer.jwks()
                else:
                    status, body = 404, {"error": "not found"}
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        server = socketserver.ThreadingTCPServer(("127.0.0.1", 0), Handler)
        server.daemon_threads = True
        self._server = server
        threading.Thread(target=server.serve_forever, name="local-issuer", daemon=True).start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
