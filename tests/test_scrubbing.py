"""Server-side data scrubbing: secrets are filtered before an event is grouped or stored, per project
settings (API, dashboard, config file), `_meta` records what was filtered, the event page says so."""
from __future__ import annotations

import contextlib
import json
import sqlite3
import uuid
from pathlib import Path
from typing import Any, Callable

import httpx
import pytest
import sentry_sdk
import zstandard
from conftest import Configure, Project, TrackerServer, wait_for
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sentry_sdk.scrubber import EventScrubber

import tracker as tracker_module

F = "[Filtered]"
VISA, MASTERCARD, AMEX = "4111 1111 1111 1111", "5555-5555-5555-4444", "378282246310005"
NOT_A_CARD = "4111111111111112"  # 16 digits, Luhn check fails: an order number
IBAN, IBAN_COMPACT, BAD_IBAN = "DE89 3704 0044 0532 0130 00", "GB82WEST12345698765432", "DE89 3704 0044 0532 0130 01"


def secret() -> str:
    return f"s3cr3t-{uuid.uuid4().hex}"


def send(tracker: TrackerServer, project: Project, event: dict[str, Any]) -> str:
    """POST one event in an envelope, as an SDK would; the acknowledged event id."""
    event_id = uuid.uuid4().hex
    body = b"\n".join(json.dumps(part).encode() for part in ({"event_id": event_id}, {"type": "event"}, event))
    r = httpx.post(f"{tracker.url}/api/{project.id}/envelope/", content=body, timeout=10,
                   headers={"X-Sentry-Auth": f"Sentry sentry_key={project.key}, sentry_version=7"})
    assert r.status_code == 200, r.text
    return event_id


def stored(tracker: TrackerServer, project: Project, event: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """Send `event`; return (the event as the API shows it, the event as stored)."""
    event_id = send(tracker, project, event)
    issue = wait_for(lambda: next((i for i in tracker.issues(project) if i), None))
    api = wait_for(lambda: (r := tracker.api("GET", f"issues/{issue['id']}/events/{event_id}/")).status_code == 200
                   and r.json())
    raw = tracker.web.get(f"/issues/{issue['id']}/events/{event_id}/json")
    assert raw.status_code == 200, raw.text
    return api, raw.json()


def entry(event: dict[str, Any], kind: str) -> tuple[int, dict[str, Any]]:
    """The index and data of one of the API event's entries."""
    return next((i, e["data"]) for i, e in enumerate(event["entries"]) if e["type"] == kind)


def rule_at(meta: dict[str, Any], *path: str | int) -> list[list[Any]]:
    """The remarks `_meta` holds for the value at `path`."""
    for part in path:
        meta = meta[str(part)]
    return meta[""]["rem"]


def put_project(tracker: TrackerServer, project: Project, body: Any) -> httpx.Response:
    return tracker.api("PUT", f"projects/tracker/{project.slug}/", json=body)


def read_only(db: Path) -> sqlite3.Connection:
    """The database file as the server left it, its payload dictionaries loaded for decompressing."""
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    tracker_module.PAYLOADS.load(conn)
    return conn


def database_text(db: Path, project: Project) -> str:
    """What the database holds, as text: every table dumped as SQL (blobs as hex), and the project's
    event payloads decompressed."""
    with contextlib.closing(read_only(db)) as conn:
        payloads = [json.dumps(tracker_module.decompress_payload(row[0]), ensure_ascii=False)
                    for row in conn.execute("SELECT payload FROM events WHERE project_id = ?", (project.id,))]
        return "\n".join([*conn.iterdump(), *payloads])


def logged_envelopes(db: Path, project: Project) -> str:
    """The bodies the envelope log keeps for the project, decompressed."""
    with contextlib.closing(read_only(db)) as conn:
        rows = conn.execute("SELECT body FROM envelopes WHERE project_id = ? AND body IS NOT NULL", (project.id,))
        return "\n".join(zstandard.decompress(row[0]).decode("utf-8", "replace") for row in rows)


# -- the real SDK -------------------------------------------------------------------------------

def charge(card_number: str, password: str, api_key: str, order_number: str) -> None:
    """A function whose locals the SDK sends as the crash frame's vars."""
    session = {"sessionid": password, "user": "bob"}  # noqa: F841 (sent as a frame variable)
    raise ValueError(f"card {card_number} declined for order {order_number}")


def capture_with_sdk(project: Project, sdk: Callable[..., None], password: str) -> None:
    """Everything a Sentry user sends from a Python service, the SDK's own scrubbing turned off."""
    sdk(project.dsn, send_default_pii=True, event_scrubber=EventScrubber(denylist=[], pii_denylist=[]))
    request = {"method": "POST", "url": "https://shop.example/pay?step=2", "query_string": f"step=2&token={password}",
               "headers": {"Authorization": f"Bearer {password}", "Cookie": f"sessionid={password}",
                           "X-Api-Key": password, "Accept": "application/json"},
               "cookies": {"sessionid": password, "theme": "dark"},
               "data": {"username": "bob", "password": password, "card": {"number": VISA}}}
    with sentry_sdk.new_scope() as scope:
        scope.add_event_processor(lambda event, hint: {**event, "request": request})
        scope.set_extra("db_password", password)
        scope.set_extra("order", {"note": f"paid with {MASTERCARD}", "iban": IBAN})
        scope.set_context("payment", {"api_key": password, "provider": "acme"})
        scope.set_user({"id": "u-1", "ip_address": "203.0.113.9"})
        sentry_sdk.add_breadcrumb(category="http", message=f"POST /charge?access_token={password}&page=2",
                                  data={"auth": password, "status": 402})
        try:
            charge(VISA, password, password, NOT_A_CARD)
        except ValueError:
            sentry_sdk.capture_exception()
    sentry_sdk.flush()


def test_real_sdk_event_is_scrubbed_by_the_server(tracker: TrackerServer, project: Project,
                                                  sdk: Callable[..., None]) -> None:
    password = secret()
    capture_with_sdk(project, sdk, password)
    issue = tracker.wait_issues(project, 1)[0]
    event = tracker.latest_event(issue["id"])
    assert password not in json.dumps(event)
    _, req = entry(event, "request")
    headers = dict(req["headers"])
    assert headers["Authorization"] == headers["Cookie"] == headers["X-Api-Key"] == F
    assert headers["Accept"] == "application/json"
    assert req["data"] == {"username": "bob", "password": F, "card": {"number": F}}  # `card` is no secret key
    assert dict(req["query"]) == {"step": "2", "token": F}
    assert req["cookies"] == {"sessionid": F, "theme": "dark"}
    assert event["extra"]["db_password"] == F
    assert event["extra"]["order"] == {"note": f"paid with {F}", "iban": F}
    assert event["contexts"]["payment"] == {"api_key": F, "provider": "acme", "type": "default"}  # Sentry's type of the unknown
    _, exc = entry(event, "exception")
    value = exc["values"][-1]["value"]
    assert value == f"card {F} declined for order {NOT_A_CARD}" and issue["title"] == f"ValueError: {value}"
    frame_vars = exc["values"][-1]["stacktrace"]["frames"][-1]["vars"]
    assert frame_vars["password"] == frame_vars["api_key"] == F and frame_vars["card_number"] == f"'{F}'"
    assert frame_vars["order_number"] == repr(NOT_A_CARD) and frame_vars["session"] == {"sessionid": F, "user": "'bob'"}
    _, crumbs = entry(event, "breadcrumbs")
    crumb = next(c for c in crumbs["values"] if c.get("category") == "http")
    assert crumb["message"] == f"POST /charge?access_token={F}&page=2" and crumb["data"] == {"auth": F, "status": 402}
    assert event["user"]["ip_address"] == "203.0.113.9"  # only with scrubIPAddresses
    on_disk = database_text(tracker.db, project)
    assert password not in on_disk and "s3cr3t-" not in on_disk and f"Bearer {F}" not in on_disk


def test_the_envelope_log_keeps_no_secret(tracker: TrackerServer, project: Project, sdk: Callable[..., None]) -> None:
    password = secret()
    capture_with_sdk(project, sdk, password)
    tracker.wait_issues(project, 1)
    logged = wait_for(lambda: logged_envelopes(tracker.db, project))
    assert password not in logged


def test_the_same_sdk_event_is_kept_whole_with_scrubbing_off(tracker: TrackerServer, project: Project,
                                                               sdk: Callable[..., None]) -> None:
    """The control: what the SDK sent does hold the secrets, so the test above proves the server."""
    assert put_project(tracker, project, {"dataScrubber": False}).status_code == 200
    password = secret()
    capture_with_sdk(project, sdk, password)
    event = tracker.latest_event(tracker.wait_issues(project, 1)[0]["id"])
    _, req = entry(event, "request")
    assert dict(req["headers"])["Authorization"] == f"Bearer {password}"
    assert event["extra"]["order"]["iban"] == IBAN and "@password:filter" not in json.dumps(event)
    assert VISA in entry(event, "exception")[1]["values"][-1]["value"]


# -- each place, by hand-built events ----------------------------------------------------------

RAW_REQUEST = {"url": "https://shop.example/login", "method": "POST",
               "headers": [["Authorization", "Basic dXNlcjpwYXNz"], ["Cookie", "sessionid=abc; theme=dark"],
                           ["X-CSRFToken", "tok"], ["User-Agent", "curl/8.0"]],
               "query_string": "page=2&access_token=abc&sort=name",
               "cookies": "theme=dark; sessionid=abc123; csrftoken=xyz",
               "data": "user=bob&password=hunter2&remember=1"}
PAIRS_REQUEST = {"url": "https://shop.example/login", "method": "POST",
                 "headers": {"X-Api-Key": "k-123", "Accept": "*/*"},
                 "query_string": [["page", "2"], ["api_key", "k-123"]],
                 "cookies": {"theme": "dark", "sessionid": "abc123"},
                 "data": '{"username": "bob", "password": "hunter2", "remember": true}',
                 "env": {"REMOTE_ADDR": "198.51.100.7", "HTTP_AUTHORIZATION": "Bearer t"}}


def test_request_with_raw_strings(tracker: TrackerServer, project: Project) -> None:
    """Headers as pairs, a raw query string, a cookie string and a form body: in a string only the
    secret part is replaced."""
    event, raw = stored(tracker, project, {"message": "login failed", "request": RAW_REQUEST})
    index, req = entry(event, "request")
    assert req["headers"] == [["Authorization", F], ["Cookie", F], ["X-CSRFToken", F], ["User-Agent", "curl/8.0"]]
    assert req["query"] == [["page", "2"], ["access_token", F], ["sort", "name"]]
    assert req["cookies"] == f"theme=dark; sessionid={F}; csrftoken={F}"
    assert req["data"] == f"user=bob&password={F}&remember=1"
    meta = event["_meta"]["entries"][str(index)]["data"]
    assert rule_at(meta, "headers", 0, 1) == [["@password:filter", "s", 0, 10]]
    assert rule_at(meta, "query", 1, 1) == [["@password:filter", "s", 0, 10]]
    first, second = len("theme=dark; sessionid="), len(f"theme=dark; sessionid={F}; csrftoken=")
    assert rule_at(meta, "cookies") == [["@password:filter", "s", first, first + 10],
                                        ["@password:filter", "s", second, second + 10]]
    start = len("user=bob&password=")
    assert rule_at(meta, "data") == [["@password:filter", "s", start, start + 10]]
    assert meta["data"][""]["len"] == len(RAW_REQUEST["data"])
    assert raw["_meta"]["request"]["headers"]["0"]["1"][""] == {"rem": [["@password:filter", "s", 0, 10]],
                                                               "len": len("Basic dXNlcjpwYXNz")}


def test_request_with_pairs_dicts_and_a_json_body(tracker: TrackerServer, project: Project) -> None:
    event, _ = stored(tracker, project, {"message": "login failed", "request": PAIRS_REQUEST})
    _, req = entry(event, "request")
    assert req["headers"] == [["X-Api-Key", F], ["Accept", "*/*"]]
    assert req["query"] == [["page", "2"], ["api_key", F]]
    assert req["cookies"] == {"theme": "dark", "sessionid": F}
    assert req["data"] == f'{{"username": "bob", "password": "{F}", "remember": true}}'
    assert req["env"] == {"REMOTE_ADDR": "198.51.100.7", "HTTP_AUTHORIZATION": F}


NESTED = {
    "message": "sync failed",
    "exception": {"values": [{"type": "SyncError", "value": f"charge {AMEX} to {IBAN_COMPACT} failed",
                              "stacktrace": {"frames": [{"function": "sync", "filename": "app/sync.py", "lineno": 3,
                                                         "in_app": True, "context_line": "    password = load()",
                                                         "vars": {"password": "'hunter2'", "retries": 3,
                                                                  "db_password": 1234, "ok": True,
                                                                  "settings": {"nested": [{"Private_Key": "pk"}]}}}]}}]},
    "extra": {"customer": {"id": 7, "credentials": {"user": "bob", "pass": "x"}, "notes": ["call back", VISA]},
              "order_number": NOT_A_CARD, "bad_iban": BAD_IBAN},
    "contexts": {"billing": {"type": "billing", "card_holder": "Bob", "last_token": "tok", "plan": "pro"}},
    "breadcrumbs": [{"category": "query", "message": f"UPDATE accounts SET iban = '{IBAN}' WHERE id = 7",
                     "data": {"sql.params": {"secret": "s"}, "rows": 1}},
                    {"category": "log", "message": 'got {"api_key": "abc", "page": 2}'}],
    "tags": {"session_id": "abc", "service": "billing"},
}


def test_vars_extra_contexts_breadcrumbs_and_messages(tracker: TrackerServer, project: Project) -> None:
    event, raw = stored(tracker, project, NESTED)
    _, exc = entry(event, "exception")
    assert exc["values"][0]["value"] == f"charge {F} to {F} failed"
    frame = exc["values"][0]["stacktrace"]["frames"][0]
    assert frame["vars"] == {"password": F, "retries": 3, "db_password": F, "ok": True,
                             "settings": {"nested": [{"Private_Key": F}]}}
    assert frame["context"] == [[3, "    password = load()"]]  # source code is not data
    assert event["extra"] == {"customer": {"id": 7, "credentials": F, "notes": ["call back", F]},
                              "order_number": NOT_A_CARD, "bad_iban": BAD_IBAN}
    assert event["contexts"]["billing"] == {"type": "billing", "card_holder": "Bob", "last_token": F, "plan": "pro"}
    _, crumbs = entry(event, "breadcrumbs")
    assert crumbs["values"][0]["message"] == f"UPDATE accounts SET iban = '{F}' WHERE id = 7"
    assert crumbs["values"][0]["data"] == {"sql.params": {"secret": F}, "rows": 1}
    assert crumbs["values"][1]["message"] == f'got {{"api_key": "{F}", "page": 2}}'
    assert {t["key"]: t["value"] for t in event["tags"]}["session_id"] == F
    meta = raw["_meta"]
    assert rule_at(meta, "exception", "values", 0, "value") == [["@creditcard:filter", "s", 7, 17],
                                                                ["@iban:filter", "s", 21, 31]]
    assert meta["exception"]["values"]["0"]["value"][""]["len"] == len(NESTED["exception"]["values"][0]["value"])
    assert rule_at(meta, "extra", "customer", "notes", 1) == [["@creditcard:filter", "s", 0, 10]]
    start = len("UPDATE accounts SET iban = '")
    assert rule_at(meta, "breadcrumbs", "values", 0, "message") == [["@iban:filter", "s", start, start + 10]]
    assert rule_at(meta, "exception", "values", 0, "stacktrace", "frames", 0, "vars", "db_password") == \
        [["@password:filter", "s", 0, 10]]
    assert "len" not in meta["exception"]["values"]["0"]["stacktrace"]["frames"]["0"]["vars"]["db_password"][""]
    for name in ("extra", "context"):  # the API shows extra under both names
        assert rule_at(event["_meta"][name], "customer", "credentials") == [["@password:filter", "s", 0, 10]]
    issue = tracker.issues(project)[0]
    assert issue["title"] == f"SyncError: charge {F} to {F} failed"


def test_event_page_lists_what_was_filtered(tracker: TrackerServer, project: Project) -> None:
    send(tracker, project, {"message": "login failed", "request": RAW_REQUEST, "extra": {"token": "t"}})
    issue = tracker.wait_issues(project, 1)[0]
    page = tracker.web.get(f"/issues/{issue['id']}/")
    assert page.status_code == 200
    assert "7 values filtered by the server" in page.text
    for path in ("request.headers.Authorization", "request.headers.Cookie", "request.headers.X-CSRFToken",
                 "request.query_string.access_token", "request.cookies", "request.data", "extra.token"):
        assert path in page.text
    assert f'href="/projects/{project.slug}/scrubbing/"' in page.text


# -- the project's settings ---------------------------------------------------------------------

def test_project_api_reads_and_writes_the_settings(tracker: TrackerServer, project: Project) -> None:
    path = f"projects/tracker/{project.slug}/"
    defaults = {"dataScrubber": True, "dataScrubberDefaults": True, "sensitiveFields": [], "safeFields": [],
                "scrubIPAddresses": False}
    assert {k: tracker.api("GET", path).json()[k] for k in defaults} == defaults
    r = put_project(tracker, project, {"sensitiveFields": ["order_ref", " ", "order_ref"], "safeFields": ["auth_mode"]})
    assert r.status_code == 200, r.text
    changed = {**defaults, "sensitiveFields": ["order_ref"], "safeFields": ["auth_mode"]}
    assert {k: r.json()[k] for k in defaults} == changed
    assert {k: tracker.api("GET", path).json()[k] for k in defaults} == changed
    assert tracker.api("GET", path).json()["slug"] == project.slug


@pytest.mark.parametrize("body, detail", [
    ({"dataScrubber": "yes"}, "dataScrubber must be true or false"),
    ({"scrubIPAddresses": 1}, "scrubIPAddresses must be true or false"),
    ({"sensitiveFields": "password"}, "sensitiveFields must be a list"),
    ({"safeFields": [1, 2]}, "safeFields must be a list"),
    ({"safeFields": ["x" * 201]}, "safeFields must be a list"),
    ({"sensitiveFields": [f"k{i}" for i in range(201)]}, "sensitiveFields must be a list"),
    ({"dataScrubberDefaults": None}, "dataScrubberDefaults must be true or false"),
])
def test_project_api_refuses_bad_settings(tracker: TrackerServer, project: Project, body: Any, detail: str) -> None:
    r = put_project(tracker, project, {**body, "fingerprintingRules": "error.type:X -> x"})
    assert r.status_code == 400 and detail in r.json()["detail"], r.text
    after = tracker.api("GET", f"projects/tracker/{project.slug}/").json()
    assert after["dataScrubber"] is True and after["fingerprintingRules"] == ""  # nothing was saved


def test_sensitive_and_safe_fields(tracker: TrackerServer, project: Project) -> None:
    """User-listed keys are filtered (`strip-fields`) wherever they are, safe fields win over
    everything, and the defaults still apply."""
    r = put_project(tracker, project, {"sensitiveFields": ["Order-Ref", "ssn"], "safeFields": ["auth_mode", "ssn"]})
    assert r.status_code == 200, r.text
    event, raw = stored(tracker, project, {
        "message": "checkout", "extra": {"order_ref": "A-1", "X-ORDER-REF-2": "A-2", "auth_mode": "oauth",
                                         "ssn": "078-05-1120", "password": "p", "note": "orderref=A-3&x=1"}})
    assert event["extra"] == {"order_ref": F, "X-ORDER-REF-2": F, "auth_mode": "oauth", "ssn": "078-05-1120",
                              "password": F, "note": f"orderref={F}&x=1"}
    assert rule_at(raw["_meta"], "extra", "order_ref") == [["strip-fields", "s", 0, 10]]
    assert rule_at(raw["_meta"], "extra", "password") == [["@password:filter", "s", 0, 10]]


def test_defaults_off_leaves_only_the_listed_fields(tracker: TrackerServer, project: Project) -> None:
    assert put_project(tracker, project, {"dataScrubberDefaults": False, "sensitiveFields": ["pin"]}).status_code == 200
    event, _ = stored(tracker, project, {"message": f"paid with {VISA}", "extra": {"password": "p", "pin": "1234"}})
    assert event["extra"] == {"password": "p", "pin": F}
    assert event["message"] == f"paid with {VISA}"


def test_scrub_ip_addresses(tracker: TrackerServer, project: Project) -> None:
    assert put_project(tracker, project, {"scrubIPAddresses": True}).status_code == 200
    event, raw = stored(tracker, project, {"message": "hi", "user": {"ip_address": "{{auto}}", "email": "b@x.org"},
                                           "request": PAIRS_REQUEST})
    assert {k: v for k, v in event["user"].items() if v is not None} == {"email": "b@x.org"}
    assert "REMOTE_ADDR" not in entry(event, "request")[1]["env"]
    assert raw["_meta"]["user"]["ip_address"][""] == {"rem": [["@anything:remove", "x"]], "len": len("127.0.0.1")}
    assert rule_at(raw["_meta"], "request", "env", "REMOTE_ADDR") == [["@anything:remove", "x"]]
    event, _ = stored(tracker, project, {"message": "only an address", "user": {"ip_address": "198.51.100.1"}})
    assert not event["user"] and "198.51.100.1" not in json.dumps(event)
    assert "198.51.100.1" not in json.dumps(tracker.issues(project))


def test_dashboard_form(tracker: TrackerServer, project: Project) -> None:
    path = f"/projects/{project.slug}/scrubbing/"
    page = tracker.web.get(path)
    assert page.status_code == 200 and '<input type="hidden" name="csrf"' in page.text
    assert 'name="enabled" checked' in page.text and 'name="scrub_ip" >' in page.text
    assert f'href="{path}"' in tracker.web.get("/projects/").text
    r = tracker.form(path, {"enabled": "on", "scrub_ip": "on", "sensitive_fields": "order_ref\r\n\r\nvoucher",
                            "safe_fields": "auth_mode"})
    assert r.status_code == 303 and r.headers["location"].endswith("?saved=1")
    settings_now = tracker.api("GET", f"projects/tracker/{project.slug}/").json()
    assert (settings_now["dataScrubber"], settings_now["dataScrubberDefaults"], settings_now["scrubIPAddresses"]) == \
        (True, False, True)
    assert settings_now["sensitiveFields"] == ["order_ref", "voucher"] and settings_now["safeFields"] == ["auth_mode"]
    page = tracker.web.get(path + "?saved=1")
    assert "Saved." in page.text and "order_ref\nvoucher</textarea>" in page.text
    r = tracker.form(path, {"enabled": "on", "sensitive_fields": "x" * 300})
    assert r.status_code == 400 and "at most 200 characters" in r.text and "x" * 300 in r.text


@pytest.fixture(scope="module")
def shop_server(configured: Configure) -> TrackerServer:
    config = ('[[projects]]\nname = "Shop"\nslug = "shop"\ndsn_key = "0123456789abcdef0123456789abcdef"\n'
              'scrub = {sensitive_fields = ["order_ref"], safe_fields = ["auth_mode"], scrub_ip = true}\n')
    return configured("scrubbing", config)


def test_settings_from_the_config_file(shop_server: TrackerServer) -> None:
    body = shop_server.api("GET", "projects/tracker/shop/").json()
    assert (body["sensitiveFields"], body["safeFields"], body["scrubIPAddresses"], body["dataScrubber"]) == \
        (["order_ref"], ["auth_mode"], True, True)


# -- random payloads ----------------------------------------------------------------------------

JSON = st.recursive(st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False)
                    | st.text(max_size=20), lambda children: st.lists(children, max_size=3)
                    | st.dictionaries(st.text(max_size=10), children, max_size=3), max_leaves=10)
SECRET_KEYS = st.sampled_from(["password", "X-Api-Key", "db_password", "sessionid", "Authorization", "csrftoken",
                               "access_token", "client_secret", "cvv"])
PLACES = st.sampled_from(["extra", "data", "vars", "crumb", "context", "header", "kv", "json"])


def planted(place: str, key: str, value: str, noise: Any) -> dict[str, Any]:
    """An event holding random `noise` everywhere and `key`: `value` in one place."""
    deep = {"noise": noise, "list": [noise, {"inner": {key: value}}]}
    text = {"kv": f"{noise!s:.20} {key}={value}&x=1", "json": json.dumps({"n": str(noise)[:20], key: value})}
    return {
        "message": text.get(place, "random"),
        "extra": {"noise": noise, **({"deep": deep} if place == "extra" else {})},
        "request": {"url": "https://x.example/", "data": deep if place == "data" else noise, "cookies": noise,
                    "headers": [["X-Noise", str(noise)], *([[key, value]] if place == "header" else [])]},
        "contexts": {"c": {"noise": noise, **({"deep": deep} if place == "context" else {})}},
        "breadcrumbs": [{"message": str(noise), "data": deep if place == "crumb" else {"noise": noise}}],
        "exception": {"values": [{"type": "E", "value": str(noise)[:50], "stacktrace": {"frames": [
            {"function": "f", "vars": deep if place == "vars" else {"noise": noise}}]}}]},
        "tags": {"noise": str(noise)[:30]},
        "_meta": noise,  # an SDK's own notes, whatever their shape, must not break the event's pages
    }


@pytest.fixture(scope="module")
def fuzzed(tracker: TrackerServer) -> Project:
    return tracker.create_project()


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(place=PLACES, key=SECRET_KEYS, noise=JSON)
def test_random_payloads_never_fail_and_never_keep_the_secret(tracker: TrackerServer, fuzzed: Project, place: str,
                                                              key: str, noise: Any) -> None:
    value = secret()
    event_id = send(tracker, fuzzed, planted(place, key, value, noise))  # a 200, never a 5xx
    with contextlib.closing(read_only(tracker.db)) as conn:
        issue_id, payload = conn.execute("SELECT issue_id, payload FROM events WHERE project_id = ? AND event_id = ?",
                                         (fuzzed.id, event_id)).fetchone()
    text = json.dumps(tracker_module.decompress_payload(payload), ensure_ascii=False)
    assert value not in text and F in text
    for page in (tracker.web.get(f"/issues/{issue_id}/events/{event_id}/"),
                 tracker.api("GET", f"issues/{issue_id}/events/{event_id}/")):
        assert page.status_code == 200 and value not in page.text
