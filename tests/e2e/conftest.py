"""The local stack for end-to-end tests: real functions-framework, real mTLS gateway, real certificates."""

from __future__ import annotations

import json
import os
import textwrap
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

import pytest
import requests

from devtools.local import (
    WORKLOAD_SERVICE_ACCOUNT,
    free_port,
    local_environment,
    proxy_secret_headers,
    start_emulator,
    start_function,
    start_gateway,
)
from devtools.oidc_issuer import LocalIssuer
from devtools.pki import ensure_dev_pki, mint_client
from token_service.flows.rfc6749_client_secret import hash_secret

SCOPE = "https://www.googleapis.com/auth/cloud-platform"
SCANNER_SECRET = "scanner-secret-0123456789abcdef"
JWT_BEARER = "urn:ietf:params:oauth:grant-type:jwt-bearer"
ADMIN_URI = "https://admin.example/"  # policy_stack's admin-console rule admits a certificate with this URI SAN
LONG_NAMESPACE = "n" * 63  # the longest Kubernetes namespace: policy_stack's long-names rule admits it


@dataclass
class Stack:
    """One function process behind one or more gateways."""

    local_dir: Path
    pki: dict[str, Path]
    gateway_urls: dict[str, str]
    audit_file: Path
    emulator: object
    emulator_url: str
    certs: dict[str, tuple[str, str]] = field(default_factory=dict)
    function_url: str = ""  # behind no gateway: what an internal caller would reach
    # The secret header the gateways add: a test that plays the load balancer at function_url sends it.
    proxy_secret_headers: dict[str, str] = field(default_factory=dict, repr=False)

    @property
    def url(self) -> str:
        return self.gateway_urls["each"]

    def session(self, client: str | None = "client") -> requests.Session:
        session = requests.Session()
        # REQUESTS_CA_BUNDLE and proxy variables from the machine would override these.
        session.trust_env = False
        session.verify = str(self.pki["ca"])
        if client is not None:
            session.cert = self.certs[client]
        return session

    def post_token(self, client: str | None = "client", data=None, headers=None, gateway: str = "each"):
        """POST /token and return (response, the audit entry the function wrote for it)."""
        trace_id = uuid.uuid4().hex
        response = self.session(client).post(
            f"{self.gateway_urls[gateway]}/token",
            data=data if data is not None else {"grant_type": "client_credentials"},
            headers={"traceparent": f"00-{trace_id}-00f067aa0ba902b7-01", **(headers or {})},
            timeout=10,
        )
        return response, self.audit_entry(trace_id)

    def audit_entry(self, trace_id: str) -> dict:
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            matches = [entry for entry in self.audit_entries()
                       if entry.get("logging.googleapis.com/trace", "").endswith(trace_id)]
            if matches:
                assert len(matches) == 1, "exactly one audit line per attempt"
                return matches[0]
            time.sleep(0.02)
        raise AssertionError(f"no audit line for trace {trace_id}")

    def audit_entries(self) -> list[dict]:
        entries = []
        # The last line may still be being written by a worker: only complete lines count.
        for line in self.audit_file.read_text().split("\n")[:-1]:
            if line.startswith("{"):
                entries.append(json.loads(line))
        return entries


class SlowPipe:
    """The function's stdout as a pipe whose reader lags, as Cloud Run's log collector may on a busy
    instance: the pipe fills up, and a write of more than PIPE_BUF bytes may then be split around
    another worker's. What it reads goes to ``target``; the function's stderr to ``target.err``."""

    def __init__(self, target: Path, chunk: int = 512, pause: float = 0.001):
        read_end, self.write_end = os.pipe()
        self.stderr = target.with_suffix(".err").open("w")
        out = target.open("wb", buffering=0)  # there from the start, for the tests that read it
        self._thread = threading.Thread(target=self._drain, args=(read_end, out, chunk, pause), daemon=True)
        self._thread.start()

    @staticmethod
    def _drain(read_end: int, out: BinaryIO, chunk: int, pause: float) -> None:
        with os.fdopen(read_end, "rb", buffering=0) as pipe, out:
            while data := pipe.read(chunk):
                out.write(data)
                time.sleep(pause)

    def started(self) -> None:
        """The function holds the write end now: closing ours lets the reader see the end once it exits."""
        os.close(self.write_end)

    def close(self) -> None:
        self._thread.join(timeout=60)
        self.stderr.close()


def launch(tmp_path_factory, name: str, overrides: dict[str, str] | None = None, *, slow_pipe: bool = False):
    """As `make run` starts it: local_environment generates this stack's proxy secret, and the function
    and its gateways are started from the same environment, so they share it. With ``slow_pipe``, the
    function's stdout is a ``SlowPipe``."""
    local_dir = tmp_path_factory.mktemp(name)
    pki = ensure_dev_pki(local_dir)
    certs = {"client": (str(pki["client_cert"]), str(pki["client_key"]))}
    for client, options in {
        "foreign": dict(dns=["foreign.example"], foreign_ca=True),
        "expired": dict(dns=["expired.example"], expired=True),
        "no-eku": dict(dns=["noeku.example"], client_auth_eku=False),
        "multi": dict(dns=["a.fleet.example", "b.fleet.example"],
                      uris=["https://inventory.example/device/42", "urn:device:42"],
                      spiffe="spiffe://fleet.example/ns/meters/sa/meter-42"),
        "bare": dict(),
    }.items():
        issued = mint_client(local_dir, client, **options)
        certs[client] = (str(issued.certificate), str(issued.key))
    function_port, each_port, joined_port = free_port(), free_port(), free_port()
    emulator, emulator_server = start_emulator(pki["ca"].parent, each_port)
    emulator_port = emulator_server.server_address[1]
    env = local_environment(local_dir, each_port, emulator_port, overrides or {})
    audit_file = local_dir / "function.log"
    if slow_pipe:
        log = SlowPipe(audit_file)
        function = start_function(env, function_port, stdout=log.write_end, stderr=log.stderr)
        log.started()
    else:
        log = audit_file.open("w")
        function = start_function(env, function_port, stdout=log, stderr=log)
    gateways = [
        start_gateway(pki["ca"].parent, each_port, function.url, env, san_shape="each"),
        start_gateway(pki["ca"].parent, joined_port, function.url, env, san_shape="joined"),
        emulator_server,
    ]
    stack = Stack(local_dir, pki, {"each": f"https://127.0.0.1:{each_port}",
                                   "joined": f"https://127.0.0.1:{joined_port}"}, audit_file,
                  emulator, f"http://127.0.0.1:{emulator_port}", certs, function.url, proxy_secret_headers(env))
    return stack, function, gateways, log


# The stacks whose tests count, fail or reconfigure Google's calls: each request must reach Google. The
# cache of Google's tokens has its own stack (test_token_cache.py).
NO_TOKEN_CACHE = {"GOOGLE_TOKEN_CACHE": "off"}
PRODUCTION_SETTINGS = {"TOKEN_SIGNER": "iam", "AUDIT_LOG_HANDLER": "cloud-logging",
                       "GOOGLE_CLOUD_PROJECT": "local-project", "K_SERVICE": "token-service"}


def stop(function, servers, log) -> None:
    for server in servers:
        server.shutdown()
    function.stop()
    log.close()


@pytest.fixture(scope="session")
def stack(tmp_path_factory):
    stack, function, servers, log = launch(tmp_path_factory, "stack",
                                           {"UPSTREAM_RETRY_BUDGET": "1.5", **NO_TOKEN_CACHE})
    yield stack
    stop(function, servers, log)


@pytest.fixture(scope="session")
def spiffe_stack(tmp_path_factory):
    """A deployment that names clients by their SPIFFE ID."""
    stack, function, gateways, log = launch(
        tmp_path_factory, "spiffe", {"MTLS_HEADER_CLIENT_ID": "X-Client-Cert-SPIFFE", "TOKEN_VALIDITY": "10"}
    )
    yield stack
    stop(function, gateways, log)


@pytest.fixture(scope="session")
def uri_stack(tmp_path_factory):
    """A deployment that names clients by their first URI SAN, and holds one request that waits at a time."""
    stack, function, gateways, log = launch(tmp_path_factory, "uri", {
        "MTLS_HEADER_CLIENT_ID": "X-Client-Cert-URI-SANs", "THREADS": "2", "MAX_WAITING_REQUESTS": "1",
        "UPSTREAM_RETRY_BUDGET": "1.5"})
    for name, uri in {"uri-secret": "secret:legacy-scanner", "uri-jwt": "jwt:prod-cluster:system:serviceaccount:x:y",
                      "uri-plain": "https://inventory.example/device/7"}.items():
        issued = mint_client(stack.local_dir, name, uris=[uri])
        stack.certs[name] = (str(issued.certificate), str(issued.key))
    yield stack
    stop(function, gateways, log)


@pytest.fixture(scope="session")
def iam_stack(tmp_path_factory):
    """The production configuration: IAM signJwt as the runtime service account, google-cloud-logging,
    and K_SERVICE set as Cloud Functions sets it (the credentials are the metadata server's)."""
    stack, function, servers, log = launch(tmp_path_factory, "iam", PRODUCTION_SETTINGS)
    yield stack
    stop(function, servers, log)


@pytest.fixture(scope="session")
def issuer():
    issuer = LocalIssuer().start()
    yield issuer
    issuer.stop()


@pytest.fixture(scope="session")
def policy_stack(tmp_path_factory, issuer):
    policy = tmp_path_factory.mktemp("policy") / "policy.yaml"
    policy.write_text(textwrap.dedent(f"""\
        issuers:
          - name: prod-cluster
            issuer: {issuer.url}
          - name: unreachable
            issuer: http://127.0.0.1:9
        rules:
          - name: demo-workloads
            certificate:
              spiffe_id: spiffe://local.test/**
            allow:
              scopes: [{SCOPE}]
              claims: {{team: demo}}
          - name: admin-console
            certificate:
              uri_san: {ADMIN_URI}
            allow:
              service_accounts: [{WORKLOAD_SERVICE_ACCOUNT}]
              scopes: [{SCOPE}]
          - name: payments
            assertion:
              issuer: prod-cluster
              subject: system:serviceaccount:payments:*
              claims:
                kubernetes.io/namespace: payments
            allow:
              service_accounts: [{WORKLOAD_SERVICE_ACCOUNT}]
              scopes: [{SCOPE}]
          - name: scanner
            client_secret:
              client_id: legacy-scanner
              secret_hashes: ["{hash_secret(SCANNER_SECRET)}"]
          - name: unreachable-cluster
            assertion:
              issuer: unreachable
              subject: system:serviceaccount:payments:*
          - name: long-names
            assertion:
              issuer: prod-cluster
              subject: system:serviceaccount:{LONG_NAMESPACE}:*
            allow:
              service_accounts: [{WORKLOAD_SERVICE_ACCOUNT}]
              scopes: [{SCOPE}]
        """))
    stack, function, servers, log = launch(tmp_path_factory, "policy", {
        "POLICY_FILE": str(policy), "AUTH_FLOWS": "xlb-mtls-client-credentials,jwt-bearer,client-secret",
        "UPSTREAM_RETRY_BUDGET": "1.5", "UPSTREAM_TIMEOUT": "0.5", **NO_TOKEN_CACHE})
    stack.audience = stack.url  # the assertion's aud names the broker
    yield stack
    stop(function, servers, log)
