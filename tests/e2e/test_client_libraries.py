"""A real client nobody here wrote: google-auth's executable-sourced external_account credentials.

The credential configuration comes from `gcloud iam workload-identity-pools
create-cred-config` (the Google Cloud CLI on this machine); its executable is
curl with the client certificate, against the gateway, with format=external_credential.
Only the Google URLs are pointed at the emulator.
"""

from __future__ import annotations

import json
import shlex
import shutil
import subprocess

import google.auth.exceptions
import google.auth.pluggable
import google.auth.transport.requests
import pytest
import requests

from devtools.local import PROJECT_NUMBER, WORKLOAD_SERVICE_ACCOUNT

PROVIDER = f"projects/{PROJECT_NUMBER}/locations/global/workloadIdentityPools/local-pool/providers/token-service"
CLOUD_PLATFORM = "https://www.googleapis.com/auth/cloud-platform"

pytestmark = pytest.mark.skipif(shutil.which("gcloud") is None, reason="the Google Cloud CLI is not installed")


def credential_config(stack, tmp_path, service_account: str | None) -> dict:
    ca, (cert, key) = stack.pki["ca"], stack.certs["client"]
    command = (f"curl --silent --cacert {ca} --cert {cert} --key {key} {stack.url}/token "
               "--data grant_type=client_credentials --data format=external_credential")
    output = tmp_path / "token-service.json"
    arguments = ["gcloud", "iam", "workload-identity-pools", "create-cred-config", PROVIDER,
                 f"--output-file={output}", f"--executable-command={command}", "--executable-timeout-millis=10000"]
    if service_account:
        arguments.append(f"--service-account={service_account}")
    result = subprocess.run(arguments, capture_output=True, text=True, timeout=120,
                            env={"CLOUDSDK_CONFIG": str(tmp_path / "gcloud"), "PATH": "/usr/local/bin:/usr/bin:/bin"})
    assert result.returncode == 0, result.stderr
    config = json.loads(output.read_text())
    assert shlex.split(config["credential_source"]["executable"]["command"])[0] == "curl"
    # The one change: Google's endpoints are the emulator's.
    assert config["token_url"] == "https://sts.googleapis.com/v1/token"
    config["token_url"] = f"{stack.emulator_url}/v1/token"
    if service_account:
        config["service_account_impersonation_url"] = config["service_account_impersonation_url"].replace(
            "https://iamcredentials.googleapis.com", stack.emulator_url)
    output.write_text(json.dumps(config))
    return {"path": str(output), "config": config}


@pytest.fixture
def allow_executables(monkeypatch):
    monkeypatch.setenv("GOOGLE_EXTERNAL_ACCOUNT_ALLOW_EXECUTABLES", "1")
    monkeypatch.delenv("GOOGLE_APPLICATION_CREDENTIALS", raising=False)


def refresh(path: str):
    credentials = google.auth.pluggable.Credentials.from_file(path, scopes=[CLOUD_PLATFORM])
    session = requests.Session()
    session.trust_env = False
    credentials.refresh(google.auth.transport.requests.Request(session))
    return credentials


def test_google_auth_impersonates_through_the_broker(stack, tmp_path, allow_executables):
    generated = credential_config(stack, tmp_path, WORKLOAD_SERVICE_ACCOUNT)
    credentials = refresh(generated["path"])
    grant = stack.emulator.grant_for(f"Bearer {credentials.token}")
    assert grant.members == {f"serviceAccount:{WORKLOAD_SERVICE_ACCOUNT}"}
    assert CLOUD_PLATFORM in grant.scopes


def test_google_auth_gets_a_federated_token_through_the_broker(stack, tmp_path, allow_executables):
    generated = credential_config(stack, tmp_path, None)
    credentials = refresh(generated["path"])
    grant = stack.emulator.grant_for(f"Bearer {credentials.token}")
    assert any(member.endswith(f"/subject/{grant.subject}") for member in grant.members)


def test_google_auth_surfaces_the_brokers_refusal(stack, tmp_path, allow_executables):
    generated = credential_config(stack, tmp_path, WORKLOAD_SERVICE_ACCOUNT)
    config = generated["config"]
    # A client with a certificate from a CA the load balancer does not trust.
    foreign_cert, foreign_key = stack.certs["foreign"]
    command = config["credential_source"]["executable"]["command"]
    command = command.replace(stack.certs["client"][0], foreign_cert).replace(stack.certs["client"][1], foreign_key)
    config["credential_source"]["executable"]["command"] = command
    (tmp_path / "foreign.json").write_text(json.dumps(config))
    with pytest.raises(google.auth.exceptions.RefreshError) as raised:
        refresh(str(tmp_path / "foreign.json"))
    assert "invalid_client" in str(raised.value)
