"""Attachments and user feedback, with the real sentry-sdk against a live server: scope attachments
stored with their event, listed on the event page and downloadable (hostile ones never render),
the size cap and the per-project quota, `feedback` items (sentry-python 2.75 has no feedback API: built
by hand as @sentry/browser's captureFeedback writes them and sent by the Python SDK's transport, and
from @sentry/node's own captureFeedback where node and tests/js are installed) and legacy
`user_report` items on the issue page, the legacy user-feedback API, items arriving before their
event, merges, deletion, retention, and the pages in headless Chromium."""
from __future__ import annotations

import hashlib
import os
import re
import shutil
import sqlite3
import subprocess
import time
import uuid
from pathlib import Path
from typing import Any

import httpx
import pytest
import sentry_sdk
from conftest import Configure, Project, TrackerServer, wait_for
from sentry_sdk.envelope import Envelope, Item, PayloadRef

LOG_TEXT = b"12:00:01 INFO starting\n12:00:02 ERROR charge failed <card declined> & retried\n"
BINARY = b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 8
HOSTILE = b"<script>alert('xss')</script><img src=x onerror=alert(1)>"
SVG = b'<svg xmlns="http://www.w3.org/2000/svg"><script>alert(1)</script></svg>'


def capture_with_attachments(attachments: list[dict[str, Any]], message: str = "charge failed") -> str:
    """Raise and capture a ValueError in a scope holding these attachments; returns the event id."""
    with sentry_sdk.new_scope() as scope:
        for attachment in attachments:
            scope.add_attachment(**attachment)
        try:
            raise ValueError(message)
        except ValueError:
            event_id = sentry_sdk.capture_exception()
    sentry_sdk.flush()
    assert event_id
    return event_id


def send(header: dict[str, Any], *items: Item) -> None:
    """An envelope the SDK has no API for, sent by the SDK's own transport (auth, compression)."""
    sentry_sdk.get_client().transport.capture_envelope(Envelope(headers={"sent_at": "2026-01-01T00:00:00Z", **header},
                                                                items=list(items)))
    sentry_sdk.flush()


def feedback_item(message: str, name: str, email: str, associated: str | None = None,
                  feedback_id: str | None = None) -> tuple[str, Item]:
    """A `feedback` item as @sentry/browser's captureFeedback writes it; returns its own event id too."""
    feedback_id = feedback_id or uuid.uuid4().hex
    fields = {"message": message, "name": name, "contact_email": email, "url": "https://shop.example.com/checkout?step=2",
              "source": "api", **({"associated_event_id": associated} if associated else {})}
    payload = {"type": "feedback", "event_id": feedback_id, "timestamp": time.time(), "platform": "javascript",
               "level": "info", "environment": "production", "contexts": {"feedback": fields,
                                                                           "browser": {"name": "Chrome", "version": "126"}},
               "sdk": {"name": "sentry.javascript.browser", "version": "8.30.0"}}
    return feedback_id, Item(payload=PayloadRef(json=payload), type="feedback")


def user_report_item(event_id: str, comments: str, name: str = "Old SDK", email: str = "old@example.com") -> Item:
    return Item(payload=PayloadRef(json={"event_id": event_id, "name": name, "email": email, "comments": comments}),
                type="user_report")


def api_attachments(tracker: TrackerServer, project: Project, event_id: str) -> list[dict[str, Any]]:
    r = tracker.api("GET", f"projects/tracker/{project.slug}/events/{event_id}/attachments/")
    assert r.status_code == 200, r.text
    return r.json()


def user_feedback(tracker: TrackerServer, project: Project) -> list[dict[str, Any]]:
    r = tracker.api("GET", f"projects/tracker/{project.slug}/user-feedback/")
    assert r.status_code == 200, r.text
    return r.json()


def issue_of(tracker: TrackerServer, project: Project, event_id: str) -> str:
    """The id of the issue the event went into (waits for it)."""
    def find() -> str | None:
        for issue in tracker.issues(project):
            r = tracker.api("GET", f"issues/{issue['id']}/events/{event_id}/")
            if r.status_code == 200:
                return issue["id"]
        return None
    return wait_for(find)


def event_page(tracker: TrackerServer, issue_id: str, event_id: str) -> str:
    page = tracker.web.get(f"/issues/{issue_id}/events/{event_id}/")
    assert page.status_code == 200
    return page.text


def links_of(page: str, filename: str) -> dict[str, str]:
    """The view/download links in the attachments row of a file."""
    row = re.search(rf'<td class="mono">{re.escape(filename)}</td>.*?</tr>', page, re.S)
    assert row, f"{filename} is not listed"
    return dict((kind, href) for href, kind in re.findall(r'href="([^"]+)">(view|download)</a>', row[0]))


def envelope_outcomes(tracker: TrackerServer, project: Project) -> list[str]:
    """Every item outcome of the project's envelope log, newest envelope first (from its pages)."""
    listing = tracker.web.get(f"/projects/{project.slug}/envelopes/").text
    return re.findall(r'class="item (?:kept|dropped)" title="([^"]*)"', listing)


# -- attachments --------------------------------------------------------------------------------

def test_attachments_stored_listed_and_downloaded(tracker: TrackerServer, project: Project, sdk: Any,
                                                  tmp_path: Path) -> None:
    """Text and binary scope attachments (bytes and a path) ride with the exception; the event page
    lists them, shows the text one escaped, and both download byte for byte (dashboard and API)."""
    config = tmp_path / "settings.json"
    config.write_bytes(b'{"retries": 3, "gateway": "acme"}')
    sdk(project.dsn)
    event_id = capture_with_attachments([
        {"bytes": LOG_TEXT, "filename": "app.log", "content_type": "text/plain"},
        {"bytes": BINARY, "filename": "screen.png", "content_type": "image/png"},
        {"path": str(config)}])
    issue_id = issue_of(tracker, project, event_id)
    listed = wait_for(lambda: len(a := api_attachments(tracker, project, event_id)) == 3 and a)
    by_name = {a["name"]: a for a in listed}
    assert set(by_name) == {"app.log", "screen.png", "settings.json"}
    assert by_name["app.log"]["size"] == len(LOG_TEXT) and by_name["app.log"]["mimetype"] == "text/plain"
    assert by_name["screen.png"]["type"] == "event.attachment" and by_name["settings.json"]["mimetype"] == "application/json"
    assert by_name["screen.png"]["sha1"] == hashlib.sha1(BINARY).hexdigest() and by_name["screen.png"]["dateCreated"]

    page = event_page(tracker, issue_id, event_id)
    assert "Attachments" in page and "screen.png" in page
    log_links, png_links, json_links = (links_of(page, n) for n in ("app.log", "screen.png", "settings.json"))
    assert "view" in log_links and "view" in json_links and "view" not in png_links  # binary: download only
    viewed = tracker.web.get(log_links["view"])
    assert viewed.status_code == 200
    assert "charge failed &lt;card declined&gt; &amp; retried" in viewed.text and "<card declined>" not in viewed.text

    for name, body in (("app.log", LOG_TEXT), ("screen.png", BINARY)):
        got = tracker.web.get(links_of(page, name)["download"])
        assert got.status_code == 200 and got.content == body
        assert got.headers["content-disposition"].startswith("attachment;") and name in got.headers["content-disposition"]
        assert got.headers["x-content-type-options"] == "nosniff"
    assert tracker.web.get(links_of(page, "screen.png")["download"]).headers["content-type"] == "image/png"
    api_file = tracker.api("GET", f"projects/tracker/{project.slug}/events/{event_id}/attachments/"
                           f"{by_name['screen.png']['id']}/", params={"download": "1"})
    assert api_file.status_code == 200 and api_file.content == BINARY
    assert api_file.headers["content-disposition"].startswith("attachment;")
    detail = tracker.api("GET", f"projects/tracker/{project.slug}/events/{event_id}/attachments/"
                                f"{by_name['app.log']['id']}/")
    assert detail.json()["name"] == "app.log"

    # the latest event page is the issue page: the card is there too; a wrong issue or id finds nothing
    assert "app.log" in tracker.web.get(f"/issues/{issue_id}/").text
    other = tracker.web.get(log_links["download"].replace(f"/issues/{issue_id}/", "/issues/999999/"))
    assert other.status_code == 404
    missing = f"projects/tracker/{project.slug}/events/{event_id}/attachments/999999/"
    assert tracker.api("GET", missing).status_code == 404


def test_hostile_attachments_download_and_never_render(tracker: TrackerServer, project: Project, sdk: Any) -> None:
    """HTML, SVG and a <script> in a text file: downloads only, never served as HTML or SVG; the text
    view escapes them."""
    sdk(project.dsn)
    event_id = capture_with_attachments([
        {"bytes": HOSTILE, "filename": "notes.txt", "content_type": "text/plain"},
        {"bytes": HOSTILE, "filename": "report.html", "content_type": "text/html"},
        {"bytes": SVG, "filename": "logo.svg", "content_type": "image/svg+xml"},
        {"bytes": HOSTILE, "filename": '../../"evil";.txt', "content_type": "text/html; charset=utf-8"}])
    issue_id = issue_of(tracker, project, event_id)
    wait_for(lambda: len(api_attachments(tracker, project, event_id)) == 4)
    page = event_page(tracker, issue_id, event_id)
    assert "<script>alert" not in page
    for name, expected_type in (("notes.txt", "text/plain"), ("report.html", "application/octet-stream"),
                                ("logo.svg", "application/octet-stream"),
                                ("../../&#34;evil&#34;;.txt", "application/octet-stream")):
        links = links_of(page, name)
        got = tracker.web.get(links["download"])
        assert got.status_code == 200 and got.headers["content-type"].split(";")[0] == expected_type, name
        disposition = got.headers["content-disposition"]
        assert disposition.startswith("attachment;") and "/" not in disposition.split(";")[1], disposition
        assert got.headers["x-content-type-options"] == "nosniff" and "sandbox" in got.headers["content-security-policy"]
        if "view" in links:
            viewed = tracker.web.get(links["view"]).text
            assert "&lt;script&gt;alert(" in viewed and "<script>alert" not in viewed and "<img src=x" not in viewed
    assert "view" not in links_of(page, "logo.svg")
    row = api_attachments(tracker, project, event_id)[2]
    via_api = tracker.api("GET", f"projects/tracker/{project.slug}/events/{event_id}/attachments/{row['id']}/",
                          params={"download": "1"})
    assert via_api.headers["content-type"] == "application/octet-stream"
    assert via_api.headers["content-disposition"].startswith("attachment;")


def test_attachment_and_feedback_before_their_event(tracker: TrackerServer, project: Project, sdk: Any) -> None:
    """An attachment in an envelope of its own and feedback naming an event not stored yet are kept
    under its id; when the event comes, its page shows the attachment and its issue the feedback."""
    sdk(project.dsn)
    event_id = uuid.uuid4().hex
    send({"event_id": event_id}, Item(payload=b"late event's log\n", type="attachment", content_type="text/plain",
                                      filename="early.log"))
    _, item = feedback_item("The page froze when I paid", "Early Bird", "early@example.com", associated=event_id)
    send({"event_id": uuid.uuid4().hex}, item)
    wait_for(lambda: user_feedback(tracker, project))
    assert api_attachments(tracker, project, event_id)[0]["name"] == "early.log"
    listing = tracker.web.get(f"/projects/{project.slug}/feedback/").text
    assert "The page froze when I paid" in listing and "not received (yet)" in listing
    assert user_feedback(tracker, project)[0]["issue"] is None

    sentry_sdk.capture_event({"event_id": event_id, "message": "payment form froze", "level": "error"})
    sentry_sdk.flush()
    issue_id = issue_of(tracker, project, event_id)
    page = event_page(tracker, issue_id, event_id)
    assert "early.log" in page and "The page froze when I paid" in page and "Early Bird" in page
    report = user_feedback(tracker, project)[0]
    assert report["issue"]["id"] == issue_id and report["eventID"] == event_id
    assert f'href="/issues/{issue_id}/#feedback"' in tracker.web.get(f"/projects/{project.slug}/feedback/").text


# -- feedback -----------------------------------------------------------------------------------

def test_feedback_items_on_the_issue_page_and_in_the_api(tracker: TrackerServer, project: Project, sdk: Any) -> None:
    """JS-style `feedback` items (one with a screenshot) and a legacy `user_report` item join the
    issue of their event, newest first; feedback of no event is listed on the project's page."""
    assert not hasattr(sentry_sdk, "capture_feedback"), "the SDK has a feedback API now: use it here"
    sdk(project.dsn)
    event_id = capture_with_attachments([], "checkout crashed")
    issue_id = issue_of(tracker, project, event_id)

    feedback_id, item = feedback_item("Checkout says <b>error</b> & nothing else", "Ada Lovelace", "ada@example.com",
                                      associated=event_id)
    send({"event_id": feedback_id}, item, Item(payload=BINARY, type="attachment", content_type="image/png",
                                               filename="screenshot.png"))
    time.sleep(0.05)
    send({"event_id": event_id}, user_report_item(event_id, "It happened twice today"))
    send({"event_id": event_id}, user_report_item(event_id, "It happened three times today"))  # replaces it
    retry_id, item = feedback_item("Checkout says <b>error</b> & nothing else", "Ada Lovelace", "ada@example.com",
                                   associated=event_id, feedback_id=feedback_id)
    send({"event_id": retry_id}, item)  # the same feedback again: stored once
    _, loose = feedback_item("Love the new dark mode", "Grace", "grace@example.com")
    send({}, loose)

    reports = wait_for(lambda: len(r := user_feedback(tracker, project)) == 3 and r)
    assert [r["comments"] for r in reports] == ["Love the new dark mode", "It happened three times today",
                                                "Checkout says <b>error</b> & nothing else"]
    assert set(reports[0]) >= {"id", "eventID", "name", "email", "comments", "dateCreated", "user", "event", "issue"}
    assert reports[0]["issue"] is None and reports[1]["issue"]["id"] == issue_id
    assert reports[2]["email"] == "ada@example.com" and reports[2]["eventID"] == event_id

    page = tracker.web.get(f"/issues/{issue_id}/").text
    card = page[page.index('id="feedback"'):]
    assert card.index("It happened three times today") < card.index("Checkout says")  # newest first
    assert "Checkout says &lt;b&gt;error&lt;/b&gt; &amp; nothing else" in card and "<b>error</b>" not in card
    assert "Ada Lovelace" in card and "ada@example.com" in card and "user report" in card
    assert "It happened twice today" not in card and "Love the new dark mode" not in card
    shot = re.search(r'screenshot\.png.*?href="([^"]+)">download', card, re.S)
    assert shot and tracker.web.get(shot[1]).content == BINARY
    outcomes = envelope_outcomes(tracker, project)
    assert "dropped: this feedback is stored already" in outcomes
    assert "stored (it replaced the earlier report on this event)" in outcomes
    assert "Love the new dark mode" in tracker.web.get(f"/projects/{project.slug}/feedback/").text


def test_legacy_user_feedback_api(tracker: TrackerServer, project: Project, sdk: Any) -> None:
    """POST/GET /api/0/projects/<org>/<project>/user-feedback/ in Sentry's shape."""
    sdk(project.dsn)
    event_id = capture_with_attachments([], "report me")
    issue_id = issue_of(tracker, project, event_id)
    path = f"projects/tracker/{project.slug}/user-feedback/"
    r = tracker.api("POST", path, json={"event_id": str(uuid.UUID(event_id)), "name": "Lin", "email": "lin@example.com",
                                        "comments": "Button did nothing; card 4111 1111 1111 1111"})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["eventID"] == event_id and body["name"] == "Lin" and body["issue"]["id"] == issue_id
    assert "4111" not in body["comments"] and "[Filtered]" in body["comments"]  # scrubbed as events are
    for bad in ({"event_id": "nope", "comments": "x"}, {"event_id": event_id, "comments": " "},
                {"event_id": event_id, "comments": "x", "email": "not an email"}, ["a list"]):
        assert tracker.api("POST", path, json=bad).status_code == 400, bad
    assert httpx.post(f"{tracker.url}/api/0/{path}", json={"event_id": event_id, "comments": "x"},
                      timeout=10).status_code == 401
    listed = user_feedback(tracker, project)
    assert len(listed) == 1 and listed[0]["id"] == body["id"] and "link" in tracker.api("GET", path).headers
    assert "Button did nothing" in tracker.web.get(f"/issues/{issue_id}/").text


def test_feedback_follows_a_merge(tracker: TrackerServer, project: Project, sdk: Any) -> None:
    sdk(project.dsn)
    first, second = (sentry_sdk.capture_event({"message": f"{name} broke", "level": "error", "fingerprint": [name]})
                     for name in ("cart", "basket"))
    sentry_sdk.flush()
    issues = {issue_of(tracker, project, first), issue_of(tracker, project, second)}
    send({"event_id": second}, user_report_item(second, "the basket is empty again"))
    wait_for(lambda: user_feedback(tracker, project))
    r = tracker.api("PUT", f"projects/tracker/{project.slug}/issues/", params={"id": sorted(issues)},
                    json={"merge": 1})
    assert r.status_code == 200, r.text
    parent = r.json()["merge"]["parent"]
    assert user_feedback(tracker, project)[0]["issue"]["id"] == parent
    assert "the basket is empty again" in tracker.web.get(f"/issues/{parent}/").text


def test_deleting_an_issue_takes_its_attachments_and_feedback(tracker: TrackerServer, project: Project,
                                                              sdk: Any) -> None:
    sdk(project.dsn)
    event_id = capture_with_attachments([{"bytes": LOG_TEXT, "filename": "gone.log"}], "delete me")
    issue_id = issue_of(tracker, project, event_id)
    send({"event_id": event_id}, user_report_item(event_id, "please fix"))
    wait_for(lambda: user_feedback(tracker, project) and api_attachments(tracker, project, event_id))
    r = tracker.api("DELETE", f"issues/{issue_id}/")
    assert r.status_code == 202
    assert api_attachments(tracker, project, event_id) == [] and user_feedback(tracker, project) == []


# -- caps, quota, retention (a server of this module's own) ------------------------------------------

SMALL_KEY, OLD_KEY = "a1" * 16, "b2" * 16
CONFIG = f"""
[retention]
interval = 0.5
max_age_days = 1

[attachments]
max_size = 1000
max_total = 2500

[[projects]]
name = "att-small"
dsn_key = "{SMALL_KEY}"
attachments = {{ max_total = 1200 }}

[[projects]]
name = "att-old"
dsn_key = "{OLD_KEY}"
"""


@pytest.fixture(scope="module")
def capped(configured: Configure) -> TrackerServer:
    return configured("attachments", CONFIG)


def dropped_attachments(server: TrackerServer) -> dict[str, int]:
    r = server.api("GET", "organizations/tracker/stats_v2/", params={
        "field": "sum(quantity)", "groupBy": ["reason", "category"], "category": "attachment_item", "statsPeriod": "1h",
        "interval": "1h"})
    assert r.status_code == 200, r.text
    return {g["by"]["reason"]: g["totals"]["sum(quantity)"] for g in r.json()["groups"]}


def test_size_cap_and_quota(capped: TrackerServer, sdk: Any) -> None:
    """Over [attachments] max_size: dropped at once; past the project's quota (max_total, here
    overridden per project): dropped in the writer. Both show in the envelope log and stats_v2."""
    project = capped.create_project("att-quota")
    sdk(project.dsn)
    first = capture_with_attachments([{"bytes": b"a" * 1500, "filename": "huge.log"},
                                      {"bytes": b"b" * 900, "filename": "one.log"},
                                      {"bytes": b"c" * 900, "filename": "two.log"}])
    second = capture_with_attachments([{"bytes": b"d" * 900, "filename": "three.log"}], "again")
    wait_for(lambda: len(envelope_outcomes(capped, project)) >= 6)
    outcomes = envelope_outcomes(capped, project)
    assert "dropped: larger than the attachment limit of 1000 bytes" in outcomes
    assert outcomes.count("dropped: attachment quota of the project is full") == 1
    assert [a["name"] for a in api_attachments(capped, project, first)] == ["one.log", "two.log"]
    assert api_attachments(capped, project, second) == []
    page = capped.web.get(f"/projects/{project.slug}/envelopes/").text
    assert 'title="dropped: attachment quota of the project is full"' in page
    assert wait_for(lambda: dropped_attachments(capped).get("attachment_quota", 0) >= 1, timeout=15)
    assert dropped_attachments(capped)["too_large"] >= 1

    small = capped.config_project("att-small", SMALL_KEY)  # its own quota: 1200 bytes
    sentry_sdk.init(small.dsn)
    event_id = capture_with_attachments([{"bytes": b"e" * 700, "filename": "x.log"},
                                         {"bytes": b"f" * 700, "filename": "y.log"}])
    wait_for(lambda: len(envelope_outcomes(capped, small)) >= 3)
    assert envelope_outcomes(capped, small).count("dropped: attachment quota of the project is full") == 1
    assert [a["name"] for a in api_attachments(capped, small, event_id)] == ["x.log"]


def test_retention_removes_attachments_with_their_events(capped: TrackerServer, sdk: Any) -> None:
    """Events beyond the max age go with their attachments (an issue keeps its first and latest event,
    and their attachments); an issue that goes altogether takes its feedback along."""
    project = capped.config_project("att-old", OLD_KEY)
    sdk(project.dsn)
    old = time.time() - 3 * 86400
    ids = {name: uuid.uuid4().hex for name in ("first.log", "middle.log", "latest.log", "gone.log")}
    # the reports come first, so a pass cannot delete an event before its report is linked to it
    send({"event_id": ids["middle.log"]}, user_report_item(ids["middle.log"], "about the kept issue"))
    send({"event_id": ids["gone.log"]}, user_report_item(ids["gone.log"], "about the old issue"))
    # the recent event first too: the kept issue is never all old, whenever a pass runs
    for fingerprint, timestamp, name in (("kept", time.time(), "latest.log"), ("kept", old, "first.log"),
                                         ("kept", old + 60, "middle.log"), ("gone", old, "gone.log")):
        with sentry_sdk.new_scope() as scope:
            scope.add_attachment(bytes=name.encode(), filename=name)
            sentry_sdk.capture_event({"event_id": ids[name], "message": f"{fingerprint} failure", "level": "error",
                                      "timestamp": timestamp, "fingerprint": [fingerprint]})
    sentry_sdk.flush()
    assert wait_for(lambda: envelope_outcomes(capped, project).count("stored") == 10)  # 4 events, 4 files, 2 reports
    wait_for(lambda: api_attachments(capped, project, ids["middle.log"]) == []
             and api_attachments(capped, project, ids["gone.log"]) == [], timeout=20)
    assert [a["name"] for a in api_attachments(capped, project, ids["first.log"])] == ["first.log"]
    assert [a["name"] for a in api_attachments(capped, project, ids["latest.log"])] == ["latest.log"]
    assert [r["comments"] for r in user_feedback(capped, project)] == ["about the kept issue"]
    with sqlite3.connect(capped.db) as conn:
        assert conn.execute("SELECT count(*) FROM attachments WHERE project_id = ?", (project.id,)).fetchone()[0] == 2


# -- in a browser -----------------------------------------------------------------------------------

def test_issue_and_event_pages_in_chromium(tracker: TrackerServer, project: Project, sdk: Any, browser: Any,
                                           tmp_path: Path) -> None:
    """The event page with its attachments and the issue's feedback, as a person sees it (screenshot in
    tmp_path); a hostile .html attachment only downloads, no script runs."""
    sdk(project.dsn, release="shop@2.4.1")
    event_id = capture_with_attachments([
        {"bytes": LOG_TEXT, "filename": "checkout.log", "content_type": "text/plain"},
        {"bytes": BINARY, "filename": "cart.png", "content_type": "image/png"},
        {"bytes": HOSTILE, "filename": "invoice.html", "content_type": "text/html"}], "card declined by gateway")
    issue_id = issue_of(tracker, project, event_id)
    for n, (who, email, words) in enumerate([
            ("Ada Lovelace", "ada@example.com", "I pressed Pay and got a blank page. Tried twice."),
            ("Grace Hopper", "grace@example.com", "Same here <script>alert(1)</script> — the card is fine."),
    ]):
        _, item = feedback_item(words, who, email, associated=event_id)
        send({"event_id": uuid.uuid4().hex}, item)
    wait_for(lambda: len(user_feedback(tracker, project)) == 2 and len(api_attachments(tracker, project, event_id)) == 3)

    context = tracker.browser_context(browser, viewport={"width": 1400, "height": 1000}, accept_downloads=True)
    page = context.new_page()
    dialogs: list[str] = []
    page.on("dialog", lambda d: (dialogs.append(d.message), d.dismiss()))
    page.goto(f"{tracker.url}/issues/{issue_id}/events/{event_id}/")
    card = page.locator("#attachments")
    assert card.is_visible() and "checkout.log" in card.inner_text() and "cart.png" in card.inner_text()
    feedback = page.locator("#feedback")
    assert feedback.is_visible()
    entries = feedback.locator(".feedback-entry")
    assert entries.count() == 2 and "Grace Hopper" in entries.nth(0).inner_text()  # newest first
    assert "<script>alert(1)</script>" in entries.nth(0).inner_text()  # shown as text
    feedback.scroll_into_view_if_needed()
    shot = tmp_path / "event-attachments-feedback.png"
    card.scroll_into_view_if_needed()
    page.screenshot(path=str(shot), full_page=True)
    assert shot.stat().st_size > 10_000

    with page.expect_download() as download:
        card.locator("tr", has_text="invoice.html").locator("a.download-attachment").click()
    assert download.value.suggested_filename == "invoice.html"
    assert Path(download.value.path()).read_bytes() == HOSTILE
    page.goto(f"{tracker.url}{links_of(event_page(tracker, issue_id, event_id), 'checkout.log')['view']}")
    assert "charge failed <card declined> & retried" in page.locator("pre").inner_text()
    page.screenshot(path=str(tmp_path / "text-attachment.png"))
    assert dialogs == []
    context.close()
    print(f"screenshots: {shot} {tmp_path / 'text-attachment.png'}")


# -- the official JavaScript SDK (npm's @sentry/node, as pinned in tests/js) -------------------------

NODE_SCRIPT = """
const Sentry = require("@sentry/node");
Sentry.init({ dsn: process.env.SENTRY_DSN, release: "shop-node@1.0.0" });
async function main() {
  const scope = Sentry.getCurrentScope();
  scope.addAttachment({ filename: "cart.json", data: JSON.stringify({ items: 3, coupon: "<none>" }),
                        contentType: "application/json" });
  let eventId;
  try { throw new TypeError("cart is undefined"); } catch (error) { eventId = Sentry.captureException(error); }
  scope.clearAttachments();
  Sentry.captureFeedback({ message: "My cart emptied itself", name: "Node User", email: "node@example.com",
                           url: "https://shop.example.com/cart", associatedEventId: eventId });
  await Sentry.flush(5000);
  console.log(eventId);
}
main();
"""


def test_captureFeedback_of_the_js_sdk(tracker: TrackerServer, project: Project, tmp_path: Path) -> None:
    """@sentry/node's captureFeedback and addAttachment, in a real node process."""
    modules = Path(__file__).resolve().parent / "js" / "node_modules"
    node = shutil.which("node")
    if not node or not (modules / "@sentry" / "node" / "package.json").exists():
        pytest.skip("node or @sentry/node (tests/js, `npm ci`) is not installed")
    script = tmp_path / "feedback.js"
    script.write_text(NODE_SCRIPT)
    out = subprocess.run([node, str(script)], env={**os.environ, "SENTRY_DSN": project.dsn, "NODE_PATH": str(modules)},
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    event_id = out.stdout.strip().splitlines()[-1]
    issue_id = issue_of(tracker, project, event_id)
    report = wait_for(lambda: user_feedback(tracker, project))[0]
    assert report["comments"] == "My cart emptied itself" and report["email"] == "node@example.com"
    assert report["issue"]["id"] == issue_id and report["eventID"] == event_id
    assert [a["name"] for a in api_attachments(tracker, project, event_id)] == ["cart.json"]
    page = event_page(tracker, issue_id, event_id)
    assert "My cart emptied itself" in page and "Node User" in page
    assert "&lt;none&gt;" in tracker.web.get(links_of(page, "cart.json")["view"]).text
