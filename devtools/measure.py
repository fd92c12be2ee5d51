"""Quick measurements of `make run`'s function: cold start and tokens/s.

    python -m devtools.measure [--runs 5] [--seconds 10] [--concurrency 8]

Cold start is process launch to the first issued token, median of ``--runs``,
next to a bare functions-framework hello-world started the same way. Throughput
posts ID-token requests straight to the function with the load balancer's
headers (the gateway bypassed), on persistent connections from threads in this
process, so the client shares the machine's cores with the server.
"""

from __future__ import annotations

import argparse
import http.client
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from devtools.gateway import certificate_headers, header_names_from_environment
from devtools.local import free_port, local_environment
from devtools.pki import ensure_dev_pki

HELLO = "def hello(request):\n    return 'ok'\n"
BODY = b"grant_type=client_credentials"


def token_headers(local_dir: Path) -> dict[str, str]:
    from cryptography import x509

    leaf = x509.load_pem_x509_certificate((local_dir / "pki" / "client.pem").read_bytes())
    headers = certificate_headers(leaf, [], header_names_from_environment({}), "each")
    return {**headers, "Content-Type": "application/x-www-form-urlencoded"}


def cold_start(command: list[str], env: dict[str, str], port: int, probe) -> float:
    started = time.perf_counter()
    process = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        while True:
            try:
                if probe(port):
                    return time.perf_counter() - started
            except OSError:
                pass
            if process.poll() is not None:
                raise RuntimeError("process exited during start-up")
            time.sleep(0.005)
    finally:
        process.terminate()
        process.wait()


def post_token(port: int, headers: dict[str, str]) -> bool:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
    connection.request("POST", "/token", BODY, headers)
    return connection.getresponse().status == 200


def get_hello(port: int) -> bool:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
    connection.request("GET", "/")
    return connection.getresponse().status == 200


def throughput(port: int, headers: dict[str, str], concurrency: int, seconds: float) -> float:
    counts = [0] * concurrency
    deadline = time.perf_counter() + seconds

    def worker(index: int) -> None:
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        while time.perf_counter() < deadline:
            connection.request("POST", "/token", BODY, headers)
            response = connection.getresponse()
            response.read()
            if response.status != 200:
                raise RuntimeError(f"status {response.status}")
            counts[index] += 1

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(concurrency)]
    started = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return sum(counts) / (time.perf_counter() - started)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m devtools.measure")
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--seconds", type=float, default=10)
    parser.add_argument("--concurrency", type=int, default=8)
    args = parser.parse_args(argv)
    root = Path(__file__).resolve().parent.parent
    ff = str(Path(sys.executable).parent / "functions-framework")
    with tempfile.TemporaryDirectory() as scratch:
        local_dir = Path(scratch)
        ensure_dev_pki(local_dir)
        headers = token_headers(local_dir)
        (local_dir / "hello.py").write_text(HELLO)
        env = {**local_environment(local_dir, 8443), "PATH": "/usr/bin:/bin"}
        starts, hellos = [], []
        for _ in range(args.runs):
            port = free_port()
            starts.append(cold_start([ff, "--target=handle_request", f"--source={root / 'main.py'}",
                                      "--host=127.0.0.1", f"--port={port}"], env, port,
                                     lambda p: post_token(p, headers)))
            port = free_port()
            hellos.append(cold_start([ff, "--target=hello", f"--source={local_dir / 'hello.py'}",
                                      "--host=127.0.0.1", f"--port={port}"], env, port, get_hello))
        port = free_port()
        server = subprocess.Popen([ff, "--target=handle_request", f"--source={root / 'main.py'}",
                                   "--host=127.0.0.1", f"--port={port}"], env=env, stdout=subprocess.DEVNULL)
        try:
            time.sleep(1.5)
            post_token(port, headers)
            rate = throughput(port, headers, args.concurrency, args.seconds)
        finally:
            server.terminate()
            server.wait()
    print(f"cold start to first token: median {statistics.median(starts) * 1000:.0f} ms "
          f"(hello-world: {statistics.median(hellos) * 1000:.0f} ms; ratio "
          f"{statistics.median(starts) / statistics.median(hellos):.2f})")
    print(f"ID tokens/s at concurrency {args.concurrency}: {rate:.0f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
