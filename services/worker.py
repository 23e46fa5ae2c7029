"""The worker: takes queued items, reserves their credits, calls OpenAI, finishes the image, stores the file.

Scheduling lives in the database, so several worker processes (cron starts one a minute, a
new batch kicks one, the demo runs one as a thread) share the upstream's limits:

* at most WORKER_SLOTS calls in flight in all processes together (running items whose call
  is live: `call_until` is set at the claim and cleared when the call returns, so storing one
  result never holds a slot; a process runs two threads more than the slots so that the next
  call starts while a result is being stored);
* at most IMAGES_PER_MINUTE starts in any 60 s (or the account's limit, when the responses'
  x-ratelimit-limit-requests header says it is lower), and starts spaced by 60 s / pace. The
  pace drops by 30 % on a 429, once per Retry-After window however many 429s arrive in it (the
  calls in flight when the limit was hit all come back refused), and waits the Retry-After; it
  climbs back by 10 % of the ceiling on each success. When x-ratelimit-remaining-requests runs
  low, the remaining calls are spread over x-ratelimit-reset-requests. A big batch runs near
  the limit without a storm of refusals;
* fair and work-conserving: each free slot goes to the subscriber with the fewest calls
  in flight (then the batch served longest ago), and within a batch to the first item in list
  order. A lone subscriber gets every slot; several share them evenly.

A claim happens in one transaction behind a lock row (SQLite's BEGIN IMMEDIATE does the same),
so two workers never take the same item. An item's credits are reserved under the reference
item:<id>:<charge>, so a worker that dies mid-item and an item taken again after its lease
expired never charge twice; every path that ends without an image refunds.

Two refusals stop more than the item, because the prompt is not what is wrong:

* the account (insufficient_quota, a refused key): every worker pauses for QUOTA_PAUSE_SECONDS
  (worker_state "pause"), the item is refunded and queued again, the log says OPERATOR;
* one model (a setup mistake: model_not_found, or a 400 that blames size, quality, complexity,
  output_format, model, background or n): the item is refunded and queued again, every active
  batch of that model is paused ("model_unavailable"), the model is marked unavailable for
  QUOTA_PAUSE_SECONDS (worker_state "models_down", see batches.unavailable_models) so that no
  new batch of it is accepted, and the log says OPERATOR once per marking. The mark just runs
  out: a batch of that model resumed after that tries again, and marks it again if it is still
  wrong.
"""

from __future__ import annotations

import dataclasses
import datetime
import json
import logging
import os
import random
import re
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

from services import batches, credits, db, imaging, openai_images

try:
    import fcntl
except ImportError:  # Windows, where only the demo runs (its worker is a thread): no slot is ever locked
    fcntl = None
from services.catalog import Catalog
from services.config import Settings
from services.openai_images import ImageAPIError

log = logging.getLogger(__name__)

MAX_ATTEMPTS = 3
LEASE_EXTRA = 120  # seconds a lease outlives the longest call, before another worker may take the item
CALL_EXTRA = 5  # seconds a call counts in flight after its read timeout (a killed worker's slot comes back)
EXTRA_THREADS = 2  # threads beyond the slots, to store results while the slots keep calling
PACE_MARGIN_MS = 5  # added to every spacing: a request's trip varies by a few ms, an exact pace would hit the limit
SLOT_POLL = 0.05  # seconds a thread waits for a slot held by another process before it looks again
HEARTBEAT_EVERY = 5
APP_ROOT = Path(__file__).resolve().parent.parent

# Request fields that, when a 400 blames them, mean the site's set-up for a model is wrong (the catalogue's size,
# quality..., or a model the key cannot use), not the subscriber's prompt: every item of that model would fail alike.
SETUP_PARAMS = frozenset({"size", "quality", "complexity", "output_format", "model", "background", "n"})
SETUP_ERROR_TYPES = ("invalid_request_error", "image_generation_user_error")

# What a failed item says (code -> English message; the pages translate the code).
FAILURES = {
    "refused": "refused by the safety system: rephrase the prompt",
    "invalid": "the image service did not accept this request",
    "upstream": "the image service kept failing; its credits came back",
    "timeout": "the image service took too long; its credits came back",
    "no_credits": "not enough credits left",
    "model_retired": "this model has been retired",
    "economy_expired": "OpenAI did not make it within the economy window; its credits came back",
}


@dataclasses.dataclass
class Pace:
    """The shared pace of upstream calls: images per minute, a cool-down, the last start, what the headers said."""

    ipm: float
    cooldown_until_ms: int = 0
    last_start_ms: int = 0
    limit_ipm: float = 0.0  # the account's limit from x-ratelimit-limit-requests (0: not seen yet)
    cut_until_ms: int = 0  # end of the Retry-After window of the 429 that last lowered ipm: no second cut before it
    spread_ms: int = 0  # spacing that spreads x-ratelimit-remaining-requests over x-ratelimit-reset-requests ...
    spread_until_ms: int = 0  # ... until that window ends
    headers_from_ms: int = 0  # start of the call whose headers were applied last (older calls' headers are stale)


def _now_ms() -> int:
    return int(time.time() * 1000)


def _load_pace(conn: db.Connection, settings: Settings) -> Pace:
    """The shared pace, locked until the transaction ends, its ipm kept under the ceiling."""
    # Locked until the caller's transaction ends: a claim, a 429 and a success each read, change and write the
    # pace, and without the lock one of them could write back a pace read before another's change (on MariaDB a
    # success could undo a 429's slow-down). SQLite's BEGIN IMMEDIATE already serialises them.
    raw = db.worker_state_get(conn, "pace", lock=True)
    try:
        values = json.loads(raw) if raw else {}
        pace = Pace(ipm=float(values.get("ipm", settings.images_per_minute)),
                    cooldown_until_ms=int(values.get("cooldown_until_ms", 0)),
                    last_start_ms=int(values.get("last_start_ms", 0)),
                    limit_ipm=float(values.get("limit_ipm", 0.0)),
                    cut_until_ms=int(values.get("cut_until_ms", 0)),
                    spread_ms=int(values.get("spread_ms", 0)),
                    spread_until_ms=int(values.get("spread_until_ms", 0)),
                    headers_from_ms=int(values.get("headers_from_ms", 0)))
    except (ValueError, TypeError, AttributeError):
        pace = Pace(ipm=settings.images_per_minute)
    pace.ipm = min(pace.ipm, _ceiling(pace, settings))
    return pace


def _save_pace(conn: db.Connection, pace: Pace, now: int) -> None:
    """Store the shared pace (inside the transaction that loaded it)."""
    db.worker_state_set(conn, "pace", json.dumps(dataclasses.asdict(pace)), now)


def prepare(conn: db.Connection) -> None:
    """Make sure the scheduler's lock row exists (before the first claim)."""
    if db.worker_state_get(conn, "scheduler") is None:
        db.worker_state_set(conn, "scheduler", "lock", int(time.time()))  # an upsert: a race is harmless


def paused(conn: db.Connection, now_ms: int) -> dict | None:
    """The global pause (after an insufficient_quota or a refused key), while it lasts."""
    return batches.pause_lasts(db.worker_state_get(conn, "pause"), now_ms)


def claim(conn: db.Connection, settings: Settings, worker: str, now_ms: int) -> tuple[dict | None, float | None]:
    """Take the next item fairly within the limits: (item, 0), or (None, seconds to wait), or (None, None) if idle."""
    now = now_ms // 1000
    with conn.transaction():
        db.worker_state_get(conn, "scheduler", lock=True)
        pause = paused(conn, now_ms)
        if pause:
            return None, (pause["until_ms"] - now_ms) / 1000
        batch = db.next_batch_to_serve(conn, now, now_ms)
        if batch is None:
            due = db.soonest_due_ms(conn)
            return None, None if due is None else max(0.0, (due - now_ms) / 1000)
        if db.items_running(conn, now) >= settings.worker_slots:
            return None, SLOT_POLL
        pace = _load_pace(conn, settings)
        next_start = max(pace.cooldown_until_ms, pace.last_start_ms + _spacing_ms(pace, now_ms))
        if next_start > now_ms:
            return None, (next_start - now_ms) / 1000
        started, oldest = db.upstream_calls_since(conn, now_ms - 60_000)
        if started >= _ceiling(pace, settings) and oldest is not None:
            return None, (oldest + 60_000 - now_ms) / 1000
        item = db.next_item_of_batch(conn, batch["id"], now, now_ms)
        lease_until = now + settings.openai_read_timeout + LEASE_EXTRA
        call_until = now + settings.openai_read_timeout + CALL_EXTRA
        if item is None or not db.batch_item_claim(conn, batch["id"], item["id"], worker, lease_until, call_until, now):
            return None, 0.0
        db.batch_touch_started(conn, batch["id"], now_ms)
        db.upstream_call_record(conn, now_ms)
        count_minute(conn, "calls", now_ms)
        # The actual start, not the planned one: catching up on a late start would put two starts closer than
        # the spacing, and an upstream that enforces its limit over a short window refuses the second.
        pace.last_start_ms = now_ms
        _save_pace(conn, pace, now)
    item = db.batch_item_get(conn, item["id"])
    return item, 0.0


def _reset_seconds(text: str | None) -> float | None:
    """Seconds in an x-ratelimit-reset value such as 1s, 6m0s or 120ms."""
    if not text:
        return None
    total = 0.0
    for number, unit in re.findall(r"([\d.]+)(ms|h|m|s)", text):
        total += float(number) * {"ms": 0.001, "s": 1, "m": 60, "h": 3600}[unit]
    return total or None


def _ceiling(pace: Pace, settings: Settings) -> float:
    """The most images per minute the pace may reach: IMAGES_PER_MINUTE, or the account's limit when lower."""
    if pace.limit_ipm > 0:
        return min(float(settings.images_per_minute), pace.limit_ipm)
    return float(settings.images_per_minute)


def _spacing_ms(pace: Pace, now_ms: int) -> int:
    """Milliseconds between two starts: 60 s / ipm, or more while the headers' remaining requests must be spread."""
    spacing = int(60_000 / max(pace.ipm, 1.0))
    if pace.spread_until_ms > now_ms:
        spacing = max(spacing, pace.spread_ms)
    return spacing + PACE_MARGIN_MS


def _header_number(ratelimit: dict[str, str], name: str) -> float | None:
    """A numeric x-ratelimit-* header, or None when it is missing or not a number."""
    try:
        value = float(ratelimit[name])
    except (KeyError, TypeError, ValueError):
        return None
    return value if value >= 0 else None


def _apply_headers(pace: Pace, ratelimit: dict[str, str], started_ms: int) -> None:
    """Learn the account's limit and the window's remaining requests from a success's x-ratelimit-* headers.

    The headers describe the window when the call was admitted: those of a call that started before the
    call whose headers were applied last are stale and change nothing (long calls return out of order).
    Starts are then spaced by at least reset / remaining until that window ends, which only binds when few
    requests remain for the time left (remaining 0 is the cool-down in _on_success).
    """
    if started_ms < pace.headers_from_ms:
        return
    limit = _header_number(ratelimit, "x-ratelimit-limit-requests")
    remaining = _header_number(ratelimit, "x-ratelimit-remaining-requests")
    reset = _reset_seconds(ratelimit.get("x-ratelimit-reset-requests"))
    if limit is None and remaining is None:
        return
    pace.headers_from_ms = started_ms
    if limit:
        pace.limit_ipm = limit
    if remaining is not None and reset:
        pace.spread_ms = int(reset * 1000 / max(remaining, 1.0))
        pace.spread_until_ms = started_ms + int(reset * 1000)


def _on_success(conn: db.Connection, settings: Settings, ratelimit: dict[str, str], started_ms: int,
                now_ms: int) -> None:
    """Raise the pace again after a success, up to the ceiling the headers allow; respect a used-up window.

    The headers describe the window when the call was admitted, so a reset counts from the
    call's start: by the time a long call returns, the window has usually moved on.
    """
    with conn.transaction():
        pace = _load_pace(conn, settings)
        _apply_headers(pace, ratelimit, started_ms)
        ceiling = _ceiling(pace, settings)
        pace.ipm = min(ceiling, pace.ipm + ceiling * 0.1)
        if _header_number(ratelimit, "x-ratelimit-remaining-requests") == 0:
            wait = _reset_seconds(ratelimit.get("x-ratelimit-reset-requests"))
            if wait and started_ms + wait * 1000 > now_ms:
                pace.cooldown_until_ms = max(pace.cooldown_until_ms, started_ms + int(wait * 1000))
        _save_pace(conn, pace, now_ms // 1000)


MINUTE_STATS = "minute_stats"  # worker_state: {"calls"|"rate_limited": {minute (epoch s): count}}, the last hour


def count_minute(conn: db.Connection, kind: str, now_ms: int) -> None:
    """Add one to this minute's count of `kind` (calls started, 429s) for the owner's console; keeps an hour.

    Called inside the caller's transaction, which already serialises the worker's shared state.
    """
    raw = db.worker_state_get(conn, MINUTE_STATS, lock=True)
    try:
        stats = json.loads(raw) if raw else {}
    except ValueError:
        stats = {}
    minute, oldest = now_ms // 60_000 * 60, now_ms // 1000 - 3600
    counts = {k: v for k, v in (stats.get(kind) or {}).items() if k.isdigit() and int(k) > oldest}
    counts[str(minute)] = int(counts.get(str(minute), 0)) + 1
    stats[kind] = counts
    db.worker_state_set(conn, MINUTE_STATS, json.dumps(stats, separators=(",", ":")), now_ms // 1000)


def minute_stats(conn: db.Connection, now: int) -> dict[str, dict[int, int]]:
    """The last hour's counts per minute: {"calls": {minute: n}, "rate_limited": {minute: n}}."""
    try:
        stats = json.loads(db.worker_state_get(conn, MINUTE_STATS) or "{}")
    except ValueError:
        stats = {}
    return {kind: {int(k): int(v) for k, v in (stats.get(kind) or {}).items() if k.isdigit() and int(k) > now - 3600}
            for kind in ("calls", "rate_limited")}


def _on_rate_limit(conn: db.Connection, settings: Settings, retry_after: float, now_ms: int) -> None:
    """Slow down for everyone after a 429: no start before Retry-After, and a lower pace once per such window.

    Calls in flight together that all get a 429 are one sign that the pace is too fast, not several: only a
    429 arriving after the Retry-After window of the 429 that last lowered the pace lowers it again. The
    others stretch that window and the cool-down to their own Retry-After.
    """
    with conn.transaction():
        pace = _load_pace(conn, settings)
        until = now_ms + int(retry_after * 1000)
        if now_ms >= pace.cut_until_ms:
            pace.ipm = max(1.0, pace.ipm * 0.7)
            pace.cut_until_ms = until
        else:
            pace.cut_until_ms = max(pace.cut_until_ms, until)
        pace.cooldown_until_ms = max(pace.cooldown_until_ms, until)
        _save_pace(conn, pace, now_ms // 1000)
        count_minute(conn, "rate_limited", now_ms)


def _backoff(settings: Settings, attempt: int) -> float:
    """Exponential backoff with jitter, in seconds: RETRY_BASE_MS x 1, 2, 4 ..., at most a minute."""
    return min(60.0, settings.retry_base_ms / 1000 * 2.0 ** max(attempt - 1, 0)) * random.uniform(0.5, 1.0)


def _refund(conn: db.Connection, batch: dict, item: dict, now: int) -> None:
    if item["charged"]:
        credits.refund(conn, batch["user_id"], item["charged"], f"item:{item['id']}:{item['charge']}", now)


def _fail(conn: db.Connection, worker: str, batch: dict, item: dict, code: str, message: str | None,
          request_id: str | None, now: int) -> None:
    """Fail an item and give its credits back, in one transaction."""
    with conn.transaction():
        if db.batch_item_fail(conn, batch["id"], item["id"], worker, code, message or FAILURES[code], request_id, now):
            _refund(conn, batch, item, now)
            db.batch_finish_if_idle(conn, batch["id"], now)


def process(conn: db.Connection, settings: Settings, catalog: Catalog, worker: str, item: dict,
            call_ended: threading.Condition | None = None) -> str:
    """Generate one claimed item to the end; return what happened (done, failed, retry, paused).

    When the upstream call returns, its slot is released and `call_ended` (if given) wakes the
    threads of this process waiting for a slot.
    """
    now = int(time.time())
    batch = db.batch_get(conn, item["batch_id"])
    model = catalog.get(batch["model"])
    if model is None or model.retired(datetime.date.today()):
        _fail(conn, worker, batch, item, "model_retired", None, None, now)
        return "failed"
    if not item["charged"]:
        try:
            credits.reserve(conn, batch["user_id"], batch["credits_per_item"], f"item:{item['id']}:{item['charge']}",
                            now)
        except credits.InsufficientCredits:
            # Not a failure of the image: it waits in the queue, with the rest, under the batch's one
            # "out of credits" pause, and goes on when the owner resumes with credits again.
            with conn.transaction():
                db.batch_item_requeue(conn, batch["id"], item["id"], worker, 0, False, None, None)
                db.batch_set_status(conn, batch["id"], "paused", "no_credits", now)
            return "paused"
        db.batch_item_set_charged(conn, item["id"], batch["credits_per_item"])
        item = {**item, "charged": batch["credits_per_item"]}
    size = model.size(batch["resolution"], batch["ratio"])
    started_ms = _now_ms()
    try:
        try:
            generated = openai_images.generate(settings.openai_base_url, settings.openai_api_key,
                                               read_timeout=settings.openai_read_timeout,
                                               **call_fields(settings, model, batch, item))
        finally:
            db.batch_item_call_ended(conn, item["id"], worker)
            if call_ended is not None:
                with call_ended:
                    call_ended.notify()
        finished = imaging.finish(generated.data, size.output, batch["image_format"])
    except ImageAPIError as exc:
        return _handle_failure(conn, settings, worker, batch, item, exc)
    except imaging.ImageError as exc:  # the call worked but its image did not: keep its request id for OpenAI
        return _handle_failure(conn, settings, worker, batch, item,
                               ImageAPIError("broken", str(exc), status=200, request_id=generated.request_id))
    relative = f"{batch['id']}/{item['id']}-{item['charge']}.{'png' if batch['image_format'] == 'png' else 'jpg'}"
    write_atomically(settings.results_dir / relative, finished.data)
    now = int(time.time())
    with conn.transaction():
        stored = db.batch_item_done(conn, batch["id"], item["id"], worker, relative, len(finished.data), finished.width,
                                    finished.height, generated.request_id, now,
                                    (generated.input_tokens, generated.output_tokens))
        if stored:
            db.batch_finish_if_idle(conn, batch["id"], now)
    if not stored:  # the lease ran out and another worker has the item: this copy is not the one
        (settings.results_dir / relative).unlink(missing_ok=True)
        return "lost"
    _on_success(conn, settings, generated.ratelimit, started_ms, _now_ms())
    log.info("item %s of batch %s done (%dx%d stored, %d bytes, %s/%s tokens, request %s)", item["id"], batch["id"],
             finished.width, finished.height, len(finished.data), generated.input_tokens, generated.output_tokens,
             generated.request_id)
    return "done"


def _handle_failure(conn: db.Connection, settings: Settings, worker: str, batch: dict, item: dict,
                    exc: ImageAPIError) -> str:
    """Decide what a failed call means for the item, the pace and the whole queue."""
    now, now_ms = int(time.time()), _now_ms()
    log.warning("item %s of batch %s: %s (%s, status %s, request %s)", item["id"], batch["id"], exc.kind,
                exc.code, exc.status, exc.request_id)
    if _setup_mistake(exc):
        return _model_unavailable(conn, settings, worker, batch, item, exc)
    if exc.kind in ("moderation", "invalid"):
        code = "refused" if exc.kind == "moderation" else "invalid"
        _fail(conn, worker, batch, item, code, f"{FAILURES[code]} ({exc.message})"[:500], exc.request_id, now)
        return "failed"
    if exc.kind == "rate_limit":
        wait = exc.retry_after if exc.retry_after is not None else _backoff(settings, 2)
        _on_rate_limit(conn, settings, wait, now_ms)
        db.batch_item_requeue(conn, batch["id"], item["id"], worker, now_ms + int(wait * 1000), False, None, None)
        return "retry"
    if exc.kind in ("quota", "auth"):
        log.error("OPERATOR: the OpenAI account refused work (%s: %s); all generation paused for %s s",
                  exc.kind, exc.code, settings.quota_pause_seconds)
        with conn.transaction():
            db.worker_state_set(conn, "pause", json.dumps(
                {"until_ms": now_ms + settings.quota_pause_seconds * 1000, "reason": exc.kind}), now)
            if db.batch_item_requeue_refunded(conn, batch["id"], item["id"], worker):
                _refund(conn, batch, item, now)
        return "paused"
    if item["attempts"] < MAX_ATTEMPTS:
        db.batch_item_requeue(conn, batch["id"], item["id"], worker,
                              now_ms + int(_backoff(settings, item["attempts"]) * 1000), True, exc.kind, exc.message)
        return "retry"
    _fail(conn, worker, batch, item, "timeout" if exc.kind == "timeout" else "upstream", None, exc.request_id, now)
    return "failed"


def _setup_mistake(exc: ImageAPIError) -> bool:
    """True when OpenAI refused the model or a setting of it (our configuration), not this item's prompt.

    A model_not_found (404, or the 403 of a project without access to the model), or a 400 of
    type invalid_request_error / image_generation_user_error whose `param` is one of SETUP_PARAMS.
    A refusal by the safety system or one that blames the prompt stays the item's own.
    """
    if exc.code == "model_not_found" and exc.status in (403, 404):
        return True
    return (exc.status == 400 and exc.param in SETUP_PARAMS and exc.error_type in SETUP_ERROR_TYPES
            and exc.code not in ("moderation_blocked", "content_policy_violation"))


def _model_unavailable(conn: db.Connection, settings: Settings, worker: str, batch: dict, item: dict,
                       exc: ImageAPIError) -> str:
    """Park a set-up mistake: refund and requeue the item, pause the model's batches, mark the model unavailable.

    The mark (batches.MODELS_DOWN) lasts QUOTA_PAUSE_SECONDS and is written under the scheduler's
    lock, so however many items of the model come back refused at once, one of them marks it and
    logs OPERATOR; the others only park their item.
    """
    now, now_ms = int(time.time()), _now_ms()
    model = batch["model"]
    with conn.transaction():
        db.worker_state_get(conn, "scheduler", lock=True)  # one marker at a time (SQLite: BEGIN IMMEDIATE already)
        marks = batches.unavailable_models(conn, now_ms, lock=True)  # the live marks only: expired ones drop out
        fresh = model not in marks
        if fresh:
            reason = "model_not_found" if exc.code == "model_not_found" else "bad_param"
            marks[model] = {"reason": reason, "status": exc.status, "code": exc.code, "param": exc.param,
                            "message": exc.message, "request_id": exc.request_id, "since": now,
                            "until_ms": now_ms + settings.quota_pause_seconds * 1000}
            db.worker_state_set(conn, batches.MODELS_DOWN, json.dumps(marks), now)
        if db.batch_item_requeue_refunded(conn, batch["id"], item["id"], worker):
            _refund(conn, batch, item, now)
        paused_batches = db.batches_pause_model(conn, model, "model_unavailable", now)
    if fresh:
        blamed = f"{exc.code or exc.status}{f', param {exc.param}' if exc.param else ''}"
        log.error("OPERATOR: model %s refused by OpenAI (%s: %s; request %s); its batches are paused (%d now) and "
                  "new ones refused for %s s; fix the catalogue (MODEL_CATALOG) or the key's access to the model, "
                  "then its subscribers resume their batches", model, blamed, exc.message, exc.request_id,
                  paused_batches, settings.quota_pause_seconds)
    return "paused"


def call_fields(settings: Settings, model, batch: dict, item: dict) -> dict:
    """What one item asks OpenAI for (openai_images.request_body's fields), now or in an economy batch alike."""
    return {"model": model.id,
            "prompt": batches.final_prompt(item["prompt"], batch["style"], batch["prompt_separator"]),
            "size": model.size(batch["resolution"], batch["ratio"]).request_text, "quality": batch["quality"],
            "output_format": batch["image_format"],
            "user": openai_images.user_hash(settings.secret_key, batch["user_id"]),
            "complexity": batch["complexity"] if batch["complexity"] in model.complexities else None}


def write_atomically(path: Path, data: bytes) -> None:
    """Write a file whole or not at all (a temporary name, then a rename)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
    temporary.write_bytes(data)
    os.replace(temporary, path)


def worker_name() -> str:
    """A name for this worker process: host, process id and a random tag."""
    return f"{socket.gethostname()[:20]}-{os.getpid()}-{random.randrange(16**4):04x}"


def run(settings: Settings, database: db.Database, catalog: Catalog, *, threads: int | None = None,
        max_seconds: float | None = None, once: bool = False, idle_exit: bool = True,
        stop: threading.Event | None = None) -> dict[str, int]:
    """Work the queue with `threads` loops (default: slots + 2) until idle, a time limit or `stop`.

    With idle_exit=False it waits for new work instead of returning when the queue is empty.
    """
    stop = stop or threading.Event()
    name = worker_name()
    started = time.monotonic()
    stats: dict[str, int] = {}
    lock = threading.Lock()
    call_ended = threading.Condition()

    def loop(index: int) -> None:
        me = f"{name}-{index}"
        conn: db.Connection | None = None
        last_beat = 0.0
        lost = False  # the database went away: whatever it left marked as this thread's must go back to the queue
        try:
            while not stop.is_set():
                if max_seconds is not None and time.monotonic() - started >= max_seconds:
                    return
                try:
                    if conn is None:
                        conn = database.connect()
                        prepare(conn)
                        if lost:  # back: what this thread held goes back to the queue (its charge stays reserved)
                            released = db.batch_items_release_worker(conn, me)
                            log.log(logging.WARNING if released else logging.INFO,
                                    "worker: the database is back; %d item(s) queued again", released)
                            lost = False
                    if time.monotonic() - last_beat >= HEARTBEAT_EVERY:
                        db.worker_state_set(conn, "heartbeat", str(int(time.time())), int(time.time()))
                        last_beat = time.monotonic()
                    item, wait = claim(conn, settings, me, _now_ms())
                    if item is not None:
                        outcome = process(conn, settings, catalog, me, item, call_ended)
                        with lock:
                            stats[outcome] = stats.get(outcome, 0) + 1
                        if once:
                            stop.set()
                        continue
                except db.DatabaseUnavailable as exc:
                    # The loop lives on: it reconnects, and nothing it held is lost (see `lost` above). That includes
                    # a claim whose COMMIT reached the server although its answer never came back: the item is
                    # `running` under this thread's name while the thread holds nothing.
                    lost = True
                    log.error("worker: database unavailable: %s", exc)
                    if conn is not None:
                        conn.close()
                    conn = None
                    item, wait = None, 2.0
                if wait is None and idle_exit:
                    return
                if wait == SLOT_POLL:  # every slot is busy: the end of a call here wakes us at once
                    with call_ended:
                        call_ended.wait(SLOT_POLL)
                else:
                    stop.wait(min(max(wait or 0.5, 0.01), 1.0))
        finally:
            if conn is not None:
                conn.close()

    count = threads or settings.worker_slots + EXTRA_THREADS
    loops = [threading.Thread(target=loop, args=(i,), name=f"worker-{i}", daemon=True) for i in range(count)]
    for thread in loops:
        thread.start()
    for thread in loops:
        thread.join()
    return stats


def slot_dir(settings: Settings) -> Path:
    """Where the worker processes' slot lock files live (under VAR_DIR, outside the web root)."""
    return settings.var_dir / "run"


def take_slot(settings: Settings) -> int | None:
    """Lock one of the WORKER_PROCESSES slot files without waiting; its file descriptor, or None when all are taken.

    The lock (flock) belongs to the open file, so it lives exactly as long as the process that
    holds the descriptor, however that process ends: no stale lease to expire, no heartbeat to
    guess from. A descriptor passed to a child keeps the lock after the parent closes its copy.
    """
    folder = slot_dir(settings)
    folder.mkdir(parents=True, exist_ok=True)
    for number in range(settings.worker_processes):
        fd = os.open(folder / f"worker-{number}.lock", os.O_RDWR | os.O_CREAT, 0o600)
        if fcntl is None:
            return fd
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            continue
        return fd
    return None


def slot_held(settings: Settings, fd: int) -> bool:
    """True when `fd` is one of the slot lock files and this process holds its lock (handed down by kick())."""
    try:
        found = os.fstat(fd)
        slots = [os.stat(slot_dir(settings) / f"worker-{n}.lock") for n in range(settings.worker_processes)]
        if not any((found.st_dev, found.st_ino) == (slot.st_dev, slot.st_ino) for slot in slots):
            return False
        if fcntl is not None:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # already ours: succeeds at once and changes nothing
    except OSError:
        return False
    return True


_children: set[subprocess.Popen] = set()
_children_lock = threading.Lock()


def _reap(child: subprocess.Popen) -> None:
    """Wait for a spawned worker to end, so it never lingers as a zombie of the web process."""
    child.wait()
    with _children_lock:
        _children.discard(child)


def kick(settings: Settings) -> bool:
    """Start a detached worker process if a slot is free (production); True when one was started.

    At most WORKER_PROCESSES worker processes exist at once, whatever the number of kicks, web
    processes and cron runs: the slot is taken here, in the web process, and handed to the child
    with its descriptor. A kick while every slot is taken costs one open() per slot and does
    nothing. Each child is waited for by a small thread, so none is left a zombie.
    """
    if settings.worker_launch != "spawn":
        return False
    fd = take_slot(settings)
    if fd is None:
        return False
    try:
        child = subprocess.Popen(
            [sys.executable, str(APP_ROOT / "cli.py"), "worker", "--max-seconds", "55", "--slot-fd", str(fd)],
            cwd=APP_ROOT, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            start_new_session=True, close_fds=True, pass_fds=(fd,))
    finally:
        os.close(fd)  # the child holds the lock now (or, if it could not start, the slot is free again)
    with _children_lock:
        _children.add(child)
    threading.Thread(target=_reap, args=(child,), name="worker-reaper", daemon=True).start()
    return True


DEMO_ECONOMY_EVERY = 2  # seconds between two economy ticks of the demo's worker (cron's minute is too slow to watch)


def start_thread(settings: Settings, database: db.Database, catalog: Catalog,
                 economy_every: float = DEMO_ECONOMY_EVERY) -> threading.Event:
    """The demo's worker: daemon threads working the queue, and economy batches, for as long as the process lives."""
    stop = threading.Event()
    threading.Thread(target=run, args=(settings, database, catalog), daemon=True, name="demo-worker",
                     kwargs={"idle_exit": False, "stop": stop}).start()
    threading.Thread(target=_economy_loop, args=(settings, database, catalog, economy_every, stop), daemon=True,
                     name="demo-economy").start()
    return stop


def _economy_loop(settings: Settings, database: db.Database, catalog: Catalog, every: float,
                  stop: threading.Event) -> None:
    """What cron does once a minute for economy batches, every `every` seconds (the demo's and tests' pace)."""
    from services import economy  # economy builds on this module

    while not stop.wait(every):
        try:
            conn = database.connect()
            try:
                economy.tick(conn, settings, catalog, poll_every=max(1, int(every)))
            finally:
                conn.close()
        except Exception:  # noqa: BLE001 - the demo's loop outlives a bad tick, as cron outlives a bad run
            log.exception("demo economy tick failed")


def cleanup(conn: db.Connection, settings: Settings, now: int) -> tuple[int, int, int]:
    """Expire images nobody collected in time, delete orphan files, release stale leases; return the counts."""
    expired = 0
    for item in db.items_expired_results(conn, now - settings.image_retention_days * 86400):
        if db.batch_item_expire(conn, item["batch_id"], item["id"], now):
            (settings.results_dir / item["result_path"]).unlink(missing_ok=True)
            expired += 1
    orphans = 0
    if settings.results_dir.is_dir():
        kept = db.result_paths(conn)
        for path in settings.results_dir.rglob("*"):
            relative = path.relative_to(settings.results_dir).as_posix()
            # A file younger than a lease may be one a worker is writing right now.
            if path.is_file() and relative not in kept and path.stat().st_mtime < now - LEASE_EXTRA:
                path.unlink(missing_ok=True)
                orphans += 1
    leases = db.items_stale_leases(conn, now)
    return expired, orphans, leases
