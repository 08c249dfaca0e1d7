"""Issue 15 items 3, 5 and 9 tried again as an attacker would, after they were merged: the holes
found are pinned here. A token an admin made through the API went on working after that admin was
disabled; a channel allowed into the private network reached the metadata service through the
IPv4-mapped IPv6 spelling of its address; a channel field of the wrong JSON type wedged its
delivery; a channel moved to another URL took its stored credentials there; a lone surrogate in
any JSON body was a 500."""
from __future__ import annotations

import json
import re
from typing import Any, Iterator

import httpx
import pytest
from conftest import Project, TrackerServer, free_port, start_server, stop_server, wait_for
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from receivers import JiraReceiver
from test_auth import person, signed_in

import tracker as t


def test_a_token_made_through_the_api_goes_with_the_person(tracker: TrackerServer) -> None:
    """An admin's dashboard token makes a second one through POST /api/0/api-tokens/; disabling
    the admin revoked the first only, and the second (no owner recorded) kept admin reach."""
    name, password = person(tracker, "admin")
    browser, csrf = signed_in(tracker, name, password)
    page = browser.post("/settings/", data={"csrf": csrf, "token": "made on the page", "scope": "admin"})
    first = re.search(r'<pre class="mono">([0-9a-f]{64})</pre>', page.text)[1]  # type: ignore[index]
    made = tracker.api("POST", "api-tokens/", first, json={"name": "made by a token", "scopes": ["admin"]})
    assert made.status_code == 201, made.text
    second = made.json()["token"]
    assert tracker.api("GET", "api-tokens/", second).status_code == 200
    tracker.cli("user", "disable", name)
    assert [tracker.api("GET", "api-tokens/", token).status_code for token in (first, second)] == [401, 401]


@pytest.mark.parametrize("host", ["[::ffff:169.254.169.254]", "[::ffff:a9fe:a9fe]", "[::ffff:169.254.170.2]",
                                  "[64:ff9b::a9fe:a9fe]"])
def test_allow_private_still_refuses_the_metadata_service_in_ipv6_spelling(tracker: TrackerServer, host: str) -> None:
    """allow_private lets a channel into the LAN, never to the metadata service; an IPv6 socket
    to ::ffff:169.254.169.254 reaches the IPv4 address, and that spelling was let through."""
    r = httpx.post(f"{tracker.url}/api/0/organizations/tracker/channels/", timeout=10,
                   headers={"Authorization": f"Bearer {tracker.token}"},
                   json={"name": f"md-{host}", "kind": "webhook",
                         "config": {"url": f"http://{host}/latest/meta-data/", "allow_private": True}})
    assert r.status_code == 400 and "a cloud metadata service" in r.json()["detail"], r.text


@pytest.mark.parametrize("host", [["127.0.0.1"], 2130706433], ids=["list", "number"])
def test_a_channel_field_of_the_wrong_json_type_fails_its_delivery_not_the_dispatcher(
        tracker: TrackerServer, host: object) -> None:
    """An SMTP host sent as a JSON list or number was stored as such; each delivery then raised
    AttributeError in the dispatcher, leaving the row in_flight for good (and this channel's later
    rows for the issue behind it). A field that is no list or number by nature is stored as text."""
    r = tracker.api("POST", "organizations/tracker/channels/",
            json={"name": f"typed-{host!r}", "kind": "email",
                  "config": {"host": host, "port": free_port(), "from": "tracker@example.org",
                             "to": "ops@example.org", "security": "none", "allow_private": True}})
    assert r.status_code == 201, r.text
    channel = r.json()
    assert isinstance(channel["config"]["host"], str)
    assert tracker.api("POST", f"organizations/tracker/channels/{channel['id']}/test/").status_code == 202

    def attempted() -> dict[str, Any] | None:
        rows = tracker.api("GET", "organizations/tracker/deliveries/", params={"channel": channel["id"]}).json()
        return rows[0] if rows and rows[0]["status"] != "in_flight" and rows[0]["attempts"] else None
    delivery = wait_for(attempted)
    assert delivery["status"] in ("pending", "dead") and delivery["lastError"], delivery


def test_a_channel_moved_elsewhere_does_not_take_its_credentials(tracker: TrackerServer) -> None:
    """Secrets are never shown back, admins included; but a PUT that changed only the URL kept the
    stored Jira token, so whoever may change channels (an org:integrations token) pointed it at
    their own host, pressed "send test" and read the token from the Authorization header."""
    changer = tracker.cli("token", "create", "--scopes", "org:integrations").strip().splitlines()[-1]
    with JiraReceiver() as victim, JiraReceiver() as attacker:
        made = tracker.api("POST", "organizations/tracker/channels/",
                   json={"name": "jira-moved", "kind": "jira",
                         "config": {"url": victim.url, "project": "OPS", "email": victim.email, "token": victim.token,
                                    "allow_private": True}})
        assert made.status_code == 201, made.text
        path = f"organizations/tracker/channels/{made.json()['id']}/"
        shown = tracker.api("GET", path).json()["config"]  # the token masked, as everyone sees it
        moved = tracker.api("PUT", path, changer, json={"config": {"url": attacker.url}})
        assert moved.status_code == 400 and moved.json()["detail"] == "a jira channel needs token", moved.text
        renamed = tracker.api("PUT", path, changer, json={"name": "jira-kept", "config": shown})  # same place: kept
        assert renamed.status_code == 200, renamed.text
        queued = tracker.api("POST", f"{path}test/", changer)
        assert queued.status_code == 202, queued.text
        wait_for(lambda: victim.issues)  # the stored token still opens the real Jira
        assert not attacker.received
        again = tracker.api("PUT", path, changer, json={"config": {**shown, "url": attacker.url, "token": "their own"}})
        assert again.status_code == 200 and again.json()["config"]["url"] == attacker.url, again.text


@pytest.fixture(scope="module")
def own(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TrackerServer]:
    """A server of its own: the fuzzed channels must not receive the other tests' alerts."""
    server = start_server(tmp_path_factory.mktemp("attack") / "tracker.db")
    try:
        yield server
    finally:
        stop_server(server)


@pytest.fixture(scope="module")
def own_project(own: TrackerServer) -> Project:
    return own.create_project()


@pytest.mark.parametrize(("method", "path", "body"), [
    ("POST", "api-tokens/", {"name": "x\ud800", "scopes": ["read"]}),
    ("POST", "organizations/tracker/channels/", {"name": "x\udfff", "kind": "slack",
                                                 "config": {"url": "https://hooks.slack.com/services/x"}}),
    ("POST", "organizations/tracker/channels/", {"name": "surrogate", "kind": "webhook",
                                                 "config": {"url": "https://example.com/", "note": "\udc80"}}),
    ("POST", "projects/tracker/{project}/keys/", {"name": "\ud800"}),
    ("POST", "organizations/tracker/releases/", {"version": "1.0\ud800", "projects": ["{project}"]}),
])
def test_a_lone_surrogate_in_a_json_body_is_a_400(own: TrackerServer, own_project: Project, method: str, path: str,
                                                   body: dict[str, Any]) -> None:
    """JSON may spell "\\ud800"; Python parses it into a str SQLite cannot encode, and the writer's
    UnicodeEncodeError was a plain-text 500 on every route that stores a string."""
    slug = own_project.slug
    raw = json.dumps(body).replace("{project}", slug).encode()  # ensure_ascii: "\ud800" as sent
    r = httpx.request(method, f"{own.url}/api/0/{path.replace('{project}', slug)}", content=raw, timeout=10,
                      headers={"Authorization": f"Bearer {own.token}", "Content-Type": "application/json"})
    assert r.status_code == 400 and "lone surrogate" in r.json()["detail"], r.text


ANY_TEXT = st.text(max_size=40) | st.sampled_from(["\ud800", "a\udfffb"])  # lone surrogates: JSON can say "\ud800"
JSON_VALUES = st.recursive(st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | ANY_TEXT,
                           lambda inner: st.lists(inner, max_size=4) | st.dictionaries(ANY_TEXT, inner, max_size=4),
                           max_leaves=8)
CHANNEL_KEYS = st.sampled_from(["url", "host", "port", "to", "from", "security", "username", "password", "routing_key",
                                "project", "token", "email", "flavor", "issue_type", "secret", "allow_private"])


@settings(max_examples=40, deadline=None, suppress_health_check=list(HealthCheck), database=None)
@given(kind=st.sampled_from([*t.CHANNEL_KINDS, "nope"]) | JSON_VALUES, name=ANY_TEXT | JSON_VALUES,
       config=st.dictionaries(CHANNEL_KEYS | ANY_TEXT, JSON_VALUES, max_size=8) | JSON_VALUES,
       scopes=st.lists(st.sampled_from(t.SENTRY_SCOPES) | JSON_VALUES, max_size=70))
def test_fuzz_channel_configs_and_token_scopes_never_500(own: TrackerServer, kind: Any, name: Any, config: Any,
                                                         scopes: list[Any]) -> None:
    """Hostile channel configs (any JSON, lone surrogates, wrong types) and token scope lists are a
    201 or a 400 with a JSON detail, never a 500; a channel made is then updated with the same."""
    def send(method: str, path: str, body: Any) -> httpx.Response:
        r = httpx.request(method, f"{own.url}/api/0/{path}", content=json.dumps(body).encode(), timeout=10,
                          headers={"Authorization": f"Bearer {own.token}", "Content-Type": "application/json"})
        assert r.status_code in (200, 201, 400) and r.json(), (r.status_code, r.text[:300], body)
        return r
    made = send("POST", "organizations/tracker/channels/", {"name": name, "kind": kind, "config": config})
    if made.status_code == 201:
        path = f"organizations/tracker/channels/{made.json()['id']}/"
        send("PUT", path, {"name": name, "config": config})
        assert httpx.delete(f"{own.url}/api/0/{path}", headers={"Authorization": f"Bearer {own.token}"},
                            timeout=10).status_code == 204
    send("POST", "api-tokens/", {"name": name, "scopes": scopes})


@pytest.mark.parametrize("answer", ["<html>Sign in to continue</html>", "[]"], ids=["html", "json-list"])
def test_a_jira_answer_without_an_issue_key_is_retried_not_a_wedge(tracker: TrackerServer, answer: str) -> None:
    """A 2xx that is no JSON object (an SSO proxy's sign-in page in front of Jira) raised in
    jira_create's json.loads, in the dispatcher: the row stayed in_flight for good. Now it is
    retried, and the retry first searches Jira for the issue the last try may have made."""
    with JiraReceiver() as jira:
        jira.script(200, answer, times=100)
        r = tracker.api("POST", "organizations/tracker/channels/",
                json={"name": f"jira-{answer[:6]}", "kind": "jira", "config": {
                    "url": jira.url, "project": "OPS", "email": jira.email, "token": jira.token, "allow_private": True}})
        assert r.status_code == 201, r.text
        channel = r.json()
        assert tracker.api("POST", f"organizations/tracker/channels/{channel['id']}/test/").status_code == 202

        def attempted() -> dict[str, Any] | None:
            rows = tracker.api("GET", "organizations/tracker/deliveries/", params={"channel": channel["id"]}).json()
            return rows[0] if rows and rows[0]["status"] != "in_flight" and rows[0]["attempts"] else None
        delivery = wait_for(attempted)
        assert delivery["status"] == "pending" and delivery["lastError"].startswith("Jira answered 200"), delivery
