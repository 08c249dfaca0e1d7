"""Cron monitors: the real sentry-sdk's `@monitor` and `capture_checkin`, the cron HTTP endpoint as curl
uses it, missed and timed-out runs judged on time, the monitor's issue through the alert rules to a
webhook, the monitors page in Chromium; and the crontab's "next run after t" checked with hypothesis
against a minute-by-minute walk of the clock, daylight-saving changes included.

The module's tracker runs with `[crons] minute = 1`: margins, max runtimes and interval schedules
count seconds instead of minutes, so a missed check-in takes seconds to show, not minutes."""
from __future__ import annotations

import datetime as dt
import functools
import re
import time
import uuid
import zoneinfo
from pathlib import Path
from typing import Any, Iterator

import httpx
import pytest
import sentry_sdk
import tracker
from hypothesis import example, given, settings, strategies as st
from sentry_sdk.crons import capture_checkin

from conftest import Configure, Project, TrackerServer, wait_for
from receivers import WebhookReceiver

LIMITED = "c" * 32
CONFIG = f"""
[crons]
interval = 0.5
minute = 1

[alerts]
retry_delays = [0, 0.3, 0.6]
poll = 0.1
timeout = 2
refresh = 1

[[projects]]
name = "cron-limited"
slug = "cron-limited"
dsn_key = "{LIMITED}"
rate_limit = 1
"""
UTC = dt.timezone.utc
DAILY = {"schedule": {"type": "crontab", "value": "0 4 * * *"}, "max_runtime": 600}  # nothing due during a test


@pytest.fixture(scope="module")
def server(configured: Configure) -> TrackerServer:
    return configured("crons", CONFIG)


@pytest.fixture
def hook(server: TrackerServer, webhook: WebhookReceiver) -> Iterator[WebhookReceiver]:
    """The strict webhook receiver as an alert channel of the module's tracker, for one test."""
    r = server.api("POST", "organizations/tracker/channels/",
                   json={"name": f"hook-{uuid.uuid4().hex[:6]}", "kind": "webhook",
                         "config": {"url": webhook.hook_url, "secret": webhook.secret, "allow_private": True}})
    assert r.status_code == 201, r.text
    yield webhook
    server.api("DELETE", f"organizations/tracker/channels/{r.json()['id']}/")


def get(server: TrackerServer, path: str, **params: Any) -> Any:
    r = server.api("GET", path, params=params)
    assert r.status_code == 200, r.text
    return r.json()


def monitor(server: TrackerServer, project: Project, slug: str) -> dict[str, Any]:
    [found] = [m for m in get(server, "organizations/tracker/monitors/", project=project.slug) if m["slug"] == slug]
    return found


def checkins(server: TrackerServer, project: Project, slug: str) -> list[dict[str, Any]]:
    """The monitor's check-ins, newest first."""
    return get(server, f"organizations/tracker/monitors/{slug}/checkins/", project=project.slug)


def statuses(server: TrackerServer, project: Project, slug: str) -> list[str]:
    r = server.api("GET", f"organizations/tracker/monitors/{slug}/checkins/", params={"project": project.slug})
    return [c["status"] for c in r.json()] if r.status_code == 200 else []


def cron_url(server: TrackerServer, project: Project, slug: str, key: str | None = None) -> str:
    return f"{server.url}/api/{project.id}/cron/{slug}/{key or project.key}/"


def check_in(server: TrackerServer, project: Project, slug: str, **fields: Any) -> str:
    """POST a check-in to the HTTP endpoint; the check-in id it was given."""
    r = httpx.post(cron_url(server, project, slug), json=fields, timeout=10)
    assert r.status_code == 202, r.text
    return r.json()["id"]


def envelope_outcomes(server: TrackerServer, project: Project) -> str:
    return server.web.get(f"/projects/{project.slug}/envelopes/", timeout=10).text


def issue_titled(server: TrackerServer, project: Project, title: str, query: str = "") -> dict[str, Any] | None:
    return next((i for i in server.issues(project, query) if i["title"] == title), None)


# -- the real SDK ------------------------------------------------------------------------------------

def test_monitor_decorator_reports_in_progress_then_ok_or_error(server: TrackerServer, sdk: Any) -> None:
    project = server.create_project()
    sdk(project.dsn, environment="prod", release="jobs@1.4.0")
    weekly = {"schedule": {"type": "interval", "value": 1, "unit": "week"}, "checkin_margin": 5, "max_runtime": 600,
              "timezone": "Europe/Vienna"}
    running: list[list[str]] = []

    @sentry_sdk.monitor(monitor_slug="nightly-report", monitor_config=weekly)
    def report() -> None:
        sentry_sdk.flush()  # the in_progress check-in is on the server while the job runs
        running.append(wait_for(lambda: statuses(server, project, "nightly-report")))
        time.sleep(0.3)

    @sentry_sdk.monitor(monitor_slug="billing-sync",
                        monitor_config={**weekly, "schedule": {"type": "crontab", "value": "0 3 * * MON-FRI"}})
    def sync() -> None:
        raise ConnectionError("the bank did not answer")

    report()
    with pytest.raises(ConnectionError):
        sync()
    sentry_sdk.flush()
    assert running == [["in_progress"]]
    [ok] = wait_for(lambda: [c for c in checkins(server, project, "nightly-report") if c["status"] == "ok"])
    assert len(checkins(server, project, "nightly-report")) == 1  # the run's two check-ins are one
    assert 300 <= ok["duration"] < 5000 and ok["environment"] == "prod"
    [failed] = wait_for(lambda: [c for c in checkins(server, project, "billing-sync") if c["status"] == "error"])
    assert failed["duration"] < 1000

    nightly = monitor(server, project, "nightly-report")
    assert nightly["config"] == {"schedule_type": "interval", "schedule": [1, "week"], "checkin_margin": 5,
                                 "max_runtime": 600, "timezone": "Europe/Vienna", "failure_issue_threshold": 1,
                                 "recovery_threshold": 1}
    assert [(e["name"], e["status"]) for e in nightly["environments"]] == [("prod", "ok")]
    billing = monitor(server, project, "billing-sync")
    assert billing["config"]["schedule"] == "0 3 * * MON-FRI"
    [env] = billing["environments"]
    assert env["status"] == "error"
    due = dt.datetime.fromisoformat(env["nextCheckIn"]).astimezone(zoneinfo.ZoneInfo("Europe/Vienna"))
    assert (due.hour, due.minute, due.weekday() < 5) == (3, 0, True)  # 03:00 on a weekday, Vienna time

    issue = wait_for(lambda: issue_titled(server, project, "Cron failure: billing-sync (check-in error)"))
    assert issue["level"] == "error" and issue["count"] == "1"
    event = server.latest_event(issue["id"])
    tags = {t["key"]: t["value"] for t in event["tags"]}
    assert (tags["monitor.slug"], tags["environment"], tags["release"]) == ("billing-sync", "prod", "jobs@1.4.0")
    assert issue_titled(server, project, "Cron failure: nightly-report (check-in error)") is None


def test_capture_checkin_directly_and_what_the_envelope_log_says(server: TrackerServer, sdk: Any) -> None:
    project = server.create_project()
    sdk(project.dsn)
    started = capture_checkin(monitor_slug="Import Users", status="in_progress", monitor_config=DAILY)
    assert started
    capture_checkin(monitor_slug="Import Users", check_in_id=started, status="ok", duration=1.5)
    capture_checkin(monitor_slug="never-configured", status="ok")
    capture_checkin(monitor_slug="bad-schedule", status="ok",
                    monitor_config={"schedule": {"type": "crontab", "value": "0 0 30 2 *"}})
    sentry_sdk.flush()
    [done] = wait_for(lambda: [c for c in checkins(server, project, "import-users") if c["status"] == "ok"])
    assert done["id"] == str(uuid.UUID(started)) and done["duration"] == 1500  # the slug is Sentry's slugified form
    wait_for(lambda: "dropped: unknown monitor; send monitor_config" in envelope_outcomes(server, project))
    assert "never runs: no month has that day" in envelope_outcomes(server, project)
    assert [m["slug"] for m in get(server, "organizations/tracker/monitors/", project=project.slug)] == \
        ["import-users"]


def test_a_run_past_its_max_runtime_times_out(server: TrackerServer, sdk: Any) -> None:
    project = server.create_project()
    sdk(project.dsn)
    started = capture_checkin(monitor_slug="slow-export", status="in_progress",
                              monitor_config={**DAILY, "max_runtime": 1})
    sentry_sdk.flush()
    wait_for(lambda: statuses(server, project, "slow-export") == ["timeout"])
    assert monitor(server, project, "slow-export")["environments"][0]["status"] == "timeout"
    wait_for(lambda: issue_titled(server, project, "Cron failure: slow-export (check-in timeout)"))
    capture_checkin(monitor_slug="slow-export", check_in_id=started, status="ok", duration=30)  # too late
    sentry_sdk.flush()
    wait_for(lambda: "is finished already (timeout)" in envelope_outcomes(server, project))
    assert statuses(server, project, "slow-export") == ["timeout"]


# -- the HTTP endpoint --------------------------------------------------------------------------------

def test_http_endpoint_like_curl(server: TrackerServer) -> None:
    project, other = server.create_project(), server.create_project()
    weekly = {"schedule": {"type": "interval", "value": 1, "unit": "week"}}
    started = check_in(server, project, "db-backup", status="in_progress", environment="batch", monitor_config=weekly)
    r = httpx.get(cron_url(server, project, "db-backup"), params={"status": "ok", "check_in_id": started,
                                                                  "duration": "2.5"}, timeout=10)
    assert (r.status_code, r.json()) == (202, {"id": started})
    assert r.headers["access-control-allow-origin"] == "*"
    r = httpx.get(cron_url(server, project, "db-backup").rstrip("/"), params={"status": "error"}, timeout=10)
    assert r.status_code == 202 and r.json()["id"] != started
    r = httpx.get(f"{server.url}/api/{project.id}/cron/db-backup/", timeout=10,
                  params={"status": "in_progress", "sentry_key": project.key})  # the key in the query instead
    assert r.status_code == 202
    nil = "00000000-0000-0000-0000-000000000000"  # "the latest in-progress check-in"
    r = httpx.get(cron_url(server, project, "db-backup"), params={"status": "ok", "check_in_id": nil}, timeout=10)
    assert r.status_code == 202
    rows = checkins(server, project, "db-backup")
    assert [(c["status"], c["duration"], c["environment"]) for c in rows][1:] == \
        [("error", None, "production"), ("ok", 2500, "batch")]
    assert rows[0]["status"] == "ok" and rows[0]["id"] == r.json()["id"] and rows[0]["duration"] < 5000

    def status_of(url: str, **params: str) -> tuple[int, str]:
        answer = httpx.get(url, params=params, timeout=10)
        return answer.status_code, answer.json().get("detail", "")
    assert status_of(cron_url(server, project, "db-backup", uuid.uuid4().hex), status="ok")[0] == 403
    assert status_of(cron_url(server, project, "db-backup", other.key), status="ok")[0] == 403
    assert status_of(cron_url(server, project, "db-backup", "not-a-key"), status="ok")[0] == 401
    assert status_of(cron_url(server, project, "db-backup"), status="done") == \
        (400, "invalid check-in: status must be in_progress, ok or error, not 'done'")
    assert status_of(cron_url(server, project, "no-such-job"), status="ok") == \
        (404, "dropped: unknown monitor; send monitor_config")
    r = httpx.post(cron_url(server, project, "typo"), timeout=10,
                   json={"status": "ok", "monitor_config": {"schedule": {"type": "crontab", "value": "0 25 * * *"}}})
    assert r.status_code == 400 and "hour: '25' is not a range within 0-23" in r.json()["detail"]
    r = httpx.post(cron_url(server, project, "typo"), timeout=10, json={"status": "ok", "monitor_config": {
        "schedule": {"type": "interval", "value": 1, "unit": "fortnight"}}})
    assert r.status_code == 400 and "minute, hour, day, week, month or year" in r.json()["detail"]
    r = httpx.post(cron_url(server, project, "typo"), timeout=10, json={"status": "ok", "monitor_config": {
        **weekly, "timezone": "Mars/Olympus_Mons"}})
    assert r.status_code == 400 and "not a tz database name" in r.json()["detail"]
    assert httpx.options(cron_url(server, project, "db-backup"), timeout=10).status_code == 200

    r = server.api("PUT", f"projects/tracker/{project.slug}/keys/{project.key}/", json={"isActive": False})
    assert r.status_code == 200
    assert status_of(cron_url(server, project, "db-backup"), status="ok")[0] == 403


def test_check_ins_are_never_rate_limited(server: TrackerServer) -> None:
    project = server.config_project("cron-limited", LIMITED)
    codes = [server.send_envelope(project, {"message": f"flood {n}"}).status_code for n in range(3)]
    assert 429 in codes  # one event a minute
    check = {"monitor_slug": "ticker", "status": "ok", "monitor_config": DAILY}
    assert server.send_envelope(project, ({"type": "check_in"}, check)).status_code == 200
    assert check_in(server, project, "ticker", status="ok")
    wait_for(lambda: statuses(server, project, "ticker") == ["ok", "ok"])


# -- on time: missed, timeouts, the monitor's issue and its alerts ------------------------------------

def test_missed_check_in_opens_an_issue_that_alerts_and_an_ok_resolves_it(server: TrackerServer,
                                                                          hook: WebhookReceiver) -> None:
    project = server.create_project()
    config = {"schedule": {"type": "interval", "value": 4, "unit": "minute"}, "checkin_margin": 1}  # 4 s, 1 s
    first = time.time()
    check_in(server, project, "report-mailer", status="ok", monitor_config=config)
    wait_for(lambda: statuses(server, project, "report-mailer") == ["missed", "ok"], timeout=15)
    missed = checkins(server, project, "report-mailer")[0]
    assert missed["duration"] is None
    assert abs(dt.datetime.fromisoformat(missed["expectedTime"]).timestamp() - (first + 4)) < 1
    assert monitor(server, project, "report-mailer")["environments"][0]["status"] == "missed_checkin"
    issue = wait_for(lambda: issue_titled(server, project, "Cron failure: report-mailer (missed check-in)"))

    def alerts(resource: str) -> list[dict[str, Any]]:
        """What the webhook got about this issue: `event_alert` (it fired) or `issue` (it resolved)."""
        with hook.lock:
            bodies = [d["body"] for d in hook.deliveries.values() if d["resource"] == resource]
        return [b for b in bodies if (b["data"]["event"]["issue_id"] if "event" in b["data"]
                                      else b["data"]["issue"]["id"]) == issue["id"]]
    [alert] = wait_for(lambda: alerts("event_alert"))
    assert alert["data"]["triggered_rule"] == "New issues and regressions: all channels"
    assert alert["data"]["event"]["title"] == "Cron failure: report-mailer (missed check-in)"

    check_in(server, project, "report-mailer", status="ok")  # the job is back: the issue resolves
    assert get(server, f"issues/{issue['id']}/")["status"] == "resolved"
    wait_for(lambda: [b["action"] for b in alerts("issue")] == ["resolved"])
    assert monitor(server, project, "report-mailer")["environments"][0]["status"] == "ok"

    wait_for(lambda: get(server, f"issues/{issue['id']}/")["status"] == "unresolved", timeout=15)  # missed again
    wait_for(lambda: len(alerts("event_alert")) == 2)  # a regression is news again
    assert hook.rejected == []


def test_failure_and_recovery_thresholds(server: TrackerServer) -> None:
    project = server.create_project()
    config = {**DAILY, "failure_issue_threshold": 2, "recovery_threshold": 2}
    title = "Cron failure: flaky-sync (check-in error)"
    check_in(server, project, "flaky-sync", status="error", monitor_config=config)
    time.sleep(0.3)
    assert server.issues(project, "is:unresolved") == []  # one failure is not yet an issue
    check_in(server, project, "flaky-sync", status="error")
    issue = wait_for(lambda: issue_titled(server, project, title))
    assert issue["count"] == "1"
    check_in(server, project, "flaky-sync", status="ok")
    assert get(server, f"issues/{issue['id']}/")["status"] == "unresolved"  # one ok is not yet recovery
    check_in(server, project, "flaky-sync", status="error")  # an open issue takes every failure
    assert get(server, f"issues/{issue['id']}/")["count"] == "2"
    check_in(server, project, "flaky-sync", status="ok")
    check_in(server, project, "flaky-sync", status="ok")
    assert get(server, f"issues/{issue['id']}/")["status"] == "resolved"


def test_monitors_api(server: TrackerServer) -> None:
    project, other = server.create_project(), server.create_project()
    for n in range(3):
        check_in(server, project, "paged", status="ok", environment=f"env-{n % 2}", monitor_config=DAILY)
    check_in(server, other, "paged", status="error", monitor_config=DAILY)
    assert sorted(m["project"]["slug"] for m in get(server, "organizations/tracker/monitors/")
                  if m["slug"] == "paged") == sorted([project.slug, other.slug])
    mine = monitor(server, project, "paged")
    assert (mine["name"], mine["status"], mine["type"]) == ("paged", "active", "cron_job")
    assert [e["name"] for e in mine["environments"]] == ["env-0", "env-1"]
    assert mine["dateCreated"].endswith("Z")
    r = server.api("GET", "organizations/tracker/monitors/paged/checkins/", params={"project": project.slug, "limit": 2})
    assert r.status_code == 200 and len(r.json()) == 2 and 'rel="next"; results="true"' in r.headers["link"]
    assert {c["environment"] for c in get(server, "organizations/tracker/monitors/paged/checkins/",
                                          project=project.slug, environment="env-1")} == {"env-1"}
    assert [c["status"] for c in checkins(server, other, "paged")] == ["error"]
    assert get(server, "organizations/tracker/monitors/paged/", project=other.slug)["project"]["slug"] == other.slug
    assert server.api("GET", "organizations/tracker/monitors/no-such/").status_code == 404
    assert server.api("GET", "organizations/elsewhere/monitors/").status_code == 404
    assert httpx.get(f"{server.url}/api/0/organizations/tracker/monitors/", timeout=10).status_code == 401


# -- the monitors page --------------------------------------------------------------------------------

def test_monitors_page_in_the_browser(server: TrackerServer, browser: Any, tmp_path: Path) -> None:
    project = server.create_project()
    hostile = "<img src=x onerror=alert(1)>"
    vienna = {"schedule": {"type": "crontab", "value": "30 2 * * *"}, "timezone": "Europe/Vienna"}
    for _ in range(12):
        check_in(server, project, "db-backup", status="ok", duration=42.5, monitor_config=vienna)
    check_in(server, project, "db-backup", status="ok", environment=hostile)
    for status in ("ok", "ok", "error", "ok", "error"):
        check_in(server, project, "invoice-run", status=status,
                 monitor_config={"schedule": {"type": "crontab", "value": "0 9 * * MON-FRI"}})
    check_in(server, project, "cache-warm", status="in_progress",
             monitor_config={"schedule": {"type": "crontab", "value": "15 3 * * MON"}, "max_runtime": 600})
    check_in(server, project, "report-mailer", status="ok",
             monitor_config={"schedule": {"type": "interval", "value": 3, "unit": "minute"}})
    check_in(server, project, "slow-export", status="in_progress", monitor_config={**DAILY, "max_runtime": 1})
    wait_for(lambda: "missed" in statuses(server, project, "report-mailer")
             and statuses(server, project, "slow-export") == ["timeout"], timeout=15)

    context = server.browser_context(browser, viewport={"width": 1400, "height": 800})
    page = context.new_page()
    dialogs: list[str] = []
    page.on("dialog", lambda d: (dialogs.append(d.message), d.dismiss()))
    try:
        page.goto(f"{server.url}/projects/")
        page.click(f"a[href='/monitors/?project={project.slug}']")
        page.wait_for_selector("table.monitors")
        rows = page.locator("table.monitors tbody tr")
        assert rows.count() == 5
        badges = {rows.nth(i).locator("td b.mono").inner_text(): rows.nth(i).locator("span.mon").inner_text()
                  for i in range(5)}
        assert badges == {"cache-warm": "in progress", "db-backup": "ok", "invoice-run": "error",
                          "report-mailer": "missed", "slow-export": "timeout"}
        for i in range(5):
            assert rows.nth(i).locator(".ticks span").count() == 30
        backup = page.locator("tr", has=page.locator("b.mono", has_text="db-backup"))
        assert "at 02:30" in backup.inner_text() and "Europe/Vienna" in backup.inner_text()
        assert hostile in backup.inner_text()  # shown as text, never run
        assert backup.locator(".ticks span.mon-ok").count() == 13
        assert "42.50 s" in backup.locator(".ticks span.mon-ok").first.get_attribute("title")
        invoice = page.locator("tr", has=page.locator("b.mono", has_text="invoice-run"))
        assert "at 09:00 on Mon, Tue, Wed, Thu, Fri" in invoice.inner_text()
        page.locator("a[href='/monitors/']").first.wait_for()  # the top navigation links here
        page.screenshot(path=str(tmp_path / "monitors.png"), full_page=True)
        print(f"screenshot: {tmp_path / 'monitors.png'}")
        invoice.locator("a.monitor-issue").click()
        page.wait_for_selector("h1")
        assert "Cron failure: invoice-run (check-in error)" in page.locator("h1").inner_text()
        assert dialogs == []
    finally:
        context.close()
    html = server.web.get("/monitors/", timeout=10).text
    assert "<img src=x" not in html and "&lt;img src=x onerror=alert(1)&gt;" in html


# -- the crontab: parsing, and "next run after t" under hypothesis ------------------------------------

ZONES = ("UTC", "Europe/Vienna", "America/New_York", "Australia/Lord_Howe", "Asia/Kathmandu", "America/Sao_Paulo",
         "Pacific/Apia", "America/St_Johns", "Europe/Dublin")
FIELDS = (("minute", 0, 59, ()), ("hour", 0, 23, ()), ("day", 1, 31, ()),
          ("month", 1, 12, ("JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT", "NOV", "DEC")),
          ("weekday", 0, 7, ("SUN", "MON", "TUE", "WED", "THU", "FRI", "SAT")))
START, END = dt.datetime(2000, 1, 1, tzinfo=UTC).timestamp(), dt.datetime(2040, 1, 1, tzinfo=UTC).timestamp()


@functools.lru_cache(maxsize=None)
def transitions(zone: str) -> tuple[float, ...]:
    """When the zone's clocks changed between 2000 and 2040 (found day by day, then bisected)."""
    tz, found, day = zoneinfo.ZoneInfo(zone), [], START
    while day < END:
        if tz.utcoffset(dt.datetime.fromtimestamp(day, UTC)) != tz.utcoffset(dt.datetime.fromtimestamp(day + 86400, UTC)):
            low, high = day, day + 86400
            while high - low > 1:
                mid = (low + high) // 2
                low, high = (mid, high) if tz.utcoffset(dt.datetime.fromtimestamp(mid, UTC)) == \
                    tz.utcoffset(dt.datetime.fromtimestamp(low, UTC)) else (low, mid)
            found.append(high)
        day += 86400
    return tuple(found)


@st.composite
def cron_fields(draw: st.DrawFn, low: int, high: int, names: tuple[str, ...], restricted: bool) -> tuple[str, set[int]]:
    """One field as text, with the values it allows worked out here (not by the parser under test)."""
    if not restricted:
        return "*", set(range(low, high + 1))
    parts, allowed = [], set()

    def word(value: int) -> str:
        return names[value - low] if value - low < len(names) and draw(st.booleans()) else str(value)
    for _ in range(draw(st.integers(1, 3))):
        kind = draw(st.sampled_from(("step", "one", "one", "range", "range-step")))
        if kind == "step":
            step = draw(st.integers(1, high))
            parts.append(f"*/{step}")
            allowed |= set(range(low, high + 1, step))
        elif kind == "one":
            value = draw(st.integers(low, high))
            parts.append(word(value))
            allowed.add(value)
        else:
            first = draw(st.integers(low, high))
            last = draw(st.integers(first, min(high, first + 20)))
            step = draw(st.integers(1, 6)) if kind == "range-step" else 1
            parts.append(f"{word(first)}-{word(last)}" + (f"/{step}" if kind == "range-step" else ""))
            allowed |= set(range(first, last + 1, step))
    return ",".join(parts), allowed


@st.composite
def expressions(draw: st.DrawFn) -> tuple[str, list[set[int]], bool]:
    """(expression, allowed values per field, whether a day matching either day field runs)."""
    chances = (0.8, 0.6, 0.25, 0.2, 0.3)  # how often each field is restricted: mostly dense schedules
    fields = [draw(cron_fields(low, high, names, draw(st.floats(0, 1)) < chance))
              for (_, low, high, names), chance in zip(FIELDS, chances)]
    texts = [t for t, _ in fields]
    allowed = [a for _, a in fields]
    allowed[4] = {d % 7 for d in allowed[4]}
    return " ".join(texts), allowed, not texts[2].startswith("*") and not texts[4].startswith("*")


@st.composite
def moments(draw: st.DrawFn, zone: str) -> float:
    """A time from 2000 to 2040, often within hours of a change of the zone's clocks."""
    near = transitions(zone)
    if near and draw(st.booleans()):
        return draw(st.sampled_from(near)) + draw(st.integers(-4 * 3600, 4 * 3600)) + draw(st.sampled_from((0, 0.5)))
    return draw(st.floats(START, END))


def oracle_matches(wall: dt.datetime, allowed: list[set[int]], either_day: bool) -> bool:
    in_month, in_week = wall.day in allowed[2], (wall.weekday() + 1) % 7 in allowed[4]
    days = in_month or in_week if either_day else in_month and in_week
    return wall.minute in allowed[0] and wall.hour in allowed[1] and wall.month in allowed[3] and days


def wall_of(moment: float, tz: dt.tzinfo) -> dt.datetime:
    return dt.datetime.fromtimestamp(moment, tz).replace(tzinfo=None)


def oracle_next(after: float, tz: dt.tzinfo, allowed: list[set[int]], either_day: bool, steps: int) -> float | None:
    """The first whole minute after `after` whose wall clock matches, walking minute by minute."""
    moment = (after // 60 + 1) * 60
    for _ in range(steps):
        if oracle_matches(wall_of(moment, tz), allowed, either_day):
            return moment
        moment += 60
    return None


def oracle_by_days(after: float, until: float, tz: dt.tzinfo, allowed: list[set[int]], either_day: bool) -> float | None:
    """The first matching moment in (after, until], found over the matching days between them."""
    day, last, best = wall_of(after, tz).date() - dt.timedelta(days=1), wall_of(until, tz).date() + dt.timedelta(days=1), None
    while day <= last and best is None:
        if oracle_matches(dt.datetime(day.year, day.month, day.day, min(allowed[1]), min(allowed[0])), allowed, either_day):
            for hour in sorted(allowed[1]):
                for minute in sorted(allowed[0]):
                    wall = dt.datetime(day.year, day.month, day.day, hour, minute)
                    for fold in (0, 1):
                        aware = wall.replace(tzinfo=tz, fold=fold)
                        if wall_of(aware.timestamp(), tz) == wall and after < aware.timestamp() <= until:
                            best = aware.timestamp() if best is None else min(best, aware.timestamp())
        day += dt.timedelta(days=1)
    return best


@settings(max_examples=400, deadline=None)
@given(st.sampled_from(ZONES).flatmap(lambda zone: st.tuples(st.just(zone), moments(zone))), expressions())
@example(("Europe/Vienna", dt.datetime(2024, 3, 31, 0, 10, tzinfo=UTC).timestamp()),
         ("30 2 * * *", [{30}, {2}, set(range(1, 32)), set(range(1, 13)), set(range(7))], False))
@example(("America/New_York", dt.datetime(2024, 11, 3, 5, 45, tzinfo=UTC).timestamp()),
         ("30 1 * * *", [{30}, {1}, set(range(1, 32)), set(range(1, 13)), set(range(7))], False))
def test_next_run_is_the_first_matching_minute_after_t(when: tuple[str, float],
                                                        expression: tuple[str, list[set[int]], bool]) -> None:
    (zone, after), (text, allowed, either_day) = when, expression
    tz = zoneinfo.ZoneInfo(zone)
    try:
        cron = tracker.crontab(text)
    except tracker.CronError:  # refused only when no day of any month can match, ever
        assert oracle_by_days(START, START + 30 * 366 * 86400, dt.timezone.utc, allowed, either_day) is None
        return
    found = cron.next_after(after, tz)
    assert found is not None and found > after
    assert found % 60 == 0 and oracle_matches(wall_of(found, tz), allowed, either_day)
    assert cron.matches(wall_of(found, tz))
    walked = oracle_next(after, tz, allowed, either_day, steps=3 * 1440)
    if walked is not None:
        assert found == walked  # nothing matched between `after` and it, minute by minute
    else:
        assert found > after + 3 * 86400 - 60
        assert oracle_by_days(after, found, tz, allowed, either_day) == found


def test_daylight_saving_changes() -> None:
    vienna = zoneinfo.ZoneInfo("Europe/Vienna")
    at = tracker.crontab("30 2 * * *")

    def local(moment: float | None) -> str:
        assert moment is not None
        return dt.datetime.fromtimestamp(moment, vienna).isoformat()
    # 31 March 2024: the clocks go from 02:00 to 03:00; 02:30 does not happen that day
    assert local(at.next_after(dt.datetime(2024, 3, 30, 23, tzinfo=UTC).timestamp(), vienna)) == "2024-04-01T02:30:00+02:00"
    # 27 October 2024: 02:00–03:00 happens twice, and so does 02:30
    first = at.next_after(dt.datetime(2024, 10, 26, 23, tzinfo=UTC).timestamp(), vienna)
    assert local(first) == "2024-10-27T02:30:00+02:00"
    assert local(at.next_after(first, vienna)) == "2024-10-27T02:30:00+01:00"
    every = tracker.crontab("*/20 * * * *")  # a frequent job just runs on through both changes
    assert at.next_after(0, dt.timezone.utc) == 2 * 3600 + 30 * 60
    assert every.next_after(dt.datetime(2024, 3, 31, 0, 50, tzinfo=UTC).timestamp(), vienna) == \
        dt.datetime(2024, 3, 31, 1, 0, tzinfo=UTC).timestamp()  # 01:59 CET is followed by 03:00 CEST


@pytest.mark.parametrize(("expression", "after", "expected"), [
    ("0 9 * * MON-FRI", "2024-06-01T12:00", "2024-06-03T09:00"),  # a Saturday: next Monday
    ("0 9 * * 1-5", "2024-06-03T09:00", "2024-06-04T09:00"),  # strictly after
    ("*/15 * * * *", "2024-06-01T12:07:30", "2024-06-01T12:15"),
    ("0 0 29 FEB *", "2024-03-01T00:00", "2028-02-29T00:00"),
    ("0 0 1,15 * SUN", "2024-06-03T00:00", "2024-06-09T00:00"),  # both day fields: either one (a Sunday)
    ("0 0 */10 * SUN", "2024-06-03T00:00", "2024-07-21T00:00"),  # a day field with `*`: both must hold
    ("0 12 * * 7", "2024-06-03T00:00", "2024-06-09T12:00"),  # 7 is Sunday too
    ("@monthly", "2024-06-03T00:00", "2024-07-01T00:00"),
    ("@hourly", "2024-06-03T10:59:59", "2024-06-03T11:00"),
    ("5-10/5 4 * JAN-MAR,dec *", "2024-04-01T00:00", "2024-12-01T04:05"),
])
def test_crontab_examples(expression: str, after: str, expected: str) -> None:
    found = tracker.crontab(expression).next_after(dt.datetime.fromisoformat(after).replace(tzinfo=UTC).timestamp(),
                                                   dt.timezone.utc)
    assert found == dt.datetime.fromisoformat(expected).replace(tzinfo=UTC).timestamp()


@pytest.mark.parametrize(("expression", "complaint"), [
    ("* * * *", "has 4 fields"), ("60 * * * *", "minute: '60'"), ("* * * * MON-", "day of week: ''"),
    ("*/0 * * * *", "a step of at least 1"), ("10-5 * * * *", "minute: '10-5'"), ("0 0 31 4,6,9,11 *", "never runs"),
    ("0 0 * FOO *", "month: 'FOO' is not a number or one of JAN"),
])
def test_crontab_mistakes_are_explained(expression: str, complaint: str) -> None:
    with pytest.raises(tracker.CronError, match=re.escape(complaint)):
        tracker.Crontab.parse(expression)


def test_intervals_and_schedule_words() -> None:
    start = dt.datetime(2024, 1, 31, 10, tzinfo=UTC).timestamp()
    assert tracker.interval_after(start, 2, "hour", start, UTC, 60) == start + 7200
    assert tracker.interval_after(start, 2, "hour", start + 7200 * 3 + 1, UTC, 60) == start + 7200 * 4
    assert tracker.interval_after(start, 3, "minute", start, UTC, 1) == start + 3  # `[crons] minute = 1`
    month = tracker.interval_after(start, 1, "month", start, UTC, 60)  # 31 January + a month: 29 February
    assert dt.datetime.fromtimestamp(month, UTC) == dt.datetime(2024, 2, 29, 10, tzinfo=UTC)
    year = tracker.interval_after(start, 1, "year", start + 86400 * 400, UTC, 60)
    assert dt.datetime.fromtimestamp(year, UTC) == dt.datetime(2026, 1, 31, 10, tzinfo=UTC)
    words = {("crontab", "* * * * *"): "every minute", ("crontab", "*/5 * * * *"): "every 5 minutes",
             ("crontab", "15 * * * *"): "every hour at minute 15", ("crontab", "@daily"): "at 00:00",
             ("crontab", "30 8,18 * * SAT,SUN"): "at 08:30, 18:30 on Sun, Sat",
             ("crontab", "0 6 1 */3 *"): "at 06:00 on day 1 of the month in Jan, Apr, Jul, Oct",
             ("crontab", "1,2,3 4,5 * * *"): "1,2,3 4,5 * * *",
             ("interval", '[1, "hour"]'): "every hour", ("interval", '[10, "minute"]'): "every 10 minutes"}
    assert {key: tracker.schedule_words(*key) for key in words} == words


def test_check_in_payloads_are_checked() -> None:
    parse = functools.partial(tracker.parse_check_in, received=0.0)
    ok = parse({"monitor_slug": " Nightly Report! ", "status": "ok", "duration": "1.5", "check_in_id": str(uuid.UUID(int=7)),
                "contexts": {"trace": {"trace_id": "ab" * 16}}})
    assert (ok.slug, ok.duration, ok.check_in_id, ok.environment, ok.trace_id) == \
        ("nightly-report", 1.5, f"{7:032x}", "production", "ab" * 16)
    for payload, complaint in [({"status": "ok"}, "monitor_slug is required"),
                               ({"monitor_slug": "x", "status": "missed"}, "status must be"),
                               ({"monitor_slug": "x", "status": "ok", "check_in_id": "nope"}, "check_in_id must be a UUID"),
                               ({"monitor_slug": "x", "status": "ok", "duration": -1}, "duration must be"),
                               ({"monitor_slug": "x", "status": "ok", "duration": True}, "duration must be"),
                               ({"monitor_slug": "x", "status": "ok", "monitor_config": []}, "must be an object"),
                               ({"monitor_slug": "x", "status": "ok", "monitor_config": {"schedule": {"type": "crontab",
                                 "value": "@daily"}, "checkin_margin": 0}}, "checkin_margin must be a number from 1")]:
        with pytest.raises(ValueError, match=re.escape(complaint)):
            parse(payload)
