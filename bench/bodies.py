"""Ingest bodies as the real sentry-sdk sends them, for the load runs: distinct event ids, six kinds
of exception with stack traces, log errors and messages, tags, a user, trace context, breadcrumbs.
`--big` pads each event with breadcrumbs to about 50 KB. Written as <u32 length><body> records."""
from __future__ import annotations

import argparse
import gzip
import logging
import random
import struct
from pathlib import Path
from typing import Any

import brotli
import sentry_sdk
from sentry_sdk.transport import Transport

DSN = "http://0123456789abcdef0123456789abcdef@127.0.0.1:1/1"  # bench.toml gives the tracker this key


class Keep(Transport):
    """Collects envelopes instead of sending them, compressed as the SDK would send them."""

    bodies: list[bytes] = []
    encoding = "gzip"

    def capture_envelope(self, envelope: Any) -> None:
        raw = envelope.serialize()
        self.bodies.append(brotli.compress(raw, quality=4) if self.encoding == "br" else gzip.compress(raw, 6))


def failures(i: int) -> None:
    """Six different crashes, each from its own code path (so they group apart)."""
    kind = i % 6
    if kind == 0:
        raise ValueError(f"payment declined: amount {1000 + i} over limit 500")
    if kind == 1:
        int(f"acc-{i}")
    if kind == 2:
        {}[f"user-{i}"]  # noqa: B018
    if kind == 3:
        _ = i / 0
    if kind == 4:
        [][i]  # noqa: B018
    None.upper()  # type: ignore[union-attr]


def build(count: int, big: bool, encoding: str) -> list[bytes]:
    Keep.bodies, Keep.encoding = [], encoding
    sentry_sdk.init(dsn=DSN, transport=Keep, release="payments-service@1.2.4", environment="prod",
                    send_default_pii=True, max_breadcrumbs=200)
    log = logging.getLogger("payments")
    log.propagate = False
    log.addHandler(logging.NullHandler())  # the SDK's logging integration still sees the records
    rng = random.Random(7)
    for i in range(count):
        with sentry_sdk.isolation_scope() as scope:
            scope.set_tag("service", "payments-api")
            scope.set_tag("feature_flag", rng.choice(["new-limits", "old-limits"]))
            scope.set_user({"id": str(rng.randrange(5000)), "email": f"u{i}@example.org"})
            for k in range(130 if big else 5):
                query = "&".join(f"{c}={rng.getrandbits(64):x}" for c in "abcdefghij") if big else "q=1"
                sentry_sdk.add_breadcrumb(category="http", message=f"GET /api/v1/item/{k}?{query}",
                                          data={"status": 200, "duration_ms": rng.randrange(900)})
            if i % 10 == 9:
                log.error("payment declined by limit for order %s", i)
            else:
                try:
                    failures(i)
                except Exception:
                    sentry_sdk.capture_exception()
    sentry_sdk.flush()
    sentry_sdk.get_client().close()
    return list(Keep.bodies)


def build_traces(count: int, encoding: str) -> list[bytes]:
    """`count` transactions as the SDK sends them with tracing on (a root span and three child spans),
    each with two `sentry_sdk.logger` lines in its trace: transaction envelopes, and log envelopes of
    up to 100 lines as the SDK's log batcher writes them."""
    Keep.bodies, Keep.encoding = [], encoding
    sentry_sdk.init(dsn=DSN, transport=Keep, release="payments-service@1.2.4", environment="prod",
                    traces_sample_rate=1.0, enable_logs=True)
    for i in range(count):
        with sentry_sdk.start_transaction(op="http.server", name=f"/orders/{{oid}}/{['pay', 'ship', 'refund'][i % 3]}"):
            sentry_sdk.logger.info("order {oid} received", oid=i)
            for query in ("SELECT * FROM orders WHERE id = %s", "UPDATE ledger SET paid = 1 WHERE order_id = %s",
                          "INSERT INTO events (order_id, kind) VALUES (%s, 'paid')"):
                with sentry_sdk.start_span(op="db.query", name=query):
                    pass
            sentry_sdk.logger.warning("order {oid} paid late: {ms} ms", oid=i, ms=800 + i % 200)
    sentry_sdk.flush()
    sentry_sdk.get_client().close()
    return list(Keep.bodies)


def build_mix(count: int, encoding: str) -> list[bytes]:
    """`count` requests of a traced service, as the SDK sends them: each an error event in its trace, a
    transaction with ten spans and an envelope of its three log lines (the log batcher flushed at the
    request's end), in that order, so a round-robin load posts the mix whole."""
    Keep.bodies, Keep.encoding = [], encoding
    sentry_sdk.init(dsn=DSN, transport=Keep, release="payments-service@1.2.4", environment="prod",
                    send_default_pii=True, traces_sample_rate=1.0, enable_logs=True)
    rng = random.Random(11)
    for i in range(count):
        with sentry_sdk.isolation_scope() as scope:
            scope.set_tag("service", "payments-api")
            scope.set_user({"id": str(rng.randrange(5000)), "email": f"u{i}@example.org"})
            with sentry_sdk.start_transaction(op="http.server", name=f"/orders/{{oid}}/{['pay', 'ship'][i % 2]}"):
                sentry_sdk.logger.info("order {oid} received", oid=i)
                for n in range(10):
                    with sentry_sdk.start_span(op="db.query", name=f"SELECT * FROM orders_{n % 4} WHERE id = %s"):
                        pass
                sentry_sdk.logger.warning("order {oid} slow: {ms} ms", oid=i, ms=800 + i % 200)
                try:
                    failures(i)
                except Exception:
                    sentry_sdk.logger.error("order {oid} failed", oid=i)
                    sentry_sdk.capture_exception()
        sentry_sdk.get_client().log_batcher.flush()  # type: ignore[union-attr]
    sentry_sdk.flush()
    sentry_sdk.get_client().close()
    return list(Keep.bodies)


def write(path: Path, bodies: list[bytes]) -> None:
    with path.open("wb") as f:
        for body in bodies:
            f.write(struct.pack("<I", len(body)) + body)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("out", type=Path)
    parser.add_argument("count", type=int)
    parser.add_argument("--big", action="store_true")
    parser.add_argument("--encoding", choices=["gzip", "br"], default="gzip")
    args = parser.parse_args()
    built = build(args.count, args.big, args.encoding)
    write(args.out, built)
    sizes = sorted(len(b) for b in built)
    print(f"{len(built)} bodies, median {sizes[len(sizes) // 2]} bytes ({args.encoding})")
