"""What `gcloud functions deploy` uploads: the function's code and nothing else."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.skipif(shutil.which("gcloud") is None, reason="the Google Cloud CLI is not installed")
def test_upload_is_exactly_the_function_code(tmp_path):
    result = subprocess.run(
        ["gcloud", "meta", "list-files-for-upload"], cwd=ROOT, capture_output=True, text=True, timeout=120,
        env={"CLOUDSDK_CONFIG": str(tmp_path), "PATH": "/usr/local/bin:/usr/bin:/bin"},
    )
    assert result.returncode == 0, result.stderr
    uploaded = set(result.stdout.split())
    expected = {"main.py", "requirements.txt"} | {
        str(path.relative_to(ROOT)) for path in (ROOT / "token_service").glob("*.py")
    }
    assert uploaded == expected
