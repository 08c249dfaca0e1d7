"""Floods and quotas against the live server: per-project and installation-wide events per minute,
answered as the SDKs expect (429, Retry-After, X-Sentry-Rate-Limits), the disk guard, client
reports, and the dropped counts in stats_v2 and on the projects page — with the real sentry-sdk."""
from __future__ import annotations

import json
import time
from typing import Any, Iterator

import httpx
import pytest
import sentry_sdk
from conftest import Project, TrackerServer, configured_server, wait_for

LIMITED, OTHER = "a" * 32, "b" * 32
CONFIG = f"""
[limits]
events_per_minute = 9

[[projects]]
name = "limited"
slug = "limited"
dsn_key = "{LIMITED}"
rate_limit = 4

[[projects]]
name = "other"
slug = "other"
dsn_key = "{OTHER}"
"""


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TrackerServer]:
    yield from configured_server(tmp_path_factory, "limits", CONFIG)


def project_of(server: TrackerServer, slug: str, key: str) -> Project:
    project_id = next(p["id"] for p in server.api("/api/0/organizations/tracker/projects/").json() if p["slug"] == slug)
    return Project(id=int(project_id), slug=slug, dsn=f"http://{key}@127.0.0.1:{server.port}/{project_id}", key=key)


def envelope(*items: tuple[str, dict[str, Any]]) -> bytes:
    lines = [b"{}"]
    for kind, payload in items:
        lines += [json.dumps({"type": kind}).encode(), json.dumps(payload).encode()]
    return b"\n".join(lines) + b"\n"


def send(server: TrackerServer, project: Project, *items: tuple[str, dict[str, Any]]) -> httpx.Response:
    return httpx.post(f"{server.url}/api/{project.id}/envelope/", content=envelope(*items), timeout=10,
                      headers={"X-Sentry-Auth": f"Sentry sentry_version=7, sentry_key={project.key}"})


def error(n: int) -> tuple[str, dict[str, Any]]:
    return "event", {"message": f"flood {n}", "level": "error"}


def fresh_minute() -> None:
    """Start right after a minute begins, so a test's requests share one rate-limit window."""
    second = time.time() % 60
    if second > 40:
        time.sleep(60.5 - second)


def test_project_and_installation_limits(server: TrackerServer) -> None:
    limited, other = project_of(server, "limited", LIMITED), project_of(server, "other", OTHER)
    fresh_minute()
    for n in range(4):
        r = send(server, limited, error(n))
        assert r.status_code == 200 and "retry-after" not in r.headers and "x-sentry-rate-limits" not in r.headers
    refused = send(server, limited, error(5))
    assert refused.status_code == 429 and "project quota" in refused.json()["detail"]
    seconds = int(refused.headers["retry-after"])
    assert 1 <= seconds <= 60
    assert refused.headers["x-sentry-rate-limits"] == f"{seconds}:error;default:project:project_quota"
    assert "x-sentry-rate-limits" in refused.headers["access-control-expose-headers"]  # browsers may read it
    session = {"sid": "c" * 32, "status": "exited", "errors": 0, "started": time.time(),
               "timestamp": time.time(), "attrs": {"release": "limited@1"}}
    partial = send(server, limited, error(6), ("session", session))  # the session is kept, the event is not
    assert partial.status_code == 200 and "retry-after" not in partial.headers
    assert partial.headers["x-sentry-rate-limits"].endswith(":error;default:project:project_quota")
    assert send(server, limited, ("session", {**session, "sid": "d" * 32})).status_code == 200  # only events count
    assert sum(int(i["count"]) for i in server.issues(limited)) == 4

    for n in range(5):  # 4 + 5 = 9 for the installation
        assert send(server, other, error(n)).status_code == 200
    everyone = send(server, other, error(99))
    assert everyone.status_code == 429
    assert everyone.headers["x-sentry-rate-limits"].endswith(":error;default:organization:installation_quota")
    bad = send(server, other, ("event", {"message": 1}))  # still refused for the quota, not the body
    assert bad.status_code == 429


def test_sdk_backs_off_and_its_client_reports_are_stored(server: TrackerServer) -> None:
    limited = project_of(server, "limited", LIMITED)
    fresh_minute()
    sentry_sdk.init(dsn=limited.dsn, default_integrations=False, send_client_reports=True)
    try:
        for n in range(12):
            sentry_sdk.capture_message(f"sdk flood {n}", level="error")
            sentry_sdk.flush()
    finally:
        sentry_sdk.get_client().close()
        sentry_sdk.init()
    params = {"field": "sum(quantity)", "groupBy": ["outcome", "reason"], "statsPeriod": "1h", "project": limited.id}

    def stats() -> dict[tuple[str, str], int] | None:
        r = server.api("/api/0/organizations/tracker/stats_v2/", **params)
        assert r.status_code == 200, r.text
        found = {(g["by"]["outcome"], g["by"]["reason"]): g["totals"]["sum(quantity)"] for g in r.json()["groups"]}
        return found if ("client_discard", "ratelimit_backoff") in found and ("rate_limited", "rate_limited") in found \
            else None
    found = wait_for(stats, timeout=20)
    assert found[("accepted", "none")] >= 4 and found[("client_discard", "ratelimit_backoff")] >= 1
    page = server.web.get("/projects/").text
    assert "Dropped in the last 24 h" in page and "by the SDK: ratelimit backoff" in page


def test_stats_v2_rejects_what_it_cannot_answer(server: TrackerServer) -> None:
    for params in ({"field": "sum(times_seen)"}, {"field": "sum(quantity)", "groupBy": "planet"},
                   {"field": "sum(quantity)", "statsPeriod": "forever"}):
        r = server.api("/api/0/organizations/tracker/stats_v2/", **params)
        assert r.status_code == 400 and r.json()["detail"], params


@pytest.fixture(scope="module")
def full_disk(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TrackerServer]:
    """A tracker told to keep more free space than any disk has: it must refuse everything."""
    yield from configured_server(tmp_path_factory, "fulldisk", "[limits]\nmin_free_mb = 1e12\n[[projects]]\n"
                                 f'name = "full"\nslug = "full"\ndsn_key = "{LIMITED}"\n')


def test_disk_guard_answers_429_before_the_disk_fills(full_disk: TrackerServer) -> None:
    project = project_of(full_disk, "full", LIMITED)
    r = send(full_disk, project, error(1))
    assert r.status_code == 429 and "disk" in r.json()["detail"]
    assert r.headers["retry-after"] == "60" and r.headers["x-sentry-rate-limits"] == "60::organization:disk_full"
    assert full_disk.web.get("/issues/").status_code == 200  # the dashboard still works
