#!/usr/bin/env python3
"""Regenerate the Python sample envelopes in sample_events/ with the real sentry-sdk.

    pip install "sentry-sdk[fastapi,celery]" fastapi httpx celery
    python sample_events/generate.py            # all Python kinds
    python sample_events/generate.py kafka      # only some kinds

The sample apps live in sample_events/apps/ (payments-service on FastAPI, a Celery billing
worker, an orders Kafka consumer). They are copied to a fresh temporary directory and run from
there, so stack traces carry real code and context lines but no path of this checkout. Each app
initialises sentry_sdk with a transport (apps/_capture.py) that writes ``envelope.serialize()``,
i.e. the uncompressed wire bytes, for every envelope. Envelopes holding only client reports or
sessions are dropped; the rest become NN-<kind>-<M>.envelope, numbered in KIND_ORDER so that
sorted() gives the load order. generate_js.py (browser and Node kinds) reuses install() from here.
"""

import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
APPS = HERE / "apps"

KIND_ORDER = ["fastapi", "logging", "business", "celery", "browser", "node", "kafka"]

# module to run -> kinds it produces
PYTHON_APPS = {
    "payments.run": ["fastapi", "logging", "business"],
    "billing.worker": ["celery"],
    "orders_consumer.consumer": ["kafka"],
}

NAME = re.compile(r"^(\d+)-([a-z]+)-(\d+)\.envelope$")
DROP_ONLY = {"client_report", "session", "sessions"}


def parse_envelope(body: bytes) -> tuple[dict, list[tuple[dict, bytes]]]:
    """Split an envelope into its header and (item header, payload) pairs."""
    end = body.find(b"\n")
    end = len(body) if end < 0 else end
    header = json.loads(body[:end])
    pos, items = end + 1, []
    while pos < len(body):
        end = body.find(b"\n", pos)
        end = len(body) if end < 0 else end
        line = body[pos:end].strip()
        pos = end + 1
        if not line:
            continue
        item = json.loads(line)
        if "length" in item:
            payload = body[pos:pos + item["length"]]
            pos += item["length"]
            if body[pos:pos + 1] == b"\n":
                pos += 1
        else:
            end = body.find(b"\n", pos)
            end = len(body) if end < 0 else end
            payload, pos = body[pos:end], end + 1
        items.append((item, payload))
    return header, items


def is_event_envelope(body: bytes) -> bool:
    types = {item.get("type") for item, _ in parse_envelope(body)[1]}
    return bool(types - DROP_ONLY)


# Where the apps really ran → where such services run in production, so that no path of the
# machine that generated the samples ends up in the repository.
RELOCATIONS = [
    (re.compile(rb"/tmp/sample-apps-[^/\"]+/"), b"/app/"),
    (re.compile(rb"/tmp/sample-js-[^/\"]+/"), b"/srv/app/"),
    (re.compile(rb"/tmp/jsbuild/"), b"/srv/app/"),
    *((re.compile(re.escape(prefix.encode()) + rb"(?=/)"), b"/usr/local")
      for prefix in sorted({sys.prefix, sys.base_prefix}, key=len, reverse=True)),
]


def relocate(body: bytes) -> bytes:
    """Rewrite machine paths in every header and payload, recomputing item lengths."""
    def rewrite(data: bytes) -> bytes:
        for pattern, replacement in RELOCATIONS:
            data = pattern.sub(replacement, data)
        return data

    header, items = parse_envelope(body)
    out = [rewrite(json.dumps(header).encode())]
    for item, payload in items:
        payload = rewrite(payload)
        if "length" in item:
            item = {**item, "length": len(payload)}
        out += [json.dumps(item).encode(), payload]
    return b"\n".join(out) + b"\n"


def install(envelopes: dict[str, list[bytes]]) -> None:
    """Replace the files of the given kinds, then renumber every envelope in KIND_ORDER."""
    for path in HERE.glob("*.envelope"):
        match = NAME.match(path.name)
        if match and match.group(2) in envelopes:
            path.unlink()
    for kind, bodies in envelopes.items():
        for index, body in enumerate(bodies, 1):
            (HERE / f"00-{kind}-{index}.envelope").write_bytes(relocate(body))
    renumber()


def renumber() -> None:
    entries = []
    for path in HERE.glob("*.envelope"):
        match = NAME.match(path.name)
        if match:
            entries.append((KIND_ORDER.index(match.group(2)), int(match.group(3)), match.group(2), path))
    entries.sort()
    staged = []
    for number, (_, index, kind, path) in enumerate(entries, 1):
        tmp = path.with_name(path.name + ".renaming")
        path.rename(tmp)
        staged.append((tmp, HERE / f"{number:02d}-{kind}-{index}.envelope"))
    for tmp, final in staged:
        tmp.rename(final)
    check()


def check() -> None:
    """Event ids must be unique across files; the checkout path must not leak into them."""
    seen: dict[str, str] = {}
    leak = str(HERE.parent).encode()
    for path in sorted(HERE.glob("*.envelope")):
        body = path.read_bytes()
        header, items = parse_envelope(body)
        event_id = header.get("event_id")
        if event_id in seen:
            raise SystemExit(f"duplicate event_id {event_id} in {path.name} and {seen[event_id]}")
        seen[event_id] = path.name
        for machine_path in {leak, str(Path.home()).encode() + b"/"}:
            if machine_path in body:
                print(f"warning: {path.name} contains {machine_path.decode()}", file=sys.stderr)
    print(f"{len(seen)} envelopes in {HERE.name}/")


def run_python_app(module: str, workdir: Path) -> list[tuple[str, bytes]]:
    """Run one sample app from the temporary copy; return (kind, body) for each envelope it sent."""
    out = workdir / "_out" / module
    env = {**os.environ, "SAMPLE_EVENTS_OUT": str(out), "PYTHONPATH": str(workdir),
           "PYTHONDONTWRITEBYTECODE": "1"}
    subprocess.run([sys.executable, "-m", module], cwd=workdir, env=env, check=True, timeout=300)
    result = []
    for path in sorted(out.glob("*.envelope")):
        kind = path.stem.split("-", 1)[1]
        result.append((kind, path.read_bytes()))
    return result


def main(argv: list[str]) -> None:
    known = {k for kinds in PYTHON_APPS.values() for k in kinds}
    wanted = set(argv) or known
    if wanted - known:
        raise SystemExit(f"unknown kinds {sorted(wanted - known)}; choose from {sorted(known, key=KIND_ORDER.index)}")
    envelopes: dict[str, list[bytes]] = {}
    workdir = Path(tempfile.mkdtemp(prefix="sample-apps-"))
    try:
        shutil.copytree(APPS, workdir, dirs_exist_ok=True,
                        ignore=shutil.ignore_patterns("__pycache__", "web", "*.js"))
        for module, kinds in PYTHON_APPS.items():
            if not wanted & set(kinds):
                continue
            for kind, body in run_python_app(module, workdir):
                if kind in wanted and kind in kinds and is_event_envelope(body):
                    envelopes.setdefault(kind, []).append(body)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    for kind in sorted(wanted, key=KIND_ORDER.index):
        print(f"{kind}: {len(envelopes.get(kind, []))} event envelopes")
    missing = [kind for kind in wanted if not envelopes.get(kind)]
    if missing:
        raise SystemExit(f"no event envelopes for {missing}; existing files left untouched")
    install(envelopes)


if __name__ == "__main__":
    main(sys.argv[1:])
