"""Every subscriber journey, with its webhooks in three API versions' published shapes, on both engines.

A Stripe account's webhook endpoint renders events in its own API version (the account's default
unless chosen), not the one stripe-python pins, so the app must not depend on the payload's shape.
Here the stand-in plays each journey with its deliveries held; each held event is then rebuilt with
exactly the fields Stripe published for one version (tests/stripe_shapes.py, from stripe-python's
classes of that version), signed, and posted to the live app. Each journey ends with the right access
and an exact ledger; then every event is sent again, in reverse order and twice, and nothing changes.
"""

from __future__ import annotations

import json
import time

import pytest
import requests

from services import billing, credits, db
from tests import stripe_shapes
from tests.conftest import unavailable


@pytest.fixture(scope="module")
def shapes():
    """The published field lists of the versions, read once (stripe-python wheels from PyPI, cached)."""
    try:
        for version in stripe_shapes.VERSIONS:
            stripe_shapes.fields(version, "invoice")
    except stripe_shapes.ShapesUnavailable as exc:
        unavailable(str(exc))
    return stripe_shapes


class Journey:
    """A subscriber's life at the stand-in, with each action's webhooks posted in one API version's shape."""

    def __init__(self, shop, fake, shopper, conn, version):
        self.base, self.app = shop
        self.fake, self.shopper, self.conn, self.version = fake, shopper, conn, version
        self.sent: list[dict] = []
        self.offset = 0
        fake.clock = lambda: time.time() + self.offset
        fake.delivery(hold=True)

    @property
    def user(self) -> int:
        return self.conn.scalar("SELECT id FROM users ORDER BY id LIMIT 1")

    def post(self, event: dict) -> requests.Response:
        payload = json.dumps(stripe_shapes.event_in(event, self.version)).encode()
        return requests.post(f"{self.base}/stripe/webhook", data=payload, timeout=10,
                             headers={"Stripe-Signature": self.fake.sign(payload),
                                      "Content-Type": "application/json; charset=utf-8"})

    def deliver(self) -> None:
        """Post what the last action sent, in order, in this journey's version."""
        held, self.fake.held_events[:] = list(self.fake.held_events), []
        for event in held:
            response = self.post(event)
            assert response.status_code == 200, (event["type"], response.text)
            self.sent.append(event)

    def act(self, action, *args, **kwargs):
        """Do something at the stand-in, then deliver its webhooks."""
        result = action(*args, **kwargs)
        self.deliver()
        return result

    def subscribe(self) -> str:
        response = self.shopper.client.post("/billing/checkout", data={"csrf_token": self.shopper.csrf()})
        assert response.status_code == 303, response.text
        self.subscription = self.act(self.fake.pay, response.headers["Location"].rsplit("/", 1)[1])
        return self.subscription

    def later(self, days: float) -> None:
        self.offset += days * 86400

    def spend(self, amount: int) -> None:
        assert credits.reserve(self.conn, self.user, amount, f"item-{len(self.sent)}-{amount}", int(time.time()))

    def charge_of_latest_invoice(self) -> str:
        invoice = self.fake.subscriptions[self.subscription]["latest_invoice"]
        client = billing.make_client(self.app.settings)
        payment = client.v1.invoice_payments.list(params={"invoice": invoice}).to_dict()["data"][0]
        payment_intent = payment["payment"]["payment_intent"]
        return client.v1.charges.list(params={"payment_intent": payment_intent}).to_dict()["data"][0]["id"]

    def outcome(self) -> tuple:
        access = billing.user_access(self.conn, self.user, int(time.time() + self.offset))
        ledger = [(row["reason"], row["delta"]) for row in self.conn.all(
            "SELECT reason, delta FROM credit_ledger WHERE user_id = ? ORDER BY id", (self.user,))]
        balance = credits.balance(self.conn, self.user)
        assert balance == db.credit_ledger_sum(self.conn, self.user)
        return access.state, access.can_generate, balance, ledger

    def replay_reversed_twice(self) -> None:
        for event in reversed(self.sent):
            for _ in range(2):
                response = self.post(event)
                expected = "duplicate" if event["type"] in billing.HANDLED_EVENTS else "ignored"
                assert response.status_code == 200 and response.json()["outcome"] == expected, response.text


def new_subscriber(j: Journey):
    j.subscribe()
    return ("active", True, 300, [("grant", 300)])


def renewal(j: Journey):
    j.subscribe()
    j.spend(100)
    j.later(30)
    j.act(j.fake.renew, j.subscription)
    return ("active", True, 300, [("grant", 300), ("reserve", -100), ("grant", 300), ("expire", -200)])


def payment_failed(j: Journey):
    j.subscribe()
    j.later(30)
    j.act(j.fake.fail_payment, j.subscription)
    return ("past_due", False, 300, [("grant", 300)])


def cancel_at_period_end(j: Journey):
    j.subscribe()
    j.act(j.fake.cancel_at_period_end, j.subscription)
    assert j.outcome()[:2] == ("ending", True)
    j.later(30)
    j.act(j.fake.renew, j.subscription)  # the period ends: Stripe deletes the subscription
    return ("ended", False, 300, [("grant", 300)])


def deleted(j: Journey):
    j.subscribe()
    j.act(billing.make_client(j.app.settings).v1.subscriptions.cancel, j.subscription)
    return ("ended", False, 300, [("grant", 300)])


def paused_and_resumed(j: Journey):
    j.subscribe()
    j.spend(30)
    j.later(2)
    j.act(j.fake.pause, j.subscription)
    assert j.outcome()[:2] == ("paused", False)
    j.later(5)
    j.act(j.fake.resume, j.subscription)
    return ("active", True, 300, [("grant", 300), ("reserve", -30), ("grant", 300), ("expire", -270)])


def refund(j: Journey):
    j.subscribe()
    j.spend(50)
    j.act(j.fake.refund, j.charge_of_latest_invoice())
    return ("active", True, 0, [("grant", 300), ("reserve", -50), ("payment_refunded", -250)])


def dispute_opened_and_won(j: Journey):
    j.subscribe()
    dispute = j.act(j.fake.dispute, j.charge_of_latest_invoice())
    assert j.outcome() == ("suspended", False, 300, [("grant", 300), ("dispute_opened", 0)])
    j.act(j.fake.close_dispute, dispute, won=True)
    return ("active", True, 300, [("grant", 300), ("dispute_opened", 0), ("dispute_won", 0)])


def dispute_lost(j: Journey):
    j.subscribe()
    j.spend(10)
    dispute = j.act(j.fake.dispute, j.charge_of_latest_invoice())
    j.act(j.fake.close_dispute, dispute, won=False)
    return ("suspended", False, 0, [("grant", 300), ("reserve", -10), ("dispute_opened", 0), ("dispute_lost", -290)])


JOURNEYS = [new_subscriber, renewal, payment_failed, cancel_at_period_end, deleted, paused_and_resumed, refund,
            dispute_opened_and_won, dispute_lost]


@pytest.mark.parametrize("version", stripe_shapes.VERSIONS)
@pytest.mark.parametrize("journey", JOURNEYS, ids=[j.__name__ for j in JOURNEYS])
def test_a_journey_in_each_api_versions_shape_ends_right_and_replays_change_nothing(
        shapes, shop, fake_stripe, shopper, conn, version, journey):
    walk = Journey(shop, fake_stripe, shopper, conn, version)
    expected = journey(walk)
    assert walk.outcome() == expected
    walk.replay_reversed_twice()
    assert walk.outcome() == expected


def test_the_shapes_really_differ_between_versions(shapes):
    """The three versions are not the same shape under three names: the fields the app once read moved."""
    old, basil, pinned = stripe_shapes.VERSIONS
    assert "subscription" in shapes.fields(old, "invoice") and "parent" not in shapes.fields(old, "invoice")
    assert "parent" in shapes.fields(basil, "invoice") and "subscription" not in shapes.fields(pinned, "invoice")
    assert "current_period_end" in shapes.fields(old, "subscription")
    assert "current_period_end" not in shapes.fields(basil, "subscription")
    assert "current_period_end" in shapes.fields(basil, "subscription_item")
    assert "invoice" in shapes.fields(old, "charge") and "invoice" not in shapes.fields(pinned, "charge")


def test_a_rendered_event_has_exactly_the_published_fields(shapes, fake_stripe, shop, shopper):
    walk = Journey(shop, fake_stripe, shopper, None, stripe_shapes.VERSIONS[0])
    response = shopper.client.post("/billing/checkout", data={"csrf_token": shopper.csrf()})
    fake_stripe.pay(response.headers["Location"].rsplit("/", 1)[1])
    assert walk.fake.held_events
    for event in fake_stripe.held_events:
        for version in stripe_shapes.VERSIONS:
            shaped = stripe_shapes.event_in(event, version)
            obj = shaped["data"]["object"]
            assert set(obj) == set(shapes.fields(version, obj["object"])), (event["type"], version)
            assert shaped["api_version"] == version
        if event["type"] == "invoice.paid":
            old = stripe_shapes.event_in(event, stripe_shapes.VERSIONS[0])["data"]["object"]
            assert old["subscription"] == event["data"]["object"]["parent"]["subscription_details"]["subscription"]
            assert old["lines"]["data"][0]["subscription"] == old["subscription"]
