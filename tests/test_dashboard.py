"""The dashboard in a real browser: Debian's Chromium driven by Playwright, against the live
server, fed by the real sentry_sdk (and one hand-made hostile envelope).

The path a person takes at 3 a.m.: the issues list → one click → the crash line, its context
and its release; then the event navigation, the raw JSON, the filters, and proof that event data
(all of it attacker-controlled) is shown as text and never runs.
"""
from __future__ import annotations

import contextlib
import json
import logging
import os
import time
import urllib.parse
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

import pytest
import sentry_sdk
from fastapi import FastAPI, Request
from fastapi.testclient import TestClient

from conftest import CHROMIUM, ROOT, Project, TrackerServer

pytestmark = pytest.mark.skipif(not CHROMIUM.exists(), reason=f"Debian's Chromium is not installed at {CHROMIUM}")
PAYLOADS = ['<script>window.__xss=1</script>', '<img src=x onerror="window.__xss=1">',
            '"><svg onload=window.__xss=1>', "{{7*7}}"]
HOSTILE = " ".join(PAYLOADS)


# -- the application code whose crashes the dashboard shows -------------------------------

def gateway_reference_of(hold: dict[str, Any]) -> str:
    return hold["gateway_reference"]  # the crash line of the FastAPI issue


def charge(order_id: int, amount: str) -> dict[str, str]:
    hold = {"id": f"hold_{order_id}", "amount": amount}
    return {"charge": gateway_reference_of(hold)}


def order_line(obj: dict[str, Any]) -> dict[str, Any]:
    return {"sku": obj["sku"], "qty": obj["quantity"]}  # raised from inside json.loads (stdlib frames)


def decode_feed(raw: str) -> list[dict[str, Any]]:
    return json.loads(raw, object_hook=lambda obj: order_line(obj) if "sku" in obj else obj)


def load_config(raw: str) -> dict[str, Any]:
    try:
        return json.loads(raw)
    except json.JSONDecodeError as exc:
        raise RuntimeError("config file is not valid JSON") from exc


def issue_refund(refund_id: str) -> None:
    logging.getLogger("shop.billing").error("refund %s failed: %s", refund_id, "gateway timeout")


def make_app() -> FastAPI:
    app = FastAPI()

    @app.post("/orders/{order_id}/charge")
    async def charge_order(order_id: int, request: Request) -> dict[str, str]:
        body = await request.json()
        sentry_sdk.set_user({"id": body["customer"], "email": f"{body['customer']}@example.com"})
        sentry_sdk.set_tag("tenant", "acme")
        sentry_sdk.add_breadcrumb(category="payment", message=f"charging order {order_id}", level="info")
        return charge(order_id, body["amount"])

    return app


@contextlib.contextmanager
def sentry(dsn: str, **options: Any) -> Iterator[None]:
    """sentry_sdk for one block; flushed and closed afterwards (later tests start disabled)."""
    sentry_sdk.init(dsn=dsn, project_root=str(ROOT), **options)
    try:
        yield
    finally:
        client = sentry_sdk.get_client()
        client.flush(5)
        client.close()
        sentry_sdk.init()


# -- fixtures ----------------------------------------------------------------------------

@dataclass
class Data:
    shop: Project
    other: Project
    issues: dict[str, dict[str, Any]] = field(default_factory=dict)  # title → API issue


def issue_titled(tracker: TrackerServer, project: Project, title: str) -> dict[str, Any]:
    return next(i for i in tracker.issues(project, "is:all") if i["title"] == title)


@pytest.fixture(scope="module")
def data(tracker: TrackerServer) -> Data:
    """Two projects filled through the real SDK: a FastAPI crash three times (two users), a
    KeyError raised inside json.loads, a chained exception and a logging.error with params in
    `shop`; one issue in `other` (another release and environment), and one resolved issue."""
    pid = os.getpid()
    data = Data(shop=tracker.create_project(f"dash-shop-{pid}"), other=tracker.create_project(f"dash-other-{pid}"))
    with sentry(data.shop.dsn, release="shop@2.4.1", environment="production",
                server_name="web-7f9c"):
        client = TestClient(make_app(), raise_server_exceptions=False)
        for n, customer in enumerate(["ada", "grace", "ada"]):
            r = client.post(f"/orders/{1700 + n}/charge?coupon=SPRING", json={"amount": "40.00", "customer": customer},
                            headers={"X-Request-Id": f"req-{n}"})
            assert r.status_code == 500
        try:
            decode_feed('[{"sku": "SKU-1042", "qty": 3}]')
        except KeyError:
            sentry_sdk.capture_exception()
        try:
            load_config("{'debug': true}")
        except RuntimeError:
            sentry_sdk.capture_exception()
    with sentry(data.shop.dsn, release="shop@2.4.0", environment="production", attach_stacktrace=True):
        issue_refund("rf_17")
    with sentry(data.other.dsn, release="other@9.9.9", environment="canary"):
        sentry_sdk.capture_message("inventory drift detected in warehouse berlin-1", level="warning")
        sentry_sdk.capture_message("stale price feed for region eu-west", level="error")
    tracker.wait_issues(data.shop, 6)
    tracker.wait_issues(data.other, 2)
    for project in (data.shop, data.other):
        data.issues.update({i["title"]: i for i in tracker.issues(project)})
    stale = data.issues["stale price feed for region eu-west"]
    r = tracker.api("PUT", f"issues/{stale['id']}/", json={"status": "resolved"})
    assert r.status_code == 200, r.text
    return data


@pytest.fixture
def page(browser: Any, tracker: TrackerServer, tmp_path: Path) -> Iterator[Any]:
    """A 1400×900 page; every dialog is recorded (and dismissed); a full-page screenshot of
    wherever the test ended up is left in the test's tmp dir, to look at when it fails."""
    context = tracker.browser_context(browser, viewport={"width": 1400, "height": 900})
    page = context.new_page()
    page.set_default_timeout(10_000)
    page.dialogs = []

    def on_dialog(dialog: Any) -> None:
        page.dialogs.append(dialog.message)
        dialog.dismiss()

    page.on("dialog", on_dialog)
    try:
        yield page
    finally:
        with contextlib.suppress(Exception):
            shot = tmp_path / "page.png"
            page.screenshot(path=str(shot), full_page=True, timeout=5000)
            print(f"screenshot: {shot}")
        context.close()


def row_of(page: Any, title: str) -> Any:
    return page.locator("table.issues tbody tr", has=page.locator("a.issue-title", has_text=title))


# -- the user path -----------------------------------------------------------------------

FASTAPI_TITLE = "KeyError: 'gateway_reference'"


def test_issues_list_then_issue_page(tracker: TrackerServer, data: Data, page: Any) -> None:
    page.goto(f"{tracker.url}/issues/")
    assert page.title().startswith("Issues")
    page.select_option("select[name=project]", data.shop.slug)  # the filter form works without JavaScript
    page.click("form.filters button[type=submit]")
    assert f"project={data.shop.slug}" in page.url

    row = row_of(page, FASTAPI_TITLE)
    assert row.count() == 1
    def cell(name: str) -> str:
        return row.locator(f"td.{name}").inner_text().strip()

    assert (cell("level"), cell("events"), cell("users"), cell("issue-status")) == ("error", "3", "2", "unresolved")
    assert "/orders/{order_id}/charge" in row.locator(".culprit").inner_text()
    assert "shop@2.4.1" in row.inner_text()  # the release it was last seen in
    assert cell("last-seen") == "just now"

    row.locator("a.issue-title").click()
    page.wait_for_url(f"**/issues/{data.issues[FASTAPI_TITLE]['id']}/")
    assert page.locator(".exc-head").first.inner_text() == FASTAPI_TITLE
    crash = page.locator(".frame.crash")
    assert crash.count() == 1
    assert "gateway_reference_of" in crash.locator("summary .fn").inner_text()
    assert "crashed here" in crash.locator("summary").inner_text()
    line = crash.locator("pre.ctx span.hl")
    assert 'return hold["gateway_reference"]' in line.inner_text()
    box = line.bounding_box()
    assert box and box["y"] + box["height"] <= 900, f"the crash line is below the fold: {box}"
    assert "'hold_1702'" in crash.locator("table.vars").inner_text()  # local variables of the crash frame
    # library frames (FastAPI, Starlette) are folded, in-app frames open
    assert page.locator("details.frames:not([open])").count() >= 1
    assert page.locator("details.frame.app[open]", has_text="charge_order").count() == 1

    body = page.locator("body").inner_text()
    for expected in ("shop@2.4.1", "production", "http://testserver/orders/1702/charge", "SPRING", "req-2",
                     "ada@example.com", "tenant", "acme", "charging order 1702", "web-7f9c", "sentry.python",
                     "trace_id"):
        assert expected in body, expected
    assert page.locator(".evmeta").inner_text().count("shop@2.4.1") == 1


def test_event_navigation_and_raw_json(tracker: TrackerServer, data: Data, page: Any) -> None:
    issue_id = data.issues[FASTAPI_TITLE]["id"]
    events = tracker.api("GET", f"issues/{issue_id}/events/").json()
    newest_first = [e["eventID"] for e in sorted(events, key=lambda e: e["dateCreated"], reverse=True)]
    assert len(newest_first) == 3

    def shown() -> str:
        return page.url.rstrip("/").rsplit("/", 1)[-1] if "/events/" in page.url else newest_first[0]

    def link(label: str) -> Any:
        return page.locator(".nav a", has_text=label)

    page.goto(f"{tracker.url}/issues/{issue_id}/")
    assert link("Newer").count() == 0 and link("Latest").count() == 0  # already the latest: disabled
    link("Older").click()
    assert shown() == newest_first[1]
    assert "http://testserver/orders/1701/charge" in page.locator("body").inner_text()
    link("Oldest").click()
    assert shown() == newest_first[2]
    assert link("Older").count() == 0 and link("Oldest").count() == 0
    link("Newer").click()
    assert shown() == newest_first[1]
    link("Latest").click()
    assert shown() == newest_first[0]

    with page.expect_response(lambda r: r.url.endswith("/json")) as info:
        page.locator(".nav a", has_text="Raw JSON").click()
    response = info.value
    assert response.headers["content-type"].startswith("application/json")
    event = response.json()
    assert event["event_id"] == newest_first[0]
    assert event["release"] == "shop@2.4.1"
    assert event["exception"]["values"][-1]["type"] == "KeyError"
    assert event["request"]["url"] == "http://testserver/orders/1702/charge"
    page.go_back()
    assert shown() == newest_first[0]


def test_stack_details_chains_and_log_messages(tracker: TrackerServer, data: Data, page: Any) -> None:
    # a KeyError raised from json.loads' object hook: the json frames between are one folded group
    hook_issue = data.issues["KeyError: 'quantity'"]
    page.goto(f"{tracker.url}/issues/{hook_issue['id']}/")
    assert "order_line" in page.locator(".frame.crash summary .fn").inner_text()
    assert 'obj["quantity"]' in page.locator(".frame.crash pre.ctx span.hl").inner_text()
    folded = page.locator("details.frames:not([open]) > summary", has_text="library frames")
    assert folded.count() == 1 and "json" in folded.inner_text()

    # a chained exception: the thrown one first, its cause below it
    page.goto(f"{tracker.url}/issues/{data.issues['RuntimeError: config file is not valid JSON']['id']}/")
    heads = page.locator(".exc-head").all_inner_texts()
    assert heads[0] == "RuntimeError: config file is not valid JSON"
    assert heads[1].startswith("JSONDecodeError: Expecting property name enclosed in double quotes")
    assert "led to the exception above" in page.locator(".mechanism").nth(1).inner_text()

    # logging.error with params: the message, its template and params, the stack where it was logged
    page.goto(f"{tracker.url}/issues/{data.issues['refund rf_17 failed: gateway timeout']['id']}/")
    body = page.locator("body").inner_text()
    assert "refund %s failed: %s" in body and '["rf_17", "gateway timeout"]' in body
    assert "shop@2.4.0" in body and "shop.billing" in body
    assert "issue_refund" in page.locator(".frame.crash summary").inner_text()
    assert "captured here" in page.locator(".frame.crash summary").inner_text()


# -- filters -----------------------------------------------------------------------------

def listed(page: Any, url: str) -> str:
    page.goto(url)
    return " | ".join(page.locator("table.issues a.issue-title").all_inner_texts())


def test_filters_narrow_the_list(tracker: TrackerServer, data: Data, page: Any) -> None:
    base = f"{tracker.url}/issues/?"
    drift, stale = "inventory drift detected in warehouse berlin-1", "stale price feed for region eu-west"
    refund = "refund rf_17 failed: gateway timeout"

    shown = listed(page, base + urllib.parse.urlencode({"project": data.other.slug}))
    assert drift in shown and FASTAPI_TITLE not in shown and stale not in shown  # resolved: hidden by default

    shown = listed(page, base + urllib.parse.urlencode({"project": data.other.slug, "status": "resolved"}))
    assert stale in shown and drift not in shown
    shown = listed(page, base + urllib.parse.urlencode({"project": data.other.slug, "status": "all"}))
    assert stale in shown and drift in shown

    shown = listed(page, base + urllib.parse.urlencode({"environment": "canary"}))
    assert drift in shown and FASTAPI_TITLE not in shown and refund not in shown

    shown = listed(page, base + urllib.parse.urlencode({"project": data.shop.slug, "release": "shop@2.4.0"}))
    assert shown == refund
    shown = listed(page, base + urllib.parse.urlencode({"project": data.shop.slug, "release": "shop@2.4.1"}))
    assert FASTAPI_TITLE in shown and refund not in shown and drift not in shown

    # the same through the form: the chosen filters stay selected on the result page
    page.goto(base + urllib.parse.urlencode({"project": data.shop.slug}))
    page.select_option("select[name=release]", "shop@2.4.0")
    page.click("form.filters button[type=submit]")
    assert page.locator("table.issues a.issue-title").all_inner_texts() == [refund]
    assert page.locator("select[name=release]").input_value() == "shop@2.4.0"
    assert page.locator("select[name=project]").input_value() == data.shop.slug


# -- escaping ----------------------------------------------------------------------------

def hostile_event() -> dict[str, Any]:
    x = HOSTILE
    now = time.time()
    return {
        "event_id": uuid.uuid4().hex, "timestamp": now, "platform": "python", "level": "error",
        "release": f"evil@{x}", "environment": x, "server_name": x, "transaction": x, "logger": x,
        "logentry": {"message": f"{x} %s", "params": [x]},
        "exception": {"values": [{
            "type": "HostileError", "value": x, "module": x, "mechanism": {"type": x, "handled": False},
            "stacktrace": {"frames": [
                {"filename": x, "abs_path": x, "module": x, "function": "lib_" + x, "lineno": 9},
                {"filename": x, "function": x, "lineno": 3, "in_app": True, "context_line": x,
                 "pre_context": [x], "post_context": [x], "vars": {x: x, "nested": {"k": [x]}}}]}}]},
        "tags": {"evil": x, "tag" + x[:20]: "v"},
        "user": {"id": x, "email": x, "username": x, "ip_address": "203.0.113.9", "data": {"k": x}},
        "request": {"url": f"https://shop.example.com/{x}?q={urllib.parse.quote(x)}", "method": "POST",
                    "headers": {"X-Evil": x, "User-Agent": x, "Referer": x}, "data": {"field": x},
                    "cookies": {"session": x}, "env": {"REMOTE_ADDR": x}},
        "breadcrumbs": {"values": [{"timestamp": now - 1, "category": x, "message": x, "level": "error",
                                    "data": {"k": x}}]},
        "contexts": {"trace": {"trace_id": uuid.uuid4().hex, "span_id": "a" * 16, "op": x},
                     "os": {"name": x, "version": x}, "browser": {"name": x}, "runtime": {"name": x},
                     "custom": {x: x}},
        "extra": {"evil": x, x: [x, {"k": x}]},
        "sdk": {"name": x, "version": x},
    }


def test_event_data_is_shown_as_text_and_never_runs(tracker: TrackerServer, project: Project, page: Any) -> None:
    tracker.send_event(project, hostile_event())
    issue = tracker.wait_issues(project, 1)[0]
    pages = [f"/issues/{issue['id']}/", f"/issues/?project={project.slug}", f"/issues/{issue['id']}/events/",
             "/issues/", "/projects/"]

    for path in pages:
        r = tracker.web.get(path, timeout=10)
        assert r.status_code == 200, path
        for raw in ("<script>window.__xss", "<img src=x", "<svg onload", "onerror=\"window"):
            assert raw not in r.text, (path, raw)
        assert "default-src 'none'" in r.headers["content-security-policy"]  # and no script-src: none may run

    for path in pages[:3]:
        page.goto(tracker.url + path)
        assert page.evaluate("typeof window.__xss") == "undefined", path
        text = page.locator("body").inner_text()
        assert "<script>window.__xss=1</script>" in text, path
        assert "{{7*7}}" in text, path
    assert page.dialogs == []

    page.goto(tracker.url + pages[0])
    text = page.locator("body").inner_text()
    assert text.count('<img src=x onerror="window.__xss=1">') >= 15  # value, frames, vars, tags, user, request…
    assert "49" not in page.locator(".exc-head").inner_text()
    assert page.evaluate("document.querySelectorAll('script, iframe, object, embed, [onload], [onerror]').length") == 0
    crash = page.locator(".frame.crash pre.ctx span.hl").inner_text()
    assert "<script>window.__xss=1</script>" in crash

    raw = tracker.web.get(f"/issues/{issue['id']}/events/latest/json", timeout=10)
    assert raw.status_code == 200  # the raw JSON is served as JSON with nosniff, never as a page
    assert raw.headers["content-type"].startswith("application/json")
    assert raw.headers["x-content-type-options"] == "nosniff"
    assert raw.json()["exception"]["values"][0]["value"] == HOSTILE
    assert page.dialogs == []
