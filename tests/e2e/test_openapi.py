"""Schemathesis against openapi.yaml and the running function: no 5xx, documented statuses, content
types and response schemas, whatever the generated request."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_schemathesis_finds_no_server_error_and_no_undocumented_answer(stack, tmp_path):
    schemathesis = str(Path(sys.executable).parent / "st")
    result = subprocess.run(
        [schemathesis, "run", str(ROOT / "openapi.yaml"), "--url", stack.function_url, "--max-examples", "300",
         "--checks", "all",
         # A schema-valid request may still be refused: it may carry no certificate.
         "--exclude-checks", "positive_data_acceptance",
         "--generation-deterministic",
         # As the load balancer calls it: without its secret, every answer would be the same 403.
         *(option for name, value in stack.proxy_secret_headers.items() for option in ("-H", f"{name}: {value}"))],
        capture_output=True, text=True, timeout=600, cwd=tmp_path,
    )
    assert result.returncode == 0, result.stdout[-3000:]
    assert "passed" in result.stdout
