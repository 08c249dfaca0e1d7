"""The query side at scale: a database of 1,000,000 events in 10,000 issues, written by the tracker's
own writer functions (prepared once per issue, then stored with fresh ids and times), and the time
the pages and API take on it, plus the server's start-up time on it. Run: python bench/bigdb.py"""
from __future__ import annotations

import argparse
import dataclasses
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path

import httpx

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
import tracker  # noqa: E402

from run import KEY, cpu_seconds, free_port, start  # noqa: E402


def template(n: int, received: float) -> tracker.PreparedEvent:
    """An event of issue n: its own crash function, so each of the issues groups apart."""
    raw = {"level": "error", "release": f"shop@{n % 20}.0", "environment": ("prod", "staging")[n % 2],
           "user": {"id": f"user-{n % 997}", "email": f"u{n % 997}@example.org"},
           "tags": {"service": f"svc-{n % 7}", "region": ("eu", "us")[n % 2]},
           "exception": {"values": [{"type": "ValueError", "value": f"bad input {n}", "stacktrace": {"frames": [
               {"filename": "app/main.py", "function": "handle", "lineno": 10, "in_app": True},
               {"filename": f"app/mod{n % 50}.py", "function": f"step_{n}", "lineno": n % 400, "in_app": True}]}}]}}
    return tracker.prepare_event(raw, project_id=1, event_id=None, received=received, rules=tracker.NO_RULES,
                                 scrub=tracker.DEFAULT_SCRUB)


def build(db: Path, events: int, issues: int) -> None:
    settings = tracker.Settings(db=str(db))
    tracker.init_db(settings)
    conn = tracker.connect_db(str(db))
    tracker.apply_batch(conn, [lambda c: tracker.create_project(c, "bench", "bench", public_key=KEY)])
    now = time.time()
    templates = [template(n, now) for n in range(issues)]
    began, batch = time.monotonic(), []
    for i in range(events):
        base = templates[(i * 7919) % issues]  # spread each issue's events over the whole run
        ts = now - 30 * 86400 * (1 - i / events)
        batch.append(dataclasses.replace(base, event_id=uuid.uuid4().hex, timestamp=ts, received=ts))
        if len(batch) == 5000:
            tracker.apply_batch(conn, [lambda c, b=batch: [tracker.store_event(c, ev) for ev in b]])
            batch = []
            if i % 100_000 < 5000:
                print(f"  {i + 1:,} events, {time.monotonic() - began:.0f} s", flush=True)
    if batch:
        tracker.apply_batch(conn, [lambda c: [tracker.store_event(c, ev) for ev in batch]])
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    conn.close()
    print(f"built {events:,} events in {issues:,} issues in {time.monotonic() - began:.0f} s, "
          f"{db.stat().st_size / events:.0f} bytes/event")


def timings(url: str, pid: int, token: str, issue_id: int, event_id: str, repeat: int) -> None:
    """p50 and p95 of each page, and the server's CPU per request (from /proc: on a shared machine the
    wall-clock times follow the load, the CPU much less)."""
    auth = {"Authorization": f"Bearer {token}"}
    cases = {
        "issues page": "/issues/?project=bench",
        "issues page, sort new": "/issues/?project=bench&sort=new",
        "issues page, sort freq": "/issues/?project=bench&sort=freq",
        "issues page, sort user": "/issues/?project=bench&sort=user",
        "issues page, all projects": "/issues/",
        "issues page, search by tag": "/issues/?project=bench&q=service:svc-3",
        "API issues list": "/api/0/projects/tracker/bench/issues/",
        "API search user.id:": "/api/0/projects/tracker/bench/issues/?query=user.id:user-42",
        "API search release:": "/api/0/projects/tracker/bench/issues/?query=release:shop@7.0",
        "API org issues, 24h stats": "/api/0/organizations/tracker/issues/?project=bench",
        "API org issues, 14d stats": "/api/0/organizations/tracker/issues/?project=bench&groupStatsPeriod=14d",
        "API events-stats 14d": "/api/0/organizations/tracker/events-stats/?statsPeriod=14d&interval=1d",
        "API stats_v2 24h": "/api/0/organizations/tracker/stats_v2/?field=sum(quantity)&groupBy=outcome",
        "issue page": f"/issues/{issue_id}/",
        "issue's events page": f"/issues/{issue_id}/events/",
        "event page": f"/issues/{issue_id}/events/{event_id}/",
        "API issue": f"/api/0/issues/{issue_id}/",
        "API issue tags": f"/api/0/issues/{issue_id}/tags/",
        "project overview (24h)": "/projects/bench/overview/",
        "project overview (1h)": "/projects/bench/overview/?period=1h",
        "project overview (7d)": "/projects/bench/overview/?period=7d",
        "project overview (30d)": "/projects/bench/overview/?period=30d",
        "projects page": "/projects/",
        "releases page": "/releases/",
        "release page": "/releases/shop@7.0/",
        "logs page": "/logs/",
        "metrics": "/metrics",
    }
    with httpx.Client(base_url=url, headers=auth, timeout=60) as client:
        for label, path in cases.items():
            times, cpu = [], cpu_seconds(Path(f"/proc/{pid}/stat"))
            for _ in range(repeat):
                began = time.perf_counter()
                r = client.get(path)
                times.append((time.perf_counter() - began) * 1000)
                assert r.status_code == 200, (path, r.status_code)
            times.sort()
            cpu = (cpu_seconds(Path(f"/proc/{pid}/stat")) - cpu) / repeat * 1000
            print(f"  {label:30} p50 {statistics.median(times):7.1f} ms   p95 {times[int(len(times) * 0.95) - 1]:7.1f} ms"
                  f"   server CPU {cpu:6.1f} ms")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--issues", type=int, default=10_000)
    parser.add_argument("--repeat", type=int, default=30)
    parser.add_argument("--db", type=Path, help="keep the database in this file: build it if it does not exist, "
                        "else reuse it (migrated by the server on start-up) and only time the pages")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        db = args.db or Path(tmp) / "big.db"
        if db.exists():
            print(f"reusing {db} (not rebuilt)")
        else:
            build(db, args.events, args.issues)
        token = tracker.with_db(tracker.Settings(db=str(db)), lambda c: tracker.create_token(c, "bench"))
        port = free_port()
        began = time.monotonic()
        process = start([sys.executable, str(HERE.parent / "tracker.py"), "--db", str(db), "serve", "--port",
                         str(port)], port, HERE.parent)
        print(f"start-up on the big database: {time.monotonic() - began:.2f} s (until the port answers)")
        try:
            import sqlite3
            with sqlite3.connect(db) as conn:
                issue_id, event_id = conn.execute("SELECT issue_id, event_id FROM events ORDER BY id DESC LIMIT 1").fetchone()
            timings(f"http://127.0.0.1:{port}", process.pid, token, issue_id, event_id, args.repeat)
        finally:
            process.terminate()
            process.wait(10)


if __name__ == "__main__":
    main()
