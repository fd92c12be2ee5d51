"""The control-plane fake, started per test, and the real gcloud pointed at it."""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from devtools.control_plane import gcloud_environment, new_control_plane
from devtools.control_plane.server import ControlPlane, ControlPlaneServer

requires_gcloud = pytest.mark.skipif(shutil.which("gcloud") is None, reason="the Google Cloud CLI is not installed")
ALL_SERVICES = ("compute.googleapis.com", "iam.googleapis.com", "cloudfunctions.googleapis.com",
                "run.googleapis.com", "cloudbuild.googleapis.com", "artifactregistry.googleapis.com",
                "certificatemanager.googleapis.com", "networksecurity.googleapis.com",
                "secretmanager.googleapis.com", "logging.googleapis.com", "monitoring.googleapis.com",
                "iamcredentials.googleapis.com", "sts.googleapis.com", "cloudresourcemanager.googleapis.com")


@pytest.fixture
def server() -> Iterator[ControlPlaneServer]:
    with ControlPlaneServer(new_control_plane()) as running:
        yield running


@pytest.fixture
def plane(server: ControlPlaneServer) -> ControlPlane:
    return server.plane


@pytest.fixture
def enabled(plane: ControlPlane) -> ControlPlane:
    """A project whose APIs are all enabled."""
    plane.enabled_services.update(ALL_SERVICES)
    return plane


@pytest.fixture
def gcloud(server: ControlPlaneServer, tmp_path: Path) -> Callable[..., subprocess.CompletedProcess]:
    """Run the real gcloud against the fake: gcloud("compute", "addresses", "list", ...)."""
    environment = {"PATH": __import__("os").environ["PATH"], **gcloud_environment(server, tmp_path)}

    def run(*arguments: str, stdin: str = "") -> subprocess.CompletedProcess:
        return subprocess.run(["gcloud", f"--project={server.plane.project_id}", *arguments], capture_output=True,
                              text=True, input=stdin, env=environment, timeout=120)

    return run
