"""The cheaper transaction and log work of issue 22 gives the same rows: a transaction's kept part is
scrubbed exactly when it holds a secret, and timestamps parse as before whether or not a string looks
like a date."""
from __future__ import annotations

import copy
import marshal
import time
import uuid
from typing import Any

import pytest
import zstandard

import tracker


def transaction(span_data: dict[str, Any], description: str = "SELECT * FROM orders WHERE id = %s") -> dict[str, Any]:
    now = time.time()
    trace_id, root = uuid.uuid4().hex, uuid.uuid4().hex[:16]
    return {"type": "transaction", "transaction": "/orders", "start_timestamp": now - 1, "timestamp": now,
            "contexts": {"trace": {"trace_id": trace_id, "span_id": root, "op": "http.server", "status": "ok"}},
            "tags": {"service": "shop"},
            "spans": [{"span_id": uuid.uuid4().hex[:16], "parent_span_id": root, "op": "db.query",
                       "description": description, "start_timestamp": now - 0.5, "timestamp": now - 0.4,
                       "data": span_data}]}


def kept_of(row: dict[str, Any]) -> dict[str, Any]:
    return tracker.json_loads(zstandard.ZstdDecompressor().decompress(row["payload"]))


def reference_kept(raw: dict[str, Any], policy: tracker.ScrubPolicy) -> dict[str, Any]:
    """The kept part as it was built before: scrub_event over it whatever its bytes show."""
    trace = raw["contexts"]["trace"]
    kept = {"trace": {"origin": trace.get("origin"), "data": {}},
            "spans": [tracker.slim_span(span) for span in raw["spans"]],
            "measurements": {}, "tags": tracker.normalize_tags(raw.get("tags"))}
    tracker.scrub_event(kept, policy)
    return kept


@pytest.mark.parametrize("data, secret", [
    ({"db.system": "sqlite"}, None),
    ({"password": "hunter2-hunter2"}, "hunter2-hunter2"),
    ({"card": "4111 1111 1111 1111"}, "4111 1111 1111 1111"),
    ({"url": "https://bob:s3cret-pw@db.example.org/orders"}, "s3cret-pw"),
])
def test_transaction_kept_part_scrubbed_as_before(data: dict[str, Any], secret: str | None) -> None:
    policy = tracker.parsed_scrub_policy("{}")
    raw = transaction(data)
    _, row = tracker.transaction_parts(copy.deepcopy(raw), 1, time.time(), policy)
    assert row is not None
    kept = kept_of(row)
    assert kept == tracker.json_loads(tracker.json_dumps(reference_kept(raw, policy)))
    if secret:
        assert secret not in tracker.json_dumps(kept).decode() and "_meta" in kept
    else:
        assert "_meta" not in kept and kept["spans"][0]["data"] == data


def test_transaction_kept_part_not_scrubbed_when_the_project_turns_scrubbing_off() -> None:
    policy = tracker.parsed_scrub_policy('{"enabled": false}')
    _, row = tracker.transaction_parts(transaction({"password": "hunter2-hunter2"}), 1, time.time(), policy)
    assert kept_of(row)["spans"][0]["data"] == {"password": "hunter2-hunter2"}


@pytest.mark.parametrize("value, expected", [
    ("2026-12-06T06:49:47.5Z", 1796539787.5), ("2026-12-06T06:49:47.5+01:00", 1796536187.5),
    ("2026-12-06T06:49:47", 1796539787.0), (" 2026-12-06T06:49:47z ", 1796539787.0),
    ("1796539787.25", 1796539787.25), (" 1796539787 ", 1796539787.0), ("1e9", 1e9), ("nan", None), ("inf", None),
    ("2026-12-06", 1796515200.0), ("12:00", None), ("1:5", None), ("garbage", None), ("", None), ("12Z", None),
    ("Z", None), ("2026-12-06T06:49:47.5+01:00Z", None),
])
def test_timestamps_parse_as_before(value: str, expected: float | None) -> None:
    assert tracker.parse_timestamp(value) == expected


@pytest.mark.parametrize("kind, payload", [
    ("transaction", transaction({"password": "hunter2-hunter2"})),
    ("span", {"version": 2, "items": [{"trace_id": uuid.uuid4().hex, "span_id": "a" * 16, "is_segment": True,
                                       "name": "GET /", "start_timestamp": time.time() - 1, "end_timestamp": time.time(),
                                       "attributes": {"sentry.release": {"value": "1.0", "type": "string"}}},
                                      {"span_id": "b" * 16, "name": "orphan"}]}),
    ("log", {"version": 2, "items": [{"timestamp": time.time(), "level": "info", "body": "token=abc123456789",
                                      "attributes": {"api_key": {"value": "k-123456", "type": "string"}}},
                                     {"body": "no timestamp"}]}),
])
def test_items_prepared_in_a_worker_come_back_whole(kind: str, payload: dict[str, Any]) -> None:
    """A transaction, span or log item crosses the worker pipe (marshal) both ways and comes back as
    the server would have prepared it itself."""
    job = tracker.PrepareJob(tracker.json_dumps(payload), 1, None, time.time(), "", "", "", "{}", None, kind=kind)
    sent = tracker.PrepareJob(*marshal.loads(marshal.dumps(tracker.fields_of(job))))
    here = tracker.prepare_job(job)
    there = tracker.PreparedItem(*marshal.loads(marshal.dumps(tracker.fields_of(tracker.prepare_job(sent)))))
    assert isinstance(here, tracker.PreparedItem) and here.rows
    def same(row: Any) -> Any:  # but for the id a transaction without one is given
        return row if isinstance(row, tuple) else {k: v for k, v in row.items() if k != "event_id"}
    assert len(here.rows) == len(there.rows) and list(map(same, here.rows)) == list(map(same, there.rows))
    assert (here.health, here.refused, here.outcome) == (there.health, there.refused, there.outcome)
    assert [tracker.HealthUpdate(*fields).kind for fields in there.health] == (["transaction"] if kind != "log" else [])
    assert "hunter2" not in repr(there.rows) and "k-123456" not in repr(there.rows)
    assert there.outcome == {"transaction": "stored", "span": "stored as 1 transactions; 1 spans without their "
                             "segment not kept", "log": "stored 1 logs, dropped 1"}[kind]


def log_line(body: str, **attributes: Any) -> dict[str, Any]:
    return {"timestamp": time.time(), "level": "info", "body": body, "trace_id": uuid.uuid4().hex,
            "attributes": {"sentry.sdk.name": {"value": "sentry.python", "type": "string"},
                           **{k: {"value": v, "type": "string" if isinstance(v, str) else "integer"}
                              for k, v in attributes.items()}}}


@pytest.mark.parametrize("secret_line", [
    None,
    log_line("login with password=hunter2-hunter2"),
    log_line("charged", card="4111 1111 1111 1111"),
    log_line("called", api_key="abcdef0123456789"),
    log_line("fetched", url="https://bob:s3cret-pw@db.example.org/orders"),
    log_line("header", auth_header="Bearer eyJhbGciOiJIUzI1NiJ9"),
])
def test_log_lines_scrubbed_as_before(secret_line: dict[str, Any] | None) -> None:
    """log_rows tests a log item's values and distinct attribute names once, not each line's JSON:
    its rows are those of scrubbing every line whatever its bytes show."""
    policy = tracker.parsed_scrub_policy("{}")
    items = [log_line(f"order {n} paid", order_id=n) for n in range(5)] + ([secret_line] if secret_line else [])
    rows, refused = tracker.log_rows({"items": copy.deepcopy(items)}, 1, time.time(), policy)
    lines = [tracker.parse_log(item, time.time())["scrubbed"] for item in copy.deepcopy(items)]
    tracker.scrub_event(dict(zip(map(str, range(len(lines))), lines)), policy)
    assert refused == 0
    assert [(row[4], row[11]) for row in rows] == [(line["body"], tracker.json_dumps(line["attributes"]).decode())
                                                  for line in lines]
    unscrubbed = [tracker.parse_log(item, time.time())["scrubbed"] for item in copy.deepcopy(items)]
    changed = [row for row, line in zip(rows, unscrubbed)
               if (row[4], row[11]) != (line["body"], tracker.json_dumps(line["attributes"]).decode())]
    assert len(changed) == (1 if secret_line else 0)
