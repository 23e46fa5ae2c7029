"""The Stripe stand-in (tools/fake_stripe.py) over real HTTP: stripe-python parses it, webhooks verify, pages work."""

from __future__ import annotations

import json
import sys
import threading
import time
from decimal import Decimal
from html.parser import HTMLParser
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import pytest
import requests
import stripe

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from tools.fake_stripe import (  # noqa: E402
    PERIOD_SECONDS,
    FakeStripe,
    mask_key,
    parse_form,
    signature_header,
)

API_KEY = "sk_test_fake_123"
SECRET = "whsec_test_abc"
APP = "http://127.0.0.1:5000"
PAY_EVENTS = ["customer.created", "customer.subscription.created", "invoice.created", "invoice.finalized",
              "invoice.paid", "invoice.payment_succeeded", "checkout.session.completed"]


class Clock:
    def __init__(self):
        self.now = 1_780_000_000.0

    def __call__(self):
        return self.now


class Receiver:
    """A tiny webhook endpoint on 127.0.0.1 that records every POST (headers, raw body)."""

    def __init__(self):
        self.received: list[tuple[dict, bytes]] = []
        self.status = 200
        self.lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self):
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                with receiver.lock:
                    receiver.received.append((dict(self.headers.items()), body))
                self.send_response(receiver.status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, format, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/stripe/webhook"
        self.thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.01}, daemon=True)
        self.thread.start()

    def types(self) -> list[str]:
        return [json.loads(body)["type"] for _, body in self.received]

    def ids(self) -> list[str]:
        return [json.loads(body)["id"] for _, body in self.received]

    def close(self):
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(timeout=5)


@pytest.fixture
def clock():
    return Clock()


@pytest.fixture
def receiver():
    r = Receiver()
    yield r
    r.close()


@pytest.fixture
def fake(receiver, clock):
    server = FakeStripe(api_key=API_KEY, webhook_secret=SECRET, webhook_url=None, port=0, clock=clock)
    server.webhook_url = receiver.url  # settable after construction
    server.start()
    yield server
    server.stop()


@pytest.fixture
def client(fake):
    http_client = stripe.RequestsClient()
    yield stripe.StripeClient(API_KEY, base_addresses={"api": fake.base_url}, http_client=http_client)
    http_client.close()


@pytest.fixture
def http():
    with requests.Session() as session:
        yield session


@pytest.fixture
def price(client):
    product = client.v1.products.create(params={"name": "Bulk", "metadata": {"plan": "bulk"}},
                                        options={"idempotency_key": "setup-product"})
    return client.v1.prices.create(params={"product": product.id, "unit_amount": 500, "currency": "usd",
                                           "recurring": {"interval": "month"}, "lookup_key": "bulk_monthly",
                                           "nickname": "Bulk monthly"})


def new_session(client, price, **extra):
    params = {"mode": "subscription", "line_items": [{"price": price.id, "quantity": 1}],
              "success_url": APP + "/billing/success?session_id={CHECKOUT_SESSION_ID}",
              "cancel_url": APP + "/pricing", "client_reference_id": "7",
              "subscription_data": {"metadata": {"user_id": "7"}}, "metadata": {"user_id": "7"},
              "allow_promotion_codes": False, "locale": "es"}
    if "customer" not in extra:
        params["customer_email"] = "ana@example.com"
    params.update(extra)
    return client.v1.checkout.sessions.create(params=params)


def paid_subscription(client, fake, price):
    session = new_session(client, price)
    return fake.pay(session.id)


def verified(headers, body) -> stripe.Event:
    return stripe.Webhook.construct_event(body, headers["Stripe-Signature"], SECRET)


class Forms(HTMLParser):
    """Each form's action and its buttons and inputs, and every element with an id."""

    def __init__(self, markup):
        super().__init__()
        self.forms = []
        self.ids = {}
        self.feed(markup)

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if a.get("id"):
            self.ids[a["id"]] = (tag, a)
        if tag == "form":
            self.forms.append({"action": a.get("action"), "method": a.get("method"), "buttons": [], "inputs": []})
        elif tag == "button" and self.forms:
            self.forms[-1]["buttons"].append(a)
        elif tag == "input" and self.forms:
            self.forms[-1]["inputs"].append(a)

    def form_with(self, button_id):
        return next(f for f in self.forms if any(b.get("id") == button_id for b in f["buttons"]))


def press(http, fake, page_url, button_id, **fields):
    """Submit the form that holds a button the way a browser does; returns (status, headers, text)."""
    with http.get(page_url) as r:
        assert r.status_code == 200, r.text
        forms = Forms(r.text)
    form = forms.form_with(button_id)
    button = next(b for b in form["buttons"] if b.get("id") == button_id)
    assert form["method"] == "post"
    data = dict(fields)
    data[button["name"]] = button["value"]
    with http.post(fake.base_url + form["action"], data=data, allow_redirects=False) as r:
        return r.status_code, r.headers, r.text


# ----- the API through stripe-python ------------------------------------------------------------------

def test_products_and_prices_found_by_lookup_key(client, price):
    assert price.id.startswith("price_") and price.object == "price" and price.livemode is False
    assert price.recurring.interval == "month" and price.recurring.interval_count == 1
    assert price.unit_amount == 500 and price.unit_amount_decimal == Decimal("500") and price.type == "recurring"
    found = client.v1.prices.list(params={"lookup_keys": ["bulk_monthly"], "active": True, "expand": ["data.product"]})
    assert [p.id for p in found.data] == [price.id]
    assert found.data[0].product.name == "Bulk" and isinstance(found.data[0].product, stripe.Product)
    assert client.v1.prices.list(params={"lookup_keys": ["other"]}).data == []
    products = client.v1.products.list(params={"active": True})
    assert products.object == "list" and products.url == "/v1/products" and products.has_more is False
    assert [p.name for p in products.data] == ["Bulk"]
    assert products.data[0].id.startswith("prod_") and products.data[0].metadata.to_dict() == {"plan": "bulk"}
    assert client.v1.products.list(params={"active": False}).data == []
    assert client.v1.prices.retrieve(price.id).lookup_key == "bulk_monthly"


def test_lookup_key_is_unique_unless_transferred(client, price):
    with pytest.raises(stripe.InvalidRequestError) as caught:
        client.v1.prices.create(params={"product": price.product, "unit_amount": 700, "currency": "usd",
                                        "recurring": {"interval": "month"}, "lookup_key": "bulk_monthly"})
    assert "already uses that lookup key" in caught.value.user_message
    newer = client.v1.prices.create(params={"product": price.product, "unit_amount": 700, "currency": "usd",
                                            "recurring": {"interval": "month"}, "lookup_key": "bulk_monthly",
                                            "transfer_lookup_key": True})
    assert [p.id for p in client.v1.prices.list(params={"lookup_keys": ["bulk_monthly"]}).data] == [newer.id]
    assert client.v1.prices.retrieve(price.id).lookup_key is None


def test_price_list_also_accepts_bracket_lookup_keys(fake, price, http):
    headers = {"Authorization": f"Bearer {API_KEY}"}
    with http.get(f"{fake.base_url}/v1/prices?lookup_keys[]=bulk_monthly&active=true", headers=headers) as r:
        assert r.status_code == 200
        assert [p["id"] for p in r.json()["data"]] == [price.id]


def test_customers_are_created_retrieved_and_updated(client, fake):
    customer = client.v1.customers.create(params={"email": "ana@example.com", "name": "Ana",
                                                  "metadata": {"user_id": "7"}})
    assert customer.id.startswith("cus_") and customer.object == "customer" and customer.livemode is False
    again = client.v1.customers.retrieve(customer.id)
    assert again.email == "ana@example.com" and again.metadata.to_dict() == {"user_id": "7"}
    updated = client.v1.customers.update(customer.id, params={"name": "Ana García", "metadata": {"user_id": ""}})
    assert updated.name == "Ana García" and updated.metadata.to_dict() == {}
    assert fake.customers[customer.id]["name"] == "Ana García"
    assert [c.id for c in client.v1.customers.list(params={"email": "ana@example.com"}).data] == [customer.id]
    assert fake.events == []  # API-created customers send no event in the stand-in


def test_checkout_session_is_created_and_retrieved(client, fake, price):
    session = new_session(client, price)
    assert session.id.startswith("cs_test_") and session.object == "checkout.session"
    assert session.url == fake.checkout_url(session.id) == f"{fake.base_url}/c/pay/{session.id}"
    assert (session.status, session.payment_status, session.mode) == ("open", "unpaid", "subscription")
    assert session.client_reference_id == "7" and session.customer is None
    assert session.customer_email == "ana@example.com" and session.subscription is None
    assert session.amount_total == 500 and session.currency == "usd" and session.metadata.to_dict() == {"user_id": "7"}
    again = client.v1.checkout.sessions.retrieve(session.id, params={"expand": ["line_items"]})
    assert again.success_url.endswith("session_id={CHECKOUT_SESSION_ID}")
    assert again.line_items.data[0].price.id == price.id and again.line_items.data[0].quantity == 1


def test_checkout_session_errors_look_like_stripe(client, price):
    with pytest.raises(stripe.InvalidRequestError) as caught:
        new_session(client, price, mode="payment")
    assert caught.value.param == "mode" and caught.value.http_status == 400
    with pytest.raises(stripe.InvalidRequestError) as caught:
        client.v1.checkout.sessions.create(params={"line_items": [{"price": price.id, "quantity": 1}]})
    assert (caught.value.code, caught.value.param) == ("parameter_missing", "mode")
    assert caught.value.user_message == "Missing required param: mode."
    with pytest.raises(stripe.InvalidRequestError) as caught:
        new_session(client, price, line_items=[{"price": "price_nope", "quantity": 1}])
    assert (caught.value.code, caught.value.param) == ("resource_missing", "line_items[0][price]")
    assert caught.value.user_message == "No such price: 'price_nope'"
    with pytest.raises(stripe.InvalidRequestError) as caught:
        new_session(client, price, customer="cus_nope")
    assert (caught.value.code, caught.value.param) == ("resource_missing", "customer")
    with pytest.raises(stripe.InvalidRequestError) as caught:
        new_session(client, price, colour="blue")
    assert (caught.value.code, caught.value.user_message) == ("parameter_unknown", "Received unknown parameter: colour")
    with pytest.raises(stripe.InvalidRequestError) as caught:
        new_session(client, price, subscription_data={"trial_period_days": 7})
    assert caught.value.param == "subscription_data[trial_period_days]"


def test_a_wrong_or_missing_api_key_is_refused(fake, http):
    other = stripe.RequestsClient()
    try:
        wrong = stripe.StripeClient("sk_test_wrong_key_9876", base_addresses={"api": fake.base_url},
                                    http_client=other)
        with pytest.raises(stripe.AuthenticationError) as caught:
            wrong.v1.customers.list()
    finally:
        other.close()
    assert caught.value.http_status == 401
    assert caught.value.user_message == "Invalid API Key provided: sk_test_**********9876"
    assert "sk_test_wrong_key_9876" not in caught.value.user_message
    with http.get(f"{fake.base_url}/v1/customers") as r:
        assert r.status_code == 401
        assert r.json()["error"]["type"] == "invalid_request_error"
        assert r.json()["error"]["message"].startswith("You did not provide an API key.")
        assert r.headers["Request-Id"].startswith("req_")
    assert mask_key("sk_test_fake_123") == "sk_test_****_123"


def test_unknown_ids_and_paths_are_404s(client, fake, http):
    with pytest.raises(stripe.InvalidRequestError) as caught:
        client.v1.customers.retrieve("cus_x")
    error = caught.value
    assert (error.http_status, error.code, error.param) == (404, "resource_missing", "id")
    assert error.user_message == "No such customer: 'cus_x'"
    body = error.json_body["error"]
    assert body["type"] == "invalid_request_error"
    assert body["doc_url"] == "https://stripe.com/docs/error-codes/resource-missing"
    assert body["request_log_url"].startswith("https://dashboard.stripe.com/test/logs/req_")
    for call in (lambda: client.v1.subscriptions.retrieve("sub_x"), lambda: client.v1.invoices.retrieve("in_x"),
                 lambda: client.v1.events.retrieve("evt_x"), lambda: client.v1.checkout.sessions.retrieve("cs_x")):
        with pytest.raises(stripe.InvalidRequestError) as caught:
            call()
        assert caught.value.code == "resource_missing"
    headers = {"Authorization": f"Bearer {API_KEY}", "Stripe-Version": "2026-10-28.endive"}
    with http.get(f"{fake.base_url}/v1/charges", headers=headers) as r:
        assert r.status_code == 404
        assert r.json()["error"]["message"].startswith("Unrecognized request URL (GET: /v1/charges).")
        assert r.headers["Stripe-Version"] == "2026-10-28.endive"
        assert r.headers["Request-Id"].startswith("req_")


def test_idempotency_keys_replay_and_refuse_reuse(client, fake, http):
    first = client.v1.customers.create(params={"email": "a@example.com"}, options={"idempotency_key": "k-1"})
    again = client.v1.customers.create(params={"email": "a@example.com"}, options={"idempotency_key": "k-1"})
    assert again.id == first.id and len(fake.customers) == 1
    assert again.last_response.headers["Idempotent-Replayed"] == "true"
    assert again.last_response.headers["Original-Request"] == first.last_response.request_id
    with pytest.raises(stripe.IdempotencyError) as caught:
        client.v1.customers.create(params={"email": "b@example.com"}, options={"idempotency_key": "k-1"})
    assert "can only be used with the same parameters" in caught.value.user_message
    assert caught.value.http_status == 400
    other = client.v1.customers.create(params={"email": "a@example.com"})  # stripe-python sends a fresh key
    assert other.id != first.id and len(fake.customers) == 2
    headers = {"Authorization": f"Bearer {API_KEY}", "Idempotency-Key": "k-1"}
    with http.post(f"{fake.base_url}/v1/products", data={"name": "X"}, headers=headers) as r:
        assert r.status_code == 400 and r.json()["error"]["type"] == "idempotency_error"
        assert r.headers["Idempotency-Key"] == "k-1"


def test_lists_paginate_newest_first_and_expand(client, fake, price):
    made = [client.v1.customers.create(params={"email": f"u{i}@example.com"}).id for i in range(12)]
    page = client.v1.customers.list(params={"limit": 5})
    assert [c.id for c in page.data] == made[::-1][:5] and page.has_more is True
    assert [c.id for c in page.auto_paging_iter()] == made[::-1]
    with pytest.raises(stripe.InvalidRequestError):
        client.v1.customers.list(params={"limit": 101})
    sub_id = paid_subscription(client, fake, price)
    sub = client.v1.subscriptions.retrieve(sub_id, params={"expand": ["latest_invoice", "customer"]})
    assert isinstance(sub.latest_invoice, stripe.Invoice) and isinstance(sub.customer, stripe.Customer)
    assert sub.latest_invoice.status == "paid" and sub.customer.email == "ana@example.com"
    with pytest.raises(stripe.InvalidRequestError) as caught:
        client.v1.subscriptions.retrieve(sub_id, params={"expand": ["status"]})
    assert caught.value.user_message == "This property cannot be expanded (status)."
    paid = client.v1.events.list(params={"type": "invoice.paid"})
    assert [e.type for e in paid.data] == ["invoice.paid"]
    assert [e.type for e in client.v1.events.list(params={"limit": 100}).data] == PAY_EVENTS[::-1]


def test_form_parser_builds_nested_dicts_and_lists():
    pairs = [("line_items[0][price]", "price_1"), ("line_items[0][quantity]", "1"),
             ("line_items[1][price]", "price_2"), ("subscription_data[metadata][user_id]", "7"),
             ("lookup_keys[]", "a"), ("lookup_keys[]", "b"), ("expand[0]", "subscription"),
             ("recurring[interval]", "month"), ("metadata[0]", "zero"), ("mode", "subscription")]
    assert parse_form(pairs) == {
        "line_items": [{"price": "price_1", "quantity": "1"}, {"price": "price_2"}],
        "subscription_data": {"metadata": {"user_id": "7"}}, "lookup_keys": ["a", "b"],
        "expand": ["subscription"], "recurring": {"interval": "month"}, "metadata": {"0": "zero"},
        "mode": "subscription"}


# ----- the hosted Checkout page and the Pay events ----------------------------------------------------

def test_pay_page_redirects_to_success_and_sends_verified_events_in_order(client, fake, price, receiver, http,
                                                                          clock):
    session = new_session(client, price)
    with http.get(session.url) as r:
        assert r.status_code == 200 and r.headers["Content-Type"].startswith("text/html")
        page = r.text
    assert "USD 5.00 per month" in page and "ana@example.com" in page and "Bulk" in page
    ids = Forms(page).ids
    assert ids["pay"][0] == "button" and ids["cancel"][0] == "button"
    status, headers, _ = press(http, fake, session.url, "pay")
    assert status == 303
    assert headers["Location"] == f"{APP}/billing/success?session_id={session.id}"
    assert receiver.types() == PAY_EVENTS  # delivered before the redirect was answered
    events = []
    for head, body in receiver.received:
        assert head["Content-Type"] == "application/json; charset=utf-8"
        assert head["User-Agent"] == "Stripe/1.0 (+https://stripe.com/docs/webhooks)"
        assert head["Stripe-Signature"].startswith("t=") and ",v1=" in head["Stripe-Signature"]
        event = verified(head, body)
        assert event.id.startswith("evt_") and event.object == "event" and event.livemode is False
        assert event.api_version == fake.api_version and event.created == int(clock.now)
        assert event.pending_webhooks == 1 and event.request.id is None
        assert body == fake.event_payload(event.id)
        events.append(event)
    assert [status for _, status in fake.sent_events] == [200] * 7
    assert [e["id"] for e, _ in fake.sent_events] == [e.id for e in events] == [e["id"] for e in fake.events]
    completed = events[-1].data.object
    assert (completed.status, completed.payment_status, completed.client_reference_id) == ("complete", "paid", "7")
    assert completed.url is None and completed.customer.startswith("cus_")
    sub_id = completed.subscription
    assert sub_id.startswith("sub_") and sub_id in fake.subscriptions
    assert [e.data.object.status for e in events[2:6]] == ["draft", "open", "paid", "paid"]
    paid = events[4].data.object
    assert paid.billing_reason == "subscription_create" and paid.amount_paid == 500
    assert paid.parent.type == "subscription_details" and paid.parent.subscription_details.subscription == sub_id
    assert "subscription" not in paid  # basil: no top-level subscription on invoices

    session = client.v1.checkout.sessions.retrieve(session.id, params={"expand": ["subscription"]})
    sub = session.subscription
    assert isinstance(sub, stripe.Subscription) and sub.id == sub_id
    assert (sub.status, sub.cancel_at_period_end, sub.cancel_at, sub.canceled_at, sub.ended_at) == (
        "active", False, None, None, None)
    assert sub.metadata.to_dict() == {"user_id": "7"} and sub.customer == session.customer
    assert "current_period_end" not in sub  # basil: periods live on the items
    item = sub["items"]["data"][0]
    assert item.id.startswith("si_") and item.price.id == price.id and item.quantity == 1
    assert item.current_period_start == int(clock.now)
    assert item.current_period_end == int(clock.now) + PERIOD_SECONDS
    invoice = client.v1.invoices.retrieve(sub.latest_invoice)
    assert invoice.id.startswith("in_") and invoice["parent"]["subscription_details"]["subscription"] == sub_id
    assert (invoice.status, invoice.billing_reason, invoice.amount_paid) == ("paid", "subscription_create", 500)
    line = invoice.lines.data[0]
    assert (line.period.start, line.period.end) == (item.current_period_start, item.current_period_end)
    assert line.parent.subscription_item_details.subscription_item == item.id
    assert line.pricing.price_details.price == price.id
    customer = client.v1.customers.retrieve(session.customer)
    assert customer.email == "ana@example.com"
    assert client.v1.events.retrieve(events[0].id).type == "customer.created"
    listed = client.v1.subscriptions.list(params={"customer": session.customer})
    assert [s.id for s in listed.data] == [sub_id]


def test_pay_page_cancel_keeps_the_session_open_and_finished_sessions_show_an_error(client, fake, price, http,
                                                                                    receiver):
    session = new_session(client, price)
    status, headers, _ = press(http, fake, session.url, "cancel")
    assert status == 303 and headers["Location"] == APP + "/pricing"
    assert client.v1.checkout.sessions.retrieve(session.id).status == "open" and receiver.received == []
    fake.pay(session.id)
    with http.get(session.url) as r:
        assert r.status_code == 410 and "no longer active" in r.text
    with http.post(session.url, data={"action": "pay"}, allow_redirects=False) as r:
        assert r.status_code == 410
    with http.get(f"{fake.base_url}/c/pay/cs_test_unknown") as r:
        assert r.status_code == 404
    assert len(fake.subscriptions) == 1


def test_pay_page_asks_for_an_email_when_the_session_has_none(client, fake, price, http, receiver):
    session = client.v1.checkout.sessions.create(params={
        "mode": "subscription", "line_items": [{"price": price.id, "quantity": 1}],
        "success_url": APP + "/ok"})
    with http.get(session.url) as r:
        email_input = Forms(r.text).ids["email"]
    assert email_input[0] == "input" and "required" in email_input[1]
    status, _, text = press(http, fake, session.url, "pay", email="not-an-email")
    assert status == 400 and "valid email" in text
    status, headers, _ = press(http, fake, session.url, "pay", email="ben@example.com")
    assert status == 303 and headers["Location"] == APP + "/ok"
    customer_id = fake.checkout_sessions[session.id]["customer"]
    assert fake.customers[customer_id]["email"] == "ben@example.com"


def test_an_existing_customer_is_reused(client, fake, price, receiver):
    customer = client.v1.customers.create(params={"email": "ana@example.com"})
    session = new_session(client, price, customer=customer.id)
    with pytest.raises(stripe.InvalidRequestError):
        new_session(client, price, customer=customer.id, customer_email="x@example.com")
    sub_id = fake.pay(session.id)
    assert receiver.types() == PAY_EVENTS[1:]  # no customer.created
    assert fake.subscriptions[sub_id]["customer"] == customer.id
    assert fake.checkout_sessions[session.id]["customer"] == customer.id


# ----- delivery settings -------------------------------------------------------------------------------

def test_duplicates_send_every_event_again(client, fake, price, receiver):
    fake.delivery(duplicates=2)
    paid_subscription(client, fake, price)
    types = receiver.types()
    assert types == [t for t in PAY_EVENTS for _ in range(3)]
    for head, body in receiver.received:
        verified(head, body)
    assert len(fake.events) == 7 and len(fake.sent_events) == 21


def test_shuffle_changes_the_order_within_a_batch(client, fake, price, receiver):
    fake.delivery(shuffle=True, seed=4)
    paid_subscription(client, fake, price)
    assert sorted(receiver.types()) == sorted(PAY_EVENTS)
    assert receiver.types() != PAY_EVENTS


def test_held_events_wait_for_flush_in_any_order(client, fake, price, receiver):
    fake.delivery(hold=True)
    sub_id = paid_subscription(client, fake, price)
    assert receiver.received == [] and [e["type"] for e in fake.held_events] == PAY_EVENTS
    statuses = fake.flush(order=[6, 1])
    assert statuses == [200, 200]
    assert receiver.types() == ["checkout.session.completed", "customer.subscription.created"]
    assert [e["type"] for e in fake.held_events] == [PAY_EVENTS[i] for i in (0, 2, 3, 4, 5)]
    fake.flush(order="reverse")
    assert receiver.types()[2:] == [PAY_EVENTS[i] for i in (5, 4, 3, 2, 0)] and fake.held_events == []
    fake.renew(sub_id)  # still holding
    assert len(fake.held_events) == 5
    fake.delivery()
    fake.flush()
    assert receiver.types()[-5:] == ["invoice.created", "invoice.finalized", "invoice.paid",
                                     "invoice.payment_succeeded", "customer.subscription.updated"]


def test_delayed_delivery_comes_later_from_another_thread(client, fake, price, receiver):
    fake.delivery(delay=1.5)  # long enough that no loaded machine makes the calls below take as long
    paid_subscription(client, fake, price)
    assert receiver.received == []
    assert fake.wait_for_deliveries(timeout=10)
    assert receiver.types() == PAY_EVENTS


def test_failed_deliveries_are_recorded_not_retried(client, fake, price, receiver):
    receiver.status = 500
    paid_subscription(client, fake, price)
    assert [status for _, status in fake.sent_events] == [500] * 7 and len(receiver.received) == 7
    receiver.status = 200
    assert fake.resend(fake.events[-1]) == 200
    assert receiver.ids()[-1] == fake.events[-1]["id"] and len(receiver.received) == 8
    fake.webhook_url = "http://127.0.0.1:9/nothing-listens-here"
    fake.renew(fake.events[1]["data"]["object"]["id"])
    assert fake.sent_events[-1][1] is None


def test_no_webhook_url_records_events_without_sending(client, price, receiver, clock):
    with FakeStripe(api_key=API_KEY, webhook_secret=SECRET, clock=clock) as alone:
        http_client = stripe.RequestsClient()
        try:
            c = stripe.StripeClient(API_KEY, base_addresses={"api": alone.base_url}, http_client=http_client)
            product = c.v1.products.create(params={"name": "Bulk"})
            p = c.v1.prices.create(params={"product": product.id, "unit_amount": 500, "currency": "usd",
                                           "recurring": {"interval": "month"}})
            alone.pay(new_session(c, p).id)
        finally:
            http_client.close()
        assert [e["type"] for e in alone.events] == PAY_EVENTS and alone.sent_events == []
        assert all(e["pending_webhooks"] == 0 for e in alone.events)


def test_signatures_match_stripes_scheme(fake):
    payload = b'{"id":"evt_1","object":"event"}'
    header = fake.sign(payload, timestamp=1_700_000_000)
    assert header == signature_header(payload, SECRET, 1_700_000_000)
    assert header.startswith("t=1700000000,v1=") and len(header.split("v1=")[1]) == 64
    fresh = fake.sign(payload)
    assert stripe.Webhook.construct_event(payload, fresh, SECRET)["id"] == "evt_1"
    with pytest.raises(stripe.SignatureVerificationError):
        stripe.Webhook.construct_event(payload, header, SECRET)  # stale timestamp
    with pytest.raises(stripe.SignatureVerificationError):
        stripe.Webhook.construct_event(payload, fake.sign(payload, secret="whsec_forged"), SECRET)


# ----- subscription life cycle ---------------------------------------------------------------------------

def test_renew_starts_the_next_period_with_a_paid_invoice(client, fake, price, receiver, clock):
    sub_id = paid_subscription(client, fake, price)
    first_end = fake.subscriptions[sub_id]["items"]["data"][0]["current_period_end"]
    receiver.received.clear()
    clock.now += PERIOD_SECONDS
    invoice_id = fake.renew(sub_id)
    assert receiver.types() == ["invoice.created", "invoice.finalized", "invoice.paid", "invoice.payment_succeeded",
                                "customer.subscription.updated"]
    for head, body in receiver.received:
        verified(head, body)
    sub = client.v1.subscriptions.retrieve(sub_id)
    item = sub["items"]["data"][0]
    assert (item.current_period_start, item.current_period_end) == (first_end, first_end + PERIOD_SECONDS)
    assert sub.latest_invoice == invoice_id and sub.status == "active"
    invoice = client.v1.invoices.retrieve(invoice_id)
    assert (invoice.status, invoice.billing_reason, invoice.amount_paid) == ("paid", "subscription_cycle", 500)
    assert invoice.parent.subscription_details.subscription == sub_id
    assert (invoice.lines.data[0].period.start, invoice.lines.data[0].period.end) == (
        item.current_period_start, item.current_period_end)
    updated = json.loads(receiver.received[-1][1])
    assert updated["data"]["previous_attributes"]["items"]["data"][0]["current_period_end"] == first_end
    invoices = client.v1.invoices.list(params={"subscription": sub_id})
    assert [i.billing_reason for i in invoices.data] == ["subscription_cycle", "subscription_create"]


def test_failed_payment_makes_it_past_due_until_a_retry_succeeds(client, fake, price, receiver):
    sub_id = paid_subscription(client, fake, price)
    receiver.received.clear()
    invoice_id = fake.fail_payment(sub_id)
    assert receiver.types() == ["invoice.created", "invoice.finalized", "invoice.payment_failed",
                                "customer.subscription.updated"]
    failed = client.v1.invoices.retrieve(invoice_id)
    assert (failed.status, failed.attempt_count, failed.amount_paid, failed.amount_remaining) == ("open", 1, 0, 500)
    assert failed.billing_reason == "subscription_cycle" and failed.next_payment_attempt is not None
    assert client.v1.subscriptions.retrieve(sub_id).status == "past_due"
    updated = json.loads(receiver.received[-1][1])
    assert updated["data"]["previous_attributes"]["status"] == "active"
    assert updated["data"]["object"]["status"] == "past_due"
    receiver.received.clear()
    assert fake.renew(sub_id) == invoice_id  # the retry pays the open invoice
    assert receiver.types() == ["invoice.paid", "invoice.payment_succeeded", "customer.subscription.updated"]
    assert client.v1.invoices.retrieve(invoice_id).status == "paid"
    assert client.v1.subscriptions.retrieve(sub_id).status == "active"


def test_cancel_at_period_end_then_renew_ends_the_subscription(client, fake, price, receiver, clock):
    sub_id = paid_subscription(client, fake, price)
    end = fake.subscriptions[sub_id]["items"]["data"][0]["current_period_end"]
    receiver.received.clear()
    clock.now += 60
    sub = fake.cancel_at_period_end(sub_id)
    assert (sub["cancel_at_period_end"], sub["cancel_at"], sub["canceled_at"]) == (True, end, int(clock.now))
    assert sub["status"] == "active" and sub["cancellation_details"]["reason"] == "cancellation_requested"
    assert receiver.types() == ["customer.subscription.updated"]
    previous = json.loads(receiver.received[0][1])["data"]["previous_attributes"]
    assert previous["cancel_at_period_end"] is False and previous["cancel_at"] is None
    fake.cancel_at_period_end(sub_id)  # no change, no event
    assert len(receiver.received) == 1
    assert fake.renew(sub_id) is None
    assert receiver.types()[-1] == "customer.subscription.deleted"
    ended = client.v1.subscriptions.retrieve(sub_id)
    assert (ended.status, ended.ended_at, ended.cancel_at_period_end) == ("canceled", end, True)
    assert client.v1.subscriptions.list(params={"customer": ended.customer}).data == []
    assert [s.id for s in client.v1.subscriptions.list(params={"customer": ended.customer, "status": "all"}).data] == [
        sub_id]
    with pytest.raises(ValueError):
        fake.renew(sub_id)


def test_resume_clears_the_cancellation(client, fake, price, receiver):
    sub_id = paid_subscription(client, fake, price)
    fake.cancel_at_period_end(sub_id)
    sub = fake.cancel_at_period_end(sub_id, cancel=False)
    assert (sub["cancel_at_period_end"], sub["cancel_at"], sub["canceled_at"]) == (False, None, None)
    assert receiver.types()[-2:] == ["customer.subscription.updated"] * 2
    fake.renew(sub_id)
    assert fake.subscriptions[sub_id]["status"] == "active"


def test_api_update_and_cancel_send_events_with_the_request_id(client, fake, price, receiver):
    sub_id = paid_subscription(client, fake, price)
    receiver.received.clear()
    updated = client.v1.subscriptions.update(sub_id, params={"cancel_at_period_end": True,
                                                             "metadata": {"note": "x"}},
                                             options={"idempotency_key": "upd-1"})
    assert updated.cancel_at_period_end is True and updated.metadata.to_dict() == {"user_id": "7", "note": "x"}
    event = verified(*receiver.received[-1])
    assert event.type == "customer.subscription.updated"
    assert event.request.id == updated.last_response.request_id and event.request.idempotency_key == "upd-1"
    assert set(event.data.previous_attributes.to_dict()) >= {"cancel_at_period_end", "metadata"}
    canceled = client.v1.subscriptions.cancel(sub_id)
    assert canceled.status == "canceled" and canceled.ended_at is not None
    assert receiver.types()[-1] == "customer.subscription.deleted"
    with pytest.raises(stripe.InvalidRequestError):
        client.v1.subscriptions.update(sub_id, params={"cancel_at_period_end": False})


# ----- the Customer Portal ---------------------------------------------------------------------------------

def test_portal_page_cancels_and_resumes(client, fake, price, receiver, http):
    sub_id = paid_subscription(client, fake, price)
    customer_id = fake.subscriptions[sub_id]["customer"]
    portal = client.v1.billing_portal.sessions.create(params={"customer": customer_id,
                                                              "return_url": APP + "/account"})
    assert portal.object == "billing_portal.session" and portal.id.startswith("bps_")
    assert portal.url == f"{fake.base_url}/p/session/{portal.id}" and portal.return_url == APP + "/account"
    assert portal.customer == customer_id and portal.livemode is False
    with http.get(portal.url) as r:
        ids = Forms(r.text).ids
        assert "Renews on" in r.text
    assert ids["return"][1]["href"] == APP + "/account" and "cancel-subscription" in ids
    assert "resume-subscription" not in ids
    receiver.received.clear()
    status, headers, _ = press(http, fake, portal.url, "cancel-subscription")
    assert status == 303 and urlsplit(headers["Location"]).path == f"/p/session/{portal.id}"
    assert receiver.types() == ["customer.subscription.updated"]
    assert fake.subscriptions[sub_id]["cancel_at_period_end"] is True
    with http.get(portal.url) as r:
        ids = Forms(r.text).ids
        assert "Cancels on" in r.text
    assert "resume-subscription" in ids and "cancel-subscription" not in ids
    press(http, fake, portal.url, "resume-subscription")
    assert fake.subscriptions[sub_id]["cancel_at_period_end"] is False
    assert receiver.types() == ["customer.subscription.updated"] * 2
    with pytest.raises(stripe.InvalidRequestError) as caught:
        client.v1.billing_portal.sessions.create(params={"customer": "cus_nope"})
    assert caught.value.code == "resource_missing"


def test_success_url_keeps_its_query(client, fake, price, http):
    session = new_session(client, price, success_url=APP + "/done?x=1&session_id={CHECKOUT_SESSION_ID}")
    status, headers, _ = press(http, fake, session.url, "pay")
    assert parse_qs(urlsplit(headers["Location"]).query) == {"x": ["1"], "session_id": [session.id]}


# ----- life cycle of the server ----------------------------------------------------------------------------

def test_stop_is_prompt_with_keep_alive_connections(receiver, clock):
    server = FakeStripe(api_key=API_KEY, webhook_secret=SECRET, clock=clock).start()
    with requests.Session() as session:
        with session.get(f"{server.base_url}/v1/customers", headers={"Authorization": f"Bearer {API_KEY}"}) as r:
            assert r.status_code == 200 and r.headers["Content-Type"] == "application/json"
        started = time.monotonic()
        server.stop()
        assert time.monotonic() - started < 2


def test_only_loopback():
    with pytest.raises(ValueError):
        FakeStripe(host="0.0.0.0")
