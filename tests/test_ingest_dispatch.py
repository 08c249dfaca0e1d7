"""Ingest reaches its handler without Starlette's middleware and router (Tracker.__call__): what that
path answers must be what the routed one answered — other methods, paths that only look like ingest,
the pages' headers kept off it — and its answers carry only the CORS headers an actual response needs."""
from __future__ import annotations

import httpx

from conftest import Project, TrackerServer, auth, envelope


def test_other_methods_and_paths_still_go_through_the_router(tracker: TrackerServer, project: Project) -> None:
    assert httpx.get(f"{tracker.url}/api/{project.id}/envelope/", headers=auth(project)).status_code == 405
    assert httpx.put(f"{tracker.url}/api/{project.id}/store/", headers=auth(project)).status_code == 405
    near = httpx.post(f"{tracker.url}/api/{project.id}/envelopes/", content=b"{}", headers=auth(project))
    assert near.status_code == 404
    nested = httpx.post(f"{tracker.url}/api/{project.id}/x/envelope/", content=b"{}", headers=auth(project))
    assert nested.status_code == 404


def test_an_answer_has_the_cors_of_an_actual_response_and_no_page_headers(tracker: TrackerServer,
                                                                           project: Project) -> None:
    for path, event_id in ((f"/api/{project.id}/envelope/", "a" * 32), (f"/api/{project.id}/envelope", "b" * 32)):
        body = envelope({"event_id": event_id}, ({"type": "event"}, {"message": "dispatch"}))
        r = httpx.post(tracker.url + path, content=body, headers=auth(project))
        assert r.status_code == 200 and r.json() == {"id": event_id}
        assert r.headers["content-type"] == "application/json"
        assert r.headers["access-control-allow-origin"] == "*"
        assert "x-sentry-rate-limits" in r.headers["access-control-expose-headers"]
        assert "access-control-allow-methods" not in r.headers  # the preflight's, not every answer's
        assert "server" not in r.headers and "content-security-policy" not in r.headers


def test_bad_project_ids_and_keys_get_relays_errors(tracker: TrackerServer, project: Project) -> None:
    body = envelope({}, ({"type": "event"}, {"message": "x"}))
    r = httpx.post(f"{tracker.url}/api/abc/envelope/", content=body, headers=auth(project))
    assert r.status_code == 400 and r.json() == {"detail": "bad project path parameter"}
    assert r.headers["access-control-allow-origin"] == "*"
    r = httpx.post(f"{tracker.url}/api/{project.id}/envelope/", content=body,
                   headers={"X-Sentry-Auth": "Sentry sentry_key=" + "0" * 32})
    assert r.status_code == 403 and "unknown or disabled project key" in r.json()["detail"]
