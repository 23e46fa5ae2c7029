""""Email me when my batch is ready": one email per batch, in the language the batch was made in.

The cron worker calls `send_due()` once a minute, after the queue's work. A batch is due when
its owner ticked the box (notify_email), it is finished (done or cancelled, nothing left to
make) and its email has not been sent (notified_at NULL). Each batch is claimed with a
conditional UPDATE before its email goes out, so two runs at once never both send it; a crash
after the claim loses that email rather than sending it twice. The server's "try again later"
(it is down or slow, or answered 4xx) puts the claim back for the next run; a permanent refusal
(a 5xx, a malformed address) is logged and never retried.

The email says how many images are ready, failed and were cancelled, links to the batch page and
says how long the images wait on the server. It never contains a prompt, a file name or an image.
The strings are English source text, extracted by pybabel from the gettext()/ngettext() calls
below and translated with the catalog of the batch's language.
"""

from __future__ import annotations

import gettext
import logging
import time
from collections.abc import Mapping

from services import db, mail
from services.config import Settings
from services.i18n import SOURCE_LANGUAGE

log = logging.getLogger(__name__)

MAX_PER_RUN = 50  # emails one run sends at most; the rest wait for the next run


def send_due(conn: db.Connection, settings: Settings, translations: Mapping[str, gettext.NullTranslations],
             now: int | None = None, limit: int = MAX_PER_RUN) -> dict[str, int]:
    """Send the due "your batch is ready" emails; counts of those sent, put back to retry, and refused for good.

    Does nothing when mail is off (SMTP_HOST unset). When the server cannot be reached at all,
    the run stops at the first batch and puts it back: the others wait for the next run rather
    than each waiting for the same timeout.
    """
    counts = {"sent": 0, "retry": 0, "failed": 0}
    if not settings.mail_enabled:
        return counts
    now = now or int(time.time())
    finished_since = now - settings.image_retention_days * 86400
    for batch in db.batches_to_notify(conn, finished_since, limit):
        try:
            message = compose(settings, translations, batch)
        except (KeyError, ValueError, TypeError):  # a translation with a broken placeholder: fix the catalog
            log.exception("notify: cannot write the email for batch %s in %r", batch["id"], batch["lang"])
            continue
        if not db.batch_notify_claim(conn, batch["id"], now):
            continue  # another run took it
        try:
            mail.send(settings, message)
        except mail.MailError as exc:
            reason = _without_address(str(exc), batch["email"])
            if exc.temporary:
                db.batch_notify_release(conn, batch["id"], now)
                counts["retry"] += 1
                log.warning("notify: the email for batch %s waits for the next run: %s", batch["id"], reason)
                if exc.code is None:  # no answer from the server at all: the next ones would fail alike
                    break
            else:
                counts["failed"] += 1
                log.error("notify: the email for batch %s (user %s) was refused and will not be retried: %s",
                          batch["id"], batch["user_id"], reason)
            continue
        counts["sent"] += 1
        log.info("notify: emailed the owner of batch %s (user %s)", batch["id"], batch["user_id"])
    return counts


def compose(settings: Settings, translations: Mapping[str, gettext.NullTranslations], batch: dict) -> mail.Message:
    """The email for one finished batch (a row of db.batches_to_notify), in the batch's language."""
    lang = batch["lang"] if batch["lang"] in translations else settings.default_language
    tr = translations.get(lang)
    if tr is None:
        lang, tr = SOURCE_LANGUAGE, gettext.NullTranslations()
    ready, failed, cancelled = int(batch["ready"]), int(batch["failed"]), int(batch["cancelled"])
    days = settings.image_retention_days
    link = settings.url(f"/batches/{batch['id']}")
    lines = [tr.gettext("Hello,"), "", tr.gettext("Your batch %(id)s has finished.") % {"id": batch["id"]}, ""]
    lines.append("- " + tr.ngettext("%(count)s image is ready.", "%(count)s images are ready.", ready)
                 % {"count": ready})
    if failed:
        lines.append("- " + tr.ngettext("%(count)s image failed.", "%(count)s images failed.", failed)
                     % {"count": failed})
    if cancelled:
        lines.append("- " + tr.ngettext("%(count)s image was cancelled.", "%(count)s images were cancelled.",
                                         cancelled) % {"count": cancelled})
    lines.append("")
    if ready:
        lines += [tr.gettext("Open the batch page to collect the images:"), link, "",
                  tr.ngettext("The images wait on the server for %(count)s day until the batch page collects them.",
                              "The images wait on the server for %(count)s days until the batch page collects them.",
                              days) % {"count": days}]
    else:
        lines += [tr.gettext("Open the batch page to see what happened:"), link]
    lines += ["", tr.gettext("You get this email because you asked for it when you started the batch.")]
    subject = tr.gettext("Your batch %(id)s is ready") % {"id": batch["id"]}
    return mail.Message(to=batch["email"], subject=subject, text="\n".join(lines) + "\n", language=lang)


def _without_address(text: str, address: str) -> str:
    """A mail error's text with the recipient's address masked (a***@example.com) for the log."""
    local, _, domain = address.rpartition("@")
    if not address or not local:
        return text
    return text.replace(address, f"{local[0]}***@{domain}")
