"""People and tokens against the live server: login and sessions, the brute-force delay, CSRF,
roles, API token scopes, DSN keys that rotate and disable, security headers, the trusted proxy
header, and the first start's admin password."""
from __future__ import annotations

import json
import re
import sqlite3
import subprocess
import urllib.parse
from pathlib import Path
from typing import Any, Iterator

import httpx
import pytest
from conftest import ADMIN_PASSWORD, ROOT, TRACKER, Project, TrackerServer, free_port, start_server, stop_server, wait_for


def issue_in(tracker: TrackerServer, project: Project) -> dict[str, Any]:
    r = httpx.post(f"{tracker.url}/api/{project.id}/store/", json={"message": "auth test", "level": "error"},
                   headers={"X-Sentry-Auth": f"Sentry sentry_version=7, sentry_key={project.key}"}, timeout=10)
    assert r.status_code == 200, r.text
    return tracker.wait_issues(project, 1)[0]


def person(tracker: TrackerServer, role: str = "member") -> tuple[str, str]:
    """A new user of that role, with a password, made through the CLI."""
    tracker.counter[0] += 1
    name, password = f"{role}-{tracker.counter[0]}@example.org", f"pw-{role}-{tracker.counter[0]}-long"
    tracker.cli("user", "create", name, "--role", role, "--password", password)
    return name, password


def signed_in(tracker: TrackerServer, name: str, password: str) -> tuple[httpx.Client, str]:
    """A client with a session of that person, and the CSRF token its pages carry."""
    client = httpx.Client(base_url=tracker.url, timeout=10)
    r = client.post("/login", data={"name": name, "password": password, "next": "/projects/"})
    assert r.status_code == 303 and r.headers["location"] == "/projects/", r.text
    csrf = re.search(r'name="csrf" value="([^"]+)"', client.get("/projects/").text)
    assert csrf
    return client, csrf[1]


# -- sessions ---------------------------------------------------------------------------------

@pytest.mark.parametrize("path", ["/issues/", "/projects/", "/releases/", "/alerts/", "/settings/", "/account/",
                                  "/metrics", "/issues/1/events/latest/json"])
def test_every_page_needs_a_signed_in_person(tracker: TrackerServer, path: str) -> None:
    r = httpx.get(tracker.url + path, timeout=10)
    assert r.status_code == 302 and r.headers["location"] == "/login?" + urllib.parse.urlencode({"next": path})
    assert "tracker_session" not in r.text and r.headers["x-frame-options"] == "DENY"
    assert httpx.post(tracker.url + "/issues/bulk/", data={"bulk": "resolved"}, timeout=10).status_code == 401


def test_login_session_cookie_and_logout(tracker: TrackerServer) -> None:
    name, password = person(tracker)
    client = httpx.Client(base_url=tracker.url, timeout=10)
    r = client.post("/login", data={"name": name, "password": password, "next": "https://evil.example/x"})
    assert r.status_code == 303 and r.headers["location"] == "/issues/"  # no open redirect
    cookie = r.headers["set-cookie"].lower()
    assert "httponly" in cookie and "samesite=lax" in cookie and "secure" not in cookie  # plain http here
    page = client.get("/issues/")
    assert page.status_code == 200 and name in page.text and "Sign out" in page.text
    csrf = re.search(r'name="csrf" value="([^"]+)"', page.text)[1]  # type: ignore[index]
    assert client.post("/logout", data={"csrf": csrf}).status_code == 303
    assert client.get("/issues/").status_code == 302
    stored = sqlite3_rows(tracker.db, "SELECT token_hash FROM web_sessions")
    assert all(len(row[0]) == 64 for row in stored)  # only hashes of session tokens are kept


def sqlite3_rows(db: Path, sql: str) -> list[tuple[Any, ...]]:
    with sqlite3.connect(db) as conn:
        return conn.execute(sql).fetchall()


def test_passwords_are_stored_as_scrypt_hashes(tracker: TrackerServer) -> None:
    name, password = person(tracker)
    [(stored,)] = sqlite3_rows(tracker.db, f"SELECT password FROM users WHERE name = '{name}'")
    assert stored.startswith("scrypt$16384$8$1$") and password not in stored


def test_failed_logins_slow_down_the_next_try(tracker: TrackerServer) -> None:
    name, password = person(tracker)
    client = httpx.Client(base_url=tracker.url, timeout=10, headers={"X-Forwarded-For": "ignored"})
    wrong = client.post("/login", data={"name": name, "password": "not it at all"})
    assert wrong.status_code == 401 and "Wrong user name or password" in wrong.text
    assert "tracker_session" not in wrong.headers.get("set-cookie", "")
    hurried = client.post("/login", data={"name": name, "password": password})
    assert hurried.status_code == 429 and "try again in" in hurried.text  # even the right password waits
    # a refused try does not count, so polling finds the moment the pause ends: within 1 s, then 2 s
    wait_for(lambda: client.post("/login", data={"name": name, "password": "still wrong!"}).status_code == 401,
             timeout=1.1)
    second = client.post("/login", data={"name": name, "password": password})
    assert second.status_code == 429 and re.search(r"try again in [12] s", second.text)
    wait_for(lambda: client.post("/login", data={"name": name, "password": password}).status_code == 303,
             timeout=2.1)


def test_unknown_user_looks_like_a_wrong_password(tracker: TrackerServer) -> None:
    r = httpx.post(f"{tracker.url}/login", data={"name": "nobody-here", "password": "whatever123"}, timeout=10)
    assert r.status_code == 401 and "Wrong user name or password" in r.text


def test_login_refused_from_another_site(tracker: TrackerServer) -> None:
    name, password = person(tracker)
    r = httpx.post(f"{tracker.url}/login", data={"name": name, "password": password}, timeout=10,
                   headers={"Origin": "https://evil.example"})
    assert r.status_code == 403 and "set-cookie" not in r.headers


def test_password_change_ends_other_sessions(tracker: TrackerServer) -> None:
    name, password = person(tracker)
    first, _ = signed_in(tracker, name, password)
    second, csrf = signed_in(tracker, name, password)
    bad = second.post("/account/", data={"csrf": csrf, "current": "wrong one!", "new": "a brand new secret"})
    assert bad.status_code == 400 and "not right" in bad.text
    r = second.post("/account/", data={"csrf": csrf, "current": password, "new": "a brand new secret"})
    assert r.status_code == 303
    assert second.get("/account/").status_code == 200  # this browser got a fresh session
    assert first.get("/issues/").status_code == 302  # the other one is signed out
    signed_in(tracker, name, "a brand new secret")


# -- CSRF and roles ---------------------------------------------------------------------------

def test_forms_need_the_sessions_csrf_token(tracker: TrackerServer, project: Project) -> None:
    issue = issue_in(tracker, project)
    name, password = person(tracker)
    client, csrf = signed_in(tracker, name, password)
    path = f"/issues/{issue['id']}/"
    for data in ({"status": "resolved"}, {"status": "resolved", "csrf": "forged"},
                 {"status": "resolved", "csrf": tracker.csrf}):  # another session's token is no better
        r = client.post(path, data=data)
        assert r.status_code == 403 and "Reload the page" in r.text
    assert tracker.api("GET", f"issues/{issue['id']}/").json()["status"] == "unresolved"
    assert client.post(path, data={"status": "resolved", "csrf": csrf}).status_code == 303
    assert tracker.api("GET", f"issues/{issue['id']}/").json()["status"] == "resolved"


def test_members_triage_but_only_admins_change_settings(tracker: TrackerServer, project: Project) -> None:
    issue = issue_in(tracker, project)
    name, password = person(tracker, "member")
    member, csrf = signed_in(tracker, name, password)
    assert member.post(f"/issues/{issue['id']}/", data={"csrf": csrf, "assignedTo": "me"}).status_code == 303
    for path, data in ((f"/projects/{project.slug}/keys/", {"add": "x"}),
                       (f"/projects/{project.slug}/grouping/", {"stacktrace_rules": ""}), ("/alerts/", {"test": "1"})):
        r = member.post(path, data={**data, "csrf": csrf})
        assert r.status_code == 403 and "Only an admin" in r.text, path
    assert member.get("/settings/").status_code == 403
    assert "Add a DSN key" not in member.get("/projects/").text
    admin, _ = signed_in(tracker, *person(tracker, "admin"))
    assert admin.get("/settings/").status_code == 200 and "Add a DSN key" in admin.get("/projects/").text


def test_admin_adds_a_person_who_signs_in_by_link(tracker: TrackerServer) -> None:
    tracker.counter[0] += 1
    newcomer = f"newcomer-{tracker.counter[0]}"
    page = tracker.form("/settings/", {"user": newcomer, "role": "member"})
    assert page.status_code == 200 and f"One-time login link for {newcomer}" in page.text
    link = re.search(rf"{re.escape(tracker.url)}/login/[\w-]+", page.text)[0]  # type: ignore[index]
    browser = httpx.Client(timeout=10)
    assert browser.get(link).status_code == 303 and browser.get(f"{tracker.url}/account/").status_code == 200
    assert newcomer in browser.get(f"{tracker.url}/account/").text
    assert httpx.get(link, timeout=10).status_code == 403  # used up
    assert tracker.form("/settings/", {"user": newcomer, "role": "member"}).status_code == 400  # exists


def test_cli_user_commands_and_login_link(tracker: TrackerServer) -> None:
    tracker.counter[0] += 1
    name = f"cli-{tracker.counter[0]}"
    out = tracker.cli("user", "create", name, "--role", "admin")
    generated = re.search(r"with password (\S+) \(shown once\)", out)[1]  # type: ignore[index]
    signed_in(tracker, name, generated)
    tracker.cli("user", "passwd", name, "--password", "another fine secret")
    with pytest.raises(AssertionError):
        signed_in(tracker, name, generated)
    link = tracker.cli("user", "link", name).split()[0]
    client = httpx.Client(timeout=10)
    assert client.get(link).status_code == 303 and client.get(f"{tracker.url}/settings/").status_code == 200
    assert f"{name} " in tracker.cli("user", "list")


# -- API tokens -------------------------------------------------------------------------------

def test_token_scopes(tracker: TrackerServer, project: Project) -> None:
    issue = issue_in(tracker, project)
    read = tracker.cli("token", "create", "--scopes", "read").splitlines()[-1]
    write = tracker.cli("token", "create", "--scopes", "write", "--name", "ci").splitlines()[-1]
    assert tracker.api("GET", f"issues/{issue['id']}/", read).status_code == 200
    r = tracker.api("PUT", f"issues/{issue['id']}/", read, json={"status": "resolved"})
    assert r.status_code == 403 and r.json() == {"detail": "You do not have permission to perform this action."}
    assert tracker.api("PUT", f"issues/{issue['id']}/", write, json={"status": "resolved"}).status_code == 200
    channel = {"name": "t", "kind": "webhook", "config": {"url": "http://127.0.0.1:9/"}}
    assert tracker.api("POST", "organizations/tracker/channels/", write, json=channel).status_code == 403
    assert tracker.api("GET", "api-tokens/", write).status_code == 403
    # a read token may fetch dashboard pages (scripts, screenshots), never change anything there
    page = httpx.get(f"{tracker.url}/issues/{issue['id']}/", headers={"Authorization": f"Bearer {read}"}, timeout=10)
    assert page.status_code == 200 and "auth test" in page.text
    posted = httpx.post(f"{tracker.url}/issues/{issue['id']}/", data={"status": "unresolved"}, timeout=10,
                        headers={"Authorization": f"Bearer {read}"})
    assert posted.status_code == 403


def test_tokens_api_create_list_revoke(tracker: TrackerServer) -> None:
    created = tracker.api("POST", "api-tokens/", json={"name": "release bot", "scopes": ["project:releases"]})
    assert created.status_code == 201, created.text
    body = created.json()
    assert body["scopes"] == ["project:releases"] and re.fullmatch(r"[0-9a-f]{64}", body["token"])
    listed = tracker.api("GET", "api-tokens/").json()
    mine = next(t for t in listed if t["id"] == body["id"])
    assert (mine["name"], mine["scopes"]) == ("release bot", ["project:releases"])
    assert all("token" not in t for t in listed)  # never shown again
    assert tracker.api("GET", "organizations/tracker/releases/", body["token"]).status_code == 200
    assert tracker.api("DELETE", f"api-tokens/{body['id']}/").status_code == 204
    assert tracker.api("GET", "organizations/tracker/releases/", body["token"]).status_code == 401
    other = tracker.api("POST", "api-tokens/", json={"scopes": ["org:read"]}).json()
    assert tracker.api("DELETE", "api-tokens/", content=json.dumps({"tokenId": other["id"]})).status_code == 204
    assert tracker.api("DELETE", f"api-tokens/{other['id']}/").status_code == 404
    assert tracker.api("POST", "api-tokens/", json={"scopes": ["root"]}).status_code == 400
    [(stored,)] = sqlite3_rows(tracker.db, "SELECT count(*) FROM api_tokens WHERE token_hash = "
                                           f"'{body['token']}'")
    assert stored == 0  # tokens are stored hashed


def test_tokens_from_the_settings_page(tracker: TrackerServer) -> None:
    page = tracker.form("/settings/", {"token": "grafana", "scope": "read"})
    token = re.search(r"<pre class=\"mono\">([0-9a-f]{64})</pre>", page.text)[1]  # type: ignore[index]
    assert tracker.api("GET", "organizations/", token).status_code == 200
    token_id = next(t["id"] for t in tracker.api("GET", "api-tokens/").json() if t["name"] == "grafana")
    assert tracker.form("/settings/", {"revoke": token_id}).status_code == 200
    assert tracker.api("GET", "organizations/", token).status_code == 401


# -- DSN keys ---------------------------------------------------------------------------------

def store_with(tracker: TrackerServer, project: Project, key: str) -> httpx.Response:
    return httpx.post(f"{tracker.url}/api/{project.id}/store/", json={"message": "key test"}, timeout=10,
                      headers={"X-Sentry-Auth": f"Sentry sentry_version=7, sentry_key={key}"})


def test_keys_rotate_and_disable_through_the_api(tracker: TrackerServer, project: Project) -> None:
    path = f"projects/tracker/{project.slug}/keys/"
    [old] = tracker.api("GET", path).json()
    assert old["public"] == project.key and old["isActive"] and old["dsn"]["public"] == project.dsn
    new = tracker.api("POST", path, json={"name": "2026 rotation"}).json()
    assert new["label"] == "2026 rotation" and store_with(tracker, project, new["public"]).status_code == 200
    off = tracker.api("PUT", f"{path}{old['id']}/", json={"isActive": False})
    assert off.status_code == 200 and off.json()["isActive"] is False
    refused = store_with(tracker, project, project.key)
    assert refused.status_code == 403 and "disabled" in refused.json()["detail"]
    assert "retry-after" not in refused.headers
    assert tracker.api("PUT", f"{path}{old['id']}/", json={"isActive": "no"}).status_code == 400
    tracker.api("PUT", f"{path}{old['id']}/", json={"isActive": True})
    assert store_with(tracker, project, project.key).status_code == 200
    assert tracker.api("DELETE", f"{path}{new['id']}/").status_code == 204
    assert store_with(tracker, project, new["public"]).status_code == 403


def test_keys_from_the_projects_page(tracker: TrackerServer, project: Project) -> None:
    assert tracker.form(f"/projects/{project.slug}/keys/", {"disable": project.key}).status_code == 303
    page = tracker.web.get("/projects/").text
    assert "disabled: its events are refused" in page and store_with(tracker, project, project.key).status_code == 403
    tracker.form(f"/projects/{project.slug}/keys/", {"enable": project.key})
    tracker.form(f"/projects/{project.slug}/keys/", {"add": "second"})
    keys = tracker.api("GET", f"projects/tracker/{project.slug}/keys/").json()
    assert [k["isActive"] for k in keys] == [True, True] and keys[1]["label"] == "second"
    assert all(k["dsn"]["public"] in tracker.web.get("/projects/").text for k in keys)


# -- headers ----------------------------------------------------------------------------------

@pytest.mark.parametrize("path", ["/login", "/issues/", "/projects/", "/settings/", "/no-such-page/",
                                  "/static/tracker.css"])
def test_security_headers(tracker: TrackerServer, path: str) -> None:
    r = tracker.web.get(path)
    csp = r.headers["content-security-policy"]
    assert "default-src 'none'" in csp and "script-src" not in csp and "frame-ancestors 'none'" in csp
    assert r.headers["x-content-type-options"] == "nosniff" and r.headers["x-frame-options"] == "DENY"
    assert r.headers["referrer-policy"] == "same-origin"


def test_cookie_is_secure_behind_tls(tmp_path: Path) -> None:
    server = start_server(tmp_path / "tls.db", "--url", "https://tracker.example.org")
    try:
        r = httpx.post(f"{server.url}/login", data={"name": "admin", "password": ADMIN_PASSWORD}, timeout=10)
        assert r.status_code == 303 and "secure" in r.headers["set-cookie"].lower()
    finally:
        stop_server(server)


# -- the proxy header and the first start -----------------------------------------------------

@pytest.fixture(scope="module")
def proxied(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TrackerServer]:
    server = start_server(tmp_path_factory.mktemp("proxied") / "tracker.db", "--auth-header", "X-Forwarded-User")
    try:
        yield server
    finally:
        stop_server(server)


def test_trusted_proxy_header_signs_people_in(proxied: TrackerServer) -> None:
    sso = httpx.Client(base_url=proxied.url, timeout=10, headers={"X-Forwarded-User": "dana@example.org"})
    page = sso.get("/issues/")
    assert page.status_code == 200 and "dana@example.org" in page.text and "Sign out" not in page.text
    assert [("dana@example.org", "member")] == sqlite3_rows(proxied.db, "SELECT name, role FROM users WHERE "
                                                                        "name LIKE 'dana%'")
    project = proxied.create_project()
    issue = issue_in(proxied, project)
    csrf = re.search(r'name="csrf" value="([^"]+)"', sso.get(f"/issues/{issue['id']}/").text)[1]  # type: ignore[index]
    assert sso.post(f"/issues/{issue['id']}/", data={"csrf": csrf, "status": "resolved"}).status_code == 303
    impostor = httpx.Client(base_url=proxied.url, timeout=10, headers={"X-Forwarded-User": "eve"})
    assert impostor.post(f"/issues/{issue['id']}/", data={"csrf": csrf, "status": "unresolved"}).status_code == 403
    assert httpx.get(f"{proxied.url}/issues/", timeout=10).status_code == 302  # no header: sign in as usual


def test_first_start_prints_the_admin_password(tmp_path: Path) -> None:
    port = free_port()
    proc = subprocess.Popen([*TRACKER, "--db", str(tmp_path / "first.db"), "serve",
                             "--port", str(port)], stdout=subprocess.PIPE, text=True, cwd=ROOT)
    try:
        line = ""
        while "Created the first user" not in line:
            line = proc.stdout.readline()  # type: ignore[union-attr]
            assert line, "the server exited"
        password = re.search(r"admin, password (\S+) \(shown once", line)[1]  # type: ignore[index]
        client = httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=10)

        def login() -> int | None:
            try:
                return client.post("/login", data={"name": "admin", "password": password}).status_code
            except httpx.TransportError:
                return None
        assert wait_for(login, timeout=20) == 303
        assert client.get("/settings/").status_code == 200
    finally:
        proc.terminate()
        proc.wait(10)
