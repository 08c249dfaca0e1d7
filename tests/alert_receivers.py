"""Strict local receivers for the alert channels: each speaks the real protocol on a real socket,
rejects what the documented schema forbids, records what it accepted, and can be told to
answer 429, 5xx or slowly, so retries, throttling and dead letters are proven, not assumed."""
from __future__ import annotations

import asyncio
import base64
import email
import email.policy
import hashlib
import hmac
import json
import shutil
import subprocess
import threading
import time
import uuid
from dataclasses import dataclass, field
from email.message import EmailMessage
from typing import Any, Callable, Iterator

import httpx
import pytest
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route

from conftest import free_port, wait_for


@dataclass
class Scripted:
    """A canned answer for the next request: a status, a body, headers and a delay before it."""

    status: int
    body: str = ""
    headers: dict[str, str] = field(default_factory=dict)
    delay: float = 0.0


class Receiver:
    """A Starlette app on uvicorn in a thread. Subclasses add routes; `script()` queues answers
    that replace the real one (after the request has been processed, so a delayed answer still
    has its side effect, like a Jira issue created behind a timed-out response)."""

    def __init__(self) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.lock = threading.Lock()
        self.scripted: list[Scripted] = []
        self.rejected: list[str] = []
        self.requests = 0
        self.server = uvicorn.Server(uvicorn.Config(Starlette(routes=self.routes()), host="127.0.0.1",
                                                    port=self.port, log_level="warning", lifespan="off"))
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def routes(self) -> list[Route]:
        raise NotImplementedError

    def start(self) -> Receiver:
        self.thread.start()
        wait_for(lambda: self.server.started, timeout=10)
        return self

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(5)

    def script(self, status: int, body: str = "", headers: dict[str, str] | None = None, delay: float = 0.0,
               times: int = 1) -> None:
        with self.lock:
            self.scripted.extend(Scripted(status, body, headers or {}, delay) for _ in range(times))

    def reject(self, reason: str) -> str:
        with self.lock:
            self.rejected.append(reason)
        return reason

    def take_script(self) -> Scripted | None:
        with self.lock:
            self.requests += 1
            return self.scripted.pop(0) if self.scripted else None

    async def answer(self, real: Response, canned: Scripted | None = None) -> Response:
        """The scripted answer if one is queued (or given), else the real one."""
        canned = canned or self.take_script()
        if canned is None:
            return real
        if canned.delay:
            await asyncio.sleep(canned.delay)
        return Response(canned.body, status_code=canned.status, headers=canned.headers)


# -- Slack incoming webhooks ----------------------------------------------------------------

BLOCK_TYPES = {"header", "section", "context", "divider", "actions", "image", "rich_text", "markdown"}


class SlackReceiver(Receiver):
    """`POST /services/T/B/token`: 200 `ok`, or Slack's plain-text error codes."""

    def __init__(self) -> None:
        self.hooks: set[str] = set()
        self.messages: list[dict[str, Any]] = []
        self.sent_at: dict[str, float] = {}
        self.limited = 0
        super().__init__()

    def routes(self) -> list[Route]:
        return [Route("/services/{team}/{bot}/{token}", self.post, methods=["POST"])]

    def add_hook(self) -> str:
        token = uuid.uuid4().hex[:24]
        self.hooks.add(token)
        return f"{self.url}/services/T0001/B0001/{token}"

    async def post(self, request: Request) -> Response:
        token = request.path_params["token"]
        if token not in self.hooks:
            return await self.answer(PlainTextResponse(self.reject("no_service"), status_code=404))
        raw = await request.body()
        try:
            if request.headers.get("content-type", "").startswith("application/x-www-form-urlencoded"):
                from urllib.parse import parse_qs
                body = json.loads(parse_qs(raw.decode())["payload"][0])
            else:
                body = json.loads(raw)
        except (ValueError, KeyError):
            return await self.answer(PlainTextResponse(self.reject("invalid_payload"), status_code=400))
        problem = slack_problem(body)
        if problem:
            return await self.answer(PlainTextResponse(self.reject(problem), status_code=400))
        now = time.monotonic()
        if now - self.sent_at.get(token, -60.0) < 1.0:  # about one message a second per hook
            self.limited += 1
            return JSONResponse({"ok": False, "error": "rate_limited"}, status_code=429, headers={"Retry-After": "1"})
        real = PlainTextResponse("ok")
        answered = await self.answer(real)
        if answered is real:
            self.sent_at[token] = now
            self.messages.append({**body, "_token": token})
        return answered


def slack_problem(body: Any) -> str | None:
    """Why Slack would refuse this body (None when it is fine)."""
    if not isinstance(body, dict):
        return "invalid_payload"
    if not (body.get("text") or body.get("blocks") or body.get("attachments")):
        return "no_text"
    blocks = body.get("blocks") or []
    if not isinstance(blocks, list) or len(blocks) > 50:
        return "invalid_blocks"
    for block in blocks:
        if not isinstance(block, dict) or block.get("type") not in BLOCK_TYPES:
            return "invalid_blocks"
        if block["type"] == "header":
            if block.get("text", {}).get("type") != "plain_text" or len(block["text"].get("text", "")) > 150:
                return "invalid_blocks"
        if block["type"] == "section":
            if "text" not in block and "fields" not in block:
                return "invalid_blocks"
            if len(block.get("text", {}).get("text", "")) > 3000 or len(block.get("fields", [])) > 10:
                return "invalid_blocks"
            if any(len(f.get("text", "")) > 2000 for f in block.get("fields", [])):
                return "invalid_blocks"
    if len(body.get("attachments") or []) > 100:
        return "too_many_attachments"
    return None


# -- PagerDuty Events API v2 ----------------------------------------------------------------

@dataclass
class Incident:
    routing_key: str
    dedup_key: str
    status: str = "triggered"
    triggers: int = 1
    payloads: list[dict[str, Any]] = field(default_factory=list)


class PagerDutyReceiver(Receiver):
    """`POST /v2/enqueue` with the documented validation and alert state machine: a trigger after
    a resolve opens a new alert; an acknowledge or resolve with nothing open is dropped (202)."""

    def __init__(self) -> None:
        self.incidents: list[Incident] = []
        self.events: list[dict[str, Any]] = []
        super().__init__()

    def routes(self) -> list[Route]:
        return [Route("/v2/enqueue", self.post, methods=["POST"])]

    def open_incident(self, routing_key: str, dedup_key: str) -> Incident | None:
        return next((i for i in self.incidents if (i.routing_key, i.dedup_key) == (routing_key, dedup_key)
                     and i.status != "resolved"), None)

    async def post(self, request: Request) -> Response:
        raw = await request.body()
        try:
            body = json.loads(raw)
        except ValueError:
            body = None
        errors = pagerduty_errors(body, len(raw))
        if errors:
            self.reject("; ".join(errors))
            return await self.answer(JSONResponse({"status": "invalid event", "message": "Event object is invalid",
                                                   "errors": errors}, status_code=400))
        real = JSONResponse({"status": "success", "message": "Event processed",
                             "dedup_key": body.get("dedup_key") or uuid.uuid4().hex}, status_code=202)
        answered = await self.answer(real)
        if answered is real:
            self.apply(body, real)
        return answered

    def apply(self, body: dict[str, Any], real: Response) -> None:
        key, action = json.loads(real.body)["dedup_key"], body["event_action"]
        self.events.append(body)
        incident = self.open_incident(body["routing_key"], key)
        if action == "trigger" and incident:
            incident.triggers += 1
            incident.payloads.append(body["payload"])
        elif action == "trigger":
            self.incidents.append(Incident(body["routing_key"], key, payloads=[body["payload"]]))
        elif incident:
            incident.status = "acknowledged" if action == "acknowledge" else "resolved"


def pagerduty_errors(body: Any, size: int) -> list[str]:
    if not isinstance(body, dict):
        return ["Event object must be a JSON object"]
    errors = []
    if size > 512 * 1024:
        errors.append("Event object is larger than 512 KB")
    if len(str(body.get("routing_key", ""))) != 32:
        errors.append("Length of 'routing_key' is incorrect (should be 32 characters)")
    if body.get("event_action") not in ("trigger", "acknowledge", "resolve"):
        errors.append("'event_action' is invalid (must be one of: trigger, acknowledge, resolve)")
    if len(str(body.get("dedup_key") or "")) > 255:
        errors.append("'dedup_key' is longer than 255 characters")
    if body.get("event_action") in ("acknowledge", "resolve") and not body.get("dedup_key"):
        errors.append("'dedup_key' is required for acknowledge and resolve")
    if body.get("event_action") == "trigger":
        payload = body.get("payload")
        if not isinstance(payload, dict):
            return errors + ["'payload' is missing or invalid"]
        if not payload.get("summary") or len(payload["summary"]) > 1024:
            errors.append("'payload.summary' is missing or longer than 1024 characters")
        if not payload.get("source"):
            errors.append("'payload.source' is missing")
        if payload.get("severity") not in ("critical", "error", "warning", "info"):
            errors.append("'payload.severity' is invalid")
        if payload.get("timestamp") is not None and not is_iso8601(payload["timestamp"]):
            errors.append("'payload.timestamp' is not ISO 8601")
    for link in body.get("links") or []:
        if not isinstance(link, dict) or not link.get("href"):
            errors.append("'links[].href' is required")
    for image in body.get("images") or []:
        if not isinstance(image, dict) or not str(image.get("src", "")).startswith("https://"):
            errors.append("'images[].src' must be an https URL")
    return errors


def is_iso8601(value: Any) -> bool:
    from datetime import datetime
    try:
        datetime.fromisoformat(str(value).replace("Z", "+00:00"))
        return True
    except ValueError:
        return False


# -- Jira Cloud (v3, ADF, Basic email:token) and Data Center (v2, wiki markup, Bearer PAT) ------

JIRA_FIELDS = {"project", "issuetype", "summary", "description", "labels", "priority"}


class JiraReceiver(Receiver):
    def __init__(self, flavor: str = "cloud", email_: str = "bot@example.com", token: str = "jira-token") -> None:
        self.flavor, self.email, self.token = flavor, email_, token
        self.issues: list[dict[str, Any]] = []
        self.searches = 0
        super().__init__()

    @property
    def api(self) -> str:
        return "3" if self.flavor == "cloud" else "2"

    def routes(self) -> list[Route]:
        return [Route("/rest/api/{version}/issue", self.create, methods=["POST"]),
                Route("/rest/api/3/search/jql", self.search), Route("/rest/api/2/search", self.search)]

    def authorised(self, request: Request) -> bool:
        header = request.headers.get("authorization", "")
        if self.flavor == "cloud":
            expected = base64.b64encode(f"{self.email}:{self.token}".encode()).decode()
            return header == f"Basic {expected}"
        return header == f"Bearer {self.token}"

    async def create(self, request: Request) -> Response:
        if not self.authorised(request):
            return await self.answer(JSONResponse({"errorMessages": [self.reject("unauthorised")], "errors": {}},
                                                  status_code=401))
        if request.path_params["version"] != self.api:
            return await self.answer(JSONResponse({"errorMessages": [self.reject(f"use API v{self.api}")],
                                                   "errors": {}}, status_code=404))
        try:
            fields = json.loads(await request.body())["fields"]
        except (ValueError, KeyError, TypeError):
            return await self.answer(JSONResponse({"errorMessages": [self.reject("no fields")], "errors": {}},
                                                  status_code=400))
        errors = self.field_errors(fields)
        if errors:
            self.reject(json.dumps(errors))
            return await self.answer(JSONResponse({"errorMessages": [], "errors": errors}, status_code=400))
        key = f"OPS-{len(self.issues) + 1}"
        self.issues.append({"id": str(10000 + len(self.issues)), "key": key, "fields": fields})
        return await self.answer(JSONResponse({"id": self.issues[-1]["id"], "key": key,
                                               "self": f"{self.url}/rest/api/{self.api}/issue/{key}"}, status_code=201))

    def field_errors(self, fields: Any) -> dict[str, str]:
        if not isinstance(fields, dict):
            return {"fields": "must be an object"}
        errors = {name: f"Field '{name}' cannot be set. It is not on the appropriate screen, or unknown."
                  for name in fields if name not in JIRA_FIELDS or name == "priority"}
        if fields.get("project") not in ({"key": "OPS"}, {"id": "10000"}):
            errors["project"] = "valid project is required"
        if fields.get("issuetype") not in ({"name": "Bug"}, {"id": "10004"}, {"name": "Task"}, {"id": "10002"}):
            errors["issuetype"] = "Specify a valid issue type"
        summary = fields.get("summary")
        if not isinstance(summary, str) or not summary.strip():
            errors["summary"] = "You must specify a summary of the issue."
        elif len(summary) > 255:
            errors["summary"] = "Summary must be less than 255 characters."
        for label in fields.get("labels") or []:
            if not isinstance(label, str) or " " in label:
                errors["labels"] = f"The label '{label}' contains spaces which is invalid."
        description = fields.get("description")
        if self.flavor == "cloud" and description is not None and not is_adf(description):
            errors["description"] = "Operation value must be an Atlassian Document (see the Atlassian Document Format)"
        if self.flavor == "datacenter" and description is not None and not isinstance(description, str):
            errors["description"] = "Operation value must be a string"
        return errors

    async def search(self, request: Request) -> Response:
        if not self.authorised(request):
            return JSONResponse({"errorMessages": ["unauthorised"], "errors": {}}, status_code=401)
        if self.flavor == "cloud" and request.url.path == "/rest/api/2/search":
            return JSONResponse({"errorMessages": ["gone: use /rest/api/3/search/jql"]}, status_code=410)
        jql = request.query_params.get("jql", "")
        label = jql.partition("=")[2].strip().strip('"')
        self.searches += 1
        found = [i for i in self.issues if label in (i["fields"].get("labels") or [])]
        return JSONResponse({"issues": [{"id": i["id"], "key": i["key"], "fields": {
            "labels": i["fields"].get("labels"), "summary": i["fields"]["summary"]}} for i in found], "total": len(found)})


def is_adf(value: Any) -> bool:
    """An Atlassian document: a `doc` of version 1 whose content is a list of typed nodes."""
    def nodes_ok(nodes: Any) -> bool:
        return isinstance(nodes, list) and all(
            isinstance(n, dict) and isinstance(n.get("type"), str) and
            (n["type"] != "text" or isinstance(n.get("text"), str) and n["text"] != "") and
            nodes_ok(n.get("content", [])) for n in nodes)
    return isinstance(value, dict) and value.get("type") == "doc" and value.get("version") == 1 and \
        nodes_ok(value.get("content"))


# -- generic webhooks (Sentry's integration-platform shape) ----------------------------------

class WebhookReceiver(Receiver):
    """Checks the signature on the raw body and the documented headers and body; dedupes on the
    Idempotency-Key, counting duplicates so at-least-once delivery is visible."""

    def __init__(self, secret: str = "hook-secret") -> None:
        self.secret = secret
        self.deliveries: dict[str, dict[str, Any]] = {}
        self.duplicates = 0
        self.arrived = threading.Event()
        super().__init__()

    def routes(self) -> list[Route]:
        return [Route("/hook", self.post, methods=["POST"])]

    async def post(self, request: Request) -> Response:
        raw = await request.body()
        self.arrived.set()
        h = request.headers
        signature = hmac.new(self.secret.encode(), raw, hashlib.sha256).hexdigest()
        if not hmac.compare_digest(signature, h.get("sentry-hook-signature", "")):
            return await self.answer(JSONResponse({"detail": self.reject("bad signature")}, status_code=401))
        problem = webhook_problem(h, raw)
        if problem:
            return await self.answer(JSONResponse({"detail": self.reject(problem)}, status_code=400))
        canned = self.take_script()
        if canned is None or 200 <= canned.status < 300:  # taken on arrival, as a receiver that dedupes would
            key = h["idempotency-key"]
            with self.lock:
                if key in self.deliveries:
                    self.duplicates += 1
                else:
                    self.deliveries[key] = {"resource": h["sentry-hook-resource"], "body": json.loads(raw)}
        return await self.answer(JSONResponse({"ok": True}), canned)


def webhook_problem(headers: Any, raw: bytes) -> str | None:
    if headers.get("content-type") != "application/json":
        return "Content-Type must be application/json"
    for name in ("request-id", "idempotency-key", "sentry-hook-timestamp"):
        if not headers.get(name):
            return f"{name} is missing"
    if abs(time.time() - int(headers["sentry-hook-timestamp"])) > 300:
        return "Sentry-Hook-Timestamp is more than 5 minutes off"
    resource = headers.get("sentry-hook-resource")
    body = json.loads(raw)
    if not isinstance(body.get("installation", {}).get("uuid"), str):
        return "installation.uuid is missing"
    actor = body.get("actor") or {}
    if actor.get("type") not in ("application", "user") or not actor.get("id") or not actor.get("name"):
        return "actor {type, id, name} is missing"
    data = body.get("data") or {}
    if resource == "issue":
        issue = data.get("issue") or {}
        if body.get("action") not in ("created", "resolved", "assigned", "archived", "unresolved"):
            return f"issue action {body.get('action')!r}"
        missing = [k for k in ("id", "shortId", "title", "culprit", "level", "status", "count", "firstSeen",
                               "lastSeen", "project", "web_url") if k not in issue]
        if missing or not isinstance(issue.get("count"), str):
            return f"data.issue lacks {missing or 'a string count'}"
        return None
    if resource == "event_alert":
        event = data.get("event") or {}
        if body.get("action") != "triggered":
            return f"event_alert action {body.get('action')!r}"
        missing = [k for k in ("event_id", "url", "web_url", "issue_url", "issue_id") if k not in event]
        if missing or not data.get("triggered_rule"):
            return f"data.event lacks {missing or 'triggered_rule'}"
        return None
    return f"unknown Sentry-Hook-Resource {resource!r}"


# -- email: a real SMTP server ------------------------------------------------------------------

class SmtpCapture:
    """aiosmtpd handler: records each message parsed; `next_reply` answers the next DATA instead."""

    def __init__(self) -> None:
        self.messages: list[tuple[str, list[str], EmailMessage]] = []
        self.next_reply: str | None = None

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        if self.next_reply:
            reply, self.next_reply = self.next_reply, None
            return reply
        message = email.message_from_bytes(envelope.content, policy=email.policy.default)
        self.messages.append((envelope.mail_from, list(envelope.rcpt_tos), message))  # type: ignore[arg-type]
        return "250 Message accepted for delivery"


@dataclass
class Smtp:
    host: str
    port: int
    capture: SmtpCapture
    user: str = "alerts"
    password: str = "secret"


@pytest.fixture
def smtp_server() -> Iterator[Smtp]:
    from aiosmtpd.controller import Controller
    from aiosmtpd.smtp import AuthResult

    capture = SmtpCapture()
    port = free_port()

    def authenticate(server: Any, session: Any, envelope: Any, mechanism: str, data: Any) -> AuthResult:
        return AuthResult(success=(data.login, data.password) == (b"alerts", b"secret"))

    controller = Controller(capture, hostname="127.0.0.1", port=port, authenticator=authenticate,
                            auth_required=True, auth_require_tls=False)
    controller.start()
    try:
        yield Smtp("127.0.0.1", port, capture)
    finally:
        controller.stop()


# -- Prometheus Alertmanager: the real binary --------------------------------------------------

ALERTMANAGER = shutil.which("prometheus-alertmanager") or shutil.which("alertmanager")


class CaptureReceiver(Receiver):
    """Where Alertmanager's webhook receiver posts its notifications."""

    def __init__(self) -> None:
        self.notifications: list[dict[str, Any]] = []
        super().__init__()

    def routes(self) -> list[Route]:
        return [Route("/am", self.post, methods=["POST"])]

    async def post(self, request: Request) -> Response:
        self.notifications.append(json.loads(await request.body()))
        return PlainTextResponse("ok")


@dataclass
class Alertmanager:
    url: str
    capture: CaptureReceiver

    def alerts(self, **params: str) -> list[dict[str, Any]]:
        r = httpx.get(f"{self.url}/api/v2/alerts", params=params, timeout=5)
        assert r.status_code == 200, r.text
        return r.json()


@pytest.fixture(scope="module")
def alertmanager(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Alertmanager]:
    if ALERTMANAGER is None:
        pytest.skip("the prometheus-alertmanager binary is not installed (Debian: apt-get install prometheus-alertmanager)")
    capture = CaptureReceiver().start()
    work = tmp_path_factory.mktemp("alertmanager")
    config = work / "am.yml"
    config.write_text(
        'route:\n  receiver: "capture"\n  group_by: ["..."]\n  group_wait: 0s\n  group_interval: 1s\n'
        '  repeat_interval: 1h\nreceivers:\n  - name: "capture"\n    webhook_configs:\n'
        f'      - url: "{capture.url}/am"\n        send_resolved: true\n')
    port = free_port()
    process = subprocess.Popen([ALERTMANAGER, f"--config.file={config}", f"--storage.path={work / 'data'}",
                                f"--web.listen-address=127.0.0.1:{port}", "--cluster.listen-address="],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"

    def ready() -> bool:
        assert process.poll() is None, "alertmanager exited during start-up"
        try:
            return httpx.get(f"{url}/-/ready", timeout=1).status_code == 200
        except httpx.TransportError:
            return False
    try:
        wait_for(ready, timeout=20)
        yield Alertmanager(url, capture)
    finally:
        process.terminate()
        process.wait(10)
        capture.stop()


def running(receiver_class: Callable[..., Receiver], *args: Any) -> Iterator[Any]:
    receiver = receiver_class(*args).start()
    try:
        yield receiver
    finally:
        receiver.stop()


@pytest.fixture
def slack() -> Iterator[SlackReceiver]:
    yield from running(SlackReceiver)


@pytest.fixture
def pagerduty() -> Iterator[PagerDutyReceiver]:
    yield from running(PagerDutyReceiver)


@pytest.fixture
def jira() -> Iterator[JiraReceiver]:
    yield from running(JiraReceiver, "cloud")


@pytest.fixture
def jira_dc() -> Iterator[JiraReceiver]:
    yield from running(JiraReceiver, "datacenter")


@pytest.fixture
def webhook() -> Iterator[WebhookReceiver]:
    yield from running(WebhookReceiver)

