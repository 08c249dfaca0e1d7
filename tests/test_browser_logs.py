"""Logs from the browser (issue 19): the official @sentry/browser bundle in Debian's Chromium sends
`Sentry.logger.*` lines (a `log` item, JS shape: severity_number on top, the trace's parent span as
an attribute) cross-origin to the tracker; they reach the Logs page, searchable by their attributes."""
from __future__ import annotations

import json
from typing import Any

from conftest import Project, TrackerServer, wait_for
from test_js_sdks import JS, Site, need_js, site  # noqa: F401 (the bundle's site, a fixture)

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
