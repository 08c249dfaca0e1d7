"""Transactions and log items as stored (issue 19): bounded per project by count and age, rate
limited as `log_item`, scrubbed, hostile shapes answered without a 500; both SDKs' log shapes; the
logs search and Sentry's logs dataset and trace endpoint. The three real services are in
test_trace_services.py, the browser SDK's logs in test_js_traces_logs.py."""
from __future__ import annotations

import asyncio
import concurrent.futures
import json
import sqlite3
import threading
import time
import uuid
from typing import Any

import pytest
import zstandard
from conftest import Configure, Project, TrackerServer, envelope, wait_for

import tracker as tracker_module

KEY, LIMITED_KEY, UNDERSTATED_KEY = "c" * 32, "d" * 32, "e" * 32
WINDOW = 86400  # one window for the whole module (it ends at midnight UTC)
CONFIG = f"""
[traces]
max_transactions = 40
max_logs = 300

[[projects]]
name = "bounded"
slug = "bounded"
dsn_key = "{KEY}"

[[projects]]
name = "logflood"
slug = "logflood"
dsn_key = "{LIMITED_KEY}"
rate_limit = 150

[[projects]]
name = "understated"
slug = "understated"
dsn_key = "{UNDERSTATED_KEY}"
rate_limit = 50

[limits]
window = {WINDOW}
"""


@pytest.fixture(scope="module")
def server(configured: Configure) -> TrackerServer:
    return configured("traces", CONFIG)


def transaction(trace_id: str, *, spans: int = 1, name: str = "/orders/{oid}", duration: float = 0.2,
                span_id: str | None = None, parent: str | None = None) -> dict[str, Any]:
    """A transaction as the Python SDK sends it (RFC 3339 times, contexts.trace the root span)."""
    end = time.time()
    root = span_id or uuid.uuid4().hex[:16]
    iso = lambda t: time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(t)) + f"{t % 1:.6f}"[1:] + "Z"  # noqa: E731
    return {"type": "transaction", "event_id": uuid.uuid4().hex, "transaction": name,
            "start_timestamp": iso(end - duration), "timestamp": iso(end), "release": "shop@1.2.3",
            "contexts": {"trace": {"trace_id": trace_id, "span_id": root, "parent_span_id": parent,
                                   "op": "http.server", "status": "ok"}},
            "spans": [{"trace_id": trace_id, "span_id": uuid.uuid4().hex[:16], "parent_span_id": root, "op": "db.query",
                       "description": f"SELECT {n}", "start_timestamp": end - duration + 0.01, "timestamp": end - 0.01}
                      for n in range(spans)]}


def logs(*items: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    return ({"type": "log", "item_count": len(items), "content_type": "application/vnd.sentry.items.log+json"},
            {"version": 2, "items": list(items)})


def line(body: str, trace_id: str | None = None, level: str = "info", **attributes: Any) -> dict[str, Any]:
    """A log line as the Python SDK sends it (severity only as an attribute, span_id on top)."""
    return {"timestamp": time.time(), "level": level, "body": body, "trace_id": trace_id or uuid.uuid4().hex,
            "attributes": {k.replace("_", "."): {"value": v, "type": "string"} for k, v in attributes.items()}}


def count(server: TrackerServer, table: str, project: Project) -> int:
    with sqlite3.connect(server.db) as conn:
        return conn.execute(f"SELECT count(*) FROM {table} WHERE project_id = ?", (project.id,)).fetchone()[0]


def log_api(server: TrackerServer, **params: Any) -> Any:
    r = server.api("GET", "organizations/tracker/events/", params={"dataset": "logs", **params})
    assert r.status_code == 200, r.text
    return r.json()


def test_transactions_and_logs_stay_within_their_caps(server: TrackerServer) -> None:
    """400 transactions and 1,500 log lines into caps of 40 and 300: each table holds the newest, within
    a trim step (TRIM_EVERY rows, plus one log item) of its cap; the counts in release health are whole."""
    project = server.config_project("bounded", KEY)
    trace_id = uuid.uuid4().hex
    for n in range(0, 400, 20):
        body = envelope(None, *[({"type": "transaction"}, transaction(trace_id, name=f"/n/{n + i}")) for i in range(20)])
        assert server.send_envelope(project, body=body).status_code == 200
    for n in range(15):
        r = server.send_envelope(project, logs(*[line(f"line {n * 100 + i}", trace_id) for i in range(100)]))
        assert r.status_code == 200, r.text
    assert 40 <= count(server, "transactions", project) <= 40 + 64
    assert 300 <= count(server, "logs", project) <= 300 + 64 + 100
    newest = log_api(server, project=project.id, per_page=1, field=["message"])["data"]
    assert newest == [{"message": "line 1499"}]
    with sqlite3.connect(server.db) as conn:
        counted = conn.execute("SELECT sum(count) FROM transaction_buckets WHERE project_id = ?", (project.id,)).fetchone()
    assert counted[0] == 400


def test_logs_are_rate_limited_as_log_item(server: TrackerServer) -> None:
    """A project limit of 150 a window: a log item of 100 lines passes, the next is refused with a 429
    naming log_item (what both SDKs check), its lines counted as dropped in stats_v2."""
    project = server.config_project("logflood", LIMITED_KEY)
    assert server.send_envelope(project, logs(*[line(f"ok {i}") for i in range(100)])).status_code == 200
    refused = server.send_envelope(project, logs(*[line(f"over {i}") for i in range(100)]))
    assert refused.status_code == 429, refused.text
    assert refused.headers["x-sentry-rate-limits"].split(":")[1:3] == ["log_item", "project"]
    event = server.send_envelope(project, {"message": "errors still pass", "level": "error"})
    assert event.status_code == 200  # a category of its own

    def dropped() -> int | None:
        r = server.api("GET", "organizations/tracker/stats_v2/", params={
            "field": "sum(quantity)", "groupBy": ["category"], "statsPeriod": "1h", "project": project.id})
        found = {g["by"]["category"]: g["totals"]["sum(quantity)"] for g in r.json()["groups"]}
        return found.get("log_item")
    assert wait_for(dropped, timeout=20) == 100
    assert count(server, "logs", project) == 100


def test_log_lines_beyond_their_header_count_against_the_limit(server: TrackerServer) -> None:
    """The limit is checked against an item's `item_count` before it is read; the lines it turns out
    to hold beyond that count then, and those past the limit are dropped: 20 items claiming one line
    and holding 100 store 20 lines in a limit of 50 (and are told of log_item), where before they stored
    2,000. A client that sends no count at all is not penalised while it is within the limit."""
    project = server.config_project("understated", UNDERSTATED_KEY)
    header, payload = logs(*[line(f"uncounted {i}") for i in range(30)])
    del header["item_count"]
    assert server.send_envelope(project, (header, payload)).status_code == 200
    assert count(server, "logs", project) == 30
    for n in range(20):
        header, payload = logs(*[line(f"understated {n}.{i}") for i in range(100)])
        r = server.send_envelope(project, ({**header, "item_count": 1}, payload))
        assert r.status_code == 200, r.text
        assert r.headers["x-sentry-rate-limits"].split(":")[1:3] == ["log_item", "project"]
    assert count(server, "logs", project) == 50
    over = server.send_envelope(project, logs(line("one more")))
    assert over.status_code == 429, over.text


def test_logs_are_scrubbed_and_both_sdk_shapes_read(tracker: TrackerServer, project: Project) -> None:
    """Attributes get the full scrubbing and bodies the value rules; the JS shape (severity_number on
    top, the span id as an attribute) and the Python one (severity as an attribute, `warning`) both read."""
    trace_id = uuid.uuid4().hex
    js = {"timestamp": time.time(), "level": "warn", "severity_number": 13, "body": "card declined", "trace_id": trace_id,
          "attributes": {"sentry.trace.parent_span_id": {"value": "ab" * 8, "type": "string"},
                         "sentry.sdk.name": {"value": "sentry.javascript.browser", "type": "string"},
                         "order.id": {"value": 7, "type": "integer"}}}
    python = {**line("login with password=hunter2 from api_key=sk_live_abcdefghijklmnop", trace_id, level="warning",
                     user_password="hunter2"), "span_id": "cd" * 8}
    python["attributes"]["sentry.severity_number"] = {"value": 13, "type": "integer"}
    python["attributes"]["sentry.message.template"] = {"value": "charging card 4111 1111 1111 1111 for {user}",
                                                       "type": "string"}
    assert tracker.send_envelope(project, logs(js, python)).status_code == 200
    rows = log_api(tracker, project=project.id, query=f"trace:{trace_id}", sort="timestamp",
                   field=["message", "severity", "severity_number", "trace.parent_span_id", "sdk.name", "order.id",
                          "user.password", "message.template", "sentry.message.template"])["data"]
    assert [(r["severity"], r["severity_number"], r["trace.parent_span_id"]) for r in rows] == \
        [("warn", 13, "ab" * 8), ("warn", 13, "cd" * 8)]
    assert rows[0]["sdk.name"] == "sentry.javascript.browser" and rows[0]["order.id"] == 7
    assert "hunter2" not in json.dumps(rows) and "sk_live_abcdefghijklmnop" not in json.dumps(rows)
    assert rows[1]["user.password"] == "[Filtered]"
    assert "4111" not in json.dumps(rows) and rows[1]["message.template"] == rows[1]["sentry.message.template"]
    assert not log_api(tracker, project=project.id, query='message.template:"*4111*"')["data"]  # nor found by it
    page = tracker.web.get("/logs/", params={"q": f"trace:{trace_id}"}).text
    assert "card declined" in page and "hunter2" not in page


def test_logs_search(tracker: TrackerServer, project: Project) -> None:
    """Level, text, attribute, release, environment, project and trace filters, in the API and on the page."""
    trace_id = uuid.uuid4().hex
    items = [line("slow query: 812 ms", trace_id, level="warn", logger_name="shop.orders", sentry_release="shop@2",
                  sentry_environment="staging"),
             line("order 7 paid", trace_id, logger_name="shop.payments", sentry_release="shop@1"),
             line("disk full", None, level="error", logger_name="shop.orders")]
    assert tracker.send_envelope(project, logs(*items)).status_code == 200

    def messages(query: str) -> list[str]:
        return [r["message"] for r in log_api(tracker, project=project.id, query=query, field=["message"])["data"]]
    assert messages("severity:warn") == ["slow query: 812 ms"] == messages('"slow query"')
    assert sorted(messages("logger.name:shop.orders")) == ["disk full", "slow query: 812 ms"]
    assert messages("release:shop@1") == ["order 7 paid"] and messages("environment:staging") == ["slow query: 812 ms"]
    assert sorted(messages(f"trace:{trace_id}")) == ["order 7 paid", "slow query: 812 ms"]
    by_trace = tracker.api("GET", "organizations/tracker/trace-logs/",
                           params={"traceId": [trace_id, uuid.uuid4().hex], "query": "severity:warn"}).json()
    assert [(r["message"], r["severity"], r["trace"]) for r in by_trace["data"]] == [("slow query: 812 ms", "warn", trace_id)]
    assert set(by_trace["meta"]["fields"]) == {"id", "project.id", "trace", "severity_number", "severity", "timestamp",
                                               "timestamp_precise", "message"}
    for bad in ({}, {"traceId": "x"}, {"traceId": trace_id, "per_page": "0"}):
        assert tracker.api("GET", "organizations/tracker/trace-logs/", params=bad).status_code == 400
    assert messages(f"project:{project.slug} !severity:info severity_number:>=17") == ["disk full"]
    page = tracker.web.get("/logs/", params={"project": project.slug, "level": "error"}).text
    assert "disk full" in page and "order 7 paid" not in page
    live = tracker.web.get("/logs/", params={"project": project.slug, "live": "1"}).text
    assert '<meta http-equiv="refresh" content="5">' in live


def test_the_logs_dataset_lists_any_period_kept(tracker: TrackerServer, project: Project) -> None:
    """Logs are kept 14 days and the dataset is a list, not a series: 14d, 90d and a start/end a year
    apart are answered (they were 400s past 3 days, 5,000 one-minute intervals)."""
    trace_id = uuid.uuid4().hex
    assert tracker.send_envelope(project, logs(line("kept for days", trace_id))).status_code == 200
    year = {"start": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(time.time() - 360 * 86400)),
            "end": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(time.time() + 60))}
    for window in ({"statsPeriod": "14d"}, {"statsPeriod": "90d"}, year):
        rows = log_api(tracker, project=project.id, query=f"trace:{trace_id}", field=["message"], **window)["data"]
        assert rows == [{"message": "kept for days"}], window


def test_the_logs_dataset_takes_projects_as_sentry_does(tracker: TrackerServer, project: Project) -> None:
    """`project` repeated for several, `-1` (what Sentry's own pages send) or none for every project;
    an unknown one is a 400."""
    trace_id, other = uuid.uuid4().hex, tracker.create_project()
    for target in (project, other):
        assert tracker.send_envelope(target, logs(line(f"from {target.slug}", trace_id))).status_code == 200

    def projects(**params: Any) -> list[int]:
        return sorted(r["project.id"] for r in log_api(tracker, query=f"trace:{trace_id}", **params)["data"])
    both = sorted([project.id, other.id])
    assert projects(project="-1") == projects() == projects(project=[project.id, other.id]) == both
    assert projects(project=other.id) == [other.id] and projects(project=project.slug) == [project.id]
    r = tracker.api("GET", "organizations/tracker/events/", params={"dataset": "logs", "project": "999999"})
    assert r.status_code == 400, r.text


def test_the_logs_of_every_project_read_from_the_newest(tmp_path: Any) -> None:
    """The Logs page of all projects (the menu's link; live, every 5 s) reads about the lines it shows
    from logs_by_time, where it read every line of every project before its sort: counted in SQLite's
    virtual machine steps over 20,000 lines, against one project's page, which its own index serves."""
    conn = tracker_module.connect_db(str(tmp_path / "logs.db"))
    tracker_module.migrate(conn)
    conn.executemany("INSERT INTO projects (id, slug, name, platform, next_short_id, created) VALUES (?, ?, ?, '', 1, 0)",
                     [(n, f"p{n}", f"p{n}") for n in range(1, 11)])
    now = time.time()
    conn.executemany("""INSERT INTO logs (project_id, timestamp, level, severity_number, body, release, environment,
                            sdk, attributes, received) VALUES (?, ?, 'info', 9, ?, '', 'prod', '', '{}', ?)""",
                     [(1 + n % 10, now - 20_000 + n, f"line {n}", now) for n in range(20_000)])

    def steps(project_id: int | None, query: str = "") -> int:
        counted = [0]
        conn.set_progress_handler(lambda: counted.__setitem__(0, counted[0] + 1), 100)
        projects = [project_id] if project_id else []
        rows = conn.execute(*tracker_module.logs_sql(query, projects, 0.0, float("inf"), 200, False)).fetchall()
        conn.set_progress_handler(None, 0)
        assert len(rows) == 200 and rows[0]["body"] == ("line 19999" if project_id in (None, 10) else "line 19998")
        return counted[0]
    one_project = steps(9)
    assert steps(None) < 3 * one_project and steps(None, "severity:info") < 3 * one_project


def test_ingest_answers_while_a_long_search_reads(configured: Configure) -> None:
    """Ingest's key, rule and option lookups have a read connection of their own: an envelope with a
    key no one has used yet is answered while a search over 1,000,000 log lines (an attribute no line
    has, so every line is read) still holds the pages' connection. On one shared connection the
    lookup waited for the search to end."""
    server = configured("lookups", "")
    searched = server.create_project()
    with sqlite3.connect(server.db) as conn:
        conn.executemany("""INSERT INTO logs (project_id, timestamp, level, severity_number, body, release, environment,
                                sdk, attributes, received) VALUES (?, ?, 'info', 9, 'x', '', 'prod', '', ?, ?)""",
                         ((searched.id, time.time() - n / 1000, '{"k": "v"}', time.time()) for n in range(1_000_000)))
    with sqlite3.connect(server.db) as conn:  # the lines copied out of the WAL now, not by the envelope's commit
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    warm, fresh = server.create_project(), server.create_project()
    finished: dict[str, float] = {}

    def search() -> None:
        assert server.web.get("/logs/", params={"q": "k:absent"}, timeout=60).status_code == 200
        finished["search"] = time.monotonic()
    assert server.web.get("/logs/", params={"project": fresh.slug}).status_code == 200  # the page and ingest warm,
    assert server.send_envelope(warm, {"message": "first", "level": "error"}).status_code == 200  # not `fresh`'s key
    reader = threading.Thread(target=search)
    reader.start()
    time.sleep(0.1)  # the search under way (it reads for about half a second)
    assert server.send_envelope(fresh, {"message": "while the search reads", "level": "error"}).status_code == 200
    finished["ingest"] = time.monotonic()
    reader.join()
    assert finished["ingest"] < finished["search"]


def test_a_trace_draws_each_span_once_within_its_budget(monkeypatch: pytest.MonkeyPatch) -> None:
    """trace_spans over a hostile trace: 2,000 spans sharing one id and 2,000 children of that id sort
    the children once, not once per copy (4,000,000 entries sorted before); transactions past the
    TRACE_SPAN_LIMIT spans drawn are not decompressed at all (here they could not be)."""
    sorted_entries = [0]

    def counting_sorted(items: Any, **options: Any) -> list[Any]:
        items = list(items)
        sorted_entries[0] += len(items)
        return sorted(items, **options)
    monkeypatch.setattr(tracker_module, "sorted", counting_sorted, raising=False)
    spans = [{"span_id": "ab" * 8, "parent_span_id": "cd" * 8, "start": n, "end": n + 1} for n in range(2000)]
    spans += [{"span_id": f"{n:016x}", "parent_span_id": "ab" * 8, "start": n, "end": n + 1} for n in range(2000)]
    payload = zstandard.ZstdCompressor().compress(json.dumps({"spans": spans}).encode())
    root = {"span_id": "cd" * 8, "parent_span_id": None, "op": "http.server", "name": "/", "status": "ok", "start": 0.0,
            "duration_ms": 5000.0, "spans": 4000}
    beyond = [{**root, "span_id": f"f{n:015x}", "spans": 10, "payload": b"not zstd"} for n in range(3)]
    drawn = tracker_module.trace_spans([{**root, "payload": payload}, {**root, "span_id": "ef" * 8, "payload": payload},
                                        *beyond])
    assert sorted_entries[0] < 20_000
    children = [s for s in drawn if s["parent_span_id"] == "ab" * 8]
    assert len(children) == len({s["span_id"] for s in children}) == 2000
    assert len(drawn) == 5 + 5000  # five root spans, and the budget's 5,000: the first's 4,000, 1,000 of the second's


def test_a_trace_reads_its_errors_payloads_within_a_budget() -> None:
    """trace_view reads each error's stored payload for the span it happened in, up to
    TRACE_PAYLOAD_BYTES in all (a trace of 500 one-MiB events took seconds of the event loop): past
    that, an error is listed without its span, and its payload is not read (here it could not be)."""
    class Store:  # the trace's rows, as the read connection answers them
        async def all(self, sql: str, args: Any = ()) -> list[dict[str, Any]]:
            return errors if "FROM events" in sql else []

    def error(n: int, payload: bytes) -> dict[str, Any]:
        return {"event_id": f"{n:032x}", "issue_id": n, "timestamp": 1000.0 + n, "level": "error", "project_id": 1,
                "payload": payload, "title": f"error {n}", "culprit": "", "short_id": f"P-{n}", "type": "error",
                "project_slug": "p", "project_name": "p"}
    readable = tracker_module.compress_payload({"contexts": {"trace": {"span_id": "ab" * 8}}})
    errors = [error(1, readable), error(2, b"x" * tracker_module.TRACE_PAYLOAD_BYTES), error(3, readable)]
    with concurrent.futures.ThreadPoolExecutor(1) as pool:  # a thread of its own: the suite may run a loop here
        view = pool.submit(asyncio.run, tracker_module.trace_view(Store(), "cd" * 16)).result()
    assert [e["span_id"] for e in view["errors"]] == ["ab" * 8, None, None]


@pytest.mark.parametrize("params", [{"dataset": "spans"}, {"dataset": "logs", "per_page": "0"},
                                    {"dataset": "logs", "per_page": "100000"}, {"dataset": "logs", "query": 'message:"open'},
                                    {"dataset": "logs", "query": "severity:loud"}, {"dataset": "logs", "sort": "body"},
                                    {"dataset": "logs", "project": "x"}, {"dataset": "logs", "statsPeriod": "forever"}])
def test_bad_log_queries_are_400(tracker: TrackerServer, params: dict[str, str]) -> None:
    r = tracker.api("GET", "organizations/tracker/events/", params=params)
    assert r.status_code == 400 and r.json()["detail"], r.text


def test_hostile_items_cost_only_their_bounds(tracker: TrackerServer, project: Project) -> None:
    """Malformed and oversized log and transaction items: dropped alone, never a 500, and what is
    kept is bounded (100 lines an item, 10 items an envelope, 1,000 spans a transaction, 100
    attributes a line, 8 KiB a body)."""
    trace_id = uuid.uuid4().hex
    wide = line("x" * 100_000, trace_id, **{f"a{n}": "v" * 2500 for n in range(300)})  # under max_event
    shapes = [logs(*[line(f"many {n}", trace_id) for n in range(1000)]), logs(wide),
              ({"type": "log"}, b"[1, 2]"), ({"type": "log"}, {"version": 2, "items": "no"}),
              ({"type": "log"}, {"items": [None, 7, {"body": 5}, {"timestamp": "never", "body": "x"}]}),
              ({"type": "transaction"}, b"{not json"), ({"type": "transaction"}, {"contexts": {"trace": []}}),
              ({"type": "transaction"}, transaction(trace_id, spans=3000)),
              ({"type": "span"}, {"version": 2, "items": [{"span_id": [1], "is_segment": True},
                                                          {"span_id": {"a": 1}, "is_segment": True},
                                                          {"span_id": "ab" * 8, "attributes": {"sentry.segment.id": {
                                                              "value": ["ab" * 8], "type": "array"}}}]})]
    for shape in shapes:
        r = tracker.send_envelope(project, shape)
        assert r.status_code == 200, (shape[0], r.text)
    eleven = envelope(None, *[logs(line(f"item {n}", trace_id)) for n in range(11)])
    assert tracker.send_envelope(project, body=eleven).status_code == 200
    with sqlite3.connect(tracker.db) as conn:
        kept = conn.execute("SELECT count(*), max(length(body)), max(length(attributes)) FROM logs WHERE trace_id = ?",
                            (trace_id,)).fetchone()
        spans = conn.execute("SELECT spans FROM transactions WHERE trace_id = ?", (trace_id,)).fetchone()
    assert kept[0] == 100 + 1 + 10 and kept[1] == 8192 and kept[2] < 100 * 2100
    assert spans == (1000,)
    for path in ("/traces/zzz/", f"/traces/{uuid.uuid4().hex}/"):
        assert tracker.web.get(path).status_code == 404
    assert tracker.api("GET", "organizations/tracker/trace/not-a-trace/").status_code == 400
    assert tracker.web.get(f"/traces/{trace_id}/").status_code == 200  # 1,000 spans draw


def test_a_transaction_keeps_a_bounded_and_sane_part(tracker: TrackerServer, project: Project) -> None:
    """What a transaction keeps beside its spans is small, and its clock sane: trace data over 2 KiB is
    left out, of the first 50 measurements the numbers are kept, a start of 1970 becomes its end, and a span
    dated 1970 is not kept (either would stretch the trace's clock and flatten the other spans)."""
    trace_id = uuid.uuid4().hex
    sent = transaction(trace_id, spans=2)
    sent["start_timestamp"] = 0
    sent["spans"][0]["start_timestamp"] = 1.0
    sent["contexts"]["trace"]["data"] = {"blob": "x" * 5000}
    sent["measurements"] = {"fcp": {"value": "fast"}, **{f"m{n}": {"value": n, "unit": "millisecond"} for n in range(60)}}
    assert tracker.send_envelope(project, ({"type": "transaction"}, sent)).status_code == 200
    with sqlite3.connect(tracker.db) as conn:
        duration, spans, payload = conn.execute("SELECT duration_ms, spans, payload FROM transactions WHERE trace_id = ?",
                                                (trace_id,)).fetchone()
    kept = json.loads(zstandard.ZstdDecompressor().decompress(payload))
    assert duration == 0 and spans == 1 and [s["description"] for s in kept["spans"]] == ["SELECT 1"]
    assert kept["trace"]["data"] == {} and len(kept["measurements"]) == 49  # of the first 50, "fcp" is no number
    assert kept["measurements"]["m0"] == {"value": 0, "unit": "millisecond"}


def test_trace_of_errors_without_spans(tracker: TrackerServer, project: Project) -> None:
    """Tracing off: errors still carry contexts.trace, so the trace page joins them with the logs
    (Sentry's trace endpoint lists them as roots), and the issue page says how big the trace is."""
    trace_id, other = uuid.uuid4().hex, tracker.create_project()
    for target, message in ((project, "first failure"), (other, "second failure")):
        tracker.send_event(target, {"message": message, "level": "error",
                                    "contexts": {"trace": {"trace_id": trace_id, "span_id": uuid.uuid4().hex[:16]}}})
    assert tracker.send_envelope(project, logs(line("before the failure", trace_id))).status_code == 200
    roots = tracker.api("GET", f"organizations/tracker/trace/{trace_id}/").json()
    assert sorted(r["title"] for r in roots) == ["first failure", "second failure"]
    assert {r["event_type"] for r in roots} == {"error"}
    [issue] = tracker.issues(project, f"trace:{trace_id}")
    page = tracker.web.get(f"/issues/{issue['id']}/").text
    assert "this trace: 2 errors in 2 services" in page and f'href="/traces/{trace_id}/"' in page
    assert "first failure" in tracker.web.get(f"/traces/{trace_id}/").text


def test_old_transactions_and_logs_leave(configured: Configure) -> None:
    """`[traces] max_age_days`: retention removes older transactions and logs (here a max age of
    about two seconds and a pass every second)."""
    server = configured("traces-age", "[traces]\nmax_age_days = 0.00002\n[retention]\ninterval = 1\n")
    project = server.create_project()
    trace_id = uuid.uuid4().hex
    r = server.send_envelope(project, ({"type": "transaction"}, transaction(trace_id)), logs(line("old", trace_id)))
    assert r.status_code == 200
    assert count(server, "transactions", project) == 1 and count(server, "logs", project) == 1
    wait_for(lambda: count(server, "transactions", project) == 0 and count(server, "logs", project) == 0, timeout=20)


def test_the_cap_counts_again_after_retention(configured: Configure) -> None:
    """The writer keeps each project's count of log lines for the cap (keep_to_cap); retention deletes
    behind it, and the count starts over: after 100 old lines age out, 100 new ones under a cap of 100
    all stay (a count still holding the old lines would have trimmed the new ones away)."""
    server = configured("traces-cap-age", "[traces]\nmax_logs = 100\nmax_age_days = 1\n[retention]\ninterval = 1\n")
    project = server.create_project()
    old = [{**line(f"old {n}"), "timestamp": time.time() - 2 * 86400} for n in range(100)]
    assert server.send_envelope(project, logs(*old)).status_code == 200
    wait_for(lambda: count(server, "logs", project) == 0, timeout=20)
    assert server.send_envelope(project, logs(*[line(f"new {n}") for n in range(100)])).status_code == 200
    assert count(server, "logs", project) == 100
