"""orders-consumer: reads order events from Kafka and reserves stock.

There is no broker here, so the consumer loop is fed by a scripted poll() that hands out
messages shaped like confluent_kafka.Message; everything after poll() is the real code path.
Run by sample_events/generate.py (python -m orders_consumer.consumer, with SAMPLE_EVENTS_OUT set).
"""

import json
import logging
from dataclasses import dataclass
from decimal import Decimal

import sentry_sdk
from sentry_sdk.integrations.logging import LoggingIntegration

import _capture

DSN = "http://0123456789abcdef0123456789abcdef@127.0.0.1:8000/1"
TOPIC = "orders.v1"
GROUP = "orders-consumer"

logger = logging.getLogger("orders_consumer")


class ProcessingError(Exception):
    """A message could not be processed and was sent to the dead-letter topic."""


class InvalidOrderEvent(ProcessingError):
    pass


@dataclass
class Message:
    _topic: str
    _partition: int
    _offset: int
    _key: bytes
    _value: bytes

    def topic(self): return self._topic
    def partition(self): return self._partition
    def offset(self): return self._offset
    def key(self): return self._key
    def value(self): return self._value

    def __repr__(self):
        return f"<Message {self._topic}[{self._partition}]@{self._offset} key={self._key!r} {len(self._value)}B>"


@dataclass
class Order:
    order_id: str
    customer_id: str
    lines: list
    total: Decimal


STOCK = {"SKU-1042": 40, "SKU-2210": 3, "SKU-3307": 120}


def decode_event(raw: bytes) -> dict:
    try:
        return json.loads(raw)
    except json.JSONDecodeError as exc:
        raise ProcessingError("could not decode order event") from exc


def build_order(event: dict) -> Order:
    try:
        lines = [(line["sku"], int(line["qty"])) for line in event["lines"]]
        return Order(order_id=event["order_id"], customer_id=event["customer"]["id"], lines=lines,
                     total=Decimal(event["total"]))
    except KeyError as exc:
        raise InvalidOrderEvent("order event is missing a required field") from exc


def reserve_stock(order: Order) -> None:
    for sku, qty in order.lines:
        STOCK[sku] = STOCK.get(sku, 0) - qty
    sentry_sdk.add_breadcrumb(category="stock", message=f"reserved stock for {order.order_id}",
                              data={"lines": len(order.lines)})


def handle_message(msg: Message) -> None:
    event = decode_event(msg.value())
    order = build_order(event)
    reserve_stock(order)


def dead_letter(msg: Message, error: Exception) -> None:
    sentry_sdk.add_breadcrumb(category="kafka", message=f"sent to {TOPIC}.dlq", level="warning",
                              data={"offset": msg.offset(), "error": type(error).__name__})


def good(order_id: str, customer: str, sku: str, qty: int, total: str) -> bytes:
    return json.dumps({"type": "order.created", "order_id": order_id, "customer": {"id": customer},
                       "lines": [{"sku": sku, "qty": qty}], "total": total, "currency": "EUR"}).encode()


def scripted_poll():
    """What the broker delivered during the incident (partitions 0-5 of orders.v1)."""
    batch = [
        (2, 88121, b"ord_104501", good("ord_104501", "cus_4410", "SKU-1042", 1, "19.90")),
        (2, 88122, b"ord_104512", b'{"type": "order.created", "order_id": "ord_104512", "customer": {"id": "cus_88'),
        (4, 90317, b"ord_104515", good("ord_104515", "cus_1207", "SKU-3307", 2, "44.00")),
        (4, 90318, b"ord_104530", b"{'type': 'order.created', 'order_id': 'ord_104530', 'total': '12.00'}"),
        (0, 77604, b"ord_104533", json.dumps({"type": "order.created", "order_id": "ord_104533",
                                               "lines": [{"sku": "SKU-2210", "qty": 1}], "total": "89.00"}).encode()),
        (1, 81290, b"ord_104537", good("ord_104537", "cus_3391", "SKU-1042", 3, "59.70")),
        (5, 93002, b"ord_104540", b""),
        # a producer already on the v2 schema (flat customer_id)
        (0, 77605, b"ord_104548", json.dumps({"type": "order.created", "order_id": "ord_104548",
                                               "customer_id": "cus_5120", "lines": [{"sku": "SKU-1042", "qty": 1}],
                                               "total": "15.50"}).encode()),
    ]
    for partition, offset, key, value in batch:
        yield Message(TOPIC, partition, offset, key, value)


def consume() -> None:
    for msg in scripted_poll():
        with sentry_sdk.isolation_scope() as scope:
            scope.set_transaction_name(f"consume {msg.topic()}")
            scope.set_tag("service", "orders-consumer")
            scope.set_tag("kafka.topic", msg.topic())
            scope.set_tag("kafka.partition", str(msg.partition()))
            scope.set_tag("kafka.consumer_group", GROUP)
            scope.set_extra("offset", msg.offset())
            scope.set_extra("message_key", msg.key().decode())
            scope.add_breadcrumb(category="kafka", message=f"received {msg.topic()}[{msg.partition()}]",
                                 data={"offset": msg.offset(), "key": msg.key().decode(), "bytes": len(msg.value())})
            try:
                handle_message(msg)
            except ProcessingError as exc:
                if not isinstance(exc, InvalidOrderEvent):
                    scope.add_attachment(bytes=msg.value(), filename="message.bin",
                                         content_type="application/octet-stream")
                dead_letter(msg, exc)
                sentry_sdk.capture_exception(exc)
                logger.warning("offset %d sent to dead-letter topic", msg.offset())
            else:
                logger.info("processed offset %d", msg.offset())


def main() -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    sentry_sdk.init(
        dsn=DSN,
        transport=_capture.CaptureTransport,
        integrations=[LoggingIntegration(level=logging.INFO, event_level="ERROR")],
        auto_enabling_integrations=False,
        environment="prod",
        release="orders-consumer@0.9.0",
        server_name="orders-consumer-84c6f7d9b-7hj2k",
        traces_sample_rate=0,
    )
    _capture.KIND = "kafka"
    consume()
    sentry_sdk.flush()


if __name__ == "__main__":
    main()
