"""The subject a client gets: the ID token's ``sub`` and ``client_id``, and so WIF's ``google.subject``.

Each flow's subjects lie in a namespace no other flow can produce, so one
Google principal never stands for clients of two flows:

- ``xlb-mtls-client-credentials``: the ``MTLS_HEADER_CLIENT_ID`` value as the
  load balancer sent it (the fingerprint by default), never starting with a
  reserved prefix;
- ``client-secret``: ``secret:<client_id>``;
- ``jwt-bearer``: ``jwt:<issuer name>:<sub>`` when that fits WIF's 127 bytes,
  else ``jwt-sha256:<issuer name>:<digest>``, the digest being the unpadded
  base64url SHA-256 of the assertion's ``sub`` (UTF-8). Issuer names have no
  colon and at most 40 characters, so the digest form always fits and each
  (issuer, sub) has exactly one subject.

https://cloud.google.com/iam/docs/workload-identity-federation#mapping
("google.subject ... cannot exceed 127 bytes").
"""

from __future__ import annotations

import base64
import hashlib

MAX_SUBJECT_BYTES = 127
SECRET_PREFIX = "secret:"
ASSERTION_PREFIX = "jwt:"
ASSERTION_DIGEST_PREFIX = "jwt-sha256:"
RESERVED_PREFIXES = (SECRET_PREFIX, ASSERTION_PREFIX, ASSERTION_DIGEST_PREFIX)


def secret_subject(client_id: str) -> str:
    return SECRET_PREFIX + client_id


def assertion_subject(issuer_name: str, subject: str) -> str:
    readable = f"{ASSERTION_PREFIX}{issuer_name}:{subject}"
    if len(readable.encode("utf-8", "surrogatepass")) <= MAX_SUBJECT_BYTES:
        return readable
    return f"{ASSERTION_DIGEST_PREFIX}{issuer_name}:{subject_digest(subject)}"


def subject_digest(subject: str) -> str:
    """What stands for a source subject too long to be read in the ID token's subject."""
    digest = hashlib.sha256(subject.encode("utf-8", "surrogatepass")).digest()
    return base64.urlsafe_b64encode(digest).decode().rstrip("=")


def reserved_prefix(client_id: str) -> str | None:
    """The other flows' prefix that ``client_id`` (a certificate's) starts with, in any letter case."""
    lowered = client_id.lower()
    return next((prefix for prefix in RESERVED_PREFIXES if lowered.startswith(prefix)), None)
