"""The local stack: the function under the real functions-framework, behind the mTLS gateway.

    python -m devtools.local            # what `make run` starts

Used by `make run` and by the end-to-end tests, so both exercise the same thing.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from devtools import gateway
from devtools.pki import ensure_dev_pki

ROOT = Path(__file__).resolve().parent.parent


def local_environment(local_dir: Path, gateway_port: int, overrides: Mapping[str, str] = ()) -> dict[str, str]:
    """The embedded defaults of a local run; explicit settings in ``overrides`` win."""
    defaults = {
        "TOKEN_ISSUER": f"https://127.0.0.1:{gateway_port}",
        "WORKLOAD_IDENTITY_PROJECT_NUMBER": "123456789012",
        "WORKLOAD_IDENTITY_POOL_ID": "local-pool",
        "WORKLOAD_IDENTITY_PROVIDER_ID": "token-service",
        "TOKEN_SIGNER": "local",
        "SIGNING_KEY_FILE": str(local_dir / "signing-key.pem"),
    }
    return {**defaults, **dict(overrides)}


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@dataclass
class FunctionProcess:
    process: subprocess.Popen
    port: int

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


def start_function(
    env: Mapping[str, str], port: int, *, stdout=None, stderr=None, ready_timeout: float = 30.0
) -> FunctionProcess:
    """Run main.py under functions-framework (gunicorn, not --debug) and wait until it answers."""
    command = [
        str(Path(sys.executable).parent / "functions-framework"),
        "--target=handle_request", f"--source={ROOT / 'main.py'}",
        "--host=127.0.0.1", f"--port={port}",
    ]
    process = subprocess.Popen(
        command, cwd=ROOT, env={**os.environ, **env}, stdout=stdout, stderr=stderr
    )
    function = FunctionProcess(process, port)
    deadline = time.monotonic() + ready_timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"the function exited with code {process.returncode} while starting")
        try:
            with urllib.request.urlopen(f"{function.url}/.well-known/openid-configuration", timeout=1):
                return function
        except OSError:
            time.sleep(0.05)
    function.stop()
    raise RuntimeError("the function did not answer within the start-up timeout")


def start_gateway(pki_dir: Path, port: int, backend: str, env: Mapping[str, str], san_shape: str = "each"):
    config = gateway.GatewayConfig(
        backend=backend,
        ca_file=str(pki_dir / "ca.pem"),
        cert_file=str(pki_dir / "server.pem"),
        key_file=str(pki_dir / "server-key.pem"),
        header_names=gateway.header_names_from_environment({**os.environ, **env}),
        san_shape=san_shape,
    )
    return gateway.serve("127.0.0.1", port, config)


def main() -> int:
    local_dir = ROOT / ".local"
    paths = ensure_dev_pki(local_dir)
    function_port = int(os.environ.get("FUNCTION_PORT", "8080"))
    gateway_port = int(os.environ.get("GATEWAY_PORT", "8443"))
    env = local_environment(local_dir, gateway_port, {k: v for k, v in os.environ.items() if v})
    function = start_function(env, function_port)
    start_gateway(paths["ca"].parent, gateway_port, function.url, env)
    relative = {name: path.relative_to(ROOT) for name, path in paths.items()}
    print(
        f"""
Token service running (local signer, dev PKI; tokens are signed by {relative['signing_key']}).
  function (functions-framework): {function.url}
  mTLS gateway (plays the Google load balancer): https://127.0.0.1:{gateway_port}

Get an ID token with the dev client certificate:
  curl --cacert {relative['ca']} --cert {relative['client_cert']} --key {relative['client_key']} \\
       https://127.0.0.1:{gateway_port}/token -d grant_type=client_credentials

Discovery:  curl --cacert {relative['ca']} https://127.0.0.1:{gateway_port}/.well-known/openid-configuration
More client certificates:  .venv/bin/python -m devtools.pki client NAME --dns host.example --spiffe spiffe://td/x
Audit lines are printed below. Ctrl-C stops both.
""",
        flush=True,
    )
    try:
        function.process.wait()
    except KeyboardInterrupt:
        pass
    finally:
        function.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
