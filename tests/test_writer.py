"""The single writer (tracker.Writer) on its own: its thread, the batches it commits and what it answers.
Real SQLite files; each test runs the writer in an event loop of its own, in a thread of its own (the
browser tests' sync Playwright leaves a loop running in pytest's thread)."""
from __future__ import annotations

import asyncio
import concurrent.futures
import sqlite3
from pathlib import Path
from typing import Any, Callable

import pytest

import tracker


def run_writer(db: Path, batch_max: int, body: Callable[[tracker.Writer], Any]) -> Any:
    async def main() -> Any:
        writer = tracker.Writer(str(db), batch_max)
        writer.start()
        try:
            return await asyncio.wait_for(body(writer), 10)
        finally:
            await asyncio.wait_for(writer.close(), 10)
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        return pool.submit(asyncio.run, main()).result()


def insert(value: int) -> Callable[[sqlite3.Connection], int]:
    def job(conn: sqlite3.Connection) -> int:
        conn.execute("INSERT INTO t (v) VALUES (?)", (value,))
        return value
    return job


@pytest.fixture
def db(tmp_path: Path) -> Path:
    path = tmp_path / "w.db"
    with sqlite3.connect(path) as conn:
        conn.execute("CREATE TABLE t (v INTEGER)")
    return path


def test_a_turns_jobs_share_a_batch_in_order_and_each_answer_follows_its_commit(
        db: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    batches: list[int] = []
    apply = tracker.apply_batch
    monkeypatch.setattr(tracker, "apply_batch", lambda conn, jobs: batches.append(len(jobs)) or apply(conn, jobs))
    seen: list[list[int]] = []

    async def body(writer: tracker.Writer) -> list[int]:
        async def one(value: int) -> int:
            result = await writer.submit(insert(value))
            with sqlite3.connect(db) as reader:  # another connection: committed, not only written
                seen.append([v for (v,) in reader.execute("SELECT v FROM t WHERE v = ?", (value,))])
            return result
        first = await asyncio.gather(*(one(n) for n in range(10)))  # submitted in one turn
        later = await asyncio.gather(*(one(n) for n in range(10, 25)))
        return first + later

    assert run_writer(db, 4, body) == list(range(25))
    assert batches == [4, 4, 2, 4, 4, 4, 3]  # batch_max at most, the rest of a turn in the next
    assert sorted(seen) == [[n] for n in range(25)]
    with sqlite3.connect(db) as conn:
        assert [v for (v,) in conn.execute("SELECT v FROM t ORDER BY rowid")] == list(range(25))


def test_a_failing_job_gets_its_exception_and_its_batch_commits(db: Path) -> None:
    def broken(conn: sqlite3.Connection) -> None:
        conn.execute("INSERT INTO t (v) VALUES (-1)")
        raise ValueError("refused")

    async def body(writer: tracker.Writer) -> list[Any]:
        return await asyncio.gather(writer.submit(insert(1)), writer.submit(broken), writer.submit(insert(2)),
                                    return_exceptions=True)

    first, failed, last = run_writer(db, 64, body)
    assert (first, last) == (1, 2) and isinstance(failed, ValueError)
    with sqlite3.connect(db) as conn:
        assert [v for (v,) in conn.execute("SELECT v FROM t ORDER BY rowid")] == [1, 2]  # its row rolled back


def test_a_batch_max_below_one_still_writes(db: Path) -> None:
    async def body(writer: tracker.Writer) -> list[int]:
        return await asyncio.gather(*(writer.submit(insert(n)) for n in range(3)))

    assert run_writer(db, 0, body) == [0, 1, 2]
