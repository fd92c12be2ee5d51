"""The metadata server: who the function runs as (the default IAM signer identity), and its token."""

from __future__ import annotations

import urllib.request
from collections.abc import Mapping

DEFAULT_HOST = "metadata.google.internal"
EMAIL_PATH = "/computeMetadata/v1/instance/service-accounts/default/email"
TOKEN_PATH = "/computeMetadata/v1/instance/service-accounts/default/token"
HEADERS = {"Metadata-Flavor": "Google"}


def url(environ: Mapping[str, str], path: str) -> str:
    # google-auth honours the same variable, so tests and local runs can point both at an emulator.
    host = environ.get("GCE_METADATA_HOST", "").strip() or DEFAULT_HOST
    return f"http://{host}{path}"


def runtime_service_account(environ: Mapping[str, str], timeout: float = 3.0) -> str:
    """The runtime service account's email; ``OSError`` if the metadata server cannot tell."""
    request = urllib.request.Request(url(environ, EMAIL_PATH), headers=HEADERS)
    with urllib.request.urlopen(request, timeout=timeout) as response:
        email = response.read().decode().strip()
    if "@" not in email:
        raise OSError(f"the metadata server returned {email[:80]!r}")
    return email
