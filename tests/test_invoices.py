"""Paid invoices kept in `invoices` (the owner's revenue), on both engines: through the real webhook route with the
Stripe stand-in, in the pinned API version and in the shapes Stripe published for older ones (tests/stripe_shapes.py).

Kept once however often Stripe or the success page tells the app; a refund sets the refunded total (a replay never
adds to it); a refund that comes before the paid event keeps the invoice first; the currency is Stripe's.
"""

from __future__ import annotations

import json
import logging
import time

import pytest
import requests

from services import billing, credits, db
from tests import stripe_shapes
from tests.conftest import unavailable
from tests.test_billing_webhooks import event, post_event
from tools.fake_stripe import OLD_SHAPE, render_in_version

ROW_FIELDS = ("stripe_invoice_id", "user_id", "amount_paid", "amount_refunded", "currency", "paid_at", "refunded_at",
              "created_at", "updated_at")


@pytest.fixture(scope="module")
def shapes():
    """Stripe's published field lists of the API versions (stripe-python wheels from PyPI, cached)."""
    try:
        for version in stripe_shapes.VERSIONS:
            stripe_shapes.fields(version, "invoice")
    except stripe_shapes.ShapesUnavailable as exc:
        unavailable(str(exc))
    return stripe_shapes


def user_id_of(conn) -> int:
    return conn.scalar("SELECT id FROM users ORDER BY id LIMIT 1")


def checkout_and_pay(shopper, fake_stripe) -> tuple[str, str]:
    """Start Checkout as the signed-in shopper and pay; (session id, subscription id)."""
    response = shopper.client.post("/billing/checkout", data={"csrf_token": shopper.csrf()})
    assert response.status_code == 303, response.text
    session_id = response.headers["Location"].rsplit("/", 1)[1]
    return session_id, fake_stripe.pay(session_id)


def latest_invoice(fake_stripe, subscription_id: str) -> dict:
    return fake_stripe.invoices[fake_stripe.subscriptions[subscription_id]["latest_invoice"]]


def charge_of(fake_stripe, invoice_id: str) -> str:
    """The charge that paid an invoice (through its invoice payment's PaymentIntent, as since basil)."""
    payment = next(p for p in fake_stripe.invoice_payments.values() if p["invoice"] == invoice_id)
    intent = payment["payment"]["payment_intent"]
    return next(c["id"] for c in fake_stripe.charges.values() if c["payment_intent"] == intent)


def row(conn, invoice_id: str) -> dict | None:
    found = db.invoice_get(conn, invoice_id)
    return {name: found[name] for name in ROW_FIELDS} if found else None


def invoice_count(conn) -> int:
    return conn.scalar("SELECT COUNT(*) AS n FROM invoices")


# --- through the webhook route, in the pinned version --------------------------------------------------------------

def test_a_paid_invoice_is_kept_once_however_often_the_app_is_told(shopper, fake_stripe, conn, shop):
    session_id, subscription_id = checkout_and_pay(shopper, fake_stripe)  # the webhooks arrive at once
    invoice = latest_invoice(fake_stripe, subscription_id)
    kept = row(conn, invoice["id"])
    assert kept is not None, "invoice.paid / checkout.session.completed kept no invoice"
    assert kept["user_id"] == user_id_of(conn)
    assert (kept["amount_paid"], kept["currency"]) == (invoice["amount_paid"], invoice["currency"]) == (500, "usd")
    assert kept["paid_at"] == invoice["status_transitions"]["paid_at"]
    assert (kept["amount_refunded"], kept["refunded_at"]) == (0, None)

    time.sleep(1.1)  # a second later: a rewrite would show in updated_at
    assert shopper.client.get(f"/billing/success?session_id={session_id}").status_code == 303  # after the webhook
    for sent in list(fake_stripe.events):  # Stripe's retries of every event
        assert fake_stripe.resend(sent) == 200
    for kind in ("invoice.paid", "invoice.payment_failed"):  # other events about the same invoice
        answer = post_event(shop, fake_stripe, event(kind, invoice["id"], event_id=f"evt_again_{kind}"))
        assert answer.status_code == 200 and answer.json()["outcome"] == "applied"
    session_event = event("checkout.session.completed", session_id, event_id="evt_again_checkout")
    assert post_event(shop, fake_stripe, session_event).json()["outcome"] == "applied"
    assert row(conn, invoice["id"]) == kept
    assert invoice_count(conn) == 1
    assert credits.balance(conn, user_id_of(conn)) == 300


def test_the_success_page_alone_keeps_the_invoice(shopper, fake_stripe, conn):
    fake_stripe.delivery(hold=True)  # no webhook yet
    session_id, subscription_id = checkout_and_pay(shopper, fake_stripe)
    shopper.client.get(f"/billing/success?session_id={session_id}")
    invoice = latest_invoice(fake_stripe, subscription_id)
    kept = row(conn, invoice["id"])
    assert kept and kept["amount_paid"] == 500 and kept["paid_at"] == invoice["status_transitions"]["paid_at"]
    fake_stripe.flush()  # the webhooks arrive late: nothing changes
    assert row(conn, invoice["id"]) == kept and invoice_count(conn) == 1


def test_every_paid_renewal_is_its_own_invoice(shopper, fake_stripe, conn):
    _session, subscription_id = checkout_and_pay(shopper, fake_stripe)
    first = latest_invoice(fake_stripe, subscription_id)["id"]
    renewal = fake_stripe.renew(subscription_id)
    assert renewal != first
    assert [row(conn, found)["amount_paid"] for found in (first, renewal)] == [500, 500]
    assert invoice_count(conn) == 2


def test_a_partial_then_a_full_refund_set_the_refunded_total(shopper, fake_stripe, conn, shop):
    _session, subscription_id = checkout_and_pay(shopper, fake_stripe)
    invoice_id = latest_invoice(fake_stripe, subscription_id)["id"]
    charge = charge_of(fake_stripe, invoice_id)
    before = row(conn, invoice_id)

    fake_stripe.refund(charge, amount=200)
    partial = row(conn, invoice_id)
    assert partial["amount_refunded"] == 200 and partial["refunded_at"] is not None
    assert {k: v for k, v in partial.items() if k not in ("amount_refunded", "refunded_at", "updated_at")} == {
        k: v for k, v in before.items() if k not in ("amount_refunded", "refunded_at", "updated_at")}
    assert credits.balance(conn, user_id_of(conn)) == 300  # a partial refund leaves the credits

    fake_stripe.refund(charge)  # the 300 left
    full = row(conn, invoice_id)
    assert (full["amount_paid"], full["amount_refunded"]) == (500, 500)
    assert credits.balance(conn, user_id_of(conn)) == 0

    time.sleep(1.1)
    refunds = [sent for sent in fake_stripe.events if sent["type"] == "charge.refunded"]
    assert len(refunds) == 2
    for sent in refunds + refunds[::-1]:  # retries, the partial refund's event last
        assert fake_stripe.resend(sent) == 200
    for number in range(2):  # more events about the charge (new ids): the total is read, never added
        answer = post_event(shop, fake_stripe, event("charge.refunded", charge, event_id=f"evt_refund_again_{number}"))
        assert answer.status_code == 200 and answer.json()["outcome"] == "applied"
    assert row(conn, invoice_id) == full
    assert invoice_count(conn) == 1


def test_a_refund_before_the_paid_event_keeps_the_invoice_first(shopper, fake_stripe, conn, caplog):
    caplog.set_level(logging.INFO, logger="services.billing")
    _session, subscription_id = checkout_and_pay(shopper, fake_stripe)  # the customer is known
    fake_stripe.delivery(hold=True)
    renewal_id = fake_stripe.renew(subscription_id)
    fake_stripe.refund(charge_of(fake_stripe, renewal_id), amount=120)
    types = [sent["type"] for sent in fake_stripe.held_events]
    assert types.index("charge.refunded") > types.index("invoice.paid")
    assert row(conn, renewal_id) is None

    assert fake_stripe.flush([types.index("charge.refunded")]) == [200]  # the refund arrives first
    invoice = fake_stripe.invoices[renewal_id]
    kept = row(conn, renewal_id)
    assert kept is not None, "the refund did not keep its invoice"
    assert (kept["amount_paid"], kept["currency"], kept["amount_refunded"]) == (500, "usd", 120)
    assert kept["paid_at"] == invoice["status_transitions"]["paid_at"] and kept["refunded_at"] is not None
    assert f"invoice {renewal_id} of user {user_id_of(conn)} kept on its refund" in caplog.text

    time.sleep(1.1)
    assert all(status == 200 for status in fake_stripe.flush())  # then the paid events: nothing changes
    assert row(conn, renewal_id) == kept
    assert invoice_count(conn) == 2


def test_the_currency_is_kept_as_stripe_sends_it(shopper, fake_stripe, conn, shop):
    _base, app = shop
    client = billing.make_client(app.settings)
    euros = client.v1.prices.create(params={"product": billing.PRODUCT_ID, "unit_amount": 450, "currency": "EUR",
                                            "recurring": {"interval": "month"}}).to_dict()
    app.billing["price_id"] = euros["id"]
    _session, subscription_id = checkout_and_pay(shopper, fake_stripe)
    invoice = latest_invoice(fake_stripe, subscription_id)
    assert invoice["currency"] == "eur"
    kept = row(conn, invoice["id"])
    assert (kept["amount_paid"], kept["currency"]) == (450, "eur")
    fake_stripe.refund(charge_of(fake_stripe, invoice["id"]), amount=50)
    assert row(conn, invoice["id"])["amount_refunded"] == 50
    assert row(conn, invoice["id"])["currency"] == "eur"


# --- in the shapes Stripe published for each API version ------------------------------------------------------------

def post_in_version(shop, fake_stripe, sent: dict, version: str) -> requests.Response:
    payload = json.dumps(stripe_shapes.event_in(sent, version)).encode()
    return requests.post(f"{shop[0]}/stripe/webhook", data=payload, timeout=10,
                         headers={"Stripe-Signature": fake_stripe.sign(payload),
                                  "Content-Type": "application/json; charset=utf-8"})


def deliver_in_version(shop, fake_stripe, version: str) -> list[dict]:
    held, fake_stripe.held_events[:] = list(fake_stripe.held_events), []
    for sent in held:
        answer = post_in_version(shop, fake_stripe, sent, version)
        assert answer.status_code == 200, (sent["type"], answer.text)
    return held


@pytest.mark.parametrize("version", stripe_shapes.VERSIONS)
def test_events_in_each_api_versions_shape_keep_and_refund_the_invoice(shapes, shopper, fake_stripe, conn, shop,
                                                                      version):
    fake_stripe.delivery(hold=True)
    _session, subscription_id = checkout_and_pay(shopper, fake_stripe)
    sent = deliver_in_version(shop, fake_stripe, version)
    paid = next(e for e in sent if e["type"] == "invoice.paid")
    shaped = stripe_shapes.event_in(paid, version)["data"]["object"]
    if version == stripe_shapes.VERSIONS[0]:  # before basil: the subscription at the top, no parent
        assert shaped["subscription"] == subscription_id and "parent" not in shaped
    invoice = latest_invoice(fake_stripe, subscription_id)
    kept = row(conn, invoice["id"])
    assert kept is not None, version
    assert (kept["amount_paid"], kept["currency"], kept["paid_at"]) == (
        500, "usd", invoice["status_transitions"]["paid_at"])

    fake_stripe.refund(charge_of(fake_stripe, invoice["id"]), amount=300)
    sent += deliver_in_version(shop, fake_stripe, version)
    refunded = row(conn, invoice["id"])
    assert refunded["amount_refunded"] == 300

    for again in reversed(sent):  # every event again, in reverse order: duplicates, nothing changes
        answer = post_in_version(shop, fake_stripe, again, version)
        expected = "duplicate" if again["type"] in billing.HANDLED_EVENTS else "ignored"
        assert answer.json()["outcome"] == expected
    assert row(conn, invoice["id"]) == refunded and invoice_count(conn) == 1


def test_an_invoice_in_each_published_shape_reads_the_same(shapes, shopper, fake_stripe):
    """The invoice fields the app keeps are where Stripe published them in every version, even read in an old one."""
    _session, subscription_id = checkout_and_pay(shopper, fake_stripe)
    invoice = latest_invoice(fake_stripe, subscription_id)
    for version in stripe_shapes.VERSIONS:
        shaped = stripe_shapes.render(invoice, version)
        assert set(shaped) == set(shapes.fields(version, "invoice"))
        assert billing._invoice_subscription_id(shaped) == subscription_id, version
        assert billing._paid_invoice_fields(shaped, now=1) == (500, "usd", invoice["status_transitions"]["paid_at"])
    charge = fake_stripe.charges[charge_of(fake_stripe, invoice["id"])]
    old_charge = render_in_version(charge, OLD_SHAPE, fake_stripe._lookup)  # a Charge named its invoice then
    assert billing._charge_invoice(None, old_charge) == invoice["id"]


# --- the rules, on the database alone ----------------------------------------------------------------------------

def paid_invoice(invoice_id="in_unit_1", amount=500, currency="usd", paid_at=1_700_000_000, **extra) -> dict:
    return {"id": invoice_id, "object": "invoice", "status": "paid", "amount_paid": amount, "currency": currency,
            "customer": "cus_unit", "status_transitions": {"paid_at": paid_at}, **extra}


def test_a_zero_invoice_is_not_kept_and_neither_is_an_unpaid_one(conn, caplog):
    caplog.set_level(logging.INFO, logger="services.billing")
    user = db.user_insert(conn, "Ana", "ana@example.com", 1)
    assert not billing._record_invoice(conn, user, paid_invoice("in_trial", amount=0), 5)
    assert not billing._record_invoice(conn, user, paid_invoice("in_open", status="open"), 5)
    assert not billing._record_invoice(conn, user, paid_invoice("in_odd", currency="dollars"), 5)
    assert invoice_count(conn) == 0
    assert "in_trial of user" in caplog.text and "paid with no money" in caplog.text
    assert "in_odd has no usable currency" in caplog.text


def test_record_keeps_the_first_answer_and_refund_sets_a_total(conn):
    user = db.user_insert(conn, "Ana", "ana@example.com", 1)
    assert billing._record_invoice(conn, user, paid_invoice(currency="EUR"), 10)
    assert not billing._record_invoice(conn, user, paid_invoice(amount=999), 20)
    kept = row(conn, "in_unit_1")
    assert (kept["amount_paid"], kept["currency"], kept["paid_at"], kept["updated_at"]) == (500, "eur",
                                                                                            1_700_000_000, 10)
    assert db.invoice_refund(conn, "in_unit_1", 200, 30)
    assert not db.invoice_refund(conn, "in_unit_1", 200, 40)  # the same total again changes nothing
    assert db.invoice_refund(conn, "in_unit_1", 500, 50)
    kept = row(conn, "in_unit_1")
    assert (kept["amount_refunded"], kept["refunded_at"], kept["updated_at"]) == (500, 50, 50)
    assert not db.invoice_refund(conn, "in_unknown", 100, 60)
    assert billing._record_invoice(conn, user, paid_invoice("in_no_time", status_transitions={}), 70)
    assert row(conn, "in_no_time")["paid_at"] == 70  # no paid_at from Stripe: when the app learned of it


def test_a_one_off_invoice_is_kept_for_its_customers_user(conn, caplog):
    user = db.user_insert(conn, "Ana", "ana@example.com", 1)
    db.user_set_stripe_customer(conn, user, "cus_unit")
    with conn.transaction():
        assert billing._lone_invoice_applier(paid_invoice("in_one_off", billing_reason="manual"))(conn, 9) is None
    assert row(conn, "in_one_off")["user_id"] == user
    stranger = paid_invoice("in_stranger", customer="cus_nobody")
    with conn.transaction():
        assert billing._lone_invoice_applier(stranger)(conn, 9) == "ignored"
    assert row(conn, "in_stranger") is None
