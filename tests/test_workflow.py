"""Issue workflow end to end: resolve (plain, in next release, in a release), regressions, ignore
conditions, assignment, the activity log, bulk updates and the dashboard's action bar."""
from __future__ import annotations

import datetime as dt
import time
from typing import Any, Callable

import httpx
import pytest
import sentry_sdk
from conftest import Project, TrackerServer


def checkout() -> None:
    raise ValueError("card declined")


def refund() -> None:
    raise KeyError("order-7")


def capture(fn: Callable[[], None] = checkout, release: str | None = None, user: str | None = None) -> None:
    """Raise a fresh exception (the SDK drops one it has already sent) and deliver it now."""
    with sentry_sdk.isolation_scope() as scope:
        if release:
            scope.add_event_processor(lambda event, hint: {**event, "release": release})
        if user:
            scope.set_user({"id": user})
        try:
            fn()
        except Exception:
            sentry_sdk.capture_exception()
    sentry_sdk.flush()


def send(tracker: TrackerServer, project: Project, total: int, **kwargs: Any) -> None:
    """Capture one event and wait until the project has stored `total` events in all."""
    capture(**kwargs)
    tracker.wait_issues(project, total)


def issue_of(tracker: TrackerServer, project: Project, kind: str = "ValueError") -> dict[str, Any]:
    return next(i for i in tracker.issues(project) if i["metadata"]["type"] == kind)


def get(tracker: TrackerServer, issue_id: str) -> dict[str, Any]:
    return tracker.api("GET", f"issues/{issue_id}/").json()


def put(tracker: TrackerServer, path: str, body: Any, **params: Any) -> httpx.Response:
    return tracker.api("PUT", path, json=body, params=params)


def update(tracker: TrackerServer, issue_id: str, body: dict[str, Any]) -> dict[str, Any]:
    r = put(tracker, f"issues/{issue_id}/", body)
    assert r.status_code == 200, r.text
    return r.json()


def activity(tracker: TrackerServer, issue_id: str) -> list[dict[str, Any]]:
    r = tracker.api("GET", f"issues/{issue_id}/activities/")
    assert r.status_code == 200, r.text
    return r.json()["activity"]


def kinds(tracker: TrackerServer, issue_id: str) -> list[str]:
    """Activity types, oldest first."""
    return [a["type"] for a in reversed(activity(tracker, issue_id))]


def test_resolved_issue_regresses_on_a_new_event(tracker: TrackerServer, project: Project, sdk: Any) -> None:
    sdk(project.dsn, release="")  # no release unless an event sets one (not the checkout's git sha)
    send(tracker, project, 1)
    issue = issue_of(tracker, project)
    resolved = update(tracker, issue["id"], {"status": "resolved"})
    assert (resolved["status"], resolved["statusDetails"], resolved["substatus"]) == ("resolved", {}, None)
    assert [i["id"] for i in tracker.issues(project, "is:resolved")] == [issue["id"]]

    send(tracker, project, 2)
    issue = get(tracker, issue["id"])
    assert (issue["status"], issue["substatus"]) == ("unresolved", "regressed")
    assert [i["id"] for i in tracker.issues(project, "is:regressed")] == [issue["id"]]
    assert kinds(tracker, issue["id"]) == ["first_seen", "set_resolved", "set_regression"]
    latest = tracker.latest_event(issue["id"])["eventID"]
    assert activity(tracker, issue["id"])[0]["data"]["event_id"] == latest

    update(tracker, issue["id"], {"status": "resolved"})
    assert update(tracker, issue["id"], {"status": "unresolved"})["substatus"] == "ongoing"
    assert kinds(tracker, issue["id"])[-2:] == ["set_resolved", "set_unresolved"]


def test_resolved_in_next_release_reopens_only_for_a_newer_release(tracker: TrackerServer, project: Project,
                                                                    sdk: Any) -> None:
    sdk(project.dsn, release="")
    send(tracker, project, 1, release="a@1")
    issue = issue_of(tracker, project)
    resolved = update(tracker, issue["id"], {"status": "resolvedInNextRelease"})
    assert (resolved["status"], resolved["statusDetails"]) == ("resolved", {"inNextRelease": True})

    send(tracker, project, 2, release="a@1")  # the release it was resolved in: still broken there
    send(tracker, project, 3)  # no release: taken as older
    assert get(tracker, issue["id"])["status"] == "resolved"

    send(tracker, project, 4, release="a@2")
    issue = get(tracker, issue["id"])
    assert (issue["status"], issue["substatus"], issue["statusDetails"]) == ("unresolved", "regressed", {})
    log = activity(tracker, issue["id"])
    assert [a["type"] for a in reversed(log)] == ["first_seen", "set_resolved_in_release", "release", "set_regression"]
    assert log[2]["data"] == {"version": "", "current_release_version": "a@1"}
    assert log[1]["data"] == {"version": "a@2"} and log[0]["data"]["version"] == "a@2"


def test_resolved_in_a_release(tracker: TrackerServer, project: Project, sdk: Any) -> None:
    sdk(project.dsn, release="")
    send(tracker, project, 1, release="b@1")
    send(tracker, project, 2, release="b@2")
    issue = issue_of(tracker, project)
    resolved = update(tracker, issue["id"], {"status": "resolved", "statusDetails": {"inRelease": "b@2"}})
    assert resolved["statusDetails"] == {"inRelease": "b@2"}
    last = activity(tracker, issue["id"])[0]
    assert (last["type"], last["data"]) == ("set_resolved_in_release", {"version": "b@2"})
    send(tracker, project, 3, release="b@1")
    send(tracker, project, 4, release="b@2")
    assert get(tracker, issue["id"])["status"] == "resolved"
    send(tracker, project, 5, release="b@3")
    assert get(tracker, issue["id"])["substatus"] == "regressed"


def test_resolve_in_next_release_needs_a_release(tracker: TrackerServer, project: Project, sdk: Any) -> None:
    sdk(project.dsn, release="")
    send(tracker, project, 1)
    issue = issue_of(tracker, project)
    r = put(tracker, f"issues/{issue['id']}/", {"status": "resolved", "statusDetails": {"inNextRelease": True}})
    assert r.status_code == 400 and "release" in r.json()["detail"]
    assert get(tracker, issue["id"])["status"] == "unresolved"


def test_ignored_until_more_events(tracker: TrackerServer, project: Project, sdk: Any) -> None:
    sdk(project.dsn, release="")
    send(tracker, project, 1)
    issue = issue_of(tracker, project)
    ignored = update(tracker, issue["id"], {"status": "ignored", "statusDetails": {"ignoreCount": 2}})
    assert (ignored["status"], ignored["statusDetails"], ignored["substatus"]) == \
        ("ignored", {"ignoreCount": 2}, "archived_until_condition_met")
    send(tracker, project, 2)
    assert get(tracker, issue["id"])["status"] == "ignored"
    send(tracker, project, 3)
    issue = get(tracker, issue["id"])
    assert (issue["status"], issue["substatus"], issue["statusDetails"]) == ("unresolved", "escalating", {})
    log = activity(tracker, issue["id"])
    assert (log[0]["type"], log[0]["data"]) == ("set_unresolved", {"ignoreCount": 2})
    assert (log[1]["type"], log[1]["data"]) == ("set_ignored", {"ignoreCount": 2})


def test_ignored_for_a_duration(tracker: TrackerServer, project: Project, sdk: Any) -> None:
    """A 30-minute ignore stores its end and holds; one whose end has passed lifts on the next event."""
    sdk(project.dsn, release="")
    send(tracker, project, 1)
    capture(refund)
    tracker.wait_issues(project, 2)
    held, lifted = issue_of(tracker, project), issue_of(tracker, project, "KeyError")

    before = time.time()
    details = update(tracker, held["id"], {"status": "ignored", "statusDetails": {"ignoreDuration": 30}})
    details = details["statusDetails"]
    until = dt.datetime.fromisoformat(details["ignoreUntil"].replace("Z", "+00:00")).timestamp()
    assert details["ignoreDuration"] == 30 and before + 1800 <= until <= time.time() + 1800
    past = (dt.datetime.now(dt.timezone.utc) - dt.timedelta(seconds=5)).isoformat()
    update(tracker, lifted["id"], {"status": "ignored", "statusDetails": {"ignoreUntil": past}})
    assert get(tracker, lifted["id"])["status"] == "ignored"  # nothing lifts it until an event comes

    send(tracker, project, 3)
    capture(refund)
    tracker.wait_issues(project, 4)
    assert get(tracker, held["id"])["status"] == "ignored"
    assert get(tracker, lifted["id"])["status"] == "unresolved"
    assert kinds(tracker, lifted["id"])[-2:] == ["set_ignored", "set_unresolved"]


def test_ignored_until_more_users(tracker: TrackerServer, project: Project, sdk: Any) -> None:
    sdk(project.dsn, release="")
    send(tracker, project, 1, user="u0")
    issue = issue_of(tracker, project)
    update(tracker, issue["id"], {"status": "ignored", "statusDetails": {"ignoreUserCount": 2}})
    send(tracker, project, 2, user="u0")  # already counted before the ignore
    send(tracker, project, 3, user="u1")
    assert get(tracker, issue["id"])["status"] == "ignored"
    send(tracker, project, 4, user="u2")
    assert get(tracker, issue["id"])["status"] == "unresolved"


def test_assignment_through_the_api(tracker: TrackerServer, project: Project, sdk: Any) -> None:
    sdk(project.dsn, release="")
    send(tracker, project, 1)
    issue = issue_of(tracker, project)
    assert issue["assignedTo"] is None
    assigned = update(tracker, issue["id"], {"assignedTo": "jane@example.org"})
    assert assigned["assignedTo"] == {"type": "user", "name": "jane@example.org", "email": "jane@example.org"}
    assert [i["id"] for i in tracker.issues(project, "is:assigned")] == [issue["id"]]
    assert [i["id"] for i in tracker.issues(project, "assigned:jane@example.org")] == [issue["id"]]
    assert tracker.issues(project, "is:unassigned") == []

    assert update(tracker, issue["id"], {"assignedTo": None})["assignedTo"] is None
    assert [i["id"] for i in tracker.issues(project, "is:unassigned")] == [issue["id"]]
    log = activity(tracker, issue["id"])
    assert [(a["type"], a["data"]) for a in log[:2]] == [
        ("unassigned", {}), ("assigned", {"assignee": "jane@example.org", "assigneeType": "user"})]


@pytest.mark.parametrize("body", [
    {"status": "fixed"}, {"status": "ignored", "statusDetails": {"ignoreCount": 0}},
    {"status": "ignored", "statusDetails": {"ignoreCount": 2, "ignoreUserCount": 2}},
    {"status": "ignored", "statusDetails": {"ignoreUntil": "soon"}}, {"assignedTo": 7}, {}, [],
])
def test_bad_updates_are_refused(tracker: TrackerServer, project: Project, sdk: Any, body: Any) -> None:
    sdk(project.dsn, release="")
    send(tracker, project, 1)
    issue = issue_of(tracker, project)
    r = put(tracker, f"issues/{issue['id']}/", body)
    assert r.status_code == 400, r.text
    assert get(tracker, issue["id"])["status"] == "unresolved"
    assert put(tracker, "issues/999999999/", {"status": "resolved"}).status_code == 404


def test_bulk_update(tracker: TrackerServer, project: Project, sdk: Any) -> None:
    sdk(project.dsn, release="")
    send(tracker, project, 1)
    capture(refund)
    tracker.wait_issues(project, 2)
    ids = [i["id"] for i in tracker.issues(project)]
    path = f"projects/tracker/{project.slug}/issues/"
    r = put(tracker, path, {"status": "resolved", "assignedTo": "ops"}, id=ids)
    assert r.status_code == 200, r.text
    assert r.json() == {"status": "resolved", "statusDetails": {}, "assignedTo": {"type": "user", "name": "ops"}}
    assert {(get(tracker, i)["status"], get(tracker, i)["assignedTo"]["name"]) for i in ids} == {("resolved", "ops")}
    # no ids: as Sentry (and sentry-cli's `issues unresolve -a`), every issue `status`/`query` match
    assert put(tracker, path, {"status": "unresolved"}, status="ignored").status_code == 204  # none is ignored
    assert {get(tracker, i)["status"] for i in ids} == {"resolved"}
    assert put(tracker, path, {"status": "unresolved"}).status_code == 200
    assert {get(tracker, i)["status"] for i in ids} == {"unresolved"}
    assert put(tracker, path, {"status": "resolved"}, id="999999999").status_code == 204


def post_form(tracker: TrackerServer, issue_id: str, data: dict[str, str], **headers: str) -> httpx.Response:
    return tracker.form(f"/issues/{issue_id}/", data=data, headers=headers, follow_redirects=True,
                      timeout=10)


def test_dashboard_action_bar(tracker: TrackerServer, project: Project, sdk: Any) -> None:
    sdk(project.dsn, release="")
    send(tracker, project, 1, release="c@1")
    issue_id = issue_of(tracker, project)["id"]
    page = tracker.web.get(f"/issues/{issue_id}/").text
    assert "Resolve in next release" in page and '<option value="c@1">' in page and "First seen in c@1" in page

    r = post_form(tracker, issue_id, {"status": "resolved", "inRelease": "c@1"}, Origin=tracker.url)
    assert r.status_code == 200 and str(r.url) == f"{tracker.url}/issues/{issue_id}/"
    assert r.history[0].status_code == 303 and "Resolved in c@1" in r.text
    assert get(tracker, issue_id)["statusDetails"] == {"inRelease": "c@1"}

    r = post_form(tracker, issue_id, {"status": "ignored", "ignore": "10events"})
    assert r.status_code == 200 and "Ignored until 10 more events" in r.text
    assert get(tracker, issue_id)["statusDetails"] == {"ignoreCount": 10}
    post_form(tracker, issue_id, {"status": "resolvedInNextRelease"})
    assert get(tracker, issue_id)["statusDetails"] == {"inNextRelease": True}
    r = post_form(tracker, issue_id, {"status": "unresolved"})
    assert get(tracker, issue_id)["status"] == "unresolved"

    r = post_form(tracker, issue_id, {"assignedTo": "admin"})
    assert "assigned to <b>admin</b>" in r.text and get(tracker, issue_id)["assignedTo"]["name"] == "admin"
    post_form(tracker, issue_id, {"assignedTo": ""})
    assert get(tracker, issue_id)["assignedTo"] is None
    assert post_form(tracker, issue_id, {"status": "ignored", "ignore": "someday"}).status_code == 400


def test_dashboard_refuses_cross_site_posts(tracker: TrackerServer, project: Project, sdk: Any) -> None:
    sdk(project.dsn, release="")
    send(tracker, project, 1)
    issue_id = issue_of(tracker, project)["id"]
    for headers in ({"Origin": "https://evil.example"}, {"Origin": "null"}, {"Sec-Fetch-Site": "cross-site"}):
        assert post_form(tracker, issue_id, {"status": "resolved"}, **headers).status_code == 403
    assert post_form(tracker, issue_id, {"assignedTo": "mallory"}, Origin="http://evil.example").status_code == 403
    issue = get(tracker, issue_id)
    assert (issue["status"], issue["assignedTo"]) == ("unresolved", None)
    assert post_form(tracker, issue_id, {"status": "resolved"}, **{"Sec-Fetch-Site": "same-origin"}).status_code == 200
    assert get(tracker, issue_id)["status"] == "resolved"


def test_bulk_actions_from_the_issue_list(tracker: TrackerServer, project: Project, sdk: Any) -> None:
    sdk(project.dsn, release="bulk@1")
    for n, fn in enumerate((checkout, refund, lambda: int("x")), start=1):
        send(tracker, project, n, fn=fn)
    ids = sorted((i["id"] for i in tracker.wait_issues(project, 3)), key=int)
    url = "/issues/bulk/"
    r = tracker.form(url, data={"id": ids[:2], "bulk": "resolved", "next": f"project={project.slug}"})
    assert r.status_code == 303 and r.headers["location"] == f"/issues/?project={project.slug}"
    assert [get(tracker, i)["status"] for i in ids] == ["resolved", "resolved", "unresolved"]
    tracker.form(url, data={"id": ids[2:], "bulk": "ignored"})
    assert get(tracker, ids[2])["status"] == "ignored"
    tracker.form(url, data={"id": ids, "bulk": "unresolved"})
    assert {get(tracker, i)["status"] for i in ids} == {"unresolved"}
    tracker.form(url, data={"id": ids[1:], "bulk": "assign", "assignedTo": "admin"})
    assert [(get(tracker, i)["assignedTo"] or {}).get("name") for i in ids] == [None, "admin", "admin"]
    assert tracker.form(url, data={"bulk": "resolved"}).status_code == 400
    assert tracker.form(url, data={"id": ids, "bulk": "resolved"}, headers={"Sec-Fetch-Site": "cross-site"}).status_code == 403


def test_delete_issues_through_the_api(tracker: TrackerServer, project: Project, sdk: Any) -> None:
    sdk(project.dsn, release="del@1")
    for n, fn in enumerate((checkout, refund, lambda: int("x")), start=1):
        send(tracker, project, n, fn=fn)
    ids = sorted((i["id"] for i in tracker.wait_issues(project, 3)), key=int)
    r = tracker.api("DELETE", f"issues/{ids[0]}/")
    assert r.status_code == 202
    assert tracker.api("GET", f"issues/{ids[0]}/").status_code == 404
    r = tracker.api("DELETE", f"projects/tracker/{project.slug}/issues/", params={"id": ids[1:]})
    assert r.status_code == 204 and tracker.issues(project, "is:unresolved") == []
    assert httpx.delete(f"{tracker.url}/api/0/issues/{ids[1]}/").status_code == 401
    capture(checkout)  # the deleted issue's error comes back as a new issue
    (again,) = tracker.wait_issues(project, 1)
    assert again["id"] not in ids and again["count"] == "1"
