"""TLS session resumption through the mTLS gateway, as clients that keep sessions (Node, OpenSSL, Python,
Google's load balancer) reconnect: the resumed connection still carries its client certificate's verdict."""

from __future__ import annotations

import http.client
import json
import shutil
import socket
import ssl
import subprocess
from urllib.parse import urlsplit

import jwt
import pytest

# Node's https agent keeps TLS sessions between connections, as its fetch does (the npm jose verifier's client).
NODE_CLIENT = """
import https from "node:https";
import fs from "node:fs";
const [url, ca, cert, key] = process.argv.slice(1);
const agent = new https.Agent({ca: fs.readFileSync(ca), cert: fs.readFileSync(cert), key: fs.readFileSync(key)});
const post = () => new Promise((resolve, reject) => {
  const request = https.request(`${url}/token`, {method: "POST", agent,
    headers: {"Content-Type": "application/x-www-form-urlencoded"}}, (response) => {
    let body = "";
    response.on("data", (chunk) => (body += chunk));
    response.on("end", () => resolve({status: response.statusCode, reused: request.socket.isSessionReused(),
                                      body: JSON.parse(body)}));
  });
  request.on("error", reject);
  request.end("grant_type=client_credentials");
});
const results = [];
for (let i = 0; i < 2; i++) results.push(await post());
console.log(JSON.stringify(results));
"""
BODY = b"grant_type=client_credentials"
REQUEST = (b"POST /token HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/x-www-form-urlencoded\r\n"
           b"Content-Length: %d\r\nConnection: close\r\n\r\n%s" % (len(BODY), BODY))


def client_context(stack, client: str, version: ssl.TLSVersion) -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=str(stack.pki["ca"]))
    context.load_cert_chain(*stack.certs[client])
    context.minimum_version = context.maximum_version = version
    return context


def post_token(stack, context: ssl.SSLContext, session: ssl.SSLSession | None = None):
    """One POST /token on its own connection; returns (status, body, the TLS session, whether it was resumed)."""
    address = urlsplit(stack.url)
    raw = socket.create_connection((address.hostname, address.port), timeout=10)
    with context.wrap_socket(raw, server_hostname=address.hostname, session=session) as tls:
        tls.sendall(REQUEST)
        response = http.client.HTTPResponse(tls)
        response.begin()
        body = json.loads(response.read())
        # Read before taking the session: TLS 1.3 tickets arrive after the handshake.
        return response.status, body, tls.session, tls.session_reused


@pytest.mark.parametrize("version", [ssl.TLSVersion.TLSv1_2, ssl.TLSVersion.TLSv1_3], ids=["tls1.2", "tls1.3"])
def test_a_resumed_session_gets_a_token_for_its_certificate(stack, version):
    context = client_context(stack, "client", version)
    status, first, session, reused = post_token(stack, context)
    assert status == 200 and not reused, first
    status, second, _, reused = post_token(stack, context, session)
    assert reused
    assert status == 200, second
    claims = [jwt.decode(body["id_token"], options={"verify_signature": False}) for body in (first, second)]
    assert claims[1]["sub"] == claims[0]["sub"] and claims[1]["client"] == claims[0]["client"]
    assert claims[1]["jti"] != claims[0]["jti"]


@pytest.mark.parametrize("client", ["foreign", "no-eku"])
def test_a_resumed_session_keeps_its_failed_verification(stack, client):
    context = client_context(stack, client, ssl.TLSVersion.TLSv1_3)
    status, first, session, _ = post_token(stack, context)
    assert status == 401, first
    status, second, _, reused = post_token(stack, context, session)
    assert reused
    assert status == 401 and second == first


def test_openssl_s_client_resumes_and_gets_a_token(stack, tmp_path):
    address = urlsplit(stack.url)
    cert, key = stack.certs["client"]
    session_file = tmp_path / "session.pem"

    def s_client(*session_option: str) -> str:
        result = subprocess.run(
            ["openssl", "s_client", "-connect", f"{address.hostname}:{address.port}", "-cert", cert, "-key", key,
             "-CAfile", str(stack.pki["ca"]), "-verify_return_error", "-ign_eof", *session_option],
            input=REQUEST, capture_output=True, timeout=20,
        )
        return result.stdout.decode(errors="replace") + result.stderr.decode(errors="replace")

    first = s_client("-sess_out", str(session_file))
    assert "HTTP/1.1 200" in first and "\nNew, " in first, first
    second = s_client("-sess_in", str(session_file))
    assert "\nReused, " in second, second
    assert "HTTP/1.1 200" in second and '"id_token"' in second, second


@pytest.mark.skipif(shutil.which("node") is None, reason="needs Node.js")
def test_node_resumes_and_gets_a_token(stack):
    result = subprocess.run(
        ["node", "--input-type=module", "-e", NODE_CLIENT, stack.url, str(stack.pki["ca"]), *stack.certs["client"]],
        capture_output=True, text=True, timeout=30,
    )
    assert result.returncode == 0, result.stderr
    first, second = json.loads(result.stdout)
    assert not first["reused"] and second["reused"]
    assert first["status"] == second["status"] == 200, result.stdout
    claims = [jwt.decode(r["body"]["id_token"], options={"verify_signature": False}) for r in (first, second)]
    assert claims[1]["sub"] == claims[0]["sub"]
