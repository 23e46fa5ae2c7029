"""The subscriber's pages: compose a batch, review it, start it, watch it, and the library.

Compose and review are plain HTML forms (no JavaScript); the batch page is server-rendered and
one ES module (public/js/batch.js) collects the images into IndexedDB; the library page lists
what this browser keeps (public/js/library.js). The buttons of the batch page are forms too,
so everything but collecting the images works without JavaScript.
"""

from __future__ import annotations

import datetime
import secrets

import babel.numbers
import bottle

from routes import api, web
from services import batches, credits, economy, worker
from services.batches import TEST_RUN_ITEMS

_ = web._

WARNINGS = {
    "name_cleaned": _("Name %(typed)s had characters a file name cannot hold: it becomes %(name)s."),
    "name_renamed": _("Name %(typed)s was already used: it becomes %(name)s."),
    "names_count": _("There are %(names)s names for %(prompts)s prompts: prompts without a name get one from "
                     "their text, extra names are left out."),
}

EDIT_ERRORS = {
    "no_prompts": _("Write the new prompt first."),
    "prompt_too_long": _("That prompt is too long for this model: at most %(max)s characters with the style."),
    "not_ready": _("This image is no longer waiting for a new prompt."),
}

# The errors whose message names its line itself ("Line 5: ...", "Name 5 ..."): the list does not say it again.
LINE_SAID = ("prompt_too_long", "name_too_long")
SHORT_PROMPT = 80  # the characters of a too-long prompt the review quotes

PAUSES = api.PAUSES  # why a batch waits (model_unavailable among them), in one place for this page and the API

FIELDS = ("prompts", "names", "style", "model", "quality", "format", "ratio", "resolution", "complexity", "speed")
QUALITY_LABELS = {"low": _("Low: drafts, fastest"), "medium": _("Medium"), "high": _("High: finest, slower"),
                  "xhigh": _("Extra high"), "max": _("Maximum: slowest")}
CSV_TEMPLATE = "\ufeffprompt,name\r\na red fox in the snow at dawn,fox\r\na lighthouse at dusk,\r\n"


def _fill(text: str, values: dict) -> str:
    """Fill a translated message's %(name)s placeholders, leaving it whole if one is missing."""
    try:
        return text % values if values else text
    except (KeyError, TypeError, ValueError):
        return text


def shortened(prompt: str) -> str:
    """A prompt cut to SHORT_PROMPT characters (with an ellipsis when it was longer)."""
    return prompt if len(prompt) <= SHORT_PROMPT else prompt[:SHORT_PROMPT - 1].rstrip() + "…"


def register(app: web.App) -> None:
    """Add the compose, review, batch and library pages."""

    def signed_in(path: str) -> dict:
        user = web.current_user()
        if user is None:
            web.redirect(f"/login?next={path}")
        return user

    def defaults() -> dict:
        model = app.catalog.default(datetime.date.today())
        return {"prompts": "", "names": "", "style": "", "model": model.id, "quality": model.default_quality,
                "format": "png", "ratio": "1:1", "resolution": "1K", "complexity": model.default_complexity or "high",
                "speed": "now"}

    def posted() -> dict:
        forms = bottle.request.forms
        values = {name: (forms.getunicode(name) or "") for name in FIELDS}
        values["speed"] = values["speed"] or "now"
        return values

    def notify_wanted() -> bool:
        """The review's "Email me when it is ready" box (only offered when the site can send mail)."""
        return app.settings.mail_enabled and bottle.request.forms.get("notify") == "1"

    def price_table() -> list[dict]:
        today = datetime.date.today()
        table = []
        for model in app.catalog.available(today):
            prices = [price for by_ratio in model.credits.values() for by_quality in by_ratio.values()
                      for price in by_quality.values()]
            table.append({"model": model, "prices": model.credits, "low": min(prices), "high": max(prices)})
        return table

    def choices() -> dict:
        """What the form lists besides the models: every quality any model takes, and the sizes per ratio."""
        today = datetime.date.today()
        qualities = [q for q in QUALITY_LABELS if any(q in m.qualities for m in app.catalog.available(today))]
        model = app.catalog.default(today)
        sizes = {ratio: " · ".join(f"{s.output[0]}×{s.output[1]}" for s in (model.size(r, ratio)
                                                                            for r in model.resolutions))
                 for ratio in ("1:1", "9:16", "16:9")}
        return {"qualities": qualities, "ratio_sizes": sizes,
                "quality_labels": {q: web.translate(text) for q, text in QUALITY_LABELS.items()}}

    def compose(values: dict, problems=(), status: int = 200):
        bottle.response.status = status
        return web.render("studio/compose.html", values=values, problems=problems, models=price_table(), **choices(),
                          balance=web.credits_left(), max_prompts=app.settings.plan_max_prompts,
                          max_kb=app.settings.upload_max_bytes // 1024, style_max=batches.STYLE_MAX_CHARS)

    def problem_texts(problems) -> list[dict]:
        """Each problem in words; `line_said` when the words name its line (their lengths written the page's way)."""
        texts = []
        for problem in problems:
            values = problem.values
            if problem.code in LINE_SAID:  # "Line 5: 4,210 characters, the model takes 4,000"
                values = {key: babel.numbers.format_decimal(value, locale=web.lang()) if isinstance(value, int)
                          else value for key, value in values.items()}
            if problem.code in WARNINGS:
                text = _fill(web.translate(WARNINGS[problem.code]), values)
            else:
                text = api.message(problem.code, line=problem.line, **values)
            texts.append({"code": problem.code, "line": problem.line, "text": text,
                          "line_said": problem.code in LINE_SAID})
        return texts

    def read_form(values: dict):
        """The review of the posted form (an uploaded file replaces the typed prompts)."""
        limit = app.settings.plan_max_prompts
        read = batches.read_prompts(values["prompts"], limit)
        prompts, total, names = read.lines, read.total, batches.name_lines(values["names"])
        upload = bottle.request.files.get("prompts_file")
        if upload is not None and upload.raw_filename:
            prompts, file_names = batches.read_upload(upload.raw_filename,
                                                      upload.file.read(app.settings.upload_max_bytes + 1),
                                                      app.settings.upload_max_bytes)
            names = names or file_names
            total, prompts = len(prompts), prompts[:limit + 1]
            # The file's lines go back into the form, so a second look needs no new upload.
            values["prompts"] = "\n".join(prompts)
            if not values["names"] and file_names:
                values["names"] = "\n".join(name or "" for name in file_names)
        user = web.current_user()
        checked = batches.review(
            app.catalog, datetime.date.today(), prompts=prompts, names=names, style=values["style"],
            model_id=values["model"], ratio=values["ratio"], quality=values["quality"],
            image_format=values["format"], separator=app.settings.prompt_separator,
            max_prompts=limit, credits_left=credits.balance(web.conn(), user["id"]), total_prompts=total,
            unavailable=batches.unavailable_models(web.conn(), web.now() * 1000),
            resolution=values["resolution"] or "1K", complexity=values["complexity"], speed=values["speed"],
            notify=notify_wanted())
        checked.lang = web.lang()
        return checked

    def show_review(values: dict, checked, status: int = 200):
        """The review page; a batch that cannot start shows why, beside a disabled Start, and what would work."""
        bottle.response.status = status
        model = app.catalog.get(checked.model)
        count = len(checked.items)
        too_long = [problem for problem in checked.errors if problem.code == "prompt_too_long"]
        # Each alternative is a small form carrying the whole batch with its changes (see _carry.html).
        helps = [{"kind": alt.kind, "count": alt.count, "credits": alt.credits, "fields": {**values, **alt.changes}}
                 for alt in batches.alternatives(app.catalog, checked, batches.name_lines(values["names"]))]
        return web.render("studio/review.html", values=values, review=checked, model=model,
                          size=checked.size,
                          errors=problem_texts([p for p in checked.errors if p.code != "prompt_too_long"]),
                          too_long=[{**text, "prompt": shortened(checked.items[problem.line - 1].prompt)}
                                    for problem, text in zip(too_long, problem_texts(too_long), strict=True)],
                          alternatives=helps, credits_short={p.code for p in checked.errors} == {"not_enough_credits"},
                          warnings=problem_texts(checked.warnings), request_token=secrets.token_urlsafe(16),
                          test_items=TEST_RUN_ITEMS, mail_enabled=app.settings.mail_enabled,
                          # The box is ticked for economy (hours away) unless the subscriber unticked it.
                          notify_checked=checked.notify if bottle.request.forms.get("notify_shown") == "1"
                          else checked.speed == "economy",
                          email=web.current_user()["email"],
                          now_credits=checked.now_credits_per_item * count,
                          economy_credits=batches.economy_price(checked.now_credits_per_item) * count,
                          quality_labels={q: web.translate(text) for q, text in QUALITY_LABELS.items()})

    def subscriber() -> dict:
        """The signed-in user, whose plan allows generating; else (raised) the page that says why."""
        user = signed_in("/generate")
        if not web.plan().can_generate:
            raise bottle.HTTPResponse(web.render("studio/no_plan.html"))
        return user

    def reviewed(values: dict):
        """The review of the posted form; an unreadable upload is raised as the compose page with its message."""
        try:
            return read_form(values)
        except batches.BatchError as exc:
            problem = {"code": exc.code, "line": None, "text": api.message(exc.code, **exc.values)}
            raise bottle.HTTPResponse(compose(values, [problem], 422), status=422) from None

    @app.get("/generate")
    def show_compose():
        """The compose form: prompts, names, style, model, format, ratio, quality."""
        subscriber()
        return compose(defaults())

    @app.get("/generate/template.csv")
    def prompts_template():
        """A CSV file to start from: the prompt and name columns."""
        bottle.response.content_type = "text/csv; charset=utf-8"
        bottle.response.set_header("Content-Disposition", 'attachment; filename="images-in-bulk-prompts.csv"')
        return CSV_TEMPLATE

    @app.post("/generate", max_body=app.settings.form_max_bytes)
    def back_to_edit():
        """The compose form again with what was sent (the review's "Back to edit")."""
        signed_in("/generate")
        return compose(posted())

    @app.post("/generate/review", max_body=app.settings.form_max_bytes)
    def review_batch():
        """Check the form and show the review; nothing is stored or charged."""
        subscriber()
        values = posted()
        checked = reviewed(values)
        if not checked.ok and not batches.helpable(checked):  # nothing the review could offer: back to the form
            return compose(values, problem_texts(checked.errors), 422)
        # Too few credits or too-long prompts: the review with Start disabled and what would work (422).
        return show_review(values, checked, 200 if checked.ok else 422)

    @app.post("/batches", max_body=app.settings.form_max_bytes)
    def start_batch():
        """Start the reviewed batch (or its test run); the same one-time token never starts a second one."""
        user = subscriber()
        token = bottle.request.forms.get("request_token") or ""
        already = batches.started_with(web.conn(), user["id"], token)
        if already is not None:  # the second press of Start: the batch it started, before anything is re-checked
            web.redirect(f"/batches/{already}")
        values = posted()
        checked = reviewed(values)
        test_wanted = bottle.request.forms.get("test_run") == "1"
        if test_wanted and batches.credits_cover_test_run(checked):  # the credits cover the test run: its rest is held
            checked.errors = [problem for problem in checked.errors if problem.code != "not_enough_credits"]
        if not checked.ok:
            model = app.catalog.get(checked.model)
            if model is None or checked.size is None:  # nothing to review: back to the form
                return compose(values, problem_texts(checked.errors), 422)
            return show_review(values, checked, 422)
        # A test run is for seeing three images at once: economy batches have none.
        test_run = test_wanted and len(checked.items) > TEST_RUN_ITEMS and checked.speed == "now"
        try:
            batch_id, created = batches.create(web.conn(), app.catalog, user["id"], checked, token, web.now(), test_run,
                                               max_open=app.settings.max_open_batches)
        except batches.BatchError as exc:  # too many unfinished batches: the review says so
            checked.errors.append(batches.Problem(exc.code, values=exc.values))
            return show_review(values, checked, 409)
        if created:
            worker.kick(app.settings)
        web.redirect(f"/batches/{batch_id}")

    def owned_or_404(user: dict, batch_id: int, whole: bool = False) -> dict:
        """The user's batch (with whole=True, its page's state: items, counts, credits), or a 404."""
        try:
            if whole:
                return batches.status(web.conn(), user["id"], batch_id, web.now() * 1000)
            return batches.owned(web.conn(), user["id"], batch_id)
        except batches.BatchError:
            raise bottle.HTTPError(404) from None

    @app.get("/batches/<batch_id:int>")
    def show_batch(batch_id):
        """The batch page: progress, each image in list order, the actions; batch.js collects the images."""
        user = signed_in(f"/batches/{batch_id}")
        state = owned_or_404(user, batch_id, whole=True)
        batch, counts = state["batch"], state["counts"]
        held = counts.get("held", 0)
        return web.render(
            "studio/batch.html", batch=batch, items=state["items"], counts=counts,
            model_label=getattr(app.catalog.get(batch["model"]), "label", batch["model"]),
            service_paused=batch["service_paused"],
            finished=sum(counts.get(s, 0) for s in ("done", "delivered", "failed", "cancelled", "expired")),
            ready=counts.get("done", 0) + counts.get("delivered", 0), held=held,
            held_credits=held * batch["credits_per_item"],
            pause_text=web.translate(PAUSES[batch["pause_reason"]]) if batch["pause_reason"] in PAUSES else None,
            failure_texts={code: web.translate(text) for code, text in api.FAILURE_MESSAGES.items()},
            economy=state["economy"], expired=state["failures"].get("economy_expired", 0),
            now_price=now_price(batch),
            balance=batch["credits_left"], can_generate=web.plan().can_generate,
            retention_days=app.settings.image_retention_days, expected_bytes=batches.estimated_bytes(batch),
            refused=state["failures"].get("refused", 0),
            edit_error=edit_error(batch),
            item_max_chars=getattr(app.catalog.get(batch["model"]), "max_prompt_chars", 32000))

    def edit_error(batch: dict) -> dict | None:
        """The message of an "edit and retry" that could not be done (after its redirect), with its item."""
        code, item = bottle.request.query.get("edit_error"), bottle.request.query.get("item") or ""
        if code not in EDIT_ERRORS or not item.isdigit():
            return None
        model = app.catalog.get(batch["model"])
        return {"item": int(item), "text": _fill(web.translate(EDIT_ERRORS[code]),
                                                 {"max": getattr(model, "max_prompt_chars", "")})}

    def now_price(batch: dict) -> int:
        """What one image of this batch costs at the "Now" speed (the catalogue's price)."""
        model = app.catalog.get(batch["model"])
        if model is None or not model.offers(batch["resolution"], batch["ratio"], batch["quality"]):
            return batch["credits_per_item"]
        return model.price(batch["resolution"], batch["ratio"], batch["quality"])

    def batch_action(batch_id: int, action, needs_plan: bool = False):
        user = signed_in(f"/batches/{batch_id}")
        owned_or_404(user, batch_id)
        if needs_plan and not web.plan().can_generate:
            raise bottle.HTTPError(403)
        if action(web.conn(), user["id"], batch_id, web.now()):
            worker.kick(app.settings)
        web.redirect(f"/batches/{batch_id}")

    @app.post("/batches/<batch_id:int>/retry")
    def retry_batch(batch_id):
        """Queue the failed images again."""
        batch_action(batch_id, batches.retry_failed, needs_plan=True)

    @app.post("/batches/<batch_id:int>/items/<item_id:int>/retry")
    def retry_item(batch_id, item_id):
        """Queue one failed image again."""
        batch_action(batch_id, lambda conn, user_id, batch, now: batches.retry_failed(conn, user_id, batch, now,
                                                                                    item_id), needs_plan=True)

    @app.post("/batches/<batch_id:int>/items/<item_id:int>/edit")
    def edit_item(batch_id, item_id):
        """A refused image: its prompt rewritten, then made again (a new charge)."""
        user = signed_in(f"/batches/{batch_id}")
        owned_or_404(user, batch_id)
        if not web.plan().can_generate:
            raise bottle.HTTPError(403)
        try:
            batches.edit_and_retry(web.conn(), app.catalog, user["id"], batch_id, item_id,
                                   bottle.request.forms.getunicode("prompt") or "", web.now())
        except batches.BatchError as exc:
            if exc.code == "not_found":
                raise bottle.HTTPError(404) from None
            web.redirect(f"/batches/{batch_id}?edit_error={exc.code}&item={item_id}#item-{item_id}")
        worker.kick(app.settings)
        web.redirect(f"/batches/{batch_id}#item-{item_id}")

    @app.post("/batches/<batch_id:int>/continue")
    def continue_batch(batch_id):
        """After a test run: generate the rest."""
        batch_action(batch_id, batches.go_on, needs_plan=True)

    @app.post("/batches/<batch_id:int>/now")
    def go_now(batch_id):
        """After an economy batch expired: make the images OpenAI did not make in time now, at full price."""
        batch_action(batch_id, lambda conn, user_id, batch, now: batches.go_now(conn, app.catalog, user_id, batch,
                                                                                 now), needs_plan=True)

    @app.post("/batches/<batch_id:int>/stop")
    def stop_batch(batch_id):
        """Pause the batch: the images not started wait."""
        batch_action(batch_id, lambda *args: batches.stop(*args) and False)

    @app.post("/batches/<batch_id:int>/resume")
    def resume_batch(batch_id):
        """Go on after a stop or after the credits ran out."""
        batch_action(batch_id, batches.resume, needs_plan=True)

    @app.post("/batches/<batch_id:int>/cancel")
    def cancel_batch(batch_id):
        """Cancel the images not started (nothing is charged for them)."""
        batch_action(batch_id, lambda *args: economy.cancel_batch(args[0], app.settings, *args[1:]) and False)

    @app.post("/account/history/delete")
    def delete_history():
        """Delete the subscriber's finished batches from the site now (the confirmation box must be ticked)."""
        user = signed_in("/account")
        if bottle.request.forms.get("confirm") != "1":
            web.redirect("/account#history-title")
        deleted = batches.delete_history(web.conn(), app.settings.results_dir, user["id"])
        web.redirect(f"/account?history_deleted={deleted}#history-title")

    @app.get("/library")
    def show_library():
        """The batches kept in this browser (library.js), and the account's latest batches."""
        user = signed_in("/library")
        return web.render("studio/library.html", recent=batches.recent(web.conn(), user["id"]),
                          economy_waiting=batches.economy_unfinished(web.conn(), user["id"]),
                          model_labels={model.id: model.label for model in app.catalog.models},
                          batch_ids=batches.owned_ids(web.conn(), user["id"]))
