"""Issue 19's bench line measured within each run: the 3 KB error load (wrk -c32) with the traced side load
(run.py's, 250 transactions a second and their logs) switched on and off every second by the wall clock,
so that a host growing busier or quieter weighs on both halves alike. Per run: the drop (errors stored
per second in the seconds with the side load against those without; the first half of each second, where
the queues change, left out) and, from the server's CPU read at every switch, each stage's CPU split by
least squares into a cost per error and a cost per transaction (with its share of log lines) in the
mixed load. Before each tracker run the ceiling app gets the same loads: what a server storing
nothing loses to the side load, and so how much lower the benchmark's ratio (stored/s ÷ ceiling/s) is
with the side load on both.

    python bench/phases.py [--runs 8] [--seconds 20]
"""
from __future__ import annotations

import argparse
import json
import math
import os
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

import run
from ceiling import app as ceiling_app

PHASE = 1.0  # seconds with the side load, then as many without


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=8)
    parser.add_argument("--seconds", type=int, default=20)
    args = parser.parse_args()
    print(f"machine: {run.machine()}")
    subprocess.run([sys.executable, "-c", "import tracker"], cwd=run.ROOT, env=run.ENV, check=True)
    work = Path(tempfile.mkdtemp(prefix="tracker-phases-"))
    errors, side = work / "errors.bin", work / "traces.bin"
    run.body_builder.write(errors, run.body_builder.build(3000 * args.seconds, False, "gzip"))  # each id once
    run.body_builder.write(side, run.body_builder.build_traces(6000, "gzip"))
    drops, ceilings, ratios, costs = [], [], [], []
    for _ in range(args.runs):  # a ceiling run before each tracker run: the host weighs on both alike
        ceiling_on, ceiling_off = ceiling_run(errors, side, args.seconds)
        on, off, cost = tracker_run(errors, side, args.seconds)
        drops.append(1 - on / off)
        ceilings.append(1 - ceiling_on / ceiling_off)
        ratios.append(1 - (on / ceiling_on) / (off / ceiling_off))
        costs.append(cost)
        print(f"  tracker: {drops[-1]:5.1%} fewer errors stored with the side load, the ceiling app {ceilings[-1]:5.1%} "
              f"fewer answered; the ratio {off / ceiling_off:.2f} without, {on / ceiling_on:.2f} with it "
              f"({ratios[-1]:.1%} lower); µs per error / per transaction: "
              + ", ".join(f"{stage} {error:.0f}/{tx:.0f}" for stage, (error, tx) in cost.items()), flush=True)
    medians = {stage: statistics.median(cost[stage][1] for cost in costs) for stage in costs[0]}
    print(f"{args.runs} runs: {mean_and_error(drops)} fewer errors stored; the ceiling app {mean_and_error(ceilings)} "
          f"fewer answered; the benchmark's ratio (stored/s ÷ ceiling/s) {mean_and_error(ratios)} lower")
    print("a transaction with its log lines, medians: " + ", ".join(f"{stage} {tx:.0f} µs" for stage, tx in medians.items())
          + f", {sum(medians.values()):.0f} µs in all")


def mean_and_error(values: list[float]) -> str:
    spread = statistics.stdev(values) / math.sqrt(len(values)) if len(values) > 1 else 0.0
    return f"{statistics.mean(values):.1%} (standard error {spread:.1%})"


def side_load(port: int, bodies: Path, seconds: int, target: str) -> subprocess.Popen[bytes]:
    """run.py's paced side load, on in even seconds of the wall clock and off in odd ones (bodies.lua's PHASE)."""
    env = {**os.environ, "BODIES": str(bodies), "TARGET_PATH": target, "ENCODING": "gzip", "PHASE": str(int(PHASE * 1000)),
           "DELAY": str(max(int(1000 * run.SIDE_CONNECTIONS / run.TRACED_RATE - run.SIDE_LATENCY), 1))}
    return subprocess.Popen(["wrk", "-t1", f"-c{run.SIDE_CONNECTIONS}", f"-d{seconds + 1}s", "-s",
                             str(run.HERE / "bodies.lua"), f"http://127.0.0.1:{port}"], stdout=subprocess.DEVNULL, env=env)


def drop_of(times: list[float]) -> tuple[float, float]:
    """Errors a second in the second halves of the phases with the side load (even ones) and of those
    without, over the whole phases at least one phase inside the run."""
    first, last = math.ceil(min(times) / PHASE) + 1, math.floor(max(times) / PHASE) - 1
    counts = {True: 0, False: 0}
    for moment in times:
        phase, into = divmod(moment / PHASE, 1)
        if first <= phase < last and into >= 0.5:
            counts[phase % 2 == 0] += 1
    halves = {beside: sum((phase % 2 == 0) == beside for phase in range(first, last)) * PHASE / 2
              for beside in (True, False)}
    return counts[True] / halves[True], counts[False] / halves[False]


def tracker_run(errors: Path, side: Path, seconds: int) -> tuple[float, float, dict[str, tuple[float, float]]]:
    """Errors stored a second with the side load and without, and each stage's CPU split (split_costs)."""
    with tempfile.TemporaryDirectory() as tmp:
        db, port = Path(tmp) / "bench.db", run.free_port()
        process = run.serve_tracker(db, f'[[projects]]\nname = "bench"\nslug = "bench"\ndsn_key = "{run.KEY}"\n', port)
        try:
            samples = SwitchSampler(lambda: run.cpu_by_stage(process.pid))
            beside = side_load(port, side, seconds, "/api/1/envelope/")
            run.wrk(port, errors, "gzip", seconds, 32, process.pid)
            beside.wait()
            samples.stop()
            conn = sqlite3.connect(db)
            events = [moment for (moment,) in conn.execute("SELECT received FROM events")]
            transactions = [moment for (moment,) in conn.execute("SELECT received FROM transactions")]
            conn.close()
        finally:
            process.terminate()
            process.wait(10)
    return *drop_of(events), split_costs(samples.taken, events, transactions)


class SwitchSampler(threading.Thread):
    """Reads `read()` at every switch of the side load (whole seconds), until stopped."""

    def __init__(self, read: Callable[[], dict[str, float]]) -> None:
        super().__init__(daemon=True)
        self.read, self.done = read, threading.Event()
        self.taken: list[tuple[float, dict[str, float]]] = []
        self.start()

    def run(self) -> None:
        while not self.done.wait(math.ceil(time.time() / PHASE) * PHASE - time.time()):
            self.taken.append((time.time(), self.read()))

    def stop(self) -> None:
        self.done.set()
        self.join()


def split_costs(taken: list[tuple[float, dict[str, float]]], events: list[float], transactions: list[float]
                ) -> dict[str, tuple[float, float]]:
    """Each stage's CPU over the phases fitted as a·errors + b·transactions (least squares, no constant):
    (a, b) in µs, for the phases wholly inside the run."""
    first, last = min(events) + 1, max(events) - 1
    rows = []
    for (start, before), (end, after) in zip(taken, taken[1:]):
        if first <= start and end <= last:
            counted = (sum(start <= t < end for t in events), sum(start <= t < end for t in transactions))
            rows.append((*counted, {stage: after[stage] - before[stage] for stage in before}))
    ee = sum(e * e for e, _, _ in rows)
    tt = sum(t * t for _, t, _ in rows)
    et = sum(e * t for e, t, _ in rows)
    det = ee * tt - et * et
    if not det:
        raise SystemExit("no transactions were stored beside the errors: the side load did not run")
    costs = {}
    for stage in ("loop", "writer", "workers"):
        ey = sum(e * cpu[stage] for e, _, cpu in rows)
        ty = sum(t * cpu[stage] for _, t, cpu in rows)
        costs[stage] = (1e6 * (ey * tt - ty * et) / det, 1e6 * (ty * ee - ey * et) / det)
    return costs


def ceiling_run(errors: Path, side: Path, seconds: int) -> tuple[float, float]:
    """The ceiling app (counted: `counted_ceiling`) under the same loads; errors a second with and without."""
    port = run.free_port()
    process = run.start([sys.executable, "-m", "uvicorn", "phases:counted_ceiling", "--port", str(port),
                         "--no-access-log", "--log-level", "warning"], port, run.HERE)
    try:
        beside = side_load(port, side, seconds, "/api/2/envelope/")
        run.wrk(port, errors, "gzip", seconds, 32)
        beside.wait()
        answered = json.loads(urllib.request.urlopen(f"http://127.0.0.1:{port}/answered").read())
    finally:
        process.terminate()
        process.wait(10)
    return drop_of(answered)


ANSWERED: list[float] = []  # when the ceiling answered each error (project 1; the side load posts to 2)


async def counted_ceiling(scope: dict[str, Any], receive: Any, send: Any) -> None:
    """The ceiling app, noting when it answers each error; GET /answered lists the moments."""
    if scope["type"] == "http" and scope["path"] == "/answered":
        body = json.dumps(ANSWERED).encode()
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"%d" % len(body))]})
        return await send({"type": "http.response.body", "body": body})
    await ceiling_app(scope, receive, send)
    if scope["type"] == "http" and scope["path"].startswith("/api/1/"):
        ANSWERED.append(time.time())


if __name__ == "__main__":
    main()
