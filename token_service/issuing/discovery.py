"""OpenID Provider metadata (OIDC Discovery 1.0 section 3).

Google's Security Token Service reads this document at
``<issuer>/.well-known/openid-configuration`` to find ``jwks_uri``. The shape
follows what Kubernetes API servers publish (WIF accepts those): no
authorization endpoint, because there is none.
"""

from __future__ import annotations

from typing import Any

from token_service.flows import FLOW_METADATA

DISCOVERY_PATH = "/.well-known/openid-configuration"


def discovery_document(
    *, issuer: str, jwks_uri: str, algorithm: str, enabled_flows: frozenset[str]
) -> dict[str, Any]:
    flows = sorted(enabled_flows)
    return {
        "issuer": issuer,
        "token_endpoint": f"{issuer}/token",
        "jwks_uri": jwks_uri,
        "response_types_supported": ["id_token"],
        "subject_types_supported": ["public"],
        "id_token_signing_alg_values_supported": [algorithm],
        "grant_types_supported": _distinct(FLOW_METADATA[flow][0] for flow in flows),
        "token_endpoint_auth_methods_supported": _distinct(
            method for flow in flows for method in FLOW_METADATA[flow][1]
        ),
        "claims_supported": ["iss", "aud", "sub", "iat", "exp", "jti", "amr", "client_id", "client", "cnf",
                             "assertion"],
    }


def _distinct(values) -> list[str]:
    return list(dict.fromkeys(values))
