"""Logging: one file per role under var/log/ (rotated), a request id on every line, and no secret ever written.

The web app logs to `var/log/web.log`, cron's commands to `var/log/worker.log` and
`var/log/cleanup.log` (each process appends; a file is rotated at LOG_MAX_BYTES, keeping
LOG_BACKUPS old ones). Off production, or with LOG_FILE=false, lines go to standard error.
Every line carries the id of the request it belongs to (`-` outside a request), the id the
response's X-Request-Id header shows. A filter replaces the value of every secret setting
with `[redacted]` before a line is written, whatever the code that logged it.
"""

from __future__ import annotations

import contextvars
import logging
import logging.handlers
import os
import stat
from pathlib import Path

from services.config import Settings

FORMAT = "%(asctime)s %(levelname)s %(name)s [%(request_id)s] %(message)s"
MAX_BYTES = 5 * 1024 * 1024
BACKUPS = 5

request_id: contextvars.ContextVar[str] = contextvars.ContextVar("request_id", default="-")
log = logging.getLogger(__name__)


class RequestIdFilter(logging.Filter):
    """Put the current request's id on each record."""

    def filter(self, record: logging.LogRecord) -> bool:
        """Add `request_id` to the record; always keep it."""
        record.request_id = request_id.get()
        return True


class RedactFilter(logging.Filter):
    """Replace the values of the secret settings in each record's text."""

    def __init__(self, secrets: list[str]):
        super().__init__()
        # Longest first, so a secret that contains another is replaced whole.
        self.secrets = sorted({s for s in secrets if s and len(s) >= 8}, key=len, reverse=True)

    def filter(self, record: logging.LogRecord) -> bool:
        """Rewrite the record's message (and traceback text) without the secrets; always keep it."""
        if not self.secrets:
            return True
        message = record.getMessage()
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        clean = self._clean(message)
        if clean != message:
            record.msg, record.args = clean, None
        if record.exc_text:
            record.exc_text = self._clean(record.exc_text)
        return True

    def _clean(self, text: str) -> str:
        for secret in self.secrets:
            text = text.replace(secret, "[redacted]")
        return text


class RotatingFile(logging.handlers.RotatingFileHandler):
    """The standard rotating file handler, without its cost per line: it formats every record twice (once to
    measure it) and looks twice at the file (is it a regular one?) before each write, which was a third of
    the access line's CPU on every request. Here a file rolls over when it comes within LINE_ALLOWANCE bytes
    of its limit, and the regular-file check is made only then."""

    LINE_ALLOWANCE = 4096

    def shouldRollover(self, record: logging.LogRecord) -> bool:
        """True when the file is near enough its limit (and a regular file: never /dev/null, as the original)."""
        if self.stream is None:
            self.stream = self._open()
        if self.maxBytes <= 0:
            return False
        self.stream.seek(0, 2)  # the end: the other processes of the site append to the same file
        return self.stream.tell() + self.LINE_ALLOWANCE >= self.maxBytes and os.path.isfile(self.baseFilename)


def secret_values(settings: Settings) -> list[str]:
    """Every secret the settings hold: keys, signing secrets, client secrets, the database password."""
    from urllib.parse import urlsplit

    values = [settings.secret_key, settings.openai_api_key, settings.stripe_secret_key,
              settings.stripe_webhook_secret]
    values += [provider.client_secret for provider in settings.providers]
    password = urlsplit(settings.database_url).password
    values.append(password or "")
    return [v for v in values if v]


def setup(settings: Settings, role: str, to_file: bool | None = None) -> Path | None:
    """Configure the root logger for a process (web, worker, cleanup...); returns the log file, if any."""
    to_file = settings.app_mode == "production" if to_file is None else to_file
    root = logging.getLogger()
    redact = RedactFilter(secret_values(settings))
    for handler in list(root.handlers):
        if getattr(handler, "iib", False):
            root.removeHandler(handler)
            handler.close()
        else:
            # Someone else's handler (Passenger's wsgi-loader.py calls basicConfig, and forwards those lines to
            # its own log): it gets the redaction too, or a secret would reach Passenger's log.
            for old in [f for f in handler.filters if isinstance(f, (RedactFilter, RequestIdFilter))]:
                handler.removeFilter(old)
            handler.addFilter(RequestIdFilter())
            handler.addFilter(redact)
    path = None
    if to_file:
        path = settings.var_dir / "log" / f"{role}.log"
        path.parent.mkdir(parents=True, exist_ok=True)
        handler: logging.Handler = RotatingFile(path, maxBytes=MAX_BYTES, backupCount=BACKUPS, encoding="utf-8")
    else:
        handler = logging.StreamHandler()
    handler.iib = True
    handler.setFormatter(logging.Formatter(FORMAT))
    handler.addFilter(RequestIdFilter())
    handler.addFilter(redact)
    root.addHandler(handler)
    root.setLevel(settings.log_level)
    # Nothing in FORMAT needs where a line was logged from: the logging HOWTO's "Optimization" setting skips
    # that walk up the stack for every line (records say "(unknown file)", line 0). The process id and thread
    # stay: Passenger's own handler, which gets these lines too, prints %(process)d.
    logging._srcfile = None
    return path


def private_file_problem(path: Path) -> str | None:
    """Why a private settings file is not private enough (readable or writable by others), or None."""
    try:
        mode = os.stat(path).st_mode
    except OSError:
        return None
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        return (f"the private settings file {path} can be read by other users (mode {stat.filemode(mode)}): "
                f"run chmod 600 {path}")
    return None
