"""Requests that did not come through the load balancer.

Ingress ``internal-and-gclb`` also admits "internal" callers (same-project VPC,
Shared VPC, the VPC-SC perimeter), which reach the function without the load
balancer and can send any ``X-Client-Cert-*`` header they like. The load
balancer adds a secret header (its value from Secret Manager, mounted here as
``PROXY_SECRETS``); a request without one of the accepted values is refused
before anything reads its other headers. The header is then removed, so no
layer below can log or echo the secret.
"""

from __future__ import annotations

import hmac
from collections.abc import Mapping

from token_service.config import ProxySecretSettings
from token_service.errors import OAuthError, Reason, access_denied

DESCRIPTION = "requests must come through the load balancer"


class ProxySecretCheck:
    """Whether a request carries one of the accepted secrets; with none configured (a local run without
    the gateway's secret), every request passes."""

    def __init__(self, settings: ProxySecretSettings):
        self.header = settings.header.lower()  # HttpRequest headers are lower-cased
        self._accepted = tuple(value.encode() for value in settings.values)

    @property
    def enabled(self) -> bool:
        return bool(self._accepted)

    def admits(self, headers: Mapping[str, str]) -> bool:
        if not self._accepted:
            return True
        presented = headers.get(self.header)
        if presented is None:
            return False
        # Header values arrive as latin-1 text and may hold any byte; compare_digest on str refuses
        # non-ASCII, so compare bytes. Every accepted value is compared, matched or not, so the time
        # taken does not say which one matched.
        presented_bytes = presented.encode("utf-8")
        matched = False
        for accepted in self._accepted:
            matched |= hmac.compare_digest(presented_bytes, accepted)
        return matched

    def without_secret(self, headers: Mapping[str, str]) -> Mapping[str, str]:
        """The headers minus the secret's, for everything downstream (audit labels, error descriptions)."""
        if self.header not in headers:
            return headers
        return {name: value for name, value in headers.items() if name != self.header}


def not_through_load_balancer() -> OAuthError:
    return access_denied(DESCRIPTION, Reason.NOT_THROUGH_LOAD_BALANCER)
