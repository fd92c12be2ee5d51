"""Audit lines reach the shared stdout pipe whole, in order, within one loop iteration."""

import asyncio
import json
import logging
import subprocess
import sys
import threading
from pathlib import Path

from token_service.audit import AuditRecord, JsonLineWriter
from token_service.audit.log_pipe import PIPE_BUF, BatchedLines

ROOT = Path(__file__).resolve().parent.parent


class RecordingPipe:
    """What a pipe's reader would receive, one entry per write() that was flushed."""

    def __init__(self):
        self.buffer: list[str] = []
        self.writes: list[str] = []

    def write(self, text: str) -> int:
        self.buffer.append(text)
        return len(text)

    def flush(self) -> None:
        if self.buffer:
            self.writes.append("".join(self.buffer))
            self.buffer.clear()


def line(number: int, size: int = 100) -> str:
    return json.dumps({"n": number, "pad": "x" * size}) + "\n"


def test_off_the_loop_each_line_is_written_at_once():
    pipe = RecordingPipe()
    lines = BatchedLines(pipe)
    lines.write(line(1))
    assert pipe.writes == [line(1)]
    lines.write(line(2))
    assert pipe.writes == [line(1), line(2)]


def test_the_lines_of_one_loop_iteration_go_out_together_when_it_ends():
    pipe = RecordingPipe()
    lines = BatchedLines(pipe)
    writer = JsonLineWriter(lines)  # flushes after every line, as logging's handlers do

    def answer(number: int) -> None:
        writer.write(AuditRecord("INFO", f"request {number}", {"n": str(number)}))

    async def one_iteration():
        loop = asyncio.get_running_loop()
        for number in range(3):
            loop.call_soon(answer, number)
        await asyncio.sleep(0)  # the three answers run in the loop's next round
        assert pipe.writes == [], "nothing is written while the round is still answering"
        await asyncio.sleep(0)

    asyncio.run(one_iteration())
    assert len(pipe.writes) == 1
    assert [json.loads(text)["message"] for text in pipe.writes[0].splitlines()] == [
        "request 0", "request 1", "request 2"]


def test_every_write_carries_whole_lines_within_pipe_buf():
    """Two workers share the pipe: only writes of at most PIPE_BUF bytes are atomic."""
    pipe = RecordingPipe()
    lines = BatchedLines(pipe)
    sent = [line(number, size=1100) for number in range(20)]

    async def burst():
        for text in sent:
            lines.write(text)

    asyncio.run(burst())
    assert "".join(pipe.writes) == "".join(sent)
    assert len(pipe.writes) > 1
    for text in pipe.writes:
        assert len(text.encode()) <= PIPE_BUF and text.endswith("\n")


def test_non_ascii_lines_are_measured_in_bytes():
    pipe = RecordingPipe()
    lines = BatchedLines(pipe)
    wide = "é" * 1500 + "\n"  # 1501 characters, 3001 bytes

    async def two():
        lines.write(wide)
        lines.write(wide)

    asyncio.run(two())
    assert pipe.writes == [wide, wide]


def test_a_pool_threads_line_keeps_its_place_behind_lines_already_due():
    pipe = RecordingPipe()
    lines = BatchedLines(pipe)

    async def mixed():
        lines.write(line(1))  # on the loop: due at the end of this iteration
        thread = threading.Thread(target=lines.write, args=(line(2),))
        thread.start()
        thread.join()
        assert pipe.writes == []
        await asyncio.sleep(0)
        assert pipe.writes == [line(1) + line(2)]
        thread = threading.Thread(target=lines.write, args=(line(3),))
        thread.start()
        thread.join()
        assert pipe.writes == [line(1) + line(2)], "nothing due: handed to the loop, not written by the thread"
        await asyncio.sleep(0)
        assert pipe.writes == [line(1) + line(2), line(3)]

    asyncio.run(mixed())


def test_a_pool_threads_line_without_a_running_loop_is_written_at_once():
    pipe = RecordingPipe()
    lines = BatchedLines(pipe)

    async def once():
        lines.write(line(1))  # the loop is seen, then stops

    asyncio.run(once())
    thread = threading.Thread(target=lines.write, args=(line(2),))
    thread.start()
    thread.join()
    assert pipe.writes == [line(1), line(2)]


def test_a_logging_handler_writes_through_it():
    pipe = RecordingPipe()
    logger = logging.getLogger("test_log_pipe")
    logger.propagate = False
    logger.handlers = [logging.StreamHandler(BatchedLines(pipe))]

    async def log_two():
        logger.warning("first")
        logger.warning("second")
        assert pipe.writes == []

    asyncio.run(log_two())
    assert pipe.writes == ["first\nsecond\n"]


def run_child(code: str) -> str:
    return subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True,
                          check=True, timeout=30).stdout


def test_lines_still_pending_are_written_when_the_process_exits():
    never = "lambda callback: True"  # a loop that never comes back for them
    output = run_child(
        "import sys\nfrom token_service.audit.log_pipe import BatchedLines\n"
        f"lines = BatchedLines(sys.stdout, defer={never})\n"
        "lines.write('one\\n'); lines.write('two\\n')\n")
    assert output == "one\ntwo\n"


def test_a_forked_worker_does_not_repeat_what_its_parent_had_pending():
    never = "lambda callback: True"
    output = run_child(
        "import os, sys\nfrom token_service.audit.log_pipe import BatchedLines\n"
        f"lines = BatchedLines(sys.stdout, defer={never})\n"
        "lines.write('parent\\n')\n"
        "pid = os.fork()\n"
        "if pid == 0:\n"
        "    lines.write('child\\n'); lines.write_pending(); os._exit(0)\n"
        "os.waitpid(pid, 0)\n")
    assert sorted(output.splitlines()) == ["child", "parent"]
