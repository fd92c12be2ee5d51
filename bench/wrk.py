"""wrk and the worker processes it loads: the measuring tools every bench shares."""

from __future__ import annotations

import os
import re
import subprocess
from dataclasses import dataclass
from pathlib import Path


@dataclass
class WrkResult:
    requests_per_second: float
    p50_ms: float
    p99_ms: float
    errors: int


# wrk's delay() is asked before each request of a thread's connections: this one hands out send
# slots on a fixed schedule (LuaJIT's ffi reads the monotonic clock), so a thread sends at its rate
# whatever the service time, and catches up after a stall, like an open-loop load generator.
PACING = """local ffi = require("ffi")
ffi.cdef[[typedef struct { long tv_sec; long tv_nsec; } bench_timespec;
int clock_gettime(int clock, bench_timespec *ts);]]
local ts = ffi.new("bench_timespec")
local interval, next_slot = %(interval_ms).6f, nil
function delay()
  ffi.C.clock_gettime(1, ts)
  local now = tonumber(ts.tv_sec) * 1000 + tonumber(ts.tv_nsec) / 1e6
  next_slot = next_slot and next_slot + interval or now
  return math.max(0, next_slot - now)
end"""


def wrk_script(headers: dict[str, str], body: str, directory: Path, rate_per_thread: float | None = None) -> Path:
    lines = ['wrk.method = "POST"', f'wrk.body = "{body}"',
             'wrk.headers["Content-Type"] = "application/x-www-form-urlencoded"']
    lines += [f'wrk.headers["{name}"] = "{value}"' for name, value in headers.items()]
    if rate_per_thread is not None:
        lines.append(PACING % {"interval_ms": 1000 / rate_per_thread})
    path = directory / f"wrk-{abs(hash((body, rate_per_thread)))}.lua"
    path.write_text("\n".join(lines) + "\n")
    return path


def run_wrk(url: str, script: Path, connections: int, seconds: float, timeout: float = 2) -> WrkResult:
    threads = wrk_threads(connections)
    output = subprocess.run(
        ["wrk", f"-t{threads}", f"-c{connections}", f"-d{max(1, round(seconds))}s", f"--timeout={timeout:g}s",
         "--latency", "-s", str(script), url],
        capture_output=True, text=True, check=True).stdout
    rate = float(re.search(r"Requests/sec:\s+([\d.]+)", output).group(1))
    errors = int(match.group(1)) if (match := re.search(r"Non-2xx or 3xx responses:\s+(\d+)", output)) else 0
    socket_errors = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", output)
    if socket_errors:
        errors += sum(int(value) for value in socket_errors.groups())
    return WrkResult(rate, _latency(output, "50%"), _latency(output, "99%"), errors)


def _latency(output: str, percentile: str) -> float:
    value, unit = re.search(rf"^\s+{percentile}\s+([\d.]+)(us|ms|s)\s*$", output, re.MULTILINE).groups()
    return float(value) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[unit]


def wrk_threads(connections: int) -> int:
    return min(connections, 2)


def drained_pipe(path: Path) -> subprocess.Popen:
    """A pipe whose reader, `cat`, copies it into ``path``: what a process's stdout is on Cloud
    Functions. A worker writing to a file on disk directly can stall on the file system, which the
    deployed function never does, and a draining thread here would take the GIL from the emulator
    on every line. Hand ``.stdin`` to the writer, then close it here."""
    with path.open("wb") as file:
        return subprocess.Popen(["cat"], stdin=subprocess.PIPE, stdout=file)


def workers(master_pid: int) -> list[str]:
    """The gunicorn workers: the master's children."""
    return Path(f"/proc/{master_pid}/task/{master_pid}/children").read_text().split()


def worker_rss_kib(master_pid: int) -> list[int]:
    """VmRSS of each worker."""
    return [int(re.search(r"VmRSS:\s+(\d+)", Path(f"/proc/{pid}/status").read_text()).group(1))
            for pid in workers(master_pid)]


def worker_writes(master_pid: int) -> int:
    """write() and writev() calls of all workers so far, to sockets and to the audit pipe."""
    return sum(int(re.search(r"syscw:\s+(\d+)", Path(f"/proc/{pid}/io").read_text()).group(1))
               for pid in workers(master_pid))


def worker_cpu_seconds(master_pid: int) -> list[float]:
    """User and system CPU time of each worker so far."""
    ticks = os.sysconf("SC_CLK_TCK")
    times = []
    for pid in workers(master_pid):
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        times.append((int(fields[11]) + int(fields[12])) / ticks)  # utime, stime
    return times
