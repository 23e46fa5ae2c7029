"""The credits ledger: every change of a balance is a ledger line, and a balance never goes below zero.

`reserve`, `refund` and `grant_period` are idempotent by their reference: (reason, reference)
is unique in the ledger, so calling one twice for the same thing changes the balance once.
A reservation takes the balance with one conditional UPDATE (`balance + delta >= 0`), which
is atomic on both engines whatever the number of processes; on MariaDB it also takes the row
lock first, so concurrent reservations queue on the balance row instead of deadlocking.
"""

from __future__ import annotations

import logging
import time

import pymysql

from services import db

log = logging.getLogger(__name__)

DEADLOCK_ATTEMPTS = 5


class InsufficientCredits(Exception):
    """The balance is smaller than what a reservation needs."""


def _retrying(action, conn: db.Connection):
    """Run a transaction again when MariaDB chose it as a deadlock victim (it was rolled back whole).

    Inside an outer transaction there is nothing to retry here: the outer one was rolled back.
    """
    if conn.in_transaction:
        return action()
    for attempt in range(1, DEADLOCK_ATTEMPTS + 1):
        try:
            return action()
        except pymysql.err.OperationalError as exc:
            if exc.args[0] not in (1213, 1205) or attempt == DEADLOCK_ATTEMPTS:
                raise
            log.info("credits transaction retried after MariaDB error %s", exc.args[0])
            time.sleep(0.01 * attempt)
    return None


def balance(conn: db.Connection, user_id: int) -> int:
    """The credits a user has left."""
    return db.credit_balance(conn, user_id)


def reserve(conn: db.Connection, user_id: int, amount: int, reference: str, now: int, reason: str = "reserve") -> bool:
    """Take `amount` credits for `reference` (ledger reason `reason`); False if done already; InsufficientCredits."""

    def attempt():
        with conn.transaction():
            if db.credit_balance_add(conn, user_id, -amount, now) != 1:
                if db.credit_ledger_find(conn, reason, reference):
                    return False
                raise InsufficientCredits(f"user {user_id} has fewer than {amount} credits")
            if not db.credit_ledger_insert(conn, user_id, -amount, reason, reference, now):
                db.credit_balance_add(conn, user_id, amount, now)  # already reserved: put it back
                return False
            return True

    return _retrying(attempt, conn)


def refund(conn: db.Connection, user_id: int, amount: int, reference: str, now: int) -> bool:
    """Give back `amount` credits for `reference` (once); False if that refund was already made."""

    def attempt():
        with conn.transaction():
            # The balance row first, as in reserve: one lock order, so the two never deadlock.
            if db.credit_balance_add(conn, user_id, amount, now) != 1:
                db.credit_balance_ensure(conn, user_id, now)
                db.credit_balance_add(conn, user_id, amount, now)
            if not db.credit_ledger_insert(conn, user_id, amount, "refund", reference, now):
                db.credit_balance_add(conn, user_id, -amount, now)  # refunded already: take it back
                return False
            return True

    return _retrying(attempt, conn)


def grant_period(conn: db.Connection, user_id: int, credits: int, reference: str, now: int) -> bool:
    """Start a billing period (reference: its invoice, `now` its time): what was left expires, `credits` are granted.

    Once per invoice, once per period (a second invoice for a period already granted grants nothing), and never
    for an invoice older than the latest one granted: a late or retried webhook for last month's invoice must not
    reset this month's balance.
    """
    db.credit_balance_ensure(conn, user_id, now)

    def attempt():
        with conn.transaction():
            left = db.credit_balance_lock(conn, user_id) or 0
            latest = db.credit_latest_grant_at(conn, user_id)
            if latest is not None and latest >= now:
                return False
            if not db.credit_ledger_insert(conn, user_id, credits, "grant", reference, now):
                return False
            if left:
                db.credit_ledger_insert(conn, user_id, -left, "expire", reference, now)
            db.credit_balance_set(conn, user_id, credits, now)
            return True

    return _retrying(attempt, conn)


def adjust(conn: db.Connection, user_id: int, delta: int, reference: str, now: int) -> bool:
    """An owner's grant (delta > 0) or withdrawal (delta < 0), ledger reason `adjust`, once per reference.

    False when a withdrawal would take the balance below zero (nothing changes then) or the
    reference was used already.
    """
    db.credit_balance_ensure(conn, user_id, now)

    def attempt():
        with conn.transaction():
            if db.credit_balance_add(conn, user_id, delta, now) != 1:
                return False
            if not db.credit_ledger_insert(conn, user_id, delta, "adjust", reference, now):
                raise _Undo()
            return True

    try:
        return _retrying(attempt, conn)
    except _Undo:
        return False


class _Undo(Exception):
    """Roll back an adjustment whose reference was already in the ledger."""


def billing_line(conn: db.Connection, user_id: int, reason: str, reference: str, now: int,
                 withdraw_invoice: str | None = None) -> int | None:
    """Write one ledger line for a billing event (a refund, a dispute opened, won or lost), once per reference.

    With `withdraw_invoice`, what is left of that invoice's period is withdrawn, but only while it is the current
    period (the latest grant is that invoice's); otherwise, and without it, the line changes nothing (delta 0).
    Returns the delta written, or None when this (reason, reference) was recorded already.
    """
    db.credit_balance_ensure(conn, user_id, now)

    def attempt():
        with conn.transaction():
            left = db.credit_balance_lock(conn, user_id) or 0
            latest = db.credit_latest_grant(conn, user_id) if withdraw_invoice else None
            delta = -left if latest is not None and latest["reference"] == withdraw_invoice else 0
            if not db.credit_ledger_insert(conn, user_id, delta, reason, reference, now):
                return None
            if delta:
                db.credit_balance_set(conn, user_id, left + delta, now)
            return delta

    return _retrying(attempt, conn)


def recent(conn: db.Connection, user_id: int, since: int, limit: int = 20) -> list[dict]:
    """A user's ledger lines since a time (the current period), newest first."""
    return db.credit_ledger_recent(conn, user_id, since, limit)
