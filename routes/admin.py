"""The owner's console under /admin: the overview, subscribers and the support actions, CSV exports.

Every address answers 404 to anyone who is not an owner (signed out included), so the console
does not even show that it exists. Actions are POST forms with the CSRF token and a required
reason; services/admin.py audits them.
"""

from __future__ import annotations

import datetime

import bottle

from routes import api, web
from services import admin, catalog

_ = web._

ACTION_MESSAGES = {
    "reason_required": _("Say why: the reason goes into the audit log."),
    "bad_amount": _("Give a whole number of credits other than 0, at most %(max)s either way."),
    "not_enough_credits": _("The subscriber has only %(left)s credits: a withdrawal cannot go below zero."),
    "not_found": _("There is no such subscriber, batch or image."),
    "not_yourself": _("You cannot block your own account."),
}
DONE_MESSAGES = {
    "adjust": _("Credits adjusted."),
    "retry": _("The failed images are queued again, on the house."),
    "block": _("The subscriber is blocked and signed out; their images not started are cancelled and refunded."),
    "unblock": _("The subscriber is unblocked."),
}
STATE_LABELS = {"active": _("Active"), "trialing": _("Trialing"), "cancelling": _("Cancelling at period end"),
                "past_due": _("Past due"), "unpaid": _("Unpaid"), "paused": _("Paused"), "disputed": _("Disputed"),
                "blocked": _("Blocked")}
OUTCOME_LABELS = {"done": _("Made"), "refused": _("Refused"), "upstream": _("OpenAI failed"), "timeout": _("Timed out"),
                  "invalid": _("Not accepted"), "economy_expired": _("Economy expired"), "other": _("Other failures")}


def register(app: web.App) -> None:
    """Add the /admin pages and actions."""

    def owner() -> dict:
        user = web.current_user()
        if user is None or not web.is_owner():
            raise bottle.HTTPError(404)
        return user

    def catalog_raw() -> dict:
        return catalog.read_json(app.settings.model_catalog or catalog.DEFAULT_FILE)

    def figures() -> dict:
        return admin.overview(web.conn(), app.settings, catalog_raw(), web.now())

    def no_store(response_type: str = "text/html; charset=utf-8") -> None:
        bottle.response.content_type = response_type
        bottle.response.set_header("Cache-Control", "no-store")
        bottle.response.set_header("X-Robots-Tag", "noindex")

    @app.get("/admin")
    def show_overview():
        """The overview: subscribers, revenue against upstream cost, images per day, the queue, operator events."""
        owner()
        no_store()
        found = figures()
        outcome_labels = translated(OUTCOME_LABELS)
        return web.render("admin/overview.html", f=found, state_labels=translated(STATE_LABELS),
                          outcome_labels=outcome_labels, failure_texts=translated(api.FAILURE_MESSAGES),
                          **day_charts(found, outcome_labels))

    @app.get("/admin/months.csv")
    def months_csv():
        """The overview's monthly figures as CSV."""
        owner()
        no_store("text/csv; charset=utf-8")
        day = datetime.date.today().isoformat()
        bottle.response.set_header("Content-Disposition", f'attachment; filename="images-in-bulk-months-{day}.csv"')
        return admin.months_csv(figures())

    @app.get("/admin/users")
    def show_users():
        """Subscribers found by email or name (the latest ones without a search)."""
        owner()
        no_store()
        text = bottle.request.query.getunicode("q") or ""
        return web.render("admin/users.html", q=text, users=admin.search(web.conn(), text),
                          state_labels=translated(STATE_LABELS))

    def subscriber_page(user_id: int, message: str | None = None, error: str | None = None, status: int = 200,
                        shown_prompt: dict | None = None):
        try:
            found = admin.subscriber(web.conn(), user_id, web.now())
        except admin.AdminError:
            raise bottle.HTTPError(404) from None
        no_store()
        bottle.response.status = status
        return web.render("admin/user.html", s=found, message=message, error=error, shown_prompt=shown_prompt,
                          failure_texts=translated(api.FAILURE_MESSAGES), state_labels=translated(STATE_LABELS))

    @app.get("/admin/users/<user_id:int>")
    def show_user(user_id):
        """One subscriber: plan, credits and ledger, batches (no prompts), failures, invoices, the owners' actions."""
        owner()
        done = bottle.request.query.get("done")
        return subscriber_page(user_id, web.translate(DONE_MESSAGES[done]) if done in DONE_MESSAGES else None)

    @app.get("/admin/users/<user_id:int>/ledger.csv")
    def ledger_csv(user_id):
        """A subscriber's whole ledger as CSV."""
        owner()
        no_store("text/csv; charset=utf-8")
        bottle.response.set_header("Content-Disposition", f'attachment; filename="ledger-user-{user_id}.csv"')
        return admin.ledger_csv(web.conn(), user_id)

    def act(user_id: int, action, done: str):
        """Run a support action; back to the subscriber's page with what happened, or with why it could not."""
        who = owner()
        reason = bottle.request.forms.getunicode("reason") or ""
        try:
            result = action(who, reason)
        except admin.AdminError as exc:
            if exc.code == "not_found":
                raise bottle.HTTPError(404) from None
            text = web.translate(ACTION_MESSAGES[exc.code])
            return subscriber_page(user_id, error=text % exc.values if exc.values else text, status=422)
        if isinstance(result, dict):  # a page of its own (the refused prompt)
            return subscriber_page(user_id, shown_prompt=result)
        web.redirect(f"/admin/users/{user_id}?done={done}")

    @app.post("/admin/users/<user_id:int>/adjust")
    def adjust(user_id):
        """Grant or withdraw credits (a signed whole number), with a reason."""
        raw = (bottle.request.forms.get("credits") or "").strip()
        delta = int(raw) if raw.lstrip("+-").isdigit() and len(raw) <= 9 else 0
        return act(user_id, lambda who, reason: admin.adjust(web.conn(), who, user_id, delta, reason, web.now()),
                   "adjust")

    @app.post("/admin/users/<user_id:int>/batches/<batch_id:int>/retry")
    def retry_free(user_id, batch_id):
        """Queue a batch's failed images again, their credits given by the house."""
        return act(user_id, lambda who, reason: admin.retry_on_the_house(web.conn(), who, user_id, batch_id, reason,
                                                                         web.now()), "retry")

    @app.post("/admin/users/<user_id:int>/block")
    def block(user_id):
        """Block a subscriber (signed out, queued images refunded, no new batch)."""
        return act(user_id, lambda who, reason: admin.block(web.conn(), app.settings, who, user_id, reason,
                                                            web.now()), "block")

    @app.post("/admin/users/<user_id:int>/unblock")
    def unblock(user_id):
        """Let a blocked subscriber make batches again."""
        return act(user_id, lambda who, reason: admin.unblock(web.conn(), who, user_id, reason, web.now()), "unblock")

    @app.post("/admin/users/<user_id:int>/items/<item_id:int>/prompt")
    def show_prompt(user_id, item_id):
        """Show one refused image's prompt (the request and its reason are audited)."""
        return act(user_id, lambda who, reason: admin.refused_prompt(web.conn(), who, user_id, item_id, reason,
                                                                     web.now()), "prompt")


def day_charts(found: dict, outcome_labels: dict) -> dict:
    """The overview's two pictures of the last 30 days (server-rendered SVG; the numbers are in tables beside)."""
    from markupsafe import Markup

    try:
        from services import charts
    except ImportError:  # pragma: no cover - until the chart module lands
        return {"revenue_chart": Markup(""), "outcomes_chart": Markup("")}
    labels = [datetime.datetime.fromtimestamp(day, datetime.UTC).strftime("%d/%m") for day in found["days"]]
    revenue = charts.line_chart(
        [(web.translate(_("Revenue")), [float(v) for v in found["revenue_per_day"]], "series-revenue"),
         (web.translate(_("Upstream cost")), [float(v) for v in found["cost_per_day"]], "series-cost")],
        labels, title=web.translate(_("Revenue and upstream cost per day (USD)")), id_prefix="chart-money")
    outcomes = charts.stacked_bars(
        [(label, [day[key] for day in found["outcomes"]], f"series-{n + 1}")
         for n, (key, label) in enumerate(outcome_labels.items())],
        labels, title=web.translate(_("Images per day by outcome")), id_prefix="chart-outcomes")
    return {"revenue_chart": revenue, "outcomes_chart": outcomes}


def translated(texts: dict) -> dict:
    """The texts of a table of messages in the request's language."""
    return {key: web.translate(text) for key, text in texts.items()}
