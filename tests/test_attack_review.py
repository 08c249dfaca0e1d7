"""Issue 15 items 3, 5 and 9 tried again as an attacker would, after they were merged: the holes
found are pinned here. A token an admin made through the API went on working after that admin was
disabled; a channel allowed into the private network reached the metadata service through the
IPv4-mapped IPv6 spelling of its address; a channel field of the wrong JSON type wedged its delivery; a channel moved to another URL took
its stored credentials there."""
from __future__ import annotations

import re
from typing import Any

import httpx
import pytest
from conftest import TrackerServer, free_port, wait_for
from receivers import JiraReceiver
from test_auth import api, person, signed_in


def test_a_token_made_through_the_api_goes_with_the_person(tracker: TrackerServer) -> None:
    """An admin's dashboard token makes a second one through POST /api/0/api-tokens/; disabling
    the admin revoked the first only, and the second (no owner recorded) kept admin reach."""
    name, password = person(tracker, "admin")
    browser, csrf = signed_in(tracker, name, password)
    page = browser.post("/settings/", data={"csrf": csrf, "token": "made on the page", "scope": "admin"})
    first = re.search(r'<pre class="mono">([0-9a-f]{64})</pre>', page.text)[1]  # type: ignore[index]
    made = api(tracker, "POST", "api-tokens/", first, json={"name": "made by a token", "scopes": ["admin"]})
    assert made.status_code == 201, made.text
    second = made.json()["token"]
    assert api(tracker, "GET", "api-tokens/", second).status_code == 200
    tracker.cli("user", "disable", name)
    assert [api(tracker, "GET", "api-tokens/", token).status_code for token in (first, second)] == [401, 401]


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
    r = api(tracker, "POST", "organizations/tracker/channels/",
            json={"name": f"typed-{host!r}", "kind": "email",
                  "config": {"host": host, "port": free_port(), "from": "tracker@example.org",
                             "to": "ops@example.org", "security": "none", "allow_private": True}})
    assert r.status_code == 201, r.text
    channel = r.json()
    assert isinstance(channel["config"]["host"], str)
    assert api(tracker, "POST", f"organizations/tracker/channels/{channel['id']}/test/").status_code == 202

    def attempted() -> dict[str, Any] | None:
        rows = api(tracker, "GET", "organizations/tracker/deliveries/", params={"channel": channel["id"]}).json()
        return rows[0] if rows and rows[0]["status"] != "in_flight" and rows[0]["attempts"] else None
    delivery = wait_for(attempted)
    assert delivery["status"] in ("pending", "dead") and delivery["lastError"], delivery


def test_a_channel_moved_elsewhere_does_not_take_its_credentials(tracker: TrackerServer) -> None:
    """Secrets are never shown back, admins included; but a PUT that changed only the URL kept the
    stored Jira token, so whoever may change channels (an org:integrations token) pointed it at
    their own host, pressed "send test" and read the token from the Authorization header."""
    changer = tracker.cli("token", "create", "--scopes", "org:integrations").strip().splitlines()[-1]
    with JiraReceiver() as victim, JiraReceiver() as attacker:
        made = api(tracker, "POST", "organizations/tracker/channels/",
                   json={"name": "jira-moved", "kind": "jira",
                         "config": {"url": victim.url, "project": "OPS", "email": victim.email, "token": victim.token,
                                    "allow_private": True}})
        assert made.status_code == 201, made.text
        path = f"organizations/tracker/channels/{made.json()['id']}/"
        shown = api(tracker, "GET", path).json()["config"]  # the token masked, as everyone sees it
        moved = api(tracker, "PUT", path, changer, json={"config": {"url": attacker.url}})
        assert moved.status_code == 400 and moved.json()["detail"] == "a jira channel needs token", moved.text
        renamed = api(tracker, "PUT", path, changer, json={"name": "jira-kept", "config": shown})  # same place: kept
        assert renamed.status_code == 200, renamed.text
        queued = api(tracker, "POST", f"{path}test/", changer)
        assert queued.status_code == 202, queued.text
        wait_for(lambda: victim.issues)  # the stored token still opens the real Jira
        assert not attacker.received
        again = api(tracker, "PUT", path, changer, json={"config": {**shown, "url": attacker.url, "token": "their own"}})
        assert again.status_code == 200 and again.json()["config"]["url"] == attacker.url, again.text
