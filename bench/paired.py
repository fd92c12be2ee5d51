"""`python -m bench.paired`: two versions of the broker, their ID-token throughput measured in one run.

    .venv/bin/python -m bench.paired --baseline REF [--candidate REF] [--baseline-env NAME=VALUE ...]
                                     [--candidate-env NAME=VALUE ...] [--seconds 5] [--repeats 5]

Each side is a commit (checked out in a temporary worktree; the candidate defaults to this working
tree) plus settings. Both functions run at once with the bench's process settings; wrk loads one, then
the other, alternating which goes first, so the machine's drift reaches both alike. The result is the
candidate's throughput over the baseline's, per concurrency: the median of the pairs, and every pair.
This is how a change is shown to keep the throughput ratios within noise, and how an optimisation is
shown to earn its 3 % (docs/performance.md).
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path

from cryptography import x509

from bench import PROCESS_SETTINGS
from bench.wrk import drained_pipe, run_wrk, worker_cpu_seconds, wrk_script
from devtools.gateway import certificate_headers, header_names_from_environment
from devtools.local import ROOT, free_port, local_environment, proxy_secret_headers, start_emulator, start_function
from devtools.pki import ensure_dev_pki

CONCURRENCIES = (8, 32)


@contextmanager
def checkout(ref: str | None) -> Iterator[Path]:
    """The tree of ``ref`` (None: this working tree, as it is)."""
    if ref is None:
        yield ROOT
        return
    with tempfile.TemporaryDirectory(prefix="bench-tree-") as directory:
        tree = Path(directory) / "tree"
        subprocess.run(["git", "-C", str(ROOT), "worktree", "add", "--detach", "--quiet", str(tree), ref], check=True)
        try:
            yield tree
        finally:
            subprocess.run(["git", "-C", str(ROOT), "worktree", "remove", "--force", str(tree)], check=True)


def settings(pairs: list[str]) -> dict[str, str]:
    return dict(pair.split("=", 1) for pair in pairs)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.paired")
    parser.add_argument("--baseline", required=True, help="commit of the baseline")
    parser.add_argument("--candidate", help="commit of the candidate (default: this working tree)")
    parser.add_argument("--baseline-env", action="append", default=[], metavar="NAME=VALUE")
    parser.add_argument("--candidate-env", action="append", default=[], metavar="NAME=VALUE")
    parser.add_argument("--seconds", type=float, default=5)
    parser.add_argument("--repeats", type=int, default=5, help="pairs per concurrency")
    args = parser.parse_args(argv)
    scratch = Path(tempfile.mkdtemp(prefix="bench-paired-"))
    pki = ensure_dev_pki(scratch)
    leaf = x509.load_pem_x509_certificate(pki["client_cert"].read_bytes())
    headers = certificate_headers(leaf, [], header_names_from_environment({}), "each")
    _, emulator_server = start_emulator(pki["ca"].parent, free_port())
    env = {**local_environment(scratch, free_port(), emulator_server.server_address[1]), **PROCESS_SETTINGS}
    headers.update(proxy_secret_headers(env))
    script = wrk_script(headers, "grant_type=client_credentials", scratch)
    sides = {"baseline": (args.baseline, settings(args.baseline_env)),
             "candidate": (args.candidate, settings(args.candidate_env))}
    with ExitStack() as stack:
        urls, pids = {}, {}
        for name, (ref, extra) in sides.items():
            tree = stack.enter_context(checkout(ref))
            drain = drained_pipe(scratch / f"{name}-audit.log")
            function = start_function({**env, **extra}, free_port(), stdout=drain.stdin, stderr=subprocess.STDOUT,
                                      root=tree)
            drain.stdin.close()
            stack.callback(function.stop)
            urls[name], pids[name] = f"{function.url}/token", function.process.pid
            run_wrk(urls[name], script, 8, 2)  # warm-up
        rates: dict[int, list[float]] = {connections: [] for connections in CONCURRENCIES}
        costs: dict[int, list[float]] = {connections: [] for connections in CONCURRENCIES}
        for repeat in range(args.repeats):
            for connections in CONCURRENCIES:
                order = ("baseline", "candidate") if repeat % 2 == 0 else ("candidate", "baseline")
                measured = {name: measure(urls[name], pids[name], script, connections, args.seconds)
                            for name in order}
                (base_rate, base_cost), (rate, cost) = measured["baseline"], measured["candidate"]
                rates[connections].append(rate / base_rate)
                costs[connections].append(cost / base_cost)
                print(f"c={connections}: baseline {base_rate:.0f}/s {base_cost:.0f} µs, "
                      f"candidate {rate:.0f}/s {cost:.0f} µs", file=sys.stderr)
    emulator_server.shutdown()
    print(f"candidate ({args.candidate or 'working tree'} {sides['candidate'][1] or ''}) ÷ baseline "
          f"({args.baseline} {sides['baseline'][1] or ''}), median of {args.repeats} pairs:")
    for connections in CONCURRENCIES:
        print(f"  c={connections}: ID tokens/s {statistics.median(rates[connections]):.3f} "
              f"(pairs {', '.join(f'{ratio:.3f}' for ratio in rates[connections])}); "
              f"workers' CPU per token {statistics.median(costs[connections]):.3f} "
              f"(pairs {', '.join(f'{ratio:.3f}' for ratio in costs[connections])})")
    return 0


def measure(url: str, master_pid: int, script: Path, connections: int, seconds: float) -> tuple[float, float]:
    """Tokens per second, and the workers' CPU microseconds per token: the cost, which other load on
    the machine disturbs far less than the rate."""
    before = sum(worker_cpu_seconds(master_pid))
    result = run_wrk(url, script, connections, seconds)
    used = sum(worker_cpu_seconds(master_pid)) - before
    return result.requests_per_second, 1e6 * used / max(1.0, result.requests_per_second * seconds)


if __name__ == "__main__":
    raise SystemExit(main())
