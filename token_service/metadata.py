"""The metadata server: who the function runs as (the default IAM signer identity)."""

from __future__ import annotations

import urllib.request
from collections.abc import Mapping

DEFAULT_HOST = "metadata.google.internal"
EMAIL_PATH = "/computeMetadata/v1/instance/service-accounts/default/email"


def runtime_service_account(environ: Mapping[str, str], timeout: float = 3.0) -> str:
    """The runtime service account's email; ``OSError`` if the metadata server cannot tell."""
    # google-auth honours the same variable, so tests and local runs can point both at an emulator.
    host = environ.get("GCE_METADATA_HOST", "").strip() or DEFAULT_HOST
    request = urllib.request.Request(f"http://{host}{EMAIL_PATH}", headers={"Metadata-Flavor": "Google"})
    with urllib.request.urlopen(request, timeout=timeout) as response:
        email = response.read().decode().strip()
    if "@" not in email:
        raise OSError(f"the metadata server returned {email[:80]!r}")
    return email
