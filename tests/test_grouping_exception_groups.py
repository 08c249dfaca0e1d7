"""Exception groups and chains, ordered as shared/docs/grouping.md §2.2 says: Python 3.11
ExceptionGroups raised under the real sentry-sdk, and the parent-first order of a group member
with its own cause (the shape the JavaScript SDK sends for AggregateError and `cause`)."""
from __future__ import annotations

import html
import re
import time
from typing import Any, Callable

import sentry_sdk
import tracker
from conftest import Project, TrackerServer


def load(n: int) -> None:
    try:
        {}[f"sku-{n}"]
    except KeyError as exc:
        raise ValueError(f"item {n} has no price") from exc


def reserve(n: int) -> None:
    raise TypeError(f"item {n} cannot be reserved")


def batch(*steps: Callable[[int], None]) -> ExceptionGroup:
    """Run each step, collecting what it raised (with its traceback and cause) into one group."""
    errors = []
    for n, step in enumerate(steps):
        try:
            step(n)
        except Exception as exc:
            errors.append(exc)
    return ExceptionGroup("checkout batch failed", errors)


def capture(*groups: BaseException) -> None:
    for group in groups:
        try:
            raise group
        except BaseException:
            sentry_sdk.capture_exception()


def grouping_values(tracker_server: TrackerServer, issue_id: str) -> list[str]:
    """The values the issue page's grouping card lists for the latest event's first variant."""
    page = tracker_server.web.get(f"/issues/{issue_id}/").text
    listed = re.search(r'<ol class="values mono">(.*?)</ol>', page, re.S)
    assert listed, "no grouping card on the issue page"
    return [html.unescape(v) for v in re.findall(r"<li>(.*?)</li>", listed[1], re.S)]


def test_python_exception_groups_group_by_their_distinct_exceptions(
        tracker: TrackerServer, project: Project, sdk: Callable[..., None]) -> None:
    """The same failures in a group of two or three are one issue; another kind of member is another.
    The hash reads the distinct members by type, descending (the Python SDK sends a member's cause
    as a member of the group), then the group itself."""
    sdk(project.dsn)
    capture(batch(load, load), batch(load, load, load), batch(load, reserve))
    sentry_sdk.flush()
    issues = tracker.wait_issues(project, 3)
    assert sorted(int(i["count"]) for i in issues) == [1, 2]
    same = next(i for i in issues if i["count"] == "2")
    values = grouping_values(tracker, same["id"])
    types = [v for v in values if v in ("ValueError", "KeyError", "TypeError", "ExceptionGroup")]
    assert types == ["ValueError", "KeyError", "ExceptionGroup"]
    assert "load" in values and values.index("load") < values.index("ValueError")  # frames before the type
    other = next(i for i in issues if i["count"] == "1")
    assert [v for v in grouping_values(tracker, other["id"]) if v.endswith(("Error", "Group"))] == [
        "ValueError", "TypeError", "KeyError", "ExceptionGroup"]


def test_nested_group_of_one_failure_is_that_failure(tracker: TrackerServer, project: Project,
                                                     sdk: Callable[..., None]) -> None:
    """Groups inside groups are looked through: one distinct failure groups (and is titled) as itself."""
    sdk(project.dsn)
    capture(ExceptionGroup("outer", [ExceptionGroup("inner", [batch(reserve, reserve)]), batch(reserve)]),
            ExceptionGroup("other batch", [batch(reserve)]))
    sentry_sdk.flush()
    [issue] = tracker.wait_issues(project, 2)
    assert issue["count"] == "2" and issue["title"] == "TypeError: item 0 cannot be reserved"
    assert [v for v in grouping_values(tracker, issue["id"]) if v.endswith(("Error", "Group"))] == ["TypeError"]


def test_python_chain_keeps_the_sdk_order(tracker: TrackerServer, project: Project, sdk: Callable[..., None]) -> None:
    """A plain `raise … from …` chain: every exception, the cause first, as the SDK sends them."""
    sdk(project.dsn)
    try:
        load(1)
    except ValueError:
        sentry_sdk.capture_exception()
    sentry_sdk.flush()
    [issue] = tracker.wait_issues(project, 1)
    assert [v for v in grouping_values(tracker, issue["id"]) if v.endswith("Error")] == ["KeyError", "ValueError"]


def js_aggregate(member_cause: str) -> dict[str, Any]:
    """@sentry/browser's shape for `new AggregateError([new TypeError(…, {cause})])`: children first,
    a member's cause with the member as its parent, the group (id 0) last."""
    def frames(name: str) -> dict[str, Any]:
        url = "https://shop.example.com/static/app.js"
        return {"frames": [{"filename": url, "abs_path": url, "function": name, "lineno": 1, "colno": 9, "in_app": True}]}
    return {"platform": "javascript", "sdk": {"name": "sentry.javascript.browser", "version": "11.12.0"},
            "exception": {"values": [
                {"type": member_cause, "value": "quantity", "stacktrace": frames("quantity"),
                 "mechanism": {"type": "chained", "source": "cause", "exception_id": 2, "parent_id": 1}},
                {"type": "TypeError", "value": "price missing", "stacktrace": frames("price"),
                 "mechanism": {"type": "chained", "source": "errors[0]", "exception_id": 1, "parent_id": 0}},
                {"type": "AggregateError", "value": "checkout failed", "stacktrace": frames("checkout"),
                 "mechanism": {"type": "onerror", "exception_id": 0, "is_exception_group": True}}]}}


def test_a_group_members_cause_comes_after_it() -> None:
    """One distinct member: it and its first-child path, the member first; the title is the member's."""
    ev = tracker.normalize_event(js_aggregate("RangeError"), event_id=None, received=time.time(), client_ip="")
    record = tracker.group_event(ev)
    assert record["variants"]["app"]["values"] == ["price", "TypeError", "quantity", "RangeError"]
    assert tracker.display_fields(ev)[1] == "TypeError: price missing"
    previous = tracker.group_event(ev, parent_first=False)["variants"]["app"]["values"]
    assert previous == ["quantity", "RangeError", "price", "TypeError"]  # what the transition still finds
