"""Alerts end to end: errors from the real sentry_sdk reach Slack, email (a real SMTP server),
PagerDuty, the real Alertmanager, a signed webhook and Jira, once per issue however many events
come; retries, dead letters and a kill -9 mid-delivery lose nothing and send nothing twice."""
from __future__ import annotations

import json
import logging
import time
import uuid
from pathlib import Path
from typing import Any, Callable, Iterator

import httpx
import pytest
import sentry_sdk

import tracker

from receivers import (Alertmanager, JiraReceiver, PagerDutyReceiver, SlackReceiver, Smtp,
                             WebhookReceiver)
from conftest import Configure, Project, TrackerServer, start_server, stop_server, wait_for

FAST = "[alerts]\nretry_delays = [0, 0.3, 0.6, 1.0]\npoll = 0.1\ntimeout = 1.5\nrefresh = 1\n"
WEBHOOK = "sentry.rules.actions.notify_event_service.NotifyEventServiceAction"


def start(db: Path, tmp: Path) -> TrackerServer:
    config = tmp / "tracker.toml"
    config.write_text(FAST)
    return start_server(db, "--config", str(config))


@pytest.fixture(scope="module")
def server(configured: Configure) -> TrackerServer:
    """A tracker of its own: channels are organisation-wide, and retries here are fast."""
    return configured("alerts", FAST)


class Channels:
    """The channels one test adds, removed again when it ends (they are organisation-wide)."""

    def __init__(self, tracker: TrackerServer) -> None:
        self.tracker, self.ids = tracker, []

    def add(self, kind: str, **config: Any) -> str:
        """A channel to one of the receivers, all on 127.0.0.1: allowed by the channel's allow_private."""
        name = f"{kind}-{uuid.uuid4().hex[:6]}"
        r = self.tracker.api("POST", "organizations/tracker/channels/",
                             json={"name": name, "kind": kind, "config": {**config, "allow_private": True}})
        assert r.status_code == 201, r.text
        self.ids.append(r.json()["id"])
        return name

    def close(self) -> None:
        for channel_id in self.ids:
            self.tracker.api("DELETE", f"organizations/tracker/channels/{channel_id}/")


@pytest.fixture
def channels(server: TrackerServer) -> Iterator[Channels]:
    added = Channels(server)
    yield added
    added.close()


def deliveries(tracker: TrackerServer, **params: str) -> list[dict[str, Any]]:
    return tracker.api("GET", "organizations/tracker/deliveries/", params={"per_page": "100", **params}).json()


def settled(tracker: TrackerServer, issue_id: str, count: int, timeout: float = 15) -> list[dict[str, Any]]:
    """The issue's deliveries once `count` of them have finished (delivered or dead)."""
    def done() -> list[dict[str, Any]] | None:
        rows = deliveries(tracker, issue=issue_id)
        finished = [d for d in rows if d["status"] in ("delivered", "dead")]
        return rows if len(finished) >= count else None
    return wait_for(done, timeout)


def capture_events(project: Project, raise_error: Callable[[], None], **options: Any) -> list[dict[str, Any]]:
    """Run code under the real SDK; the events it sent (kept to replay a storm of the same error)."""
    sent: list[dict[str, Any]] = []

    def keep(event: dict[str, Any], hint: Any) -> dict[str, Any]:
        sent.append(json.loads(json.dumps(event, default=str)))
        return event
    sentry_sdk.init(dsn=project.dsn, before_send=keep, **options)
    try:
        raise_error()
        sentry_sdk.flush()
    finally:
        sentry_sdk.get_client().close()
        sentry_sdk.init()
    return sent


def storm(tracker: TrackerServer, project: Project, event: dict[str, Any], count: int) -> None:
    """The same error `count` more times, posted as the SDK posts them (new ids, happening now)."""
    auth = f"Sentry sentry_version=7, sentry_key={project.key}, sentry_client=storm/1.0"
    with httpx.Client(timeout=10) as client:
        for _ in range(count):
            r = client.post(f"{tracker.url}/api/{project.id}/store/", headers={"X-Sentry-Auth": auth},
                            json={**event, "event_id": uuid.uuid4().hex, "timestamp": time.time()})
            assert r.status_code == 200, r.text


def crash_payments() -> None:
    try:
        raise ConnectionError("payment gateway <down> & unreachable")
    except ConnectionError:
        logging.getLogger("payments").critical("charging the card failed", exc_info=True)


def test_every_channel_once_for_a_storm_then_resolve_and_regress(
        server: TrackerServer, channels: Channels, slack: SlackReceiver, smtp_server: Smtp,
        pagerduty: PagerDutyReceiver, alertmanager: Alertmanager, webhook: WebhookReceiver,
        jira: JiraReceiver) -> None:
    routing_key = uuid.uuid4().hex
    channels.add("slack", url=slack.add_hook())
    channels.add("email", host=smtp_server.host, port=smtp_server.port, security="none", username="alerts",
                 password="secret", to="oncall@example.com", **{"from": "tracker@example.com"})
    channels.add("pagerduty", routing_key=routing_key, url=f"{pagerduty.url}/v2/enqueue")
    channels.add("alertmanager", url=alertmanager.url)
    channels.add("webhook", url=f"{webhook.url}/hook", secret=webhook.secret)
    channels.add("jira", url=jira.url, flavor="cloud", email="bot@example.com", token="jira-token", project="OPS")
    project = server.create_project()
    [event] = capture_events(project, crash_payments, release="payments@2.0.1", environment="prod")
    [issue] = server.wait_issues(project, 1)
    assert issue["level"] == "fatal"
    settled(server, issue["id"], 6)
    storm(server, project, event, 1000)
    server.wait_issues(project, 1001, timeout=60)
    time.sleep(1.0)  # ten dispatcher rounds: anything the storm queued would be out by now
    rows = deliveries(server, issue=issue["id"])
    assert sorted(d["channel"]["kind"] for d in rows) == \
        ["alertmanager", "email", "jira", "pagerduty", "slack", "webhook"]
    assert all(d["status"] == "delivered" and d["attempts"] == 1 for d in rows), rows

    [message] = slack.messages
    assert message["text"] == f"{issue['shortId']}: New issue: {issue['title']}".replace("&", "&amp;") \
        .replace("<", "&lt;").replace(">", "&gt;")
    mrkdwn = [t["text"] for b in message["blocks"] for t in [b.get("text", {}), *b.get("fields", []),
                                                              *b.get("elements", [])] if t.get("type") == "mrkdwn"]
    assert mrkdwn and not any("<down>" in t for t in mrkdwn)  # escaped: event data is never Slack markup
    assert slack.rejected == [] and pagerduty.rejected == [] and webhook.rejected == [] and jira.rejected == []

    [(sender, recipients, mail)] = smtp_server.capture.messages
    assert (sender, recipients) == ("tracker@example.com", ["oncall@example.com"])
    assert mail["Subject"] == f"[{project.slug}] New issue: {issue['title']}"
    assert mail["Auto-Submitted"] == "auto-generated" and mail["Message-ID"] and mail["References"]
    plain, rich = mail.get_body(("plain",)).get_content(), mail.get_body(("html",)).get_content()
    assert f"{server.url}/issues/{issue['id']}/" in plain and "Release: payments@2.0.1" in plain
    assert "&lt;down&gt;" in rich and "<down>" not in rich

    [incident] = pagerduty.incidents
    assert (incident.routing_key, incident.status, incident.triggers) == (routing_key, "triggered", 1)
    assert incident.payloads[0]["severity"] == "critical" and incident.payloads[0]["source"] == project.slug

    def firing() -> list[dict[str, Any]]:
        return [a for a in alertmanager.alerts() if a["labels"].get("issue_id") == issue["id"]]
    [alert] = wait_for(firing)
    assert alert["labels"] == {"alertname": "TrackerIssue", "project": project.slug, "issue_id": issue["id"],
                               "short_id": issue["shortId"], "severity": "fatal"}
    assert alert["annotations"]["summary"] == f"New issue: {issue['title']}"
    assert alert["generatorURL"] == f"{server.url}/issues/{issue['id']}/"

    [delivery] = webhook.deliveries.values()
    assert delivery["resource"] == "event_alert"
    assert delivery["body"]["data"]["event"]["issue_id"] == issue["id"]
    assert delivery["body"]["data"]["triggered_rule"] == "New issues and regressions: all channels"

    [ticket] = jira.issues
    assert ticket["fields"]["labels"] == [f"tracker-tracker-{issue['id']}"] and ticket["fields"]["summary"] == issue["title"]
    page = server.web.get(f"/issues/{issue['id']}/", timeout=10).text
    assert f'href="{jira.url}/browse/OPS-1"' in page

    resolved = server.api("PUT", f"issues/{issue['id']}/", json={"status": "resolved"})
    assert resolved.status_code == 200
    wait_for(lambda: incident.status == "resolved")
    wait_for(lambda: not firing(), timeout=15)
    wait_for(lambda: any(n["status"] == "resolved" and n["alerts"][0]["labels"].get("issue_id") == issue["id"]
                         for n in alertmanager.capture.notifications), timeout=15)
    wait_for(lambda: [d["resource"] for d in webhook.deliveries.values()] == ["event_alert", "issue"])
    assert list(webhook.deliveries.values())[1]["body"]["action"] == "resolved"

    storm(server, project, event, 1)  # it comes back: a regression is news again, on every channel
    wait_for(lambda: len(pagerduty.incidents) == 2 and len(slack.messages) == 2)
    assert pagerduty.incidents[1].status == "triggered" and pagerduty.incidents[1].dedup_key == incident.dedup_key
    assert slack.messages[1]["blocks"][0]["text"]["text"].startswith("Regression: ")
    wait_for(firing)
    assert len(jira.issues) == 1  # one Jira issue per tracker issue, ever


def test_retries_backoff_and_dead_letters(server: TrackerServer, channels: Channels, pagerduty: PagerDutyReceiver,
                                          webhook: WebhookReceiver, smtp_server: Smtp) -> None:
    channels.add("pagerduty", routing_key=uuid.uuid4().hex, url=f"{pagerduty.url}/v2/enqueue")
    channels.add("webhook", url=f"{webhook.url}/hook", secret=webhook.secret)
    channels.add("email", host=smtp_server.host, port=smtp_server.port, security="none", username="alerts",
                 password="secret", to="oncall@example.com", **{"from": "tracker@example.com"})
    pagerduty.script(500, "busy", times=2)
    pagerduty.script(429, "slow down", headers={"Retry-After": "1"})
    webhook.script(400, "we do not want this")
    smtp_server.capture.next_reply = "451 4.3.0 try again later"
    project = server.create_project()
    started = time.monotonic()
    capture_events(project, lambda: sentry_sdk.capture_message("checkout failed", level="error"))
    [issue] = server.wait_issues(project, 1)
    rows = {d["channel"]["kind"]: d for d in settled(server, issue["id"], 3)}
    assert (rows["pagerduty"]["status"], rows["pagerduty"]["attempts"]) == ("delivered", 4)
    assert time.monotonic() - started >= 1.0  # the 429's Retry-After was honoured
    assert len(pagerduty.incidents) == 1 and pagerduty.incidents[0].triggers == 1
    assert (rows["webhook"]["status"], rows["webhook"]["attempts"], rows["webhook"]["lastStatus"]) == ("dead", 1, 400)
    assert "we do not want this" in rows["webhook"]["lastError"]
    assert (rows["email"]["status"], rows["email"]["attempts"]) == ("delivered", 2)
    assert len(smtp_server.capture.messages) == 1

    page = server.web.get("/alerts/", timeout=10).text
    assert "we do not want this" in page and "dead" in page
    retried = server.form("/alerts/", data={"retry": rows["webhook"]["id"]}, timeout=10)
    assert retried.status_code == 303
    wait_for(lambda: len(webhook.deliveries) == 1)
    assert [d["status"] for d in deliveries(server, issue=issue["id"]) if d["channel"]["kind"] == "webhook"] == ["delivered"]

    smtp_server.capture.next_reply = "550 5.1.1 no such mailbox"
    capture_events(project, lambda: sentry_sdk.capture_message("refund failed", level="error"))
    second = next(i for i in server.wait_issues(project, 2) if i["id"] != issue["id"])
    rows = {d["channel"]["kind"]: d for d in settled(server, second["id"], 3)}
    assert (rows["email"]["status"], rows["email"]["attempts"], rows["email"]["lastStatus"]) == ("dead", 1, 550)


def test_jira_data_center_after_an_ambiguous_timeout(server: TrackerServer, channels: Channels,
                                                     jira_dc: JiraReceiver) -> None:
    """The create succeeds but its answer comes too late: the retry finds it by label."""
    channels.add("jira", url=jira_dc.url, flavor="datacenter", token="jira-token", project="10000", issue_type="Bug")
    jira_dc.script(201, "{}", delay=3.0)  # after the issue exists, past the tracker's 1.5 s timeout
    project = server.create_project()
    capture_events(project, lambda: sentry_sdk.capture_message("ledger out of balance", level="fatal"))
    [issue] = server.wait_issues(project, 1)
    [row] = settled(server, issue["id"], 1)
    assert (row["status"], row["attempts"], row["externalRef"]) == ("delivered", 2, "OPS-1")
    assert len(jira_dc.issues) == 1 and jira_dc.searches == 1 and jira_dc.rejected == []
    assert "{code}" in jira_dc.issues[0]["fields"]["description"]
    assert f'href="{jira_dc.url}/browse/OPS-1"' in server.web.get(f"/issues/{issue['id']}/", timeout=10).text


def test_frequency_rule_and_filters(server: TrackerServer, channels: Channels, webhook: WebhookReceiver) -> None:
    name = channels.add("webhook", url=f"{webhook.url}/hook", secret=webhook.secret)
    project = server.create_project()
    rules = server.api("GET", f"projects/tracker/{project.slug}/rules/").json()
    for rule in rules:  # only the rule under test
        server.api("DELETE", f"projects/tracker/{project.slug}/rules/{rule['id']}/")
    r = server.api("POST", f"projects/tracker/{project.slug}/rules/", json={
        "name": "Busy in prod", "environment": "prod", "frequency": 5,
        "conditions": [{"id": "sentry.rules.conditions.event_frequency.EventFrequencyCondition", "value": 5,
                        "interval": "1h"}],
        "filters": [{"id": "sentry.rules.filters.tagged_event.TaggedEventFilter", "key": "service", "match": "eq",
                     "value": "payments"}],
        "actions": [{"id": WEBHOOK, "service": name}]})
    assert r.status_code == 201, r.text
    [event] = capture_events(project, lambda: sentry_sdk.capture_message("slow query"), environment="prod")
    event["tags"] = {"service": "payments"}
    storm(server, project, {**event, "environment": "staging"}, 10)  # the rule's environment is prod: nothing
    server.wait_issues(project, 11)
    time.sleep(0.5)
    assert len(webhook.deliveries) == 0
    storm(server, project, event, 4)  # the issue now has more than 5 events in the hour: the first prod one fires
    server.wait_issues(project, 15)
    wait_for(lambda: len(webhook.deliveries) == 1)
    storm(server, project, event, 20)
    server.wait_issues(project, 35)
    time.sleep(0.5)
    assert len(webhook.deliveries) == 1  # and then not again within 5 minutes
    [delivery] = webhook.deliveries.values()
    assert delivery["body"]["data"]["triggered_rule"] == "Busy in prod"
    assert delivery["body"]["data"]["event"]["environment"] == "prod"
    storm(server, project, {**event, "tags": {"service": "search"}}, 3)  # the tag filter: nothing either
    assert len(webhook.deliveries) == 1


def test_send_test_from_the_dashboard(server: TrackerServer, channels: Channels, slack: SlackReceiver) -> None:
    channels.add("slack", url=slack.add_hook())
    page = server.web.get("/alerts/", timeout=10).text
    channel_id = channels.ids[-1]
    assert f'name="test" value="{channel_id}"' in page
    r = server.form("/alerts/", data={"test": channel_id}, timeout=10)
    assert r.status_code == 303
    wait_for(lambda: slack.messages)
    assert slack.messages[0]["blocks"][0]["text"]["text"].startswith("Test notification")


def test_kill_9_mid_delivery_delivers_each_once(tmp_path: Path, webhook: WebhookReceiver) -> None:
    """Three notifications queued, the first one on the wire when the server is killed: after a
    restart all three arrive, and the one that was in flight is recognised as a repeat."""
    db = tmp_path / "tracker.db"
    srv = start(db, tmp_path)
    srv.token = srv.cli("token", "create").strip().splitlines()[-1]
    project = srv.create_project()
    srv.api("POST", "organizations/tracker/channels/", json={
        "name": "hook", "kind": "webhook",
        "config": {"url": f"{webhook.url}/hook", "secret": webhook.secret, "allow_private": True}})
    webhook.script(200, "{}", delay=30)  # the first delivery hangs on the wire
    try:
        for message in ("disk full", "queue stuck", "cache cold"):
            capture_events(project, lambda m=message: sentry_sdk.capture_message(m, level="error"))
        srv.wait_issues(project, 3)
        assert webhook.arrived.wait(10)
        srv.process.kill()  # SIGKILL: no shutdown, the delivery in flight is cut off
        srv.process.wait(10)
        with webhook.lock:
            webhook.scripted.clear()
        srv = start(db, tmp_path)
        wait_for(lambda: len(webhook.deliveries) == 3, timeout=20)
        time.sleep(0.5)
        assert len(webhook.deliveries) == 3 and webhook.duplicates == 1
        titles = sorted(d["body"]["data"]["event"]["title"] for d in webhook.deliveries.values())
        assert titles == ["cache cold", "disk full", "queue stuck"]
    finally:
        stop_server(srv)


def test_users_and_escalation_conditions(server: TrackerServer, channels: Channels, webhook: WebhookReceiver) -> None:
    name = channels.add("webhook", url=f"{webhook.url}/hook", secret=webhook.secret)
    project = server.create_project()
    for rule in server.api("GET", f"projects/tracker/{project.slug}/rules/").json():
        server.api("DELETE", f"projects/tracker/{project.slug}/rules/{rule['id']}/")
    for rule_name, condition in (
            ("Three users", {"id": "sentry.rules.conditions.event_frequency.EventUniqueUserFrequencyCondition",
                             "value": 2, "interval": "1h"}),
            ("Escalating", {"id": "sentry.rules.conditions.reappeared_event.ReappearedEventCondition"})):
        r = server.api("POST", f"projects/tracker/{project.slug}/rules/", json={
            "name": rule_name, "conditions": [condition], "actions": [{"id": WEBHOOK, "service": name}]})
        assert r.status_code == 201, r.text
    [event] = capture_events(project, lambda: sentry_sdk.capture_message("profile page 500s"))
    storm(server, project, {**event, "user": {"id": "u1"}}, 5)  # one user, many times: nothing
    [issue] = server.wait_issues(project, 6)
    storm(server, project, {**event, "user": {"id": "u2"}}, 1)
    time.sleep(0.5)
    assert len(webhook.deliveries) == 0
    storm(server, project, {**event, "user": {"id": "u3"}}, 1)  # the third user
    wait_for(lambda: [d["body"]["data"]["triggered_rule"] for d in webhook.deliveries.values()] == ["Three users"])
    ignored = server.api("PUT", f"issues/{issue['id']}/",
                         json={"status": "ignored", "statusDetails": {"ignoreCount": 3}})
    assert ignored.status_code == 200
    storm(server, project, event, 3)  # three more events: the ignored issue escalates
    wait_for(lambda: sorted(d["body"]["data"]["triggered_rule"] for d in webhook.deliveries.values())
             == ["Escalating", "Three users"])
    assert server.api("GET", f"issues/{issue['id']}/").json()["substatus"] == "escalating"


def test_wrong_smtp_password_is_a_dead_letter(server: TrackerServer, channels: Channels, smtp_server: Smtp) -> None:
    channels.add("email", host=smtp_server.host, port=smtp_server.port, security="none", username="alerts",
                 password="wrong", to="oncall@example.com", **{"from": "tracker@example.com"})
    project = server.create_project()
    capture_events(project, lambda: sentry_sdk.capture_message("login page down", level="error"))
    [issue] = server.wait_issues(project, 1)
    [row] = settled(server, issue["id"], 1)
    assert (row["status"], row["attempts"], row["lastStatus"]) == ("dead", 1, 535)
    assert smtp_server.messages == [] and "wrong" not in json.dumps(row)


def test_a_subject_of_any_length_arrives_as_it_was_written(smtp_server: Smtp) -> None:
    """Through smtplib to a real SMTP server: folded at 78 columns, a subject of 70 to 77 characters went
    whole onto the line after "Subject:" and was read back with a leading space (the storm test above
    failed so whenever the test process's id made its project slug that long)."""
    config = {"host": smtp_server.host, "port": smtp_server.port, "security": "none", "username": "alerts",
              "password": "secret", "from": "tracker@example.com", "to": ["oncall@example.com"],
              "allow_private": True}
    subjects = []
    for length in range(40, 131):
        title = ("ConnectionError: payment gateway <down> & unreachable " * 3)[:length].rstrip()
        issue = {"id": length, "shortId": f"P-{length}", "title": title, "culprit": "pay.py", "level": "error",
                 "count": "1", "userCount": 0, "project": {"slug": "p", "name": "P"}}
        notice = tracker.Notice("new", "rule", issue, {}, "http://tracker.local/issues/1/", "key", "i",
                                tracker.Settings())
        assert tracker.send_email(config, tracker.email_message(notice, config, length), 10).outcome == "delivered"
        subjects.append(f"[p] New issue: {title}")
    assert [mail.message["Subject"] for mail in smtp_server.messages] == subjects
