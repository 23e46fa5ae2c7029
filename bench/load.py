"""Benchmark of the pages under load: many clients at once against the app under waitress on MariaDB.

    .venv/bin/python bench/load.py [--seconds 30] [--clients 50] [--runs 3] [--threads 8] [--quick]
                                   [--mariadb private|shared] [--no-what-if] [--no-profile]

What: the app as production serves it (waitress with 8 threads, as app.py's main; test mode
with the access log written to a file at INFO, as production's var/log/web.log) on a fresh
MariaDB database, in its own process. `--clients` clients, each with its own kept-alive
connection, send requests back to back (a closed loop) for `--seconds` seconds, on one
endpoint at a time:

* landing  - GET /                    anonymous (no cookie);
* account  - GET /account             signed in (each client its own session, made with
                                      services.sessions.create, its cookie sent);
* poll     - GET /api/batches/<id>    signed in, a 100-item batch (40 done, 5 failed, 5 running,
                                      50 queued; prompts of about 150 characters): the full poll;
* delta    - GET /api/batches/<id>?since=<cursor> with If-None-Match: <ETag>, the cursor and ETag
             of a full poll, nothing changed since (a 304 is an answer, not an error). Only when
             the server has delta polls (its full poll answers a `cursor`): else the row reads n/a.

Baseline, the floor (same run, same waitress settings, same load generator): a trivial WSGI
app that answers "ok", to show the server's and the load generator's own share.

MariaDB is by default a mariadbd of the bench's own (`--mariadb private`: the machine's binary
and settings, a fresh data directory in /tmp, a free loopback port, stopped at the end), so
that mysqld's CPU time is the bench's alone on a machine whose MariaDB serves other jobs' tests;
`--mariadb shared` uses the machine's (TEST_MARIADB_URL).

The load generator is one asyncio process with raw sockets (HTTP/1.1 keep-alive,
Content-Length or chunked bodies, none for 1xx/204/304): a thread per client would fight the
server for the GIL and the 2 cores. Its CPU use is reported (as % of one core; near 100 % it
would be the bottleneck), with the server's and MariaDB's. A request counts as an error when
the answer is not 2xx (or 304 for the delta poll) or the connection fails. Each figure is the
median of `--runs` runs, the endpoints interleaved run by run; the first `--warmup` seconds of
each run are not counted. A run also measures each endpoint with one client alone (the latency
without queueing). Besides latency, the same run prints:

* CPU per request under load: utime + stime of the server process and of mysqld (/proc/<pid>/stat)
  over the window ÷ requests answered, total and net of the floor (the trivial app's server CPU
  per request; MariaDB's background during the floor row);
* throughput per core against the floor: req/s ÷ (server + MariaDB cores busy), and ÷ the
  trivial app's;
* app + MariaDB CPU per request in-process, the figure the goals are judged on: the WSGI app
  called directly (no server), one request at a time, time.process_time() of the bench's
  process + mysqld's CPU (less its background, measured in pauses between slices of requests);
* bytes on the wire per response (status line + headers + body as the raw socket client gets
  them), and an open batch page's poll bytes per minute (one poll per 2 s): full polls against
  delta polls that all answer 304.

When a signed-in endpoint misses the p99 goal, the script finds where the time goes: the same
requests in-process (werkzeug's client, same database) with the time of each phase measured
exclusively (database connect, SQL, Jinja2 rendering, JSON, logging, the rest), and cProfile's
top functions (`--no-profile` skips it). What-if rows run the endpoints that missed again with
one bench-only change in the server process, to size the fix it points at (the app's code is
not changed): for the signed-in endpoints, PyMySQL told not to try TLS when the app's
connections would still offer it, else one database connection kept per thread instead of one
per request (unless the app keeps one itself, as it does since db.Database.connection); for
the anonymous page, its HTML rendered once per language and URL (unless the app already does
that, as it does since web.render_public). The in-process breakdown is repeated with the same
change, to show what is left.

Goals: p99 ≤ 50 ms and no error, for each endpoint, with 50 clients. App + MariaDB CPU per
request in-process: account ≤ 2 ms, full poll ≤ 2 ms, delta poll with nothing new ≤ 0.5 ms and
≤ 300 bytes on the wire; an idle open batch page's polls ≥ 20× fewer bytes per minute than full
polls.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import contextlib
import cProfile
import dataclasses
import datetime
import functools
import gzip
import io
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
from typing import NamedTuple

from common import machine_line, no_tls_to_database, stop_process  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

try:
    import waitress.server  # noqa: F401 - the server the app runs under
except ImportError:  # pragma: no cover - the app's own requirements bring it
    raise SystemExit("waitress is missing: .venv/bin/pip install -r requirements.txt") from None

GOAL_P99_MS = 50.0
# Goals per request (2026-12-03): the app's + MariaDB's CPU, in-process; the delta poll's bytes on the wire.
GOAL_CPU_MS = {"account": 2.0, "poll": 2.0, "delta": 0.5}
GOAL_DELTA_BYTES = 300
GOAL_BYTES_RATIO = 20.0  # an idle open batch page: full polls ÷ delta polls, bytes per minute
POLL_EVERY = 2.0  # seconds between two polls of an open batch page (batch.js)
OK_2XX = frozenset(range(200, 300))
IN_PROCESS_SLICE = 0.5  # seconds of requests in-process, then as long a pause to measure MariaDB's background
NO_BODY = (204, 304)
MAX_REQUESTS_PER_RUN = 2_000_000  # a hard bound on top of the time bound
CLK_TCK = os.sysconf("SC_CLK_TCK")


# ----- the servers (run in their own process: `load.py --serve app|trivial ...`) ---------------------------

def trivial_app(environ, start_response):
    """The baseline: the least a WSGI app can answer (at /304 the least 304, after which waitress hangs up)."""
    if environ.get("PATH_INFO") == "/304":
        start_response("304 Not Modified", [])
        return []
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


def mariadb_version(url: str) -> str:
    """The server's version string, as SELECT VERSION() gives it."""
    from urllib.parse import urlsplit

    import pymysql

    parts = urlsplit(url)
    connection = pymysql.connect(host=parts.hostname, port=parts.port or 3306, user=parts.username or "root",
                                 password=parts.password or "")
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT VERSION()")
            return f"MariaDB {cursor.fetchone()[0]}"
    finally:
        connection.close()


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


class PrivateMariaDB:
    """A mariadbd of the bench's own (the machine's binary and settings): its CPU time is the bench's alone."""

    SETTINGS = ["--bind-address=127.0.0.1", "--skip-name-resolve", "--character-set-server=utf8mb4",
                "--collation-server=utf8mb4_general_ci"]  # as the machine's /etc/mysql/my.cnf

    def __init__(self):
        import pwd
        import shutil
        import socket

        self.process = None
        install, server = shutil.which("mariadb-install-db"), "/usr/sbin/mariadbd"
        if not install or not os.path.exists(server):
            raise SystemExit("no mariadb-install-db or /usr/sbin/mariadbd here: run with --mariadb shared")
        self.directory = Path(tempfile.mkdtemp(prefix="iib-bench-mariadb-"))
        user = []
        if os.geteuid() == 0:  # mariadbd will not run as root: it switches to mysql, who must own its files
            entry = pwd.getpwnam("mysql")
            os.chown(self.directory, entry.pw_uid, entry.pw_gid)
            user = ["--user=mysql"]
        data = self.directory / "data"
        done = subprocess.run([install, "--no-defaults", *user, f"--datadir={data}", "--skip-test-db",
                               "--auth-root-authentication-method=normal"], capture_output=True, text=True,
                              timeout=120)
        if done.returncode:
            self.stop()
            raise SystemExit(f"mariadb-install-db failed ({done.returncode}): {done.stderr[-500:]}")
        with socket.socket() as probe:  # a free loopback port
            probe.bind(("127.0.0.1", 0))
            self.port = probe.getsockname()[1]
        self.process = subprocess.Popen(
            [server, "--no-defaults", *user, f"--datadir={data}", f"--socket={self.directory / 'sock'}",
             f"--pid-file={self.directory / 'pid'}", f"--port={self.port}", f"--log-error={self.directory / 'err'}",
             *self.SETTINGS], stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        self.url = f"mysql://root@127.0.0.1:{self.port}/"
        import pymysql

        deadline = time.monotonic() + 60
        while True:
            try:
                pymysql.connect(host="127.0.0.1", port=self.port, user="root", password="").close()
                break
            except pymysql.err.OperationalError:
                if self.process.poll() is not None or time.monotonic() > deadline:
                    log = (self.directory / "err").read_text(errors="replace")[-800:] if (
                        self.directory / "err").exists() else ""
                    self.stop()
                    raise SystemExit(f"the bench's mariadbd did not start: {log}") from None
                time.sleep(0.2)

    def stop(self) -> None:
        """Shut the server down (SIGTERM: a clean shutdown) and delete its files."""
        import shutil

        if self.process is not None:
            stop_process(self.process, timeout=60)
        shutil.rmtree(self.directory, ignore_errors=True)


# ----- the load generator ----------------------------------------------------------------------------------

class Answer(NamedTuple):
    """One HTTP response as the raw socket client received it."""

    status: int
    headers: dict[str, str]
    head: bytes  # the status line and the headers, with the blank line that ends them
    body: bytes  # the body (de-chunked); empty unless asked for
    wire: int  # bytes received for this response: head + body (chunk framing included)
    closing: bool  # the server closes the connection after it


async def _read_response(reader: asyncio.StreamReader, keep_body: bool = False) -> Answer:
    """Read one HTTP/1.1 response whole (no body for 1xx, 204 and 304); the body is kept when asked."""
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split(" ", 2)[1])
    headers = {}
    for line in lines[1:]:
        if ":" in line:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
    wire, parts = len(head), []
    closing = headers.get("connection", "").lower() == "close"
    if status < 200 or status in NO_BODY:  # RFC 9112: never a body, whatever the headers say
        pass
    elif "content-length" in headers:
        data = await reader.readexactly(int(headers["content-length"]))
        wire += len(data)
        parts.append(data)
    elif headers.get("transfer-encoding", "").lower() == "chunked":
        while True:
            line = await reader.readuntil(b"\r\n")
            wire += len(line)
            size = int(line.split(b";")[0], 16)
            if size == 0:
                wire += len(await reader.readuntil(b"\r\n"))
                break
            data = await reader.readexactly(size + 2)
            wire += len(data)
            parts.append(data[:-2])
    else:
        data = await reader.read()
        wire += len(data)
        parts.append(data)
        closing = True
    return Answer(status, headers, head, b"".join(parts) if keep_body else b"", wire, closing)


async def _client(port: int, request: bytes, counted_from: float, until: float, latencies: list[float],
                  tally: dict, budget: list[int], think: float, ok: frozenset[int]) -> None:
    """One client: a kept-alive connection, requests back to back (or `think` seconds apart) until `until`."""
    writer = None
    errors, statuses = tally["errors"], tally["statuses"]
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
                    if started >= counted_from:
                        tally["connections"] += 1
                writer.write(request)
                answer = await _read_response(reader)
                if answer.closing:
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
                statuses[answer.status] += 1
                tally["bytes"] += answer.wire
                if answer.status not in ok:
                    errors[f"HTTP {answer.status}"] += 1
    finally:
        if writer is not None:
            writer.close()


def build_request(port: int, path: str, cookie: str | None, accept: str, extra: tuple = ()) -> bytes:
    """The raw bytes of one GET, as a browser would send them (language, accept, cookie, `extra` headers)."""
    lines = [f"GET {path} HTTP/1.1", f"Host: 127.0.0.1:{port}", f"Accept: {accept}", "Accept-Language: es-ES,es;q=0.9",
             "Accept-Encoding: identity", "User-Agent: iib-bench-load"]
    if cookie:
        lines.append(f"Cookie: {cookie}")
    lines.extend(f"{name}: {value}" for name, value in extra)
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


def fetch_once(port: int, request: bytes) -> Answer:
    """Send one request on a new connection and read its answer whole, body kept."""

    async def main() -> Answer:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        try:
            writer.write(request)
            return await asyncio.wait_for(_read_response(reader, keep_body=True), 30)
        finally:
            writer.close()

    return asyncio.run(main())


def run_load(port: int, requests: list[bytes], seconds: float, warmup: float, server_pid: int,
             db_pid: int | None, think: float = 0.0, ok: frozenset[int] = OK_2XX) -> dict:
    """Drive len(requests) clients for warmup + seconds; returns throughput, latencies, errors, bytes and CPU."""
    latencies: list[float] = []
    tally = {"errors": collections.Counter(), "statuses": collections.Counter(), "bytes": 0, "connections": 0}
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
        tasks = [asyncio.ensure_future(_client(port, request, counted_from, until, latencies, tally, budget, think,
                                               ok))
                 for request in requests]
        _, pending = await asyncio.wait(tasks, timeout=warmup + seconds + 15)
        for task in pending:  # a client stuck on a request that never came back
            task.cancel()
            tally["errors"]["no answer in 15 s"] += 1
        await marker
        wall = time.perf_counter() - window["wall"]
        busy, total = machine_busy()
        server_s, db_s = cpu_seconds(server_pid) - window["server"], cpu_seconds(db_pid) - window["db"]
        return {"wall": wall, "client_cpu": (time.process_time() - window["cpu"]) / wall,
                "server_cpu": server_s / wall, "db_cpu": db_s / wall, "server_s": server_s, "db_s": db_s,
                "machine": (busy - window["machine"][0]) / max(1, total - window["machine"][1])}

    shares = asyncio.run(main())
    latencies.sort()
    count = len(latencies)
    errors = tally["errors"]
    return {
        "requests": count, "rps": count / shares["wall"],
        "median": statistics.median(latencies) * 1000 if latencies else float("nan"),
        "p99": latencies[min(count - 1, int(count * 0.99))] * 1000 if latencies else float("nan"),
        "errors": sum(errors.values()), "error_kinds": dict(errors), "statuses": dict(tally["statuses"]),
        "bytes": tally["bytes"] / count if count else float("nan"), "connections": tally["connections"],
        # CPU per request answered, in ms: the server process's and MariaDB's (utime + stime over the window)
        "server_ms": shares["server_s"] / count * 1000 if count else float("nan"),
        "db_ms": shares["db_s"] / count * 1000 if count else float("nan"),
        **shares,
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
        original = getattr(owner, name, None)
        if original is None:  # renamed or gone in the app's code: that phase is not timed
            return
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
    ("routes.api", None, "_json", "JSON encoding"),  # the API's answers since 2026-12-03 (compact separators)
    ("logging", "Logger", "handle", "logging (the access line to web.log)"),
]


def where_time_goes(app, endpoints: list[Endpoint], cookie: str, count: int) -> list[str]:
    """For each endpoint: ms per request in each phase (in-process, one request at a time), and cProfile's top."""
    import importlib

    from werkzeug.test import Client

    lines = []
    for endpoint in endpoints:
        path, label = endpoint.path, endpoint.label
        client = Client(app)
        if endpoint.signed_in:
            name, _, value = cookie.partition("=")
            client.set_cookie(name, value)
        headers = {"Accept-Language": "es-ES,es;q=0.9", "Accept": endpoint.accept, **dict(endpoint.extra)}
        for _ in range(10):
            client.get(path, headers=headers, buffered=True)
        timer = PhaseTimer()
        for module_name, owner_name, name, phase in PHASES:
            module = importlib.import_module(module_name)
            owner = getattr(module, owner_name, None) if owner_name else module
            if owner is not None:
                timer.wrap(owner, name, phase)
        try:
            started = time.perf_counter()
            for _ in range(count):
                response = client.get(path, headers=headers, buffered=True)
                if response.status_code not in endpoint.ok:
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
                         f"{timer.cpu[phase] / count * 1000:.2f} | {timer.cpu[phase] / max(total_cpu, 1e-9):.0%} | "
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


# ----- CPU per request in-process: the WSGI app called directly, no server --------------------------------------

def wsgi_environ(endpoint: Endpoint, cookie: str) -> dict:
    """The WSGI environ of the endpoint's request with the load generator's headers (werkzeug's EnvironBuilder)."""
    from werkzeug.test import EnvironBuilder

    path, _, query = endpoint.path.partition("?")
    headers = {"Host": "127.0.0.1", "Accept": endpoint.accept, "Accept-Language": "es-ES,es;q=0.9",
               "Accept-Encoding": "identity", "User-Agent": "iib-bench-load", **dict(endpoint.extra)}
    if endpoint.signed_in:
        headers["Cookie"] = cookie
    builder = EnvironBuilder(path=path, query_string=query, headers=headers,
                             environ_base={"REMOTE_ADDR": "127.0.0.1", "SERVER_PROTOCOL": "HTTP/1.1"})
    try:
        return builder.get_environ()
    finally:
        builder.close()


def call_wsgi(application, template: dict) -> tuple[int, int]:
    """One request straight through a WSGI callable (a fresh copy of `template`); returns (status, body bytes)."""
    environ = dict(template)
    environ["wsgi.input"] = io.BytesIO(b"")
    got: list[str] = []

    def start_response(status, headers, exc_info=None):
        got.append(status)
        return lambda data: None

    body = application(environ, start_response)
    try:
        size = sum(len(chunk) for chunk in body)
    finally:
        if hasattr(body, "close"):
            body.close()
    return int(got[0].split(" ", 1)[0]), size


def in_process_cpu(app, endpoints: list[Endpoint], cookie: str, seconds: float, runs: int,
                   db_pid: int | None) -> dict[str, list[dict]]:
    """CPU per request with no server: each endpoint's WSGI app called in this process for `seconds`, `runs` times.

    The endpoints are interleaved run by run; each run is one request at a time after 20 uncounted ones, and
    reports this process's CPU (time.process_time: the app, its logging, the PyMySQL client) and MariaDB's
    (utime + stime of mysqld) per request. MariaDB serves other jobs too on a shared machine: the requests are
    sent in slices of IN_PROCESS_SLICE seconds, each followed by as long a pause, and MariaDB's CPU in the
    pauses (its background) is taken off its CPU in the slices, in proportion to their time.
    """
    results: dict[str, list[dict]] = {endpoint.key: [] for endpoint in endpoints}
    templates = {endpoint.key: wsgi_environ(endpoint, cookie) for endpoint in endpoints}
    for run in range(runs):
        for endpoint in endpoints:
            application = trivial_app if endpoint.key.startswith("floor") else app
            template = templates[endpoint.key]
            for _ in range(20):
                call_wsgi(application, template)
            statuses: collections.Counter = collections.Counter()
            count, busy, idle = 0, collections.Counter(), collections.Counter()
            while busy["wall"] < seconds or count < 50:
                wall0, cpu0, db0 = time.perf_counter(), time.process_time(), cpu_seconds(db_pid)
                until = wall0 + IN_PROCESS_SLICE
                while True:
                    status, _ = call_wsgi(application, template)
                    statuses[status] += 1
                    count += 1
                    if time.perf_counter() >= until:
                        break
                wall1, db1 = time.perf_counter(), cpu_seconds(db_pid)
                busy.update(wall=wall1 - wall0, cpu=time.process_time() - cpu0, db=db1 - db0)
                time.sleep(IN_PROCESS_SLICE)
                idle.update(wall=time.perf_counter() - wall1, db=cpu_seconds(db_pid) - db1)
            wrong = {status: n for status, n in statuses.items() if status not in endpoint.ok}
            if wrong:
                raise SystemExit(f"{endpoint.path} answered {wrong} in-process")
            background = idle["db"] / idle["wall"]  # MariaDB's cores while the bench sent it nothing
            result = {"requests": count, "app_ms": busy["cpu"] / count * 1000,
                      "db_raw_ms": busy["db"] / count * 1000, "background": background,
                      "db_ms": (busy["db"] - background * busy["wall"]) / count * 1000,
                      "wall_ms": busy["wall"] / count * 1000, "statuses": dict(statuses)}
            result["total_ms"] = result["app_ms"] + result["db_ms"]
            results[endpoint.key].append(result)
            print(f"<!-- in-process run {run + 1}/{runs} {endpoint.label}: {count} requests, app "
                  f"{result['app_ms']:.3f} + MariaDB {result['db_ms']:.3f} ms CPU per request (MariaDB raw "
                  f"{result['db_raw_ms']:.3f} ms, its background {background * 1000:.0f} ms/s), "
                  f"statuses {dict(statuses)} -->", flush=True)
    return results


# ----- the run -----------------------------------------------------------------------------------------------

@dataclasses.dataclass
class Endpoint:
    """One endpoint the bench drives: its server, its request, and the statuses that count as answered."""

    key: str  # floor, landing, account, poll, delta
    label: str
    server: Server
    path: str
    signed_in: bool
    accept: str
    extra: tuple = ()  # more request headers, (name, value) pairs
    ok: frozenset = OK_2XX

    def request(self, cookie: str | None) -> bytes:
        """The raw request (with `cookie` when the endpoint is signed in)."""
        return build_request(self.server.port, self.path, cookie if self.signed_in else None, self.accept,
                             self.extra)


def find_delta_poll(poll: Endpoint, cookie: str) -> tuple[Endpoint | None, str]:
    """The delta poll (`?since=<cursor>`, If-None-Match: <ETag>) when the server has it, and what it answers."""
    answer = fetch_once(poll.server.port, poll.request(cookie))
    if answer.status != 200:
        raise SystemExit(f"GET {poll.path} answered {answer.status}")
    data = json.loads(answer.body)
    cursor, etag = data.get("cursor"), answer.headers.get("etag")
    if cursor is None:
        return None, (f"n/a (server has no delta polls): `GET {poll.path}` answers without a `cursor` "
                      f"(ETag: {etag or 'none'}), so a page polls in full every time")
    extra = (("If-None-Match", etag),) if etag else ()
    delta = Endpoint("delta", "batch poll, delta, nothing new (signed in)", poll.server,
                     f"{poll.path}?since={cursor}", True, "application/json", extra, OK_2XX | {304})
    check = fetch_once(poll.server.port, delta.request(cookie))
    if check.status == 304:
        what = f"304 in {check.wire} bytes"
    else:
        try:
            body = json.loads(check.body)
        except ValueError:
            body = {}
        what = (f"**{check.status}, not 304** ({check.wire} bytes; full: {body.get('full')}, "
                f"{len(body.get('items', []))} items)")
    return delta, (f"the full poll answers `cursor` {cursor!r} (`full`: {data.get('full')}) and ETag "
                   f"{etag or '**none**'}; `?since={cursor}` with If-None-Match answers {what}")


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
    parser.add_argument("--in-process-seconds", type=float, default=5.0,
                        help="seconds per endpoint and run of the in-process CPU figure (default 5)")
    parser.add_argument("--profile-requests", type=int, default=300, help="requests per endpoint in the profile")
    parser.add_argument("--no-what-if", action="store_true", help="skip the what-if runs (bench-only patches that "
                        "size a fix: PyMySQL without TLS, kept connections, cached anonymous pages)")
    parser.add_argument("--no-profile", action="store_true",
                        help="skip 'where the time goes' (phases and cProfile) for the endpoints that miss p99")
    parser.add_argument("--mariadb", choices=("private", "shared"), default="private",
                        help="private (default): a mariadbd of the bench's own, so that mysqld's CPU time is the "
                             "bench's alone; shared: the machine's server (TEST_MARIADB_URL, default 127.0.0.1:3306)")
    parser.add_argument("--in-process-only", action="store_true",
                        help="only the in-process CPU per request and the bytes on the wire (no load runs): the "
                             "goals' figures in about 2 minutes")
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
        args.in_process_seconds = 2.0

    from bench.generation import Store
    from services import catalog as model_catalog
    from services.config import load_settings

    command = ".venv/bin/python bench/load.py " + shlex.join(argv if argv is not None else sys.argv[1:])
    print("# Pages under load\n")
    print(f"Date and machine: {machine_line()}.  ")
    print(f"Code: {code_line()}.  ")
    print(f"Command: `{command.strip()}`  ")
    pace = f"each waiting {args.think:g} s after an answer" if args.think else "back to back"
    print(f"waitress threads={args.threads}; {args.clients} clients ({pace}, keep-alive), {args.seconds:g} s "
          f"measured after {args.warmup:g} s of warm-up, median of {args.runs} runs; MariaDB (a fresh database); "
          "the load generator, the server and MariaDB share the same cores.  ")

    with contextlib.ExitStack() as cleanup:  # the bench's own mariadbd, stopped whatever happens
        if args.mariadb == "private":
            import bench.generation

            private = PrivateMariaDB()
            cleanup.callback(private.stop)
            bench.generation.MARIADB_ADMIN = private.url  # Store makes its database there
            db_pid = private.process.pid
            print(f"MariaDB: a mariadbd of the bench's own ({mariadb_version(private.url)}, port {private.port}, the "
                  "machine's binary and settings, a fresh data directory), so that its CPU time is the bench's alone; "
                  "`--mariadb shared` uses the machine's server.  ")
        else:
            db_pid = mariadb_pid()
            print("MariaDB: the machine's server (shared: its CPU time includes other jobs').  ")
        print(f"Goals: p99 ≤ {GOAL_P99_MS:.0f} ms and no error under load; app + MariaDB CPU per request in-process: "
              f"account ≤ {GOAL_CPU_MS['account']:g} ms, full poll ≤ {GOAL_CPU_MS['poll']:g} ms, delta poll with "
              f"nothing new ≤ {GOAL_CPU_MS['delta']:g} ms and ≤ {GOAL_DELTA_BYTES} bytes on the wire; an idle open "
              f"batch page ≥ {GOAL_BYTES_RATIO:g}× fewer bytes per minute than with full polls.\n")
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
                poll = Endpoint("poll", "batch poll, 100 items, full (signed in)", app_server,
                                f"/api/batches/{data['batch_id']}", True, "application/json")
                listed = [Endpoint("floor", "baseline: trivial WSGI app", trivial, "/", False, "text/plain"),
                          Endpoint("landing", "landing (anonymous)", app_server, "/", False, "text/html"),
                          Endpoint("account", "account (signed in)", app_server, "/account", True, "text/html"),
                          poll]
                delta, delta_note = find_delta_poll(poll, cookies[0])
                if delta is not None:
                    listed.append(delta)
                    # The delta poll's own floor: waitress closes the connection after any 304, so each one
                    # costs a new connection whatever the app does.
                    listed.insert(1, Endpoint("floor304", "baseline: trivial WSGI app answering 304", trivial,
                                              "/304", False, "text/plain", ok=frozenset({304})))
                print(f"Delta polls: {delta_note}.\n")
                endpoints = {endpoint.label: endpoint for endpoint in listed}
                results: dict[str, list[dict]] = {}
                if not args.in_process_only:
                    results = run_endpoints(endpoints, args, cookies, db_pid)
                    print_table(results, args)
                    print_cpu_tables(endpoints, results, args)
                wire = {endpoint.key: fetch_once(endpoint.server.port, endpoint.request(cookies[0]))
                        for endpoint in listed}
                missed = [label for label, runs in results.items()
                          if not label.startswith("baseline") and (median_of(runs, "p99") > GOAL_P99_MS
                                                                   or sum(r["errors"] for r in runs))]

                from app import create_app
                from services import logs

                app = create_app(overrides)
                logs.setup(app.settings, "web", to_file=True)  # as passenger_wsgi.py: var/log/web.log
                in_process = [endpoint for endpoint in listed if endpoint.key != "floor304"]
                inproc = in_process_cpu(app, in_process, cookies[0], args.in_process_seconds, args.runs, db_pid)
                print_in_process(in_process, inproc, args)
                print_bytes(listed, wire, results, delta_note)

                # What-ifs: one bench-only change per kind of endpoint that missed, to size the fix it points at.
                # Since 2026-12-03 the app keeps one connection per thread itself (db.Database.connection).
                from services import db as app_db

                signed_in_fix = ("no-tls" if tls_attempted(store.url) else
                                 None if hasattr(app_db.Database, "connection") else "reuse-connections")
                # The app renders public pages once for visitors without a session (web.render_public) since
                # 2026-11-30: the anonymous what-if would change nothing there.
                from routes import web

                anonymous_fix = None if hasattr(web, "render_public") else "cache-anonymous-pages"
                chosen = {label: (signed_in_fix if endpoints[label].signed_in else anonymous_fix) for label in missed}
                chosen = {label: name for label, name in chosen.items() if name}
                if chosen and not args.no_what_if:
                    names = sorted(set(chosen.values()))
                    what_if = Server("app", args.threads, overrides, log_file, names)
                    servers.append(what_if)
                    print("\n## What-if: the same load with one bench-only change in the server process\n")
                    for name in names:
                        print(f"- **{name}**: {WHAT_IFS[name][0]}.")
                    rows = {f"{label}, what-if: {name}": dataclasses.replace(endpoints[label], server=what_if)
                            for label, name in chosen.items()}
                    print_table(run_endpoints(rows, args, cookies, db_pid), args)
                if missed and not args.no_profile:
                    print("\n## Where the time goes\n")
                    print(f"Missed the goal: {', '.join(missed)}. The same requests in the bench's own process "
                          "(same settings and database), one at a time, each phase's time exclusive of the "
                          "others:")
                    chosen_endpoints = [endpoints[label] for label in missed]
                    for line in where_time_goes(app, chosen_endpoints, cookies[0], args.profile_requests):
                        print(line)
                    if chosen and not args.no_what_if:
                        names = sorted(set(chosen.values()))
                        print(f"\n### The same with the what-if applied in-process ({', '.join(names)}): what is "
                              "left\n")
                        for name in names:
                            WHAT_IFS[name][1]()
                        for line in where_time_goes(app, chosen_endpoints, cookies[0], args.profile_requests):
                            print(line)
                logging.getLogger().handlers.clear()
            finally:
                for server in servers:
                    server.stop()
                store.drop()
    print(f"\nLoad average at the end: {' '.join(f'{v:.2f}' for v in os.getloadavg())}.")
    return 0


def code_line() -> str:
    """The commit the app's code is at, and whether its files differ from it (another engineer's work)."""
    import hashlib

    paths = ["--", "app.py", "routes", "services", "views", "schema.sql", "public/js"]
    try:
        head = subprocess.run(["git", "-C", str(ROOT), "log", "-1", "--format=%h %cs"], capture_output=True,
                              text=True, timeout=10).stdout.strip()
        changed = subprocess.run(["git", "-C", str(ROOT), "status", "--porcelain", *paths], capture_output=True,
                                 text=True, timeout=10).stdout.splitlines()
        diff = subprocess.run(["git", "-C", str(ROOT), "diff", "HEAD", *paths], capture_output=True,
                              timeout=10).stdout
    except (OSError, subprocess.SubprocessError):
        return "unknown (no git)"
    if not changed:
        return f"{ROOT} at {head or 'unknown'}, no app file changed"
    return (f"{ROOT} at {head or 'unknown'} with {len(changed)} app files changed (uncommitted diff sha1 "
            f"{hashlib.sha1(diff).hexdigest()[:10]})")


def waitress_version() -> str:
    """The version of waitress installed."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("waitress")
    except PackageNotFoundError:
        return "(unknown version)"


def run_endpoints(endpoints: dict[str, Endpoint], args, cookies: list[str],
                  db_pid: int | None) -> dict[str, list[dict]]:
    """Each endpoint `runs` times under load (interleaved), then with one client; results per endpoint."""
    results: dict[str, list[dict]] = {label: [] for label in endpoints}
    for run in range(args.runs):
        for label, endpoint in endpoints.items():
            requests = [endpoint.request(cookies[i % len(cookies)]) for i in range(args.clients)]
            result = run_load(endpoint.server.port, requests, args.seconds, args.warmup, endpoint.server.process.pid,
                              db_pid, args.think, endpoint.ok)
            results[label].append(result)
            print(f"<!-- run {run + 1}/{args.runs} {label}: {result['rps']:.0f} req/s, median "
                  f"{result['median']:.1f} ms, p99 {result['p99']:.1f} ms, errors {result['errors']} "
                  f"{result['error_kinds'] or ''}, statuses {result['statuses']}, {result['connections']} "
                  "connections opened, CPU per request: server "
                  f"{result['server_ms']:.3f} ms, MariaDB {result['db_ms']:.3f} ms, client CPU "
                  f"{result['client_cpu']:.0%} -->", flush=True)
    for label, endpoint in endpoints.items():
        alone = run_load(endpoint.server.port, [endpoint.request(cookies[0])], min(5.0, args.seconds), 0.5,
                         endpoint.server.process.pid, db_pid, ok=endpoint.ok)
        for result in results[label]:
            result["alone"] = alone["median"]
            result["alone_ms"] = alone["server_ms"] + alone["db_ms"]
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


def print_cpu_tables(endpoints: dict[str, Endpoint], results: dict[str, list[dict]], args) -> None:
    """CPU per request answered under load (server process and MariaDB, net of the floor), and req/s per core."""
    floors = {endpoint.key: label for label, endpoint in endpoints.items() if endpoint.key.startswith("floor")}
    floor = floors["floor"]
    floor_runs = results[floor]
    print(f"\n### CPU per request under load ({args.clients} clients)\n")
    print("utime + stime of the server process and of mysqld over the measured window, divided by the requests "
          "answered in it (median of the runs). The floor is the trivial app under the same waitress (same "
          "threads, same clients): what waitress, the sockets and the GIL cost per request whatever the app. "
          "Net of the floor = the server process's CPU per request less the floor's, plus MariaDB's less its "
          "background (its CPU per second during the same run's floor row, when the bench sent it nothing: its "
          "own housekeeping, and other jobs' queries with `--mariadb shared`)."
          + (" The delta poll's floor is the trivial app answering 304: waitress closes the connection after "
             "every 304, so each such answer costs a new connection whatever the app does." if "floor304" in floors
             else "") + "\n")
    print("| endpoint | req/s | server process CPU ms/req | MariaDB CPU ms/req | **total ms/req** | net of the floor "
          "ms/req | 1 client alone: total ms/req |")
    print("|---|---|---|---|---|---|---|")
    for label, runs in results.items():
        server_ms, db_ms = median_of(runs, "server_ms"), median_of(runs, "db_ms")
        if label in floors.values():
            net = "—"
        else:
            against = floors.get("floor304", floor) if endpoints[label].key == "delta" else floor
            nets = [r["server_ms"] - f["server_ms"] + r["db_ms"] - f["db_cpu"] * 1000 / r["rps"]
                    for r, f in zip(runs, results[against], strict=True)]
            net = f"{statistics.median(nets):.3f}" + (" (against the 304 floor)" if against != floor else "")
        print(f"| {label} | {median_of(runs, 'rps'):.0f} | {server_ms:.3f} | {db_ms:.3f} | "
              f"**{server_ms + db_ms:.3f}** | {net} | {runs[0]['alone_ms']:.3f} |")
    each = ", ".join(f"{r['db_cpu'] * 1000:.0f}" for r in floor_runs)
    print(f"\nMariaDB's background during the floor rows: {median_of(floor_runs, 'db_cpu') * 1000:.0f} ms per "
          f"second (median; run by run: {each}).")
    if args.think:
        return
    floor_rps = median_of(floor_runs, "rps")
    print(f"\n### Throughput per core against the floor ({args.clients} clients back to back)\n")
    print("Cores = the server process's + MariaDB's CPU seconds per second over the window; req/s per core = "
          "req/s ÷ those cores (= 1000 ÷ total CPU ms per request).\n")
    print("| endpoint | req/s | ÷ floor's req/s | cores busy (server + MariaDB) | req/s per core | "
          "÷ floor's req/s per core |")
    print("|---|---|---|---|---|---|")
    floor_per_core = floor_rps / max(1e-9, median_of(floor_runs, "server_cpu") + median_of(floor_runs, "db_cpu"))
    for label, runs in results.items():
        rps = median_of(runs, "rps")
        cores = median_of(runs, "server_cpu") + median_of(runs, "db_cpu")
        per_core = rps / max(cores, 1e-9)
        print(f"| {label} | {rps:.0f} | {rps / floor_rps:.3f} | {cores:.2f} | {per_core:.0f} | "
              f"{per_core / floor_per_core:.3f} |")


def print_in_process(listed: list[Endpoint], inproc: dict[str, list[dict]], args) -> None:
    """The in-process table: app + MariaDB CPU per request, with the goals."""
    print("\n### App + MariaDB CPU per request, in-process (the figure the goals are judged on)\n")
    print(f"No HTTP server: the WSGI app called directly in the bench's process (a prebuilt environ with the "
          f"load generator's headers, body read whole), one request at a time for {args.in_process_seconds:g} s "
          f"per endpoint and run in slices of {IN_PROCESS_SLICE:g} s, each followed by a {IN_PROCESS_SLICE:g}-s "
          f"pause; median of {args.runs} runs, after 20 uncounted requests; the access log written to "
          "var/log/web.log as in production. App = this process's time.process_time(); MariaDB = mysqld's "
          "utime + stime in the slices, less its background (its CPU per second in the pauses, when the bench "
          "sent it nothing: its own housekeeping, and other jobs' queries with `--mariadb shared`).\n")
    print("| endpoint | requests per run | app CPU ms/req | MariaDB CPU ms/req | **app + MariaDB ms/req** | goal | "
          "verdict | MariaDB raw ms/req | MariaDB background ms/s | wall ms/req |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for endpoint in listed:
        runs = inproc[endpoint.key]
        total = median_of(runs, "total_ms")
        goal = GOAL_CPU_MS.get(endpoint.key)
        verdict = "—" if goal is None else ("met" if total <= goal else "**missed**")
        print(f"| {endpoint.label} | {median_of(runs, 'requests'):.0f} | {median_of(runs, 'app_ms'):.3f} | "
              f"{median_of(runs, 'db_ms'):.3f} | **{total:.3f}** | {'—' if goal is None else f'≤ {goal:g} ms'} | "
              f"{verdict} | {median_of(runs, 'db_raw_ms'):.3f} | {median_of(runs, 'background') * 1000:.0f} | "
              f"{median_of(runs, 'wall_ms'):.3f} |")
    if "delta" not in inproc:
        print(f"| batch poll, delta, nothing new | n/a (server has no delta polls) | | | | "
              f"≤ {GOAL_CPU_MS['delta']:g} ms | n/a | | | |")


def print_bytes(listed: list[Endpoint], wire: dict[str, Answer], results: dict[str, list[dict]],
                delta_note: str) -> None:
    """Bytes on the wire per response, and an open batch page's poll bytes per minute, full against delta."""
    print("\n### Bytes on the wire per response\n")
    print("As the raw socket client receives them from waitress (status line + headers + body, chunk framing "
          "included; the request sent `Accept-Encoding: identity`): one request on a new connection, and the mean "
          "over the load runs. gzip -6 is the body as Apache's mod_deflate (public/.htaccess, when the host has "
          "it) would send it, for reference.\n")
    print("| endpoint | status | head bytes | body bytes | **on the wire** | mean under load | body gzip -6 | goal |")
    print("|---|---|---|---|---|---|---|---|")
    for endpoint in listed:
        answer = wire[endpoint.key]
        body = len(answer.body)
        zipped = f"{len(gzip.compress(answer.body, 6))}" if body else "—"
        goal = "—"
        if endpoint.key == "delta":
            goal = f"≤ {GOAL_DELTA_BYTES}: " + ("met" if answer.wire <= GOAL_DELTA_BYTES else "**missed**")
        under_load = f"{median_of(results[endpoint.label], 'bytes'):.0f}" if endpoint.label in results else "—"
        print(f"| {endpoint.label} | {answer.status} | {len(answer.head)} | {body} | **{answer.wire}** | "
              f"{under_load} | {zipped} | {goal} |")
    if "delta" not in wire:
        print(f"| batch poll, delta, nothing new | n/a (server has no delta polls) | | | | | | ≤ {GOAL_DELTA_BYTES} |")
    for endpoint in listed:
        if wire[endpoint.key].closing:
            print(f"\n**waitress closes the connection after the {endpoint.label}'s answer** (`Connection: close`: "
                  f"waitress {waitress_version()} does so after every response without a Content-Length, 304s "
                  "included), so each such poll opens a new TCP connection.")
    smallest = wire.get("delta", wire["poll"])
    which = "delta poll's" if "delta" in wire else "full poll's (a 304 would carry about these headers)"
    print(f"\nThe {which} head, {len(smallest.head)} bytes, header by header (name: value + CRLF):\n")
    print("| header | bytes |")
    print("|---|---|")
    lines = smallest.head.decode("latin-1").split("\r\n")
    print(f"| (status line) `{lines[0]}` | {len(lines[0]) + 2} |")
    for line in sorted((line for line in lines[1:] if line), key=len, reverse=True):
        print(f"| {line.partition(':')[0]} | {len(line) + 2} |")
    polls = 60 / POLL_EVERY
    full = wire["poll"].wire * polls
    print(f"\n### An open batch page's polls, 100 items: bytes per minute (one poll per {POLL_EVERY:g} s = "
          f"{polls:.0f} polls a minute)\n")
    print("| open batch page | bytes per poll | bytes per minute | goal |")
    print("|---|---|---|---|")
    print(f"| every poll a full poll (before delta polls) | {wire['poll'].wire} | **{full:,.0f}** "
          f"({full / 1e6:.2f} MB) | — |")
    if "delta" in wire:
        idle = wire["delta"].wire * polls
        ratio = full / idle
        print(f"| idle but open, delta polls (every poll a {wire['delta'].status}) | {wire['delta'].wire} | "
              f"**{idle:,.0f}** ({idle / 1e3:.1f} kB) | — |")
        print(f"| ratio full ÷ delta | | **{ratio:.1f}×** less | ≥ {GOAL_BYTES_RATIO:g}×: "
              f"{'met' if ratio >= GOAL_BYTES_RATIO else '**missed**'} |")
    else:
        print(f"| idle but open, delta polls | {delta_note.split(':')[0]}: every poll is a full poll | "
              f"{full:,.0f} (= full) | — |")
        print(f"| ratio full ÷ delta | | 1.0× (no delta polls) | ≥ {GOAL_BYTES_RATIO:g}× |")
    # For reference: where the host's Apache compresses JSON (mod_deflate), a full poll's body shrinks a lot,
    # a 304 not at all. Estimate: the same head, less Content-Length, plus Content-Encoding; the body gzip -6.
    poll = wire["poll"]
    length = next((line for line in poll.head.decode("latin-1").split("\r\n")
                   if line.lower().startswith("content-length:")), "")
    zipped = len(poll.head) - (len(length) + 2 if length else 0) + len("Content-Encoding: gzip\r\n") + len(
        gzip.compress(poll.body, 6))
    line = f"| for reference, full polls gzipped (≈ mod_deflate) | ≈ {zipped} | ≈ {zipped * polls:,.0f} |"
    if "delta" in wire:
        line += f" ÷ delta: ≈ {zipped / wire['delta'].wire:.1f}× |"
    else:
        line += " — |"
    print(line)


if __name__ == "__main__":
    sys.exit(main())
