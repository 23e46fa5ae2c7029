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
    API_VERSION,
    EVENT_TYPES,
    PERIOD_SECONDS,
    FakeStripe,
    mask_key,
    parse_form,
    render_in_version,
    signature_header,
    version_shape,
)

API_KEY = "sk_test_fake_123"
SECRET = "whsec_test_abc"
APP = "http://127.0.0.1:5000"
PAID_EVENTS = ["charge.succeeded", "payment_intent.succeeded", "invoice.paid", "invoice.payment_succeeded"]
INVOICE_EVENTS = ["invoice.created", "invoice.finalized", *PAID_EVENTS]
PAY_EVENTS = ["customer.created", "customer.subscription.created", *INVOICE_EVENTS, "checkout.session.completed"]


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


def verified(headers, body, secret: str = SECRET) -> stripe.Event:
    return stripe.Webhook.construct_event(body, headers["Stripe-Signature"], secret)


def latest_charge(fake, sub_id) -> str:
    """The charge that paid a subscription's latest invoice, found as the app finds it: through its payment."""
    invoice_id = fake.subscriptions[sub_id]["latest_invoice"]
    payment = next(p for p in fake.invoice_payments.values() if p["invoice"] == invoice_id)
    return fake.payment_intents[payment["payment"]["payment_intent"]]["latest_charge"]


@pytest.fixture
def receivers():
    """More webhook receivers (one per endpoint), closed after the test."""
    made = []

    def make():
        made.append(Receiver())
        return made[-1]

    yield make
    for r in made:
        r.close()


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
                 lambda: client.v1.events.retrieve("evt_x"), lambda: client.v1.checkout.sessions.retrieve("cs_x"),
                 lambda: client.v1.charges.retrieve("ch_x"), lambda: client.v1.payment_intents.retrieve("pi_x"),
                 lambda: client.v1.refunds.retrieve("re_x"), lambda: client.v1.disputes.retrieve("du_x"),
                 lambda: client.v1.invoice_payments.retrieve("inpay_x"),
                 lambda: client.v1.webhook_endpoints.retrieve("we_x"),
                 lambda: client.v1.billing_portal.configurations.retrieve("bpc_x")):
        with pytest.raises(stripe.InvalidRequestError) as caught:
            call()
        assert caught.value.code == "resource_missing"
    headers = {"Authorization": f"Bearer {API_KEY}", "Stripe-Version": "2026-10-28.endive"}
    with http.get(f"{fake.base_url}/v1/payouts", headers=headers) as r:
        assert r.status_code == 404
        assert r.json()["error"]["message"].startswith("Unrecognized request URL (GET: /v1/payouts).")
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
    assert [status for _, status in fake.sent_events] == [200] * len(PAY_EVENTS)
    assert [e["id"] for e, _ in fake.sent_events] == [e.id for e in events] == [e["id"] for e in fake.events]
    completed = events[-1].data.object
    assert (completed.status, completed.payment_status, completed.client_reference_id) == ("complete", "paid", "7")
    assert completed.url is None and completed.customer.startswith("cus_")
    sub_id = completed.subscription
    assert sub_id.startswith("sub_") and sub_id in fake.subscriptions
    assert [e.data.object.status for e in events if e.type.startswith("invoice.")] == ["draft", "open", "paid", "paid"]
    paid = next(e for e in events if e.type == "invoice.paid").data.object
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
    assert len(fake.events) == len(PAY_EVENTS) == 9 and len(fake.sent_events) == 27


def test_shuffle_changes_the_order_within_a_batch(client, fake, price, receiver):
    fake.delivery(shuffle=True, seed=4)
    paid_subscription(client, fake, price)
    assert sorted(receiver.types()) == sorted(PAY_EVENTS)
    assert receiver.types() != PAY_EVENTS


def test_held_events_wait_for_flush_in_any_order(client, fake, price, receiver):
    fake.delivery(hold=True)
    sub_id = paid_subscription(client, fake, price)
    assert receiver.received == [] and [e["type"] for e in fake.held_events] == PAY_EVENTS
    statuses = fake.flush(order=[8, 1])
    assert statuses == [200, 200]
    assert receiver.types() == ["checkout.session.completed", "customer.subscription.created"]
    assert [e["type"] for e in fake.held_events] == [PAY_EVENTS[i] for i in (0, 2, 3, 4, 5, 6, 7)]
    fake.flush(order="reverse")
    assert receiver.types()[2:] == [PAY_EVENTS[i] for i in (7, 6, 5, 4, 3, 2, 0)] and fake.held_events == []
    fake.renew(sub_id)  # still holding
    assert len(fake.held_events) == 7
    fake.delivery()
    fake.flush()
    assert receiver.types()[-7:] == [*INVOICE_EVENTS, "customer.subscription.updated"]


def test_delayed_delivery_comes_later_from_another_thread(client, fake, price, receiver):
    fake.delivery(delay=1.5)  # long enough that no loaded machine makes the calls below take as long
    paid_subscription(client, fake, price)
    assert receiver.received == []
    assert fake.wait_for_deliveries(timeout=10)
    assert receiver.types() == PAY_EVENTS


def test_failed_deliveries_are_recorded_not_retried(client, fake, price, receiver):
    receiver.status = 500
    paid_subscription(client, fake, price)
    assert [status for _, status in fake.sent_events] == [500] * 9 and len(receiver.received) == 9
    receiver.status = 200
    assert fake.resend(fake.events[-1]) == 200
    assert receiver.ids()[-1] == fake.events[-1]["id"] and len(receiver.received) == 10
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
    assert receiver.types() == [*INVOICE_EVENTS, "customer.subscription.updated"]
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
    assert receiver.types() == [*PAID_EVENTS, "customer.subscription.updated"]
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


# ----- payments: PaymentIntents, Charges and InvoicePayments -------------------------------------------------

def test_a_paid_invoice_has_a_payment_intent_a_charge_and_an_invoice_payment(client, fake, price, receiver):
    sub_id = paid_subscription(client, fake, price)
    invoice_id = fake.subscriptions[sub_id]["latest_invoice"]
    customer_id = fake.subscriptions[sub_id]["customer"]
    payments = client.v1.invoice_payments.list(params={"invoice": invoice_id})
    assert payments.url == "/v1/invoice_payments" and len(payments.data) == 1
    payment = payments.data[0]
    assert payment.id.startswith("inpay_") and payment.object == "invoice_payment" and payment.invoice == invoice_id
    assert (payment.amount_paid, payment.amount_requested, payment.currency, payment.status) == (500, 500, "usd",
                                                                                                 "paid")
    assert payment.is_default is True and payment.livemode is False and payment.payment.type == "payment_intent"
    assert payment.status_transitions.paid_at == payment.created and payment.status_transitions.canceled_at is None
    assert client.v1.invoice_payments.retrieve(payment.id).invoice == invoice_id
    intent = client.v1.payment_intents.retrieve(payment.payment.payment_intent)
    assert isinstance(intent, stripe.PaymentIntent) and intent.id.startswith("pi_")
    assert (intent.status, intent.amount, intent.amount_received, intent.currency, intent.customer) == (
        "succeeded", 500, 500, "usd", customer_id)
    assert intent.description == "Subscription creation" and intent.payment_method_types == ["card"]
    charge = client.v1.charges.retrieve(intent.latest_charge)
    assert isinstance(charge, stripe.Charge) and charge.id.startswith("ch_") and charge.object == "charge"
    assert (charge.status, charge.paid, charge.captured, charge.refunded, charge.disputed) == (
        "succeeded", True, True, False, False)
    assert (charge.amount, charge.amount_captured, charge.amount_refunded, charge.currency) == (500, 500, 0, "usd")
    assert (charge.customer, charge.payment_intent, charge.metadata.to_dict()) == (customer_id, intent.id, {})
    assert charge.payment_method_details.card.last4 == "4242" and charge.outcome.type == "authorized"
    assert "invoice" not in charge and "refunds" not in charge  # basil: no invoice; refunds only when expanded
    expanded = client.v1.charges.retrieve(charge.id, params={"expand": ["refunds"]})
    assert expanded.refunds.to_dict() == {"object": "list", "data": [], "has_more": False, "total_count": 0,
                                          "url": f"/v1/charges/{charge.id}/refunds"}
    # The way from a charge to its invoice since basil: the invoice payment of its PaymentIntent.
    found = client.v1.invoice_payments.list(params={"payment": {"type": "payment_intent",
                                                                "payment_intent": charge.payment_intent}})
    assert [p.invoice for p in found.data] == [invoice_id]
    invoice = client.v1.invoices.retrieve(invoice_id)
    assert not {"charge", "payment_intent", "payments", "paid"} & set(invoice.to_dict())
    invoice = client.v1.invoices.retrieve(invoice_id, params={"expand": ["payments.data.payment.payment_intent"]})
    assert [p.id for p in invoice.payments.data] == [payment.id]
    assert isinstance(invoice.payments.data[0].payment.payment_intent, stripe.PaymentIntent)
    events = {json.loads(body)["type"]: json.loads(body)["data"]["object"] for _, body in receiver.received}
    assert events["charge.succeeded"]["id"] == charge.id and events["payment_intent.succeeded"]["id"] == intent.id
    assert "refunds" not in events["charge.succeeded"]

    fake.renew(sub_id)
    renewed = latest_charge(fake, sub_id)
    listed = client.v1.charges.list(params={"customer": customer_id})
    assert listed.url == "/v1/charges" and [c.id for c in listed.data] == [renewed, charge.id]
    assert [c.id for c in client.v1.charges.list(params={"payment_intent": intent.id}).data] == [charge.id]
    assert client.v1.charges.retrieve(renewed).description == "Subscription update"
    failed = fake.fail_payment(sub_id)
    assert client.v1.invoice_payments.list(params={"invoice": failed}).data == []  # no charge for a failed payment
    fake.renew(sub_id)  # the retry pays it
    retried = client.v1.invoice_payments.list(params={"invoice": failed, "status": "paid"}).data
    assert len(retried) == 1 and client.v1.payment_intents.retrieve(retried[0].payment.payment_intent).status == (
        "succeeded")
    assert len(client.v1.charges.list(params={"customer": customer_id}).data) == 3
    with pytest.raises(stripe.InvalidRequestError) as caught:
        client.v1.invoice_payments.list(params={"payment": {"type": "card"}})
    assert caught.value.param == "payment[type]"
    with pytest.raises(stripe.InvalidRequestError) as caught:
        client.v1.charges.list(params={"created": {"gt": 1}})
    assert caught.value.param == "created"  # known to Stripe, not modelled here


# ----- refunds ------------------------------------------------------------------------------------------------

def test_refunds_take_part_then_the_rest_then_are_refused(client, fake, price, receiver):
    sub_id = paid_subscription(client, fake, price)
    charge_id = latest_charge(fake, sub_id)
    intent_id = fake.charges[charge_id]["payment_intent"]
    receiver.received.clear()
    refund = client.v1.refunds.create(params={"charge": charge_id, "amount": 200, "reason": "requested_by_customer",
                                              "metadata": {"ticket": "42"}}, options={"idempotency_key": "rf-1"})
    assert isinstance(refund, stripe.Refund) and refund.id.startswith("re_") and refund.object == "refund"
    assert (refund.status, refund.amount, refund.currency, refund.reason) == ("succeeded", 200, "usd",
                                                                             "requested_by_customer")
    assert (refund.charge, refund.payment_intent, refund.customer) == (charge_id, intent_id,
                                                                       fake.charges[charge_id]["customer"])
    assert refund.metadata.to_dict() == {"ticket": "42"}
    assert receiver.types() == ["charge.refunded", "refund.created"]
    refunded, created = (verified(*r) for r in receiver.received)
    assert refunded.data.object.id == charge_id and refunded.data.object.amount_refunded == 200
    assert refunded.data.object.refunded is False and "previous_attributes" not in refunded.data
    assert created.data.object.id == refund.id
    assert refunded.request.id == refund.last_response.request_id and refunded.request.idempotency_key == "rf-1"
    with pytest.raises(stripe.InvalidRequestError) as caught:
        client.v1.refunds.create(params={"charge": charge_id, "amount": 400})
    assert (caught.value.param, caught.value.code) == ("amount", None)
    assert caught.value.user_message == "Refund amount ($4.00) is greater than unrefunded amount on charge ($3.00)"
    rest = client.v1.refunds.create(params={"payment_intent": intent_id})  # what is left, through the intent
    assert rest.amount == 300 and rest.charge == charge_id
    charge = client.v1.charges.retrieve(charge_id, params={"expand": ["refunds"]})
    assert (charge.amount_refunded, charge.refunded) == (500, True)
    assert [r.id for r in charge.refunds.data] == [rest.id, refund.id]
    with pytest.raises(stripe.InvalidRequestError) as caught:
        client.v1.refunds.create(params={"charge": charge_id, "amount": 1})
    assert caught.value.code == "charge_already_refunded"
    assert caught.value.user_message == f"Charge {charge_id} has already been refunded."
    assert client.v1.refunds.retrieve(refund.id).amount == 200
    assert [r.id for r in client.v1.refunds.list(params={"charge": charge_id}).data] == [rest.id, refund.id]
    assert len(fake.events) == len(PAY_EVENTS) + 4
    for params, param, code in (({}, None, "parameter_missing"),
                                ({"charge": "ch_nope"}, "charge", "resource_missing"),
                                ({"payment_intent": "pi_nope"}, "payment_intent", "resource_missing"),
                                ({"charge": charge_id, "payment_intent": intent_id}, "charge", "parameters_exclusive"),
                                ({"charge": charge_id, "reason": "changed_mind"}, "reason", None),
                                ({"charge": charge_id, "amount": 0}, "amount", None),
                                ({"charge": charge_id, "reverse_transfer": True}, "reverse_transfer", None)):
        with pytest.raises(stripe.InvalidRequestError) as caught:
            client.v1.refunds.create(params=params)
        assert (caught.value.param, caught.value.code) == (param, code), params
    assert "payment_intent or charge" in client_error(lambda: client.v1.refunds.create())
    assert len(fake.refunds) == 2

    fake.renew(sub_id)  # the Python action does the same
    second = latest_charge(fake, sub_id)
    receiver.received.clear()
    refund_id = fake.refund(second)
    assert fake.refunds[refund_id]["amount"] == 500 and fake.charges[second]["refunded"] is True
    assert receiver.types() == ["charge.refunded", "refund.created"]
    with pytest.raises(ValueError, match="already been refunded"):
        fake.refund(second)
    with pytest.raises(KeyError):
        fake.refund("ch_nope")


def client_error(call) -> str:
    with pytest.raises(stripe.InvalidRequestError) as caught:
        call()
    return caught.value.user_message


# ----- disputes -----------------------------------------------------------------------------------------------

def test_disputes_are_opened_closed_and_hold_back_refunds(client, fake, price, receiver, clock):
    sub_id = paid_subscription(client, fake, price)
    charge_id = latest_charge(fake, sub_id)
    receiver.received.clear()
    dispute_id = fake.dispute(charge_id)
    assert receiver.types() == ["charge.dispute.created"]
    assert verified(*receiver.received[0]).data.object.id == dispute_id
    dispute = client.v1.disputes.retrieve(dispute_id)
    assert isinstance(dispute, stripe.Dispute) and dispute.id.startswith("du_") and dispute.object == "dispute"
    assert (dispute.status, dispute.reason, dispute.amount, dispute.currency) == ("needs_response", "fraudulent",
                                                                                 500, "usd")
    assert (dispute.charge, dispute.payment_intent) == (charge_id, fake.charges[charge_id]["payment_intent"])
    assert dispute.is_charge_refundable is False and dispute.balance_transactions == [] and dispute.livemode is False
    details = dispute.evidence_details
    assert (details.has_evidence, details.past_due, details.submission_count) == (False, False, 0)
    assert details.due_by > int(clock.now)
    evidence = dispute.evidence.to_dict()
    assert evidence["enhanced_evidence"] == {} and all(v is None for k, v in evidence.items()
                                                       if k != "enhanced_evidence")
    assert dispute.payment_method_details.card.case_type == "chargeback"
    assert client.v1.charges.retrieve(charge_id).disputed is True
    assert "charged back" in client_error(lambda: client.v1.refunds.create(params={"charge": charge_id}))
    assert [d.id for d in client.v1.disputes.list(params={"charge": charge_id}).data] == [dispute_id]
    assert [d.id for d in client.v1.disputes.list(params={"payment_intent": dispute.payment_intent}).data] == [
        dispute_id]
    assert client.v1.disputes.list(params={"charge": "ch_other"}).data == []
    with pytest.raises(ValueError):
        fake.dispute(charge_id)  # already disputed

    closed = client.v1.disputes.close(dispute_id)  # the merchant accepts it
    assert closed.status == "lost"
    event = verified(*receiver.received[-1])
    assert event.type == "charge.dispute.closed" and event.data.object.status == "lost"
    assert event.request.id == closed.last_response.request_id
    with pytest.raises(stripe.InvalidRequestError) as caught:
        client.v1.disputes.close(dispute_id)
    assert caught.value.http_status == 400 and "already closed" in caught.value.user_message
    assert len(fake.events) == len(PAY_EVENTS) + 2

    fake.renew(sub_id)
    second = latest_charge(fake, sub_id)
    other = fake.dispute(second, reason="product_not_received")
    won = fake.close_dispute(other, won=True)
    assert won["status"] == "won" and receiver.types()[-2:] == ["charge.dispute.created", "charge.dispute.closed"]
    assert client.v1.refunds.create(params={"charge": second}).amount == 500  # a won dispute no longer blocks
    with pytest.raises(ValueError):
        fake.close_dispute(other, won=False)
    with pytest.raises(ValueError):
        fake.dispute(second, reason="bored")


# ----- paused and resumed subscriptions ---------------------------------------------------------------------------

def test_a_paused_subscription_makes_no_invoice_until_it_is_resumed(client, fake, price, receiver, clock):
    sub_id = paid_subscription(client, fake, price)
    first_invoice = fake.subscriptions[sub_id]["latest_invoice"]
    with pytest.raises(stripe.InvalidRequestError) as caught:
        client.v1.subscriptions.resume(sub_id)
    assert caught.value.http_status == 400 and "paused" in caught.value.user_message
    receiver.received.clear()
    clock.now += 3600
    paused = fake.pause(sub_id)
    assert paused["status"] == "paused"
    assert paused["status_details"]["paused"] == {"subscription": {"type": "trial_end_without_payment_method"},
                                                  "transitioned_at": int(clock.now), "type": "subscription"}
    assert receiver.types() == ["customer.subscription.paused", "customer.subscription.updated"]
    updated = verified(*receiver.received[1])
    assert updated.data.previous_attributes.status == "active" and updated.data.object.status == "paused"
    for action in (fake.renew, fake.fail_payment, fake.pause):
        with pytest.raises(ValueError):
            action(sub_id)
    assert [s.id for s in client.v1.subscriptions.list(params={"status": "paused"}).data] == [sub_id]
    with pytest.raises(stripe.InvalidRequestError) as caught:
        client.v1.subscriptions.resume(sub_id, params={"billing_cycle_anchor": {"type": "unchanged"}})
    assert caught.value.param == "billing_cycle_anchor[type]"  # would prorate: not modelled
    with pytest.raises(stripe.InvalidRequestError) as caught:
        client.v1.subscriptions.resume(sub_id, params={"payment_behavior": "later"})
    assert caught.value.param == "payment_behavior"
    assert fake.subscriptions[sub_id]["status"] == "paused"

    receiver.received.clear()
    clock.now += 5 * 86400
    resumed = client.v1.subscriptions.resume(sub_id, params={"billing_cycle_anchor": {"type": "now"},
                                                             "payment_behavior": "resume_on_payment_success"})
    now = int(clock.now)
    assert (resumed.status, resumed.status_details, resumed.billing_cycle_anchor) == ("active", None, now)
    item = resumed["items"]["data"][0]
    assert (item.current_period_start, item.current_period_end) == (now, now + PERIOD_SECONDS)
    assert receiver.types() == [*INVOICE_EVENTS, "customer.subscription.resumed", "customer.subscription.updated"]
    previous = verified(*receiver.received[-1]).data.previous_attributes
    assert previous.status == "paused" and previous.billing_cycle_anchor != now
    assert verified(*receiver.received[-2]).request.id == resumed.last_response.request_id
    invoice = client.v1.invoices.retrieve(resumed.latest_invoice)
    assert invoice.id != first_invoice and (invoice.status, invoice.billing_reason) == ("paid", "subscription_cycle")
    assert (invoice.lines.data[0].period.start, invoice.lines.data[0].period.end) == (now, now + PERIOD_SECONDS)
    assert client.v1.invoice_payments.list(params={"invoice": invoice.id}).data[0].status == "paid"

    fake.pause(sub_id)  # the Python action does the same
    invoice_id = fake.resume(sub_id)
    assert fake.invoices[invoice_id]["status"] == "paid" and fake.subscriptions[sub_id]["status"] == "active"
    with pytest.raises(ValueError, match="only a paused subscription"):
        fake.resume(sub_id)


# ----- webhook endpoints -------------------------------------------------------------------------------------------

def test_webhook_endpoints_are_created_listed_updated_and_deleted(client, fake):
    created = client.v1.webhook_endpoints.create(params={
        "url": "https://example.com/stripe/webhook", "enabled_events": ["invoice.paid", "charge.refunded"],
        "api_version": "2025-03-31.basil", "description": "app", "metadata": {"app": "iib"}})
    assert isinstance(created, stripe.WebhookEndpoint) and created.id.startswith("we_")
    assert created.secret.startswith("whsec_") and created.secret == fake.endpoint_secret(created.id)
    assert (created.status, created.api_version, created.url, created.description) == (
        "enabled", "2025-03-31.basil", "https://example.com/stripe/webhook", "app")
    assert created.enabled_events == ["invoice.paid", "charge.refunded"] and created.metadata.to_dict() == {
        "app": "iib"}
    assert created.object == "webhook_endpoint" and created.livemode is False and created.application is None
    plain = client.v1.webhook_endpoints.create(params={"url": "http://127.0.0.1:9/hook", "enabled_events": ["*"]})
    assert plain.api_version is None  # the account's version
    again = client.v1.webhook_endpoints.retrieve(created.id)
    assert "secret" not in again and again.api_version == "2025-03-31.basil"
    listed = client.v1.webhook_endpoints.list(params={"limit": 1})
    assert [e.id for e in listed.data] == [plain.id] and listed.has_more is True
    assert [e.id for e in listed.auto_paging_iter()] == [plain.id, created.id]
    assert all("secret" not in e for e in listed.auto_paging_iter())
    updated = client.v1.webhook_endpoints.update(created.id, params={
        "disabled": True, "enabled_events": ["*"], "description": "", "metadata": {"app": ""}})
    assert (updated.status, updated.enabled_events, updated.description) == ("disabled", ["*"], None)
    assert updated.metadata.to_dict() == {} and "secret" not in updated
    assert client.v1.webhook_endpoints.update(created.id, params={"disabled": False}).status == "enabled"
    with pytest.raises(stripe.InvalidRequestError) as caught:
        client.v1.webhook_endpoints.update(created.id, params={"api_version": API_VERSION})
    assert (caught.value.code, caught.value.param) == ("parameter_unknown", "api_version")
    assert caught.value.user_message == "Received unknown parameter: api_version"
    with pytest.raises(stripe.InvalidRequestError) as caught:
        client.v1.webhook_endpoints.create(params={"url": "https://example.com/h",
                                                   "enabled_events": ["invoice.paid", "invoice.payed"]})
    assert caught.value.param == "enabled_events[1]"
    assert caught.value.user_message.startswith("Invalid enabled_events[1]: must be one of *, account.application.")
    assert caught.value.user_message.endswith(f", or {EVENT_TYPES[-1]}")
    for params, param in (({"enabled_events": ["*"]}, "url"), ({"url": "https://example.com/h"}, "enabled_events")):
        with pytest.raises(stripe.InvalidRequestError) as caught:
            client.v1.webhook_endpoints.create(params=params)
        assert (caught.value.code, caught.value.param) == ("parameter_missing", param)
    for params, param in (({"api_version": "2019-02-19"}, "api_version"), ({"api_version": "latest"}, "api_version"),
                          ({"url": "ftp://example.com"}, "url"), ({"connect": True}, "connect")):
        with pytest.raises(stripe.InvalidRequestError) as caught:
            client.v1.webhook_endpoints.create(params={"url": "https://example.com/h", "enabled_events": ["*"],
                                                       **params})
        assert caught.value.param == param, params
    deleted = client.v1.webhook_endpoints.delete(created.id)
    assert deleted.to_dict() == {"id": created.id, "object": "webhook_endpoint", "deleted": True}
    with pytest.raises(stripe.InvalidRequestError) as caught:
        client.v1.webhook_endpoints.retrieve(created.id)
    assert caught.value.user_message == f"No such webhook endpoint: '{created.id}'"
    assert [e.id for e in client.v1.webhook_endpoints.list().data] == [plain.id]
    assert fake.events == []


def test_each_endpoint_gets_the_same_events_in_its_own_version(client, fake, price, receiver, receivers):
    old, pinned, other, off = receivers(), receivers(), receivers(), receivers()
    e_old = client.v1.webhook_endpoints.create(params={"url": old.url, "enabled_events": ["*"],
                                                       "api_version": "2024-06-20"})
    e_pinned = client.v1.webhook_endpoints.create(params={
        "url": pinned.url, "enabled_events": ["invoice.paid", "customer.subscription.updated"]})
    client.v1.webhook_endpoints.create(params={"url": other.url, "enabled_events": ["charge.refunded"]})
    e_off = client.v1.webhook_endpoints.create(params={"url": off.url, "enabled_events": ["*"]})
    client.v1.webhook_endpoints.update(e_off.id, params={"disabled": True})
    sub_id = paid_subscription(client, fake, price)
    fake.renew(sub_id)
    everything = [*PAY_EVENTS, *INVOICE_EVENTS, "customer.subscription.updated"]
    assert receiver.types() == everything  # webhook_url as before
    assert old.types() == everything and old.ids() == receiver.ids()  # the same event ids
    assert pinned.types() == ["invoice.paid", "invoice.paid", "customer.subscription.updated"]
    assert other.received == [] and off.received == []
    for head, body in old.received:
        assert verified(head, body, e_old.secret).api_version == "2024-06-20"
        with pytest.raises(stripe.SignatureVerificationError):
            verified(head, body)  # not the webhook_url's secret
    for head, body in pinned.received:
        assert verified(head, body, e_pinned.secret).api_version == API_VERSION
    old_events = {e["type"] + str(i): e for i, e in enumerate(json.loads(b) for _, b in old.received)}
    by_id = {json.loads(b)["id"]: json.loads(b) for _, b in pinned.received}
    charge_id = latest_charge(fake, sub_id)
    paid_old = [e for e in old_events.values() if e["type"] == "invoice.paid"][-1]["data"]["object"]
    assert paid_old["subscription"] == sub_id and "parent" not in paid_old and "payments" not in paid_old
    assert (paid_old["paid"], paid_old["charge"], paid_old["subscription_details"]) == (True, charge_id,
                                                                                        {"metadata": {"user_id": "7"}})
    assert paid_old["payment_intent"] == fake.charges[charge_id]["payment_intent"]
    line = paid_old["lines"]["data"][0]
    assert (line["type"], line["subscription"], line["price"]["id"], line["plan"]["object"]) == (
        "subscription", sub_id, price.id, "plan")
    assert "parent" not in line and "pricing" not in line
    created_old = [e for e in old_events.values() if e["type"] == "invoice.created"][0]["data"]["object"]
    assert created_old["charge"] is None and created_old["paid"] is False  # a draft has no charge yet
    assert [e for e in old_events.values() if e["type"] == "charge.succeeded"][-1]["data"]["object"]["invoice"] == (
        fake.subscriptions[sub_id]["latest_invoice"])
    item_end = fake.subscriptions[sub_id]["items"]["data"][0]["current_period_end"]
    updated_old = [e for e in old_events.values() if e["type"] == "customer.subscription.updated"][-1]["data"]
    assert updated_old["object"]["current_period_end"] == item_end
    assert "current_period_end" not in updated_old["object"]["items"]["data"][0]
    assert set(updated_old["previous_attributes"]) == {"current_period_start", "current_period_end", "latest_invoice"}
    assert updated_old["previous_attributes"]["current_period_end"] == item_end - PERIOD_SECONDS
    paid_pinned = next(e for e in by_id.values() if e["type"] == "invoice.paid")
    assert paid_pinned["data"]["object"]["parent"]["subscription_details"]["subscription"] == sub_id
    assert "subscription" not in paid_pinned["data"]["object"]
    assert paid_pinned["pending_webhooks"] == 3  # webhook_url, e_old, e_pinned
    assert set(by_id) <= set(receiver.ids())
    deliveries = fake.endpoint_deliveries
    assert {(endpoint, version) for endpoint, _, version, _ in deliveries} == {(e_old.id, "2024-06-20"),
                                                                               (e_pinned.id, API_VERSION)}
    assert all(status == 200 for *_, status in deliveries) and len(deliveries) == len(everything) + 3
    assert [status for _, status in fake.sent_events] == [200] * len(everything)
    event_id = old.ids()[0]
    assert fake.event_payload(event_id, e_old.id) == old.received[0][1]
    assert fake.event_payload(event_id) == receiver.received[0][1]
    fake.refund(charge_id)
    assert other.types() == ["charge.refunded"] and off.received == []
    client.v1.webhook_endpoints.delete(e_old.id)
    fake.renew(sub_id)
    assert len(old.received) == len(everything) + 2  # nothing after the deletion (the refund's two came before)


def test_endpoint_deliveries_follow_the_delivery_settings(client, fake, price, receiver, receivers):
    target = receivers()
    endpoint = client.v1.webhook_endpoints.create(params={"url": target.url, "enabled_events": ["*"]})
    fake.delivery(hold=True)
    paid_subscription(client, fake, price)
    assert target.received == [] and len(fake.held_events) == len(PAY_EVENTS)
    assert fake.flush(order=[8]) == [200]
    assert target.types() == receiver.types() == ["checkout.session.completed"]
    fake.flush(order="reverse")
    assert target.types()[1:] == receiver.types()[1:] == PAY_EVENTS[-2::-1]
    fake.delivery(duplicates=1)
    fake.renew(fake.events[1]["data"]["object"]["id"])
    assert target.types()[9:] == receiver.types()[9:] == [t for t in (*INVOICE_EVENTS, "customer.subscription.updated")
                                                          for _ in range(2)]
    assert fake.resend(fake.events[0], endpoint.id) == 200 and target.ids()[-1] == fake.events[0]["id"]
    assert len(receiver.received) == 9 + 14  # resend to an endpoint leaves webhook_url alone
    target.status = 500
    assert fake.resend(fake.events[0], endpoint.id) == 500 and fake.endpoint_deliveries[-1][-1] == 500
    with pytest.raises(KeyError):
        fake.resend(fake.events[0], "we_nope")
    fake.delivery(delay=1.5)
    fake.refund(next(iter(fake.charges)))
    assert fake.wait_for_deliveries(timeout=10)
    assert target.types()[-2:] == ["charge.refunded", "refund.created"]


# ----- API versions -------------------------------------------------------------------------------------------

def test_responses_follow_the_requested_stripe_version(client, fake, price, http):
    sub_id = paid_subscription(client, fake, price)
    invoice_id = fake.subscriptions[sub_id]["latest_invoice"]
    charge_id = latest_charge(fake, sub_id)
    headers = {"Authorization": f"Bearer {API_KEY}", "Stripe-Version": "2024-06-20"}
    with http.get(f"{fake.base_url}/v1/subscriptions/{sub_id}?expand[]=latest_invoice", headers=headers) as r:
        assert r.status_code == 200 and r.headers["Stripe-Version"] == "2024-06-20"
        old = r.json()
    item = fake.subscriptions[sub_id]["items"]["data"][0]
    assert (old["current_period_start"], old["current_period_end"]) == (item["current_period_start"],
                                                                        item["current_period_end"])
    assert "current_period_end" not in old["items"]["data"][0] and "billing_mode" not in old
    assert old["latest_invoice"]["subscription"] == sub_id and "parent" not in old["latest_invoice"]
    options = {"stripe_version": "2024-06-20"}
    assert client.v1.charges.retrieve(charge_id, options=options)["invoice"] == invoice_id
    assert client.v1.invoices.retrieve(invoice_id, options=options)["charge"] == charge_id
    basil = client.v1.invoices.retrieve(invoice_id, options={"stripe_version": "2025-03-31.basil"})
    assert basil.parent.subscription_details.subscription == sub_id and "amount_paid_off_stripe" not in basil
    assert "amount_paid_off_stripe" in client.v1.invoices.retrieve(invoice_id)
    listed = client.v1.invoices.list(params={"subscription": sub_id}, options=options)
    assert listed.data[0]["subscription"] == sub_id
    event_id = fake.events[0]["id"]
    with http.get(f"{fake.base_url}/v1/events/{event_id}", headers=headers) as r:
        assert r.json()["api_version"] == API_VERSION  # an event keeps the version it was made in
    headers["Stripe-Version"] = "2011-01-01"  # not rendered: the pinned shape, echoed as before
    with http.get(f"{fake.base_url}/v1/invoices/{invoice_id}", headers=headers) as r:
        assert r.headers["Stripe-Version"] == "2011-01-01" and "parent" in r.json()


def test_render_in_version_and_a_webhook_url_in_an_old_version(client, price, receiver, clock):
    assert (version_shape("2024-06-20"), version_shape("2024-12-18.acacia")) == ("2024-06-20", "2024-06-20")
    assert (version_shape("2025-08-27.basil"), version_shape("2025-03-31.basil")) == ("2025-03-31.basil",) * 2
    assert {version_shape(v) for v in ("2025-09-30.clover", "2026-03-25.dahlia", API_VERSION, "2019-01-01")} == {None}
    obj = {"id": "sub_1", "object": "subscription", "status": "active", "billing_mode": {"type": "flexible"},
           "items": {"object": "list", "data": [{"id": "si_1", "object": "subscription_item",
                                                 "current_period_start": 10, "current_period_end": 20}]}}
    assert render_in_version(obj, API_VERSION) == obj and render_in_version(obj, API_VERSION) is not obj
    old = render_in_version(obj, "2024-06-20")
    assert (old["current_period_start"], old["current_period_end"], old["discount"]) == (10, 20, None)
    assert "billing_mode" not in old and old["items"]["data"][0] == {"id": "si_1", "object": "subscription_item"}
    invoice = {"id": "in_1", "object": "invoice", "status": "paid", "parent": {
        "type": "subscription_details", "quote_details": None,
        "subscription_details": {"subscription": "sub_1", "metadata": {"a": "b"}, "subscription_proration_date": None}}}
    rendered = render_in_version(invoice, "2024-06-20")
    assert (rendered["subscription"], rendered["subscription_details"], rendered["paid"], rendered["charge"]) == (
        "sub_1", {"metadata": {"a": "b"}}, True, None)  # no lookup: what the object does not hold is null
    links = {("charge", "in_1"): "ch_1", ("payment_intent", "in_1"): "pi_1"}
    rendered = render_in_version(invoice, "2024-06-20", lambda relation, object_id: links.get((relation, object_id)))
    assert (rendered["charge"], rendered["payment_intent"]) == ("ch_1", "pi_1")

    with FakeStripe(api_key=API_KEY, webhook_secret=SECRET, clock=clock, api_version="2024-06-20",
                    webhook_url=receiver.url) as fake:
        http_client = stripe.RequestsClient()
        try:
            c = stripe.StripeClient(API_KEY, base_addresses={"api": fake.base_url}, http_client=http_client)
            product = c.v1.products.create(params={"name": "Bulk"})
            p = c.v1.prices.create(params={"product": product.id, "unit_amount": 500, "currency": "usd",
                                           "recurring": {"interval": "month"}})
            sub_id = fake.pay(new_session(c, p).id)
            made = c.v1.events.retrieve(fake.events[0]["id"])  # events are read in the version they were made in
        finally:
            http_client.close()
        assert made.api_version == "2024-06-20"
    sent = {e.type: e for e in (verified(*r) for r in receiver.received)}
    assert sent["invoice.paid"].api_version == "2024-06-20" and sent["invoice.paid"].data.object.subscription == sub_id
    assert "current_period_end" in sent["customer.subscription.created"].data.object


# ----- Customer Portal configurations -----------------------------------------------------------------------------

WANTED_PORTAL = {
    "business_profile": {"headline": "images-in-bulk", "privacy_policy_url": APP + "/privacy",
                         "terms_of_service_url": APP + "/terms"},
    "default_return_url": APP + "/account",
    "features": {"customer_update": {"enabled": False}, "invoice_history": {"enabled": True},
                 "payment_method_update": {"enabled": True},
                 "subscription_cancel": {"enabled": True, "mode": "at_period_end", "proration_behavior": "none"},
                 "subscription_update": {"enabled": False}},
    "metadata": {"app": "images-in-bulk"}}


def test_portal_configurations_are_created_listed_and_updated(client, fake):
    with pytest.raises(stripe.InvalidRequestError) as caught:
        client.v1.billing_portal.configurations.create(params={"business_profile": {"headline": "x"}})
    assert (caught.value.code, caught.value.user_message) == ("parameter_missing", "Missing required param: features.")
    config = client.v1.billing_portal.configurations.create(params={**WANTED_PORTAL, "name": "App portal"})
    assert isinstance(config, stripe.billing_portal.Configuration) and config.id.startswith("bpc_")
    assert (config.object, config.active, config.is_default, config.application, config.livemode) == (
        "billing_portal.configuration", True, False, None, False)
    assert config.business_profile.to_dict() == WANTED_PORTAL["business_profile"]
    assert (config.default_return_url, config.name, config.metadata.to_dict()) == (
        APP + "/account", "App portal", {"app": "images-in-bulk"})
    features = config.features
    assert features.customer_update.to_dict() == {"allowed_updates": [], "enabled": False}
    assert (features.invoice_history.enabled, features.payment_method_update.enabled) == (True, True)
    assert (features.subscription_cancel.enabled, features.subscription_cancel.mode) == (True, "at_period_end")
    assert features.subscription_cancel.cancellation_reason.enabled is False
    assert (features.subscription_update.enabled, features.subscription_pause.enabled) == (False, False)
    assert config.login_page.to_dict() == {"enabled": False, "url": None}
    updated = client.v1.billing_portal.configurations.update(config.id, params={
        "features": {"subscription_cancel": {"mode": "immediately", "proration_behavior": "create_prorations"}},
        "business_profile": {"headline": ""}, "login_page": {"enabled": True}})
    cancel = updated.features.subscription_cancel
    assert (cancel.enabled, cancel.mode, cancel.proration_behavior) == (True, "immediately", "create_prorations")
    assert updated.features.invoice_history.enabled is True  # untouched by a partial update
    assert updated.business_profile.headline is None
    assert updated.business_profile.privacy_policy_url == APP + "/privacy"
    assert updated.login_page.enabled is True and updated.login_page.url.startswith(fake.base_url)
    assert client.v1.billing_portal.configurations.retrieve(config.id).features.subscription_cancel.mode == (
        "immediately")
    for params, param in (({"features": {"subscription_cancel": {"mode": "immediately"}}},
                           "features[subscription_cancel][enabled]"),
                          ({"features": {"subscription_cancel": {"enabled": True, "mode": "later"}}},
                           "features[subscription_cancel][mode]"),
                          ({"features": {"subscription_cancel": {"enabled": True, "proration_behavior":
                                                                 "create_prorations"}}},
                           "features[subscription_cancel][proration_behavior]"),
                          ({"features": {"customer_update": {"enabled": True, "allowed_updates": ["age"]}}},
                           "features[customer_update][allowed_updates][0]"),
                          ({"features": {"teleport": {"enabled": True}}}, "features[teleport]"),
                          ({"features": {"invoice_history": {"enabled": True}}, "default_return_url": "nowhere"},
                           "default_return_url")):
        with pytest.raises(stripe.InvalidRequestError) as caught:
            client.v1.billing_portal.configurations.create(params=params)
        assert caught.value.param == param, params
    listed = client.v1.billing_portal.configurations.list()
    assert listed.url == "/v1/billing_portal/configurations"
    assert [c.id for c in listed.data] == [config.id, fake.default_portal_configuration]
    assert [c.id for c in client.v1.billing_portal.configurations.list(params={"is_default": True}).data] == [
        fake.default_portal_configuration]
    client.v1.billing_portal.configurations.update(config.id, params={"active": False})
    assert [c.id for c in client.v1.billing_portal.configurations.list(params={"active": False}).data] == [config.id]
    with pytest.raises(stripe.InvalidRequestError):
        client.v1.billing_portal.configurations.update(fake.default_portal_configuration, params={"active": False})
    customer = client.v1.customers.create(params={"email": "ana@example.com"})
    for configuration in (config.id, "bpc_nope"):
        with pytest.raises(stripe.InvalidRequestError) as caught:
            client.v1.billing_portal.sessions.create(params={"customer": customer.id,
                                                             "configuration": configuration})
        assert (caught.value.http_status, caught.value.code, caught.value.param) == (400, "resource_missing",
                                                                                     "configuration")
    assert fake.events == []


def test_the_portal_page_follows_its_configuration(client, fake, price, receiver, http):
    sub_id = paid_subscription(client, fake, price)
    fake.renew(sub_id)
    customer_id = fake.subscriptions[sub_id]["customer"]
    default = client.v1.billing_portal.sessions.create(params={"customer": customer_id})
    assert default.configuration == fake.default_portal_configuration and default.return_url is None
    with http.get(default.url) as r:
        ids = Forms(r.text).ids
    assert "cancel-subscription" in ids and "invoices" not in ids and "update-payment-method" not in ids
    config = client.v1.billing_portal.configurations.create(params={
        **WANTED_PORTAL, "features": {**WANTED_PORTAL["features"],
                                      "subscription_cancel": {"enabled": True, "mode": "immediately"}}})
    portal = client.v1.billing_portal.sessions.create(params={"customer": customer_id, "configuration": config.id})
    assert portal.configuration == config.id and portal.return_url == APP + "/account"  # the configuration's
    with http.get(portal.url) as r:
        page = r.text
        ids = Forms(page).ids
    assert ids["headline"] and "Visa •••• 4242" in page and "disabled" in ids["update-payment-method"][1]
    assert ids["privacy"][1]["href"] == APP + "/privacy" and ids["terms"][1]["href"] == APP + "/terms"
    rows = [invoice for invoice in fake.invoices.values() if invoice["customer"] == customer_id]
    assert page.count('class="invoice"') == 2 and all(invoice["number"] in page for invoice in rows)
    assert "USD 5.00" in page and "Paid" in page
    assert ids["cancel-subscription"][1]["data-mode"] == "immediately"
    receiver.received.clear()
    status, headers, _ = press(http, fake, portal.url, "cancel-subscription")
    assert status == 303 and receiver.types() == ["customer.subscription.deleted"]
    assert fake.subscriptions[sub_id]["status"] == "canceled"
    with http.get(portal.url) as r:
        assert "Ended on" in r.text and "cancel-subscription" not in Forms(r.text).ids

    second = paid_subscription(client, fake, price)
    locked = client.v1.billing_portal.configurations.create(params={"features": {
        "subscription_cancel": {"enabled": False}, "invoice_history": {"enabled": False}}})
    portal = client.v1.billing_portal.sessions.create(params={
        "customer": fake.subscriptions[second]["customer"], "configuration": locked.id, "return_url": APP + "/x"})
    with http.get(portal.url) as r:
        ids = Forms(r.text).ids
    assert "cancel-subscription" not in ids and "invoices" not in ids and ids["return"][1]["href"] == APP + "/x"
    with http.post(portal.url, data={"action": "cancel"}, allow_redirects=False) as r:
        assert r.status_code == 400 and "not possible" in r.text
    assert fake.subscriptions[second]["cancel_at_period_end"] is False


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
