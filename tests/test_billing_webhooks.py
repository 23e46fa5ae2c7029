"""The webhook's edges over real HTTP: what it answers before reading anything, vanished objects, Stripe down,
signature times, other API versions, the plan's item, one grant per period."""

import json
import logging
import time

import requests

from services import billing, credits, db
from tests.test_billing import state, subscribe


def post_event(shop, fake_stripe, event: dict, timestamp: int | None = None):
    payload = json.dumps(event).encode()
    return requests.post(f"{shop[0]}/stripe/webhook", data=payload, timeout=10,
                         headers={"Stripe-Signature": fake_stripe.sign(payload, timestamp=timestamp),
                                  "Content-Type": "application/json"})


def event(kind: str, object_id: str, version: str = billing.PINNED_API_VERSION, event_id: str | None = None) -> dict:
    obj = kind.rsplit(".", 1)[0].split(".")[-1] if kind.startswith("customer.") else kind.split(".")[0]
    return {"id": event_id or f"evt_test_{kind.replace('.', '_')}_{object_id}", "object": "event",
            "api_version": version, "created": int(time.time()), "livemode": False, "pending_webhooks": 1,
            "request": {"id": None, "idempotency_key": None}, "type": kind,
            "data": {"object": {"id": object_id, "object": obj}}}


def test_an_unhandled_type_is_acknowledged_before_any_api_or_database_call(shop, fake_stripe, conn):
    fake_stripe.stop()  # any call to Stripe would fail with 503
    for kind in ("payment_intent.created", "customer.updated", "invoice.upcoming", "charge.dispute.updated"):
        response = post_event(shop, fake_stripe, event(kind, "obj_1"))
        assert response.status_code == 200 and response.json()["outcome"] == "ignored", kind
    assert conn.scalar("SELECT COUNT(*) AS n FROM stripe_events") == 0


def test_a_vanished_object_is_acknowledged_as_gone_and_a_replay_is_a_duplicate(shop, fake_stripe, conn, caplog):
    caplog.set_level(logging.WARNING, logger="services.billing")
    for kind, object_id in (("customer.subscription.updated", "sub_deleted_long_ago"),
                            ("invoice.paid", "in_voided_and_gone"),
                            ("checkout.session.completed", "cs_test_expired_and_gone")):
        sent = event(kind, object_id)
        first = post_event(shop, fake_stripe, sent)
        assert first.status_code == 200 and first.json()["outcome"] == "gone", (kind, first.text)
        again = post_event(shop, fake_stripe, sent)
        assert again.status_code == 200 and again.json()["outcome"] == "duplicate"
    assert conn.scalar("SELECT COUNT(*) AS n FROM stripe_events") == 3
    assert conn.scalar("SELECT COUNT(*) AS n FROM subscriptions") == 0
    assert "sub_deleted_long_ago is gone (HTTP 404)" in caplog.text


def test_stripe_unreachable_answers_503_and_keeps_nothing_so_stripe_retries(shopper, fake_stripe, conn, shop):
    subscription_id, _ = subscribe(shopper, fake_stripe)
    before = conn.scalar("SELECT COUNT(*) AS n FROM stripe_events")
    fake_stripe.stop()
    response = post_event(shop, fake_stripe, event("customer.subscription.updated", subscription_id))
    assert response.status_code == 503 and response.json()["error"]["code"] == "unavailable"
    assert conn.scalar("SELECT COUNT(*) AS n FROM stripe_events") == before


def test_a_signature_from_the_future_is_refused_like_a_stale_one(shop, fake_stripe, conn):
    sent = event("customer.subscription.updated", "sub_x")
    for skew in (-301, 301, 3600, 10 ** 9):
        response = post_event(shop, fake_stripe, sent, timestamp=int(time.time()) + skew)
        assert response.status_code == 400 and response.json()["error"]["code"] == "bad_signature", skew
    assert post_event(shop, fake_stripe, sent, timestamp=int(time.time()) + 60).json()["outcome"] == "gone"


def test_a_signed_body_without_an_object_id_is_refused_with_nothing_kept(shop, fake_stripe, conn):
    for data in ({}, {"object": {}}, {"object": {"id": 7}}, {"object": "sub_1"}, {"object": {"id": "in_" + "x" * 300}}):
        sent = dict(event("invoice.paid", "in_1"), data=data)
        response = post_event(shop, fake_stripe, sent)
        assert response.status_code == 400 and response.json()["error"]["code"] == "malformed_event", data
    too_long = event("invoice.paid", "in_1", event_id="evt_" + "x" * 300)
    assert post_event(shop, fake_stripe, too_long).json()["error"]["code"] == "malformed_event"
    assert conn.scalar("SELECT COUNT(*) AS n FROM stripe_events") == 0


def test_an_event_in_another_api_version_is_applied_and_reported_once_a_day(shopper, fake_stripe, conn, shop,
                                                                            caplog):
    caplog.set_level(logging.WARNING, logger="services.billing")
    fake_stripe.delivery(hold=True)
    subscription_id, _ = subscribe(shopper, fake_stripe)
    fake_stripe.held_events.clear()
    for number in range(3):
        sent = event("customer.subscription.updated", subscription_id, version="2024-06-20",
                     event_id=f"evt_old_version_{number}")
        response = post_event(shop, fake_stripe, sent)
        assert response.status_code == 200 and response.json()["outcome"] == "applied"
    notes = [r.getMessage() for r in caplog.records if "OPERATOR" in r.getMessage()]
    assert len(notes) == 1, notes
    assert "2024-06-20" in notes[0] and billing.PINNED_API_VERSION in notes[0] and "--replace-webhook" in notes[0]
    assert state(conn).state == "active"
    post_event(shop, fake_stripe, event("customer.subscription.updated", subscription_id,
                                        version="2025-03-31.basil", event_id="evt_basil"))
    assert len([r for r in caplog.records if "OPERATOR" in r.getMessage()]) == 2  # another version: its own line


def _subscription(items, **extra):
    return {"id": "sub_1", "object": "subscription", "customer": "cus_1", "status": "active", "metadata": {},
            "cancel_at_period_end": False, "cancel_at": None, "ended_at": None,
            "items": {"object": "list", "data": items}, **extra}


def _item(price_id, lookup_key, start, end):
    return {"id": f"si_{price_id}", "object": "subscription_item", "current_period_start": start,
            "current_period_end": end, "price": {"id": price_id, "object": "price", "lookup_key": lookup_key}}


def test_the_period_comes_from_the_item_with_the_plans_price(make_app):
    settings = make_app().settings
    addon = _item("price_addon", None, 100, 200)
    plan = _item("price_plan", settings.stripe_price_lookup_key, 1000, 2000)
    fields = billing._subscription_fields(_subscription([addon, plan]), settings)
    assert (fields["price_id"], fields["current_period_start"], fields["current_period_end"]) == (
        "price_plan", 1000, 2000)
    by_id = make_app(STRIPE_PRICE_ID="price_addon").settings
    assert billing._subscription_fields(_subscription([plan, addon]), by_id)["current_period_end"] == 200
    # A subscription read in a version before basil carries its period at the top level, not on its items.
    old = _subscription([{"id": "si_1", "object": "subscription_item", "price": {"id": "price_plan"}}],
                        current_period_start=5000, current_period_end=9000)
    assert billing._subscription_fields(old, settings)["current_period_end"] == 9000


def test_a_period_is_granted_once_however_many_invoices_cover_it(conn):
    user = db.user_insert(conn, "Ana", "ana@example.com", 1)
    start = int(time.time()) - 60
    assert credits.grant_period(conn, user, 300, "in_first", start)
    credits.reserve(conn, user, 40, "item-1", start + 5)
    assert not credits.grant_period(conn, user, 300, "in_second_for_the_same_period", start)
    assert not credits.grant_period(conn, user, 300, "in_first", start)
    assert credits.balance(conn, user) == 260 == db.credit_ledger_sum(conn, user)
    assert conn.scalar("SELECT COUNT(*) AS n FROM credit_ledger WHERE reason = 'grant'") == 1
    assert credits.grant_period(conn, user, 300, "in_next", start + 30 * 86400)
    assert credits.balance(conn, user) == 300 == db.credit_ledger_sum(conn, user)
