"""Self-tests of the strict channel receivers (tests/receivers.py): each accepts what the documented
protocol allows, refuses what it forbids with the service's own error, and obeys scripted answers.
They talk to the receivers with httpx, smtplib and the real Alertmanager; no tracker involved."""
from __future__ import annotations

import base64
import hashlib
import hmac
import json
import smtplib
import time
import uuid
from datetime import datetime, timezone
from email.message import EmailMessage
from typing import Any

import httpx
import pytest

# the fixtures come from conftest.py's pytest_plugins
from receivers import Alertmanager, JiraReceiver, PagerDutyReceiver, SlackReceiver, SmtpServer, WebhookReceiver

# -- the base --------------------------------------------------------------------------------------


def test_scripted_answers_apply_in_order_and_by_path(pagerduty: PagerDutyReceiver) -> None:
    pagerduty.script(500, "boom", times=2)
    pagerduty.script(429, headers={"Retry-After": "7"})
    event = pd_event()
    answers = [httpx.post(pagerduty.enqueue_url, json=event, timeout=5) for _ in range(4)]
    assert [a.status_code for a in answers] == [500, 500, 429, 202]
    assert answers[2].headers["retry-after"] == "7" and answers[0].text == "boom"
    assert len(pagerduty.events) == 1, "a scripted 429/500 must not be ingested"
    assert [r.status for r in pagerduty.received] == [500, 500, 429, 202]
    # the same from outside the process, and a script bound to another path leaves this one alone
    httpx.post(f"{pagerduty.url}/_fail", json={"status": 503, "path": "/elsewhere"}, timeout=5)
    assert httpx.post(pagerduty.enqueue_url, json=event, timeout=5).status_code == 202
    seen = httpx.get(f"{pagerduty.url}/_received", timeout=5).json()
    assert len(seen) == 5 and seen[0]["headers"]["content-type"] == "application/json"
    assert pagerduty.received[0].json == event and pagerduty.rejected == []
    pagerduty.script(202, '{"custom": true}')  # a 2xx is a success: processed, answered as scripted
    assert httpx.post(pagerduty.enqueue_url, json=event, timeout=5).json() == {"custom": True}
    assert len(pagerduty.events) == 3


# -- Slack -----------------------------------------------------------------------------------------

GOOD_SLACK = {
    "text": "New issue: ZeroDivisionError",
    "blocks": [
        {"type": "header", "text": {"type": "plain_text", "text": "ZeroDivisionError: division by zero"}},
        {"type": "section", "text": {"type": "mrkdwn", "text": "*app.views in checkout*"},
         "fields": [{"type": "mrkdwn", "text": "*Env*\nprod"}]},
        {"type": "divider"},
        {"type": "context", "elements": [{"type": "mrkdwn", "text": "<http://t/issues/1/|View issue>"}]},
    ],
    "attachments": [{"color": "#e03e2f", "fallback": "x", "fields": [{"title": "count", "value": "3", "short": True}]}],
    "unfurl_links": False,
}


def test_slack_accepts_json_and_form_payload(slack: SlackReceiver) -> None:
    url = slack.add_hook()
    r = httpx.post(url, json=GOOD_SLACK, timeout=5)
    assert (r.status_code, r.text, r.headers["content-type"].split(";")[0]) == (200, "ok", "text/plain")
    r = httpx.post(url, data={"payload": json.dumps({"text": "legacy form"})}, timeout=5)
    assert r.status_code == 200 and r.text == "ok"
    assert slack.messages == [GOOD_SLACK, {"text": "legacy form"}] and slack.messages_for(url) == slack.messages
    assert slack.rejected == []


@pytest.mark.parametrize("body, status, code", [
    ({"blocks": []}, 400, "no_text"),
    ({"text": ""}, 400, "no_text"),
    ({"text": "x", "blocks": [{"type": "carousel"}]}, 400, "invalid_blocks"),
    ({"text": "x", "blocks": [{"type": "divider"}] * 51}, 400, "invalid_blocks"),
    ({"text": "x", "blocks": [{"type": "section", "text": {"type": "mrkdwn", "text": "a" * 3001}}]}, 400,
     "invalid_blocks"),
    ({"text": "x", "blocks": [{"type": "header", "text": {"type": "plain_text", "text": "h" * 151}}]}, 400,
     "invalid_blocks"),
    ({"text": "x", "blocks": [{"type": "header", "text": {"type": "mrkdwn", "text": "*h*"}}]}, 400, "invalid_blocks"),
    ({"text": "x", "blocks": [{"type": "section"}]}, 400, "invalid_blocks"),
    ({"text": "x", "blocks": {"type": "divider"}}, 400, "invalid_blocks_format"),
    ({"text": "x", "attachments": [{"text": "a"}] * 101}, 400, "too_many_attachments"),
    ({"text": 5}, 400, "invalid_payload"),
])
def test_slack_refuses_invalid_messages(slack: SlackReceiver, body: dict[str, Any], status: int, code: str) -> None:
    r = httpx.post(slack.add_hook(), json=body, timeout=5)
    assert (r.status_code, r.text) == (status, code)
    assert slack.messages == [] and slack.rejected and slack.rejected[0].startswith(code)


def test_slack_unknown_hook_bad_encoding_and_archived_channel(slack: SlackReceiver) -> None:
    url = slack.add_hook()
    wrong = url.rsplit("/", 1)[0] + "/not-a-token"
    assert (httpx.post(wrong, json={"text": "x"}, timeout=5).text, slack.received[-1].status) == ("no_service", 404)
    r = httpx.post(url, content=b'{"text": "x"}', headers={"Content-Type": "text/plain"}, timeout=5)
    assert (r.status_code, r.text) == (400, "invalid_payload")
    r = httpx.post(url, content=b"{not json", headers={"Content-Type": "application/json"}, timeout=5)
    assert (r.status_code, r.text) == (400, "invalid_payload")
    slack.archive(url)
    r = httpx.post(url, json={"text": "x"}, timeout=5)
    assert (r.status_code, r.text) == (410, "channel_is_archived")
    assert len(slack.rejected) == 4 and slack.messages == []


def test_slack_rate_limit_gives_retry_after_and_counts_early_retries() -> None:
    with SlackReceiver(rate=1.0, burst=2) as slack:
        url = slack.add_hook()
        answers = [httpx.post(url, json={"text": f"m{i}"}, timeout=5) for i in range(3)]
        assert [a.status_code for a in answers] == [200, 200, 429]
        assert answers[2].headers["retry-after"] == "1" and slack.limited == 1
        assert httpx.post(url, json={"text": "too soon"}, timeout=5).status_code == 429
        assert slack.early_retries == 1, "a client that ignores Retry-After is counted"
        time.sleep(1.1)
        assert httpx.post(url, json={"text": "later"}, timeout=5).status_code == 200
        assert [m["text"] for m in slack.messages] == ["m0", "m1", "later"] and slack.rejected == []


# -- PagerDuty -------------------------------------------------------------------------------------

ROUTING_KEY = "0123456789abcdef0123456789abcdef"


def pd_event(action: str = "trigger", dedup_key: str | None = "errtrack:t:1:42", **changes: Any) -> dict[str, Any]:
    event: dict[str, Any] = {"routing_key": ROUTING_KEY, "event_action": action}
    if dedup_key is not None:
        event["dedup_key"] = dedup_key
    if action == "trigger":
        event["payload"] = {"summary": "ZeroDivisionError in checkout", "source": "tracker", "severity": "error",
                            "timestamp": "2025-01-02T03:04:05.678Z", "custom_details": {"count": 3}}
        event["links"] = [{"href": "http://tracker.test/issues/42/", "text": "Issue"}]
        event["client"], event["client_url"] = "tracker", "http://tracker.test"
    event.update(changes)
    return event


def test_pagerduty_accepts_a_trigger_and_makes_up_a_dedup_key(pagerduty: PagerDutyReceiver) -> None:
    r = httpx.post(pagerduty.enqueue_url, json=pd_event(dedup_key=None), timeout=5)
    assert r.status_code == 202
    body = r.json()
    assert body["status"] == "success" and body["message"] == "Event processed" and uuid.UUID(body["dedup_key"])
    assert [(i.dedup_key, i.status, i.triggers) for i in pagerduty.incidents] == [(body["dedup_key"], "triggered", 1)]


@pytest.mark.parametrize("event, error", [
    (pd_event(routing_key="short"), "Length of 'routing_key' is incorrect (should be 32 characters)"),
    (pd_event(event_action="escalate"), "'event_action' is invalid"),
    ({k: v for k, v in pd_event().items() if k != "payload"}, "'payload' is missing"),
    (pd_event(payload={"source": "t", "severity": "error"}), "'payload.summary' is missing"),
    (pd_event(payload={"summary": "s" * 1025, "source": "t", "severity": "error"}), "'payload.summary' is too long"),
    (pd_event(payload={"summary": "s", "severity": "error"}), "'payload.source' is missing"),
    (pd_event(payload={"summary": "s", "source": "t", "severity": "fatal"}), "'payload.severity' is invalid"),
    (pd_event(payload={"summary": "s", "source": "t", "severity": "info", "timestamp": "yesterday"}),
     "'payload.timestamp'"),
    (pd_event(dedup_key="k" * 256), "'dedup_key' must be a string of 1 to 255"),
    (pd_event("resolve", dedup_key=None), "'dedup_key' is required for resolve"),
    (pd_event(links=[{"text": "no href"}]), "'links'"),
    (pd_event(images=[{"src": "http://insecure.test/a.png"}]), "https 'src'"),
    (pd_event(payload={"summary": "s", "source": "t", "severity": "info", "custom_details": {"x": "y" * 530_000}}),
     "larger than 512 KB"),
])
def test_pagerduty_refuses_invalid_events(pagerduty: PagerDutyReceiver, event: dict[str, Any], error: str) -> None:
    r = httpx.post(pagerduty.enqueue_url, json=event, timeout=5)
    assert r.status_code == 400
    body = r.json()
    assert body["status"] == "invalid event" and body["message"] == "Event object is invalid"
    assert any(error in e for e in body["errors"]), body["errors"]
    assert pagerduty.events == [] and pagerduty.incidents == [] and len(pagerduty.rejected) == 1


def test_pagerduty_alert_state_machine(pagerduty: PagerDutyReceiver) -> None:
    def send(event: dict[str, Any]) -> None:
        r = httpx.post(pagerduty.enqueue_url, json=event, timeout=5)
        assert r.status_code == 202 and r.json()["dedup_key"] == event["dedup_key"], r.text

    send(pd_event())
    send(pd_event())  # appended to the open alert
    send(pd_event("acknowledge"))
    send(pd_event())  # while acknowledged: still the same alert
    send(pd_event("resolve"))
    send(pd_event("resolve"))  # nothing open: dropped, but 202
    send(pd_event("acknowledge", dedup_key="never-triggered"))
    send(pd_event())  # after the resolve: a new alert
    send(pd_event(routing_key="f" * 32))  # same key, other integration: its own alert
    assert [(i.routing_key[:1], i.status, i.triggers) for i in pagerduty.incidents] == [
        ("0", "resolved", 3), ("0", "triggered", 1), ("f", "triggered", 1)]
    assert len(pagerduty.dropped) == 2 and len(pagerduty.events) == 9 and pagerduty.rejected == []
    assert len(pagerduty.incidents_for("errtrack:t:1:42")) == 3


# -- Jira ------------------------------------------------------------------------------------------

ADF = {"type": "doc", "version": 1, "content": [
    {"type": "paragraph", "content": [{"type": "text", "text": "Seen 3 times", "marks": [{"type": "strong"}]}]},
    {"type": "codeBlock", "attrs": {"language": "python"}, "content": [{"type": "text", "text": "Traceback ..."}]}]}


def cloud_auth(j: JiraReceiver) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"{j.email}:{j.token}".encode()).decode()}


def dc_auth(j: JiraReceiver) -> dict[str, str]:
    return {"Authorization": f"Bearer {j.token}"}


def fields(**changes: Any) -> dict[str, Any]:
    base = {"project": {"key": "OPS"}, "issuetype": {"id": "10004"}, "summary": "ZeroDivisionError in checkout",
            "labels": ["tracker-tracker-42"], "description": ADF}
    return {k: v for k, v in {**base, **changes}.items() if v is not None}


def test_jira_cloud_creates_with_adf_and_searches_by_label(jira: JiraReceiver) -> None:
    post = lambda f: httpx.post(f"{jira.url}/rest/api/3/issue", json={"fields": f}, headers=cloud_auth(jira), timeout=5)
    first = post(fields())
    second = post(fields(project={"id": "10000"}, issuetype={"name": "Task"}, labels=["other"]))
    assert (first.status_code, second.status_code) == (201, 201)
    assert first.json() == {"id": "10001", "key": "OPS-1", "self": f"{jira.url}/rest/api/3/issue/10001"}
    assert second.json()["key"] == "OPS-2" and [i["key"] for i in jira.issues] == ["OPS-1", "OPS-2"]
    for jql in ('labels = "tracker-tracker-42"', "labels=tracker-tracker-42",
                'project = OPS AND labels = "tracker-tracker-42"'):
        r = httpx.get(f"{jira.url}/rest/api/3/search/jql", params={"jql": jql, "fields": "labels,summary"},
                      headers=cloud_auth(jira), timeout=5)
        assert r.status_code == 200, r.text
        assert [(i["key"], i["fields"]["labels"]) for i in r.json()["issues"]] == [("OPS-1", ["tracker-tracker-42"])]
    assert httpx.post(f"{jira.url}/rest/api/3/search/jql", json={"jql": 'labels = "nope"'}, headers=cloud_auth(jira),
                      timeout=5).json()["issues"] == []
    gone = httpx.get(f"{jira.url}/rest/api/2/search", params={"jql": "labels = x"}, headers=cloud_auth(jira), timeout=5)
    assert gone.status_code == 410
    meta = httpx.get(f"{jira.url}/rest/api/3/issue/createmeta/OPS/issuetypes", headers=cloud_auth(jira), timeout=5)
    assert {t["name"]: t["id"] for t in meta.json()["issueTypes"]} == {"Bug": "10004", "Task": "10002"}
    assert jira.rejected == [json.dumps({"errorMessages": [gone.json()["errorMessages"][0]], "errors": {}})]


def test_jira_cloud_refuses_string_descriptions_v2_and_bearer(jira: JiraReceiver) -> None:
    r = httpx.post(f"{jira.url}/rest/api/3/issue", json={"fields": fields(description="plain *wiki*")},
                   headers=cloud_auth(jira), timeout=5)
    assert r.status_code == 400
    assert r.json()["errors"]["description"].startswith("Operation value must be an Atlassian Document")
    bad_adf = {"type": "doc", "version": 1, "content": [{"type": "text", "text": "text straight in doc"}]}
    r = httpx.post(f"{jira.url}/rest/api/3/issue", json={"fields": fields(description=bad_adf)},
                   headers=cloud_auth(jira), timeout=5)
    assert r.status_code == 400 and "description" in r.json()["errors"]
    r = httpx.post(f"{jira.url}/rest/api/2/issue", json={"fields": fields()}, headers=cloud_auth(jira), timeout=5)
    assert r.status_code == 404
    r = httpx.post(f"{jira.url}/rest/api/3/issue", json={"fields": fields()}, headers={"Authorization": "Bearer x"},
                   timeout=5)
    assert r.status_code == 401 and r.json()["errorMessages"]
    assert jira.issues == [] and len(jira.rejected) == 4


def test_jira_datacenter_v2_bearer_and_wiki_markup(jira_dc: JiraReceiver) -> None:
    j = jira_dc
    r = httpx.post(f"{j.url}/rest/api/2/issue", json={"fields": fields(description="h3. Boom\n{code}tb{code}")},
                   headers=dc_auth(j), timeout=5)
    assert r.status_code == 201 and r.json()["key"] == "OPS-1"
    r = httpx.get(f"{j.url}/rest/api/2/search", params={"jql": 'labels = "tracker-tracker-42"'}, headers=dc_auth(j),
                  timeout=5)
    assert r.json()["total"] == 1 and r.json()["issues"][0]["fields"]["summary"] == "ZeroDivisionError in checkout"
    assert httpx.post(f"{j.url}/rest/api/2/issue", json={"fields": fields()}, headers=dc_auth(j),
                      timeout=5).json()["errors"] == {"description": "Operation value must be a string"}
    assert httpx.post(f"{j.url}/rest/api/3/issue", json={"fields": fields(description="x")}, headers=dc_auth(j),
                      timeout=5).status_code == 404
    basic = {"Authorization": "Basic " + base64.b64encode(f"{j.email}:{j.token}".encode()).decode()}
    assert httpx.post(f"{j.url}/rest/api/2/issue", json={"fields": fields(description="x")}, headers=basic,
                      timeout=5).status_code == 401
    assert len(j.issues) == 1


@pytest.mark.parametrize("change, field, message", [
    ({"project": {"key": "NOPE"}}, "project", "valid project is required"),
    ({"issuetype": {"name": "Epic"}}, "issuetype", "Specify a valid issue type"),
    ({"summary": None}, "summary", "You must specify a summary of the issue."),
    ({"summary": "s" * 256}, "summary", "Summary must be less than 255 characters."),
    ({"summary": "two\nlines"}, "summary", "newline"),
    ({"labels": ["has space"]}, "labels", "The label 'has space' contains spaces which is invalid."),
    ({"priority": {"name": "High"}}, "priority",
     "Field 'priority' cannot be set. It is not on the appropriate screen, or unknown."),
    ({"customfield_10010": "x"}, "customfield_10010", "cannot be set"),
])
def test_jira_field_errors(jira: JiraReceiver, change: dict[str, Any], field: str, message: str) -> None:
    r = httpx.post(f"{jira.url}/rest/api/3/issue", json={"fields": fields(**change)}, headers=cloud_auth(jira),
                   timeout=5)
    assert r.status_code == 400 and r.json()["errorMessages"] == []
    assert message in r.json()["errors"][field]
    assert jira.issues == []


def test_jira_priority_when_on_screen() -> None:
    with JiraReceiver("cloud", email="ops@example.com", token="t0k", priority_on_screen=True) as j:
        ok = httpx.post(f"{j.url}/rest/api/3/issue", json={"fields": fields(priority={"name": "High"})},
                        headers=cloud_auth(j), timeout=5)
        assert ok.status_code == 201
        bad = httpx.post(f"{j.url}/rest/api/3/issue", json={"fields": fields(priority={"name": "Urgent!"})},
                         headers=cloud_auth(j), timeout=5)
        assert bad.status_code == 400 and "priority" in bad.json()["errors"]


def test_jira_ambiguous_timeout_still_creates_the_issue(jira: JiraReceiver) -> None:
    """A create answered after the client gave up has happened: a careful client searches its label."""
    jira.script(None, delay=2.0, path="/rest/api/3/issue")
    with pytest.raises(httpx.ReadTimeout):
        httpx.post(f"{jira.url}/rest/api/3/issue", json={"fields": fields()}, headers=cloud_auth(jira), timeout=0.3)
    r = httpx.get(f"{jira.url}/rest/api/3/search/jql", params={"jql": 'labels = "tracker-tracker-42"'},
                  headers=cloud_auth(jira), timeout=5)
    assert [i["key"] for i in r.json()["issues"]] == ["OPS-1"] and len(jira.issues) == 1
    jira.script(429, '{"errorMessages":["Rate limit exceeded."]}', {"Retry-After": "3"})
    r = httpx.post(f"{jira.url}/rest/api/3/issue", json={"fields": fields()}, headers=cloud_auth(jira), timeout=5)
    assert r.status_code == 429 and r.headers["retry-after"] == "3" and len(jira.issues) == 1


# -- generic webhooks ------------------------------------------------------------------------------


def issue_body(**issue_changes: Any) -> dict[str, Any]:
    issue = {"id": "42", "shortId": "CHECKOUT-1A", "title": "ZeroDivisionError: division by zero",
             "culprit": "app.views in checkout", "level": "error", "status": "unresolved", "substatus": "new",
             "count": "3", "userCount": 1, "firstSeen": "2025-01-02T03:04:05.678Z",
             "lastSeen": "2025-01-02T03:05:05Z", "project": {"id": "1", "name": "Checkout", "slug": "checkout"},
             "web_url": "http://tracker.test/issues/42/", "url": "http://tracker.test/api/0/issues/42/"}
    issue.update(issue_changes)
    return {"action": "created", "installation": {"uuid": str(uuid.uuid4())}, "data": {"issue": issue},
            "actor": {"type": "application", "id": "tracker", "name": "tracker"}}


def deliver(hook: WebhookReceiver, body: dict[str, Any], resource: str = "issue", key: str = "outbox-1",
            secret: str | None = None, **header_changes: str | None) -> httpx.Response:
    raw = json.dumps(body).encode()
    headers: dict[str, str | None] = {
        "Content-Type": "application/json", "Request-ID": uuid.uuid4().hex, "Sentry-Hook-Resource": resource,
        "Sentry-Hook-Timestamp": str(int(time.time())), "Idempotency-Key": key,
        "Sentry-Hook-Signature": hmac.new((secret or hook.secret).encode(), raw, hashlib.sha256).hexdigest()}
    headers.update(header_changes)
    return httpx.post(hook.hook_url, content=raw, headers={k: v for k, v in headers.items() if v is not None},
                      timeout=5)


def test_webhook_accepts_signed_deliveries_and_dedupes(webhook: WebhookReceiver) -> None:
    body = issue_body()
    assert deliver(webhook, body).status_code == 200
    assert deliver(webhook, body).status_code == 200  # a retry of the same outbox row
    alert = {"action": "triggered", "installation": {"uuid": "u"},
             "actor": {"type": "application", "id": 1, "name": "t"},
             "data": {"event": {"event_id": "a" * 32, "url": "http://t/api/0/e/", "web_url": "http://t/e/",
                                "issue_url": "http://t/api/0/issues/42/", "issue_id": "42", "title": "boom"},
                      "triggered_rule": "New issues", "issue_alert": {"title": "New issues", "settings": []}}}
    assert deliver(webhook, alert, "event_alert", key="outbox-2").status_code == 200
    assert webhook.duplicates == 1 and list(webhook.deliveries) == ["outbox-1", "outbox-2"]
    assert webhook.bodies == [body, alert] and webhook.rejected == []


@pytest.mark.parametrize("changes, status, reason", [
    ({"secret": "wrong"}, 401, "bad Sentry-Hook-Signature"),
    ({"Sentry-Hook-Signature": None}, 401, "bad Sentry-Hook-Signature"),
    ({"Content-Type": "text/plain"}, 400, "Content-Type"),
    ({"Request-ID": None}, 400, "request-id"),
    ({"Idempotency-Key": None}, 400, "idempotency-key"),
    ({"Sentry-Hook-Resource": "comment"}, 400, "Sentry-Hook-Resource"),
    ({"Sentry-Hook-Timestamp": str(int(time.time()) - 600)}, 400, "5 minutes"),
    ({"body": {**issue_body(), "action": "exploded"}}, 400, "issue action"),
    ({"body": issue_body(count=3)}, 400, "count must be a string"),
    ({"body": issue_body(project={"id": "1"})}, 400, "project"),
    ({"body": {**issue_body(), "actor": {"type": "robot", "id": "1", "name": "x"}}}, 400, "actor"),
    ({"body": {**issue_body(), "installation": {}}}, 400, "installation.uuid"),
    ({"body": issue_body(), "resource": "event_alert"}, 400, "event_alert action"),
])
def test_webhook_refuses(webhook: WebhookReceiver, changes: dict[str, Any], status: int, reason: str) -> None:
    changes = dict(changes)  # the parameter is shared; keep it intact
    body, resource = changes.pop("body", issue_body()), changes.pop("resource", "issue")
    secret = changes.pop("secret", None)
    r = deliver(webhook, body, resource, secret=secret, **changes)
    assert r.status_code == status, r.text
    assert webhook.deliveries == {} and len(webhook.rejected) == 1 and reason in webhook.rejected[0]


def test_webhook_ambiguous_timeout_makes_a_visible_duplicate(webhook: WebhookReceiver) -> None:
    webhook.script(None, delay=1.0)
    with pytest.raises(httpx.ReadTimeout):
        raw = json.dumps(issue_body()).encode()
        httpx.post(webhook.hook_url, content=raw, timeout=0.2, headers={
            "Content-Type": "application/json", "Request-ID": "r1", "Sentry-Hook-Resource": "issue",
            "Sentry-Hook-Timestamp": str(int(time.time())), "Idempotency-Key": "outbox-9",
            "Sentry-Hook-Signature": webhook.sign(raw)})
    assert deliver(webhook, issue_body(), key="outbox-9").status_code == 200
    assert list(webhook.deliveries) == ["outbox-9"] and webhook.duplicates == 1


# -- email -----------------------------------------------------------------------------------------


def mail(subject: str = "New issue") -> EmailMessage:
    m = EmailMessage()
    m["From"], m["To"], m["Subject"] = "tracker@example.com", "oncall@example.com", subject
    m["Message-ID"] = "<outbox-1@tracker.test>"
    m["Auto-Submitted"] = "auto-generated"
    m.set_content("plain body")
    m.add_alternative("<p>html body</p>", subtype="html")
    return m


def test_smtp_requires_auth_and_captures_parsed_messages(smtp_server: SmtpServer) -> None:
    with smtplib.SMTP(smtp_server.host, smtp_server.port, timeout=5) as s:
        with pytest.raises(smtplib.SMTPSenderRefused) as refused:
            s.send_message(mail())
        assert refused.value.smtp_code == 530
    with smtplib.SMTP(smtp_server.host, smtp_server.port, timeout=5) as s:
        with pytest.raises(smtplib.SMTPAuthenticationError):
            s.login("alerts", "wrong")
    with smtplib.SMTP(smtp_server.host, smtp_server.port, timeout=5) as s:
        s.login(smtp_server.user, smtp_server.password)
        s.send_message(mail())
    [(mail_from, rcpt_tos, message)] = smtp_server.messages
    assert (mail_from, rcpt_tos) == ("tracker@example.com", ["oncall@example.com"])
    assert message["Message-ID"] == "<outbox-1@tracker.test>" and message["Auto-Submitted"] == "auto-generated"
    plain, html = message.get_body(("plain",)), message.get_body(("html",))
    assert plain is not None and plain.get_content().strip() == "plain body"
    assert html is not None and "html body" in html.get_content()
    assert smtp_server.capture.logins[-1] == ("alerts", True)  # smtplib tried PLAIN then LOGIN with "wrong"
    assert {ok for _, ok in smtp_server.capture.logins[:-1]} == {False}


@pytest.mark.parametrize("reply", ["451 try later", "550 no"])
def test_smtp_next_reply_refuses_one_message(smtp_server: SmtpServer, reply: str) -> None:
    smtp_server.next_reply = reply
    with smtplib.SMTP(smtp_server.host, smtp_server.port, timeout=5) as s:
        s.login("alerts", "secret")
        with pytest.raises(smtplib.SMTPDataError) as refused:
            s.send_message(mail())
        assert refused.value.smtp_code == int(reply[:3])
        s.send_message(mail("second try"))
    assert [m.message["Subject"] for m in smtp_server.messages] == ["second try"]
    assert smtp_server.capture.refused[0][2] == reply


# -- Alertmanager (the real binary) --------------------------------------------------------------


def test_alertmanager_fires_then_resolves(alertmanager: Alertmanager) -> None:
    issue = uuid.uuid4().hex[:8]
    labels = {"alertname": "ErrtrackIssue", "project": "checkout", "environment": "prod", "level": "error",
              "issue_id": issue}
    alert = {"labels": labels, "annotations": {"summary": "ZeroDivisionError", "event_count": "3"},
             "generatorURL": f"http://tracker.test/issues/{issue}/"}
    assert alertmanager.post([alert]).status_code == 200
    updated = {**alert, "annotations": {"summary": "ZeroDivisionError", "event_count": "4"}}
    assert alertmanager.post([updated]).status_code == 200
    [shown] = alertmanager.alerts(issue_id=issue)
    assert shown["labels"] == labels and shown["status"]["state"] == "active"
    assert shown["annotations"]["event_count"] == "4", "annotations follow the latest post; labels identify"
    firing = alertmanager.notified("firing", issue_id=issue)
    assert firing["generatorURL"] == alert["generatorURL"]
    now = datetime.now(timezone.utc).isoformat().replace("+00:00", "Z")
    assert alertmanager.post([{**alert, "endsAt": now}]).status_code == 200
    assert alertmanager.alerts(issue_id=issue) == []  # the v2 API lists no resolved alerts
    resolved = alertmanager.notified("resolved", issue_id=issue)
    assert resolved["labels"] == labels and resolved["endsAt"][:19] == now[:19]


def test_alertmanager_refuses_bad_alerts(alertmanager: Alertmanager) -> None:
    r = alertmanager.post([{"labels": {"bad-name": "x"}}])
    assert r.status_code == 400 and "invalid label set" in r.text
    r = alertmanager.post([{"annotations": {"summary": "no labels"}}])
    assert r.status_code == 422 and "labels" in r.json()["message"]
