"""Ingest over real HTTP: routes, CORS, auth, body encodings, limits, envelope framing,
event ids and normalisation, as shared/docs/sentry-protocol.md (§1–§5, must-haves) requires."""
from __future__ import annotations

import datetime as dt
import gzip
import json
import os
import re
import signal
import sqlite3
import threading
import time
import uuid
import zlib
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Iterator

import brotli
import httpx
import pytest
import zstandard
from conftest import Project, TrackerServer, auth, envelope, start_server, stop_server, wait_for
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

MIB = 1024 * 1024
HEX32 = re.compile(r"[0-9a-f]{32}")
CORS_ALLOWED_HEADERS = ("x-sentry-auth", "x-requested-with", "x-forwarded-for", "origin", "referer", "accept",
                        "content-type", "authentication", "authorization", "content-encoding", "transfer-encoding")


# -- helpers ------------------------------------------------------------------------------

def event_envelope(event: dict[str, Any], event_id: str | None = None) -> bytes:
    header = {"event_id": event_id} if event_id else {}
    return envelope(header, ({"type": "event", "content_type": "application/json"}, event))


def post(tracker: TrackerServer, project_id: int | str, body: Any, headers: dict[str, str] | None = None,
         kind: str = "envelope", **kwargs: Any) -> httpx.Response:
    return httpx.post(f"{tracker.url}/api/{project_id}/{kind}/", content=body, headers=headers or {},
                      timeout=30, **kwargs)


def only_issue(tracker: TrackerServer, project: Project) -> dict[str, Any]:
    issues = tracker.issues(project)
    assert len(issues) == 1, [i["title"] for i in issues]
    return issues[0]


def ingest_one(tracker: TrackerServer, project: Project, event: dict[str, Any],
               **headers: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """Send one event to a fresh project; return (its issue, the stored event) from the JSON API."""
    event_id = tracker.send_event(project, event, **headers)
    issue = only_issue(tracker, project)
    r = tracker.api("GET", f"issues/{issue['id']}/events/{event_id}/")
    assert r.status_code == 200, r.text
    return issue, r.json()


def assert_cors(r: httpx.Response) -> None:
    assert r.headers["access-control-allow-origin"] == "*"
    exposed = {h.strip().lower() for h in r.headers["access-control-expose-headers"].split(",")}
    assert {"x-sentry-error", "x-sentry-rate-limits", "retry-after"} <= exposed
    assert "retry-after" not in r.headers or r.status_code == 429  # must-have 12: JS backs off on it


def assert_error(r: httpx.Response, status: int, detail: str = "") -> None:
    """Relay's error shape: the status, JSON {"detail": …}, CORS headers."""
    assert r.status_code == status, (r.status_code, r.text)
    assert r.headers["content-type"].split(";")[0] == "application/json"
    body = r.json()
    assert isinstance(body["detail"], str) and detail in body["detail"], body
    assert_cors(r)


def assert_ok(r: httpx.Response, event_id: str | None = None) -> None:
    assert r.status_code == 200, r.text
    assert r.headers["content-type"].split(";")[0] == "application/json"
    assert_cors(r)
    if event_id is None:
        assert r.json() == {}
    else:
        assert r.json() == {"id": event_id}


def date_created(event: dict[str, Any]) -> float:
    return dt.datetime.fromisoformat(event["dateCreated"].replace("Z", "+00:00")).timestamp()


@pytest.fixture(scope="module")
def shared(tracker: TrackerServer) -> Project:
    """A project for tests that only look at responses (project creation costs a CLI run)."""
    return tracker.create_project()


@pytest.fixture(scope="module")
def other(tracker: TrackerServer) -> Project:
    return tracker.create_project()


# -- routes, success body, CORS -----------------------------------------------------------

@pytest.mark.parametrize("kind", ["envelope", "store"])
@pytest.mark.parametrize("slash", ["/", ""])
def test_routes_with_and_without_slash(tracker: TrackerServer, shared: Project, kind: str, slash: str) -> None:
    event_id = uuid.uuid4().hex
    body = (event_envelope({"message": "route"}, event_id) if kind == "envelope"
            else json.dumps({"event_id": event_id, "message": "route"}).encode())
    r = httpx.post(f"{tracker.url}/api/{shared.id}/{kind}{slash}", content=body, headers=auth(shared))
    assert_ok(r, event_id)


@pytest.mark.parametrize("kind", ["envelope", "store"])
def test_options_preflight(tracker: TrackerServer, kind: str) -> None:
    r = httpx.options(f"{tracker.url}/api/1/{kind}/", headers={
        "Origin": "https://app.example.com", "Access-Control-Request-Method": "POST",
        "Access-Control-Request-Headers": "x-sentry-auth, content-type, content-encoding"})
    assert r.status_code in (200, 204)
    assert_cors(r)
    assert "POST" in r.headers["access-control-allow-methods"]
    allowed = {h.strip().lower() for h in r.headers["access-control-allow-headers"].split(",")}
    assert set(CORS_ALLOWED_HEADERS) <= allowed
    assert r.headers["access-control-max-age"] == "3600"
    assert "access-control-allow-credentials" not in r.headers


@pytest.mark.parametrize("content_type", [None, "application/x-sentry-envelope", "text/plain;charset=UTF-8",
                                          "multipart/form-data", "application/x-www-form-urlencoded"])
def test_content_type_is_ignored(tracker: TrackerServer, shared: Project, content_type: str | None) -> None:
    event_id = uuid.uuid4().hex
    headers = {**auth(shared), **({"Content-Type": content_type} if content_type else {})}
    assert_ok(post(tracker, shared.id, event_envelope({"message": "ct"}, event_id), headers), event_id)


def test_envelope_without_event_answers_empty_object(tracker: TrackerServer, project: Project) -> None:
    body = envelope({}, ({"type": "session"}, {"sid": uuid.uuid4().hex, "init": True, "attrs": {"release": "a@1"}}))
    assert_ok(post(tracker, project.id, body, auth(project)))
    assert_ok(post(tracker, project.id, b"{}\n", auth(project)))  # no items at all
    assert tracker.issues(project) == []


# -- authentication -----------------------------------------------------------------------

def test_auth_from_x_sentry_auth(tracker: TrackerServer, shared: Project) -> None:
    event_id = uuid.uuid4().hex
    spaced = {"X-Sentry-Auth": f"sentry  sentry_key = {shared.key} ,sentry_version=7"}  # whitespace-tolerant
    assert_ok(post(tracker, shared.id, event_envelope({"message": "a"}, event_id), spaced), event_id)


def test_auth_from_authorization_header(tracker: TrackerServer, shared: Project) -> None:
    event_id = uuid.uuid4().hex
    headers = {"Authorization": f"Sentry sentry_key={shared.key}, sentry_version=7"}
    assert_ok(post(tracker, shared.id, event_envelope({"message": "a"}, event_id), headers), event_id)


def test_auth_from_query_string(tracker: TrackerServer, shared: Project) -> None:
    """Node and browsers: query auth only, no Content-Type."""
    event_id = uuid.uuid4().hex
    params = {"sentry_key": shared.key, "sentry_version": "7", "sentry_client": "sentry.javascript.node/11.12.0"}
    assert_ok(post(tracker, shared.id, event_envelope({"message": "a"}, event_id), params=params), event_id)


def test_auth_from_envelope_dsn(tracker: TrackerServer, shared: Project) -> None:
    """The JS `tunnel` option: the envelope header's `dsn` is the only credential."""
    event_id = uuid.uuid4().hex
    body = envelope({"event_id": event_id, "dsn": shared.dsn}, ({"type": "event"}, {"message": "tunnel"}))
    assert_ok(post(tracker, shared.id, body), event_id)


@pytest.mark.parametrize("headers", [
    {},
    {"X-Sentry-Auth": "Bearer abc"},
    {"X-Sentry-Auth": "Sentry nonsense"},
    {"X-Sentry-Auth": "Sentry sentry_version=7"},
    {"X-Sentry-Auth": "Sentry sentry_key=not-a-key, sentry_version=7"},
    {"Authorization": "Sentry sentry_key="},
], ids=["missing", "wrong-scheme", "no-pairs", "no-key", "malformed-key", "empty-key"])
def test_missing_or_garbled_auth_is_401(tracker: TrackerServer, shared: Project, headers: dict[str, str]) -> None:
    assert_error(post(tracker, shared.id, event_envelope({"message": "x"}), headers), 401)


def test_conflicting_auth_sources_are_401(tracker: TrackerServer, shared: Project, other: Project) -> None:
    body = event_envelope({"message": "x"})
    assert_error(post(tracker, shared.id, body, auth(shared), params={"sentry_key": other.key}), 401, "multiple")
    assert_error(post(tracker, shared.id, body, {**auth(shared), "Authorization": f"Sentry sentry_key={other.key}"}),
                 401, "multiple")
    foreign_dsn = shared.dsn.replace(shared.key, other.key)
    with_dsn = envelope({"dsn": foreign_dsn}, ({"type": "event"}, {"message": "x"}))
    assert_error(post(tracker, shared.id, with_dsn, auth(shared)), 401, "multiple")
    # the same key twice is not a conflict
    assert post(tracker, shared.id, body, auth(shared), params={"sentry_key": shared.key}).status_code == 200


@pytest.mark.parametrize("dsn", ["not a url", "http://[broken@host/1", "http://@host/1"])
def test_garbled_envelope_dsn_is_401(tracker: TrackerServer, shared: Project, dsn: str) -> None:
    body = envelope({"dsn": dsn}, ({"type": "event"}, {"message": "x"}))
    assert_error(post(tracker, shared.id, body), 401)


def test_unknown_key_is_403(tracker: TrackerServer, shared: Project) -> None:
    headers = {"X-Sentry-Auth": f"Sentry sentry_key={uuid.uuid4().hex}, sentry_version=7"}
    assert_error(post(tracker, shared.id, event_envelope({"message": "x"}), headers), 403)


def test_key_of_another_project_is_403(tracker: TrackerServer, shared: Project, other: Project) -> None:
    assert_error(post(tracker, shared.id, event_envelope({"message": "x"}), auth(other)), 403)
    body = envelope({"dsn": other.dsn}, ({"type": "event"}, {"message": "x"}))  # DSN names the other project
    assert_error(post(tracker, shared.id, body), 403)


@pytest.mark.parametrize("project_id", ["abc", "1x", "-1", "%C2%B2", "%D9%A1", "99999999999999999999"],
                         ids=["letters", "suffix", "negative", "superscript-two", "arabic-one", "huge"])
def test_bad_project_id_is_400(tracker: TrackerServer, shared: Project, project_id: str) -> None:
    assert_error(post(tracker, project_id, event_envelope({"message": "x"}), auth(shared)), 400, "project")


@pytest.mark.parametrize("version", ["8", "99", "x", "%C2%B2"])
def test_unsupported_protocol_version_is_400(tracker: TrackerServer, shared: Project, version: str) -> None:
    url = f"{tracker.url}/api/{shared.id}/envelope/?sentry_key={shared.key}&sentry_version={version}"
    assert_error(httpx.post(url, content=event_envelope({"message": "x"})), 400, "version")
    headers = {"X-Sentry-Auth": f"Sentry sentry_key={shared.key}, sentry_version={version}"}
    assert_error(post(tracker, shared.id, event_envelope({"message": "x"}), headers), 400, "version")


# -- body encodings and limits ------------------------------------------------------------

def raw_deflate(data: bytes) -> bytes:
    c = zlib.compressobj(6, zlib.DEFLATED, -zlib.MAX_WBITS)
    return c.compress(data) + c.flush()


ENCODERS = {
    "gzip": ("gzip", gzip.compress), "deflate-zlib": ("deflate", zlib.compress),
    "deflate-raw": ("deflate", raw_deflate), "br": ("br", brotli.compress),
    "zstd": ("zstd", zstandard.ZstdCompressor().compress), "identity": ("identity", lambda b: b),
    "none": ("", lambda b: b), "upper-case": ("GZIP", gzip.compress),
}


@pytest.mark.parametrize("name", list(ENCODERS))
def test_content_encodings(tracker: TrackerServer, shared: Project, name: str) -> None:
    encoding, encode = ENCODERS[name]
    event_id = uuid.uuid4().hex
    body = encode(event_envelope({"message": f"encoded {name}", "extra": {"pad": "x" * 5000}}, event_id))
    headers = {**auth(shared), **({"Content-Encoding": encoding} if encoding else {})}
    assert_ok(post(tracker, shared.id, body, headers), event_id)


@pytest.mark.parametrize("encoding", ["compress", "gzip, br", "lz4", "snappy"])
def test_unknown_encoding_is_415(tracker: TrackerServer, shared: Project, encoding: str) -> None:
    r = post(tracker, shared.id, gzip.compress(event_envelope({})), {**auth(shared), "Content-Encoding": encoding})
    assert_error(r, 415)


@pytest.mark.parametrize("encoding, body", [
    ("gzip", b"\x1f\x8b\x08\x00garbage-garbage"),
    ("gzip", gzip.compress(b'{}\n{"type":"event"}\n{"message":"cut"}' * 50)[:-30]),  # truncated
    ("deflate", b"not deflate at all \xff\xfe"),
    ("br", b"\xff\xff\xff\xff definitely not brotli"),
    ("br", brotli.compress(b'{}\n' + b'{"type":"client_report"}\n{}\n' * 200)[:-8]),  # truncated
    ("zstd", b"\x28\xb5\x2f\xfd garbage"),
    ("zstd", b"plain text"),
], ids=["gzip-garbage", "gzip-truncated", "deflate-garbage", "br-garbage", "br-truncated", "zstd-garbage",
        "zstd-plain"])
def test_corrupt_compressed_body_is_400(tracker: TrackerServer, shared: Project, encoding: str, body: bytes) -> None:
    assert_error(post(tracker, shared.id, body, {**auth(shared), "Content-Encoding": encoding}), 400)


def zeros_bomb(encoding: str, size: int = 200 * MIB) -> bytes:
    """`size` zero bytes compressed, streamed so the test never holds them in memory."""
    chunk, count = bytes(MIB), size // MIB
    if encoding == "gzip":
        c = zlib.compressobj(1, zlib.DEFLATED, 16 + zlib.MAX_WBITS)
        return b"".join(c.compress(chunk) for _ in range(count)) + c.flush()
    if encoding == "br":
        b = brotli.Compressor(quality=1)
        return b"".join(b.process(chunk) for _ in range(count)) + b.finish()
    z = zstandard.ZstdCompressor(level=1).compressobj()
    return b"".join(z.compress(chunk) for _ in range(count)) + z.flush()


@pytest.mark.parametrize("encoding", ["gzip", "br", "zstd"])
def test_decompression_bomb_is_413_fast(tracker: TrackerServer, shared: Project, encoding: str) -> None:
    bomb = zeros_bomb(encoding)
    assert len(bomb) < 1 * MIB  # it is a bomb: tiny on the wire, 200 MiB inflated
    started = time.monotonic()
    r = post(tracker, shared.id, bomb, {**auth(shared), "Content-Encoding": encoding})
    assert_error(r, 413)
    assert time.monotonic() - started < 5
    event_id = uuid.uuid4().hex  # the server survived and still serves
    assert_ok(post(tracker, shared.id, event_envelope({"message": "after bomb"}, event_id), auth(shared)), event_id)


def test_raw_body_over_limit_is_413(tracker: TrackerServer, shared: Project) -> None:
    """Default max_body is 20 MiB; 21 MiB must be refused quickly, with or without Content-Length."""
    big = b"{}\n" + b"x" * (21 * MIB)
    started = time.monotonic()
    assert_error(post(tracker, shared.id, big, auth(shared)), 413)

    def chunks() -> Iterator[bytes]:
        yield b"{}\n"
        for _ in range(21):
            yield b"x" * MIB

    assert_error(post(tracker, shared.id, chunks(), auth(shared)), 413)
    assert time.monotonic() - started < 10
    event_id = uuid.uuid4().hex
    assert_ok(post(tracker, shared.id, event_envelope({"message": "after big"}, event_id), auth(shared)), event_id)


def test_event_item_over_1_mib_is_413(tracker: TrackerServer, project: Project) -> None:
    huge = event_envelope({"message": "huge", "extra": {"blob": "x" * (MIB + 10)}})
    assert_error(post(tracker, project.id, huge, auth(project)), 413, "event")
    assert tracker.issues(project) == []
    # the 1 MiB limit is for event items: a 2 MiB attachment beside a small event is fine
    event_id = uuid.uuid4().hex
    body = envelope({"event_id": event_id}, ({"type": "event"}, {"message": "with attachment"}),
                    ({"type": "attachment", "filename": "dump.bin"}, b"\n" * (2 * MIB)))
    assert_ok(post(tracker, project.id, body, auth(project)), event_id)


def test_chunked_body(tracker: TrackerServer, project: Project) -> None:
    """Node sends Transfer-Encoding: chunked with no Content-Length; split inside JSON tokens."""
    event_id = uuid.uuid4().hex
    body = event_envelope({"message": "chunked delivery", "extra": {"pad": "y" * 20000}}, event_id)

    def chunks() -> Iterator[bytes]:
        for start in range(0, len(body), 777):
            yield body[start:start + 777]

    request = httpx.Request("POST", f"{tracker.url}/api/{project.id}/envelope/", content=chunks(),
                            headers=auth(project))
    assert request.headers.get("transfer-encoding") == "chunked" and "content-length" not in request.headers
    with httpx.Client() as client:
        assert_ok(client.send(request), event_id)
    assert only_issue(tracker, project)["title"] == "chunked delivery"


# -- envelope framing ---------------------------------------------------------------------

def test_length_framed_payload_may_contain_newlines(tracker: TrackerServer, project: Project) -> None:
    event_id = uuid.uuid4().hex
    pretty = json.dumps({"message": "pretty printed", "level": "warning"}, indent=2).encode()
    assert b"\n" in pretty
    body = envelope({"event_id": event_id}, ({"type": "event"}, pretty),
                    ({"type": "attachment", "filename": "a.txt", "content_type": "text/plain"}, b"line1\nline2"))
    assert_ok(post(tracker, project.id, body, auth(project)), event_id)
    issue = only_issue(tracker, project)
    assert issue["title"] == "pretty printed" and issue["level"] == "warning"


def test_js_style_envelope_without_length_or_final_newline(tracker: TrackerServer, project: Project) -> None:
    event_id = uuid.uuid4().hex
    body = envelope({"event_id": event_id, "sent_at": "2026-01-01T00:00:00Z", "sdk": {"name": "sentry.javascript"}},
                    ({"type": "event"}, {"message": "from node"}),
                    ({"type": "client_report"}, {"discarded_events": []}),
                    with_length=False, final_newline=False)
    assert not body.endswith(b"\n")
    assert_ok(post(tracker, project.id, body, params={"sentry_key": project.key, "sentry_version": "7"}), event_id)
    assert only_issue(tracker, project)["title"] == "from node"


def test_blank_lines_between_items_are_skipped(tracker: TrackerServer, project: Project) -> None:
    event_id = uuid.uuid4().hex
    body = (f'{{"event_id":"{event_id}"}}\n\n'
            '{"type":"client_report"}\n{"discarded_events":[]}\n\n\n'
            '{"type":"event"}\n{"message":"after blanks"}\n\n').encode()
    assert_ok(post(tracker, project.id, body, auth(project)), event_id)
    assert only_issue(tracker, project)["title"] == "after blanks"


def test_truncated_envelope_is_400(tracker: TrackerServer, shared: Project) -> None:
    body = b'{}\n{"type":"event","length":500}\n{"message":"short"}\n'
    assert_error(post(tracker, shared.id, body, auth(shared)), 400, "invalid event envelope")


def test_payload_longer_than_its_length_is_400(tracker: TrackerServer, shared: Project) -> None:
    body = b'{}\n{"type":"event","length":5}\n{"message":"longer"}\n'
    assert_error(post(tracker, shared.id, body, auth(shared)), 400, "invalid event envelope")


@pytest.mark.parametrize("body", [b"not json\n", b"[1,2]\n", b'{"event_id": \n', b"", b"\n\n"],
                         ids=["text", "array", "cut", "empty", "blank"])
def test_bad_envelope_header_is_400(tracker: TrackerServer, shared: Project, body: bytes) -> None:
    assert_error(post(tracker, shared.id, body, auth(shared)), 400)


def test_bad_item_header_is_400(tracker: TrackerServer, shared: Project) -> None:
    assert_error(post(tracker, shared.id, b'{}\n{type: event}\n{}\n', auth(shared)), 400)


def test_unknown_item_types_are_accepted_and_dropped(tracker: TrackerServer, project: Project) -> None:
    dropped = [({"type": "client_report"}, {"timestamp": 1.0, "discarded_events": []}),
               ({"type": "log", "item_count": 1, "content_type": "application/vnd.sentry.items.log+json"},
                {"version": 2, "items": [{"body": "hi", "level": "info"}]}),
               ({"type": "span"}, {"version": 2, "items": []}),
               ({"type": "profile"}, {"frames": []}),
               ({"type": "replay_recording"}, b"\x00\x01binary\n\xff"),
               ({"type": "made_up_type_42"}, b"whatever")]
    assert_ok(post(tracker, project.id, envelope({}, *dropped), auth(project)))
    assert tracker.issues(project) == []
    event_id = uuid.uuid4().hex  # the same items beside an event: only the event is stored
    body = envelope({"event_id": event_id}, *dropped, ({"type": "event"}, {"message": "kept"}))
    assert_ok(post(tracker, project.id, body, auth(project)), event_id)
    issue = only_issue(tracker, project)
    assert issue["title"] == "kept" and issue["count"] == "1"


# -- event ids ----------------------------------------------------------------------------

def test_envelope_header_event_id_wins(tracker: TrackerServer, project: Project) -> None:
    header_id, payload_id = uuid.uuid4(), uuid.uuid4().hex
    r = post(tracker, project.id, event_envelope({"event_id": payload_id, "message": "ids"}, str(header_id).upper()),
             auth(project))
    assert_ok(r, header_id.hex)  # dashed upper-case header (sentry-cli) → 32 lowercase hex
    issue = only_issue(tracker, project)
    assert tracker.api("GET", f"issues/{issue['id']}/events/{header_id.hex}/").status_code == 200
    assert tracker.api("GET", f"issues/{issue['id']}/events/{payload_id}/").status_code == 404


def test_payload_event_id_is_normalised(tracker: TrackerServer, project: Project) -> None:
    dashed = str(uuid.uuid4()).upper()
    assert_ok(post(tracker, project.id, event_envelope({"event_id": dashed, "message": "p"}), auth(project)),
              dashed.replace("-", "").lower())
    r = post(tracker, project.id, event_envelope({"event_id": "not-an-id", "message": "p"}), auth(project))
    assert r.status_code == 200 and HEX32.fullmatch(r.json()["id"])  # garbage → a generated id


def test_same_event_id_twice_stores_one_event(tracker: TrackerServer, project: Project) -> None:
    event_id = uuid.uuid4().hex
    for form in (event_id, str(uuid.UUID(event_id)), event_id.upper()):
        assert_ok(post(tracker, project.id, event_envelope({"message": "resent"}, form), auth(project)), event_id)
    issue = only_issue(tracker, project)
    assert issue["count"] == "1"
    r = tracker.api("GET", f"issues/{issue['id']}/events/")
    assert [e["eventID"] for e in r.json()] == [event_id]


# -- normalisation, checked through the JSON API ------------------------------------------

def rfc3339(ts: float, digits: int = 6, offset_hours: int = 0) -> str:
    tz = dt.timezone(dt.timedelta(hours=offset_hours))
    base = dt.datetime.fromtimestamp(int(ts), tz).strftime("%Y-%m-%dT%H:%M:%S")
    fraction = f"{ts - int(ts):.9f}"[2:2 + digits]
    suffix = "Z" if offset_hours == 0 else f"{offset_hours:+03d}:00"
    return f"{base}.{fraction}{suffix}"


@pytest.mark.parametrize("form", ["float", "int", "rfc3339-z", "rfc3339-9-digits", "rfc3339-offset", "no-tz"])
def test_timestamps(tracker: TrackerServer, project: Project, form: str) -> None:
    ts = round(time.time() - 3 * 3600, 3) + 0.25
    value: Any = {"float": ts, "int": int(ts), "rfc3339-z": rfc3339(ts), "rfc3339-9-digits": rfc3339(ts, 9),
                  "rfc3339-offset": rfc3339(ts, 6, offset_hours=2), "no-tz": rfc3339(ts)[:-1]}[form]
    _, event = ingest_one(tracker, project, {"message": "ts", "timestamp": value})
    expected = int(ts) if form == "int" else ts
    assert abs(date_created(event) - expected) < 1e-3, (value, event["dateCreated"])


def test_absurd_timestamp_becomes_receive_time(tracker: TrackerServer, project: Project) -> None:
    before = time.time()
    _, event = ingest_one(tracker, project, {"message": "old", "timestamp": "nan"})
    assert before - 5 < date_created(event) < time.time() + 5


EXCEPTION = {"type": "ValueError", "value": "bad input", "mechanism": {"type": "generic", "handled": True},
             "stacktrace": {"frames": [
                 {"module": "app.views", "function": "handler", "filename": "app/views.py", "in_app": True},
                 {"module": "lib.util", "function": "deep", "filename": "lib/util.py", "in_app": False}]}}


@pytest.mark.parametrize("shape", ["values", "bare-list", "single-object"])
def test_exception_shapes(tracker: TrackerServer, project: Project, shape: str) -> None:
    exception = {"values": {"values": [EXCEPTION]}, "bare-list": [EXCEPTION], "single-object": EXCEPTION}[shape]
    issue, event = ingest_one(tracker, project, {"platform": "python", "exception": exception})
    assert issue["title"] == "ValueError: bad input"
    assert issue["culprit"] == "app.views in handler"  # newest in-app frame, not the newest frame
    assert issue["metadata"]["type"] == "ValueError" and issue["type"] == "error"
    values = next(e for e in event["entries"] if e["type"] == "exception")["data"]["values"]
    assert [f["function"] for f in values[-1]["stacktrace"]["frames"]] == ["handler", "deep"]


def test_transaction_is_the_culprit(tracker: TrackerServer, project: Project) -> None:
    issue, _ = ingest_one(tracker, project, {"exception": [EXCEPTION], "transaction": "/checkout"})
    assert issue["culprit"] == "/checkout"


@pytest.mark.parametrize("tags", [{"service": "api", "attempt": 5},
                                  [["service", "api"], ["attempt", 5]]], ids=["dict", "pairs"])
def test_tags_dict_and_pairs(tracker: TrackerServer, project: Project, tags: Any) -> None:
    _, event = ingest_one(tracker, project, {"message": "tagged", "tags": tags, "environment": "prod"})
    got = {t["key"]: t["value"] for t in event["tags"]}
    assert got["service"] == "api" and got["attempt"] == "5"
    assert got["environment"] == "prod"


def test_message_string(tracker: TrackerServer, project: Project) -> None:
    issue, event = ingest_one(tracker, project, {"message": "hello %s", "level": "info"})
    assert issue["title"] == "hello %s" and issue["level"] == "info" and issue["type"] == "default"
    assert event["message"] == "hello %s"


def test_logentry_with_params(tracker: TrackerServer, project: Project) -> None:
    issue, event = ingest_one(tracker, project, {"logger": "payments", "logentry": {
        "message": "log error %s for %d", "params": ["arg", 7]}})
    assert issue["title"] == "log error arg for 7" and issue["logger"] == "payments"
    data = next(e for e in event["entries"] if e["type"] == "message")["data"]
    assert data["message"] == "log error %s for %d" and data["params"] == ["arg", 7]


def test_logentry_without_formatted_sentry_cli(tracker: TrackerServer, project: Project) -> None:
    issue, _ = ingest_one(tracker, project, {"platform": "native", "timestamp": time.time(),
                                              "logentry": {"message": "deploy finished"}})
    assert issue["title"] == "deploy finished"


def test_hostile_format_template_is_left_alone(tracker: TrackerServer, project: Project) -> None:
    """A gigabyte-wide field or an out-of-range %c must not be formatted (nor take the server down)."""
    started = time.monotonic()
    issue, _ = ingest_one(tracker, project, {"logentry": {"message": "%999999999s %c", "params": ["x", 10**10]}})
    assert issue["title"] == "%999999999s %c"
    assert time.monotonic() - started < 5


def test_js_synthetic_exception_without_type(tracker: TrackerServer, project: Project) -> None:
    """Node captureMessage: a synthetic exception with only a value; the title is that value."""
    event = {"platform": "node", "level": "warning", "message": "Something odd happened",
             "exception": {"values": [{"value": "Something odd happened",
                                       "mechanism": {"type": "generic", "handled": True, "synthetic": True},
                                       "stacktrace": {"frames": [{"filename": "/app/index.js", "function": "main",
                                                                  "in_app": True, "lineno": 3}]}}]}}
    issue, _ = ingest_one(tracker, project, event)
    assert issue["title"] == "Something odd happened"
    assert issue["level"] == "warning"


def test_auto_ip_address_is_the_client_address(tracker: TrackerServer, project: Project) -> None:
    # X-Forwarded-For comes from an untrusted client here, so it must not be believed
    _, event = ingest_one(tracker, project, {"message": "ip", "user": {"id": "u1", "ip_address": "{{auto}}"}},
                          **{"X-Forwarded-For": "203.0.113.9"})
    assert event["user"]["ip_address"] == "127.0.0.1"
    assert event["user"]["id"] == "u1"


def test_odd_but_valid_values_never_fail(tracker: TrackerServer, project: Project) -> None:
    """Shapes that once gave 500s: non-list request headers, NaN strings, lone surrogates."""
    body = (b'{}\n{"type":"event"}\n{"message":"odd \\ud800 value","timestamp":"nan",'
            b'"request":{"headers":5,"query_string":true,"url":"http://x/?a=1"},"tags":{"k\\udc00":"v"}}\n')
    assert post(tracker, project.id, body, auth(project)).status_code == 200
    assert only_issue(tracker, project)["title"] == "odd ? value"


@pytest.mark.parametrize("depth", [200, 990, 5000])
def test_deeply_nested_json_is_400(tracker: TrackerServer, shared: Project, depth: int) -> None:
    body = b'{}\n{"type":"event"}\n{"extra":' + b"[" * depth + b"]" * depth + b"}\n"
    assert_error(post(tracker, shared.id, body, auth(shared)), 400, "invalid JSON")


# -- robustness ---------------------------------------------------------------------------

EVENT_KEYS = ["event_id", "timestamp", "level", "platform", "message", "logentry", "exception", "threads",
              "stacktrace", "breadcrumbs", "tags", "user", "request", "contexts", "extra", "fingerprint",
              "release", "environment", "transaction", "checksum", "sdk", "errors", "values", "type", "value",
              "frames", "mechanism", "in_app", "module", "function", "params", "formatted", "headers",
              "query_string", "url", "ip_address", "synthetic", "handled", "crashed", "context_line", "culprit"]
strings = st.text(max_size=12) | st.text(st.characters(categories=["Cs"]), max_size=2) | st.sampled_from(
    ["{{auto}}", "{{ default }}", "%s", "%(x)s", "%c", "nan", "2026-01-01T00:00:00Z", "1e999", "%*d"])
scalars = st.none() | st.booleans() | st.integers() | st.floats() | strings
json_values = st.recursive(
    scalars, lambda inner: st.lists(inner, max_size=4)
    | st.dictionaries(st.sampled_from(EVENT_KEYS) | st.text(max_size=6), inner, max_size=5), max_leaves=25)
event_like = st.dictionaries(st.sampled_from(EVENT_KEYS), json_values, max_size=8)

FUZZ = settings(max_examples=150, deadline=None, suppress_health_check=list(HealthCheck), database=None)
ALLOWED = {200, 400, 413, 415}


@pytest.fixture(scope="module")
def client() -> Iterator[httpx.Client]:
    with httpx.Client(timeout=30) as c:
        yield c


@FUZZ
@given(payload=event_like | json_values, header_id=st.none() | st.text(max_size=40) | st.just(uuid.uuid4().hex))
def test_fuzz_event_payloads_never_5xx(tracker: TrackerServer, shared: Project, client: httpx.Client,
                                       payload: Any, header_id: str | None) -> None:
    body = envelope({"event_id": header_id} if header_id is not None else {}, ({"type": "event"},
                    json.dumps(payload).encode()))
    r = client.post(f"{tracker.url}/api/{shared.id}/envelope/", content=body, headers=auth(shared))
    assert r.status_code in ALLOWED, (r.status_code, r.text, payload)
    if r.status_code != 200:
        assert "detail" in r.json()


@FUZZ
@given(body=st.binary(max_size=400) | st.builds(lambda b: b"{}\n" + b, st.binary(max_size=200)),
       encoding=st.sampled_from(["", "gzip", "deflate", "br", "zstd", "identity"]))
def test_fuzz_random_bodies_never_5xx(tracker: TrackerServer, shared: Project, client: httpx.Client,
                                      body: bytes, encoding: str) -> None:
    headers = {**auth(shared), **({"Content-Encoding": encoding} if encoding else {})}
    r = client.post(f"{tracker.url}/api/{shared.id}/envelope/", content=body, headers=headers)
    assert r.status_code in ALLOWED, (r.status_code, r.text, body)


def test_server_still_answers_after_fuzzing(tracker: TrackerServer, shared: Project) -> None:
    event_id = uuid.uuid4().hex
    assert_ok(post(tracker, shared.id, event_envelope({"message": "still alive"}, event_id), auth(shared)), event_id)


# -- durability ---------------------------------------------------------------------------

def test_acknowledged_events_survive_kill_9(tmp_path: Path) -> None:
    """A 200 means committed: kill -9 the server mid-stream, every acknowledged event is on disk."""
    db = tmp_path / "durable.db"
    server = start_server(db)
    acked: list[str] = []
    lock = threading.Lock()
    http = httpx.Client(timeout=10, limits=httpx.Limits(max_connections=24))
    try:
        project = server.create_project("durable")
        # the event workers it starts by default (one per core; none on one core) must end with it
        workers = wait_for(lambda: worker_pids(server)) if (os.cpu_count() or 1) > 1 else []

        def send(n: int) -> None:
            event_id = uuid.uuid4().hex
            body = event_envelope({"message": f"durable {n}", "extra": {"n": n}}, event_id)
            try:
                r = http.post(f"{server.url}/api/{project.id}/envelope/", content=body, headers=auth(project))
            except httpx.HTTPError:
                return  # the server was killed under this request: not acknowledged
            if r.status_code == 200:
                assert r.json() == {"id": event_id}
                with lock:
                    acked.append(event_id)

        with ThreadPoolExecutor(24) as pool:
            futures = [pool.submit(send, n) for n in range(200)]
            wait_for(lambda: len(acked) >= 80, timeout=30, interval=0.005)
            server.process.kill()
            server.process.wait(10)
            for future in futures:
                future.result()
    finally:
        http.close()
        if server.process.poll() is None:
            server.process.kill()
    with lock:
        acknowledged = set(acked)
    assert len(acknowledged) >= 80
    wait_for(lambda: not [pid for pid in workers if is_worker(pid)])  # its workers end with it (their stdin closes)

    restarted = start_server(db)
    try:
        with sqlite3.connect(db) as conn:
            stored = {row[0] for row in conn.execute("SELECT event_id FROM events")}
        assert acknowledged <= stored, f"{len(acknowledged - stored)} acknowledged events lost"
        after = uuid.uuid4().hex  # the recovered database takes new events
        r = httpx.post(f"{restarted.url}/api/{project.id}/envelope/", content=event_envelope({"message": "x"}, after),
                       headers=auth(project), timeout=10)
        assert_ok(r, after)
    finally:
        stop_server(restarted)


# -- worker processes that prepare events --------------------------------------------------------

def worker_pids(server: TrackerServer) -> list[int]:
    """The server's `prepare-worker` children, read from /proc."""
    pids = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
            cmdline = (stat.parent / "cmdline").read_bytes()
        except OSError:
            continue
        if int(fields[1]) == server.process.pid and b"prepare-worker" in cmdline:
            pids.append(int(stat.parent.name))
    return pids


def is_worker(pid: int) -> bool:
    try:
        return b"prepare-worker" in Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False


def bytes_read(pid: int) -> int:
    return int(re.search(r"rchar: (\d+)", Path(f"/proc/{pid}/io").read_text())[1])  # type: ignore[index]


def send_concurrently(server: TrackerServer, project: Project, events: list[tuple[str, dict[str, Any]]],
                      during: Any = None) -> list[int]:
    """POST each (event id, event) from 16 threads; `during()` runs once a third are answered."""
    answered: list[int] = []
    with httpx.Client(timeout=30, limits=httpx.Limits(max_connections=16)) as http, ThreadPoolExecutor(16) as pool:
        def send(event_id: str, event: dict[str, Any]) -> None:
            r = http.post(f"{server.url}/api/{project.id}/envelope/", content=event_envelope(event, event_id),
                          headers=auth(project))
            answered.append(r.status_code)
        futures = [pool.submit(send, event_id, event) for event_id, event in events]
        if during:
            wait_for(lambda: len(answered) >= len(events) // 3, timeout=30, interval=0.002)
            during()
        for future in futures:
            future.result()
    return answered


def test_worker_processes_prepare_events_and_losing_one_loses_nothing(tmp_path: Path) -> None:
    """With `ingest_workers = 2` the server starts two `prepare-worker` processes and events go
    through them (they read the payloads). kill -9 one mid-stream: every request is still answered
    200 and every event is stored, grouped as ever (the dead worker's batches are prepared in the
    server, the other worker takes the rest), and a new worker takes the dead one's place."""
    (tmp_path / "t.toml").write_text("[server]\ningest_workers = 2\n")
    server = start_server(tmp_path / "w.db", "--config", str(tmp_path / "t.toml"))
    try:
        project = server.create_project("workers")
        pids = wait_for(lambda: len(worker_pids(server)) == 2 and worker_pids(server))
        before = {pid: bytes_read(pid) for pid in pids}
        events = [(uuid.uuid4().hex, {"message": f"worker {n}", "exception": {"values": [
            {"type": "KeyError" if n % 2 else "ValueError", "value": f"v{n}",
             "stacktrace": {"frames": [{"function": "charge", "module": "shop.pay", "lineno": 3 + n % 2}]}}]}})
                  for n in range(300)]
        warm = send_concurrently(server, project, events[:60])
        assert sum(bytes_read(pid) - before[pid] for pid in pids) > 60 * 200, "the workers read no events"
        answers = send_concurrently(server, project, events[60:], during=lambda: os.kill(pids[0], signal.SIGKILL))
        assert warm + answers == [200] * 300
        replaced = wait_for(lambda: len(worker_pids(server)) == 2 and worker_pids(server))  # a new one replaces it
        assert pids[1] in replaced and pids[0] not in replaced
        with sqlite3.connect(server.db) as conn:
            stored = {row[0] for row in conn.execute("SELECT event_id FROM events")}
            groups = conn.execute("SELECT count(*) FROM issues WHERE project_id = ?", (project.id,)).fetchone()[0]
        assert stored == {event_id for event_id, _ in events}
        assert groups == 2  # KeyError and ValueError, whichever process prepared them
    finally:
        stop_server(server)
    assert not [pid for pid in replaced if is_worker(pid)], "a worker outlived its server"


def test_no_worker_processes_when_set_to_zero(tmp_path: Path) -> None:
    (tmp_path / "t.toml").write_text("[server]\ningest_workers = 0\n")
    server = start_server(tmp_path / "z.db", "--config", str(tmp_path / "t.toml"))
    try:
        project = server.create_project("inline")
        event_id = uuid.uuid4().hex
        assert_ok(post(server, project.id, event_envelope({"message": "inline"}, event_id), auth(project)), event_id)
        assert worker_pids(server) == []
    finally:
        stop_server(server)


# -- payload storage: zstd, and a dictionary trained on the database's own events -------------

def test_payload_dictionary_is_trained_once_and_shrinks_events(tmp_path: Path) -> None:
    """After TRAIN_AFTER events a dictionary is trained from them; later events are stored as
    frames naming it, far smaller, and read back whole; a zlib payload from before still reads."""
    import tracker as t

    server = start_server(tmp_path / "t.db")
    try:
        server.token = server.cli("token", "create").strip().splitlines()[-1]
        project = server.create_project("dict")
        auth = {"X-Sentry-Auth": f"Sentry sentry_version=7, sentry_key={project.key}"}

        def send(count: int, start: int) -> None:
            with httpx.Client(timeout=10) as client:
                for n in range(start, start + count):
                    event = {"message": f"order {n} failed", "level": "error", "tags": {"service": "billing"},
                             "exception": {"values": [{"type": "PaymentDeclined", "value": f"order {n}", "stacktrace": {
                                 "frames": [{"filename": f"app/{m}.py", "function": f"step_{m}", "lineno": m,
                                             "in_app": True} for m in range(12)]}}]}}
                    assert client.post(f"{server.url}/api/{project.id}/store/", json=event, headers=auth).status_code == 200
        send(t.PayloadCodec.TRAIN_AFTER + 10, 0)

        def dicts() -> list[tuple[int, int]]:
            with sqlite3.connect(server.db) as conn:
                return conn.execute("SELECT dict_id, length(data) FROM payload_dicts").fetchall()
        [(dict_id, size)] = wait_for(dicts, timeout=30)
        send(50, 10_000)
        with sqlite3.connect(server.db) as conn:
            rows = conn.execute("SELECT payload FROM events ORDER BY id").fetchall()
        first, last = [len(r[0]) for r in rows[:50]], [len(r[0]) for r in rows[-50:]]
        assert sum(last) * 4 < sum(first), (sum(first), sum(last))
        assert zstandard.get_frame_parameters(rows[-1][0]).dict_id == dict_id and 0 < size <= 32768
        [issue] = server.issues(project)
        latest = server.latest_event(issue["id"])
        assert "order 10049 failed" in json.dumps(latest) and len(json.dumps(latest)) > 1000  # read back whole
    finally:
        stop_server(server)
    codec = t.PayloadCodec()
    legacy = zlib.compress(json.dumps({"message": "from before"}).encode())
    assert codec.decompress(legacy) == {"message": "from before"}
    assert codec.decompress(codec.compress({"a": [1, "é"]})) == {"a": [1, "é"]}


def test_an_event_with_thousands_of_tags_is_stored(tracker: TrackerServer, project: Project) -> None:
    """Tags are written a thousand per statement: more than SQLite's variable limit allows at once."""
    r = httpx.post(f"{tracker.url}/api/{project.id}/store/", timeout=30,
                   json={"message": "many tags", "tags": {f"k{i}": str(i) for i in range(7000)}},
                   headers={"X-Sentry-Auth": f"Sentry sentry_version=7, sentry_key={project.key}"})
    assert r.status_code == 200, r.text
    [issue] = tracker.wait_issues(project, 1)
    assert {"key": "k6999", "value": "6999"} in tracker.latest_event(issue["id"])["tags"]
