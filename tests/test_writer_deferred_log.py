"""The envelope log off the writer's per-event path (issue 22): a job defers its envelope's row, and
the batch writes all of them in one statement before its commit, so a logged envelope is seen with
the answer and lost with nothing; a job that rolls back takes its row with it, a failing log write
loses only the log's rows, and the log still keeps a project's newest ENVELOPE_LOG."""
from __future__ import annotations

import json
import time
import types
from typing import Any

import tracker
from test_writer_caches import conn  # noqa: F401 (the fixture: a project's database and its writer connection)

KEPT = tracker.ENVELOPE_ZSTD.compress(b"{}\n")  # a logged body as logged_body keeps it


def intake(n: int, outcome: str = "stored") -> Any:
    """What envelope_log_job reads of an Intake: an envelope of one event item."""
    request = types.SimpleNamespace(headers={"user-agent": "test/1"})
    return types.SimpleNamespace(project_id=1, received=time.time(), header={"event_id": f"{n:032x}"},
                                 outcomes=[["event", 10, outcome]], request=request)


def logged(conn: Any) -> list[tuple[str, list[list[Any]]]]:
    return [(json.loads(h)["event_id"], json.loads(i)) for h, i in
            conn.execute("SELECT header, items FROM envelopes WHERE project_id = 1 ORDER BY id")]


def test_rows_of_the_batch_are_written_in_one_statement_before_the_commit(conn: Any) -> None:
    statements: list[str] = []
    conn.set_trace_callback(statements.append)
    tracker.apply_batch(conn, [tracker.deferring(tracker.envelope_log_job(intake(n), KEPT, 3)) for n in range(5)])
    conn.set_trace_callback(None)
    inserts = [n for n, s in enumerate(statements) if s.startswith("INSERT INTO envelopes")]
    jobs_done = max(n for n, s in enumerate(statements) if s == "RELEASE job")
    assert len(inserts) == 5 and jobs_done < inserts[0] and inserts[-1] < statements.index("COMMIT")
    assert [e for e, _ in logged(conn)] == [f"{n:032x}" for n in range(5)]


def test_a_job_not_marked_deferring_sees_the_rows_deferred_before_it(conn: Any) -> None:
    seen = []
    tracker.apply_batch(conn, [tracker.deferring(tracker.envelope_log_job(intake(1), KEPT, 3)),
                               lambda c: seen.append(c.execute("SELECT count(*) FROM envelopes").fetchone()[0])])
    assert seen == [1]


def test_an_outcome_its_job_changed_is_logged_as_changed(conn: Any) -> None:
    envelope = intake(1)
    log = tracker.envelope_log_job(envelope, KEPT, 3)

    def duplicate(c: Any) -> None:  # as take_event's job does when the event id is stored already
        envelope.outcomes[0][2] = "dropped: an event with this id is stored already"
        log(c)
    tracker.apply_batch(conn, [duplicate])
    assert logged(conn) == [(f"{1:032x}", [["event", 10, "dropped: an event with this id is stored already"]])]


def test_a_job_that_rolls_back_takes_its_row_with_it(conn: Any) -> None:
    def fails(c: Any) -> None:
        tracker.envelope_log_job(intake(2), KEPT, 3)(c)
        raise RuntimeError("the envelope's other job failed")
    results = tracker.apply_batch(conn, [tracker.envelope_log_job(intake(1), KEPT, 3), fails,
                                         tracker.envelope_log_job(intake(3), KEPT, 3)])
    assert isinstance(results[1], RuntimeError)
    assert [e for e, _ in logged(conn)] == [f"{1:032x}", f"{3:032x}"]


def test_a_failing_log_write_loses_the_log_rows_not_the_jobs_writes(conn: Any, monkeypatch: Any) -> None:
    def broken(c: Any, rows: list[Any]) -> None:
        c.execute("INSERT INTO envelopes (project_id) VALUES (1)")  # NOT NULL columns: refused
    monkeypatch.setattr(tracker, "write_envelope_log", broken)
    job = tracker.envelope_log_job(intake(1), KEPT, 3)
    results = tracker.apply_batch(conn, [lambda c: tracker.set_project_option(c, 1, "marker", True), job])
    assert results[1] is None and logged(conn) == []
    assert conn.execute("SELECT value FROM project_options WHERE key = 'marker'").fetchone()[0] == "true"


def test_the_log_keeps_a_projects_newest(conn: Any) -> None:
    total = tracker.ENVELOPE_LOG + 140  # 40 batches of 16
    for start in range(0, total, 16):
        tracker.apply_batch(conn, [tracker.envelope_log_job(intake(n), KEPT, 3) for n in range(start, start + 16)])
    count, newest = conn.execute("SELECT count(*), max(id) FROM envelopes WHERE project_id = 1").fetchone()
    assert tracker.ENVELOPE_LOG <= count < tracker.ENVELOPE_LOG + 50 + 16 and newest == total


def test_an_sdk_name_no_utf8_can_hold_loses_no_other_envelopes_row(conn: Any) -> None:
    hostile = intake(2)
    hostile.header["sdk"] = {"name": "\ud800", "version": "1"}  # json reads a lone surrogate; SQLite cannot store it
    tracker.apply_batch(conn, [tracker.deferring(tracker.envelope_log_job(e, KEPT, 3))
                               for e in (intake(1), hostile, intake(3))])
    assert [e for e, _ in logged(conn)] == [f"{n:032x}" for n in (1, 2, 3)]
