"""Strict local receivers for the alert channels (docs: shared alerts.md, "How to test each channel
offline").

Each receiver speaks the channel's real protocol on a real socket (uvicorn on 127.0.0.1, an aiosmtpd
server, the real Alertmanager binary), refuses what the documented schema forbids the way the real
service does, and records everything it got, so tests prove what the tracker sends instead of
assuming it. `script()` makes the next answers 429/5xx/slow to drive retries, throttling and dead
letters.

Wiring: `pytest_plugins = ["receivers"]` in tests/conftest.py exposes the fixtures `slack`,
`pagerduty`, `jira`, `jira_dc`, `webhook`, `smtp_server` and `alertmanager` (module scope).
"""
from __future__ import annotations

import asyncio
import base64
import email
import email.policy
import hashlib
import hmac
import json
import math
import re
import shutil
import subprocess
import threading
import time
import uuid
import warnings
from collections import deque
from dataclasses import dataclass, field
from datetime import datetime
from email.message import EmailMessage
from pathlib import Path
from typing import Any, Awaitable, Callable, Iterator, NamedTuple, Self
from urllib.parse import parse_qs

import httpx
import pytest
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route

from conftest import free_port, wait_for

# -- the base: a Starlette app on a real uvicorn server in a thread ---------------------------------


@dataclass
class Received:
    """One request as it arrived (before any validation), and the status it was answered with."""

    method: str
    path: str
    query: str
    headers: dict[str, str]
    body: bytes
    json: Any = None
    at: float = field(default_factory=time.time)
    status: int | None = None  # set once answered
    rejected: str | None = None  # why it was refused, when it was

    @property
    def text(self) -> str:
        return self.body.decode("utf-8", "replace")


@dataclass
class Scripted:
    """A canned answer. `process` says whether the request still takes effect (a slow success, an
    ambiguous 5xx) or not (a 429 or 5xx the service answers before doing anything)."""

    status: int | None
    body: str = ""
    headers: dict[str, str] = field(default_factory=dict)
    delay: float = 0.0
    process: bool = False
    path: str | None = None

    def response(self) -> Response:
        return Response(self.body, status_code=self.status or 200, headers=self.headers)


Handler = Callable[[Request, Received], Awaitable[Response]]


class Receiver:
    """A real HTTP server for one fake service. Subclasses list their routes with `route()`.

    Thread-safe: requests are handled on the server's event loop thread, tests read from theirs;
    every mutation happens under `self.lock`. `GET /_received` and `POST /_fail` (body: the
    arguments of `script()`) expose the same from outside the process."""

    name = "receiver"
    tls: tuple[Path, Path] | None = None  # (certificate, key) to serve HTTPS instead of HTTP

    def __init__(self) -> None:
        self.lock = threading.RLock()
        self.received: list[Received] = []
        self.rejected: list[str] = []
        self.scripted: deque[Scripted] = deque()
        self.port = 0
        self.url = ""
        self.server: uvicorn.Server | None = None
        self.thread: threading.Thread | None = None
        self._stopping = threading.Event()

    # lifecycle ---------------------------------------------------------------------------------

    def routes(self) -> list[Route]:
        raise NotImplementedError

    def start(self) -> Self:
        """Bind a free port (retrying if another process takes it first) and wait until serving."""
        for _ in range(5):
            self.port = free_port()
            self.url = f"{'https' if self.tls else 'http'}://127.0.0.1:{self.port}"
            app = Starlette(routes=[*self.routes(), Route("/_received", self._received_view),
                                    Route("/_fail", self._fail_view, methods=["POST"])])
            tls = {"ssl_certfile": str(self.tls[0]), "ssl_keyfile": str(self.tls[1])} if self.tls else {}
            self.server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=self.port, log_level="warning",
                                                        lifespan="off", access_log=False, loop="asyncio",
                                                        http="h11", **tls))
            self.thread = threading.Thread(target=self.server.run, daemon=True, name=f"{self.name}:{self.port}")
            self.thread.start()
            server, thread = self.server, self.thread
            wait_for(lambda: server.started or not thread.is_alive(), timeout=10, interval=0.01)
            if server.started:
                return self
        raise RuntimeError(f"{self.name}: could not bind a port")

    def stop(self, wait: bool = True) -> None:
        """Stop serving; requests still sleeping in a scripted delay are cut short. uvicorn takes
        ~0.2 s to wind down: fixtures pass wait=False so tests don't pay it (the next receiver binds
        a new port anyway); wait=True returns once the port refuses connections."""
        self._stopping.set()
        if self.server is None or self.thread is None:
            return
        self.server.should_exit = True
        if not wait:
            return
        self.thread.join(3)
        if self.thread.is_alive():
            self.server.force_exit = True
            self.thread.join(5)

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # scripting and recording -------------------------------------------------------------------

    def script(self, status: int | None, body: str = "", headers: dict[str, str] | None = None, delay: float = 0.0,
               times: int = 1, *, process: bool | None = None, path: str | None = None) -> None:
        """Answer the next `times` requests (whose path starts with `path`, if given) with `status`
        after `delay` seconds.

        `status=None` or a 2xx is a success: the request is processed first, then answered late (a
        Jira issue exists even if the client timed out meanwhile); without body and headers the
        answer is the real one. Other statuses answer *without* processing, like a real 429 or
        500; pass `process=True` for an ambiguous 5xx that did take effect."""
        success = status is None or 200 <= status < 300
        real = status is None or (success and not body and not headers)
        entry = Scripted(None if real else status, body, dict(headers or {}), delay,
                         success if process is None else process, path)
        with self.lock:
            self.scripted.extend(Scripted(**entry.__dict__) for _ in range(times))

    def reject(self, record: Received, reason: str) -> str:
        """Note why a request was refused (tests assert `rejected == []`)."""
        with self.lock:
            record.rejected = reason
            self.rejected.append(reason)
        return reason

    def wait(self, count: int = 1, timeout: float = 10.0, path: str | None = None) -> list[Received]:
        """Block until `count` requests (to paths starting with `path`) have arrived and been answered."""
        def enough() -> list[Received] | None:
            with self.lock:
                got = [r for r in self.received if r.status is not None and (path is None or r.path.startswith(path))]
            return got if len(got) >= count else None
        return wait_for(enough, timeout)

    def route(self, path: str, handler: Handler, methods: list[str] | None = None) -> Route:
        """A route whose requests are recorded and subject to scripting before `handler` sees them."""
        async def endpoint(request: Request) -> Response:
            return await self._dispatch(request, handler)
        return Route(path, endpoint, methods=methods or ["POST"])

    async def _dispatch(self, request: Request, handler: Handler) -> Response:
        raw = await request.body()
        try:
            parsed = json.loads(raw) if raw else None
        except ValueError:
            parsed = None
        record = Received(request.method, request.url.path, request.url.query, dict(request.headers), raw, parsed)
        with self.lock:
            self.received.append(record)
            canned = next((s for s in self.scripted if s.path is None or record.path.startswith(s.path)), None)
            if canned is not None:
                self.scripted.remove(canned)
        if canned is not None and not canned.process:
            await self._sleep(canned.delay)
            record.status = canned.status
            return canned.response()
        try:
            real = await handler(request, record)
        except Exception as e:  # a bug in a receiver must show in the test, not hang the client
            self.reject(record, f"receiver error: {e!r}")
            real = PlainTextResponse(f"receiver error: {e!r}", status_code=500)
        if canned is not None:
            await self._sleep(canned.delay)
            if canned.status is not None:
                real = canned.response()
        record.status = real.status_code
        return real

    async def _sleep(self, seconds: float) -> None:
        deadline = time.monotonic() + seconds
        while not self._stopping.is_set() and time.monotonic() < deadline:
            await asyncio.sleep(min(0.05, deadline - time.monotonic()))

    async def _received_view(self, request: Request) -> Response:
        with self.lock:
            rows = [{"method": r.method, "path": r.path, "query": r.query, "headers": r.headers, "body": r.text,
                     "status": r.status, "rejected": r.rejected} for r in self.received]
        return JSONResponse(rows)

    async def _fail_view(self, request: Request) -> Response:
        spec = await request.json()
        self.script(spec.get("status"), spec.get("body", ""), spec.get("headers"), float(spec.get("delay", 0)),
                    int(spec.get("times", 1)), process=spec.get("process"), path=spec.get("path"))
        return JSONResponse({"scripted": int(spec.get("times", 1))})


# -- Slack incoming webhooks (alerts.md §1) -------------------------------------------------------

BLOCK_TYPES = {"actions", "context", "divider", "file", "header", "image", "input", "markdown", "rich_text",
               "section", "video"}
TEXT_TYPES = {"plain_text", "mrkdwn"}


@dataclass
class SlackHook:
    team: str
    bot: str
    token: str
    archived: bool = False
    tokens: float = 0.0  # the token bucket
    refilled: float = field(default_factory=time.monotonic)
    retry_until: float = 0.0  # end of the last Retry-After we gave


class SlackReceiver(Receiver):
    """`POST /services/{T}/{B}/{token}` → 200 `ok` (text/plain), or Slack's plain-text error codes.

    `.messages`: accepted bodies (top-level text cut at 40,000 like Slack); `.rejected`: refusals;
    `.limited`: 429s given; `.early_retries`: requests that came back before our Retry-After."""

    name = "slack"

    def __init__(self, rate: float = 1.0, burst: int = 3) -> None:
        super().__init__()
        self.rate, self.burst = rate, burst
        self.hooks: dict[str, SlackHook] = {}
        self.accepted: list[tuple[str, dict[str, Any]]] = []  # (hook url, body)
        self.limited = 0
        self.early_retries = 0

    def routes(self) -> list[Route]:
        return [self.route("/services/{team}/{bot}/{token}", self.post)]

    @property
    def messages(self) -> list[dict[str, Any]]:
        with self.lock:
            return [body for _, body in self.accepted]

    def add_hook(self, team: str = "T0000TEAM", bot: str = "B0000HOOK") -> str:
        """Register a hook; returns its URL. Other tokens answer 404 `no_service`."""
        token = uuid.uuid4().hex[:24]
        with self.lock:
            self.hooks[token] = SlackHook(team, bot, token, tokens=float(self.burst))
        return f"{self.url}/services/{team}/{bot}/{token}"

    def archive(self, url: str) -> None:
        """The hook's channel is archived: it answers 410 `channel_is_archived` from now on."""
        self.hooks[url.rstrip("/").rsplit("/", 1)[1]].archived = True

    def messages_for(self, url: str) -> list[dict[str, Any]]:
        with self.lock:
            return [body for hook, body in self.accepted if hook == url]

    async def post(self, request: Request, record: Received) -> Response:
        p = request.path_params
        hook = self.hooks.get(p["token"])
        if hook is None or (hook.team, hook.bot) != (p["team"], p["bot"]):
            return self.fail(record, 404, "no_service")
        if hook.archived:
            return self.fail(record, 410, "channel_is_archived")
        content_type = record.headers.get("content-type", "").split(";")[0].strip().lower()
        try:
            if content_type == "application/json":
                body = json.loads(record.body)
            elif content_type == "application/x-www-form-urlencoded":
                body = json.loads(parse_qs(record.body.decode(), strict_parsing=True)["payload"][0])
            else:
                return self.fail(record, 400, "invalid_payload", f"Content-Type {content_type!r}")
        except (ValueError, KeyError, UnicodeDecodeError) as e:
            return self.fail(record, 400, "invalid_payload", f"unparsable: {e}")
        problem = slack_problem(body)
        if problem:
            code, _, detail = problem.partition(": ")
            return self.fail(record, 400, code, detail)
        now = time.monotonic()
        with self.lock:
            if now < hook.retry_until - 0.05:
                self.early_retries += 1
            hook.tokens = min(float(self.burst), hook.tokens + (now - hook.refilled) * self.rate)
            hook.refilled = now
            if hook.tokens < 1.0:
                retry_after = max(1, math.ceil((1.0 - hook.tokens) / self.rate))
                hook.retry_until = now + retry_after
                self.limited += 1
                return JSONResponse({"ok": False, "error": "rate_limited", "retry_after": retry_after},
                                    status_code=429, headers={"Retry-After": str(retry_after)})
            hook.tokens -= 1.0
            if isinstance(body.get("text"), str) and len(body["text"]) > 40_000:
                body = {**body, "text": body["text"][:40_000]}
            self.accepted.append((f"{self.url}{record.path}", body))
        return PlainTextResponse("ok")

    def fail(self, record: Received, status: int, code: str, detail: str = "") -> Response:
        self.reject(record, f"{code}: {detail}" if detail else code)
        return PlainTextResponse(code, status_code=status)


def _text_object(obj: Any, limit: int, types: set[str] = TEXT_TYPES) -> str | None:
    if not isinstance(obj, dict) or obj.get("type") not in types:
        return f"a text object of type {sorted(types)} expected, got {obj!r:.80}"
    text = obj.get("text")
    if not isinstance(text, str) or not text:
        return "text object without text"
    if len(text) > limit:
        return f"text of {len(text)} characters (max {limit})"
    return None


def _block_problem(block: Any) -> str | None:
    if not isinstance(block, dict) or block.get("type") not in BLOCK_TYPES:
        return f"unknown block type {block.get('type') if isinstance(block, dict) else block!r}"
    kind = block["type"]
    if "block_id" in block and (not isinstance(block["block_id"], str) or len(block["block_id"]) > 255):
        return f"{kind}: block_id must be a string of at most 255 characters"
    if kind == "header":
        problem = _text_object(block.get("text"), 150, {"plain_text"})
        return f"header: {problem}" if problem else None
    if kind == "section":
        if "text" not in block and "fields" not in block:
            return "section needs text or fields"
        if "text" in block and (problem := _text_object(block["text"], 3000)):
            return f"section: {problem}"
        fields = block.get("fields", [])
        if not isinstance(fields, list) or len(fields) > 10:
            return "section: fields must be a list of at most 10"
        for f in fields:
            if problem := _text_object(f, 2000):
                return f"section field: {problem}"
        return None
    if kind == "context":
        elements = block.get("elements")
        if not isinstance(elements, list) or not 1 <= len(elements) <= 10:
            return "context: 1 to 10 elements"
        for e in elements:
            if isinstance(e, dict) and e.get("type") == "image":
                if not e.get("alt_text") or not (e.get("image_url") or e.get("slack_file")):
                    return "context image needs image_url and alt_text"
            elif problem := _text_object(e, 3000):
                return f"context: {problem}"
        return None
    if kind == "divider":
        extra = set(block) - {"type", "block_id"}
        return f"divider takes no {sorted(extra)}" if extra else None
    if kind == "markdown":
        text = block.get("text")
        if not isinstance(text, str) or not text or len(text) > 12_000:
            return "markdown: text of 1 to 12,000 characters"
        return None
    if kind == "image":
        if not (block.get("image_url") or block.get("slack_file")) or not isinstance(block.get("alt_text"), str):
            return "image needs image_url and alt_text"
        return None
    if kind in ("actions", "rich_text"):
        elements = block.get("elements")
        if not isinstance(elements, list) or not elements or (kind == "actions" and len(elements) > 25):
            return f"{kind}: elements required"
    return None


def slack_problem(body: Any) -> str | None:
    """Why Slack would refuse this body, as `code: detail` (None when it is fine)."""
    if not isinstance(body, dict):
        return "invalid_payload: the body is not a JSON object"
    text, blocks, attachments = body.get("text"), body.get("blocks"), body.get("attachments")
    if text is not None and not isinstance(text, str):
        return "invalid_payload: text must be a string"
    if not text and not blocks and not attachments:
        return "no_text: no text, blocks or attachments"
    if blocks is not None:
        if not isinstance(blocks, list):
            return "invalid_blocks_format: blocks must be a list"
        if len(blocks) > 50:
            return f"invalid_blocks: {len(blocks)} blocks (max 50)"
        for i, block in enumerate(blocks):
            if problem := _block_problem(block):
                return f"invalid_blocks: block {i}: {problem}"
    if attachments is not None:
        if not isinstance(attachments, list) or not all(isinstance(a, dict) for a in attachments):
            return "invalid_attachments: attachments must be a list of objects"
        if len(attachments) > 100:
            return f"too_many_attachments: {len(attachments)}"
        for i, a in enumerate(attachments):
            for key in ("fallback", "color", "pretext", "title", "title_link", "text", "footer"):
                if key in a and not isinstance(a[key], str):
                    return f"invalid_attachments: attachment {i}: {key} must be a string"
            for f in a.get("fields") or []:
                if not isinstance(f, dict) or not isinstance(f.get("title", ""), str) or \
                        not isinstance(f.get("value", ""), str):
                    return f"invalid_attachments: attachment {i}: fields are {{title, value, short}}"
            for j, block in enumerate(a.get("blocks") or []):
                if problem := _block_problem(block):
                    return f"invalid_blocks: attachment {i} block {j}: {problem}"
        if not text and not blocks and not any(a.get(k) for a in attachments
                                               for k in ("fallback", "text", "pretext", "title", "blocks", "fields")):
            return "missing_text_or_fallback_or_attachments: attachments with nothing to show"
    for key in ("unfurl_links", "unfurl_media", "mrkdwn"):
        if key in body and not isinstance(body[key], bool):
            return f"invalid_payload: {key} must be a boolean"
    return None


# -- PagerDuty Events API v2 (alerts.md §3) -------------------------------------------------------

PD_SEVERITIES = ("critical", "error", "warning", "info")
PD_ACTIONS = ("trigger", "acknowledge", "resolve")


@dataclass
class Incident:
    """One PagerDuty alert: what a (routing_key, dedup_key) pair points at until it is resolved."""

    routing_key: str
    dedup_key: str
    status: str = "triggered"  # triggered | acknowledged | resolved
    triggers: int = 1
    payloads: list[dict[str, Any]] = field(default_factory=list)

    @property
    def trigger_count(self) -> int:
        return self.triggers


class PagerDutyReceiver(Receiver):
    """`POST /v2/enqueue` with the documented validation and alert state machine.

    `.events`: accepted event bodies (with the dedup_key PagerDuty answered); `.incidents`: alerts in
    creation order; `.dropped`: acknowledge/resolve events with no open alert (answered 202 anyway)."""

    name = "pagerduty"

    def __init__(self) -> None:
        super().__init__()
        self.events: list[dict[str, Any]] = []
        self.incidents: list[Incident] = []
        self.dropped: list[dict[str, Any]] = []

    def routes(self) -> list[Route]:
        return [self.route("/v2/enqueue", self.post)]

    @property
    def enqueue_url(self) -> str:
        return f"{self.url}/v2/enqueue"

    def open_incident(self, routing_key: str, dedup_key: str) -> Incident | None:
        with self.lock:
            return next((i for i in self.incidents if (i.routing_key, i.dedup_key) == (routing_key, dedup_key)
                         and i.status != "resolved"), None)

    def incidents_for(self, dedup_key: str) -> list[Incident]:
        with self.lock:
            return [i for i in self.incidents if i.dedup_key == dedup_key]

    async def post(self, request: Request, record: Received) -> Response:
        try:
            body = json.loads(record.body)
        except ValueError:
            body = None
        errors = pagerduty_errors(body, len(record.body))
        if errors:
            self.reject(record, "; ".join(errors))
            return JSONResponse({"status": "invalid event", "message": "Event object is invalid", "errors": errors},
                                status_code=400)
        key = body.get("dedup_key") or uuid.uuid4().hex
        self.apply(body["routing_key"], key, body)
        return JSONResponse({"status": "success", "message": "Event processed", "dedup_key": key}, status_code=202)

    def apply(self, routing_key: str, key: str, body: dict[str, Any]) -> None:
        action = body["event_action"]
        with self.lock:
            self.events.append({**body, "dedup_key": key})
            incident = self.open_incident(routing_key, key)
            if action == "trigger" and incident:
                incident.triggers += 1  # appended to the open alert; no new incident
                incident.payloads.append(body["payload"])
            elif action == "trigger":
                self.incidents.append(Incident(routing_key, key, payloads=[body["payload"]]))
            elif incident is None:
                self.dropped.append(body)
            elif action == "acknowledge":
                incident.status = "acknowledged"
            else:
                incident.status = "resolved"


def _iso8601(value: Any) -> bool:
    if not isinstance(value, str) or not re.match(r"^\d{4}-\d{2}-\d{2}([T ]\d{2}:\d{2}(:\d{2}(\.\d+)?)?)?", value):
        return False
    try:
        datetime.fromisoformat(value.replace("Z", "+00:00"))
        return True
    except ValueError:
        return False


def pagerduty_errors(body: Any, size: int) -> list[str]:
    """PagerDuty's reasons to answer 400 `invalid event` (empty when the event is valid)."""
    if not isinstance(body, dict):
        return ["Event object must be a JSON object"]
    errors: list[str] = []
    if size > 512 * 1024:
        errors.append("Event object is larger than 512 KB")
    if not isinstance(body.get("routing_key"), str) or len(body["routing_key"]) != 32:
        errors.append("Length of 'routing_key' is incorrect (should be 32 characters)")
    action = body.get("event_action")
    if action not in PD_ACTIONS:
        errors.append("'event_action' is invalid (must be one of: trigger, acknowledge, resolve)")
    dedup = body.get("dedup_key")
    if dedup is not None and (not isinstance(dedup, str) or not dedup or len(dedup) > 255):
        errors.append("'dedup_key' must be a string of 1 to 255 characters")
    if action in ("acknowledge", "resolve") and not dedup:
        errors.append(f"'dedup_key' is required for {action} events")
    payload = body.get("payload")
    if action == "trigger" or payload is not None:
        if not isinstance(payload, dict):
            errors.append("'payload' is missing or not an object")
        else:
            summary = payload.get("summary")
            if not isinstance(summary, str) or not summary:
                errors.append("'payload.summary' is missing")
            elif len(summary) > 1024:
                errors.append("Length of 'payload.summary' is too long (max 1024 characters)")
            if not isinstance(payload.get("source"), str) or not payload["source"]:
                errors.append("'payload.source' is missing")
            if payload.get("severity") not in PD_SEVERITIES:
                errors.append("'payload.severity' is invalid (must be one of: critical, error, warning, info)")
            if "timestamp" in payload and not _iso8601(payload["timestamp"]):
                errors.append("'payload.timestamp' is not a valid ISO 8601 timestamp")
            for key in ("component", "group", "class"):
                if key in payload and not isinstance(payload[key], str):
                    errors.append(f"'payload.{key}' must be a string")
    links, images = body.get("links", []), body.get("images", [])
    if not isinstance(links, list) or not all(isinstance(x, dict) and isinstance(x.get("href"), str) and x["href"]
                                              for x in links):
        errors.append("'links' must be a list of objects with an 'href'")
    if not isinstance(images, list) or not all(isinstance(x, dict) and isinstance(x.get("src"), str)
                                               and x["src"].startswith("https://") for x in images):
        errors.append("'images' must be a list of objects with an https 'src'")
    return errors


# -- Jira Cloud (v3, ADF, Basic email:token) and Data Center (v2, wiki markup, Bearer PAT) (§5) ------

JIRA_FIELDS = {"project", "issuetype", "summary", "description", "labels", "priority"}
JIRA_ISSUE_TYPES = [{"id": "10004", "name": "Bug"}, {"id": "10002", "name": "Task"}]
JIRA_PRIORITIES = [{"id": str(i), "name": n} for i, n in enumerate(["Highest", "High", "Medium", "Low", "Lowest"], 1)]
NOT_ON_SCREEN = "Field '{}' cannot be set. It is not on the appropriate screen, or unknown."
ADF_MESSAGE = "Operation value must be an Atlassian Document (see the Atlassian Document Format)"
ADF_BLOCKS = {"paragraph", "heading", "codeBlock", "bulletList", "orderedList", "blockquote", "rule", "panel",
              "table", "mediaSingle", "mediaGroup", "expand", "blockCard", "embedCard", "layoutSection",
              "decisionList", "taskList"}
ADF_INLINE = {"text", "hardBreak", "mention", "emoji", "inlineCard", "date", "status", "mediaInline"}
ADF_CHILDREN = {"doc": ADF_BLOCKS, "paragraph": ADF_INLINE, "heading": ADF_INLINE, "codeBlock": {"text"},
                "bulletList": {"listItem"}, "orderedList": {"listItem"}, "listItem": ADF_BLOCKS,
                "blockquote": ADF_BLOCKS, "panel": ADF_BLOCKS, "expand": ADF_BLOCKS, "table": {"tableRow"},
                "tableRow": {"tableCell", "tableHeader"}, "tableCell": ADF_BLOCKS, "tableHeader": ADF_BLOCKS}
ADF_MARKS = {"code", "em", "link", "strike", "strong", "subsup", "textColor", "underline", "backgroundColor"}


def adf_problem(node: Any, parent: str = "") -> str | None:
    """Why this is not an Atlassian Document (None when it is one)."""
    if not parent:
        if not isinstance(node, dict) or node.get("type") != "doc" or node.get("version") != 1:
            return 'the root must be {"type": "doc", "version": 1, "content": [...]}'
        if not isinstance(node.get("content"), list):
            return "doc.content must be a list"
    kind = node.get("type") if isinstance(node, dict) else None
    if parent and kind not in ADF_CHILDREN.get(parent, ADF_BLOCKS | ADF_INLINE | {"listItem", "tableRow",
                                                                                   "tableCell", "tableHeader",
                                                                                   "media"}):
        return f"a {kind!r} node cannot be inside {parent!r}"
    if kind == "text":
        if not isinstance(node.get("text"), str) or not node["text"]:
            return "text nodes need non-empty text"
        if "content" in node:
            return "text nodes have no content"
        marks = node.get("marks", [])
        if parent == "codeBlock" and marks:
            return "text in a codeBlock takes no marks"
        if not isinstance(marks, list) or any(not isinstance(m, dict) or m.get("type") not in ADF_MARKS
                                              for m in marks):
            return "unknown text marks"
        return None
    content = node.get("content", [])
    if not isinstance(content, list):
        return f"{kind}.content must be a list"
    for child in content:
        if problem := adf_problem(child, str(kind)):
            return problem
    return None


class JiraReceiver(Receiver):
    """Jira's create-issue and search APIs, Cloud or Data Center flavoured.

    cloud: Basic `email:token`; `POST /rest/api/3/issue` (ADF description); `GET|POST
    /rest/api/3/search/jql` (no `total`, like the real one); the old `/search` is 410.
    datacenter: `Bearer <token>`; `POST /rest/api/2/issue` (string description); `GET|POST
    /rest/api/2/search` (with `total`). Both: `GET /rest/api/{2|3}/issue/createmeta/{project}/issuetypes`.
    `.issues`: created issues `{"id", "key", "fields"}`; `.searches`: searches answered, `.queries`
    their JQL."""

    name = "jira"

    def __init__(self, flavor: str = "cloud", email: str = "bot@example.com", token: str = "jira-token",
                 priority_on_screen: bool = False) -> None:
        if flavor not in ("cloud", "datacenter"):
            raise ValueError("flavor is 'cloud' or 'datacenter'")
        super().__init__()
        self.flavor, self.email, self.token = flavor, email, token
        self.priority_on_screen = priority_on_screen
        self.issues: list[dict[str, Any]] = []
        self.searches = 0  # how many searches were answered
        self.queries: list[str] = []  # their JQL

    @property
    def api(self) -> str:
        return "3" if self.flavor == "cloud" else "2"

    def routes(self) -> list[Route]:
        return [self.route("/rest/api/{version}/issue", self.create),
                self.route("/rest/api/{version}/search/jql", self.search, ["GET", "POST"]),
                self.route("/rest/api/{version}/search", self.search, ["GET", "POST"]),
                self.route("/rest/api/{version}/issue/createmeta/{project}/issuetypes", self.issuetypes, ["GET"])]

    def issue(self, key: str) -> dict[str, Any] | None:
        with self.lock:
            return next((i for i in self.issues if i["key"] == key), None)

    def authorised(self, headers: dict[str, str]) -> bool:
        header = headers.get("authorization", "")
        if self.flavor == "cloud":
            expected = "Basic " + base64.b64encode(f"{self.email}:{self.token}".encode()).decode()
        else:
            expected = f"Bearer {self.token}"
        return hmac.compare_digest(header.encode(), expected.encode())

    def error(self, record: Received, status: int, messages: list[str], errors: dict[str, str] | None = None,
              headers: dict[str, str] | None = None) -> Response:
        self.reject(record, json.dumps({"errorMessages": messages, "errors": errors or {}}))
        return JSONResponse({"errorMessages": messages, "errors": errors or {}}, status_code=status, headers=headers)

    def gate(self, request: Request, record: Received) -> Response | None:
        """401 for the wrong credentials or auth kind; 404 for the other flavour's API version."""
        if not self.authorised(record.headers):
            kind = "Basic email:API token" if self.flavor == "cloud" else "Bearer personal access token"
            return self.error(record, 401, [f"You are not authenticated ({kind} expected)."],
                              headers={"WWW-Authenticate": "Basic" if self.flavor == "cloud" else "Bearer"})
        if request.path_params["version"] != self.api:
            return self.error(record, 404, [f"{record.path} does not exist on Jira {self.flavor} here; "
                                            f"use /rest/api/{self.api}/"])
        return None

    async def create(self, request: Request, record: Received) -> Response:
        if refused := self.gate(request, record):
            return refused
        body = record.json
        if not isinstance(body, dict) or not isinstance(body.get("fields"), dict):
            return self.error(record, 400, ["The request body must be a JSON object with 'fields'."])
        if set(body) - {"fields"}:
            return self.error(record, 400, [f"Unrecognized field {sorted(set(body) - {'fields'})[0]!r}"])
        errors = self.field_errors(body["fields"])
        if errors:
            return self.error(record, 400, [], errors)
        with self.lock:
            issue_id = str(10001 + len(self.issues))
            key = f"OPS-{len(self.issues) + 1}"
            self.issues.append({"id": issue_id, "key": key, "fields": body["fields"]})
        return JSONResponse({"id": issue_id, "key": key, "self": f"{self.url}/rest/api/{self.api}/issue/{issue_id}"},
                            status_code=201)

    def field_errors(self, fields: dict[str, Any]) -> dict[str, str]:
        """Jira's per-field messages for this create body (empty when it is valid)."""
        errors = {name: NOT_ON_SCREEN.format(name) for name in fields
                  if name not in JIRA_FIELDS or (name == "priority" and not self.priority_on_screen)}
        project = fields.get("project")
        if not isinstance(project, dict) or not (project.get("key") == "OPS" or project.get("id") == "10000"):
            errors["project"] = "valid project is required"
        issuetype = fields.get("issuetype")
        if not _one_of(issuetype, JIRA_ISSUE_TYPES):
            errors["issuetype"] = "Specify a valid issue type"
        summary = fields.get("summary")
        if not isinstance(summary, str) or not summary.strip():
            errors["summary"] = "You must specify a summary of the issue."
        elif len(summary) > 255:
            errors["summary"] = "Summary must be less than 255 characters."
        elif "\n" in summary or "\r" in summary:
            errors["summary"] = "The summary is invalid because it contains newline characters."
        labels = fields.get("labels", [])
        if not isinstance(labels, list):
            errors["labels"] = "data was not an array"
        else:
            for label in labels:
                if not isinstance(label, str) or not label:
                    errors["labels"] = "Labels must be non-empty strings."
                elif " " in label:
                    errors["labels"] = f"The label '{label}' contains spaces which is invalid."
                elif len(label) > 255:
                    errors["labels"] = "The label must not exceed 255 characters."
        if "description" in fields and fields["description"] is not None:
            description = fields["description"]
            if self.flavor == "cloud" and adf_problem(description):
                errors["description"] = ADF_MESSAGE
            elif self.flavor == "datacenter" and not isinstance(description, str):
                errors["description"] = "Operation value must be a string"
        if "priority" in fields and self.priority_on_screen:
            priority = fields["priority"]
            if not _one_of(priority, JIRA_PRIORITIES):
                errors["priority"] = "Specify a valid priority"
        return errors

    async def search(self, request: Request, record: Received) -> Response:
        if not self.authorised(record.headers):
            return self.error(record, 401, ["You are not authenticated."])
        version, path = request.path_params["version"], record.path
        if self.flavor == "cloud" and not (version == "3" and path.endswith("/search/jql")):
            return self.error(record, 410, ["The requested API has been removed. Please migrate to the "
                                            "/rest/api/3/search/jql API."])
        if self.flavor == "datacenter" and not (version == "2" and path.endswith("/search")):
            return self.error(record, 404, [f"{path} does not exist on Jira Data Center; use /rest/api/2/search"])
        jql = request.query_params.get("jql")
        if request.method == "POST" and isinstance(record.json, dict):
            jql = record.json.get("jql", jql)
        if not jql:
            return self.error(record, 400, ["The JQL query is missing."])
        criteria = parse_jql(jql)
        if criteria is None:
            return self.error(record, 400, [f"Error in the JQL Query: this fake understands only "
                                            f"'labels = x' and 'project = x' joined by AND, not {jql!r}"])
        with self.lock:
            self.searches += 1
            self.queries.append(jql)
            found = [i for i in self.issues if all(
                value in (i["fields"].get("labels") or []) if name == "labels" else value in ("OPS", "10000")
                for name, value in criteria)]
        issues = [{"id": i["id"], "key": i["key"], "self": f"{self.url}/rest/api/{self.api}/issue/{i['id']}",
                   "fields": {"labels": i["fields"].get("labels") or [], "summary": i["fields"]["summary"]}}
                  for i in found]
        if self.flavor == "cloud":
            return JSONResponse({"issues": issues, "isLast": True})
        return JSONResponse({"startAt": 0, "maxResults": 50, "total": len(issues), "issues": issues})

    async def issuetypes(self, request: Request, record: Received) -> Response:
        if refused := self.gate(request, record):
            return refused
        if request.path_params["project"] not in ("OPS", "10000"):
            return self.error(record, 404, [f"No project could be found with key '{request.path_params['project']}'."])
        types = [{**t, "subtask": False} for t in JIRA_ISSUE_TYPES]
        if self.flavor == "cloud":
            return JSONResponse({"issueTypes": types, "maxResults": 50, "startAt": 0, "total": len(types)})
        return JSONResponse({"values": types, "maxResults": 50, "startAt": 0, "total": len(types), "isLast": True})


def _one_of(ref: Any, known: list[dict[str, str]]) -> bool:
    """A Jira reference `{"id": …}` or `{"name": …}` naming one of `known`."""
    return isinstance(ref, dict) and any(ref.get("id") == k["id"] or ref.get("name") == k["name"] for k in known)


def parse_jql(jql: str) -> list[tuple[str, str]] | None:
    """`labels = "x" AND project = OPS` → [("labels", "x"), ("project", "OPS")]; None if not that form."""
    clauses = []
    for clause in re.split(r"\s+AND\s+", jql.strip(), flags=re.IGNORECASE):
        m = re.fullmatch(r'\s*(labels|project)\s*=\s*(?:"([^"]*)"|\'([^\']*)\'|([^\s"\']+))\s*', clause,
                         re.IGNORECASE)
        if not m:
            return None
        clauses.append((m.group(1).lower(), next(g for g in m.groups()[1:] if g is not None)))
    return clauses


# -- generic webhooks: Sentry's integration-platform shape (alerts.md §6) ---------------------------

HOOK_RESOURCES = {"issue", "event_alert", "metric_alert"}
ISSUE_ACTIONS = {"created", "resolved", "assigned", "archived", "unresolved"}
ISSUE_KEYS = ("id", "shortId", "title", "culprit", "level", "status", "count", "firstSeen", "lastSeen", "project",
              "web_url")
EVENT_KEYS = ("event_id", "url", "web_url", "issue_url", "issue_id")


def webhook_problem(headers: dict[str, str], raw: bytes, now: float | None = None) -> str | None:
    """Why a receiver written for Sentry's webhooks would refuse this delivery (signature aside)."""
    media_type = headers.get("content-type", "").split(";")[0].strip().lower()
    if media_type != "application/json":
        return f"Content-Type must be application/json, not {headers.get('content-type')!r}"
    for name in ("request-id", "idempotency-key", "sentry-hook-timestamp", "sentry-hook-resource"):
        if not headers.get(name, "").strip():
            return f"header {name} is missing"
    if not re.fullmatch(r"\d+", headers["sentry-hook-timestamp"]):
        return "Sentry-Hook-Timestamp must be Unix seconds"
    if abs((now or time.time()) - int(headers["sentry-hook-timestamp"])) > 300:
        return "Sentry-Hook-Timestamp is more than 5 minutes off"
    resource = headers["sentry-hook-resource"]
    if resource not in HOOK_RESOURCES:
        return f"Sentry-Hook-Resource {resource!r} is not one of {sorted(HOOK_RESOURCES)}"
    try:
        body = json.loads(raw)
    except ValueError:
        return "the body is not JSON"
    if not isinstance(body, dict):
        return "the body is not a JSON object"
    if set(body) - {"action", "installation", "data", "actor"}:
        return f"unexpected top-level keys {sorted(set(body) - {'action', 'installation', 'data', 'actor'})}"
    installation, actor, data = body.get("installation"), body.get("actor"), body.get("data")
    if not isinstance(installation, dict) or not isinstance(installation.get("uuid"), str) or not installation["uuid"]:
        return "installation.uuid is missing"
    if not isinstance(actor, dict) or actor.get("type") not in ("application", "user") or \
            actor.get("id") in (None, "") or not isinstance(actor.get("name"), str) or not actor["name"]:
        return "actor must be {type: application|user, id, name}"
    if not isinstance(data, dict):
        return "data must be an object"
    action = body.get("action")
    if resource == "issue":
        if action not in ISSUE_ACTIONS:
            return f"issue action {action!r} is not one of {sorted(ISSUE_ACTIONS)}"
        issue = data.get("issue")
        if not isinstance(issue, dict):
            return "data.issue is missing"
        missing = [k for k in ISSUE_KEYS if k not in issue]
        if missing:
            return f"data.issue lacks {missing}"
        if not isinstance(issue["count"], str):
            return "data.issue.count must be a string"
        project = issue["project"]
        if not isinstance(project, dict) or any(k not in project for k in ("id", "name", "slug")):
            return "data.issue.project must have id, name and slug"
        if not all(_iso8601(issue[k]) for k in ("firstSeen", "lastSeen")):
            return "data.issue firstSeen/lastSeen must be ISO 8601"
        if not str(issue["web_url"]).startswith(("http://", "https://")):
            return "data.issue.web_url must be a URL"
        return None
    if resource == "event_alert":
        if action != "triggered":
            return f"event_alert action {action!r} is not 'triggered'"
        event = data.get("event")
        if not isinstance(event, dict):
            return "data.event is missing"
        missing = [k for k in EVENT_KEYS if k not in event]
        if missing:
            return f"data.event lacks {missing}"
        if not isinstance(data.get("triggered_rule"), str) or not data["triggered_rule"]:
            return "data.triggered_rule is missing"
        return None
    if action not in ("critical", "warning", "resolved"):
        return f"metric_alert action {action!r} is not one of critical, warning, resolved"
    missing = [k for k in ("metric_alert", "description_title", "description_text", "web_url") if k not in data]
    return f"data lacks {missing}" if missing else None


class WebhookReceiver(Receiver):
    """`POST /hook` checking what a receiver written for Sentry's webhooks checks: the HMAC-SHA256
    signature over the raw body (bad → 401), the headers and the body per resource (→ 400).

    Dedupes on `Idempotency-Key` like a careful receiver: `.deliveries` maps each key to its first
    delivery `{"resource", "body", "headers"}`; `.duplicates` counts the rest (answered 200 too)."""

    name = "webhook"

    def __init__(self, secret: str = "hook-secret") -> None:
        super().__init__()
        self.secret = secret
        self.deliveries: dict[str, dict[str, Any]] = {}
        self.duplicates = 0
        self.arrived = threading.Event()

    def routes(self) -> list[Route]:
        return [self.route("/hook", self.post)]

    @property
    def hook_url(self) -> str:
        return f"{self.url}/hook"

    @property
    def bodies(self) -> list[dict[str, Any]]:
        with self.lock:
            return [d["body"] for d in self.deliveries.values()]

    def sign(self, raw: bytes) -> str:
        return hmac.new(self.secret.encode(), raw, hashlib.sha256).hexdigest()

    async def post(self, request: Request, record: Received) -> Response:
        self.arrived.set()
        if not hmac.compare_digest(self.sign(record.body), record.headers.get("sentry-hook-signature", "")):
            self.reject(record, "bad Sentry-Hook-Signature")
            return JSONResponse({"detail": "bad signature"}, status_code=401)
        problem = webhook_problem(record.headers, record.body)
        if problem:
            self.reject(record, problem)
            return JSONResponse({"detail": problem}, status_code=400)
        key = record.headers["idempotency-key"]
        with self.lock:
            if key in self.deliveries:
                self.duplicates += 1
            else:
                self.deliveries[key] = {"resource": record.headers["sentry-hook-resource"], "body": record.json,
                                        "headers": record.headers}
        return JSONResponse({"ok": True})


# -- email: a real SMTP server (aiosmtpd) (alerts.md §2) --------------------------------------------


class Mail(NamedTuple):
    mail_from: str
    rcpt_tos: list[str]
    message: EmailMessage


class SmtpCapture:
    """aiosmtpd handler: records each accepted message parsed with the modern email policy.

    Set `next_reply` (e.g. "451 try later" or "550 no") to answer the next DATA with it instead;
    refused messages go to `.refused`. `.logins` lists (login, accepted) for each AUTH."""

    def __init__(self, user: str = "alerts", password: str = "secret") -> None:
        self.user, self.password = user, password
        self.messages: list[Mail] = []
        self.refused: list[tuple[str, list[str], str]] = []
        self.logins: list[tuple[str, bool]] = []
        self.next_reply: str | None = None
        self.lock = threading.Lock()

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        with self.lock:
            reply, self.next_reply = self.next_reply, None
            if reply:
                self.refused.append((envelope.mail_from, list(envelope.rcpt_tos), reply))
                return reply
            message = email.message_from_bytes(envelope.original_content or envelope.content,
                                               policy=email.policy.default)
            self.messages.append(Mail(envelope.mail_from, list(envelope.rcpt_tos), message))  # type: ignore[arg-type]
        return "250 Message accepted for delivery"

    def authenticate(self, server: Any, session: Any, envelope: Any, mechanism: str, data: Any) -> Any:
        from aiosmtpd.smtp import AuthResult

        login = data.login.decode() if isinstance(data.login, bytes) else str(data.login)
        password = data.password.decode() if isinstance(data.password, bytes) else str(data.password)
        ok = hmac.compare_digest(login, self.user) and hmac.compare_digest(password, self.password)
        with self.lock:
            self.logins.append((login, ok))
        # handled=False: aiosmtpd then answers 535 itself (the default, handled=True, answers
        # nothing and leaves the client waiting for a reply that never comes)
        return AuthResult(success=ok, handled=False)


@dataclass
class SmtpServer:
    """A running aiosmtpd server: connect to host:port with AUTH user/password, security "none"."""

    host: str
    port: int
    capture: SmtpCapture
    user: str = "alerts"
    password: str = "secret"

    @property
    def messages(self) -> list[Mail]:
        return self.capture.messages

    @property
    def next_reply(self) -> str | None:
        return self.capture.next_reply

    @next_reply.setter
    def next_reply(self, reply: str | None) -> None:
        self.capture.next_reply = reply


Smtp = SmtpServer  # the name tests/alert_receivers.py uses


@pytest.fixture
def smtp_server() -> Iterator[SmtpServer]:
    """An SMTP server on 127.0.0.1 requiring AUTH (alerts/secret) over plain text (no TLS)."""
    from aiosmtpd.controller import Controller

    capture = SmtpCapture()
    for attempt in range(5):  # port=0 is unsupported by Controller, so pick one and retry if taken
        port = free_port()
        with warnings.catch_warnings():  # plaintext AUTH is the point here, on loopback
            warnings.filterwarnings("ignore", "Requiring AUTH while not requiring TLS")
            controller = Controller(capture, hostname="127.0.0.1", port=port, ready_timeout=10,
                                    authenticator=capture.authenticate, auth_required=True, auth_require_tls=False)
        try:
            controller.start()
            break
        except (OSError, RuntimeError):
            if attempt == 4:
                raise
    try:
        yield SmtpServer("127.0.0.1", port, capture, capture.user, capture.password)
    finally:
        controller.stop()


# -- Prometheus Alertmanager: the real binary (alerts.md §4) ----------------------------------------

ALERTMANAGER_BINARY = shutil.which("prometheus-alertmanager") or shutil.which("alertmanager")


class NotificationCapture(Receiver):
    """`POST /am`: where Alertmanager's webhook receiver sends its notifications."""

    name = "am-capture"

    def __init__(self) -> None:
        super().__init__()
        self.notifications: list[dict[str, Any]] = []

    def routes(self) -> list[Route]:
        return [self.route("/am", self.post)]

    async def post(self, request: Request, record: Received) -> Response:
        with self.lock:
            self.notifications.append(record.json)
        return PlainTextResponse("ok")


@dataclass
class Alertmanager:
    """The real Alertmanager on 127.0.0.1 (group_wait 0s, group_interval 1s, each label set its
    own group) whose only receiver is a webhook into `capture` with send_resolved. Module-scoped:
    use label values unique to your test."""

    url: str
    capture: NotificationCapture
    process: subprocess.Popen[bytes]
    log: Path
    auth: tuple[str, str] | None = None  # (user, password) when started behind HTTP Basic auth

    @property
    def notifications(self) -> list[dict[str, Any]]:
        with self.capture.lock:
            return list(self.capture.notifications)

    def alerts(self, active: bool | None = None, **matchers: str) -> list[dict[str, Any]]:
        """GET /api/v2/alerts, optionally `active=` and label matchers (`alerts(issue_id="7")`)."""
        params: list[tuple[str, Any]] = [] if active is None else [("active", str(active).lower())]
        params += [("filter", f'{name}="{value}"') for name, value in matchers.items()]
        r = httpx.get(f"{self.url}/api/v2/alerts", params=params, auth=self.auth, timeout=5)
        assert r.status_code == 200, r.text
        return r.json()

    def post(self, alerts: list[dict[str, Any]]) -> httpx.Response:
        return httpx.post(f"{self.url}/api/v2/alerts", json=alerts, auth=self.auth, timeout=5)

    def notified(self, status: str, timeout: float = 10.0, **labels: str) -> dict[str, Any]:
        """Wait for a webhook notification carrying an alert with this status and these labels."""
        def find() -> dict[str, Any] | None:
            return next((a for n in self.notifications for a in n.get("alerts", [])
                         if a.get("status") == status and labels.items() <= a.get("labels", {}).items()), None)
        return wait_for(find, timeout)


ALERTMANAGER_CONFIG = """\
route:
  receiver: "capture"
  group_by: ["..."]
  group_wait: 0s
  group_interval: 1s
  repeat_interval: 1h
receivers:
  - name: "capture"
    webhook_configs:
      - url: "{url}"
        send_resolved: true
"""


@pytest.fixture(scope="module")
def alertmanager(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Alertmanager]:
    """The Debian `prometheus-alertmanager` binary on a free loopback port, clustering off."""
    yield from run_alertmanager(tmp_path_factory.mktemp("alertmanager"))


def run_alertmanager(work: Path, auth: tuple[str, str, str] | None = None) -> Iterator[Alertmanager]:
    """Start Alertmanager in `work`; `auth` = (user, password, its bcrypt hash) puts every endpoint
    behind HTTP Basic auth through the exporter-toolkit `--web.config.file` (basic_auth_users)."""
    if ALERTMANAGER_BINARY is None:
        pytest.skip("the prometheus-alertmanager binary is not installed "
                    "(Debian: apt-get install prometheus-alertmanager; .ci/run installs it)")
    capture = NotificationCapture().start()
    config = work / "am.yml"
    config.write_text(ALERTMANAGER_CONFIG.format(url=f"{capture.url}/am"))
    web = []
    if auth:
        (work / "web.yml").write_text(f'basic_auth_users:\n  {auth[0]}: "{auth[2]}"\n')
        web = [f"--web.config.file={work / 'web.yml'}"]
    log = work / "alertmanager.log"
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    with log.open("wb") as out:
        process = subprocess.Popen([ALERTMANAGER_BINARY, f"--config.file={config}", f"--storage.path={work / 'data'}",
                                    f"--web.listen-address=127.0.0.1:{port}", "--cluster.listen-address=", *web],
                                   stdout=out, stderr=subprocess.STDOUT)

    def ready() -> bool:
        if process.poll() is not None:
            raise AssertionError(f"alertmanager exited during start-up:\n{log.read_text()[-2000:]}")
        try:
            return httpx.get(f"{url}/-/ready", auth=auth[:2] if auth else None, timeout=1).status_code == 200
        except httpx.TransportError:
            return False

    try:
        wait_for(ready, timeout=20)
        yield Alertmanager(url, capture, process, log, auth[:2] if auth else None)
    finally:
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(5)
        capture.stop()


# -- fixtures for the HTTP receivers --------------------------------------------------------------


def running(receiver: Receiver) -> Iterator[Any]:
    receiver.start()
    try:
        yield receiver
    finally:
        receiver.stop(wait=False)


@pytest.fixture
def slack() -> Iterator[SlackReceiver]:
    """Slack incoming webhooks; `slack.add_hook()` gives a URL to configure."""
    yield from running(SlackReceiver())


@pytest.fixture
def pagerduty() -> Iterator[PagerDutyReceiver]:
    """PagerDuty Events API v2; point the channel at `pagerduty.enqueue_url`."""
    yield from running(PagerDutyReceiver())


@pytest.fixture
def jira() -> Iterator[JiraReceiver]:
    """Jira Cloud: Basic `jira.email:jira.token`, API v3 with ADF descriptions."""
    yield from running(JiraReceiver("cloud"))


@pytest.fixture
def jira_dc() -> Iterator[JiraReceiver]:
    """Jira Data Center: `Bearer jira_dc.token`, API v2 with wiki-markup descriptions."""
    yield from running(JiraReceiver("datacenter"))


@pytest.fixture
def webhook() -> Iterator[WebhookReceiver]:
    """A Sentry-style webhook endpoint at `webhook.hook_url` verifying `webhook.secret`."""
    yield from running(WebhookReceiver())
