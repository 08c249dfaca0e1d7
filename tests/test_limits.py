"""Floods and quotas against the live server: per-project and installation-wide events per minute,
answered as the SDKs expect (429, Retry-After, X-Sentry-Rate-Limits), the disk guard, client
reports, and the dropped counts in stats_v2 and on the projects page — with the real sentry-sdk."""
from __future__ import annotations

import time
from typing import Any

import pytest
import sentry_sdk
from conftest import Configure, TrackerServer, wait_for

LIMITED, OTHER = "a" * 32, "b" * 32
WINDOW = 86400  # the limits count per day here: a test's requests share one window (it ends at midnight UTC)
CONFIG = f"""
[limits]
events_per_minute = 9
window = {WINDOW}

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
def server(configured: Configure) -> TrackerServer:
    return configured("limits", CONFIG)


def error(n: int) -> dict[str, Any]:
    return {"message": f"flood {n}", "level": "error"}


def test_project_and_installation_limits(server: TrackerServer) -> None:
    limited, other = server.config_project("limited", LIMITED), server.config_project("other", OTHER)
    for n in range(4):
        r = server.send_envelope(limited, error(n))
        assert r.status_code == 200 and "retry-after" not in r.headers and "x-sentry-rate-limits" not in r.headers
    refused = server.send_envelope(limited, error(5))
    assert refused.status_code == 429 and "project quota" in refused.json()["detail"]
    seconds = int(refused.headers["retry-after"])
    assert abs(seconds - (WINDOW - time.time() % WINDOW)) < 2  # until the window ends
    assert refused.headers["x-sentry-rate-limits"] == f"{seconds}:error;default:project:project_quota"
    assert "x-sentry-rate-limits" in refused.headers["access-control-expose-headers"]  # browsers may read it
    session = {"sid": "c" * 32, "status": "exited", "errors": 0, "started": time.time(),
               "timestamp": time.time(), "attrs": {"release": "limited@1"}}
    partial = server.send_envelope(limited, error(6), ({"type": "session"}, session))  # the session is kept, not the event
    assert partial.status_code == 200 and "retry-after" not in partial.headers
    assert partial.headers["x-sentry-rate-limits"].endswith(":error;default:project:project_quota")
    another = ({"type": "session"}, {**session, "sid": "d" * 32})
    assert server.send_envelope(limited, another).status_code == 200  # only events count
    assert sum(int(i["count"]) for i in server.issues(limited)) == 4

    for n in range(5):  # 4 + 5 = 9 for the installation
        assert server.send_envelope(other, error(n)).status_code == 200
    everyone = server.send_envelope(other, error(99))
    assert everyone.status_code == 429
    assert everyone.headers["x-sentry-rate-limits"].endswith(":error;default:organization:installation_quota")
    bad = server.send_envelope(other, {"message": 1})  # still refused for the quota, not the body
    assert bad.status_code == 429


def test_sdk_backs_off_and_its_client_reports_are_stored(server: TrackerServer) -> None:
    limited = server.config_project("limited", LIMITED)
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
        r = server.api("GET", "organizations/tracker/stats_v2/", params=params)
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
        r = server.api("GET", "organizations/tracker/stats_v2/", params=params)
        assert r.status_code == 400 and r.json()["detail"], params


@pytest.fixture(scope="module")
def full_disk(configured: Configure) -> TrackerServer:
    """A tracker told to keep more free space than any disk has: it must refuse everything."""
    return configured("fulldisk", "[limits]\nmin_free_mb = 1e12\n[[projects]]\n"
                      f'name = "full"\nslug = "full"\ndsn_key = "{LIMITED}"\n')


def test_disk_guard_answers_429_before_the_disk_fills(full_disk: TrackerServer) -> None:
    project = full_disk.config_project("full", LIMITED)
    r = full_disk.send_envelope(project, error(1))
    assert r.status_code == 429 and "disk" in r.json()["detail"]
    assert r.headers["retry-after"] == "60" and r.headers["x-sentry-rate-limits"] == "60::organization:disk_full"
    assert full_disk.web.get("/issues/").status_code == 200  # the dashboard still works
