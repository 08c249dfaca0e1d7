"""The writer's caches (issue 22): the issue of an event's hashes, the search terms an issue has and a
project's alert rules are remembered between events, and whatever could make them wrong empties
them: a job or batch that rolls back, a merge, an unmerge, a deletion, a rule edit, another
connection's commit. Each test stores real prepared events through apply_batch, as the server's writer."""
from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest

import tracker


@pytest.fixture
def conn(tmp_path: Path) -> Any:
    settings = tracker.Settings(db=str(tmp_path / "w.db"))
    tracker.init_db(settings)
    conn = tracker.connect_db(settings.db)
    tracker.apply_batch(conn, [lambda c: tracker.create_project(c, "caches", "caches")])
    yield conn
    conn.close()


def event(kind: str, user: str = "u1") -> tracker.PreparedEvent:
    """An event of its own issue per `kind` (its crash function), from user `user`."""
    raw = {"level": "error", "user": {"id": user}, "exception": {"values": [{"type": "ValueError", "value": kind,
           "stacktrace": {"frames": [{"filename": "app.py", "function": f"crash_{kind}", "lineno": 1, "in_app": True}]}}]}}
    return tracker.prepare_event(raw, project_id=1, event_id=None, received=time.time(), rules=tracker.NO_RULES,
                                 scrub=tracker.DEFAULT_SCRUB)


def store(conn: Any, *events: tracker.PreparedEvent) -> list[int]:
    """Store events, one job each as the server does; the issue each joined."""
    results = tracker.apply_batch(conn, [lambda c, e=e: tracker.store_event(c, e) for e in events])
    assert results == [True] * len(events), results
    return [issue_of(conn, e) for e in events]


def issue_of(conn: Any, ev: tracker.PreparedEvent) -> int:
    return conn.execute("SELECT issue_id FROM events WHERE event_id = ?", (ev.event_id,)).fetchone()[0]


def terms(conn: Any, issue_id: int, key: str) -> set[str]:
    return {r[0] for r in conn.execute("SELECT value FROM issue_terms WHERE issue_id = ? AND key = ?", (issue_id, key))}


def test_a_rolled_back_job_leaves_no_issue_in_the_cache(conn: Any) -> None:
    doomed = event("a")

    def store_then_fail(c: Any) -> None:
        tracker.store_event(c, doomed)
        raise RuntimeError("the rest of the envelope failed")
    [result] = tracker.apply_batch(conn, [store_then_fail])
    assert isinstance(result, RuntimeError)
    [issue_id] = store(conn, event("a"))  # not the rolled-back issue's id, which no row has
    assert conn.execute("SELECT times_seen FROM issues WHERE id = ?", (issue_id,)).fetchone()[0] == 1


def test_a_merged_issues_hash_leads_to_the_merged_issue(conn: Any) -> None:
    first, second = store(conn, event("a"), event("b"), event("b"))[:2]
    target = tracker.apply_batch(conn, [lambda c: tracker.merge_issues(c, 1, [first, second])])[0]
    [joined] = store(conn, event("a" if target == second else "b"))
    assert joined == target


def test_a_deleted_issues_hash_opens_a_new_issue(conn: Any) -> None:
    [issue_id] = store(conn, event("a"))
    tracker.apply_batch(conn, [lambda c: tracker.delete_issues(c, [issue_id])])
    [again] = store(conn, event("a"))
    assert again != issue_id and conn.execute("SELECT 1 FROM issues WHERE id = ?", (again,)).fetchone()


def test_another_connections_commit_empties_the_caches(conn: Any, tmp_path: Path) -> None:
    [issue_id] = store(conn, event("a"))
    tracker.with_db(tracker.Settings(db=str(tmp_path / "w.db")), lambda c: tracker.delete_issues(c, [issue_id]))
    [again] = store(conn, event("a"))
    assert again != issue_id and conn.execute("SELECT 1 FROM issues WHERE id = ?", (again,)).fetchone()


def test_terms_an_unmerge_took_away_are_recorded_again(conn: Any) -> None:
    a, _, b = store(conn, event("a", "alice"), event("a", "alice"), event("b", "bob"))
    target = tracker.apply_batch(conn, [lambda c: tracker.merge_issues(c, 1, [a, b])])[0]
    assert target == a
    store(conn, event("b", "carol"))  # joins the merged issue: the writer knows it has user.id carol
    b_hash = event("b").hashes
    [moved] = tracker.apply_batch(conn, [lambda c: tracker.unmerge_hashes(c, target, set(b_hash))])
    assert terms(conn, target, "user.id") == {"alice"} and terms(conn, moved, "user.id") == {"bob", "carol"}
    [joined] = store(conn, event("a", "carol"))
    assert joined == target and terms(conn, target, "user.id") == {"alice", "carol"}


def test_an_edited_rule_is_judged_from_the_next_event(conn: Any) -> None:
    store(conn, event("a"))  # the project's rules are cached now
    rule = {"name": "every event", "actionMatch": "all", "filterMatch": "all", "frequency": 30, "conditions": [],
            "filters": [], "actions": [{"id": tracker.NOTIFY_ALL}], "environment": None}
    rule_id = tracker.apply_batch(conn, [lambda c: tracker.insert_rule(c, 1, rule)])[0]
    assert rule_id in [i for i, _ in tracker.project_alert_rules(conn, 1)]
    tracker.apply_batch(conn, [lambda c: tracker.delete_rule(c, 1, str(rule_id))])
    assert rule_id not in [i for i, _ in tracker.project_alert_rules(conn, 1)]
