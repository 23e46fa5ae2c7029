"""Benchmark of the abuse fixes: four figures for the baseline (a git commit) and the working tree, in one run.

    .venv/bin/python bench/abuse.py [--quick] [--tree PATH] [--baseline-ref REF] [--only 1,2,3,4]

Both trees run with the same Python (this virtual environment's), each as its own processes
(`python app.py --port N` under waitress, settings from the environment, a fresh SQLite
database in a temporary folder), against the same OpenAI stand-in (tools/fake_openai.py from
the baseline's export, so both trees meet the same program). The baseline is exported with
`git archive REF` into a temporary folder that is removed afterwards. The data a tree needs
and that no public path makes (a subscriber with an active subscription, credits and
sessions) is written by a helper process that imports that tree's own services; everything
else goes through the site's HTTP API.

1. **Worker processes after 60 parallel kicks.** A paused 200-item batch (made through the API
   on a server with WORKER_LAUNCH=none), then the server again with WORKER_LAUNCH=spawn and a
   slow stand-in (2 s per image); 60 connections opened in advance send
   `POST /api/batches/<id>/resume` at the same instant (so they all arrive before the first
   worker's heartbeat). Counted from /proc every 25 ms for 3 s: live `cli.py worker`
   processes started by that server (its children, or carrying this run's tag in their
   environment), and zombies (its children in state Z). Then the batch is cancelled, the
   workers run dry and exit, and zombies are counted again once none is alive (or after a
   time limit). Goal: peak ≤ WORKER_PROCESSES (default 2).
2. **CPU seconds to review 1 MB of duplicate file names**: in a process with the tree on
   sys.path, the route's readers on the raw text (N lines of "a cat", N lines of "cat"):
   `batches.read_prompts(text, PLAN_MAX_PROMPTS)` where the tree has it (the baseline has
   `prompt_lines`), `batches.name_lines`, then `batches.review(..., max_prompts=PLAN_MAX_PROMPTS)`,
   timed with time.process_time(). N = 262,144 makes 1 MiB of names. The baseline is quadratic
   in N, so it is measured at three smaller N (each run stopped after 60 s) and extrapolated
   with a least-squares fit of t = a·N²; the measured points and the extrapolation are
   labelled as such. Goal: < 1 s.
3. **Server memory under large bodies.** Every POST route the app registers (path parameters
   filled with an existing batch and item; /stripe/webhook included), one route at a time, 10
   clients at once each sending a 50 MiB body (Content-Length: 52428800) streamed from one
   1 MiB buffer, stopping early when the server answers or closes. /api/* and the webhook get
   a JSON body, the form routes a multipart upload (a prompts file). Signed in, with the CSRF
   header (a subscriber as the attacker). The RSS of the server and its children, summed from
   /proc every 50 ms: before (after one small request to every route), the peak, the rise.
   Time-bound (90 s per tree, the routes left are listed; --quick: three routes, 20 s). Goal: rise < 20 MB (10^6 bytes).
4. **Stored bytes ÷ sent bytes for a long style**: one batch of 200 prompts (once of about
   200 characters, the length of a typical image prompt, once of about 50) with a
   4,000-character style made through `POST /api/batches` (JSON, WORKER_LAUNCH=none). Sent =
   the request body's length. Stored = the growth of the SQLite database, pages in use
   ((page_count − freelist_count) × page_size after `PRAGMA wal_checkpoint(TRUNCATE)`): the
   figure; the bytes of every value in the batch's row and its items' rows are shown beside
   it. If the working tree refuses that style (422), the longest style it accepts is found
   and used for both trees. Goal: ≤ 2.

Every process the script starts carries a tag in its environment; at the end any process
still carrying it is killed by its pid, and the temporary folders are removed.
"""

from __future__ import annotations

import argparse
import datetime
import http.client
import json
import math
import os
import random
import re
import select
import shlex
import shutil
import signal
import socket
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import traceback
import uuid
from pathlib import Path

from common import machine_line, stop_process  # noqa: E402 - bench/ is sys.path[0] when run as a script

ROOT = Path(__file__).resolve().parent.parent
VENV_PYTHON = ROOT / ".venv" / "bin" / "python"
PYTHON = str(VENV_PYTHON if VENV_PYTHON.exists() else Path(sys.executable))
DEFAULT_BASELINE = "374c4a2"
TAG_NAME = "IIB_BENCH_ABUSE_TAG"
MODEL = "gpt-image-2"  # no retirement date in either tree's catalogue

KICKS = 60
KICK_WINDOW = 3.0
SAMPLE_EVERY = 0.025
STANDIN_LATENCY = 2.0
BATCH_PROMPTS = 200
BODY_BYTES = 50 * 1024 * 1024
BODY_CLIENTS = 10
RSS_EVERY = 0.05
FLOOD_SECONDS = 90.0  # per tree; at ~230 MB/s over loopback 20 routes × 500 MiB need about that
GOAL_RISE_BYTES = 20_000_000
STYLE_CHARS = 4000
GOAL_RATIO = 2.0
GOAL_REVIEW_SECONDS = 1.0
NAMES_1MB = 262_144  # "cat\n" × 262,144 = 1 MiB
DEFAULT_WORKER_PROCESSES = 2
QUICK_ROUTES = ("/stripe/webhook", "/api/batches", "/generate/review")

RESULT_PREFIX = "ABUSE-RESULT "


class NotMeasured(Exception):
    """A figure could not be measured on a tree; the message says why."""


# ----- the helper process: runs with one tree's code on sys.path -----------------------------------------------

def helper_main(kind: str, tree: str, params: dict) -> int:
    """Entry point of `abuse.py --helper KIND`: import the tree's services and print one JSON result line."""
    sys.path.insert(0, tree)
    os.chdir(tree)
    result = {"prepare": helper_prepare, "review": helper_review, "routes": helper_routes}[kind](params)
    print(RESULT_PREFIX + json.dumps(result), flush=True)
    return 0


def helper_prepare(params: dict) -> dict:
    """Schema, a subscriber with an active subscription and credits, and sessions (with their CSRF tokens)."""
    from services import credits, db, sessions
    from services.config import load_settings

    settings = load_settings()
    database = db.Database(settings.database_url)
    db.initdb(database)
    conn = database.connect()
    try:
        now = int(time.time())
        user_id = db.user_insert(conn, "Bench Subscriber", "bench@example.com", now)
        db.subscription_upsert(conn, user_id, {
            "id": "sub_bench_abuse", "customer": "cus_bench_abuse", "status": "active", "price_id": "price_bench",
            "current_period_start": now - 86400, "current_period_end": now + 29 * 86400,
            "cancel_at_period_end": False, "cancel_at": None, "ended_at": None}, now)
        credits.grant_period(conn, user_id, params["credits"], "in_bench_abuse", now - 86400)
        made = [sessions.create(conn, settings, now, user_id=user_id) for _ in range(params["sessions"])]
    finally:
        conn.close()
    return {"cookie": sessions.cookie_name(settings), "sessions": [[s.token, s.csrf_token] for s in made],
            "worker_processes": getattr(settings, "worker_processes", None),
            "plan_max_prompts": settings.plan_max_prompts}


def helper_routes(params: dict) -> dict:
    """The POST routes the app registers, as (rule, csrf_exempt)."""
    from app import create_app

    app = create_app()
    return {"routes": [[route.rule, bool(route.config.get("csrf_exempt", False))]
                       for route in app.routes if route.method == "POST"]}


def helper_review(params: dict) -> dict:
    """Parse and review N prompts with N identical names as the route does; CPU seconds of each step."""
    import inspect

    from services import batches, catalog
    from services.config import load_settings

    try:
        max_prompts = load_settings({"APP_MODE": "test"}, environ={},
                                    env_file=Path(tempfile.gettempdir()) / "no-such-iib.env").plan_max_prompts
    except Exception:  # a settings loader with another signature: the documented default
        max_prompts = 200
    models = catalog.load()
    model = models.get(MODEL)
    quality = model.qualities[0] if model else "low"
    n = params["n"]
    prompts_text, names_text = "a cat\n" * n, "cat\n" * n

    def call(function, text):
        """Call a parser as the route does; (its result, the call written out)."""
        # If the tree's parser takes a limit, give it what the route gives it: the plan's limit + 1 (so it can tell
        # "too many" from "exactly the limit"). Which call was used is reported.
        extra = [p for p in list(inspect.signature(function).parameters.values())[1:]
                 if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)]
        if extra and any(word in extra[0].name for word in ("max", "limit", "most", "cap", "stop")):
            used = f"{function.__name__}(text, {extra[0].name}={max_prompts + 1})"
            return function(text, **{extra[0].name: max_prompts + 1}), used
        return function(text), f"{function.__name__}(text)"

    started = time.process_time()
    extra = {}
    if hasattr(batches, "read_prompts"):  # the route's own reader: the first limit + 1 kept, all counted
        read = batches.read_prompts(prompts_text, max_prompts)
        prompts, prompt_call = read.lines, f"read_prompts(text, {max_prompts})"
        extra["total_prompts"] = read.total
    else:
        prompts, prompt_call = call(batches.prompt_lines, prompts_text)
    names, name_call = call(batches.name_lines, names_text)
    parsed = time.process_time()
    checked = batches.review(models, datetime.date.today(), prompts=prompts, names=names, style="",
                             model_id=MODEL, ratio="1:1", quality=quality, image_format="png", separator=", ",
                             max_prompts=max_prompts, credits_left=10**9, **extra)
    ended = time.process_time()
    return {"n": n, "names_bytes": len(names_text.encode()), "parse": parsed - started, "review": ended - parsed,
            "total": ended - started, "prompts": len(prompts), "names": len(names), "items": len(checked.items),
            "errors": sorted({p.code for p in checked.errors}), "max_prompts": max_prompts,
            "calls": [prompt_call, name_call]}


def run_helper(kind: str, tree: Path, env: dict, params: dict, timeout: float) -> dict:
    """Run a helper in its own process with the tree's code; its result, or NotMeasured with the reason."""
    command = [PYTHON, str(Path(__file__).resolve()), "--helper", kind, "--tree", str(tree),
               "--params", json.dumps(params)]
    try:
        done = subprocess.run(command, cwd=tree, env=env, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        raise NotMeasured(f"stopped after {timeout:.0f} s") from None
    for line in reversed(done.stdout.splitlines()):
        if line.startswith(RESULT_PREFIX):
            return json.loads(line[len(RESULT_PREFIX):])
    tail = (done.stderr.strip().splitlines() or ["(no output)"])[-1]
    raise NotMeasured(f"the {kind} helper failed (exit {done.returncode}): {tail[:300]}")


# ----- processes: the site, the stand-in, and finding what they started -----------------------------------------

def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def base_env(tag: str) -> dict:
    """A minimal environment (no settings leaking in from this shell) carrying the run's tag."""
    env = {key: os.environ[key] for key in ("PATH", "HOME", "LANG", "LC_ALL", "TMPDIR", "TZ") if key in os.environ}
    env[TAG_NAME] = tag
    env["PYTHONDONTWRITEBYTECODE"] = "1"
    return env


class StandIn:
    """tools/fake_openai.py in its own process (slow, so the workers stay busy)."""

    def __init__(self, tools_tree: Path, env: dict, log_file: Path, latency: float):
        with open(log_file, "a", encoding="utf-8") as log:
            self.process = subprocess.Popen(
                [PYTHON, "-m", "tools.fake_openai", "--port", "0", "--latency", str(latency), "--api-key", "sk-bench"],
                cwd=tools_tree, env=env, stdout=subprocess.PIPE, stderr=log, stdin=subprocess.DEVNULL, text=True)
        self.base_url = self.process.stdout.readline().strip()
        if not self.base_url.startswith("http://127.0.0.1:"):
            self.stop()
            raise NotMeasured("the OpenAI stand-in did not start")

    def stop(self) -> None:
        """Stop the stand-in."""
        stop_process(self.process)


class Site:
    """One tree's `python app.py --port N` (waitress), with the bench's settings in its environment."""

    def __init__(self, tree: Path, env: dict, log_file: Path):
        self.port = free_port()
        self.env = dict(env, PUBLIC_BASE_URL=f"http://127.0.0.1:{self.port}")
        self.log_file = log_file
        with open(log_file, "a", encoding="utf-8") as log:
            self.process = subprocess.Popen([PYTHON, str(tree / "app.py"), "--port", str(self.port)], cwd=tree,
                                            env=self.env, stdout=log, stderr=subprocess.STDOUT,
                                            stdin=subprocess.DEVNULL)
        deadline = time.monotonic() + 30
        while True:
            if self.process.poll() is not None:
                raise NotMeasured(f"the site did not start (exit {self.process.returncode}): {self.log_tail()}")
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                return
            except OSError:
                if time.monotonic() > deadline:
                    self.stop()
                    raise NotMeasured("the site did not listen within 30 s") from None
                time.sleep(0.1)

    def log_tail(self) -> str:
        """The last line of the site's log."""
        try:
            lines = self.log_file.read_text(encoding="utf-8", errors="replace").strip().splitlines()
        except OSError:
            return "(no log)"
        return (lines or ["(empty log)"])[-1][:300]

    def stop(self) -> None:
        """Stop the server (what it started is killed by `kill_tagged`)."""
        if self.process.poll() is None:
            stop_process(self.process)


def read_stat(pid: int) -> tuple[str, int] | None:
    """(state, parent pid) of a process from /proc, or None when it is gone."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None
    return fields[0], int(fields[1])


def carries_tag(pid: int, tag: str) -> bool:
    """True when the process's environment holds this run's tag."""
    try:
        return f"{TAG_NAME}={tag}".encode() in Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
    except OSError:
        return False


def pids() -> list[int]:
    """Every process id in /proc."""
    return [int(name) for name in os.listdir("/proc") if name.isdigit()]


def kill_tagged(tag: str) -> int:
    """SIGKILL every process (but this one) still carrying the tag; returns how many."""
    killed = 0
    for pid in pids():
        if pid != os.getpid() and carries_tag(pid, tag):
            try:
                os.kill(pid, signal.SIGKILL)
                killed += 1
            except OSError:
                pass
    return killed


class WorkerCounter:
    """Counts the `cli.py worker` processes a server started (live and zombie), scanning /proc."""

    def __init__(self, server_pid: int, tag: str):
        self.server_pid = server_pid
        self.tag = tag
        self.workers: set[int] = set()  # pids seen running cli.py worker for this server
        self.others: set[int] = set()  # pids known not to be

    def scan(self) -> dict:
        """Live workers, zombies, and every live child of the server, now."""
        live = zombies = children = 0
        for pid in pids():
            stat = read_stat(pid)
            if stat is None:
                continue
            state, ppid = stat
            if state == "Z":
                if ppid == self.server_pid or pid in self.workers:
                    zombies += 1
                continue
            if ppid == self.server_pid:
                children += 1
            if pid in self.others:
                continue
            if pid not in self.workers:
                try:
                    argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
                except OSError:
                    continue
                is_worker = any(arg.endswith(b"cli.py") for arg in argv) and b"worker" in argv
                if is_worker and (ppid == self.server_pid or carries_tag(pid, self.tag)):
                    self.workers.add(pid)
                elif ppid != self.server_pid:  # a child may still exec cli.py after its fork: look again
                    self.others.add(pid)
                    continue
                else:
                    continue
            live += 1
        return {"live": live, "zombies": zombies, "children": children}


# ----- HTTP ------------------------------------------------------------------------------------------------------

class Subscriber:
    """A signed-in subscriber's cookie and CSRF token."""

    def __init__(self, cookie_name: str, token: str, csrf: str):
        self.cookie = f"{cookie_name}={token}"
        self.csrf = csrf

    def headers(self, content_type: str = "application/json") -> dict:
        """The headers a signed-in page's fetch sends."""
        return {"Cookie": self.cookie, "X-CSRF-Token": self.csrf, "Accept": "application/json",
                "Content-Type": content_type}


def call(port: int, method: str, path: str, who: Subscriber, body: bytes | None = None,
         timeout: float = 60) -> tuple[int, dict | str]:
    """One request; (status, the JSON answer or the start of the text)."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request(method, path, body=body, headers=who.headers())
        response = conn.getresponse()
        data = response.read()
    finally:
        conn.close()
    try:
        return response.status, json.loads(data)
    except ValueError:
        return response.status, data[:300].decode("utf-8", "replace")


def error_text(answer) -> str:
    """The error message of an API answer, shortened."""
    if isinstance(answer, dict) and isinstance(answer.get("error"), dict):
        return f"{answer['error'].get('code')}: {answer['error'].get('message')}"[:300]
    return str(answer)[:200]


def batch_body(prompts: list[str], style: str) -> bytes:
    """The JSON a batch page sends to create a batch."""
    return json.dumps({"prompts": "\n".join(prompts), "names": "", "style": style, "model": MODEL, "ratio": "1:1",
                       "quality": "low", "format": "png", "request_token": uuid.uuid4().hex}).encode()


def short_prompts(count: int) -> list[str]:
    """Prompts of about 50 characters."""
    return [f"Product photo {i}: a ceramic mug on a walnut table" for i in range(count)]


def typical_prompts(count: int) -> list[str]:
    """Prompts of about 200 characters, the length of a typical image prompt."""
    return [f"Product photo {i}: a hand-thrown ceramic mug with a speckled oatmeal glaze on a walnut table, steam "
            "rising, a folded linen napkin and a sprig of rosemary beside it, seen from a low three-quarter angle"
            for i in range(count)]


def style_text(length: int) -> str:
    """A style of exactly `length` characters, words separated by single spaces."""
    words = ("cinematic soft window light, shallow depth of field, muted earth tones, film grain, "
             "35mm lens, overcast morning, gentle shadows,").split()
    text = ""
    rng = random.Random(length)
    while len(text) < length:
        text += rng.choice(words) + " "
    text = text[:length]
    return text[:-1] + "x" if text.endswith(" ") else text


# ----- figure 1: worker processes after parallel kicks -------------------------------------------------------------

def kick_storm(site: Site, who: Subscriber, batch_id: int, tag: str, kicks: int, window: float,
               settle: float) -> dict:
    """Fire `kicks` resumes at once; peak live workers over `window` s, then zombies once they have run dry."""
    path = f"/api/batches/{batch_id}/resume"
    connections = []
    for _ in range(kicks):
        connection = http.client.HTTPConnection("127.0.0.1", site.port, timeout=120)
        connection.connect()
        connections.append(connection)
    barrier = threading.Barrier(kicks + 1)
    answers: list = [None] * kicks
    answered_at: list = [None] * kicks

    def fire(index: int) -> None:
        """One kick: wait for the others, POST, read the answer."""
        connection = connections[index]
        try:
            barrier.wait()
            connection.request("POST", path, body=b"{}", headers=who.headers())
            response = connection.getresponse()
            response.read()
            answers[index] = response.status
        except Exception as exc:  # noqa: BLE001 - any failure is one answer's outcome
            answers[index] = type(exc).__name__
        finally:
            answered_at[index] = time.perf_counter()
            connection.close()

    counter = WorkerCounter(site.process.pid, tag)
    threads = [threading.Thread(target=fire, args=(i,), daemon=True) for i in range(kicks)]
    for thread in threads:
        thread.start()
    barrier.wait()
    started = time.perf_counter()
    peak = peak_children = peak_zombies = 0
    while time.perf_counter() - started < window:
        seen = counter.scan()
        peak, peak_children = max(peak, seen["live"]), max(peak_children, seen["children"])
        peak_zombies = max(peak_zombies, seen["zombies"])
        time.sleep(SAMPLE_EVERY)
    at_window = counter.scan()
    peak, peak_zombies = max(peak, at_window["live"]), max(peak_zombies, at_window["zombies"])
    peak_children = max(peak_children, at_window["children"])
    overall = peak
    for thread in threads:
        thread.join(timeout=60)
    last_answer = max((t for t in answered_at if t is not None), default=started) - started
    statuses: dict = {}
    for status in answers:
        statuses[str(status)] = statuses.get(str(status), 0) + 1
    if not any(isinstance(status, int) and 200 <= status < 300 for status in answers):
        raise NotMeasured(f"no kick was accepted ({', '.join(f'{k}: {v}' for k, v in statuses.items())})")
    # Let them run dry: cancel the batch, wait until no worker is alive (or `settle` s), count the zombies.
    cancel_status, _ = call(site.port, "POST", f"/api/batches/{batch_id}/cancel", who)
    settle_started = time.perf_counter()
    seen = counter.scan()
    overall = max(overall, seen["live"])
    while seen["live"] and time.perf_counter() - settle_started < settle:
        time.sleep(0.2)
        seen = counter.scan()
        overall, peak_zombies = max(overall, seen["live"]), max(peak_zombies, seen["zombies"])
    return {"peak": peak, "peak_children": peak_children, "at_window": at_window, "statuses": statuses,
            "last_answer": last_answer, "started_total": len(counter.workers), "cancel_status": cancel_status,
            "end": seen, "settle_seconds": time.perf_counter() - settle_started, "peak_zombies": peak_zombies,
            "window": window, "overall": overall}


# ----- figure 3: memory under large bodies --------------------------------------------------------------------------

def rss_bytes(pid: int) -> int:
    """VmRSS of one process in bytes (0 when gone)."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return 0


def descendants(pid: int) -> list[int]:
    """The process and all its descendants (from /proc/<pid>/task/*/children)."""
    found, todo = [], [pid]
    while todo:
        current = todo.pop()
        found.append(current)
        try:
            for task in os.listdir(f"/proc/{current}/task"):
                try:
                    todo.extend(int(c) for c in Path(f"/proc/{current}/task/{task}/children").read_text().split())
                except OSError:
                    continue
        except OSError:
            continue
    return found


class RssSampler:
    """Samples the summed RSS of a process tree every RSS_EVERY seconds in a thread."""

    def __init__(self, pid: int):
        self.pid = pid
        self.samples: list[tuple[float, int]] = []
        self.stopping = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        """Sample until stopped."""
        while not self.stopping.is_set():
            self.samples.append((time.perf_counter(), sum(rss_bytes(p) for p in descendants(self.pid))))
            self.stopping.wait(RSS_EVERY)

    def between(self, start: float, end: float) -> list[int]:
        """The samples taken in [start, end]."""
        return [value for at, value in self.samples if start <= at <= end]

    def stop(self) -> None:
        """Stop sampling."""
        self.stopping.set()
        self.thread.join()


def body_parts(kind: str, total: int) -> tuple[str, bytes, bytes, bytes]:
    """(content type, prefix, 1 MiB filler chunk, suffix) of a body of exactly `total` bytes once filled."""
    if kind == "json":
        line = b"a cat on a mat " * 6 + b" "
        chunk = (line * (1024 * 1024 // len(line) + 1))[:1024 * 1024]
        return "application/json", b'{"id": "evt_bench", "prompts": "', chunk, b'"}'
    boundary = "iibbenchboundary" + uuid.uuid4().hex
    prefix = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"prompts_file\"; filename=\"prompts.txt\"\r\n"
              "Content-Type: text/plain\r\n\r\n").encode()
    line = b"a cat on a mat " * 6 + b"\n"
    chunk = (line * (1024 * 1024 // len(line) + 1))[:1024 * 1024]
    return f"multipart/form-data; boundary={boundary}", prefix, chunk, f"\r\n--{boundary}--\r\n".encode()


def big_post(port: int, path: str, who: Subscriber, kind: str, total: int, deadline: float) -> tuple[str, int]:
    """POST a `total`-byte body, streamed; stop early when the server answers or closes. (outcome, bytes sent)."""
    content_type, prefix, chunk, suffix = body_parts(kind, total)
    filler = total - len(prefix) - len(suffix)
    head = (f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Type: {content_type}\r\n"
            f"Content-Length: {total}\r\nCookie: {who.cookie}\r\nX-CSRF-Token: {who.csrf}\r\n"
            "Accept: application/json\r\nUser-Agent: iib-bench-abuse\r\nConnection: close\r\n\r\n").encode()
    sent = 0
    outcome = None
    try:
        sock = socket.create_connection(("127.0.0.1", port), timeout=10)
    except OSError as exc:
        return f"connect failed ({type(exc).__name__})", 0
    try:
        sock.settimeout(2)
        sock.sendall(head)
        pieces = [prefix]
        remaining = filler
        chunk_view = memoryview(chunk)
        while remaining > 0 or pieces:
            if not pieces:
                step = min(remaining, len(chunk))
                pieces.append(chunk_view[:step])
                remaining -= step
                if remaining == 0:
                    pieces.append(suffix)
            piece = memoryview(pieces[0])
            if select.select([sock], [], [], 0)[0]:
                outcome = "answered early"
                break
            if time.monotonic() > deadline:
                outcome = "stopped at the time limit"
                break
            try:
                count = sock.send(piece)
            except TimeoutError:
                continue
            except OSError:
                outcome = "closed by the server while sending"
                break
            sent += count
            if count < len(piece):
                pieces[0] = piece[count:]
            else:
                pieces.pop(0)
        if outcome == "stopped at the time limit":
            return outcome, sent
        sock.settimeout(max(1.0, deadline - time.monotonic()))
        try:
            first = b""
            while b"\r\n" not in first:
                data = sock.recv(4096)
                if not data:
                    break
                first += data
        except TimeoutError:
            return "no answer before the time limit", sent
        except OSError:
            return outcome or "closed by the server", sent
        if not first.startswith(b"HTTP/"):
            return outcome or "closed by the server without an answer", sent
        status = first.split(b" ", 2)[1].decode()
        return f"HTTP {status}" + (" (before the whole body)" if outcome else ""), sent
    finally:
        sock.close()


def fill_rule(rule: str, batch_id: int, item_id: int) -> str:
    """A route's rule with its path parameters filled in."""
    def value(match) -> str:
        """The value for one path parameter."""
        name = match.group(1).split(":")[0]
        return str(item_id if name == "item_id" else batch_id if name == "batch_id" else 1)

    return re.sub(r"<([^>]+)>", value, rule)


def body_flood(site: Site, main: Subscriber, spares: list[Subscriber], routes: list[str], clients: int,
               size: int, budget: float) -> dict:
    """Each route in turn: `clients` clients at once each POST `size` bytes; the server tree's RSS around it."""
    sampler = RssSampler(site.process.pid)
    per_route = []
    skipped = []
    sent_total = 0
    try:
        spare = iter(spares)
        for path in routes:  # warm-up: every route once with a small body, so lazy imports are done
            who = next(spare) if path == "/logout" else main
            kind = "json" if path.startswith(("/api/", "/stripe/")) else "form"
            big_post(site.port, path, who, kind, 4096, time.monotonic() + 30)
        time.sleep(0.5)
        mark = time.perf_counter()
        time.sleep(0.5)
        before = statistics.median(sampler.between(mark, time.perf_counter()) or [0])
        started = time.monotonic()
        for path in routes:
            left = budget - (time.monotonic() - started)
            if left < 3:
                skipped.append(path)
                continue
            kind = "json" if path.startswith(("/api/", "/stripe/")) else "form"
            deadline = time.monotonic() + left
            outcomes: list = []
            whos = [next(spare, main) if path == "/logout" else main for _ in range(clients)]

            def client(who: Subscriber, route: str = path, body_kind: str = kind, until: float = deadline,
                       into: list = outcomes) -> None:
                """One client's body, its outcome kept."""
                into.append(big_post(site.port, route, who, body_kind, size, until))

            route_start = time.perf_counter()
            route_before = sampler.samples[-1][1] if sampler.samples else before
            threads = [threading.Thread(target=client, args=(who,), daemon=True) for who in whos]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join()
            route_end = time.perf_counter()
            time.sleep(RSS_EVERY * 2)
            values = sampler.between(route_start, time.perf_counter())
            kinds: dict = {}
            for outcome, sent in outcomes:
                kinds[outcome] = kinds.get(outcome, 0) + 1
                sent_total += sent
            per_route.append({"path": path, "kind": kind, "peak": max(values or [0]), "route_before": route_before,
                              "seconds": route_end - route_start, "sent": sum(sent for _, sent in outcomes),
                              "outcomes": kinds})
        time.sleep(0.5)
        after = sampler.samples[-1][1] if sampler.samples else 0
        peak = max([before] + [r["peak"] for r in per_route])
    finally:
        sampler.stop()
    return {"before": before, "peak": peak, "rise": peak - before, "after": after, "routes": per_route,
            "skipped": skipped, "sent": sent_total, "seconds": time.monotonic() - started}


# ----- figure 4: stored ÷ sent --------------------------------------------------------------------------------------

def db_bytes(path: Path) -> int:
    """Bytes in use in the SQLite database after a checkpoint: (page_count − freelist_count) × page_size."""
    conn = sqlite3.connect(path, timeout=30)
    try:
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        pages = conn.execute("PRAGMA page_count").fetchone()[0]
        free = conn.execute("PRAGMA freelist_count").fetchone()[0]
        size = conn.execute("PRAGMA page_size").fetchone()[0]
    finally:
        conn.close()
    return (pages - free) * size


def column_bytes(path: Path, batch_id: int) -> tuple[int, dict] | None:
    """The bytes of every value in the batch's row and its items' rows (text as UTF-8, numbers 8), and per column."""
    conn = sqlite3.connect(path, timeout=30)
    per_column: dict[str, int] = {}
    try:
        for table, where in (("batches", "id"), ("batch_items", "batch_id")):
            cursor = conn.execute(f"SELECT * FROM {table} WHERE {where} = ?", (batch_id,))
            names = [f"{table}.{d[0]}" for d in cursor.description]
            for row in cursor.fetchall():
                for name, value in zip(names, row, strict=True):
                    if isinstance(value, str):
                        size = len(value.encode())
                    elif isinstance(value, bytes):
                        size = len(value)
                    else:
                        size = 0 if value is None else 8
                    per_column[name] = per_column.get(name, 0) + size
    except sqlite3.Error:
        return None
    finally:
        conn.close()
    return sum(per_column.values()), per_column


def longest_style(site: Site, who: Subscriber, prompts: list[str], wanted: int,
                  created: list[int]) -> tuple[int, str | None]:
    """The longest style up to `wanted` characters the site accepts (and the refusal that made it shorter)."""
    status, answer = call(site.port, "POST", "/api/batches", who, batch_body(prompts, style_text(wanted)))
    if status in (200, 201):
        created.append(answer["batch"]["id"])
        return wanted, None
    if status != 422:
        raise NotMeasured(f"POST /api/batches answered {status}: {error_text(answer)}")
    refusal = error_text(answer)
    low, high = 0, wanted  # low accepted (no style), high refused
    while high - low > 1:
        middle = (low + high) // 2
        status, answer = call(site.port, "POST", "/api/batches", who, batch_body(prompts, style_text(middle)))
        if status in (200, 201):
            created.append(answer["batch"]["id"])
            low = middle
        else:
            high = middle
    return low, refusal


def style_ratio(site: Site, who: Subscriber, db_path: Path, prompts: list[str], style_chars: int) -> dict:
    """Create one batch through the API; stored bytes (database growth) ÷ the request body's bytes."""
    body = batch_body(prompts, style_text(style_chars))
    before = db_bytes(db_path)
    status, answer = call(site.port, "POST", "/api/batches", who, body)
    if status not in (200, 201):
        raise NotMeasured(f"POST /api/batches answered {status}: {error_text(answer)}")
    grown = db_bytes(db_path) - before
    batch_id = answer["batch"]["id"]
    items = answer.get("items") or []
    return {"sent": len(body), "stored": grown, "ratio": grown / len(body), "columns": column_bytes(db_path, batch_id),
            "batch_id": batch_id, "item_id": items[0]["id"] if items else 1, "style_chars": style_chars,
            "prompts": len(prompts)}


# ----- figure 2: review CPU ------------------------------------------------------------------------------------------

def fit_square(points: list[tuple[int, float]]) -> float:
    """Least-squares a of t = a·N² through the origin."""
    return sum(t * n * n for n, t in points) / sum(n ** 4 for n, _ in points)


def review_cpu(tree: Path, env: dict, sizes: list[int], cap: float) -> list[dict]:
    """The review helper at each size (each in its own process, stopped after `cap` s)."""
    runs = []
    for n in sizes:
        try:
            runs.append(run_helper("review", tree, env, {"n": n}, timeout=cap + 5))
        except Exception as exc:  # noqa: BLE001
            runs.append({"n": n, "error": reason(exc)})
    return runs


def reason(exc: BaseException) -> str:
    """Why a figure was not measured, in one line."""
    text = str(exc) if isinstance(exc, NotMeasured) else f"{type(exc).__name__}: {exc}"
    return " ".join(text.split())[:300].replace("|", "/")


# ----- one tree -------------------------------------------------------------------------------------------------------

def measure_tree(label: str, tree: Path, args, tools_tree: Path, tag: str, style_chars: int | None,
                 log) -> dict:
    """Every figure asked for, on one tree; a figure that fails carries its reason instead of its values."""
    results: dict = {"label": label, "tree": str(tree)}
    work = Path(tempfile.mkdtemp(prefix="iib-bench-abuse-"))
    results["work"] = work
    db_path = work / "bench.db"
    env = base_env(tag)
    env.update({"APP_MODE": "test", "SECRET_KEY": "bench-abuse-" + uuid.uuid4().hex * 2,
                "DATABASE_URL": f"sqlite:///{db_path}", "VAR_DIR": str(work / "var"), "LOG_LEVEL": "WARNING",
                "WORKER_LAUNCH": "none", "OPENAI_API_KEY": "sk-bench", "STRIPE_SECRET_KEY": "sk_test_bench",
                "STRIPE_WEBHOOK_SECRET": "whsec_bench", "STRIPE_PRICE_ID": "price_bench",
                "STRIPE_API_BASE": f"http://127.0.0.1:{free_port()}"})  # nothing listens: Stripe calls fail fast
    log_file = work / "site.log"
    wanted = set(args.only)
    try:
        if 2 in wanted:
            log(f"{label}: figure 2 (review CPU)")
            if label.startswith("baseline"):
                sizes, cap = ([1000, 2000, 4000] if args.quick else [2000, 4000, 8000]), 60.0
            else:
                sizes, cap = ([1000, 2000, 4000, NAMES_1MB] if args.quick else [2000, 4000, 8000, NAMES_1MB]), \
                    (20.0 if args.quick else 60.0)
            results["review"] = review_cpu(tree, env, sizes, cap)
        if not wanted & {1, 3, 4}:
            return results
        try:
            prepared = run_helper("prepare", tree, env, {"credits": 1_000_000, "sessions": 3 + BODY_CLIENTS}, 120)
        except Exception as exc:  # noqa: BLE001
            for figure in ("kicks", "flood", "style"):
                results[figure] = {"error": f"no subscriber: {reason(exc)}"}
            return results
        results["worker_processes"] = prepared["worker_processes"]
        results["plan_max_prompts"] = prepared["plan_max_prompts"]
        people = [Subscriber(prepared["cookie"], token, csrf) for token, csrf in prepared["sessions"]]
        # Figures 1 and 4 use the first session; figure 3 the second, and spare ones for /logout (which ends them).
        main_user, flood_user, spares = people[0], people[1], people[2:]
        fig1_batch = None
        created: list[int] = []  # batches other than figure 1's: cancelled before it, so its workers can run dry
        target = (1, 1)
        site = None
        try:
            site = Site(tree, env, log_file)
            if 4 in wanted:
                log(f"{label}: figure 4 (stored ÷ sent)")
                prompts = short_prompts(min(BATCH_PROMPTS, prepared["plan_max_prompts"]))
                try:
                    refusal = None
                    if style_chars is None:
                        style_chars, refusal = longest_style(site, main_user, prompts, STYLE_CHARS, created)
                    figure = style_ratio(site, main_user, db_path, prompts, style_chars)
                    created.append(figure["batch_id"])
                    figure["refusal"] = refusal
                    results["style"] = figure
                    longer = style_ratio(site, main_user, db_path, typical_prompts(len(prompts)), style_chars)
                    created.append(longer["batch_id"])
                    results["style_typical"] = longer
                    target = (figure["batch_id"], figure["item_id"])
                except Exception as exc:  # noqa: BLE001 - a figure that fails says why; the others go on
                    results["style"] = {"error": reason(exc)}
            if 1 in wanted:
                count = min(BATCH_PROMPTS, prepared["plan_max_prompts"])
                status, answer = call(site.port, "POST", "/api/batches", main_user,
                                      batch_body(short_prompts(count), "studio light"))
                if status in (200, 201):
                    fig1_batch = answer["batch"]["id"]
                    if target == (1, 1):
                        target = (fig1_batch, (answer.get("items") or [{"id": 1}])[0]["id"])
                    status, answer = call(site.port, "POST", f"/api/batches/{fig1_batch}/stop", main_user)
                    if status != 200:
                        results["kicks"] = {"error": f"stop answered {status}: {error_text(answer)}"}
                else:
                    results["kicks"] = {"error": f"the batch was refused ({status}): {error_text(answer)}"}
            if 3 in wanted:
                log(f"{label}: figure 3 (large bodies)")
                try:
                    listed = run_helper("routes", tree, dict(site.env), {}, 120)["routes"]
                    # In case the time runs out: first the webhook (it has to read what anyone sends), then the
                    # routes without path parameters (the forms and the API that take input), then the rest in the
                    # app's order; /logout last (it ends the session it is sent with; it gets spare ones).
                    rules = [rule for rule, _ in listed]
                    rules.sort(key=lambda rule: (rule != "/stripe/webhook", rule == "/logout", "<" in rule))
                    paths = [fill_rule(rule, *target) for rule in rules]
                    if args.quick:
                        paths = [p for p in paths if p in QUICK_ROUTES]
                    results["flood"] = body_flood(site, flood_user, spares, paths, BODY_CLIENTS, BODY_BYTES,
                                                  20.0 if args.quick else FLOOD_SECONDS)
                    results["flood"]["all_routes"] = len(listed)
                except Exception as exc:  # noqa: BLE001
                    results["flood"] = {"error": reason(exc)}
            for batch_id in created:
                call(site.port, "POST", f"/api/batches/{batch_id}/cancel", main_user)
        except Exception as exc:  # noqa: BLE001
            for figure in ("style", "flood", "kicks"):
                results.setdefault(figure, {"error": reason(exc)})
        finally:
            if site is not None:
                site.stop()
            kill_tagged(tag)
        if 1 in wanted and "kicks" not in results:
            log(f"{label}: figure 1 (60 parallel kicks)")
            stand_in = None
            site = None
            try:
                stand_in = StandIn(tools_tree, base_env(tag), work / "fake_openai.log", STANDIN_LATENCY)
                site = Site(tree, dict(env, WORKER_LAUNCH="spawn", OPENAI_BASE_URL=stand_in.base_url,
                                       OPENAI_READ_TIMEOUT="60"), work / "site-spawn.log")
                results["kicks"] = kick_storm(site, main_user, fig1_batch, tag, KICKS, KICK_WINDOW,
                                              10.0 if args.quick else 30.0)
            except Exception as exc:  # noqa: BLE001
                results["kicks"] = {"error": reason(exc)}
            finally:
                kill_tagged_workers_first(site, tag)
                if stand_in is not None:
                    stand_in.stop()
        return results
    finally:
        kill_tagged(tag)
        shutil.rmtree(work, ignore_errors=True)


def kill_tagged_workers_first(site: Site | None, tag: str) -> None:
    """Kill the workers (by pid, before their parent goes and they are re-parented), then the server."""
    for pid in pids():
        if site is not None and pid != site.process.pid and pid != os.getpid() and carries_tag(pid, tag):
            try:
                os.kill(pid, signal.SIGKILL)
            except OSError:
                pass
    if site is not None:
        site.stop()
    kill_tagged(tag)


# ----- the report --------------------------------------------------------------------------------------------------

def mb(value: float) -> str:
    """Bytes as MB (10^6 bytes) with one decimal."""
    return f"{value / 1e6:.1f}"


def print_report(trees: list[dict], args) -> list[tuple]:
    """The four tables; returns the summary rows (figure, goal, baseline, current, verdict)."""
    base, current = trees
    names = (base["label"], current["label"])
    summary = []
    wanted = set(args.only)

    if 1 in wanted:
        limit = current.get("worker_processes") or DEFAULT_WORKER_PROCESSES
        source = ("as the working tree's settings say" if current.get("worker_processes")
                  else "the default; the working tree has no such setting yet")
        print(f"\n## 1. Worker processes after {KICKS} parallel kicks\n")
        print(f"`POST /api/batches/<id>/resume` × {KICKS} at once on a paused {BATCH_PROMPTS}-item batch, "
              f"WORKER_LAUNCH=spawn, stand-in {STANDIN_LATENCY:g} s per image; /proc scanned every "
              f"{SAMPLE_EVERY * 1000:.0f} ms. Then the batch is cancelled and the workers run dry. "
              f"Goal: peak ≤ WORKER_PROCESSES = {limit} ({source}).\n")
        print("| tree | **peak live `cli.py worker` in 3 s** | peak live children of the server | at 3 s: live / "
              "zombies | peak live, whole run | workers started in all | answers to the kicks | last answer at s | "
              "after cancel: live / zombies (waited s) | peak zombies | goal |")
        print("|---|---|---|---|---|---|---|---|---|---|---|")
        values = []
        for tree in (base, current):
            k = tree.get("kicks") or {"error": "not run"}
            if "error" in k:
                print(f"| {tree['label']} | not measured: {k['error']} ||||||||||")
                values.append(None)
                continue
            answers = ", ".join(f"{s}: {c}" for s, c in sorted(k["statuses"].items()))
            verdict = "met" if k["peak"] <= limit else "**missed**"
            print(f"| {tree['label']} | **{k['peak']}** | {k['peak_children']} | {k['at_window']['live']} / "
                  f"{k['at_window']['zombies']} | {k['overall']} | {k['started_total']} | {answers} | "
                  f"{k['last_answer']:.2f} | "
                  f"{k['end']['live']} / {k['end']['zombies']} ({k['settle_seconds']:.1f}) | {k['peak_zombies']} | "
                  f"≤ {limit}: {verdict} |")
            values.append(k)
        summary.append((f"worker processes after {KICKS} kicks (zombies after)", f"≤ {limit}",
                        *(f"{v['peak']} ({v['end']['zombies']} zombies)" if v else "n/a" for v in values),
                        verdict_of(values[1], lambda v: v["peak"] <= limit)))

    if 2 in wanted:
        print("\n## 2. CPU seconds to parse and review N identical file names\n")
        print("The route's readers on the raw text (N lines of `a cat`, N lines of `cat`; the calls are in the last "
              "column), then `review(max_prompts=PLAN_MAX_PROMPTS)`; time.process_time() in a process of its own. "
              f"N = {NAMES_1MB:,} is 1 MiB of names. Goal: < {GOAL_REVIEW_SECONDS:g} s.\n")
        print("| tree | N | names | kind | parse s | review s | **total CPU s** | prompts parsed / items reviewed | "
              "errors | calls |")
        print("|---|---|---|---|---|---|---|---|---|---|")
        extrapolated = {}
        for tree in (base, current):
            runs = tree.get("review") or []
            done = [(r["n"], r["total"]) for r in runs if "error" not in r]
            for r in runs:
                if "error" in r:
                    print(f"| {tree['label']} | {r['n']:,} | {r['n'] * 4:,} B | measured | not measured: "
                          f"{r['error']} ||||||")
                    continue
                print(f"| {tree['label']} | {r['n']:,} | {r['names_bytes']:,} B | measured | {r['parse']:.3f} | "
                      f"{r['review']:.3f} | **{r['total']:.3f}** | {r['prompts']:,} / {r['items']:,} | "
                      f"{', '.join(r['errors']) or '—'} | `{r['calls'][0]}`, `{r['calls'][1]}` |")
            measured_full = any(n == NAMES_1MB for n, _ in done)
            small = [(n, t) for n, t in done if n < NAMES_1MB]
            if not measured_full and len(small) >= 2:
                a = fit_square(small)
                (n1, t1), (n2, t2) = small[0], small[-1]
                exponent = math.log(t2 / t1) / math.log(n2 / n1) if t1 > 0 and t2 > 0 else float("nan")
                estimate = a * NAMES_1MB ** 2
                extrapolated[tree["label"]] = estimate
                print(f"| {tree['label']} | {NAMES_1MB:,} | {NAMES_1MB * 4:,} B | **extrapolated** (t = a·N², "
                      f"a = {a:.3g} s from the {len(small)} measured points; their log-log slope "
                      f"{exponent:.2f}) | | | **{estimate:,.0f}** ({estimate / 3600:.1f} h) | | | |")
            tree["review_1mb"] = next((t for n, t in done if n == NAMES_1MB), extrapolated.get(tree["label"]))
            tree["review_1mb_kind"] = "measured" if measured_full else (
                "extrapolated" if tree["label"] in extrapolated else None)
        row = []
        for tree in (base, current):
            value = tree.get("review_1mb")
            row.append("n/a" if value is None else f"{value:,.2f} s ({tree['review_1mb_kind']})")
        now = current.get("review_1mb")
        summary.append(("CPU s to review 1 MiB of duplicate names", f"< {GOAL_REVIEW_SECONDS:g} s", *row,
                        "n/a" if now is None else "met" if now < GOAL_REVIEW_SECONDS else "**missed**"))

    if 3 in wanted:
        print(f"\n## 3. Server RSS while {BODY_CLIENTS} clients each POST {BODY_BYTES // 2**20} MiB to every "
              "POST route\n")
        print("One route at a time, its clients at once; RSS of the server and its children from /proc every "
              f"{RSS_EVERY * 1000:.0f} ms. Goal: rise < {GOAL_RISE_BYTES / 1e6:.0f} MB (MB = 10^6 bytes).\n")
        print("| tree | routes sent / registered POST routes | RSS before MB | **peak MB** | **rise MB** | after MB | "
              "sent GB | seconds | route with the highest peak | goal |")
        print("|---|---|---|---|---|---|---|---|---|---|")
        values = []
        for tree in (base, current):
            f = tree.get("flood") or {"error": "not run"}
            if "error" in f:
                print(f"| {tree['label']} | not measured: {f['error']} |||||||||")
                values.append(None)
                continue
            top = max(f["routes"], key=lambda r: r["peak"], default=None)
            verdict = "met" if f["rise"] < GOAL_RISE_BYTES else "**missed**"
            print(f"| {tree['label']} | {len(f['routes'])} / {f['all_routes']} | {mb(f['before'])} | "
                  f"**{mb(f['peak'])}** | **{mb(f['rise'])}** | {mb(f['after'])} | {f['sent'] / 1e9:.2f} | "
                  f"{f['seconds']:.1f} | {top['path'] if top else '—'} ({mb(top['peak']) if top else '—'}) | "
                  f"< {GOAL_RISE_BYTES / 1e6:.0f}: {verdict} |")
            values.append(f)
        for tree, f in zip((base, current), values, strict=True):
            if not f:
                continue
            print(f"\n{tree['label']}, per route (peak RSS while that route's {BODY_CLIENTS} bodies were sent; "
                  "outcomes of the clients):\n")
            print("| route | body | peak MB | rise over the RSS before the flood MB | rise over the RSS just before "
                  "this route MB | seconds | sent MB | outcomes |")
            print("|---|---|---|---|---|---|---|---|")
            for r in f["routes"]:
                outcomes = ", ".join(f"{k}: {v}" for k, v in sorted(r["outcomes"].items()))
                print(f"| `{r['path']}` | {r['kind']} | {mb(r['peak'])} | {mb(r['peak'] - f['before'])} | "
                      f"{mb(r['peak'] - r['route_before'])} | "
                      f"{r['seconds']:.1f} | {r['sent'] / 1e6:,.0f} | {outcomes} |")
            if f["skipped"]:
                print(f"\nNot sent (time limit reached): {', '.join(f'`{p}`' for p in f['skipped'])}.")
        summary.append(("RSS rise, 10 × 50 MiB bodies per POST route", f"< {GOAL_RISE_BYTES / 1e6:.0f} MB",
                        *(f"{mb(v['rise'])} MB (peak {mb(v['peak'])})" if v else "n/a" for v in values),
                        verdict_of(values[1], lambda v: v["rise"] < GOAL_RISE_BYTES)))

    if 4 in wanted:
        print("\n## 4. Stored bytes ÷ sent bytes, one batch with a long style\n")
        print("`POST /api/batches` (JSON) with the style below and 200 prompts of two lengths; stored = growth of the "
              "database's pages in use after a checkpoint (the figure); beside it the bytes of every value in the "
              f"batch's row and its items' rows. Goal: ≤ {GOAL_RATIO:g}.\n")
        print("| tree | prompts | style chars | sent B | stored B (database growth) | **stored ÷ sent** | "
              "values in the rows B (÷ sent) | goal |")
        print("|---|---|---|---|---|---|---|---|")
        values = []
        for key, kind in (("style_typical", "~200 chars"), ("style", "~50 chars")):
            for tree in (base, current):
                s = tree.get(key) or {"error": "not run"}
                if "error" in s:
                    print(f"| {tree['label']} | not measured: {s['error']} |||||||")
                    values.append(None)
                    continue
                columns = ("n/a" if s["columns"] is None
                           else f"{s['columns'][0]:,} ({s['columns'][0] / s['sent']:.2f})")
                verdict = "met" if s["ratio"] <= GOAL_RATIO else "**missed**"
                print(f"| {tree['label']} | {s['prompts']} × {kind} | {s['style_chars']:,} | {s['sent']:,} | "
                      f"{s['stored']:,} | **{s['ratio']:.2f}** | {columns} | ≤ {GOAL_RATIO:g}: {verdict} |")
                values.append(s)
        typical, values = values[:2], values[2:]
        for tree, s in zip((base, current), values, strict=True):
            if s and s["columns"]:
                top = sorted(s["columns"][1].items(), key=lambda kv: kv[1], reverse=True)[:5]
                print(f"\n{tree['label']}: the largest columns, bytes for this batch: "
                      + ", ".join(f"`{name}` {size:,}" for name, size in top) + ".")
        refusal = next((v["refusal"] for v in values if v and v.get("refusal")), None)
        if refusal:
            print(f"\nThe working tree refused a {STYLE_CHARS:,}-character style ({refusal}); the longest it "
                  "accepted is used for both trees.")
        summary.append(("stored ÷ sent, long style, ~200-char prompts", f"≤ {GOAL_RATIO:g}",
                        *(f"{v['ratio']:.2f} ({v['style_chars']:,}-char style)" if v else "n/a" for v in typical),
                        verdict_of(typical[1], lambda v: v["ratio"] <= GOAL_RATIO)))
        summary.append(("stored ÷ sent, long style, ~50-char prompts", f"≤ {GOAL_RATIO:g}",
                        *(f"{v['ratio']:.2f} ({v['style_chars']:,}-char style)" if v else "n/a" for v in values),
                        verdict_of(values[1], lambda v: v["ratio"] <= GOAL_RATIO)))
    print(f"\n## Summary\n\n| figure | goal | {names[0]} | {names[1]} | verdict ({names[1]}) |")
    print("|---|---|---|---|---|")
    for row in summary:
        print("| " + " | ".join(str(cell) for cell in row) + " |")
    return summary


def verdict_of(value, meets) -> str:
    """met / missed / not measured."""
    if value is None:
        return "not measured"
    return "met" if meets(value) else "**missed**"


# ----- the run --------------------------------------------------------------------------------------------------------

def export_baseline(ref: str, into: Path) -> str:
    """`git archive REF` of this repository, unpacked into `into`; returns the commit's short id and subject."""
    archive = subprocess.Popen(["git", "-C", str(ROOT), "archive", ref], stdout=subprocess.PIPE)
    unpack = subprocess.run(["tar", "-x", "-C", str(into)], stdin=archive.stdout, capture_output=True)
    archive.stdout.close()
    if archive.wait() or unpack.returncode:
        raise SystemExit(f"could not export {ref}: {unpack.stderr.decode(errors='replace')[:300]}")
    return subprocess.run(["git", "-C", str(ROOT), "log", "-1", "--format=%h %s", ref], capture_output=True,
                          text=True).stdout.strip()[:100]


def main(argv: list[str] | None = None) -> int:
    """Measure the four figures on the baseline and the working tree; print the tables and a summary."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smaller sizes, three body routes: a smoke run (~2 min)")
    parser.add_argument("--tree", default=str(ROOT), help="the working tree to measure (default: this checkout)")
    parser.add_argument("--baseline-ref", default=DEFAULT_BASELINE, help=f"the baseline commit (default "
                        f"{DEFAULT_BASELINE}, today's main before the fixes)")
    parser.add_argument("--only", default="1,2,3,4", help="figures to measure, e.g. 1,3 (default all)")
    parser.add_argument("--helper", help=argparse.SUPPRESS)
    parser.add_argument("--params", default="{}", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.helper:
        return helper_main(args.helper, args.tree, json.loads(args.params))
    args.only = sorted({int(x) for x in args.only.split(",") if x.strip()} & {1, 2, 3, 4})
    tree = Path(args.tree).resolve()
    if not (tree / "app.py").is_file():
        raise SystemExit(f"{tree} has no app.py")

    def stop_on_sigterm(signum, frame):
        """SIGTERM ends the run as Ctrl+C does, so the clean-up runs."""
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, stop_on_sigterm)
    command = ".venv/bin/python bench/abuse.py " + shlex.join(argv if argv is not None else sys.argv[1:])
    print("# Abuse: worker storms, duplicate names, large bodies, long styles\n")
    print(f"Date and machine: {machine_line()}.  ")
    print(f"Command: `{command.strip()}`  ")
    tag = uuid.uuid4().hex
    baseline_dir = Path(tempfile.mkdtemp(prefix="iib-bench-abuse-baseline-"))

    def log(text: str) -> None:
        """A progress line (an HTML comment, invisible in the rendered report)."""
        print(f"<!-- {datetime.datetime.now():%H:%M:%S} {text} -->", flush=True)

    try:
        subject = export_baseline(args.baseline_ref, baseline_dir)
        dirty = [line for line in subprocess.run(["git", "-C", str(tree), "status", "--short",
                                                  "--untracked-files=no"],
                                                 capture_output=True, text=True).stdout.splitlines() if line.strip()]
        head = subprocess.run(["git", "-C", str(tree), "log", "-1", "--format=%h"], capture_output=True,
                              text=True).stdout.strip()
        print(f"Baseline: `{args.baseline_ref}` ({subject}), exported to a temporary folder.  ")
        print(f"Working tree: `{tree}` at {head or '?'} with {len(dirty)} changed tracked file(s)"
              f"{': ' + ', '.join(line[3:] for line in dirty[:12]) if dirty else ''}"
              f"{' …' if len(dirty) > 12 else ''}.  ")
        print(f"Python: {PYTHON}; SQLite; the OpenAI stand-in of the baseline's tools/ for both trees."
              f"{' **Quick run** (smaller sizes).' if args.quick else ''}\n", flush=True)
        started = time.monotonic()
        current = measure_tree("working tree", tree, args, baseline_dir, tag, None, log)
        style_chars = (current.get("style") or {}).get("style_chars") or STYLE_CHARS
        base = measure_tree(f"baseline {args.baseline_ref}", baseline_dir, args, baseline_dir, tag, style_chars, log)
        print_report([base, current], args)
        print(f"\nRun time {time.monotonic() - started:.0f} s. Load average at the end: "
              f"{' '.join(f'{v:.2f}' for v in os.getloadavg())}.")
    except KeyboardInterrupt:
        print("\ninterrupted; cleaning up", file=sys.stderr)
        return 130
    except Exception:
        traceback.print_exc()
        return 1
    finally:
        kill_tagged(tag)
        shutil.rmtree(baseline_dir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
