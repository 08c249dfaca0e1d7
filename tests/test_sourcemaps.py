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
import threading
import time
import uuid
import zipfile
from http.server import ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest

from conftest import Project, TrackerServer, wait_for
import tracker as tracker_module
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
    assert crash["filename"].endswith("src/util.js") and crash["absPath"].endswith("src/util.js")
    assert (crash["lineNo"], crash["colNo"], crash["function"]) == (4, 11, "parseAmount")
    assert crash["context"] == [[n, text] for n, text in enumerate(UTIL_JS.splitlines()[:7], 1)]
    assert crash["context"][3] == [4, "    throw new TypeError(`not a number: ${text}`);"]
    assert crash["inApp"] and crash["data"]["symbolicated"] is True
    assert caller["filename"].endswith("src/checkout.js") and caller["function"] == "checkout"
    assert caller["lineNo"] == 6 and [6, "    total += parseAmount(line.price);"] in caller["context"]
    raw = exception["rawStacktrace"]["frames"][-1]
    assert raw["filename"].endswith("app.min.js") and raw["lineNo"] != 4 and raw["context"] == []
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
    assert (latest["lineNo"], latest["function"]) == (6, "parseAmount")


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


# -- what goes wrong: a missing map, an invalid one, one too large --------------------------------

def bundle_zip(files: dict[str, tuple[str, str | None, bytes]], **manifest: Any) -> bytes:
    """An artifact bundle as sentry-cli writes it: url → (type, debug id, bytes)."""
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as archive:
        entries = {}
        for url, (kind, debug_id, data) in files.items():
            path = "files/_/_/" + url.removeprefix("~/")
            archive.writestr(path, data)
            entries[path] = {"type": kind, "url": url, "headers": {"debug-id": debug_id} if debug_id else {}}
        archive.writestr("manifest.json", json.dumps({"files": entries, **manifest}))
    return out.getvalue()


def chunk_body(chunks: list[bytes], names: list[str] | None = None) -> tuple[bytes, str]:
    """A multipart body of gzip chunks as sentry-cli posts them; its content type."""
    boundary = "chunk-boundary-17"
    body = b"".join(f'--{boundary}\r\nContent-Disposition: form-data; name="file_gzip"; filename="{name}"\r\n'
                    f"Content-Type: application/octet-stream\r\n\r\n".encode() + gzip.compress(chunk) + b"\r\n"
                    for chunk, name in zip(chunks, names or [hashlib.sha1(c).hexdigest() for c in chunks]))
    return body + f"--{boundary}--\r\n".encode(), f"multipart/form-data; boundary={boundary}"


def post_body(tracker: TrackerServer, path: str, content: bytes, content_type: str,
              token: str | None = None) -> httpx.Response:
    return httpx.post(f"{tracker.url}/api/0/{path}", content=content, timeout=30,
                      headers={"Authorization": f"Bearer {token or tracker.token}", "Content-Type": content_type})


def upload(tracker: TrackerServer, project: Project, data: bytes, token: str | None = None,
           **body: Any) -> httpx.Response:
    """The chunk-upload protocol from Python (for bundles no tool would write): assemble, the
    missing chunks, assemble again; the last answer."""
    options = tracker.api("GET", "organizations/tracker/chunk-upload/", token).json()
    size = options["chunkSize"]
    chunks = [data[i:i + size] for i in range(0, len(data), size)]
    assemble = {"checksum": hashlib.sha1(data).hexdigest(), "chunks": [hashlib.sha1(c).hexdigest() for c in chunks],
                "projects": [project.slug], **body}
    first = tracker.api("POST", "organizations/tracker/artifactbundle/assemble/", token, json=assemble)
    assert first.status_code == 200 and first.json()["state"] == "not_found", first.text
    assert first.json()["missingChunks"] == list(dict.fromkeys(assemble["chunks"]))
    for i in range(0, len(chunks), options["chunksPerRequest"]):
        content, content_type = chunk_body(chunks[i:i + options["chunksPerRequest"]])
        r = post_body(tracker, "organizations/tracker/chunk-upload/", content, content_type, token)
        assert r.status_code == 200, r.text
    return tracker.api("POST", "organizations/tracker/artifactbundle/assemble/", token, json=assemble)


def minified_event(url: str, debug_id: str | None, release: str | None = None) -> dict[str, Any]:
    """A browser SDK's event of a crash in a minified file, with its debug id image (an issue per URL)."""
    event: dict[str, Any] = {
        "event_id": uuid.uuid4().hex, "platform": "javascript", "release": release, "fingerprint": [url],
        "exception": {"values": [{"type": "TypeError", "value": f"broken {url}", "stacktrace": {"frames": [
            {"filename": url, "abs_path": url, "function": "Xa", "lineno": 1, "colno": 48, "in_app": True}]}}]}}
    if debug_id:
        event["debug_meta"] = {"images": [{"type": "sourcemap", "code_file": url, "debug_id": debug_id}]}
    return event


def stored_errors(tracker: TrackerServer, project: Project, event: dict[str, Any]) -> tuple[dict[str, Any], list]:
    """Send the event; its crash frame as stored and its processing errors."""
    tracker.send_event(project, event)
    issue = next(i for i in tracker.wait_issues(project, 1) if event["exception"]["values"][0]["value"] in i["title"])
    stored = wait_for(lambda: next((e for e in [tracker.latest_event(issue["id"])]
                                    if e["id"] == event["event_id"]), None))
    return exception_of(stored), stored["errors"]


def test_missing_and_invalid_maps_are_recorded_on_the_event_and_shown(tracker: TrackerServer, project: Project) -> None:
    """A debug id with no upload (js_no_source), a map that is not JSON and one whose mappings are
    broken (js_invalid_source), one of too many mappings (js_too_large): each frame stays as sent, the event says why, the issue page shows
    the reason and what to do."""
    broken, garbage, huge = str(uuid.uuid4()), str(uuid.uuid4()), str(uuid.uuid4())
    files = {"~/broken.min.js": ("minified_source", broken, b"var a=1;"),
             "~/broken.min.js.map": ("source_map", broken, json.dumps(
                 {"version": 3, "sources": ["a.js"], "names": [], "mappings": "AAAA,C!D"}).encode()),
             "~/garbage.min.js": ("minified_source", garbage, b"var b=2;"),
             "~/garbage.min.js.map": ("source_map", garbage, b"<html>not a map</html>"),
             "~/huge.min.js.map": ("source_map", huge, json.dumps(  # 4 MB, 2,000,001 mappings
                 {"version": 3, "sources": ["a.js"], "names": [], "mappings": "A," * 2_000_001}).encode())}
    r = upload(tracker, project, bundle_zip(files))
    assert r.status_code == 200 and r.json()["state"] == "ok", r.text

    host = "https://shop.example.com/static"
    for name, debug_id, kind in (("missing.min.js", str(uuid.uuid4()), "js_no_source"),
                                 ("broken.min.js", broken, "js_invalid_source"),
                                 ("garbage.min.js", garbage, "js_invalid_source"),
                                 ("huge.min.js", huge, "js_too_large")):
        event = minified_event(f"{host}/{name}", debug_id)
        exception, errors = stored_errors(tracker, project, event)
        assert errors == [{"type": kind, "message": {"js_no_source": "Source code was not found",
                                                     "js_invalid_source": "Sourcemap was invalid or not parseable",
                                                     "js_too_large": "Sourcemap was too large"}[kind],
                           "data": {"url": f"{host}/{name}"}}]
        frame, = exception["stacktrace"]["frames"]
        assert (frame["absPath"], frame["function"], frame["lineNo"], frame["colNo"]) == (f"{host}/{name}", "Xa", 1, 48)
        assert exception["rawStacktrace"] is None
    issue_id = next(i["id"] for i in tracker.issues(project) if "garbage" in i["title"])
    page = tracker.web.get(f"/issues/{issue_id}/").text
    assert "Processing errors" in page and "Sourcemap was invalid or not parseable" in page
    assert "upload the .map file the bundler wrote" in page


def test_hostile_raw_stacktraces_render(tracker: TrackerServer, project: Project) -> None:
    """An SDK may send `raw_stacktrace` and `symbolicated` itself, in any shape: the page still renders."""
    for raw in ([1], {"frames": "x"}, {"frames": [7]}, {"frames": [{"filename": "<b>x</b>", "lineno": "1"}]}):
        event = minified_event(f"https://x.example/{uuid.uuid4().hex}.js", None)
        values = event["exception"]["values"][0]
        values["raw_stacktrace"] = raw
        values["stacktrace"]["frames"][0]["data"] = {"symbolicated": True, "sourcemap": "<i>m</i>"}
        tracker.send_event(project, event)
    for issue in tracker.wait_issues(project, 4):
        page = tracker.web.get(f"/issues/{issue['id']}/")
        assert page.status_code == 200 and "<b>x</b>" not in page.text and "<i>m</i>" not in page.text


def test_a_50_mb_map_is_refused_at_upload_and_ingest_goes_on(tracker: TrackerServer, project: Project,
                                                            tmp_path: Path) -> None:
    """sentry-cli uploading a 50 MB map: a 413 naming the cap, sentry-cli exits 1, nothing is
    stored; events sent meanwhile are answered as quickly as ever. The same file posted to a
    release (the per-file path) is a 413 as well."""
    need_tools()
    dist = build(tmp_path / "big", NODE_JS, "--platform=node", "--external:@sentry/node")
    source_map = json.loads((dist / "app.min.js.map").read_text())
    source_map["sourcesContent"][0] += "\n// " + "padding " * (50 * 1024 * 1024 // 8)
    (dist / "app.min.js.map").write_text(json.dumps(source_map))
    cli(tracker, "sourcemaps", "inject", str(dist))

    latencies: list[float] = []
    done = threading.Event()

    def send_events() -> None:
        while not done.is_set():
            started = time.monotonic()
            tracker.send_event(project, {"message": "still ingesting", "platform": "javascript"})
            latencies.append(time.monotonic() - started)
            time.sleep(0.05)
    sender = threading.Thread(target=send_events)
    sender.start()
    try:
        out = cli(tracker, "sourcemaps", "upload", "-p", project.slug, str(dist), check=False)
    finally:
        done.set()
        sender.join()
    assert out.returncode == 1 and "413" in out.stderr and "larger than 41943040 bytes" in out.stderr, out.stderr
    assert tracker.api("GET", f"projects/tracker/{project.slug}/files/artifact-bundles/").json() == []
    assert len(latencies) >= 3 and max(latencies) < 2.0, latencies

    release = f"big@{project.id}"
    assert tracker.api("POST", f"projects/tracker/{project.slug}/releases/", json={"version": release}).status_code == 201
    content, content_type = multipart_file((dist / "app.min.js.map").read_bytes(), "~/app.min.js.map")
    r = post_body(tracker, f"organizations/tracker/releases/{release}/files/", content, content_type)
    assert r.status_code == 413 and "41943040" in r.json()["detail"]


def multipart_file(data: bytes, name: str, dist: str = "", *headers: str) -> tuple[bytes, str]:
    """The per-file release upload's body (sentry-cli 1.x and 2.x without chunk uploads)."""
    boundary = "file-boundary-17"
    fields = [("name", name.encode())] + ([("dist", dist.encode())] if dist else []) \
        + [("header", h.encode()) for h in headers]
    body = b"".join(f'--{boundary}\r\nContent-Disposition: form-data; name="{k}"\r\n\r\n'.encode() + v + b"\r\n"
                    for k, v in fields)
    body += (f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="{name.rsplit("/", 1)[-1]}"\r\n'
             f"Content-Type: application/octet-stream\r\n\r\n").encode() + data + f"\r\n--{boundary}--\r\n".encode()
    return body, f"multipart/form-data; boundary={boundary}"


# -- hostile uploads: every input bounded, every refusal a 4xx with a detail ------------------------

def test_hostile_chunks_and_bundles_are_refused(tracker: TrackerServer, project: Project) -> None:
    """Chunks whose name is not their SHA-1, gzip bombs, bodies past the request cap, zips that
    inflate past the file cap, broken zips, bad assemble bodies, tokens without release scope."""
    chunk = b"x" * 100
    content, content_type = chunk_body([chunk], ["0" * 40])
    r = post_body(tracker, "organizations/tracker/chunk-upload/", content, content_type)
    assert r.status_code == 400 and "SHA-1" in r.json()["detail"]
    bomb = b"\0" * (64 * 1024 * 1024)  # 64 MiB of zeros: 64 KiB of gzip
    content, content_type = chunk_body([bomb])
    assert len(content) < 100 * 1024
    r = post_body(tracker, "organizations/tracker/chunk-upload/", content, content_type)
    assert r.status_code == 413 and r.json()["detail"] == "Chunk size too large"
    r = post_body(tracker, "organizations/tracker/chunk-upload/", os.urandom(9 * 1024 * 1024), content_type)
    assert r.status_code == 413
    r = post_body(tracker, "organizations/tracker/chunk-upload/", b"{}", "application/json")
    assert r.status_code == 400 and "multipart" in r.json()["detail"]

    # a zip whose one file inflates past the 40 MiB cap (its header may say anything)
    zipped = bundle_zip({"~/a.min.js.map": ("source_map", str(uuid.uuid4()), b"\0" * (41 * 1024 * 1024))})
    assert len(zipped) < 1024 * 1024
    r = upload(tracker, project, zipped)
    assert r.status_code == 413 and r.json()["state"] == "error" and "larger than 41943040" in r.json()["detail"]
    r = upload(tracker, project, b"PK\x03\x04 not really a zip" + os.urandom(64))
    assert r.status_code == 400 and r.json()["state"] == "error" and "not an artifact bundle" in r.json()["detail"]
    r = upload(tracker, project, bundle_zip({"~/a.min.js": ("minified_source", None, b"var a;")}))
    assert r.json()["state"] == "error" and "without debug ids or release" in r.json()["detail"]

    good = {"checksum": "a" * 40, "chunks": ["a" * 40], "projects": [project.slug]}
    for body, detail in (({**good, "checksum": "nope"}, "SHA-1"), ({**good, "chunks": "a" * 40}, "SHA-1"),
                         ({**good, "projects": ["no-such-project"]}, "unknown project"),
                         ({**good, "projects": []}, "projects"), ({**good, "dist": "7"}, "release together with a dist"),
                         ({**good, "version": "a/b"}, "not allowed")):
        r = tracker.api("POST", "organizations/tracker/artifactbundle/assemble/", json=body)
        assert r.status_code == 400 and detail in r.json()["detail"], (body, r.text)
    assert tracker.api("POST", "organizations/tracker/artifactbundle/assemble/", json=good).json() == {
        "state": "not_found", "missingChunks": ["a" * 40], "detail": None}

    reader = tracker.cli("token", "create", "--scopes", "project:read").strip().splitlines()[-1]
    for method, path in (("GET", "chunk-upload/"), ("POST", "chunk-upload/"), ("POST", "artifactbundle/assemble/")):
        assert tracker.api(method, f"organizations/tracker/{path}", reader).status_code == 403
        assert httpx.request(method, f"{tracker.url}/api/0/organizations/tracker/{path}").status_code == 401
    assert tracker.api("GET", "organizations/elsewhere/chunk-upload/").status_code == 404


# -- the per-file release upload, listing, and a release's files going with it ---------------------

def test_release_file_upload_resolves_by_url_and_goes_with_its_release(tracker: TrackerServer,
                                                                      project: Project, tmp_path: Path) -> None:
    """Files posted one by one to a release (sentry-cli before chunk uploads), the map named by the
    minified file's Sourcemap header: an event of that release and dist at a matching URL resolves;
    one of another dist does not. A name taken is a 409. Deleting the release deletes its files."""
    need_tools()
    dist = build(tmp_path / "files", WEB_JS, "--format=iife")
    release = f"files@{project.id}"
    assert tracker.api("POST", f"projects/tracker/{project.slug}/releases/", json={"version": release}).status_code == 201
    for name, headers in (("app.min.js", ("Sourcemap: maps/app.js.map",)), ("app.js.map", ())):
        url = "~/js/maps/app.js.map" if name.endswith(".map") else "~/js/app.min.js"
        content, content_type = multipart_file((dist / name.replace("app.js.map", "app.min.js.map")).read_bytes(),
                                               url, "7", *headers)
        r = post_body(tracker, f"projects/tracker/{project.slug}/releases/{release}/files/", content, content_type)
        assert r.status_code == 201 and r.json()["name"] == url and r.json()["dist"] == "7", r.text
    assert r.json()["sha1"] == hashlib.sha1((dist / "app.min.js.map").read_bytes()).hexdigest()
    r = post_body(tracker, f"projects/tracker/{project.slug}/releases/{release}/files/", content, content_type)
    assert r.status_code == 409
    listed = tracker.api("GET", f"projects/tracker/{project.slug}/releases/{release}/files/").json()
    assert [(f["name"], f["dist"], f["headers"]) for f in listed] == [
        ("~/js/app.min.js", "7", {"sourcemap": "maps/app.js.map"}), ("~/js/maps/app.js.map", "7", {})]

    # where the crash is in the real bundle: the column of `new TypeError` in app.min.js
    lines = (dist / "app.min.js").read_text().splitlines()
    line = next(i for i, text in enumerate(lines) if "`not a number: ${" in text)
    column = lines[line].rindex("new TypeError", 0, lines[line].index("`not a number: ${")) + 1
    for event_dist, resolved in (("7", True), ("8", False)):
        event = minified_event("https://cdn.example.com/js/app.min.js?v=3", None, release)
        event["dist"] = event_dist
        frame = event["exception"]["values"][0]["stacktrace"]["frames"][0]
        frame.update(lineno=line + 1, colno=column)
        exception, errors = stored_errors(tracker, project, event)
        crash = exception["stacktrace"]["frames"][-1]
        if resolved:
            assert crash["filename"].endswith("src/util.js") and crash["function"] == "parseAmount"
            assert crash["lineNo"] == 4 and crash["data"]["sourcemap"] == "~/js/maps/app.js.map" and not errors
        else:
            assert crash["filename"] == "https://cdn.example.com/js/app.min.js?v=3" and errors[0]["type"] == "js_no_source"

    assert tracker.api("DELETE", f"organizations/tracker/releases/{release}/").status_code == 204
    assert tracker.api("GET", f"projects/tracker/{project.slug}/files/artifact-bundles/").json() == []


# -- the decoder (our own: sourcemaps.md §6.2) ---------------------------------------------------

def test_vlq_decoder_plain_and_index_maps_and_hostile_ones() -> None:
    """The spec's worked segments, lookups left of a column and on other lines, an index map's
    sections with their offsets, and maps that must be refused, not crash or blow up."""
    plain = tracker_module.parse_source_map(json.dumps({
        "version": 3, "sources": ["a.js"], "names": ["run"], "mappings": "6LAAO,gBACA;AAAAA",
        "sourcesContent": ["one\ntwo"]}).encode())
    assert list(plain.keys) == [189, 189 + 16, 1 << 32]  # `6LAAO` is [189, 0, 0, 7]
    assert plain.lookup(0, 189) == (0, 0, 7, None) and plain.lookup(0, 400) == (0, 1, 7, None)
    assert plain.lookup(0, 188) is None and plain.lookup(2, 0) is None
    assert plain.lookup(1, 99) == (0, 1, 7, "run") and plain.source_names == ["a.js"]
    assert plain.context(0, 1) == (["one"], "two", [])
    deltas = tracker_module.parse_source_map(json.dumps({
        "version": 3, "sources": ["a.js"], "names": [], "mappings": "AAAkC;gBACjC"}).encode())
    assert deltas.lookup(1, 16) == (0, 1, 1, None)  # `gBACjC` is [16, 0, 1, -33] after column 34
    unsorted = tracker_module.parse_source_map(json.dumps({  # column 5, then 4: put in order, not refused
        "version": 3, "sources": ["a.js"], "names": [], "mappings": "KAAA,DAAC"}).encode())
    assert unsorted.lookup(0, 4) == (0, 0, 1, None) and unsorted.lookup(0, 9) == (0, 0, 0, None)

    indexed = tracker_module.parse_source_map(json.dumps({"version": 3, "sections": [
        {"offset": {"line": 0, "column": 0}, "map": {"version": 3, "sources": ["x.js"], "names": [], "mappings": "AAAA"}},
        {"offset": {"line": 0, "column": 100}, "map": {"version": 3, "sources": ["y.js"], "names": ["f"],
                                                          "mappings": "AAAAA;AACA"}}]}).encode())
    assert indexed.lookup(0, 50) == (0, 0, 0, None) and indexed.lookup(0, 100) == (1, 0, 0, "f")
    assert indexed.source_names == ["x.js", "y.js"]
    assert indexed.lookup(1, 0) == (1, 1, 0, None)  # the column offset applies to the first line only

    for hostile in (b"not json", b"[]", json.dumps({"version": 2}).encode(),
                    json.dumps({"version": 3, "sources": ["a"], "names": [], "mappings": "AA"}).encode(),
                    json.dumps({"version": 3, "sources": ["a"], "names": [], "mappings": "ACAA"}).encode(),
                    json.dumps({"version": 3, "sources": ["a"], "names": [], "mappings": "AAAA!"}).encode(),
                    json.dumps({"version": 3, "sources": ["a"], "names": [], "mappings": "g"}).encode(),
                    json.dumps({"version": 3, "sources": ["a"], "names": [], "mappings": "gggggggggggggggA"}).encode(),
                    json.dumps({"version": 3, "sources": ["a"], "names": [], "mappings": "AAAAAA"}).encode(),
                    json.dumps({"version": 3, "sources": "a", "names": [], "mappings": ""}).encode()):
        with pytest.raises(tracker_module.SourceMapError):
            tracker_module.parse_source_map(hostile)
    too_many = json.dumps({"version": 3, "sources": ["a"], "names": [], "mappings": "A," * 2_000_001}).encode()
    with pytest.raises(tracker_module.SourceMapTooLarge):
        tracker_module.parse_source_map(too_many)


def test_a_real_5_mb_map_parses_within_a_second_and_is_cached(tmp_path: Path) -> None:
    """@sentry/browser and the app, bundled by esbuild: a 5 MB map, parsed once per process."""
    need_tools()
    dist = build(tmp_path / "size", WEB_JS, "--format=iife")
    data = (dist / "app.min.js.map").read_bytes()
    assert len(data) > 4 * 1024 * 1024
    started = time.monotonic()
    parsed = tracker_module.parse_source_map(data)
    assert time.monotonic() - started < 3.0  # about 0.6 s here; CI machines are shared
    assert parsed.cost < tracker_module.SourceMaps.BUDGET and len(parsed.keys) > 50_000


def test_release_bundle_assembly_of_sentry_cli_2(tracker: TrackerServer, project: Project) -> None:
    """sentry-cli 2.x against a server that does not take artifact bundles posts the same zip to
    the release (`…/releases/<v>/assemble/`, checksum and chunks only): it lands in the release's
    projects; the release must exist."""
    release = f"bundle@{project.id}"
    data = bundle_zip({"~/static/app.min.js": ("minified_source", None, b"var a=1;\n//# sourceMappingURL=app.min.js.map"),
                       "~/static/app.min.js.map": ("source_map", None, b"{}")})
    body = {"checksum": hashlib.sha1(data).hexdigest(), "chunks": [hashlib.sha1(data).hexdigest()]}
    path = f"organizations/tracker/releases/{release}/assemble/"
    assert tracker.api("POST", path, json=body).status_code == 404
    assert tracker.api("POST", f"projects/tracker/{project.slug}/releases/", json={"version": release}).status_code == 201
    assert tracker.api("POST", path, json=body).json() == {"state": "not_found", "missingChunks": body["chunks"],
                                                          "detail": None}
    content, content_type = chunk_body([data])
    assert post_body(tracker, "organizations/tracker/chunk-upload/", content, content_type).status_code == 200
    assert tracker.api("POST", path, json=body).json()["state"] == "ok"
    assert tracker.api("POST", path, json=body).json()["state"] == "ok"  # asked again: stored already
    files = tracker.api("GET", f"organizations/tracker/releases/{release}/files/").json()
    assert [f["name"] for f in files] == ["~/static/app.min.js", "~/static/app.min.js.map"]
    bundle, = tracker.api("GET", f"projects/tracker/{project.slug}/files/artifact-bundles/").json()
    assert bundle["associations"] == [{"release": release, "dist": None}] and bundle["fileCount"] == 2


class OneMap:
    """Stands for SourceMaps (the database) in tests of the resolving step: one map for every file."""

    conn = True

    def __init__(self, source_map: Any, url: str) -> None:
        self.source_map, self.url, self.found = source_map, url, {}

    def project_has_files(self, project_id: int) -> bool:
        return True

    def find(self, *args: Any) -> tuple[Any, str, str]:
        return self.source_map, self.url, "release"


def test_resolved_library_and_bundler_frames_are_not_in_app() -> None:
    """Frames that resolve into node_modules or a bundler's runtime leave the app; the app's stay."""
    source_map = tracker_module.parse_source_map(json.dumps({
        "version": 3, "sources": ["../node_modules/lib/index.js", "webpack/runtime/jsonp", "../src/app.js"],
        "names": [], "mappings": "AAAA,KCAA,KCAA", "sourcesContent": ["lib()", "rt()", "app()"]}).encode())
    frames = [{"abs_path": "https://x.example/app.min.js", "lineno": 1, "colno": column, "in_app": True}
              for column in (1, 6, 11)]
    ev = {"platform": "javascript", "release": "r", "exception": {"values": [{"stacktrace": {"frames": frames}}]}}
    tracker_module.resolve_source_maps(ev, OneMap(source_map, "~/app.min.js.map"), 1)  # type: ignore[arg-type]
    resolved = ev["exception"]["values"][0]["stacktrace"]["frames"]
    assert [(f["abs_path"], f["in_app"]) for f in resolved] == [
        ("~/node_modules/lib/index.js", False), ("~/webpack/runtime/jsonp", False), ("~/src/app.js", True)]
    assert ev["exception"]["values"][0]["raw_stacktrace"]["frames"] == frames


def test_a_map_without_sources_or_without_the_position_says_so() -> None:
    """A map with no sourcesContent resolves the frame without source lines (js_missing_sources_content);
    a position the map has nothing at keeps the frame as sent (js_invalid_sourcemap_location)."""
    source_map = tracker_module.parse_source_map(json.dumps({
        "version": 3, "sources": ["../src/a.js"], "names": [], "mappings": "AAAA"}).encode())
    frames = [{"abs_path": "https://x.example/a.min.js", "lineno": line, "colno": 1, "context_line": "minified"}
              for line in (1, 2)]
    ev: dict[str, Any] = {"platform": "javascript", "release": "r",
                          "exception": {"values": [{"stacktrace": {"frames": frames}}]}}
    tracker_module.resolve_source_maps(ev, OneMap(source_map, "~/a.min.js.map"), 1)  # type: ignore[arg-type]
    first, second = ev["exception"]["values"][0]["stacktrace"]["frames"]
    assert first["abs_path"] == "~/src/a.js" and first["lineno"] == 1 and "context_line" not in first
    assert second == frames[1]
    assert ev["errors"] == [
        {"type": "js_missing_sources_content", "source": "../src/a.js", "sourcemap": "~/a.min.js.map"},
        {"type": "js_invalid_sourcemap_location", "column": 1, "row": 2, "source": "https://x.example/a.min.js"}]


def test_retention_ages_out_uploads_with_the_events(configured: Any) -> None:
    """Source map uploads older than the project's max age go in the retention pass."""
    server = configured("aging", "[retention]\ninterval = 0.5\nmax_age_days = 0.00003\n")  # about 2.6 s
    project = server.create_project("aging")
    debug_id = str(uuid.uuid4())
    r = upload(server, project, bundle_zip({"~/a.min.js.map": ("source_map", debug_id, b"{}")}))
    assert r.json()["state"] == "ok"
    assert len(server.api("GET", "projects/tracker/aging/files/artifact-bundles/").json()) == 1
    wait_for(lambda: server.api("GET", "projects/tracker/aging/files/artifact-bundles/").json() == [], timeout=20)
    assert tracker_module.read_only(str(server.db)).execute("SELECT count(*) FROM artifact_files").fetchone()[0] == 0
