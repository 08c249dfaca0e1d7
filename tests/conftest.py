"""Shared fixtures: the real tracker server on a free port with a temporary database."""
from __future__ import annotations

import functools
import importlib
import json
import os
import re
import socket
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator

import httpx
import pytest
import sentry_sdk

import tracker as tracker_module  # this checkout's (pytest's pythonpath), to seed databases without a process per step

ROOT = Path(__file__).resolve().parent.parent
CHROMIUM = Path("/usr/bin/chromium")  # Debian's; Playwright drives it, no browser download
ADMIN_PASSWORD = "correct horse battery staple"
LAUNCH_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
               "--disable-sync", "--no-first-run"]
pytest_plugins = ["receivers"]  # the strict channel receivers, as fixtures


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# `python -m tracker` in the checkout, as the installed `tracker` command runs it: from the cached
# bytecode, where `python tracker.py` compiles 12,000 lines (0.15 s) at every start
TRACKER = (sys.executable, "-m", "tracker")


def run_cli(db: Path, *args: str, url: str | None = None) -> str:
    """Run `python -m tracker …` and return its stdout (fails the test on a non-zero exit)."""
    cmd = [*TRACKER, "--db", str(db), *args]
    if url:
        cmd[3:3] = ["--url", url]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=60, cwd=ROOT)
    assert out.returncode == 0, out.stderr
    return out.stdout


def wait_for(check: Callable[[], Any], timeout: float = 10.0, interval: float = 0.05) -> Any:
    """Poll until check() returns something truthy; fail with the last value otherwise."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout}s (last value {value!r})")
        time.sleep(interval)


@dataclass
class Project:
    id: int
    slug: str
    dsn: str
    key: str


Item = tuple[dict[str, Any], bytes | dict[str, Any]]  # an envelope item: its header and its payload


def envelope(header: dict[str, Any] | None, *items: Item, with_length: bool = True,
             final_newline: bool = True) -> bytes:
    """Serialise an envelope; header None: a fresh event id, as SDKs send; `with_length=False`
    writes JS-style items (no length header)."""
    parts = [json.dumps({"event_id": uuid.uuid4().hex} if header is None else header).encode()]
    for item_header, payload in items:
        body = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
        item_header = {**item_header, "length": len(body)} if with_length else item_header
        parts += [json.dumps(item_header).encode(), body]
    return b"\n".join(parts) + (b"\n" if final_newline else b"")


def auth(project: Project) -> dict[str, str]:
    """The X-Sentry-Auth header an SDK sends with the project's DSN key."""
    return {"X-Sentry-Auth": f"Sentry sentry_key={project.key}, sentry_version=7, sentry_client=tests/1.0"}


@dataclass
class TrackerServer:
    """A running `tracker serve` process and helpers to talk to it."""

    url: str
    db: Path
    port: int
    process: subprocess.Popen[bytes]
    token: str = ""
    counter: list[int] = field(default_factory=lambda: [0])

    def cli(self, *args: str) -> str:
        return run_cli(self.db, *args, url=self.url)

    def create_project(self, name: str | None = None) -> Project:
        """A project with a DSN key, made as `tracker project create` makes it (test_cli runs that
        command itself) but in this process: most tests start with one."""
        self.counter[0] += 1
        name = name or f"proj-{os.getpid()}-{self.counter[0]}"
        project_id, key = seed(self.db, lambda c: tracker_module.create_project(c, name))
        return Project(id=project_id, slug=name, dsn=f"http://{key}@127.0.0.1:{self.port}/{project_id}", key=key)

    def api(self, method: str, path: str, token: str | None = None, **kwargs: Any) -> httpx.Response:
        """`method` on `/api/0/{path}` with a Bearer token: the admin's unless another is given."""
        return httpx.request(method, f"{self.url}/api/0/{path}", timeout=10,
                             headers={"Authorization": f"Bearer {token or self.token}"}, **kwargs)

    def config_project(self, slug: str, key: str) -> Project:
        """A project the TOML config declares, by its slug and DSN key."""
        ids = {p["slug"]: int(p["id"]) for p in self.api("GET", "organizations/tracker/projects/").json()}
        return Project(id=ids[slug], slug=slug, dsn=f"http://{key}@127.0.0.1:{self.port}/{ids[slug]}", key=key)

    def send_envelope(self, project: Project, *items: dict[str, Any] | Item, body: bytes | None = None,
                      timeout: float = 60, **headers: str) -> httpx.Response:
        """POST an envelope with the project's DSN key as an SDK does: `items` are events (dicts) or
        (item header, payload) pairs; `body` is sent as it is instead (shapes no SDK would send)."""
        if body is None:
            ids = [item["event_id"] for item in items if isinstance(item, dict) and "event_id" in item]
            body = envelope({"event_id": ids[0]} if ids else None,
                            *(({"type": "event"}, item) if isinstance(item, dict) else item for item in items))
        return httpx.post(f"{self.url}/api/{project.id}/envelope/", content=body, timeout=timeout,
                          headers={**auth(project), **headers})

    def send_event(self, project: Project, event: dict[str, Any], **headers: str) -> str:
        """POST one event, require a 200 and return the acknowledged id."""
        r = self.send_envelope(project, event, **headers)
        assert r.status_code == 200, r.text
        return r.json()["id"]

    def issues(self, project: Project, query: str = "") -> list[dict[str, Any]]:
        r = self.api("GET", f"projects/tracker/{project.slug}/issues/", params={"query": query})
        assert r.status_code == 200, r.text
        return r.json()

    def wait_issues(self, project: Project, count: int, query: str = "", timeout: float = 10) -> list[dict[str, Any]]:
        """The project's issues once their event total reaches `count`."""
        def check() -> list[dict[str, Any]] | None:
            issues = self.issues(project, query)
            return issues if sum(int(i["count"]) for i in issues) >= count else None
        return wait_for(check, timeout)

    @functools.cached_property
    def web(self) -> httpx.Client:
        """A client for the dashboard's pages, signed in as the admin through the login form."""
        client = httpx.Client(base_url=self.url, timeout=10)
        r = client.post("/login", data={"name": "admin", "password": ADMIN_PASSWORD, "next": "/issues/"})
        assert r.status_code == 303 and "tracker_session" in client.cookies, r.text
        return client

    @functools.cached_property
    def csrf(self) -> str:
        """The admin session's CSRF token, as the dashboard puts it into its forms."""
        match = re.search(r'name="csrf" value="([^"]+)"', self.web.get("/projects/").text)
        assert match, "no CSRF token in the page"
        return match[1]

    def form(self, path: str, data: dict[str, Any], **kwargs: Any) -> httpx.Response:
        """POST a dashboard form as the signed-in admin would (with its CSRF token)."""
        return self.web.post(path, data={**data, "csrf": self.csrf}, **kwargs)

    def browser_context(self, browser: Any, **options: Any) -> Any:
        """A Playwright context signed in as the admin (the web client's session cookie)."""
        context = browser.new_context(**options)
        context.add_cookies([{"name": "tracker_session", "value": self.web.cookies["tracker_session"], "url": self.url}])
        return context

    def latest_event(self, issue_id: str) -> dict[str, Any]:
        r = self.api("GET", f"issues/{issue_id}/events/latest/")
        assert r.status_code == 200, r.text
        return r.json()


def seed(db: Path, job: Callable[[Any], Any]) -> Any:
    """Run one write job on the database as the CLI does (tracker.with_db), in this process."""
    return tracker_module.with_db(tracker_module.Settings(db=str(db)), job)


def start_server(db: Path, *extra: str, port: int | None = None) -> TrackerServer:
    """`tracker serve` on a free port (on `port` when given: a restart where clients expect it), with
    the admin (ADMIN_PASSWORD) and an admin token made beforehand, as `tracker user create` and
    `tracker token create` would make them."""
    token = seed(db, lambda c: (c.execute("SELECT 1 FROM users").fetchone()
                                or tracker_module.create_user(c, "admin", "admin", ADMIN_PASSWORD),
                                tracker_module.create_token(c))[1])
    port = port or free_port()
    url = f"http://127.0.0.1:{port}"
    proc = subprocess.Popen([*TRACKER, "--db", str(db), "serve", "--port", str(port), *extra], cwd=ROOT)
    server = TrackerServer(url=url, db=db, port=port, process=proc, token=token)

    def up() -> bool:
        assert proc.poll() is None, "tracker exited during start-up"
        try:
            return httpx.get(url + "/login", timeout=1).status_code == 200
        except httpx.TransportError:
            return False

    wait_for(up, timeout=20)
    return server


def stop_server(server: TrackerServer) -> None:
    server.process.terminate()
    try:
        server.process.wait(10)
    except subprocess.TimeoutExpired:
        server.process.kill()


@pytest.fixture(scope="session")
def tracker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TrackerServer]:
    """One server for the session; each test isolates itself with its own project."""
    db = tmp_path_factory.mktemp("tracker") / "tracker.db"
    server = start_server(db)
    try:
        yield server
    finally:
        stop_server(server)


@pytest.fixture
def project(tracker: TrackerServer) -> Project:
    return tracker.create_project()


@pytest.fixture
def sdk() -> Iterator[Callable[..., None]]:
    """sentry_sdk.init for one test; the client is flushed and closed afterwards."""
    def init(dsn: str, **options: Any) -> None:
        options.setdefault("default_integrations", True)
        sentry_sdk.init(dsn=dsn, **options)

    yield init
    client = sentry_sdk.get_client()
    client.flush(5)
    client.close()
    sentry_sdk.init()  # no DSN: later tests start from a disabled client


def charge_under_sdk(project: Project, root: Path, module: str, users: tuple[str, ...] = ("",), **options: Any) -> None:
    """Import `module` from `root` (a tree the test wrote) and capture the ValueError its
    `charge(7)` raises with the real SDK, once per user: frames then point into that tree."""
    sys.path.insert(0, str(root))
    try:
        code = importlib.import_module(module)
    finally:
        sys.path.remove(str(root))
    sentry_sdk.init(dsn=project.dsn, in_app_include=[module.split(".")[0]], **options)
    try:
        for user in users:
            with sentry_sdk.new_scope() as scope:
                if user:
                    scope.set_user({"id": user})
                try:
                    code.charge(7)
                except ValueError:
                    sentry_sdk.capture_exception()
        sentry_sdk.flush()
    finally:
        sentry_sdk.get_client().close()
        sentry_sdk.init()


@pytest.fixture(scope="session")
def browser() -> Iterator[Any]:
    """One headless Chromium for the whole run (tests open their own pages)."""
    if not CHROMIUM.exists():
        pytest.skip(f"Debian's Chromium is not installed at {CHROMIUM}")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        chromium = p.chromium.launch(executable_path=str(CHROMIUM), args=LAUNCH_ARGS)
        yield chromium
        chromium.close()


Configure = Callable[[str, str], TrackerServer]  # the `configured` fixture: (name, TOML) → a running server


@pytest.fixture(scope="module")
def configured(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Configure]:
    """Start trackers of a module's own, each with a TOML config (fast retries, a quick clock…):
    `configured(name, toml)`; they stop when the module's tests are done."""
    servers: list[TrackerServer] = []

    def start(name: str, config: str) -> TrackerServer:
        tmp = tmp_path_factory.mktemp(name)
        (tmp / "tracker.toml").write_text(config)
        servers.append(start_server(tmp / "tracker.db", "--config", str(tmp / "tracker.toml")))
        return servers[-1]

    try:
        yield start
    finally:
        for server in servers:
            stop_server(server)
