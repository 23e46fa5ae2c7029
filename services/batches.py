"""Batches: reading what the subscriber sent, the review, and the batch's life (create, status, retry, cancel, deliver).

`review()` turns the form into a Review: one line per prompt with its final prompt (prompt +
style) and file name, warnings to show, errors that stop it, and the credits it needs against
the credits left. Nothing is charged here: credits are reserved per item by the worker.
Errors and warnings are codes with values; the pages and the API put them into words.
"""

from __future__ import annotations

import csv
import dataclasses
import datetime
import hashlib
import io
import json
import logging
import secrets
from collections.abc import Collection
from pathlib import Path

from services import credits, db, sessions
from services.catalog import RATIOS, Catalog
from services.names import assign

log = logging.getLogger(__name__)

FORMATS = ("png", "jpeg")
SPEEDS = ("now", "economy")
# What a generated image weighs per pixel, on average (measured on the stand-in's and real images: a
# photographic PNG keeps about 1.5 bytes a pixel, a JPEG at the quality the models use about 0.25).
BYTES_PER_PIXEL = {"png": 1.5, "jpeg": 0.25}
UPLOAD_SUFFIXES = (".txt", ".csv")
TEST_RUN_ITEMS = 3  # a test run generates the first 3 prompts and holds the rest until the owner goes on
# The worker_state row holding the models OpenAI refused as set up (worker._model_unavailable writes it):
# {model id: {"reason" (model_not_found or bad_param), "status", "code", "param", "message", "request_id", "since",
# "until_ms"}}. One row, not one per model: worker_state names are at most 32 characters and a snapshot's id alone
# can be longer.
MODELS_DOWN = "models_down"


class BatchError(Exception):
    """A batch action that cannot be done; `code` picks the message."""

    def __init__(self, code: str, **values):
        super().__init__(code)
        self.code = code
        self.values = values


@dataclasses.dataclass(frozen=True)
class Problem:
    """An error or a warning: a code, the line it is about (1-based, or None) and values for its message."""

    code: str
    line: int | None = None
    values: dict = dataclasses.field(default_factory=dict)


@dataclasses.dataclass(frozen=True)
class ReviewItem:
    """One prompt as it will be generated."""

    position: int
    prompt: str
    final_prompt: str
    file_name: str
    typed_name: str | None


@dataclasses.dataclass
class Review:
    """Everything the review page shows, and what `create()` needs."""

    items: list[ReviewItem]
    model: str
    ratio: str
    quality: str
    image_format: str
    style: str
    separator: str
    credits_per_item: int
    credits_needed: int
    credits_left: int
    errors: list[Problem]
    warnings: list[Problem]
    resolution: str = "1K"
    complexity: str | None = None
    speed: str = "now"  # or "economy": OpenAI's Batch API, half the credits, within 24 hours
    notify: bool = False  # email the owner when every item has settled
    lang: str = "en"  # the owner's language when the batch was made: its email is written in it
    now_credits_per_item: int = 0  # the catalogue's price, what "Now" costs (the review shows both speeds)
    size: tuple[int, int] | None = None  # the exact size of every image

    @property
    def download_bytes(self) -> int:
        """A rough size of the whole batch's download: bytes per pixel of the format, times pixels, times images."""
        if not self.size:
            return 0
        per_pixel = BYTES_PER_PIXEL.get(self.image_format, BYTES_PER_PIXEL["png"])
        return int(self.size[0] * self.size[1] * per_pixel * len(self.items))

    @property
    def ok(self) -> bool:
        """True when the batch may start."""
        return not self.errors


def estimated_bytes(batch: dict) -> int:
    """A stored batch's rough download (as Review.download_bytes): width × height × bytes per pixel × images."""
    per_pixel = BYTES_PER_PIXEL.get(batch["image_format"], BYTES_PER_PIXEL["png"])
    return int(batch["width"] * batch["height"] * per_pixel * batch["item_count"])


# --- reading input -------------------------------------------------------------------------------

STYLE_MAX_CHARS = 4000  # the style every prompt carries; a prompt and its style must also fit the model's limit
NAME_MAX_CHARS = 200  # a typed file name (the file name itself keeps at most names.MAX_STEM characters)
CHOICE_MAX_CHARS = 64  # model, ratio, quality, format: the longest valid value is far shorter


@dataclasses.dataclass(frozen=True)
class Lines:
    """The lines read from a field: at most `limit` + 1 of them kept, and how many there were in all."""

    lines: list
    total: int


def split_lines(text: str | None) -> list[str]:
    """Lines of a textarea or file: BOM and CR removed, each trimmed."""
    if not text:
        return []
    return [line.strip() for line in text.lstrip("\ufeff").replace("\r\n", "\n").replace("\r", "\n").split("\n")]


def read_prompts(text: str | None, limit: int) -> Lines:
    """The prompts (one per non-empty line): the first limit + 1 kept, all of them counted (O(length))."""
    prompts, total = [], 0
    for line in split_lines(text):
        if line:
            total += 1
            if total <= limit + 1:
                prompts.append(line)
    return Lines(prompts, total)


def prompt_lines(text: str | None) -> list[str]:
    """One prompt per non-empty line."""
    return [line for line in split_lines(text) if line]


def name_lines(text: str | None) -> list[str | None]:
    """One name per line, in the prompts' order; trailing empty lines dropped, inner ones kept as 'no name'."""
    lines = split_lines(text)
    while lines and not lines[-1]:
        lines.pop()
    return [line or None for line in lines]


def economy_price(full: int) -> int:
    """Credits per image in an economy batch: half the catalogue's price, rounded up (0 stays 0)."""
    return (full + 1) // 2


def final_prompt(prompt: str, style: str, separator: str) -> str:
    """What is sent to the model: the prompt, then the batch's style after the separator (the style is stored once)."""
    return f"{prompt}{separator}{style}" if style else prompt


def read_upload(filename: str, data: bytes, max_bytes: int) -> tuple[list[str], list[str | None]]:
    """Prompts (and names) from a TXT file (one prompt a line) or a CSV (column `prompt`, optional `name`)."""
    if len(data) > max_bytes:
        raise BatchError("upload_too_large", max_kb=max_bytes // 1024)
    if not filename.lower().endswith(UPLOAD_SUFFIXES):
        raise BatchError("upload_type")
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise BatchError("upload_encoding") from None
    if filename.lower().endswith(".txt"):
        return prompt_lines(text), []
    sample = text[:4096]
    delimiter = ";" if sample.count(";") > sample.count(",") else ","
    try:
        rows = list(csv.reader(io.StringIO(text), delimiter=delimiter))
    except csv.Error:  # a bare CR inside a field, a field past the csv module's limit...
        raise BatchError("upload_type") from None
    if not rows:
        return [], []
    header = [cell.strip().lstrip("\ufeff").lower() for cell in rows[0]]
    if "prompt" not in header:
        raise BatchError("upload_no_prompt_column")
    prompt_at, name_at = header.index("prompt"), header.index("name") if "name" in header else None
    prompts, names = [], []
    for row in rows[1:]:
        prompt = row[prompt_at].strip() if prompt_at < len(row) else ""
        if not prompt:
            continue
        prompts.append(prompt)
        name = row[name_at].strip() if name_at is not None and name_at < len(row) else ""
        names.append(name or None)
    return prompts, names if any(names) else []


# --- the review ------------------------------------------------------------------------------------

def review(catalog: Catalog, today: datetime.date, *, prompts: list[str], names: list[str | None], style: str,
           model_id: str, ratio: str, quality: str, image_format: str, separator: str, max_prompts: int,
           credits_left: int, total_prompts: int | None = None, resolution: str = "1K",
           complexity: str = "", unavailable: Collection[str] = (), speed: str = "now",
           notify: bool = False) -> Review:
    """Check the batch and describe it item by item; nothing is stored or charged.

    It costs O(input): past the plan's limit it only says how many prompts were over, and
    names nothing (`total_prompts` is the count of all the prompts sent, when only the first
    max_prompts + 1 were read). `unavailable` holds the ids of the models OpenAI refuses right
    now (`unavailable_models()`): choosing one is an error.
    """
    errors: list[Problem] = []
    warnings: list[Problem] = []
    style = " ".join((style or "").split())
    total = max(total_prompts or 0, len(prompts))
    model = catalog.get(model_id[:CHOICE_MAX_CHARS])
    if model is None:
        errors.append(Problem("unknown_model", values={"model": model_id[:60]}))
    elif model.retired(today):
        errors.append(Problem("model_retired", values={"model": model.label}))
    elif model.id in unavailable:
        errors.append(Problem("model_unavailable", values={"model": model.label}))
    if ratio not in RATIOS:
        errors.append(Problem("unknown_ratio"))
    if image_format not in FORMATS or (model and image_format not in model.formats):
        errors.append(Problem("unknown_format"))
    if model and quality not in model.qualities:
        errors.append(Problem("unknown_quality"))
    if model and resolution not in model.resolutions:
        errors.append(Problem("unknown_resolution", values={"resolutions": ", ".join(model.resolutions)}))
    chosen_complexity = None
    if model and model.complexities:
        chosen_complexity = complexity or model.default_complexity
        if chosen_complexity not in model.complexities:
            errors.append(Problem("unknown_complexity"))
    if len(style) > STYLE_MAX_CHARS:
        errors.append(Problem("style_too_long", values={"max": STYLE_MAX_CHARS, "length": len(style)}))
    if not prompts:
        errors.append(Problem("no_prompts"))
    elif total > max_prompts:
        errors.append(Problem("too_many_prompts", values={"count": total, "max": max_prompts,
                                                          "over": total - max_prompts}))
    if speed not in SPEEDS:
        errors.append(Problem("unknown_speed"))
    priced = model is not None and ratio in RATIOS and model.offers(resolution, ratio, quality)
    full = model.price(resolution, ratio, quality) if priced else 0
    per_item = economy_price(full) if speed == "economy" else full
    size = model.size(resolution, ratio).output if priced else None
    extra = {"resolution": resolution, "complexity": chosen_complexity, "size": size,
             "speed": speed if speed in SPEEDS else "now", "notify": bool(notify), "now_credits_per_item": full}
    if total > max_prompts or len(style) > STYLE_MAX_CHARS:  # nothing more to say until that is fixed
        return Review(items=[], model=model_id, ratio=ratio, quality=quality, image_format=image_format, style=style,
                      separator=separator, credits_per_item=per_item, credits_needed=per_item * total,
                      credits_left=credits_left, errors=errors, warnings=warnings, **extra)
    fmt = image_format if image_format in FORMATS else "png"
    for index, name in enumerate(names[:len(prompts)]):
        if name and len(name) > NAME_MAX_CHARS:
            errors.append(Problem("name_too_long", index + 1, {"max": NAME_MAX_CHARS, "length": len(name)}))
    named = assign([name[:NAME_MAX_CHARS] if name else name for name in names[:len(prompts)]], prompts, fmt)
    items = []
    for index, (prompt, name) in enumerate(zip(prompts, named, strict=True)):
        final = final_prompt(prompt, style, separator)
        if model and len(final) > model.max_prompt_chars:
            errors.append(Problem("prompt_too_long", index + 1, {"max": model.max_prompt_chars,
                                                                "length": len(final)}))
        if name.cleaned:
            warnings.append(Problem("name_cleaned", index + 1, {"typed": name.typed, "name": name.file_name}))
        elif name.renamed:
            warnings.append(Problem("name_renamed", index + 1, {"typed": name.typed or "", "name": name.file_name}))
        items.append(ReviewItem(index + 1, prompt, final, name.file_name, name.typed))
    if names and len(names) != len(prompts):
        warnings.append(Problem("names_count", values={"names": len(names), "prompts": len(prompts)}))
    needed = per_item * len(prompts)
    if per_item and prompts and needed > credits_left:
        errors.append(Problem("not_enough_credits", values={"needed": needed, "left": credits_left}))
    return Review(items=items, model=model_id, ratio=ratio, quality=quality, image_format=image_format,
                  style=style, separator=separator, credits_per_item=per_item, credits_needed=needed,
                  credits_left=credits_left, errors=errors, warnings=warnings, **extra)


# --- what would work instead ---------------------------------------------------------------------

HELPED = ("not_enough_credits", "prompt_too_long")  # the errors the review page helps with (others: the form)


@dataclasses.dataclass(frozen=True)
class Alternative:
    """A version of a batch that cannot start which could: its kind, images, credits and the form fields it changes."""

    # test_run (its first TEST_RUN_ITEMS, the rest held), first (its first `count` prompts), economy,
    # quality or resolution (a cheaper one of the same model), drop (the batch without its too-long lines)
    kind: str
    count: int
    credits: int
    changes: dict = dataclasses.field(default_factory=dict)


def helpable(checked: Review) -> bool:
    """True when the batch can be shown and only too few credits or too-long prompts stop it."""
    return (bool(checked.errors) and bool(checked.items) and checked.size is not None
            and all(problem.code in HELPED for problem in checked.errors))


def kept_lines(checked: Review, names: list[str | None], keep: list[int]) -> dict:
    """The prompts and names fields of only these items (0-based), each name still on its prompt's line."""
    kept_names = [(names[index] or "") if index < len(names) else "" for index in keep]
    while kept_names and not kept_names[-1]:
        kept_names.pop()
    return {"prompts": "\n".join(checked.items[index].prompt for index in keep), "names": "\n".join(kept_names)}


def credits_cover_test_run(checked: Review, test_items: int = TEST_RUN_ITEMS) -> bool:
    """True when only the credits stop a "now" batch and they cover a test run of its first `test_items`."""
    return (checked.speed == "now" and len(checked.items) > test_items and bool(checked.errors)
            and all(problem.code == "not_enough_credits" for problem in checked.errors)
            and checked.credits_per_item * test_items <= checked.credits_left)


def alternatives(catalog: Catalog, checked: Review, names: list[str | None],
                 test_items: int = TEST_RUN_ITEMS) -> list[Alternative]:
    """What could start instead of a `helpable` batch: without its too-long lines, or smaller or cheaper to fit."""
    # Too-long prompts first: the batch without them (unless that leaves nothing) is reviewed again, credits
    # and all. Else each that the credits cover: a test run ("now"), the first prompts, economy ("now"), and
    # the model's dearest cheaper quality, or else resolution.
    model = catalog.get(checked.model)
    if model is None or not helpable(checked):
        return []
    count, left, per_item = len(checked.items), checked.credits_left, checked.credits_per_item
    too_long = {problem.line for problem in checked.errors if problem.code == "prompt_too_long"}
    if too_long:
        keep = [index for index in range(count) if index + 1 not in too_long]
        return [Alternative("drop", len(keep), per_item * len(keep), kept_lines(checked, names, keep))] if keep else []
    found = []
    if credits_cover_test_run(checked, test_items):
        found.append(Alternative("test_run", test_items, per_item * test_items))
    first = min(left // per_item, count - 1) if per_item else 0
    if first >= 1:
        found.append(Alternative("first", first, per_item * first, kept_lines(checked, names, list(range(first)))))
    economy = economy_price(checked.now_credits_per_item) * count
    if checked.speed == "now" and economy <= left:
        found.append(Alternative("economy", count, economy, {"speed": "economy"}))
    cheaper = _cheaper(model, checked, "quality", [(checked.resolution, q) for q in reversed(model.qualities)]) \
        or _cheaper(model, checked, "resolution", [(r, checked.quality) for r in reversed(model.resolutions)])
    if cheaper is not None:
        found.append(cheaper)
    return found


def _cheaper(model, checked: Review, kind: str, options: list[tuple[str, str]]) -> Alternative | None:
    """Among (resolution, quality) options, the dearest one cheaper than the batch's whose total fits its credits."""
    count, best = len(checked.items), None
    for resolution, quality in options:
        if not model.offers(resolution, checked.ratio, quality):
            continue
        full = model.price(resolution, checked.ratio, quality)
        per_item = economy_price(full) if checked.speed == "economy" else full
        if per_item < checked.credits_per_item and per_item * count <= checked.credits_left \
                and (best is None or per_item > best.credits // count):
            best = Alternative(kind, count, per_item * count, {kind: quality if kind == "quality" else resolution})
    return best


# --- the batch's life --------------------------------------------------------------------------------

def create(conn: db.Connection, catalog: Catalog, user_id: int, checked: Review, request_token: str,
           now: int, test_run: bool = False, max_open: int = 5) -> tuple[int, bool]:
    """Store a reviewed batch and its items (queued); return (id, created). The same token finds the same batch.

    A subscriber has at most `max_open` unfinished batches (BatchError too_many_open). A test run
    queues the first TEST_RUN_ITEMS items and holds the rest (nothing charged for them)
    until `go_on()`. A model OpenAI refuses right now (see `unavailable_models()`) takes no new
    batch (BatchError model_unavailable).
    """
    if not checked.ok:
        raise BatchError(checked.errors[0].code)
    token = (request_token or secrets.token_urlsafe(16))[:64]
    existing = db.batch_by_token(conn, user_id, token)
    if existing is not None:
        return existing["id"], False
    if checked.model in unavailable_models(conn, now * 1000):
        model = catalog.get(checked.model)
        raise BatchError("model_unavailable", model=model.label if model else checked.model)
    size = catalog.get(checked.model).size(checked.resolution, checked.ratio).output
    with conn.transaction():
        # The user's row is locked first, so two Starts at once cannot both pass the count.
        db.user_lock(conn, user_id)
        if db.batches_open_count(conn, user_id) >= max_open:
            raise BatchError("too_many_open", max=max_open)
        batch_id = db.batch_insert(conn, user_id, token, checked, size, now)
        db.batch_items_insert(conn, batch_id, [(i.position, i.prompt, i.file_name) for i in checked.items], now,
                              hold_after=TEST_RUN_ITEMS if test_run else None)
    return batch_id, True


def unavailable_models(conn: db.Connection, now_ms: int, lock: bool = False) -> dict[str, dict]:
    """The models OpenAI refused as set up, each with its mark, while the mark lasts (QUOTA_PAUSE_SECONDS)."""
    raw = db.worker_state_get(conn, MODELS_DOWN, lock=lock)
    try:
        marks = json.loads(raw) if raw else {}
    except ValueError:
        return {}
    if not isinstance(marks, dict):
        return {}
    return {model: mark for model, mark in marks.items()
            if isinstance(mark, dict) and isinstance(mark.get("until_ms"), int) and mark["until_ms"] > now_ms}


def started_with(conn: db.Connection, user_id: int, request_token: str) -> int | None:
    """The id of the batch this one-time token already started (Start pressed twice), or None."""
    found = db.batch_by_token(conn, user_id, request_token[:64]) if request_token else None
    return found["id"] if found else None


def owned(conn: db.Connection, user_id: int, batch_id: int) -> dict:
    """The user's batch, or BatchError not_found (someone else's batch is not found either)."""
    if not 0 < batch_id < 2**63:  # SQLite cannot even look such a number up
        raise BatchError("not_found")
    batch = db.batch_get(conn, batch_id)
    if batch is None or batch["user_id"] != user_id:
        raise BatchError("not_found")
    return batch


def pause_lasts(raw: str | None, now_ms: int) -> dict | None:
    """The service-wide pause stored as worker_state 'pause' (JSON with until_ms), while it lasts; else None."""
    try:
        pause = json.loads(raw) if raw else None
    except ValueError:
        return None
    return pause if isinstance(pause, dict) and isinstance(pause.get("until_ms", 0), int) \
        and pause.get("until_ms", 0) > now_ms else None


def poll_head(conn: db.Connection, user_id: int, batch_id: int, now_ms: int) -> dict:
    """The user's batch as its page and poll need it, read in one query (economy batches: two), with its tag.

    The batch row carries credits_left (the owner's) and service_paused (an active batch while
    the whole service is paused). `tag` changes whenever anything the poll answers does: the
    batch's change count, those two, and an economy batch's upstream progress. A poll whose
    cursor and validator match it has nothing new (304) and costs no further query.
    """
    if not 0 < batch_id < 2**63:  # SQLite cannot even look such a number up
        raise BatchError("not_found")
    batch = db.batch_poll_head(conn, batch_id)
    if batch is None or batch["user_id"] != user_id:
        raise BatchError("not_found")
    return _head(conn, batch, now_ms)


def quick_head(conn: db.Connection, settings, session_id: str | None, batch_id: int, now_ms: int) -> dict | None:
    """poll_head's answer found with the session in one query, or None when that cannot be done: no session,
    someone else's batch or none, a session due a touch or gone (the caller loads the session as every request
    does, and gets the answer, or the error, from there). A poll answered from here costs one query when nothing
    changed (304), and one more for the items when something did."""
    if not session_id or not 0 < batch_id < 2**63:
        return None
    row = db.batch_poll_check(conn, session_id, batch_id)
    if row is None:
        return None
    session = {"expires_at": row.pop("session_expires_at"), "last_seen_at": row.pop("session_last_seen_at")}
    if not sessions.settled(settings, session, now_ms // 1000):
        return None
    return _head(conn, row, now_ms)


def _head(conn: db.Connection, batch: dict, now_ms: int) -> dict:
    """poll_head's answer from a batch_poll_head row."""
    batch["credits_left"] = batch["credits_left"] or 0
    raw_pause = batch.pop("service_pause")
    batch["service_paused"] = batch["status"] == "active" and pause_lasts(raw_pause, now_ms) is not None
    economy = upstream_progress(conn, batch["id"]) if batch["speed"] == "economy" else None
    return {"batch": batch, "economy": economy, "tag": _tag(batch["change_seq"], batch, economy)}


def _tag(cursor: int, batch: dict, economy: dict | None) -> str:
    """What a poll's answer depends on, as a short validator: the cursor, the credits, the pause, OpenAI's progress."""
    tag = f"{cursor}-{batch['credits_left']}-{int(batch['service_paused'])}"
    if economy:
        tag += "-" + hashlib.sha256(json.dumps(economy, sort_keys=True).encode()).hexdigest()[:8]
    return tag


def status(conn: db.Connection, user_id: int, batch_id: int, now_ms: int, since: str | None = None,
           head: dict | None = None) -> dict:
    """The batch and its items for its page and poll: every item (full), or only those changed since a cursor.

    `since` is the `cursor` of an earlier answer. It gets a delta (full False: the items changed
    since, the counts of all) unless it is unknown (not a number, 0, ahead of the batch) or too
    old (more changes behind than the batch has items: a page asleep for long), which get every
    item. The answer's `cursor` covers every item it carries: as changes of a batch commit in the
    order of their numbers, nothing at or below it can still appear, so nothing is missed or sent
    twice. Three queries (a delta four; economy batches one more).
    """
    head = head or poll_head(conn, user_id, batch_id, now_ms)
    batch, seq = head["batch"], head["batch"]["change_seq"]
    cursor = int(since) if since and since.isascii() and since.isdigit() and len(since) < 19 else 0
    full = not 0 < cursor <= seq or seq - cursor > batch["item_count"]
    items = db.batch_items_progress(conn, batch_id, None if full else cursor) if full or cursor < seq else []
    counts: dict[str, int] = {}
    failures: dict[str, int] = {}
    if full:  # every item is here: counted from them
        for item in items:
            counts[item["status"]] = counts.get(item["status"], 0) + 1
            if item["status"] == "failed" and item["error_code"]:
                failures[item["error_code"]] = failures.get(item["error_code"], 0) + 1
    else:
        for row in db.batch_item_counts(conn, batch_id):
            counts[row["status"]] = counts.get(row["status"], 0) + row["n"]
            if row["status"] == "failed" and row["error_code"]:
                failures[row["error_code"]] = failures.get(row["error_code"], 0) + row["n"]
    cursor = max([seq, *(item["changed_seq"] for item in items)])
    return {**head, "items": items, "counts": counts, "failures": failures, "full": full, "cursor": str(cursor),
            "tag": _tag(cursor, batch, head["economy"])}


def upstream_progress(conn: db.Connection, batch_id: int) -> dict:
    """What OpenAI reports of the jobs holding this economy batch's waiting items: their status and counts."""
    jobs = db.upstreams_of_batch(conn, batch_id)
    statuses = sorted({job["status"] for job in jobs})
    return {"status": statuses[0] if len(statuses) == 1 else ("mixed" if statuses else None),
            "total": sum(job["total"] for job in jobs), "completed": sum(job["completed"] for job in jobs),
            "failed": sum(job["failed"] for job in jobs), "since": min((job["created_at"] for job in jobs),
                                                                       default=None)}


def retry_failed(conn: db.Connection, user_id: int, batch_id: int, now: int, item_id: int | None = None) -> int:
    """Queue the failed items (or one of them) again, each a new charge; the batch becomes active. Returns how many.

    Images the safety system refused are left alone: the same prompt would be refused again (see
    `edit_and_retry`).
    """
    owned(conn, user_id, batch_id)
    with conn.transaction():
        count = db.batch_items_retry_failed(conn, batch_id, now, item_id, skip_code="refused")
        if count:
            db.batch_set_status(conn, batch_id, "active", None, now)
    return count


def edit_and_retry(conn: db.Connection, catalog: Catalog, user_id: int, batch_id: int, item_id: int, prompt: str,
                   now: int) -> int:
    """A refused image's prompt rewritten, and the image queued again as a new charge; 1, or BatchError."""
    batch = owned(conn, user_id, batch_id)
    item = db.batch_item_get(conn, item_id) if 0 < item_id < 2**63 else None
    if item is None or item["batch_id"] != batch_id:
        raise BatchError("not_found")
    prompt = " ".join((prompt or "").split())
    if not prompt:
        raise BatchError("no_prompts")
    model = catalog.get(batch["model"])
    limit = model.max_prompt_chars if model else 32000
    final = final_prompt(prompt, batch["style"], batch["prompt_separator"])
    if len(final) > limit:
        raise BatchError("prompt_too_long", line=item["position"], max=limit, length=len(final))
    with conn.transaction():
        if item["status"] != "failed" or item["error_code"] != "refused" \
                or not db.batch_item_edit_prompt(conn, batch_id, item_id, prompt):
            raise BatchError("not_ready")
        db.batch_items_retry_failed(conn, batch_id, now, item_id)
        db.batch_set_status(conn, batch_id, "active", None, now)
    return 1


def resume(conn: db.Connection, user_id: int, batch_id: int, now: int) -> bool:
    """Let a paused batch go on (stopped by its owner, or out of credits); True when it was paused."""
    batch = owned(conn, user_id, batch_id)
    if batch["status"] != "paused":
        return False
    with conn.transaction():
        db.batch_set_status(conn, batch_id, "active", None, now)
        db.batch_finish_if_idle(conn, batch_id, now)
    return True


def stop(conn: db.Connection, user_id: int, batch_id: int, now: int) -> bool:
    """Pause an active batch: its queued items wait (nothing charged for them) until `resume()`."""
    batch = owned(conn, user_id, batch_id)
    if batch["status"] != "active":
        return False
    db.batch_set_status(conn, batch_id, "paused", "stopped", now)
    return True


def go_now(conn: db.Connection, catalog: Catalog, user_id: int, batch_id: int, now: int) -> int:
    """After an economy batch expired: make the images OpenAI did not make in time now, at the full price.

    The batch becomes a "now" batch at the catalogue's price per image (the images already made
    keep what they cost); its `economy_expired` items are queued again, each a new charge that
    the worker reserves as it makes them. Returns how many were queued (0 if there were none).
    """
    batch = owned(conn, user_id, batch_id)
    model = catalog.get(batch["model"])
    if batch["speed"] != "economy" or model is None:
        return 0
    price = model.price(batch["resolution"], batch["ratio"], batch["quality"])
    with conn.transaction():
        count = db.batch_items_retry_failed(conn, batch_id, now, error_code="economy_expired")
        if count:
            db.batch_set_speed(conn, batch_id, "now", price, now)
            db.batch_set_status(conn, batch_id, "active", None, now)
    return count


def go_on(conn: db.Connection, user_id: int, batch_id: int, now: int) -> int:
    """After a test run: queue the items it held back; returns how many."""
    owned(conn, user_id, batch_id)
    with conn.transaction():
        count = db.batch_items_release_held(conn, batch_id)
        if count:
            db.batch_set_status(conn, batch_id, "active", None, now)
    return count


def recent(conn: db.Connection, user_id: int, limit: int = 20) -> list[dict]:
    """The user's latest batches, newest first."""
    return db.batches_of(conn, user_id, limit)


def economy_unfinished(conn: db.Connection, user_id: int) -> list[dict]:
    """The user's economy batches still being sent or waiting for OpenAI (the library lists them)."""
    return db.batches_economy_unfinished(conn, user_id)


OWNED_IDS = 1000  # the most batch ids a page vouches for (the browser adopts its rows kept from before owners)


def owned_ids(conn: db.Connection, user_id: int) -> list[int]:
    """The ids of the user's latest batches: the browser may adopt its rows of them that carry no owner yet."""
    return [row["id"] for row in db.batches_of(conn, user_id, OWNED_IDS, ids_only=True)]


def delete_history(conn: db.Connection, settings_results: Path, user_id: int) -> int:
    """Delete the user's finished batches and their items (and any image file still waiting); returns how many.

    Unfinished batches stay: their credits are reserved item by item and must run out or come back.
    """
    deleted = 0
    while found := db.batches_finished(conn, user_id=user_id):
        deleted += _delete_batches(conn, settings_results, found)
    return deleted


def purge_history(conn: db.Connection, settings_results: Path, before: int) -> int:
    """Delete every finished batch last changed before `before` (cleanup; prompts are personal data)."""
    deleted = 0
    while found := db.batches_finished(conn, before=before):
        deleted += _delete_batches(conn, settings_results, found)
    return deleted


def _delete_batches(conn: db.Connection, settings_results: Path, found: list[dict]) -> int:
    deleted = 0
    for batch in found:
        with conn.transaction():
            paths = db.batch_delete(conn, batch["id"])
        for path in paths:
            (settings_results / path).unlink(missing_ok=True)
        folder = settings_results / str(batch["id"])
        if folder.is_dir() and not any(folder.iterdir()):
            folder.rmdir()
        deleted += 1
    return deleted


def cancel(conn: db.Connection, user_id: int, batch_id: int, now: int) -> int:
    """Cancel the items that have not started (refunding any that held a reservation); returns how many."""
    batch = owned(conn, user_id, batch_id)
    with conn.transaction():
        waiting = db.batch_items_queued(conn, batch_id)
        for item in waiting:
            if db.batch_item_cancel(conn, batch_id, item["id"], now) and item["charged"]:
                credits.refund(conn, batch["user_id"], item["charged"], f"item:{item['id']}:{item['charge']}", now)
        db.batch_finish_if_idle(conn, batch_id, now)
    return len(waiting)


def result_file(conn: db.Connection, settings_results: Path, user_id: int, batch_id: int, item_id: int) -> dict:
    """A finished item with its file on disk, or BatchError (not_found, not_ready, gone)."""
    owned(conn, user_id, batch_id)
    item = db.batch_item_get(conn, item_id) if 0 < item_id < 2**63 else None
    if item is None or item["batch_id"] != batch_id:
        raise BatchError("not_found")
    if item["status"] == "delivered" or item["status"] == "expired":
        raise BatchError("gone")
    if item["status"] != "done" or not item["result_path"]:
        raise BatchError("not_ready")
    path = settings_results / item["result_path"]
    if not path.is_file():
        raise BatchError("gone")
    return {**item, "path": path}


def acknowledge(conn: db.Connection, settings_results: Path, user_id: int, batch_id: int, item_id: int,
                now: int) -> bool:
    """The browser has the image: delete the server's copy. True the first time, False after."""
    owned(conn, user_id, batch_id)
    item = db.batch_item_get(conn, item_id) if 0 < item_id < 2**63 else None
    if item is None or item["batch_id"] != batch_id:
        raise BatchError("not_found")
    if item["status"] == "delivered":
        return False
    if item["status"] != "done":
        raise BatchError("not_ready")
    if not db.batch_item_delivered(conn, batch_id, item_id, now):
        return False
    path = settings_results / item["result_path"]
    path.unlink(missing_ok=True)
    return True
