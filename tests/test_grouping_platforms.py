"""Grouping for every platform: each family of the built-in stack trace rules and the JS noise
(shared/docs/grouping.md §2.3, §4). Per rule, a pair that must join (only a frame the rule excludes
differs) and a pair that must split (an in-app frame differs), with events in the shapes the SDKs send."""
from __future__ import annotations

import copy
import html
import re
import time
from typing import Any

import pytest
import tracker
from conftest import Project, TrackerServer


def hashes(event: dict[str, Any]) -> list[str]:
    ev = tracker.normalize_event(copy.deepcopy(event), event_id=None, received=time.time(), client_ip="")
    return tracker.group_hashes(ev)


def js(function: str, url: str = "https://shop.example.com/static/app.js", in_app: bool = True,
       line: str | None = None) -> dict[str, Any]:
    """A browser SDK frame: a URL for filename and abs_path, a column, a context line."""
    return {"filename": url, "abs_path": url, "function": function, "lineno": 12, "colno": 7, "in_app": in_app,
            "context_line": line if line is not None else f"  {function}(order);"}


def node(function: str, path: str, module: str, in_app: bool = True) -> dict[str, Any]:
    """A Node SDK frame: a file path, its module as the SDK derives it."""
    return {"filename": path, "abs_path": path, "module": module, "function": function, "lineno": 3, "colno": 9,
            "in_app": in_app, "context_line": f"return {function}();"}


def java(module: str, function: str, in_app: bool = True) -> dict[str, Any]:
    """A Java SDK frame: module is the class, filename the source file's name."""
    return {"module": module, "function": function, "filename": module.rsplit(".", 1)[-1] + ".java",
            "lineno": 40, "in_app": in_app}


def go(function: str, path: str, module: str, in_app: bool = True) -> dict[str, Any]:
    return {"function": function, "module": module, "abs_path": path, "filename": path.rsplit("/", 1)[-1],
            "lineno": 21, "in_app": in_app}


def event(platform: str, frames: list[dict[str, Any]], kind: str = "TypeError") -> dict[str, Any]:
    return {"platform": platform, "exception": {"values": [
        {"type": kind, "value": "x is undefined", "stacktrace": {"frames": frames}}]}}


def with_frame(ev: dict[str, Any], index: int, extra: dict[str, Any]) -> dict[str, Any]:
    """The event with one more frame at `index` of its (oldest-first) frames."""
    ev = copy.deepcopy(ev)
    ev["exception"]["values"][-1]["stacktrace"]["frames"].insert(index, extra)
    return ev


def replaced(ev: dict[str, Any], index: int, **changes: Any) -> dict[str, Any]:
    ev = copy.deepcopy(ev)
    ev["exception"]["values"][-1]["stacktrace"]["frames"][index].update(changes)
    return ev


BROWSER = event("javascript", [js("main"), js("checkout"), js("loadCart")])
SYSTEM_ONLY_BROWSER = event("javascript", [js("main", in_app=False), js("checkout", in_app=False),
                                           js("loadCart", in_app=False)])
NODE = event("node", [node("main", "/srv/shop/app.js", "app"), node("checkout", "/srv/shop/orders.js", "orders"),
                      node("loadCart", "/srv/shop/cart.js", "cart")])
SYSTEM_ONLY_NODE = event("node", [{**f, "in_app": False} for f in NODE["exception"]["values"][0]["stacktrace"]["frames"]])
JAVA = event("java", [java("com.example.shop.Main", "main"), java("com.example.shop.Checkout", "pay"),
                      java("com.example.shop.Cart", "load")], "java.lang.IllegalStateException")
GO = event("go", [go("main", "/srv/shop/main.go", "main"), go("Checkout", "/srv/shop/checkout.go", "main"),
                  go("loadCart", "/srv/shop/cart.go", "main")], "*errors.errorString")
PYTHON = event("python", [{"module": "shop.views", "function": "checkout", "abs_path": "/srv/shop/views.py",
                           "filename": "shop/views.py", "context_line": "cart = load(request)", "in_app": True},
                          {"module": "shop.cart", "function": "load", "abs_path": "/srv/shop/cart.py",
                           "filename": "shop/cart.py", "context_line": "return CACHE[key]", "in_app": True}], "KeyError")


def polyfill(package: str, function: str) -> dict[str, Any]:
    return js(function, f"webpack:///./node_modules/{package}/helpers/{function}.js")


# (base event, index, frame the rule excludes: the SDK calls it in app, the rule says it is not, or not for grouping)
EXCLUDED: dict[str, tuple[dict[str, Any], int, dict[str, Any]]] = {
    "python site-packages": (PYTHON, 1, {"module": "requests.api", "function": "get", "in_app": True,
                                         "abs_path": "/venv/lib/python3.11/site-packages/requests/api.py",
                                         "context_line": "return request('get')"}),
    "python dist-packages": (PYTHON, 1, {"module": "yaml", "function": "load", "in_app": True,
                                         "abs_path": "/usr/lib/python3/dist-packages/yaml/__init__.py"}),
    "vendored code": (PYTHON, 1, {"module": "shop.vendor.six", "function": "reraise", "in_app": True,
                                  "abs_path": "/srv/shop/vendor/six.py"}),
    "node_modules": (NODE, 1, node("handle", "/srv/shop/node_modules/express/lib/router/layer.js", "express.lib.router:layer")),
    "unpkg CDN": (BROWSER, 1, js("render", "https://unpkg.com/react-dom@18.2.0/umd/react-dom.production.min.js")),
    "cdnjs CDN": (BROWSER, 1, js("ajax", "https://cdnjs.cloudflare.com/ajax/libs/jquery/3.7.1/jquery.min.js")),
    "jsdelivr CDN": (BROWSER, 1, js("get", "https://cdn.jsdelivr.net/npm/axios@1.6.0/dist/axios.min.js")),
    "esm.run CDN": (BROWSER, 1, js("parse", "https://esm.run/marked")),
    # polyfills and runtime helpers do not group even in the system variant
    "@babel/runtime": (SYSTEM_ONLY_BROWSER, 1, polyfill("@babel/runtime", "asyncToGenerator")),
    "core-js": (SYSTEM_ONLY_BROWSER, 1, polyfill("core-js", "promise")),
    "regenerator-runtime": (SYSTEM_ONLY_BROWSER, 1, js("invoke", "webpack:///./node_modules/regenerator-runtime/runtime.js")),
    "tslib": (SYSTEM_ONLY_NODE, 1, node("__awaiter", "/srv/shop/node_modules/tslib/tslib.js", "tslib:tslib")),
    "@babel/runtime in a node app": (NODE, 1, node("_next", "/srv/shop/node_modules/@babel/runtime/helpers/asyncToGenerator.js",
                                                   "@babel.runtime.helpers:asyncToGenerator")),
    # JS noise (§2.3)
    "eval with a file (Chrome, Firefox)": (SYSTEM_ONLY_BROWSER, 2, js("eval", in_app=False, line="")),
    "eval in [native code] (Safari)": (SYSTEM_ONLY_BROWSER, 2, js("eval", "[native code]", in_app=False, line="")),
    "[native code]": (SYSTEM_ONLY_BROWSER, 2, js("forEach", "[native code]", in_app=False, line="")),
    "<anonymous>": (SYSTEM_ONLY_BROWSER, 2, js("Array.map", "<anonymous>", in_app=False, line="")),
    "? function": (SYSTEM_ONLY_BROWSER, 2, js("?", in_app=False, line="")),
    # node internals
    "processTicksAndRejections": (SYSTEM_ONLY_NODE, 0, node("process.processTicksAndRejections",
                                                            "node:internal/process/task_queues", "task_queues", False)),
    "runMicrotasks": (SYSTEM_ONLY_NODE, 0, node("runMicrotasks", "<anonymous>", "", False)),
    "nextTick": (SYSTEM_ONLY_NODE, 0, node("process.nextTick", "node:internal/process/task_queues", "task_queues", False)),
    "listOnTimeout": (SYSTEM_ONLY_NODE, 0, node("listOnTimeout", "node:internal/timers", "timers", False)),
    "reportError and what it calls": (BROWSER, 3, js("reportError", "https://shop.example.com/static/errors.js")),
    # java and kotlin
    "java SDK namespace": (JAVA, 3, java("io.sentry.SentryClient", "captureEvent")),
    "spring": (JAVA, 1, java("org.springframework.web.servlet.FrameworkServlet", "service")),
    "apache": (JAVA, 1, java("org.apache.catalina.core.ApplicationFilterChain", "doFilter")),
    "java runtime": (JAVA, 1, java("jdk.internal.reflect.DirectMethodHandleAccessor", "invoke")),
    "sun": (JAVA, 1, java("sun.reflect.NativeMethodAccessorImpl", "invoke0")),
    "kotlin": (JAVA, 1, java("kotlin.coroutines.jvm.internal.BaseContinuationImpl", "resumeWith")),
    "kotlinx": (JAVA, 1, java("kotlinx.coroutines.DispatchedTask", "run")),
    "netty": (JAVA, 1, java("io.netty.channel.AbstractChannelHandlerContext", "invokeChannelRead")),
    # go
    "go module cache": (GO, 1, go("(*Engine).handleHTTPRequest", "/home/app/go/pkg/mod/github.com/gin-gonic/gin@v1.9.1/gin.go",
                                  "github.com/gin-gonic/gin")),
    # telemetry: neither app nor grouping
    "newrelic (node agent)": (SYSTEM_ONLY_NODE, 1, node("wrapped", "/srv/shop/node_modules/newrelic/lib/shim/shim.js",
                                                         "newrelic.lib.shim:shim", False)),
    "newrelic (browser agent)": (SYSTEM_ONLY_BROWSER, 1, js("nrWrapper", "https://js-agent.newrelic.com/nr-spa-1234.min.js", False)),
    "LogRocket": (SYSTEM_ONLY_BROWSER, 1, js("wrapped", "https://cdn.lr-ingest.io/LogRocket.min.js", False)),
    "newrelic (java agent)": (JAVA, 1, java("com.newrelic.agent.TracerService", "trace")),
}


BY_FUNCTION = {"eval with a file (Chrome, Firefox)", "eval in [native code] (Safari)", "? function",
               "processTicksAndRejections", "runMicrotasks", "nextTick", "listOnTimeout", "reportError and what it calls"}


@pytest.mark.parametrize("name", EXCLUDED)
def test_a_frame_the_rules_exclude_joins(name: str) -> None:
    base, index, extra = EXCLUDED[name]
    assert hashes(with_frame(base, index, extra))[0] == hashes(base)[0]
    changed = {**extra, "context_line": "other();", "lineno": 99}
    if name not in BY_FUNCTION:  # the rule matches by path or module: any function there is left out
        changed["function"] += "Other"
    assert hashes(with_frame(base, index, changed))[0] == hashes(base)[0]


@pytest.mark.parametrize("name", EXCLUDED)
def test_an_app_frame_that_differs_splits(name: str) -> None:
    """The crash frame (in app, or the system frame that groups when none is) changes: a new issue."""
    base, index, extra = EXCLUDED[name]
    other = replaced(base, -1, function="refund", module="shop.refunds", context_line="refund(order);")
    assert not set(hashes(with_frame(other, index, extra))) & set(hashes(with_frame(base, index, extra)))


def test_the_rules_override_the_sdks_in_app_and_say_so() -> None:
    ev = tracker.normalize_event(with_frame(BROWSER, 1, polyfill("core-js", "promise")), event_id=None,
                                 received=time.time(), client_ip="")
    helper = ev["exception"]["values"][0]["stacktrace"]["frames"][1]
    assert helper["in_app"] is False
    assert helper["data"]["in_app_rule"] == "built-in rule family:javascript path:**/core-js/** -app -group"
    assert helper["data"]["group"] is False and helper["data"]["sdk_in_app"] is True


def test_reporterror_takes_the_frames_above_it_out_of_app() -> None:
    """`function:reportError ^-app -app`: reportError and what it calls are the reporting, not the bug."""
    ev = with_frame(BROWSER, 3, js("reportError", "https://shop.example.com/static/errors.js"))
    ev = with_frame(ev, 4, js("formatError", "https://shop.example.com/static/errors.js"))
    normalized = tracker.normalize_event(ev, event_id=None, received=time.time(), client_ip="")
    frames = normalized["exception"]["values"][0]["stacktrace"]["frames"]
    assert [f["in_app"] for f in frames] == [True, True, True, False, False]
    assert frames[4]["data"]["in_app_rule"] == "built-in rule family:javascript function:reportError ^-app -app"


def test_same_js_error_from_chrome_firefox_and_safari_is_one_issue() -> None:
    """An eval frame: Chrome and Firefox give it the calling file, Safari `[native code]`."""
    def browser(eval_frame: dict[str, Any]) -> dict[str, Any]:
        return event("javascript", [js("main"), js("run", in_app=False, line=""), eval_frame, js("loadCart")])
    chrome = browser(js("eval", "https://shop.example.com/static/app.js", in_app=False, line=""))
    firefox = browser({**js("eval", "https://shop.example.com/static/app.js", in_app=False, line=""), "colno": 1})
    safari = browser(js("eval", "[native code]", in_app=False, line=""))
    assert hashes(chrome) == hashes(firefox) == hashes(safari)


def test_project_rules_come_after_the_built_in_ones() -> None:
    """A project's `+app` wins over the built-in `-app` for its own packages."""
    rules = tracker.parse_grouping_rules("path:**/node_modules/@shop/** +app", "")
    ev = tracker.normalize_event(with_frame(NODE, 2, node("price", "/srv/shop/node_modules/@shop/pricing/index.js",
                                                           "@shop.pricing:index")), event_id=None,
                                 received=time.time(), client_ip="")
    tracker.apply_stack_rules(ev, rules.stack, "project")
    frame = ev["exception"]["values"][0]["stacktrace"]["frames"][2]
    assert frame["in_app"] is True and frame["data"]["in_app_rule"].startswith("project rule")


def test_the_grouping_card_names_the_rule_that_moved_each_frame(tracker: TrackerServer, project: Project) -> None:
    """Java: the client flagged the SDK's and Spring's frames in app; the card says which built-in
    rule moved each one and what the SDK had said."""
    ev = with_frame(with_frame(JAVA, 1, java("org.springframework.web.servlet.FrameworkServlet", "service")),
                    4, java("io.sentry.SentryClient", "captureEvent"))
    browser = with_frame(with_frame(BROWSER, 1, polyfill("core-js", "promise")), 3, js("forEach", "[native code]", line=""))
    tracker.send_event(project, ev)
    tracker.send_event(project, browser)
    rows = {}
    for issue in tracker.wait_issues(project, 2):
        page = html.unescape(tracker.web.get(f"/issues/{issue['id']}/").text)
        rows.update(re.findall(r'<tr><td class="mono">([^<]*)</td><td>([^<]*)</td>', page))
    assert rows["org.springframework.web.servlet.FrameworkServlet in service"] == (
        "no: built-in rule family:other module:org.springframework.* -app (the SDK said yes)")
    assert rows["io.sentry.SentryClient in captureEvent"] == (
        "yes: as the SDK sent it; left out of grouping by built-in rule family:other module:io.sentry.* -group")
    assert rows["com.example.shop.Cart in load"] == "yes: as the SDK sent it"
    assert rows["webpack:///./node_modules/core-js/helpers/promise.js in promise"] == (
        "no: built-in rule family:javascript path:**/core-js/** -app -group (the SDK said yes), "
        "which also leaves it out of grouping")
    assert rows["[native code] in forEach"] == "yes: as the SDK sent it; left out of grouping: the engine's own frame ([native code])"


def test_a_client_cannot_write_the_rules_marks() -> None:
    """`data` of a frame is the client's; what the rules note there (and the SDK's own in_app the
    transition hashes with) is the server's."""
    forged = with_frame(BROWSER, 1, {**js("helper"), "data": {"sdk_in_app": False, "in_app_rule": "built-in rule x",
                                                            "group": False, "group_rule": "y", "orig": 1}})
    ev = tracker.normalize_event(forged, event_id=None, received=time.time(), client_ip="")
    assert ev["exception"]["values"][0]["stacktrace"]["frames"][1]["data"] == {"orig": 1}
    assert hashes(forged) != hashes(BROWSER)


def test_a_long_exception_chain_is_grouped_in_linear_time() -> None:
    """A DSN holder's 20,000 exceptions, each the cause of the one before, one distinct at the top."""
    values = [{"type": "Error", "value": "x", "mechanism": {"exception_id": i, "parent_id": i - 1}}
              for i in range(20_000, 0, -1)]
    values.append({"type": "Error", "value": "x", "mechanism": {"exception_id": 0}})
    ev = tracker.normalize_event({"platform": "javascript", "exception": {"values": values}}, event_id=None,
                                 received=time.time(), client_ip="")
    started = time.process_time()
    record = tracker.group_event(ev)
    previous = tracker.group_event(ev, parent_first=False)
    assert time.process_time() - started < 2
    assert len(record["variants"]["app"]["values"]) == len(previous["variants"]["app"]["values"]) == 2 * 20_001  # type, value
