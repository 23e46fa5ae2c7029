"""Soak tests on SQLite and MariaDB: a 200-item queue under upstream faults with workers killed mid-run, and a
storm of duplicated, shuffled, concurrent Stripe webhooks that must end where one clean delivery ends.

The 1,000 concurrent credit reservations live in tests/test_credits.py; they are not repeated here.
Run with -s to see each soak's one-line summary. Longer variants (more items, other seeds, more customers) run
from `bench/soak.py`, which sets IIB_SOAK_ITEMS, IIB_SOAK_SEED and IIB_STORM_GROUPS for these same tests.
"""

import collections
import concurrent.futures
import contextlib
import datetime
import io
import json
import os
import random
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from urllib.parse import urlsplit

import pymysql
import pytest
import requests
from PIL import Image

from services import batches, billing, credits, db, worker
from services.config import SETTING_NAMES
from tests.conftest import ROOT, TEST_CATALOG, make_subscriber, openai_settings
from tools.demo import stripe_settings
from tools.fake_openai import ApiError, FakeOpenAI

SETTLED = ("done", "delivered", "failed", "cancelled", "expired")
# The size of a run: CI's defaults, or a longer variant's (bench/soak.py).
ITEMS = int(os.environ.get("IIB_SOAK_ITEMS", "200"))  # a multiple of 20
SEED = int(os.environ.get("IIB_SOAK_SEED", "20261"))
GROUPS = int(os.environ.get("IIB_STORM_GROUPS", "1"))  # the storm's 10 customers, this many times over
GIVE_UP_AFTER = max(150, ITEMS * 3 // 4)  # seconds: a guard against a hang, never a timing assertion


def wait_until(predicate, what: str, timeout: float = GIVE_UP_AFTER):
    """Poll until predicate() is truthy and return its value; fail with `what` if it never is."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        assert time.monotonic() < deadline, f"gave up waiting for {what}"
        time.sleep(0.02)


# ================================================================================================================
# 1. The fault soak: 200 items, ~30 % of calls faulted, real `cli.py worker` processes, two of them SIGKILLed.
# ================================================================================================================

# Per generation request: 429 (with retry-after / retry-after-ms), 500, 503, malformed JSON, a hang past the read
# timeout. Together 30 %; the moderation refusals come on top, from the prompts (5 % carry the marker).
FAULT_MIX = {"rate_limit": 0.08, "server_error": 0.07, "unavailable": 0.07, "malformed": 0.05, "hang": 0.03}
RETRY_AFTER_MS = 150  # what the stand-in's 429s ask for (its default of 1 s would turn ~20 of them into ~20 s)
HANG_SECONDS = 3.0  # longer than the 2 s OPENAI_READ_TIMEOUT of openai_settings()
COUNTED = ("server_error", "unavailable", "malformed", "hang", None)  # every answer but a 429 uses up an attempt


Call = collections.namedtuple("Call", "prompt fault status seconds request_id")


class SoakOpenAI(FakeOpenAI):
    """The OpenAI stand-in drawing faults at the FAULT_MIX rates and logging a Call for each generation request."""

    def __init__(self, seed: int, **kwargs):
        super().__init__(**kwargs)
        self.fault_rates(FAULT_MIX, seed=seed)
        self.log: list[Call] = []
        self._drawn = threading.local()

    def _next_fault(self):
        fault = super()._next_fault()
        if fault is not None and fault[0] == "rate_limit":
            fault = (fault[0], {**fault[1], "retry_after_ms": RETRY_AFTER_MS})
        self._drawn.kind = fault[0] if fault else None
        return fault

    def _generations(self, headers, raw, request_id):
        self._drawn.kind, status, began = None, None, time.monotonic()
        try:
            reply = super()._generations(headers, raw, request_id)
            status = None if reply is None else reply.status
            return reply
        except ApiError as exc:
            status = exc.status
            raise
        finally:
            try:
                prompt = json.loads(raw.decode("utf-8")).get("prompt", "")
            except (ValueError, AttributeError):
                prompt = ""
            with self._lock:
                self.log.append(Call(prompt, self._drawn.kind, status, time.monotonic() - began, request_id))


@pytest.fixture
def soak_openai():
    """The fault-mixing OpenAI stand-in on a free loopback port."""
    server = SoakOpenAI(seed=SEED, hang_seconds=HANG_SECONDS).start()
    yield server
    server.stop()


def worker_env(app, fake) -> dict:
    """The environment a cron-started `cli.py worker` gets: the test's database, var folder and stand-in."""
    env = {k: v for k, v in os.environ.items() if k not in SETTING_NAMES}
    env.update({"APP_MODE": "test", "DATABASE_URL": app.settings.database_url, "VAR_DIR": str(app.settings.var_dir),
                **openai_settings(fake), "MODEL_CATALOG": app.settings.model_catalog, "WORKER_SLOTS": "4"})
    return env


def tcp_ports(pid: int) -> set[int]:
    """The local TCP ports of a process's sockets (from /proc), to find its sessions in MariaDB's process list."""
    inodes = set()
    try:
        fds = list(Path(f"/proc/{pid}/fd").iterdir())
    except OSError:  # it has just exited by itself
        return set()
    for fd in fds:
        with contextlib.suppress(OSError):
            target = os.readlink(fd)
            if target.startswith("socket:["):
                inodes.add(target[len("socket:["):-1])
    ports = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            if fields[9] in inodes:
                ports.add(int(fields[1].rsplit(":", 1)[1], 16))
    return ports


class Workers:
    """The `cli.py worker` processes of one soak: started as cron starts them, some of them SIGKILLed."""

    def __init__(self, conn, env: dict, logs):
        self.conn, self.env, self.logs = conn, env, logs
        self.running: list[subprocess.Popen] = []
        self.finished: list[tuple[subprocess.Popen, str]] = []
        self.killed: list[subprocess.Popen] = []
        self.started = 0
        self.host = socket.gethostname()[:20]

    def start(self) -> subprocess.Popen:
        """Start one worker with cron's time limit; its output goes to a file (a pipe could fill up and block it)."""
        self.started += 1
        out = (self.logs / f"worker-{self.started}.log").open("w")
        process = subprocess.Popen([sys.executable, "cli.py", "worker", "--max-seconds", "55"], cwd=ROOT,
                                   env=self.env, stdout=out, stderr=subprocess.STDOUT, text=True)
        out.close()
        process.log_path = self.logs / f"worker-{self.started}.log"
        self.running.append(process)
        return process

    def prefix(self, process) -> str:
        """The start of the names the process's threads write into batch_items.worker (worker.worker_name)."""
        return f"{self.host}-{process.pid}-"

    def reap(self) -> list[subprocess.Popen]:
        """Collect the workers that exited on their own; return the ones still running."""
        for process in [p for p in self.running if p.poll() is not None]:
            self.running.remove(process)
            self.finished.append((process, process.log_path.read_text()))
        return self.running

    def kill(self, process) -> None:
        """SIGKILL a worker, as the host's OOM killer or a lost SSH session would, and wait for it to be gone.

        On MariaDB "gone" includes its sessions: the server may still be reading what the process sent just
        before it died (a COMMIT, an UPDATE), so the sessions must end before the test reads what it left.
        """
        ports = tcp_ports(process.pid) if self.conn.engine == "mysql" else set()
        process.send_signal(signal.SIGKILL)
        process.wait(timeout=10)
        self.running.remove(process)
        self.killed.append(process)
        hosts = {f"127.0.0.1:{port}" for port in ports}
        if hosts:
            wait_until(lambda: not hosts & {row["host"] for row in self.conn.all(
                "SELECT HOST AS host FROM information_schema.PROCESSLIST")}, "the killed worker's sessions to end")

    def stop_all(self) -> None:
        """Kill whatever still runs (only after a failure)."""
        for process in list(self.running):
            self.kill(process)


def new_batch(conn, user_id, prompts, model, ratio, image_format) -> int:
    checked = batches.review(TEST_CATALOG, datetime.date.today(), prompts=prompts, names=[], style="", model_id=model,
                             ratio=ratio, quality="low", image_format=image_format, separator=", ", max_prompts=200,
                             credits_left=credits.balance(conn, user_id))
    assert checked.ok, checked.errors
    batch_id, _ = batches.create(conn, TEST_CATALOG, user_id, checked, "", int(time.time()))
    return batch_id


def all_items(conn, batch_ids) -> list[dict]:
    return [item for batch_id in batch_ids for item in db.batch_items_of(conn, batch_id)]


def settled_count(conn) -> int:
    marks = ", ".join("?" * len(SETTLED))
    return conn.scalar(f"SELECT COUNT(*) AS n FROM batch_items WHERE status IN ({marks})", SETTLED)


def in_flight_of(conn, workers: Workers) -> subprocess.Popen | None:
    """A running worker that has an upstream call in flight right now."""
    rows = conn.all("SELECT worker FROM batch_items WHERE status = 'running' AND call_until > 0")
    for process in workers.reap():
        if any((r["worker"] or "").startswith(workers.prefix(process)) for r in rows):
            return process
    return None


def expire_leases(conn, rows: list[dict]) -> int:
    """Make a dead worker's leases run out now, as they would LEASE_EXTRA + read timeout seconds after its claims.

    Nothing but `lease_until` tells the app that a worker is gone: the claim takes a running item whose
    `lease_until <= now`, and `cli.py cleanup` (worker.cleanup -> db.items_stale_leases) queues such items again.
    Setting a dead process's `lease_until` into the past is the state both queries would meet after those
    ~122 s of real time. The live workers' leases are left alone: in real time their calls would be long over.
    """
    past = int(time.time()) - 1
    return sum(conn.execute("UPDATE batch_items SET lease_until = ? WHERE id = ? AND status = 'running' "
                            "AND worker = ?", (past, row["id"], row["worker"])) for row in rows)


def acknowledge_some(conn, app, owners: dict[int, int], delivered: set[int]) -> None:
    """Collect every seventh finished image as the batch page does (the file goes, the item is `delivered`)."""
    for row in conn.all("SELECT id, batch_id FROM batch_items WHERE status = 'done'"):
        if row["id"] % 7 == 0 and row["id"] not in delivered:
            batches.acknowledge(conn, app.settings.results_dir, owners[row["batch_id"]], row["batch_id"], row["id"],
                                int(time.time()))
            delivered.add(row["id"])


def test_two_hundred_items_survive_faults_and_killed_workers(make_app, database, conn, soak_openai, tmp_path):
    started = time.monotonic()
    fake = soak_openai
    app = make_app(**openai_settings(fake))
    balance = max(300, ITEMS * 3 // 2)  # enough for every item at its first charge: no quota pause in this soak
    ana = make_subscriber(conn, "Ana", "ana@example.com", balance=balance)
    ben = make_subscriber(conn, "Ben", "ben@example.com", balance=balance)
    initial = {ana: credits.balance(conn, ana), ben: credits.balance(conn, ben)}
    marker = fake.moderation_marker
    # Mixed models (gpt-image-1.x lack 864x1536 and 1536x864: those are cropped), ratios and formats.
    plan = [(ana, "gpt-image-2", "1:1", "png", ITEMS * 3 // 10), (ana, "gpt-image-2", "16:9", "jpeg", ITEMS // 5),
            (ben, "gpt-image-1-mini", "9:16", "jpeg", ITEMS // 4), (ben, "gpt-image-1.5", "16:9", "png", ITEMS // 4)]
    batch_ids, owners, number = [], {}, 0
    for user, model, ratio, image_format, count in plan:
        prompts = []
        for _ in range(count):
            refused = number % 20 == 7  # 5 % of the prompts (10 of 200) are refused by the safety system
            prompts.append(f"soak {number:04d}: a {marker + ' ' if refused else ''}lighthouse at dusk")
            number += 1
        for first in range(0, count, 200):  # a batch holds at most 200 prompts
            batch_id = new_batch(conn, user, prompts[first:first + 200], model, ratio, image_format)
            batch_ids.append(batch_id)
            owners[batch_id] = user
    cost = {b["id"]: b["credits_per_item"] for b in (db.batch_get(conn, i) for i in batch_ids)}
    by_prompt = {item["prompt"]: item for item in all_items(conn, batch_ids)}
    assert len(by_prompt) == ITEMS
    first_charge = {item["charge"] for item in by_prompt.values()}
    assert len(first_charge) == 1

    workers = Workers(conn, worker_env(app, fake), tmp_path)
    interrupted: collections.Counter = collections.Counter()  # item id -> kills that caught it running
    released, delivered = 0, set()
    try:
        workers.start()
        workers.start()  # two cron-started processes share the queue
        for kill_number, threshold in enumerate((ITEMS // 4, ITEMS * 3 // 5), start=1):
            victim = wait_until(lambda t=threshold: settled_count(conn) >= t and in_flight_of(conn, workers),
                                f"kill {kill_number}: {threshold} items settled and a call in flight")
            # First one of the two workers dies (the other one takes its items over once their leases run out);
            # then every worker at once, as in a host restart (the nightly cleanup queues their items again).
            victims = [victim] if kill_number == 1 else list(workers.running)
            for process in victims:
                workers.kill(process)
            # What the dead processes left: items still `running` under their names (a claim the second kill cut
            # short can leave one of the first victim's items there too). Only this kill's victims count as caught.
            held = [row for row in conn.all("SELECT id, worker FROM batch_items WHERE status = 'running'")
                    if any(row["worker"].startswith(workers.prefix(p)) for p in workers.killed)]
            interrupted.update(row["id"] for row in held
                               if any(row["worker"].startswith(workers.prefix(p)) for p in victims))
            assert expire_leases(conn, held) == len(held)
            if kill_number == 2:
                result = subprocess.run([sys.executable, "cli.py", "cleanup"], cwd=ROOT, env=workers.env,
                                        capture_output=True, text=True, timeout=60)
                assert result.returncode == 0, result.stdout + result.stderr
                assert f", {len(held)} stale leases released" in result.stdout, result.stdout
                assert not conn.scalar("SELECT COUNT(*) AS n FROM batch_items WHERE status = 'running'")
                released = len(held)
            workers.start()  # the next minute's cron
            acknowledge_some(conn, app, owners, delivered)
        deadline = time.monotonic() + GIVE_UP_AFTER
        while settled_count(conn) < ITEMS:
            assert time.monotonic() < deadline, "the queue never settled"
            if not workers.reap():
                workers.start()  # every worker exited (idle or time limit) with work left: cron starts another
            acknowledge_some(conn, app, owners, delivered)
            time.sleep(0.05)
        for process in list(workers.running):
            process.wait(timeout=60)  # they see the empty queue and exit
        workers.reap()
        acknowledge_some(conn, app, owners, delivered)
        # A hung call the workers gave up on is logged when the stand-in's sleep ends: wait for every call to end.
        wait_until(lambda: fake.in_flight == 0, "the stand-in's last calls to end")
    finally:
        workers.stop_all()

    # The worker processes that were not killed exited cleanly.
    for process, output in workers.finished:
        assert process.returncode == 0 and "Traceback" not in output, output[-3000:]

    items = all_items(conn, batch_ids)
    status_of = collections.Counter(item["status"] for item in items)
    failures = collections.Counter(item["error_code"] for item in items if item["status"] == "failed")
    assert set(status_of) <= {"done", "delivered", "failed"}, status_of
    assert all(item["error_code"] in worker.FAILURES for item in items if item["status"] == "failed")
    assert status_of["delivered"] == len(delivered)

    # What the stand-in saw, per item: the calls that used up an attempt, and the images it made (a 200 without a
    # fault). An image is "late" when drawing it took half the read timeout: the worker may have given up on it.
    log = list(fake.log)
    counted, made, late, made_ids = collections.Counter(), collections.Counter(), collections.Counter(), {}
    torn = [call for call in log if call.prompt not in by_prompt]
    # A body cut short by a SIGKILL in the middle of sending it is not JSON: the stand-in answers 400 to nobody.
    assert all(call.status == 400 and call.fault is None for call in torn), torn
    assert len(torn) <= sum(interrupted.values()), torn
    for call in log:
        if call.prompt not in by_prompt:
            continue
        if call.fault in COUNTED:
            counted[call.prompt] += 1
        if call.fault is None and call.status == 200:
            (late if call.seconds >= 1.0 else made)[call.prompt] += 1
            made_ids[call.request_id] = call.prompt
    for item in items:
        prompt, kills = item["prompt"], interrupted[item["id"]]
        refused = marker in prompt
        if item["status"] in ("done", "delivered"):
            assert not refused, item
            assert made_ids.get(item["request_id"]) == prompt, item  # the image stored is one the stand-in made
            # Made once per charge; a killed worker's call may have finished with nobody left to read it.
            assert made[prompt] <= 1 + kills, (item, made[prompt], late[prompt])
        else:
            assert made[prompt] <= kills, (item, made[prompt], late[prompt])
            if item["error_code"] == "refused":
                assert refused, item
            else:  # upstream or timeout: the marker is checked after the faults, so a refusal can fail this way too
                assert item["error_code"] in ("upstream", "timeout"), item
                # Three attempts; a worker killed between its claim and its call has used one up too.
                assert counted[prompt] + kills >= worker.MAX_ATTEMPTS, (item, counted[prompt], kills)
        if not kills:
            assert counted[prompt] <= worker.MAX_ATTEMPTS, (item, counted[prompt])  # 429s never use up attempts
    assert all(item["status"] == "failed" for item in items if marker in item["prompt"])

    # Credits: one reservation per item and charge, a refund for each failure, balances that add up.
    ledger = conn.all("SELECT user_id, delta, reason, reference FROM credit_ledger "
                      "WHERE reason IN ('reserve', 'refund')")
    rows_of = collections.defaultdict(list)
    for row in ledger:
        rows_of[row["reference"]].append((row["reason"], row["delta"]))
    assert len(rows_of) == ITEMS
    for item in items:
        price = cost[item["batch_id"]]
        assert {item["charge"]} == first_charge, item  # no quota pause here: every item keeps its first charge
        expected = [("reserve", -price)] + ([("refund", price)] if item["status"] == "failed" else [])
        assert sorted(rows_of[f"item:{item['id']}:{item['charge']}"]) == sorted(expected), item
        if item["status"] == "failed":
            assert item["charged"] == 0
    for user in (ana, ben):
        generated = sum(cost[i["batch_id"]] for i in items
                        if owners[i["batch_id"]] == user and i["status"] in ("done", "delivered"))
        assert credits.balance(conn, user) == initial[user] - generated
        assert db.credit_ledger_sum(conn, user) == credits.balance(conn, user)

    # Files: every done item's image is there at its exact size and format; nothing else is, once the nightly
    # cleanup has run a lease after the last worker (a killed worker may leave a half-written temporary file).
    results = app.settings.results_dir
    for item in items:
        path = results / (item["result_path"] or "-")
        if item["status"] == "done":
            batch = db.batch_get(conn, item["batch_id"])
            with Image.open(io.BytesIO(path.read_bytes())) as image:
                assert (image.size, image.format) == ((batch["width"], batch["height"]),
                                                      "PNG" if batch["image_format"] == "png" else "JPEG"), item
        else:
            assert not path.is_file(), item
    kept = db.result_paths(conn)
    files = {p.relative_to(results).as_posix() for p in results.rglob("*") if p.is_file()}
    strays = files - kept
    stray_owners = {int(name.split("/")[1].lstrip(".").split("-")[0]) for name in strays}
    assert stray_owners <= set(interrupted), strays  # only a killed worker's leftovers
    expired, orphans, leases = worker.cleanup(conn, app.settings, int(time.time()) + worker.LEASE_EXTRA + 1)
    assert (expired, orphans, leases) == (0, len(strays), 0)
    assert {p.relative_to(results).as_posix() for p in results.rglob("*") if p.is_file()} == kept

    statuses = collections.Counter(call.status for call in log if call.prompt in by_prompt)
    faults = collections.Counter(call.fault for call in log if call.fault)
    print(f"\nfault soak [{conn.engine}]: {ITEMS} items, seed {SEED}: {len(log)} attempts, {statuses[429]} 429s, "
          f"{statuses[500]} 500s, {statuses[503]} 503s, {faults['malformed']} malformed, {faults['hang']} hangs, "
          f"{statuses[400]} refusals; 2 kills ({len(workers.killed)} processes) caught "
          f"{sum(interrupted.values())} items running, "
          f"{workers.started} workers started, {released} leases released by cleanup; "
          f"{status_of['done'] + status_of['delivered']} done ({status_of['delivered']} delivered), "
          f"{status_of['failed']} failed {dict(failures)}; {sum(late.values())} late images, "
          f"{len(torn)} torn requests, {len(strays)} stray files; "
          f"{time.monotonic() - started:.1f} s")


# ================================================================================================================
# 2. The webhook storm: ~100 Stripe events from 10 customers, each delivered 1-5 times, shuffled, concurrently.
# ================================================================================================================

CUSTOMERS = 10 * GROUPS
# How many times the storm delivers one event: 1 to 5, most of them few times (the mean is 2.2). On MariaDB every
# request costs a new connection (~80 ms here, see the report), so the mean sets this test's length there.
COPIES, COPY_WEIGHTS = (1, 2, 3, 4, 5), (40, 30, 10, 10, 10)


@pytest.fixture
def reference_db_url(db_url, tmp_path):
    """A second empty database on the same engine as db_url, for the clean in-order delivery."""
    if db_url.startswith("sqlite"):
        yield f"sqlite:///{tmp_path / 'reference.db'}"
        return
    parts = urlsplit(db_url)
    name = parts.path.lstrip("/") + "_ref"
    admin = pymysql.connect(host=parts.hostname, port=parts.port or 3306, user=parts.username or "root",
                            password=parts.password or "", autocommit=True, connect_timeout=5)
    try:
        with admin.cursor() as cur:
            cur.execute(f"CREATE DATABASE `{name}` CHARACTER SET utf8mb4 COLLATE utf8mb4_unicode_ci")
        yield parts._replace(path="/" + name).geturl()
    finally:
        with admin.cursor() as cur:
            cur.execute(f"DROP DATABASE IF EXISTS `{name}`")
        admin.close()


def post_event(base_url: str, fake, event: dict, answers: list) -> str:
    """POST one event's exact bytes, signed now, as Stripe does; retry a failure (Stripe retries for three days)."""
    payload = fake.event_payload(event)
    for attempt in range(10):
        response = requests.post(f"{base_url}/stripe/webhook", data=payload, timeout=30,
                                 headers={"Content-Type": "application/json; charset=utf-8",
                                          "Stripe-Signature": fake.sign(payload)})
        answers.append(response.status_code)
        if response.status_code == 200:
            return response.json()["outcome"]
        assert response.status_code >= 500, response.text  # a 4xx would be a refusal: Stripe would give up
        time.sleep(0.05 * (attempt + 1))
    raise AssertionError(f"{event['id']} ({event['type']}) was never accepted: {answers[-10:]}")


def state_of(conn, user_ids) -> dict:
    """What the webhooks leave behind: subscriptions, customer links, balances, ledger lines, applied event ids."""
    now = int(time.time())
    users = {}
    for user in user_ids:
        subscriptions = conn.all(
            "SELECT stripe_subscription_id, stripe_customer_id, status, current_period_end, cancel_at_period_end, "
            "cancel_at, ended_at FROM subscriptions WHERE user_id = ? ORDER BY stripe_subscription_id", (user,))
        ledger = sorted((r["reason"], r["delta"], r["reference"]) for r in conn.all(
            "SELECT reason, delta, reference FROM credit_ledger WHERE user_id = ?", (user,)))
        users[user] = {"customer": db.user_stripe_customer(conn, user), "subscriptions": subscriptions,
                       "balance": credits.balance(conn, user), "ledger_sum": db.credit_ledger_sum(conn, user),
                       "ledger": ledger, "access": billing.access(billing.current_subscription(conn, user), now).state}
    return {"users": users, "event_ids": conn.scalar("SELECT COUNT(*) AS n FROM stripe_events")}


def test_a_storm_of_duplicated_shuffled_webhooks_ends_where_one_clean_delivery_ends(serve, conn, fake_stripe,
                                                                                   reference_db_url):
    started = time.monotonic()
    fake = fake_stripe
    fake.delivery(hold=True)  # the stand-in only records: this test delivers every event itself
    storm_url, app = serve(**stripe_settings(fake))
    reference_db = db.Database(reference_db_url)
    db.initdb(reference_db)
    reference = reference_db.connect()
    try:
        now = int(time.time())
        users = []
        for n in range(CUSTOMERS):  # the same people, with the same ids, in both databases
            user = db.user_insert(conn, f"Customer {n}", f"customer{n}@example.com", now)
            assert db.user_insert(reference, f"Customer {n}", f"customer{n}@example.com", now) == user
            users.append(user)
        client = billing.make_client(app.settings)
        price = billing.setup_price(client, app.settings)
        sessions = [billing.start_checkout(conn, client, app.settings, db.user_get(conn, user), price, "en",
                                           now).rsplit("/", 1)[1] for user in users]

        subs: list[str] = []
        # Rounds are moments a month or so apart. Within a round, every event of every customer is shuffled with
        # every other; across rounds only late copies of events already applied come back. (A paid invoice of an
        # older period seen for the first time after a newer one's is skipped, so a clean delivery's ledger would
        # differ there: tests/test_billing.py covers that case.) Each group of 10 customers lives the same story.
        groups = range(0, CUSTOMERS, 10)
        rounds = [
            # 1: everyone subscribes and pays (customer, subscription, invoice created/finalized, charge and
            #    payment intent succeeded, invoice paid/succeeded, checkout completed: 9 events each).
            lambda: subs.extend(fake.pay(session) for session in sessions),
            # 2: two renewals, two failed payments, two cancellations at period end.
            lambda: [[fake.renew(subs[g]), fake.renew(subs[g + 1]), fake.fail_payment(subs[g + 2]),
                      fake.fail_payment(subs[g + 3]), fake.cancel_at_period_end(subs[g + 4]),
                      fake.cancel_at_period_end(subs[g + 5])] for g in groups],
            # 3: a retried payment goes through, another fails again, a period ends, one resumes, one is cancelled
            #    at once, one renews, one more cancels at period end.
            lambda: [[fake.renew(subs[g + 2]), fake.fail_payment(subs[g + 3]), fake.renew(subs[g + 4]),
                      fake.cancel_at_period_end(subs[g + 5], cancel=False), client.v1.subscriptions.cancel(subs[g + 6]),
                      fake.renew(subs[g + 7]), fake.cancel_at_period_end(subs[g + 8])] for g in groups],
        ]
        rng = random.Random(4242)
        delivered: list[dict] = []
        answers, outcomes, copies, handled_copies = [], collections.Counter(), 0, 0
        for number, act in enumerate(rounds, start=1):
            seen = len(fake.held_events)
            act()
            events = fake.held_events[seen:]
            assert len({e["id"] for e in events}) == len(events)
            # The reference: each event once, in the order Stripe created them, through the webhook's own code on one
            # connection of a fresh database (in-process, so that it costs no per-request connection).
            for event in events:
                payload = fake.event_payload(event)
                outcome = billing.handle_webhook(reference, client, app.settings, payload, fake.sign(payload),
                                                 int(time.time()))
                assert outcome in ("applied", "ignored"), (outcome, event["type"])
            # The storm, to the live app: each event 1-5 times, a few late copies of earlier rounds' events, all
            # shuffled together and posted six at a time.
            storm = [e for e in events for _ in range(rng.choices(COPIES, COPY_WEIGHTS)[0])]
            storm += rng.sample(delivered, min(5, len(delivered)))
            rng.shuffle(storm)
            copies += len(storm)
            handled_copies += sum(e["type"] in billing.HANDLED_EVENTS for e in storm)
            with concurrent.futures.ThreadPoolExecutor(max_workers=6) as pool:
                outcomes.update(pool.map(lambda e: post_event(storm_url, fake, e, answers), storm))
            delivered += events
            assert state_of(conn, users) == state_of(reference, users), f"round {number}: the storm ended elsewhere"

        final = state_of(reference, users)["users"]
        assert [final[user]["access"] for user in users] == ["active", "active", "active", "past_due", "ended",
                                                             "active", "ended", "active", "ending", "active"] * GROUPS
        grants = [sum(1 for reason, _, _ in final[user]["ledger"] if reason == "grant") for user in users]
        assert grants == [2, 2, 2, 1, 1, 1, 1, 2, 1, 1] * GROUPS
        assert all(state["balance"] == state["ledger_sum"] == 300 for state in final.values())
        handled = [e for e in delivered if e["type"] in billing.HANDLED_EVENTS]
        assert state_of(conn, users)["event_ids"] == len(handled)
        # Each handled event was applied exactly once, however many copies came in whatever order; every copy of an
        # unhandled one was acknowledged and ignored without being stored.
        assert outcomes["applied"] == len(handled), outcomes
        assert outcomes["duplicate"] == handled_copies - len(handled), outcomes
        assert outcomes["ignored"] == copies - handled_copies, outcomes
    finally:
        reference.close()
    retried = collections.Counter(code for code in answers if code != 200)
    print(f"\nwebhook storm [{conn.engine}]: {len(delivered)} events from {CUSTOMERS} customers in {len(rounds)} "
          f"rounds; {copies} copies in {len(answers)} posts ({dict(retried) or 'no'} failures retried); "
          f"outcomes {dict(outcomes)}; {time.monotonic() - started:.1f} s")
