"""The client's address for the audit line, from the X-Forwarded-For header.

Google's load balancer appends ``<client-ip>,<load-balancer-ip>`` to whatever X-Forwarded-For
the client sent (https://cloud.google.com/load-balancing/docs/https#x-forwarded-for_header), so
only its last two entries are the load balancer's word: the second-to-last is the address the
client connected from, and any entry before it is the client's to choose.
"""

from __future__ import annotations


def client_ip(forwarded_for: str, peer: str) -> str:
    """The second-to-last X-Forwarded-For entry; with a single entry (a caller that bypassed the load
    balancer, already refused) that entry, and without the header the connection's peer."""
    entries = forwarded_for.split(",")
    if len(entries) >= 2:
        return entries[-2].strip()
    return entries[0].strip() or peer
