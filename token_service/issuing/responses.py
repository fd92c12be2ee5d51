"""Token endpoint response bodies, in the two formats clients ask for.

``oauth`` is RFC 6749 section 5.1/5.2 JSON. ``external_credential`` is the
executable-sourced credential format Google client libraries read from a
credential helper's stdout (AIP-4117): the same statuses, another body.
"""

from __future__ import annotations

from typing import Any, NamedTuple

from token_service.errors import OAuthError
from token_service.google.exchange import ExchangedToken
from token_service.google.sts import ID_TOKEN_TYPE
from token_service.request import EXTERNAL_CREDENTIAL_FORMAT

EXECUTABLE_RESPONSE_VERSION = 1


class IssuedTokens(NamedTuple):
    id_token: str
    id_token_expires_at: int
    exchanged: ExchangedToken | None = None
    jti: str = ""  # the ID token's, for the audit line


def success_body(tokens: IssuedTokens, response_format: str) -> dict[str, Any]:
    if response_format == EXTERNAL_CREDENTIAL_FORMAT:
        return {
            "version": EXECUTABLE_RESPONSE_VERSION,
            "success": True,
            "token_type": ID_TOKEN_TYPE,
            "id_token": tokens.id_token,
            "expiration_time": tokens.id_token_expires_at,
        }
    body: dict[str, Any] = {"id_token": tokens.id_token}
    exchanged = tokens.exchanged
    if exchanged is not None:
        body.update(
            access_token=exchanged.access_token,
            issued_token_type=exchanged.issued_token_type,
            token_type="Bearer",
            expires_in=exchanged.expires_in,
        )
        if exchanged.scope:
            body["scope"] = exchanged.scope
    return body


def error_body(error: OAuthError, response_format: str) -> dict[str, Any]:
    # The reason is the audit line's label too: a client can quote it, operators query by it.
    description = f"{error.description} (reason: {error.reason.value})"
    if response_format == EXTERNAL_CREDENTIAL_FORMAT:
        return {
            "version": EXECUTABLE_RESPONSE_VERSION,
            "success": False,
            "code": error.error,
            "message": description,
        }
    return {"error": error.error, "error_description": description}
