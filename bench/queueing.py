"""What queueing alone does to p99 ÷ p50, for the sustained run's target.

    .venv/bin/python -m bench.queueing [--utilisation 0.7] [--arrivals 400000]

An ideal server: every request takes exactly the same time, nothing else runs. Requests arrive at
random (a Poisson process) at the given utilisation, and wait in one queue for one server (M/D/1,
one worker) or for whichever of two servers frees first (M/D/2, two cores sharing one queue).
Prints each one's p50, p99 (in service times) and their ratio.
"""

from __future__ import annotations

import argparse
import heapq
import random


def latencies(utilisation: float, servers: int, arrivals: int, seed: int = 1) -> list[float]:
    """Sorted time from arrival to answer, in service times."""
    chance = random.Random(seed)
    free_at = [0.0] * servers
    now, measured = 0.0, []
    for _ in range(arrivals):
        now += chance.expovariate(utilisation * servers)
        start = max(now, heapq.heappop(free_at))
        heapq.heappush(free_at, start + 1.0)
        measured.append(start + 1.0 - now)
    return sorted(measured)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.queueing")
    parser.add_argument("--utilisation", type=float, default=0.7)
    parser.add_argument("--arrivals", type=int, default=400_000)
    args = parser.parse_args(argv)
    for servers, name in ((1, "M/D/1"), (2, "M/D/2")):
        measured = latencies(args.utilisation, servers, args.arrivals)
        p50, p99 = measured[len(measured) // 2], measured[int(len(measured) * 0.99)]
        print(f"{name} at {args.utilisation:.0%}: p50 {p50:.2f}, p99 {p99:.2f} service times; "
              f"p99 = {p99 / p50:.2f} x p50")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
