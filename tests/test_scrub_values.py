"""Scrubbing by value as well as by key (issue 15, item 4): the corpus of shared/docs/scrubbing.md §8
row by row, the value rules (Bearer/Basic under innocent keys, PEM keys, URL passwords, US SSNs) in
every part of an event, and a real FastAPI app's ASGI scope in its frame locals, sent by the real SDK."""
from __future__ import annotations

import base64
import json
import re
import secrets
from typing import Any, Callable

from conftest import Project, TrackerServer, wait_for
from fastapi import FastAPI, Request
from starlette.testclient import TestClient
from test_scrubbing import database_text, logged_envelopes, put_project, send, stored

F = "[Filtered]"
JWT = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0.sig"
PEM = "-----BEGIN RSA PRIVATE KEY-----\nMIIEabc\n-----END RSA PRIVATE KEY-----"

# §8: (row, input under `extra.note` or a {key: value}, expected, expected `_meta` remark or None).
# Rows marked `same` are Sentry's output exactly; the others are where the tracker filters more on
# purpose (README "Data scrubbing": safer, and only the secret goes) or checks a card's Luhn digit
# and an IBAN's mod 97 (a number that fails them is no card or IBAN).
CORPUS: list[tuple[str, Any, Any, list[Any] | None, bool]] = [
    ("K7", {"authorized_amount": 100}, {"authorized_amount": F}, ["@password:filter", "s", 0, 10], False),
    ("K8", {"authorized_amount": "100"}, {"authorized_amount": F}, ["@password:filter", "s", 0, 10], True),
    ("K11", {"session:duration": "12s"}, {"session:duration": "12s"}, None, True),
    ("K15", {"bearer": "abc"}, {"bearer": F}, ["@password:filter", "s", 0, 10], False),
    ("K16", {"otp": "123456", "two-factor": "654321", "sessions": 3}, {"otp": F, "two-factor": F, "sessions": 3},
     None, True),
    ("V1", "the password is wrong", F, ["@password:filter", "s", 0, 10], True),
    ("V2", "max_tokens=100", f"max_tokens={F}", ["@password:filter", "s", 11, 21], False),
    ("V3", "the token budget exceeded", "the token budget exceeded", None, True),
    ("V5", "author: bob", F, ["@password:filter", "s", 0, 10], True),
    ("V6", "Authorization: Basic dXNlcjpwYXNz", F, ["@password:filter", "s", 0, 10], True),
    ("V7", "Basic dXNlcjpwYXNz", F, ["@password:filter", "s", 0, 10], False),
    ("V7b", "Basic plan", "Basic plan", None, True),
    ("V8", f"calling api with Bearer {JWT} ok", f"calling api with {F} ok", ["@bearer:filter", "s", 17, 27], True),
    ("V9", "could not connect to postgres://user:s3cr3t@db.internal:5432/app",
     f"could not connect to postgres://user:{F}@db.internal:5432/app", ["@urlauth:legacy", "s", 37, 47], True),
    ("V10", "redis://:onlypass@cache:6379/0", f"redis://:{F}@cache:6379/0", ["@urlauth:legacy", "s", 9, 19], False),
    ("V11", "postgres://user:p@ss@host/db", f"postgres://user:{F}@host/db", ["@urlauth:legacy", "s", 16, 26], False),
    ("V12", f"key: {PEM}", f"key: -----BEGIN RSA PRIVATE KEY-----\n{F}\n-----END RSA PRIVATE KEY-----",
     ["@pemkey:filter", "s", 37, 47], True),
    ("V13", "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----",
     "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----", None, True),
    ("V14", "paid with 4111 1111 1111 1111 today", f"paid with {F} today", ["@creditcard:filter", "s", 10, 20], True),
    ("V15", "4111-1111-1111-1112", "4111-1111-1111-1112", None, False),
    ("V16", "4222222222222", F, ["@creditcard:filter", "s", 0, 10], False),
    ("V17", "1234567812345678", "1234567812345678", None, True),
    ("V18", "transfer to DE89370400440532013000 done", f"transfer to {F} done", ["@iban:filter", "s", 12, 22], True),
    ("V19", "DE89 3704 0044 0532 0130 00", F, ["@iban:filter", "s", 0, 10], False),
    ("V20", "DE00370400440532013000", "DE00370400440532013000", None, False),
    ("V21", "ssn 123-45-6789 x", f"ssn {F} x", ["@usssn:filter", "s", 4, 14], True),
    ("V22", "123456789", "123456789", None, True),
    ("V23", "https://api.example.com/cb?jwt=eyJ.sig", "https://api.example.com/cb?jwt=eyJ.sig", None, True),
    ("V24", "https://api.example.com/cb?id_token=eyJ.sig", f"https://api.example.com/cb?id_token={F}",
     ["@password:filter", "s", 36, 46], False),
    ("V25", "[(b'authorization', b'Bearer abc123'), (b'host', b'example.com')]", F,
     ["@password:filter", "s", 0, 10], True),
    ("V26", "[(b'cookie', b'sessionid=s1; theme=dark')]", f"[(b'cookie', b'sessionid={F}; theme=dark')]",
     ["@password:filter", "s", 25, 35], False),
    ("V27", "mail bob@example.com from 10.1.2.3", "mail bob@example.com from 10.1.2.3", None, True),
    ("V28", "/home/alice/.ssh/id_rsa", "/home/alice/.ssh/id_rsa", None, True),
    # S1, with `api_key` a safe field: that key at any depth and in any case; a longer key is not it
    ("S1", {"a": {"b": {"api_key": "k1"}}, "API_KEY": "k2"}, {"a": {"b": {"api_key": "k1"}}, "API_KEY": "k2"},
     None, True),
    ("S1b", {"api_key_2": "k3"}, {"api_key_2": F}, ["@password:filter", "s", 0, 10], True),
]
L1 = "login failed password=hunter2 card 4111 1111 1111 1111 Bearer abc"
E1 = "bad password hunter2; card 4111 1111 1111 1111; Bearer abc123"


def rem(meta: dict[str, Any], *path: str | int) -> list[list[Any]]:
    for part in path:
        meta = meta[str(part)]
    return meta[""]["rem"]


def test_the_corpus_of_sentry_defaults(tracker: TrackerServer, project: Project) -> None:
    """Every §8 row under `extra`, and the rows about other parts (L1, E1, H1, H2, C1) in theirs."""
    assert put_project(tracker, project, {"safeFields": ["api_key"]}).status_code == 200
    event = {"logentry": {"formatted": L1},
             "exception": {"values": [{"type": "LoginError", "value": E1}]},
             "request": {"url": "https://shop.example/login", "headers": [["X-Custom", "Bearer abc.def"],
                                                                           ["User-Agent", "Mozilla Bearer abc"]],
                         "cookies": {"sessionid": "s1", "csrftoken": "c1", "auth": "a1", "theme": "dark",
                                     "session": "s2", "symfony": "s3"}},
             "extra": {row: value for row, value, *_ in CORPUS}}
    api, raw = stored(tracker, project, event)
    wrong = [(row, value, raw["extra"][row], expected) for row, value, expected, _, _ in CORPUS
             if raw["extra"][row] != expected]
    assert not wrong, "\n".join(f"{row}: {value!r} → {got!r}, expected {want!r}" for row, value, got, want in wrong)
    assert api["extra"] == raw["extra"]
    for row, value, _, remark, _ in CORPUS:
        if remark is None:
            assert row not in raw["_meta"].get("extra", {}) or isinstance(value, dict), row
        elif isinstance(value, dict):
            assert rem(raw["_meta"], "extra", row, next(iter(value))) == [remark], row
        else:
            assert raw["_meta"]["extra"][row][""] == {"rem": [remark], "len": len(value)}, row
    assert "sessions" not in raw["_meta"]["extra"]["K16"]
    # L1: the tracker filters the password in a message as well (Sentry keeps it), with [Filtered] markers
    assert raw["logentry"]["formatted"] == f"login failed password={F} card {F} {F}"
    assert rem(raw["_meta"], "logentry", "formatted") == [["@password:filter", "s", 22, 32],
                                                          ["@creditcard:filter", "s", 38, 48],
                                                          ["@bearer:filter", "s", 49, 59]]
    # E1: exception values are prose: their words stay, card numbers and tokens go (Sentry keeps all)
    assert raw["exception"]["values"][0]["value"] == f"bad password hunter2; card {F}; {F}"
    assert api["title"] == f"LoginError: bad password hunter2; card {F}; {F}"
    # H1, H2: a token under an innocent header goes; the User-Agent is never scrubbed
    assert raw["request"]["headers"] == [["X-Custom", F], ["User-Agent", "Mozilla Bearer abc"]]
    assert rem(raw["_meta"], "request", "headers", 0, 1) == [["@bearer:filter", "s", 0, 10]]
    # C1: session and CSRF cookies by name (Sentry's list), `auth` by the key rule, `theme` kept
    assert raw["request"]["cookies"] == {"sessionid": F, "csrftoken": F, "auth": F, "theme": "dark",
                                         "session": F, "symfony": F}
    assert rem(raw["_meta"], "request", "cookies", "session") == [["@anything:filter", "s", 0, 10]]


def planted_secrets() -> dict[str, str]:
    """Fresh secrets of each shape the value rules know (unique, so finding one anywhere is a leak)."""
    body = base64.b64encode(secrets.token_bytes(48)).decode()
    return {"password": f"pw{secrets.token_hex(8)}", "jwt": f"eyJ{secrets.token_hex(12)}.{secrets.token_hex(12)}.sg",
            "basic": base64.b64encode(f"svc:{secrets.token_hex(8)}".encode()).decode(),
            "pem": body, "ssn": f"{secrets.randbelow(800) + 100}-{secrets.randbelow(89) + 10}-"
                                f"{secrets.randbelow(8999) + 1000}"}


def leaks(found: str, planted: dict[str, str]) -> list[str]:
    """Which planted secrets (or their halves: a PEM body in lines) `found` still holds."""
    return [name for name, value in planted.items() if value in found or value[:24] in found]


def everywhere(s: dict[str, str]) -> dict[str, Any]:
    """An event with each secret under innocent keys in every part that holds data or text."""
    url, pem = f"postgres://app:{s['password']}@db/x", f"-----BEGIN PRIVATE KEY-----\n{s['pem']}\n-----END PRIVATE KEY-----"
    values = {"upstream": f"Bearer {s['jwt']}", "relay": f"Basic {s['basic']}", "dsn": url, "key": pem,
              "customer": f"ssn {s['ssn']}"}
    crumbs = [{"category": "db", "message": f"connect {url}", "data": {"header": f"Bearer {s['jwt']}"}},
              {"category": "log", "message": f"ssn {s['ssn']} with {pem}", "data": {"basic": f"Basic {s['basic']}"}}]
    return {
        "logentry": {"message": "connect %s as %s", "params": [url, f"Basic {s['basic']}"],
                     "formatted": f"connect {url} as Basic {s['basic']} for {s['ssn']}"},
        "exception": {"values": [{"type": "ConnectError", "value": f"cannot reach {url} with Bearer {s['jwt']}",
                                  "stacktrace": {"frames": [{"function": "connect", "filename": "db.py", "lineno": 3,
                                                             "in_app": True, "vars": {**values,
                                                             "pairs": [["x-upstream", f"b'Bearer {s['jwt']}'"]]}}]}}]},
        "extra": values, "contexts": {"billing": {"type": "billing", **values}},
        "breadcrumbs": crumbs, "user": {"id": "u1", "data": values},
        "request": {"url": "https://shop.example/pay", "data": values, "env": {"DATABASE_URL": url},
                    "headers": [["X-Upstream", f"Bearer {s['jwt']}"], ["X-Relay", f"Basic {s['basic']}"]]},
        "tags": {"upstream": f"Bearer {s['jwt']}", "db": url},
    }


def test_value_secrets_are_filtered_everywhere(tracker: TrackerServer, project: Project) -> None:
    planted = planted_secrets()
    event_id = send(tracker, project, everywhere(planted))
    issue = tracker.wait_issues(project, 1)[0]
    api = tracker.api("GET", f"issues/{issue['id']}/events/{event_id}/")
    raw = tracker.web.get(f"/issues/{issue['id']}/events/{event_id}/json")
    pages = [tracker.web.get(f"/issues/{issue['id']}/"), tracker.web.get(f"/issues/{issue['id']}/events/{event_id}/")]
    for answer in (api, raw, *pages):
        assert answer.status_code == 200 and not leaks(answer.text, planted), (answer.url, leaks(answer.text, planted))
    assert not leaks(json.dumps(tracker.issues(project)), planted)
    assert not leaks(database_text(tracker.db, project), planted)
    assert not leaks(wait_for(lambda: logged_envelopes(tracker.db, project)), planted)
    stored_event = raw.json()
    extra = stored_event["extra"]
    assert extra["upstream"] == extra["relay"] == F and extra["dsn"] == f"postgres://app:{F}@db/x"
    assert extra["key"] == f"-----BEGIN PRIVATE KEY-----\n{F}\n-----END PRIVATE KEY-----"
    assert extra["customer"] == f"ssn {F}"
    assert stored_event["exception"]["values"][0]["value"] == f"cannot reach postgres://app:{F}@db/x with {F}"
    assert {tag: value for tag, value in stored_event["tags"]}["upstream"] == F
    assert re.search(r"\d+ values filtered by the server", pages[0].text)
    # the control: the event did carry each secret, as a project without the default rules keeps it
    control = tracker.create_project()
    assert put_project(tracker, control, {"dataScrubberDefaults": False}).status_code == 200
    _, kept = stored(tracker, control, everywhere(planted))
    assert set(leaks(json.dumps(kept), planted)) == set(planted)


# -- a real FastAPI app, the real SDK, `include_local_variables` -----------------------------------

app = FastAPI()


@app.post("/login")
async def login(request: Request) -> None:
    """An endpoint that fails with the ASGI scope among its locals, as any ASGI app's frames have it."""
    scope = request.scope  # noqa: F841 (sent as a frame variable): headers as (bytes, bytes) pairs
    raw_headers = list(request.scope["headers"])  # noqa: F841
    logged = f"headers: {request.scope['headers']}"  # noqa: F841 (a whole repr of the pairs)
    body = await request.json()
    database = f"postgres://app:{body['password']}@db/x"  # noqa: F841
    raise RuntimeError("login failed")


def test_asgi_scope_headers_in_frame_locals(tracker: TrackerServer, project: Project,
                                            sdk: Callable[..., None]) -> None:
    planted = planted_secrets()
    sdk(project.dsn, include_local_variables=True, traces_sample_rate=0)
    with TestClient(app, raise_server_exceptions=False) as client:
        r = client.post("/login", json={"password": planted["password"]},
                        headers={"Authorization": f"Bearer {planted['jwt']}", "X-Relay": f"Basic {planted['basic']}"})
    assert r.status_code == 500
    issue = tracker.wait_issues(project, 1)[0]
    event = tracker.latest_event(issue["id"])
    raw = tracker.web.get(f"/issues/{issue['id']}/events/{event['eventID']}/json")
    frames = raw.json()["exception"]["values"][-1]["stacktrace"]["frames"]
    frame = next(f for f in frames if f.get("function") == "login")["vars"]
    pairs = dict(frame["raw_headers"])
    assert "b'authorization'" in pairs and pairs["b'authorization'"] == F  # the pair's key is a bytes repr
    assert pairs["b'x-relay'"] == f"b'{F}'" and pairs["b'host'"] == "b'testserver'"
    assert dict(frame["scope"]["headers"])["b'authorization'"] == F
    assert frame["logged"] == F  # the repr names `authorization` outside any key=value: gone whole
    assert re.fullmatch(rf"'postgres://app:{re.escape(F)}@db/x'", frame["database"])
    page = tracker.web.get(f"/issues/{issue['id']}/")
    for answer in (raw, page, tracker.api("GET", f"issues/{issue['id']}/events/latest/")):
        assert answer.status_code == 200 and not leaks(answer.text, planted), (answer.url, leaks(answer.text, planted))
    assert not leaks(database_text(tracker.db, project), planted)


def test_hostile_texts_are_scrubbed_in_linear_time(tracker: TrackerServer, project: Project) -> None:
    """The bound: events near the 1 MiB item limit made of what the rules look for (a hundred thousand
    secrets in one text, runs with no end) are stored within the client's 10 s timeout: each costs
    about 1 s per MB in-process, where a quadratic merge of the same spans took minutes."""
    _, raw = stored(tracker, project, {"message": "pairs", "extra": {"pairs": "auth=1&" * 130_000}})
    assert raw["extra"]["pairs"].startswith(f"auth={F}&auth={F}&")  # each `auth` is a pair's key
    each = 110_000
    hostile = {"seen": "Bearer x " * (each // 9), "ssns": "123-45-6789 " * (each // 12),
               "json": '"password": "x", ' * (each // 17), "basic": "Basic dXNlcjpwYXNz " * (each // 19),
               "pem": "-----BEGIN PRIVATE KEY-----" * (each // 27), "words": "token" * (each // 5),
               "urls": "ab://u:" * (each // 7), "cards": "4111 " * (each // 5)}
    _, raw = stored(tracker, tracker.create_project(), {"message": "hostile", "extra": hostile})
    assert raw["extra"]["seen"].startswith(f"{F} {F} ") and raw["extra"]["ssns"].startswith(f"{F} {F} ")
