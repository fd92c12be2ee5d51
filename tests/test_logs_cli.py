"""`make logs`: the local audit file, filtered like the Cloud Logging queries."""

from __future__ import annotations

import json
import subprocess
import sys


def line(outcome: str, reason: str | None, client_id: str) -> str:
    labels = {"event": "token", "outcome": outcome, "status": "200" if outcome == "issued" else "401",
              "client_id": client_id, "header/x-client-cert-present": "true"}
    if reason:
        labels["reason"] = reason
    return json.dumps({"severity": "INFO", "message": f"{outcome} {client_id}",
                       "logging.googleapis.com/labels": labels})


def test_filters_by_reason_client_and_outcome(tmp_path):
    log = tmp_path / "audit.log"
    log.write_text("\n".join([
        "not json, e.g. a gunicorn line",
        line("issued", None, "alice"),
        line("refused", "no_client_certificate", "-"),
        line("refused", "certificate_not_verified", "bob"),
    ]) + "\n")

    def run(*arguments: str) -> list[str]:
        result = subprocess.run([sys.executable, "-m", "devtools.logs", str(log), *arguments],
                                capture_output=True, text=True, timeout=30)
        assert result.returncode == 0, result.stderr
        return result.stdout.splitlines()

    assert len(run()) == 3
    [refused] = run("--reason", "certificate_not_verified")
    assert "bob" in refused and "refused" in refused
    assert len(run("--outcome", "issued")) == 1 and "alice" in run("--client-id", "alice")[0]
    verbose = run("--reason", "no_client_certificate", "-v")
    assert any("header/x-client-cert-present = 'true'" in row for row in verbose)


def test_missing_file_says_how_to_get_one(tmp_path):
    result = subprocess.run([sys.executable, "-m", "devtools.logs", str(tmp_path / "none.log")],
                            capture_output=True, text=True, timeout=30)
    assert result.returncode == 1 and "make run" in result.stderr
