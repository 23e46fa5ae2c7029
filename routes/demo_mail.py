"""The local demo's mailbox: the emails the site sent, as the demo's SMTP stand-in received them (demo only)."""

from __future__ import annotations

import bottle

from routes import web

SHOWN = 100  # the newest messages the page lists


def register(app: web.App) -> None:
    """Add GET /demo/mail when the app runs as the local demo; anywhere else the address stays a 404."""
    if app.settings.app_mode != "demo":
        return
    # The stand-ins are imported in the demo only: production never loads them.
    from tools.demo import mail_spool
    from tools.fake_smtp import read_spool

    @app.get("/demo/mail")
    def show_demo_mail():
        """What the demo's SMTP stand-in received (from, to, subject, date, text), newest first."""
        messages = [received.as_dict() for received in read_spool(mail_spool(app.settings.var_dir), SHOWN)]
        bottle.response.set_header("Cache-Control", "no-store")
        return web.render("pages/demo_mail.html", messages=messages)
