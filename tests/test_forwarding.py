"""Forwarding to an upstream (issue 20): a second real tracker process, with its own database, is the
upstream; the real sentry-sdk sends; servers are killed with SIGKILL where the issue says kill -9."""
from __future__ import annotations

import gzip
import http.server
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path
from typing import Any, Iterator

import httpx
import pytest
import sentry_sdk
from sentry_sdk.envelope import Envelope

from conftest import (ROOT, Configure, TrackerServer, envelope, free_port, start_server, stop_server,
                      wait_for)
from tracker import FORWARD_CONNECTIONS

UP_MIRROR, UP_RELAY, UP_LIMITED = "a1" * 16, "a2" * 16, "a3" * 16  # the upstream's DSN keys
MIRROR, RELAY, LIMITED = "b1" * 16, "b2" * 16, "b3" * 16  # the forwarding tracker's

FAST = """
[forward]
retry_delays = [0.2, 0.4, 0.8]
poll = 0.2
timeout = 5
"""


def upstream_config(window: int = 60) -> str:
    return f"""
[limits]
window = {window}

[[projects]]
slug = "up-mirror"
dsn_key = "{UP_MIRROR}"

[[projects]]
slug = "up-relay"
dsn_key = "{UP_RELAY}"

[[projects]]
slug = "up-limited"
dsn_key = "{UP_LIMITED}"
rate_limit = 3
"""


def forwarding_config(up_port: int, extra: str = "") -> str:
    def forward(key: str, project_id: int, mode: str) -> str:
        return (f'forward = {{ dsn = "http://{key}@127.0.0.1:{up_port}/{project_id}", mode = "{mode}", '
                f'allow_private = true }}')
    return f"""{FAST}{extra}
[[projects]]
slug = "mirror"
dsn_key = "{MIRROR}"
{forward(UP_MIRROR, 1, "mirror")}

[[projects]]
slug = "relay"
dsn_key = "{RELAY}"
{forward(UP_RELAY, 2, "relay")}

[[projects]]
slug = "limited"
dsn_key = "{LIMITED}"
{forward(UP_LIMITED, 3, "mirror")}
"""


def issue_total(server: TrackerServer, slug: str) -> int:
    r = server.api("GET", f"projects/tracker/{slug}/issues/", params={"query": ""})
    assert r.status_code == 200, r.text
    return sum(int(i["count"]) for i in r.json())


def wait_total(server: TrackerServer, slug: str, count: int, timeout: float = 30) -> None:
    wait_for(lambda: issue_total(server, slug) >= count, timeout)
    assert issue_total(server, slug) == count  # never more: no event stored twice


def event(message: str, **extra: Any) -> dict[str, Any]:
    """One event in the issue `fingerprint` names, so counts add up in a single issue."""
    return {"event_id": uuid.uuid4().hex, "message": message, "level": "error", "platform": "python",
            "fingerprint": ["forwarding-test"], **extra}


def status(server: TrackerServer, slug: str) -> dict[str, Any]:
    r = server.api("GET", f"projects/tracker/{slug}/forwarding/")
    assert r.status_code == 200, r.text
    return r.json()


@pytest.fixture(scope="module")
def pair(configured: Configure) -> tuple[TrackerServer, TrackerServer]:
    """(upstream, forwarding tracker), both running for the module."""
    upstream = configured("upstream", upstream_config(window=4))
    return upstream, configured("forwarding", forwarding_config(upstream.port))


def test_mirror_sdk_events_reach_both_and_secrets_stay_here(pair: tuple[TrackerServer, TrackerServer],
                                                            sdk: Any) -> None:
    upstream, here = pair
    project = here.config_project("mirror", MIRROR)
    sdk(project.dsn, release="app@1.0")
    for n in range(5):
        try:
            raise ValueError(f"mirrored {n}")
        except ValueError:
            with sentry_sdk.new_scope() as scope:
                scope.set_extra("password", "hunter2" + "-secret")  # not in the source lines the event carries
                sentry_sdk.capture_exception()
    sentry_sdk.flush()
    wait_for(lambda: issue_total(here, "mirror") >= 5, 30)
    wait_for(lambda: issue_total(upstream, "up-mirror") >= 5, 30)
    issue = upstream.api("GET", "projects/tracker/up-mirror/issues/").json()[0]
    latest = upstream.latest_event(issue["id"])
    assert "hunter2-secret" not in json.dumps(latest)  # scrubbed here before it left
    assert {"key": "release", "value": "app@1.0"} in latest["tags"]
    assert {i["title"].split(":")[0] for i in upstream.issues(upstream.config_project("up-mirror", UP_MIRROR))} == \
        {"ValueError"}
    assert status(here, "mirror")["sentLastHour"] >= 5


def test_relay_keeps_nothing_here_and_upstream_gets_every_event(pair: tuple[TrackerServer, TrackerServer],
                                                               sdk: Any) -> None:
    upstream, here = pair
    project = here.config_project("relay", RELAY)
    sdk(project.dsn, release="app@1.0")
    ids = []
    for n in range(4):
        try:
            raise KeyError(f"relayed {n}")
        except KeyError:
            ids.append(sentry_sdk.capture_exception())
    sentry_sdk.flush()
    wait_for(lambda: issue_total(upstream, "up-relay") >= 4, 30)
    assert issue_total(here, "relay") == 0
    assert here.web.get("/projects/relay/envelopes/").text.count("/projects/relay/envelopes/") == 0
    stored = {e["eventID"] for issue in upstream.api("GET", "projects/tracker/up-relay/issues/").json()
              for e in upstream.api("GET", f"issues/{issue['id']}/events/").json()}
    assert set(ids) <= stored  # the ids the SDK chose are the upstream's ids
    wait_for(lambda: status(here, "relay")["queued"] == 0)


def test_upstream_rate_limits_are_obeyed(pair: tuple[TrackerServer, TrackerServer]) -> None:
    """up-limited takes 3 errors per 4-second window, then answers 429 with X-Sentry-Rate-Limits
    for the rest of it: every event arrives, and once the forwarder has met the limit each window sees
    at most one refused request (it then sends one at a time); before, the FORWARD_CONNECTIONS in
    flight may all be refused. 15 events, so that a forwarder ignoring the limits is far past the
    bound (30 refusals against 9, measured; 4 when obeyed)."""
    upstream, here = pair
    project = here.config_project("limited", LIMITED)
    started = time.monotonic()
    for n in range(15):
        here.send_event(project, event(f"limited {n}"))
    wait_total(upstream, "up-limited", 15, timeout=40)

    def refused() -> int:  # the upstream's count of requests it answered 429 (written every 5 s)
        r = upstream.api("GET", "organizations/tracker/stats_v2/", params={
            "field": "sum(quantity)", "groupBy": "outcome", "outcome": "rate_limited", "statsPeriod": "1h",
            "interval": "1h"})
        assert r.status_code == 200, r.text
        return sum(g["totals"]["sum(quantity)"] for g in r.json()["groups"])
    wait_for(refused, 15)
    windows = (time.monotonic() - started) / 4 + 2  # started, or partly elapsed, since the first event
    assert refused() <= FORWARD_CONNECTIONS + windows - 1, refused()  # a request sent inside a limited
    # window would be refused, and counted


@pytest.fixture
def servers(tmp_path: Path) -> Iterator[dict[str, Any]]:
    """An upstream and a forwarding tracker of the test's own, to kill and restart on the same ports."""
    up_port, here_port = free_port(), free_port()
    (tmp_path / "up.toml").write_text(upstream_config())
    (tmp_path / "here.toml").write_text(forwarding_config(up_port))
    state: dict[str, Any] = {"tmp": tmp_path, "up_port": up_port, "here_port": here_port}
    state["up"] = start_server(tmp_path / "up.db", "--config", str(tmp_path / "up.toml"), port=up_port)
    state["here"] = start_server(tmp_path / "here.db", "--config", str(tmp_path / "here.toml"), port=here_port)
    try:
        yield state
    finally:
        for name in ("up", "here"):
            if state.get(name) and state[name].process.poll() is None:
                stop_server(state[name])


def restart(state: dict[str, Any], name: str) -> TrackerServer:
    tmp = state["tmp"]
    state[name] = start_server(tmp / f"{name}.db", "--config", str(tmp / f"{name}.toml"),
                               port=state[f"{name}_port"])
    return state[name]


def test_upstream_killed_mid_stream_every_acknowledged_event_arrives_once(servers: dict[str, Any]) -> None:
    here, up = servers["here"], servers["up"]
    project = here.config_project("mirror", MIRROR)
    acknowledged = set()
    for n in range(120):
        if n == 40:
            up.process.send_signal(signal.SIGKILL)
            up.process.wait()
        if n == 90:
            up = restart(servers, "up")
        acknowledged.add(here.send_event(project, event(f"stream {n}")))
    assert len(acknowledged) == 120
    wait_total(up, "up-mirror", 120, timeout=60)
    assert status(here, "mirror")["queued"] == 0


def test_kill_9_of_the_forwarding_tracker_loses_nothing(servers: dict[str, Any]) -> None:
    here, up = servers["here"], servers["up"]
    project = here.config_project("mirror", MIRROR)
    stop_server(up)  # nothing can leave: every acknowledged envelope waits in the outbox
    for n in range(50):
        here.send_event(project, event(f"durable {n}"))
    assert status(here, "mirror")["queued"] == 50
    here.process.send_signal(signal.SIGKILL)
    here.process.wait()
    up = restart(servers, "up")
    here = restart(servers, "here")
    wait_total(up, "up-mirror", 50, timeout=60)
    assert issue_total(here, "mirror") == 50


def test_a_full_outbox_drops_its_oldest_and_says_so(tmp_path: Path) -> None:
    config = forwarding_config(free_port(), "max_outbox = 5\n")  # an upstream that is not there
    (tmp_path / "here.toml").write_text(config)
    here = start_server(tmp_path / "here.db", "--config", str(tmp_path / "here.toml"))
    try:
        project = here.config_project("mirror", MIRROR)
        for n in range(8):
            here.send_event(project, event(f"overflow {n}"))
        shown = wait_for(lambda: (s := status(here, "mirror"))["lastError"] and s)
        assert shown["queued"] == 5 and shown["dropped"] == 3, shown
        assert issue_total(here, "mirror") == 8  # stored here all the same
        page = here.web.get("/projects/mirror/forwarding/").text
        assert "3 dropped" in page and "full" in page
        assert "5 queued" in here.web.get("/projects/").text
        metrics = here.web.get("/metrics").text
        assert 'tracker_forward_queued{project="mirror"} 5' in metrics
        assert 'tracker_forward_dropped_total{project="mirror"} 3' in metrics
        assert re.search(r'tracker_forward_outbox_age_seconds\{project="mirror"\} [0-9.]+', metrics)
    finally:
        stop_server(here)


class Capture(http.server.BaseHTTPRequestHandler):
    """Records what a forwarder posts, as Relay would receive it (the bytes, the headers)."""

    received: list[tuple[str, dict[str, str], bytes]] = []

    def do_POST(self) -> None:  # noqa: N802 (http.server's name)
        body = self.rfile.read(int(self.headers["Content-Length"]))
        Capture.received.append((self.path, {k.lower(): v for k, v in self.headers.items()}, body))
        answer = b'{"id":"x"}'
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(answer)))
        self.end_headers()
        self.wfile.write(answer)

    def log_message(self, *args: Any) -> None:
        pass


def test_forwarded_envelopes_are_sdk_envelopes(tmp_path: Path) -> None:
    """Relay's framing, auth header and item types (sentry-protocol.md §1–2), read back with the real
    SDK's envelope parser; the event is Sentry's event schema, not the tracker's stored shape."""
    capture = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Capture)
    threading.Thread(target=capture.serve_forever, daemon=True).start()
    (tmp_path / "here.toml").write_text(forwarding_config(capture.server_address[1]))
    here = start_server(tmp_path / "here.db", "--config", str(tmp_path / "here.toml"))
    try:
        project = here.config_project("mirror", MIRROR)
        event_id, big = uuid.uuid4().hex, os.urandom(300 * 1024)  # compressed in a thread, read on its own
        body = envelope({"event_id": event_id, "sent_at": "2020-01-01T00:00:00Z", "sdk": {"name": "t", "version": "1"}},
                        ({"type": "event"}, event("with extras", event_id=event_id,
                                                  extra={"api_key": "sk_live_0123456789"})),
                        ({"type": "attachment", "filename": "a.txt", "content_type": "text/plain"}, b"line1\nline2"),
                        ({"type": "attachment", "filename": "dump.bin"}, big),
                        ({"type": "profile"}, {"dropped": True}),
                        ({"type": "transaction"}, {"type": "transaction", "transaction": "/pay", "timestamp": time.time(),
                                                   "start_timestamp": time.time() - 1, "request": {
                                                       "headers": {"Authorization": "Bearer sk_live_abcdef123456"}}}),
                        ({"type": "client_report"}, {"timestamp": time.time(), "discarded_events": []}))
        assert httpx.post(f"{here.url}/api/{project.id}/envelope/", content=body,
                          headers={"X-Sentry-Auth": f"Sentry sentry_key={MIRROR}, sentry_version=7"}).status_code == 200
        wait_for(lambda: Capture.received, 15)
        path, headers, raw = Capture.received[-1]
        assert path == "/api/1/envelope/"
        assert re.fullmatch(rf"Sentry sentry_key={UP_MIRROR}, sentry_version=7, sentry_client=tracker/\S+",
                            headers["x-sentry-auth"])
        assert headers["content-encoding"] == "gzip" and headers["content-type"] == "application/x-sentry-envelope"
        data = gzip.decompress(raw)
        parsed = Envelope.deserialize(data)
        assert parsed.headers["event_id"] == event_id
        assert parsed.headers["dsn"] == f"http://{UP_MIRROR}@127.0.0.1:{capture.server_address[1]}/1"
        assert parsed.headers["sent_at"] > "2026" and parsed.headers["sdk"] == {"name": "t", "version": "1"}
        assert [i.headers["type"] for i in parsed.items] == ["event", "attachment", "attachment", "transaction",
                                                             "client_report"]
        transaction = json.loads(parsed.items[3].payload.get_bytes())  # kept here only as counts, scrubbed all the same
        assert transaction["request"]["headers"]["Authorization"] == "[Filtered]" and "_meta" not in transaction
        assert parsed.items[2].payload.get_bytes() == big
        for item in parsed.items:  # every item says its length, as the Python SDK writes
            assert item.headers["length"] == len(item.payload.get_bytes())
        assert parsed.items[1].payload.get_bytes() == b"line1\nline2"
        assert parsed.items[1].headers["filename"] == "a.txt"
        sent = json.loads(parsed.items[0].payload.get_bytes())
        assert sent["event_id"] == event_id and sent["logentry"]["formatted"] == "with extras"
        assert not {"received", "title", "culprit", "metadata", "grouping", "hashes", "_meta"} & set(sent)
        assert sent["extra"]["api_key"] == "[Filtered]"
        newlines = 1 + sum(2 + i.payload.get_bytes().count(b"\n") for i in parsed.items)  # the payloads' own too
        assert data.endswith(b"\n") and data.count(b"\n") == newlines
    finally:
        stop_server(here)
        capture.shutdown()


def test_admins_set_forwarding_through_the_api(pair: tuple[TrackerServer, TrackerServer]) -> None:
    upstream, here = pair
    project = here.create_project()
    dsn = f"http://{UP_MIRROR}@127.0.0.1:{upstream.port}/1"
    for bad in ({"dsn": "ftp://x@y/1"}, {"dsn": f"http://short@127.0.0.1/{1}"}, {"dsn": dsn, "mode": "tee"},
                {"dsn": f"http://{UP_MIRROR}@127.0.0.1/x"}, {"dsn": 5}, ["x"],
                {"dsn": f"http://{UP_MIRROR}@{'a' * 3000}.example/1"}, {"dsn": dsn, "allowPrivate": "yes"},
                {"dsn": project.dsn, "allowPrivate": True}):  # itself: a loop
        r = here.api("PUT", f"projects/tracker/{project.slug}/forwarding/", json=bad)
        assert r.status_code == 400 and r.json()["detail"], (bad, r.text)
    reader = here.cli("token", "create", "--scopes", "read").strip().splitlines()[-1]
    r = here.api("PUT", f"projects/tracker/{project.slug}/forwarding/", token=reader, json={"dsn": dsn})
    assert r.status_code == 403
    r = here.api("PUT", f"projects/tracker/{project.slug}/forwarding/",
                 json={"dsn": dsn, "mode": "mirror", "allowPrivate": True})
    assert r.status_code == 200, r.text
    assert r.json()["dsn"] == dsn and r.json()["mode"] == "mirror"
    here.send_event(project, event("set by the API"))
    wait_for(lambda: status(here, project.slug)["sentLastHour"] == 1, 15)
    r = here.api("PUT", f"projects/tracker/{project.slug}/forwarding/", json={"dsn": None})
    assert r.status_code == 200 and r.json()["dsn"] is None


def test_replay_of_10000_events_completes_and_resumes(pair: tuple[TrackerServer, TrackerServer],
                                                     tmp_path: Path) -> None:
    upstream, here = pair
    project = here.create_project()
    lines = [b"{}"]
    for n in range(10_000):
        payload = json.dumps(event(f"history {n}", timestamp=time.time() - 3600)).encode()
        lines += [json.dumps({"type": "event", "length": len(payload)}).encode(), payload]
    (tmp_path / "history.envelope").write_bytes(b"\n".join(lines) + b"\n")
    here.cli("send", str(tmp_path / "history.envelope"), "--project", project.slug)
    assert issue_total(here, project.slug) == 10_000
    target = upstream.create_project()
    command = [sys.executable, str(ROOT / "tracker.py"), "--db", str(here.db), "forward", "--project", project.slug,
               "--to", target.dsn, "--since", "7d", "--rate", "0"]
    dry = subprocess.run([*command, "--dry-run"], capture_output=True, text=True, timeout=60, cwd=ROOT)
    assert dry.returncode == 0 and "Would send 10000 events" in dry.stdout, dry.stderr
    first = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=ROOT)
    wait_for(lambda: issue_total(upstream, target.slug) >= 2000, 120, 0.5)
    first.send_signal(signal.SIGKILL)  # interrupted the hard way: only the checkpoint says where it was
    first.wait()
    second = subprocess.run(command, capture_output=True, text=True, timeout=600, cwd=ROOT)
    assert second.returncode == 0, second.stderr
    resumed = re.search(r"Resuming: (\d+) events sent before, (\d+) to go", second.stdout)
    assert resumed and int(resumed[1]) >= 1000 and int(resumed[1]) + int(resumed[2]) <= 10_000 + 100, second.stdout
    assert f"{int(resumed[2]):,}/{int(resumed[2]):,} events" in second.stderr  # the progress bar's end
    wait_total(upstream, target.slug, 10_000, timeout=60)
    again = subprocess.run(command, capture_output=True, text=True, timeout=60, cwd=ROOT)
    assert "complete" in again.stdout



def test_replay_carries_attachments_and_user_feedback(pair: tuple[TrackerServer, TrackerServer]) -> None:
    upstream, here = pair
    project, target = here.create_project(), upstream.create_project()
    event_id = uuid.uuid4().hex
    r = here.send_envelope(project, body=envelope(
        {"event_id": event_id}, ({"type": "event"}, event("with a file", event_id=event_id)),
        ({"type": "attachment", "filename": "crash.log", "content_type": "text/plain"}, b"boom\nat line 3"),
        ({"type": "user_report"}, {"event_id": event_id, "name": "Ada", "email": "ada@example.com",
                                   "comments": "it broke when I paid"})))
    assert r.status_code == 200, r.text
    out = subprocess.run([sys.executable, str(ROOT / "tracker.py"), "--db", str(here.db), "forward", "--project",
                          project.slug, "--to", target.dsn], capture_output=True, text=True, timeout=60, cwd=ROOT)
    assert out.returncode == 0 and "Sent 1 events" in out.stdout, out.stderr
    wait_total(upstream, target.slug, 1)
    files = upstream.api("GET", f"projects/tracker/{target.slug}/events/{event_id}/attachments/").json()
    assert [(f["name"], f["size"]) for f in files] == [("crash.log", 14)]
    reports = wait_for(lambda: upstream.api("GET", f"projects/tracker/{target.slug}/user-feedback/").json())
    assert [(f["eventID"], f["name"], f["comments"]) for f in reports] == [(event_id, "Ada", "it broke when I paid")]


def test_a_bad_forward_table_stops_the_start_with_its_reason(tmp_path: Path) -> None:
    (tmp_path / "bad.toml").write_text(f'[[projects]]\nslug = "p"\nforward = {{ dsn = "http://{UP_MIRROR}@h/1", '
                                       'mode = "tee" }\n')
    out = subprocess.run([sys.executable, str(ROOT / "tracker.py"), "--db", str(tmp_path / "t.db"), "--config",
                          str(tmp_path / "bad.toml"), "serve", "--port", str(free_port())],
                         capture_output=True, text=True, timeout=60, cwd=ROOT)
    assert out.returncode != 0 and "project p: forward.mode must be mirror or relay, not 'tee'" in out.stderr


def test_replay_refuses_what_it_cannot_use(pair: tuple[TrackerServer, TrackerServer]) -> None:
    upstream, here = pair
    base = [sys.executable, str(ROOT / "tracker.py"), "--db", str(here.db), "forward"]
    target = f"http://{UP_MIRROR}@127.0.0.1:{upstream.port}/1"
    for args, said in ((["--project", "mirror", "--to", "ftp://x@y/1"], "http or https"),
                       (["--project", "mirror", "--to", target, "--since", "7 days"], "--since must be"),
                       (["--project", "nope", "--to", target], "no project 'nope'"),
                       (["--project", "mirror", "--to", "http://169.254.169.254/1"], "32-hex public key")):
        out = subprocess.run(base + args, capture_output=True, text=True, timeout=60, cwd=ROOT)
        assert out.returncode != 0 and said in out.stderr and "Traceback" not in out.stderr, (args, out.stderr)
