"""The plan through the Stripe stand-in over real HTTP: Checkout, webhooks, credits, the portal, access.

The stand-in delivers signed webhooks to the live app; the visitor's browser is an
in-process client on the same app and database.
"""

import json
import time

import pytest
import requests

from services import billing, credits, db
from tests.visitors import Visitor, english


@pytest.fixture
def visitor(shop):
    _base, app = shop
    person = Visitor(app)
    assert person.sign_in("google", "g-1001").status_code == 303
    return person


def user_id_of(conn):
    return conn.scalar("SELECT id FROM users ORDER BY id LIMIT 1")


def checkout(visitor):
    response = visitor.client.post("/billing/checkout", data={"csrf_token": visitor.csrf()})
    assert response.status_code == 303, response.text
    return response.headers["Location"]


def subscribe(visitor, fake_stripe):
    """Subscribe and pay; return (subscription id, the success page's response)."""
    session_id = checkout(visitor).rsplit("/", 1)[1]
    subscription_id = fake_stripe.pay(session_id)
    return subscription_id, visitor.client.get(f"/billing/success?session_id={session_id}")


def state(conn, now=None):
    return billing.access(billing.current_subscription(conn, user_id_of(conn)), now or int(time.time()))


def webhook(shop, fake_stripe, payload: bytes, signature: str):
    base, _app = shop
    return requests.post(f"{base}/stripe/webhook", data=payload, timeout=10,
                         headers={"Stripe-Signature": signature, "Content-Type": "application/json"})


def test_subscribe_pay_and_see_the_credits(visitor, fake_stripe, conn, shop):
    location = checkout(visitor)
    assert location.startswith(fake_stripe.base_url + "/c/pay/cs_")
    session = fake_stripe.checkout_sessions[location.rsplit("/", 1)[1]]
    assert session["mode"] == "subscription" and session["client_reference_id"] == str(user_id_of(conn))
    assert session["customer_email"] == "ana@example.com"
    fake_stripe.pay(session["id"])
    response = visitor.client.get(f"/billing/success?session_id={session['id']}")
    assert response.status_code == 303 and response.headers["Location"].endswith("/account?welcome=1")
    page = english(visitor).client.get("/account?welcome=1").text
    assert '<dd class="credits-left">300</dd>' in page and "Active" in page and "Renews on" in page
    assert credits.balance(conn, user_id_of(conn)) == 300
    assert db.credit_ledger_sum(conn, user_id_of(conn)) == 300
    assert state(conn).can_generate
    assert conn.scalar("SELECT stripe_customer_id FROM users") == fake_stripe.subscriptions[
        next(iter(fake_stripe.subscriptions))]["customer"]


def test_the_success_page_activates_before_any_webhook_arrives(visitor, fake_stripe, conn):
    fake_stripe.delivery(hold=True)
    _subscription, response = subscribe(visitor, fake_stripe)
    assert response.status_code == 303
    assert credits.balance(conn, user_id_of(conn)) == 300
    fake_stripe.flush()  # the webhooks arrive late: nothing more is granted
    assert credits.balance(conn, user_id_of(conn)) == 300
    assert conn.scalar("SELECT COUNT(*) AS n FROM credit_ledger WHERE reason = 'grant'") == 1


def test_the_success_page_says_activating_until_stripe_knows(visitor, conn):
    checkout(visitor)  # never paid
    response = english(visitor).client.get("/billing/success?session_id=cs_test_unknown")
    assert response.status_code in (200, 503)
    page = visitor.client.get("/billing/success?session_id=not-a-session")
    assert page.status_code == 200 and "Activating your plan" in page.text
    assert '<meta http-equiv="refresh" content="2">' in page.text


def test_a_webhook_replayed_five_times_applies_once(visitor, fake_stripe, conn):
    fake_stripe.delivery(duplicates=4)
    subscribe(visitor, fake_stripe)
    statuses = [status for _event, status in fake_stripe.sent_events]
    assert statuses and all(status == 200 for status in statuses)
    assert len(statuses) == 5 * len({event["id"] for event, _ in fake_stripe.sent_events})
    handled = [event for event in fake_stripe.events if event["type"] in billing.HANDLED_EVENTS]
    assert conn.scalar("SELECT COUNT(*) AS n FROM stripe_events") == len(handled) == 3
    assert conn.scalar("SELECT COUNT(*) AS n FROM credit_ledger") == 1
    assert credits.balance(conn, user_id_of(conn)) == 300


def test_deleted_before_created_ends_in_the_right_state(visitor, fake_stripe, conn, shop):
    fake_stripe.delivery(hold=True)
    subscription_id, _ = subscribe(visitor, fake_stripe)
    client = billing.make_client(shop[1].settings)
    client.v1.subscriptions.cancel(subscription_id)
    types = [event["type"] for event in fake_stripe.held_events]
    assert types.index("customer.subscription.deleted") > types.index("customer.subscription.created")
    fake_stripe.flush(order="reverse")
    row = billing.current_subscription(conn, user_id_of(conn))
    assert row["status"] == "canceled"
    assert not state(conn).can_generate and state(conn).state == "ended"


def test_events_shuffled_end_in_the_same_state(visitor, fake_stripe, conn):
    fake_stripe.delivery(shuffle=True, duplicates=1, seed=7)
    subscription_id, _ = subscribe(visitor, fake_stripe)
    fake_stripe.renew(subscription_id)
    assert state(conn).state == "active"
    assert conn.scalar("SELECT COUNT(*) AS n FROM credit_ledger WHERE reason = 'grant'") == 2
    assert credits.balance(conn, user_id_of(conn)) == 300


def test_forged_and_stale_signatures_are_refused_with_nothing_changed(visitor, fake_stripe, conn, shop):
    fake_stripe.delivery(hold=True)
    subscribe(visitor, fake_stripe)
    before = (conn.scalar("SELECT COUNT(*) AS n FROM stripe_events"), credits.balance(conn, user_id_of(conn)))
    paid = next(e for e in fake_stripe.held_events if e["type"] == "invoice.paid")
    payload = fake_stripe.event_payload(paid)
    forged = webhook(shop, fake_stripe, payload, fake_stripe.sign(payload, secret="whsec_someone_else"))
    assert forged.status_code == 400 and forged.json()["error"]["code"] == "bad_signature"
    stale = webhook(shop, fake_stripe, payload, fake_stripe.sign(payload, timestamp=int(time.time()) - 400))
    assert stale.status_code == 400
    missing = webhook(shop, fake_stripe, payload, "")
    assert missing.status_code == 400
    tampered = webhook(shop, fake_stripe, payload.replace(b'"paid"', b'"open"', 1), fake_stripe.sign(payload))
    assert tampered.status_code == 400
    after = (conn.scalar("SELECT COUNT(*) AS n FROM stripe_events"), credits.balance(conn, user_id_of(conn)))
    assert after == before
    good = webhook(shop, fake_stripe, payload, fake_stripe.sign(payload))
    assert good.status_code == 200 and good.json()["outcome"] == "applied"


def test_two_invoice_paid_events_for_one_invoice_grant_once(visitor, fake_stripe, conn, shop):
    subscription_id, _ = subscribe(visitor, fake_stripe)
    credits.reserve(conn, user_id_of(conn), 20, "item-1", int(time.time()))
    paid = next(e for e in fake_stripe.events if e["type"] == "invoice.paid")
    second = json.loads(fake_stripe.event_payload(paid))
    second["id"] = "evt_second_delivery_of_the_same_invoice"
    payload = json.dumps(second).encode()
    assert webhook(shop, fake_stripe, payload, fake_stripe.sign(payload)).json()["outcome"] == "applied"
    assert credits.balance(conn, user_id_of(conn)) == 280
    assert conn.scalar("SELECT COUNT(*) AS n FROM credit_ledger WHERE reason = 'grant'") == 1


def test_a_renewal_resets_the_credits(visitor, fake_stripe, conn):
    subscription_id, _ = subscribe(visitor, fake_stripe)
    user = user_id_of(conn)
    credits.reserve(conn, user, 250, "item-1", int(time.time()))
    assert credits.balance(conn, user) == 50
    fake_stripe.renew(subscription_id)
    assert credits.balance(conn, user) == 300
    assert db.credit_ledger_sum(conn, user) == 300
    assert [r["reason"] for r in credits.recent(conn, user, 0)][:2] == ["expire", "grant"]


def test_a_late_webhook_for_last_months_invoice_does_not_reset_this_months_credits(visitor, fake_stripe, conn):
    fake_stripe.delivery(hold=True)
    session_id = checkout(visitor).rsplit("/", 1)[1]
    subscription_id = fake_stripe.pay(session_id)
    first_month = list(fake_stripe.held_events)
    fake_stripe.held_events.clear()
    fake_stripe.delivery()
    fake_stripe.renew(subscription_id)
    user = user_id_of(conn)
    credits.reserve(conn, user, 100, "item-1", int(time.time()))
    assert credits.balance(conn, user) == 200
    fake_stripe.held_events.extend(first_month)
    assert set(fake_stripe.flush()) == {200}
    assert credits.balance(conn, user) == 200
    assert db.credit_ledger_sum(conn, user) == 200
    assert conn.scalar("SELECT COUNT(*) AS n FROM credit_ledger WHERE reason = 'grant'") == 1
    assert state(conn).can_generate


def test_a_failed_payment_blocks_new_batches_and_shows_the_banner(visitor, fake_stripe, conn):
    subscription_id, _ = subscribe(visitor, fake_stripe)
    fake_stripe.fail_payment(subscription_id)
    assert state(conn).state == "past_due" and not state(conn).can_generate
    page = english(visitor).client.get("/").text
    assert "Your last payment failed." in page and 'role="alert"' in page
    fake_stripe.renew(subscription_id)  # the retry goes through
    assert state(conn).state == "active"
    assert "Your last payment failed." not in visitor.client.get("/").text


def test_cancel_keeps_access_until_the_period_ends_then_ends_it(visitor, fake_stripe, conn):
    subscription_id, _ = subscribe(visitor, fake_stripe)
    fake_stripe.cancel_at_period_end(subscription_id)
    current = state(conn)
    assert current.state == "ending" and current.can_generate
    page = english(visitor).client.get("/account").text
    assert "Cancelled: active until the end of the period" in page and "Ends on" in page
    assert not state(conn, now=current.period_end + 1).can_generate
    fake_stripe.renew(subscription_id)  # the period ends: Stripe deletes the subscription
    assert billing.current_subscription(conn, user_id_of(conn))["status"] == "canceled"
    assert state(conn).state == "ended"
    assert "Subscribe again" in visitor.client.get("/account").text


def test_a_subscriber_is_sent_to_the_portal_instead_of_a_second_checkout(visitor, fake_stripe):
    subscribe(visitor, fake_stripe)
    location = checkout(visitor)
    assert location.startswith(fake_stripe.base_url + "/p/session/")
    assert len(fake_stripe.checkout_sessions) == 1


def test_manage_billing_opens_a_fresh_portal_session_each_time(visitor, fake_stripe):
    subscribe(visitor, fake_stripe)
    first = visitor.client.post("/billing/portal", data={"csrf_token": visitor.csrf()})
    second = visitor.client.post("/billing/portal", data={"csrf_token": visitor.csrf()})
    assert first.status_code == second.status_code == 303
    assert first.headers["Location"] != second.headers["Location"]
    assert len(fake_stripe.portal_sessions) == 2


def test_manage_billing_without_a_subscription_explains_itself(visitor):
    response = english(visitor).client.post("/billing/portal", data={"csrf_token": visitor.csrf()})
    assert response.status_code == 400 and "No billing account yet" in response.text


def test_checkout_needs_a_signed_in_user_and_the_csrf_token(shop):
    _base, app = shop
    anonymous = Visitor(app)
    assert anonymous.client.post("/billing/checkout").status_code == 403
    person = Visitor(app)
    person.sign_in("google", "g-1002")
    assert person.client.post("/billing/checkout").status_code == 403
    assert person.client.post("/billing/checkout", data={"csrf_token": person.csrf()},
                              headers={"Sec-Fetch-Site": "cross-site"}).status_code == 403


def test_stripe_down_gets_a_clear_page_and_charges_nothing(visitor, fake_stripe, conn):
    fake_stripe.stop()
    response = english(visitor).client.post("/billing/checkout", data={"csrf_token": visitor.csrf()})
    assert response.status_code == 503 and "Nothing was charged" in response.text
    assert conn.scalar("SELECT COUNT(*) AS n FROM subscriptions") == 0


def test_the_pricing_page_offers_the_right_action(shop, visitor, fake_stripe):
    _base, app = shop
    anonymous = english(Visitor(app)).client.get("/pricing").text
    assert 'href="/login?next=/pricing"' in anonymous and "300" in anonymous
    assert 'action="/billing/checkout"' in english(visitor).client.get("/pricing").text
    subscribe(visitor, fake_stripe)
    assert 'action="/billing/portal"' in visitor.client.get("/pricing").text
    assert "Payment cancelled" in visitor.client.get("/pricing?checkout=cancelled").text


def test_an_invoices_period_start_comes_from_its_lines_and_odd_shapes_never_raise():
    lines = {"data": [{"period": {"start": 1764460800, "end": 1767139200}}, {"period": {"start": 1764460000}}]}
    assert billing._invoice_period_start({"lines": lines, "created": 1764460900}) == 1764460800
    assert billing._invoice_period_start({"created": 1764460900}) == 1764460900
    for odd in ({"lines": "x", "created": "y"}, {"lines": {"data": "x"}},
                {"lines": {"data": [None, 3, {"period": []}]}},
                {"lines": {"data": [{"period": {"start": "soon"}}]}, "created": True}, {"lines": None}):
        assert billing._invoice_period_start(odd) == 0, odd
