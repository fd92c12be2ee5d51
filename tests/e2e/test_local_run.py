"""`make run` (python -m devtools.local): however it is stopped, nothing it started keeps running, and the
next `make run` finds its ports free."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from devtools.local import ROOT, free_port

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")

READY = "Ctrl-C stops everything."


def process_start(pid: int) -> tuple[str, int] | None:
    """(state, start time) of a live process, None once it is gone (a zombie has exited)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (FileNotFoundError, ProcessLookupError):
        return None
    return None if fields[0] in "ZX" else (fields[0], int(fields[19]))


def descendants(root: int) -> dict[int, int]:
    """Every live process below ``root``, with its start time (so a reused pid is not mistaken for it)."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (FileNotFoundError, ProcessLookupError, IndexError):
                continue
            children.setdefault(ppid, []).append(int(entry.name))
    found: dict[int, int] = {}
    pending = list(children.get(root, []))
    while pending:
        pid = pending.pop()
        start = process_start(pid)
        if start is not None:
            found[pid] = start[1]
            pending += children.get(pid, [])
    return found


def listening(port: int) -> bool:
    """Whether a server holds the port, as the next run would find it (both servers set SO_REUSEADDR)."""
    with socket.socket() as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(("127.0.0.1", port))
        except OSError:
            return True
    return False


def start(command: list[str], tmp_path: Path) -> tuple[subprocess.Popen, dict[str, int], Path]:
    """Started in a session of its own, as a terminal starts it: a Ctrl-C reaches its whole process group."""
    ports = {"FUNCTION_PORT": free_port(), "GATEWAY_PORT": free_port(), "EMULATOR_PORT": free_port()}
    local_dir = tmp_path / "local"
    env = {**os.environ, **{name: str(port) for name, port in ports.items()}, "LOCAL_DIR": str(local_dir)}
    output = tmp_path / "output.txt"
    with output.open("wb") as sink:
        process = subprocess.Popen(command, cwd=ROOT, env=env, stdin=subprocess.DEVNULL, stdout=sink,
                                   stderr=subprocess.STDOUT, start_new_session=True)
    deadline = time.monotonic() + 60
    while READY not in output.read_text(errors="replace"):
        assert process.poll() is None and time.monotonic() < deadline, output.read_text(errors="replace")
        time.sleep(0.1)
    return process, ports, local_dir


def curl_token(local_dir: Path, gateway_port: int) -> str:
    """The README's curl session."""
    pki = local_dir / "pki"
    return subprocess.run(
        ["curl", "-sS", "--cacert", str(pki / "ca.pem"), "--cert", str(pki / "client.pem"),
         "--key", str(pki / "client-key.pem"), f"https://127.0.0.1:{gateway_port}/token",
         "-d", "grant_type=client_credentials"],
        capture_output=True, text=True, timeout=20, check=True,
    ).stdout


def still_running(started: dict[int, int]) -> set[int]:
    return {pid for pid, start in started.items() if (process_start(pid) or (None, None))[1] == start}


def assert_everything_stops(process: subprocess.Popen, started: dict[int, int], ports: dict[str, int]) -> None:
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        running = still_running(started)
        held = [name for name, port in ports.items() if listening(port)]
        if not running and not held and process.poll() is not None:
            return
        time.sleep(0.1)
    raise AssertionError(f"still running: {sorted(running)}; ports still held: {held}; exit: {process.poll()}")


def kill_leftovers(process: subprocess.Popen, started: dict[int, int]) -> None:
    """Leave nothing behind for the next test, whatever the outcome."""
    for pid in still_running(started | descendants(process.pid)):
        os.kill(pid, signal.SIGKILL)
    if process.poll() is None:
        process.kill()
        process.wait()


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGKILL],
                         ids=["SIGTERM", "SIGINT", "SIGHUP", "SIGKILL"])
def test_a_stopped_local_run_leaves_nothing_running(tmp_path, signum):
    process, ports, local_dir = start([sys.executable, "-m", "devtools.local"], tmp_path)
    started: dict[int, int] = {}
    try:
        assert '"id_token"' in curl_token(local_dir, ports["GATEWAY_PORT"])
        started = descendants(process.pid)
        assert len(started) >= 2  # functions-framework and its gunicorn worker
        process.send_signal(signum)  # SIGKILL: its parent dies without a chance to clean up
        assert_everything_stops(process, started, ports)
    finally:
        kill_leftovers(process, started)


@pytest.mark.parametrize("stop", ["Ctrl-C", "hang-up", "SIGTERM", "SIGKILL"])
def test_make_run_serves_tokens_and_stops(tmp_path, stop):
    process, ports, local_dir = start(["make", "--no-print-directory", "run"], tmp_path)
    started: dict[int, int] = {}
    try:
        assert '"id_token"' in curl_token(local_dir, ports["GATEWAY_PORT"])
        started = descendants(process.pid)
        assert len(started) >= 3  # python, functions-framework and its gunicorn worker
        if stop in ("Ctrl-C", "hang-up"):  # the terminal signals its foreground process group
            os.killpg(process.pid, signal.SIGINT if stop == "Ctrl-C" else signal.SIGHUP)
        else:
            process.send_signal(signal.Signals[stop])  # to make alone
        assert_everything_stops(process, started, ports)
    finally:
        kill_leftovers(process, started)
