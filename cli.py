"""Command line: `initdb` creates or upgrades the database, `cleanup` is the nightly cron job, `setup-stripe`."""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

APP_ROOT = Path(__file__).resolve().parent
if str(APP_ROOT) not in sys.path:  # cron starts us from the home folder
    sys.path.insert(0, str(APP_ROOT))

from services import auth, billing, db, sessions  # noqa: E402
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
        removed = sessions.purge_expired(conn, settings, now)
        flows = auth.purge(conn, now)
        # Stripe retries a webhook for three days; a month of applied event ids is plenty.
        events = db.stripe_events_delete_before(conn, now - 30 * 86400)
    finally:
        conn.close()
    print(f"cleanup: {removed} expired sessions and {flows} expired sign-in flows removed, "
          f"{events} old webhook events forgotten")
    return 0


def cmd_setup_stripe(settings) -> int:
    """Find or create the plan's product and monthly price in Stripe; print the price id."""
    if not settings.billing_enabled:
        print("setup-stripe: set STRIPE_SECRET_KEY and STRIPE_WEBHOOK_SECRET first", file=sys.stderr)
        return 2
    try:
        price = billing.setup_price(billing.make_client(settings), settings)
    except billing.StripeUnavailable as exc:
        print(f"setup-stripe: {exc}", file=sys.stderr)
        return 3
    print(f"setup-stripe: the plan's price is {price} (lookup key {settings.stripe_price_lookup_key}, "
          f"USD {settings.plan_price_usd} per month); the app finds it by its lookup key, or set STRIPE_PRICE_ID")
    return 0


COMMANDS = {"initdb": cmd_initdb, "cleanup": cmd_cleanup, "setup-stripe": cmd_setup_stripe}


def main(argv: list[str] | None = None) -> int:
    """Parse the command line and run one command; problems come out as one clear message."""
    parser = argparse.ArgumentParser(description="images-in-bulk maintenance commands.")
    parser.add_argument("command", choices=sorted(COMMANDS))
    parser.add_argument("--demo", action="store_true", help="act on the local demo's database")
    args = parser.parse_args(argv)
    try:
        settings = load_settings({"APP_MODE": "demo"} if args.demo else None)
        return COMMANDS[args.command](settings)
    except ConfigError as exc:
        print(exc, file=sys.stderr)
        return 2
    except db.DatabaseUnavailable as exc:
        print(f"{args.command}: the database is unavailable: {exc}", file=sys.stderr)
        return 3
    except db.SchemaError as exc:
        print(f"{args.command}: {exc}", file=sys.stderr)
        return 4


if __name__ == "__main__":
    sys.exit(main())
