"""IAM Service Account Credentials API.

``generateAccessToken`` and ``generateIdToken`` act for whoever holds the
bearer token, so each call carries the client's federated (STS) token.
``signJwt`` is the broker's own call (the IAM signer), with the function's own
access token. Errors come in Google's envelope
(``{"error": {"code", "message", "status"}}``).
"""

from __future__ import annotations

import json
from datetime import datetime
from typing import NamedTuple
from urllib.parse import quote

from token_service.errors import IamRefused, UpstreamUnavailable
from token_service.google.transport import UpstreamClient, UpstreamResponse, bearer

JSON_HEADERS = {"Content-Type": "application/json"}
# https://cloud.google.com/iam/docs/service-accounts-create#creating: the account id, then the project's domain.
SERVICE_ACCOUNT_EMAIL = r"[a-z0-9][a-z0-9._-]{0,99}@[a-z0-9][a-z0-9.-]{0,200}\.gserviceaccount\.com"


class ServiceAccountToken(NamedTuple):
    token: str
    expires_at: int


class IamCredentialsClient:
    def __init__(self, client: UpstreamClient, endpoint: str):
        self._client = client
        self._endpoint = endpoint.rstrip("/")

    def generate_access_token(
        self, service_account: str, federated_token: str, scopes: list[str], lifetime_seconds: int
    ) -> ServiceAccountToken:
        answer = self._call(
            "generateAccessToken", service_account, federated_token,
            {"scope": scopes, "lifetime": f"{lifetime_seconds}s"},
        )
        try:
            expire_time = datetime.fromisoformat(str(answer["expireTime"]).replace("Z", "+00:00"))
            return ServiceAccountToken(str(answer["accessToken"]), int(expire_time.timestamp()))
        except (KeyError, ValueError, TypeError):
            raise _malformed() from None

    def generate_id_token(self, service_account: str, federated_token: str, audience: str) -> str:
        answer = self._call(
            "generateIdToken", service_account, federated_token, {"audience": audience, "includeEmail": True}
        )
        if not isinstance(answer.get("token"), str):
            raise _malformed()
        return answer["token"]

    def sign_jwt(self, service_account: str, access_token: str, claims_json: str) -> str:
        answer = self._call("signJwt", service_account, access_token, {"payload": claims_json})
        if not isinstance(answer.get("signedJwt"), str):
            raise _malformed()
        return answer["signedJwt"]

    def _call(self, method: str, service_account: str, bearer_token: str, payload: dict) -> dict:
        url = f"{self._endpoint}/v1/projects/-/serviceAccounts/{quote(service_account, safe='')}:{method}"
        response = self._client.post(
            "Google IAM Credentials", url, body=json.dumps(payload).encode(),
            headers={**JSON_HEADERS, **bearer(bearer_token)},
        )
        if response.status != 200:
            raise IamRefused(method, response.status, *_google_error(response), response.body)
        try:
            answer = response.json()
        except ValueError:
            raise _malformed() from None
        if not isinstance(answer, dict):
            raise _malformed()
        return answer


def _malformed() -> UpstreamUnavailable:
    return UpstreamUnavailable("Google IAM Credentials", "malformed response", retry_after=5)


def _google_error(response: UpstreamResponse) -> tuple[str, str]:
    try:
        error = response.json()["error"]
        return str(error.get("status", response.status)), str(error.get("message", ""))
    except (ValueError, KeyError, TypeError, AttributeError):
        return f"HTTP_{response.status}", response.body[:200].decode("utf-8", "replace")
