"""deploy.sh run by the real gcloud against the control-plane fake: one project per ``Project``."""

from __future__ import annotations

import os
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from devtools.control_plane import gcloud_environment, new_control_plane
from devtools.control_plane.server import ControlPlane, ControlPlaneServer, Event

ROOT = Path(__file__).resolve().parent.parent
DEPLOY = str(ROOT / "deploy.sh")
MTLS_VARIABLES = ("client_cert_present", "client_cert_chain_verified", "client_cert_error",
                  "client_cert_sha256_fingerprint", "client_cert_serial_number", "client_cert_spiffe_id",
                  "client_cert_uri_sans", "client_cert_dnsname_sans", "client_cert_valid_not_before",
                  "client_cert_valid_not_after")


@dataclass
class Run:
    result: subprocess.CompletedProcess
    changes: list[Event]

    @property
    def ok(self) -> bool:
        return self.result.returncode == 0

    def __str__(self) -> str:
        return f"exit {self.result.returncode}\n{self.result.stdout[-3000:]}\n{self.result.stderr[-3000:]}"


class Project:
    """A fresh fake project and deploy.sh pointed at it."""

    def __init__(self, home: Path):
        self.home = home
        self.server = ControlPlaneServer(new_control_plane())
        self.server.__enter__()
        self.environment = {"PATH": os.environ["PATH"], **gcloud_environment(self.server, home),
                            "DEPLOY_DIR": str(home / "deploy")}

    @property
    def plane(self) -> ControlPlane:
        return self.server.plane

    def api(self, prefix: str) -> Any:
        return self.plane.apis[prefix]

    def deploy(self, *arguments: str, stdin: str = "", **environment: str) -> Run:
        before = len(self.plane.journal)
        result = subprocess.run([DEPLOY, "--project", self.plane.project_id, *arguments], capture_output=True,
                                text=True, input=stdin, env={**self.environment, **environment}, timeout=900)
        return Run(result, self.plane.journal[before:])

    def close(self) -> None:
        self.server.__exit__(None, None, None)
