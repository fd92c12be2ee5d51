"""The workload toolkit against the real stack: the credential helper as google-auth's executable,
its output-file cache, and the middleware verifying broker and Google-signed tokens."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import google.auth.pluggable
import google.auth.transport.requests
import pytest
import requests
from werkzeug.test import Client

from devtools.local import PROJECT_NUMBER, WORKLOAD_SERVICE_ACCOUNT
from workload_toolkit import BearerTokenMiddleware, IssuerKeys, trusted_issuer

PROVIDER = f"projects/{PROJECT_NUMBER}/locations/global/workloadIdentityPools/local-pool/providers/token-service"
CLOUD_PLATFORM = "https://www.googleapis.com/auth/cloud-platform"


def helper_command(stack, client="client") -> list[str]:
    cert, key = stack.certs[client]
    return [sys.executable, "-m", "workload_toolkit.credential_helper", "--broker", stack.url,
            "--cert", cert, "--key", key, "--ca-file", str(stack.pki["ca"])]


def run_helper(stack, *extra: str, client="client", env=None) -> subprocess.CompletedProcess:
    return subprocess.run([*helper_command(stack, client), *extra], capture_output=True, text=True, timeout=60,
                          env={**os.environ, **(env or {})})


def issued_count(stack) -> int:
    return sum(1 for entry in stack.audit_entries()
               if entry.get("logging.googleapis.com/labels", {}).get("outcome") == "issued")


def test_executable_output_is_exactly_the_format_and_nothing_else(stack):
    result = run_helper(stack)
    assert result.returncode == 0 and result.stderr == ""
    response = json.loads(result.stdout)
    assert set(response) == {"version", "success", "token_type", "id_token", "expiration_time"}
    failure = run_helper(stack, client="foreign")
    assert failure.returncode == 1 and failure.stderr == ""
    error = json.loads(failure.stdout)
    assert error["success"] is False and error["code"] == "invalid_client" and error["message"]


def test_output_file_cache_is_written_and_honoured(stack, tmp_path):
    cache = tmp_path / "cache.json"
    env = {"GOOGLE_EXTERNAL_ACCOUNT_OUTPUT_FILE": str(cache)}
    first = run_helper(stack, env=env)
    before = issued_count(stack)
    second = run_helper(stack, env=env)
    assert json.loads(cache.read_text()) == json.loads(first.stdout) == json.loads(second.stdout)
    assert issued_count(stack) == before, "the cached response was served without calling the broker"
    assert oct(cache.stat().st_mode & 0o777) == "0o600"


def test_oauth_and_token_formats_for_scripts(stack):
    token = run_helper(stack, "--format", "token", "--scope", CLOUD_PLATFORM, "--service-account",
                       WORKLOAD_SERVICE_ACCOUNT)
    assert token.returncode == 0
    assert stack.emulator.grant_for(f"Bearer {token.stdout.strip()}").members == {
        f"serviceAccount:{WORKLOAD_SERVICE_ACCOUNT}"}
    oauth = json.loads(run_helper(stack, "--format", "oauth").stdout)
    assert set(oauth) == {"id_token"}


@pytest.mark.skipif(shutil.which("gcloud") is None, reason="the Google Cloud CLI is not installed")
def test_google_auth_runs_the_helper_end_to_end(stack, tmp_path, monkeypatch):
    monkeypatch.setenv("GOOGLE_EXTERNAL_ACCOUNT_ALLOW_EXECUTABLES", "1")
    output = tmp_path / "creds.json"
    command = " ".join(helper_command(stack))
    result = subprocess.run(
        ["gcloud", "iam", "workload-identity-pools", "create-cred-config", PROVIDER, f"--output-file={output}",
         f"--service-account={WORKLOAD_SERVICE_ACCOUNT}", f"--executable-command={command}",
         f"--executable-output-file={tmp_path / 'token-cache.json'}", "--executable-timeout-millis=30000"],
        capture_output=True, text=True, timeout=120,
        env={"CLOUDSDK_CONFIG": str(tmp_path / "gcloud"), "PATH": os.environ["PATH"]})
    assert result.returncode == 0, result.stderr
    config = json.loads(output.read_text())
    config["token_url"] = f"{stack.emulator_url}/v1/token"
    config["service_account_impersonation_url"] = config["service_account_impersonation_url"].replace(
        "https://iamcredentials.googleapis.com", stack.emulator_url)
    output.write_text(json.dumps(config))
    credentials = google.auth.pluggable.Credentials.from_file(str(output), scopes=[CLOUD_PLATFORM])
    session = requests.Session()
    session.trust_env = False
    credentials.refresh(google.auth.transport.requests.Request(session))
    assert stack.emulator.grant_for(f"Bearer {credentials.token}").members == {
        f"serviceAccount:{WORKLOAD_SERVICE_ACCOUNT}"}
    assert json.loads((tmp_path / "token-cache.json").read_text())["success"] is True


def test_middleware_verifies_broker_tokens_and_google_id_tokens(stack):
    def app(environ, start_response):
        start_response("200 OK", [])
        return [environ["workload_toolkit.claims"]["sub"].encode()]

    audience = "https://ledger-abc.a.run.app"
    broker_audience = f"https://iam.googleapis.com/{PROVIDER}"
    middleware = BearerTokenMiddleware(
        app,
        issuers=[trusted_issuer("broker", stack.url),
                 trusted_issuer("google", "https://accounts.google.com", f"{stack.emulator_url}/oauth2/v3/certs")],
        audiences=[broker_audience, audience],
        keys=IssuerKeys(ca_file=str(stack.pki["ca"])),
    )
    client = Client(middleware)
    id_token = json.loads(run_helper(stack, "--format", "oauth").stdout)["id_token"]
    assert client.get("/", headers={"Authorization": f"Bearer {id_token}"}).status_code == 200
    google_token = run_helper(stack, "--format", "token", "--service-account", WORKLOAD_SERVICE_ACCOUNT,
                              "--audience", audience).stdout.strip()
    response = client.get("/", headers={"Authorization": f"Bearer {google_token}"})
    assert response.status_code == 200


def test_the_examples_pair_works_against_the_stack(stack, tmp_path):
    from devtools.local import ROOT, free_port

    port = free_port()
    env = {**os.environ, "BROKER": stack.url, "BROKER_CA": str(stack.pki["ca"]), "PORT": str(port),
           "PKI": str(stack.pki["ca"].parent), "SERVICE": f"http://127.0.0.1:{port}/"}
    service = subprocess.Popen([sys.executable, str(ROOT / "examples" / "protected_service.py")], env=env,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        import time

        for _ in range(100):
            try:
                requests.get(f"http://127.0.0.1:{port}/", timeout=1)
                break
            except requests.ConnectionError:
                time.sleep(0.05)
        result = subprocess.run([sys.executable, str(ROOT / "examples" / "client_workload.py")], env=env,
                                capture_output=True, text=True, timeout=60)
        assert result.stdout.startswith("200 ") and "spiffe://local.test/ns/demo/sa/workload" in result.stdout
        anonymous = requests.get(f"http://127.0.0.1:{port}/", timeout=5)
        assert anonymous.status_code == 401
    finally:
        service.terminate()
        service.wait()
