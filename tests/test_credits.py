"""The credits ledger on both engines: idempotent by reference, never below zero, ledger sum = balance."""

import subprocess
import sys

import pytest

from services import credits, db
from tests.conftest import ROOT

NOW = 1_800_000_000


@pytest.fixture
def user_id(conn):
    return db.user_insert(conn, "Ana", "ana@example.com", NOW)


def assert_consistent(conn, user_id):
    balance = credits.balance(conn, user_id)
    assert balance >= 0
    assert db.credit_ledger_sum(conn, user_id) == balance
    return balance


def test_a_period_grant_sets_the_balance_once_per_invoice(conn, user_id):
    assert credits.grant_period(conn, user_id, 300, "in_1", NOW) is True
    assert credits.grant_period(conn, user_id, 300, "in_1", NOW) is False
    assert assert_consistent(conn, user_id) == 300


def test_a_renewal_resets_the_credits_without_rollover(conn, user_id):
    credits.grant_period(conn, user_id, 300, "in_1", NOW)
    credits.reserve(conn, user_id, 120, "item-1", NOW)
    assert credits.grant_period(conn, user_id, 300, "in_2", NOW + 100) is True
    assert assert_consistent(conn, user_id) == 300
    reasons = [row["reason"] for row in credits.recent(conn, user_id, 0)]
    assert reasons == ["expire", "grant", "reserve", "grant"]
    assert credits.recent(conn, user_id, 0)[0]["delta"] == -180


def test_a_late_grant_for_an_older_invoice_changes_nothing(conn, user_id):
    credits.grant_period(conn, user_id, 300, "in_2", NOW + 100)
    credits.reserve(conn, user_id, 120, "item-1", NOW + 150)
    assert credits.grant_period(conn, user_id, 300, "in_1", NOW) is False
    assert credits.grant_period(conn, user_id, 300, "in_1", NOW) is False
    assert assert_consistent(conn, user_id) == 180
    assert [row["reason"] for row in credits.recent(conn, user_id, 0)] == ["reserve", "grant"]


def test_reserve_is_idempotent_by_reference(conn, user_id):
    credits.grant_period(conn, user_id, 10, "in_1", NOW)
    assert credits.reserve(conn, user_id, 4, "item-7", NOW) is True
    assert credits.reserve(conn, user_id, 4, "item-7", NOW) is False
    assert assert_consistent(conn, user_id) == 6


def test_reserve_refuses_to_go_below_zero_and_leaves_nothing_behind(conn, user_id):
    credits.grant_period(conn, user_id, 3, "in_1", NOW)
    with pytest.raises(credits.InsufficientCredits):
        credits.reserve(conn, user_id, 4, "item-8", NOW)
    assert db.credit_ledger_find(conn, "reserve", "item-8") is None
    assert assert_consistent(conn, user_id) == 3
    assert credits.reserve(conn, user_id, 3, "item-9", NOW) is True
    assert assert_consistent(conn, user_id) == 0


def test_a_user_without_credits_cannot_reserve(conn, user_id):
    with pytest.raises(credits.InsufficientCredits):
        credits.reserve(conn, user_id, 1, "item-1", NOW)
    assert credits.balance(conn, user_id) == 0


def test_an_already_made_reservation_stays_made_even_when_the_balance_is_now_short(conn, user_id):
    credits.grant_period(conn, user_id, 5, "in_1", NOW)
    assert credits.reserve(conn, user_id, 5, "item-1", NOW) is True
    assert credits.reserve(conn, user_id, 5, "item-1", NOW) is False  # not InsufficientCredits
    assert assert_consistent(conn, user_id) == 0


def test_refund_is_idempotent_by_reference(conn, user_id):
    credits.grant_period(conn, user_id, 10, "in_1", NOW)
    credits.reserve(conn, user_id, 4, "item-1", NOW)
    assert credits.refund(conn, user_id, 4, "item-1", NOW) is True
    assert credits.refund(conn, user_id, 4, "item-1", NOW) is False
    assert assert_consistent(conn, user_id) == 10


def test_a_thousand_concurrent_reservations_from_two_processes(db_url, conn, user_id):
    credits.grant_period(conn, user_id, 600, "in_1", NOW)
    processes = [subprocess.Popen([sys.executable, "-m", "tests.reserve_worker", db_url, str(user_id), f"p{n}",
                                   "5", "100"], cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
                 for n in range(2)]
    taken = refused = 0
    for process in processes:
        out, err = process.communicate(timeout=300)
        assert process.returncode == 0, err
        got, lost = map(int, out.split())
        taken, refused = taken + got, refused + lost
    assert taken + refused == 1000
    assert taken == 600 and refused == 400
    assert assert_consistent(conn, user_id) == 0
    assert conn.scalar("SELECT COUNT(*) AS n FROM credit_ledger WHERE reason = 'reserve'") == 600


def test_reservations_inside_a_larger_transaction_stay_correct(conn, user_id):
    credits.grant_period(conn, user_id, 10, "in_1", NOW)
    with conn.transaction():
        assert credits.reserve(conn, user_id, 3, "item-1", NOW) is True
        assert credits.reserve(conn, user_id, 3, "item-1", NOW) is False
        assert credits.refund(conn, user_id, 3, "item-1", NOW) is True
        assert credits.refund(conn, user_id, 3, "item-1", NOW) is False
    assert assert_consistent(conn, user_id) == 10


def test_refund_for_a_user_without_a_balance_row_creates_it(conn, user_id):
    assert credits.refund(conn, user_id, 2, "item-1", NOW) is True
    assert assert_consistent(conn, user_id) == 2
