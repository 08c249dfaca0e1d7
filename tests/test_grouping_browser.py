"""Grouping of the official browser SDK's events (@sentry/browser in Debian's Chromium): an `eval`
frame (Chromium gives it the calling page, Safari `[native code]`, Firefox another column) and an
AggregateError whose member has a cause, ordered member first (shared/docs/grouping.md §2.2, §2.3)."""
from __future__ import annotations

import copy
import json
from typing import Any

from conftest import Project, TrackerServer, wait_for
from test_grouping_exception_groups import grouping_values
from test_js_sdks import Site, site  # noqa: F401 (the bundle's site, a fixture)

PAGE = """<!doctype html>
<html><head><meta charset="utf-8"><title>shop</title>
<script src="sentry.bundle.js"></script>
<script>
  window.sent = [];
  Sentry.init({dsn: DSN, beforeSend(event) { window.sent.push(JSON.parse(JSON.stringify(event))); return event; }});
  function priceCart(cart) { throw new TypeError("cart " + cart.id + " has no items"); }
  function checkout(cart) { return eval("priceCart(cart)"); }
  try { checkout({id: 42}); } catch (e) { Sentry.captureException(e); }
  var member = new TypeError("price missing", {cause: new RangeError("quantity must be positive")});
  Sentry.captureException(new AggregateError([member], "checkout failed"));
</script>
</head><body>shop</body></html>
"""


def page_events(tracker: TrackerServer, project: Project, browser: Any, site: Site) -> list[dict[str, Any]]:  # noqa: F811
    """Load the page; the two events as the SDK sent them, once the tracker stored both."""
    (site.root / f"grouping-{project.id}.html").write_text(PAGE.replace("DSN", json.dumps(project.dsn)))
    context = browser.new_context()
    try:
        page = context.new_page()
        page.goto(f"{site.url}/grouping-{project.id}.html")
        tracker.wait_issues(project, 2, timeout=15)
        return wait_for(lambda: page.wait_for_timeout(50) or (page.evaluate("window.sent") if page.evaluate("window.sent.length") == 2 else None))
    finally:
        context.close()


def test_browser_events_group_across_browsers(tracker: TrackerServer, project: Project, browser: Any,
                                              site: Site) -> None:  # noqa: F811
    chromium, aggregate = page_events(tracker, project, browser, site)
    frames = chromium["exception"]["values"][-1]["stacktrace"]["frames"]
    [index] = [i for i, f in enumerate(frames) if f.get("function") == "eval"]
    assert frames[index]["filename"].endswith(f"/grouping-{project.id}.html")  # Chromium names the page

    safari, firefox = copy.deepcopy(chromium), copy.deepcopy(chromium)
    for event in (safari, firefox):
        event.pop("event_id", None)
    safari_frame = safari["exception"]["values"][-1]["stacktrace"]["frames"][index]
    safari_frame.update(filename="[native code]", abs_path="[native code]")
    for key in ("lineno", "colno"):
        safari_frame.pop(key, None)
    firefox["exception"]["values"][-1]["stacktrace"]["frames"][index].update(lineno=1, colno=1)
    tracker.send_event(project, safari)
    tracker.send_event(project, firefox)
    issues = {i["title"]: i for i in tracker.wait_issues(project, 4)}
    assert issues["TypeError: cart 42 has no items"]["count"] == "3"

    # the AggregateError: one distinct member, which counts before its cause; the title is the member's
    assert [e["type"] for e in aggregate["exception"]["values"]] == ["RangeError", "TypeError", "AggregateError"]
    grouped = issues["TypeError: price missing"]
    assert [v for v in grouping_values(tracker, grouped["id"]) if v.endswith("Error")] == ["TypeError", "RangeError"]
    assert len(issues) == 2
