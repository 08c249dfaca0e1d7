"""The pages' questions rewritten for a million events (issue 22) answer as before: the overview's
bug lifetimes counted in SQL, the issue list's sorts that no index gives, the stats without a project."""
from __future__ import annotations

import html
import re
import sqlite3
import time
import uuid
from typing import Any

from conftest import Project, TrackerServer


def event(title: str, release: str | None, at: float, user: str = "ana") -> dict[str, Any]:
    ev = {"event_id": uuid.uuid4().hex, "message": title, "level": "error", "timestamp": at,
          "fingerprint": [title], "user": {"id": user}}
    return {**ev, "release": release} if release else ev


def lifetimes_card(page: str) -> tuple[dict[str, str], list[tuple[str, ...]]]:
    """The overview's Bug lifetimes card: its figures by label, and its releases in order
    (name, issues, resolved, median time to resolve)."""
    card = page.split('class="card lifetimes"', 1)[1].split("</div></div>", 1)[0]
    figures = {html.unescape(k): v for k, v in re.findall(r'<div class="share"><span>([^<]+)</span><b>([^<]+)</b>', card)}
    releases = re.findall(r'release-life"><span>(?:<a [^>]+>)?([^<]+)(?:</a>)?</span><b [^>]+>(\d+) · ([^ ]+) · ([^<]+)</b>',
                          card)
    return figures, releases


def test_bug_lifetimes_by_release_and_age(tracker: TrackerServer, project: Project) -> None:
    now, day = time.time(), 86400
    sent = [("a1", "app@1", now - 3 * day), ("a2", "app@1", now - 3 * day), ("b1", "app@2", now - 10 * day),
            ("b2", "app@2", now - 10 * day), ("c1", "app@3", now), ("c2", "app@3", now), ("c3", "app@3", now),
            ("none", None, now)]
    for title, release, at in sent:
        tracker.send_event(project, event(title, release, at))
    issues = {i["title"]: i for i in tracker.wait_issues(project, len(sent))}
    for title in ("a1", "b1"):
        assert tracker.api("PUT", f"issues/{issues[title]['id']}/", json={"status": "resolved"}).status_code == 200
    tracker.send_event(project, event("a1", "app@1", time.time()))  # a1 comes back: reopened
    tracker.wait_issues(project, len(sent) + 1)

    figures, releases = lifetimes_card(tracker.web.get(f"/projects/{project.slug}/overview/", timeout=10).text)
    # open: c1-c3 and none today, a1 (reopened) and a2 three days old, b2 ten days old; b1 is resolved
    assert figures == {"median time to resolve": "6.5 d", "issues ever reopened": "1", "< 1 day": "4",
                       "1–7 days": "2", "7–30 days": "1", "> 30 days": "0"}
    # most issues first; of the two with two, app@2's were seen first
    assert releases == [("app@3", "3", "0%", "—"), ("app@2", "2", "50%", "10 d"), ("app@1", "2", "0%", "3 d"),
                        ("(no release)", "1", "0%", "—")]


def test_issue_list_sorts_and_pages(tracker: TrackerServer, project: Project) -> None:
    """Each sort orders the whole list before a page is cut from it, ties by the newest issue."""
    now = time.time()
    for n in range(6):  # issue n: first seen n minutes ago, 1 + n % 3 events, from n % 4 + 1 users
        for k in range(1 + n % 3):
            tracker.send_event(project, event(f"sort-{n}", None, now - 60 * n + k, user=f"u{k % (n % 4 + 1)}"))
    issues = tracker.wait_issues(project, sum(1 + n % 3 for n in range(6)))
    keys = {"new": lambda i: i["firstSeen"], "freq": lambda i: int(i["count"]), "user": lambda i: i["userCount"],
            "date": lambda i: i["lastSeen"]}
    for sort, key in keys.items():
        expected = [i["id"] for i in sorted(issues, key=lambda i: (key(i), int(i["id"])), reverse=True)]
        pages = [tracker.api("GET", f"projects/tracker/{project.slug}/issues/",
                             params={"sort": sort, "limit": 4, "cursor": f"0:{offset}:0"}).json() for offset in (0, 4)]
        assert [i["id"] for page in pages for i in page] == expected, sort
        listing = tracker.web.get("/issues/", params={"project": project.slug, "sort": sort}, timeout=10).text
        shown = list(dict.fromkeys(re.findall(r'href="/issues/(\d+)/"', listing)))
        assert shown == expected, sort


def test_migrated_indexes_serve_the_questions(tracker: TrackerServer) -> None:
    """Resolutions and regressions come from the activity's kind index, a release's new issues from
    issues by first release, its events from the release tag index: not a table row per issue."""
    questions = {"issue_activity_by_kind": "SELECT issue_id, created FROM issue_activity WHERE kind = 'set_regression' "
                                           "AND created >= 0",
                 "issues_by_first_release": "SELECT count(*) FROM issues WHERE first_release = 'x@1'",
                 "COVERING INDEX issue_tags_release": "SELECT sum(times_seen), max(last_seen) FROM issue_tags "
                                                      "WHERE key = 'release' AND value = 'x@1'"}
    conn = sqlite3.connect(tracker.db)
    try:
        for index, sql in questions.items():
            plan = " ".join(row[3] for row in conn.execute(f"EXPLAIN QUERY PLAN {sql}"))
            assert index in plan, (sql, plan)
    finally:
        conn.close()


def test_events_stats_per_slot_with_and_without_projects(tracker: TrackerServer, project: Project) -> None:
    """Counted slot by slot over the time index: a project's events land in their hours, and the
    series for every project is the sum of each project's."""
    hour = 3600
    now = time.time()
    for hours_ago, n in ((2, 3), (5, 1)):
        for k in range(n):
            tracker.send_event(project, event(f"stats-{hours_ago}", "app@9", now - hours_ago * hour + k))
    tracker.wait_issues(project, 4)

    def series(**params: Any) -> list[int]:
        r = tracker.api("GET", "organizations/tracker/events-stats/", params={"statsPeriod": "24h", "interval": "1h",
                                                                             "field": "count()", **params})
        assert r.status_code == 200, r.text
        return [point[1][0]["count"] for point in r.json()["data"]]

    own = series(project=project.id)
    assert sum(own) == 4 and own[-3] == 3 and own[-6] == 1, own
    projects = [p["id"] for p in tracker.api("GET", "organizations/tracker/projects/").json()]
    assert series() == [sum(column) for column in zip(*(series(project=p) for p in projects))]
    assert series(project=project.id, query="release:app@9") == own
    assert sum(series(project=project.id, query="release:app@8")) == 0


def test_release_counts_and_menu(tracker: TrackerServer, project: Project) -> None:
    """The releases page's events and new issues per release (these by first release), and the issue
    list's release menu, latest seen first."""
    r1, r2 = f"scale@{uuid.uuid4().hex[:6]}", f"scale@{uuid.uuid4().hex[:6]}"
    now = time.time()
    for title, release, at in (("one", r1, now - 50), ("one", r1, now - 40), ("two", r1, now - 30),
                               ("one", r2, now - 20), ("three", r2, now - 10), ("two", r1, now - 100)):
        tracker.send_event(project, event(title, release, at))
    tracker.wait_issues(project, 6)
    page = tracker.web.get("/releases/", params={"project": project.slug}).text
    counts = {m[0]: (m[1], m[2]) for m in re.findall(
        r'<a href="/releases/[^"]+/">([^<]+)</a></td>.*?<td class="num">(\d+)</td><td class="num">(\d+)</td>', page, re.S)}
    assert counts == {r1: ("4", "2"), r2: ("2", "1")}
    listing = tracker.web.get("/issues/", params={"project": project.slug}).text
    menu = re.findall(r"<option(?: selected)?\s*>(scale@[^<]+)</option>", listing)
    assert menu.index(r2) < menu.index(r1), menu
