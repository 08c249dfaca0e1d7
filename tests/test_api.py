"""The JSON API's shapes against the live server: what sentry-cli and scripts written for Sentry read."""
from __future__ import annotations

import datetime as dt
import re
import time
import uuid
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
from conftest import Project, TrackerServer

ISSUE_FIELDS = {"id", "shortId", "title", "culprit", "level", "status", "count", "userCount", "firstSeen",
                "lastSeen", "metadata"}
LINK = re.compile(r'<([^>]*)>; rel="(\w+)"; results="(true|false)"; cursor="([^"]*)"')


def make_event(exc_type: str, value: str, function: str, ts: float, user: str) -> dict[str, Any]:
    return {
        "event_id": uuid.uuid4().hex, "timestamp": ts, "platform": "python", "level": "error",
        "release": "api-test@1.0", "environment": "test", "user": {"id": user},
        "exception": {"values": [{"type": exc_type, "value": value, "stacktrace": {"frames": [
            {"filename": "app/main.py", "module": "app.main", "function": "handle", "lineno": 5,
             "context_line": f"    {function}()", "in_app": True},
            {"filename": "app/api.py", "module": "app.api", "function": function, "lineno": 12,
             "context_line": f"    raise {exc_type}({value!r})", "in_app": True},
        ]}}]},
    }


@dataclass
class Seeded:
    project: Project
    order: list[str]  # exception types of the issues, newest last_seen first
    repeated: list[str]  # event ids of the three-event issue, oldest first


@pytest.fixture(scope="module")
def seeded(tracker: TrackerServer) -> Seeded:
    """Five issues with distinct last-seen times; `RepeatedError` has three events from two users."""
    project = tracker.create_project()
    now = time.time()
    repeated = [make_event("RepeatedError", "again", "retry", now - age, user)
                for age, user in ((300, "u1"), (200, "u2"), (100, "u1"))]
    singles = [make_event(name, f"{name} happened", f"fn_{i}", now - age, "u9")
               for i, (name, age) in enumerate((("NewestError", 50), ("OlderError", 400),
                                                ("OldError", 500), ("OldestError", 600)))]
    for event in [*repeated, *singles]:
        tracker.send_event(project, event)
    tracker.wait_issues(project, 7)
    return Seeded(project, ["NewestError", "RepeatedError", "OlderError", "OldError", "OldestError"],
                  [e["event_id"] for e in repeated])


def get_json(tracker: TrackerServer, path: str, status: int = 200, **params: Any) -> Any:
    r = tracker.api("GET", path, params=params)
    assert r.status_code == status, r.text
    assert r.headers["content-type"].startswith("application/json")
    return r.json()


def parse_iso(value: str) -> dt.datetime:
    assert value.endswith("Z"), value
    return dt.datetime.fromisoformat(value.replace("Z", "+00:00"))


def issue_by_type(tracker: TrackerServer, seeded: Seeded, exc_type: str) -> dict[str, Any]:
    issues = get_json(tracker, f"projects/tracker/{seeded.project.slug}/issues/")
    return next(i for i in issues if i["metadata"]["type"] == exc_type)


def links(response: httpx.Response) -> dict[str, tuple[str, bool, str]]:
    found = {rel: (url, results == "true", cursor)
             for url, rel, results, cursor in LINK.findall(response.headers["link"])}
    assert set(found) == {"previous", "next"}, response.headers["link"]
    return found


def test_root_describes_the_token(tracker: TrackerServer) -> None:
    body = get_json(tracker, "")  # `tracker token create` makes a token no person owns: Sentry's user null
    assert body["user"] is None and "event:read" in body["auth"]["scopes"]


def test_organizations(tracker: TrackerServer) -> None:
    orgs = get_json(tracker, "organizations/")
    assert [o["slug"] for o in orgs] == ["tracker"]
    assert get_json(tracker, "organizations/tracker/")["slug"] == "tracker"


def test_projects_of_the_organization(tracker: TrackerServer, seeded: Seeded) -> None:
    projects = get_json(tracker, "organizations/tracker/projects/")
    mine = next(p for p in projects if p["slug"] == seeded.project.slug)
    assert mine["id"] == str(seeded.project.id) and mine["name"] == seeded.project.slug
    assert mine["organization"]["slug"] == "tracker"
    one = get_json(tracker, f"projects/tracker/{seeded.project.slug}/")
    assert one["id"] == mine["id"] and one["slug"] == mine["slug"]


def test_issue_list_shape_and_order(tracker: TrackerServer, seeded: Seeded) -> None:
    issues = get_json(tracker, f"projects/tracker/{seeded.project.slug}/issues/")
    assert [i["metadata"]["type"] for i in issues] == seeded.order  # newest last_seen first
    for issue in issues:
        assert ISSUE_FIELDS <= set(issue), ISSUE_FIELDS - set(issue)
        assert issue["id"].isdigit() and isinstance(issue["count"], str)
        assert re.fullmatch(re.escape(seeded.project.slug.upper()) + r"-[0-9A-Z]+", issue["shortId"])
        assert issue["level"] == "error" and issue["status"] == "unresolved"
        assert issue["title"].startswith(issue["metadata"]["type"])
        assert issue["culprit"] and isinstance(issue["userCount"], int)
        assert parse_iso(issue["firstSeen"]) <= parse_iso(issue["lastSeen"])
    repeated = issues[1]
    assert repeated["count"] == "3" and repeated["userCount"] == 2
    assert repeated["metadata"]["value"] == "again"
    assert repeated["title"] == "RepeatedError: again"
    assert "retry" in repeated["culprit"]
    span = parse_iso(repeated["lastSeen"]) - parse_iso(repeated["firstSeen"])
    assert span.total_seconds() == pytest.approx(200, abs=1)
    assert [i["count"] for i in issues if i is not repeated] == ["1"] * 4


def test_one_issue(tracker: TrackerServer, seeded: Seeded) -> None:
    listed = issue_by_type(tracker, seeded, "RepeatedError")
    issue = get_json(tracker, f"issues/{listed['id']}/")
    for key in ISSUE_FIELDS:
        assert issue[key] == listed[key], key
    assert issue["project"]["slug"] == seeded.project.slug


def test_issue_events(tracker: TrackerServer, seeded: Seeded) -> None:
    issue = issue_by_type(tracker, seeded, "RepeatedError")
    events = get_json(tracker, f"issues/{issue['id']}/events/")
    assert [e["eventID"] for e in events] == seeded.repeated[::-1]  # newest first
    for event in events:
        assert event["id"] == event["eventID"] and event["groupID"] == issue["id"]
        tags = {t["key"]: t["value"] for t in event["tags"]}  # the list row is Sentry's slim one
        assert tags["release"] == "api-test@1.0" and tags["environment"] == "test"
        parse_iso(event["dateCreated"])


def test_latest_oldest_and_by_id(tracker: TrackerServer, seeded: Seeded) -> None:
    issue_id = issue_by_type(tracker, seeded, "RepeatedError")["id"]
    latest = get_json(tracker, f"issues/{issue_id}/events/latest/")
    oldest = get_json(tracker, f"issues/{issue_id}/events/oldest/")
    assert latest["eventID"] == seeded.repeated[-1] and oldest["eventID"] == seeded.repeated[0]
    middle = get_json(tracker, f"issues/{issue_id}/events/{seeded.repeated[1]}/")
    assert middle["eventID"] == seeded.repeated[1] and middle["groupID"] == issue_id
    assert middle["user"]["id"] == "u2"
    exception = next(e for e in middle["entries"] if e["type"] == "exception")["data"]["values"][0]
    assert exception["type"] == "RepeatedError" and exception["value"] == "again"
    assert [f["function"] for f in exception["stacktrace"]["frames"]] == ["handle", "retry"]
    dashed = str(uuid.UUID(seeded.repeated[1]))
    assert get_json(tracker, f"issues/{issue_id}/events/{dashed}/")["eventID"] == seeded.repeated[1]


def test_an_event_of_another_issue_is_not_found(tracker: TrackerServer, seeded: Seeded) -> None:
    other = issue_by_type(tracker, seeded, "NewestError")["id"]
    assert "detail" in get_json(tracker, f"issues/{other}/events/{seeded.repeated[0]}/", 404)
    get_json(tracker, f"issues/{other}/events/{uuid.uuid4().hex}/", 404)


def test_issue_pages_follow_the_link_cursor(tracker: TrackerServer, seeded: Seeded) -> None:
    url = f"{tracker.url}/api/0/projects/tracker/{seeded.project.slug}/issues/?limit=2"
    seen, pages, first = [], 0, True
    while True:
        r = httpx.get(url, headers={"Authorization": f"Bearer {tracker.token}"}, timeout=10)
        assert r.status_code == 200 and r.headers["content-type"].startswith("application/json")
        page = r.json()
        assert len(page) <= 2
        seen += [i["metadata"]["type"] for i in page]
        pages += 1
        rel = links(r)
        assert rel["previous"][1] is not first  # no previous page before the first one
        first = False
        if not rel["next"][1]:
            break
        assert f"cursor={rel['next'][2]}" in rel["next"][0]
        url = rel["next"][0]
        assert pages < 10, "the next link never ran out"
    assert seen == seeded.order and pages == 3


def test_event_pages_follow_the_link_cursor(tracker: TrackerServer, seeded: Seeded) -> None:
    issue_id = issue_by_type(tracker, seeded, "RepeatedError")["id"]
    r = tracker.api("GET", f"issues/{issue_id}/events/", params={"limit": 2})
    assert [e["eventID"] for e in r.json()] == seeded.repeated[:0:-1]
    next_url, more, _ = links(r)["next"]
    assert more
    r = httpx.get(next_url, headers={"Authorization": f"Bearer {tracker.token}"}, timeout=10)
    assert [e["eventID"] for e in r.json()] == seeded.repeated[:1]
    assert not links(r)["next"][1] and links(r)["previous"][1]


@pytest.mark.parametrize("headers", [{}, {"Authorization": "Bearer " + "0" * 64}, {"Authorization": "Bearer"},
                                     {"Authorization": "Basic dXNlcjpwYXNz"}],
                         ids=["none", "wrong", "empty", "basic"])
@pytest.mark.parametrize("path", ["/api/0/", "/api/0/organizations/", "/api/0/organizations/tracker/projects/",
                                  "/api/0/issues/1/"])
def test_without_a_valid_token_401_json(tracker: TrackerServer, path: str, headers: dict[str, str]) -> None:
    r = httpx.get(tracker.url + path, headers=headers, timeout=10)
    assert r.status_code == 401
    assert r.headers["content-type"].startswith("application/json")
    assert r.json()["detail"]


@pytest.mark.parametrize("path", ["no-such-thing/", "organizations/acme/",
                                  "organizations/acme/projects/", "projects/tracker/no-such-project/",
                                  "projects/tracker/no-such-project/issues/", "issues/999999999/",
                                  "issues/abc/", "issues/999999999/events/latest/"])
def test_unknown_resources_404_json(tracker: TrackerServer, path: str) -> None:
    assert "detail" in get_json(tracker, path, 404)


def test_unknown_org_of_a_known_project_404(tracker: TrackerServer, seeded: Seeded) -> None:
    get_json(tracker, f"projects/acme/{seeded.project.slug}/issues/", 404)


def test_a_bad_cursor_is_a_400_json(tracker: TrackerServer, seeded: Seeded) -> None:
    get_json(tracker, f"projects/tracker/{seeded.project.slug}/issues/", 400, cursor="nonsense")


@pytest.mark.parametrize("raw", ["²", "١", "12abc", "9" * 30])
def test_odd_issue_ids_are_not_found(tracker: TrackerServer, raw: str) -> None:
    assert tracker.api("GET", f"issues/{raw}/").status_code == 404
    assert tracker.web.get(f"/issues/{raw}/").status_code == 404
    assert tracker.web.get(f"/issues/{raw}/events/").status_code == 404
    assert tracker.web.get(f"/issues/{raw}/events/{'0' * 32}/json").status_code == 404
