"""Entry point for LiteSpeed / Passenger (cPanel's "Setup Python App"): the WSGI callable `application`.

Paths come from this file's place, not from the working directory Passenger happens to use.
Settings come from the private file `.env` in the application root (outside the web root;
IIB_SETTINGS_FILE names another one), then from the environment. Keep secrets in that file,
not in cPanel's "Environment variables" box: cPanel writes those into the web root's
.htaccess. Logs go to var/log/web.log; a private file that others can read is reported there.

If the settings are wrong, the site answers every request with a plain 503 page and the log
says what is wrong, instead of Passenger's error page (which could show the environment).
"""

import logging
import os
import sys
from pathlib import Path

APP_ROOT = Path(__file__).resolve().parent
if str(APP_ROOT) not in sys.path:
    sys.path.insert(0, str(APP_ROOT))

from app import create_app  # noqa: E402
from services import logs  # noqa: E402
from services.config import ConfigError, load_settings  # noqa: E402

PRIVATE_FILE = Path(os.environ.get("IIB_SETTINGS_FILE") or APP_ROOT / ".env")


def unavailable(environ, start_response):
    """Answer 503 with no detail: the reason is in the log, not on the page."""
    body = b"images-in-bulk is not configured yet: the site owner has been told (see var/log/web.log).\n"
    start_response("503 Service Unavailable", [("Content-Type", "text/plain; charset=utf-8"),
                                               ("Content-Length", str(len(body))), ("Retry-After", "300")])
    return [body]


def build():
    """The app, or the 503 answer when the settings are wrong (the problems go to the log)."""
    try:
        settings = load_settings(env_file=PRIVATE_FILE)
    except ConfigError as exc:
        (APP_ROOT / "var" / "log").mkdir(parents=True, exist_ok=True)
        logging.basicConfig(filename=APP_ROOT / "var" / "log" / "web.log", level=logging.ERROR,
                            format=logs.FORMAT.replace(" [%(request_id)s]", ""))
        logging.getLogger("passenger_wsgi").error("the site cannot start: %s", exc)
        print(f"images-in-bulk cannot start: {exc}", file=sys.stderr)  # Passenger's own log keeps this too
        return unavailable
    logs.setup(settings, "web")
    problem = logs.private_file_problem(PRIVATE_FILE)
    if problem:
        logging.getLogger("passenger_wsgi").warning("%s", problem)
    try:
        return create_app(settings=settings)
    except ConfigError as exc:
        logging.getLogger("passenger_wsgi").error("the site cannot start: %s", exc)
        return unavailable


application = build()
