"""The metadata server: who the function runs as (the default IAM signer identity), and its token."""

from __future__ import annotations

import http.client
from collections.abc import Mapping

DEFAULT_HOST = "metadata.google.internal"
EMAIL_PATH = "/computeMetadata/v1/instance/service-accounts/default/email"
TOKEN_PATH = "/computeMetadata/v1/instance/service-accounts/default/token"
HEADERS = {"Metadata-Flavor": "Google"}


def host(environ: Mapping[str, str]) -> str:
    # google-auth honours the same variable, so tests and local runs can point both at an emulator.
    return environ.get("GCE_METADATA_HOST", "").strip() or DEFAULT_HOST


def url(environ: Mapping[str, str], path: str) -> str:
    return f"http://{host(environ)}{path}"


def runtime_service_account(environ: Mapping[str, str], timeout: float = 3.0) -> str:
    """The runtime service account's email; ``OSError`` if the metadata server cannot tell.

    One plain GET, asked once at cold start: never through a proxy (the metadata server is
    link-local), and ``http.client`` is loaded already, where urllib.request would add its import."""
    connection = http.client.HTTPConnection(host(environ), timeout=timeout)
    try:
        connection.request("GET", EMAIL_PATH, headers=HEADERS)
        response = connection.getresponse()
        email = response.read(512).decode(errors="replace").strip()
    except http.client.HTTPException as error:
        raise OSError(f"malformed answer: {error!r}") from None
    finally:
        connection.close()
    if response.status != 200:
        raise OSError(f"the metadata server answered {response.status}: {email[:80]!r}")
    if "@" not in email:
        raise OSError(f"the metadata server returned {email[:80]!r}")
    return email
