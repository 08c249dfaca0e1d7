"""The official JavaScript SDKs against the live tracker, in their real runtimes.

Browser: npm's `@sentry/browser`, bundled and minified by esbuild with a little shop code, loaded by
a page that another loopback port serves, in Debian's headless Chromium. Every envelope is then a
cross-origin `fetch` from the page: query-string auth, a `text/plain` body, CORS.
Node: npm's `@sentry/node` in a real `node` process: query-string auth, chunked bodies, envelopes
with no item `length` and no final newline.

The packages are pinned in tests/js/package.json (`npm ci` there; `.ci/run` does it). Without node
or those packages the tests are skipped on a developer's machine and fail in CI, which installs them.
"""
from __future__ import annotations

import functools
import json
import os
import shutil
import subprocess
import threading
import urllib.parse
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Callable, Iterator

import httpx
import pytest

import tracker as tracker_module
from conftest import Project, TrackerServer, wait_for

JS = Path(__file__).resolve().parent / "js"
MODULES = JS / "node_modules"
NODE = shutil.which("node")
RELEASE, ENVIRONMENT = "shop-web@3.1.0", "staging"


def need_js(*packages: str) -> None:
    """Skip (fail in CI) unless node and these npm packages are installed in tests/js."""
    missing = [name for name in packages if not (MODULES / name / "package.json").exists()]
    if NODE and not missing:
        return
    reason = ("node is not installed" if not NODE else
              f"npm packages missing in tests/js/node_modules: {', '.join(missing)} (run `npm ci` in tests/js)")
    if os.environ.get("CI"):
        pytest.fail(f"{reason}; .ci/run installs them")
    pytest.skip(reason)


def entry(event: dict[str, Any], kind: str) -> dict[str, Any]:
    """One interface of an event as the events API returns it (`entries`)."""
    return next(e["data"] for e in event["entries"] if e["type"] == kind)


def envelope_lines(body: bytes) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """A JS SDK envelope's header and item headers: every line is JSON, items have no `length`."""
    header, *rest = [json.loads(line) for line in body.split(b"\n")]
    return header, rest[0::2]


# -- the test pages' site: another origin than the tracker -----------------------------------

class QuietFiles(SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        pass


@dataclass
class Site:
    root: Path
    url: str

    def page(self, name: str, config: dict[str, Any]) -> str:
        """Write tests/js/page.html with these Sentry.init options as `name`; its URL."""
        html = (JS / "page.html").read_text().replace("__CONFIG__", json.dumps(config))
        (self.root / name).write_text(html)
        return f"{self.url}/{name}"


def serve(server: ThreadingHTTPServer) -> Callable[[], None]:
    """Run a stdlib HTTP server in a thread; the returned function stops it."""
    threading.Thread(target=server.serve_forever, daemon=True).start()

    def stop() -> None:
        server.shutdown()
        server.server_close()
    return stop


@pytest.fixture(scope="session")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    """The SDK bundle (tests/js/entry.js, minified by esbuild once a session) on a port of its own."""
    need_js("@sentry/browser", "esbuild")
    root = tmp_path_factory.mktemp("site")
    out = subprocess.run([str(MODULES / ".bin" / "esbuild"), "entry.js", "--bundle", "--format=iife", "--minify",
                          f"--outfile={root / 'sentry.bundle.js'}"], cwd=JS, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    server = ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(QuietFiles, directory=str(root)))
    stop = serve(server)
    try:
        yield Site(root, f"http://127.0.0.1:{server.server_address[1]}")
    finally:
        stop()


def pump(page: Any, check: Callable[[], Any]) -> Any:
    """wait_for, letting Playwright deliver the page's events (it does so only inside its own calls)."""
    return wait_for(lambda: page.wait_for_timeout(50) or check(), timeout=15)


@dataclass
class Sent:
    """One request of the page to the tracker, as Chromium sent it, and the answer it got."""
    method: str
    url: str
    headers: dict[str, str]
    body: str
    status: int
    response_headers: dict[str, str]


def load_page(tracker: TrackerServer, project: Project, browser: Any, url: str, events: int) -> list[Sent]:
    """Open the page and wait until the tracker stored `events` events; the page's finished
    requests to the project's envelope endpoint that carried an event."""
    endpoint = f"{tracker.url}/api/{project.id}/envelope/?"
    finished: list[Any] = []
    context = browser.new_context()
    try:
        page = context.new_page()
        page.on("requestfinished", lambda r: finished.append(r) if r.url.startswith(endpoint) else None)
        page.goto(url)
        tracker.wait_issues(project, events, timeout=15)

        def sent() -> list[Any]:
            with_events = [r for r in finished if '{"type":"event"}' in (r.post_data or "")]
            return with_events if len(with_events) >= events else []
        return [Sent(r.method, r.url, r.all_headers(), r.post_data, r.response().status, r.response().all_headers())
                for r in pump(page, sent)]
    finally:
        context.close()


# -- browser ----------------------------------------------------------------------------------

def test_browser_sdk_in_a_real_page(tracker: TrackerServer, project: Project, browser: Any, site: Site,
                                    tmp_path: Path) -> None:
    """A page on another origin loads the minified @sentry/browser bundle, calls captureMessage and
    throws an uncaught TypeError: both arrive through CORS with query-string auth and text/plain
    bodies, with the page's URL, browser and OS (from the User-Agent), release and environment,
    and a stack trace of minified frames that the issue page shows with line and column."""
    page_url = site.page(f"checkout-{project.id}.html", {"dsn": project.dsn, "release": RELEASE,
                                                          "environment": ENVIRONMENT})
    requests = load_page(tracker, project, browser, page_url, 2)

    # the wire: what Chromium really sent, and that the tracker's CORS answer let the SDK read it
    for r in requests:
        query = dict(urllib.parse.parse_qsl(urllib.parse.urlsplit(r.url).query))
        assert r.method == "POST" and query["sentry_key"] == project.key and query["sentry_version"] == "7"
        assert query["sentry_client"] == "sentry.javascript.browser/11.12.0"
        assert r.headers["content-type"] == "text/plain;charset=UTF-8"
        assert "x-sentry-auth" not in r.headers and "authorization" not in r.headers
        assert r.headers["origin"] == site.url != tracker.url  # cross-origin
        assert r.status == 200 and r.response_headers["access-control-allow-origin"] == "*"
        assert "length" not in envelope_lines(r.body.encode())[1][0] and not r.body.endswith("\n")

    issues = {i["level"]: i for i in tracker.wait_issues(project, 2)}
    assert issues.keys() == {"error", "warning"}
    crash_issue, message_issue = issues["error"], issues["warning"]
    assert crash_issue["title"] == "TypeError: cart 42 has no items"
    assert message_issue["title"] == "checkout page opened without a session"

    crash = tracker.latest_event(crash_issue["id"])
    exception = entry(crash, "exception")["values"][-1]
    assert (exception["type"], exception["value"]) == ("TypeError", "cart 42 has no items")
    assert exception["mechanism"]["type"] == "auto.browser.global_handlers.onerror"
    assert exception["mechanism"]["handled"] is False
    bundle_url = f"{site.url}/sentry.bundle.js"
    bundle = (site.root / "sentry.bundle.js").read_text().splitlines()
    *_, inline, checkout, price_cart = exception["stacktrace"]["frames"]
    # minified: long lines, where only the column finds the code
    assert (price_cart["filename"], price_cart["function"]) == (bundle_url, "Object.priceCart")
    assert bundle[price_cart["lineNo"] - 1][price_cart["colNo"] - 1:].startswith("new TypeError(`cart ${")
    assert (checkout["filename"], checkout["function"]) == (bundle_url, "Object.checkout")
    assert bundle[checkout["lineNo"] - 1][checkout["colNo"] - 1:].startswith("priceCart(")
    assert len(bundle[checkout["lineNo"] - 1]) > 1000
    page_lines = (site.root / f"checkout-{project.id}.html").read_text().splitlines()
    assert inline["filename"] == page_url and page_lines[inline["lineNo"] - 1].strip().startswith("shop.checkout(")
    assert price_cart["inApp"] and inline["colNo"] == page_lines[inline["lineNo"] - 1].index("shop.checkout(") + 6

    message = tracker.latest_event(message_issue["id"])
    for event in (crash, message):
        assert (event["release"]["version"], event["environment"], event["platform"]) == (RELEASE, ENVIRONMENT, "javascript")
        assert entry(event, "request")["url"] == page_url
        user_agent = dict(entry(event, "request")["headers"])["User-Agent"]
        assert "Chrome/" in user_agent and "Linux" in user_agent
        chrome = user_agent.split("Chrome/")[1].split()[0]
        assert event["contexts"]["browser"] == {"name": "Chrome", "version": chrome, "type": "browser"}
        assert event["contexts"]["os"] == {"name": "Linux", "type": "os"}
        tags = {t["key"]: t["value"] for t in event["tags"]}
        assert tags["browser"] == f"Chrome {chrome}" and tags["os"] == "Linux" and tags["url"] == page_url
    assert entry(message, "message")["formatted"] == "checkout page opened without a session"

    # the issue page: the minified frames are legible (function, file, line and column)
    view = tracker.browser_context(browser, viewport={"width": 1280, "height": 1000})
    try:
        page = view.new_page()
        page.goto(f"{tracker.url}/issues/{crash_issue['id']}/")
        crashed = page.locator("details.frame.crash > summary")
        assert " ".join(crashed.inner_text().split()).startswith(
            f"{bundle_url} in Object.priceCart at line {price_cart['lineNo']}:{price_cart['colNo']}")
        frames = page.locator("details.frame > summary").all_inner_texts()
        assert any(f"{bundle_url} in Object.checkout at line {checkout['lineNo']}:{checkout['colNo']}" in " ".join(t.split())
                   for t in frames)
        assert any(f"at line {inline['lineNo']}:{inline['colNo']}" in t for t in frames)
        body = page.locator("body").inner_text()
        assert "auto.browser.global_handlers.onerror" in body and "unhandled" in body
        assert f"Chrome {chrome}" in body and RELEASE in body
        page.screenshot(path=str(tmp_path / "browser-issue.png"), full_page=True)
    finally:
        view.close()


def test_browser_sdk_custom_headers_pass_the_cors_preflight(tracker: TrackerServer, project: Project,
                                                           browser: Any, site: Site) -> None:
    """`transportOptions.headers` makes the SDK's fetch a non-simple request: Chromium sends the
    tracker a preflight first, and only its answer lets the events through."""
    page_url = site.page(f"preflight-{project.id}.html", {
        "dsn": project.dsn, "release": RELEASE, "transportOptions": {"headers": {"X-Requested-With": "shop-web"}}})
    requests = load_page(tracker, project, browser, page_url, 2)
    for r in requests:
        assert r.headers["x-requested-with"] == "shop-web" and r.headers["origin"] == site.url
        assert r.status == 200 and r.response_headers["access-control-allow-origin"] == "*"


@pytest.mark.parametrize("agent, os_context", [
    ("Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/126.0.0.0 "
     "Safari/537.36 Edg/126.0.0.0", {"name": "Windows", "version": "10.0"}),
    ("Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.4 "
     "Safari/605.1.15", {"name": "Mac OS X", "version": "10.15.7"}),
    ("Mozilla/5.0 (iPhone; CPU iPhone OS 17_4_1 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) "
     "Version/17.4 Mobile/15E148 Safari/604.1", {"name": "iOS", "version": "17.4.1"}),
    ("Mozilla/5.0 (Linux; Android 14; Pixel 8) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/126.0.0.0 Mobile "
     "Safari/537.36", {"name": "Android", "version": "14"}),
    ("Mozilla/5.0 (X11; CrOS x86_64 14541.0.0) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/126.0.0.0 "
     "Safari/537.36", {"name": "Chrome OS", "version": "14541.0.0"}),
    ("Mozilla/5.0 (X11; Ubuntu; Linux x86_64; rv:127.0) Gecko/20100101 Firefox/127.0", {"name": "Linux"}),
    ("sentry.javascript.node/11.12.0", None),
])
def test_os_from_user_agent(agent: str, os_context: dict[str, str] | None) -> None:
    """contexts.os from a browser's User-Agent, as Relay names it; nothing for a non-browser."""
    assert tracker_module.os_from_user_agent(agent) == (os_context and {**os_context, "type": "os"})


# -- node -------------------------------------------------------------------------------------

def run_node_app(dsn: str, release: str) -> None:
    """tests/js/node_app.js under @sentry/node: captureException, captureMessage, an unhandled
    rejection, then Sentry.close() before the process exits."""
    need_js("@sentry/node")
    env = {**os.environ, "NODE_PATH": str(MODULES), "SENTRY_DSN": dsn, "SENTRY_RELEASE": release,
           "SENTRY_ENVIRONMENT": ENVIRONMENT}
    out = subprocess.run([NODE, "node_app.js"], cwd=JS, env=env, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0 and "flushed" in out.stdout, out.stdout + out.stderr


def test_node_sdk_events_arrive(tracker: TrackerServer, project: Project) -> None:
    """A handled exception, a message and an unhandled promise rejection from a real node process:
    types, levels and mechanisms, frames with the script's path, source lines and in_app, the
    node runtime, release and environment."""
    release = "billing-worker@2.0.1"
    run_node_app(project.dsn, release)
    issues = {i["title"]: i for i in tracker.wait_issues(project, 3)}
    script = str(JS / "node_app.js")
    lines = (JS / "node_app.js").read_text().splitlines()
    node_version = subprocess.run([NODE, "--version"], capture_output=True, text=True, check=True).stdout.strip()

    handled = tracker.latest_event(issues["RangeError: amount 250 is over the card limit"]["id"])
    rejection = tracker.latest_event(issues["Error: invoice 7 not found"]["id"])
    message = tracker.latest_event(issues["nightly export finished with warnings"]["id"])
    assert issues["nightly export finished with warnings"]["level"] == "warning"
    expected = {handled["id"]: ("generic", True, "chargeCard"),
                rejection["id"]: ("auto.node.onunhandledrejection", False, "loadInvoice")}
    for event in (handled, rejection):
        mechanism_type, is_handled, function = expected[event["id"]]
        exception = entry(event, "exception")["values"][-1]
        assert exception["mechanism"]["type"] == mechanism_type and exception["mechanism"]["handled"] is is_handled
        tags = {t["key"]: t["value"] for t in event["tags"]}
        assert tags["handled"] == ("yes" if is_handled else "no") and tags["level"] == "error"
        frames = exception["stacktrace"]["frames"]
        crash = frames[-1]
        assert (crash["filename"], crash["function"], crash["inApp"]) == (script, function, True)
        context_line = dict(crash["context"])[crash["lineNo"]]  # Sentry's [line number, text] pairs
        assert context_line == lines[crash["lineNo"] - 1] and "throw new" in context_line
        assert crash["colNo"] == lines[crash["lineNo"] - 1].index("new ") + 1
        internal = [f for f in frames if f["filename"].startswith("node:internal/")]
        assert internal and not any(f["inApp"] for f in internal)
    assert entry(rejection, "exception")["values"][-1]["type"] == "Error"
    assert rejection["extra"] == {"unhandledPromiseRejection": True}
    assert entry(message, "message")["formatted"] == "nightly export finished with warnings"
    for event in (handled, rejection, message):
        assert (event["platform"], event["release"]["version"], event["environment"]) == ("node", release, ENVIRONMENT)
        assert event["contexts"]["runtime"]["name"] == "node"
        assert event["contexts"]["runtime"]["version"] == node_version
        assert event["sdk"]["name"] == "sentry.javascript.node"


@dataclass
class Captured:
    path: str
    headers: dict[str, str]
    body: bytes
    chunks: int


@dataclass
class CaptureServer:
    """A stand-in ingest endpoint that records each request exactly as the SDK sent it."""
    url: str
    requests: list[Captured] = field(default_factory=list)


@pytest.fixture
def capture() -> Iterator[CaptureServer]:
    got: list[Captured] = []

    class Record(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body, chunks = b"", 0
            if self.headers.get("transfer-encoding", "").lower() == "chunked":
                while size := int(self.rfile.readline().split(b";")[0], 16):
                    body += self.rfile.read(size)
                    self.rfile.readline()
                    chunks += 1
                self.rfile.readline()  # the empty line after the last chunk
            else:
                body = self.rfile.read(int(self.headers.get("content-length") or 0))
            got.append(Captured(self.path, {k.lower(): v for k, v in self.headers.items()}, body, chunks))
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", "2")
            self.end_headers()
            self.wfile.write(b"{}")

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Record)
    stop = serve(server)
    try:
        yield CaptureServer(f"127.0.0.1:{server.server_address[1]}", got)
    finally:
        stop()


def test_node_sdk_wire_format(tracker: TrackerServer, project: Project, capture: CaptureServer) -> None:
    """What @sentry/node puts on the wire (recorded by a capture server): query-string auth only, no
    Content-Type, chunked bodies with no Content-Length, items with no `length` and no final
    newline. The exact bodies, forwarded chunked to the tracker, are stored."""
    run_node_app(f"http://{project.key}@{capture.url}/{project.id}", "billing-worker@2.0.2")
    assert len(capture.requests) == 4  # three events, then the process's session at close
    event_ids = []
    for r in capture.requests:
        path, _, query = r.path.partition("?")
        auth = dict(urllib.parse.parse_qsl(query))
        assert path == f"/api/{project.id}/envelope/" and auth["sentry_key"] == project.key
        assert auth["sentry_version"] == "7" and auth["sentry_client"] == "sentry.javascript.node/11.12.0"
        assert r.headers["transfer-encoding"] == "chunked" and r.chunks >= 1
        assert not {"content-length", "content-type", "x-sentry-auth", "authorization"} & r.headers.keys()
        assert r.headers["user-agent"] == "sentry.javascript.node/11.12.0"
        header, items = envelope_lines(r.body)
        assert items and all("length" not in item for item in items) and not r.body.endswith(b"\n")
        if items[0]["type"] == "event":
            event_ids.append(header["event_id"])
    assert len(event_ids) == 3

    for r in capture.requests:  # the same bytes, chunked again, to the real endpoint
        half = len(r.body) // 2
        answer = httpx.post(f"{tracker.url}{r.path}", content=iter([r.body[:half], r.body[half:]]),
                            headers={"User-Agent": r.headers["user-agent"]}, timeout=10)
        assert answer.status_code == 200, answer.text
        header, _ = envelope_lines(r.body)
        assert answer.json() == ({"id": header["event_id"]} if "event_id" in header else {})
    issues = tracker.wait_issues(project, 3)
    assert sorted(i["title"] for i in issues) == ["Error: invoice 7 not found", "RangeError: amount 250 is over the card limit",
                                                  "nightly export finished with warnings"]
    stored = {tracker.latest_event(i["id"])["eventID"] for i in issues}
    assert stored == set(event_ids)
