"""Which clients may have which tokens: the rules (``rules``), their glob grammar (``patterns``) and the
YAML file they are read from (``loader``)."""

from token_service.policy.loader import RESERVED_CLAIMS, load_policy, parse_policy
from token_service.policy.rules import (
    MAX_SECRET_HASHES,
    OPEN_GRANT,
    ClientFacts,
    Grant,
    Policy,
    Rule,
    TrustedIssuer,
)

__all__ = ["MAX_SECRET_HASHES", "OPEN_GRANT", "RESERVED_CLAIMS", "ClientFacts", "Grant", "Policy", "Rule",
           "TrustedIssuer", "load_policy", "parse_policy"]
