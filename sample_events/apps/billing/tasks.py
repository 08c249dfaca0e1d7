"""billing-worker: Celery tasks that settle invoices with the partner bank."""

import http.client
import json
import logging
import os
import socket

import sentry_sdk
from celery import Celery

logger = logging.getLogger("billing.tasks")

app = Celery("billing", broker=os.environ.get("BILLING_BROKER", "memory://"),
             backend=os.environ.get("BILLING_BACKEND", "cache+memory://"))
app.conf.update(task_serializer="json", accept_content=["json"], result_serializer="json",
                task_acks_late=True, worker_hijack_root_logger=False)


def _bank_endpoint() -> tuple[str, int]:
    """Partner bank sandbox; nothing listens there while the bank has its outage."""
    probe = socket.socket()
    probe.bind(("127.0.0.1", 0))
    port = probe.getsockname()[1]
    probe.close()
    return "127.0.0.1", port


class BankApiClient:
    def __init__(self, host: str, port: int, client_id: str, timeout: float = 2.0):
        self.host, self.port, self.client_id, self.timeout = host, port, client_id, timeout

    def submit_transfer(self, iban: str, amount_cents: int, reference: str) -> dict:
        payload = {"creditor_iban": iban, "amount": amount_cents, "currency": "EUR",
                   "remittance_information": reference}
        return self._request("POST", "/psd2/v1/payments/sepa-credit-transfers", payload)

    def _request(self, method: str, path: str, payload: dict) -> dict:
        sentry_sdk.add_breadcrumb(category="bank.api", message=f"{method} {path}",
                                  data={"host": self.host, "client_id": self.client_id})
        conn = http.client.HTTPConnection(self.host, self.port, timeout=self.timeout)
        try:
            conn.request(method, path, body=json.dumps(payload),
                         headers={"Content-Type": "application/json", "X-Client-Id": self.client_id})
            response = conn.getresponse()
            return json.loads(response.read())
        finally:
            conn.close()


bank = BankApiClient(*_bank_endpoint(), client_id="acme-payments-prod")


@app.task(name="billing.tasks.settle_invoice", bind=True, max_retries=0)
def settle_invoice(self, invoice_id: str, customer_iban: str, amount_cents: int):
    sentry_sdk.set_tag("service", "billing-worker")
    sentry_sdk.set_tag("invoice_id", invoice_id)
    sentry_sdk.add_breadcrumb(category="celery", message=f"settling {invoice_id}",
                              data={"amount_cents": amount_cents})
    logger.info("settling invoice %s (%d cents)", invoice_id, amount_cents)
    reference = f"INV {invoice_id}"
    transfer = bank.submit_transfer(customer_iban, amount_cents, reference)
    return {"invoice_id": invoice_id, "transfer_id": transfer["paymentId"]}
