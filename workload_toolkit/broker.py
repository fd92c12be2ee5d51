"""Calling the token broker over mTLS: one ``BrokerClient`` per identity source."""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from typing import Any

import requests

from workload_toolkit.identity import ClientIdentity


class BrokerError(Exception):
    """The broker refused or could not be reached; ``code`` is its OAuth error code."""

    def __init__(self, code: str, message: str, status: int | None = None):
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message
        self.status = status


class BrokerClient:
    """POSTs to ``<broker>/token`` with the client certificate; the identity is reloaded each call,
    so a rotated certificate is picked up without a restart."""

    def __init__(self, broker_url: str, identity: Callable[[], ClientIdentity], *, ca_file: str | None = None,
                 timeout: float = 10.0):
        self._token_url = broker_url.rstrip("/") + "/token"
        self._identity = identity
        self._verify: str | bool = ca_file or True
        self._timeout = timeout
        self._session = requests.Session()
        self._session.trust_env = False  # no proxy may sit between the client certificate and the broker
        self._lock = threading.Lock()

    def token(self, **parameters: str) -> dict[str, Any]:
        """The broker's JSON answer to ``grant_type=client_credentials`` plus ``parameters``."""
        identity = self._identity()
        cert_file, key_file = identity.write_files()
        try:
            with self._lock:  # requests sessions are not documented as thread-safe
                response = self._session.post(
                    self._token_url, data={"grant_type": "client_credentials", **parameters},
                    cert=(cert_file, key_file), verify=self._verify, timeout=self._timeout,
                )
        except requests.RequestException as error:
            raise BrokerError("unavailable", f"cannot reach {self._token_url}: {error}") from None
        finally:
            os.unlink(cert_file)
            os.unlink(key_file)
        try:
            answer = response.json()
        except ValueError:
            raise BrokerError("invalid_response", f"HTTP {response.status_code}, not JSON",
                              response.status_code) from None
        if response.status_code != 200 or not isinstance(answer, dict):
            error = answer if isinstance(answer, dict) else {}
            raise BrokerError(str(error.get("error") or error.get("code") or f"http_{response.status_code}"),
                              str(error.get("error_description") or error.get("message") or ""),
                              response.status_code)
        return answer
