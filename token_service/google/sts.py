"""Google Security Token Service: RFC 8693 token exchange of our ID token.

Sent form-encoded with snake_case fields and no Authorization header, as
google-auth does; STS answers errors in OAuth form (``error``,
``error_description``), not in Google's error envelope.
"""

from __future__ import annotations

from typing import NamedTuple
from urllib.parse import urlencode

from token_service.errors import StsRefused, UpstreamUnavailable
from token_service.google.transport import UpstreamClient, UpstreamResponse

TOKEN_EXCHANGE_GRANT = "urn:ietf:params:oauth:grant-type:token-exchange"
ACCESS_TOKEN_TYPE = "urn:ietf:params:oauth:token-type:access_token"
ID_TOKEN_TYPE = "urn:ietf:params:oauth:token-type:id_token"


class FederatedToken(NamedTuple):
    access_token: str
    expires_in: int
    scope: str


class StsClient:
    def __init__(self, client: UpstreamClient, endpoint: str):
        self._client = client
        self._endpoint = endpoint

    def exchange(self, subject_token: str, audience: str, scope: str) -> FederatedToken:
        form = {
            "grant_type": TOKEN_EXCHANGE_GRANT,
            "audience": audience,
            "scope": scope,
            "requested_token_type": ACCESS_TOKEN_TYPE,
            "subject_token": subject_token,
            "subject_token_type": ID_TOKEN_TYPE,
        }
        response = self._client.post(
            "Google STS", self._endpoint, body=urlencode(form).encode(),
            headers={"Content-Type": "application/x-www-form-urlencoded"},
        )
        if response.status != 200:
            raise StsRefused(response.status, *_oauth_error(response), response.body)
        try:
            answer = response.json()
            return FederatedToken(str(answer["access_token"]), int(answer["expires_in"]), scope)
        except (ValueError, KeyError, TypeError):
            raise UpstreamUnavailable("Google STS", "malformed token response", retry_after=5) from None


def _oauth_error(response: UpstreamResponse) -> tuple[str, str]:
    try:
        answer = response.json()
        return str(answer.get("error", f"http_{response.status}")), str(answer.get("error_description", ""))
    except (ValueError, AttributeError):
        return f"http_{response.status}", response.body[:200].decode("utf-8", "replace")
