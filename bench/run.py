"""The ingest benchmark: the ceiling app and the tracker, same bodies, same machine, same run.

For each body size it starts the server on a free port, loads it with wrk (2 threads, a fixed
number of connections, a fixed time) from a separate process, and reports accepted/s, stored/s
(events committed and grouped, counted in the database once all answers are in), p50/p99,
peak memory (the server and its event workers) and database bytes per event; then the ratio stored/s ÷ ceiling/s, which is the figure
(machines are noisy). `--big` also builds a database of 1,000,000 events in 10,000 issues and times
the pages and API queries on it (bench/bigdb.py). Needs `wrk` (Debian package) and the test extras.
"""
from __future__ import annotations

import argparse
import os
import platform
import re
import socket
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path


import bodies as body_builder

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
KEY = "0123456789abcdef0123456789abcdef"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


ENV = {key: value for key, value in os.environ.items() if key != "PYTHONDONTWRITEBYTECODE"}


def start(cmd: list[str], port: int, cwd: Path) -> subprocess.Popen[bytes]:
    process = subprocess.Popen(cmd, cwd=cwd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=ENV)
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return process
        except OSError:
            time.sleep(0.05)
    raise SystemExit(f"{cmd[0]} did not start")


def peak_rss_mb(pid: int) -> float:
    status = Path(f"/proc/{pid}/status").read_text()
    return int(re.search(r"VmHWM:\s+(\d+)", status)[1]) / 1024  # type: ignore[index]


def children(pid: int) -> list[int]:
    """The processes `pid` started (the tracker's event workers), from /proc."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            if int(stat.read_text().rsplit(")", 1)[1].split()[1]) == pid:
                found.append(int(stat.parent.name))
        except (OSError, ValueError):
            continue
    return found


def pss_mb(pid: int) -> float:
    """Proportional set size: the process's private memory plus its share of pages it shares (the
    interpreter and libraries, with its event workers), so a sum over processes counts each page once."""
    try:
        rollup = Path(f"/proc/{pid}/smaps_rollup").read_text()
    except OSError:
        return 0.0
    return int(re.search(r"Pss:\s+(\d+)", rollup)[1]) / 1024  # type: ignore[index]


def wrk(port: int, body_file: Path, encoding: str, seconds: int, connections: int,
        server: int | None = None) -> dict[str, float]:
    """wrk's figures; with `server`, also the peak memory of it and its workers (PSS summed, sampled
    every 0.2 s while wrk runs)."""
    env = {**os.environ, "BODIES": str(body_file), "TARGET_PATH": "/api/1/envelope/", "ENCODING": encoding}
    load = subprocess.Popen(["wrk", "-t2", f"-c{connections}", f"-d{seconds}s", "--latency", "-s",
                             str(HERE / "bodies.lua"), f"http://127.0.0.1:{port}"],
                            stdout=subprocess.PIPE, text=True, env=env)
    memory = 0.0
    while load.poll() is None:
        if server:
            memory = max(memory, sum(pss_mb(pid) for pid in (server, *children(server))))
        time.sleep(0.2)
    out = load.communicate()[0]
    if load.returncode:
        raise SystemExit(f"wrk failed ({load.returncode})")
    def latency(label: str) -> float:
        value, unit = re.search(rf"{label}\s+([\d.]+)(us|ms|s)", out).groups()  # type: ignore[union-attr]
        return float(value) * {"us": 0.001, "ms": 1, "s": 1000}[unit]
    requests = int(re.search(r"(\d+) requests in", out)[1])  # type: ignore[index]
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    return {"memory": memory, "rps": float(re.search(r"Requests/sec:\s+([\d.]+)", out)[1]),  # type: ignore[index]
            "requests": requests, "non2xx": int(errors[1]) if errors else 0,
            "p50": latency("50%"), "p99": latency("99%")}


def run_ceiling(body_file: Path, encoding: str, seconds: int) -> dict[str, float]:
    port = free_port()
    process = start([sys.executable, "-m", "uvicorn", "ceiling:app", "--port", str(port), "--no-access-log",
                     "--log-level", "warning"], port, HERE)
    try:
        result = wrk(port, body_file, encoding, seconds, 32)
        return {**result, "rss": peak_rss_mb(process.pid)}
    finally:
        process.terminate()
        process.wait(10)


def side_load(port: int, body_file: Path, encoding: str, seconds: int, rate: float) -> subprocess.Popen[str]:
    """wrk posting `body_file` at most at about `rate` requests a second (8 connections, each pausing
    between requests; slower answers make it less), beside the main load."""
    env = {**os.environ, "BODIES": str(body_file), "TARGET_PATH": "/api/1/envelope/", "ENCODING": encoding,
           "DELAY": str(max(int(8000 / rate), 1))}
    return subprocess.Popen(["wrk", "-t1", "-c8", f"-d{seconds}s", "-s", str(HERE / "bodies.lua"),
                             f"http://127.0.0.1:{port}"], stdout=subprocess.DEVNULL, env=env, text=True)


def serve_tracker(db: Path, project: str, port: int) -> subprocess.Popen[bytes]:
    """`tracker serve` with one project configured by the TOML text `project`, started as the installed
    `tracker` command starts it: the module imported from its bytecode cache (a script is compiled
    afresh at every start, 35 MB of memory that stays)."""
    config = db.with_suffix(".toml")
    config.write_text(project)
    return start([sys.executable, "-c", "import tracker; tracker.main()", "--db", str(db), "--config",
                  str(config), "serve", "--port", str(port)], port, ROOT)


def run_tracker(body_file: Path, encoding: str, seconds: int, connections: int = 32, side: Path | None = None,
                side_rate: float = 0.0, forward: str = "") -> dict[str, float]:
    """One load run; `side` bodies are posted beside it at `side_rate`; with `forward` (mirror or relay)
    the bench project forwards to a second tracker on this machine, and the run also reports how long
    the outbox took to drain after the load."""
    with tempfile.TemporaryDirectory() as tmp:
        db, upstream_db = Path(tmp) / "bench.db", Path(tmp) / "upstream.db"
        project = f'[[projects]]\nname = "bench"\nslug = "bench"\ndsn_key = "{KEY}"\n'
        upstream = None
        if forward:
            upstream_port = free_port()
            upstream = serve_tracker(upstream_db, project, upstream_port)
            project += (f'forward = {{ dsn = "http://{KEY}@127.0.0.1:{upstream_port}/1", mode = "{forward}", '
                        'allow_private = true }\n')
        port = free_port()
        process = serve_tracker(db, project, port)
        try:
            beside = side_load(port, side, encoding, seconds, side_rate) if side else None
            result = wrk(port, body_file, encoding, seconds, connections, process.pid)
            if beside:
                beside.wait(30)
            with sqlite3.connect(db) as conn:  # every answer came after its commit: all are in
                stored = conn.execute("SELECT count(*) FROM events").fetchone()[0]
                kept = {table: conn.execute(f"SELECT count(*) FROM {table}").fetchone()[0]
                        for table in ("transactions", "logs")}
                conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            size = db.stat().st_size
            result = {**result, **kept, "stored": stored, "stored_rps": stored / seconds,
                      "rss": peak_rss_mb(process.pid), "workers": len(children(process.pid)),
                      "bytes_per_event": size / max(stored, 1)}
            return {**result, **(drain(db, upstream_db) if forward else {})}
        finally:
            for server in (process, upstream):
                if server:
                    server.terminate()
                    server.wait(10)


def drain(db: Path, upstream_db: Path) -> dict[str, float]:
    """Seconds from the end of the load until the forward outbox is empty, and the events the upstream holds."""
    started = time.monotonic()
    with sqlite3.connect(db) as conn:
        while conn.execute("SELECT count(*) FROM forward_outbox").fetchone()[0] and time.monotonic() - started < 600:
            time.sleep(0.2)
    drained = time.monotonic() - started
    with sqlite3.connect(upstream_db) as conn:
        return {"drain": drained, "upstream": conn.execute("SELECT count(*) FROM events").fetchone()[0]}


def machine() -> str:
    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), platform.processor())
    return f"{os.cpu_count()} cores, {cpu}, Python {platform.python_version()}, {platform.system()} {platform.release()}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=int, default=10)
    parser.add_argument("--big", action="store_true", help="also the 1M-event query benchmark (takes minutes)")
    parser.add_argument("--traces", action="store_true", help="also 3 KB errors with transactions and logs beside them")
    parser.add_argument("--forward", choices=("mirror", "relay"), help="also a run with the bench project "
                        "forwarding to a second tracker on this machine (the outbox's cost and drain time)")
    args = parser.parse_args()
    print(f"machine: {machine()}")
    subprocess.run([sys.executable, "-c", "import tracker"], cwd=ROOT, env=ENV, check=True)  # the bytecode
    # cache, as pip writes it at install
    work = Path(tempfile.mkdtemp(prefix="tracker-bench-"))
    for label, count, big in (("3 KB", 30000, False), ("50 KB", 6000, True)):  # more bodies than requests
        body_file = work / f"{'big' if big else 'small'}.bin"
        body_builder.write(body_file, body_builder.build(count, big, "gzip"))
        ceiling = run_ceiling(body_file, "gzip", args.seconds)
        tracker = run_tracker(body_file, "gzip", args.seconds)
        print(f"\n{label} events, gzip, wrk -t2 -c32 {args.seconds}s")
        print(f"  ceiling  {ceiling['rps']:8.0f} req/s   p50 {ceiling['p50']:6.1f} ms  p99 {ceiling['p99']:6.1f} ms")
        print(f"  tracker  {tracker['rps']:8.0f} req/s accepted, {tracker['stored_rps']:.0f} stored/s "
              f"({tracker['stored']} events, {tracker['non2xx']} non-2xx)   p50 {tracker['p50']:6.1f} ms  "
              f"p99 {tracker['p99']:6.1f} ms   peak memory {tracker['memory']:.0f} MB (PSS of the server and its "
              f"{tracker['workers']} event workers; the server's peak RSS {tracker['rss']:.0f} MB)   "
              f"{tracker['bytes_per_event']:.0f} bytes/event on disk")
        print(f"  ratio    stored/s ÷ ceiling/s = {tracker['stored_rps'] / ceiling['rps']:.2f}")
        if not big:
            light = run_tracker(body_file, "gzip", args.seconds, connections=4)
            print(f"  lighter load (4 connections): {light['rps']:.0f} req/s, p99 {light['p99']:.1f} ms")
        if not big and args.traces:
            traces(work, body_file, args.seconds, ceiling, tracker)
        if args.forward:
            fwd = run_tracker(body_file, "gzip", args.seconds, forward=args.forward)
            print(f"  forwarding ({args.forward}) to a local tracker: {fwd['rps']:.0f} req/s accepted, "
                  f"{fwd['stored_rps']:.0f} stored/s, p99 {fwd['p99']:.1f} ms, peak memory {fwd['memory']:.0f} MB; "
                  f"outbox drained {fwd['drain']:.1f} s after the load, upstream holds {fwd['upstream']} events "
                  f"({fwd['upstream'] / (args.seconds + fwd['drain']):.0f}/s over load and drain)")
    if args.big:
        import bigdb
        bigdb.main([])


def traces(work: Path, body_file: Path, seconds: int, ceiling: dict[str, float], alone: dict[str, float]) -> None:
    """The 3 KB error load again with transactions (and their log lines, two a transaction) posted
    beside it at the rate errors were stored alone: how much the error ratio drops."""
    side = work / "traces.bin"
    body_builder.write(side, body_builder.build_traces(6000, "gzip"))
    both = run_tracker(body_file, "gzip", seconds, side=side, side_rate=alone["stored_rps"])
    drop = 1 - both["stored_rps"] / alone["stored_rps"]
    print(f"\n3 KB events with transactions and logs beside them (paced at up to {alone['stored_rps']:.0f} "
          f"transaction envelopes/s, wrk -t1 -c8)")
    print(f"  tracker  {both['stored_rps']:.0f} errors stored/s, {both['transactions'] / seconds:.0f} transactions/s "
          f"and {both['logs'] / seconds:.0f} log lines/s kept   p99 {both['p99']:.1f} ms   peak memory "
          f"{both['memory']:.0f} MB (the server's peak RSS {both['rss']:.0f} MB)")
    print(f"  ratio    errors stored/s ÷ ceiling/s = {both['stored_rps'] / ceiling['rps']:.2f} "
          f"(alone {alone['stored_rps'] / ceiling['rps']:.2f}: {drop:.0%} fewer errors stored)")


if __name__ == "__main__":
    main()
