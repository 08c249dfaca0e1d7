#!/usr/bin/env python3
"""tracker: a self-hosted, Sentry-compatible error tracker in one file.

Point any official Sentry SDK's DSN at it and it stores, groups and shows the errors. The module
reads top to bottom in the order an envelope flows, one banner per section:

    Configuration            Settings: defaults, the TOML file, environment variables, flags.
    Storage                  the schema and its migrations, payload compression, the single writer
                             and the background task base; projects, DSN keys, tokens and people.
    Ingest                   the HTTP endpoints SDKs call: auth, body decoding, envelopes, one
                             handler per item type; attachments, feedback, the envelope log, limits.
    Processing               worker processes that prepare events (and transaction, span and log
                             items): normalisation and display fields, source maps, scrubbing,
                             grouping and a project's grouping rules.
    Issues                   writer jobs that store an event and keep its issue up to date; merge,
                             workflow, search, releases (and their source map uploads) and code
                             mappings, with their questions.
    Alerts                   rules judged in the writer, channel targets, the outbox and delivery.
    Release health and SLOs  sessions and transactions in minute buckets, objectives per minute.
    Traces and logs          transactions with their spans, log lines, and the trace joining them
                             to errors across projects; their bounds and questions.
    Retention                old events leave in small batches; each issue keeps first and latest.
    Cron monitors            check-ins, schedules, missed and timed-out runs.
    Forwarding               a project's envelopes to an upstream Sentry: the outbox, its sender, replay.
    JSON API                 Sentry's web API shapes over the sections' questions (Bearer tokens).
    Dashboard                server-rendered pages over the same questions (sign-in, roles, CSRF).
    Application              the typed application object (Tracker), its services and routes.
    CLI                      serve, demo, projects, tokens, people, send, tail, backup, check.
    Templates and static text  the pages' Jinja2 templates, stylesheet, script and icon.

Inside a section (and each `# --` part of it) definitions read top-down: one comes before the
ones it calls, in the order it calls them, starting from what the sections above call first; what
Python needs at import (a table of functions, a base class, a value computed from a class) comes
right after what it names. Sections that own data answer questions about it through named functions
that the API and the pages share; no handler holds SQL.
"""
from __future__ import annotations

import argparse
import array
import asyncio
import base64
import bisect
import collections
import contextlib
import ctypes
import dataclasses
import datetime as dt
import email.message
import email.policy
import email.utils
import functools
import gc
import hashlib
import hmac
import html
import http.client
import http.server
import inspect
import io
import ipaddress
import itertools
import json
import logging
import marshal
import math
import os
import queue
import random
import re
import resource
import secrets
import shutil
import signal
import smtplib
import socket
import sqlite3
import ssl
import sys
import time
import threading
import tomllib
import urllib.parse
import urllib.request
import uuid
import zipfile
import zlib
import zoneinfo
from pathlib import Path
from typing import Any, AsyncIterator, Awaitable, Callable, Iterable, Iterator, Mapping, NoReturn, Sequence

import aiosqlite
import brotli
import jinja2
import markupsafe
import orjson
import uvicorn
import zstandard
from zlib_ng import zlib_ng
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import ClientDisconnect, Request
from starlette.responses import (HTMLResponse, JSONResponse, PlainTextResponse, RedirectResponse, Response,
                                 StreamingResponse)
from starlette.routing import Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

__version__ = "0.1.0"
log = logging.getLogger("tracker")

# =============================================================================
# Configuration
# =============================================================================

def load_settings(config: str | None = None, **flags: Any) -> Settings:
    """Merge a TOML config file, environment variables and command-line flags (last wins)."""
    settings = Settings()
    path = config or os.environ.get("TRACKER_CONFIG")
    if path:
        with open(path, "rb") as f:
            doc = tomllib.load(f)
        for key, value in doc.get("server", {}).items():
            if key not in {f.name for f in dataclasses.fields(Settings)} or key in ("projects", "repositories", "jira", "channels", "alerts", "slo", "retention", "crons", "attachments", "traces", "forward"):
                raise SystemExit(f"{path}: unknown [server] setting {key!r}")
            setattr(settings, key, value)
        settings.projects = list(doc.get("projects", []))
        settings.repositories = list(doc.get("repositories", []))
        settings.jira = {key: str(value) for key, value in doc.get("jira", {}).items()}
        settings.channels = list(doc.get("channels", []))
        settings.alerts = dict(doc.get("alerts", {}))
        settings.slo = dict(doc.get("slo", {}))
        settings.limits = dict(doc.get("limits", {}))
        settings.retention = dict(doc.get("retention", {}))
        settings.crons = dict(doc.get("crons", {}))
        settings.attachments = dict(doc.get("attachments", {}))
        settings.traces = dict(doc.get("traces", {}))
        settings.forward = dict(doc.get("forward", {}))
    for key, var in ENV_VARS.items():
        if os.environ.get(var):
            setattr(settings, key, os.environ[var])
    for key, value in flags.items():
        if value is not None:
            setattr(settings, key, value)
    settings.port = int(settings.port)
    if isinstance(settings.trusted_proxies, list):  # TOML may list them
        settings.trusted_proxies = ",".join(map(str, settings.trusted_proxies))
    return settings


KIB, MIB = 1024, 1024 * 1024


@dataclasses.dataclass
class Settings:
    """Server settings: defaults, overridden by the TOML file, then env vars, then flags."""

    db: str = "tracker.db"
    host: str = "127.0.0.1"
    port: int = 8000
    url: str = ""  # public base URL put into DSNs; defaults to http://host:port
    organization: str = "tracker"
    max_body: int = 20 * MIB  # raw request body
    max_envelope: int = 100 * MIB  # after decompression
    max_event: int = 1 * MIB  # one event item
    batch_max: int = 512  # jobs per writer transaction
    projects: list[dict[str, Any]] = dataclasses.field(default_factory=list)
    repositories: list[dict[str, Any]] = dataclasses.field(default_factory=list)
    jira: dict[str, str] = dataclasses.field(default_factory=dict)  # url, project_id, issue_type
    channels: list[dict[str, Any]] = dataclasses.field(default_factory=list)
    alerts: dict[str, Any] = dataclasses.field(default_factory=dict)  # retry_delays, timeout, poll, refresh
    slo: dict[str, Any] = dataclasses.field(default_factory=dict)  # interval, lag (seconds)
    retention: dict[str, Any] = dataclasses.field(default_factory=dict)  # max_age_days, interval (s), batch
    auth_header: str = ""  # e.g. X-Forwarded-User: trust an SSO proxy's word on who is signed in
    limits: dict[str, Any] = dataclasses.field(default_factory=dict)  # events_per_minute, window (s), min_free_mb
    crons: dict[str, Any] = dataclasses.field(default_factory=dict)  # interval (s), minute (s; tests shorten it)
    attachments: dict[str, Any] = dataclasses.field(default_factory=dict)  # max_size, max_total (bytes)
    traces: dict[str, Any] = dataclasses.field(default_factory=dict)  # max_transactions, max_logs, max_age_days
    forward: dict[str, Any] = dataclasses.field(default_factory=dict)  # max_outbox, max_outbox_mb, retry_delays, timeout, poll
    ingest_workers: int = -1  # processes that prepare events; -1: one per core (at most 4; none on one core)
    # the TLS proxies (addresses or networks, comma-separated) whose X-Forwarded-For names the client:
    # without it a proxy on this machine makes every client 127.0.0.1 to /stream and the login throttle
    trusted_proxies: str = ""
    header_timeout: float = 10.0  # seconds from a request's first byte (or the connection) to its last header
    body_timeout: float = 60.0  # seconds from the last header to the body's last byte (20 MiB at 3 Mbit/s)
    max_connections: int = 1000  # open at once, also kept under the process's file limit (GuardedHttp)
    worker_timeout: float = 3.0  # seconds a worker with batches may go without answering or using CPU
    sourcemap_max_file: int = 40 * MIB  # one uploaded file (a source map, a bundle), uncompressed
    sourcemap_max_upload: int = 100 * MIB  # one upload (an artifact bundle's zip, and its files unzipped)

    @property
    def public_url(self) -> str:
        return (self.url or f"http://{self.host}:{self.port}").rstrip("/")


ENV_VARS = {"db": "TRACKER_DB", "host": "TRACKER_HOST", "port": "TRACKER_PORT",
            "url": "TRACKER_URL", "organization": "TRACKER_ORG", "auth_header": "TRACKER_AUTH_HEADER",
            "trusted_proxies": "TRACKER_TRUSTED_PROXIES"}


# =============================================================================
# Storage: schema, migrations, the single writer
# =============================================================================

def migrate(conn: sqlite3.Connection) -> None:
    """Apply the forward migrations this file knows and the database has not seen yet."""
    version = conn.execute("PRAGMA user_version").fetchone()[0]
    if version > len(MIGRATIONS):
        raise SystemExit(f"database schema {version} is newer than this tracker ({len(MIGRATIONS)})")
    if version == 0:  # only an empty file can still choose: lets retention give space back
        conn.execute("PRAGMA auto_vacuum=INCREMENTAL")
        conn.execute("VACUUM")  # journal_mode=WAL wrote the header already: only a VACUUM applies it now
    for number, step in enumerate(MIGRATIONS[version:], start=version + 1):
        conn.execute("BEGIN IMMEDIATE")
        if callable(step):
            step(conn)
        for statement in step.split(";") if isinstance(step, str) else ():
            if statement.strip():
                conn.execute(statement)
        conn.execute(f"PRAGMA user_version={number}")
        conn.execute("COMMIT")


# Each step is SQL, or a function for what SQL cannot say.
MIGRATIONS: list[str | Callable[[sqlite3.Connection], None]] = [
    """
    CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
    CREATE TABLE projects (
        id INTEGER PRIMARY KEY, slug TEXT NOT NULL UNIQUE, name TEXT NOT NULL,
        platform TEXT NOT NULL DEFAULT '', next_short_id INTEGER NOT NULL DEFAULT 1,
        created REAL NOT NULL);
    CREATE TABLE project_keys (
        public_key TEXT PRIMARY KEY, project_id INTEGER NOT NULL REFERENCES projects(id),
        active INTEGER NOT NULL DEFAULT 1, created REAL NOT NULL);
    CREATE TABLE api_tokens (
        id INTEGER PRIMARY KEY, token_hash TEXT NOT NULL UNIQUE, name TEXT NOT NULL DEFAULT '',
        scopes TEXT NOT NULL, created REAL NOT NULL);
    CREATE TABLE issues (
        id INTEGER PRIMARY KEY, project_id INTEGER NOT NULL REFERENCES projects(id),
        short_id INTEGER NOT NULL, type TEXT NOT NULL, title TEXT NOT NULL, culprit TEXT NOT NULL,
        metadata TEXT NOT NULL, level TEXT NOT NULL, status TEXT NOT NULL DEFAULT 'unresolved',
        platform TEXT NOT NULL, logger TEXT NOT NULL, first_seen REAL NOT NULL,
        last_seen REAL NOT NULL, times_seen INTEGER NOT NULL DEFAULT 0,
        user_count INTEGER NOT NULL DEFAULT 0, first_release TEXT, last_release TEXT,
        UNIQUE (project_id, short_id));
    CREATE INDEX issues_by_project ON issues (project_id, last_seen);
    CREATE INDEX issues_by_last_seen ON issues (last_seen);
    CREATE TABLE issue_hashes (
        project_id INTEGER NOT NULL, hash TEXT NOT NULL, issue_id INTEGER NOT NULL,
        PRIMARY KEY (project_id, hash)) WITHOUT ROWID;
    CREATE TABLE issue_tags (
        issue_id INTEGER NOT NULL, key TEXT NOT NULL, value TEXT NOT NULL,
        times_seen INTEGER NOT NULL, first_seen REAL NOT NULL, last_seen REAL NOT NULL,
        PRIMARY KEY (issue_id, key, value)) WITHOUT ROWID;
    CREATE INDEX issue_tags_by_value ON issue_tags (key, value, issue_id);
    CREATE TABLE events (
        id INTEGER PRIMARY KEY, project_id INTEGER NOT NULL, event_id TEXT NOT NULL,
        issue_id INTEGER NOT NULL, timestamp REAL NOT NULL, received REAL NOT NULL,
        level TEXT NOT NULL, environment TEXT NOT NULL, release TEXT NOT NULL,
        payload BLOB NOT NULL, UNIQUE (project_id, event_id));
    CREATE INDEX events_by_issue ON events (issue_id, timestamp, id);
    """,
    """
    CREATE TABLE issue_terms (
        key TEXT NOT NULL, value TEXT NOT NULL, issue_id INTEGER NOT NULL,
        PRIMARY KEY (key, value, issue_id)) WITHOUT ROWID;
    CREATE INDEX issue_terms_by_issue ON issue_terms (issue_id);
    ALTER TABLE issues ADD COLUMN substatus TEXT;
    ALTER TABLE issues ADD COLUMN status_details TEXT NOT NULL DEFAULT '{}';
    ALTER TABLE issues ADD COLUMN assignee TEXT;
    ALTER TABLE issues ADD COLUMN resolved_at REAL;
    CREATE INDEX issues_by_first_seen ON issues (first_seen);
    CREATE TABLE issue_activity (
        id INTEGER PRIMARY KEY, issue_id INTEGER NOT NULL, kind TEXT NOT NULL,
        data TEXT NOT NULL DEFAULT '{}', actor TEXT, created REAL NOT NULL);
    CREATE INDEX issue_activity_by_issue ON issue_activity (issue_id, created);
    CREATE TABLE project_rules (
        project_id INTEGER PRIMARY KEY REFERENCES projects(id),
        stacktrace_rules TEXT NOT NULL DEFAULT '', fingerprint_rules TEXT NOT NULL DEFAULT '');
    """,
    """
    CREATE TABLE releases (
        id INTEGER PRIMARY KEY, version TEXT NOT NULL UNIQUE, ref TEXT, url TEXT,
        date_created REAL NOT NULL, date_started REAL, date_released REAL);
    CREATE TABLE release_projects (
        release_id INTEGER NOT NULL, project_id INTEGER NOT NULL,
        PRIMARY KEY (release_id, project_id)) WITHOUT ROWID;
    CREATE TABLE repositories (
        id INTEGER PRIMARY KEY, name TEXT NOT NULL UNIQUE, url TEXT, provider TEXT NOT NULL,
        date_created REAL NOT NULL);
    CREATE TABLE commits (
        id INTEGER PRIMARY KEY, repository_id INTEGER, sha TEXT NOT NULL, author_name TEXT,
        author_email TEXT, message TEXT, timestamp REAL, UNIQUE (repository_id, sha));
    CREATE TABLE release_commits (
        release_id INTEGER NOT NULL, commit_id INTEGER NOT NULL, position INTEGER NOT NULL,
        PRIMARY KEY (release_id, commit_id)) WITHOUT ROWID;
    CREATE TABLE release_refs (
        release_id INTEGER NOT NULL, repository_id INTEGER NOT NULL, commit_sha TEXT NOT NULL,
        previous_sha TEXT, PRIMARY KEY (release_id, repository_id)) WITHOUT ROWID;
    CREATE TABLE commit_files (
        commit_id INTEGER NOT NULL, path TEXT NOT NULL, type TEXT NOT NULL,
        PRIMARY KEY (commit_id, path)) WITHOUT ROWID;
    CREATE INDEX commit_files_by_path ON commit_files (path);
    CREATE TABLE deploys (
        id INTEGER PRIMARY KEY, release_id INTEGER NOT NULL, environment TEXT NOT NULL, name TEXT,
        url TEXT, date_started REAL, date_finished REAL NOT NULL);
    CREATE INDEX deploys_by_release ON deploys (release_id, date_finished);
    CREATE TABLE code_mappings (
        id INTEGER PRIMARY KEY, project_id INTEGER NOT NULL, repository_url TEXT NOT NULL,
        provider TEXT NOT NULL, stack_root TEXT NOT NULL DEFAULT '', source_root TEXT NOT NULL DEFAULT '',
        default_branch TEXT NOT NULL DEFAULT 'main');
    """,
    """
    INSERT OR IGNORE INTO releases (version, date_created)
        SELECT value, min(first_seen) FROM issue_tags WHERE key = 'release' GROUP BY value;
    INSERT OR IGNORE INTO release_projects (release_id, project_id)
        SELECT DISTINCT r.id, i.project_id FROM issue_tags t JOIN issues i ON i.id = t.issue_id
        JOIN releases r ON r.version = t.value WHERE t.key = 'release';
    """,
    """
    CREATE TABLE channels (
        id INTEGER PRIMARY KEY, name TEXT NOT NULL UNIQUE, kind TEXT NOT NULL, config TEXT NOT NULL,
        failures INTEGER NOT NULL DEFAULT 0, created REAL NOT NULL);
    CREATE TABLE alert_rules (
        id INTEGER PRIMARY KEY, project_id INTEGER NOT NULL, name TEXT NOT NULL, rule TEXT NOT NULL,
        created REAL NOT NULL);
    CREATE INDEX alert_rules_by_project ON alert_rules (project_id);
    CREATE TABLE rule_fires (
        rule_id INTEGER NOT NULL, issue_id INTEGER NOT NULL, last_fired REAL NOT NULL,
        PRIMARY KEY (rule_id, issue_id)) WITHOUT ROWID;
    CREATE TABLE outbox (
        id INTEGER PRIMARY KEY, channel_id INTEGER NOT NULL, issue_id INTEGER, rule_id INTEGER,
        trigger TEXT NOT NULL, idempotency_key TEXT NOT NULL UNIQUE, payload TEXT NOT NULL, status TEXT NOT NULL,
        attempts INTEGER NOT NULL DEFAULT 0, next_attempt REAL NOT NULL, last_status INTEGER, last_error TEXT,
        external_ref TEXT, created REAL NOT NULL, delivered REAL);
    CREATE INDEX outbox_due ON outbox (status, next_attempt);
    CREATE INDEX outbox_by_issue ON outbox (issue_id, channel_id);
    CREATE TABLE issue_links (
        issue_id INTEGER NOT NULL, channel_id INTEGER NOT NULL, kind TEXT NOT NULL, ref TEXT NOT NULL, data TEXT,
        created REAL NOT NULL, PRIMARY KEY (issue_id, channel_id)) WITHOUT ROWID;
    """,
    lambda conn: default_rules_everywhere(conn),
    """
    CREATE TABLE session_buckets (
        project_id INTEGER NOT NULL, release TEXT NOT NULL, environment TEXT NOT NULL, minute INTEGER NOT NULL,
        total INTEGER NOT NULL, errored INTEGER NOT NULL, crashed INTEGER NOT NULL, abnormal INTEGER NOT NULL,
        PRIMARY KEY (project_id, release, environment, minute)) WITHOUT ROWID;
    CREATE INDEX session_buckets_by_minute ON session_buckets (project_id, minute);
    CREATE INDEX session_buckets_by_release ON session_buckets (release, environment);
    CREATE TABLE session_state (
        project_id INTEGER NOT NULL, sid TEXT NOT NULL, minute INTEGER NOT NULL, errored INTEGER NOT NULL,
        crashed INTEGER NOT NULL, abnormal INTEGER NOT NULL, PRIMARY KEY (project_id, sid)) WITHOUT ROWID;
    CREATE INDEX session_state_by_minute ON session_state (minute);
    CREATE TABLE session_users (
        project_id INTEGER NOT NULL, release TEXT NOT NULL, environment TEXT NOT NULL, day INTEGER NOT NULL,
        did TEXT NOT NULL, crashed INTEGER NOT NULL,
        PRIMARY KEY (project_id, release, environment, day, did)) WITHOUT ROWID;
    CREATE TABLE transaction_buckets (
        project_id INTEGER NOT NULL, name TEXT NOT NULL, release TEXT NOT NULL, environment TEXT NOT NULL,
        minute INTEGER NOT NULL, count INTEGER NOT NULL, errors INTEGER NOT NULL, duration_ms REAL NOT NULL,
        PRIMARY KEY (project_id, minute, name, release, environment)) WITHOUT ROWID;
    CREATE TABLE slos (
        project_id INTEGER PRIMARY KEY, config TEXT NOT NULL, state TEXT NOT NULL, value REAL, total INTEGER NOT NULL,
        since REAL NOT NULL, updated REAL NOT NULL);
    CREATE TABLE slo_history (
        project_id INTEGER NOT NULL, minute INTEGER NOT NULL, value REAL, total INTEGER NOT NULL, state TEXT NOT NULL,
        PRIMARY KEY (project_id, minute)) WITHOUT ROWID;
    CREATE INDEX events_by_project_time ON events (project_id, timestamp);
    """,
    """
    CREATE TABLE payload_dicts (dict_id INTEGER PRIMARY KEY, data BLOB NOT NULL, created REAL NOT NULL);
    """,
    """
    CREATE TABLE users (
        id INTEGER PRIMARY KEY, name TEXT NOT NULL UNIQUE COLLATE NOCASE, password TEXT, role TEXT NOT NULL,
        created REAL NOT NULL);
    CREATE TABLE web_sessions (
        token_hash TEXT PRIMARY KEY, user_id INTEGER NOT NULL, csrf TEXT NOT NULL, created REAL NOT NULL,
        expires REAL NOT NULL) WITHOUT ROWID;
    CREATE TABLE login_links (code_hash TEXT PRIMARY KEY, user_id INTEGER NOT NULL, expires REAL NOT NULL) WITHOUT ROWID;
    ALTER TABLE api_tokens ADD COLUMN user_id INTEGER;
    ALTER TABLE project_keys ADD COLUMN label TEXT NOT NULL DEFAULT 'Default';
    CREATE TABLE project_options (
        project_id INTEGER NOT NULL, key TEXT NOT NULL, value TEXT NOT NULL,
        PRIMARY KEY (project_id, key)) WITHOUT ROWID;
    CREATE TABLE dropped (
        project_id INTEGER NOT NULL, minute INTEGER NOT NULL, reason TEXT NOT NULL, category TEXT NOT NULL,
        quantity INTEGER NOT NULL, PRIMARY KEY (project_id, minute, reason, category)) WITHOUT ROWID;
    """,
    """
    CREATE TABLE envelopes (
        id INTEGER PRIMARY KEY, project_id INTEGER NOT NULL, received REAL NOT NULL, client TEXT NOT NULL,
        header TEXT NOT NULL, items TEXT NOT NULL, size INTEGER NOT NULL, body BLOB);
    CREATE INDEX envelopes_by_project ON envelopes (project_id, id);
    """,
    """
    CREATE TABLE monitors (
        id INTEGER PRIMARY KEY, project_id INTEGER NOT NULL REFERENCES projects(id), slug TEXT NOT NULL,
        name TEXT NOT NULL, schedule_type TEXT NOT NULL, schedule TEXT NOT NULL, checkin_margin NUMERIC NOT NULL,
        max_runtime NUMERIC NOT NULL, timezone TEXT NOT NULL, failure_issue_threshold INTEGER NOT NULL DEFAULT 1,
        recovery_threshold INTEGER NOT NULL DEFAULT 1, status TEXT NOT NULL DEFAULT 'new',
        environment TEXT NOT NULL DEFAULT 'production', next_expected REAL, last_checkin REAL, issue_id INTEGER,
        created REAL NOT NULL, UNIQUE (project_id, slug));
    CREATE TABLE check_ins (
        id INTEGER PRIMARY KEY, check_in_id TEXT NOT NULL, monitor_id INTEGER NOT NULL REFERENCES monitors(id),
        project_id INTEGER NOT NULL, status TEXT NOT NULL, duration REAL, environment TEXT NOT NULL,
        release TEXT NOT NULL DEFAULT '', trace_id TEXT, expected_time REAL, date_created REAL NOT NULL,
        date_updated REAL NOT NULL, UNIQUE (monitor_id, check_in_id));
    CREATE INDEX check_ins_by_monitor ON check_ins (monitor_id, date_created);
    CREATE INDEX check_ins_by_project ON check_ins (project_id, date_created);
    CREATE INDEX check_ins_running ON check_ins (date_created) WHERE status = 'in_progress';
    """,
    """
    CREATE TABLE attachments (
        id INTEGER PRIMARY KEY, project_id INTEGER NOT NULL, event_id TEXT NOT NULL, filename TEXT NOT NULL,
        content_type TEXT NOT NULL, attachment_type TEXT NOT NULL, size INTEGER NOT NULL, sha1 TEXT NOT NULL,
        utf8 INTEGER NOT NULL, data BLOB NOT NULL, created REAL NOT NULL);
    CREATE INDEX attachments_by_event ON attachments (project_id, event_id);
    CREATE INDEX attachments_by_size ON attachments (project_id, size);
    CREATE TABLE feedback (
        id INTEGER PRIMARY KEY, project_id INTEGER NOT NULL, event_id TEXT, issue_id INTEGER,
        feedback_event_id TEXT, name TEXT NOT NULL, email TEXT NOT NULL, message TEXT NOT NULL, url TEXT NOT NULL,
        source TEXT NOT NULL, contexts TEXT NOT NULL, created REAL NOT NULL, UNIQUE (project_id, feedback_event_id));
    CREATE INDEX feedback_by_issue ON feedback (issue_id, created);
    CREATE INDEX feedback_by_event ON feedback (project_id, event_id);
    CREATE INDEX feedback_by_project ON feedback (project_id, created);
    """,
    # when each release started in a project (RELEASE_START_SQL): its issues' first events, found
    # by release instead of by walking every issue of the project (62 ms at 10,000 issues)
    "CREATE INDEX issue_tags_release_start ON issue_tags (value, first_seen) WHERE key = 'release'",
    # the project overview counts a period's events by level, issue, environment and release: with
    # those columns in the (project, time) index it reads the index alone, not a table row per event
    """
    CREATE INDEX events_by_project_time_covering ON events
        (project_id, timestamp, level, environment, release, issue_id);
    DROP INDEX events_by_project_time;
    """,
    # a disabled person keeps their name (assignments, history) but cannot sign in by any way
    "ALTER TABLE users ADD COLUMN disabled INTEGER NOT NULL DEFAULT 0",
    # a project's attachment bytes as a running total kept by triggers: the quota check was a sum(size)
    # over the project's attachments for each one stored (8,000 tiny ones held the writer for 14 s);
    # statements one by one, as the trigger bodies hold semicolons
    lambda conn: [conn.execute(statement) for statement in (
        "CREATE TABLE attachment_usage (project_id INTEGER PRIMARY KEY, bytes INTEGER NOT NULL)",
        "INSERT INTO attachment_usage SELECT project_id, sum(size) FROM attachments GROUP BY project_id",
        """CREATE TRIGGER attachment_added AFTER INSERT ON attachments BEGIN
               INSERT INTO attachment_usage VALUES (new.project_id, new.size)
                   ON CONFLICT DO UPDATE SET bytes = bytes + excluded.bytes;
           END""",
        """CREATE TRIGGER attachment_removed AFTER DELETE ON attachments BEGIN
               UPDATE attachment_usage SET bytes = bytes - old.size WHERE project_id = old.project_id;
           END""")],
    # when the database was made (the organization's dateCreated): for one made before this step, its
    # oldest project, person or token
    """
    INSERT OR IGNORE INTO meta (key, value) SELECT 'created', coalesce(min(t), (julianday('now') - 2440587.5) * 86400.0) FROM (
        SELECT min(created) AS t FROM projects UNION ALL SELECT min(created) FROM users
        UNION ALL SELECT min(created) FROM api_tokens);
    """,
    # source maps (issue 17): chunks sentry-cli uploads before it asks for their assembly (gone
    # then, or when they expire), and the files of each artifact bundle, found by debug id or by
    # release, dist and URL; the legacy per-file release uploads are a bundle per (release, dist)
    """
    CREATE TABLE upload_chunks (sha1 TEXT PRIMARY KEY, data BLOB NOT NULL, expires REAL NOT NULL);
    CREATE TABLE artifact_bundles (
        id INTEGER PRIMARY KEY, project_id INTEGER NOT NULL, bundle_id TEXT NOT NULL, checksum TEXT NOT NULL,
        release TEXT NOT NULL, dist TEXT NOT NULL, file_count INTEGER NOT NULL, size INTEGER NOT NULL,
        date_added REAL NOT NULL, UNIQUE (project_id, bundle_id, release, dist));
    CREATE TABLE artifact_files (
        id INTEGER PRIMARY KEY, bundle_id INTEGER NOT NULL, project_id INTEGER NOT NULL, release TEXT NOT NULL,
        dist TEXT NOT NULL, url TEXT NOT NULL, type TEXT NOT NULL, debug_id TEXT, headers TEXT NOT NULL,
        size INTEGER NOT NULL, sha1 TEXT NOT NULL, data BLOB NOT NULL, date_added REAL NOT NULL);
    CREATE INDEX artifact_files_by_url ON artifact_files (project_id, release, dist, url);
    CREATE INDEX artifact_files_by_debug_id ON artifact_files (project_id, debug_id) WHERE debug_id IS NOT NULL;
    CREATE INDEX artifact_files_by_bundle ON artifact_files (bundle_id);
    """,
    # traces and logs (see Traces and logs): an error event names its trace, so that a trace's errors
    # are found without reading payloads; transactions keep their spans (compressed), logs their lines
    """
    ALTER TABLE events ADD COLUMN trace_id TEXT;
    CREATE INDEX events_by_trace ON events (trace_id) WHERE trace_id IS NOT NULL;
    CREATE TABLE transactions (
        id INTEGER PRIMARY KEY, project_id INTEGER NOT NULL, event_id TEXT NOT NULL, trace_id TEXT NOT NULL,
        span_id TEXT NOT NULL, parent_span_id TEXT, name TEXT NOT NULL, op TEXT NOT NULL, status TEXT NOT NULL, release TEXT NOT NULL,
        environment TEXT NOT NULL, start REAL NOT NULL, duration_ms REAL NOT NULL, spans INTEGER NOT NULL,
        payload BLOB NOT NULL, received REAL NOT NULL);
    CREATE INDEX transactions_by_trace ON transactions (trace_id);
    CREATE INDEX transactions_by_project ON transactions (project_id, start);
    CREATE TABLE logs (
        id INTEGER PRIMARY KEY, project_id INTEGER NOT NULL, timestamp REAL NOT NULL, level TEXT NOT NULL,
        severity_number INTEGER NOT NULL, body TEXT NOT NULL, trace_id TEXT, span_id TEXT, template TEXT,
        release TEXT NOT NULL, environment TEXT NOT NULL, sdk TEXT NOT NULL, attributes TEXT NOT NULL,
        received REAL NOT NULL);
    CREATE INDEX logs_by_project ON logs (project_id, timestamp);
    CREATE INDEX logs_by_trace ON logs (trace_id, timestamp) WHERE trace_id IS NOT NULL;
    """,
    # forwarding (issue 20): the outbox of envelopes for upstreams, written in the envelope's own
    # transaction; each project's queued count and bytes kept by triggers (the cap is checked per row),
    # its sends per minute, and where each replay (`tracker forward`) got to
    lambda conn: [conn.execute(statement) for statement in (
        """CREATE TABLE forward_outbox (
               id INTEGER PRIMARY KEY, project_id INTEGER NOT NULL, dsn TEXT NOT NULL, event_id TEXT,
               categories TEXT NOT NULL, header TEXT NOT NULL, body BLOB NOT NULL, size INTEGER NOT NULL,
               created REAL NOT NULL, attempts INTEGER NOT NULL DEFAULT 0, next_attempt REAL NOT NULL, last_error TEXT)""",
        "CREATE INDEX forward_outbox_due ON forward_outbox (next_attempt, id)",
        "CREATE INDEX forward_outbox_by_project ON forward_outbox (project_id, id)",
        """CREATE TABLE forward_state (
               project_id INTEGER PRIMARY KEY, queued INTEGER NOT NULL DEFAULT 0, bytes INTEGER NOT NULL DEFAULT 0,
               dropped INTEGER NOT NULL DEFAULT 0, last_error TEXT, last_error_at REAL, last_sent REAL)""",
        """CREATE TRIGGER forward_queued AFTER INSERT ON forward_outbox BEGIN
               INSERT INTO forward_state (project_id, queued, bytes) VALUES (new.project_id, 1, new.size)
                   ON CONFLICT DO UPDATE SET queued = queued + 1, bytes = bytes + excluded.bytes;
           END""",
        """CREATE TRIGGER forward_unqueued AFTER DELETE ON forward_outbox BEGIN
               UPDATE forward_state SET queued = queued - 1, bytes = bytes - old.size WHERE project_id = old.project_id;
           END""",
        """CREATE TABLE forward_sent (
               project_id INTEGER NOT NULL, minute INTEGER NOT NULL, sent INTEGER NOT NULL,
               PRIMARY KEY (project_id, minute)) WITHOUT ROWID""",
        """CREATE TABLE forward_replays (
               project_id INTEGER NOT NULL, dsn TEXT NOT NULL, since REAL NOT NULL, last_id INTEGER NOT NULL,
               sent INTEGER NOT NULL, done INTEGER NOT NULL DEFAULT 0, updated REAL NOT NULL,
               PRIMARY KEY (project_id, dsn)) WITHOUT ROWID""")],
    # grouping 2026-12 (grouping.md §4's built-in rules for every platform, exception groups parent
    # first): a project with issues also hashes each event the previous way for 90 days
    # (previous_grouping_hashes), so an event whose hash moved still joins the issue its kind joined before
    """
    ALTER TABLE project_rules ADD COLUMN secondary_until REAL NOT NULL DEFAULT 0;
    INSERT INTO project_rules (project_id, secondary_until)
        SELECT id, CAST(strftime('%s', 'now') AS REAL) + 7776000 FROM projects
        WHERE EXISTS (SELECT 1 FROM issues WHERE issues.project_id = projects.id)
        ON CONFLICT (project_id) DO UPDATE SET secondary_until = excluded.secondary_until
    """,
    # the overview's bug lifetimes and regressions read the resolutions and regressions by kind: from
    # every issue's activity they took 10-20 ms at 10,000 issues, from this index well under 1 ms; it is
    # written with the activity (a new issue, a status change), not per event
    "CREATE INDEX IF NOT EXISTS issue_activity_by_kind ON issue_activity (kind, created, issue_id)",
    # the release list counted each release's new issues with a scan of every issue (48 ms of CPU for
    # 20 releases at 10,000 issues; 0.6 ms so); written once, with the issue (the event's UPDATE does
    # not assign first_release)
    "CREATE INDEX IF NOT EXISTS issues_by_first_release ON issues (first_release)",
    # the issue list's release menu (latest seen first) and the release list's event counts read
    # last_seen and times_seen of every (issue, release) tag row: 20 ms of CPU each at 10,000 issues,
    # 1.5 ms from this index. It costs the writer per event: the release row's entry changes with each
    # event (+0 to +12 µs per event in an isolated benchmark of the ten-tag upsert, about 80 µs; the
    # index it replaces is rewritten per event too, as the upsert assigns first_seen)
    """
    CREATE INDEX IF NOT EXISTS issue_tags_release ON issue_tags (value, first_seen, times_seen, last_seen)
        WHERE key = 'release';
    DROP INDEX IF EXISTS issue_tags_release_start;
    """,
    # the Logs page of every project (what the menu opens; live, it asks again every 5 s) read the newest
    # lines through logs_by_project, every line and a sort: 3.5-6.7 s at 1,000,000 lines, with the one
    # read connection held meanwhile; from this index it reads the 200 it shows. It costs the writer about
    # 2 µs a line (bench/README.md)
    "CREATE INDEX IF NOT EXISTS logs_by_time ON logs (timestamp)",
]

Job = Callable[[sqlite3.Connection], Any]


class Background:
    """A task the app runs beside the server: started by the lifespan, cancelled at shutdown."""

    task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self.task = asyncio.get_running_loop().create_task(self.run())

    async def close(self) -> None:
        if self.task:
            self.task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self.task

    async def run(self) -> None:
        raise NotImplementedError


class Store:
    """Read side: an aiosqlite connection that never blocks the writer (WAL readers)."""

    def __init__(self, conn: aiosqlite.Connection) -> None:
        self.conn = conn

    @classmethod
    async def open(cls, path: str) -> Store:
        conn = await aiosqlite.connect(path, isolation_level=None)
        conn.row_factory = sqlite3.Row
        await conn.execute("PRAGMA query_only=ON")
        return cls(conn)

    async def all(self, sql: str, args: Iterable[Any] | Mapping[str, Any] = ()) -> list[sqlite3.Row]:
        return list(await self.conn.execute_fetchall(sql, args if isinstance(args, Mapping) else tuple(args)))

    async def one(self, sql: str, args: Iterable[Any] | Mapping[str, Any] = ()) -> sqlite3.Row | None:
        rows = await self.all(sql, args)
        return rows[0] if rows else None


def compress_payload(data: dict[str, Any]) -> bytes:
    return PAYLOADS.compress(data)


class PayloadCodec:
    """Event payloads as zstd frames. Once a database holds enough events, a dictionary trained on
    them is stored and used: a project's events share most of their text (SDK names, frames,
    contexts), so with it an event costs a few hundred bytes instead of a few thousand, and
    compressing gets faster too. A frame names its dictionary; old zlib payloads still read."""

    TRAIN_AFTER = 1000  # events compressed without a dictionary before one is trained on them

    def __init__(self) -> None:
        self.dicts: dict[int, zstandard.ZstdCompressionDict] = {}
        self.current: int | None = None
        self.plain = 0
        self.training = False
        self.local = threading.local()  # zstd (de)compressors are per thread

    def add(self, dict_id: int, data: bytes) -> None:
        self.dicts[dict_id] = zstandard.ZstdCompressionDict(data)
        self.current = max(self.dicts)

    def load(self, conn: sqlite3.Connection) -> None:
        for row in conn.execute("SELECT dict_id, data FROM payload_dicts ORDER BY dict_id"):
            self.add(row[0], row[1])

    def compress(self, data: dict[str, Any]) -> bytes:
        raw = json_dumps(data)
        key = ("c", self.current)
        compressor = getattr(self.local, "compressors", {}).get(key)
        if compressor is None:
            dictionary = self.dicts.get(self.current) if self.current is not None else None
            compressor = zstandard.ZstdCompressor(level=3, dict_data=dictionary)
            self.local.__dict__.setdefault("compressors", {})[key] = compressor
        if self.current is None:
            self.plain += 1
        return compressor.compress(raw)

    def decompress(self, blob: bytes) -> dict[str, Any]:
        if blob[:1] == b"\x78":  # a zlib stream from before zstd
            return json_loads(zlib.decompress(blob))
        dict_id = zstandard.get_frame_parameters(blob).dict_id
        decompressors = self.local.__dict__.setdefault("decompressors", {})
        if dict_id not in decompressors:
            decompressors[dict_id] = zstandard.ZstdDecompressor(dict_data=self.dicts[dict_id] if dict_id else None)
        return json_loads(decompressors[dict_id].decompress(blob))

    def count_plain(self) -> None:
        """An event compressed without a dictionary in a worker process counts towards training here."""
        if self.current is None:
            self.plain += 1

    def wants_training(self) -> bool:
        return self.current is None and self.plain >= self.TRAIN_AFTER and not self.training


def json_dumps(value: Any) -> bytes:
    """Compact UTF-8 JSON; json itself writes what orjson refuses (integers beyond 64 bits)."""
    try:
        return orjson.dumps(value)
    except TypeError:
        return json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode()


def json_loads(raw: bytes | str) -> Any:
    """orjson (several times faster than json on events); json itself reads what orjson refuses
    (NaN, lone surrogates), so the two accept the same documents."""
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError:
        return json.loads(raw)


PAYLOADS = PayloadCodec()


async def train_payload_dictionary(db: str, writer: Writer) -> None:
    """Train a dictionary on the newest events (off the event loop and the writer) and store it."""
    try:
        trained = await asyncio.to_thread(train_on_newest, db)
        await writer.submit(lambda conn: conn.execute("INSERT INTO payload_dicts (dict_id, data, created) VALUES "
                                                      "(?, ?, ?)", (trained.dict_id(), trained.as_bytes(), time.time())))
        PAYLOADS.add(trained.dict_id(), trained.as_bytes())
    except Exception:  # without a dictionary events are only bigger: never fail ingest for it
        log.exception("training the payload dictionary failed")
    finally:
        PAYLOADS.training = False


def train_on_newest(db: str, budget: int = 2 * MIB) -> zstandard.ZstdCompressionDict:
    """A 32 KB dictionary from the newest stored payloads, read one at a time until `budget` bytes of
    them. Measured on 3 KB events: 2 MiB teach it as much as 8 (the same 175 bytes per compressed
    event), and fastcover with fixed parameters (k=1024, d=8, f=15) matches the default search at
    a quarter of the time and half the memory (+11 MB instead of +23; +45 MB for 8 MiB)."""
    samples, total = [], 0
    conn = read_only(db)
    try:
        for (blob,) in conn.execute("SELECT payload FROM events ORDER BY id DESC LIMIT ?", (PayloadCodec.TRAIN_AFTER,)):
            raw = json_dumps(decompress_payload(blob))
            if total + len(raw) > budget and samples:
                break
            samples.append(raw)
            total += len(raw)
    finally:
        conn.close()
    return zstandard.train_dictionary(32768, samples, k=1024, d=8, f=15, level=3)


def read_only(path: str) -> sqlite3.Connection:
    """A plain reading connection, for a thread or process beside the server's own."""
    conn = sqlite3.connect(path, isolation_level=None, timeout=30)
    conn.execute("PRAGMA query_only=ON")
    return conn


def decompress_payload(blob: bytes) -> dict[str, Any]:
    return PAYLOADS.decompress(blob)


class Writer:
    """The server's only writer: one thread owning one connection, fed by a queue.

    Jobs that arrive while a commit is running are applied together in the next
    transaction (group commit); a job's future resolves only after its commit, so an
    HTTP 200 always means the data is on disk.
    """

    def __init__(self, path: str, batch_max: int) -> None:
        self.conn = connect_db(path)
        self.batch_max = max(int(batch_max), 1)
        self.pending: list[tuple[Job, asyncio.Future[Any]]] = []  # jobs for the next batch
        self.sent: list[tuple[Job, asyncio.Future[Any]]] = []  # the batch in the writer thread
        self.busy = False
        self.loop: asyncio.AbstractEventLoop  # the event loop of start(), whom the thread answers
        self.batches: queue.SimpleQueue[list[Job] | None] = queue.SimpleQueue()
        self.thread = threading.Thread(target=self.work, name="tracker-writer", daemon=True)

    def start(self) -> None:
        self.loop = asyncio.get_running_loop()
        self.thread.start()

    async def submit(self, job: Job) -> Any:
        future: asyncio.Future[Any] = self.loop.create_future()
        self.pending.append((job, future))
        if len(self.pending) == 1 and not self.busy:  # at the end of this loop turn, with its other jobs
            self.loop.call_soon(self.send)
        result = await future
        if isinstance(result, Exception):
            raise result
        return result

    def send(self) -> None:
        """The jobs waiting, as one batch to the thread, unless one is there (they go when it is done).
        A queue and a thread of our own, not an executor: its futures, chained by callbacks to asyncio's,
        and the task that awaited them were about 8% of the event loop's GIL samples under the error load."""
        if self.busy or not self.pending:
            return
        self.busy = True
        if len(self.pending) <= self.batch_max:
            self.sent, self.pending = self.pending, []
        else:
            self.sent, self.pending = self.pending[:self.batch_max], self.pending[self.batch_max:]
        self.batches.put([job for job, _ in self.sent])

    def work(self) -> None:
        """The writer thread: each batch applied and committed, its results handed to the event loop."""
        name_os_thread("tracker-writer")
        while (jobs := self.batches.get()) is not None:
            try:
                results = apply_batch(self.conn, jobs)
            except Exception as exc:  # the commit itself failed (disk full, I/O error)
                log.exception("writer batch failed")
                results = [exc] * len(jobs)
            try:
                self.loop.call_soon_threadsafe(self.done, results)
            except RuntimeError:  # the loop closed under an unfinished batch: nobody waits for it
                return
            del jobs, results  # not kept while the queue is idle: a job may hold a whole envelope

    def done(self, results: list[Any]) -> None:
        for (_, future), result in zip(self.sent, results):
            if not future.done():
                future.set_result(result)
        self.sent, self.busy = [], False
        self.send()

    async def close(self) -> None:
        if self.thread.is_alive():
            while (self.pending or self.busy) and self.thread.is_alive():
                await asyncio.sleep(0.01)
            self.batches.put(None)
            await asyncio.to_thread(self.thread.join)
        self.conn.close()


def name_os_thread(name: str) -> None:
    """Name the calling thread for the operating system (`top -H`, /proc/<pid>/task/<tid>/comm), so the
    writer's CPU can be told from the event loop's (bench/run.py reads it); Linux only, else nothing."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None).prctl(15, name.encode()[:15], 0, 0, 0)  # PR_SET_NAME


def connect_db(path: str) -> sqlite3.Connection:
    """Open a connection in WAL mode; NORMAL sync keeps every commit across a process kill. The file
    is checked by SQLite itself: opening it from Python to read its header would drop the POSIX locks
    of every other connection this process has on it (SQLite's own warning), and a reader of another
    process could then read an old snapshot."""
    keep_private(path)
    conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False, timeout=30, factory=WriteConnection)
    conn.row_factory = sqlite3.Row
    try:
        conn.execute("PRAGMA journal_mode=WAL")
    except sqlite3.DatabaseError:  # `--db /etc/passwd`: SQLite read the header and wrote nothing
        conn.close()
        raise ValueError(f"{path} is not an SQLite database") from None
    tighten(path)
    conn.execute("PRAGMA synchronous=NORMAL")
    conn.execute("PRAGMA foreign_keys=ON")
    return conn


def keep_private(db: str) -> None:
    """Create the database file owner-only (0600) before SQLite opens it: it holds webhook secrets and
    channel credentials, and SQLite gives a new -wal and -shm the database file's mode."""
    with contextlib.suppress(FileExistsError, FileNotFoundError):  # no directory: SQLite says so
        os.close(os.open(db, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))


def tighten(db: str) -> None:
    """Make a database SQLite has taken as one owner-only, with its -wal and -shm, when a looser umask
    or an older run made them readable (logged, so once)."""
    for path in (db, f"{db}-wal", f"{db}-shm"):
        with contextlib.suppress(FileNotFoundError):
            mode = os.stat(path).st_mode & 0o777
            if mode & 0o077:
                os.chmod(path, mode & 0o700)
                log.warning("%s was readable by other local users (mode %o): made it owner-only", path, mode)


class WriteConnection(sqlite3.Connection):
    """A connection of connect_db, with the caches its own writer jobs keep (WriterCaches) and the
    rows they leave to the end of the batch (defer)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.caches = WriterCaches()
        self.deferred: list[tuple[Callable[[sqlite3.Connection, list[Any]], None], Any]] = []


def apply_batch(conn: sqlite3.Connection, jobs: list[Job]) -> list[Any]:
    """Run jobs in one transaction, each in its own savepoint, so one failing job (returned as
    its exception) cannot undo the others; then the rows they deferred (before a job not marked
    `deferring`, which may read them); one commit makes the whole batch durable. A rollback of a job
    takes its deferred rows with it, and (as one of the batch) empties the writer's caches, which
    held what it had written."""
    results: list[Any] = []
    caches = writer_caches(conn)
    deferred = conn.deferred if isinstance(conn, WriteConnection) else []
    conn.execute("BEGIN IMMEDIATE")
    try:
        caches.check(conn)
        for job in jobs:
            if deferred and not getattr(job, "deferring", False):
                write_deferred(conn, deferred)
            conn.execute("SAVEPOINT job")
            mark = len(deferred)
            try:
                results.append(job(conn))
                conn.execute("RELEASE job")
            except Exception as exc:  # a bad job must not sink its batch
                conn.execute("ROLLBACK TO job")
                conn.execute("RELEASE job")
                del deferred[mark:]
                caches.clear()
                write_deferred(conn, deferred)  # what the caches knew of them is in the database now
                if not isinstance(exc, ValueError):  # a ValueError is a refusal that its caller shows
                    log.exception("write job failed")
                results.append(exc)
        write_deferred(conn, deferred)
        conn.execute("COMMIT")
    except BaseException:
        deferred.clear()
        caches.clear()
        conn.execute("ROLLBACK")
        raise
    return results


def write_deferred(conn: sqlite3.Connection, deferred: list[tuple[Callable[[sqlite3.Connection, list[Any]], None], Any]]) -> None:
    """The deferred rows so far, those of each writer in one call; a failure fails the batch (the
    rows are the acknowledged jobs' writes)."""
    kinds: dict[Callable[[sqlite3.Connection, list[Any]], None], list[Any]] = {}
    for write, row in deferred:
        kinds.setdefault(write, []).append(row)
    deferred.clear()
    for write, rows in kinds.items():
        write(conn, rows)


def deferring(job: Job) -> Job:
    """Mark a job that reads nothing other jobs defer (ingest's envelopes): the deferred rows before
    it wait for the end of the batch, to be written with its own."""
    setattr(job, "deferring", True)
    return job


def defer(conn: sqlite3.Connection, write: Callable[[sqlite3.Connection, list[Any]], None], row: Any) -> None:
    """Leave a row to `write` at the end of the batch, with the batch's other rows of that writer
    (one statement instead of one per job); on a connection not made by connect_db, written at once."""
    if isinstance(conn, WriteConnection):
        conn.deferred.append((write, row))
    else:
        write(conn, [row])


def writer_caches(conn: sqlite3.Connection) -> WriterCaches:
    """The connection's caches; a connection not made by connect_db gets empty ones each time."""
    return conn.caches if isinstance(conn, WriteConnection) else WriterCaches()


class WriterCaches:
    """What storing an event asked the database every time: the issue of an event's hashes, the
    search terms an issue has, the user and release values it has (counted, or deferred by this
    batch), a project's alert rules, and how many transactions and logs it holds. They hold what the
    open transaction says, and are emptied by whatever could make them wrong: a rollback
    (apply_batch), a commit by another connection (PRAGMA data_version, read at each batch: the CLI on
    the same file), and the jobs that move or delete hashes, terms, rules or aged rows (merge,
    unmerge, deleting issues, retention, rule edits).
    Bounded: past LIMIT, a cache starts over (terms unique to one event, like a user's email, fill it)."""

    LIMIT = 20_000  # entries of each; about 3 MB of terms

    def __init__(self) -> None:
        self.data_version = -1
        self.issues: dict[tuple[int, tuple[str, ...], tuple[str, ...]], int] = {}  # (project, hashes, secondary)
        self.terms: set[tuple[str, str, int]] = set()  # (key, value, issue) rows of issue_terms
        self.tags: set[tuple[int, str, str]] = set()  # (issue, key, value) of user and release tags, counted or deferred
        self.rules: dict[int, list[tuple[int, dict[str, Any]]]] = {}  # project → (rule id, rule)
        self.rows: dict[tuple[str, int], int] = {}  # (table, project) → its transactions or logs (keep_to_cap)

    def check(self, conn: sqlite3.Connection) -> None:
        """At the start of a batch: empty the caches if another connection committed since the last
        one, and each that grew past LIMIT (not during a batch: its deferred rows are known only here)."""
        version = conn.execute("PRAGMA data_version").fetchone()[0]
        if version != self.data_version:
            self.clear()
            self.data_version = version
        for cache in (self.issues, self.terms, self.tags):
            if len(cache) > self.LIMIT:
                cache.clear()

    def clear(self) -> None:
        self.issues.clear()
        self.terms.clear()
        self.tags.clear()
        self.rules.clear()
        self.rows.clear()


# -- projects, keys and tokens (plain functions over a write connection) -------

def ensure_config_projects(conn: sqlite3.Connection, projects: list[dict[str, Any]]) -> None:
    """Create the projects a TOML config declares (idempotent, keyed by slug)."""
    for spec in projects:
        name = str(spec.get("name") or spec.get("slug") or "project")
        slug = str(spec.get("slug") or slugify(name))
        row = conn.execute("SELECT id FROM projects WHERE slug = ?", (slug,)).fetchone()
        key = spec.get("dsn_key")
        if key is not None and not re.fullmatch(r"[0-9a-f]{32}", str(key)):
            raise SystemExit(f"project {slug}: dsn_key must be 32 lowercase hex characters")
        if row is None:
            create_project(conn, name, slug, str(spec.get("platform", "")), key)
        elif key and not conn.execute("SELECT 1 FROM project_keys WHERE public_key = ?", (key,)).fetchone():
            conn.execute("INSERT INTO project_keys (public_key, project_id, created) VALUES (?, ?, ?)",
                         (key, row["id"], time.time()))
        project_id = row["id"] if row else conn.execute("SELECT id FROM projects WHERE slug = ?", (slug,)).fetchone()[0]
        for option in PROJECT_OPTIONS:
            if option in spec:
                set_project_option(conn, project_id, option, spec[option])
        try:
            parse_forward(spec.get("forward"))
        except ForwardError as exc:
            raise SystemExit(f"project {slug}: {exc}") from None


def slugify(name: str) -> str:
    slug = re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")
    return slug[:50] or "project"


def create_project(conn: sqlite3.Connection, name: str, slug: str | None = None,
                   platform: str = "", public_key: str | None = None) -> tuple[int, str]:
    """Create a project with one DSN key; returns (project id, public key). A refused name, slug
    or platform is a ValueError that says why (the command line and the dashboard show it)."""
    slug = slug or slugify(name)
    check_project_fields(name, slug, platform)
    if conn.execute("SELECT 1 FROM projects WHERE slug = ?", (slug,)).fetchone():
        raise ValueError(f"a project with slug {slug!r} exists already (`tracker project dsn {slug}` prints its DSN)")
    now = time.time()
    cur = conn.execute("INSERT INTO projects (slug, name, platform, created) VALUES (?, ?, ?, ?)",
                       (slug, name, platform, now))
    key = public_key or secrets.token_hex(16)
    conn.execute("INSERT INTO project_keys (public_key, project_id, created) VALUES (?, ?, ?)",
                 (key, cur.lastrowid, now))
    insert_default_rules(conn, int(cur.lastrowid or 0))
    return int(cur.lastrowid or 0), key


def check_project_fields(name: str, slug: str, platform: str) -> None:
    if not name.strip() or len(name) > 200:
        raise ValueError("a project name is 1-200 characters")
    if not re.fullmatch(r"[a-z0-9][a-z0-9_-]{0,49}", slug) or slug == "new":  # /projects/new/ creates one
        raise ValueError(f"a slug is 1-50 lowercase letters, digits, - or _, and not 'new' (not {slug[:60]!r})")
    if not re.fullmatch(r"[a-z0-9._-]{0,64}", platform):
        raise ValueError(f"a platform is a Sentry platform name such as python or javascript (not {platform[:60]!r})")


def project_dsn(conn: sqlite3.Connection, ref: str) -> tuple[int, str]:
    """(project id, public key) of a project's oldest active DSN key, by slug or id."""
    row = conn.execute("SELECT p.id, k.public_key FROM projects p JOIN project_keys k ON k.project_id = p.id "
                       "WHERE (p.slug = ? OR CAST(p.id AS TEXT) = ?) AND k.active = 1 ORDER BY k.created LIMIT 1",
                       (ref, ref)).fetchone()
    if row is None:
        raise ValueError(f"no project {ref!r} with an active DSN key (`tracker project list` lists them)")
    return row["id"], row["public_key"]


def active_dsn_keys(conn: sqlite3.Connection) -> list[sqlite3.Row]:
    return conn.execute("SELECT k.public_key, p.id, p.slug FROM project_keys k JOIN projects p "
                        "ON p.id = k.project_id WHERE k.active = 1 ORDER BY p.slug, k.created").fetchall()


def remember_public_url(conn: sqlite3.Connection, url: str) -> None:
    """The URL the server of this database answers at, so the command line prints DSNs and links for it."""
    conn.execute("INSERT OR REPLACE INTO meta (key, value) VALUES ('public_url', ?)", (url,))


def remembered_public_url(path: str) -> str:
    """The URL the last server of the database at `path` announced ('' when none or no file)."""
    if not Path(path).is_file():
        return ""
    conn = read_only(path)
    try:
        row = conn.execute("SELECT value FROM meta WHERE key = 'public_url'").fetchone()
    except sqlite3.DatabaseError:  # not migrated yet, or not a database: the commands say so themselves
        return ""
    finally:
        conn.close()
    return row[0] if row else ""


# Per-project settings beyond the columns, as JSON values: `scrub` (the data scrubbing policy),
# `rate_limit` (events per minute), `retention` ({max_events, max_age_days}), `attachments` ({max_size, max_total}),
# `forward` ({dsn, mode, allow_private}: see Forwarding).
PROJECT_OPTIONS = ("scrub", "rate_limit", "retention", "attachments", "forward")


def set_project_option(conn: sqlite3.Connection, project_id: int, key: str, value: Any) -> None:
    conn.execute("INSERT OR REPLACE INTO project_options (project_id, key, value) VALUES (?, ?, ?)",
                 (project_id, key, json.dumps(value)))


async def find_project(store: Store, ref: str) -> sqlite3.Row | None:
    """A project by slug or numeric id."""
    return await store.one("SELECT * FROM projects WHERE slug = ? OR CAST(id AS TEXT) = ?", (ref, ref))


async def project_by_slug(store: Store, slug: str) -> sqlite3.Row | None:
    """A project by its slug only (the dashboard's URLs name projects so)."""
    return await store.one("SELECT * FROM projects WHERE slug = ?", (slug,))


def repository_id(conn: sqlite3.Connection, name: str) -> int:
    """The repository a commit names, created as a local one when it is new."""
    row = conn.execute("SELECT id FROM repositories WHERE name = ? COLLATE NOCASE", (name,)).fetchone()
    if row:
        return int(row["id"])
    return int(conn.execute("INSERT INTO repositories (name, url, provider, date_created) VALUES (?, NULL, ?, ?)",
                            (name, LOCAL_REPOSITORY, time.time())).lastrowid or 0)


# A repository known only because commits named it (sentry-cli's local-git path sends the remote's
# name, "origin") is "local": it is not listed to sentry-cli, which would otherwise refuse
# `--commit acme/web@sha` as an unknown repo and stop reading local git for `--auto`.
LOCAL_REPOSITORY = "local"


def ensure_config_repositories(conn: sqlite3.Connection, repositories: list[dict[str, Any]]) -> None:
    """Create the repositories a TOML config declares (idempotent, keyed by name)."""
    for spec in repositories:
        if not spec.get("name"):
            raise SystemExit("[[repositories]]: every repository needs a name")
        create_repository(conn, str(spec["name"]), spec.get("url"), spec.get("provider"))


def create_repository(conn: sqlite3.Connection, name: str, url: str | None, provider: str | None = None) -> int | None:
    """Register a repository (sentry-cli matches names in any case), taking over a local one of
    that name; returns its id, or None when it was registered already."""
    existing = conn.execute("SELECT id, provider FROM repositories WHERE name = ? COLLATE NOCASE", (name,)).fetchone()
    if existing and existing["provider"] != LOCAL_REPOSITORY:
        return None
    provider = (provider or repository_provider(url or "")).removeprefix("integrations:")
    if existing:
        conn.execute("UPDATE repositories SET url = ?, provider = ? WHERE id = ?", (url, provider, existing["id"]))
        return int(existing["id"])
    cur = conn.execute("INSERT INTO repositories (name, url, provider, date_created) VALUES (?, ?, ?, ?)",
                       (name, url, provider, time.time()))
    return int(cur.lastrowid or 0)


def repository_provider(url: str) -> str:
    """The provider a repository URL's host names ("custom" for any other host)."""
    host = urllib.parse.urlsplit(url).hostname or ""
    return next((p for p in REPOSITORY_PROVIDERS if p in host), "custom")


REPOSITORY_PROVIDERS = {"github": "GitHub", "gitlab": "GitLab", "bitbucket": "Bitbucket"}


def token_scopes(requested: list[str] | str) -> str:
    """A token request's scope names as stored: checked, deduplicated, otherwise as given."""
    names = requested.split() if isinstance(requested, str) else [str(name) for name in requested]
    if len(names) > MAX_TOKEN_SCOPES:
        raise ValueError(f"a token takes at most {MAX_TOKEN_SCOPES} scope names")
    for name in names:
        if name not in TRACKER_SCOPES and name not in SENTRY_SCOPES:
            raise ValueError(f"unknown scope {name[:40]!r}; use read, write, admin or Sentry's scope names")
    if not names:
        raise ValueError("a token needs at least one scope: read, write, admin or Sentry's scope names")
    return " ".join(dict.fromkeys(names))


MAX_TOKEN_SCOPES = 64  # there are 26 names; more is a mistake or an attempt to make us loop

# The tracker's own scopes mirror the dashboard's roles, as bundles of Sentry's: read reads, write
# triages as a member does (and ships releases, which sentry-cli needs), admin does everything.
READING_SCOPES = ("org:read", "project:read", "team:read", "member:read", "event:read", "alerts:read")

# Token scopes. A token keeps the scope names it was made with; what they let it do is this data.
# Sentry's names and their reach follow Sentry's "Permissions & Scopes" page (docs.sentry.io/api/
# permissions): GET needs area:read, PUT/POST area:write, DELETE area:admin for the org, project, team,
# member and event areas (a higher level of an area includes the lower ones, as Sentry's permission
# classes accept project:write for a GET); `project:releases` reaches the release endpoints and nothing
# else (org tokens' `org:ci` likewise); PUT on issues is event:write, DELETE event:admin; alert rules
# take alerts:write (or project:write); integrations (our channels, repositories, code mappings)
# org:integrations or org:write. The names Sentry's token form offers are all accepted.
SENTRY_SCOPES = ("org:read", "org:write", "org:admin", "org:integrations", "org:ci", "org:billing",
                 "project:read", "project:write", "project:admin", "project:releases", "project:distribution",
                 "team:read", "team:write", "team:admin", "member:read", "member:write", "member:admin",
                 "member:invite", "event:read", "event:write", "event:admin", "alerts:read", "alerts:write")

TRACKER_SCOPES: dict[str, tuple[str, ...]] = {
    "read": READING_SCOPES, "write": READING_SCOPES + ("event:write", "project:releases"), "admin": SENTRY_SCOPES}


def token_can(stored: str, capability: str) -> bool:
    """Whether a token with these stored scope names may use a route needing `capability`."""
    return not (set(stored.split()) | sentry_scopes(stored)).isdisjoint(TOKEN_REACH[capability])


def sentry_scopes(stored: str) -> set[str]:
    """Sentry's scope names a token holds (the tracker's own names are bundles of them)."""
    return {scope for name in stored.split() for scope in TRACKER_SCOPES.get(name, (name,))}


# What each route needs (its capability) → the scopes that grant it. Every /api/0/ route names one.
TOKEN_REACH: dict[str, tuple[str, ...]] = {
    # organization, projects, DSN keys, repositories, code mappings, monitors, stats
    "read": ("org:read", "org:write", "org:admin", "project:read", "project:write", "project:admin",
             "team:read", "team:write", "team:admin", "member:read", "member:write", "member:admin"),
    "events:read": ("event:read", "event:write", "event:admin"),  # issues, events, attachments, feedback
    "releases:read": ("project:releases", "org:ci", "project:read", "project:write", "project:admin"),
    "alerts:read": ("alerts:read", "alerts:write", "org:read", "org:write", "org:admin",
                    "project:read", "project:write", "project:admin"),  # rules, SLOs, channels, deliveries
    "issues:triage": ("event:write", "event:admin"),  # status, assignee, merge, unmerge, bookmark, seen
    "issues:delete": ("event:admin",),
    "feedback": ("event:write", "event:admin", "project:write", "project:admin"),
    "releases": ("project:releases", "org:ci", "project:write", "project:admin"),  # commits, deploys too
    "project:settings": ("project:write", "project:admin"),  # scrubbing, grouping rules, name
    "keys": ("project:write", "project:admin"),
    "keys:delete": ("project:admin",),
    "alerts": ("alerts:write", "project:write", "project:admin"),  # alert rules, SLOs, delivery retries
    "integrations": ("org:integrations", "org:write", "org:admin"),  # channels, repositories, code mappings
    "tokens": ("admin",),  # Sentry manages tokens only from a signed-in session; here the tracker's admin
}


def create_token(conn: sqlite3.Connection, name: str = "", scopes: str = "read write admin",
                 user_id: int | None = None) -> str:
    token = secrets.token_hex(32)
    conn.execute("INSERT INTO api_tokens (token_hash, name, scopes, user_id, created) VALUES (?, ?, ?, ?, ?)",
                 (hash_token(token), name, scopes, user_id, time.time()))
    return token


def hash_token(token: str) -> str:
    """API tokens are 256-bit random values, so a plain SHA-256 is a safe stored form."""
    return hashlib.sha256(token.encode()).hexdigest()


def add_key(conn: sqlite3.Connection, project_id: int, label: str = "Default") -> str:
    """A new DSN key beside the old ones: rotating is adding one, moving clients, then disabling the old."""
    key = secrets.token_hex(16)
    conn.execute("INSERT INTO project_keys (public_key, project_id, label, created) VALUES (?, ?, ?, ?)",
                 (key, project_id, label[:64] or "Default", time.time()))
    return key


async def database_created(store: Store) -> float:
    """When this database was made: the organization's creation date."""
    row = await store.one("SELECT value FROM meta WHERE key = 'created'")
    return float(row["value"]) if row else time.time()


async def all_projects(store: Store) -> list[sqlite3.Row]:
    """Every project, by name (the pages' project pickers)."""
    return await store.all("SELECT * FROM projects ORDER BY name")


async def projects_with_counts(store: Store) -> list[sqlite3.Row]:
    """Every project, by name, with how many issues and events it holds."""
    return await store.all(
        """SELECT p.*, (SELECT count(*) FROM issues WHERE project_id = p.id) AS issue_count,
                  (SELECT coalesce(sum(times_seen), 0) FROM issues WHERE project_id = p.id) AS event_count
           FROM projects p ORDER BY p.name""")


async def all_project_keys(store: Store) -> list[sqlite3.Row]:
    """Every project's DSN keys, the active ones first, then oldest first."""
    return await store.all("SELECT * FROM project_keys ORDER BY active DESC, created")


async def project_keys(store: Store, project_id: int) -> list[sqlite3.Row]:
    """A project's DSN keys, oldest first."""
    return await store.all("SELECT * FROM project_keys WHERE project_id = ? ORDER BY created", (project_id,))


async def project_key(store: Store, project_id: int, public_key: str) -> sqlite3.Row | None:
    """One of a project's DSN keys by its public key."""
    return await store.one("SELECT * FROM project_keys WHERE project_id = ? AND public_key = ?",
                           (project_id, public_key))


def update_key(conn: sqlite3.Connection, project_id: int, key: str, active: bool | None, label: str | None) -> None:
    """Enable, disable or rename one of a project's keys (None keeps what it has)."""
    conn.execute("UPDATE project_keys SET active = coalesce(?, active), label = coalesce(?, label) "
                 "WHERE public_key = ? AND project_id = ?", (None if active is None else int(active), label, key,
                                                             project_id))


def delete_key(conn: sqlite3.Connection, public_key: str) -> None:
    """Forget a DSN key: its clients' events are refused from then on."""
    conn.execute("DELETE FROM project_keys WHERE public_key = ?", (public_key,))


async def token_by_secret(store: Store, token: str) -> sqlite3.Row | None:
    """The API token whose secret this is (stored as its hash), if any."""
    return await store.one("SELECT * FROM api_tokens WHERE token_hash = ?", (hash_token(token),))


async def all_tokens(store: Store) -> list[sqlite3.Row]:
    """Every API token, oldest first."""
    return await store.all("SELECT * FROM api_tokens ORDER BY id")


def revoke_token(conn: sqlite3.Connection, token_id: str) -> int:
    """Delete an API token by the id a URL or form gives; how many went (0 or 1)."""
    return conn.execute("DELETE FROM api_tokens WHERE CAST(id AS TEXT) = ?", (token_id,)).rowcount

# -- people: users, passwords, browser sessions --------------------------------------------------

SESSION_COOKIE = "tracker_session"


def password_matches(password: str, stored: str | None) -> bool:
    """Constant-time check against `hash_password`'s string (no stored hash never matches)."""
    try:
        kind, n, r, p, salt, digest = (stored or NO_PASSWORD).split("$")
        if kind != "scrypt":
            return False
        again = hashlib.scrypt(password.encode(), salt=bytes.fromhex(salt), n=int(n), r=int(r), p=int(p),
                               dklen=len(digest) // 2)
    except ValueError:
        return False
    return hmac.compare_digest(again.hex(), digest) and bool(stored)  # NO_PASSWORD never lets anyone in


# Checked when there is no stored hash (an unknown name, a link-only person) so that a wrong sign-in
# costs the same scrypt work either way: unknown names were answered in 1.8 ms, real ones in 52-65 ms
NO_PASSWORD = f"scrypt$16384$8$1${'00' * 16}${'00' * 32}"


def set_password(conn: sqlite3.Connection, name: str, password: str) -> None:
    """A new password ends every browser session of that user and cancels their login links."""
    check_user_fields(name, "member", password)
    user = user_named(conn, name)
    conn.execute("UPDATE users SET password = ? WHERE id = ?", (hash_password(password), user["id"]))
    end_access(conn, user["id"])


def check_user_fields(name: str, role: str, password: str | None) -> None:
    if not re.fullmatch(r"[\w.@+-]{1,80}", name):
        raise ValueError("a user name is 1-80 letters, digits or . @ + - _")
    if role not in ROLES:
        raise ValueError(f"role must be one of {', '.join(ROLES)}")
    if password is not None and len(password) < 10:
        raise ValueError("a password needs at least 10 characters")


ROLES = ("admin", "member")  # members triage issues; admins also change settings, keys, people


def user_named(conn: sqlite3.Connection, name: str) -> sqlite3.Row:
    user = conn.execute("SELECT * FROM users WHERE name = ?", (name,)).fetchone()
    if user is None:
        raise ValueError(f"no user {name!r}")
    return user


def hash_password(password: str) -> str:
    """scrypt (memory-hard: 16 MiB per guess) with a random salt, in one self-describing string."""
    salt = secrets.token_bytes(16)
    digest = hashlib.scrypt(password.encode(), salt=salt, n=2 ** 14, r=8, p=1, dklen=32)
    return f"scrypt$16384$8$1${salt.hex()}${digest.hex()}"


def end_access(conn: sqlite3.Connection, user_id: int, tokens: bool = False) -> None:
    """Sign a person out everywhere: browser sessions, unused login links and, with `tokens`, the API
    tokens they made (as Sentry's user auth tokens go with their user)."""
    conn.execute("DELETE FROM web_sessions WHERE user_id = ?", (user_id,))
    conn.execute("DELETE FROM login_links WHERE user_id = ?", (user_id,))
    if tokens:
        conn.execute("DELETE FROM api_tokens WHERE user_id = ?", (user_id,))


def set_disabled(conn: sqlite3.Connection, name: str, disabled: bool) -> None:
    """Disable a person (signed out at once, tokens revoked, no new sign-in) or enable them again."""
    user = user_named(conn, name)
    if disabled:
        keep_an_admin(conn, user, "disable")
        end_access(conn, user["id"], tokens=True)
    conn.execute("UPDATE users SET disabled = ? WHERE id = ?", (int(disabled), user["id"]))


def keep_an_admin(conn: sqlite3.Connection, user: sqlite3.Row, doing: str) -> None:
    """Refuse to leave no enabled admin (no one could then change settings or people)."""
    if user["role"] == "admin" and not user["disabled"] and conn.execute(
            "SELECT count(*) FROM users WHERE role = 'admin' AND NOT disabled").fetchone()[0] <= 1:
        raise ValueError(f"cannot {doing} {user['name']}, the last admin: make another admin first")


def delete_user(conn: sqlite3.Connection, name: str) -> None:
    """Remove a person, their sessions, login links and tokens."""
    user = user_named(conn, name)
    keep_an_admin(conn, user, "delete")
    end_access(conn, user["id"], tokens=True)
    conn.execute("DELETE FROM users WHERE id = ?", (user["id"],))


def create_login_link(conn: sqlite3.Connection, name: str, ttl: float = 3600) -> str:
    """A one-time code that logs its holder in once (the demo's printed URL, `tracker user link`)."""
    user = user_named(conn, name)
    if user["disabled"]:
        raise ValueError(f"{name} is disabled: enable them first")
    code = secrets.token_urlsafe(24)
    conn.execute("INSERT INTO login_links (code_hash, user_id, expires) VALUES (?, ?, ?)",
                 (hash_token(code), user["id"], time.time() + ttl))
    return code


def redeem_login_link(conn: sqlite3.Connection, code: str) -> str | None:
    """A session token for a valid code, which is used up; None for anything else."""
    row = conn.execute("DELETE FROM login_links WHERE code_hash = ? RETURNING user_id, expires",
                       (hash_token(code),)).fetchone()
    return create_web_session(conn, row["user_id"]) if row and row["expires"] > time.time() else None


def create_web_session(conn: sqlite3.Connection, user_id: int) -> str:
    """A browser session: the cookie holds a random token, the database its hash and a CSRF token."""
    token, now = secrets.token_urlsafe(32), time.time()
    conn.execute("DELETE FROM web_sessions WHERE expires < ?", (now,))
    conn.execute("INSERT INTO web_sessions (token_hash, user_id, csrf, created, expires) VALUES (?, ?, ?, ?, ?)",
                 (hash_token(token), user_id, secrets.token_urlsafe(24), now, now + SESSION_TTL))
    return token


SESSION_TTL = 14 * 86400


def first_admin(conn: sqlite3.Connection) -> tuple[str, str] | None:
    """On the first start: an `admin` user with a random password, shown once; None when people exist."""
    if conn.execute("SELECT 1 FROM users LIMIT 1").fetchone():
        return None
    password = secrets.token_urlsafe(12)
    create_user(conn, "admin", "admin", password)
    return "admin", password


def create_user(conn: sqlite3.Connection, name: str, role: str = "member", password: str | None = None) -> int:
    """A user; without a password they can only come in through a login link or the proxy header."""
    check_user_fields(name, role, password)
    if conn.execute("SELECT 1 FROM users WHERE name = ?", (name,)).fetchone():
        raise ValueError(f"user {name!r} exists already")
    return int(conn.execute("INSERT INTO users (name, password, role, created) VALUES (?, ?, ?, ?)",
                            (name, hash_password(password) if password else None, role, time.time())).lastrowid or 0)


def dsn_for(settings: Settings, public_key: str, project_id: int) -> str:
    parts = urllib.parse.urlsplit(settings.public_url)
    return f"{parts.scheme}://{public_key}@{parts.netloc}{parts.path}/{project_id}"


async def signed_in_user(store: Store, cookie: str) -> sqlite3.Row | None:
    """The enabled user (id, name, role, csrf) whose unexpired browser session this cookie holds."""
    return await store.one("SELECT u.id, u.name, u.role, s.csrf FROM web_sessions s JOIN users u ON u.id = s.user_id "
                           "WHERE s.token_hash = ? AND s.expires > ? AND NOT u.disabled",  # a sign-in racing a disable
                           (hash_token(cookie), time.time()))


async def user_by_name(store: Store, name: str) -> sqlite3.Row | None:
    """A user's id, name, role and whether they are disabled."""
    return await store.one("SELECT id, name, role, disabled FROM users WHERE name = ?", (name,))


async def enabled_user_password(store: Store, name: str) -> sqlite3.Row | None:
    """The id and password hash of an enabled user, to check a sign-in against."""
    return await store.one("SELECT id, password FROM users WHERE name = ? AND NOT disabled", (name,))


async def user_password(store: Store, user_id: int | None) -> str | None:
    """A user's password hash (None without one, or without that user)."""
    row = await store.one("SELECT password FROM users WHERE id = ?", (user_id,))
    return row["password"] if row else None


async def user_by_id(store: Store, user_id: int) -> sqlite3.Row | None:
    """An enabled user by id (a token's owner)."""
    return await store.one("SELECT * FROM users WHERE id = ? AND NOT disabled", (user_id,))


async def all_users(store: Store) -> list[sqlite3.Row]:
    """Every user, by name."""
    return await store.all("SELECT * FROM users ORDER BY name")


def end_web_session(conn: sqlite3.Connection, cookie: str) -> None:
    """Sign out the browser session this cookie holds."""
    conn.execute("DELETE FROM web_sessions WHERE token_hash = ?", (hash_token(cookie),))


# =============================================================================
# Ingest: authentication, body decoding, envelopes
# =============================================================================

MAX_AGGREGATES = 100


async def ingest(request: Request) -> Response:
    """POST /api/<id>/envelope/ and /api/<id>/store/: authenticate, decode, store events."""
    return await answer_ingest(request, ingest_with_key)


async def answer_ingest(request: Request, handle: Callable[[Request], Awaitable[Response]]) -> Response:
    """An ingest route's answer: CORS on everything, an IngestError as Relay's JSON error."""
    if request.method == "OPTIONS":
        response = Response(status_code=200)
    else:
        try:
            if request.app.limits.disk_is_full(request.app.settings.db):
                raise IngestError(429, "event submission rejected: the tracker's disk is nearly full",
                                  {"Retry-After": "60", "X-Sentry-Rate-Limits": "60::organization:disk_full"})
            response = await handle(request)
        except IngestError as exc:
            response = json_answer({"detail": exc.detail}, exc.status, exc.headers)
        if request.scope.get("tracker.inflated", 0) > 64 * KIB and MALLOC_TRIM:
            MALLOC_TRIM(0)
    response.raw_headers += CORS_PREFLIGHT if request.method == "OPTIONS" else CORS_ANSWER  # no handler sets
    return response  # these: appended, not merged header by header


def json_answer(body: dict[str, Any], status: int = 200, headers: Mapping[str, str] | None = None) -> Response:
    """An ingest answer's JSON (orjson: a third of JSONResponse's cost, on every envelope)."""
    return Response(json_dumps(body), status, headers, "application/json")


# CORS as the Fetch standard asks: a browser SDK's preflight (OPTIONS) learns what it may send; the
# answer to its POST only which origins may read it and which of its headers a script may see (the
# SDK reads the rate limits). Each header is a regex check in uvicorn on every answer.
CORS_ANSWER = [(b"access-control-allow-origin", b"*"),
               (b"access-control-expose-headers", b"x-sentry-error, x-sentry-rate-limits, retry-after")]

CORS_PREFLIGHT = [*CORS_ANSWER, (b"access-control-allow-methods", b"POST, OPTIONS"),
                  (b"access-control-allow-headers", b"x-sentry-auth, x-requested-with, x-forwarded-for, origin, "
                   b"referer, accept, content-type, authentication, authorization, content-encoding, transfer-encoding"),
                  (b"access-control-max-age", b"3600")]


class IngestError(Exception):
    """A client error on an ingest route, answered as Relay does: status + {"detail": …}."""

    def __init__(self, status: int, detail: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(detail)
        self.status, self.detail, self.headers = status, detail, headers or {}


# glibc keeps freed memory for reuse, so a large envelope left the server's RSS at its high-water mark
# for good (1,000 item headers of 4 KiB: +15 MB); malloc_trim hands the pages back (+1 MB; ~0.1 ms).
try:
    MALLOC_TRIM: Callable[[int], int] | None = ctypes.CDLL(None).malloc_trim
except (OSError, AttributeError):  # not glibc
    MALLOC_TRIM = None


async def ingest_with_key(request: Request) -> Response:
    project_id = parse_project_id(request.path_params["project_id"])
    key = key_from_request(request)  # garbled auth is refused before a large body is read
    header, items, data = await read_envelope(request)
    await authenticate(request, project_id, key, header)
    return await accept_envelope(request, project_id, header, items, data)


def parse_project_id(raw: str) -> int:
    if not (raw.isascii() and raw.isdigit()) or len(raw) > 18:  # "²" and "١" are isdigit() too
        raise IngestError(400, "bad project path parameter")
    return int(raw)


def key_from_request(request: Request) -> str | None:
    """The public key from the auth header or query string; None when neither carries one."""
    sentry_auth = authorization = None
    for name, value in request.scope["headers"]:  # both in one pass over the headers
        if name == b"x-sentry-auth" and sentry_auth is None:
            sentry_auth = value.decode("latin-1")
        elif name == b"authorization" and authorization is None:
            authorization = value.decode("latin-1")
    query = request.scope["query_string"]
    if authorization is None and b"sentry_key" not in query:  # as SDKs send it: the one header
        if sentry_auth is None:
            return None
        return (remembered_auth_key if len(sentry_auth) <= MAX_REMEMBERED_AUTH else sentry_auth_key)(sentry_auth)
    found = [] if sentry_auth is None else [sentry_auth_pairs(sentry_auth)]
    if (authorization or "")[:7].lower() == "sentry ":
        found.append(parse_auth_pairs(authorization[7:]))  # type: ignore[index]
    if b"sentry_key" in query:  # cheaper than parsing every query string
        found.append(dict(request.query_params))
    return key_of(found)


def sentry_auth_key(header: str) -> str | None:
    """The key of an X-Sentry-Auth header alone."""
    return key_of([sentry_auth_pairs(header)])


# An SDK sends the same X-Sentry-Auth with every envelope: its key is remembered (parsing it was a
# twentieth of the event loop's own ingest code), for headers of an SDK's size (about 120 characters).
remembered_auth_key = functools.lru_cache(maxsize=256)(sentry_auth_key)

MAX_REMEMBERED_AUTH = 512


def sentry_auth_pairs(header: str) -> dict[str, str]:
    if not header[:7].lower() == "sentry ":
        raise IngestError(401, "bad x-sentry-auth header")
    return parse_auth_pairs(header[7:])


def key_of(found: list[dict[str, str]]) -> str | None:
    """The one key the auth payloads name (each must name it, and the same), their protocol version checked."""
    keys = {pairs.get("sentry_key") for pairs in found}
    if None in keys:
        raise IngestError(401, "bad x-sentry-auth header: missing sentry_key")
    if len(keys) > 1:
        raise IngestError(401, "multiple authorization payloads detected")
    for pairs in found:
        version = pairs.get("sentry_version", "7")
        if not (version.isascii() and version.isdigit()) or int(version) > 7:  # isdigit alone admits "²"
            raise IngestError(400, f"unsupported protocol version ({version})")
    return keys.pop() if keys else None


def header_of(request: Request, name: bytes) -> str | None:
    """A request header's first value (`name` in lower case, as the server gives names), or None, read
    from the scope's list: Starlette's Headers raises and catches a KeyError for each one missing, and
    ingest asks for several on every envelope."""
    for key, value in request.scope["headers"]:
        if key == name:
            return value.decode("latin-1")
    return None


def parse_auth_pairs(value: str) -> dict[str, str]:
    """`Sentry sentry_key=…, sentry_version=7` → {"sentry_key": …}; whitespace-tolerant."""
    pairs = {}
    for part in value.split(","):
        key, sep, val = part.partition("=")
        if sep:
            pairs[key.strip()] = val.strip()
    return pairs


async def read_envelope(request: Request) -> tuple[dict[str, Any], list[tuple[dict[str, Any], bytes]], bytes]:
    """The body decompressed and split into items; a /store/ body is one bare event, logged as the
    envelope it stands for."""
    settings = request.app.settings
    body = await read_body(request, settings.max_body)
    encoding = header_of(request, b"content-encoding") or ""
    if len(body) > 64 * KIB:  # a large (or bomb) body decompresses off the event loop
        data = await asyncio.to_thread(decompress, body, encoding, settings.max_envelope)
    else:
        data = decompress(body, encoding, settings.max_envelope)
    request.scope["tracker.inflated"] = len(data)  # answer_ingest gives the memory back after a large one
    if request.scope["path"].rstrip("/").endswith("/store"):
        wrapped = b"{}\n" + json.dumps({"type": "event", "length": len(data)}).encode() + b"\n" + data
        return {}, [({"type": "event"}, data)], wrapped
    return *parse_envelope(data), data


async def read_body(request: Request, limit: int) -> bytes:
    """Read the (possibly chunked) body, refusing with 413 as soon as it passes the limit."""
    declared = header_of(request, b"content-length") or ""
    if declared.isascii() and declared.isdigit() and int(declared) > limit:
        raise IngestError(413, f"request body larger than {limit} bytes")
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise IngestError(413, f"request body larger than {limit} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


def decompress(body: bytes, encoding: str, limit: int) -> bytes:
    """Undo Content-Encoding with a hard cap on the output, so a zip bomb costs nothing."""
    encoding = encoding.strip().lower()
    too_big = IngestError(413, f"decompressed body larger than {limit} bytes")
    try:
        if encoding in ("", "identity"):
            out = body
        elif encoding in ("gzip", "x-gzip"):
            out = inflate(body, 16 + zlib.MAX_WBITS, limit)
        elif encoding == "deflate":
            try:
                out = inflate(body, zlib.MAX_WBITS, limit)
            except zlib_ng.error:
                out = inflate(body, -zlib.MAX_WBITS, limit)
        elif encoding == "br":
            out = unbrotli(body, limit)
        elif encoding == "zstd":
            with zstandard.ZstdDecompressor().stream_reader(body) as reader:
                out = reader.read(limit + 1)
        else:
            raise IngestError(415, f"unsupported content encoding {encoding!r}")
    except (zlib_ng.error, brotli.error, zstandard.ZstdError, EOFError) as exc:
        raise IngestError(400, f"invalid {encoding} body: {exc}") from None
    if len(out) > limit:
        raise too_big
    return out


def inflate(body: bytes, wbits: int, limit: int) -> bytes:
    d = zlib_ng.decompressobj(wbits)  # zlib-ng: twice zlib's speed, on nearly every envelope (gzip)
    out = d.decompress(body, limit + 1)
    if not d.eof and len(out) <= limit:
        raise zlib_ng.error("truncated stream")
    return out


def unbrotli(body: bytes, limit: int) -> bytes:
    d = brotli.Decompressor()
    out = bytearray(d.process(body, output_buffer_limit=limit + 1))
    while len(out) <= limit and not d.is_finished() and not d.can_accept_more_data():
        out += d.process(b"", output_buffer_limit=limit + 1 - len(out))
    if len(out) <= limit and not d.is_finished():
        raise brotli.error("truncated stream")
    return bytes(out)


# Bounds on one envelope's items, checked while it is split, so a small body that inflates to many
# items costs no more than they allow (100,000 tiny items in a 3 KB gzip body once took the server
# from 90 MB to 950 MB of RSS, never given back). Relay's: at most 100 session items (session and
# sessions together; more is a 413), 100 buckets in a sessions item, a check-in 100 KiB, a client
# report 4 KiB, one event (another is dropped as a duplicate). The tracker's own: 1,000 items, 100
# attachments (each is an insert for the single writer), 4 KiB a header line (SDKs write ~200 bytes).
MAX_ENVELOPE_ITEMS = 1000


def parse_envelope(data: bytes, max_items: int = MAX_ENVELOPE_ITEMS
                   ) -> tuple[dict[str, Any], list[tuple[dict[str, Any], bytes]]]:
    """Split an envelope into its header and (item header, payload) pairs.

    Items with `length` take exactly that many bytes; items without run to the next
    newline or the end (JS writes no final newline). Blank lines between items are skipped.
    Past max_items items or MAX_SESSION_ITEMS sessions it stops with a 413 (a file the CLI sends
    is the operator's own, and may hold any number of events).
    """
    if not data.strip():
        raise IngestError(400, "empty request body")
    end = data.find(b"\n")
    end = len(data) if end < 0 else end
    header = header_line(data, 0, end, "envelope header")
    items: list[tuple[dict[str, Any], bytes]] = []
    pos, sessions = end + 1, 0
    while pos < len(data):
        end = data.find(b"\n", pos)
        end = len(data) if end < 0 else end
        start, pos = pos, end + 1
        if end - start <= MAX_HEADER_LINE and not data[start:end].strip():
            continue
        if len(items) == max_items:
            raise IngestError(413, f"envelope exceeded size limits: more than {max_items} items")
        item_header = header_line(data, start, end, "item header")
        if item_header.get("type") in ("session", "sessions"):
            sessions += 1
            if sessions > MAX_SESSION_ITEMS:
                raise IngestError(413, "envelope exceeded size limits for type 'session'")
        length = item_header.get("length")
        if length is None:
            end = data.find(b"\n", pos)
            end = len(data) if end < 0 else end
            payload, pos = data[pos:end], end + 1
        else:
            if not isinstance(length, int) or isinstance(length, bool) or length < 0 or pos + length > len(data):
                raise IngestError(400, "invalid event envelope: bad item length")
            payload, pos = data[pos:pos + length], pos + length
            if pos < len(data):
                if data[pos:pos + 1] != b"\n":
                    raise IngestError(400, "invalid event envelope: item longer than its length")
                pos += 1
        items.append((item_header, payload))
    return header, items


def header_line(data: bytes, start: int, end: int, what: str) -> dict[str, Any]:
    if end - start > MAX_HEADER_LINE:
        raise IngestError(413, f"envelope exceeded size limits: {what} longer than {MAX_HEADER_LINE} bytes")
    return json_object(data[start:end], what)


MAX_HEADER_LINE = 4 * KIB


def json_object(raw: bytes, what: str) -> dict[str, Any]:
    try:
        value = json_loads(raw)
        # "\ud800" loads but cannot be encoded for SQLite or zlib (finds first: most payloads have none)
        if (b"\\u" in raw or b"\x00" in raw or b"\xed" in raw) and LONE_SURROGATE.search(raw):
            value = json.loads(json.dumps(value, ensure_ascii=False).encode("utf-8", "replace"))
    except (ValueError, UnicodeDecodeError, RecursionError):  # RecursionError: "[[[[…" nested too deep
        raise IngestError(400, f"invalid JSON in {what}") from None
    if not isinstance(value, dict):
        raise IngestError(400, f"{what} is not a JSON object")
    # fewer brackets than the limit cannot nest deeper than it: most payloads skip the check
    if raw.count(b"{") + raw.count(b"[") > MAX_JSON_DEPTH and nested_too_deep(raw, MAX_JSON_DEPTH):
        raise IngestError(400, f"invalid JSON in {what}: nested deeper than {MAX_JSON_DEPTH}")
    return value


LONE_SURROGATE = re.compile(rb"\\u[dD][89a-fA-F]|\x00|\xed[\xa0-\xbf]")  # NUL: a UTF-16/32 body may hide

# surrogates; ED A0–BF: a surrogate written as UTF-8 bytes (CESU-8), which json.loads lets through
MAX_JSON_DEPTH = 128  # serde_json's limit, so Relay refuses deeper payloads too


def nested_too_deep(raw: bytes, limit: int) -> bool:
    """Whether valid JSON nests deeper than `limit` (processing and rendering recurse, and a payload
    nested close to the parser's own limit would overflow their stacks: a 500). Strings out, only
    the brackets left, then each pass drops the innermost pairs, one level, all at C speed. Strings
    go by splitting at quotes once escaped backslashes and escaped quotes are out (it parsed as JSON).
    A first count of passes that drop one or two levels each (two replaces, faster than the regex)
    settles most payloads: after p of them nothing is left, so the depth is between p and 2p."""
    if b"\\" in raw:  # a find at memchr's speed; each replace scans at a tenth of it
        raw = raw.replace(b"\\\\", b"").replace(b'\\"', b"")
    brackets = b"".join(raw.translate(None, NOT_A_BRACKET_OR_QUOTE).split(b'"')[::2])
    rough = brackets
    for passes in range(1, limit + 1):
        rough = rough.replace(b"{}", b"").replace(b"[]", b"")
        if not rough:
            if 2 * passes <= limit:
                return False
            break
    else:
        return True
    for _ in range(limit):
        if not brackets:
            return False
        brackets = INNERMOST_PAIR.sub(b"", brackets)
    return bool(brackets)


NOT_A_BRACKET_OR_QUOTE = bytes(sorted(set(range(256)) - set(b'[]{}"')))

INNERMOST_PAIR = re.compile(rb"\[\]|\{\}")

MAX_SESSION_ITEMS = 100


async def authenticate(request: Request, project_id: int, key: str | None, header: dict[str, Any]) -> None:
    """Check the key (from headers/query, else the envelope's `dsn`) against the project in the path."""
    dsn_key = key_from_dsn(header.get("dsn"), project_id)
    if key and dsn_key and key.lower() != dsn_key.lower():
        raise IngestError(401, "multiple authorization payloads detected")
    key = key or dsn_key
    if key is None:
        raise IngestError(401, "missing authorization information")
    if not HEX32.fullmatch(key):
        raise IngestError(401, "bad sentry DSN public key")
    owner, active = await request.app.keys.project_for(key.lower())
    if owner is None or not active:
        raise IngestError(403, "event submission rejected: unknown or disabled project key")
    if owner != project_id:
        raise IngestError(403, "event submission rejected: key does not belong to this project")


def key_from_dsn(dsn: Any, project_id: int) -> str | None:
    """The envelope header `dsn` (JS `tunnel` option) as an auth source."""
    if not isinstance(dsn, str):
        return None
    try:
        parts = urllib.parse.urlsplit(dsn)
    except ValueError:  # e.g. an unbalanced "[" in the host
        parts = urllib.parse.urlsplit("")
    if not parts.username:
        raise IngestError(401, "bad sentry DSN in envelope header")
    if parts.path.rstrip("/").rsplit("/", 1)[-1] != str(project_id):
        raise IngestError(403, "envelope DSN is for another project")
    return parts.username


class KeyCache:
    """public key → (project id, active), cached briefly so ingest rarely reads the database."""

    TTL = 30.0

    def __init__(self, store: Store) -> None:
        self.store = store
        self.entries: dict[str, tuple[float, int | None, bool]] = {}

    async def project_for(self, key: str) -> tuple[int | None, bool]:
        hit = self.entries.get(key)
        if hit and time.monotonic() - hit[0] < self.TTL:
            return hit[1], hit[2]
        row = await self.store.one("SELECT project_id, active FROM project_keys WHERE public_key = ?", (key,))
        entry = (time.monotonic(), row["project_id"] if row else None, bool(row and row["active"]))
        if len(self.entries) > 10_000:
            self.entries.clear()
        self.entries[key] = entry
        return entry[1], entry[2]


async def accept_envelope(request: Request, project_id: int, header: dict[str, Any],
                          items: list[tuple[dict[str, Any], bytes]], data: bytes) -> Response:
    """Each item to its handler, then the writer jobs they made, answered after the commit."""
    limits = request.app.limits
    intake = Intake(request, project_id, header, time.time(), await request.app.rules.rules_for(project_id),
                    await request.app.options.options(project_id))
    kinds = [str(item_header.get("type") or "") for item_header, _ in items]
    categories: dict[str, int] = {}  # a dict, not a Counter: a fifth of the cost, on every envelope
    for kind, (item_header, _) in zip(kinds, items):
        if kind in RATE_LIMITED:
            categories[RATE_LIMITED[kind]] = categories.get(RATE_LIMITED[kind], 0) + items_in(kind, item_header)
    intake.limited = limits.refuse(project_id, intake.options.get("rate_limit"), categories, intake.received)
    for kind, (item_header, payload) in zip(kinds, items):
        intake.seen[kind] = intake.seen.get(kind, 0) + 1
        take = ITEM_HANDLERS.get(kind)
        outcome = take(intake, item_header, payload) if take else "dropped: this tracker does not store this item type"
        intake.outcomes.append([kind, len(payload), await outcome if inspect.isawaitable(outcome) else outcome])
    if intake.health:
        intake.jobs.append(lambda conn: store_health(conn, project_id, intake.health))
    if limits.may_log(project_id, intake.received):
        logged = data if not intake.scrub.enabled else scrubbed_log_body(intake, items)
        intake.jobs.append(envelope_log_job(intake, await logged_body(logged), len(data)))
    if forward := project_forward(intake.options):  # in the same transaction: acknowledged means queued
        await queue_forward(intake, forward, items)
    writer = request.app.writer
    try:
        await writer.submit(deferring(lambda conn: [job(conn) for job in intake.jobs]))  # one job: an envelope is stored whole
    finally:  # the jobs refer back to the intake: a cycle that kept a whole envelope until a full gc pass
        intake.jobs.clear()
    if intake.forwarded:
        request.app.forwarder.wake.set()
    if PAYLOADS.wants_training() and not (forward and forward.relay):  # a relay stores no events to train on
        PAYLOADS.training = True
        task = asyncio.create_task(train_payload_dictionary(request.app.settings.db, writer))
        request.app.background.add(task)  # referenced until done, so it is not collected mid-way
        task.add_done_callback(request.app.background.discard)
    return intake.answer()


def items_in(kind: str, item_header: dict[str, Any]) -> int:
    """What an item counts for in its rate limit: a log or span item each of its lines or spans (as its
    header says, within the cap such an item is held to), any other item one."""
    cap = MAX_LOGS_PER_ITEM if kind == "log" else MAX_SPANS_PER_ITEM if kind == "span" else 1
    count = item_header.get("item_count")
    return min(max(count, 1), cap) if isinstance(count, int) and not isinstance(count, bool) else 1


@dataclasses.dataclass
class Intake:
    """One envelope on its way in: the writer jobs its items became, and what became of each item
    ([type, size, outcome], shown in the envelope log)."""

    request: Request
    project_id: int
    header: dict[str, Any]
    received: float
    rules: GroupingRules
    options: dict[str, Any]
    limited: dict[str, tuple[int, str, str]] = dataclasses.field(default_factory=dict)  # IngestLimits.refuse
    seen: dict[str, int] = dataclasses.field(default_factory=dict)  # items of each type so far
    events: list[PreparedEvent] = dataclasses.field(default_factory=list)
    health: list[HealthUpdate] = dataclasses.field(default_factory=list)
    jobs: list[Job] = dataclasses.field(default_factory=list)
    outcomes: list[list[Any]] = dataclasses.field(default_factory=list)
    forwarded: bool = False  # an outbox row is among the jobs
    scrub_text: str = dataclasses.field(init=False)  # the `scrub` option as text (scrub_option_text)

    def __post_init__(self) -> None:  # once per envelope, as a field: a cached_property takes a lock in 3.11
        self.scrub_text = scrub_option_text(self.options.get("scrub"))

    @property
    def scrub(self) -> ScrubPolicy:
        return parsed_scrub_policy(self.scrub_text)

    def drop(self, reason: str, category: str, outcome: str, quantity: int = 1) -> str:
        """An item refused: counted as dropped (as client reports are), its outcome returned."""
        self.request.app.limits.drop(self.project_id, self.received, reason, category, quantity)
        return outcome

    def over_limit(self, *categories: str, dropped_as: str = "") -> bool:
        """Whether an item of these data categories is rate limited here (then counted as dropped)."""
        if not self.limited or not any(category in self.limited for category in categories):
            return False
        self.drop("rate_limited", dropped_as or categories[0], "")
        return True

    def answer(self) -> Response:
        """Sentry's answer: the first event's id; when a category was rate limited, X-Sentry-Rate-Limits
        names it, on a 429 if nothing (client reports aside) was kept, else on the 200."""
        event_id = self.events[0].event_id if self.events else normalize_id(self.header.get("event_id"))
        body = {"id": event_id} if event_id else {}
        if not self.limited:
            return json_answer(body)
        grouped: dict[tuple[int, str, str], list[str]] = {}
        for category, limit in self.limited.items():
            grouped.setdefault(limit, []).append("error;default" if category == "error" else category)
        rate_limits = {"X-Sentry-Rate-Limits": ", ".join(f"{seconds}:{';'.join(names)}:{scope}:{reason}"
                                                         for (seconds, scope, reason), names in grouped.items())}
        if not any(kind != "client_report" and not outcome.startswith("dropped") for kind, _, outcome in self.outcomes):
            seconds, _, reason = max(grouped)
            raise IngestError(429, f"event submission rejected: {reason.replace('_', ' ')} exceeded",
                              {"Retry-After": str(seconds), **rate_limits})
        return json_answer(body, headers=rate_limits)


def normalize_id(value: Any) -> str | None:
    """Dashed or undashed UUID → 32 lowercase hex; anything else → None."""
    if isinstance(value, str):
        candidate = value.replace("-", "").strip().lower()
        if HEX32.fullmatch(candidate):
            return candidate
    return None


HEX32 = re.compile(r"[0-9a-fA-F]{32}")  # a public key or an event id (normalize_id lowers it first)


class RulesCache:
    """project id → its parsed grouping rules, so ingest applies them without a query per event.
    Whoever saves rules drops the entry; `generation` stops a read that raced with a save from
    caching the old rules."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self.entries: dict[int, GroupingRules] = {}
        self.generation = 0

    async def rules_for(self, project_id: int) -> GroupingRules:
        if project_id in self.entries:
            return self.entries[project_id]
        generation = self.generation
        rules = stored_rules(await self.store.one(RULES_SQL, (project_id,)))
        if generation == self.generation:
            self.entries[project_id] = rules
        return rules

    def invalidate(self, project_id: int) -> None:
        self.generation += 1
        self.entries.pop(project_id, None)


class OptionsCache:
    """project id → its options (PROJECT_OPTIONS), cached briefly; a change through this process
    calls `forget` so it applies at once."""

    TTL = 10.0

    def __init__(self, store: Store) -> None:
        self.store = store
        self.entries: dict[int, tuple[float, dict[str, Any]]] = {}

    async def options(self, project_id: int) -> dict[str, Any]:
        hit = self.entries.get(project_id)
        if hit and time.monotonic() - hit[0] < self.TTL:
            return hit[1]
        rows = await self.store.all("SELECT key, value FROM project_options WHERE project_id = ?", (project_id,))
        options = {r["key"]: json.loads(r["value"]) for r in rows}
        self.entries[project_id] = (time.monotonic(), options)
        return options

    def forget(self, project_id: int) -> None:
        self.entries.pop(project_id, None)


# Item type → the data category its rate limit counts in (Sentry's, sentry-protocol.md §5.3): each has
# its own budget of the project's `rate_limit` and of `[limits] events_per_minute` in a minute, so a
# flood of attachments or check-ins is limited like one of events. Client reports (`internal`) never are.
RATE_LIMITED = {"event": "error", "transaction": "transaction", "attachment": "attachment", "session": "session",
                "sessions": "session", "check_in": "monitor", "feedback": "feedback", "user_report": "feedback",
                "log": "log_item", "span": "span"}


async def take_event(intake: Intake, item_header: dict[str, Any], payload: bytes) -> str:
    """An error event: prepared off the writer (in a worker process when there is one), stored by a
    writer job."""
    settings = intake.request.app.settings
    if intake.over_limit("error"):
        return "dropped: rate limited"
    if intake.seen["event"] > 1:  # as Relay: an envelope holds one event, another is invalid (duplicate_item)
        return intake.drop("duplicate_item", "error", "dropped: an envelope holds one event")
    if len(payload) > settings.max_event:
        raise IngestError(413, "envelope exceeded size limits for type 'event'")
    ev = await intake.request.app.preparers.prepare(PrepareJob(
        payload, intake.project_id, None if intake.events else normalize_id(intake.header.get("event_id")),
        intake.received, client_ip(intake.request), intake.rules.stacktrace_text, intake.rules.fingerprint_text,
        intake.scrub_text, PAYLOADS.current, intake.rules.secondary_until))
    intake.events.append(ev)
    index = len(intake.outcomes)

    def store(conn: sqlite3.Connection) -> None:
        if not store_event(conn, ev):
            intake.outcomes[index][2] = "dropped: an event with this id is stored already"
    intake.jobs.append(store)
    return "stored"


async def take_transaction(intake: Intake, item_header: dict[str, Any], payload: bytes) -> str:
    """A transaction: counted in its minute bucket (release health) and kept with its spans for the
    trace page and the slowest transactions (Traces and logs), scrubbed as events are."""
    if intake.over_limit("transaction"):
        return "dropped: rate limited"
    if len(payload) > intake.request.app.settings.max_event:
        return intake.drop("too_large", "transaction", "dropped: too large")
    return await take_transactions(intake, "transaction", payload)


async def take_transactions(intake: Intake, kind: str, payload: bytes) -> str:
    """A transaction or span item prepared (in a worker when there is one) into health counts and rows."""
    try:
        prepared = await prepare_item(intake, kind, payload)
    except IngestError as exc:
        return intake.drop("invalid", kind, f"dropped: {exc.detail}")
    intake.health += [HealthUpdate(*fields) for fields in prepared.health]
    if prepared.rows:
        cap, _, _ = trace_caps(intake.request.app.settings)
        intake.jobs.append(lambda conn: store_transactions(conn, prepared.rows, cap))
    return prepared.outcome


async def prepare_item(intake: Intake, kind: str, payload: bytes) -> PreparedItem:
    """A transaction, span or log item's parsing and scrubbing, sent where events are prepared (a worker,
    when there is one): the event loop's one core is what all of ingest waits on, so a transaction
    prepared here cost the errors beside it more than its round trip to a worker (bench/README.md)."""
    return await intake.request.app.preparers.prepare(PrepareJob(
        payload, intake.project_id, None, intake.received, "", "", "", intake.scrub_text, PAYLOADS.current, kind=kind))


async def take_spans(intake: Intake, item_header: dict[str, Any], payload: bytes) -> str:
    """A `span` item (span v2, {"version": 2, "items": [...]}: what JS SDK 11 streams by default instead
    of transactions): each segment span with the spans of its segment in the same item becomes a
    transaction (counted and kept as one); spans whose segment is not in the item are not kept."""
    if intake.over_limit("span"):
        return "dropped: rate limited"
    if len(payload) > intake.request.app.settings.max_event:
        return intake.drop("too_large", "span", "dropped: too large")
    return await take_transactions(intake, "span", payload)


async def take_log(intake: Intake, item_header: dict[str, Any], payload: bytes) -> str:
    """A `log` item ({"version": 2, "items": [...]}): rate limited as `log_item` (each log counts,
    as many as its header says and then as many as it holds), at most MAX_LOG_ITEMS of them an
    envelope and MAX_LOGS_PER_ITEM logs each, scrubbed, kept."""
    count, limits = items_in("log", item_header), intake.request.app.limits
    if "log_item" in intake.limited:
        return intake.drop("rate_limited", "log_item", "dropped: rate limited", count)
    if intake.seen["log"] > MAX_LOG_ITEMS:
        return intake.drop("too_many", "log_item", f"dropped: more than {MAX_LOG_ITEMS} log items in one envelope", count)
    if len(payload) > intake.request.app.settings.max_event:
        return intake.drop("too_large", "log_item", "dropped: too large", count)
    try:
        prepared = await prepare_item(intake, "log", payload)
    except IngestError as exc:
        return intake.drop("invalid", "log_item", f"dropped: {exc.detail}", count)
    if prepared.refused:
        limits.drop(intake.project_id, intake.received, "invalid", "log_item", prepared.refused)
    unstated = len(prepared.rows) - count  # lines beyond what the header said, and so what the limit counted
    if unstated > 0 and (refused := limits.refuse(intake.project_id, intake.options.get("rate_limit"),
                                                  {"log_item": unstated}, intake.received)):
        intake.limited.update(refused)  # the answer names the limit, as for a header that told the truth
        limits.drop(intake.project_id, intake.received, "rate_limited", "log_item", unstated)
        prepared.rows, prepared.outcome = prepared.rows[:count], f"stored {count} logs, {unstated} more rate limited"
    if prepared.rows:
        _, cap, _ = trace_caps(intake.request.app.settings)
        intake.jobs.append(lambda conn: store_logs(conn, intake.project_id, prepared.rows, cap))
    return prepared.outcome


MAX_LOG_ITEMS = 10  # log items in one envelope: SDKs send one (at most 1,000 lines a writer job)


def client_ip(request: Request) -> str:
    """The client's address: uvicorn puts the one X-Forwarded-For names there when the connection
    comes from a trusted proxy (`trusted_proxies`), and ignores the header from anyone else."""
    return request.client.host if request.client else ""


def take_health(intake: Intake, item_header: dict[str, Any], payload: bytes) -> str:
    """Sessions and transactions become counts in minute buckets; a malformed one is dropped alone."""
    kind = item_header["type"]
    if intake.over_limit(RATE_LIMITED[kind]):
        return "dropped: rate limited"
    if len(payload) > intake.request.app.settings.max_event:
        return "dropped: too large"
    try:
        updates = HEALTH_PARSERS[kind](json_object(payload, f"{kind} payload"), intake.received)
    except IngestError as exc:
        return intake.drop("invalid", RATE_LIMITED[kind], f"dropped: {exc.detail}")
    intake.health += updates
    return "stored as counts" if updates else "not counted: too old, or without a release"  # still forwarded


def take_client_report(intake: Intake, item_header: dict[str, Any], payload: bytes) -> str:
    if len(payload) > MAX_CLIENT_REPORT:
        return intake.drop("too_large", "internal", f"dropped: larger than {MAX_CLIENT_REPORT} bytes")
    try:
        intake.request.app.limits.client_report(intake.project_id, json_object(payload, "client report"),
                                                      intake.received)
    except IngestError as exc:
        return f"dropped: {exc.detail}"
    return "counted in the project's dropped events"


MAX_CLIENT_REPORT = 4 * KIB


def take_check_in(intake: Intake, item_header: dict[str, Any], payload: bytes) -> str:
    """A cron check-in (`capture_checkin`, `@monitor`), rate limited as category `monitor` (so a flood
    of events does not stop it); the writer job records it (see Cron monitors) and says what became of it."""
    if intake.over_limit("monitor"):
        return "dropped: rate limited"
    if len(payload) > MAX_CHECK_IN:
        return intake.drop("too_large", "monitor", "dropped: too large")
    try:
        check_in = parse_check_in(json_object(payload, "check-in payload"), intake.received)
    except IngestError as exc:
        return f"dropped: {exc.detail}"
    except ValueError as exc:
        return f"dropped: {exc}"
    index, minute = len(intake.outcomes), cron_minute(intake.request.app.settings)

    def store(conn: sqlite3.Connection) -> None:
        intake.outcomes[index][2] = record_check_in(conn, intake.project_id, check_in, minute)[0]
    intake.jobs.append(store)
    return "stored"


async def take_attachment(intake: Intake, item_header: dict[str, Any], payload: bytes) -> str:
    """An attachment: checked against the size and count caps here, against the project's quota in the
    writer job (so concurrent envelopes cannot pass it together), stored under the envelope's event id.
    Hashed and compressed here (a large one in a thread): the writer only inserts."""
    limits = intake.request.app.limits
    max_size, max_total = attachment_caps(intake.request.app.settings, intake.options)
    event_id = normalize_id(intake.header.get("event_id")) or (intake.events[-1].event_id if intake.events else None)
    if intake.over_limit("error", "attachment", dropped_as="attachment_item"):  # its event's limit, or its own
        return "dropped: rate limited"
    if intake.seen["attachment"] > MAX_ATTACHMENTS:
        return intake.drop("too_many", "attachment_item", f"dropped: more than {MAX_ATTACHMENTS} in one envelope")
    if event_id is None:
        return intake.drop("no_event_id", "attachment_item", "dropped: the envelope names no event to attach it to")
    if len(payload) > max_size:
        return intake.drop("too_large", "attachment_item",
                           f"dropped: larger than the attachment limit of {max_size} bytes")
    digest, utf8, data = (await asyncio.to_thread(attachment_blob, payload, zstandard.ZstdCompressor(level=3))
                          if len(payload) > 64 * KIB else attachment_blob(payload, ATTACHMENT_ZSTD))
    row = {"project_id": intake.project_id, "event_id": event_id,
           "filename": text(item_header.get("filename"), 255).strip() or "attachment",
           "content_type": text(item_header.get("content_type"), 100).strip().lower() or "application/octet-stream",
           "attachment_type": text(item_header.get("attachment_type"), 64) or "event.attachment",
           "size": len(payload), "sha1": digest, "utf8": utf8, "data": data, "created": intake.received}
    index, loop = len(intake.outcomes), asyncio.get_running_loop()

    def store(conn: sqlite3.Connection) -> None:
        intake.outcomes[index][2] = store_attachment(conn, row, max_total)
        if intake.outcomes[index][2] == QUOTA_FULL:  # the counter lives on the event loop's side
            loop.call_soon_threadsafe(limits.drop, intake.project_id, intake.received, "attachment_quota",
                                      "attachment_item", 1)
    intake.jobs.append(store)
    return "stored"


MAX_ATTACHMENTS = 100


def take_feedback(intake: Intake, item_header: dict[str, Any], payload: bytes) -> str:
    """New-style feedback (JS `captureFeedback`, the feedback widget): an event whose
    contexts.feedback holds message, contact_email, name, url and associated_event_id."""
    if intake.over_limit("feedback"):
        return "dropped: rate limited"
    try:
        raw = feedback_payload(intake, payload, "feedback")
    except IngestError as exc:
        return f"dropped: {exc.detail}"
    contexts = as_dict(raw.get("contexts"))
    fields, user = as_dict(contexts.get("feedback")), as_dict(raw.get("user"))
    return queue_feedback(intake, Feedback(
        intake.project_id, "feedback", normalize_id(fields.get("associated_event_id")),
        normalize_id(raw.get("event_id")) or normalize_id(intake.header.get("event_id")) or uuid.uuid4().hex,
        text(fields.get("name") or user.get("name") or user.get("username"), 256),
        text(fields.get("contact_email") or user.get("email"), 256), text(fields.get("message"), MAX_FEEDBACK),
        text(fields.get("url") or as_dict(raw.get("request")).get("url"), 2048),
        {k: v for k, v in contexts.items() if k != "feedback" and isinstance(v, dict)}, intake.received))


def take_user_report(intake: Intake, item_header: dict[str, Any], payload: bytes) -> str:
    """A legacy user report: {event_id, name, email, comments} about one event."""
    if intake.over_limit("feedback"):
        return "dropped: rate limited"
    try:
        raw = feedback_payload(intake, payload, "user report")
    except IngestError as exc:
        return f"dropped: {exc.detail}"
    return queue_feedback(intake, user_report(intake.project_id, raw, intake.header.get("event_id"), intake.received))


ITEM_HANDLERS: dict[str, Callable[[Intake, dict[str, Any], bytes], str | Awaitable[str]]] = {
    "event": take_event, "session": take_health, "sessions": take_health, "transaction": take_transaction,
    "log": take_log, "span": take_spans,
    "client_report": take_client_report, "check_in": take_check_in, "attachment": take_attachment,
    "feedback": take_feedback, "user_report": take_user_report}


async def stream(request: Request) -> Response:
    """POST /stream: what the SDK's `spotlight=` option sends (Spotlight's sidecar URL)."""
    return await answer_ingest(request, spotlight)


async def spotlight(request: Request) -> Response:
    """An envelope without a DSN, into the project `local` (made on first use). Loopback clients
    only: it is for a developer's own machine."""
    if client_ip(request) not in ("127.0.0.1", "::1"):
        raise IngestError(403, "/stream accepts envelopes from this machine only; use a DSN from elsewhere")
    header, items, data = await read_envelope(request)
    store = request.app.store
    row = await store.one("SELECT id FROM projects WHERE slug = 'local'")
    project_id = row["id"] if row else (await request.app.writer.submit(
        lambda conn: create_project(conn, "local", "local")))[0]
    return await accept_envelope(request, project_id, header, items, data)


async def cron_endpoint(request: Request) -> Response:
    """GET|POST /api/<project_id>/cron/<monitor_slug>/<sentry_key>/ (Relay's cron route, for a
    crontab's curl): `?status=in_progress|ok|error` with optional check_in_id, duration (seconds) and
    environment, or the same fields and monitor_config as a JSON body. 202 {"id": <check-in id>}."""
    return await answer_ingest(request, take_http_check_in)


async def take_http_check_in(request: Request) -> Response:
    project_id = parse_project_id(request.path_params["project_id"])
    key = request.path_params.get("sentry_key") or key_from_request(request)
    fields: dict[str, Any] = {k: v for k, v in request.query_params.items() if not k.startswith("sentry_")}
    body = await read_body(request, MAX_CHECK_IN) if request.method == "POST" else b""
    if body.strip():
        fields.update(json_object(decompress(body, header_of(request, b"content-encoding") or "", MAX_CHECK_IN),
                                  "check-in body"))
    await authenticate(request, project_id, key, {})
    try:
        check_in = parse_check_in({**fields, "monitor_slug": request.path_params["monitor_slug"]}, time.time())
    except ValueError as exc:
        raise IngestError(400, f"invalid check-in: {exc}") from None
    minute = cron_minute(request.app.settings)
    outcome, check_in_id = await request.app.writer.submit(
        lambda conn: record_check_in(conn, project_id, check_in, minute))
    if check_in_id is None:
        raise IngestError(404 if "unknown monitor" in outcome else 400, outcome)
    return JSONResponse({"id": str(uuid.UUID(check_in_id))}, status_code=202)


# -- attachments and user feedback ------------------------------------------------------------------
#
# An `attachment` item is kept (zstd-compressed) under the event id of its envelope, whether that
# event is stored yet or not; `feedback` (new style, an event with contexts.feedback) and
# `user_report` (legacy) items become rows of `feedback`, linked to the issue of the event they
# name as soon as both are stored, in either order.

def attachment_caps(settings: Settings, options: Mapping[str, Any]) -> tuple[int, int]:
    """(max bytes of one attachment, max bytes of all of a project's attachments): the project's
    `attachments` option over the [attachments] table over the defaults."""
    own, caps = as_dict(options.get("attachments")), []
    for key, default in (("max_size", ATTACHMENT_MAX_SIZE), ("max_total", ATTACHMENT_MAX_TOTAL)):
        try:
            caps.append(max(int(own.get(key, settings.attachments.get(key, default))), 0))
        except (TypeError, ValueError):
            caps.append(default)
    return caps[0], caps[1]


ATTACHMENT_MAX_SIZE = 10 * MIB  # [attachments] max_size: one attachment (Sentry allows 100 MiB; see README)

ATTACHMENT_MAX_TOTAL = 100 * MIB  # [attachments] max_total: all attachments of a project

ATTACHMENT_ZSTD = zstandard.ZstdCompressor(level=3)  # used on the event loop only (a compressor is not thread-safe)


def attachment_blob(payload: bytes, compressor: zstandard.ZstdCompressor) -> tuple[str, int, bytes]:
    """(sha1, whether it reads as text, the zstd frame stored) of an attachment."""
    return hashlib.sha1(payload).hexdigest(), int(readable_text(payload)), compressor.compress(payload)


def readable_text(payload: bytes) -> bool:
    """Whether an attachment can be shown as text on a page: small enough, UTF-8, no NUL byte."""
    if len(payload) > TEXT_VIEW_MAX or b"\x00" in payload:
        return False
    try:
        payload.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


TEXT_VIEW_MAX = 256 * KIB  # attachments up to this size that are UTF-8 text can be read on a page


def store_attachment(conn: sqlite3.Connection, row: dict[str, Any], max_total: int) -> str:
    """Writer job: keep an attachment unless the same file is stored for the event already (an SDK's
    retry) or it would take the project's attachments past `max_total` bytes."""
    if conn.execute("SELECT 1 FROM attachments WHERE project_id = :project_id AND event_id = :event_id AND "
                    "filename = :filename AND sha1 = :sha1", row).fetchone():
        return "dropped: this attachment is stored already"
    used = conn.execute("SELECT bytes FROM attachment_usage WHERE project_id = ?", (row["project_id"],)).fetchone()
    if (used[0] if used else 0) + row["size"] > max_total:
        return QUOTA_FULL
    conn.execute("""INSERT INTO attachments (project_id, event_id, filename, content_type, attachment_type, size, sha1,
                                             utf8, data, created)
                    VALUES (:project_id, :event_id, :filename, :content_type, :attachment_type, :size, :sha1, :utf8,
                            :data, :created)""", row)  # the attachment_added trigger counts it in attachment_usage
    return "stored"


QUOTA_FULL = "dropped: attachment quota of the project is full"


def feedback_payload(intake: Intake, payload: bytes, what: str) -> dict[str, Any]:
    if len(payload) > intake.request.app.settings.max_event:
        raise IngestError(413, "too large")
    return json_object(payload, f"{what} payload")


def queue_feedback(intake: Intake, feedback: Feedback) -> str:
    problem = feedback_problem(feedback)
    if problem:
        return f"dropped: {problem}"
    feedback.scrub(intake.scrub)
    index = len(intake.outcomes)

    def store(conn: sqlite3.Connection) -> None:
        intake.outcomes[index][2] = store_feedback(conn, feedback)
    intake.jobs.append(store)
    return "stored"


def feedback_problem(feedback: Feedback) -> str | None:
    """Why feedback cannot be kept, or None."""
    if not feedback.message.strip():
        return "feedback without a message"
    if feedback.source == "user_report" and feedback.event_id is None:
        return "a user report must name its event (event_id)"
    return None


def store_feedback(conn: sqlite3.Connection, feedback: Feedback) -> str:
    """Writer job: keep feedback, linked to the issue of its event when that is stored (else
    `link_feedback` links it when the event comes). A second user report on an event replaces the
    first, as in Sentry; a feedback event id seen before (an SDK's retry) is stored once."""
    row = conn.execute("SELECT issue_id FROM events WHERE project_id = ? AND event_id = ?",
                       (feedback.project_id, feedback.event_id)).fetchone() if feedback.event_id else None
    values = {**dataclasses.asdict(feedback), "contexts": json.dumps(feedback.contexts, default=str),
              "issue_id": row["issue_id"] if row else None}
    if feedback.source == "user_report" and conn.execute(
            """UPDATE feedback SET name = :name, email = :email, message = :message, created = :created,
                   issue_id = coalesce(:issue_id, issue_id)
               WHERE project_id = :project_id AND event_id = :event_id AND source = 'user_report'""", values).rowcount:
        return "stored (it replaced the earlier report on this event)"
    inserted = conn.execute(
        """INSERT OR IGNORE INTO feedback (project_id, event_id, issue_id, feedback_event_id, name, email, message,
                                           url, source, contexts, created)
           VALUES (:project_id, :event_id, :issue_id, :feedback_event_id, :name, :email, :message, :url, :source,
                   :contexts, :created)""", values).rowcount
    return "stored" if inserted else "dropped: this feedback is stored already"


def user_report(project_id: int, raw: dict[str, Any], default_event_id: Any, now: float) -> Feedback:
    """A legacy user report (envelope item or API body) as feedback."""
    return Feedback(project_id, "user_report", normalize_id(raw.get("event_id")) or normalize_id(default_event_id),
                    None, text(raw.get("name"), 256), text(raw.get("email"), 256),
                    text(raw.get("comments"), MAX_FEEDBACK), created=now)


@dataclasses.dataclass
class Feedback:
    """What a person wrote about a problem: a `feedback` item (source feedback, with its own event id),
    a `user_report` item or the user-feedback API (source user_report); `event_id` is the event it is
    about, when it names one."""

    project_id: int
    source: str
    event_id: str | None
    feedback_event_id: str | None
    name: str
    email: str
    message: str
    url: str = ""
    contexts: dict[str, Any] = dataclasses.field(default_factory=dict)
    created: float = 0.0

    def scrub(self, policy: ScrubPolicy) -> None:
        """The project's data scrubbing, as for events (a card number in the message, a token in the URL)."""
        doc = {"message": self.message, "name": self.name, "url": self.url, "contexts": self.contexts}
        if scrub_event(doc, policy):
            self.message, self.name, self.url = text(doc["message"]), text(doc["name"]), text(doc["url"])
            self.contexts = as_dict(doc["contexts"])
        if len(json.dumps(self.contexts, default=str)) > 16 * KIB:
            self.contexts = {}


MAX_FEEDBACK = 4096  # characters of a feedback message (Sentry's limit for comments)


def link_feedback(conn: sqlite3.Connection, project_id: int, event_id: str, issue_id: int) -> None:
    """Writer, storing an event: feedback that came before it joins its issue."""
    conn.execute("UPDATE feedback SET issue_id = ? WHERE project_id = ? AND event_id = ? AND issue_id IS NULL",
                 (issue_id, project_id, event_id))


async def attachment_rows(store: Store, project_id: int, event_ids: list[str]) -> list[sqlite3.Row]:
    """The attachments of these events (their data left out), oldest first."""
    if not event_ids:
        return []
    return await store.all(f"SELECT {ATTACHMENT_COLUMNS} FROM attachments WHERE project_id = ? AND event_id IN "
                           f"({','.join('?' * len(event_ids))}) ORDER BY id", (project_id, *event_ids))


ATTACHMENT_COLUMNS = "id, project_id, event_id, filename, content_type, attachment_type, size, sha1, utf8, created"


async def event_attachment(store: Store, project_id: int, event_id: str, attachment_id: int) -> sqlite3.Row | None:
    """One attachment of an event (stored or not) of the project, with its data."""
    return await store.one("SELECT * FROM attachments WHERE project_id = ? AND event_id = ? AND id = ?",
                           (project_id, event_id, attachment_id))


async def issue_attachment(store: Store, issue_id: int, event_id: str, attachment_id: int) -> sqlite3.Row | None:
    """One attachment, with its data, of an event of the issue or of a feedback on it."""
    return await store.one(
        """SELECT a.* FROM attachments a JOIN issues i ON i.project_id = a.project_id
           WHERE a.id = ? AND a.event_id = ? AND i.id = ? AND (
               EXISTS (SELECT 1 FROM events e WHERE e.issue_id = i.id AND e.event_id = a.event_id)
               OR EXISTS (SELECT 1 FROM feedback f WHERE f.issue_id = i.id AND f.feedback_event_id = a.event_id))""",
        (attachment_id, event_id, issue_id))


async def project_feedback(store: Store, project_id: int, limit: int, offset: int = 0) -> list[sqlite3.Row]:
    """A project's feedback, newest first, each with its issue's short_id and title (NULL when none)."""
    return await store.all("""SELECT f.*, i.short_id, i.title FROM feedback f LEFT JOIN issues i ON i.id = f.issue_id
                              WHERE f.project_id = ? ORDER BY f.created DESC, f.id DESC LIMIT ? OFFSET ?""",
                           (project_id, limit, offset))


async def user_report_of(store: Store, project_id: int, event_id: str | None) -> sqlite3.Row | None:
    """The user report on an event (there is one at most: a second one replaces it)."""
    return await store.one("SELECT * FROM feedback WHERE project_id = ? AND event_id = ? AND source = 'user_report'",
                           (project_id, event_id))


async def issue_feedback_rows(store: Store, issue_id: int, limit: int = 100) -> tuple[list[sqlite3.Row], int]:
    """The issue's newest feedback (at most `limit`) and how much it has in all."""
    rows = await store.all("SELECT * FROM feedback WHERE issue_id = ? ORDER BY created DESC, id DESC LIMIT ?",
                           (issue_id, limit))
    total = (await store.one("SELECT count(*) FROM feedback WHERE issue_id = ?", (issue_id,)))[0] if rows else 0
    return rows, total




# -- the envelope log: every envelope as it arrived, for people testing an SDK ---------------------

def scrubbed_log_body(intake: Intake, items: list[tuple[dict[str, Any], bytes]]) -> bytes:
    """The envelope as the log keeps it when the project scrubs data: scrubbing happens before
    anything is stored, so an event item becomes a pointer to the stored (scrubbed) event, and an
    item that may carry secrets keeps only its header, size and outcome."""
    events = iter(intake.events)
    out = bytearray(json_dumps(intake.header))  # appended to: an orjson result holds 4 KiB however short,
    for (item_header, payload), (_, _, outcome) in zip(items, intake.outcomes):  # so a list of 2,000 took 8 MB
        kind = item_header.get("type")
        if kind in LOGGED_AS_SENT:
            kept = payload
        elif kind == "event" and outcome == "stored":
            kept = json_dumps({"stored_as_event": next(events).event_id})
        else:
            kept = NOT_KEPT
        out += b"\n%b\n%b" % (json_dumps({**item_header, "length": len(kept)}), kept)
    out += b"\n"
    return bytes(out)


LOGGED_AS_SENT = {"client_report", "check_in", "sessions"}  # items that carry no user data

NOT_KEPT = json_dumps({"not_kept": "this project scrubs data before storing it, so the log keeps only this item's "
                                   "header, size and outcome"})


async def logged_body(body: bytes) -> bytes | None:
    """An envelope's body as the log keeps it: zstd-compressed, a large one in a thread (as a large
    body is decompressed) so that the event loop never spends milliseconds on it; past
    ENVELOPE_LOG_BODY, not kept."""
    if len(body) > ENVELOPE_LOG_BODY:
        return None
    if len(body) > 64 * KIB:
        return await asyncio.to_thread(zstandard.ZstdCompressor(level=1).compress, body)
    return ENVELOPE_ZSTD.compress(body)


def envelope_log_job(intake: Intake, kept: bytes | None, size: int) -> Job:
    """The writer job that logs an envelope, last of its envelope's jobs. Its row is made here on the
    event loop (the body as logged_body kept it, the header as text) and written with the batch's
    others in one statement at the end of the batch (log_envelopes), in the events' transaction: seen
    with the answer, lost with nothing; each item's outcome is read then (a job finds a duplicate event)."""
    client = envelope_client(intake).encode(errors="replace").decode()  # a lone surrogate would fail the batch's rows
    row = (intake.project_id, intake.received, client, json.dumps(intake.header), size, kept)
    outcomes = intake.outcomes
    return lambda conn: defer(conn, log_envelopes, (row, outcomes))


def log_envelopes(conn: sqlite3.Connection, logged: list[tuple[tuple[Any, ...], list[list[Any]]]]) -> None:
    """Writer, at the end of a batch: its envelopes into the log, in a savepoint (a failure, logged,
    loses the log's rows, not the events'); when their ids pass a multiple of 50, each of their
    projects' log is trimmed to its bounds."""
    conn.execute("SAVEPOINT envelope_log")
    try:
        write_envelope_log(conn, logged)
        conn.execute("RELEASE envelope_log")
    except Exception:
        conn.execute("ROLLBACK TO envelope_log")
        conn.execute("RELEASE envelope_log")
        log.exception("writing the envelope log failed")


def write_envelope_log(conn: sqlite3.Connection, logged: list[tuple[tuple[Any, ...], list[list[Any]]]]) -> None:
    """The rows (each item's outcome as its jobs left it), and the trim."""
    conn.executemany("INSERT INTO envelopes (project_id, received, client, header, size, body, items) "
                     "VALUES (?, ?, ?, ?, ?, ?, ?)", [(*row, outcomes_text(outcomes)) for row, outcomes in logged])
    last = conn.execute("SELECT last_insert_rowid()").fetchone()[0]
    if last // 50 != (last - len(logged)) // 50:
        for project_id, received in {row[0]: row[1] for row, _ in logged}.items():
            conn.execute("DELETE FROM envelopes WHERE project_id = ? AND (received < ? OR id <= (SELECT id FROM "
                         "envelopes WHERE project_id = ? ORDER BY id DESC LIMIT 1 OFFSET ?))",
                         (project_id, received - ENVELOPE_LOG_AGE, project_id, ENVELOPE_LOG))


def outcomes_text(outcomes: list[list[Any]]) -> str:
    """The items' outcomes as JSON: orjson (a tenth of json's time), json for an item type orjson
    refuses (a lone surrogate)."""
    try:
        return orjson.dumps(outcomes).decode()
    except TypeError:
        return json.dumps(outcomes)


ENVELOPE_ZSTD = zstandard.ZstdCompressor(level=1)  # used by the event loop only (logged_body)

# The envelope log, for people testing an SDK: every envelope as it arrived (decompressed, up to
# 1 MiB) and what became of each item; the newest ENVELOPE_LOG per project, for a day at most, and
# at most ENVELOPE_LOG_RATE a second (IngestLimits.may_log).
ENVELOPE_LOG, ENVELOPE_LOG_AGE, ENVELOPE_LOG_BODY, ENVELOPE_LOG_RATE = 500, 86400, MIB, 50


def envelope_client(intake: Intake) -> str:
    """Which SDK sent it: the envelope's `sdk`, else the auth header's sentry_client, else the User-Agent."""
    sdk = intake.header.get("sdk") if isinstance(intake.header.get("sdk"), dict) else {}
    if sdk.get("name"):
        return text(f"{sdk['name']}/{sdk.get('version', '')}", 200)
    auth = re.search(r"sentry_client=([^,\s]+)", intake.request.headers.get("x-sentry-auth", ""))
    return text(auth[1] if auth else intake.request.headers.get("user-agent", ""), 200)


async def logged_envelopes(store: Store, project_id: int, limit: int = 200) -> list[sqlite3.Row]:
    """The project's newest logged envelopes, without their header and body."""
    return await store.all("SELECT id, received, client, size, items FROM envelopes WHERE project_id = ? "
                           "ORDER BY id DESC LIMIT ?", (project_id, limit))


async def logged_envelope(store: Store, project_id: int, envelope_id: int) -> sqlite3.Row | None:
    """One logged envelope of the project, whole."""
    return await store.one("SELECT * FROM envelopes WHERE project_id = ? AND id = ?", (project_id, envelope_id))


# -- limits: rate limits by data category, the disk guard, what was dropped -----------------------

class IngestLimits:
    """Items per minute in each data category (RATE_LIMITED) for a project (its `rate_limit` option)
    and for the whole installation (`[limits] events_per_minute`) in fixed windows of `[limits] window`
    seconds (a minute; tests lengthen it so that a test's requests share one window), and the
    disk guard (`[limits] min_free_mb`). What is refused, and what SDKs report they dropped (client
    reports), is counted here and written to `dropped` by DropFlusher, so a flood costs no writer job per request."""

    DISK_CHECK = 5.0  # seconds between free-space checks

    def __init__(self, settings: Settings) -> None:
        self.per_minute = int(settings.limits.get("events_per_minute", 0))
        self.window = int(settings.limits.get("window", 60))
        self.min_free = float(settings.limits.get("min_free_mb", 256)) * MIB
        self.windows: dict[tuple[int | None, str], tuple[int, int]] = {}  # (project id or None: all,
        # data category) → (window, items)
        self.disk = (0.0, False)  # (checked at, full)
        self.dropped: collections.Counter[tuple[int, int, str, str]] = collections.Counter()
        self.logged: dict[int, tuple[int, int]] = {}  # project id → (second, envelopes logged in it)

    def disk_is_full(self, db: str) -> bool:
        now = time.monotonic()
        if now - self.disk[0] > self.DISK_CHECK:
            free = shutil.disk_usage(os.path.dirname(os.path.abspath(db))).free
            self.disk = (now, free < self.min_free)
        return self.disk[1]

    def refuse(self, project_id: int, limit: Any, counts: Mapping[str, int],
               now: float) -> dict[str, tuple[int, str, str]]:
        """For each data category of `counts` (an envelope's items) whose items would pass a limit:
        (seconds to wait, scope, reason); the others count toward both of their windows. The handler
        of each item refused counts it as dropped (Intake.over_limit)."""
        project_cap = limit if isinstance(limit, int) else 0
        if project_cap <= 0 and self.per_minute <= 0:  # no limits: nothing to count
            return {}
        window, limited = int(now // self.window), {}
        for category, count in counts.items():
            caps = (((project_id, category), project_cap, "project", "project_quota"),
                    ((None, category), self.per_minute, "organization", "installation_quota"))
            over = next(((scope, reason) for key, cap, scope, reason in caps
                         if cap > 0 and self.used(key, window) + count > cap), None)
            if over:
                limited[category] = (max(self.window - int(now % self.window), 1), *over)
                continue
            for key, _, _, _ in caps:
                self.windows[key] = (window, self.used(key, window) + count)
        return limited

    def may_log(self, project_id: int, now: float) -> bool:
        """Whether an envelope goes into the envelope log: the first ENVELOPE_LOG_RATE of each second
        of a project. An SDK under test sends far fewer; a production flood of a thousand a second
        would replace the whole log (its newest ENVELOPE_LOG) twice a second, paying a body, a row and
        its trimming for each, where a sample costs a twentieth of that and spans ten seconds."""
        second, count = self.logged.get(project_id, (0, 0))
        count = count + 1 if second == int(now) else 1
        self.logged[project_id] = (int(now), count)
        return count <= ENVELOPE_LOG_RATE

    def used(self, key: tuple[int | None, str], window: int) -> int:
        counted = self.windows.get(key)
        return counted[1] if counted and counted[0] == window else 0

    def drop(self, project_id: int, now: float, reason: str, category: str, quantity: int) -> None:
        self.dropped[(project_id, minute_of(now), reason[:64], category[:32])] += quantity

    def client_report(self, project_id: int, report: dict[str, Any], now: float) -> None:
        """An SDK's own drop counts (`discarded_events`: reason, category, quantity)."""
        for entry in report.get("discarded_events") or []:
            quantity = entry.get("quantity") if isinstance(entry, dict) else None
            if isinstance(quantity, int) and not isinstance(quantity, bool) and 0 < quantity < 10**9:
                self.drop(project_id, now, f"client:{text(entry.get('reason'), 64)}",
                          text(entry.get("category"), 32) or "error", quantity)


class DropFlusher(Background):
    """Writes the drop counts IngestLimits gathers, every few seconds and once more at shutdown."""

    EVERY = 5.0

    def __init__(self, app: Tracker) -> None:
        self.app = app

    async def run(self) -> None:
        while True:
            await asyncio.sleep(self.EVERY)
            await self.flush()

    async def close(self) -> None:
        await super().close()
        await self.flush()

    async def flush(self) -> None:
        limits = self.app.limits
        if limits.dropped:
            counts, limits.dropped = limits.dropped, collections.Counter()
            await self.app.writer.submit(lambda conn: conn.executemany(
                "INSERT INTO dropped (project_id, minute, reason, category, quantity) VALUES (?, ?, ?, ?, ?) "
                "ON CONFLICT DO UPDATE SET quantity = quantity + excluded.quantity",
                [(*key, n) for key, n in counts.items()]))


# =============================================================================
# Processing: normalisation, display fields, source maps, grouping
# =============================================================================

# -- preparing events in worker processes -------------------------------------------------------------
#
# Parsing, normalising, scrubbing, grouping and compressing an event is most of ingest's Python work.
# With more than one core, worker processes (`tracker prepare-worker`, started by the server) do it,
# so this process keeps HTTP and the writer: there is still one writer, and a 200 still follows the
# commit. The events that reach take_event in one turn of the event loop go to a worker as one
# batch (one pickle, one pipe write). Until a worker is up, or after one dies, events are prepared
# in this process: nothing waits on a worker that is not there, and nothing it held is lost.
# Transactions, log and span items go the same way (a job of their kind, ITEM_PREPARERS): a traced
# service sends them beside its errors, and their parsing on the event loop cost the errors more.

class Preparers:
    """The worker processes (`[server] ingest_workers`; by default one per core, at most four, and
    none on one core) and the batch of jobs gathering for the next send."""

    SHARE_FROM = 8  # jobs a batch must hold per worker it is shared among

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.workers: list[PrepareWorker] = []
        self.batch: list[tuple[PrepareJob, asyncio.Future[PreparedEvent]]] = []
        self.starting: asyncio.Task[None] | None = None
        self.closing = False
        self.restarted = -math.inf  # when a lost worker was last replaced (monotonic)

    def start(self) -> None:
        count, cores = self.settings.ingest_workers, os.cpu_count() or 1
        if count < 0:  # as many as cores: this process mostly waits on the writer and the network
            count = min(4, cores) if cores > 1 else 0
        if count > 0:
            self.starting = asyncio.get_running_loop().create_task(self.spawn(count))

    async def spawn(self, count: int) -> None:
        """Start the processes (each imports this file, a fraction of a second); events are prepared
        here meanwhile."""
        for _ in range(count):
            try:
                _, worker = await asyncio.get_running_loop().subprocess_exec(
                    lambda: PrepareWorker(self.lost, float(self.settings.worker_timeout)),
                    sys.executable, "-c", WORKER_BOOT, os.path.abspath(__file__), "--db", self.settings.db,
                    "prepare-worker", stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE, stderr=None)
            except OSError:
                log.exception("could not start an event worker process; events are prepared in the server")
                return
            if worker.alive:  # one that died at once has been told of (Preparers.lost) already
                self.workers.append(worker)

    def lost(self, worker: PrepareWorker) -> None:
        """A worker ended (killed, out of memory): another is started, at most one a minute so that a
        crash loop cannot take the machine; meanwhile the others, or this process, prepare events."""
        if worker in self.workers:
            self.workers.remove(worker)
        if self.closing:
            return
        log.warning("an event worker process ended")
        if time.monotonic() - self.restarted >= 60:
            self.restarted = time.monotonic()
            self.starting = asyncio.get_running_loop().create_task(self.spawn(1))

    async def prepare(self, job: PrepareJob) -> Any:  # PreparedEvent, or a PreparedItem for an item of ITEM_PREPARERS
        if not any(worker.alive for worker in self.workers):
            return prepare_job(job)
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self.batch.append((job, future))
        if len(self.batch) == 1:
            asyncio.get_running_loop().call_soon(self.send)
        return await future

    def send(self) -> None:
        """The jobs of this loop turn, to the workers with the fewest batches waiting: a few jobs to one
        of them (each batch costs a pipe write, a read and a wake-up on both sides; under load the
        next turn's jobs go to another), a larger batch shared out so that they work on it side by side."""
        batch, self.batch = self.batch, []
        alive = sorted((worker for worker in self.workers if worker.alive), key=lambda worker: len(worker.waiting))
        if not alive:
            return settle_here(batch)
        parts = min(len(alive), -(-len(batch) // self.SHARE_FROM))
        for index, worker in enumerate(alive[:parts]):
            worker.send(batch[index::parts])

    async def close(self) -> None:
        self.closing = True
        if self.starting:
            await asyncio.gather(self.starting, return_exceptions=True)
        await asyncio.gather(*(worker.close() for worker in list(self.workers)))


# A worker imports this file as a module, from its bytecode cache when there is one (pip writes it
# at install): run as a script it would be compiled afresh, 0.15 s and 35 MB that stay allocated.
WORKER_BOOT = ("import importlib.util, sys; spec = importlib.util.spec_from_file_location('tracker', sys.argv[1]); "
               "module = sys.modules['tracker'] = importlib.util.module_from_spec(spec); "
               "spec.loader.exec_module(module); module.main(sys.argv[2:])")


class PrepareWorker(asyncio.SubprocessProtocol):
    """One worker process, seen from the server: batches sent, answered in order. One that answers
    nothing and uses no CPU for `timeout` seconds while it has batches (stopped, swapped out, stuck)
    is given up; one that is busy (a batch of hostile 1 MiB events takes seconds to scrub) is left to
    finish, since taking its batch back would put that work on the event loop. Its answers are read
    as the pipe gives them, by the process's protocol (this object): no stream buffers them and no
    task wakes to decode them (a stream and its task were 8% of the event loop's samples under a
    transaction load)."""

    def __init__(self, ended: Callable[[PrepareWorker], None], timeout: float) -> None:
        self.ended, self.timeout = ended, timeout
        self.waiting: collections.deque[list[tuple[PrepareJob, asyncio.Future[PreparedEvent]]]] = collections.deque()
        self.alive, self.gone = True, False  # given work; ended (Preparers told)
        self.progress = 0.0  # when it last answered, used CPU, or was sent work while idle (monotonic)
        self.cpu: float | None = None
        self.watchdog: asyncio.TimerHandle | None = None
        self.rest = bytearray()  # the start of an answer the pipe has not given whole yet
        self.wanted = 0  # the length that answer needs, its 4-byte header with it (4 until that is in)
        self.over: asyncio.Future[None] = asyncio.get_running_loop().create_future()  # done when it is gone

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport: asyncio.SubprocessTransport = transport  # type: ignore[assignment]
        self.stdin: asyncio.WriteTransport = self.transport.get_pipe_transport(0)  # type: ignore[assignment]
        self.cpu = cpu_seconds(self.transport.get_pid())

    def send(self, batch: list[tuple[PrepareJob, asyncio.Future[PreparedEvent]]]) -> None:
        try:
            self.stdin.write(frame(marshal.dumps([fields_of(job) for job, _ in batch])))
        except (RuntimeError, ConnectionError):  # it died, its pipe is closed, end() is yet to run
            return settle_here(batch)
        if not self.waiting:
            self.progress = time.monotonic()
        self.waiting.append(batch)
        if self.watchdog is None:
            self.watchdog = asyncio.get_running_loop().call_later(self.timeout, self.watch)

    def watch(self) -> None:
        """While batches wait: after `timeout` seconds without an answer, prepare them here and kill the
        worker (SIGSTOP once held its requests for 15 s); Preparers.lost replaces it. What it may still
        have answered is ignored: each event is prepared, and stored, once."""
        self.watchdog = None
        if not self.waiting or not self.alive:
            return
        cpu = cpu_seconds(self.transport.get_pid())
        if cpu is not None and self.cpu is not None and cpu > self.cpu:  # working, not stuck
            self.cpu, self.progress = cpu, time.monotonic()
        idle = time.monotonic() - self.progress
        if idle < self.timeout:
            self.watchdog = asyncio.get_running_loop().call_later(self.timeout - idle, self.watch)
            return
        log.warning("an event worker answered nothing for %.1f s: its events are prepared here, it is replaced", idle)
        self.alive = False
        for batch in self.waiting:
            settle_here(batch)
        self.waiting.clear()
        with contextlib.suppress(ProcessLookupError):  # it ended meanwhile
            self.transport.kill()

    def pipe_data_received(self, fd: int, data: bytes) -> None:
        """The worker's answers, in order: each whole frame in what the pipe gave decoded in place; the
        start of a frame cut short kept until the rest of it is in."""
        if self.rest:
            self.rest += data
            if len(self.rest) < self.wanted:
                return
            data, self.rest = bytes(self.rest), bytearray()
        start = 0
        try:
            with memoryview(data) as view:
                while len(view) - start >= 4:
                    size = int.from_bytes(view[start:start + 4], "little")
                    if len(view) - start - 4 < size:
                        break
                    self.settle(marshal.loads(view[start + 4:start + 4 + size]))
                    start += 4 + size
        except (ValueError, EOFError, IndexError, TypeError):  # garbled, or an answer to nothing: it is given up
            with contextlib.suppress(ProcessLookupError):
                self.transport.kill()
            return self.end()
        if start < len(data):
            self.rest = bytearray(data[start:])
            self.wanted = 4 + int.from_bytes(self.rest[:4], "little") if len(self.rest) >= 4 else 4

    def settle(self, results: list[Any]) -> None:
        """An answer: each job of the oldest batch waiting, its outcome into its future."""
        self.progress = time.monotonic()
        for (job, future), (outcome, *result) in zip(self.waiting.popleft(), results):
            if future.done():
                continue
            if outcome == "ok" and job.kind in ITEM_PREPARERS:
                future.set_result(PreparedItem(*result[0]))
            elif outcome == "ok":
                PAYLOADS.count_plain()
                future.set_result(PreparedEvent(*result[0]))
            else:
                future.set_exception(IngestError(*result) if outcome == "refused" else RuntimeError(*result))

    def pipe_connection_lost(self, fd: int, exc: Exception | None) -> None:
        if fd == 1:  # its answers end: it exited, or was killed
            self.end()

    def process_exited(self) -> None:
        self.end()

    def end(self) -> None:
        """The worker is gone: what it held is prepared here (an accepted event is never dropped), and
        Preparers is told, once."""
        self.alive = False
        for batch in self.waiting:
            settle_here(batch)
        self.waiting.clear()
        if not self.gone:
            self.gone = True
            self.over.set_result(None)
            self.ended(self)
            self.transport.close()

    async def close(self) -> None:
        """Its stdin closed, it ends once its batches are answered; after 5 s it is killed."""
        self.stdin.close()
        try:
            await asyncio.wait_for(asyncio.shield(self.over), 5)
        except asyncio.TimeoutError:
            with contextlib.suppress(ProcessLookupError):
                self.transport.kill()
        self.transport.close()


def frame(data: bytes) -> bytes:
    return len(data).to_bytes(4, "little") + data


# Frames between the server and a worker are marshal (the fields of jobs and prepared events are
# plain values; it reads twice as fast as pickle); the pipe is private to the two processes.
def fields_of(record: PrepareJob | PreparedEvent) -> tuple[Any, ...]:
    return tuple(vars(record).values())


def cpu_seconds(pid: int) -> float | None:
    """CPU time a process has used (user + system, from /proc; None where there is no /proc)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_bytes().rpartition(b")")[2].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


CLOCK_TICKS = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def settle_here(batch: list[tuple[PrepareJob, asyncio.Future[PreparedEvent]]]) -> None:
    """Prepare a batch in this process, each event's outcome into its future."""
    for job, future in batch:
        if future.done():
            continue
        try:
            future.set_result(prepare_job(job))
        except Exception as exc:
            future.set_exception(exc)


def prepare_job(job: PrepareJob) -> PreparedEvent | PreparedItem:
    """The work of one event (or a transaction, span or log item), the same in a worker and in the server."""
    if job.kind in ITEM_PREPARERS:
        return ITEM_PREPARERS[job.kind](job.payload, job.project_id, job.received, parsed_scrub_policy(job.scrub))
    return prepare_event(json_object(job.payload, "event payload"), project_id=job.project_id,
                         event_id=job.event_id, received=job.received, client_ip=job.client_ip,
                         rules=grouping_rules_of(job.stacktrace_rules, job.fingerprint_rules, job.secondary_until),
                         scrub=parsed_scrub_policy(job.scrub), maps=SOURCE_MAPS)


def prepare_event(raw: dict[str, Any], *, project_id: int, event_id: str | None, received: float,
                  client_ip: str = "", rules: GroupingRules, scrub: ScrubPolicy,
                  maps: SourceMaps | None = None) -> PreparedEvent:
    """Everything ingest does before the writer, in the request's task (the project's grouping
    rules and scrubbing policy come parsed from the caches; the database is read only for the
    source maps of JavaScript frames)."""
    ev = normalize_event(raw, event_id=event_id, received=received, client_ip=client_ip)
    if resolve_source_maps(ev, maps, project_id):  # before grouping: issues group on the code as written,
        apply_stack_rules(ev, BUILTIN_STACK_RULES)  # and the built-in rules judge its paths, not the bundle's
    scrub_event(ev, scrub)  # before grouping, titles, tags and the payload see the secrets
    apply_stack_rules(ev, rules.stack, "project")
    client_fingerprint = ev.get("fingerprint")
    rule = apply_fingerprint_rules(ev, rules.fingerprint)
    kind, title, culprit, metadata = display_fields(ev)
    if rule and rule.title:
        title = metadata["title"] = first_line(rule_title(rule, ev), 200)
    ev["title"], ev["culprit"], ev["metadata"], ev["type"] = title, culprit, metadata, kind
    ev["grouping"] = group_event(ev)
    if rule:
        ev["grouping"].update(fingerprint_rule=rule.text, client_fingerprint=client_fingerprint)
    hashes = ev["hashes"] = grouping_hashes(ev["grouping"])
    secondary = previous_grouping_hashes(ev, rules) if received < rules.secondary_until else []
    return PreparedEvent(project_id=project_id, event_id=ev["event_id"], timestamp=ev["timestamp"],
                         received=received, level=ev["level"], environment=ev["environment"],
                         release=ev.get("release", ""), kind=kind, title=title, culprit=culprit,
                         metadata=metadata, platform=ev["platform"], logger=ev.get("logger", ""),
                         hashes=hashes, tags=ev.get("tags", []), terms=search_terms(ev),
                         payload=compress_payload(ev), crash=crash_location(ev),
                         secondary_hashes=[h for h in secondary if h not in hashes])


@dataclasses.dataclass
class PreparedEvent:
    """An event ready for the writer: normalised, grouped, compressed."""

    project_id: int
    event_id: str
    timestamp: float
    received: float
    level: str
    environment: str
    release: str
    kind: str
    title: str
    culprit: str
    metadata: dict[str, Any]
    platform: str
    logger: str
    hashes: list[str]
    tags: list[list[str]]
    terms: list[tuple[str, str]]
    payload: bytes
    crash: str = ""  # `file:line in function` of the crash frame, for alerts
    secondary_hashes: list[str] = dataclasses.field(default_factory=list)  # the previous grouping's, to find an issue


@functools.lru_cache(maxsize=128)
def grouping_rules_of(stacktrace_text: str, fingerprint_text: str, secondary_until: float) -> GroupingRules:
    return stored_rules({"stacktrace_rules": stacktrace_text, "fingerprint_rules": fingerprint_text,
                         "secondary_until": secondary_until})


def run_prepare_worker(db: str) -> None:
    """A worker's loop: batches of PrepareJob in on stdin, a PreparedEvent or the exception for each
    out on stdout, until stdin closes (the server stopped, or died)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C stops the server, which then closes our stdin
    with contextlib.suppress(ImportError, AttributeError, OSError):  # Linux: a batch fits in one pipe write
        import fcntl
        for fd in (0, 1):
            fcntl.fcntl(fd, fcntl.F_SETPIPE_SZ, MIB)
    out = os.fdopen(os.dup(1), "wb")
    os.dup2(2, 1)  # a stray print cannot corrupt the frames
    conn = read_only(db)
    SOURCE_MAPS.open(db)
    settle_heap()
    while (data := read_frame(sys.stdin.buffer)) is not None:
        results: list[tuple[Any, ...]] = []
        for fields in marshal.loads(data):
            job = PrepareJob(*fields)
            if job.dict_id != PAYLOADS.current:
                if job.dict_id is not None and job.dict_id not in PAYLOADS.dicts:
                    PAYLOADS.load(conn)
                PAYLOADS.current = job.dict_id
            try:
                results.append(("ok", fields_of(prepare_job(job))))
            except IngestError as exc:
                results.append(("refused", exc.status, exc.detail))
            except Exception as exc:  # a bug: answered as it would be in the server (a 500), logged here
                log.exception("preparing an event failed")
                results.append(("failed", repr(exc)))
        out.write(frame(marshal.dumps(results)))
        out.flush()
        if len(data) > 64 * KIB and MALLOC_TRIM:  # as the server does after a large body: transaction, span
            MALLOC_TRIM(0)  # and log items of up to max_event come here, and glibc would keep their pages


def read_frame(stream: Any) -> bytes | None:
    """A `<u32 length><bytes>` frame from a blocking binary stream; None at its end."""
    head = stream.read(4)
    if len(head) < 4:
        return None
    return stream.read(int.from_bytes(head, "little"))


@dataclasses.dataclass
class PrepareJob:
    """One event payload and what prepare_event needs besides; rules and policy as their texts,
    parsed once per text in each process (grouping_rules_of, parsed_scrub_policy)."""

    payload: bytes
    project_id: int
    event_id: str | None
    received: float
    client_ip: str
    stacktrace_rules: str
    fingerprint_rules: str
    scrub: str  # scrub_option_text
    dict_id: int | None  # the payload dictionary the server compresses with
    secondary_until: float = 0.0  # GroupingRules.secondary_until
    kind: str = "event"  # or an item type of ITEM_PREPARERS (Traces and logs), prepared as events are


# -- normalisation: every SDK's shapes made one; the fields pages show ----------------------------

def normalize_event(raw: dict[str, Any], *, event_id: str | None, received: float, client_ip: str) -> dict[str, Any]:
    """The event in one canonical shape, as Sentry stores it, whatever form the SDK sent."""
    ev = dict(raw)
    ev["event_id"] = event_id or normalize_id(raw.get("event_id")) or uuid.uuid4().hex
    timestamp = parse_timestamp(raw.get("timestamp"))
    errors = [e for e in raw.get("errors") or [] if isinstance(e, dict)] if isinstance(raw.get("errors"), list) else []
    if timestamp is None or timestamp > received + MAX_FUTURE or timestamp < received - MAX_PAST:
        if raw.get("timestamp") is not None:
            errors.append({"type": "clock_drift", "name": "timestamp", "value": text(raw.get("timestamp"))})
        timestamp = received
    ev["timestamp"] = timestamp
    ev["received"] = received
    ev["level"] = normalize_level(raw.get("level"))
    ev["platform"] = text(raw.get("platform"), 64) or "other"
    for key in ("logger", "transaction", "server_name", "release", "dist", "culprit"):
        ev[key] = text(raw.get(key), 256) or None
    ev["environment"] = text(raw.get("environment"), 64) or "production"
    ev["logentry"] = normalize_logentry(raw)
    ev.pop("message", None)
    ev["exception"] = {"values": [normalize_exception(e) for e in as_values(raw.get("exception"))]}
    ev["threads"] = {"values": [{**t, "stacktrace": normalize_frames(t.get("stacktrace"))}
                                for t in as_values(raw.get("threads"))]}
    ev["stacktrace"] = normalize_frames(raw.get("stacktrace"))
    ev["breadcrumbs"] = {"values": as_values(raw.get("breadcrumbs"))}
    ev["request"] = normalize_request(raw.get("request"))
    ev["user"] = normalize_user(raw.get("user"), client_ip)
    ev["contexts"] = {str(k): v for k, v in as_dict(raw.get("contexts")).items() if isinstance(v, dict)}
    ev["extra"] = as_dict(raw.get("extra"))
    ev["sdk"] = as_dict(raw.get("sdk"))
    ev["fingerprint"] = [text(f, 512) for f in raw["fingerprint"]] if isinstance(raw.get("fingerprint"), list) else None
    ev["errors"] = errors  # only the dicts of a client's list: the pages and source maps add to it
    user_agent = next((v for k, v in (ev["request"] or {}).get("headers", []) if k.lower() == "user-agent"), "")
    if "browser" not in ev["contexts"] and user_agent:
        browser = browser_from_user_agent(user_agent)
        if browser:
            ev["contexts"]["browser"] = browser
    if "os" not in ev["contexts"] and user_agent:
        system = os_from_user_agent(user_agent)
        if system:
            ev["contexts"]["os"] = system
    tags = normalize_tags(raw.get("tags"))
    ev["tags"] = tags + derived_tags(ev, {key for key, _ in tags})
    apply_stack_rules(ev, BUILTIN_STACK_RULES)
    # not None, {}, [] or {"values": []} (a falsy value of another type stays: 0, "", false)
    return {k: v for k, v in ev.items() if v is not None and (v or type(v) not in (dict, list)) and v != NO_VALUES}


NO_VALUES: dict[str, list[Any]] = {"values": []}


def parse_timestamp(value: Any) -> float | None:
    """Epoch seconds (int/float/numeric string) or RFC 3339 → epoch float."""
    if type(value) is str and value[-1:] == "Z":  # RFC 3339 in UTC, as SDKs write a span's times (ten a
        try:  # transaction): Python reads the Z itself since 3.11
            return dt.datetime.fromisoformat(value).timestamp()
        except ValueError:
            pass
    if isinstance(value, bool):
        return None
    if isinstance(value, (int, float)):
        return float(value) if value == value and abs(value) < 1e11 else None
    if isinstance(value, str):
        if ":" not in value:  # RFC 3339 has colons and a number never: float()'s exception is skipped
            try:
                return parse_timestamp(float(value))  # "nan" and "inf" parse as floats too
            except ValueError:
                pass
        try:
            parsed = dt.datetime.fromisoformat(value.strip().replace("Z", "+00:00").replace("z", "+00:00"))
        except ValueError:
            return None
        if parsed.tzinfo is None:
            parsed = parsed.replace(tzinfo=dt.timezone.utc)
        return parsed.timestamp()
    return None


MAX_FUTURE = 60

MAX_PAST = 30 * 86400


def text(value: Any, limit: int = 8192) -> str:
    """Any JSON value as a display string (None → "")."""
    if value is None:
        return ""
    if not isinstance(value, str):
        value = json.dumps(value, ensure_ascii=False) if isinstance(value, (dict, list)) else str(value)
    return value[:limit]


def normalize_level(value: Any) -> str:
    level = text(value).strip().lower()
    level = LEVEL_ALIASES.get(level, level)
    return level if level in LEVELS else "error"


LEVEL_ALIASES = {"warn": "warning", "critical": "fatal", "log": "info", "trace": "debug"}

LEVELS = ("debug", "info", "warning", "error", "fatal")


def normalize_logentry(event: dict[str, Any]) -> dict[str, Any] | None:
    """`message` (string or legacy object) and `logentry` → one {message, formatted, params}."""
    entry = event.get("logentry")
    message = event.get("message")
    if not isinstance(entry, dict):
        entry = message if isinstance(message, dict) else {}
    template = text(entry.get("message"))
    formatted = text(entry.get("formatted"))
    params = entry.get("params") if isinstance(entry.get("params"), (list, dict)) else None
    if isinstance(message, str) and not template and not formatted:
        formatted = message[:8192]
    if not template and not formatted:
        return None
    if not formatted:
        formatted = format_params(template, params)
    out: dict[str, Any] = {"formatted": formatted}
    if template:
        out["message"] = template
    if params:
        out["params"] = params
    return out


def format_params(template: str, params: Any) -> str:
    """Apply %-style params the way the logging module would; leave the template on mismatch.

    Huge or `*` widths are not applied: "%999999999s" would build a gigabyte string.
    """
    if BIG_FORMAT_FIELD.search(template):
        return template
    try:
        if isinstance(params, dict):
            return (template % params)[:8192]
        if isinstance(params, list) and params:
            return (template % tuple(params))[:8192]
    except (TypeError, ValueError, KeyError, OverflowError):  # OverflowError: "%c" of 10**10
        pass
    return template


BIG_FORMAT_FIELD = re.compile(r"%(?:\([^)]*\))?[-#0 +]*(?:\*|\d{4,}|\d*\.(?:\*|\d{4,}))")


def normalize_exception(exc: dict[str, Any]) -> dict[str, Any]:
    out = dict(exc)
    for key in ("type", "value", "module"):
        out[key] = text(exc.get(key)) if exc.get(key) is not None else None
    out["mechanism"] = as_dict(exc.get("mechanism")) or None
    out["stacktrace"] = normalize_frames(exc.get("stacktrace"))
    return out


def as_dict(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def normalize_frames(stacktrace: Any) -> dict[str, Any] | None:
    """A stack trace with dict frames (oldest first) and a definite `in_app` on each (a missing
    `in_app` means not app; the built-in stack trace rules then correct the SDK's choice)."""
    stacktrace = as_dict(stacktrace)
    frames = [normalize_frame(f) for f in as_list(stacktrace.get("frames")) if isinstance(f, dict)]
    return {**stacktrace, "frames": frames} if frames else None


def normalize_frame(raw: dict[str, Any]) -> dict[str, Any]:
    """One frame with the types the dashboard and grouping rely on (strings, int line numbers)."""
    frame = dict(raw)
    for key in ("filename", "abs_path", "module", "function", "raw_function", "package", "context_line", "platform"):
        value = raw.get(key)
        frame[key] = value if value is None else value[:1024] if type(value) is str else text(value, 1024)
    for key in ("lineno", "colno"):
        value = raw.get(key)
        frame[key] = value if isinstance(value, int) and not isinstance(value, bool) else None
    for key in ("pre_context", "post_context"):
        frame[key] = [line[:1024] if type(line) is str else text(line, 1024) for line in as_list(raw.get(key))] or None
    frame["vars"] = as_dict(raw.get("vars")) or None
    data = raw.get("data")
    frame["data"] = {k: v for k, v in data.items() if k not in RULE_MARKS} or None if isinstance(data, dict) else None
    frame["in_app"] = raw.get("in_app") is True
    return {k: v for k, v in frame.items() if v is not None}


def as_list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else []


def numbered_context(frame: dict[str, Any]) -> list[tuple[int | None, Any, bool]]:
    """A frame's source around the line, as the issue page and the API's `context` pairs show it:
    (line number or None without `lineno`, text, whether it is the frame's line)."""
    if frame.get("context_line") is None:
        return []
    lineno = frame.get("lineno") if isinstance(frame.get("lineno"), int) else None
    pre = as_list(frame.get("pre_context"))
    lines = [*pre, frame["context_line"], *as_list(frame.get("post_context"))]
    return [(None if lineno is None else lineno - len(pre) + n, line, n == len(pre)) for n, line in enumerate(lines)]


def as_values(value: Any) -> list[dict[str, Any]]:
    """Sentry's `Values<T>`: {"values": [...]}, a bare list, or one object → list of dicts."""
    if isinstance(value, dict):
        value = value.get("values", [value] if value else [])
    if not isinstance(value, list):
        return []
    return [v for v in value if isinstance(v, dict)]


def normalize_request(request: Any) -> dict[str, Any] | None:
    request = dict(as_dict(request))
    if not request:
        return None
    request["env"] = as_dict(request.get("env")) or None
    headers = request.get("headers")
    if isinstance(headers, dict):
        headers = list(headers.items())
    request["headers"] = [[text(h[0]), text(h[1])] for h in (headers if isinstance(headers, list) else [])
                          if isinstance(h, (list, tuple)) and len(h) == 2]  # not a list: e.g. "headers": 5
    url = text(request.get("url"))
    if "#" in url:
        url, _, fragment = url.partition("#")
        request.setdefault("fragment", fragment)
    if "?" in url:
        url, _, query = url.partition("?")
        request.setdefault("query_string", query)
    request["url"] = url
    query = request.get("query_string")
    if isinstance(query, str):
        query = urllib.parse.parse_qsl(query.lstrip("?"), keep_blank_values=True)
    elif isinstance(query, dict):
        query = list(query.items())
    request["query_string"] = [[text(q[0]), text(q[1])] for q in (query if isinstance(query, list) else [])
                               if isinstance(q, (list, tuple)) and len(q) == 2]
    return request


def normalize_user(user: Any, ip: str) -> dict[str, Any] | None:
    user = dict(as_dict(user))
    if user.get("ip_address") == "{{auto}}":
        user["ip_address"] = ip or None
    for key in ("id", "email", "username", "ip_address", "name"):
        if user.get(key) is not None:
            user[key] = text(user[key], 256)
    return {k: v for k, v in user.items() if v not in (None, "")} or None


def browser_from_user_agent(agent: str) -> dict[str, str] | None:
    for name, pattern in (("Edge", r"Edg/([\d.]+)"), ("Firefox", r"Firefox/([\d.]+)"),
                          ("Chrome", r"(?:Chrome|Chromium|HeadlessChrome)/([\d.]+)"),
                          ("Safari", r"Version/([\d.]+).*Safari")):
        match = re.search(pattern, agent)
        if match:
            return {"name": name, "version": match.group(1), "type": "browser"}
    return None


def os_from_user_agent(agent: str) -> dict[str, str] | None:
    """The operating system a browser's User-Agent names (Relay's names), as contexts.os."""
    for name, pattern in (("Windows", r"Windows NT ([\d.]+)"), ("Android", r"Android ([\d.]+)"),
                          ("iOS", r"(?:iPhone|iPad|CPU) OS ([\d_]+)"), ("Mac OS X", r"Mac OS X ([\d_.]+)"),
                          ("Chrome OS", r"CrOS \S+ ([\d.]+)"), ("Linux", r"Linux()")):
        match = re.search(pattern, agent)
        if match:
            version = match.group(1).replace("_", ".")
            return {"name": name, "version": version, "type": "os"} if version else {"name": name, "type": "os"}
    return None


def normalize_tags(value: Any) -> list[list[str]]:
    """Tags as a dict or a list of pairs → list of [key, value] strings, Relay's 200-char cut."""
    pairs = value.items() if isinstance(value, dict) else value if isinstance(value, list) else []
    out: dict[str, str] = {}
    for pair in pairs:
        if isinstance(pair, (list, tuple)) and len(pair) == 2 and pair[0] not in (None, "") and pair[1] is not None:
            out[text(pair[0], MAX_TAG)] = text(pair[1], MAX_TAG)
    return [[k, v] for k, v in out.items()]


MAX_TAG = 200


def derived_tags(ev: dict[str, Any], present: set[str]) -> list[list[str]]:
    """The tags Sentry adds to every event, unless the SDK already set them (`present`)."""
    contexts = ev["contexts"]
    primary = (ev["exception"]["values"] or [{}])[-1]
    mechanism = as_dict(primary.get("mechanism"))
    candidates = {
        "level": ev["level"], "environment": ev["environment"], "release": ev.get("release"),
        "server_name": ev.get("server_name"), "transaction": ev.get("transaction"), "logger": ev.get("logger"),
        "user": user_key(ev.get("user")),
        "handled": ("no" if mechanism.get("handled") is False else "yes") if mechanism else None,
        "mechanism": mechanism.get("type"),
        "runtime": context_name(contexts, "runtime"), "os": context_name(contexts, "os"),
        "browser": context_name(contexts, "browser"),
        "url": (ev.get("request") or {}).get("url"),
        "trace": text(contexts["trace"].get("trace_id")) if "trace" in contexts else "",
    }
    return [[k, text(v, MAX_TAG)] for k, v in candidates.items() if v and k not in present]


def context_name(contexts: dict[str, dict[str, Any]], kind: str) -> str:
    """`name version` of a context (the runtime, os or browser tag)."""
    context = contexts.get(kind)
    return " ".join(filter(None, (text(context.get("name")), text(context.get("version"))))) if context else ""


def user_key(user: dict[str, Any] | None) -> str | None:
    """Sentry's `user` tag: the most specific identity the event carries."""
    user = user or {}
    for field, prefix in (("id", "id"), ("email", "email"), ("username", "username"), ("ip_address", "ip")):
        if user.get(field):
            return f"{prefix}:{user[field]}"
    return None


def display_fields(ev: dict[str, Any]) -> tuple[str, str, str, dict[str, Any]]:
    """(type, title, culprit, metadata) as Sentry derives them."""
    frame = crash_frame(primary_frames(ev)) or {}
    culprit = ev.get("transaction") or ev.get("culprit") or frame_location(frame)
    excs = grouping_exceptions(ev)
    if excs:
        exc = excs[-1]
        kind, value = exc.get("type") or "", (exc.get("value") or "")
        title = f"{kind}: {value}" if kind and value else kind or value or "<unlabeled event>"
        metadata = {"type": kind, "value": value, "filename": text(frame.get("filename")),
                    "function": text(frame.get("function"))}
        return "error", first_line(title, 200), culprit, metadata
    title = first_line(message_text(ev), 100) or "<unlabeled event>"
    return "default", title, culprit, {"title": title, "value": message_text(ev)[:1024]}


def crash_frame(frames: list[dict[str, Any]]) -> dict[str, Any] | None:
    """The newest in-app frame, or the newest frame when none is in app."""
    return next((f for f in reversed(frames) if f.get("in_app")), frames[-1] if frames else None)


def primary_frames(ev: dict[str, Any]) -> list[dict[str, Any]]:
    """Frames of the thrown exception, else of the crashed thread, else of the event."""
    for exc in reversed(grouping_exceptions(ev)):
        if exc.get("stacktrace"):
            return exc["stacktrace"]["frames"]
    thread = crashed_thread(ev)
    if thread:
        return thread["stacktrace"]["frames"]
    return (ev.get("stacktrace") or {}).get("frames", [])


def frame_location(frame: dict[str, Any]) -> str:
    """`module in function`, the way culprits and the grouping explanation name a frame."""
    return " in ".join(filter(None, (text(frame.get("module") or frame.get("filename")), text(frame.get("function")))))


def first_line(value: str, limit: int) -> str:
    line = next((ln for ln in value.splitlines() if ln.strip()), "").strip()
    return line if len(line) <= limit else line[:limit - 1] + "…"


def message_text(ev: dict[str, Any]) -> str:
    entry = ev.get("logentry") or {}
    return entry.get("formatted") or entry.get("message") or ""


# -- source maps: minified JavaScript frames read as the code that was written (sourcemaps.md §6) ----
#
# A step of its own between normalisation and scrubbing, so grouping sees the original files,
# lines and functions: a new deploy with new minified names keeps its issues. Each frame of a
# browser or Node event whose file has an uploaded map (by the debug id in `debug_meta`, else by
# release, dist and URL) is rewritten; the minified frames stay as `raw_stacktrace`; a frame that
# cannot be resolved keeps what was sent and the event says why in `errors` (Sentry's types). The
# maps are read from the database in the process preparing the event (a worker, off the writer and
# the event loop), parsed by our own decoder (below) and kept parsed in a cache of bounded size.

def resolve_source_maps(ev: dict[str, Any], maps: SourceMaps | None, project_id: int) -> bool:
    """Rewrite the event's JavaScript frames through their source maps, in place; True when a frame
    was rewritten."""
    if maps is None or maps.conn is None or ev.get("platform") not in ("javascript", "node"):
        return False
    images = {text(i.get("code_file")): text(i.get("debug_id")).lower()
              for i in as_list(as_dict(ev.get("debug_meta")).get("images"))
              if isinstance(i, dict) and i.get("type") == "sourcemap" and i.get("code_file") and i.get("debug_id")}
    if not images and not maps.project_has_files(project_id):  # no maps meant, none uploaded: nothing to say
        return False
    rewritten = False
    maps.found.clear()
    errors: dict[tuple[str, str], dict[str, Any]] = {}
    holders = [e for e in ev.get("exception", {}).get("values", []) if e.get("stacktrace")]
    holders += [t for t in ev.get("threads", {}).get("values", []) if t.get("stacktrace")]
    for holder in holders:
        frames = holder["stacktrace"]["frames"]
        resolved, caller_name = [], None  # oldest first: a frame's name is at its caller's call site
        for frame in frames:
            new, caller_name = resolve_frame(frame, caller_name, maps, project_id, images, ev, errors)
            resolved.append(new)
        if any(new is not frame for new, frame in zip(resolved, frames)):
            holder["raw_stacktrace"] = {"frames": frames}
            holder["stacktrace"] = {**holder["stacktrace"], "frames": resolved}
            rewritten = True
    if errors:
        ev["errors"] = [*ev.get("errors", []), *errors.values()]
    return rewritten


def resolve_frame(frame: dict[str, Any], name: str | None, maps: SourceMaps, project_id: int, images: dict[str, str],
                  ev: dict[str, Any], errors: dict[tuple[str, str], dict[str, Any]]) -> tuple[dict[str, Any], str | None]:
    """The frame as written (a new dict), or the same frame when it has no map (the reason in
    `errors`); and the original name of what it calls (the token at its position). Its own function
    is the one around its line in the original source, else `name`, the token at its caller's call
    site (a map has no scopes), else the minified one."""
    path = frame.get("abs_path") or frame.get("filename") or ""
    line, column = frame.get("lineno"), frame.get("colno")
    if not is_mappable(path, ev.get("platform", "")) or not line or not column or line < 1 or column < 1:
        return frame, None
    found = maps.find(project_id, path, images.get(path), ev.get("release") or "", ev.get("dist") or "")
    if isinstance(found, str):
        if found != "js_no_source" or path in images or re.search(r"\.[cm]?js$", urllib.parse.urlsplit(path).path) \
                and "/node_modules/" not in path:  # a page's inline script or a library's file was never mapped
            errors.setdefault((found, path), {"type": found, "url": path})
        return frame, None
    source_map, map_url, how = found
    token = source_map.lookup(line - 1, column - 1)
    if token is None:
        errors.setdefault(("js_invalid_sourcemap_location", path), {
            "type": "js_invalid_sourcemap_location", "column": column, "row": line, "source": path})
        return frame, None
    source_index, src_line, src_column, callee = token
    source = source_map.source_names[source_index]
    new = {**frame, "abs_path": join_url(map_url, source), "filename": source_filename(source), "lineno": src_line + 1,
           "colno": src_column + 1,
           "function": source_map.enclosing_function(source_index, src_line) or name or frame.get("function"),
           "in_app": not NOT_APP_SOURCE.search(source),
           "data": {**{k: v for k, v in frame.get("data", {}).items() if k not in RULE_MARKS or k == "sdk_in_app"},
                    "sourcemap": map_url, "symbolicated": True, "resolved_with": how}}  # rules judge it anew
    new.pop("module", None)
    context = source_map.context(source_index, src_line)
    if context is None:
        errors.setdefault(("js_missing_sources_content", source), {
            "type": "js_missing_sources_content", "source": source, "sourcemap": map_url})
        for key in ("pre_context", "context_line", "post_context"):
            new.pop(key, None)
    else:
        new["pre_context"], new["context_line"], new["post_context"] = context
    return new, callee


# Original files that are never the app's: packages, and the bundlers' own runtime code.
NOT_APP_SOURCE = re.compile(r"(^|/)node_modules/|^webpack/(bootstrap|runtime)|\(webpack\)|webpack/runtime/|"
                            r"(^|/)@vite/|(^|/)vite/(dist/client|modulepreload-polyfill)|^\x00|^rolldown:runtime")


def is_mappable(path: str, platform: str) -> bool:
    """A file a map may exist for: a URL or, for Node, an absolute, `app:` or `webpack:` path."""
    if not path or path.startswith(("native", "[native code]", "<anonymous>")):
        return False
    if platform == "node":
        return path.startswith(("/", "app:", "webpack:"))
    return bool(re.match(r"(https?|file|app|webpack):|~/|/", path))


def join_url(base: str, source: str) -> str:
    """A map's source joined onto the map's URL (`~/` counts as absolute; webpack: kept)."""
    if re.match(r"[a-z][a-z0-9+.-]*:", source) or not base:
        return source
    if base.startswith("~/"):  # `~` is any host: joined as one, then given back its `~`
        return "~/" + urllib.parse.urljoin("http://~/" + base[2:], source).removeprefix("http://~/")
    return urllib.parse.urljoin(base, source)


def source_filename(source: str) -> str:
    """What the page shows for an original file: webpack's prefix off, a URL's path alone."""
    source = re.sub(r"^webpack://[^/]*/", "", source)
    parts = urllib.parse.urlsplit(source)
    return parts.path if parts.scheme in ("http", "https", "file") else source


def event_error(error: dict[str, Any]) -> dict[str, Any]:
    """An `errors` entry as Sentry's API shows it (and the issue page): type, title, the rest as data."""
    kind = text(error.get("type"))
    return {"type": kind, "message": EVENT_ERROR_TITLES.get(kind, kind.replace("_", " ")),
            "data": {k: v for k, v in error.items() if k != "type"}}


EVENT_ERROR_TITLES = {  # Sentry's titles for the processing errors the tracker records
    "clock_drift": "Clock drift detected in SDK",
    "js_no_source": "Source code was not found",
    "js_invalid_source": "Sourcemap was invalid or not parseable",
    "js_too_large": "Sourcemap was too large",
    "js_missing_sources_content": "Missing Sources Context",
    "js_invalid_sourcemap_location": "Invalid location in sourcemap",
}


class SourceMaps:
    """The uploaded files of this process's database, and parsed maps in a cache of bounded size
    (least recently used out first). A map that cannot be used (invalid, or larger parsed than the
    whole cache) is remembered as such: events naming it, which anyone with the DSN can send, cost
    a lookup, not a parse."""

    BUDGET = 64 * MIB  # parsed maps kept per process (a worker or the server)
    RECHECK = 10.0  # seconds a project's "no uploaded files" answer is trusted

    def __init__(self) -> None:
        self.conn: sqlite3.Connection | None = None
        self.cache: collections.OrderedDict[int, SourceMap] = collections.OrderedDict()
        self.cached = 0
        self.empty: dict[int, float] = {}  # project → when it was last seen with no files (monotonic)
        self.found: dict[tuple[Any, ...], tuple[SourceMap, str, str] | str] = {}  # this event's answers by file
        self.failed: dict[int, str] = {}  # file id → the error type (stored files never change)

    def open(self, db: str) -> None:
        self.conn = read_only(db)
        self.conn.row_factory = sqlite3.Row

    def project_has_files(self, project_id: int) -> bool:
        if self.conn is None or time.monotonic() - self.empty.get(project_id, -math.inf) < self.RECHECK:
            return False
        if self.conn.execute("SELECT 1 FROM artifact_files WHERE project_id = ? LIMIT 1", (project_id,)).fetchone():
            self.empty.pop(project_id, None)
            return True
        self.empty[project_id] = time.monotonic()
        return False

    def find(self, project_id: int, path: str, debug_id: str | None, release: str,
             dist: str) -> tuple[SourceMap, str, str] | str:
        """(map, its URL, how it was found) for a minified file, or the error type saying why not;
        asked once per file of an event (`found` is emptied for each)."""
        key = (project_id, path, debug_id, release, dist)
        if key not in self.found:
            self.found[key] = self.lookup(project_id, path, debug_id, release, dist)
        return self.found[key]

    def lookup(self, project_id: int, path: str, debug_id: str | None, release: str,
               dist: str) -> tuple[SourceMap, str, str] | str:
        assert self.conn is not None
        row, how = None, "debug-id"
        if debug_id:
            row = self.conn.execute("SELECT id, url FROM artifact_files WHERE project_id = ? AND debug_id = ? "
                                    "AND type = 'source_map' ORDER BY id DESC LIMIT 1",
                                    (project_id, debug_id)).fetchone()
        if row is None and release:
            row, how = self.by_url(project_id, path, release, dist), "release"
        if row is None:
            return "js_no_source"
        parsed = self.parsed(row["id"])
        return parsed if isinstance(parsed, str) else (parsed, row["url"], how)

    def by_url(self, project_id: int, path: str, release: str, dist: str) -> sqlite3.Row | None:
        """The map of a release's minified file: its Sourcemap header, else its sourceMappingURL
        comment, else the file's URL + `.map` (sourcemaps.md §4.2)."""
        assert self.conn is not None
        for url in url_candidates(path):
            minified = self.conn.execute(
                "SELECT id, url, headers FROM artifact_files WHERE project_id = ? AND release = ? AND dist = ? "
                "AND url = ? AND type != 'source_map' ORDER BY id DESC LIMIT 1", (project_id, release, dist, url)).fetchone()
            if minified is None:
                continue
            target = self.map_reference(minified)
            if target.startswith("data:"):
                return None
            map_url = join_url(url, target) if target else url + ".map"
            return self.conn.execute(
                "SELECT id, url FROM artifact_files WHERE project_id = ? AND release = ? AND dist = ? "
                "AND url = ? ORDER BY id DESC LIMIT 1", (project_id, release, dist, map_url)).fetchone()
        return None

    def map_reference(self, minified: sqlite3.Row) -> str:
        """A minified file's `Sourcemap` (or `X-SourceMap`) header, else its last sourceMappingURL comment."""
        headers = {k.lower(): v for k, v in json.loads(minified["headers"] or "{}").items()}
        if headers.get("sourcemap") or headers.get("x-sourcemap"):
            return str(headers.get("sourcemap") or headers.get("x-sourcemap"))
        tail = self.file_bytes(minified["id"])[-4096:].decode("utf-8", "replace")
        found = re.findall(r"//[#@]\s*sourceMappingURL=(\S+)", tail)
        return found[-1] if found else ""

    def file_bytes(self, file_id: int) -> bytes:
        assert self.conn is not None
        data = self.conn.execute("SELECT data FROM artifact_files WHERE id = ?", (file_id,)).fetchone()[0]
        return zstandard.ZstdDecompressor().decompress(data)

    def parsed(self, file_id: int) -> SourceMap | str:
        """The map of a stored file, from the cache or read and parsed; else the error type."""
        if file_id in self.cache:
            self.cache.move_to_end(file_id)
            return self.cache[file_id]
        if file_id in self.failed:
            return self.failed[file_id]
        try:
            parsed = parse_source_map(self.file_bytes(file_id))
            if parsed.cost > self.BUDGET:
                raise SourceMapTooLarge(f"{parsed.cost} bytes parsed")
        except SourceMapError as exc:
            if len(self.failed) > 10_000:
                self.failed.clear()
            self.failed[file_id] = "js_too_large" if isinstance(exc, SourceMapTooLarge) else "js_invalid_source"
            return self.failed[file_id]
        self.cache[file_id] = parsed
        self.cached += parsed.cost
        while self.cached > self.BUDGET:
            self.cached -= self.cache.popitem(last=False)[1].cost
        return parsed


SOURCE_MAPS = SourceMaps()  # this process's: opened by the server and by each event worker


def url_candidates(path: str) -> list[str]:
    """The release-file URLs a frame's file may have been uploaded as, best first: the URL with and
    without its query, then `~` + its path with and without it (`~` is any scheme and host)."""
    parts = urllib.parse.urlsplit(path)
    if parts.scheme in ("http", "https", "file", "app"):
        full = urllib.parse.urlunsplit(parts._replace(fragment=""))
        bare = urllib.parse.urlunsplit(parts._replace(query="", fragment=""))
        tilde = "~" + (parts.path if parts.path.startswith("/") else "/" + parts.path)
        query = f"?{parts.query}" if parts.query else ""
        return list(dict.fromkeys([full, bare, tilde + query, tilde]))
    return [path, "~" + path] if path.startswith("/") else [path]


class SourceMapError(ValueError):
    pass


class SourceMapTooLarge(SourceMapError):
    pass


MAX_MAP_SEGMENTS = 2_000_000  # 48 MB of arrays: a map with more is not parsed (js_too_large)


BASE64_DIGITS = {c: i for i, c in enumerate("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/")}


@dataclasses.dataclass
class SourceMap:
    """A source map (ECMA-426) as sorted arrays: segment i maps generated (line, column) `keys[i]`
    (line << 32 | column, 0-based) to `sources[i]` (-1: maps to nothing), `lines[i]`, `columns[i]`
    and the name `names[i]` (-1: none). Index maps arrive flattened."""

    keys: array.array[int]
    sources: array.array[int]
    lines: array.array[int]
    columns: array.array[int]
    names: array.array[int]
    source_names: list[str]
    contents: list[str | None]
    identifiers: list[str]
    cost: int  # bytes it holds, about
    split: dict[int, list[str]] = dataclasses.field(default_factory=dict)

    def lookup(self, line: int, column: int) -> tuple[int, int, int, str | None] | None:
        """(original file's index, 0-based line, 0-based column, token name) of the greatest mapping
        at or before this generated position on its line; None where nothing maps."""
        index = bisect.bisect_right(self.keys, line << 32 | column) - 1
        if index < 0 or self.keys[index] >> 32 != line or self.sources[index] < 0:
            return None
        name = self.identifiers[self.names[index]] if 0 <= self.names[index] < len(self.identifiers) else None
        return self.sources[index], self.lines[index], self.columns[index], name

    def context(self, source: int, line: int) -> tuple[list[str], str, list[str]] | None:
        """Five lines before, the line and five after from `sourcesContent` (long lines cut around
        their start, as a frame shows them); None when the map carries no content for this file."""
        lines = self.source_lines(source)
        if lines is None or line >= len(lines):
            return None
        cut = [text[:140] + " {snip}" if len(text) > 150 else text for text in lines[max(line - 5, 0):line + 6]]
        here = min(line, 5)
        return cut[:here], cut[here], cut[here + 1:]

    def source_lines(self, source: int) -> list[str] | None:
        if source not in self.split:
            content = self.contents[source]
            if content is None:
                return None
            self.split[source] = content.splitlines()
        return self.split[source]

    def enclosing_function(self, source: int, line: int) -> str | None:
        """The name of the function whose body holds this original line: the nearest definition on
        it or above it that is indented less (a map has no scopes; the source has, as people indent)."""
        lines = self.source_lines(source)
        if not lines or line >= len(lines):
            return None
        limit = math.inf  # a definition holding the line is indented less than what it holds
        for number in range(line, max(line - 300, -1), -1):
            stripped = lines[number].lstrip()
            depth = len(lines[number]) - len(stripped)
            if not stripped or depth >= limit:
                continue
            found = FUNCTION_DEFINITION.search(lines[number][:300])
            name = found and (found["name"] or found["method"] or found["bound"])
            if name and name not in ("if", "for", "while", "switch", "catch", "return", "function"):
                return name
            limit = depth
        return None


# `function name(`, `name(…) {` (a method), `name = (…) =>`, `name: function` and their async forms
FUNCTION_DEFINITION = re.compile(
    r"function\s*\*?\s*(?P<name>[\w$]+)\s*\(|^\s*(?:static\s+|async\s+|get\s+|set\s+)*(?P<method>[\w$]+)\s*\([^)]{0,200}\)\s*\{"
    r"|(?P<bound>[\w$]+)\s*[:=]\s*(?:async\s+)?(?:function\b|\([^)]{0,200}\)\s*=>|[\w$]+\s*=>)")


def parse_source_map(data: bytes) -> SourceMap:
    """A map from its JSON (a plain map or an index map of plain maps); SourceMapError if it is not one."""
    try:
        doc = json.loads(data)
    except (ValueError, UnicodeDecodeError) as exc:
        raise SourceMapError(f"not JSON: {exc}") from None
    if not isinstance(doc, dict) or doc.get("version") != 3:
        raise SourceMapError("not a version 3 source map")
    parts = SourceMapParts()
    if isinstance(doc.get("sections"), list):
        for section in doc["sections"]:
            offset = as_dict(as_dict(section).get("offset"))
            line, column = offset.get("line", 0), offset.get("column", 0)
            if not isinstance(line, int) or not isinstance(column, int) or not isinstance(section.get("map"), dict):
                raise SourceMapError("an index map section without an offset or a map")
            parts.add(section["map"], line, column)
    else:
        parts.add(doc, 0, 0)
    return parts.done(len(data))


class SourceMapParts:
    """The arrays of a map being decoded, one plain map (or index map section) after another."""

    def __init__(self) -> None:
        self.keys, self.sources, self.lines, self.columns, self.names = (
            array.array("q"), array.array("i"), array.array("i"), array.array("i"), array.array("i"))
        self.source_names: list[str] = []
        self.contents: list[str | None] = []
        self.identifiers: list[str] = []
        self.unsorted = False  # a segment left of the one before it, or sections out of order

    def add(self, doc: dict[str, Any], line_offset: int, column_offset: int) -> None:
        sources, names, mappings = doc.get("sources"), doc.get("names", []), doc.get("mappings")
        contents = doc.get("sourcesContent") or []
        if not isinstance(sources, list) or not isinstance(names, list) or not isinstance(mappings, str) \
                or not isinstance(contents, list):
            raise SourceMapError("sources, names or mappings missing or of the wrong type")
        root = doc.get("sourceRoot") if isinstance(doc.get("sourceRoot"), str) else ""
        source_base, name_base = len(self.source_names), len(self.identifiers)
        self.source_names += [join_source(root, s if isinstance(s, str) else "") for s in sources]
        self.contents += [contents[i] if i < len(contents) and isinstance(contents[i], str) else None
                          for i in range(len(sources))]
        self.identifiers += [n if isinstance(n, str) else "" for n in names]
        self.decode(mappings, line_offset, column_offset, source_base, len(sources), name_base, len(names))

    def decode(self, mappings: str, line: int, first_column: int, source_base: int, source_count: int,
               name_base: int, name_count: int) -> None:
        """The `mappings` VLQ string: `;` ends a generated line, `,` a segment of 1, 4 or 5 Base64
        VLQ deltas (column, source, original line, original column, name); only the column resets
        at a new line. Split in C, each distinct segment decoded once (minified code repeats them)."""
        if len(self.keys) + mappings.count(",") + mappings.count(";") > MAX_MAP_SEGMENTS:
            raise SourceMapTooLarge(f"more than {MAX_MAP_SEGMENTS} mappings")
        keys, sources, lines, columns, names = self.keys, self.sources, self.lines, self.columns, self.names
        memo: dict[str, tuple[int, ...]] = {}
        self.unsorted |= bool(keys) and keys[-1] > (line << 32 | first_column)
        source = original_line = original_column = name = 0
        for number, text in enumerate(mappings.split(";"), start=line):
            column, column_offset = 0, first_column if number == line else 0
            for segment in text.split(",") if text else ():
                fields = memo.get(segment)
                if fields is None:
                    fields = memo[segment] = vlq_fields(segment)
                column += fields[0]
                if column < 0:
                    raise SourceMapError("a mapping with a negative column")
                if fields[0] < 0:
                    self.unsorted = True
                keys.append(number << 32 | (column + column_offset))
                if len(fields) == 1:
                    sources.append(-1)
                    lines.append(0)
                    columns.append(0)
                    names.append(-1)
                    continue
                source += fields[1]
                original_line += fields[2]
                original_column += fields[3]
                if not 0 <= source < source_count or original_line < 0 or original_column < 0:
                    raise SourceMapError("a mapping points outside the map")
                sources.append(source_base + source)
                lines.append(original_line)
                columns.append(original_column)
                if len(fields) == 5:
                    name += fields[4]
                    if not 0 <= name < name_count:
                        raise SourceMapError("a mapping names no name of the map")
                    names.append(name_base + name)
                else:
                    names.append(-1)


    def done(self, size: int) -> SourceMap:
        if self.unsorted:  # rare (the spec wants sorted segments): put them in order for bisect
            order = sorted(range(len(self.keys)), key=self.keys.__getitem__)
            for values in (self.keys, self.sources, self.lines, self.columns, self.names):
                values[:] = array.array(values.typecode, [values[i] for i in order])
        cost = 24 * len(self.keys) + sum(len(c) for c in self.contents if c) + size // 4
        return SourceMap(self.keys, self.sources, self.lines, self.columns, self.names, self.source_names,
                         self.contents, self.identifiers, cost)


def vlq_fields(segment: str) -> tuple[int, ...]:
    """One segment's Base64 VLQ values: each digit carries 5 bits, least significant first, and
    bit 5 says another follows; bit 0 of the value is its sign."""
    fields: list[int] = []
    value = shift = 0
    for char in segment:
        digit = BASE64_DIGITS.get(char)
        if digit is None:
            raise SourceMapError(f"{char!r} is not a Base64 digit")
        value += (digit & 31) << shift
        if digit & 32:
            shift += 5
            if shift > 60:
                raise SourceMapError("a VLQ value too large")
            continue
        fields.append(-(value >> 1) if value & 1 else value >> 1)
        value = shift = 0
    if shift or len(fields) not in (1, 4, 5):
        raise SourceMapError(f"a mapping segment of {len(fields)} fields" if not shift else "a VLQ value ends in the middle")
    return tuple(fields)


def join_source(root: str, source: str) -> str:
    """A source as the frame names it: the map's sourceRoot before it, unless it is a URL already."""
    if not root or re.match(r"[a-z][a-z0-9+.-]*:|/", source):
        return source
    return root.rstrip("/") + "/" + source


# -- scrubbing: secrets out of every event before it is grouped or stored (Sentry's server-side data scrubbing) --

def scrub_event(ev: dict[str, Any], policy: ScrubPolicy) -> int:
    """Filter the secrets out of a normalised event in place, before it is grouped, shown or stored
    (one walk); each filtered value is noted in `_meta`. Returns how many values were filtered."""
    scrubber = Scrubber(policy, ev["_meta"] if isinstance(ev.get("_meta"), dict) else {})
    # A small event is checked whole (most have nothing to filter); a large one, or one that may hold
    # a secret, part by part and its trail crumb by crumb, so that a large text is scanned once.
    raw = json_dumps({k: v for k, v in ev.items() if k not in UNSCRUBBED_FIELDS}) if policy.enabled else b""
    if policy.enabled and (len(raw) > 16 * KIB or policy.json_may_hold_secret(raw)):
        for key, value in ev.items():
            if key in UNSCRUBBED_FIELDS:
                continue
            if key == "breadcrumbs" and isinstance(value, dict) and isinstance(value.get("values"), list):
                if tests := policy.hints(json_dumps(value)):
                    scrubber.section(ev, key, functools.partial(scrubber.crumbs, tests=tests), whole=True)
            elif isinstance(value, (dict, list)) and not policy.may_hold_secret(value):
                continue
            elif key == "request" and isinstance(value, dict):
                scrubber.section(ev, key, scrubber.request)
            elif key == "contexts" and isinstance(value, dict):
                scrubber.section(ev, key, scrubber.contexts)
            else:
                scrubber.entry(ev, key, key, value)
    if policy.scrub_ip:
        scrubber.remove_ips(ev)
    if scrubber.count:
        ev["_meta"] = scrubber.meta
    return scrubber.count


class Scrubber:
    """One walk over one event: filters in place and notes each change at its path in Sentry's `_meta`
    shape, `{"": {"rem": [[rule, "s", start, end]], "len": original length}}`."""

    def __init__(self, policy: ScrubPolicy, meta: dict[str, Any]) -> None:
        self.policy, self.meta, self.count = policy, meta, 0
        self.path: list[str] = []  # of the container being walked
        self.whole = False  # inside data (WHOLE_KEYS): a text naming a secret outside a pair's key goes whole
        self.rule_of = policy.key_rule  # policy.cookie_rule inside request.cookies
        # text → its secrets, for prose and for data: an event repeats its texts
        self.seen: tuple[dict[str, list[tuple[int, int, str]]], ...] = ({}, {})

    def walk(self, container: Any, skip: frozenset[str] = frozenset()) -> None:
        """Filter the secrets inside a dict or a list, in place; a dict's `skip` keys are left alone,
        and so is code (most of a stack trace). In a list, any [name, value] pair whose name is a
        secret key (headers, query strings, tags, an ASGI scope's `[b'authorization', b'Bearer …']`)
        has its value filtered; any other item is walked, both halves of a pair included."""
        if isinstance(container, dict):
            for key, value in container.items():
                if key not in skip and not (key in CODE_KEYS and is_code(value)):
                    self.entry(container, key, key, value)
        elif isinstance(container, list):
            for index, item in enumerate(container):
                if (isinstance(item, list) and len(item) == 2 and isinstance(item[0], str)
                        and self.rule_of(item[0]) is not None):
                    self.path.append(str(index))
                    self.entry(item, 1, item[0], item[1])
                    self.path.pop()
                else:
                    self.entry(container, index, None, item)

    def entry(self, container: Any, slot: str | int, key: str | None, value: Any) -> None:
        """container[slot], `value`, under `key` (None: no key, as in a list): filtered, left alone
        (a safe field) or walked. Nulls and booleans return at once: they are never secrets."""
        if value is None or value is True or value is False:
            return
        structure = not self.whole and key in EVENT_STRUCTURE and isinstance(value, (dict, list))
        rule = None if key is None or structure else self.rule_of(key)
        if rule is None:
            if isinstance(value, str):
                if len(value) > 2:
                    container[slot] = self.text(value, slot, self.whole or slot in WHOLE_KEYS)
            elif isinstance(value, (dict, list)):
                self.section(container, slot, self.walk, self.whole or slot in WHOLE_KEYS)
        elif rule and value not in ("", {}, [], FILTERED):
            self.note(slot, [[rule, "s", 0, len(FILTERED)]], len(value) if isinstance(value, str) else None)
            container[slot] = FILTERED

    def section(self, container: Any, key: str | int, walk: Callable[[Any], None], whole: bool = False) -> None:
        """container[key] walked by `walk`, as data (`whole`) or prose."""
        self.path.append(str(key))
        outer, self.whole = self.whole, whole
        walk(container[key])
        self.whole = outer
        self.path.pop()

    def crumbs(self, breadcrumbs: dict[str, Any], tests: tuple[Callable[[bytes], bool], ...]) -> None:
        """Breadcrumbs: their message and data are walked, not the SDK's words for them (type,
        category, level, timestamp; Sentry leaves those alone too), and only the crumbs whose JSON
        passes one of the byte `tests` the whole trail passed: a long trail costs less."""
        self.path.append("values")
        for index, crumb in enumerate(breadcrumbs["values"]):  # normalize_event made them dicts
            raw = json_dumps(crumb)
            if not any(test(raw) for test in tests):
                continue
            self.path.append(str(index))
            self.walk(crumb, CRUMB_FIELDS)
            self.path.pop()
        self.path.pop()

    def request(self, request: dict[str, Any]) -> None:
        """The request: `cookies` itself is no secret key, and a cookie's name is judged as Sentry does."""
        for key, value in request.items():
            if key == "cookies":
                self.rule_of = self.policy.cookie_rule
                self.entry(request, key, None, value)
                self.rule_of = self.policy.key_rule
            else:
                self.entry(request, key, key, value)

    def contexts(self, contexts: dict[str, Any]) -> None:
        """Contexts: the known kinds (app, os, device, trace…) are prose, the program's own are data."""
        for key, value in contexts.items():
            if isinstance(value, dict) and self.rule_of(key) is None:
                kind = value.get("type", key)
                self.section(contexts, key, self.walk, not (isinstance(kind, str) and kind in PROSE_CONTEXTS))
            else:
                self.entry(contexts, key, key, value)

    def text(self, value: str, slot: str | int, whole: bool) -> str:
        """`value` with the secrets inside it replaced (see secrets_in); overlapping finds are one span."""
        spans = self.seen[whole].get(value)
        if spans is None:
            spans = self.seen[whole][value] = self.secrets_in(value, whole)
        if not spans:
            return value
        merged: list[list[Any]] = []
        for start, end, rule in sorted(spans):
            if merged and start < merged[-1][1]:  # `card=4111…`, `token=Bearer x`: one span, to the last end
                merged[-1][1] = max(merged[-1][1], end)
            else:
                merged.append([start, end, rule])
        parts, remarks, last, size = [], [], 0, 0
        for start, end, rule in merged:
            parts += (value[last:start], FILTERED)
            size += start - last
            remarks.append([rule, "s", size, size + len(FILTERED)])
            size, last = size + len(FILTERED), end
        parts.append(value[last:])
        self.note(slot, remarks, len(value))
        return "".join(parts)

    def secrets_in(self, value: str, whole: bool) -> list[tuple[int, int, str]]:
        """Where a text's secrets are, as (start, end, rule): card numbers, IBANs, US SSNs, tokens
        (TOKENS), and the values of `key=value` and `"key": value` pairs whose key is secret; in data
        (`whole`), the whole text when it names a secret anywhere else. Byte tests first (a few C
        calls): the regexes run only on texts where they may find something, and most hold no secret."""
        raw = value.encode("utf-8", "surrogatepass")
        paired = "=" in value or (":" in value and ('"' in value or "'" in value))
        policy, spans = self.policy, []
        named = (paired or whole) and policy.may_name_secret(raw)
        if named and paired:
            pairs = [(match.span("jkey" if match.lastgroup == "json" else "key"), *pair_value(match))
                     for match in KEYS_IN_TEXT.finditer(value)]
            pairs = [(key_span, start, end, rule) for key_span, key, start, end in pairs
                     if (rule := self.rule_of(key)) is not None]
        else:
            pairs = []
        if whole and named and (found := self.unpaired_word(value, [key_span for key_span, *_ in pairs])):
            return [(0, len(value), found)]
        if policy.defaults and may_hold_number(raw):
            spans += [(*match.span(), rule) for match in NUMBERS.finditer(value) if (rule := number_rule(match))]
        if policy.defaults and may_hold_token(raw):
            spans += [span for match in TOKENS.finditer(value) if (span := token_span(match))]
        return spans + [(start, end, rule) for _, start, end, rule in pairs
                        if rule and value[start:end] not in ("", FILTERED)]

    def unpaired_word(self, value: str, keys: list[tuple[int, int]]) -> str | None:
        """The rule of a secret word (SECRET_WORDS, a listed field) in `value` that is not inside the
        key of a pair found there (`password=x` keeps its text, `my password is x` goes whole); None."""
        for words, rule in ((SECRET_WORDS if self.policy.defaults else None, "@password:filter"),
                            (self.policy.user_words, "strip-fields")):
            index = 0  # words and keys both come in order: one pass over each
            for word in words.finditer(value) if words else ():
                while index < len(keys) and keys[index][1] <= word.start():
                    index += 1
                if index == len(keys) or word.start() < keys[index][0]:
                    return rule
        return None

    def note(self, slot: str | int, remarks: list[list[Any]], length: int | None) -> None:
        """Record a change to container[slot] in `_meta` (next to what the SDK noted there)."""
        node = self.meta
        for part in (*self.path, str(slot)):
            if not isinstance(node.get(part), dict):
                node[part] = {}
            node = node[part]
        entry = node[""] = node[""] if isinstance(node.get(""), dict) else {}
        entry["rem"] = [*(entry["rem"] if isinstance(entry.get("rem"), list) else []), *remarks]
        if length is not None:
            entry["len"] = length
        self.count += 1

    def remove_ips(self, ev: dict[str, Any]) -> None:
        """scrubIPAddresses: the user's IP address and the request's REMOTE_ADDR are not stored at all."""
        for *parents, last in (("user", "ip_address"), ("request", "env", "REMOTE_ADDR")):
            node: Any = ev
            for part in parents:
                node = node.get(part) if isinstance(node, dict) else None
            if not isinstance(node, dict) or node.get(last) in (None, ""):
                continue
            address = node.pop(last)
            self.path[:] = parents
            self.note(last, [["@anything:remove", "x"]], len(address) if isinstance(address, str) else None)
            if last == "ip_address":  # nor the `user` tag made of it
                ev["tags"] = [tag for tag in ev.get("tags", []) if tag != ["user", f"ip:{address}"]]
        self.path.clear()


# Strings under these keys are code, not data (names, paths, source lines): Sentry leaves them alone too,
# and scanning them could only break grouping and source links.
CODE_KEYS = frozenset({"filename", "abs_path", "module", "function", "raw_function", "package", "platform",
                       "instruction_addr", "symbol_addr", "image_addr", "pre_context", "context_line", "post_context"})


# The event's own containers (outside data: WHOLE_KEYS): never filtered whole, only walked, so a
# project's sensitive field such as `trace` or `user` filters what they hold, as Relay's rules apply
# to values and not to the protocol's structure; filtered whole, the stack trace was "[Filtered]" and
# every event of the project failed to prepare (a 500).
EVENT_STRUCTURE = frozenset({"exception", "threads", "values", "stacktrace", "raw_stacktrace", "frames", "mechanism",
                             "breadcrumbs", "logentry", "user", "tags", "contexts", "request"})


def is_code(value: Any) -> bool:
    """A source line or name, or a list of source lines."""
    return isinstance(value, str) or (isinstance(value, list) and all(isinstance(line, str) for line in value))


# Data, not prose: a text under one of these keys (at any depth), in `extra`, in a breadcrumb or in a
# context of no known type is filtered whole when it names a secret anywhere but as a pair's key
# (Sentry's `@password` on values: "the password is hunter2"). Messages, exception values, names,
# tags and the known contexts keep their text; only their secrets' values, numbers and tokens go.
WHOLE_KEYS = frozenset({"vars", "data", "params", "headers", "query_string", "cookies", "env", "extra"})

FILTERED = "[Filtered]"

CRUMB_FIELDS = frozenset({"type", "category", "level", "timestamp", "event_id"})

PROSE_CONTEXTS = frozenset({"app", "os", "runtime", "device", "browser", "gpu", "culture", "trace", "response",
                            "cloud_resource", "otel"})


class Memo:
    """Answers remembered by their question (a key, or a frame's fields), up to `budget`: then it
    starts afresh, so that a stream of made-up keys or frames (a hostile client's) costs at most
    about that many bytes. Events repeat their keys and their issue's frames."""

    def __init__(self, budget: int = 512 * KIB) -> None:
        self.answers: dict[Any, Any] = {}
        self.budget, self.spent = budget, 0

    def answer(self, question: Any, work: Callable[[], Any]) -> Any:
        """The remembered answer, else work()'s, kept; a question weighs its characters and 256 bytes
        (about what its tuple, its strings' headers and the answer take besides)."""
        try:
            return self.answers[question]
        except KeyError:
            pass
        weight = 256 + (len(question) if isinstance(question, str)
                       else sum(len(part) for part in question if isinstance(part, str)))
        if self.spent + weight > self.budget:
            self.answers.clear()
            self.spent = 0
        answer = self.answers[question] = work()
        self.spent += weight
        return answer


@dataclasses.dataclass(frozen=True)
class ScrubPolicy:
    """A project's `scrub` option, parsed once per change (see scrub_policy): which values ingest filters."""

    enabled: bool = True
    defaults: bool = True
    sensitive_fields: tuple[str, ...] = ()
    safe_fields: tuple[str, ...] = ()
    scrub_ip: bool = False
    default_keys: re.Pattern[str] | None = dataclasses.field(init=False, repr=False, compare=False)
    user_keys: re.Pattern[str] | None = dataclasses.field(init=False, repr=False, compare=False)
    user_words: re.Pattern[str] | None = dataclasses.field(init=False, repr=False, compare=False)
    safe: frozenset[str] = dataclasses.field(init=False, repr=False, compare=False)
    verdicts: Memo = dataclasses.field(default_factory=Memo, init=False, repr=False, compare=False)
    needles: tuple[bytes, ...] = dataclasses.field(init=False, repr=False, compare=False)
    tests: tuple[Callable[[bytes], bool], ...] = dataclasses.field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "default_keys", key_pattern(SECRET_KEYS) if self.defaults else None)
        object.__setattr__(self, "user_keys", key_pattern(self.sensitive_fields))
        # Relay's `strip-fields`: a listed field inside a value counts as it is written, in any case
        words = "|".join(map(re.escape, self.sensitive_fields))
        object.__setattr__(self, "user_words", re.compile(words, re.IGNORECASE) if words else None)
        object.__setattr__(self, "safe", frozenset({*ALWAYS_SAFE, *(normal_key(key) for key in self.safe_fields)}))
        keys = sorted({normal_key(key).encode() for key in (*(KEY_NEEDLES if self.defaults else ()),
                                                             *self.sensitive_fields)} - {b""})
        exact = [f'"{key}"'.encode() for key in sorted(EXACT_SECRET_KEYS)] if self.defaults else []
        object.__setattr__(self, "needles", (*keys, *exact))
        object.__setattr__(self, "tests", (self.may_name_secret, *((may_hold_number, may_hold_token)
                                                                    if self.defaults else ())))

    def may_hold_secret(self, value: Any) -> bool:
        """Whether a part of an event may hold anything to filter, judged on its JSON at C's speed:
        a secret key or a secret-looking number shows in the serialised text too. Most parts of
        most events show neither, and their walk is skipped."""
        return self.json_may_hold_secret(json_dumps(value))

    def json_may_hold_secret(self, raw: bytes) -> bool:
        return any(test(raw) for test in self.tests)

    def hints(self, raw: bytes) -> tuple[Callable[[bytes], bool], ...]:
        """The byte tests a text passes: a breadcrumb trail's, so that each crumb only takes those
        (a trail of hex ids passes the number test only, and its crumbs then take just that one)."""
        return tuple(test for test in self.tests if test(raw))

    def may_name_secret(self, raw: bytes) -> bool:
        """Whether a text (UTF-8) may hold a secret key: a normalised key is a piece of the normalised
        text. Only ASCII is folded as `str.lower` folds it, so any other text may."""
        if not self.needles:
            return False
        if not raw.isascii():
            return True
        folded = raw.translate(ASCII_LOWER, b"-_. ")  # lower case and no separators, in one pass
        return any(map(folded.count, self.needles))  # a scan each beats one regex alternation; count and find,
        # not `in`: a bytes `in` first tries its operand as a byte value, making and dropping a TypeError

    def key_rule(self, key: str) -> str | None:
        """The rule that filters the value under `key`; SAFE for a safe field (its value is left
        alone, all of it); None for any other key (its value is walked). Remembered: events repeat keys."""
        return self.verdicts.answer(key, lambda: self.judge_key(normal_key(key)))

    def judge_key(self, name: str) -> str | None:
        return SAFE if name in self.safe else (
            "@password:filter" if self.default_keys and (self.default_keys.search(name) or name in EXACT_SECRET_KEYS)
            else "strip-fields" if self.user_keys and self.user_keys.search(name) else None)

    def cookie_rule(self, name: str) -> str | None:
        """key_rule for a cookie's name, which also knows Sentry's session cookies (`session`, `symfony`…)."""
        rule = self.key_rule(name)
        if rule is None and self.defaults and normal_key(name) in SESSION_COOKIES:
            return "@anything:filter"
        return rule

    def as_option(self) -> dict[str, Any]:
        """The policy as the stored `scrub` option."""
        return {"enabled": self.enabled, "defaults": self.defaults, "sensitive_fields": list(self.sensitive_fields),
                "safe_fields": list(self.safe_fields), "scrub_ip": self.scrub_ip}

    def api_fields(self) -> dict[str, Any]:
        """The policy under Sentry's project field names."""
        option = self.as_option()
        return {api_name: option[name] for api_name, name in SCRUB_API_FIELDS.items()}


ASCII_LOWER = bytes.maketrans(b"ABCDEFGHIJKLMNOPQRSTUVWXYZ", b"abcdefghijklmnopqrstuvwxyz")


def key_pattern(keys: Iterable[str]) -> re.Pattern[str] | None:
    """One regex that finds any of the (normalised) keys inside a normalised key; None for none."""
    unique = sorted({normal_key(key) for key in keys} - {""})
    return re.compile("|".join(map(re.escape, unique))) if unique else None


def normal_key(key: str) -> str:
    """A key as the scrubbing compares it: `X-Api-Key`, `api_key` and `apiKey` are all `apikey`, and
    so is the repr of a bytes or str key in a frame's vars (`b'x-api-key'`, as an ASGI scope's headers)."""
    if len(key) > 2 and key[-1] in "'\"" and (key[0] == key[-1] or (key[0] == "b" and key[1] == key[-1])):
        key = key[1 + (key[0] == "b"):-1]
    return key.lower().translate(KEY_NOISE)


KEY_NOISE = str.maketrans("", "", "-_. ")

# Keys whose values are secrets, as substrings of the normalised key (lower case, no - _ . or space):
# Sentry's `@password` words first (`apikey` matches X-Api-Key and api_key, `auth` the Authorization
# header), then the tracker's own: cookies, session ids and CSRF tokens (the SDK's own denylist has
# them), card security codes and `bearer`. Not `session` alone: `session:duration` is no secret.
SECRET_KEYS = ("password", "passwd", "mysqlpwd", "secret", "token", "apikey", "auth", "credential", "privatekey",
               "cookie", "sessionid", "sessid", "csrf", "xsrf", "cvv", "cvc", "bearer")

ALWAYS_SAFE = frozenset({"useragent"})  # as in Sentry: a browser's name is no secret, and "Bearer" may be in it

# What the byte test looks for (ScrubPolicy.may_name_secret): a piece of each of SECRET_KEYS, and
# no more pieces than needed (each is one scan of the text: 13 scan a 50 KB trail faster than 17).
KEY_NEEDLES = ("pass", "secret", "token", "apikey", "auth", "credential", "mysqlpwd", "privatekey", "cookie",
               "sess", "srf", "cv", "bearer")

EXACT_SECRET_KEYS = frozenset({"otp", "twofactor"})  # Sentry's whole-key words


def may_hold_number(raw: bytes) -> bool:
    """Whether a text (UTF-8) may hold a card number, an IBAN or a US SSN (see NUMBER_MASK); the regex decides."""
    if len(raw) < 11:
        return False
    masked = raw.translate(NUMBER_MASK)
    return masked.find(b"0000") >= 0 and any(masked.find(shape) >= 0 for shape in NUMBER_SHAPES)


NUMBER_SHAPES = (b"0000000000000", b"AA00", b"0000-0000-0000", b"0000-000000-0000", b"000-00-0000")


# A text's bytes with digits as 0, separators as -, capitals as A: a card number or an IBAN shows
# 0000 and one of 13 zeros, 0000-0000-0000, 0000-000000-0000 or AA00 there, and a US SSN 000-00-0000
# (found at C's speed), and only then does the regex run.
NUMBER_MASK = bytes.maketrans(b"0123456789 -ABCDEFGHIJKLMNOPQRSTUVWXYZ", b"0" * 10 + b"--" + b"A" * 26)


def may_hold_token(raw: bytes) -> bool:
    """Whether a text (UTF-8, or its JSON) may hold one of TOKENS' secrets, by finds at C's speed:
    `Bearer`/`Basic` in any case, a PEM header, a URL with a password (a regex, run only on a `://@`)."""
    lower = raw.lower()  # finds, not `in` (see may_name_secret)
    return (lower.find(b"bearer") >= 0 or lower.find(b"basic") >= 0 or raw.find(b"-----BEGIN") >= 0
            or (raw.find(b"://") >= 0 and raw.find(b"@") >= 0 and URL_AUTH_HINT.search(raw) is not None))


URL_AUTH_HINT = re.compile(rb"://[^\s:/@?#]{0,256}:[^\s/?#]{1,256}@")  # TOKENS' URL, in bytes and JSON

SAFE = ""  # ScrubPolicy.key_rule's answer for a safe field

# Cookie names Sentry filters in `request.cookies` (normalised) that SECRET_KEYS does not already match.
SESSION_COOKIES = frozenset({"sentrysid", "sudo", "su", "session", "usersession", "symfony", "mysession", "verceljwt"})

SCRUB_API_FIELDS = {"dataScrubber": "enabled", "dataScrubberDefaults": "defaults", "sensitiveFields": "sensitive_fields",
                    "safeFields": "safe_fields", "scrubIPAddresses": "scrub_ip"}


def pair_value(match: re.Match[str]) -> tuple[str, int, int]:
    """A KEYS_IN_TEXT match as (key, start, end) of its value, quotes left out."""
    key, group = ("jkey", "jval") if match.lastgroup == "json" else ("key", "val")
    start, end = match.span(group)
    quote = 1 if match.string[start] in "\"'" else 0
    return match[key], start + quote, end - quote


# `"key": value` (JSON, a Python dict's repr) and `key=value` (form bodies, query strings, cookies, log lines)
TEXT_PAIRS = (r"""(?P<json>(?P<q>["'])(?P<jkey>[^"'\\\n]{1,100})(?P=q)\s*:\s*"""
              r"""(?P<jval>"(?:[^"\\\n]|\\.)*"|'(?:[^'\\\n]|\\.)*'|-?\d[\d.eE+-]*))"""
              r"""|(?P<kv>(?<![^\s?&;,(\[{"'])(?P<key>[\w.\-\[\]%+]{1,100})=(?P<val>"[^"\n]*"|'[^'\n]*'|[^\s&;,#)\]}"']+))""")

KEYS_IN_TEXT = re.compile(TEXT_PAIRS, re.ASCII)

CARD = (r"(?P<card>(?<![\w.])(?:\d{13,19}|\d{4}(?P<sep>[ -])\d{4}(?P=sep)\d{4}(?P=sep)\d{4}(?:(?P=sep)\d{1,3})?"
        r"|\d{4}(?P<sep2>[ -])\d{6}(?P=sep2)\d{4,5})(?!\w|\.\d))")

IBAN = r"(?P<iban>(?<!\w)[A-Z]{2}\d{2}(?: ?[A-Z0-9]{4}){2,7}(?: ?[A-Z0-9]{1,3})?(?!\w))"

USSSN = r"(?P<usssn>\b\d{3}-\d{2}-\d{4}\b)"

NUMBERS = re.compile(f"{CARD}|{IBAN}|{USSSN}", re.ASCII)


def number_rule(match: re.Match[str]) -> str | None:
    """The rule for a NUMBERS match that checks out (a card's Luhn digit, an IBAN's mod 97), else None."""
    if match.lastgroup == "card":
        return "@creditcard:filter" if is_card_number(match[0].replace(" ", "").replace("-", "")) else None
    if match.lastgroup == "usssn":
        return "@usssn:filter"
    return "@iban:filter" if is_iban(match[0]) else None


def is_card_number(digits: str) -> bool:
    """A payment card number: a card network's prefix and length, and a right Luhn check digit
    (so an order number or a millisecond timestamp of 16 digits is left alone)."""
    size, head = len(digits), digits[:2]
    if digits[0] == "4":
        fits = size in (13, 16, 19)
    elif head in ("34", "37"):
        fits = size == 15
    elif "51" <= head <= "55" or "2221" <= digits[:4] <= "2720":
        fits = size == 16
    else:
        fits = (head in ("30", "35", "36", "38", "39") or digits[0] == "6") and 14 <= size <= 19
    total = 0
    for position, digit in enumerate(reversed(digits)):
        doubled = int(digit) * (2 if position % 2 else 1)
        total += doubled - 9 if doubled > 9 else doubled
    return fits and total % 10 == 0


def is_iban(candidate: str) -> bool:
    """An IBAN: its country's length and the mod-97 check digits (ISO 13616)."""
    code = candidate.replace(" ", "")
    if IBAN_LENGTHS.get(code[:2]) != len(code):
        return False
    return int("".join(str(int(char, 36)) for char in code[4:] + code[:4])) % 97 == 1


IBAN_LENGTHS = {entry[:2]: int(entry[2:]) for entry in (  # ISO 13616's registry: country → length
    "AD24 AE23 AL28 AT20 AZ28 BA20 BE16 BG22 BH22 BI27 BR29 BY28 CH21 CR22 CY28 CZ24 DE22 DJ27 DK18 DO28 EE20 EG29 "
    "ES24 FI18 FK18 FO18 FR27 GB22 GE22 GI23 GL18 GR27 GT28 HN28 HR21 HU28 IE22 IL23 IQ23 IS26 IT27 JO30 KW30 KZ20 "
    "LB28 LC32 LI21 LT20 LU20 LV21 LY25 MC27 MD24 ME22 MK19 MN20 MR27 MT31 MU30 NI28 NL18 NO15 OM23 PK24 PL28 PS29 "
    "PT25 QA29 RO24 RS22 RU33 SA24 SC31 SD18 SE24 SI19 SK24 SM27 SO23 ST25 SV28 TL23 TN24 TR26 UA29 VA22 VG24 XK20 "
    "YE30").split()}

# Secrets known by their shape, of which only the secret part goes (Relay's `@common` value rules):
# `Bearer <token>`; an HTTP Basic credential (base64 of `user:password`, checked in basic_credential);
# a PEM key's body (its BEGIN/END lines stay; the body cannot hold `-----`, so a scan stays linear);
# a URL's password, up to the last `@` of the authority and with an empty user too (`redis://:pw@`).
# Every repetition is bounded: a hostile text costs at most a few hundred steps per candidate.
TOKENS = re.compile(
    r"(?P<bearer>\b(?i:bearer)\s+\S+)"
    r"|(?P<basic>\b(?i:basic)\s+(?P<b64>[A-Za-z0-9+/]{4,1024}={0,2})(?![\w+/=]))"
    r"|-----BEGIN[A-Z ]{0,40} (?:PRIVATE|PUBLIC) KEY-----\s*(?P<pemkey>(?:[^-]|-(?!----))+?)\s*-----END[A-Z ]{0,40} KEY-----"
    r"|\b[A-Za-z][A-Za-z0-9+.-]{0,30}://[^\s:/@?#]{0,256}:(?P<urlauth>[^\s/?#]{1,256})@", re.ASCII)


def token_span(match: re.Match[str]) -> tuple[int, int, str] | None:
    """A TOKENS match as (start, end, rule) of its secret part; None for a `Basic` that is no credential."""
    group = match.lastgroup or ""
    if group == "basic" and not basic_credential(match["b64"]):
        return None
    return (*match.span(group), TOKEN_RULES[group])


def basic_credential(encoded: str) -> bool:
    """Whether the word after `Basic` is an HTTP Basic credential: base64 of printable `user:password`
    (so `Basic plan` or `basic auth` stays)."""
    try:
        decoded = base64.b64decode(encoded + "=" * (-len(encoded) % 4), validate=True)
    except ValueError:
        return False
    return b":" in decoded and decoded.isascii() and decoded.decode().isprintable()


TOKEN_RULES = {"bearer": "@bearer:filter", "basic": "@password:filter", "pemkey": "@pemkey:filter",
               "urlauth": "@urlauth:legacy"}

# Sentry's `@password` words as they count inside a value (`token` only as `token…=` or `token…:`).
SECRET_WORDS = re.compile(r"password|secret|passwd|api[-_]?key|auth|credentials|mysql_pwd|private[-_]?key"
                          r"|token[^\s:=]{0,50}[:=]", re.IGNORECASE)

# Top-level fields that are ids, enums or names the program chose (never user data): not walked.
UNSCRUBBED_FIELDS = frozenset({"event_id", "timestamp", "received", "level", "platform", "logger", "transaction",
                               "server_name", "release", "dist", "culprit", "environment", "fingerprint", "errors",
                               "sdk", "modules", "debug_meta", "_meta"})

DEFAULT_SCRUB = ScrubPolicy()


def scrub_policy(option: Any) -> ScrubPolicy:
    """The policy of a project's stored `scrub` option (absent or malformed parts: the defaults)."""
    return parsed_scrub_policy(scrub_option_text(option))


@functools.lru_cache(maxsize=128)
def parsed_scrub_policy(option_json: str) -> ScrubPolicy:
    """Cached by the option's text: ingest asks once per request, its regexes compile once per change."""
    option = json.loads(option_json)
    flags = {name: option[name] for name in ("enabled", "defaults", "scrub_ip") if isinstance(option.get(name), bool)}
    keys = {name: tuple(key.strip() for key in option[name] if isinstance(key, str) and key.strip())
            for name in ("sensitive_fields", "safe_fields") if isinstance(option.get(name), list)}
    return ScrubPolicy(**flags, **keys)


def scrub_option_text(option: Any) -> str:
    """The `scrub` option as the text its parsed policy is cached under (and sent to a worker as)."""
    return json.dumps(option, sort_keys=True) if isinstance(option, dict) else "{}"


def changed_scrub_option(policy: ScrubPolicy, changes: dict[str, Any]) -> dict[str, Any]:
    """The `scrub` option to store: the policy's, with `changes` (option names) checked and applied."""
    option, api_names = policy.as_option(), {name: api_name for api_name, name in SCRUB_API_FIELDS.items()}
    for name, value in changes.items():
        if isinstance(option[name], bool) and not isinstance(value, bool):
            raise ScrubError(f"{api_names[name]} must be true or false")
        if isinstance(option[name], list):
            if not (isinstance(value, list) and len(value) <= MAX_SCRUB_FIELDS
                    and all(isinstance(key, str) and len(key) <= 200 for key in value)):
                raise ScrubError(f"{api_names[name]} must be a list of at most {MAX_SCRUB_FIELDS} field names "
                                 "(strings of at most 200 characters)")
            value = list(dict.fromkeys(key.strip() for key in value if key.strip()))
        option[name] = value
    return option


class ScrubError(ValueError):
    """A scrubbing setting of the wrong type (a 400 in the API, a message above the form)."""


MAX_SCRUB_FIELDS = 200


def scrubbed_paths(ev: dict[str, Any]) -> list[str]:
    """Where the server's scrubbing filtered a stored event, readable for its page: a pair list's
    index becomes the pair's name (`request.headers.Authorization`, not `request.headers.3.1`)."""
    found: list[str] = []

    def visit(meta: dict[str, Any], value: Any, names: list[str]) -> None:
        entry = as_dict(meta.get(""))
        if any(isinstance(r, list) and r and isinstance(r[0], str) and r[0] in SCRUB_RULES
               for r in as_list(entry.get("rem"))):
            found.append(".".join(names))
        for key, child in meta.items():
            if key == "" or not isinstance(child, dict):
                continue
            index = int(key) if key.isdecimal() and len(key) < 10 else -1
            item = (value[index] if isinstance(value, list) and 0 <= index < len(value)
                    else value.get(key) if isinstance(value, dict) else None)
            if (isinstance(value, list) and isinstance(item, list) and len(item) == 2 and isinstance(item[0], str)
                    and isinstance(child.get("1"), dict)):
                visit(child["1"], item[1], [*names, item[0]])
            else:
                visit(child, item, [*names, key])

    visit(as_dict(ev.get("_meta")), ev, [])
    return found


# The `_meta` rule ids this scrubbing writes (Relay's names): the ones the event page reports.
SCRUB_RULES = frozenset({"@password:filter", "@creditcard:filter", "@iban:filter", "@usssn:filter", "@bearer:filter",
                         "@pemkey:filter", "@urlauth:legacy", "@anything:filter", "strip-fields", "@anything:remove"})


def api_meta(ev: dict[str, Any], entries: list[dict[str, Any]], tag_positions: dict[int, int]) -> dict[str, Any]:
    """The stored `_meta` addressed as the event API shows the event, as Sentry's does: an
    interface's under `entries.<index>.data`, a tag's under `tags.<index>.value` (`tag_positions`: where
    each stored tag is in the API's sorted list)."""
    meta = as_dict(ev.get("_meta"))
    out = {key: meta[key] for key in ("user", "contexts", "extra", "sdk") if isinstance(meta.get(key), dict)}
    sources = [api_entry_meta(entry["type"], meta.get(API_ENTRY_SOURCES.get(entry["type"]))) for entry in entries]
    indexed = {str(index): {"data": source} for index, source in enumerate(sources) if isinstance(source, dict)}
    tags = {str(tag_positions.get(int(index), index)) if index.isdigit() else index: {"value": tag["1"]}
            for index, tag in as_dict(meta.get("tags")).items() if isinstance(tag, dict) and "1" in tag}
    if "extra" in out:
        out["context"] = out["extra"]  # the API shows `extra` under Sentry's name too
    return {**out, **({"entries": indexed} if indexed else {}), **({"tags": tags} if tags else {})}


def api_entry_meta(kind: str, meta: Any) -> Any:
    """An interface's `_meta` under the names the API gives its fields (frames in camelCase, `query`)."""
    if not isinstance(meta, dict):
        return meta
    if kind == "request":
        return {("query" if key == "query_string" else key): value for key, value in meta.items()}
    if kind == "exception":
        values = as_dict(meta.get("values"))
        return {**meta, "values": {i: {**as_dict(v), **({"stacktrace": api_stack_meta(v["stacktrace"])}
                                                          if isinstance(as_dict(v).get("stacktrace"), dict) else {})}
                                   for i, v in values.items()}} if values else meta
    return api_stack_meta(meta) if kind == "stacktrace" else meta


def api_stack_meta(meta: dict[str, Any]) -> dict[str, Any]:
    frames = as_dict(meta.get("frames"))
    names = {name: api_name for api_name, name in API_FRAME_FIELDS.items()}
    return {**meta, "frames": {i: {names.get(k, k): v for k, v in as_dict(f).items()} for i, f in frames.items()}}


API_ENTRY_SOURCES = {"exception": "exception", "message": "logentry", "stacktrace": "stacktrace",
                     "threads": "threads", "breadcrumbs": "breadcrumbs", "request": "request"}


# -- grouping (shared/docs/grouping.md; our own code from that description) ----

Stacks = list[tuple[dict[str, Any] | None, dict[str, Any] | None]]

ExceptionTree = dict[int, tuple[dict[str, Any], list[int]]]  # exception id → (exception, child ids)


def group_hashes(ev: dict[str, Any]) -> list[str]:
    """All grouping hashes of an event, primary first (custom fingerprints give exactly one)."""
    return grouping_hashes(group_event(ev))


def grouping_hashes(record: dict[str, Any]) -> list[str]:
    """A grouping record's distinct hashes, primary first."""
    return list(dict.fromkeys(variant["hash"] for variant in record["variants"].values()))


def group_event(ev: dict[str, Any], *, parent_first: bool = True, explain: bool = True) -> dict[str, Any]:
    """How an event groups: the winning strategy and, per variant, its hash and the values
    behind it (app before system). Stored with the event as its `grouping` record, so the
    issue page can show why it grouped where it did. `parent_first=False` is the previous
    grouping's order of an exception group's chosen exception and its causes (the SDK's);
    `explain=False` leaves out the per-frame report, for hashes only."""
    checksum = ev.get("checksum")
    if isinstance(checksum, str) and checksum:
        digest = checksum if re.fullmatch(r"[0-9a-f]{32}", checksum) else md5_of([checksum])
        return {"strategy": "checksum", "variants": {"checksum": {"hash": digest, "values": [checksum]}}}
    resolved = []
    for entry in ev.get("fingerprint") or ["{{ default }}"]:
        match = FINGERPRINT_VAR.match(entry)
        resolved.append(resolve_fingerprint_variable(match.group(1), ev) if match else entry)
    if None not in resolved:
        variant = {"hash": md5_of(resolved), "values": resolved}
        return {"strategy": "fingerprint", "variants": {"custom_fingerprint": variant}}
    strategy, stacks, variants = strategy_variants(ev, parent_first)
    record: dict[str, Any] = {"strategy": strategy, "variants": {}}
    for name, values in (variants or {"fallback": []}).items():
        expanded = [value for entry in resolved for value in (values if entry is None else [entry])]
        record["variants"][name] = {"hash": md5_of(expanded), "values": expanded}
    if stacks and explain:
        record["stacks"] = frame_report(stacks, variants, ev.get("platform", "other"))
    return record


def md5_of(values: Iterable[str]) -> str:
    return hashlib.md5("".join(values).encode("utf-8")).hexdigest()  # as one update per value, in one call


FINGERPRINT_VAR = re.compile(r"^\{\{\s*([\w.]+)\s*\}\}$")


def resolve_fingerprint_variable(name: str, ev: dict[str, Any]) -> str | None:
    """A `{{ name }}` fingerprint entry's value; None means `{{ default }}`."""
    if name == "default":
        return None
    if name.startswith("tags."):
        return dict(map(tuple, ev.get("tags", []))).get(name[5:], f"<no-value-for-tag-{name[5:]}>")
    excs = grouping_exceptions(ev)
    last = excs[-1] if excs else {}
    frame = crash_frame(primary_frames(ev)) or {}
    table: dict[str, tuple[Any, str]] = {
        "transaction": (ev.get("transaction"), "<no-transaction>"),
        "message": (message_text(ev) or last.get("value"), "<no-message>"),
        "type": (last.get("type"), "<no-type>"), "error.type": (last.get("type"), "<no-type>"),
        "value": (last.get("value"), "<no-value>"), "error.value": (last.get("value"), "<no-value>"),
        "function": (frame.get("function"), "<no-function>"), "stack.function": (frame.get("function"), "<no-function>"),
        "module": (frame.get("module"), "<no-module>"), "stack.module": (frame.get("module"), "<no-module>"),
        "path": (frame.get("abs_path"), "<no-path>"), "stack.abs_path": (frame.get("abs_path"), "<no-path>"),
        "stack.filename": (frame.get("filename"), "<no-filename>"),
        "package": (text(frame.get("package")).replace("\\", "/").rsplit("/", 1)[-1], "<no-package>"),
        "stack.package": (text(frame.get("package")).replace("\\", "/").rsplit("/", 1)[-1], "<no-package>"),
        "level": (ev.get("level"), "<no-level>"), "logger": (ev.get("logger"), "<no-logger>"),
    }
    if name not in table:
        return "{{ %s }}" % name  # unknown variables stay literal
    value, missing = table[name]
    return text(value) or missing


def grouping_exceptions(ev: dict[str, Any], *, parent_first: bool = False) -> list[dict[str, Any]]:
    """The exceptions that group and title an event (grouping.md §2.2): an exception group
    becomes its distinct leaf exceptions, so the same failure in another order or number
    groups together; anything else is used as sent. When one distinct exception is left, it
    comes with its chain of first children: in the SDK's order (the exception last, as titles
    read it), or `parent_first`, the exception and then its causes, as grouping hashes them."""
    excs = ev.get("exception", {}).get("values", [])
    tree = exception_tree(ev, excs)
    if tree is None:
        return excs
    platform = ev.get("platform", "other")
    distinct: dict[tuple[str, ...], int] = {}
    for exc_id in sorted(top_level_exceptions(tree), key=lambda i: text(tree[i][0].get("type")), reverse=True):
        distinct.setdefault(tuple(exception_values(tree[exc_id][0], False, platform)[1]), exc_id)
    if len(distinct) != 1:
        return [tree[exc_id][0] for exc_id in (*distinct.values(), 0)]  # in sorted order, the group last
    path = first_child_path(tree, *distinct.values())
    if parent_first:
        return [tree[exc_id][0] for exc_id in path]
    members = set(path)
    return [e for e in excs if as_dict(e.get("mechanism")).get("exception_id") in members]


def exception_tree(ev: dict[str, Any], excs: list[dict[str, Any]]) -> ExceptionTree | None:
    """The exceptions by `exception_id` with their children, when they form a tree rooted at
    id 0 (else None). Skipped, as Sentry does, for Python SDKs whose version starts with "3"."""
    if len(excs) < 2 or ev.get("platform") == "python" and text(as_dict(ev.get("sdk")).get("version")).startswith("3"):
        return None
    mechanisms = [as_dict(e.get("mechanism")) for e in excs]
    ids = [m.get("exception_id") for m in mechanisms]
    if (not all(type(i) is int for i in ids) or len(set(ids)) < len(ids) or 0 not in ids
            or any(m.get("parent_id") == m.get("exception_id") for m in mechanisms)):
        return None
    tree: ExceptionTree = {i: (e, []) for i, e in zip(ids, excs)}
    for exc_id, mechanism in sorted(zip(ids, mechanisms), key=lambda pair: pair[0]):
        parent = mechanism.get("parent_id")
        if type(parent) is int and parent in tree:
            tree[parent][1].append(exc_id)
    return tree


def top_level_exceptions(tree: ExceptionTree) -> list[int]:
    """The non-group exceptions reached from the root through group exceptions only."""
    found, pending, seen = [], [0], set()
    while pending:
        exc_id = pending.pop(0)
        if exc_id in seen:
            continue
        seen.add(exc_id)
        exc, children = tree[exc_id]
        if as_dict(exc.get("mechanism")).get("is_exception_group") is True:
            pending.extend(children)
        else:
            found.append(exc_id)
    return found


def exception_values(exc: dict[str, Any], app_only: bool, platform: str) -> tuple[bool, list[str]]:
    """(did the stack trace contribute, values): type, plus the value only without a stack."""
    stack, values, message = exception_parts(exc, app_only, platform)
    return bool(stack), values + [parameterize(message)] if message else values


def exception_parts(exc: dict[str, Any], app_only: bool, platform: str) -> tuple[list[str], list[str], str | None]:
    """(the stack trace's values, those and the type, the value to parameterize or None): a
    variant that is dropped never parameterizes its message (a regex over it, the dearest step)."""
    stack = stacktrace_values(exc.get("stacktrace"), app_only, platform)
    synthetic = as_dict(exc.get("mechanism")).get("synthetic") is True
    values = [*stack, exc["type"]] if exc.get("type") and not synthetic else list(stack)
    return stack, values, exc["value"] if not stack and exc.get("value") and not synthetic else None


def stacktrace_values(stacktrace: dict[str, Any] | None, app_only: bool, platform: str) -> list[str]:
    return [value for values in frame_contributions(stacktrace, app_only, platform) for value in values]


def frame_contributions(stacktrace: dict[str, Any] | None, app_only: bool, platform: str) -> list[Sequence[str]]:
    """The values each frame contributes, in frame order (() for a frame that does not)."""
    contributions: list[Sequence[str]] = []
    previous = None
    for frame in (stacktrace or {}).get("frames", []):
        identity = tuple(map(frame.get, FRAME_IDENTITY))
        recursion = identity == previous  # direct recursion contributes once
        previous = identity
        contributions.append(frame_values(frame, platform) if not recursion and frame_groups(frame, app_only) else ())
    return contributions


FRAME_IDENTITY = ("abs_path", "package", "module", "filename", "function", "lineno", "colno")


def frame_values(frame: dict[str, Any], platform: str) -> tuple[str, ...]:
    """What one frame contributes, remembered by the fields it reads (the frames of one issue's
    events repeat, and each stack is read for two variants and again for the grouping's report)."""
    return FRAME_VALUES.answer((platform, *map(frame.get, FRAME_VALUE_FIELDS)),
                               lambda: tuple(values_of_frame(frame, platform)))


FRAME_VALUE_FIELDS = ("platform", "abs_path", "module", "filename", "function", "raw_function", "context_line")

FRAME_VALUES = Memo()


def values_of_frame(frame: dict[str, Any], platform: str) -> list[str]:
    """What one frame contributes: module (else file basename), function, context line — never lineno."""
    platform = text(frame.get("platform")) or platform
    abs_path = text(frame.get("abs_path"))
    module = text(frame.get("module"))
    if platform in JS_PLATFORMS and "/" in module and abs_path.endswith(module):
        module = ""
    values = []
    if module:
        values.append(module)
    else:
        filename = text(frame.get("filename"))
        if filename and not abs_path.startswith(URL_PREFIXES) and filename not in ("<anonymous>", "[native code]"):
            values.append(re.split(r"[/\\]", filename)[-1].lower())
    function = text(frame.get("function") or frame.get("raw_function"))
    if platform in JS_PLATFORMS:
        function = function.rsplit(".", 1)[-1]
        if function in ("?", "<anonymous>") or function.endswith("/<"):
            function = ""
    if function:
        values.append(function)
    line = frame.get("context_line")
    if platform in CONTEXT_LINE_PLATFORMS and isinstance(line, str) and line and len(line) <= 120:
        if not (platform in JS_PLATFORMS and not function and abs_path.startswith(URL_PREFIXES)):
            values.append(" ".join(line.split()))
    return values


JS_PLATFORMS = {"javascript", "node"}

URL_PREFIXES = ("http:", "https:", "applewebdata:", "blob:")

CONTEXT_LINE_PLATFORMS = {"javascript", "node", "python", "php", "ruby"}


def frame_groups(frame: dict[str, Any], app_only: bool) -> bool:
    """Whether a frame may contribute: not switched off by a `-group` rule, in app for the app
    variant, and not engine noise."""
    return (as_dict(frame.get("data")).get("group", True) is True and (frame.get("in_app") or not app_only)
            and not is_engine_noise(frame))


def is_engine_noise(frame: dict[str, Any]) -> bool:
    """A frame of the JS engine's own (grouping.md §2.3), whose place differs from browser to browser."""
    return frame.get("abs_path") in ("[native code]", "native code", "eval code", "<anonymous>")


def parameterize(value: str) -> str:
    """Mask the variable parts of a message (ids, numbers, dates…) so messages group by template."""
    lines = [ln for ln in value.splitlines() if ln.strip()]
    trimmed = "\n".join(lines[:2])
    if trimmed != value:
        trimmed += "..."
    return PARAMETER_RE.sub(lambda m: f"<{m.lastgroup}>", trimmed)


PARAMETERS = [  # order matters: the first alternative that matches at a position wins
    ("email", r"[\w.+-]+@[\w-]+(?:\.[\w-]+)+"),
    ("url", r"\b(?:https?|wss?|ftp)://[^\s\"'<>]+"),
    ("ip", r"\b(?:\d{1,3}\.){3}\d{1,3}\b|(?<![\w:])(?:[0-9a-fA-F]{1,4}:){2,7}[0-9a-fA-F]{1,4}(?![\w:])"),
    ("traceparent", r"\b00-[0-9a-f]{32}-[0-9a-f]{16}-0[01]\b|\b1-[0-9a-f]{8}-[0-9a-f]{24}\b"),
    ("uuid", r"\b[0-9a-fA-F]{8}-(?:[0-9a-fA-F]{4}-){3}[0-9a-fA-F]{12}\b"),
    ("sha1", r"\b[0-9a-fA-F]{40}\b"),
    ("md5", r"\b[0-9a-fA-F]{32}\b"),
    ("date", r"\b\d{4}-\d{2}-\d{2}(?:[T ]\d{2}:\d{2}(?::\d{2}(?:\.\d+)?)?(?:Z|[+-]\d{2}:?\d{2})?)?\b"
             r"|\b\d{1,2}:\d{2}(?::\d{2})?(?:\s?[AaPp][Mm])?\b"),
    ("hostname", r"\b(?:[a-zA-Z0-9-]+\.)+(?:com|net|org|io|dev|app|cloud|internal|local|co|uk|de)\b"),
    ("duration", r"\b\d+(?:\.\d+)?(?:ns|us|µs|ms|s|m|h)\b"),
    ("hex", r"\b0[xX][0-9a-fA-F]+\b|\b(?=[0-9a-f]*\d)[0-9a-f]{8,128}\b|\b(?=[0-9A-F]*\d)[0-9A-F]{8,128}\b"),
    ("float", r"(?<![\w.])-?\d+\.\d+\b"),
    ("int", r"(?<![\w.])-?\d{1,7}\b|(?<=\w-)\d{1,7}\b|(?<=_)\d{1,7}\b"),
    ("quoted_str", r"(?<==)(?:'[^']*'|\"[^\"]*\")"),
    ("bool", r"(?<==)(?:[Tt]rue|[Ff]alse)\b"),
]

PARAMETER_RE = re.compile("|".join(f"(?P<{name}>{pattern})" for name, pattern in PARAMETERS))


def first_child_path(tree: ExceptionTree, exc_id: int) -> list[int]:
    """An exception and its chain of first children (its cause, the cause's cause…)."""
    path: dict[int, None] = {}  # ordered, and a cycle is seen at once however long the chain
    while exc_id not in path:
        path[exc_id] = None
        if not tree[exc_id][1]:
            break
        exc_id = tree[exc_id][1][0]
    return list(path)


def strategy_variants(ev: dict[str, Any], parent_first: bool) -> tuple[str, Stacks, dict[str, list[str]]]:
    """The first grouping strategy that yields values (exceptions, threads, stack trace,
    message): its name, the stacks it read and its variants."""
    platform = ev.get("platform", "other")
    thread = crashed_thread(ev)
    candidates: list[tuple[str, Stacks]] = [
        ("exception", [(e, None) for e in grouping_exceptions(ev, parent_first=parent_first)]),
        ("threads", [(None, thread["stacktrace"])] if thread else []),
        ("stacktrace", [(None, ev["stacktrace"])] if ev.get("stacktrace") else [])]
    for name, stacks in candidates:
        variants = stack_variants(stacks, platform)
        if variants:
            return name, stacks, variants
    entry = ev.get("logentry") or {}
    template = entry.get("message") or entry.get("formatted")
    if template:
        return "message", [], {"default": [parameterize(template)]}
    return "fallback", [], {}


def crashed_thread(ev: dict[str, Any]) -> dict[str, Any] | None:
    threads = [t for t in ev.get("threads", {}).get("values", []) if t.get("stacktrace")]
    for flag in ("crashed", "current"):
        chosen = [t for t in threads if t.get(flag) is True]
        if len(chosen) == 1:
            return chosen[0]
    return threads[0] if len(threads) == 1 else None


def stack_variants(stacks: list[tuple[dict[str, Any] | None, dict[str, Any] | None]],
                   platform: str) -> dict[str, list[str]]:
    """Build the app and system variants for (exception, stacktrace) pairs.

    A variant whose stack trace does not contribute is dropped when another's does, so an
    event without in-app frames groups on its system variant only.
    """
    parts: dict[str, list[tuple[list[str], str | None]]] = {}  # per stack: its values, a message to parameterize
    stack_contributes: dict[str, bool] = {}
    for name, app_only in (("app", True), ("system", False)):
        parts[name], stack_contributes[name] = [], False
        for exc, stacktrace in stacks:
            if exc is not None:
                stack, values, message = exception_parts(exc, app_only, platform)
            else:
                stack = values = stacktrace_values(stacktrace, app_only, platform)
                message = None
            stack_contributes[name] |= bool(stack)
            parts[name].append((values, message))
    kept = [name for name in parts if stack_contributes[name]] or (
        ["app"] if any(values or message for values, message in parts["app"]) else [])
    return {name: [value for values, message in parts[name]
                   for value in (values + [parameterize(message)] if message else values)] for name in kept}


def frame_report(stacks: Stacks, variants: dict[str, list[str]], platform: str) -> list[dict[str, Any]]:
    """Per stack the winning strategy read: each frame (oldest first), whether it is in app and
    which rule said so, and which variants it fed."""
    report = []
    for exc, stacktrace in stacks:
        stacktrace = exc.get("stacktrace") if exc is not None else stacktrace
        frames = (stacktrace or {}).get("frames", [])
        if not frames:
            continue
        fed = {name: frame_contributions(stacktrace, name == "app", platform) if name in variants
               else [[]] * len(frames) for name in ("app", "system")}
        report.append({"exception": text((exc or {}).get("type")), "frames": [
            frame_line(frame, bool(app), bool(system)) for frame, app, system in zip(frames, fed["app"], fed["system"])]})
    return report


def frame_line(frame: dict[str, Any], app: bool, system: bool) -> dict[str, Any]:
    data = as_dict(frame.get("data"))
    return {"frame": frame_location(frame), "in_app": frame.get("in_app") is True,
            **{key: data.get(key) for key in RULE_MARKS},
            "noise": frame.get("abs_path") if is_engine_noise(frame) else None, "app": app, "system": system}


# -- grouping rules: a project's stack trace and fingerprint rules (grouping.md §4, §5) ---

RULES_SQL = "SELECT stacktrace_rules, fingerprint_rules, secondary_until FROM project_rules WHERE project_id = ?"


def stored_rules(row: Mapping[str, Any] | None) -> GroupingRules:
    """A project's saved rules; ones this version cannot read are logged and skipped, so ingest goes on."""
    if row is None:
        return NO_RULES
    try:
        rules = parse_grouping_rules(row["stacktrace_rules"], row["fingerprint_rules"])
    except RuleError as exc:
        log.warning("ignoring saved grouping rules: %s", exc)
        rules = NO_RULES
    return dataclasses.replace(rules, secondary_until=row["secondary_until"])


@dataclasses.dataclass(frozen=True)
class GroupingRules:
    """A project's rules as written, parsed once and applied to each of its events at ingest."""

    stacktrace_text: str = ""
    fingerprint_text: str = ""
    stack: tuple[StackRule, ...] = ()
    fingerprint: tuple[FingerprintRule, ...] = ()
    secondary_until: float = 0.0  # until then events also get the previous built-in grouping's hashes


NO_RULES = GroupingRules()


def parse_grouping_rules(stacktrace_text: str, fingerprint_text: str) -> GroupingRules:
    """Both kinds of rules, checked; a RuleError names the kind and line of the first mistake."""
    for label, raw in (("Stack trace rules", stacktrace_text), ("Fingerprint rules", fingerprint_text)):
        if len(raw) > MAX_RULES_TEXT:
            raise RuleError(f"{label}: longer than {MAX_RULES_TEXT} characters")
    return GroupingRules(stacktrace_text, fingerprint_text,
                         tuple(parse_rule_lines("Stack trace rules", stacktrace_text, parse_stack_rule)),
                         tuple(parse_rule_lines("Fingerprint rules", fingerprint_text, parse_fingerprint_rule)))


MAX_RULES_TEXT = 32 * KIB


class RuleError(ValueError):
    """A grouping rule that does not parse: told to whoever wrote it (a 400 or a form error)."""


def parse_rule_lines(label: str, raw: str, parse: Callable[[str], Any]) -> list[Any]:
    """One rule per line; blank lines and `#` comments are skipped."""
    rules = []
    for number, line in enumerate(raw.splitlines(), start=1):
        line = line.strip()
        if line and not line.startswith("#"):
            try:
                rules.append(parse(line))
            except RuleError as exc:
                raise RuleError(f"{label}, line {number}: {exc}") from None
    return rules


def parse_stack_rule(line: str) -> StackRule:
    matchers, rest = parse_matchers(line, STACK_MATCHERS)
    actions = []
    for token in rest.split():
        match = STACK_ACTION.fullmatch(token)
        if match is None:
            raise RuleError(f"{token!r} is not an action; use +app, -app, +group or -group, optionally after ^ or v")
        actions.append((match.group(1), match.group(3), match.group(2) == "+"))
    if not actions:
        raise RuleError("no action: end the rule with +app, -app, +group or -group")
    return StackRule(line, matchers, tuple(actions))


def parse_matchers(line: str, keys: dict[str, str]) -> tuple[tuple[Matcher, ...], str]:
    """The `key:glob` matchers a rule starts with, and the rest of the line."""
    matchers, pos = [], 0
    while (match := MATCHER.match(line, pos)) is not None:
        negated, key, value = match.groups()
        name = matcher_name(key, keys)
        matchers.append(Matcher(name, matcher_pattern(name, unquote(value)), bool(negated)))
        pos = match.end()
    if not matchers:
        example = "path:**/vendor/**" if keys is STACK_MATCHERS else "error.type:PaymentDeclined"
        raise RuleError(f"a rule starts with at least one matcher such as {example}")
    return tuple(matchers), line[pos:].strip()


MATCHER = re.compile(r'\s*(!?)([\w.]+):("(?:[^"\\]|\\.)*"|[^\s"]+)(?=\s|$)')


def matcher_name(key: str, keys: dict[str, str]) -> str:
    """The canonical name of a matcher key (`stack.module` → `module`; `tags.<name>` as it is)."""
    if key in keys and key != "tags.*":
        return keys[key]
    if "tags.*" in keys and key.startswith("tags.") and len(key) > 5:
        return key
    raise RuleError(f"unknown matcher {key!r}; use {', '.join(keys)}")


@dataclasses.dataclass(frozen=True)
class Matcher:
    """`key:glob`, or `!key:glob` for what the glob does not match."""

    key: str
    pattern: re.Pattern[str]
    negated: bool


def matcher_pattern(name: str, value: str) -> re.Pattern[str]:
    """A matcher's value as a regex: globs, case-insensitive except for functions."""
    if name == "app":
        answer = {"yes": "yes", "true": "yes", "1": "yes", "no": "no", "false": "no", "0": "no"}.get(value.lower())
        if answer is None:
            raise RuleError(f"app:{value} must be app:yes or app:no")
        return re.compile(answer)
    if name == "family":
        families = value.lower().split(",")
        if not set(families) <= set(FAMILIES):
            raise RuleError(f"family:{value} is unknown; use {', '.join(FAMILIES)} (comma-separated)")
        return re.compile(".*" if "all" in families else "|".join(families))
    return glob_regex(value, path=name in ("path", "package"), case_sensitive=name == "function")


FAMILIES = ("javascript", "native", "other", "all")


def glob_regex(glob: str, *, path: bool, case_sensitive: bool) -> re.Pattern[str]:
    """`**` matches anything; `*` and `?` stay within one path segment in paths."""
    pieces = []
    for part in re.split(r"(\*\*/?|\*|\?)", glob):
        if part in ("**/", "**"):
            pieces.append("(?:.*/)?" if part == "**/" else ".*")
        elif part in ("*", "?"):
            pieces.append(("[^/]" if path else ".") + ("*" if part == "*" else ""))
        else:
            pieces.append(re.escape(part))
    return re.compile("".join(pieces), 0 if case_sensitive else re.IGNORECASE)


def unquote(value: str) -> str:
    return re.sub(r"\\(.)", r"\1", value[1:-1]) if value.startswith('"') else value


STACK_MATCHERS = {"path": "path", "stack.abs_path": "path", "module": "module", "stack.module": "module",
                  "function": "function", "stack.function": "function", "package": "package",
                  "stack.package": "package", "family": "family", "app": "app"}

STACK_ACTION = re.compile(r"([\^v]?)([+-])(app|group)")


@dataclasses.dataclass(frozen=True)
class StackRule:
    """`matchers… actions…`; an action is (where: "" the matched frame, "^" the frames above it
    toward the crash, "v" the frames below it; flag: "app" or "group"; value)."""

    text: str
    matchers: tuple[Matcher, ...]
    actions: tuple[tuple[str, str, bool], ...]


def parse_fingerprint_rule(line: str) -> FingerprintRule:
    matchers, rest = parse_matchers(line, FINGERPRINT_MATCHERS)
    if not rest.startswith("->"):
        raise RuleError('expected "->" and a fingerprint after the matchers')
    entries, title, pos = [], None, 2
    while rest[pos:].strip():
        match = FINGERPRINT_ENTRY.match(rest, pos)
        if match is None:
            raise RuleError(f"cannot read the fingerprint at {rest[pos:].strip()!r}")
        attribute, attribute_value, quoted, variable, bare = match.groups()
        if attribute is not None and attribute != "title":
            raise RuleError(f'unknown attribute {attribute!r}; only title="…" is supported')
        if attribute is not None:
            title = unquote(attribute_value)
        else:
            entries.append(unquote(quoted) if quoted else variable or bare)
        pos = match.end()
    if not entries:
        raise RuleError("the fingerprint after -> is empty")
    return FingerprintRule(line, matchers, tuple(entries), title)


FINGERPRINT_MATCHERS = {"error.type": "error.type", "type": "error.type", "error.value": "error.value",
                        "value": "error.value", "message": "message", "logger": "logger", "level": "level",
                        "tags.*": "tags.*"}

FINGERPRINT_ENTRY = re.compile(r'\s*(?:(\w+)=("(?:[^"\\]|\\.)*")|("(?:[^"\\]|\\.)*")|(\{\{\s*[\w.]+\s*\}\})|([^\s,"=]+))\s*,?')


@dataclasses.dataclass(frozen=True)
class FingerprintRule:
    """`matchers… -> fingerprint entries… [title="…"]`."""

    text: str
    matchers: tuple[Matcher, ...]
    fingerprint: tuple[str, ...]
    title: str | None


def apply_stack_rules(ev: dict[str, Any], rules: Sequence[StackRule], source: str = "built-in") -> None:
    """Run stack trace rules over each stack trace, top to bottom (a later rule wins). A frame
    keeps the rule that last set its in_app or grouping in `data`, so the issue page can say why.
    Only the rules that match some frame (StackPlan) are run; `app:` is judged as they run, since
    earlier rules change it."""
    if not rules:
        return
    plan, platform = stack_plan(rules), ev.get("platform", "other")
    for frames in event_frame_lists(ev):
        found = [plan.rules_matching(frame, platform) for frame in frames]
        for number in sorted(set().union(*found)):
            rule = rules[number]
            hits = [index for index, numbers in enumerate(found) if number in numbers]
            if number in plan.judge_app:
                hits = [index for index in hits if all(matches(matcher, frame_facts("app", frames[index], platform))
                                                       for matcher in rule.matchers if matcher.key == "app")]
            for index in hits:
                for where, flag, value in rule.actions:
                    above, below = frames[index + 1:], frames[:index]
                    for frame in above if where == "^" else below if where == "v" else [frames[index]]:
                        mark_frame(frame, flag, value, f"{source} rule {rule.text}")


def stack_plan(rules: Sequence[StackRule]) -> StackPlan:
    """The plan of a list of rules, kept by the list's identity (the plan holds the list, so no other
    object takes its id meanwhile): the built-in lists and each project's parsed rules (kept by
    grouping_rules_of) are planned once per process."""
    plan = STACK_PLANS.get(id(rules))
    if plan is None:
        if len(STACK_PLANS) >= 64:
            STACK_PLANS.clear()
        plan = STACK_PLANS[id(rules)] = StackPlan(rules)
    return plan


class StackPlan:
    """Which rules of a list match a frame, by every matcher but `app:` (what a frame's facts
    decide), remembered by those facts: the frames of one issue's events repeat, and forty built-in
    rules over each frame of each event were a fifth of preparing it."""

    def __init__(self, rules: Sequence[StackRule]) -> None:
        self.rules = rules
        self.judge_app = frozenset(number for number, rule in enumerate(rules)
                                   if any(matcher.key == "app" for matcher in rule.matchers))
        self.found = Memo()

    def rules_matching(self, frame: dict[str, Any], platform: str) -> frozenset[int]:
        return self.found.answer((platform, *map(frame.get, FRAME_FACT_FIELDS)), lambda: frozenset(
            number for number, rule in enumerate(self.rules)
            if all(matcher.key == "app" or matches(matcher, frame_facts(matcher.key, frame, platform))
                   for matcher in rule.matchers)))


STACK_PLANS: dict[int, StackPlan] = {}

# The fields frame_facts reads for every matcher but `app:`.
FRAME_FACT_FIELDS = ("platform", "abs_path", "filename", "package", "module", "function", "raw_function")


def event_frame_lists(ev: dict[str, Any]) -> list[list[dict[str, Any]]]:
    stacks = [e.get("stacktrace") for e in ev.get("exception", {}).get("values", [])]
    stacks += [t.get("stacktrace") for t in ev.get("threads", {}).get("values", [])]
    return [s["frames"] for s in (*stacks, ev.get("stacktrace")) if s]


def matches(matcher: Matcher, facts: list[str]) -> bool:
    return any(matcher.pattern.fullmatch(fact) for fact in facts) != matcher.negated


def frame_facts(key: str, frame: dict[str, Any], platform: str) -> list[str]:
    """A frame's values a stack trace rule matcher compares with (any one may match)."""
    if key in ("path", "package"):
        fields = ("abs_path", "filename") if key == "path" else ("package",)
        return [text(frame[k]).replace("\\", "/") for k in fields if frame.get(k)]
    if key == "family":
        platform = text(frame.get("platform")) or platform
        return ["javascript" if platform in JS_PLATFORMS else "native" if platform in NATIVE_PLATFORMS else "other"]
    if key == "app":
        return ["yes" if frame.get("in_app") else "no"]
    value = frame.get("function") or frame.get("raw_function") if key == "function" else frame.get(key)
    return [text(value)] if value else []


NATIVE_PLATFORMS = {"native", "c", "cocoa", "objc", "swift"}


def mark_frame(frame: dict[str, Any], flag: str, value: bool, why: str) -> None:
    data = frame.setdefault("data", {})
    if flag == "app":
        data.setdefault("sdk_in_app", frame.get("in_app") is True)
        frame["in_app"], data["in_app_rule"] = value, why
    else:
        data["group"], data["group_rule"] = value, why


def apply_fingerprint_rules(ev: dict[str, Any], rules: Iterable[FingerprintRule]) -> FingerprintRule | None:
    """The first rule whose matchers all hold sets the event's fingerprint (over the SDK's)."""
    for rule in rules:
        if all(matches(m, event_facts(m.key, ev)) for m in rule.matchers):
            ev["fingerprint"] = list(rule.fingerprint)
            return rule
    return None


def event_facts(key: str, ev: dict[str, Any]) -> list[str]:
    """An event's values a fingerprint rule matcher compares with (any one may match)."""
    excs = ev.get("exception", {}).get("values", [])
    if key in ("error.type", "error.value"):
        return [text(e.get(key[6:])) for e in excs if e.get(key[6:])]
    if key == "message":
        return [v for v in (message_text(ev), *(text(e.get("value")) for e in excs)) if v]
    if key.startswith("tags."):
        return [v for k, v in ev.get("tags", []) if k == key[5:]]
    return [text(ev[key])] if ev.get(key) else []


def rule_title(rule: FingerprintRule, ev: dict[str, Any]) -> str:
    """A rule's title="…" with its {{ variables }} filled in."""
    return TEMPLATE_VAR.sub(lambda m: resolve_fingerprint_variable(m.group(1), ev) or m.group(0), rule.title or "")


TEMPLATE_VAR = re.compile(r"\{\{\s*([\w.]+)\s*\}\}")


def crash_location(ev: dict[str, Any]) -> str:
    frame = crash_frame(primary_frames(ev)) or {}
    where = text(frame.get("filename") or frame.get("abs_path") or frame.get("module"), 300)
    if frame.get("lineno"):
        where += f":{frame['lineno']}"
    return where + (f" in {text(frame['function'], 200)}" if frame.get("function") else "")


def search_terms(ev: dict[str, Any]) -> list[tuple[str, str]]:
    """Searchable facts that are not tags: who was affected and where in the code it broke."""
    terms = {("user.ip" if key == "ip_address" else f"user.{key}", text(value, MAX_TAG)) for key, value in (ev.get("user") or {}).items()
             if key in ("id", "email", "username", "ip_address") and value}
    for exc in ev.get("exception", {}).get("values", []):
        if exc.get("type"):
            terms.add(("error.type", text(exc["type"], MAX_TAG)))
    for frame in primary_frames(ev):
        if frame.get("in_app"):
            for key in ("filename", "abs_path", "function", "module"):
                if frame.get(key):
                    terms.add((f"stack.{key}", text(frame[key], MAX_TAG)))
    return sorted(terms)


RULE_MARKS = ("in_app_rule", "group", "group_rule", "sdk_in_app")  # what stack trace rules note in a frame's `data`

BUILTIN_STACK_RULES = parse_grouping_rules("""
# python: installed and vendored packages (the SDK decides the standard library)
path:**/site-packages/** -app
path:**/dist-packages/** -app
path:**/vendor/** -app
# javascript and node: packages and CDNs; polyfills and runtime helpers, engine noise, node internals
path:**/node_modules/** -app
family:javascript path:**/unpkg.com/** -app
family:javascript path:**/cdnjs.cloudflare.com/** -app
family:javascript path:**/cdn.jsdelivr.net/** -app
family:javascript path:**/esm.run/** -app
family:javascript path:**/@babel/** -app -group
family:javascript path:**/core-js/** -app -group
family:javascript path:**/core-js-pure/** -app -group
family:javascript path:**/regenerator-runtime/** -app -group
family:javascript path:**/tslib/** -app -group
family:javascript function:eval -group
family:javascript function:runMicrotasks -app -group
family:javascript function:*processTicksAndRejections -app -group
family:javascript path:**internal/** function:*nextTick -app -group
family:javascript path:**internal/** function:*processImmediate -app -group
family:javascript path:**internal/** function:*listOnTimeout -app -group
family:javascript function:reportError ^-app -app
# java and kotlin: the SDK's own namespace does not group; frameworks and the runtime are not the app
family:other module:io.sentry.* -group
family:other module:java.* -app
family:other module:javax.* -app
family:other module:jdk.* -app
family:other module:sun.* -app
family:other module:com.sun.* -app
family:other module:kotlin.* -app
family:other module:kotlinx.* -app
family:other module:org.springframework.* -app
family:other module:org.apache.* -app
family:other module:org.hibernate.* -app
family:other module:io.netty.* -app
family:other module:io.micrometer.* -app
# go: the module cache
path:**/go/pkg/mod/** -app
# telemetry libraries wrap the app's functions: neither app nor grouping
family:javascript path:**/*newrelic*/** -app -group
family:javascript path:**/*logrocket* -app -group
family:javascript path:**/*logrocket*/** -app -group
family:other module:com.newrelic.* -app -group
""", "").stack

PREVIOUS_STACK_RULES = parse_grouping_rules("""
path:**/site-packages/** -app
path:**/dist-packages/** -app
path:**/vendor/** -app
path:**/node_modules/** -app
""", "").stack  # the built-in rules before 2026-12, for the secondary hash of the transition


def previous_grouping_hashes(ev: dict[str, Any], rules: GroupingRules) -> list[str]:
    """The hashes the previous built-in grouping gave this event (the SDK's in_app, the previous
    built-in rules, the project's rules; an exception group's chosen exception and its causes in the
    SDK's order), which store_event uses to find the issue an event joined before the grouping changed."""
    old = unmarked_copy(ev)
    apply_stack_rules(old, PREVIOUS_STACK_RULES)
    apply_stack_rules(old, rules.stack, "project")
    if frame_flags(old) == frame_flags(ev) and grouping_exceptions(ev, parent_first=True) == grouping_exceptions(ev):
        return []  # nothing hashes differently: most events, and every Python one
    return grouping_hashes(group_event(old, parent_first=False, explain=False))


def unmarked_copy(ev: dict[str, Any]) -> dict[str, Any]:
    """The event with copies of its frames as the SDK sent them: its in_app back, no rule marks."""
    def stack(stacktrace: dict[str, Any] | None) -> dict[str, Any] | None:
        return {**stacktrace, "frames": [unmarked(f) for f in stacktrace["frames"]]} if stacktrace else None
    old = dict(ev)
    for key in ("exception", "threads"):
        if key in ev:
            old[key] = {"values": [{**item, "stacktrace": stack(item.get("stacktrace"))} for item in ev[key]["values"]]}
    if "stacktrace" in ev:
        old["stacktrace"] = stack(ev["stacktrace"])
    return old


def unmarked(frame: dict[str, Any]) -> dict[str, Any]:
    data = as_dict(frame.get("data"))
    return {**frame, "in_app": data.get("sdk_in_app", frame.get("in_app")),
            "data": {k: v for k, v in data.items() if k not in RULE_MARKS}}


def frame_flags(ev: dict[str, Any]) -> list[tuple[bool, bool]]:
    """Each frame's (in app, may group): what stack trace rules decide."""
    return [(frame.get("in_app") is True, as_dict(frame.get("data")).get("group", True) is True)
            for frames in event_frame_lists(ev) for frame in frames]


def save_project_rules(conn: sqlite3.Connection, project_id: int, rules: GroupingRules) -> None:
    conn.execute("INSERT INTO project_rules (project_id, stacktrace_rules, fingerprint_rules) VALUES (?, ?, ?) "
                 "ON CONFLICT (project_id) DO UPDATE SET stacktrace_rules = excluded.stacktrace_rules, "
                 "fingerprint_rules = excluded.fingerprint_rules",
                 (project_id, rules.stacktrace_text, rules.fingerprint_text))


# =============================================================================
# Issues: writer jobs that store an event and keep its issue up to date
# =============================================================================

def store_event(conn: sqlite3.Connection, ev: PreparedEvent) -> bool:
    """Store one event and fold it into its issue; False when the event id is a duplicate."""
    if conn.execute("SELECT 1 FROM events WHERE project_id = ? AND event_id = ?",
                    (ev.project_id, ev.event_id)).fetchone():
        return False
    caches = writer_caches(conn)
    issue_id, new_issue = issue_for(conn, caches, ev)
    later = (new_issue or conn.execute("SELECT status FROM issues WHERE id = ?", (issue_id,)).fetchone()[0]
             == "unresolved") and not rules_read_counts(project_alert_rules(conn, ev.project_id))
    new_tags = new_issue_tags(conn, caches, issue_id, ev) if later else record_issue_tags(conn, issue_id, ev)
    if "release" in new_tags:
        link_release(conn, ev.project_id, new_tags["release"], min(ev.timestamp, ev.received))  # not after its events
    record_terms(conn, caches, issue_id, ev.terms)
    issue = None
    if later:
        defer(conn, count_events, (issue_id, ev, "user" in new_tags))
    else:
        issue = conn.execute(f"{ISSUE_COUNT_SQL} RETURNING *", issue_count_params(issue_id, [(ev, "user" in new_tags)])).fetchone()
    conn.execute(
        """INSERT INTO events (project_id, event_id, issue_id, timestamp, received, level,
                               environment, release, payload, trace_id) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)""",
        (ev.project_id, ev.event_id, issue_id, ev.timestamp, ev.received, ev.level,
         ev.environment, ev.release, ev.payload, trace_of(ev.tags)))
    link_feedback(conn, ev.project_id, ev.event_id, issue_id)
    if not new_issue and "release" in new_tags:
        record_activity(conn, issue_id, "release", {"version": new_tags["release"]}, ev.received)
    transition = "new" if new_issue else None
    if issue is not None and issue["status"] != "unresolved":
        transition = apply_event_to_status(conn, issue, ev)
    fire_rules(conn, issue_id, ev, transition)
    return True


def rules_read_counts(rules: list[tuple[int, dict[str, Any]]]) -> bool:
    """Whether judging these alert rules reads an issue's counts (event or user frequency) or the
    releases' order (the latest release filter), which events left to the end of the batch lack."""
    return any(cond["id"] not in STATE_CONDITIONS for _, rule in rules for cond in rule["conditions"]) or \
        any(flt["id"] == LATEST_RELEASE_FILTER for _, rule in rules for flt in rule["filters"])


def new_issue_tags(conn: sqlite3.Connection, caches: WriterCaches, issue_id: int, ev: PreparedEvent) -> dict[str, str]:
    """The event's `user` and `release` values the issue has not had (as record_issue_tags returns
    them) while its tag counts wait for the end of the batch: the writer remembers the values it
    knows an issue has, counted or waiting."""
    new_tags = {}
    for key, value in dict.fromkeys((str(k), str(v)) for k, v in ev.tags if k in ("user", "release")):
        if (issue_id, key, value) in caches.tags:
            continue
        if not conn.execute("SELECT 1 FROM issue_tags WHERE issue_id = ? AND key = ? AND value = ?",
                            (issue_id, key, value)).fetchone():
            new_tags[key] = value
        caches.tags.add((issue_id, key, value))
    return new_tags


def count_events(conn: sqlite3.Connection, counted: list[tuple[int, PreparedEvent, bool]]) -> None:
    """Writer, at the end of a batch: its events' tag counts and issue counters, added up per tag
    value and per issue, in one statement each (the same result as one event at a time)."""
    tags: dict[tuple[int, str, str], list[Any]] = {}
    for issue_id, ev, _ in counted:
        for key, value in dict.fromkeys((str(k), str(v)) for k, v in ev.tags):
            seen = tags.get((issue_id, key, value))
            if seen:
                seen[0], seen[1], seen[2] = seen[0] + 1, min(seen[1], ev.timestamp), max(seen[2], ev.timestamp)
            else:
                tags[(issue_id, key, value)] = [1, ev.timestamp, ev.timestamp]
    conn.executemany("""INSERT INTO issue_tags (issue_id, key, value, times_seen, first_seen, last_seen)
                        VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT DO UPDATE SET times_seen = times_seen + excluded.times_seen,
                            first_seen = min(first_seen, excluded.first_seen),
                            last_seen = max(last_seen, excluded.last_seen)""",
                     [(*key, *seen) for key, seen in tags.items()])
    issues: dict[int, list[tuple[PreparedEvent, bool]]] = {}
    for issue_id, ev, new_user in counted:
        issues.setdefault(issue_id, []).append((ev, new_user))
    conn.executemany(ISSUE_COUNT_SQL, [issue_count_params(issue_id, events) for issue_id, events in issues.items()])


# An issue's counters and display fields after events (in order): the newest event (at or after the
# last one seen) gives the title, culprit, metadata and level, the newest with a release last_release.
ISSUE_COUNT_SQL = """UPDATE issues SET times_seen = times_seen + :events, user_count = user_count + :new_users,
        first_seen = min(first_seen, :first), last_seen = max(last_seen, :ts),
        title = CASE WHEN :ts >= last_seen THEN :title ELSE title END,
        culprit = CASE WHEN :ts >= last_seen THEN :culprit ELSE culprit END,
        metadata = CASE WHEN :ts >= last_seen THEN :metadata ELSE metadata END,
        level = CASE WHEN :ts >= last_seen THEN :level ELSE level END,
        last_release = CASE WHEN :release_ts >= last_seen AND :release != '' THEN :release ELSE last_release END
    WHERE id = :id"""


def issue_count_params(issue_id: int, events: list[tuple[PreparedEvent, bool]]) -> dict[str, Any]:
    """ISSUE_COUNT_SQL's parameters for an issue's events in the order they were stored (each with
    whether it brought a user new to the issue): as if applied one by one, the last event whose time
    is at or after every earlier one's gives the display fields, the last such with a release the
    release (a later event's time must still reach the issue's last_seen, which the SQL checks)."""
    newest = with_release = events[0][0]
    for ev, _ in events[1:]:
        if ev.timestamp >= newest.timestamp:
            newest = ev
            if ev.release:
                with_release = ev
    return {"id": issue_id, "events": len(events), "new_users": sum(new for _, new in events),
            "first": min(ev.timestamp for ev, _ in events), "ts": newest.timestamp, "title": newest.title,
            "culprit": newest.culprit, "metadata": json.dumps(newest.metadata), "level": newest.level,
            "release_ts": with_release.timestamp, "release": with_release.release}


def issue_for(conn: sqlite3.Connection, caches: WriterCaches, ev: PreparedEvent) -> tuple[int, bool]:
    """The issue an event joins by its hashes (the primary ones decide), created if there is none
    (then True). Once its hashes are in issue_hashes the answer holds until a merge, an unmerge or a
    deletion (which empty the cache), so the writer remembers it."""
    grouped = (ev.project_id, tuple(ev.hashes), tuple(ev.secondary_hashes))
    if (cached := caches.issues.get(grouped)) is not None:
        return cached, False
    known = issue_of_hashes(conn, ev.project_id, ev.hashes) or issue_of_hashes(conn, ev.project_id, ev.secondary_hashes)
    issue_id = known or create_issue(conn, ev)
    conn.executemany("INSERT OR IGNORE INTO issue_hashes (project_id, hash, issue_id) VALUES (?, ?, ?)",
                     [(ev.project_id, h, issue_id) for h in ev.hashes])
    if ev.hashes:  # (an event without any opens an issue of its own)
        caches.issues[grouped] = issue_id
    return issue_id, known is None


def issue_of_hashes(conn: sqlite3.Connection, project_id: int, hashes: list[str]) -> int | None:
    """The issue that holds the first of these hashes it holds (after an unmerge the hashes of one
    event may be in two issues: the primary decides)."""
    if not hashes:
        return None
    row = conn.execute(f"SELECT issue_id FROM issue_hashes WHERE project_id = ? AND hash IN ({','.join('?' * len(hashes))}) "
                       "ORDER BY instr(?, hash)", (project_id, *hashes, " ".join(hashes))).fetchone()
    return row["issue_id"] if row else None


def create_issue(conn: sqlite3.Connection, ev: PreparedEvent) -> int:
    short_id = conn.execute("UPDATE projects SET next_short_id = next_short_id + 1 WHERE id = ? "
                            "RETURNING next_short_id - 1", (ev.project_id,)).fetchone()[0]
    cur = conn.execute(
        """INSERT INTO issues (id, project_id, short_id, type, title, culprit, metadata, level, platform,
                               logger, first_seen, last_seen, first_release, last_release)
           VALUES (max(coalesce((SELECT max(id) FROM issues), 0),
                       coalesce((SELECT CAST(value AS INTEGER) FROM meta WHERE key = 'max_deleted_issue_id'), 0)) + 1,
                   ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)""",
        (ev.project_id, short_id, ev.kind, ev.title, ev.culprit, json.dumps(ev.metadata), ev.level,
         ev.platform, ev.logger, ev.timestamp, ev.timestamp, ev.release or None, ev.release or None))
    issue_id = int(cur.lastrowid or 0)
    # dated like the issue's first_seen (the event's time), so the Activity card and the header agree
    # when events arrive late (an offline SDK's queue, `tracker send`, the demo)
    record_activity(conn, issue_id, "first_seen", {"version": ev.release} if ev.release else {},
                    min(ev.timestamp, ev.received))
    return issue_id


def record_issue_tags(conn: sqlite3.Connection, issue_id: int, ev: PreparedEvent) -> dict[str, str]:
    """Count the event's tag values on its issue; returns the ones new to the issue (a new
    `user` raises the user count, a new `release` goes into the activity log)."""
    tags = list(dict.fromkeys((str(k), str(v)) for k, v in ev.tags))
    new_tags = {}
    for start in range(0, len(tags), 1000):  # one statement per thousand tags (SQLite allows 32,766 variables)
        chunk = tags[start:start + 1000]
        rows = conn.execute(
            f"""INSERT INTO issue_tags (issue_id, key, value, times_seen, first_seen, last_seen)
                VALUES {', '.join(['(?, ?, ?, 1, ?, ?)'] * len(chunk))}
                ON CONFLICT DO UPDATE SET times_seen = times_seen + 1,
                    first_seen = min(first_seen, excluded.first_seen), last_seen = max(last_seen, excluded.last_seen)
                RETURNING key, value, times_seen""",
            [x for key, value in chunk for x in (issue_id, key, value, ev.timestamp, ev.timestamp)]).fetchall()
        new_tags.update((row[0], row[1]) for row in rows if row[2] == 1)
    return new_tags


def link_release(conn: sqlite3.Connection, project_id: int, version: str, now: float) -> bool:
    """Make a release exist and belong to a project; True when the release is new. Ingest calls it
    only for a release new to the issue, so most events pay nothing for it."""
    created = conn.execute("INSERT OR IGNORE INTO releases (version, date_created) VALUES (?, ?)",
                           (version, now)).rowcount == 1
    if not created:  # an event older than the release's first one (late, or sent from a file)
        conn.execute("UPDATE releases SET date_created = ? WHERE version = ? AND date_created > ?", (now, version, now))
    conn.execute("INSERT OR IGNORE INTO release_projects (release_id, project_id) "
                 "SELECT id, ? FROM releases WHERE version = ?", (project_id, version))
    return created


def record_terms(conn: sqlite3.Connection, caches: WriterCaches, issue_id: int, terms: list[tuple[str, str]]) -> None:
    """Make the event's search terms the issue's; the ones the writer knows the issue has cost nothing."""
    new = [row for key, value in terms if (row := (key, value, issue_id)) not in caches.terms]
    if new:
        conn.executemany("INSERT OR IGNORE INTO issue_terms (key, value, issue_id) VALUES (?, ?, ?)", new)
        caches.terms.update(new)


def trace_of(tags: list[list[str]]) -> str | None:
    """The trace an event belongs to (its `trace` tag, from contexts.trace), when it is a trace id."""
    value = next((v for k, v in tags if k == "trace"), None)
    return value if value and TRACE_ID.fullmatch(value) else None


TRACE_ID = re.compile(r"[0-9a-f]{32}")


# -- merge and unmerge: a person correcting the grouping ---------------------------------

def short_id(project_slug: str, number: int) -> str:
    """`PAYMENTS-1A`: the project slug and the per-project issue number in base 32."""
    digits = ""
    while True:
        number, rest = divmod(number, 32)
        digits = SHORT_ID_ALPHABET[rest] + digits
        if not number:
            break
    return f"{project_slug.upper()}-{digits}"


SHORT_ID_ALPHABET = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"  # Crockford's base 32: no I, L, O, U


def parse_short_id(value: str) -> tuple[str, int] | None:
    """`PAYMENTS-1A` (any case) → ("payments", 42): the project slug and the issue number (None if not one)."""
    slug, _, digits = value.strip().rpartition("-")
    digits = digits.upper()
    if not slug or not digits or len(digits) > 12 or any(c not in SHORT_ID_ALPHABET for c in digits):
        return None
    return slug.lower(), functools.reduce(lambda n, c: n * 32 + SHORT_ID_ALPHABET.index(c), digits, 0)


def merge_issues(conn: sqlite3.Connection, project_id: int, issue_ids: list[int]) -> int:
    """Writer job: fold issues into the one with the most events. Their events, hashes, tag
    counts and search terms move along, so later events of any of them land in the merged
    issue, and the others disappear. Returns the merged issue's id."""
    writer_caches(conn).clear()
    ids = sorted(set(issue_ids))
    rows = conn.execute(f"SELECT * FROM issues WHERE project_id = ? AND id IN ({','.join('?' * len(ids))}) "
                        "ORDER BY times_seen DESC, id", (project_id, *ids)).fetchall()
    if len(rows) < 2 or len(rows) < len(ids):
        raise MergeError("merging takes two or more issues, all of one project")
    target, others = rows[0]["id"], [r["id"] for r in rows[1:]]
    marks = ",".join("?" * len(others))
    for table in ("events", "issue_hashes", "feedback"):
        conn.execute(f"UPDATE {table} SET issue_id = ? WHERE issue_id IN ({marks})", (target, *others))
    conn.execute(f"""INSERT INTO issue_tags (issue_id, key, value, times_seen, first_seen, last_seen)
                     SELECT ?, key, value, sum(times_seen), min(first_seen), max(last_seen) FROM issue_tags
                     WHERE issue_id IN ({marks}) GROUP BY key, value
                     ON CONFLICT DO UPDATE SET times_seen = times_seen + excluded.times_seen,
                         first_seen = min(first_seen, excluded.first_seen),
                         last_seen = max(last_seen, excluded.last_seen)""",
                 (target, *others))
    conn.execute(f"INSERT OR IGNORE INTO issue_terms (key, value, issue_id) "
                 f"SELECT key, value, ? FROM issue_terms WHERE issue_id IN ({marks})", (target, *others))
    for table in ("issue_tags", "issue_terms", "issue_activity"):
        conn.execute(f"DELETE FROM {table} WHERE issue_id IN ({marks})", others)
    drop_issue_rows(conn, others)
    first, last = min(rows, key=lambda r: r["first_seen"]), max(rows, key=lambda r: r["last_seen"])
    conn.execute(ISSUE_SUMMARY_SQL,
                 (sum(r["times_seen"] for r in rows), first["first_seen"], first["first_release"], last["last_seen"],
                  last["last_release"], last["title"], last["culprit"], last["metadata"], last["level"], target))
    record_activity(conn, target, "merge", {"issues": [{"id": str(i)} for i in others]}, time.time())
    return target


class MergeError(ValueError):
    """A merge or unmerge that cannot be done: told to whoever asked (a 400 or an error page)."""


def drop_issue_rows(conn: sqlite3.Connection, issue_ids: list[int]) -> int:
    """Delete issue rows, remembering the highest id so no later issue takes it: an old link
    to a deleted or merged issue must never open a different one."""
    conn.execute("""INSERT INTO meta (key, value) VALUES ('max_deleted_issue_id', ?)
                    ON CONFLICT DO UPDATE SET value = max(CAST(value AS INTEGER), CAST(excluded.value AS INTEGER))""",
                 (max(issue_ids),))
    return conn.execute(f"DELETE FROM issues WHERE id IN ({','.join('?' * len(issue_ids))})", issue_ids).rowcount


ISSUE_SUMMARY_SQL = """UPDATE issues SET times_seen = ?, first_seen = ?, first_release = ?, last_seen = ?,
    last_release = ?, title = ?, culprit = ?, metadata = ?, level = ?,
    user_count = (SELECT count(*) FROM issue_tags WHERE issue_id = issues.id AND key = 'user') WHERE id = ?"""


def unmerge_hashes(conn: sqlite3.Connection, issue_id: int, hashes: set[str]) -> int:
    """Writer job: move the issue's events that have any of these hashes into a new issue,
    with the hashes only they have, so later events with them land there too. Returns the
    new issue's id. It reads every event of the issue (the hashes live in the payloads)."""
    writer_caches(conn).clear()
    issue = conn.execute("SELECT * FROM issues WHERE id = ?", (issue_id,)).fetchone()
    owned = {r["hash"] for r in conn.execute("SELECT hash FROM issue_hashes WHERE project_id = ? AND issue_id = ?",
                                              (issue["project_id"] if issue else 0, issue_id))}
    if issue is None or not hashes or not hashes <= owned:
        raise MergeError("the issue does not have these hashes")
    moved: list[tuple[int, PreparedEvent]] = []
    kept: list[tuple[int, PreparedEvent]] = []
    for row in conn.execute("SELECT id, payload FROM events WHERE issue_id = ? ORDER BY timestamp, id", (issue_id,)):
        event = stored_event(issue["project_id"], decompress_payload(row["payload"]))
        (moved if hashes & set(event.hashes) else kept).append((row["id"], event))
    if not moved or not kept:
        raise MergeError("no stored event has these hashes" if not moved else
                         "every event of the issue has these hashes, so nothing would stay behind")
    new_id = create_issue(conn, moved[0][1])
    conn.executemany("UPDATE events SET issue_id = ? WHERE id = ?", [(new_id, row_id) for row_id, _ in moved])
    conn.executemany("UPDATE feedback SET issue_id = ? WHERE issue_id = ? AND event_id = ?",
                     [(new_id, issue_id, e.event_id) for _, e in moved])
    leaving = {h for _, e in moved for h in e.hashes} - {h for _, e in kept for h in e.hashes}
    conn.executemany("UPDATE issue_hashes SET issue_id = ? WHERE project_id = ? AND hash = ? AND issue_id = ?",
                     [(new_id, issue["project_id"], h, issue_id) for h in leaving])
    for _, event in moved:
        record_issue_tags(conn, new_id, event)
        conn.executemany("UPDATE issue_tags SET times_seen = times_seen - 1 WHERE issue_id = ? AND key = ? "
                         "AND value = ?", [(issue_id, key, value) for key, value in event.tags])
    conn.execute("DELETE FROM issue_tags WHERE issue_id = ? AND times_seen <= 0", (issue_id,))
    conn.execute("DELETE FROM issue_terms WHERE issue_id = ?", (issue_id,))
    for target, events in ((new_id, moved), (issue_id, kept)):
        conn.executemany("INSERT OR IGNORE INTO issue_terms (key, value, issue_id) VALUES (?, ?, ?)",
                         [(key, value, target) for _, e in events for key, value in e.terms])
    summarize_issue(conn, new_id, [e for _, e in moved], len(moved))
    summarize_issue(conn, issue_id, [e for _, e in kept], issue["times_seen"] - len(moved))
    now, fingerprints = time.time(), sorted(hashes)
    record_activity(conn, issue_id, "unmerge_source",
                    {"fingerprints": fingerprints, "destination_id": str(new_id)}, now)
    record_activity(conn, new_id, "unmerge_destination",
                    {"fingerprints": fingerprints, "source_id": str(issue_id)}, now)
    return new_id


def stored_event(project_id: int, ev: dict[str, Any]) -> PreparedEvent:
    """A stored event as the writer sees a new one, so an unmerge folds it in the same way
    (without its payload: the stored row keeps that)."""
    return PreparedEvent(project_id=project_id, event_id=ev["event_id"], timestamp=ev["timestamp"],
                         received=ev["received"], level=ev["level"], environment=ev["environment"],
                         release=ev.get("release", ""), kind=ev.get("type", "error"), title=ev.get("title", ""),
                         culprit=ev.get("culprit", ""), metadata=ev.get("metadata", {}),
                         platform=ev.get("platform", "other"), logger=ev.get("logger", ""),
                         hashes=ev.get("hashes", []), tags=ev.get("tags", []), terms=search_terms(ev), payload=b"")


def summarize_issue(conn: sqlite3.Connection, issue_id: int, events: list[PreparedEvent], times_seen: int) -> None:
    """An issue's first/last seen and display fields from its events (oldest first), after an unmerge."""
    first, last = events[0], events[-1]
    conn.execute(ISSUE_SUMMARY_SQL,
                 (times_seen, first.timestamp, first.release or None, last.timestamp, last.release or None,
                  last.title, last.culprit, json.dumps(last.metadata), last.level, issue_id))


def delete_issues(conn: sqlite3.Connection, issue_ids: list[int]) -> int:
    """Delete issues with their events (and their attachments), hashes, history and user feedback;
    later events of them open new issues."""
    writer_caches(conn).clear()
    marks = ",".join("?" * len(issue_ids))
    conn.execute(f"""DELETE FROM attachments WHERE (project_id, event_id) IN (
                         SELECT project_id, event_id FROM events WHERE issue_id IN ({marks})
                         UNION SELECT project_id, feedback_event_id FROM feedback WHERE issue_id IN ({marks}))""",
                 [*issue_ids, *issue_ids])
    for table in ("events", "issue_hashes", "issue_tags", "issue_terms", "issue_activity", "feedback"):
        conn.execute(f"DELETE FROM {table} WHERE issue_id IN ({marks})", issue_ids)
    return drop_issue_rows(conn, issue_ids)


ISSUE_STATUSES = ("unresolved", "resolved", "ignored")


async def hash_events(store: Store, issue: sqlite3.Row) -> dict[str, sqlite3.Row | None]:
    """The issue's hashes, each with its newest event that has it (None when none of the
    newest EVENT_SCAN_LIMIT events does); reads pages of events until every hash is found."""
    found: dict[str, sqlite3.Row | None] = dict.fromkeys(await issue_hash_list(store, issue))
    for offset in range(0, EVENT_SCAN_LIMIT, 100):
        rows = await store.all("SELECT * FROM events WHERE issue_id = ? ORDER BY timestamp DESC, id DESC "
                               "LIMIT 100 OFFSET ?", (issue["id"], offset))
        for row in rows:
            for digest in decompress_payload(row["payload"]).get("hashes", []):
                if digest in found and found[digest] is None:
                    found[digest] = row
        if not rows or None not in found.values():
            break
    return found


async def issue_hash_list(store: Store, issue: sqlite3.Row) -> list[str]:
    """The hashes grouped into the issue, sorted."""
    rows = await store.all("SELECT hash FROM issue_hashes WHERE project_id = ? AND issue_id = ? ORDER BY hash",
                           (issue["project_id"], issue["id"]))
    return [r["hash"] for r in rows]


# -- workflow: resolve, ignore, assign; regressions; the activity log of each issue ---
#
# issues.status_details holds Sentry's statusDetails ({"inNextRelease": true}, {"inRelease": "x"},
# {"ignoreCount": 10}, …) plus private "_" keys that ingest needs to judge the next event: the
# release an "in next release" resolution was made in, and the issue's counts when it was ignored.

def apply_event_to_status(conn: sqlite3.Connection, issue: sqlite3.Row, ev: PreparedEvent) -> str | None:
    """Reopen a resolved issue the event shows is back ("regression"), or an ignored one whose
    condition it meets ("escalating"); the transition is what alert rules fire on."""
    details = json.loads(issue["status_details"])
    if issue["status"] == "resolved" and is_regression(conn, issue, details, ev):
        write_status(conn, issue["id"], "unresolved", "regressed", {}, ev.received)
        record_activity(conn, issue["id"], "set_regression", {"version": ev.release or None,
                                                              "event_id": ev.event_id}, ev.received)
        return "regression"
    if issue["status"] == "ignored" and ignore_condition_met(conn, issue, details, ev):
        write_status(conn, issue["id"], "unresolved", "escalating", {}, ev.received)
        record_activity(conn, issue["id"], "set_unresolved", public_details(details), ev.received)
        return "escalating"
    return None


def is_regression(conn: sqlite3.Connection, issue: sqlite3.Row, details: dict[str, Any],
                  ev: PreparedEvent) -> bool:
    """An event that happened after the resolution reopens the issue; one resolved in a release
    only by an event from a newer release (an event without a release counts as older)."""
    if issue["resolved_at"] is not None and ev.timestamp <= issue["resolved_at"]:
        return False
    fixed = details.get("inRelease") or details.get("_release")
    if fixed is None:
        return True
    if not ev.release or ev.release == fixed:
        return False
    seen, fixed_seen = (release_first_seen(conn, issue["project_id"], r) for r in (ev.release, fixed))
    return seen is not None and fixed_seen is not None and seen > fixed_seen


def release_first_seen(conn: sqlite3.Connection, project_id: int, release: str) -> float | None:
    """When a release began for a project (the order releases compare in); None if unknown."""
    row = conn.execute(f"SELECT {RELEASE_START_SQL} FROM releases r WHERE r.version = :version",
                       {"project": project_id, "version": release}).fetchone()
    return row[0] if row else None


# A release began for a project when the tracker first heard of it (sentry-cli or an event) or
# when the project's first event from it happened, whichever is earlier: releases compare by that.
RELEASE_START_SQL = """min(r.date_created, coalesce((SELECT min(t.first_seen) FROM issue_tags t
    JOIN issues i ON i.id = t.issue_id WHERE t.key = 'release' AND t.value = r.version AND i.project_id = :project),
    r.date_created))"""


def write_status(conn: sqlite3.Connection, issue_id: int, status: str, substatus: str | None,
                 details: dict[str, Any], at: float) -> None:
    """Set a status; resolved_at keeps when, so an event from before the resolution cannot reopen it."""
    conn.execute("UPDATE issues SET status = ?, substatus = ?, status_details = ?, resolved_at = ? WHERE id = ?",
                 (status, substatus, json.dumps(details), at if status == "resolved" else None, issue_id))


def record_activity(conn: sqlite3.Connection, issue_id: int, kind: str, data: dict[str, Any],
                    created: float) -> None:
    conn.execute("INSERT INTO issue_activity (issue_id, kind, data, created) VALUES (?, ?, ?, ?)",
                 (issue_id, kind, json.dumps(data), created))


def ignore_condition_met(conn: sqlite3.Connection, issue: sqlite3.Row, details: dict[str, Any],
                         ev: PreparedEvent) -> bool:
    """Whether an ignored issue's condition holds now that this event is stored and counted."""
    if "ignoreUntil" in details:
        return ev.received >= (parse_timestamp(details["ignoreUntil"]) or 0)
    if "ignoreWindow" in details:
        since = max(details["_since"], ev.received - 60 * details["ignoreWindow"])
        recent = conn.execute("SELECT count(*) FROM events WHERE issue_id = ? AND timestamp >= ?",
                              (issue["id"], since)).fetchone()[0]
        return recent >= details["ignoreCount"]
    if "ignoreCount" in details:
        return issue["times_seen"] - details["_timesSeen"] >= details["ignoreCount"]
    if "ignoreUserCount" in details:
        return issue["user_count"] - details["_userCount"] >= details["ignoreUserCount"]
    return False


def public_details(details: dict[str, Any]) -> dict[str, Any]:
    """statusDetails as Sentry shows them: without the private "_" keys."""
    return {k: v for k, v in details.items() if not k.startswith("_")}


def parse_issue_change(body: Any) -> IssueChange:
    """Sentry's update body {"status", "statusDetails", "assignedTo"} (the ignore conditions also at the top
    level, where Sentry's issue endpoints and its MCP server put them); ValueError says what is wrong."""
    if not isinstance(body, dict):
        raise ValueError("the body must be a JSON object")
    top_level = {key: body[key] for key in (*IGNORE_CONDITIONS, "ignoreWindow", "ignoreUserWindow") if key in body}
    status, details = body.get("status"), body.get("statusDetails") or top_level
    if not isinstance(details, dict):
        raise ValueError("statusDetails must be an object")
    if status == "resolvedInNextRelease":
        status, details = "resolved", {"inNextRelease": True}
    status = "ignored" if status == "muted" else status  # Sentry's older name, still accepted (sentry-cli sends it)
    change = IssueChange()
    if status is not None:
        if status not in ISSUE_STATUSES:
            raise ValueError(f"status must be one of {', '.join(ISSUE_STATUSES)}, resolvedInNextRelease")
        change.status, change.details = status, checked_details(status, details)
    elif details:
        raise ValueError("statusDetails needs a status")
    if "assignedTo" in body:
        assignee = body["assignedTo"]
        if assignee is not None and not isinstance(assignee, str):
            raise ValueError("assignedTo must be a name, an email or null")
        change.assign, change.assignee = True, (assignee or "").strip()[:200] or None
    if change.status is None and not change.assign:
        raise ValueError("nothing to change: give a status or assignedTo")
    return change


@dataclasses.dataclass
class IssueChange:
    """A validated update from the API or the dashboard: a status with its details, an assignee, or both."""

    status: str | None = None
    details: dict[str, Any] = dataclasses.field(default_factory=dict)
    assign: bool = False
    assignee: str | None = None


def checked_details(status: str, details: dict[str, Any]) -> dict[str, Any]:
    """The statusDetails that fit the status, validated; a duration becomes its end (ignoreUntil)."""
    if status == "resolved" and details.get("inNextRelease") is True:
        return {"inNextRelease": True}
    if status == "resolved" and details.get("inRelease") is not None:
        release = details["inRelease"]
        if not isinstance(release, str) or not release.strip():
            raise ValueError("inRelease must be a release name")
        return {"inRelease": release.strip()[:MAX_TAG]}
    given = [key for key in IGNORE_CONDITIONS if details.get(key) is not None]
    if status != "ignored" or not given:
        return {}
    if len(given) > 1:
        raise ValueError(f"give only one of {', '.join(IGNORE_CONDITIONS)}")
    if given[0] == "ignoreUntil":
        until = parse_timestamp(details["ignoreUntil"])
        if until is None:
            raise ValueError("ignoreUntil must be a date and time")
        return {"ignoreUntil": iso(until)}
    value = positive_int(details, given[0])
    if given[0] == "ignoreDuration":
        return {"ignoreDuration": value, "ignoreUntil": iso(time.time() + 60 * value)}
    if given[0] == "ignoreCount" and details.get("ignoreWindow") is not None:
        return {"ignoreCount": value, "ignoreWindow": positive_int(details, "ignoreWindow")}
    return {given[0]: value}


IGNORE_CONDITIONS = ("ignoreDuration", "ignoreUntil", "ignoreCount", "ignoreUserCount")


def positive_int(details: dict[str, Any], key: str) -> int:
    value = details[key]
    if isinstance(value, bool) or not isinstance(value, int) or not 0 < value <= 10**9:
        raise ValueError(f"{key} must be a whole number from 1 to 1000000000")
    return value


def apply_issue_change(conn: sqlite3.Connection, issue_ids: list[int], change: IssueChange, now: float) -> None:
    """Writer job: apply a person's change to issues, logging each real change as activity."""
    marks = ",".join("?" * len(issue_ids))
    for issue in conn.execute(f"SELECT * FROM issues WHERE id IN ({marks})", issue_ids).fetchall():
        if change.status:
            change_status(conn, issue, change.status, change.details, now)
        if change.assign and change.assignee != issue["assignee"]:
            conn.execute("UPDATE issues SET assignee = ? WHERE id = ?", (change.assignee, issue["id"]))
            record_activity(conn, issue["id"], "assigned" if change.assignee else "unassigned",
                            {"assignee": change.assignee, "assigneeType": "user"} if change.assignee else {}, now)


def change_status(conn: sqlite3.Connection, issue: sqlite3.Row, status: str, details: dict[str, Any],
                  now: float) -> None:
    """Set a status a person chose; the baselines later events are judged by are taken here."""
    if status == issue["status"] and details == public_details(json.loads(issue["status_details"])):
        return
    stored, substatus = dict(details), SUBSTATUS[status]
    if details.get("inNextRelease"):
        newest = conn.execute(RELEASES_SQL, {"project": issue["project_id"], "limit": 1}).fetchone()
        stored["_release"] = newest["value"] if newest else None
    if status == "ignored" and details:
        stored.update(_since=now, _timesSeen=issue["times_seen"], _userCount=issue["user_count"])
        substatus = "archived_until_condition_met"
    write_status(conn, issue["id"], status, substatus, stored, now)
    if "inRelease" in stored:
        kind, data = "set_resolved_in_release", {"version": stored["inRelease"]}
    elif "_release" in stored:
        kind, data = "set_resolved_in_release", {"version": "", "current_release_version": stored["_release"]}
    else:
        kind, data = f"set_{status}", details
    record_activity(conn, issue["id"], kind, data, now)
    if status == "resolved" and issue["status"] != "resolved":
        alert_resolution(conn, issue["id"])


SUBSTATUS = {"unresolved": "ongoing", "resolved": None, "ignored": "archived_forever"}

RELEASES_SQL = f"""SELECT r.version AS value FROM releases r JOIN release_projects rp ON rp.release_id = r.id
    WHERE rp.project_id = :project ORDER BY {RELEASE_START_SQL} DESC, r.id DESC LIMIT :limit"""


async def lifetimes(store: Store, project_id: int, now: float) -> tuple[list[sqlite3.Row], list[sqlite3.Row]]:
    """A project's bug lifetimes, counted in SQL: its issues per first release and age group (AGE_LIMITS;
    None for a resolved one) with how many are resolved now, and each issue ever resolved or reopened
    with its first release, first seen, first resolution and whether it was reopened. A row per issue
    cost the overview ~100 ms at 10,000 issues (two subqueries each, and the rows handed to Python)."""
    ages = " ".join(f"WHEN ? - first_seen < {limit} THEN {n}" for n, limit in enumerate(AGE_LIMITS))
    groups = await store.all(
        f"""SELECT {FIRST_RELEASE_SQL} AS release, CASE WHEN status = 'resolved' THEN NULL {ages} ELSE {len(AGE_LIMITS)}
                   END AS age, count(*) AS issues, sum(status = 'resolved') AS resolved, min(last_seen) AS seen
            FROM issues WHERE project_id = ? GROUP BY release, age""", [now] * len(AGE_LIMITS) + [project_id])
    resolutions = await store.all(
        f"""SELECT {FIRST_RELEASE_SQL} AS release, i.first_seen,
                   min(CASE WHEN a.kind != 'set_regression' THEN a.created END) AS resolved,
                   max(a.kind = 'set_regression') AS reopened
            FROM issue_activity a JOIN issues i ON i.id = a.issue_id
            WHERE i.project_id = ? AND a.kind IN ({','.join('?' * len(RESOLVE_KINDS))}, 'set_regression')
            GROUP BY a.issue_id""", [project_id, *RESOLVE_KINDS])
    return groups, resolutions


FIRST_RELEASE_SQL = "coalesce(nullif(first_release, ''), '(no release)')"

AGE_LIMITS = (86400, 7 * 86400, 30 * 86400)  # open issues younger than each, and the older rest


RESOLVE_KINDS = ("set_resolved", "set_resolved_in_release", "set_resolved_in_commit")


# -- search: Sentry's query syntax over issues, the same in the dashboard and the API ---

async def list_issues(store: Store, *, project_id: int | None = None, query: str = "is:unresolved",
                      sort: str = "date", limit: int = 100, offset: int = 0,
                      project_ids: Sequence[int] = ()) -> list[sqlite3.Row]:
    """Issues matching a search query (in one project, or in any of `project_ids` when given);
    raises SearchError for a malformed one."""
    where, args = issue_filter_sql(project_id, query)
    if project_ids:
        where += f" AND i.project_id IN ({','.join('?' * len(project_ids))})"
        args += list(project_ids)
    order = SORTS.get(sort, SORTS["date"])
    # the page's ids are chosen first, so that a sort no index gives (new, freq, user) orders the ids
    # and sort keys of the matching issues, not their whole rows (34 → 10 ms at 10,000 issues)
    return await store.all(
        f"SELECT {ISSUE_COLUMNS} FROM issues i JOIN projects p ON p.id = i.project_id WHERE i.id IN "
        f"(SELECT i.id FROM issues i WHERE {where} ORDER BY {order}, i.id DESC LIMIT ? OFFSET ?) "
        f"ORDER BY {order}, i.id DESC", [*args, limit, offset])


def issue_filter_sql(project_id: int | None, query: str, now: float | None = None) -> tuple[str, list[Any]]:
    """WHERE clause for a project and a search query (dashboard and JSON API alike)."""
    clauses, args = ["1 = 1"], []
    if project_id is not None:
        clauses.append("i.project_id = ?")
        args.append(project_id)
    for negated, key, value in parse_query(query):
        sql, term_args = term_sql(key, value, now or time.time())
        clauses.append(f"NOT ({sql})" if negated else sql)
        args += term_args
    return " AND ".join(clauses), args


def parse_query(query: str) -> list[tuple[bool, str | None, str]]:
    """`!key:"a b" word` → [(negated, key, value)]; a key of None is free text."""
    if len(query) > MAX_SEARCH_LENGTH:
        raise SearchError(f"a search has at most {MAX_SEARCH_LENGTH} characters, this one {len(query)}")
    terms = []
    for match in SEARCH_TOKEN.finditer(query.strip()):
        negated, key, value = bool(match.group(1)), match.group(2), match.group(3)
        if value.startswith('"'):
            if len(value) < 2 or not value.endswith('"'):
                raise SearchError(f"unclosed quote in {match.group(0).strip()!r}")
            value = re.sub(r'\\(.)', r"\1", value[1:-1])
        terms.append((negated, key, value))
    if len(terms) > MAX_SEARCH_TERMS:  # each is an SQL condition: SQLite refuses expressions ~1000 deep
        raise SearchError(f"a search has at most {MAX_SEARCH_TERMS} terms, this one {len(terms)}")
    return terms


# SQLite refuses a LIKE/GLOB pattern over 50,000 bytes (SQLITE_MAX_LIKE_PATTERN_LENGTH) with an error
# that was a 500: 2,000 characters escape to at most 4,002 (UTF-8: 16 KB), and no one types more
MAX_SEARCH_LENGTH = 2000


class SearchError(ValueError):
    """A malformed query: shown to the person who typed it, never a 500."""


SEARCH_TOKEN = re.compile(r'\s*(!?)(?:([\w.\-\[\]]+):)?("(?:[^"\\]|\\.)*"?|\S+)')

MAX_SEARCH_TERMS = 100


def term_sql(key: str | None, value: str, now: float) -> tuple[str, list[Any]]:
    """One search term as an SQL condition on issues `i`."""
    if key is None or key == "message":
        like = "%" + value.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"
        return ("(i.title LIKE ? ESCAPE '\\' OR i.culprit LIKE ? ESCAPE '\\' "
                "OR json_extract(i.metadata, '$.value') LIKE ? ESCAPE '\\')"), [like, like, like]
    if key == "is":
        conditions = {"unresolved": "i.status = 'unresolved'", "resolved": "i.status = 'resolved'",
                      "ignored": "i.status = 'ignored'", "archived": "i.status = 'ignored'",
                      "assigned": "i.assignee IS NOT NULL", "unassigned": "i.assignee IS NULL",
                      "regressed": "i.substatus = 'regressed'"}
        if value not in conditions:
            raise SearchError(f"is:{value} is unknown; use one of {', '.join(conditions)}")
        return conditions[value], []
    if key in ("assigned", "assigned_to"):
        return "i.assignee = ?", [value]
    if key == "level":
        return "i.level = ?", [normalize_level(value)]
    if key in ("age", "firstSeen", "lastSeen"):
        operator, moment = parse_time_filter(value, now)
        return f"i.{'last_seen' if key == 'lastSeen' else 'first_seen'} {operator} ?", [moment]
    if key in ("timesSeen", "times_seen", "users", "userCount"):
        operator, number = parse_number_filter(value)
        return f"i.{'times_seen' if key.startswith('times') else 'user_count'} {operator} ?", [number]
    if key == "error.value":
        comparison, pattern = glob_pattern(value if "*" in value else f"*{value}*")
        return f"json_extract(i.metadata, '$.value') {comparison}", [pattern]
    comparison, pattern = glob_pattern(value)
    if key in TERM_KEYS:
        return f"i.id IN (SELECT issue_id FROM issue_terms WHERE key = ? AND value {comparison})", [key, pattern]
    tag = {"user": "user", "trace.id": "trace", "trace": "trace"}.get(key, key)
    return f"i.id IN (SELECT issue_id FROM issue_tags WHERE key = ? AND value {comparison})", [tag, pattern]


def parse_time_filter(value: str, now: float) -> tuple[str, float]:
    """`-24h` (within), `+7d` (older than), `>2026-01-01`, `<=2026-01-01T10:00` → (operator, epoch)."""
    relative = re.fullmatch(r"([+-])(\d{1,18})([smhdw])", value)  # more digits would overflow a float
    if relative:
        at = now - int(relative.group(2)) * DURATION_UNITS[relative.group(3)]
        return (">=" if relative.group(1) == "-" else "<="), at
    match = re.fullmatch(r"(>=|<=|>|<)?(.+)", value)
    operator, moment = (match.group(1) or ">=", parse_timestamp(match.group(2))) if match else (">=", None)
    if moment is None:
        raise SearchError(f"cannot read the time {value!r}: use -24h, +7d or >2026-01-31")
    return operator, moment


DURATION_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


def parse_number_filter(value: str) -> tuple[str, int]:
    match = re.fullmatch(r"(>=|<=|>|<)?(\d{1,18})", value)  # SQLite integers end at 2**63
    if not match:
        raise SearchError(f"{value!r} is not a number or a comparison such as >10")
    return match.group(1) or "=", int(match.group(2))


def glob_pattern(value: str) -> tuple[str, str]:
    """An SQL comparison for a value where `*` is a wildcard (other GLOB characters are literal)."""
    if "*" not in value:
        return "= ?", value
    return "GLOB ?", re.sub(r"([\[\]?])", r"[\1]", value)


TERM_KEYS = {"user.id", "user.email", "user.username", "user.ip", "error.type", "stack.filename",
             "stack.abs_path", "stack.function", "stack.module"}

SORTS = {"date": "i.last_seen DESC", "new": "i.first_seen DESC", "freq": "i.times_seen DESC",
         "user": "i.user_count DESC"}

ISSUE_COLUMNS = "i.*, p.slug AS project_slug, p.name AS project_name, p.platform AS project_platform"


async def get_issue(store: Store, issue_id: int) -> sqlite3.Row | None:
    return await store.one(f"SELECT {ISSUE_COLUMNS} FROM issues i JOIN projects p ON p.id = i.project_id "
                           "WHERE i.id = ?", (issue_id,))


async def issue_by_short_id(store: Store, value: str) -> sqlite3.Row | None:
    """The issue a short id (`PAYMENTS-1A`, any case) names, or None."""
    parsed = parse_short_id(value)
    if parsed is None:
        return None
    return await store.one(f"SELECT {ISSUE_COLUMNS} FROM issues i JOIN projects p ON p.id = i.project_id "
                           "WHERE lower(p.slug) = ? AND i.short_id = ?", parsed)


async def event_by_id(store: Store, event_id: str, project_ids: Sequence[int] = ()) -> sqlite3.Row | None:
    """A stored event by its 32-hex id (in one of `project_ids` when given), or None."""
    where = f" AND project_id IN ({','.join('?' * len(project_ids))})" if project_ids else ""
    return await store.one(f"SELECT * FROM events WHERE event_id = ?{where} ORDER BY id LIMIT 1",
                           [event_id, *project_ids])


async def project_events_page(store: Store, project_id: int, limit: int, offset: int) -> list[sqlite3.Row]:
    """A project's stored events, newest first (Sentry's project event list)."""
    return await store.all("SELECT * FROM events WHERE project_id = ? ORDER BY timestamp DESC, id DESC "
                           "LIMIT ? OFFSET ?", (project_id, limit, offset))


async def issues_tagged(store: Store, issue_ids: Sequence[int], key: str, value: str) -> set[int]:
    """Which of these issues have seen an event with this tag value (e.g. handled:no, unhandled)."""
    if not issue_ids:
        return set()
    rows = await store.all(f"SELECT issue_id FROM issue_tags WHERE key = ? AND value = ? "
                           f"AND issue_id IN ({','.join('?' * len(issue_ids))})", [key, value, *issue_ids])
    return {r["issue_id"] for r in rows}


async def issue_tag_values(store: Store, issue_id: int, key: str, limit: int, offset: int) -> list[sqlite3.Row]:
    """One tag's values on an issue, most seen first, with counts and first and last seen."""
    return await store.all("SELECT * FROM issue_tags WHERE issue_id = ? AND key = ? "
                           "ORDER BY times_seen DESC, value LIMIT ? OFFSET ?", (issue_id, key, limit, offset))


async def issue_tag_count(store: Store, issue_id: int, key: str) -> int:
    """How many distinct values one tag key has on an issue."""
    return (await store.one("SELECT count(*) FROM issue_tags WHERE issue_id = ? AND key = ?", (issue_id, key)))[0]


async def neighbour_events(store: Store, row: sqlite3.Row) -> dict[str, str | None]:
    """Event ids of the oldest, previous, next and latest events of the same issue."""
    key = (row["issue_id"], row["timestamp"], row["timestamp"], row["id"])
    prev = await store.one("SELECT event_id FROM events WHERE issue_id = ? AND (timestamp < ? OR "
                           "(timestamp = ? AND id < ?)) ORDER BY timestamp DESC, id DESC LIMIT 1", key)
    nxt = await store.one("SELECT event_id FROM events WHERE issue_id = ? AND (timestamp > ? OR "
                          "(timestamp = ? AND id > ?)) ORDER BY timestamp, id LIMIT 1", key)
    oldest = await issue_event(store, row["issue_id"], "oldest")
    latest = await issue_event(store, row["issue_id"], "latest")
    return {"oldest": oldest["event_id"] if oldest else None, "previous": prev["event_id"] if prev else None,
            "next": nxt["event_id"] if nxt else None, "latest": latest["event_id"] if latest else None}


async def issue_event(store: Store, issue_id: int, which: str) -> sqlite3.Row | None:
    """`latest`, `oldest`, or a 32-hex event id within the issue."""
    if which in ("latest", "oldest"):
        order = "DESC" if which == "latest" else "ASC"
        return await store.one(f"SELECT * FROM events WHERE issue_id = ? ORDER BY timestamp {order}, "
                               f"id {order} LIMIT 1", (issue_id,))
    if which == "recommended":
        return await recommended_event(store, issue_id)
    return await store.one("SELECT * FROM events WHERE issue_id = ? AND event_id = ?",
                           (issue_id, normalize_id(which) or ""))


async def recommended_event(store: Store, issue_id: int) -> sqlite3.Row | None:
    """Sentry's recommended event, from what is stored here: of the newest RECOMMEND_SCAN events the
    newest with a trace and the fewest processing errors (no replays or profiles are kept)."""
    rows = await store.all("SELECT * FROM events WHERE issue_id = ? ORDER BY timestamp DESC, id DESC LIMIT ?",
                           (issue_id, RECOMMEND_SCAN))
    def rank(pair: tuple[int, sqlite3.Row]) -> tuple[bool, int, int]:
        ev = decompress_payload(pair[1]["payload"])
        return not as_dict(as_dict(ev.get("contexts")).get("trace")).get("trace_id"), len(ev.get("errors") or []), pair[0]
    return min(enumerate(rows), key=rank)[1] if rows else None


RECOMMEND_SCAN = 50


async def search_issue_events(store: Store, issue_id: int, query: str, limit: int,
                              offset: int) -> list[sqlite3.Row]:
    """The issue's events, newest first, that match an event search (reads at most EVENT_SCAN_LIMIT)."""
    terms = parse_query(query)
    if not terms:
        return await store.all("SELECT * FROM events WHERE issue_id = ? ORDER BY timestamp DESC, id DESC "
                               "LIMIT ? OFFSET ?", (issue_id, limit, offset))
    rows = await store.all("SELECT * FROM events WHERE issue_id = ? ORDER BY timestamp DESC, id DESC LIMIT ?",
                           (issue_id, EVENT_SCAN_LIMIT))
    matching = [r for r in rows if event_matches(decompress_payload(r["payload"]), terms)]
    return matching[offset:offset + limit]


EVENT_SCAN_LIMIT = 5000  # newest events of one issue that an event search reads


def event_matches(ev: dict[str, Any], terms: list[tuple[bool, str | None, str]]) -> bool:
    """Whether one stored event satisfies parsed search terms (tags, user.*, error.*, text)."""
    tags = dict(map(tuple, ev.get("tags", [])))
    user = ev.get("user") or {}
    types = [e.get("type") or "" for e in ev.get("exception", {}).get("values", [])]
    for negated, key, value in terms:
        if key is None or key == "message":
            found = value.lower() in f"{ev.get('title', '')}\n{message_text(ev)}".lower()
        elif key.startswith("user.") and key[5:] in ("id", "email", "username", "ip"):
            found = fnmatch_value(user.get("ip_address" if key == "user.ip" else key[5:]), value)
        elif key == "error.type":
            found = any(fnmatch_value(t, value) for t in types)
        elif key == "error.value":
            found = value.lower() in text((ev.get("metadata") or {}).get("value")).lower()
        elif issue_only_key(key):
            raise SearchError(f"{key}: filters issues, not the events of one issue")
        else:
            found = fnmatch_value(tags.get({"trace.id": "trace"}.get(key, key)), value)
        if found == negated:
            return False
    return True


def issue_only_key(key: str | None) -> bool:
    """Search keys about issues (their status, age, counts, stack terms) that no single event answers."""
    return key in ("is", "age", "firstSeen", "lastSeen", "timesSeen", "assigned") or (key or "").startswith("stack.")


def fnmatch_value(actual: Any, pattern: str) -> bool:
    """Search values match exactly, or as a glob when they contain `*`."""
    if actual is None:
        return False
    if "*" not in pattern:
        return str(actual) == pattern
    return re.fullmatch(".*".join(map(re.escape, pattern.split("*"))), str(actual), re.S) is not None


async def issue_tag_summary(store: Store, issue_id: int, per_key: int = 5) -> list[dict[str, Any]]:
    """Per tag key: total count and the top values with their share, for the issue sidebar."""
    rows = await store.all("SELECT key, value, times_seen FROM issue_tags WHERE issue_id = ? "
                           "ORDER BY key, times_seen DESC", (issue_id,))
    summary: dict[str, dict[str, Any]] = {}
    for row in rows:
        entry = summary.setdefault(row["key"], {"key": row["key"], "total": 0, "values": []})
        entry["total"] += row["times_seen"]
        if len(entry["values"]) < per_key:
            entry["values"].append({"value": row["value"], "count": row["times_seen"]})
    return list(summary.values())


async def issue_activity(store: Store, issue_id: int) -> list[sqlite3.Row]:
    """The issue's activity log, newest first."""
    return await store.all("SELECT * FROM issue_activity WHERE issue_id = ? ORDER BY created DESC, id DESC "
                           "LIMIT 500", (issue_id,))


async def project_releases(store: Store, project_id: int, limit: int = 100) -> list[str]:
    return [r["value"] for r in await store.all(RELEASES_SQL, {"project": project_id, "limit": limit})]


async def issues_in(store: Store, ids: Sequence[int | str], project_id: int | None = None) -> list[sqlite3.Row]:
    """The id and project of those of these issues that exist (in the project, when one is named)."""
    if not ids:
        return []
    where = f"id IN ({','.join('?' * len(ids))})" + (" AND project_id = ?" if project_id is not None else "")
    return await store.all(f"SELECT id, project_id FROM issues WHERE {where}",
                           [*ids, *([project_id] if project_id is not None else [])])


async def issues_by_ids(store: Store, ids: Sequence[int]) -> list[sqlite3.Row]:
    """These issues with their project's slug and name, in no order."""
    if not ids:
        return []
    return await store.all(f"SELECT {ISSUE_COLUMNS} FROM issues i JOIN projects p ON p.id = i.project_id "
                           f"WHERE i.id IN ({','.join('?' * len(ids))})", ids)


async def environments_seen(store: Store) -> list[str]:
    """Every environment any issue has been seen in, alphabetically (the issue list's filter)."""
    return [r["value"] for r in await store.all(
        "SELECT DISTINCT value FROM issue_tags WHERE key = 'environment' ORDER BY value")]


async def releases_seen(store: Store, limit: int = 100) -> list[str]:
    """The releases issues have been seen in, the latest seen first (the issue list's filter)."""
    return [r["value"] for r in await store.all(  # the planner would pick issue_tags_by_value and read every row
        "SELECT value FROM issue_tags INDEXED BY issue_tags_release WHERE key = 'release' GROUP BY value "
        "ORDER BY max(last_seen) DESC LIMIT ?", (limit,))]


async def issue_event_buckets(store: Store, issue_ids: Sequence[int], buckets: int, size: int) -> dict[int, list[int]]:
    """Events of each of these issues in the last `buckets` slots of `size` seconds (the current slot
    last), in one query."""
    start = (time.time() // size - buckets + 1) * size
    rows = await store.all(f"SELECT issue_id, CAST((timestamp - ?) / ? AS INTEGER) AS slot, count(*) AS n FROM events "
                           f"WHERE issue_id IN ({','.join('?' * len(issue_ids))}) AND timestamp >= ? "
                           f"GROUP BY issue_id, slot", [start, size, *issue_ids, start])
    counts: dict[int, list[int]] = {i: [0] * buckets for i in issue_ids}
    for r in rows:
        if 0 <= r["slot"] < buckets:
            counts[r["issue_id"]][r["slot"]] = r["n"]
    return counts


async def events_by_level(store: Store, project_id: int, start: float, size: int) -> list[sqlite3.Row]:
    """A project's events since `start`, counted per level and `size`-second slot (slot 0 at start)."""
    return await store.all("SELECT CAST((timestamp - ?) / ? AS INTEGER) AS slot, level, count(*) AS n FROM events "
                           "WHERE project_id = ? AND timestamp >= ? GROUP BY slot, level", [start, size, project_id, start])


async def new_issues_by_slot(store: Store, project_id: int, start: float, size: int) -> list[sqlite3.Row]:
    """A project's issues first seen since `start`, counted per `size`-second slot."""
    return await store.all("SELECT CAST((first_seen - ?) / ? AS INTEGER) AS slot, count(*) AS n FROM issues "
                           "WHERE project_id = ? AND first_seen >= ? GROUP BY slot", [start, size, project_id, start])


async def regressions_by_slot(store: Store, project_id: int, start: float, size: int) -> list[sqlite3.Row]:
    """A project's regressions since `start`, counted per `size`-second slot."""
    return await store.all("SELECT CAST((a.created - ?) / ? AS INTEGER) AS slot, count(*) AS n FROM issue_activity a "
                           "JOIN issues i ON i.id = a.issue_id WHERE i.project_id = ? AND a.created >= ? "
                           "AND a.kind = 'set_regression' GROUP BY slot", [start, size, project_id, start])


async def top_issues_by_events(store: Store, project_id: int, start: float) -> list[sqlite3.Row]:
    """The ten issues with the most events since `start` (as period_events), most first."""
    return await store.all(f"""SELECT {ISSUE_COLUMNS}, e.n AS period_events FROM (SELECT issue_id, count(*) AS n FROM events
                               WHERE project_id = ? AND timestamp >= ? GROUP BY issue_id ORDER BY n DESC LIMIT 10) e
                               JOIN issues i ON i.id = e.issue_id JOIN projects p ON p.id = i.project_id
                               ORDER BY e.n DESC""", (project_id, start))


async def top_issues_by_users(store: Store, project_id: int, start: float) -> list[sqlite3.Row]:
    """The ten issues that reached the most users since `start` (as period_users), most first."""
    # a tag seen in the period belongs to an issue seen in it: the issues seen lead (issues_by_project)
    return await store.all(f"""SELECT {ISSUE_COLUMNS}, u.n AS period_users FROM (SELECT t.issue_id, count(*) AS n
                               FROM issue_tags t JOIN issues x ON x.id = t.issue_id WHERE x.project_id = ?
                               AND x.last_seen >= ? AND t.key = 'user' AND t.last_seen >= ?
                               GROUP BY t.issue_id ORDER BY n DESC LIMIT 10) u
                               JOIN issues i ON i.id = u.issue_id JOIN projects p ON p.id = i.project_id
                               ORDER BY u.n DESC""", (project_id, start, start))


async def events_by_origin(store: Store, project_id: int, start: float) -> dict[str, list[sqlite3.Row]]:
    """A project's eight commonest environments and releases of events since `start`, with counts."""
    return {column: await store.all(f"SELECT {column} AS value, count(*) AS n FROM events WHERE project_id = ? "
                                    f"AND timestamp >= ? GROUP BY {column} ORDER BY n DESC LIMIT 8",
                                    (project_id, start)) for column in ("environment", "release")}


async def issue_counts(store: Store) -> list[sqlite3.Row]:
    """Issues and their events per project slug and status (the metrics page)."""
    return await store.all("SELECT p.slug, i.status, count(*) AS n, sum(i.times_seen) AS events FROM issues i "
                           "JOIN projects p ON p.id = i.project_id GROUP BY p.slug, i.status")


async def event_counts(store: Store) -> list[sqlite3.Row]:
    """Events stored per project slug, zero for a project without any (the metrics page)."""
    return await store.all("SELECT p.slug, coalesce(sum(i.times_seen), 0) AS n FROM projects p "
                           "LEFT JOIN issues i ON i.project_id = p.id GROUP BY p.slug")


async def events_after(store: Store, after: int, limit: int) -> list[sqlite3.Row]:
    """The first `limit` events stored after the event with id `after`, oldest first."""
    return await store.all(LIVE_SQL, (after, limit))


# The live page and `tracker tail`: events after an id, with their issue's title, project and payload.
LIVE_SQL = """SELECT e.id, e.event_id, e.issue_id, e.received, e.level, p.slug AS project, i.title, i.culprit, e.payload
              FROM events e JOIN issues i ON i.id = e.issue_id JOIN projects p ON p.id = e.project_id
              WHERE e.id > ? ORDER BY e.id LIMIT ?"""


async def any_project_event(store: Store, project_id: int) -> sqlite3.Row | None:
    """One stored event of a project (issue_id, event_id), None before its first: the setup page
    waits for it."""
    return await store.one("SELECT issue_id, event_id FROM events WHERE project_id = ? LIMIT 1", (project_id,))


async def newest_event_id(store: Store) -> int:
    """The id of the newest stored event, 0 when there is none."""
    return (await store.one("SELECT max(id) AS id FROM events"))["id"] or 0


async def project_event(store: Store, project_id: int, event_id: str) -> sqlite3.Row | None:
    """Where a project's event is stored: its issue_id and event_id, or None when it is not."""
    return await store.one("SELECT issue_id, event_id FROM events WHERE project_id = ? AND event_id = ?",
                           (project_id, event_id))



# -- Discover: Sentry's organization events query over the stored errors ---------------------

@dataclasses.dataclass
class DiscoverQuery:
    """An events query: columns (plain fields, tags[...] and aggregates), a search, a sort, a range."""

    fields: list[str]
    query: str
    sort: list[str]
    project_ids: Sequence[int]
    start: float
    end: float


class DiscoverError(ValueError):
    """A field, function or sort Discover cannot answer: a 400 naming it."""


async def discover(store: Store, q: DiscoverQuery) -> tuple[list[dict[str, Any]], dict[str, str], bool]:
    """The rows of an events query over the newest DISCOVER_SCAN events in the range, grouped by its
    plain fields when it has aggregates; the type of each field; whether the scan stopped short.
    Events are read in batches and decoded in a thread, keeping only the values the query names."""
    columns = [discover_column(f) for f in q.fields]
    terms = parse_query(q.query)
    if any(issue_only_key(key) for _, key, _ in terms):
        raise SearchError("is:, age:, firstSeen:, lastSeen:, timesSeen:, assigned: and stack.* filter issues, not events")
    needed = {arg for _, arg, _ in columns if arg} | {"id", "timestamp"}
    columns_only = {*needed, *(key for _, key, _ in terms)} <= DISCOVER_COLUMN_FIELDS
    where = f" AND e.project_id IN ({','.join('?' * len(q.project_ids))})" if q.project_ids else ""
    records: list[dict[str, Any]] = []
    scanned, before = 0, (q.end, 2 ** 62)
    while scanned < DISCOVER_SCAN:
        batch = await store.all(
            f"SELECT {DISCOVER_EVENT_COLUMNS if columns_only else 'e.*'}, p.slug AS project_slug, p.name AS project_name, "
            "i.short_id AS issue_number FROM events e "
            "JOIN projects p ON p.id = e.project_id JOIN issues i ON i.id = e.issue_id "
            f"WHERE e.timestamp >= ? AND (e.timestamp, e.id) < (?, ?){where} "
            "ORDER BY e.timestamp DESC, e.id DESC LIMIT ?",
            [q.start, *before, *q.project_ids, min(DISCOVER_BATCH, DISCOVER_SCAN - scanned)])
        if not batch:
            return discover_result(q, columns, records, False)
        records += await asyncio.to_thread(discover_records, batch, terms, needed, columns_only)
        scanned, before = scanned + len(batch), (batch[-1]["timestamp"], batch[-1]["id"])
    more = await store.one(f"SELECT 1 FROM events e WHERE e.timestamp >= ? AND (e.timestamp, e.id) < (?, ?){where} "
                           "LIMIT 1", [q.start, *before, *q.project_ids])
    return discover_result(q, columns, records, more is not None)


def discover_result(q: DiscoverQuery, columns: list[tuple[str, str | None, str]], records: list[dict[str, Any]],
                    capped: bool) -> tuple[list[dict[str, Any]], dict[str, str], bool]:
    rows = sort_discover(discover_rows(q.fields, columns, records), q.sort, q.fields)
    return rows, {f: c[2] for f, c in zip(q.fields, columns)}, capped


def discover_records(batch: list[sqlite3.Row], terms: list[tuple[bool, str | None, str]],
                     needed: set[str], columns_only: bool) -> list[dict[str, Any]]:
    """The named values of each event of a batch that matches the search (run in a thread)."""
    special = [t for t in terms if t[1] in DISCOVER_ROW_KEYS]
    terms = [t for t in terms if t[1] not in DISCOVER_ROW_KEYS]
    out = []
    for row in batch:
        ev = {"tags": [[key, row[key]] for key in ("level", "environment", "release") if row[key]]} if columns_only \
            else decompress_payload(row["payload"])  # what the events table holds needs no decoding
        tags = dict(map(tuple, ev.get("tags", [])))
        if all(fnmatch_value(discover_value(row, ev, tags, key), value) != negated for negated, key, value in special) \
                and event_matches(ev, terms):
            out.append({field: discover_value(row, ev, tags, field) for field in needed})
    return out


DISCOVER_SCAN = 10_000  # newest events of a range one query reads (decoding each: see README)

DISCOVER_BATCH = 500

# fields the events table answers: a query naming only these decodes no payload (10,000 events: 2.5 s
# instead of 6.5 s on the loaded 2-core test machine)
DISCOVER_COLUMN_FIELDS = {"id", "project", "project.id", "project.name", "issue", "issue.id", "timestamp", "level",
                          "environment", "release"}

DISCOVER_EVENT_COLUMNS = "e.id, e.event_id, e.project_id, e.issue_id, e.timestamp, e.level, e.environment, e.release"

DISCOVER_ROW_KEYS = {"project", "project.id", "issue", "issue.id", "event.type", "id", "title"}

DISCOVER_FIELDS = {"id", "title", "message", "project", "project.id", "project.name", "issue", "issue.id", "level",
                   "release", "environment", "platform", "culprit", "location", "event.type", "timestamp",
                   "transaction", "dist", "user", "user.id", "user.email", "user.username", "user.ip",
                   "user.display", "trace"}


def discover_column(field: str) -> tuple[str, str | None, str]:
    """A requested field → (function or "", its argument or the field, Sentry's type of the answer)."""
    call = re.fullmatch(r"(\w+)\(([^()]*)\)", field)
    if call:
        name, argument = call.group(1), call.group(2).strip()
        if name == "count" and argument in ("", "id"):
            return "count", None, "integer"
        if name == "count_unique" and discover_field_ok(argument):
            return "count_unique", argument, "integer"
        if name == "last_seen" and not argument:
            return "max", "timestamp", "date"
        if name in ("min", "max") and argument == "timestamp":
            return name, argument, "date"
        raise DiscoverError(f"{field} is not a function Discover answers here: count(), count_unique(field), "
                            f"last_seen(), min(timestamp), max(timestamp)")
    if not discover_field_ok(field):
        raise DiscoverError(f"{field[:80]!r} is not a field: name one of {', '.join(sorted(DISCOVER_FIELDS))} or tags[key]")
    return "", field, "date" if field == "timestamp" else "string"


def discover_field_ok(field: str) -> bool:
    return field in DISCOVER_FIELDS or re.fullmatch(r"tags\[[\w.:@/-]{1,200}\]", field) is not None


def discover_value(row: sqlite3.Row, ev: dict[str, Any], tags: dict[str, Any], field: str) -> Any:
    """One plain field of a stored event (its `tags` as a dict), as Discover names it."""
    direct = DISCOVER_DIRECT.get(field)
    if direct is not None:
        return direct(row, ev, tags)
    if field.startswith("user."):
        return as_dict(ev.get("user")).get(field[5:])
    if field.startswith("tags["):
        return tags.get(field[5:-1])
    if field in ("level", "release", "environment", "user", "dist", "transaction"):
        return tags.get(field)
    return ev.get(field) if field != "location" else event_location(ev)


def display_user(user: dict[str, Any]) -> Any:
    return user.get("email") or user.get("username") or user.get("id") or user.get("ip_address")


DISCOVER_DIRECT: dict[str, Callable[[sqlite3.Row, dict[str, Any], dict[str, Any]], Any]] = {
    "id": lambda row, ev, tags: row["event_id"], "project": lambda row, ev, tags: row["project_slug"],
    "project.id": lambda row, ev, tags: str(row["project_id"]), "project.name": lambda row, ev, tags: row["project_name"],
    "issue": lambda row, ev, tags: short_id(row["project_slug"], row["issue_number"]),
    "issue.id": lambda row, ev, tags: str(row["issue_id"]), "timestamp": lambda row, ev, tags: row["timestamp"],
    "event.type": lambda row, ev, tags: ev.get("type"), "message": lambda row, ev, tags: message_text(ev),
    "user.ip": lambda row, ev, tags: as_dict(ev.get("user")).get("ip_address"),
    "user.display": lambda row, ev, tags: display_user(as_dict(ev.get("user"))),
    "trace": lambda row, ev, tags: tags.get("trace"),
}


def discover_rows(names: list[str], columns: list[tuple[str, str | None, str]],
                  records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per event, or with aggregates one per distinct combination of the plain fields."""
    plain = [(n, c[1] or "") for n, c in zip(names, columns) if not c[0]]
    if all(not c[0] for c in columns):
        return [{**{n: r[f] for n, f in plain}, "id": r["id"]} for r in records]
    groups: dict[tuple[str, ...], list[dict[str, Any]]] = {}
    for r in records:
        groups.setdefault(tuple(json.dumps(r[f], sort_keys=True, default=str) for _, f in plain), []).append(r)
    out = []
    for members in groups.values():
        row = {n: members[0][f] for n, f in plain}
        for name, (fn, arg, _) in zip(names, columns):
            if fn == "count":
                row[name] = len(members)
            elif fn == "count_unique":
                row[name] = len({json.dumps(r[arg or ""], default=str) for r in members if r[arg or ""] is not None})
            elif fn in ("min", "max"):
                row[name] = (min if fn == "min" else max)(r["timestamp"] for r in members)
        out.append(row)
    return out


def sort_discover(rows: list[dict[str, Any]], sort: list[str], fields: list[str]) -> list[dict[str, Any]]:
    """Sort by each `sort` (a `-` prefix: descending), the last one first; None sorts lowest."""
    for key in reversed(sort):
        name = key.lstrip("-")
        if name not in fields and name != "id":
            raise DiscoverError(f"sort {name[:80]!r} must be one of the selected fields")
        rows.sort(key=lambda row: (row.get(name) is not None, row.get(name) if isinstance(row.get(name), (int, float))
                                   else str(row.get(name) or "")), reverse=key.startswith("-"))
    return rows


# -- releases: what shipped, where it went, what broke in it ---------------------------

async def release_list(store: Store, project_id: int | None, limit: int = 100) -> list[dict[str, Any]]:
    """Releases newest first, with the events and new issues each brought (from indexed tag rows)."""
    where, args = ("WHERE r.id IN (SELECT release_id FROM release_projects WHERE project_id = ?)", [project_id]) \
        if project_id is not None else ("", [])
    rows = await store.all(
        f"""SELECT r.*, (SELECT coalesce(sum(times_seen), 0) FROM issue_tags
                         WHERE key = 'release' AND value = r.version) AS event_count,
                        (SELECT count(*) FROM issues WHERE first_release = r.version) AS new_issues,
                        (SELECT max(date_finished) FROM deploys WHERE release_id = r.id) AS last_deploy
            FROM releases r {where} ORDER BY r.date_created DESC LIMIT ?""", [*args, limit])
    return [dict(r) for r in rows]


async def release_detail(store: Store, version: str) -> dict[str, Any] | None:
    """One release with its commits (and files), deploys, new issues and regressions."""
    release = await store.one("SELECT * FROM releases WHERE version = ?", (version,))
    if release is None:
        return None
    commits = [dict(c) for c in await release_commits(store, release["id"])]
    for commit in commits:
        commit["files"] = [dict(f) for f in await store.all(
            "SELECT path, type FROM commit_files WHERE commit_id = ? ORDER BY path", (commit["id"],))]
    return {
        "release": dict(release), "commits": commits,
        "refs": [dict(r) for r in await store.all(
            "SELECT rr.*, rp.name AS repository FROM release_refs rr JOIN repositories rp "
            "ON rp.id = rr.repository_id WHERE rr.release_id = ?", (release["id"],))],
        "deploys": [dict(d) for d in await release_deploys(store, release["id"])],
        "new_issues": await store.all(f"SELECT {ISSUE_COLUMNS} FROM issues i JOIN projects p ON p.id = i.project_id "
                                      "WHERE i.first_release = ? ORDER BY i.times_seen DESC LIMIT 100", (version,)),
        "regressions": await store.all(
            f"""SELECT {ISSUE_COLUMNS}, a.created AS regressed_at FROM issue_activity a
                JOIN issues i ON i.id = a.issue_id JOIN projects p ON p.id = i.project_id
                WHERE a.kind = 'set_regression' AND json_extract(a.data, '$.version') = ?
                ORDER BY a.created DESC LIMIT 100""", (version,)),
        "event_count": (await store.one("SELECT coalesce(sum(times_seen), 0) AS n FROM issue_tags "
                                        "WHERE key = 'release' AND value = ?", (version,)))["n"],
        "health": await release_health(store, version),
    }


async def release_commits(store: Store, release_id: int) -> list[sqlite3.Row]:
    """A release's commits, newest first (as sentry-cli sent them), with their repository's name."""
    return await store.all(f"{COMMIT_SQL} ORDER BY rc.position", (release_id,))


COMMIT_SQL = """SELECT c.*, rp.name AS repository FROM release_commits rc JOIN commits c ON c.id = rc.commit_id
  JOIN repositories rp ON rp.id = c.repository_id WHERE rc.release_id = ?"""


async def release_deploys(store: Store, release_id: int) -> list[sqlite3.Row]:
    """A release's deploys, latest first."""
    return await store.all("SELECT * FROM deploys WHERE release_id = ? ORDER BY date_finished DESC, id DESC",
                           (release_id,))


async def suspect_commits(store: Store, issue: sqlite3.Row, frames: list[dict[str, Any]],
                          limit: int = 3) -> list[dict[str, Any]]:
    """Commits of the issue's first release (and the release before it) that touched a file of
    an in-app frame: the ones nearest the crash first, then the first release's own."""
    release = await store.one("SELECT * FROM releases WHERE version = ?", (issue["first_release"] or "",))
    paths = [text(f.get("abs_path") or f.get("filename")) for f in reversed(frames) if f.get("in_app")]
    if release is None or not paths:
        return []
    releases = [release["id"]] + [r["id"] for r in await store.all(
        """SELECT r.id FROM releases r JOIN release_projects rp ON rp.release_id = r.id
           WHERE rp.project_id = ? AND r.date_created < ? ORDER BY r.date_created DESC LIMIT 1""",
        (issue["project_id"], release["date_created"]))]
    rows = await store.all(
        f"""SELECT c.*, f.path, r.version FROM release_commits rc JOIN commits c ON c.id = rc.commit_id
            JOIN commit_files f ON f.commit_id = c.id JOIN releases r ON r.id = rc.release_id
            WHERE rc.release_id IN ({','.join('?' * len(releases))})""", releases)
    ranked: dict[str, dict[str, Any]] = {}
    for row in rows:
        rank = next((i for i, path in enumerate(paths) if path.endswith(row["path"]) or row["path"].endswith(path)), None)
        if rank is not None and (row["sha"] not in ranked or rank < ranked[row["sha"]]["rank"]):
            ranked[row["sha"]] = {**dict(row), "rank": rank}
    return sorted(ranked.values(), key=lambda c: (c["rank"], c["version"] != release["version"],
                                                  -(c["timestamp"] or 0)))[:limit]


def save_release(conn: sqlite3.Connection, version: str, project_ids: list[int], columns: dict[str, Any],
                 commits: list[dict[str, Any]] | None, refs: list[dict[str, Any]] | None) -> bool:
    """Create or update a release; True when it is new."""
    created = False
    for project_id in project_ids:
        created = link_release(conn, project_id, version, time.time()) or created
    release_id = conn.execute("SELECT id FROM releases WHERE version = ?", (version,)).fetchone()[0]
    if columns:
        conn.execute(f"UPDATE releases SET {', '.join(f'{c} = ?' for c in columns)} WHERE id = ?",
                     (*columns.values(), release_id))
    if refs is not None:
        conn.execute("DELETE FROM release_refs WHERE release_id = ?", (release_id,))
        conn.executemany("INSERT OR REPLACE INTO release_refs (release_id, repository_id, commit_sha, previous_sha) "
                         "VALUES (?, ?, ?, ?)", [(release_id, r["repository_id"], r["commit"], r["previous"])
                                                 for r in refs])
    if commits is None and refs is not None:  # no provider to ask for the range: the head commits stand for it
        commits = [{"sha": r["commit"], "repository": r["repository"]} for r in refs]
    if commits is not None:
        conn.execute("DELETE FROM release_commits WHERE release_id = ?", (release_id,))
        conn.executemany("INSERT OR IGNORE INTO release_commits (release_id, commit_id, position) VALUES (?, ?, ?)",
                         [(release_id, save_commit(conn, c), position) for position, c in enumerate(commits)])
        resolve_fixed_issues(conn, version, commits)
    return created


def save_commit(conn: sqlite3.Connection, commit: dict[str, Any]) -> int:
    """Store a commit (known fields win over missing ones) and its changed files; returns its id."""
    commit_id = conn.execute(
        """INSERT INTO commits (repository_id, sha, author_name, author_email, message, timestamp)
           VALUES (?, ?, ?, ?, ?, ?)
           ON CONFLICT (repository_id, sha) DO UPDATE SET author_name = coalesce(excluded.author_name, author_name),
               author_email = coalesce(excluded.author_email, author_email),
               message = coalesce(excluded.message, message), timestamp = coalesce(excluded.timestamp, timestamp)
           RETURNING id""",
        (repository_id(conn, commit["repository"]), commit["sha"], commit.get("author_name"),
         commit.get("author_email"), commit.get("message"), commit.get("timestamp"))).fetchone()[0]
    if commit.get("files"):
        conn.execute("DELETE FROM commit_files WHERE commit_id = ?", (commit_id,))
        conn.executemany("INSERT OR REPLACE INTO commit_files (commit_id, path, type) VALUES (?, ?, ?)",
                         [(commit_id, path, kind) for path, kind in commit["files"]])
    return commit_id


def resolve_fixed_issues(conn: sqlite3.Connection, version: str, commits: list[dict[str, Any]]) -> None:
    """A commit message saying `Fixes PAYMENTS-1A` resolves that issue in the commit's release."""
    now = time.time()
    for commit in commits:
        for group in FIXES_RE.findall(commit.get("message") or ""):
            for ref in re.split(r"\s*(?:,|\band\b)\s*", group):
                parsed = parse_short_id(ref)
                issue = parsed and conn.execute(
                    "SELECT i.* FROM issues i JOIN projects p ON p.id = i.project_id "
                    "WHERE p.slug = ? AND i.short_id = ?", parsed).fetchone()
                if issue and issue["status"] != "resolved":
                    change_status(conn, issue, "resolved", {"inRelease": version}, now)
                    record_activity(conn, issue["id"], "set_resolved_in_commit",
                                    {"commit": {"id": commit["sha"], "repository": commit["repository"],
                                                "message": commit.get("message")}}, now)


def delete_release(conn: sqlite3.Connection, release_id: int) -> None:
    """Forget a release and what hangs off it (its source maps too); events keep their release string."""
    for table in ("artifact_files", "artifact_bundles"):
        conn.execute(f"DELETE FROM {table} WHERE release = (SELECT version FROM releases WHERE id = ?)", (release_id,))
    for table in ("release_projects", "release_commits", "release_refs", "deploys"):
        conn.execute(f"DELETE FROM {table} WHERE release_id = ?", (release_id,))
    conn.execute("DELETE FROM releases WHERE id = ?", (release_id,))


def create_deploy(conn: sqlite3.Connection, release_id: int, deploy: dict[str, Any]) -> int:
    """Record a deploy of a release; its id."""
    return int(conn.execute("INSERT INTO deploys (release_id, environment, name, url, date_started, date_finished) "
                            "VALUES (?, ?, ?, ?, ?, ?)", (release_id, deploy["environment"], deploy["name"],
                                                          deploy["url"], deploy["date_started"],
                                                          deploy["date_finished"])).lastrowid or 0)


async def release_by_version(store: Store, version: str) -> sqlite3.Row | None:
    """A release with its counts (RELEASE_SQL), by version."""
    return await store.one(f"{RELEASE_SQL} WHERE r.version = ?", (version,))


RELEASE_SQL = """SELECT r.*,
    (SELECT min(first_seen) FROM issue_tags WHERE key = 'release' AND value = r.version) AS first_event,
    (SELECT max(last_seen) FROM issue_tags WHERE key = 'release' AND value = r.version) AS last_event,
    (SELECT count(*) FROM issues WHERE first_release = r.version) AS new_groups,
    (SELECT count(*) FROM release_commits WHERE release_id = r.id) AS commit_count,
    (SELECT count(*) FROM deploys WHERE release_id = r.id) AS deploy_count
  FROM releases r"""


async def releases_matching(store: Store, project_id: int | None, query: str, limit: int,
                            offset: int) -> list[sqlite3.Row]:
    """Releases (of one project, if given) whose version contains `query`, newest first."""
    where, args = ("r.id IN (SELECT release_id FROM release_projects WHERE project_id = ?)", [project_id]) \
        if project_id is not None else ("1", [])
    return await store.all(f"{RELEASE_SQL} WHERE {where} AND instr(r.version, ?) "
                           "ORDER BY r.date_created DESC, r.id DESC LIMIT ? OFFSET ?", [*args, query, limit, offset])


async def previous_release_with_commits(store: Store, release: sqlite3.Row) -> sqlite3.Row | None:
    """The newest older release of the same projects that has commits (sentry-cli starts the
    next commit range there)."""
    return await store.one(
        f"""{RELEASE_SQL} WHERE (r.date_created, r.id) < (?, ?)
            AND EXISTS (SELECT 1 FROM release_commits WHERE release_id = r.id)
            AND r.id IN (SELECT release_id FROM release_projects WHERE project_id IN
                         (SELECT project_id FROM release_projects WHERE release_id = ?))
            ORDER BY r.date_created DESC, r.id DESC LIMIT 1""",
        (release["date_created"], release["id"], release["id"]))


async def release_links(store: Store, release_id: int) -> dict[str, Any]:
    """What a release's summary shows beside its counts: its projects, last commit, last deploy
    and commit authors."""
    return {
        "projects": await store.all("SELECT p.* FROM projects p JOIN release_projects rp ON rp.project_id = p.id "
                                    "WHERE rp.release_id = ? ORDER BY p.slug", (release_id,)),
        "last_commit": await store.one(f"{COMMIT_SQL} ORDER BY rc.position LIMIT 1", (release_id,)),
        "last_deploy": await store.one("SELECT * FROM deploys WHERE release_id = ? "
                                       "ORDER BY date_finished DESC, id DESC LIMIT 1", (release_id,)),
        "authors": await store.all("SELECT DISTINCT c.author_name, c.author_email FROM release_commits rc "
                                   "JOIN commits c ON c.id = rc.commit_id "
                                   "WHERE rc.release_id = ? AND c.author_email IS NOT NULL", (release_id,))}


async def release_commit_files(store: Store, release_id: int) -> list[sqlite3.Row]:
    """The files a release's commits changed, one row per commit and file, by path."""
    return await store.all(
        f"""SELECT f.path, f.type, c.message, c.author_name, c.author_email, c.repository FROM ({COMMIT_SQL}) c
            JOIN commit_files f ON f.commit_id = c.id ORDER BY f.path""", (release_id,))


async def deploy_by_id(store: Store, deploy_id: int) -> sqlite3.Row | None:
    """A deploy by id (to answer its creation with the stored row)."""
    return await store.one("SELECT * FROM deploys WHERE id = ?", (deploy_id,))


async def listed_repositories(store: Store) -> list[sqlite3.Row]:
    """The registered repositories by name (not the local ones commits named, see LOCAL_REPOSITORY)."""
    return await store.all("SELECT * FROM repositories WHERE provider != ? ORDER BY name", (LOCAL_REPOSITORY,))


async def repository_by_name(store: Store, name: str) -> sqlite3.Row | None:
    """A repository by name, in any case (as sentry-cli matches them)."""
    return await store.one("SELECT * FROM repositories WHERE name = ? COLLATE NOCASE", (name,))


async def repository_by_id(store: Store, repository_id: int) -> sqlite3.Row | None:
    """A repository by id (to answer its registration with the stored row)."""
    return await store.one("SELECT * FROM repositories WHERE id = ?", (repository_id,))


# -- source maps: artifact bundles and release files, as sentry-cli uploads them (sourcemaps.md §3, §4) --
#
# sentry-cli sends a zip (an artifact bundle: manifest.json and the files) in chunks named by their
# SHA-1, then asks for it to be assembled: the chunks are joined, the zip read in a thread (bounded:
# each file, the whole upload) and its files stored, a few MiB per writer job. Older sentry-cli
# posts each file to the release instead. Processing finds the maps by debug id or by release, dist
# and URL (SourceMaps). A release's files go with it; retention ages them out with the events.

CHUNK_SIZE = 2 * MIB  # a power of two, as sentry-cli up to 2.39 needs
CHUNKS_PER_REQUEST = 4
CHUNK_LIFETIME = 3600.0  # seconds an unassembled chunk is kept


@dataclasses.dataclass
class ArtifactFile:
    """One file of an upload, compressed for storage (zstd), with what lookups match it by."""

    url: str
    type: str  # minified_source, source_map, source, release_file…
    debug_id: str | None
    headers: dict[str, str]
    size: int  # uncompressed
    sha1: str
    data: bytes


@dataclasses.dataclass
class ArtifactBundle:
    """An uploaded zip, read: its bundle id, the release and dist its manifest names, its files."""

    bundle_id: str
    release: str
    dist: str
    files: list[ArtifactFile]


class UploadRefused(Exception):
    """An upload the tracker will not store: 413 for the size caps, 400 for the rest."""

    def __init__(self, status: int, detail: str) -> None:
        super().__init__(detail)
        self.status, self.detail = status, detail


def read_artifact_bundle(data: bytes, max_file: int, max_total: int) -> ArtifactBundle:
    """Read an artifact bundle zip (CPU work: run it in a thread). Each file is read at most to
    `max_file` + 1 bytes, whatever its entry claims, and all of them to `max_total`."""
    try:
        archive = zipfile.ZipFile(io.BytesIO(data))
        if len(archive.infolist()) > 20_000:
            raise UploadRefused(413, "more than 20000 files in one upload")
        manifest = json.loads(bounded_entry(archive, "manifest.json", 16 * MIB))
    except (zipfile.BadZipFile, KeyError, ValueError, EOFError, zlib.error, NotImplementedError) as exc:
        raise UploadRefused(400, f"not an artifact bundle: {exc}") from None
    entries = manifest.get("files") if isinstance(manifest, dict) else None
    if not isinstance(entries, dict):
        raise UploadRefused(400, "not an artifact bundle: its manifest lists no files")
    files, total = [], 0
    for path, info in entries.items():
        info = as_dict(info)
        headers = {str(k).lower(): text(v, 1024) for k, v in as_dict(info.get("headers")).items()}
        try:
            content = bounded_entry(archive, path, max_file)
        except KeyError:
            raise UploadRefused(400, f"the manifest names {path!r}, which the bundle lacks") from None
        except (zipfile.BadZipFile, ValueError, EOFError, zlib.error, NotImplementedError) as exc:
            raise UploadRefused(400, f"{path}: {exc}") from None
        total += len(content)
        if total > max_total:
            raise UploadRefused(413, f"the files of this upload come to more than {max_total} bytes")
        debug_id = normalize_debug_id(headers.get("debug-id") or headers.get("debug_id"))
        files.append(artifact_file(text(info.get("url") or path, 2048), text(info.get("type"), 64) or "release_file",
                                   debug_id, headers, content))
    return ArtifactBundle(normalize_debug_id(manifest.get("debug_id")) or hashlib.sha1(data).hexdigest(),
                          text(manifest.get("release"), 250), text(manifest.get("dist"), 64), files)


def bounded_entry(archive: zipfile.ZipFile, path: str, limit: int) -> bytes:
    """A zip entry's bytes, refused (413) past `limit`: its stated size may lie, the read cannot."""
    with archive.open(path) as entry:
        content = entry.read(limit + 1)
    if len(content) > limit:
        raise UploadRefused(413, f"{path} is larger than {limit} bytes (the cap on one file)")
    return content


def artifact_file(url: str, kind: str, debug_id: str | None, headers: dict[str, str], content: bytes) -> ArtifactFile:
    return ArtifactFile(url, kind, debug_id, headers, len(content), hashlib.sha1(content).hexdigest(),
                        zstandard.ZstdCompressor(level=3).compress(content))


def normalize_debug_id(value: Any) -> str | None:
    """A debug id as a lower-case UUID (sentry-cli's are), or None."""
    try:
        return str(uuid.UUID(str(value)[:36])) if value else None
    except ValueError:
        return None


def save_chunks(conn: sqlite3.Connection, chunks: list[tuple[str, bytes]], now: float) -> None:
    """Writer job: keep uploaded chunks until their assembly (or an hour)."""
    conn.executemany("INSERT OR REPLACE INTO upload_chunks (sha1, data, expires) VALUES (?, ?, ?)",
                     [(sha1, data, now + CHUNK_LIFETIME) for sha1, data in chunks])


async def pending_chunk_bytes(store: Store) -> int:
    """What the chunks waiting for their assembly hold."""
    return (await store.one("SELECT coalesce(sum(length(data)), 0) FROM upload_chunks"))[0]


async def missing_chunks(store: Store, sha1s: list[str]) -> list[str]:
    """Of these chunks, those not uploaded yet (in order)."""
    have = {r[0] for r in await store.all(
        f"SELECT sha1 FROM upload_chunks WHERE sha1 IN ({','.join('?' * len(sha1s))})", sha1s)}
    return [sha1 for sha1 in dict.fromkeys(sha1s) if sha1 not in have]


async def chunk_sizes(store: Store, sha1s: list[str]) -> int:
    return (await store.one(f"SELECT coalesce(sum(length(data)), 0) FROM upload_chunks "
                            f"WHERE sha1 IN ({','.join('?' * len(set(sha1s)))})", list(set(sha1s))))[0]


async def joined_chunks(store: Store, sha1s: list[str]) -> bytes:
    """The chunks' bytes in this order: the uploaded file."""
    data = {r[0]: r[1] for r in await store.all(
        f"SELECT sha1, data FROM upload_chunks WHERE sha1 IN ({','.join('?' * len(set(sha1s)))})", list(set(sha1s)))}
    return b"".join(data[sha1] for sha1 in sha1s)


async def bundle_assembled(store: Store, checksum: str, project_ids: list[int], release: str, dist: str) -> bool:
    """Whether this upload (by checksum) is stored already for each of the projects."""
    found = await store.all(
        f"SELECT DISTINCT project_id FROM artifact_bundles WHERE checksum = ? AND release = ? AND dist = ? "
        f"AND project_id IN ({','.join('?' * len(project_ids))})", (checksum, release, dist, *project_ids))
    return len(found) == len(set(project_ids))


def save_bundle(conn: sqlite3.Connection, project_ids: list[int], bundle: ArtifactBundle, checksum: str,
                release: str, dist: str, now: float) -> list[int]:
    """Writer job: a bundle's row in each project (an upload of the same bundle replaces it, files
    and all) and its release for each; the rows' ids, for save_bundle_files."""
    ids = []
    for project_id in project_ids:
        old = conn.execute("SELECT id FROM artifact_bundles WHERE project_id = ? AND bundle_id = ? AND release = ? "
                           "AND dist = ?", (project_id, bundle.bundle_id, release, dist)).fetchone()
        if old:
            conn.execute("DELETE FROM artifact_files WHERE bundle_id = ?", (old[0],))
            conn.execute("DELETE FROM artifact_bundles WHERE id = ?", (old[0],))
        ids.append(conn.execute(
            "INSERT INTO artifact_bundles (project_id, bundle_id, checksum, release, dist, file_count, size, "
            "date_added) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            (project_id, bundle.bundle_id, checksum, release, dist, len(bundle.files),
             sum(f.size for f in bundle.files), now)).lastrowid)
        if release:
            link_release(conn, project_id, release, now)
    return ids


def save_bundle_files(conn: sqlite3.Connection, bundle_ids: list[int], files: list[ArtifactFile], now: float) -> None:
    """Writer job: some of a bundle's files (save_bundle gave the rows), a few MiB at a time."""
    for bundle_id in bundle_ids:
        project_id, release, dist = conn.execute("SELECT project_id, release, dist FROM artifact_bundles WHERE id = ?",
                                                 (bundle_id,)).fetchone()
        conn.executemany(
            "INSERT INTO artifact_files (bundle_id, project_id, release, dist, url, type, debug_id, headers, size, "
            "sha1, data, date_added) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            [(bundle_id, project_id, release, dist, f.url, f.type, f.debug_id, json.dumps(f.headers), f.size, f.sha1,
              f.data, now) for f in files])


def forget_chunks(conn: sqlite3.Connection, sha1s: list[str]) -> None:
    conn.executemany("DELETE FROM upload_chunks WHERE sha1 = ?", [(sha1,) for sha1 in set(sha1s)])


def save_release_file(conn: sqlite3.Connection, project_id: int, release: str, dist: str, file: ArtifactFile,
                      now: float) -> int | None:
    """Writer job: one file posted to a release (sentry-cli 1.x/2.x without chunks), in the
    release's own bundle for its dist; its id, or None when the release has a file of that name."""
    if conn.execute("SELECT 1 FROM artifact_files WHERE project_id = ? AND release = ? AND dist = ? AND url = ?",
                    (project_id, release, dist, file.url)).fetchone():
        return None
    link_release(conn, project_id, release, now)
    bundle_id = conn.execute(
        """INSERT INTO artifact_bundles (project_id, bundle_id, checksum, release, dist, file_count, size, date_added)
           VALUES (?, 'release-files', '', ?, ?, 1, ?, ?) ON CONFLICT (project_id, bundle_id, release, dist)
           DO UPDATE SET file_count = file_count + 1, size = size + excluded.size RETURNING id""",
        (project_id, release, dist, file.size, now)).fetchone()[0]
    save_bundle_files(conn, [bundle_id], [file], now)
    return conn.execute("SELECT max(id) FROM artifact_files WHERE bundle_id = ?", (bundle_id,)).fetchone()[0]


async def release_files(store: Store, version: str, project_id: int | None = None) -> list[sqlite3.Row]:
    """A release's uploaded files (release files and the files of its artifact bundles), by name."""
    where, args = ("AND project_id = ?", [project_id]) if project_id is not None else ("", [])
    return await store.all(
        f"""SELECT id, project_id, url, dist, type, debug_id, headers, size, sha1, date_added FROM artifact_files
            WHERE release = ? {where} ORDER BY url, dist, id LIMIT 1000""", [version, *args])


async def artifact_bundles(store: Store, project_id: int) -> list[sqlite3.Row]:
    """A project's artifact bundles, newest first."""
    return await store.all("SELECT * FROM artifact_bundles WHERE project_id = ? ORDER BY date_added DESC, id DESC "
                           "LIMIT 1000", (project_id,))


async def release_bundles(store: Store, version: str) -> list[sqlite3.Row]:
    """The artifact bundles uploaded for a release, with their project, newest first."""
    return await store.all("SELECT b.*, p.slug FROM artifact_bundles b JOIN projects p ON p.id = b.project_id "
                           "WHERE b.release = ? ORDER BY b.date_added DESC, b.id DESC LIMIT 1000", (version,))


# -- code mappings: from a stack frame to its source file, and back ------------------------

def checked_mapping(fields: dict[str, Any]) -> dict[str, str]:
    """A code mapping's columns, validated (the API and the form share this): an http(s)
    repository URL, and a provider that is inferred from the host when not given."""
    values = {}
    for column in MAPPING_COLUMNS:
        value = fields.get(column) or ""
        if not isinstance(value, str) or len(value) > 1000 or re.search(r"[\x00-\x1f\x7f]", value):
            raise MappingError(f"{column} must be a single line of text")
        values[column] = value.strip()
    try:
        url = urllib.parse.urlsplit(values["repository_url"])
        host = url.hostname or ""
    except ValueError:
        raise MappingError("the repository URL does not parse") from None
    if url.scheme not in ("http", "https") or not host or " " in values["repository_url"]:
        raise MappingError("the repository URL must be an http(s) URL such as https://github.com/acme/app")
    values["repository_url"] = values["repository_url"].rstrip("/").removesuffix(".git")
    values["provider"] = values["provider"].lower() or ("gitlab" if host.startswith("gitlab.") else "github")
    if values["provider"] not in PROVIDERS:
        raise MappingError("provider must be github or gitlab")
    values["default_branch"] = values["default_branch"] or "main"
    return values


MAPPING_COLUMNS = ("repository_url", "provider", "stack_root", "source_root", "default_branch")


class MappingError(ValueError):
    """An invalid code mapping: shown (a 400, or above the form) to whoever entered it."""


PROVIDERS = {"github": "GitHub", "gitlab": "GitLab"}


def save_code_mapping(conn: sqlite3.Connection, project_id: int, values: dict[str, str],
                      mapping_id: int | None = None) -> int:
    if mapping_id is None:
        return conn.execute(f"INSERT INTO code_mappings (project_id, {', '.join(MAPPING_COLUMNS)}) "
                            "VALUES (?, ?, ?, ?, ?, ?)", (project_id, *values.values())).lastrowid
    conn.execute(f"UPDATE code_mappings SET {', '.join(c + ' = ?' for c in MAPPING_COLUMNS)} WHERE id = ?",
                 (*values.values(), mapping_id))
    return mapping_id


async def project_mappings(store: Store, project_id: int) -> list[sqlite3.Row]:
    return await store.all("SELECT * FROM code_mappings WHERE project_id = ? ORDER BY id", (project_id,))


async def release_sha(store: Store, version: str) -> str | None:
    """The commit a release was built from: its ref, else its head commit (sentry-cli lists a
    release's commits newest first); None when the release has neither."""
    row = await store.one(
        """SELECT coalesce((SELECT commit_sha FROM release_refs WHERE release_id = r.id LIMIT 1),
                           (SELECT c.sha FROM release_commits rc JOIN commits c ON c.id = rc.commit_id
                            WHERE rc.release_id = r.id ORDER BY rc.position LIMIT 1)) AS sha
           FROM releases r WHERE r.version = ?""", (version,))
    return row["sha"] if row else None


def frame_link(frame: dict[str, Any], mappings: list[sqlite3.Row], sha_or_branch: str | None) -> str | None:
    """The in-app frame's line in its repository, by the mapping with the longest matching stack
    root, at the release's commit (or the mapping's default branch when None)."""
    if not frame.get("in_app"):
        return None
    found = [(len(m["stack_root"]), path, m) for m in mappings if (path := mapped_path(frame, m))]
    if not found:
        return None
    _, path, mapping = max(found, key=lambda f: f[0])
    blob = "/-/blob/" if mapping["provider"] == "gitlab" else "/blob/"
    line = f"#L{frame['lineno']}" if frame.get("lineno") else ""
    ref = urllib.parse.quote(sha_or_branch or mapping["default_branch"], safe="/")
    return f"{mapping['repository_url']}{blob}{ref}/{urllib.parse.quote(path, safe='/')}{line}"


def mapped_path(frame: dict[str, Any], mapping: sqlite3.Row) -> str | None:
    """The frame's file inside the repository, or None when the mapping's stack root is not its prefix."""
    root = mapping["stack_root"]
    if root:
        rest = next((p[len(root):] for p in (text(frame.get("abs_path")), text(frame.get("filename")))
                     if p.startswith(root)), None)
    else:
        rest = text(frame.get("filename") or frame.get("abs_path"))
    if not rest:
        return None
    return "/".join(part.strip("/") for part in (mapping["source_root"], rest) if part.strip("/"))


def code_query(path: str, function: str = "") -> str:
    """The issue search for issues whose in-app frames pass through a file (and function)."""
    return " ".join(f"stack.{key}:{quoted(value)}" for key, value in (("filename", path), ("function", function))
                    if value)


def code_view_url(slug: str, frame: dict[str, Any]) -> str | None:
    path = text(frame.get("filename"))
    if not frame.get("in_app") or not path:
        return None
    params = {"project": slug, "path": path, **({"function": frame["function"]} if frame.get("function") else {})}
    return "/code/?" + urllib.parse.urlencode(params)


async def all_code_mappings(store: Store) -> list[sqlite3.Row]:
    """Every project's code mappings (the organisation's list)."""
    return await store.all("SELECT * FROM code_mappings ORDER BY id")


async def code_mapping(store: Store, mapping_id: str) -> sqlite3.Row | None:
    """A code mapping by the id a URL or form gives (text: anything else simply matches none)."""
    return await store.one("SELECT * FROM code_mappings WHERE CAST(id AS TEXT) = ?", (mapping_id,))


def delete_code_mapping(conn: sqlite3.Connection, project_id: int, mapping_id: int | str) -> int:
    """Forget one of a project's code mappings; how many went (0 or 1)."""
    return conn.execute("DELETE FROM code_mappings WHERE id = ? AND project_id = ?", (mapping_id, project_id)).rowcount


# =============================================================================
# Alerts: rules judged in the writer, an outbox in the same transaction, a dispatcher that delivers
# =============================================================================
#
# A rule is Sentry's issue alert (conditions, filters, actions, an action interval). The writer
# judges a project's rules on every stored event and, when one fires, writes one outbox row per
# channel in the event's own transaction: a notification cannot be lost to a crash, and ingest
# never waits on Slack. The dispatcher task delivers due rows with timeouts, retries with
# backoff and jitter, and moves a row to the dead letters after its last try or a clear 4xx.

FREQUENCY = "sentry.rules.conditions.event_frequency.EventFrequencyCondition"

USER_FREQUENCY = "sentry.rules.conditions.event_frequency.EventUniqueUserFrequencyCondition"

TAGGED_FILTER = "sentry.rules.filters.tagged_event.TaggedEventFilter"

LATEST_RELEASE_FILTER = "sentry.rules.filters.latest_release.LatestReleaseFilter"

NOTIFY_SERVICE = "sentry.rules.actions.notify_event_service.NotifyEventServiceAction"

FIRST_SEEN = "sentry.rules.conditions.first_seen_event.FirstSeenEventCondition"

REGRESSION = "sentry.rules.conditions.regression_event.RegressionEventCondition"

REAPPEARED = "sentry.rules.conditions.reappeared_event.ReappearedEventCondition"

# the transition of the issue each state condition fires on
STATE_CONDITIONS = {FIRST_SEEN: "new", REGRESSION: "regression", REAPPEARED: "escalating"}

INTERVALS = {"1m": 1, "5m": 5, "15m": 15, "1h": 60, "1d": 1440, "1w": 10080, "30d": 43200}

FREQUENCIES = (5, 10, 30, 60, 180, 720, 1440, 10080, 43200)  # the action intervals a rule may have, minutes

SENTRY_LEVELS = {"50": "fatal", "40": "error", "30": "warning", "20": "info", "10": "debug"}

TAG_MATCHES = ("eq", "ne", "sw", "ew", "co", "nc", "is", "ns")

CHANNEL_KINDS = ("slack", "email", "pagerduty", "alertmanager", "webhook", "jira")

# the fields each kind needs, and the ones that are secrets (never shown back in full)
CHANNEL_FIELDS = {
    "slack": (("url",), ("url",)),
    "email": (("host", "from", "to"), ("password",)),
    "pagerduty": (("routing_key",), ("routing_key",)),
    "alertmanager": (("url",), ("password",)),
    "webhook": (("url",), ("url", "secret")),
    "jira": (("url", "project", "token"), ("token",)),
}

CHANNEL_DEFAULTS = {
    "email": {"port": 587, "security": "starttls", "username": "", "password": ""},
    "pagerduty": {"url": "https://events.pagerduty.com/v2/enqueue"},
    "jira": {"flavor": "cloud", "issue_type": "Bug", "email": ""},
}

RETRY_DELAYS = (0, 10, 60, 300, 1800, 7200, 21600, 43200)  # seconds before attempt 1, 2, …: about 17 hours

NOTIFY_ALL = "sentry.rules.actions.notify_event.NotifyEventAction"

LEVEL_FILTER = "sentry.rules.filters.level.LevelFilter"

JIRA_ACTION = "sentry.integrations.jira.notify_action.JiraCreateTicketAction"

DEFAULT_RULES = [
    {"name": "New issues and regressions: all channels", "actionMatch": "any", "filterMatch": "all",
     "frequency": 30, "conditions": [{"id": FIRST_SEEN}, {"id": REGRESSION}], "filters": [],
     "actions": [{"id": NOTIFY_ALL}]},
    {"name": "Fatal errors: a Jira issue", "actionMatch": "any", "filterMatch": "all", "frequency": 30,
     "conditions": [{"id": FIRST_SEEN}, {"id": REGRESSION}],
     "filters": [{"id": LEVEL_FILTER, "match": "gte", "level": "50"}], "actions": [{"id": JIRA_ACTION}]},
]


def check_url(value: Any, field: str) -> str:
    url = text(value, 2048).strip()
    try:
        parts = urllib.parse.urlsplit(url)
    except ValueError:  # an unclosed [IPv6 address
        raise AlertConfigError(f"{field} must be an http(s) URL") from None
    try:
        parts.port  # noqa: B018 -- raises on a port that is not a number from 0 to 65535
    except ValueError:
        raise AlertConfigError(f"{field}: the port must be a number from 1 to 65535") from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise AlertConfigError(f"{field} must be an http(s) URL")
    return url


class AlertConfigError(ValueError):
    """A rule or channel that cannot work: a 400, or shown above the form that sent it."""


# -- where a channel may send: public addresses only, unless the channel says allow_private -------
#
# A channel is a URL (or an SMTP host) the tracker connects to and whose answer it records: without
# a check it reaches the cloud metadata service, the loopback admin ports and the LAN (SSRF). The
# name is resolved once, every address it gives is checked, and the connection goes to those
# addresses (never a second lookup a DNS rebinding could answer differently); TLS still checks the
# certificate and sends SNI for the name. A team's Alertmanager on the LAN is fine when the channel
# says `allow_private = true` (admins only); metadata services stay refused even then.

def default_rules_everywhere(conn: sqlite3.Connection) -> None:
    """Migration: the projects that existed before alerts get the rules a new project gets."""
    for project in conn.execute("SELECT id FROM projects").fetchall():
        insert_default_rules(conn, project["id"])


def insert_default_rules(conn: sqlite3.Connection, project_id: int) -> None:
    for rule in DEFAULT_RULES:
        insert_rule(conn, project_id, {**rule, "environment": None})


def insert_rule(conn: sqlite3.Connection, project_id: int, rule: dict[str, Any], rule_id: int | None = None) -> int:
    writer_caches(conn).rules.pop(project_id, None)
    values = (rule["name"], json.dumps(rule), project_id)
    if rule_id is not None:
        conn.execute("UPDATE alert_rules SET name = ?, rule = ? WHERE project_id = ? AND id = ?", (*values, rule_id))
        return rule_id
    return int(conn.execute("INSERT INTO alert_rules (name, rule, project_id, created) VALUES (?, ?, ?, ?)",
                            (*values, time.time())).lastrowid or 0)


def connect_to(addresses: list[tuple[Any, ...]], timeout: float) -> socket.socket:
    """A connection to the first checked address that takes it, as socket.create_connection tries each."""
    error: OSError = OSError("the name resolved to no address")
    for family, kind, proto, _, address in addresses:
        sock = socket.socket(family, kind, proto)
        try:
            sock.settimeout(timeout)
            sock.connect(address)
            return sock
        except OSError as exc:
            sock.close()
            error = exc
    raise error


def masked_config(kind: str, config: dict[str, Any]) -> dict[str, Any]:
    return {key: masked_value(kind, key, value) for key, value in config.items()}


def masked_value(kind: str, key: str, value: Any) -> Any:
    """A channel's field as the API and pages show it: secrets masked, a URL's credentials filtered."""
    if key in CHANNEL_FIELDS[kind][1]:
        return mask_secret(value)
    return masked_url(value) if key == "url" and isinstance(value, str) else value


def mask_secret(value: Any) -> str:
    """Enough of a secret to recognise it, never enough to use it."""
    value = str(value or "")
    if not value:
        return ""
    if "://" in value:
        parts = urllib.parse.urlsplit(value)
        return f"{parts.scheme}://{parts.hostname}/…{value[-4:]}"
    return f"…{value[-4:]}" if len(value) > 12 else "…"


def masked_url(url: str) -> str:
    """A URL with the credentials written into it filtered: the password of `user:password@` and
    the query's values (`?token=`), as Sentry shows `[Filtered]` for a scrubbed value."""
    parts = urllib.parse.urlsplit(url)
    if parts.password is None and not parts.query:
        return url
    userinfo, at, hostport = parts.netloc.rpartition("@")
    netloc = f"{userinfo.partition(':')[0]}:[Filtered]@{hostport}" if parts.password is not None else parts.netloc
    query = "&".join(f"{pair.partition('=')[0]}=[Filtered]" for pair in parts.query.split("&") if pair)
    return urllib.parse.urlunsplit(parts._replace(netloc=netloc, query=query))


def ensure_config_channels(conn: sqlite3.Connection, channels: list[dict[str, Any]]) -> None:
    """The channels a TOML config declares, created or updated by name (the file wins)."""
    for spec in channels:
        config = {k: v for k, v in spec.items() if k not in ("name", "kind")}
        try:
            row = conn.execute("SELECT * FROM channels WHERE name = ?", (spec.get("name"),)).fetchone()
            checked = checked_channel(spec.get("kind"), spec.get("name"), config,
                                      json.loads(row["config"]) if row else None)
            save_channel(conn, str(spec["name"]), str(spec["kind"]), checked, row["id"] if row else None)
        except AlertConfigError as exc:
            raise SystemExit(f"[[channels]] {spec.get('name')!r}: {exc}") from None


def checked_channel(kind: Any, name: Any, config: Any, old: dict[str, Any] | None = None) -> dict[str, Any]:
    """A channel's validated config; a secret sent back masked (as the API shows it) keeps its value."""
    if kind not in CHANNEL_KINDS:
        raise AlertConfigError(f"kind must be one of {', '.join(CHANNEL_KINDS)}")
    if not isinstance(name, str) or not name.strip() or len(name) > 100:
        raise AlertConfigError("name: a non-empty name of at most 100 characters is required")
    if not isinstance(config, dict):
        raise AlertConfigError("config must be an object")
    required, secrets_ = CHANNEL_FIELDS[kind]
    merged = {**CHANNEL_DEFAULTS.get(kind, {}), **(old or {})}
    for key, value in config.items():
        if value is None or value == "" and key in secrets_:
            continue
        if old and value == masked_value(kind, key, old.get(key)):
            continue  # sent back as the API shows it: the stored value, credentials and all, stays
        # only these are numbers or lists by nature: an SMTP host sent as ["a"] or 2130706433 raised in the dispatcher
        typed = key in ("port", "to", "allow_private") and isinstance(value, (int, list))
        merged[key] = value if typed else text(value, 2048).strip()
    if old and any(merged.get(key) != old.get(key) for key in ("url", "host")):
        # moved elsewhere: the credentials it sends (token, password, routing key) stay behind unless given
        # again, or whoever may change channels points it at their host and reads them off "send test"
        for key in set(secrets_) - {"url", "secret"}:
            if merged.get(key) == old.get(key) != config.get(key):
                merged.pop(key, None)
    missing = [key for key in required if not merged.get(key)]
    if missing:
        raise AlertConfigError(f"a {kind} channel needs {', '.join(missing)}")
    if not isinstance(merged.setdefault("allow_private", False), bool):
        raise AlertConfigError("allow_private must be true or false")
    if "url" in merged:
        merged["url"] = check_url(merged["url"], "url")
        parts = urllib.parse.urlsplit(merged["url"])
        check_target(parts.hostname or "", parts.port or (443 if parts.scheme == "https" else 80),
                     merged["allow_private"], "url")
    if kind == "email":
        recipients = merged["to"] if isinstance(merged["to"], list) else re.split(r"[,\s]+", str(merged["to"]))
        merged["to"] = [r for r in (text(x, 254).strip() for x in recipients) if r]
        if not merged["to"] or any("@" not in r for r in merged["to"]):
            raise AlertConfigError("to: one or more email addresses")
        if merged["security"] not in ("starttls", "tls", "none"):
            raise AlertConfigError("security must be starttls, tls or none")
        try:
            merged["port"] = int(merged["port"])
        except (TypeError, ValueError):
            merged["port"] = 0
        if not 0 < merged["port"] < 65536:
            raise AlertConfigError("port must be a number from 1 to 65535")
        check_target(str(merged["host"]), merged["port"], merged["allow_private"], "host")
    if kind == "pagerduty" and len(str(merged["routing_key"])) != 32:
        raise AlertConfigError("routing_key: the 32-character integration key of an Events API v2 integration")
    if kind == "jira" and merged["flavor"] not in ("cloud", "datacenter"):
        raise AlertConfigError("flavor must be cloud (API v3, email + API token) or datacenter (API v2, a PAT)")
    if kind == "jira" and merged["flavor"] == "cloud" and not merged.get("email"):
        raise AlertConfigError("a Jira Cloud channel needs the email its API token belongs to")
    if kind == "webhook" and not merged.get("secret"):
        merged["secret"] = secrets.token_hex(32)
    return merged


def check_target(host: str, port: int, allow_private: bool, field: str) -> None:
    """A channel's host at creation: refused as at delivery; a name that does not resolve from here
    is accepted (DNS may be down for a minute), and each delivery checks it again."""
    with contextlib.suppress(OSError):
        resolve_target(host, port, allow_private, field)


def resolve_target(host: str, port: int, allow_private: bool, field: str = "url") -> list[tuple[Any, ...]]:
    """The checked addresses (getaddrinfo tuples) of a channel's host: connect to these only.
    Raises TargetRefused, or OSError when the name does not resolve. Any spelling of an IPv4
    address (2852039166, 0251.0376.0251.0376, 0xa9fea9fe) is parsed as the C library parses it."""
    name = host.strip("[]").rstrip(".").lower()
    if not name.isprintable():  # control characters, lone surrogates: no host, and not to be echoed
        raise TargetRefused(f"{field}: not a valid host name")
    try:
        try:
            infos = socket.getaddrinfo(name, port, type=socket.SOCK_STREAM, flags=socket.AI_NUMERICHOST)
        except socket.gaierror:  # a name, not an address in any spelling
            if name in METADATA_HOSTS:
                raise TargetRefused(f"{field}: {host} is a cloud metadata service") from None
            if not allow_private and ("." not in name or any(name == s or name.endswith("." + s)
                                                             for s in LOCAL_SUFFIXES)):
                raise TargetRefused(f"{field}: {host} is a local name; {PRIVATE_HINT}") from None
            infos = socket.getaddrinfo(name, port, type=socket.SOCK_STREAM)
    except UnicodeError:  # a label over 63 characters, an empty label
        raise TargetRefused(f"{field}: {host} is not a valid host name") from None
    for info in infos:
        ip = ipaddress.ip_address(str(info[4][0]).partition("%")[0])  # an IPv6 scope (%eth0) is no part of it
        spelled = f"{host} is" if host.strip("[]") == str(ip) else f"{host} is {ip},"
        if str(carried_ipv4(ip) or ip) in METADATA_HOSTS:  # [::ffff:169.254.169.254] reached it under allow_private
            raise TargetRefused(f"{field}: {spelled} a cloud metadata service")
        problem = None if allow_private else address_problem(ip)
        if problem:
            raise TargetRefused(f"{field}: {spelled} not a public address ({problem}); {PRIVATE_HINT}")
    return infos


class TargetRefused(AlertConfigError):
    """A channel host the tracker will not connect to: a 400 at creation, a dead letter at delivery."""


# cloud metadata services (AWS/OpenStack, ECS tasks, AWS over IPv6, Alibaba, GCP): they hand out credentials
METADATA_HOSTS = frozenset({"169.254.169.254", "169.254.170.2", "fd00:ec2::254", "100.100.100.200",
                            "metadata.google.internal", "metadata.goog", "metadata"})

# names that never leave the host or its network: RFC 6761 localhost, RFC 6762 .local (mDNS),
# ICANN's private-use .internal, RFC 8375 home.arpa; a name without a dot is a search-domain (LAN) name
LOCAL_SUFFIXES = ("localhost", "local", "internal", "home.arpa", "localdomain")

PRIVATE_HINT = "set allow_private = true on the channel (admins only) to send inside your own network"


def carried_ipv4(ip: ipaddress.IPv4Address | ipaddress.IPv6Address) -> ipaddress.IPv4Address | None:
    """The IPv4 address an IPv6 one carries (mapped ::ffff:a.b.c.d, 6to4, NAT64): where it really goes."""
    if not isinstance(ip, ipaddress.IPv6Address):
        return None
    return ip.ipv4_mapped or ip.sixtofour or (ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF) if ip in NAT64 else None)


NAT64 = ipaddress.ip_network("64:ff9b::/96")  # RFC 6052: the last 32 bits are the IPv4 address reached


def address_problem(ip: ipaddress.IPv4Address | ipaddress.IPv6Address) -> str | None:
    """Why an address is no place to send a notification, or None for a public one. An IPv6 address
    that carries an IPv4 one is judged by the IPv4 address."""
    embedded = carried_ipv4(ip)
    if embedded is not None:
        return address_problem(embedded)
    for problem, flag in (("unspecified", ip.is_unspecified), ("loopback", ip.is_loopback),
                          ("link-local", ip.is_link_local), ("multicast", ip.is_multicast),
                          ("reserved", ip.is_reserved), ("private", ip.is_private),
                          ("site-local", isinstance(ip, ipaddress.IPv6Address) and ip.is_site_local)):
        if flag:
            return problem
    return None if ip.is_global else "not globally routable"


def save_channel(conn: sqlite3.Connection, name: str, kind: str, config: dict[str, Any],
                 channel_id: int | None = None) -> int:
    if conn.execute("SELECT 1 FROM channels WHERE name = ? AND id IS NOT ?", (name, channel_id)).fetchone():
        raise AlertConfigError(f"a channel named {name!r} exists already")
    if channel_id is None:
        return int(conn.execute("INSERT INTO channels (name, kind, config, created) VALUES (?, ?, ?, ?)",
                                (name, kind, json.dumps(config), time.time())).lastrowid or 0)
    conn.execute("UPDATE channels SET name = ?, config = ? WHERE id = ?", (name, json.dumps(config), channel_id))
    return channel_id


def checked_rule(body: Any, channel_names: set[str]) -> dict[str, Any]:
    """A rule in Sentry's shape, validated: what the API stores and the dashboard edits."""
    if not isinstance(body, dict):
        raise AlertConfigError("the rule must be a JSON object")
    name = body.get("name")
    if not isinstance(name, str) or not name.strip() or len(name) > 200:
        raise AlertConfigError("name: a non-empty name of at most 200 characters is required")
    rule = {"name": name.strip(), "actionMatch": body.get("actionMatch", "any"),
            "filterMatch": body.get("filterMatch", "all"), "environment": body.get("environment") or None}
    if rule["actionMatch"] not in ("any", "all"):
        raise AlertConfigError("actionMatch must be any or all")
    if rule["filterMatch"] not in ("any", "all", "none"):
        raise AlertConfigError("filterMatch must be any, all or none")
    if rule["environment"] is not None and not isinstance(rule["environment"], str):
        raise AlertConfigError("environment must be a name or null")
    try:
        rule["frequency"] = int(body.get("frequency", 30))
    except (TypeError, ValueError):
        raise AlertConfigError("frequency: minutes between two alerts for the same issue") from None
    if rule["frequency"] not in FREQUENCIES:
        raise AlertConfigError(f"frequency must be one of {', '.join(map(str, FREQUENCIES))} (minutes)")
    rule["conditions"] = [checked_condition(c) for c in as_list(body.get("conditions"))]
    rule["filters"] = [checked_filter(f) for f in as_list(body.get("filters"))]
    rule["actions"] = [checked_action(a, channel_names) for a in as_list(body.get("actions"))]
    if not rule["actions"]:
        raise AlertConfigError("actions: at least one action is required")
    return rule


def checked_condition(cond: Any) -> dict[str, Any]:
    if not isinstance(cond, dict) or cond.get("id") not in (*STATE_CONDITIONS, FREQUENCY, USER_FREQUENCY):
        raise AlertConfigError(f"unknown condition {cond.get('id') if isinstance(cond, dict) else cond!r}")
    if cond["id"] in STATE_CONDITIONS:
        return {"id": cond["id"]}
    if cond.get("interval") not in INTERVALS:
        raise AlertConfigError(f"interval must be one of {', '.join(INTERVALS)}")
    try:
        value = int(cond.get("value"))
    except (TypeError, ValueError):
        value = -1
    if value < 1:
        raise AlertConfigError("value: a count of at least 1")
    return {"id": cond["id"], "value": value, "interval": cond["interval"]}


def checked_filter(flt: Any) -> dict[str, Any]:
    kind = flt.get("id") if isinstance(flt, dict) else None
    if kind == LATEST_RELEASE_FILTER:
        return {"id": kind}
    if kind == LEVEL_FILTER:
        level = str(flt.get("level", ""))
        level = next((num for num, name in SENTRY_LEVELS.items() if level in (num, name)), None)
        if level is None or flt.get("match") not in ("eq", "gte", "lte"):
            raise AlertConfigError("a level filter needs match (eq, gte, lte) and a level (fatal, error, … or 50, 40, …)")
        return {"id": kind, "match": flt["match"], "level": level}
    if kind == TAGGED_FILTER:
        key, match = text(flt.get("key"), MAX_TAG).strip(), flt.get("match", "eq")
        if not key or match not in TAG_MATCHES:
            raise AlertConfigError(f"a tag filter needs a key and match ({', '.join(TAG_MATCHES)})")
        return {"id": kind, "key": key, "match": match, "value": text(flt.get("value"), MAX_TAG)}
    raise AlertConfigError(f"unknown filter {kind!r}")


def checked_action(action: Any, channel_names: set[str]) -> dict[str, Any]:
    kind = action.get("id") if isinstance(action, dict) else None
    if kind == NOTIFY_ALL:
        return {"id": kind}
    if kind in (NOTIFY_SERVICE, JIRA_ACTION):
        service = action.get("service") or action.get("channel")
        if kind == NOTIFY_SERVICE or service:
            if service not in channel_names:
                raise AlertConfigError(f"no channel named {service!r}")
            return {"id": kind, "service": service}
        return {"id": kind}
    raise AlertConfigError(f"unknown action {kind!r}")


async def channel_names(store: Store) -> set[str]:
    """The names a rule's actions may notify."""
    return {r["name"] for r in await store.all("SELECT name FROM channels")}


async def all_channels(store: Store) -> list[sqlite3.Row]:
    """Every channel, by name."""
    return await store.all("SELECT * FROM channels ORDER BY name")


async def channel_by_id(store: Store, channel_id: str) -> sqlite3.Row | None:
    """A channel by the id a URL or form gives (text: anything else simply matches none)."""
    return await store.one("SELECT * FROM channels WHERE CAST(id AS TEXT) = ?", (channel_id,))


async def project_rules(store: Store, project_id: int) -> list[sqlite3.Row]:
    """A project's alert rules, oldest first."""
    return await store.all("SELECT * FROM alert_rules WHERE project_id = ? ORDER BY id", (project_id,))


async def project_rule(store: Store, project_id: int, rule_id: str) -> sqlite3.Row | None:
    """One of a project's alert rules by the id a URL gives."""
    return await store.one("SELECT * FROM alert_rules WHERE project_id = ? AND CAST(id AS TEXT) = ?",
                           (project_id, rule_id))


def delete_rule(conn: sqlite3.Connection, project_id: int, rule_id: str) -> int:
    """Remove one of a project's alert rules by the id a URL or form gives; how many went."""
    writer_caches(conn).rules.pop(project_id, None)
    return conn.execute("DELETE FROM alert_rules WHERE CAST(id AS TEXT) = ? AND project_id = ?",
                        (rule_id, project_id)).rowcount


# -- judging rules (writer thread, in the event's transaction) -------------------------------

def fire_rules(conn: sqlite3.Connection, issue_id: int, ev: PreparedEvent, transition: str | None) -> None:
    """Judge the project's rules on a stored event; a rule that fires (and has not fired for the
    issue within its action interval) queues one notification per channel it names."""
    for rule_id, rule in project_alert_rules(conn, ev.project_id):
        if rule.get("environment") and rule["environment"] != ev.environment:
            continue
        trigger = rule_trigger(conn, rule, issue_id, ev, transition)
        if not trigger or not filters_pass(conn, rule, ev):
            continue
        channels = action_channels(conn, rule)
        if channels and claim_rule(conn, rule_id, issue_id, rule, ev.received):
            for channel in channels:
                enqueue(conn, channel, issue_id, rule_id, trigger, {"rule": rule["name"], **event_snapshot(ev)})


def project_alert_rules(conn: sqlite3.Connection, project_id: int) -> list[tuple[int, dict[str, Any]]]:
    """A project's rules (id, parsed), kept by the writer until one of them is edited."""
    caches = writer_caches(conn)
    if project_id not in caches.rules:
        caches.rules[project_id] = [(row["id"], json.loads(row["rule"])) for row in conn.execute(
            "SELECT id, rule FROM alert_rules WHERE project_id = ?", (project_id,))]
    return caches.rules[project_id]


def rule_trigger(conn: sqlite3.Connection, rule: dict[str, Any], issue_id: int, ev: PreparedEvent,
                 transition: str | None) -> str | None:
    """What made the rule's conditions hold ("new", "regression", "frequency", …), or None.
    State conditions are judged first: they cost nothing, and most events meet none."""
    conditions = rule["conditions"]
    if not conditions:
        return "event"
    if transition is None and all(cond["id"] in STATE_CONDITIONS for cond in conditions):
        return None  # only a transition meets a state condition: most events, at no cost
    met = []
    for cond in sorted(conditions, key=lambda c: c["id"] not in STATE_CONDITIONS):
        held = condition_holds(conn, cond, issue_id, ev, transition)
        if held and rule["actionMatch"] == "any":
            return STATE_CONDITIONS.get(cond["id"], "frequency" if cond["id"] == FREQUENCY else "users")
        if not held and rule["actionMatch"] == "all":
            return None
        met.append(cond)
    return (transition or "frequency") if met and rule["actionMatch"] == "all" else None


def condition_holds(conn: sqlite3.Connection, cond: dict[str, Any], issue_id: int, ev: PreparedEvent,
                    transition: str | None) -> bool:
    if cond["id"] in STATE_CONDITIONS:
        return transition == STATE_CONDITIONS[cond["id"]]
    since = ev.received - 60 * INTERVALS[cond["interval"]]
    if cond["id"] == FREQUENCY:  # counting stops at the threshold: a storm costs no more than that
        sql = "SELECT count(*) FROM (SELECT 1 FROM events WHERE issue_id = ? AND timestamp >= ? LIMIT ?)"
    else:  # a user whose last event is in the window was seen in it
        sql = ("SELECT count(*) FROM (SELECT 1 FROM issue_tags WHERE issue_id = ? AND key = 'user' "
               "AND last_seen >= ? LIMIT ?)")
    return conn.execute(sql, (issue_id, since, cond["value"] + 1)).fetchone()[0] > cond["value"]


def filters_pass(conn: sqlite3.Connection, rule: dict[str, Any], ev: PreparedEvent) -> bool:
    results = [filter_passes(conn, flt, ev) for flt in rule["filters"]]
    return {"all": all(results), "any": any(results) or not results, "none": not any(results)}[rule["filterMatch"]]


def filter_passes(conn: sqlite3.Connection, flt: dict[str, Any], ev: PreparedEvent) -> bool:
    if flt["id"] == LEVEL_FILTER:
        have, want = LEVELS.index(ev.level) if ev.level in LEVELS else 3, LEVELS.index(SENTRY_LEVELS[flt["level"]])
        return {"eq": have == want, "gte": have >= want, "lte": have <= want}[flt["match"]]
    if flt["id"] == LATEST_RELEASE_FILTER:
        newest = conn.execute(RELEASES_SQL, {"project": ev.project_id, "limit": 1}).fetchone()
        return bool(ev.release) and newest is not None and newest["value"] == ev.release
    values = [v for k, v in ev.tags if k == flt["key"]]
    want, match = flt["value"], flt["match"]
    if match in ("is", "ns"):
        return bool(values) == (match == "is")
    tests = {"eq": lambda v: v == want, "ne": lambda v: v != want, "sw": lambda v: v.startswith(want),
             "ew": lambda v: v.endswith(want), "co": lambda v: want in v, "nc": lambda v: want not in v}
    return any(tests[match](v) for v in values) if match not in ("ne", "nc") else all(tests[match](v) for v in values)


def action_channels(conn: sqlite3.Connection, rule: dict[str, Any]) -> list[sqlite3.Row]:
    """The channels a rule's actions name (all of them but Jira, for "notify all")."""
    channels = conn.execute("SELECT * FROM channels ORDER BY id").fetchall()
    chosen: dict[int, sqlite3.Row] = {}
    for action in rule["actions"]:
        for channel in channels:
            named = action.get("service") in (None, channel["name"])
            if action["id"] == NOTIFY_ALL and channel["kind"] != "jira" or \
                    action["id"] == NOTIFY_SERVICE and named or \
                    action["id"] == JIRA_ACTION and channel["kind"] == "jira" and named:
                chosen[channel["id"]] = channel
    return list(chosen.values())


def claim_rule(conn: sqlite3.Connection, rule_id: int, issue_id: int, rule: dict[str, Any], now: float) -> bool:
    """The action interval: a rule fires for an issue at most once per `frequency` minutes."""
    return conn.execute(
        """INSERT INTO rule_fires (rule_id, issue_id, last_fired) VALUES (?, ?, ?)
           ON CONFLICT DO UPDATE SET last_fired = excluded.last_fired WHERE last_fired <= ? RETURNING 1""",
        (rule_id, issue_id, now, now - 60 * rule["frequency"])).fetchone() is not None


def enqueue(conn: sqlite3.Connection, channel: sqlite3.Row, issue_id: int | None, rule_id: int | None,
            trigger: str, snapshot: dict[str, Any]) -> None:
    """Queue one notification. A Jira channel files one Jira issue per tracker issue, ever: its
    key makes a second queued creation a no-op."""
    key = f"jira-{channel['id']}-{issue_id}" if channel["kind"] == "jira" and issue_id else uuid.uuid4().hex
    conn.execute("""INSERT OR IGNORE INTO outbox (channel_id, issue_id, rule_id, trigger, idempotency_key, payload,
                        status, attempts, next_attempt, created) VALUES (?, ?, ?, ?, ?, ?, 'pending', 0, ?, ?)""",
                 (channel["id"], issue_id, rule_id, trigger, key, json.dumps(snapshot), time.time(), time.time()))


def event_snapshot(ev: PreparedEvent) -> dict[str, Any]:
    """What a notification says about the event that caused it (the issue is read when sending)."""
    return {"event": {"event_id": ev.event_id, "timestamp": ev.timestamp, "level": ev.level,
                      "environment": ev.environment, "release": ev.release, "crash": ev.crash,
                      "tags": ev.tags[:50]}}


def alert_resolution(conn: sqlite3.Connection, issue_id: int) -> None:
    """A resolved issue resolves what its alerts opened (the PagerDuty incident, the Alertmanager
    alert) and tells the webhooks that were told about it. Its action intervals start over: if it
    comes back, that is news, however soon."""
    conn.execute("DELETE FROM rule_fires WHERE issue_id = ?", (issue_id,))
    for channel in conn.execute(
            """SELECT * FROM channels WHERE kind IN ('pagerduty', 'alertmanager', 'webhook') AND id IN
               (SELECT channel_id FROM outbox WHERE issue_id = ? AND trigger != 'resolved')""", (issue_id,)):
        enqueue(conn, channel, issue_id, None, "resolved", {})


# -- delivering (the dispatcher task; HTTP and SMTP run in threads) ----------------------------

def error_shown(last_error: str | None, admin: bool) -> str | None:
    """A delivery's error as its viewer may see it: a far end's answer (a metadata service's
    credentials, an internal page) is for admins, a read token gets the class of the error."""
    return last_error if admin or last_error is None else last_error.partition(": ")[0]


class Dispatcher(Background):
    """Delivers the outbox: due rows of one channel in order, channels side by side. A row is
    claimed (in_flight) before its attempt; a crash leaves it claimed, and the next start
    hands it out again, so every notification is delivered at least once — receivers that
    dedupe on its Idempotency-Key see it exactly once."""

    def __init__(self, app: Tracker) -> None:
        self.app = app
        settings = app.settings
        self.delays = [float(d) for d in settings.alerts.get("retry_delays", RETRY_DELAYS)] or [0.0]
        self.timeout = float(settings.alerts.get("timeout", 10))
        self.poll = float(settings.alerts.get("poll", 1))
        self.refresh = float(settings.alerts.get("refresh", 60))
        self.wake = asyncio.Event()
        self.refreshed = 0.0

    async def run(self) -> None:
        writer = self.app.writer
        await writer.submit(lambda conn: conn.execute(
            "UPDATE outbox SET status = 'pending' WHERE status = 'in_flight'").rowcount)
        while True:
            try:
                await self.round()
            except Exception:  # a broken round must not end delivery for good
                log.exception("alert dispatch failed")
            self.wake.clear()
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self.wake.wait(), self.poll)

    async def round(self) -> None:
        rows = await self.app.store.all(DUE_SQL, (time.time(),))
        by_channel: dict[int, list[sqlite3.Row]] = {}
        for row in rows:
            by_channel.setdefault(row["channel_id"], []).append(row)
        await asyncio.gather(*(self.deliver_in_order(batch) for batch in by_channel.values()))
        if time.time() - self.refreshed >= self.refresh:
            self.refreshed = time.time()
            await self.refresh_alertmanager()

    async def deliver_in_order(self, rows: list[sqlite3.Row]) -> None:
        for row in rows:
            if not await self.attempt(row):
                break  # a failed row keeps the channel's later rows for this issue waiting

    async def attempt(self, row: sqlite3.Row) -> bool:
        store = self.app.store
        writer = self.app.writer
        claimed = await writer.submit(lambda conn: conn.execute(
            "UPDATE outbox SET status = 'in_flight', attempts = attempts + 1 WHERE id = ? AND status = 'pending'",
            (row["id"],)).rowcount)
        if not claimed:
            return True
        row = await store.one("SELECT * FROM outbox WHERE id = ?", (row["id"],))
        channel = await store.one("SELECT * FROM channels WHERE id = ?", (row["channel_id"],))
        if channel is None:
            await writer.submit(lambda conn: conn.execute(
                "UPDATE outbox SET status = 'cancelled', last_error = 'channel deleted' WHERE id = ?", (row["id"],)))
            return True
        notice = await self.notice(row["issue_id"], row["trigger"], json.loads(row["payload"]),
                                   row["idempotency_key"])
        if notice is None:
            result = Delivery("dead", None, "the issue no longer exists")
        else:
            link = await store.one("SELECT * FROM issue_links WHERE issue_id = ? AND channel_id = ?",
                                   (row["issue_id"], channel["id"]))
            result = await asyncio.to_thread(deliver, notice, channel, link, row["id"], row["attempts"], self.timeout)
        await writer.submit(lambda conn: record_delivery(conn, row, channel, result, self.delays, time.time()))
        return result.outcome == "delivered"

    async def notice(self, issue_id: int | None, trigger: str, snapshot: dict[str, Any], key: str) -> Notice | None:
        """The notification as sent now: the issue as it is, the event as it was."""
        settings = self.app.settings
        if issue_id is None:  # an SLO's change of state, or a test from the channel's page
            issue = slo_subject(snapshot["slo"]) if "slo" in snapshot else {
                "id": "0", "shortId": "TEST-1", "title": "This is a test notification from tracker",
                "culprit": "tracker.send_test", "level": "info", "count": "1", "userCount": 0, "type": "default",
                "status": "unresolved", "metadata": {}, "firstSeen": iso(time.time()),
                "project": {"id": "0", "slug": "tracker", "name": "tracker"}}
        else:
            found = await self.app.store.one(f"SELECT {ISSUE_COLUMNS} FROM issues i JOIN projects p "
                                                   "ON p.id = i.project_id WHERE i.id = ?", (issue_id,))
            if found is None:
                return None
            issue = serialize_issue(found, settings)
        path = f"/projects/{issue['project']['slug']}/slo/" if "slo" in snapshot else f"/issues/{issue['id']}/"
        return Notice(trigger=trigger, rule=snapshot.get("rule", ""), issue=issue, event=snapshot.get("event", {}),
                      url=f"{settings.public_url}{path}", key=key,
                      instance=instance_uuid(settings), settings=settings)

    async def refresh_alertmanager(self) -> None:
        """Alertmanager forgets an alert that is not re-sent: re-post the open ones, as Prometheus does."""
        store = self.app.store
        for channel in await store.all("SELECT * FROM channels WHERE kind = 'alertmanager'"):
            links = await store.all("""SELECT l.* FROM issue_links l JOIN issues i ON i.id = l.issue_id
                                       WHERE l.channel_id = ? AND i.status = 'unresolved' LIMIT 1000""",
                                    (channel["id"],))
            alerts = []
            for link in links:
                notice = await self.notice(link["issue_id"], "new", {}, "")
                if notice:
                    alerts.append(alertmanager_alert(notice, json.loads(link["data"]), False))
            if alerts:
                await asyncio.to_thread(alertmanager_post, json.loads(channel["config"]), alerts, self.timeout)


DUE_SQL = """SELECT o.* FROM outbox o WHERE o.status = 'pending' AND o.next_attempt <= ?
    AND NOT EXISTS (SELECT 1 FROM outbox e WHERE e.channel_id = o.channel_id AND e.issue_id = o.issue_id
                    AND e.id < o.id AND e.status IN ('pending', 'in_flight'))
    ORDER BY o.id LIMIT 200"""


@dataclasses.dataclass
class Delivery:
    """The outcome of one attempt: delivered, or retry (after at least `retry_after`), or dead."""

    outcome: str
    status: int | None = None
    detail: str = ""
    retry_after: float = 0.0
    ref: str | None = None


def deliver(n: Notice, channel: sqlite3.Row, link: sqlite3.Row | None, outbox_id: int, attempts: int,
            timeout: float) -> Delivery:
    """One attempt at one notification, in a worker thread."""
    config = json.loads(channel["config"])
    kind = channel["kind"]
    allow_private = config.get("allow_private") is True
    if kind == "slack":
        result = json_call("POST", config["url"], slack_body(n), timeout, allow_private=allow_private)
        return result if result.outcome != "delivered" or result.detail.strip() in ("ok", "") else \
            Delivery("dead", result.status, f"Slack error: {result.detail[:200]!r}")
    if kind == "email":
        return send_email(config, email_message(n, config, outbox_id), timeout)
    if kind == "pagerduty":
        routing_key = link["data"] if link else config["routing_key"]  # resolve with the key that opened it
        dedup_key = f"tracker:{n.settings.organization}:{n.issue['id']}"
        result = json_call("POST", config["url"], pagerduty_body(n, routing_key, dedup_key), timeout,
                           allow_private=allow_private)
        return dataclasses.replace(result, ref=dedup_key if not n.resolves else None)
    if kind == "alertmanager":
        labels = json.loads(link["data"]) if link else alertmanager_labels(n)
        result = alertmanager_post(config, [alertmanager_alert(n, labels, n.resolves)], timeout)
        return dataclasses.replace(result, ref=json.dumps(labels) if not n.resolves else None)
    if kind == "webhook":
        resource, payload = webhook_body(n)
        body = json.dumps(payload).encode()
        return http_call("POST", config["url"], body, {"Content-Type": "application/json", "User-Agent": "tracker",
                                                       **webhook_headers(config, resource, body, n.key)}, timeout,
                         allow_private)
    if link:  # jira: one Jira issue per tracker issue
        return Delivery("delivered", None, f"already filed as {link['ref']}", ref=link["ref"])
    return jira_create(n, config, attempts, timeout)


def json_call(method: str, url: str, payload: Any, timeout: float, headers: dict[str, str] | None = None,
              allow_private: bool = False) -> Delivery:
    return http_call(method, url, json.dumps(payload).encode(),
                     {"Content-Type": "application/json", "User-Agent": "tracker", **(headers or {})}, timeout,
                     allow_private)


def http_call(method: str, url: str, body: bytes | None, headers: dict[str, str], timeout: float,
              allow_private: bool = False) -> Delivery:
    """One HTTP request to a checked address, classified: 2xx delivered; 429, 408, 5xx and network
    errors retried (429 no sooner than its Retry-After); a refused target, a redirect or any other
    answer is dead. Credentials in the URL (`https://user:pw@host/`) go as Basic auth."""
    parts = urllib.parse.urlsplit(url)
    secure = parts.scheme == "https"
    if parts.username is not None and "Authorization" not in headers:
        user, password = urllib.parse.unquote(parts.username), urllib.parse.unquote(parts.password or "")
        headers = {**headers, **basic_auth(user, password)}
    try:
        addresses = resolve_target(parts.hostname or "", parts.port or (443 if secure else 80), allow_private)
        hostport = parts.netloc.rpartition("@")[2]
        conn = PinnedHTTPSConnection(hostport, timeout=timeout, context=ssl.create_default_context()) if secure \
            else PinnedHTTPConnection(hostport, timeout=timeout)
        conn.addresses = addresses
        try:
            conn.request(method, urllib.parse.urlunsplit(("", "", parts.path or "/", parts.query, "")), body, headers)
            response = conn.getresponse()
            answer = response.read(2048).decode("utf-8", "replace")
        finally:
            conn.close()
    except TargetRefused as exc:
        return Delivery("dead", None, f"refused target: {exc}")
    except (OSError, ValueError, http.client.HTTPException) as exc:  # refused, reset, timed out, DNS, a bad port
        return Delivery("retry", None, f"{type(exc).__name__}: {exc}")
    if 200 <= response.status < 300:
        return Delivery("delivered", response.status, answer)
    if 300 <= response.status < 400:
        return Delivery("dead", response.status, f"HTTP {response.status}: a redirect, not followed")
    outcome = "retry" if response.status in (408, 429) or response.status >= 500 else "dead"
    return Delivery(outcome, response.status, f"HTTP {response.status}: {answer}",
                    parse_retry_after(response.getheader("Retry-After")))


def basic_auth(user: str, password: str) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()}


class PinnedHTTPConnection(http.client.HTTPConnection):
    """Connects to the addresses resolve_target checked, never to a fresh lookup of the name.
    http.client follows no redirects: a redirected notification is a failed one, never re-sent
    somewhere that was not checked."""

    addresses: list[tuple[Any, ...]]

    def connect(self) -> None:
        self.sock = connect_to(self.addresses, self.timeout)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


class PinnedHTTPSConnection(http.client.HTTPSConnection, PinnedHTTPConnection):
    """The same under TLS: HTTPSConnection wraps the pinned socket with the URL's host name, so
    SNI and the certificate check are for the name, not the address."""


def parse_retry_after(value: str | None) -> float:
    try:
        return max(float(value or 0), 0.0)
    except ValueError:
        return 60.0


def slack_body(n: Notice) -> dict[str, Any]:
    """Block Kit with a text fallback: header, the culprit with a link, the facts, why it fired."""
    title = f"{n.issue['shortId']}: {n.headline}"
    return {
        "text": slack_escape(first_line(title, 3000)), "unfurl_links": False, "unfurl_media": False,
        "blocks": [
            {"type": "header", "text": {"type": "plain_text", "text": first_line(n.headline, 150)}},
            {"type": "section", "text": {"type": "mrkdwn", "text": text(
                f"*<{n.url}|{slack_escape(n.issue['shortId'])}>* `{slack_escape(first_line(n.issue['culprit'] or '—', 2000))}`",
                2900)}},
            {"type": "section", "fields": [{"type": "mrkdwn", "text": text(f"*{k}*\n{slack_escape(first_line(v, 1000))}",
                                                                          1900)} for k, v in n.facts()][:10]},
            {"type": "context", "elements": [{"type": "mrkdwn", "text": text(
                f"{slack_escape(first_line(n.rule or 'tracker', 200))} · <{n.url}|open in tracker>", 2900)}]},
        ]}


def slack_escape(value: str) -> str:
    return value.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


@dataclasses.dataclass
class Notice:
    """Everything a channel's message is made of: the issue as the API shows it, the event and why."""

    trigger: str
    rule: str
    issue: dict[str, Any]
    event: dict[str, Any]
    url: str
    key: str
    instance: str
    settings: Settings

    @property
    def resolves(self) -> bool:
        """Whether this notice ends what an earlier one opened (an incident, a firing alert)."""
        return self.trigger in ("resolved", "slo_recovered")

    @property
    def headline(self) -> str:
        words = {"new": "New issue", "regression": "Regression", "escalating": "Escalating",
                 "frequency": "Frequent issue", "users": "Issue affecting many users", "resolved": "Resolved",
                 "test": "Test notification", "slo_breach": "SLO breached", "slo_recovered": "SLO recovered"}
        return f"{words.get(self.trigger, 'Alert')}: {self.issue['title']}"

    def facts(self) -> list[tuple[str, str]]:
        ev, issue = self.event, self.issue
        facts = [("Project", issue["project"]["name"]), ("Level", issue["level"]),
                 ("Environment", ev.get("environment") or "—"), ("Release", ev.get("release") or "—"),
                 ("Events", issue["count"]), ("Users", str(issue["userCount"]))]
        return facts + ([("Crashed in", ev["crash"])] if ev.get("crash") else [])


def send_email(config: dict[str, Any], msg: email.message.EmailMessage, timeout: float) -> Delivery:
    """SMTP in a thread, to a checked address: TLS as configured and never silently dropped; 4xx
    retried, 5xx dead."""
    context = ssl.create_default_context()
    try:
        addresses = resolve_target(config["host"], int(config["port"]), config.get("allow_private") is True, "host")
        smtp_class = PinnedSMTPSSL if config["security"] == "tls" else PinnedSMTP
        kwargs = {"context": context} if config["security"] == "tls" else {}
        with smtp_class(timeout=timeout, **kwargs) as smtp:
            smtp.addresses = addresses
            smtp.connect(config["host"], int(config["port"]))
            if config["security"] == "starttls":
                smtp.starttls(context=context)
            if config.get("username"):
                smtp.login(config["username"], config.get("password", ""))
            refused = smtp.send_message(msg)
        return Delivery("delivered", 250, f"refused: {', '.join(refused)}" if refused else "")
    except TargetRefused as exc:
        return Delivery("dead", None, f"refused target: {exc}")
    except smtplib.SMTPRecipientsRefused as exc:
        return Delivery("dead", None, f"recipients refused: {exc.recipients}")
    except smtplib.SMTPResponseException as exc:
        detail = f"SMTP {exc.smtp_code}: {exc.smtp_error.decode('utf-8', 'replace') if isinstance(exc.smtp_error, bytes) else exc.smtp_error}"
        return Delivery("retry" if 400 <= exc.smtp_code < 500 else "dead", exc.smtp_code, detail)
    except smtplib.SMTPNotSupportedError as exc:
        return Delivery("dead", None, f"the server does not offer STARTTLS: {exc}")
    except (OSError, smtplib.SMTPException) as exc:
        return Delivery("retry", None, f"{type(exc).__name__}: {exc}")


class PinnedSMTP(smtplib.SMTP):
    """SMTP to the addresses resolve_target checked; STARTTLS checks the certificate for the name."""

    addresses: list[tuple[Any, ...]]

    def _get_socket(self, host: str, port: int, timeout: float) -> socket.socket:
        return connect_to(self.addresses, timeout)


class PinnedSMTPSSL(smtplib.SMTP_SSL, PinnedSMTP):
    """Implicit TLS over the pinned socket (SMTP_SSL wraps it for the host's name)."""


def email_message(n: Notice, config: dict[str, Any], outbox_id: int) -> email.message.EmailMessage:
    """Plain and HTML parts; one thread per issue; marked as automatic so nobody auto-replies."""
    msg = email.message.EmailMessage(policy=MAIL_POLICY)
    msg["Subject"] = first_line(f"[{n.issue['project']['slug']}] {n.headline}", 200)
    msg["From"], msg["To"] = config["from"], ", ".join(config["to"])
    msg["Date"] = email.utils.formatdate(localtime=False)
    domain = urllib.parse.urlsplit(n.settings.public_url).hostname or "tracker"
    msg["Message-ID"] = f"<outbox-{outbox_id}.{n.key[:12]}@{domain}>"
    msg["References"] = msg["In-Reply-To"] = f"<issue-{n.issue['id']}@{domain}>"
    msg["Auto-Submitted"] = "auto-generated"
    lines = [n.headline, "", *(f"{k}: {v}" for k, v in n.facts()), f"Culprit: {n.issue['culprit']}", "", n.url]
    msg.set_content("\n".join(lines))
    rows = "".join(f"<tr><th align='left'>{html.escape(k)}</th><td>{html.escape(v)}</td></tr>" for k, v in n.facts())
    msg.add_alternative(
        f"<h2>{html.escape(n.headline)}</h2><p><code>{html.escape(n.issue['culprit'])}</code></p>"
        f"<table>{rows}</table><p><a href=\"{html.escape(n.url)}\">Open {html.escape(n.issue['shortId'])} in tracker</a></p>",
        subtype="html")
    return msg


# Header lines up to RFC 5322's limit of 998: folded at 78, a subject of 70 to 77 characters went whole
# onto the line after "Subject:", and a parser (Python's own) read it back with a leading space.
MAIL_POLICY = email.policy.default.clone(max_line_length=998)


def pagerduty_body(n: Notice, routing_key: str, dedup_key: str) -> dict[str, Any]:
    if n.resolves:
        return {"routing_key": routing_key, "event_action": "resolve", "dedup_key": dedup_key}
    ev = n.event
    return {
        "routing_key": routing_key, "event_action": "trigger", "dedup_key": dedup_key,
        "client": "tracker", "client_url": n.settings.public_url, "links": [{"href": n.url, "text": n.issue["shortId"]}],
        "payload": {"summary": first_line(n.headline, 1024), "source": n.issue["project"]["slug"],
                    "severity": PAGERDUTY_SEVERITY.get(n.issue["level"], "info"),
                    "timestamp": iso(ev.get("timestamp")) or iso(time.time()), "component": n.issue["culprit"][:255],
                    "group": n.issue["project"]["slug"], "class": n.issue["metadata"].get("type") or n.issue["type"],
                    "custom_details": {**dict(n.facts()), "issue": n.issue["shortId"], "url": n.url,
                                       "event_id": ev.get("event_id")}},
    }


PAGERDUTY_SEVERITY = {"fatal": "critical", "error": "error", "warning": "warning"}


def alertmanager_labels(n: Notice) -> dict[str, str]:
    return {"alertname": "TrackerIssue", "project": n.issue["project"]["slug"], "issue_id": n.issue["id"],
            "short_id": n.issue["shortId"], "severity": n.issue["level"]}


def alertmanager_post(config: dict[str, Any], alerts: list[dict[str, Any]], timeout: float) -> Delivery:
    """POST /api/v2/alerts, with HTTP Basic auth when the channel has a password (as Alertmanager's
    own clients send it to a --web.config.file with basic_auth_users)."""
    headers = basic_auth(config.get("username") or "", config["password"]) if config.get("password") else {}
    return json_call("POST", f"{config['url'].rstrip('/')}/api/v2/alerts", alerts, timeout, headers,
                     config.get("allow_private") is True)


def alertmanager_alert(n: Notice, labels: dict[str, str], resolved: bool) -> dict[str, Any]:
    """One postableAlert: stable labels are its identity; counts and words are annotations. An
    issue's alert is re-posted while open; an SLO breach holds until its recovery ends it."""
    now = time.time()
    return {"labels": labels, "generatorURL": n.url, "startsAt": iso(parse_timestamp(n.issue["firstSeen"])),
            "endsAt": iso(now if resolved else now + (86400 if n.issue["type"] == "slo" else 300)),
            "annotations": {"summary": n.headline, "description": n.issue["culprit"], "event_count": n.issue["count"],
                            "users": str(n.issue["userCount"]), "url": n.url, "level": n.issue["level"]}}


def webhook_body(n: Notice) -> tuple[str, dict[str, Any]]:
    """(resource, body) shaped like Sentry's integration-platform webhooks."""
    envelope = {"installation": {"uuid": n.instance},
                "actor": {"type": "application", "id": "tracker", "name": "tracker"}}
    if n.issue["type"] == "slo":
        return "metric_alert", {**envelope, "action": "resolved" if n.resolves else "critical",
                                "data": {"metric_alert": {"id": n.issue["id"], "title": n.issue["title"],
                                                          "status": n.issue["status"]},
                                         "description_title": n.headline, "description_text": n.issue["culprit"],
                                         "web_url": n.url}}
    if n.trigger == "resolved":
        return "issue", {**envelope, "action": "resolved",
                         "data": {"issue": {**n.issue, "url": n.url, "web_url": n.url,
                                            "project_url": f"{n.settings.public_url}/issues/?project={n.issue['project']['slug']}"}}}
    api_issue = f"{n.settings.public_url}/api/0/issues/{n.issue['id']}/"
    event = {**n.event, "timestamp": iso(n.event.get("timestamp")), "title": n.issue["title"],
             "culprit": n.issue["culprit"], "project": int(n.issue["project"]["id"]), "issue_id": n.issue["id"],
             "url": f"{api_issue}events/{n.event.get('event_id')}/", "web_url": n.url, "issue_url": api_issue}
    return "event_alert", {**envelope, "action": "triggered",
                           "data": {"event": event, "triggered_rule": n.rule,
                                    "issue_alert": {"title": n.rule, "settings": []}}}


def webhook_headers(config: dict[str, Any], resource: str, body: bytes, key: str) -> dict[str, str]:
    signature = hmac.new(str(config["secret"]).encode(), body, hashlib.sha256).hexdigest()
    return {"Request-ID": uuid.uuid4().hex, "Sentry-Hook-Resource": resource, "Sentry-Hook-Signature": signature,
            "Sentry-Hook-Timestamp": str(int(time.time())), "Idempotency-Key": key}


def jira_create(n: Notice, config: dict[str, Any], attempts: int, timeout: float) -> Delivery:
    label = f"tracker-{n.settings.organization}-{n.issue['id']}"
    if attempts > 1:  # the last try may have created it before it failed: adopt that one
        try:
            found = jira_find(config, label, timeout)
        except ConnectionError as exc:
            return Delivery("retry", None, f"searching Jira for {label}: {exc}")
        if found:
            return Delivery("delivered", 200, f"found {found}", ref=found)
    api = "/rest/api/3/issue" if config["flavor"] == "cloud" else "/rest/api/2/issue"
    result = json_call("POST", f"{config['url'].rstrip('/')}{api}", {"fields": jira_fields(n, config, label)},
                       timeout, jira_headers(config), config.get("allow_private") is True)
    if result.outcome == "delivered":
        result.ref = jira_answer(result.detail).get("key")
        if not isinstance(result.ref, str):  # retried: the next attempt first looks for what this one made
            return Delivery("retry", result.status, f"Jira answered {result.status} without an issue key: {result.detail}")
    return result


def jira_find(config: dict[str, Any], label: str, timeout: float) -> str | None:
    """The Jira issue an earlier, ambiguous attempt may have created (found by its label)."""
    path = "/rest/api/3/search/jql" if config["flavor"] == "cloud" else "/rest/api/2/search"
    query = urllib.parse.urlencode({"jql": f'labels = "{label}"', "fields": "summary"})
    result = http_call("GET", f"{config['url'].rstrip('/')}{path}?{query}", None, jira_headers(config), timeout,
                       config.get("allow_private") is True)
    if result.outcome != "delivered":
        raise ConnectionError(result.detail)
    found = jira_answer(result.detail).get("issues")
    if not isinstance(found, list) or not all(isinstance(i, dict) and "key" in i for i in found):
        raise ConnectionError(f"Jira answered {result.status} without a list of issues: {result.detail}")
    return found[0]["key"] if found else None


def jira_headers(config: dict[str, Any]) -> dict[str, str]:
    if config["flavor"] == "cloud":
        return {**basic_auth(config["email"], config["token"]), "Accept": "application/json"}
    return {"Authorization": f"Bearer {config['token']}", "Accept": "application/json"}


def jira_answer(detail: str) -> dict[str, Any]:
    """A 2xx answer's JSON object; {} for anything else (an SSO proxy's sign-in page, a cut-off body),
    which once raised inside the dispatcher and left the delivery in_flight for good."""
    try:
        answer = json.loads(detail or "{}")
    except ValueError:
        return {}
    return answer if isinstance(answer, dict) else {}


def jira_fields(n: Notice, config: dict[str, Any], label: str) -> dict[str, Any]:
    """Cloud wants an Atlassian document for the description (API v3); Data Center wiki markup (v2)."""
    project, issue_type = str(config["project"]), str(config["issue_type"])
    facts = "\n".join(f"{k}: {v}" for k, v in n.facts())
    if config["flavor"] == "cloud":
        description: Any = {"type": "doc", "version": 1, "content": [
            {"type": "paragraph", "content": [{"type": "text", "text": n.headline},
                                              {"type": "hardBreak"},
                                              {"type": "text", "text": n.url, "marks": [{"type": "link", "attrs": {"href": n.url}}]}]},
            {"type": "codeBlock", "content": [{"type": "text", "text": f"{facts}\nCulprit: {n.issue['culprit']}"}]}]}
    else:
        description = f"{n.headline}\n\n[{n.issue['shortId']}|{n.url}]\n\n{{code}}\n{facts}\nCulprit: {n.issue['culprit']}\n{{code}}"
    return {"project": {"id": project} if project.isdigit() else {"key": project},
            "issuetype": {"id": issue_type} if issue_type.isdigit() else {"name": issue_type},
            "summary": first_line(n.issue["title"], 255), "description": description, "labels": [label]}


def record_delivery(conn: sqlite3.Connection, row: sqlite3.Row, channel: sqlite3.Row, result: Delivery,
                    delays: Sequence[float], now: float) -> None:
    """Writer job: the attempt's outcome, the next try or the dead letter, and the issue's link to
    what the channel opened (its PagerDuty key, Alertmanager labels or Jira issue)."""
    status = result.outcome
    if status == "retry" and row["attempts"] >= len(delays):
        status = "dead"
    delay = delays[min(row["attempts"], len(delays) - 1)] * random.uniform(0.8, 1.2)
    conn.execute("""UPDATE outbox SET status = ?, last_status = ?, last_error = ?, next_attempt = ?,
                        delivered = CASE WHEN ? = 'delivered' THEN ? END, external_ref = coalesce(?, external_ref)
                    WHERE id = ?""",
                 ("pending" if status == "retry" else status, result.status,
                  result.detail[:ERROR_LIMIT] if status != "delivered" else None, now + max(delay, result.retry_after),
                  status, now, result.ref if channel["kind"] == "jira" else None, row["id"]))
    conn.execute("UPDATE channels SET failures = CASE WHEN ? THEN 0 ELSE failures + 1 END WHERE id = ?",
                 (status == "delivered", channel["id"]))
    if status == "delivered" and result.ref and row["issue_id"]:
        data = json.loads(channel["config"]).get("routing_key") if channel["kind"] == "pagerduty" else result.ref
        conn.execute("INSERT OR IGNORE INTO issue_links (issue_id, channel_id, kind, ref, data, created) "
                     "VALUES (?, ?, ?, ?, ?, ?)", (row["issue_id"], channel["id"], channel["kind"],
                                                   result.ref if channel["kind"] != "alertmanager" else "labels",
                                                   data, now))


# A delivery's error is kept as "<class>: <what the far end said>": everyone sees the class (`HTTP 400`,
# `ConnectionRefusedError`, `refused target`), only admins the rest, whose length is bounded here.
ERROR_LIMIT = 300


def slo_subject(slo: dict[str, Any]) -> dict[str, Any]:
    """An SLO's breach or recovery in the shape channels format an issue in (its id is stable per
    project, so PagerDuty and Alertmanager resolve the incident the breach opened)."""
    value = "no data" if slo["value"] is None else f"{slo['value'] * 100:.3g}%"
    return {"id": f"slo-{slo['project']}", "shortId": f"{slo['project'].upper()}-SLO", "type": "slo",
            "title": f"{slo['name']}: {value} {SLO_METRICS[slo['metric']]} (objective < {slo['objective'] * 100:g}%)",
            "culprit": f"{slo_words(slo)}; {slo['total']} in the window", "count": str(slo["total"]), "userCount": 0,
            "level": "error" if slo["state"] == "breached" else "info", "status": slo["state"], "metadata": {},
            "firstSeen": iso(time.time()), "project": {"id": "0", "slug": slo["project"], "name": slo["project_name"]}}


def instance_uuid(settings: Settings) -> str:
    """The `installation.uuid` of webhooks: stable for one tracker (its public URL)."""
    return str(uuid.uuid5(uuid.NAMESPACE_URL, settings.public_url))


def delete_channel(conn: sqlite3.Connection, channel_id: int) -> None:
    """Remove a channel: its pending deliveries are cancelled, its issue links forgotten."""
    conn.execute("UPDATE outbox SET status = 'cancelled', last_error = 'channel deleted' "
                 "WHERE channel_id = ? AND status IN ('pending', 'in_flight')", (channel_id,))
    conn.execute("DELETE FROM issue_links WHERE channel_id = ?", (channel_id,))
    conn.execute("DELETE FROM channels WHERE id = ?", (channel_id,))


def retry_delivery(conn: sqlite3.Connection, outbox_id: int) -> int:
    """Send a dead or cancelled delivery again from its first attempt; 0 when there is none such."""
    return conn.execute("UPDATE outbox SET status = 'pending', attempts = 0, next_attempt = ? "
                        "WHERE id = ? AND status IN ('dead', 'cancelled')", (time.time(), outbox_id)).rowcount


async def issue_alerts(store: Store, issue_id: int) -> dict[str, Any]:
    """What alerts did about an issue: the Jira issues and incidents it opened, its deliveries."""
    links = []
    for link in await store.all("SELECT l.*, c.name AS channel_name, c.config FROM issue_links l JOIN channels c "
                                "ON c.id = l.channel_id WHERE l.issue_id = ? AND l.kind != 'alertmanager'", (issue_id,)):
        site = urllib.parse.urlsplit(json.loads(link["config"])["url"]) if link["kind"] == "jira" else None
        href = f"{site._replace(netloc=site.netloc.rpartition('@')[2]).geturl().rstrip('/')}/browse/{link['ref']}" \
            if site else None  # never a password written into the Jira URL
        links.append({"kind": link["kind"], "ref": link["ref"], "channel_name": link["channel_name"], "href": href})
    deliveries = await store.all(f"{DELIVERY_SQL} WHERE o.issue_id = ? ORDER BY o.id DESC LIMIT 10", (issue_id,))
    return {"links": links, "deliveries": deliveries}


async def deliveries(store: Store, filters: Mapping[str, str], limit: int, offset: int = 0) -> list[sqlite3.Row]:
    """The delivery log, newest first, narrowed by DELIVERY_FILTERS' names (values as text)."""
    where = [f"CAST({DELIVERY_FILTERS[name]} AS TEXT) = ?" for name in filters]
    return await store.all(f"{DELIVERY_SQL} WHERE {' AND '.join(where) or '1'} ORDER BY o.id DESC LIMIT ? OFFSET ?",
                           [*filters.values(), limit, offset])


DELIVERY_FILTERS = {"status": "o.status", "issue": "o.issue_id", "channel": "o.channel_id"}

DELIVERY_SQL = """SELECT o.*, coalesce(c.name, '(deleted channel)') AS channel_name, coalesce(c.kind, '') AS channel_kind
    FROM outbox o LEFT JOIN channels c ON c.id = o.channel_id"""


def enqueue_test(conn: sqlite3.Connection, channel: sqlite3.Row) -> int:
    """Queue a test notification for a channel; the id of its delivery."""
    enqueue(conn, channel, None, None, "test", {"rule": "Test notification"})
    return int(conn.execute("SELECT max(id) FROM outbox").fetchone()[0])


# =============================================================================
# Release health and SLOs: sessions and transactions in minute buckets, objectives judged each minute
# =============================================================================
#
# Sessions (protocol brief §6) are counted once each, in the minute they started: a `session`
# update adds to `total` when it is new and to errored/crashed/abnormal the first time it gets
# there (session_state remembers what was counted); a `sessions` aggregate adds its counts as
# they are. Users are counted per day (`did`), enough for crash-free users over a period.
# Transactions keep a count, an error count and the summed duration per name and minute.

def store_health(conn: sqlite3.Connection, project_id: int, updates: list[HealthUpdate]) -> None:
    """Writer job: fold an envelope's sessions into their minute buckets; its transactions' counts are
    left to the batch's end (write_transaction_buckets)."""
    for u in updates:
        if u.kind == "transaction":
            defer(conn, write_transaction_buckets, (project_id, u.data["name"], u.release, u.environment, u.minute,
                                                    int(u.data["error"]), u.data["duration"]))
            continue
        counts = session_counts(conn, project_id, u)
        if any(counts):
            conn.execute("""INSERT INTO session_buckets (project_id, release, environment, minute, total, errored,
                                crashed, abnormal) VALUES (?, ?, ?, ?, ?, ?, ?, ?)
                            ON CONFLICT DO UPDATE SET total = total + excluded.total, errored = errored + excluded.errored,
                                crashed = crashed + excluded.crashed, abnormal = abnormal + excluded.abnormal""",
                         (project_id, u.release, u.environment, u.minute, *counts))
        if u.data.get("did"):
            conn.execute("""INSERT INTO session_users (project_id, release, environment, day, did, crashed)
                            VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT DO UPDATE SET crashed = max(crashed, excluded.crashed)""",
                         (project_id, u.release, u.environment, u.minute // 86400 * 86400, u.data["did"],
                          int(counts[2] > 0 or bool(u.data.get("crashed")))))


def write_transaction_buckets(conn: sqlite3.Connection, rows: list[tuple[Any, ...]]) -> None:
    """A batch's transactions (deferred by store_health) added up per minute bucket: one upsert a bucket,
    not one a transaction (a service's transactions share a few names)."""
    sums: dict[tuple[Any, ...], list[float]] = {}
    for *bucket, error, duration in rows:
        total = sums.setdefault(tuple(bucket), [0, 0, 0.0])
        total[0], total[1], total[2] = total[0] + 1, total[1] + error, total[2] + duration
    conn.executemany("""INSERT INTO transaction_buckets (project_id, name, release, environment, minute, count, errors,
                            duration_ms) VALUES (?, ?, ?, ?, ?, ?, ?, ?)
                        ON CONFLICT DO UPDATE SET count = count + excluded.count, errors = errors + excluded.errors,
                            duration_ms = duration_ms + excluded.duration_ms""",
                     [(*bucket, *total) for bucket, total in sums.items()])


def session_counts(conn: sqlite3.Connection, project_id: int, u: HealthUpdate) -> tuple[int, int, int, int]:
    """(total, errored, crashed, abnormal) this update adds: an aggregate's own counts, or what a
    session's update newly shows (each session counts once, whatever order its updates come in)."""
    d = u.data
    if u.kind == "aggregate":
        errored = d.get("errored", 0) + d.get("crashed", 0) + d.get("abnormal", 0)
        return d.get("exited", 0) + errored, errored, d.get("crashed", 0), d.get("abnormal", 0)
    seen = conn.execute("SELECT * FROM session_state WHERE project_id = ? AND sid = ?", (project_id, d["sid"])).fetchone()
    before = (1, seen["errored"], seen["crashed"], seen["abnormal"]) if seen else (0, 0, 0, 0)
    after = (1, int(before[1] or d["errored"]), int(before[2] or d["crashed"]), int(before[3] or d["abnormal"]))
    conn.execute("""INSERT INTO session_state (project_id, sid, minute, errored, crashed, abnormal) VALUES (?, ?, ?, ?, ?, ?)
                    ON CONFLICT DO UPDATE SET errored = excluded.errored, crashed = excluded.crashed,
                        abnormal = excluded.abnormal""", (project_id, d["sid"], u.minute, *after[1:]))
    return tuple(a - b for a, b in zip(after, before))  # type: ignore[return-value]


def parse_session(raw: dict[str, Any], received: float) -> list[HealthUpdate]:
    attrs, started = session_attrs(raw), parse_timestamp(raw.get("started"))
    sid = normalize_id(raw.get("sid"))
    status = raw.get("status") if raw.get("status") in SESSION_STATUSES else "ok"
    if attrs is None or sid is None or not fresh(started, received):
        return []
    errors = raw.get("errors") if isinstance(raw.get("errors"), int) and not isinstance(raw.get("errors"), bool) else 0
    return [HealthUpdate("session", *attrs, minute_of(started or received), {
        "sid": sid, "did": text(raw.get("did"), MAX_TAG) or None, "init": raw.get("init") is True,
        "errored": errors > 0 or status in ("crashed", "abnormal", "errored"), "crashed": status == "crashed",
        "abnormal": status == "abnormal"})]


def session_attrs(raw: dict[str, Any]) -> tuple[str, str] | None:
    """(release, environment) of a session payload; SDKs drop sessions without a release, so do we."""
    attrs = raw.get("attrs") if isinstance(raw.get("attrs"), dict) else {}
    release = text(attrs.get("release"), MAX_TAG).strip()
    return (release, text(attrs.get("environment"), MAX_TAG).strip() or "production") if release else None


SESSION_STATUSES = ("ok", "exited", "crashed", "abnormal", "errored")


def fresh(ts: float | None, received: float) -> bool:
    return ts is not None and received - MAX_SESSION_AGE <= ts <= received + MAX_FUTURE


MAX_SESSION_AGE = 5 * 86400


@dataclasses.dataclass
class HealthUpdate:
    """One session update, one aggregate entry or one transaction, ready for the writer."""

    kind: str  # "session", "aggregate" or "transaction"
    release: str
    environment: str
    minute: int
    data: dict[str, Any]


def minute_of(ts: float) -> int:
    return int(ts // 60 * 60)


def parse_aggregates(raw: dict[str, Any], received: float) -> list[HealthUpdate]:
    attrs = session_attrs(raw)
    entries = raw.get("aggregates") if attrs and isinstance(raw.get("aggregates"), list) else []
    if len(entries) > MAX_AGGREGATES:
        raise IngestError(413, f"more than {MAX_AGGREGATES} buckets")
    updates = []
    for entry in entries:
        started = parse_timestamp(entry.get("started")) if isinstance(entry, dict) else None
        if not fresh(started, received):
            continue
        counts = {k: entry[k] for k in ("exited", "errored", "crashed", "abnormal")
                  if isinstance(entry.get(k), int) and not isinstance(entry[k], bool) and 0 <= entry[k] < 10**9}
        updates.append(HealthUpdate("aggregate", *attrs, minute_of(started or received),  # type: ignore[misc]
                                    {**counts, "did": text(entry.get("did"), MAX_TAG) or None}))
    return updates


def transaction_health(raw: dict[str, Any], received: float, end: float | None, start: float | None
                       ) -> list[HealthUpdate]:
    """A transaction (its times read by the caller) as a count and a duration in its minute bucket."""
    if not fresh(end, received):
        return []
    trace = (raw.get("contexts") or {}).get("trace") if isinstance(raw.get("contexts"), dict) else None
    status = (trace or {}).get("status") if isinstance(trace, dict) else None
    return [HealthUpdate("transaction", text(raw.get("release"), MAX_TAG),
                         text(raw.get("environment"), MAX_TAG) or "production", minute_of(start or end or received),
                         {"name": text(raw.get("transaction"), MAX_TAG) or "<unlabeled transaction>",
                          "error": status not in (None, "ok", "unknown"),
                          "duration": max((end or 0) - (start or end or 0), 0.0) * 1000})]


HEALTH_PARSERS: dict[str, Callable[[dict[str, Any], float], list[HealthUpdate]]] = {
    "session": parse_session, "sessions": parse_aggregates}


def prune_session_state(conn: sqlite3.Connection, now: float) -> int:
    """Sessions older than SDKs may still update are forgotten (their counts stay in the buckets)."""
    return conn.execute("DELETE FROM session_state WHERE minute < ?", (now - MAX_SESSION_AGE,)).rowcount


# -- reading health: totals and rates over a period ----------------------------------------------

async def release_health(store: Store, version: str, since: float = 0) -> list[dict[str, Any]]:
    """A release's health per environment (all of its time unless `since`), busiest first."""
    envs = await store.all("SELECT environment, sum(total) AS n FROM session_buckets WHERE release = ? AND minute >= ? "
                           "GROUP BY environment ORDER BY n DESC", (version, since))
    return [{"environment": e["environment"], **await health_totals(
        store, {"release": version, "environment": e["environment"]}, since)} for e in envs]


async def health_totals(store: Store, filters: dict[str, Any], since: float = 0,
                        until: float = float("inf")) -> dict[str, Any]:
    """Sessions and users matching `filters` (project_id, release, environment) in a period,
    with Sentry's rates."""
    where, args = health_where("minute", filters, since, until)
    row = await store.one(f"{HEALTH_SQL} WHERE {where}", args)
    where, args = health_where("day", filters, since, until)
    users = await store.one(f"SELECT count(DISTINCT did) AS users, count(DISTINCT CASE WHEN crashed THEN did END) "
                            f"AS crashed_users FROM session_users WHERE {where}", args)
    total, crashed = row["total"], row["crashed"]
    return {"sessions": total, "errored": row["errored"], "crashed": crashed, "abnormal": row["abnormal"],
            "users": users["users"], "crashed_users": users["crashed_users"],
            "crash_free_sessions": 1 - rate(crashed, total) if total else None,
            "errored_rate": rate(row["errored"], total),
            "crash_free_users": 1 - rate(users["crashed_users"], users["users"]) if users["users"] else None}


def health_where(time_column: str, filters: dict[str, Any], since: float, until: float) -> tuple[str, list[Any]]:
    """A WHERE over session_buckets (minute) or session_users (day, so the first day counts whole)."""
    floor = 86400 if time_column == "day" else 60
    where, args = [f"{time_column} >= ?", f"{time_column} < ?"], [since // floor * floor, until]
    for column, value in filters.items():
        if value is not None:
            where.append(f"{column} = ?")
            args.append(value)
    return " AND ".join(where), args


HEALTH_SQL = """SELECT coalesce(sum(total), 0) AS total, coalesce(sum(errored), 0) AS errored,
    coalesce(sum(crashed), 0) AS crashed, coalesce(sum(abnormal), 0) AS abnormal FROM session_buckets"""


def rate(part: float, whole: float) -> float | None:
    return part / whole if whole else None


async def session_rows(store: Store, filters: dict[str, list[str]], start: float, end: float,
                       users: bool) -> tuple[list[sqlite3.Row], list[sqlite3.Row]]:
    """The session buckets of minutes in [start, end) that match `filters` (project_id, release,
    environment), and, when `users`, the user-days from start's day on."""
    where, args = filter_sql(filters)
    rows = await store.all(f"SELECT * FROM session_buckets WHERE minute >= ? AND minute < ? AND {where}",
                           [start, end, *args])
    days = await store.all(f"SELECT * FROM session_users WHERE day >= ? AND day < ? AND {where}",
                           [start // 86400 * 86400, end, *args]) if users else []
    return rows, days


def filter_sql(filters: dict[str, list[str]]) -> tuple[str, list[Any]]:
    """A WHERE that keeps rows whose column is one of its values, for each column filtered."""
    where, args = [], []
    for column, values in filters.items():
        where.append(f"{column} IN ({','.join('?' * len(values))})")
        args.extend(values)
    return (" AND ".join(where) or "1"), args


async def events_per_slot(store: Store, filters: dict[str, list[str]], start: float, end: float,
                          interval: int) -> dict[int, int]:
    """Events stored in [start, end) that match `filters`, counted per `interval` slot (0 at start),
    the slots with none left out. Each slot is a count over its range of the (project, time) index,
    which neither reads a table row nor sorts: 14 days at 1M events took 320 ms of CPU as a GROUP BY
    over the table, 66 ms so."""
    where, args = events_filter_sql(filters)
    rows = await store.all(
        f"""WITH RECURSIVE slots(n) AS (SELECT 0 UNION ALL SELECT n + 1 FROM slots WHERE n + 1 < ?)
            SELECT n AS slot, (SELECT count(*) FROM events WHERE timestamp >= ? + n * ? AND timestamp < ? + (n + 1) * ?
                               AND timestamp < ? AND {where}) AS n FROM slots""",
        [math.ceil((end - start) / interval), start, interval, start, interval, end, *args])
    return {r["slot"]: r["n"] for r in rows if r["n"]}


def events_filter_sql(filters: dict[str, list[str]]) -> tuple[str, list[Any]]:
    """filter_sql over events, naming every project when none is asked for: the events' time index
    starts with the project, and without it a period is a scan of the whole table."""
    where, args = filter_sql(filters)
    return (where if filters.get("project_id") else f"{where} AND project_id IN (SELECT id FROM projects)"), args


async def outcome_rows(store: Store, filters: dict[str, list[str]], start: float, end: float) -> list[sqlite3.Row]:
    """What was dropped (per reason and category) and what was accepted (reason 'none', as error
    events) in [start, end), per project and minute (`at`), with its quantity."""
    where, args = filter_sql(filters)
    dropped = await store.all(f"SELECT project_id, minute AS at, reason, category, quantity FROM dropped "
                              f"WHERE minute >= ? AND minute < ? AND {where}", [start, end, *args])
    where, args = events_filter_sql(filters)
    accepted = await store.all(f"SELECT project_id, CAST(timestamp / 60 AS INTEGER) * 60 AS at, 'none' AS reason, "
                               f"'error' AS category, count(*) AS quantity FROM events WHERE timestamp >= ? AND "
                               f"timestamp < ? AND {where} GROUP BY project_id, at", [start, end, *args])
    return [*dropped, *accepted]


async def session_totals(store: Store) -> list[sqlite3.Row]:
    """All sessions ever counted, per project slug, release and environment (the metrics page)."""
    return await store.all("SELECT p.slug, s.release, s.environment, sum(total) AS total, sum(errored) AS errored, "
                           "sum(crashed) AS crashed, sum(abnormal) AS abnormal FROM session_buckets s "
                           "JOIN projects p ON p.id = s.project_id GROUP BY p.slug, s.release, s.environment")


async def drops_since(store: Store, since: float) -> list[sqlite3.Row]:
    """What was dropped since `since`, per project and reason, the most first."""
    return await store.all("SELECT project_id, reason, sum(quantity) AS n FROM dropped WHERE minute >= ? "
                           "GROUP BY project_id, reason ORDER BY n DESC", (since,))


# -- SLOs: an objective on a project's error rate over a sliding window -----------------------------
#
# "errors < 0.1% over 10 minutes": the share of errored sessions (or crashed sessions, or error
# events per transaction) over the window must stay under the objective. The window ends `lag`
# seconds ago, because SDKs flush session aggregates only every 60 s; below `min_total` sessions
# the SLO has no data rather than a verdict. Each minute's judgement is kept as history; a breach
# and its recovery go out through the alert channels like an issue's alerts.

def slo_words(slo: dict[str, Any]) -> str:
    """`errored sessions < 0.1% over 10 minutes`"""
    return f"{SLO_METRICS[slo['metric']]} < {slo['objective'] * 100:g}% over {slo['window']} minutes" + \
        (f" in {slo['environment']}" if slo.get("environment") else "")


SLO_METRICS = {"errored_sessions": "errored sessions", "crashed_sessions": "crashed sessions",
               "error_events": "error events per transaction"}


def ensure_config_slos(conn: sqlite3.Connection, projects: list[dict[str, Any]]) -> None:
    """`slo = {…}` in a `[[projects]]` table sets that project's objective."""
    for spec in projects:
        if "slo" in spec:
            try:
                slo = checked_slo(spec["slo"])
            except AlertConfigError as exc:
                raise SystemExit(f"[[projects]] {spec.get('slug') or spec.get('name')}: slo: {exc}") from None
            row = conn.execute("SELECT id FROM projects WHERE slug = ?",
                               (str(spec.get("slug") or slugify(str(spec.get("name") or "project"))),)).fetchone()
            save_slo(conn, row["id"], slo)


def checked_slo(body: Any) -> dict[str, Any]:
    if not isinstance(body, dict):
        raise AlertConfigError("the SLO must be a JSON object")
    slo = {"name": text(body.get("name") or "Error budget", 200).strip() or "Error budget",
           "metric": body.get("metric", "errored_sessions"), "environment": body.get("environment") or None}
    if slo["metric"] not in SLO_METRICS:
        raise AlertConfigError(f"metric must be one of {', '.join(SLO_METRICS)}")
    try:
        slo["objective"] = float(body.get("objective", 0.001))
        slo["window"] = int(body.get("window", 10))
        slo["min_total"] = int(body.get("min_total", 100))
    except (TypeError, ValueError):
        raise AlertConfigError("objective (a fraction like 0.001), window (minutes), min_total: numbers") from None
    if not 0 < slo["objective"] < 1 or not 1 <= slo["window"] <= 1440 or slo["min_total"] < 1:
        raise AlertConfigError("objective must be between 0 and 1, window 1–1440 minutes, min_total at least 1")
    return slo


def save_slo(conn: sqlite3.Connection, project_id: int, slo: dict[str, Any]) -> None:
    """A project has one objective: set (or replace) it."""
    conn.execute("""INSERT INTO slos (project_id, config, state, value, total, since, updated) VALUES (?, ?, 'no_data',
                        NULL, 0, ?, ?) ON CONFLICT (project_id) DO UPDATE SET config = excluded.config""",
                 (project_id, json.dumps(slo), time.time(), time.time()))


class SloJudge(Background):
    """The minute clock: judges every objective (in the writer) once per interval."""

    def __init__(self, app: Tracker) -> None:
        settings = app.settings
        self.app = app
        self.interval = float(settings.slo.get("interval", 60))
        self.lag = float(settings.slo.get("lag", 120))

    async def run(self) -> None:
        while True:
            try:
                await self.app.writer.submit(lambda conn: judge_slos(conn, time.time(), self.lag))
                self.app.dispatcher.wake.set()
            except Exception:  # a failed judgement must not stop the clock
                log.exception("judging SLOs failed")
            await asyncio.sleep(self.interval)


def judge_slos(conn: sqlite3.Connection, now: float, lag: float) -> None:
    """Writer job, once a minute: each objective's value, state and history; a change of state
    between ok and breached is announced on every channel (Jira aside)."""
    for row in conn.execute("SELECT s.*, p.slug, p.name AS project_name FROM slos s JOIN projects p "
                            "ON p.id = s.project_id").fetchall():
        slo = json.loads(row["config"])
        value, total = slo_measure(conn, row["project_id"], slo, now - lag)
        state = "no_data" if value is None or total < slo["min_total"] else \
            "breached" if value >= slo["objective"] else "ok"
        conn.execute("""INSERT INTO slo_history (project_id, minute, value, total, state) VALUES (?, ?, ?, ?, ?)
                        ON CONFLICT DO UPDATE SET value = excluded.value, total = excluded.total,
                            state = CASE WHEN state = 'breached' THEN state ELSE excluded.state END""",
                     (row["project_id"], minute_of(now), value, total, state))  # a breached minute stays so
        conn.execute("UPDATE slos SET value = ?, total = ?, updated = ?, state = ?, "
                     "since = CASE WHEN state = ? THEN since ELSE ? END WHERE project_id = ?",
                     (value, total, now, state, state, now, row["project_id"]))
        if state != row["state"] and "breached" in (state, row["state"]) and state != "no_data":
            snapshot = {"slo": {"project": row["slug"], "project_name": row["project_name"], **slo, "value": value,
                                "total": total, "state": state}}
            for channel in conn.execute("SELECT * FROM channels WHERE kind != 'jira'").fetchall():
                enqueue(conn, channel, None, None, "slo_breach" if state == "breached" else "slo_recovered", snapshot)
    conn.execute("DELETE FROM slo_history WHERE minute < ?", (now - 30 * 86400,))
    prune_session_state(conn, now)


def slo_measure(conn: sqlite3.Connection, project_id: int, slo: dict[str, Any], end: float) -> tuple[float | None, int]:
    """(bad share, denominator) over the window ending at `end`."""
    start, env = minute_of(end - 60 * slo["window"]), slo.get("environment")
    where = "project_id = ? AND minute >= ? AND minute < ?" + (" AND environment = ?" if env else "")
    args = [project_id, start, end, *([env] if env else [])]
    if slo["metric"] == "error_events":
        total = conn.execute(f"SELECT coalesce(sum(count), 0) FROM transaction_buckets WHERE {where}", args).fetchone()[0]
        bad = conn.execute("SELECT count(*) FROM events WHERE project_id = ? AND timestamp >= ? AND timestamp < ? "
                           "AND level IN ('error', 'fatal')" + (" AND environment = ?" if env else ""), args).fetchone()[0]
    else:
        row = conn.execute(f"{HEALTH_SQL} WHERE {where}", args).fetchone()
        total, bad = row["total"], row["errored" if slo["metric"] == "errored_sessions" else "crashed"]
    return rate(bad, total), total


async def slo_row(store: Store, project_id: int) -> sqlite3.Row | None:
    """A project's objective (its config as JSON) and its current state, or None."""
    return await store.one("SELECT * FROM slos WHERE project_id = ?", (project_id,))


async def slo_history(store: Store, project_id: int, since: float) -> list[sqlite3.Row]:
    """A project's judgements since `since`, oldest first."""
    return await store.all("SELECT * FROM slo_history WHERE project_id = ? AND minute >= ? ORDER BY minute",
                           (project_id, since))


async def all_slos(store: Store) -> list[sqlite3.Row]:
    """Every objective with its project's slug (the metrics page)."""
    return await store.all("SELECT s.*, p.slug FROM slos s JOIN projects p ON p.id = s.project_id")


def delete_slo(conn: sqlite3.Connection, project_id: int) -> int:
    """Writer job: remove the project's objective; answers how many rows went."""
    return conn.execute("DELETE FROM slos WHERE project_id = ?", (project_id,)).rowcount


# =============================================================================
# Traces and logs: transactions with their spans, log lines, and the trace that joins them to errors
# =============================================================================
#
# A trace is what one request touched in every service: its error events (which name it in
# contexts.trace even with tracing off, kept in events.trace_id), its transactions (a root span and
# its child spans, kept compressed) and its log lines. Transactions and logs are bounded per project
# by count (`[traces] max_transactions`, `max_logs`, held within a few hundred rows of the cap by the
# writer job that stores them) and by age (`max_age_days`, removed by Retention). Sampling is the
# SDK's: what it sends is kept.

def trace_caps(settings: Settings) -> tuple[int, int, float]:
    """(max transactions, max logs per project, max age in days) from [traces]."""
    own = settings.traces
    return (max(int(own.get("max_transactions", 10_000)), 1), max(int(own.get("max_logs", 100_000)), 1),
            max(float(own.get("max_age_days", 14)), 0.0))


@dataclasses.dataclass
class PreparedItem:
    """A transaction, span or log item ready for the writer: release health's counts (HealthUpdate's
    fields), rows of `transactions` or `logs`, log lines refused, and what the envelope log says."""

    health: list[tuple[Any, ...]]
    rows: list[Any]
    refused: int
    outcome: str


def prepare_transaction(payload: bytes, project_id: int, received: float, policy: ScrubPolicy) -> PreparedItem:
    health, row = transaction_parts(json_object(payload, "transaction payload"), project_id, received, policy)
    return PreparedItem(health, [row] if row else [], 0, "stored" if row else "counted; not kept: no trace id, or too old")


def prepare_spans(payload: bytes, project_id: int, received: float, policy: ScrubPolicy) -> PreparedItem:
    segments, orphans = span_segments(json_object(payload, "span payload"))
    parts = [transaction_parts(raw, project_id, received, policy) for raw in segments]
    return PreparedItem([fields for health, _ in parts for fields in health], [row for _, row in parts if row], 0,
                        f"stored as {len(segments)} transactions"
                        + (f"; {orphans} spans without their segment not kept" if orphans else ""))


def transaction_parts(raw: dict[str, Any], project_id: int, received: float, policy: ScrubPolicy
                      ) -> tuple[list[tuple[Any, ...]], dict[str, Any] | None]:
    """A transaction's count for release health (HealthUpdate's fields) and its row (or None), its
    times read once for both."""
    end, start = parse_timestamp(raw.get("timestamp")), parse_timestamp(raw.get("start_timestamp"))
    return ([fields_of(update) for update in transaction_health(raw, received, end, start)],
            transaction_row(raw, project_id, received, policy, end, start))


def prepare_logs(payload: bytes, project_id: int, received: float, policy: ScrubPolicy) -> PreparedItem:
    rows, refused = log_rows(json_object(payload, "log payload"), project_id, received, policy)
    return PreparedItem([], rows, refused, f"stored {len(rows)} logs" + (f", dropped {refused}" if refused else ""))


ITEM_PREPARERS: dict[str, Callable[[bytes, int, float, ScrubPolicy], PreparedItem]] = {
    "transaction": prepare_transaction, "span": prepare_spans, "log": prepare_logs}


def transaction_row(raw: dict[str, Any], project_id: int, received: float, policy: ScrubPolicy, end: float | None,
                    start: float | None) -> dict[str, Any] | None:
    """A transaction as a row of `transactions`: its root span's fields, and its child spans (at most
    MAX_SPANS, slimmed), scrubbed and compressed; None without a trace id or when too old."""
    trace = as_dict(as_dict(raw.get("contexts")).get("trace"))
    trace_id, span_id = normalize_id(trace.get("trace_id")), span_id_of(trace.get("span_id"))
    if trace_id is None or span_id is None or end is None or not fresh(end, received):
        return None
    start = start if start is not None and start <= end and fresh(start, received) else end
    # a span (or a start) of 1970 would stretch the trace's clock and flatten every other span to a line
    spans = [span for span in map(slim_span, as_list(raw.get("spans"))[:MAX_SPANS])
             if span and fresh(span["start"], received) and fresh(span["end"], received)]
    data = {k: v for k, v in as_dict(trace.get("data")).items() if k not in NOISE_DATA}
    kept = {"trace": {"origin": trace.get("origin"), "data": data if len(json_dumps(data)) <= MAX_SPAN_TEXT else {}},
            "spans": spans, "measurements": measurements_of(raw.get("measurements")),
            "tags": normalize_tags(raw.get("tags"))}
    payload = json_dumps(kept)
    if may_need_scrubbing(payload, policy):
        scrub_event(kept, policy)
        payload = json_dumps(kept)
    return {"project_id": project_id, "event_id": normalize_id(raw.get("event_id")) or uuid.uuid4().hex,
            "trace_id": trace_id, "span_id": span_id,
            "parent_span_id": span_id_of(trace.get("parent_span_id")),
            "name": text(raw.get("transaction"), MAX_TAG) or "<unlabeled transaction>",
            "op": text(trace.get("op"), MAX_TAG), "status": text(trace.get("status"), 64) or "unknown",
            "release": text(raw.get("release"), MAX_TAG), "environment": text(raw.get("environment"), MAX_TAG) or "production",
            "start": start, "duration_ms": (end - start) * 1000, "spans": len(spans),
            "payload": TRACE_ZSTD.compress(payload), "received": received}


def measurements_of(raw: Any) -> dict[str, dict[str, Any]]:
    """A transaction's measurements (`{"fcp": {"value": 1200.5, "unit": "millisecond"}}`) as kept: at
    most MAX_MEASUREMENTS, each a number with its unit, so that what the trace page reads of a
    transaction beside its spans stays small."""
    kept = {}
    for name, entry in itertools.islice(as_dict(raw).items(), MAX_MEASUREMENTS):
        value = as_dict(entry).get("value")
        if type(value) in (int, float) and math.isfinite(value):
            kept[name[:MAX_TAG]] = {"value": value, "unit": text(as_dict(entry).get("unit"), 32) or "none"}
    return kept


MAX_MEASUREMENTS = 50


def may_need_scrubbing(raw: bytes, policy: ScrubPolicy) -> bool:
    """Whether scrub_event could change a transaction's kept part, whose JSON is `raw`: when
    no byte test finds anything in the whole it walks nothing (no part can hold what the whole does
    not), and these parts hold no IP address fields. Most pass, and are serialised once, not twice.
    For log lines `raw` is their values and their attributes' names, each name once: what the
    tests look for is in a name or in a value, and a hundred lines repeat one set of names."""
    return policy.enabled and (policy.scrub_ip or policy.json_may_hold_secret(raw))


def span_id_of(value: Any) -> str | None:
    """A span id (16 hex digits, lower case), or None."""
    candidate = value.strip().lower() if isinstance(value, str) else ""
    return candidate if SPAN_ID.fullmatch(candidate) else None


SPAN_ID = re.compile(r"[0-9a-f]{16}")

MAX_SPANS = 1000  # child spans kept of one transaction (Sentry's SDKs stop at 1,000 too)

TRACE_ZSTD = zstandard.ZstdCompressor(level=3)  # one per process: transactions are compressed where they are prepared


def slim_span(raw: Any) -> dict[str, Any] | None:
    """The fields of a child span the waterfall and the API show; None when it has no id or times."""
    raw = as_dict(raw)
    span_id, start, end = span_id_of(raw.get("span_id")), parse_timestamp(raw.get("start_timestamp")), \
        parse_timestamp(raw.get("timestamp"))
    if span_id is None or start is None or end is None:
        return None
    data = {k: v for k, v in as_dict(raw.get("data")).items() if k not in NOISE_DATA}
    return {"span_id": span_id, "parent_span_id": span_id_of(raw.get("parent_span_id")),
            "op": text(raw.get("op"), MAX_TAG), "description": text(raw.get("description"), MAX_SPAN_TEXT),
            "status": text(raw.get("status"), 64), "start": start, "end": max(end, start),
            **({"data": data} if data and len(json_dumps(data)) <= MAX_SPAN_TEXT else {})}


MAX_SPAN_TEXT = 2 * KIB

# Span data that says nothing about the request, only where it ran (Python puts it on every span): not
# kept, and no longer makes the scrubbing walk each span (a thread id is a long number, like a card's).
NOISE_DATA = frozenset({"thread.id", "thread.name"})


def span_segments(raw: dict[str, Any]) -> tuple[list[dict[str, Any]], int]:
    """Span v2 items as transactions in Sentry's transaction shape (a segment span is the root span,
    the spans naming it as their segment its children), and how many spans had no segment here."""
    spans = raw.get("items")
    if not isinstance(spans, list):
        raise IngestError(400, "span payload without items")
    spans = [s for s in spans[:MAX_SPANS_PER_ITEM] if isinstance(s, dict)]
    attributes = [log_attributes(s.get("attributes")) for s in spans]
    segments = {span_id_of(s.get("span_id")): (s, a) for s, a in zip(spans, attributes) if s.get("is_segment") is True}
    segments.pop(None, None)  # a segment without a span id has no children and no row
    children: dict[str, list[dict[str, Any]]] = {}
    orphans = 0
    for s, a in zip(spans, attributes):
        segment = span_id_of(a.get("sentry.segment.id"))
        if s.get("is_segment") is not True and segment in segments:
            children.setdefault(segment, []).append(
                {"span_id": s.get("span_id"), "parent_span_id": s.get("parent_span_id"), "op": a.get("sentry.op"),
                 "description": s.get("name"), "status": s.get("status"), "start_timestamp": s.get("start_timestamp"),
                 "timestamp": s.get("end_timestamp")})
        elif s.get("is_segment") is not True:
            orphans += 1
    return [{"type": "transaction", "transaction": s.get("name"), "start_timestamp": s.get("start_timestamp"),
             "timestamp": s.get("end_timestamp"), "release": a.get("sentry.release"),
             "environment": a.get("sentry.environment"), "spans": children.get(span_id, []),
             "contexts": {"trace": {"trace_id": s.get("trace_id"), "span_id": span_id,
                                    "parent_span_id": s.get("parent_span_id"), "op": a.get("sentry.op"),
                                    "status": "internal_error" if s.get("status") == "error" else s.get("status")}}}
            for span_id, (s, a) in segments.items()], orphans


MAX_SPANS_PER_ITEM = 1000  # Python's span batcher sends at most 1,000 an envelope


def store_transactions(conn: sqlite3.Connection, rows: list[dict[str, Any]], cap: int) -> None:
    """Writer job: keep an item's transactions (all of its envelope's project), within the project's cap."""
    conn.executemany("""INSERT INTO transactions (project_id, event_id, trace_id, span_id, parent_span_id, name, op,
                            status, release, environment, start, duration_ms, spans, payload, received)
                        VALUES (:project_id, :event_id, :trace_id, :span_id, :parent_span_id, :name, :op, :status,
                            :release, :environment, :start, :duration_ms, :spans, :payload, :received)""", rows)
    keep_to_cap(conn, "transactions", "start", rows[0]["project_id"], len(rows), cap)


def keep_to_cap(conn: sqlite3.Connection, table: str, column: str, project_id: int, added: int, cap: int) -> None:
    """After `added` rows of a project's `table` are stored: once it holds more than TRIM_EVERY rows
    beyond `cap`, delete its oldest beyond the cap (at most TRIM_BATCH at a time). The count is the
    writer's (WriterCaches.rows: counted once, then kept up), so the check reads no rows and the trim
    only those it deletes, from the old end: a scan of the rows kept, every 64 stored, had cost a log
    line at the 100,000 cap more than storing it."""
    counts, key = writer_caches(conn).rows, (table, project_id)
    if key in counts:
        counts[key] += added
    else:
        counts[key] = conn.execute(f"SELECT count(*) FROM {table} WHERE project_id = ?", (project_id,)).fetchone()[0]
    if counts[key] > cap + TRIM_EVERY:
        counts[key] -= conn.execute(f"DELETE FROM {table} WHERE id IN (SELECT id FROM {table} WHERE project_id = ? "
                                    f"ORDER BY {column} LIMIT ?)", (project_id, min(counts[key] - cap, TRIM_BATCH))).rowcount


TRIM_EVERY = 64  # rows a project's transactions or logs may hold beyond the cap before the oldest go

TRIM_BATCH = 5000


def log_rows(raw: dict[str, Any], project_id: int, received: float, policy: ScrubPolicy
             ) -> tuple[list[tuple[Any, ...]], int]:
    """A log item's lines as rows of `logs` (scrubbed: bodies by the value rules, attributes in full)
    and how many were refused (malformed, too old, beyond MAX_LOGS_PER_ITEM)."""
    items = raw.get("items")
    if not isinstance(items, list):
        raise IngestError(400, "log payload without items")
    logs = [log for log in map(functools.partial(parse_log, received=received), items[:MAX_LOGS_PER_ITEM]) if log]
    lines = [log["scrubbed"] for log in logs]
    if may_need_scrubbing(json_dumps([list(dict.fromkeys(key for line in lines for key in line["attributes"])),
                                      [[line["body"], *line["attributes"].values()] for line in lines]]), policy):
        scrub_event(dict(zip(map(str, itertools.count()), lines)), policy)  # each line checked alone
    rows = [(project_id, log["timestamp"], log["level"], log["severity"], text(log["scrubbed"]["body"], MAX_LOG_BODY),
             log["trace_id"], log["span_id"],
             text(log["scrubbed"]["attributes"].get("sentry.message.template"), MAX_LOG_BODY) or None,  # scrubbed too
             log["release"], log["environment"], log["sdk"], json_dumps(log["scrubbed"]["attributes"]).decode(), received)
            for log in logs]
    return rows, len(items) - len(rows)


MAX_LOGS_PER_ITEM = 100  # the logs spec's cap on one item

MAX_LOG_BODY = 8 * KIB


def parse_log(item: Any, received: float) -> dict[str, Any] | None:
    """One log line in the shapes both SDKs send (Python: span_id on top and the severity number only
    as an attribute; JS: severity_number on top and the span id as an attribute), or None."""
    item = as_dict(item)
    timestamp = parse_timestamp(item.get("timestamp"))
    if not fresh(timestamp, received) or not isinstance(item.get("body"), str):
        return None
    attributes = log_attributes(item.get("attributes"))
    level = text(item.get("level"), 16).lower()
    level = "warn" if level == "warning" else level
    severity = item.get("severity_number", attributes.get("sentry.severity_number"))
    if not isinstance(severity, int) or isinstance(severity, bool) or not 1 <= severity <= 24:
        severity = SEVERITY_NUMBERS.get(level, 9)
    if level not in SEVERITY_NUMBERS:
        level = next(name for name, number in reversed(SEVERITY_NUMBERS.items()) if severity >= number)
    return {"timestamp": timestamp, "level": level, "severity": severity, "trace_id": normalize_id(item.get("trace_id")),
            "span_id": span_id_of(item.get("span_id")) or span_id_of(attributes.get("sentry.trace.parent_span_id")),
            "release": text(attributes.get("sentry.release"), MAX_TAG),
            "environment": text(attributes.get("sentry.environment"), MAX_TAG) or "production",
            "sdk": text(attributes.get("sentry.sdk.name"), MAX_TAG),
            "scrubbed": {"body": item["body"][:MAX_LOG_BODY], "attributes": attributes}}


SEVERITY_NUMBERS = {"trace": 1, "debug": 5, "info": 9, "warn": 13, "error": 17, "fatal": 21}


def log_attributes(raw: Any) -> dict[str, Any]:
    """Typed attributes ({"value": …, "type": …}) as plain values: at most MAX_LOG_ATTRIBUTES, names of
    MAX_TAG characters, texts (and arrays, as JSON text) of MAX_SPAN_TEXT."""
    out: dict[str, Any] = {}
    for key, entry in itertools.islice(as_dict(raw).items(), MAX_LOG_ATTRIBUTES):
        value = entry.get("value") if type(entry) is dict else entry
        kind = type(value)  # exact types, not isinstance: a hundred attributes a line, every line
        if kind is str:
            value = value if len(value) <= MAX_SPAN_TEXT else value[:MAX_SPAN_TEXT]
        elif kind is not bool and (kind is not int and kind is not float or not -2 ** 53 < value < 2 ** 53):
            value = None if value is None else text(value, MAX_SPAN_TEXT)
        if value is not None:
            out[key if len(key) <= MAX_TAG else key[:MAX_TAG]] = value
    return out


MAX_LOG_ATTRIBUTES = 100


def store_logs(conn: sqlite3.Connection, project_id: int, rows: list[tuple[Any, ...]], cap: int) -> None:
    """Writer job: keep a log item's lines, within the project's cap."""
    conn.executemany("""INSERT INTO logs (project_id, timestamp, level, severity_number, body, trace_id, span_id,
                            template, release, environment, sdk, attributes, received)
                        VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)""", rows)
    keep_to_cap(conn, "logs", "timestamp", project_id, len(rows), cap)


# -- reading traces: one trace across projects; a trace's size beside an error ---------------------

async def trace_counts(store: Store, trace_id: str) -> dict[str, int]:
    """How many errors of a trace are stored and in how many services (projects) it was seen, counted
    over at most TRACE_LIMIT rows of each kind (a trace id every event of a flood shares costs no more)."""
    row = await store.one("""SELECT (SELECT count(*) FROM (SELECT 1 FROM events WHERE trace_id = :t LIMIT :n)) AS errors,
                                    (SELECT count(*) FROM (SELECT * FROM (SELECT project_id FROM events
                                     WHERE trace_id = :t LIMIT :n) UNION SELECT * FROM (SELECT project_id FROM
                                     transactions WHERE trace_id = :t LIMIT :n) UNION SELECT * FROM (SELECT project_id
                                     FROM logs WHERE trace_id = :t LIMIT :n))) AS services""",
                          {"t": trace_id, "n": TRACE_LIMIT})
    return {"errors": row["errors"], "services": row["services"]} if row else {"errors": 0, "services": 0}


async def trace_view(store: Store, trace_id: str) -> dict[str, Any]:
    """Everything stored of one trace, from every project, on one clock: its transactions with their
    span trees (`waterfall`), and its errors and log lines, each with the span it happened in
    (`timeline`, oldest first). Offsets are milliseconds from the trace's first moment."""
    transactions = [dict(r) for r in await store.all(TRACE_SQL["transactions"], (trace_id, TRACE_LIMIT))]
    errors = [dict(r) for r in await store.all(TRACE_SQL["errors"], (trace_id, TRACE_LIMIT))]
    logs = [dict(r) for r in await store.all(TRACE_SQL["logs"], (trace_id, TRACE_LOG_LIMIT))]
    spans = trace_spans(transactions)
    budget = TRACE_PAYLOAD_BYTES
    for e in errors:  # each error's span is in its payload; past the budget it is left unsaid
        payload = e.pop("payload")
        budget -= len(payload)
        ev = decompress_payload(payload) if budget >= 0 else {}
        e["span_id"] = span_id_of(as_dict(as_dict(ev.get("contexts")).get("trace")).get("span_id"))
    times = [s["start"] for s in spans] + [e["timestamp"] for e in errors] + [g["timestamp"] for g in logs]
    start = min(times, default=0.0)
    end = max([s["end"] for s in spans] + times, default=start)
    by_id = {s["span_id"]: s for s in spans}
    timeline = sorted([{"kind": "error", "time": e["timestamp"], **e} for e in errors]
                      + [{"kind": "log", "time": g["timestamp"], **g} for g in logs]
                      + [{"kind": "transaction", "time": t["start"], **t} for t in transactions],
                      key=lambda x: (x["time"], x["kind"] != "transaction"))
    for item in timeline:
        item["offset_ms"] = (item["time"] - start) * 1000
        item["in_span"] = by_id.get(item.get("span_id") or "") if item["kind"] != "transaction" else None
    for s in spans:
        s["left"] = (s["start"] - start) / (end - start) * 100 if end > start else 0.0
        s["width"] = max((s["end"] - s["start"]) / (end - start) * 100 if end > start else 100.0, 0.3)
    return {"trace_id": trace_id, "start": start, "duration_ms": (end - start) * 1000, "timeline": timeline,
            "waterfall": spans, "transactions": transactions, "errors": errors, "logs": logs,
            "services": sorted({x["project_slug"] for x in timeline})}


TRACE_LIMIT = 500  # transactions and errors read of one trace
TRACE_SPAN_LIMIT = 5000  # child spans drawn of one trace (each transaction's root span always is)
TRACE_LOG_LIMIT = 2000
TRACE_PAYLOAD_BYTES = 4 * MIB  # of the errors' stored payloads read for their spans: 500 of 1 MiB took seconds

TRACE_SQL = {
    "transactions": """SELECT t.*, p.slug AS project_slug, p.name AS project_name FROM transactions t
                       JOIN projects p ON p.id = t.project_id WHERE t.trace_id = ? ORDER BY t.start LIMIT ?""",
    "errors": """SELECT e.event_id, e.issue_id, e.timestamp, e.level, e.project_id, e.payload, i.title, i.culprit,
                        i.short_id, i.type, p.slug AS project_slug, p.name AS project_name FROM events e
                 JOIN issues i ON i.id = e.issue_id JOIN projects p ON p.id = e.project_id
                 WHERE e.trace_id = ? ORDER BY e.timestamp, e.id LIMIT ?""",
    "logs": """SELECT l.*, p.slug AS project_slug, p.name AS project_name FROM logs l
               JOIN projects p ON p.id = l.project_id WHERE l.trace_id = ? ORDER BY l.timestamp, l.id LIMIT ?""",
}


def trace_spans(transactions: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Every span of the trace's transactions (each transaction's root span first), in tree order
    with its depth: a transaction continues under the span of another that called it."""
    spans: list[dict[str, Any]] = []
    budget = TRACE_SPAN_LIMIT  # a trace of 500 transactions of 1,000 spans each would be 500,000 rows
    for t in transactions:
        payload = t.pop("payload")
        if budget or not t["spans"]:
            kept = json_loads(zstandard.ZstdDecompressor().decompress(payload))
        else:  # its spans are beyond what is drawn: not read (nor its measurements), a few MB each at most
            kept = {"spans": []}
        kept["spans"], budget = kept["spans"][:budget], max(budget - len(kept["spans"]), 0)
        spans.append({"span_id": t["span_id"], "parent_span_id": t["parent_span_id"], "op": t["op"],
                      "description": t["name"], "status": t["status"], "start": t["start"],
                      "end": t["start"] + t["duration_ms"] / 1000, "transaction": t, "is_transaction": True})
        spans += [{**s, "transaction": t, "is_transaction": False} for s in kept["spans"]]
        t["measurements"] = kept.get("measurements") or {}
    ids = {s["span_id"] for s in spans}
    children: dict[str | None, list[dict[str, Any]]] = {}
    for s in spans:
        children.setdefault(s["parent_span_id"] if s["parent_span_id"] in ids else None, []).append(s)
    ordered: list[dict[str, Any]] = []
    stack = [(s, 0) for s in sorted(children.get(None, []), key=lambda s: s["start"], reverse=True)]
    while stack:  # depth first, iteratively (a hostile trace may nest a thousand deep)
        span, depth = stack.pop()
        if "depth" in span:  # a span reached twice (its parent's id sent twice): shown once
            continue
        span["depth"] = depth
        ordered.append(span)
        # a span id sent again has its children already: 2,500 spans of one id would push 2,500 each
        below = children.pop(span["span_id"], [])
        stack += [(c, depth + 1) for c in sorted(below, key=lambda s: s["start"], reverse=True)]
    return ordered


async def logs_before(store: Store, trace_id: str, moment: float, limit: int = 20) -> list[sqlite3.Row]:
    """The last `limit` log lines of a trace up to a moment (an error's), oldest first."""
    rows = await store.all("SELECT l.*, p.slug AS project_slug FROM logs l JOIN projects p ON p.id = l.project_id "
                           "WHERE l.trace_id = ? AND l.timestamp <= ? ORDER BY l.timestamp DESC, l.id DESC LIMIT ?",
                           (trace_id, moment, limit))
    return rows[::-1]


async def slowest_transactions(store: Store, project_id: int, start: float, limit: int = 10) -> list[dict[str, Any]]:
    """A project's transaction names since `start` by their 95th percentile duration, slowest first,
    with count, p50 and p95 (ms) and the trace of the slowest one."""
    rows = await store.all("SELECT name, duration_ms, trace_id FROM transactions WHERE project_id = ? AND start >= ? "
                           "ORDER BY duration_ms", (project_id, start))
    by_name: dict[str, list[sqlite3.Row]] = {}
    for r in rows:
        by_name.setdefault(r["name"], []).append(r)
    stats = [{"name": name, "count": len(rs), "p50": percentile([r["duration_ms"] for r in rs], 50),
              "p95": percentile([r["duration_ms"] for r in rs], 95), "slowest_trace": rs[-1]["trace_id"]}
             for name, rs in by_name.items()]
    return sorted(stats, key=lambda s: s["p95"], reverse=True)[:limit]


def percentile(sorted_values: list[float], p: float) -> float:
    """The nearest-rank percentile of values sorted ascending."""
    return sorted_values[max(math.ceil(p / 100 * len(sorted_values)) - 1, 0)]


# -- reading logs: Sentry's search syntax over log lines ---------------------------------------------

async def search_logs(store: Store, query: str, *, project_ids: Sequence[int] = (), since: float = 0.0,
                      until: float = float("inf"), limit: int = 100, ascending: bool = False) -> list[sqlite3.Row]:
    """Log lines matching a search (`severity:error trace:… message:"…" release:… environment:…
    project:slug sdk.name:… <attribute>:<value>`, free text in the body) between two moments, newest
    first. Raises SearchError for a malformed query."""
    return await store.all(*logs_sql(query, project_ids, since, until, limit, ascending))


def logs_sql(query: str, project_ids: Sequence[int], since: float, until: float, limit: int, ascending: bool
             ) -> tuple[str, list[Any]]:
    """The statement search_logs runs and its arguments (a test reads how many rows its plan visits);
    no project ids: every project."""
    clauses, args = ["l.timestamp >= ? AND l.timestamp <= ?"], [since, min(until, 1e11)]
    if project_ids:
        clauses.append(f"l.project_id IN ({', '.join('?' * len(project_ids))})")
        args += project_ids
    for negated, key, value in parse_query(query):
        sql, term_args = log_term_sql(key, value)
        clauses.append(f"NOT ({sql})" if negated else sql)
        args += term_args
    order = "ASC" if ascending else "DESC"
    return (f"SELECT l.*, p.slug AS project_slug FROM logs l JOIN projects p ON p.id = l.project_id "
            f"WHERE {' AND '.join(clauses)} ORDER BY l.timestamp {order}, l.id {order} LIMIT ?", [*args, limit])


def log_term_sql(key: str | None, value: str) -> tuple[str, list[Any]]:
    """One search term as an SQL condition on logs `l`."""
    if key is None or key == "message":
        like = "%" + value.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"
        return "l.body LIKE ? ESCAPE '\\'", [like]
    if key in ("severity", "level", "severity_text"):
        level = "warn" if value.lower() == "warning" else value.lower()
        if level not in SEVERITY_NUMBERS:
            raise SearchError(f"severity:{value} is unknown; use one of {', '.join(SEVERITY_NUMBERS)}")
        return "l.level = ?", [level]
    if key == "severity_number":
        operator, number = parse_number_filter(value)
        return f"l.severity_number {operator} ?", [number]
    comparison, pattern = glob_pattern(value)
    if key in LOG_COLUMNS:
        return f"{LOG_COLUMNS[key]} {comparison}", [pattern]
    return f"CAST(json_extract(l.attributes, ?) AS TEXT) {comparison}", [f'$."{key}"', pattern]  # 42 as "42"


LOG_COLUMNS = {"trace": "l.trace_id", "trace.id": "l.trace_id", "release": "l.release", "environment": "l.environment",
               "project": "p.slug", "sdk.name": "l.sdk", "message.template": "l.template",
               "trace.parent_span_id": "l.span_id"}


# =============================================================================
# Retention: old events go in small batches, each issue keeps its first and latest
# =============================================================================

class Retention(Background):
    """Every `interval` seconds, a pass over the projects: events beyond their max age or max
    events go (`prune_events`), with the session, transaction, SLO and dropped-event minutes
    beyond the max age (`AGED_ROWS`), expired web sessions and login links and old outbox rows
    (`prune_leftovers`). Every writer job deletes at most `batch` rows, so ingest jobs queue
    between them. After a pass that deleted something, the free pages go back to the file
    system a few hundred per job; a database created before auto_vacuum=INCREMENTAL keeps them
    (reused by new rows) until `tracker vacuum` converts it."""

    def __init__(self, app: Tracker) -> None:
        self.app = app
        self.defaults = app.settings.retention
        self.interval = float(self.defaults.get("interval", 300))
        self.batch = max(int(self.defaults.get("batch", 500)), 1)
        self.warned = False

    async def run(self) -> None:
        while True:
            try:
                await self.sweep()
            except Exception:  # a failed pass must not end retention for good
                log.exception("retention pass failed")
            await asyncio.sleep(self.interval)

    async def sweep(self) -> dict[str, int]:
        """One pass; returns what it deleted: events, issues, other rows, and pages given back."""
        started, now = time.monotonic(), time.time()
        writer = self.app.writer
        store = self.app.store
        done = {"events": 0, "issues": 0, "rows": 0, "pages": 0}
        for project in await store.all("SELECT id FROM projects ORDER BY id"):
            pid = project["id"]
            try:
                age, cap = retention_policy(self.defaults, await self.app.options.options(pid))
            except (TypeError, ValueError, AttributeError):
                log.warning("project %s: ignoring a retention option that is not {max_age_days, max_events}", pid)
                continue
            cutoff = now - age * 86400 if age else 0.0
            excess = 0 if cap is None else (await store.one("SELECT count(*) FROM events WHERE project_id = ?",
                                                            (pid,)))[0] - cap
            cursor: tuple[float, int] | None = (0.0, 0)
            while cursor is not None:
                events, issues, cursor = await writer.submit(
                    lambda conn, after=cursor, excess=excess: prune_events(conn, pid, cutoff, excess, after, self.batch))
                excess -= events
                done["events"] += events
                done["issues"] += issues
            for table, column in AGED_ROWS.items() if cutoff else ():
                deleted = self.batch
                while deleted == self.batch:
                    deleted = await writer.submit(
                        lambda conn, t=table, c=column: prune_aged_rows(conn, t, c, pid, cutoff, self.batch))
                    done["rows"] += deleted
            done["rows"] += await self.prune_traces(pid, now)
        age = float(self.defaults.get("max_age_days", 90) or 0)
        deleted = self.batch
        while deleted == self.batch:
            deleted = await writer.submit(lambda conn: prune_leftovers(conn, now, now - age * 86400 if age else 0.0,
                                                                       self.batch))
            done["rows"] += deleted
        if any(done.values()):
            done["pages"] = await self.give_back(writer, store)
            log.info("retention: deleted %d events, %d issues and %d other rows, gave back %d pages in %.2f s",
                     done["events"], done["issues"], done["rows"], done["pages"], time.monotonic() - started)
        return done

    async def prune_traces(self, project_id: int, now: float) -> int:
        """A project's transactions and logs older than `[traces] max_age_days`, `batch` per job."""
        age, done = trace_caps(self.app.settings)[2], 0
        for table, column in TRACE_ROWS.items() if age else ():
            deleted = self.batch
            while deleted == self.batch:
                deleted = await self.app.writer.submit(lambda conn, t=table, c=column: prune_aged_rows(
                    conn, t, c, project_id, now - age * 86400, self.batch))
                done += deleted
        return done

    async def give_back(self, writer: Writer, store: Store) -> int:
        """Free pages back to the file system, VACUUM_STEP per writer job; returns how many."""
        if (await store.one("PRAGMA auto_vacuum"))[0] != 2:
            if not self.warned:
                self.warned = True
                log.info("retention: this database keeps its free pages (made before auto_vacuum was set); "
                         "stop the server and run `tracker vacuum` once to let it shrink")
            return 0
        given, left = 0, (await store.one("PRAGMA freelist_count"))[0]
        while left:
            now_left = await writer.submit(lambda conn: give_back_pages(conn, VACUUM_STEP))
            if now_left >= left:
                break
            given, left = given + left - now_left, now_left
        return given


def retention_policy(defaults: Mapping[str, Any], options: Mapping[str, Any]) -> tuple[float, int | None]:
    """A project's (max age in days, max events or None): its `retention` option over the
    [retention] table (90 days, no cap by default). An age of 0 keeps events for ever."""
    own = options.get("retention") or {}
    age = float(own.get("max_age_days", defaults.get("max_age_days", 90)) or 0)
    cap = own.get("max_events")
    return max(age, 0.0), None if cap is None else max(int(cap), 0)


def prune_events(conn: sqlite3.Connection, project_id: int, cutoff: float, excess: int,
                 after: tuple[float, int], batch: int) -> tuple[int, int, tuple[float, int] | None]:
    """Writer job: look at the project's next `batch` events, oldest first from the cursor `after`
    (timestamp, id), and delete those older than `cutoff` and, while `excess` is above 0, the
    oldest others. An issue's first and latest event (by timestamp, id) always stay, and so do its
    counters (times seen, first and last seen, tag counts), as in Sentry.

    The exception is an issue whose last event is older than `cutoff`: nothing of it is within
    the retention, so all its events go and, with the last of them, the issue itself with its
    hashes, tags, search terms, activity, rule fires and links (`delete_issues`); a later event
    with the same fingerprint opens a new issue, as in Sentry after retention.

    The attachments of deleted events go with them; the first batch of a pass also deletes
    attachments older than `cutoff` whose event never came, and feedback of no issue older than it.

    Returns (events deleted, issues deleted, the cursor for the next batch or None when done)."""
    ts, last_id = after
    if after == (0.0, 0) and cutoff:
        prune_unlinked(conn, project_id, cutoff, batch)
    rows = conn.execute("""SELECT id, issue_id, timestamp FROM events WHERE project_id = ? AND timestamp >= ?
                           AND (timestamp > ? OR id > ?) AND (timestamp < ? OR ? > 0)
                           ORDER BY timestamp, id LIMIT ?""",
                        (project_id, ts, ts, last_id, cutoff, excess, batch)).fetchall()
    if not rows:
        return 0, 0, None
    issue_ids = sorted({r["issue_id"] for r in rows})
    keep, aged = set(), []
    for issue in conn.execute(
            f"""SELECT id, last_seen < ? AS aged,
                    (SELECT id FROM events WHERE issue_id = issues.id ORDER BY timestamp, id LIMIT 1) AS first,
                    (SELECT id FROM events WHERE issue_id = issues.id ORDER BY timestamp DESC, id DESC LIMIT 1) AS latest
                FROM issues WHERE id IN ({','.join('?' * len(issue_ids))})""", (cutoff, *issue_ids)):
        if issue["aged"]:
            aged.append(issue["id"])
        else:
            keep.update((issue["first"], issue["latest"]))
    doomed: list[int] = []
    for row in rows:
        if row["id"] not in keep and (row["timestamp"] < cutoff or excess > len(doomed)):
            doomed.append(row["id"])
    conn.execute(f"DELETE FROM attachments WHERE (project_id, event_id) IN (SELECT project_id, event_id FROM events "
                 f"WHERE id IN ({','.join('?' * len(doomed))}))", doomed)
    conn.execute(f"DELETE FROM events WHERE id IN ({','.join('?' * len(doomed))})", doomed)
    gone = [i for i in aged if not conn.execute("SELECT 1 FROM events WHERE issue_id = ? LIMIT 1", (i,)).fetchone()]
    if gone:
        marks = ",".join("?" * len(gone))
        for table in ("rule_fires", "issue_links"):
            conn.execute(f"DELETE FROM {table} WHERE issue_id IN ({marks})", gone)
        delete_issues(conn, gone)
    more = len(rows) == batch
    return len(doomed), len(gone), (rows[-1]["timestamp"], rows[-1]["id"]) if more else None


def prune_unlinked(conn: sqlite3.Connection, project_id: int, cutoff: float, batch: int) -> int:
    """Up to `batch` each of a project's attachments stored before `cutoff` for an event that never
    came (nor a feedback of that id: its screenshots), and its feedback of no issue from before it."""
    return conn.execute(
        """DELETE FROM attachments WHERE id IN (SELECT id FROM attachments a WHERE project_id = ? AND created < ?
               AND NOT EXISTS (SELECT 1 FROM events e WHERE e.project_id = a.project_id AND e.event_id = a.event_id)
               AND NOT EXISTS (SELECT 1 FROM feedback f WHERE f.project_id = a.project_id
                               AND f.feedback_event_id = a.event_id) LIMIT ?)""",
        (project_id, cutoff, batch)).rowcount + conn.execute(
        "DELETE FROM feedback WHERE id IN (SELECT id FROM feedback WHERE project_id = ? AND issue_id IS NULL "
        "AND created < ? LIMIT ?)", (project_id, cutoff, batch)).rowcount


# Per-project rows counted by time that go with the events: table → its time column (epoch seconds).
AGED_ROWS = {"session_buckets": "minute", "transaction_buckets": "minute", "session_users": "day",
             "slo_history": "minute", "dropped": "minute", "check_ins": "date_created",
             "artifact_files": "date_added", "artifact_bundles": "date_added"}


# A project's rows of traces and logs, aged by `[traces] max_age_days` (the time column).
TRACE_ROWS = {"transactions": "start", "logs": "timestamp"}


def prune_aged_rows(conn: sqlite3.Connection, table: str, column: str, project_id: int, cutoff: float,
                    batch: int) -> int:
    """Writer job: delete up to `batch` of a project's rows of `table` older than `cutoff` (the writer's
    count of them starts over)."""
    writer_caches(conn).rows.clear()
    key = ", ".join(r["name"] for r in sorted(conn.execute(f"PRAGMA table_info({table})"), key=lambda r: r["pk"])
                    if r["pk"])
    return conn.execute(f"DELETE FROM {table} WHERE ({key}) IN (SELECT {key} FROM {table} WHERE project_id = ? "
                        f"AND {column} < ? LIMIT ?)", (project_id, cutoff, batch)).rowcount


def prune_leftovers(conn: sqlite3.Connection, now: float, cutoff: float, batch: int) -> int:
    """Writer job: expired browser sessions, login links and upload chunks, and up to `batch` outbox rows delivered
    or cancelled before `cutoff`. Kept: dead letters (they can be sent again), Jira creations
    (their key stops a second Jira issue) and the rows of issues not resolved (resolving one tells
    the channels its outbox names)."""
    tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    deleted = sum(conn.execute(f"DELETE FROM {table} WHERE expires < ?", (now,)).rowcount
                  for table in ("web_sessions", "login_links", "upload_chunks") if table in tables)
    return deleted + conn.execute(
        """DELETE FROM outbox WHERE id IN (SELECT id FROM outbox o WHERE status IN ('delivered', 'cancelled')
               AND coalesce(delivered, created) < ? AND idempotency_key NOT LIKE 'jira-%'
               AND NOT EXISTS (SELECT 1 FROM issues i WHERE i.id = o.issue_id AND i.status != 'resolved') LIMIT ?)""",
        (cutoff, batch)).rowcount


def give_back_pages(conn: sqlite3.Connection, pages: int) -> int:
    """Writer job: hand up to `pages` free pages back to the file system (auto_vacuum=INCREMENTAL
    moves pages from the end of the file into the free ones and truncates it); returns how many
    free pages are left."""
    for _ in range(min(pages, conn.execute("PRAGMA freelist_count").fetchone()[0])):
        conn.execute("PRAGMA incremental_vacuum(1)")  # Python's sqlite3 steps a pragma once: one page each
    return int(conn.execute("PRAGMA freelist_count").fetchone()[0])


VACUUM_STEP = 512  # pages handed back to the file system per writer job


# =============================================================================
# Cron monitors: check-ins, schedules, missed and timed-out runs
# =============================================================================
#
# A check-in (a `check_in` item, or the cron HTTP endpoint) belongs to a monitor of its project,
# made or updated from the `monitor_config` it carries. Each new check-in sets when the next one is
# due: the crontab's next time in the monitor's timezone, or one interval later. CronJudge has the
# writer mark a due check-in that has not come within the margin `missed`, and an `in_progress` run
# older than its max runtime `timeout`. A failure (error, missed, timeout) is an event of the
# monitor's issue (fingerprint ["cron", slug]) stored by store_event, so grouping, the issue page
# and the alert rules apply unchanged; `ok` runs resolve it again.

MAX_CHECK_IN = 100 * KIB


def parse_check_in(raw: dict[str, Any], received: float) -> CheckIn:
    """A check-in payload (an item, or the HTTP endpoint's fields); ValueError says what is wrong."""
    slug = re.sub(r"[^a-z0-9_-]+", "-", text(raw.get("monitor_slug"), 200).strip().lower()).strip("-")[:50]
    if not slug:
        raise ValueError("monitor_slug is required")
    status = raw.get("status")
    if status not in CHECK_IN_STATUSES:
        raise ValueError(f"status must be in_progress, ok or error, not {text(status, 40)!r}")
    check_in_id = None
    if raw.get("check_in_id") not in (None, ""):
        check_in_id = normalize_id(raw["check_in_id"])
        if check_in_id is None:
            raise ValueError("check_in_id must be a UUID")
    duration = raw.get("duration")
    if duration is not None:
        try:
            duration = float(duration) if not isinstance(duration, bool) else -1.0
        except (TypeError, ValueError):
            duration = -1.0
        if not 0 <= duration < 10**9:
            raise ValueError("duration must be a number of seconds")
    config = checked_monitor_config(raw["monitor_config"]) if raw.get("monitor_config") is not None else None
    trace_id = normalize_id(as_dict(as_dict(raw.get("contexts")).get("trace")).get("trace_id"))
    return CheckIn(slug, status, check_in_id, duration, text(raw.get("environment"), 64).strip() or "production",
                   text(raw.get("release"), MAX_TAG), trace_id, config, received)


CHECK_IN_STATUSES = ("in_progress", "ok", "error")  # what clients send; missed and timeout are ours


def checked_monitor_config(raw: Any) -> dict[str, Any]:
    """`monitor_config` as the SDKs send it → the monitor's columns; ValueError says what is wrong."""
    if not isinstance(raw, dict):
        raise ValueError("monitor_config must be an object")
    schedule = {"type": "crontab", "value": raw["schedule"]} if isinstance(raw.get("schedule"), str) else raw.get("schedule")
    if not isinstance(schedule, dict) or schedule.get("type") not in ("crontab", "interval"):
        raise ValueError('monitor_config.schedule must be {"type": "crontab", "value": "0 * * * *"} or '
                         '{"type": "interval", "value": 2, "unit": "hour"}')
    columns: dict[str, Any] = {"schedule_type": schedule["type"]}
    value = schedule.get("value")
    if schedule["type"] == "crontab":
        if not isinstance(value, str):
            raise ValueError('schedule.value must be a crontab expression such as "0 * * * *"')
        try:
            crontab(" ".join(value.split()))
        except CronError as exc:
            raise ValueError(f"schedule: {exc}") from None
        columns["schedule"] = " ".join(value.split())
    else:
        if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= 10**6 or \
                schedule.get("unit") not in (*INTERVAL_MINUTES, "month", "year"):
            raise ValueError("an interval schedule needs a whole value of at least 1 and a unit: "
                             "minute, hour, day, week, month or year")
        columns["schedule"] = json.dumps([value, schedule["unit"]])
    zone = raw.get("timezone") or "UTC"
    if not isinstance(zone, str) or len(zone) > 64 or monitor_zone(zone) is dt.timezone.utc and zone != "UTC":
        raise ValueError(f"timezone {text(zone, 64)!r} is not a tz database name such as Europe/Vienna")
    columns["timezone"] = zone
    for key, (default, low, high) in MONITOR_NUMBERS.items():
        number = default if raw.get(key) is None else raw[key]
        if isinstance(number, bool) or not isinstance(number, (int, float)) or not low <= number <= high:
            raise ValueError(f"{key} must be a number from {low} to {high} (minutes)"
                             if key in ("checkin_margin", "max_runtime") else f"{key} must be from {low} to {high}")
        columns[key] = int(number) if key.endswith("threshold") else number
    return columns


@functools.lru_cache(maxsize=512)
def crontab(expression: str) -> Crontab:
    return Crontab.parse(expression)


@dataclasses.dataclass(frozen=True)
class Crontab:
    """A five-field crontab expression in Vixie cron's syntax: `*`, lists, ranges and steps (`1,15`,
    `9-17`, `*/5`, `10-50/20`), JAN–DEC and SUN–SAT (7 is Sunday too) and the @daily-style aliases.
    When both day fields are restricted (neither starts with `*`), a day matching either one runs.

    Our own rather than a package's (croniter and the like): the tracker takes a dependency only
    where the protocol needs one, the syntax is small, and the one hard part, daylight-saving
    changes, needs the exact rule `next_after` states; tests/test_crons.py checks it against a
    minute-by-minute walk with hypothesis."""

    minutes: tuple[int, ...]
    hours: tuple[int, ...]
    days: frozenset[int]
    months: frozenset[int]
    weekdays: frozenset[int]  # 0 is Sunday
    either_day: bool

    @classmethod
    def parse(cls, expression: str) -> Crontab:
        fields = CRON_ALIASES.get(expression.strip().lower(), expression).split()
        if len(fields) != 5:
            raise CronError(f"{expression!r} has {len(fields)} fields; a crontab has five: "
                            "minute hour day-of-month month day-of-week")
        minutes, hours, days, months, weekdays = (cron_field(f, *spec) for f, spec in zip(fields, CRON_FIELDS))
        cron = cls(tuple(sorted(minutes)), tuple(sorted(hours)), frozenset(days), frozenset(months),
                   frozenset(d % 7 for d in weekdays), not fields[2].startswith("*") and not fields[4].startswith("*"))
        if cron.next_after(0, dt.timezone.utc) is None:
            raise CronError(f"{expression!r} never runs: no month has that day")
        return cron

    def day_matches(self, day: dt.date) -> bool:
        in_month, in_week = day.day in self.days, (day.weekday() + 1) % 7 in self.weekdays
        return in_month or in_week if self.either_day else in_month and in_week

    def matches(self, wall: dt.datetime) -> bool:
        """Whether a wall-clock time (naive, in the monitor's timezone) is one the expression names."""
        return wall.minute in self.minutes and wall.hour in self.hours and wall.month in self.months \
            and self.day_matches(wall.date())

    def walls(self, start: dt.datetime) -> Iterator[dt.datetime]:
        """The matching wall-clock times from `start` on, in order, for CRON_HORIZON years."""
        day, end = start.date(), dt.date(start.year + CRON_HORIZON, 1, 1)
        while day < end:
            if day.month not in self.months:
                day = (day.replace(day=1) + dt.timedelta(days=32)).replace(day=1)
                continue
            if self.day_matches(day):
                for hour in self.hours:
                    for minute in self.minutes:
                        wall = dt.datetime(day.year, day.month, day.day, hour, minute)
                        if wall >= start:
                            yield wall
            day += dt.timedelta(days=1)

    def next_after(self, after: float, tz: dt.tzinfo) -> float | None:
        """The first moment after `after` (epoch seconds) at which a clock in `tz` shows a matching
        minute: a time the clock skips when it springs forward never comes, one it shows twice when
        it falls back comes twice. None when nothing matches for CRON_HORIZON years.

        A moment after `after` may show an earlier wall time (the clock was set back), but never one
        more than CLOCK_SETBACK earlier; and a wall time CLOCK_SETBACK past the best one found can
        only come later than it. So the search runs over wall times in that window."""
        local = dt.datetime.fromtimestamp(after, tz).replace(tzinfo=None)
        best: tuple[float, dt.datetime] | None = None
        for wall in self.walls((local - CLOCK_SETBACK).replace(second=0, microsecond=0)):
            if best is not None and wall > best[1] + CLOCK_SETBACK:
                break
            for moment in wall_moments(wall, tz):
                if moment > after and (best is None or moment < best[0]):
                    best = (moment, wall)
        return best[0] if best else None


CRON_ALIASES = {"@yearly": "0 0 1 1 *", "@annually": "0 0 1 1 *", "@monthly": "0 0 1 * *", "@weekly": "0 0 * * 0",
                "@daily": "0 0 * * *", "@midnight": "0 0 * * *", "@hourly": "0 * * * *"}


class CronError(ValueError):
    """A crontab expression that cannot run, said so that its author can fix it."""


def cron_field(field: str, name: str, low: int, high: int, names: tuple[str, ...]) -> set[int]:
    """One field of a crontab → the values it allows."""
    values: set[int] = set()
    for part in field.split(","):
        span, slash, step = part.partition("/")
        if span == "*":
            start, end = low, high
        else:
            first, dash, last = span.partition("-")
            start = cron_number(first, name, low, names)
            end = cron_number(last, name, low, names) if dash else high if slash else start
        every = cron_number(step, name, 0, ()) if slash else 1
        if not low <= start <= end <= high or every < 1:
            raise CronError(f"{name}: {part!r} is not a range within {low}-{high} with a step of at least 1")
        values.update(range(start, end + 1, every))
    return values


def cron_number(word: str, name: str, low: int, names: tuple[str, ...]) -> int:
    if word.upper() in names:
        return names.index(word.upper()) + low
    if word.isascii() and word.isdigit() and len(word) <= 4:
        return int(word)
    raise CronError(f"{name}: {word!r} is not a number" + (f" or one of {', '.join(names)}" if names else ""))


MONTHS = ("JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT", "NOV", "DEC")

WEEKDAYS = ("SUN", "MON", "TUE", "WED", "THU", "FRI", "SAT")

CRON_FIELDS = (("minute", 0, 59, ()), ("hour", 0, 23, ()), ("day of month", 1, 31, ()), ("month", 1, 12, MONTHS),
               ("day of week", 0, 7, WEEKDAYS))  # (name, lowest, highest, names of lowest, lowest + 1, …)

CRON_HORIZON = 50  # years searched for the next run; an expression that never matches is refused

CLOCK_SETBACK = dt.timedelta(hours=3)  # more than any daylight-saving change sets a clock back


def wall_moments(wall: dt.datetime, tz: dt.tzinfo) -> list[float]:
    """The moments (epoch seconds) at which a clock in `tz` shows `wall`: none in a spring-forward
    gap, two in a fall-back overlap, else one."""
    first, second = wall.replace(tzinfo=tz), wall.replace(tzinfo=tz, fold=1)
    if first.utcoffset() == second.utcoffset():  # most of the time: no change of offset near it
        return [first.timestamp()]
    return [aware.timestamp() for aware in (first, second)
            if aware.astimezone(dt.timezone.utc).astimezone(tz).replace(tzinfo=None) == wall]


INTERVAL_MINUTES = {"minute": 1, "hour": 60, "day": 1440, "week": 10080}  # month and year: calendar ones


def monitor_zone(name: str) -> dt.tzinfo:
    try:
        return zoneinfo.ZoneInfo(name)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError, OSError):
        return dt.timezone.utc


MONITOR_NUMBERS = {  # monitor_config field → (default, lowest, highest), as Sentry takes them
    "checkin_margin": (1, 1, 40320), "max_runtime": (30, 1, 40320),
    "failure_issue_threshold": (1, 1, 720), "recovery_threshold": (1, 1, 720)}


@dataclasses.dataclass(frozen=True)
class CheckIn:
    """One check-in as a client sent it, validated (before the writer knows its monitor)."""

    slug: str
    status: str
    check_in_id: str | None  # None: a new check-in with an id of ours
    duration: float | None  # seconds
    environment: str
    release: str
    trace_id: str | None
    config: dict[str, Any] | None  # checked_monitor_config's columns
    received: float


def record_check_in(conn: sqlite3.Connection, project_id: int, c: CheckIn, minute: float) -> tuple[str, str | None]:
    """Writer job: upsert the monitor from the check-in's config, store the check-in or finish the one
    it continues, and move the monitor on. Returns (outcome, check-in id; None when dropped)."""
    monitor = conn.execute("SELECT * FROM monitors WHERE project_id = ? AND slug = ?", (project_id, c.slug)).fetchone()
    if c.config is not None:
        monitor = upsert_monitor(conn, project_id, c.slug, c.config, monitor, c.received, minute)
    if monitor is None:
        return "dropped: unknown monitor; send monitor_config", None
    if c.check_in_id == LATEST_RUNNING:
        row = conn.execute("SELECT * FROM check_ins WHERE monitor_id = ? AND status = 'in_progress' "
                           "ORDER BY date_created DESC LIMIT 1", (monitor["id"],)).fetchone()
    else:
        row = conn.execute("SELECT * FROM check_ins WHERE monitor_id = ? AND check_in_id = ?",
                           (monitor["id"], c.check_in_id)).fetchone() if c.check_in_id else None
    if row is not None and row["status"] != "in_progress":
        return f"dropped: check-in {row['check_in_id']} is finished already ({row['status']})", None
    if row is not None:
        duration = c.received - row["date_created"] if c.duration is None and c.status != "in_progress" else c.duration
        conn.execute("UPDATE check_ins SET status = ?, duration = ?, date_updated = ?, trace_id = coalesce(trace_id, ?) "
                     "WHERE id = ?", (c.status, duration, c.received, c.trace_id, row["id"]))
        check_in_id = row["check_in_id"]
    else:
        check_in_id = c.check_in_id if c.check_in_id not in (None, LATEST_RUNNING) else uuid.uuid4().hex
        conn.execute("""INSERT INTO check_ins (check_in_id, monitor_id, project_id, status, duration, environment, release,
                            trace_id, expected_time, date_created, date_updated) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)""",
                     (check_in_id, monitor["id"], project_id, c.status, c.duration, c.environment, c.release,
                      c.trace_id, monitor["next_expected"], c.received, c.received))
        due = next_check_in({**dict(monitor), "last_checkin": c.received}, c.received, minute)
        conn.execute("UPDATE monitors SET last_checkin = ?, next_expected = ?, environment = ? WHERE id = ?",
                     (c.received, due, c.environment, monitor["id"]))
    refresh_monitor_status(conn, monitor["id"])
    if c.status != "in_progress":
        monitor_outcome(conn, monitor["id"], c.status, c.environment, c.release, c.trace_id, c.received)
    return "stored", check_in_id


def upsert_monitor(conn: sqlite3.Connection, project_id: int, slug: str, config: dict[str, Any],
                   old: sqlite3.Row | None, now: float, minute: float) -> sqlite3.Row:
    """Make or update a monitor from a check-in's config; a new schedule or timezone moves the time
    its next check-in is due."""
    names = ", ".join(config)
    conn.execute(f"""INSERT INTO monitors (project_id, slug, name, created, {names})
                     VALUES (?, ?, ?, ?, {', '.join('?' * len(config))})
                     ON CONFLICT (project_id, slug) DO UPDATE SET {', '.join(f'{k} = excluded.{k}' for k in config)}""",
                 (project_id, slug, slug, now, *config.values()))
    monitor = conn.execute("SELECT * FROM monitors WHERE project_id = ? AND slug = ?", (project_id, slug)).fetchone()
    if old is not None and old["last_checkin"] is not None and \
            any(old[k] != monitor[k] for k in ("schedule_type", "schedule", "timezone")):
        conn.execute("UPDATE monitors SET next_expected = ? WHERE id = ?",
                     (next_check_in(monitor, now, minute), monitor["id"]))
        monitor = conn.execute("SELECT * FROM monitors WHERE id = ?", (monitor["id"],)).fetchone()
    return monitor


def next_check_in(monitor: sqlite3.Row | dict[str, Any], after: float, minute: float) -> float | None:
    """When the monitor's next check-in is due: the first time its schedule names after `after`
    (intervals count from its last check-in)."""
    tz = monitor_zone(monitor["timezone"])
    if monitor["schedule_type"] == "crontab":
        return crontab(monitor["schedule"]).next_after(after, tz)
    value, unit = json.loads(monitor["schedule"])
    return interval_after(monitor["last_checkin"] or after, value, unit, after, tz, minute)


def interval_after(anchor: float, value: int, unit: str, after: float, tz: dt.tzinfo, minute: float) -> float:
    """The first of anchor + k intervals (k ≥ 1) after `after`: minutes to weeks of `minute` seconds
    each; months and years on the calendar in `tz` (the 31st of a shorter month is its last day)."""
    if unit in INTERVAL_MINUTES:
        step = value * INTERVAL_MINUTES[unit] * minute
        return anchor + step * max(math.floor((after - anchor) / step) + 1, 1)
    start, months, k = dt.datetime.fromtimestamp(anchor, tz), value * (12 if unit == "year" else 1), 1
    while True:
        year, month = divmod(start.month - 1 + k * months, 12)
        year, month = start.year + year, month + 1
        length = (dt.date(year + month // 12, month % 12 + 1, 1) - dt.date(year, month, 1)).days
        tick = start.replace(year=year, month=month, day=min(start.day, length)).timestamp()
        if tick > after:
            return tick
        k += 1


LATEST_RUNNING = "0" * 32  # the nil UUID as check_in_id: "the monitor's latest in-progress check-in"


def refresh_monitor_status(conn: sqlite3.Connection, monitor_id: int) -> None:
    """A monitor's status is its latest check-in's (`new` before the first)."""
    conn.execute("UPDATE monitors SET status = coalesce((SELECT status FROM check_ins WHERE monitor_id = ? "
                 "ORDER BY date_created DESC, id DESC LIMIT 1), 'new') WHERE id = ?", (monitor_id, monitor_id))


def monitor_outcome(conn: sqlite3.Connection, monitor_id: int, status: str, environment: str, release: str,
                    trace_id: str | None, now: float) -> None:
    """A run ended. A failure is an event of the monitor's issue once `failure_issue_threshold` runs in
    a row failed (or while the issue is open); `recovery_threshold` ok runs in a row resolve it."""
    monitor = conn.execute("SELECT * FROM monitors WHERE id = ?", (monitor_id,)).fetchone()
    failed = status in FAILURES
    needed = monitor["failure_issue_threshold" if failed else "recovery_threshold"]
    recent = [row[0] in FAILURES for row in conn.execute(
        "SELECT status FROM check_ins WHERE monitor_id = ? AND status != 'in_progress' "
        "ORDER BY date_updated DESC, id DESC LIMIT ?", (monitor_id, needed))]
    streak = len(recent) == needed and all(f == failed for f in recent)
    issue = conn.execute("SELECT * FROM issues WHERE id = ?", (monitor["issue_id"],)).fetchone() \
        if monitor["issue_id"] else None
    if failed and (streak or issue is not None and issue["status"] != "resolved"):
        ev = cron_failure_event(monitor, status, environment, release, trace_id, now)
        store_event(conn, ev)
        conn.execute("UPDATE monitors SET issue_id = (SELECT issue_id FROM events WHERE project_id = ? AND event_id = ?) "
                     "WHERE id = ?", (ev.project_id, ev.event_id, monitor_id))
    elif not failed and streak and issue is not None and issue["status"] == "unresolved":
        change_status(conn, issue, "resolved", {}, now)


FAILURES = {"error": "check-in error", "missed": "missed check-in", "timeout": "check-in timeout"}


def cron_failure_event(monitor: sqlite3.Row, status: str, environment: str, release: str, trace_id: str | None,
                       now: float) -> PreparedEvent:
    """The event a failed run adds to its monitor's issue: "Cron failure: <slug> (missed check-in)"."""
    slug = monitor["slug"]
    raw = {"level": "error", "platform": "other", "timestamp": now, "environment": environment, "release": release,
           "message": f"Cron failure: {slug} ({FAILURES[status]})", "fingerprint": ["cron", slug],
           "culprit": f"{schedule_words(monitor['schedule_type'], monitor['schedule'])} ({monitor['timezone']})",
           "tags": {"monitor.slug": slug, "monitor.id": str(monitor["id"]), "monitor.status": status},
           "contexts": {"monitor": {"id": str(monitor["id"]), "slug": slug, "name": monitor["name"],
                                    "status": status, "config": monitor_config_json(monitor)},
                        **({"trace": {"trace_id": trace_id}} if trace_id else {})}}
    return prepare_event(raw, project_id=monitor["project_id"], event_id=None, received=now, rules=NO_RULES,
                         scrub=DEFAULT_SCRUB)


def schedule_words(schedule_type: str, schedule: str) -> str:
    """A schedule as people say it: `every 10 minutes`, `at 09:30 on Mon, Tue, Wed, Thu, Fri`; a
    crontab too intricate for a phrase stays an expression."""
    if schedule_type == "interval":
        value, unit = json.loads(schedule)
        return f"every {unit}" if value == 1 else f"every {value} {unit}s"
    try:
        cron = crontab(schedule)
    except CronError:
        return schedule
    minute, hour, days, months, weekdays = CRON_ALIASES.get(schedule.lower(), schedule).split()
    if minute == hour == "*":
        words = "every minute"
    elif re.fullmatch(r"\*/\d+", minute) and hour == "*":
        words = f"every {minute[2:]} minutes"
    elif len(cron.minutes) == 1 and hour == "*":
        words = f"every hour at minute {cron.minutes[0]}"
    elif len(cron.minutes) == 1 and len(cron.hours) <= 4:
        words = "at " + ", ".join(f"{h:02d}:{cron.minutes[0]:02d}" for h in cron.hours)
    else:
        return schedule
    on = ([f"day {', '.join(map(str, sorted(cron.days)))} of the month"] if days != "*" else []) + \
        ([", ".join(WEEKDAYS[d].title() for d in sorted(cron.weekdays))] if weekdays != "*" else [])
    return words + (" on " + (" or " if cron.either_day else " and ").join(on) if on else "") + \
        (" in " + ", ".join(MONTHS[m - 1].title() for m in sorted(cron.months)) if months != "*" else "")


def monitor_config_json(monitor: sqlite3.Row) -> dict[str, Any]:
    """A monitor's config in Sentry's shape (an interval schedule is [value, unit])."""
    schedule = json.loads(monitor["schedule"]) if monitor["schedule_type"] == "interval" else monitor["schedule"]
    return {"schedule_type": monitor["schedule_type"], "schedule": schedule, **{k: monitor[k] for k in MONITOR_NUMBERS},
            "timezone": monitor["timezone"]}


class CronJudge(Background):
    """The cron clock: has the writer judge the monitors every `[crons] interval` seconds (30)."""

    def __init__(self, app: Tracker) -> None:
        self.app = app
        self.interval = float(app.settings.crons.get("interval", 30))
        self.minute = cron_minute(app.settings)

    async def run(self) -> None:
        while True:
            try:
                if await self.app.writer.submit(lambda conn: judge_monitors(conn, time.time(), self.minute)):
                    self.app.dispatcher.wake.set()
            except Exception:  # a failed judgement must not stop the clock
                log.exception("judging cron monitors failed")
            await asyncio.sleep(self.interval)


def cron_minute(settings: Settings) -> float:
    """Seconds in a minute of monitor time (margins, max runtimes, minute…week intervals): 60,
    except where `[crons] minute` shortens it for tests and demos."""
    return float(settings.crons.get("minute", 60))


def judge_monitors(conn: sqlite3.Connection, now: float, minute: float) -> int:
    """Writer job, every `[crons] interval` seconds: an in-progress run past its max runtime times out,
    and a check-in due longer ago than the margin is missed (one missed check-in however many due
    times passed since). Returns how many check-ins it closed."""
    closed = 0
    for row in conn.execute("""SELECT c.* FROM check_ins c JOIN monitors m ON m.id = c.monitor_id
                               WHERE c.status = 'in_progress' AND c.date_created < ? - m.max_runtime * ?""",
                            (now, minute)).fetchall():
        conn.execute("UPDATE check_ins SET status = 'timeout', date_updated = ? WHERE id = ?", (now, row["id"]))
        refresh_monitor_status(conn, row["monitor_id"])
        monitor_outcome(conn, row["monitor_id"], "timeout", row["environment"], row["release"], row["trace_id"], now)
        closed += 1
    for monitor in conn.execute("SELECT * FROM monitors WHERE next_expected < ? - checkin_margin * ?",
                                (now, minute)).fetchall():
        due = monitor["next_expected"]
        conn.execute("""INSERT INTO check_ins (check_in_id, monitor_id, project_id, status, environment, expected_time,
                            date_created, date_updated) VALUES (?, ?, ?, 'missed', ?, ?, ?, ?)""",
                     (uuid.uuid4().hex, monitor["id"], monitor["project_id"], monitor["environment"], due, due, now))
        conn.execute("UPDATE monitors SET next_expected = ? WHERE id = ?",
                     (next_check_in(monitor, max(due, now - monitor["checkin_margin"] * minute), minute), monitor["id"]))
        refresh_monitor_status(conn, monitor["id"])
        monitor_outcome(conn, monitor["id"], "missed", monitor["environment"], "", None, now)
        closed += 1
    return closed


async def monitors_with_projects(store: Store, slug: str | None = None) -> list[sqlite3.Row]:
    """Every monitor (one slug's, if given) with its project's slug and name and its issue's status
    and number, by slug."""
    return await store.all(
        """SELECT m.*, p.slug AS project_slug, p.name AS project_name, i.status AS issue_status, i.short_id AS issue_number
           FROM monitors m JOIN projects p ON p.id = m.project_id LEFT JOIN issues i ON i.id = m.issue_id
           WHERE ? IS NULL OR m.slug = ? ORDER BY m.slug, m.id""", (slug, slug))


async def monitor_environments(store: Store, monitor_ids: list[int]) -> list[sqlite3.Row]:
    """Each monitor's environments: first and last check-in, and the latest finished one's status."""
    return await store.all(
        f"""SELECT monitor_id, environment, min(date_created) AS first,
                   max(CASE WHEN status != 'missed' THEN date_created END) AS last,
                   (SELECT x.status FROM check_ins x WHERE x.monitor_id = c.monitor_id AND x.environment = c.environment
                    AND x.status != 'in_progress' ORDER BY x.date_created DESC, x.id DESC LIMIT 1) AS status
            FROM check_ins c WHERE monitor_id IN ({','.join('?' * len(monitor_ids))})
            GROUP BY monitor_id, environment ORDER BY environment""", monitor_ids)


async def monitor_check_ins(store: Store, monitor_id: int, environments: list[str], limit: int,
                            offset: int = 0) -> list[sqlite3.Row]:
    """A monitor's check-ins, newest first (in these environments, if any are named)."""
    envs = f"AND environment IN ({','.join('?' * len(environments))})" if environments else ""
    return await store.all(f"SELECT * FROM check_ins WHERE monitor_id = ? {envs} "
                           "ORDER BY date_created DESC, id DESC LIMIT ? OFFSET ?",
                           (monitor_id, *environments, limit, offset))

# =============================================================================
# Forwarding: a project's envelopes to an upstream Sentry, GlitchTip or tracker
# =============================================================================
#
# A project with a `forward` option ({dsn, mode, allow_private}) has every envelope it accepts also
# written, in the same writer transaction, to `forward_outbox` as the envelope an SDK would send:
# after rate limits and scrubbing (an event goes as the stored, scrubbed event), only the item types
# an upstream understands, the header's `dsn` and `sent_at` set when it leaves. `mirror` stores it
# here too; `relay` keeps only the outbox row. Forwarder posts the rows, oldest first, per upstream:
# a row leaves the outbox only after a 2xx (at least once; event ids kept, so the upstream dedupes),
# failures back off with jitter, and the upstream's X-Sentry-Rate-Limits / Retry-After hold back the
# rows of the categories it names. A full outbox loses its oldest rows, counted as dropped.
# `tracker forward` replays stored events (with attachments and feedback) the same way.

FORWARD_MODES = ("mirror", "relay")


@dataclasses.dataclass(frozen=True)
class Forward:
    """A project's upstream: where its envelopes go and whether they are kept here too."""

    dsn: str
    mode: str = "mirror"
    allow_private: bool = False

    @property
    def relay(self) -> bool:
        return self.mode == "relay"


class ForwardError(ValueError):
    """A `forward` option that cannot be used: says which part is wrong."""


def parse_forward(value: Any) -> Forward | None:
    """The `forward` option checked: a DSN SDKs would accept (http(s), a 32-hex key, a numeric
    project id) and a known mode; None or {} turns forwarding off."""
    if value in (None, {}, ""):
        return None
    if not isinstance(value, dict) or set(value) - {"dsn", "mode", "allow_private"}:
        raise ForwardError("forward must be a table of dsn, mode and allow_private")
    dsn, mode = value.get("dsn"), value.get("mode", "mirror")
    if not isinstance(dsn, str) or len(dsn) > 2048:
        raise ForwardError("forward.dsn must be a DSN such as https://<32 hex>@sentry.example.com/42")
    upstream_parts(dsn)
    if mode not in FORWARD_MODES:
        raise ForwardError(f"forward.mode must be mirror or relay, not {text(mode, 40)!r}")
    if not isinstance(value.get("allow_private", False), bool):
        raise ForwardError("forward.allow_private must be true or false")
    return Forward(dsn.strip(), mode, value.get("allow_private", False))


def upstream_parts(dsn: str) -> tuple[str, str, str]:
    """(origin, envelope path, public key) of a DSN, as the SDKs derive them (§1.2)."""
    try:
        parts = urllib.parse.urlsplit(dsn.strip())
        port = parts.port
    except ValueError:
        raise ForwardError("forward.dsn is not a URL") from None
    prefix, _, project_id = parts.path.rstrip("/").rpartition("/")
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ForwardError("forward.dsn must be an http or https URL")
    if not re.fullmatch(r"[0-9a-fA-F]{32}", parts.username or ""):
        raise ForwardError("forward.dsn needs a 32-hex public key before the @")
    if not (project_id.isascii() and project_id.isdigit()) or parts.query or parts.fragment:
        raise ForwardError("forward.dsn must end in the numeric project id")
    host = f"[{parts.hostname}]" if ":" in parts.hostname else parts.hostname
    origin = f"{parts.scheme}://{host}{f':{port}' if port else ''}"
    return origin, f"{prefix}/api/{project_id}/envelope/", parts.username or ""


def project_forward(options: Mapping[str, Any]) -> Forward | None:
    """A project's forwarding, from its cached options; None (the usual case) costs one lookup."""
    value = options.get("forward")
    return None if not value else forward_of_json(json.dumps(value, sort_keys=True))


@functools.lru_cache(maxsize=256)
def forward_of_json(option_json: str) -> Forward | None:
    """The parsed option, once per distinct text: ingest asks on every envelope of the project."""
    try:
        return parse_forward(json.loads(option_json))
    except ForwardError:  # stored before it was checked: forwarding stays off, as the page says
        return None


async def queue_forward(intake: Intake, forward: Forward, items: list[tuple[dict[str, Any], bytes]]) -> None:
    """Add the outbox row's job to the envelope's jobs; a relay project's other jobs are let go
    (it keeps nothing else). Rows dropped for room are counted as dropped events."""
    if forward.relay:
        intake.jobs.clear()
    forwarded = await forward_items(intake, items)
    if not forwarded:
        return
    row, app = await outbox_row(intake, forward, forwarded), intake.request.app
    caps, loop = forward_caps(app.settings), asyncio.get_running_loop()

    def job(conn: sqlite3.Connection) -> None:
        if dropped := enqueue_forward(conn, row, caps):
            loop.call_soon_threadsafe(app.limits.drop, intake.project_id, intake.received, "forward_outbox_full",
                                      "envelope", dropped)
    intake.jobs.append(job)
    intake.forwarded = True


# Item types an upstream understands, with the data category its rate limits name them by
# (sentry-protocol.md §5.3–5.4); anything else (profiles, replays, metrics) is not forwarded.
FORWARD_CATEGORIES = {"event": "error", "transaction": "transaction", "attachment": "attachment",
                      "session": "session", "sessions": "session", "check_in": "monitor", "feedback": "feedback",
                      "user_report": "default", "log": "log_item", "span": "span", "client_report": "internal"}

async def forward_items(intake: Intake, items: list[tuple[dict[str, Any], bytes]]
                        ) -> list[tuple[dict[str, Any], bytes]]:
    """What of an accepted envelope goes upstream: each event as stored (scrubbed); transactions, spans
    and logs scrubbed by the project's policy too (the tracker keeps none of their text, but secrets
    must not leave through them); the other known types as sent; nothing the tracker refused (rate
    limited, too large, malformed)."""
    events, out = iter(intake.events), []
    max_event = intake.request.app.settings.max_event
    for (item_header, payload), (kind, _, outcome) in zip(items, intake.outcomes):
        if kind not in FORWARD_CATEGORIES or (kind in ITEM_HANDLERS and outcome.startswith("dropped")):
            continue
        if kind == "event":
            payload = json_dumps(sdk_event(decompress_payload(next(events).payload)))
        elif kind not in ITEM_HANDLERS and len(payload) > max_event:  # a log or span batch the tracker never reads
            continue
        if kind in SCRUBBED_WHEN_FORWARDED and intake.scrub.enabled:
            scrubbed = (await asyncio.to_thread(scrubbed_item, payload, intake.scrub) if len(payload) > 64 * KIB
                        else scrubbed_item(payload, intake.scrub))
            if scrubbed is None:
                continue
            payload = scrubbed
        out.append(({**item_header, "length": len(payload)}, payload))
    return out


SCRUBBED_WHEN_FORWARDED = frozenset({"transaction", "span", "log"})


def scrubbed_item(payload: bytes, policy: ScrubPolicy) -> bytes | None:
    """A JSON item scrubbed as an event is, without the `_meta` notes (no SDK sends them); None when
    it cannot be read or walked, so that it is not sent: it might hold a secret."""
    try:
        doc = json_object(payload, "item")
        scrub_event(doc, policy)
    except Exception:  # an SDK's shape the scrubber was not written for (it walks normalised events)
        return None
    doc.pop("_meta", None)
    return json_dumps(doc)


# the keys the tracker adds to a stored event; the rest is Sentry's event schema as Relay reads it
INTERNAL_EVENT_KEYS = frozenset({"received", "title", "culprit", "metadata", "grouping", "hashes", "_meta"})


def sdk_event(stored: dict[str, Any]) -> dict[str, Any]:
    """A stored (normalised, scrubbed) event as an SDK's event item: the tracker's own keys left out."""
    return {k: v for k, v in stored.items() if k not in INTERNAL_EVENT_KEYS}


async def outbox_row(intake: Intake, forward: Forward, items: list[tuple[dict[str, Any], bytes]]) -> dict[str, Any]:
    """The outbox row of an envelope: its header without `dsn` and `sent_at` (set as it leaves), its
    items zstd-compressed (a large body in a thread, as attachments are), the data categories its
    items count in."""
    header = {k: v for k, v in intake.header.items() if k not in ("dsn", "sent_at")}
    event_id = intake.events[0].event_id if intake.events else normalize_id(header.get("event_id"))
    if event_id:
        header["event_id"] = event_id
    body = b"".join(b"%b\n%b\n" % (json_dumps(h), p) for h, p in items)
    return {"project_id": intake.project_id, "dsn": forward.dsn, "event_id": event_id,
            "categories": ";".join(sorted({FORWARD_CATEGORIES[str(h["type"])] for h, _ in items})),
            "header": json.dumps(header), "size": len(body),
            "body": (await asyncio.to_thread(zstandard.ZstdCompressor(level=1).compress, body)
                     if len(body) > 64 * KIB else FORWARD_ZSTD.compress(body)),
            "created": intake.received, "next_attempt": intake.received}


FORWARD_ZSTD = zstandard.ZstdCompressor(level=1)  # used on the event loop only


def forward_caps(settings: Settings) -> tuple[int, int]:
    """([forward] max_outbox envelopes, max_outbox_mb) a project's outbox may hold."""
    return (int(settings.forward.get("max_outbox", FORWARD_MAX_OUTBOX)),
            int(float(settings.forward.get("max_outbox_mb", FORWARD_MAX_OUTBOX_MB)) * MIB))


FORWARD_MAX_OUTBOX, FORWARD_MAX_OUTBOX_MB = 100_000, 1024


def enqueue_forward(conn: sqlite3.Connection, row: dict[str, Any], caps: tuple[int, int]) -> int:
    """Writer job, in the envelope's own transaction: add the row, then drop the project's oldest rows
    while the outbox is over its caps (count, bytes). Returns how many were dropped."""
    conn.execute("INSERT INTO forward_outbox (project_id, dsn, event_id, categories, header, body, size, created, "
                 "next_attempt) VALUES (:project_id, :dsn, :event_id, :categories, :header, :body, :size, :created, "
                 ":next_attempt)", row)
    state = conn.execute("SELECT queued, bytes FROM forward_state WHERE project_id = ?", (row["project_id"],)).fetchone()
    dropped = 0
    while state["queued"] > caps[0] or (state["bytes"] > caps[1] and state["queued"] > 1):
        oldest = conn.execute("SELECT id FROM forward_outbox WHERE project_id = ? ORDER BY id LIMIT 1",
                              (row["project_id"],)).fetchone()
        conn.execute("DELETE FROM forward_outbox WHERE id = ?", (oldest["id"],))
        dropped += 1
        state = conn.execute("SELECT queued, bytes FROM forward_state WHERE project_id = ?",
                             (row["project_id"],)).fetchone()
    if dropped:
        conn.execute("UPDATE forward_state SET dropped = dropped + ?, last_error = ?, last_error_at = ? "
                     "WHERE project_id = ?", (dropped, OUTBOX_FULL, row["created"], row["project_id"]))
    return dropped


OUTBOX_FULL = "the forward outbox was full: its oldest envelopes were dropped"


# -- sending: the Forwarder task, each upstream's connections and rate limits, the outgoing envelope ----

class Forwarder(Background):
    """Sends the forward outbox: each round reads the due rows, oldest first, and posts them to their
    upstreams side by side (FORWARD_CONNECTIONS at a time to each), then one writer job records
    the round. A row whose categories the upstream limits, or whose upstream is backing off, is left
    for later without a request."""

    ROUND = 200  # rows read per round

    def __init__(self, app: Tracker) -> None:
        self.app = app
        settings = app.settings.forward
        self.delays = [float(d) for d in settings.get("retry_delays", FORWARD_RETRY_DELAYS)] or [1.0]
        self.timeout = float(settings.get("timeout", 30))
        self.poll = float(settings.get("poll", 1))
        self.upstreams: dict[tuple[str, bool], Upstream] = {}
        self.wake = asyncio.Event()

    async def run(self) -> None:
        while True:
            try:
                full = await self.round()
            except Exception:  # a broken round must not end forwarding for good
                log.exception("forwarding failed")
                full = False
            if not full:
                self.wake.clear()
                with contextlib.suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(self.wake.wait(), self.poll)

    async def close(self) -> None:
        await super().close()
        for upstream in self.upstreams.values():
            upstream.close()

    async def round(self) -> bool:
        """One pass over the due rows; True when there may be more due at once."""
        now = time.time()
        rows = await due_forwards(self.app.store, now, self.ROUND)
        if not rows:
            return False
        options = {r["project_id"]: await self.app.options.options(r["project_id"]) for r in rows}
        by_upstream: dict[Upstream, list[sqlite3.Row]] = {}
        for row in rows:
            forward = project_forward(options[row["project_id"]])
            upstream = self.upstream(row["dsn"], bool(forward and forward.allow_private))
            by_upstream.setdefault(upstream, []).append(row)
        batches = await asyncio.gather(*(self.send_all(u, batch) for u, batch in by_upstream.items()))
        results = [r for batch in batches for r in batch]
        await self.app.writer.submit(lambda conn: record_forward_results(conn, results, time.time()))
        return len(rows) == self.ROUND and any(r.outcome == "sent" for r in results)

    def upstream(self, dsn: str, allow_private: bool) -> Upstream:
        key = (dsn, allow_private)
        if key not in self.upstreams:
            if len(self.upstreams) > 1000:
                self.upstreams.clear()
            self.upstreams[key] = Upstream(dsn, allow_private, self.timeout)
        return self.upstreams[key]

    async def send_all(self, upstream: Upstream, rows: list[sqlite3.Row]) -> list[ForwardResult]:
        """The rows of one upstream, FORWARD_CONNECTIONS at a time (one at a time near a rate limit), each
        checked against the upstream's limits and backoff just before it would go."""
        gate = asyncio.Semaphore(FORWARD_CONNECTIONS)

        async def one(row: sqlite3.Row) -> ForwardResult | None:
            categories = row["categories"].split(";")
            async with gate, upstream.pace(categories, time.time()):
                if held := upstream.held_until(categories, time.time()):
                    return ForwardResult(row["id"], row["project_id"], "retry", held, count_attempt=False)
                body = row["body"] if row["body"] is not None else await forward_body(self.app.store, row["id"])
                if body is None:  # dropped for room since it was read
                    return None
                return await self.send(upstream, row, body)
        return [r for r in await asyncio.gather(*(one(row) for row in rows)) if r]

    async def send(self, upstream: Upstream, row: sqlite3.Row, body: bytes) -> ForwardResult:
        """One attempt at one row: 2xx sent; 429 waits for its limit; 400/413 (the upstream will never
        take it) dead; anything else, or no answer, retried after a backoff that holds the upstream."""
        try:
            status, headers, answer = await asyncio.to_thread(
                lambda: upstream.post(outgoing_envelope(row["dsn"], row["header"], zstd_inflate(body), time.time())))
        except (OSError, http.client.HTTPException, TargetRefused) as exc:
            return self.failed(upstream, row, f"{type(exc).__name__}: {exc}")
        longest = upstream.obey(status, headers, time.time())
        if 200 <= status < 300:
            upstream.failures = 0
            return ForwardResult(row["id"], row["project_id"], "sent")
        error = f"HTTP {status} from the upstream: {answer}".strip()
        if status == 429:
            return ForwardResult(row["id"], row["project_id"], "retry", time.time() + (longest or 60), error, False)
        if status in (400, 413):
            return ForwardResult(row["id"], row["project_id"], "dead", error=error)
        return self.failed(upstream, row, error)

    def failed(self, upstream: Upstream, row: sqlite3.Row, error: str) -> ForwardResult:
        upstream.failures += 1
        upstream.blocked_until = time.time() + backoff(upstream.failures, self.delays)
        return ForwardResult(row["id"], row["project_id"], "retry", upstream.blocked_until, error)


FORWARD_CONNECTIONS = 4  # requests in flight to one upstream
LIMIT_NEAR = 60.0  # seconds after an upstream's rate limit ends that its requests still go one at a time
UPSTREAM_ANSWER = 64 * KIB  # of an upstream's answer, read at most (Relay answers {"id": …})


async def due_forwards(store: Store, now: float, limit: int) -> list[sqlite3.Row]:
    """The outbox rows due now, oldest first, with their (compressed) bodies when small: a round
    never holds more than `limit` × 64 KiB of them."""
    return await store.all("SELECT id, project_id, dsn, categories, header, attempts, "
                           "CASE WHEN length(body) <= 65536 THEN body END AS body FROM forward_outbox "
                           "WHERE next_attempt <= ? ORDER BY id LIMIT ?", (now, limit))


class Upstream:
    """One upstream DSN: its kept-alive connections (each used by one thread at a time), and until when
    each data category (None: all) is rate limited, from its answers."""

    def __init__(self, dsn: str, allow_private: bool, timeout: float) -> None:
        self.dsn, self.allow_private, self.timeout = dsn, allow_private, timeout
        self.origin, self.path, self.key = upstream_parts(dsn)
        self.limits: dict[str | None, float] = {}
        self.blocked_until = 0.0  # after a failure: backing off
        self.failures = 0
        self.idle: list[http.client.HTTPConnection] = []
        self.lock = threading.Lock()
        self.single = asyncio.Lock()

    def pace(self, categories: list[str], now: float) -> contextlib.AbstractAsyncContextManager[Any]:
        """One request at a time for rows of categories a rate limit held less than LIMIT_NEAR ago (or
        holds): requests in flight side by side when the upstream's limit is reached are all refused,
        so a window would see up to FORWARD_CONNECTIONS refusals where the SDKs' one sending thread
        causes one. Rows of other categories still go side by side."""
        return self.single if self.limited_until(categories) > now - LIMIT_NEAR else contextlib.nullcontext()

    def held_until(self, categories: Iterable[str], now: float) -> float:
        """When rows of these categories may go: the latest of the limits that hold them."""
        until = max(self.limited_until(categories), self.blocked_until)
        return until if until > now else 0.0

    def limited_until(self, categories: Iterable[str]) -> float:
        """Until when the upstream's rate limits hold rows of these categories (0 if none ever did)."""
        until = self.limits.get(None, 0.0)
        for category in categories:
            until = max(until, self.limits.get(category, 0.0),
                        self.limits.get("default", 0.0) if category == "error" else 0.0)
        return until

    def post(self, body: bytes) -> tuple[int, dict[str, str], str]:
        """POST one envelope (gzip); (status, lower-cased headers, start of the answer). Network errors
        raise OSError or http.client.HTTPException; a kept-alive connection the far end closed is
        reopened once."""
        for attempt in (0, 1):
            with self.lock:
                conn = self.idle.pop() if self.idle else None
            reused = conn is not None
            try:
                conn = conn or self.connect()
                conn.request("POST", self.path, body, self.headers())
                response = conn.getresponse()
                raw = response.read(UPSTREAM_ANSWER + 1)
            except (OSError, http.client.HTTPException):
                if conn is not None:
                    conn.close()
                if not reused or attempt:
                    raise
                continue
            if response.getheader("connection", "").lower() == "close" or len(raw) > UPSTREAM_ANSWER:
                conn.close()  # a longer answer is not read to its end: the connection cannot be used again
            else:
                with self.lock:
                    self.idle.append(conn)
            return response.status, {k.lower(): v for k, v in response.getheaders()}, raw[:500].decode("utf-8", "replace")
        raise AssertionError("unreachable")

    def connect(self) -> http.client.HTTPConnection:
        """A connection to the addresses resolve_target allows (private ones only with allow_private)."""
        parts = urllib.parse.urlsplit(self.origin)
        secure = parts.scheme == "https"
        addresses = resolve_target(parts.hostname or "", parts.port or (443 if secure else 80), self.allow_private,
                                   "forward.dsn")
        conn = PinnedHTTPSConnection(parts.netloc, timeout=self.timeout, context=ssl.create_default_context()) \
            if secure else PinnedHTTPConnection(parts.netloc, timeout=self.timeout)
        conn.addresses = addresses
        return conn

    def headers(self) -> dict[str, str]:
        return {"X-Sentry-Auth": f"Sentry sentry_key={self.key}, sentry_version=7, sentry_client=tracker/{__version__}",
                "Content-Type": "application/x-sentry-envelope", "Content-Encoding": "gzip",
                "User-Agent": f"tracker/{__version__}"}

    def close(self) -> None:
        with self.lock:
            for conn in self.idle:
                conn.close()
            self.idle.clear()

    def obey(self, status: int, headers: Mapping[str, str], now: float) -> float:
        """Note the rate limits an answer announces (on any status, as the SDKs do; on a 429 without
        X-Sentry-Rate-Limits, Retry-After, else 60 s, for all); returns the longest, 0 if none."""
        limits = parse_rate_limits(headers.get("x-sentry-rate-limits", ""))
        if not limits and status == 429:
            limits = [(parse_retry_after(headers.get("retry-after")) or 60.0, [None])]
        longest = 0.0
        for seconds, categories in limits:
            for category in categories:
                self.limits[category] = max(self.limits.get(category, 0.0), now + seconds)
            longest = max(longest, seconds)
        return longest


def parse_rate_limits(value: str) -> list[tuple[float, list[str | None]]]:
    """`60:transaction:key, 2700:default;error;security:organization` → [(60, ["transaction"]), …];
    an empty category list means all (None); entries that do not parse are skipped."""
    limits = []
    for entry in value.split(",")[:50]:
        fields = entry.strip().split(":")
        try:
            seconds = min(float(fields[0]), 86400.0)
        except ValueError:
            continue
        if len(fields) > 1 and seconds >= 0 and math.isfinite(seconds):
            limits.append((seconds, [c for c in fields[1].split(";") if c] or [None]))
    return limits


async def forward_body(store: Store, row_id: int) -> bytes | None:
    """A large row's compressed body, read when it is its turn."""
    row = await store.one("SELECT body FROM forward_outbox WHERE id = ?", (row_id,))
    return row["body"] if row else None


def outgoing_envelope(dsn: str, header_json: str, body: bytes, now: float) -> bytes:
    """The envelope as it leaves, gzip-compressed: the stored header with the upstream's `dsn` and
    this moment's `sent_at` (Relay corrects clock drift from it: the original would shift a late
    envelope's timestamps), then the stored items."""
    header = {**json.loads(header_json), "dsn": dsn, "sent_at": iso(now)}
    return gzip_bytes(json_dumps(header) + b"\n" + body)


def gzip_bytes(data: bytes) -> bytes:
    """Level 1: a 6 KB envelope in a third of level 6's time for 7% more bytes (2,945 against 2,757)."""
    compressor = zlib.compressobj(1, zlib.DEFLATED, 16 + zlib.MAX_WBITS)
    return compressor.compress(data) + compressor.flush()


def zstd_inflate(frame: bytes) -> bytes:
    return zstandard.ZstdDecompressor().decompress(frame)


@dataclasses.dataclass
class ForwardResult:
    """What became of one outbox row in a round: sent, retry later (with why), or dropped for good."""

    row_id: int
    project_id: int
    outcome: str  # sent | retry | dead
    next_attempt: float = 0.0
    error: str = ""
    count_attempt: bool = True


def backoff(attempts: int, delays: Sequence[float]) -> float:
    """Seconds before the next try: the delay for this attempt, ±25% jitter so a fleet spreads out."""
    delay = delays[min(max(attempts, 1), len(delays)) - 1]
    return delay * random.uniform(0.75, 1.25)


FORWARD_RETRY_DELAYS = (1, 5, 30, 120, 600, 1800)


def record_forward_results(conn: sqlite3.Connection, results: list[ForwardResult], now: float) -> None:
    """Writer job after a round: sent and dead rows leave, the others wait; each project's counts
    and last error follow."""
    sent: dict[int, int] = {}
    for r in results:
        if r.outcome == "retry":
            conn.execute("UPDATE forward_outbox SET attempts = attempts + ?, next_attempt = ?, last_error = ? "
                         "WHERE id = ?", (int(r.count_attempt), r.next_attempt, r.error or None, r.row_id))
        else:
            conn.execute("DELETE FROM forward_outbox WHERE id = ?", (r.row_id,))
        if r.outcome == "sent":
            sent[r.project_id] = sent.get(r.project_id, 0) + 1
        if r.error:
            conn.execute("UPDATE forward_state SET last_error = ?, last_error_at = ?, dropped = dropped + ? "
                         "WHERE project_id = ?", (r.error, now, int(r.outcome == "dead"), r.project_id))
    for project_id, n in sent.items():
        conn.execute("INSERT INTO forward_sent (project_id, minute, sent) VALUES (?, ?, ?) "
                     "ON CONFLICT DO UPDATE SET sent = sent + excluded.sent", (project_id, minute_of(now), n))
        conn.execute("UPDATE forward_state SET last_sent = ? WHERE project_id = ?", (now, project_id))
    conn.execute("DELETE FROM forward_sent WHERE minute < ?", (minute_of(now) - 1440,))


# -- status: what the project page and /metrics show ------------------------------------------------

async def forward_status(store: Store, project_id: int, now: float) -> dict[str, Any]:
    """A project's forwarding at a glance: queued envelopes and bytes, the oldest one's age, sent in
    the last hour, dropped, the last error and send."""
    state = await store.one("SELECT * FROM forward_state WHERE project_id = ?", (project_id,))
    oldest = await store.one("SELECT min(created) AS created FROM forward_outbox WHERE project_id = ?", (project_id,))
    sent = await store.one("SELECT coalesce(sum(sent), 0) AS n FROM forward_sent WHERE project_id = ? AND minute >= ?",
                           (project_id, minute_of(now) - 59))
    return forward_summary(dict(state) if state else None, oldest["created"] if oldest else None,
                           sent["n"] if sent else 0, now)


def forward_summary(state: Mapping[str, Any] | None, oldest: float | None, sent_hour: int, now: float
                    ) -> dict[str, Any]:
    state = state or {}
    return {"queued": state.get("queued") or 0, "bytes": state.get("bytes") or 0,
            "outbox_age": max(now - oldest, 0.0) if oldest else 0.0, "sent_last_hour": sent_hour,
            "dropped": state.get("dropped") or 0, "last_error": state.get("last_error"),
            "last_error_at": state.get("last_error_at"), "last_sent": state.get("last_sent")}


async def all_forward_status(store: Store, now: float) -> list[tuple[str, dict[str, Any]]]:
    """(project slug, forward_summary) of every project that has forwarded or queued anything."""
    rows = await store.all(
        """SELECT p.slug, s.*, (SELECT min(created) FROM forward_outbox o WHERE o.project_id = s.project_id) AS oldest,
                  (SELECT coalesce(sum(sent), 0) FROM forward_sent f WHERE f.project_id = s.project_id
                   AND f.minute >= ?) AS sent_hour
           FROM forward_state s JOIN projects p ON p.id = s.project_id ORDER BY p.slug""", (minute_of(now) - 59,))
    return [(r["slug"], forward_summary(dict(r), r["oldest"], r["sent_hour"], now)) for r in rows]


def save_forward(conn: sqlite3.Connection, project_id: int, forward: Forward | None) -> None:
    """Store a project's forwarding (None: off; its queued rows still go out)."""
    if forward is None:
        conn.execute("DELETE FROM project_options WHERE project_id = ? AND key = 'forward'", (project_id,))
    else:
        set_project_option(conn, project_id, "forward", forward_option(forward))


def forward_option(forward: Forward) -> dict[str, Any]:
    return {"dsn": forward.dsn, "mode": forward.mode, **({"allow_private": True} if forward.allow_private else {})}


# -- replay: stored events re-sent to an upstream (`tracker forward`) ------------------------------

@dataclasses.dataclass
class Replay:
    """How far a replay of a project's events to one upstream got: resumed after `last_id`."""

    project_id: int
    dsn: str
    since: float
    last_id: int = 0
    sent: int = 0
    done: bool = False


def replay_state(conn: sqlite3.Connection, project_id: int, dsn: str, since: float, restart: bool) -> Replay:
    """The replay to resume (the first run's `since` holds for it), or a new one (saved as it starts)."""
    row = conn.execute("SELECT * FROM forward_replays WHERE project_id = ? AND dsn = ?", (project_id, dsn)).fetchone()
    if row is None or restart:
        return Replay(project_id, dsn, since)
    return Replay(project_id, dsn, row["since"], row["last_id"], row["sent"], bool(row["done"]))


def save_replay(conn: sqlite3.Connection, replay: Replay) -> None:
    conn.execute("INSERT OR REPLACE INTO forward_replays (project_id, dsn, since, last_id, sent, done, updated) "
                 "VALUES (?, ?, ?, ?, ?, ?, ?)", (replay.project_id, replay.dsn, replay.since, replay.last_id,
                                                  replay.sent, int(replay.done), time.time()))


def replay_remaining(conn: sqlite3.Connection, replay: Replay) -> tuple[int, int, int]:
    """(events, their attachments, their feedback) still to send."""
    where = "project_id = ? AND timestamp >= ? AND id > ?"
    args = (replay.project_id, replay.since, replay.last_id)
    events = conn.execute(f"SELECT count(*) FROM events WHERE {where}", args).fetchone()[0]
    extras = [conn.execute(f"SELECT count(*) FROM {table} x WHERE x.project_id = ? AND x.event_id IN "
                           f"(SELECT event_id FROM events WHERE {where})", (replay.project_id, *args)).fetchone()[0]
              for table in ("attachments", "feedback")]
    return events, extras[0], extras[1]


def replay_batch(conn: sqlite3.Connection, replay: Replay, limit: int) -> list[sqlite3.Row]:
    return conn.execute("SELECT id, event_id, payload FROM events WHERE project_id = ? AND timestamp >= ? AND id > ? "
                        "ORDER BY id LIMIT ?", (replay.project_id, replay.since, replay.last_id, limit)).fetchall()


class ReplayStopped(Exception):
    """The upstream kept failing: the replay stops where it is, to be resumed."""


def send_replayed(upstream: Upstream, header_json: str, body: bytes, delays: Sequence[float]) -> str:
    """Send one replayed envelope until the upstream takes it, waiting out its rate limits and
    backing off on failures; "sent", or why the upstream refused it for good (400, 413). After
    len(delays) failures in a row raises ReplayStopped."""
    failures = 0
    while True:
        now = time.time()
        if held := upstream.held_until(("error", "attachment", "default"), now):
            time.sleep(held - now)
            continue
        try:
            status, headers, answer = upstream.post(outgoing_envelope(upstream.dsn, header_json, body, now))
        except TargetRefused as exc:  # a cloud metadata address: never, however often it is tried
            raise ReplayStopped(str(exc)) from None
        except (OSError, http.client.HTTPException) as exc:
            error = f"{type(exc).__name__}: {exc}"
        else:
            upstream.obey(status, headers, time.time())
            if 200 <= status < 300:
                return "sent"
            if status == 429:
                continue
            if status in (400, 413):
                return f"refused: HTTP {status}: {answer}"
            error = f"HTTP {status}: {answer}"
        failures += 1
        if failures > len(delays):
            raise ReplayStopped(error)
        time.sleep(backoff(failures, delays))


def replay_envelope(conn: sqlite3.Connection, project_id: int, event: sqlite3.Row) -> tuple[str, bytes]:
    """A stored event as the envelope its SDK would send (header, items), with its attachments and
    user feedback."""
    items = [({"type": "event", "content_type": "application/json"},
              json_dumps(sdk_event(decompress_payload(event["payload"]))))]
    for a in conn.execute("SELECT filename, content_type, attachment_type, data FROM attachments "
                          "WHERE project_id = ? AND event_id = ? ORDER BY id", (project_id, event["event_id"])):
        items.append(({"type": "attachment", "filename": a["filename"], "content_type": a["content_type"],
                       "attachment_type": a["attachment_type"]}, zstd_inflate(a["data"])))
    for f in conn.execute("SELECT name, email, message FROM feedback WHERE project_id = ? AND event_id = ? ORDER BY id",
                          (project_id, event["event_id"])):
        items.append(({"type": "user_report", "content_type": "application/json"}, json_dumps(
            {"event_id": event["event_id"], "name": f["name"], "email": f["email"], "comments": f["message"]})))
    return (json.dumps({"event_id": event["event_id"]}),
            b"".join(b"%b\n%b\n" % (json_dumps({**h, "length": len(p)}), p) for h, p in items))


# =============================================================================
# JSON API (Sentry's shapes; Bearer tokens)
# =============================================================================

def api(handler: Callable[[Request], Any], capability: str | None) -> Callable[[Request], Any]:
    """Wrap an /api/0/ handler: token auth (a token whose scopes reach `capability`, see TOKEN_REACH;
    None: any token), JSON errors, application/json on every answer."""
    async def endpoint(request: Request) -> Response:
        try:
            await require_token(request, capability)
            result = await handler(request)
        except ApiError as exc:
            return JSONResponse({"detail": exc.detail}, status_code=exc.status)
        return result if isinstance(result, Response) else JSONResponse(result)
    endpoint.__name__ = handler.__name__
    return endpoint


async def require_token(request: Request, capability: str | None = None) -> sqlite3.Row:
    authorization = request.headers.get("authorization", "")
    scheme, _, token = authorization.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise ApiError(401, "Authentication credentials were not provided.")
    row = await token_by_secret(request.app.store, token.strip())
    if row is None:
        raise ApiError(401, "Invalid token")
    if capability is not None and not token_can(row["scopes"], capability):
        raise ApiError(403, "You do not have permission to perform this action.")  # Sentry's words
    return row


class ApiError(Exception):
    def __init__(self, status: int, detail: str) -> None:
        super().__init__(detail)
        self.status, self.detail = status, detail


async def api_root(request: Request) -> dict[str, Any]:
    """GET /api/0/ (sentry-cli `info`): the token's person (null for a token no one owns) and its scopes."""
    token = await require_token(request)
    user = await user_by_id(request.app.store, token["user_id"]) if token["user_id"] is not None else None
    return {"version": "0", "user": {k: v for k, v in serialize_user(user).items() if k in ("id", "name", "username", "email")}
            if user else None, "auth": {"scopes": sorted(sentry_scopes(token["scopes"])), "name": token["name"]}}


def serialize_user(user: sqlite3.Row) -> dict[str, Any]:
    """A person in Sentry's user shape; the tracker knows a name (an email when it looks like one) and role."""
    email = user["name"] if "@" in user["name"] else ""
    return {"id": str(user["id"]), "name": user["name"], "username": user["name"], "email": email,
            "avatarUrl": None, "isActive": not user["disabled"], "hasPasswordAuth": user["password"] is not None,
            "isManaged": False, "dateJoined": iso(user["created"]), "lastLogin": None, "lastActive": None,
            "has2fa": False, "isSuperuser": user["role"] == "admin", "isStaff": False, "experiments": {},
            "emails": [{"id": str(user["id"]), "email": email, "is_verified": False}] if email else [],
            "avatar": {"avatarType": "letter_avatar", "avatarUuid": None}}


async def api_auth(request: Request) -> dict[str, Any]:
    """GET /api/0/auth/: who the token belongs to; 400 for a token no person owns, as Sentry answers
    for an organization token (tokens made with `tracker token create` belong to no one)."""
    token = await require_token(request)
    user = await user_by_id(request.app.store, token["user_id"]) if token["user_id"] is not None else None
    if user is None:
        raise ApiError(400, "This token belongs to no user: create one signed in (Settings) to act as yourself")
    return serialize_user(user)


async def api_members(request: Request) -> Response:
    """GET /api/0/organizations/<org>/members/: the tracker's people as organization members."""
    check_org(request)
    limit, offset = page_args(request)
    users = await all_users(request.app.store)
    page = users[offset:offset + limit]
    return JSONResponse([serialize_member(u, request.app.created) for u in page],
                        headers=paginate(request, len(users) - offset, limit, offset))


def serialize_member(user: sqlite3.Row, org_created: float) -> dict[str, Any]:
    """Sentry's organization member: the admin role is Sentry's owner, a member its member; no teams."""
    role = "owner" if user["role"] == "admin" else "member"
    person = serialize_user(user)
    return {"id": person["id"], "email": person["email"], "name": person["name"], "user": person,
            "orgRole": role, "role": role, "roleName": role.title(), "pending": False, "expired": False,
            "flags": {"sso:linked": False, "sso:invalid": False, "member-limit:restricted": False},
            "dateCreated": iso(max(user["created"], org_created)), "inviteStatus": "approved", "inviterName": None,
            "teams": [], "teamRoles": [], "projects": []}


async def api_teams(request: Request) -> list[dict[str, Any]]:
    """GET /api/0/organizations/<org>/teams/: the tracker has no teams (everyone sees every project)."""
    check_org(request)
    return []


async def api_organizations(request: Request) -> list[dict[str, Any]]:
    return [serialize_org(request.app)]


def serialize_org(app: Tracker) -> dict[str, Any]:
    """The one organization; `links` as a self-hosted Sentry gives them (no region URL)."""
    slug = app.settings.organization
    return {"id": "1", "slug": slug, "name": slug, "dateCreated": iso(app.created), "isEarlyAdopter": False,
            "require2FA": False, "status": {"id": "active", "name": "active"}, "avatar": {"avatarType": "letter_avatar",
            "avatarUuid": None}, "features": [], "links": {"organizationUrl": app.settings.public_url, "regionUrl": ""}}


def iso(ts: float | None) -> str | None:
    if ts is None:
        return None
    return dt.datetime.fromtimestamp(ts, dt.timezone.utc).isoformat(timespec="microseconds").replace("+00:00", "Z")


async def api_organization(request: Request) -> dict[str, Any]:
    check_org(request)
    return serialize_org(request.app)


def check_org(request: Request) -> None:
    if request.path_params.get("org") != request.app.settings.organization:
        raise ApiError(404, "The requested resource does not exist")


async def api_org_projects(request: Request) -> list[dict[str, Any]]:
    check_org(request)
    rows = sorted(await all_projects(request.app.store), key=lambda r: r["slug"])  # code point order, as SQLite sorts
    return [serialize_project(r, request.app) for r in rows]


def serialize_project(row: sqlite3.Row, app: Tracker) -> dict[str, Any]:
    return {"id": str(row["id"]), "slug": row["slug"], "name": row["name"], "platform": row["platform"] or None,
            "dateCreated": iso(row["created"]), "isMember": True, "hasAccess": True,
            "organization": serialize_org(app)}


async def api_project(request: Request) -> dict[str, Any]:
    project = await project_from_path(request)
    return {**serialize_project(project, request.app),
            **serialize_rules(await request.app.rules.rules_for(project["id"])),
            **(await project_scrub_policy(request, project["id"])).api_fields()}


async def api_project_forwarding(request: Request) -> dict[str, Any]:
    """GET /api/0/projects/<org>/<project>/forwarding/: the project's upstream and its outbox's state
    (what the upstream last answered is for those who may change where data goes, as for channels)."""
    project = await project_from_path(request)
    admin = token_can((await require_token(request))["scopes"], "integrations")
    return await serialize_forwarding(request, project["id"], admin)


async def serialize_forwarding(request: Request, project_id: int, admin: bool) -> dict[str, Any]:
    forward = project_forward(await request.app.options.options(project_id))
    state = await forward_status(request.app.store, project_id, time.time())
    return {"dsn": forward.dsn if forward else None, "mode": forward.mode if forward else None,
            "allowPrivate": bool(forward and forward.allow_private), "queued": state["queued"],
            "queuedBytes": state["bytes"], "outboxAge": round(state["outbox_age"], 3),
            "sentLastHour": state["sent_last_hour"], "dropped": state["dropped"],
            "lastError": error_shown(state["last_error"], admin), "dateLastError": iso(state["last_error_at"]),
            "dateLastSent": iso(state["last_sent"])}


async def api_update_project_forwarding(request: Request) -> dict[str, Any]:
    """PUT /api/0/projects/<org>/<project>/forwarding/ {dsn, mode, allowPrivate}: where the project's
    envelopes also go ({"dsn": null} stops it; what is queued still goes)."""
    project = await project_from_path(request)
    body = await request_json(request)
    if not isinstance(body, dict):
        raise ApiError(400, "a JSON object of dsn, mode and allowPrivate")
    option = {"dsn": body.get("dsn"), "mode": body.get("mode", "mirror"), "allow_private": body.get("allowPrivate", False)}
    try:
        await store_forward(request, project["id"], parse_forward(option if body.get("dsn") is not None else None))
    except ForwardError as exc:
        raise ApiError(400, str(exc)) from None
    return await serialize_forwarding(request, project["id"], True)


async def store_forward(request: Request, project_id: int, forward: Forward | None) -> None:
    """Save a project's forwarding through the writer; ingest follows it from the next envelope. A DSN
    with one of the project's own keys is refused: each envelope would come back to be sent again."""
    own = {k["public_key"] for k in await project_keys(request.app.store, project_id)}
    if forward and upstream_parts(forward.dsn)[2].lower() in own:
        raise ForwardError("forward.dsn is this project's own DSN: it would forward to itself for ever")
    await request.app.writer.submit(lambda conn: save_forward(conn, project_id, forward))
    request.app.options.forget(project_id)


async def project_from_path(request: Request) -> sqlite3.Row:
    check_org(request)
    row = await find_project(request.app.store, request.path_params["project"])
    if row is None:
        raise ApiError(404, "The requested resource does not exist")
    return row


async def api_project_issues(request: Request) -> Response:
    """GET /api/0/projects/<org>/<project>/issues/: the project's issue list (`issue_list`); its
    `statsPeriod` picks the stats series only, as in Sentry."""
    project = await project_from_path(request)
    return await issue_list(request, [project["id"]], stats_param="statsPeriod", period_filter=False)


async def api_org_issues(request: Request) -> Response:
    """GET /api/0/organizations/<org>/issues/: the issue search of Sentry's UI, CLI and connectors."""
    check_org(request)
    return await issue_list(request, await projects_param(request), stats_param="groupStatsPeriod",
                            period_filter=True)


async def projects_param(request: Request) -> list[int]:
    """`project=` ids or slugs (repeatable); none or -1: every project (an empty list)."""
    refs = [ref for ref in request.query_params.getlist("project") if ref != "-1"]
    if len(refs) > 100:
        raise ApiError(400, "Invalid project parameter: at most 100 projects")
    ids = []
    for ref in refs:
        row = await find_project(request.app.store, ref)
        if row is None:
            raise ApiError(400, f"Invalid project parameter: no project {ref[:80]!r}")
        ids.append(row["id"])
    return ids


async def issue_list(request: Request, project_ids: list[int], *, stats_param: str, period_filter: bool) -> Response:
    """Sentry's issue list: `query` (default is:unresolved; an event id or, with shortIdLookup=1, a short id
    is a direct hit), `group`, `environment`, `statsPeriod`/`start`/`end`, `sort`, `limit`, `cursor`, `collapse`."""
    params = request.query_params
    limit, offset = page_args(request)
    stats_key = stats_period_key(params.get(stats_param), params)
    query = params.get("query", "is:unresolved")
    hit = await direct_hit(request, query.strip(), project_ids)
    if hit is not None:
        rows = await serialize_issue_rows(request, [hit[0]], stats_key)
        rows[0].update({"matchingEventId": hit[1]} if hit[1] else {})
        return JSONResponse(rows, headers={"X-Sentry-Direct-Hit": "1"})
    if params.getlist("group"):
        return await group_param_issues(request, project_ids, stats_key)
    query += "".join(f" environment:{quoted(env)}" for env in params.getlist("environment")[:1])
    if period_filter:
        start, end = period_params(params, default="14d")
        query += f" lastSeen:>={start} firstSeen:<={end}"
    rows = await issues_matching(request, query, params.get("sort") or "date", limit + 1, offset, project_ids)
    return JSONResponse(await serialize_issue_rows(request, rows[:limit], stats_key),
                        headers=paginate(request, len(rows), limit, offset))


async def group_param_issues(request: Request, project_ids: list[int], stats_key: str | None) -> Response:
    """`group=1&group=2`: exactly those issues (of the projects asked for), whatever the query says."""
    ids = request.query_params.getlist("group")
    if len(ids) > 100 or not all(i.isascii() and i.isdigit() and len(i) < 19 for i in ids):
        raise ApiError(400, "Invalid group parameter: at most 100 numeric issue ids")
    rows = [r for r in await issues_by_ids(request.app.store, [int(i) for i in ids])
            if not project_ids or r["project_id"] in project_ids]
    return JSONResponse(await serialize_issue_rows(request, sorted(rows, key=lambda r: -r["id"]), stats_key))


def stats_period_key(value: str | None, params: Mapping[str, str]) -> str | None:
    """Which `stats` series a list carries: 24h (hourly, the default), 14d (daily), auto, "" (none)."""
    if value is None:
        return "24h"
    if value not in ("", "24h", "14d", "auto"):
        raise ApiError(400, "Invalid groupStatsPeriod parameter: one of 24h, 14d, auto or empty")
    if value == "auto":
        start, end = period_params(params, default="14d")
        return "24h" if end - start <= 86400 else "14d"
    return value or None


def period_params(params: Mapping[str, str], default: str) -> tuple[float, float]:
    """Sentry's time range: `statsPeriod` (30m, 24h, 14d, 2w) or `start` and `end` (ISO 8601) → epochs."""
    now = time.time()
    if params.get("start") or params.get("end"):
        start, end = parse_timestamp(params.get("start")), parse_timestamp(params.get("end"))
        if start is None or end is None or start > end:
            raise ApiError(400, "start and end must both be ISO 8601 times, start before end")
        return start, end
    period = params.get("statsPeriod") or default
    match = re.fullmatch(r"(\d{1,6})([smhdw])", period)
    if not match:
        raise ApiError(400, "Invalid statsPeriod parameter: a number and s, m, h, d or w (24h, 14d)")
    return max(now - int(match.group(1)) * DURATION_UNITS[match.group(2)], 0.0), now


async def direct_hit(request: Request, query: str, project_ids: list[int]) -> tuple[sqlite3.Row, str | None] | None:
    """The issue a query names outright, as Sentry answers it: an event id (32 hex or a dashed UUID), or a
    short id with shortIdLookup=1; with the event id that matched."""
    event_id = normalize_id(query) if re.fullmatch(r"[0-9a-fA-F]{32}|[0-9a-fA-F-]{36}", query) else None
    if event_id:
        event = await event_by_id(request.app.store, event_id, project_ids)
        issue = await get_issue(request.app.store, event["issue_id"]) if event else None
        return (issue, event_id) if issue else None
    if request.query_params.get("shortIdLookup") in ("1", "true"):
        issue = await issue_by_short_id(request.app.store, query)
        return (issue, None) if issue else None
    return None


async def serialize_issue_rows(request: Request, rows: list[sqlite3.Row], stats_key: str | None) -> list[dict[str, Any]]:
    """List rows: the base issue with `stats`, `lifetime`, `filtered` and `isUnhandled`, less what
    `collapse` names (stats, lifetime, filtered, base, unhandled)."""
    collapse = {part for value in request.query_params.getlist("collapse") for part in value.split(",")}
    ids = [r["id"] for r in rows]
    unhandled = await issues_tagged(request.app.store, ids, "handled", "no")
    stats = await issue_stats(request.app.store, ids, stats_key) if stats_key and "stats" not in collapse else {}
    out = []
    for row in rows:
        base = serialize_issue(row, request.app.settings)
        item: dict[str, Any] = {"id": base["id"]} if "base" in collapse else base
        if "unhandled" not in collapse:
            item["isUnhandled"] = row["id"] in unhandled
        if stats:
            item["stats"] = {stats_key: stats[row["id"]]}
        if "lifetime" not in collapse:
            item["lifetime"] = {k: base[k] for k in ("count", "userCount", "firstSeen", "lastSeen")} | {"stats": None}
        if "filtered" not in collapse:
            item["filtered"] = None  # counts under the query: not kept per query here
        out.append(item)
    return out


async def issue_stats(store: Store, issue_ids: list[int], key: str) -> dict[int, list[list[int]]]:
    """Sentry's `stats` series: [[bucket start (unix), events], …], 24 hourly or 14/30 daily buckets."""
    buckets, size = STATS_SERIES[key]
    counts = await issue_event_buckets(store, issue_ids, buckets, size) if issue_ids else {}
    first = int((time.time() // size - buckets + 1) * size)
    return {i: [[first + n * size, c] for n, c in enumerate(v)] for i, v in counts.items()}


STATS_SERIES = {"24h": (24, 3600), "14d": (14, 86400), "30d": (30, 86400)}


def page_args(request: Request) -> tuple[int, int]:
    """`limit` (or `per_page`, 1-100, default 100) and the offset of Sentry's `value:offset:is_prev`
    cursor; an empty cursor (sentry-cli's first page sends `cursor=`) is the first page."""
    params = request.query_params
    try:
        limit = min(max(int(params.get("limit") or params.get("per_page") or 100), 1), 100)
    except ValueError:
        raise ApiError(400, "Invalid limit parameter.") from None
    cursor = params.get("cursor") or "0:0:0"
    parts = cursor.split(":")
    if len(parts) != 3 or not parts[1].isascii() or not parts[1].isdigit() or len(parts[1]) > 18:
        raise ApiError(400, "Invalid cursor parameter.")
    return limit, min(int(parts[1]), MAX_OFFSET)


MAX_OFFSET = 2 ** 31  # paging further finds nothing anyway, and SQLite cannot bind past 2**63


def serialize_issue(row: sqlite3.Row, settings: Settings) -> dict[str, Any]:
    return {
        "id": str(row["id"]), "shortId": short_id(row["project_slug"], row["short_id"]),
        "title": row["title"], "culprit": row["culprit"], "level": row["level"], "status": row["status"],
        "statusDetails": public_details(json.loads(row["status_details"])),
        "substatus": row["substatus"] or ("ongoing" if row["status"] == "unresolved" else None),
        "type": row["type"], "issueType": ISSUE_TYPES.get(row["type"], "error"), "issueCategory": "error",
        "priority": PRIORITY_BY_LEVEL.get(row["level"], "low"), "priorityLockedAt": None,
        "metadata": json.loads(row["metadata"]), "platform": row["platform"],
        "logger": row["logger"] or None, "count": str(row["times_seen"]), "userCount": row["user_count"],
        "firstSeen": iso(row["first_seen"]), "lastSeen": iso(row["last_seen"]),
        "permalink": f"{settings.public_url}/issues/{row['id']}/",
        "project": {"id": str(row["project_id"]), "slug": row["project_slug"], "name": row["project_name"],
                    "platform": row["project_platform"] or None},
        "numComments": 0, "assignedTo": serialize_assignee(row["assignee"]), "isBookmarked": False,
        "isPublic": False, "hasSeen": False, "isSubscribed": False, "subscriptionDetails": None, "shareId": None,
        "annotations": [],
        "firstRelease": {"version": row["first_release"]} if row["first_release"] else None,
        "lastRelease": {"version": row["last_release"]} if row["last_release"] else None,
    }


# Sentry sets a new issue's priority from its level; the tracker keeps no other
PRIORITY_BY_LEVEL = {"fatal": "high", "error": "high", "warning": "medium"}

ISSUE_TYPES = {"error": "error", "default": "error", "csp": "error"}  # Sentry's issueType of an error issue


def serialize_assignee(assignee: str | None) -> dict[str, Any] | None:
    """The free-text assignee as Sentry's actor (until users exist, the name is all we know)."""
    if assignee is None:
        return None
    return {"type": "user", "name": assignee, **({"email": assignee} if "@" in assignee else {})}


def paginate(request: Request, total_rows: int, limit: int, offset: int) -> dict[str, str]:
    """Sentry's cursor Link header (`0:<offset>:0`), which sentry-cli and scripts follow."""
    base = str(request.url.remove_query_params("cursor"))
    sep = "&" if "?" in base else "?"
    prev_offset = max(offset - limit, 0)
    links = [f'<{base}{sep}cursor=0:{prev_offset}:1>; rel="previous"; results="{str(offset > 0).lower()}"; '
             f'cursor="0:{prev_offset}:1"',
             f'<{base}{sep}cursor=0:{offset + limit}:0>; rel="next"; results="{str(total_rows > limit).lower()}"; '
             f'cursor="0:{offset + limit}:0"']
    return {"Link": ", ".join(links)}


async def api_update_issue(request: Request) -> dict[str, Any]:
    """PUT /api/0/issues/<id>/: status, statusDetails and assignedTo; answers the updated issue."""
    issue = await issue_from_path(request)
    await update_issues(request, issue["project_id"], [issue["id"]], await request_json(request))
    return await api_issue(request)


async def issue_from_path(request: Request) -> sqlite3.Row:
    """The issue the path names by numeric or short id (`CHECKOUT-1`), under /issues/ or the
    organization's; for the API and the dashboard alike; 404 when there is none."""
    if "org" in request.path_params:
        check_org(request)
    raw = request.path_params["issue_id"]
    issue_id = path_issue_id(request)
    store = request.app.store
    row = await get_issue(store, issue_id) if issue_id is not None else await issue_by_short_id(store, raw)
    if row is None:
        raise ApiError(404, "The requested resource does not exist")
    return row


def path_issue_id(request: Request) -> int | None:
    raw = request.path_params["issue_id"]
    return int(raw) if raw.isascii() and raw.isdigit() and len(raw) < 19 else None


async def update_issues(request: Request, project_id: int, issue_ids: list[int], body: Any) -> IssueChange:
    """Validate an update (API body or dashboard form) and apply it in the writer."""
    try:
        change = parse_issue_change(body)
    except ValueError as exc:
        raise ApiError(400, str(exc)) from None
    if change.details.get("inNextRelease") and not await project_releases(request.app.store, project_id, 1):
        raise ApiError(400, "no release seen in this project yet, so there is no next release to resolve in")
    await request.app.writer.submit(lambda conn: apply_issue_change(conn, issue_ids, change, time.time()))
    return change


async def request_json(request: Request) -> Any:
    try:
        body = json.loads(await read_body(request, 64 * KIB) or b"{}")
        json.dumps(body, ensure_ascii=False).encode()  # a lone "\ud800" parses, then SQLite refused it: a 500
        return body
    except IngestError as exc:
        raise ApiError(exc.status, exc.detail) from None
    except UnicodeEncodeError:
        raise ApiError(400, "the request body holds a lone surrogate (\\ud800 to \\udfff), which is no text") from None
    except ValueError:
        raise ApiError(400, "the request body is not JSON") from None


async def api_issue(request: Request) -> dict[str, Any]:
    """GET …/issues/<id or short id>/: the base issue with what Sentry's detail adds (activity, top tags
    unless collapse=tags, 24h and 30d stats, releases, report count)."""
    row = await issue_from_path(request)
    store, issue_id = request.app.store, row["id"]
    collapse = {part for value in request.query_params.getlist("collapse") for part in value.split(",")}
    stats = {key: (await issue_stats(store, [issue_id], key))[issue_id] for key in ("24h", "30d")}
    detail = {**serialize_issue(row, request.app.settings),
              "isUnhandled": bool(await issues_tagged(store, [issue_id], "handled", "no")),
              "activity": [serialize_activity(r) for r in await issue_activity(store, issue_id)],
              "seenBy": [], "participants": [], "userReportCount": (await issue_feedback_rows(store, issue_id, 1))[1],
              "stats": stats, "pluginActions": [], "pluginIssues": [], "pluginContexts": []}
    if "tags" not in collapse:
        detail["tags"] = [serialize_tag_key(t) for t in await issue_tag_summary(store, issue_id)]
    return detail


def serialize_tag_key(summary: dict[str, Any]) -> dict[str, Any]:
    """A tag of an issue in Sentry's shape: key, name, totalValues and topValues."""
    key = summary["key"]
    return {"key": key, "name": tag_label(key), "totalValues": summary["total"],
            "topValues": [{"key": key, "name": v["value"], "value": v["value"], "count": v["count"]}
                          for v in summary["values"]]}


def tag_label(key: str) -> str:
    """Sentry's label of a tag key: its built-in ones capitalised, the rest as they are."""
    return key.replace("_", " ").title() if key in BUILTIN_TAG_KEYS else key


BUILTIN_TAG_KEYS = {"level", "environment", "release", "server_name", "user", "browser", "os", "device", "runtime",
                    "url", "transaction", "handled", "mechanism", "logger", "dist"}


async def api_issue_tags(request: Request) -> list[dict[str, Any]]:
    """GET …/issues/<id>/tags/: every tag key of the issue with its top values."""
    issue = await issue_from_path(request)
    return [serialize_tag_key(t) for t in await issue_tag_summary(request.app.store, issue["id"])]


async def api_issue_tag(request: Request) -> dict[str, Any]:
    """GET …/issues/<id>/tags/<key>/: one tag key (its top 9 values), 404 when the issue never had it."""
    issue = await issue_from_path(request)
    key = request.path_params["key"]
    found = [t for t in await issue_tag_summary(request.app.store, issue["id"], per_key=9) if t["key"] == key]
    if not found:
        raise ApiError(404, "The requested resource does not exist")
    return {**serialize_tag_key(found[0]), "uniqueValues": await issue_tag_count(request.app.store, issue["id"], key)}


async def api_issue_tag_values(request: Request) -> Response:
    """GET …/issues/<id>/tags/<key>/values/: the key's values, most seen first, paginated."""
    issue = await issue_from_path(request)
    limit, offset = page_args(request)
    key = request.path_params["key"]
    rows = await issue_tag_values(request.app.store, issue["id"], key, limit + 1, offset)
    return JSONResponse([{"key": key, "name": r["value"], "value": r["value"], "count": r["times_seen"],
                          "firstSeen": iso(r["first_seen"]), "lastSeen": iso(r["last_seen"])} for r in rows[:limit]],
                        headers=paginate(request, len(rows), limit, offset))


async def api_bulk_update(request: Request) -> Response:
    """Bulk PUT /api/0/projects/<org>/<project>/issues/?id=1&id=2, or the organization's
    (/organizations/<org>/issues/, where `project=` narrows): see `bulk_update`."""
    return await bulk_update(request, await path_project_ids(request))


async def path_project_ids(request: Request) -> list[int]:
    """The project the path names (…/projects/<org>/<project>/…), else those of `project=` (none: all)."""
    if "project" in request.path_params:
        return [(await project_from_path(request))["id"]]
    check_org(request)
    return await projects_param(request)


async def bulk_update(request: Request, project_ids: list[int]) -> Response:
    """One update (or a merge, within one project) for the listed issues; answers the update as applied,
    as Sentry does (204 when none of the ids is there)."""
    rows = await listed_issues(request, project_ids, unnamed_matching=True)
    body = await request_json(request)
    if not rows:
        return Response(status_code=204)
    by_project: dict[int, list[int]] = {}
    for row in rows:
        by_project.setdefault(row["project_id"], []).append(row["id"])
    if isinstance(body, dict) and body.get("merge"):
        if len(by_project) > 1:
            raise ApiError(400, "merge issues of one project")
        return JSONResponse(await merge(request, rows[0]["project_id"], [r["id"] for r in rows]))
    for project_id, issue_ids in by_project.items():
        change = await update_issues(request, project_id, issue_ids, body)
    result: dict[str, Any] = {"status": change.status, "statusDetails": change.details} if change.status else {}
    if change.assign:
        result["assignedTo"] = serialize_assignee(change.assignee)
    return JSONResponse(result)


async def listed_issues(request: Request, project_ids: list[int], unnamed_matching: bool = False) -> list[sqlite3.Row]:
    """The issues of these projects (none: all) that `?id=1&id=2` names (bulk routes); with
    `unnamed_matching` and no id, as Sentry's bulk update: the first 1000 that `query` and `status` match
    (sentry-cli's `issues resolve -a` sends neither: every issue)."""
    ids = request.query_params.getlist("id")
    if not ids and unnamed_matching:
        return await issues_matching(request, bulk_query(request.query_params), "date", BULK_LIMIT, 0, project_ids)
    if not ids or len(ids) > BULK_LIMIT or not all(i.isascii() and i.isdigit() and len(i) < 19 for i in ids):
        raise ApiError(400, "name the issues as ?id=1&id=2 (at most 1000)")
    rows = await issues_in(request.app.store, ids, project_ids[0] if len(project_ids) == 1 else None)
    return [r for r in rows if not project_ids or r["project_id"] in project_ids]


BULK_LIMIT = 1000  # Sentry's bulk mutation limit too


def bulk_query(params: Mapping[str, str]) -> str:
    """A bulk update's search: `query` (empty: all) narrowed by `status` (sentry-cli's `-s`)."""
    status = {"muted": "ignored"}.get(params.get("status", ""), params.get("status", ""))
    if status and status not in ISSUE_STATUSES:
        raise ApiError(400, f"status must be one of {', '.join(ISSUE_STATUSES)}")
    return params.get("query", "") + (f" is:{status}" if status else "")


async def issues_matching(request: Request, query: str, sort: str, limit: int, offset: int,
                          project_ids: Sequence[int]) -> list[sqlite3.Row]:
    """Issues of these projects (none: all) for a Sentry search query; a malformed query is a 400."""
    if sort not in SORTS:
        raise ApiError(400, f"sort must be one of {', '.join(SORTS)}")
    try:
        return await list_issues(request.app.store, query=query, sort=sort, limit=limit, offset=offset,
                                 project_ids=project_ids)
    except SearchError as exc:
        raise ApiError(400, f"Invalid search query: {exc}") from None


async def api_bulk_delete(request: Request) -> Response:
    """Bulk DELETE /api/0/projects/<org>/<project>/issues/?id=… or the organization's: 204, as Sentry answers."""
    return await bulk_delete(request, await path_project_ids(request))


async def bulk_delete(request: Request, project_ids: list[int]) -> Response:
    rows = await listed_issues(request, project_ids)
    if rows:
        await request.app.writer.submit(lambda conn: delete_issues(conn, [r["id"] for r in rows]))
    return Response(status_code=204)


async def api_delete_issue(request: Request) -> Response:
    """DELETE /api/0/issues/<id>/: 202, as Sentry answers (it deletes in the background; we are done)."""
    issue = await issue_from_path(request)
    await request.app.writer.submit(lambda conn: delete_issues(conn, [issue["id"]]))
    return Response(status_code=202)


async def api_issue_activities(request: Request) -> dict[str, Any]:
    issue = await issue_from_path(request)
    return {"activity": [serialize_activity(r) for r in await issue_activity(request.app.store, issue["id"])]}


def serialize_activity(row: sqlite3.Row) -> dict[str, Any]:
    return {"id": str(row["id"]), "type": row["kind"], "data": json.loads(row["data"]), "user": None,
            "dateCreated": iso(row["created"])}


async def api_issue_events(request: Request) -> Response:
    """GET …/issues/<id>/events/: the issue's events, newest first (`query`, `environment`, `full`)."""
    issue = await issue_from_path(request)
    limit, offset = page_args(request)
    params = request.query_params
    query = params.get("query", "") + "".join(f" environment:{quoted(e)}" for e in params.getlist("environment")[:1])
    try:
        rows = await search_issue_events(request.app.store, issue["id"], query, limit + 1, offset)
    except SearchError as exc:
        raise ApiError(400, f"Invalid search query: {exc}") from None
    full = params.get("full", "").lower() in ("1", "true")
    return JSONResponse([serialize_event(r, full) for r in rows[:limit]],
                        headers=paginate(request, len(rows), limit, offset))


def serialize_event(row: sqlite3.Row, full: bool = True) -> dict[str, Any]:
    """Sentry's event API shape (shared/docs/api-shapes.md §2-3): the slim list row, or with `full`
    the interfaces as `entries` and the rest of the event."""
    ev = decompress_payload(row["payload"])
    tags = sorted(enumerate(ev.get("tags", [])), key=lambda pair: (pair[1][0], pair[0]))
    user = ev.get("user")
    out = {
        "id": ev["event_id"], "event.type": ev.get("type"), "groupID": str(row["issue_id"]), "eventID": ev["event_id"],
        "projectID": str(row["project_id"]), "message": message_text(ev), "title": ev.get("title"),
        "location": event_location(ev), "culprit": ev.get("culprit"),
        "user": {key: user.get(key) for key in API_USER_KEYS} if user else None,
        "tags": [{"key": k, "value": v} for _, (k, v) in tags], "platform": ev.get("platform"),
        "dateCreated": iso(ev["timestamp"]), "crashFile": None, "metadata": ev.get("metadata"),
    }
    if not full:
        return out
    entries = event_entries(ev)
    out.pop("event.type")
    out.update({"type": ev.get("type"), "dateReceived": iso(ev["received"]), "dist": ev.get("dist"),
                "contexts": {name: {**ctx, "type": ctx.get("type") or (name if name in CONTEXT_TYPES else "default")}
                             for name, ctx in as_dict(ev.get("contexts")).items() if isinstance(ctx, dict)},
                "context": ev.get("extra", {}), "extra": ev.get("extra", {}), "packages": ev.get("modules", {}),
                "sdk": {k: v for k, v in as_dict(ev.get("sdk")).items() if k in ("name", "version")} or None,
                "sdkUpdates": [], "entries": entries, "errors": [event_error(e) for e in ev.get("errors", [])],
                "fingerprints": ev.get("hashes", []), "groupingConfig": None, "size": len(row["payload"]),
                "release": {"version": ev["release"]} if ev.get("release") else None, "userReport": None,
                "nextEventID": None, "previousEventID": None, "resolvedWith": [], "occurrence": None,
                "environment": ev.get("environment"),
                "_meta": api_meta(ev, entries, {index: n for n, (index, _) in enumerate(tags)})})
    return out


# the context types Sentry knows by their key; any other context without a type is of type "default"
CONTEXT_TYPES = {"device", "os", "runtime", "app", "browser", "gpu", "trace", "culture", "cloud_resource", "response",
                 "state", "profile", "replay", "otel", "monitor", "feedback", "flags", "user_report", "missing_instrumentation"}

API_USER_KEYS = ("id", "email", "username", "ip_address", "name", "geo", "data")


def event_location(ev: dict[str, Any]) -> str | None:
    """Sentry's `location`: the file of the frame the culprit names (the newest in-app one, else the newest)."""
    frames = [f for exc in as_list(as_dict(ev.get("exception")).get("values"))
              for f in as_list(as_dict(as_dict(exc).get("stacktrace")).get("frames")) if isinstance(f, dict)]
    frame = next((f for f in reversed(frames) if f.get("in_app")), frames[-1] if frames else {})
    return frame.get("filename") or frame.get("abs_path")


def event_entries(ev: dict[str, Any]) -> list[dict[str, Any]]:
    """The event's interfaces as Sentry's `entries`, in its display order (message, exception, stack,
    threads, breadcrumbs, request, debug images)."""
    entries = []
    if ev.get("logentry"):
        entry = ev["logentry"]
        entries.append({"type": "message", "data": {"formatted": entry.get("formatted") or entry.get("message"),
                                                    "message": entry.get("message"), "params": entry.get("params") or []}})
    if ev.get("exception"):
        values = [api_exception(v) for v in ev["exception"].get("values", [])]
        entries.append({"type": "exception", "data": {
            "values": values, "excOmitted": ev["exception"].get("exc_omitted"),
            "hasSystemFrames": any((v["stacktrace"] or {}).get("hasSystemFrames") for v in values)}})
    if ev.get("stacktrace"):
        entries.append({"type": "stacktrace", "data": api_stacktrace(ev["stacktrace"])})
    if ev.get("threads"):
        entries.append({"type": "threads", "data": {"values": [api_thread(t) for t in as_values(ev["threads"])]}})
    if as_dict(ev.get("breadcrumbs")).get("values"):
        entries.append({"type": "breadcrumbs", "data": {"values": [api_breadcrumb(b) for b in ev["breadcrumbs"]["values"]]}})
    if ev.get("request"):
        entries.append({"type": "request", "data": api_request(ev["request"])})
    if as_dict(ev.get("debug_meta")).get("images"):
        entries.append({"type": "debugmeta", "data": {k: v for k, v in ev["debug_meta"].items() if v}})
    return entries


def api_exception(exc: dict[str, Any]) -> dict[str, Any]:
    return {"type": exc.get("type"), "value": exc.get("value"), "module": exc.get("module"),
            "threadId": exc.get("thread_id"), "mechanism": exc.get("mechanism"),
            "stacktrace": api_stacktrace(exc["stacktrace"]) if exc.get("stacktrace") else None,
            "rawStacktrace": api_stacktrace(exc["raw_stacktrace"]) if isinstance(exc.get("raw_stacktrace"), dict) else None}


def api_stacktrace(stacktrace: dict[str, Any]) -> dict[str, Any]:
    """Frames oldest first in Sentry's names; `hasSystemFrames` as Sentry computes it: any frame in app
    (there is then something for the app-only view to hide)."""
    frames = [api_frame(f) for f in as_list(stacktrace.get("frames")) if isinstance(f, dict)]
    return {"frames": frames, "framesOmitted": stacktrace.get("frames_omitted"),
            "registers": stacktrace.get("registers") or None, "hasSystemFrames": any(f["inApp"] for f in frames)}


def api_frame(frame: dict[str, Any]) -> dict[str, Any]:
    out = {api_name: frame.get(name) for api_name, name in API_FRAME_FIELDS.items()}
    out["inApp"] = frame.get("in_app") is True
    out["context"] = frame_context(frame)
    out["lock"], out["sourceLink"] = None, None
    if frame.get("addr_mode") not in (None, "abs"):
        out["addrMode"] = frame["addr_mode"]
    if frame.get("data"):
        out["data"] = frame["data"]
    return out


API_FRAME_FIELDS = {"filename": "filename", "absPath": "abs_path", "module": "module", "package": "package",
                    "platform": "platform", "instructionAddr": "instruction_addr", "symbolAddr": "symbol_addr",
                    "function": "function", "rawFunction": "raw_function", "symbol": "symbol", "lineNo": "lineno",
                    "colNo": "colno", "trust": "trust", "errors": "errors", "vars": "vars"}


def frame_context(frame: dict[str, Any]) -> list[list[Any]]:
    """`[[line number, text], …]` from pre_context, context_line and post_context; [] without a line number."""
    return [[number, line] for number, line, _ in numbered_context(frame) if number is not None]


def api_thread(thread: dict[str, Any]) -> dict[str, Any]:
    stacktrace = normalize_frames(thread.get("stacktrace"))
    raw = normalize_frames(thread.get("raw_stacktrace"))
    return {"id": thread.get("id"), "name": thread.get("name"), "current": thread.get("current"),
            "crashed": thread.get("crashed"), "state": thread.get("state"), "heldLocks": thread.get("held_locks"),
            "stacktrace": api_stacktrace(stacktrace) if stacktrace else None,
            "rawStacktrace": api_stacktrace(raw) if raw else None}


def api_breadcrumb(crumb: dict[str, Any]) -> dict[str, Any]:
    moment = parse_timestamp(crumb.get("timestamp"))
    return {"type": crumb.get("type") or "default", "timestamp": iso(moment), "level": crumb.get("level") or "info",
            "message": crumb.get("message"), "category": crumb.get("category"),
            "data": crumb.get("data") if isinstance(crumb.get("data"), dict) else None,
            "event_id": crumb.get("event_id")}


def api_request(request: dict[str, Any]) -> dict[str, Any]:
    """Sentry's request entry under its names. Headers stay in the SDK's order and cookies in the form
    sent (a string or pairs), where Sentry sorts and splits them: the scrubbing `_meta` addresses them so."""
    headers = as_list(request.get("headers"))
    kind = next((v.split(";")[0].strip().lower() for k, v in headers if k.lower() == "content-type"), None)
    return {"method": request.get("method"), "url": request.get("url"), "query": request.get("query_string") or [],
            "fragment": request.get("fragment"), "data": request.get("data"), "headers": headers,
            "cookies": request.get("cookies") or [], "env": request.get("env"),
            "inferredContentType": kind if kind in ("application/json", "application/x-www-form-urlencoded",
                                                    "multipart/form-data") else None, "apiTarget": None}


async def api_issue_event(request: Request) -> dict[str, Any]:
    """GET …/issues/<id>/events/<event id | latest | oldest | recommended>/, with its neighbours."""
    issue = await issue_from_path(request)
    which = request.path_params["event_id"]
    row = await issue_event(request.app.store, issue["id"], which)
    if row is None:
        raise ApiError(404, "The requested resource does not exist")
    return await serialize_event_in_issue(request, row, which)


async def serialize_event_in_issue(request: Request, row: sqlite3.Row, which: str | None = None) -> dict[str, Any]:
    """A full event with the ids of the issue's previous and next events (and how `latest`… was chosen)."""
    neighbours = await neighbour_events(request.app.store, row)
    return {**serialize_event(row), "nextEventID": neighbours["next"], "previousEventID": neighbours["previous"],
            "resolvedWith": [which if which in ("latest", "oldest", "recommended") else None]}


async def api_project_events(request: Request) -> Response:
    """GET /api/0/projects/<org>/<project>/events/: the project's events, newest first (sentry-cli's
    `events list`); slim rows unless `full=true`."""
    project = await project_from_path(request)
    limit, offset = page_args(request)
    rows = await project_events_page(request.app.store, project["id"], limit + 1, offset)
    full = request.query_params.get("full", "").lower() in ("1", "true")
    return JSONResponse([serialize_event(r, full) for r in rows[:limit]],
                        headers=paginate(request, len(rows), limit, offset))


async def api_project_event(request: Request) -> dict[str, Any]:
    """GET /api/0/projects/<org>/<project>/events/<event id>/"""
    project = await project_from_path(request)
    row = await event_by_id(request.app.store, path_event_id(request), [project["id"]])
    if row is None:
        raise ApiError(404, "The requested resource does not exist")
    return await serialize_event_in_issue(request, row)


async def api_org_events(request: Request) -> Response:
    """GET /api/0/organizations/<org>/events/: Discover over the error dataset — `field` (repeatable),
    `query`, `sort`, `project`, `statsPeriod`/`start`/`end`, `per_page`, `cursor`."""
    check_org(request)
    params = request.query_params
    if params.get("dataset") in ("logs", "ourlogs"):
        return JSONResponse(await api_org_logs(request))
    fields = params.getlist("field")
    if not fields or len(fields) > 20:
        raise ApiError(400, "Name 1 to 20 columns as field=… (title, count(), tags[browser] …)")
    if params.get("dataset", "errors") not in ("errors", "discover"):
        raise ApiError(400, "Only the errors and logs datasets are stored here (dataset=errors or dataset=logs)")
    limit, offset = page_args(request)
    start, end = period_params(params, default="14d")
    query = DiscoverQuery(fields, params.get("query", ""), params.getlist("sort")[:5], await projects_param(request),
                          start, end)
    try:
        rows, types, capped = await discover(request.app.store, query)
    except (DiscoverError, SearchError) as exc:
        raise ApiError(400, str(exc)) from None
    dates = [name for name, kind in types.items() if kind == "date"]
    page = [{**row, **{name: iso(row[name]) for name in dates if row.get(name) is not None}}
            for row in rows[offset:offset + limit]]
    meta = {"fields": types, "units": {name: None for name in types}, "isMetricsData": False, "tips": {},
            "dataset": "errors", "datasetReason": "unchanged", "scanCapped": capped}
    return JSONResponse({"data": page, "meta": meta}, headers=paginate(request, len(rows) - offset, limit, offset))


async def api_short_id(request: Request) -> dict[str, Any]:
    """GET /api/0/organizations/<org>/shortids/<short id>/"""
    check_org(request)
    issue = await issue_by_short_id(request.app.store, request.path_params["short_id"])
    if issue is None:
        raise ApiError(404, "The requested resource does not exist")
    group = serialize_issue(issue, request.app.settings)
    return {"organizationSlug": request.app.settings.organization, "projectSlug": issue["project_slug"],
            "groupId": group["id"], "shortId": group["shortId"], "group": group}


async def api_event_id(request: Request) -> dict[str, Any]:
    """GET /api/0/organizations/<org>/eventids/<event id>/"""
    check_org(request)
    row = await event_by_id(request.app.store, path_event_id(request))
    project = await find_project(request.app.store, str(row["project_id"])) if row else None
    if row is None or project is None:
        raise ApiError(404, "The requested resource does not exist")
    return {"organizationSlug": request.app.settings.organization, "projectSlug": project["slug"],
            "groupId": str(row["issue_id"]), "eventId": row["event_id"], "event": await serialize_event_in_issue(request, row)}


# -- attachments and user feedback (Sentry's event attachments and user-feedback shapes) --------------

async def merge(request: Request, project_id: int, issue_ids: list[int]) -> dict[str, Any]:
    """Merge through the writer; the answer has Sentry's shape."""
    try:
        parent = await request.app.writer.submit(lambda conn: merge_issues(conn, project_id, issue_ids))
    except MergeError as exc:
        raise ApiError(400, str(exc)) from None
    return {"merge": {"parent": str(parent), "children": [str(i) for i in sorted(set(issue_ids)) if i != parent]}}


async def api_event_attachments(request: Request) -> list[dict[str, Any]]:
    """GET /api/0/projects/<org>/<project>/events/<event_id>/attachments/ (also for an event not stored
    yet, or the screenshots of a feedback, which are under the feedback's own id)."""
    project = await project_from_path(request)
    rows = await event_attachments(request.app.store, project["id"], [path_event_id(request)])
    return [serialize_attachment(r) for r in rows]


async def event_attachments(store: Store, project_id: int, event_ids: list[str]) -> list[dict[str, Any]]:
    """The attachments of these events (their data left out), oldest first, with what a page shows of them."""
    return [{**dict(r), "viewable": text_viewable(r), "size_text": human_size(r["size"])}
            for r in await attachment_rows(store, project_id, event_ids)]


def text_viewable(row: Mapping[str, Any]) -> bool:
    """Text a page may show (escaped, in a <pre>): UTF-8 under TEXT_VIEW_MAX, of a text type or name."""
    kind = row["content_type"].split(";")[0].strip()
    return bool(row["utf8"]) and (kind.startswith("text/") or kind in TEXT_TYPES
                                  or row["filename"].lower().endswith(TEXT_EXTENSIONS))


TEXT_TYPES = ("application/json", "application/x-ndjson", "application/xml")

TEXT_EXTENSIONS = (".log", ".txt", ".json", ".csv", ".md", ".yaml", ".yml", ".ini", ".conf", ".xml")


def human_size(size: int) -> str:
    if size < KIB:
        return f"{size} B"
    return f"{size / KIB:.1f} KiB" if size < MIB else f"{size / MIB:.1f} MiB"


def path_event_id(request: Request) -> str:
    event_id = normalize_id(request.path_params["event_id"])
    if event_id is None:
        raise ApiError(404, "The requested resource does not exist")
    return event_id


def serialize_attachment(row: Mapping[str, Any]) -> dict[str, Any]:
    return {"id": str(row["id"]), "event_id": row["event_id"], "name": row["filename"],
            "type": row["attachment_type"], "size": row["size"], "mimetype": row["content_type"],
            "dateCreated": iso(row["created"]), "sha1": row["sha1"], "headers": {"Content-Type": row["content_type"]}}


async def api_event_attachment(request: Request) -> Any:
    """GET …/attachments/<id>/: its details; with ?download=1 the file."""
    project = await project_from_path(request)
    raw = request.path_params["attachment_id"]
    row = await event_attachment(request.app.store, project["id"], path_event_id(request), int(raw)) \
        if raw.isascii() and raw.isdigit() and len(raw) < 19 else None
    if row is None:
        raise ApiError(404, "The requested resource does not exist")
    if request.query_params.get("download", "0").lower() not in ("0", "false"):
        return attachment_response(row)
    return serialize_attachment(row)


def attachment_response(row: Mapping[str, Any]) -> Response:
    """An attachment as a download: never shown inline, its type only when harmless, no sniffing."""
    kind = row["content_type"].split(";")[0].strip()
    name = re.split(r"[/\\]", row["filename"])[-1] or "attachment"
    plain = re.sub(r"[^A-Za-z0-9._ -]", "_", name)[:150] or "attachment"
    return Response(attachment_data(row), media_type=kind if kind in SAFE_DOWNLOAD_TYPES else "application/octet-stream",
                    headers={"Content-Disposition": f"attachment; filename=\"{plain}\"; "
                                                    f"filename*=UTF-8''{urllib.parse.quote(name, safe='')}",
                             "X-Content-Type-Options": "nosniff", "Cache-Control": "no-store",
                             "Content-Security-Policy": "default-src 'none'; sandbox"})


def attachment_data(row: Mapping[str, Any]) -> bytes:
    return zstandard.ZstdDecompressor().decompress(row["data"])


# Served with their own type (always as a download); any other is sent as application/octet-stream,
# so an attacker's HTML or SVG never renders on the tracker's origin.
SAFE_DOWNLOAD_TYPES = frozenset({
    "text/plain", "text/csv", "application/json", "application/octet-stream", "application/zip", "application/gzip",
    "application/x-gzip", "application/x-tar", "application/zstd", "image/png", "image/jpeg", "image/gif",
    "image/webp", "application/x-dmp", "application/x-minidump"})


async def api_user_feedback(request: Request) -> Response:
    """GET /api/0/projects/<org>/<project>/user-feedback/: the project's feedback, newest first."""
    project = await project_from_path(request)
    limit, offset = page_args(request)
    rows = await project_feedback(request.app.store, project["id"], limit + 1, offset)
    return JSONResponse(await serialize_user_reports(request, rows[:limit]),
                        headers=paginate(request, len(rows), limit, offset))


async def serialize_user_reports(request: Request, rows: list[sqlite3.Row]) -> list[dict[str, Any]]:
    """Feedback rows in Sentry's user report shape, each with its issue (or null)."""
    ids = sorted({r["issue_id"] for r in rows if r["issue_id"] is not None})
    issues = {i["id"]: serialize_issue(i, request.app.settings) for i in await issues_by_ids(request.app.store, ids)}
    out = []
    for r in rows:
        event_id = r["event_id"] or r["feedback_event_id"]
        out.append({"id": str(r["id"]), "eventID": event_id, "name": r["name"], "email": r["email"],
                    "comments": r["message"], "dateCreated": iso(r["created"]), "user": None,
                    "event": {"id": event_id, "eventID": event_id}, "issue": issues.get(r["issue_id"])})
    return out


async def api_create_user_feedback(request: Request) -> dict[str, Any]:
    """POST /api/0/projects/<org>/<project>/user-feedback/ {event_id, name, email, comments}: a legacy
    user report (a second one on the same event replaces the first)."""
    project = await project_from_path(request)
    body = await request_json(request)
    if not isinstance(body, dict):
        raise ApiError(400, "the body must be a JSON object")
    feedback = user_report(project["id"], body, None, time.time())
    problem = feedback_problem(feedback)
    if problem:
        raise ApiError(400, problem)
    if feedback.email and not re.fullmatch(r"[^@\s]+@[^@\s]+", feedback.email):
        raise ApiError(400, "email: enter a valid email address")
    feedback.scrub(await project_scrub_policy(request, project["id"]))
    await request.app.writer.submit(lambda conn: store_feedback(conn, feedback))
    row = await user_report_of(request.app.store, project["id"], feedback.event_id)
    return (await serialize_user_reports(request, [row]))[0]


async def project_scrub_policy(request: Request, project_id: int) -> ScrubPolicy:
    return scrub_policy((await request.app.options.options(project_id)).get("scrub"))


async def api_grouping_rules(request: Request) -> dict[str, str]:
    project = await project_from_path(request)
    return serialize_rules(await request.app.rules.rules_for(project["id"]))


def serialize_rules(rules: GroupingRules) -> dict[str, str]:
    return {"groupingEnhancements": rules.stacktrace_text, "fingerprintingRules": rules.fingerprint_text}


async def api_update_grouping_rules(request: Request) -> dict[str, str]:
    """PUT /api/0/projects/<org>/<project>/grouping-rules/ with either or both of
    {"groupingEnhancements": "…", "fingerprintingRules": "…"}."""
    project = await project_from_path(request)
    rules = await save_body_rules(request, project["id"], await request_json(request))
    if rules is None:
        raise ApiError(400, "send groupingEnhancements, fingerprintingRules or both")
    return serialize_rules(rules)


async def save_body_rules(request: Request, project_id: int, body: Any) -> GroupingRules | None:
    """Save the rules a JSON body carries under Sentry's names (either or both; null clears);
    None when it carries neither."""
    if not isinstance(body, dict):
        raise ApiError(400, "the body must be a JSON object")
    given = {key: "" if body[key] is None else body[key] for key in RULE_FIELDS if key in body}
    if not given:
        return None
    if not all(isinstance(value, str) for value in given.values()):
        raise ApiError(400, "groupingEnhancements and fingerprintingRules are strings with one rule per line")
    current = await request.app.rules.rules_for(project_id)
    try:
        return await store_rules(request, project_id, given.get("groupingEnhancements", current.stacktrace_text),
                                 given.get("fingerprintingRules", current.fingerprint_text))
    except RuleError as exc:
        raise ApiError(400, str(exc)) from None


RULE_FIELDS = ("groupingEnhancements", "fingerprintingRules")  # Sentry's project option names


async def store_rules(request: Request, project_id: int, stacktrace_text: str, fingerprint_text: str) -> GroupingRules:
    """Parse (a RuleError names the mistake), save through the writer, then drop the cached copy
    so the next event of the project is grouped by the new rules."""
    rules = parse_grouping_rules(stacktrace_text, fingerprint_text)
    await request.app.writer.submit(lambda conn: save_project_rules(conn, project_id, rules))
    request.app.rules.invalidate(project_id)
    return rules


async def api_update_project(request: Request) -> dict[str, Any]:
    """PUT /api/0/projects/<org>/<project>/: of Sentry's project fields, the grouping rules and the
    data scrubbing settings (dataScrubber, dataScrubberDefaults, sensitiveFields, safeFields,
    scrubIPAddresses)."""
    project = await project_from_path(request)
    body = await request_json(request)
    scrub = await project_scrub_policy(request, project["id"])
    option = body_scrub_option(scrub, body)  # checked before anything is saved
    rules = await save_body_rules(request, project["id"], body)
    rules = rules or await request.app.rules.rules_for(project["id"])
    scrub = await save_scrub_option(request, project["id"], option) if option else scrub
    return {**serialize_project(project, request.app), **serialize_rules(rules), **scrub.api_fields()}


def body_scrub_option(policy: ScrubPolicy, body: Any) -> dict[str, Any] | None:
    """The `scrub` option a JSON body asks for under Sentry's field names; None when it names none."""
    changes = {name: body[api_name] for api_name, name in SCRUB_API_FIELDS.items()
               if isinstance(body, dict) and api_name in body}
    try:
        return changed_scrub_option(policy, changes) if changes else None
    except ScrubError as exc:
        raise ApiError(400, str(exc)) from None


async def save_scrub_option(request: Request, project_id: int, option: dict[str, Any]) -> ScrubPolicy:
    """Store a project's `scrub` option through the writer; ingest uses it from the next event on."""
    await request.app.writer.submit(lambda conn: set_project_option(conn, project_id, "scrub", option))
    request.app.options.forget(project_id)
    return scrub_policy(option)


async def api_issue_hashes(request: Request) -> list[dict[str, Any]]:
    """GET /api/0/issues/<id>/hashes/: the hashes grouped into the issue, with their latest event."""
    issue = await issue_from_path(request)
    found = await hash_events(request.app.store, issue)
    return [{"id": digest, "latestEvent": serialize_event(row, full=False) if row else None}
            for digest, row in found.items()]


async def api_unmerge_hashes(request: Request) -> Response:
    """DELETE /api/0/issues/<id>/hashes/?id=<hash>: the events with these hashes become a new issue
    (202 as in Sentry, with the new issue's id)."""
    issue = await issue_from_path(request)
    hashes = set(request.query_params.getlist("id"))
    if not hashes:
        raise ApiError(400, "name the hashes to unmerge as ?id=<hash>")
    return JSONResponse({"id": str(await unmerge(request, issue["id"], hashes))}, status_code=202)


async def unmerge(request: Request, issue_id: int, hashes: set[str]) -> int:
    try:
        return await request.app.writer.submit(lambda conn: unmerge_hashes(conn, issue_id, hashes))
    except MergeError as exc:
        raise ApiError(400, str(exc)) from None


async def api_code_mappings(request: Request) -> list[dict[str, Any]]:
    """GET /api/0/organizations/<org>/code-mappings/?project=<id or slug>"""
    check_org(request)
    ref = request.query_params.get("project")
    project = await find_project(request.app.store, ref) if ref else None
    if ref and project is None:
        raise ApiError(404, "The requested resource does not exist")
    store = request.app.store
    rows = await project_mappings(store, project["id"]) if project else await all_code_mappings(store)
    return [serialize_mapping(r) for r in rows]


def serialize_mapping(row: sqlite3.Row) -> dict[str, Any]:
    return {"id": str(row["id"]), "projectId": str(row["project_id"]),
            "repoName": urllib.parse.urlsplit(row["repository_url"]).path.strip("/"),
            "repositoryUrl": row["repository_url"], "stackRoot": row["stack_root"], "sourceRoot": row["source_root"],
            "defaultBranch": row["default_branch"],
            "provider": {"key": row["provider"], "slug": row["provider"], "name": PROVIDERS[row["provider"]]}}


async def api_create_code_mapping(request: Request) -> Response:
    """POST /api/0/organizations/<org>/code-mappings/ with projectId and the mapping's fields."""
    check_org(request)
    body = await request_json(request)
    ref = str(body.get("projectId") or request.query_params.get("project") or "") if isinstance(body, dict) else ""
    project = await find_project(request.app.store, ref)
    if project is None:
        raise ApiError(400, "projectId must name a project")
    values = body_mapping(body, {})
    mapping_id = await request.app.writer.submit(lambda conn: save_code_mapping(conn, project["id"], values))
    row = await code_mapping(request.app.store, str(mapping_id))
    return JSONResponse(serialize_mapping(row), status_code=201)


def body_mapping(body: Any, current: dict[str, Any]) -> dict[str, str]:
    """Sentry's code mapping fields over the current columns; repoName `owner/name` stands for a
    repository on github.com (gitlab.com with provider gitlab)."""
    if not isinstance(body, dict):
        raise ApiError(400, "the body must be a JSON object")
    fields = {**current, **{column: body[key] for key, column in API_MAPPING_FIELDS.items() if key in body}}
    if isinstance(fields.get("provider"), dict):
        fields["provider"] = fields["provider"].get("key")
    if not body.get("repositoryUrl") and isinstance(body.get("repoName"), str):
        name = body["repoName"].strip("/")
        fields["repository_url"] = name if "://" in name else \
            f"https://{'gitlab.com' if fields.get('provider') == 'gitlab' else 'github.com'}/{name}"
    try:
        return checked_mapping(fields)
    except MappingError as exc:
        raise ApiError(400, str(exc)) from None


API_MAPPING_FIELDS = {"repositoryUrl": "repository_url", "provider": "provider", "stackRoot": "stack_root",
                      "sourceRoot": "source_root", "defaultBranch": "default_branch"}


async def api_update_code_mapping(request: Request) -> dict[str, Any]:
    """PUT /api/0/organizations/<org>/code-mappings/<id>/: the fields given change, the rest stay."""
    current = await mapping_from_path(request)
    values = body_mapping(await request_json(request), dict(current))
    await request.app.writer.submit(
        lambda conn: save_code_mapping(conn, current["project_id"], values, current["id"]))
    return serialize_mapping(await mapping_from_path(request))


async def mapping_from_path(request: Request) -> sqlite3.Row:
    return await org_row_from_path(request, code_mapping, "mapping_id")


async def org_row_from_path(request: Request, find: Callable[[Store, str], Awaitable[sqlite3.Row | None]],
                            param: str) -> sqlite3.Row:
    """The row of an organisation-wide table (mappings, channels) whose id the URL names."""
    check_org(request)
    row = await find(request.app.store, request.path_params[param])
    if row is None:
        raise ApiError(404, "The requested resource does not exist")
    return row


async def api_delete_code_mapping(request: Request) -> Response:
    mapping = await mapping_from_path(request)
    await request.app.writer.submit(lambda conn: delete_code_mapping(conn, mapping["project_id"], mapping["id"]))
    return Response(status_code=204)


# -- releases, repositories, commits and deploys (what sentry-cli sends; protocol brief §8.3) ---

FIXES_RE = re.compile(r"\bfix(?:e[sd])?:?\s+([A-Za-z0-9_-]+-[0-9A-Za-z]+(?:\s*(?:,|and)\s*[A-Za-z0-9_-]+-[0-9A-Za-z]+)*)",
                      re.IGNORECASE)


async def api_org_releases(request: Request) -> Response:
    check_org(request)
    return await release_page(request, None)


async def release_page(request: Request, project_id: int | None) -> Response:
    """Releases newest first, `?query=` matching part of the version, with Sentry's cursor paging."""
    limit, offset = page_args(request)
    store = request.app.store
    rows = await releases_matching(store, project_id, request.query_params.get("query", ""), limit + 1, offset)
    return JSONResponse([await serialize_release(store, r) for r in rows[:limit]],
                        headers=paginate(request, len(rows), limit, offset))


async def serialize_release(store: Store, row: sqlite3.Row) -> dict[str, Any]:
    """Sentry's release shape, with the last commit, last deploy, authors and projects."""
    links = await release_links(store, row["id"])
    last_commit, last_deploy = links["last_commit"], links["last_deploy"]
    return {
        "id": row["id"], "version": row["version"], "shortVersion": short_version(row["version"]),
        "ref": row["ref"], "url": row["url"], "dateCreated": iso(row["date_created"]),
        "dateStarted": iso(row["date_started"]), "dateReleased": iso(row["date_released"]),
        "firstEvent": iso(row["first_event"]), "lastEvent": iso(row["last_event"]), "newGroups": row["new_groups"],
        "commitCount": row["commit_count"], "deployCount": row["deploy_count"],
        "lastCommit": serialize_commit(last_commit) if last_commit else None,
        "lastDeploy": serialize_deploy(last_deploy) if last_deploy else None,
        "authors": [{"name": a["author_name"], "email": a["author_email"]} for a in links["authors"]],
        "projects": [{"id": p["id"], "slug": p["slug"], "name": p["name"], "platform": p["platform"] or None}
                     for p in links["projects"]],
    }


def short_version(version: str) -> str:
    """What Sentry shows for a version: without its `package@` prefix, a commit hash cut to 12."""
    short = version.rsplit("@", 1)[-1] or version
    return short[:12] if re.fullmatch(r"[0-9a-f]{40}", short) else short


def serialize_commit(row: sqlite3.Row) -> dict[str, Any]:
    author = {"name": row["author_name"], "email": row["author_email"]} \
        if row["author_name"] or row["author_email"] else None
    return {"id": row["sha"], "message": row["message"], "dateCreated": iso(row["timestamp"]),
            "author": author, "repository": {"id": str(row["repository_id"]), "name": row["repository"]}}


def serialize_deploy(row: sqlite3.Row) -> dict[str, Any]:
    return {"id": str(row["id"]), "environment": row["environment"], "name": row["name"], "url": row["url"],
            "dateStarted": iso(row["date_started"]), "dateFinished": iso(row["date_finished"])}


async def api_project_releases(request: Request) -> Response:
    project = await project_from_path(request)
    return await release_page(request, project["id"])


async def api_create_release(request: Request) -> Response:
    """201 with the new release, 208 when the version exists (it is then updated like a PUT)."""
    check_org(request)
    body = await request_object(request)
    version = release_version(body.get("version"))
    if "project" in request.path_params:
        await project_from_path(request)
        body.setdefault("projects", [request.path_params["project"]])
    if not body.get("projects"):
        raise ApiError(400, "projects: name at least one project")
    created = await save_release_body(request, version, body)
    row = await release_by_version(request.app.store, version)
    return JSONResponse(await serialize_release(request.app.store, row), status_code=201 if created else 208)


async def request_object(request: Request) -> dict[str, Any]:
    body = await request_json(request)
    if not isinstance(body, dict):
        raise ApiError(400, "the request body must be a JSON object")
    return body


def release_version(value: Any) -> str:
    """A version a client may create: sentry-cli refuses '/', and paths could not name it."""
    if not isinstance(value, str) or not value.strip() or len(value) > 250:
        raise ApiError(400, "version: a non-empty string of at most 250 characters is required")
    if "/" in value or "\n" in value or value.strip() in (".", "..", "latest"):
        raise ApiError(400, f"version {value!r} is not allowed (no '/', newline, '.', '..' or 'latest')")
    return value.strip()


async def save_release_body(request: Request, version: str, body: dict[str, Any]) -> bool:
    """Validate a create or update body and apply it in the writer; True when the release is new."""
    project_ids = await release_project_ids(request, body.get("projects"))
    columns = release_columns(body)
    commits = parse_commits(body["commits"]) if body.get("commits") is not None else None
    refs = await parse_refs(request, body["refs"]) if body.get("refs") is not None else None
    return await request.app.writer.submit(
        lambda conn: save_release(conn, version, project_ids, columns, commits, refs))


async def release_project_ids(request: Request, value: Any) -> list[int]:
    """The projects a body names by slug or id; an unknown one is a 400."""
    ids = []
    for name in value if isinstance(value, list) else []:
        row = await find_project(request.app.store, str(name))
        if row is None:
            raise ApiError(400, f"unknown project {name!r}")
        ids.append(row["id"])
    return ids


def release_columns(body: dict[str, Any]) -> dict[str, Any]:
    """The release columns a create or update body sets (absent or null keys keep theirs)."""
    columns: dict[str, Any] = {key: text(body[key], 2048) for key in ("ref", "url") if body.get(key) is not None}
    for key, column in RELEASE_DATES.items():
        if body.get(key) is not None:
            columns[column] = parse_timestamp(body[key])
            if columns[column] is None:
                raise ApiError(400, f"{key}: not a date")
    return columns


RELEASE_DATES = {"dateStarted": "date_started", "dateReleased": "date_released"}


def parse_commits(value: Any) -> list[dict[str, Any]]:
    """A body's `commits` (newest first, as sentry-cli reads them from git): each needs an `id`."""
    if not isinstance(value, list):
        raise ApiError(400, "commits must be a list")
    commits = []
    for raw in value:
        if not isinstance(raw, dict) or not isinstance(raw.get("id"), str) or not raw["id"].strip():
            raise ApiError(400, "every commit needs an id (its sha)")
        commits.append({
            "sha": raw["id"].strip()[:64], "repository": text(raw.get("repository"), 200) or "unknown",
            "author_name": text(raw.get("author_name"), 200) or None,
            "author_email": text(raw.get("author_email"), 200) or None,
            "message": text(raw.get("message")) or None, "timestamp": parse_timestamp(raw.get("timestamp")),
            "files": [(text(f["path"], 1024), text(f.get("type") or "M", 1)) for f in as_list(raw.get("patch_set"))
                      if isinstance(f, dict) and f.get("path")]})
    return commits


async def parse_refs(request: Request, value: Any) -> list[dict[str, Any]]:
    """A body's `refs` ({repository, commit, previousCommit}); each repository must exist."""
    refs = []
    for raw in value if isinstance(value, list) else []:
        if not isinstance(raw, dict) or not raw.get("repository") or not raw.get("commit"):
            raise ApiError(400, "every ref needs a repository and a commit")
        repo = await repository_by_name(request.app.store, str(raw["repository"]))
        if repo is None:
            raise ApiError(400, f"unknown repository {raw['repository']!r}")
        refs.append({"repository_id": repo["id"], "repository": repo["name"], "commit": text(raw["commit"], 64),
                     "previous": text(raw.get("previousCommit"), 64) or None})
    return refs


async def api_update_release(request: Request) -> dict[str, Any]:
    release = await release_from_path(request)
    await save_release_body(request, release["version"], await request_object(request))
    return await api_release(request)


async def release_from_path(request: Request) -> sqlite3.Row:
    check_org(request)
    row = await release_by_version(request.app.store, request.path_params["version"])
    if row is None:
        raise ApiError(404, "The requested resource does not exist")
    return row


async def api_release(request: Request) -> dict[str, Any]:
    return await serialize_release(request.app.store, await release_from_path(request))


async def api_delete_release(request: Request) -> Response:
    release = await release_from_path(request)
    await request.app.writer.submit(lambda conn: delete_release(conn, release["id"]))
    return Response(status_code=204)


async def api_previous_release_with_commits(request: Request) -> dict[str, Any]:
    """The newest older release of the same projects that has commits (sentry-cli starts the
    next commit range there); {} when there is none."""
    store = request.app.store
    row = await previous_release_with_commits(store, await release_from_path(request))
    return await serialize_release(store, row) if row else {}


async def api_release_commits(request: Request) -> list[dict[str, Any]]:
    release = await release_from_path(request)
    rows = await release_commits(request.app.store, release["id"])
    return [serialize_commit(r) for r in rows]


async def api_release_commit_files(request: Request) -> list[dict[str, Any]]:
    """The files the release's commits changed, one entry per commit and file."""
    release = await release_from_path(request)
    rows = await release_commit_files(request.app.store, release["id"])
    return [{"filename": r["path"], "type": r["type"], "commitMessage": r["message"], "repoName": r["repository"],
             "author": {"name": r["author_name"], "email": r["author_email"]}} for r in rows]


async def api_release_deploys(request: Request) -> list[dict[str, Any]]:
    release = await release_from_path(request)
    rows = await release_deploys(request.app.store, release["id"])
    return [serialize_deploy(r) for r in rows]


async def api_create_deploy(request: Request) -> Response:
    """sentry-cli's `deploys new`: an environment is required; it finished now unless told."""
    release = await release_from_path(request)
    body = await request_object(request)
    environment = text(body.get("environment"), 64).strip()
    if not environment or "/" in environment or "\n" in environment:
        raise ApiError(400, "environment: a name without '/' or newlines is required")
    deploy = {"environment": environment, "name": text(body.get("name"), 200) or None,
              "url": text(body.get("url"), 2048) or None, "date_started": parse_timestamp(body.get("dateStarted")),
              "date_finished": parse_timestamp(body.get("dateFinished")) or time.time()}
    deploy_id = await request.app.writer.submit(lambda conn: create_deploy(conn, release["id"], deploy))
    row = await deploy_by_id(request.app.store, deploy_id)
    return JSONResponse(serialize_deploy(row), status_code=201)


async def api_org_repos(request: Request) -> list[dict[str, Any]]:
    check_org(request)
    return [serialize_repository(r) for r in await listed_repositories(request.app.store)]


def serialize_repository(row: sqlite3.Row) -> dict[str, Any]:
    provider = row["provider"]
    return {"id": str(row["id"]), "name": row["name"], "url": row["url"], "status": "active",
            "provider": {"id": f"integrations:{provider}", "name": REPOSITORY_PROVIDERS.get(provider, provider)},
            "dateCreated": iso(row["date_created"]), "integrationId": None, "externalSlug": row["name"]}


async def api_create_repo(request: Request) -> Response:
    """Register a repository so `set-commits --commit REPO@SHA` and `--auto` can name it."""
    check_org(request)
    body = await request_object(request)
    name, url = text(body.get("name"), 200).strip(), text(body.get("url"), 2048).strip() or None
    if not name:
        raise ApiError(400, "name is required")
    if url and urllib.parse.urlsplit(url).scheme not in ("http", "https"):
        raise ApiError(400, "url must be an http(s) URL")
    provider = text(body.get("provider"), 64) or None
    repo_id = await request.app.writer.submit(lambda conn: create_repository(conn, name, url, provider))
    if repo_id is None:
        raise ApiError(409, f"a repository named {name!r} already exists")
    row = await repository_by_id(request.app.store, repo_id)
    return JSONResponse(serialize_repository(row), status_code=201)


# -- source maps: chunk upload, artifact bundle assembly, release files (what sentry-cli sends) -----

async def api_chunk_upload_options(request: Request) -> dict[str, Any]:
    """Where and how sentry-cli uploads chunks (sourcemaps.md §3.2)."""
    check_org(request)
    settings = request.app.settings
    # relative to /api/0/ (sentry-cli 2.x and 3.x join it): right behind any proxy, whatever `url` says
    return {"url": f"organizations/{settings.organization}/chunk-upload/", "chunkSize": CHUNK_SIZE, "chunksPerRequest": CHUNKS_PER_REQUEST,
            "maxFileSize": settings.sourcemap_max_upload, "maxRequestSize": chunk_request_limit(),
            "concurrency": 2, "hashAlgorithm": "sha1", "compression": ["gzip"],
            "accept": ["release_files", "sources", "artifact_bundles"]}


def chunk_request_limit() -> int:
    return CHUNK_SIZE * CHUNKS_PER_REQUEST + 64 * KIB


async def api_chunk_upload(request: Request) -> dict[str, Any]:
    """Chunks, one multipart part each (`file_gzip` or `file`, named by the SHA-1 of its bytes):
    checked and kept until their assembly. Pending chunks are capped at twice the upload cap."""
    check_org(request)
    try:
        body = await read_body(request, chunk_request_limit())
    except IngestError as exc:
        raise ApiError(exc.status, "Request too large") from None
    chunks = await asyncio.to_thread(upload_chunks, body, request.headers.get("content-type", ""))
    if await pending_chunk_bytes(request.app.store) + sum(len(d) for _, d in chunks) > 2 * request.app.settings.sourcemap_max_upload:
        raise ApiError(413, "too many chunks wait for their assembly; assemble or retry later")
    await request.app.writer.submit(lambda conn: save_chunks(conn, chunks, time.time()))
    return {}


def upload_chunks(body: bytes, content_type: str) -> list[tuple[str, bytes]]:
    """The (SHA-1, bytes) of each chunk of a chunk upload, each checked (CPU work: run it in a thread)."""
    chunks: list[tuple[str, bytes]] = []
    for name, filename, data in multipart_parts(body, content_type):
        if name not in ("file", "file_gzip"):
            continue
        if len(chunks) == CHUNKS_PER_REQUEST:
            raise ApiError(400, "Too many chunks")
        if name == "file_gzip":
            data = gunzip_bounded(data, CHUNK_SIZE)
        if len(data) > CHUNK_SIZE:
            raise ApiError(413, "Chunk size too large")
        if hashlib.sha1(data).hexdigest() != (filename or "").lower():
            raise ApiError(400, f"chunk {filename!r}: its SHA-1 is not its name")
        chunks.append(((filename or "").lower(), data))
    return chunks


def multipart_parts(body: bytes, content_type: str) -> list[tuple[str, str | None, bytes]]:
    """(field name, file name, bytes) of each part of a multipart/form-data body (400 if it is not
    one). Split on the boundary with bytes methods: the email parser took 1.8 s for 8 MiB of chunks."""
    boundary = re.search(r'boundary="?([^";]{1,200})"?', content_type) \
        if content_type.lower().startswith("multipart/form-data") else None
    if boundary is None:
        raise ApiError(400, "a multipart/form-data body with a boundary is required")
    parts = []
    for part in body.split(b"--" + boundary[1].encode("latin-1", "replace"))[1:]:
        if part.startswith(b"--"):  # the closing delimiter
            break
        head, separator, content = part.removeprefix(b"\r\n").partition(b"\r\n\r\n")
        disposition = next((line for line in head.decode("utf-8", "replace").split("\r\n")
                            if line.lower().startswith("content-disposition:")), "")
        name, filename = MULTIPART_NAME.search(disposition), MULTIPART_FILENAME.search(disposition)
        if separator and name:
            parts.append((name[1], filename[1] if filename else None, content.removesuffix(b"\r\n")))
    return parts


MULTIPART_NAME = re.compile(r';\s*name="([^"]*)"')
MULTIPART_FILENAME = re.compile(r';\s*filename="([^"]*)"')


def gunzip_bounded(data: bytes, limit: int) -> bytes:
    """A gzip member's bytes, at most `limit` + 1 of them (a bomb stops there)."""
    try:
        return zlib.decompressobj(16 + zlib.MAX_WBITS).decompress(data, limit + 1)
    except zlib.error:
        raise ApiError(400, "a chunk is not gzip data") from None


async def api_assemble_bundle(request: Request) -> Response:
    """sentry-cli's `sourcemaps upload` (artifact bundles): answer which chunks are missing, else
    assemble them and store the bundle for each project (sourcemaps.md §3.3)."""
    check_org(request)
    body = await request_object(request)
    projects = body.get("projects")
    if not isinstance(projects, list) or not projects or len(projects) > 100:
        raise ApiError(400, "projects: name one project or more")
    project_ids = await release_project_ids(request, projects)
    version = release_version(body["version"]) if body.get("version") is not None else ""
    dist = text(body.get("dist"), 64) if body.get("dist") is not None else ""
    if dist and not version:
        raise ApiError(400, "You need to specify a release together with a dist")
    return await assemble(request, body, project_ids, version, dist)


async def api_assemble_release(request: Request) -> Response:
    """sentry-cli 2.x's release bundle: the same zip, for the release's projects."""
    check_org(request)
    version = request.path_params["version"]
    row = await release_by_version(request.app.store, version)
    if row is None:
        raise ApiError(404, "The requested resource does not exist")
    project_ids = [p["id"] for p in (await release_links(request.app.store, row["id"]))["projects"]]
    return await assemble(request, await request_object(request), project_ids, version, "")


async def assemble(request: Request, body: dict[str, Any], project_ids: list[int], version: str,
                   dist: str) -> Response:
    checksum, chunks = body.get("checksum"), body.get("chunks")
    if not isinstance(checksum, str) or not SHA1_RE.fullmatch(checksum) or not isinstance(chunks, list) \
            or not all(isinstance(c, str) and SHA1_RE.fullmatch(c) for c in chunks) or len(chunks) > 10_000:
        raise ApiError(400, "checksum and chunks: SHA-1 hex digests are required")
    checksum, chunks = checksum.lower(), [c.lower() for c in chunks]
    store, app = request.app.store, request.app
    async with app.assembling:  # one upload's bytes in memory at a time
        if await bundle_assembled(store, checksum, project_ids, version, dist):
            return assemble_answer("ok")
        missing = await missing_chunks(store, chunks) if chunks else []
        if missing or not chunks:
            return assemble_answer("not_found", missing=missing)
        if await chunk_sizes(store, chunks) > app.settings.sourcemap_max_upload:
            return assemble_answer("error", f"the upload is larger than {app.settings.sourcemap_max_upload} bytes", 413)
        data = await joined_chunks(store, chunks)
        if (await asyncio.to_thread(hashlib.sha1, data)).hexdigest() != checksum:
            return assemble_answer("error", "the chunks do not make the file of that checksum")
        try:
            bundle = await asyncio.to_thread(read_artifact_bundle, data, app.settings.sourcemap_max_file,
                                             app.settings.sourcemap_max_upload)
        except UploadRefused as exc:
            await app.writer.submit(lambda conn: forget_chunks(conn, chunks))
            return assemble_answer("error", exc.detail, exc.status)
        del data
        release, dist = version or bundle.release, dist or bundle.dist
        if not release and not any(f.debug_id for f in bundle.files):
            return assemble_answer("error", "uploading a bundle without debug ids or release is prohibited")
        await store_bundle(app.writer, project_ids, bundle, checksum, release, dist)
        await app.writer.submit(lambda conn: forget_chunks(conn, chunks))
    return assemble_answer("ok")


SHA1_RE = re.compile(r"[0-9a-fA-F]{40}")


def assemble_answer(state: str, detail: str | None = None, status: int = 200,
                    missing: list[str] | None = None) -> JSONResponse:
    return JSONResponse({"state": state, "missingChunks": missing or [], "detail": detail}, status_code=status)


async def store_bundle(writer: Writer, project_ids: list[int], bundle: ArtifactBundle, checksum: str,
                       release: str, dist: str) -> None:
    """The bundle's rows, then its files in writer jobs of a few MiB each (ingest queues between)."""
    now = time.time()
    ids = await writer.submit(lambda conn: save_bundle(conn, project_ids, bundle, checksum, release, dist, now))
    batch: list[ArtifactFile] = []
    for file in [*bundle.files, None]:
        if batch and (file is None or sum(len(f.data) for f in batch) + len(file.data) > 4 * MIB):
            await writer.submit(lambda conn, files=batch: save_bundle_files(conn, ids, files, now))
            batch = []
        if file is not None:
            batch.append(file)


async def api_release_files(request: Request) -> list[dict[str, Any]]:
    """A release's uploaded files, in Sentry's release file shape."""
    check_org(request)
    project = await project_from_path(request) if "project" in request.path_params else None
    version = request.path_params["version"]
    if await release_by_version(request.app.store, version) is None:
        raise ApiError(404, "The requested resource does not exist")
    return [serialize_release_file(r) for r in
            await release_files(request.app.store, version, project["id"] if project else None)]


def serialize_release_file(row: sqlite3.Row) -> dict[str, Any]:
    return {"id": str(row["id"]), "name": row["url"], "dist": row["dist"] or None, "type": row["type"],
            "debugId": row["debug_id"], "headers": json.loads(row["headers"]), "size": row["size"],
            "sha1": row["sha1"], "dateCreated": iso(row["date_added"])}


async def api_upload_release_file(request: Request) -> Response:
    """One file posted to a release (`file`, `name`, `dist`, repeatable `header: "Key:Value"`), as
    sentry-cli did before chunk uploads; 201 with the release file, 409 when the name is taken."""
    check_org(request)
    settings = request.app.settings
    version = request.path_params["version"]
    row = await release_by_version(request.app.store, version)
    if row is None:
        raise ApiError(404, "The requested resource does not exist")
    if "project" in request.path_params:
        project_ids = [(await project_from_path(request))["id"]]
    else:
        project_ids = [p["id"] for p in (await release_links(request.app.store, row["id"]))["projects"]]
    if not project_ids:
        raise ApiError(400, "the release belongs to no project")
    try:
        body = await read_body(request, settings.sourcemap_max_file + 64 * KIB)
    except IngestError:
        raise ApiError(413, f"a release file is limited to {settings.sourcemap_max_file} bytes") from None
    fields: dict[str, list[bytes]] = {}
    for name, _, data in multipart_parts(body, request.headers.get("content-type", "")):
        fields.setdefault(name, []).append(data)
    if "file" not in fields or len(fields["file"][0]) > settings.sourcemap_max_file:
        raise ApiError(400 if "file" not in fields else 413, "file: the file's bytes are required, within the cap")
    name = text(fields.get("name", [b""])[0].decode("utf-8", "replace"), 2048).strip()
    if not name:
        raise ApiError(400, "name: the file's URL (e.g. ~/static/app.js) is required")
    dist = text(fields.get("dist", [b""])[0].decode("utf-8", "replace"), 64)
    headers = dict(h.decode("utf-8", "replace").partition(":")[::2] for h in fields.get("header", [])[:32])
    headers = {k.strip().lower(): v.strip() for k, v in headers.items() if k.strip()}
    kind = "source_map" if name.endswith(".map") else "release_file"
    file = await asyncio.to_thread(artifact_file, name, kind, normalize_debug_id(headers.get("debug-id")), headers,
                                   fields["file"][0])
    now = time.time()
    ids = [await request.app.writer.submit(lambda conn, p=p: save_release_file(conn, p, version, dist, file, now))
           for p in project_ids]
    if None in ids:
        raise ApiError(409, "A file matching this name already exists for the given release")
    return JSONResponse({"id": str(ids[0]), "name": name, "dist": dist or None, "headers": headers, "size": file.size,
                         "sha1": file.sha1, "dateCreated": iso(now)}, status_code=201)


async def api_artifact_bundles(request: Request) -> list[dict[str, Any]]:
    """A project's artifact bundles, in Sentry's shape."""
    project = await project_from_path(request)
    return [{"bundleId": b["bundle_id"], "associations": [{"release": b["release"], "dist": b["dist"] or None}]
             if b["release"] else [], "fileCount": b["file_count"], "size": b["size"], "date": iso(b["date_added"]),
             "dateModified": iso(b["date_added"])} for b in await artifact_bundles(request.app.store, project["id"])]


# -- alerts: channels, rules (Sentry's issue alert shape), deliveries -------------------------

async def api_channels(request: Request) -> list[dict[str, Any]]:
    check_org(request)
    return [serialize_channel(r) for r in await all_channels(request.app.store)]


def serialize_channel(row: sqlite3.Row) -> dict[str, Any]:
    return {"id": str(row["id"]), "name": row["name"], "kind": row["kind"],
            "config": masked_config(row["kind"], json.loads(row["config"])), "failures": row["failures"],
            "dateCreated": iso(row["created"])}


async def api_create_channel(request: Request) -> Response:
    """201 with the channel; a webhook's generated signing secret is shown this once."""
    check_org(request)
    body = await request_object(request)
    channel_id, config = await create_channel(request, body.get("kind"), body.get("name"), body.get("config", {}))
    row = await channel_by_id(request.app.store, str(channel_id))
    given = body.get("config") if isinstance(body.get("config"), dict) else {}
    extra = {"secret": config["secret"]} if row["kind"] == "webhook" and not given.get("secret") else {}
    return JSONResponse({**serialize_channel(row), **extra}, status_code=201)


async def create_channel(request: Request, kind: Any, name: Any, config: Any) -> tuple[int, dict[str, Any]]:
    """Validate and store a new channel (the API and the dashboard form share this)."""
    try:
        checked = await asyncio.to_thread(checked_channel, kind, name, config)  # it resolves the host: not on the loop
        return await request.app.writer.submit(
            lambda conn: save_channel(conn, name.strip(), kind, checked)), checked
    except AlertConfigError as exc:
        raise ApiError(400, str(exc)) from None


async def api_channel(request: Request) -> dict[str, Any]:
    return serialize_channel(await channel_from_path(request))


async def channel_from_path(request: Request) -> sqlite3.Row:
    return await org_row_from_path(request, channel_by_id, "channel_id")


async def api_update_channel(request: Request) -> dict[str, Any]:
    row = await channel_from_path(request)
    body = await request_object(request)
    name = body.get("name", row["name"])
    try:
        checked = await asyncio.to_thread(checked_channel, row["kind"], name, body.get("config", {}),
                                          json.loads(row["config"]))
        await request.app.writer.submit(lambda conn: save_channel(conn, name.strip(), row["kind"], checked,
                                                                        row["id"]))
    except AlertConfigError as exc:
        raise ApiError(400, str(exc)) from None
    return serialize_channel(await channel_from_path(request))


async def api_delete_channel(request: Request) -> Response:
    row = await channel_from_path(request)
    await request.app.writer.submit(lambda conn: delete_channel(conn, row["id"]))
    return Response(status_code=204)


async def api_test_channel(request: Request) -> Response:
    outbox_id = await queue_test(request, await channel_from_path(request))
    return JSONResponse({"id": str(outbox_id)}, status_code=202)


async def queue_test(request: Request, channel: sqlite3.Row) -> int:
    """Queue a test notification for a channel; its delivery shows in the log like any other."""
    outbox_id = await request.app.writer.submit(lambda conn: enqueue_test(conn, channel))
    request.app.dispatcher.wake.set()
    return outbox_id


async def api_deliveries(request: Request) -> Response:
    """The delivery log, newest first: `?status=dead`, `?issue=<id>`, `?channel=<id>` narrow it."""
    check_org(request)
    limit, offset = page_args(request)
    filters = {name: request.query_params[name] for name in DELIVERY_FILTERS if request.query_params.get(name)}
    rows = await deliveries(request.app.store, filters, limit + 1, offset)
    # what the far end answered is for those who may change channels (the tracker's admin, org:integrations…)
    admin = token_can((await require_token(request))["scopes"], "integrations")
    return JSONResponse([serialize_delivery(r, admin) for r in rows[:limit]],
                        headers=paginate(request, len(rows), limit, offset))


def serialize_delivery(row: sqlite3.Row, admin: bool) -> dict[str, Any]:
    return {"id": str(row["id"]), "channel": {"id": str(row["channel_id"]), "name": row["channel_name"],
                                              "kind": row["channel_kind"]},
            "issueId": str(row["issue_id"]) if row["issue_id"] is not None else None, "trigger": row["trigger"],
            "status": row["status"], "attempts": row["attempts"], "lastStatus": row["last_status"],
            "lastError": error_shown(row["last_error"], admin), "externalRef": row["external_ref"],
            "idempotencyKey": row["idempotency_key"],
            "dateCreated": iso(row["created"]), "dateDelivered": iso(row["delivered"]),
            "nextAttempt": iso(row["next_attempt"]) if row["status"] == "pending" else None}


async def api_retry_delivery(request: Request) -> Response:
    """Send a dead letter again, from its first attempt."""
    check_org(request)
    outbox_id = int(request.path_params["delivery_id"]) if request.path_params["delivery_id"].isdigit() else 0
    if not await request.app.writer.submit(lambda conn: retry_delivery(conn, outbox_id)):
        raise ApiError(404, "no dead or cancelled delivery with that id")
    request.app.dispatcher.wake.set()
    return JSONResponse({"id": str(outbox_id)}, status_code=202)


async def api_rules(request: Request) -> list[dict[str, Any]]:
    project = await project_from_path(request)
    return [serialize_rule(r, project["slug"]) for r in await project_rules(request.app.store, project["id"])]


def serialize_rule(row: sqlite3.Row, project_slug: str) -> dict[str, Any]:
    return {**json.loads(row["rule"]), "id": str(row["id"]), "dateCreated": iso(row["created"]),
            "projects": [project_slug], "status": "active"}


async def api_create_rule(request: Request) -> Response:
    project = await project_from_path(request)
    rule_id = await save_rule_body(request, project, await request_json(request))
    row = await project_rule(request.app.store, project["id"], str(rule_id))
    return JSONResponse(serialize_rule(row, project["slug"]), status_code=201)


async def save_rule_body(request: Request, project: sqlite3.Row, body: Any, rule_id: int | None = None) -> int:
    try:
        rule = checked_rule(body, await channel_names(request.app.store))
    except AlertConfigError as exc:
        raise ApiError(400, str(exc)) from None
    return await request.app.writer.submit(lambda conn: insert_rule(conn, project["id"], rule, rule_id))


async def api_update_rule(request: Request) -> dict[str, Any]:
    project, row = await rule_from_path(request)
    await save_rule_body(request, project, await request_json(request), row["id"])
    return await api_rule(request)


async def rule_from_path(request: Request) -> tuple[sqlite3.Row, sqlite3.Row]:
    project = await project_from_path(request)
    row = await project_rule(request.app.store, project["id"], request.path_params["rule_id"])
    if row is None:
        raise ApiError(404, "The requested resource does not exist")
    return project, row


async def api_rule(request: Request) -> dict[str, Any]:
    project, row = await rule_from_path(request)
    return serialize_rule(row, project["slug"])


async def api_delete_rule(request: Request) -> Response:
    project, row = await rule_from_path(request)
    await request.app.writer.submit(lambda conn: delete_rule(conn, project["id"], str(row["id"])))
    return Response(status_code=204)


# -- DSN keys and API tokens (Sentry's project keys and api-tokens shapes) -------------------------

async def api_project_keys(request: Request) -> list[dict[str, Any]]:
    project = await project_from_path(request)
    return [serialize_key(r, request.app.settings) for r in await project_keys(request.app.store, project["id"])]


def serialize_key(row: sqlite3.Row, settings: Settings) -> dict[str, Any]:
    dsn = dsn_for(settings, row["public_key"], row["project_id"])
    return {"id": row["public_key"], "name": row["label"], "label": row["label"], "public": row["public_key"],
            "secret": None, "projectId": row["project_id"], "isActive": bool(row["active"]), "rateLimit": None,
            "dsn": {"public": dsn, "secret": dsn}, "dateCreated": iso(row["created"])}


async def api_create_key(request: Request) -> Response:
    project = await project_from_path(request)
    label = text((await request_object(request)).get("name"), 64)
    key = await request.app.writer.submit(lambda conn: add_key(conn, project["id"], label))
    row = await project_key(request.app.store, project["id"], key)
    return JSONResponse(serialize_key(row, request.app.settings), status_code=201)


async def api_update_key(request: Request) -> dict[str, Any]:
    """PUT {"isActive": false} disables a key (its events are refused with 403), {"name": …} renames it."""
    project = await project_from_path(request)
    row = await key_from_path(request, project["id"])
    body = await request_object(request)
    if not isinstance(body.get("isActive", True), bool):
        raise ApiError(400, "isActive must be true or false")
    label = text(body["name"], 64) if "name" in body else None
    await set_key(request, project["id"], row["public_key"], body.get("isActive"), label)
    return serialize_key(await key_from_path(request, project["id"]), request.app.settings)


async def key_from_path(request: Request, project_id: int) -> sqlite3.Row:
    row = await project_key(request.app.store, project_id, request.path_params["key_id"].lower())
    if row is None:
        raise ApiError(404, "The requested resource does not exist")
    return row


async def set_key(request: Request, project_id: int, key: str, active: bool | None, label: str | None) -> None:
    """Enable, disable or rename a key; the ingest cache forgets it, so a disabled key is refused at once."""
    await request.app.writer.submit(lambda conn: update_key(conn, project_id, key, active, label))
    request.app.keys.entries.pop(key, None)


async def api_delete_key(request: Request) -> Response:
    project = await project_from_path(request)
    row = await key_from_path(request, project["id"])
    await request.app.writer.submit(lambda conn: delete_key(conn, row["public_key"]))
    request.app.keys.entries.pop(row["public_key"], None)
    return Response(status_code=204)


async def api_tokens(request: Request) -> list[dict[str, Any]]:
    return [serialize_token(r) for r in await all_tokens(request.app.store)]


def serialize_token(row: sqlite3.Row) -> dict[str, Any]:
    return {"id": str(row["id"]), "name": row["name"], "scopes": row["scopes"].split(),
            "dateCreated": iso(row["created"])}


async def api_create_token(request: Request) -> Response:
    """POST {"name": …, "scopes": [...]}: 201 with the token itself, shown this once."""
    body = await request_object(request)
    try:
        scopes = token_scopes(body.get("scopes", ["read"]) if isinstance(body.get("scopes", []), list) else "?")
    except ValueError as exc:
        raise ApiError(400, str(exc)) from None
    name = text(body.get("name"), 100)
    owner = (await require_token(request))["user_id"]  # it goes when the person behind the caller is disabled
    token = await request.app.writer.submit(lambda conn: create_token(conn, name, scopes, owner))
    row = await token_by_secret(request.app.store, token)
    return JSONResponse({**serialize_token(row), "token": token}, status_code=201)


async def api_revoke_token(request: Request) -> Response:
    """DELETE /api/0/api-tokens/<id>/, or Sentry's DELETE /api/0/api-tokens/ with {"tokenId": …}."""
    raw = request.path_params.get("token_id") or str((await request_object(request)).get("tokenId", ""))
    if not raw.isdigit() or len(raw) > 18:
        raise ApiError(404, "The requested resource does not exist")
    gone = await request.app.writer.submit(lambda conn: revoke_token(conn, str(int(raw))))
    if not gone:
        raise ApiError(404, "The requested resource does not exist")
    return Response(status_code=204)


# -- release health, SLOs and metrics (Sentry's sessions and events-stats shapes) ---------------

async def api_sessions(request: Request) -> dict[str, Any]:
    """GET /api/0/organizations/<org>/sessions/: Sentry's release-health query (fields, groupBy,
    statsPeriod or start/end, interval, project, environment, query release:/environment:)."""
    check_org(request)
    fields = request.query_params.getlist("field")
    groups = request.query_params.getlist("groupBy")
    if not fields or any(f not in SESSION_FIELDS for f in fields):
        raise ApiError(400, f"field: one or more of {', '.join(SESSION_FIELDS)}")
    if any(g not in SESSION_GROUPS for g in groups):
        raise ApiError(400, f"groupBy: any of {', '.join(SESSION_GROUPS)}")
    if "session.status" in groups and any(f not in ("sum(session)", "count_unique(user)") for f in fields):
        raise ApiError(400, "groupBy session.status works with sum(session) and count_unique(user) only")
    start, end, interval = stats_window(request)
    rows, users = await session_rows(request.app.store, stats_filters(request, ("release", "environment")), start, end,
                                     any("user" in f for f in fields))
    slots = int((end - start) // interval)
    by: dict[tuple[Any, ...], dict[str, Any]] = {}

    def bucket(row: sqlite3.Row, at: float, status: str | None) -> tuple[dict[str, Any], dict[str, Any]]:
        """The group's totals and the interval's sums a row adds to (a user's day to its first interval)."""
        key = tuple(status if g == "session.status" else row["project_id" if g == "project" else g] for g in groups)
        group = by.setdefault(key, {"totals": empty_sums(), "series": [empty_sums() for _ in range(slots)]})
        return group["totals"], group["series"][min(max(int((at - start) // interval), 0), slots - 1)]

    for row in rows:
        for status, part in (STATUS_PARTS.items() if "session.status" in groups else [(None, None)]):
            for sums in bucket(row, row["minute"], status):
                if part is None:
                    for key in ("total", "errored", "crashed", "abnormal"):
                        sums[key] += row[key]
                else:
                    sums["total"] += part(row)
    for row in users:
        for status in (["crashed" if row["crashed"] else "healthy"] if "session.status" in groups else [None]):
            for sums in bucket(row, row["day"], status):
                sums["users"].add(row["did"])
                if row["crashed"]:
                    sums["crashed_users"].add(row["did"])
    return {"start": iso(start), "end": iso(end), "query": request.query_params.get("query", ""),
            "intervals": [iso(start + i * interval) for i in range(slots)],
            "groups": [{"by": dict(zip(groups, key)),
                        "totals": {f: session_field(f, g["totals"]) for f in fields},
                        "series": {f: [session_field(f, s) for s in g["series"]] for f in fields}}
                       for key, g in sorted(by.items(), key=lambda kv: [str(k) for k in kv[0]])]}


SESSION_FIELDS = ("sum(session)", "count_unique(user)", "crash_free_rate(session)", "crash_free_rate(user)",
                  "crash_rate(session)", "crash_rate(user)", "count_errored(session)", "count_crashed(session)")

SESSION_GROUPS = ("project", "release", "environment", "session.status")


def stats_window(request: Request, default_interval: str = "1h") -> tuple[float, float, int]:
    """(start, end, interval) from statsPeriod (or start/end) and interval, aligned to the interval."""
    interval = max(parse_period(request.query_params.get("interval", default_interval), "interval"), 60)
    start, end = requested_window(request)
    start, end = start // interval * interval, (end // interval + 1) * interval
    if (end - start) / interval > 5000:
        raise ApiError(400, "too many intervals: use a larger interval or a shorter period")
    return start, end, interval


def parse_period(value: str, name: str) -> int:
    """`24h`, `14d`, `30m` → seconds."""
    match = re.fullmatch(r"(\d{1,6})([smhdw])", value.strip())
    if not match or not 0 < int(match[1]) * PERIOD_UNITS[match[2]] <= MAX_STATS_SPAN:
        raise ApiError(400, f"{name}: a duration like 30m, 24h or 14d, at most 400d")
    return int(match[1]) * PERIOD_UNITS[match[2]]


PERIOD_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}

MAX_STATS_SPAN = 400 * 86400  # stored data does not go further back; longer asks are mistakes


def requested_window(request: Request) -> tuple[float, float]:
    """(start, end) from start/end, else statsPeriod (24h by default) up to now."""
    params = request.query_params
    if params.get("start") and params.get("end"):
        start, end = parse_timestamp(params["start"]), parse_timestamp(params["end"])
        if start is None or end is None or not 0 < end - start <= MAX_STATS_SPAN:
            raise ApiError(400, "start and end: ISO dates, start before end, at most 400 days apart")
        return start, end
    end = time.time()
    return end - parse_period(params.get("statsPeriod", "24h"), "statsPeriod"), end


def stats_filters(request: Request, keys: tuple[str, ...]) -> dict[str, list[str]]:
    """`project`, `environment` params and `key:value` terms of `query` (release:…, environment:…)."""
    params = request.query_params
    filters = {"project_id": [p for p in params.getlist("project") if p not in ("", "-1")],
               "environment": params.getlist("environment")}
    for term in shlex_split(params.get("query", "")):
        key, _, value = term.partition(":")
        if key in ("event.type", "!event.type") and value in ("error", "default"):
            continue
        if key not in keys or not value:
            raise ApiError(400, f"Invalid search query: {term!r} (supported: {', '.join(k + ':' for k in keys)})")
        filters.setdefault(key, []).extend(v.strip() for v in value.strip("[]").split(","))
    return {k: v for k, v in filters.items() if v}


def shlex_split(query: str) -> list[str]:
    return re.findall(r'(?:[^\s"]+|"[^"]*")+', query.replace('"', ""))


def empty_sums() -> dict[str, Any]:
    return {"total": 0, "errored": 0, "crashed": 0, "abnormal": 0, "users": set(), "crashed_users": set()}


STATUS_PARTS = {"healthy": lambda r: r["total"] - r["errored"], "errored": lambda r: r["errored"] - r["crashed"] - r["abnormal"],
                "crashed": lambda r: r["crashed"], "abnormal": lambda r: r["abnormal"]}


def session_field(field: str, s: dict[str, float]) -> float | int | None:
    """One of Sentry's session fields from summed counts (and user sets)."""
    total, users = s["total"], len(s["users"])
    return {"sum(session)": int(total), "count_unique(user)": users, "count_errored(session)": int(s["errored"]),
            "count_crashed(session)": int(s["crashed"]),
            "crash_free_rate(session)": 1 - s["crashed"] / total if total else None,
            "crash_rate(session)": s["crashed"] / total if total else None,
            "crash_free_rate(user)": 1 - len(s["crashed_users"]) / users if users else None,
            "crash_rate(user)": len(s["crashed_users"]) / users if users else None}[field]


async def api_events_stats(request: Request) -> dict[str, Any]:
    """GET /api/0/organizations/<org>/events-stats/?field=count(): error events per interval."""
    check_org(request)
    if request.query_params.getlist("yAxis") not in ([], ["count()"]) or \
            request.query_params.getlist("field") not in ([], ["count()"]):
        raise ApiError(400, "only count() is supported")
    start, end, interval = stats_window(request)
    counts = await events_per_slot(request.app.store, stats_filters(request, ("release", "environment", "level")),
                                   start, end, interval)
    slots = int((end - start) // interval)
    return {"data": [[int(start + i * interval), [{"count": counts.get(i, 0)}]] for i in range(slots)],
            "start": int(start), "end": int(end), "isMetricsData": False}


async def api_stats_v2(request: Request) -> dict[str, Any]:
    """GET /api/0/organizations/<org>/stats_v2/?field=sum(quantity): what was accepted and what was
    dropped, by outcome (accepted, rate_limited, client_discard), reason, category and project."""
    check_org(request)
    params = request.query_params
    groups = params.getlist("groupBy")
    if params.getlist("field") != ["sum(quantity)"]:
        raise ApiError(400, "field: sum(quantity)")
    if any(g not in STATS_GROUPS for g in groups):
        raise ApiError(400, f"groupBy: any of {', '.join(STATS_GROUPS)}")
    start, end, interval = stats_window(request)
    rows = await outcome_rows(request.app.store, stats_filters(request, ()), start, end)
    slots = int((end - start) // interval)
    by: dict[tuple[Any, ...], list[int]] = {}
    wanted = {k: params.getlist(k) for k in ("outcome", "category") if params.getlist(k)}
    for row in rows:
        client = row["reason"].startswith("client:")
        values = {"outcome": "client_discard" if client else "accepted" if row["reason"] == "none" else "rate_limited",
                  "reason": row["reason"].removeprefix("client:"), "category": row["category"],
                  "project": row["project_id"]}
        if any(values[k] not in v for k, v in wanted.items()):
            continue
        series = by.setdefault(tuple(values[g] for g in groups), [0] * slots)
        series[min(max(int((row["at"] - start) // interval), 0), slots - 1)] += row["quantity"]
    return {"start": iso(start), "end": iso(end), "intervals": [iso(start + i * interval) for i in range(slots)],
            "groups": [{"by": dict(zip(groups, key)), "totals": {"sum(quantity)": sum(series)},
                        "series": {"sum(quantity)": series}}
                       for key, series in sorted(by.items(), key=lambda kv: [str(k) for k in kv[0]])]}


STATS_GROUPS = ("outcome", "reason", "category", "project")


async def api_update_slo(request: Request) -> dict[str, Any]:
    """PUT {"name", "metric", "objective", "window", "minTotal", "environment"}: set the project's SLO."""
    project = await project_from_path(request)
    body = await request_object(request)
    try:
        slo = checked_slo({**body, "min_total": body.get("minTotal", body.get("min_total", 100))})
    except AlertConfigError as exc:
        raise ApiError(400, str(exc)) from None
    await request.app.writer.submit(lambda conn: save_slo(conn, project["id"], slo))
    return await api_slo(request)


async def api_slo(request: Request) -> dict[str, Any]:
    project = await project_from_path(request)
    slo = await slo_of(request.app.store, project["id"])
    if slo is None:
        raise ApiError(404, "This project has no SLO: PUT one here")
    return slo


async def slo_of(store: Store, project_id: int) -> dict[str, Any] | None:
    """A project's objective with its current state and the last 24 hours of judgements."""
    row = await slo_row(store, project_id)
    if row is None:
        return None
    slo = json.loads(row["config"])
    history = await slo_history(store, project_id, time.time() - 86400)
    value = row["value"]
    return {"name": slo["name"], "metric": slo["metric"], "objective": slo["objective"], "window": slo["window"],
            "minTotal": slo["min_total"], "environment": slo.get("environment"), "description": slo_words(slo),
            "state": row["state"], "value": value, "total": row["total"],
            "burnRate": value / slo["objective"] if value is not None else None,
            "since": iso(row["since"]), "updated": iso(row["updated"]),
            "history": [{"minute": iso(h["minute"]), "value": h["value"], "total": h["total"], "state": h["state"]}
                        for h in history]}


async def api_delete_slo(request: Request) -> Response:
    project = await project_from_path(request)
    await request.app.writer.submit(lambda conn: delete_slo(conn, project["id"]))
    return Response(status_code=204)


async def page_metrics(request: Request) -> Response:
    """Prometheus text format, for scrapers and Alertmanager setups."""
    store = request.app.store
    lines: dict[str, list[str]] = {name: [] for name in METRICS_HELP}
    for r in await issue_counts(store):
        lines["tracker_issues"].append(metric_line("tracker_issues", {"project": r["slug"], "status": r["status"]}, r["n"]))
    for r in await event_counts(store):

        lines["tracker_events_total"].append(metric_line("tracker_events_total", {"project": r["slug"]}, r["n"]))
    for r in await session_totals(store):
        for outcome, part in STATUS_PARTS.items():
            lines["tracker_sessions_total"].append(metric_line("tracker_sessions_total", {
                "project": r["slug"], "release": r["release"], "environment": r["environment"], "outcome": outcome},
                part(r)))
    for r in await all_slos(store):
        labels = {"project": r["slug"], "slo": json.loads(r["config"])["name"]}
        if r["value"] is not None:
            lines["tracker_slo_value"].append(metric_line("tracker_slo_value", labels, r["value"]))
        lines["tracker_slo_objective"].append(metric_line("tracker_slo_objective", labels,
                                                          json.loads(r["config"])["objective"]))
        lines["tracker_slo_breached"].append(metric_line("tracker_slo_breached", labels, int(r["state"] == "breached")))
    for slug, state in await all_forward_status(store, time.time()):
        for name, key in FORWARD_METRICS.items():
            if state[key] is not None:
                lines[name].append(metric_line(name, {"project": slug}, state[key]))
    out = []
    for name, (kind, help_text) in METRICS_HELP.items():
        out += [f"# HELP {name} {help_text}", f"# TYPE {name} {kind}", *lines[name]]
    return PlainTextResponse("\n".join(out) + "\n", media_type="text/plain; version=0.0.4")


METRICS_HELP = {
    "tracker_events_total": ("counter", "Events stored."),
    "tracker_issues": ("gauge", "Issues by status."),
    "tracker_sessions_total": ("counter", "Sessions by outcome (healthy, errored, crashed, abnormal)."),
    "tracker_slo_value": ("gauge", "The share of bad sessions or events in the SLO's window."),
    "tracker_slo_objective": ("gauge", "The SLO's objective: the value must stay below it."),
    "tracker_slo_breached": ("gauge", "1 while the SLO is breached."),
    "tracker_forward_queued": ("gauge", "Envelopes in the forward outbox, waiting for the upstream."),
    "tracker_forward_queued_bytes": ("gauge", "Bytes of the envelopes in the forward outbox."),
    "tracker_forward_outbox_age_seconds": ("gauge", "Age of the oldest envelope in the forward outbox (0: empty)."),
    "tracker_forward_sent_last_hour": ("gauge", "Envelopes the upstream took in the last hour."),
    "tracker_forward_dropped_total": ("counter", "Envelopes dropped from the outbox: full, or refused by the upstream."),
    "tracker_forward_last_error_timestamp_seconds": ("gauge", "When forwarding last failed."),
}

FORWARD_METRICS = {"tracker_forward_queued": "queued", "tracker_forward_queued_bytes": "bytes",
                   "tracker_forward_outbox_age_seconds": "outbox_age",
                   "tracker_forward_sent_last_hour": "sent_last_hour", "tracker_forward_dropped_total": "dropped",
                   "tracker_forward_last_error_timestamp_seconds": "last_error_at"}


def metric_line(name: str, labels: dict[str, Any], value: float) -> str:
    def escape(v: Any) -> str:
        return str(v).replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
    inner = ",".join(f'{k}="{escape(v)}"' for k, v in labels.items())
    return f"{name}{{{inner}}} {value:g}"


async def api_not_found(request: Request) -> Response:
    return JSONResponse({"detail": "not found"}, status_code=404)


# -- traces and logs (Sentry's trace endpoint and the logs dataset of its events endpoint) -------------

async def api_trace(request: Request) -> list[dict[str, Any]]:
    """GET /api/0/organizations/<org>/trace/<trace_id>/: every project's part of a trace in Sentry's
    shape: the root spans, each with the spans below it in `children` (a called service's transaction
    under the span that called it) and the errors that happened in it in `errors`; errors in no kept
    span are roots of their own."""
    check_org(request)
    trace_id = normalize_id(request.path_params["trace_id"])
    if trace_id is None:
        raise ApiError(400, "trace id: 32 hexadecimal digits")
    view = await trace_view(request.app.store, trace_id)
    nodes: dict[str, dict[str, Any]] = {}
    roots: list[dict[str, Any]] = []
    for span in view["waterfall"]:  # tree order: a parent comes before its children
        node = span_json(span)
        parent = nodes.get(span["parent_span_id"] or "")
        (parent["children"] if parent else roots).append(node)
        nodes.setdefault(span["span_id"], node)
    for e in view["errors"]:
        node = nodes.get(e["span_id"] or "")
        (node["errors"] if node else roots).append(trace_error_json(e))
    return roots


def span_json(span: dict[str, Any]) -> dict[str, Any]:
    t = span["transaction"]
    return {"event_id": span["span_id"], "transaction_id": t["event_id"], "project_id": t["project_id"],
            "project_slug": t["project_slug"], "transaction": t["name"], "description": span["description"],
            "op": span["op"], "name": span["op"], "parent_span_id": span["parent_span_id"],
            "is_transaction": span["is_transaction"], "status": span["status"], "start_timestamp": span["start"],
            "end_timestamp": span["end"], "duration": (span["end"] - span["start"]) * 1000,
            "measurements": t["measurements"] if span["is_transaction"] else {}, "sdk_name": "",
            "profile_id": "", "profiler_id": "", "event_type": "span", "children": [], "errors": [],
            "occurrences": []}


def trace_error_json(e: dict[str, Any]) -> dict[str, Any]:
    return {"event_id": e["event_id"], "issue_id": e["issue_id"], "level": e["level"], "culprit": e["culprit"],
            "title": e["title"], "short_id": short_id(e["project_slug"], e["short_id"]), "issue_type": "error",
            "project_id": e["project_id"], "project_slug": e["project_slug"], "start_timestamp": e["timestamp"],
            "event_type": "error"}


async def api_org_logs(request: Request) -> dict[str, Any]:
    """GET /api/0/organizations/<org>/events/?dataset=logs (or `ourlogs`): log lines in Sentry's
    table shape, `field` naming the columns (a log column or any attribute), `query` in its search
    syntax, `project` (ids or slugs, repeatable; none or -1: every project), `environment`,
    `statsPeriod` or `start`/`end`, `sort` (-timestamp or timestamp) and `per_page` (at most
    LOG_API_PAGE). Only logs are kept here, so only that dataset."""
    check_org(request)
    params = request.query_params
    if params.get("dataset") not in ("logs", "ourlogs"):
        raise ApiError(400, "dataset: logs (the only dataset of this endpoint kept here)")
    fields = params.getlist("field") or LOG_DEFAULT_FIELDS
    if len(fields) > 50 or any(len(f) > MAX_TAG for f in fields):
        raise ApiError(400, "field: at most 50 columns")
    start, end = requested_window(request)  # a list, not a series: any period up to 400 days
    query = " ".join([params.get("query", ""), *(f'environment:"{e}"' for e in params.getlist("environment"))])
    project_ids = await projects_param(request)
    per_page = params.get("per_page", "100")
    if not (per_page.isascii() and per_page.isdigit() and 0 < int(per_page) <= LOG_API_PAGE):
        raise ApiError(400, f"per_page: 1 to {LOG_API_PAGE}")
    if params.get("sort", "-timestamp") not in ("-timestamp", "timestamp"):
        raise ApiError(400, "sort: -timestamp or timestamp")
    try:
        rows = await search_logs(request.app.store, query, project_ids=project_ids,
                                 since=start, until=end, limit=int(per_page),
                                 ascending=params.get("sort") == "timestamp")
    except SearchError as exc:
        raise ApiError(400, str(exc)) from None
    data = [log_json(row, fields) for row in rows]
    return {"data": data, "meta": {"fields": {f: LOG_FIELD_TYPES.get(f, "string") for f in fields}, "units": {}}}


async def api_trace_logs(request: Request) -> dict[str, Any]:
    """GET /api/0/organizations/<org>/trace-logs/?traceId=…(repeat)&query=…&per_page=…: the log lines
    of these traces in Sentry's shape (its eight columns), newest first."""
    check_org(request)
    trace_ids = [normalize_id(t) for t in request.query_params.getlist("traceId")]
    if not trace_ids or len(trace_ids) > 20 or None in trace_ids:
        raise ApiError(400, "traceId: one to 20 trace ids of 32 hexadecimal digits")
    per_page = request.query_params.get("per_page", "100")
    if not (per_page.isascii() and per_page.isdigit() and 0 < int(per_page) <= LOG_API_PAGE):
        raise ApiError(400, f"per_page: 1 to {LOG_API_PAGE}")
    rows: list[sqlite3.Row] = []
    try:
        for trace_id in trace_ids:
            rows += await search_logs(request.app.store, f"trace:{trace_id} {request.query_params.get('query', '')}",
                                      limit=int(per_page))
    except SearchError as exc:
        raise ApiError(400, str(exc)) from None
    rows = sorted(rows, key=lambda r: (r["timestamp"], r["id"]), reverse=True)[:int(per_page)]
    return {"data": [log_json(r, LOG_DEFAULT_FIELDS) for r in rows],
            "meta": {"fields": {f: LOG_FIELD_TYPES.get(f, "string") for f in LOG_DEFAULT_FIELDS}, "units": {}}}


LOG_API_PAGE = 1000

LOG_DEFAULT_FIELDS = ["id", "project.id", "trace", "severity_number", "severity", "timestamp", "timestamp_precise",
                      "message"]

LOG_FIELD_TYPES = {"project.id": "integer", "severity_number": "integer", "timestamp": "date",
                   "timestamp_precise": "integer"}


def log_json(row: sqlite3.Row, fields: list[str]) -> dict[str, Any]:
    """One log line as a row of Sentry's logs dataset: the named columns, attributes by name."""
    columns = {"id": str(row["id"]), "project.id": row["project_id"], "trace": row["trace_id"],
               "severity_number": row["severity_number"], "severity": row["level"], "timestamp": iso(row["timestamp"]),
               "timestamp_precise": int(row["timestamp"] * 1e9), "message": row["body"],
               "message.template": row["template"], "release": row["release"], "environment": row["environment"],
               "sdk.name": row["sdk"], "trace.parent_span_id": row["span_id"], "project": row["project_slug"]}
    attributes = json_loads(row["attributes"])
    return {f: columns[f] if f in columns else attributes.get(f) for f in fields}


# -- cron monitors (Sentry's monitors and check-ins shapes) -------------------------------------

async def api_monitors(request: Request) -> list[dict[str, Any]]:
    return await serialize_monitors(request, await org_monitors(request))


async def serialize_monitors(request: Request, rows: list[sqlite3.Row]) -> list[dict[str, Any]]:
    """Monitors with their environments: each one's status is its latest finished check-in's."""
    envs = await monitor_environments(request.app.store, [r["id"] for r in rows])
    minute = cron_minute(request.app.settings)
    out = []
    for row in rows:
        due, late = row["next_expected"], row["checkin_margin"] * minute
        out.append({"id": str(row["id"]), "slug": row["slug"], "name": row["name"], "status": "active",
                    "isMuted": False, "type": "cron_job", "config": monitor_config_json(row),
                    "dateCreated": iso(row["created"]),
                    "project": {"id": str(row["project_id"]), "slug": row["project_slug"], "name": row["project_name"]},
                    "environments": [{"name": e["environment"], "status": MONITOR_HEALTH.get(e["status"], "active"),
                                      "isMuted": False, "dateCreated": iso(e["first"]), "lastCheckIn": iso(e["last"]),
                                      "nextCheckIn": iso(due), "nextCheckInLatest": iso(due + late) if due else None}
                                     for e in envs if e["monitor_id"] == row["id"]]})
    return out


MONITOR_HEALTH = {"ok": "ok", "error": "error", "missed": "missed_checkin", "timeout": "timeout"}


async def org_monitors(request: Request, slug: str | None = None) -> list[sqlite3.Row]:
    """The organisation's monitors (one slug's, if given), narrowed by `?project=` ids or slugs."""
    check_org(request)
    refs = request.query_params.getlist("project")
    rows = await monitors_with_projects(request.app.store, slug)
    return [r for r in rows if not refs or r["project_slug"] in refs or str(r["project_id"]) in refs]


async def api_monitor(request: Request) -> dict[str, Any]:
    return (await serialize_monitors(request, [await monitor_from_path(request)]))[0]


async def monitor_from_path(request: Request) -> sqlite3.Row:
    rows = await org_monitors(request, request.path_params["monitor_slug"])
    if not rows:
        raise ApiError(404, "The requested resource does not exist")
    return rows[0]


async def api_monitor_checkins(request: Request) -> Response:
    """A monitor's check-ins, newest first (`?environment=` narrows); duration in milliseconds."""
    monitor = await monitor_from_path(request)
    limit, offset = page_args(request)
    rows = await monitor_check_ins(request.app.store, monitor["id"], request.query_params.getlist("environment"),
                                   limit + 1, offset)
    config = monitor_config_json(monitor)
    return JSONResponse([{"id": str(uuid.UUID(r["check_in_id"])), "status": r["status"],
                          "duration": None if r["duration"] is None else round(r["duration"] * 1000),
                          "dateCreated": iso(r["date_created"]), "dateUpdated": iso(r["date_updated"]),
                          "environment": r["environment"], "expectedTime": iso(r["expected_time"]),
                          "monitorConfig": config, "attachmentId": None, "groups": []} for r in rows[:limit]],
                        headers=paginate(request, len(rows), limit, offset))


# =============================================================================
# Dashboard (server-rendered; Jinja2 autoescapes all event data)
# =============================================================================

def status_words(issue: sqlite3.Row) -> str:
    """The issue's status and statusDetails in words, for the issue page."""
    details = json.loads(issue["status_details"])
    if issue["status"] == "ignored":
        return f"Ignored {ignore_words(details)}"
    if details.get("inNextRelease"):
        return f"Resolved in the next release after {details.get('_release')}"
    if details.get("inRelease"):
        return f"Resolved in {details['inRelease']}"
    return issue["status"].capitalize()


def ignore_words(details: dict[str, Any]) -> str:
    """An ignore condition (statusDetails) as a phrase."""
    if "ignoreUntil" in details:
        return f"until {format_datetime(details['ignoreUntil'])}"
    if "ignoreWindow" in details:
        return f"until it happens {details['ignoreCount']} times within {details['ignoreWindow']} min"
    if "ignoreCount" in details:
        return f"until {details['ignoreCount']} more events"
    if "ignoreUserCount" in details:
        return f"until {details['ignoreUserCount']} more users are affected"
    return "forever"


def format_datetime(ts: Any) -> str:
    value = parse_timestamp(ts)
    if value is None:
        return ""
    return dt.datetime.fromtimestamp(value, dt.timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")


def activity_words(kind: str, data: dict[str, Any]) -> str:
    """One activity entry as a sentence, for the issue page."""
    version = data.get("version")
    if kind == "first_seen":
        return "First seen" + (f" in {version}" if version else "")
    if kind == "release":
        return f"First event from release {version}"
    if kind == "set_resolved_in_release" and version:
        return f"Resolved in {version}"
    if kind == "set_resolved_in_release":
        return f"Resolved in the next release after {data.get('current_release_version')}"
    if kind == "set_resolved_in_commit":
        commit = data.get("commit") or {}
        return f"Fixed by commit {str(commit.get('id', ''))[:12]} in {commit.get('repository')}: " \
               f"{(commit.get('message') or '').splitlines()[0] if commit.get('message') else ''}"
    if kind == "set_unresolved":
        return f"Unresolved: it was ignored {ignore_words(data)}, and that has passed" if data else "Unresolved"
    if kind == "set_ignored":
        return f"Ignored {ignore_words(data)}"
    if kind == "set_regression":
        return "Regressed" + (f" in {version}" if version else "")
    if kind == "assigned":
        return f"Assigned to {data.get('assignee')}"
    if kind == "merge":
        return f"Merged {len(data.get('issues', []))} issue(s) into this one"
    if kind == "unmerge_source":
        return f"Unmerged: events with hash {', '.join(data.get('fingerprints', []))} moved to issue {data.get('destination_id')}"
    if kind == "unmerge_destination":
        return f"Unmerged from issue {data.get('source_id')}"
    return {"set_resolved": "Resolved", "unassigned": "Unassigned"}.get(kind, kind)


def make_templates() -> jinja2.Environment:
    env = jinja2.Environment(loader=jinja2.DictLoader(TEMPLATES), autoescape=True,
                             undefined=jinja2.ChainableUndefined)
    env.filters.update(ago=ago, datetime=format_datetime, timeonly=time_only, pretty=pretty, pct=percent, count=count,
                       plural=plural,
                       ms=milliseconds)
    env.filters["scrubbed"] = scrubbed_paths
    env.filters["numbered_context"] = numbered_context
    env.globals["filter_url"] = filter_url
    env.filters.update(age=duration_text, upstream_host=upstream_host)
    env.filters["quoted"] = quoted
    return env


def ago(ts: Any) -> str:
    """How long ago a time (epoch seconds or ISO text) was, in the largest whole unit."""
    ts = parse_timestamp(ts)
    if ts is None:
        return "—"
    seconds = max(time.time() - ts, 0)
    for unit, size in (("d", 86400), ("h", 3600), ("min", 60)):
        if seconds >= size:
            return f"{int(seconds // size)} {unit} ago"
    return "just now"


def milliseconds(value: float) -> str:
    """A duration in milliseconds as people read it: 0.42 ms, 35 ms, 1.24 s."""
    if value >= 1000:
        return f"{value / 1000:.2f} s"
    return f"{value:.2f} ms" if value < 10 else f"{value:.0f} ms"


def duration_text(seconds: float) -> str:
    """A length of time in its largest whole unit: `42 s`, `3 min`, `5 h`, `2 d`."""
    for unit, size in (("d", 86400), ("h", 3600), ("min", 60)):
        if seconds >= size:
            return f"{int(seconds // size)} {unit}"
    return f"{int(seconds)} s"


def upstream_host(dsn: str) -> str:
    """Where a DSN points, without its key: `sentry.example.com/42`."""
    parts = urllib.parse.urlsplit(dsn)
    return f"{parts.netloc.rpartition('@')[2]}{parts.path}"


def time_only(ts: Any) -> str:
    return format_datetime(ts)[11:19]


def percent(value: float | None) -> str:
    """A rate as people read it: 90%, 99.95%, 0.08%, <0.01%; — when there is nothing to divide.
    Two decimals at most, and only where they say something (99.95% is not 100%)."""
    if value is None:
        return "—"
    if 0 < value < 0.0001:
        return "<0.01%"
    text = f"{value * 100:.2f}".rstrip("0").rstrip(".")
    return f"{text}%" if text != "100" or value >= 1 else "99.99%"


def count(value: Any) -> str:
    """A count with thousands separators: 14,383."""
    return f"{int(value or 0):,}"


def plural(value: Any, word: str, words: str = "") -> str:
    """'1 issue', '2 issues', '14,383 events' (`words` where adding an s is wrong: entry, entries)."""
    n = int(value or 0)
    return f"{n:,} {word if n == 1 else words or word + 's'}"


# The dashboard runs no script at all, so the browser is told to run none: a second wall behind
# autoescaping for event data, which is all attacker-controlled. Nor does it style anything inline
# (the templates use the stylesheet's classes), so no injected style attribute or element applies
# either. DashboardGate sends these on every answer outside /api/.
PAGE_HEADERS = {"Content-Security-Policy": "default-src 'none'; style-src 'self'; img-src 'self' data:; "
                                          "form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
                "X-Content-Type-Options": "nosniff", "Referrer-Policy": "same-origin", "X-Frame-Options": "DENY",
                "Cache-Control": "no-store"}


def render(request: Request, name: str, status: int = 200, **context: Any) -> HTMLResponse:
    """A page; every template can show who is signed in and put the session's CSRF token in its forms."""
    viewer: Viewer | None = request.scope.get("state", {}).get("viewer")
    html = request.app.templates.get_template(name).render(viewer=viewer, csrf=viewer.csrf if viewer else "",
                                                                 **context)
    return HTMLResponse(html, status_code=status)


# -- people: who may see and change what ----------------------------------------------------------

class DashboardGate:
    """ASGI middleware for everything outside /api/ (ingest and the JSON API check their own
    credentials): adds PAGE_HEADERS, lets the login page and the stylesheet through, and sends
    anyone else without a session, proxy header or read token to the login page."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"].startswith("/api/"):
            return await self.app(scope, receive, send)

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                present = {k.lower() for k, _ in message.setdefault("headers", [])}
                message["headers"] += [(k.lower().encode(), v.encode()) for k, v in PAGE_HEADERS.items()
                                       if k.lower().encode() not in present]
            await send(message)

        if not scope["path"].startswith(PUBLIC_PATHS):
            request = Request(scope, receive)
            viewer = await identify(request)
            refusal = refusal_for(request, viewer)
            if refusal is not None:
                return await refusal(scope, receive, send_with_headers)
            scope.setdefault("state", {})["viewer"] = viewer
        await self.app(scope, receive, send_with_headers)


PUBLIC_PATHS = ("/login", "/static/", "/stream")  # /stream: ingest (loopback only), not a page


async def identify(request: Request) -> Viewer | None:
    """The person (or script) behind a dashboard request, if any."""
    store = request.app.store
    header = request.app.settings.auth_header
    if header and request.headers.get(header):
        return await proxy_viewer(request, request.headers[header].strip())
    cookie = request.cookies.get(SESSION_COOKIE)
    if cookie:
        row = await signed_in_user(store, cookie)
        if row:
            return Viewer(row["id"], row["name"], row["role"], row["csrf"])
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() == "bearer" and token.strip():
        row = await token_by_secret(store, token.strip())
        if row and token_can(row["scopes"], "events:read"):
            return Viewer(row["user_id"], row["name"] or "API token", "member", via="token")
    return None


async def proxy_viewer(request: Request, name: str) -> Viewer | None:
    """A person the SSO proxy vouches for; first seen, they become a member. The CSRF token is
    derived from the name, since there is no session to keep one in."""
    row = await user_by_name(request.app.store, name)
    if row is not None and row["disabled"]:
        return None  # the proxy vouches for who they are, not that they may still come in
    if row is None:
        try:
            await request.app.writer.submit(lambda conn: create_user(conn, name))
        except ValueError:
            return None  # a name we cannot take (too long, odd characters): not signed in
        row = await user_by_name(request.app.store, name)
    csrf = hmac.new(request.app.secret, f"proxy:{row['name']}".encode(), "sha256").hexdigest()
    return Viewer(row["id"], row["name"], row["role"], csrf, via="proxy")


@dataclasses.dataclass(frozen=True)
class Viewer:
    """Who asks for a dashboard page and how they came in: a browser session (`csrf` set, may
    post forms), the trusted proxy header (likewise), or an API token that may read events (GET only)."""

    user_id: int | None
    name: str
    role: str
    csrf: str = ""
    via: str = "session"


def refusal_for(request: Request, viewer: Viewer | None) -> Response | None:
    """What to answer instead of the page, or None to serve it."""
    reading = request.method in ("GET", "HEAD")
    if viewer is None:
        if reading:
            target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
            return RedirectResponse("/login?" + urllib.parse.urlencode({"next": target}), status_code=302)
        return error_page(request, 401, "Sign in first.")
    if not reading and not viewer.csrf:
        return error_page(request, 403, "An API token can read pages, not change anything.")
    if not reading and viewer.role != "admin" and request.url.path.startswith(ADMIN_PATHS):
        return error_page(request, 403, "Only an admin can change settings.")
    return None


ADMIN_PATHS = ("/projects/", "/alerts/", "/settings/")  # where a POST changes settings, not issues


async def page_login(request: Request) -> Response:
    """The sign-in form; a POST checks the password (off the event loop: scrypt is slow on purpose)."""
    if request.method == "GET":
        return render(request, "login.html", next=safe_next(request.query_params.get("next", "")), user_name="", error="")
    if cross_site(request):
        return error_page(request, 403, "Refused: this request came from another site.")
    form = last_values(await read_body_form(request))
    name, target = form.get("name", "").strip(), safe_next(form.get("next", ""))
    throttle = request.app.throttle
    keys = throttle.keys(name, client_ip(request))
    wait = throttle.wait(*keys)
    if wait > 0:
        return render(request, "login.html", status=429, next=target, user_name=name,
                      error=f"Too many failed sign-ins: try again in {math.ceil(wait)} s.")
    await asyncio.sleep(throttle.pause(*keys))
    user = await enabled_user_password(request.app.store, name)
    if not await asyncio.to_thread(password_matches, form.get("password", ""), user["password"] if user else None):
        throttle.failed(*keys)
        return render(request, "login.html", status=401, next=target, user_name=name, error="Wrong user name or password.")
    throttle.succeeded(*keys)
    token = await request.app.writer.submit(lambda conn: create_web_session(conn, user["id"]))
    return with_session_cookie(request, RedirectResponse(target, status_code=303), token)


def safe_next(target: str) -> str:
    """Where to go after login: a path on this site only (no `//host`, no scheme)."""
    return target if target.startswith("/") and not target.startswith(("//", "/\\")) else "/issues/"


class LoginThrottle:
    """Failed sign-ins slow down the next try, without letting strangers lock a person out:
    - a name from one address: after n failures that pair waits 2^(n-1) s, at most 5 minutes (the
      person's own mistyping, or one guesser);
    - an address: 10 failures free (people behind one NAT mistype too), then the same; an IPv6
      address counts as its /64, which one host usually holds whole;
    - a name from anywhere: after 10 failures each try on it is held up to 2 s first, a pause and
      never a refusal, so guesses from many addresses cannot keep its owner out.
    A success forgives its name, never its address (or one's own account would reset a guesser's
    count). Failures are forgotten an hour after the last; at most KEPT keys are remembered, the
    least recently failed dropped first, so cycling names or addresses cannot grow the table past
    9 MB (measured with 5,000-character names and IPv6 addresses), and an address still failing
    stays remembered. In memory: a restart forgives."""

    FREE = {"pair": 0, "ip": 10, "user": 10}
    LONGEST = {"pair": 300.0, "ip": 300.0, "user": 2.0}
    PAUSES = ("user",)  # kinds that hold a try up rather than refuse it
    KEPT = 30_000
    FORGET = 3600.0

    def __init__(self) -> None:
        self.failures: collections.OrderedDict[str, tuple[int, float]] = collections.OrderedDict()  # (count, last)

    @staticmethod
    def keys(name: str, address: str) -> tuple[str, str, str]:
        name, address = name.lower()[:81], address[:64]  # user names have 80 characters at most
        with contextlib.suppress(ValueError):
            ip = ipaddress.ip_address(address)
            if ip.version == 6 and ip.ipv4_mapped is None:
                address = str(ipaddress.ip_network(f"{ip}/64", strict=False))
        return f"pair:{name} {address}", f"ip:{address}", f"user:{name}"

    def delay(self, key: str, now: float) -> float:
        count, last = self.failures.get(key, (0, 0.0))
        kind = key.partition(":")[0]
        excess = count - self.FREE[kind] if now - last < self.FORGET else 0
        return max(last + min(2.0 ** min(excess - 1, 20), self.LONGEST[kind]) - now, 0.0) if excess > 0 else 0.0

    def wait(self, *keys: str) -> float:
        """How long these keys refuse a try."""
        now = time.monotonic()
        return max([self.delay(k, now) for k in keys if not k.startswith(self.PAUSES)] + [0.0])

    def pause(self, *keys: str) -> float:
        """How long to hold a try up before checking it."""
        now = time.monotonic()
        return max([self.delay(k, now) for k in keys if k.startswith(self.PAUSES)] + [0.0])

    def failed(self, *keys: str) -> None:
        now = time.monotonic()
        for key in keys:
            count, last = self.failures.pop(key, (0, now))
            self.failures[key] = (count + 1 if now - last < self.FORGET else 1, now)
        while len(self.failures) > self.KEPT:
            self.failures.popitem(last=False)

    def succeeded(self, *keys: str) -> None:
        for key in keys:
            if not key.startswith("ip:"):
                self.failures.pop(key, None)


def with_session_cookie(request: Request, response: Response, token: str) -> Response:
    secure = request.url.scheme == "https" or request.app.settings.public_url.startswith("https:")
    response.set_cookie(SESSION_COOKIE, token, max_age=SESSION_TTL, httponly=True, samesite="lax", secure=secure)
    return response


async def page_login_link(request: Request) -> Response:
    """A one-time login link (printed by `tracker demo` and `tracker user link`)."""
    code = request.path_params["code"]
    token = await request.app.writer.submit(lambda conn: redeem_login_link(conn, code))
    if token is None and await identify(request):  # opened again by someone already signed in
        return RedirectResponse("/issues/", status_code=303)
    if token is None:
        return render(request, "login.html", status=403, next="/issues/", user_name="",
                      error="This login link has expired or was used already.")
    return with_session_cookie(request, RedirectResponse("/issues/", status_code=303), token)


async def page_logout(request: Request) -> Response:
    await read_form(request)
    cookie = request.cookies.get(SESSION_COOKIE, "")
    await request.app.writer.submit(lambda conn: end_web_session(conn, cookie))
    response = RedirectResponse("/login", status_code=303)
    response.delete_cookie(SESSION_COOKIE)
    return response


async def page_css(request: Request) -> Response:
    return Response(CSS, media_type="text/css", headers={"Cache-Control": "max-age=3600"})


# -- live: events as they arrive (server-sent events; `tracker tail` reads the same query) ---------

async def page_live(request: Request) -> Response:
    """The newest events, then each new one as it is stored (the script follows /live/events)."""
    store = request.app.store
    newest = await newest_event_id(store)
    rows = await live_lines(await events_after(store, max(newest - 50, 0), 50))
    response = render(request, "live.html", events=list(reversed(rows)), after=newest)
    response.headers["Content-Security-Policy"] = LIVE_CSP
    return response


async def live_lines(rows: list[sqlite3.Row]) -> list[dict[str, Any]]:
    """live_line for each row, in a thread: reading each event's own title means decompressing its
    payload (0.3-1.5 ms for a demo event), which must not hold the event loop for a burst of 100."""
    return await asyncio.to_thread(lambda: [live_line(r) for r in rows])


def live_line(row: sqlite3.Row) -> dict[str, Any]:
    """An event as Live and `tracker tail` list it: its own title and culprit (the issue's are those
    of its first event: `order ord_555 failed` is not `order ord_777 failed`)."""
    ev = decompress_payload(row["payload"])
    return {"id": row["id"], "time": format_datetime(row["received"]), "project": row["project"],
            "level": row["level"], "title": text(ev.get("title"), 200) or row["title"],
            "culprit": text(ev.get("culprit"), 200) or row["culprit"], "issue_title": row["title"],
            "issue_id": row["issue_id"], "event_id": row["event_id"]}


LIVE_CSP = ("default-src 'none'; script-src 'self'; connect-src 'self'; style-src 'self'; "
            "img-src 'self' data:; form-action 'self'; frame-ancestors 'none'; base-uri 'none'")


async def page_favicon(request: Request) -> Response:
    return Response(FAVICON, media_type="image/svg+xml", headers={"Cache-Control": "max-age=86400"})


async def page_live_js(request: Request) -> Response:
    return Response(LIVE_JS, media_type="text/javascript", headers={"Cache-Control": "max-age=3600"})


async def page_live_events(request: Request) -> Response:
    """Server-sent events: each stored event after `after` (or Last-Event-ID), checked every second."""
    raw = request.headers.get("last-event-id") or request.query_params.get("after", "")
    last = int(raw) if raw.isascii() and raw.isdigit() and len(raw) < 19 else 0
    store = request.app.store

    async def stream() -> AsyncIterator[str]:
        nonlocal last
        yield "retry: 2000\n\n"
        quiet = 0
        while True:
            rows = await events_after(store, last, 100)
            for line in await live_lines(rows):
                last = line["id"]
                yield f"id: {last}\nevent: event\ndata: {json.dumps(line)}\n\n"
            quiet = 0 if rows else quiet + 1
            if quiet >= 15:  # a comment now and then keeps proxies from closing an idle stream
                quiet = 0
                yield ": still here\n\n"
            await asyncio.sleep(1.0)
    return StreamingResponse(stream(), media_type="text/event-stream", headers={"X-Accel-Buffering": "no"})


async def page_home(request: Request) -> Response:
    return RedirectResponse("/issues/", status_code=302)


# -- traces and logs: one trace across services; the log lines, searched and followed --------------

async def page_trace(request: Request) -> Response:
    """/traces/<trace_id>/: the trace's errors, transactions and log lines from every project on one
    timeline, and the span waterfall of its transactions."""
    trace_id = normalize_id(request.path_params["trace_id"])
    if trace_id is None:
        return render(request, "error.html", status=404, message="A trace id is 32 hexadecimal digits.")
    view = await trace_view(request.app.store, trace_id)
    if not view["timeline"]:
        return render(request, "error.html", status=404, message="Nothing of this trace is stored.")
    return render(request, "trace.html", t=view, **short_ids(view["errors"]))


def short_ids(errors: list[dict[str, Any]]) -> dict[str, dict[str, str]]:
    """Each error's issue short id (PROJECT-12), by event id."""
    return {"shorts": {e["event_id"]: short_id(e["project_slug"], e["short_id"]) for e in errors}}


async def page_logs(request: Request) -> Response:
    """/logs/: log lines newest first, filtered by project, severity and a search; `live=1` reloads."""
    store, params = request.app.store, request.query_params
    project = await project_by_slug(store, params["project"]) if params.get("project") else None
    level = params.get("level", "")
    query = " ".join(filter(None, [f"severity:{level}" if level else "", params.get("q", "")]))
    try:
        rows, error = await search_logs(store, query, project_ids=[project["id"]] if project else [],
                                        limit=LOG_PAGE), ""
    except SearchError as exc:
        rows, error = [], str(exc)
    logs = [{**dict(r), "attrs": json.loads(r["attributes"])} for r in rows]
    return render(request, "logs.html", logs=logs, error=error, projects=await all_projects(store),
                  f={"project": params.get("project", ""), "level": level, "q": params.get("q", ""),
                     "live": params.get("live") == "1"}, levels=list(SEVERITY_NUMBERS))


LOG_PAGE = 200


# -- charts: server-rendered SVG (no script runs on these pages) -------------------------------

def pretty(value: Any, indent: int | None = None) -> str:
    """A value as readable JSON text (not HTML-safe: autoescape escapes it where it is shown)."""
    if isinstance(value, str):
        return value
    return json.dumps(value, ensure_ascii=False, indent=indent, default=str)


async def page_overview(request: Request) -> Response:
    """A project at a glance for a period: events by level, new and regressed issues, the top
    issues, where errors come from (environment, release), release health and bug lifetimes."""
    store = request.app.store
    project = await project_of_page(request)
    period = request.query_params.get("period", "24h")
    span, size = PERIODS.get(period, PERIODS["24h"])
    now = time.time()
    start = (now - span) // size * size + size
    count = int((now - start) // size) + 1
    events = [dict() for _ in range(count)]  # type: list[dict[str, int]]
    for r in await events_by_level(store, project["id"], start, size):
        events[min(r["slot"], count - 1)][r["level"]] = r["n"]
    changes = [dict() for _ in range(count)]  # type: list[dict[str, int]]
    for r in await new_issues_by_slot(store, project["id"], start, size):
        changes[min(r["slot"], count - 1)]["new"] = r["n"]
    for r in await regressions_by_slot(store, project["id"], start, size):
        changes[min(r["slot"], count - 1)]["regressed"] = r["n"]
    labels = bucket_labels(start, size, count)
    top = await top_issues_by_events(store, project["id"], start)
    top_users = await top_issues_by_users(store, project["id"], start)
    breakdown = await events_by_origin(store, project["id"], start)
    return render(request, "overview.html", project=project, period=period, periods=PERIODS,
                  events_chart=svg_bars(events, CHART_KEYS["level"], labels),
                  issues_chart=svg_bars(changes, CHART_KEYS["issues"], labels),
                  total=sum(sum(b.values()) for b in events), new=sum(b.get("new", 0) for b in changes),
                  regressed=sum(b.get("regressed", 0) for b in changes), labels=labels, top=top,
                  top_users=top_users, breakdown=breakdown,
                  stats=lifetime_stats(*await lifetimes(store, project["id"], now)),
                  health=await health_totals(store, {"project_id": project["id"]}, start),
                  slowest=await slowest_transactions(store, project["id"], start))


async def project_of_page(request: Request) -> sqlite3.Row:
    """The project a settings page's URL names by slug."""
    project = await project_by_slug(request.app.store, request.path_params["slug"])
    if project is None:
        raise PageNotFound("No such project.")

    return project


class PageNotFound(Exception):
    """A dashboard URL that names nothing (no such project): answered with the 404 page."""


PERIODS = {"1h": (3600, 300), "24h": (86400, 3600), "7d": (7 * 86400, 43200), "30d": (30 * 86400, 86400)}


def bucket_labels(start: float, size: int, count: int) -> list[str]:
    fmt = "%H:%M" if size <= 3600 else "%b %d %H:%M" if size < 86400 else "%b %d"
    return [dt.datetime.fromtimestamp(start + i * size, dt.timezone.utc).strftime(fmt) for i in range(count)]


def svg_bars(buckets: list[dict[str, int]], keys: list[str], labels: list[str], height: int = 120,
             bar: int = 22) -> markupsafe.Markup:
    """Stacked bars, one per bucket, a colour per key (CSS `bar-<key>`), on a y-axis from 0 to a
    round peak; every bar segment has its count in `data-value` and a `<title>` for hover (no script),
    and so has each whole bar. Every text is escaped: labels may be event data."""
    totals = [sum(b.get(k, 0) for k in keys) for b in buckets]
    peak = round_up(max(totals + [1]))
    width, parts = len(buckets) * bar, []
    for i, bucket in enumerate(buckets):
        y = float(height)
        parts.append(f'<rect class="hit" x="{i * bar}" y="0" width="{bar}" height="{height}">'
                     f'<title>{html.escape(labels[i])}: {count(totals[i])} in all</title></rect>')
        for key in keys:
            value = bucket.get(key, 0)
            if not value:
                continue
            h = max(value / peak * (height - 4), 1.5)
            y -= h
            parts.append(f'<rect class="bar-{html.escape(key)}" x="{i * bar + 2}" y="{y:.1f}" width="{bar - 4}" '
                         f'height="{h:.1f}" data-bucket="{i}" data-key="{html.escape(key)}" data-value="{value}">'
                         f'<title>{html.escape(labels[i])}: {count(value)} {html.escape(key)}</title></rect>')
    axis = "".join(f"<span>{count(v)}</span>" for v in (peak, peak / 2, 0))
    return markupsafe.Markup(f'<div class="chart-wrap"><div class="yaxis" aria-hidden="true">{axis}</div>'
                             f'<svg class="chart" viewBox="0 0 {width} {height}" preserveAspectRatio="none" '
                             f'role="img" aria-label="{html.escape(labels[0] if labels else "")} to '
                             f'{html.escape(labels[-1] if labels else "")}: {count(sum(totals))} in all">'
                             f'{"".join(parts)}</svg></div>')


def round_up(value: float) -> int:
    """The y-axis top: a round number (2, 4, 5, 6, 8 × 10ⁿ…) at or above a value, even so its half is whole."""
    step = 10 ** max(len(str(int(value))) - 1, 0)
    return next(n * step for n in (1, 2, 4, 5, 6, 8, 10) if n * step >= value and n * step % 2 == 0)


CHART_KEYS = {"level": list(reversed(LEVELS)), "issues": ["new", "regressed"]}


def lifetime_stats(groups: list[sqlite3.Row], resolutions: list[sqlite3.Row]) -> dict[str, Any]:
    """Median time to resolve, open issues by age, per first release (the ten with most issues;
    among equals the one whose issues were seen first)."""
    ages = dict.fromkeys(("< 1 day", "1–7 days", "7–30 days", "> 30 days"), 0)
    releases: dict[str, dict[str, Any]] = {}
    for g in groups:
        if g["age"] is not None:
            ages[list(ages)[g["age"]]] += g["issues"]
        entry = releases.setdefault(g["release"], {"release": g["release"], "issues": 0, "resolved": 0,
                                                   "seen": g["seen"]})
        entry.update(issues=entry["issues"] + g["issues"], resolved=entry["resolved"] + g["resolved"],
                     seen=min(entry["seen"], g["seen"]))
    ttrs: dict[str, list[float]] = {}
    for r in resolutions:
        if r["resolved"]:
            ttrs.setdefault(r["release"], []).append(r["resolved"] - r["first_seen"])
    top = sorted(releases.values(), key=lambda e: (-e["issues"], e["seen"]))[:10]
    return {"median_ttr": duration_words(median([t for values in ttrs.values() for t in values])), "ages": ages,
            "reopened": sum(1 for r in resolutions if r["reopened"]),
            "releases": [{"release": e["release"], "issues": e["issues"], "resolved": e["resolved"] / e["issues"],
                          "ttr": duration_words(median(ttrs.get(e["release"], [])))} for e in top]}


def median(values: list[float]) -> float | None:
    values = sorted(values)
    if not values:
        return None
    middle = len(values) // 2
    return values[middle] if len(values) % 2 else (values[middle - 1] + values[middle]) / 2


def duration_words(seconds: float | None) -> str:
    if seconds is None:
        return "—"
    for unit, size in (("d", 86400), ("h", 3600), ("min", 60)):
        if seconds >= size:
            return f"{seconds / size:.1f} {unit}".replace(".0 ", " ")
    return f"{int(seconds)} s"


async def page_issues(request: Request) -> Response:
    store = request.app.store
    q = request.query_params
    projects = await all_projects(store)
    project = chosen_project(projects, q.get("project", ""))
    status = q.get("status") or "unresolved"
    check_filters(q, status)
    try:
        offset = min(max(int(q.get("offset", 0)), 0), MAX_OFFSET)
    except ValueError:
        offset = 0
    limit, rows, error = 50, [], ""
    try:
        rows = await list_issues(store, project_id=project["id"] if project else None,
                                 query=dashboard_query(q, status), sort=q.get("sort", "date"),
                                 limit=limit + 1, offset=offset)
    except SearchError as exc:
        error = str(exc)
    issues = [{**dict(r), **title_parts(r), "short": short_id(r["project_slug"], r["short_id"])} for r in rows[:limit]]
    environments = await environments_seen(store)
    releases = await releases_seen(store)
    filters = {"project": q.get("project", ""), "status": status, "environment": q.get("environment", ""),
               "release": q.get("release", ""), "q": q.get("q", ""), "sort": q.get("sort", "date")}

    def query(**changes: Any) -> str:
        return urllib.parse.urlencode({k: v for k, v in {**filters, **changes}.items() if v not in ("", None)})

    return render(request, "issues.html", issues=issues, projects=projects, environments=environments,
                  releases=releases, f=filters, offset=offset, limit=limit, more=len(rows) > limit, query=query,
                  error=error, sparks=await issue_sparklines(store, [i["id"] for i in issues]), project=project)


def chosen_project(projects: list[sqlite3.Row], slug: str) -> sqlite3.Row | None:
    """The project a page's ?project= names (None for all); one that names nothing is said so,
    rather than quietly showing everything."""
    project = next((p for p in projects if p["slug"] == slug), None)
    if slug and project is None:
        raise PageNotFound(f"No project {slug[:80]!r}: it may have been renamed; the Projects page lists them.")
    return project


def check_filters(q: Mapping[str, str], status: str) -> None:
    if q.get("sort", "date") not in SORTS:
        raise BadFilter(f"Unknown sort {q['sort'][:80]!r}: sort by {', '.join(SORTS)}.")
    if status not in ISSUE_STATUS_FILTERS:
        raise BadFilter(f"Unknown status {status[:80]!r}: choose {', '.join(ISSUE_STATUS_FILTERS)}.")


ISSUE_STATUS_FILTERS = ("unresolved", "resolved", "ignored", "all")


class BadFilter(Exception):
    """A page's query parameter that makes no sense (an unknown sort): answered 400 with the styled page."""


def dashboard_query(params: Any, status: str) -> str:
    """The filter menus and the search box as one search query."""
    parts = [] if status == "all" or "is:" in params.get("q", "") else [f"is:{status}"]
    for key in ("environment", "release"):
        if params.get(key):
            parts.append(f"{key}:{quoted(params[key])}")
    return " ".join([*parts, params.get("q", "")])


def quoted(value: str) -> str:
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def filter_url(key: str, value: Any, project: str = "") -> str:
    """Where a value that can filter leads: a release to its page, anything else (environment, level,
    user, transaction, trace, a tag) to the issues it matches in the project."""
    value = text(value)
    if key == "release":
        return f"/releases/{urllib.parse.quote(value, safe='')}/"
    params = {"project": project} if project else {}
    if key == "environment":
        params["environment"] = value
    else:
        params["q"] = f"{USER_SEARCH_KEYS.get(key, key)}:{quoted(value)}"
    return "/issues/?" + urllib.parse.urlencode(params)


USER_SEARCH_KEYS = {"id": "user.id", "email": "user.email", "username": "user.username", "ip_address": "user.ip"}


def title_parts(issue: sqlite3.Row) -> dict[str, str]:
    """An error title split into its exception type (shown bold) and the rest."""
    title = issue["title"]
    kind = text(as_dict(json.loads(issue["metadata"] or "{}")).get("type"))
    if issue["type"] == "error" and kind and title.startswith(kind + ": "):
        return {"head": kind, "rest": title[len(kind):]}
    return {"head": title, "rest": ""}


async def issue_sparklines(store: Store, issue_ids: list[int], days: int = 14) -> dict[int, markupsafe.Markup]:
    """Events per day over the last two weeks for a page of issues, in one query."""
    if not issue_ids:
        return {}
    counts = await issue_event_buckets(store, issue_ids, days, 86400)
    return {i: sparkline(v, f"{sum(v)} events in {days} days") for i, v in counts.items()}


def sparkline(values: list[int], label: str) -> markupsafe.Markup:
    """A small trend: bars of equal width, the tallest full height."""
    peak, parts = max(values + [1]), []
    for i, value in enumerate(values):
        h = value / peak * 22 if value else 0
        parts.append(f'<rect x="{i * 5}" y="{24 - max(h, 1):.1f}" width="4" height="{max(h, 1):.1f}" '
                     f'class="{"on" if value else "off"}" data-value="{value}"></rect>')
    return markupsafe.Markup(f'<svg class="spark" viewBox="0 0 {len(values) * 5} 24" role="img" '
                             f'aria-label="{html.escape(label)}">{"".join(parts)}</svg>')


async def page_issue(request: Request) -> Response:
    store = request.app.store
    try:
        issue = await issue_from_path(request)
    except ApiError:
        return error_page(request, 404, "No such issue.")
    row = await issue_event(store, issue["id"], request.path_params.get("event_id", "latest"))
    if row is None and "event_id" in request.path_params:
        return error_page(request, 404, "No such event in this issue.")
    histograms = [{"label": label, "unit": unit,
                   "counts": (await issue_event_buckets(store, [issue["id"]], n, size))[issue["id"]]}
                  for label, unit, n, size in (("24 hours", "hour", 24, 3600), ("30 days", "day", 30, 86400))]
    log_rows = await issue_activity(store, issue["id"])
    activity = [{"words": activity_words(a["kind"], json.loads(a["data"])), "created": a["created"]} for a in log_rows]
    context: dict[str, Any] = {"issue": issue, "short": short_id(issue["project_slug"], issue["short_id"]),
                               "tag_summary": await issue_tag_summary(store, issue["id"]), "ev": None,
                               "histograms": histograms, "status_words": status_words(issue), "activity": activity,
                               "releases": await project_releases(store, issue["project_id"]),
                               "ignore_choices": IGNORE_CHOICES, "lifetime": issue_lifetime(issue, log_rows),
                               **await issue_feedback(store, issue)}
    if row is not None:
        context["attachments"] = await event_attachments(store, issue["project_id"], [row["event_id"]])
        ev = decompress_payload(row["payload"])
        exceptions = list(reversed(ev.get("exception", {}).get("values", [])))  # thrown one first
        frames = primary_frames(ev)
        crash = crash_frame(frames)
        for holder in [*exceptions, *ev.get("threads", {}).get("values", [])]:
            pair_minified_frames(holder)
        context.update(event_errors=[event_error(e) for e in ev.get("errors", [])], map_hints=MAP_HINTS)
        for exc in exceptions:
            exc["blocks"] = frame_blocks((exc.get("stacktrace") or {}).get("frames", []), crash)
        context.update(ev=ev, exceptions=exceptions, nav=await neighbour_events(store, row), crash_frame=crash,
                       thread_blocks=[] if exceptions else frame_blocks(frames, crash))
        context.update(issue_hashes=await issue_hash_list(store, issue), grouping_words=GROUPING_WORDS,
                       suspects=await suspect_commits(store, issue, frames), **await issue_alerts(store, issue["id"]))
        mappings = await project_mappings(store, issue["project_id"])
        sha = await release_sha(store, ev["release"]) if ev.get("release") else None
        for block in [*context["thread_blocks"], *(b for exc in exceptions for b in exc["blocks"])]:
            for fr in block["frames"]:  # always set: an SDK could send keys of these names
                fr.update(source_link=frame_link(fr, mappings, sha), code_link=code_view_url(issue["project_slug"], fr))
        context.update(await event_trace(store, ev))
        report = issue_report(issue, ev, frames, request.app.settings)
        context["report_links"] = report_links(issue["title"], report, mappings, request.app.settings.jira)
    return render(request, "issue.html", **context)


def pair_minified_frames(holder: dict[str, Any]) -> None:
    """Give each frame that a source map rewrote the frame as the SDK sent it (`minified`), so the
    page shows both; every frame gets the key (an SDK could send one of that name)."""
    frames = (holder.get("stacktrace") or {}).get("frames", [])
    raw = as_list(as_dict(holder.get("raw_stacktrace")).get("frames"))  # an SDK could send anything here
    for index, fr in enumerate(frames):
        fr["minified"] = raw[index] if len(raw) == len(frames) and isinstance(raw[index], dict) \
            and as_dict(fr.get("data")).get("symbolicated") else None


# What to do about each source map processing error, under its title on the issue page.
MAP_HINTS = {key: markupsafe.Markup(hint) for key, hint in {
    "js_no_source": "No source map for this file reached this project: neither by the debug id the SDK sent "
                    "(run <code>sentry-cli sourcemaps inject</code> on the build, deploy those files, then "
                    "<code>sentry-cli sourcemaps upload</code>) nor for this event's release and dist at this URL "
                    "(check <code>--url-prefix</code>). A map uploaded after the event does not change it; the next "
                    "event reads as written.",
    "js_invalid_source": "The uploaded map is not a source map the tracker can read (not JSON, or its mappings "
                         "are broken): upload the .map file the bundler wrote.",
    "js_too_large": f"The map holds more than {MAX_MAP_SEGMENTS:,} mappings, or more than "
                    f"{SourceMaps.BUDGET // MIB} MiB once parsed: more than the tracker parses.",
    "js_missing_sources_content": "The map carries no <code>sourcesContent</code> for this file, so no source lines "
                                  "are shown: let sentry-cli rewrite the maps as it uploads them (its default) or "
                                  "build with sources content.",
    "js_invalid_sourcemap_location": "The map has nothing at this line and column: it belongs to another build of "
                                     "the file (deploy and upload the files of one build).",
}.items()}


async def event_trace(store: Store, ev: dict[str, Any]) -> dict[str, Any]:
    """An error's trace for its page: the trace id, how many errors in how many services it holds,
    and the log lines of the trace up to the error."""
    trace_id = normalize_id(as_dict(as_dict(ev.get("contexts")).get("trace")).get("trace_id"))
    if trace_id is None:
        return {}
    return {"trace": {"id": trace_id, **await trace_counts(store, trace_id),
                      "logs": await logs_before(store, trace_id, float(ev.get("timestamp") or time.time()))}}


IGNORE_CHOICES = {"forever": ("forever", {}), "30m": ("for 30 minutes", {"ignoreDuration": 30}),
                  "24h": ("for 24 hours", {"ignoreDuration": 1440}),
                  "10events": ("until 10 more events", {"ignoreCount": 10}),
                  "10users": ("until 10 more users", {"ignoreUserCount": 10})}


def issue_lifetime(issue: sqlite3.Row, log: list[sqlite3.Row]) -> dict[str, Any]:
    """Opened → resolved → reopened, counted from the activity log; how long it has been (or was) open."""
    resolved = [a["created"] for a in log if a["kind"] in RESOLVE_KINDS]
    ended = max(resolved) if issue["status"] == "resolved" and resolved else time.time()
    return {"resolved": len(resolved), "reopened": sum(1 for a in log if a["kind"] == "set_regression"),
            "open_for": duration_words(ended - issue["first_seen"])}


async def issue_feedback(store: Store, issue: sqlite3.Row) -> dict[str, Any]:
    """The issue page's user feedback: the newest 100, each with its screenshots, and the total."""
    rows, total = await issue_feedback_rows(store, issue["id"])
    shots = await event_attachments(store, issue["project_id"], [r["feedback_event_id"] for r in rows
                                                                 if r["feedback_event_id"]])
    return {"feedback_total": total, "feedback": [
        {**dict(r), "attachments": [a for a in shots if a["event_id"] == r["feedback_event_id"]]} for r in rows]}


def frame_blocks(frames: list[dict[str, Any]], crash: dict[str, Any] | None) -> list[dict[str, Any]]:
    """A stack trace newest frame first, as blocks: an open frame (in app, or the crash frame) on its
    own, and each run of library frames as one folded group naming its packages."""
    blocks: list[dict[str, Any]] = []
    for frame in reversed(frames):
        if frame.get("in_app") or frame is crash:
            blocks.append({"frames": [frame], "open": True})
        elif blocks and not blocks[-1]["open"]:
            blocks[-1]["frames"].append(frame)
        else:
            blocks.append({"frames": [frame], "open": False})
    for block in blocks:
        packages: list[str] = []
        for frame in block["frames"]:
            name = text(frame.get("module")) or text(frame.get("filename")).lstrip("./")
            name = re.split(r"[./\\]", name, maxsplit=1)[0] if name else ""
            if name and name not in packages:
                packages.append(name)
        block["packages"] = packages
    return blocks


GROUPING_WORDS = {"exception": "grouped by its exception: type and stack trace",
                  "threads": "grouped by the stack trace of the crashed thread",
                  "stacktrace": "grouped by its stack trace", "message": "grouped by its message template",
                  "fingerprint": "grouped by its fingerprint", "checksum": "grouped by the checksum its SDK sent",
                  "fallback": "nothing to group by, so the fallback hash"}


def issue_report(issue: sqlite3.Row, ev: dict[str, Any], frames: list[dict[str, Any]], settings: Settings) -> str:
    """The text of a ticket filed from an issue: what broke, where, since when, and a way back."""
    crash = crash_frame(frames) or {}
    stack = [f"  {f.get('filename') or f.get('abs_path') or '?'}:{f.get('lineno') or '?'} in {f.get('function') or '?'}"
             for f in reversed(frames[-6:])]
    lines = [issue["title"], issue["culprit"], "",
             f"Tracker issue: {settings.public_url}/issues/{issue['id']}/",
             f"First seen: {format_datetime(issue['first_seen'])}", f"Last seen: {format_datetime(issue['last_seen'])}",
             f"Release: {ev.get('release') or '-'}",
             f"Events: {issue['times_seen']}, users: {issue['user_count']}"]
    if crash:
        lines += ["", f"Crashed in {frame_location(crash)} at line {crash.get('lineno') or '?'}"]
        lines += [f"    {crash['context_line'].strip()}"] if crash.get("context_line") else []
    return "\n".join(lines + (["", "Stack (most recent call first):", *stack] if stack else []))


def report_links(title: str, body: str, mappings: list[sqlite3.Row], jira: dict[str, str]) -> list[tuple[str, str]]:
    """Prefilled "new issue" pages in each mapped repository's tracker and in Jira when configured:
    plain links, so the tracker needs no credentials of theirs."""
    links = []
    for url, provider in dict.fromkeys((m["repository_url"], m["provider"]) for m in mappings):
        page, title_key, body_key = NEW_ISSUE_PAGES[provider]
        links.append((f"{PROVIDERS[provider]} issue ({urllib.parse.urlsplit(url).path.strip('/')})",
                      f"{url}{page}?" + urllib.parse.urlencode({title_key: title, body_key: body})))
    base = jira.get("url", "").rstrip("/")
    if base.startswith(("http://", "https://")) and jira.get("project_id"):
        query = {"pid": jira["project_id"], "issuetype": jira.get("issue_type", "1"), "summary": title,
                 "description": body}
        links.append(("Jira issue", f"{base}/secure/CreateIssueDetails!init.jspa?" + urllib.parse.urlencode(query)))
    return links


NEW_ISSUE_PAGES = {"github": ("/issues/new", "title", "body"),
                   "gitlab": ("/-/issues/new", "issue[title]", "issue[description]")}


async def page_issue_update(request: Request) -> Response:
    """POST from the issue page's action bar: the API's update, then back to the page (303)."""
    async def action(form: dict[str, list[str]]) -> str:
        issue = await issue_from_path(request)
        await update_issues(request, issue["project_id"], [issue["id"]], await person_form_body(request, form))
        return f"/issues/{issue['id']}/"
    return await dashboard_post(request, action)


async def person_form_body(request: Request, form: dict[str, list[str]]) -> dict[str, Any]:
    """form_body, and in the dashboard an issue is assigned only to someone who can sign in to see
    it (a typo in a name was kept silently)."""
    body = form_body(form)
    name = (body.get("assignedTo") or "").strip()
    if name == "me":
        body["assignedTo"] = name = request.state.viewer.name
    if name and not any(u["name"] == name for u in await all_users(request.app.store)):
        raise ApiError(400, f"No user {name!r}: add them under Settings → People first, then assign.")
    return body


def form_body(form: dict[str, list[str]]) -> dict[str, Any]:
    """The action bar's fields as the API's update body, so both go through one validation."""
    fields = last_values(form)
    if "assignedTo" in fields:
        return {"assignedTo": fields["assignedTo"]}
    status = fields.get("status")
    if status == "ignored":
        if fields.get("ignore") not in IGNORE_CHOICES:
            raise ApiError(400, f"ignore must be one of {', '.join(IGNORE_CHOICES)}")
        return {"status": status, "statusDetails": IGNORE_CHOICES[fields["ignore"]][1]}
    return {"status": status, "statusDetails": {"inRelease": fields["inRelease"]} if fields.get("inRelease") else {}}


def last_values(form: dict[str, list[str]]) -> dict[str, str]:
    """A form's fields with one value each (the last, as browsers send repeated names in order)."""
    return {key: values[-1] for key, values in form.items()}


async def dashboard_post(request: Request, action: Callable[[dict[str, list[str]]], Any]) -> Response:
    """A dashboard form POST: refused from another site, a mistake shown as an error page,
    else a 303 to the page the action names."""
    form = await read_form(request)
    try:
        return RedirectResponse(await action(form), status_code=303)
    except (ApiError, IngestError) as exc:
        return error_page(request, exc.status, exc.detail)


async def read_form(request: Request, limit: int = 16 * KIB) -> dict[str, list[str]]:
    """A dashboard form, once it is known to come from the dashboard itself: same-site (Origin and
    Fetch metadata) and carrying the session's CSRF token."""
    if cross_site(request):
        raise FormRefused("Refused: this request came from another site.")
    form = await read_body_form(request, limit)
    viewer: Viewer | None = request.scope.get("state", {}).get("viewer")
    if viewer is None or not hmac.compare_digest(form.pop("csrf", [""])[-1].encode(), viewer.csrf.encode()):
        raise FormRefused("Refused: this form has expired or did not come from this dashboard. Reload the page "
                          "and try again.")
    return form


def cross_site(request: Request) -> bool:
    """Whether a POST came from another site's page (a first wall before the CSRF token; the only
    one for the login form, which has no session yet)."""
    if request.headers.get("sec-fetch-site") == "cross-site":
        return True
    origin = request.headers.get("origin")
    public = urllib.parse.urlsplit(request.app.settings.public_url)
    own = {f"{request.url.scheme}://{request.headers.get('host', '')}", f"{public.scheme}://{public.netloc}"}
    return origin is not None and origin not in own


class FormRefused(Exception):
    """A dashboard POST from another site, or without the signed-in person's CSRF token: a 403 page."""


async def read_body_form(request: Request, limit: int = 16 * KIB) -> dict[str, list[str]]:
    return urllib.parse.parse_qs((await read_body(request, limit)).decode("utf-8", "replace"), keep_blank_values=True)


FormOutcome = tuple[Response | None, dict[str, list[str]], str]


async def page_grouping_rules(request: Request) -> Response:
    """A project's stack trace and fingerprint rules: shown, and saved by a POST from this page
    (a mistake is shown above the text as written, which is kept)."""
    project = await project_of_page(request)
    rules = await request.app.rules.rules_for(project["id"])
    texts, error = [rules.stacktrace_text, rules.fingerprint_text], ""
    if request.method == "POST":
        async def save(form: dict[str, list[str]]) -> None:
            texts[:] = [form.get(name, [""])[-1] for name in ("stacktrace_rules", "fingerprint_rules")]
            await store_rules(request, project["id"], *texts)
        response, _, error = await form_post(request, save, f"/projects/{project['slug']}/grouping/?saved=1",
                                             (RuleError,), 4 * MAX_RULES_TEXT)
        if response:
            return response
    return render(request, "grouping.html", status=400 if error else 200, project=project, error=error,
                  stacktrace_rules=texts[0], fingerprint_rules=texts[1], saved="saved" in request.query_params)


async def form_post(request: Request, apply: Callable[[dict[str, list[str]]], Awaitable[Any]], back: str,
                    mistakes: tuple[type[Exception], ...], limit: int = 16 * KIB) -> FormOutcome:
    """A settings page's POST: refused from another site; else applied and answered with a 303
    back to `back`; or, when it is a mistake, the form as sent and the message to show above it."""
    form = await read_form(request, limit)
    try:
        await apply(form)
        return RedirectResponse(back, status_code=303), form, ""
    except (IngestError, ApiError, *mistakes) as exc:
        return None, form, str(getattr(exc, "detail", exc))


async def page_scrubbing(request: Request) -> Response:
    """A project's data scrubbing settings: shown, and saved by a POST from this page (a mistake is
    shown above the form, which keeps what was sent)."""
    project = await project_of_page(request)
    policy = await project_scrub_policy(request, project["id"])
    outcome: FormOutcome = (None, {}, "")
    if request.method == "POST":
        outcome = await form_post(
            request, lambda form: save_scrub_option(request, project["id"], changed_scrub_option(policy, scrub_form(form))),
            f"/projects/{project['slug']}/scrubbing/?saved=1", (ScrubError,), 64 * KIB)
    response, form, error = outcome
    if response:
        return response
    return render(request, "scrubbing.html", status=400 if error else 200, project=project, error=error,
                  settings=scrub_form(form) if error else policy.as_option(), saved="saved" in request.query_params)


def scrub_form(form: dict[str, list[str]]) -> dict[str, Any]:
    """The scrubbing settings the form sends (a box left unticked is not sent at all)."""
    return {**{name: name in form for name in ("enabled", "defaults", "scrub_ip")},
            **{name: form.get(name, [""])[-1].splitlines() for name in ("sensitive_fields", "safe_fields")}}


async def page_code_mappings(request: Request) -> Response:
    """A project's code mappings: listed, added and deleted by POSTs from this page (a mistake is
    shown above the form, which keeps what was typed)."""
    store = request.app.store
    project = await project_of_page(request)
    response, form, error = await form_post(
        request, lambda form: apply_mapping_form(request, project["id"], last_values(form)),
        f"/projects/{project['slug']}/code-mappings/", (MappingError,)) if request.method == "POST" else (None, {}, "")
    if response:
        return response
    return render(request, "code_mappings.html", status=400 if error else 200, project=project, error=error,
                  form=last_values(form), providers=PROVIDERS, mappings=await project_mappings(store, project["id"]))


async def apply_mapping_form(request: Request, project_id: int, form: dict[str, str]) -> None:
    """Delete the mapping the form names, or add the one it describes."""
    if "delete" in form:
        await request.app.writer.submit(lambda conn: delete_code_mapping(conn, project_id, form["delete"]))
        return
    values = checked_mapping(form)
    await request.app.writer.submit(lambda conn: save_code_mapping(conn, project_id, values))


async def page_code(request: Request) -> Response:
    """Back from code to errors: the issues whose in-app frames pass through a file (and function)."""
    params = request.query_params
    project = await find_project(request.app.store, params.get("project", ""))
    if project is None or not params.get("path"):
        return error_page(request, 404, "Name a project and a file: /code/?project=…&path=…")
    query = code_query(params["path"], params.get("function", ""))
    issues = await list_issues(request.app.store, project_id=project["id"], query=query, sort="date", limit=100)
    return render(request, "code.html", project=project, path=params["path"], function=params.get("function", ""),
                  query=query, issues=issues)


async def page_bulk(request: Request) -> Response:
    """POST from the issue list: resolve, ignore, unresolve, assign or merge the ticked issues."""
    async def action(form: dict[str, list[str]]) -> str:
        ids = [int(i) for i in form.get("id", []) if i.isascii() and i.isdigit() and len(i) < 19]
        rows = await issues_in(request.app.store, ids)
        by_project: dict[int, list[int]] = {}
        for row in rows:
            by_project.setdefault(row["project_id"], []).append(row["id"])
        choice = (form.get("bulk") or [""])[-1]
        if not rows:
            raise ApiError(400, "Tick one or more issues first.")
        if choice == "merge":
            if len(rows) < 2 or len(by_project) != 1:
                raise ApiError(400, "Tick two or more issues of one project to merge them.")
            return f"/issues/{(await merge(request, rows[0]['project_id'], ids))['merge']['parent']}/"
        fields = {"assign": {"assignedTo": form.get("assignedTo", [""])},
                  "ignored": {"status": ["ignored"], "ignore": ["forever"]}}.get(choice, {"status": [choice]})
        for project_id, issue_ids in by_project.items():
            await update_issues(request, project_id, issue_ids, await person_form_body(request, fields))
        return "/issues/?" + (form.get("next") or [""])[-1]
    return await dashboard_post(request, action)


async def page_unmerge(request: Request) -> Response:
    """POST from the issue page's Grouping card: the events with a hash become a new issue, shown next."""
    async def action(form: dict[str, list[str]]) -> str:
        issue = await issue_from_path(request)
        return f"/issues/{await unmerge(request, issue['id'], set(form.get('hash', [])))}/"
    return await dashboard_post(request, action)


async def form_refused(request: Request, exc: Exception) -> Response:
    return error_page(request, 403, str(exc))


async def page_not_found(request: Request, exc: Exception) -> Response:
    """A dashboard URL naming nothing, or no route at all: the styled page (the API answers JSON)."""
    message = str(getattr(exc, "detail", "") if isinstance(exc, HTTPException) else exc)
    if request.url.path.startswith("/api/"):
        return JSONResponse({"detail": message or "Not Found"}, status_code=404)
    return error_page(request, 404, message if message and message != "Not Found" else f"Nothing here: {request.url.path[:200]}")


async def bad_filter(request: Request, exc: Exception) -> Response:
    return error_page(request, 400, str(exc))


def error_page(request: Request, status: int, message: str) -> HTMLResponse:
    """The styled page for a refusal or a miss: a title people read, the code, what happened."""
    title = ERROR_TITLES.get(status) or http.HTTPStatus(status).phrase
    return render(request, "error.html", status=status, code=status, title=title, message=message)


ERROR_TITLES = {400: "Bad request", 401: "Sign in first", 403: "Not allowed", 404: "Not found"}


async def page_issue_events(request: Request) -> Response:
    store = request.app.store
    try:
        issue = await issue_from_path(request)
    except ApiError:
        return error_page(request, 404, "No such issue.")
    q = request.query_params.get("q", "")
    try:
        offset = min(max(int(request.query_params.get("offset", 0)), 0), MAX_OFFSET)
    except ValueError:
        offset = 0
    limit, rows, error = 50, [], ""
    try:
        rows = await search_issue_events(store, issue["id"], q, limit + 1, offset)
    except SearchError as exc:
        error = str(exc)
    events = []
    for row in rows[:limit]:
        ev = decompress_payload(row["payload"])
        events.append({"event_id": row["event_id"], "timestamp": row["timestamp"], "release": row["release"],
                       "environment": row["environment"], "user": user_key(ev.get("user")),
                       "message": first_line(message_text(ev) or ev.get("title", ""), 120)})
    return render(request, "events.html", issue=issue, short=short_id(issue["project_slug"], issue["short_id"]),
                  events=events, q=q, error=error, offset=offset, limit=limit, more=len(rows) > limit)


async def page_event_json(request: Request) -> Response:
    issue_id = path_issue_id(request)
    row = await issue_event(request.app.store, issue_id, request.path_params["event_id"]) if issue_id else None
    if row is None:
        return JSONResponse({"detail": "not found"}, status_code=404)
    return Response(json.dumps(decompress_payload(row["payload"]), indent=2, ensure_ascii=False),
                    media_type="application/json")


async def page_attachment(request: Request) -> Response:
    """/issues/<id>/events/<event_id>/attachments/<attachment_id>/: the file, as a download."""
    return attachment_response(await attachment_of_page(request))


async def attachment_of_page(request: Request) -> sqlite3.Row:
    """The attachment a dashboard URL names: of an event of the issue, or of a feedback on it."""
    issue_id, event_id = path_issue_id(request), normalize_id(request.path_params["event_id"])
    raw = request.path_params["attachment_id"]
    row = None
    if issue_id is not None and event_id and raw.isascii() and raw.isdigit() and len(raw) < 19:
        row = await issue_attachment(request.app.store, issue_id, event_id, int(raw))
    if row is None:
        raise PageNotFound("No such attachment.")
    return row


async def page_attachment_view(request: Request) -> Response:
    """…/attachments/<attachment_id>/view/: a text attachment on a page, escaped, in a <pre>."""
    row = await attachment_of_page(request)
    issue = await get_issue(request.app.store, path_issue_id(request) or 0)
    if not text_viewable(row):
        return error_page(request, 415, "This attachment is not text a page can show; "
                                                                  "download it instead.")
    is_event = await issue_event(request.app.store, issue["id"], row["event_id"])
    return render(request, "attachment.html", issue=issue, short=short_id(issue["project_slug"], issue["short_id"]),
                  a={**dict(row), "size_text": human_size(row["size"])}, is_event=is_event is not None,
                  content=attachment_data(row).decode("utf-8"))


async def page_project_feedback(request: Request) -> Response:
    """/projects/<slug>/feedback/: all of a project's user feedback, with the issue each is about."""
    project = await project_of_page(request)
    rows = await project_feedback(request.app.store, project["id"], 200)
    return render(request, "feedback.html", project=project, feedback=[
        {**dict(r), "short": short_id(project["slug"], r["short_id"]) if r["short_id"] else None} for r in rows])


async def page_releases(request: Request) -> Response:
    store = request.app.store
    projects = await all_projects(store)
    slug = request.query_params.get("project", "")
    project = chosen_project(projects, slug)
    return render(request, "releases.html", projects=projects, project=slug,
                  releases=await release_list(store, project["id"] if project else None))


async def page_release(request: Request) -> Response:
    detail = await release_detail(request.app.store, request.path_params["version"])
    if detail is None:
        return error_page(request, 404, "No such release.")
    files = [{**dict(f), "size_text": human_size(f["size"])}
             for f in await release_files(request.app.store, request.path_params["version"])]
    return render(request, "release.html", r=detail, files=files)


# -- alerts pages: channels with their delivery log, and each project's rules ----------------

async def page_alerts(request: Request) -> Response:
    """Channels (added, tested, deleted here), the delivery log with retries, links to the rules."""
    store = request.app.store
    response, form, error = await form_post(request, lambda form: apply_alerts_form(request, last_values(form)),
                                            "/alerts/", ()) if request.method == "POST" else (None, {}, "")
    if response:
        return response
    channels = await all_channels(store)
    admin = request.scope["state"]["viewer"].role == "admin"
    log = [{**dict(d), "last_error": error_shown(d["last_error"], admin)} for d in await deliveries(store, {}, 100)]
    projects = await all_projects(store)
    return render(request, "alerts.html", status=400 if error else 200, error=error, form=last_values(form),
                  kinds=CHANNEL_KINDS,
                  channels=[{**dict(c), "target": channel_target(c)} for c in channels], deliveries=log,
                  projects=projects)


async def apply_alerts_form(request: Request, form: dict[str, str]) -> None:
    """One of the page's forms: send a test, delete a channel, retry a delivery, or add a channel."""
    store = request.app.store
    if "test" in form or "delete" in form:
        channel = await channel_by_id(store, form.get("test") or form["delete"])
        if channel is None:
            raise ApiError(404, "No such channel.")
        if "test" in form:
            await queue_test(request, channel)
        else:
            await request.app.writer.submit(lambda conn: delete_channel(conn, channel["id"]))
        return
    if "retry" in form:
        outbox_id = int(form["retry"]) if form["retry"].isdigit() else 0
        if not await request.app.writer.submit(lambda conn: retry_delivery(conn, outbox_id)):
            raise ApiError(404, "No dead delivery with that id.")
        request.app.dispatcher.wake.set()
        return
    config: dict[str, Any] = {key: form[key] for key in CHANNEL_FORM_FIELDS if form.get(key, "").strip()}
    config["allow_private"] = bool(form.get("allow_private"))  # a checkbox: sent only when ticked
    await create_channel(request, form.get("kind"), form.get("name", ""), config)


CHANNEL_FORM_FIELDS = ("url", "routing_key", "host", "port", "security", "username", "password", "from", "to",
                       "flavor", "email", "token", "project", "issue_type", "secret")


def channel_target(row: sqlite3.Row) -> str:
    config = masked_config(row["kind"], json.loads(row["config"]))
    if row["kind"] == "email":
        return f"{', '.join(config['to'])} via {config['host']}:{config['port']} ({config['security']})"
    if row["kind"] == "jira":
        return f"{config['url']} · project {config['project']} ({config['flavor']})"
    return str(config.get("url") or config.get("routing_key") or "")


async def page_project_alerts(request: Request) -> Response:
    """A project's alert rules: read as sentences, added from a form, deleted."""
    store = request.app.store
    project = await project_of_page(request)

    async def apply(form: dict[str, list[str]]) -> None:
        if "delete" in form:
            await request.app.writer.submit(lambda conn: delete_rule(conn, project["id"], form["delete"][-1]))
        else:
            await save_rule_body(request, project, rule_from_form(form))
    response, form, error = await form_post(request, apply, f"/projects/{project['slug']}/alerts/", ()) \
        if request.method == "POST" else (None, {}, "")
    if response:
        return response
    rules = [{"id": r["id"], "name": r["name"], "words": rule_words(json.loads(r["rule"]))}
             for r in await project_rules(store, project["id"])]
    return render(request, "project_alerts.html", status=400 if error else 200, project=project, rules=rules,
                  error=error, form=last_values(form), when=form.get("when", []),
                  channels=await all_channels(store), intervals=INTERVALS,
                  frequencies=FREQUENCIES)


def rule_from_form(form: dict[str, list[str]]) -> dict[str, Any]:
    """The rule form's fields as the API's rule body, so both go through one validation."""
    field = {key: values[-1].strip() for key, values in form.items()}
    conditions: list[dict[str, Any]] = [{"id": {"new": FIRST_SEEN, "regression": REGRESSION,
                                                "escalating": REAPPEARED}.get(w, w)} for w in form.get("when", [])]
    for kind, prefix in ((FREQUENCY, "events"), (USER_FREQUENCY, "users")):
        if field.get(f"{prefix}_value"):
            conditions.append({"id": kind, "value": field[f"{prefix}_value"], "interval": field.get(f"{prefix}_interval")})
    filters: list[dict[str, Any]] = []
    if field.get("level"):
        filters.append({"id": LEVEL_FILTER, "match": "gte", "level": field["level"]})
    if field.get("release"):
        filters.append({"id": TAGGED_FILTER, "key": "release", "match": "eq", "value": field["release"]})
    if field.get("tag"):
        key, _, value = field["tag"].partition("=")
        filters.append({"id": TAGGED_FILTER, "key": key.strip(), "match": "eq", "value": value.strip()})
    actions = [{"id": NOTIFY_ALL} if name == "*" else {"id": NOTIFY_SERVICE, "service": name}
               for name in form.get("notify", [])]
    if field.get("jira"):
        actions.append({"id": JIRA_ACTION})
    return {"name": field.get("name", ""), "actionMatch": "any", "filterMatch": "all", "conditions": conditions,
            "filters": filters, "actions": actions, "environment": field.get("environment") or None,
            "frequency": field.get("frequency", "30")}


def rule_words(rule: dict[str, Any]) -> str:
    """A rule as one sentence, for the rules page."""
    conds = [CONDITION_WORDS.get(c["id"]) or
             f"more than {c['value']} {'events' if c['id'] == FREQUENCY else 'users'} in {c['interval']}"
             for c in rule["conditions"]] or ["any event"]
    filters = []
    for f in rule["filters"]:
        if f["id"] == LEVEL_FILTER:
            filters.append(f"level {dict(eq='is', gte='at least', lte='at most')[f['match']]} {SENTRY_LEVELS[f['level']]}")
        elif f["id"] == TAGGED_FILTER:
            filters.append(f"tag {f['key']} {f['match']} {f['value']!r}")
        else:
            filters.append("the event is from the latest release")
    actions = [{NOTIFY_ALL: "notify all channels", JIRA_ACTION: f"create a Jira issue{' in ' + a['service'] if a.get('service') else ''}"}
               .get(a["id"], f"notify {a.get('service')}") for a in rule["actions"]]
    when = f" {rule['actionMatch']} of " if len(conds) > 1 else " "
    sentence = f"When{when}{', '.join(conds)}"
    if rule.get("environment"):
        sentence += f" in {rule['environment']}"
    if filters:
        sentence += f", if {rule['filterMatch']} of: {'; '.join(filters)}"
    return f"{sentence}: {', '.join(actions)}; at most once per {rule['frequency']} min per issue."


CONDITION_WORDS = {FIRST_SEEN: "a new issue", REGRESSION: "a regression", REAPPEARED: "an ignored issue escalates"}


async def page_slo(request: Request) -> Response:
    """A project's objective: its state, burn rate and last day, and a form to set it."""
    store = request.app.store
    project = await project_of_page(request)

    async def apply(form: dict[str, list[str]]) -> None:
        fields = last_values(form)
        try:
            slo = checked_slo({**fields, "objective": float(fields.get("objective") or "nan") / 100,
                               "min_total": fields.get("minTotal")})
        except (AlertConfigError, ValueError) as exc:
            raise ApiError(400, str(exc) if isinstance(exc, AlertConfigError) else "objective: a percentage") from None
        await request.app.writer.submit(lambda conn: save_slo(conn, project["id"], slo))
    response, form, error = await form_post(request, apply, f"/projects/{project['slug']}/slo/", ()) \
        if request.method == "POST" else (None, {}, "")
    if response:
        return response
    slo = await slo_of(store, project["id"])
    history = await slo_history(store, project["id"], time.time() - 86400)

    return render(request, "slo.html", status=400 if error else 200, project=project, slo=slo, history=history,
                  error=error, form=last_values(form), metrics=SLO_METRICS)


async def page_monitors(request: Request) -> Response:
    """Every monitor: its schedule, status, last and next check-in, its last 30 check-ins and its issue."""
    store = request.app.store
    selected = request.query_params.get("project", "")
    projects = await all_projects(store)
    chosen_project(projects, selected)
    monitors = []
    for m in sorted((m for m in await monitors_with_projects(store) if selected in ("", m["project_slug"])),
                    key=lambda m: (m["project_name"], m["slug"])):
        ticks = await monitor_check_ins(store, m["id"], [], 30)
        due, zone = m["next_expected"], monitor_zone(m["timezone"])
        monitors.append({**dict(m), "ticks": ticks[::-1], "words": schedule_words(m["schedule_type"], m["schedule"]),
                         "label": MONITOR_LABELS.get(m["status"], m["status"]),
                         "due": "—" if due is None else f"in {duration_words(due - time.time())}" if due > time.time()
                         else f"{duration_words(time.time() - due)} overdue",
                         "due_local": dt.datetime.fromtimestamp(due, zone).strftime("%a %H:%M %Z") if due else "",
                         "issue": short_id(m["project_slug"], m["issue_number"])
                         if m["issue_number"] and m["issue_status"] != "resolved" else None})
    failing = sum(1 for m in monitors if m["status"] in FAILURES)
    return render(request, "monitors.html", monitors=monitors, failing=failing, projects=projects, selected=selected,
                  labels=MONITOR_LABELS)


MONITOR_LABELS = {"new": "waiting", "in_progress": "in progress", "ok": "ok", "error": "error", "missed": "missed",
                  "timeout": "timeout"}


async def page_projects(request: Request) -> Response:
    store = request.app.store
    settings = request.app.settings
    rows = await projects_with_counts(store)
    drops = await drops_since(store, time.time() - 86400)
    keys = await all_project_keys(store)
    forwarding = dict(await all_forward_status(store, time.time()))
    projects = [{**dict(p), "dsn_keys": [{**dict(k), "dsn": dsn_for(settings, k["public_key"], p["id"])} for k in keys
                                     if k["project_id"] == p["id"]],
                 "drops": [d for d in drops if d["project_id"] == p["id"]],
                 "forward": project_forward(await request.app.options.options(p["id"])),
                 "forwarding": forwarding.get(p["slug"])} for p in rows]
    return render(request, "projects.html", projects=projects)


async def page_new_project(request: Request) -> Response:
    """Create a project (admins): the form, then its setup page with the DSN."""
    if request.state.viewer.role != "admin":
        raise FormRefused("Only an admin can create projects.")
    error, fields = "", {"platform": "python"}
    if request.method == "POST":
        fields = last_values(await read_form(request))
        name, platform = fields.get("name", "").strip(), fields.get("platform", "")
        slug = fields.get("slug", "").strip() or slugify(name)
        try:
            await request.app.writer.submit(lambda conn: create_project(conn, name, slug, SETUP_PLATFORMS.get(platform, "")))
            return RedirectResponse(f"/projects/{slug}/setup/?platform={urllib.parse.quote(platform)}", status_code=303)
        except ValueError as exc:
            error = str(exc).split(" (`")[0]  # the command-line hint does not apply here
    return render(request, "new_project.html", status=400 if error else 200, error=error, fields=fields,
                  platforms=SETUP_SNIPPETS)


async def page_project(request: Request) -> Response:
    """A project's own URL leads to its overview."""
    project = await project_of_page(request)
    return RedirectResponse(f"/projects/{project['slug']}/overview/", status_code=302)


async def page_project_setup(request: Request) -> Response:
    """A project's DSN with a setup snippet per platform, and its first event once there is one
    (setup.js follows /live/events and turns "waiting" into a link when it arrives)."""
    store, settings = request.app.store, request.app.settings
    project = await project_of_page(request)
    keys = [k for k in await project_keys(store, project["id"]) if k["active"]]
    dsn = dsn_for(settings, keys[0]["public_key"], project["id"]) if keys else ""
    chosen = request.query_params.get("platform", "")
    chosen = chosen if chosen in SETUP_SNIPPETS else next(
        (key for key, platform in SETUP_PLATFORMS.items() if platform == project["platform"]), "fastapi")
    snippets = {key: (label, code.replace("{DSN}", dsn).replace("{RELEASE}", f"{project['slug']}@1.0.0"))
                for key, (label, code) in SETUP_SNIPPETS.items()}
    response = render(request, "project_setup.html", project=project, dsn=dsn, snippets=snippets, chosen=chosen,
                      first=await any_project_event(store, project["id"]), after=await newest_event_id(store))
    response.headers["Content-Security-Policy"] = LIVE_CSP
    return response


async def page_setup_js(request: Request) -> Response:
    return Response(SETUP_JS, media_type="text/javascript", headers={"Cache-Control": "max-age=3600"})


async def page_forwarding(request: Request) -> Response:
    """A project's forwarding: where its envelopes also go, how the outbox stands (queued, its oldest
    one's age, sent in the last hour, dropped, the upstream's last error); admins change it here."""
    project = await project_of_page(request)
    outcome: FormOutcome = (None, {}, "")
    if request.method == "POST":
        outcome = await form_post(request, lambda form: store_forward(request, project["id"], forward_form(form)),
                                  f"/projects/{project['slug']}/forwarding/?saved=1", (ForwardError,))
    response, form, error = outcome
    if response:
        return response
    admin = request.scope["state"]["viewer"].role == "admin"
    state = await serialize_forwarding(request, project["id"], admin)
    shown = last_values(form) if error else {"dsn": state["dsn"] or "", "mode": state["mode"] or "mirror",
                                             "allow_private": "on" if state["allowPrivate"] else ""}
    return render(request, "forwarding.html", status=400 if error else 200, project=project, error=error,
                  state=state, form=shown, saved="saved" in request.query_params, modes=FORWARD_MODES)


def forward_form(form: dict[str, list[str]]) -> Forward | None:
    """The forwarding the form asks for; an empty DSN turns it off."""
    dsn = form.get("dsn", [""])[-1].strip()
    return parse_forward({"dsn": dsn, "mode": form.get("mode", ["mirror"])[-1],
                          "allow_private": "allow_private" in form} if dsn else None)


async def page_envelopes(request: Request) -> Response:
    project = await project_of_page(request)
    rows = await logged_envelopes(request.app.store, project["id"])
    return render(request, "envelopes.html", project=project, keep=ENVELOPE_LOG, rate=ENVELOPE_LOG_RATE,
                  envelopes=[{**dict(r), "parts": json.loads(r["items"])} for r in rows])


async def page_envelope(request: Request) -> Response:
    """One envelope: its header, and each item's header, payload (pretty JSON, else text, else a
    note on binary data) and outcome."""
    project = await project_of_page(request)
    raw_id = request.path_params["envelope_id"]
    row = await logged_envelope(request.app.store, project["id"], int(raw_id)) \
        if raw_id.isdigit() and len(raw_id) < 19 else None
    if row is None:
        raise PageNotFound("No such envelope (the log keeps the newest ones for a day).")
    outcomes = json.loads(row["items"])
    items = [{"kind": kind, "size": size, "outcome": outcome, "header": None, "body": None}
             for kind, size, outcome in outcomes]
    for item, (item_header, payload) in zip(items, logged_items(row["body"])):
        event = await stored_event_of(request, project["id"], payload)
        if event is not None and "length" in item_header:  # the log keeps a placeholder: show what the SDK sent
            item_header = {**item_header, "length": item["size"]}
        item.update(header=item_header, body=item_preview(payload), event=event)
    return render(request, "envelope.html", project=project, envelope=row, header=json.loads(row["header"]),
                  items=items, body_kept=row["body"] is not None)


def logged_items(body: bytes | None) -> list[tuple[dict[str, Any], bytes]]:
    return list(parse_envelope(zstandard.decompress(body))[1]) if body is not None else []


def item_preview(payload: bytes) -> str:
    """An item's payload for reading: JSON indented, text as is (first 64 KB), binary as a note."""
    try:
        return json.dumps(json.loads(payload), indent=2, ensure_ascii=False)[:64 * KIB]
    except ValueError:
        pass
    try:
        return payload[:64 * KIB].decode()
    except UnicodeDecodeError:
        return f"({len(payload)} bytes of binary data)"


async def stored_event_of(request: Request, project_id: int, payload: bytes) -> sqlite3.Row | None:
    """The stored event a logged item points to (the log of a project that scrubs keeps no event body)."""
    if not payload.startswith(b'{"stored_as_event"'):
        return None
    return await project_event(request.app.store, project_id, json.loads(payload)["stored_as_event"])


async def page_project_keys(request: Request) -> Response:
    """POST from the projects page: add a DSN key, or disable or enable one (admins only)."""
    project = await project_of_page(request)

    async def action(form: dict[str, list[str]]) -> str:
        fields = last_values(form)
        if "add" in fields:
            await request.app.writer.submit(lambda conn: add_key(conn, project["id"], fields["add"].strip()))
        else:
            key = fields.get("disable") or fields.get("enable") or ""
            await set_key(request, project["id"], key, "enable" in fields, None)
        return "/projects/"
    return await dashboard_post(request, action)


async def page_account(request: Request) -> Response:
    """Who you are; a new password (checked against the current one) ends your other sessions."""
    viewer: Viewer = request.state.viewer
    error, saved = "", request.query_params.get("saved") == "1"
    if request.method == "POST":
        fields = last_values(await read_form(request))
        stored = await user_password(request.app.store, viewer.user_id)
        if not await asyncio.to_thread(password_matches, fields.get("current", ""), stored):
            error = "The current password is not right."
        else:
            try:
                await request.app.writer.submit(lambda conn: set_password(conn, viewer.name, fields.get("new", "")))
                token = await request.app.writer.submit(lambda conn: create_web_session(conn, viewer.user_id))
                return with_session_cookie(request, RedirectResponse("/account/?saved=1", status_code=303), token)
            except ValueError as exc:
                error = str(exc)
    return render(request, "account.html", status=400 if error else 200, error=error, saved=saved)


async def page_settings(request: Request) -> Response:
    """People and API tokens (admins only): a new token or login link is shown once, on this answer."""
    store = request.app.store
    viewer: Viewer = request.state.viewer
    if viewer.role != "admin":
        raise FormRefused("Only an admin can see people and tokens.")
    secret, error = None, ""
    if request.method == "POST":
        try:
            secret = await apply_settings_form(request, last_values(await read_form(request)))
        except ValueError as exc:
            error = str(exc)
    return render(request, "settings.html", status=400 if error else 200, error=error, secret=secret, roles=ROLES,
                  users=await all_users(store), tokens=await all_tokens(store))


async def apply_settings_form(request: Request, form: dict[str, str]) -> dict[str, str] | None:
    """One of the settings forms; what it created that is shown only once ({label, value}), if anything."""
    writer = request.app.writer
    base = request.app.settings.public_url
    if "revoke" in form:
        await writer.submit(lambda conn: revoke_token(conn, form["revoke"]))
        return None
    if "token" in form:  # the admin's own token: it stops working when they are disabled or deleted
        scopes, owner = token_scopes([form.get("scope", "read")]), request.state.viewer.user_id
        token = await writer.submit(lambda conn: create_token(conn, form["token"].strip()[:100], scopes, owner))
        return {"label": f"API token {form['token']} ({scopes})", "value": token}
    if "disable" in form or "enable" in form:
        await writer.submit(lambda conn: set_disabled(conn, form.get("disable", form.get("enable", "")), "disable" in form))
        return None
    if "delete" in form:
        await writer.submit(lambda conn: delete_user(conn, form["delete"]))
        return None
    name = form.get("user") or form.get("link", "")
    if "user" in form:
        await writer.submit(lambda conn: create_user(conn, name.strip(), form.get("role", "member")))
    code = await writer.submit(lambda conn: create_login_link(conn, name.strip()))
    return {"label": f"One-time login link for {name} (valid for an hour)", "value": f"{base}/login/{code}"}


# =============================================================================
# Application
# =============================================================================

def create_app(settings: Settings) -> Tracker:
    """The app with its routes: ingest, the API, then the dashboard's pages."""
    routes = [
        *ingest_routes(), *api_routes(),
        Route("/api/0/{rest:path}", api_not_found, methods=["GET", "POST", "PUT", "DELETE"]),
        Route("/", page_home), Route("/issues/", page_issues), Route("/projects/", page_projects),
        Route("/issues/bulk/", page_bulk, methods=["POST"]),
        Route("/issues/{issue_id}/", page_issue), Route("/issues/{issue_id}/", page_issue_update, methods=["POST"]),
        Route("/issues/{issue_id}/unmerge/", page_unmerge, methods=["POST"]),
        Route("/projects/{slug}/grouping/", page_grouping_rules, methods=["GET", "POST"]),
        Route("/projects/{slug}/scrubbing/", page_scrubbing, methods=["GET", "POST"]),
        Route("/projects/{slug}/code-mappings/", page_code_mappings, methods=["GET", "POST"]), Route("/code/", page_code),
        Route("/issues/{issue_id}/events/", page_issue_events),
        Route("/issues/{issue_id}/events/{event_id}/", page_issue),
        Route("/issues/{issue_id}/events/{event_id}/json", page_event_json),
        Route("/issues/{issue_id}/events/{event_id}/attachments/{attachment_id}/", page_attachment),
        Route("/issues/{issue_id}/events/{event_id}/attachments/{attachment_id}/view/", page_attachment_view),
        Route("/projects/{slug}/feedback/", page_project_feedback),
        Route("/releases/", page_releases), Route("/releases/{version:path}/", page_release),
        Route("/alerts/", page_alerts, methods=["GET", "POST"]),
        Route("/projects/{slug}/alerts/", page_project_alerts, methods=["GET", "POST"]),
        Route("/projects/{slug}/slo/", page_slo, methods=["GET", "POST"]),
        Route("/monitors/", page_monitors),
        Route("/projects/{slug}/overview/", page_overview),
        Route("/static/tracker.css", page_css), Route("/metrics", page_metrics),
        Route("/login", page_login, methods=["GET", "POST"]), Route("/login/{code}", page_login_link),
        Route("/logout", page_logout, methods=["POST"]),
        Route("/account/", page_account, methods=["GET", "POST"]),
        Route("/settings/", page_settings, methods=["GET", "POST"]),
        Route("/projects/{slug}/keys/", page_project_keys, methods=["POST"]),
        Route("/traces/{trace_id}/", page_trace), Route("/logs/", page_logs),
        Route("/live/", page_live), Route("/live/events", page_live_events), Route("/static/live.js", page_live_js),
        Route("/static/favicon.svg", page_favicon),
        Route("/projects/new/", page_new_project, methods=["GET", "POST"]), Route("/projects/{slug}/", page_project),
        Route("/projects/{slug}/setup/", page_project_setup), Route("/static/setup.js", page_setup_js),
        Route("/projects/{slug}/envelopes/", page_envelopes),
        Route("/projects/{slug}/forwarding/", page_forwarding, methods=["GET", "POST"]),
        Route("/projects/{slug}/envelopes/{envelope_id}/", page_envelope),
    ]
    return Tracker(settings, routes=routes, middleware=[Middleware(DashboardGate)],
                   exception_handlers={PageNotFound: page_not_found, 404: page_not_found, BadFilter: bad_filter,
                                       FormRefused: form_refused,
                                       ClientDisconnect: client_gone})


def ingest_routes() -> list[Route]:
    routes = [Route("/stream", stream, methods=["POST", "OPTIONS"])]
    for kind in ("envelope", "store"):
        for suffix in ("/", ""):
            routes.append(Route(f"/api/{{project_id}}/{kind}{suffix}", ingest, methods=["POST", "OPTIONS"]))
    for path in ("/api/{project_id}/cron/{monitor_slug}/{sentry_key}", "/api/{project_id}/cron/{monitor_slug}"):
        for suffix in ("/", ""):
            routes.append(Route(path + suffix, cron_endpoint, methods=["GET", "POST", "OPTIONS"]))
    return routes


def api_routes() -> list[Route]:
    table = [
        ("/api/0/", api_root, None), ("/api/0/organizations/", api_organizations, "read"),
        ("/api/0/projects/{org}/{project}/keys/", api_project_keys, "read"),
        ("/api/0/api-tokens/", api_tokens, "tokens"),
        ("/api/0/organizations/{org}/stats_v2/", api_stats_v2, "read"),
        ("/api/0/organizations/{org}/", api_organization, "read"),
        ("/api/0/organizations/{org}/projects/", api_org_projects, "read"),
        ("/api/0/projects/{org}/{project}/", api_project, "read"),
        ("/api/0/projects/{org}/{project}/issues/", api_project_issues, "events:read"),
        *[(prefix + path, handler, "events:read") for prefix in ISSUE_PREFIXES for path, handler in (
            ("/", api_issue), ("/events/", api_issue_events), ("/events/{event_id}/", api_issue_event),
            ("/activities/", api_issue_activities), ("/hashes/", api_issue_hashes), ("/tags/", api_issue_tags),
            ("/tags/{key}/", api_issue_tag), ("/tags/{key}/values/", api_issue_tag_values))],
        ("/api/0/auth/", api_auth, None),
        ("/api/0/organizations/{org}/issues/", api_org_issues, "events:read"),
        ("/api/0/organizations/{org}/shortids/{short_id}/", api_short_id, "events:read"),
        ("/api/0/organizations/{org}/eventids/{event_id}/", api_event_id, "events:read"),
        ("/api/0/projects/{org}/{project}/events/", api_project_events, "events:read"),
        ("/api/0/projects/{org}/{project}/events/{event_id}/", api_project_event, "events:read"),
        ("/api/0/organizations/{org}/events/", api_org_events, "events:read"),
        ("/api/0/organizations/{org}/members/", api_members, "read"),
        ("/api/0/organizations/{org}/teams/", api_teams, "read"),
        ("/api/0/projects/{org}/{project}/grouping-rules/", api_grouping_rules, "read"),
        ("/api/0/organizations/{org}/code-mappings/", api_code_mappings, "read"),
        ("/api/0/organizations/{org}/repos/", api_org_repos, "read"),
        ("/api/0/organizations/{org}/releases/", api_org_releases, "releases:read"),
        ("/api/0/projects/{org}/{project}/releases/", api_project_releases, "releases:read"),
        ("/api/0/organizations/{org}/releases/{version}/", api_release, "releases:read"),
        ("/api/0/projects/{org}/{project}/releases/{version}/", api_release, "releases:read"),
        ("/api/0/organizations/{org}/releases/{version}/previous-with-commits/", api_previous_release_with_commits,
         "releases:read"),
        ("/api/0/organizations/{org}/releases/{version}/commits/", api_release_commits, "releases:read"),
        ("/api/0/organizations/{org}/releases/{version}/commitfiles/", api_release_commit_files, "releases:read"),
        ("/api/0/organizations/{org}/releases/{version}/deploys/", api_release_deploys, "releases:read"),
        ("/api/0/organizations/{org}/channels/", api_channels, "alerts:read"),
        ("/api/0/organizations/{org}/channels/{channel_id}/", api_channel, "alerts:read"),
        ("/api/0/organizations/{org}/deliveries/", api_deliveries, "alerts:read"),
        ("/api/0/projects/{org}/{project}/rules/", api_rules, "alerts:read"),
        ("/api/0/projects/{org}/{project}/rules/{rule_id}/", api_rule, "alerts:read"),
        ("/api/0/organizations/{org}/sessions/", api_sessions, "read"),
        ("/api/0/organizations/{org}/events-stats/", api_events_stats, "read"),
        ("/api/0/organizations/{org}/trace/{trace_id}/", api_trace, "events:read"),
        ("/api/0/organizations/{org}/trace-logs/", api_trace_logs, "events:read"),
        ("/api/0/projects/{org}/{project}/slo/", api_slo, "alerts:read"),
        ("/api/0/organizations/{org}/monitors/", api_monitors, "read"),
        ("/api/0/organizations/{org}/monitors/{monitor_slug}/", api_monitor, "read"),
        ("/api/0/organizations/{org}/monitors/{monitor_slug}/checkins/", api_monitor_checkins, "read"),
        ("/api/0/projects/{org}/{project}/events/{event_id}/attachments/", api_event_attachments, "events:read"),
        ("/api/0/projects/{org}/{project}/events/{event_id}/attachments/{attachment_id}/", api_event_attachment,
         "events:read"),
        ("/api/0/projects/{org}/{project}/user-feedback/", api_user_feedback, "events:read"),
        ("/api/0/organizations/{org}/chunk-upload/", api_chunk_upload_options, "releases"),
        ("/api/0/organizations/{org}/releases/{version}/files/", api_release_files, "releases:read"),
        ("/api/0/projects/{org}/{project}/releases/{version}/files/", api_release_files, "releases:read"),
        ("/api/0/projects/{org}/{project}/files/artifact-bundles/", api_artifact_bundles, "releases:read"),
        ("/api/0/projects/{org}/{project}/forwarding/", api_project_forwarding, "read"),
    ]
    updates = [("/api/0/projects/{org}/{project}/issues/", api_bulk_update, "issues:triage"),
               *[(prefix + "/", api_update_issue, "issues:triage") for prefix in ISSUE_PREFIXES],
               ("/api/0/organizations/{org}/issues/", api_bulk_update, "issues:triage"),
               ("/api/0/projects/{org}/{project}/", api_update_project, "project:settings"),
               ("/api/0/projects/{org}/{project}/grouping-rules/", api_update_grouping_rules, "project:settings"),
               ("/api/0/organizations/{org}/code-mappings/{mapping_id}/", api_update_code_mapping, "integrations"),
               ("/api/0/organizations/{org}/releases/{version}/", api_update_release, "releases"),
               ("/api/0/projects/{org}/{project}/releases/{version}/", api_update_release, "releases"),
               ("/api/0/organizations/{org}/channels/{channel_id}/", api_update_channel, "integrations"),
               ("/api/0/projects/{org}/{project}/rules/{rule_id}/", api_update_rule, "alerts"),
               ("/api/0/projects/{org}/{project}/slo/", api_update_slo, "alerts"),
               ("/api/0/projects/{org}/{project}/keys/{key_id}/", api_update_key, "keys"),
               ("/api/0/projects/{org}/{project}/forwarding/", api_update_project_forwarding, "integrations")]
    creates = [("/api/0/organizations/{org}/code-mappings/", api_create_code_mapping, "integrations"),
               ("/api/0/organizations/{org}/repos/", api_create_repo, "integrations"),
               ("/api/0/organizations/{org}/releases/", api_create_release, "releases"),
               ("/api/0/projects/{org}/{project}/releases/", api_create_release, "releases"),
               ("/api/0/organizations/{org}/releases/{version}/deploys/", api_create_deploy, "releases"),
               ("/api/0/organizations/{org}/channels/", api_create_channel, "integrations"),
               ("/api/0/organizations/{org}/channels/{channel_id}/test/", api_test_channel, "integrations"),
               ("/api/0/organizations/{org}/deliveries/{delivery_id}/retry/", api_retry_delivery, "alerts"),
               ("/api/0/projects/{org}/{project}/rules/", api_create_rule, "alerts"),
               ("/api/0/projects/{org}/{project}/keys/", api_create_key, "keys"),
               ("/api/0/api-tokens/", api_create_token, "tokens"),
               ("/api/0/projects/{org}/{project}/user-feedback/", api_create_user_feedback, "feedback"),
               ("/api/0/organizations/{org}/chunk-upload/", api_chunk_upload, "releases"),
               ("/api/0/organizations/{org}/artifactbundle/assemble/", api_assemble_bundle, "releases"),
               ("/api/0/organizations/{org}/releases/{version}/assemble/", api_assemble_release, "releases"),
               ("/api/0/organizations/{org}/releases/{version}/files/", api_upload_release_file, "releases"),
               ("/api/0/projects/{org}/{project}/releases/{version}/files/", api_upload_release_file, "releases")]
    return ([Route(path, api(handler, can), methods=["GET"]) for path, handler, can in table]
            + [Route(path, api(handler, can), methods=["PUT"]) for path, handler, can in updates]
            + [Route(path, api(handler, can), methods=["POST"]) for path, handler, can in creates]
            + [route for prefix in ISSUE_PREFIXES for route in (
                Route(prefix + "/hashes/", api(api_unmerge_hashes, "issues:triage"), methods=["DELETE", "POST"]),
                Route(prefix + "/", api(api_delete_issue, "issues:delete"), methods=["DELETE"]))]
            + [
               Route("/api/0/projects/{org}/{project}/issues/", api(api_bulk_delete, "issues:delete"),
                     methods=["DELETE"]),
               Route("/api/0/organizations/{org}/issues/", api(api_bulk_delete, "issues:delete"),
                     methods=["DELETE"]),
               Route("/api/0/organizations/{org}/code-mappings/{mapping_id}/", api(api_delete_code_mapping, "integrations"),
                     methods=["DELETE"]),
               Route("/api/0/organizations/{org}/releases/{version}/", api(api_delete_release, "releases"),
                     methods=["DELETE"]),
               Route("/api/0/organizations/{org}/channels/{channel_id}/", api(api_delete_channel, "integrations"),
                     methods=["DELETE"]),
               Route("/api/0/projects/{org}/{project}/rules/{rule_id}/", api(api_delete_rule, "alerts"),
                     methods=["DELETE"]),
               Route("/api/0/projects/{org}/{project}/slo/", api(api_delete_slo, "alerts"), methods=["DELETE"]),
               Route("/api/0/projects/{org}/{project}/keys/{key_id}/", api(api_delete_key, "keys:delete"),
                     methods=["DELETE"]),
               Route("/api/0/api-tokens/", api(api_revoke_token, "tokens"), methods=["DELETE"]),
               Route("/api/0/api-tokens/{token_id}/", api(api_revoke_token, "tokens"), methods=["DELETE"])])


# every issue route answers under both, for a numeric or a short id (`/organizations/acme/issues/WEB-1/`)
ISSUE_PREFIXES = ("/api/0/issues/{issue_id}", "/api/0/organizations/{org}/issues/{issue_id}")


class Tracker(Starlette):
    """The application: what every handler reaches as `request.app`, typed in one place.

    Settings, the sign-in throttle, the cookie secret and the templates exist from construction;
    the rest opens with the lifespan (`open`) and closes in reverse order of `services` (`close`),
    so the writer outlives every task that submits to it and the store closes last.
    """

    settings: Settings
    throttle: LoginThrottle
    secret: bytes  # signs this process's CSRF tokens
    templates: jinja2.Environment
    writer: Writer  # the one write connection
    preparers: Preparers  # event worker processes
    store: Store  # the read connection
    lookups: Store  # ingest's own: its key, rule and option lookups never wait behind a page's long read
    created: float  # when the database was made (the organization's dateCreated)
    keys: KeyCache
    rules: RulesCache
    options: OptionsCache
    limits: IngestLimits
    drop_flusher: DropFlusher
    dispatcher: Dispatcher
    slo_judge: SloJudge
    retention: Retention
    cron_judge: CronJudge
    forwarder: Forwarder
    services: list[Writer | Preparers | Background]  # started in order, closed in reverse
    background: set[asyncio.Task[Any]]  # fire-and-forget tasks, kept referenced until they finish
    assembling: asyncio.Lock  # one source map upload assembled at a time (its bytes are in memory)

    def __init__(self, settings: Settings, **kwargs: Any) -> None:
        super().__init__(lifespan=Tracker.lifespan, **kwargs)
        self.settings = settings
        self.throttle = LoginThrottle()
        self.secret = secrets.token_bytes(32)
        self.templates = make_templates()

    async def open(self) -> None:
        init_db(self.settings)
        self.background = set()
        self.assembling = asyncio.Lock()
        self.writer = Writer(self.settings.db, self.settings.batch_max)
        self.preparers = Preparers(self.settings)
        self.store, self.lookups = await Store.open(self.settings.db), await Store.open(self.settings.db)
        self.created = await database_created(self.store)
        SOURCE_MAPS.open(self.settings.db)
        self.keys, self.rules, self.options = KeyCache(self.lookups), RulesCache(self.lookups), OptionsCache(self.lookups)
        self.limits = IngestLimits(self.settings)
        self.drop_flusher, self.dispatcher = DropFlusher(self), Dispatcher(self)
        self.slo_judge, self.retention, self.cron_judge = SloJudge(self), Retention(self), CronJudge(self)
        self.forwarder = Forwarder(self)
        self.services = [self.writer, self.preparers, self.dispatcher, self.drop_flusher, self.slo_judge,
                         self.retention, self.cron_judge, self.forwarder]
        for service in self.services:
            service.start()
        settle_heap()

    async def close(self) -> None:
        for service in reversed(self.services):
            await service.close()
        await self.lookups.conn.close()
        await self.store.conn.close()

    @contextlib.asynccontextmanager
    async def lifespan(self) -> AsyncIterator[None]:
        await self.open()
        try:
            yield
        finally:
            await self.close()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """What SDKs post, most of the load, goes straight to its handler: Starlette's middleware and
        router are for the pages and the API (passing through them took a fifth of the event loop's
        CPU per event). An exception other than a client gone reaches uvicorn, which answers 500."""
        if scope["type"] == "http" and scope["method"] in ("POST", "OPTIONS") and (
                match := INGEST_PATH.fullmatch(scope["path"])):
            scope["app"], scope["path_params"] = self, {"project_id": match[1]}
            request = Request(scope, receive)
            try:
                response = await ingest(request)
            except ClientDisconnect as exc:
                response = await client_gone(request, exc)
            return await response(scope, receive, send)
        await super().__call__(scope, receive, send)


INGEST_PATH = re.compile(r"/api/([^/]+)/(?:envelope|store)/?")  # the paths of ingest_routes' `ingest`


def settle_heap() -> None:
    """Once a process has started: its long-lived objects (the module, routes, templates, compiled
    patterns) leave the cyclic collector's generations (gc.freeze), so a full collection no longer
    walks them, and the young generation holds 10,000 objects instead of 700. An envelope allocates
    a few hundred containers that reference counting frees; collecting every 700 allocations cost a
    twentieth of the server's CPU per event, and under a twentieth of that now."""
    gc.freeze()
    gc.set_threshold(10_000, 10, 10)


def init_db(settings: Settings) -> None:
    """Create or migrate the database and the projects the config declares."""
    conn = connect_db(settings.db)
    try:
        migrate(conn)
        PAYLOADS.load(conn)
        apply_batch(conn, [lambda c: ensure_config_projects(c, settings.projects),
                           lambda c: ensure_config_repositories(c, settings.repositories),
                           lambda c: ensure_config_channels(c, settings.channels),
                           lambda c: ensure_config_slos(c, settings.projects)])
    finally:
        conn.close()


# =============================================================================
# CLI
# =============================================================================

async def client_gone(request: Request, exc: Exception) -> Response:
    """A client gone mid-body (or cut off by GuardedHttp's body timeout): no one to answer, and no
    traceback logged for each of a slow-client flood."""
    return Response(status_code=408)


def main(argv: list[str] | None = None) -> None:
    """Run a command; a mistake (a missing file, a bad config, an unopenable database) is one line
    on stderr and exit status 1, never a traceback."""
    parser = build_parser()
    if not (sys.argv[1:] if argv is None else argv):  # `tracker` alone: what it can do
        parser.print_help(sys.stderr)
        raise SystemExit(2)
    args = parser.parse_args(argv)
    args.db = getattr(args, "db", None)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        settings = load_settings(getattr(args, "config", None), db=args.db, url=getattr(args, "url", None),
                                 host=getattr(args, "host", None), port=getattr(args, "port", None),
                                 auth_header=getattr(args, "auth_header", None),
                                 trusted_proxies=getattr(args, "trusted_proxies", None))
        if args.func not in (cmd_serve, cmd_demo):
            point_at_served_db(settings, args)
        args.func(settings, args)
    except (OSError, sqlite3.Error, ValueError) as exc:  # TOMLDecodeError is a ValueError
        raise SystemExit(f"error: {exc}") from None


def point_at_served_db(settings: Settings, args: argparse.Namespace) -> None:
    """A command run beside `tracker demo` acts on the demo's database (unless told otherwise), and
    every command prints DSNs and links with the URL the database's server announced, so a DSN
    printed here reaches the server that runs."""
    if not args.db and settings.db == Settings.db and not Path(settings.db).exists() and Path(DEMO_DB).is_file():
        settings.db = DEMO_DB
        print(f"(using {DEMO_DB}, the demo's database; --db chooses another)", file=sys.stderr)
    if not settings.url:
        settings.url = remembered_public_url(settings.db)


DEMO_DB = "tracker-demo.db"


class OneLineParser(argparse.ArgumentParser):
    """argparse, but a usage mistake is one line (which command, what is wrong, where help is)."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (--help shows the usage)\n")


def build_parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--db", default=argparse.SUPPRESS, help="SQLite file (default ./tracker.db or $TRACKER_DB)")
    common.add_argument("--config", default=argparse.SUPPRESS, help="TOML config file (or $TRACKER_CONFIG)")
    common.add_argument("--url", default=argparse.SUPPRESS, help="public base URL used in DSNs (or $TRACKER_URL)")
    network = argparse.ArgumentParser(add_help=False)
    network.add_argument("--host", default=None, help="address to listen on (default 127.0.0.1)")
    network.add_argument("--port", type=int, default=None, help="port to listen on (default 8000)")
    network.add_argument("--auth-header", default=None, metavar="HEADER",
                         help="trust this header (set by an SSO proxy) to name who is signed in")
    network.add_argument("--trusted-proxies", default=None, metavar="ADDRESSES",
                         help="proxies (addresses or networks, comma-separated) whose X-Forwarded-For is the client")

    parser = OneLineParser(prog="tracker", parents=[common],
                                     description="A self-hosted, Sentry-compatible error tracker.")
    parser.add_argument("--version", action="version", version=f"tracker {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("serve", parents=[common, network], help="run the server").set_defaults(func=cmd_serve)
    sub.add_parser("prepare-worker", parents=[common], help="(started by the server) prepare events for it"
                   ).set_defaults(func=lambda settings, args: run_prepare_worker(settings.db))
    demo = sub.add_parser("demo", parents=[common, network], help="fresh demo database from sample_events/, then serve")
    demo.add_argument("--stream", type=float, nargs="?", const=3.0, default=0.0, metavar="SECONDS",
                      help="keep sending a sample event every few seconds (default 3) while it serves")
    demo.set_defaults(func=cmd_demo)
    project = sub.add_parser("project", help="manage projects").add_subparsers(dest="action", required=True)
    create = project.add_parser("create", parents=[common], help="create a project and print its DSN")
    create.add_argument("name")
    create.add_argument("--slug")
    create.add_argument("--platform")
    create.set_defaults(func=cmd_project_create)
    project.add_parser("list", parents=[common], help="list projects and their DSNs").set_defaults(func=cmd_project_list)
    dsn = project.add_parser("dsn", parents=[common], help="print a project's DSN")
    dsn.add_argument("project", help="slug or id")
    dsn.set_defaults(func=cmd_project_dsn)
    token = sub.add_parser("token", help="manage API tokens").add_subparsers(dest="action", required=True)
    token_create = token.add_parser("create", parents=[common], help="create an API token and print it")
    token_create.add_argument("--name")
    token_create.add_argument("--scopes", default="admin",
                              help="read, write or admin (each includes the ones before), or Sentry's scope names "
                                   "(project:releases,org:read …), each with exactly Sentry's reach")
    token_create.set_defaults(func=cmd_token_create)
    token.add_parser("list", parents=[common], help="list API tokens").set_defaults(func=cmd_token_list)
    token_revoke = token.add_parser("revoke", parents=[common], help="revoke an API token by id")
    token_revoke.add_argument("id", type=int)
    token_revoke.set_defaults(func=cmd_token_revoke)
    user = sub.add_parser("user", help="manage people").add_subparsers(dest="action", required=True)
    for action, func, about in (("create", cmd_user_create, "create a user"),
                                ("passwd", cmd_user_passwd, "set a user's password (ends their sessions and login links)"),
                                ("link", cmd_user_link, "print a one-time login link"),
                                ("disable", cmd_user_disable_enable, "sign a user out everywhere and keep them out"),
                                ("enable", cmd_user_disable_enable, "let a disabled user sign in again"),
                                ("delete", cmd_user_delete, "delete a user, their sessions and API tokens")):
        command = user.add_parser(action, parents=[common], help=about)
        command.add_argument("name")
        if action in ("create", "passwd"):
            command.add_argument("--password", help="at least 10 characters (default: generated and printed)")
        if action == "create":
            command.add_argument("--role", choices=ROLES, default="member")
        command.set_defaults(func=func)
    user.add_parser("list", parents=[common], help="list users").set_defaults(func=cmd_user_list)
    tail = sub.add_parser("tail", parents=[common], help="print events as they arrive (Ctrl-C stops)")
    tail.add_argument("--json", action="store_true", help="one JSON object per line")
    tail.add_argument("--project", help="only this project (slug)")
    tail.add_argument("--last", type=int, default=0, help="start with the last N events")
    tail.set_defaults(func=cmd_tail)
    send = sub.add_parser("send", parents=[common], help="ingest event JSON or envelope files")
    send.add_argument("files", nargs="+")
    send.add_argument("--project", help="project slug or id (default: the first project)")
    send.set_defaults(func=cmd_send)
    backup = sub.add_parser("backup", parents=[common], help="copy the live database to FILE (online backup)")
    backup.add_argument("file")
    backup.add_argument("--force", action="store_true", help="overwrite FILE if it exists")
    backup.set_defaults(func=cmd_backup)
    forward = sub.add_parser("forward", parents=[common], help="re-send a project's stored events to an upstream "
                             "Sentry, GlitchTip or tracker (resumable: run it again to go on)")
    forward.add_argument("--project", required=True, help="project slug")
    forward.add_argument("--to", required=True, metavar="DSN", help="the upstream project's DSN")
    forward.add_argument("--since", help="only events newer than this (30m, 12h, 7d, 2w; default: all)")
    forward.add_argument("--dry-run", action="store_true", help="say what would be sent, send nothing")
    forward.add_argument("--rate", type=float, default=100.0, help="envelopes per second at most (default 100; "
                         "0: as fast as the upstream answers); the upstream's rate limits are obeyed too")
    forward.add_argument("--restart", action="store_true", help="start again from the first event")
    forward.set_defaults(func=cmd_forward)
    sub.add_parser("check", parents=[common], help="integrity and foreign key check; exits 1 on a problem"
                   ).set_defaults(func=cmd_check)
    sub.add_parser("vacuum", parents=[common], help="compact the database (server stopped); enables "
                   "incremental vacuum on old files").set_defaults(func=cmd_vacuum)
    return parser


def cmd_serve(settings: Settings, args: argparse.Namespace) -> None:
    if not print_dsns(settings):
        print("  No projects yet: `tracker project create NAME` prints a DSN.")
    admin = with_db(settings, first_admin)
    if admin:
        print(f"  Created the first user: {admin[0]}, password {admin[1]} (shown once; "
              f"`tracker user passwd {admin[0]}` sets another)")
    if settings.host not in ("127.0.0.1", "localhost", "::1") and not settings.public_url.startswith("https:"):
        print("  Warning: serving beyond this machine without TLS; put a TLS proxy in front (see README: Security).")
    serve(settings)


def print_dsns(settings: Settings) -> int:
    """Print each active DSN key of each project; how many."""
    keys = with_db(settings, active_dsn_keys)
    for row in keys:
        print(f"  DSN {row['slug']:<18} {dsn_for(settings, row['public_key'], row['id'])}")
    return len(keys)


def with_db(settings: Settings, job: Job) -> Any:
    """Run one write job against the database from the command line (outside the server)."""
    def refusing(conn: sqlite3.Connection) -> Any:
        try:
            return job(conn)
        except ValueError as exc:  # a refused command (no such user…): one line, no traceback, all rolled back
            raise SystemExit(f"error: {exc}") from None

    init_db(settings)
    conn = connect_db(settings.db)
    try:
        result = apply_batch(conn, [refusing])[0]
    finally:
        conn.close()
    if isinstance(result, Exception):
        raise SystemExit(f"error: {result}")
    return result


def serve(settings: Settings) -> None:
    proxies = settings.trusted_proxies.strip()
    files = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    bounds = {"header_timeout": float(settings.header_timeout), "body_timeout": float(settings.body_timeout),
              "max_connections": max(min(int(settings.max_connections), files - FD_RESERVE), 1)}
    if bounds["max_connections"] < int(settings.max_connections):
        log.warning("at most %d connections: the file limit is %d (ulimit -n)", bounds["max_connections"], files)
    config = uvicorn.Config(create_app(settings), host=settings.host, port=settings.port,
                           log_level="warning", access_log=False, http=type("TrackerHttp", (GuardedHttp,), bounds),
                           server_header=False,  # names no software to a scanner, one header less per answer
                           proxy_headers=bool(proxies), forwarded_allow_ips=proxies or None)
    with_db(settings, lambda c: remember_public_url(c, settings.public_url))
    print(f"tracker {__version__} serving {settings.public_url}/ (database {settings.db})", flush=True)
    uvicorn.Server(config).run()


FD_RESERVE = 128  # files kept for the database, the workers' pipes, the listening socket (25 open on 2 cores)


class GuardedHttp(HttpToolsProtocol):
    """uvicorn's httptools protocol with the bounds it lacks. Measured before: a 50 MiB header was
    answered 200 after 2 s of CPU, 100,000 headers were accepted, a client sending a byte every few
    seconds was held open for ever, and idle connections past the file limit kept every client out.
    After: a 1 MiB header is answered 431 in 18 ms, a 50 MiB one cut off in 0.3 s, 100,000 headers
    answered 431 in 80 ms, each for 10 ms of the server's CPU at most; the bookkeeping is a few
    attribute writes a request (one timer a connection, moved only to fire sooner).
    - A head over MAX_HEAD bytes or MAX_HEADERS fields is answered 431 and the connection closed
      (its bytes are counted as they arrive: at most one read, 256 KiB, is buffered past the cap).
    - A head must arrive within header_timeout of its first byte (of the connection, for the
      first), its body within body_timeout of the head; else 408 (or, mid-response, a close).
      Between requests uvicorn's keep-alive timeout (5 s) closes an idle connection.
    - Past max_connections a new connection closes the oldest one waiting for a head (idle or
      slow), so idle sockets cannot keep a real client out; if none is idle, the new one is closed.
    uvicorn's own limit_concurrency is not used: it counts idle connections too, so an attacker's
    idle sockets would get real clients 503s."""

    header_timeout = 10.0
    body_timeout = 60.0
    max_connections = 1000

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(OneSend(transport, self.loop))  # type: ignore[arg-type]
        self.opened = time.monotonic()
        self.head_bytes, self.header_count, self.refusal = 0, 0, (0, "")
        self.reading_head = True
        self.between = False  # answered, and waiting for the next request (keep-alive)
        self.due: float | None = None  # when the current phase (head, body, keep-alive) ends (loop time)
        self.deadline: asyncio.TimerHandle | None = None  # the one timer, at or before `due`
        self.set_deadline(self.header_timeout)
        if len(self.connections) > self.max_connections:
            idle = [c for c in self.connections if isinstance(c, GuardedHttp) and c is not self and c.idle()]
            (min(idle, key=lambda c: c.opened) if idle else self).transport.close()

    def connection_lost(self, exc: Exception | None) -> None:
        self.due = None
        if self.deadline is not None:  # not left to hold the connection until it fires
            self.deadline.cancel()
            self.deadline = None
        super().connection_lost(exc)

    def idle(self) -> bool:
        return self.reading_head and (self.cycle is None or self.cycle.response_complete)

    def set_deadline(self, seconds: float | None) -> None:
        """The current phase's deadline. The timer moves only to fire sooner, and when it fires early it
        is set again for what is due then: on a busy connection about once per header_timeout, not
        twice per request (a timer set and cancelled twice was 2% of the event loop under ingest)."""
        self.due = None if seconds is None else self.loop.time() + seconds
        if self.due is not None and (self.deadline is None or self.deadline.when() > self.due):
            if self.deadline is not None:
                self.deadline.cancel()
            self.deadline = self.loop.call_at(self.due, self.check_deadline)

    def check_deadline(self) -> None:
        self.deadline = None
        if self.due is not None and self.loop.time() < self.due:
            self.deadline = self.loop.call_at(self.due, self.check_deadline)
        elif self.due is not None:
            self.timed_out()

    def data_received(self, data: bytes) -> None:
        if self.reading_head:
            self.head_bytes += len(data)
            if self.due is None or self.between:
                self.between = False
                self.set_deadline(self.header_timeout)
        super().data_received(data)
        if self.reading_head and self.head_bytes > MAX_HEAD and not self.transport.is_closing():
            self.refuse(431, f"request header fields larger than {MAX_HEAD} bytes")

    def on_header(self, name: bytes, value: bytes) -> None:
        self.header_count += 1
        if self.header_count > MAX_HEADERS:
            self.refusal = (431, f"more than {MAX_HEADERS} request header fields")
            raise HeadRefused
        super().on_header(name, value)

    def on_headers_complete(self) -> None:
        self.reading_head = False
        self.set_deadline(self.body_timeout)
        super().on_headers_complete()

    def on_message_complete(self) -> None:
        self.reading_head, self.head_bytes, self.header_count = True, 0, 0
        self.set_deadline(None)  # until the answer is sent, or the next request's first byte
        super().on_message_complete()

    def on_response_complete(self) -> None:
        """uvicorn's, with its keep-alive timer folded into the deadline: a connection waiting for its
        next request is closed after timeout_keep_alive, silently, as uvicorn's timer closed it, but
        without a timer made and cancelled for every request (2% of the event loop under ingest)."""
        self.server_state.total_requests += 1
        if self.transport.is_closing():
            return
        self.flow.resume_reading()
        if self.pipeline:  # a pipelined request waits: it starts now
            cycle, app = self.pipeline.pop()
            self._start_asgi_task(cycle, app)
        else:
            self.between = True
            self.set_deadline(self.timeout_keep_alive)

    def send_400_response(self, msg: str) -> None:
        """uvicorn's answer to a parser error, which HeadRefused is too."""
        self.refuse(*(self.refusal if self.refusal[0] else (400, msg)))

    def timed_out(self) -> None:
        self.due = None
        if self.between:  # kept alive long enough: closed, nothing to answer
            self.transport.close()
        elif not self.transport.is_closing():
            self.refuse(408, "request not received in time")

    def refuse(self, status: int, message: str) -> None:
        """Answer and close, unless a response is already on its way (then close only). An app
        still reading the body then sees the client gone (uvicorn drops what it answers)."""
        if self.cycle is None or self.cycle.response_complete or not (self.cycle.response_started or self.pipeline):
            body = message.encode()
            self.transport.write(b"HTTP/1.1 %d %s\r\ncontent-type: text/plain; charset=utf-8\r\n"
                                 b"content-length: %d\r\nconnection: close\r\n\r\n%s"
                                 % (status, http.HTTPStatus(status).phrase.encode(), len(body), body))
        self.transport.close()


class OneSend:
    """A connection's transport whose writes in one turn of the event loop leave in one send. uvicorn
    writes an answer's head and its body apart, and on a socket each write is a system call through
    the kernel's TCP path and a wake-up of the client, made holding the GIL (uvloop): the event
    loop's largest single cost under the ingest bench (13% of its samples, py-spy), one send now.
    What is written goes out at the end of the turn (call_soon), before a close, or at once past
    ONE_SEND_UP_TO bytes: the transport's own buffer then asks uvicorn to wait for a slow reader as
    before, so a response written in one turn is not held here whole."""

    __slots__ = ("transport", "loop", "pending", "size")

    def __init__(self, transport: asyncio.Transport, loop: asyncio.AbstractEventLoop) -> None:
        self.transport, self.loop = transport, loop
        self.pending: list[bytes] = []
        self.size = 0

    def write(self, data: bytes) -> None:
        if not self.pending:
            self.loop.call_soon(self.flush)
        self.pending.append(data)
        self.size += len(data)
        if self.size > ONE_SEND_UP_TO:
            self.flush()

    def flush(self) -> None:
        if self.pending:
            data = b"".join(self.pending)
            self.pending.clear()
            self.size = 0
            if not self.transport.is_closing():
                self.transport.write(data)

    def close(self) -> None:
        self.flush()
        self.transport.close()

    def is_closing(self) -> bool:  # asked after every answer: __getattr__ is a miss and a call
        return self.transport.is_closing()

    def __getattr__(self, name: str) -> Any:  # the rest is the transport's (is_closing, pause_reading, …)
        return getattr(self.transport, name)


ONE_SEND_UP_TO = 64 * KIB  # bytes held for one send (an ingest answer is a few hundred)


MAX_HEAD = 64 * KIB  # request line and headers (nginx 4 × 8 KiB buffers, Node 16 KiB, h11 16 KiB)

MAX_HEADERS = 100  # header fields (Apache's LimitRequestFields); an SDK sends about 10, a browser 20


class HeadRefused(Exception):
    """Raised from the parser's header callback to stop parsing a head with too many fields."""


def cmd_demo(settings: Settings, args: argparse.Namespace) -> None:
    if args.db is None:
        settings.db = DEMO_DB
    if args.stream and not 0.1 <= args.stream <= 3600:
        raise SystemExit("error: --stream takes seconds between events, from 0.1 to 3600")
    with socket.socket(socket.AF_INET6 if ":" in settings.host else socket.AF_INET) as probe:
        try:  # before the demo database is made afresh: it may be the one a running demo serves
            probe.bind((settings.host, settings.port))
        except OSError as exc:
            raise SystemExit(f"error: cannot listen on {settings.host}:{settings.port} ({exc.strerror}); "
                             "is a demo running already? --port chooses another") from None
    alert_log = DemoAlertLog(Path(settings.db).with_suffix(".alerts.log"))
    dsns = load_demo(settings, alert_log.url)
    token = with_db(settings, lambda c: create_token(c, "demo"))
    name, password = with_db(settings, first_admin) or ("admin", "")
    link = with_db(settings, lambda c: create_login_link(c, name, ttl=86400))
    print(f"Demo database {settings.db} with {len(list(sample_dir().glob('*.envelope')))} sample events, cron monitors, "
          f"feedback, a release with commits and a deploy; alerts are delivered to {alert_log.path}.")
    for slug, dsn in dsns.items():
        print(f"  DSN {slug:<18} {dsn}")
    print(f"  API token          {token}")
    print(f"  Sign in            {name} / {password}")
    print(f"  Your own service   tracker project create NAME (in this directory), or Projects & DSNs → New project")
    print(f"\nOpen {settings.public_url}/login/{link} in your browser (signs you in once).\n", flush=True)
    if args.stream:
        threading.Thread(target=demo_stream, args=(settings, dsns, args.stream), daemon=True).start()
    serve(settings)


class DemoAlertLog(http.server.ThreadingHTTPServer):
    """The demo's alert channel: a webhook receiver on this machine that appends each delivery, a
    JSON line, to a file, so the delivery log shows real deliveries and anyone can read what was sent."""

    def __init__(self, path: Path) -> None:
        self.path = path

        class Receiver(http.server.BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 (the name http.server calls)
                body = self.rfile.read(min(int(self.headers.get("content-length") or 0), MIB))
                with path.open("ab") as f:
                    f.write(body.replace(b"\n", b" ") + b"\n")
                self.send_response(200)
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass
        super().__init__(("127.0.0.1", 0), Receiver)
        self.url = f"http://127.0.0.1:{self.server_address[1]}/alerts"
        threading.Thread(target=self.serve_forever, daemon=True).start()


def load_demo(settings: Settings, alert_url: str) -> dict[str, str]:
    """A fresh demo database: a project per service (release name) in the samples, their
    events spread over the last three days so the dashboard looks like a live system; an alert
    channel (before the events, so new issues queue deliveries) and the rest of what the pages show."""
    for suffix in ("", "-wal", "-shm"):
        Path(settings.db + suffix).unlink(missing_ok=True)
    init_db(settings)
    with_db(settings, lambda c: save_channel(c, "demo alert log", "webhook", checked_channel(
        "webhook", "demo alert log", {"url": alert_url, "allow_private": True})))
    by_project: dict[str, list[Path]] = {}
    platforms: dict[str, str] = {}
    for path in sorted(sample_dir().glob("*.envelope")):
        event = next((e for _, e in read_event_file(path)), {})
        slug = slugify(text(event.get("release")).split("@")[0] or "demo")
        by_project.setdefault(slug, []).append(path)
        platforms.setdefault(slug, text(event.get("platform")))
    now = time.time()

    def rebase(path: Path, event: dict[str, Any]) -> None:
        original = parse_timestamp(event.get("timestamp")) or now
        shift = now - random.Random(path.name).uniform(60, 3 * 86400) - original
        event["timestamp"] = original + shift
        for crumb in as_values(event.get("breadcrumbs")):
            ts = parse_timestamp(crumb.get("timestamp"))
            if ts is not None:
                crumb["timestamp"] = ts + shift

    dsns = {}
    busiest = max(by_project, key=lambda s: len(by_project[s]))
    for slug, paths in sorted(by_project.items()):
        project_id, key = with_db(settings, lambda c, s=slug: create_project(c, s, s, platforms[s]))
        dsns[slug] = dsn_for(settings, key, project_id)
        send_files(settings, paths, slug, rebase)
        with_db(settings, lambda c, p=project_id, slo=slug == busiest: demo_health(c, p, slo, now))
    with_db(settings, lambda c: demo_extras(c, busiest, now))
    return dsns


def sample_dir() -> Path:
    """sample_events/ beside this file (a checkout) or under the install prefix (a wheel)."""
    for candidate in (Path(__file__).resolve().parent / "sample_events", Path.cwd() / "sample_events",
                      Path(sys.prefix) / "share" / "tracker" / "sample_events"):
        if candidate.is_dir():
            return candidate
    raise SystemExit("error: sample_events/ not found")


def read_event_file(path: Path) -> list[tuple[dict[str, Any], dict[str, Any]]]:
    """An envelope file, or a bare event JSON file → [(envelope header, event)]."""
    data = path.read_bytes()
    try:
        event = json.loads(data)
        if isinstance(event, dict):
            return [({}, event)]
    except ValueError:
        pass
    header, items = parse_envelope(data, max_items=len(data))
    return [(header, json_object(payload, str(path))) for ih, payload in items if ih.get("type") == "event"]


def send_files(settings: Settings, files: list[Path], project: str | None,
               rebase: Callable[[Path, dict[str, Any]], None] | None = None) -> tuple[int, str]:
    """Ingest event files straight into the database, through the same processing as HTTP:
    (events stored, the slug of the project they went to)."""
    init_db(settings)
    conn = connect_db(settings.db)
    try:
        slugs = {r["id"]: r["slug"] for r in conn.execute("SELECT id, slug FROM projects")}
        projects = {**{str(i): i for i in slugs}, **{slug: i for i, slug in slugs.items()}}
        if project is None and not projects:
            apply_batch(conn, [lambda c: create_project(c, "default")])
            projects, slugs = {"default": 1}, {1: "default"}
        project_id = projects.get(project) if project else min(projects.values())
        if project_id is None:
            raise SystemExit(f"error: no project {project!r} (`tracker project list` lists them)")
        jobs: list[Job] = []
        received = time.time()
        rules = stored_rules(conn.execute(RULES_SQL, (project_id,)).fetchone())
        option = conn.execute("SELECT value FROM project_options WHERE project_id = ? AND key = 'scrub'",
                              (project_id,)).fetchone()
        scrub = scrub_policy(json.loads(option[0]) if option else None)
        for path in files:
            for header, event in read_event_file(path):
                if rebase:
                    rebase(path, event)
                ev = prepare_event(event, project_id=project_id, event_id=normalize_id(header.get("event_id")),
                                   received=received, rules=rules, scrub=scrub)
                jobs.append(deferring(lambda c, ev=ev: store_event(c, ev)))
        results = apply_batch(conn, jobs)
    finally:
        conn.close()
    return sum(1 for r in results if r is True), slugs[project_id]


def demo_health(conn: sqlite3.Connection, project_id: int, with_slo: bool, now: float) -> None:
    """Three days of session aggregates per release (as SDKs send them, through the same parser),
    and on the busiest project two issues resolved a while after they appeared and an error-budget SLO
    with a day of history and a fresh breach."""
    releases = [r[0] for r in conn.execute("SELECT DISTINCT release FROM events WHERE project_id = ? AND release != ''",
                                           (project_id,))] or ["demo@1.0.0"]
    environment = (conn.execute("SELECT environment FROM events WHERE project_id = ? GROUP BY 1 ORDER BY count(*) DESC",
                                (project_id,)).fetchone() or ["production"])[0]  # the events' own, so health has one
    rng, updates = random.Random(project_id), []
    for start in range(minute_of(now - 3 * 86400), minute_of(now), 600):
        release = releases[rng.randrange(len(releases))]
        crashed = int(rng.random() < 0.06) + (3 if now - start < 20 * 60 and with_slo else 0)  # a fresh spike
        aggregate = {"started": start, "exited": rng.randint(40, 160), "errored": int(rng.random() < 0.04),
                     "crashed": crashed, "did": None}
        updates += parse_aggregates({"attrs": {"release": release, "environment": environment},
                                     "aggregates": [aggregate]}, now)
    store_health(conn, project_id, updates)
    if with_slo:
        for hours, issue in zip((3, 9), conn.execute("SELECT * FROM issues WHERE project_id = ? ORDER BY first_seen "
                                                     "LIMIT 2", (project_id,)).fetchall()):
            change_status(conn, issue, "resolved", {}, issue["first_seen"] + hours * 3600)  # bug lifetimes to show
        save_slo(conn, project_id, checked_slo({"name": "Error budget", "objective": 0.001, "window": 10,
                                                "min_total": 10}))
        for minute in range(minute_of(now - 86400), minute_of(now), 60):
            judge_slos(conn, minute, 120)


def demo_extras(conn: sqlite3.Connection, slug: str, now: float) -> None:
    """What the samples' events do not bring: cron monitors (one ok, one missed, one failing) for
    the busiest project, user feedback with a screenshot-like attachment on its latest event, and
    commits and a deploy for its release, each through the writer jobs ingest and the API use."""
    project_id = conn.execute("SELECT id FROM projects WHERE slug = ?", (slug,)).fetchone()[0]
    event = conn.execute("SELECT event_id, release, environment FROM events WHERE project_id = ? ORDER BY timestamp DESC "
                         "LIMIT 1", (project_id,)).fetchone()
    day, hour = (now - 2 * 3600) // 86400 * 86400 + 2 * 3600, now // 3600 * 3600  # the last 02:00, the last hour
    for monitor, schedule, step, last_run, last in (  # ok; failing (its last run failed); stopped 3 h ago: missed
            ("nightly-settlement", "0 2 * * *", 86400, day, "ok"), ("reconcile-payouts", "0 * * * *", 3600, hour, "error"),
            ("refresh-fx-rates", {"type": "interval", "value": 10, "unit": "minute"}, 600, now - 3 * 3600, "ok")):
        for k in range(7, -1, -1):
            record_check_in(conn, project_id, parse_check_in(
                {"monitor_slug": monitor, "status": last if k == 0 else "ok", "duration": 4.2 + k,
                 "environment": event["environment"], "release": event["release"],
                 "monitor_config": {"schedule": schedule, "checkin_margin": 5, "max_runtime": 30}},
                last_run - k * step + 20), 60)
    judge_monitors(conn, now, 60)
    store_feedback(conn, Feedback(project_id, "feedback", event["event_id"], uuid.uuid4().hex, "Lena Fischer",
                                  "lena.fischer@example.de", "I clicked Pay twice and got charged once but the page "
                                  "said it failed. Is my order placed?", "https://shop.example.com/checkout",
                                  created=now - 1800))
    log_text = b"".join(b"%s payments-api INFO capture attempt %d for pay_3Qs2Vb8P\n" % (
        format_datetime(now - 60 * k).encode(), 4 - k) for k in range(3, 0, -1))
    sha, utf8, data = attachment_blob(log_text, zstandard.ZstdCompressor(level=3))
    store_attachment(conn, {"project_id": project_id, "event_id": event["event_id"], "filename": "capture.log",
                            "content_type": "text/plain", "attachment_type": "event.attachment", "size": len(log_text),
                            "sha1": sha, "utf8": utf8, "data": data, "created": now - 1800}, ATTACHMENT_MAX_TOTAL)
    released = conn.execute("SELECT date_created FROM releases WHERE version = ?", (event["release"],)).fetchone()[0] - 600
    commits = [{"sha": hashlib.sha1(message.encode()).hexdigest(), "repository": "acme/payments", "message": message,
                "author_name": author, "author_email": f"{author.split()[0].lower()}@example.com",
                "timestamp": released - 3600 - k * 5400, "files": files}
               for k, (message, author, files) in enumerate((
                   ("Capture: compare against the authorized amount", "Ana Lima", [("payments/service.py", "M")]),
                   ("Retry idempotent captures once", "Jonas Weber", [("payments/api.py", "M")]),
                   ("Bump sentry-sdk", "Ana Lima", [("requirements.txt", "M")])))]
    save_release(conn, event["release"], [project_id], {"date_released": released}, commits, None)
    release_id = conn.execute("SELECT id FROM releases WHERE version = ?", (event["release"],)).fetchone()[0]
    create_deploy(conn, release_id, {"environment": event["environment"], "name": "deploy #412",
                                     "url": "https://ci.example.com/deploys/412", "date_started": released - 300,
                                     "date_finished": released})


def demo_stream(settings: Settings, dsns: dict[str, str], every: float) -> None:
    """`tracker demo --stream S`: a sample event every S seconds (a fresh id and timestamp, now and
    then a new message so a new issue opens and alerts fire), posted to the running server as an
    SDK would, so Live, the charts and the alert log move during a demonstration."""
    samples = sorted(sample_dir().glob("*.envelope"))
    rng = random.Random()
    time.sleep(2)  # the server starts listening
    for n in itertools.count():
        header, event = read_event_file(rng.choice(samples))[0]
        slug = slugify(text(event.get("release")).split("@")[0] or "demo")
        key, project_id = re.fullmatch(r"[a-z]+://([0-9a-f]+)@[^/]+.*/(\d+)", dsns[slug]).groups()
        event.update(event_id=uuid.uuid4().hex, timestamp=time.time())
        if n % 20 == 19:
            event["fingerprint"] = [f"demo-stream-{n}"]
            event["message"] = f"demo stream: order ord_{rng.randint(1000, 9999)} could not be reserved"
            event.pop("exception", None)
        request = urllib.request.Request(f"{settings.public_url}/api/{project_id}/store/", data=json.dumps(event).encode(),
                                         headers={"Content-Type": "application/json",
                                                  "X-Sentry-Auth": f"Sentry sentry_key={key}, sentry_version=7"})
        with contextlib.suppress(OSError):
            urllib.request.urlopen(request, timeout=10).close()
        time.sleep(every)


def cmd_project_create(settings: Settings, args: argparse.Namespace) -> None:
    project_id, key = with_db(settings, lambda c: create_project(c, args.name, args.slug, args.platform or ""))
    print(f"Created project {args.name} (id {project_id}) in {settings.db}. Its DSN:")
    print(dsn_for(settings, key, project_id))


def cmd_project_list(settings: Settings, args: argparse.Namespace) -> None:
    print_dsns(settings)


def cmd_project_dsn(settings: Settings, args: argparse.Namespace) -> None:
    project_id, key = with_db(settings, lambda c: project_dsn(c, args.project))
    print(dsn_for(settings, key, project_id))


def cmd_token_create(settings: Settings, args: argparse.Namespace) -> None:
    try:
        scopes = token_scopes(args.scopes.replace(",", " "))
    except ValueError as exc:
        raise SystemExit(f"error: {exc}") from None
    token = with_db(settings, lambda c: create_token(c, args.name or "", scopes))
    print(f"Created an API token with scopes {scopes} (shown once; use it as SENTRY_AUTH_TOKEN or a Bearer token):")
    print(token)


def cmd_token_list(settings: Settings, args: argparse.Namespace) -> None:
    for row in with_db(settings, lambda c: c.execute("SELECT * FROM api_tokens ORDER BY id").fetchall()):
        print(f"{row['id']:>4}  {row['scopes']:<18} {format_datetime(row['created'])}  {row['name']}")


def cmd_token_revoke(settings: Settings, args: argparse.Namespace) -> None:
    if not with_db(settings, lambda c: c.execute("DELETE FROM api_tokens WHERE id = ?", (args.id,)).rowcount):
        raise SystemExit(f"error: no token {args.id}")
    print(f"Revoked token {args.id}.")


def cmd_user_create(settings: Settings, args: argparse.Namespace) -> None:
    password = args.password or secrets.token_urlsafe(12)
    with_db(settings, lambda c: create_user(c, args.name, args.role, password))
    print(f"Created {args.role} {args.name}" + ("." if args.password else f" with password {password} (shown once)."))


def cmd_user_passwd(settings: Settings, args: argparse.Namespace) -> None:
    password = args.password or secrets.token_urlsafe(12)
    with_db(settings, lambda c: set_password(c, args.name, password))
    print(f"New password for {args.name}" + ("." if args.password else f": {password} (shown once)."))


def cmd_user_link(settings: Settings, args: argparse.Namespace) -> None:
    code = with_db(settings, lambda c: create_login_link(c, args.name))
    print(f"{settings.public_url}/login/{code}  (signs {args.name} in once, within an hour)")


def cmd_user_disable_enable(settings: Settings, args: argparse.Namespace) -> None:
    with_db(settings, lambda c: set_disabled(c, args.name, args.action == "disable"))
    print(f"{args.name} is {args.action}d" + (": signed out, login links and API tokens revoked."
                                             if args.action == "disable" else "."))


def cmd_user_delete(settings: Settings, args: argparse.Namespace) -> None:
    with_db(settings, lambda c: delete_user(c, args.name))
    print(f"Deleted {args.name}: signed out, login links and API tokens revoked.")


def cmd_user_list(settings: Settings, args: argparse.Namespace) -> None:
    for row in with_db(settings, lambda c: c.execute("SELECT * FROM users ORDER BY name").fetchall()):
        print(f"{row['name']:<24} {row['role']:<7} {'password' if row['password'] else 'no password'}"
              + ("  disabled" if row["disabled"] else ""))


def cmd_tail(settings: Settings, args: argparse.Namespace) -> None:
    """Print events as they are stored, a line each (or JSON lines), until interrupted. Reads the
    database file (WAL lets it read beside the server), so it runs on the server's machine."""
    if not Path(settings.db).exists():
        raise SystemExit(f"error: no database at {settings.db}")
    if args.project:
        with_db(settings, lambda c: project_dsn(c, args.project))  # refuses an unknown project in one line
    conn = connect_db(settings.db)
    PAYLOADS.load(conn)
    last = conn.execute("SELECT coalesce(max(id), 0) FROM events").fetchone()[0]
    last = max(last - args.last, 0)
    print(f"Following the events stored in {settings.db} (Ctrl-C stops)", file=sys.stderr, flush=True)
    try:
        while True:
            rows = conn.execute(LIVE_SQL, (last, 500)).fetchall()
            for row in rows:
                last = row["id"]
                if args.project and row["project"] != args.project:
                    continue
                try:
                    line = live_line(row)
                except KeyError:  # compressed with a dictionary the server trained since
                    PAYLOADS.load(conn)
                    line = live_line(row)
                print(json.dumps(line) if args.json else
                      f"{line['time']}  {line['project']:<16} {line['level']:<7} {line['title']}  ({line['culprit']})",
                      flush=True)
            if not rows:
                time.sleep(0.5)
    except KeyboardInterrupt:
        pass
    finally:
        conn.close()


def cmd_send(settings: Settings, args: argparse.Namespace) -> None:
    try:
        stored, slug = send_files(settings, [Path(f) for f in args.files], args.project)
    except (IngestError, OSError) as exc:
        raise SystemExit(f"error: {getattr(exc, 'detail', exc)}") from None
    print(f"Stored {plural(stored, 'new event')} in project {slug}" + ("" if args.project else " (the first; --project chooses)") + ".")


def cmd_backup(settings: Settings, args: argparse.Namespace) -> None:
    """SQLite's online backup, in steps, of one read snapshot: in WAL mode a reader never holds up
    the server's writer, and the snapshot keeps the copy to one moment (a stepped backup without
    it starts over whenever the server commits, so under load it might never end). The copy goes
    to FILE.partial first and is renamed when complete, as a single file (journal_mode=DELETE)."""
    target = Path(args.file)
    if target.exists() and not args.force:
        raise SystemExit(f"error: {target} exists; use --force to overwrite it")
    if not target.parent.is_dir():
        raise SystemExit(f"error: no directory {target.parent} to write {target.name} in")
    partial = target.with_name(target.name + ".partial")
    partial.unlink(missing_ok=True)
    started = time.monotonic()
    source = sqlite3.connect(existing_db(settings), isolation_level=None, timeout=30)
    keep_private(str(partial))  # a backup holds the same secrets as the database
    copy = sqlite3.connect(partial, isolation_level=None)
    try:
        source.execute("BEGIN")
        source.execute("SELECT count(*) FROM sqlite_master").fetchone()  # the snapshot starts here
        source.backup(copy, pages=BACKUP_STEP, sleep=0)
        source.execute("COMMIT")
        copy.execute("PRAGMA journal_mode=DELETE")
    finally:
        copy.close()
        source.close()
    os.replace(partial, target)
    print(f"Backed up {settings.db} to {target}: {megabytes(target)} in {time.monotonic() - started:.1f} s")


def cmd_forward(settings: Settings, args: argparse.Namespace) -> None:
    """Replay stored events to an upstream, oldest first, checkpointed every REPLAY_BATCH events."""
    existing_db(settings)
    init_db(settings)
    conn = connect_db(settings.db)
    try:
        project = conn.execute("SELECT id FROM projects WHERE slug = ?", (args.project,)).fetchone()
        if project is None:
            raise SystemExit(f"error: no project {args.project!r}")
        try:  # the operator's own command: any address, their own network included
            upstream = Upstream(args.to, True, 30)
            since = time.time() - parse_age(args.since) if args.since else 0.0
        except (ForwardError, ValueError) as exc:
            raise SystemExit(f"error: {exc}") from None
        replay = replay_state(conn, project["id"], upstream.dsn, since, args.restart)
        if replay.done:
            print(f"Replay to {upstream.origin} is complete ({replay.sent} events); --restart sends them again.")
            return
        events, attachments, feedback = replay_remaining(conn, replay)
        if args.dry_run:
            print(f"Would send {events} events ({attachments} attachments, {feedback} user feedback) "
                  f"to {upstream.origin}{upstream.path}.")
            return
        if replay.last_id:
            print(f"Resuming: {replay.sent} events sent before, {events} to go.")
        run_replay(conn, upstream, replay, events, args.rate)
    finally:
        conn.close()


def parse_age(value: str) -> float:
    """`30m`, `12h`, `7d`, `2w` → seconds."""
    match = re.fullmatch(r"(\d{1,6})([smhdw])", value.strip())
    if not match:
        raise ValueError(f"--since must be a number and a unit (30m, 12h, 7d, 2w), not {value!r}")
    return int(match[1]) * DURATION_UNITS[match[2]]


def run_replay(conn: sqlite3.Connection, upstream: Upstream, replay: Replay, total: int, rate: float) -> None:
    started, done, refused = time.monotonic(), 0, 0
    save_replay(conn, replay)
    try:
        while batch := replay_batch(conn, replay, REPLAY_BATCH):
            for event in batch:
                header, body = replay_envelope(conn, replay.project_id, event)
                outcome = send_replayed(upstream, header, body, FORWARD_RETRY_DELAYS)
                refused += outcome != "sent"
                if outcome != "sent":
                    print(f"\nevent {event['event_id']}: {outcome}", file=sys.stderr)
                replay.last_id, replay.sent, done = event["id"], replay.sent + (outcome == "sent"), done + 1
                if rate > 0 and (ahead := done / rate - (time.monotonic() - started)) > 0:
                    time.sleep(ahead)
                show_progress(done, total, started)
            save_replay(conn, replay)
    except ReplayStopped as exc:
        save_replay(conn, replay)
        raise SystemExit(f"\nerror: the upstream keeps failing ({exc}); run the same command again to resume") from None
    except KeyboardInterrupt:
        save_replay(conn, replay)
        raise SystemExit("\ninterrupted; run the same command again to resume") from None
    finally:
        upstream.close()
    replay.done = True
    save_replay(conn, replay)
    print(f"\nSent {done - refused} events to {upstream.origin}" + (f"; {refused} refused" if refused else "") + ".")


REPLAY_BATCH = 100  # events per checkpoint: at most this many are sent twice after a kill


def show_progress(done: int, total: int, started: float) -> None:
    """A progress bar on stderr, redrawn at most ten times a second."""
    now = time.monotonic()
    if done != total and now - getattr(show_progress, "drawn", 0.0) < 0.1:
        return
    show_progress.drawn = now  # type: ignore[attr-defined]
    share = done / total if total else 1.0
    rate = done / max(now - started, 1e-6)
    eta = (total - done) / rate if rate else 0
    print(f"\r[{'#' * int(share * 30):<30}] {done:,}/{total:,} events · {rate:,.0f}/s · {eta:,.0f} s left ",
          end="", file=sys.stderr, flush=True)


def existing_db(settings: Settings) -> str:
    if not Path(settings.db).is_file():
        raise SystemExit(f"error: no database at {settings.db}")
    return settings.db


BACKUP_STEP = 4096  # pages copied per backup step (16 MiB of 4 KiB pages)


def megabytes(path: str | Path) -> str:
    return f"{Path(path).stat().st_size / MIB:.1f} MB"


def cmd_check(settings: Settings, args: argparse.Namespace) -> None:
    facts, problems = check_database(existing_db(settings))
    print("\n".join(facts + (problems or ["ok"])))
    if problems:
        raise SystemExit(1)


def check_database(path: str) -> tuple[list[str], list[str]]:
    """(facts, problems) of a database file: its schema version and what it holds, SQLite's
    integrity and foreign key checks. Nothing is written."""
    facts, problems = [f"{path}: {megabytes(path)}"], []
    conn = read_only(path)
    try:
        version = conn.execute("PRAGMA user_version").fetchone()[0]
        facts.append(f"schema version {version} (this tracker's is {len(MIGRATIONS)})")
        if version > len(MIGRATIONS):
            problems.append("the schema is newer than this tracker")
        with contextlib.suppress(sqlite3.DatabaseError):  # a damaged table shows in the checks below
            facts.append(", ".join(f"{conn.execute(f'SELECT count(*) FROM {table}').fetchone()[0]} {table}"
                                   for table in ("projects", "issues", "events") if version) or "no tables yet")
        mode = ("none", "full", "incremental")[conn.execute("PRAGMA auto_vacuum").fetchone()[0]]
        facts.append(f"auto_vacuum {mode}, {conn.execute('PRAGMA freelist_count').fetchone()[0]} free pages")
        try:
            problems += [f"integrity: {r[0]}" for r in conn.execute("PRAGMA integrity_check(100)") if r[0] != "ok"]
            problems += [f"foreign key: {r[0]} row {r[1]} points to a missing {r[2]}"
                         for r in conn.execute("PRAGMA foreign_key_check")]
        except sqlite3.DatabaseError as exc:
            problems.append(f"integrity: {exc}")
    except sqlite3.DatabaseError as exc:
        problems.append(f"unreadable: {exc}")
    finally:
        conn.close()
    return facts, problems


def cmd_vacuum(settings: Settings, args: argparse.Namespace) -> None:
    """Rewrite the file without its free pages, and with auto_vacuum=INCREMENTAL, so that
    retention gives space back from then on (a database created before that keeps its free pages).
    It needs the server stopped: an exclusive lock proves no one else has the file open."""
    conn = sqlite3.connect(existing_db(settings), isolation_level=None, timeout=1)
    try:
        before = megabytes(settings.db)
        try:
            conn.execute("PRAGMA locking_mode=EXCLUSIVE")
            conn.execute("BEGIN EXCLUSIVE")
            conn.execute("COMMIT")
        except sqlite3.OperationalError:
            raise SystemExit(f"error: {settings.db} is in use; stop the server first") from None
        conn.execute("PRAGMA auto_vacuum=INCREMENTAL")
        conn.execute("VACUUM")
    finally:
        conn.close()
    print(f"Vacuumed {settings.db}: {before} → {megabytes(settings.db)}, auto_vacuum incremental")


# =============================================================================
# Templates and static text
# =============================================================================
#
# The dashboard's templates, its stylesheet, its one script and its icon: text, not logic, kept at
# the end (as bottle.py keeps its templates) so that the code above reads without 700 lines of HTML
# in the middle. Python looks these names up when a page is served, not when the functions that
# use them are defined; nothing reads them at import time.

TEMPLATES = {
    "base.html": """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<title>{% block title %}tracker{% endblock %} · tracker</title><link rel="icon" href="/static/favicon.svg"><link rel="stylesheet" href="/static/tracker.css">{% block head %}{% endblock %}</head>
<body><header class="top"><a class="brand" href="/issues/">tracker</a>{% if viewer %}<a href="/issues/">Issues</a><a href="/releases/">Releases</a><a href="/alerts/">Alerts</a><a href="/monitors/">Monitors</a><a href="/projects/">Projects &amp; DSNs</a><a href="/live/">Live</a><a href="/logs/">Logs</a>{% if viewer.role == 'admin' %}<a href="/settings/">Settings</a>{% endif %}
<span class="who"><a href="/account/">{{ viewer.name }}{% if viewer.role == 'admin' %} (admin){% endif %}</a>{% if viewer.via == 'session' %}<form method="post" action="/logout"><input type="hidden" name="csrf" value="{{ csrf }}"><button class="link">Sign out</button></form>{% endif %}</span>{% endif %}</header>
<main>{% block main %}{% endblock %}</main></body></html>""",

    "issues.html": """{% extends "base.html" %}{% block title %}Issues{% endblock %}{% block main %}
<form class="filters" method="get" action="/issues/">
  <label>Project<select name="project"><option value="">All projects</option>
    {% for p in projects %}<option value="{{ p.slug }}" {{ 'selected' if p.slug == f.project }}>{{ p.name }}</option>{% endfor %}</select></label>
  <label>Status<select name="status">{% for s in ['unresolved', 'resolved', 'ignored', 'all'] %}
    <option value="{{ s }}" {{ 'selected' if s == f.status }}>{{ s }}</option>{% endfor %}</select></label>
  <label>Environment<select name="environment"><option value="">All</option>
    {% for e in environments %}<option {{ 'selected' if e == f.environment }}>{{ e }}</option>{% endfor %}</select></label>
  <label>Release<select name="release"><option value="">All</option>
    {% for r in releases %}<option {{ 'selected' if r == f.release }}>{{ r }}</option>{% endfor %}</select></label>
  <label>Sort<select name="sort">{% for key, label in [('date', 'Last seen'), ('new', 'First seen'), ('freq', 'Events'), ('user', 'Users')] %}
    <option value="{{ key }}" {{ 'selected' if key == f.sort }}>{{ label }}</option>{% endfor %}</select></label>
  <label class="search">Search<input type="search" name="q" value="{{ f.q }}" placeholder="service:payments-api user.email:… stack.function:charge"></label>
  <button type="submit">Filter</button>
</form>
{% if project %}<div class="muted filters-note"><a href="/projects/{{ project.slug }}/overview/">{{ project.name }} overview: trends, release health, bug lifetimes</a> · <a href="/projects/{{ project.slug }}/slo/">SLO</a></div>{% endif %}
{% if error %}<div class="card search-error">Search: {{ error }}</div>{% endif %}
{% if issues %}<form id="bulk" class="bulk" method="post" action="/issues/bulk/"><input type="hidden" name="csrf" value="{{ csrf }}"><input type="hidden" name="next" value="{{ query() }}">
  <span class="muted">Ticked issues:</span>
  <button type="submit" name="bulk" value="resolved">Resolve</button><button type="submit" name="bulk" value="ignored" class="secondary">Ignore</button>
  <button type="submit" name="bulk" value="unresolved" class="secondary">Unresolve</button>
  <input name="assignedTo" placeholder="name or email" aria-label="assignee"><button type="submit" name="bulk" value="assign" class="secondary">Assign</button>
  <button type="submit" name="bulk" value="merge" class="secondary">Merge</button></form>{% endif %}
<div class="card p-0">
{% if issues %}
<table class="issues"><thead><tr><th></th><th>Issue</th><th>Level</th><th>14 days</th><th class="num">Events</th><th class="num">Users</th><th>First seen</th><th>Last seen</th><th>Status</th></tr></thead><tbody>
{% for i in issues %}<tr class="row-{{ i.level }}">
  <td><input type="checkbox" name="id" value="{{ i.id }}" form="bulk" aria-label="select {{ i.short }}"></td>
  <td><a class="issue-title" href="/issues/{{ i.id }}/">{{ i.head }}{% if i.rest %}<span class="v">{{ i.rest }}</span>{% endif %}</a>
      <div class="culprit">{{ i.culprit }}</div>
      <div class="muted fs-12">{{ i.short }} · <a href="/issues/?project={{ i.project_slug }}">{{ i.project_name }}</a>{% if i.last_release %} · <a href="{{ filter_url('release', i.last_release) }}">{{ i.last_release }}</a>{% endif %}</div></td>
  <td class="level"><a class="badge lvl-{{ i.level }}" href="{{ filter_url('level', i.level, f.project) }}">{{ i.level }}</a></td>
  <td class="trend">{{ sparks[i.id] }}</td>
  <td class="num events">{{ i.times_seen|count }}</td><td class="num users">{{ i.user_count|count }}</td>
  <td class="first-seen" title="{{ i.first_seen|datetime }}">{{ i.first_seen|ago }}</td>
  <td class="last-seen" title="{{ i.last_seen|datetime }}">{{ i.last_seen|ago }}</td>
  <td class="issue-status"><span class="status">{{ i.status }}</span>{% if i.substatus == 'regressed' %} <span class="badge regressed">regressed</span>{% endif %}</td></tr>
{% endfor %}</tbody></table>
{% else %}<div class="empty">No issues match. {% if not projects %}Create a project to get a DSN: <code>tracker project create NAME</code>.{% else %}Send an event to a DSN from <a href="/projects/">Projects</a>.{% endif %}</div>{% endif %}
</div>
<div class="nav">{% if offset > 0 %}<a href="?{{ query(offset=[offset - limit, 0]|max) }}">← Newer</a>{% endif %}
{% if more %}<a href="?{{ query(offset=offset + limit) }}">Older →</a>{% endif %}</div>
{% endblock %}""",

    "issue.html": """{% extends "base.html" %}{% block title %}{{ issue.title }}{% endblock %}{% block main %}
<div class="card">
  <div class="muted fs-12"><a href="/issues/?project={{ issue.project_slug }}">{{ issue.project_name }}</a> · {{ short }} · <span class="status">{{ issue.status }}</span>{% if issue.substatus == 'regressed' %} <span class="badge regressed">regressed</span>{% endif %}</div>
  <h1><a class="badge lvl-{{ issue.level }}" href="{{ filter_url('level', issue.level, issue.project_slug) }}">{{ issue.level }}</a> {{ issue.title }}</h1>
  <div class="culprit">{{ issue.culprit }}</div>
  <div class="facts">
    <div><b>{{ issue.times_seen|count }}</b><span>{{ 'event' if issue.times_seen == 1 else 'events' }}</span></div>
    <div><b>{{ issue.user_count|count }}</b><span>{{ 'user' if issue.user_count == 1 else 'users' }}</span></div>
    <div><b title="{{ issue.first_seen|datetime }}">{{ issue.first_seen|ago }}</b><span>first seen{% if issue.first_release %} in <a href="{{ filter_url('release', issue.first_release) }}">{{ issue.first_release }}</a>{% endif %}</span></div>
    <div><b title="{{ issue.last_seen|datetime }}">{{ issue.last_seen|ago }}</b><span>last seen{% if issue.last_release %} in <a href="{{ filter_url('release', issue.last_release) }}">{{ issue.last_release }}</a>{% endif %}</span></div>
    {% for h in histograms %}<div class="histogram"><svg viewBox="0 0 {{ h.counts|length * 6 }} 40" preserveAspectRatio="none" role="img" aria-label="events per {{ h.unit }}, last {{ h.label }}">
      {% set top = [h.counts|max, 1]|max %}{% for c in h.counts %}<rect x="{{ loop.index0 * 6 }}" y="{{ 40 - (38 * c / top)|round(1) }}" width="5" height="{{ (38 * c / top)|round(1) if c else 0 }}"><title>{{ c|plural('event') }}</title></rect>{% endfor %}</svg>
      {% set n = h.counts|sum %}<span>{{ n|plural('event') }} in the last {{ h.label }}</span></div>{% endfor %}
  </div>
  {% set act = '/issues/%d/' % issue.id %}
  <div class="actions">
    <span class="state">{{ status_words }} · {% if issue.assignee %}assigned to <b>{{ issue.assignee }}</b>{% else %}unassigned{% endif %}</span>
    <form method="post" action="{{ act }}"><input type="hidden" name="csrf" value="{{ csrf }}"><input type="hidden" name="status" value="resolved"><button>Resolve</button></form>
    {% if releases %}<form method="post" action="{{ act }}"><input type="hidden" name="csrf" value="{{ csrf }}"><input type="hidden" name="status" value="resolvedInNextRelease"><button class="secondary" title="events from {{ releases[0] }} or older keep it resolved">Resolve in next release</button></form>{% endif %}
    <form method="post" action="{{ act }}"><input type="hidden" name="csrf" value="{{ csrf }}"><input type="hidden" name="status" value="resolved"><input name="inRelease" list="releases" required placeholder="release" aria-label="release" size="14"><datalist id="releases">{% for r in releases %}<option value="{{ r }}">{% endfor %}</datalist><button class="secondary">Resolve in release</button></form>
    <form method="post" action="{{ act }}"><input type="hidden" name="csrf" value="{{ csrf }}"><input type="hidden" name="status" value="ignored"><select name="ignore" aria-label="ignore">{% for key, (label, _) in ignore_choices.items() %}<option value="{{ key }}">{{ label }}</option>{% endfor %}</select><button class="secondary">Ignore</button></form>
    {% if issue.status != 'unresolved' %}<form method="post" action="{{ act }}"><input type="hidden" name="csrf" value="{{ csrf }}"><input type="hidden" name="status" value="unresolved"><button class="secondary">Unresolve</button></form>{% endif %}
    <form method="post" action="{{ act }}"><input type="hidden" name="csrf" value="{{ csrf }}"><input name="assignedTo" value="{{ issue.assignee or '' }}" placeholder="name or email" aria-label="assignee" size="16"><button class="secondary">Assign</button></form>
    {% if issue.assignee %}<form method="post" action="{{ act }}"><input type="hidden" name="csrf" value="{{ csrf }}"><input type="hidden" name="assignedTo" value=""><button class="secondary">Unassign</button></form>{% endif %}
  </div>
  {% if report_links %}<div class="report">Report it as{% for label, url in report_links %}<a class="report-link" href="{{ url }}" rel="noopener noreferrer">{{ label }} ↗</a>{% endfor %}</div>{% endif %}
</div>
{% if ev %}
<div class="nav">
  {% for label, key in [('« Oldest', 'oldest'), ('‹ Older', 'previous'), ('Newer ›', 'next'), ('Latest »', 'latest')] %}
    {% if nav[key] and nav[key] != ev.event_id %}<a href="/issues/{{ issue.id }}/events/{{ nav[key] }}/">{{ label }}</a>{% else %}<span class="off">{{ label }}</span>{% endif %}
  {% endfor %}
  <span class="evmeta"><span class="muted">event</span> <span class="mono">{{ ev.event_id[:12] }}</span> <span class="muted">·</span> <span title="{{ ev.timestamp|datetime }}">{{ ev.timestamp|datetime }}</span>
    <span class="muted">· release</span> <b>{% if ev.release %}<a href="{{ filter_url('release', ev.release) }}">{{ ev.release }}</a>{% else %}—{% endif %}</b> <span class="muted">· env</span> <b><a href="{{ filter_url('environment', ev.environment, issue.project_slug) }}">{{ ev.environment }}</a></b></span>
  {% if trace %}<a class="trace-link" href="/traces/{{ trace.id }}/">this trace: {{ trace.errors }} error{{ 's' if trace.errors != 1 }} in {{ trace.services }} service{{ 's' if trace.services != 1 }}</a>{% endif %}
  <a href="/issues/{{ issue.id }}/events/{{ ev.event_id }}/json">Raw JSON</a>
  <a href="/issues/{{ issue.id }}/events/">All events</a>
</div>
<div class="layout"><div>
{% if suspects %}<div class="card suspects"><h2 class="mt-0">Suspect commits</h2>{% for c in suspects %}<div class="commit">
  <span class="mono">{{ c.sha[:12] }}</span> {{ (c.message or '')|truncate(100) }} <span class="muted">· {{ c.author_name or c.author_email or 'unknown author' }} · touched <span class="mono">{{ c.path }}</span> in <a href="/releases/{{ c.version|urlencode }}/">{{ c.version }}</a></span></div>{% endfor %}</div>{% endif %}
{% if trace and trace.logs %}<div class="card trace-logs"><h2 class="mt-0">Log lines of this trace before the error</h2><table class="logs">
{% for l in trace.logs %}<tr><td class="mono nowrap">{{ l.timestamp|timeonly }}</td><td><span class="loglvl ll-{{ l.level }}">{{ l.level }}</span></td><td class="svc nowrap">{{ l.project_slug }}</td><td class="mono log-body">{{ l.body }}</td></tr>{% endfor %}
</table><div class="muted fs-12 mt-6"><a href="/traces/{{ trace.id }}/">the whole trace</a></div></div>{% endif %}
{% if ev.logentry and (ev.logentry.formatted != issue.title or ev.logentry.params) %}<div class="card"><h2 class="mt-0">Message</h2><pre class="block">{{ ev.logentry.formatted }}</pre>
  {% if ev.logentry.message and ev.logentry.message != ev.logentry.formatted %}<div class="muted mono mt-6">template: {{ ev.logentry.message }}{% if ev.logentry.params %} · params: {{ ev.logentry.params|pretty }}{% endif %}</div>{% endif %}</div>{% endif %}
{% macro frame(fr) %}
  <details class="frame {{ 'app' if fr.in_app }} {{ 'crash' if fr is sameas crash_frame }}" {{ 'open' if fr.in_app or fr is sameas crash_frame }}>
    <summary>{{ fr.filename or fr.abs_path or fr.module or '?' }}{% if fr.function %} in <span class="fn">{{ fr.function }}</span>{% endif %}{% if fr.lineno %} at line {{ fr.lineno }}{% if fr.colno %}:{{ fr.colno }}{% endif %}{% endif %}
      {% if fr.in_app %}<span class="tag app">in app</span>{% endif %}{% if fr is sameas crash_frame %}<span class="tag crashtag">{{ 'crashed here' if exceptions else 'captured here' }}</span>{% endif %}
      {% if fr.source_link or fr.code_link %}<span class="links">{% if fr.source_link %}<a class="source-link" href="{{ fr.source_link }}" rel="noopener noreferrer" title="this line in the repository">source ↗</a>{% endif %}{% if fr.code_link %}<a class="code-link" href="{{ fr.code_link }}" title="issues whose stack traces pass through this file">issues in this file</a>{% endif %}</span>{% endif %}</summary>
    {% if fr.minified %}<div class="why minified">minified: <span class="mono">{{ fr.minified.filename or fr.minified.abs_path }}{% if fr.minified.lineno %}:{{ fr.minified.lineno }}{% if fr.minified.colno %}:{{ fr.minified.colno }}{% endif %}{% endif %}{% if fr.minified.function %} in {{ fr.minified.function }}{% endif %}</span> · mapped by <span class="mono">{{ fr.data.sourcemap }}</span> (found by {{ fr.data.resolved_with }})</div>{% endif %}
    {% if fr.data.in_app_rule or fr.data.group_rule %}<div class="why">{% if fr.data.in_app_rule %}{{ 'In app' if fr.in_app else 'Not in app' }} by {{ fr.data.in_app_rule }}{% endif %}{% if fr.data.group_rule %} · {{ 'groups' if fr.data.group else 'left out of grouping' }} by {{ fr.data.group_rule }}{% endif %}</div>{% endif %}
    {% if fr.context_line %}<pre class="ctx">{% for number, line, current in fr|numbered_context %}<span{% if current %} class="hl"{% endif %}><i>{{ number if number is not none else '' }}</i>{{ line }}</span>{% endfor %}</pre>{% endif %}
    {% if fr.vars %}<table class="kv vars">{% for k, v in fr.vars.items() %}<tr><td>{{ k }}</td><td><div class="v">{{ v|pretty }}</div></td></tr>{% endfor %}</table>{% endif %}
  </details>
{%- endmacro %}
{% macro frames(blocks) %}{% for block in blocks %}
  {% if block.open or block.frames|length == 1 %}{{ frame(block.frames[0]) }}
  {% else %}<details class="frames"><summary>{{ block.frames|length }} library frames{% if block.packages %} · {{ block.packages[:4]|join(', ') }}{% if block.packages|length > 4 %}, …{% endif %}{% endif %}</summary>
    {% for fr in block.frames %}{{ frame(fr) }}{% endfor %}</details>{% endif %}
{% endfor %}{% endmacro %}
{% if event_errors %}<div class="card processing-errors" id="processing-errors"><h2 class="mt-0">Processing errors <span class="muted fw-normal fs-13">why parts of this event read as they were sent</span></h2><ul>
  {% for e in event_errors %}<li><b>{{ e.message }}</b> <span class="mono muted">{{ e.type }}</span>{% for k, v in e.data.items() %} · {{ k }} <span class="mono">{{ v }}</span>{% endfor %}{% if e.type in map_hints %}<div class="muted">{{ map_hints[e.type] }}</div>{% endif %}</li>{% endfor %}</ul></div>{% endif %}
{% if thread_blocks %}<div class="card"><h2 class="mt-0">Stack trace</h2>{{ frames(thread_blocks) }}</div>{% endif %}
{% for exc in exceptions %}
<div class="card">
  <div class="exc-head"><span class="type">{{ exc.type or 'Error' }}</span>{% if exc.value %}: {{ exc.value }}{% endif %}</div>
  <div class="mechanism">{% if exc.module %}{{ exc.module }} · {% endif %}{% if exc.mechanism %}mechanism {{ exc.mechanism.type }}{% if exc.mechanism.handled is false %} · <b class="unhandled">unhandled</b>{% elif exc.mechanism.handled %} · handled{% endif %}{% endif %}{% if not loop.first %} · led to the exception above{% endif %}</div>
  {{ frames(exc.blocks) }}
  {% if not exc.blocks %}<div class="muted">No stack trace was sent with this exception.</div>{% endif %}
</div>{% endfor %}
{% macro attachment_links(a) %}<span class="nowrap">{% set base = '/issues/%d/events/%s/attachments/%d/' % (issue.id, a.event_id, a.id) %}{% if a.viewable %}<a class="view-attachment" href="{{ base }}view/">view</a> · {% endif %}<a class="download-attachment" href="{{ base }}">download</a></span>{% endmacro %}
{% if attachments %}<div class="card attachments" id="attachments"><h2 class="mt-0">Attachments <span class="muted fw-normal fs-13">sent with this event</span></h2>
  <table><thead><tr><th>File</th><th>Type</th><th class="num">Size</th><th></th></tr></thead><tbody>
  {% for a in attachments %}<tr><td class="mono">{{ a.filename }}</td><td>{{ a.content_type }}{% if a.attachment_type != 'event.attachment' %} <span class="muted">· {{ a.attachment_type }}</span>{% endif %}</td>
    <td class="num nowrap">{{ a.size_text }}</td><td>{{ attachment_links(a) }}</td></tr>{% endfor %}</tbody></table></div>{% endif %}
{% if feedback %}<div class="card feedback" id="feedback"><h2 class="mt-0">User feedback <span class="muted fw-normal fs-13">{{ feedback_total }} · newest first · <a href="/projects/{{ issue.project_slug }}/feedback/">all of {{ issue.project_name }}</a></span></h2>
  {% for fb in feedback %}<div class="feedback-entry"><div><b>{{ fb.name or 'Anonymous' }}</b>{% if fb.email %} <span class="mono">{{ fb.email }}</span>{% endif %}
    <span class="muted" title="{{ fb.created|datetime }}">· {{ fb.created|ago }}{% if fb.source == 'user_report' %} · user report{% endif %}{% if fb.event_id %} · on <a href="/issues/{{ issue.id }}/events/{{ fb.event_id }}/">event {{ fb.event_id[:12] }}</a>{% endif %}</span></div>
    <div class="message">{{ fb.message }}</div>{% if fb.url %}<div class="muted mono fs-12 break-all">{{ fb.url }}</div>{% endif %}
    {% for a in fb.attachments %}<div class="fs-12-5">{{ a.filename }} <span class="muted">{{ a.size_text }}</span> {{ attachment_links(a) }}</div>{% endfor %}</div>{% endfor %}</div>{% endif %}
{% if ev.request %}<div class="card"><h2 class="mt-0">Request</h2>
  <div class="mono mb-8"><b>{{ ev.request.method or 'GET' }}</b> {{ ev.request.url }}</div>
  {% if ev.request.query_string %}<h4>Query</h4><table class="kv">{% for k, v in ev.request.query_string %}<tr><td>{{ k }}</td><td>{{ v }}</td></tr>{% endfor %}</table>{% endif %}
  {% if ev.request.data %}<h4>Body</h4><pre class="block">{{ ev.request.data|pretty(2) }}</pre>{% endif %}
  {% if ev.request.headers %}<h4>Headers</h4><table class="kv">{% for k, v in ev.request.headers %}<tr><td>{{ k }}</td><td>{{ v }}</td></tr>{% endfor %}</table>{% endif %}
  {% if ev.request.cookies %}<h4>Cookies</h4>{% if ev.request.cookies is mapping %}<table class="kv">{% for k, v in ev.request.cookies.items() %}<tr><td>{{ k }}</td><td>{{ v|pretty }}</td></tr>{% endfor %}</table>{% else %}<pre class="block">{{ ev.request.cookies|pretty }}</pre>{% endif %}{% endif %}
  {% if ev.request.env %}<h4>Environment</h4><table class="kv">{% for k, v in ev.request.env.items() %}<tr><td>{{ k }}</td><td>{{ v }}</td></tr>{% endfor %}</table>{% endif %}
</div>{% endif %}
{% if ev.breadcrumbs %}<div class="card"><h2 class="mt-0">Breadcrumbs</h2><table>
  <thead><tr><th>Time</th><th>Category</th><th>Level</th><th>Message / data</th></tr></thead><tbody>
  {% for b in ev.breadcrumbs['values'][-100:] %}<tr class="{{ 'crumb-error' if b.level in ('error', 'fatal') }}">
    <td class="mono nowrap">{{ b.timestamp|timeonly }}</td><td class="mono">{{ b.category or b.type or '' }}</td><td class="crumb-level">{{ b.level or 'info' }}</td>
    <td class="mono">{{ b.message or '' }}{% if b.data %} <span class="muted">{{ b.data|pretty }}</span>{% endif %}</td></tr>{% endfor %}
  </tbody></table></div>{% endif %}
{% if ev.extra %}<div class="card"><h2 class="mt-0">Additional data</h2><table class="kv">{% for k, v in ev.extra.items() %}<tr><td>{{ k }}</td><td><div class="v">{{ v|pretty }}</div></td></tr>{% endfor %}</table></div>{% endif %}
{% if ev.grouping %}<details class="card grouping" id="grouping"><summary><b>Grouping</b> <span class="muted">· why this event is in this issue: {{ grouping_words[ev.grouping.strategy] or ev.grouping.strategy }}</span></summary>
  {% if ev.grouping.fingerprint_rule %}<p>Fingerprint rule <code>{{ ev.grouping.fingerprint_rule }}</code> matched{% if ev.grouping.client_fingerprint %} (the SDK sent <code>{{ ev.grouping.client_fingerprint|join(', ') }}</code>){% endif %}.</p>{% endif %}
  {% for name, variant in ev.grouping.variants.items() %}<p class="variant"><b>{{ name }}</b> <code>{{ variant.hash }}</code>{% if variant.hash in issue_hashes %} <span class="tag app">grouped into this issue</span>{% endif %}</p>
  <ol class="values mono">{% for value in variant['values'] %}<li>{{ value }}</li>{% else %}<li class="muted">no values (the fallback hash)</li>{% endfor %}</ol>{% endfor %}
  {% for stack in ev.grouping.stacks %}<table class="grouping-frames"><thead><tr><th>Frame{% if stack.exception %} of {{ stack.exception }}{% endif %}, crashing first</th><th>In app, and why</th><th>app</th><th>system</th></tr></thead><tbody>
    {% for f in stack.frames|reverse %}<tr><td class="mono">{{ f.frame or '?' }}</td><td>{{ 'yes' if f.in_app else 'no' }}: {{ f.in_app_rule or 'as the SDK sent it' }}{% if f.in_app_rule and f.sdk_in_app is not none and f.sdk_in_app != f.in_app %} (the SDK said {{ 'yes' if f.sdk_in_app else 'no' }}){% endif %}{% if f.group_rule and f.group_rule == f.in_app_rule %}, which also {{ 'counts it for' if f.group else 'leaves it out of' }} grouping{% elif f.group_rule %}; {{ 'counts for grouping' if f.group else 'left out of grouping' }} by {{ f.group_rule }}{% endif %}{% if f.noise %}; left out of grouping: the engine's own frame ({{ f.noise }}){% endif %}</td><td>{{ '✓' if f.app }}</td><td>{{ '✓' if f.system }}</td></tr>{% endfor %}
  </tbody></table>{% endfor %}
  <p class="variant"><b>Hashes of this issue</b> <span class="muted">· later events with any of them join this issue; unmerging one moves its events into a new issue</span></p>
  <table class="grouping-frames">{% for digest in issue_hashes %}<tr><td class="mono">{{ digest }}{% if digest in ev.hashes %} <span class="muted">(this event)</span>{% endif %}</td>
    <td><form method="post" action="/issues/{{ issue.id }}/unmerge/"><input type="hidden" name="csrf" value="{{ csrf }}"><input type="hidden" name="hash" value="{{ digest }}"><button class="secondary">Unmerge</button></form></td></tr>{% endfor %}</table>
</details>{% endif %}
</div>
<div class="sidebar">
  {% if links or deliveries %}<div class="card alerts"><h3 class="mt-0">Alerts</h3>
    {% for l in links %}<div class="my-4"><b>{{ l.kind|capitalize }}</b> {% if l.href %}<a class="jira-link" href="{{ l.href }}" rel="noopener noreferrer">{{ l.ref }}</a>{% else %}<span class="mono">{{ l.ref }}</span>{% endif %} <span class="muted">via {{ l.channel_name }}</span></div>{% endfor %}
    {% for d in deliveries %}<div class="muted fs-12-5">{{ d.channel_name }} · {{ d.trigger }} · <span class="delivery-status status-{{ d.status }}">{{ d.status }}</span> · {{ d.created|ago }}</div>{% endfor %}
    <div class="fs-12-5 mt-4"><a href="/alerts/">all deliveries</a> · <a href="/projects/{{ issue.project_slug }}/alerts/">rules</a></div></div>{% endif %}
  <div class="card"><h3 class="mt-0">This event</h3><table class="kv">
    <tr><td>release</td><td>{% if ev.release %}<a href="{{ filter_url('release', ev.release) }}">{{ ev.release }}</a>{% else %}—{% endif %}</td></tr>
    <tr><td>environment</td><td><a href="{{ filter_url('environment', ev.environment, issue.project_slug) }}">{{ ev.environment }}</a></td></tr>
    {% if ev.transaction %}<tr><td>transaction</td><td><a href="{{ filter_url('transaction', ev.transaction, issue.project_slug) }}">{{ ev.transaction }}</a></td></tr>{% endif %}
    {% if ev.contexts and ev.contexts.trace and ev.contexts.trace.trace_id %}<tr><td>trace</td><td><a href="{{ filter_url('trace', ev.contexts.trace.trace_id, issue.project_slug) }}">{{ ev.contexts.trace.trace_id }}</a></td></tr>{% endif %}
    {% if ev.server_name %}<tr><td>server</td><td>{{ ev.server_name }}</td></tr>{% endif %}
    {% if ev.logger %}<tr><td>logger</td><td>{{ ev.logger }}</td></tr>{% endif %}
    {% if ev.sdk %}<tr><td>sdk</td><td>{{ ev.sdk.name }} {{ ev.sdk.version }}</td></tr>{% endif %}
    <tr><td>platform</td><td>{{ ev.platform }}</td></tr>
    <tr><td>received</td><td>{{ ev.received|datetime }}</td></tr>
  </table>
  {% set scrubbed = ev|scrubbed %}{% if scrubbed %}<details class="muted scrubbed fs-12-5"><summary>{{ scrubbed|length }} value{{ 's' if scrubbed|length != 1 }} filtered by the server's data scrubbing</summary><span class="mono">{{ scrubbed[:12]|join(', ') }}{% if scrubbed|length > 12 %}, …{% endif %}</span> · <a href="/projects/{{ issue.project_slug }}/scrubbing/">settings</a></details>{% endif %}
  {% if ev.user %}<h3>User</h3><table class="kv">{% for k, v in ev.user.items() %}<tr><td>{{ k }}</td><td>{% if k in ('id', 'email', 'username', 'ip_address') and v is string %}<a href="{{ filter_url(k, v, issue.project_slug) }}">{{ v }}</a>{% else %}{{ v|pretty }}{% endif %}</td></tr>{% endfor %}</table>{% endif %}
  <h3>Tags</h3><div class="chips">{% for k, v in ev.tags or [] %}<a href="{{ filter_url(k, v, issue.project_slug) }}" title="issues with {{ k }} {{ v }}"><b>{{ k }}</b> {{ v }}</a>{% endfor %}</div>
  {% for name, ctx in (ev.contexts or {}).items() %}<h3>{{ name }}</h3><table class="kv">{% for k, v in ctx.items() if k != 'type' %}<tr><td>{{ k }}</td><td>{{ v|pretty }}</td></tr>{% endfor %}</table>{% endfor %}
  </div>
  <div class="card lifetime"><h3 class="mt-0">Lifetime</h3><div class="share"><span>opened</span><b title="{{ issue.first_seen|datetime }}">{{ issue.first_seen|ago }}</b></div>
    <div class="share"><span>resolved</span><b>{{ lifetime.resolved }}×</b></div><div class="share"><span>reopened</span><b>{{ lifetime.reopened }}×</b></div>
    <div class="share"><span>{{ 'open for' if issue.status != 'resolved' else 'took to resolve' }}</span><b>{{ lifetime.open_for }}</b></div></div>
  <div class="card"><h3 class="mt-0">Activity</h3><ul class="activity">{% for a in activity %}
    <li><span>{{ a.words }}</span><span class="muted" title="{{ a.created|datetime }}">{{ a.created|ago }}</span></li>{% endfor %}</ul></div>
  <div class="card"><h3 class="mt-0">Across all events</h3>
  {% for t in tag_summary %}<div class="tagbar"><div class="k">{{ t.key }}</div>
    {% for v in t['values'] %}<div class="tag-value"><a class="mono break-all" href="{{ filter_url(t.key, v.value, issue.project_slug) }}">{{ v.value }}</a><span class="muted nowrap">{{ v.count|count }} · {{ (v.count / t.total)|pct }}</span></div>
    <div class="bar"><svg viewBox="0 0 100 1" preserveAspectRatio="none"><rect width="{{ (100 * v.count / t.total)|round|int }}" height="1"/></svg></div>{% endfor %}</div>{% endfor %}
  </div>
</div></div>
{% else %}<div class="card empty">This issue has no stored events.</div>{% endif %}
{% endblock %}""",

    "projects.html": """{% extends "base.html" %}{% block title %}Projects{% endblock %}{% block main %}
<h1>Projects {% if viewer.role == 'admin' %}<a class="button fs-13 fw-normal" href="/projects/new/">New project</a>{% endif %}</h1><p class="muted">Point an official Sentry SDK at a DSN below: <code class="dsn">sentry_sdk.init(dsn="…", release="app@1.0.0", environment="prod")</code>; each project's <i>setup</i> page has the lines for Python, Celery, logging, browser, Node, Go and Ruby.</p>
{% for p in projects %}<div class="card"><h2 class="mt-0"><a href="/issues/?project={{ p.slug }}">{{ p.name }}</a> <span class="muted mono">{{ p.slug }} · id {{ p.id }}</span></h2>
  {% for k in p.dsn_keys %}<div class="key{{ '' if k.active else ' off' }}">DSN <code class="dsn">{{ k.dsn }}</code> <span class="muted">{{ k.label }}{% if not k.active %} · disabled: its events are refused (403){% endif %}</span>
  {% if viewer.role == 'admin' %}<form method="post" action="/projects/{{ p.slug }}/keys/"><input type="hidden" name="csrf" value="{{ csrf }}"><input type="hidden" name="{{ 'disable' if k.active else 'enable' }}" value="{{ k.public_key }}"><button class="secondary">{{ 'Disable' if k.active else 'Enable' }}</button></form>{% endif %}</div>{% endfor %}
  {% if viewer.role == 'admin' %}<form method="post" action="/projects/{{ p.slug }}/keys/" class="key"><input type="hidden" name="csrf" value="{{ csrf }}"><input name="add" placeholder="new key's label" size="14" aria-label="label"><button class="secondary">Add a DSN key</button>
  <span class="muted">rotate: add one, move clients, disable the old</span></form>{% endif %}
  {% if p.forward or p.forwarding %}<div class="forward-line{{ ' failing' if p.forwarding and p.forwarding.queued and p.forwarding.last_error }}"><a href="/projects/{{ p.slug }}/forwarding/">{% if p.forward %}Forwards ({{ p.forward.mode }}) to {{ p.forward.dsn|upstream_host }}{% else %}Forwarding off{% endif %}</a>{% if p.forwarding %} · {{ p.forwarding.queued }} queued{% if p.forwarding.queued %} (oldest {{ p.forwarding.outbox_age|age }}){% endif %} · {{ p.forwarding.sent_last_hour }} sent in the last hour{% if p.forwarding.dropped %} · {{ p.forwarding.dropped }} dropped{% endif %}{% if p.forwarding.last_error and p.forwarding.queued %} · <span class="forward-error">{{ p.forwarding.last_error|truncate(120) if viewer.role == 'admin' else 'failing' }}</span>{% endif %}{% endif %}</div>{% endif %}
  {% if p.drops %}<div class="drops">Dropped in the last 24 h: {% for d in p.drops %}{{ d.n }} {{ d.reason.replace('client:', 'by the SDK: ').replace('_', ' ') }}{{ ' · ' if not loop.last }}{% endfor %}</div>{% endif %}
  <div class="muted fs-12-5">{{ p.issue_count|plural('issue') }} · {{ p.event_count|plural('event') }} · <a href="/projects/{{ p.slug }}/setup/">setup</a> · <a href="/projects/{{ p.slug }}/grouping/">grouping rules</a> · <a href="/projects/{{ p.slug }}/scrubbing/">data scrubbing</a> · <a href="/projects/{{ p.slug }}/code-mappings/">code mappings</a> · <a href="/projects/{{ p.slug }}/alerts/">alert rules</a> · <a href="/projects/{{ p.slug }}/slo/">SLO</a> · <a href="/projects/{{ p.slug }}/overview/">overview</a> · <a href="/projects/{{ p.slug }}/envelopes/">envelopes received</a> · <a href="/projects/{{ p.slug }}/feedback/">user feedback</a> · <a href="/monitors/?project={{ p.slug }}">cron monitors</a> · <a href="/projects/{{ p.slug }}/forwarding/">forwarding</a></div></div>
{% else %}<div class="card empty">No projects yet: {% if viewer.role == 'admin' %}<a href="/projects/new/">create one</a>, or {% endif %}<code>tracker project create NAME</code> prints a DSN.</div>{% endfor %}
{% endblock %}""",

    "forwarding.html": """{% extends "base.html" %}{% block title %}Forwarding · {{ project.name }}{% endblock %}{% block main %}
<div class="muted fs-12"><a href="/projects/">Projects</a> · <a href="/issues/?project={{ project.slug }}">{{ project.name }}</a></div>
<h1>Forwarding</h1>
{% if error %}<div class="card search-error">{{ error }}</div>{% elif saved %}<div class="card">Saved. Envelopes accepted from now on follow it; those already queued still go where they were queued for.</div>{% endif %}
<div class="card{{ ' forward-failing' if state.queued and state.lastError }}"><h2 class="mt-0">{% if state.dsn %}To {{ state.dsn|upstream_host }} <span class="muted fw-normal">{{ state.mode }}</span>{% else %}Not forwarding{% endif %}</h2>
  <div class="facts"><div><b>{{ state.queued }}</b><span>queued</span></div><div><b>{{ state.outboxAge|age if state.queued else '—' }}</b><span>oldest queued</span></div>
  <div><b>{{ state.sentLastHour }}</b><span>sent in the last hour</span></div><div><b>{{ state.dropped }} dropped</b><span>outbox full or refused</span></div></div>
  {% if state.lastError %}<p class="forward-error">Last error{% if state.dateLastError %} ({{ state.dateLastError|ago }}){% endif %}: {{ state.lastError }}</p>{% endif %}
  {% if state.dateLastSent %}<p class="muted">Last sent {{ state.dateLastSent|ago }} ({{ state.dateLastSent|datetime }}).</p>{% endif %}</div>
{% if viewer.role == 'admin' %}<form method="post" class="card rules"><input type="hidden" name="csrf" value="{{ csrf }}">
  <p class="muted">Every envelope this project accepts is also sent to the upstream's DSN (Sentry, GlitchTip or another tracker), after rate limits and data scrubbing. <b>mirror</b> keeps it here too; <b>relay</b> keeps nothing here but the queue. Leave the DSN empty to stop.</p>
  <p><label>Upstream DSN <input name="dsn" size="70" value="{{ form.dsn }}" spellcheck="false" placeholder="https://&lt;key&gt;@sentry.example.com/42"></label></p>
  <p>{% for m in modes %}<label><input type="radio" name="mode" value="{{ m }}" {{ 'checked' if form.mode == m }}> {{ m }}</label> {% endfor %}</p>
  <p><label><input type="checkbox" name="allow_private" {{ 'checked' if form.allow_private }}> The upstream is inside this network (allow private addresses)</label></p>
  <p><button type="submit">Save</button></p>
</form>{% endif %}
<p class="muted">History goes with <code>tracker forward --project {{ project.slug }} --to DSN --since 7d</code>.</p>
{% endblock %}""",

    "monitors.html": """{% extends "base.html" %}{% block title %}Monitors{% endblock %}{% block main %}
<h1>Cron monitors <span class="muted fw-normal fs-14">{{ monitors|length }} monitor{{ 's' if monitors|length != 1 }}{% if failing %} · {{ failing }} failing{% endif %}</span></h1>
<p class="muted">Scheduled jobs check in with <code>@sentry_sdk.monitor</code>, <code>capture_checkin</code> or <code>curl</code> to the cron endpoint. A check-in that does not come within its margin is <b>missed</b>, a run longer than its max runtime has <b>timed out</b>; failures open an issue that the alert rules see, and an ok run resolves it.</p>
<form class="filters" method="get" action="/monitors/"><label>Project<select name="project"><option value="">All projects</option>
  {% for p in projects %}<option value="{{ p.slug }}" {{ 'selected' if p.slug == selected }}>{{ p.name }}</option>{% endfor %}</select></label><button type="submit">Filter</button></form>
<div class="card p-0">{% if monitors %}
<table class="monitors"><thead><tr><th>Monitor</th><th>Schedule</th><th>Status</th><th>Last check-in</th><th>Next expected</th><th>Last 30 check-ins</th><th>Issue</th></tr></thead><tbody>
{% for m in monitors %}<tr class="monitor" id="monitor-{{ m.id }}">
  <td><b class="mono">{{ m.slug }}</b>{% if m.name != m.slug %} {{ m.name }}{% endif %}<div class="sub"><a href="/issues/?project={{ m.project_slug }}">{{ m.project_name }}</a> · {{ m.environment }}</div></td>
  <td>{{ m.words }}<div class="sub">{% if m.schedule_type == 'crontab' %}<span class="mono">{{ m.schedule }}</span> · {% endif %}{{ m.timezone }} · margin {{ m.checkin_margin }} min · max runtime {{ m.max_runtime }} min</div></td>
  <td><span class="mon mon-{{ m.status }}">{{ m.label }}</span></td>
  <td class="nowrap" title="{{ m.last_checkin|datetime }}">{{ m.last_checkin|ago }}</td>
  <td class="nowrap" title="{{ m.next_expected|datetime }}">{{ m.due }}{% if m.due_local %}<div class="sub">{{ m.due_local }}</div>{% endif %}</td>
  <td><div class="ticks" role="img" aria-label="the last {{ m.ticks|length }} check-ins, oldest first">{% for _ in range(30 - m.ticks|length) %}<span class="mon-none"></span>{% endfor %}{% for c in m.ticks %}<span class="mon-{{ c.status }}" title="{{ labels[c.status] }} · {{ c.date_created|datetime }} · {{ c.environment }}{% if c.duration is not none %} · {{ '%.2f'|format(c.duration) }} s{% endif %}"></span>{% endfor %}</div></td>
  <td class="nowrap">{% if m.issue %}<a class="monitor-issue" href="/issues/{{ m.issue_id }}/">{{ m.issue }}</a>{% else %}<span class="muted">—</span>{% endif %}</td></tr>
{% endfor %}</tbody></table>
<div class="legend inset-legend">{% for s in ['ok', 'error', 'missed', 'timeout', 'in_progress'] %}<span><i class="mon-{{ s }}"></i>{{ labels[s] }}</span>{% endfor %}<span>· oldest check-in on the left; hover a tick for its time, environment and duration</span></div>
{% else %}<div class="empty">No monitors yet. A check-in with a <code>monitor_config</code> makes one, e.g. <code>@sentry_sdk.monitor(monitor_slug="nightly", monitor_config={"schedule": {"type": "crontab", "value": "0 3 * * *"}})</code>.</div>{% endif %}
</div>
{% endblock %}""",

    "events.html": """{% extends "base.html" %}{% block title %}Events · {{ issue.title }}{% endblock %}{% block main %}
<div class="muted fs-12"><a href="/issues/{{ issue.id }}/">{{ short }}</a> · {{ issue.project_name }}</div>
<h1>{{ issue.title }}</h1>
<form class="filters" method="get"><label class="search">Search the events of this issue<input type="search" name="q" value="{{ q }}" placeholder="environment:prod user.email:… release:… browser:Chrome*"></label><button type="submit">Search</button></form>
{% if error %}<div class="card search-error">Search: {{ error }}</div>{% endif %}
<div class="card p-0">{% if events %}<table><thead><tr><th>Time</th><th>Event</th><th>Release</th><th>Environment</th><th>User</th><th>Message</th></tr></thead><tbody>
{% for e in events %}<tr><td class="mono nowrap">{{ e.timestamp|datetime }}</td>
  <td class="mono"><a href="/issues/{{ issue.id }}/events/{{ e.event_id }}/">{{ e.event_id[:12] }}</a></td>
  <td class="mono">{% if e.release %}<a href="?{{ {'q': 'release:' ~ e.release|quoted}|urlencode }}">{{ e.release }}</a>{% else %}—{% endif %}</td>
  <td><a href="?{{ {'q': 'environment:' ~ e.environment|quoted}|urlencode }}">{{ e.environment }}</a></td>
  <td class="mono">{% if e.user %}<a href="?{{ {'q': 'user:' ~ e.user|quoted}|urlencode }}">{{ e.user }}</a>{% else %}—{% endif %}</td><td>{{ e.message }}</td></tr>{% endfor %}
</tbody></table>{% else %}<div class="empty">No events match.</div>{% endif %}</div>
<div class="nav">{% if offset > 0 %}<a href="?{{ {'q': q, 'offset': [offset - limit, 0]|max}|urlencode }}">← Newer</a>{% endif %}
{% if more %}<a href="?{{ {'q': q, 'offset': offset + limit}|urlencode }}">Older →</a>{% endif %}</div>
{% endblock %}""",

    "grouping.html": """{% extends "base.html" %}{% block title %}Grouping rules · {{ project.name }}{% endblock %}{% block main %}
<div class="muted fs-12"><a href="/projects/">Projects</a> · <a href="/issues/?project={{ project.slug }}">{{ project.name }}</a></div>
<h1>Issue grouping rules</h1>
{% if error %}<div class="card search-error">{{ error }}</div>{% elif saved %}<div class="card">Saved. Events from now on are grouped by these rules; the events already stored stay where they are.</div>{% endif %}
<form method="post" class="card rules"><input type="hidden" name="csrf" value="{{ csrf }}">
  <h2 class="mt-0">Stack trace rules</h2>
  <p class="muted">One rule per line: matchers, then actions. They run after the built-in rules (site-packages, dist-packages, vendor and node_modules are not in app), top to bottom, so a later rule wins.
  Matchers: <code>path</code>, <code>module</code>, <code>function</code>, <code>package</code>, <code>family</code>, <code>app</code>, with <code>*</code> and <code>**</code> globs; <code>!</code> negates.
  Actions: <code>+app</code>/<code>-app</code> put frames in or out of app, <code>+group</code>/<code>-group</code> let them count for grouping or not; a leading <code>^</code> acts on the frames above (toward the crash), <code>v</code> on the frames below.</p>
  <pre class="block">path:**/vendor/** -app
module:myapp.* +app
function:log_error -group</pre>
  <textarea name="stacktrace_rules" rows="8" spellcheck="false" aria-label="stack trace rules">{{ stacktrace_rules }}</textarea>
  <h2>Fingerprint rules</h2>
  <p class="muted">One rule per line: matchers <code>-&gt;</code> fingerprint. The first rule that matches gives the event its fingerprint (over the SDK's). Put <code>{% raw %}{{ default }}{% endraw %}</code> in it to refine the built-in grouping instead of replacing it, and <code>title="…"</code> after it to name the issue.
  Matchers: <code>error.type</code>, <code>error.value</code>, <code>message</code>, <code>logger</code>, <code>level</code>, <code>tags.NAME</code>, with <code>*</code> globs.</p>
  <pre class="block">{% raw %}error.type:PaymentDeclined -> payment-declined title="Payment declined"
message:"*timed out*" -> timeouts, {{ transaction }}{% endraw %}</pre>
  <textarea name="fingerprint_rules" rows="8" spellcheck="false" aria-label="fingerprint rules">{{ fingerprint_rules }}</textarea>
  <p><button type="submit">Save rules</button></p>
</form>
{% endblock %}""",

    "scrubbing.html": """{% extends "base.html" %}{% block title %}Data scrubbing · {{ project.name }}{% endblock %}{% block main %}
<div class="muted fs-12"><a href="/projects/">Projects</a> · <a href="/issues/?project={{ project.slug }}">{{ project.name }}</a></div>
<h1>Data scrubbing</h1>
{% if error %}<div class="card search-error">{{ error }}</div>{% elif saved %}<div class="card">Saved. Events from now on are scrubbed this way; the events already stored stay as they are.</div>{% endif %}
<form method="post" class="card rules"><input type="hidden" name="csrf" value="{{ csrf }}">
  <p class="muted">Applied to every event as it arrives, before it is grouped or stored: a filtered value becomes <code>[Filtered]</code>, and the event page lists what was filtered.</p>
  <p><label><input type="checkbox" name="enabled" {{ 'checked' if settings.enabled }}> Scrub data on the server</label></p>
  <p><label><input type="checkbox" name="defaults" {{ 'checked' if settings.defaults }}> Use the default scrubbers: values of keys that look like secrets (password, secret, token, api_key, auth, credentials, cookie, session, csrf, private_key, card, cvv…), the <code>Authorization</code> and <code>Cookie</code> headers, credit card numbers and IBANs</label></p>
  <p><label><input type="checkbox" name="scrub_ip" {{ 'checked' if settings.scrub_ip }}> Do not store IP addresses (the user's and the request's <code>REMOTE_ADDR</code>)</label></p>
  <h2>Additional sensitive fields</h2>
  <p class="muted">One key per line: the value of any key that contains one of them (ignoring case, <code>-</code>, <code>_</code>, <code>.</code> and spaces) is filtered.</p>
  <textarea name="sensitive_fields" rows="6" spellcheck="false" aria-label="sensitive fields">{{ settings.sensitive_fields|join('\n') }}</textarea>
  <h2>Safe fields</h2>
  <p class="muted">One key per line: values under these keys are never filtered (they win over everything above).</p>
  <textarea name="safe_fields" rows="6" spellcheck="false" aria-label="safe fields">{{ settings.safe_fields|join('\n') }}</textarea>
  <p><button type="submit">Save</button></p>
</form>
{% endblock %}""",

    "releases.html": """{% extends "base.html" %}{% block title %}Releases{% endblock %}{% block main %}
<h1>Releases</h1>
<form class="filters" method="get"><label>Project<select name="project"><option value="">All projects</option>
  {% for p in projects %}<option value="{{ p.slug }}" {{ 'selected' if p.slug == project }}>{{ p.name }}</option>{% endfor %}</select></label><button type="submit">Filter</button></form>
<div class="card p-0">{% if releases %}<table><thead><tr><th>Version</th><th>Created</th><th>Released</th><th class="num">Events</th><th class="num">New issues</th><th>Last deploy</th></tr></thead><tbody>
{% for r in releases %}<tr><td class="mono"><a href="/releases/{{ r.version|urlencode }}/">{{ r.version }}</a></td>
  <td title="{{ r.date_created|datetime }}">{{ r.date_created|ago }}</td><td>{{ r.date_released|ago if r.date_released else '—' }}</td>
  <td class="num">{{ r.event_count|count }}</td><td class="num">{{ r.new_issues|count }}</td><td>{{ r.last_deploy|ago if r.last_deploy else '—' }}</td></tr>{% endfor %}
</tbody></table>{% else %}<div class="empty">No releases yet: events with a <code>release</code>, or <code>sentry-cli releases new</code>, create them.</div>{% endif %}</div>
{% endblock %}""",

    "release.html": """{% extends "base.html" %}{% block title %}{{ r.release.version }}{% endblock %}{% block main %}
<div class="card"><div class="muted fs-12"><a href="/releases/">Releases</a></div>
  <h1>{{ r.release.version }}</h1>
  <div class="facts"><div><b>{{ r.event_count|count }}</b><span>{{ 'event' if r.event_count == 1 else 'events' }}</span></div><div><b>{{ r.new_issues|length }}</b><span>new issues</span></div>
    <div><b>{{ r.regressions|length }}</b><span>regressions</span></div><div><b>{{ r.commits|length }}</b><span>commits</span></div>
    <div><b title="{{ r.release.date_created|datetime }}">{{ r.release.date_created|ago }}</b><span>created</span></div>
    <div><b>{{ r.release.date_released|ago if r.release.date_released else '—' }}</b><span>released</span></div></div></div>
<div class="layout"><div>
<div class="card"><h2 class="mt-0">New issues in this release</h2>{% for i in r.new_issues %}<div class="my-6"><span class="badge lvl-{{ i.level }}">{{ i.level }}</span> <a href="/issues/{{ i.id }}/">{{ i.title }}</a> <span class="muted">· {{ i.times_seen|plural('event') }} · {{ i.project_name }}</span></div>{% else %}<div class="muted">None.</div>{% endfor %}</div>
<div class="card"><h2 class="mt-0">Regressions in this release</h2>{% for i in r.regressions %}<div class="my-6"><a href="/issues/{{ i.id }}/">{{ i.title }}</a> <span class="muted">· regressed {{ i.regressed_at|ago }}</span></div>{% else %}<div class="muted">None.</div>{% endfor %}</div>
<div class="card"><h2 class="mt-0">Commits</h2>{% for ref in r.refs %}<div class="mono muted">{{ ref.repository }} {{ ref.previous_sha[:12] ~ '..' if ref.previous_sha }}{{ ref.commit_sha[:12] }}</div>{% endfor %}
  {% for c in r.commits %}<div class="commit"><div><span class="mono">{{ c.sha[:12] }}</span> {{ (c.message or '')|truncate(120) }}</div>
    <div class="muted fs-12">{{ c.author_name or c.author_email or 'unknown author' }}{% if c.repository %} · {{ c.repository }}{% endif %}{% if c.timestamp %} · {{ c.timestamp|ago }}{% endif %}</div>
    {% if c.files %}<div class="chips">{% for f in c.files %}<span><b>{{ f.type }}</b> {{ f.path }}</span>{% endfor %}</div>{% endif %}</div>
  {% else %}<div class="muted">No commits: <code>sentry-cli releases set-commits {{ r.release.version }} --auto</code> in CI records them.</div>{% endfor %}</div>
<div class="card source-maps" id="source-maps"><h2 class="mt-0">Source maps and artifacts <span class="muted fw-normal fs-13">minified files and their maps uploaded for this release</span></h2>
  {% if files %}<table><thead><tr><th>File</th><th>Type</th><th>Dist</th><th>Debug id</th><th class="num">Size</th><th>Uploaded</th></tr></thead><tbody>
  {% for f in files %}<tr><td class="mono">{{ f.url }}</td><td>{{ f.type|replace('_', ' ') }}</td><td class="mono">{{ f.dist or '—' }}</td><td class="mono fs-12">{{ f.debug_id or '—' }}</td>
    <td class="num nowrap">{{ f.size_text }}</td><td class="nowrap" title="{{ f.date_added|datetime }}">{{ f.date_added|ago }}</td></tr>{% endfor %}</tbody></table>
  {% else %}<div class="muted">None: <code>sentry-cli sourcemaps upload --release {{ r.release.version }} dist/</code> in CI uploads them (see the README's Source maps section).</div>{% endif %}</div>
</div><div class="sidebar">{% if r.health %}<div class="card health"><h3 class="mt-0">Release health</h3>{% for h in r.health %}
  <div class="my-6"><b>{{ h.environment }}</b> <span class="muted">· {{ h.sessions|plural('session') }}{% if h.users %} · {{ h.users|plural('user') }}{% endif %}</span>
  <div class="health-facts"><div><b>{{ h.crash_free_sessions|pct }}</b><span>crash-free sessions</span></div><div><b>{{ h.errored_rate|pct }}</b><span>errored sessions</span></div>
  {% if h.users %}<div><b>{{ h.crash_free_users|pct }}</b><span>crash-free users</span></div>{% endif %}</div></div>{% endfor %}</div>{% endif %}
<div class="card"><h3 class="mt-0">Deploys</h3>{% for d in r.deploys %}<div class="my-6"><b>{{ d.environment }}</b> <span class="muted" title="{{ d.date_finished|datetime }}">{{ d.date_finished|ago }}</span>{% if d.name %} · {{ d.name }}{% endif %}</div>{% else %}<div class="muted">Not deployed yet.</div>{% endfor %}</div></div></div>
{% endblock %}""",

    "code_mappings.html": """{% extends "base.html" %}{% block title %}Code mappings · {{ project.name }}{% endblock %}{% block main %}
<div class="muted fs-12"><a href="/projects/">Projects</a> · <a href="/issues/?project={{ project.slug }}">{{ project.name }}</a></div>
<h1>Code mappings</h1>
<p class="muted">A mapping turns an in-app frame's file into a link to its line in the repository, at the commit of the event's release (else the default branch):
the stack root is cut off the front of the frame's path (empty: the file name as the SDK sent it) and the source root put in its place.</p>
{% if error %}<div class="card search-error">{{ error }}</div>{% endif %}
<div class="card p-0">{% if mappings %}<table><thead><tr><th>Repository</th><th>Provider</th><th>Stack root</th><th>Source root</th><th>Default branch</th><th></th></tr></thead><tbody>
{% for m in mappings %}<tr><td class="mono"><a href="{{ m.repository_url }}" rel="noopener noreferrer">{{ m.repository_url }}</a></td><td>{{ m.provider }}</td>
  <td class="mono">{{ m.stack_root or '—' }}</td><td class="mono">{{ m.source_root or '—' }}</td><td class="mono">{{ m.default_branch }}</td>
  <td><form method="post"><input type="hidden" name="csrf" value="{{ csrf }}"><input type="hidden" name="delete" value="{{ m.id }}"><button class="secondary">Delete</button></form></td></tr>{% endfor %}
</tbody></table>{% else %}<div class="empty">No code mappings yet.</div>{% endif %}</div>
<form method="post" class="card filters"><input type="hidden" name="csrf" value="{{ csrf }}"><label>Repository URL<input name="repository_url" value="{{ form.repository_url }}" required placeholder="https://github.com/acme/app" size="34"></label>
  <label>Provider<select name="provider"><option value="">from the host</option>{% for key, name in providers.items() %}<option value="{{ key }}" {{ 'selected' if form.provider == key }}>{{ name }}</option>{% endfor %}</select></label>
  <label>Stack root<input name="stack_root" value="{{ form.stack_root }}" placeholder="/srv/app/" size="14"></label>
  <label>Source root<input name="source_root" value="{{ form.source_root }}" placeholder="src/" size="10"></label>
  <label>Default branch<input name="default_branch" value="{{ form.default_branch }}" placeholder="main" size="8"></label>
  <button type="submit">Add mapping</button></form>
{% endblock %}""",

    "code.html": """{% extends "base.html" %}{% block title %}{{ path }}{% endblock %}{% block main %}
<div class="muted fs-12"><a href="/issues/?project={{ project.slug }}">{{ project.name }}</a> · code</div>
<h1>{{ path }}{% if function %} <span class="muted">in</span> {{ function }}{% endif %}</h1>
<p class="muted">Issues whose in-app frames pass through this {{ 'function' if function else 'file' }}: the same as the search <a class="search-link" href="/issues/?{{ {'project': project.slug, 'status': 'all', 'q': query}|urlencode }}">{{ query }}</a>.</p>
<div class="card p-0">{% if issues %}<table class="issues"><thead><tr><th>Issue</th><th>Status</th><th class="num">Events</th><th class="num">Users</th><th>Last seen</th></tr></thead><tbody>
{% for i in issues %}<tr><td><a class="issue-title" href="/issues/{{ i.id }}/">{{ i.title }}</a><div class="culprit">{{ i.culprit }}</div></td><td>{{ i.status }}</td>
  <td class="num events">{{ i.times_seen|count }}</td><td class="num users">{{ i.user_count|count }}</td><td class="last-seen" title="{{ i.last_seen|datetime }}">{{ i.last_seen|ago }}</td></tr>{% endfor %}
</tbody></table>{% else %}<div class="empty">No issue passes through it.</div>{% endif %}</div>
{% endblock %}""",

    "alerts.html": """{% extends "base.html" %}{% block title %}Alerts{% endblock %}{% block main %}
<h1>Alerts</h1>
<p class="muted">Each project's rules (<a href="/projects/">Projects</a> → alert rules{% for p in projects %}{{ ':' if loop.first }} <a href="/projects/{{ p.slug }}/alerts/">{{ p.name }}</a>{{ ',' if not loop.last }}{% endfor %}) say when to notify which channels.
A notification is queued with the event that caused it and delivered with retries; a dead one can be sent again.</p>
{% if error %}<div class="card search-error">{{ error }}</div>{% endif %}
<div class="card p-0"><h2 class="inset-head">Channels</h2>{% if channels %}<table><thead><tr><th>Name</th><th>Kind</th><th>Target</th><th class="num">Failures in a row</th><th></th></tr></thead><tbody>
{% for c in channels %}<tr><td><b>{{ c.name }}</b></td><td>{{ c.kind }}</td><td class="mono">{{ c.target }}</td>
  <td class="num">{% if c.failures >= 4 %}<span class="badge lvl-error">{{ c.failures }} · needs attention</span>{% else %}{{ c.failures }}{% endif %}</td>
  <td class="nowrap"><form class="inline" method="post"><input type="hidden" name="csrf" value="{{ csrf }}"><input type="hidden" name="test" value="{{ c.id }}"><button class="secondary">Send test</button></form>
  <form class="inline" method="post"><input type="hidden" name="csrf" value="{{ csrf }}"><input type="hidden" name="delete" value="{{ c.id }}"><button class="secondary">Delete</button></form></td></tr>{% endfor %}
</tbody></table>{% else %}<div class="empty">No channels yet: add one below, or declare <code>[[channels]]</code> in the config file.</div>{% endif %}</div>
<form method="post" class="card filters channel-form"><input type="hidden" name="csrf" value="{{ csrf }}"><label>Kind<select name="kind">{% for k in kinds %}<option value="{{ k }}" {{ 'selected' if form.kind == k }}>{{ k }}</option>{% endfor %}</select></label>
  <label>Name<input name="name" value="{{ form.name }}" required placeholder="oncall-slack" size="12"></label>
  <label class="k k-slack k-webhook k-alertmanager k-jira">URL<input name="url" value="{{ form.url }}" placeholder="webhook, Alertmanager or Jira URL" size="28"></label>
  <label class="k k-pagerduty">PagerDuty routing key<input name="routing_key" size="16"></label>
  <label class="k k-email">SMTP host<input name="host" value="{{ form.host }}" size="12"></label><label class="k k-email">Port<input name="port" value="{{ form.port }}" size="4" placeholder="587"></label>
  <label class="k k-email">Security<select name="security"><option>starttls</option><option>tls</option><option>none</option></select></label>
  <label class="k k-email k-alertmanager">User<input name="username" value="{{ form.username }}" size="10"></label><label class="k k-email k-alertmanager">Password<input name="password" type="password" size="10"></label>
  <label class="k k-email">From<input name="from" value="{{ form['from'] }}" size="16"></label><label class="k k-email">To<input name="to" value="{{ form.to }}" size="20" placeholder="a@x.com, b@x.com"></label>
  <label class="k k-jira">Jira flavor<select name="flavor"><option value="cloud">cloud (v3)</option><option value="datacenter">data center (v2)</option></select></label>
  <label class="k k-jira">Jira email<input name="email" value="{{ form.email }}" size="14"></label><label class="k k-jira">Jira token / PAT<input name="token" type="password" size="12"></label>
  <label class="k k-jira">Jira project<input name="project" value="{{ form.project }}" size="6" placeholder="OPS"></label><label class="k k-jira">Issue type<input name="issue_type" value="{{ form.issue_type }}" size="6" placeholder="Bug"></label>
  <label class="k k-webhook">Webhook secret<input name="secret" type="password" size="12" placeholder="generated"></label>
  <label class="k k-slack k-webhook k-alertmanager k-jira k-email" title="a loopback, private or link-local address: your own network, not the internet"><input type="checkbox" name="allow_private" {{ 'checked' if form.allow_private }}> Allow a private address</label>
  <button type="submit">Add channel</button></form>
<div class="card p-0"><h2 class="inset-head">Deliveries</h2>{% if deliveries %}<table class="deliveries"><thead><tr><th>Queued</th><th>Channel</th><th>Why</th><th>Issue</th><th>Status</th><th class="num">Attempts</th><th>Last error</th><th></th></tr></thead><tbody>
{% for d in deliveries %}<tr><td class="mono" title="{{ d.created|datetime }}">{{ d.created|ago }}</td><td>{{ d.channel_name }} <span class="muted">{{ d.channel_kind }}</span></td><td>{{ d.trigger }}</td>
  <td>{% if d.issue_id %}<a href="/issues/{{ d.issue_id }}/">#{{ d.issue_id }}</a>{% else %}—{% endif %}</td>
  <td><span class="delivery-status status-{{ d.status }}">{{ d.status }}</span>{% if d.external_ref %} <span class="mono muted">{{ d.external_ref }}</span>{% endif %}</td><td class="num">{{ d.attempts }}</td>
  <td class="mono muted last-error">{{ (d.last_error or '')|truncate(160) }}</td>
  <td>{% if d.status in ('dead', 'cancelled') %}<form method="post"><input type="hidden" name="csrf" value="{{ csrf }}"><input type="hidden" name="retry" value="{{ d.id }}"><button class="secondary">Retry</button></form>{% endif %}</td></tr>{% endfor %}
</tbody></table>{% else %}<div class="empty">Nothing sent yet.</div>{% endif %}</div>
{% endblock %}""",

    "overview.html": """{% extends "base.html" %}{% block title %}{{ project.name }} overview{% endblock %}{% block main %}
<div class="muted fs-12"><a href="/projects/">Projects</a> · <a href="/issues/?project={{ project.slug }}">issues</a> · <a href="/projects/{{ project.slug }}/slo/">SLO</a> · <a href="/projects/{{ project.slug }}/alerts/">alert rules</a></div>
<h1>{{ project.name }} <span class="muted fw-normal">overview</span></h1>
<nav class="periods">{% for p in periods %}<a href="?period={{ p }}" class="{{ 'current' if p == period }}">{{ p }}</a>{% endfor %}</nav>
<div class="card"><div class="facts"><div><b>{{ total|count }}</b><span>{{ 'event' if total == 1 else 'events' }}</span></div><div><b>{{ new|count }}</b><span>new {{ 'issue' if new == 1 else 'issues' }}</span></div><div><b>{{ regressed|count }}</b><span>{{ 'regression' if regressed == 1 else 'regressions' }}</span></div>
  <div><b>{{ health.crash_free_sessions|pct }}</b><span>crash-free sessions</span></div><div><b>{{ health.errored_rate|pct }}</b><span>errored sessions</span></div><div><b>{{ health.sessions|count }}</b><span>sessions</span></div></div></div>
<div class="layout"><div>
<div class="card chart-card"><h2 class="mt-0">Events by level</h2><div class="events-chart">{{ events_chart }}</div>
  <div class="axis"><span>{{ labels[0] }}</span><span>{{ labels[labels|length // 2] }}</span><span>{{ labels[-1] }}</span></div>
  <div class="legend">{% for l in ['fatal', 'error', 'warning', 'info', 'debug'] %}<span><i class="bar-{{ l }}"></i>{{ l }}</span>{% endfor %}</div></div>
<div class="card chart-card"><h2 class="mt-0">New and regressed issues</h2><div class="issues-chart">{{ issues_chart }}</div>
  <div class="axis"><span>{{ labels[0] }}</span><span>{{ labels[labels|length // 2] }}</span><span>{{ labels[-1] }}</span></div>
  <div class="legend"><span><i class="bar-new"></i>new</span><span><i class="bar-regressed"></i>regressed</span></div></div>
<div class="card"><h2 class="mt-0">Top issues by events</h2>{% for i in top %}<div class="top-issue"><span class="num">{{ i.period_events|count }}</span> <a href="/issues/{{ i.id }}/">{{ i.title }}</a> <span class="muted">{{ i.culprit }}</span></div>{% else %}<div class="muted">No events in this period.</div>{% endfor %}</div>
<div class="card slowest"><h2 class="mt-0">Slowest transactions</h2>{% if slowest %}<table class="issues"><thead><tr><th>Transaction</th><th class="num">Count</th><th class="num">p50</th><th class="num">p95</th><th>Slowest</th></tr></thead><tbody>
{% for x in slowest %}<tr><td class="mono">{{ x.name }}</td><td class="num">{{ x.count }}</td><td class="num">{{ x.p50|ms }}</td><td class="num">{{ x.p95|ms }}</td><td><a href="/traces/{{ x.slowest_trace }}/">trace</a></td></tr>{% endfor %}
</tbody></table>{% else %}<div class="muted">No transactions kept in this period (SDKs send them with a traces sample rate).</div>{% endif %}</div>
<div class="card"><h2 class="mt-0">Top issues by users</h2>{% for i in top_users %}<div class="top-issue"><span class="num">{{ i.period_users|count }}</span> <a href="/issues/{{ i.id }}/">{{ i.title }}</a></div>{% else %}<div class="muted">No users seen in this period.</div>{% endfor %}</div>
</div><div class="sidebar">
{% for column, rows in breakdown.items() %}<div class="card"><h3 class="mt-0">By {{ column }}</h3>{% for r in rows %}<div class="share"><span>{% if r.value %}<a href="{{ filter_url(column, r.value, project.slug) }}">{{ r.value }}</a>{% else %}—{% endif %}</span><b>{{ r.n|count }}</b></div>{% else %}<div class="muted">—</div>{% endfor %}</div>{% endfor %}
<div class="card lifetimes"><h3 class="mt-0">Bug lifetimes</h3><div class="share"><span>median time to resolve</span><b>{{ stats.median_ttr }}</b></div>
  <div class="share"><span>issues ever reopened</span><b>{{ stats.reopened }}</b></div>
  <h3>Open issues by age</h3>{% for age, n in stats.ages.items() %}<div class="share"><span>{{ age }}</span><b>{{ n }}</b></div>{% endfor %}
  <h3>By first release</h3>{% for r in stats.releases %}<div class="share release-life"><span>{% if r.release and r.release != '(no release)' %}<a href="{{ filter_url('release', r.release) }}">{{ r.release }}</a>{% else %}{{ r.release }}{% endif %}</span><b title="issues first seen in it · resolved · median time to resolve">{{ r.issues }} · {{ r.resolved|pct }} · {{ r.ttr }}</b></div>{% endfor %}
  <div class="muted fs-11-5">issues first seen · resolved · median time to resolve</div></div>
</div></div>
{% endblock %}""",

    "slo.html": """{% extends "base.html" %}{% block title %}SLO · {{ project.name }}{% endblock %}{% block main %}
<div class="muted fs-12"><a href="/projects/">Projects</a> · <a href="/issues/?project={{ project.slug }}">{{ project.name }}</a> · <a href="/projects/{{ project.slug }}/alerts/">alert rules</a></div>
<h1>Service level objective</h1>
{% if error %}<div class="card search-error">{{ error }}</div>{% endif %}
{% if slo %}<div class="card"><h2 class="mt-0">{{ slo.name }} <span class="slo-state state-{{ slo.state }}">{{ slo.state|replace('_', ' ') }}</span></h2>
  <div class="muted">{{ slo.description }}{% if slo.minTotal > 1 %}, judged once the window holds {{ slo.minTotal }} or more{% endif %}</div>
  <div class="facts"><div><b>{{ slo.value|pct }}</b><span>now (objective &lt; {{ (slo.objective * 100)|round(4) }}%)</span></div>
    <div><b>{{ '%.3g'|format(slo.burnRate) if slo.burnRate is not none else '—' }}×</b><span>burn rate</span></div>
    <div><b>{{ slo.total }}</b><span>in the window</span></div><div><b title="{{ slo.since }}">{{ slo.since|ago }}</b><span>in this state since</span></div></div>
  {% if history %}<div class="slo-history" role="img" aria-label="the last 24 hours, a bar a minute">{% for h in history %}<span class="state-{{ h.state }}" title="{{ h.minute|datetime }}: {{ h.value|pct }} of {{ h.total }}"></span>{% endfor %}</div>
  <div class="muted fs-12">the last 24 hours, a bar a minute: <span class="state-ok">■</span> ok <span class="state-breached">■</span> breached <span class="state-no_data">■</span> no data</div>{% endif %}</div>
{% else %}<div class="card empty">No objective yet: set one below. A breach and its recovery go to every alert channel.</div>{% endif %}
<form method="post" class="card filters"><input type="hidden" name="csrf" value="{{ csrf }}"><label>Name<input name="name" value="{{ form.name or (slo.name if slo else 'Error budget') }}" size="16"></label>
  <label>Bad share of<select name="metric">{% for key, words in metrics.items() %}<option value="{{ key }}" {{ 'selected' if (form.metric or (slo.metric if slo else '')) == key }}>{{ words }}</option>{% endfor %}</select></label>
  <label>Objective (% below)<input name="objective" value="{{ form.objective or ((slo.objective * 100)|round(4) if slo else '0.1') }}" size="6"></label>
  <label>Window (minutes)<input name="window" value="{{ form.window or (slo.window if slo else 10) }}" size="5"></label>
  <label>At least<input name="minTotal" value="{{ form.minTotal or (slo.minTotal if slo else 100) }}" size="6"></label>
  <label>Environment<input name="environment" value="{{ form.environment or (slo.environment or '' if slo else '') }}" size="8" placeholder="all"></label>
  <button type="submit">Save objective</button></form>
{% endblock %}""",

    "project_alerts.html": """{% extends "base.html" %}{% block title %}Alert rules · {{ project.name }}{% endblock %}{% block main %}
<div class="muted fs-12"><a href="/projects/">Projects</a> · <a href="/issues/?project={{ project.slug }}">{{ project.name }}</a> · <a href="/alerts/">channels and deliveries</a></div>
<h1>Alert rules</h1>
{% if error %}<div class="card search-error">{{ error }}</div>{% endif %}
<div class="card">{% for r in rules %}<div class="rule"><div class="flex-1"><b>{{ r.name }}</b><div class="muted">{{ r.words }}</div></div>
  <form method="post"><input type="hidden" name="csrf" value="{{ csrf }}"><input type="hidden" name="delete" value="{{ r.id }}"><button class="secondary">Delete</button></form></div>{% else %}<div class="empty">No rules: nothing about this project notifies anyone.</div>{% endfor %}</div>
<form method="post" class="card filters"><input type="hidden" name="csrf" value="{{ csrf }}"><label>Name<input name="name" value="{{ form.name }}" required size="22" placeholder="Checkout errors to on-call"></label>
  <fieldset><legend>When</legend>{% for key, label in [('new', 'a new issue'), ('regression', 'a regression'), ('escalating', 'an ignored issue escalates')] %}<label><input type="checkbox" name="when" value="{{ key }}" {{ 'checked' if key in when }}> {{ label }}</label>{% endfor %}
    <label>or more than <input name="events_value" value="{{ form.events_value }}" size="4"> events in <select name="events_interval">{% for i in intervals %}<option {{ 'selected' if form.events_interval == i }}>{{ i }}</option>{% endfor %}</select></label>
    <label>or more than <input name="users_value" value="{{ form.users_value }}" size="4"> users in <select name="users_interval">{% for i in intervals %}<option {{ 'selected' if form.users_interval == i }}>{{ i }}</option>{% endfor %}</select></label></fieldset>
  <fieldset><legend>If</legend><label>Environment<input name="environment" value="{{ form.environment }}" size="8" placeholder="any"></label>
    <label>Level at least<select name="level"><option value="">any</option>{% for l in ['warning', 'error', 'fatal'] %}<option {{ 'selected' if form.level == l }}>{{ l }}</option>{% endfor %}</select></label>
    <label>Release<input name="release" value="{{ form.release }}" size="10" placeholder="any"></label><label>Tag<input name="tag" value="{{ form.tag }}" size="12" placeholder="service=payments"></label></fieldset>
  <fieldset><legend>Then</legend><label><input type="checkbox" name="notify" value="*"> all channels</label>{% for c in channels if c.kind != 'jira' %}<label><input type="checkbox" name="notify" value="{{ c.name }}"> {{ c.name }}</label>{% endfor %}
    <label><input type="checkbox" name="jira" value="1"> create a Jira issue</label>
    <label>at most once per <select name="frequency">{% for f in frequencies %}<option value="{{ f }}" {{ 'selected' if (form.frequency or '30') == f|string }}>{{ f }} min</option>{% endfor %}</select> per issue</label></fieldset>
  <button type="submit">Add rule</button></form>
{% endblock %}""",

    "account.html": """{% extends "base.html" %}{% block title %}Account{% endblock %}{% block main %}
<h1>{{ viewer.name }} <span class="muted">{{ viewer.role }}</span></h1>
{% if error %}<div class="card search-error">{{ error }}</div>{% elif saved %}<div class="card">Password changed; your other sessions are signed out.</div>{% endif %}
{% if viewer.via == 'session' %}<form method="post" class="card filters"><input type="hidden" name="csrf" value="{{ csrf }}"><h2 class="form-head">Change password</h2>
<label>Current password<input name="current" type="password" autocomplete="current-password" required></label>
<label>New password (10+ characters)<input name="new" type="password" autocomplete="new-password" minlength="10" required></label><button>Change</button></form>{% endif %}
{% if viewer.role == 'admin' %}<p><a href="/settings/">People and API tokens</a></p>{% endif %}{% endblock %}""",

    "settings.html": """{% extends "base.html" %}{% block title %}People and tokens{% endblock %}{% block main %}
<h1>People and API tokens</h1>
{% if error %}<div class="card search-error">{{ error }}</div>{% endif %}
{% if secret %}<div class="card secret"><b>{{ secret.label }}</b> (shown once, copy it now):<pre class="mono">{{ secret.value }}</pre></div>{% endif %}
<h2>People</h2><div class="card p-0"><table><thead><tr><th>Name</th><th>Role</th><th>Sign-in</th><th></th></tr></thead><tbody>
{% for u in users %}<tr><td>{{ u.name }}</td><td>{{ u.role }}</td><td class="muted">{{ 'disabled' if u.disabled else 'password' if u.password else 'login link or proxy only' }}</td>
<td>{% for action, label in ([] if u.disabled else [('link', 'One-time login link')]) + [('enable', 'Enable') if u.disabled else ('disable', 'Disable'), ('delete', 'Delete')] %}<form class="inline" method="post"><input type="hidden" name="csrf" value="{{ csrf }}"><input type="hidden" name="{{ action }}" value="{{ u.name }}"><button class="secondary">{{ label }}</button></form> {% endfor %}</td></tr>{% endfor %}
</tbody></table></div>
<form method="post" class="card filters"><input type="hidden" name="csrf" value="{{ csrf }}"><label>New person<input name="user" required placeholder="ana@example.org" size="22"></label>
<label>Role<select name="role">{% for r in roles|reverse %}<option>{{ r }}</option>{% endfor %}</select></label><button>Add, and make a login link</button></form>
<h2>API tokens</h2><p class="muted">For sentry-cli (<code>SENTRY_AUTH_TOKEN</code>), scripts and Prometheus: <code>Authorization: Bearer …</code>. A read token may also fetch dashboard pages.</p>
<div class="card p-0"><table><thead><tr><th>Id</th><th>Name</th><th>Scopes</th><th>Created</th><th></th></tr></thead><tbody>
{% for t in tokens %}<tr><td class="mono">{{ t.id }}</td><td>{{ t.name or '—' }}</td><td class="mono">{{ t.scopes }}</td><td>{{ t.created|datetime }}</td>
<td><form method="post"><input type="hidden" name="csrf" value="{{ csrf }}"><input type="hidden" name="revoke" value="{{ t.id }}"><button class="secondary">Revoke</button></form></td></tr>{% else %}<tr><td colspan="5" class="empty">No tokens.</td></tr>{% endfor %}
</tbody></table></div>
<form method="post" class="card filters"><input type="hidden" name="csrf" value="{{ csrf }}"><label>Token name<input name="token" required placeholder="CI releases" size="22"></label>
<label>Scope<select name="scope"><option>read</option><option>write</option><option>admin</option></select></label><button>Create token</button></form>{% endblock %}""",

    "envelopes.html": """{% extends "base.html" %}{% block title %}Envelopes · {{ project.name }}{% endblock %}{% block main %}
<div class="muted fs-12"><a href="/projects/">Projects</a> · <a href="/issues/?project={{ project.slug }}">{{ project.name }}</a></div>
<h1>Envelopes received</h1><p class="muted">Everything the SDKs sent to this project, as it arrived, and what became of each item: the newest {{ keep }} for a day, at most {{ rate }} a second.</p>
<div class="card p-0">{% if envelopes %}<table class="envelopes"><thead><tr><th>Received</th><th>Client</th><th class="num">Bytes</th><th>Items</th></tr></thead><tbody>
{% for e in envelopes %}<tr><td class="mono nowrap"><a href="/projects/{{ project.slug }}/envelopes/{{ e.id }}/">{{ e.received|datetime }}</a></td><td class="mono">{{ e.client }}</td><td class="num">{{ e.size }}</td>
<td>{% for kind, size, outcome in e.parts %}<span class="item {{ 'dropped' if outcome.startswith('dropped') else 'kept' }}" title="{{ outcome }}">{{ kind or '?' }}</span> {% endfor %}</td></tr>{% endfor %}
</tbody></table>{% else %}<div class="empty">Nothing received over HTTP in the last day. Point an SDK at one of this project's DSNs (<a href="/projects/{{ project.slug }}/setup/">setup</a>).
  Events loaded with <code>tracker send</code> or by <code>tracker demo</code> go straight into the database and are not logged here.</div>{% endif %}</div>{% endblock %}""",

    "envelope.html": """{% extends "base.html" %}{% block title %}Envelope · {{ project.name }}{% endblock %}{% block main %}
<div class="muted fs-12"><a href="/projects/{{ project.slug }}/envelopes/">Envelopes of {{ project.name }}</a></div>
<h1>Envelope from {{ envelope.client or 'an unnamed client' }}</h1>
<p class="muted">{{ envelope.received|datetime }} · {{ envelope.size }} bytes decompressed</p>
<div class="card"><h2 class="mt-0">Envelope header</h2><pre class="json">{{ header|pretty(2) }}</pre></div>
{% for item in items %}<div class="card"><h2 class="mt-0">{{ item.kind or '?' }} <span class="muted">{{ item.size }} bytes</span>
<span class="item {{ 'dropped' if item.outcome.startswith('dropped') else 'kept' }}">{{ item.outcome }}</span></h2>
{% if item.header %}<pre class="json">{{ item.header|pretty(2) }}</pre>{% endif %}
{% if item.event %}<p>Stored as <a href="/issues/{{ item.event.issue_id }}/events/{{ item.event.event_id }}/">event {{ item.event.event_id[:12] }}</a> (<a href="/issues/{{ item.event.issue_id }}/events/{{ item.event.event_id }}/json">its JSON, scrubbed</a>): this project scrubs data before storing it, so the log keeps no copy of what was sent.</p>
{% elif item.body is not none %}<pre class="json">{{ item.body }}</pre>{% endif %}</div>{% endfor %}
{% if not body_kept %}<div class="card empty">The body was over 1 MiB, so only its item types and outcomes were kept.</div>{% endif %}{% endblock %}""",

    "live.html": """{% extends "base.html" %}{% block title %}Live{% endblock %}{% block main %}
<h1>Live</h1><p class="muted" id="live-state">Newest events; with scripts on, new ones appear at the top as they arrive.</p>
<div class="card p-0"><table id="live" class="issues"><thead><tr><th>Received</th><th>Project</th><th>Level</th><th>Event</th><th>Culprit</th></tr></thead>
<tbody data-after="{{ after }}">{% for e in events %}<tr class="row-{{ e.level }}"><td class="mono nowrap">{{ e.time }}</td><td class="nowrap"><a href="/issues/?project={{ e.project }}">{{ e.project }}</a></td><td class="level"><a href="{{ filter_url('level', e.level, e.project) }}">{{ e.level }}</a></td>
<td><a href="/issues/{{ e.issue_id }}/events/{{ e.event_id }}/">{{ e.title }}</a></td><td class="culprit">{{ e.culprit }}</td></tr>{% endfor %}</tbody></table>
{% if not events %}<div class="empty" id="live-empty">No events yet.</div>{% endif %}</div>
<script src="/static/live.js"></script>{% endblock %}""",

    "trace.html": """{% extends "base.html" %}{% block title %}Trace {{ t.trace_id[:12] }}{% endblock %}{% block main %}
<div class="muted fs-12">Trace · <a href="/logs/?q=trace:{{ t.trace_id }}">its log lines</a> · <a href="/issues/?status=all&amp;q=trace:{{ t.trace_id }}">its issues</a></div>
<h1 class="mono">{{ t.trace_id }}</h1>
<div class="card"><div class="facts">
  <div class="trace-errors-count"><b>{{ t.errors|length }}</b><span>errors</span></div><div><b>{{ t.services|length }}</b><span>services</span></div>
  <div><b>{{ t.transactions|length }}</b><span>transactions</span></div><div><b>{{ t.waterfall|length }}</b><span>spans</span></div>
  <div><b>{{ t.logs|length }}</b><span>log lines</span></div><div><b>{{ t.duration_ms|ms }}</b><span>from first to last</span></div>
  <div><b>{{ t.start|datetime }}</b><span>started</span></div></div>
  <div class="chips mt-6">{% for s in t.services %}<a href="/issues/?project={{ s }}&amp;status=all">{{ s }}</a>{% endfor %}</div></div>
{% if t.errors %}<div class="card trace-errors"><h2 class="mt-0">Errors, in order</h2>{% for e in t.errors %}<div class="trace-error">
  <span class="mono muted offset">+{{ ((e.timestamp - t.start) * 1000)|ms }}</span> <span class="svc">{{ e.project_slug }}</span>
  <span class="badge lvl-{{ e.level }}">{{ e.level }}</span> <a class="issue-title" href="/issues/{{ e.issue_id }}/events/{{ e.event_id }}/">{{ e.title }}</a>
  <span class="muted mono">{{ shorts[e.event_id] }} · {{ e.culprit }}</span></div>{% endfor %}</div>{% endif %}
{% if t.waterfall %}<div class="card p-0"><h2 class="pad">Spans</h2>
<table class="waterfall"><thead><tr><th>Span</th><th>Service</th><th class="num">Duration</th><th class="bar-cell">{{ t.duration_ms|ms }}</th></tr></thead><tbody>
{% for s in t.waterfall %}<tr class="{{ 'span-tx' if s.is_transaction else 'span-child' }}{{ ' span-failed' if s.status not in ('ok', '', 'unknown') }}">
  <td class="span-name depth-{{ [s.depth, 12]|min }}"><span class="op">{{ s.op or '—' }}</span> {{ s.description }}</td>
  <td class="svc">{{ s.transaction.project_slug }}</td><td class="num mono">{{ ((s.end - s.start) * 1000)|ms }}</td>
  <td class="bar-cell"><svg class="span-bar" viewBox="0 0 100 10" preserveAspectRatio="none" role="img" aria-label="{{ s.op }}"><rect x="{{ s.left|round(3) }}" y="1" width="{{ s.width|round(3) }}" height="8"><title>{{ s.op }} {{ s.description }}: {{ ((s.end - s.start) * 1000)|ms }}</title></rect></svg></td></tr>
{% endfor %}</tbody></table></div>{% endif %}
<div class="card p-0"><h2 class="pad">Timeline</h2>
<table class="timeline"><thead><tr><th class="num">Offset</th><th>Service</th><th>Kind</th><th>What</th><th>In span</th></tr></thead><tbody>
{% for x in t.timeline %}<tr class="tl-{{ x.kind }}">
  <td class="mono num nowrap">+{{ x.offset_ms|ms }}</td><td class="svc">{{ x.project_slug }}</td>
  <td>{% if x.kind == 'error' %}<span class="badge lvl-{{ x.level }}">{{ x.level }}</span>{% elif x.kind == 'log' %}<span class="loglvl ll-{{ x.level }}">{{ x.level }}</span>{% else %}<span class="kind-tx">transaction</span>{% endif %}</td>
  <td>{% if x.kind == 'error' %}<a class="issue-title" href="/issues/{{ x.issue_id }}/events/{{ x.event_id }}/">{{ x.title }}</a> <span class="muted mono">{{ shorts[x.event_id] }}</span>
  {% elif x.kind == 'log' %}<span class="mono log-body">{{ x.body }}</span>{% else %}<b>{{ x.name }}</b> <span class="muted">{{ x.op }} · {{ x.duration_ms|ms }} · {{ x.status }}</span>{% endif %}</td>
  <td class="mono muted">{% if x.in_span %}{{ x.in_span.transaction.name }}{% if not x.in_span.is_transaction %} › {{ x.in_span.op }} {{ x.in_span.description|truncate(60) }}{% endif %}{% endif %}</td></tr>
{% endfor %}</tbody></table></div>
{% endblock %}""",

    "logs.html": """{% extends "base.html" %}{% block title %}Logs{% endblock %}{% block head %}{% if f.live %}<meta http-equiv="refresh" content="5">{% endif %}{% endblock %}{% block main %}
<form class="filters" method="get" action="/logs/">
  <label>Project<select name="project"><option value="">All projects</option>
    {% for p in projects %}<option value="{{ p.slug }}" {{ 'selected' if p.slug == f.project }}>{{ p.name }}</option>{% endfor %}</select></label>
  <label>Severity<select name="level"><option value="">All</option>
    {% for l in levels %}<option {{ 'selected' if l == f.level }}>{{ l }}</option>{% endfor %}</select></label>
  <label class="search">Search<input type="search" name="q" value="{{ f.q }}" placeholder='"slow query" trace:… release:… environment:… logger.name:shop.orders'></label>
  <label class="live"><span>Live</span><select name="live"><option value="">off</option><option value="1" {{ 'selected' if f.live }}>every 5 s</option></select></label>
  <button type="submit">Filter</button>
</form>
{% if error %}<div class="card search-error">Search: {{ error }}</div>{% endif %}
<div class="card p-0">{% if logs %}<table class="logs"><thead><tr><th>Time</th><th>Severity</th><th>Service</th><th>Message</th><th>Trace</th></tr></thead><tbody>
{% for l in logs %}<tr class="log-row ll-row-{{ l.level }}"><td class="mono nowrap" title="{{ l.timestamp|datetime }}">{{ l.timestamp|datetime }}</td>
  <td><span class="loglvl ll-{{ l.level }}">{{ l.level }}</span></td><td class="svc nowrap">{{ l.project_slug }}</td>
  <td><details class="log"><summary class="mono log-body">{{ l.body }}</summary><table class="kv">
    {% for k, v in l.attrs.items() %}<tr><td>{{ k }}</td><td>{{ v }}</td></tr>{% endfor %}
    <tr><td>release</td><td>{{ l.release or '—' }}</td></tr><tr><td>environment</td><td>{{ l.environment }}</td></tr></table></details></td>
  <td class="mono nowrap">{% if l.trace_id %}<a href="/traces/{{ l.trace_id }}/">{{ l.trace_id[:8] }}</a>{% endif %}</td></tr>
{% endfor %}</tbody></table>{% else %}<div class="empty">No log lines match. SDKs send them with <code>sentry_sdk.logger.info(…)</code> (Python, <code>enable_logs=True</code> for the logging module) or <code>Sentry.logger.info(…)</code> (JavaScript).</div>{% endif %}</div>
{% endblock %}""",

    "login.html": """{% extends "base.html" %}{% block title %}Sign in{% endblock %}{% block main %}
<form method="post" action="/login" class="card login"><h1>Sign in</h1>
{% if error %}<div class="search-error">{{ error }}</div>{% endif %}
<input type="hidden" name="next" value="{{ next }}">
<label>User name<input name="name" value="{{ user_name }}" autocomplete="username" required autofocus></label>
<label>Password<input name="password" type="password" autocomplete="current-password" required></label>
<button type="submit">Sign in</button>
<p class="muted">The first start printed the <code>admin</code> password. Forgotten it? <code>tracker user passwd admin</code> on the server, or <code>tracker user link admin</code> for a one-time login link.</p></form>{% endblock %}""",

    "attachment.html": """{% extends "base.html" %}{% block title %}{{ a.filename }}{% endblock %}{% block main %}
<div class="muted fs-12"><a href="/issues/{{ issue.id }}/">{{ short }}</a> · {% if is_event %}<a href="/issues/{{ issue.id }}/events/{{ a.event_id }}/">event {{ a.event_id[:12] }}</a>{% else %}feedback {{ a.event_id[:12] }}{% endif %}</div>
<h1>{{ a.filename }}</h1><p class="muted">{{ a.content_type }} · {{ a.size_text }} · sha1 <span class="mono">{{ a.sha1 }}</span> · <a href="/issues/{{ issue.id }}/events/{{ a.event_id }}/attachments/{{ a.id }}/">download</a></p>
<div class="card"><pre class="block attachment-text">{{ content }}</pre></div>{% endblock %}""",

    "feedback.html": """{% extends "base.html" %}{% block title %}User feedback · {{ project.name }}{% endblock %}{% block main %}
<div class="muted fs-12"><a href="/projects/">Projects</a> · <a href="/issues/?project={{ project.slug }}">{{ project.name }}</a></div>
<h1>User feedback</h1><p class="muted">What people wrote (feedback widgets, <code>captureFeedback</code>, user reports), newest first: the newest 200. Feedback about an event shows on its issue too.</p>
<div class="card p-0">{% if feedback %}<table class="feedback-list"><thead><tr><th>Received</th><th>From</th><th>Message</th><th>Issue</th></tr></thead><tbody>
{% for fb in feedback %}<tr><td class="nowrap" title="{{ fb.created|datetime }}">{{ fb.created|ago }}</td><td><b>{{ fb.name or 'Anonymous' }}</b>{% if fb.email %}<div class="mono fs-12">{{ fb.email }}</div>{% endif %}</td>
<td><div class="message">{{ fb.message }}</div>{% if fb.url %}<div class="muted mono fs-12 break-all">{{ fb.url }}</div>{% endif %}</td>
<td>{% if fb.issue_id %}<a href="/issues/{{ fb.issue_id }}/#feedback">{{ fb.short }}</a> <span class="muted">{{ fb.title }}</span>{% elif fb.event_id %}<span class="muted">event {{ fb.event_id[:12] }} not received (yet)</span>{% else %}<span class="muted">—</span>{% endif %}</td></tr>{% endfor %}
</tbody></table>{% else %}<div class="empty">No feedback yet.</div>{% endif %}</div>{% endblock %}""",

    "new_project.html": """{% extends "base.html" %}{% block title %}New project{% endblock %}{% block main %}
<h1>New project</h1>
{% if error %}<div class="card search-error">{{ error }}</div>{% endif %}
<form method="post" action="/projects/new/" class="card stack"><input type="hidden" name="csrf" value="{{ csrf }}">
  <label>Name<input name="name" value="{{ fields.name }}" required maxlength="200" placeholder="checkout-api" autofocus></label>
  <label>Slug <span class="muted">(optional; in URLs and the API; from the name when empty)</span><input name="slug" value="{{ fields.slug }}" maxlength="50" pattern="[a-z0-9][a-z0-9_-]*"></label>
  <label>Platform<select name="platform">{% for key, (label, _) in platforms.items() %}<option value="{{ key }}" {{ 'selected' if key == fields.platform }}>{{ label }}</option>{% endfor %}</select></label>
  <p class="muted">The next page shows its DSN and the few lines that send your service's errors here.</p>
  <div><button type="submit">Create project</button></div>
</form>{% endblock %}""",

    "project_setup.html": """{% extends "base.html" %}{% block title %}Set up {{ project.name }}{% endblock %}{% block main %}
<h1>Set up {{ project.name }} <span class="muted mono fs-14">{{ project.slug }} · id {{ project.id }}</span></h1>
<div class="card"><h2 class="mt-0">DSN</h2>
{% if dsn %}<p><code class="dsn" id="dsn">{{ dsn }}</code> <button type="button" class="secondary copy" data-copy="dsn">Copy</button></p>
<p class="muted">Every official Sentry SDK takes it as it is. It is public (browsers see it): it lets clients send events, nothing more.</p>
{% else %}<p>This project has no active DSN key: enable or add one on <a href="/projects/">Projects &amp; DSNs</a>.</p>{% endif %}</div>
<div class="card"><h2 class="mt-0">Send your errors here</h2>
<nav class="tabs">{% for key, (label, _) in snippets.items() %}<a href="?platform={{ key }}"{% if key == chosen %} class="on" aria-current="page"{% endif %}>{{ label }}</a>{% endfor %}</nav>
<pre class="snippet" id="snippet"><code>{{ snippets[chosen][1] }}</code></pre>
<button type="button" class="secondary copy" data-copy="snippet">Copy</button></div>
<div class="card first-event" id="first-event" data-project="{{ project.slug }}" data-after="{{ after }}">
{% if first %}<b>Events are arriving.</b> <a href="/issues/{{ first.issue_id }}/events/{{ first.event_id }}/">See one</a> · <a href="/issues/?project={{ project.slug }}">all its issues</a>
{% else %}<span class="spinner" aria-hidden="true"></span> <b>Waiting for the first event…</b> <span class="muted">Run your service with the lines above and raise an error; it shows here as it is stored.</span>{% endif %}
</div>
<script src="/static/setup.js" defer></script>{% endblock %}""",

    "error.html": """{% extends "base.html" %}{% block title %}{{ title }}{% endblock %}{% block main %}
<div class="card empty"><h1>{{ title }} <span class="muted fw-normal">{{ code }}</span></h1><p>{{ message }}</p><p><a href="/issues/">Back to issues</a></p></div>{% endblock %}""",
}

CSS = """
.pad { padding: 12px 16px 0; margin: 0 0 8px; } .svc { font-size:12.5px; color: var(--muted); }
table.waterfall { table-layout: fixed; } table.waterfall td { padding: 3px 10px; font-size: 12.5px; }
table.waterfall th:nth-child(1) { width: 40%; } table.waterfall th:nth-child(2) { width: 12%; } table.waterfall th:nth-child(3) { width: 9%; }
td.span-name { white-space: nowrap; overflow: hidden; text-overflow: ellipsis; font-family: var(--mono); }
td.span-name .op { color: #5b21b6; } tr.span-tx td { background: #f5f7ff; } tr.span-tx td.span-name { font-weight: 600; }
tr.span-failed td.span-name .op { color: var(--error); } tr.span-failed svg.span-bar rect { fill: var(--error); }
svg.span-bar { width: 100%; height: 14px; display: block; background: #f2f4f7; } svg.span-bar rect { fill: #7a5af8; }
tr.span-tx svg.span-bar rect { fill: var(--accent); }
.depth-1 { padding-left: 22px !important; } .depth-2 { padding-left: 34px !important; } .depth-3 { padding-left: 46px !important; }
.depth-4 { padding-left: 58px !important; } .depth-5 { padding-left: 70px !important; } .depth-6 { padding-left: 82px !important; }
.depth-7 { padding-left: 94px !important; } .depth-8 { padding-left: 106px !important; } .depth-9 { padding-left: 118px !important; }
.depth-10 { padding-left: 130px !important; } .depth-11 { padding-left: 142px !important; } .depth-12 { padding-left: 154px !important; }
table.timeline td { padding: 5px 10px; } tr.tl-error td { background: #fef3f2; } tr.tl-transaction td { background: #f5f7ff; }
.trace-error { padding: 6px 0; border-bottom: 1px solid var(--line); } .trace-error:last-child { border-bottom: 0; }
.trace-error .offset { display: inline-block; min-width: 6em; }
.loglvl { font-size: 11.5px; font-weight: 600; text-transform: uppercase; font-family: var(--mono); }
.ll-trace, .ll-debug { color: var(--debug); } .ll-info { color: var(--info); } .ll-warn { color: var(--warning); }
.ll-error { color: var(--error); } .ll-fatal { color: var(--fatal); }
tr.ll-row-error td, tr.ll-row-fatal td { background: #fef3f2; } tr.ll-row-warn td { background: #fffaeb; }
.log-body { white-space: pre-wrap; word-break: break-word; } details.log > summary { cursor: pointer; list-style: none; }
table.logs td { padding: 4px 10px; } a.trace-link { font-weight: 600; }
:root { --fg:#1d2330; --muted:#667085; --line:#e4e7ec; --bg:#f7f8fa; --accent:#3b5bdb;
        --fatal:#9b1c1c; --error:#d92d20; --warning:#dc6803; --info:#1570ef; --debug:#667085;
        --crash:#fff4e5; --crashline:#ffe2b8; --mono: ui-monospace, SFMono-Regular, Menlo, Consolas, monospace; }
* { box-sizing: border-box; }
body { margin:0; font: 14px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; color:var(--fg); background:var(--bg); }
a { color: var(--accent); text-decoration: none; } a:hover { text-decoration: underline; }
header.top { background:#111827; color:#fff; padding:10px 24px; display:flex; gap:24px; align-items:center; }
header.top a { color:#e5e7eb; } header.top .brand { font-weight:700; color:#fff; font-size:16px; }
header.top .who { margin-left:auto; display:flex; gap:12px; align-items:center; font-size:13px; }
header.top .who form { margin:0; } button.link { background:none; border:0; color:#9ca3af; padding:0; cursor:pointer; font:inherit; }
tr.fresh td { background:#fef9c3; } td.nowrap { white-space:nowrap; }
span.item { display:inline-block; font-size:12px; padding:1px 6px; border-radius:4px; font-family:ui-monospace,monospace; }
span.item.kept { background:#dcfce7; color:#166534; } span.item.dropped { background:#fee2e2; color:#991b1b; }
div.drops { color:#92400e; font-size:12.5px; margin:4px 0; }
div.forward-line { font-size:12.5px; margin:4px 0; }
div.forward-line.failing, .forward-error { color:#b91c1c; }
.forward-failing { border-left:4px solid #b91c1c; }
div.key { margin:4px 0; display:flex; gap:8px; align-items:center; flex-wrap:wrap; } div.key form, form.key { margin:0; display:inline-flex; gap:6px; align-items:center; }
div.key.off code { text-decoration:line-through; color:#9ca3af; } .card.secret pre { white-space:pre-wrap; word-break:break-all; background:#f3f4f6; padding:8px; }
form.login { max-width:340px; margin:40px auto; display:flex; flex-direction:column; gap:12px; }
form.login label { display:flex; flex-direction:column; gap:4px; } form.login h1 { margin:0; }
main { padding: 20px 24px; max-width: 1400px; margin: 0 auto; }
h1 { font-size: 20px; margin: 0 0 4px; word-break: break-word; } h2 { font-size: 15px; margin: 24px 0 8px; }
.muted { color: var(--muted); } .mono { font-family: var(--mono); font-size: 12.5px; }
.card { background:#fff; border:1px solid var(--line); border-radius:8px; padding:14px 16px; margin-bottom:16px; }
form.filters { display:flex; gap:10px; flex-wrap:wrap; align-items:end; margin-bottom:14px; }
form.filters label.search { flex: 1; min-width: 280px; }
.search-error { border-color: #fda29b; background: #fef3f2; color: #b42318; }
form.filters label { display:flex; flex-direction:column; font-size:12px; color:var(--muted); gap:2px; }
select, input, button { font: inherit; padding:5px 8px; border:1px solid var(--line); border-radius:6px; background:#fff; }
button { background: var(--accent); color:#fff; border-color: var(--accent); cursor:pointer; }
table { border-collapse: collapse; width: 100%; }
th, td { text-align:left; padding: 8px 10px; border-bottom:1px solid var(--line); vertical-align: top; }
th { font-size:12px; color:var(--muted); font-weight:600; background:#fafbfc; }
table.issues td.num { text-align:right; font-variant-numeric: tabular-nums; white-space:nowrap; }
table.issues tr:hover td { background:#f5f7ff; }
.issue-title { font-weight:600; font-size:14.5px; word-break: break-word; }
.issue-title .v { font-weight:400; color: var(--fg); }
table.issues td:first-child { border-left: 3px solid transparent; }
table.issues tr.row-fatal td:first-child { border-left-color: var(--fatal); } table.issues tr.row-error td:first-child { border-left-color: var(--error); }
table.issues tr.row-warning td:first-child { border-left-color: var(--warning); } table.issues tr.row-info td:first-child { border-left-color: var(--info); }
.culprit { color: var(--muted); font-size: 12.5px; font-family: var(--mono); word-break: break-all; }
.badge { display:inline-block; padding:1px 7px; border-radius:10px; font-size:11.5px; font-weight:600; color:#fff; vertical-align: 2px; }
.lvl-fatal { background:var(--fatal); } .lvl-error { background:var(--error); } .lvl-warning { background:var(--warning); }
.lvl-info { background:var(--info); } .lvl-debug { background:var(--debug); }
.status { font-size:12px; padding:1px 7px; border-radius:10px; border:1px solid var(--line); color:var(--muted); }
.layout { display:grid; grid-template-columns: minmax(0, 1fr) 340px; gap: 20px; }
@media (max-width: 1000px) { .layout { grid-template-columns: 1fr; } }
.facts { display:flex; gap: 28px; flex-wrap: wrap; margin-top: 10px; }
.histogram { display:flex; flex-direction:column; justify-content:flex-end; }
.histogram svg { width: 240px; height: 40px; display:block; background: #f2f4f7; border-radius: 3px; } .histogram rect { fill: var(--accent); opacity: .75; }
.histogram span { font-size: 12px; color: var(--muted); }
.facts div b { display:block; font-size: 18px; } .facts div span { font-size: 12px; color: var(--muted); }
.nav { display:flex; gap: 8px; align-items:center; flex-wrap: wrap; margin: 12px 0; }
.nav a, .nav span.off { border:1px solid var(--line); border-radius:6px; padding:3px 10px; background:#fff; font-size:13px; }
.nav span.off { color: #c0c4cc; }
.nav .evmeta { display:flex; gap:6px; align-items:center; flex-wrap:wrap; font-size:12.5px; }
.nav .evmeta b { font-weight:600; font-family: var(--mono); }
.exc-head { font-size: 15px; margin: 4px 0 2px; word-break: break-word; }
.exc-head .type { font-weight:700; color: var(--error); }
.mechanism { font-size: 12px; color: var(--muted); margin-bottom: 8px; }
.frame { border:1px solid var(--line); border-radius:6px; margin: 6px 0; background:#fff; overflow:hidden; }
.frame > summary, .frame > .fh { padding: 6px 10px; font-family: var(--mono); font-size: 12.5px; cursor: pointer; list-style: none; background:#fafbfc; word-break: break-all; }
.frame.app > summary { background:#fff; }
.frame.crash { border-color:#f79009; box-shadow: 0 0 0 1px #f79009; }
.frame.crash > summary { background: var(--crash); }
.frame .fn { font-weight: 700; } .frame .tag { font-family: system-ui; font-size: 11px; border-radius:4px; padding:0 5px; margin-left:6px; }
.tag.app { background:#e0eaff; color:#2f4ac0; } .tag.crashtag { background:#f79009; color:#fff; }
pre.ctx { margin:0; padding: 6px 0; background:#0f172a; color:#cbd5e1; font: 12.5px/1.5 var(--mono); overflow-x:auto; }
pre.ctx span { display:block; padding: 0 10px; white-space: pre; }
pre.ctx span.hl { background:#334155; color:#fff; }
.frame.crash pre.ctx span.hl { background:#9a3412; font-weight:600; }
.frame .minified .mono { color: var(--fg); }
.processing-errors { border-left: 3px solid #f79009; } .processing-errors ul { margin: 0; padding-left: 18px; }
.processing-errors li { margin: 4px 0; font-size: 13px; } .processing-errors li .mono { font-size: 12px; }
pre.ctx i { display:inline-block; width: 4em; color:#64748b; font-style: normal; text-align:right; margin-right: 1em; user-select:none; }
table.kv { table-layout: fixed; } table.kv td { padding: 4px 10px; overflow-wrap: anywhere; }
table.kv td:first-child, table.kv th:first-child { width: 200px; color: var(--muted); font-family: var(--mono); font-size: 12.5px; word-break: break-all; }
table.kv td { font-family: var(--mono); font-size: 12.5px; word-break: break-word; }
table.vars { margin: 0; } table.vars td { padding: 3px 10px; }
table.kv div.v { max-height: 9.5em; overflow: auto; white-space: pre-wrap; }
details.frames { margin: 6px 0; } details.frames > summary { cursor: pointer; list-style: none; font-size: 12.5px; color: var(--muted);
  padding: 5px 10px; border: 1px dashed #d0d5dd; border-radius: 6px; background: #fafbfc; }
details.frames > summary:hover { color: var(--fg); } details.frames[open] > summary { margin-bottom: 4px; }
details.frames > .frame { margin-left: 12px; }
.frame > summary::before, details.frames > summary::before { content: '▸'; display:inline-block; width: 1em; color: var(--muted); }
.frame[open] > summary::before, details.frames[open] > summary::before { content: '▾'; }
h4 { font-size: 12px; margin: 12px 0 4px; color: var(--muted); text-transform: uppercase; letter-spacing: .04em; }
.sidebar table.kv td:first-child { width: 112px; }
.sidebar h3 { font-size: 13px; margin: 14px 0 6px; color: var(--muted); text-transform: uppercase; letter-spacing: .04em; }
.tagbar { margin: 6px 0 10px; } .tagbar .k { font-family: var(--mono); font-size: 12px; }
.bar { height: 6px; background: #e4e7ec; border-radius: 3px; overflow: hidden; margin: 2px 0 4px; }
/* a share as an SVG rect, not a width in a style attribute: the CSP allows no inline style */
.bar > svg { display:block; width:100%; height:100%; } .bar rect { fill: var(--accent); }
.chips a, .chips span { display:inline-block; border:1px solid var(--line); border-radius: 5px; padding: 1px 7px; margin: 2px 2px 2px 0; font-size: 12px; font-family: var(--mono); background:#fff; color: var(--fg); word-break: break-all; }
.chips b { color: var(--muted); font-weight: 500; }
pre.block { background:#f2f4f7; padding: 10px; border-radius: 6px; overflow-x: auto; font: 12.5px/1.45 var(--mono); white-space: pre-wrap; word-break: break-word; margin: 0; }
.crumb-error td { background: #fef3f2; } td.crumb-level { font-size: 12.5px; }
.commit { padding: 8px 0; border-bottom: 1px solid var(--line); } .commit:last-child { border-bottom: 0; }
.empty { padding: 40px; text-align: center; color: var(--muted); }
code.dsn { background:#f2f4f7; padding: 3px 6px; border-radius: 4px; font-size: 12.5px; word-break: break-all; }
.badge.regressed { background: #b42318; }
.slo-state { font-size:13px; padding:2px 8px; border-radius:10px; vertical-align:3px; color:#fff; }
.slo-history { display:flex; height:28px; margin:12px 0 4px; overflow:hidden; border-radius:4px; }
.slo-history span { flex:1 1 0; min-width:0; }
.health-facts { display:flex; gap:18px; flex-wrap:wrap; margin-top:4px; }
.health-facts div { display:flex; flex-direction:column; } .health-facts b { font-size:18px; }
.health-facts span { font-size:12px; color: var(--muted); }
.state-ok { background:#12b76a; color:#12b76a; } .state-breached { background:#d92d20; color:#d92d20; }
.state-no_data { background:#d0d5dd; color:#d0d5dd; } .slo-state.state-ok, .slo-state.state-breached, .slo-state.state-no_data { color:#fff; }
svg.chart { width:100%; height:120px; display:block; background: linear-gradient(#eef0f3 1px, transparent 1px) 0 0 / 100% 30px; }
.bar-fatal { fill:#7a271a; background:#7a271a; } .bar-error { fill:#d92d20; background:#d92d20; }
.bar-warning { fill:#f79009; background:#f79009; } .bar-info { fill:#2e90fa; background:#2e90fa; }
.bar-debug { fill:#98a2b3; background:#98a2b3; } .bar-new { fill:#6172f3; background:#6172f3; }
.bar-regressed { fill:#b42318; background:#b42318; }
.axis { display:flex; justify-content:space-between; font-size:11.5px; color: var(--muted); margin:2px 0 0 48px; }
.chart-wrap { display:flex; gap:6px; } .chart-wrap svg.chart { flex:1; min-width:0; }
.yaxis { width:42px; height:120px; display:flex; flex-direction:column; justify-content:space-between; align-items:flex-end;
  font-size:11px; color: var(--muted); font-variant-numeric: tabular-nums; line-height:1; }
svg.chart rect.hit { fill: transparent; } svg.chart rect.hit:hover { fill: rgba(100, 116, 139, .12); }
.legend { display:flex; gap:12px; font-size:12px; color: var(--muted); margin-top:6px; }
.legend i { display:inline-block; width:10px; height:10px; border-radius:2px; margin-right:4px; vertical-align:-1px; }
.periods { display:flex; gap:6px; margin:0 0 12px; } .periods a { padding:3px 10px; border:1px solid var(--line); border-radius:14px; background:#fff; }
.periods a.current { background: var(--fg); color:#fff; border-color: var(--fg); }
.share { display:flex; justify-content:space-between; gap:10px; margin:4px 0; font-size:13px; } .share span { overflow-wrap:anywhere; }
.top-issue { margin:6px 0; } .top-issue .num { display:inline-block; min-width:3em; font-weight:600; }
svg.spark { width:72px; height:24px; display:block; } svg.spark rect.on { fill:#6172f3; } svg.spark rect.off { fill:#e4e7ec; }
.delivery-status { font-weight:600; } .status-delivered { color:#067647; } .status-dead { color:#b42318; }
.status-pending, .status-in_flight { color:#b54708; } .status-cancelled { color: var(--muted); }
fieldset { border:1px solid var(--line); border-radius:6px; padding:6px 10px; display:flex; flex-wrap:wrap; gap:10px; align-items:center; }
form.filters fieldset label { flex-direction:row; align-items:center; gap:4px; font-size:13px; color: var(--fg); }
legend { font-size:12px; color: var(--muted); }
.actions { display:flex; gap:8px; flex-wrap:wrap; align-items:center; margin-top:14px; padding-top:12px; border-top:1px solid var(--line); }
.actions form { display:flex; gap:4px; margin:0; } .actions .state { font-weight:600; margin-right:6px; }
.actions select, .actions input, .actions button { font-size:13px; padding:3px 8px; }
button.secondary { background:#fff; color:var(--fg); border-color:#d0d5dd; }
ul.activity { list-style:none; margin:0; padding:0; font-size:12.5px; }
ul.activity li { display:flex; justify-content:space-between; gap:8px; padding:4px 0; border-bottom:1px solid var(--line); }
ul.activity li:last-child { border-bottom:0; } ul.activity li .muted { white-space:nowrap; }
.frame .links { float: right; font-family: system-ui; font-size: 12px; font-weight: 400; }
.frame .links a { color: var(--muted); margin-left: 10px; } .frame .links a:hover { color: var(--accent); }
.report { margin-top: 8px; font-size: 12.5px; color: var(--muted); } .report a { margin-left: 8px; }
.frame .why { padding: 4px 10px; font-size: 12px; color: var(--muted); border-top: 1px solid var(--line); }
details.grouping > summary { cursor: pointer; } ol.values { margin: 4px 0 10px; padding-left: 28px; font-size: 12.5px; word-break: break-word; }
p.variant { margin: 12px 0 4px; } table.grouping-frames { margin: 8px 0; font-size: 12.5px; } table.grouping-frames td form { margin: 0; }
form.rules textarea { width: 100%; font: 12.5px/1.45 var(--mono); margin-top: 8px; } form.rules pre.block { margin-top: 6px; }
form.bulk { display:flex; gap:8px; align-items:center; margin-bottom:8px; }
.mon { display:inline-block; padding:1px 8px; border-radius:10px; font-size:12px; font-weight:600; color:#fff; white-space:nowrap; }
.mon-ok { background:#12b76a; } .mon-error { background:#d92d20; } .mon-missed { background:#f79009; } .mon-timeout { background:#7a271a; }
.mon-in_progress { background:#2e90fa; } .mon-new { background:#98a2b3; } .mon-none { background:#eaecf0; }
.ticks { display:flex; gap:2px; height:22px; } .ticks span { flex:0 0 7px; border-radius:2px; }
table.monitors td { vertical-align: middle; } table.monitors .sub { font-size:12px; color: var(--muted); margin-top:2px; }
.feedback-entry { padding:8px 0; border-bottom:1px solid var(--line); } .feedback-entry:last-child { border-bottom:0; }
.feedback-entry .message, table.feedback-list .message { white-space:pre-wrap; word-break:break-word; margin:4px 0; }
.nowrap { white-space:nowrap; }
form.stack { display:flex; flex-direction:column; gap:12px; max-width:560px; }
form.stack label { display:flex; flex-direction:column; gap:4px; font-weight:600; } form.stack label .muted, form.stack input, form.stack select { font-weight:400; }
nav.tabs { display:flex; gap:4px; flex-wrap:wrap; border-bottom:1px solid var(--line); margin-bottom:10px; }
nav.tabs a { padding:6px 12px; border:1px solid transparent; border-bottom:0; border-radius:6px 6px 0 0; color: var(--muted); }
nav.tabs a.on { border-color: var(--line); background: var(--bg); color: var(--fg); font-weight:600; margin-bottom:-1px; }
pre.snippet { background:#0f172a; color:#e2e8f0; padding:12px 14px; border-radius:6px; overflow-x:auto; font: 13px/1.5 var(--mono); margin:0 0 8px; }
.first-event { font-size:14.5px; } .first-event.arrived, .first-event:has(> b + a) { border-color:#12b76a; background:#ecfdf3; }
.spinner { display:inline-block; width:12px; height:12px; border:2px solid #d0d5dd; border-top-color: var(--accent); border-radius:50%;
  animation: spin 1s linear infinite; vertical-align:-1px; margin-right:4px; } @keyframes spin { to { transform: rotate(360deg); } }
a.button { display:inline-block; padding:5px 10px; border-radius:6px; background: var(--accent); color:#fff; }
/* the channel form shows the fields of the chosen kind only (CSS, as the page runs no script) */
form.channel-form:has(option:checked) label.k { display:none; }
form.channel-form:has(option[value=slack]:checked) label.k-slack { display:flex; }
form.channel-form:has(option[value=email]:checked) label.k-email { display:flex; }
form.channel-form:has(option[value=pagerduty]:checked) label.k-pagerduty { display:flex; }
form.channel-form:has(option[value=alertmanager]:checked) label.k-alertmanager { display:flex; }
form.channel-form:has(option[value=webhook]:checked) label.k-webhook { display:flex; }
form.channel-form:has(option[value=jira]:checked) label.k-jira { display:flex; }
/* Dark mode for whoever triages at 3 a.m.: the browser's prefers-color-scheme, no switch to find */
@media (prefers-color-scheme: dark) {
  :root { color-scheme: dark; --fg:#e4e7ec; --muted:#98a2b3; --line:#2b3444; --bg:#0d1117; --accent:#7b97ff;
          --crash:#3a2410; --crashline:#5a3512; }
  .card, .frame, .frame.app > summary, .nav a, .nav span.off, .chips a, .chips span, select, input, button.secondary,
  .periods a, textarea { background:#161b22; color: var(--fg); }
  button.secondary { border-color:#3b4557; } .nav span.off { color:#5b6472; }
  th, .frame > summary, .frame > .fh, details.frames > summary { background:#1b222c; }
  table.issues tr:hover td { background:#1c2433; } tr.fresh td { background:#3a3512; }
  pre.block, code.dsn, .histogram svg, .card.secret pre { background:#1f2630; color: var(--fg); }
  .bar, .mon-none, svg.spark rect.off { background:#2b3444; fill:#2b3444; }
  svg.chart { background: linear-gradient(#232b36 1px, transparent 1px) 0 0 / 100% 30px; }
  .search-error, .crumb-error td { background:#3b1512; border-color:#7a271a; color:#fda29b; }
  .tag.app { background:#1e2a4d; color:#a4bcfd; } span.item.kept { background:#0f3a22; color:#75e0a7; }
  span.item.dropped { background:#451a1a; color:#fda29b; } div.drops { color:#fec84b; }
  .first-event.arrived, .first-event:has(> b + a) { background:#0f2a1c; border-color:#12b76a; }
  .periods a.current { background: var(--fg); color:#0d1117; } .status-delivered { color:#47cd89; }
  .status-dead, .unhandled, .exc-head .type { color:#f97066; } .status-pending, .status-in_flight { color:#fdb022; }
  header.top { background:#010409; border-bottom:1px solid var(--line); }
}
/* Small adjustments the templates use where they once had style attributes (the CSP allows none).
   Last in the sheet, so they win over the rules above of the same weight, as the attributes did
   (and .sidebar .mt-0 outweighs .sidebar h3). */
.mt-0, .sidebar .mt-0 { margin-top:0; } .mt-4 { margin-top:4px; } .mt-6 { margin-top:6px; } .mb-8 { margin-bottom:8px; }
.my-4 { margin:4px 0; } .my-6 { margin:6px 0; } .p-0 { padding:0; } .flex-1 { flex:1; } form.inline { display:inline; }
.fs-11-5 { font-size:11.5px; } .fs-12 { font-size:12px; } .fs-12-5 { font-size:12.5px; } .fs-13 { font-size:13px; }
.fs-14 { font-size:14px; } .fw-normal { font-weight:400; } .break-all { word-break:break-all; }
.filters-note { margin:-6px 0 10px; font-size:12.5px; } .form-head { margin:0 0 8px; width:100%; }
.inset-head { margin:14px 16px 4px; } .inset-legend { margin:0; padding:8px 10px; }
.rule { display:flex; gap:12px; align-items:flex-start; margin:8px 0; } .unhandled { color: var(--error); }
.tag-value { font-size:12px; display:flex; justify-content:space-between; gap:8px; }
.last-error { max-width:340px; overflow-wrap:anywhere; }
"""

FAVICON = ('<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 16 16"><rect width="16" height="16" rx="3" '
           'fill="#111827"/><circle cx="8" cy="8" r="4" fill="#ef4444"/></svg>')

# The one script of the dashboard, a file (so the CSP needs no inline script): it adds each
# announced event as a row, through textContent only, since every field is event data.
LIVE_JS = """"use strict";
const rows = document.querySelector("#live tbody");
const state = document.querySelector("#live-state");
const source = new EventSource("/live/events?after=" + encodeURIComponent(rows.dataset.after));
function anchor(href, text) {
  const a = document.createElement("a"); a.href = href; a.textContent = text; return a;
}
function cell(row, text, className) {
  const td = row.insertCell(); td.textContent = text; if (className) td.className = className; return td;
}
source.addEventListener("event", (message) => {
  const e = JSON.parse(message.data);
  const row = rows.insertRow(0);
  row.className = "row-" + e.level + " fresh";
  cell(row, e.time, "mono nowrap");
  cell(row, "", "nowrap").append(anchor("/issues/?" + new URLSearchParams({project: e.project}), e.project));
  cell(row, "", "level").append(anchor("/issues/?" + new URLSearchParams({project: e.project, q: 'level:"' + e.level + '"'}), e.level));
  const link = document.createElement("a");
  link.href = "/issues/" + Number(e.issue_id) + "/events/" + encodeURIComponent(e.event_id) + "/";
  link.textContent = e.title;
  cell(row, "").append(link); cell(row, e.culprit, "culprit");
  while (rows.rows.length > 200) rows.deleteRow(-1);
  document.querySelector("#live-empty")?.remove();
});
source.onopen = () => { state.textContent = "live: new events appear at the top"; };
source.onerror = () => { state.textContent = "connection lost, reconnecting…"; };
"""

# The setup page's snippets: {DSN} and {RELEASE} are filled in; the platform each key stores on a new project.
SETUP_SNIPPETS = {
    "fastapi": ("Python · FastAPI", """# pip install "sentry-sdk[fastapi]"
import sentry_sdk

sentry_sdk.init(
    dsn="{DSN}",
    release="{RELEASE}",
    environment="production",
)
# Call init before `app = FastAPI()`: unhandled errors in your endpoints are sent with the request."""),
    "celery": ("Python · Celery", """# pip install "sentry-sdk[celery]"   (in the worker, e.g. celery_app.py)
import sentry_sdk
from sentry_sdk.integrations.celery import CeleryIntegration

sentry_sdk.init(
    dsn="{DSN}",
    release="{RELEASE}",
    environment="production",
    integrations=[CeleryIntegration(monitor_beat_tasks=True)],  # beat tasks become cron monitors
)"""),
    "logging": ("Python · logging", """# pip install sentry-sdk
import logging
import sentry_sdk
from sentry_sdk.integrations.logging import LoggingIntegration

sentry_sdk.init(
    dsn="{DSN}",
    release="{RELEASE}",
    environment="production",
    # INFO and up become breadcrumbs; ERROR and up (log.error, log.exception) become events
    integrations=[LoggingIntegration(level=logging.INFO, event_level=logging.ERROR)],
)
logging.getLogger(__name__).error("payment failed", extra={"order": "ord_123"})"""),
    "browser": ("Browser JavaScript", """// npm install @sentry/browser
import * as Sentry from "@sentry/browser";

Sentry.init({
  dsn: "{DSN}",
  release: "{RELEASE}",
  environment: "production",
});"""),
    "node": ("Node.js", """// npm install @sentry/node   (require it before anything else)
const Sentry = require("@sentry/node");

Sentry.init({
  dsn: "{DSN}",
  release: "{RELEASE}",
  environment: "production",
});"""),
    "go": ("Go", """// go get github.com/getsentry/sentry-go
import (
    "time"

    "github.com/getsentry/sentry-go"
)

func main() {
    if err := sentry.Init(sentry.ClientOptions{
        Dsn:         "{DSN}",
        Release:     "{RELEASE}",
        Environment: "production",
    }); err != nil {
        panic(err)
    }
    defer sentry.Flush(2 * time.Second)
    defer sentry.Recover() // panics are sent too
}"""),
    "ruby": ("Ruby", """# Gemfile: gem "sentry-ruby" (and gem "sentry-rails" for Rails)
Sentry.init do |config|
  config.dsn = "{DSN}"
  config.release = "{RELEASE}"
  config.environment = "production"
end"""),
}

SETUP_PLATFORMS = {"fastapi": "python", "celery": "python", "logging": "python", "browser": "javascript",
                   "node": "node", "go": "go", "ruby": "ruby"}

SETUP_JS = """"use strict";
for (const button of document.querySelectorAll("button.copy")) {
  button.addEventListener("click", async () => {
    await navigator.clipboard.writeText(document.getElementById(button.dataset.copy).textContent.trim());
    button.textContent = "Copied";
  });
}
const box = document.querySelector("#first-event");
if (box && box.querySelector(".spinner")) {
  const source = new EventSource("/live/events?after=" + encodeURIComponent(box.dataset.after));
  source.addEventListener("event", (message) => {
    const e = JSON.parse(message.data);
    if (e.project !== box.dataset.project) return;
    source.close();
    const link = document.createElement("a");
    link.href = "/issues/" + Number(e.issue_id) + "/events/" + encodeURIComponent(e.event_id) + "/";
    link.textContent = e.title;
    const head = document.createElement("b");
    head.textContent = "First event received: ";
    box.replaceChildren(head, link);
    box.classList.add("arrived");
  });
}
"""

if __name__ == "__main__":
    main()
