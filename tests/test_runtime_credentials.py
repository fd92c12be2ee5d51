"""The function's own access token: which source, caching, refresh before expiry, and failures."""

from __future__ import annotations

import json

import pytest

from token_service.errors import UpstreamUnavailable
from token_service.google.runtime_credentials import (
    REFRESH_MARGIN_SECONDS,
    ApplicationDefaultCredentials,
    CredentialsUnavailable,
    MetadataServerToken,
    runtime_credentials,
)
from token_service.google.transport import UpstreamResponse


class MetadataServer:
    """Answers like the metadata server's token endpoint, and counts the calls."""

    def __init__(self, *answers: UpstreamResponse):
        self.answers = list(answers)
        self.calls: list[tuple[str, dict]] = []

    def request(self, method, service, url, *, body=None, headers=None):
        self.calls.append((url, headers))
        return self.answers.pop(0)


def token(value: str, expires_in: int = 3599) -> UpstreamResponse:
    return UpstreamResponse(200, json.dumps({"access_token": value, "expires_in": expires_in}).encode())


def test_on_cloud_functions_the_token_comes_from_the_metadata_server():
    source = runtime_credentials(None, {"K_SERVICE": "token-service", "GCE_METADATA_HOST": "127.0.0.1:9"})
    assert isinstance(source, MetadataServerToken)
    assert isinstance(runtime_credentials(None, {}), ApplicationDefaultCredentials)
    # An explicit key file wins, as it does for google.auth.default().
    explicit = runtime_credentials(None, {"K_SERVICE": "x", "GOOGLE_APPLICATION_CREDENTIALS": "/key.json"})
    assert isinstance(explicit, ApplicationDefaultCredentials)


def test_the_token_is_reused_until_shortly_before_it_expires():
    now = [1000.0]
    server = MetadataServer(token("first"), token("second"))
    source = MetadataServerToken(server, "http://metadata/token", clock=lambda: now[0])
    assert source.access_token() == "first"
    now[0] += 3599 - REFRESH_MARGIN_SECONDS - 1
    assert source.access_token() == "first" and len(server.calls) == 1
    now[0] += 1
    assert source.access_token() == "second" and len(server.calls) == 2
    assert server.calls[0] == ("http://metadata/token", {"Metadata-Flavor": "Google"})


def test_a_refusal_is_a_configuration_problem_and_nonsense_an_outage():
    source = MetadataServerToken(MetadataServer(UpstreamResponse(404, b"no such account")), "http://m/t")
    with pytest.raises(CredentialsUnavailable, match="404"):
        source.access_token()
    source = MetadataServerToken(MetadataServer(UpstreamResponse(200, b"<html>")), "http://m/t")
    with pytest.raises(UpstreamUnavailable):
        source.access_token()
