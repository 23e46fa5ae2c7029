"""Static files from public/, served by the app only in the demo and in tests (the web server does it in production)."""

from __future__ import annotations

import bottle

from routes import web


def register(app: web.App) -> None:
    """Serve public/'s folders and its top-level files."""

    @app.get("/<folder:re:css|js|vendor|img>/<path:path>")
    def send_static(folder, path):
        """One file under public/<folder>/."""
        return bottle.static_file(path, root=str(web.PUBLIC_DIR / folder))

    @app.get("/<name:re:robots\\.txt|favicon\\.ico>")
    def send_top_file(name):
        """robots.txt and favicon.ico from public/."""
        return bottle.static_file(name, root=str(web.PUBLIC_DIR))
