"""The JSON API the batch pages use: create a batch, poll it, fetch and acknowledge images, retry, cancel, resume.

Every call needs a signed-in user; POSTs need the CSRF token (header X-CSRF-Token); someone
else's batch answers 404 like a missing one; creating and retrying need a plan that allows
generating. Errors are {"error": {"code", "message"}} in the user's language.
"""

from __future__ import annotations

import datetime
import json

import bottle

from routes import web
from services import batches, credits, economy, worker

_ = web._

MESSAGES = {
    "sign_in": _("Sign in first."),
    "no_plan": _("Your plan does not allow new batches right now: subscribe, or update your payment."),
    "blocked": _("Your account is blocked: new batches are not possible. Write to us if you think this is a mistake."),
    "not_found": _("There is no such batch."),
    "not_ready": _("This image is not ready yet."),
    "gone": _("This image has already been collected or has expired."),
    "bad_request": _("The request could not be read."),
    "no_prompts": _("Add at least one prompt (one per line)."),
    "too_many_prompts": _("That is %(count)s prompts, %(over)s over the limit: a batch takes at most %(max)s."),
    "style_too_long": _("The style is %(length)s characters long; it may have at most %(max)s."),
    "name_too_long": _("Name %(line)s is %(length)s characters long; a name may have at most %(max)s."),
    "too_many_open": _("You already have %(max)s unfinished batches. Let one finish, or cancel one, before you "
                       "start another."),
    "prompt_too_long": _("Line %(line)s: %(length)s characters, the model takes %(max)s (with the style)."),
    "unknown_model": _("Choose one of the models on the form."),
    "model_retired": _("%(model)s has been retired: choose another model."),
    "model_unavailable": _("%(model)s is unavailable right now: choose another model."),
    "unknown_ratio": _("Choose 1:1, 9:16 or 16:9."),
    "unknown_format": _("Choose PNG or JPG."),
    "unknown_quality": _("Choose one of the model's qualities."),
    "unknown_resolution": _("Choose 1K, 2K or 4K (this model offers %(resolutions)s)."),
    "unknown_complexity": _("Choose a complexity of low, medium or high."),
    "unknown_speed": _("Choose Now or Economy."),
    "not_enough_credits": _("This batch needs %(needed)s credits and you have %(left)s."),
    "upload_too_large": _("The file is too large (at most %(max_kb)s KB)."),
    "upload_type": _("Upload a .txt file (one prompt per line) or a .csv file with a prompt column."),
    "upload_encoding": _("The file must be UTF-8 text."),
    "upload_no_prompt_column": _("The CSV file needs a header row with a column named prompt."),
}

FAILURE_MESSAGES = {
    "refused": _("Refused by the safety system: rephrase the prompt. Its credits came back."),
    "invalid": _("The image service did not accept this request. Its credits came back."),
    "upstream": _("The image service kept failing. Its credits came back; retry it later."),
    "timeout": _("The image service took too long. Its credits came back; retry it later."),
    "no_credits": _("Not enough credits left: the batch is paused."),
    "model_retired": _("This model has been retired. Nothing was charged."),
    "economy_expired": _("OpenAI did not make it within 24 hours. Its credits came back; retry it now or later."),
}


# Why a batch waits: its own pause_reason, or service_paused while every worker is paused (the OpenAI account
# refused work). The batch page (routes/studio.py) and describe() say the same.
PAUSES = {
    "no_credits": _("Paused: your credits ran out. The remaining images wait, and nothing is charged for them. "
                    "Resume when your credits are renewed, or cancel them."),
    "stopped": _("Stopped: the remaining images wait, and nothing is charged for them until you resume."),
    "billing_hold": _("On hold: a payment of yours is disputed. The remaining images wait, and nothing is charged "
                      "for them; resume once the dispute is settled."),
    "model_unavailable": _("Paused: this model is unavailable right now. The remaining images wait, and nothing is "
                           "charged for them; resume later, or cancel them."),
    "service_paused": _("The image service is unavailable on our side for a few minutes. Your images wait in the "
                        "queue and nothing is charged for them; this page goes on by itself."),
}


def message(code: str, **values) -> str:
    """The message for a code in the user's language, with its values filled in."""
    text = web.translate(MESSAGES.get(code, MESSAGES["bad_request"]))
    try:
        return text % values if values else text
    except (KeyError, TypeError, ValueError):
        return text


def fail(status: int, code: str, **values) -> bottle.HTTPResponse:
    """A JSON error response."""
    return web.json_error(status, code, message(code, **values))


def _json(status: int, body: dict, etag: str | None = None) -> bottle.HTTPResponse:
    headers = {"Content-Type": "application/json", "Cache-Control": "no-store"}
    if etag:
        headers["ETag"] = etag
    # Compact: a full poll of 100 items is 5 % smaller and quicker to write without the spaces.
    return bottle.HTTPResponse(status=status, body=json.dumps(body, separators=(",", ":")), headers=headers)


def etag_of(tag: str) -> str:
    """A poll's validator as an ETag: the state's tag and the language its messages are in."""
    return f'W/"{tag}-{web.lang()}"'


def unchanged(etag: str) -> bottle.HTTPResponse:
    """A 304: the browser's copy is current (no body; App.wsgi adds only the request id)."""
    return bottle.HTTPResponse(status=304, headers={"ETag": etag, "Cache-Control": "no-store"})


def not_modified(etag: str) -> bool:
    """True when the request's If-None-Match names this ETag (the browser has this answer already)."""
    sent = web.header("If-None-Match") or ""
    return etag in (part.strip() for part in sent.split(","))


def describe(state: dict) -> dict:
    """A batch's status as the page reads it, with why it waits (pause_reason) and that in words (pause_message).

    An active batch while every worker is paused reads pause_reason "service_paused"; a batch's
    own reason (stopped, no_credits, model_unavailable...) is kept.
    """
    batch, items = state["batch"], state["items"]
    # The style and its separator come once: an item's final prompt is its prompt, then the separator and the
    # style when there is one (batches.final_prompt), which the page works out rather than receive 100 times.
    shown = {key: batch[key] for key in ("id", "status", "pause_reason", "model", "ratio", "quality", "image_format",
                                         "resolution", "complexity", "width", "height", "item_count",
                                         "credits_per_item", "created_at", "speed", "style", "prompt_separator")}
    if batch["service_paused"] and not batch["pause_reason"]:
        shown["pause_reason"] = "service_paused"
    reason = shown["pause_reason"]
    shown["pause_message"] = web.translate(PAUSES[reason]) if reason in PAUSES else None
    return {
        "now": web.now(),
        "batch": shown,
        "counts": state["counts"],
        # What the page's buttons need: the owner's credits now, and how many failed images were refused.
        "credits_left": batch["credits_left"],
        "refused": state.get("failures", {}).get("refused", 0),
        # An economy batch: what OpenAI reports of its jobs (status, total, completed, failed, since).
        "economy": state.get("economy"),
        "items": [{
            "id": item["id"], "position": item["position"], "prompt": item["prompt"],
            "file_name": item["file_name"], "status": item["status"],
            "error_code": item["error_code"],
            "error": web.translate(FAILURE_MESSAGES[item["error_code"]])
            if item["status"] == "failed" and item["error_code"] in FAILURE_MESSAGES else None,
            "bytes": item["result_bytes"], "width": item["result_width"], "height": item["result_height"],
            "started_at": item["started_at"], "finished_at": item["finished_at"],
        } for item in items],
        # Delta polls: pass `cursor` back as ?since= to get only the items changed after this answer.
        "cursor": state["cursor"],
        "full": state["full"],
    }


def register(app: web.App) -> None:
    """Add the /api/batches routes."""

    def user_or_401():
        user = web.current_user()
        if user is None:
            raise fail(401, "sign_in")
        return user

    def may_generate():
        found = web.plan()
        if not found.can_generate:
            raise fail(403, "blocked" if found.state == "blocked" else "no_plan")

    def batch_call(action):
        try:
            return action()
        except batches.BatchError as exc:
            raise fail(404 if exc.code == "not_found" else 409 if exc.code in ("not_ready", "gone") else 400,
                       exc.code, **exc.values) from None

    def json_body():
        """The request's JSON object, None for a form post; a body that is not a JSON object is a 400."""
        if not bottle.request.content_type.startswith("application/json"):
            return None
        try:
            data = bottle.request.json
            # Lone surrogates ("\ud800") parse, but cannot be stored or shown: refuse them here.
            json.dumps(data, ensure_ascii=False).encode("utf-8")
        except bottle.HTTPError:
            raise fail(413 if bottle.request.content_length > bottle.request.MEMFILE_MAX else 400,
                       "bad_request") from None
        except (RecursionError, UnicodeError, ValueError):  # nested thousands deep; not UTF-8 once decoded
            raise fail(400, "bad_request") from None
        if not isinstance(data, dict):
            raise fail(400, "bad_request")
        return data

    def form_value(name, default=""):
        data = json_body()
        if data is not None:
            value = data.get(name, default)
            return value if isinstance(value, str) else default
        return bottle.request.forms.getunicode(name, default=default) or default

    @app.post("/api/batches", max_body=app.settings.form_max_bytes)
    def create_batch():
        """Create a batch from the reviewed form (the same request_token returns the same batch)."""
        user = user_or_401()
        may_generate()
        already = batches.started_with(web.conn(), user["id"], form_value("request_token"))
        if already is not None:  # the same Start again: that batch, before anything is re-checked
            return _json(200, describe(batches.status(web.conn(), user["id"], already, web.now() * 1000)))
        limit = app.settings.plan_max_prompts
        try:
            read = batches.read_prompts(form_value("prompts"), limit)
            prompts, total, names = read.lines, read.total, batches.name_lines(form_value("names"))
            upload = bottle.request.files.get("prompts_file") if json_body() is None else None
            if upload is not None and upload.raw_filename:
                prompts, names = batches.read_upload(upload.raw_filename,
                                                     upload.file.read(app.settings.upload_max_bytes + 1),
                                                     app.settings.upload_max_bytes)
                total, prompts = len(prompts), prompts[:limit + 1]
                names = batches.name_lines(form_value("names")) or names
        except batches.BatchError as exc:
            return fail(400, exc.code, **exc.values)
        except ValueError:
            return fail(400, "bad_request")
        checked = batches.review(
            app.catalog, datetime.date.today(), prompts=prompts, names=names, style=form_value("style"),
            model_id=form_value("model"), ratio=form_value("ratio"), quality=form_value("quality"),
            image_format=form_value("format"), separator=app.settings.prompt_separator,
            max_prompts=limit, credits_left=credits.balance(web.conn(), user["id"]), total_prompts=total,
            unavailable=batches.unavailable_models(web.conn(), web.now() * 1000),
            resolution=form_value("resolution") or "1K", complexity=form_value("complexity"),
            speed=form_value("speed") or "now", notify=app.settings.mail_enabled and form_value("notify") == "1")
        checked.lang = web.lang()
        if not checked.ok:
            first = checked.errors[0]
            body = {"error": {"code": first.code, "message": message(first.code, line=first.line, **first.values)},
                    "errors": [{"code": p.code, "line": p.line, "message": message(p.code, line=p.line, **p.values)}
                               for p in checked.errors]}
            return _json(422, body)
        try:
            batch_id, created = batches.create(web.conn(), app.catalog, user["id"], checked,
                                               form_value("request_token"), web.now(),
                                               form_value("test_run") == "1" and checked.speed == "now",
                                               max_open=app.settings.max_open_batches)
        except batches.BatchError as exc:
            return fail(409, exc.code, **exc.values)
        if created:
            worker.kick(app.settings)
        state = batches.status(web.conn(), user["id"], batch_id, web.now() * 1000)
        return _json(201 if created else 200, describe(state))

    @app.get("/api/batches/<batch_id:int>")
    def batch_status(batch_id):
        """The batch and its items; with ?since=<cursor>, only the items changed since; 304 when nothing changed."""
        now_ms = web.now() * 1000
        since = bottle.request.query.get("since")
        # An open page asking again: the session and the batch in one query, which is all a "nothing new" costs.
        head = batches.quick_head(web.conn(), app.settings, web.session_id(), batch_id, now_ms)
        if head is None:  # no settled session owning the batch: the session is loaded (touched) as for any request
            user = user_or_401()
            head = batch_call(lambda: batches.poll_head(web.conn(), user["id"], batch_id, now_ms))
        if since == str(head["batch"]["change_seq"]) and not_modified(etag_of(head["tag"])):
            return unchanged(etag_of(head["tag"]))
        state = batches.status(web.conn(), head["batch"]["user_id"], batch_id, now_ms, since=since, head=head)
        return _json(200, describe(state), etag_of(state["tag"]))

    @app.get("/api/batches/<batch_id:int>/items/<item_id:int>/image")
    def item_image(batch_id, item_id):
        """A finished image, under its file name, never cached."""
        user = user_or_401()
        item = batch_call(lambda: batches.result_file(web.conn(), app.settings.results_dir, user["id"], batch_id,
                                                      item_id))
        response = bottle.static_file(item["path"].name, root=str(item["path"].parent),
                                      mimetype="image/png" if item["path"].suffix == ".png" else "image/jpeg",
                                      download=item["file_name"])
        response.set_header("Cache-Control", "no-store")
        return response

    @app.post("/api/batches/<batch_id:int>/items/<item_id:int>/ack")
    def acknowledge(batch_id, item_id):
        """The browser stored the image: the server deletes its copy."""
        user = user_or_401()
        first = batch_call(lambda: batches.acknowledge(web.conn(), app.settings.results_dir, user["id"], batch_id,
                                                       item_id, web.now()))
        return _json(200, {"acknowledged": True, "first": first})

    def queue_more(batch_id, action):
        """Run an action that queues items again (a plan is needed); kick a worker when it queued some."""
        user = user_or_401()
        may_generate()
        count = batch_call(lambda: action(web.conn(), user["id"], batch_id, web.now()))
        if count:
            worker.kick(app.settings)
        return _json(200, {"queued": count})

    @app.post("/api/batches/<batch_id:int>/items/<item_id:int>/edit", max_body=app.settings.form_max_bytes)
    def edit_item(batch_id, item_id):
        """A refused image: its new prompt (JSON or form `prompt`), then made again as a new charge."""
        return queue_more(batch_id, lambda conn, user_id, batch, now: batches.edit_and_retry(
            conn, app.catalog, user_id, batch, item_id, form_value("prompt"), now))

    @app.post("/api/batches/<batch_id:int>/retry")
    def retry(batch_id):
        """Queue the failed items again (each a new charge)."""
        return queue_more(batch_id, batches.retry_failed)

    @app.post("/api/batches/<batch_id:int>/continue")
    def go_on(batch_id):
        """After a test run: queue the items it held back."""
        return queue_more(batch_id, batches.go_on)

    @app.post("/api/batches/<batch_id:int>/now")
    def go_now(batch_id):
        """After an economy batch expired: queue the images OpenAI did not make in time as "now", at full price."""
        return queue_more(batch_id, lambda conn, user_id, batch, now: batches.go_now(conn, app.catalog, user_id,
                                                                                      batch, now))

    @app.post("/api/batches/<batch_id:int>/cancel")
    def cancel(batch_id):
        """Cancel the items that have not started (nothing is charged for them)."""
        user = user_or_401()
        return _json(200, {"cancelled": batch_call(lambda: economy.cancel_batch(web.conn(), app.settings, user["id"],
                                                                                batch_id, web.now()))})

    @app.post("/api/batches/<batch_id:int>/resume")
    def resume(batch_id):
        """Let a paused batch go on."""
        user = user_or_401()
        may_generate()
        resumed = batch_call(lambda: batches.resume(web.conn(), user["id"], batch_id, web.now()))
        if resumed:  # a batch that was not paused: nothing changed, nothing to start
            worker.kick(app.settings)
        return _json(200, {"resumed": resumed})

    @app.post("/api/batches/<batch_id:int>/stop")
    def stop(batch_id):
        """Pause an active batch: the items not started wait, uncharged."""
        user = user_or_401()
        return _json(200, {"stopped": batch_call(lambda: batches.stop(web.conn(), user["id"], batch_id, web.now()))})
