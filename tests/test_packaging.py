"""What `gcloud functions deploy --source=.` uploads from this repository: the function's code and nothing else.

Checked on the archive the real gcloud uploads (to the control-plane fake), not with
`gcloud meta list-files-for-upload`, which walks the tree differently: with a `.gcloudignore`
rule matching the source root (`*`), it lists the files while the functions zipper uploads none.
"""

from __future__ import annotations

import io
import shutil
import subprocess
import zipfile
from pathlib import Path

import pytest

from tests.deploy_support import Project

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.skipif(shutil.which("gcloud") is None, reason="the Google Cloud CLI is not installed")
def test_upload_is_exactly_the_function_code(tmp_path):
    project = Project(tmp_path)
    try:
        # The default build and runtime accounts exist once Compute is on, as on Google.
        project.plane.enabled_services.update({"cloudfunctions.googleapis.com", "run.googleapis.com",
                                               "cloudbuild.googleapis.com", "artifactregistry.googleapis.com",
                                               "iam.googleapis.com", "compute.googleapis.com"})
        result = subprocess.run(
            ["gcloud", "--project=my-project", "functions", "deploy", "packaging-check", "--gen2",
             "--region=us-central1", "--runtime=python313", f"--source={ROOT}", "--entry-point=handle_request",
             "--trigger-http"], capture_output=True, text=True, timeout=300, env=project.environment)
        [archive] = [data for data in project.api("functions").uploads.values() if data]
    finally:
        project.close()
    assert result.returncode == 0, result.stderr
    uploaded = {name for name in zipfile.ZipFile(io.BytesIO(archive)).namelist() if not name.endswith("/")}
    expected = {"main.py", "requirements.txt"} | {
        str(path.relative_to(ROOT)) for path in (ROOT / "token_service").rglob("*.py")
    }
    assert uploaded == expected
