"""Operator commands: ``python -m token_service simulate|hash-secret|check-policy``.

    simulate --policy policy.yaml --cert client.pem [--scope S] [--service-account SA] [--audience A]
    simulate --policy policy.yaml --assertion JWT|@file [...]      (signature not checked; iss, aud, exp are)
    simulate --policy policy.yaml --client-id ID [...]             (a client-secret client)
    hash-secret [--generate]     reads the secret from stdin (or generates one) and prints its policy hash
    check-policy policy.yaml     validates a policy file as a cold start would

``simulate`` prints the decision and the claims that would be issued, without
running the server. Header names and the client-id header come from the same
MTLS_HEADER_* variables as the function.
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import secrets
import sys
from typing import Any

from token_service.config import (
    ConfigurationError,
    mtls_header_names,
)
from token_service.errors import OAuthError
from token_service.exchange import parse_exchange_request


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m token_service", description=__doc__.split("\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    simulate = commands.add_parser("simulate", help="print the policy decision for a client and request")
    simulate.add_argument("--policy", required=True)
    who = simulate.add_mutually_exclusive_group(required=True)
    who.add_argument("--cert", help="client certificate PEM (as verified by the load balancer)")
    who.add_argument("--assertion", help="a JWT, or @file")
    who.add_argument("--client-id", help="a client-secret client id")
    simulate.add_argument("--scope", default="")
    simulate.add_argument("--service-account", default="")
    simulate.add_argument("--audience", default="")
    simulate.add_argument("--token-validity", type=int, default=300, help="TOKEN_VALIDITY in seconds")
    hash_command = commands.add_parser("hash-secret", help="print the scrypt hash of a client secret")
    hash_command.add_argument("--generate", action="store_true", help="generate a new random secret")
    check = commands.add_parser("check-policy", help="validate a policy file")
    check.add_argument("policy")
    args = parser.parse_args(argv)
    try:
        if args.command == "hash-secret":
            return _hash_secret(args.generate)
        if args.command == "check-policy":
            from token_service.policy import load_policy

            policy = load_policy(args.policy)
            print(f"{args.policy}: {len(policy.rules)} rules, {len(policy.issuers)} issuers: valid")
            return 0
        print(json.dumps(simulate_decision(args), indent=2))
        return 0
    except ConfigurationError as error:
        print(error, file=sys.stderr)
        return 2


def simulate_decision(args: argparse.Namespace) -> dict[str, Any]:
    from token_service.policy import load_policy

    policy = load_policy(args.policy)
    try:
        wanted = parse_exchange_request({"scope": args.scope, "service_account": args.service_account,
                                         "audience": args.audience})
    except OAuthError as error:
        return {"decision": "invalid_request", "description": error.description}
    try:
        client = _client(args, policy)
    except OAuthError as error:  # the live flow refuses this proof before any rule is consulted
        return {"decision": "deny", "error": error.error, "description": error.description, "rule": ""}
    result: dict[str, Any] = {"flow": client.flow, "client_id": client.client_id}
    try:
        grant = policy.decide(client.facts, wanted.scopes, wanted.service_account, wanted.audience)
    except OAuthError as error:
        labels = dict(error.audit_labels)
        return {**result, "decision": "deny", "error": error.error, "description": error.description,
                "rule": labels.get("policy_rule", "")}
    lifetime = min(args.token_validity, grant.max_token_lifetime or args.token_validity)
    return {**result, "decision": "allow", "rule": grant.rule, "token_lifetime_seconds": lifetime,
            "proof_valid_until": client.valid_until,
            "claims": {**grant.extra_claims, "sub": client.client_id, "client_id": client.client_id,
                       "amr": [client.flow], **client.proof_claims}}


def _client(args: argparse.Namespace, policy: Any) -> Any:
    """The AuthenticatedClient the request would yield (an assertion's signature is not checked)."""
    from token_service import authentication

    if args.cert:
        from cryptography import x509

        from token_service import mtls

        with open(args.cert, "rb") as pem:
            certificate = mtls.from_certificate(x509.load_pem_x509_certificate(pem.read()),
                                                mtls_header_names(os.environ))
        return authentication.certificate_client(certificate)
    if args.assertion:
        token = args.assertion
        if token.startswith("@"):
            with open(token[1:], encoding="utf-8") as source:
                token = source.read().strip()
        claims = json.loads(base64.urlsafe_b64decode(token.split(".")[1] + "=="))
        issuer = next((item for item in policy.issuers.values() if item.issuer == claims.get("iss")), None)
        if issuer is None:
            raise ConfigurationError([f"no issuer in the policy has iss {claims.get('iss')!r}"])
        from token_service.jwt_bearer import VerifiedAssertion

        claims.setdefault("sub", "")  # simulate shows what an unverified token would be
        return authentication.assertion_client(VerifiedAssertion(issuer, claims))
    return authentication.secret_client(args.client_id, "simulated")


def _hash_secret(generate: bool) -> int:
    from token_service.client_secret import hash_secret

    if generate:
        secret = secrets.token_urlsafe(32)
        print(f"secret (give it to the client, then forget it): {secret}", file=sys.stderr)
    else:
        secret = sys.stdin.readline().rstrip("\n")
        if len(secret) < 16:
            print("refusing a secret shorter than 16 characters; use --generate", file=sys.stderr)
            return 2
    print(hash_secret(secret))
    return 0


if __name__ == "__main__":
    sys.exit(main())
