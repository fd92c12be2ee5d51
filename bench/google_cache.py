"""The cache of Google's tokens, measured: how many Google calls many clients asking for the same scoped
token make, and what a hit costs beside a locally signed ID token.

    python -m bench.google_cache [--clients 100] [--requests 10000] [--seconds 5]

The function runs as `make bench` runs it (functions-framework, PROCESS_SETTINGS, a local signing key,
the Google emulator with UPSTREAM_LATENCY on every call, the gateway only for STS's discovery fetch),
with the cache on (its default). Requests go to the function directly with the load balancer's headers.

- ``distinct``: ``clients`` client certificates, one keep-alive connection each, all at once, send
  ``requests`` requests in all for the same scope. Each certificate is its own client and key, so the
  target is at most clients x (Google calls per token) calls.
- ``shared``: the same, all with one certificate: concurrent misses for one key. A worker process has
  its own cache, so the bound is WORKERS x (calls per token).
- ``latency``: wrk's p50 of a hit (the scoped request, cached) ÷ that of an ID token signed with the
  local key, interleaved runs, medians; the target is 1.5 at most.
"""

from __future__ import annotations

import argparse
import http.client
import json
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from urllib.parse import urlencode, urlsplit

from cryptography import x509

from bench import PROCESS_SETTINGS, UPSTREAM_LATENCY
from bench.wrk import drained_pipe, run_wrk, wrk_script
from devtools.gateway import certificate_headers, header_names_from_environment
from devtools.local import (
    free_port,
    local_environment,
    proxy_secret_headers,
    start_emulator,
    start_function,
    start_gateway,
)
from devtools.pki import ensure_dev_pki, mint_client

SCOPE = "https://www.googleapis.com/auth/cloud-platform"
SCOPED = urlencode({"grant_type": "client_credentials", "scope": SCOPE})
ID_TOKEN = "grant_type=client_credentials"
HIT_P50_TARGET = 1.5
BUSY_RETRIES = 30


def identities(scratch: Path, count: int, extra: dict[str, str]) -> list[dict[str, str]]:
    """The load balancer's headers for ``count`` distinct client certificates."""
    names = header_names_from_environment({})
    headers = []
    for index in range(count):
        issued = mint_client(scratch, f"bench-client-{index}", dns=[f"device-{index}.bench.test"])
        leaf = x509.load_pem_x509_certificate(issued.certificate.read_bytes())
        headers.append(certificate_headers(leaf, [], names, "each") | extra)
    return headers


def drive(url: str, clients: list[dict[str, str]], per_client: int, body: str) -> Counter[int | str]:
    """Each client on its own keep-alive connection, all at once; the statuses answered. A 503 (an
    instance holds a bounded number of waiting requests) is retried after its Retry-After, as the
    workload toolkit does, and counted as ``retried_503``."""
    parts = urlsplit(url)

    def client(headers: dict[str, str]) -> Counter[int | str]:
        connection = http.client.HTTPConnection(parts.hostname, parts.port, timeout=60)
        statuses: Counter[int | str] = Counter()
        try:
            for _ in range(per_client):
                for _attempt in range(BUSY_RETRIES):
                    connection.request("POST", "/token", body,
                                       {**headers, "Content-Type": "application/x-www-form-urlencoded"})
                    response = connection.getresponse()
                    response.read()
                    if response.status != 503:
                        break
                    statuses["retried_503"] += 1
                    time.sleep(min(1.0, float(response.getheader("Retry-After") or 1)))
                statuses[response.status] += 1
        finally:
            connection.close()
        return statuses

    with ThreadPoolExecutor(len(clients)) as pool:
        return sum(pool.map(client, clients), Counter())


def measure(clients: int = 100, requests: int = 10_000, seconds: float = 5, repeats: int = 3) -> dict:
    scratch = Path(tempfile.mkdtemp(prefix="bench-cache-"))
    pki = ensure_dev_pki(scratch)
    gateway_port = free_port()
    emulator, emulator_server = start_emulator(pki["ca"].parent, gateway_port)
    env = {**local_environment(scratch, gateway_port, emulator_server.server_address[1]), **PROCESS_SETTINGS}
    secret = proxy_secret_headers(env)
    print(f"Minting {clients + 2} client certificates...", file=sys.stderr)
    distinct = identities(scratch, clients + 2, secret)
    probe, shared = distinct.pop(), distinct.pop()
    drain = drained_pipe(scratch / "audit.log")
    function = start_function(env, free_port(), stdout=drain.stdin, stderr=subprocess.STDOUT)
    drain.stdin.close()
    gateway = start_gateway(pki["ca"].parent, gateway_port, function.url, env)  # only for STS's discovery fetch

    def google_calls() -> int:
        return emulator.requests["sts"] + emulator.requests["iam"]

    results: dict[str, object] = {"clients": clients, "requests": requests, "process_settings": PROCESS_SETTINGS,
                                  "upstream_latency_ms": UPSTREAM_LATENCY * 1000}
    try:
        before = google_calls()
        drive(function.url, [probe], 1, SCOPED)  # also the emulator's one fetch of our discovery and keys
        per_token = google_calls() - before
        results["google_calls_per_token"] = per_token
        emulator.latency = {"sts": UPSTREAM_LATENCY, "iam": UPSTREAM_LATENCY}
        per_client = requests // clients
        for name, group in (("distinct", distinct), ("shared", [shared] * clients)):
            print(f"{clients} clients ({name} certificates), {per_client * clients} requests...", file=sys.stderr)
            before = google_calls()
            statuses = drive(function.url, group, per_client, SCOPED)
            calls = google_calls() - before
            bound = per_token * (clients if name == "distinct" else int(PROCESS_SETTINGS["WORKERS"]))
            answered = {str(status): count for status, count in statuses.items()}
            results[name] = {"statuses": answered, "google_calls": calls, "bound": bound,
                             "passed": calls <= bound and statuses[200] == per_client * len(group)}
        emulator.latency = {}

        print("Hit p50 against a locally signed ID token's...", file=sys.stderr)
        hit_script = wrk_script(shared, SCOPED, scratch)
        id_script = wrk_script(shared, ID_TOKEN, scratch)
        run_wrk(function.url + "/token", id_script, 8, 1)  # warm-up
        runs: dict[str, list[dict]] = {"hit": [], "id_token": []}
        for _ in range(repeats):
            for name, script in (("hit", hit_script), ("id_token", id_script)):
                runs[name].append(vars(run_wrk(function.url + "/token", script, 8, seconds)))
        p50 = {name: statistics.median(run["p50_ms"] for run in measured) for name, measured in runs.items()}
        ratio = p50["hit"] / p50["id_token"]
        results["latency"] = {"runs": runs, "hit_p50_ms": p50["hit"], "id_token_p50_ms": p50["id_token"],
                              "ratio": ratio, "target": HIT_P50_TARGET,
                              "passed": ratio <= HIT_P50_TARGET and not any(
                                  run["errors"] for measured in runs.values() for run in measured)}
    finally:
        gateway.shutdown()
        function.stop()
        drain.wait(timeout=10)
        emulator_server.shutdown()
    results["audit_cache_labels"] = cache_labels(scratch / "audit.log")
    return results


def rows(results: dict, verdict) -> list[tuple[str, str, str]]:
    """The table rows of bench/run.py; ``verdict(name, passed)`` says PASS or FAIL and records a failure."""
    table = []
    for name, who in (("distinct", f"{results['clients']} clients"),
                      ("shared", f"{results['clients']} clients sharing one certificate")):
        measured = results[name]
        table.append((f"Google calls for {results['requests']} scoped tokens, {who}", str(measured["google_calls"]),
                      f"target <= {measured['bound']} ({results['google_calls_per_token']} a token); answers "
                      f"{measured['statuses']} " + verdict(f"token cache, {name}", measured["passed"])))
    latency = results["latency"]
    table.append(("cache hit p50 / locally signed ID token p50",
                  f"{latency['hit_p50_ms']:.2f} / {latency['id_token_p50_ms']:.2f} ms",
                  f"{latency['ratio']:.2f} x (target <= {HIT_P50_TARGET}) " + verdict("token cache hit p50",
                                                                                     latency["passed"])))
    return table


def cache_labels(audit_log: Path) -> dict[str, int]:
    """How many audit lines said ``cache: hit`` and ``cache: miss``."""
    counts: Counter[str] = Counter()
    for line in audit_log.read_text().splitlines():
        if line.startswith("{"):
            label = json.loads(line).get("logging.googleapis.com/labels", {}).get("cache")
            if label:
                counts[label] += 1
    return dict(counts)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.google_cache")
    parser.add_argument("--clients", type=int, default=100)
    parser.add_argument("--requests", type=int, default=10_000)
    parser.add_argument("--seconds", type=float, default=5, help="per wrk run of the latency comparison")
    parser.add_argument("--repeats", type=int, default=3, help="interleaved wrk runs per kind (median counts)")
    args = parser.parse_args(argv)
    results = measure(args.clients, args.requests, args.seconds, args.repeats)
    print(json.dumps(results, indent=2))
    passed = all(results[name]["passed"] for name in ("distinct", "shared", "latency"))
    print(f"google_cache: {'PASS' if passed else 'FAIL'}", file=sys.stderr)
    return 0 if passed else 1


if __name__ == "__main__":
    sys.exit(main())
