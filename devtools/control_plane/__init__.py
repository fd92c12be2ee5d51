"""A stateful fake of Google's control plane, driven by the real ``gcloud``.

``deploy.sh`` is tested with the machine's real Google Cloud CLI against this
server: gcloud's endpoint overrides point every API at it, a dummy access token
authenticates, and the fake keeps state, answers operations as each API does,
and refuses what Google refuses for the fields deploy.sh uses. Development and
test tooling only: never deployed.

    python -m devtools.control_plane --port 8099   # then: eval "$(... --print-env)"
"""

from __future__ import annotations

from pathlib import Path

from devtools.control_plane.server import FAKE_HOST, ControlPlane, ControlPlaneServer

# gcloud's API name -> (our path prefix, the version gcloud expects inside the override, if any)
ENDPOINTS = {
    "compute": ("compute", "v1/"),
    "iam": ("iam", ""),
    "cloudfunctions": ("functions", ""),
    "run": ("run", ""),
    "serviceusage": ("serviceusage", ""),
    "cloudresourcemanager": ("crm", ""),
    "certificatemanager": ("certificatemanager", ""),
    "networksecurity": ("networksecurity", ""),
    "secretmanager": ("secretmanager", ""),
    "logging": ("logging", ""),
    "monitoring": ("monitoring", ""),
    "cloudbuild": ("cloudbuild", ""),
    "redis": ("redis", ""),
    "vpcaccess": ("vpcaccess", ""),
}


def new_control_plane(project_id: str = "my-project", project_number: str = "123456789012") -> ControlPlane:
    from devtools.control_plane import (
        certificates,
        compute,
        functions,
        iam,
        memorystore,
        observability,
        projects,
        secrets,
        vpc_access,
    )

    plane = ControlPlane(project_id=project_id, project_number=project_number)
    plane.install(*compute.APIS, *functions.APIS, *iam.APIS, *projects.APIS, *certificates.APIS,
                  *secrets.APIS, *observability.APIS, *memorystore.APIS, *vpc_access.APIS)
    return plane


def gcloud_environment(server: ControlPlaneServer, home: Path) -> dict[str, str]:
    """The environment under which the real gcloud (and curl) talk to this fake only."""
    config = home / "gcloud-config"
    config.mkdir(parents=True, exist_ok=True)
    token_file = home / "access-token"
    token_file.write_text(server.plane.token)
    proxy = f"http://127.0.0.1:{server.port}"
    environment = {
        "HOME": str(home),
        "CLOUDSDK_CONFIG": str(config),
        "CLOUDSDK_AUTH_ACCESS_TOKEN_FILE": str(token_file),
        "CLOUDSDK_CORE_DISABLE_PROMPTS": "1",
        "CLOUDSDK_CORE_DISABLE_USAGE_REPORTING": "1",
        "CLOUDSDK_COMPONENT_MANAGER_DISABLE_UPDATE_CHECK": "1",
        "CLOUDSDK_CORE_CHECK_GCE_METADATA": "false",
        "CLOUDSDK_PROXY_TYPE": "http",
        "CLOUDSDK_PROXY_ADDRESS": "127.0.0.1",
        "CLOUDSDK_PROXY_PORT": str(server.port),
        "http_proxy": proxy,  # curl, for the REST calls gcloud has no GA command for
        "no_proxy": "127.0.0.1,localhost",
    }
    for api, (prefix, version) in ENDPOINTS.items():
        environment[f"CLOUDSDK_API_ENDPOINT_OVERRIDES_{api.upper()}"] = f"http://{FAKE_HOST}/{prefix}/{version}"
    return environment
