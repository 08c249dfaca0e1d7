"""Grouping of events the real sentry-sdk sends (shared/docs/grouping.md): metamorphic cases with
real frames from generated modules, project rules, exception groups, merge and unmerge, and the
issue page's explanation."""
from __future__ import annotations

import contextlib
import types
from pathlib import Path
from typing import Any, Callable, Iterator

import httpx
import markupsafe
import pytest
import sentry_sdk
from conftest import Project, TrackerServer, wait_for

LIBRARY = '''\
def call(fn, *args):
    """A library-like helper the app calls through (it lives in site-packages)."""
    return fn(*args)
'''

APP = '''\
{blank_lines}class PaymentDeclined(Exception):
    pass


def checkout(order_id):
    total = {total}
    return libhelper.call({function}, order_id)


def {function}(order_id):
    note = "order %d" % order_id
    {raise_line}


def chain(first, second):
    try:
        raise first("lookup failed")
    except Exception as exc:
        raise second("charge failed") from exc
'''

BASE = {"blank_lines": "", "total": 10, "function": "charge", "raise_line": 'raise ValueError(f"order {order_id} declined")'}


class Shop:
    """Generated modules under one root: the SDK reads their source from disk like any other."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.library = self.load(root / "venv" / "lib" / "python3.11" / "site-packages" / "libhelper.py",
                                 "libhelper", LIBRARY)

    def load(self, path: Path, name: str, source: str, **globals_: Any) -> types.ModuleType:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(source)
        module = types.ModuleType(name)
        module.__file__ = str(path)
        module.__dict__.update(globals_)
        exec(compile(source, str(path), "exec"), module.__dict__)
        return module

    def app(self, variant: str, **changes: Any) -> types.ModuleType:
        """shop.billing as written in `variant` (its own file, the same module name)."""
        source = APP.format(**{**BASE, **changes})
        return self.load(self.root / "app" / variant / "shop" / "billing.py", "shop.billing", source,
                         libhelper=self.library)


@contextlib.contextmanager
def sdk_for(project: Project, shop: Shop, **options: Any) -> Iterator[None]:
    """The SDK pointed at the project; only the generated app modules are in app."""
    sentry_sdk.init(dsn=project.dsn, default_integrations=False, project_root=str(shop.root / "app"),
                    release="shop@1.0", environment="prod", **options)
    try:
        yield
    finally:
        sentry_sdk.flush()
        sentry_sdk.get_client().close()
        sentry_sdk.init()


def capture(call: Callable[[], Any], scope_edit: Callable[[Any], None] | None = None) -> str:
    """Run the call, capture what it raises (with a scope edited as given); the event id."""
    with sentry_sdk.new_scope() as scope:
        if scope_edit:
            scope_edit(scope)
        try:
            call()
        except BaseException as exc:  # noqa: B036 - ExceptionGroup included
            return sentry_sdk.capture_exception(exc)
    raise AssertionError("the call did not raise")


def message(text: str) -> Callable[[], str]:
    return lambda: sentry_sdk.capture_message(text)


def issues_by_event(tracker: TrackerServer, project: Project, events: int) -> dict[str, str]:
    """event id → issue id, once the project has `events` events."""
    tracker.wait_issues(project, events)
    mapping = {}
    for issue in tracker.issues(project):
        for event in tracker.api("GET", f"issues/{issue['id']}/events/").json():
            mapping[event["eventID"]] = issue["id"]
    return mapping


def put(tracker: TrackerServer, path: str, body: Any = None, **params: Any) -> httpx.Response:
    return tracker.api("PUT", path, json=body, params=params)


@pytest.fixture(scope="module")
def shop(tmp_path_factory: pytest.TempPathFactory) -> Shop:
    return Shop(tmp_path_factory.mktemp("shop"))


def set_release(release: str, environment: str) -> Callable[[Any], None]:
    def edit(scope: Any) -> None:
        scope.set_tag("tenant", "other")
        scope.add_event_processor(lambda event, hint: {**event, "release": release, "environment": environment})
    return edit


# name → (what it is compared with, how it is sent); SAME must join that issue, DIFFERENT must not.
CASES: dict[str, tuple[str, Callable[[Shop], str]]] = {
    "base": ("base", lambda s: capture(lambda: s.app("base").checkout(42))),
    "line numbers": ("base", lambda s: capture(lambda: s.app("lines", blank_lines="\n" * 7).checkout(42))),
    "local variables": ("base", lambda s: capture(lambda: s.app("locals", total=99).checkout(42))),
    "digits in the message": ("base", lambda s: capture(lambda: s.app("base").checkout(7))),
    "release, environment and tags": ("base", lambda s: capture(lambda: s.app("base").checkout(42),
                                                                set_release("shop@2.0", "staging"))),
    "exception type": ("base", lambda s: capture(lambda: s.app("type", raise_line='raise TypeError("bad order")')
                                                 .checkout(42))),
    "in-app function name": ("base", lambda s: capture(lambda: s.app("function", function="charge_card").checkout(42))),
    "context line": ("base", lambda s: capture(
        lambda: s.app("context", raise_line='raise ValueError("order %d declined" % order_id)').checkout(42))),
    "scope fingerprint": ("base", lambda s: capture(lambda: s.app("base").checkout(42),
                                                    lambda scope: setattr(scope, "fingerprint", ["payments"]))),
    "chain": ("chain", lambda s: capture(lambda: s.app("base").chain(KeyError, ValueError))),
    "chain order": ("chain", lambda s: capture(lambda: s.app("base").chain(ValueError, KeyError))),
    "log message": ("log message", lambda s: message("payment 42 failed")()),
    "message digits": ("log message", lambda s: message("payment 7 failed")()),
    "message template": ("log message", lambda s: message("refund 42 failed")()),
}
SAME = ["line numbers", "local variables", "digits in the message", "release, environment and tags", "message digits"]
DIFFERENT = ["exception type", "in-app function name", "context line", "scope fingerprint", "chain order",
             "message template"]


@pytest.fixture(scope="module")
def grouped(tracker: TrackerServer, shop: Shop) -> dict[str, str]:
    """Every case sent once to one project: case name → its issue id."""
    project = tracker.create_project()
    with sdk_for(project, shop):
        event_ids = {name: send(shop) for name, (_, send) in CASES.items()}
    issue_of = issues_by_event(tracker, project, len(CASES))
    return {name: issue_of[event_id] for name, event_id in event_ids.items()}


@pytest.mark.parametrize("name", SAME)
def test_what_sentry_ignores_keeps_the_issue(grouped: dict[str, str], name: str) -> None:
    assert grouped[name] == grouped[CASES[name][0]]


@pytest.mark.parametrize("name", DIFFERENT)
def test_what_sentry_uses_makes_another_issue(grouped: dict[str, str], name: str) -> None:
    assert grouped[name] != grouped[CASES[name][0]]


def test_stack_trace_rules_group_later_events(tracker: TrackerServer, project: Project, shop: Shop) -> None:
    """`-group` drops the frame that differs, `+app` brings the library frame into the app variant."""
    rules = "function:charge -group\nmodule:libhelper +app\n"
    r = put(tracker, f"projects/tracker/{project.slug}/grouping-rules/", {"groupingEnhancements": rules})
    assert r.status_code == 200, r.text
    assert tracker.api("GET", f"projects/tracker/{project.slug}/").json()["groupingEnhancements"] == rules
    with sdk_for(project, shop):
        first = capture(lambda: shop.app("base").checkout(42))
        second = capture(lambda: shop.app("context", raise_line='raise ValueError("order %d declined" % order_id)')
                         .checkout(42))
    issue_of = issues_by_event(tracker, project, 2)
    assert issue_of[first] == issue_of[second]
    event = tracker.api("GET", f"issues/{issue_of[first]}/events/{first}/").json()
    frames = next(e for e in event["entries"] if e["type"] == "exception")["data"]["values"][-1]["stacktrace"]["frames"]
    library = next(f for f in frames if f["module"] == "libhelper")
    charge = next(f for f in frames if f["function"] == "charge")
    assert library["inApp"] is True and library["data"]["in_app_rule"] == "project rule module:libhelper +app"
    assert charge["data"]["group"] is False


def test_fingerprint_rules_group_and_title_later_events(tracker: TrackerServer, project: Project, shop: Shop) -> None:
    rules = ('error.type:PaymentDeclined -> payment-declined title="Payment declined"\n'
             'message:"*timed out*" -> timeouts\n'
             'tags.tenant:acme-* level:warning -> acme-warnings, {{ level }}\n')
    r = put(tracker, f"projects/tracker/{project.slug}/", {"fingerprintingRules": rules})
    assert r.status_code == 200 and r.json()["fingerprintingRules"] == rules, r.text
    declined = shop.app("declined", raise_line='raise PaymentDeclined(f"card {order_id}")')
    tenant = lambda name: lambda scope: (scope.set_tag("tenant", name), scope.set_level("warning"))  # noqa: E731
    with sdk_for(project, shop):
        events = {
            "declined in checkout": capture(lambda: declined.checkout(1)),
            "declined elsewhere": capture(lambda: declined.chain(KeyError, declined.PaymentDeclined)),
            "message timeout": message("db timed out after 5s")(),
            "exception timeout": capture(lambda: shop.app("type", raise_line='raise TimeoutError("socket timed out")')
                                         .checkout(1)),
            "acme one": capture(lambda: shop.app("base").checkout(1), tenant("acme-1")),
            "acme two": capture(lambda: shop.app("type", raise_line="raise KeyError(order_id)").checkout(2),
                                tenant("acme-2")),
        }
    issue_of = issues_by_event(tracker, project, len(events))
    assert issue_of[events["declined in checkout"]] == issue_of[events["declined elsewhere"]]
    assert issue_of[events["message timeout"]] == issue_of[events["exception timeout"]]
    assert issue_of[events["acme one"]] == issue_of[events["acme two"]]
    assert len(set(issue_of.values())) == 3
    titles = {i["id"]: i["title"] for i in tracker.issues(project)}
    assert titles[issue_of[events["declined in checkout"]]] == "Payment declined"


def test_invalid_rules_get_a_clear_error(tracker: TrackerServer, project: Project) -> None:
    path = f"projects/tracker/{project.slug}/grouping-rules/"
    r = put(tracker, path, {"groupingEnhancements": "path:**/vendor/** -app\nframe:x +app"})
    assert r.status_code == 400 and "line 2" in r.json()["detail"] and "unknown matcher 'frame'" in r.json()["detail"]
    r = put(tracker, path, {"fingerprintingRules": "error.type:X payment"})
    assert r.status_code == 400 and '"->"' in r.json()["detail"]
    assert put(tracker, path, {"fingerprintingRules": 5}).status_code == 400
    assert put(tracker, path, {}).status_code == 400
    assert tracker.api("GET", path).json() == {"groupingEnhancements": "", "fingerprintingRules": ""}


def test_rules_page_saves_and_refuses_other_sites(tracker: TrackerServer, project: Project) -> None:
    page = f"/projects/{project.slug}/grouping/"
    bad = {"stacktrace_rules": "module:shop.* +apps", "fingerprint_rules": ""}
    r = tracker.form(page, data=bad)
    assert r.status_code == 400 and "+apps" in r.text and "is not an action" in r.text
    good = {"stacktrace_rules": "module:shop.* +app", "fingerprint_rules": "level:fatal -> fatal"}
    for headers in ({"Origin": "http://evil.example"}, {"Sec-Fetch-Site": "cross-site"}):
        assert tracker.form(page, data=good, headers=headers).status_code == 403
    r = tracker.form(page, data=good, headers={"Origin": tracker.url, "Sec-Fetch-Site": "same-origin"})
    assert r.status_code == 303
    assert tracker.api("GET", f"projects/tracker/{project.slug}/grouping-rules/").json() == {
        "groupingEnhancements": "module:shop.* +app", "fingerprintingRules": "level:fatal -> fatal"}
    assert "module:shop.* +app" in tracker.web.get(page).text


def test_exception_groups_group_by_their_distinct_exceptions(tracker: TrackerServer, project: Project,
                                                             shop: Shop) -> None:
    """The same failure in a batch of 2 or 3 is one issue titled by it; a mixed batch is another."""
    def batch(*kinds: type[Exception]) -> Callable[[], None]:
        def run() -> None:
            errors = []
            for number, kind in enumerate(kinds):
                try:
                    shop.app(f"group-{kind.__name__}", raise_line=f'raise {kind.__name__}("bad")').checkout(number)
                except Exception as exc:
                    errors.append(exc)
            raise ExceptionGroup("batch failed", errors)
        return run

    with sdk_for(project, shop):
        two, three = capture(batch(ValueError, ValueError)), capture(batch(ValueError, ValueError, ValueError))
        mixed = capture(batch(ValueError, TypeError))
    issue_of = issues_by_event(tracker, project, 3)
    assert issue_of[two] == issue_of[three] != issue_of[mixed]
    titles = {i["id"]: i["title"] for i in tracker.issues(project)}
    assert titles[issue_of[two]] == "ValueError: bad"
    assert titles[issue_of[mixed]].startswith("ExceptionGroup: batch failed")


def test_merge_then_unmerge(tracker: TrackerServer, project: Project, shop: Shop) -> None:
    type_error = shop.app("type", raise_line='raise TypeError("bad order")')
    with sdk_for(project, shop):
        for user in ("u1", "u2"):
            capture(lambda: shop.app("base").checkout(1), lambda scope, u=user: scope.set_user({"id": u}))
        capture(lambda: type_error.checkout(2), lambda scope: scope.set_user({"id": "u3"}))
    issues = tracker.wait_issues(project, 3)
    value_issue = next(i for i in issues if i["title"].startswith("ValueError"))
    type_issue = next(i for i in issues if i["title"].startswith("TypeError"))
    type_hash = tracker.latest_event(type_issue["id"])["fingerprints"][0]

    r = put(tracker, f"projects/tracker/{project.slug}/issues/", {"merge": 1},
            id=[value_issue["id"], type_issue["id"]])
    assert r.status_code == 200, r.text
    assert r.json() == {"merge": {"parent": value_issue["id"], "children": [type_issue["id"]]}}
    [merged] = tracker.issues(project)
    assert (merged["id"], merged["count"], merged["userCount"]) == (value_issue["id"], "3", 3)
    assert tracker.api("GET", f"issues/{type_issue['id']}/").status_code == 404
    activity = tracker.api("GET", f"issues/{merged['id']}/activities/").json()["activity"]
    assert any(a["type"] == "merge" for a in activity)
    with sdk_for(project, shop):  # a later event of the merged-away issue joins the merged one
        capture(lambda: type_error.checkout(3))
    wait_for(lambda: tracker.issues(project)[0]["count"] == "4")

    hashes = tracker.api("GET", f"issues/{merged['id']}/hashes/").json()
    assert type_hash in {h["id"] for h in hashes}
    r = tracker.api("DELETE", f"issues/{merged['id']}/hashes/", params={"id": type_hash})
    assert r.status_code == 202, r.text
    split = {i["id"]: i for i in tracker.issues(project)}
    assert split[r.json()["id"]]["count"] == "2" and split[merged["id"]]["count"] == "2"
    assert split[r.json()["id"]]["title"].startswith("TypeError") and split[merged["id"]]["userCount"] == 2
    with sdk_for(project, shop):  # and later events with that hash follow it out
        capture(lambda: type_error.checkout(4))
    wait_for(lambda: {i["id"]: i["count"] for i in tracker.issues(project)}[r.json()["id"]] == "3")


def test_merge_and_unmerge_from_the_dashboard(tracker: TrackerServer, project: Project, shop: Shop) -> None:
    with sdk_for(project, shop):
        capture(lambda: shop.app("base").checkout(1))
        capture(lambda: shop.app("type", raise_line='raise TypeError("bad order")').checkout(2))
    ids = sorted((i["id"] for i in tracker.wait_issues(project, 2)), key=int)
    listing = tracker.web.get("/issues/", params={"project": project.slug}).text
    assert f'name="id" value="{ids[0]}" form="bulk"' in listing
    merge = {"id": ids, "bulk": "merge"}
    assert tracker.form("/issues/bulk/", data=merge,
                      headers={"Origin": "http://evil.example"}).status_code == 403
    assert tracker.form("/issues/bulk/", data={**merge, "id": ids[:1]}).status_code == 400
    r = tracker.form("/issues/bulk/", data=merge)
    assert r.status_code == 303 and r.headers["location"] == f"/issues/{ids[0]}/"
    [merged] = tracker.issues(project)
    digest = tracker.latest_event(merged["id"])["fingerprints"][0]
    assert f'name="hash" value="{digest}"' in tracker.web.get(f"/issues/{merged['id']}/").text
    r = tracker.form(f"/issues/{merged['id']}/unmerge/", data={"hash": digest})
    assert r.status_code == 303
    assert len(tracker.issues(project)) == 2
    r = tracker.form(f"/issues/{merged['id']}/unmerge/", data={"hash": "0" * 32})
    assert r.status_code == 400 and "does not have these hashes" in r.text


def test_issue_page_explains_the_grouping(tracker: TrackerServer, project: Project, shop: Shop) -> None:
    raise_line = 'raise ValueError("<b>declined</b> & done")'
    with sdk_for(project, shop):
        capture(lambda: shop.app("markup", raise_line=raise_line).checkout(1))
    [issue] = tracker.wait_issues(project, 1)
    page = tracker.web.get(f"/issues/{issue['id']}/").text
    assert "<b>declined</b>" not in page
    grouping = page[page.index('id="grouping"'):]
    event = tracker.latest_event(issue["id"])
    for value in ("shop.billing", "checkout", "charge", raise_line, "ValueError", event["fingerprints"][0]):
        assert str(markupsafe.escape(value)) in grouping, value
    assert "built-in rule path:**/site-packages/** -app" in grouping  # why the library frame is not in app
    assert "as the SDK sent it" in grouping
