"""Command line: initdb, cleanup (nightly cron), worker (cron every minute), setup-stripe, models-check, prices."""

from __future__ import annotations

import argparse
import datetime
import sys
import time
from pathlib import Path

APP_ROOT = Path(__file__).resolve().parent
if str(APP_ROOT) not in sys.path:  # cron starts us from the home folder
    sys.path.insert(0, str(APP_ROOT))

# Only what every command needs: the worker starts a new process each minute (and on each new batch), so
# sign-in and Stripe (about 0.25 s of imports) are imported by the commands that use them.
from services import catalog as model_catalog  # noqa: E402
from services import db, logs, openai_images, sessions, worker  # noqa: E402
from services.config import ConfigError, load_settings  # noqa: E402


def cmd_initdb(settings) -> int:
    """Create the schema on an empty database or apply pending migrations; safe to run again."""
    database = db.Database(settings.database_url)
    before, after = db.initdb(database)
    if before is None:
        print(f"initdb: created schema version {after} in {database.describe()}")
    elif before == after:
        print(f"initdb: {database.describe()} is already at schema version {after}; nothing to do")
    else:
        print(f"initdb: upgraded {database.describe()} from schema version {before} to {after}")
    return 0


def cmd_cleanup(settings) -> int:
    """Delete what has expired (sessions, sign-in flows, throttling counters); prints a one-line summary."""
    database = db.Database(settings.database_url)
    conn = database.connect()
    now = int(time.time())
    try:
        from services import admin, auth, batches

        removed = sessions.purge_expired(conn, settings, now)
        flows = auth.purge(conn, now)
        # Stripe retries a webhook for three days; a month of applied event ids is plenty.
        events = db.stripe_events_delete_before(conn, now - 30 * 86400)
        expired, orphans, leases = worker.cleanup(conn, settings, now)
        # The console's daily figures are rolled up first, so deleting old items takes nothing from them.
        admin.rollup(conn, now)
        # Prompts are personal data: a finished batch is kept BATCH_HISTORY_DAYS, then deleted with its items.
        history = batches.purge_history(conn, settings.results_dir, now - settings.batch_history_days * 86400)
    finally:
        conn.close()
    print(f"cleanup: {removed} expired sessions and {flows} expired sign-in flows removed, "
          f"{events} old webhook events forgotten, {expired} uncollected images expired, "
          f"{orphans} orphan files deleted, {leases} stale leases released, "
          f"{history} finished batches past {settings.batch_history_days} days deleted")
    return 0


def cmd_setup_stripe(settings, check: bool = False, replace_webhook: bool = False) -> int:
    """Set up the plan's price, the webhook endpoint and the Customer Portal in Stripe, or (--check) report drift."""
    if not settings.stripe_secret_key:
        print("setup-stripe: set STRIPE_SECRET_KEY first", file=sys.stderr)
        return 2
    from services import billing, stripe_setup

    name = "setup-stripe --check" if check else "setup-stripe"
    try:
        report = stripe_setup.run(billing.make_client(settings), settings, check=check,
                                  replace_webhook=replace_webhook)
    except billing.StripeUnavailable as exc:
        print(f"{name}: {exc}", file=sys.stderr)
        return 3
    for line in report.lines:
        print(f"{name}: {line}")
    if report.secret:
        print(f"{name}: the new endpoint's signing secret, shown this once: put it in the private settings file as\n"
              f"    STRIPE_WEBHOOK_SECRET={report.secret}\n"
              f"  and restart the app (until then Stripe's deliveries are refused and retried, so none is lost)")
    if check:
        print(f"{name}: " + ("drift found: run `python cli.py setup-stripe` to fix it" if report.drift
                             else "everything matches"))
        return 1 if report.drift else 0
    print(f"{name}: " + ("done" if report.changed else "nothing to change: everything was already set up"))
    return 0


def cmd_worker(settings, max_seconds: float | None = None, once: bool = False, slot_fd: int | None = None) -> int:
    """Work the queue until it is empty, the time limit passes, or (--once) one item is done.

    The process first holds one of the WORKER_PROCESSES slots (handed down by the web process
    that kicked it, or taken here when cron starts it); with every slot taken it does nothing.
    """
    if slot_fd is None or not worker.slot_held(settings, slot_fd):
        slot_fd = worker.take_slot(settings)
        if slot_fd is None:
            print(f"worker: {settings.worker_processes} worker process(es) already running; nothing to do")
            return 0
    catalog = model_catalog.load(settings.model_catalog or None)
    database = db.Database(settings.database_url)
    conn = database.connect()
    try:  # economy batches first: send what waits, ask about open jobs (once a minute), collect finished ones
        from services import economy

        sent = economy.tick(conn, settings, catalog)
    finally:
        conn.close()
    if any(sent.values()):
        print(f"worker: economy: {sent['sent']} sent, {sent['done']} done, {sent['failed']} failed")
    stats = worker.run(settings, database, catalog, max_seconds=max_seconds, once=once)
    print("worker: " + (", ".join(f"{count} {outcome}" for outcome, count in sorted(stats.items())) or "nothing to do"))
    if settings.mail_enabled:  # "email me when it is ready": the batches that finished meanwhile
        from services import i18n, notify

        conn = database.connect()
        try:
            mailed = notify.send_due(conn, settings, i18n.load_translations())
        finally:
            conn.close()
        if any(mailed.values()):
            print(f"worker: mail: {mailed['sent']} sent, {mailed['retry']} to retry, {mailed['failed']} refused")
    return 0


#: Ids of image models (models-check lists those the key can use and the catalogue lacks).
IMAGE_MODEL_PREFIXES = ("gpt-image", "dall-e", "chatgpt-image")


def cmd_models_check(settings) -> int:
    """Compare the catalogue with the models the key can use; warn about retirements."""
    catalog = model_catalog.load(settings.model_catalog or None)
    try:
        available = openai_images.list_models(settings.openai_base_url, settings.openai_api_key)
    except openai_images.ImageAPIError as exc:
        print(f"models-check: cannot list the models ({exc.kind}: {exc.message})", file=sys.stderr)
        return 3
    today = datetime.date.today()
    problems = 0
    for model in catalog.models:
        notes = []
        if model.id not in available:
            notes.append("NOT available to this key")
            problems += 1
        if model.retires and model.retired(today):
            notes.append(f"retired on {model.retires} (hidden from the form)")
        elif model.retires and (model.retires - today).days <= 30:
            notes.append(f"retires on {model.retires}, in {(model.retires - today).days} days")
        print(f"models-check: {model.id}: {'; '.join(notes) or 'ok'}")
    # Informational: image models the key could use that the catalogue lacks (new ones, snapshots).
    known = {model.id for model in catalog.models}
    for model_id in sorted(m for m in available if m.startswith(IMAGE_MODEL_PREFIXES) and m not in known):
        print(f"models-check: {model_id}: available to this key, not in the catalogue")
    return 1 if problems else 0


def cmd_prices(settings, margin: float = 1.0, since: int | None = None, write: str | None = None) -> int:
    """Recompute the credit prices from the recorded usage; print the table and (--write PATH) a catalogue copy."""
    from services import prices

    if not 0 < margin < float("inf") or (since is not None and since <= 0):
        print("prices: --margin and --since must be more than 0", file=sys.stderr)
        return 2
    source = Path(settings.model_catalog or model_catalog.DEFAULT_FILE)
    raw = prices.read_raw(source)
    conn = db.Database(settings.database_url).connect()
    try:
        usage = db.items_usage(conn, None if since is None else int(time.time()) - since * 86400)
    finally:
        conn.close()
    report = prices.compute(raw, usage, margin, since)
    for line in prices.report_lines(report):
        print(f"prices: {line}")
    if write is None:
        return 0
    data, changes = prices.rewrite(raw, report)
    target = Path(write)
    try:
        prices.write(target, data)
    except OSError as exc:
        print(f"prices: cannot write {target}: {exc.strerror or exc}", file=sys.stderr)
        return 1
    for combination, old, new in changes:
        print(f"prices: {combination.label}: {old} -> {new} credits")
    live = target.resolve() == source.resolve()
    print(f"prices: wrote {target}: " + (f"{len(changes)} price(s) changed" if changes else "no price changed")
          + ("; this is the live catalogue: restart the app for the site to use it" if live and changes else
             "" if live else f"; {source} is unchanged"))
    return 0


def cmd_check_mail(settings, to: str | None = None) -> int:
    """Send one test email with the SMTP settings, to check them before subscribers rely on them."""
    from services import mail

    if not settings.mail_enabled:
        print("check-mail: mail is off (SMTP_HOST is not set): the review offers no email box", file=sys.stderr)
        return 2
    if not to:
        print("check-mail: give the address to send the test to: python cli.py check-mail you@example.com",
              file=sys.stderr)
        return 2
    message = mail.Message(to=to, subject="images-in-bulk: test email",
                           text="This test email was sent by `python cli.py check-mail`: the SMTP settings work.\n")
    try:
        message_id = mail.send(settings, message)
    except mail.MailError as exc:  # its text never holds the password
        kind = "temporary (try again later)" if exc.temporary else "refused"
        print(f"check-mail: not sent, {kind}: {exc}", file=sys.stderr)
        return 1
    print(f"check-mail: sent to {to} through {settings.smtp_host}:{settings.smtp_port} ({message_id})")
    return 0


COMMANDS = {"initdb": cmd_initdb, "check-mail": cmd_check_mail, "cleanup": cmd_cleanup,
            "setup-stripe": cmd_setup_stripe, "worker": cmd_worker,
            "models-check": cmd_models_check, "prices": cmd_prices}


def main(argv: list[str] | None = None) -> int:
    """Parse the command line and run one command; problems come out as one clear message."""
    parser = argparse.ArgumentParser(description="images-in-bulk maintenance commands.")
    parser.add_argument("command", choices=sorted(COMMANDS))
    parser.add_argument("address", nargs="?", default=None, help="check-mail: the address to send the test to")
    parser.add_argument("--demo", action="store_true", help="act on the local demo's database")
    parser.add_argument("--max-seconds", type=float, default=None, help="worker: stop taking items after this long")
    parser.add_argument("--once", action="store_true", help="worker: do one item and stop")
    parser.add_argument("--slot-fd", type=int, default=None, help=argparse.SUPPRESS)  # kick() hands its slot down
    parser.add_argument("--check", action="store_true", help="setup-stripe: only report what differs (exit 1)")
    parser.add_argument("--replace-webhook", action="store_true",
                        help="setup-stripe: replace a webhook endpoint of another API version with a new one")
    parser.add_argument("--margin", type=float, default=1.0, metavar="M",
                        help="prices: new price = ceil(p90 cost x M / credit_usd); 1.0 (default) makes a credit "
                             "cover exactly credit_usd of upstream cost, 1.25 keeps a quarter more")
    parser.add_argument("--since", type=int, default=None, metavar="DAYS",
                        help="prices: only the images finished in the last DAYS days (default: all recorded usage)")
    parser.add_argument("--write", default=None, metavar="PATH",
                        help="prices: write a copy of the catalogue with the recomputed prices to PATH "
                             "(the live catalogue only when PATH is that file)")
    args = parser.parse_args(argv)
    try:
        # setup-stripe creates the webhook endpoint, and so prints the secret the app then needs.
        settings = load_settings({"APP_MODE": "demo"} if args.demo else None,
                                 allow_missing=("STRIPE_WEBHOOK_SECRET",) if args.command == "setup-stripe" else ())
        if args.command in ("worker", "cleanup"):  # cron's commands: in production, to var/log/<command>.log
            logs.setup(settings, args.command)
        if args.command == "worker":
            return cmd_worker(settings, args.max_seconds, args.once, args.slot_fd)
        if args.command == "setup-stripe":
            return cmd_setup_stripe(settings, args.check, args.replace_webhook)
        if args.command == "prices":
            return cmd_prices(settings, args.margin, args.since, args.write)
        if args.command == "check-mail":
            return cmd_check_mail(settings, args.address)
        return COMMANDS[args.command](settings)
    except ConfigError as exc:
        print(exc, file=sys.stderr)
        return 2
    except db.DatabaseUnavailable as exc:
        print(f"{args.command}: the database is unavailable: {exc}", file=sys.stderr)
        return 3
    except (db.SchemaError, model_catalog.CatalogError) as exc:
        print(f"{args.command}: {exc}", file=sys.stderr)
        return 4


if __name__ == "__main__":
    sys.exit(main())
