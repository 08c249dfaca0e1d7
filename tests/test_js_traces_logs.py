"""The JavaScript SDKs' logs and spans (issue 19). Browser: the official @sentry/browser bundle in
Debian's Chromium sends `Sentry.logger.*` lines (a `log` item, JS shape: severity_number on top)
cross-origin to the tracker; they reach the Logs page, searchable by their attributes. Node:
@sentry/node 11 streams `span` items instead of transactions; they become a transaction on the trace."""
from __future__ import annotations

import json
import os
import subprocess
from typing import Any

from conftest import Project, TrackerServer, wait_for
from test_js_sdks import JS, MODULES, NODE, Site, need_js, site  # noqa: F401 (the bundle's site, a fixture)

PAGE = """<!doctype html><html><head><meta charset="utf-8"><title>cart</title><script src="sentry.bundle.js"></script>
<script>
  Sentry.init(__CONFIG__);
  Sentry.logger.info("cart viewed", {"cart.id": 42, "cart.items": 3});
  Sentry.logger.warn(Sentry.logger.fmt`coupon ${"SPRING"} expired`);
  Sentry.logger.error("payment widget failed to load", {"widget": "card"});
  Sentry.flush(3000).then(() => { document.title = "flushed"; });
</script></head><body><p>cart</p></body></html>"""


def test_browser_logs_reach_the_logs_page(tracker: TrackerServer, project: Project, browser: Any, site: Site) -> None:
    need_js("@sentry/browser")
    (site.root / "logs.html").write_text(PAGE.replace("__CONFIG__", json.dumps(
        {"dsn": project.dsn, "release": "shop-web@3.1.0", "environment": "staging", "enableLogs": True})))
    context = browser.new_context()
    try:
        page = context.new_page()
        page.goto(f"{site.url}/logs.html")
        page.wait_for_function("document.title === 'flushed'", timeout=15000)
    finally:
        context.close()

    def lines() -> list[dict[str, Any]] | None:
        r = tracker.api("GET", "organizations/tracker/events/", params={
            "dataset": "logs", "project": project.id, "sort": "timestamp",
            "field": ["message", "severity", "severity_number", "sdk.name", "release", "cart.id", "message.template"]})
        data = r.json()["data"]
        return data if len(data) >= 3 else None
    found = wait_for(lines, timeout=15)
    assert [(x["message"], x["severity"], x["severity_number"]) for x in found] == [
        ("cart viewed", "info", 9), ("coupon SPRING expired", "warn", 13), ("payment widget failed to load", "error", 17)]
    assert {x["sdk.name"] for x in found} == {"sentry.javascript.browser"} and found[0]["release"] == "shop-web@3.1.0"
    assert found[0]["cart.id"] == 42 and found[1]["message.template"] == "coupon %s expired"

    page_text = tracker.web.get("/logs/", params={"project": project.slug}).text
    for body in ("cart viewed", "coupon SPRING expired", "payment widget failed to load"):
        assert body in page_text
    filtered = tracker.web.get("/logs/", params={"project": project.slug, "q": "cart.id:42"}).text
    assert "cart viewed" in filtered and "coupon SPRING" not in filtered


NODE_TRACE = """
const Sentry = require("@sentry/node");
Sentry.init({ dsn: process.env.SENTRY_DSN, tracesSampleRate: 1, release: "exporter@1.0.0" });
Sentry.startSpan({ name: "nightly-export", op: "task" }, () => {
  Sentry.startSpan({ name: "SELECT * FROM invoices", op: "db.query" }, () => {});
  Sentry.logger.info("export started");
  Sentry.captureException(new Error("export failed"));
});
Sentry.flush(5000).then(() => console.log("flushed"));
"""


def test_node_sdk_span_items_become_a_transaction(tracker: TrackerServer, project: Project) -> None:
    """@sentry/node 11 streams `span` items (span v2) by default, not transactions: its segment span is
    kept as a transaction with its child span, and its error and log line join it in the trace."""
    need_js("@sentry/node")
    run = subprocess.run([NODE, "-e", NODE_TRACE], cwd=JS, capture_output=True, text=True, timeout=60,
                         env={**os.environ, "NODE_PATH": str(MODULES), "SENTRY_DSN": project.dsn})
    assert run.returncode == 0 and "flushed" in run.stdout, run.stdout + run.stderr
    [issue] = tracker.wait_issues(project, 1)
    trace_id = tracker.latest_event(issue["id"])["contexts"]["trace"]["trace_id"]

    def roots() -> list[dict[str, Any]] | None:
        found = tracker.api("GET", f"organizations/tracker/trace/{trace_id}/").json()
        return found if any(r.get("is_transaction") for r in found) else None
    [root] = wait_for(roots, timeout=15)
    assert (root["transaction"], root["op"], root["project_slug"]) == ("nightly-export", "task", project.slug)
    assert [(c["op"], c["description"]) for c in root["children"]] == [("db.query", "SELECT * FROM invoices")]
    assert [e["title"] for e in root["errors"]] == ["Error: export failed"]
    page = wait_for(lambda: (text := tracker.web.get(f"/traces/{trace_id}/").text) and "export started" in text and text)
    assert "nightly-export" in page and "db.query" in page
