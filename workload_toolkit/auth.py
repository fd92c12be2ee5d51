"""An authorized HTTP client: bearer tokens injected, cached, refreshed ahead of expiry.

    session = requests.Session()
    session.auth = BearerAuth(BrokerTokenSource(broker_client, audience=..., service_account=...))
    session.get("https://ledger-abc.a.run.app/")

Tokens come from the broker (over mTLS) or from a projected token file that
Kubernetes rotates (re-read when it changes). A token is refreshed once less
than a fifth of its life (at least a minute) is left; one refresh runs at a
time, shared by every thread; a 401 answer triggers one retry with a fresh token.
"""

from __future__ import annotations

import base64
import json
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

import requests

from workload_toolkit.broker import BrokerClient

MIN_REFRESH_MARGIN = 60.0


@dataclass(frozen=True)
class Token:
    value: str
    issued_at: float
    expires_at: float


class TokenSource(Protocol):
    def fetch(self) -> Token: ...


class BrokerTokenSource:
    """The broker's ID token, or with ``scope``/``service_account``/``audience`` its exchanged token."""

    def __init__(self, client: BrokerClient, clock: Callable[[], float] = time.time, **parameters: str):
        self._client = client
        self._parameters = {name: value for name, value in parameters.items() if value}
        self._clock = clock

    def fetch(self) -> Token:
        now = self._clock()
        answer = self._client.token(**self._parameters)
        if "access_token" in answer:
            return Token(answer["access_token"], now, now + float(answer.get("expires_in", 0)))
        return Token(answer["id_token"], now, float(jwt_expiry(answer["id_token"])))


class FileTokenSource:
    """A token file rotated by someone else (a projected service-account token)."""

    def __init__(self, path: str, clock: Callable[[], float] = time.time):
        self._path = path
        self._clock = clock

    def fetch(self) -> Token:
        with open(self._path, encoding="utf-8") as source:
            value = source.read().strip()
        return Token(value, self._clock(), float(jwt_expiry(value)))

    def changed_since(self, token: Token) -> bool:
        try:
            return os.stat(self._path).st_mtime > token.issued_at
        except OSError:
            return False


class CachedTokens:
    """Thread-safe cache in front of a source, refreshing ahead of expiry."""

    def __init__(self, source: TokenSource, clock: Callable[[], float] = time.time):
        self._source = source
        self._clock = clock
        self._token: Token | None = None
        self._lock = threading.Lock()
        self.fetches = 0

    def get(self) -> str:
        token = self._token
        if token is None or self._stale(token):
            with self._lock:  # one refresh at a time; the waiting threads reuse its result
                token = self._token
                if token is None or self._stale(token):
                    token = self._refresh()
        return token.value

    def invalidate(self, value: str) -> None:
        with self._lock:
            if self._token is not None and self._token.value == value:
                self._token = None

    def _stale(self, token: Token) -> bool:
        margin = max(MIN_REFRESH_MARGIN, (token.expires_at - token.issued_at) / 5)
        if self._clock() >= token.expires_at - margin:
            return True
        changed = getattr(self._source, "changed_since", None)
        return bool(changed and changed(token))

    def _refresh(self) -> Token:
        self.fetches += 1
        self._token = self._source.fetch()
        return self._token


class BearerAuth(requests.auth.AuthBase):
    """``requests`` auth: ``Authorization: Bearer <token>``, one retry with a fresh token on 401."""

    def __init__(self, source: TokenSource | CachedTokens):
        self.tokens = source if isinstance(source, CachedTokens) else CachedTokens(source)

    def __call__(self, request: requests.PreparedRequest) -> requests.PreparedRequest:
        token = self.tokens.get()
        request.headers["Authorization"] = f"Bearer {token}"
        request.register_hook("response", self._retry_on_401(token))
        return request

    def _retry_on_401(self, sent: str):
        def hook(response: requests.Response, **kwargs) -> requests.Response:
            if response.status_code != 401 or getattr(response.request, "_retried_with_fresh_token", False):
                return response
            self.tokens.invalidate(sent)
            retry = response.request.copy()
            retry.headers["Authorization"] = f"Bearer {self.tokens.get()}"
            retry._retried_with_fresh_token = True  # type: ignore[attr-defined]
            response.content  # noqa: B018 (release the connection before reusing it)
            response.close()
            again = response.connection.send(retry, **kwargs)
            again.history.append(response)
            again.request = retry
            return again

        return hook


def jwt_expiry(token: str) -> int:
    """The ``exp`` of a JWT, read without verification (the issuer's client need not verify it)."""
    try:
        payload = json.loads(base64.urlsafe_b64decode(token.split(".")[1] + "=="))
        return int(payload["exp"])
    except (IndexError, ValueError, KeyError, TypeError):
        raise ValueError("the token is not a JWT with an exp claim") from None
