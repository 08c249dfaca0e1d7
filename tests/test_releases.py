"""Releases, commits and deploys as CI records them: the real `sentry-cli` binary against the live
server, a real git repository made by the test, and the pages that show the result."""
from __future__ import annotations

import html
import os
import re
import shutil
import subprocess
import sys
import urllib.parse
from pathlib import Path
from typing import Any

import pytest

from conftest import Project, TrackerServer, charge_under_sdk, wait_for

SENTRY_CLI = shutil.which("sentry-cli") or str(Path(sys.executable).with_name("sentry-cli"))
pytestmark = pytest.mark.skipif(not Path(SENTRY_CLI).exists(), reason="the sentry-cli package is not installed")


def cli(tracker: TrackerServer, project: Project, *args: str, cwd: Path | None = None,
        check: bool = True) -> subprocess.CompletedProcess[str]:
    """Run the real sentry-cli as CI would, configured only through its environment."""
    env = {**os.environ, "SENTRY_URL": tracker.url, "SENTRY_AUTH_TOKEN": tracker.token, "SENTRY_ORG": "tracker",
           "SENTRY_PROJECT": project.slug, "SENTRY_DSN": project.dsn, "SENTRY_DISABLE_UPDATE_CHECK": "1"}
    out = subprocess.run([SENTRY_CLI, *args], capture_output=True, text=True, env=env, cwd=cwd, timeout=60)
    if check:
        assert out.returncode == 0, f"sentry-cli {' '.join(args)} failed:\n{out.stdout}\n{out.stderr}"
    return out


def release(tracker: TrackerServer, version: str) -> dict[str, Any]:
    r = tracker.api("GET", f"organizations/tracker/releases/{urllib.parse.quote(version, safe='@')}/")
    assert r.status_code == 200, r.text
    return r.json()


def git(repo: Path, *args: str) -> str:
    env = {**os.environ, "GIT_AUTHOR_NAME": "Ada Dev", "GIT_AUTHOR_EMAIL": "ada@example.com",
           "GIT_COMMITTER_NAME": "Ada Dev", "GIT_COMMITTER_EMAIL": "ada@example.com"}
    return subprocess.run(["git", *args], cwd=repo, env=env, capture_output=True, text=True, check=True).stdout.strip()


def commit(repo: Path, message: str, files: dict[str, str]) -> str:
    for name, content in files.items():
        (repo / name).parent.mkdir(parents=True, exist_ok=True)
        (repo / name).write_text(content)
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", message)
    return git(repo, "rev-parse", "HEAD")


def new_repo(path: Path, remote: str) -> Path:
    path.mkdir()
    git(path, "init", "-q", "-b", "main")
    git(path, "remote", "add", "origin", remote)
    return path


def test_info_authenticates_with_a_tracker_token(tracker: TrackerServer, project: Project) -> None:
    out = cli(tracker, project, "info").stdout
    assert f"Sentry Server: {tracker.url}" in out and "Default Organization: tracker" in out
    assert "Method: Auth Token" in out and "project:releases" in out
    bad = subprocess.run([SENTRY_CLI, "releases", "list"], capture_output=True, text=True, timeout=60,
                         env={**os.environ, "SENTRY_URL": tracker.url, "SENTRY_AUTH_TOKEN": "0" * 64,
                              "SENTRY_ORG": "tracker", "SENTRY_PROJECT": project.slug,
                              "SENTRY_DISABLE_UPDATE_CHECK": "1"})
    assert bad.returncode != 0 and "Invalid token" in bad.stderr


def test_release_lifecycle(tracker: TrackerServer, project: Project) -> None:
    version = f"{project.slug}@1.0+build#2?x"  # sentry-cli percent-encodes '+', '#' and '?' in paths
    assert f"Created release {version}" in cli(tracker, project, "releases", "new", version).stdout
    assert version in cli(tracker, project, "releases", "list").stdout
    assert version in cli(tracker, project, "releases", "info", version).stdout
    created = release(tracker, version)
    assert created["dateReleased"] is None and [p["slug"] for p in created["projects"]] == [project.slug]
    assert f"Finalized release {version}" in cli(tracker, project, "releases", "finalize", version).stdout
    assert release(tracker, version)["dateReleased"] is not None
    out = cli(tracker, project, "deploys", "new", "-r", version, "-e", "prod", "-n", "blue").stdout
    assert "Created new deploy blue for 'prod'" in out
    cli(tracker, project, "releases", "deploys", version, "new", "-e", "staging")  # the old spelling
    listed = cli(tracker, project, "deploys", "list", "-r", version).stdout
    assert "prod" in listed and "staging" in listed and "blue" in listed
    deploys = tracker.api("GET", f"organizations/tracker/releases/{urllib.parse.quote(version)}/deploys/").json()
    assert [d["environment"] for d in deploys] == ["staging", "prod"]
    assert release(tracker, version)["lastDeploy"]["environment"] == "staging"
    again = tracker.api("POST", "organizations/tracker/releases/", json={"version": version, "projects": [project.slug]})
    assert again.status_code == 208 and again.json()["version"] == version
    cli(tracker, project, "releases", "delete", version)
    assert cli(tracker, project, "releases", "info", version, check=False).returncode != 0
    assert version not in cli(tracker, project, "releases", "list").stdout


def test_send_event_makes_an_issue(tracker: TrackerServer, project: Project) -> None:
    cli(tracker, project, "send-event", "-m", "payment gateway timed out", "--release", f"{project.slug}@9",
        "-t", "service:payments")
    [issue] = tracker.wait_issues(project, 1)
    assert issue["title"] == "payment gateway timed out"
    event = tracker.latest_event(issue["id"])
    assert {"key": "service", "value": "payments"} in event["tags"]
    assert release(tracker, f"{project.slug}@9")["projects"][0]["slug"] == project.slug


def crash_issue(tracker: TrackerServer, project: Project, repo: Path, module: str, version: str) -> dict[str, Any]:
    """Raise in the repository's own code with the real SDK; the issue it makes."""
    charge_under_sdk(project, repo, module, release=version, environment="prod")
    [issue] = tracker.wait_issues(project, 1)
    return issue


def test_set_commits_local_ranges_and_fixes(tracker: TrackerServer, project: Project, tmp_path: Path) -> None:
    repo = new_repo(tmp_path / "web", "https://gitlab.example.com/acme/web.git")
    first = commit(repo, "initial", {"fixapp/__init__.py": "", "fixapp/pay.py": "def charge(a):\n    raise ValueError(a)\n"})
    v1, v2 = f"{project.slug}@1", f"{project.slug}@2"
    issue = crash_issue(tracker, project, repo, "fixapp.pay", v1)
    cli(tracker, project, "releases", "new", v1)
    assert "Success! Set commits" in cli(tracker, project, "releases", "set-commits", v1, "--local", cwd=repo).stdout
    second = commit(repo, f"Guard the charge\n\nFixes {issue['shortId']}", {"fixapp/pay.py": "def charge(a):\n    return a\n"})
    third = commit(repo, "Add docs", {"README": "docs\n"})
    cli(tracker, project, "releases", "new", v2)
    cli(tracker, project, "releases", "set-commits", v2, "--auto", cwd=repo)  # no repository registered: local git
    commits = tracker.api("GET", f"organizations/tracker/releases/{v1}/commits/").json()
    assert [c["id"] for c in commits] == [first]
    commits = tracker.api("GET", f"organizations/tracker/releases/{v2}/commits/").json()
    assert [c["id"] for c in commits] == [third, second]  # only what is new since the previous release
    assert commits[1]["author"] == {"name": "Ada Dev", "email": "ada@example.com"}
    files = tracker.api("GET", f"organizations/tracker/releases/{v2}/commitfiles/").json()
    assert {(f["filename"], f["type"]) for f in files} == {("fixapp/pay.py", "M"), ("README", "A")}
    # the remote's name the local path sends is no registered repository, so `--commit` stays usable
    assert "origin" not in [r["name"] for r in tracker.api("GET", "organizations/tracker/repos/").json()]
    fixed = tracker.api("GET", f"issues/{issue['id']}/").json()
    assert fixed["status"] == "resolved" and fixed["statusDetails"] == {"inRelease": v2}
    kinds = [a["type"] for a in tracker.api("GET", f"issues/{issue['id']}/activities/").json()["activity"]]
    assert "set_resolved_in_commit" in kinds
    page = tracker.web.get(f"/issues/{issue['id']}/", timeout=10).text
    assert f"Fixed by commit {second[:12]}" in page and f"Resolved in {v2}" in page


def test_set_commits_with_registered_repository(tracker: TrackerServer, project: Project, tmp_path: Path) -> None:
    name = f"acme/{project.slug}"
    r = tracker.api("POST", "organizations/tracker/repos/", json={"name": name, "url": f"https://github.com/{name}"})
    assert r.status_code == 201 and r.json()["provider"] == {"id": "integrations:github", "name": "GitHub"}
    assert tracker.api("POST", "organizations/tracker/repos/", json={"name": name.upper()}).status_code == 409
    assert name in [repo["name"] for repo in tracker.api("GET", "organizations/tracker/repos/").json()]
    repo = new_repo(tmp_path / "svc", f"git@github.com:{name}.git")
    first = commit(repo, "one", {"a.py": "1\n"})
    second = commit(repo, "two", {"a.py": "2\n"})
    version = f"{project.slug}@7"
    cli(tracker, project, "releases", "set-commits", version, "--commit", f"{name}@{first}..{second}")
    detail = release(tracker, version)
    assert detail["lastCommit"]["id"] == second and detail["lastCommit"]["repository"]["name"] == name
    page = tracker.web.get(f"/releases/{urllib.parse.quote(version)}/", timeout=10).text
    assert f"{name} {first[:12]}..{second[:12]}" in page
    unknown = cli(tracker, project, "releases", "set-commits", version, "--commit", "nobody/else@abc", check=False)
    assert unknown.returncode != 0 and "Unknown repo" in unknown.stderr
    third = commit(repo, "three", {"a.py": "3\n"})
    cli(tracker, project, "releases", "set-commits", version, "--auto", cwd=repo)  # the remote matches the url
    assert release(tracker, version)["lastCommit"]["id"] == third
    assert "Clearing commits" in cli(tracker, project, "releases", "set-commits", version, "--clear").stdout
    assert release(tracker, version)["commitCount"] == 0


@pytest.mark.parametrize("body, status", [
    ({"version": "a/b", "projects": ["p"]}, 400), ({"version": "", "projects": ["p"]}, 400),
    ({"version": "ok"}, 400), ({"version": "ok", "projects": ["no-such-project"]}, 400),
    ({"version": "ok", "projects": ["p"], "dateReleased": "yesterday"}, 400),
    ({"version": "ok", "projects": ["p"], "commits": [{"message": "no id"}]}, 400),
    ({"version": "ok", "projects": ["p"], "refs": [{"repository": "unknown/repo", "commit": "abc"}]}, 400),
    ([1], 400)])
def test_bad_release_bodies_are_400(tracker: TrackerServer, project: Project, body: Any, status: int) -> None:
    if isinstance(body, dict) and body.get("projects") == ["p"]:
        body = {**body, "projects": [project.slug]}
    r = tracker.api("POST", "organizations/tracker/releases/", json=body)
    assert r.status_code == status and r.json()["detail"] and r.headers["content-type"] == "application/json"
    assert tracker.api("GET", "organizations/tracker/releases/no-such/").status_code == 404
    assert tracker.api("GET", "organizations/other-org/releases/").status_code == 404


APP = "\n" * 20 + "def charge(amount):\n    total = amount * 2\n    raise ValueError(f'declined {total}')\n"
CRASH_LINE = 23


def test_release_pages_and_code_links_from_a_real_repository(tracker: TrackerServer, project: Project,
                                                             tmp_path: Path) -> None:
    """CI records two releases from git; an error in the second links to its code and its commits."""
    repo = new_repo(tmp_path / "shop", "https://gitlab.example.com/acme/shop.git")
    v1, v2 = f"{project.slug}@1.0.0", f"{project.slug}@1.1.0"
    commit(repo, "Add checkout", {"shopapp/__init__.py": "", "shopapp/checkout.py": APP.replace("* 2", "* 1")})
    cli(tracker, project, "releases", "new", v1)
    cli(tracker, project, "releases", "set-commits", v1, "--local", cwd=repo)
    cli(tracker, project, "releases", "finalize", v1)
    cli(tracker, project, "deploys", "new", "-r", v1, "-e", "prod")
    touched = commit(repo, "Double the charge", {"shopapp/checkout.py": APP})
    head = commit(repo, "Unrelated styling", {"static/site.css": "body{}\n"})
    cli(tracker, project, "releases", "new", v2)
    cli(tracker, project, "releases", "set-commits", v2, "--local", cwd=repo)
    cli(tracker, project, "deploys", "new", "-r", v2, "-e", "prod")
    issue = crash_issue(tracker, project, repo, "shopapp.checkout", v2)

    page = tracker.web.get(f"/issues/{issue['id']}/", timeout=10).text
    suspects = page.split('class="card suspects"', 1)[1].split("</div></div>", 1)[0]
    assert touched[:12] in suspects and "Double the charge" in suspects and head[:12] not in suspects
    assert suspects.index("Double the charge") < suspects.index("Add checkout")  # its own release's first
    assert "shopapp/checkout.py" in suspects and f'href="/releases/{urllib.parse.quote(v2)}/"' in suspects

    links = {}
    for provider, url in (("gitlab", "https://gitlab.example.com/acme/shop"), ("github", "https://github.com/acme/shop")):
        mapping = tracker.api("POST", "organizations/tracker/code-mappings/",
                              json={"projectId": project.id, "repositoryUrl": url, "stackRoot": "shopapp/",
                                    "sourceRoot": "shopapp/"}).json()
        try:
            page = tracker.web.get(f"/issues/{issue['id']}/", timeout=10).text
            links[provider] = [html.unescape(h) for h in re.findall(r'class="source-link" href="([^"]*)"', page)]
        finally:
            tracker.api("DELETE", f"organizations/tracker/code-mappings/{mapping['id']}/")
    assert links["gitlab"] == [f"https://gitlab.example.com/acme/shop/-/blob/{head}/shopapp/checkout.py#L{CRASH_LINE}"]
    assert links["github"] == [f"https://github.com/acme/shop/blob/{head}/shopapp/checkout.py#L{CRASH_LINE}"]

    listing = tracker.web.get("/releases/", params={"project": project.slug}, timeout=10).text
    assert listing.index(html.escape(v2)) < listing.index(html.escape(v1))
    page = tracker.web.get(f"/releases/{urllib.parse.quote(v2)}/", timeout=10).text
    for part in (touched[:12], head[:12], "Double the charge", "Ada Dev", "shopapp/checkout.py", "static/site.css",
                 "prod", f'href="/issues/{issue["id"]}/"'):
        assert part in page, part
    old = tracker.web.get(f"/releases/{urllib.parse.quote(v1)}/", timeout=10).text
    assert "Add checkout" in old and "Double the charge" not in old and f'href="/issues/{issue["id"]}/"' not in old
    detail = release(tracker, v2)
    assert detail["newGroups"] == 1 and detail["commitCount"] == 2 and detail["lastDeploy"]["environment"] == "prod"
    assert wait_for(lambda: release(tracker, v2)["lastEvent"])
