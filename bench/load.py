"""Benchmark of the pages under load: many clients at once against the app under waitress on MariaDB.

    .venv/bin/python bench/load.py [--seconds 30] [--clients 50] [--runs 3] [--threads 8] [--quick]

What: the app as production serves it (waitress with 8 threads, as app.py's main; test mode
with the access log written to a file at INFO, as production's var/log/web.log) on a fresh
MariaDB database, in its own process. `--clients` clients, each with its own kept-alive
connection, send requests back to back (a closed loop) for `--seconds` seconds, on one
endpoint at a time:

* landing  - GET /                    anonymous (no cookie);
* account  - GET /account             signed in (each client its own session, made with
                                      services.sessions.create, its cookie sent);
* poll     - GET /api/batches/<id>    signed in, a 100-item batch (40 done, 5 failed, 5 running,
                                      50 queued; prompts of about 150 characters).

Baseline (same run, same waitress settings, same load generator): a trivial WSGI app that
answers "ok", to show the server's and the load generator's own share.

The load generator is one asyncio process with raw sockets (HTTP/1.1 keep-alive,
Content-Length or chunked bodies): a thread per client would fight the server for the GIL and
the 2 cores. Its CPU use is reported (as % of one core; near 100 % it would be the
bottleneck), with the server's and MariaDB's. A request counts as an error when the answer is
not 2xx or the connection fails. Each figure is the median of `--runs` runs, the endpoints
interleaved run by run; the first `--warmup` seconds of each run are not counted. A run also
measures each endpoint with one client alone (the latency without queueing).

When a signed-in endpoint misses the goal, the script finds where the time goes: the same
requests in-process (werkzeug's client, same database) with the time of each phase measured
exclusively (database connect, SQL, Jinja2 rendering, JSON, logging, the rest), and cProfile's
top functions. What-if rows run the endpoints that missed again with one bench-only change in
the server process, to size the fix it points at (the app's code is not changed): for the
signed-in endpoints, PyMySQL told not to try TLS when the app's connections would still offer
it, else one database connection kept per thread instead of one per request; for the anonymous
page, its HTML rendered once per language and URL (unless the app already does that, as it does
since web.render_public). The in-process breakdown is repeated with
the same change, to show what is left.

Goal: p99 ≤ 50 ms and no error, for each endpoint, with 50 clients.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import cProfile
import datetime
import functools
import json
import logging
import os
import pstats
import random
import secrets
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from common import machine_line, no_tls_to_database, stop_process  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

try:
    import waitress.server  # noqa: F401 - the server the app runs under
except ImportError:  # pragma: no cover - the app's own requirements bring it
    raise SystemExit("waitress is missing: .venv/bin/pip install -r requirements.txt") from None

GOAL_P99_MS = 50.0
MAX_REQUESTS_PER_RUN = 2_000_000  # a hard bound on top of the time bound
CLK_TCK = os.sysconf("SC_CLK_TCK")




# ----- the servers (run in their own process: `load.py --serve app|trivial ...`) ---------------------------

def trivial_app(environ, start_response):
    """The baseline: the least a WSGI app can answer."""
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", "2")])
    return [b"ok"]




def reuse_connections() -> None:
    """What-if (bench only): each thread keeps one database connection across requests instead of one per request."""
    import threading

    from services import db

    local = threading.local()
    original = db.Database.connect

    def connect(self):
        conn = getattr(local, "conn", None)
        if conn is None:
            conn = local.conn = original(self)

            def keep() -> None:  # the request's end: roll back anything left open, keep the connection
                if conn._depth:
                    conn.rollback()

            conn.close = keep
        return conn

    db.Database.connect = connect


def cache_anonymous_pages() -> None:
    """What-if (bench only): a page without a session cookie is rendered once per template, language and URL."""
    import threading

    import bottle

    from routes import web
    from services import sessions

    original = web.render
    cache: dict[tuple, str] = {}
    lock = threading.Lock()

    def render(template: str, **context) -> str:
        if context or bottle.request.get_cookie(sessions.cookie_name(web.app().settings)):
            return original(template, **context)
        key = (template, web.lang(), bottle.request.fullpath, bottle.request.query_string)
        page = cache.get(key)
        if page is None:
            page = original(template, **context)
            with lock:
                cache[key] = page
        return page

    web.render = render


WHAT_IFS = {  # name -> (what it changes, the patch, for signed-in endpoints (True) or anonymous ones (False))
    "no-tls": ("PyMySQL told not to try TLS (`ssl_disabled=True`)", no_tls_to_database, True),
    "reuse-connections": ("one database connection per server thread, kept across requests (rolled back at each "
                          "request's end) instead of a new one per request", reuse_connections, True),
    "cache-anonymous-pages": ("the HTML of a page without a session cookie rendered once per template, language "
                              "and URL (`web.render` memoized)", cache_anonymous_pages, False),
}


def tls_attempted(database_url: str) -> bool:
    """True when the app's connections to this database would still offer TLS (PyMySQL's default)."""
    from services import db

    return not db.Database(database_url).params.get("ssl_disabled")


def serve(kind: str, threads: int, overrides: dict, what_ifs: list[str]) -> int:
    """Serve the app (or the trivial app) under waitress on a free loopback port; print the port, run forever."""
    import waitress.server

    if kind == "trivial":
        application = trivial_app
    else:
        from app import create_app
        from services import logs

        for name in what_ifs:
            WHAT_IFS[name][1]()
        application = create_app(overrides)
        logs.setup(application.settings, "web", to_file=True)  # as passenger_wsgi.py: var/log/web.log
    server = waitress.server.create_server(application, host="127.0.0.1", port=0, threads=threads,
                                           ident="images-in-bulk")
    print(server.effective_port, flush=True)
    server.run()
    return 0


class Server:
    """A server process started by `serve()`, its port, and its CPU time."""

    def __init__(self, kind: str, threads: int, overrides: dict, log_file: Path, what_ifs: list[str] | None = None):
        command = [sys.executable, str(Path(__file__).resolve()), "--serve", kind, "--threads", str(threads),
                   "--serve-settings", json.dumps(overrides), "--what-if", ",".join(what_ifs or [])]
        with open(log_file, "a", encoding="utf-8") as log:
            self.process = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.PIPE, stderr=log, text=True)
        line = self.process.stdout.readline().strip()
        if not line.isdigit():
            self.stop()
            raise SystemExit(f"the {kind} server did not start; see {log_file}")
        self.port = int(line)

    def cpu_seconds(self) -> float:
        """User + system CPU time of the server process so far."""
        return cpu_seconds(self.process.pid)

    def stop(self) -> None:
        """Stop the server process."""
        stop_process(self.process)


def cpu_seconds(pid: int | None) -> float:
    """User + system CPU time of a process (0 when unknown)."""
    if pid is None:
        return 0.0
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def machine_busy() -> tuple[float, float]:
    """(busy, total) jiffies of the whole machine, from /proc/stat."""
    values = [int(v) for v in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    idle = values[3] + values[4]
    return sum(values) - idle, sum(values)


def mariadb_pid() -> int | None:
    """The MariaDB server's process id, to read its CPU time (None when it is not on this machine)."""
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if (entry / "comm").read_text().strip() in ("mariadbd", "mysqld"):
                    return int(entry.name)
            except OSError:
                continue
    return None


# ----- the load generator ----------------------------------------------------------------------------------

async def _read_response(reader: asyncio.StreamReader) -> tuple[int, int, bool]:
    """Read one HTTP/1.1 response whole; returns (status, body bytes, the server closes the connection)."""
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split(" ", 2)[1])
    headers = {}
    for line in lines[1:]:
        if ":" in line:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
    if "content-length" in headers:
        length = int(headers["content-length"])
        await reader.readexactly(length)
    elif headers.get("transfer-encoding", "").lower() == "chunked":
        length = 0
        while True:
            size = int((await reader.readuntil(b"\r\n")).split(b";")[0], 16)
            if size == 0:
                await reader.readuntil(b"\r\n")
                break
            await reader.readexactly(size + 2)
            length += size
    else:
        length = len(await reader.read())
        return status, length, True
    return status, length, headers.get("connection", "").lower() == "close"


async def _client(port: int, request: bytes, counted_from: float, until: float, latencies: list[float],
                  errors: collections.Counter, budget: list[int], think: float) -> None:
    """One client: a kept-alive connection, requests back to back (or `think` seconds apart) until `until`."""
    writer = None
    wait = random.uniform(0, think)  # spread the clients' first requests over one think time, as pages are
    try:
        while time.perf_counter() + wait < until and budget[0] > 0:
            if wait:
                await asyncio.sleep(wait)
            wait = think
            budget[0] -= 1
            started = time.perf_counter()
            try:
                if writer is None:
                    reader, writer = await asyncio.open_connection("127.0.0.1", port)
                writer.write(request)
                status, _, closing = await _read_response(reader)
                if closing:
                    writer.close()
                    writer = None
            except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, ValueError) as exc:
                if started >= counted_from:
                    errors[type(exc).__name__] += 1
                if writer is not None:
                    writer.close()
                    writer = None
                await asyncio.sleep(0.01)
                continue
            if started >= counted_from:
                latencies.append(time.perf_counter() - started)
                if not 200 <= status < 300:
                    errors[f"HTTP {status}"] += 1
    finally:
        if writer is not None:
            writer.close()


def build_request(port: int, path: str, cookie: str | None, accept: str) -> bytes:
    """The raw bytes of one GET, as a browser would send them (language, accept, cookie)."""
    lines = [f"GET {path} HTTP/1.1", f"Host: 127.0.0.1:{port}", f"Accept: {accept}", "Accept-Language: es-ES,es;q=0.9",
             "Accept-Encoding: identity", "User-Agent: iib-bench-load"]
    if cookie:
        lines.append(f"Cookie: {cookie}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


def run_load(port: int, requests: list[bytes], seconds: float, warmup: float, server_pid: int,
             db_pid: int | None, think: float = 0.0) -> dict:
    """Drive len(requests) clients for warmup + seconds; returns throughput, latencies, errors and CPU shares."""
    latencies: list[float] = []
    errors: collections.Counter = collections.Counter()
    budget = [MAX_REQUESTS_PER_RUN]

    async def main() -> dict:
        start = time.perf_counter()
        counted_from, until = start + warmup, start + warmup + seconds
        window: dict = {}

        async def mark_start():
            await asyncio.sleep(max(0.0, counted_from - time.perf_counter()))
            window.update(cpu=time.process_time(), server=cpu_seconds(server_pid), db=cpu_seconds(db_pid),
                          machine=machine_busy(), wall=time.perf_counter())

        marker = asyncio.ensure_future(mark_start())
        tasks = [asyncio.ensure_future(_client(port, request, counted_from, until, latencies, errors, budget, think))
                 for request in requests]
        _, pending = await asyncio.wait(tasks, timeout=warmup + seconds + 15)
        for task in pending:  # a client stuck on a request that never came back
            task.cancel()
            errors["no answer in 15 s"] += 1
        await marker
        wall = time.perf_counter() - window["wall"]
        busy, total = machine_busy()
        return {"wall": wall, "client_cpu": (time.process_time() - window["cpu"]) / wall,
                "server_cpu": (cpu_seconds(server_pid) - window["server"]) / wall,
                "db_cpu": (cpu_seconds(db_pid) - window["db"]) / wall,
                "machine": (busy - window["machine"][0]) / max(1, total - window["machine"][1])}

    shares = asyncio.run(main())
    latencies.sort()
    count = len(latencies)
    return {
        "requests": count, "rps": count / shares["wall"],
        "median": statistics.median(latencies) * 1000 if latencies else float("nan"),
        "p99": latencies[min(count - 1, int(count * 0.99))] * 1000 if latencies else float("nan"),
        "errors": sum(errors.values()), "error_kinds": dict(errors), **shares,
    }


# ----- the data: a fresh database with a subscriber, sessions and a 100-item batch ----------------------------

def prepare_data(store, settings, catalog, clients: int) -> dict:
    """A subscriber with credits and a ledger, one session per client, and a 100-item batch in mixed states."""
    from services import batches, credits, db, sessions

    conn = store.database.connect()
    try:
        now = int(time.time())
        user_id = db.user_insert(conn, "Ana García", "ana@example.com", now)
        db.subscription_upsert(conn, user_id, {
            "id": "sub_bench", "customer": "cus_bench", "status": "active", "price_id": "price",
            "current_period_start": now - 86400, "current_period_end": now + 29 * 86400,
            "cancel_at_period_end": False, "cancel_at": None, "ended_at": None}, now)
        credits.grant_period(conn, user_id, 3000, "in_bench", now - 86400)
        prompts = [f"Product photo {i}: a ceramic mug on a walnut table, morning light through linen curtains, "
                   f"shallow depth of field, muted earth tones, variant {i}" for i in range(100)]
        checked = batches.review(catalog, datetime.date.today(), prompts=prompts, names=[], style="",
                                 model_id="gpt-image-2", ratio="16:9", quality="medium", image_format="jpeg",
                                 separator=", ", max_prompts=100, credits_left=credits.balance(conn, user_id))
        if not checked.ok:
            raise SystemExit(f"the bench batch was refused: {checked.errors}")
        batch_id = batches.create(conn, catalog, user_id, checked, "", now)[0]
        items = db.batch_items_of(conn, batch_id)
        for item in items[:55]:  # charged like the worker does, so the account's ledger has lines
            credits.reserve(conn, user_id, 8, f"item:{item['id']}:1", now)
        for item in items[:40]:
            conn.execute("UPDATE batch_items SET status = 'done', attempts = 1, charged = 8, result_path = ?, "
                         "result_bytes = 231000, result_width = 1536, result_height = 864, request_id = ?, "
                         "started_at = ?, finished_at = ? WHERE id = ?",
                         (f"{batch_id}/{item['id']}-1.jpg", f"req_{item['id']:032d}", now - 30, now - 5, item["id"]))
        for item in items[40:45]:
            conn.execute("UPDATE batch_items SET status = 'failed', attempts = 1, error_code = 'refused', "
                         "error_message = 'refused by the safety system', started_at = ?, finished_at = ? "
                         "WHERE id = ?", (now - 30, now - 5, item["id"]))
        for item in items[45:55]:
            conn.execute("UPDATE batch_items SET status = 'running', attempts = 1, charged = 8, worker = 'bench', "
                         "lease_until = ?, call_until = ?, started_at = ? WHERE id = ?",
                         (now + 3600, now + 3600, now - 3, item["id"]))
        tokens = [sessions.create(conn, settings, now, user_id=user_id).token for _ in range(clients)]
    finally:
        conn.close()
    return {"user_id": user_id, "batch_id": batch_id, "tokens": tokens,
            "cookie_name": sessions.cookie_name(settings)}


# ----- where the time goes: exclusive time per phase, in-process ---------------------------------------------

class PhaseTimer:
    """Wrap functions to add up the time spent in each, exclusive of the wrapped functions they call."""

    def __init__(self):
        self.seconds: collections.Counter = collections.Counter()
        self.cpu: collections.Counter = collections.Counter()
        self.calls: collections.Counter = collections.Counter()
        self._stack: list[list[float]] = []
        self._undo: list = []

    def wrap(self, owner, name: str, label: str) -> None:
        """Time every call of owner.name under `label`."""
        original = getattr(owner, name)
        timer = self

        @functools.wraps(original)
        def timed(*args, **kwargs):
            timer._stack.append([0.0, 0.0])
            started, cpu_started = time.perf_counter(), time.thread_time()
            try:
                return original(*args, **kwargs)
            finally:
                elapsed, cpu = time.perf_counter() - started, time.thread_time() - cpu_started
                inner, inner_cpu = timer._stack.pop()
                timer.seconds[label] += elapsed - inner
                timer.cpu[label] += cpu - inner_cpu
                timer.calls[label] += 1
                if timer._stack:
                    timer._stack[-1][0] += elapsed
                    timer._stack[-1][1] += cpu

        setattr(owner, name, timed)
        self._undo.append((owner, name, original))

    def restore(self) -> None:
        """Put the original functions back."""
        for owner, name, original in reversed(self._undo):
            setattr(owner, name, original)
        self._undo.clear()


PHASES = [  # (module path, attribute owner, name, label)
    ("routes.web", "App", "wsgi", "the rest: Bottle routing, WSGI, headers, cookies, our glue"),
    ("services.db", "Database", "connect", "DB connect (pymysql.connect, one per request)"),
    ("services.db", "Connection", "_run", "SQL queries (send + wait + read)"),
    ("services.db", "Connection", "close", "DB close"),
    ("services.sessions", None, "load", "session load (HMAC, JSON; excl. SQL)"),
    ("jinja2.environment", "Template", "render", "Jinja2 rendering (excl. SQL called from templates)"),
    ("routes.api", None, "describe", "describe() the batch (dicts, translation)"),
    ("bottle", None, "json_dumps", "JSON encoding"),
    ("logging", "Logger", "handle", "logging (the access line to web.log)"),
]


def where_time_goes(app, paths: dict[str, tuple[str, str | None]], count: int) -> list[str]:
    """For each endpoint: ms per request in each phase (in-process, one request at a time), and cProfile's top."""
    import importlib

    from werkzeug.test import Client

    lines = []
    for label, (path, cookie) in paths.items():
        client = Client(app)
        if cookie:
            name, _, value = cookie.partition("=")
            client.set_cookie(name, value)
        headers = {"Accept-Language": "es-ES,es;q=0.9",
                   "Accept": "application/json" if path.startswith("/api/") else "text/html"}
        for _ in range(10):
            client.get(path, headers=headers, buffered=True)
        timer = PhaseTimer()
        for module_name, owner_name, name, phase in PHASES:
            module = importlib.import_module(module_name)
            timer.wrap(getattr(module, owner_name) if owner_name else module, name, phase)
        try:
            started = time.perf_counter()
            for _ in range(count):
                response = client.get(path, headers=headers, buffered=True)
                if response.status_code != 200:
                    raise SystemExit(f"{path} answered {response.status_code} in-process")
            wall = time.perf_counter() - started
        finally:
            timer.restore()
        total, total_cpu = sum(timer.seconds.values()), sum(timer.cpu.values())
        lines.append(f"\n**{label}** (`GET {path}`), {count} requests in-process one at a time: "
                     f"{wall / count * 1000:.2f} ms per request (werkzeug's client included), "
                     f"{total / count * 1000:.2f} ms inside the app, of which {total_cpu / count * 1000:.2f} ms of "
                     "this process's CPU (what limits the requests per second: one process, one GIL)\n")
        lines.append("| phase | ms per request | share | CPU ms per request | share of the CPU | calls per request |")
        lines.append("|---|---|---|---|---|---|")
        for phase, seconds in timer.seconds.most_common():
            lines.append(f"| {phase} | {seconds / count * 1000:.2f} | {seconds / total:.0%} | "
                         f"{timer.cpu[phase] / count * 1000:.2f} | {timer.cpu[phase] / total_cpu:.0%} | "
                         f"{timer.calls[phase] / count:g} |")
        profile = cProfile.Profile()
        profile.enable()
        for _ in range(count):
            client.get(path, headers=headers, buffered=True)
        profile.disable()
        stats = pstats.Stats(profile)
        top = sorted(stats.stats.items(), key=lambda entry: entry[1][2], reverse=True)[:8]  # by own time
        lines.append(f"\ncProfile, {count} more requests, top functions by own time (cProfile's overhead "
                     "inflates Python-heavy code):\n")
        lines.append("| function | own ms per request | calls per request |")
        lines.append("|---|---|---|")
        for (file, line, function), (_, ncalls, tottime, _, _) in top:
            where = file.replace(str(ROOT) + "/", "").split("site-packages/")[-1]
            lines.append(f"| `{where}:{line}({function})` | {tottime / count * 1000:.2f} | {ncalls / count:g} |")
    return lines


# ----- the run -----------------------------------------------------------------------------------------------

def main(argv: list[str] | None = None) -> int:
    """Run the load scenarios and print the Markdown tables."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=30.0, help="measured seconds per endpoint and run")
    parser.add_argument("--clients", type=int, default=50, help="concurrent clients (default 50)")
    parser.add_argument("--runs", type=int, default=3, help="runs per endpoint (the median is shown; default 3)")
    parser.add_argument("--warmup", type=float, default=2.0, help="seconds at the start of a run not counted")
    parser.add_argument("--threads", type=int, default=8, help="waitress threads (default 8, as app.py's main)")
    parser.add_argument("--think", type=float, default=0.0,
                        help="seconds each client waits after an answer (default 0: back to back; the batch page "
                             "polls every 2 s)")
    parser.add_argument("--profile-requests", type=int, default=300, help="requests per endpoint in the profile")
    parser.add_argument("--no-what-if", action="store_true", help="skip the what-if runs (bench-only patches that "
                        "size a fix: PyMySQL without TLS, kept connections, cached anonymous pages)")
    parser.add_argument("--quick", action="store_true", help="3 s, 10 clients, 2 runs: to try the script")
    parser.add_argument("--serve", choices=("app", "trivial"), help=argparse.SUPPRESS)
    parser.add_argument("--serve-settings", default="{}", help=argparse.SUPPRESS)
    parser.add_argument("--what-if", default="", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.serve:
        return serve(args.serve, args.threads, json.loads(args.serve_settings),
                     [name for name in args.what_if.split(",") if name])
    if args.quick:
        args.seconds, args.clients, args.runs, args.warmup, args.profile_requests = 3.0, 10, 2, 1.0, 50

    from bench.generation import Store
    from services import catalog as model_catalog
    from services.config import load_settings

    command = ".venv/bin/python bench/load.py " + shlex.join(argv if argv is not None else sys.argv[1:])
    print("# Pages under load\n")
    print(f"Date and machine: {machine_line()}.  ")
    print(f"Command: `{command.strip()}`  ")
    pace = f"each waiting {args.think:g} s after an answer" if args.think else "back to back"
    print(f"waitress threads={args.threads}; {args.clients} clients ({pace}, keep-alive), {args.seconds:g} s "
          f"measured after {args.warmup:g} s of warm-up, median of {args.runs} runs; MariaDB (a fresh database); "
          "the load generator, the server and MariaDB share the same cores.  ")
    print(f"Goal: p99 ≤ {GOAL_P99_MS:.0f} ms and no error.\n")

    db_pid = mariadb_pid()
    with tempfile.TemporaryDirectory(prefix="iib-bench-load-") as temp:
        directory = Path(temp)
        store = Store("mariadb", directory)
        servers: list[Server] = []
        try:
            catalog_data = json.loads(model_catalog.DEFAULT_FILE.read_text(encoding="utf-8"))
            for entry in catalog_data["models"]:
                entry["retires"] = None
            (directory / "models.json").write_text(json.dumps(catalog_data), encoding="utf-8")
            overrides = {"APP_MODE": "test", "SECRET_KEY": secrets.token_urlsafe(48), "DATABASE_URL": store.url,
                         "VAR_DIR": str(directory / "var"), "MODEL_CATALOG": str(directory / "models.json"),
                         "LOG_LEVEL": "INFO", "WORKER_LAUNCH": "none"}
            settings = load_settings(overrides)
            catalog = model_catalog.parse(catalog_data, "the bench's catalogue")
            data = prepare_data(store, settings, catalog, args.clients)
            cookies = [f"{data['cookie_name']}={token}" for token in data["tokens"]]
            log_file = directory / "servers.log"
            trivial = Server("trivial", args.threads, {}, log_file)
            servers.append(trivial)
            app_server = Server("app", args.threads, overrides, log_file)
            servers.append(app_server)
            endpoints = {  # label -> (server, path, signed in, accept)
                "baseline: trivial WSGI app": (trivial, "/", False, "text/plain"),
                "landing (anonymous)": (app_server, "/", False, "text/html"),
                "account (signed in)": (app_server, "/account", True, "text/html"),
                "batch poll, 100 items (signed in)": (app_server, f"/api/batches/{data['batch_id']}", True,
                                                       "application/json"),
            }
            results = run_endpoints(endpoints, args, cookies, db_pid)
            print_table(results, args)
            missed = [label for label, runs in results.items()
                      if not label.startswith("baseline") and (median_of(runs, "p99") > GOAL_P99_MS
                                                               or sum(r["errors"] for r in runs))]
            # What-ifs: one bench-only change per kind of endpoint that missed, to size the fix it points at.
            signed_in_fix = "no-tls" if tls_attempted(store.url) else "reuse-connections"
            # The app renders public pages once for visitors without a session (web.render_public) since
            # 2026-11-30: the anonymous what-if would change nothing there.
            from routes import web

            anonymous_fix = None if hasattr(web, "render_public") else "cache-anonymous-pages"
            chosen = {label: (signed_in_fix if endpoints[label][2] else anonymous_fix) for label in missed}
            chosen = {label: name for label, name in chosen.items() if name}
            if chosen and not args.no_what_if:
                names = sorted(set(chosen.values()))
                what_if = Server("app", args.threads, overrides, log_file, names)
                servers.append(what_if)
                print("\n## What-if: the same load with one bench-only change in the server process\n")
                for name in names:
                    print(f"- **{name}**: {WHAT_IFS[name][0]}.")
                rows = {f"{label}, what-if: {name}": (what_if, *endpoints[label][1:]) for label, name in chosen.items()}
                print_table(run_endpoints(rows, args, cookies, db_pid), args)
            if missed:
                print("\n## Where the time goes\n")
                print(f"Missed the goal: {', '.join(missed)}. The same requests in the bench's own process "
                      "(same settings and database), one at a time, each phase's time exclusive of the "
                      "others:")
                from app import create_app
                from services import logs

                app = create_app(overrides)
                logs.setup(app.settings, "web", to_file=True)
                paths = {label: (endpoints[label][1], cookies[0] if endpoints[label][2] else None)
                         for label in missed}
                for line in where_time_goes(app, paths, args.profile_requests):
                    print(line)
                if chosen and not args.no_what_if:
                    names = sorted(set(chosen.values()))
                    print(f"\n### The same with the what-if applied in-process ({', '.join(names)}): what is left\n")
                    for name in names:
                        WHAT_IFS[name][1]()
                    for line in where_time_goes(app, paths, args.profile_requests):
                        print(line)
                logging.getLogger().handlers.clear()
        finally:
            for server in servers:
                server.stop()
            store.drop()
    print(f"\nLoad average at the end: {' '.join(f'{v:.2f}' for v in os.getloadavg())}.")
    return 0


def run_endpoints(endpoints: dict, args, cookies: list[str], db_pid: int | None) -> dict[str, list[dict]]:
    """Each endpoint `runs` times under load (interleaved), then with one client; results per endpoint."""
    results: dict[str, list[dict]] = {label: [] for label in endpoints}
    for run in range(args.runs):
        for label, (server, path, signed_in, accept) in endpoints.items():
            requests = [build_request(server.port, path, cookies[i % len(cookies)] if signed_in else None, accept)
                        for i in range(args.clients)]
            result = run_load(server.port, requests, args.seconds, args.warmup, server.process.pid, db_pid,
                              args.think)
            results[label].append(result)
            print(f"<!-- run {run + 1}/{args.runs} {label}: {result['rps']:.0f} req/s, median "
                  f"{result['median']:.1f} ms, p99 {result['p99']:.1f} ms, errors {result['errors']} "
                  f"{result['error_kinds'] or ''}, client CPU {result['client_cpu']:.0%} -->", flush=True)
    for label, (server, path, signed_in, accept) in endpoints.items():
        alone = run_load(server.port, [build_request(server.port, path, cookies[0] if signed_in else None, accept)],
                         min(5.0, args.seconds), 0.5, server.process.pid, db_pid)
        for result in results[label]:
            result["alone"] = alone["median"]
    return results


def median_of(runs: list[dict], key: str) -> float:
    """The median of one figure over the runs."""
    return statistics.median(r[key] for r in runs)


def print_table(results: dict[str, list[dict]], args) -> None:
    """The Markdown table: one row per endpoint, medians over the runs."""
    print("\n| endpoint | req/s | median ms | p99 ms | errors | 1 client alone: median ms | "
          "server CPU (cores) | MariaDB CPU (cores) | load generator CPU (% of 1 core) | machine busy | goal |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for label, runs in results.items():
        p99, errors = median_of(runs, "p99"), sum(r["errors"] for r in runs)
        kinds = collections.Counter()
        for r in runs:
            kinds.update(r["error_kinds"])
        verdict = "—" if label.startswith("baseline") else (
            "met" if p99 <= GOAL_P99_MS and not errors else "**missed**")
        error_text = f"{errors}" + (f" ({', '.join(f'{k}: {v}' for k, v in kinds.items())})" if errors else "")
        print(f"| {label} | {median_of(runs, 'rps'):.0f} | {median_of(runs, 'median'):.1f} | **{p99:.1f}** | "
              f"{error_text} | {runs[0]['alone']:.1f} | {median_of(runs, 'server_cpu'):.2f} | "
              f"{median_of(runs, 'db_cpu'):.2f} | {median_of(runs, 'client_cpu'):.0%} | "
              f"{median_of(runs, 'machine'):.0%} | {verdict} |", flush=True)
    if args.think:
        return
    print(f"\nWith {args.clients} clients in a closed loop the mean latency is {args.clients} ÷ throughput (Little's "
          f"law): a p99 ≤ {GOAL_P99_MS:.0f} ms needs well over {args.clients / GOAL_P99_MS * 1000:.0f} req/s, i.e. "
          f"under {GOAL_P99_MS / args.clients:.1f} ms of the server's CPU per request (one Python process: one GIL, "
          "about one core at most), on 2 cores shared with MariaDB and the load generator.")


if __name__ == "__main__":
    sys.exit(main())
