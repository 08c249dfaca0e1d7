"""The dashboard's Content-Security-Policy holds on every page: a crawl from `/` as the admin, in
headless Chromium, over a server fed the sample envelopes (plus a channel and its deliveries, an
alert rule, an SLO, a cron monitor, an attachment and user feedback, so that every template shows
its cards), reports no CSP violation, and no page's policy needs `'unsafe-inline'`."""
from __future__ import annotations

import re
import time
import uuid
import urllib.parse
from typing import Any

import httpx
import pytest
import sentry_sdk
from conftest import ROOT, Configure, TrackerServer, wait_for
from sentry_sdk.envelope import Envelope, Item, PayloadRef

MAX_PAGES = 400  # a bound on the crawl; the demo data makes about a hundred pages
# Chromium reports a blocked inline style both ways: on the console, and as a securitypolicyviolation
# event in the page, which this script (run through the DevTools protocol, so the CSP does not stop
# it) copies to the console.
REPORT_VIOLATIONS = """document.addEventListener("securitypolicyviolation", (e) => console.error(
    "CSP violation: " + e.violatedDirective + " blocked " + e.blockedURI + " at line " + e.lineNumber));"""


@pytest.fixture(scope="module")
def demo(configured: Configure) -> TrackerServer:
    server = configured("csp", "")
    dsn = server.cli("project", "create", "demo").strip().splitlines()[-1]
    project_id, key = dsn.rsplit("/", 1)[1], dsn.split("//", 1)[1].split("@", 1)[0]
    server.form("/alerts/", {"kind": "webhook", "name": "hook", "url": "http://127.0.0.1:9/hook",
                             "allow_private": "on"})  # nothing listens: its deliveries fail, with an error shown
    server.form("/projects/demo/alerts/", {"name": "every new issue", "when": "new", "notify": "*", "frequency": "30"})
    server.form("/projects/demo/slo/", {"name": "Error budget", "metric": "errored_sessions", "objective": "0.1",
                                        "window": "10", "minTotal": "1"})
    server.cli("send", "--project", "demo", *map(str, sorted((ROOT / "sample_events").glob("*.envelope"))))
    r = httpx.post(f"{server.url}/api/{project_id}/cron/nightly/{key}/", timeout=10,
                   json={"status": "ok", "monitor_config": {"schedule": {"type": "crontab", "value": "0 3 * * *"}}})
    assert r.status_code == 202, r.text
    send_attachment_and_feedback(dsn)
    wait_for(lambda: "The card form froze" in server.web.get("/projects/demo/feedback/").text)
    return server


def send_attachment_and_feedback(dsn: str) -> None:
    """An exception with a log file attached, and feedback about it (as @sentry/browser sends it)."""
    sentry_sdk.init(dsn=dsn, release="demo@1.0")
    try:
        with sentry_sdk.new_scope() as scope:
            scope.add_attachment(bytes=b"12:00:01 ERROR charge failed\n", filename="charge.log", content_type="text/plain")
            try:
                raise ValueError("charge failed")
            except ValueError:
                event_id = sentry_sdk.capture_exception()
        feedback = {"type": "feedback", "event_id": uuid.uuid4().hex, "timestamp": time.time(), "level": "info",
                    "platform": "javascript", "contexts": {"feedback": {
                        "message": "The card form froze", "name": "Ana", "contact_email": "ana@example.org",
                        "url": "https://shop.example.com/checkout", "associated_event_id": event_id}}}
        sentry_sdk.get_client().transport.capture_envelope(
            Envelope(headers={"event_id": feedback["event_id"]}, items=[Item(payload=PayloadRef(json=feedback),
                                                                              type="feedback")]))
        sentry_sdk.flush()
    finally:
        sentry_sdk.get_client().close()
        sentry_sdk.init()


def page_kind(url: str) -> str:
    """A page once per path and set of query keys: /overview/?period=1h and ?period=7d show the same."""
    parts = urllib.parse.urlsplit(url)
    return parts.path + "?" + ",".join(sorted(urllib.parse.parse_qs(parts.query)))


def test_no_csp_violation_on_any_page(demo: TrackerServer, browser: Any) -> None:
    context = demo.browser_context(browser, viewport={"width": 1280, "height": 900})
    context.add_init_script(REPORT_VIOLATIONS)
    page = context.new_page()
    page.set_default_timeout(10_000)
    reports: list[str] = []
    page.on("console", lambda message: reports.append(message.text) if "Content Security Policy" in message.text
            or message.text.startswith("CSP violation") else None)
    queue, seen, violations, policies = ["/", "/no-such-page/"], set(), {}, set()
    while queue and len(seen) < MAX_PAGES:
        path = queue.pop(0)
        if page_kind(path) in seen:
            continue
        seen.add(page_kind(path))
        if not demo.web.get(path, follow_redirects=True).headers.get("content-type", "").startswith("text/html"):
            continue  # raw JSON, attachment downloads, the live stream: no page to render
        response = page.goto(demo.url + path)
        assert response is not None
        policies.add(response.headers["content-security-policy"])
        page.evaluate("() => new Promise((done) => setTimeout(done, 50))")  # violation events are queued tasks
        if reports:
            violations[path] = reports[:]
            reports.clear()
        for href in page.eval_on_selector_all("a[href]", "links => links.map((a) => a.href)"):
            target = urllib.parse.urlsplit(href)
            if href.startswith(demo.url + "/") and page_kind(target.path + "?" + target.query) not in seen:
                queue.append(urllib.parse.urlunsplit(("", "", target.path, target.query, "")))
    context.close()
    visited = "\n".join(sorted(seen))
    for expected in ("/issues/?", "/issues/1/?", "/releases/?", "/alerts/?", "/settings/?", "/monitors/?",
                     "/projects/demo/overview/?", "/projects/demo/slo/?", "/projects/demo/alerts/?",
                     "/projects/demo/feedback/?", "/projects/demo/envelopes/?", "/live/?", "/account/?"):
        assert expected in visited, f"the crawl missed {expected}:\n{visited}"
    assert re.search(r"/attachments/\d+/view/", visited), visited
    assert not violations, f"{len(violations)} of {len(seen)} pages:\n" + "\n".join(
        f"{path}: {len(lines)} reports, the first: {lines[0][:120]}" for path, lines in list(violations.items())[:12])
    assert policies and not any("'unsafe-inline'" in policy for policy in policies), policies
