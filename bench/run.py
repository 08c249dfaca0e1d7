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
import contextlib
import math
import os
import platform
import re
import socket
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any


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


TICKS = os.sysconf("SC_CLK_TCK")


def cpu_seconds(stat: Path) -> float:
    """User + system CPU seconds from a /proc stat file: a process's (all its threads) or one thread's."""
    fields = stat.read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS


def cpu_by_stage(pid: int) -> dict[str, float]:
    """CPU seconds used so far by each stage of the server, from /proc: its event loop (the main
    thread), its writer (the thread named tracker-writer), its other threads (read connections,
    threads of the moment), and its event workers (child processes)."""
    stages = {"loop": 0.0, "writer": 0.0, "other": cpu_seconds(Path(f"/proc/{pid}/stat")), "workers": 0.0}
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            comm, used = (task / "comm").read_text().strip(), cpu_seconds(task / "stat")
        except OSError:  # ended meanwhile
            continue
        stage = "loop" if task.name == str(pid) else "writer" if comm == "tracker-writer" else ""
        if stage:
            stages[stage] += used
            stages["other"] -= used
    for child in children(pid):
        with contextlib.suppress(OSError):
            stages["workers"] += cpu_seconds(Path(f"/proc/{child}/stat"))
    return stages


def machine_ticks() -> tuple[int, int, int]:
    """This machine's CPU time so far, from /proc/stat, in ticks: all of it, idle (with I/O wait), and
    stolen (the host ran something else on our cores)."""
    fields = [int(value) for value in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:9]]
    return sum(fields), fields[3] + fields[4], fields[7]


def wrk(port: int, body_file: Path, encoding: str, seconds: int, connections: int,
        server: int | None = None) -> dict[str, float]:
    """wrk's figures; with `server`, also the peak memory of it and its workers (PSS summed, sampled
    every 0.2 s while wrk runs) and the CPU seconds each of its stages used meanwhile (`cpu`); and the
    shares of the machine's CPU time left idle and stolen by the host meanwhile."""
    before = cpu_by_stage(server) if server else {}
    ticks = machine_ticks()
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
    cpu = {stage: used - before[stage] for stage, used in cpu_by_stage(server).items()} if server else {}
    spent = [after - start for after, start in zip(machine_ticks(), ticks)]
    if load.returncode:
        raise SystemExit(f"wrk failed ({load.returncode})")
    def latency(label: str) -> float:
        value, unit = re.search(rf"{label}\s+([\d.]+)(us|ms|s)", out).groups()  # type: ignore[union-attr]
        return float(value) * {"us": 0.001, "ms": 1, "s": 1000}[unit]
    requests = int(re.search(r"(\d+) requests in", out)[1])  # type: ignore[index]
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    return {"memory": memory, "cpu": cpu, "seconds": seconds, "rps": float(re.search(r"Requests/sec:\s+([\d.]+)", out)[1]),  # type: ignore[index]
            "requests": requests, "non2xx": int(errors[1]) if errors else 0,
            "idle": spent[1] / max(spent[0], 1), "stolen": spent[2] / max(spent[0], 1),
            "p50": latency("50%"), "p99": latency("99%")}


def run_ceiling(body_file: Path, encoding: str, seconds: int, connections: int = 32) -> dict[str, float]:
    port = free_port()
    process = start([sys.executable, "-m", "uvicorn", "ceiling:app", "--port", str(port), "--no-access-log",
                     "--log-level", "warning"], port, HERE)
    try:
        result = wrk(port, body_file, encoding, seconds, connections, process.pid)
        return {**result, "rss": peak_rss_mb(process.pid)}
    finally:
        process.terminate()
        process.wait(10)


def side_load(port: int, body_file: Path, encoding: str, seconds: int, rate: float) -> subprocess.Popen[str]:
    """wrk posting `body_file` at about `rate` requests a second beside the main load: SIDE_CONNECTIONS
    connections, each pausing between requests for SIDE_CONNECTIONS / rate seconds less the answer's
    usual latency under the main load (SIDE_LATENCY), so that a latency of 20-40 ms moves the rate by
    a few percent, not by half."""
    env = {**os.environ, "BODIES": str(body_file), "TARGET_PATH": "/api/1/envelope/", "ENCODING": encoding,
           "DELAY": str(max(int(1000 * SIDE_CONNECTIONS / rate - SIDE_LATENCY), 1))}
    return subprocess.Popen(["wrk", "-t1", f"-c{SIDE_CONNECTIONS}", f"-d{seconds}s", "-s", str(HERE / "bodies.lua"),
                             f"http://127.0.0.1:{port}"], stdout=subprocess.DEVNULL, env=env, text=True)


SIDE_CONNECTIONS = 64
SIDE_LATENCY = 30  # ms


def serve_tracker(db: Path, project: str, port: int) -> subprocess.Popen[bytes]:
    """`tracker serve` with one project configured by the TOML text `project`, started as the installed
    `tracker` command starts it: the module imported from its bytecode cache (a script is compiled
    afresh at every start, 35 MB of memory that stays)."""
    config = db.with_suffix(".toml")
    config.write_text(project)
    process = start([sys.executable, "-c", "import tracker; tracker.main()", "--db", str(db), "--config",
                     str(config), "serve", "--port", str(port)], port, ROOT)
    time.sleep(1.5)  # the event workers start after the port answers: their imports are not the load's CPU
    return process


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
            side_cpu = 0.0
            if beside:  # reaped here for its rusage: the side load's own CPU, taken from the same two cores
                _, _, usage = os.wait4(beside.pid, 0)
                beside.returncode, side_cpu = 0, usage.ru_utime + usage.ru_stime
            with sqlite3.connect(db) as conn:  # every answer came after its commit: all are in
                stored = conn.execute("SELECT count(*) FROM events").fetchone()[0]
                kept = {table: conn.execute(f"SELECT count(*) FROM {table}").fetchone()[0]
                        for table in ("transactions", "logs")}
                conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            size = db.stat().st_size
            result = {**result, **kept, "stored": stored, "stored_rps": stored / seconds, "side_cpu": side_cpu,
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
    parser.add_argument("--quick", action="store_true", help="only the 3 KB error load at 32 connections, "
                        "against the ceiling (a change's cost, in a minute)")
    parser.add_argument("--big", action="store_true", help="also the 1M-event query benchmark (takes minutes)")
    parser.add_argument("--traces", action="store_true", help="also 3 KB errors with transactions and logs "
                        "posted beside them at a paced rate (how much the error rate drops)")
    parser.add_argument("--rounds", type=int, default=12, help="pairs of runs (alone, beside) for --traces")
    parser.add_argument("--forward", choices=("mirror", "relay"), help="also a run with the bench project "
                        "forwarding to a second tracker on this machine (the outbox's cost and drain time)")
    args = parser.parse_args()
    print(f"machine: {machine()}")
    subprocess.run([sys.executable, "-c", "import tracker"], cwd=ROOT, env=ENV, check=True)  # the bytecode
    # cache, as pip writes it at install
    work = Path(tempfile.mkdtemp(prefix="tracker-bench-"))
    errors, mix = work / "small.bin", work / "mix.bin"
    body_builder.write(errors, body_builder.build(30000, False, "gzip"))  # more bodies than requests
    body_builder.write(mix, body_builder.build_mix(12000, "gzip"))
    print(f"\n3 KB error events (gzip), wrk -t2, {args.seconds} s a run. CPU: per stored event (per request of the "
          "traced mix), from /proc over the whole run: the event loop, the writer thread, the server's other "
          "threads, the event workers.")
    print(f"  {'':27} {'req/s':>7} {'stored/s':>9} {'ratio':>6} {'p50 ms':>7} {'p99 ms':>7}   "
          f"{'CPU ms:':8}{'loop':>6} {'writer':>6} {'other':>6} {'workers':>7} {'total':>6}   {'peak MB':>7}")
    for connections in (32,) if args.quick else (32, 128):
        ceiling = run_ceiling(errors, "gzip", args.seconds, connections)
        print_row(f"ceiling -c{connections}", ceiling, ceiling["requests"], ceiling["rps"])
        alone = run_tracker(errors, "gzip", args.seconds, connections)
        print_row(f"tracker -c{connections}", alone, alone["stored"], ceiling["rps"])
        if args.quick:
            continue
        traced = run_tracker(mix, "gzip", args.seconds, connections)
        print_row(f"traced mix -c{connections}", traced, traced["stored"], ceiling["rps"])
        print(f"  {'':27} the traced mix: {traced['stored_rps']:.0f} requests/s (an error, a transaction of 10 spans, "
              f"3 log lines each; {traced['transactions']} transactions and {traced['logs']} log lines kept) = "
              f"{traced['stored_rps'] / alone['stored_rps']:.0%} of the error-only rate")
    if not args.quick:
        light = run_tracker(errors, "gzip", args.seconds, connections=4)
        print(f"  lighter load (4 connections): {light['rps']:.0f} req/s, p99 {light['p99']:.1f} ms")
        big = work / "big.bin"
        body_builder.write(big, body_builder.build(6000, True, "gzip"))
        ceiling, tracker = run_ceiling(big, "gzip", args.seconds), run_tracker(big, "gzip", args.seconds)
        print("\n50 KB error events (gzip), wrk -t2 -c32")
        print_row("ceiling -c32", ceiling, ceiling["requests"], ceiling["rps"])
        print_row("tracker -c32", tracker, tracker["stored"], ceiling["rps"])
        print(f"  {tracker['bytes_per_event']:.0f} bytes/event on disk; the server's own peak RSS {tracker['rss']:.0f} MB")
    if args.traces:
        traces(work, errors, args.seconds, args.rounds)
    if args.forward:
        for label, body_file in (("3 KB", errors), ("50 KB", work / "big.bin")):
            if not body_file.exists():
                continue
            fwd = run_tracker(body_file, "gzip", args.seconds, forward=args.forward)
            print(f"  {label}, forwarding ({args.forward}) to a local tracker: {fwd['rps']:.0f} req/s accepted, "
                  f"{fwd['stored_rps']:.0f} stored/s, p99 {fwd['p99']:.1f} ms, peak memory {fwd['memory']:.0f} MB; "
                  f"outbox drained {fwd['drain']:.1f} s after the load, upstream holds {fwd['upstream']} events "
                  f"({fwd['upstream'] / (args.seconds + fwd['drain']):.0f}/s over load and drain)")
    if args.big:
        import bigdb
        bigdb.main([])


def print_row(label: str, run: dict[str, Any], done: int, ceiling_rps: float) -> None:
    """One load run: its rates, latency, CPU per unit done (stored event, or answered request for the
    ceiling) by stage, and peak memory (PSS of the server and its workers)."""
    cpu = {stage: 1000 * used / max(done, 1) for stage, used in run["cpu"].items()}
    stored = done / run["seconds"]
    print(f"  {label:27} {run['rps']:7.0f} {stored:9.0f} {stored / ceiling_rps:6.2f} {run['p50']:7.1f} {run['p99']:7.1f}   "
          f"{'':8}{cpu['loop']:6.2f} {cpu['writer']:6.2f} {cpu['other']:6.2f} {cpu['workers']:7.2f} "
          f"{sum(cpu.values()):6.2f}   {run['memory']:7.0f}")


def traces(work: Path, body_file: Path, seconds: int, rounds: int = 12) -> None:
    """The 3 KB error load alone and with TRACED_RATE transactions a second (and their log lines, two a
    transaction, in envelopes of 100 as the SDK batches them) posted beside it: how much the error rate
    drops. On this shared machine two identical runs differ by up to a fifth, more than the bound, so
    the pair is run `rounds` times, the order alternating (alone first, then beside first) so that a
    machine growing busier or quieter weighs on both alike, and the figure is the drop of the mean
    rate beside from the mean rate alone, with the spread of the rounds' drops (their standard
    error) and their median. Also, from the same runs, what the side load cost the server in CPU per
    transaction (the server's CPU beside, less the errors stored beside at the CPU an error took alone)."""
    side = work / "traces.bin"
    body_builder.write(side, body_builder.build_traces(6000, "gzip"))
    ceiling = run_ceiling(body_file, "gzip", seconds)
    print(f"\n3 KB errors alone and with {TRACED_RATE} transactions a second and their logs beside them "
          f"(wrk -t1 -c{SIDE_CONNECTIONS}, each connection pausing between requests), {rounds} rounds")
    print_row("ceiling -c32", ceiling, ceiling["requests"], ceiling["rps"])
    rates: dict[bool, list[float]] = {False: [], True: []}
    costs, errors = [], []
    for round_ in range(rounds):
        runs = {}
        for beside in (False, True) if round_ % 2 == 0 else (True, False):
            runs[beside] = run_tracker(body_file, "gzip", seconds, side=side if beside else None, side_rate=TRACED_RATE)
            rates[beside].append(runs[beside]["stored_rps"])
        alone, both = runs[False], runs[True]
        per_error = sum(alone["cpu"].values()) / max(alone["stored"], 1)
        errors.append(1000 * per_error)
        costs.append(1000 * (sum(both["cpu"].values()) - per_error * both["stored"]) / max(both["transactions"], 1))
        print_row("tracker -c32", alone, alone["stored"], ceiling["rps"])
        print_row("with traces beside", both, both["stored"], ceiling["rps"])
        print(f"  {both['transactions'] / seconds:.0f} transactions/s and {both['logs'] / seconds:.0f} log lines/s kept "
              f"beside the errors: {1 - rates[True][-1] / rates[False][-1]:.0%} fewer errors stored; a transaction with "
              f"its log lines cost {costs[-1]:.2f} ms of server CPU, and its wrk "
              f"{1000 * both['side_cpu'] / max(both['transactions'], 1):.2f} ms; the cores idle "
              f"{alone['idle']:.0%} alone, {both['idle']:.0%} beside, stolen by the host {alone['stolen']:.0%}, "
              f"{both['stolen']:.0%}")
    drops = [1 - b / a for a, b in zip(rates[False], rates[True])]
    spread = statistics.stdev(drops) / math.sqrt(rounds) if rounds > 1 else 0.0
    print(f"  {rounds} rounds: {statistics.mean(rates[False]):.0f} errors stored/s alone, {statistics.mean(rates[True]):.0f} "
          f"beside: {1 - statistics.mean(rates[True]) / statistics.mean(rates[False]):.1%} fewer (the rounds' drops: "
          f"standard error {spread:.1%}, median {statistics.median(drops):.0%}); "
          f"{statistics.median(costs):.2f} ms of server CPU a transaction with its log lines, "
          f"{statistics.median(errors):.2f} ms an error alone (medians)")


# Transactions a second beside the errors: a traced service sending one for a fifth of the requests
# the error load makes (1,000-1,500 a second here); the rate the earlier, latency-paced runs reached.
TRACED_RATE = 250


if __name__ == "__main__":
    main()
