"""Source maps (issue 17) with the real tools: an app of a few files bundled and minified by esbuild
(source maps on), `sentry-cli sourcemaps inject` and `upload` (3.x) or `releases files …
upload-sourcemaps --url-prefix` (2.x, the legacy release-file path), the official @sentry/node in
`node` and @sentry/browser in Debian's Chromium; the stored events must read as the code that was
written. Then what goes wrong: a missing map, an invalid one, one too large, hostile uploads.

sentry-cli 2.x comes from PyPI into a directory of its own (`pip install --target DIR
'sentry-cli<3'`; `.ci/run` does it) and is found by $SENTRY_CLI_2.
"""
from __future__ import annotations

import functools
import gzip
import hashlib
import io
import json
import os
import shutil
import subprocess
import zipfile
from http.server import ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest

from conftest import Project, TrackerServer, wait_for
from test_js_sdks import MODULES, NODE, QuietFiles, entry, need_js, serve

SENTRY_CLI = shutil.which("sentry-cli")
ESBUILD = MODULES / ".bin" / "esbuild"

UTIL_JS = """\
export function parseAmount(text) {
  const value = Number(text);
  if (Number.isNaN(value)) {
    throw new TypeError(`not a number: ${text}`);
  }
  return value;
}
"""

CHECKOUT_JS = """\
import { parseAmount } from "./util.js";

export function checkout(cart) {
  let total = 0;
  for (const line of cart) {
    total += parseAmount(line.price);
  }
  return total;
}
"""

NODE_JS = """\
import * as Sentry from "@sentry/node";
import { checkout } from "./checkout.js";

Sentry.init({ dsn: process.env.SENTRY_DSN, release: process.env.SENTRY_RELEASE });
try {
  checkout([{ price: "12" }, { price: "abc" }]);
} catch (error) {
  Sentry.captureException(error);
}
Sentry.close(10000).then((ok) => console.log(ok ? "flushed" : "flush timed out"));
"""

WEB_JS = """\
import * as Sentry from "@sentry/browser";
import { checkout } from "./checkout.js";

window.Sentry = Sentry;
window.shop = { checkout };
"""

PAGE = """<!doctype html>
<html><head><meta charset="utf-8"><title>shop</title>
<script src="/static/app.min.js"></script>
<script>Sentry.init(__CONFIG__);</script>
</head><body><script>shop.checkout([{ price: "12" }, { price: "abc" }]);</script></body></html>
"""


def build(root: Path, entry_source: str, *esbuild_args: str, util: str = UTIL_JS) -> Path:
    """Write the app's sources under `root`/src and bundle them minified, with a map, into `root`/dist."""
    (root / "src").mkdir(parents=True, exist_ok=True)
    for name, source in (("util.js", util), ("checkout.js", CHECKOUT_JS), ("main.js", entry_source)):
        (root / "src" / name).write_text(source)
    out = subprocess.run([str(ESBUILD), "src/main.js", "--bundle", "--minify", "--sourcemap",
                          "--outfile=dist/app.min.js", *esbuild_args], cwd=root, capture_output=True, text=True,
                         timeout=60, env={**os.environ, "NODE_PATH": str(MODULES)})
    assert out.returncode == 0, out.stderr
    return root / "dist"


def cli(tracker: TrackerServer, *args: str, binary: str | None = None, cwd: Path | None = None,
        check: bool = True) -> subprocess.CompletedProcess[str]:
    """Run sentry-cli (3.x unless `binary`) against the live tracker with the admin's token."""
    env = {**os.environ, "SENTRY_URL": tracker.url, "SENTRY_AUTH_TOKEN": tracker.token, "SENTRY_ORG": "tracker"}
    out = subprocess.run([binary or str(SENTRY_CLI), *args], cwd=cwd, env=env, capture_output=True, text=True,
                         timeout=120)
    if check:
        assert out.returncode == 0, out.stdout + out.stderr
    return out


def need_tools() -> None:
    need_js("@sentry/node", "@sentry/browser", "esbuild")
    if not SENTRY_CLI:
        pytest.fail("sentry-cli is not installed (it is in the test extras)")


def inject_and_upload(tracker: TrackerServer, project: Project, dist: Path, *extra: str) -> None:
    cli(tracker, "sourcemaps", "inject", str(dist))
    assert "//# debugId=" in (dist / "app.min.js").read_text()
    out = cli(tracker, "sourcemaps", "upload", "-p", project.slug, *extra, str(dist))
    assert "artifact bundle" in out.stdout


def run_node(project: Project, dist: Path, release: str = "") -> None:
    out = subprocess.run([NODE, str(dist / "app.min.js")], capture_output=True, text=True, timeout=60,
                         env={**os.environ, "NODE_PATH": str(MODULES), "SENTRY_DSN": project.dsn,
                              "SENTRY_RELEASE": release})
    assert out.returncode == 0 and "flushed" in out.stdout, out.stdout + out.stderr


def exception_of(event: dict[str, Any]) -> dict[str, Any]:
    return entry(event, "exception")["values"][-1]


def assert_crash_frame_is_source(event: dict[str, Any]) -> None:
    """The crash frame reads as util.js as written: file, line, column, function, the source line
    and its neighbours; the minified frame is kept beside it."""
    exception = exception_of(event)
    frames = exception["stacktrace"]["frames"]
    crash, caller = frames[-1], frames[-2]
    assert crash["filename"].endswith("src/util.js") and crash["abs_path"].endswith("src/util.js")
    assert (crash["lineno"], crash["colno"], crash["function"]) == (4, 11, "parseAmount")
    assert crash["context_line"] == "    throw new TypeError(`not a number: ${text}`);"
    assert crash["pre_context"] == UTIL_JS.splitlines()[:3] and crash["post_context"] == UTIL_JS.splitlines()[4:7]
    assert crash["in_app"] and crash["data"]["symbolicated"] is True
    assert caller["filename"].endswith("src/checkout.js") and caller["function"] == "checkout"
    assert caller["lineno"] == 6 and caller["context_line"] == "    total += parseAmount(line.price);"
    raw = exception["raw_stacktrace"]["frames"][-1]
    assert raw["filename"].endswith("app.min.js") and raw["lineno"] != 4 and "context_line" not in raw
    assert not [e for e in event.get("errors", []) if e["type"].startswith("js_")], event.get("errors")


# -- the current way: debug ids ----------------------------------------------------------------

def test_node_bundle_with_debug_ids_reads_as_written(tracker: TrackerServer, project: Project,
                                                     tmp_path: Path) -> None:
    """esbuild + `sentry-cli sourcemaps inject` + `upload` (3.x), then @sentry/node throwing in the
    minified bundle: the issue and its event name the original function, file and line, and group
    on them; a rebuilt bundle (other minified names, another debug id) lands in the same issue."""
    need_tools()
    dist = build(tmp_path / "v1", NODE_JS, "--platform=node", "--external:@sentry/node")
    inject_and_upload(tracker, project, dist)
    run_node(project, dist)
    issue, = tracker.wait_issues(project, 1)
    assert issue["title"] == "TypeError: not a number: abc"
    assert issue["culprit"].endswith("src/util.js in parseAmount")
    event = tracker.latest_event(issue["id"])
    assert_crash_frame_is_source(event)
    bundles = tracker.api("GET", f"projects/tracker/{project.slug}/files/artifact-bundles/").json()
    assert len(bundles) == 1 and bundles[0]["fileCount"] == 2 and bundles[0]["associations"] == []

    # the next deploy: more code above, so other minified names and positions, and a new debug id
    rebuilt = build(tmp_path / "v2", NODE_JS, "--platform=node", "--external:@sentry/node",
                    util="export const CURRENCY = 'EUR';\nexport function unused(a) { return a * 2; }\n" + UTIL_JS)
    inject_and_upload(tracker, project, rebuilt)
    assert (rebuilt / "app.min.js").read_text() != (dist / "app.min.js").read_text()
    run_node(project, rebuilt)
    issue, = tracker.wait_issues(project, 2)
    assert issue["count"] == "2"
    latest = exception_of(tracker.latest_event(issue["id"]))["stacktrace"]["frames"][-1]
    assert (latest["lineno"], latest["function"]) == (6, "parseAmount")


@pytest.fixture
def shop_site(tmp_path: Path) -> Any:
    """A loopback site for the browser app: / holds pages, /static/ the bundle."""
    root = tmp_path / "site"
    (root / "static").mkdir(parents=True)
    server = ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(QuietFiles, directory=str(root)))
    stop = serve(server)
    try:
        yield root, f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        stop()


def open_page(tracker: TrackerServer, project: Project, browser: Any, site: tuple[Path, str], dist: Path,
              config: dict[str, Any]) -> dict[str, Any]:
    """Serve the bundle at /static/, open a page that throws in it; the issue once its event is stored."""
    root, url = site
    for name in ("app.min.js", "app.min.js.map"):
        shutil.copy(dist / name, root / "static" / name)
    (root / "shop.html").write_text(PAGE.replace("__CONFIG__", json.dumps({"dsn": project.dsn, **config})))
    context = browser.new_context()
    try:
        context.new_page().goto(f"{url}/shop.html")
        issue, = tracker.wait_issues(project, 1, timeout=20)
    finally:
        context.close()
    return issue


def test_browser_bundle_with_debug_ids_reads_as_written(tracker: TrackerServer, project: Project, browser: Any,
                                                        shop_site: tuple[Path, str], tmp_path: Path) -> None:
    """The real @sentry/browser bundled with the app, injected and uploaded, throwing in Chromium:
    the SDK sends the debug id of the script's URL and the crash frame reads as util.js."""
    need_tools()
    dist = build(tmp_path / "web", WEB_JS, "--format=iife")
    inject_and_upload(tracker, project, dist)
    issue = open_page(tracker, project, browser, shop_site, dist, {})
    event = tracker.latest_event(issue["id"])
    image, = entry(event, "debugmeta")["images"]
    assert image["type"] == "sourcemap" and image["code_file"] == f"{shop_site[1]}/static/app.min.js"
    assert_crash_frame_is_source(event)
    assert exception_of(event)["stacktrace"]["frames"][-1]["data"]["resolved_with"] == "debug-id"


# -- the older way: release files by URL (sentry-cli 2.x) ----------------------------------------

def test_legacy_release_files_with_url_prefix(tracker: TrackerServer, project: Project, browser: Any,
                                              shop_site: tuple[Path, str], tmp_path: Path) -> None:
    """`sentry-cli releases files R upload-sourcemaps dist/ --url-prefix '~/static'` (2.x, no debug
    ids): the page's event of release R resolves by its script's URL; the files are listed on the
    release in the API and on the release page."""
    need_tools()
    cli2 = os.environ.get("SENTRY_CLI_2")
    if not cli2:
        if os.environ.get("CI"):
            pytest.fail("$SENTRY_CLI_2 is not set; .ci/run installs sentry-cli 2.x")
        pytest.skip("set $SENTRY_CLI_2 to a sentry-cli 2.x binary (pip install --target DIR 'sentry-cli<3')")
    assert cli(tracker, "--version", binary=cli2).stdout.startswith("sentry-cli 2.")
    release = f"shop@{project.id}.0"
    dist = build(tmp_path / "legacy", WEB_JS, "--format=iife")
    cli(tracker, "releases", "-p", project.slug, "new", release, binary=cli2)
    out = cli(tracker, "releases", "-p", project.slug, "files", release, "upload-sourcemaps", str(dist),
              "--url-prefix", "~/static", binary=cli2)
    assert "~/static/app.min.js" in out.stdout
    files = tracker.api("GET", f"organizations/tracker/releases/{release}/files/").json()
    assert sorted(f["name"] for f in files) == ["~/static/app.min.js", "~/static/app.min.js.map"]
    assert tracker.web.get(f"/releases/{release}/").text.count("~/static/app.min.js") >= 2

    issue = open_page(tracker, project, browser, shop_site, dist, {"release": release})
    event = tracker.latest_event(issue["id"])
    assert "debugmeta" not in [e["type"] for e in event["entries"]]
    assert_crash_frame_is_source(event)
    crash = exception_of(event)["stacktrace"]["frames"][-1]
    assert crash["data"]["resolved_with"] == "release" and crash["data"]["sourcemap"] == "~/static/app.min.js.map"
