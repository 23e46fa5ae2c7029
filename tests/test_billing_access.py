"""The one rule for who may start batches, from the subscription as Stripe last described it."""

import pytest

from services.billing import access

NOW = 1_800_000_000
DAY = 86400


def subscription(status="active", period_end=NOW + 10 * DAY, cancel_at_period_end=0, cancel_at=None, ended_at=None):
    return {"status": status, "current_period_end": period_end, "cancel_at_period_end": cancel_at_period_end,
            "cancel_at": cancel_at, "ended_at": ended_at}


@pytest.mark.parametrize("row, state, allowed", [
    (None, "none", False),
    (subscription(), "active", True),
    (subscription(status="trialing"), "active", True),
    (subscription(cancel_at_period_end=1), "ending", True),
    (subscription(cancel_at=NOW + DAY), "ending", True),
    (subscription(cancel_at_period_end=1, period_end=NOW - 1), "ended", False),
    (subscription(status="past_due"), "past_due", False),
    (subscription(status="unpaid"), "unpaid", False),
    (subscription(status="paused"), "paused", False),
    (subscription(status="canceled", ended_at=NOW - DAY), "ended", False),
    (subscription(status="incomplete"), "none", False),
    (subscription(status="incomplete_expired"), "none", False),
])
def test_access_rule(row, state, allowed):
    result = access(row, NOW)
    assert (result.state, result.can_generate) == (state, allowed)


def test_a_cancelled_subscription_keeps_access_until_its_period_ends_then_loses_it():
    row = subscription(cancel_at_period_end=1, period_end=NOW + 100)
    assert access(row, NOW + 99).can_generate
    assert access(row, NOW + 99).period_end == NOW + 100
    assert not access(row, NOW + 100).can_generate
