"""What preparing an event remembers between events (issue 22: half the CPU per event): which stack
trace rules match a frame, and what a frame contributes to grouping. Remembered answers must be the
answers (the same marks as running every rule on every frame, the same values per platform), and a
stream of made-up frames must not grow a worker without end."""
from __future__ import annotations

import random
import time
from typing import Any

import tracker

PATHS = ["/srv/shop/app/views.py", "/usr/lib/python3/site-packages/django/core.py", "/srv/app/node_modules/x/i.js",
         "webpack:///./node_modules/core-js/modules/es.promise.js", "internal/timers.js", "[native code]",
         "/home/app/go/pkg/mod/github.com/x/y@v1/z.go", "https://shop.example.com/static/app.js", None]
MODULES = ["io.sentry.SentryClient", "java.lang.Thread", "org.springframework.web.Servlet", "com.example.shop.Pay",
           "shop.views", None]
FUNCTIONS = ["main", "eval", "pay", "listOnTimeout", "reportError", "runMicrotasks", None]

# Rules that judge `app:` as earlier rules left it, act above and below a frame, and negate.
PROJECT_RULES = """
path:**/shop/** +app
app:yes function:pay ^-group
app:no module:com.example.* +app
!path:**/node_modules/** family:javascript v-app
family:native,other function:main -group +app
"""


def random_event(rng: random.Random) -> dict[str, Any]:
    frames = []
    for _ in range(rng.randrange(1, 8)):
        frame = {"abs_path": rng.choice(PATHS), "module": rng.choice(MODULES), "function": rng.choice(FUNCTIONS),
                 "in_app": rng.choice([True, False, None]), "lineno": rng.randrange(1, 50)}
        if rng.random() < 0.2:
            frame["platform"] = rng.choice(["javascript", "java", "python"])
        frames.append({key: value for key, value in frame.items() if value is not None})
    return {"platform": rng.choice(["python", "javascript", "node", "java", "other"]),
            "exception": {"values": [{"type": "Error", "value": "failed", "stacktrace": {"frames": frames}}]}}


def every_rule_on_every_frame(ev: dict[str, Any], rules: tuple[tracker.StackRule, ...], source: str = "built-in") -> None:
    """The stack trace rules as they ran before they were planned: each rule's matchers on each frame."""
    platform = ev.get("platform", "other")
    for frames in tracker.event_frame_lists(ev):
        for rule in rules:
            hits = [index for index, frame in enumerate(frames)
                    if all(tracker.matches(matcher, tracker.frame_facts(matcher.key, frame, platform))
                           for matcher in rule.matchers)]
            for index in hits:
                for where, flag, value in rule.actions:
                    targets = frames[index + 1:] if where == "^" else frames[:index] if where == "v" else [frames[index]]
                    for frame in targets:
                        tracker.mark_frame(frame, flag, value, f"{source} rule {rule.text}")


def test_planned_rules_mark_frames_as_every_rule_on_every_frame_does(monkeypatch: Any) -> None:
    """The built-in rules (in normalize_event) and a project's, planned and unplanned, on random frames."""
    rules = tracker.parse_grouping_rules(PROJECT_RULES, "").stack
    rng = random.Random(22)
    for _ in range(400):
        raw = random_event(rng)
        planned = tracker.normalize_event(raw, event_id=None, received=time.time(), client_ip="")
        tracker.apply_stack_rules(planned, rules, "project")
        with monkeypatch.context() as patch:
            patch.setattr(tracker, "apply_stack_rules", every_rule_on_every_frame)
            expected = tracker.normalize_event(raw, event_id=None, received=time.time(), client_ip="")
        every_rule_on_every_frame(expected, rules, "project")
        assert planned["exception"] == expected["exception"], raw


def test_a_frame_contributes_by_its_event_platform_too() -> None:
    """The same frame fields in a JavaScript and a Python event: JS keeps the last part of a method name."""
    frame = {"abs_path": "/srv/app/cart.js", "filename": "cart.js", "function": "Cart.total", "in_app": True}
    assert tracker.frame_values(frame, "javascript") == ("cart.js", "total")
    assert tracker.frame_values(frame, "python") == ("cart.js", "Cart.total")


def test_made_up_frames_cost_a_worker_at_most_the_memo_budget() -> None:
    """Thousands of distinct frames of 1 KB texts: what is remembered stays within the budget, and
    answers after the memo started afresh are still right."""
    def frame(n: int) -> dict[str, Any]:
        return {"abs_path": f"/srv/{n}/" + "x" * 1000, "module": f"m{n}" + "y" * 1000, "function": f"f{n}",
                "context_line": "z" * 1000, "in_app": True}

    for n in range(3000):
        ev = {"platform": "python", "exception": {"values": [{"type": "E", "stacktrace": {"frames": [frame(n)]}}]}}
        tracker.apply_stack_rules(ev, tracker.BUILTIN_STACK_RULES)
        assert tracker.frame_values(frame(n), "python") == (f"m{n}" + "y" * 1000, f"f{n}")
    plan = tracker.stack_plan(tracker.BUILTIN_STACK_RULES)
    for memo in (tracker.FRAME_VALUES, plan.found):
        assert memo.spent <= memo.budget
        assert len(memo.answers) < 3000


def test_a_python_event_without_app_frames_parameterizes_no_message(monkeypatch: Any) -> None:
    """Its app variant holds only the type and the message and is dropped for the system variant: the
    message (a regex over it, once the dearest step of grouping) is never parameterized."""
    calls: list[str] = []
    real = tracker.parameterize
    monkeypatch.setattr(tracker, "parameterize", lambda value: calls.append(value) or real(value))
    ev = tracker.normalize_event({"platform": "python", "exception": {"values": [{
        "type": "ValueError", "value": "amount 1005 over limit 500", "stacktrace": {"frames": [
            {"module": "shop.pay", "function": "charge", "context_line": "raise ValueError(x)", "in_app": False}]}}]}},
        event_id=None, received=time.time(), client_ip="")
    record = tracker.group_event(ev)
    assert list(record["variants"]) == ["system"] and calls == []
