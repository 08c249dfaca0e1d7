"""Hardening, end to end against the live server: what an attacker who controls event data (or a
query string, or the ingest endpoint) can do to the tracker, and what they must not be able to do.

1. XSS, every page: events whose every string field holds `<script>`, `"><img onerror=…>` and
   `javascript:` URLs are rendered on every dashboard page that can show them; each page is parsed
   (no element or attribute may come from event data) and opened in headless Chromium twice: as
   served (the CSP must have had nothing to block) and with the CSP bypassed (escaping alone must
   hold), with no script run and no dialog.
2. The search parser under fuzzing (hypothesis): the JSON API and both dashboard search boxes
   answer 200 or a clear 400, never a 5xx, never a hang.
3. Liveness: the dashboard keeps answering while ingest is flooded, and every acknowledged event
   is stored.
4. Bad ingest input not covered by test_ingest.py: invalid UTF-8, a 900 KB string, wrong types in
   every top-level field, a gzip bomb inside an envelope item, JSON nested right at the limit.
"""
from __future__ import annotations

import contextlib
import gzip
import json
import re
import sqlite3
import threading
import time
import urllib.parse
import uuid
from dataclasses import dataclass, field
from html.parser import HTMLParser
from pathlib import Path
from typing import Any, Callable, Iterator

import httpx
import pytest
import sentry_sdk
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

import tracker as t
from conftest import ADMIN_PASSWORD, Configure, Project, TrackerServer, auth, envelope
from receivers import WebhookReceiver, running
from test_alerts import FAST, WEBHOOK, capture_events, settled
from test_dashboard import HOSTILE, hostile_event
from test_ingest import zeros_bomb

SHORT = '<script>window.__xss=1</script>"><img src=x onerror=alert(1)>'  # fits names capped at 100
SLASHLESS = '"><img src=x onerror=alert(1)><svg onload=alert(1)> {{7*7}}'  # a release version holds no '/'
JS_URL = "javascript:alert(1)"
BREAKOUT = f"'\"><img src=x onerror=alert(1)> {JS_URL} \" onmouseover=alert(1) x=\""
MARK = '<img src=x onerror="window.__xss=1">'  # a piece of HOSTILE: shown as text wherever HOSTILE is
SCRIPT = "<script>window.__xss=1</script>"  # another, without quotes (JSON shown as JSON escapes them)


# =============================================================================
# 1. XSS on every page
# =============================================================================

# -- what a page may contain -------------------------------------------------------------

ACTIVE_TAGS = {"script", "iframe", "frame", "frameset", "object", "embed", "applet", "base", "img", "image",
               "video", "audio", "source", "track", "math", "style", "portal", "template", "noscript",
               "foreignobject", "use", "animate", "set", "handler", "listener"}  # the SVG ones: charts need none
OWN_SCRIPTS = {"/static/live.js"}  # the live page's, a file: no inline script anywhere
OWN_LINKS = {("stylesheet", "/static/tracker.css"), ("icon", "/static/favicon.svg")}  # base.html's
URL_ATTRIBUTES = {"href", "src", "action", "formaction", "xlink:href", "data", "poster", "background", "ping"}


def url_is_inert(value: str) -> bool:
    """A link target that runs nothing: relative, or http(s). Browsers drop ASCII whitespace and
    control characters anywhere in a scheme, so `java\\tscript:` is `javascript:`."""
    squeezed = re.sub(r"[\x00-\x20]", "", value).lower()
    scheme = re.match(r"([a-z][a-z0-9+.\-]*):", squeezed)
    return scheme is None or scheme[1] in ("http", "https")


class MarkupAudit(HTMLParser):
    """Every element and attribute of a page that could run script or load something, and its
    text (entities decoded): event data must only ever be in the latter."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.problems: list[str] = []
        self.texts: list[str] = []

    @property
    def text(self) -> str:
        return "".join(self.texts)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        found = dict(attrs)
        if tag == "script" and found.get("src") in OWN_SCRIPTS and len(attrs) == 1:
            return
        if tag in ACTIVE_TAGS:
            self.problems.append(f"<{tag}> element")
        if tag == "meta" and "http-equiv" in found:
            self.problems.append(f"<meta http-equiv={found['http-equiv']!r}>")
        if tag == "link":
            if (found.get("rel"), found.get("href")) not in OWN_LINKS:
                self.problems.append(f"<link rel={found.get('rel')!r} href={found.get('href')!r}>")
            return
        for name, value in attrs:
            if name.startswith("on"):
                self.problems.append(f"<{tag} {name}=…> event handler")
            if name in URL_ATTRIBUTES and value and not url_is_inert(value):
                self.problems.append(f"<{tag} {name}={value[:60]!r}>")

    def handle_data(self, data: str) -> None:
        if self.lasttag != "script":  # our own script's element has no text; event data is never in one
            self.texts.append(data)


def audit_markup(page: str) -> MarkupAudit:
    audit = MarkupAudit()
    audit.feed(page)
    audit.close()
    return audit


def assert_strict_csp(csp: str) -> None:
    """No script at all, or only our own files: never inline script, eval or another origin."""
    assert "default-src 'none'" in csp, csp
    script_src = re.search(r"script-src([^;]*)", csp)
    assert script_src is None or script_src[1].split() == ["'self'"], csp


def assert_inert(r: httpx.Response, shows: str | None = None) -> None:
    """The page has no live markup, and (when given) shows `shows` as text."""
    audit = audit_markup(r.text)
    assert audit.problems == [], (str(r.url), audit.problems)
    assert 'href="javascript:' not in r.text.lower(), str(r.url)
    if shows:
        assert shows in audit.text, (str(r.url), shows)


@pytest.mark.parametrize("markup", [
    "<script>alert(1)</script>", "<img src=x onerror=alert(1)>", "<div onmouseover=alert(1)>x</div>",
    '<a href=" java\tscript:alert(1)">x</a>', '<a href="&#106;avascript:alert(1)">x</a>',
    '<svg><a xlink:href="javascript:alert(1)"><text>x</text></a></svg>', '<form action="data:text/html,x">',
    '<iframe srcdoc="x">', '<meta http-equiv="refresh" content="0;url=javascript:alert(1)">',
    '<link rel="icon" href="javascript:alert(1)">', '<script src="/static/live.js" onload="alert(1)"></script>',
])
def test_the_audit_sees_live_markup(markup: str) -> None:
    """The checker itself: each of these would run script (or could), and is reported."""
    assert audit_markup(markup).problems, markup


# -- a server of its own, full of hostile data -------------------------------------------

@dataclass
class Hostile:
    server: TrackerServer
    project: Project
    issue_id: str
    event_ids: list[str]
    envelope_ids: list[str]  # the envelope log's, newest first


def swap(value: Any, old: str, new: str) -> Any:
    """A copy of a JSON value with `old` replaced by `new` in every key and string."""
    if isinstance(value, str):
        return value.replace(old, new)
    if isinstance(value, list):
        return [swap(v, old, new) for v in value]
    if isinstance(value, dict):
        return {swap(k, old, new): swap(v, old, new) for k, v in value.items()}
    return value


def hostile_events() -> list[dict[str, Any]]:
    """Three events of one issue: test_dashboard's hostile event, one whose link-like fields are
    `javascript:` URLs (with a slash-free hostile release), and one of quote breakouts."""
    js = {**hostile_event(), "release": SLASHLESS, "environment": JS_URL,
          "request": {"url": JS_URL, "method": "GET", "headers": {"Referer": JS_URL, "Origin": JS_URL},
                      "query_string": f"next={JS_URL}"},
          "user": {"id": JS_URL, "email": JS_URL, "username": BREAKOUT, "ip_address": BREAKOUT},
          "tags": {"url": JS_URL, "link": "data:text/html,<script>alert(1)</script>", "evil": HOSTILE},
          "breadcrumbs": {"values": [
              {"type": "navigation", "category": "navigation", "data": {"from": JS_URL, "to": JS_URL}},
              {"type": "http", "category": "fetch", "data": {"url": JS_URL, "method": "GET", "status_code": 200}}]}}
    events = [hostile_event(), js, swap(hostile_event(), HOSTILE, BREAKOUT)]
    return [{**event, "fingerprint": ["hardening-hostile"], "timestamp": time.time() + n}
            for n, event in enumerate(events)]


def hostile_project(server: TrackerServer) -> Project:
    """A project whose name itself is hostile (admins name projects; names show everywhere)."""
    dsn = server.cli("project", "create", SHORT, "--slug", "hostile").strip().splitlines()[-1]
    return Project(id=int(dsn.rsplit("/", 1)[1]), slug="hostile", dsn=dsn, key=dsn.split("//", 1)[1].split("@", 1)[0])


def ok(r: httpx.Response, *statuses: int) -> httpx.Response:
    assert r.status_code in (statuses or (200, 201)), (r.status_code, r.text)
    return r


def arm_alerts(server: TrackerServer, project: Project, webhook: WebhookReceiver) -> None:
    """A webhook channel and a rule, both named with markup, that fire for the hostile issue."""
    channel = {"name": SHORT, "kind": "webhook", "config": {"url": f"{webhook.hook_url}?x={urllib.parse.quote(SHORT)}",
                                                             "secret": webhook.secret, "allow_private": True}}
    ok(server.api("POST", "organizations/tracker/channels/", json=channel))
    rule = {"name": SHORT, "frequency": 5,
            "conditions": [{"id": "sentry.rules.conditions.first_seen_event.FirstSeenEventCondition"}],
            "filters": [{"id": "sentry.rules.filters.tagged_event.TaggedEventFilter", "key": SHORT, "match": "ne",
                         "value": HOSTILE}],
            "actions": [{"id": WEBHOOK, "service": SHORT}]}
    ok(server.api("POST", f"projects/tracker/{project.slug}/rules/", json=rule))


def decorate(server: TrackerServer, project: Project) -> None:
    """Hostile data through every admin door that leads to a page: a release with commits and a
    deploy, a code mapping, grouping rules, an SLO and an API token; `javascript:` where a URL goes."""
    commit = {"id": "ab" * 20, "repository": SHORT, "author_name": SHORT, "author_email": JS_URL, "message": HOSTILE,
              "patch_set": [{"path": HOSTILE, "type": "M"}]}
    ok(server.api("POST", "organizations/tracker/releases/", json={
        "version": SLASHLESS, "projects": [project.slug], "ref": JS_URL, "url": JS_URL, "commits": [commit]}))
    version = urllib.parse.quote(SLASHLESS, safe="")
    ok(server.api("POST", f"organizations/tracker/releases/{version}/deploys/",
                  json={"environment": SLASHLESS, "name": SHORT, "url": JS_URL}))
    ok(server.api("POST", "organizations/tracker/repos/", json={"name": SHORT, "url": JS_URL}), 400)
    ok(server.api("POST", "organizations/tracker/code-mappings/", json={
        "projectId": project.id, "repositoryUrl": 'https://github.com/acme/app"><script>window.__xss=1</script>',
        "stackRoot": "", "sourceRoot": "", "defaultBranch": SHORT}))
    ok(server.api("PUT", f"projects/tracker/{project.slug}/grouping-rules/",
                  json={"groupingEnhancements": f"# {SHORT}", "fingerprintingRules": f"# {SHORT}"}))
    ok(server.api("PUT", f"projects/tracker/{project.slug}/slo/",
                  json={"name": SHORT, "environment": HOSTILE, "objective": 0.01}))
    ok(server.form("/settings/", {"token": SHORT, "scope": "read"}))
    scrubbing = {"enabled": "on", "defaults": "on", "sensitive_fields": SHORT}
    ok(server.form(f"/projects/{project.slug}/scrubbing/", scrubbing), 303)


@pytest.fixture(scope="module")
def hostile(configured: Configure) -> Iterator[Hostile]:
    """A tracker of its own (alert channels are organisation-wide and every project's default rule
    notifies them all): a hostile project, issue, release, channel, rule, SLO… and one alert sent."""
    server = configured("hardening", FAST)
    with contextlib.contextmanager(running)(WebhookReceiver()) as webhook:
        project = hostile_project(server)
        arm_alerts(server, project, webhook)
        decorate(server, project)
        events = hostile_events()
        for event in events:
            server.send_event(project, event)
        [issue] = server.wait_issues(project, len(events))
        settled(server, issue["id"], 1)
        log = server.web.get(f"/projects/{project.slug}/envelopes/").text
        envelope_ids = re.findall(rf'href="/projects/{project.slug}/envelopes/(\d+)/"', log)
        assert len(envelope_ids) == len(events), log
        yield Hostile(server, project, issue["id"], [e["event_id"] for e in events], envelope_ids)


# -- the pages ---------------------------------------------------------------------------

@dataclass(frozen=True)
class Page:
    path: Callable[[Hostile], str]
    shows: str | None = MARK  # hostile text the page must show, as text
    status: int = 200


def issue_path(rest: str = "") -> Callable[[Hostile], str]:
    return lambda h: f"/issues/{h.issue_id}/{rest}"


def event_path(n: int) -> Callable[[Hostile], str]:
    return lambda h: f"/issues/{h.issue_id}/events/{h.event_ids[n]}/"


def query(route: str, **params: str) -> Callable[[Hostile], str]:
    """`route?params`, with `{slug}` (in the route or a value) the hostile project's slug, `{id}` its issue."""
    def fill(value: str, h: Hostile) -> str:
        return value.replace("{slug}", h.project.slug).replace("{id}", h.issue_id)
    return lambda h: fill(route, h) + "?" + urllib.parse.urlencode({k: fill(v, h) for k, v in params.items()})


def quoted_path(template: str, value: str) -> Callable[[Hostile], str]:
    return lambda h: template.format(urllib.parse.quote(value, safe=""), slug=h.project.slug)


PAGES: dict[str, Page] = {
    "issues": Page(lambda h: "/issues/"),
    "issues-filtered": Page(query("/issues/", project="{slug}", status="all", environment=HOSTILE,
                                  release=f"evil@{HOSTILE}", sort="new", q=HOSTILE)),
    "issues-js-environment": Page(query("/issues/", environment=JS_URL, release=SLASHLESS), shows=JS_URL),
    "issues-search-error": Page(query("/issues/", q=f'"{HOSTILE}'), shows=HOSTILE[:30]),
    "issue": Page(issue_path()),
    "event-1": Page(event_path(0)),
    "event-2-javascript-urls": Page(event_path(1), shows=JS_URL),
    "event-3-breakouts": Page(event_path(2), shows=BREAKOUT),
    "events": Page(issue_path("events/")),
    "events-search": Page(query("/issues/{id}/events/", q="onerror")),
    "events-search-error": Page(query("/issues/{id}/events/", q=HOSTILE), shows='"><svg onload=window.__xss=1>'),
    "releases": Page(lambda h: "/releases/", shows=SLASHLESS),
    "releases-of-project": Page(query("/releases/", project="{slug}"), shows=SLASHLESS),
    "release": Page(quoted_path("/releases/{}/", SLASHLESS), shows=HOSTILE[:40]),
    "release-from-event": Page(quoted_path("/releases/{}/", f"evil@{HOSTILE}"), shows=f"evil@{HOSTILE}"),
    **{f"overview-{p}": Page(query("/projects/{slug}/overview/", period=p)) for p in ("1h", "24h", "7d", "30d")},
    "slo": Page(lambda h: f"/projects/{h.project.slug}/slo/", shows=SHORT),
    "alerts": Page(lambda h: "/alerts/", shows=SHORT),
    "project-alerts": Page(lambda h: f"/projects/{h.project.slug}/alerts/", shows=SHORT),
    "code": Page(query("/code/", project="{slug}", path=HOSTILE, function=BREAKOUT)),
    "code-unknown-project": Page(query("/code/", project=HOSTILE, path=HOSTILE), shows=None, status=404),
    "projects": Page(lambda h: "/projects/", shows=SHORT),
    "grouping": Page(lambda h: f"/projects/{h.project.slug}/grouping/", shows=SHORT),
    "code-mappings": Page(lambda h: f"/projects/{h.project.slug}/code-mappings/", shows=SCRIPT),
    "settings": Page(lambda h: "/settings/", shows=SHORT),
    "scrubbing": Page(lambda h: f"/projects/{h.project.slug}/scrubbing/", shows=SHORT),
    "envelopes": Page(lambda h: f"/projects/{h.project.slug}/envelopes/", shows=SHORT),
    # the project scrubs, so its envelope log keeps no event payload: the pages show the name and headers
    **{f"envelope-{n + 1}": Page(lambda h, n=n: f"/projects/{h.project.slug}/envelopes/{h.envelope_ids[n]}/",
                                 shows=SHORT) for n in range(3)},
    "live": Page(lambda h: "/live/", shows="<img src=x onerror=alert(1)>"),
    "account": Page(lambda h: "/account/", shows=None),
    "404-issue": Page(quoted_path("/issues/{}/", HOSTILE), shows=None, status=404),
    "404-project": Page(quoted_path("/projects/{}/overview/", HOSTILE), shows=None, status=404),
    "404-release": Page(quoted_path("/releases/{}/", SHORT), shows=None, status=404),
    "404-route": Page(quoted_path("/no-such-page/{}", HOSTILE), shows=None, status=404),
    "login-hostile-next": Page(query("/login", next=f'/">{SCRIPT}'), shows=None),
    "login-javascript-next": Page(query("/login", next=JS_URL), shows=None),
}


@pytest.mark.parametrize("name", PAGES)
def test_page_shows_event_data_as_inert_text(hostile: Hostile, name: str) -> None:
    """html.parser over the page: no element or attribute came from event data, which is there as text."""
    page = PAGES[name]
    r = hostile.server.web.get(page.path(hostile))
    assert r.status_code == page.status, (name, r.status_code)
    assert_inert(r, page.shows)
    if r.headers["content-type"].startswith("text/html"):
        assert_strict_csp(r.headers["content-security-policy"])


def test_login_never_redirects_off_site(hostile: Hostile) -> None:
    """A hostile `next` is kept out of the form and of the redirect after signing in; a hostile
    user name comes back as text."""
    login = hostile.server.web.get("/login", params={"next": JS_URL})
    assert 'name="next" value="/issues/"' in login.text
    with httpx.Client(base_url=hostile.server.url, timeout=10) as anonymous:
        r = anonymous.post("/login", data={"name": SHORT, "password": "not it", "next": f"/{HOSTILE}"})
        assert r.status_code == 401
        assert_inert(r)
        for target in (JS_URL, "//evil.example/", "/\\evil.example", "https://evil.example/", f" {JS_URL}"):
            r = anonymous.post("/login", data={"name": "admin", "password": ADMIN_PASSWORD, "next": target})
            assert (r.status_code, r.headers["location"]) == (303, "/issues/"), target


def test_forms_echo_hostile_input_as_text(hostile: Hostile) -> None:
    """A refused form comes back with what was typed (values, error messages): still inert."""
    h, slug = hostile, hostile.project.slug
    cases = [
        (f"/projects/{slug}/grouping/", {"stacktrace_rules": f"{HOSTILE} +nonsense", "fingerprint_rules": ""}),
        (f"/projects/{slug}/code-mappings/", {"repository_url": JS_URL, "stack_root": HOSTILE}),
        ("/alerts/", {"kind": "webhook", "name": SHORT, "url": JS_URL}),
        (f"/projects/{slug}/alerts/", {"name": SHORT, "when": "new", "notify": HOSTILE, "tag": f"{SHORT}={HOSTILE}"}),
        (f"/projects/{slug}/slo/", {"name": SHORT, "objective": HOSTILE, "environment": HOSTILE}),
        ("/settings/", {"user": SHORT, "role": "member"}),
    ]
    for path, form in cases:
        r = h.server.form(path, form)
        assert r.status_code == 400, (path, r.status_code)
        assert_inert(r)
    assert JS_URL not in h.server.api("GET", "organizations/tracker/code-mappings/", params={"project": slug}).text


def test_raw_json_is_never_a_page(hostile: Hostile) -> None:
    """The raw event is JSON with nosniff: a browser never renders it as HTML."""
    for event_id in hostile.event_ids:
        r = hostile.server.web.get(f"/issues/{hostile.issue_id}/events/{event_id}/json")
        assert r.status_code == 200
        assert r.headers["content-type"].startswith("application/json")
        assert r.headers["x-content-type-options"] == "nosniff"
        assert r.json()["event_id"] == event_id


# -- the same pages in Chromium ----------------------------------------------------------

DOM_PROBLEMS = """() => {
  const problems = [];
  for (const el of document.querySelectorAll('*:not(script[src="/static/live.js"])')) {
    const tag = el.tagName.toLowerCase();
    if (['script', 'iframe', 'frame', 'object', 'embed', 'base', 'img'].includes(tag)) problems.push('<' + tag + '>');
    for (const a of el.attributes) {
      const value = a.value.replace(/[\\u0000-\\u0020]/g, '').toLowerCase();
      if (a.name.startsWith('on')) problems.push(tag + ' ' + a.name);
      const link = ['href', 'src', 'action', 'formaction', 'xlink:href'].includes(a.name);
      if (link && /^(javascript|data|vbscript):/.test(value))
        problems.push(tag + ' ' + a.name + '=' + value.slice(0, 40));
    }
  }
  return problems;
}"""


@dataclass
class Tab:
    """One page of a context, kept for the module, recording dialogs (dismissed) and console messages."""
    page: Any
    dialogs: list[str] = field(default_factory=list)
    console: list[str] = field(default_factory=list)

    @classmethod
    def open(cls, context: Any) -> Tab:
        tab = cls(context.new_page())
        tab.page.set_default_timeout(10_000)
        tab.page.on("dialog", tab.on_dialog)
        tab.page.on("console", lambda message: tab.console.append(f"{message.type}: {message.text}"))
        return tab

    def on_dialog(self, dialog: Any) -> None:
        self.dialogs.append(dialog.message)
        dialog.dismiss()

    def visit(self, url: str) -> None:
        self.dialogs.clear()
        self.console.clear()
        self.page.goto(url)


@pytest.fixture(scope="module")
def tabs(hostile: Hostile, browser: Any) -> Iterator[dict[str, Tab]]:
    """Two signed-in tabs: `served` obeys the CSP, `bare` ignores it, so escaping alone must hold."""
    options = {"viewport": {"width": 1280, "height": 900}}
    contexts = {"served": hostile.server.browser_context(browser, **options),
                "bare": hostile.server.browser_context(browser, **options, bypass_csp=True)}
    yield {kind: Tab.open(context) for kind, context in contexts.items()}
    for context in contexts.values():
        context.close()


BROWSER_PAGES = {**PAGES, "raw-json": Page(lambda h: f"/issues/{h.issue_id}/events/{h.event_ids[1]}/json")}


def assert_nothing_ran(tab: Tab, what: str) -> None:
    """No `window.__xss`, no dialog, no live element in the DOM as Chromium parsed it, and (as
    served) nothing the CSP had to refuse: no injected handler or script even tried to run."""
    assert tab.page.evaluate("typeof window.__xss") == "undefined", what
    assert tab.page.evaluate(DOM_PROBLEMS) == [], what
    assert tab.dialogs == [], what
    assert not [m for m in tab.console if "Content Security Policy" in m], (what, tab.console)


def screenshot(tab: Tab, path: Path) -> None:
    tab.page.bring_to_front()  # a tab behind another may not be painted
    tab.page.screenshot(path=str(path))


@pytest.mark.parametrize("name", BROWSER_PAGES)
def test_no_script_runs_in_chromium(hostile: Hostile, tabs: dict[str, Tab], name: str, tmp_path: Path) -> None:
    url = hostile.server.url + BROWSER_PAGES[name].path(hostile)
    for kind, tab in tabs.items():
        tab.visit(url)
        assert_nothing_ran(tab, f"{kind}: {name}")
    screenshot(tabs["bare"], tmp_path / f"{name}.png")


def test_live_page_adds_hostile_events_as_text(hostile: Hostile, tabs: dict[str, Tab], tmp_path: Path) -> None:
    """The dashboard's one script: an event announced over server-sent events becomes a row
    holding its hostile title as text (the script writes through textContent only)."""
    for kind, tab in tabs.items():
        tab.visit(f"{hostile.server.url}/live/")
        tab.page.wait_for_function("document.querySelector('#live-state').textContent.startsWith('live')")
        event = {**hostile_event(), "fingerprint": [f"live-{kind}"]}
        hostile.server.send_event(hostile.project, event)
        link = tab.page.locator(f'#live a[href$="/{event["event_id"]}/"]')
        link.wait_for()
        assert MARK in link.inner_text()
        assert_nothing_ran(tab, f"{kind}: live")
        screenshot(tab, tmp_path / f"live-{kind}.png")


# =============================================================================
# 2. The search parser under fuzzing
# =============================================================================

SEARCH_KEYS = sorted({*t.TERM_KEYS, "is", "assigned", "assigned_to", "level", "age", "firstSeen", "lastSeen",
                      "timesSeen", "times_seen", "users", "userCount", "error.value", "message", "user", "trace",
                      "trace.id", "release", "environment", "service", "browser"})
ANY_CHAR = st.characters(exclude_categories=("Cs",))  # everything a URL can carry: controls, quotes, emoji…
SEARCH_VALUES = (st.text(ANY_CHAR, max_size=20)
                 | st.text(st.sampled_from('"\\:!*[]()<>=-+ .'), max_size=12)
                 | st.sampled_from(["unresolved", "resolved", "assigned", "-24h", "+7d", ">2026-01-01", "<=10", "*",
                                    "nan", "inf", "1e999", "-0d", ">" + "9" * 30, "-" + "9" * 30 + "d", "9" * 400])
                 | st.builds("{}{}{}".format, st.sampled_from(["", "-", "+", ">", "<="]),
                             st.integers(min_value=0, max_value=10**40), st.sampled_from(["", *t.DURATION_UNITS])))
SEARCH_TERMS = st.builds(
    lambda negated, key, value, quote: ("!" if negated else "") + (f"{key}:" if key else "")
    + (t.quoted(value) if quote else value),
    st.booleans(), st.none() | st.sampled_from(SEARCH_KEYS) | st.text(ANY_CHAR, max_size=8), SEARCH_VALUES,
    st.booleans())
SEARCH_QUERIES = (st.lists(SEARCH_TERMS, max_size=6).map(" ".join)
                  | st.text(ANY_CHAR, max_size=60)
                  | st.builds(lambda unit, n: unit * n, st.text(st.sampled_from('ab:"!* \\'), min_size=1, max_size=4),
                              st.integers(min_value=200, max_value=1000)))
SEARCH_FUZZ = settings(max_examples=120, deadline=None, suppress_health_check=list(HealthCheck), database=None)


@pytest.fixture(scope="module")
def searched(tracker: TrackerServer) -> tuple[Project, str]:
    """A project with an issue to search (and its events page)."""
    project = tracker.create_project()
    tracker.send_event(project, hostile_event())
    [issue] = tracker.wait_issues(project, 1)
    return project, issue["id"]


@pytest.fixture(scope="module")
def clients(tracker: TrackerServer) -> Iterator[tuple[httpx.Client, httpx.Client]]:
    """The API (a token) and the dashboard (a session); 10 s per request, so a hang fails."""
    token = {"Authorization": f"Bearer {tracker.token}"}
    with httpx.Client(base_url=tracker.url, timeout=10, headers=token) as api_client, \
            httpx.Client(base_url=tracker.url, timeout=10, cookies=tracker.web.cookies) as web:
        yield api_client, web


def search_message(r: httpx.Response) -> str:
    """The error a dashboard page shows above its results ('' when the search ran)."""
    found = re.search(r'class="card search-error">(.*?)</div>', r.text, re.S)
    return found[1] if found else ""


@SEARCH_FUZZ
@given(q=SEARCH_QUERIES)
@example(q='age:""')  # each of these was a 500 once
@example(q="timesSeen:>" + "9" * 30)
@example(q="age:-" + "9" * 400 + "d")
@example(q=": " * 995)
def test_fuzz_search_never_5xx(tracker: TrackerServer, searched: tuple[Project, str],
                               clients: tuple[httpx.Client, httpx.Client], q: str) -> None:
    (project, issue_id), (api_client, web) = searched, clients
    for path in (f"/api/0/projects/tracker/{project.slug}/issues/", f"/api/0/issues/{issue_id}/events/"):
        r = api_client.get(path, params={"query": q})
        assert r.status_code in (200, 400), (path, q, r.status_code, r.text[:300])
        if r.status_code == 400:
            assert r.json()["detail"].startswith("Invalid search query"), r.text
        else:
            assert isinstance(r.json(), list)
    for path in ("/issues/", f"/issues/{issue_id}/events/"):
        r = web.get(path, params={"q": q, "status": "all"})
        assert r.status_code == 200, (path, q, r.status_code)
        assert "<table" in r.text or "No issues match" in r.text or "No events match" in r.text or search_message(r), q


@pytest.mark.parametrize("value", ["99999999999999999999999", "9223372036854775808", "-5", "1e3", "x"])
def test_paging_offsets_never_5xx(tracker: TrackerServer, searched: tuple[Project, str],
                                  clients: tuple[httpx.Client, httpx.Client], value: str) -> None:
    """Offsets past SQLite's integers, negative or not numbers: a page (or a 400), never a 500."""
    (project, issue_id), (api_client, web) = searched, clients
    for path in ("/issues/", f"/issues/{issue_id}/events/"):
        assert web.get(path, params={"offset": value}).status_code == 200, path
    r = api_client.get(f"/api/0/projects/tracker/{project.slug}/issues/", params={"cursor": f"0:{value}:0"})
    assert r.status_code in (200, 400) and (r.status_code == 200 or "detail" in r.json()), r.text


# =============================================================================
# 3. The dashboard keeps answering while ingest is saturated
# =============================================================================

FLOOD_THREADS, FLOOD_SECONDS, PAGE_BOUND = 32, 8.0, 5.0


def charge_card() -> None:
    def gateway(amount: int) -> None:
        raise ConnectionError(f"gateway refused {amount}")
    try:
        gateway(4200)
    except ConnectionError:
        sentry_sdk.capture_exception()


def test_dashboard_answers_during_an_ingest_flood(tracker: TrackerServer, project: Project) -> None:
    """32 threads post the real SDK's event (a stack trace with locals) as fast as they can while
    another reads the issues list and the issue page: every read is a 200 within PAGE_BOUND, and
    every event that got a 200 is in the database afterwards."""
    [event] = capture_events(project, charge_card, release="flood@1.0")
    [issue] = tracker.wait_issues(project, 1)
    acked: list[str] = []
    refused: list[int] = []
    reads: list[tuple[str, int, float]] = []
    stop = threading.Event()

    def flood() -> None:
        with httpx.Client(timeout=30) as client:
            while not stop.is_set():
                event_id = uuid.uuid4().hex
                body = envelope({"event_id": event_id}, ({"type": "event"}, {**event, "timestamp": time.time()}))
                r = client.post(f"{tracker.url}/api/{project.id}/envelope/", content=body, headers=auth(project))
                if r.status_code == 200:
                    acked.append(event_id)
                else:
                    refused.append(r.status_code)

    def browse() -> None:
        with httpx.Client(base_url=tracker.url, timeout=10, cookies=tracker.web.cookies) as web:
            while not stop.is_set():
                for path in ("/issues/", f"/issues/{issue['id']}/"):
                    started = time.monotonic()
                    status = web.get(path).status_code
                    reads.append((path, status, time.monotonic() - started))

    threads = [threading.Thread(target=flood) for _ in range(FLOOD_THREADS)] + [threading.Thread(target=browse)]
    for thread in threads:
        thread.start()
    stop.wait(FLOOD_SECONDS)  # the flood's duration, not a poll
    stop.set()
    for thread in threads:
        thread.join(30)
    assert not [th for th in threads if th.is_alive()], "a client hung"
    assert len(acked) > 500, f"only {len(acked)} events acknowledged: the flood never saturated ingest"
    assert set(refused) <= {429}, refused
    assert len(reads) >= 4 and all(status == 200 for _, status, _ in reads), reads
    slowest = max(reads, key=lambda r: r[2])
    assert slowest[2] < PAGE_BOUND, f"{slowest[0]} took {slowest[2]:.1f}s under load"
    with contextlib.closing(sqlite3.connect(f"file:{tracker.db}?mode=ro", uri=True)) as db:
        stored = {row[0] for row in db.execute("SELECT event_id FROM events WHERE project_id = ?", (project.id,))}
    missing = set(acked) - stored
    assert not missing, f"{len(missing)} of {len(acked)} acknowledged events are not stored"


# =============================================================================
# 4. Bad ingest input
# =============================================================================

def event_item(payload: bytes, item_type: str = "event", **header: Any) -> bytes:
    """An envelope of one item whose payload is given as raw bytes (it may be no JSON at all)."""
    return envelope({}, ({"type": item_type, **header}, payload))


def assert_clear_answer(r: httpx.Response) -> None:
    """200, or a 4xx that says why in JSON: never a 5xx."""
    assert r.status_code == 200 or (400 <= r.status_code < 500 and r.json().get("detail")), (r.status_code, r.text)


def assert_alive(tracker: TrackerServer, project: Project) -> None:
    event_id = uuid.uuid4().hex
    r = tracker.send_envelope(project, body=envelope({"event_id": event_id}, ({"type": "event"}, {"message": "alive"})))
    assert r.status_code == 200 and r.json()["id"] == event_id, r.text
    assert tracker.web.get("/issues/").status_code == 200


def assert_issues_render(tracker: TrackerServer, project: Project, count: int) -> None:
    """Every stored event of the project renders on its issue's pages and in the API."""
    for issue in tracker.wait_issues(project, count):
        assert tracker.web.get(f"/issues/{issue['id']}/").status_code == 200, issue["title"]
        assert tracker.web.get(f"/issues/{issue['id']}/events/").status_code == 200, issue["title"]
        for event in tracker.api("GET", f"issues/{issue['id']}/events/").json():
            page = tracker.web.get(f"/issues/{issue['id']}/events/{event['eventID']}/")
            assert page.status_code == 200, (issue["title"], event["eventID"])


@pytest.mark.parametrize("payload", [
    b'{"message": "caf\xc3\x28 \xff\xfe"}',  # bytes that are no UTF-8 at all
    b'{"message": "over \xc0\xaf long"}',  # an overlong encoding of '/'
    b'{"message": "lone \xed\xa0\x80 surrogate", "tags": {"k\xed\xb0\x80": "v"}}',  # UTF-8 of a surrogate (CESU-8)
], ids=["invalid", "overlong", "encoded-surrogate"])
@pytest.mark.parametrize("kind", ["envelope", "store"])
def test_invalid_utf8_inside_event_json(tracker: TrackerServer, project: Project, payload: bytes, kind: str) -> None:
    body = event_item(payload) if kind == "envelope" else payload
    r = httpx.post(f"{tracker.url}/api/{project.id}/{kind}/", content=body, headers=auth(project), timeout=30)
    assert_clear_answer(r)
    if r.status_code == 200:
        assert_issues_render(tracker, project, 1)
    assert_alive(tracker, project)


def test_a_900_kb_string_field(tracker: TrackerServer, project: Project) -> None:
    """Just under the 1 MiB event limit, in one string: stored, and its pages still render quickly."""
    event = {"message": "x" * 900_000, "extra": {"big": "é" * 1000}}
    r = tracker.send_envelope(project, body=event_item(json.dumps(event).encode()))
    assert r.status_code == 200, r.text
    started = time.monotonic()
    assert_issues_render(tracker, project, 1)
    assert time.monotonic() - started < 10


WRONG_TYPES: dict[str, Any] = {
    "exception": "boom", "threads": "t", "stacktrace": [1, 2], "tags": 7, "user": ["u"], "timestamp": {"t": 1},
    "request": "GET /", "breadcrumbs": "crumbs", "contexts": [1, 2], "extra": "x", "fingerprint": 42,
    "release": {"v": 1}, "environment": ["prod"], "level": 50, "logentry": [1], "message": {"m": 1}, "platform": 3,
    "sdk": "python", "transaction": 5, "event_id": 123, "server_name": {"a": 1}, "modules": [1], "culprit": [],
    "dist": 1.5, "logger": True, "errors": "x", "debug_meta": 1, "received": "yesterday", "type": ["error"],
    "measurements": "m", "spans": {"a": 1},
}
NESTED_WRONG_TYPES: dict[str, dict[str, Any]] = {
    "exception.values as an object": {"exception": {"values": {"type": "E"}}},
    "frames as an object": {"exception": {"values": [{"type": "E", "value": "v", "stacktrace": {"frames": {"f": 1}}}]}},
    "frame fields": {"exception": {"values": [{"type": 1, "value": [2], "mechanism": "m", "stacktrace": {"frames": [
        {"filename": 1, "function": {"f": 1}, "lineno": "nine", "in_app": "yes", "vars": "v", "pre_context": "p",
         "context_line": 7}, 5, None, "frame"]}}]}},
    "user fields": {"user": {"id": {"a": 1}, "email": [1], "ip_address": 7, "data": "d"}},
    "request fields": {"request": {"url": 5, "method": [], "headers": "h", "data": 9, "cookies": 1, "env": []}},
    "breadcrumb values": {"breadcrumbs": {"values": [1, "b", {"timestamp": "x", "data": "d", "message": {}}]}},
    "logentry fields": {"logentry": {"message": 5, "params": "p", "formatted": []}},
    "tags pairs": {"tags": [[1, 2], ["only"], "x", None, [{"a": 1}, []]]},
    "contexts values": {"contexts": {"os": "linux", "trace": {"trace_id": 5, "span_id": []}, "runtime": 1}},
}


def test_wrong_types_in_every_top_level_field(tracker: TrackerServer, project: Project) -> None:
    """Each field with a type the protocol does not allow: normalised and stored, or a clear 400;
    every stored one renders on its pages."""
    cases = {f"{name} as {type(value).__name__}": {name: value} for name, value in WRONG_TYPES.items()}
    stored, answers = 0, {}
    for name, fields in {**cases, **NESTED_WRONG_TYPES}.items():
        event = {"message": f"wrong type: {name}", "fingerprint": [name], **fields}
        r = tracker.send_envelope(project, body=event_item(json.dumps(event).encode()))
        answers[name] = r.status_code
        assert_clear_answer(r)
        stored += r.status_code == 200
    assert stored, answers
    assert_issues_render(tracker, project, stored)
    assert_alive(tracker, project)


def test_gzip_bomb_inside_an_envelope_item(tracker: TrackerServer, project: Project) -> None:
    """Items are never decompressed: a 200 MiB gzip bomb as an event payload is invalid JSON (400),
    as an attachment it is accepted and dropped; inside a gzipped envelope too. All fast."""
    bomb = zeros_bomb("gzip")
    cases = [
        (event_item(bomb), {}, 400),
        (event_item(bomb, "attachment", filename="core.gz", content_type="application/gzip"), {}, 200),
        (gzip.compress(event_item(bomb)), {"Content-Encoding": "gzip"}, 400),
    ]
    for body, headers, status in cases:
        started = time.monotonic()
        r = tracker.send_envelope(project, body=body, **headers)
        assert r.status_code == status, (status, r.status_code, r.text)
        assert_clear_answer(r)
        assert time.monotonic() - started < 5
    assert_alive(tracker, project)


def nested(depth: int, kind: str) -> Any:
    """A JSON value `depth` levels deep: lists in lists, or objects in objects."""
    value: Any = []
    for _ in range(depth - 1):
        value = [value] if kind == "list" else {"k": value}
    return value


def json_depth(value: Any) -> int:
    """How deep a parsed JSON value nests (a scalar 0, `[]` 1), the plain way nested_too_deep avoids."""
    if isinstance(value, (dict, list)):
        return 1 + max(map(json_depth, value.values() if isinstance(value, dict) else value), default=0)
    return 0


TRICKY_TEXT = st.text(alphabet='[]{}"\\ab\u00e9', max_size=6)  # brackets, quotes and backslashes inside strings


@given(st.recursive(st.none() | st.integers() | TRICKY_TEXT,
                    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(TRICKY_TEXT, inner, max_size=3),
                    max_leaves=40),
       st.integers(1, 12))
@settings(max_examples=500, deadline=None)
def test_nested_too_deep_agrees_with_the_depth(value: Any, limit: int) -> None:
    """nested_too_deep's quick passes (one or two levels each) and its exact ones answer as the
    depth of the parsed value does, whatever the strings hold."""
    raw = json.dumps(value, ensure_ascii=False).encode()
    assert t.nested_too_deep(raw, limit) == (json_depth(value) > limit)


@pytest.mark.parametrize("kind", ["list", "object"])
def test_extra_nested_right_at_the_limit(tracker: TrackerServer, project: Project, kind: str) -> None:
    """The event object is level 1 and `extra` level 2, so a value 126 deep in it makes exactly
    MAX_JSON_DEPTH: stored, and shown on its page; one level more is a 400."""
    under = {"message": f"deep {kind}", "extra": {"deep": nested(t.MAX_JSON_DEPTH - 2, kind)}}
    raw = json.dumps(under).encode()
    assert not t.nested_too_deep(raw, t.MAX_JSON_DEPTH) and t.nested_too_deep(raw, t.MAX_JSON_DEPTH - 1)
    r = tracker.send_envelope(project, body=event_item(json.dumps(under).encode()))
    assert r.status_code == 200, r.text
    assert_issues_render(tracker, project, 1)
    over = {"message": f"deeper {kind}", "extra": {"deep": nested(t.MAX_JSON_DEPTH - 1, kind)}}
    r = tracker.send_envelope(project, body=event_item(json.dumps(over).encode()))
    assert r.status_code == 400 and "nested deeper" in r.json()["detail"], r.text
    assert_alive(tracker, project)
