"""Drive payments-service with realistic traffic so the real sentry-sdk reports real errors.

Run by sample_events/generate.py (python -m payments.run, with SAMPLE_EVENTS_OUT set).
"""

import logging
import secrets
import uuid

import sentry_sdk
from sentry_sdk.integrations.fastapi import FastApiIntegration
from sentry_sdk.integrations.logging import LoggingIntegration
from sentry_sdk.integrations.starlette import StarletteIntegration

import _capture

DSN = "http://0123456789abcdef0123456789abcdef@127.0.0.1:8000/1"

CUSTOMERS = [
    ("eyJhbGciOiJIUzI1NiJ9.c2Vzc2lvbi0xMDQ4Mg.k3Jd8s", "203.0.113.42"),
    ("eyJhbGciOiJIUzI1NiJ9.c2Vzc2lvbi0xMTc3Mw.Q9x0aa", "198.51.100.7"),
    ("eyJhbGciOiJIUzI1NiJ9.c2Vzc2lvbi0xMjAwNQ.pL2mZ1", "192.0.2.15"),
    ("eyJhbGciOiJIUzI1NiJ9.c2Vzc2lvbi0xMzMxOA.Vv7rTe", "203.0.113.180"),
    ("eyJhbGciOiJIUzI1NiJ9.c2Vzc2lvbi0xNDA5MQ.yy1Kq4", "198.51.100.99"),
]

UA = ("Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/537.36 "
      "(KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36")


def headers(customer: int) -> dict:
    token, ip = CUSTOMERS[customer]
    trace_id, parent_span = uuid.uuid4().hex, secrets.token_hex(8)
    return {
        "Authorization": f"Bearer {token}",
        "Cookie": f"session={token[-6:]}{secrets.token_hex(12)}; _ga=GA1.2.{secrets.randbelow(10**9)}.1732791000; locale=en-US",
        "User-Agent": UA,
        "Accept": "application/json",
        "Accept-Language": "en-US,en;q=0.9",
        "X-Forwarded-For": f"{ip}, 10.12.0.4",
        "X-Forwarded-Proto": "https",
        "X-Request-ID": str(uuid.uuid4()),
        "X-Api-Key": "pk_live_4eC39HqLyjWDarjtT1zdp7dc",
        "sentry-trace": f"{trace_id}-{parent_span}-0",
        "baggage": f"sentry-trace_id={trace_id},sentry-environment=prod,sentry-release=web-frontend%403.0.1,"
                   f"sentry-public_key=0123456789abcdef0123456789abcdef,sentry-sample_rate=0,sentry-sampled=false",
    }


def card(number: str) -> dict:
    return {"card_number": number, "exp_month": 11, "exp_year": 2027, "cvc": "314"}


def main() -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    sentry_sdk.init(
        dsn=DSN,
        transport=_capture.CaptureTransport,
        # auto-enabling is off so that only what this service uses is reported (the environment
        # that generates the samples has flask, boto3, ... installed); FastAPI needs Starlette then.
        integrations=[StarletteIntegration(), FastApiIntegration(),
                      LoggingIntegration(level=None, event_level="ERROR")],
        auto_enabling_integrations=False,
        environment="prod",
        release="payments-service@1.2.4",
        server_name="payments-api-7c9d5f6b8-qx4lm",
        send_default_pii=True,
        traces_sample_rate=0,
    )
    from starlette.testclient import TestClient

    from payments.api import app

    client = TestClient(app, base_url="https://api.payments.example.com", raise_server_exceptions=False)

    def call(kind, customer, method, path, **kw):
        _capture.KIND = kind
        response = client.request(method, path, headers=headers(customer), **kw)
        print(f"{kind:9} {method} {path} -> {response.status_code}")
        return response

    # 1. Request crashes (unhandled exceptions caught by the FastAPI integration).
    call("healthy", 0, "GET", "/health")
    for customer in (0, 1, 2):
        call("fastapi", customer, "GET", "/error")
    call("healthy", 2, "POST", "/payments/pay_3QmZ8cK1/capture", json={"amount": "120.00"})
    for customer, payment_id in ((0, "pay_3Qn0Yd7T"), (3, "pay_3Qn4Rr2W"), (1, "pay_3Qp1Hc9E")):
        call("fastapi", customer, "POST", f"/payments/{payment_id}/capture", json={"amount": "15.00"},
             params={"expand": "order"})
    for customer, payment_id, amount in ((4, "pay_3Qr7Lx5N", "95.00"), (2, "pay_3Qs2Vb8P", "40.00")):
        call("fastapi", customer, "POST", f"/payments/{payment_id}/capture", json={"amount": amount})

    # 2. logger.error with parameters (one template) and logger.exception inside an except.
    declines = [(0, "ord_104390", "4000000000009995", "42.00"), (3, "ord_104402", "4000000000000002", "18.50"),
                (1, "ord_104415", "4000000000009987", "230.00"), (4, "ord_104433", "4000000000000069", "9.99")]
    for customer, order_id, number, amount in declines:
        call("logging", customer, "POST", f"/orders/{order_id}/authorize",
             json={"amount": amount, "card": card(number)})
    for customer, order_id, reference in ((2, "ord_104120", "ch_3Qk9Tq4Ja91"), (4, "ord_104187", "ch_3Ql2Mn8Ra91")):
        call("logging", customer, "POST", f"/orders/{order_id}/refund",
             json={"gateway_reference": reference, "amount": "25.00"})

    # 3. Business errors sent by hand: PaymentDeclined and a fraud-rule message.
    for customer, order_id, number in ((1, "ord_104451", "4000000000009995"), (3, "ord_104466", "4000000000000002"),
                                       (0, "ord_104470", "4000000000009995")):
        call("business", customer, "POST", f"/orders/{order_id}/checkout",
             json={"amount": "64.00", "card": card(number)})
    call("healthy", 2, "POST", "/orders/ord_104480/checkout", json={"amount": "12.00", "card": card("4242424242424242")})
    for customer, order_id, body in ((4, "ord_104488", {"amount": "7450.00", "card": card("4242424242424242")}),
                                     (1, "ord_104493", {"amount": "89.00", "card": card("4242424242424242"),
                                                        "shipping_country": "KP"})):
        call("business", customer, "POST", f"/orders/{order_id}/checkout", json=body)

    sentry_sdk.flush()


if __name__ == "__main__":
    main()
