"""The tracker's edges (issue 15, items 6-8), driven with real clients and raw sockets: the client
address behind a trusted TLS proxy (/stream's loopback check, the login throttle), bounded request
heads, read timeouts and connections, and owner-only database and backup files."""
from __future__ import annotations

import json
import os
import resource
import socket
import stat
import subprocess
import time
import uuid
from pathlib import Path
from typing import Iterator

import httpx
import pytest
import sentry_sdk
from conftest import ADMIN_PASSWORD, ROOT, TRACKER, TrackerServer, start_server, stop_server

import tracker as tracker_module

MIB = 1024 * 1024
HEADER_TIMEOUT, BODY_TIMEOUT = 1.5, 2.0  # short, so the slow-client tests stay fast
EDGE_CONFIG = f"""
[server]
trusted_proxies = "127.0.0.1"
header_timeout = {HEADER_TIMEOUT}
body_timeout = {BODY_TIMEOUT}
"""


@pytest.fixture(scope="module")
def edge(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TrackerServer]:
    """A tracker behind a (pretend) TLS proxy on this machine, with short read timeouts, started
    under a permissive umask: the files it makes must be owner-only all the same."""
    tmp = tmp_path_factory.mktemp("edges")
    (tmp / "tracker.toml").write_text(EDGE_CONFIG)
    umask = os.umask(0o022)
    try:
        server = start_server(tmp / "tracker.db", "--config", str(tmp / "tracker.toml"))
    finally:
        os.umask(umask)
    try:
        yield server
    finally:
        stop_server(server)


FILE_LIMIT = 256  # the crowded server's `ulimit -n`: room for 128 connections (FD_RESERVE is 128)


@pytest.fixture(scope="module")
def crowded(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TrackerServer]:
    """A tracker with no trusted proxy, a low file limit and read timeouts too long to help."""
    tmp = tmp_path_factory.mktemp("crowded")
    (tmp / "tracker.toml").write_text("[server]\nheader_timeout = 60\n")
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (FILE_LIMIT, hard))  # inherited by the server process
    try:
        server = start_server(tmp / "tracker.db", "--config", str(tmp / "tracker.toml"))
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
    try:
        yield server
    finally:
        stop_server(server)


def login(server: TrackerServer, name: str, password: str, address: str) -> httpx.Response:
    return httpx.post(f"{server.url}/login", data={"name": name, "password": password}, timeout=10,
                      headers={"X-Forwarded-For": address})


def event_envelope(message: str) -> bytes:
    return b"{}\n" + json.dumps({"type": "event"}).encode() + b"\n" + json.dumps({"message": message}).encode() + b"\n"


# -- item 6: the client behind a trusted proxy -----------------------------------------------------

def test_stream_takes_the_forwarded_address(edge: TrackerServer) -> None:
    remote = httpx.post(f"{edge.url}/stream", content=event_envelope("from afar"), timeout=10,
                        headers={"X-Forwarded-For": "203.0.113.9"})
    assert remote.status_code == 403 and "from this machine only" in remote.text
    local = httpx.post(f"{edge.url}/stream", content=event_envelope("from here"), timeout=10,
                       headers={"X-Forwarded-For": "127.0.0.1"})
    assert local.status_code == 200, local.text


def test_failures_under_random_names_do_not_lock_the_admin_out(edge: TrackerServer) -> None:
    attacker = "203.0.113.66"
    answers = [login(edge, f"nobody-{uuid.uuid4().hex[:8]}", "guessed password", attacker).status_code
               for _ in range(12)]
    assert answers[:11] == [401] * 11 and answers[11] == 429  # 10 free, then the address waits
    # asked at once, while the address's first wait (1 s) runs: a slow machine can't outlast it
    assert login(edge, "admin", ADMIN_PASSWORD, attacker).status_code == 429  # the guesser still waits
    assert login(edge, "admin", ADMIN_PASSWORD, "198.51.100.7").status_code == 303


def test_guesses_at_a_name_from_many_addresses_only_slow_its_owner(edge: TrackerServer) -> None:
    name, password = f"owner-{uuid.uuid4().hex[:8]}", "the owner's own password"
    edge.cli("user", "create", name, "--password", password)
    assert [login(edge, name, "guessed password", f"203.0.113.{i}").status_code for i in range(1, 13)] == [401] * 12
    started = time.monotonic()
    assert login(edge, name, password, "198.51.100.20").status_code == 303
    assert time.monotonic() - started < 2.0 + 1.5  # held up to 2 s (the name's pause), then a scrypt check


def test_without_trusted_proxies_x_forwarded_for_is_ignored(crowded: TrackerServer) -> None:
    answers = [login(crowded, f"nobody-{uuid.uuid4().hex[:8]}", "guessed password", f"198.51.100.{i}").status_code
               for i in range(1, 13)]
    assert answers[:11] == [401] * 11 and answers[11] == 429  # one address (127.0.0.1), whatever the header said


def test_trusted_proxies_from_toml_env_and_flag(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    config = tmp_path / "tracker.toml"
    config.write_text('[server]\ntrusted_proxies = ["127.0.0.1", "10.0.0.0/8"]\n')
    assert tracker_module.load_settings(str(config)).trusted_proxies == "127.0.0.1,10.0.0.0/8"
    monkeypatch.setenv("TRACKER_TRUSTED_PROXIES", "192.0.2.1")
    assert tracker_module.load_settings(str(config)).trusted_proxies == "192.0.2.1"
    assert tracker_module.load_settings(str(config), trusted_proxies="::1").trusted_proxies == "::1"


def test_the_throttle_table_stays_bounded_and_keeps_a_busy_guesser() -> None:
    throttle = tracker_module.LoginThrottle()
    for i in range(100_000):  # one address cycling names, long ones
        throttle.failed(*throttle.keys(f"{i}-{'n' * 5000}", "203.0.113.66"))
    assert len(throttle.failures) <= throttle.KEPT and max(map(len, throttle.failures)) < 200
    assert throttle.wait(*throttle.keys("someone-new", "203.0.113.66")) > 0  # not forgiven by the churn
    for i in range(100_000):  # many addresses, one name
        throttle.failed(*throttle.keys("admin", f"2001:db8:{i:x}::1"))
    assert len(throttle.failures) <= throttle.KEPT
    assert throttle.wait(*throttle.keys("admin", "198.51.100.7")) == 0 and throttle.pause(*throttle.keys(
        "admin", "198.51.100.7")) <= 2.0
    keys = throttle.keys("admin", "2001:db8:1:2:3:4:5:6"), throttle.keys("admin", "2001:db8:1:2:ffff::9")
    assert keys[0] == keys[1]  # an IPv6 address counts as its /64


# -- item 7: request heads, slow clients, connections ----------------------------------------------

def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime + stime


def answer_to(server: TrackerServer, request: bytes) -> bytes:
    """Send raw bytes and read until the server closes (a reset mid-send counts as closed)."""
    received = b""
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
        try:
            sock.sendall(request)
            while chunk := sock.recv(65536):
                received += chunk
        except (BrokenPipeError, ConnectionResetError):
            pass
    return received


def test_a_one_mib_header_is_refused_quickly(edge: TrackerServer) -> None:
    before, started = cpu_seconds(edge.process.pid), time.monotonic()
    answer = answer_to(edge, b"GET /login HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * MIB + b"\r\n\r\n")
    assert answer == b"" or answer.startswith(b"HTTP/1.1 431 "), answer[:100]
    assert time.monotonic() - started < 2 and cpu_seconds(edge.process.pid) - before < 0.5


def test_ten_thousand_headers_are_refused(edge: TrackerServer) -> None:
    fields = b"".join(b"X-Field-%d: v\r\n" % i for i in range(10_000))
    answer = answer_to(edge, b"GET /login HTTP/1.1\r\nHost: x\r\n" + fields + b"\r\n")
    assert answer.startswith(b"HTTP/1.1 431 "), answer[:100]


def test_a_large_body_is_not_taken_for_a_large_head(edge: TrackerServer) -> None:
    project = edge.create_project()
    body = event_envelope("x" * 600 * 1024)  # arrives in the same reads as its head
    r = httpx.post(f"{edge.url}/api/{project.id}/envelope/?sentry_key={project.key}", content=body, timeout=10)
    assert r.status_code == 200, r.text


def test_an_answer_leaves_in_one_send(edge: TrackerServer) -> None:
    """uvicorn writes an answer's head and body apart; they leave in one system call (OneSend), which
    the server's count of writes shows over 200 answers on one connection (refusals: nothing stored)."""
    def writes() -> int:
        return int(Path(f"/proc/{edge.process.pid}/io").read_text().split("syscw: ")[1].split()[0])
    request = b"POST /api/1/envelope/ HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\n{}\n"
    with socket.create_connection(("127.0.0.1", edge.port), timeout=10) as sock:
        before = writes()
        for _ in range(200):
            sock.sendall(request)
            answer = b""
            while not answer.endswith(b"}"):
                answer += sock.recv(65536)
            assert answer.startswith(b"HTTP/1.1 401 ") and b"missing authorization" in answer, answer
        sent = writes() - before
    assert 200 <= sent < 260, sent


def trickle(server: TrackerServer, head: bytes, every: float, give_up: float) -> tuple[float, bytes]:
    """Send `head`, then one byte every `every` s until the server closes the connection; how long
    that took and what it answered (waiting on recv paces the bytes: no sleeps)."""
    received = b""
    with socket.create_connection(("127.0.0.1", server.port)) as sock:
        started = time.monotonic()
        sock.sendall(head)
        sock.settimeout(every)
        while time.monotonic() - started < give_up:
            try:
                chunk = sock.recv(4096)
            except socket.timeout:
                try:
                    sock.sendall(b"x")
                except (BrokenPipeError, ConnectionResetError):
                    return time.monotonic() - started, received
                continue
            except ConnectionResetError:
                return time.monotonic() - started, received
            if not chunk:
                return time.monotonic() - started, received
            received += chunk
    raise AssertionError(f"still open after {give_up} s (answered {received[:100]!r})")


def test_a_slow_head_is_cut_off(edge: TrackerServer) -> None:
    took, answer = trickle(edge, b"GET /login HTTP/1.1\r\nHost: x\r\nX-Slow: ", every=0.3, give_up=10)
    assert HEADER_TIMEOUT - 0.1 < took < HEADER_TIMEOUT + 1.0 and answer.startswith(b"HTTP/1.1 408 "), (took, answer)


def test_the_next_head_has_its_own_deadline(edge: TrackerServer) -> None:
    """One timer serves a connection (GuardedHttp): armed for the first head, it fires before the
    second head is due and is set again, so a slow second head is cut off HEADER_TIMEOUT after its
    own first byte, neither sooner nor never."""
    with socket.create_connection(("127.0.0.1", edge.port), timeout=10) as sock:
        sock.sendall(b"GET /login HTTP/1.1\r\nHost: x\r\n\r\n")
        first = b""
        while b"\r\n\r\n" not in first:
            first += sock.recv(65536)
        assert first.startswith(b"HTTP/1.1 200 "), first[:100]
        time.sleep(HEADER_TIMEOUT * 0.6)
        started = time.monotonic()
        sock.sendall(b"GET /login HTTP/1.1\r\nHost: x\r\nX-Slow: ")
        sock.settimeout(0.2)
        answer = b""
        while b"408" not in answer and time.monotonic() - started < 10:
            try:
                chunk = sock.recv(65536)
            except socket.timeout:
                sock.sendall(b"x")
                continue
            if not chunk:
                break
            answer += chunk
        took = time.monotonic() - started
    assert b"HTTP/1.1 408 " in answer and HEADER_TIMEOUT - 0.1 < took < HEADER_TIMEOUT + 1.0, (took, answer[-200:])


def test_a_kept_alive_connection_is_closed_quietly(edge: TrackerServer) -> None:
    """After an answer a connection waits for its next request as long as uvicorn's keep-alive (5 s),
    then closes with nothing said: the wait is the deadline timer's (GuardedHttp), not a 408."""
    with socket.create_connection(("127.0.0.1", edge.port), timeout=10) as sock:
        sock.sendall(b"GET /login HTTP/1.1\r\nHost: x\r\n\r\n")
        first = b""
        while b"</html>" not in first:
            first += sock.recv(65536)
        started = time.monotonic()
        rest = sock.recv(4096)
        took = time.monotonic() - started
    assert first.startswith(b"HTTP/1.1 200 ") and rest == b"" and 4.9 < took < 6.5, (took, rest[:100])


def test_a_silent_connection_is_closed(edge: TrackerServer) -> None:
    with socket.create_connection(("127.0.0.1", edge.port), timeout=HEADER_TIMEOUT + 5) as sock:
        started = time.monotonic()
        answer = sock.recv(4096)
        assert HEADER_TIMEOUT - 0.1 < time.monotonic() - started < HEADER_TIMEOUT + 1.0
    assert answer.startswith(b"HTTP/1.1 408 "), answer


def test_a_slow_body_is_cut_off(edge: TrackerServer) -> None:
    project = edge.create_project()
    head = (f"POST /api/{project.id}/envelope/?sentry_key={project.key} HTTP/1.1\r\nHost: x\r\n"
            f"Content-Length: 1000\r\n\r\n").encode() + b"{}\n"
    took, answer = trickle(edge, head, every=0.3, give_up=10)
    assert BODY_TIMEOUT - 0.1 < took < BODY_TIMEOUT + 1.0 and answer.startswith(b"HTTP/1.1 408 "), (took, answer)
    assert httpx.get(f"{edge.url}/login", timeout=10).status_code == 200


def test_idle_connections_do_not_keep_an_sdk_out(crowded: TrackerServer) -> None:
    """More idle sockets than the server may hold files: before, it could accept no one else."""
    idle = []
    try:
        for _ in range(FILE_LIMIT + 50):
            sock = socket.create_connection(("127.0.0.1", crowded.port), timeout=10)
            sock.sendall(b"GET /login HTTP/1.1\r\n")  # a head begun, never finished
            idle.append(sock)
        project = crowded.create_project()
        sentry_sdk.init(dsn=project.dsn, default_integrations=False)
        try:
            sentry_sdk.capture_message("through the crowd", level="error")
            sentry_sdk.flush(10)
        finally:
            sentry_sdk.get_client().close()
            sentry_sdk.init()
        [issue] = crowded.wait_issues(project, 1, timeout=20)
        assert issue["title"] == "through the crowd"
    finally:
        for sock in idle:
            sock.close()


# -- item 8: owner-only files ----------------------------------------------------------------------

def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_database_wal_shm_and_backups_are_owner_only(edge: TrackerServer, tmp_path: Path) -> None:
    project = edge.create_project()
    r = httpx.post(f"{edge.url}/api/{project.id}/envelope/?sentry_key={project.key}",
                   content=event_envelope("written to the WAL"), timeout=10)
    assert r.status_code == 200
    files = [edge.db, Path(f"{edge.db}-wal"), Path(f"{edge.db}-shm")]
    assert {str(f): mode(f) for f in files} == {str(f): 0o600 for f in files}
    umask = os.umask(0o022)
    try:
        edge.cli("backup", str(tmp_path / "copy.db"))
    finally:
        os.umask(umask)
    assert mode(tmp_path / "copy.db") == 0o600


def test_a_readable_database_is_tightened_once(tmp_path: Path) -> None:
    db = tmp_path / "old.db"

    def create_project(name: str) -> str:
        out = subprocess.run([*TRACKER, "--db", str(db), "project", "create", name],
                             capture_output=True, text=True, timeout=60, cwd=ROOT)
        assert out.returncode == 0, out.stderr
        return out.stderr

    create_project("first")
    os.chmod(db, 0o644)  # as an older tracker made it
    assert "readable by other local users (mode 644)" in create_project("second")
    assert mode(db) == 0o600
    assert "readable" not in create_project("third")

