"""A service that only answers workloads carrying a broker ID token (the server half of the examples pair).

    .venv/bin/python examples/protected_service.py        # with `make run` going, on http://127.0.0.1:8081

It trusts the broker of `make run` as an OIDC issuer (discovery over HTTPS with the dev CA) and lets in
only clients whose SPIFFE ID is in the local.test trust domain.
"""

from __future__ import annotations

import os
import ssl
import sys
from pathlib import Path

from flask import Flask, jsonify, request

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from workload_toolkit import CLAIMS_KEY, BearerTokenMiddleware, IssuerKeys, trusted_issuer

BROKER = os.environ.get("BROKER", "https://127.0.0.1:8443")
AUDIENCE = "https://iam.googleapis.com/projects/123456789012/locations/global/workloadIdentityPools/local-pool/providers/token-service"
CA_FILE = os.environ.get("BROKER_CA", str(Path(__file__).resolve().parent.parent / ".local" / "pki" / "ca.pem"))

app = Flask(__name__)


@app.get("/")
def hello():
    claims = request.environ[CLAIMS_KEY]
    return jsonify(message=f"hello, {claims['client']['x5_spiffe'] or claims['sub']}", subject=claims["sub"])


app.wsgi_app = BearerTokenMiddleware(
    app.wsgi_app,
    issuers=[trusted_issuer("broker", BROKER)],
    audiences=[AUDIENCE],
    allow=lambda claims: claims.get("client", {}).get("x5_spiffe", "").startswith("spiffe://local.test/"),
    keys=IssuerKeys(ca_file=CA_FILE),
)

if __name__ == "__main__":
    ssl.create_default_context(cafile=CA_FILE)  # fail early if the dev PKI is missing
    app.run(host="127.0.0.1", port=int(os.environ.get("PORT", "8081")))
