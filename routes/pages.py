"""Public pages: landing, terms, privacy, and the language switch."""

from __future__ import annotations

import bottle

from routes import web
from services import health
from services.config import LANGUAGES
from services.security import safe_next


def register(app: web.App) -> None:
    """Add the public pages to the app."""

    @app.get("/")
    def show_home():
        """The landing page: what the service does and the plan."""
        return web.render_public("pages/home.html")

    @app.get("/terms")
    def show_terms():
        """The terms of service."""
        return web.render_public("pages/terms.html")

    @app.get("/privacy")
    def show_privacy():
        """The privacy notice: what is stored where, and who receives what."""
        return web.render_public("pages/privacy.html")

    @app.get("/healthz")
    def healthz():
        """For uptime checks: 200 with {"status": "ok", ...}, or 503 with what is wrong (never a secret)."""
        healthy, report = health.check(app.database, app.catalog, web.now())
        return bottle.HTTPResponse(status=200 if healthy else 503, body=bottle.json_dumps(report),
                                   headers={"Content-Type": "application/json", "Cache-Control": "no-store"})

    @app.get("/lang/<code>")
    def switch_language(code):
        """Remember the chosen language in a cookie and go back to the page the visitor was on."""
        # A GET is enough here: the choice is a display preference kept in the visitor's own
        # browser; it changes nothing on the server, so it needs no CSRF token (and no session).
        if code not in LANGUAGES:
            raise bottle.HTTPError(404)
        bottle.response.set_cookie(web.LANG_COOKIE, code, path="/", max_age=web.LANG_COOKIE_SECONDS,
                                   httponly=True, samesite="Lax", secure=app.settings.is_https)
        web.redirect(safe_next(bottle.request.query.get("next")))
