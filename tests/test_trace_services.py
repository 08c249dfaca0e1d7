"""One request followed through three real services (issue 19's Done-when): a FastAPI shop (uvicorn,
sentry-sdk with traces_sample_rate=1.0 and enable_logs=True) calls a FastAPI payments service over
HTTP (httpx; the SDK propagates sentry-trace and baggage), which enqueues a task on a real Celery
worker (its own process; kombu's filesystem broker and Celery's file result backend carry the task and
its failure between processes). Each service logs and raises (payments through an exception handler
that reports the error before it answers, so the errors happen in causal order). The trace page then shows the three
errors in the order they happened, under their three projects, with the spans of the transactions and
the log lines; `trace:<id>` finds the three issues."""
from __future__ import annotations

import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any, Iterator

import httpx
import pytest
from conftest import Project, TrackerServer, free_port, wait_for

pytest.importorskip("celery")
pytest.importorskip("fastapi")

CELERY = """
    import celery
    app = celery.Celery("billing", broker="filesystem://", backend="file://" + os.environ["RESULTS"])
    app.conf.broker_transport_options = {"data_folder_in": os.environ["QUEUE"], "data_folder_out": os.environ["QUEUE"],
                                         "polling_interval": 0.2}
    app.conf.result_backend_always_retry = False
"""

SHOP = textwrap.dedent("""
    import logging, os, httpx, sentry_sdk, uvicorn
    sentry_sdk.init(dsn=os.environ["DSN"], release="shop@1.0.0", traces_sample_rate=1.0, enable_logs=True)
    from fastapi import FastAPI
    app = FastAPI()

    @app.get("/checkout/{oid}")
    def checkout(oid: int):
        sentry_sdk.logger.info("checkout {oid} started", oid=oid)
        answer = httpx.get(f"http://127.0.0.1:{os.environ['PAYMENTS_PORT']}/charge/{oid}", timeout=30)
        logging.getLogger("shop.checkout").warning("payments answered %s for order %s", answer.status_code, oid)
        raise RuntimeError(f"checkout of order {oid} failed: payments answered {answer.status_code}")

    uvicorn.run(app, host="127.0.0.1", port=int(os.environ["PORT"]), log_level="warning")
""")

PAYMENTS = textwrap.dedent("""
    import logging, os, sentry_sdk, uvicorn
    from sentry_sdk.integrations.celery import CeleryIntegration
    sentry_sdk.init(dsn=os.environ["DSN"], release="payments@2.0.0", traces_sample_rate=1.0, enable_logs=True,
                    integrations=[CeleryIntegration()])
""") + textwrap.dedent(CELERY) + textwrap.dedent("""
    from fastapi import FastAPI
    from fastapi.responses import JSONResponse
    api = FastAPI()

    @app.task(name="billing.settle")
    def settle(oid):  # runs in the worker; declared here to be sent
        raise NotImplementedError

    class ChargeFailed(Exception):
        pass

    @api.exception_handler(ChargeFailed)
    def report(request, exc):  # reported before the caller gets its answer: the errors' order is the causal one
        sentry_sdk.capture_exception(exc)
        return JSONResponse({"detail": str(exc)}, status_code=502)

    @api.get("/charge/{oid}")
    def charge(oid: int):
        sentry_sdk.logger.info("charging order {oid}", oid=oid)
        try:
            settle.apply_async(args=[oid]).get(timeout=30)
        except Exception as exc:
            logging.getLogger("payments").warning("settling order %s failed: %s", oid, exc)
            raise ChargeFailed(f"order {oid} could not be charged: {exc}") from None

    uvicorn.run(api, host="127.0.0.1", port=int(os.environ["PORT"]), log_level="warning")
""")

WORKER = textwrap.dedent("""
    import logging, os, sentry_sdk
    from sentry_sdk.integrations.celery import CeleryIntegration
    sentry_sdk.init(dsn=os.environ["DSN"], release="billing-worker@3.0.0", traces_sample_rate=1.0, enable_logs=True,
                    integrations=[CeleryIntegration()])
""") + textwrap.dedent(CELERY) + textwrap.dedent("""
    class LedgerLocked(Exception):
        pass

    @app.task(name="billing.settle")
    def settle(oid):
        sentry_sdk.logger.warning("ledger locked while settling order {oid}", oid=oid)
        raise LedgerLocked(f"ledger locked: order {oid} not settled")

    app.worker_main(["worker", "--pool=solo", "--loglevel=WARNING", "--without-heartbeat", "--without-mingle",
                     "--without-gossip"])
""")


@pytest.fixture
def services(tracker: TrackerServer, tmp_path: Path) -> Iterator[dict[str, Any]]:
    """The three services, each in its own process with its own project's DSN."""
    for folder in ("queue", "results"):
        (tmp_path / folder).mkdir()
    projects = {name: tracker.create_project(f"{name}-{os.getpid()}-{free_port()}") for name in ("shop", "payments", "worker")}
    ports = {"shop": free_port(), "payments": free_port()}
    env = {**os.environ, "QUEUE": str(tmp_path / "queue"), "RESULTS": str(tmp_path / "results"),
           "PAYMENTS_PORT": str(ports["payments"])}
    procs = []
    for name, code in (("worker", WORKER), ("payments", PAYMENTS), ("shop", SHOP)):
        log = open(tmp_path / f"{name}.log", "w")
        procs.append(subprocess.Popen([sys.executable, "-c", code], stdout=log, stderr=subprocess.STDOUT, cwd=tmp_path,
                                      env={**env, "DSN": projects[name].dsn, "PORT": str(ports.get(name, 0))}))
    try:
        for name in ("payments", "shop"):
            wait_for(lambda: up(ports[name]), timeout=60, interval=0.2)  # a loaded machine starts slowly
        yield {"projects": projects, "ports": ports, "logs": tmp_path}
    finally:
        for proc in procs:
            proc.terminate()
        for proc in procs:
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                proc.kill()


def up(port: int) -> bool:
    try:
        return httpx.get(f"http://127.0.0.1:{port}/docs", timeout=1).status_code == 200
    except httpx.TransportError:
        return False


# what the three services log for order 7 (the SDKs send log lines in batches of their own, so the
# trace is whole once each has come)
LOG_LINES = ("checkout 7 started", "charging order 7", "ledger locked while settling order 7",
             "payments answered 502 for order 7", "settling order 7 failed")


def test_one_request_across_three_services_is_one_trace(tracker: TrackerServer, services: dict[str, Any]) -> None:
    projects: dict[str, Project] = services["projects"]
    # straight to the transport: the sentry_sdk of this test process (earlier tests initialised it)
    # patches httpx.Client.send to add its own sentry-trace header, and the shop would continue that
    # trace, which hundreds of the suite's events share
    checkout = httpx.Request("GET", f"http://127.0.0.1:{services['ports']['shop']}/checkout/7",
                             extensions={"timeout": {"read": 60, "connect": 5}})
    with httpx.HTTPTransport() as transport:
        answer = transport.handle_request(checkout)
        assert answer.status_code == 500, answer.read()

    [shop_issue] = tracker.wait_issues(projects["shop"], 1, timeout=30)
    trace_id = tracker.latest_event(shop_issue["id"])["contexts"]["trace"]["trace_id"]

    def whole_trace() -> list[dict[str, Any]] | None:
        """The API's trace once three errors, three transactions and the services' log lines are in."""
        roots = tracker.api("GET", f"organizations/tracker/trace/{trace_id}/").json()
        nodes = list(walk(roots))
        errors = [n for n in nodes if n["event_type"] == "error"]
        logs = tracker.api("GET", "organizations/tracker/events/",
                           params={"dataset": "logs", "query": f"trace:{trace_id}", "field": ["message", "project.id"]}).json()
        transactions = [n for n in nodes if n.get("is_transaction")]
        missing = [line for line in LOG_LINES if not any(line in row["message"] for row in logs["data"])]
        seen[:] = [len(errors), len(transactions), missing]
        return roots if len(errors) == 3 and len(transactions) == 3 and not missing else None
    seen: list[int] = []
    try:
        roots = wait_for(whole_trace, timeout=45, interval=0.5)
    except AssertionError:
        raise AssertionError(f"errors, transactions, log lines missing in the trace: {seen}\n"
                             + "\n".join(p.read_text()[-1500:] for p in services["logs"].glob("*.log"))) from None

    # the API: the shop's transaction is the root; the payments transaction continues under the shop's
    # http.client span, the worker's under the payments service's queue.submit span; each error sits in its span
    [root] = roots
    assert root["is_transaction"] and root["op"] == "http.server" and root["transaction"] == "/checkout/{oid}"
    call = next(c for c in root["children"] if c["op"] == "http.client")
    assert "/charge/7" in call["description"]
    [payments] = [c for c in call["children"] if c["is_transaction"]]
    assert payments["project_slug"] == projects["payments"].slug and payments["transaction"] == "/charge/{oid}"
    [worker] = [n for n in walk(payments["children"]) if n.get("is_transaction")]
    assert next(n for n in walk([payments]) if worker in n.get("children", []))["op"] == "queue.submit.celery"
    assert worker["project_slug"] == projects["worker"].slug and worker["op"] == "queue.task.celery"
    assert [e["project_slug"] for e in root["errors"]] == [projects["shop"].slug]
    assert [e["project_slug"] for e in payments["errors"]] == [projects["payments"].slug]
    assert [e["project_slug"] for e in worker["errors"]] == [projects["worker"].slug]

    # the page: the three errors in the order they happened (worker, payments, shop), each under its
    # project and linked to its issue; the spans of the transactions; the log lines of all three
    page = tracker.web.get(f"/traces/{trace_id}/")
    assert page.status_code == 200
    errors_card = page.text.split('class="card trace-errors"')[1].split("</div></div>")[0]
    order = re.findall(r'<span class="svc">([^<]+)</span>', errors_card)
    assert order == [projects["worker"].slug, projects["payments"].slug, projects["shop"].slug], order
    assert "LedgerLocked" in errors_card and "ChargeFailed" in errors_card and "RuntimeError" in errors_card
    for issue in (shop_issue,):
        assert f'href="/issues/{issue["id"]}/events/' in errors_card
    waterfall = page.text.split('class="waterfall"')[1].split("</table>")[0]
    for op in ("http.server", "http.client", "queue.submit.celery", "queue.task.celery"):
        assert op in waterfall, op
    for line in LOG_LINES:
        assert line in page.text, line

    # the issue search finds the three issues by the trace, in the dashboard and in each project's API
    listed = tracker.web.get("/issues/", params={"status": "all", "q": f"trace:{trace_id}"}).text
    for name, project in projects.items():
        [issue] = tracker.issues(project, f"trace:{trace_id}")
        assert f'href="/issues/{issue["id"]}/"' in listed, name
    # and the error's page says how big its trace is, with the log lines before it
    shop_page = tracker.web.get(f"/issues/{shop_issue['id']}/").text
    assert "this trace: 3 errors in 3 services" in shop_page and "charging order 7" in shop_page


def walk(nodes: list[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    for node in nodes:
        yield node
        yield from walk(node.get("children", []))
        yield from node.get("errors", [])
