"""Operator tools for the token service, never deployed: ``python -m token_admin``.

``simulate`` shows the decision and claims a request would get, through the same
code the function runs; ``hash-secret`` and ``check-policy`` prepare a policy;
``load_balancer`` renders a certificate as the load balancer's headers (for
``simulate`` and the local gateway).
"""
