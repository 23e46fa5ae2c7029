"""Economy batches: their items go to OpenAI's Batch API at half the price, and come back within 24 hours.

The cron worker calls `tick()` once a minute (before it works the queue of "now" batches):

0. `requeue_abandoned()`: a job a worker marked but never sent (it died midway) gives its items back.
1. `submit()`: each active economy batch with queued items becomes one upstream job (one per
   site batch, so a subscriber's Cancel cancels only their own job). Every item's credits are
   reserved first (ledger reason `economy`, reference `item:<id>:<charge>`, so a retry never
   charges twice); the items become `waiting`; the JSONL input (each line the synchronous
   call's body) is written to disk, uploaded and started. If the upload or the start fails,
   the items go back to the queue with their reservations kept, and the next tick tries again.
2. `poll()`: each open job is asked about at most once a minute (POLL_EVERY); its status and
   request counts are kept. A finished job (completed, failed, expired, cancelled) is
   collected: its output and error files are downloaded to `VAR_DIR/economy/<job>/` (whole
   or not at all) and read line by line; each image is finished as the synchronous path does
   it and stored, each failed line fails its item with a refund, and every item left without
   a line (expired, cancelled, failed jobs) is failed or cancelled with a refund. Settling an
   item only happens while it is `waiting`, in one transaction with its refund, so a worker
   killed while it collects starts again where it was: nothing is stored or refunded twice.
3. `cancel()`: a subscriber's Cancel asks OpenAI to cancel the batch's jobs; what completed
   before the cancel still arrives, the rest is cancelled and refunded when the job is
   collected.
"""

from __future__ import annotations

import base64
import binascii
import datetime
import logging
import re
import shutil
import time
from pathlib import Path

from services import batches, credits, db, imaging, openai_batches, openai_images, worker
from services.catalog import Catalog
from services.config import Settings
from services.openai_images import ImageAPIError

log = logging.getLogger(__name__)

POLL_EVERY = 60  # seconds between two questions about one job
BUILDING_TIMEOUT = 600  # a job still being built after this long lost its worker midway: its items go back
ITEMS_PER_JOB = 1000  # a job's input stays far below OpenAI's 200 MB even with 32,000-character prompts
OUTPUT_DAYS = 3  # how long OpenAI keeps a job's output file for us
MAX_INPUT_BYTES = openai_batches.MAX_FILE_BYTES  # one job's input file at most (OpenAI's limit: 200 MB)
_CUSTOM_ID = re.compile(r"^item:(\d+):(\d+)$")


def folder(settings: Settings, upstream_id: int) -> Path:
    """Where a job's input, output and error files are kept while it runs and is collected."""
    return settings.var_dir / "economy" / str(upstream_id)


def tick(conn: db.Connection, settings: Settings, catalog: Catalog, now: int | None = None,
         poll_every: int = POLL_EVERY) -> dict[str, int]:
    """Send what waits to be sent, ask about open jobs, collect finished ones; counts of what happened."""
    now = now or int(time.time())
    requeue_abandoned(conn, now)
    sent = submit(conn, settings, catalog, now)
    settled = poll(conn, settings, catalog, now, poll_every)
    return {"sent": sent, **settled}


def submit(conn: db.Connection, settings: Settings, catalog: Catalog, now: int) -> int:
    """Send each active economy batch's queued items upstream as a job of its own; how many items went."""
    sent = 0
    for batch in db.economy_batches_waiting(conn):
        model = catalog.get(batch["model"])
        if model is None or model.retired(datetime.date.today()):
            continue  # the synchronous path's model_retired failure is the worker's; here nothing is sent
        items = _reserve(conn, batch, db.economy_items_to_send(conn, batch["id"], ITEMS_PER_JOB), now)
        if not items:
            continue
        with conn.transaction():
            upstream_id = db.upstream_insert(conn, model.id, now)
            db.batch_items_send(conn, [item["id"] for item in items], upstream_id)
        lines = (openai_batches.request_line(
            f"item:{item['id']}:{item['charge']}",
            openai_images.request_body(**worker.call_fields(settings, model, batch, item))) for item in items)
        try:
            input_file, *rest = openai_batches.write_inputs(folder(settings, upstream_id), lines,
                                                            max_bytes=MAX_INPUT_BYTES)
            if rest:  # past OpenAI's 200 MB (prompts near the longest, in a script that JSON escapes): the
                # items that did not fit in the first file go back to the queue for the next job
                items = _keep_first_file(conn, upstream_id, items, input_file, rest)
            file_id = openai_batches.upload(settings.openai_base_url, settings.openai_api_key, input_file)
            job = openai_batches.create(settings.openai_base_url, settings.openai_api_key, file_id,
                                        {"site_batch": str(batch["id"]), "job": str(upstream_id)},
                                        OUTPUT_DAYS * 86400)
        except (ImageAPIError, OSError, ValueError) as exc:
            log.warning("economy: batch %s could not be sent upstream (%s); its items wait for the next try",
                        batch["id"], exc)
            with conn.transaction():
                db.batch_items_unsend(conn, upstream_id)
                db.upstream_update(conn, upstream_id, now, status="not_sent", error_message=str(exc)[:500])
            continue
        db.upstream_update(conn, upstream_id, now, status=str(job.get("status") or "submitted"),
                           openai_batch_id=str(job["id"]), input_file_id=file_id, total=len(items), polled_at=now)
        log.info("economy: batch %s sent as job %s (%s, %d images)", batch["id"], upstream_id, job["id"], len(items))
        sent += len(items)
    return sent


def _keep_first_file(conn: db.Connection, upstream_id: int, items: list[dict], first, rest) -> list[dict]:
    """Send only the items of a job's first input file; the others are queued again (reservations kept)."""
    kept = set(first.custom_ids)
    back = [item["id"] for item in items if f"item:{item['id']}:{item['charge']}" not in kept]
    with conn.transaction():
        db.batch_items_unsend(conn, upstream_id, back)
    for extra in rest:
        extra.path.unlink(missing_ok=True)
    return [item for item in items if f"item:{item['id']}:{item['charge']}" in kept]


def requeue_abandoned(conn: db.Connection, now: int) -> int:
    """Put back in the queue the items of jobs a worker marked but never sent (it died); how many jobs.

    Their reservations stay with them, so the next submission charges nothing again. (If the job
    did reach OpenAI before the worker died, it runs there unseen and is paid upstream once more;
    the subscriber is still charged once.)
    """
    stale = db.upstreams_stale_building(conn, now - BUILDING_TIMEOUT)
    for job in stale:
        with conn.transaction():
            db.batch_items_unsend(conn, job["id"])
            db.upstream_update(conn, job["id"], now, status="not_sent", error_message="abandoned while built")
        log.warning("economy: job %s was abandoned while it was built; its items are queued again", job["id"])
    return len(stale)


def _reserve(conn: db.Connection, batch: dict, items: list[dict], now: int) -> list[dict]:
    """Reserve each item's credits (once per charge); the items that may go. Short of credits, the batch pauses."""
    ready = []
    for item in items:
        if not item["charged"]:
            try:
                credits.reserve(conn, batch["user_id"], batch["credits_per_item"],
                                f"item:{item['id']}:{item['charge']}", now, reason="economy")
            except credits.InsufficientCredits:
                db.batch_set_status(conn, batch["id"], "paused", "no_credits", now)
                break
            db.batch_item_set_charged(conn, item["id"], batch["credits_per_item"])
            item = {**item, "charged": batch["credits_per_item"]}
        ready.append(item)
    return ready


def poll(conn: db.Connection, settings: Settings, catalog: Catalog, now: int,
         poll_every: int = POLL_EVERY) -> dict[str, int]:
    """Ask about each open job (at most once per `poll_every` s each) and collect the finished ones; done, failed."""
    done = failed = 0
    for job in db.upstreams_to_poll(conn, now - poll_every):
        if job["status"] in db.UPSTREAM_OPEN:
            try:
                answer = openai_batches.retrieve(settings.openai_base_url, settings.openai_api_key,
                                                 job["openai_batch_id"])
            except ImageAPIError as exc:
                log.warning("economy: job %s could not be read (%s); asked again next minute", job["id"], exc)
                db.upstream_update(conn, job["id"], now, polled_at=now)
                continue
            counts = answer.get("request_counts") or {}
            job = {**job, "status": str(answer.get("status")), "output_file_id": answer.get("output_file_id"),
                   "error_file_id": answer.get("error_file_id")}
            db.upstream_update(conn, job["id"], now, status=job["status"], polled_at=now,
                               completed=int(counts.get("completed") or 0), failed=int(counts.get("failed") or 0),
                               output_file_id=job["output_file_id"], error_file_id=job["error_file_id"])
        if job["status"] in openai_batches.FINAL_STATES:
            try:
                got = collect(conn, settings, catalog, job, now)
            except ImageAPIError as exc:  # a file could not be read whole: the next tick tries again
                log.warning("economy: job %s could not be collected yet (%s)", job["id"], exc)
                continue
            done, failed = done + got[0], failed + got[1]
    return {"done": done, "failed": failed}


def collect(conn: db.Connection, settings: Settings, catalog: Catalog, job: dict, now: int) -> tuple[int, int]:
    """Settle every waiting item of a finished job from its output and error files; (done, failed)."""
    place = folder(settings, job["id"])
    files = []
    for kind in ("output", "error"):
        file_id = job.get(f"{kind}_file_id")
        if file_id:
            path = place / f"{kind}.jsonl"
            if not path.exists():
                openai_batches.download(settings.openai_base_url, settings.openai_api_key, file_id, path)
            files.append(path)
    done = failed = 0
    batches_touched: set[int] = set()
    for path in files:
        for result in openai_batches.results(path):
            item = _waiting_item(conn, job["id"], result.custom_id)
            if item is None:
                continue
            batch = db.batch_get(conn, item["batch_id"])
            batches_touched.add(batch["id"])
            reason = str((result.error or {}).get("code") or "")
            if result.ok and _store(conn, settings, catalog, batch, item, result, now):
                done += 1
            elif reason == "batch_cancelled":  # never ran: the job was cancelled first
                _cancel(conn, batch, item, now)
            elif reason == "batch_expired":  # never ran within the window
                failed += _fail(conn, batch, item, "economy_expired", worker.FAILURES["economy_expired"],
                                result.request_id, now)
            else:
                code = "refused" if _refused(result.error) else "upstream"
                message = str((result.error or {}).get("message") or worker.FAILURES[code])
                failed += _fail(conn, batch, item, code, f"{worker.FAILURES[code]} ({message})"[:500],
                                result.request_id, now)
    for item in db.items_waiting_of(conn, job["id"]):  # no line came back for these
        batch = db.batch_get(conn, item["batch_id"])
        batches_touched.add(batch["id"])
        if job["status"] == "cancelled":
            _cancel(conn, batch, item, now)
        else:
            code = "economy_expired" if job["status"] == "expired" else "upstream"
            failed += _fail(conn, batch, item, code, worker.FAILURES[code], None, now)
    for batch_id in batches_touched:
        db.batch_finish_if_idle(conn, batch_id, now)
    db.upstream_update(conn, job["id"], now, status="collected")
    shutil.rmtree(place, ignore_errors=True)
    log.info("economy: job %s (%s) collected: %d done, %d failed", job["id"], job["status"], done, failed)
    return done, failed


def _waiting_item(conn: db.Connection, upstream_id: int, custom_id: str) -> dict | None:
    """The item a result line is for, if it is this job's and still waiting for that charge."""
    match = _CUSTOM_ID.match(custom_id)
    if not match:
        return None
    item = db.batch_item_get(conn, int(match.group(1)))
    if item is None or item["upstream_id"] != upstream_id or item["status"] != "waiting" \
            or item["charge"] != int(match.group(2)):
        return None
    return item


def _refused(error: dict | None) -> bool:
    """True when OpenAI's safety system refused the line (nothing to retry)."""
    text = " ".join(str((error or {}).get(key) or "") for key in ("code", "message", "type"))
    return "moderation" in text or "safety" in text or "content_policy" in text


def _store(conn: db.Connection, settings: Settings, catalog: Catalog, batch: dict, item: dict, result,
           now: int) -> bool:
    """Finish one returned image as the synchronous path does and mark its item done; False if the image is bad."""
    model = catalog.get(batch["model"])
    try:
        data = base64.b64decode(result.body["data"][0]["b64_json"], validate=True)
        finished = imaging.finish(data, model.size(batch["resolution"], batch["ratio"]).output, batch["image_format"])
    except (KeyError, IndexError, TypeError, ValueError, binascii.Error, imaging.ImageError, AttributeError):
        return False
    relative = f"{batch['id']}/{item['id']}-{item['charge']}.{'png' if batch['image_format'] == 'png' else 'jpg'}"
    worker.write_atomically(settings.results_dir / relative, finished.data)
    usage = result.body.get("usage") if isinstance(result.body.get("usage"), dict) else {}
    tokens = tuple(usage.get(name) if isinstance(usage.get(name), int) else None
                   for name in ("input_tokens", "output_tokens"))
    if not db.item_settle_done(conn, item["batch_id"], item["id"], relative, len(finished.data), finished.width,
                               finished.height, result.request_id, tokens, now):
        (settings.results_dir / relative).unlink(missing_ok=True)  # settled meanwhile by another collector
    return True


def _fail(conn: db.Connection, batch: dict, item: dict, code: str, message: str, request_id: str | None,
          now: int) -> int:
    """Fail a waiting item and give its credits back, in one transaction; 1 if it was still waiting."""
    with conn.transaction():
        if not db.item_settle_failed(conn, item["batch_id"], item["id"], code, message, request_id, now):
            return 0
        if item["charged"]:
            credits.refund(conn, batch["user_id"], item["charged"], f"item:{item['id']}:{item['charge']}", now)
    return 1


def _cancel(conn: db.Connection, batch: dict, item: dict, now: int) -> None:
    """Cancel a waiting item whose request never ran and give its credits back, in one transaction."""
    with conn.transaction():
        if db.item_settle_cancelled(conn, item["batch_id"], item["id"], now) and item["charged"]:
            credits.refund(conn, batch["user_id"], item["charged"], f"item:{item['id']}:{item['charge']}", now)


def cancel_batch(conn: db.Connection, settings: Settings, user_id: int, batch_id: int, now: int) -> int:
    """A subscriber's Cancel: unstarted items cancelled and refunded, its economy jobs cancelled upstream.

    What a job finishes before the cancel still arrives; the rest is refunded when the job is collected.
    """
    count = batches.cancel(conn, user_id, batch_id, now)
    cancel(conn, settings, batch_id)
    return count


def cancel(conn: db.Connection, settings: Settings, batch_id: int) -> int:
    """Ask OpenAI to cancel the jobs holding this batch's waiting items; how many jobs were asked."""
    asked = 0
    for job in db.upstreams_of_batch(conn, batch_id):
        if job["status"] in ("submitted", "validating", "in_progress", "finalizing") and job["openai_batch_id"]:
            try:
                openai_batches.cancel(settings.openai_base_url, settings.openai_api_key, job["openai_batch_id"])
            except ImageAPIError as exc:
                log.warning("economy: job %s could not be cancelled (%s)", job["id"], exc)
                continue
            db.upstream_update(conn, job["id"], int(time.time()), status="cancelling", polled_at=0)
            asked += 1
    return asked
