"""The issuers a verifying service trusts: who signs the tokens it accepts, and where their keys are."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class TrustedIssuer:
    name: str  # for messages and logs only
    issuer: str  # the exact ``iss`` its tokens carry
    jwks_uri: str | None = None  # None: the one its discovery document names


def trusted_issuer(name: str, issuer: str, jwks_uri: str | None = None) -> TrustedIssuer:
    """An issuer whose keys come from its discovery document (or from ``jwks_uri``)."""
    return TrustedIssuer(name=name, issuer=issuer, jwks_uri=jwks_uri)
