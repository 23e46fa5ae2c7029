"""Benchmark of delivery: batch wall time until every image is in the browser's IndexedDB, against its floor.

    .venv/bin/python bench/delivery.py [--items 100] [--latency 1.0] [--slots 1,4] [--subscribers 1,4] [--quick]

What runs, each scenario on a fresh MariaDB database (bench/generation.py's Store):

* the OpenAI stand-in in its own process (`tools/fake_openai.py --latency L --images-per-minute IPM
  --window-seconds 1`: the limit enforced with 429s over a 1-second window), IPM set to twice what
  the W slots can use, so latency is the bound;
* the app under waitress in its own process (`app.py --port P`, APP_MODE=test, WORKER_LAUNCH=none);
* one `cli.py worker` process with WORKER_SLOTS=W, launched right after the batches are created
  (as the kick would launch it; Python start-up included);
* one Chromium browser context per subscriber, signed in with a session made directly with
  services.sessions (its cookie put in the context), which creates its batch with the JSON API
  (`POST /api/batches` with X-CSRF-Token) and then opens the batch page, so that the site's own
  batch.js polls it (every 2 s), fetches each image, stores it in IndexedDB and acknowledges it.

The clock starts just before the first batch is created. The wall time ends when every
subscriber's IndexedDB holds all of its batch's images (an evaluate that counts the `images`
store's batchId index, sampled about every 0.1 s). Floor = max(N*L/W, N*60/IPM) for N items in
all: no scheduler can beat it. Printed per scenario: wall/floor (goal <= 1.05), the time the last
item was done in the database (sampled the same way) and the delivery tail after it (the page's
2-second poll adds up to ~2 s there), the stand-in's 429s (from its log), each subscriber's finish
time, and how evenly the subscribers shared the slots: the items each had in IndexedDB and done in
the database when half the floor had passed, with Jain's fairness index (1 = even shares).
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import re
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from urllib.parse import urlsplit

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from common import CHROMIUM, CHROMIUM_ARGS, machine_line, stop_process  # noqa: E402
from generation import StandIn, Store, add_subscriber  # noqa: E402

from services import sessions  # noqa: E402
from services.config import SETTING_NAMES, load_settings  # noqa: E402

SAMPLE_EVERY = 0.1  # seconds between samples of the database and of each browser's IndexedDB

# Counts a batch's images in this browser's IndexedDB. It opens the database the way public/js/store.js
# does (same version, same stores and index), so that whichever of the two opens it first creates it
# in the site's shape.
COUNT_JS = """async (batchId) => {
    const db = await new Promise((ok, fail) => {
        const r = indexedDB.open('images-in-bulk', 1);
        r.onupgradeneeded = () => {
            const d = r.result;
            d.createObjectStore('batches', {keyPath: 'id'});
            d.createObjectStore('images', {keyPath: ['batchId', 'itemId']}).createIndex('batchId', 'batchId');
        };
        r.onsuccess = () => ok(r.result);
        r.onerror = () => fail(r.error);
    });
    try {
        return await new Promise((ok, fail) => {
            const q = db.transaction('images').objectStore('images').index('batchId').count(batchId);
            q.onsuccess = () => ok(q.result);
            q.onerror = () => fail(q.error);
        });
    } finally {
        db.close();
    }
}"""




def free_port() -> int:
    """A free port on 127.0.0.1 (closed again: the app binds it a moment later)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def base_env(**values: str) -> dict:
    """This process's environment without any app setting, plus the given ones."""
    env = {k: v for k, v in os.environ.items() if k not in SETTING_NAMES}
    env.update(values)
    return env


class AppProcess:
    """The site under waitress (`app.py --port P`) in its own process."""

    def __init__(self, env: dict, log_file: Path):
        self.port = free_port()
        self.base_url = f"http://127.0.0.1:{self.port}"
        env = {**env, "PUBLIC_BASE_URL": self.base_url}
        self.log = open(log_file, "w", encoding="utf-8")
        self.process = subprocess.Popen([sys.executable, "app.py", "--port", str(self.port)], cwd=ROOT, env=env,
                                        stdout=self.log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 30
        while True:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.5):
                    break
            except OSError:
                if self.process.poll() is not None or time.monotonic() > deadline:
                    self.stop()
                    raise SystemExit(f"the app did not start: {log_file.read_text()[-2000:]}") from None
                time.sleep(0.05)

    def stop(self) -> None:
        """Stop the app's process."""
        stop_process(self.process)
        self.log.close()


def jain(values: list[float]) -> float:
    """Jain's fairness index: 1 when every share is equal, 1/n when one takes everything."""
    total, squares = sum(values), sum(v * v for v in values)
    return (total * total) / (len(values) * squares) if squares else 1.0


def idb_count(page, batch_id: int) -> int | None:
    """The images IndexedDB holds for the batch, or None while the page is navigating (it reloads itself)."""
    try:
        return page.evaluate(COUNT_JS, batch_id)
    except Exception:  # the execution context was destroyed by a reload: count at the next sample
        return None


def request_kind(url: str) -> str | None:
    """Which of the batch page's calls a URL is: the status poll, an image, an acknowledgement."""
    path = urlsplit(url).path
    if re.fullmatch(r"/api/batches/\d+", path):
        return "poll"
    if path.endswith("/image"):
        return "image"
    if path.endswith("/ack"):
        return "ack"
    return None


def run_scenario(browser, directory: Path, *, subscribers: int, items: int, latency: float, slots: int,
                 ipm: int, drain: bool = False) -> dict:
    """One scenario; returns its figures (times in seconds from the first batch's creation).

    With `drain`, the batch pages open only once the worker has done every item, and the clock starts
    then: what is measured is how fast the pages alone collect finished images.
    """
    stand_in = StandIn(latency, ipm, directory / "stand-in.log")
    store = Store("mariadb", directory)
    app = worker = None
    contexts = []
    try:
        conn = store.database.connect()
        secret = uuid.uuid4().hex * 2
        var_dir = directory / store.name
        settings_env = {"APP_MODE": "test", "DATABASE_URL": store.url, "VAR_DIR": str(var_dir),
                        "SECRET_KEY": secret, "OPENAI_API_KEY": "sk-bench",
                        "OPENAI_BASE_URL": stand_in.base_url, "WORKER_SLOTS": str(slots),
                        "IMAGES_PER_MINUTE": str(ipm), "WORKER_LAUNCH": "none", "LOG_LEVEL": "WARNING",
                        "PLAN_MAX_PROMPTS": str(max(200, items))}
        app = AppProcess(base_env(**settings_env), directory / "app.log")
        settings = load_settings({**settings_env, "PUBLIC_BASE_URL": app.base_url}, environ={},
                                 env_file=directory / "no.env")
        cookie = sessions.cookie_name(settings)
        people = []
        for n in range(subscribers):
            user_id = add_subscriber(conn, n, balance=items * 10)
            session = sessions.create(conn, settings, int(time.time()), user_id=user_id)
            context = browser.new_context(locale="en-US")
            context.add_cookies([{"name": cookie, "value": session.token, "url": app.base_url}])
            contexts.append(context)
            people.append({"context": context, "csrf": session.csrf_token, "user_id": user_id})
        # Warm up each context (its connection to the app, the static files) so that the clock measures delivery.
        for person in people:
            person["page"] = person["context"].new_page()
            person["page"].goto(app.base_url + "/library", wait_until="networkidle")
        total = subscribers * items
        started = time.monotonic()
        for n, person in enumerate(people):
            body = {"prompts": "\n".join(f"bench image {i} of subscriber {n}" for i in range(items)),
                    "names": "", "style": "", "model": "gpt-image-2", "ratio": "1:1", "quality": "low",
                    "format": "jpeg", "request_token": uuid.uuid4().hex}
            response = person["context"].request.post(
                app.base_url + "/api/batches", data=json.dumps(body),
                headers={"Content-Type": "application/json", "Accept": "application/json",
                         "X-CSRF-Token": person["csrf"]})
            if response.status != 201:
                raise SystemExit(f"creating a batch answered {response.status}: {response.text()[:500]}")
            person["batch_id"] = response.json()["batch"]["id"]
        created = time.monotonic() - started
        calls: dict[str, list[float]] = {"poll": [], "image": [], "ack": []}

        def timed(request):
            kind, timing = request_kind(request.url), request.timing
            if kind and timing.get("responseStart", -1) >= 0 and timing.get("requestStart", -1) >= 0:
                calls[kind].append(timing["responseStart"] - timing["requestStart"])

        worker_env = base_env(**{k: v for k, v in settings_env.items() if k != "SECRET_KEY"})
        worker = subprocess.Popen([sys.executable, "cli.py", "worker", "--max-seconds", str(int(total * 2 + 120))],
                                  cwd=ROOT, env=worker_env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                                  text=True)
        if drain:  # let the worker do everything first, then time the pages alone
            limit = time.monotonic() + max(total * latency / slots, total * 60 / ipm) * 3 + 120
            while conn.scalar("SELECT COUNT(*) AS n FROM batch_items WHERE status = 'done'") < total:
                if worker.poll() is not None or time.monotonic() > limit:
                    raise SystemExit("the worker did not finish the batches before the drain")
                time.sleep(0.1)
            started = time.monotonic()
        for person in people:
            # "response", not "requestfinished": batch.js never reads an ack's body, so that one never finishes.
            person["page"].on("response", lambda response: timed(response.request))
            person["page"].goto(f"{app.base_url}/batches/{person['batch_id']}", wait_until="domcontentloaded")
        hidden = [p["page"].evaluate("document.hidden") for p in people]
        floor = max(total * latency / slots, total * 60 / ipm)
        deadline = started + floor * 3 + 120
        if drain:
            deadline = started + total * 2 + 120  # the pages alone: give them half an image a second at least
            floor = 1.0  # no floor: the ratio printed for a drain is its wall time
        by_batch = {p["batch_id"]: p for p in people}
        stored = {p["batch_id"]: 0 for p in people}
        db_done_at: dict[int, float] = {}
        idb_done_at: dict[int, float] = {}
        mid = None
        while len(idb_done_at) < len(people):
            now = time.monotonic() - started
            if time.monotonic() > deadline:
                raise SystemExit(f"timed out after {now:.0f} s: IndexedDB holds {stored}")
            finished = {row["batch_id"]: row["n"] for row in conn.all(
                "SELECT batch_id, COUNT(*) AS n FROM batch_items WHERE status IN ('done', 'delivered') "
                "GROUP BY batch_id")}
            for batch_id in by_batch:
                if batch_id not in db_done_at and finished.get(batch_id, 0) >= items:
                    db_done_at[batch_id] = now
                if batch_id not in idb_done_at:
                    count = idb_count(by_batch[batch_id]["page"], batch_id)
                    if count is not None:
                        stored[batch_id] = count
                    if stored[batch_id] >= items:
                        idb_done_at[batch_id] = time.monotonic() - started
            if mid is None and now >= floor / 2:
                mid = {"at": now, "db": [finished.get(b, 0) for b in by_batch], "idb": [stored[b] for b in by_batch]}
            if worker.poll() is not None and len(db_done_at) < len(people):
                raise SystemExit(f"the worker stopped early: {worker.stderr.read()[-2000:]}")
            time.sleep(max(0.0, SAMPLE_EVERY - (time.monotonic() - started - now)))
        wall = max(idb_done_at.values())
        # The acknowledgements: the server's copies go once the browsers said they have them.
        ack_deadline = time.monotonic() + 15
        while time.monotonic() < ack_deadline:
            delivered = conn.scalar("SELECT COUNT(*) AS n FROM batch_items WHERE status = 'delivered'")
            if delivered >= total:
                break
            time.sleep(0.1)
        acked_after = time.monotonic() - started
        conn.close()
    finally:
        for context in contexts:
            context.close()
        if worker is not None:
            stop_process(worker, timeout=30)
        if app is not None:
            app.stop()
        stand_in.stop()
        store.drop()
    db_wall = max(db_done_at.values())
    finishes = [idb_done_at[p["batch_id"]] for p in people]
    return {"items": total, "floor": floor, "wall": wall, "ratio": wall / floor, "db_wall": db_wall,
            "db_ratio": db_wall / floor, "tail": wall - db_wall, "refusals": stand_in.answers(429),
            "finishes": finishes, "mid": mid, "delivered": delivered, "acked_after": acked_after,
            "created": created, "hidden": hidden, "calls": calls}


def main(argv: list[str] | None = None) -> int:
    """Run the scenarios and print a Markdown table for bench/RESULTS.md."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--items", type=int, default=100, help="items per subscriber's batch (default 100)")
    parser.add_argument("--latency", type=float, default=1.0, help="seconds per image at the stand-in (L)")
    parser.add_argument("--slots", default="1,4", help="comma-separated WORKER_SLOTS values to run (W)")
    parser.add_argument("--subscribers", default="1,4", help="comma-separated subscriber counts to run")
    parser.add_argument("--no-drain", action="store_true",
                        help="skip part 2 (the pages collecting a batch the worker has already done)")
    parser.add_argument("--quick", action="store_true", help="12 items per batch at L=0.5 s, to try the script")
    args = parser.parse_args(argv)
    # A `kill` ends the run through the finally blocks: the processes stop and the databases are dropped.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    if args.quick:
        args.items, args.latency = 12, 0.5
    slot_values = [int(v) for v in args.slots.split(",") if v]
    subscriber_values = [int(v) for v in args.subscribers.split(",") if v]
    command = " ".join([".venv/bin/python", "bench/delivery.py", *(argv if argv is not None else sys.argv[1:])])
    print(f"# delivery bench, {datetime.datetime.now():%Y-%m-%d %H:%M}\n")
    print(f"- machine: {machine_line()}")
    print(f"- command: `{command}`")
    print(f"- N={args.items} per batch, L={args.latency} s, IPM = 2 x 60·W/L (latency-bound), MariaDB, Chromium "
          "(one context per subscriber), app and worker and stand-in in their own processes")
    print("- baseline: the floor max(N·L/W, N·60/IPM); figure: wall time from the first batch's creation until "
          "every image is in IndexedDB, ÷ floor; **goal ≤ 1.05**, few 429s, even shares (Jain index ≈ 1)\n")
    print("| subscribers | W | items | IPM | floor s | wall to IndexedDB s | **wall/floor** | last done in DB s "
          "(÷ floor) | poll tail s | 429s | each subscriber done at s | at mid-run: in IndexedDB / done in DB "
          "| Jain (DB, IDB) |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    from playwright.sync_api import sync_playwright

    notes, timings, drains = [], [], []
    with sync_playwright() as playwright, tempfile.TemporaryDirectory(prefix="iib-delivery-") as temp:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            for subscribers in subscriber_values:
                for slots in slot_values:
                    ipm = int(round(60 * slots / args.latency * 2))
                    directory = Path(temp) / f"s{subscribers}-w{slots}"
                    directory.mkdir()
                    r = run_scenario(browser, directory, subscribers=subscribers, items=args.items,
                                     latency=args.latency, slots=slots, ipm=ipm)
                    mid = r["mid"] or {"idb": [], "db": []}
                    shares = " · ".join(f"{i}/{d}" for i, d in zip(mid["idb"], mid["db"], strict=True))
                    fairness = (f"{jain(mid['db']):.3f}, {jain(mid['idb']):.3f}" if subscribers > 1 else "–")
                    print(f"| {subscribers} | {slots} | {r['items']} | {ipm} | {r['floor']:.1f} | {r['wall']:.1f} | "
                          f"**{r['ratio']:.3f}** | {r['db_wall']:.1f} ({r['db_ratio']:.3f}) | {r['tail']:.1f} | "
                          f"{r['refusals']} | {', '.join(f'{t:.1f}' for t in r['finishes'])} | {shares} | "
                          f"{fairness} |", flush=True)
                    timings.append((f"{subscribers} × W={slots}", r["calls"]))
                    scenario_notes(notes, f"{subscribers} subscriber(s), W={slots}", r)
            if not args.no_drain:
                slots = max(slot_values)
                for subscribers in subscriber_values:
                    ipm = int(round(60 * slots / args.latency * 2))
                    directory = Path(temp) / f"drain-s{subscribers}"
                    directory.mkdir()
                    r = run_scenario(browser, directory, subscribers=subscribers, items=args.items,
                                     latency=args.latency, slots=slots, ipm=ipm, drain=True)
                    drains.append((subscribers, r))
                    timings.append((f"drain, {subscribers} page(s)", r["calls"]))
                    scenario_notes(notes, f"drain with {subscribers} page(s)", r)
        finally:
            browser.close()
    if drains:
        print("\n## The pages alone: collecting images that are all done already\n")
        print("The worker does every item first; then the batch pages open and the clock starts. batch.js "
              "collects at most 2 images at a time per page (fetch, store in IndexedDB, acknowledge); this is "
              "the rate the pages can take, whatever the worker does.\n")
        print("| pages | images | wall to IndexedDB s | **images/s, all pages** | images/s per page | "
              "each page done at s |")
        print("|---|---|---|---|---|---|")
        for subscribers, r in drains:
            print(f"| {subscribers} | {r['items']} | {r['wall']:.1f} | **{r['items'] / r['wall']:.1f}** | "
                  f"{r['items'] / r['wall'] / subscribers:.1f} | {', '.join(f'{t:.1f}' for t in r['finishes'])} |")
    print("\n## The pages' calls: time the app took to answer (request sent to first byte), in ms\n")
    print("| scenario | status polls: n, median, p90 | images: n, median, p90 | acks: n, median, p90 |")
    print("|---|---|---|---|")
    for label, calls in timings:
        print(f"| {label} | " + " | ".join(spread(calls[kind]) for kind in ("poll", "image", "ack")) + " |")
    print()
    for note in notes:
        print(f"- {note}")
    return 0


def scenario_notes(notes: list[str], label: str, r: dict) -> None:
    """What the table does not show: acknowledgements left over, a hidden page, the setup times."""
    if r["delivered"] < r["items"]:
        notes.append(f"{label}: only {r['delivered']} of {r['items']} items acknowledged "
                     f"{r['acked_after']:.1f} s after the start")
    if any(r["hidden"]):
        notes.append(f"{label}: a batch page reported document.hidden (batch.js then polls every 10 s)")
    notes.append(f"{label}: batches created in {r['created']:.2f} s; every item acknowledged (delivered) by "
                 f"{r['acked_after']:.1f} s")


def spread(values: list[float]) -> str:
    """n, median and 90th percentile of some durations in ms."""
    if not values:
        return "0"
    ordered = sorted(values)
    p90 = ordered[min(len(ordered) - 1, int(round(0.9 * (len(ordered) - 1))))]
    return f"{len(values)}, {statistics.median(ordered):.0f}, {p90:.0f}"

if __name__ == "__main__":
    sys.exit(main())
