"""Payment capture / refund logic for payments-service."""

import logging
from decimal import Decimal, InvalidOperation

import sentry_sdk

from payments.gateway import AcquirerClient, GatewayError

logger = logging.getLogger("payments.service")

# Stand-in for the authorizations table. Rows migrated from the old billing system
# ("legacy": True) were written before gateway_reference existed.
AUTHORIZATIONS = {
    "pay_3QmZ8cK1": {"order_id": "ord_104233", "amount": "120.00", "currency": "EUR",
                     "gateway_reference": "ch_3QmZ8cK1a91", "legacy": False},
    "pay_3Qn0Yd7T": {"order_id": "ord_104251", "amount": "59.90", "currency": "EUR",
                     "legacy": True, "legacy_charge_id": "L-998812"},
    "pay_3Qn4Rr2W": {"order_id": "ord_104277", "amount": "15.00", "currency": "EUR",
                     "legacy": True, "legacy_charge_id": "L-998840"},
    "pay_3Qp1Hc9E": {"order_id": "ord_104302", "amount": "249.00", "currency": "EUR",
                     "legacy": True, "legacy_charge_id": "L-998871"},
    "pay_3Qr7Lx5N": {"order_id": "ord_104318", "amount": "80.00", "currency": "EUR",
                     "gateway_reference": "ch_3Qr7Lx5Na91", "legacy": False},
    "pay_3Qs2Vb8P": {"order_id": "ord_104340", "amount": "34.50", "currency": "EUR",
                     "gateway_reference": "ch_3Qs2Vb8Pa91", "legacy": False},
}


def parse_amount(raw) -> Decimal:
    try:
        amount = Decimal(str(raw))
    except InvalidOperation:
        raise ValueError(f"invalid amount: {raw!r}")
    return amount.quantize(Decimal("0.01"))


def load_authorization(payment_id: str) -> dict:
    sentry_sdk.add_breadcrumb(category="db.query", message="SELECT * FROM authorizations WHERE id = %s",
                              data={"params": [payment_id]})
    return AUTHORIZATIONS[payment_id]


def build_capture_request(payment_id: str, authorization: dict, amount: Decimal) -> dict:
    authorized = Decimal(authorization["amount"])
    if amount > authorized:
        raise ValueError(f"capture amount {amount} exceeds authorized amount {authorized}")
    return {
        "charge": authorization["gateway_reference"],
        "amount": str(amount),
        "currency": authorization["currency"],
        "metadata": {"payment_id": payment_id, "order_id": authorization["order_id"]},
    }


def capture_payment(payment_id: str, raw_amount, idempotency_key: str) -> dict:
    amount = parse_amount(raw_amount)
    authorization = load_authorization(payment_id)
    request = build_capture_request(payment_id, authorization, amount)
    logger.info("capturing %s for %s", amount, payment_id)
    return {"status": "captured", "payment_id": payment_id, "amount": request["amount"],
            "idempotency_key": idempotency_key}


def refund_order(gateway: AcquirerClient, order_id: str, gateway_reference: str, amount: Decimal) -> dict | None:
    try:
        return gateway.refund(gateway_reference, amount)
    except GatewayError:
        logger.exception("refund failed for order %s", order_id)
        return None
