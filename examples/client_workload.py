"""A workload calling the protected service with a broker token (the client half of the examples pair).

    .venv/bin/python examples/client_workload.py        # with `make run` and examples/protected_service.py going

It authenticates to the broker with the dev client certificate (mTLS through the local gateway), caches
the ID token, refreshes it ahead of expiry, and retries once on a 401.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import requests

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from workload_toolkit import BearerAuth, BrokerClient, BrokerTokenSource, from_files  # noqa: E402

PKI = Path(os.environ.get("PKI", ROOT / ".local" / "pki"))
broker = BrokerClient(
    os.environ.get("BROKER", "https://127.0.0.1:8443"),
    lambda: from_files(str(PKI / "client.pem"), str(PKI / "client-key.pem")),
    ca_file=str(PKI / "ca.pem"),
)
session = requests.Session()
session.trust_env = False
session.auth = BearerAuth(BrokerTokenSource(broker))

if __name__ == "__main__":
    response = session.get(os.environ.get("SERVICE", "http://127.0.0.1:8081/"), timeout=10)
    print(response.status_code, response.text)
