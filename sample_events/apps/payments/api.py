"""payments-service HTTP API (FastAPI)."""

import logging
import socket
from decimal import Decimal

import sentry_sdk
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel
from sentry_sdk.feature_flags import add_feature_flag

from payments import service
from payments.gateway import AcquirerClient, PaymentDeclined

logger = logging.getLogger("payments.api")

app = FastAPI(title="payments-api", version="1.2.4")

# Session tokens -> customers (stand-in for the auth service).
SESSIONS = {
    "eyJhbGciOiJIUzI1NiJ9.c2Vzc2lvbi0xMDQ4Mg.k3Jd8s": {"id": "10482", "email": "maria.gonzalez@example.com"},
    "eyJhbGciOiJIUzI1NiJ9.c2Vzc2lvbi0xMTc3Mw.Q9x0aa": {"id": "11773", "email": "j.okafor@example.net"},
    "eyJhbGciOiJIUzI1NiJ9.c2Vzc2lvbi0xMjAwNQ.pL2mZ1": {"id": "12005", "email": "lena.fischer@example.de"},
    "eyJhbGciOiJIUzI1NiJ9.c2Vzc2lvbi0xMzMxOA.Vv7rTe": {"id": "13318", "email": "tom.nguyen@example.com"},
    "eyJhbGciOiJIUzI1NiJ9.c2Vzc2lvbi0xNDA5MQ.yy1Kq4": {"id": "14091", "email": "priya.shah@example.org"},
}

ROLLOUT_CHECKOUT_V2 = {"10482", "12005", "14091"}


def _unresponsive_acquirer() -> tuple[str, int]:
    """The staging acquirer accepts connections and then never answers (it is down)."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(16)
    _unresponsive_acquirer.sock = sock  # keep it open
    return sock.getsockname()


gateway = AcquirerClient(*_unresponsive_acquirer(), api_key="sk_live_51Hx9fLq2eZvKYlo2C8aRb3d", timeout=0.3)


@app.middleware("http")
async def request_context(request: Request, call_next):
    token = (request.headers.get("authorization") or "").removeprefix("Bearer ").strip()
    customer = SESSIONS.get(token)
    forwarded = request.headers.get("x-forwarded-for", "")
    client_ip = forwarded.split(",")[0].strip() or (request.client.host if request.client else None)
    sentry_sdk.set_tag("service", "payments-api")
    sentry_sdk.set_tag("trace_id", (sentry_sdk.get_traceparent() or "").split("-")[0])
    if customer:
        sentry_sdk.set_user({"id": customer["id"], "email": customer["email"], "ip_address": client_ip})
        sentry_sdk.set_tag("user_id", customer["id"])
        checkout_v2 = customer["id"] in ROLLOUT_CHECKOUT_V2
        add_feature_flag("checkout-v2", checkout_v2)
        sentry_sdk.set_tag("feature.checkout_v2", str(checkout_v2).lower())
        request.state.customer = customer
    return await call_next(request)


class CaptureBody(BaseModel):
    amount: str
    currency: str = "EUR"


class CardBody(BaseModel):
    card_number: str
    exp_month: int
    exp_year: int
    cvc: str


class CheckoutBody(BaseModel):
    amount: str
    currency: str = "EUR"
    card: CardBody
    shipping_country: str = "DE"


class RefundBody(BaseModel):
    gateway_reference: str
    amount: str
    reason: str = "requested_by_customer"


@app.get("/health")
async def health():
    return {"ok": True}


@app.get("/error")
async def trigger_error():
    division_by_zero = 1 / 0
    return {"result": division_by_zero}


@app.post("/payments/{payment_id}/capture")
def capture(payment_id: str, body: CaptureBody, request: Request):
    idempotency_key = request.headers.get("idempotency-key", "")
    return service.capture_payment(payment_id, body.amount, idempotency_key)


@app.post("/orders/{order_id}/authorize")
def authorize(order_id: str, body: CheckoutBody):
    amount = service.parse_amount(body.amount)
    result = gateway.authorize(order_id, body.card.card_number, amount, body.currency)
    if not result.approved:
        logger.error("payment declined for order %s: %s", order_id, result.reason)
        return JSONResponse({"status": "declined", "decline_code": result.decline_code}, status_code=402)
    return {"status": "authorized", "gateway_reference": result.gateway_reference}


@app.post("/orders/{order_id}/checkout")
def checkout(order_id: str, body: CheckoutBody, request: Request):
    customer = getattr(request.state, "customer", None) or {}
    amount = service.parse_amount(body.amount)
    if body.shipping_country in {"KP", "IR"} or amount >= Decimal("5000"):
        sentry_sdk.capture_message("Checkout blocked by fraud rules", level="warning", tags={
            "service": "payments-api", "env": "prod", "user_id": customer.get("id"),
            "fraud.rule": "high_risk_country" if body.shipping_country in {"KP", "IR"} else "amount_limit",
        }, extras={"order_id": order_id, "amount": str(amount), "shipping_country": body.shipping_country})
        return JSONResponse({"status": "blocked"}, status_code=403)
    try:
        reference = gateway.charge(order_id, body.card.card_number, amount, body.currency)
    except PaymentDeclined as exc:
        sentry_sdk.capture_exception(exc, tags={
            "service": "payments-api", "env": "prod", "user_id": customer.get("id"),
            "decline_code": exc.reason,
        }, extras={"order_id": order_id, "amount": str(amount), "currency": body.currency})
        return JSONResponse({"status": "declined", "reason": exc.reason}, status_code=402)
    return {"status": "paid", "gateway_reference": reference}


@app.post("/orders/{order_id}/refund")
def refund(order_id: str, body: RefundBody):
    result = service.refund_order(gateway, order_id, body.gateway_reference, service.parse_amount(body.amount))
    if result is None:
        return JSONResponse({"status": "refund_pending"}, status_code=202)
    return result
