"""Benchmark of the JavaScript each page ships, gzipped, measured in Chromium.

    .venv/bin/python bench/js_shipped.py [--quick]

The app runs in this process under waitress (APP_MODE=test, a SQLite file in a temporary folder,
no stand-ins needed: the subscriber, their session and a queued batch are made directly in the
database, and no worker runs, so the batch page stays as it is). Each page is loaded in a fresh
Chromium context (nothing cached) and measured with tests/jsbudget.py's shipped_js (every script
the page loads, module imports included, each body gzipped at level 9) and own_and_total (our
/js/ files, and everything: ours plus /vendor/). The pages: /, /terms, /privacy, /login, /pricing
and a 404 for a visitor, and the same plus /account, /generate, the review (the answer to the
compose form's POST, reached by filling the form and pressing Review), /batches/<id> and /library
for the signed-in subscriber.

Goals: 0 bytes on every page that needs no script; <= 8 KB of ours and <= 12 KB in all on the
batch page and the library. The baseline column is the figure recorded in bench/RESULTS.md on
2026-11-30 (measured by tests/test_journey.py the same way).
"""

from __future__ import annotations

import argparse
import datetime
import gzip
import os
import platform
import sys
import tempfile
import threading
import time
from pathlib import Path
from urllib.parse import urlsplit

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from common import CHROMIUM, CHROMIUM_ARGS  # noqa: E402
from generation import add_batch, add_subscriber  # noqa: E402

from app import create_app  # noqa: E402
from services import db, sessions  # noqa: E402
from tests.jsbudget import own_and_total, shipped_js  # noqa: E402

KB = 1024
# bench/RESULTS.md, "The pages: JavaScript shipped", 2026-11-30: total gzipped bytes per page.
RECORDED = {"batch": "8.3 KB", "library": "6.8 KB"}
SCRIPTED = ("batch", "library")  # the pages that need a script; every other one should ship none


def machine() -> str:
    """Cores, RAM and load of this machine, for the report."""
    ram = "?"
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                ram = f"{int(line.split()[1]) / 1024 / 1024:.0f} GB"
    except OSError:
        pass
    load = ", ".join(f"{x:.2f}" for x in os.getloadavg())
    return f"{platform.platform()}, {os.cpu_count()} cores, {ram} RAM, load average {load} at start"


class LiveApp:
    """The app under waitress on a free loopback port, in this process."""

    def __init__(self, settings: dict):
        import waitress.server

        holder = {}
        self.server = waitress.server.create_server(lambda environ, respond: holder["app"](environ, respond),
                                                    host="127.0.0.1", port=0, threads=4)
        self.base_url = f"http://127.0.0.1:{self.server.effective_port}"
        self.app = holder["app"] = create_app({**settings, "PUBLIC_BASE_URL": self.base_url})
        self.thread = threading.Thread(target=self.server.run, daemon=True)
        self.thread.start()

    def stop(self) -> None:
        """Close every channel inside waitress's loop, then wait for it (as tests/conftest.py's stop_server)."""

        def close_all():
            for channel in list(self.server._map.values()):
                channel.close()

        self.server.trigger.pull_trigger(close_all)
        self.thread.join(timeout=10)
        self.server.task_dispatcher.shutdown()


def shipped_by_review(page, base: str) -> dict[str, int]:
    """The scripts loaded by the review page, reached by POSTing the compose form: {path: gzip -9 size}."""
    page.goto(base + "/generate", wait_until="networkidle")
    page.fill("#prompts", "a red fox in the snow\na lighthouse at dusk")
    responses = []

    def collect(response):
        if response.request.resource_type == "script":
            responses.append(response)

    page.on("response", collect)
    try:
        page.click("#review-button")
        page.wait_for_url(base + "/generate/review")
        page.wait_for_load_state("networkidle")
    finally:
        page.remove_listener("response", collect)
    if page.locator("script").count() and not responses:
        raise SystemExit("the review page has a <script> element that loaded nothing")
    sizes = {}
    for response in responses:
        parts = urlsplit(response.url)
        sizes[parts.path] = len(gzip.compress(response.body(), compresslevel=9, mtime=0))
    return sizes


def main(argv: list[str] | None = None) -> int:
    """Measure every page and print Markdown tables for bench/RESULTS.md."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true",
                        help="only the landing page, compose, review, batch and library, signed in")
    args = parser.parse_args(argv)
    command = " ".join([".venv/bin/python", "bench/js_shipped.py", *(argv if argv is not None else sys.argv[1:])])
    print(f"# JavaScript shipped per page, {datetime.datetime.now():%Y-%m-%d %H:%M}\n")
    print(f"- machine: {machine()}")
    print(f"- command: `{command}`")
    print("- measured in Chromium with tests/jsbudget.py (each script's body, gzip -9), a fresh context per page; "
          "baseline: bench/RESULTS.md of 2026-11-30\n")

    from playwright.sync_api import sync_playwright

    rows, scripts = [], {}
    with tempfile.TemporaryDirectory(prefix="iib-js-") as temp:
        live = LiveApp({"APP_MODE": "test", "DATABASE_URL": f"sqlite:///{Path(temp) / 'app.db'}",
                        "VAR_DIR": str(Path(temp) / "var"), "WORKER_LAUNCH": "none", "LOG_LEVEL": "WARNING"})
        try:
            base, app = live.base_url, live.app
            db.initdb(app.database)
            conn = app.database.connect()
            user_id = add_subscriber(conn, 1, balance=300)
            batch_id = add_batch(conn, user_id, 3)
            session = sessions.create(conn, app.settings, int(time.time()), user_id=user_id)
            conn.close()
            cookie = {"name": sessions.cookie_name(app.settings), "value": session.token, "url": base}
            visitor_pages = [("landing", "/"), ("terms", "/terms"), ("privacy", "/privacy"), ("login", "/login"),
                             ("plan", "/pricing"), ("404", "/no-such-page")]
            member_pages = visitor_pages[:3] + [("plan", "/pricing"), ("account", "/account"),
                                                ("compose", "/generate"), ("review", None),
                                                ("batch", f"/batches/{batch_id}"), ("library", "/library"),
                                                ("404", "/no-such-page")]
            plan = [("visitor", name, path) for name, path in visitor_pages]
            plan += [("subscriber", name, path) for name, path in member_pages]
            if args.quick:
                plan = [p for p in plan if p[0] == "subscriber" and p[1] in ("landing", "compose", "review",
                                                                                "batch", "library")]
            with sync_playwright() as playwright:
                browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
                try:
                    for who, name, path in plan:
                        context = browser.new_context(locale="en-US")
                        if who == "subscriber":
                            context.add_cookies([cookie])
                        page = context.new_page()
                        errors = []
                        page.on("pageerror", lambda exc, errors=errors: errors.append(str(exc)))
                        try:
                            sizes = shipped_by_review(page, base) if path is None else shipped_js(page, base + path)
                            shown = path or "/generate/review (POST)"
                            landed = urlsplit(page.url).path
                        finally:
                            context.close()
                        if errors:
                            raise SystemExit(f"{shown}: the page threw {errors}")
                        own, total = own_and_total(sizes)
                        rows.append((who, name, shown, landed, own, total, sizes))
                        scripts.update(sizes)
                finally:
                    browser.close()
        finally:
            live.stop()

    print("| page | visitor | landed on | scripts | our JS (gzip) | vendored | total | baseline | goal | met |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for who, name, shown, landed, own, total, sizes in rows:
        scripted = name in SCRIPTED
        goal = "≤ 8 KB ours, ≤ 12 KB total" if scripted else "0"
        met = (own <= 8 * KB and total <= 12 * KB) if scripted else total == 0
        baseline = RECORDED.get(name, "0")
        print(f"| {name} `{shown}` | {who} | {landed} | {len(sizes)} | {kb(own)} | {kb(total - own)} | "
              f"**{kb(total)}** | {baseline} | {goal} | {'✓' if met else '✗'} |")
    print("\n| script | gzip -9 bytes |")
    print("|---|---|")
    for path, size in sorted(scripts.items()):
        print(f"| `{path}` | {kb(size)} |")
    return 0


def kb(size: int) -> str:
    """Bytes, and KB of 1024 bytes (the unit of the tests' budgets), or 0."""
    return "0" if size == 0 else f"{size} B = {size / KB:.2f} KB"


if __name__ == "__main__":
    sys.exit(main())
