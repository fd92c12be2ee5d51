"""The claims of an issued ID token: the registered ones, the client's proof and a rule's extras.

What the client proved adds its own claims (``flows.proof_claims``); a policy
rule may add more.
"""

from __future__ import annotations

import uuid
from typing import Any, NamedTuple


class IdTokenClaims(NamedTuple):
    """The registered claims plus the broker's own, as one JSON-ready mapping."""

    payload: dict[str, Any]

    @property
    def jti(self) -> str:
        return self.payload["jti"]

    @property
    def expires_at(self) -> int:
        return self.payload["exp"]


def id_token_claims(
    *,
    issuer: str,
    audience: str,
    flow: str,
    client_id: str,
    issued_at: int,
    expires_at: int,
    proof_claims: dict[str, Any],
    extra_claims: dict[str, Any] | None = None,
) -> IdTokenClaims:
    payload: dict[str, Any] = {
        **(extra_claims or {}),
        "iss": issuer,
        "aud": audience,
        "sub": client_id,
        "iat": issued_at,
        "exp": expires_at,
        "jti": str(uuid.uuid4()),
        "amr": [flow],
        "client_id": client_id,
        **proof_claims,
    }
    return IdTokenClaims(payload)
