#!/usr/bin/env python3
"""Regenerate the JavaScript sample envelopes (official @sentry/browser in Chromium, @sentry/node).

    apt-get install -y chromium nodejs npm && pip install playwright   # no `playwright install`
    python sample_events/generate_js.py [--build-dir /tmp/jsbuild] [browser|node ...]

What it does:
1. In --build-dir (outside the repo; default /tmp/jsbuild) runs `npm install @sentry/browser
   @sentry/node esbuild` if needed and bundles @sentry/browser into sentry.bundle.js with esbuild.
2. Starts a small capture server on 127.0.0.1:8000 (the DSN's port; a free port if 8000 is taken).
   It serves the shop's cart page (apps/web/), the bundle and /api/cart, and stores the body of
   every POST to /api/1/envelope/ exactly as sent (decompressed if the SDK compressed it).
3. Drives headless Debian Chromium (Playwright, executable_path=/usr/bin/chromium) through the
   cart page as five customers: three click "Update cart" on an empty cart and hit an uncaught
   TypeError in renderTotals(); two have express checkout, whose widget script cannot load, so
   the page calls Sentry.captureMessage(). The page is reached as http://shop.example.com/cart via
   --host-resolver-rules, so no address of this machine ends up in the events.
4. Runs apps/inventory_sync/sync.js twice with node (@sentry/node captureException).
Envelopes holding only sessions / client reports are dropped; the rest are installed as
NN-browser-M.envelope and NN-node-M.envelope with generate.install().
"""

import argparse
import gzip
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
import zlib
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from generate import APPS, install, is_event_envelope  # noqa: E402

KEY = "0123456789abcdef0123456789abcdef"
PROJECT_ID = 1
SHOP_HOST = "shop.example.com"
CHROMIUM = "/usr/bin/chromium"
CHROME_UA = ("Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 "
             "(KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36")

# sid cookie -> (user, cart returned by /api/cart)
SHOPPERS = {
    "s_8f2a1c": ({"id": "10482", "email": "maria.gonzalez@example.com"},
                 {"id": "cart_7Yx2Q", "items": [], "currency": "EUR"}),
    "s_19bd77": ({"id": "12005", "email": "lena.fischer@example.de"},
                 {"id": "cart_7Yx9K", "items": [], "currency": "EUR"}),
    "s_4c0e93": ({"id": "15562", "email": "ahmed.karimi@example.com"},
                 {"id": "cart_7Z03F", "items": [], "currency": "EUR"}),
    "s_a71f05": ({"id": "13318", "email": "tom.nguyen@example.com"},
                 {"id": "cart_7Z0dR", "currency": "EUR", "express_checkout": True,
                  "items": [{"sku": "SKU-1042", "name": "Espresso beans 1kg", "qty": 2}],
                  "summary": {"subtotal": 39.80, "shipping": 4.90, "total": 44.70}}),
    "s_d3e6b2": ({"id": "14091", "email": "priya.shah@example.org"},
                 {"id": "cart_7Z0mW", "currency": "EUR", "express_checkout": True,
                  "items": [{"sku": "SKU-2210", "name": "Burr grinder", "qty": 1}],
                  "summary": {"subtotal": 89.00, "shipping": 0, "total": 89.00}}),
}


def npm_build(build_dir: Path) -> Path:
    build_dir.mkdir(parents=True, exist_ok=True)
    if not (build_dir / "node_modules" / "@sentry" / "browser").is_dir() or \
            not (build_dir / "node_modules" / "@sentry" / "node").is_dir() or \
            not (build_dir / "node_modules" / ".bin" / "esbuild").exists():
        if not (build_dir / "package.json").exists():
            (build_dir / "package.json").write_text('{"name": "sentry-sample-build", "private": true}\n')
        subprocess.run(["npm", "install", "--no-audit", "--no-fund", "@sentry/browser", "@sentry/node", "esbuild"],
                       cwd=build_dir, check=True)
    (build_dir / "entry.js").write_text('import * as Sentry from "@sentry/browser";\nwindow.Sentry = Sentry;\n')
    bundle = build_dir / "sentry.bundle.js"
    subprocess.run(["npx", "esbuild", "entry.js", "--bundle", "--format=iife", "--minify",
                    f"--outfile={bundle.name}"], cwd=build_dir, check=True)
    return bundle


class Capture:
    def __init__(self):
        self.lock = threading.Lock()
        self.kind = "unknown"
        self.bodies: list[tuple[str, bytes]] = []

    def add(self, body: bytes) -> None:
        with self.lock:
            self.bodies.append((self.kind, body))

    def count(self) -> int:
        with self.lock:
            return len(self.bodies)


def make_handler(capture: Capture, web_dir: Path, bundle: Path, dsn: str):
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, fmt, *args):
            pass

        def cors(self):
            self.send_header("Access-Control-Allow-Origin", "*")
            self.send_header("Access-Control-Allow-Methods", "GET, POST, OPTIONS")
            self.send_header("Access-Control-Allow-Headers",
                             "x-sentry-auth, content-type, content-encoding, sentry-trace, baggage")
            self.send_header("Access-Control-Expose-Headers", "x-sentry-rate-limits, retry-after, x-sentry-error")
            self.send_header("Access-Control-Max-Age", "3600")

        def reply(self, status: int, body: bytes, ctype: str, extra: dict | None = None):
            self.send_response(status)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(body)))
            for k, v in (extra or {}).items():
                self.send_header(k, v)
            self.cors()
            self.end_headers()
            self.wfile.write(body)

        def shopper(self):
            cookies = dict(part.strip().split("=", 1) for part in (self.headers.get("Cookie") or "").split(";")
                           if "=" in part)
            return SHOPPERS.get(cookies.get("sid"), ({}, {"id": "cart_anon", "items": [], "currency": "EUR"}))

        def do_OPTIONS(self):
            self.reply(200, b"", "text/plain")

        def do_GET(self):
            path = self.path.split("?", 1)[0]
            if path == "/cart":
                user, _ = self.shopper()
                session = json.dumps({"dsn": dsn, "user": user or None})
                html = (web_dir / "cart.html").read_text().replace("__SESSION_JSON__", session)
                self.reply(200, html.encode(), "text/html; charset=utf-8")
            elif path == "/static/cart.js":
                self.reply(200, (web_dir / "cart.js").read_bytes(), "application/javascript")
            elif path == "/static/sentry.bundle.js":
                self.reply(200, bundle.read_bytes(), "application/javascript")
            elif path == "/api/cart":
                self.reply(200, json.dumps(self.shopper()[1]).encode(), "application/json")
            else:
                self.reply(404, b"not found", "text/plain")

        def read_body(self) -> bytes:
            if "chunked" in (self.headers.get("Transfer-Encoding") or "").lower():
                data = b""
                while True:
                    size = int(self.rfile.readline().split(b";")[0].strip(), 16)
                    if size == 0:
                        while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                            pass
                        return data
                    data += self.rfile.read(size)
                    self.rfile.readline()
            return self.rfile.read(int(self.headers.get("Content-Length") or 0))

        def do_POST(self):
            body = self.read_body()
            encoding = (self.headers.get("Content-Encoding") or "").lower()
            if encoding == "gzip":
                body = gzip.decompress(body)
            elif encoding == "deflate":
                body = zlib.decompress(body)
            elif encoding:
                raise ValueError(f"unexpected Content-Encoding {encoding}")
            if self.path.split("?", 1)[0] == f"/api/{PROJECT_ID}/envelope/":
                capture.add(body)
                event_id = json.loads(body.split(b"\n", 1)[0]).get("event_id")
                self.reply(200, json.dumps({"id": event_id} if event_id else {}).encode(), "application/json")
            else:
                self.reply(404, b"{}", "application/json")

    return Handler


def start_server(handler_factory) -> tuple[ThreadingHTTPServer, int]:
    try:
        server = ThreadingHTTPServer(("127.0.0.1", 8000), handler_factory)
    except OSError:
        print("port 8000 is busy; using a free port for the DSN", file=sys.stderr)
        server = ThreadingHTTPServer(("127.0.0.1", 0), handler_factory)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, server.server_address[1]


def wait_for(capture: Capture, at_least: int, timeout: float = 15.0) -> None:
    deadline = time.time() + timeout
    while capture.count() < at_least and time.time() < deadline:
        time.sleep(0.1)


def run_browser(capture: Capture, port: int) -> None:
    from playwright.sync_api import sync_playwright

    capture.kind = "browser"
    args = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
            "--disable-sync", "--no-first-run",
            f"--host-resolver-rules=MAP {SHOP_HOST} 127.0.0.1:{port}, MAP * ~NOTFOUND, EXCLUDE 127.0.0.1"]
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=args)
        for sid, (user, cart) in SHOPPERS.items():
            context = browser.new_context(user_agent=CHROME_UA, locale="en-US", viewport={"width": 1366, "height": 768})
            context.add_cookies([{"name": "sid", "value": sid, "domain": SHOP_HOST, "path": "/"}])
            page = context.new_page()
            page.on("console", lambda msg: print(f"  console.{msg.type}: {msg.text}"))
            before = capture.count()
            page.goto(f"http://{SHOP_HOST}/cart?utm_source=newsletter&utm_campaign=spring-sale")
            page.wait_for_selector("body[data-ready='1']")
            if cart.get("express_checkout"):
                page.wait_for_function("document.getElementById('express-checkout').textContent !== ''")
            else:
                page.wait_for_timeout(300)
                page.click("#update-cart")
            wait_for(capture, before + 1)
            page.wait_for_timeout(500)
            context.close()
            print(f"browser: user {user['id']} -> {capture.count() - before} envelope(s)")
        browser.close()


def run_node(capture: Capture, port: int, build_dir: Path, workdir: Path) -> None:
    capture.kind = "node"
    script_dir = workdir / "inventory-sync"
    shutil.copytree(APPS / "inventory_sync", script_dir)
    env = {**os.environ, "NODE_PATH": str(build_dir / "node_modules"),
           "SENTRY_DSN": f"http://{KEY}@127.0.0.1:{port}/{PROJECT_ID}"}
    for warehouse in ("berlin-1", "rotterdam-2"):
        before = capture.count()
        subprocess.run(["node", "sync.js", warehouse], cwd=script_dir, env=env, check=True, timeout=120)
        wait_for(capture, before + 1)
        print(f"node: {warehouse} -> {capture.count() - before} envelope(s)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--build-dir", default="/tmp/jsbuild", type=Path)
    parser.add_argument("kinds", nargs="*", help="browser and/or node (default: both)")
    opts = parser.parse_args()
    kinds = opts.kinds or ["browser", "node"]
    if set(kinds) - {"browser", "node"}:
        parser.error("kinds must be browser and/or node")
    if Path(__file__).resolve().parent.parent in opts.build_dir.resolve().parents:
        raise SystemExit("--build-dir must be outside the repository")
    bundle = npm_build(opts.build_dir)
    capture = Capture()
    workdir = Path(tempfile.mkdtemp(prefix="sample-js-"))
    try:
        web_dir = workdir / "web"
        shutil.copytree(APPS / "web", web_dir)
        holder = {}

        def factory(*a, **kw):
            return make_handler(capture, web_dir, bundle, holder["dsn"])(*a, **kw)

        server, port = start_server(factory)
        holder["dsn"] = f"http://{KEY}@127.0.0.1:{port}/{PROJECT_ID}"
        if "browser" in kinds:
            run_browser(capture, port)
        if "node" in kinds:
            run_node(capture, port, opts.build_dir, workdir)
        server.shutdown()
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    envelopes: dict[str, list[bytes]] = {kind: [] for kind in kinds}
    for kind, body in capture.bodies:
        if kind in envelopes and is_event_envelope(body):
            envelopes[kind].append(body)
    for kind, bodies in envelopes.items():
        print(f"{kind}: {len(bodies)} event envelopes")
    missing = [kind for kind, bodies in envelopes.items() if not bodies]
    if missing:
        raise SystemExit(f"no event envelopes for {missing}; existing files left untouched")
    install(envelopes)


if __name__ == "__main__":
    main()
