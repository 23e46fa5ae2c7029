"""The plan: pricing page, subscribe (Checkout), the success page, manage billing (Portal), the Stripe webhook."""

from __future__ import annotations

import logging

import bottle

from routes import web
from services import billing, stripe_setup

log = logging.getLogger(__name__)

_ = web._

BILLING_ERRORS = {
    "unavailable": (503, _("Payments are not answering"),
                    _("We could not reach our payment provider. Nothing was charged. Try again in a minute.")),
    "not_a_customer": (400, _("No billing account yet"),
                       _("You have not subscribed yet, so there is nothing to manage. Subscribe from the plan page.")),
    "failed": (400, _("Billing failed"), _("That did not work. Nothing was charged. Try again.")),
}


def billing_error(exc: billing.BillingError) -> str:
    """Render a billing problem as a page (nothing was charged) with its status."""
    status, title, text = BILLING_ERRORS.get(exc.code, BILLING_ERRORS["failed"])
    bottle.response.status = status
    return web.render("errors/error.html", status=status, title=title, text=text)


def register(app: web.App) -> None:
    """Add the pricing, checkout, success, portal and webhook routes."""

    def stripe_client():
        if not app.settings.billing_enabled:
            raise bottle.HTTPError(404)
        if app.billing["client"] is None:
            app.billing["client"] = billing.make_client(app.settings)
        return app.billing["client"]

    def price_id():
        if not app.billing["price_id"]:
            app.billing["price_id"] = billing.find_price(stripe_client(), app.settings)
        if not app.billing["price_id"]:
            log.error("no Stripe price with lookup key %s: run `python cli.py setup-stripe`",
                      app.settings.stripe_price_lookup_key)
            raise billing.StripeUnavailable("the plan's price is not set up")
        return app.billing["price_id"]

    def portal_configuration():
        """The app's portal configuration (found once, then remembered), or None for the account's default."""
        if not app.billing["portal_configuration"]:
            try:
                app.billing["portal_configuration"] = stripe_setup.find_portal_configuration(stripe_client())
            except billing.StripeUnavailable:
                return None
            if not app.billing["portal_configuration"]:
                log.warning("no Customer Portal configuration of the app: run `python cli.py setup-stripe`")
        return app.billing["portal_configuration"]

    def signed_in_user(next_path):
        user = web.current_user()
        if user is None:
            web.redirect(f"/login?next={next_path}")
        return user

    @app.get("/pricing")
    def show_pricing():
        """The plan, with Subscribe (or Manage billing for a subscriber)."""
        user = web.current_user()
        state = web.plan() if user else None
        return web.render("billing/pricing.html", access=state,
                          cancelled=bottle.request.query.get("checkout") == "cancelled")

    @app.post("/billing/checkout")
    def subscribe():
        """Send a signed-in user to Stripe Checkout (or to the portal if they already subscribe)."""
        user = signed_in_user("/pricing")
        client = stripe_client()
        try:
            url = billing.start_checkout(web.conn(), client, app.settings, user, price_id(), web.lang(), web.now())
        except billing.AlreadySubscribed:
            try:
                url = billing.portal_url(web.conn(), client, app.settings, user["id"], portal_configuration())
            except billing.BillingError as exc:
                return billing_error(exc)
        except billing.BillingError as exc:
            return billing_error(exc)
        bottle.redirect(url, 303)

    @app.get("/billing/success")
    def show_success():
        """After Checkout: "activating..." until the subscription is known, then the account."""
        user = signed_in_user("/account")
        session_id = bottle.request.query.get("session_id", "")
        try:
            state = billing.sync_checkout(web.conn(), stripe_client(), app.settings, session_id, user["id"],
                                          web.now())
        except billing.BillingError as exc:
            log.warning("checkout sync for user %s failed: %s", user["id"], exc)
            state = billing.user_access(web.conn(), user["id"], web.now())
        web.forget_plan()  # the sync may have stored the subscription: the page's banner reads it afresh
        if state.can_generate:
            web.redirect("/account?welcome=1")
        return web.render("billing/activating.html", session_id=session_id)

    @app.post("/billing/portal")
    def manage_billing():
        """A fresh Customer Portal session for each click."""
        user = signed_in_user("/account")
        try:
            url = billing.portal_url(web.conn(), stripe_client(), app.settings, user["id"], portal_configuration())
        except billing.BillingError as exc:
            return billing_error(exc)
        bottle.redirect(url, 303)

    @app.post("/stripe/webhook", csrf_exempt=True, max_body=web.WEBHOOK_BODY_LIMIT)
    def receive_webhook():
        """Stripe's events: the signature is the authentication, so no CSRF token here."""
        client = stripe_client()
        payload = bottle.request.body.read()
        signature = web.header("Stripe-Signature")
        try:
            outcome = billing.handle_webhook(web.conn(), client, app.settings, payload, signature, web.now())
        except billing.BadSignature as exc:
            log.warning("%s", exc)
            return web.json_error(400, "bad_signature", "The signature does not verify.")
        except billing.MalformedEvent as exc:
            log.warning("webhook refused: %s", exc)
            return web.json_error(400, "malformed_event", "The event is missing fields it needs.")
        except billing.StripeUnavailable:
            return web.json_error(503, "unavailable", "Stripe could not be read; retry later.")
        except (KeyError, TypeError, AttributeError, ValueError) as exc:
            # Signed, so from Stripe (or whoever holds the secret), but not an event this code can read: refuse it
            # (nothing was applied: the transaction rolled back) and keep the reason in the log.
            log.warning("webhook refused: a signed event without the fields it needs (%s: %s)",
                        type(exc).__name__, exc)
            return web.json_error(400, "malformed_event", "The event is missing fields it needs.")
        bottle.response.content_type = "application/json"
        return bottle.json_dumps({"received": True, "outcome": outcome})
