"""Retention, backup and check against real servers: old events go in small batches while ingest goes on,
each issue keeps its first and latest event, a cap holds a project to its size, the space goes back to the
file system; `tracker backup` of a live server, `tracker check` and `tracker vacuum`."""
from __future__ import annotations

import contextlib
import json
import random
import shutil
import sqlite3
import statistics
import subprocess
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import httpx
import pytest
from conftest import ROOT, TRACKER, Configure, Project, TrackerServer, run_cli, start_server, stop_server, wait_for

DAY = 86400
CAPPED_KEY, KEPT_KEY, BACKLOG_KEY, LIVE_KEY = (f"{n:x}" * 32 for n in (10, 11, 12, 13))
CONFIG = f"""
[retention]
interval = 0.5
batch = 7
max_age_days = 1

[[projects]]
name = "capped"
dsn_key = "{CAPPED_KEY}"
retention = {{ max_events = 20 }}

[[projects]]
name = "kept"
dsn_key = "{KEPT_KEY}"
retention = {{ max_age_days = 60 }}
"""


@pytest.fixture(scope="module")
def server(configured: Configure) -> TrackerServer:
    return configured("retention", CONFIG)


# -- helpers ------------------------------------------------------------------------------

def rows(db: Path, sql: str, *args: Any) -> list[tuple[Any, ...]]:
    with contextlib.closing(sqlite3.connect(db, timeout=30)) as conn:
        return conn.execute(sql, args).fetchall()


def event_ids(db: Path, project: Project) -> set[str]:
    return {r[0] for r in rows(db, "SELECT event_id FROM events WHERE project_id = ?", project.id)}


def event(fingerprint: str, timestamp: float, **extra: Any) -> dict[str, Any]:
    return {"event_id": uuid.uuid4().hex, "timestamp": timestamp, "level": "error", "platform": "python",
            "message": f"{fingerprint} failed", "fingerprint": [fingerprint], **extra}


def envelope_of(events: list[dict[str, Any]]) -> bytes:
    """One envelope carrying every event as an item of its own."""
    lines = [b"{}"]
    for ev in events:
        body = json.dumps(ev).encode()
        lines += [json.dumps({"type": "event", "length": len(body)}).encode(), body]
    return b"\n".join(lines) + b"\n"


def post_events(url: str, project: Project, events: list[dict[str, Any]]) -> None:
    """Each event in an envelope of its own, in order, as the SDKs send them (Relay keeps one event
    per envelope; the CLI's files may hold many)."""
    with httpx.Client(timeout=30) as client:
        for ev in events:
            r = client.post(f"{url}/api/{project.id}/envelope/", content=envelope_of([ev]),
                            headers={"X-Sentry-Auth": f"Sentry sentry_key={project.key}, sentry_version=7"})
            assert r.status_code == 200, r.text


def one_full_pass(server: TrackerServer) -> None:
    """Return once a retention pass that started after this call has gone over every project: a new
    project's old event is deleted only by a pass that listed the projects after it was created."""
    sentinel = server.create_project()
    post_events(server.url, sentinel, [event(f"sentinel-{uuid.uuid4().hex}", time.time() - 3 * DAY)])
    wait_for(lambda: not event_ids(server.db, sentinel))


def tracker_cli(*args: str) -> subprocess.CompletedProcess[str]:
    """`python tracker.py ARGS`, whatever its exit status."""
    return subprocess.run([*TRACKER, *args], capture_output=True, text=True,
                          timeout=60, cwd=ROOT)


class Load:
    """Sends one event per request to a project from a thread until stopped, keeping (sent, answered,
    status, event id) per request."""

    def __init__(self, url: str, project: Project) -> None:
        self.url, self.project = url, project
        self.done: list[tuple[float, float, int, str]] = []
        self.stopping = threading.Event()
        self.thread = threading.Thread(target=self.run, daemon=True)

    def run(self) -> None:
        with httpx.Client(timeout=30) as client:
            while not self.stopping.is_set():
                ev = event(f"live-{len(self.done) % 5}", time.time())
                sent = time.monotonic()
                r = client.post(f"{self.url}/api/{self.project.id}/envelope/", content=envelope_of([ev]),
                                headers={"X-Sentry-Auth": f"Sentry sentry_key={self.project.key}, sentry_version=7"})
                self.done.append((sent, time.monotonic(), r.status_code, ev["event_id"]))

    def __enter__(self) -> Load:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stopping.set()
        self.thread.join(30)


# -- retention ----------------------------------------------------------------------------

def test_old_events_go_and_each_issue_keeps_its_first_and_latest(server: TrackerServer) -> None:
    project = server.create_project()
    now, tag = time.time(), uuid.uuid4().hex[:8]
    a_latest = event(f"a-{tag}", now - 60)
    recent = [event(f"c-{tag}", now - 3600 * hours) for hours in (1, 2, 3)]
    post_events(server.url, project, [a_latest, *recent])  # first, so `a` is never wholly old
    a_old = [event(f"a-{tag}", now - DAY * days) for days in (6, 5, 4, 3, 2)]
    b_old = [event(f"b-{tag}", now - DAY * days) for days in (4, 3, 2)]
    post_events(server.url, project, [*a_old, *b_old])

    expected = {a_old[0]["event_id"], a_latest["event_id"], *(e["event_id"] for e in recent)}
    wait_for(lambda: event_ids(server.db, project) == expected)
    issues = {i["title"]: i for i in server.issues(project)}
    assert sorted(issues) == [f"a-{tag} failed", f"c-{tag} failed"]  # b had nothing left within a day: gone
    a = issues[f"a-{tag} failed"]
    assert a["count"] == "6"  # counters stay as they were, as in Sentry
    assert server.api("GET", f"issues/{a['id']}/events/oldest/").json()["eventID"] == a_old[0]["event_id"]
    assert server.api("GET", f"issues/{a['id']}/events/latest/").json()["eventID"] == a_latest["event_id"]
    for table in ("issue_hashes", "issue_tags", "issue_terms", "issue_activity", "events"):
        assert rows(server.db, f"SELECT count(*) FROM {table} WHERE issue_id NOT IN (SELECT id FROM issues)") == [(0,)]


def test_max_events_caps_a_project_and_leaves_the_others_alone(server: TrackerServer) -> None:
    capped, kept = server.config_project("capped", CAPPED_KEY), server.config_project("kept", KEPT_KEY)
    now = time.time()
    old_but_kept = [event("kept", now - DAY * (2 + i / 10)) for i in range(10)]
    post_events(server.url, kept, old_but_kept)
    by_issue = [[event(f"capped-{i}", now - 3000 + 100 * i + k) for k in range(20)] for i in range(3)]
    for events in by_issue:  # each issue's events newer than the one before: the oldest go first
        post_events(server.url, capped, events)

    protected = {ev["event_id"] for events in by_issue for ev in (events[0], events[-1])}
    newest_others = [ev["event_id"] for ev in by_issue[2][1:-1]][-14:]
    wait_for(lambda: event_ids(server.db, capped) == protected | set(newest_others))
    one_full_pass(server)
    assert len(event_ids(server.db, capped)) == 20
    assert [i["count"] for i in server.issues(capped)] == ["20", "20", "20"]
    assert event_ids(server.db, kept) == {ev["event_id"] for ev in old_but_kept}


def test_ingest_answers_during_a_pass_and_the_file_shrinks(tmp_path: Path) -> None:
    """20,000 events of 40 issues cross the max age some seconds after the server is up; one pass
    deletes them 10 per writer job while another project's events keep arriving."""
    config = tmp_path / "tracker.toml"
    config.write_text(f'[retention]\ninterval = 0.5\nbatch = 10\nmax_age_days = 1\n\n[[projects]]\nname = "backlog"\n'
                      f'dsn_key = "{BACKLOG_KEY}"\n\n[[projects]]\nname = "live"\ndsn_key = "{LIVE_KEY}"\n')
    rng, crossing = random.Random(7), time.time() + 30  # when the backlog is a day old: loading may be slow
    backlog = [event(f"backlog-{i % 40}", crossing - DAY - 1 + i / 20000, extra={"blob": rng.randbytes(600).hex()})
               for i in range(20000)]
    backlog += [event(f"backlog-{i}", time.time()) for i in range(40)]  # each issue's latest: it stays
    (tmp_path / "backlog.envelope").write_bytes(envelope_of(backlog))
    db = tmp_path / "tracker.db"
    run_cli(db, "--config", str(config), "send", str(tmp_path / "backlog.envelope"), "--project", "backlog")
    pages_before = rows(db, "PRAGMA page_count")[0][0]
    assert rows(db, "PRAGMA auto_vacuum") == [(2,)]  # incremental, as every new database

    server = start_server(db, "--config", str(config))
    try:
        backlog_project = server.config_project("backlog", BACKLOG_KEY)
        counts: list[tuple[float, int]] = []

        def settled() -> bool:
            counts.append((time.monotonic(), len(event_ids(db, backlog_project))))
            return counts[-1][1] == 80

        with Load(server.url, server.config_project("live", LIVE_KEY)) as load:
            wait_for(settled, timeout=60, interval=0.02)
            wait_for(lambda: rows(db, "PRAGMA freelist_count") == [(0,)], timeout=20)
        assert counts[0][1] == 20040, "the backlog went before the server was watched: raise the margin"
        began = next(t for t, n in counts if n < 20040)
        ended = next(t for t, n in counts if n == 80)
        during = [d for d in load.done if began <= d[0] and d[1] <= ended]
        latencies = [answered - sent for sent, answered, _, _ in load.done]
        print(f"\nthe backlog began to go {began - counts[0][0]:.1f} s after the server was up; "
              f"pass over 20,000 events: {ended - began:.2f} s; {len(during)} events ingested meanwhile; "
              f"latency median {statistics.median(latencies) * 1000:.1f} ms, max {max(latencies) * 1000:.0f} ms; "
              f"pages {pages_before} -> {rows(db, 'PRAGMA page_count')[0][0]}")
        assert {status for _, _, status, _ in load.done} == {200}
        assert len(during) >= 5 and max(latencies) < 2.0
        assert rows(db, "PRAGMA page_count")[0][0] < pages_before / 4  # the space went back to the file system
        assert len(rows(db, "SELECT 1 FROM issues WHERE project_id = ?", backlog_project.id)) == 40
    finally:
        stop_server(server)


# -- backup, check, vacuum ----------------------------------------------------------------

def test_backup_of_a_live_server_under_load_passes_check(server: TrackerServer, tmp_path: Path) -> None:
    project = server.create_project()
    copy = tmp_path / "copy.db"
    with Load(server.url, project) as load:
        wait_for(lambda: len(load.done) >= 50)
        started = time.monotonic()
        out = run_cli(server.db, "backup", str(copy))
        acknowledged = {event_id for _, answered, status, event_id in load.done if answered < started and status == 200}
        wait_for(lambda: len(load.done) >= len(acknowledged) + 20)  # and it went on meanwhile
    assert f"to {copy}" in out and " MB in " in out
    assert not Path(f"{copy}.partial").exists() and not Path(f"{copy}-wal").exists()

    check = run_cli(copy, "check").splitlines()
    assert check[-1] == "ok" and "schema version" in check[1], check
    assert acknowledged <= {r[0] for r in rows(copy, "SELECT event_id FROM events WHERE project_id = ?", project.id)}
    live = run_cli(server.db, "check").splitlines()
    assert live[-1] == "ok" and any("events" in line and "issues" in line for line in live), live

    size = copy.stat().st_size
    again = tracker_cli("--db", str(server.db), "backup", str(copy))
    assert again.returncode != 0 and "exists" in again.stderr and "--force" in again.stderr
    assert copy.stat().st_size == size
    assert "Backed up" in run_cli(server.db, "backup", str(copy), "--force")

    broken = tmp_path / "broken.db"
    shutil.copy(copy, broken)
    with broken.open("r+b") as f:
        f.seek(broken.stat().st_size // 2 // 4096 * 4096)
        f.write(random.Random(1).randbytes(3 * 4096))
    result = tracker_cli("--db", str(broken), "check")
    assert result.returncode == 1, result.stdout
    assert result.stdout.strip().splitlines()[-1] != "ok" and ("integrity" in result.stdout or "unreadable" in result.stdout)


def test_vacuum_converts_an_old_database_but_not_under_a_running_server(server: TrackerServer, tmp_path: Path) -> None:
    refused = tracker_cli("--db", str(server.db), "vacuum")
    assert refused.returncode != 0 and "stop the server" in refused.stderr

    old = tmp_path / "old.db"
    run_cli(old, "project", "create", "old-one")
    with contextlib.closing(sqlite3.connect(old, isolation_level=None)) as conn:  # as the files made before auto_vacuum was set
        conn.execute("PRAGMA auto_vacuum=NONE")
        conn.execute("VACUUM")
    assert "auto_vacuum none" in run_cli(old, "check")
    assert "auto_vacuum incremental" in run_cli(old, "vacuum")
    assert rows(old, "PRAGMA auto_vacuum") == [(2,)]
    assert "auto_vacuum incremental" in run_cli(old, "check")
