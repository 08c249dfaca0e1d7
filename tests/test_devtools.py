"""For people testing an SDK integration, with the real sentry-sdk: the envelope log (what arrived
and what became of each item), the SDK's `spotlight=` option posting to /stream, `tracker tail`,
and the live page (server-sent events) in headless Chromium."""
from __future__ import annotations

import json
import queue
import re
import subprocess
import threading
import uuid
from pathlib import Path
from typing import Any, Callable

import httpx
import sentry_sdk
from conftest import ROOT, TRACKER, Project, TrackerServer, wait_for


def envelope_rows(tracker: TrackerServer, project: Project) -> list[tuple[str, str]]:
    """(envelope id, its item badges as text) from the project's envelope log page."""
    page = tracker.web.get(f"/projects/{project.slug}/envelopes/")
    assert page.status_code == 200
    return re.findall(r'href="/projects/[^/]+/envelopes/(\d+)/".*?</td>.*?<td>(.*?)</td></tr>', page.text, re.S)


def raw_payloads_logged(tracker: TrackerServer, project: Project) -> None:
    """Scrubbing off, as a developer testing an SDK may set it: the log keeps payloads as sent."""
    r = tracker.api("PUT", f"projects/tracker/{project.slug}/", json={"dataScrubber": False})
    assert r.status_code == 200, r.text


def test_envelope_log_shows_each_item_and_its_outcome(tracker: TrackerServer, project: Project, sdk: Any) -> None:
    raw_payloads_logged(tracker, project)
    sdk(project.dsn, release="devtools@1.0")
    sentry_sdk.capture_message("looked at in the envelope log", level="error")
    sentry_sdk.flush()
    tracker.wait_issues(project, 1)
    event_id = uuid.uuid4().hex
    body = b"\n".join(json.dumps(part).encode() for part in (
        {"event_id": event_id, "sdk": {"name": "hand.made", "version": "0.1"}},
        {"type": "event"}, {"message": "<b>twice</b>", "level": "error"},
        {"type": "profile_chunk"}, {"profiler_id": "x"}))
    auth = {"X-Sentry-Auth": f"Sentry sentry_version=7, sentry_key={project.key}"}
    for _ in range(2):
        assert httpx.post(f"{tracker.url}/api/{project.id}/envelope/", content=body, headers=auth, timeout=10).is_success

    rows = wait_for(lambda: (r := envelope_rows(tracker, project)) and len(r) >= 3 and r)
    newest, first_time, from_sdk = rows[0], rows[1], rows[-1]
    assert "profile_chunk" in newest[1] and 'class="item dropped"' in newest[1]
    detail = tracker.web.get(f"/projects/{project.slug}/envelopes/{newest[0]}/").text
    assert "hand.made/0.1" in detail and "dropped: an event with this id is stored already" in detail
    assert "dropped: this tracker does not store this item type" in detail
    assert "&lt;b&gt;twice&lt;/b&gt;" in detail and "<b>twice" not in detail  # payloads are shown as text
    assert "stored" in tracker.web.get(f"/projects/{project.slug}/envelopes/{first_time[0]}/").text
    sdk_page = tracker.web.get(f"/projects/{project.slug}/envelopes/{from_sdk[0]}/").text
    assert re.search(r"sentry\.python[^<]*/2\.\d+", sdk_page) and "looked at in the envelope log" in sdk_page
    assert tracker.web.get(f"/projects/{project.slug}/envelopes/999999999/").status_code == 404


def test_a_scrubbing_projects_log_keeps_no_payload_that_may_hold_secrets(tracker: TrackerServer, project: Project,
                                                                           sdk: Any) -> None:
    sdk(project.dsn)
    sentry_sdk.set_extra("db_password", "hunter2-very-secret")
    sentry_sdk.capture_message("with a secret", level="error")
    sentry_sdk.flush()
    issue = tracker.wait_issues(project, 1)[0]
    [(envelope_id, _)] = wait_for(lambda: envelope_rows(tracker, project))
    detail = tracker.web.get(f"/projects/{project.slug}/envelopes/{envelope_id}/").text
    assert "hunter2" not in detail and "Stored as" in detail
    event = tracker.latest_event(issue["id"])
    assert f'href="/issues/{issue["id"]}/events/{event["eventID"]}/json"' in detail


def test_store_endpoint_is_logged_as_one_event_item(tracker: TrackerServer, project: Project) -> None:
    raw_payloads_logged(tracker, project)
    r = httpx.post(f"{tracker.url}/api/{project.id}/store/", json={"message": "via store"}, timeout=10,
                   headers={"X-Sentry-Auth": f"Sentry sentry_version=7, sentry_key={project.key}, "
                                             "sentry_client=raven-legacy/9.9"})
    assert r.status_code == 200
    [(envelope_id, items)] = envelope_rows(tracker, project)
    assert ">event</span>" in items
    detail = tracker.web.get(f"/projects/{project.slug}/envelopes/{envelope_id}/").text
    assert "raven-legacy/9.9" in detail and "via store" in detail


def test_spotlight_option_posts_to_stream_without_a_dsn(tracker: TrackerServer) -> None:
    marker = uuid.uuid4().hex[:8]
    sentry_sdk.init(spotlight=f"{tracker.url}/stream", default_integrations=False)
    try:
        try:
            raise KeyError(f"spotlight-{marker}")
        except KeyError:
            sentry_sdk.capture_exception()
        sentry_sdk.flush()
    finally:
        sentry_sdk.get_client().close()
        sentry_sdk.init()

    def found() -> list[dict[str, Any]] | None:
        r = tracker.api("GET", "projects/tracker/local/issues/", params={"query": f"spotlight-{marker}"})
        return r.json() if r.status_code == 200 and r.json() else None
    [issue] = wait_for(found, timeout=15)
    assert issue["metadata"]["type"] == "KeyError"
    assert httpx.post(f"{tracker.url}/stream", content=b"not an envelope", timeout=10).status_code == 400


def read_lines(proc: subprocess.Popen[str]) -> queue.Queue[str]:
    lines: queue.Queue[str] = queue.Queue()
    threading.Thread(target=lambda: [lines.put(line) for line in proc.stdout or []], daemon=True).start()
    return lines


def next_line(lines: queue.Queue[str], accept: Callable[[str], bool]) -> str:
    def take() -> str | None:
        try:
            line = lines.get(timeout=0.2)
        except queue.Empty:
            return None
        return line if accept(line) else None
    return wait_for(take, timeout=15)


def test_tracker_tail_prints_events_as_the_sdk_sends_them(tracker: TrackerServer, project: Project, sdk: Any) -> None:
    cmd = [*TRACKER, "--db", str(tracker.db), "tail"]
    plain = subprocess.Popen(cmd + ["--project", project.slug], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                             cwd=ROOT)
    as_json = subprocess.Popen(cmd + ["--json"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT)
    try:
        for proc in (plain, as_json):  # both follow from now on
            assert "Following the events stored in" in (proc.stderr.readline() if proc.stderr else "")
        plain_lines, json_lines = read_lines(plain), read_lines(as_json)
        sdk(project.dsn, release="tail@1")
        try:
            1 / 0
        except ZeroDivisionError:
            sentry_sdk.capture_exception()
        sentry_sdk.capture_message("tailed message", level="warning")
        sentry_sdk.flush()
        line = next_line(plain_lines, lambda line: "ZeroDivisionError" in line)
        assert project.slug in line and " error " in line and "test_tracker_tail" in line  # the culprit
        assert "tailed message" in next_line(plain_lines, lambda line: "tailed" in line)
        record = json.loads(next_line(json_lines, lambda line: "tailed message" in line))
        assert record["project"] == project.slug and record["level"] == "warning"
        assert tracker.web.get(f"/issues/{record['issue_id']}/events/{record['event_id']}/").status_code == 200
    finally:
        for proc in (plain, as_json):
            proc.terminate()
            proc.wait(10)


def test_live_stream_sends_new_events(tracker: TrackerServer, project: Project, sdk: Any) -> None:
    newest = tracker.web.get("/live/").text
    after = re.search(r'data-after="(\d+)"', newest)[1]  # type: ignore[index]
    sdk(project.dsn)
    sentry_sdk.capture_message("streamed to the page", level="error")
    sentry_sdk.flush()
    with tracker.web.stream("GET", f"/live/events?after={after}") as stream:
        assert stream.headers["content-type"].startswith("text/event-stream")
        for line in stream.iter_lines():
            if line.startswith("data: ") and "streamed to the page" in line:
                assert json.loads(line[6:])["project"] == project.slug
                break


def test_live_page_updates_in_the_browser(tracker: TrackerServer, project: Project, sdk: Any, browser: Any,
                                          tmp_path: Path) -> None:
    context = tracker.browser_context(browser, viewport={"width": 1300, "height": 800})
    page = context.new_page()
    problems: list[str] = []
    page.on("console", lambda m: problems.append(m.text) if m.type == "error" else None)
    page.on("pageerror", lambda e: problems.append(str(e)))
    page.goto(f"{tracker.url}/live/")
    page.wait_for_function("document.querySelector('#live-state').textContent.startsWith('live')", timeout=10_000)
    sdk(project.dsn)
    sentry_sdk.capture_message('<img src=x onerror="window.__xss=1"> live', level="error")
    sentry_sdk.flush()
    row = page.locator("#live tbody tr.fresh", has_text="live").first
    row.wait_for(timeout=15_000)
    assert '<img src=x onerror="window.__xss=1"> live' in row.inner_text()
    assert page.evaluate("typeof window.__xss") == "undefined" and problems == []
    page.screenshot(path=str(tmp_path / "live.png"))
    context.close()
