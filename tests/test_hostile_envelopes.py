"""Hostile envelopes from whoever holds a public DSN, against the live server: none of any shape within
the size limits may leave its memory above where it was (measured from the server's own processes in
/proc), none may stall the single writer for another project, and event-less envelopes are rate
limited by data category as Sentry does, the real sentry-sdk backing off for that category alone.
A stopped event worker's requests are prepared in the server within the batch timeout."""
from __future__ import annotations

import concurrent.futures
import contextlib
import json
import os
import re
import signal
import sqlite3
import threading
import time
import uuid
import zlib
from pathlib import Path
from typing import Any, Callable

import pytest
import sentry_sdk
from sentry_sdk.crons import capture_checkin

from conftest import Configure, Project, TrackerServer, envelope, start_server, stop_server, wait_for
from test_ingest import worker_pids
from test_limits import WINDOW

MIB = 1024 * 1024
DAILY = {"schedule": {"type": "crontab", "value": "0 4 * * *"}}  # a monitor nothing is due for during a test
RATE_KEYS = [f"{n:x}" * 32 for n in range(10, 12)]  # two projects of rate_limit = 3 (a, b keys)
CONFIG = f"[limits]\nwindow = {WINDOW}\n\n" + "".join(
    f'[[projects]]\nname = "limited-{n}"\nslug = "limited-{n}"\ndsn_key = "{key}"\nrate_limit = 3\n\n'
    for n, key in enumerate(RATE_KEYS))


@pytest.fixture(scope="module")
def server(configured: Configure) -> TrackerServer:
    return configured("hostile", CONFIG)


def gzipped(body: bytes) -> bytes:
    c = zlib.compressobj(1, zlib.DEFLATED, 16 + zlib.MAX_WBITS)
    return c.compress(body) + c.flush()


def outcomes(server: TrackerServer, project: Project) -> list[list[Any]]:
    """What became of each item of the project's latest logged envelope (the envelope log)."""
    with sqlite3.connect(server.db) as conn:
        row = conn.execute("SELECT items FROM envelopes WHERE project_id = ? ORDER BY id DESC LIMIT 1",
                           (project.id,)).fetchone()
    return json.loads(row[0])


# -- memory: no shape of envelope within the limits leaves the server bigger -----------------------

def rss_mb(server: TrackerServer) -> float:
    """Resident memory of the server and its event workers, in MB."""
    total = 0
    for pid in [server.process.pid, *worker_pids(server)]:
        status = Path(f"/proc/{pid}/status").read_text()
        total += int(re.search(r"VmRSS:\s+(\d+) kB", status)[1])  # type: ignore[index]
    return total / 1024


def buckets(count: int) -> bytes:
    return json.dumps({"attrs": {"release": "hostile@1"},
                       "aggregates": [{"started": time.time(), "exited": 1} for _ in range(count)]}).encode()


# name → (envelope, the status it must get); each within max_body and max_envelope
HOSTILE: dict[str, tuple[Callable[[], bytes], int]] = {
    "100,000 tiny items (the 3 KB gzip body of the report)": (
        lambda: b"{}\n" + b'{"type":"x"}\n{}\n' * 100_000, 413),
    "999 tiny items, just under the cap": (lambda: b"{}\n" + b'{"type":"x"}\n{}\n' * 999, 200),
    "999 item headers of 4 KB": (
        lambda: b"{}\n" + (json.dumps({"type": "x", "pad": [0] * 1300}).encode() + b"\n{}\n") * 999, 200),
    "an item header over the 4 KiB cap": (
        lambda: b"{}\n" + json.dumps({"type": "x", "pad": [0] * 3000}).encode() + b"\n{}\n", 413),
    "999 ten-byte attachments": (
        lambda: envelope(None, *[({"type": "attachment", "filename": f"a{n}.txt"}, b"0123456789")
                                 for n in range(999)]), 200),
    "deep JSON in every kind of item": (
        lambda: envelope(None, *[({"type": kind}, b"[" * depth + b"]" * depth) for depth in (100, 50_000)
                           for kind in ("check_in", "feedback", "client_report", "user_report", "transaction")] * 75),
        200),
    "100 wide JSON items of 1 MB": (
        lambda: envelope(None, *[({"type": kind}, json.dumps({"a": [0] * 330_000}).encode())
                           for kind in ("feedback", "session", "transaction", "user_report")] * 25), 200),
    "a 90 MiB decompression bomb in one attachment": (
        lambda: envelope(None, ({"type": "attachment", "filename": "zeros"}, bytes(90 * MIB))), 200),
    "100 sessions items of 100 buckets": (lambda: envelope(None, *[({"type": "sessions"}, buckets(100))] * 100), 200),
    "101 sessions items": (lambda: envelope(None, *[({"type": "sessions"}, buckets(1))] * 101), 413),
    "1,000 log and span items of 100 KB": (
        lambda: envelope(None, *[({"type": kind, "item_count": 1}, b'{"items":[' + b"{}," * 33_000 + b"{}]}")
                           for kind in ("log", "span")] * 500), 200),
}


def test_no_hostile_envelope_leaves_the_server_bigger(tmp_path: Path) -> None:
    """Each shape twice (gzip, so each body is small), after one ordinary event warmed the server up:
    its RSS (and its workers') stays within a few MB of where it started. Before: the 100,000 tiny
    items alone took it from 70 to 950 MB, and a 90 MiB bomb kept 90 MB per request."""
    server = start_server(tmp_path / "memory.db")
    try:
        project = server.create_project("memory")
        bodies = {name: gzipped(make()) for name, (make, _) in HOSTILE.items()}
        assert max(len(body) for body in bodies.values()) < MIB
        ordinary = envelope(None, ({"type": "event"}, json.dumps({"message": "warm-up"}).encode()))
        assert server.send_envelope(project, body=ordinary).status_code == 200
        before = rss_mb(server)
        for _ in range(2):
            for name, body in bodies.items():
                r = server.send_envelope(project, body=body, **{"Content-Encoding": "gzip"})
                assert r.status_code == HOSTILE[name][1], (name, r.status_code, r.text)
                if r.status_code == 413:
                    assert "exceeded size limits" in r.json()["detail"], name
        grown = rss_mb(server) - before
        assert grown < 8, f"the server grew by {grown:.0f} MB"
        assert server.send_envelope(project, body=ordinary).status_code == 200  # and still takes events
    finally:
        stop_server(server)


def test_caps_drop_what_is_over_with_an_outcome(server: TrackerServer) -> None:
    """Below the envelope-wide caps, what is over a per-item cap is dropped with an outcome in the
    envelope log and counted as dropped: a second event (Relay: duplicate_item), attachments past
    100, a sessions item of more than 100 buckets, a client report over 4 KiB, a check-in over 100 KiB."""
    project, event_id = server.create_project(), uuid.uuid4().hex
    items = [({"type": "event"}, json.dumps({"message": "first"}).encode()),
             ({"type": "event"}, json.dumps({"message": "second"}).encode()),
             *[({"type": "attachment", "filename": f"f{n}.txt"}, f"attachment {n}".encode()) for n in range(102)],
             ({"type": "sessions"}, buckets(101)),
             ({"type": "client_report"}, json.dumps({"discarded_events": [], "pad": "x" * 5000}).encode()),
             ({"type": "check_in"}, json.dumps({"monitor_slug": "big", "status": "ok", "pad": "x" * 110_000}).encode())]
    r = server.send_envelope(project, body=envelope({"event_id": event_id}, *items))
    assert r.status_code == 200 and r.json() == {"id": event_id}
    found = [outcome for _, _, outcome in outcomes(server, project)]
    assert found[:2] == ["stored", "dropped: an envelope holds one event"]
    assert found[2:104] == ["stored"] * 100 + ["dropped: more than 100 in one envelope"] * 2
    assert found[104:] == ["dropped: more than 100 buckets", "dropped: larger than 4096 bytes", "dropped: too large"]
    assert [i["title"] for i in server.issues(project)] == ["first"]
    with sqlite3.connect(server.db) as conn:
        stored = conn.execute("SELECT count(*), sum(size) FROM attachments WHERE project_id = ?",
                              (project.id,)).fetchone()
        usage = conn.execute("SELECT bytes FROM attachment_usage WHERE project_id = ?", (project.id,)).fetchone()
    assert stored[0] == 100 and usage[0] == stored[1]  # the quota's running total is the stored bytes

    def dropped() -> dict[tuple[str, str], int] | None:
        r = server.api("GET", "organizations/tracker/stats_v2/", params={
            "field": "sum(quantity)", "groupBy": ["reason", "category"], "statsPeriod": "1h", "project": project.id})
        found = {(g["by"]["reason"], g["by"]["category"]): g["totals"]["sum(quantity)"] for g in r.json()["groups"]}
        return found if ("too_large", "monitor") in found else None
    counted = wait_for(dropped, timeout=20)
    for key, quantity in {("duplicate_item", "error"): 1, ("too_many", "attachment_item"): 2, ("invalid", "session"): 1,
                          ("too_large", "internal"): 1, ("too_large", "monitor"): 1}.items():
        assert counted.get(key) == quantity, (key, counted)


# -- the writer: one envelope cannot hold it for another project ---------------------------------

def test_tiny_attachments_do_not_stall_another_project(server: TrackerServer) -> None:
    """While one project sends the report's envelope (8,000 ten-byte attachments, no event; it held
    the writer for 14 s: a sum(size) query and a compression in the writer for each) and then five
    of 999, another project's events are each acknowledged (committed) in well under a second."""
    hostile, other = server.create_project(), server.create_project()
    attack = [envelope(None, *[({"type": "attachment", "filename": f"t{n}.bin"}, b"0123456789") for n in range(count)])
              for count in (8000, 999, 999, 999, 999, 999)]
    answers: list[int] = []

    def send_attack() -> None:
        for body in attack:
            answers.append(server.send_envelope(hostile, body=body).status_code)
    thread = threading.Thread(target=send_attack)
    thread.start()
    acks = []
    while thread.is_alive() or not acks:
        started = time.monotonic()
        r = server.send_envelope(other, ({"type": "event"}, json.dumps({"message": "meanwhile"}).encode()))
        acks.append(time.monotonic() - started)
        assert r.status_code == 200, r.text
    thread.join()
    assert max(acks) < 1, f"another project's event waited {max(acks):.1f} s"
    assert answers == [413, 200, 200, 200, 200, 200]  # 8,000 items is past the 1,000 cap
    with sqlite3.connect(server.db) as conn:
        assert conn.execute("SELECT count(*) FROM attachments WHERE project_id = ?", (hostile.id,)).fetchone()[0] == 500


# -- rate limits by data category -------------------------------------------------------------------

def item(kind: str) -> tuple[dict[str, Any], bytes]:
    now = time.time()
    payloads = {
        "attachment": b"attached text",
        "feedback": {"contexts": {"feedback": {"message": "the button does nothing"}}},
        "session": {"sid": uuid.uuid4().hex, "status": "exited", "started": now, "timestamp": now,
                    "init": True, "attrs": {"release": "limited@1"}},
        "check_in": {"monitor_slug": "nightly", "status": "ok", "monitor_config": DAILY},
        "event": {"message": "an error"},
    }
    payload = payloads[kind]
    return {"type": kind, **({"filename": "a.txt"} if kind == "attachment" else {})}, \
        payload if isinstance(payload, bytes) else json.dumps(payload).encode()


def test_event_less_envelopes_are_rate_limited_by_category(server: TrackerServer) -> None:
    """rate_limit = 3 counts each data category on its own, as Sentry's quotas do: the fourth
    envelope of attachments (no event) gets 429, Retry-After and `attachment` in X-Sentry-Rate-Limits,
    while an event still passes; beside a kept item the limited one is dropped and the 200 carries
    the header alone; feedback, sessions and check-ins (monitor) are limited the same way."""
    project = server.config_project("limited-0", RATE_KEYS[0])
    statuses = [server.send_envelope(project, item("attachment")) for _ in range(4)]
    assert [r.status_code for r in statuses] == [200, 200, 200, 429]
    assert not any("x-sentry-rate-limits" in r.headers or "retry-after" in r.headers for r in statuses[:3])
    refused = statuses[3]
    seconds = int(refused.headers["retry-after"])
    assert abs(seconds - (WINDOW - time.time() % WINDOW)) < 2 and "project quota" in refused.json()["detail"]
    assert refused.headers["x-sentry-rate-limits"] == f"{seconds}:attachment:project:project_quota"
    assert server.send_envelope(project, item("event")).status_code == 200  # errors have their own budget

    mixed = server.send_envelope(project, item("attachment"), item("check_in"))
    assert mixed.status_code == 200 and "retry-after" not in mixed.headers
    assert mixed.headers["x-sentry-rate-limits"].endswith(":attachment:project:project_quota")
    attachment, check_in = [outcome for _, _, outcome in outcomes(server, project)]
    assert attachment == "dropped: rate limited" and not check_in.startswith("dropped"), check_in
    for kind, category, passing in (("feedback", "feedback", 3), ("session", "session", 3),
                                    ("check_in", "monitor", 2)):
        answers = [server.send_envelope(project, item(kind)) for _ in range(passing + 1)]
        assert [r.status_code for r in answers] == [200] * passing + [429], kind
        assert answers[-1].headers["x-sentry-rate-limits"].split(":")[1] == category


def test_sdk_backs_off_check_ins_alone(server: TrackerServer) -> None:
    """The real sentry-sdk, told `monitor` is limited (429 on its fourth check-in of the window),
    sends no more check-ins but still sends errors."""
    project = server.config_project("limited-1", RATE_KEYS[1])
    sentry_sdk.init(dsn=project.dsn, default_integrations=False)
    try:
        for n in range(6):
            capture_checkin(monitor_slug="nightly", status="ok", monitor_config=DAILY)
            sentry_sdk.flush()
        sentry_sdk.capture_message("still reported", level="error")
        sentry_sdk.flush()
    finally:
        sentry_sdk.get_client().close()
        sentry_sdk.init()
    with sqlite3.connect(server.db) as conn:
        logged = [json.loads(row[0]) for row in conn.execute(
            "SELECT items FROM envelopes WHERE project_id = ? ORDER BY id", (project.id,))]
    check_ins = [items[0][2] for items in logged if items[0][0] == "check_in"]
    assert len(check_ins) == 4, check_ins  # three kept, one refused: then the SDK stopped sending them
    assert not any(o.startswith("dropped") for o in check_ins[:3]) and check_ins[3] == "dropped: rate limited"
    assert [issue["title"] for issue in server.issues(project)] == ["still reported"]


# -- a stopped event worker ---------------------------------------------------------------------------

def test_a_stopped_worker_is_replaced_and_nothing_is_stored_twice(tmp_path: Path) -> None:
    """SIGSTOP the only event worker: events sent meanwhile are answered 200 within the batch timeout
    (1 s here; they waited 15 s and more before), prepared in the server; the stopped worker is killed
    and replaced, so SIGCONT finds nothing to resume, and every event is stored once."""
    (tmp_path / "t.toml").write_text("[server]\ningest_workers = 1\nworker_timeout = 1\n")
    server = start_server(tmp_path / "stop.db", "--config", str(tmp_path / "t.toml"))
    try:
        project = server.create_project("stopped")
        [stopped] = wait_for(lambda: worker_pids(server))
        sent = [uuid.uuid4().hex for _ in range(12)]
        body = lambda event_id: envelope({"event_id": event_id},
                                         ({"type": "event"}, json.dumps({"message": "during the stop"}).encode()))
        assert server.send_envelope(project, body=body(sent[0])).status_code == 200  # through the worker
        os.kill(stopped, signal.SIGSTOP)
        try:
            answers = []
            for event_id in sent[1:]:
                started = time.monotonic()
                r = server.send_envelope(project, body=body(event_id), timeout=30)
                answers.append((r.status_code, time.monotonic() - started))
        finally:
            with contextlib.suppress(ProcessLookupError):
                os.kill(stopped, signal.SIGCONT)
        assert [status for status, _ in answers] == [200] * 11
        assert max(seconds for _, seconds in answers) < 2.5, answers
        wait_for(lambda: [pid for pid in worker_pids(server) if pid != stopped])  # its replacement
        assert not Path(f"/proc/{stopped}").exists() or b"prepare-worker" not in Path(
            f"/proc/{stopped}/cmdline").read_bytes()
        later = uuid.uuid4().hex
        assert server.send_envelope(project, body=body(later)).status_code == 200  # through the new worker
        with sqlite3.connect(server.db) as conn:
            stored = [row[0] for row in conn.execute("SELECT event_id FROM events WHERE project_id = ?", (project.id,))]
            logged = [outcome for row in conn.execute("SELECT items FROM envelopes WHERE project_id = ?", (project.id,))
                      for _, _, outcome in json.loads(row[0])]
        assert sorted(stored) == sorted([*sent, later])
        assert logged == ["stored"] * 13
        assert sum(int(issue["count"]) for issue in server.issues(project)) == 13
    finally:
        stop_server(server)


def test_a_busy_worker_is_left_to_finish(tmp_path: Path) -> None:
    """Events that take a worker longer than worker_timeout to prepare (near-1 MiB texts of secrets
    to scrub, about 1 s each) do not get it killed: it is using CPU, not stuck. Killing it would
    prepare its batches on the server's event loop, a DSN holder's lever to stall every request."""
    (tmp_path / "t.toml").write_text("[server]\ningest_workers = 1\nworker_timeout = 0.5\n")
    server = start_server(tmp_path / "busy.db", "--config", str(tmp_path / "t.toml"))
    try:
        project = server.create_project("busy")
        [worker] = wait_for(lambda: worker_pids(server))
        sent = [uuid.uuid4().hex for _ in range(3)]
        heavy = {"message": "hostile", "extra": {"pairs": "auth=1&" * 130_000}}

        def send(event_id: str) -> tuple[int, float]:
            started = time.monotonic()
            r = server.send_envelope(project, {**heavy, "event_id": event_id}, timeout=60)
            return r.status_code, time.monotonic() - started

        with concurrent.futures.ThreadPoolExecutor(len(sent)) as pool:
            answers = list(pool.map(send, sent))
        assert [status for status, _ in answers] == [200] * len(sent)
        assert max(seconds for _, seconds in answers) > 0.5, answers  # the worker was busy past the timeout
        assert worker_pids(server) == [worker]  # and was left to finish
        with sqlite3.connect(server.db) as conn:
            stored = [row[0] for row in conn.execute("SELECT event_id FROM events WHERE project_id = ?", (project.id,))]
        assert sorted(stored) == sorted(sent)
    finally:
        stop_server(server)
