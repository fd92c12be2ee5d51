"""`make logs`: the audit lines of `make run`, readable, filtered like a Cloud Logging query.

    python -m devtools.logs [--reason R] [--client-id ID] [--outcome issued|refused] [--follow] [FILE]

FILE defaults to .local/audit.log, which `make run` writes beside its console output. Each
attempt prints as one line: time, outcome, status, reason, client id, and the description; with
--verbose, every label (the mTLS headers the gateway passed) follows.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import IO

DEFAULT_FILE = Path(__file__).resolve().parent.parent / ".local" / "audit.log"


def entries(stream: IO[str], follow: bool) -> Iterator[dict]:
    while True:
        line = stream.readline()
        if not line:
            if not follow:
                return
            time.sleep(0.2)
            continue
        if line.startswith("{"):
            try:
                entry = json.loads(line)
            except ValueError:
                continue
            if "logging.googleapis.com/labels" in entry:
                yield entry


def matches(entry: dict, args: argparse.Namespace) -> bool:
    labels = entry["logging.googleapis.com/labels"]
    return all(
        wanted is None or labels.get(label) == wanted
        for label, wanted in (("reason", args.reason), ("client_id", args.client_id), ("outcome", args.outcome))
    )


def render(entry: dict, verbose: bool) -> str:
    labels = entry["logging.googleapis.com/labels"]
    when = entry.get("time") or time.strftime("%H:%M:%S")
    line = (f"{when} {labels.get('outcome', '?'):8} {labels.get('status', ''):3} "
            f"{labels.get('reason', '-'):28} {labels.get('client_id', '-')[:48]:48} {entry.get('message', '')}")
    if verbose:
        line += "".join(f"\n    {name} = {value!r}" for name, value in sorted(labels.items()))
    return line


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m devtools.logs", description=__doc__.split("\n")[0])
    parser.add_argument("file", nargs="?", type=Path, default=DEFAULT_FILE)
    parser.add_argument("--reason")
    parser.add_argument("--client-id")
    parser.add_argument("--outcome", choices=("issued", "refused"))
    parser.add_argument("--follow", "-f", action="store_true")
    parser.add_argument("--verbose", "-v", action="store_true")
    args = parser.parse_args(argv)
    if not args.file.exists():
        print(f"{args.file} does not exist yet: start `make run` and make a request", file=sys.stderr)
        return 1
    with args.file.open(encoding="utf-8") as stream:
        for entry in entries(stream, args.follow):
            if matches(entry, args):
                print(render(entry, args.verbose), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
