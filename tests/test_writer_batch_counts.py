"""Tag counts and issue counters added up per writer batch (issue 22): storing events in one batch
(deferring jobs, as ingest's envelopes are) leaves the same issues, tag counts, search terms,
activity and releases as storing each in a batch of its own: out-of-order times, events without a
release, repeated and new users, a release new mid-batch, a resolved issue that regresses, and a
project whose alert rules count users (judged one event at a time)."""
from __future__ import annotations

import random
import time
from pathlib import Path
from typing import Any

import pytest

import tracker

NOW = time.time()

TABLES = {"issues": "SELECT * FROM issues ORDER BY id",
          "issue_tags": "SELECT * FROM issue_tags ORDER BY issue_id, key, value",
          "issue_terms": "SELECT * FROM issue_terms ORDER BY issue_id, key, value",
          "issue_activity": "SELECT issue_id, kind, data, created FROM issue_activity ORDER BY id",
          "releases": "SELECT version, date_created FROM releases ORDER BY id",
          "events": "SELECT event_id, issue_id FROM events ORDER BY id"}


def events(seed: int, count: int = 60) -> list[tracker.PreparedEvent]:
    rng = random.Random(seed)
    out = []
    for n in range(count):
        kind = rng.choice("abc")
        raw = {"level": rng.choice(["error", "warning", "fatal"]), "event_id": f"{seed:08x}{n:024x}",
               "timestamp": NOW - 3600 + rng.randrange(12) * 60,  # out of order, and at the same second
               "user": {"id": f"user-{rng.randrange(8)}"}, "tags": {"flag": rng.choice(["x", "y"])},
               "exception": {"values": [{"type": "ValueError", "value": f"{kind} {n}", "stacktrace": {"frames": [
                   {"filename": "app.py", "function": f"crash_{kind}", "lineno": 1, "in_app": True}]}}]}}
        if rng.random() < 0.6:
            raw["release"] = f"shop@{1 + n * 3 // count}.0"  # a release new a third and two thirds in
        out.append(tracker.prepare_event(raw, project_id=1, event_id=None, received=NOW, rules=tracker.NO_RULES,
                                         scrub=tracker.DEFAULT_SCRUB))
    return out


def stored(tmp_path: Path, name: str, evs: list[tracker.PreparedEvent], batch: int,
           setup: Any = None) -> dict[str, list[tuple[Any, ...]]]:
    settings = tracker.Settings(db=str(tmp_path / f"{name}.db"))
    tracker.init_db(settings)
    conn = tracker.connect_db(settings.db)
    try:
        tracker.apply_batch(conn, [lambda c: tracker.create_project(c, "counts", "counts")])
        half = len(evs) // 2
        for part, after in ((evs[:half], setup), (evs[half:], None)):
            for start in range(0, len(part), batch):
                results = tracker.apply_batch(conn, [tracker.deferring(lambda c, e=e: tracker.store_event(c, e))
                                                     for e in part[start:start + batch]])
                assert results == [True] * len(results), results
            if after:
                assert tracker.apply_batch(conn, [after]) == [None]
        return {table: [tuple(row) for row in conn.execute(sql)] for table, sql in TABLES.items()}
    finally:
        conn.close()


def resolve_first_issue(conn: Any) -> None:
    issue = conn.execute("SELECT * FROM issues ORDER BY id LIMIT 1").fetchone()
    tracker.change_status(conn, issue, "resolved", {}, NOW - 4000)  # before every event: the next regresses it


def count_users(conn: Any) -> None:
    tracker.insert_rule(conn, 1, {"name": "users", "actionMatch": "all", "filterMatch": "all", "frequency": 30,
                                  "conditions": [{"id": tracker.USER_FREQUENCY, "interval": "1h", "value": 3}], "filters": [],
                                  "actions": [{"id": tracker.NOTIFY_ALL}], "environment": None})


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("setup", [None, resolve_first_issue, count_users])
def test_one_batch_stores_what_one_event_at_a_time_does(tmp_path: Path, seed: int, setup: Any) -> None:
    evs = events(seed)
    alone = stored(tmp_path, "alone", evs, 1, setup)
    together = stored(tmp_path, "together", evs, 8, setup)
    for table in TABLES:
        assert together[table] == alone[table], table
    assert any(row[1] == "release" for row in together["issue_activity"])
    if setup is resolve_first_issue:
        assert any(row[1] == "set_regression" for row in together["issue_activity"])


def test_a_batch_adds_one_statement_per_table_not_per_event(tmp_path: Path) -> None:
    settings = tracker.Settings(db=str(tmp_path / "s.db"))
    tracker.init_db(settings)
    conn = tracker.connect_db(settings.db)
    tracker.apply_batch(conn, [lambda c: tracker.create_project(c, "counts", "counts")])
    statements: list[str] = []
    conn.set_trace_callback(statements.append)
    evs = events(4, 30)
    tracker.apply_batch(conn, [tracker.deferring(lambda c, e=e: tracker.store_event(c, e)) for e in evs])
    conn.set_trace_callback(None)
    jobs_done = max(n for n, s in enumerate(statements) if s == "RELEASE job")
    in_jobs = [s for s in statements[:jobs_done] if s.lstrip().startswith(("INSERT INTO issue_tags", "UPDATE issues"))]
    assert in_jobs == []  # every count waits for the end of the batch
    conn.close()


def test_a_rolled_back_job_between_counted_events_counts_a_user_once(tmp_path: Path) -> None:
    settings = tracker.Settings(db=str(tmp_path / "r.db"))
    tracker.init_db(settings)
    conn = tracker.connect_db(settings.db)
    tracker.apply_batch(conn, [lambda c: tracker.create_project(c, "counts", "counts")])
    first, second = (tracker.prepare_event({"message": "same", "user": {"id": "alice"}}, project_id=1, event_id=None,
                                           received=NOW, rules=tracker.NO_RULES, scrub=tracker.DEFAULT_SCRUB)
                     for _ in range(2))

    def fails(c: Any) -> None:
        raise RuntimeError("another envelope's job failed")
    results = tracker.apply_batch(conn, [tracker.deferring(lambda c: tracker.store_event(c, first)),
                                         tracker.deferring(fails),
                                         tracker.deferring(lambda c: tracker.store_event(c, second))])
    assert results[0] is True and results[2] is True
    assert [tuple(r) for r in conn.execute("SELECT times_seen, user_count FROM issues")] == [(2, 1)]
    conn.close()
