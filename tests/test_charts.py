"""Trends at a glance: the project overview's SVG charts, the issues list's sparklines and an issue's
lifetime, checked by the values in the SVG (sent with the real sentry_sdk) and seen in Chromium."""
from __future__ import annotations

import re
from collections import Counter
from pathlib import Path
from typing import Any

import sentry_sdk

from conftest import Project, TrackerServer


def values(page: str, chart: str) -> Counter[str]:
    """The counts per key a chart's bars carry (data-key, data-value), summed over its buckets."""
    svg = page.split(f'class="{chart}"', 1)[1].split("</svg>", 1)[0]
    totals: Counter[str] = Counter()
    for key, value in re.findall(r'data-key="([^"]+)" data-value="(\d+)"', svg):
        totals[key] += int(value)
    return totals


def send(project: Project, messages: list[tuple[str, str]]) -> None:
    sentry_sdk.init(dsn=project.dsn, release=f"{project.slug}@1.0", environment="prod")
    try:
        for message, level in messages:
            with sentry_sdk.new_scope() as scope:
                scope.set_user({"id": f"user-{len(message)}-{level}"})
                sentry_sdk.capture_message(message, level=level)  # type: ignore[arg-type]
        sentry_sdk.flush()
    finally:
        sentry_sdk.get_client().close()
        sentry_sdk.init()


def test_overview_charts_sparklines_and_lifetime(tracker: TrackerServer, project: Project, tmp_path: Path,
                                                 browser: Any) -> None:
    send(project, [("disk almost full", "warning")] * 2 + [("checkout failed", "error")] * 3 +
         [("ledger corrupt", "fatal")])
    issues = {i["title"]: i for i in tracker.wait_issues(project, 6)}
    checkout = issues["checkout failed"]
    r = tracker.api("PUT", f"issues/{checkout['id']}/", json={"status": "resolved"})
    assert r.status_code == 200
    send(project, [("checkout failed", "error")])  # it comes back: a regression
    tracker.wait_issues(project, 7)

    page = tracker.web.get(f"/projects/{project.slug}/overview/", params={"period": "24h"}, timeout=10).text
    assert values(page, "events-chart") == {"error": 4, "warning": 2, "fatal": 1}
    assert values(page, "issues-chart") == {"new": 3, "regressed": 1}
    top = re.findall(r'<span class="num">(\d+)</span> <a href="/issues/(\d+)/"', page)
    assert top[0] == ("4", checkout["id"])
    assert re.search(r"<span><a href=\"/issues/\?project=[^\"]+&amp;environment=prod\">prod</a></span><b>7</b>", page) and "issues ever reopened</span><b>1</b>" in page
    assert "median time to resolve</span><b>—</b>" not in page  # one issue was resolved: there is a median

    listing = tracker.web.get("/issues/", params={"project": project.slug, "status": "all"}, timeout=10).text
    row = listing.split(f'href="/issues/{checkout["id"]}/"', 1)[1].split("</tr>", 1)[0]
    assert sum(int(v) for v in re.findall(r'data-value="(\d+)"', row.split('class="spark"', 1)[1])) == 4

    issue_page = tracker.web.get(f"/issues/{checkout['id']}/", timeout=10).text
    life = issue_page.split('class="card lifetime"', 1)[1].split("</div></div>", 1)[0]
    assert "<span>resolved</span><b>1×</b>" in life and "<span>reopened</span><b>1×</b>" in life

    view = tracker.browser_context(browser, viewport={"width": 1400, "height": 1000}).new_page()
    view.goto(f"{tracker.url}/projects/{project.slug}/overview/?period=1h")
    assert view.locator(".events-chart rect").count() >= 1 and view.locator(".periods a.current").inner_text() == "1h"
    view.screenshot(path=str(tmp_path / "overview.png"), full_page=True)
    view.goto(f"{tracker.url}/issues/?project={project.slug}&status=all")
    assert view.locator("svg.spark").count() == 3
    view.screenshot(path=str(tmp_path / "issues.png"))
    view.close()


def test_overview_ranks_issues_by_users_affected(tracker: TrackerServer, project: Project) -> None:
    """"Top issues by users": distinct users per issue in the period, most first."""
    sentry_sdk.init(dsn=project.dsn, release=f"{project.slug}@1.0")
    try:
        for message, users in (("search timed out", ["ana", "bo", "cy", "ana"]), ("avatar missing", ["dee"] * 3)):
            for user in users:
                with sentry_sdk.new_scope() as scope:
                    scope.set_user({"id": user})
                    sentry_sdk.capture_message(message, level="error")
        sentry_sdk.flush()
    finally:
        sentry_sdk.get_client().close()
        sentry_sdk.init()
    issues = {i["title"]: i["id"] for i in tracker.wait_issues(project, 7)}
    page = tracker.web.get(f"/projects/{project.slug}/overview/", params={"period": "24h"}, timeout=10).text
    card = page.split("Top issues by users", 1)[1].split("</div></div>", 1)[0]
    assert re.findall(r'<span class="num">(\d+)</span> <a href="/issues/(\d+)/"', card) == [
        ("3", issues["search timed out"]), ("1", issues["avatar missing"])]


def test_chart_labels_are_escaped(tracker: TrackerServer, project: Project) -> None:
    """Event data reaches chart titles and breakdowns: it must stay text."""
    sentry_sdk.init(dsn=project.dsn, release='<img src=x onerror=alert(1)>', environment='"><svg onload=alert(1)>')
    try:
        sentry_sdk.capture_message("hostile labels")
        sentry_sdk.flush()
    finally:
        sentry_sdk.get_client().close()
        sentry_sdk.init()
    tracker.wait_issues(project, 1)
    page = tracker.web.get(f"/projects/{project.slug}/overview/", timeout=10).text
    assert "<img src=x" not in page and "<svg onload" not in page and "&lt;img src=x onerror=alert(1)&gt;" in page


def test_pages_of_an_unknown_project_are_404(tracker: TrackerServer) -> None:
    for page in ("overview", "slo", "alerts", "grouping", "code-mappings"):
        r = tracker.web.get(f"/projects/no-such-project/{page}/", timeout=10)
        assert r.status_code == 404 and "No such project." in r.text, page
