"""deploy.sh --verify, the post-deploy check, against the local stack (the gateway plays the load balancer)."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path
from urllib.parse import urlsplit

DEPLOY = str(Path(__file__).resolve().parents[2] / "deploy.sh")


def verify(stack, url: str) -> subprocess.CompletedProcess:
    issuer = urlsplit(stack.url).netloc  # what TOKEN_ISSUER names, as --fqdn would
    environment = {"PATH": os.environ["PATH"], "HOME": str(stack.local_dir)}
    return subprocess.run([DEPLOY, "--fqdn", issuer, "--verify", "--verify-url", url,
                           "--verify-cacert", str(stack.pki["ca"])], capture_output=True, text=True,
                          env=environment, timeout=60)


def test_verify_passes_through_the_load_balancer(stack):
    result = verify(stack, stack.url)
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.count("ok ") == 3, result.stdout


def test_verify_fails_where_the_stack_is_not_as_it_should_be(stack):
    """Straight at the function, without the load balancer's secret, every check fails."""
    result = verify(stack, stack.function_url)
    assert result.returncode != 0
    assert result.stdout.count("FAIL") == 3, result.stdout
