"""The owner's console: who is an owner, the figures of the overview, subscribers, and the support actions.

An owner is a signed-in user one of whose sign-ins carries an email the provider verified and
ADMIN_EMAILS lists. Every figure is computed by a few grouped SQL queries over a bounded time
range (days bucketed in SQL as `t - t % 86400`, UTC), never by a loop over rows, so the
overview costs the same with ten subscribers or ten thousand. Money is kept in the currency's
smallest unit (cents) as Stripe reports it; upstream cost is USD from the recorded token usage
and the catalogue's token prices (economy images at OpenAI's half price), or, for an image
without usage, its credits times the catalogue's `credit_usd` (what a credit is priced to
cover). Stripe's fees are the configured percentage plus the fixed fee per paid invoice.

Support actions (adjust credits, retry failed images on the house, block and unblock, show a
refused prompt) each take a reason and write an `admin_audit` row and an `ADMIN:` log line with
who did it. No bottle here; the SQL is in db.py.
"""

from __future__ import annotations

import calendar
import csv
import dataclasses
import datetime
import io
import logging
from collections.abc import Iterable
from decimal import Decimal
from pathlib import Path

from services import batches, credits, db, economy, worker
from services.config import Settings

log = logging.getLogger(__name__)

DAY = 86400
CHART_DAYS = 30
MONTHS = 12  # the monthly figures (and their CSV) go back this far
REASON_MAX = 500
ADJUST_MAX = 100_000  # credits one adjustment may grant or withdraw
OPERATOR_LINES = 20  # the last OPERATOR events shown
OPERATOR_TAIL_BYTES = 256 * 1024  # read at most this much of the end of each log file
SUBSCRIPTION_STATES = ("active", "trialing", "cancelling", "past_due", "unpaid", "paused", "disputed", "blocked")
OUTCOMES = ("done", "refused", "upstream", "timeout", "invalid", "economy_expired", "other")


class AdminError(Exception):
    """A support action that cannot be done; `code` picks the message."""

    def __init__(self, code: str, **values):
        super().__init__(code)
        self.code = code
        self.values = values


def is_owner(conn: db.Connection, settings: Settings, user: dict | None) -> bool:
    """True when the user signed in with an email a provider verified and ADMIN_EMAILS lists it."""
    if not user or not settings.admin_emails:
        return False
    emails = user["verified_emails"] if "verified_emails" in user else db.user_verified_emails(conn, user["id"])
    return any(email in settings.admin_emails for email in emails)


# --- the overview ------------------------------------------------------------------------------------

def day_start(t: int) -> int:
    """The UTC midnight at or before a time."""
    return t - t % DAY


def month_start(t: int, back: int = 0) -> int:
    """The UTC start of the month holding `t`, or of the month `back` months before it."""
    day = datetime.datetime.fromtimestamp(t, datetime.UTC).date().replace(day=1)
    year, month = divmod(day.year * 12 + day.month - 1 - back, 12)
    return calendar.timegm((year, month + 1, 1, 0, 0, 0))


def _month_of(t: int) -> str:
    return datetime.datetime.fromtimestamp(t, datetime.UTC).strftime("%Y-%m")


@dataclasses.dataclass
class Money:
    """Revenue of a period: amounts paid and refunded (smallest unit) by currency, and paid invoices."""

    paid: dict[str, int] = dataclasses.field(default_factory=dict)
    refunded: dict[str, int] = dataclasses.field(default_factory=dict)
    invoices: int = 0

    def net(self, currency: str = "usd") -> int:
        """What was kept in a currency: paid minus refunded."""
        return self.paid.get(currency, 0) - self.refunded.get(currency, 0)


def stripe_fees_cents(settings: Settings, paid_cents: int, invoices: int) -> Decimal:
    """Stripe's fees on what was paid: the configured percentage of it, plus the fixed fee per paid invoice."""
    return Decimal(paid_cents) * Decimal(settings.stripe_fee_percent) / 100 + settings.stripe_fee_fixed_cents * invoices


def cost_usd(rows: Iterable[dict], prices: dict[str, Decimal], credit_usd: Decimal) -> Decimal:
    """Upstream USD of grouped image rows (db.admin_images_cost): tokens at their prices, else credits × credit_usd."""
    total = Decimal(0)
    for row in rows:
        tokens = (Decimal(int(row["input_tokens"] or 0)) * prices["text_input"]
                  + Decimal(int(row["output_tokens"] or 0)) * prices["image_output"]) / 1_000_000
        if row["speed"] == "economy":
            tokens /= 2  # OpenAI bills the Batch API at half the synchronous price
        total += tokens + Decimal(int(row["estimated_credits"] or 0)) * credit_usd
    return total


def overview(conn: db.Connection, settings: Settings, catalog_raw: dict, now: int) -> dict:
    """Every figure of /admin, from a handful of grouped queries (see the module's docstring)."""
    from services import prices as price_data

    prices, credit = price_data.token_prices(catalog_raw), price_data.credit_usd(catalog_raw)
    first_month = month_start(now, MONTHS - 1)
    chart_from = day_start(now) - (CHART_DAYS - 1) * DAY
    since = min(first_month, chart_from)

    rollup(conn, now)
    today = day_start(now)
    money_by_day = db.admin_money_by_day(conn, since)
    image_rows = db.admin_rolled_images(conn, since) + db.admin_images_by_day(conn, today, today + DAY)
    cost_rows = [row for row in image_rows if row["outcome"] == "made"]
    ledger_rows = db.admin_rolled_credits(conn, since) + db.admin_credits_by_day(conn, today, today + DAY)

    months = []
    for back in range(MONTHS - 1, -1, -1):
        start, end = month_start(now, back), month_start(now, back - 1) if back else month_start(now, -1)
        money = _money(row for row in money_by_day if start <= int(row["day"]) < end)
        cost = cost_usd((r for r in cost_rows if start <= int(r["day"]) < end), prices, credit)
        granted, spent = _credits(r for r in ledger_rows if start <= int(r["day"]) < end)
        images = sum(int(r["images"]) for r in cost_rows if start <= int(r["day"]) < end)
        fees = stripe_fees_cents(settings, money.paid.get("usd", 0), money.invoices)
        revenue = Decimal(money.net("usd"))
        months.append({"month": _month_of(start), "start": start, "revenue_cents": revenue, "paid": money.paid,
                       "refunded": money.refunded, "invoices": money.invoices, "fees_cents": fees,
                       "cost_usd": cost, "margin_cents": revenue - fees - cost * 100, "images": images,
                       "credits_granted": granted, "credits_spent": spent})

    per_model = {}
    this_month = month_start(now)
    for row in cost_rows:
        if int(row["day"]) < this_month:
            continue
        entry = per_model.setdefault(row["model"], {"model": row["model"], "images": 0, "cost_usd": Decimal(0),
                                                    "credits": 0})
        entry["images"] += int(row["images"])
        entry["credits"] += int(row["credits"] or 0)
        entry["cost_usd"] += cost_usd([row], prices, credit)
    for entry in per_model.values():  # what the model's images brought in: their credits at the plan's price
        per_credit = Decimal(settings.plan_price_usd * 100) / max(1, settings.plan_credits)
        entry["revenue_cents"] = entry["credits"] * per_credit
        entry["margin_cents"] = entry["revenue_cents"] - entry["cost_usd"] * 100

    days = [chart_from + n * DAY for n in range(CHART_DAYS)]
    revenue_per_day = {d: Decimal(0) for d in days}
    for row in money_by_day:
        if int(row["day"]) in revenue_per_day and row["currency"] == "usd":
            revenue_per_day[int(row["day"])] += Decimal(int(row["paid"]) - int(row["refunded"])) / 100
    cost_per_day = {d: Decimal(0) for d in days}
    for row in cost_rows:
        if int(row["day"]) in cost_per_day:
            cost_per_day[int(row["day"])] += cost_usd([row], prices, credit)
    outcomes = {d: dict.fromkeys(OUTCOMES, 0) for d in days}
    for row in image_rows:
        day = int(row["day"])
        if day in outcomes and row["outcome"] != "cancelled":
            key = "done" if row["outcome"] == "made" else row["outcome"] if row["outcome"] in OUTCOMES else "other"
            outcomes[day][key] += int(row["images"])

    return {
        "now": now,
        "subscribers": subscriber_states(conn, now),
        "mrr_cents": db.admin_paying_subscriptions(conn, now) * settings.plan_price_usd * 100,
        "months": months,
        "this_month": months[-1],
        "last_month": months[-2],
        "per_model": sorted(per_model.values(), key=lambda e: -e["images"]),
        "days": days,
        "revenue_per_day": [revenue_per_day[d] for d in days],
        "cost_per_day": [cost_per_day[d] for d in days],
        "outcomes": [outcomes[d] for d in days],
        "queue": queue(conn, settings, now),
        "operator_events": operator_events(settings.var_dir / "log"),
    }


ROLLUP = "rollup_through"  # worker_state: the UTC midnight up to which closed days are rolled up


def rollup(conn: db.Connection, now: int) -> int:
    """Roll every closed day not rolled up yet into the daily tables (the console reads them); how many days.

    Closed days change no more (an image's or a ledger line's time is when it happened), so each is
    read from the items and the ledger once: the figures stay fast with millions of rows and
    survive the purge of old batches (`cli.py cleanup` rolls up before it deletes). Two runs at
    once queue on the state row; a day rolled up twice is replaced, not doubled.
    """
    today = day_start(now)
    if db.worker_state_get(conn, ROLLUP) is None:
        db.worker_state_set(conn, ROLLUP, "", now)
    with conn.transaction():
        raw = db.worker_state_get(conn, ROLLUP, lock=True) or ""
        if raw.isdigit():
            start = int(raw)
        else:
            first = db.admin_first_day(conn)
            start = day_start(int(first)) if first is not None else today
        if start >= today:
            if not raw.isdigit():
                db.worker_state_set(conn, ROLLUP, str(today), now)
            return 0
        db.admin_rollup(conn, start, today)
        db.worker_state_set(conn, ROLLUP, str(today), now)
    return (today - start) // DAY


def _money(rows: Iterable[dict]) -> Money:
    """Sum day rows of db.admin_money_by_day into one period."""
    money = Money()
    for row in rows:
        currency = row["currency"]
        money.paid[currency] = money.paid.get(currency, 0) + int(row["paid"])
        money.refunded[currency] = money.refunded.get(currency, 0) + int(row["refunded"])
        money.invoices += int(row["invoices"])
    return money


def _credits(rows: Iterable[dict]) -> tuple[int, int]:
    """Credits granted (grants and owner grants) and spent (reserved minus refunded) in day rows of the ledger."""
    granted = spent = 0
    for row in rows:
        delta = int(row["delta"])
        if row["reason"] == "grant" or (row["reason"] == "adjust" and delta > 0):
            granted += delta
        elif row["reason"] in ("reserve", "economy", "refund"):
            spent -= delta
    return granted, spent


def subscriber_states(conn: db.Connection, now: int) -> dict[str, int]:
    """How many users are in each state: active, trialing, cancelling, past due, unpaid, paused, disputed, blocked."""
    counts = dict.fromkeys(SUBSCRIPTION_STATES, 0)
    for row in db.admin_subscription_states(conn, now):
        status = row["status"]
        if status in ("active", "trialing") and row["cancelling"]:
            status = "cancelling"
        if status in counts:
            counts[status] += int(row["n"])
    holds = db.admin_user_holds(conn)
    counts["disputed"], counts["blocked"] = int(holds["disputed"] or 0), int(holds["blocked"] or 0)
    return counts


def queue(conn: db.Connection, settings: Settings, now: int) -> dict:
    """The queue now: items by status, calls in flight, paused models and pauses, the last hour's calls and 429s."""
    by_status = {row["status"]: int(row["n"]) for row in db.admin_queue_counts(conn)}
    stats = worker.minute_stats(conn, now)
    return {"by_status": by_status, "in_flight": db.items_running(conn, now),
            "slots": settings.worker_slots * settings.worker_processes,
            "models_down": batches.unavailable_models(conn, now * 1000),
            "paused": worker.paused(conn, now * 1000),
            "calls_last_hour": sum(stats["calls"].values()),
            "rate_limited_last_hour": sum(stats["rate_limited"].values()),
            "busiest_minute": max(stats["calls"].values(), default=0),
            "economy_jobs": db.admin_upstream_open(conn)}


def operator_events(log_dir: Path, limit: int = OPERATOR_LINES) -> list[dict]:
    """The last OPERATOR lines of the site's logs (web, worker, cleanup), newest first: time, file, text."""
    found = []
    for path in sorted(log_dir.glob("*.log")):
        try:
            with path.open("rb") as handle:
                handle.seek(0, 2)
                size = handle.tell()
                handle.seek(max(0, size - OPERATOR_TAIL_BYTES))
                tail = handle.read().decode("utf-8", "replace")
        except OSError:
            continue
        for line in tail.splitlines():
            at = line.find("OPERATOR:")
            if at >= 0:
                found.append({"time": line[:19], "file": path.name, "text": line[at + len("OPERATOR:"):].strip()})
    found.sort(key=lambda event: event["time"], reverse=True)
    return found[:limit]


# --- subscribers -----------------------------------------------------------------------------------

def search(conn: db.Connection, text: str, limit: int = 50) -> list[dict]:
    """Users whose email or name contains the text (all the latest users when it is empty)."""
    return db.admin_users_search(conn, (text or "").strip()[:200], limit)


def subscriber(conn: db.Connection, user_id: int, now: int) -> dict:
    """One subscriber as the console shows them: plan, identities, credits, ledger, batches, failures, invoices."""
    user = db.user_get(conn, user_id) if 0 < user_id < 2**63 else None
    if user is None:
        raise AdminError("not_found")
    from services import billing

    subscription = billing.current_subscription(conn, user_id)
    return {"user": user, "subscription": subscription,
            "access": billing.access(subscription, now, hold=user.get("billing_hold")),
            "identities": db.admin_identities(conn, user_id), "balance": credits.balance(conn, user_id),
            "ledger": db.admin_ledger(conn, user_id, 200), "batches": db.admin_batches(conn, user_id, 50),
            "failures": db.admin_failures(conn, user_id), "invoices": db.admin_invoices(conn, user_id),
            "audit": db.admin_audit_of(conn, user_id, 50)}


def _reason(reason: str) -> str:
    reason = " ".join((reason or "").split())
    if not reason:
        raise AdminError("reason_required")
    return reason[:REASON_MAX]


def _audit(conn: db.Connection, owner: dict, action: str, user_id: int | None, reason: str, detail: str,
           now: int) -> int:
    audit_id = db.admin_audit_insert(conn, owner["id"], action, user_id, reason, detail[:1000], now)
    log.warning("ADMIN: %s (user %s) did %s to user %s: %s (%s)", owner.get("email"), owner["id"], action, user_id,
                detail, reason)
    return audit_id


def adjust(conn: db.Connection, owner: dict, user_id: int, delta: int, reason: str, now: int) -> int:
    """Grant (delta > 0) or withdraw (delta < 0) credits, never below zero; the ledger line says `adjust`."""
    reason = _reason(reason)
    subscriber(conn, user_id, now)
    if not delta or abs(delta) > ADJUST_MAX:
        raise AdminError("bad_amount", max=ADJUST_MAX)
    with conn.transaction():
        audit_id = _audit(conn, owner, "adjust", user_id, reason, f"{delta:+d} credits", now)
        if not credits.adjust(conn, user_id, delta, f"admin:{audit_id}", now):
            raise AdminError("not_enough_credits", left=credits.balance(conn, user_id))
    return audit_id


def retry_on_the_house(conn: db.Connection, owner: dict, user_id: int, batch_id: int, reason: str, now: int) -> int:
    """Queue a batch's failed images again and give the subscriber the credits they will take; how many."""
    reason = _reason(reason)
    batch = db.batch_get(conn, batch_id) if 0 < batch_id < 2**63 else None
    if batch is None or batch["user_id"] != user_id:
        raise AdminError("not_found")
    failed = db.admin_failed_count(conn, batch_id)
    if not failed:
        return 0
    with conn.transaction():
        audit_id = _audit(conn, owner, "retry_free", user_id, reason,
                          f"batch {batch_id}: {failed} images, {failed * batch['credits_per_item']} credits", now)
        credits.adjust(conn, user_id, failed * batch["credits_per_item"], f"admin:{audit_id}", now)
        count = db.batch_items_retry_failed(conn, batch_id, now)
        db.batch_set_status(conn, batch_id, "active", None, now)
    return count


def block(conn: db.Connection, settings: Settings, owner: dict, user_id: int, reason: str, now: int) -> int:
    """Block a subscriber: signed out everywhere, their images not started cancelled and refunded, no new batch."""
    reason = _reason(reason)
    subscriber(conn, user_id, now)
    if owner["id"] == user_id:
        raise AdminError("not_yourself")
    with conn.transaction():
        _audit(conn, owner, "block", user_id, reason, "blocked, signed out, queued images cancelled", now)
        db.user_set_blocked(conn, user_id, now, reason)
        db.sessions_delete_user(conn, user_id)
    stopped = 0
    for batch_id in db.admin_unfinished_batch_ids(conn, user_id):
        stopped += economy.cancel_batch(conn, settings, user_id, batch_id, now)
    return stopped


def unblock(conn: db.Connection, owner: dict, user_id: int, reason: str, now: int) -> None:
    """Let a blocked subscriber make batches again."""
    reason = _reason(reason)
    subscriber(conn, user_id, now)
    with conn.transaction():
        _audit(conn, owner, "unblock", user_id, reason, "unblocked", now)
        db.user_set_blocked(conn, user_id, None, None)


def refused_prompt(conn: db.Connection, owner: dict, user_id: int, item_id: int, reason: str, now: int) -> dict:
    """The prompt of one refused image, shown on request (the request is audited)."""
    reason = _reason(reason)
    item = db.batch_item_get(conn, item_id) if 0 < item_id < 2**63 else None
    batch = db.batch_get(conn, item["batch_id"]) if item else None
    if item is None or batch is None or batch["user_id"] != user_id or item["error_code"] != "refused":
        raise AdminError("not_found")
    _audit(conn, owner, "show_prompt", user_id, reason, f"item {item_id} of batch {batch['id']}", now)
    return {"item": item, "batch": batch,
            "final_prompt": batches.final_prompt(item["prompt"], batch["style"], batch["prompt_separator"])}


# --- exports -------------------------------------------------------------------------------------

_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def csv_cell(value) -> str:
    """A cell as text that no spreadsheet runs as a formula (a leading =, +, -, @, tab or CR gets a ')."""
    text = "" if value is None else str(value)
    return "'" + text if text.startswith(_FORMULA_START) else text


def csv_text(header: list[str], rows: Iterable[list]) -> str:
    """CSV with a BOM and CRLF lines (Excel opens it as UTF-8), every cell formula-safe."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\r\n")
    writer.writerow(header)
    for row in rows:
        writer.writerow([csv_cell(value) for value in row])
    return "\ufeff" + out.getvalue()


def months_csv(figures: dict) -> str:
    """The overview's monthly figures as CSV (amounts in USD with two decimals)."""
    def usd(cents) -> str:
        return f"{Decimal(cents) / 100:.2f}"

    return csv_text(
        ["month", "invoices", "revenue_usd", "stripe_fees_usd", "upstream_cost_usd", "margin_usd", "images",
         "credits_granted", "credits_spent"],
        ([m["month"], m["invoices"], usd(m["revenue_cents"]), usd(m["fees_cents"]), f"{m['cost_usd']:.2f}",
          usd(m["margin_cents"]), m["images"], m["credits_granted"], m["credits_spent"]] for m in figures["months"]))


def ledger_csv(conn: db.Connection, user_id: int) -> str:
    """A subscriber's whole ledger as CSV, oldest first."""
    rows = db.admin_ledger(conn, user_id, None)
    return csv_text(["id", "time_utc", "delta", "reason", "reference"],
                    ([r["id"], datetime.datetime.fromtimestamp(r["created_at"], datetime.UTC).strftime(
                        "%Y-%m-%d %H:%M:%S"), r["delta"], r["reason"], r["reference"]] for r in reversed(rows)))
