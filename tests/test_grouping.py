"""Grouping: what Sentry ignores must not split an issue, what it uses must (shared/docs/grouping.md)."""
from __future__ import annotations

import copy
import hashlib
import json
import time
from typing import Any, Callable

import httpx
import pytest
import tracker
from conftest import Project, TrackerServer


def frame(module: str, function: str, line: str, lineno: int = 10, in_app: bool = True,
          path: str | None = None) -> dict[str, Any]:
    return {"module": module, "function": function, "context_line": line, "lineno": lineno, "in_app": in_app,
            "abs_path": path or f"/srv/app/{module.replace('.', '/')}.py", "filename": f"{module}.py",
            "pre_context": ["a = 1"], "post_context": ["b = 2"], "vars": {"x": "1"}}


BASE: dict[str, Any] = {
    "platform": "python", "level": "error", "release": "svc@1", "environment": "prod",
    "tags": {"service": "payments"}, "transaction": "/pay",
    "exception": {"values": [{
        "type": "KeyError", "value": "'user-42'",
        "stacktrace": {"frames": [
            frame("django.core.handlers", "get_response", "response = handler(request)", 50, False,
                  "/usr/lib/python3/site-packages/django/core/handlers.py"),
            frame("app.views", "checkout", "order = load_order(request)", 12),
            frame("app.orders", "load_order", "return CACHE[key]", 33),
        ]}}]},
}


def hashes(event: dict[str, Any]) -> list[str]:
    ev = tracker.normalize_event(copy.deepcopy(event), event_id=None, received=time.time(), client_ip="")
    return tracker.group_hashes(ev)


def edited(edit: Callable[[dict[str, Any]], None]) -> dict[str, Any]:
    event = copy.deepcopy(BASE)
    edit(event)
    return event


def frames(ev: dict[str, Any]) -> list[dict[str, Any]]:
    return ev["exception"]["values"][-1]["stacktrace"]["frames"]


SAME: dict[str, Callable[[dict[str, Any]], None]] = {
    "line numbers": lambda e: [f.update(lineno=f["lineno"] + 7) for f in frames(e)],
    "vars and pre/post context": lambda e: [f.update(vars={"y": "2"}, pre_context=[], post_context=["z"])
                                            for f in frames(e)],
    "exception value when frames contribute": lambda e: e["exception"]["values"][0].update(value="'other'"),
    "a system frame changes": lambda e: frames(e)[0].update(function="dispatch", context_line="x()"),
    "a system frame is added": lambda e: frames(e).insert(0, frame("gunicorn.workers", "run", "loop()", 1, False)),
    "release, environment, tags, transaction, level": lambda e: e.update(
        release="svc@2", environment="staging", tags={"service": "other"}, transaction="/x", level="fatal"),
    "absolute path prefix": lambda e: [f.update(abs_path="/opt/other" + f["abs_path"]) for f in frames(e)],
    "direct recursion": lambda e: frames(e).append(dict(frames(e)[-1])),
}

DIFFERENT: dict[str, Callable[[dict[str, Any]], None]] = {
    "exception type": lambda e: e["exception"]["values"][0].update(type="IndexError"),
    "in-app function": lambda e: frames(e)[-1].update(function="load_cart"),
    "in-app module": lambda e: frames(e)[-1].update(module="app.carts"),
    "in-app context line": lambda e: frames(e)[-1].update(context_line="return CACHE.get(key)"),
    "custom fingerprint": lambda e: e.update(fingerprint=["checkout-cache"]),
    "hybrid fingerprint": lambda e: e.update(fingerprint=["{{ default }}", "eu"]),
    "chained cause added": lambda e: e["exception"]["values"].insert(0, {"type": "ConnectionError",
                                                                         "value": "redis down"}),
}


@pytest.mark.parametrize("name", SAME)
def test_ignored_changes_keep_the_group(name: str) -> None:
    assert hashes(edited(SAME[name]))[0] == hashes(BASE)[0]


@pytest.mark.parametrize("name", DIFFERENT)
def test_significant_changes_split_the_group(name: str) -> None:
    assert not set(hashes(edited(DIFFERENT[name]))) & set(hashes(BASE))


def test_chain_order_matters() -> None:
    a = {"type": "ConnectionError", "value": "down"}
    b = {"type": "TimeoutError", "value": "slow"}
    first = copy.deepcopy(BASE)
    first["exception"]["values"][:0] = [a, b]
    second = copy.deepcopy(BASE)
    second["exception"]["values"][:0] = [b, a]
    assert hashes(first) != hashes(second)


def test_app_and_system_hashes() -> None:
    app, system = hashes(BASE)
    expected_app = hashlib.md5("".join(["app.views", "checkout", "order = load_order(request)", "app.orders",
                                        "load_order", "return CACHE[key]", "KeyError"]).encode()).hexdigest()
    assert app == expected_app and system != app


def test_third_party_paths_are_not_in_app_even_if_sdk_says_so() -> None:
    vendored = edited(lambda e: frames(e).append(
        frame("requests.api", "get", "return request('get')", 5, True, "/venv/lib/python3.11/site-packages/requests/api.py")))
    assert hashes(vendored)[0] == hashes(BASE)[0]


def test_no_in_app_frames_groups_on_system_frames_only() -> None:
    no_app = edited(lambda e: [f.update(in_app=False) for f in frames(e)])
    result = hashes(no_app)
    assert len(result) == 1 and result[0] == hashes(BASE)[1]


def test_exception_without_frames_uses_parameterized_value() -> None:
    def bare(value: str) -> dict[str, Any]:
        return {"exception": {"values": [{"type": "PaymentDeclined", "value": value}]}}
    assert hashes(bare("card 4242 declined for order 981")) == hashes(bare("card 1111 declined for order 7"))
    assert hashes(bare("card declined")) != hashes(bare("insufficient funds"))


def test_synthetic_exception_falls_back_to_message() -> None:
    def synthetic(message: str) -> dict[str, Any]:
        return {"message": message, "exception": {"values": [
            {"value": message, "mechanism": {"type": "generic", "synthetic": True}}]}}
    assert hashes(synthetic("queue 12 is full")) == hashes(synthetic("queue 13 is full"))
    assert hashes(synthetic("queue 12 is full")) != hashes(synthetic("queue 12 is empty"))


def test_message_template_and_parameters() -> None:
    def log(template: str, params: list[Any]) -> dict[str, Any]:
        return {"logentry": {"message": template, "params": params}}
    assert hashes(log("payment declined for %s", ["a"])) == hashes(log("payment declined for %s", ["b"]))
    assert hashes(log("payment declined for %s", ["a"])) != hashes(log("refund failed for %s", ["a"]))
    assert hashes({"message": "testing testing 1, 2, 3"}) == [
        hashlib.md5(b"testing testing <int>, <int>, <int>").hexdigest()]


@pytest.mark.parametrize("raw, expected", [
    ("Invalid id 42 for user 550e8400-e29b-41d4-a716-446655440000", "Invalid id <int> for user <uuid>"),
    ("timeout after 30s connecting to 10.0.0.5", "timeout after <duration> connecting to <ip>"),
    ('key="abc" flag=true', "key=<quoted_str> flag=<bool>"),
    ("at 0x7fbb00112233", "at <hex>"),
    ("mail bob@example.org about https://shop.example.com/o/1?x=2", "mail <email> about <url>"),
    ("first\n\nsecond\nthird", "first\nsecond..."),
])
def test_parameterize(raw: str, expected: str) -> None:
    assert tracker.parameterize(raw) == expected


def test_fingerprint_variables() -> None:
    by_tag = lambda service: edited(lambda e: e.update(fingerprint=["{{ tags.service }}", "{{ type }}"],  # noqa: E731
                                                       tags={"service": service}))
    assert hashes(by_tag("a")) != hashes(by_tag("b"))
    assert hashes(by_tag("a")) == [hashlib.md5(b"aKeyError").hexdigest()]
    by_txn = edited(lambda e: e.update(fingerprint=["{{transaction}}"]))
    assert hashes(by_txn) == [hashlib.md5(b"/pay").hexdigest()]


def test_hybrid_fingerprint_salts_every_variant() -> None:
    salted = hashes(edited(lambda e: e.update(fingerprint=["{{ default }}", "eu"])))
    assert len(salted) == 2 and not set(salted) & set(hashes(BASE))


def test_any_known_hash_joins_the_issue(tracker: TrackerServer, project: Project) -> None:
    """An event whose app hash is new but whose system hash is known joins the existing issue."""
    first = edited(lambda e: None)
    second = edited(lambda e: [f.update(in_app=False) for f in frames(e)])  # only the system hash
    for event in (first, second):
        body = f'{{}}\n{{"type":"event"}}\n{json.dumps(event)}\n'
        r = httpx.post(f"{tracker.url}/api/{project.id}/envelope/", content=body,
                       headers={"X-Sentry-Auth": f"Sentry sentry_key={project.key}, sentry_version=7"})
        assert r.status_code == 200, r.text
    issues = tracker.wait_issues(project, 2)
    assert len(issues) == 1 and issues[0]["count"] == "2"


def exception_group(*types: str, sdk: str = "2.75.0", ids: list[int] | None = None) -> dict[str, Any]:
    """A Python SDK's ExceptionGroup payload: children first, the group (id 0) last."""
    ids = ids or list(range(len(types), 0, -1))
    children = [{"type": kind, "value": f"item {n} failed",
                 "mechanism": {"type": "chained", "exception_id": i, "parent_id": 0}}
                for n, (kind, i) in enumerate(zip(reversed(types), ids))]
    group = {"type": "ExceptionGroup", "value": f"batch failed ({len(types)} sub-exceptions)",
             "mechanism": {"type": "generic", "exception_id": 0, "is_exception_group": True}}
    return {"platform": "python", "sdk": {"name": "sentry.python", "version": sdk},
            "exception": {"values": [*children, group]}}


def test_exception_group_groups_by_its_distinct_exceptions() -> None:
    assert hashes(exception_group("ValueError", "ValueError")) == hashes(exception_group(*["ValueError"] * 3))
    assert hashes(exception_group("ValueError", "ValueError")) == [hashlib.md5(b"ValueErroritem <int> failed").hexdigest()]
    mixed = hashes(exception_group("ValueError", "TypeError"))
    assert mixed != hashes(exception_group("ValueError", "ValueError"))
    assert mixed == hashes(exception_group("TypeError", "ValueError", "TypeError"))  # order and repeats ignored


def test_exception_group_title_is_the_selected_exception() -> None:
    def title(event: dict[str, Any]) -> str:
        ev = tracker.normalize_event(event, event_id=None, received=time.time(), client_ip="")
        return tracker.display_fields(ev)[1]
    assert title(exception_group("ValueError", "ValueError")).startswith("ValueError: item")
    assert title(exception_group("ValueError", "TypeError")) == "ExceptionGroup: batch failed (2 sub-exceptions)"


@pytest.mark.parametrize("event", [
    exception_group("ValueError", "ValueError", sdk="3.0.0"),  # Sentry keeps the old hashes for Python SDK 3
    exception_group("ValueError", "ValueError", ids=[1, 1]),  # ids not unique
    exception_group("ValueError", "ValueError", ids=[2, 3]) | {"exception": {"values": [  # no root with id 0
        *exception_group("ValueError", "ValueError", ids=[2, 3])["exception"]["values"][:2],
        {"type": "ExceptionGroup", "value": "x", "mechanism": {"exception_id": 4, "is_exception_group": True}}]}},
], ids=["python sdk 3", "duplicate ids", "no root"])
def test_exception_group_filter_needs_a_valid_tree(event: dict[str, Any]) -> None:
    """Without the filter every exception contributes, so one more child changes the hash."""
    more = copy.deepcopy(event)
    more["exception"]["values"].insert(0, copy.deepcopy(more["exception"]["values"][0]))
    more["exception"]["values"][0]["mechanism"]["exception_id"] = 9
    assert hashes(event) != hashes(more)
