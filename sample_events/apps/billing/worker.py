"""Run a real Celery worker (in-memory broker) and enqueue invoices while the bank API is down.

Run by sample_events/generate.py (python -m billing.worker, with SAMPLE_EVENTS_OUT set).
"""

import logging

import sentry_sdk
from sentry_sdk.integrations.celery import CeleryIntegration
from sentry_sdk.integrations.logging import LoggingIntegration

import _capture

DSN = "http://0123456789abcdef0123456789abcdef@127.0.0.1:8000/1"

INVOICES = [
    ("INV-2024-08812", "DE89370400440532013000", 129900),
    ("INV-2024-08815", "FR1420041010050500013M02606", 4500),
    ("INV-2024-08819", "NL91ABNA0417164300", 78050),
]


def main() -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    sentry_sdk.init(
        dsn=DSN,
        transport=_capture.CaptureTransport,
        integrations=[CeleryIntegration(), LoggingIntegration(level=None, event_level="ERROR")],
        auto_enabling_integrations=False,
        environment="prod",
        release="billing-worker@2.7.1",
        server_name="billing-worker-5b7d9c8f4-m2v8t",
        send_default_pii=True,
        traces_sample_rate=0,
    )
    _capture.KIND = "celery"
    from celery.contrib.testing.worker import start_worker

    from billing.tasks import app, settle_invoice

    with start_worker(app, perform_ping_check=False, pool="solo", loglevel="INFO"):
        results = [settle_invoice.delay(invoice_id, iban, cents) for invoice_id, iban, cents in INVOICES]
        for result in results:
            result.get(timeout=30, propagate=False)
            print(f"task {result.id}: {result.state} {result.result!r}")
    sentry_sdk.flush()


if __name__ == "__main__":
    main()
