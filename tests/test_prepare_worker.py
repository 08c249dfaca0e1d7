"""An event worker's answers as the server reads them (tracker.PrepareWorker, the subprocess's
protocol): a real child process on a real pipe writes answer frames cut at chosen places, and the
server must decode each whole, in order, however the pipe hands them over; a garbled answer gives
the worker up without losing what it held. Each test runs its loop in a thread of its own (the
browser tests' sync Playwright leaves a loop running in pytest's thread)."""
from __future__ import annotations

import asyncio
import concurrent.futures
import marshal
import sys
from pathlib import Path
from typing import Any

import tracker

# Writes the file's bytes to stdout in the given cuts, each flushed and followed by a pause (so that
# the server reads them apart), then waits for stdin to close, as a worker does.
CHILD = """
import sys, time
data, cuts = open(sys.argv[1], "rb").read(), [int(c) for c in sys.argv[2].split(",")]
for start, end in zip([0, *cuts], [*cuts, len(data)]):
    sys.stdout.buffer.write(data[start:end])
    sys.stdout.buffer.flush()
    time.sleep(0.05)
sys.stdin.read()
"""


def job() -> tracker.PrepareJob:
    return tracker.PrepareJob(b"{}", 1, None, 0.0, "", "", "", tracker.scrub_option_text(None), None, kind="transaction")


def answer(outcome: str) -> bytes:
    """One batch's answer frame, as run_prepare_worker writes it: one prepared transaction item."""
    item = tracker.PreparedItem([], [], 0, outcome)
    return tracker.frame(marshal.dumps([("ok", tracker.fields_of(item))]))


def serve_worker(tmp_path: Path, data: bytes, cuts: list[int], batches: int) -> tuple[list[Any], int]:
    """Start the child on `data` cut at `cuts`, send it `batches` one-job batches; what each job's
    future came to (its outcome, or the exception), and how often Preparers had been told the worker
    ended by then (before the server closed its stdin)."""
    (tmp_path / "answers").write_bytes(data)

    async def main() -> tuple[list[Any], int]:
        ended: list[Any] = []
        transport, worker = await asyncio.get_running_loop().subprocess_exec(
            lambda: tracker.PrepareWorker(ended.append, 30.0), sys.executable, "-c", CHILD,
            str(tmp_path / "answers"), ",".join(map(str, cuts)),
            stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE, stderr=None)
        futures = []
        for _ in range(batches):
            future = asyncio.get_running_loop().create_future()
            worker.send([(job(), future)])
            futures.append(future)
        outcomes = await asyncio.wait_for(asyncio.gather(*futures, return_exceptions=True), 20)
        told = len(ended)
        await asyncio.wait_for(worker.close(), 10)
        assert len(ended) == 1 and transport.is_closing()  # told once in all, its process let go
        return [getattr(o, "outcome", o) for o in outcomes], told

    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        return pool.submit(asyncio.run, main()).result()


def test_answers_cut_anywhere_are_decoded_whole_and_in_order(tmp_path: Path) -> None:
    """Cuts inside a frame's 4-byte length, inside its body, at a frame's end and with two frames in
    one write, and a 600 KB answer that the pipe hands over in many reads."""
    big = "x" * 600_000
    frames = [answer("first"), answer(big), answer("third"), answer("fourth")]
    data = b"".join(frames)
    a, b, c = len(frames[0]), len(frames[1]), len(frames[2])
    cuts = [1, 2, 7, a, a + 3, a + 1000, a + b - 1, a + b + c + 2]
    outcomes, told = serve_worker(tmp_path, data, cuts, 4)
    assert outcomes == ["first", big, "third", "fourth"] and told == 0


def test_a_garbled_answer_gives_the_worker_up_and_loses_nothing(tmp_path: Path) -> None:
    """The first answer decodes; the second is not marshal data: the worker is given up at once (not
    when its stdin closes) and the job it still held is prepared in the server (its payload `{}` is a
    transaction without a trace)."""
    data = answer("first") + (5).to_bytes(4, "little") + b"\xff\xff\xff\xff\xff"
    outcomes, told = serve_worker(tmp_path, data, [len(answer("first")) + 2], 2)
    assert outcomes == ["first", "counted; not kept: no trace id, or too old"] and told == 1
