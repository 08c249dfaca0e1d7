"""What an API token may do is exactly what its scopes reach: every mutating /api/0/ route (found
from the app's own routes, so a new one without an entry here fails) against every scope name, the
tracker's own (read, write, admin) and Sentry's; and the attack that started it: a CI token turning
data scrubbing off before the next real sentry-sdk event."""
from __future__ import annotations

import json
import os
import re
import shutil
import sqlite3
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any, Callable

import httpx
import pytest
import sentry_sdk
from conftest import Project, TrackerServer, run_cli, wait_for
from sentry_sdk.scrubber import EventScrubber

import tracker as tracker_module

DENIED = {"detail": "You do not have permission to perform this action."}  # Sentry's answer, word for word

# Who may do what, written from Sentry's "Permissions & Scopes" page (PUT/POST area:write, DELETE
# area:admin; project:releases the release endpoints; event:write issue updates, event:admin issue
# deletion; alerts:write alert rules) and from the dashboard's roles for the tracker's own names.
TRIAGE = {"write", "admin", "event:write", "event:admin"}
DELETE_ISSUES = {"admin", "event:admin"}
RELEASES = {"write", "admin", "project:releases", "org:ci", "project:write", "project:admin"}
PROJECT_SETTINGS = {"admin", "project:write", "project:admin"}
KEYS, DELETE_KEYS = PROJECT_SETTINGS, {"admin", "project:admin"}
ALERTS = {"admin", "alerts:write", "project:write", "project:admin"}
INTEGRATIONS = {"admin", "org:integrations", "org:write", "org:admin"}
FEEDBACK = {"write", "admin", "event:write", "event:admin", "project:write", "project:admin"}
TOKENS = {"admin"}

MUTATING: dict[tuple[str, str], set[str]] = {
    ("PUT", "/api/0/projects/{org}/{project}/issues/"): TRIAGE,
    ("DELETE", "/api/0/projects/{org}/{project}/issues/"): DELETE_ISSUES,
    ("PUT", "/api/0/issues/{issue_id}/"): TRIAGE,
    ("DELETE", "/api/0/issues/{issue_id}/"): DELETE_ISSUES,
    ("POST", "/api/0/issues/{issue_id}/hashes/"): TRIAGE,  # unmerge, a member's triage in the dashboard
    ("DELETE", "/api/0/issues/{issue_id}/hashes/"): TRIAGE,
    ("PUT", "/api/0/organizations/{org}/issues/"): TRIAGE,
    ("DELETE", "/api/0/organizations/{org}/issues/"): DELETE_ISSUES,
    ("PUT", "/api/0/organizations/{org}/issues/{issue_id}/"): TRIAGE,
    ("DELETE", "/api/0/organizations/{org}/issues/{issue_id}/"): DELETE_ISSUES,
    ("POST", "/api/0/organizations/{org}/issues/{issue_id}/hashes/"): TRIAGE,
    ("DELETE", "/api/0/organizations/{org}/issues/{issue_id}/hashes/"): TRIAGE,
    ("PUT", "/api/0/projects/{org}/{project}/"): PROJECT_SETTINGS,  # dataScrubber lives here
    ("PUT", "/api/0/projects/{org}/{project}/grouping-rules/"): PROJECT_SETTINGS,
    ("POST", "/api/0/projects/{org}/{project}/keys/"): KEYS,
    ("PUT", "/api/0/projects/{org}/{project}/keys/{key_id}/"): KEYS,
    ("DELETE", "/api/0/projects/{org}/{project}/keys/{key_id}/"): DELETE_KEYS,
    ("POST", "/api/0/organizations/{org}/releases/"): RELEASES,
    ("POST", "/api/0/projects/{org}/{project}/releases/"): RELEASES,
    ("PUT", "/api/0/organizations/{org}/releases/{version}/"): RELEASES,  # also set-commits
    ("PUT", "/api/0/projects/{org}/{project}/releases/{version}/"): RELEASES,
    ("DELETE", "/api/0/organizations/{org}/releases/{version}/"): RELEASES,
    ("POST", "/api/0/organizations/{org}/releases/{version}/deploys/"): RELEASES,
    ("POST", "/api/0/organizations/{org}/chunk-upload/"): RELEASES,  # source maps (issue 17)
    ("POST", "/api/0/organizations/{org}/artifactbundle/assemble/"): RELEASES,
    ("POST", "/api/0/organizations/{org}/releases/{version}/assemble/"): RELEASES,
    ("POST", "/api/0/organizations/{org}/releases/{version}/files/"): RELEASES,
    ("POST", "/api/0/projects/{org}/{project}/releases/{version}/files/"): RELEASES,
    ("POST", "/api/0/projects/{org}/{project}/rules/"): ALERTS,
    ("PUT", "/api/0/projects/{org}/{project}/rules/{rule_id}/"): ALERTS,
    ("DELETE", "/api/0/projects/{org}/{project}/rules/{rule_id}/"): ALERTS,
    ("PUT", "/api/0/projects/{org}/{project}/slo/"): ALERTS,
    ("DELETE", "/api/0/projects/{org}/{project}/slo/"): ALERTS,
    ("POST", "/api/0/organizations/{org}/deliveries/{delivery_id}/retry/"): ALERTS,
    ("POST", "/api/0/organizations/{org}/channels/"): INTEGRATIONS,
    ("PUT", "/api/0/organizations/{org}/channels/{channel_id}/"): INTEGRATIONS,
    ("DELETE", "/api/0/organizations/{org}/channels/{channel_id}/"): INTEGRATIONS,
    ("POST", "/api/0/organizations/{org}/channels/{channel_id}/test/"): INTEGRATIONS,
    ("POST", "/api/0/organizations/{org}/repos/"): INTEGRATIONS,
    ("POST", "/api/0/organizations/{org}/code-mappings/"): INTEGRATIONS,
    ("PUT", "/api/0/organizations/{org}/code-mappings/{mapping_id}/"): INTEGRATIONS,
    ("PUT", "/api/0/projects/{org}/{project}/forwarding/"): INTEGRATIONS,  # where its events also go
    ("DELETE", "/api/0/organizations/{org}/code-mappings/{mapping_id}/"): INTEGRATIONS,
    ("POST", "/api/0/projects/{org}/{project}/user-feedback/"): FEEDBACK,
    ("POST", "/api/0/api-tokens/"): TOKENS,
    ("DELETE", "/api/0/api-tokens/"): TOKENS,
    ("DELETE", "/api/0/api-tokens/{token_id}/"): TOKENS,
}

SCOPES = ("read", "write", "admin", "org:read", "org:write", "org:admin", "org:integrations", "org:ci",
          "org:billing", "project:read", "project:write", "project:admin", "project:releases",
          "project:distribution", "team:read", "team:write", "team:admin", "member:read", "member:write",
          "member:admin", "member:invite", "event:read", "event:write", "event:admin", "alerts:read",
          "alerts:write")


def api_routes() -> set[tuple[str, str]]:
    """(method, path) of every route the app serves under /api/0/ but the not-found catch-all."""
    app = tracker_module.create_app(tracker_module.Settings())
    return {(method, route.path) for route in app.routes
            if getattr(route, "path", "").startswith("/api/0/") and "{rest:path}" not in route.path
            for method in getattr(route, "methods", None) or ()}


def nowhere(path: str) -> str:
    """The route's path with every parameter naming nothing: a request the token may make finds
    nothing to change (404/400), one it may not make is refused first (403)."""
    return re.sub(r"\{(\w+)(?::\w+)?\}", lambda m: "no-such-org" if m[1] == "org" else "999999999", path)


@pytest.fixture(scope="module")
def tokens(tracker: TrackerServer) -> dict[str, str]:
    """One token per scope name, made through the API by the admin token."""
    made = {}
    for scope in SCOPES:
        r = tracker.api("POST", "api-tokens/", json={"name": f"only {scope}", "scopes": [scope]})
        assert r.status_code == 201, r.text
        made[scope] = r.json()["token"]
    return made


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def test_every_mutating_route_has_an_entry() -> None:
    """A new route that changes something must be given its reach here and in TOKEN_REACH."""
    mutating = {(method, path) for method, path in api_routes() if method not in ("GET", "HEAD")}
    assert mutating == set(MUTATING), (f"no entry for {sorted(mutating - set(MUTATING))}; "
                                       f"gone: {sorted(set(MUTATING) - mutating)}")


def test_every_mutating_route_against_every_scope(tracker: TrackerServer, tokens: dict[str, str]) -> None:
    wrong = []
    with httpx.Client(base_url=tracker.url, timeout=10) as client:
        for (method, path), allowed in sorted(MUTATING.items()):
            for scope in SCOPES:
                r = client.request(method, nowhere(path), headers=bearer(tokens[scope]),
                                   content=json.dumps({"scopes": ["no-such-scope"]}))
                refused = r.status_code == 403 and r.json() == DENIED
                if refused == (scope in allowed) or r.status_code >= 500 or r.status_code == 401:
                    wrong.append(f"{scope:<20} {method} {path} → {r.status_code} {r.text[:80]}")
    assert not wrong, "\n".join(wrong)


def test_reading_needs_the_area_read_scope(tracker: TrackerServer, project: Project, tokens: dict[str, str]) -> None:
    """A release token reads releases, not events (which hold PII); event:read reads issues; only
    the tracker's admin lists tokens."""
    issues = f"/api/0/projects/tracker/{project.slug}/issues/"
    cases = {issues: {"read", "write", "admin", "event:read", "event:write", "event:admin"},
             "/api/0/organizations/tracker/releases/": {"read", "write", "admin", "project:releases", "org:ci",
                                                        "project:read", "project:write", "project:admin"},
             "/api/0/organizations/tracker/": {"read", "write", "admin", "org:read", "org:write", "org:admin",
                                               "project:read", "project:write", "project:admin", "team:read",
                                               "team:write", "team:admin", "member:read", "member:write",
                                               "member:admin"},
             f"/api/0/projects/tracker/{project.slug}/rules/": {"read", "write", "admin", "alerts:read",
                                                                 "alerts:write", "org:read", "org:write",
                                                                 "org:admin", "project:read", "project:write",
                                                                 "project:admin"},
             "/api/0/api-tokens/": {"admin"}}
    with httpx.Client(base_url=tracker.url, timeout=10) as client:
        wrong = [f"{scope} GET {path} → {r.status_code}" for path, allowed in cases.items() for scope in SCOPES
                 if ((r := client.get(path, headers=bearer(tokens[scope]))).status_code == 200) != (scope in allowed)]
    assert not wrong, "\n".join(wrong)
    # the dashboard shows events too: a token that may not read events may not read its pages
    for scope, status in (("event:read", 200), ("project:releases", 302), ("org:read", 302)):
        page = httpx.get(f"{tracker.url}/issues/", headers=bearer(tokens[scope]), timeout=10)
        assert page.status_code == status, (scope, page.status_code)


def test_root_reports_the_tokens_real_scopes(tracker: TrackerServer, tokens: dict[str, str]) -> None:
    """sentry-cli `info` shows `auth.scopes`: in Sentry's names, what the token really holds."""
    def scopes(scope: str) -> list[str]:
        r = httpx.get(f"{tracker.url}/api/0/", headers=bearer(tokens[scope]), timeout=10)
        assert r.status_code == 200, r.text
        return r.json()["auth"]["scopes"]

    reading = ["alerts:read", "event:read", "member:read", "org:read", "project:read", "team:read"]
    assert scopes("read") == reading
    assert scopes("write") == sorted([*reading, "event:write", "project:releases"])
    assert {"project:admin", "event:admin", "org:admin", "alerts:write"} <= set(scopes("admin"))
    assert scopes("project:releases") == ["project:releases"]


def test_scopes_are_stored_as_given_and_old_tokens_keep_their_meaning(tracker: TrackerServer,
                                                                       project: Project) -> None:
    """`token create --scopes project:releases,org:read` keeps those names; a token stored before
    as `read write` (what the old code made of any request up to write) still triages."""
    out = run_cli(tracker.db, "token", "create", "--scopes", "project:releases,org:read", "--name", "ci-stored-names")
    token = out.strip().splitlines()[-1]
    assert "project:releases org:read" in out and "project:releases org:read" in run_cli(tracker.db, "token", "list")
    assert "unknown scope" in run_cli_error(tracker, "token", "create", "--scopes", "project:everything")
    listed = httpx.get(f"{tracker.url}/api/0/api-tokens/", headers=bearer(tracker.token), timeout=10).json()
    assert next(t["scopes"] for t in listed if t["name"] == "ci-stored-names") == ["project:releases", "org:read"]
    old = uuid.uuid4().hex * 2
    with sqlite3.connect(tracker.db) as conn:
        conn.execute("INSERT INTO api_tokens (token_hash, name, scopes, created) VALUES (?, 'old', 'read write', 0)",
                     (tracker_module.hash_token(old),))
    project_url = f"{tracker.url}/api/0/projects/tracker/{project.slug}/"
    assert httpx.put(project_url + "issues/?id=999999999", json={"status": "resolved"}, headers=bearer(old),
                     timeout=10).status_code in (200, 204)
    assert httpx.put(project_url, json={"dataScrubber": False}, headers=bearer(old), timeout=10).json() == DENIED
    assert httpx.put(project_url, json={"dataScrubber": False}, headers=bearer(token), timeout=10).json() == DENIED
    too_many = httpx.post(f"{tracker.url}/api/0/api-tokens/", json={"scopes": ["read"] * 65},
                          headers=bearer(tracker.token), timeout=10)
    assert (too_many.status_code, too_many.json()) == (400, {"detail": "a token takes at most 64 scope names"})
    release = httpx.post(f"{tracker.url}/api/0/organizations/tracker/releases/", headers=bearer(token), timeout=10,
                         json={"version": f"{project.slug}@1", "projects": [project.slug]})
    assert release.status_code == 201, release.text


def run_cli_error(tracker: TrackerServer, *args: str) -> str:
    """A CLI command that must fail: its error message."""
    with pytest.raises(AssertionError) as failed:
        run_cli(tracker.db, *args)
    return str(failed.value)


# -- the attack -----------------------------------------------------------------------------------

def log_in(password: str) -> None:
    """A function whose locals the SDK sends as the crash frame's vars."""
    raise PermissionError(f"login refused (password length {len(password)})")


def test_ci_tokens_cannot_turn_scrubbing_off(tracker: TrackerServer, project: Project, tokens: dict[str, str],
                                             sdk: Callable[..., None]) -> None:
    """The attack from issue 15: a `write` token and sentry-cli's `project:releases` token try to
    switch scrubbing off (and to change grouping, alert rules and the SLO, and delete the issue);
    every attempt is refused, and the next real sentry-sdk event is still scrubbed."""
    base = f"{tracker.url}/api/0/projects/tracker/{project.slug}/"
    sdk(project.dsn, send_default_pii=True, event_scrubber=EventScrubber(denylist=[], pii_denylist=[]))
    sentry_sdk.capture_message("before the attack", level="error")
    sentry_sdk.flush()
    [issue] = tracker.wait_issues(project, 1)
    attempts: list[tuple[str, str, Any]] = [
        ("PUT", base, {"dataScrubber": False}), ("PUT", base, {"dataScrubberDefaults": False}),
        ("PUT", base, {"safeFields": ["password", "authorization"]}),
        ("PUT", base + "grouping-rules/", {"fingerprintingRules": "message:* -> everything"}),
        ("POST", base + "rules/", {"name": "mute", "actionMatch": "all", "conditions": [], "actions": []}),
        ("PUT", base + "slo/", {"target": 1}), ("DELETE", f"{tracker.url}/api/0/issues/{issue['id']}/", None)]
    for scope in ("write", "project:releases"):
        for method, url, body in attempts:
            r = httpx.request(method, url, json=body, headers=bearer(tokens[scope]), timeout=10)
            assert (r.status_code, r.json()) == (403, DENIED), (scope, method, url, r.text)
    settings = httpx.get(base, headers=bearer(tracker.token), timeout=10).json()
    assert (settings["dataScrubber"], settings["dataScrubberDefaults"], settings["safeFields"]) == (True, True, [])
    assert tracker.api("GET", f"issues/{issue['id']}/").status_code == 200

    password = f"s3cr3t-{uuid.uuid4().hex}"
    request = {"method": "POST", "url": "https://shop.example/login",
               "headers": {"Authorization": f"Bearer {password}", "Accept": "application/json"}}
    with sentry_sdk.new_scope() as scope:
        scope.add_event_processor(lambda event, hint: {**event, "request": request})
        try:
            log_in(password)
        except PermissionError:
            sentry_sdk.capture_exception()
    sentry_sdk.flush()
    refused = wait_for(lambda: next((i for i in tracker.issues(project) if "PermissionError" in i["title"]), None))
    event = tracker.latest_event(refused["id"])
    headers = dict(next(e["data"] for e in event["entries"] if e["type"] == "request")["headers"])
    frame = next(e["data"] for e in event["entries"] if e["type"] == "exception")["values"][-1]["stacktrace"]
    assert headers["Authorization"] == "[Filtered]" and frame["frames"][-1]["vars"]["password"] == "[Filtered]"
    assert password not in json.dumps(event)

    # the control: a token that does hold project settings may switch it off (so the refusals above are real)
    r = httpx.put(base, json={"dataScrubber": False}, headers=bearer(tokens["project:write"]), timeout=10)
    assert r.status_code == 200 and r.json()["dataScrubber"] is False, r.text


# -- sentry-cli with the least token it needs ------------------------------------------------------

SENTRY_CLI = shutil.which("sentry-cli") or str(Path(sys.executable).with_name("sentry-cli"))


@pytest.mark.skipif(not Path(SENTRY_CLI).exists(), reason="the sentry-cli package is not installed")
def test_sentry_cli_ci_with_a_release_token(tracker: TrackerServer, project: Project, tmp_path: Path) -> None:
    """What Sentry's docs tell CI to use, `project:releases` and `org:read`, does the whole release
    job with the real sentry-cli (commits from git, a deploy, an event), and nothing beyond it:
    resolving issues is refused with Sentry's message."""
    token = run_cli(tracker.db, "token", "create", "--scopes", "project:releases,org:read").strip().splitlines()[-1]
    env = {**os.environ, "SENTRY_URL": tracker.url, "SENTRY_AUTH_TOKEN": token, "SENTRY_ORG": "tracker",
           "SENTRY_PROJECT": project.slug, "SENTRY_DSN": project.dsn, "SENTRY_DISABLE_UPDATE_CHECK": "1"}

    def sentry_cli(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([SENTRY_CLI, *args], capture_output=True, text=True, env=env, cwd=tmp_path, timeout=60)

    git_env = {**os.environ, "GIT_AUTHOR_NAME": "Ada", "GIT_AUTHOR_EMAIL": "ada@example.com",
               "GIT_COMMITTER_NAME": "Ada", "GIT_COMMITTER_EMAIL": "ada@example.com"}
    for args in (["init", "-q", "-b", "main"], ["remote", "add", "origin", "https://example.com/acme/ci.git"],
                 ["commit", "-q", "--allow-empty", "-m", "first"]):
        subprocess.run(["git", *args], cwd=tmp_path, env=git_env, check=True, capture_output=True)
    version = f"{project.slug}@ci"
    for args in (["releases", "new", version], ["releases", "set-commits", version, "--auto"],
                 ["releases", "finalize", version], ["deploys", "new", "-r", version, "-e", "prod"],
                 ["send-event", "-m", "sent by CI", "--release", version]):
        out = sentry_cli(*args)
        assert out.returncode == 0, f"sentry-cli {' '.join(args)}:\n{out.stdout}\n{out.stderr}"
    made = httpx.get(f"{tracker.url}/api/0/organizations/tracker/releases/{version}/", headers=bearer(tracker.token),
                     timeout=10).json()
    assert made["dateReleased"] and made["commitCount"] == 1 and made["lastDeploy"]["environment"] == "prod"
    tracker.wait_issues(project, 1)
    refused = sentry_cli("issues", "resolve", "--all")
    assert refused.returncode != 0 and "You do not have permission" in refused.stdout + refused.stderr
    assert tracker.issues(project)[0]["status"] == "unresolved"
