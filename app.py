"""images-in-bulk: the app factory, and `python app.py --demo` for the local demo."""

from __future__ import annotations

import argparse
import logging
import socket
import sys
from pathlib import Path

APP_ROOT = Path(__file__).resolve().parent
if str(APP_ROOT) not in sys.path:  # Passenger and cron may start us from another folder
    sys.path.insert(0, str(APP_ROOT))

import bottle  # noqa: E402

from routes import admin, api, auth, billing, demo_mail, errors, pages, static, studio, web  # noqa: E402
from services import billing as billing_service  # noqa: E402
from services import catalog as model_catalog  # noqa: E402
from services import db, i18n, logs, oauth, stripe_setup, worker  # noqa: E402
from services.config import ConfigError, Settings, load_settings  # noqa: E402

log = logging.getLogger(__name__)


def create_app(overrides: dict | None = None, settings: Settings | None = None) -> web.App:
    """Build a new app from the settings (defaults, environment, .env, then overrides)."""
    settings = settings or load_settings(overrides)
    if settings.app_mode != "production":
        oauth.allow_plain_http_for_stand_ins()
    try:
        models = model_catalog.load(settings.model_catalog or None)
    except model_catalog.CatalogError as exc:
        raise ConfigError([str(exc)]) from None
    # Bottle keeps form bodies up to MEMFILE_MAX in memory and refuses larger url-encoded ones;
    # a batch of 200 long prompts is bigger than its 100 KB default. Each route's own limit
    # (web.BODY_LIMIT, or its max_body) is checked before any of it is read. (A class attribute:
    # Bottle reads it there only.)
    bottle.BaseRequest.MEMFILE_MAX = max(bottle.BaseRequest.MEMFILE_MAX, settings.form_max_bytes)
    app = web.App(settings, db.Database(settings.database_url), i18n.load_translations(), models)
    app.install(web.RequestGuard())
    pages.register(app)
    auth.register(app)
    billing.register(app)
    api.register(app)
    studio.register(app)
    admin.register(app)
    demo_mail.register(app)  # the demo's mailbox page; nothing outside the demo
    if settings.serve_static:
        static.register(app)
    errors.register(app)
    return app


def main(argv: list[str] | None = None) -> int:
    """Run the site with waitress: `--demo` for the local demo (SQLite, no keys), else with the configured settings."""
    parser = argparse.ArgumentParser(description="Run images-in-bulk.")
    parser.add_argument("--demo", action="store_true", help="local demo: SQLite under var/, no keys needed")
    parser.add_argument("--port", type=int, default=8000, help="port to listen on (0 picks a free one)")
    parser.add_argument("--host", default="127.0.0.1",
                        help="address to bind (not in the demo, which stays on 127.0.0.1)")
    args = parser.parse_args(argv)

    import waitress

    host = "127.0.0.1" if args.demo else args.host
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, args.port))
    except OSError as exc:
        print(f"cannot listen on {host}:{args.port}: {exc.strerror}", file=sys.stderr)
        return 2
    port = sock.getsockname()[1]

    overrides, stops = {}, []
    if args.demo:
        from tools.demo import start_mailer, start_stand_ins

        base_url = f"http://{host}:{port}"
        overrides, stops = start_stand_ins(base_url)
        overrides.update({"APP_MODE": "demo", "PUBLIC_BASE_URL": base_url})
    try:
        settings = load_settings(overrides)
        app = create_app(settings=settings)
    except ConfigError as exc:
        print(exc, file=sys.stderr)
        return 2
    logs.setup(settings, "web", to_file=False)  # a console run: the lines go to the console
    database = app.database
    if args.demo:
        db.initdb(database)
        # The Stripe stand-in starts empty: create the plan's product and price, and the portal's configuration.
        client = billing_service.make_client(settings)
        app.billing["price_id"] = billing_service.setup_price(client, settings)
        app.billing["portal_configuration"] = stripe_setup.setup_portal(client, settings)
        stops.insert(0, start_mailer(settings, database, app.translations))  # "email me when it is ready"
    if settings.worker_launch == "thread":
        worker.start_thread(settings, database, app.catalog)
    print(f"images-in-bulk {'demo ' if args.demo else ''}running at {settings.public_base_url}/ "
          f"({database.describe()}); press Ctrl+C to stop", flush=True)
    try:
        # Waitress buffers a body before the app sees it: refuse one larger than any route takes at the door.
        waitress.serve(app, sockets=[sock], threads=8, ident="images-in-bulk",
                       max_request_body_size=app.settings.form_max_bytes)
    finally:
        for stop in stops:
            stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
