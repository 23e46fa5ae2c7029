"""A small Stripe stand-in on 127.0.0.1: the API calls the app makes, hosted Checkout and Portal pages, webhooks.

Used by the app's tests and by the local demo instead of api.stripe.com, checkout.stripe.com and
billing.stripe.com. The app reaches it through stripe-python's ``StripeClient(api_key,
base_addresses={"api": fake.base_url, ...})``; the pages it links to are served here too.

Standard library only. State lives in memory; every object is kept in the shape the API returns for
API version ``2026-10-28.endive`` (the version stripe-python 16.1.0 pins): ``fake.subscriptions[sub_id]``
is what ``GET /v1/subscriptions/{id}`` answers in that version. Responses and webhooks in another version
are rendered from it (``render_in_version``, below).

Real behaviours copied (read in Stripe's API reference at docs.stripe.com/api — the Customer,
Product, Price, Checkout Session, Subscription, Subscription Item, Invoice, Invoice Line Item,
Invoice Payment, PaymentIntent, Charge, Refund, Dispute, Webhook Endpoint, Customer Portal Session,
Customer Portal Configuration and Event objects, "Close a dispute", "Resume a subscription",
"Errors", "Idempotent requests", "Authentication", "API upgrades" — the 2025-03-31.basil changelog
entries "Adds subscription item-level billing periods" and "Invoicing resources now specify how they
were generated", the 2022-11-15 change that stopped including a Charge's refunds by default, the webhook
signature guide, the typed resource and parameter classes of stripe-python 16.1.0 (and 10.12.0 and 12.0.0
for older versions), and error bodies quoted in public issue threads such as MarcinusX/flutter_stripe_demo#4,
redwoodjs/example-store-stripe#168, stripe/stripe-node#361 and gadelkareem/skeleton#20, and in public
tests of Stripe integrations for the refund errors):

* Requests are ``application/x-www-form-urlencoded`` with nested keys (``line_items[0][price]``,
  ``subscription_data[metadata][user_id]``, ``lookup_keys[0]`` or ``lookup_keys[]``,
  ``expand[0]``); GET and DELETE carry them in the query string. ``Authorization: Bearer
  <secret key>`` (or HTTP Basic with the key as user name) is checked before anything else: a
  missing key gets 401 "You did not provide an API key...", a wrong one 401 "Invalid API Key
  provided: sk_test_****...abcd" (the key masked but for its last four characters).
* Every API response carries ``Request-Id: req_...`` and ``Stripe-Version`` (the one the client
  sent, else the account's); bodies are pretty-printed JSON. Errors are ``{"error": {"type":
  "invalid_request_error", "code": ..., "message": ..., "param": ..., "doc_url": ...,
  "request_log_url": ...}}``: unknown ids 404 ``resource_missing`` ("No such customer:
  'cus_x'", param ``id``), a missing parameter 400 ``parameter_missing`` ("Missing required
  param: mode."), a parameter the endpoint does not take 400 ``parameter_unknown`` ("Received
  unknown parameter: foo"), a value outside an enum 400 "Invalid mode: must be one of payment, setup,
  or subscription", an unknown path or method 404 "Unrecognized request URL (GET: /v1/foo)...".
* ``Idempotency-Key`` on POST: the first response (2xx or 5xx; a 4xx is not kept, as Stripe
  keeps nothing when validation fails) is saved for 24 hours; the same key, path and
  parameters answer it again with ``Idempotent-Replayed: true`` and ``Original-Request``; the
  same key with other parameters or another path gets 400 ``idempotency_error`` ("Keys for
  idempotent requests can only be used with the same parameters they were first used with...").
  The key is echoed in the ``Idempotency-Key`` response header.
* ids carry Stripe's prefixes (cus_, prod_, price_, cs_test_, sub_, si_, in_, il_, inpay_, pi_, ch_,
  re_, du_, we_, whsec_, evt_, bps_, bpc_, req_); ``livemode`` is false everywhere; lists are
  ``{"object": "list", "data": [...], "has_more": ..., "url": ...}``, newest first, with ``limit``,
  ``starting_after`` and ``ending_before``; ``GET /v1/subscriptions`` leaves out canceled subscriptions
  unless ``status`` says otherwise. Includable fields are there only when expanded: a Checkout Session's
  ``line_items``, a Charge's ``refunds`` and an Invoice's ``payments`` (``expand[]=refunds``,
  ``expand[]=payments``; webhooks never carry them).
* Subscriptions (basil and later): ``current_period_start``/``current_period_end`` live on each
  item in ``items.data[]``, not on the subscription. Asking to cancel at period end sets
  ``cancel_at_period_end``, ``cancel_at`` (the period end), ``canceled_at`` (the time of the
  request) and ``cancellation_details.reason = "cancellation_requested"``; when the period ends
  the status becomes ``canceled`` with ``ended_at`` set and ``cancel_at_period_end`` still true.
  A paused subscription (``pause()``: what a trial that ends without a payment method does with
  ``trial_settings.end_behavior.missing_payment_method = pause``) has status ``paused`` and
  ``status_details.paused`` (``transitioned_at``, ``subscription.type =
  "trial_end_without_payment_method"``) and makes no invoices; ``POST /v1/subscriptions/{id}/resume``
  (``billing_cycle_anchor[type]`` ``now``, the default, or the plain ``billing_cycle_anchor=now``;
  ``payment_behavior``, ``proration_behavior``) starts every item's period now, sets
  ``billing_cycle_anchor`` to now and pays a new ``subscription_cycle`` invoice; anything but a paused
  subscription gets a 400.
* Invoices (basil and later): the subscription is at ``parent.subscription_details.subscription``
  with ``parent.type = "subscription_details"`` (no top-level ``subscription``); line items
  have ``parent.subscription_item_details``, ``pricing.price_details`` and ``period.start/end``
  (the service period). As at Stripe, the invoice's own ``period_start``/``period_end`` are the
  period *before* the invoice (equal to ``created`` on the first invoice), so read the service
  period from the lines. Event snapshots follow the invoice through ``draft`` (invoice.created),
  ``open`` (invoice.finalized, invoice.payment_failed) and ``paid`` (invoice.paid,
  invoice.payment_succeeded).
* Payments: an invoice that becomes paid gets a succeeded PaymentIntent (``pi_``, ``latest_charge``),
  its Charge (``ch_``: ``status`` succeeded, ``paid``, ``captured``, ``amount`` = ``amount_captured`` =
  the invoice's total, ``amount_refunded``, ``refunded``, ``disputed``, ``payment_intent``, the card
  4242 in ``payment_method_details``) and an InvoicePayment (``inpay_``: ``invoice``, ``is_default``,
  ``payment: {"type": "payment_intent", "payment_intent": "pi_..."}``, ``status`` paid,
  ``status_transitions.paid_at``). Since basil a Charge has no ``invoice`` and an Invoice no ``charge``
  or ``payment_intent``: ``GET /v1/invoice_payments`` (``invoice``, ``payment[type]`` with
  ``payment[payment_intent]``, ``status``) links them. Charges are listed by ``customer`` and
  ``payment_intent``.
* Refunds (``POST /v1/refunds`` with ``charge`` or ``payment_intent``, ``amount`` (default: what is
  left), ``reason``, ``metadata``): a ``re_`` refund, status succeeded; the charge's
  ``amount_refunded`` grows and ``refunded`` becomes true once all of it is refunded. Neither
  ``charge`` nor ``payment_intent``: 400 "One of the following params should be provided for this
  request: payment_intent or charge."; nothing left: 400 ``charge_already_refunded`` "Charge ch_x has
  already been refunded."; more than is left: 400 (param ``amount``, no code) "Refund amount ($7.00) is
  greater than unrefunded amount on charge ($5.00)"; a charge with an open or lost dispute: 400
  ``charge_disputed``.
* Disputes (``dispute()``): a ``du_`` dispute for the charge's amount, status ``needs_response``,
  ``reason``, an all-null ``evidence``, ``evidence_details`` (``due_by`` a week on, ``has_evidence``
  false, ``submission_count`` 0), ``is_charge_refundable`` false, the card's
  ``payment_method_details``; the charge becomes ``disputed``. ``POST /v1/disputes/{id}/close`` accepts
  it (status ``lost``, irreversible; closing a closed one is a 400); ``close_dispute()`` is the network's
  decision (``won`` or ``lost``).
* Webhook endpoints (``/v1/webhook_endpoints``): ``url`` and ``enabled_events`` are required; an event
  type outside Stripe's list gets 400 "Invalid enabled_events[0]: must be one of *, account...."; ``"*"``
  means every type. ``api_version`` is kept as given (null when absent: the endpoint gets the account's
  version, ``account_api_version``) and cannot be changed: the update call does not take it
  (``parameter_unknown``). The signing ``secret`` (``whsec_``) is in the create response only;
  ``disabled=true`` sets ``status`` disabled; DELETE answers ``{"id", "object": "webhook_endpoint",
  "deleted": true}``. Every enabled endpoint subscribed to an event's type when the event is made
  receives it, with the same event id as every other endpoint, rendered in the endpoint's version (the
  envelope's ``api_version`` says which) and signed with the endpoint's secret; ``pending_webhooks``
  counts them.
* API versions: objects are rendered for an older version by ``render_in_version`` with the version
  table ``_VERSION_CHANGES`` (fields dropped and added per object type, found by diffing the typed
  classes of stripe-python 10.12.0 for 2024-06-20, 12.0.0 for 2025-03-31.basil and 16.1.0): before
  basil an invoice has ``subscription``, ``subscription_details``, ``charge``, ``payment_intent`` and
  ``paid`` and no ``parent`` or ``payments``, a subscription has ``current_period_start/end`` (from its
  first item) and its items have none, a line item has ``price``, ``plan``, ``type``, ``proration``,
  ``subscription_item``, a charge has ``invoice``; an event's ``previous_attributes`` are recomputed in
  the version (an advanced period shows as the subscription's ``current_period_*``). A request's
  ``Stripe-Version`` header (else the account's version) picks the version of the response; an event
  read through ``/v1/events`` keeps the version it was made in, as at Stripe.
* Customer Portal configurations (``/v1/billing_portal/configurations``): ``features`` is required on
  create, and each feature's ``enabled`` (the cancellation reasons' ``options`` too); ``business_profile``,
  ``default_return_url``, ``login_page``, ``metadata``, ``name``; an update merges nested objects
  (``features[subscription_cancel][mode]`` alone changes only the mode); features left out get
  Stripe's defaults (disabled; cancel ``at_period_end``, proration ``none``). API-made configurations
  have ``is_default`` false; the account's default one (``default_portal_configuration``, made with the
  stand-in: only cancelling at period end) has it true and cannot be deactivated. A portal session's
  ``configuration`` must name an active configuration (else 400 ``resource_missing``, param
  ``configuration``); without one it gets the default; its ``return_url`` defaults to the
  configuration's ``default_return_url``.
* Checkout Sessions: ``status`` open/complete, ``payment_status`` unpaid/paid, ``url`` (null
  once the session is complete, as at Stripe), ``{CHECKOUT_SESSION_ID}`` in ``success_url``
  replaced on the redirect; ``customer`` and ``customer_email`` are exclusive.
* Events: ``{"id": "evt_...", "object": "event", "api_version", "created", "data": {"object",
  "previous_attributes" (``*.updated`` only)}, "livemode": false, "pending_webhooks", "request":
  {"id", "idempotency_key"}, "type"}``. Webhooks are POSTed with ``Content-Type:
  application/json; charset=utf-8``, ``User-Agent: Stripe/1.0 (+https://stripe.com/docs/webhooks)``
  and ``Stripe-Signature: t=<unix>,v1=<hex HMAC-SHA256 of "<t>.<body>" keyed with the webhook
  secret>``: ``stripe.Webhook.construct_event`` accepts them.

Simplifications (where the stand-in differs from Stripe):

* Only ``mode=subscription`` Checkout with existing recurring prices (``line_items[i][price]``
  and ``quantity``; no ``price_data``); no trials, coupons, taxes, proration, schedules or
  payment methods. A month is 30 days (``PERIOD_SECONDS``); the first period starts when
  "Pay" is pressed.
* Every payment succeeds at once and is the test card 4242 (``payment_method`` null, no balance
  transactions: ``balance_transaction`` null, ``balance_transactions`` []); a failed payment
  (``fail_payment()``) makes no PaymentIntent or Charge, its retry (``renew()``) makes them. Refunds
  succeed at once; disputes are chargebacks (no inquiries, evidence or funds movements).
* Resume always restarts the period now and pays its invoice during the request, whatever
  ``payment_behavior`` says (``billing_cycle_anchor[type]=unchanged`` and ``proration_date`` are
  refused); pausing is the ``pause()`` test action only (no ``POST /v1/subscriptions/{id}/pause``).
* Older API versions: the version table comes from the typed classes, so a field Stripe added later
  without a new version (e.g. ``customer_account``) is dropped from older versions too; acacia versions
  are rendered as 2024-06-20, clover, dahlia and endive ones as the pinned shape; versions before
  2024-06-20 are not rendered (an endpoint may not ask for one; a request that sends one gets the
  pinned shape).
* The hosted portal has no plan switching, pausing, cancellation reasons or payment method form:
  it shows "Cancel plan" when ``subscription_cancel`` is enabled (``at_period_end``: cancel at period
  end; ``immediately``: cancel now), "Renew plan" on a subscription set to cancel, a disabled "Update
  payment method" when ``payment_method_update`` is enabled, and the invoices (number, date, amount,
  status) when ``invoice_history`` is; ``login_page.url`` is not served.
* Sessions never expire (``expires_at`` is shown, not enforced); portal sessions neither.
* Creating customers, products, prices, configurations and endpoints through the API sends no event
  (customer.created/product.created/... would be real); only the actions below do. Events Stripe also
  sends around a payment, refund or dispute (payment_intent.created, invoice_payment.paid,
  charge.updated, refund.updated, charge.refund.updated, charge.dispute.funds_withdrawn,
  charge.dispute.funds_reinstated, charge.dispute.updated) are not sent.
* Parameters Stripe takes but the stand-in does not model are either ignored (harmless ones,
  e.g. ``allow_promotion_codes``, ``automatic_tax``, ``locale``) or refused with a 400 that says
  so (ones that would change the outcome, e.g. ``subscription_data[trial_period_days]``). Some 400s
  are in the stand-in's own words where Stripe's text is not published: resuming a subscription that
  is not paused, closing a closed dispute, an inactive portal configuration.
* Nothing is retried: each delivery is attempted once and its HTTP status recorded (None when
  the connection failed); tests replay by hand (``resend``, ``sign``).

What each action sends, in this order (Stripe gives no ordering guarantee; ``delivery()`` can
shuffle, repeat, delay or hold them):

* Pay (hosted page or ``pay()``): customer.created (only if Checkout made the customer),
  customer.subscription.created, invoice.created, invoice.finalized, charge.succeeded,
  payment_intent.succeeded, invoice.paid, invoice.payment_succeeded, checkout.session.completed.
* ``renew()``: invoice.created, invoice.finalized, charge.succeeded, payment_intent.succeeded,
  invoice.paid, invoice.payment_succeeded, customer.subscription.updated (the items' periods advanced).
  When the subscription is set to cancel at period end it ends instead: customer.subscription.deleted.
  When the latest invoice is open (after ``fail_payment()``), the retry succeeds instead of a new
  period starting: charge.succeeded, payment_intent.succeeded, invoice.paid, invoice.payment_succeeded,
  customer.subscription.updated (back to active).
* ``fail_payment()``: invoice.created, invoice.finalized, invoice.payment_failed,
  customer.subscription.updated (status past_due, periods advanced). Again while past due:
  invoice.payment_failed only.
* ``refund()`` and ``POST /v1/refunds``: charge.refunded (the charge), refund.created.
* ``dispute()``: charge.dispute.created. ``close_dispute()`` and ``POST /v1/disputes/{id}/close``:
  charge.dispute.closed.
* ``pause()``: customer.subscription.paused, customer.subscription.updated (previous status).
  ``resume()`` and ``POST /v1/subscriptions/{id}/resume``: invoice.created, invoice.finalized,
  charge.succeeded, payment_intent.succeeded, invoice.paid, invoice.payment_succeeded,
  customer.subscription.resumed, customer.subscription.updated.
* Portal "Cancel plan" (mode at_period_end) / "Renew plan", ``cancel_at_period_end()`` and ``POST
  /v1/subscriptions/{id}`` that changes something: customer.subscription.updated. Portal "Cancel plan"
  (mode immediately) and ``DELETE /v1/subscriptions/{id}``: customer.subscription.deleted.

Delivery: every event goes to ``webhook_url`` (rendered in ``api_version``, signed with
``webhook_secret``; recorded in ``sent_events`` as (event, status)) and to the webhook endpoints
subscribed to it when it was made (recorded in ``endpoint_deliveries`` as (endpoint id, event id,
api_version, status)); ``duplicates``, ``shuffle``, ``delay``, ``hold``/``flush()`` apply to both (an
event's copies and order are the same for every target). ``resend(event)`` sends to ``webhook_url``
only, ``resend(event, endpoint_id)`` to one endpoint. An endpoint deleted or disabled after an event
was made gets nothing more.

Delivery timing: by default events are delivered synchronously in the thread doing the action,
before that action answers (so when a test's ``pay()`` returns, or the Pay page's 303 arrives,
the webhook has already been answered). The Pay page decides its redirect, delivers, then
answers the redirect. With ``delivery(delay=...)`` a background thread delivers after the delay
and the action answers at once (``wait_for_deliveries()`` waits for it). The state lock is never
held while delivering, so a webhook handler may call the API back. The signature timestamp is
the wall-clock time of the delivery (``signature_clock``, default ``time.time``), not the
injectable ``clock`` that stamps objects, so a test that moves the object clock does not make
every signature stale.

Python use::

    fake = FakeStripe(api_key="sk_test_fake_123", webhook_secret="whsec_test_abc", port=0, clock=None,
                      api_version=API_VERSION, account_api_version=API_VERSION)
    fake.webhook_url = "http://127.0.0.1:5000/stripe/webhook"
    fake.start()
    client = stripe.StripeClient("sk_test_fake_123", base_addresses={"api": fake.base_url})
    ...; sub_id = fake.pay(session_id); fake.renew(sub_id); fake.stop()
    charge_id = next(iter(fake.charges)); fake.refund(charge_id, amount=100)
    dispute_id = fake.dispute(charge_id); fake.close_dispute(dispute_id, won=True)
    fake.pause(sub_id); invoice_id = fake.resume(sub_id)
    endpoint = client.v1.webhook_endpoints.create(params={"url": ..., "enabled_events": ["*"],
                                                          "api_version": "2024-06-20"})
    fake.endpoint_secret(endpoint.id); fake.endpoint_deliveries; render_in_version(obj, "2024-06-20")

Command line::

    python tools/fake_stripe.py --port 12111 --api-key sk_test_demo --webhook-secret whsec_demo \\
        --webhook-url http://127.0.0.1:8000/stripe/webhook
"""

from __future__ import annotations

import argparse
import base64
import binascii
import copy
import hashlib
import hmac
import html
import json
import logging
import random
import re
import secrets
import string
import sys
import threading
import time
from http.client import HTTPConnection, HTTPSConnection
from http.server import BaseHTTPRequestHandler
from urllib.parse import parse_qsl, urlsplit

try:
    from tools.standin_http import ServedStandIn, TrackingHTTPServer, serve_until_stopped
except ImportError:  # run as a file (python tools/<stand-in>.py): tools/ itself is on the path
    from standin_http import ServedStandIn, TrackingHTTPServer, serve_until_stopped

log = logging.getLogger("tools.fake_stripe")

API_VERSION = "2026-10-28.endive"
PERIOD_SECONDS = 30 * 24 * 3600  # "one month" for the stand-in
SESSION_TTL = 24 * 3600
IDEMPOTENCY_TTL = 24 * 3600
RETRY_AFTER = 3 * 24 * 3600  # next_payment_attempt of a failed invoice
MAX_BODY = 1024 * 1024
DELIVERY_TIMEOUT = 10
WEBHOOK_USER_AGENT = "Stripe/1.0 (+https://stripe.com/docs/webhooks)"
DOC_URL = "https://stripe.com/docs/error-codes/"
ALNUM = string.ascii_letters + string.digits

# Which store an id belongs to, by prefix (for expand and for GET /v1/events/{id}).
_PREFIXES = {"cus_": "customers", "prod_": "products", "price_": "prices", "cs_": "checkout_sessions",
             "sub_": "subscriptions", "in_": "invoices", "evt_": "events", "ch_": "charges",
             "pi_": "payment_intents", "inpay_": "invoice_payments", "re_": "refunds", "du_": "disputes",
             "we_": "webhook_endpoints", "bpc_": "portal_configurations", "bps_": "portal_sessions"}

# Parameters each endpoint takes at Stripe (from stripe-python 16.1.0's *Params), and which of them the
# stand-in models or may safely ignore. Anything else is parameter_unknown; known-but-unmodelled is refused.
_KNOWN = {
    "customer_create": {"address", "balance", "business_name", "cash_balance", "description", "email", "expand",
                        "individual_name", "invoice_prefix", "invoice_settings", "metadata", "name",
                        "next_invoice_sequence", "payment_method", "phone", "preferred_locales", "shipping",
                        "source", "tax", "tax_exempt", "tax_id_data", "test_clock", "validate"},
    "customer_update": {"address", "balance", "business_name", "cash_balance", "default_source", "description",
                        "email", "expand", "individual_name", "invoice_prefix", "invoice_settings", "metadata",
                        "name", "next_invoice_sequence", "phone", "preferred_locales", "shipping", "source", "tax",
                        "tax_exempt", "validate"},
    "customer_list": {"created", "email", "ending_before", "expand", "limit", "starting_after", "test_clock"},
    "product_create": {"active", "default_price_data", "description", "expand", "id", "images",
                       "marketing_features", "metadata", "name", "package_dimensions", "shippable",
                       "statement_descriptor", "tax_code", "tax_details", "type", "unit_label", "url"},
    "product_update": {"active", "default_price", "description", "expand", "images", "marketing_features",
                       "metadata", "name", "package_dimensions", "shippable", "statement_descriptor", "tax_code",
                       "tax_details", "unit_label", "url"},
    "product_list": {"active", "created", "ending_before", "expand", "ids", "limit", "shippable",
                     "starting_after", "type", "url"},
    "price_create": {"active", "billing_scheme", "currency", "currency_options", "custom_unit_amount", "expand",
                     "lookup_key", "metadata", "nickname", "product", "product_data", "recurring", "tax_behavior",
                     "tiers", "tiers_mode", "transfer_lookup_key", "transform_quantity", "unit_amount",
                     "unit_amount_decimal"},
    "price_update": {"active", "currency_options", "expand", "lookup_key", "metadata", "nickname", "tax_behavior",
                     "transfer_lookup_key"},
    "price_list": {"active", "created", "currency", "ending_before", "expand", "limit", "lookup_keys", "product",
                   "recurring", "starting_after", "type"},
    "session_create": {"adaptive_pricing", "after_expiration", "allow_promotion_codes",
                       "allowed_payment_method_types", "automatic_tax", "billing_address_collection",
                       "branding_settings", "cancel_url", "client_reference_id", "consent_collection", "currency",
                       "custom_fields", "custom_text", "customer", "customer_account", "customer_creation",
                       "customer_email", "customer_update", "discounts", "excluded_payment_method_types", "expand",
                       "expires_at", "integration_identifier", "invoice_creation", "line_items", "locale",
                       "managed_payments", "metadata", "mode", "name_collection", "optional_items",
                       "origin_context", "payment_intent_data", "payment_method_collection",
                       "payment_method_configuration", "payment_method_data", "payment_method_options",
                       "permissions", "phone_number_collection", "redirect_on_completion", "return_url",
                       "saved_payment_method_options", "setup_intent_data", "shipping_address_collection",
                       "shipping_options", "submit_type", "subscription_data", "success_url", "tax_id_collection",
                       "ui_mode", "wallet_options"},
    "subscription_update": {"add_invoice_items", "application_fee_percent", "automatic_tax", "billing_cycle_anchor",
                            "billing_schedules", "billing_thresholds", "cancel_at", "cancel_at_period_end",
                            "cancellation_details", "collection_method", "days_until_due",
                            "default_payment_method", "default_source", "default_tax_rates", "description",
                            "discounts", "expand", "invoice_settings", "items", "metadata", "off_session",
                            "on_behalf_of", "pause_collection", "payment_behavior", "payment_settings",
                            "pending_invoice_item_interval", "proration_behavior", "proration_date",
                            "transfer_data", "trial_end", "trial_from_plan", "trial_settings"},
    "subscription_cancel": {"cancellation_details", "expand", "invoice_now", "prorate"},
    "subscription_list": {"automatic_tax", "collection_method", "created", "current_period_end",
                          "current_period_start", "customer", "customer_account", "ending_before", "expand", "limit",
                          "plan", "price", "starting_after", "status", "test_clock"},
    "invoice_list": {"collection_method", "created", "customer", "customer_account", "due_date", "ending_before",
                     "expand", "limit", "starting_after", "status", "subscription"},
    "portal_create": {"configuration", "customer", "customer_account", "expand", "flow_data", "locale",
                      "on_behalf_of", "return_url"},
    "event_list": {"created", "delivery_success", "ending_before", "expand", "limit", "starting_after", "type",
                   "types"},
    "charge_list": {"created", "customer", "ending_before", "expand", "limit", "payment_intent", "starting_after",
                    "transfer_group"},
    "payment_intent_retrieve": {"client_secret", "expand"},
    "invoice_payment_list": {"created", "ending_before", "expand", "invoice", "limit", "payment", "starting_after",
                             "status"},
    "refund_create": {"amount", "charge", "currency", "customer", "expand", "instructions_email", "metadata",
                      "origin", "payment_intent", "reason", "refund_application_fee", "reverse_transfer"},
    "refund_list": {"charge", "created", "ending_before", "expand", "limit", "payment_intent", "starting_after"},
    "dispute_list": {"charge", "created", "ending_before", "expand", "limit", "payment_intent", "starting_after"},
    "dispute_close": {"expand"},
    "subscription_resume": {"billing_cycle_anchor", "expand", "payment_behavior", "proration_behavior",
                            "proration_date"},
    "webhook_endpoint_create": {"api_version", "connect", "description", "enabled_events", "expand", "metadata",
                                "url"},
    "webhook_endpoint_update": {"description", "disabled", "enabled_events", "expand", "metadata", "url"},
    "webhook_endpoint_list": {"ending_before", "expand", "limit", "starting_after"},
    "portal_config_create": {"business_profile", "default_return_url", "expand", "features", "login_page",
                             "metadata", "name"},
    "portal_config_update": {"active", "business_profile", "default_return_url", "expand", "features",
                             "login_page", "metadata", "name"},
    "portal_config_list": {"active", "ending_before", "expand", "is_default", "limit", "starting_after"},
    "retrieve": {"expand"},
    "delete": set(),
}
_MODELLED = {
    "customer_create": {"email", "name", "description", "phone", "metadata", "expand", "preferred_locales",
                        "invoice_prefix", "validate"},
    "customer_update": {"email", "name", "description", "phone", "metadata", "expand", "preferred_locales",
                        "validate"},
    "customer_list": {"email", "limit", "starting_after", "ending_before", "expand"},
    "product_create": {"id", "name", "active", "description", "metadata", "expand", "type", "unit_label",
                       "statement_descriptor", "url", "images"},
    "product_update": {"name", "active", "description", "metadata", "expand", "unit_label",
                       "statement_descriptor", "url", "images"},
    "product_list": {"active", "ids", "limit", "starting_after", "ending_before", "expand"},
    "price_create": {"product", "product_data", "unit_amount", "currency", "recurring", "lookup_key",
                     "transfer_lookup_key", "nickname", "metadata", "active", "expand", "tax_behavior",
                     "billing_scheme"},
    "price_update": {"active", "lookup_key", "transfer_lookup_key", "nickname", "metadata", "expand",
                     "tax_behavior"},
    "price_list": {"active", "lookup_keys", "product", "currency", "type", "limit", "starting_after",
                   "ending_before", "expand"},
    "session_create": {"mode", "line_items", "success_url", "cancel_url", "client_reference_id", "customer",
                       "customer_email", "subscription_data", "metadata", "locale", "allow_promotion_codes",
                       "expand", "billing_address_collection", "automatic_tax", "customer_update",
                       "payment_method_types", "ui_mode", "submit_type", "consent_collection",
                       "tax_id_collection", "phone_number_collection", "custom_text", "payment_method_collection",
                       "expires_at"},
    "subscription_update": {"cancel_at_period_end", "metadata", "description", "cancellation_details", "expand",
                            "proration_behavior"},
    "subscription_cancel": {"cancellation_details", "expand", "invoice_now", "prorate"},
    "subscription_list": {"customer", "status", "price", "limit", "starting_after", "ending_before", "expand"},
    "invoice_list": {"customer", "subscription", "status", "limit", "starting_after", "ending_before", "expand"},
    "portal_create": {"customer", "return_url", "locale", "configuration", "expand"},
    "event_list": {"type", "types", "limit", "starting_after", "ending_before", "expand"},
    "charge_list": {"customer", "payment_intent", "limit", "starting_after", "ending_before", "expand"},
    "payment_intent_retrieve": {"client_secret", "expand"},
    "invoice_payment_list": {"invoice", "payment", "status", "limit", "starting_after", "ending_before", "expand"},
    "refund_create": {"amount", "charge", "payment_intent", "reason", "metadata", "expand"},
    "refund_list": {"charge", "payment_intent", "limit", "starting_after", "ending_before", "expand"},
    "dispute_list": {"charge", "payment_intent", "limit", "starting_after", "ending_before", "expand"},
    "dispute_close": {"expand"},
    "subscription_resume": {"billing_cycle_anchor", "payment_behavior", "proration_behavior", "expand"},
    "webhook_endpoint_create": _KNOWN["webhook_endpoint_create"],
    "webhook_endpoint_update": _KNOWN["webhook_endpoint_update"],
    "webhook_endpoint_list": _KNOWN["webhook_endpoint_list"],
    "portal_config_create": _KNOWN["portal_config_create"],
    "portal_config_update": _KNOWN["portal_config_update"],
    "portal_config_list": _KNOWN["portal_config_list"],
    "retrieve": {"expand"},
    "delete": set(),
}
_SUBSCRIPTION_DATA_MODELLED = {"metadata", "description"}

CANCELLATION_REASONS = ("customer_service", "low_quality", "missing_features", "other", "switched_service",
                        "too_complex", "too_expensive", "unused")
REFUND_REASONS = ("duplicate", "fraudulent", "requested_by_customer")
DISPUTE_REASONS = ("bank_cannot_process", "check_returned", "credit_not_processed", "customer_initiated",
                   "debit_not_authorized", "duplicate", "fraudulent", "general", "incorrect_account_details",
                   "insufficient_funds", "noncompliant", "product_not_received", "product_unacceptable",
                   "subscription_canceled", "unrecognized")
DISPUTE_RESPONSE_SECONDS = 7 * 24 * 3600  # evidence_details.due_by of a new dispute
# Visa's reason code for some dispute reasons (payment_method_details.card.network_reason_code).
_NETWORK_REASON_CODES = {"fraudulent": "10.4", "duplicate": "12.6.1", "subscription_canceled": "13.2",
                         "product_not_received": "13.1", "product_unacceptable": "13.3",
                         "credit_not_processed": "13.6", "general": "13.7"}
_EVIDENCE_FIELDS = ("access_activity_log", "appeal", "billing_address", "cancellation_policy",
                    "cancellation_policy_disclosure", "cancellation_rebuttal", "customer_communication",
                    "customer_email_address", "customer_name", "customer_purchase_ip", "customer_signature",
                    "duplicate_charge_documentation", "duplicate_charge_explanation", "duplicate_charge_id",
                    "enhanced_evidence", "product_description", "receipt", "refund_policy", "refund_policy_disclosure",
                    "refund_refusal_explanation", "service_date", "service_documentation", "shipping_address",
                    "shipping_carrier", "shipping_date", "shipping_documentation", "shipping_tracking_number",
                    "uncategorized_file", "uncategorized_text")


# ----- API versions ------------------------------------------------------------------------------------

# The versions the stand-in renders: every one stripe-python 16.1.0 lists from 2024-06-20 on (its
# WebhookEndpointCreateParams), but 2025-03-01.dashboard. Objects are kept in the pinned shape; _VERSION_CHANGES
# turns them into an older one.
KNOWN_API_VERSIONS = (
    "2024-06-20", "2024-09-30.acacia", "2024-10-28.acacia", "2024-11-20.acacia", "2024-12-18.acacia",
    "2025-01-27.acacia", "2025-02-24.acacia", "2025-03-31.basil", "2025-04-30.basil", "2025-05-28.basil",
    "2025-06-30.basil", "2025-07-30.basil", "2025-08-27.basil", "2025-09-30.clover", "2025-10-29.clover",
    "2025-11-17.clover", "2025-12-15.clover", "2026-01-28.clover", "2026-02-25.clover", "2026-03-25.dahlia",
    "2026-04-22.dahlia", "2026-05-27.dahlia", "2026-06-24.dahlia", "2026-07-29.dahlia", "2026-08-26.dahlia",
    "2026-09-30.endive", API_VERSION)
BASIL = "2025-03-31.basil"
OLD_SHAPE = "2024-06-20"


def version_shape(version: str | None) -> str | None:
    """The row of the version table a version is rendered with: OLD_SHAPE, BASIL, or None (the pinned shape).

    Any version before 2025-03-31 (2024-06-20 and the acacia ones) gets the 2024-06-20 shape, any basil one
    the 2025-03-31.basil shape, and clover, dahlia and endive ones the pinned shape; a version the stand-in
    does not know (see KNOWN_API_VERSIONS) is rendered in the pinned shape too.
    """
    if version not in KNOWN_API_VERSIONS:
        return None
    if version.split(".")[0] < BASIL.split(".")[0]:
        return OLD_SHAPE
    if version.endswith(".basil"):
        return BASIL
    return None


def _parent_details(obj: dict, parent: str, detail: str) -> dict:
    return ((obj.get(parent) or {}).get(detail)) or {}


def _sub_details(name: str):
    return lambda o, lookup: _parent_details(o, "parent", "subscription_details").get(name)


def _item_details(name: str):
    return lambda o, lookup: _parent_details(o, "parent", "subscription_item_details").get(name)


def _paid_link(relation: str):
    """An invoice's charge or PaymentIntent (only once it is paid: the stand-in makes them at payment)."""
    return lambda o, lookup: lookup(relation, o["id"]) if o.get("status") == "paid" else None


def _line_price(line: dict, lookup) -> dict | None:
    price_id = _parent_details(line, "pricing", "price_details").get("price")
    price = lookup("price", price_id) if price_id else None
    return copy.deepcopy(price) if price else None


def _line_plan(line: dict, lookup) -> dict | None:
    price = _line_price(line, lookup)
    return FakeStripe._plan(price) if price and price.get("recurring") else None


def _first_item(name: str):
    return lambda o, lookup: (((o.get("items") or {}).get("data") or [{}])[0]).get(name)


# How older API versions differ from the pinned one, per object type (its `object` value): the fields the
# older version lacks ("drop") and the fields only it has ("add", each filled by a constant or by a function
# of the pinned object and a lookup(relation, id) for what the object does not hold itself: the "charge" and
# "payment_intent" of an invoice, the "invoice" of a charge or PaymentIntent, a "price" by id). Found by
# diffing the typed classes of stripe-python 10.12.0 (2024-06-20), 12.0.0 (2025-03-31.basil) and 16.1.0, with
# the moves of the 2025-03-31.basil changelog ("Invoicing resources now specify how they were generated",
# "Adds subscription item-level billing periods", "Removes the charge and payment_intent from Invoice").
_VERSION_CHANGES: dict[str, dict[str, dict]] = {
    OLD_SHAPE: {
        "invoice": {
            "drop": ("amount_overpaid", "amount_paid_off_stripe", "confirmation_secret", "customer_account",
                     "parent", "payments", "status_details", "total_pretax_credit_amounts", "total_taxes"),
            "add": {"application_fee_amount": None, "charge": _paid_link("charge"), "discount": None,
                    "paid": lambda o, lookup: o.get("status") == "paid", "paid_out_of_band": False,
                    "payment_intent": _paid_link("payment_intent"),
                    "quote": lambda o, lookup: _parent_details(o, "parent", "quote_details").get("quote"),
                    "subscription": _sub_details("subscription"),
                    "subscription_details": lambda o, lookup: (
                        {"metadata": copy.deepcopy(_sub_details("metadata")(o, lookup) or {})}
                        if _parent_details(o, "parent", "subscription_details") else None),
                    "subscription_proration_date": _sub_details("subscription_proration_date"),
                    "tax": None, "total_tax_amounts": [], "transfer_data": None}},
        "subscription": {
            "drop": ("billing_mode", "billing_schedules", "customer_account", "managed_payments",
                     "presentment_details", "status_details"),
            "add": {"current_period_end": _first_item("current_period_end"),
                    "current_period_start": _first_item("current_period_start"), "discount": None}},
        "subscription_item": {
            "drop": ("billed_until", "current_period_end", "current_period_start", "current_trial"),
            "add": {}},
        "line_item": {
            "drop": ("parent", "pretax_credit_amounts", "pricing", "quantity_decimal", "subtotal", "taxes"),
            "add": {"amount_excluding_tax": lambda o, lookup: o.get("amount"),
                    "invoice_item": _item_details("invoice_item"), "plan": _line_plan, "price": _line_price,
                    "proration": lambda o, lookup: bool(_item_details("proration")(o, lookup)),
                    "proration_details": lambda o, lookup: copy.deepcopy(
                        _item_details("proration_details")(o, lookup) or {"credited_items": None}),
                    "subscription": lambda o, lookup: o.get("subscription") or _item_details("subscription")(
                        o, lookup),
                    "subscription_item": _item_details("subscription_item"), "tax_amounts": [], "tax_rates": [],
                    "type": lambda o, lookup: "subscription" if _item_details("subscription")(o, lookup)
                    else "invoiceitem",
                    "unit_amount_excluding_tax": lambda o, lookup: (o.get("pricing") or {}).get(
                        "unit_amount_decimal")}},
        "charge": {"drop": ("presentment_details",),
                   "add": {"invoice": lambda o, lookup: lookup("invoice", o["id"])}},
        "payment_intent": {
            "drop": ("allowed_payment_method_types", "customer_account", "excluded_payment_method_types", "hooks",
                     "managed_payments", "payment_details", "payment_record", "presentment_details"),
            "add": {"invoice": lambda o, lookup: lookup("invoice", o["id"])}},
        "refund": {"drop": ("customer", "customer_account", "payment_method", "pending_reason",
                            "presentment_details"), "add": {}},
        "dispute": {"drop": ("enhanced_eligibility_types", "intended_submission_method"), "add": {}},
        "checkout.session": {
            "drop": ("adaptive_pricing", "allowed_payment_method_types", "branding_settings",
                     "collected_information", "customer_account", "discounts", "excluded_payment_method_types",
                     "integration_identifier", "managed_payments", "name_collection", "optional_items",
                     "origin_context", "permissions", "presentment_details", "wallet_options"),
            "add": {"shipping_details": lambda o, lookup: copy.deepcopy(
                (o.get("collected_information") or {}).get("shipping_details"))}},
        "customer": {"drop": ("business_name", "customer_account", "individual_name"), "add": {}},
        "product": {"drop": ("tax_details",), "add": {}},
        "plan": {"drop": (), "add": {"aggregate_usage": None}},
        "billing_portal.session": {"drop": ("after_expiration", "customer_account"), "add": {}},
        "billing_portal.configuration": {"drop": ("name",), "add": {}},
        "event": {"drop": ("context",), "add": {}},
    },
    BASIL: {
        "invoice": {"drop": ("amount_paid_off_stripe", "customer_account", "status_details"), "add": {}},
        "subscription": {"drop": ("billing_mode", "billing_schedules", "billing_thresholds", "customer_account",
                                  "managed_payments", "presentment_details", "status_details"), "add": {}},
        "subscription_item": {"drop": ("billed_until", "billing_thresholds", "current_trial"), "add": {}},
        "line_item": {"drop": ("quantity_decimal", "subtotal"), "add": {}},
        "payment_intent": {"drop": ("allowed_payment_method_types", "customer_account", "excluded_payment_method_types",
                                    "hooks", "managed_payments", "payment_details", "payment_record"), "add": {}},
        "refund": {"drop": ("customer", "customer_account", "payment_method", "pending_reason"), "add": {}},
        "dispute": {"drop": ("intended_submission_method",), "add": {}},
        "checkout.session": {
            "drop": ("allowed_payment_method_types", "branding_settings", "customer_account",
                     "excluded_payment_method_types", "integration_identifier", "managed_payments",
                     "name_collection", "origin_context", "wallet_options"), "add": {}},
        "customer": {"drop": ("business_name", "customer_account", "individual_name"), "add": {}},
        "product": {"drop": ("tax_details",), "add": {}},
        "billing_portal.session": {"drop": ("after_expiration", "customer_account"), "add": {}},
        "billing_portal.configuration": {"drop": ("name",), "add": {}},
        "event": {"drop": ("context",), "add": {}},
    },
}


def _no_lookup(relation: str, object_id: str):
    return None


def render_in_version(obj, version: str, lookup=None):
    """An object kept in the pinned shape (and everything nested in it) as API version `version` shows it.

    Objects of the types in the version table lose the fields the older version lacks and gain the ones only
    it has; others are copied. An event gets ``api_version`` = version, its ``data.object`` rendered, and its
    ``previous_attributes`` recomputed in that version (the rendered fields that differ between the object
    before and after: before basil, an advanced period shows as the subscription's ``current_period_*``).
    ``lookup(relation, id)`` answers what an object does not hold itself (see _VERSION_CHANGES); without it
    those fields are null. A version outside KNOWN_API_VERSIONS, or a clover, dahlia or endive one, leaves the
    fields as they are.
    """
    return _render_node(obj, version, version_shape(version), lookup or _no_lookup, True)


def _render_node(node, version: str, shape: str | None, lookup, events: bool):
    if isinstance(node, list):
        return [_render_node(value, version, shape, lookup, events) for value in node]
    if not isinstance(node, dict):
        return copy.deepcopy(node)
    kind = node.get("object")
    if kind == "event" and isinstance(node.get("data"), dict):
        if not events:  # an event keeps the version it was made in (GET /v1/events answers that)
            return copy.deepcopy(node)
        return _render_event(node, version, shape, lookup)
    out = {key: _render_node(value, version, shape, lookup, events) for key, value in node.items()}
    return _apply_changes(out, node, version, shape, lookup)


def _apply_changes(out: dict, original: dict, version: str, shape: str | None, lookup) -> dict:
    changes = _VERSION_CHANGES.get(shape or "", {}).get(original.get("object"))
    if not changes:
        return out
    added = {name: _render_node(fill(original, lookup) if callable(fill) else fill, version, shape, lookup, True)
             for name, fill in changes["add"].items()}
    out = {key: value for key, value in out.items() if key not in changes["drop"]}
    out.update(added)
    head = [key for key in ("id", "object") if key in out]
    return {key: out[key] for key in head + sorted(k for k in out if k not in head)}


def _render_event(event: dict, version: str, shape: str | None, lookup) -> dict:
    data = event["data"]
    current = data.get("object")
    rendered = {"object": _render_node(current, version, shape, lookup, True)}
    if "previous_attributes" in data:
        previous = data["previous_attributes"] or {}
        if shape is None or not isinstance(current, dict):
            rendered["previous_attributes"] = copy.deepcopy(previous)
        else:
            before = _render_node({**current, **previous}, version, shape, lookup, True)
            now = rendered["object"]
            rendered["previous_attributes"] = {key: value for key, value in before.items()
                                               if key not in now or now[key] != value}
    out = {key: (rendered if key == "data" else copy.deepcopy(value)) for key, value in event.items()}
    out["api_version"] = version
    return _apply_changes(out, event, version, shape, lookup) if shape else out


# ----- event types ---------------------------------------------------------------------------------------

# Every event type a webhook endpoint may subscribe to (stripe-python 16.1.0's WebhookEndpointCreateParams),
# grouped by what comes before the first dot.
_EVENT_TYPE_GROUPS = """
account: application.authorized application.deauthorized external_account.created external_account.deleted
    external_account.updated updated
application_fee: created refund.updated refunded
apps: install.created install.deleted install.updated
balance: available
balance_settings: updated
billing: alert.triggered credit_balance_transaction.created credit_grant.created credit_grant.updated meter.created
    meter.deactivated meter.reactivated meter.updated
billing_portal: configuration.created configuration.updated session.created
capability: updated
cash_balance: funds_available
charge: captured dispute.closed dispute.created dispute.funds_reinstated dispute.funds_withdrawn dispute.updated
    expired failed pending refund.updated refunded succeeded updated
checkout: session.async_payment_failed session.async_payment_succeeded session.completed session.expired
climate: order.canceled order.created order.delayed order.delivered order.product_substituted product.created
    product.pricing_updated
coupon: created deleted updated
credit_note: created updated voided
customer: created deleted discount.created discount.deleted discount.updated source.created source.deleted
    source.expiring source.updated subscription.created subscription.deleted subscription.paused
    subscription.pending_update_applied subscription.pending_update_expired subscription.resumed
    subscription.trial_will_end subscription.updated tax_id.created tax_id.deleted tax_id.updated updated
customer_cash_balance_transaction: created
entitlements: active_entitlement_summary.updated
file: created
financial_connections: account.account_numbers_updated account.created account.deactivated account.disconnected
    account.expected_deactivation_date_updated account.reactivated account.refreshed_balance
    account.refreshed_ownership account.refreshed_transactions account.supported_payment_method_types_updated
    account.upcoming_account_number_expiry account.upcoming_deactivation
    authorization.expected_deactivation_date_updated authorization.upcoming_deactivation
identity: verification_session.canceled verification_session.created verification_session.processing
    verification_session.redacted verification_session.requires_input verification_session.verified
invoice: created deleted finalization_failed finalized marked_uncollectible overdue overpaid paid
    payment_action_required payment_attempt_required payment_failed payment_succeeded sent upcoming updated voided
    will_be_due
invoice_payment: paid
invoiceitem: created deleted
issuing_authorization: created request updated
issuing_card: created updated
issuing_cardholder: created updated
issuing_dispute: closed created funds_reinstated funds_rescinded submitted updated
issuing_personalization_design: activated deactivated rejected updated
issuing_token: created updated
issuing_transaction: created purchase_details_receipt_updated updated
mandate: updated
payment_intent: amount_capturable_updated canceled created partially_funded payment_failed processing
    requires_action succeeded
payment_link: created updated
payment_method: attached automatically_updated detached updated
payout: canceled created failed paid reconciliation_completed updated
person: created deleted updated
plan: created deleted updated
price: created deleted updated
product: created deleted updated
promotion_code: created updated
quote: accepted canceled created finalized
radar: early_fraud_warning.created early_fraud_warning.updated
refund: created failed updated
reporting: report_run.failed report_run.succeeded report_type.updated
reserve: hold.created hold.updated plan.created plan.disabled plan.expired plan.updated release.created
review: closed opened
setup_intent: canceled created requires_action setup_failed succeeded
sigma: scheduled_query_run.created
source: canceled chargeable failed mandate_notification refund_attributes_required transaction.created
    transaction.updated
subscription_schedule: aborted canceled completed created expiring released updated
tax: settings.updated
tax_rate: created updated
terminal: reader.action_failed reader.action_succeeded reader.action_updated
test_helpers: test_clock.advancing test_clock.created test_clock.deleted test_clock.internal_failure
    test_clock.ready
three_d_secure: authentication.canceled authentication.challenge_started authentication.errored
    authentication.failed authentication.requires_challenge authentication.requires_submission
    authentication.succeeded
topup: canceled created failed reversed succeeded
transfer: created reversed updated
treasury: credit_reversal.created credit_reversal.posted debit_reversal.completed debit_reversal.created
    debit_reversal.initial_credit_granted financial_account.closed financial_account.created
    financial_account.features_status_updated inbound_transfer.canceled inbound_transfer.created
    inbound_transfer.failed inbound_transfer.succeeded outbound_payment.canceled outbound_payment.created
    outbound_payment.expected_arrival_date_updated outbound_payment.failed outbound_payment.posted
    outbound_payment.returned outbound_payment.tracking_details_updated outbound_transfer.canceled
    outbound_transfer.created outbound_transfer.expected_arrival_date_updated outbound_transfer.failed
    outbound_transfer.posted outbound_transfer.returned outbound_transfer.tracking_details_updated
    received_credit.created received_credit.failed received_credit.succeeded received_debit.created
"""


def _parse_event_types(text: str) -> tuple[str, ...]:
    found, head = [], ""
    for line in text.splitlines():
        if not line.strip():
            continue
        if not line.startswith(" "):
            head, _, line = line.partition(":")
        found += [f"{head}.{tail}" for tail in line.split()]
    return tuple(sorted(found))


EVENT_TYPES = _parse_event_types(_EVENT_TYPE_GROUPS)


def new_id(prefix: str, length: int = 24) -> str:
    """A Stripe-looking id: the prefix and random letters and digits (e.g. ``sub_1Q...``)."""
    head = "1" if length >= 20 else ""
    return prefix + head + "".join(secrets.choice(ALNUM) for _ in range(length - len(head)))


def parse_form(pairs) -> dict:
    """Turn form pairs with bracketed keys (``a[b][0][c]=v``, ``k[]=v``) into nested dicts and lists."""
    root: dict = {}
    for key, value in pairs:
        match = re.fullmatch(r"([^\[\]]+)((?:\[[^\[\]]*\])*)", key)
        if match is None:
            raise StripeError(400, f"Invalid parameter name: {key}", code="parameter_unknown", param=key)
        parts = [match.group(1), *re.findall(r"\[([^\[\]]*)\]", match.group(2))]
        node = root
        for i, part in enumerate(parts):
            if part == "":
                part = str(len(node))
            if i == len(parts) - 1:
                node[part] = value
            else:
                child = node.get(part)
                if not isinstance(child, dict):
                    child = node[part] = {}
                node = child
    return _listify(root)


def _listify(node, key=None):
    if not isinstance(node, dict):
        return node
    out = {k: _listify(v, k) for k, v in node.items()}
    if key != "metadata" and out and all(k.isdigit() for k in out):
        return [out[k] for k in sorted(out, key=int)]
    return out


def _encode(event: dict) -> bytes:
    return json.dumps(event, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


def signature_header(payload: bytes, secret: str, timestamp: int) -> str:
    """The ``Stripe-Signature`` value for a payload: ``t=<timestamp>,v1=<hex HMAC-SHA256 of "t.payload">``."""
    signed = f"{int(timestamp)}.".encode() + payload
    digest = hmac.new(secret.encode("utf-8"), signed, hashlib.sha256).hexdigest()
    return f"t={int(timestamp)},v1={digest}"


def mask_key(key: str) -> str:
    """An API key as Stripe prints it in errors: the prefix, asterisks, the last four characters."""
    match = re.match(r"^((?:sk|rk|pk)_(?:test|live)_)", key)
    prefix = match.group(1) if match else ""
    rest = key[len(prefix):]
    if len(rest) <= 4:
        return prefix + "*" * len(rest)
    return prefix + "*" * (len(rest) - 4) + rest[-4:]


def format_amount(amount: int, currency: str) -> str:
    """``500, "usd"`` -> ``"USD 5.00"``."""
    return f"{currency.upper()} {amount / 100:.2f}"


def format_recurring(recurring: dict | None) -> str:
    """``{"interval": "month", "interval_count": 1}`` -> ``"per month"``."""
    if not recurring:
        return "once"
    count = int(recurring.get("interval_count") or 1)
    interval = recurring["interval"]
    return f"per {interval}" if count == 1 else f"every {count} {interval}s"


class StripeError(Exception):
    """An API error, answered as Stripe's ``{"error": {...}}`` body."""

    def __init__(self, status: int, message: str, code: str | None = None, param: str | None = None,
                 type_: str = "invalid_request_error", details: bool = True, headers: dict | None = None):
        super().__init__(message)
        self.status = status
        self.message = message
        self.code = code
        self.param = param
        self.type = type_
        self.details = details  # False: only message and type, as Stripe's 401 and unknown-URL errors
        self.headers = headers or {}

    def body(self, request_id: str, now: int) -> dict:
        """The JSON body Stripe would send."""
        if not self.details:
            return {"error": {"message": self.message, "type": self.type}}
        error = {}
        if self.code:
            error["code"] = self.code
            error["doc_url"] = DOC_URL + self.code.replace("_", "-")
        error["message"] = self.message
        if self.param:
            error["param"] = self.param
        error["request_log_url"] = f"https://dashboard.stripe.com/test/logs/{request_id}?t={now}"
        error["type"] = self.type
        return {"error": error}


def _missing(param: str) -> StripeError:
    return StripeError(400, f"Missing required param: {param}.", code="parameter_missing", param=param)


def _no_such(kind: str, value, param: str = "id", status: int = 404) -> StripeError:
    return StripeError(status, f"No such {kind}: '{value}'", code="resource_missing", param=param)


def _bool(value, param: str) -> bool:
    if isinstance(value, bool):
        return value
    if value in ("true", "True", "1"):
        return True
    if value in ("false", "False", "0"):
        return False
    raise StripeError(400, f"Invalid boolean: {value}", param=param)


def _int(value, param: str) -> int:
    try:
        return int(value)
    except (TypeError, ValueError):
        raise StripeError(400, f"Invalid integer: {value}", code="parameter_invalid_integer", param=param) from None


def _str(value, param: str) -> str:
    if not isinstance(value, str):
        raise StripeError(400, f"Invalid string: {value!r}", param=param)
    return value


def _one_of(values) -> str:
    """Stripe's way of listing allowed values: ``a, b, or c`` (``a or b`` for two)."""
    values = list(values)
    if len(values) <= 2:
        return " or ".join(values)
    return ", ".join(values[:-1]) + ", or " + values[-1]


def _enum(value, allowed, param: str) -> str:
    if value not in allowed:
        raise StripeError(400, f"Invalid {param}: must be one of {_one_of(allowed)}", param=param)
    return value


def _url(value, param: str) -> str:
    if not isinstance(value, str) or not re.match(r"^https?://[^\s/]+", value):
        raise StripeError(400, "Not a valid URL", code="url_invalid", param=param)
    return value


def _money(amount: int, currency: str) -> str:
    """An amount as Stripe writes it in refund errors: ``$5.00`` (``5.00 SEK`` for currencies without a sign)."""
    sign = {"usd": "$", "eur": "€", "gbp": "£"}.get(currency)
    return f"{sign}{amount / 100:.2f}" if sign else f"{amount / 100:.2f} {currency.upper()}"


def _object(value, param: str, keys) -> dict:
    """A nested parameter that must be an object with only the given keys (others: parameter_unknown)."""
    if not isinstance(value, dict):
        raise StripeError(400, "Invalid object", param=param)
    for key in value:
        if key not in keys:
            raise StripeError(400, f"Received unknown parameter: {param}[{key}]", code="parameter_unknown",
                              param=f"{param}[{key}]")
    return value


def _enum_list(value, param: str, allowed) -> list[str]:
    """A list parameter of enum values; an empty string empties it."""
    if value == "":
        return []
    if not isinstance(value, list):
        raise StripeError(400, "Invalid array", param=param)
    for i, item in enumerate(value):
        _enum(item, allowed, f"{param}[{i}]")
    return list(value)


def _default_portal_features() -> dict:
    """A portal configuration's features as Stripe fills in what a create request leaves out."""
    return {"customer_update": {"allowed_updates": [], "enabled": False},
            "invoice_history": {"enabled": False},
            "payment_method_update": {"enabled": False, "payment_method_configuration": None},
            "subscription_cancel": {"cancellation_reason": {"enabled": False, "feedback_options": None, "options": []},
                                    "enabled": False,
                                    "mode": "at_period_end", "proration_behavior": "none"},
            "subscription_pause": {"duration": {"interval_options": [{"interval": "month", "interval_count": 1}],
                                                "type": "interval_options"}, "enabled": False},
            "subscription_update": {"billing_cycle_anchor": None, "default_allowed_updates": [], "enabled": False,
                                    "products": None, "proration_behavior": "none",
                                    "schedule_at_period_end": {"conditions": []},
                                    "trial_update_behavior": "end_trial"}}


def _metadata(current: dict, value, param: str = "metadata") -> dict:
    """Stripe's metadata update: keys merge, an empty value deletes a key, an empty string clears it all."""
    if value == "":
        return {}
    if not isinstance(value, dict):
        raise StripeError(400, "Invalid object", param=param)
    out = dict(current)
    for k, v in value.items():
        if not isinstance(v, str):
            raise StripeError(400, "Invalid string", param=f"{param}[{k}]")
        if v == "":
            out.pop(k, None)
        else:
            out[k] = v
    return out


def _check_params(params: dict, kind: str) -> None:
    for name in params:
        if name not in _KNOWN[kind]:
            raise StripeError(400, f"Received unknown parameter: {name}", code="parameter_unknown", param=name)
        if name not in _MODELLED[kind]:
            raise StripeError(400, f"The Stripe stand-in does not model the parameter {name!r} on this endpoint.",
                              param=name)


def _expand_list(params: dict) -> list[str]:
    value = params.get("expand", [])
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list):
        raise StripeError(400, "Invalid array", param="expand")
    return [v for v in value if isinstance(v, str) and v]


def _card_details(amount: int) -> dict:
    """``payment_method_details.card`` of a stand-in charge: the test card 4242 4242 4242 4242 (Visa)."""
    return {"amount_authorized": amount, "authorization_code": None, "brand": "visa", "capture_before": None,
            "checks": {"address_line1_check": None, "address_postal_code_check": None, "cvc_check": "pass"},
            "country": "US", "description": None, "electronic_commerce_indicator": None, "exp_month": 12,
            "exp_year": 2034, "extended_authorization": {"status": "disabled"}, "fingerprint": "StandIn4242Visa0",
            "funding": "credit", "iin": None, "incremental_authorization": {"status": "unavailable"},
            "installments": None, "issuer": None, "last4": "4242", "mandate": None, "moto": None,
            "multicapture": {"status": "unavailable"}, "network": "visa", "network_token": {"used": False},
            "network_transaction_id": None,
            "overcapture": {"maximum_amount_capturable": amount, "status": "unavailable"},
            "regulated_status": "unregulated", "setup_credential_usage": None, "stored_credential_usage": None,
            "three_d_secure": None, "transaction_link_id": None, "wallet": None}


class _Outcome:
    """What an action produced: a status, a body and the events to deliver after the lock is released."""

    def __init__(self, status=200, body=None, events=None, headers=None):
        self.status = status
        self.body = body
        self.events = events or []
        self.headers = headers or {}


class FakeStripe(ServedStandIn):
    """The Stripe stand-in: an API, hosted Checkout and Portal pages, and signed webhook deliveries, on 127.0.0.1."""

    label = "Stripe stand-in"
    thread_name = "fake-stripe"
    log_name = "tools.fake_stripe"

    def __init__(self, api_key: str = "sk_test_fake_123", webhook_secret: str = "whsec_test_abc",
                 webhook_url: str | None = None, port: int = 0, clock=None, host: str = "127.0.0.1",
                 business_name: str = "images-in-bulk", api_version: str = API_VERSION,
                 account_api_version: str = API_VERSION):
        if host != "127.0.0.1":
            raise ValueError("the Stripe stand-in binds 127.0.0.1 only")
        self.api_key = api_key
        self.webhook_secret = webhook_secret
        self.webhook_url = webhook_url
        self.clock = clock or time.time
        self.signature_clock = time.time
        self.business_name = business_name
        self.api_version = api_version  # the legacy webhook_url target's events are in this version
        self.account_api_version = account_api_version  # endpoints without api_version, requests without one
        self.customers: dict[str, dict] = {}
        self.products: dict[str, dict] = {}
        self.prices: dict[str, dict] = {}
        self.checkout_sessions: dict[str, dict] = {}
        self.subscriptions: dict[str, dict] = {}
        self.invoices: dict[str, dict] = {}
        self.portal_sessions: dict[str, dict] = {}
        self.portal_configurations: dict[str, dict] = {}
        self.charges: dict[str, dict] = {}
        self.payment_intents: dict[str, dict] = {}
        self.invoice_payments: dict[str, dict] = {}
        self.refunds: dict[str, dict] = {}
        self.disputes: dict[str, dict] = {}
        self.webhook_endpoints: dict[str, dict] = {}
        self.events: list[dict] = []
        self.held_events: list[dict] = []
        self.sent_events: list[tuple[dict, int | None]] = []  # deliveries to webhook_url: (event, status)
        self.endpoint_deliveries: list[tuple[str, str, str, int | None]] = []  # (we_, evt_, api_version, status)
        self._events_by_id: dict[str, dict] = {}
        self._payloads: dict[str, bytes] = {}
        self._endpoint_payloads: dict[tuple[str, str], bytes] = {}
        self._targets: dict[str, list[str]] = {}  # event id -> the endpoints subscribed to it when it was made
        self._endpoint_secrets: dict[str, str] = {}
        self._links: dict[tuple[str, str], str] = {}  # (relation, id) -> id: what an object does not hold itself
        self._session_lines: dict[str, list[dict]] = {}
        self._session_sub_data: dict[str, dict] = {}
        self._idempotency: dict[str, dict] = {}
        self._lock = threading.RLock()
        self._sent_lock = threading.Lock()
        self._inflight = 0
        self._inflight_cond = threading.Condition()
        self._stopping = threading.Event()
        self._settings = {"duplicates": 0, "shuffle": False, "delay": 0.0, "hold": False}
        self._random = random.Random()
        self._server = _Server((host, port), _Handler)
        self._server.fake = self
        self._thread: threading.Thread | None = None
        self.base_url = f"http://{host}:{self._server.server_address[1]}"
        self.default_portal_configuration = self._new_portal_configuration(
            {"features": {"subscription_cancel": {"enabled": True, "mode": "at_period_end"}}}, is_default=True)["id"]

    # ----- URLs ----------------------------------------------------------------------------------

    def checkout_url(self, session_id: str) -> str:
        """The hosted Checkout page of a session (also its ``url`` while it is open)."""
        return f"{self.base_url}/c/pay/{session_id}"

    def portal_url(self, portal_session_id: str) -> str:
        """The hosted Customer Portal page of a portal session (its ``url``)."""
        return f"{self.base_url}/p/session/{portal_session_id}"

    def client_settings(self) -> dict:
        """Keyword arguments for ``stripe.StripeClient`` that point every base address here."""
        return {"base_addresses": {"api": self.base_url, "files": self.base_url, "connect": self.base_url,
                                   "meter_events": self.base_url}}

    # ----- delivery settings ---------------------------------------------------------------------

    def delivery(self, duplicates: int = 0, shuffle: bool = False, delay: float = 0.0, hold: bool = False,
                 seed: int | None = None) -> FakeStripe:
        """Set how later events are delivered (every call resets all settings); returns self.

        ``duplicates``: each event is sent 1 + duplicates times, the copies right after it;
        ``shuffle``: one action's batch (copies included) is sent in a random order that differs from
        the creation order when it can; ``delay``: seconds to wait, delivering from a background thread;
        ``hold``: keep the events in ``held_events`` until ``flush()``; ``seed``: make shuffling repeatable.
        """
        if duplicates < 0 or delay < 0:
            raise ValueError("duplicates and delay must not be negative")
        with self._lock:
            self._settings = {"duplicates": int(duplicates), "shuffle": bool(shuffle), "delay": float(delay),
                              "hold": bool(hold)}
            if seed is not None:
                self._random.seed(seed)
        return self

    def flush(self, order=None) -> list[int | None]:
        """Send held events now, synchronously: all in held order, ``"reverse"``, or a list of indexes.

        Indexes may repeat (to send duplicates); events not listed stay held. Each goes to webhook_url and to its
        endpoints; returns webhook_url's statuses.
        """
        with self._lock:
            held = list(self.held_events)
            if order is None:
                picked = list(range(len(held)))
            elif order == "reverse":
                picked = list(range(len(held)))[::-1]
            else:
                picked = [int(i) for i in order]
                for i in picked:
                    if not 0 <= i < len(held):
                        raise IndexError(f"no held event {i}")
            chosen = set(picked)
            self.held_events = [e for i, e in enumerate(held) if i not in chosen]
        return [self._send(held[i]) for i in picked]

    def wait_for_deliveries(self, timeout: float = 5.0) -> bool:
        """Wait until no delivery is in flight (useful with ``delay``); False on timeout."""
        deadline = time.monotonic() + timeout
        with self._inflight_cond:
            while self._inflight:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._inflight_cond.wait(left)
        return True

    def sign(self, payload: bytes, timestamp: int | None = None, secret: str | None = None) -> str:
        """A ``Stripe-Signature`` value for a payload, signed now or at ``timestamp`` (to forge or replay posts)."""
        if isinstance(payload, str):
            payload = payload.encode("utf-8")
        when = int(self.signature_clock()) if timestamp is None else int(timestamp)
        return signature_header(payload, secret if secret is not None else self.webhook_secret, when)

    def event_payload(self, event, endpoint_id: str | None = None) -> bytes:
        """The exact bytes delivered (and signed) for an event or event id: to webhook_url, or to an endpoint."""
        event_id = event["id"] if isinstance(event, dict) else event
        if endpoint_id is None:
            return self._payloads[event_id]
        with self._lock:
            endpoint = self.webhook_endpoints[endpoint_id]
            return self._endpoint_payload(self._events_by_id[event_id], self._endpoint_version(endpoint))

    def endpoint_secret(self, endpoint_id: str) -> str:
        """The signing secret of a webhook endpoint (Stripe shows it only in the create response)."""
        return self._endpoint_secrets[endpoint_id]

    def resend(self, event, endpoint_id: str | None = None) -> int | None:
        """Deliver one event (or event id) again now, freshly signed, to webhook_url or to one endpoint; its status."""
        event_id = event["id"] if isinstance(event, dict) else event
        found = self._events_by_id[event_id]
        if endpoint_id is None:
            return self._send_legacy(found)
        if endpoint_id not in self.webhook_endpoints:
            raise KeyError(f"no webhook endpoint {endpoint_id!r}")
        return self._send_endpoint(found, endpoint_id)

    # ----- test actions --------------------------------------------------------------------------

    def pay(self, session_id: str, email: str | None = None) -> str:
        """What pressing "Pay" on the hosted page does; delivers the events and returns the subscription id.

        ``email`` is only used when the session has neither ``customer`` nor ``customer_email``.
        Raises KeyError for an unknown session and ValueError for one that is not open.
        """
        with self._lock:
            outcome = self._pay(session_id, email)
        self._dispatch(outcome.events)
        return outcome.body

    def renew(self, subscription_id: str) -> str | None:
        """Start the next period (paid invoice, periods advanced), or end a cancel-at-period-end subscription.

        Returns the paid invoice's id, or None when the subscription ended instead.
        """
        with self._lock:
            outcome = self._renew(subscription_id)
        self._dispatch(outcome.events)
        return outcome.body

    def fail_payment(self, subscription_id: str) -> str:
        """The next invoice's payment fails: an open invoice (attempt_count 1), status past_due; returns its id."""
        with self._lock:
            outcome = self._fail_payment(subscription_id)
        self._dispatch(outcome.events)
        return outcome.body

    def cancel_at_period_end(self, subscription_id: str, cancel: bool = True) -> dict:
        """What the portal's "Cancel plan" (cancel=True) or "Renew plan" (cancel=False) does; returns the sub."""
        with self._lock:
            sub = self._subscription(subscription_id)
            events = self._set_cancel_at_period_end(sub, bool(cancel), request=None)
            result = copy.deepcopy(sub)
        self._dispatch(events)
        return result

    def refund(self, charge_id: str, amount: int | None = None, reason: str | None = None) -> str:
        """Refund a charge as ``POST /v1/refunds`` does (all that is left by default); returns the refund's id.

        Raises KeyError for an unknown charge and ValueError where the API answers 400.
        """
        with self._lock:
            charge = self.charges.get(charge_id)
            if charge is None:
                raise KeyError(f"no charge {charge_id!r}")
            try:
                refund, events = self._refund_charge(charge, amount, reason, {}, request=None)
            except StripeError as exc:
                raise ValueError(exc.message) from None
        self._dispatch(events)
        return refund["id"]

    def dispute(self, charge_id: str, reason: str = "fraudulent") -> str:
        """The cardholder disputes a charge: a dispute in needs_response, the charge disputed; returns its id."""
        with self._lock:
            charge = self.charges.get(charge_id)
            if charge is None:
                raise KeyError(f"no charge {charge_id!r}")
            if reason not in DISPUTE_REASONS:
                raise ValueError(f"reason must be one of {_one_of(DISPUTE_REASONS)}")
            if any(d["charge"] == charge_id for d in self.disputes.values()):
                raise ValueError(f"charge {charge_id} is already disputed")
            dispute = self._new_dispute(charge, reason)
            events = [self._event("charge.dispute.created", dispute)]
        self._dispatch(events)
        return dispute["id"]

    def close_dispute(self, dispute_id: str, won: bool) -> dict:
        """The card network decides a dispute: status won or lost (charge.dispute.closed); returns the dispute."""
        with self._lock:
            dispute = self.disputes.get(dispute_id)
            if dispute is None:
                raise KeyError(f"no dispute {dispute_id!r}")
            try:
                events = self._close_dispute(dispute, "won" if won else "lost", request=None)
            except StripeError as exc:
                raise ValueError(exc.message) from None
            result = copy.deepcopy(dispute)
        self._dispatch(events)
        return result

    def pause(self, subscription_id: str) -> dict:
        """What Stripe does when a trial ends without a payment method and trial_settings say pause: status paused.

        Sends customer.subscription.paused, then customer.subscription.updated; returns the subscription.
        """
        with self._lock:
            sub = self._subscription(subscription_id)
            if sub["status"] not in ("active", "trialing"):
                raise ValueError(f"subscription {subscription_id} is {sub['status']}, not active or trialing")
            previous = {"status": sub["status"], "status_details": copy.deepcopy(sub["status_details"])}
            sub["status"] = "paused"
            sub["status_details"] = {"paused": {"subscription": {"type": "trial_end_without_payment_method"},
                                                "transitioned_at": self._now(), "type": "subscription"}}
            events = [self._event("customer.subscription.paused", sub),
                      self._event("customer.subscription.updated", sub, previous)]
            result = copy.deepcopy(sub)
        log.info("subscription %s paused", subscription_id)
        self._dispatch(events)
        return result

    def resume(self, subscription_id: str) -> str:
        """``POST /v1/subscriptions/{id}/resume`` with its defaults: a new period from now, paid; the invoice's id."""
        with self._lock:
            sub = self._subscription(subscription_id)
            try:
                invoice, events = self._resume(sub, request=None)
            except StripeError as exc:
                raise ValueError(exc.message) from None
        self._dispatch(events)
        return invoice["id"]

    # ----- internals: ids, time, lookups ---------------------------------------------------------

    def _now(self) -> int:
        return int(self.clock())

    def _subscription(self, subscription_id: str) -> dict:
        try:
            return self.subscriptions[subscription_id]
        except KeyError:
            raise KeyError(f"no subscription {subscription_id!r}") from None

    def _find(self, object_id: str):
        for prefix, store in _PREFIXES.items():
            if object_id.startswith(prefix):
                if store == "events":
                    return self._events_by_id.get(object_id)
                return getattr(self, store).get(object_id)
        return None

    # ----- internals: events ---------------------------------------------------------------------

    def _event(self, type_: str, obj: dict, previous: dict | None = None, request=None) -> dict:
        """Record an event with a snapshot of obj; the caller delivers it after releasing the lock.

        The endpoints it goes to are those enabled and subscribed to its type now; its payload for webhook_url
        (in self.api_version) and for each of their versions is rendered now, from the snapshot.
        """
        data = {"object": self._public(obj)}
        if previous is not None:
            data["previous_attributes"] = copy.deepcopy(previous)
        request_id, key = request if request else (None, None)
        targets = [e["id"] for e in self.webhook_endpoints.values() if self._subscribed(e, type_)]
        event = {"id": new_id("evt_"), "object": "event", "api_version": self.api_version, "created": self._now(),
                 "data": data, "livemode": False,
                 "pending_webhooks": (1 if self.webhook_url else 0) + len(targets),
                 "request": {"id": request_id, "idempotency_key": key}, "type": type_}
        self.events.append(event)
        self._events_by_id[event["id"]] = event
        self._targets[event["id"]] = targets
        self._payloads[event["id"]] = _encode(render_in_version(event, self.api_version, self._lookup))
        for endpoint_id in targets:
            self._endpoint_payload(event, self._endpoint_version(self.webhook_endpoints[endpoint_id]))
        return event

    @staticmethod
    def _subscribed(endpoint: dict, type_: str) -> bool:
        return endpoint["status"] == "enabled" and ("*" in endpoint["enabled_events"]
                                                    or type_ in endpoint["enabled_events"])

    def _endpoint_version(self, endpoint: dict) -> str:
        return endpoint["api_version"] or self.account_api_version

    def _endpoint_payload(self, event: dict, version: str) -> bytes:
        """The bytes an endpoint in `version` gets for an event (rendered once, with the lock held)."""
        key = (event["id"], version)
        if key not in self._endpoint_payloads:
            self._endpoint_payloads[key] = _encode(render_in_version(event, version, self._lookup))
        return self._endpoint_payloads[key]

    def _lookup(self, relation: str, object_id: str):
        """What a rendering in an older version needs that an object does not hold (see _VERSION_CHANGES)."""
        if relation == "price":
            return self.prices.get(object_id)
        return self._links.get((relation, object_id))

    def _dispatch(self, events: list[dict]) -> None:
        """Deliver one action's batch per the delivery settings (never called with the state lock held)."""
        if not events:
            return
        with self._lock:
            settings = dict(self._settings)
            if settings["hold"]:
                self.held_events.extend(events)
                return
            batch = [e for e in events for _ in range(1 + settings["duplicates"])]
            if settings["shuffle"] and len({e["id"] for e in batch}) > 1:
                original = [e["id"] for e in batch]
                for _ in range(20):
                    self._random.shuffle(batch)
                    if [e["id"] for e in batch] != original:
                        break
        if settings["delay"] > 0:
            with self._inflight_cond:
                self._inflight += 1
            threading.Thread(target=self._deliver_later, args=(batch, settings["delay"]), daemon=True,
                             name="fake-stripe-delivery").start()
        else:
            for event in batch:
                self._send(event)

    def _deliver_later(self, batch, delay):
        try:
            if self._stopping.wait(delay):
                return
            for event in batch:
                if self._stopping.is_set():
                    return
                self._send(event)
        finally:
            with self._inflight_cond:
                self._inflight -= 1
                self._inflight_cond.notify_all()

    def _send(self, event: dict) -> int | None:
        """Deliver one event to webhook_url and to its endpoints; returns webhook_url's status (None: not sent)."""
        status = self._send_legacy(event)
        for endpoint_id in list(self._targets.get(event["id"], ())):
            self._send_endpoint(event, endpoint_id)
        return status

    def _send_legacy(self, event: dict) -> int | None:
        """POST one event to the webhook URL, signed now; record and return the status (None on failure)."""
        url = self.webhook_url
        if not url:
            log.info("event %s %s not delivered: no webhook URL", event["id"], event["type"])
            return None
        payload = self._payloads[event["id"]]
        status = self._post(url, payload, self.sign(payload), event)
        with self._sent_lock:
            self.sent_events.append((event, status))
        log.info("event %s %s -> %s", event["id"], event["type"], status)
        return status

    def _send_endpoint(self, event: dict, endpoint_id: str) -> int | None:
        """POST one event to a webhook endpoint in its version, signed with its secret (skipped once deleted or
        disabled); record and return the status."""
        with self._lock:
            endpoint = self.webhook_endpoints.get(endpoint_id)
            if endpoint is None or endpoint["status"] != "enabled":
                log.info("event %s %s not delivered to %s: endpoint deleted or disabled", event["id"], event["type"],
                         endpoint_id)
                return None
            version = self._endpoint_version(endpoint)
            url, secret = endpoint["url"], self._endpoint_secrets[endpoint_id]
            payload = self._endpoint_payload(event, version)
        status = self._post(url, payload, self.sign(payload, secret=secret), event)
        with self._sent_lock:
            self.endpoint_deliveries.append((endpoint_id, event["id"], version, status))
        log.info("event %s %s -> endpoint %s (%s): %s", event["id"], event["type"], endpoint_id, version, status)
        return status

    def _post(self, url: str, payload: bytes, signature: str, event: dict) -> int | None:
        headers = {"Content-Type": "application/json; charset=utf-8", "User-Agent": WEBHOOK_USER_AGENT,
                   "Accept": "*/*; q=0.5, application/xml", "Cache-Control": "no-cache",
                   "Stripe-Signature": signature}
        parts = urlsplit(url)
        status = None
        conn_class = HTTPSConnection if parts.scheme == "https" else HTTPConnection
        conn = conn_class(parts.hostname, parts.port, timeout=DELIVERY_TIMEOUT)
        try:
            path = parts.path or "/"
            if parts.query:
                path += "?" + parts.query
            conn.request("POST", path, body=payload, headers=headers)
            response = conn.getresponse()
            response.read()
            status = response.status
        except OSError as exc:
            log.warning("event %s %s: webhook delivery failed: %s", event["id"], event["type"],
                        exc.__class__.__name__)
        finally:
            conn.close()
        return status

    # ----- internals: rendering ------------------------------------------------------------------

    def _list(self, items: list[dict], url: str, params: dict, expand: list[str]) -> dict:
        limit = _int(params.get("limit", 10), "limit")
        if not 1 <= limit <= 100:
            raise StripeError(400, "This value must be between 1 and 100 (it currently is "
                                   f"{limit}).", param="limit")
        # newest first; among equal timestamps the later-created first (items arrive in creation order)
        items = sorted(reversed(list(items)), key=lambda o: o.get("created", 0), reverse=True)
        after = params.get("starting_after")
        before = params.get("ending_before")
        ids = [o["id"] for o in items]
        if after:
            if after not in ids:
                raise _no_such("object", after, param="starting_after", status=400)
            items = items[ids.index(after) + 1:]
            page, has_more = items[:limit], len(items) > limit
        elif before:
            if before not in ids:
                raise _no_such("object", before, param="ending_before", status=400)
            items = items[:ids.index(before)]
            page, has_more = items[-limit:], len(items) > limit
        else:
            page, has_more = items[:limit], len(items) > limit
        data = [self._public(o) for o in page]
        result = {"object": "list", "data": data, "has_more": has_more, "url": url}
        for path in expand:
            self._expand(result, path.split("."), path)
        return result

    def _public(self, obj: dict) -> dict:
        return {k: copy.deepcopy(v) for k, v in obj.items() if not k.startswith("_")}

    def _render(self, obj: dict, expand: list[str]) -> dict:
        out = self._public(obj)
        for path in expand:
            self._expand(out, path.split("."), path)
        return out

    def _expand(self, obj, parts: list[str], path: str) -> None:
        if not parts:
            return
        if not isinstance(obj, dict):
            raise StripeError(400, f"This property cannot be expanded ({path}).", param="expand")
        key, rest = parts[0], parts[1:]
        if key == "line_items" and obj.get("object") == "checkout.session":
            obj["line_items"] = self._session_line_items(obj["id"])
        elif key == "refunds" and obj.get("object") == "charge":
            obj["refunds"] = self._included_list([r for r in self.refunds.values() if r["charge"] == obj["id"]],
                                                 f"/v1/charges/{obj['id']}/refunds")
        elif key == "payments" and obj.get("object") == "invoice":
            obj["payments"] = self._included_list(
                [p for p in self.invoice_payments.values() if p["invoice"] == obj["id"]],
                f"/v1/invoice_payments?invoice={obj['id']}")
        if key not in obj:
            raise StripeError(400, f"This property cannot be expanded ({path}).", param="expand")
        value = obj[key]
        if key == "data" and isinstance(value, list):
            for item in value:
                self._expand(item, rest, path)
            return
        if isinstance(value, str):
            found = self._find(value)
            if found is None:
                raise StripeError(400, f"This property cannot be expanded ({path}).", param="expand")
            value = obj[key] = self._public(found)
        if rest and value is not None:
            self._expand(value, rest, path)

    def _included_list(self, items: list[dict], url: str) -> dict:
        """An includable list (a charge's refunds, an invoice's payments): only there when expanded, newest first."""
        data = [self._public(o) for o in sorted(reversed(items), key=lambda o: o.get("created", 0), reverse=True)]
        return {"object": "list", "data": data, "has_more": False, "total_count": len(data), "url": url}

    def _session_line_items(self, session_id: str) -> dict:
        data = []
        for line in self._session_lines.get(session_id, []):
            price = self.prices[line["price"]]
            product = self.products.get(price["product"], {})
            amount = (price["unit_amount"] or 0) * line["quantity"]
            data.append({"id": line["id"], "object": "item", "amount_discount": 0, "amount_subtotal": amount,
                         "amount_tax": 0, "amount_total": amount, "currency": price["currency"],
                         "description": product.get("name"), "price": self._public(price),
                         "quantity": line["quantity"]})
        return {"object": "list", "data": data, "has_more": False,
                "url": f"/v1/checkout/sessions/{session_id}/line_items"}

    @staticmethod
    def _plan(price: dict) -> dict:
        recurring = price.get("recurring") or {}
        return {"id": price["id"], "object": "plan", "active": price["active"], "amount": price["unit_amount"],
                "amount_decimal": price["unit_amount_decimal"], "billing_scheme": price["billing_scheme"],
                "created": price["created"], "currency": price["currency"], "interval": recurring.get("interval"),
                "interval_count": recurring.get("interval_count", 1), "livemode": False,
                "metadata": dict(price["metadata"]), "meter": None, "nickname": price["nickname"],
                "product": price["product"], "tiers_mode": None, "transform_usage": None,
                "trial_period_days": recurring.get("trial_period_days"), "usage_type": "licensed"}

    def _invoice_stage(self, invoice: dict, stage: str) -> dict:
        """A snapshot of an invoice as it was at an earlier stage (draft, finalized), for event payloads."""
        snap = self._public(invoice)
        transitions = snap["status_transitions"]
        if stage in ("draft", "finalized"):
            snap.update({"status": "draft" if stage == "draft" else "open", "amount_paid": 0,
                         "amount_remaining": snap["amount_due"], "attempted": False, "attempt_count": 0,
                         "auto_advance": True, "next_payment_attempt": snap["created"]})
            transitions["paid_at"] = None
        if stage == "draft":
            snap.update({"number": None, "next_payment_attempt": None, "webhooks_delivered_at": None,
                         "effective_at": None})
            transitions["finalized_at"] = None
        return snap

    # ----- internals: objects --------------------------------------------------------------------

    def _new_customer(self, email=None, name=None, metadata=None, **extra) -> dict:
        now = self._now()
        customer = {"id": new_id("cus_", 14), "object": "customer", "address": None, "balance": 0,
                    "business_name": None, "created": now, "currency": None, "customer_account": None,
                    "default_source": None, "delinquent": False, "description": extra.get("description"),
                    "discount": None, "email": email, "individual_name": None,
                    "invoice_prefix": extra.get("invoice_prefix") or secrets.token_hex(4).upper(),
                    "invoice_settings": {"custom_fields": None, "default_payment_method": None, "footer": None,
                                         "rendering_options": None},
                    "livemode": False, "metadata": dict(metadata or {}), "name": name, "next_invoice_sequence": 1,
                    "phone": extra.get("phone"), "preferred_locales": list(extra.get("preferred_locales") or []),
                    "shipping": None, "tax_exempt": "none", "test_clock": None}
        self.customers[customer["id"]] = customer
        return customer

    def _new_invoice(self, sub: dict, reason: str, usage: tuple[int, int], paid: bool) -> dict:
        now = self._now()
        customer = self.customers[sub["customer"]]
        invoice_id = new_id("in_")
        lines = []
        total = 0
        for item in sub["items"]["data"]:
            price = item["price"]
            amount = (price["unit_amount"] or 0) * item["quantity"]
            total += amount
            product = self.products.get(price["product"], {})
            description = (f"{item['quantity']} × {product.get('name', price['product'])} "
                           f"(at {format_amount(price['unit_amount'] or 0, price['currency'])} / "
                           f"{(price.get('recurring') or {}).get('interval', 'once')})")
            lines.append({"id": new_id("il_"), "object": "line_item", "amount": amount,
                          "currency": price["currency"], "description": description, "discount_amounts": [],
                          "discountable": True, "discounts": [], "invoice": invoice_id, "livemode": False,
                          "metadata": dict(sub["metadata"]),
                          "parent": {"invoice_item_details": None,
                                     "subscription_item_details": {"invoice_item": None, "proration": False,
                                                                   "proration_details": {"credited_items": None},
                                                                   "subscription": sub["id"],
                                                                   "subscription_item": item["id"]},
                                     "type": "subscription_item_details"},
                          "period": {"end": item["current_period_end"], "start": item["current_period_start"]},
                          "pretax_credit_amounts": [],
                          "pricing": {"price_details": {"price": price["id"], "product": price["product"]},
                                      "type": "price_details", "unit_amount_decimal": price["unit_amount_decimal"]},
                          "quantity": item["quantity"], "quantity_decimal": str(item["quantity"]),
                          "subscription": sub["id"], "subtotal": amount, "taxes": []})
        number = f"{customer['invoice_prefix']}-{customer['next_invoice_sequence']:04d}"
        customer["next_invoice_sequence"] += 1
        invoice = {
            "id": invoice_id, "object": "invoice", "account_country": "US", "account_name": self.business_name,
            "account_tax_ids": None, "amount_due": total, "amount_overpaid": 0, "amount_paid": total if paid else 0,
            "amount_paid_off_stripe": 0, "amount_remaining": 0 if paid else total, "amount_shipping": 0,
            "application": None,
            "attempt_count": 1, "attempted": True, "auto_advance": not paid,
            "automatic_tax": {"disabled_reason": None, "enabled": False, "liability": None, "provider": None,
                              "status": None},
            "automatically_finalizes_at": None, "billing_reason": reason, "collection_method": "charge_automatically",
            "confirmation_secret": None, "created": now, "currency": sub["currency"], "custom_fields": None,
            "customer": customer["id"], "customer_account": None, "customer_address": None,
            "customer_email": customer["email"], "customer_name": customer["name"], "customer_phone": None,
            "customer_shipping": None, "customer_tax_exempt": "none", "customer_tax_ids": [],
            "default_payment_method": None, "default_source": None, "default_tax_rates": [], "description": None,
            "discounts": [], "due_date": None, "effective_at": now, "ending_balance": 0, "footer": None,
            "from_invoice": None, "hosted_invoice_url": None, "invoice_pdf": None, "issuer": {"type": "self"},
            "last_finalization_error": None, "latest_revision": None,
            "lines": {"object": "list", "data": lines, "has_more": False, "total_count": len(lines),
                      "url": f"/v1/invoices/{invoice_id}/lines"},
            "livemode": False, "metadata": {}, "next_payment_attempt": None if paid else now + RETRY_AFTER,
            "number": number, "on_behalf_of": None,
            "parent": {"quote_details": None,
                       "subscription_details": {"metadata": dict(sub["metadata"]), "subscription": sub["id"],
                                                "subscription_proration_date": None},
                       "type": "subscription_details"},
            "payment_settings": {"default_mandate": None, "payment_method_options": None,
                                 "payment_method_types": None},
            "period_end": usage[1], "period_start": usage[0], "post_payment_credit_notes_amount": 0,
            "pre_payment_credit_notes_amount": 0, "receipt_number": None, "rendering": None, "shipping_cost": None,
            "shipping_details": None, "starting_balance": 0, "statement_descriptor": None,
            "status": "paid" if paid else "open", "status_details": None,
            "status_transitions": {"finalized_at": now, "marked_uncollectible_at": None,
                                   "paid_at": now if paid else None, "voided_at": None},
            "subtotal": total, "subtotal_excluding_tax": total, "test_clock": None, "threshold_reason": None,
            "total": total, "total_discount_amounts": [], "total_excluding_tax": total,
            "total_pretax_credit_amounts": [], "total_taxes": [], "webhooks_delivered_at": now}
        self.invoices[invoice_id] = invoice
        sub["latest_invoice"] = invoice_id
        if paid:
            self._collect(invoice)
        return invoice

    def _collect(self, invoice: dict) -> None:
        """Charge an invoice being paid: a succeeded PaymentIntent, its Charge, and the InvoicePayment linking them."""
        now = self._now()
        customer = self.customers[invoice["customer"]]
        amount, currency = invoice["amount_due"], invoice["currency"]
        description = "Subscription creation" if invoice["billing_reason"] == "subscription_create" \
            else "Subscription update"
        pi_id, charge_id, inpay_id = new_id("pi_"), new_id("ch_"), new_id("inpay_")
        self.payment_intents[pi_id] = {
            "id": pi_id, "object": "payment_intent", "allowed_payment_method_types": None, "amount": amount,
            "amount_capturable": 0, "amount_details": {"tip": {}}, "amount_received": amount, "application": None,
            "application_fee_amount": None, "automatic_payment_methods": None, "canceled_at": None,
            "cancellation_reason": None, "capture_method": "automatic",
            "client_secret": f"{pi_id}_secret_{new_id('', 25)}", "confirmation_method": "automatic",
            "created": now, "currency": currency, "customer": customer["id"], "customer_account": None,
            "description": description, "excluded_payment_method_types": None, "hooks": None,
            "last_payment_error": None, "latest_charge": charge_id, "livemode": False, "managed_payments": None,
            "metadata": {}, "next_action": None, "on_behalf_of": None, "payment_details": None,
            "payment_method": None, "payment_method_configuration_details": None,
            "payment_method_options": {"card": {"installments": None, "mandate_options": None, "network": None,
                                                "request_three_d_secure": "automatic"}},
            "payment_method_types": ["card"], "payment_record": None, "presentment_details": None,
            "processing": None, "receipt_email": None, "review": None, "setup_future_usage": None, "shipping": None,
            "source": None, "statement_descriptor": None, "statement_descriptor_suffix": None, "status": "succeeded",
            "transfer_data": None, "transfer_group": None}
        self.charges[charge_id] = {
            "id": charge_id, "object": "charge", "amount": amount, "amount_captured": amount, "amount_refunded": 0,
            "application": None, "application_fee": None, "application_fee_amount": None,
            "authorization_code": None, "balance_transaction": None,
            "billing_details": {"address": {"city": None, "country": None, "line1": None, "line2": None,
                                            "postal_code": None, "state": None},
                                "email": customer["email"], "name": customer["name"], "phone": None, "tax_id": None},
            "calculated_statement_descriptor": re.sub(r"[^A-Z0-9 .\-]", "", self.business_name.upper())[:22] or None,
            "captured": True, "created": now, "currency": currency, "customer": customer["id"],
            "description": description, "disputed": False, "failure_balance_transaction": None,
            "failure_code": None, "failure_message": None, "fraud_details": {}, "level3": None, "livemode": False,
            "metadata": {}, "on_behalf_of": None,
            "outcome": {"advice_code": None, "network_advice_code": None, "network_decline_code": None,
                        "network_status": "approved_by_network", "reason": None, "risk_level": "normal",
                        "risk_score": 20, "rule": None, "seller_message": "Payment complete.", "type": "authorized"},
            "paid": True, "payment_intent": pi_id, "payment_method": None,
            "payment_method_details": {"card": _card_details(amount), "type": "card"},
            "presentment_details": None, "radar_options": {}, "receipt_email": None, "receipt_number": None,
            "receipt_url": None, "refunded": False, "review": None, "shipping": None, "source": None,
            "source_transfer": None, "statement_descriptor": None, "statement_descriptor_suffix": None,
            "status": "succeeded", "transfer": None, "transfer_data": None, "transfer_group": None}
        self.invoice_payments[inpay_id] = {
            "id": inpay_id, "object": "invoice_payment", "amount_paid": amount, "amount_requested": amount,
            "created": now, "currency": currency, "invoice": invoice["id"], "is_default": True, "livemode": False,
            "payment": {"type": "payment_intent", "payment_intent": pi_id}, "status": "paid",
            "status_transitions": {"canceled_at": None, "paid_at": now}}
        self._links.update({("charge", invoice["id"]): charge_id, ("payment_intent", invoice["id"]): pi_id,
                            ("invoice", charge_id): invoice["id"], ("invoice", pi_id): invoice["id"]})

    def _invoice_events(self, invoice: dict, paid: bool, request=None) -> list[dict]:
        events = [self._event("invoice.created", self._invoice_stage(invoice, "draft"), request=request),
                  self._event("invoice.finalized", self._invoice_stage(invoice, "finalized"), request=request)]
        if paid:
            events += self._paid_events(invoice, request)
        else:
            events.append(self._event("invoice.payment_failed", invoice, request=request))
        return events

    def _paid_events(self, invoice: dict, request=None) -> list[dict]:
        """charge.succeeded, payment_intent.succeeded, invoice.paid, invoice.payment_succeeded for a paid invoice."""
        charge = self.charges[self._links[("charge", invoice["id"])]]
        payment_intent = self.payment_intents[charge["payment_intent"]]
        return [self._event("charge.succeeded", charge, request=request),
                self._event("payment_intent.succeeded", payment_intent, request=request),
                self._event("invoice.paid", invoice, request=request),
                self._event("invoice.payment_succeeded", invoice, request=request)]

    # ----- internals: actions (called with the lock held) ----------------------------------------

    def _pay(self, session_id: str, email: str | None) -> _Outcome:
        session = self.checkout_sessions.get(session_id)
        if session is None:
            raise KeyError(f"no checkout session {session_id!r}")
        if session["status"] != "open":
            raise ValueError(f"checkout session {session_id} is {session['status']}, not open")
        now = self._now()
        events = []
        if session["customer"]:
            customer = self.customers[session["customer"]]
        else:
            address = session["customer_email"] or email
            if not address:
                raise ValueError("an email is needed to pay this session")
            customer = self._new_customer(email=address)
            events.append(self._event("customer.created", customer))
        customer["currency"] = customer["currency"] or session["currency"]
        sub_id = new_id("sub_")
        sub_data = self._session_sub_data.get(session_id, {})
        items = []
        for line in self._session_lines[session_id]:
            price = self._public(self.prices[line["price"]])
            items.append({"id": new_id("si_", 14), "object": "subscription_item", "billed_until": None,
                          "billing_thresholds": None, "created": now, "current_period_end": now + PERIOD_SECONDS,
                          "current_period_start": now, "current_trial": None, "discounts": [], "metadata": {},
                          "plan": self._plan(price), "price": price, "quantity": line["quantity"],
                          "subscription": sub_id, "tax_rates": []})
        sub = {
            "id": sub_id, "object": "subscription", "application": None, "application_fee_percent": None,
            "automatic_tax": {"disabled_reason": None, "enabled": False, "liability": None},
            "billing_cycle_anchor": now, "billing_cycle_anchor_config": None,
            "billing_mode": {"flexible": {"proration_discounts": "included"}, "type": "flexible", "updated_at": now},
            "billing_schedules": [], "billing_thresholds": None, "cancel_at": None, "cancel_at_period_end": False,
            "canceled_at": None,
            "cancellation_details": {"comment": None, "feedback": None, "reason": None},
            "collection_method": "charge_automatically", "created": now, "currency": session["currency"],
            "customer": customer["id"], "customer_account": None, "days_until_due": None,
            "default_payment_method": None, "default_source": None, "default_tax_rates": [],
            "description": sub_data.get("description"), "discounts": [], "ended_at": None,
            "invoice_settings": {"account_tax_ids": None, "issuer": {"type": "self"}},
            "items": {"object": "list", "data": items, "has_more": False, "total_count": len(items),
                      "url": f"/v1/subscription_items?subscription={sub_id}"},
            "latest_invoice": None, "livemode": False, "managed_payments": None,
            "metadata": dict(sub_data.get("metadata") or {}),
            "next_pending_invoice_item_invoice": None, "on_behalf_of": None, "pause_collection": None,
            "payment_settings": {"payment_method_options": None, "payment_method_types": None,
                                 "save_default_payment_method": "off"},
            "pending_invoice_item_interval": None, "pending_setup_intent": None, "pending_update": None,
            "presentment_details": None, "schedule": None, "start_date": now, "status": "active",
            "status_details": None, "test_clock": None, "transfer_data": None,
            "trial_end": None, "trial_settings": {"end_behavior": {"missing_payment_method": "create_invoice"}},
            "trial_start": None}
        self.subscriptions[sub_id] = sub
        invoice = self._new_invoice(sub, "subscription_create", (now, now), paid=True)
        session.update({"status": "complete", "payment_status": "paid", "customer": customer["id"],
                        "subscription": sub_id, "invoice": invoice["id"], "url": None,
                        "customer_details": {"address": None, "business_name": None, "email": customer["email"],
                                             "individual_name": None, "name": customer["name"], "phone": None,
                                             "tax_exempt": "none", "tax_ids": []}})
        events.append(self._event("customer.subscription.created", sub))
        events += self._invoice_events(invoice, paid=True)
        events.append(self._event("checkout.session.completed", session))
        log.info("checkout session %s paid: subscription %s", session_id, sub_id)
        return _Outcome(body=sub_id, events=events)

    def _renew(self, subscription_id: str) -> _Outcome:
        sub = self._subscription(subscription_id)
        if sub["status"] in ("canceled", "incomplete_expired", "paused"):
            raise ValueError(f"subscription {subscription_id} is {sub['status']}")
        if sub["cancel_at_period_end"]:
            end = max(item["current_period_end"] for item in sub["items"]["data"])
            sub.update({"status": "canceled", "ended_at": end})
            log.info("subscription %s ended at period end", subscription_id)
            return _Outcome(body=None, events=[self._event("customer.subscription.deleted", sub)])
        latest = self.invoices.get(sub["latest_invoice"] or "")
        if latest is not None and latest["status"] == "open":
            now = self._now()
            previous = {"status": sub["status"]}
            latest.update({"status": "paid", "amount_paid": latest["amount_due"], "amount_remaining": 0,
                           "attempt_count": latest["attempt_count"] + 1, "next_payment_attempt": None,
                           "auto_advance": False})
            latest["status_transitions"]["paid_at"] = now
            sub["status"] = "active"
            self.customers[sub["customer"]]["delinquent"] = False
            self._collect(latest)
            events = self._paid_events(latest)
            events.append(self._event("customer.subscription.updated", sub, previous))
            return _Outcome(body=latest["id"], events=events)
        previous = self._advance(sub)
        invoice = self._new_invoice(sub, "subscription_cycle", previous.pop("_usage"), paid=True)
        events = self._invoice_events(invoice, paid=True)
        events.append(self._event("customer.subscription.updated", sub, previous))
        log.info("subscription %s renewed: invoice %s", subscription_id, invoice["id"])
        return _Outcome(body=invoice["id"], events=events)

    def _advance(self, sub: dict) -> dict:
        """Move every item to its next period; returns previous_attributes (and the old period as _usage)."""
        previous = {"items": copy.deepcopy(sub["items"]), "latest_invoice": sub["latest_invoice"]}
        first = sub["items"]["data"][0]
        usage = (first["current_period_start"], first["current_period_end"])
        for item in sub["items"]["data"]:
            start = item["current_period_end"]
            item.update({"current_period_start": start, "current_period_end": start + PERIOD_SECONDS})
        previous["_usage"] = usage
        return previous

    def _fail_payment(self, subscription_id: str) -> _Outcome:
        sub = self._subscription(subscription_id)
        if sub["status"] not in ("active", "trialing", "past_due"):
            raise ValueError(f"subscription {subscription_id} is {sub['status']}")
        if sub["cancel_at_period_end"]:
            raise ValueError(f"subscription {subscription_id} ends at period end; renew() ends it")
        latest = self.invoices.get(sub["latest_invoice"] or "")
        if latest is not None and latest["status"] == "open":
            latest["attempt_count"] += 1
            latest["next_payment_attempt"] = self._now() + RETRY_AFTER
            return _Outcome(body=latest["id"], events=[self._event("invoice.payment_failed", latest)])
        previous = self._advance(sub)
        invoice = self._new_invoice(sub, "subscription_cycle", previous.pop("_usage"), paid=False)
        previous["status"] = sub["status"]
        sub["status"] = "past_due"
        self.customers[sub["customer"]]["delinquent"] = True
        events = self._invoice_events(invoice, paid=False)
        events.append(self._event("customer.subscription.updated", sub, previous))
        log.info("subscription %s payment failed: invoice %s", subscription_id, invoice["id"])
        return _Outcome(body=invoice["id"], events=events)

    def _set_cancel_at_period_end(self, sub: dict, cancel: bool, request) -> list[dict]:
        if sub["status"] == "canceled":
            raise StripeError(400, "A canceled subscription can only update its cancellation_details and "
                                   "metadata.", param="cancel_at_period_end")
        previous = self._apply_cancel_flag(sub, cancel)
        if not previous:
            return []
        return [self._event("customer.subscription.updated", sub, previous, request=request)]

    def _apply_cancel_flag(self, sub: dict, cancel: bool) -> dict:
        """Set or clear cancel-at-period-end; returns previous_attributes ({} when nothing changed)."""
        if sub["cancel_at_period_end"] == cancel:
            return {}
        fields = ("cancel_at", "cancel_at_period_end", "canceled_at", "cancellation_details")
        previous = {k: copy.deepcopy(sub[k]) for k in fields}
        if cancel:
            end = max(item["current_period_end"] for item in sub["items"]["data"])
            sub.update({"cancel_at": end, "cancel_at_period_end": True, "canceled_at": self._now()})
            sub["cancellation_details"]["reason"] = "cancellation_requested"
        else:
            sub.update({"cancel_at": None, "cancel_at_period_end": False, "canceled_at": None})
            sub["cancellation_details"].update({"reason": None, "comment": None, "feedback": None})
        log.info("subscription %s cancel_at_period_end=%s", sub["id"], cancel)
        return previous

    def _cancel_now(self, sub: dict, details: dict | None, request) -> list[dict]:
        """Cancel a subscription at once (DELETE /v1/subscriptions/{id}, the portal in mode immediately)."""
        if sub["status"] in ("canceled", "incomplete_expired"):
            raise StripeError(400, f"This subscription has already been canceled: {sub['id']}", param="subscription")
        now = self._now()
        sub.update({"status": "canceled", "canceled_at": now, "ended_at": now, "cancel_at": None})
        sub["cancellation_details"]["reason"] = "cancellation_requested"
        for name in ("comment", "feedback"):
            if (details or {}).get(name):
                sub["cancellation_details"][name] = details[name]
        log.info("subscription %s canceled now", sub["id"])
        return [self._event("customer.subscription.deleted", sub, request=request)]

    def _resume(self, sub: dict, request) -> tuple[dict, list[dict]]:
        """Resume a paused subscription: a new period from now with a paid invoice (the anchor becomes now)."""
        if sub["status"] != "paused":
            raise StripeError(400, f"Subscription {sub['id']} is {sub['status']}: only a paused subscription can be "
                                   "resumed.", param="subscription")
        now = self._now()
        previous = {"billing_cycle_anchor": sub["billing_cycle_anchor"], "items": copy.deepcopy(sub["items"]),
                    "latest_invoice": sub["latest_invoice"], "status": sub["status"],
                    "status_details": copy.deepcopy(sub["status_details"])}
        for item in sub["items"]["data"]:
            item.update({"current_period_start": now, "current_period_end": now + PERIOD_SECONDS})
        sub.update({"status": "active", "status_details": None, "billing_cycle_anchor": now})
        invoice = self._new_invoice(sub, "subscription_cycle", (now, now), paid=True)
        events = self._invoice_events(invoice, paid=True, request=request)
        events += [self._event("customer.subscription.resumed", sub, request=request),
                   self._event("customer.subscription.updated", sub, previous, request=request)]
        log.info("subscription %s resumed: invoice %s", sub["id"], invoice["id"])
        return invoice, events

    def _refund_charge(self, charge: dict, amount, reason, metadata: dict, request) -> tuple[dict, list[dict]]:
        """Refund (part of) a charge as POST /v1/refunds does; validates first, changes nothing on an error."""
        if reason is not None:
            _enum(reason, REFUND_REASONS, "reason")
        left = charge["amount"] - charge["amount_refunded"]
        if amount is not None:
            amount = _int(amount, "amount")
            if amount < 1:
                raise StripeError(400, "This value must be greater than or equal to 1.", param="amount")
        if left <= 0:
            raise StripeError(400, f"Charge {charge['id']} has already been refunded.",
                              code="charge_already_refunded")
        if any(d["charge"] == charge["id"] and d["status"] not in ("won", "warning_closed", "prevented")
               for d in self.disputes.values()):
            raise StripeError(400, f"Charge {charge['id']} has been charged back; cannot issue a refund.",
                              code="charge_disputed")
        amount = left if amount is None else amount
        if amount > left:
            raise StripeError(400, f"Refund amount ({_money(amount, charge['currency'])}) is greater than unrefunded "
                                   f"amount on charge ({_money(left, charge['currency'])})", param="amount")
        refund_id = new_id("re_")
        refund = {"id": refund_id, "object": "refund", "amount": amount, "balance_transaction": None,
                  "charge": charge["id"], "created": self._now(), "currency": charge["currency"],
                  "customer": charge["customer"], "customer_account": None, "description": None,
                  "destination_details": {"card": {"reference": None, "reference_status": "pending",
                                                   "reference_type": "acquirer_reference_number", "type": "refund"},
                                          "type": "card"},
                  "failure_balance_transaction": None, "failure_reason": None, "instructions_email": None,
                  "metadata": metadata, "next_action": None, "payment_intent": charge["payment_intent"],
                  "payment_method": charge["payment_method"], "pending_reason": None, "presentment_details": None,
                  "reason": reason, "receipt_number": None, "source_transfer_reversal": None, "status": "succeeded",
                  "transfer_reversal": None}
        self.refunds[refund_id] = refund
        charge["amount_refunded"] += amount
        charge["refunded"] = charge["amount_refunded"] >= charge["amount"]
        log.info("charge %s refunded %s (refund %s)", charge["id"], amount, refund_id)
        return refund, [self._event("charge.refunded", charge, request=request),
                        self._event("refund.created", refund, request=request)]

    def _new_dispute(self, charge: dict, reason: str) -> dict:
        now = self._now()
        code = _NETWORK_REASON_CODES.get(reason)
        dispute_id = new_id("du_")
        evidence = {name: None for name in _EVIDENCE_FIELDS}
        evidence["enhanced_evidence"] = {}
        dispute = {"id": dispute_id, "object": "dispute", "amount": charge["amount"], "balance_transactions": [],
                   "charge": charge["id"], "created": now, "currency": charge["currency"],
                   "enhanced_eligibility_types": [], "evidence": evidence,
                   "evidence_details": {"due_by": now + DISPUTE_RESPONSE_SECONDS, "enhanced_eligibility": {},
                                        "has_evidence": False, "past_due": False, "submission_count": 0,
                                        "submission_method": "not_submitted"},
                   "intended_submission_method": None, "is_charge_refundable": False, "livemode": False,
                   "metadata": {}, "network_reason_code": code, "payment_intent": charge["payment_intent"],
                   "payment_method_details": {"card": {"brand": "visa", "case_type": "chargeback", "network": "visa",
                                                       "network_reason_code": code}, "type": "card"},
                   "reason": reason, "status": "needs_response"}
        self.disputes[dispute_id] = dispute
        charge["disputed"] = True
        log.info("charge %s disputed (%s): dispute %s", charge["id"], reason, dispute_id)
        return dispute

    def _close_dispute(self, dispute: dict, status: str, request) -> list[dict]:
        if dispute["status"] in ("won", "lost", "warning_closed", "prevented"):
            raise StripeError(400, f"The dispute {dispute['id']} is already closed ({dispute['status']}).",
                              param="dispute")
        dispute["status"] = status
        log.info("dispute %s closed: %s", dispute["id"], status)
        return [self._event("charge.dispute.closed", dispute, request=request)]

    # ----- internals: API endpoints (called with the lock held) ----------------------------------

    def _customer_create(self, params, request):
        _check_params(params, "customer_create")
        customer = self._new_customer(email=params.get("email") or None, name=params.get("name") or None,
                                      metadata=_metadata({}, params.get("metadata", {})),
                                      description=params.get("description"), phone=params.get("phone"),
                                      invoice_prefix=params.get("invoice_prefix"),
                                      preferred_locales=params.get("preferred_locales"))
        return _Outcome(body=self._render(customer, _expand_list(params)))

    def _customer_get(self, params, request, customer_id):
        _check_params(params, "retrieve")
        customer = self.customers.get(customer_id)
        if customer is None:
            raise _no_such("customer", customer_id)
        return _Outcome(body=self._render(customer, _expand_list(params)))

    def _customer_update(self, params, request, customer_id):
        _check_params(params, "customer_update")
        customer = self.customers.get(customer_id)
        if customer is None:
            raise _no_such("customer", customer_id)
        for name in ("email", "name", "description", "phone"):
            if name in params:
                customer[name] = _str(params[name], name) or None
        if "preferred_locales" in params:
            customer["preferred_locales"] = list(params["preferred_locales"] or [])
        if "metadata" in params:
            customer["metadata"] = _metadata(customer["metadata"], params["metadata"])
        return _Outcome(body=self._render(customer, _expand_list(params)))

    def _customer_list(self, params, request):
        _check_params(params, "customer_list")
        found = [c for c in self.customers.values() if "email" not in params or c["email"] == params["email"]]
        return _Outcome(body=self._list(found, "/v1/customers", params, _expand_list(params)))

    def _product_create(self, params, request):
        _check_params(params, "product_create")
        name = params.get("name")
        if not name:
            raise _missing("name")
        product_id = params.get("id") or new_id("prod_", 14)
        if product_id in self.products:
            raise StripeError(400, "Product already exists.", code="resource_already_exists", param="id")
        now = self._now()
        product = {"id": product_id, "object": "product", "active": _bool(params.get("active", True), "active"),
                   "created": now, "default_price": None, "description": params.get("description") or None,
                   "images": list(params.get("images") or []), "livemode": False, "marketing_features": [],
                   "metadata": _metadata({}, params.get("metadata", {})), "name": _str(name, "name"),
                   "package_dimensions": None, "shippable": None,
                   "statement_descriptor": params.get("statement_descriptor") or None, "tax_code": None,
                   "tax_details": None, "type": params.get("type", "service"),
                   "unit_label": params.get("unit_label") or None, "updated": now, "url": params.get("url") or None}
        self.products[product_id] = product
        return _Outcome(body=self._render(product, _expand_list(params)))

    def _product_get(self, params, request, product_id):
        _check_params(params, "retrieve")
        product = self.products.get(product_id)
        if product is None:
            raise _no_such("product", product_id)
        return _Outcome(body=self._render(product, _expand_list(params)))

    def _product_update(self, params, request, product_id):
        _check_params(params, "product_update")
        product = self.products.get(product_id)
        if product is None:
            raise _no_such("product", product_id)
        for name in ("name", "description", "unit_label", "statement_descriptor", "url"):
            if name in params:
                product[name] = _str(params[name], name) or None
        if "images" in params:
            product["images"] = list(params["images"] or [])
        if "active" in params:
            product["active"] = _bool(params["active"], "active")
        if "metadata" in params:
            product["metadata"] = _metadata(product["metadata"], params["metadata"])
        product["updated"] = self._now()
        return _Outcome(body=self._render(product, _expand_list(params)))

    def _product_list(self, params, request):
        _check_params(params, "product_list")
        found = list(self.products.values())
        if "active" in params:
            active = _bool(params["active"], "active")
            found = [p for p in found if p["active"] == active]
        if "ids" in params:
            ids = params["ids"] if isinstance(params["ids"], list) else [params["ids"]]
            found = [p for p in found if p["id"] in ids]
        return _Outcome(body=self._list(found, "/v1/products", params, _expand_list(params)))

    def _price_create(self, params, request):
        _check_params(params, "price_create")
        if "currency" not in params:
            raise _missing("currency")
        if "product" in params and "product_data" in params:
            raise StripeError(400, "You may only specify one of these parameters: product, product_data.",
                              code="parameters_exclusive", param="product")
        if "product_data" in params:
            data = params["product_data"]
            if not isinstance(data, dict) or not data.get("name"):
                raise _missing("product_data[name]")
            product_id = self._product_create({"name": data["name"], **{k: v for k, v in data.items()
                                                                       if k in ("metadata", "active", "id")}},
                                              request).body["id"]
        elif "product" in params:
            product_id = _str(params["product"], "product")
            if product_id not in self.products:
                raise _no_such("product", product_id, param="product", status=400)
        else:
            raise _missing("product")
        if "unit_amount" not in params:
            raise _missing("unit_amount")
        unit_amount = _int(params["unit_amount"], "unit_amount")
        if unit_amount < 0:
            raise StripeError(400, "This value must be greater than or equal to 0.", param="unit_amount")
        recurring = None
        if "recurring" in params:
            raw = params["recurring"]
            if not isinstance(raw, dict) or not raw.get("interval"):
                raise _missing("recurring[interval]")
            if raw["interval"] not in ("day", "week", "month", "year"):
                raise StripeError(400, "Invalid recurring[interval]: must be one of day, week, month, or year",
                                  param="recurring[interval]")
            extra = set(raw) - {"interval", "interval_count", "usage_type"}
            if extra:
                raise StripeError(400, f"The Stripe stand-in does not model recurring[{sorted(extra)[0]}].",
                                  param=f"recurring[{sorted(extra)[0]}]")
            if raw.get("usage_type", "licensed") != "licensed":
                raise StripeError(400, "The Stripe stand-in models licensed prices only.",
                                  param="recurring[usage_type]")
            recurring = {"interval": raw["interval"],
                         "interval_count": _int(raw.get("interval_count", 1), "recurring[interval_count]"),
                         "meter": None, "trial_period_days": None, "usage_type": "licensed"}
        lookup_key = params.get("lookup_key") or None
        if lookup_key is not None:
            self._claim_lookup_key(lookup_key, _bool(params.get("transfer_lookup_key", False), "transfer_lookup_key"))
        price = {"id": new_id("price_"), "object": "price", "active": _bool(params.get("active", True), "active"),
                 "billing_scheme": "per_unit", "created": self._now(), "currency": _str(params["currency"],
                                                                                      "currency").lower(),
                 "custom_unit_amount": None, "livemode": False, "lookup_key": lookup_key,
                 "metadata": _metadata({}, params.get("metadata", {})), "nickname": params.get("nickname") or None,
                 "product": product_id, "recurring": recurring,
                 "tax_behavior": params.get("tax_behavior", "unspecified"), "tiers_mode": None,
                 "transform_quantity": None, "type": "recurring" if recurring else "one_time",
                 "unit_amount": unit_amount, "unit_amount_decimal": str(unit_amount)}
        self.prices[price["id"]] = price
        return _Outcome(body=self._render(price, _expand_list(params)))

    def _claim_lookup_key(self, lookup_key: str, transfer: bool, keep: str | None = None) -> None:
        for other in self.prices.values():
            if other["lookup_key"] == lookup_key and other["id"] != keep:
                if not transfer:
                    raise StripeError(400, f"A price (`{other['id']}`) already uses that lookup key.",
                                      param="lookup_key")
                other["lookup_key"] = None

    def _price_get(self, params, request, price_id):
        _check_params(params, "retrieve")
        price = self.prices.get(price_id)
        if price is None:
            raise _no_such("price", price_id)
        return _Outcome(body=self._render(price, _expand_list(params)))

    def _price_update(self, params, request, price_id):
        _check_params(params, "price_update")
        price = self.prices.get(price_id)
        if price is None:
            raise _no_such("price", price_id)
        if "lookup_key" in params:
            key = params["lookup_key"] or None
            if key is not None:
                self._claim_lookup_key(key, _bool(params.get("transfer_lookup_key", False), "transfer_lookup_key"),
                                       keep=price_id)
            price["lookup_key"] = key
        if "active" in params:
            price["active"] = _bool(params["active"], "active")
        if "nickname" in params:
            price["nickname"] = params["nickname"] or None
        if "tax_behavior" in params:
            price["tax_behavior"] = params["tax_behavior"]
        if "metadata" in params:
            price["metadata"] = _metadata(price["metadata"], params["metadata"])
        return _Outcome(body=self._render(price, _expand_list(params)))

    def _price_list(self, params, request):
        _check_params(params, "price_list")
        found = list(self.prices.values())
        if "lookup_keys" in params:
            keys = params["lookup_keys"] if isinstance(params["lookup_keys"], list) else [params["lookup_keys"]]
            found = [p for p in found if p["lookup_key"] in keys]
        if "active" in params:
            active = _bool(params["active"], "active")
            found = [p for p in found if p["active"] == active]
        for name in ("product", "currency", "type"):
            if name in params:
                found = [p for p in found if p[name] == params[name]]
        return _Outcome(body=self._list(found, "/v1/prices", params, _expand_list(params)))

    def _session_create(self, params, request):
        _check_params(params, "session_create")
        mode = params.get("mode")
        if not mode:
            raise _missing("mode")
        if mode not in ("payment", "setup", "subscription"):
            raise StripeError(400, "Invalid mode: must be one of payment, setup, or subscription",
                              param="mode")
        if mode != "subscription":
            raise StripeError(400, f"The Stripe stand-in supports only mode=subscription, not {mode!r}.",
                              param="mode")
        if params.get("ui_mode", "hosted") != "hosted":
            raise StripeError(400, "The Stripe stand-in supports only ui_mode=hosted.", param="ui_mode")
        if "customer" in params and "customer_email" in params:
            raise StripeError(400, "You may only specify one of these parameters: customer, customer_email.",
                              code="parameters_exclusive", param="customer")
        customer_id = params.get("customer") or None
        if customer_id is not None and customer_id not in self.customers:
            raise _no_such("customer", customer_id, param="customer", status=400)
        raw_lines = params.get("line_items")
        if not raw_lines:
            raise _missing("line_items")
        if not isinstance(raw_lines, list):
            raise StripeError(400, "Invalid array", param="line_items")
        lines = []
        currency = None
        for i, raw in enumerate(raw_lines):
            if not isinstance(raw, dict):
                raise StripeError(400, "Invalid object", param=f"line_items[{i}]")
            if "price_data" in raw:
                raise StripeError(400, "The Stripe stand-in does not model price_data; create a price first.",
                                  param=f"line_items[{i}][price_data]")
            extra = set(raw) - {"price", "quantity"}
            if extra:
                name = sorted(extra)[0]
                raise StripeError(400, f"The Stripe stand-in does not model line_items[{i}][{name}].",
                                  param=f"line_items[{i}][{name}]")
            price_id = raw.get("price")
            if not price_id:
                raise _missing(f"line_items[{i}][price]")
            price = self.prices.get(price_id)
            if price is None:
                raise _no_such("price", price_id, param=f"line_items[{i}][price]", status=400)
            if not price["active"]:
                raise StripeError(400, "The price specified is inactive. This field only accepts active prices.",
                                  param=f"line_items[{i}][price]")
            if "quantity" not in raw:
                raise StripeError(400, f"Quantity is required. Add `quantity` to `line_items[{i}]`",
                                  code="parameter_missing", param=f"line_items[{i}][quantity]")
            quantity = _int(raw["quantity"], f"line_items[{i}][quantity]")
            if quantity < 1:
                raise StripeError(400, "This value must be greater than or equal to 1.",
                                  param=f"line_items[{i}][quantity]")
            if currency is not None and price["currency"] != currency:
                raise StripeError(400, "All prices on a Checkout Session must have the same currency.",
                                  param=f"line_items[{i}][price]")
            currency = price["currency"]
            lines.append({"id": new_id("li_"), "price": price_id, "quantity": quantity})
        if not any(self.prices[line["price"]]["recurring"] for line in lines):
            raise StripeError(400, "You must provide at least one recurring price in `subscription` mode when "
                                   "using prices.", param="line_items")
        sub_data = params.get("subscription_data") or {}
        if not isinstance(sub_data, dict):
            raise StripeError(400, "Invalid object", param="subscription_data")
        for name in sub_data:
            if name not in _SUBSCRIPTION_DATA_MODELLED:
                raise StripeError(400, f"The Stripe stand-in does not model subscription_data[{name}].",
                                  param=f"subscription_data[{name}]")
        sub_data = {"metadata": _metadata({}, sub_data.get("metadata", {}), "subscription_data[metadata]"),
                    "description": sub_data.get("description")}
        for name in ("success_url", "cancel_url"):
            if name in params and not re.match(r"^https?://", str(params[name])):
                raise StripeError(400, "Not a valid URL", code="url_invalid", param=name)
        now = self._now()
        total = sum((self.prices[line["price"]]["unit_amount"] or 0) * line["quantity"] for line in lines)
        session_id = "cs_test_" + "".join(secrets.choice(ALNUM) for _ in range(58))
        customer_email = params.get("customer_email") or None
        allow_codes = params.get("allow_promotion_codes")
        session = {
            "id": session_id, "object": "checkout.session", "adaptive_pricing": {"enabled": False},
            "after_expiration": None, "allowed_payment_method_types": None,
            "allow_promotion_codes": None if allow_codes is None else _bool(allow_codes, "allow_promotion_codes"),
            "amount_subtotal": total, "amount_total": total,
            "automatic_tax": {"enabled": False, "liability": None, "provider": None, "status": None},
            "billing_address_collection": params.get("billing_address_collection"), "branding_settings": None,
            "cancel_url": params.get("cancel_url"), "client_reference_id": params.get("client_reference_id") or None,
            "client_secret": None, "collected_information": None, "consent": None, "consent_collection": None,
            "created": now, "currency": currency, "currency_conversion": None, "custom_fields": [],
            "custom_text": {"after_submit": None, "shipping_address": None, "submit": None,
                            "terms_of_service_acceptance": None},
            "customer": customer_id, "customer_account": None, "customer_creation": None,
            "customer_details": None, "customer_email": customer_email, "discounts": [],
            "excluded_payment_method_types": None, "expires_at": now + SESSION_TTL, "integration_identifier": None,
            "invoice": None, "invoice_creation": None, "livemode": False, "locale": params.get("locale") or None,
            "managed_payments": None, "metadata": _metadata({}, params.get("metadata", {})), "mode": "subscription",
            "name_collection": None, "optional_items": None, "origin_context": None, "payment_intent": None,
            "payment_link": None,
            "payment_method_collection": params.get("payment_method_collection", "always"),
            "payment_method_configuration_details": None, "payment_method_options": {},
            "payment_method_types": list(params.get("payment_method_types") or ["card"]),
            "payment_status": "unpaid", "permissions": None, "phone_number_collection": {"enabled": False},
            "presentment_details": None, "recovered_from": None, "redirect_on_completion": None,
            "return_url": None, "saved_payment_method_options": None, "setup_intent": None,
            "shipping_address_collection": None, "shipping_cost": None, "shipping_options": [], "status": "open",
            "submit_type": params.get("submit_type"), "subscription": None, "success_url": params.get("success_url"),
            "tax_id_collection": {"enabled": False, "required": "never"},
            "total_details": {"amount_discount": 0, "amount_shipping": 0, "amount_tax": 0}, "ui_mode": "hosted",
            "url": self.checkout_url(session_id), "wallet_options": None}
        self.checkout_sessions[session_id] = session
        self._session_lines[session_id] = lines
        self._session_sub_data[session_id] = sub_data
        log.info("checkout session %s created", session_id)
        return _Outcome(body=self._render(session, _expand_list(params)))

    def _session_get(self, params, request, session_id):
        _check_params(params, "retrieve")
        session = self.checkout_sessions.get(session_id)
        if session is None:
            raise _no_such("checkout.session", session_id)
        return _Outcome(body=self._render(session, _expand_list(params)))

    def _subscription_get(self, params, request, subscription_id):
        _check_params(params, "retrieve")
        sub = self.subscriptions.get(subscription_id)
        if sub is None:
            raise _no_such("subscription", subscription_id)
        return _Outcome(body=self._render(sub, _expand_list(params)))

    def _subscription_update(self, params, request, subscription_id):
        _check_params(params, "subscription_update")
        sub = self.subscriptions.get(subscription_id)
        if sub is None:
            raise _no_such("subscription", subscription_id)
        # validate everything first, then apply: a refused request changes nothing
        cancel = None
        if "cancel_at_period_end" in params:
            cancel = _bool(params["cancel_at_period_end"], "cancel_at_period_end")
            if sub["status"] == "canceled":
                raise StripeError(400, "A canceled subscription can only update its cancellation_details and "
                                       "metadata.", param="cancel_at_period_end")
        metadata = _metadata(sub["metadata"], params["metadata"]) if "metadata" in params else sub["metadata"]
        description = (params["description"] or None) if "description" in params else sub["description"]
        details = dict(sub["cancellation_details"])
        if "cancellation_details" in params:
            raw = params["cancellation_details"] or {}
            if not isinstance(raw, dict):
                raise StripeError(400, "Invalid object", param="cancellation_details")
            details.update({k: raw[k] or None for k in ("comment", "feedback") if k in raw})
        previous = {}
        if cancel is not None:
            previous.update(self._apply_cancel_flag(sub, cancel))
        if metadata != sub["metadata"]:
            previous["metadata"], sub["metadata"] = sub["metadata"], metadata
        if description != sub["description"]:
            previous["description"], sub["description"] = sub["description"], description
        if details != sub["cancellation_details"]:
            previous.setdefault("cancellation_details", copy.deepcopy(sub["cancellation_details"]))
            sub["cancellation_details"].update(details)
        events = []
        if previous:
            events.append(self._event("customer.subscription.updated", sub, previous, request=request))
        return _Outcome(body=self._render(sub, _expand_list(params)), events=events)

    def _subscription_cancel(self, params, request, subscription_id):
        _check_params(params, "subscription_cancel")
        sub = self.subscriptions.get(subscription_id)
        if sub is None:
            raise _no_such("subscription", subscription_id)
        details = params.get("cancellation_details") or {}
        events = self._cancel_now(sub, details if isinstance(details, dict) else {}, request)
        return _Outcome(body=self._render(sub, _expand_list(params)), events=events)

    def _subscription_list(self, params, request):
        _check_params(params, "subscription_list")
        found = list(self.subscriptions.values())
        if "customer" in params:
            found = [s for s in found if s["customer"] == params["customer"]]
        status = params.get("status")
        if status is None:
            found = [s for s in found if s["status"] not in ("canceled", "incomplete_expired")]
        elif status == "ended":
            found = [s for s in found if s["status"] in ("canceled", "incomplete_expired")]
        elif status != "all":
            found = [s for s in found if s["status"] == status]
        if "price" in params:
            found = [s for s in found if any(i["price"]["id"] == params["price"] for i in s["items"]["data"])]
        return _Outcome(body=self._list(found, "/v1/subscriptions", params, _expand_list(params)))

    def _invoice_get(self, params, request, invoice_id):
        _check_params(params, "retrieve")
        invoice = self.invoices.get(invoice_id)
        if invoice is None:
            raise _no_such("invoice", invoice_id)
        return _Outcome(body=self._render(invoice, _expand_list(params)))

    def _invoice_list(self, params, request):
        _check_params(params, "invoice_list")
        found = list(self.invoices.values())
        if "customer" in params:
            found = [i for i in found if i["customer"] == params["customer"]]
        if "subscription" in params:
            found = [i for i in found if i["parent"]["subscription_details"]["subscription"] == params["subscription"]]
        if "status" in params:
            found = [i for i in found if i["status"] == params["status"]]
        return _Outcome(body=self._list(found, "/v1/invoices", params, _expand_list(params)))

    def _portal_create(self, params, request):
        _check_params(params, "portal_create")
        customer_id = params.get("customer")
        if not customer_id:
            raise _missing("customer")
        if customer_id not in self.customers:
            raise _no_such("customer", customer_id, param="customer", status=400)
        return_url = params.get("return_url") or None
        if return_url is not None and not re.match(r"^https?://", return_url):
            raise StripeError(400, "Not a valid URL", code="url_invalid", param="return_url")
        config_id = params.get("configuration") or self.default_portal_configuration
        config = self.portal_configurations.get(config_id)
        if config is None:
            raise _no_such("configuration", config_id, param="configuration", status=400)
        if not config["active"]:
            raise StripeError(400, f"The configuration {config_id} is not active.", code="resource_missing",
                              param="configuration")
        portal_id = new_id("bps_")
        portal = {"id": portal_id, "object": "billing_portal.session", "after_expiration": None,
                  "configuration": config_id, "created": self._now(), "customer": customer_id,
                  "customer_account": None, "flow": None, "livemode": False, "locale": params.get("locale") or None,
                  "on_behalf_of": None, "return_url": return_url or config["default_return_url"],
                  "url": self.portal_url(portal_id)}
        self.portal_sessions[portal_id] = portal
        return _Outcome(body=self._render(portal, _expand_list(params)))

    def _event_get(self, params, request, event_id):
        _check_params(params, "retrieve")
        event = self._events_by_id.get(event_id)
        if event is None:
            raise _no_such("event", event_id)
        return _Outcome(body=self._render(self._event_as_made(event), _expand_list(params)))

    def _event_as_made(self, event: dict) -> dict:
        """An event as the API shows it: in the version it was made in (self.api_version then), whatever is asked."""
        return render_in_version(event, event["api_version"], self._lookup)

    def _event_list(self, params, request):
        _check_params(params, "event_list")
        found = list(self.events)
        if "type" in params:
            wanted = params["type"]
            if wanted.endswith(".*"):
                found = [e for e in found if e["type"].startswith(wanted[:-1])]
            else:
                found = [e for e in found if e["type"] == wanted]
        if "types" in params:
            types = params["types"] if isinstance(params["types"], list) else [params["types"]]
            found = [e for e in found if e["type"] in types]
        found = [self._event_as_made(e) for e in found]
        return _Outcome(body=self._list(found, "/v1/events", params, _expand_list(params)))

    def _charge_get(self, params, request, charge_id):
        _check_params(params, "retrieve")
        charge = self.charges.get(charge_id)
        if charge is None:
            raise _no_such("charge", charge_id)
        return _Outcome(body=self._render(charge, _expand_list(params)))

    def _charge_list(self, params, request):
        _check_params(params, "charge_list")
        found = list(self.charges.values())
        for name in ("customer", "payment_intent"):
            if name in params:
                found = [c for c in found if c[name] == params[name]]
        return _Outcome(body=self._list(found, "/v1/charges", params, _expand_list(params)))

    def _payment_intent_get(self, params, request, payment_intent_id):
        _check_params(params, "payment_intent_retrieve")
        payment_intent = self.payment_intents.get(payment_intent_id)
        if payment_intent is None:
            raise _no_such("payment_intent", payment_intent_id)
        return _Outcome(body=self._render(payment_intent, _expand_list(params)))

    def _invoice_payment_get(self, params, request, invoice_payment_id):
        _check_params(params, "retrieve")
        payment = self.invoice_payments.get(invoice_payment_id)
        if payment is None:
            raise _no_such("invoice_payment", invoice_payment_id)
        return _Outcome(body=self._render(payment, _expand_list(params)))

    def _invoice_payment_list(self, params, request):
        _check_params(params, "invoice_payment_list")
        found = list(self.invoice_payments.values())
        if "invoice" in params:
            found = [p for p in found if p["invoice"] == params["invoice"]]
        if "status" in params:
            _enum(params["status"], ("canceled", "open", "paid"), "status")
            found = [p for p in found if p["status"] == params["status"]]
        if "payment" in params:
            payment = params["payment"]
            if not isinstance(payment, dict):
                raise StripeError(400, "Invalid object", param="payment")
            if "type" not in payment:
                raise _missing("payment[type]")
            kind = _enum(payment["type"], ("payment_intent", "payment_record"), "payment[type]")
            found = [p for p in found if p["payment"]["type"] == kind]
            if kind in payment:
                found = [p for p in found if p["payment"].get(kind) == payment[kind]]
        return _Outcome(body=self._list(found, "/v1/invoice_payments", params, _expand_list(params)))

    def _refund_create(self, params, request):
        _check_params(params, "refund_create")
        if "charge" in params and "payment_intent" in params:
            raise StripeError(400, "You may only specify one of these parameters: charge, payment_intent.",
                              code="parameters_exclusive", param="charge")
        if params.get("charge"):
            charge = self.charges.get(params["charge"])
            if charge is None:
                raise _no_such("charge", params["charge"], param="charge", status=400)
        elif params.get("payment_intent"):
            payment_intent = self.payment_intents.get(params["payment_intent"])
            if payment_intent is None:
                raise _no_such("payment_intent", params["payment_intent"], param="payment_intent", status=400)
            charge = self.charges.get(payment_intent["latest_charge"] or "")
            if charge is None:
                raise StripeError(400, f"This PaymentIntent ({payment_intent['id']}) does not have a successful "
                                       "charge to refund.", param="payment_intent")
        else:
            raise StripeError(400, "One of the following params should be provided for this request: payment_intent "
                                   "or charge.", code="parameter_missing")
        metadata = _metadata({}, params.get("metadata", {}))
        refund, events = self._refund_charge(charge, params.get("amount"), params.get("reason") or None, metadata,
                                             request)
        return _Outcome(body=self._render(refund, _expand_list(params)), events=events)

    def _refund_get(self, params, request, refund_id):
        _check_params(params, "retrieve")
        refund = self.refunds.get(refund_id)
        if refund is None:
            raise _no_such("refund", refund_id)
        return _Outcome(body=self._render(refund, _expand_list(params)))

    def _refund_list(self, params, request):
        _check_params(params, "refund_list")
        found = list(self.refunds.values())
        for name in ("charge", "payment_intent"):
            if name in params:
                found = [r for r in found if r[name] == params[name]]
        return _Outcome(body=self._list(found, "/v1/refunds", params, _expand_list(params)))

    def _dispute_get(self, params, request, dispute_id):
        _check_params(params, "retrieve")
        dispute = self.disputes.get(dispute_id)
        if dispute is None:
            raise _no_such("dispute", dispute_id)
        return _Outcome(body=self._render(dispute, _expand_list(params)))

    def _dispute_list(self, params, request):
        _check_params(params, "dispute_list")
        found = list(self.disputes.values())
        for name in ("charge", "payment_intent"):
            if name in params:
                found = [d for d in found if d[name] == params[name]]
        return _Outcome(body=self._list(found, "/v1/disputes", params, _expand_list(params)))

    def _dispute_close(self, params, request, dispute_id):
        _check_params(params, "dispute_close")
        dispute = self.disputes.get(dispute_id)
        if dispute is None:
            raise _no_such("dispute", dispute_id)
        events = self._close_dispute(dispute, "lost", request)  # the merchant accepts it: lost
        return _Outcome(body=self._render(dispute, _expand_list(params)), events=events)

    def _subscription_resume(self, params, request, subscription_id):
        _check_params(params, "subscription_resume")
        sub = self.subscriptions.get(subscription_id)
        if sub is None:
            raise _no_such("subscription", subscription_id)
        anchor = params.get("billing_cycle_anchor", {"type": "now"})
        anchor_param = "billing_cycle_anchor"
        if isinstance(anchor, dict):  # stripe-python 16.1.0 sends billing_cycle_anchor[type]
            if "type" not in anchor:
                raise _missing("billing_cycle_anchor[type]")
            anchor, anchor_param = anchor["type"], "billing_cycle_anchor[type]"
        if _enum(anchor, ("now", "unchanged"), anchor_param) != "now":
            raise StripeError(400, "The Stripe stand-in models only billing_cycle_anchor now on resume (unchanged "
                                   "would prorate).", param=anchor_param)
        if "payment_behavior" in params:
            _enum(params["payment_behavior"], ("resume_on_payment_attempt", "resume_on_payment_success"),
                  "payment_behavior")
        if "proration_behavior" in params:
            _enum(params["proration_behavior"], ("always_invoice", "create_prorations", "none"), "proration_behavior")
        _invoice, events = self._resume(sub, request)
        return _Outcome(body=self._render(sub, _expand_list(params)), events=events)

    def _enabled_events(self, value) -> list[str]:
        if not isinstance(value, list):
            raise StripeError(400, "Invalid array", param="enabled_events")
        if not value:
            raise _missing("enabled_events")
        for i, name in enumerate(value):
            if name != "*" and name not in EVENT_TYPES:
                raise StripeError(400, f"Invalid enabled_events[{i}]: must be one of "
                                       f"{_one_of(('*', *EVENT_TYPES))}", param=f"enabled_events[{i}]")
        return list(dict.fromkeys(value))

    def _endpoint_create(self, params, request):
        _check_params(params, "webhook_endpoint_create")
        if not params.get("url"):
            raise _missing("url")
        url = _url(params["url"], "url")
        if "enabled_events" not in params:
            raise _missing("enabled_events")
        events = self._enabled_events(params["enabled_events"])
        version = params.get("api_version") or None
        if version is not None and version not in KNOWN_API_VERSIONS:
            if re.fullmatch(r"\d{4}-\d{2}-\d{2}(\.[a-z]+)?", str(version)):
                raise StripeError(400, f"The Stripe stand-in renders API versions {KNOWN_API_VERSIONS[0]} to "
                                       f"{API_VERSION} only, not {version}.", param="api_version")
            raise StripeError(400, f"Invalid api_version: {version}", param="api_version")
        if _bool(params.get("connect", False), "connect"):
            raise StripeError(400, "The Stripe stand-in does not model Connect endpoints.", param="connect")
        endpoint_id = new_id("we_")
        endpoint = {"id": endpoint_id, "object": "webhook_endpoint", "api_version": version, "application": None,
                    "created": self._now(), "description": params.get("description") or None,
                    "enabled_events": events, "livemode": False,
                    "metadata": _metadata({}, params.get("metadata", {})), "status": "enabled", "url": url}
        self.webhook_endpoints[endpoint_id] = endpoint
        secret = self._endpoint_secrets[endpoint_id] = "whsec_" + "".join(secrets.choice(ALNUM) for _ in range(32))
        body = self._render(endpoint, _expand_list(params))
        body = {k: body[k] for k in ("id", "object", "api_version", "application", "created", "description",
                                     "enabled_events", "livemode", "metadata")} | {"secret": secret} | {
            k: body[k] for k in ("status", "url")}
        log.info("webhook endpoint %s created for %s in %s", endpoint_id, url, version or "the account's version")
        return _Outcome(body=body)

    def _endpoint(self, endpoint_id: str) -> dict:
        endpoint = self.webhook_endpoints.get(endpoint_id)
        if endpoint is None:
            raise _no_such("webhook endpoint", endpoint_id)
        return endpoint

    def _endpoint_get(self, params, request, endpoint_id):
        _check_params(params, "retrieve")
        return _Outcome(body=self._render(self._endpoint(endpoint_id), _expand_list(params)))

    def _endpoint_update(self, params, request, endpoint_id):
        _check_params(params, "webhook_endpoint_update")
        endpoint = self._endpoint(endpoint_id)
        changes = {}
        if "url" in params:
            changes["url"] = _url(params["url"], "url")
        if "enabled_events" in params:
            changes["enabled_events"] = self._enabled_events(params["enabled_events"])
        if "disabled" in params:
            changes["status"] = "disabled" if _bool(params["disabled"], "disabled") else "enabled"
        if "description" in params:
            changes["description"] = _str(params["description"], "description") or None
        if "metadata" in params:
            changes["metadata"] = _metadata(endpoint["metadata"], params["metadata"])
        endpoint.update(changes)
        return _Outcome(body=self._render(endpoint, _expand_list(params)))

    def _endpoint_delete(self, params, request, endpoint_id):
        _check_params(params, "delete")
        self._endpoint(endpoint_id)
        del self.webhook_endpoints[endpoint_id]
        log.info("webhook endpoint %s deleted", endpoint_id)
        return _Outcome(body={"id": endpoint_id, "object": "webhook_endpoint", "deleted": True})

    def _endpoint_list(self, params, request):
        _check_params(params, "webhook_endpoint_list")
        found = list(self.webhook_endpoints.values())
        return _Outcome(body=self._list(found, "/v1/webhook_endpoints", params, _expand_list(params)))

    # Customer Portal configurations

    def _new_portal_configuration(self, params: dict, is_default: bool = False) -> dict:
        """Validate a create request's parameters and store the configuration (Stripe's defaults elsewhere)."""
        if "features" not in params:
            raise _missing("features")
        now = self._now()
        config = {"id": new_id("bpc_"), "object": "billing_portal.configuration", "active": True,
                  "application": None,
                  "business_profile": {"headline": None, "privacy_policy_url": None, "terms_of_service_url": None},
                  "created": now, "default_return_url": None, "features": _default_portal_features(),
                  "is_default": is_default, "livemode": False, "login_page": {"enabled": False, "url": None},
                  "metadata": {}, "name": None, "updated": now}
        self._apply_portal_configuration(config, params, "create")
        self.portal_configurations[config["id"]] = config
        return config

    def _apply_portal_configuration(self, config: dict, params: dict, mode: str) -> None:
        """Merge create or update parameters into a configuration (nested objects merge, as at Stripe); a refused
        request changes nothing."""
        out = copy.deepcopy(config)
        if "business_profile" in params:
            raw = _object(params["business_profile"], "business_profile",
                          ("headline", "privacy_policy_url", "terms_of_service_url"))
            for name, value in raw.items():
                param = f"business_profile[{name}]"
                if name == "headline":
                    out["business_profile"][name] = _str(value, param) or None
                else:
                    out["business_profile"][name] = _url(value, param) if value else None
        if "default_return_url" in params:
            value = params["default_return_url"]
            out["default_return_url"] = _url(value, "default_return_url") if value else None
        if "features" in params:
            raw = _object(params["features"], "features", tuple(_default_portal_features()))
            for name, value in raw.items():
                self._portal_feature(out["features"], name, value, mode)
        if "login_page" in params:
            raw = _object(params["login_page"], "login_page", ("enabled",))
            if "enabled" not in raw:
                raise _missing("login_page[enabled]")
            enabled = _bool(raw["enabled"], "login_page[enabled]")
            url = out["login_page"]["url"] or f"{self.base_url}/p/login/test_{new_id('', 24)}"
            out["login_page"] = {"enabled": enabled, "url": url if enabled else None}
        if "metadata" in params:
            out["metadata"] = _metadata(out["metadata"], params["metadata"])
        if "name" in params:
            out["name"] = _str(params["name"], "name") or None
        if "active" in params:
            active = _bool(params["active"], "active")
            if not active and out["is_default"]:
                raise StripeError(400, "You cannot deactivate the default configuration.", param="active")
            out["active"] = active
        out["updated"] = self._now()
        config.update(out)

    def _portal_feature(self, features: dict, name: str, raw, mode: str) -> None:
        param = f"features[{name}]"
        keys = {"customer_update": ("allowed_updates", "enabled"), "invoice_history": ("enabled",),
                "payment_method_update": ("enabled", "payment_method_configuration"),
                "subscription_cancel": ("cancellation_reason", "enabled", "mode", "proration_behavior"),
                "subscription_pause": ("duration", "enabled"),
                "subscription_update": ("billing_cycle_anchor", "default_allowed_updates", "enabled", "products",
                                        "proration_behavior", "schedule_at_period_end", "trial_update_behavior")}
        raw = _object(raw, param, keys[name])
        optional_on_update = ("customer_update", "subscription_cancel", "subscription_pause", "subscription_update")
        if "enabled" not in raw and name != "subscription_pause" and (mode == "create" or name not in
                                                                       optional_on_update):
            raise _missing(f"{param}[enabled]")
        feature = features[name]
        if "enabled" in raw:
            feature["enabled"] = _bool(raw["enabled"], f"{param}[enabled]")
        if name == "customer_update" and "allowed_updates" in raw:
            feature["allowed_updates"] = _enum_list(raw["allowed_updates"], f"{param}[allowed_updates]",
                                                    ("address", "email", "name", "phone", "shipping", "tax_id"))
        elif name == "payment_method_update" and raw.get("payment_method_configuration"):
            raise StripeError(400, "The Stripe stand-in does not model payment method configurations.",
                              param=f"{param}[payment_method_configuration]")
        elif name == "subscription_cancel":
            if "mode" in raw:
                feature["mode"] = _enum(raw["mode"], ("at_period_end", "immediately"), f"{param}[mode]")
            if "proration_behavior" in raw:
                feature["proration_behavior"] = _enum(raw["proration_behavior"], ("create_prorations", "none"),
                                                      f"{param}[proration_behavior]")
            if feature["proration_behavior"] == "create_prorations" and feature["mode"] != "immediately":
                raise StripeError(400, "proration_behavior create_prorations is only compatible with "
                                       "mode=immediately.", param=f"{param}[proration_behavior]")
            if "cancellation_reason" in raw:
                reason = _object(raw["cancellation_reason"], f"{param}[cancellation_reason]",
                                 ("enabled", "feedback_options", "options"))
                for key in ("enabled", "options") if mode == "create" else ("enabled",):
                    if key not in reason:
                        raise _missing(f"{param}[cancellation_reason][{key}]")
                if reason.get("feedback_options"):
                    raise StripeError(400, "The Stripe stand-in does not model custom feedback options.",
                                      param=f"{param}[cancellation_reason][feedback_options]")
                current = feature["cancellation_reason"]
                current["enabled"] = _bool(reason["enabled"], f"{param}[cancellation_reason][enabled]")
                if "options" in reason:
                    current["options"] = _enum_list(reason["options"], f"{param}[cancellation_reason][options]",
                                                    CANCELLATION_REASONS)
        elif name == "subscription_pause" and (feature["enabled"] or raw.get("duration")):
            raise StripeError(400, "The Stripe stand-in does not model pausing in the portal.", param=param)
        elif name == "subscription_update":
            for key in ("billing_cycle_anchor", "schedule_at_period_end", "trial_update_behavior"):
                if key in raw:
                    raise StripeError(400, f"The Stripe stand-in does not model {param}[{key}].",
                                      param=f"{param}[{key}]")
            if "default_allowed_updates" in raw:
                feature["default_allowed_updates"] = _enum_list(
                    raw["default_allowed_updates"], f"{param}[default_allowed_updates]",
                    ("price", "promotion_code", "quantity"))
            if "proration_behavior" in raw:
                feature["proration_behavior"] = _enum(raw["proration_behavior"],
                                                      ("always_invoice", "create_prorations", "none"),
                                                      f"{param}[proration_behavior]")
            if "products" in raw:
                feature["products"] = self._portal_products(raw["products"], f"{param}[products]")

    def _portal_products(self, raw, param: str) -> list[dict] | None:
        if raw == "":
            return None
        if not isinstance(raw, list):
            raise StripeError(400, "Invalid array", param=param)
        products = []
        for i, entry in enumerate(raw):
            entry = _object(entry, f"{param}[{i}]", ("adjustable_quantity", "prices", "product"))
            for key in ("prices", "product"):
                if key not in entry:
                    raise _missing(f"{param}[{i}][{key}]")
            if entry["product"] not in self.products:
                raise _no_such("product", entry["product"], param=f"{param}[{i}][product]", status=400)
            prices = entry["prices"] if isinstance(entry["prices"], list) else [entry["prices"]]
            for j, price_id in enumerate(prices):
                price = self.prices.get(price_id)
                if price is None or price["product"] != entry["product"]:
                    raise _no_such("price", price_id, param=f"{param}[{i}][prices][{j}]", status=400)
            quantity = {"enabled": False, "maximum": None, "minimum": 0}
            if "adjustable_quantity" in entry:
                raw_quantity = _object(entry["adjustable_quantity"], f"{param}[{i}][adjustable_quantity]",
                                       ("enabled", "maximum", "minimum"))
                quantity["enabled"] = _bool(raw_quantity.get("enabled", False),
                                            f"{param}[{i}][adjustable_quantity][enabled]")
                for key in ("maximum", "minimum"):
                    if key in raw_quantity:
                        quantity[key] = _int(raw_quantity[key], f"{param}[{i}][adjustable_quantity][{key}]")
            products.append({"adjustable_quantity": quantity, "prices": list(prices), "product": entry["product"]})
        return products

    def _portal_config_create(self, params, request):
        _check_params(params, "portal_config_create")
        config = self._new_portal_configuration(params)
        log.info("portal configuration %s created", config["id"])
        return _Outcome(body=self._render(config, _expand_list(params)))

    def _portal_config(self, config_id: str) -> dict:
        config = self.portal_configurations.get(config_id)
        if config is None:
            raise _no_such("configuration", config_id)
        return config

    def _portal_config_get(self, params, request, config_id):
        _check_params(params, "retrieve")
        return _Outcome(body=self._render(self._portal_config(config_id), _expand_list(params)))

    def _portal_config_update(self, params, request, config_id):
        _check_params(params, "portal_config_update")
        config = self._portal_config(config_id)
        self._apply_portal_configuration(config, params, "update")
        return _Outcome(body=self._render(config, _expand_list(params)))

    def _portal_config_list(self, params, request):
        _check_params(params, "portal_config_list")
        found = list(self.portal_configurations.values())
        for name in ("active", "is_default"):
            if name in params:
                wanted = _bool(params[name], name)
                found = [c for c in found if c[name] == wanted]
        return _Outcome(body=self._list(found, "/v1/billing_portal/configurations", params, _expand_list(params)))

    # ----- internals: HTTP API plumbing ----------------------------------------------------------

    def _routes(self):
        return [
            ("POST", r"/v1/customers", self._customer_create),
            ("GET", r"/v1/customers", self._customer_list),
            ("GET", r"/v1/customers/([^/]+)", self._customer_get),
            ("POST", r"/v1/customers/([^/]+)", self._customer_update),
            ("POST", r"/v1/products", self._product_create),
            ("GET", r"/v1/products", self._product_list),
            ("GET", r"/v1/products/([^/]+)", self._product_get),
            ("POST", r"/v1/products/([^/]+)", self._product_update),
            ("POST", r"/v1/prices", self._price_create),
            ("GET", r"/v1/prices", self._price_list),
            ("GET", r"/v1/prices/([^/]+)", self._price_get),
            ("POST", r"/v1/prices/([^/]+)", self._price_update),
            ("POST", r"/v1/checkout/sessions", self._session_create),
            ("GET", r"/v1/checkout/sessions/([^/]+)", self._session_get),
            ("GET", r"/v1/subscriptions", self._subscription_list),
            ("GET", r"/v1/subscriptions/([^/]+)", self._subscription_get),
            ("POST", r"/v1/subscriptions/([^/]+)", self._subscription_update),
            ("DELETE", r"/v1/subscriptions/([^/]+)", self._subscription_cancel),
            ("GET", r"/v1/invoices", self._invoice_list),
            ("GET", r"/v1/invoices/([^/]+)", self._invoice_get),
            ("POST", r"/v1/subscriptions/([^/]+)/resume", self._subscription_resume),
            ("POST", r"/v1/billing_portal/sessions", self._portal_create),
            ("POST", r"/v1/billing_portal/configurations", self._portal_config_create),
            ("GET", r"/v1/billing_portal/configurations", self._portal_config_list),
            ("GET", r"/v1/billing_portal/configurations/([^/]+)", self._portal_config_get),
            ("POST", r"/v1/billing_portal/configurations/([^/]+)", self._portal_config_update),
            ("GET", r"/v1/events", self._event_list),
            ("GET", r"/v1/events/([^/]+)", self._event_get),
            ("GET", r"/v1/charges", self._charge_list),
            ("GET", r"/v1/charges/([^/]+)", self._charge_get),
            ("GET", r"/v1/payment_intents/([^/]+)", self._payment_intent_get),
            ("GET", r"/v1/invoice_payments", self._invoice_payment_list),
            ("GET", r"/v1/invoice_payments/([^/]+)", self._invoice_payment_get),
            ("POST", r"/v1/refunds", self._refund_create),
            ("GET", r"/v1/refunds", self._refund_list),
            ("GET", r"/v1/refunds/([^/]+)", self._refund_get),
            ("GET", r"/v1/disputes", self._dispute_list),
            ("GET", r"/v1/disputes/([^/]+)", self._dispute_get),
            ("POST", r"/v1/disputes/([^/]+)/close", self._dispute_close),
            ("POST", r"/v1/webhook_endpoints", self._endpoint_create),
            ("GET", r"/v1/webhook_endpoints", self._endpoint_list),
            ("GET", r"/v1/webhook_endpoints/([^/]+)", self._endpoint_get),
            ("POST", r"/v1/webhook_endpoints/([^/]+)", self._endpoint_update),
            ("DELETE", r"/v1/webhook_endpoints/([^/]+)", self._endpoint_delete),
        ]

    def _api(self, method: str, path: str, query: str, body: bytes, headers) -> tuple[int, dict, dict, list]:
        """Answer one API request: (status, JSON body, extra headers, events to deliver)."""
        request_id = new_id("req_", 14)
        asked = headers.get("Stripe-Version")
        version = asked or self.account_api_version  # bodies are rendered in it when the stand-in knows it
        out_headers = {"Request-Id": request_id, "Stripe-Version": version}
        key = headers.get("Idempotency-Key") if method == "POST" else None
        if key:
            out_headers["Idempotency-Key"] = key
        try:
            self._authenticate(headers.get("Authorization") or "")
            route = None
            for verb, pattern, handler in self._routes():
                match = re.fullmatch(pattern, path)
                if match and verb == method:
                    route = (handler, match.groups())
                    break
            if route is None:
                raise StripeError(404, f"Unrecognized request URL ({method}: {path}). Please see "
                                       "https://stripe.com/docs or we can help at https://support.stripe.com/.",
                                  details=False)
            raw = query if method in ("GET", "DELETE") else body.decode("utf-8", "replace")
            pairs = parse_qsl(raw, keep_blank_values=True)
            params = parse_form(pairs)
            handler, args = route
            with self._lock:
                if key:
                    replay = self._idempotent_replay(key, method, path, pairs)
                    if replay is not None:
                        out_headers.update({"Idempotent-Replayed": "true", "Original-Request": replay["request_id"]})
                        body = self._in_version(copy.deepcopy(replay["body"]), version)
                        return replay["status"], body, out_headers, []
                try:
                    outcome = handler(params, (request_id, key), *args)
                except StripeError:
                    raise
                except Exception:
                    log.exception("internal error in %s %s", method, path)
                    raise StripeError(500, "An unknown error occurred", type_="api_error", details=True) from None
                if key and (outcome.status < 400 or outcome.status >= 500):
                    self._idempotency[key] = {"method": method, "path": path, "pairs": sorted(pairs),
                                              "status": outcome.status, "body": copy.deepcopy(outcome.body),
                                              "request_id": request_id, "at": self._now()}
                body = self._in_version(outcome.body, version)
            return outcome.status, body, out_headers, outcome.events
        except StripeError as exc:
            out_headers.update(exc.headers)
            return exc.status, exc.body(request_id, self._now()), out_headers, []

    def _in_version(self, body, version: str):
        """An API response body in the version asked for (events keep the version they were made in)."""
        shape = version_shape(version)
        return body if shape is None else _render_node(body, version, shape, self._lookup, False)

    def _authenticate(self, authorization: str) -> None:
        scheme, _, credentials = authorization.partition(" ")
        key = ""
        if scheme.lower() == "bearer":
            key = credentials.strip()
        elif scheme.lower() == "basic":
            try:
                key = base64.b64decode(credentials.strip()).decode("utf-8").partition(":")[0]
            except (binascii.Error, UnicodeDecodeError):
                key = ""
        if not key:
            raise StripeError(401, "You did not provide an API key. You need to provide your API key in the "
                                   "Authorization header, using Bearer auth (e.g. 'Authorization: Bearer "
                                   "YOUR_SECRET_KEY'). See https://stripe.com/docs/api#authentication for details, "
                                   "or we can help at https://support.stripe.com/.",
                              details=False, headers={"WWW-Authenticate": 'Basic realm="Stripe"'})
        if not hmac.compare_digest(key.encode("utf-8"), self.api_key.encode("utf-8")):
            raise StripeError(401, f"Invalid API Key provided: {mask_key(key)}", details=False,
                              headers={"WWW-Authenticate": 'Basic realm="Stripe"'})

    def _idempotent_replay(self, key, method, path, pairs):
        record = self._idempotency.get(key)
        if record is None:
            return None
        if self._now() - record["at"] > IDEMPOTENCY_TTL:
            del self._idempotency[key]
            return None
        if record["method"] != method or record["path"] != path or record["pairs"] != sorted(pairs):
            raise StripeError(400, "Keys for idempotent requests can only be used with the same parameters they "
                                   f"were first used with. Try using a key other than '{key}' if you meant to "
                                   "execute a different request.", type_="idempotency_error")
        return record

    # ----- internals: hosted pages ---------------------------------------------------------------

    def _checkout_page(self, method: str, session_id: str, form: dict) -> tuple[int, str, dict, list]:
        """(status, HTML, headers, events) for the hosted Checkout page."""
        with self._lock:
            session = self.checkout_sessions.get(session_id)
            if session is None:
                return 404, _error_page("Something went wrong", "The page you were looking for could not be "
                                        "found."), {}, []
            if session["status"] != "open":
                return 410, _error_page("This Checkout Session is no longer active",
                                        "It has already been completed."), {}, []
            if method == "GET":
                return 200, self._checkout_html(session), {}, []
            action = form.get("action")
            if action == "cancel":
                if session["cancel_url"]:
                    return 303, "", {"Location": session["cancel_url"]}, []
                return 200, self._checkout_html(session), {}, []
            if action != "pay":
                return 400, self._checkout_html(session, "Choose Pay or Cancel."), {}, []
            email = (form.get("email") or "").strip()
            if not session["customer"] and not session["customer_email"] and not re.fullmatch(
                    r"[^@\s]+@[^@\s]+\.[^@\s]+", email):
                return 400, self._checkout_html(session, "Enter a valid email address."), {}, []
            outcome = self._pay(session_id, email or None)
            if session["success_url"]:
                location = session["success_url"].replace("{CHECKOUT_SESSION_ID}", session_id)
                return 303, "", {"Location": location}, outcome.events
            return 200, _error_page("Thanks for your order", "Your subscription is active."), {}, outcome.events

    def _checkout_html(self, session: dict, problem: str | None = None) -> str:
        rows = []
        for line in self._session_lines[session["id"]]:
            price = self.prices[line["price"]]
            product = self.products.get(price["product"], {})
            amount = format_amount((price["unit_amount"] or 0) * line["quantity"], price["currency"])
            qty = f"{line['quantity']} × " if line["quantity"] != 1 else ""
            rows.append(f'<li class="line" data-price="{_e(price["id"])}"><strong class="product">{qty}'
                        f'{_e(product.get("name", price["product"]))}</strong> '
                        f'<span class="price">{_e(amount)} {_e(format_recurring(price["recurring"]))}</span></li>')
        email = session["customer_email"] or (self.customers[session["customer"]]["email"]
                                              if session["customer"] else None)
        email_html = (f'<p>Email <strong id="email">{_e(email)}</strong></p>' if email else
                      '<p><label>Email <input type="email" name="email" id="email" required '
                      'autocomplete="email"></label></p>')
        first_price = self.prices[self._session_lines[session["id"]][0]["price"]]
        headline = (f'{format_amount(session["amount_total"], session["currency"])} '
                    f'{format_recurring(first_price["recurring"])}')
        action = f"/c/pay/{session['id']}"
        problem_html = f'<p id="problem" role="alert" style="color:#b00">{_e(problem)}</p>' if problem else ""
        cancel_form = ""
        if session["cancel_url"]:
            cancel_form = (f'<form method="post" action="{_e(action)}">'
                           '<button type="submit" id="cancel" name="action" value="cancel" formnovalidate>'
                           "Cancel</button></form>")
        else:
            cancel_form = ('<form method="post" action="' + _e(action) + '"><button type="submit" id="cancel" '
                           'name="action" value="cancel" formnovalidate disabled>Cancel</button></form>')
        return _page(
            f"Subscribe - {self.business_name}",
            f'<p style="{_BADGE}">TEST MODE</p>'
            f'<h1 id="merchant">{_e(self.business_name)}</h1>'
            f'<p>Subscribe</p><p id="price" style="font-size:1.6rem;margin:.2rem 0">{_e(headline)}</p>'
            f'<ul id="lines">{"".join(rows)}</ul>{problem_html}'
            f'<form method="post" action="{_e(action)}" id="pay-form">{email_html}'
            '<p style="color:#555">Card 4242 4242 4242 4242 (stand-in: nothing is charged)</p>'
            '<button type="submit" id="pay" name="action" value="pay" style="width:100%;padding:.7rem">Pay'
            "</button></form>"
            f"{cancel_form}")

    def _portal_page(self, method: str, portal_id: str, form: dict) -> tuple[int, str, dict, list]:
        """(status, HTML, headers, events) for the hosted Customer Portal page, as its configuration allows."""
        with self._lock:
            portal = self.portal_sessions.get(portal_id)
            if portal is None:
                return 404, _error_page("Something went wrong", "This portal link is not valid."), {}, []
            features = self.portal_configurations[portal["configuration"]]["features"]
            subs = [s for s in self.subscriptions.values() if s["customer"] == portal["customer"]]
            live = [s for s in subs if s["status"] not in ("canceled", "incomplete_expired")]
            sub = (live or subs)[-1] if subs else None  # the newest live one, else the newest
            if method == "POST":
                action = form.get("action")
                cancel = features["subscription_cancel"]
                if sub is None or action not in ("cancel", "resume") or sub["status"] == "canceled" or (
                        action == "cancel" and not cancel["enabled"]):
                    return 400, self._portal_html(portal, sub, "That change is not possible."), {}, []
                if action == "cancel" and cancel["mode"] == "immediately":
                    events = self._cancel_now(sub, None, request=None)
                else:
                    events = self._set_cancel_at_period_end(sub, action == "cancel", request=None)
                return 303, "", {"Location": f"/p/session/{portal_id}"}, events
            return 200, self._portal_html(portal, sub), {}, []

    def _portal_html(self, portal: dict, sub: dict | None, problem: str | None = None) -> str:
        config = self.portal_configurations[portal["configuration"]]
        features = config["features"]
        customer = self.customers[portal["customer"]]
        action = f"/p/session/{portal['id']}"
        parts = [f'<p style="{_BADGE}">TEST MODE</p>', f'<h1 id="merchant">{_e(self.business_name)}</h1>']
        if config["business_profile"]["headline"]:
            parts.append(f'<p id="headline">{_e(config["business_profile"]["headline"])}</p>')
        parts.append(f'<p id="customer-email">{_e(customer["email"] or "")}</p>')
        if problem:
            parts.append(f'<p id="problem" role="alert" style="color:#b00">{_e(problem)}</p>')
        if sub is None:
            parts.append('<section id="subscription" data-status="none"><p>No subscription.</p></section>')
        else:
            parts.append(self._portal_subscription_html(sub, features["subscription_cancel"], action))
        if features["payment_method_update"]["enabled"]:
            charges = [c for c in self.charges.values() if c["customer"] == customer["id"]]
            card = charges[-1]["payment_method_details"]["card"] if charges else None
            shown = f'{card["brand"].title()} •••• {card["last4"]}' if card else "No card on file"
            parts.append('<section id="payment-method"><h2>Payment method</h2>'
                         f'<p id="card">{_e(shown)}</p>'
                         '<button type="button" id="update-payment-method" disabled>Update payment method</button>'
                         '<p style="color:#555">(the stand-in does not model payment methods)</p></section>')
        if features["invoice_history"]["enabled"]:
            invoices = sorted((i for i in self.invoices.values() if i["customer"] == customer["id"]
                               and i["status"] != "draft"), key=lambda i: i["created"], reverse=True)
            rows = "".join(
                f'<tr class="invoice" data-id="{_e(i["id"])}"><td class="number">{_e(i["number"] or "")}</td>'
                f'<td class="date"><time datetime="{_iso(i["created"])}">{_date(i["created"])}</time></td>'
                f'<td class="amount">{_e(format_amount(i["total"], i["currency"]))}</td>'
                f'<td class="status">{_e(i["status"].title())}</td></tr>' for i in invoices)
            parts.append('<section id="invoice-history"><h2>Invoice history</h2>'
                         + (f'<table id="invoices">{rows}</table>' if rows else "<p>No invoices.</p>")
                         + "</section>")
        if portal["return_url"]:
            parts.append(f'<p><a id="return" href="{_e(portal["return_url"])}">Return to {_e(self.business_name)}'
                         "</a></p>")
        links = [(name, label) for name, label in (("privacy_policy_url", "Privacy"),
                                                   ("terms_of_service_url", "Terms"))
                 if config["business_profile"][name]]
        if links:
            parts.append("<p>" + " · ".join(
                f'<a id="{name.split("_")[0]}" href="{_e(config["business_profile"][name])}">{label}</a>'
                for name, label in links) + "</p>")
        return _page(f"Billing - {self.business_name}", "".join(parts))

    def _portal_subscription_html(self, sub: dict, cancel: dict, action: str) -> str:
        item = sub["items"]["data"][0]
        price = item["price"]
        product = self.products.get(price["product"], {})
        end = max(i["current_period_end"] for i in sub["items"]["data"])
        label = {"active": "Active", "past_due": "Past due", "canceled": "Canceled", "trialing": "Trial",
                 "unpaid": "Unpaid", "paused": "Paused"}.get(sub["status"], sub["status"])
        if sub["status"] == "canceled":
            when = f'Ended on {_date(sub["ended_at"] or end)}'
            stamp = sub["ended_at"] or end
        elif sub["cancel_at_period_end"]:
            when, stamp = f"Cancels on {_date(end)}", end
        else:
            when, stamp = f"Renews on {_date(end)}", end
        button = ""
        if sub["status"] != "canceled":
            if sub["cancel_at_period_end"]:
                button = ('<button type="submit" id="resume-subscription" name="action" value="resume">'
                          "Renew plan</button>")
            elif cancel["enabled"]:
                button = (f'<button type="submit" id="cancel-subscription" name="action" value="cancel" '
                          f'data-mode="{_e(cancel["mode"])}">Cancel plan</button>')
            if button:
                button = f'<form method="post" action="{_e(action)}">{button}</form>'
        return (f'<section id="subscription" data-id="{_e(sub["id"])}" data-status="{_e(sub["status"])}" '
                f'data-cancel-at-period-end="{"true" if sub["cancel_at_period_end"] else "false"}">'
                f'<h2>Current plan</h2><p id="plan">{_e(product.get("name", price["product"]))} - '
                f'{_e(format_amount(price["unit_amount"] or 0, price["currency"]))} '
                f'{_e(format_recurring(price["recurring"]))}</p>'
                f'<p>Status: <strong id="status">{_e(label)}</strong></p>'
                f'<p id="period-end" data-timestamp="{stamp}"><time datetime="{_iso(stamp)}">{_e(when)}</time></p>'
                f"{button}</section>")


# ----- HTTP server ---------------------------------------------------------------------------------

class _Server(TrackingHTTPServer):
    fake: FakeStripe


class _BodyTooLarge(Exception):
    pass


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "FakeStripe/1.0"
    sys_version = ""
    timeout = 15
    disable_nagle_algorithm = True
    server: _Server

    def log_request(self, code="-", size="-"):
        path = urlsplit(self.path).path  # never the query string or headers: they may carry keys or emails
        log.info("%s %s -> %s", self.command, path, code)

    def log_message(self, format, *args):
        log.info("%s", format % args)

    def do_GET(self):
        self._dispatch("GET")

    def do_POST(self):
        self._dispatch("POST")

    def do_DELETE(self):
        self._dispatch("DELETE")

    def _dispatch(self, method):
        fake = self.server.fake
        parts = urlsplit(self.path)
        path = parts.path
        try:
            body = self._read_body()
        except _BodyTooLarge:
            self._send(413, b'{"error": {"message": "Request body too large", "type": "invalid_request_error"}}',
                       "application/json")
            self.close_connection = True
            return
        page = re.fullmatch(r"/(c/pay|p/session)/([A-Za-z0-9_]+)", path)
        if page and method in ("GET", "POST"):
            form = {}
            if method == "POST":
                form = {k: v for k, v in parse_qsl(body.decode("utf-8", "replace"), keep_blank_values=True)}
            render = fake._checkout_page if page.group(1) == "c/pay" else fake._portal_page
            status, markup, headers, events = render(method, page.group(2), form)
            fake._dispatch(events)  # synchronous by default: before the page (or its redirect) is answered
            self._send_html(status, markup, headers)
            return
        status, payload, headers, events = fake._api(method, path, parts.query, body, self.headers)
        fake._dispatch(events)
        data = json.dumps(payload, indent=2, ensure_ascii=False).encode("utf-8")
        self._send(status, data, "application/json", headers)

    def _read_body(self) -> bytes:
        length = int(self.headers.get("Content-Length") or 0)
        if length > MAX_BODY:
            raise _BodyTooLarge
        return self.rfile.read(length) if length else b""

    def _send(self, status, body: bytes, ctype: str, headers=None):
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(body)

    def _send_html(self, status, markup: str, headers=None):
        merged = {"Cache-Control": "no-store", "X-Frame-Options": "DENY", "Referrer-Policy": "same-origin"}
        merged.update(headers or {})
        self._send(status, markup.encode("utf-8"), "text/html; charset=utf-8", merged)


# ----- HTML helpers (Stripe's own pages, not the app's: inline styles are fine here) ---------------

_PAGE_STYLE = ("font-family:system-ui,sans-serif;max-width:28rem;margin:3rem auto;padding:1.5rem;"
               "border:1px solid #ccc;border-radius:8px")
_BADGE = "display:inline-block;background:#ffde92;color:#a04b00;padding:.1rem .5rem;border-radius:4px;font-size:.8rem"


def _e(value) -> str:
    return html.escape(str(value), quote=True)


def _date(ts: int) -> str:
    return time.strftime("%Y-%m-%d", time.gmtime(ts))


def _iso(ts: int) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(ts))


def _page(title: str, body: str) -> str:
    return ('<!doctype html><html lang="en"><head><meta charset="utf-8">'
            '<meta name="viewport" content="width=device-width, initial-scale=1">'
            f"<title>{_e(title)}</title></head>"
            f'<body><main style="{_PAGE_STYLE}">{body}</main></body></html>')


def _error_page(title: str, text: str) -> str:
    return _page(title, f'<h1 id="error-title">{_e(title)}</h1><p id="error">{_e(text)}</p>')


# ----- command line --------------------------------------------------------------------------------

def parse_args(argv=None):
    """Parse the command line (see the module docstring)."""
    parser = argparse.ArgumentParser(description="Stripe stand-in on 127.0.0.1.")
    parser.add_argument("--port", type=int, default=12111, help="port on 127.0.0.1 (0 = any free port)")
    parser.add_argument("--api-key", default="sk_test_fake_123", help="the secret key clients must send")
    parser.add_argument("--webhook-secret", default="whsec_test_abc", help="the webhook signing secret")
    parser.add_argument("--webhook-url", default=None, help="where events are POSTed")
    return parser.parse_args(argv)


def main(argv=None) -> int:
    """Run the stand-in from the command line until Ctrl+C."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    args = parse_args(argv)
    fake = FakeStripe(api_key=args.api_key, webhook_secret=args.webhook_secret, webhook_url=args.webhook_url,
                      port=args.port)
    return serve_until_stopped(fake, fake.base_url)



if __name__ == "__main__":
    sys.exit(main())
