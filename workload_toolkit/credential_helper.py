"""Credential helper: the executable of an executable-sourced credential configuration.

    gcloud iam workload-identity-pools create-cred-config PROVIDER --service-account=SA \\
        --output-file=creds.json --executable-output-file=/tmp/token-cache.json \\
        --executable-command="python -m workload_toolkit.credential_helper --broker https://token.example.com \\
                              --workload-identity-dir"

Client libraries run it and read its stdout. By default it prints exactly the
executable response format (errors too, with a non-zero exit) and nothing else,
on stdout or stderr (google-auth merges the two). It honours the
``GOOGLE_EXTERNAL_ACCOUNT_OUTPUT_FILE`` cache: a still-valid cached response is
printed without calling the broker (only if it is the user's own 0600 regular file), and every new
response is written there without following links.
``--format oauth`` prints the broker's OAuth JSON and ``--format token`` just
the token, for scripts.
"""

from __future__ import annotations

import argparse
import json
import os
import stat
import sys
import tempfile
import time
from typing import Any

from workload_toolkit import identity
from workload_toolkit.broker import BrokerClient, BrokerError

ID_TOKEN_TYPE = "urn:ietf:params:oauth:token-type:id_token"
CACHE_MARGIN_SECONDS = 30  # a cached token this close to expiry is not handed out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m workload_toolkit.credential_helper",
                                     description=__doc__.split("\n")[0])
    parser.add_argument("--broker", required=True, help="the broker's base URL, e.g. https://token.example.com")
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--cert", help="client certificate PEM (with --key)")
    source.add_argument("--pkcs12", help="PKCS#12 bundle; password from --pkcs12-password-env")
    source.add_argument("--workload-identity-dir", nargs="?", const=identity.WORKLOAD_IDENTITY_DIR,
                        help=f"managed workload identity directory (default {identity.WORKLOAD_IDENTITY_DIR})")
    parser.add_argument("--key", help="private key PEM for --cert")
    parser.add_argument("--pkcs12-password-env", help="environment variable holding the PKCS#12 password")
    parser.add_argument("--ca-file", help="CA bundle to verify the broker (default: the system's)")
    parser.add_argument("--format", choices=("executable", "oauth", "token"), default="executable")
    parser.add_argument("--scope", help="with --format oauth/token: ask for an access token")
    parser.add_argument("--service-account", help="with --format oauth/token: impersonate")
    parser.add_argument("--audience", help="with --format oauth/token and --service-account: a Google ID token")
    args = parser.parse_args(argv)
    if args.cert and not args.key:
        parser.error("--cert needs --key")
    if args.format == "executable":
        return _executable(args)
    try:
        answer = _client(args).token(**_exchange_parameters(args))
    except (BrokerError, identity.IdentityError) as error:
        print(f"credential_helper: {error}", file=sys.stderr)
        return 1
    if args.format == "token":
        print(answer.get("access_token") or answer["id_token"])
    else:
        print(json.dumps(answer))
    return 0


def _executable(args: argparse.Namespace) -> int:
    output_file = os.environ.get("GOOGLE_EXTERNAL_ACCOUNT_OUTPUT_FILE")
    cached = _cached(output_file)
    if cached is not None:
        print(json.dumps(cached))
        return 0
    try:
        answer = _client(args).token(format="external_credential")
        if answer.get("success") is not True or answer.get("token_type") != ID_TOKEN_TYPE:
            raise BrokerError("invalid_response", "the broker's answer is not an executable credential response")
    except (BrokerError, identity.IdentityError) as error:
        code = error.code if isinstance(error, BrokerError) else "invalid_client_identity"
        print(json.dumps({"version": 1, "success": False, "code": code, "message": str(error)}))
        return 1
    response = {key: answer[key] for key in ("version", "success", "token_type", "id_token", "expiration_time")}
    if output_file:
        try:
            _write_atomically(output_file, json.dumps(response))
        except OSError as error:
            # google-auth reads only stdout: a traceback there would hide why the cache failed
            print(json.dumps({"version": 1, "success": False, "code": "output_file_unwritable",
                              "message": f"cannot write {output_file}: {error.strerror}"}))
            return 1
    print(json.dumps(response))
    return 0


def _cached(output_file: str | None) -> dict[str, Any] | None:
    """The cached response, if the file is this user's own private regular file: anything another user
    could have planted or read (a symlink, a shared or foreign file) is not trusted with a token."""
    if not output_file:
        return None
    try:
        fd = os.open(output_file, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    except OSError:
        return None
    try:
        with os.fdopen(fd, encoding="utf-8") as cache:
            status = os.fstat(cache.fileno())  # the file actually opened, not the path: no swap in between
            if (not stat.S_ISREG(status.st_mode) or status.st_uid != os.getuid()
                    or stat.S_IMODE(status.st_mode) & ~0o600):
                return None
            response = json.load(cache)
    except (OSError, ValueError):
        return None
    if (isinstance(response, dict) and response.get("success") is True and response.get("version") == 1
            and isinstance(response.get("expiration_time"), int)
            and response["expiration_time"] > time.time() + CACHE_MARGIN_SECONDS):
        return response
    return None


def _write_atomically(path: str, text: str) -> None:
    """Write a fresh 0600 file beside ``path`` and rename it over ``path``: the temporary name is random and
    created with O_EXCL (mkstemp), so a link planted there or at ``path`` is replaced, never written through."""
    directory, name = os.path.split(os.path.abspath(path))
    fd, temporary = tempfile.mkstemp(prefix=f".{name}.", suffix=".tmp", dir=directory)
    try:
        os.fchmod(fd, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as out:
            out.write(text)
        os.replace(temporary, path)
    except BaseException:
        os.unlink(temporary)
        raise


def _client(args: argparse.Namespace) -> BrokerClient:
    if args.cert:
        def load() -> identity.ClientIdentity:
            return identity.from_files(args.cert, args.key)
    elif args.pkcs12:
        password = os.environ.get(args.pkcs12_password_env or "", "").encode() or None

        def load() -> identity.ClientIdentity:
            return identity.from_pkcs12(args.pkcs12, password)
    else:
        def load() -> identity.ClientIdentity:
            return identity.from_workload_identity_dir(args.workload_identity_dir)
    return BrokerClient(args.broker, load, ca_file=args.ca_file)


def _exchange_parameters(args: argparse.Namespace) -> dict[str, str]:
    return {name: value for name, value in (("scope", args.scope), ("service_account", args.service_account),
                                            ("audience", args.audience)) if value}


if __name__ == "__main__":
    sys.exit(main())
