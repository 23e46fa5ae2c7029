"""The USD 5 plan through Stripe: price set-up, Checkout, the Customer Portal, webhooks, and who may generate.

Stripe is the source of truth for subscriptions. Webhook events can arrive twice, late or out
of order, so a subscription event is never applied from its payload: the subscription is read
again from the API and stored as it is now. Each applied event's id is stored in the same
transaction as its effects, so a replay changes nothing; credits are granted once per paid
invoice (the ledger's reference is the invoice id), whether the webhook or the success page
gets there first.

Every paid invoice with money in it is also kept in `invoices` (amount paid, currency, when),
once, wherever the app learns of it: invoice.paid of any billing reason, checkout.session.completed
and the success page. An invoice of 0 (a trial's) is not kept: no money, and no charge to refund.
A refund sets the invoice's amount refunded to its charge's total refunded, read from the API (so
a replay or an older partial refund's late event never adds to it); when the refund arrives before
the invoice was kept, the invoice is read from the API and kept first.
"""

from __future__ import annotations

import dataclasses
import json
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
# Exactly the events the webhook endpoint subscribes to (`cli.py setup-stripe` sets them) and the webhook applies.
HANDLED_EVENTS = ("checkout.session.completed", "customer.subscription.created", "customer.subscription.updated",
                  "customer.subscription.deleted", "customer.subscription.paused", "customer.subscription.resumed",
                  "invoice.paid", "invoice.payment_failed", "charge.refunded", "charge.dispute.created",
                  "charge.dispute.closed")
# The API version stripe-python pins and sends with every call: every object the app acts on is read in it.
PINNED_API_VERSION = stripe.api_version
SIGNATURE_TOLERANCE = 300  # seconds, on both sides of now
# A dispute in one of these states holds the subscriber's generation (lost: the money went back to them).
HOLDING_DISPUTES = ("warning_needs_response", "warning_under_review", "needs_response", "under_review", "lost")
VERSION_NOTE = "stripe_version_note"  # worker_state row: the day each other API version was last reported


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
    """A webhook whose Stripe-Signature does not verify, or whose time is outside the tolerance."""

    code = "bad_signature"


class MalformedEvent(BillingError):
    """A signed webhook body that is not an event with a type and an object id."""

    code = "malformed_event"


class ObjectGone(BillingError):
    """Stripe answered that an object the event names does not exist (404): nothing to apply, ever."""

    code = "gone"

    def __init__(self, what: str, status: int | None):
        super().__init__(f"the {what} is gone (HTTP {status})")
        self.what, self.status = what, status


@dataclasses.dataclass(frozen=True)
class Access:
    """What a user's plan allows now: state is none, active, ending, past_due, unpaid, paused, suspended or ended."""

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
    # A price archived in the Dashboard keeps its lookup key: bring it back if it is still the plan's price.
    archived = _call("price lookup", lambda: client.v1.prices.list(
        params={"lookup_keys": [settings.stripe_price_lookup_key], "active": False, "limit": 1}))["data"]
    if archived and archived[0].get("unit_amount") == amount and archived[0].get("currency") == "usd" \
            and (archived[0].get("recurring") or {}).get("interval") == "month":
        return _call("price reactivation", lambda: client.v1.prices.update(
            archived[0]["id"], params={"active": True}))["id"]
    # A new amount: the new price takes the lookup key over (the idempotency key names the amount, so a retry
    # of this run finds the same price).
    price = _call("price creation", lambda: client.v1.prices.create(
        params={"product": product["id"], "unit_amount": amount, "currency": "usd",
                "recurring": {"interval": "month"}, "lookup_key": settings.stripe_price_lookup_key,
                "transfer_lookup_key": True, "nickname": "Bulk monthly"},
        options={"idempotency_key": f"iib-price-{settings.stripe_price_lookup_key}-{amount}-{len(archived)}"}))
    return price["id"]


# --- access ------------------------------------------------------------------------------------

def current_subscription(conn: db.Connection, user_id: int) -> dict | None:
    """The user's latest subscription row, or None."""
    return db.subscription_latest(conn, user_id)


def access(subscription: dict | None, now: int, hold: str | None = None) -> Access:
    """The one rule for who may start batches: active or trialing, including a cancelled one until its period ends,
    and no hold (a disputed payment) on the user."""
    found = _access(subscription, now)
    if hold and found.can_generate:
        return Access("suspended", False, found.period_end)
    return found


def _access(subscription: dict | None, now: int) -> Access:
    """The subscription's part of access()."""
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


def portal_url(conn: db.Connection, client: stripe.StripeClient, settings: Settings, user_id: int,
               configuration: str | None = None) -> str:
    """A fresh Customer Portal session's URL for the user (NotACustomer if they never paid), in the app's portal
    configuration when there is one (`cli.py setup-stripe` makes it), else the account's default."""
    customer = db.user_stripe_customer(conn, user_id)
    if not customer:
        raise NotACustomer("the user has no Stripe customer")
    params = {"customer": customer, "return_url": settings.url("/account")}
    if configuration:
        params["configuration"] = configuration
    session = _call("portal", lambda: client.v1.billing_portal.sessions.create(params=params))
    return session["url"]


# --- reading Stripe's objects -------------------------------------------------------------------

def _read(what: str, action) -> dict:
    """Read one object from the API in the pinned version, as a plain dict.

    A 404 (or another refusal of the request itself) raises ObjectGone: the object no longer exists, and asking
    again will not change that. A network error, a 5xx, a rate limit or a refused key raises StripeUnavailable, so
    the webhook answers 503 and Stripe tries again later.
    """
    try:
        return action().to_dict()
    except (stripe.AuthenticationError, stripe.PermissionError) as exc:
        log.error("OPERATOR: Stripe refused to let the app read a %s (%s): check that STRIPE_SECRET_KEY may read "
                  "it (request %s)", what, type(exc).__name__, getattr(exc, "request_id", None))
        raise StripeUnavailable(f"Stripe {what} read refused: {type(exc).__name__}") from None
    except stripe.InvalidRequestError as exc:
        if exc.http_status in (None, 429) or exc.http_status >= 500:
            raise StripeUnavailable(f"Stripe {what} read failed: {type(exc).__name__}") from None
        raise ObjectGone(what, exc.http_status) from None
    except stripe.StripeError as exc:
        log.error("Stripe %s read failed: %s (request %s)", what, type(exc).__name__, getattr(exc, "request_id", None))
        raise StripeUnavailable(f"Stripe {what} read failed: {type(exc).__name__}") from None


def _id(value) -> str | None:
    """An object's id whether the field holds the id or the expanded object."""
    if isinstance(value, dict):
        value = value.get("id")
    return value if isinstance(value, str) and value else None


def _plan_item(subscription: dict, settings: Settings) -> dict:
    """The subscription item that carries the plan's price (STRIPE_PRICE_ID if set, else the lookup key), else the
    first item."""
    items = (subscription.get("items") or {}).get("data") or []
    if settings.stripe_price_id:
        wanted = [item for item in items if _id(item.get("price")) == settings.stripe_price_id]
    else:
        wanted = [item for item in items if isinstance(item.get("price"), dict)
                  and item["price"].get("lookup_key") == settings.stripe_price_lookup_key]
    if wanted:
        return wanted[0]
    if len(items) > 1:
        log.warning("subscription %s has %d items and none with the plan's price; the first one's period is used",
                    subscription.get("id"), len(items))
    return items[0] if items else {}


def _subscription_fields(subscription: dict, settings: Settings) -> dict:
    """The columns we keep of a Stripe subscription: its period is the plan item's (on items since API basil)."""
    item = _plan_item(subscription, settings)
    metadata = subscription.get("metadata") or {}

    def period(name: str) -> int:
        return int(item.get(name) or subscription.get(name) or 0)

    return {
        "id": subscription["id"],
        "customer": _id(subscription["customer"]),
        "status": subscription["status"],
        "price_id": _id(item.get("price")) or "",
        "current_period_start": period("current_period_start"),
        "current_period_end": period("current_period_end"),
        "cancel_at_period_end": bool(subscription.get("cancel_at_period_end")),
        "cancel_at": subscription.get("cancel_at"),
        "ended_at": subscription.get("ended_at"),
        "user_id": metadata.get("user_id"),
    }


def _fetch_subscription(client: stripe.StripeClient, settings: Settings, subscription_id: str) -> dict:
    """Read a subscription from the API now (events arrive out of order; the API knows the present)."""
    raw = _read("subscription", lambda: client.v1.subscriptions.retrieve(subscription_id))
    return _subscription_fields(raw, settings)


def _invoice_subscription_id(invoice: dict) -> str | None:
    """The subscription an invoice bills: under parent.subscription_details since API version basil (at the top
    before it)."""
    details = (invoice.get("parent") or {}).get("subscription_details") or {}
    return _id(details.get("subscription")) or _id(invoice.get("subscription"))


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
    """Grant the period's credits for a paid creation or renewal invoice: once per invoice and per period, never
    for an old one."""
    if invoice.get("status") != "paid" or invoice.get("billing_reason") not in GRANTING_REASONS:
        return False
    if db.credit_ledger_find(conn, "payment_refunded", invoice["id"]) \
            or db.dispute_lost_for_invoice(conn, invoice["id"]):
        log.info("invoice %s was refunded or lost in a dispute before it was granted: no credits", invoice["id"])
        return False
    return credits.grant_period(conn, user_id, settings.plan_credits, invoice["id"], _invoice_period_start(invoice))


def _count(value) -> int | None:
    """A whole number of at least 0 from a payload (an amount or a time), else None."""
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else None


def _paid_invoice_fields(invoice: dict, now: int) -> tuple[int, str, int] | None:
    """(amount paid, currency, paid at) of a paid invoice with money in it, else None: paid_at is the invoice's
    status_transitions.paid_at (the same field in every API version), else now."""
    if not isinstance(invoice, dict) or invoice.get("status") != "paid":
        return None
    amount, currency = _count(invoice.get("amount_paid")), invoice.get("currency")
    if not amount:
        return None
    if not (isinstance(currency, str) and len(currency) == 3 and currency.isascii() and currency.isalpha()):
        log.error("invoice %s has no usable currency (%r): not kept among the invoices", invoice.get("id"),
                  str(currency)[:20])
        return None
    paid_at = _count((invoice.get("status_transitions") or {}).get("paid_at")) or now
    return amount, currency.lower(), paid_at


def _record_invoice(conn: db.Connection, user_id: int, invoice, now: int) -> bool:
    """Keep a paid invoice (amount, currency, when) once; an unpaid or 0 one is not kept. True if this added it."""
    fields = _paid_invoice_fields(invoice, now)
    if fields is None:
        if invoice.get("status") == "paid":
            log.info("invoice %s of user %s was paid with no money (%s): not kept among the invoices",
                     invoice.get("id"), user_id, invoice.get("amount_paid"))
        return False
    return db.invoice_record(conn, invoice["id"], user_id, *fields, now)


def _record_refund(conn: db.Connection, user_id: int, charge: dict, invoice: dict | None, now: int) -> None:
    """Set the refunded amount of the invoice a refunded charge paid (its total refunded, never added to); when the
    invoice is not kept yet (the refund came first), keep it first from the API's answer."""
    refunded = _count(charge.get("amount_refunded"))
    if invoice is None or refunded is None:
        log.info("charge %s of user %s refunded (%s) paid no invoice the app can read: no invoice changed",
                 charge.get("id"), user_id, charge.get("amount_refunded"))
        return
    if db.invoice_get(conn, invoice["id"]) is None and _record_invoice(conn, user_id, invoice, now):
        log.info("invoice %s of user %s kept on its refund (its paid event had not been applied)", invoice["id"],
                 user_id)
    if db.invoice_refund(conn, invoice["id"], refunded, now):
        log.info("invoice %s of user %s: %s refunded in all", invoice["id"], user_id, refunded)
    elif db.invoice_get(conn, invoice["id"]) is None:
        log.warning("charge %s of user %s refunded, but its invoice %s is not kept (not paid, or paid 0): no "
                    "invoice changed", charge.get("id"), user_id, invoice["id"])


def _charge_invoice(client: stripe.StripeClient, charge: dict) -> str | None:
    """The invoice a charge paid: through its PaymentIntent's invoice payment (a Charge has no invoice since basil;
    one read in an older version names it)."""
    if _id(charge.get("invoice")):
        return _id(charge["invoice"])
    payment_intent = _id(charge.get("payment_intent"))
    if payment_intent is None:
        return None
    payments = _read("invoice payment", lambda: client.v1.invoice_payments.list(
        params={"payment": {"type": "payment_intent", "payment_intent": payment_intent}, "limit": 10}))
    for payment in payments.get("data") or []:
        if payment.get("status") == "paid" or len(payments["data"]) == 1:
            return _id(payment.get("invoice"))
    return None


# --- the webhook and the success page -----------------------------------------------------------

@dataclasses.dataclass
class _Event:
    """What the webhook uses of an event: its id, type, object id and API version; never the payload's fields."""

    id: str
    kind: str
    object_id: str
    api_version: str | None


def _signature_time(signature: str | None) -> int | None:
    """The t= of a Stripe-Signature header (the first one, as stripe-python reads it), or None."""
    for part in (signature or "").split(","):
        key, _, value = part.strip().partition("=")
        if key == "t":
            return int(value) if value.isdigit() else None
    return None


def parse_event(client: stripe.StripeClient, settings: Settings, payload: bytes, signature: str | None,
                now: int) -> _Event:
    """Verify a webhook's signature (its time within the tolerance on both sides) and take its id, type, object."""
    stamp = _signature_time(signature)
    if stamp is None or abs(now - stamp) > SIGNATURE_TOLERANCE:
        raise BadSignature("webhook refused: the signature's time is outside the tolerance")
    try:
        event = client.construct_event(payload, signature, settings.stripe_webhook_secret,
                                       tolerance=SIGNATURE_TOLERANCE).to_dict()
    except (stripe.SignatureVerificationError, ValueError, TypeError, AttributeError) as exc:
        # TypeError: a non-ASCII signature; AttributeError: a signed body that is JSON but not an object
        raise BadSignature(f"webhook refused: {type(exc).__name__}") from None
    try:
        kind, event_id, object_id = event["type"], event["id"], event["data"]["object"]["id"]
        version = event.get("api_version")
        # Ids fit the columns they go in (VARCHAR(255)): a longer one is not Stripe's, and must not become a 500.
        if not all(isinstance(value, str) and 0 < len(value) <= 255 for value in (kind, event_id, object_id)) \
                or not (version is None or isinstance(version, str)):
            raise TypeError
    except (KeyError, TypeError, AttributeError):
        raise MalformedEvent("a signed payload that is not an event with an object id") from None
    return _Event(event_id, kind, object_id, version)


def _note_version(conn: db.Connection, version: str | None, now: int) -> None:
    """Once a day per version, tell the operator that the endpoint sends events in another API version."""
    if not version or version == PINNED_API_VERSION:
        return
    day = now // 86400
    try:
        seen = json.loads(db.worker_state_get(conn, VERSION_NOTE) or "{}")
    except ValueError:
        seen = {}
    if not isinstance(seen, dict) or seen.get(version[:40]) == day:
        return
    seen = {key: value for key, value in seen.items() if value == day} if isinstance(seen, dict) else {}
    seen[version[:40]] = day
    db.worker_state_set(conn, VERSION_NOTE, json.dumps(seen), now)
    log.warning("OPERATOR: the Stripe webhook endpoint sends events in API version %s; the app pins %s. Events "
                "are applied all the same (every object is read again in %s); to move the endpoint to %s, run "
                "`python cli.py setup-stripe --replace-webhook` and set the STRIPE_WEBHOOK_SECRET it prints",
                version[:40], PINNED_API_VERSION, PINNED_API_VERSION, PINNED_API_VERSION)


def handle_webhook(conn: db.Connection, client: stripe.StripeClient, settings: Settings, payload: bytes,
                   signature: str | None, now: int) -> str:
    """Verify and apply one webhook event; return what happened (applied, duplicate, ignored, gone).

    Only the event's type and object id are used: every object is read again from the API in the pinned version,
    so the endpoint's API version and the payload's shape never matter. An unhandled type is acknowledged before
    any database or API call; an object that no longer exists (404) is acknowledged as gone.
    """
    event = parse_event(client, settings, payload, signature, now)
    if event.kind not in HANDLED_EVENTS:
        return "ignored"
    if db.stripe_event_seen(conn, event.id):
        return "duplicate"
    _note_version(conn, event.api_version, now)
    try:
        apply = _READERS[event.kind.split(".")[0]](client, settings, event)
    except ObjectGone as exc:
        with conn.transaction():
            if not db.stripe_event_insert(conn, event.id, event.kind, now):
                return "duplicate"
        log.warning("Stripe event %s (%s): its %s %s is gone (HTTP %s); acknowledged", event.id, event.kind,
                    exc.what, event.object_id, exc.status)
        return "gone"
    with conn.transaction():
        if not db.stripe_event_insert(conn, event.id, event.kind, now):
            return "duplicate"
        outcome = apply(conn, now) or "applied"
    log.info("Stripe event %s (%s): %s", event.id, event.kind, outcome)
    return outcome


def _read_checkout(client: stripe.StripeClient, settings: Settings, event: _Event):
    """checkout.session.completed: the session, its subscription and that subscription's latest invoice."""
    session = _read("checkout session", lambda: client.v1.checkout.sessions.retrieve(event.object_id))
    subscription_id = _id(session.get("subscription"))
    return _subscription_reader(client, settings, subscription_id, session=session)


def _subscription_reader(client: stripe.StripeClient, settings: Settings, subscription_id: str | None,
                         session: dict | None = None, invoice: dict | None = None, with_invoice: bool = True):
    """Read a subscription (and, unless given or not wanted, its latest invoice); return what applies them."""
    raw = _read("subscription", lambda: client.v1.subscriptions.retrieve(subscription_id)) \
        if subscription_id else None
    if raw is not None and invoice is None and with_invoice and _id(raw.get("latest_invoice")):
        invoice = _read("invoice", lambda: client.v1.invoices.retrieve(_id(raw["latest_invoice"])))
    fields = _subscription_fields(raw, settings) if raw is not None else None

    def apply(conn: db.Connection, now: int) -> str | None:
        if session is not None:
            _link_checkout_customer(conn, session)
        user_id = _apply_subscription(conn, fields, now) if fields else None
        if user_id is None:
            return "ignored" if fields else None
        if invoice is not None and _invoice_subscription_id(invoice) == fields["id"]:
            _record_invoice(conn, user_id, invoice, now)
            _grant_for_invoice(conn, settings, user_id, invoice)
        return None

    return apply


def _read_subscription(client: stripe.StripeClient, settings: Settings, event: _Event):
    """customer.subscription.*: the subscription as it is now (created, updated, paused, resumed, deleted)."""
    return _subscription_reader(client, settings, event.object_id, with_invoice=False)


def _read_invoice(client: stripe.StripeClient, settings: Settings, event: _Event):
    """invoice.paid / invoice.payment_failed: the invoice now (paid or not) and the subscription it bills."""
    invoice = _read("invoice", lambda: client.v1.invoices.retrieve(event.object_id))
    subscription_id = _invoice_subscription_id(invoice)
    if subscription_id is None:
        return _lone_invoice_applier(invoice)
    return _subscription_reader(client, settings, subscription_id, invoice=invoice)


def _lone_invoice_applier(invoice: dict):
    """An invoice that bills no subscription (a one-off): kept if paid, for the user of its customer."""

    def apply(conn: db.Connection, now: int) -> str | None:
        customer = _id(invoice.get("customer"))
        user = db.user_by_stripe_customer(conn, customer) if customer else None
        if user is None:
            log.warning("invoice %s bills no subscription and belongs to no known user; ignored", invoice.get("id"))
            return "ignored"
        _record_invoice(conn, user["id"], invoice, now)
        return None

    return apply


def _read_charge(client: stripe.StripeClient, settings: Settings, event: _Event):
    """charge.refunded and charge.dispute.*: the charge (through the dispute), its customer and its invoice."""
    dispute = None
    charge_id = event.object_id
    if event.kind.startswith("charge.dispute."):
        dispute = _read("dispute", lambda: client.v1.disputes.retrieve(event.object_id))
        charge_id = _id(dispute.get("charge"))
        if charge_id is None:
            raise ObjectGone("charge", 404)
    charge = _read("charge", lambda: client.v1.charges.retrieve(charge_id))
    invoice_id = _charge_invoice(client, charge)
    customer = _id(charge.get("customer"))
    invoice = None
    if dispute is None and invoice_id:
        try:  # the invoice a refund is recorded on; one that is gone only leaves the invoices table unchanged
            invoice = _read("invoice", lambda: client.v1.invoices.retrieve(invoice_id))
        except ObjectGone:
            invoice = None

    def apply(conn: db.Connection, now: int) -> str | None:
        user = db.user_by_stripe_customer(conn, customer) if customer else None
        if user is None:
            log.warning("Stripe event %s (%s): charge %s belongs to no known user; ignored", event.id, event.kind,
                        charge_id)
            return "ignored"
        if dispute is None:
            _record_refund(conn, user["id"], charge, invoice, now)
            return _apply_refund(conn, user["id"], charge, invoice_id, now)
        return _apply_dispute(conn, user["id"], dispute, charge_id, invoice_id, event.kind, now)

    return apply


def _apply_refund(conn: db.Connection, user_id: int, charge: dict, invoice_id: str | None, now: int) -> str:
    """A fully refunded plan payment withdraws what is left of its period's credits (one ledger line)."""
    if not charge.get("refunded"):
        log.info("charge %s of user %s partly refunded (%s of %s): credits unchanged", charge["id"], user_id,
                 charge.get("amount_refunded"), charge.get("amount"))
        return "partial_refund"
    delta = credits.billing_line(conn, user_id, "payment_refunded", invoice_id or charge["id"], now,
                                 withdraw_invoice=invoice_id)
    log.info("charge %s of user %s refunded: %s credits withdrawn", charge["id"], user_id, -(delta or 0))
    return "applied"


def _apply_dispute(conn: db.Connection, user_id: int, dispute: dict, charge_id: str, invoice_id: str | None,
                   kind: str, now: int) -> str:
    """Store the dispute as it is now, hold or release the user's generation, and write its ledger line."""
    status = str(dispute.get("status") or "")
    db.dispute_upsert(conn, {"id": dispute["id"], "user_id": user_id, "charge_id": charge_id,
                             "invoice_id": invoice_id or "", "status": status}, now)
    holding = any(row["status"] in HOLDING_DISPUTES for row in db.disputes_of(conn, user_id))
    db.user_set_billing_hold(conn, user_id, "dispute" if holding else None)
    paused = 0
    if holding:
        paused = db.batches_pause_active(conn, user_id, "billing_hold", now)
    if kind == "charge.dispute.created":
        credits.billing_line(conn, user_id, "dispute_opened", dispute["id"], now)
        due = (dispute.get("evidence_details") or {}).get("due_by")
        log.warning("OPERATOR: user %s disputed charge %s (dispute %s, reason %s, respond by %s in the Stripe "
                    "Dashboard); their generation is suspended%s", user_id, charge_id, dispute["id"],
                    dispute.get("reason"), due, f", {paused} active batches paused" if holding and paused else "")
    elif status == "won":
        credits.billing_line(conn, user_id, "dispute_won", dispute["id"], now)
        log.warning("OPERATOR: dispute %s of user %s was won; generation %s", dispute["id"], user_id,
                    "is still held by another dispute" if holding else "is restored")
    elif status == "lost":
        credits.billing_line(conn, user_id, "dispute_lost", dispute["id"], now, withdraw_invoice=invoice_id)
        log.warning("OPERATOR: dispute %s of user %s was lost; generation stays suspended and what was left of that "
                    "period's credits is withdrawn", dispute["id"], user_id)
    else:
        credits.billing_line(conn, user_id, "dispute_closed", dispute["id"], now)
    return "applied"


_READERS = {"checkout": _read_checkout, "customer": _read_subscription, "invoice": _read_invoice,
            "charge": _read_charge}


def _link_checkout_customer(conn: db.Connection, session) -> None:
    """Remember the customer a completed Checkout Session created for our user (client_reference_id)."""
    reference, customer = str(session.get("client_reference_id") or ""), _id(session.get("customer"))
    if reference.isdigit() and customer and db.user_get(conn, int(reference)) \
            and not db.user_stripe_customer(conn, int(reference)):
        db.user_set_stripe_customer(conn, int(reference), customer)


def user_access(conn: db.Connection, user_id: int, now: int) -> Access:
    """What a user's plan allows now, with a dispute's hold."""
    user = db.user_get(conn, user_id) or {}
    return access(current_subscription(conn, user_id), now, hold=user.get("billing_hold"))


def sync_checkout(conn: db.Connection, client: stripe.StripeClient, settings: Settings, session_id: str,
                  user_id: int, now: int) -> Access:
    """On the success page: apply a completed Checkout Session of this user through the webhook's code."""
    if not session_id.startswith("cs_") or len(session_id) > 255:
        return user_access(conn, user_id, now)
    try:
        session = _read("checkout session", lambda: client.v1.checkout.sessions.retrieve(session_id))
    except ObjectGone:
        return user_access(conn, user_id, now)
    subscription_id = _id(session.get("subscription"))
    if str(session.get("client_reference_id")) != str(user_id) or session.get("status") != "complete" \
            or not subscription_id:
        return user_access(conn, user_id, now)
    try:
        apply = _subscription_reader(client, settings, subscription_id, session=session)
    except ObjectGone:
        return user_access(conn, user_id, now)
    with conn.transaction():
        apply(conn, now)
    return user_access(conn, user_id, now)
