"""The local stack: the function under the real functions-framework, behind the mTLS gateway.

    python -m devtools.local            # what `make run` starts

Used by `make run` and by the end-to-end tests, so both exercise the same thing. FUNCTION_PORT,
GATEWAY_PORT and EMULATOR_PORT (8080, 8443, 8090) and LOCAL_DIR (.local: the dev PKI, the signing key,
audit.log) move a run. However it stops (Ctrl-C, SIGTERM, SIGHUP, or killed), the function stops too.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import secrets
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from devtools import gateway, google_emulator
from devtools.pki import ensure_dev_pki

ROOT = Path(__file__).resolve().parent.parent
# Variables a developer may set to change `make run`'s function (see the README's configuration table).
SETTING_PREFIXES = ("TOKEN_", "WORKLOAD_", "MTLS_", "SIGNING_", "AUTH_", "AUDIT_", "SERVICE_ACCOUNT_", "REDIS_",
                    "UPSTREAM_", "STS_", "IAM_", "GOOGLE_CLOUD_PROJECT", "WORKERS", "THREADS", "PROXY_")


PROJECT_NUMBER = "123456789012"
POOL_ID = "local-pool"
PROVIDER_ID = "token-service"
RUNTIME_SERVICE_ACCOUNT = "token-service@local-project.iam.gserviceaccount.com"
WORKLOAD_SERVICE_ACCOUNT = "workload@local-project.iam.gserviceaccount.com"


def local_environment(
    local_dir: Path, gateway_port: int, emulator_port: int | None = None, overrides: Mapping[str, str] = ()
) -> dict[str, str]:
    """The embedded defaults of a local run; explicit settings in ``overrides`` win.

    With an emulator port, every Google endpoint (STS, IAM Credentials, the
    service-account keys, the metadata server) points at the local emulator.
    A new random proxy secret (as deploy.sh generates) for every call: the
    function and the gateway started with the result share it, so the function
    refuses whoever bypasses the gateway, as it refuses whoever bypasses the
    load balancer on Google.
    """
    defaults = {
        "PROXY_SECRETS": secrets.token_hex(32),
        "TOKEN_ISSUER": f"https://127.0.0.1:{gateway_port}",
        "WORKLOAD_IDENTITY_PROJECT_NUMBER": PROJECT_NUMBER,
        "WORKLOAD_IDENTITY_POOL_ID": POOL_ID,
        "WORKLOAD_IDENTITY_PROVIDER_ID": PROVIDER_ID,
        "TOKEN_SIGNER": "local",
        "SIGNING_KEY_FILE": str(local_dir / "signing-key.pem"),
    }
    if emulator_port is not None:
        emulator = f"http://127.0.0.1:{emulator_port}"
        defaults.update(
            STS_ENDPOINT=f"{emulator}/v1/token",
            IAM_CREDENTIALS_ENDPOINT=emulator,
            SERVICE_ACCOUNT_KEYS_ENDPOINT=emulator,
            GCE_METADATA_HOST=f"127.0.0.1:{emulator_port}",
            GCE_METADATA_IP=f"127.0.0.1:{emulator_port}",
        )
    environment = {**defaults, **dict(overrides)}
    if environment["TOKEN_SIGNER"] == "iam":
        environment.pop("SIGNING_KEY_FILE", None)
    return environment


def proxy_secret_headers(env: Mapping[str, str]) -> dict[str, str]:
    """The secret header the gateway adds, for whoever stands in for it when calling the function
    directly (the readiness probe, the bench's wrk, tests that play the load balancer)."""
    secret = gateway.proxy_secret_from_environment(env)
    return dict([secret]) if secret else {}


def start_emulator(pki_dir: Path, gateway_port: int, port: int = 0):
    """The Google emulator, trusting the dev CA so it can fetch the broker's discovery document."""
    emulator = google_emulator.local_emulator(
        issuer=f"https://127.0.0.1:{gateway_port}", project_number=PROJECT_NUMBER, pool_id=POOL_ID,
        provider_id=PROVIDER_ID, ca_file=str(pki_dir / "ca.pem"),
        runtime_service_account=RUNTIME_SERVICE_ACCOUNT, workload_service_account=WORKLOAD_SERVICE_ACCOUNT,
    )
    return emulator, google_emulator.serve(emulator, port)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


PR_SET_PDEATHSIG = 1  # linux/prctl.h
# Looked up once here: a child between fork and exec must not load libraries (another thread may hold the lock).
_prctl = ctypes.CDLL(None, use_errno=True).prctl if sys.platform.startswith("linux") else None


def _die_with_parent() -> None:
    """Have the kernel send this process SIGTERM when its parent dies, even by SIGKILL (Linux only; the
    parent is the thread that started it, so functions are started from the main thread)."""
    if _prctl is not None:
        _prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


@dataclass
class FunctionProcess:
    process: subprocess.Popen
    port: int

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def stop(self) -> None:
        """SIGTERM lets gunicorn stop its workers gracefully; if it hangs, its whole process group is killed
        (the group is its own, and the unreaped master keeps the group id from being reused)."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait()


def start_function(
    env: Mapping[str, str], port: int, *, stdout=None, stderr=None, ready_timeout: float = 30.0, root: Path = ROOT
) -> FunctionProcess:
    """Run ``root``'s main.py under functions-framework (gunicorn, not --debug) and wait until it answers;
    another ``root`` (a checkout of another commit) lets a bench compare two versions."""
    # Only the given settings reach the function: nothing from the developer's shell leaks in
    # (a GOOGLE_APPLICATION_CREDENTIALS there would change who the IAM signer is).
    inherited = {name: os.environ[name] for name in ("PATH", "HOME", "LANG", "TZ") if name in os.environ}
    command = [
        str(Path(sys.executable).parent / "functions-framework"),
        "--target=handle_request", f"--source={root / 'main.py'}",
        "--host=127.0.0.1", f"--port={port}",
    ]
    # Its own process group, so a terminal's Ctrl-C reaches only whoever started it, which stops it in
    # order; and it dies with its starter, whose SIGKILL leaves no chance to stop it.
    process = subprocess.Popen(
        command, cwd=root, env={**inherited, **env}, stdout=stdout, stderr=stderr,
        process_group=0, preexec_fn=_die_with_parent,
    )
    function = FunctionProcess(process, port)
    probe = urllib.request.Request(f"{function.url}/.well-known/openid-configuration",
                                   headers=proxy_secret_headers(env))
    try:
        deadline = time.monotonic() + ready_timeout
        while time.monotonic() < deadline:
            if process.poll() is not None:
                raise RuntimeError(f"the function exited with code {process.returncode} while starting")
            try:
                with urllib.request.urlopen(probe, timeout=1):
                    return function
            except OSError:
                time.sleep(0.05)
        raise RuntimeError("the function did not answer within the start-up timeout")
    except BaseException:  # a timeout, or a stop asked for while it starts
        function.stop()
        raise


def start_gateway(pki_dir: Path, port: int, backend: str, env: Mapping[str, str], san_shape: str = "each"):
    config = gateway.GatewayConfig(
        backend=backend,
        ca_file=str(pki_dir / "ca.pem"),
        cert_file=str(pki_dir / "server.pem"),
        key_file=str(pki_dir / "server-key.pem"),
        header_names=gateway.header_names_from_environment({**os.environ, **env}),
        san_shape=san_shape,
        proxy_secret=gateway.proxy_secret_from_environment({**os.environ, **env}),
    )
    return gateway.serve("127.0.0.1", port, config)


def _tee(stream, path: Path) -> None:
    """Copy the function's stdout to the console and to ``path`` (for `make logs`)."""
    def copy() -> None:
        with path.open("ab") as log:
            for line in iter(stream.readline, b""):
                sys.stdout.buffer.write(line)
                sys.stdout.flush()
                log.write(line)
                log.flush()

    threading.Thread(target=copy, name="audit-tee", daemon=True).start()


def _stop_on_signal(signum: int, _frame) -> None:
    # Python's default for SIGTERM and SIGHUP ends the process without running `finally`.
    raise SystemExit(128 + signum)


def main() -> int:
    parent = os.getppid()
    for signum in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(signum, _stop_on_signal)
    _die_with_parent()  # `make` killed: stop as if it had passed the SIGTERM on
    if os.getppid() != parent:  # it died before we asked
        return 0
    local_dir = Path(os.environ.get("LOCAL_DIR") or ROOT / ".local").resolve()
    paths = ensure_dev_pki(local_dir)
    function_port = int(os.environ.get("FUNCTION_PORT", "8080"))
    gateway_port = int(os.environ.get("GATEWAY_PORT", "8443"))
    emulator_port = int(os.environ.get("EMULATOR_PORT", "8090"))
    settings = {name: value for name, value in os.environ.items()
                if value and name.startswith(SETTING_PREFIXES)}
    env = local_environment(local_dir, gateway_port, emulator_port, settings)
    # The emulator and the gateway are threads of this process: they end with it.
    start_emulator(paths["ca"].parent, gateway_port, emulator_port)
    try:
        function = start_function(env, function_port, stdout=subprocess.PIPE)
    except KeyboardInterrupt:
        return 0
    try:
        _tee(function.process.stdout, local_dir / "audit.log")
        start_gateway(paths["ca"].parent, gateway_port, function.url, env)
        _announce(paths, local_dir / "audit.log", function, gateway_port, emulator_port, env)
        function.process.wait()
    except KeyboardInterrupt:
        pass
    finally:
        function.stop()
    return 0


def _announce(paths: Mapping[str, Path], audit_log: Path, function: FunctionProcess, gateway_port: int,
              emulator_port: int, env: Mapping[str, str]) -> None:
    relative = {name: os.path.relpath(path, ROOT) for name, path in {**paths, "audit_log": audit_log}.items()}
    secret_header = next(iter(proxy_secret_headers(env)), None)
    # The name only: the value is this run's secret, and a printed secret is a leaked one.
    guarded = (f"\n    (refuses requests without the {secret_header} header the gateway adds, with a secret"
               " generated for this run)" if secret_header else "")
    print(
        f"""
Token service running (local signer, dev PKI; tokens are signed by {relative['signing_key']}).
  function (functions-framework): {function.url}{guarded}
  mTLS gateway (plays the Google load balancer): https://127.0.0.1:{gateway_port}
  Google emulator (STS, IAM Credentials, metadata; its tokens are NOT Google's): http://127.0.0.1:{emulator_port}

Get an ID token with the dev client certificate:
  curl --cacert {relative['ca']} --cert {relative['client_cert']} --key {relative['client_key']} \\
       https://127.0.0.1:{gateway_port}/token -d grant_type=client_credentials

Add -d scope=https://www.googleapis.com/auth/cloud-platform for an (emulated) STS token, and
  -d service_account={WORKLOAD_SERVICE_ACCOUNT} to impersonate.
Discovery:  curl --cacert {relative['ca']} https://127.0.0.1:{gateway_port}/.well-known/openid-configuration
More client certificates:  .venv/bin/python -m devtools.pki client NAME --dns host.example --spiffe spiffe://td/x
Audit lines are printed below and kept in {relative['audit_log']} (make logs ARGS="--reason no_client_certificate").
Ctrl-C stops everything.
""",
        flush=True,
    )


if __name__ == "__main__":
    sys.exit(main())
