"""Error pages (HTML or JSON) for every status the app can answer with."""

from __future__ import annotations

from routes import web


def register(app: web.App) -> None:
    """Register the error handlers; Bottle needs each status named."""
    for status in web.ERROR_TEXTS:
        app.error(status)(web.error_page)
