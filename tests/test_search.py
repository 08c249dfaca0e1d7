"""Search: every key of the query language, end to end through the JSON API and the dashboard."""
from __future__ import annotations

import html
import re

import pytest
import sentry_sdk
from conftest import Project, TrackerServer

A = "ValueError: amount over limit"
B = "KeyError: 'user-7'"
C = "cache warmed"


def charge_card() -> None:
    raise ValueError("amount over limit")


def lookup_user() -> None:
    raise KeyError("user-7")


@pytest.fixture(scope="module")
def searchable(tracker: TrackerServer) -> tuple[Project, str]:
    """Three issues with distinct releases, environments, users, tags and code locations."""
    project = tracker.create_project()
    scenarios = [
        (charge_card, "payments-service@1.2.4", "prod", "u1", "a@example.org", "payments-api", "new-limits", 3),
        (lookup_user, "payments-service@1.3.0", "staging", "u2", "b@example.org", "orders", "old-limits", 1),
    ]
    for fn, release, env, user, email, service, flag, times in scenarios:
        sentry_sdk.init(dsn=project.dsn, release=release, environment=env)
        for _ in range(times):
            with sentry_sdk.isolation_scope() as scope:
                scope.set_new_propagation_context()  # a trace of its own, as a new request would have
                scope.set_user({"id": user, "email": email})
                scope.set_tag("service", service)
                scope.set_tag("feature_flag", flag)
                try:
                    fn()
                except Exception:
                    sentry_sdk.capture_exception()
        sentry_sdk.flush()
    sentry_sdk.init(dsn=project.dsn, release="other@2.0", environment="prod")
    sentry_sdk.capture_message(C, level="info")
    sentry_sdk.flush()
    sentry_sdk.get_client().close()
    sentry_sdk.init()
    issues = tracker.wait_issues(project, 5, query="is:unresolved")
    by_title = {i["title"]: i for i in issues}
    trace = {t["key"]: t["value"] for t in tracker.latest_event(by_title[A]["id"])["tags"]}["trace"]
    return project, trace


def api_titles(tracker: TrackerServer, project: Project, query: str, sort: str = "date") -> list[str]:
    r = tracker.api("GET", f"projects/tracker/{project.slug}/issues/", params={"query": query, "sort": sort})
    assert r.status_code == 200, r.text
    return [i["title"] for i in r.json()]


def dashboard_titles(tracker: TrackerServer, project: Project, query: str, sort: str = "date") -> list[str]:
    r = tracker.web.get("/issues/", params={"project": project.slug, "status": "all", "q": query,
                                                    "sort": sort})
    assert r.status_code == 200
    links = re.findall(r'<a class="issue-title"[^>]*>(.*?)</a>', r.text, re.S)
    return [html.unescape(re.sub(r"<[^>]+>", "", link)).strip() for link in links]


CASES = [
    ("", {A, B, C}),
    ("is:unresolved", {A, B, C}),
    ("is:resolved", set()),
    ("level:info", {C}),
    ("level:error", {A, B}),
    ("release:payments-service@1.2.4", {A}),
    ('release:"payments-service@1.*"', {A, B}),
    ("release:payments-service@1.*", {A, B}),
    ("!release:payments-service@1.*", {C}),
    ("environment:staging", {B}),
    ("environment:prod", {A, C}),
    ("user.id:u2", {B}),
    ("user.email:a@example.org", {A}),
    ("service:payments-api", {A}),
    ("feature_flag:old-limits", {B}),
    ("!service:payments-api", {B, C}),
    ("error.type:KeyError", {B}),
    ("error.value:over", {A}),
    ("stack.function:charge_card", {A}),
    ("stack.filename:test_search.py", {A, B}),
    ("stack.filename:*search.py", {A, B}),
    ("timesSeen:>2", {A}),
    ("timesSeen:1", {B, C}),
    ("age:-24h", {A, B, C}),
    ("age:+1d", set()),
    ("firstSeen:>2020-01-01", {A, B, C}),
    ("lastSeen:<2020-01-01", set()),
    ("warmed", {C}),
    ('"amount over"', {A}),
    ("user-7 environment:staging", {B}),
]


@pytest.mark.parametrize("query, expected", CASES, ids=[c[0] or "empty" for c in CASES])
def test_search_key(tracker: TrackerServer, searchable: tuple[Project, str], query: str, expected: set[str]) -> None:
    project, _ = searchable
    assert set(api_titles(tracker, project, query or "is:unresolved")) == expected
    assert set(dashboard_titles(tracker, project, query)) == expected


def test_search_by_trace_id(tracker: TrackerServer, searchable: tuple[Project, str]) -> None:
    project, trace = searchable
    assert api_titles(tracker, project, f"trace:{trace}") == [A]
    assert dashboard_titles(tracker, project, f"trace:{trace}") == [A]


def test_sorts(tracker: TrackerServer, searchable: tuple[Project, str]) -> None:
    project, _ = searchable
    assert api_titles(tracker, project, "", sort="freq")[0] == A
    assert api_titles(tracker, project, "", sort="new")[0] == C
    assert dashboard_titles(tracker, project, "", sort="freq")[0] == A
    assert dashboard_titles(tracker, project, "", sort="user")[-1] in (C, B)


@pytest.mark.parametrize("query", ['service:"unclosed', "is:sleeping", "timesSeen:lots", "age:yesterday"])
def test_malformed_query_is_a_clear_error(tracker: TrackerServer, searchable: tuple[Project, str], query: str) -> None:
    project, _ = searchable
    r = tracker.api("GET", f"projects/tracker/{project.slug}/issues/", params={"query": query})
    assert r.status_code == 400 and r.json()["detail"].startswith("Invalid search query")
    page = tracker.web.get("/issues/", params={"project": project.slug, "q": query})
    assert page.status_code == 200 and "search-error" in page.text


def test_events_of_an_issue_are_searchable(tracker: TrackerServer, project: Project) -> None:
    for env, user in (("prod", "u1"), ("staging", "u2"), ("prod", "u3")):
        sentry_sdk.init(dsn=project.dsn, environment=env, release="svc@1")
        with sentry_sdk.isolation_scope() as scope:
            scope.set_user({"id": user, "email": f"{user}@example.org"})
            scope.set_tag("region", "eu" if user != "u3" else "us")
            try:
                charge_card()
            except ValueError:
                sentry_sdk.capture_exception()
        sentry_sdk.flush()
    sentry_sdk.get_client().close()
    sentry_sdk.init()
    (issue,) = tracker.wait_issues(project, 3)

    def api_users(query: str) -> set[str]:
        r = tracker.api("GET", f"issues/{issue['id']}/events/", params={"query": query})
        assert r.status_code == 200, r.text
        return {e["user"]["id"] for e in r.json()}

    def page_users(query: str) -> set[str]:
        r = tracker.web.get(f"/issues/{issue['id']}/events/", params={"q": query})
        assert r.status_code == 200
        return set(re.findall(r"id:(u\d)", r.text))

    for query, expected in [("", {"u1", "u2", "u3"}), ("environment:staging", {"u2"}),
                            ("!environment:staging region:eu", {"u1"}), ("user.email:u3@example.org", {"u3"}),
                            ("region:*", {"u1", "u2", "u3"}), ("amount", {"u1", "u2", "u3"}), ("nothing-like-it", set())]:
        assert api_users(query) == expected, query
        assert page_users(query) == expected, query
    r = tracker.api("GET", f"issues/{issue['id']}/events/", params={"query": "age:-1h"})
    assert r.status_code == 400 and "not the events" in r.json()["detail"]
