"""Operator commands: ``python -m token_admin simulate|hash-secret|check-policy``.

    simulate --policy policy.yaml --cert client.pem [--scope S] [--service-account SA] [--audience A]
    simulate --policy policy.yaml --assertion JWT|@file [...]      (its signature and times are not checked)
    simulate --policy policy.yaml --client-id ID [...]             (a client-secret client)
    hash-secret [--generate]     reads the secret from stdin (or generates one) and prints its policy hash
    check-policy policy.yaml     validates a policy file as a cold start would

``simulate`` prints the decision and the claims that would be issued, without
running the server. It reads the function's own variables (MTLS_HEADER_*,
TOKEN_ISSUER, WORKLOAD_IDENTITY_*, TOKEN_VALIDITY); unset ones take
placeholders that change only ``iss`` and ``aud``.
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import sys

from token_admin.simulate import simulate
from token_service.errors import ConfigurationError


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m token_admin", description=__doc__.split("\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    simulated = commands.add_parser("simulate", help="print the policy decision for a client and request")
    simulated.add_argument("--policy", required=True)
    who = simulated.add_mutually_exclusive_group(required=True)
    who.add_argument("--cert", help="client certificate PEM (as verified by the load balancer)")
    who.add_argument("--assertion", help="a JWT, or @file")
    who.add_argument("--client-id", help="a client-secret client id")
    simulated.add_argument("--scope", default="")
    simulated.add_argument("--service-account", default="")
    simulated.add_argument("--audience", default="")
    simulated.add_argument("--token-validity", type=int, help="seconds (default: TOKEN_VALIDITY, 5 minutes)")
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
        assertion = _assertion(args.assertion) if args.assertion else None
        certificate_pem = None
        if args.cert:
            with open(args.cert, "rb") as pem:
                certificate_pem = pem.read()
        parameters = {"scope": args.scope, "service_account": args.service_account, "audience": args.audience}
        print(json.dumps(simulate(args.policy, parameters, os.environ, certificate_pem=certificate_pem,
                                  assertion=assertion, client_id=args.client_id,
                                  token_validity_seconds=args.token_validity), indent=2))
        return 0
    except ConfigurationError as error:
        print(error, file=sys.stderr)
        return 2


def _assertion(value: str) -> str:
    if value.startswith("@"):
        with open(value[1:], encoding="utf-8") as source:
            return source.read().strip()
    return value


def _hash_secret(generate: bool) -> int:
    from token_service.flows.rfc6749_client_secret import hash_secret

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
