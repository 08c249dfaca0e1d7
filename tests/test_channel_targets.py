"""Alert channels cannot reach into the tracker's own network (SSRF): a loopback, private,
link-local or metadata target is refused when the channel is made (API, dashboard form, TOML)
and again at delivery, unless the channel says allow_private; the name is resolved once and the
connection goes to the checked address. What the far end answered, and credentials written into a
channel, are not shown to read tokens; Alertmanager gets its password as HTTP Basic auth."""
from __future__ import annotations

import json
import socket
import sqlite3
import subprocess
import urllib.parse
import uuid
from pathlib import Path
from typing import Any, Iterator

import httpx
import pytest

import tracker as t
from conftest import ROOT, TRACKER, Configure, TrackerServer, run_cli, start_server, stop_server, wait_for
from receivers import Alertmanager, SlackReceiver, Smtp, WebhookReceiver, run_alertmanager

FAST = "[alerts]\nretry_delays = [0, 0.3]\npoll = 0.1\ntimeout = 1.5\nrefresh = 3600\n"
# Alertmanager's basic_auth_users take a bcrypt hash: this is "am-password-7f3c" at cost 4
AM_AUTH = ("tracker", "am-password-7f3c", "$2b$04$tracker.test.salt.abcO75GGlEKx7DDIYtB/ifLTsyZ52lfzzye")


@pytest.fixture(scope="module")
def server(configured: Configure) -> TrackerServer:
    return configured("channel-targets", FAST)


@pytest.fixture(scope="module")
def reader(server: TrackerServer) -> str:
    return server.cli("token", "create", "--scopes", "read").strip().splitlines()[-1]


def add_channel(tracker: TrackerServer, kind: str, **config: Any) -> dict[str, Any]:
    r = tracker.api("POST", "organizations/tracker/channels/",
                    json={"name": f"{kind}-{uuid.uuid4().hex[:6]}", "kind": kind, "config": config})
    assert r.status_code == 201, r.text
    return r.json()


def send_test(tracker: TrackerServer, channel: dict[str, Any], token: str = "") -> dict[str, Any]:
    """Send the channel a test notification; its delivery once finished, as `token` sees it."""
    r = tracker.api("POST", f"organizations/tracker/channels/{channel['id']}/test/")
    assert r.status_code == 202, r.text
    outbox_id = r.json()["id"]

    def finished() -> dict[str, Any] | None:
        rows = tracker.api("GET", "organizations/tracker/deliveries/", token,
                           params={"channel": channel["id"], "per_page": "100"}).json()
        return next((d for d in rows if d["id"] == outbox_id and d["status"] in ("delivered", "dead")), None)
    return wait_for(finished, timeout=15)


METADATA = "a cloud metadata service"
PRIVATE = "not a public address"


@pytest.mark.parametrize("url, message", [
    ("http://169.254.169.254/latest/meta-data/iam/security-credentials/", METADATA),
    ("http://metadata.google.internal/computeMetadata/v1/", METADATA),
    ("http://[fd00:ec2::254]/latest/meta-data/", METADATA),
    ("http://2852039166/latest/meta-data/", "is 169.254.169.254, a cloud metadata service"),  # decimal
    ("http://0251.0376.0251.0376/", "is 169.254.169.254, a cloud metadata service"),  # octal
    ("http://0xa9fea9fe/", "is 169.254.169.254, a cloud metadata service"),  # hex
    ("http://169.254.1.1/", f"{PRIVATE} (link-local)"),
    ("http://127.0.0.1:9093/", f"{PRIVATE} (loopback)"),
    ("http://127.1:22/", f"{PRIVATE} (loopback)"),
    ("http://[::1]:6379/", f"{PRIVATE} (loopback)"),
    ("http://[::ffff:127.0.0.1]/", f"{PRIVATE} (loopback)"),  # IPv4-mapped IPv6
    ("http://[64:ff9b::a00:1]/", f"{PRIVATE} (private)"),  # NAT64 of 10.0.0.1
    ("http://[fd12:3456::1]/", f"{PRIVATE} (private)"),  # unique-local
    ("http://[fe80::1]/", f"{PRIVATE} (link-local)"),
    ("http://10.0.0.1/", f"{PRIVATE} (private)"),
    ("http://192.168.1.20:9093/", f"{PRIVATE} (private)"),
    ("http://0.0.0.0:8000/", f"{PRIVATE} (unspecified)"),
    ("http://[::]/", f"{PRIVATE} (unspecified)"),
    ("http://224.0.0.1/", f"{PRIVATE} (multicast)"),
    ("http://240.0.0.1/", f"{PRIVATE} (reserved)"),
    ("http://100.64.0.1/", f"{PRIVATE} (not globally routable)"),  # carrier-grade NAT
    ("http://localhost:8000/", "a local name"),
    ("http://alertmanager:9093/", "a local name"),
    ("http://jira.corp.internal/", "a local name"),
])
def test_private_targets_are_refused_when_made(server: TrackerServer, url: str, message: str) -> None:
    for kind, config in (("webhook", {"url": url}), ("alertmanager", {"url": url}),
                         ("jira", {"url": url, "project": "OPS", "token": "t", "email": "bot@example.com"})):
        r = server.api("POST", "organizations/tracker/channels/",
                       json={"name": f"ssrf-{uuid.uuid4().hex[:6]}", "kind": kind, "config": config})
        assert r.status_code == 400 and message in r.json()["detail"], (kind, r.text)
    r = server.api("POST", "organizations/tracker/channels/", json={
        "name": "ssrf-mail", "kind": "email", "config": {"host": urllib.parse.urlsplit(url).hostname, "port": 25,
                                                         "from": "t@example.com",
                                                         "to": "a@example.com"}})
    assert r.status_code == 400 and message in r.json()["detail"] and r.json()["detail"].startswith("host: "), r.text


def test_allow_private_is_explicit_and_never_opens_metadata(server: TrackerServer, slack: SlackReceiver) -> None:
    channel = add_channel(server, "slack", url=slack.add_hook(), allow_private=True)
    assert channel["config"]["allow_private"] is True
    public = add_channel(server, "slack", url="https://hooks.example.com/services/T0/B0/x")
    assert public["config"]["allow_private"] is False
    r = server.api("POST", "organizations/tracker/channels/", json={
        "name": "md", "kind": "webhook", "config": {"url": "http://169.254.169.254/", "allow_private": True}})
    assert r.status_code == 400 and METADATA in r.json()["detail"]
    r = server.api("POST", "organizations/tracker/channels/", json={
        "name": "yes", "kind": "webhook", "config": {"url": "https://hooks.example.com/", "allow_private": "yes"}})
    assert r.status_code == 400 and "allow_private must be true or false" in r.json()["detail"]
    # turning the flag off again is checked like a new channel
    r = server.api("PUT", f"organizations/tracker/channels/{channel['id']}/", json={"config": {"allow_private": False}})
    assert r.status_code == 400 and f"{PRIVATE} (loopback)" in r.json()["detail"]
    assert send_test(server, channel)["status"] == "delivered" and len(slack.messages) == 1


def test_the_dashboard_form_refuses_and_allows(server: TrackerServer) -> None:
    name = f"form-{uuid.uuid4().hex[:6]}"
    refused = server.form("/alerts/", data={"kind": "webhook", "name": name, "url": "http://2852039166/"}, timeout=10)
    assert refused.status_code == 400 and "is 169.254.169.254, a cloud metadata service" in refused.text
    refused = server.form("/alerts/", data={"kind": "alertmanager", "name": name, "url": "http://10.1.2.3:9093"},
                          timeout=10)
    assert refused.status_code == 400 and "allow_private = true" in refused.text
    assert 'name="allow_private"' in refused.text
    made = server.form("/alerts/", data={"kind": "alertmanager", "name": name, "url": "http://10.1.2.3:9093",
                                         "allow_private": "on"}, timeout=10)
    assert made.status_code == 303, made.text
    [channel] = [c for c in server.api("GET", "organizations/tracker/channels/").json() if c["name"] == name]
    assert channel["config"]["allow_private"] is True
    server.api("DELETE", f"organizations/tracker/channels/{channel['id']}/")


def test_the_config_file_needs_allow_private(tmp_path: Path, webhook: WebhookReceiver) -> None:
    config = tmp_path / "tracker.toml"
    config.write_text(f'[[channels]]\nname = "lan"\nkind = "webhook"\nurl = "{webhook.hook_url}"\n')
    out = subprocess.run([*TRACKER, "--db", str(tmp_path / "t.db"), "token", "create",
                          "--config", str(config)], capture_output=True, text=True, timeout=60, cwd=ROOT)
    assert out.returncode != 0 and f"[[channels]] 'lan': url: 127.0.0.1 is {PRIVATE} (loopback)" in out.stderr
    config.write_text(config.read_text() + "allow_private = true\n")
    run_cli(tmp_path / "t.db", "token", "create", "--config", str(config))
    [stored] = sqlite3.connect(tmp_path / "t.db").execute("SELECT config FROM channels WHERE name = 'lan'").fetchone()
    assert json.loads(stored)["allow_private"] is True


@pytest.mark.parametrize("url", ["http://[::1/", "http://\ud800/", "http://a\x00b.example.com/", "http://a:99999/",
                                 "http://" + "a" * 64 + ".example.com/"])
def test_hostile_urls_are_400(server: TrackerServer, url: str) -> None:
    body = json.dumps({"name": "h", "kind": "slack", "config": {"url": url}})  # a lone surrogate as JSON escapes it
    r = server.api("POST", "organizations/tracker/channels/", content=body)
    assert r.status_code == 400 and r.json()["detail"].startswith(("url", "the request body holds a lone surrogate")), r.text


def test_refused_at_delivery_with_nothing_sent(server: TrackerServer, reader: str, webhook: WebhookReceiver,
                                               smtp_server: Smtp) -> None:
    """Channels that reached the database another way (an older version, a hand edit) are still
    refused when delivering: a dead letter, and not one byte reaches the receiver."""
    hook = add_channel(server, "webhook", url=webhook.hook_url, secret=webhook.secret, allow_private=True)
    mail = add_channel(server, "email", host=smtp_server.host, port=smtp_server.port, security="none",
                       username="alerts", password="secret", to="oncall@example.com", allow_private=True,
                       **{"from": "tracker@example.com"})
    with sqlite3.connect(server.db, timeout=10) as db:
        db.execute("UPDATE channels SET config = json_remove(config, '$.allow_private') WHERE id IN (?, ?)",
                   (hook["id"], mail["id"]))
    for channel, field in ((hook, "url"), (mail, "host")):
        seen = send_test(server, channel)
        assert (seen["status"], seen["attempts"], seen["lastStatus"]) == ("dead", 1, None)
        assert seen["lastError"].startswith(f"refused target: {field}: 127.0.0.1 is {PRIVATE} (loopback)")
        assert send_test(server, channel, reader)["lastError"] == "refused target"
    assert webhook.received == [] and smtp_server.messages == []


def test_read_tokens_see_the_class_of_an_error_not_the_answer(server: TrackerServer, reader: str,
                                                              webhook: WebhookReceiver, slack: SlackReceiver) -> None:
    channel = add_channel(server, "webhook", url=webhook.hook_url, secret=webhook.secret, allow_private=True)
    answer = "AccessKeyId=ASIAEXAMPLE SecretAccessKey=wJalrXUtnFEMI " + "x" * 5000
    webhook.script(400, answer)
    admin_view = send_test(server, channel)
    assert admin_view["status"] == "dead" and admin_view["lastError"].startswith("HTTP 400: AccessKeyId=ASIAEXAMPLE")
    assert len(admin_view["lastError"]) <= 300  # an excerpt, bounded
    read_view = server.api("GET", "organizations/tracker/deliveries/", reader, params={"channel": channel["id"]}).json()
    assert [d["lastError"] for d in read_view] == ["HTTP 400"]
    page = httpx.get(f"{server.url}/alerts/", headers={"Authorization": f"Bearer {reader}"}, timeout=10).text
    assert "SecretAccessKey" not in page and "HTTP 400" in page
    assert "SecretAccessKey" in server.web.get("/alerts/", timeout=10).text  # an admin's session sees it
    # a redirect is not followed: the body never goes to where the far end points
    elsewhere = slack.add_hook()
    webhook.script(302, headers={"Location": elsewhere})
    moved = send_test(server, channel, reader)
    assert (moved["status"], moved["lastError"]) == ("dead", "HTTP 302") and slack.received == []


def test_one_lookup_and_the_connection_goes_to_the_checked_address(webhook: WebhookReceiver,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    """DNS rebinding: a name that answers a checked address first and another one later must be
    connected to at the first answer; the request still names the host (Host header, TLS SNI)."""
    lookups: list[str] = []
    real = socket.getaddrinfo

    def rebinding(host: str, port: Any, *args: Any, **kwargs: Any) -> list[Any]:
        if host != "hooks.rebind.test" or kwargs.get("flags", 0) & socket.AI_NUMERICHOST:
            return real(host, port, *args, **kwargs)
        lookups.append(host)
        if len(lookups) > 1:  # a second lookup would land on the metadata service
            return real("169.254.169.254", port, *args, **kwargs)
        return real("127.0.0.1", port, *args, **kwargs)
    monkeypatch.setattr(t.socket, "getaddrinfo", rebinding)
    body = json.dumps({"action": "triggered"}).encode()
    result = t.http_call("POST", f"http://hooks.rebind.test:{webhook.port}/hook", body,
                               {"Content-Type": "application/json"}, 5, allow_private=True)
    [received] = webhook.received
    assert lookups == ["hooks.rebind.test"] and received.headers["host"] == f"hooks.rebind.test:{webhook.port}"
    assert result.status is not None  # the receiver answered (it refuses the unsigned body: that is its job)


@pytest.fixture(scope="module")
def guarded_alertmanager(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Alertmanager]:
    """The real Alertmanager, every endpoint behind HTTP Basic auth (--web.config.file)."""
    yield from run_alertmanager(tmp_path_factory.mktemp("am-auth"), AM_AUTH)


def test_alertmanager_password_is_sent_and_credentials_are_filtered(
        server: TrackerServer, reader: str, guarded_alertmanager: Alertmanager) -> None:
    am = guarded_alertmanager
    assert httpx.post(f"{am.url}/api/v2/alerts", json=[], timeout=5).status_code == 401  # really guarded
    user, password = AM_AUTH[0], AM_AUTH[1]
    fields = add_channel(server, "alertmanager", url=am.url, username=user, password=password, allow_private=True)
    in_url = add_channel(server, "alertmanager", url=am.url.replace("//", f"//{user}:{password}@"), allow_private=True)
    in_query = add_channel(server, "pagerduty", routing_key=uuid.uuid4().hex,
                           url="https://events.example.com/v2/enqueue?token=t0k3n")
    for channel in (fields, in_url):
        seen = send_test(server, channel)
        assert seen["status"] == "delivered", seen
    wait_for(lambda: am.alerts(short_id="TEST-1"))
    shown = [server.api("GET", "organizations/tracker/channels/", token).text for token in (reader, server.token)]
    shown += [httpx.get(f"{server.url}/alerts/", headers={"Authorization": f"Bearer {reader}"}, timeout=10).text,
              server.web.get("/alerts/", timeout=10).text]
    assert all(password not in text and "t0k3n" not in text for text in shown)
    def shown_url(channel: dict[str, Any]) -> str:
        return server.api("GET", f"organizations/tracker/channels/{channel['id']}/", reader).json()["config"]["url"]
    assert shown_url(in_url) == am.url.replace("//", f"//{user}:[Filtered]@")
    assert shown_url(in_query) == "https://events.example.com/v2/enqueue?token=[Filtered]"
    assert server.api("GET", f"organizations/tracker/channels/{fields['id']}/", reader).json()["config"]["password"] \
        == "…7f3c"
    for channel in (fields, in_url):  # sent back as shown, with a new name: the stored credentials stay
        shown_config = server.api("GET", f"organizations/tracker/channels/{channel['id']}/").json()["config"]
        r = server.api("PUT", f"organizations/tracker/channels/{channel['id']}/",
                       json={"name": channel["name"] + "-renamed", "config": shown_config})
        assert r.status_code == 200, r.text
        assert send_test(server, channel)["status"] == "delivered"


def certificate(directory: Path, name: str) -> tuple[Path, Path]:
    """A self-signed certificate for `name` and its key (openssl, as an operator would make one)."""
    cert, key = directory / f"{name}.pem", directory / f"{name}.key"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
                    "-keyout", str(key), "-out", str(cert), "-days", "2", "-subj", f"/CN={name}",
                    "-addext", f"subjectAltName=DNS:{name}"], check=True, capture_output=True, timeout=30)
    return cert, key


def test_https_still_checks_the_certificate_for_the_name(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The connection goes to the checked address, but TLS sends SNI for and verifies the URL's
    host name: a certificate the tracker trusts, made for another name, is refused."""
    good, wrong = certificate(tmp_path, "localhost"), certificate(tmp_path, "other.test")
    (tmp_path / "trusted.pem").write_text(good[0].read_text() + wrong[0].read_text())
    monkeypatch.setenv("SSL_CERT_FILE", str(tmp_path / "trusted.pem"))  # the tracker trusts both
    (tmp_path / "tracker.toml").write_text(FAST)
    srv = start_server(tmp_path / "tracker.db", "--config", str(tmp_path / "tracker.toml"))
    try:
        for tls, outcome in ((good, "delivered"), (wrong, "dead")):
            receiver = SlackReceiver()
            receiver.tls = tls
            with receiver:
                url = receiver.add_hook().replace("127.0.0.1", "localhost")
                seen = send_test(srv, add_channel(srv, "slack", url=url, allow_private=True))
                assert seen["status"] == outcome, seen
                if outcome == "dead":
                    assert "Hostname mismatch, certificate is not valid for 'localhost'" in seen["lastError"]
                    assert receiver.received == []
                else:
                    assert len(receiver.messages) == 1
    finally:
        stop_server(srv)
