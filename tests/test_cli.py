"""The command line as people run it: real `tracker` subprocesses against temporary databases and servers."""
from __future__ import annotations

import json
import os
import queue
import re
import shutil
import sqlite3
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path
from typing import Any, Callable

import httpx
import markupsafe
import pytest
import sentry_sdk
from conftest import ROOT, TrackerServer, free_port, run_cli, start_server, stop_server, wait_for

import tracker as tracker_module

HEX32, HEX64 = r"[0-9a-f]{32}", r"[0-9a-f]{64}"
SAMPLES = sorted((ROOT / "sample_events").glob("*.envelope"))


def clean_env(**extra: str) -> dict[str, str]:
    """The environment without any TRACKER_* variable of the caller, plus `extra`."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("TRACKER_")}
    return {**env, **extra}


def tracker_cmd(*args: str, cwd: Path = ROOT, env: dict[str, str] | None = None,
                prefix: tuple[str, ...] | None = None) -> subprocess.CompletedProcess[str]:
    """Run `python tracker.py ARGS` (or `prefix ARGS`) to completion."""
    cmd = [*(prefix or (sys.executable, str(ROOT / "tracker.py"))), *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=60, cwd=cwd, env=env or clean_env())


def ok(result: subprocess.CompletedProcess[str]) -> list[str]:
    assert result.returncode == 0, result.stderr
    return result.stdout.strip().splitlines()


def db_rows(db: Path, sql: str, *args: Any) -> list[tuple[Any, ...]]:
    with sqlite3.connect(db) as conn:
        return conn.execute(sql, args).fetchall()


# -- entry points ---------------------------------------------------------------------------

@pytest.mark.parametrize("prefix", [(sys.executable, "tracker.py"), (sys.executable, "-m", "tracker")],
                         ids=["script", "module"])
def test_version_and_help(prefix: tuple[str, ...]) -> None:
    assert ok(tracker_cmd("--version", prefix=prefix)) == [f"tracker {tracker_module.__version__}"]
    usage = "\n".join(ok(tracker_cmd("--help", prefix=prefix)))
    for command in ("serve", "demo", "project", "token", "send"):
        assert command in usage


def test_a_command_is_required() -> None:
    result = tracker_cmd()
    assert result.returncode == 2 and "usage:" in result.stderr


def test_installed_console_script(tmp_path: Path) -> None:
    """`pip install .` puts a `tracker` script beside the interpreter (CI installs; a checkout may not)."""
    script = shutil.which("tracker", path=str(Path(sys.executable).parent))
    if script is None:
        pytest.skip("tracker is not installed in this environment")
    assert ok(tracker_cmd("--version", prefix=(script,), cwd=tmp_path)) == [f"tracker {tracker_module.__version__}"]
    created = tracker_cmd("--db", str(tmp_path / "t.db"), "project", "create", "x", prefix=(script,), cwd=tmp_path)
    dsn = ok(created)[-1]
    assert re.fullmatch(rf"http://{HEX32}@127\.0\.0\.1:8000/1", dsn)


# -- project create -------------------------------------------------------------------------

def test_project_create_prints_the_dsn_last(tmp_path: Path) -> None:
    db = tmp_path / "t.db"
    lines = ok(tracker_cmd("--db", str(db), "project", "create", "Payments Service"))
    match = re.fullmatch(rf"http://({HEX32})@127\.0\.0\.1:8000/(\d+)", lines[-1])
    assert match, lines
    key, project_id = match[1], int(match[2])
    rows = db_rows(db, "SELECT p.slug, p.name FROM projects p JOIN project_keys k ON k.project_id = p.id "
                       "WHERE k.public_key = ? AND p.id = ?", key, project_id)
    assert rows == [("payments-service", "Payments Service")]
    second = ok(tracker_cmd("project", "create", "other", "--db", str(db)))[-1]  # options after the command too
    assert second.endswith(f"/{project_id + 1}") and key not in second


@pytest.mark.parametrize("url, expected", [
    ("http://127.0.0.1:{port}", r"http://{key}@127\.0\.0\.1:{port}/1"),
    ("https://errors.example.com/sentry/", r"https://{key}@errors\.example\.com/sentry/1"),
])
def test_project_create_respects_url(tmp_path: Path, url: str, expected: str) -> None:
    port = free_port()
    db = str(tmp_path / "t.db")
    dsn = ok(tracker_cmd("--url", url.format(port=port), "--db", db, "project", "create", "a"))[-1]
    assert re.fullmatch(expected.format(key=HEX32, port=port), dsn), dsn


def test_project_dsn_takes_events(tracker: TrackerServer, sdk: Callable[..., None]) -> None:
    dsn = tracker.cli("project", "create", f"dsn-{uuid.uuid4().hex[:8]}").strip().splitlines()[-1]
    assert re.fullmatch(rf"http://{HEX32}@127\.0\.0\.1:{tracker.port}/\d+", dsn)
    slug = db_rows(tracker.db, "SELECT slug FROM projects WHERE id = ?", int(dsn.rsplit("/", 1)[1]))[0][0]
    sdk(dsn)
    sentry_sdk.capture_message("hello through the printed DSN")
    sentry_sdk.flush()

    def arrived() -> list[dict[str, Any]]:
        return tracker.api("GET", f"projects/tracker/{slug}/issues/").json()
    assert wait_for(arrived)[0]["title"] == "hello through the printed DSN"


# -- token create ---------------------------------------------------------------------------

def test_token_create_prints_a_working_token(tracker: TrackerServer) -> None:
    token = run_cli(tracker.db, "token", "create", "--name", "ci-script").strip().splitlines()[-1]
    assert re.fullmatch(HEX64, token)
    r = tracker.api("GET", "organizations/", token)
    assert r.status_code == 200 and r.headers["content-type"].startswith("application/json")
    assert [org["slug"] for org in r.json()] == ["tracker"]
    me = tracker.api("GET", "", token).json()
    assert me["auth"]["name"] == "ci-script"
    wrong = token[:-1] + ("0" if token[-1] != "0" else "1")
    r = tracker.api("GET", "organizations/", wrong)
    assert r.status_code == 401 and r.headers["content-type"].startswith("application/json")
    assert r.json()["detail"]


def test_tokens_are_stored_hashed(tmp_path: Path) -> None:
    db = tmp_path / "t.db"
    token = ok(tracker_cmd("--db", str(db), "token", "create"))[-1]
    stored = [row[0] for row in db_rows(db, "SELECT token_hash FROM api_tokens")]
    assert len(stored) == 1 and token not in stored


# -- send -----------------------------------------------------------------------------------

def test_send_event_json_file(tracker: TrackerServer, tmp_path: Path) -> None:
    project = tracker.create_project()
    event_id = uuid.uuid4().hex
    path = tmp_path / "event.json"
    path.write_text(json.dumps({"event_id": event_id, "message": "sent from a file", "level": "warning",
                                "platform": "python", "release": "cli@1"}))
    assert tracker.cli("send", str(path), "--project", project.slug).strip() == f"Stored 1 new event in project {project.slug}."
    issue = tracker.wait_issues(project, 1)[0]
    assert issue["title"] == "sent from a file" and issue["level"] == "warning"
    assert tracker.latest_event(issue["id"])["eventID"] == event_id
    assert tracker.cli("send", str(path), "--project", project.slug).strip() == f"Stored 0 new events in project {project.slug}."


def test_send_envelope_files(tracker: TrackerServer, tmp_path: Path) -> None:
    project = tracker.create_project()
    ids = [uuid.uuid4().hex for _ in range(2)]
    event = {"platform": "python", "exception": {"values": [{"type": "KeyError", "value": "'sku'"}]}}
    framed = json.dumps({**event, "event_id": ids[0]})
    with_length = (f'{{"event_id":"{ids[0]}"}}\n{{"type":"event","length":{len(framed)}}}\n{framed}\n'
                   f'{{"type":"attachment","length":5,"filename":"a.txt"}}\nhello\n')
    without_length = f'{{"event_id":"{ids[1]}"}}\n{{"type":"event"}}\n{json.dumps(event)}'
    files = [tmp_path / "a.envelope", tmp_path / "b.envelope"]
    files[0].write_text(with_length)
    files[1].write_text(without_length)
    assert tracker.cli("send", *map(str, files), "--project", str(project.id)).strip() == f"Stored 2 new events in project {project.slug}."
    issue = tracker.wait_issues(project, 2)[0]
    assert issue["title"] == "KeyError: 'sku'" and issue["count"] == "2"
    stored = db_rows(tracker.db, "SELECT event_id FROM events WHERE project_id = ? ORDER BY event_id", project.id)
    assert [row[0] for row in stored] == sorted(ids)


def test_send_errors(tmp_path: Path) -> None:
    db = str(tmp_path / "t.db")
    ok(tracker_cmd("--db", db, "project", "create", "only"))
    event = tmp_path / "e.json"
    event.write_text('{"message": "x"}')
    missing = tracker_cmd("--db", db, "send", str(tmp_path / "missing.json"))
    assert missing.returncode != 0 and "error" in missing.stderr
    unknown = tracker_cmd("--db", db, "send", str(event), "--project", "nope")
    assert unknown.returncode != 0 and "nope" in unknown.stderr
    assert db_rows(tmp_path / "t.db", "SELECT count(*) FROM events") == [(0,)]


# -- configuration --------------------------------------------------------------------------

def test_config_file_declares_org_and_project(tmp_path: Path, sdk: Callable[..., None]) -> None:
    key = uuid.uuid4().hex
    config = tmp_path / "tracker.toml"
    config.write_text(f'[server]\norganization = "acme"\n\n[[projects]]\nname = "Billing worker"\n'
                      f'slug = "billing"\nplatform = "python"\ndsn_key = "{key}"\nslo = {{ objective = 0.002 }}\n\n'
                      '[[repositories]]\nname = "acme/billing"\nurl = "https://gitlab.example.com/acme/billing"\n')
    db = tmp_path / "t.db"
    server = start_server(db, "--config", str(config))
    try:
        server.token = run_cli(db, "token", "create").strip().splitlines()[-1]
        assert [o["slug"] for o in server.api("GET", "organizations/").json()] == ["acme"]
        assert server.api("GET", "organizations/tracker/projects/").status_code == 404
        projects = server.api("GET", "organizations/acme/projects/").json()
        assert [(p["slug"], p["name"], p["platform"]) for p in projects] == [("billing", "Billing worker", "python")]
        slo = server.api("GET", "projects/acme/billing/slo/").json()
        assert (slo["objective"], slo["window"], slo["description"]) == \
            (0.002, 10, "errored sessions < 0.2% over 10 minutes")
        [repo] = server.api("GET", "organizations/acme/repos/").json()
        assert (repo["name"], repo["url"], repo["provider"]["id"]) == \
            ("acme/billing", "https://gitlab.example.com/acme/billing", "integrations:gitlab")
        sdk(f"http://{key}@127.0.0.1:{server.port}/{projects[0]['id']}")
        sentry_sdk.capture_message("billed through the configured key")
        sentry_sdk.flush()

        def arrived() -> list[dict[str, Any]]:
            return server.api("GET", "projects/acme/billing/issues/").json()
        assert wait_for(arrived)[0]["title"] == "billed through the configured key"
    finally:
        stop_server(server)
    restarted = start_server(db, "--config", str(config))  # idempotent: no second project or key
    stop_server(restarted)
    assert db_rows(db, "SELECT p.slug, k.public_key FROM projects p JOIN project_keys k ON k.project_id = p.id") \
        == [("billing", key)]


def test_flags_beat_env_beat_config(tmp_path: Path) -> None:
    config = tmp_path / "tracker.toml"
    config.write_text('[server]\nurl = "http://config.example"\nport = 9001\n')
    db = str(tmp_path / "t.db")

    def host(*args: str, **env: str) -> str:
        dsn = ok(tracker_cmd("--db", db, *args, "project", "create", uuid.uuid4().hex[:8], env=clean_env(**env)))[-1]
        return dsn.split("@", 1)[1].rsplit("/", 1)[0]

    assert host() == "127.0.0.1:8000"
    assert host("--config", str(config)) == "config.example"
    assert host(TRACKER_CONFIG=str(config)) == "config.example"
    assert host("--config", str(config), TRACKER_URL="http://env.example") == "env.example"
    assert host("--config", str(config), "--url", "http://flag.example", TRACKER_URL="http://env.example") \
        == "flag.example"
    config.write_text('[server]\nport = 9001\n')
    assert host("--config", str(config)) == "127.0.0.1:9001"
    assert host("--config", str(config), TRACKER_PORT="9002", TRACKER_HOST="localhost") == "localhost:9002"


@pytest.mark.parametrize("toml, message", [
    ('[server]\ncolour = "blue"\n', "colour"),
    ('[[projects]]\nslug = "x"\ndsn_key = "not-hex"\n', "dsn_key"),
    ('[[repositories]]\nurl = "https://github.com/a/b"\n', "needs a name"),
    ('[[projects]]\nslug = "x"\nslo = { objective = 2 }\n', "objective must be between 0 and 1"),
])
def test_bad_config_is_refused(tmp_path: Path, toml: str, message: str) -> None:
    config = tmp_path / "tracker.toml"
    config.write_text(toml)
    result = tracker_cmd("--config", str(config), "--db", str(tmp_path / "t.db"), "project", "create", "a")
    assert result.returncode != 0 and message in result.stderr


def test_tracker_db_env_var(tmp_path: Path) -> None:
    work = tmp_path / "work"
    work.mkdir()
    ok(tracker_cmd("project", "create", "by-env", cwd=work, env=clean_env(TRACKER_DB=str(tmp_path / "env.db"))))
    assert db_rows(tmp_path / "env.db", "SELECT slug FROM projects") == [("by-env",)]
    assert not (work / "tracker.db").exists()
    ok(tracker_cmd("--db", str(tmp_path / "flag.db"), "project", "create", "by-flag", cwd=work,
                   env=clean_env(TRACKER_DB=str(tmp_path / "env.db"))))
    assert db_rows(tmp_path / "flag.db", "SELECT slug FROM projects") == [("by-flag",)]
    ok(tracker_cmd("project", "create", "by-default", cwd=work))
    assert db_rows(work / "tracker.db", "SELECT slug FROM projects") == [("by-default",)]


# -- demo -----------------------------------------------------------------------------------

def read_until(proc: subprocess.Popen[str], done: Callable[[str], bool], timeout: float = 60) -> list[str]:
    """Lines of the process's stdout up to the one `done` accepts (a thread reads, so this cannot hang)."""
    lines: queue.Queue[str] = queue.Queue()
    threading.Thread(target=lambda: [lines.put(line) for line in proc.stdout or []], daemon=True).start()
    seen: list[str] = []
    deadline = time.monotonic() + timeout
    while not seen or not done(seen[-1]):
        try:
            seen.append(lines.get(timeout=max(deadline - time.monotonic(), 0.01)).rstrip("\n"))
        except queue.Empty:
            raise AssertionError(f"demo did not finish start-up; it printed {seen}") from None
    return seen


@pytest.mark.skipif(not SAMPLES, reason="sample_events/ has no envelopes")
def test_demo_loads_samples_and_serves(tmp_path: Path) -> None:
    port = free_port()
    proc = subprocess.Popen([sys.executable, str(ROOT / "tracker.py"), "demo", "--db", str(tmp_path / "demo.db"),
                             "--port", str(port)], stdout=subprocess.PIPE, text=True, cwd=tmp_path, env=clean_env())
    try:
        lines = read_until(proc, lambda line: line.startswith("Open "))
        url = f"http://127.0.0.1:{port}"
        link = re.fullmatch(rf"Open ({url}/login/[\w-]+) in your browser \(signs you in once\)\.", lines[-1])
        assert link and re.search(r"Sign in\s+admin / \S{12,}$", "\n".join(lines), re.M), lines
        assert f"with {len(SAMPLES)} sample events" in lines[0]
        dsns = dict(re.findall(rf"^\s*DSN (\S+)\s+(http://{HEX32}@127\.0\.0\.1:{port}/\d+)$", "\n".join(lines), re.M))
        token = re.search(rf"API token\s+({HEX64})$", "\n".join(lines), re.M)
        assert dsns and token, lines

        person = httpx.Client(timeout=2)

        def page() -> str | None:
            try:
                if "tracker_session" not in person.cookies:
                    assert person.get(link[1]).status_code == 303  # the one-time link signs in
                r = person.get(f"{url}/issues/")
            except httpx.TransportError:
                return None
            return r.text if r.status_code == 200 else None
        issues_html = wait_for(page, timeout=30)
        assert person.get(link[1]).status_code == 303  # used up, but this browser is signed in already
        assert httpx.get(link[1], timeout=10).status_code == 403  # and no one else gets in with it
        auth = {"Authorization": f"Bearer {token[1]}"}
        projects = httpx.get(f"{url}/api/0/organizations/tracker/projects/", headers=auth, timeout=10).json()
        assert sorted(p["slug"] for p in projects) == sorted(dsns)
        issues = [issue for p in projects for issue in httpx.get(
            f"{url}/api/0/projects/tracker/{p['slug']}/issues/", headers=auth, timeout=10).json()]
        assert 0 < len(issues) <= len(SAMPLES)
        for issue in issues[:50]:  # the page shows 50; the exception type, or the message, links to the issue
            heading = issue["metadata"].get("type") or issue["title"]
            assert f'href="/issues/{issue["id"]}/"' in issues_html and markupsafe.escape(heading) in issues_html
        slug, dsn = next(iter(dsns.items()))
        key, project_id = re.fullmatch(r"http://(\w+)@[^/]+/(\d+)", dsn).groups()  # type: ignore[union-attr]
        r = httpx.post(f"{url}/api/{project_id}/store/", json={"message": "after the demo"},
                       headers={"X-Sentry-Auth": f"Sentry sentry_version=7, sentry_key={key}"}, timeout=10)
        assert r.status_code == 200, r.text
        health = httpx.get(f"{url}/api/0/organizations/tracker/sessions/", headers=auth, timeout=10, params={
            "field": ["sum(session)", "crash_free_rate(session)"], "groupBy": "release", "statsPeriod": "3d"}).json()
        assert health["groups"] and all(g["totals"]["sum(session)"] > 0 and g["totals"]["crash_free_rate(session)"] > 0.9
                                        for g in health["groups"])
        slos = [s for s in (httpx.get(f"{url}/api/0/projects/tracker/{p}/slo/", headers=auth, timeout=10)
                            for p in dsns) if s.status_code == 200]
        assert len(slos) == 1 and slos[0].json()["state"] == "breached" and len(slos[0].json()["history"]) > 1000
    finally:
        proc.terminate()
        proc.wait(10)
