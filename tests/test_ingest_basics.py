"""Bad input on the ingest route gets the documented status and the server keeps serving."""
from __future__ import annotations

import gzip
import json
import uuid
import zlib

import brotli
import httpx
import pytest
import zstandard
from conftest import Project, TrackerServer


def envelope(event: dict, header: dict | None = None, length: bool = True) -> bytes:
    payload = json.dumps(event).encode()
    item = {"type": "event", **({"length": len(payload)} if length else {})}
    return b"\n".join([json.dumps(header or {}).encode(), json.dumps(item).encode(), payload]) + b"\n"


def post(tracker: TrackerServer, project: Project, body: bytes, headers: dict | None = None,
         path: str = "envelope/", auth: bool = True) -> httpx.Response:
    all_headers = {"X-Sentry-Auth": f"Sentry sentry_key={project.key}, sentry_version=7"} if auth else {}
    all_headers.update(headers or {})
    return httpx.post(f"{tracker.url}/api/{project.id}/{path}", content=body, headers=all_headers, timeout=30)


def assert_serving(tracker: TrackerServer, project: Project) -> None:
    r = post(tracker, project, envelope({"message": "still alive"}))
    assert r.status_code == 200, r.text


@pytest.mark.parametrize("encoding, compress", [
    ("gzip", gzip.compress), ("deflate", zlib.compress),
    ("deflate", lambda b: zlib.compress(b)[2:-4]),  # raw deflate, as some clients send it
    ("br", brotli.compress), ("zstd", lambda b: zstandard.ZstdCompressor().compress(b)), ("", lambda b: b)])
def test_encodings(tracker: TrackerServer, project: Project, encoding: str, compress) -> None:
    event_id = uuid.uuid4().hex
    r = post(tracker, project, compress(envelope({"message": f"enc {encoding}"}, {"event_id": event_id})),
             {"Content-Encoding": encoding} if encoding else {})
    assert r.status_code == 200 and r.json() == {"id": event_id}
    assert r.headers["content-type"] == "application/json"
    assert r.headers["access-control-allow-origin"] == "*"


@pytest.mark.parametrize("auth_style", ["header", "authorization", "query", "dsn"])
def test_auth_sources(tracker: TrackerServer, project: Project, auth_style: str) -> None:
    header: dict = {}
    headers: dict = {}
    path = "envelope/"
    if auth_style == "header":
        headers["X-Sentry-Auth"] = f"Sentry sentry_key={project.key},sentry_version=7"
    elif auth_style == "authorization":
        headers["Authorization"] = f"Sentry sentry_key={project.key}, sentry_version=7"
    elif auth_style == "query":
        path = f"envelope/?sentry_key={project.key}&sentry_version=7&sentry_client=sentry.javascript.node%2F11"
    else:
        header["dsn"] = project.dsn
    r = post(tracker, project, envelope({"message": "auth"}, header, length=False).rstrip(b"\n"), headers,
             path, auth=False)
    assert r.status_code == 200, r.text


@pytest.mark.parametrize("headers, status", [
    ({}, 401),
    ({"X-Sentry-Auth": "garbage"}, 401),
    ({"X-Sentry-Auth": "Sentry sentry_version=7"}, 401),
    ({"X-Sentry-Auth": "Sentry sentry_key=0123456789abcdef0123456789abcdef"}, 403),
    ({"X-Sentry-Auth": "Sentry sentry_key=short"}, 401),
])
def test_auth_errors(tracker: TrackerServer, project: Project, headers: dict, status: int) -> None:
    r = post(tracker, project, envelope({"message": "x"}), headers, auth=False)
    assert r.status_code == status and "detail" in r.json()
    assert "retry-after" not in r.headers


def test_key_of_another_project_and_bad_project_id(tracker: TrackerServer, project: Project) -> None:
    other = tracker.create_project()
    r = httpx.post(f"{tracker.url}/api/{other.id}/envelope/", content=envelope({"message": "x"}),
                   headers={"X-Sentry-Auth": f"Sentry sentry_key={project.key}"})
    assert r.status_code == 403
    r = httpx.post(f"{tracker.url}/api/abc/envelope/", content=envelope({"message": "x"}),
                   headers={"X-Sentry-Auth": f"Sentry sentry_key={project.key}"})
    assert r.status_code == 400 and r.json()["detail"] == "bad project path parameter"


@pytest.mark.parametrize("body, status", [
    (b"", 400),
    (b"not json\n", 400),
    (b'{}\n{"type":"event","length":500}\n{"message":"short"}\n', 400),
    (b'{}\n{"type":"event","length":5}\n{"message":"x"}\n', 400),
    (b'{}\n{"type":"event"}\n[1, 2]\n', 400),
])
def test_malformed_envelopes(tracker: TrackerServer, project: Project, body: bytes, status: int) -> None:
    r = post(tracker, project, body)
    assert r.status_code == status and r.json()["detail"]
    assert_serving(tracker, project)


def test_zip_bombs_and_oversize(tracker: TrackerServer, project: Project) -> None:
    bomb = gzip.compress(b"\0" * (200 * 1024 * 1024), compresslevel=9)
    assert len(bomb) < 1024 * 1024
    r = post(tracker, project, bomb, {"Content-Encoding": "gzip"})
    assert r.status_code == 413 and "decompressed" in r.json()["detail"]
    r = post(tracker, project, brotli.compress(b"\0" * (150 * 1024 * 1024), quality=1), {"Content-Encoding": "br"})
    assert r.status_code == 413
    big_event = envelope({"message": "x" * (1024 * 1024 + 10)})
    assert post(tracker, project, big_event).status_code == 413
    assert post(tracker, project, b"\0" * (21 * 1024 * 1024)).status_code == 413
    assert post(tracker, project, b"x", {"Content-Encoding": "compress"}).status_code == 415
    assert_serving(tracker, project)


def test_js_framing_other_items_and_duplicates(tracker: TrackerServer, project: Project) -> None:
    event_id = str(uuid.uuid4())
    attachment = b"line one\nline two"
    body = b"\n".join([
        json.dumps({"event_id": event_id, "sdk": {"name": "sentry.javascript.node"}}).encode(),
        b'{"type":"client_report"}', b'{"timestamp":1,"discarded_events":[]}',
        b'{"type":"event"}', json.dumps({"message": "js style", "timestamp": 1.7e9}).encode(),
        json.dumps({"type": "attachment", "length": len(attachment), "filename": "a.txt"}).encode(), attachment,
        b'{"type":"made_up_type"}', b'{"anything": true}',
    ])  # no final newline, JSON items without length
    for _ in range(2):
        r = post(tracker, project, body)
        assert r.status_code == 200 and r.json() == {"id": event_id.replace("-", "")}
    (issue,) = tracker.wait_issues(project, 1)
    assert issue["count"] == "1" and issue["title"] == "js style"
    only_dropped = b'{}\n{"type":"client_report"}\n{"timestamp":1}\n'
    r = post(tracker, project, only_dropped)
    assert r.status_code == 200 and r.json() == {}


def test_store_endpoint_and_no_trailing_slash(tracker: TrackerServer, project: Project) -> None:
    r = post(tracker, project, json.dumps({"message": "legacy store"}).encode(), path="store")
    assert r.status_code == 200 and len(r.json()["id"]) == 32
    r = post(tracker, project, envelope({"message": "no slash"}), path="envelope")
    assert r.status_code == 200


def test_cors_preflight(tracker: TrackerServer, project: Project) -> None:
    r = httpx.options(f"{tracker.url}/api/{project.id}/envelope/",
                      headers={"Origin": "http://shop.example.com", "Access-Control-Request-Method": "POST"})
    assert r.status_code == 200
    assert r.headers["access-control-allow-origin"] == "*"
    assert "x-sentry-auth" in r.headers["access-control-allow-headers"]
    assert "x-sentry-rate-limits" in r.headers["access-control-expose-headers"]


def test_normalisation_of_shapes(tracker: TrackerServer, project: Project) -> None:
    single_exception = {"exception": {"type": "KeyError", "value": "'x'"}, "timestamp": "2026-11-28T12:00:00Z",
                        "tags": [["service", "a"]], "user": {"ip_address": "{{auto}}"}}
    synthetic = {"message": "widget failed", "exception": [{"value": "widget failed",
                                                            "mechanism": {"type": "generic", "synthetic": True}}]}
    logentry = {"logentry": {"message": "order %s failed", "params": [7]}, "level": "CRITICAL"}
    for event in (single_exception, synthetic, logentry):
        assert post(tracker, project, envelope(event)).status_code == 200
    titles = {i["title"]: i for i in tracker.wait_issues(project, 3)}
    assert set(titles) == {"KeyError: 'x'", "widget failed", "order 7 failed"}
    assert titles["order 7 failed"]["level"] == "fatal"
    event = tracker.latest_event(titles["KeyError: 'x'"]["id"])
    assert event["user"]["ip_address"] == "127.0.0.1"
    assert {"key": "service", "value": "a"} in event["tags"]
