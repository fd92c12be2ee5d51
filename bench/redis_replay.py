"""The Redis-backed replay check's added latency: jwt-bearer token p50 with ``REDIS_URL`` and without.

    .venv/bin/python -m bench.redis_replay [--seconds 20]

Two function processes from one environment (``bench.run``'s process settings, audit lines to a
pipe), one of them with ``REDIS_URL`` naming a local redis-server (no persistence, as the bench
measures the broker, not the disk). Each request carries a fresh single-use ES256 assertion, minted
beforehand, so every token spends one ``jti``: in memory, or with one EXISTS and one ``SET NX`` in
Redis. Requests go straight to the function with the load balancer's secret header, one at a time
on one keep-alive connection per process, in alternating blocks so the machine's drift hits both
alike. Loopback Redis: the added latency is the client's work and two round trips on this machine;
Memorystore on the VPC adds its network round trips on top.
"""

from __future__ import annotations

import argparse
import http.client
import json
import statistics
import subprocess
import tempfile
import textwrap
import time
from pathlib import Path
from urllib.parse import urlencode

from bench import PROCESS_SETTINGS
from devtools.local import free_port, local_environment, proxy_secret_headers, start_function
from devtools.oidc_issuer import LocalIssuer
from devtools.pki import ensure_dev_pki
from devtools.redis_server import RedisServer

JWT_BEARER = "urn:ietf:params:oauth:grant-type:jwt-bearer"
BLOCK = 50  # requests to one process before switching to the other
WARM_UP = 2 * BLOCK


def measure(seconds: float) -> dict:
    """About ``seconds`` of alternating blocks; p50 and p99 (ms) of each, the p50 added by Redis and the ratio."""
    scratch = Path(tempfile.mkdtemp(prefix="bench-redis-"))
    ensure_dev_pki(scratch)
    issuer = LocalIssuer(algorithm="ES256").start()
    redis_server = RedisServer().start()
    functions, drains = [], []
    try:
        policy = scratch / "policy.yaml"
        policy.write_text(textwrap.dedent(f"""\
            issuers:
              - name: bench-cluster
                issuer: {issuer.url}
            rules:
              - name: bench
                assertion:
                  issuer: bench-cluster
                  subject: system:serviceaccount:bench:*
            """))
        gateway_port = free_port()  # never listened on: only the issuer and audience name it
        env = {**local_environment(scratch, gateway_port, None, {"POLICY_FILE": str(policy),
                                                                  "AUTH_FLOWS": "jwt-bearer"}),
               **PROCESS_SETTINGS}
        audience = env["TOKEN_ISSUER"]
        headers = {**proxy_secret_headers(env), "Content-Type": "application/x-www-form-urlencoded"}
        connections = {}
        for name, extra in (("memory", {}), ("redis", {"REDIS_URL": redis_server.url})):
            with (scratch / f"audit-{name}.log").open("wb") as audit:
                # Audit lines to a pipe that `cat` drains, as Cloud Functions reads stdout (bench.run does the same).
                drain = subprocess.Popen(["cat"], stdin=subprocess.PIPE, stdout=audit)
            function = start_function({**env, **extra}, free_port(), stdout=drain.stdin, stderr=subprocess.STDOUT)
            drain.stdin.close()
            functions.append(function)
            drains.append(drain)
            connections[name] = http.client.HTTPConnection("127.0.0.1", function.port, timeout=10)

        def block(name: str, count: int) -> list[float]:
            bodies = [urlencode({"grant_type": JWT_BEARER, "assertion": issuer.mint(
                audience=audience, subject="system:serviceaccount:bench:api", lifetime=600)})
                for _ in range(count)]
            timings = []
            for body in bodies:
                started = time.perf_counter()
                connections[name].request("POST", "/token", body, headers)
                response = connections[name].getresponse()
                answer = response.read()
                timings.append((time.perf_counter() - started) * 1000)
                if response.status != 200:
                    raise RuntimeError(f"{name}: {response.status} {answer[:300]!r}")
            return timings

        for name in connections:
            block(name, WARM_UP)  # the issuer's keys fetched, the pools and code paths warm
        timings: dict[str, list[float]] = {name: [] for name in connections}
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            for name in connections:
                timings[name] += block(name, BLOCK)
        spent = sum(1 for key in redis_server_keys(redis_server) if b":jti:" in key)
    finally:
        for function in functions:
            function.stop()
        for drain in drains:
            drain.wait(timeout=10)  # `cat` ends once the function closed its end of the pipe
        redis_server.stop()
        issuer.stop()
    p50 = {name: statistics.median(values) for name, values in timings.items()}
    p99 = {name: statistics.quantiles(values, n=100)[98] for name, values in timings.items()}
    return {
        "requests_each": len(timings["memory"]),
        "p50_ms_memory": round(p50["memory"], 3), "p50_ms_redis": round(p50["redis"], 3),
        "p99_ms_memory": round(p99["memory"], 3), "p99_ms_redis": round(p99["redis"], 3),
        "added_p50_ms": round(p50["redis"] - p50["memory"], 3),
        "p50_ratio": round(p50["redis"] / p50["memory"], 3),
        # Every assertion the Redis-backed process accepted was spent in Redis, none elsewhere.
        "jti_keys_in_redis": spent,
    }


def rows(results: dict) -> list[tuple[str, str, str]]:
    """The table row of bench/run.py (no stated target: what Redis adds is reported)."""
    return [("jwt-bearer p50 with REDIS_URL / without (replay check in Redis)",
             f"{results['p50_ms_redis']:.2f} / {results['p50_ms_memory']:.2f} ms",
             f"+{results['added_p50_ms']:.2f} ms, {results['p50_ratio']:.2f} x; {results['requests_each']} "
             f"requests each; {results['jti_keys_in_redis']} jti keys in Redis")]


def redis_server_keys(server: RedisServer) -> list[bytes]:
    import redis

    return list(redis.Redis.from_url(server.url).scan_iter(count=1000))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.redis_replay")
    parser.add_argument("--seconds", type=float, default=20)
    args = parser.parse_args(argv)
    print(json.dumps(measure(args.seconds), indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
