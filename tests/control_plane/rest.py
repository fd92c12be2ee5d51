"""A REST request to the fake as gcloud sends it, without gcloud: fast enough for every refusal test."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from typing import Any

from devtools.control_plane.server import FAKE_HOST, ControlPlaneServer


def call(server: ControlPlaneServer, method: str, path: str, body: Any = None, host: str = FAKE_HOST,
         raw: bytes | None = None) -> tuple[int, Any]:
    """Through the fake as gcloud's proxy, to Google's (fake) host; the status and the JSON answer."""
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({"http": f"http://127.0.0.1:{server.port}"}))
    data = raw if raw is not None else json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(f"http://{host}/{path.lstrip('/')}", method=method, data=data,
                                     headers={"Authorization": "Bearer fake-access-token",
                                              "Content-Type": "application/json"})
    try:
        with opener.open(request) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())
