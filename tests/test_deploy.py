"""deploy.sh against the real Google Cloud CLI, with an empty configuration and no credentials.

Every gcloud command the script would run must get past gcloud's argument parsing
(and gcloud's own local validation of the files it reads): the only failure
allowed is the missing login.
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import subprocess
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from bench import PROCESS_SETTINGS
from tests.deploy_support import MTLS_VARIABLES

ROOT = Path(__file__).resolve().parent.parent
DEPLOY = str(ROOT / "deploy.sh")
PARSE_ERRORS = ("unrecognized arguments", "Invalid choice", "argument --", "expected one argument",
                "is not of type", "Failed validating", "must be specified", "Bad value", "invalid choice")
NEEDS_LOGIN = "You do not currently have an active account selected"

pytestmark = pytest.mark.skipif(shutil.which("gcloud") is None, reason="the Google Cloud CLI is not installed")


@pytest.fixture(scope="module")
def ca_pem(tmp_path_factory) -> Path:
    from devtools.pki import ensure_dev_pki

    return ensure_dev_pki(tmp_path_factory.mktemp("deploy-pki"))["ca"]


def gcloud_env(tmp_path: Path) -> dict[str, str]:
    config = tmp_path / "gcloud-config"
    config.mkdir(exist_ok=True)
    return {"PATH": os.environ["PATH"], "HOME": str(tmp_path), "CLOUDSDK_CONFIG": str(config),
            "CLOUDSDK_CORE_DISABLE_PROMPTS": "1", "DEPLOY_DIR": str(tmp_path / "deploy")}


def deploy(tmp_path: Path, *arguments: str, stdin: str = "") -> subprocess.CompletedProcess:
    return subprocess.run([DEPLOY, *arguments], capture_output=True, text=True, timeout=120, input=stdin,
                          env=gcloud_env(tmp_path))


def commands(output: str) -> list[list[str]]:
    return [shlex.split(line[2:]) for line in output.splitlines() if line.startswith("+ gcloud ")]


def dry_run(tmp_path: Path, ca_pem: Path, *extra: str) -> subprocess.CompletedProcess:
    result = deploy(tmp_path, "--dry-run", "--project", "my-project", "--fqdn", "token.example.com",
                    "--ca-cert", str(ca_pem), "--intermediate-cert", str(ca_pem), *extra)
    assert result.returncode == 0, result.stderr
    return result


def test_dry_run_shows_the_key_flags(tmp_path, ca_pem):
    output = dry_run(tmp_path, ca_pem).stdout
    deploy_line = next(line for line in output.splitlines() if " functions deploy " in line)
    for flag in ("--gen2", "--runtime=python313", "--entry-point=handle_request", "--trigger-http",
                 "--ingress-settings=internal-and-gclb", "--service-account=token-service@my-project.iam",
                 "--build-service-account=projects/my-project/serviceAccounts/token-service-build@my-project.iam",
                 "--set-secrets=PROXY_SECRETS=token-service-proxy-secret:", "--env-vars-file=", "--concurrency=256",
                 "--cpu=2", "--memory=1Gi", "--min-instances=0", "--max-instances=20"):
        assert flag in deploy_line, flag
    # The invoker setting is applied on its own, on every run (gcloud changes it only when asked).
    assert "allow-unauthenticated" not in deploy_line
    assert "run services add-iam-policy-binding token-service --region=us-central1 --member=allUsers" in output
    assert "--issuer-uri=https://token.example.com" in output
    assert "google.subject=assertion.client_id" in output
    assert "--network-endpoint-type=serverless --cloud-run-service=token-service" in output
    for variable in MTLS_VARIABLES:
        assert f"{{{variable}\\}}" in output, variable
    assert "--server-tls-policy=projects/my-project/locations/global/serverTlsPolicies/token-service-mtls" in output
    assert "--ssl-policy=token-service-tls12" in output and "--profile=MODERN --min-tls-version=1.2" in output
    assert "serviceAccountTokenCreator" not in output
    assert "--permissions=iam.serviceAccounts.signJwt " in output
    policy = (tmp_path / "deploy" / "server-tls-policy.yaml").read_text()
    assert "clientValidationMode: ALLOW_INVALID_OR_MISSING_CLIENT_CERT" in policy
    env = (tmp_path / "deploy" / "env.yaml").read_text()
    assert 'TOKEN_ISSUER: "https://token.example.com"' in env
    for name, value in PROCESS_SETTINGS.items():  # what `make bench` measures
        assert f'{name}: "{value}"' in env
    assert 'TOKEN_SIGNER: "iam"' in env
    assert "IN  A" in output and "create-cred-config" in output
    assert "logging metrics" not in output  # monitoring only when asked for
    assert " alpha " not in output and " beta " not in output  # GA commands only


def test_monitoring_option_creates_metrics_and_an_alert(tmp_path, ca_pem):
    output = dry_run(tmp_path, ca_pem, "--with-monitoring").stdout
    for metric in ("token_service_tokens_issued", "token_service_refusals", "token_service_upstream_latency"):
        assert f"logging metrics create {metric} --config-from-file=" in output
    assert "+ curl -X POST https://monitoring.googleapis.com/v3/projects/my-project/alertPolicies --data @" in output
    refusals = (tmp_path / "deploy" / "metric-token_service_refusals.yaml").read_text()
    assert "EXTRACT(labels.reason)" in refusals and 'labels.outcome="refused"' in refusals
    latency = (tmp_path / "deploy" / "metric-token_service_upstream_latency.yaml").read_text()
    assert "EXTRACT(jsonPayload.upstream_seconds)" in latency
    alert = json.loads((tmp_path / "deploy" / "alert-refusals.json").read_text())
    assert alert["conditions"][0]["conditionThreshold"]["comparison"] == "COMPARISON_GT"


def test_destroy_dry_run_prints_every_delete(tmp_path):
    result = deploy(tmp_path, "--destroy", "--dry-run", "--project", "my-project", "--fqdn", "t.example.com")
    assert result.returncode == 0, result.stderr
    for deleted in ("forwarding-rules delete token-service-https", "target-https-proxies delete token-service-proxy",
                    "url-maps delete", "backend-services delete", "network-endpoint-groups delete",
                    "ssl-certificates delete token-service-cert-", "ssl-policies delete", "server-tls-policies delete",
                    "trust-configs delete", "addresses delete", "logging metrics delete token_service_refusals",
                    "functions delete token-service", "secrets delete token-service-proxy-secret",
                    "providers delete token-service", "workload-identity-pools delete token-service",
                    "remove-iam-policy-binding my-project", "service-accounts delete token-service@",
                    "service-accounts delete token-service-build@", "roles delete token_service_signJwt"):
        assert deleted in result.stdout, deleted
    assert "+ curl -X DELETE https://monitoring.googleapis.com/v3/projects/my-project/alertPolicies/" in result.stdout


def test_dry_run_runs_no_gcloud_command(tmp_path, ca_pem):
    recorder = tmp_path / "bin"
    recorder.mkdir()
    (recorder / "gcloud").write_text(f"#!/bin/sh\necho called >> {tmp_path}/calls\nexit 1\n")
    (recorder / "gcloud").chmod(0o755)
    env = {**gcloud_env(tmp_path), "PATH": f"{recorder}:{os.environ['PATH']}"}
    result = subprocess.run([DEPLOY, "--dry-run", "--project", "my-project", "--fqdn", "t.example.com",
                             "--ca-cert", str(ca_pem)], capture_output=True, text=True, env=env, timeout=60)
    assert result.returncode == 0 and not (tmp_path / "calls").exists()


def test_every_command_gets_past_gclouds_argument_parsing(tmp_path, ca_pem):
    output = dry_run(tmp_path, ca_pem, "--min-instances", "1", "--with-monitoring", "--redis", "--auth-flows",
                     "xlb-mtls-client-credentials,jwt-bearer",
                     "--notification-channel", "projects/my-project/notificationChannels/123").stdout
    destroy = deploy(tmp_path, "--destroy", "--dry-run", "--yes", "--redis", "--project", "my-project", "--fqdn",
                     "t.example.com")
    assert destroy.returncode == 0, destroy.stderr
    planned = commands(output) + commands(destroy.stdout)
    assert len(planned) > 80

    def attempt(command: list[str]) -> tuple[list[str], subprocess.CompletedProcess]:
        return command, subprocess.run(command, capture_output=True, text=True, timeout=120, env=gcloud_env(tmp_path))

    with ThreadPoolExecutor(max_workers=4) as pool:
        results = list(pool.map(attempt, planned))
    for command, result in results:
        assert not any(error in result.stderr for error in PARSE_ERRORS), (command, result.stderr)
        assert result.returncode != 0 and NEEDS_LOGIN in result.stderr, (command, result.stderr)


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        (["--project", "my-project", "--ca-cert", "{ca}"], "--fqdn is required"),
        (["--project", "my-project", "--fqdn", "https://token.example.com/", "--ca-cert", "{ca}"], "DNS name"),
        (["--project", "my-project", "--fqdn", "t.example.com", "--ca-cert", "/nonexistent.pem"], "cannot read"),
        (["--project", "my-project", "--fqdn", "t.example.com", "--ca-cert", "{not_pem}"], "not a PEM"),
        (["--project", "my-project", "--fqdn", "t.example.com", "--ca-cert", "{bad_pem}"], "not a valid X.509"),
        (["--fqdn", "t.example.com", "--ca-cert", "{ca}"], "--project is required"),
        (["--project", "my-project", "--fqdn", "t.example.com"], "--ca-cert is required"),
        (["--bogus"], "unknown argument"),
        (["--project", "my-project", "--fqdn", "t.example.com", "--ca-cert", "{ca}", "--function",
          "token-service-x-2026-prod"], "6-24"),
        (["--project", "my-project", "--fqdn", "t.example.com", "--ca-cert", "{ca}", "--cpu", "3"], "--cpu must be"),
        (["--project", "my-project", "--fqdn", "t.example.com", "--ca-cert", "{ca}", "--cpu", "4", "--memory", "1Gi"],
         "does not fit --cpu 4"),
        (["--project", "my-project", "--fqdn", "t.example.com", "--ca-cert", "{ca}", "--invoker", "everyone"],
         "--invoker must be"),
        (["--project", "my-project", "--fqdn", "t.example.com", "--ca-cert", "{ca}", "--concurrency", "5000"],
         "1-1000"),
    ],
)
def test_bad_input_is_refused_before_anything_is_created(tmp_path, ca_pem, arguments, message):
    (tmp_path / "not.pem").write_text("hello")
    (tmp_path / "bad.pem").write_text("-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n")
    files = {"ca": str(ca_pem), "not_pem": str(tmp_path / "not.pem"), "bad_pem": str(tmp_path / "bad.pem")}
    recorder = tmp_path / "bin"
    recorder.mkdir()
    (recorder / "gcloud").write_text(f"#!/bin/sh\necho called >> {tmp_path}/calls\nexit 1\n")
    (recorder / "gcloud").chmod(0o755)
    env = {**gcloud_env(tmp_path), "PATH": f"{recorder}:{os.environ['PATH']}"}
    result = subprocess.run([DEPLOY, *[argument.format(**files) for argument in arguments]],
                            capture_output=True, text=True, env=env, timeout=60)
    assert result.returncode == 2
    assert message in result.stderr
    assert not (tmp_path / "calls").exists(), "gcloud was called"


def test_destroy_asks_first(tmp_path):
    result = deploy(tmp_path, "--destroy", "--project", "my-project", stdin="no\n")
    assert result.returncode != 0 and "not confirmed" in result.stderr
    assert "gcloud" not in result.stdout.split("Type the project id")[-1]


def test_shellcheck():
    shellcheck = shutil.which("shellcheck") or str(Path(os.sys.executable).parent / "shellcheck")
    result = subprocess.run([shellcheck, "--external-sources", "--source-path=SCRIPTDIR", DEPLOY,
                             str(ROOT / ".ci" / "run")], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout
