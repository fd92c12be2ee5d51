"""Run the control-plane fake and print the environment that points gcloud at it.

    python -m devtools.control_plane --home /tmp/fake-google &   # prints export lines
"""

from __future__ import annotations

import argparse
import shlex
import threading
from pathlib import Path

from devtools.control_plane import gcloud_environment, new_control_plane
from devtools.control_plane.server import ControlPlaneServer


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--home", type=Path, required=True, help="where gcloud's configuration and token go")
    parser.add_argument("--project", default="my-project")
    args = parser.parse_args(argv)
    with ControlPlaneServer(new_control_plane(args.project), args.port) as server:
        for name, value in gcloud_environment(server, args.home).items():
            print(f"export {name}={shlex.quote(value)}", flush=True)
        threading.Event().wait()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
