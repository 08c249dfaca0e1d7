"""The real sentry-sdk against the live server: what a Python service sends must arrive intact."""
from __future__ import annotations

import logging

import pytest
import sentry_sdk
from conftest import Project, TrackerServer


def charge(amount: int) -> int:
    if amount > 100:
        raise ValueError(f"amount {amount} over limit")
    return amount


def frames_of(event: dict) -> list[dict]:
    exception = next(e for e in event["entries"] if e["type"] == "exception")
    return exception["data"]["values"][-1]["stacktrace"]["frames"]


def test_fastapi_example_becomes_one_issue(tracker: TrackerServer, project: Project) -> None:
    """The example from the issue, verbatim except for the DSN."""
    from fastapi import FastAPI
    from fastapi.testclient import TestClient
    from sentry_sdk.integrations.fastapi import FastApiIntegration
    from sentry_sdk.integrations.logging import LoggingIntegration
    DSN = project.dsn

    sentry_sdk.init(dsn=DSN, integrations=[FastApiIntegration(), LoggingIntegration(level=None, event_level="ERROR")],
                    environment="prod", release="payments-service@1.2.4", traces_sample_rate=0.1)
    app = FastAPI()
    @app.get("/error")
    def trigger_error():
        1 / 0

    try:
        client = TestClient(app, raise_server_exceptions=False)
        for _ in range(3):
            assert client.get("/error").status_code == 500
        sentry_sdk.flush()
        issues = tracker.wait_issues(project, 3)
    finally:
        sentry_sdk.get_client().close()
        sentry_sdk.init()
    assert len(issues) == 1
    issue = issues[0]
    assert issue["title"].startswith("ZeroDivisionError")
    assert issue["metadata"]["type"] == "ZeroDivisionError"
    assert issue["count"] == "3" and issue["level"] == "error" and issue["status"] == "unresolved"
    event = tracker.latest_event(issue["id"])
    assert event["release"] == {"version": "payments-service@1.2.4"}
    assert event["environment"] == "prod"
    request = next(e for e in event["entries"] if e["type"] == "request")["data"]
    assert request["url"] == "http://testserver/error" and request["method"] == "GET"
    assert frames_of(event)[-1]["function"] == "trigger_error"
    crash = frames_of(event)[-1]
    assert dict(crash["context"])[crash["lineNo"]].strip() == "1 / 0"  # Sentry's [line number, text] pairs
    tags = {t["key"]: t["value"] for t in event["tags"]}
    assert tags["release"] == "payments-service@1.2.4" and tags["handled"] == "no"


@pytest.mark.parametrize("algo", ["gzip", "br"])
def test_capture_exception_with_context(tracker: TrackerServer, project: Project, sdk, algo: str) -> None:
    sdk(project.dsn, release="payments-service@1.2.4", environment="prod",
        _experiments={"transport_compression_algo": algo})
    for user_id in ("u1", "u2", "u2"):
        with sentry_sdk.new_scope() as scope:
            scope.set_tag("service", "payments-api")
            scope.set_tag("trace_id", "4bf92f3577b34da6a3ce929d0e0e4736")
            scope.set_user({"id": user_id, "email": f"{user_id}@example.org"})
            scope.set_context("feature_flags", {"new-limits": True})
            try:
                charge(500)
            except ValueError:
                sentry_sdk.capture_exception()
    sentry_sdk.flush()
    issues = tracker.wait_issues(project, 3)
    assert len(issues) == 1, [i["title"] for i in issues]
    issue = issues[0]
    assert issue["title"] == "ValueError: amount 500 over limit"
    assert issue["userCount"] == 2
    assert issue["culprit"] == "test_sdk in charge"
    event = tracker.latest_event(issue["id"])
    tags = {t["key"]: t["value"] for t in event["tags"]}
    assert tags["service"] == "payments-api" and tags["trace_id"] == "4bf92f3577b34da6a3ce929d0e0e4736"
    assert tags["environment"] == "prod" and tags["user"] == "id:u2"
    assert event["user"]["email"] == "u2@example.org"
    assert event["contexts"]["feature_flags"] == {"new-limits": True, "type": "default"}  # Sentry's type of the unknown
    frame = frames_of(event)[-1]
    assert frame["function"] == "charge" and frame["inApp"] is True
    assert frame["vars"]["amount"] == "500"


def test_capture_message_and_logging_error(tracker: TrackerServer, project: Project, sdk) -> None:
    sdk(project.dsn, release="svc@1", environment="prod")
    logger = logging.getLogger("payments")
    for order in (17, 18, 19):
        logger.error("payment declined for order %s", order)
    sentry_sdk.capture_message("cache warmed", level="info")
    sentry_sdk.flush()
    issues = tracker.wait_issues(project, 4)
    by_title = {i["title"]: i for i in issues}
    assert set(by_title) == {"payment declined for order 19", "cache warmed"}, by_title
    logged = by_title["payment declined for order 19"]
    assert logged["count"] == "3" and logged["level"] == "error" and logged["logger"] == "payments"
    message = next(e for e in tracker.latest_event(logged["id"])["entries"] if e["type"] == "message")["data"]
    assert message["message"] == "payment declined for order %s" and message["params"] == [19]
    assert by_title["cache warmed"]["level"] == "info"


def test_critical_log_is_fatal(tracker: TrackerServer, project: Project, sdk) -> None:
    sdk(project.dsn, release="svc@1")
    logging.getLogger("kafka.consumer").critical("consumer lag over %d", 9000)
    sentry_sdk.flush()
    (issue,) = tracker.wait_issues(project, 1)
    assert issue["level"] == "fatal"


class ProcessingError(Exception):
    pass


def parse(payload: str) -> dict:
    import json
    return json.loads(payload)


def handle(payload: str) -> dict:
    try:
        return parse(payload)
    except ValueError as exc:
        raise ProcessingError("cannot process message") from exc


def test_chained_exception(tracker: TrackerServer, project: Project, sdk) -> None:
    sdk(project.dsn, release="orders-consumer@0.9.0")
    for payload in ("{bad", "{worse"):
        try:
            handle(payload)
        except ProcessingError:
            sentry_sdk.capture_exception()
    sentry_sdk.flush()
    issues = tracker.wait_issues(project, 2)
    assert len(issues) == 1
    event = tracker.latest_event(issues[0]["id"])
    values = next(e for e in event["entries"] if e["type"] == "exception")["data"]["values"]
    assert [v["type"] for v in values] == ["JSONDecodeError", "ProcessingError"]
    assert issues[0]["title"] == "ProcessingError: cannot process message"


def test_different_code_paths_split(tracker: TrackerServer, project: Project, sdk) -> None:
    sdk(project.dsn)
    for fn in (lambda: charge(1000), lambda: int("x"), lambda: charge(2000)):
        try:
            fn()
        except ValueError:
            sentry_sdk.capture_exception()
    sentry_sdk.flush()
    issues = tracker.wait_issues(project, 3)
    assert sorted(int(i["count"]) for i in issues) == [1, 2]
