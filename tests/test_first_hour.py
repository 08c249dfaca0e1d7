"""The first hour (issue 18): from the demo to your own service reporting, as a new user does it —
a DSN in one command or one dashboard click for the server that runs, and a mistake on the command
line answered in one line."""
from __future__ import annotations

import os
import re
import subprocess
import sys
import uuid
from pathlib import Path

import httpx
import pytest
from conftest import ROOT, TrackerServer, start_server, stop_server, wait_for


def cli(*args: str, cwd: Path, stdin: str = "") -> subprocess.CompletedProcess[str]:
    """`python tracker.py ARGS` in `cwd` as a person runs it: no TRACKER_* variable, no --db, no --url."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("TRACKER_")}
    return subprocess.run([sys.executable, str(ROOT / "tracker.py"), *args], capture_output=True, text=True,
                          timeout=60, cwd=cwd, env=env, input=stdin)


def test_project_create_beside_the_demo_prints_a_dsn_of_the_running_server(tmp_path: Path) -> None:
    """README step 3 after `tracker demo`: `tracker project create NAME` in the same directory acts on
    the demo's database and prints a DSN with the URL the server announced (not ./tracker.db and :8000)."""
    server = start_server(tmp_path / "tracker-demo.db")
    try:
        made = cli("project", "create", "checkout-api", cwd=tmp_path)
        assert made.returncode == 0, made.stderr
        assert "tracker-demo.db" in made.stderr and not (tmp_path / "tracker.db").exists()
        dsn = made.stdout.strip().splitlines()[-1]
        key, project_id = re.fullmatch(rf"http://([0-9a-f]{{32}})@127\.0\.0\.1:{server.port}/(\d+)", dsn).groups()
        event_id = uuid.uuid4().hex
        r = httpx.post(f"{server.url}/api/{project_id}/store/", json={"event_id": event_id, "message": "first"},
                       headers={"X-Sentry-Auth": f"Sentry sentry_key={key}, sentry_version=7"})
        assert r.status_code == 200, r.text
        again = cli("project", "dsn", "checkout-api", cwd=tmp_path)
        assert again.stdout.strip() == dsn
        link = cli("user", "link", "admin", cwd=tmp_path)
        assert link.stdout.startswith(f"{server.url}/login/"), link.stdout
    finally:
        stop_server(server)


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A directory with a database holding a project `shop` and a user `ann`."""
    path = tmp_path_factory.mktemp("cli")
    for args in (("project", "create", "shop"), ("user", "create", "ann", "--password", "long enough password")):
        assert cli("--db", "t.db", *args, cwd=path).returncode == 0
    (path / "broken.json").write_text("{not json")
    (path / "not-a-db").write_text("hello\n")
    os.chmod(path / "not-a-db", 0o644)
    return path


MISTAKES = [  # each documented command with input a person gets wrong
    ("project", "create", "shop"), ("project", "create", "x", "--slug", "Bad Slug"), ("project", "create", " "),
    ("project", "dsn", "nope"), ("project", "frobnicate"), ("project", "create"),
    ("token", "create", "--scopes", "everything"), ("token", "revoke", "99"), ("token", "revoke", "abc"),
    ("user", "create", "ann"), ("user", "create", "bob", "--password", "short"), ("user", "create", "b b"),
    ("user", "create", "bob", "--role", "king"), ("user", "passwd", "nobody"), ("user", "passwd", "ann", "--password", "x"),
    ("user", "link", "nobody"), ("user", "disable", "nobody"), ("user", "enable", "nobody"), ("user", "delete", "nobody"),
    ("tail", "--project", "nope"), ("tail", "--last", "many"),
    ("send", "missing.json"), ("send", "broken.json"), ("send", "broken.json", "--project", "nope"),
    ("backup", "/nonexistent-dir/x.db"), ("backup", "t.db"), ("demo", "--stream", "-1"), ("demo", "--stream", "x"),
    ("--db", "not-a-db", "token", "list"), ("--db", "not-a-db", "project", "list"), ("--db", "nodir/x.db", "check"),
    ("--db", "nodir/x.db", "project", "create", "x"), ("--config", "missing.toml", "check"),
    ("--config", "broken.json", "check"), ("serve", "--port", "port"), ("nonsense",),
]


@pytest.mark.parametrize("args", MISTAKES, ids=[" ".join(a) for a in MISTAKES])
def test_every_cli_mistake_is_one_line_and_a_failure(workdir: Path, args: tuple[str, ...]) -> None:
    result = cli(*(args if args[0] == "--db" else ("--db", "t.db", *args)), cwd=workdir)
    lines = result.stderr.strip().splitlines()
    assert result.returncode != 0, result.stdout
    assert len(lines) == 1 and "error" in lines[0] and "Traceback" not in result.stderr, result.stderr
    assert (workdir / "not-a-db").stat().st_mode & 0o777 == 0o644  # never made owner-only: it is not ours


def test_send_says_which_project_it_stored_into(workdir: Path) -> None:
    (workdir / "ev.json").write_text('{"message": "from a file"}')
    out = cli("--db", "t.db", "send", "ev.json", cwd=workdir)
    assert out.returncode == 0 and out.stdout.strip() == "Stored 1 new event in project shop (the first; --project chooses)."


def test_dashboard_creates_a_project_and_shows_its_dsn_and_setup(tracker: TrackerServer) -> None:
    name = f"Checkout {uuid.uuid4().hex[:6]}"
    r = tracker.form("/projects/new/", {"name": name, "platform": "celery"})
    assert r.status_code == 303, r.text
    slug = re.sub(r"[^a-z0-9]+", "-", name.lower())
    assert r.headers["location"] == f"/projects/{slug}/setup/?platform=celery"
    page = tracker.web.get(r.headers["location"]).text
    dsn = re.search(r'<code class="dsn" id="dsn">([^<]+)</code>', page)[1]
    assert dsn.startswith(f"http://") and dsn.endswith(f"@127.0.0.1:{tracker.port}/" + dsn.rsplit("/", 1)[1])
    assert "CeleryIntegration" in page and "Waiting for the first event" in page
    for tab in ("Python · FastAPI", "Python · Celery", "Python · logging", "Browser JavaScript", "Node.js", "Go", "Ruby"):
        assert tab in page
    for platform, needle in (("browser", "@sentry/browser"), ("node", "@sentry/node"), ("go", "sentry.Init"),
                             ("ruby", "Sentry.init do |config|"), ("logging", "LoggingIntegration")):
        assert needle in tracker.web.get(f"/projects/{slug}/setup/?platform={platform}").text
    snippet = re.search(r'<pre class="snippet" id="snippet"><code>(.*?)</code>',
                        tracker.web.get(f"/projects/{slug}/setup/?platform=fastapi").text, re.S)[1]
    code = snippet.replace("&#34;", '"').replace("&#39;", "'").replace("&amp;", "&").replace("&lt;", "<").replace("&gt;", ">")
    run = subprocess.run([sys.executable, "-c", code + "\nsentry_sdk.capture_message('hello from the snippet')\n"
                          "sentry_sdk.flush()"], capture_output=True, text=True, timeout=60)
    assert run.returncode == 0, run.stderr
    arrived = wait_for(lambda: (p := tracker.web.get(f"/projects/{slug}/setup/").text) and "Events are arriving" in p and p)
    issue_link = re.search(r'href="(/issues/\d+/events/[0-9a-f]{32}/)">See one', arrived)[1]
    assert "hello from the snippet" in tracker.web.get(issue_link).text


@pytest.mark.parametrize("name, slug, problem", [("", "", "a project name is 1-200 characters"),
                                                 ("x", "Not OK", "a slug is 1-50 lowercase letters"),
                                                 ("y" * 201, "", "a project name is 1-200 characters")])
def test_dashboard_refuses_a_bad_project_in_words(tracker: TrackerServer, name: str, slug: str, problem: str) -> None:
    r = tracker.form("/projects/new/", {"name": name, "slug": slug, "platform": "go"})
    assert r.status_code == 400 and problem in r.text


def test_dashboard_refuses_an_existing_slug(tracker: TrackerServer) -> None:
    project = tracker.create_project()
    r = tracker.form("/projects/new/", {"name": project.slug, "platform": "go"})
    assert r.status_code == 400 and "exists already" in r.text and "tracker project dsn" not in r.text


def test_only_an_admin_creates_projects(tracker: TrackerServer) -> None:
    name = f"member-{uuid.uuid4().hex[:6]}"
    tracker.cli("user", "create", name, "--password", "long enough password")
    member = httpx.Client(base_url=tracker.url, timeout=10)
    assert member.post("/login", data={"name": name, "password": "long enough password"}).status_code == 303
    assert member.get("/projects/new/").status_code == 403
    assert "New project" not in member.get("/projects/").text


def test_setup_page_turns_waiting_into_a_link_when_the_first_event_arrives(tracker: TrackerServer, browser) -> None:
    project = tracker.create_project()
    context = tracker.browser_context(browser, viewport={"width": 1400, "height": 900})
    page = context.new_page()
    errors: list[str] = []
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    page.goto(f"{tracker.url}/projects/{project.slug}/setup/")
    assert "Waiting for the first event" in page.text_content("#first-event")
    tracker.send_event(project, {"message": "the very first one", "level": "error"})
    page.wait_for_selector("#first-event.arrived a", timeout=15000)
    link = page.locator("#first-event a")
    assert link.text_content() == "the very first one"
    link.click()
    page.wait_for_load_state()
    assert "the very first one" in page.content() and not errors
    context.close()


def test_a_second_demo_on_a_busy_port_leaves_the_running_ones_database_alone(tmp_path: Path) -> None:
    import socket
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        (tmp_path / "tracker-demo.db").write_bytes(b"")  # the running demo's (an empty file is a fresh database)
        os.utime(tmp_path / "tracker-demo.db", (1, 1))
        result = cli("demo", "--port", str(busy.getsockname()[1]), cwd=tmp_path)
    assert result.returncode == 1 and result.stderr.count("\n") == 1 and "is a demo running already" in result.stderr
    assert (tmp_path / "tracker-demo.db").stat().st_mtime == 1
