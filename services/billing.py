"""The USD 5 plan through Stripe: price set-up, Checkout, the Customer Portal, webhooks, and who may generate.

Stripe is the source of truth for subscriptions. Webhook events can arrive twice, late or out
of order, so a subscription event is never applied from its payload: the subscription is read
again from the API and stored as it is now. Each applied event's id is stored in the same
transaction as its effects, so a replay changes nothing; credits are granted once per paid
invoice (the ledger's reference is the invoice id), whether the webhook or the success page
gets there first.
"""

from __future__ import annotations

import dataclasses
import logging

import stripe

from services import credits, db
from services.config import Settings

log = logging.getLogger(__name__)
# stripe-python logs every request (and at DEBUG its parameters, e.g. customers' emails).
logging.getLogger("stripe").setLevel(logging.WARNING)

PRODUCT_ID = "images_in_bulk_bulk"
LIVE_STATUSES = ("active", "trialing", "past_due", "unpaid", "incomplete", "paused")
GRANTING_REASONS = ("subscription_create", "subscription_cycle")
HANDLED_EVENTS = ("checkout.session.completed", "customer.subscription.created", "customer.subscription.updated",
                  "customer.subscription.deleted", "invoice.paid", "invoice.payment_failed")


class BillingError(Exception):
    """Billing cannot do what was asked; `code` picks the message the visitor sees."""

    code = "failed"


class StripeUnavailable(BillingError):
    """Stripe did not answer or refused a call we expected to work."""

    code = "unavailable"


class AlreadySubscribed(BillingError):
    """The user has a subscription already (one per user): manage it in the portal instead."""

    code = "already_subscribed"


class NotACustomer(BillingError):
    """The user has never paid, so there is no billing portal for them."""

    code = "not_a_customer"


class BadSignature(BillingError):
    """A webhook whose Stripe-Signature does not verify, or is older than the tolerance."""

    code = "bad_signature"


@dataclasses.dataclass(frozen=True)
class Access:
    """What a user's subscription allows now: state is none, active, ending, past_due, unpaid, paused or ended."""

    state: str
    can_generate: bool
    period_end: int | None = None


def make_client(settings: Settings) -> stripe.StripeClient:
    """A StripeClient for the configured key and API address (the stand-in's in the demo and tests)."""
    return stripe.StripeClient(settings.stripe_secret_key, base_addresses={"api": settings.stripe_api_base},
                               max_network_retries=2, http_client=stripe.RequestsClient(timeout=(5, 30)))


def _call(what: str, action) -> dict:
    """Run a Stripe call and return its object as a plain dict; failures become StripeUnavailable (no secrets)."""
    try:
        return action().to_dict()
    except stripe.StripeError as exc:
        log.error("Stripe %s failed: %s (request %s)", what, type(exc).__name__, getattr(exc, "request_id", None))
        raise StripeUnavailable(f"Stripe {what} failed: {type(exc).__name__}") from None


# --- the price ---------------------------------------------------------------------------------

def find_price(client: stripe.StripeClient, settings: Settings) -> str | None:
    """The id of the plan's active monthly price, found by its lookup key, or None."""
    prices = _call("price lookup", lambda: client.v1.prices.list(
        params={"lookup_keys": [settings.stripe_price_lookup_key], "active": True, "limit": 1}))
    return prices["data"][0]["id"] if prices["data"] else None


def setup_price(client: stripe.StripeClient, settings: Settings) -> str:
    """Find or create the product and the monthly USD price (by lookup key, with idempotency keys)."""
    found = find_price(client, settings)
    if found:
        return found
    try:
        product = client.v1.products.retrieve(PRODUCT_ID).to_dict()
    except stripe.InvalidRequestError:
        product = _call("product creation", lambda: client.v1.products.create(
            params={"id": PRODUCT_ID, "name": "images-in-bulk Bulk",
                    "description": f"{settings.plan_credits} credits per month, batches of up to "
                                   f"{settings.plan_max_prompts} prompts"},
            options={"idempotency_key": f"iib-product-{PRODUCT_ID}"}))
    except stripe.StripeError as exc:
        raise StripeUnavailable(f"Stripe product lookup failed: {type(exc).__name__}") from None
    amount = settings.plan_price_usd * 100
    price = _call("price creation", lambda: client.v1.prices.create(
        params={"product": product["id"], "unit_amount": amount, "currency": "usd",
                "recurring": {"interval": "month"}, "lookup_key": settings.stripe_price_lookup_key,
                "nickname": "Bulk monthly"},
        options={"idempotency_key": f"iib-price-{settings.stripe_price_lookup_key}-{amount}"}))
    return price["id"]


# --- access ------------------------------------------------------------------------------------

def current_subscription(conn: db.Connection, user_id: int) -> dict | None:
    """The user's latest subscription row, or None."""
    return db.subscription_latest(conn, user_id)


def access(subscription: dict | None, now: int) -> Access:
    """The one rule for who may start batches: active or trialing, including a cancelled one until its period ends."""
    if subscription is None or subscription["status"] in ("incomplete", "incomplete_expired"):
        return Access("none", False)
    status, period_end = subscription["status"], subscription["current_period_end"] or None
    if status in ("active", "trialing"):
        ends = subscription["cancel_at_period_end"] or subscription["cancel_at"]
        end = subscription["cancel_at"] or period_end
        if not ends:
            return Access("active", True, period_end)
        if end and now < end:
            return Access("ending", True, end)
        return Access("ended", False, end)
    if status in ("past_due", "unpaid", "paused"):
        return Access(status, False, period_end)
    return Access("ended", False, subscription["ended_at"] or period_end)


# --- Checkout and the portal -------------------------------------------------------------------

def start_checkout(conn: db.Connection, client: stripe.StripeClient, settings: Settings, user: dict, price_id: str,
                   lang: str, now: int) -> str:
    """Create a Checkout Session for the plan and return its URL (AlreadySubscribed if there is a subscription)."""
    subscription = current_subscription(conn, user["id"])
    if subscription is not None and subscription["status"] in LIVE_STATUSES:
        raise AlreadySubscribed("the user has a subscription already")
    params = {
        "mode": "subscription",
        "line_items": [{"price": price_id, "quantity": 1}],
        "client_reference_id": str(user["id"]),
        "success_url": settings.url("/billing/success") + "?session_id={CHECKOUT_SESSION_ID}",
        "cancel_url": settings.url("/pricing?checkout=cancelled"),
        "subscription_data": {"metadata": {"user_id": str(user["id"])}},
        "metadata": {"user_id": str(user["id"])},
        "locale": lang,
    }
    customer = db.user_stripe_customer(conn, user["id"])
    if customer:
        params["customer"] = customer
    elif user.get("email"):
        params["customer_email"] = user["email"]
    # A double click within ten minutes gets the same session back instead of a second one.
    key = f"iib-checkout-{user['id']}-{customer or ''}-{now // 600}"
    session = _call("checkout", lambda: client.v1.checkout.sessions.create(
        params=params, options={"idempotency_key": key}))
    return session["url"]


def portal_url(conn: db.Connection, client: stripe.StripeClient, settings: Settings, user_id: int) -> str:
    """A fresh Customer Portal session's URL for the user (NotACustomer if they never paid)."""
    customer = db.user_stripe_customer(conn, user_id)
    if not customer:
        raise NotACustomer("the user has no Stripe customer")
    session = _call("portal", lambda: client.v1.billing_portal.sessions.create(
        params={"customer": customer, "return_url": settings.url("/account")}))
    return session["url"]


# --- reading Stripe's objects -------------------------------------------------------------------

def _subscription_fields(subscription) -> dict:
    """The columns we keep of a Stripe subscription (periods live on its items since API version basil)."""
    items = subscription["items"]["data"] if subscription.get("items") else []
    item = items[0] if items else {}
    metadata = subscription.get("metadata") or {}
    return {
        "id": subscription["id"],
        "customer": subscription["customer"] if isinstance(subscription["customer"], str)
        else subscription["customer"]["id"],
        "status": subscription["status"],
        "price_id": (item.get("price") or {}).get("id", "") if item else "",
        "current_period_start": int(item.get("current_period_start") or 0) if item else 0,
        "current_period_end": int(item.get("current_period_end") or 0) if item else 0,
        "cancel_at_period_end": bool(subscription.get("cancel_at_period_end")),
        "cancel_at": subscription.get("cancel_at"),
        "ended_at": subscription.get("ended_at"),
        "user_id": metadata.get("user_id"),
    }


def _fetch_subscription(client: stripe.StripeClient, subscription_id: str) -> dict:
    """Read a subscription from the API now (events arrive out of order; the API knows the present)."""
    return _subscription_fields(_call("subscription read", lambda: client.v1.subscriptions.retrieve(subscription_id)))


def _invoice_subscription_id(invoice) -> str | None:
    """The subscription an invoice bills: under parent.subscription_details since API version basil."""
    parent = invoice.get("parent") or {}
    details = parent.get("subscription_details") or {}
    found = details.get("subscription")
    if isinstance(found, dict):
        found = found.get("id")
    return found


def _user_for(conn: db.Connection, fields: dict) -> int | None:
    """Our user for a Stripe subscription: its metadata, else its customer, else an earlier row."""
    if str(fields.get("user_id") or "").isdigit() and db.user_get(conn, int(fields["user_id"])):
        return int(fields["user_id"])
    by_customer = db.user_by_stripe_customer(conn, fields["customer"])
    if by_customer is not None:
        return by_customer["id"]
    known = db.subscription_by_stripe_id(conn, fields["id"])
    return known["user_id"] if known else None


def _apply_subscription(conn: db.Connection, fields: dict, now: int) -> int | None:
    """Store a subscription as read from the API and link its customer to the user; return the user id."""
    user_id = _user_for(conn, fields)
    if user_id is None:
        log.warning("subscription %s belongs to no known user; ignored", fields["id"])
        return None
    if not db.user_stripe_customer(conn, user_id):
        db.user_set_stripe_customer(conn, user_id, fields["customer"])
    db.subscription_upsert(conn, user_id, fields, now)
    return user_id


def _invoice_period_start(invoice) -> int:
    """When the period an invoice pays for starts (its lines' service period), else when it was created (0 if
    neither is a number: a payload of another shape never raises here)."""

    def number(value) -> int:
        return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else 0

    lines = invoice.get("lines")
    data = lines.get("data") if isinstance(lines, dict) else None
    starts = [number(line["period"].get("start")) for line in data or []
              if isinstance(line, dict) and isinstance(line.get("period"), dict)] if isinstance(data, list) else []
    return max(starts + [0]) or number(invoice.get("created"))


def _grant_for_invoice(conn: db.Connection, settings: Settings, user_id: int, invoice) -> bool:
    """Grant the period's credits for a paid creation or renewal invoice, once per invoice, never for an old one."""
    if invoice.get("status") != "paid" or invoice.get("billing_reason") not in GRANTING_REASONS:
        return False
    return credits.grant_period(conn, user_id, settings.plan_credits, invoice["id"], _invoice_period_start(invoice))


# --- the webhook and the success page -----------------------------------------------------------

def handle_webhook(conn: db.Connection, client: stripe.StripeClient, settings: Settings, payload: bytes,
                   signature: str | None, now: int) -> str:
    """Verify and apply one webhook event; return what happened (applied, duplicate, ignored)."""
    try:
        event = client.construct_event(payload, signature, settings.stripe_webhook_secret).to_dict()
    except (stripe.SignatureVerificationError, ValueError, TypeError, AttributeError) as exc:
        # TypeError: a non-ASCII signature; AttributeError: a signed body that is JSON but not an object
        raise BadSignature(f"webhook refused: {type(exc).__name__}") from None
    try:
        kind, obj, event_id = event["type"], event["data"]["object"], event["id"]
        if not (isinstance(kind, str) and isinstance(obj, dict) and isinstance(event_id, str)):
            raise TypeError
    except (KeyError, TypeError, AttributeError):
        raise BadSignature("webhook refused: a signed payload that is not an event") from None
    if db.stripe_event_seen(conn, event["id"]):
        return "duplicate"
    subscription, invoice, checkout = None, None, None
    if kind == "checkout.session.completed":
        checkout = obj
        if obj.get("subscription"):
            subscription = _fetch_subscription(client, obj["subscription"])
    elif kind.startswith("customer.subscription."):
        subscription = _fetch_subscription(client, obj["id"])
    elif kind in ("invoice.paid", "invoice.payment_failed"):
        invoice = obj
        subscription_id = _invoice_subscription_id(obj)
        if subscription_id:
            subscription = _fetch_subscription(client, subscription_id)
    with conn.transaction():
        if not db.stripe_event_insert(conn, event["id"], kind, now):
            return "duplicate"
        if kind not in HANDLED_EVENTS:
            return "ignored"
        if checkout is not None:
            _link_checkout_customer(conn, checkout)
        user_id = _apply_subscription(conn, subscription, now) if subscription else None
        if kind == "invoice.paid" and user_id is not None:
            _grant_for_invoice(conn, settings, user_id, invoice)
    log.info("applied Stripe event %s (%s)", event["id"], kind)
    return "applied"


def _link_checkout_customer(conn: db.Connection, session) -> None:
    """Remember the customer a completed Checkout Session created for our user (client_reference_id)."""
    reference, customer = str(session.get("client_reference_id") or ""), session.get("customer")
    if reference.isdigit() and customer and db.user_get(conn, int(reference)) \
            and not db.user_stripe_customer(conn, int(reference)):
        db.user_set_stripe_customer(conn, int(reference), customer)


def sync_checkout(conn: db.Connection, client: stripe.StripeClient, settings: Settings, session_id: str,
                  user_id: int, now: int) -> Access:
    """On the success page: apply a completed Checkout Session of this user through the webhook's code."""
    if not session_id.startswith("cs_") or len(session_id) > 255:
        return access(current_subscription(conn, user_id), now)
    session = _call("checkout read", lambda: client.v1.checkout.sessions.retrieve(session_id))
    if str(session.get("client_reference_id")) != str(user_id) or session.get("status") != "complete" \
            or not session.get("subscription"):
        return access(current_subscription(conn, user_id), now)
    raw = _call("subscription read", lambda: client.v1.subscriptions.retrieve(session["subscription"]))
    fields = _subscription_fields(raw)
    invoice_id = raw.get("latest_invoice")
    invoice = _call("invoice read", lambda: client.v1.invoices.retrieve(invoice_id)) \
        if isinstance(invoice_id, str) else None
    with conn.transaction():
        _link_checkout_customer(conn, session)
        owner = _apply_subscription(conn, fields, now)
        if owner == user_id and invoice is not None:
            _grant_for_invoice(conn, settings, user_id, invoice)
    return access(current_subscription(conn, user_id), now)
