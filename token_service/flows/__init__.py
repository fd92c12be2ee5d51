"""The ways a client proves who it is, one module per way in, each named for its RFC.

``authentication`` picks the flow a request uses and runs it; ``subjects`` gives
each flow's clients their own subjects; ``issuer_keys`` fetches assertion
issuers' keys. This module names the flows and what each accepts.
"""

XLB_MTLS_FLOW = "xlb-mtls-client-credentials"
JWT_BEARER_FLOW = "jwt-bearer"
CLIENT_SECRET_FLOW = "client-secret"
KNOWN_FLOWS = frozenset({XLB_MTLS_FLOW, JWT_BEARER_FLOW, CLIENT_SECRET_FLOW})
# Flows whose clients exist only in the policy file.
POLICY_FLOWS = frozenset({JWT_BEARER_FLOW, CLIENT_SECRET_FLOW})
JWT_BEARER_GRANT = "urn:ietf:params:oauth:grant-type:jwt-bearer"  # RFC 7523 section 2.1
# Each flow's grant type and token endpoint authentication methods, as discovery lists them. A jwt-bearer
# assertion is the grant itself, not a way for a client to authenticate.
FLOW_METADATA = {
    XLB_MTLS_FLOW: ("client_credentials", ("tls_client_auth",)),
    CLIENT_SECRET_FLOW: ("client_credentials", ("client_secret_basic", "client_secret_post")),
    JWT_BEARER_FLOW: (JWT_BEARER_GRANT, ()),
}
