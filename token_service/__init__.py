"""An OIDC token broker for Google Cloud workload identity federation.

Clients prove who they are with a certificate checked by the Google load
balancer; the broker issues a short-lived ID token that Google's Security
Token Service accepts. The package is a set of small modules, one concept
each, none of which sees the HTTP framework: ``main`` and ``dispatch`` turn
HTTP into plain values and calls on ``service.TokenService``.
"""

__version__ = "0.1.0"
