"""The grouping transition: when the built-in rules change (grouping 2026-12), events whose hash
moved still join the issues their kind opened before, through the previous grouping's hash,
computed as a secondary hash for 90 days in projects that had issues at the upgrade."""
from __future__ import annotations

import copy
import hashlib
import sqlite3
import time
from pathlib import Path
from typing import Any

import tracker as tracker_module
from conftest import TrackerServer, start_server, stop_server

URL = "https://shop.example.com/static/app.js"


def frame(function: str, url: str = URL) -> dict[str, Any]:
    return {"filename": url, "abs_path": url, "function": function, "lineno": 3, "colno": 5, "in_app": True,
            "context_line": f"  {function}(order);"}


EVENT: dict[str, Any] = {"platform": "javascript", "exception": {"values": [{
    "type": "TypeError", "value": "x is undefined", "stacktrace": {"frames": [
        frame("main"), frame("then", "https://shop.example.com/static/node_modules/core-js/modules/es.promise.js"),
        frame("checkout")]}}]}}

# The previous rules left core-js frames in app as the SDK said: all three frames were hashed
# (a URL's frame: function and context line), then the type.
PREVIOUS_APP_HASH = hashlib.md5("".join(["main", "main(order);", "then", "then(order);", "checkout",
                                         "checkout(order);", "TypeError"]).encode()).hexdigest()


def send(server: TrackerServer, project: Any, event: dict[str, Any]) -> None:
    server.send_event(project, copy.deepcopy(event))


def issues(server: TrackerServer, project: Any, events: int) -> list[tuple[str, str]]:
    return sorted((i["id"], i["count"]) for i in server.wait_issues(project, events))


def back_to_before_the_upgrade(db: Path, project_id: int) -> None:
    """Make the database what the previous version left: the issue under its previous hash, the
    schema one step back (the transition's migration not applied)."""
    with sqlite3.connect(db) as conn:
        [issue_id] = {row[0] for row in conn.execute("SELECT issue_id FROM issue_hashes WHERE project_id = ?", (project_id,))}
        conn.execute("DELETE FROM issue_hashes WHERE project_id = ?", (project_id,))
        conn.execute("INSERT INTO issue_hashes (project_id, hash, issue_id) VALUES (?, ?, ?)",
                     (project_id, PREVIOUS_APP_HASH, issue_id))
        conn.execute("ALTER TABLE project_rules DROP COLUMN secondary_until")
        transition = next(n for n, step in enumerate(tracker_module.MIGRATIONS)
                          if isinstance(step, str) and "secondary_until" in step)
        conn.execute(f"PRAGMA user_version = {transition}")  # the later steps run again: they are idempotent


def test_an_event_whose_hash_moved_joins_its_old_issue(tmp_path: Path) -> None:
    db = tmp_path / "tracker.db"
    server = start_server(db)
    try:
        shop = server.create_project("shop")
        send(server, shop, EVENT)
        [(old_issue, _)] = issues(server, shop, 1)
    finally:
        stop_server(server)
    back_to_before_the_upgrade(db, shop.id)

    server = start_server(db)
    try:
        fresh = server.create_project("fresh")  # no issues at the upgrade: no transition
        with sqlite3.connect(db) as conn:
            until = dict(conn.execute("SELECT project_id, secondary_until FROM project_rules").fetchall())
        assert until.keys() == {shop.id}
        assert abs(until[shop.id] - (time.time() + 90 * 86400)) < 600
        send(server, shop, EVENT)
        assert issues(server, shop, 2) == [(old_issue, "2")]  # found through the previous hash
        with sqlite3.connect(db) as conn:  # the current hashes now lead there too
            assert conn.execute("SELECT count(*) FROM issue_hashes WHERE issue_id = ?", (old_issue,)).fetchone()[0] >= 2
        send(server, shop, EVENT)
        assert issues(server, shop, 3) == [(old_issue, "3")]
        other = copy.deepcopy(EVENT)
        other["exception"]["values"][0]["stacktrace"]["frames"][-1]["function"] = "refund"
        send(server, shop, other)
        assert len(issues(server, shop, 4)) == 2  # what differs in app still opens an issue
        send(server, fresh, EVENT)
        assert len(issues(server, fresh, 1)) == 1
    finally:
        stop_server(server)


def test_python_hashes_do_not_move() -> None:
    """Python events hash the same under the previous and the current grouping: no secondary hash."""
    event = {"platform": "python", "exception": {"values": [{"type": "KeyError", "value": "'x'", "stacktrace": {"frames": [
        {"module": "django.core.handlers.base", "function": "get_response", "in_app": True,
         "abs_path": "/venv/lib/python3.11/site-packages/django/core/handlers/base.py", "context_line": "r = h(req)"},
        {"module": "newrelic.hooks.framework_django", "function": "wrapper", "in_app": False,
         "abs_path": "/venv/lib/python3.11/site-packages/newrelic/hooks/framework_django.py"},
        {"module": "shop.views", "function": "checkout", "in_app": True, "abs_path": "/srv/shop/views.py",
         "context_line": "return CART[key]"}]}}]}}
    prepared = tracker_module.prepare_event(event, project_id=1, event_id=None, received=time.time(),
                                            rules=tracker_module.GroupingRules(secondary_until=time.time() + 60),
                                            scrub=tracker_module.parsed_scrub_policy("{}"))
    assert prepared.hashes and prepared.secondary_hashes == []
