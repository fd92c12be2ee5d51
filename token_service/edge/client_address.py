"""The client's address for the audit line, from the X-Forwarded-For header.

Google's load balancer appends ``<client-ip>,<load-balancer-ip>`` to whatever X-Forwarded-For
the client sent (https://cloud.google.com/load-balancing/docs/https#x-forwarded-for_header), so
only its last two entries are the load balancer's word: the second-to-last is the address the
client connected from, and any entry before it is the client's to choose.
"""

from __future__ import annotations


def client_ip(forwarded_for: str, peer: str) -> str:
    """The second-to-last X-Forwarded-For entry. Without the load balancer's two entries (a caller
    that bypassed it, already refused, or a local run) the connection's peer: a lone entry is the
    caller's own word, and the client-secret failure limit keys on this address."""
    entries = [entry.strip() for entry in forwarded_for.split(",")]
    return entries[-2] if len(entries) >= 2 and entries[-2] else peer
