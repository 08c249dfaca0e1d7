"""Release health and SLOs from the real sentry_sdk's sessions: request-mode aggregates from a WSGI
app, application-mode sessions, transactions; Sentry's sessions and events-stats API shapes; an
error-budget SLO that breaches and recovers through an alert channel; /metrics."""
from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Callable

import httpx
import pytest
import sentry_sdk
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sentry_sdk.integrations.wsgi import SentryWsgiMiddleware

from conftest import Configure, Project, TrackerServer, wait_for
from receivers import WebhookReceiver

CONFIG = "[slo]\ninterval = 0.3\nlag = 0\n[alerts]\npoll = 0.1\nretry_delays = [0, 0.3]\n"


@pytest.fixture(scope="module")
def server(configured: Configure) -> TrackerServer:
    """A tracker of its own: SLOs are judged every 0.3 s here, with no flush lag."""
    return configured("health", CONFIG)


def sessions(tracker: TrackerServer, project: Project, **params: Any) -> dict[str, Any]:
    r = tracker.api("GET", "organizations/tracker/sessions/", params={"project": project.id, **params})
    assert r.status_code == 200, r.text
    return r.json()


def shop_app(environ: dict[str, Any], start_response: Callable[..., Any]) -> list[bytes]:
    """A WSGI app whose /crash requests raise (an unhandled error crashes the request's session)."""
    if environ["PATH_INFO"] == "/crash":
        raise RuntimeError("checkout exploded")
    if environ["PATH_INFO"] == "/error":
        try:
            raise LookupError("coupon lookup failed")
        except LookupError:
            sentry_sdk.capture_exception()  # handled: the session is errored, not crashed
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [b"ok"]


# Without auto-enabled integrations: the alert receivers are Starlette apps in this process, and the
# SDK's Starlette integration counted a webhook they got while a client was open as one more
# session (or transaction) of the app under test: the SLO test's 21 sessions of 20
ONLY_THE_APP = {"auto_enabling_integrations": False}


def serve_requests(project: Project, paths: list[str], release: str, **options: Any) -> None:
    """Requests through the SDK's WSGI middleware, in request mode: aggregates flushed at the end."""
    sentry_sdk.init(dsn=project.dsn, release=release, environment="prod", auto_session_tracking=True,
                    **ONLY_THE_APP, **options)
    app = SentryWsgiMiddleware(shop_app)
    try:
        for path in paths:
            environ = {"REQUEST_METHOD": "GET", "PATH_INFO": path, "SERVER_NAME": "shop", "SERVER_PORT": "80",
                       "wsgi.url_scheme": "http", "wsgi.input": None, "QUERY_STRING": ""}
            try:
                app(environ, lambda status, headers, exc_info=None: None)
            except RuntimeError:
                pass
        sentry_sdk.flush()
    finally:
        sentry_sdk.get_client().close()
        sentry_sdk.init()


def test_request_mode_sessions_give_crash_free_and_errored_rates(server: TrackerServer) -> None:
    project = server.create_project()
    release = f"{project.slug}@1.0"
    serve_requests(project, ["/"] * 16 + ["/error"] * 2 + ["/crash"] * 2, release)

    def health() -> dict[str, Any] | None:
        body = sessions(server, project, field=["sum(session)", "crash_free_rate(session)", "count_errored(session)"],
                        groupBy="release", statsPeriod="1h", interval="5m")
        return body if body["groups"] and body["groups"][0]["totals"]["sum(session)"] == 20 else None
    body = wait_for(health)
    [group] = body["groups"]
    assert group["by"] == {"release": release}
    assert group["totals"] == {"sum(session)": 20, "crash_free_rate(session)": 0.9, "count_errored(session)": 4}
    assert len(body["intervals"]) == len(group["series"]["sum(session)"]) >= 12
    assert sum(group["series"]["sum(session)"]) == 20
    by_status = sessions(server, project, field="sum(session)", groupBy="session.status", statsPeriod="1h")
    totals = {g["by"]["session.status"]: g["totals"]["sum(session)"] for g in by_status["groups"]}
    assert totals == {"healthy": 16, "errored": 2, "crashed": 2, "abnormal": 0}
    page = server.web.get(f"/releases/{release.replace('@', '%40')}/", timeout=10).text
    assert "90%" in page and "crash-free sessions" in page


def test_application_sessions_are_counted_once_with_users(server: TrackerServer) -> None:
    project = server.create_project()
    release = f"{project.slug}@2.0"
    sentry_sdk.init(dsn=project.dsn, release=release, environment="prod", **ONLY_THE_APP)
    try:
        for user, fail in (("ada", False), ("bob", True), ("cyd", False)):
            with sentry_sdk.isolation_scope() as scope:  # scopes must not leak into later tests
                scope.set_user({"id": user})
                scope.start_session()
                if fail:
                    try:
                        raise ValueError("bad card")
                    except ValueError:
                        sentry_sdk.capture_exception()
                scope.end_session()
        sentry_sdk.flush()
    finally:
        sentry_sdk.get_client().close()
        sentry_sdk.init()
    fields = ["sum(session)", "count_unique(user)", "count_errored(session)", "crash_free_rate(user)"]
    body = wait_for(lambda: (b := sessions(server, project, field=fields, statsPeriod="1h"))["groups"] and b)
    assert body["groups"][0]["totals"] == {"sum(session)": 3, "count_unique(user)": 3, "count_errored(session)": 1,
                                           "crash_free_rate(user)": 1.0}


def test_bad_session_queries_are_400(server: TrackerServer, project: Project) -> None:
    for params in ({"field": "sum(nothing)"}, {"field": "sum(session)", "groupBy": "browser"},
                   {"field": "crash_free_rate(session)", "groupBy": "session.status"},
                   {"field": "sum(session)", "statsPeriod": "forever"},
                   {"field": "sum(session)", "statsPeriod": "365d", "interval": "1m"},
                   {"field": "sum(session)", "query": "user.email:x"}):
        r = server.api("GET", "organizations/tracker/sessions/", params=params)
        assert r.status_code == 400 and r.json()["detail"], (params, r.text)


def test_events_stats_counts_error_events(server: TrackerServer) -> None:
    project = server.create_project()
    serve_requests(project, ["/error"] * 3, f"{project.slug}@3.0")
    server.wait_issues(project, 3)
    r = server.api("GET", "organizations/tracker/events-stats/", params={
        "project": project.id, "field": "count()", "query": "event.type:error", "statsPeriod": "1h", "interval": "10m"})
    assert r.status_code == 200, r.text
    body = r.json()
    assert sum(point[1][0]["count"] for point in body["data"]) == 3 and body["start"] < body["end"]
    assert all(isinstance(point[0], int) for point in body["data"])


def test_slo_breaches_and_recovers_through_a_channel(server: TrackerServer, webhook: WebhookReceiver) -> None:
    project = server.create_project()
    channel = server.api("POST", "organizations/tracker/channels/", json={
        "name": f"slo-{project.slug}", "kind": "webhook",
        "config": {"url": f"{webhook.url}/hook", "secret": webhook.secret, "allow_private": True}}).json()
    try:
        r = server.api("PUT", f"projects/tracker/{project.slug}/slo/",
                       json={"name": "Checkout budget", "metric": "errored_sessions", "objective": 0.001, "window": 10,
                             "minTotal": 10})
        assert r.status_code == 200, r.text
        assert r.json()["description"] == "errored sessions < 0.1% over 10 minutes"
        serve_requests(project, ["/"] * 18 + ["/crash"] * 2, f"{project.slug}@4.0")  # 10% errored
        breached = wait_for(lambda: (s := server.api("GET", f"projects/tracker/{project.slug}/slo/").json())
                            ["state"] == "breached" and s)
        assert breached["value"] == pytest.approx(0.1) and breached["total"] == 20 and breached["burnRate"] > 99
        def slo_alerts() -> list[dict[str, Any]]:  # the crashes' new issue is announced there too
            return [d["body"] for d in webhook.deliveries.values() if d["resource"] == "metric_alert"]
        [alert] = wait_for(slo_alerts)
        assert alert["action"] == "critical"
        assert "Checkout budget" in alert["data"]["description_title"]
        serve_requests(project, ["/"] * 2000, f"{project.slug}@4.0")  # 2 in 2020: under 0.1%
        recovered = wait_for(lambda: (s := server.api("GET", f"projects/tracker/{project.slug}/slo/").json())
                             ["state"] == "ok" and s, timeout=20)
        assert recovered["value"] < 0.001 and any(h["state"] == "breached" for h in recovered["history"])
        wait_for(lambda: [a["action"] for a in slo_alerts()] == ["critical", "resolved"])
        metrics = httpx.get(f"{server.url}/metrics", headers={"Authorization": f"Bearer {server.token}"}, timeout=10).text
        assert f'tracker_slo_breached{{project="{project.slug}",slo="Checkout budget"}} 0' in metrics
        assert f'tracker_sessions_total{{project="{project.slug}",release="{project.slug}@4.0",environment="prod",' \
               f'outcome="crashed"}} 2' in metrics
        page = server.web.get(f"/projects/{project.slug}/slo/", timeout=10).text
        assert "errored sessions &lt; 0.1% over 10 minutes" in page and "ok" in page
    finally:
        server.api("DELETE", f"organizations/tracker/channels/{channel['id']}/")


def test_transactions_are_counted(server: TrackerServer) -> None:
    project = server.create_project()
    sentry_sdk.init(dsn=project.dsn, release=f"{project.slug}@5.0", traces_sample_rate=1.0, **ONLY_THE_APP)
    try:
        for _ in range(3):
            with sentry_sdk.isolation_scope(), sentry_sdk.start_transaction(name="GET /checkout", op="http.server"):
                time.sleep(0.01)
        sentry_sdk.flush()
    finally:
        sentry_sdk.get_client().close()
        sentry_sdk.init()
    r = server.api("PUT", f"projects/tracker/{project.slug}/slo/",
                   json={"metric": "error_events", "objective": 0.5, "window": 10, "minTotal": 1})
    assert r.status_code == 200
    slo = f"projects/tracker/{project.slug}/slo/"
    state = wait_for(lambda: (s := server.api("GET", slo).json())["total"] == 3 and s)
    assert state["state"] == "ok" and state["value"] == 0


def test_slo_and_release_health_in_a_browser(server: TrackerServer, tmp_path: Path, browser: Any) -> None:
    """The SLO page and the release's health, as a person sees them (screenshots left in tmp_path)."""
    project = server.create_project()
    release = f"{project.slug}@6.0"
    server.api("PUT", f"projects/tracker/{project.slug}/slo/", json={"objective": 0.01, "window": 10, "minTotal": 5})
    serve_requests(project, ["/"] * 9 + ["/crash"], release)
    wait_for(lambda: server.api("GET", f"projects/tracker/{project.slug}/slo/").json()["state"] == "breached")
    page = server.browser_context(browser, viewport={"width": 1280, "height": 800}).new_page()
    page.goto(f"{server.url}/projects/{project.slug}/slo/")
    assert page.locator(".slo-state").inner_text() == "breached"
    assert page.locator(".facts b").first.inner_text() == "10%"
    assert page.locator(".slo-history span.state-breached").count() >= 1
    page.screenshot(path=str(tmp_path / "slo.png"))
    page.goto(f"{server.url}/releases/{release.replace('@', '%40')}/")
    assert page.locator(".health-facts b").all_inner_texts()[:2] == ["90%", "10%"]  # crash-free, errored
    page.screenshot(path=str(tmp_path / "release.png"))
    page.close()


PARAMS = st.sampled_from(["field", "groupBy", "statsPeriod", "interval", "start", "end", "project", "environment",
                          "query", "yAxis"])
VALUES = st.one_of(st.sampled_from(["sum(session)", "count()", "release", "session.status", "24h", "999999w", "0m",
                                    "1s", "-1", "release:a", "release:[a,b]", "1970-01-01T00:00:00Z",
                                    "9999-12-31T23:59:59Z", "crash_free_rate(user)", ""]), st.text(max_size=20))


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(params=st.lists(st.tuples(PARAMS, VALUES), max_size=6))
def test_stats_queries_never_fail_with_5xx(server: TrackerServer, params: list[tuple[str, str]]) -> None:
    for endpoint in ("sessions", "events-stats"):
        r = server.api("GET", f"organizations/tracker/{endpoint}/", params=params)
        assert r.status_code in (200, 400), (endpoint, params, r.status_code, r.text[:200])
        assert r.headers["content-type"] == "application/json"
