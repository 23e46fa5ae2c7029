"""Benchmark of the owner's console: the /admin overview's server time on a big MariaDB database.

    .venv/bin/python bench/admin.py [--users 10000] [--items 1000000] [--rounds 30] [--no-http] [--no-what-if]
                                    [--seed 7] [--quick]

What: `services.admin.overview(conn, settings, catalog_raw, now)`, every figure of /admin, on a
fresh MariaDB database (unique name, dropped at the end, also after Ctrl-C or an error) filled
with --users subscribers and --items images (--quick: 1,000 and 100,000):

- users (1 % with a disputed payment on hold, 0.5 % blocked), one Google identity each (a
  Microsoft one for 20 %), a credit balance;
- subscriptions in a realistic mix (active 66 %, trialing 6 %, active cancelling at the period's
  end 8 %, past due 4 %, canceled 11 %, unpaid 2 %, paused 1 %, incomplete 2 %); 5 % of users
  also have an older, canceled subscription (the latest one per user is the one that counts);
- invoices, one per user per month of their subscription (back up to 13 months): $5 (5 % of
  users in EUR), $0 in a trial, 1.5 % refunded in full and 0.5 % in part;
- batches of 20-180 images (100 on average: --items / 100 batches) spread evenly over the last
  90 days (BATCH_HISTORY_DAYS), users picked with a skewed (Zipf-like) weight; models from
  catalog/models.json (the retired ones only before their date), resolution, ratio, quality and
  format from what each model offers, 25 % economy; the catalogue's credits (economy: half);
- their images: mostly done (delivered, and older than IMAGE_RETENTION_DAYS 7 days a quarter
  expired), 3.8 % failed (refused, upstream, timeout, invalid or economy_expired), 1 % of batches
  cancelled part way, and the latest batches still open (queued, running, waiting) as a live
  queue would have them; finished_at follows the batch's start (8 s an image now, economy after
  1-20 hours), tokens recorded on 90 % of the finished images;
- the credit ledger in full: a grant per paid invoice (and the expiry of what was left), a
  reserve (or `economy`) line per image started and a refund per failed image;
- a few economy jobs (upstream_batches), three of them open.

The fill is INSERT ... SELECT over MariaDB's sequence tables (seq_1_to_N) for the images and the
ledger, multi-row INSERTs of 2,000 rows for the rest, with every index and constraint of the
schema in place (`services.db.initdb`), then ANALYZE TABLE; its time is printed.

How: --rounds rounds (default 30, --quick 10) after one warm-up round that is not counted; each
round times, in rotating order, on one real connection (`db.Database(url).connect()`, as a
request gets):
  (a) the overview (`admin.overview` with the settings `load_settings` builds for APP_MODE=test
      and the catalogue's raw JSON, as routes/admin.py calls it);
  (b) the baseline, `SELECT COUNT(*) FROM batch_items`, in the same run;
  (c) unless --no-http: the whole page, GET /admin through the WSGI app (`app.create_app`) in
      this process, signed in as an owner (ADMIN_EMAILS and an identity whose email the provider
      verified): a connection per request, the overview, the template.
Each db function the overview calls is timed inside (a) (a perf_counter either side: under a
microsecond added), and the slowest one's SQL is shown with EXPLAIN and ANALYZE (MariaDB's
EXPLAIN with the rows really read), the next two with EXPLAIN.

What if (unless --no-what-if; bench only, on the same throwaway database, after the rounds above;
services/ and schema.sql are not touched): the three heavy queries (and the invoices' and the
subscriptions') timed as they are and with covering indexes or a rewrite (admin_images_cost
summing the items per day and batch before the join), also for today only, next to the least
a grouped pass over the items costs (items per day over the finished_at index); then daily
rollup tables of the closed days (before today, UTC) are built and the overview is timed
again, --rounds rounds against COUNT(*), with bench-only stand-ins for admin_images_cost,
admin_outcomes_by_day and admin_credits_by_day that read the closed days from the rollups and
only today from the live tables (checked to give the same figures).

Goal: p95 of the overview ≤ 300 ms at 10,000 subscribers and 1,000,000 images. p95 is the
nearest rank (the 29th of 30 samples).
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import functools
import math
import os
import random
import shlex
import signal
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from decimal import Decimal
from pathlib import Path
from urllib.parse import urlsplit

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import pymysql  # noqa: E402
from common import machine_line  # noqa: E402

from services import admin, batches, catalog, db  # noqa: E402
from services.config import load_settings  # noqa: E402

MARIADB_ADMIN = os.environ.get("TEST_MARIADB_URL", "mysql://root@127.0.0.1:3306/")
GOAL_P95_MS = 300.0
DAY = 86400
OWNER = "owner@bench.example"
CHUNK = 2000
PACE_NOW = 8  # seconds between images of a "now" batch (4 slots, ~30 s an image)
HISTORY_DAYS = 90
RETENTION_DAYS = 7
SUBSCRIPTION_MIX = (("active", 0.66), ("trialing", 0.06), ("cancelling", 0.08), ("past_due", 0.04),
                    ("canceled", 0.11), ("unpaid", 0.02), ("paused", 0.01), ("incomplete", 0.02))
# The db functions overview() calls (directly or through worker/batches): each is timed inside the overview.
TIMED = ("admin_money_by_day", "admin_images_by_day", "admin_credits_by_day", "admin_rolled_images",
         "admin_rolled_credits", "admin_subscription_states", "admin_paying_subscriptions", "admin_user_holds",
         "admin_queue_counts",
         "admin_upstream_open", "items_running", "worker_state_get")


# ----- the database ---------------------------------------------------------------------------------

def admin_statement(statement: str) -> None:
    """Run one statement on the server without a database (CREATE / DROP DATABASE)."""
    parts = urlsplit(MARIADB_ADMIN)
    connection = pymysql.connect(host=parts.hostname or "127.0.0.1", port=parts.port or 3306,
                                 user=parts.username or "root", password=parts.password or "", connect_timeout=5)
    try:
        with connection.cursor() as cursor:
            cursor.execute(statement)
    finally:
        connection.close()


def insert_rows(raw, table: str, columns: tuple[str, ...], rows: list[tuple]) -> None:
    """Multi-row INSERTs of CHUNK rows (PyMySQL's executemany joins the VALUES lists into one statement)."""
    sql = f"INSERT INTO {table} ({', '.join(columns)}) VALUES ({', '.join(['%s'] * len(columns))})"
    with raw.cursor() as cursor:
        for start in range(0, len(rows), CHUNK):
            cursor.executemany(sql, rows[start:start + CHUNK])


def run_sql(raw, sql: str, params: tuple = ()) -> int:
    """One statement with `?` placeholders on the raw PyMySQL connection; the rows it changed."""
    with raw.cursor() as cursor:
        return cursor.execute(sql.replace("%", "%%").replace("?", "%s") if params else sql, params or None)


def pick(rng: random.Random, weighted: list[tuple[str, float]]) -> str:
    """One value of (value, weight) pairs."""
    return rng.choices([value for value, _ in weighted], [weight for _, weight in weighted])[0]


# ----- the fill -----------------------------------------------------------------------------------------

def fill_people(raw, rng: random.Random, users: int, now: int) -> tuple[list[int], dict]:
    """Users, identities, balances, subscriptions, invoices and the ledger's grants; (ids that may batch, counts)."""
    user_rows, identity_rows, balance_rows, subscription_rows, invoice_rows, grant_rows = [], [], [], [], [], []
    can_batch = []
    sub_id = invoice_id = 0
    month = 30.44 * DAY
    for n in range(1, users + 1):
        state = pick(rng, list(SUBSCRIPTION_MIX))
        age = rng.uniform(1 * DAY, 14 * DAY) if state in ("trialing", "incomplete") else rng.uniform(
            20 * DAY, 400 * DAY)
        created = int(now - age)
        hold = "dispute" if rng.random() < 0.01 else None
        blocked = int(now - rng.uniform(0, 60 * DAY)) if rng.random() < 0.005 else None
        user_rows.append((n, f"Subscriber {n}", f"subscriber{n}@example.com", created, now - rng.randint(0, 30 * DAY),
                          f"cus_bench_{n}", hold, blocked, "bench: abuse" if blocked else None))
        identity_rows.append((n, "google", "https://accounts.google.com", f"g-{n}", f"subscriber{n}@example.com",
                              f"Subscriber {n}", created, now, int(rng.random() < 0.95)))
        if rng.random() < 0.2:
            identity_rows.append((n, "microsoft", "https://login.microsoftonline.com/bench/v2.0", f"m-{n}",
                                  f"subscriber{n}@outlook.example", f"Subscriber {n}", created, now, 1))
        balance_rows.append((n, rng.randint(0, 300), now))
        if rng.random() < 0.05:  # an older subscription, canceled, before the one that counts
            sub_id += 1
            subscription_rows.append((sub_id, n, f"sub_old_{n}", f"cus_bench_{n}", "canceled", "price_bench",
                                      created - 60 * DAY, created - 30 * DAY, 0, None, created - 30 * DAY,
                                      created - 60 * DAY, created - 30 * DAY))
        ended = int(now - rng.uniform(0, min(age - DAY, 200 * DAY))) if state == "canceled" else None
        periods = int(((ended or now) - created) // month) + 1
        start = int(created + (periods - 1) * month)
        end = int(start + month)
        cancelling = state == "cancelling"
        status = {"cancelling": "active"}.get(state, state)
        sub_id += 1
        subscription_rows.append((sub_id, n, f"sub_bench_{n}", f"cus_bench_{n}", status, "price_bench", start, end,
                                  int(cancelling), end if cancelling and rng.random() < 0.5 else None, ended,
                                  created, now))
        if status in ("active", "trialing", "past_due") and not blocked:
            can_batch.append(n)
        if state == "incomplete":
            continue
        euro = rng.random() < 0.05
        left = 0
        for k in range(periods):
            paid_at = int(created + k * month) + rng.randint(0, 3600)
            if paid_at > now or (state == "past_due" and k == periods - 1):
                break
            invoice_id += 1
            trial = state == "trialing" or (k == 0 and rng.random() < 0.3)
            amount = 0 if trial else 500
            refunded, refunded_at = 0, None
            if amount and (r := rng.random()) < 0.02:
                refunded, refunded_at = (500 if r < 0.015 else 250), paid_at + rng.randint(DAY, 10 * DAY)
            stripe_id = f"in_bench_{invoice_id}"
            invoice_rows.append((stripe_id, n, amount, refunded, "eur" if euro else "usd", paid_at, refunded_at,
                                 paid_at, refunded_at or paid_at))
            if left:
                grant_rows.append((n, -left, "expire", stripe_id, paid_at))
            grant_rows.append((n, 300, "grant", stripe_id, paid_at))
            left = rng.randint(0, 150)
    insert_rows(raw, "users", ("id", "display_name", "email", "created_at", "last_login_at", "stripe_customer_id",
                               "billing_hold", "blocked_at", "blocked_reason"), user_rows)
    insert_rows(raw, "identities", ("user_id", "provider", "issuer", "subject", "email", "display_name",
                                    "created_at", "last_login_at", "email_verified"), identity_rows)
    insert_rows(raw, "credit_balances", ("user_id", "balance", "updated_at"), balance_rows)
    insert_rows(raw, "subscriptions", ("id", "user_id", "stripe_subscription_id", "stripe_customer_id", "status",
                                       "price_id", "current_period_start", "current_period_end",
                                       "cancel_at_period_end", "cancel_at", "ended_at", "created_at", "updated_at"),
                subscription_rows)
    insert_rows(raw, "invoices", ("stripe_invoice_id", "user_id", "amount_paid", "amount_refunded", "currency",
                                  "paid_at", "refunded_at", "created_at", "updated_at"), invoice_rows)
    insert_rows(raw, "credit_ledger", ("user_id", "delta", "reason", "reference", "created_at"), grant_rows)
    return can_batch, {"users": users, "identities": len(identity_rows), "subscriptions": len(subscription_rows),
                       "invoices": len(invoice_rows), "ledger grants and expiries": len(grant_rows)}


def batch_choices(models: catalog.Catalog, rng: random.Random, when: int) -> dict:
    """A batch's model, resolution, ratio, quality, format and speed, as offered on that day."""
    day = datetime.datetime.fromtimestamp(when, datetime.UTC).date()
    offered = [m for m in models.models if not m.retired(day)]
    weights = {"gpt-image-2": 40, "gpt-image-2.5-flare": 12, "gpt-image-2.5-sunburst": 8, "gpt-image-2.6-flare": 14,
               "gpt-image-2.6-sunburst": 8, "gpt-image-1.5": 10, "gpt-image-1-mini": 8}
    model = rng.choices(offered, [weights.get(m.id, 5) for m in offered])[0]
    resolution = pick(rng, [(r, w) for r, w in (("1K", 65), ("2K", 25), ("4K", 10)) if r in model.resolutions])
    ratio = rng.choice(catalog.RATIOS)
    quality = pick(rng, [(q, {"low": 40, "medium": 40, "high": 15}.get(q, 2.5)) for q in model.qualities
                         if model.offers(resolution, ratio, q)])
    image_format = "png" if "png" in model.formats and rng.random() < 0.6 else model.formats[-1]
    price = model.price(resolution, ratio, quality)
    speed = "economy" if rng.random() < 0.25 else "now"
    size = model.size(resolution, ratio)
    return {"model": model.id, "resolution": resolution, "ratio": ratio, "quality": quality,
            "format": image_format, "speed": speed, "price": price,
            "credits": batches.economy_price(price) if speed == "economy" else price,
            "width": size.output[0], "height": size.output[1]}


def fill_batches(raw, rng: random.Random, models: catalog.Catalog, can_batch: list[int], items: int,
                 now: int) -> list[tuple]:
    """The batches, and a temporary plan of their items (first and last id, open and cancelled positions)."""
    count = max(1, items // 100)
    sizes = [items // count] * count
    sizes[-1] += items - sum(sizes)
    for i in range(0, count - 1, 2):  # 20-180 images, the total kept
        change = min(rng.randint(-80, 80), sizes[i + 1] - 20, 180 - sizes[i])
        change = max(change, 20 - sizes[i], sizes[i + 1] - 180)
        sizes[i] += change
        sizes[i + 1] -= change
    weights = [1 / (rank + 1) ** 0.7 for rank in range(len(can_batch))]
    owners = rng.choices(can_batch, weights, k=count)
    open_count = max(3, count // 500)
    starts = sorted(rng.uniform(now - HISTORY_DAYS * DAY, now - 2 * 3600) for _ in range(count - open_count))
    batch_rows, plan_rows = [], []
    first = 1
    for n in range(1, count + 1):
        size = sizes[n - 1]
        is_open = n > count - open_count
        when = int(starts[n - 1]) if not is_open else now
        choice = batch_choices(models, rng, when)
        open_from, cancel_from, delay, status, reason = size, size, 0, "done", None
        if is_open:
            if choice["speed"] == "economy":
                open_from, when = 0, now - rng.randint(600, 4 * 3600)
            else:
                open_from = rng.randint(0, size - 1)
                when = now - open_from * PACE_NOW - rng.randint(30, 300)
            status = "active"
            if n == count - open_count + 1 and choice["speed"] == "now":
                status, reason = "paused", "no_credits"
        elif choice["speed"] == "economy":
            delay = min(rng.randint(3600, 20 * 3600), now - when - size - 600)
        elif rng.random() < 0.01:
            cancel_from, status = rng.randint(1, size - 1), "cancelled"
        batch_rows.append((n, owners[n - 1], f"bench-{n}", status, reason, choice["model"], choice["ratio"],
                           choice["quality"], choice["format"], choice["resolution"], choice["speed"], "en",
                           choice["width"], choice["height"], "", size, choice["credits"], when,
                           now if is_open else when + delay + size * PACE_NOW))
        plan_rows.append((n, first, first + size - 1, when, choice["credits"], choice["price"], choice["speed"],
                          status, open_from, cancel_from, delay, choice["format"], choice["width"],
                          choice["height"]))
        first += size
    insert_rows(raw, "batches", ("id", "user_id", "request_token", "status", "pause_reason", "model", "ratio",
                                 "quality", "image_format", "resolution", "speed", "lang", "width", "height", "style",
                                 "item_count", "credits_per_item", "created_at", "updated_at"), batch_rows)
    return plan_rows


ITEMS_SQL = """
INSERT INTO batch_items (id, batch_id, position, prompt, file_name, status, attempts, charge, charged, lease_until,
  call_until, worker, error_code, error_message, request_id, result_path, result_bytes, result_width, result_height,
  input_tokens, output_tokens, created_at, started_at, finished_at)
SELECT y.id, y.batch_id, y.pos,
  CONCAT('A watercolour of a lighthouse at dusk, gulls over the cliffs, soft light, variation ', y.id),
  CONCAT(LPAD(y.pos + 1, 4, '0'), '.', y.fmt), y.st, IF(y.st IN ('queued', 'cancelled'), 0, 1), 1,
  IF(y.st IN ('done', 'delivered', 'expired', 'running', 'waiting'), y.credits, 0),
  IF(y.st = 'running', {now} + 120, 0), IF(y.st = 'running', {now} + 90, 0), IF(y.st = 'running', 'bench-1', NULL),
  y.err, IF(y.err IS NULL, NULL, CONCAT('bench: ', y.err)),
  IF(y.st IN ('queued', 'waiting', 'cancelled'), NULL, CONCAT('req_', HEX(y.h), '_', y.id)),
  IF(y.st = 'done', CONCAT(y.batch_id, '/', y.pos + 1, '.', y.fmt), NULL),
  IF(y.done, 200000 + y.h % 900000, NULL), IF(y.done, y.w, NULL), IF(y.done, y.ht, NULL),
  IF(y.done AND y.h % 10 <> 0, 30 + y.h % 250, NULL),
  IF(y.done AND y.h % 10 <> 0, y.price * 160 + y.h % 97, NULL),
  y.c, CASE WHEN y.st = 'running' THEN {now} - 20 WHEN y.st IN ('queued', 'waiting', 'cancelled') THEN NULL
            ELSE y.t - 25 END,
  IF(y.st IN ('queued', 'waiting', 'running'), NULL, y.t)
FROM (
  SELECT x.*, x.st IN ('done', 'delivered', 'expired') AS done,
    IF(x.st = 'failed', ELT(1 + (x.h DIV 1000) % 10, 'refused', 'refused', 'refused', 'upstream', 'upstream',
       'upstream', 'upstream', 'timeout', 'timeout', IF(x.speed = 'economy', 'economy_expired', 'invalid')),
       NULL) AS err
  FROM (
    SELECT w.*, CASE
      WHEN w.pos >= w.open_from THEN IF(w.speed = 'economy', 'waiting',
           IF(w.pos < w.open_from + 2 AND w.bstatus = 'active', 'running', 'queued'))
      WHEN w.pos >= w.cancel_from THEN 'cancelled'
      WHEN w.h % 1000 < 38 THEN 'failed'
      WHEN w.t < {now} - {retention} THEN IF(w.h % 4 = 0, 'expired', 'delivered')
      ELSE IF(w.h % 3 = 0, 'done', 'delivered') END AS st
    FROM (
      SELECT s.seq AS id, m.id AS batch_id, s.seq - m.lo AS pos, CRC32(s.seq) AS h, m.created_at AS c, m.credits,
        m.price, m.speed, m.bstatus, m.open_from, m.cancel_from, m.fmt, m.w, m.ht,
        m.created_at + m.delay + IF(m.speed = 'economy', 1, {pace}) * (s.seq - m.lo) + 20 + CRC32(s.seq) % 15 AS t
      FROM bench_plan m JOIN seq_1_to_{items} s ON s.seq BETWEEN m.lo AND m.hi
      WHERE m.id BETWEEN ? AND ?
    ) w
  ) x
) y
"""

LEDGER_SQL = """
INSERT INTO credit_ledger (user_id, delta, reason, reference, created_at)
SELECT b.user_id, -i.charged, IF(b.speed = 'economy', 'economy', 'reserve'), CONCAT('item:', i.id, ':1'),
  COALESCE(i.started_at, i.created_at)
FROM batch_items i JOIN batches b ON b.id = i.batch_id
WHERE i.batch_id BETWEEN ? AND ? AND i.status NOT IN ('queued', 'held', 'cancelled', 'failed')
UNION ALL
SELECT b.user_id, -b.credits_per_item, IF(b.speed = 'economy', 'economy', 'reserve'), CONCAT('item:', i.id, ':1'),
  i.started_at
FROM batch_items i JOIN batches b ON b.id = i.batch_id WHERE i.batch_id BETWEEN ? AND ? AND i.status = 'failed'
UNION ALL
SELECT b.user_id, b.credits_per_item, 'refund', CONCAT('item:', i.id, ':1'), i.finished_at
FROM batch_items i JOIN batches b ON b.id = i.batch_id WHERE i.batch_id BETWEEN ? AND ? AND i.status = 'failed'
"""


def fill(url: str, users: int, items: int, now: int, seed: int) -> dict:
    """Fill the database; the row counts and seconds per step."""
    rng = random.Random(seed)
    models = catalog.load()
    connection = db.Database(url).connect()
    raw = connection.raw
    steps: dict[str, float] = {}
    counts: dict[str, int] = {}
    try:
        started = time.perf_counter()
        can_batch, counts = fill_people(raw, rng, users, now)
        steps["users, identities, subscriptions, invoices, grants"] = time.perf_counter() - started
        started = time.perf_counter()
        plan = fill_batches(raw, rng, models, can_batch, items, now)
        run_sql(raw, "CREATE TEMPORARY TABLE bench_plan (id BIGINT PRIMARY KEY, lo BIGINT, hi BIGINT, "
                     "created_at BIGINT, credits INT, price INT, speed VARCHAR(8), bstatus VARCHAR(16), "
                     "open_from INT, cancel_from INT, delay INT, fmt VARCHAR(8), w INT, ht INT) ENGINE=MEMORY")
        insert_rows(raw, "bench_plan", ("id", "lo", "hi", "created_at", "credits", "price", "speed", "bstatus",
                                        "open_from", "cancel_from", "delay", "fmt", "w", "ht"), plan)
        counts["batches"] = len(plan)
        steps["batches"] = time.perf_counter() - started
        started = time.perf_counter()
        sql = ITEMS_SQL.format(now=now, retention=RETENTION_DAYS * DAY, pace=PACE_NOW, items=items)
        step = 1000
        for lo in range(1, len(plan) + 1, step):
            run_sql(raw, sql, (lo, lo + step - 1))
            print(f"<!-- images: batches {lo}-{min(lo + step - 1, len(plan))} of {len(plan)} in "
                  f"{time.perf_counter() - started:.0f} s -->", flush=True)
        counts["images"] = connection.scalar("SELECT COUNT(*) AS n FROM batch_items")
        steps["images (batch_items)"] = time.perf_counter() - started
        started = time.perf_counter()
        ledger = 0
        for lo in range(1, len(plan) + 1, step):
            ledger += run_sql(raw, LEDGER_SQL, (lo, lo + step - 1) * 3)
        counts["ledger lines per image (reserve, economy, refund)"] = ledger
        steps["ledger lines per image"] = time.perf_counter() - started
        started = time.perf_counter()
        jobs = [(rng.choice(["gpt-image-2", "gpt-image-2.6-flare"]), "completed", f"batch_bench_{n}", 50, 50, 0,
                 now - n * 3600, now - n * 3600, now - n * 3600) for n in range(1, 201)]
        jobs += [("gpt-image-2", status, f"batch_bench_open_{status}", 100, 10, 0, now, now - 1800, now)
                 for status in ("validating", "in_progress", "finalizing")]
        insert_rows(raw, "upstream_batches", ("model", "status", "openai_batch_id", "total", "completed", "failed",
                                              "polled_at", "created_at", "updated_at"), jobs)
        counts["economy jobs"] = len(jobs)
        with raw.cursor() as cursor:
            for table in ("users", "identities", "subscriptions", "invoices", "credit_ledger", "batches",
                          "batch_items", "upstream_batches"):
                cursor.execute(f"ANALYZE TABLE {table}")
                cursor.fetchall()
        steps["ANALYZE TABLE"] = time.perf_counter() - started
    finally:
        connection.close()
    return {"steps": steps, "counts": counts}


# ----- the measurement -----------------------------------------------------------------------------

class Recorder:
    """Times each db function the overview calls (while `round` is set), with the SQL and parameters it ran."""

    def __init__(self):
        self.round: int | None = None  # the round being recorded, None when not recording
        self.calls: list[tuple[int, str, float, int, str, tuple]] = []  # (round, function, s, rows, sql, params)
        self.last_sql: tuple[str, tuple] = ("", ())
        self.originals: dict[str, Callable] = {}

    def install(self) -> None:
        """Wrap the functions in services.db (admin.py, worker.py and batches.py look them up there at call time)."""
        self.originals = {name: getattr(db, name) for name in TIMED}
        for name, original in self.originals.items():
            setattr(db, name, self._wrap(name, original))

    def uninstall(self) -> None:
        """Put back the functions install() found."""
        for name, original in self.originals.items():
            setattr(db, name, original)

    def _wrap(self, name: str, original: Callable) -> Callable:
        @functools.wraps(original)
        def timed(*args, **kwargs):
            if self.round is None:
                return original(*args, **kwargs)
            started = time.perf_counter()
            result = original(*args, **kwargs)
            elapsed = time.perf_counter() - started
            self.calls.append((self.round, name, elapsed, len(result) if isinstance(result, list) else 1,
                               *self.last_sql))
            return result

        return timed

    def watch(self, conn: db.Connection) -> None:
        """Remember the SQL each statement of this connection runs."""
        run = conn._run

        def remembering(sql, params=()):
            self.last_sql = (sql, tuple(params))
            return run(sql, params)

        conn._run = remembering


def percentile(values: list[float], share: float) -> float:
    """Nearest-rank percentile."""
    ordered = sorted(values)
    return ordered[max(0, math.ceil(share * len(ordered)) - 1)]


def ms(seconds: float) -> str:
    """Seconds as milliseconds, one decimal."""
    return f"{seconds * 1000:.1f}"


def bench_settings(url: str, var_dir: Path):
    """The settings as the app builds them in test mode, without a .env file or the environment."""
    return load_settings({"APP_MODE": "test", "DATABASE_URL": url, "VAR_DIR": str(var_dir), "ADMIN_EMAILS": OWNER,
                          "WORKER_LAUNCH": "none", "MODEL_CATALOG": str(catalog.DEFAULT_FILE)},
                         environ={}, env_file=var_dir / "no.env")


def add_owner(conn: db.Connection, now: int) -> int:
    """The owner: a user with a Google identity whose email the provider verified (ADMIN_EMAILS lists it)."""
    owner_id = db.user_insert(conn, "Owner", OWNER, now)
    conn.execute("INSERT INTO identities (user_id, provider, issuer, subject, email, display_name, created_at, "
                 "last_login_at, email_verified) VALUES (?, 'google', 'https://accounts.google.com', 'owner', ?, "
                 "'Owner', ?, ?, 1)", (owner_id, OWNER, now, now))
    return owner_id


def page_getter(settings, conn: db.Connection) -> Callable[[], None]:
    """GET /admin as a signed-in owner, through the app in this process (werkzeug's client, read whole)."""
    from werkzeug.test import Client

    from app import create_app
    from services import sessions

    app = create_app(settings=settings)
    session = sessions.create(conn, settings, int(time.time()), user_id=add_owner(conn, int(time.time())))
    client = Client(app)
    client.set_cookie(sessions.cookie_name(settings), session.token)
    client.set_cookie("lang", "en")

    def page() -> None:
        response = client.get("/admin", buffered=True)
        if response.status_code != 200 or b"<html" not in response.data[:500].lower():
            raise SystemExit(f"GET /admin answered {response.status_code}")
        response.close()

    return page


def time_rounds(kinds: list[tuple[str, Callable[[], object]]], rounds: int,
                recorder: Recorder) -> dict[str, list[float]]:
    """One warm-up call of each (not counted), then `rounds` rounds in rotating order; the overview's calls recorded."""
    times: dict[str, list[float]] = {kind: [] for kind, _ in kinds}
    for _, call in kinds:
        call()
    for n in range(rounds):
        for kind, call in kinds[n % len(kinds):] + kinds[:n % len(kinds)]:
            recorder.round = n if kind == "overview" else None
            started = time.perf_counter()
            call()
            times[kind].append(time.perf_counter() - started)
            recorder.round = None
    return times


LABELS = {"overview": "admin.overview(...): the figures' server time",
          "count": "baseline: SELECT COUNT(*) FROM batch_items",
          "http": "GET /admin, the whole page (WSGI in process: connection, session, overview, template)"}


def print_times(times: dict[str, list[float]], title: str) -> None:
    """p50, p95, max and min of each kind, and the overview against COUNT(*)."""
    print(f"\n## {title}\n")
    print("| what | p50 ms | p95 ms | max ms | min ms |")
    print("|---|---|---|---|---|")
    for kind, values in times.items():
        print(f"| {LABELS[kind]} | {ms(statistics.median(values))} | {ms(percentile(values, 0.95))} | "
              f"{ms(max(values))} | {ms(min(values))} |")
    overview, count = times["overview"], times["count"]
    p95 = percentile(overview, 0.95)
    print(f"\nOverview ÷ COUNT(*): **{statistics.median(overview) / statistics.median(count):.1f}×** at p50, "
          f"**{p95 / percentile(count, 0.95):.1f}×** at p95. Goal p95 ≤ {GOAL_P95_MS:.0f} ms: "
          f"**{'met' if p95 * 1000 <= GOAL_P95_MS else 'missed'}** ({ms(p95)} ms).")


def print_queries(overview: list[float], calls: list[tuple], rounds: int) -> dict[str, tuple[float, str, tuple]]:
    """Each db function's time inside the overview, slowest first; returns {function: (p50, its SQL, params)}."""
    per_call: dict[str, list[float]] = {}
    per_round: dict[str, list[float]] = {}
    rows: dict[str, int] = {}
    sqls: dict[str, tuple[str, tuple]] = {}
    spent = [0.0] * rounds
    for n, name, elapsed, n_rows, sql, params in calls:
        per_call.setdefault(name, []).append(elapsed)
        rows[name], sqls[name] = n_rows, (sql, params)
        spent[n] += elapsed
    for name in per_call:
        sums = [0.0] * rounds
        for n, other, elapsed, *_ in calls:
            if other == name:
                sums[n] += elapsed
        per_round[name] = sums
    print("\n| db function | calls per overview | rows returned | p50 ms | max ms | p50 share of the overview |")
    print("|---|---|---|---|---|---|")
    overview_p50 = statistics.median(overview)
    for name in sorted(per_round, key=lambda k: -statistics.median(per_round[k])):
        p50 = statistics.median(per_round[name])
        print(f"| {name} | {len(per_call[name]) // rounds} | {rows[name]} | {ms(p50)} | {ms(max(per_round[name]))} "
              f"| {p50 / overview_p50 * 100:.1f} % |")
    rest = [overview[n] - spent[n] for n in range(rounds)]
    print(f"| (the rest: Python, the catalogue's prices, the log files) | | | {ms(statistics.median(rest))} | "
          f"{ms(max(rest))} | {statistics.median(rest) / overview_p50 * 100:.1f} % |")
    return {name: (statistics.median(per_round[name]), *sqls[name]) for name in per_round}


def print_explain(conn: db.Connection, sql: str, params: tuple, verbs: tuple[str, ...] = ("EXPLAIN",)) -> None:
    """EXPLAIN (and ANALYZE: the rows really read) of one query, as Markdown tables."""
    for verb in verbs:
        rows = conn.all(f"{verb} {sql}", params)
        columns = list(rows[0].keys())
        print(f"\n{verb}:\n")
        print("| " + " | ".join(columns) + " |")
        print("|" + "---|" * len(columns))
        for row in rows:
            print("| " + " | ".join("" if row[c] is None else str(row[c]) for c in columns) + " |")


# ----- what if (bench only) -----------------------------------------------------------------------

WHAT_IF_INDEXES = (
    ("batch_items", "ix_bench_figures",
     "finished_at, status, error_code, batch_id, charged, input_tokens, output_tokens"),
    ("credit_ledger", "ix_bench_ledger", "created_at, reason, delta"),
    ("invoices", "ix_bench_money", "paid_at, currency, amount_paid, amount_refunded"))
STATES_SQL = (
    "SELECT s.status, CASE WHEN s.cancel_at_period_end = 1 OR s.cancel_at IS NOT NULL THEN 1 ELSE 0 END AS cancelling, "
    "COUNT(*) AS n FROM subscriptions s JOIN (SELECT user_id, MAX(id) AS id FROM subscriptions GROUP BY user_id) "
    "latest ON latest.id = s.id GROUP BY s.status, CASE WHEN s.cancel_at_period_end = 1 OR s.cancel_at IS NOT NULL "
    "THEN 1 ELSE 0 END")
COST_PER_BATCH_SQL = (
    "SELECT x.day, b.model, b.speed, SUM(x.images) AS images, SUM(x.credits) AS credits, "
    "SUM(x.input_tokens) AS input_tokens, SUM(x.output_tokens) AS output_tokens, "
    "SUM(x.estimated_credits) AS estimated_credits FROM (SELECT i.finished_at - i.finished_at % 86400 AS day, "
    "i.batch_id, COUNT(*) AS images, SUM(i.charged) AS credits, SUM(i.input_tokens) AS input_tokens, "
    "SUM(i.output_tokens) AS output_tokens, SUM(CASE WHEN i.output_tokens IS NULL THEN i.charged ELSE 0 END) "
    "AS estimated_credits FROM batch_items i WHERE i.finished_at >= ? AND i.status IN ('done', 'delivered', "
    "'expired') GROUP BY i.finished_at - i.finished_at % 86400, i.batch_id) x JOIN batches b ON b.id = x.batch_id "
    "GROUP BY x.day, b.model, b.speed")
FLOOR_SQL = ("SELECT finished_at - finished_at % 86400 AS day, COUNT(*) AS n FROM batch_items WHERE finished_at >= ? "
             "GROUP BY finished_at - finished_at % 86400")
ROLLUP_SQL = (
    "CREATE TABLE bench_rollup_items (day BIGINT NOT NULL, model VARCHAR(64) NOT NULL, speed VARCHAR(8) NOT NULL, "
    "status VARCHAR(16) NOT NULL, error_code VARCHAR(32) NOT NULL, images INT NOT NULL, credits BIGINT NOT NULL, "
    "input_tokens BIGINT NULL, output_tokens BIGINT NULL, estimated_credits BIGINT NOT NULL, "
    "PRIMARY KEY (day, model, speed, status, error_code))",
    "INSERT INTO bench_rollup_items SELECT i.finished_at - i.finished_at % 86400, b.model, b.speed, i.status, "
    "COALESCE(i.error_code, ''), COUNT(*), SUM(i.charged), SUM(i.input_tokens), SUM(i.output_tokens), "
    "SUM(CASE WHEN i.output_tokens IS NULL THEN i.charged ELSE 0 END) FROM batch_items i JOIN batches b "
    "ON b.id = i.batch_id WHERE i.finished_at < ? AND i.status IN ('done', 'delivered', 'expired', 'failed') "
    "GROUP BY 1, 2, 3, 4, 5",
    "CREATE TABLE bench_rollup_ledger (day BIGINT NOT NULL, reason VARCHAR(32) NOT NULL, positive SMALLINT NOT NULL, "
    "delta BIGINT NOT NULL, PRIMARY KEY (day, reason, positive))",
    "INSERT INTO bench_rollup_ledger SELECT created_at - created_at % 86400, reason, delta > 0, SUM(delta) "
    "FROM credit_ledger WHERE created_at < ? GROUP BY 1, 2, 3",
)
ROLLUP_READS = {
    "admin_images_cost": "SELECT day, model, speed, SUM(images) AS images, SUM(credits) AS credits, "
                         "SUM(input_tokens) AS input_tokens, SUM(output_tokens) AS output_tokens, "
                         "SUM(estimated_credits) AS estimated_credits FROM bench_rollup_items WHERE day >= ? AND "
                         "day < ? AND status IN ('done', 'delivered', 'expired') GROUP BY day, model, speed",
    "admin_outcomes_by_day": "SELECT day, status, NULLIF(error_code, '') AS error_code, SUM(images) AS n "
                             "FROM bench_rollup_items WHERE day >= ? AND day < ? GROUP BY day, status, error_code",
    "admin_credits_by_day": "SELECT day, reason, SUM(delta) AS delta FROM bench_rollup_ledger WHERE day >= ? AND "
                            "day < ? GROUP BY day, reason, positive",
}
COMPARED = ("subscribers", "mrr_cents", "months", "per_model", "revenue_per_day", "cost_per_day", "outcomes")


def same_rows(a: list[dict], b: list[dict]) -> bool:
    """The same rows in any order (numbers compared as integers)."""
    def norm(rows):
        return sorted((tuple(int(v) if isinstance(v, int | Decimal) else v for v in row.values()) for row in rows),
                      key=repr)
    return norm(a) == norm(b)


def median_of(call: Callable[[], object], repeats: int) -> tuple[float, object]:
    """The median seconds of `repeats` calls after one warm-up call, and the warm-up's result."""
    result = call()
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        call()
        times.append(time.perf_counter() - started)
    return statistics.median(times), result


def rollup_versions(today: int) -> dict[str, Callable]:
    """Stand-ins for the three heavy db functions: closed days from the rollup tables, today from the live rows."""
    made = {}
    for name, sql in ROLLUP_READS.items():
        live = getattr(db, name)

        def version(conn, since, _sql=sql, _live=live):
            return conn.all(_sql, (since, today)) + _live(conn, max(since, today))

        made[name] = functools.wraps(live)(version)
    return made


def what_if(conn: db.Connection, settings, catalog_raw: dict, rounds: int, repeats: int) -> None:
    """Try indexes, a rewrite and daily rollups on the throwaway database; print their times and the checks."""
    now = int(time.time())
    today = admin.day_start(now)
    chart_from = today - (admin.CHART_DAYS - 1) * DAY
    since = min(admin.month_start(now, admin.MONTHS - 1), chart_from)
    print("\n## What if (bench only, on this throwaway database; services/ and schema.sql untouched)\n")
    print(f"Each time is the median of {repeats} runs after one warm-up run.\n")
    print("| query | as in services/db.py, ms | what if | ms | same rows |")
    print("|---|---|---|---|---|")
    def run(call: Callable[[], object]) -> tuple[float, object]:
        return median_of(call, repeats)

    cost = run(lambda: db.admin_images_cost(conn, since))
    outcomes = run(lambda: db.admin_outcomes_by_day(conn, chart_from))
    ledger = run(lambda: db.admin_credits_by_day(conn, since))
    money = run(lambda: db.admin_money_by_day(conn, since))
    states = run(lambda: db.admin_subscription_states(conn, now))
    cost_today = run(lambda: db.admin_images_cost(conn, today))
    ledger_today = run(lambda: db.admin_credits_by_day(conn, today))
    rows = [("admin_images_cost", cost, "items summed per (day, batch) before the join (no new index)",
             run(lambda: conn.all(COST_PER_BATCH_SQL, (since,)))),
            ("admin_images_cost, today only (what rollups leave live)", cost_today, "the same rewrite",
             run(lambda: conn.all(COST_PER_BATCH_SQL, (today,)))),
            ("admin_subscription_states", states, "the latest subscriptions found by a grouped derived table",
             run(lambda: conn.all(STATES_SQL)))]
    started = time.perf_counter()
    for table, name, columns in WHAT_IF_INDEXES:
        conn.execute(f"CREATE INDEX {name} ON {table} ({columns})")
    built = time.perf_counter() - started
    conn.all("ANALYZE TABLE batch_items, credit_ledger, invoices")
    figures, ledger_index, invoices_index = (f"+ index {table} ({columns})" for table, _, columns in WHAT_IF_INDEXES)
    rows += [("admin_images_cost", cost, figures, run(lambda: db.admin_images_cost(conn, since))),
             ("admin_images_cost", cost, "+ that index, and the rewrite above",
              run(lambda: conn.all(COST_PER_BATCH_SQL, (since,)))),
             ("admin_outcomes_by_day", outcomes, "+ that index",
              run(lambda: db.admin_outcomes_by_day(conn, chart_from))),
             ("admin_credits_by_day", ledger, ledger_index, run(lambda: db.admin_credits_by_day(conn, since))),
             ("admin_credits_by_day, today only", ledger_today, "+ that index",
              run(lambda: db.admin_credits_by_day(conn, today))),
             ("admin_money_by_day", money, invoices_index, run(lambda: db.admin_money_by_day(conn, since)))]
    floor = run(lambda: conn.all(FLOOR_SQL, (since,)))
    for name, (before, expected), change, (after, found) in rows:
        print(f"| {name} | {ms(before)} | {change} | {ms(after)} | {'yes' if same_rows(expected, found) else 'NO'} |")
    print(f"| (floor: items per day over that index, nothing else) | | `{FLOOR_SQL}` | {ms(floor[0])} | |")
    print(f"\nThe {len(WHAT_IF_INDEXES)} indexes took {built:.1f} s to build (then dropped again).")
    for table, name, _ in WHAT_IF_INDEXES:
        conn.execute(f"DROP INDEX {name} ON {table}")

    started = time.perf_counter()
    for sql in ROLLUP_SQL:
        conn.execute(sql, (today,) if "?" in sql else ())
    conn.execute("CREATE INDEX ix_bench_ledger_created ON credit_ledger (created_at)")
    built = time.perf_counter() - started
    counts = [conn.scalar(f"SELECT COUNT(*) AS n FROM {t}") for t in ("bench_rollup_items", "bench_rollup_ledger")]
    originals = {name: getattr(db, name) for name in ROLLUP_READS}
    plain = admin.overview(conn, settings, catalog_raw, now)
    recorder = Recorder()
    try:
        for name, version in rollup_versions(today).items():
            setattr(db, name, version)
        rolled = admin.overview(conn, settings, catalog_raw, now)
        same = all(plain[key] == rolled[key] for key in COMPARED)
        recorder.watch(conn)
        recorder.install()
        times = time_rounds([("overview", lambda: admin.overview(conn, settings, catalog_raw, int(time.time()))),
                             ("count", lambda: conn.scalar("SELECT COUNT(*) AS n FROM batch_items"))],
                            rounds, recorder)
    finally:
        recorder.uninstall()
        for name, original in originals.items():
            setattr(db, name, original)
    print(f"\nDaily rollups of the closed days (before today, UTC): {counts[0]:,} rows of images per day, model, "
          f"speed, status and failure, {counts[1]:,} rows of the ledger per day, reason and sign, built in "
          f"{built:.1f} s with an index credit_ledger (created_at) for today's lines. The overview then reads the "
          "closed days from the rollups and only today from batch_items and credit_ledger (bench-only stand-ins for "
          "admin_images_cost, admin_outcomes_by_day and admin_credits_by_day). Same figures as without rollups "
          f"(subscribers, MRR, months, per model, the 30 days): **{'yes' if same else 'NO'}**.")
    print_times(times, f"What if: the overview with daily rollups ({rounds} rounds, rotating with COUNT(*))")
    print_queries(times["overview"], recorder.calls, rounds)


# ----- main ---------------------------------------------------------------------------------------------

def main(argv: list[str] | None = None) -> int:
    """Fill a fresh MariaDB database, time the overview against COUNT(*), print Markdown tables, drop it."""
    argv = sys.argv[1:] if argv is None else argv
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--users", type=int, default=10_000, help="subscribers (default 10,000)")
    parser.add_argument("--items", type=int, default=1_000_000, help="images (batch_items, default 1,000,000)")
    parser.add_argument("--rounds", type=int, default=30, help="timed rounds (default 30)")
    parser.add_argument("--seed", type=int, default=7, help="random seed of the fill (default 7)")
    parser.add_argument("--no-http", action="store_true", help="do not time the whole page (GET /admin)")
    parser.add_argument("--no-what-if", action="store_true", help="do not try the indexes and rollups afterwards")
    parser.add_argument("--quick", action="store_true", help="1,000 users, 100,000 images, 10 rounds")
    args = parser.parse_args(argv)
    if args.quick:
        args.users, args.items, args.rounds = 1_000, 100_000, 10
    if args.users < 10 or args.items < 1000 or args.rounds < 1:
        parser.error("at least 10 users, 1,000 images and 1 round")
    command = ".venv/bin/python bench/admin.py " + shlex.join(argv)
    name = f"iib_bench_admin_{uuid.uuid4().hex[:10]}"
    url = MARIADB_ADMIN.rstrip("/") + "/" + name
    print("# Owner's console: the overview's server time\n")
    print(f"Date and machine: {machine_line()}.  ")
    print(f"Command: `{command.strip()}`  ")
    print(f"Database: MariaDB at {MARIADB_ADMIN}, a fresh database {name} (dropped at the end).", flush=True)

    def stop(signum, frame):
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, stop)
    admin_statement(f"CREATE DATABASE `{name}` CHARACTER SET utf8mb4 COLLATE utf8mb4_unicode_ci")
    conn = None
    try:
        db.initdb(db.Database(url))
        started = time.perf_counter()
        filled = fill(url, args.users, args.items, int(time.time()), args.seed)
        print(f"\n## Fill: {time.perf_counter() - started:.0f} s\n")
        print("| step | seconds |")
        print("|---|---|")
        for step, seconds in filled["steps"].items():
            print(f"| {step} | {seconds:.1f} |")
        print("\n| rows | count |")
        print("|---|---|")
        for what, n in filled["counts"].items():
            print(f"| {what} | {n:,} |")
        with tempfile.TemporaryDirectory(prefix="iib-bench-admin-") as temp:
            settings = bench_settings(url, Path(temp))
            catalog_raw = catalog.read_json(catalog.DEFAULT_FILE)
            conn = db.Database(url).connect()
            kinds: list[tuple[str, Callable[[], object]]] = [
                ("overview", lambda: admin.overview(conn, settings, catalog_raw, int(time.time()))),
                ("count", lambda: conn.scalar("SELECT COUNT(*) AS n FROM batch_items"))]
            if not args.no_http:
                kinds.append(("http", page_getter(settings, conn)))
            # The first overview on a database rolls every closed day up once (later ones only a new day).
            started = time.perf_counter()
            days = admin.rollup(conn, int(time.time()))
            print(f"\n## The one-time rollup: {days} closed days in {time.perf_counter() - started:.1f} s\n")
            recorder = Recorder()
            recorder.watch(conn)
            recorder.install()
            try:
                times = time_rounds(kinds, args.rounds, recorder)
            finally:
                recorder.uninstall()
            print_times(times, f"The overview against COUNT(*) ({args.rounds} rounds, rotating order, after one "
                               "warm-up round, one connection)")
            if args.no_http:
                print("\nThe whole page (GET /admin) was not timed (--no-http).")
            print("\n### Each query of the overview (timed inside the overview rounds)")
            queries = print_queries(times["overview"], recorder.calls, args.rounds)
            ranked = sorted(queries, key=lambda k: -queries[k][0])
            print(f"\n### The slowest query: {ranked[0]}\n")
            print(f"```sql\n{queries[ranked[0]][1]}\n```\n\nParameters: {queries[ranked[0]][2]}")
            print_explain(conn, *queries[ranked[0]][1:], verbs=("EXPLAIN", "ANALYZE"))
            for other in ranked[1:3]:
                print(f"\n### The next slowest: {other}\n")
                print(f"```sql\n{queries[other][1]}\n```")
                print_explain(conn, *queries[other][1:])
            if not args.no_what_if and hasattr(db, "admin_images_cost"):  # the figures before the rollups existed
                what_if(conn, settings, catalog_raw, args.rounds, 3 if args.quick else 5)
    finally:
        if conn is not None:
            conn.close()
        with contextlib.suppress(pymysql.err.MySQLError):
            admin_statement(f"DROP DATABASE IF EXISTS `{name}`")
        signal.signal(signal.SIGTERM, previous)
    print(f"\nLoad average at the end: {' '.join(f'{v:.2f}' for v in os.getloadavg())}.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
