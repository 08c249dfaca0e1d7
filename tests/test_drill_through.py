"""A dashboard that leads somewhere and tells the truth (issue 18): every value that can filter is a
link, every miss is the styled page, and times, counts and messages agree across pages."""
from __future__ import annotations

import html
import json
import os
import re
import subprocess
import sys
import time
import urllib.parse
import uuid
from pathlib import Path

import httpx
import pytest
from conftest import ROOT, Project, TrackerServer, envelope, free_port, wait_for

from test_cli import clean_env, read_until


def event(message: str, **fields: object) -> dict[str, object]:
    return {"event_id": uuid.uuid4().hex, "message": message, "level": "error", "platform": "python", **fields}


def issue_id_of(tracker: TrackerServer, project: Project, count: int = 1) -> str:
    return tracker.wait_issues(project, count)[0]["id"]


def links(page: str) -> set[str]:
    return {html.unescape(h) for h in re.findall(r'href="([^"]+)"', page)}


def test_every_filterable_value_on_the_issue_page_is_a_link_that_finds_the_issue(tracker: TrackerServer,
                                                                                  project: Project) -> None:
    release = f"drill@{uuid.uuid4().hex[:6]}"
    tracker.send_event(project, event("order ord_1 failed", release=release, environment="staging",
                                      transaction="/orders/{id}", tags={"region": "eu-west-1"},
                                      user={"id": "u-77", "email": "ann@example.org"},
                                      contexts={"trace": {"trace_id": "a" * 32, "span_id": "b" * 16}}))
    issue_id = issue_id_of(tracker, project)
    hrefs = links(tracker.web.get(f"/issues/{issue_id}/").text)
    q = lambda key, value: "/issues/?" + urllib.parse.urlencode({"project": project.slug, "q": f'{key}:"{value}"'})
    expected = {f"/releases/{urllib.parse.quote(release, safe='')}/",
                "/issues/?" + urllib.parse.urlencode({"project": project.slug, "environment": "staging"}),
                q("region", "eu-west-1"), q("level", "error"), q("transaction", "/orders/{id}"),
                q("user.id", "u-77"), q("user.email", "ann@example.org"), q("trace", "a" * 32)}
    assert expected <= hrefs, expected - hrefs
    for href in expected:
        page = tracker.web.get(href)
        assert page.status_code == 200, href
        assert f'href="/issues/{issue_id}/"' in page.text or release in page.text, href


def test_unknown_urls_and_bad_filters_get_the_styled_page(tracker: TrackerServer, project: Project) -> None:
    for path, status, title, words in (
            ("/no/such/page/", 404, "Not found", "Nothing here: /no/such/page/"),
            ("/issues/999999999/", 404, "Not found", "No such issue."),
            ("/releases/nope-1.0/", 404, "Not found", "No such release."),
            ("/issues/?sort=bogus", 400, "Bad request", "Unknown sort &#39;bogus&#39;"),
            ("/issues/?status=sleeping", 400, "Bad request", "Unknown status"),
            ("/issues/?project=nope", 404, "Not found", "No project &#39;nope&#39;"),
            ("/releases/?project=nope", 404, "Not found", "No project &#39;nope&#39;"),
            ("/monitors/?project=nope", 404, "Not found", "No project &#39;nope&#39;"),
            ("/projects/nope/overview/", 404, "Not found", "No such project.")):
        r = tracker.web.get(path)
        assert r.status_code == status and r.headers["content-type"].startswith("text/html"), path
        assert f"<title>{title} · tracker</title>" in r.text and words in r.text and 'class="top"' in r.text, path
    assert tracker.web.get(f"/projects/{project.slug}/").headers["location"] == f"/projects/{project.slug}/overview/"
    api = httpx.get(f"{tracker.url}/api/0/no/such/", headers={"Authorization": f"Bearer {tracker.token}"})
    assert api.status_code == 404 and api.json()["detail"]


def test_assigning_to_someone_who_is_no_user_is_refused(tracker: TrackerServer, project: Project) -> None:
    tracker.send_event(project, event("assign me"))
    issue_id = issue_id_of(tracker, project)
    r = tracker.form(f"/issues/{issue_id}/", {"assignedTo": "nobody@example.org"})
    assert r.status_code == 400 and "No user &#39;nobody@example.org&#39;" in r.text
    assert tracker.api("GET", f"issues/{issue_id}/").json()["assignedTo"] is None
    r = tracker.form(f"/issues/{issue_id}/", {"assignedTo": "me"}, follow_redirects=True)
    assert "assigned to <b>admin</b>" in r.text


def test_live_and_tail_show_each_events_own_message(tracker: TrackerServer, project: Project) -> None:
    for order in ("ord_777", "ord_555"):
        tracker.send_event(project, event(f"payment failed for order {order}", fingerprint=["one-issue"]))
    issue_id_of(tracker, project, 2)
    live = tracker.web.get("/live/").text
    assert "payment failed for order ord_555" in live and "payment failed for order ord_777" in live
    assert f'<a href="/issues/?project={project.slug}">' in live and "q=level%3A%22error%22" in live
    tail = subprocess.Popen([sys.executable, str(ROOT / "tracker.py"), "--db", str(tracker.db), "tail", "--json",
                             "--last", "50", "--project", project.slug], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                            text=True, env=clean_env())
    try:
        lines = read_until(tail, lambda line: json.loads(line)["title"].endswith("ord_555"), timeout=30)
    finally:
        tail.terminate()
        tail.wait(10)
    titles = [json.loads(line)["title"] for line in lines]
    assert titles[-2:] == ["payment failed for order ord_777", "payment failed for order ord_555"]


def test_times_agree_for_an_event_that_arrives_late(tracker: TrackerServer, project: Project) -> None:
    """An event from two days ago (an offline queue, `tracker send`): the release it creates, the
    issue's first seen and its Activity card all say two days, not 'just now'."""
    release = f"late@{uuid.uuid4().hex[:6]}"
    tracker.send_event(project, event("late one", release=release, timestamp=time.time() - 2 * 86400))
    issue_id = issue_id_of(tracker, project)
    page = tracker.web.get(f"/issues/{issue_id}/").text
    activity = re.search(r'<ul class="activity">(.*?)</ul>', page, re.S)[1]
    assert "2 d ago" in activity and "just now" not in activity
    assert "<b>2 d ago</b>" in page.replace('<b title', '<b').replace('">2 d ago', '>2 d ago') or "2 d ago" in page
    created = tracker.api("GET", f"organizations/tracker/releases/{release}/").json()["dateCreated"]
    assert time.time() - time.mktime(time.strptime(created[:19], "%Y-%m-%dT%H:%M:%S")) + time.timezone > 86400
    releases = tracker.web.get("/releases/").text
    row = re.search(rf"{re.escape(release)}</a></td>\s*<td[^>]*>([^<]+)</td>", releases)
    assert row and row[1] == "2 d ago"


def test_envelope_log_shows_the_length_the_sdk_sent(tracker: TrackerServer, project: Project) -> None:
    body = envelope(None, ({"type": "event"}, event("measured " + "x" * 300)))
    assert tracker.send_envelope(project, body=body).status_code == 200
    listing = wait_for(lambda: re.search(r'/envelopes/(\d+)/', tracker.web.get(f"/projects/{project.slug}/envelopes/").text))
    page = tracker.web.get(f"/projects/{project.slug}/envelopes/{listing[1]}/").text
    sent = json.loads(body.split(b"\n")[1])["length"]
    assert f"&#34;length&#34;: {sent}" in page, page


def test_numbers_are_formatted_and_plural() -> None:
    import tracker as t
    assert [t.percent(v) for v in (None, 0, 0.0008343, 0.5, 0.99951, 0.99999, 1, 0.0000001)] == \
        ["—", "0%", "0.08%", "50%", "99.95%", "99.99%", "100%", "<0.01%"]
    assert (t.count(14383), t.plural(1, "issue"), t.plural(2, "issue"), t.plural(14383, "event")) == \
        ("14,383", "1 issue", "2 issues", "14,383 events")


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory):
    """`tracker demo --stream 0.5` as a person starts it, in a directory of its own."""
    tmp = tmp_path_factory.mktemp("demo")
    port = free_port()
    proc = subprocess.Popen([sys.executable, str(ROOT / "tracker.py"), "demo", "--port", str(port), "--stream", "0.5"],
                            stdout=subprocess.PIPE, text=True, cwd=tmp, env=clean_env())
    try:
        lines = read_until(proc, lambda line: line.startswith("Open "))
        client = httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=10)
        login = lines[-1].split()[1]
        wait_for(lambda: _signed_in(client, login), timeout=30)
        yield client, tmp
    finally:
        proc.terminate()
        proc.wait(10)


def _signed_in(client: httpx.Client, login: str) -> bool:
    try:
        return client.get(login).status_code == 303
    except httpx.TransportError:
        return False


def test_the_demo_fills_every_page(demo) -> None:
    client, tmp = demo
    monitors = client.get("/monitors/").text
    assert {"mon mon-ok", "mon mon-error", "mon mon-missed"} <= set(re.findall(r'class="(mon mon-\w+)"', monitors))
    feedback = client.get("/projects/payments-service/feedback/").text
    assert "Lena Fischer" in feedback
    issue = re.search(r'href="(/issues/\d+/)', feedback)
    assert issue and "capture.log" in client.get(issue[1]).text
    release = client.get("/releases/").text
    version = re.search(r'href="/releases/(payments-service[^"]+)/"', release)[1]
    page = client.get(f"/releases/{version}/").text
    assert "Capture: compare against the authorized amount" in page and "deploy #412" in page
    assert "Error budget" in client.get("/projects/payments-service/slo/").text
    alerts = wait_for(lambda: (t := client.get("/alerts/").text) and "delivered" in t and t)
    assert "demo alert log" in alerts
    log = wait_for(lambda: (tmp / "tracker-demo.alerts.log").exists() and (tmp / "tracker-demo.alerts.log").read_text())
    assert json.loads(log.splitlines()[0])
    health = re.search(r'<div class="card health">(.*?)</div></div>', page, re.S)[1]
    assert re.findall(r'<div class="my-6"><b>([^<]+)</b>', health) == ["prod"]  # sessions in the events' environment


def test_the_demo_stream_keeps_events_coming(demo) -> None:
    client, _ = demo
    newest = lambda: max(map(int, re.findall(r'data-after="(\d+)"', client.get("/live/").text)), default=0)
    first = newest()
    wait_for(lambda: newest() > first + 2, timeout=20)


def test_channel_form_shows_the_chosen_kinds_fields_and_dark_mode_follows_the_browser(tracker: TrackerServer,
                                                                                       browser) -> None:
    context = tracker.browser_context(browser, viewport={"width": 1400, "height": 900}, color_scheme="dark")
    page = context.new_page()
    page.goto(f"{tracker.url}/alerts/")
    visible = lambda field: page.locator(f'form.channel-form [name="{field}"]').is_visible()
    for kind, shown, hidden in (("slack", ["url", "name"], ["host", "routing_key", "token", "secret"]),
                                ("email", ["host", "port", "from", "to", "password"], ["url", "routing_key", "token"]),
                                ("pagerduty", ["routing_key"], ["url", "host", "allow_private"]),
                                ("jira", ["url", "token", "project", "email"], ["host", "secret", "routing_key"]),
                                ("webhook", ["url", "secret", "allow_private"], ["host", "token"])):
        page.select_option('form.channel-form select[name="kind"]', kind)
        assert all(visible(f) for f in shown) and not any(visible(f) for f in hidden), kind
    assert page.evaluate("getComputedStyle(document.body).backgroundColor") == "rgb(13, 17, 23)"
    assert page.evaluate("getComputedStyle(document.querySelector('.card')).backgroundColor") == "rgb(22, 27, 34)"
    light = tracker.browser_context(browser, color_scheme="light").new_page()
    light.goto(f"{tracker.url}/alerts/")
    assert light.evaluate("getComputedStyle(document.body).backgroundColor") == "rgb(247, 248, 250)"
    context.close()


def test_charts_have_a_y_axis_and_hover_values(tracker: TrackerServer, project: Project) -> None:
    for n in range(3):
        tracker.send_event(project, event(f"chart {n}"))
    tracker.wait_issues(project, 3)
    page = tracker.web.get(f"/projects/{project.slug}/overview/").text
    axis = re.search(r'<div class="yaxis" aria-hidden="true">(.*?)</div>', page)[1]
    assert re.findall(r"<span>([\d,]+)</span>", axis) == ["4", "2", "0"]
    assert re.search(r"<title>[^<]+: 3 in all</title>", page) and re.search(r"<title>[^<]+: 3 error</title>", page)
    assert "<b>3</b><span>events</span>" in page


def test_the_events_of_an_issue_filter_by_their_release_environment_and_user(tracker: TrackerServer,
                                                                               project: Project) -> None:
    for n, (release, env, user) in enumerate((("ev@1", "prod", "u1"), ("ev@2", "staging", "u2"))):
        tracker.send_event(project, event(f"same {n}", fingerprint=["same"], release=release, environment=env,
                                          user={"id": user}))
    issue_id = issue_id_of(tracker, project, 2)
    page = tracker.web.get(f"/issues/{issue_id}/events/").text
    for key, value in (("release", "ev@2"), ("environment", "staging"), ("user", "id:u2")):
        href = "?" + urllib.parse.urlencode({"q": f'{key}:"{value}"'})
        assert f'href="{html.escape(href)}"' in page, key
        rows = tracker.web.get(f"/issues/{issue_id}/events/{href}").text
        assert "same 1" in rows and "same 0" not in rows, key
