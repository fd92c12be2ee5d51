"""Fail closed: a misconfigured function stops its cold start with one clear message."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from devtools.local import ROOT, free_port, local_environment
from devtools.pki import ensure_dev_pki


def start(env: dict[str, str]) -> subprocess.CompletedProcess:
    functions_framework = str(Path(sys.executable).parent / "functions-framework")
    clean = {name: value for name, value in os.environ.items()
             if not name.startswith(("TOKEN_", "WORKLOAD_", "MTLS_", "SIGNING_", "AUTH_", "PROXY_", "K_SERVICE"))}
    return subprocess.run(
        [functions_framework, "--target=handle_request", "--host=127.0.0.1", f"--port={free_port()}"],
        cwd=ROOT, env={**clean, **env}, capture_output=True, text=True, timeout=60,
    )


@pytest.fixture(scope="module")
def good_env(tmp_path_factory) -> dict[str, str]:
    local_dir = tmp_path_factory.mktemp("startup")
    ensure_dev_pki(local_dir)
    return local_environment(local_dir, 8443)


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        ({"TOKEN_ISSUER": "http://token.example.net"}, "TOKEN_ISSUER"),
        ({"WORKLOAD_IDENTITY_PROJECT_NUMBER": "my-project"}, "WORKLOAD_IDENTITY_PROJECT_NUMBER"),
        ({"WORKLOAD_IDENTITY_POOL_ID": ""}, "WORKLOAD_IDENTITY_POOL_ID is required"),
        ({"SIGNING_KEY_FILE": "/nonexistent/key.pem"}, "SIGNING_KEY_FILE"),
        ({"MTLS_HEADER_CLIENT_ID": "X-Client-Cert-Present"}, "MTLS_HEADER_CLIENT_ID"),
        ({"POLICY_FILE": "{bad_policy}"}, "line 3"),
        ({"POLICY_FILE": "/nonexistent/policy.yaml"}, "POLICY_FILE"),
        ({"AUTH_FLOWS": "jwt-bearer"}, "set POLICY_FILE"),
        ({"TOKEN_SIGNER": "iam", "SIGNING_KEY_FILE": "", "GCE_METADATA_HOST": "127.0.0.1:9"},
         "SIGNING_SERVICE_ACCOUNT"),
        ({"K_SERVICE": "token-service", "PROXY_SECRETS": ""}, "set PROXY_SECRETS: "),
        ({"PROXY_SECRETS": "too-short-to-be-the-secret"}, "PROXY_SECRETS: value 1 of 1 is not a valid secret"),
        ({"PROXY_SECRETS": "\n".join(["0123456789abcdef" * 4] * 3)}, "PROXY_SECRETS holds 3 values"),
    ],
)
def test_misconfiguration_stops_the_cold_start(good_env, tmp_path, change, expected):
    bad_policy = tmp_path / "policy.yaml"
    bad_policy.write_text("rules:\n  - name: a\n    certificate: {}\n")
    result = start({**good_env, **{name: value.format(bad_policy=bad_policy) for name, value in change.items()}})
    assert result.returncode != 0
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    entry = json.loads(lines[0])
    assert entry["severity"] == "CRITICAL"
    assert expected in entry["message"]
    assert "Traceback" not in result.stderr
    for secret in filter(None, (change.get("PROXY_SECRETS") or good_env["PROXY_SECRETS"]).split("\n")):
        assert secret not in result.stderr and secret not in result.stdout
