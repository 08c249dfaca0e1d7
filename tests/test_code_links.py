"""From error to code and back: code mappings (API and form), frame links to the repository at the
release's commit, the code view of a file's issues, and prefilled tickets — with the real sentry_sdk."""
from __future__ import annotations

import html
import re
import sqlite3
import time
import urllib.parse
from pathlib import Path
from typing import Any

import pytest

from conftest import Project, TrackerServer, charge_under_sdk

RELEASE = "shop@1.0.0"
MAPPINGS = "organizations/tracker/code-mappings/"  # the API path under /api/0/
# the application module whose crash is linked: `raise` is on line 42 of codelinks_app/payments.py
PAYMENTS = "\n" * 40 + "def charge(amount):\n    raise ValueError(f'card declined for {amount}')\n"


@pytest.fixture(scope="module")
def crashed(tracker: TrackerServer, tmp_path_factory: pytest.TempPathFactory) -> tuple[Project, dict[str, Any]]:
    """A project with one issue: two events from two users, crashing in codelinks_app/payments.py:42."""
    root = tmp_path_factory.mktemp("src")
    (root / "codelinks_app").mkdir()
    (root / "codelinks_app" / "__init__.py").write_text("")
    (root / "codelinks_app" / "payments.py").write_text(PAYMENTS)
    project = tracker.create_project()
    charge_under_sdk(project, root, "codelinks_app.payments", ("u1", "u2"), release=RELEASE)
    [issue] = tracker.wait_issues(project, 2)
    return project, issue


def issue_page(tracker: TrackerServer, issue: dict[str, Any]) -> str:
    r = tracker.web.get(f"/issues/{issue['id']}/", timeout=10)
    assert r.status_code == 200
    return r.text


def hrefs(page: str, css_class: str) -> list[str]:
    return [html.unescape(h) for h in re.findall(rf'class="{css_class}" href="([^"]*)"', page)]


def test_github_mapping_links_frames_at_branch_then_release_commit(
        tracker: TrackerServer, crashed: tuple[Project, dict[str, Any]]) -> None:
    project, issue = crashed
    r = tracker.api("POST", MAPPINGS, json={
        "projectId": project.id, "repositoryUrl": "https://github.com/acme/shop.git", "stackRoot": "codelinks_app/",
        "sourceRoot": "app/", "defaultBranch": "develop"})
    assert r.status_code == 201, r.text
    mapping = r.json()
    assert mapping["provider"]["key"] == "github" and mapping["repoName"] == "acme/shop"
    listed = tracker.api("GET", MAPPINGS, params={"project": project.id}).json()
    assert [m["id"] for m in listed] == [mapping["id"]]
    try:
        assert hrefs(issue_page(tracker, issue), "source-link") == [
            "https://github.com/acme/shop/blob/develop/app/payments.py#L42"]
        sha = "4f2d9c0e1b7a8d6e5f4c3b2a190817161514a1b2"
        with sqlite3.connect(tracker.db) as conn:
            conn.execute("INSERT OR IGNORE INTO releases (version, date_created) VALUES (?, ?)", (RELEASE, time.time()))
            repo_id = conn.execute("INSERT INTO repositories (name, url, provider, date_created) VALUES "
                                   "('acme/shop', 'https://github.com/acme/shop', 'github', ?)", (time.time(),)).lastrowid
            conn.execute("INSERT INTO release_refs (release_id, repository_id, commit_sha) "
                         "SELECT id, ?, ? FROM releases WHERE version = ?", (repo_id, sha, RELEASE))
        assert hrefs(issue_page(tracker, issue), "source-link") == [
            f"https://github.com/acme/shop/blob/{sha}/app/payments.py#L42"]
    finally:
        assert tracker.api("DELETE", f"{MAPPINGS}{mapping['id']}/").status_code == 204
        with sqlite3.connect(tracker.db) as conn:
            conn.execute("DELETE FROM release_refs")
    assert hrefs(issue_page(tracker, issue), "source-link") == []


def test_gitlab_mapping_from_the_form(tracker: TrackerServer, crashed: tuple[Project, dict[str, Any]]) -> None:
    project, issue = crashed
    form_url = f"/projects/{project.slug}/code-mappings/"
    refused = tracker.form(form_url, data={"repository_url": "https://gitlab.example.com/team/shop"},
                         headers={"Origin": "https://evil.example", "Sec-Fetch-Site": "cross-site"}, timeout=10)
    assert refused.status_code == 403
    bad = tracker.form(form_url, data={"repository_url": "javascript:alert(1)//"}, timeout=10)
    assert bad.status_code == 400 and "http(s) URL" in bad.text
    assert tracker.api("GET", MAPPINGS, params={"project": project.slug}).json() == []
    r = tracker.form(form_url, data={"repository_url": "https://gitlab.example.com/team/shop", "stack_root": "",
                                   "source_root": "src", "default_branch": ""}, timeout=10)
    assert r.status_code == 303
    [mapping] = tracker.api("GET", MAPPINGS, params={"project": project.slug}).json()
    assert mapping["provider"]["key"] == "gitlab" and mapping["defaultBranch"] == "main"
    assert 'href="https://gitlab.example.com/team/shop"' in tracker.web.get(form_url, timeout=10).text
    try:
        links = hrefs(issue_page(tracker, issue), "source-link")  # the test's own frame is in app too
        assert links[0] == "https://gitlab.example.com/team/shop/-/blob/main/src/codelinks_app/payments.py#L42"
        assert links[1].startswith("https://gitlab.example.com/team/shop/-/blob/main/src/conftest.py#L")
        changed = tracker.api("PUT", f"{MAPPINGS}{mapping['id']}/",
                              json={"stackRoot": "codelinks_app/", "sourceRoot": "app"})
        assert changed.status_code == 200 and changed.json()["repositoryUrl"] == mapping["repositoryUrl"]
        page = issue_page(tracker, issue)
        assert hrefs(page, "source-link")[0].endswith("/-/blob/main/app/payments.py#L42")
        [link] = [h for h in hrefs(page, "report-link") if "gitlab" in h]
        url = urllib.parse.urlsplit(link)
        assert url.path == "/team/shop/-/issues/new"
        fields = urllib.parse.parse_qs(url.query)
        assert fields["issue[title]"] == [issue["title"]]
        assert f"{tracker.url}/issues/{issue['id']}/" in fields["issue[description]"][0]
    finally:
        delete = tracker.form(form_url, data={"delete": mapping["id"]}, timeout=10)
        assert delete.status_code == 303
    assert tracker.api("GET", MAPPINGS, params={"project": project.slug}).json() == []


def test_prefilled_github_issue(tracker: TrackerServer, crashed: tuple[Project, dict[str, Any]]) -> None:
    project, issue = crashed
    mapping = tracker.api("POST", MAPPINGS, json={"projectId": str(project.id), "repoName": "acme/shop"}).json()
    try:
        [link] = hrefs(issue_page(tracker, issue), "report-link")
    finally:
        tracker.api("DELETE", f"{MAPPINGS}{mapping['id']}/")
    url = urllib.parse.urlsplit(link)
    assert (url.scheme, url.netloc, url.path) == ("https", "github.com", "/acme/shop/issues/new")
    fields = urllib.parse.parse_qs(url.query)
    assert fields["title"] == ["ValueError: card declined for 7"] == [issue["title"]]
    body = fields["body"][0]
    for part in (issue["culprit"], f"Tracker issue: {tracker.url}/issues/{issue['id']}/", f"Release: {RELEASE}",
                 "Crashed in codelinks_app.payments in charge at line 42",
                 "raise ValueError(f'card declined for {amount}')", "codelinks_app/payments.py:42 in charge"):
        assert part in body


def test_code_view_lists_the_file_issues(tracker: TrackerServer, crashed: tuple[Project, dict[str, Any]]) -> None:
    project, issue = crashed
    code_link = hrefs(issue_page(tracker, issue), "code-link")[0]  # the crash frame's, newest first
    assert code_link == f"/code/?project={project.slug}&path=codelinks_app%2Fpayments.py&function=charge"
    page = tracker.web.get(code_link, timeout=10).text
    row = page.split(f'href="/issues/{issue["id"]}/"', 1)[1]
    assert re.search(r'class="num events">2<.*class="num users">2<', row, re.S)
    [search] = hrefs(page, "search-link")
    query = urllib.parse.parse_qs(urllib.parse.urlsplit(search).query)
    assert query["q"] == ['stack.filename:"codelinks_app/payments.py" stack.function:"charge"']
    found = tracker.web.get(search, timeout=10).text
    assert f'href="/issues/{issue["id"]}/"' in found
    other = tracker.web.get("/code/", params={"project": project.slug, "path": "codelinks_app/other.py"},
                      timeout=10).text
    assert "No issue passes through it." in other


@pytest.mark.parametrize("body", [
    {"repositoryUrl": "ftp://example.com/repo"}, {"repositoryUrl": "javascript:alert(1)"},
    {"repositoryUrl": "https://github.com/a/b", "provider": "bitbucket"}, {"repositoryUrl": 5},
    {"repositoryUrl": "https://[::1/x"}, {"repositoryUrl": "https://github.com/a/b", "stackRoot": "a\nb"},
    {"repositoryUrl": "https://github.com/a/b", "projectId": "no-such-project"}, [1, 2]])
def test_invalid_mappings_are_400(tracker: TrackerServer, project: Project, body: Any) -> None:
    if isinstance(body, dict):
        body = {"projectId": project.id, **body}
    r = tracker.api("POST", MAPPINGS, json=body)
    assert r.status_code == 400 and r.json()["detail"], r.text
    assert tracker.api("PUT", f"{MAPPINGS}999999/", json={}).status_code == 404


def test_issue_page_screenshot(tracker: TrackerServer, crashed: tuple[Project, dict[str, Any]], tmp_path: Path,
                               browser: Any) -> None:
    """The links on the issue page, seen in a browser (the screenshot is left in tmp_path)."""
    project, issue = crashed
    mapping = tracker.api("POST", MAPPINGS, json={"projectId": project.id, "repositoryUrl": "https://github.com/acme/shop",
                                                  "stackRoot": "codelinks_app/", "sourceRoot": "app/"}).json()
    try:
        page = tracker.browser_context(browser, viewport={"width": 1400, "height": 900}).new_page()
        page.goto(f"{tracker.url}/issues/{issue['id']}/")
        assert page.locator("a.source-link").first.is_visible() and page.locator("a.code-link").first.is_visible()
        page.screenshot(path=str(tmp_path / "issue.png"), full_page=True)
        page.close()
    finally:
        tracker.api("DELETE", f"{MAPPINGS}{mapping['id']}/")


def test_jira_link_when_configured(tmp_path: Path) -> None:
    import tracker

    config = tmp_path / "tracker.toml"
    config.write_text('[jira]\nurl = "https://acme.atlassian.net/"\nproject_id = 10000\nissue_type = "10004"\n')
    jira = tracker.load_settings(str(config)).jira
    [(label, link)] = tracker.report_links("KeyError: 'sku'", "line one\nline & two", [], jira)
    url = urllib.parse.urlsplit(link)
    assert label == "Jira issue" and url.path == "/secure/CreateIssueDetails!init.jspa"
    assert urllib.parse.parse_qs(url.query) == {"pid": ["10000"], "issuetype": ["10004"], "summary": ["KeyError: 'sku'"],
                                                "description": ["line one\nline & two"]}
    assert tracker.report_links("t", "b", [], {}) == []
