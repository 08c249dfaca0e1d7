"""Coverage-guided fuzzing (atheris, where it installs) of what reads attacker-controlled bytes:
body decoding, the envelope parser, event processing (normalisation, scrubbing, grouping,
payload compression), the search parser and the SQL it builds (run against the real schema),
and event search matching. Only the errors that become 4xx answers may escape; anything else is
a crash that atheris reports, and the run fails. Each target runs a bounded number of inputs in
a process of its own (atheris takes the process over)."""
from __future__ import annotations

import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from conftest import ROOT

pytest.importorskip("atheris")

HARNESS = textwrap.dedent("""
    import sys, sqlite3, time
    import atheris
    sys.path.insert(0, sys.argv[1])
    with atheris.instrument_imports():
        import tracker

    conn = tracker.connect_db(":memory:")
    tracker.migrate(conn)
    SCRUB = tracker.scrub_policy(None)

    def envelope(data: bytes) -> None:
        try:
            header, items = tracker.parse_envelope(data)
            for item_header, payload in items:
                raw = tracker.json_object(payload, "event payload")
                ev = tracker.prepare_event(raw, project_id=1, event_id=None, received=time.time(), client_ip="",
                                           rules=tracker.NO_RULES, scrub=SCRUB)
                tracker.decompress_payload(ev.payload)
        except tracker.IngestError:
            pass

    def search(data: bytes) -> None:
        query = atheris.FuzzedDataProvider(data).ConsumeUnicodeNoSurrogates(512)
        try:
            where, args = tracker.issue_filter_sql(1, query)
            conn.execute(f"SELECT count(*) FROM issues i WHERE {where}", args).fetchone()
            tracker.event_matches({"message": "x", "tags": [["k", "v"]], "user": {"id": "1"}},
                                  tracker.parse_query(query))
        except tracker.SearchError:
            pass

    target = {"envelope": envelope, "search": search}[sys.argv[2]]
    atheris.Setup([sys.argv[0], f"-runs={sys.argv[3]}", "-max_len=70000", "-seed=1", *sys.argv[4:]], target)
    atheris.Fuzz()
""")


@pytest.mark.parametrize("target, runs", [("envelope", 3000), ("search", 5000)])
def test_atheris_finds_no_crash(tmp_path: Path, target: str, runs: int) -> None:
    """The envelope target starts from the sample envelopes (real SDK output), so mutations reach
    event processing instead of stopping at the first malformed line."""
    harness = tmp_path / "harness.py"
    harness.write_text(HARNESS)
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    for sample in sorted((ROOT / "sample_events").glob("*.envelope"))[:6] if target == "envelope" else []:
        (corpus / sample.name).write_bytes(sample.read_bytes())
    run = subprocess.run([sys.executable, str(harness), str(ROOT), target, str(runs), str(corpus)],
                         capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert run.returncode == 0, run.stderr[-4000:]
    done = re.search(r"Done (\d+) runs", run.stderr)  # libFuzzer may stop a few runs past -runs (CI once
    assert done and int(done[1]) >= runs, run.stderr[-4000:]  # printed "Done 3006 runs"): all were run
