"""The two halves around the token broker, for workloads (not deployed with the function).

Client side: load the workload's certificate (``identity``), get tokens from the
broker (``BrokerClient``, the ``credential_helper`` command), and send them
(``BearerAuth`` for ``requests``). Server side: verify them
(``BearerTokenMiddleware`` for any WSGI app, with ``IssuerKeys``).
"""

from workload_toolkit.auth import BearerAuth, BrokerTokenSource, CachedTokens, FileTokenSource
from workload_toolkit.broker import BrokerClient, BrokerError
from workload_toolkit.identity import (
    ClientIdentity,
    IdentityError,
    from_files,
    from_pkcs12,
    from_workload_identity_dir,
)
from workload_toolkit.issuers import TrustedIssuer, trusted_issuer
from workload_toolkit.keys import IssuerKeys
from workload_toolkit.middleware import CLAIMS_KEY, BearerTokenMiddleware

__all__ = [
    "CLAIMS_KEY",
    "BearerAuth",
    "BearerTokenMiddleware",
    "BrokerClient",
    "BrokerError",
    "BrokerTokenSource",
    "CachedTokens",
    "ClientIdentity",
    "FileTokenSource",
    "IdentityError",
    "IssuerKeys",
    "TrustedIssuer",
    "from_files",
    "from_pkcs12",
    "from_workload_identity_dir",
    "trusted_issuer",
]
