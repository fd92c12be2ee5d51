"""The function's own Google access token (for IAM ``signJwt``).

On Cloud Functions the token comes from the metadata server, asked directly
through the pooled upstream client: google-auth would find the same token but
imports ``requests`` to do it, which lengthens every cold start. Anywhere else
(a local run with ``TOKEN_SIGNER=iam``), google-auth's Application Default
Credentials find it: a key file, gcloud's login, or the metadata server.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Mapping
from typing import Any, Protocol

from token_service.background import BackgroundLoader
from token_service.errors import CredentialsUnavailable, UpstreamUnavailable
from token_service.google import metadata
from token_service.google.transport import UpstreamClient
from token_service.google.workload_identity import CLOUD_PLATFORM_SCOPE

# Set by Cloud Functions (2nd gen) and Cloud Run in every instance.
SERVERLESS_VARIABLE = "K_SERVICE"
# Refresh this long before expiry, so no signJwt call carries a token about to lapse.
REFRESH_MARGIN_SECONDS = 300


class RuntimeCredentials(Protocol):
    def access_token(self) -> str:
        """A valid access token; ``UpstreamUnavailable`` when Google cannot be reached,
        ``CredentialsUnavailable`` when there is no usable identity."""
        ...


def runtime_credentials(upstream: UpstreamClient, environ: Mapping[str, str]) -> RuntimeCredentials:
    if environ.get(SERVERLESS_VARIABLE) and not environ.get("GOOGLE_APPLICATION_CREDENTIALS"):
        return MetadataServerToken(upstream, metadata.url(environ, metadata.TOKEN_PATH))
    return ApplicationDefaultCredentials(upstream)


class MetadataServerToken:
    def __init__(self, upstream: UpstreamClient, url: str, clock=time.time):
        self._upstream = upstream
        self._url = url
        self._clock = clock
        self._lock = threading.Lock()  # one refresh for all threads that find the token stale
        self._token = ""
        self._expires_at = 0.0

    def access_token(self) -> str:
        with self._lock:
            if self._clock() >= self._expires_at - REFRESH_MARGIN_SECONDS:
                self._token, self._expires_at = self._fetch()
            return self._token

    def _fetch(self) -> tuple[str, float]:
        response = self._upstream.request("GET", "the metadata server", self._url, headers=metadata.HEADERS)
        if response.status != 200:
            raise CredentialsUnavailable(
                f"the metadata server refused the access token ({response.status}: "
                f"{response.body[:200].decode('utf-8', 'replace')})"
            )
        try:
            answer = response.json()
            return str(answer["access_token"]), self._clock() + int(answer["expires_in"])
        except (ValueError, KeyError, TypeError):
            raise UpstreamUnavailable("the metadata server", "malformed token response", retry_after=5) from None


class ApplicationDefaultCredentials:
    def __init__(self, upstream: UpstreamClient):
        self._upstream = upstream
        self._credentials = BackgroundLoader("application-default-credentials", _application_default)
        self._lock = threading.Lock()

    def access_token(self) -> str:
        import google.auth.exceptions

        try:
            credentials = self._credentials.get()
        except google.auth.exceptions.DefaultCredentialsError as error:
            raise CredentialsUnavailable(f"no Application Default Credentials: {error}") from None
        with self._lock:
            if not credentials.valid:
                try:
                    credentials.refresh(_Transport(self._upstream))
                except google.auth.exceptions.TransportError as error:
                    raise UpstreamUnavailable("Google credentials", str(error), retry_after=5) from None
                except google.auth.exceptions.RefreshError as error:
                    raise CredentialsUnavailable(f"the function's credentials were not refreshed: {error}") from None
            return credentials.token


def _application_default() -> Any:
    import google.auth

    credentials, _ = google.auth.default(scopes=[CLOUD_PLATFORM_SCOPE])
    return credentials


class _Response:
    """google-auth's transport response interface."""

    def __init__(self, status: int, headers: Mapping[str, str], data: bytes):
        self.status, self.headers, self.data = status, headers, data


class _Transport:
    """google-auth's transport request interface over the pooled upstream client."""

    def __init__(self, upstream: UpstreamClient):
        self._upstream = upstream

    def __call__(self, url: str, method: str = "GET", body: bytes | None = None,
                 headers: Mapping[str, str] | None = None, timeout: float | None = None, **_: Any) -> _Response:
        import google.auth.exceptions

        try:
            answer = self._upstream.request(method, "Google credentials", url, body=body, headers=dict(headers or {}))
        except UpstreamUnavailable as failure:
            raise google.auth.exceptions.TransportError(str(failure)) from None
        return _Response(answer.status, answer.headers, answer.body)
