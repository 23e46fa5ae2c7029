"""Sign-in with Google and Microsoft, sign-out, and the account page."""

from __future__ import annotations

import logging

import bottle

from routes import web
from services import auth, batches, credits, oauth, sessions
from services.oauth import SignInError
from services.security import safe_next

log = logging.getLogger(__name__)

_ = web._

# What each kind of credits ledger line is called on the account page.
LEDGER_REASONS = {
    "grant": _("Monthly credits"),
    "expire": _("Unused credits expired"),
    "reserve": _("Image"),
    "economy": _("Image (economy)"),
    "refund": _("Refund for an image that failed"),
    "payment_refunded": _("Payment refunded: the period's credits were withdrawn"),
    "dispute_opened": _("Payment disputed: new images are on hold"),
    "dispute_won": _("Dispute settled in our favour: images are back on"),
    "dispute_lost": _("Dispute lost: the period's credits were withdrawn"),
    "dispute_closed": _("Dispute closed"),
}

# What a visitor reads when a sign-in stops: (HTTP status, title, explanation).
SIGN_IN_ERRORS = {
    "cancelled": (400, _("Sign-in cancelled"),
                  _("You cancelled the sign-in at the provider. Nothing was changed; you can try again "
                    "whenever you like.")),
    "expired": (400, _("This sign-in link has expired"),
                _("The sign-in took too long, was already used, or was started in another browser. "
                  "Start again from the sign-in page.")),
    "refused": (400, _("The provider refused the sign-in"),
                _("The provider did not accept this sign-in. Start again; if it keeps happening, "
                  "try the other provider.")),
    "invalid_token": (400, _("The sign-in could not be verified"),
                      _("The provider's answer did not pass our checks, so we did not sign you in. "
                        "Start again from the sign-in page.")),
    "provider_error": (400, _("The provider reported a problem"),
                       _("The provider could not complete the sign-in. Start again in a moment.")),
    "unavailable": (503, _("The provider is not answering"),
                    _("We could not reach the provider. Wait a minute and try again.")),
    "throttled": (429, _("Too many sign-in attempts"),
                  _("Too many sign-ins were started from your network in the last few minutes. "
                    "Wait ten minutes and try again.")),
    "already_linked": (409, _("That account is already in use"),
                       _("This provider account already signs in to another images-in-bulk account, "
                         "so it cannot be linked to this one.")),
    "failed": (400, _("Sign-in failed"), _("The sign-in could not be completed. Start again.")),
}


def sign_in_error(exc: SignInError, provider_label: str) -> str:
    """Log why a sign-in stopped (no tokens or secrets) and render its page."""
    status, title, text = SIGN_IN_ERRORS.get(exc.code, SIGN_IN_ERRORS["failed"])
    log.warning("sign-in with %s stopped (%s): %s", provider_label, exc.code, exc)
    bottle.response.status = status
    return web.render("auth/error.html", title=title, text=text, provider=provider_label, code=exc.code)


def _count_or_none(raw: str | None) -> int | None:
    """A small count from the query string (the account page's "N deleted" notice), or None."""
    return int(raw) if raw and raw.isdigit() and len(raw) < 10 else None


def register(app: web.App) -> None:
    """Add the sign-in, sign-out and account routes."""

    def provider_or_404(name):
        found = app.settings.provider(name)
        if found is None:
            raise bottle.HTTPError(404)
        return found

    @app.get("/login")
    def show_login():
        """The sign-in page: one button per configured provider."""
        next_path = safe_next(bottle.request.query.get("next"), "/account")
        if web.current_user():
            web.redirect(next_path)
        return web.render("auth/login.html", providers=app.settings.providers, next_path=next_path,
                          demo=app.settings.app_mode == "demo")

    @app.get("/auth/<name:re:[a-z]+>/start")
    def start_sign_in(name):
        """Start a provider's flow: remember state, nonce and verifier for this browser, then go to the provider."""
        provider = provider_or_404(name)
        session = web.session(create=True)
        link_user_id = session.user_id if bottle.request.query.get("link") == "1" else None
        next_path = safe_next(bottle.request.query.get("next"), "/account")
        try:
            url = auth.start(web.conn(), app.settings, provider, session, next_path,
                             bottle.request.environ.get("REMOTE_ADDR", ""), web.now(), link_user_id)
        except SignInError as exc:
            return sign_in_error(exc, provider.label)
        bottle.redirect(url, 302)

    @app.get("/auth/<name:re:[a-z]+>/callback")
    def finish_sign_in(name):
        """Finish a provider's flow: check everything, sign the user in with a new session id."""
        provider = provider_or_404(name)
        session = web.session()
        params = {key: bottle.request.query.get(key) for key in ("state", "code", "error")}
        try:
            # RFC 9207: a response naming another issuer (a mix-up) is refused before the code goes anywhere.
            oauth.check_response_issuer(provider, bottle.request.query.getall("iss"))
            user_id, next_path = auth.finish(web.conn(), app.settings, provider, session, params, web.now())
        except SignInError as exc:
            return sign_in_error(exc, provider.label)
        web.remember_session(sessions.rotate(web.conn(), app.settings, session, web.now(), user_id))
        web.redirect(safe_next(next_path, "/account"))

    @app.get("/logout")
    def show_sign_out():
        """The sign-out page: its POST form and, with JavaScript, "Also remove my images from this browser"."""
        user = web.current_user()
        if user is None:
            web.redirect("/")
        return web.render("auth/logout.html", batch_ids=batches.owned_ids(web.conn(), user["id"]))

    @app.post("/logout")
    def sign_out():
        """End the session (POST with the CSRF token only) and go to the home page."""
        session = web.session()
        if session is not None:
            sessions.destroy(web.conn(), session)
            web.forget_session()
        web.redirect("/")

    @app.get("/account")
    def show_account():
        """The signed-in user's account: name, email, linked providers, sign-out."""
        user = web.current_user()
        if user is None:
            web.redirect("/login?next=/account")
        linked, history_count = auth.identities(web.conn(), user["id"])
        linked_names = {row["provider"] for row in linked}
        subscription = web.subscription()
        since = subscription["current_period_start"] if subscription else 0
        ledger = credits.recent(web.conn(), user["id"], since, limit=10)
        return web.render("account/account.html", identities=linked,
                          labels={p.name: p.label for p in app.settings.providers},
                          linkable=[p for p in app.settings.providers if p.name not in linked_names],
                          subscription=subscription, balance=web.credits_left(),
                          ledger=ledger, ledger_reasons={line["reason"]: web.translate(LEDGER_REASONS[line["reason"]])
                                                         for line in ledger if line["reason"] in LEDGER_REASONS},
                          welcome=bottle.request.query.get("welcome") == "1",
                          history_count=history_count,
                          history_deleted=_count_or_none(bottle.request.query.get("history_deleted")))
