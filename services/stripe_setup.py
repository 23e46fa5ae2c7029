"""`cli.py setup-stripe`: the plan's price, the webhook endpoint and the Customer Portal, set up (or checked) in one go.

Everything is found again on each run (the price by its lookup key, the endpoint by its URL, the portal
configuration by its metadata), compared with what the app needs, and created or updated only where it
differs, so a second run changes nothing and says so. With `check=True` nothing is written: every
difference is reported as drift.

A webhook endpoint's API version cannot be changed once it exists (Stripe's update call does not take
it). The app reads every object again in its pinned version, so an endpoint in another version works;
`replace_webhook=True` moves it to the pinned version by creating a new endpoint (whose signing secret
is shown once) and deleting the old one. Stripe retries every event the app refuses for three days, so
events signed with the new secret before STRIPE_WEBHOOK_SECRET is updated are not lost.
"""

from __future__ import annotations

import dataclasses

import stripe

from services import billing
from services.config import Settings

APP_TAG = "images-in-bulk"
WEBHOOK_PATH = "/stripe/webhook"


@dataclasses.dataclass
class Report:
    """What a run found and did: one line per finding, whether it changed or found drift, a new secret."""

    lines: list[str] = dataclasses.field(default_factory=list)
    changed: bool = False
    drift: bool = False
    secret: str | None = None

    def say(self, text: str) -> None:
        """Add a line that changes nothing."""
        self.lines.append(text)

    def fix(self, check: bool, found: str, done: str) -> bool:
        """Record a difference: drift in a check (returns False: do nothing), else a change (returns True)."""
        if check:
            self.drift = True
            self.lines.append(f"drift: {found}")
            return False
        self.changed = True
        self.lines.append(done)
        return True


def _all(lister) -> list[dict]:
    """Every object of a Stripe list, page after page."""
    found, after = [], None
    while True:
        params = {"limit": 100, **({"starting_after": after} if after else {})}
        page = lister(params).to_dict()
        found.extend(page["data"])
        if not page.get("has_more") or not page["data"]:
            return found
        after = page["data"][-1]["id"]


def _call(what: str, action):
    """A Stripe call whose failure becomes StripeUnavailable (no secrets in the message)."""
    try:
        return action()
    except stripe.StripeError as exc:
        raise billing.StripeUnavailable(f"Stripe {what} failed: {type(exc).__name__}: "
                                        f"{getattr(exc, 'user_message', None) or ''}".rstrip(": ")) from None


# --- the price ---------------------------------------------------------------------------------

def _price(client: stripe.StripeClient, settings: Settings, report: Report, check: bool) -> None:
    found = billing.find_price(client, settings)
    if found:
        report.say(f"price {found} (lookup key {settings.stripe_price_lookup_key}): ok")
        return
    if report.fix(check, f"no active price with lookup key {settings.stripe_price_lookup_key}",
                  f"price created with lookup key {settings.stripe_price_lookup_key}"):
        price = billing.setup_price(client, settings)
        report.lines[-1] = f"price {price} (lookup key {settings.stripe_price_lookup_key}, " \
                           f"USD {settings.plan_price_usd} per month): created or reactivated"


# --- the webhook endpoint ----------------------------------------------------------------------

def wanted_events() -> list[str]:
    """The events the endpoint subscribes to: exactly those the webhook applies."""
    return sorted(billing.HANDLED_EVENTS)


def _create_endpoint(client: stripe.StripeClient, url: str, report: Report) -> dict:
    endpoint = _call("webhook endpoint creation", lambda: client.v1.webhook_endpoints.create(params={
        "url": url, "enabled_events": wanted_events(), "api_version": billing.PINNED_API_VERSION,
        "description": f"{APP_TAG}: subscriptions, invoices, refunds and disputes",
        "metadata": {"app": APP_TAG}})).to_dict()
    report.secret = endpoint.get("secret")
    return endpoint


def _webhook(client: stripe.StripeClient, settings: Settings, report: Report, check: bool,
             replace: bool) -> None:
    url = settings.url(WEBHOOK_PATH)
    endpoints = _call("webhook endpoint list", lambda: _all(lambda p: client.v1.webhook_endpoints.list(params=p)))
    ours = [e for e in endpoints if e["url"] == url]
    elsewhere = [e for e in endpoints if e["url"] != url and e["url"].split("?")[0].rstrip("/").endswith(WEBHOOK_PATH)]
    if not ours and elsewhere:
        endpoint = elsewhere[0]
        if report.fix(check, f"the webhook endpoint {endpoint['id']} points at {endpoint['url']}, not {url}",
                      f"webhook endpoint {endpoint['id']}: URL changed from {endpoint['url']} to {url}"):
            endpoint = _call("webhook endpoint update", lambda: client.v1.webhook_endpoints.update(
                endpoint["id"], params={"url": url})).to_dict()
        ours = [endpoint]
    if not ours:
        if report.fix(check, f"no webhook endpoint at {url}", f"webhook endpoint at {url}: created"):
            endpoint = _create_endpoint(client, url, report)
            report.lines[-1] = (f"webhook endpoint {endpoint['id']} at {url}: created (API version "
                                f"{endpoint.get('api_version')}, {len(endpoint['enabled_events'])} events)")
        return
    if len(ours) > 1:
        report.say(f"note: {len(ours)} webhook endpoints point at {url} ({', '.join(e['id'] for e in ours)}); "
                   "each event reaches the app once per endpoint and is applied once")
    endpoint = ours[0]
    version = endpoint.get("api_version") or "the account's default version"
    if version != billing.PINNED_API_VERSION:
        if replace and not check:
            new = _create_endpoint(client, url, report)
            for old in ours:
                _call("webhook endpoint deletion", lambda old=old: client.v1.webhook_endpoints.delete(old["id"]))
            report.changed = True
            report.say(f"webhook endpoint {new['id']} at {url}: created in API version {new.get('api_version')} "
                       f"to replace {', '.join(e['id'] for e in ours)} ({version}), which were deleted")
            return
        if check:
            report.drift = True
            report.say(f"drift: the webhook endpoint {endpoint['id']} sends events in API version {version}, the app "
                       f"pins {billing.PINNED_API_VERSION} (events still work: every object is read again)")
        else:
            report.say(f"note: the webhook endpoint {endpoint['id']} sends events in API version {version} and "
                       "Stripe cannot change that in place; events work all the same. Run `python cli.py "
                       "setup-stripe --replace-webhook` to move it to " + billing.PINNED_API_VERSION)
    changes, problems = {}, []
    have, want = set(endpoint.get("enabled_events") or []), set(wanted_events())
    if have != want:
        missing, extra = sorted(want - have), sorted(have - want)
        problems.append("; ".join(part for part in (
            f"missing events {', '.join(missing)}" if missing else "",
            f"extra events {', '.join(extra)}" if extra else "") if part))
        changes["enabled_events"] = wanted_events()
    if endpoint.get("status") != "enabled":
        problems.append(f"status {endpoint.get('status')}")
        changes["disabled"] = False
    if not changes:
        report.say(f"webhook endpoint {endpoint['id']} at {url}: ok ({len(want)} events)")
        return
    if report.fix(check, f"the webhook endpoint {endpoint['id']}: {'; '.join(problems)}",
                  f"webhook endpoint {endpoint['id']} at {url}: updated ({'; '.join(problems)})"):
        _call("webhook endpoint update", lambda: client.v1.webhook_endpoints.update(endpoint["id"], params=changes))


# --- the Customer Portal -----------------------------------------------------------------------

def wanted_portal(settings: Settings) -> dict:
    """The portal the plan needs: cancel at period end, update the card, see invoices; no plan switching."""
    return {
        "business_profile": {"headline": "images-in-bulk", "privacy_policy_url": settings.url("/privacy"),
                             "terms_of_service_url": settings.url("/terms")},
        "default_return_url": settings.url("/account"),
        "features": {
            "customer_update": {"enabled": False},
            "invoice_history": {"enabled": True},
            "payment_method_update": {"enabled": True},
            "subscription_cancel": {"enabled": True, "mode": "at_period_end", "proration_behavior": "none"},
            "subscription_update": {"enabled": False},
        },
        "metadata": {"app": APP_TAG},
    }


def _differences(want, have, path: str = "") -> list[str]:
    """The paths where `have` lacks a value of `want` (only what we set is compared)."""
    if isinstance(want, dict):
        have = have if isinstance(have, dict) else {}
        return [d for key, value in want.items() for d in _differences(value, have.get(key), f"{path}{key}.")]
    return [] if want == have else [f"{path.rstrip('.')} is {have!r}, not {want!r}"]


def find_portal_configuration(client: stripe.StripeClient) -> str | None:
    """The id of the app's active Customer Portal configuration (tagged with metadata app), or None."""
    configurations = _call("portal configuration list", lambda: _all(
        lambda p: client.v1.billing_portal.configurations.list(params={**p, "active": True})))
    for configuration in configurations:
        if (configuration.get("metadata") or {}).get("app") == APP_TAG:
            return configuration["id"]
    return None


def _portal(client: stripe.StripeClient, settings: Settings, report: Report, check: bool) -> None:
    want = wanted_portal(settings)
    found = find_portal_configuration(client)
    if found is None:
        if report.fix(check, "no Customer Portal configuration for the app", "customer portal configuration: created"):
            created = _call("portal configuration creation", lambda: client.v1.billing_portal.configurations.create(
                params=want)).to_dict()
            report.lines[-1] = f"customer portal configuration {created['id']}: created"
        return
    have = _call("portal configuration read", lambda: client.v1.billing_portal.configurations.retrieve(found)).to_dict()
    differences = _differences(want, have)
    if not differences:
        report.say(f"customer portal configuration {found}: ok")
        return
    if report.fix(check, f"the Customer Portal configuration {found}: {'; '.join(differences)}",
                  f"customer portal configuration {found}: updated ({'; '.join(differences)})"):
        _call("portal configuration update", lambda: client.v1.billing_portal.configurations.update(
            found, params={key: value for key, value in want.items() if key != "metadata"}))


def setup_portal(client: stripe.StripeClient, settings: Settings) -> str:
    """Create or update the app's portal configuration; return its id (the demo uses this alone)."""
    _portal(client, settings, Report(), check=False)
    return find_portal_configuration(client)


def run(client: stripe.StripeClient, settings: Settings, check: bool = False, replace_webhook: bool = False) -> Report:
    """Set up (or, with check, only compare) the price, the webhook endpoint and the portal configuration."""
    report = Report()
    _price(client, settings, report, check)
    _webhook(client, settings, report, check, replace_webhook)
    _portal(client, settings, report, check)
    return report
