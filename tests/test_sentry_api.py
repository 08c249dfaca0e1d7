"""Sentry's web API as tools call it (issue 16): the real sentry-cli's commands against a live server,
the organization-scoped issue endpoints with Sentry's parameters, short ids, event ids, the event shape
field by field (shared/docs/api-shapes.md), Discover's events query, members, teams and who-am-I."""
from __future__ import annotations

import datetime as dt
import os
import re
import shutil
import subprocess
import sys
import urllib.parse
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import sentry_sdk
from sentry_sdk.crons import capture_checkin

from conftest import Project, TrackerServer, charge_under_sdk, wait_for

SENTRY_CLI = shutil.which("sentry-cli") or str(Path(sys.executable).with_name("sentry-cli"))
ISO = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z")
LINK = re.compile(r'<([^>]*)>; rel="(previous|next)"; results="(true|false)"; cursor="([^"]*)"')

# shared/docs/api-shapes.md §4: the keys every issue answer has (Sentry's BaseGroupSerializerResponse)
BASE_ISSUE_KEYS = {"id", "shareId", "shortId", "title", "culprit", "permalink", "logger", "level", "status",
                   "statusDetails", "substatus", "isPublic", "platform", "priority", "priorityLockedAt", "project",
                   "type", "issueType", "issueCategory", "metadata", "numComments", "assignedTo", "isBookmarked",
                   "isSubscribed", "subscriptionDetails", "hasSeen", "annotations", "count", "userCount",
                   "firstSeen", "lastSeen"}
# §2: the keys of a full event (OpenAPI getOrganizationIssueEvent's required ones, and those also present)
EVENT_KEYS = {"_meta", "context", "contexts", "dateReceived", "dist", "entries", "errors", "eventID", "groupID", "id",
              "location", "message", "metadata", "nextEventID", "occurrence", "packages", "platform",
              "previousEventID", "projectID", "release", "resolvedWith", "sdk", "sdkUpdates", "size", "tags", "title",
              "type", "user", "userReport", "culprit", "dateCreated", "crashFile", "fingerprints", "groupingConfig"}
SLIM_EVENT_KEYS = {"id", "event.type", "groupID", "eventID", "projectID", "message", "title", "location", "culprit",
                   "user", "tags", "platform", "dateCreated", "crashFile", "metadata"}
FRAME_KEYS = {"filename", "absPath", "module", "package", "platform", "instructionAddr", "symbolAddr", "function",
              "rawFunction", "symbol", "context", "lineNo", "colNo", "inApp", "trust", "errors", "vars", "lock",
              "sourceLink"}

PAY_MODULE = '''\
def charge(amount):
    limit = 5
    if amount > limit:
        raise ValueError(f"amount {amount} over limit")
    return amount
'''


@dataclass
class World:
    project: Project
    charge: dict[str, Any]  # the ValueError issue (three events, two users)
    library: dict[str, Any]  # an issue whose frames are all library code
    library_event: str


@pytest.fixture(scope="module")
def world(tracker: TrackerServer, tmp_path_factory: pytest.TempPathFactory) -> World:
    project = tracker.create_project()
    root = tmp_path_factory.mktemp("shopcode")
    (root / "shoppay16").mkdir()
    (root / "shoppay16" / "__init__.py").write_text("")
    (root / "shoppay16" / "pay.py").write_text(PAY_MODULE)
    charge_under_sdk(project, root, "shoppay16.pay", users=("u1", "u2", "u2"), release="shop@2.0",
                     environment="prod")
    library_event = uuid.uuid4().hex
    tracker.send_event(project, {
        "event_id": library_event, "platform": "python", "level": "warning", "environment": "staging",
        "user": {"email": "ops@example.org"}, "tags": {"zone": "eu-1"},
        "exception": {"values": [{"type": "TimeoutError", "value": "pool exhausted", "mechanism": {"type": "generic", "handled": False},
                                  "stacktrace": {"frames": [{"filename": "lib/pool.py", "function": "get", "lineno": 40,
                                                             "in_app": False}]}}]}})
    issues = tracker.wait_issues(project, 4)
    by_type = {i["metadata"]["type"]: i for i in issues}
    return World(project, by_type["ValueError"], by_type["TimeoutError"], library_event)


def get(tracker: TrackerServer, path: str, status: int = 200, **params: Any) -> Any:
    r = tracker.api("GET", path, params=params)
    assert r.status_code == status, (path, r.status_code, r.text)
    assert r.headers["content-type"].startswith("application/json")
    return r.json()


def bad(tracker: TrackerServer, path: str, **params: Any) -> str:
    """A 400 with Sentry's {"detail": "…"} body (never a 500)."""
    body = get(tracker, path, 400, **params)
    assert set(body) == {"detail"} and isinstance(body["detail"], str) and body["detail"], body
    return body["detail"]


def links(response: Any) -> dict[str, tuple[str, bool, str]]:
    found = {rel: (url, results == "true", cursor) for url, rel, results, cursor in LINK.findall(response.headers["link"])}
    assert set(found) == {"previous", "next"}, response.headers["link"]
    return found


def cli(tracker: TrackerServer, project: Project, *args: str) -> str:
    """The real sentry-cli, configured only through its environment as CI would; its stdout."""
    env = {**os.environ, "SENTRY_URL": tracker.url, "SENTRY_AUTH_TOKEN": tracker.token, "SENTRY_ORG": "tracker",
           "SENTRY_PROJECT": project.slug, "SENTRY_DISABLE_UPDATE_CHECK": "1"}
    out = subprocess.run([SENTRY_CLI, *args], capture_output=True, text=True, env=env, timeout=60)
    assert out.returncode == 0, f"sentry-cli {' '.join(args)} failed:\n{out.stdout}\n{out.stderr}"
    return out.stdout


def table_rows(output: str) -> list[list[str]]:
    """The data rows of one of sentry-cli's tables, cell by cell."""
    rows = [[c.strip() for c in line.strip("|").split("|")] for line in output.splitlines() if line.startswith("|")]
    return rows[1:]


# -- the real sentry-cli ---------------------------------------------------------------------------

needs_cli = pytest.mark.skipif(not Path(SENTRY_CLI).exists(), reason="the sentry-cli package is not installed")


@needs_cli
def test_cli_issues_list_then_mute_unresolve_and_resolve(tracker: TrackerServer) -> None:
    project = tracker.create_project()
    for n in range(2):
        tracker.send_event(project, {"message": f"cli issue {n}", "level": "error", "fingerprint": [str(n)]})
    issues = tracker.wait_issues(project, 2)
    rows = table_rows(cli(tracker, project, "issues", "list"))
    assert sorted((r[1], r[2], r[4], r[5]) for r in rows) == sorted(
        (i["shortId"], i["title"], "unresolved", "error") for i in issues)
    assert "Updated matching issues" in cli(tracker, project, "issues", "mute", "-a")
    assert {i["status"] for i in tracker.issues(project)} == {"ignored"}  # "muted" is Sentry's older name
    cli(tracker, project, "issues", "unresolve", "-a")
    assert {i["status"] for i in tracker.issues(project)} == {"unresolved"}
    cli(tracker, project, "issues", "resolve", "-i", issues[0]["id"])
    status = {i["id"]: i["status"] for i in tracker.issues(project)}
    assert status == {issues[0]["id"]: "resolved", issues[1]["id"]: "unresolved"}
    assert {r[4] for r in table_rows(cli(tracker, project, "issues", "list"))} == {"resolved", "unresolved"}


@needs_cli
def test_cli_issues_list_follows_the_link_header(tracker: TrackerServer) -> None:
    """sentry-cli reads pages while `rel="next"` says results="true": 103 issues are two pages."""
    project = tracker.create_project()
    for n in range(103):
        tracker.send_event(project, {"message": f"page issue {n}", "fingerprint": [str(n)]})
    wait_for(lambda: len(get(tracker, f"projects/tracker/{project.slug}/issues/", query="", cursor="0:100:0")) == 3,
             timeout=60)
    assert len(table_rows(cli(tracker, project, "issues", "list"))) == 103


@needs_cli
def test_cli_events_list(tracker: TrackerServer, world: World) -> None:
    out = cli(tracker, world.project, "events", "list", "--show-user", "--show-tags")
    rows = [r for r in table_rows(out) if r[0]]  # a cell of several tags goes on over lines of its own
    events = get(tracker, f"projects/tracker/{world.project.slug}/events/")
    assert [r[0] for r in rows] == [str(uuid.UUID(e["eventID"])) for e in events] and len(rows) == 4
    assert "Email: ops@example.org" in rows[0][3] and "zone: eu-1" in out and "ID: u2" in out


@needs_cli
def test_cli_organizations_projects_repos_deploys_and_monitors(tracker: TrackerServer, world: World) -> None:
    orgs = table_rows(cli(tracker, world.project, "organizations", "list"))
    assert orgs[0][:3] == ["1", "tracker", "tracker"]
    assert orgs[0][3] == dt.datetime.now(dt.timezone.utc).date().isoformat()  # the database's day, not 1970
    assert world.project.slug in [r[1] for r in table_rows(cli(tracker, world.project, "projects", "list"))]
    name = f"acme/shop-{uuid.uuid4().hex[:6]}"
    assert tracker.api("POST", "organizations/tracker/repos/", json={"name": name,
                                                                    "url": f"https://github.com/{name}"}).status_code == 201
    assert name in cli(tracker, world.project, "repos", "list")
    version = f"cli16@{uuid.uuid4().hex[:6]}"
    assert tracker.api("POST", "organizations/tracker/releases/",
                       json={"version": version, "projects": [world.project.slug]}).status_code == 201
    assert tracker.api("POST", f"organizations/tracker/releases/{version}/deploys/",
                       json={"environment": "canary"}).status_code == 201
    assert "canary" in cli(tracker, world.project, "deploys", "list", "-r", version)
    sentry_sdk.init(dsn=world.project.dsn)
    try:
        capture_checkin(monitor_slug="cli16-nightly", status="ok",
                        monitor_config={"schedule": {"type": "crontab", "value": "0 3 * * *"}, "checkin_margin": 5})
        sentry_sdk.flush()
    finally:
        sentry_sdk.get_client().close()
        sentry_sdk.init()
    wait_for(lambda: "cli16-nightly" in cli(tracker, world.project, "monitors", "list"))


# -- the organization's issues ---------------------------------------------------------------------

def test_org_issue_list_has_sentrys_shape(tracker: TrackerServer, world: World) -> None:
    """The MCP server's exact search request; each row field by field."""
    r = tracker.api("GET", "organizations/tracker/issues/", params={
        "limit": 10, "sort": "date", "statsPeriod": "24h", "query": "is:unresolved level:error",
        "project": str(world.project.id), "collapse": "unhandled"})
    assert r.status_code == 200, r.text
    [row] = r.json()
    assert BASE_ISSUE_KEYS <= set(row) and "isUnhandled" not in row  # collapse=unhandled drops it
    assert row["id"] == world.charge["id"] and isinstance(row["id"], str)
    assert re.fullmatch(world.project.slug.upper() + r"-[0-9A-Z]+", row["shortId"])
    assert row["count"] == "3" and row["userCount"] == 2 and row["priority"] == "high"
    assert row["project"] == {"id": str(world.project.id), "slug": world.project.slug, "name": world.project.slug,
                              "platform": None}
    assert (row["issueType"], row["issueCategory"], row["type"]) == ("error", "error", "error")
    assert ISO.fullmatch(row["firstSeen"]) and ISO.fullmatch(row["lastSeen"])
    assert row["permalink"] == f"{tracker.url}/issues/{row['id']}/"
    assert [n for _, n in row["stats"]["24h"]][-1] == 3 and len(row["stats"]["24h"]) == 24
    assert all(isinstance(ts, int) for ts, _ in row["stats"]["24h"])
    assert row["lifetime"] == {"count": "3", "userCount": 2, "firstSeen": row["firstSeen"],
                               "lastSeen": row["lastSeen"], "stats": None}
    assert row["filtered"] is None
    assert links(r)["next"][1] is False and links(r)["previous"][1] is False


def test_org_issue_list_parameters(tracker: TrackerServer, world: World) -> None:
    mine = {"project": str(world.project.id)}
    everything = get(tracker, "organizations/tracker/issues/", query="", **mine)
    assert {i["id"] for i in everything} == {world.charge["id"], world.library["id"]}
    assert [i["id"] for i in get(tracker, "organizations/tracker/issues/", environment="staging", **mine)] == \
        [world.library["id"]]
    assert [i["id"] for i in get(tracker, "organizations/tracker/issues/", sort="freq", **mine)][0] == world.charge["id"]
    assert [i["id"] for i in get(tracker, "organizations/tracker/issues/", sort="new", **mine)][0] == world.library["id"]
    assert get(tracker, "organizations/tracker/issues/", project=world.project.slug)  # a slug does too
    assert get(tracker, "organizations/tracker/issues/", start="2020-01-01T00:00:00", end="2020-01-02T00:00:00",
               **mine) == []  # nothing seen then
    start = (dt.datetime.now(dt.timezone.utc) - dt.timedelta(hours=1)).isoformat()
    end = (dt.datetime.now(dt.timezone.utc) + dt.timedelta(minutes=1)).isoformat()
    assert len(get(tracker, "organizations/tracker/issues/", start=start, end=end, **mine)) == 2
    daily = get(tracker, "organizations/tracker/issues/", groupStatsPeriod="14d", **mine)[0]["stats"]
    assert list(daily) == ["14d"] and len(daily["14d"]) == 14
    assert "stats" not in get(tracker, "organizations/tracker/issues/", groupStatsPeriod="", **mine)[0]
    lean = get(tracker, "organizations/tracker/issues/", collapse=["stats", "lifetime", "filtered", "base"], **mine)[0]
    assert set(lean) == {"id", "isUnhandled"}
    unhandled = {i["id"]: i["isUnhandled"] for i in everything}
    assert unhandled == {world.charge["id"]: False, world.library["id"]: True}
    assert [i["id"] for i in get(tracker, "organizations/tracker/issues/", group=world.library["id"])] == \
        [world.library["id"]]


def test_org_issue_list_direct_hits(tracker: TrackerServer, world: World) -> None:
    r = tracker.api("GET", "organizations/tracker/issues/", params={"query": world.library_event})
    assert r.status_code == 200 and r.headers["x-sentry-direct-hit"] == "1"
    assert [(i["id"], i["matchingEventId"]) for i in r.json()] == [(world.library["id"], world.library_event)]
    dashed = str(uuid.UUID(world.library_event))
    assert [i["id"] for i in get(tracker, "organizations/tracker/issues/", query=dashed)] == [world.library["id"]]
    r = tracker.api("GET", "organizations/tracker/issues/",
                    params={"query": world.charge["shortId"].lower(), "shortIdLookup": "1"})
    assert r.headers["x-sentry-direct-hit"] == "1" and [i["id"] for i in r.json()] == [world.charge["id"]]


def test_org_issue_list_pages(tracker: TrackerServer, world: World) -> None:
    r = tracker.api("GET", "organizations/tracker/issues/", params={"project": world.project.id, "limit": 1,
                                                                    "query": "", "cursor": ""})
    found = links(r)
    assert len(r.json()) == 1 and found["next"][1] is True and found["previous"][1] is False
    second = tracker.api("GET", urllib.parse.urlsplit(found["next"][0]).path.removeprefix("/api/0/"),
                         params=dict(urllib.parse.parse_qsl(urllib.parse.urlsplit(found["next"][0]).query)))
    assert second.json()[0]["id"] != r.json()[0]["id"] and links(second)["next"][1] is False


def test_org_issue_list_bounds(tracker: TrackerServer, world: World) -> None:
    """Each list input has a bound: a page holds at most 100, a request names at most 100 issues or
    projects; the longest period reaches back to 1970 (not a 400, not a 500)."""
    r = tracker.api("GET", "organizations/tracker/issues/", params={"limit": 100_000, "query": ""})
    assert r.status_code == 200 and len(r.json()) <= 100 and links(r)["next"][2] == "0:100:0"
    assert "at most 100" in bad(tracker, "organizations/tracker/issues/", group=[str(n) for n in range(1, 102)])
    assert "at most 100" in bad(tracker, "organizations/tracker/issues/", project=[str(world.project.id)] * 101)
    assert len(get(tracker, "organizations/tracker/issues/", statsPeriod="999999w", project=world.project.id)) == 2


@pytest.mark.parametrize("params", [
    {"cursor": "abc"}, {"cursor": "0:x:0"}, {"limit": "ten"}, {"statsPeriod": "forever"}, {"statsPeriod": "9" * 30 + "d"},
    {"groupStatsPeriod": "7d"}, {"sort": "loudest"}, {"project": "no-such-project"}, {"query": "is:sleeping"},
    {"query": "lastSeen:>tomorrow"}, {"start": "2026-01-01T00:00:00Z"}, {"start": "x", "end": "y"},
    {"start": "2026-02-01T00:00:00Z", "end": "2026-01-01T00:00:00Z"}, {"group": "WEB-1"}, {"query": "x" * 3000}])
def test_org_issue_list_bad_parameters_are_400(tracker: TrackerServer, params: dict[str, str]) -> None:
    bad(tracker, "organizations/tracker/issues/", **params)


@pytest.mark.parametrize("prefix", ["issues", "organizations/tracker/issues"])
def test_issue_detail_by_numeric_or_short_id(tracker: TrackerServer, world: World, prefix: str) -> None:
    by_id = get(tracker, f"{prefix}/{world.charge['id']}/")
    by_short = get(tracker, f"{prefix}/{world.charge['shortId']}/")
    assert by_id == by_short and BASE_ISSUE_KEYS <= set(by_id)
    assert {"activity", "seenBy", "participants", "userReportCount", "firstRelease", "lastRelease", "tags", "stats",
            "pluginActions", "pluginIssues", "pluginContexts", "isUnhandled"} <= set(by_id)
    assert by_id["firstRelease"]["version"] == "shop@2.0" and by_id["userReportCount"] == 0
    assert set(by_id["stats"]) == {"24h", "30d"} and sum(n for _, n in by_id["stats"]["30d"]) == 3
    users = next(t for t in by_id["tags"] if t["key"] == "user")
    assert users["totalValues"] == 3 and users["topValues"][0] == {"key": "user", "name": "id:u2", "value": "id:u2",
                                                                    "count": 2}
    assert "tags" not in get(tracker, f"{prefix}/{world.charge['shortId']}/", collapse="tags")
    get(tracker, f"{prefix}/{world.project.slug.upper()}-ZZZZZ/", 404)
    get(tracker, f"{prefix}/NOT A SHORT ID/", 404)
    assert set(get(tracker, f"{prefix}/99999999/", 404)) == {"detail"}


def test_issue_under_another_organization_is_404(tracker: TrackerServer, world: World) -> None:
    assert get(tracker, f"organizations/other/issues/{world.charge['id']}/", 404) == \
        {"detail": "The requested resource does not exist"}
    get(tracker, "organizations/other/issues/", 404)


def test_update_and_delete_by_short_id(tracker: TrackerServer) -> None:
    project = tracker.create_project()
    tracker.send_event(project, {"message": "short id update"})
    [issue] = tracker.wait_issues(project, 1)
    path = f"organizations/tracker/issues/{issue['shortId']}/"
    r = tracker.api("PUT", path, json={"status": "muted"})
    assert r.status_code == 200 and r.json()["status"] == "ignored" and r.json()["shortId"] == issue["shortId"]
    r = tracker.api("PUT", path, json={"status": "ignored", "ignoreDuration": 30})  # as Sentry's MCP server sends it
    assert r.status_code == 200 and r.json()["statusDetails"]["ignoreDuration"] == 30
    r = tracker.api("PUT", path, json={"status": "snoozed"})
    assert r.status_code == 400 and "status" in r.json()["detail"]
    assert tracker.api("DELETE", path).status_code == 202
    get(tracker, path, 404)


def test_bulk_update_and_delete_across_projects(tracker: TrackerServer) -> None:
    """Sentry's bulk mutate of the organization's issues: the ids of several projects in one request."""
    first, second = tracker.create_project(), tracker.create_project()
    for project in (first, second):
        tracker.send_event(project, {"message": f"bulk {project.slug}"})
    a, b = tracker.wait_issues(first, 1)[0], tracker.wait_issues(second, 1)[0]
    r = tracker.api("PUT", "organizations/tracker/issues/", params={"id": [a["id"], b["id"]]}, json={"status": "resolved"})
    assert r.status_code == 200 and r.json() == {"status": "resolved", "statusDetails": {}}
    assert [i["status"] for i in tracker.issues(first) + tracker.issues(second)] == ["resolved", "resolved"]
    r = tracker.api("PUT", "organizations/tracker/issues/", params={"id": [a["id"], b["id"]]}, json={"merge": 1})
    assert r.status_code == 400 and "one project" in r.json()["detail"]
    r = tracker.api("PUT", "organizations/tracker/issues/", params={"id": [a["id"], b["id"]], "project": first.id},
                    json={"status": "unresolved"})  # `project` narrows: the second is left alone
    assert r.status_code == 200 and [i["status"] for i in tracker.issues(first) + tracker.issues(second)] == \
        ["unresolved", "resolved"]
    assert tracker.api("PUT", "organizations/tracker/issues/", params={"id": "x"}, json={}).status_code == 400
    assert tracker.api("DELETE", "organizations/tracker/issues/", params={"id": [a["id"], b["id"]]}).status_code == 204
    assert tracker.issues(first) == [] and tracker.issues(second) == []
    assert tracker.api("DELETE", "organizations/tracker/issues/").status_code == 400  # deleting needs ids


def test_issue_events_tags_and_hashes_under_the_organization(tracker: TrackerServer, world: World) -> None:
    base = f"organizations/tracker/issues/{world.charge['shortId']}"
    r = tracker.api("GET", f"{base}/events/", params={"per_page": 2, "sort": "-timestamp", "statsPeriod": "14d"})
    assert r.status_code == 200 and len(r.json()) == 2 and links(r)["next"][1] is True
    for event in r.json():
        assert set(event) == SLIM_EVENT_KEYS and event["groupID"] == world.charge["id"]
    assert [e["user"]["id"] for e in get(tracker, f"{base}/events/", query="user.id:u1")] == ["u1"]
    tag = get(tracker, f"{base}/tags/environment/")
    assert tag == {"key": "environment", "name": "Environment", "totalValues": 3, "uniqueValues": 1,
                   "topValues": [{"key": "environment", "name": "prod", "value": "prod", "count": 3}]}
    [value] = get(tracker, f"{base}/tags/release/values/")
    assert (value["value"], value["count"]) == ("shop@2.0", 3) and ISO.fullmatch(value["lastSeen"])
    assert {t["key"] for t in get(tracker, f"{base}/tags/")} >= {"environment", "release", "user", "level"}
    get(tracker, f"{base}/tags/no-such-key/", 404)
    [hashed] = get(tracker, f"{base}/hashes/")
    assert re.fullmatch(r"[0-9a-f]{32}", hashed["id"]) and hashed["latestEvent"]["groupID"] == world.charge["id"]


# -- events ------------------------------------------------------------------------------------------

def test_event_has_sentrys_shape(tracker: TrackerServer, world: World) -> None:
    latest = get(tracker, f"organizations/tracker/issues/{world.charge['shortId']}/events/latest/")
    assert EVENT_KEYS <= set(latest)
    assert latest["id"] == latest["eventID"] and re.fullmatch(r"[0-9a-f]{32}", latest["id"])
    assert (latest["groupID"], latest["projectID"]) == (world.charge["id"], str(world.project.id))
    assert latest["resolvedWith"] == ["latest"] and latest["nextEventID"] is None
    assert re.fullmatch(r"[0-9a-f]{32}", latest["previousEventID"])
    assert ISO.fullmatch(latest["dateCreated"]) and ISO.fullmatch(latest["dateReceived"])
    assert latest["dateCreated"] <= latest["dateReceived"]
    assert latest["location"] == "shoppay16/pay.py" and latest["message"] == "" and latest["type"] == "error"
    assert latest["user"] == {"id": "u2", "email": None, "username": None, "ip_address": None, "name": None,
                              "geo": None, "data": None}
    assert [t["key"] for t in latest["tags"]] == sorted(t["key"] for t in latest["tags"])
    assert {"key": "environment", "value": "prod"} in latest["tags"]
    assert latest["release"] == {"version": "shop@2.0"} and latest["sdk"]["name"].startswith("sentry.python")
    assert all(ctx["type"] for ctx in latest["contexts"].values()) and latest["contexts"]["runtime"]["type"] == "runtime"
    [exception] = [e for e in latest["entries"] if e["type"] == "exception"]
    data = exception["data"]
    assert set(data) == {"values", "hasSystemFrames", "excOmitted"} and data["excOmitted"] is None
    value = data["values"][-1]
    assert set(value) == {"type", "value", "module", "threadId", "mechanism", "stacktrace", "rawStacktrace"}
    assert (value["type"], value["value"], value["rawStacktrace"]) == ("ValueError", "amount 7 over limit", None)
    stack = value["stacktrace"]
    assert set(stack) == {"frames", "framesOmitted", "registers", "hasSystemFrames"}
    crash = stack["frames"][-1]
    assert FRAME_KEYS <= set(crash) and not {"lineno", "abs_path", "in_app", "context_line", "pre_context"} & set(crash)
    assert (crash["function"], crash["module"], crash["inApp"], crash["lineNo"]) == ("charge", "shoppay16.pay", True, 4)
    assert crash["absPath"].endswith("shoppay16/pay.py") and crash["vars"]["amount"] == "7"
    source = PAY_MODULE.splitlines()
    assert crash["context"] == [[n + 1, source[n]] for n in range(len(source))]  # pre, the line, post: numbered
    assert stack["hasSystemFrames"] is True and data["hasSystemFrames"] is True  # an in-app frame: Sentry's rule
    oldest = get(tracker, f"issues/{world.charge['id']}/events/oldest/")
    assert oldest["resolvedWith"] == ["oldest"] and oldest["previousEventID"] is None
    recommended = get(tracker, f"issues/{world.charge['id']}/events/recommended/")
    assert recommended["resolvedWith"] == ["recommended"] and recommended["contexts"]["trace"]["trace_id"]


def test_system_frames_only_is_false_and_message_entries(tracker: TrackerServer, world: World) -> None:
    event = get(tracker, f"projects/tracker/{world.project.slug}/events/{world.library_event}/")
    data = next(e["data"] for e in event["entries"] if e["type"] == "exception")
    assert data["hasSystemFrames"] is False and data["values"][0]["stacktrace"]["hasSystemFrames"] is False
    assert data["values"][0]["mechanism"] == {"type": "generic", "handled": False}
    assert data["values"][0]["stacktrace"]["frames"][0]["context"] == []  # no source sent
    project = tracker.create_project()
    event_id = tracker.send_event(project, {"logentry": {"message": "disk %s full", "params": ["/var"]},
                                            "breadcrumbs": [{"message": "mounted", "timestamp": 1796000000}],
                                            "request": {"method": "POST", "url": "https://x.example/a?b=1#top",
                                                        "headers": {"Content-Type": "application/json"},
                                                        "data": {"k": 1}}})
    tracker.wait_issues(project, 1)
    event = get(tracker, f"projects/tracker/{project.slug}/events/{event_id}/")
    kinds = [e["type"] for e in event["entries"]]
    assert kinds == ["message", "breadcrumbs", "request"]
    entries = {e["type"]: e["data"] for e in event["entries"]}
    assert entries["message"] == {"formatted": "disk /var full", "message": "disk %s full", "params": ["/var"]}
    assert entries["breadcrumbs"]["values"] == [{"type": "default", "timestamp": "2026-11-30T00:53:20.000000Z",
                                                 "level": "info", "message": "mounted", "category": None,
                                                 "data": None, "event_id": None}]
    request = entries["request"]
    assert (request["method"], request["url"], request["query"]) == ("POST", "https://x.example/a", [["b", "1"]])
    assert request["fragment"] == "top" and request["data"] == {"k": 1}
    assert request["inferredContentType"] == "application/json" and request["apiTarget"] is None
    assert event["type"] == "default" and event["message"] == "disk /var full"


def test_project_events_list_and_detail(tracker: TrackerServer, world: World) -> None:
    r = tracker.api("GET", f"projects/tracker/{world.project.slug}/events/", params={"cursor": ""})
    assert r.status_code == 200 and len(r.json()) == 4 and links(r)["next"][1] is False
    assert all(set(e) == SLIM_EVENT_KEYS for e in r.json())
    assert r.json()[0]["eventID"] == world.library_event  # newest first
    full = get(tracker, f"projects/tracker/{world.project.slug}/events/", full="true")
    assert all(EVENT_KEYS <= set(e) for e in full)
    get(tracker, f"projects/tracker/{world.project.slug}/events/{uuid.uuid4().hex}/", 404)
    get(tracker, f"projects/tracker/{world.project.slug}/events/not-an-id/", 404)
    bad(tracker, f"projects/tracker/{world.project.slug}/events/", cursor="nope")


# -- lookups and identity ----------------------------------------------------------------------------

def test_short_id_and_event_id_lookups(tracker: TrackerServer, world: World) -> None:
    found = get(tracker, f"organizations/tracker/shortids/{world.charge['shortId'].lower()}/")
    assert set(found) == {"organizationSlug", "projectSlug", "groupId", "shortId", "group"}
    assert (found["organizationSlug"], found["projectSlug"], found["groupId"], found["shortId"]) == \
        ("tracker", world.project.slug, world.charge["id"], world.charge["shortId"])
    assert BASE_ISSUE_KEYS <= set(found["group"])
    get(tracker, "organizations/tracker/shortids/NOPE-1/", 404)
    get(tracker, "organizations/other/shortids/NOPE-1/", 404)
    found = get(tracker, f"organizations/tracker/eventids/{str(uuid.UUID(world.library_event))}/")
    assert set(found) == {"organizationSlug", "projectSlug", "groupId", "eventId", "event"}
    assert (found["projectSlug"], found["groupId"], found["eventId"]) == \
        (world.project.slug, world.library["id"], world.library_event)
    assert EVENT_KEYS <= set(found["event"])
    get(tracker, f"organizations/tracker/eventids/{uuid.uuid4().hex}/", 404)
    get(tracker, "organizations/tracker/eventids/zzz/", 404)


def user_token(tracker: TrackerServer) -> str:
    """A token the admin makes signed in (Settings): it belongs to them."""
    page = tracker.form("/settings/", {"token": "mcp", "scope": "read"}).text
    return re.search(r"\b([0-9a-f]{64})\b", page)[1]


def test_auth_is_the_tokens_person(tracker: TrackerServer) -> None:
    r = tracker.api("GET", "auth/", token=user_token(tracker))
    assert r.status_code == 200, r.text
    me = r.json()
    assert (me["name"], me["username"], me["isActive"], me["hasPasswordAuth"]) == ("admin", "admin", True, True)
    assert re.fullmatch(r"\d+", me["id"]) and ISO.fullmatch(me["dateJoined"]) and me["email"] == ""
    root = tracker.api("GET", "", token=user_token(tracker)).json()
    assert root["user"] == {"id": me["id"], "name": "admin", "username": "admin", "email": ""}
    nobody = tracker.api("GET", "auth/")  # `tracker token create` makes a token no person owns
    assert nobody.status_code == 400 and nobody.json()["detail"]
    assert tracker.api("GET", "auth/", token="0" * 64).status_code == 401


def test_members_and_teams(tracker: TrackerServer) -> None:
    r = tracker.api("GET", "organizations/tracker/members/")
    assert r.status_code == 200 and links(r)["next"][1] is False
    admin = next(m for m in r.json() if m["name"] == "admin")
    assert (admin["orgRole"], admin["role"], admin["pending"], admin["inviteStatus"]) == ("owner", "owner", False,
                                                                                           "approved")
    assert admin["user"]["name"] == "admin" and admin["teams"] == [] and ISO.fullmatch(admin["dateCreated"])
    assert get(tracker, "organizations/tracker/teams/") == []
    get(tracker, "organizations/other/members/", 404)


def test_organization_date_created_is_the_databases(tracker: TrackerServer) -> None:
    org = get(tracker, "organizations/tracker/")
    created = dt.datetime.fromisoformat(org["dateCreated"].replace("Z", "+00:00"))
    assert abs((dt.datetime.now(dt.timezone.utc) - created).total_seconds()) < 3600
    assert org["links"] == {"organizationUrl": tracker.url, "regionUrl": ""}


# -- Discover: the organization's events -----------------------------------------------------------

def test_org_events_aggregates(tracker: TrackerServer, world: World) -> None:
    r = tracker.api("GET", "organizations/tracker/events/", params={
        "field": ["title", "project", "issue", "count()", "count_unique(user)", "last_seen()"], "sort": "-count()",
        "statsPeriod": "24h", "project": world.project.id, "per_page": 50})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["meta"]["fields"] == {"title": "string", "project": "string", "issue": "string", "count()": "integer",
                                      "count_unique(user)": "integer", "last_seen()": "date"}
    first, second = body["data"]
    assert (first["title"], first["project"], first["issue"]) == (world.charge["title"], world.project.slug,
                                                                 world.charge["shortId"])
    assert (first["count()"], first["count_unique(user)"]) == (3, 2) and first["last_seen()"] == world.charge["lastSeen"]
    assert (second["count()"], second["issue"]) == (1, world.library["shortId"])
    assert links(r)["next"][1] is False


def test_org_events_rows_tags_and_query(tracker: TrackerServer, world: World) -> None:
    rows = get(tracker, "organizations/tracker/events/", field=["title", "level", "user.email", "tags[zone]", "timestamp",
                                                                "environment", "release"],
               query="level:warning", project=str(world.project.id), sort="-timestamp")["data"]
    assert rows == [{"id": world.library_event, "title": world.library["title"], "level": "warning",
                     "user.email": "ops@example.org", "tags[zone]": "eu-1", "environment": "staging", "release": None,
                     "timestamp": world.library["lastSeen"]}]
    by_user = get(tracker, "organizations/tracker/events/", field=["user.id", "count()"], sort="user.id",
                  query=f"issue:{world.charge['shortId']}")["data"]
    assert by_user == [{"user.id": "u1", "count()": 1}, {"user.id": "u2", "count()": 2}]


@pytest.mark.parametrize("params", [
    {}, {"field": "median(x)"}, {"field": "nonsense field"}, {"field": "title", "sort": "-count()"},
    {"field": "title", "query": "is:unresolved"}, {"field": "title", "statsPeriod": "often"},
    {"field": "title", "dataset": "spans"}, {"field": "title", "per_page": "many"}, {"field": ["title"] * 21}])
def test_org_events_bad_parameters_are_400(tracker: TrackerServer, params: dict[str, Any]) -> None:
    bad(tracker, "organizations/tracker/events/", **params)
