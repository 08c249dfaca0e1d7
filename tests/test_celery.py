"""A task that raises inside a real Celery worker (celery.contrib.testing, in-memory broker), reported
by the real sentry-sdk's Celery integration: the task name is the transaction and culprit, the
job's context arrives, and the issue page shows it.

The worker runs in a process of its own, as workers do: sentry_sdk.init comes first, before Celery
is imported, which is what the integration needs to instrument the task tracer."""
from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import pytest
from conftest import Project, TrackerServer

pytest.importorskip("celery")

WORKER = textwrap.dedent("""
    import os, sentry_sdk
    from sentry_sdk.integrations.celery import CeleryIntegration
    sentry_sdk.init(dsn=os.environ["DSN"], release="billing-worker@3.1.0", integrations=[CeleryIntegration()],
                    send_default_pii=True)  # else the SDK itself filters the task arguments

    import celery
    from celery.contrib.testing.worker import start_worker

    class InvoiceError(Exception):
        pass

    app = celery.Celery("billing", broker="memory://", backend="cache+memory://")

    @app.task(name="billing.settle_invoice")
    def settle_invoice(invoice_id, amount):
        raise InvoiceError(f"invoice {invoice_id} cannot be settled: amount {amount} exceeds the balance")

    with start_worker(app, pool="solo", perform_ping_check=False, shutdown_timeout=10):
        try:
            settle_invoice.delay("inv-4711", 250).get(timeout=20)
        except InvoiceError:
            print("task failed as planned")
    sentry_sdk.flush(10)
""")


def test_a_failing_task_in_a_worker_becomes_an_issue(tracker: TrackerServer, project: Project) -> None:
    run = subprocess.run([sys.executable, "-c", WORKER], env={**os.environ, "DSN": project.dsn}, capture_output=True,
                         text=True, timeout=120)
    assert "task failed as planned" in run.stdout, run.stderr[-2000:]

    [issue] = tracker.wait_issues(project, 1, timeout=20)
    assert issue["metadata"]["type"] == "InvoiceError" and issue["culprit"] == "billing.settle_invoice"
    event = tracker.latest_event(issue["id"])
    tags = {t["key"]: t["value"] for t in event["tags"]}
    assert tags.get("transaction") == "billing.settle_invoice" and tags.get("release") == "billing-worker@3.1.0"
    job = event["context"]["celery-job"]  # Sentry's event API shows `extra` as `context`
    assert job["task_name"] == "billing.settle_invoice" and "inv-4711" in str(job["args"])
    exception = next(e for e in event["entries"] if e["type"] == "exception")["data"]["values"][-1]
    assert exception["mechanism"]["type"] == "celery" and exception["mechanism"]["handled"] is False
    assert exception["stacktrace"]["frames"][-1]["function"] == "settle_invoice"

    page = tracker.web.get(f"/issues/{issue['id']}/").text
    assert "billing.settle_invoice" in page and "celery-job" in page and "inv-4711" in page
    assert "settle_invoice" in page and "crashed here" in page
