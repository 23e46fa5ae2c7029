"""Stripe's published object shapes, per API version, to send webhooks in shapes our own stand-in never makes.

The shapes come from Stripe's own typed Python SDK of each version: stripe-python's resource classes are
generated from Stripe's OpenAPI spec for the API version that release pins, and list every field of every
object in that version. The wheels come from PyPI (cached under .cache/stripe-wheels/); the classes are
read with `ast`, never imported, so several versions can be read side by side with the pinned one.

`render(obj, version)` rebuilds an object (as the stand-in keeps it, in the pinned version) with exactly
the published fields of that version: a field both versions have keeps its value, a field that moved in
Stripe's changelog is filled from where it lives now (e.g. before 2025-03-31.basil an invoice has
`subscription` at the top, and a subscription its `current_period_*`), and any other field is null.
"""

from __future__ import annotations

import ast
import copy
import os
import subprocess
import sys
import zipfile
from functools import cache
from pathlib import Path

import stripe

ROOT = Path(__file__).resolve().parent.parent
WHEELS = ROOT / ".cache" / "stripe-wheels"
PINNED = stripe.api_version

# API version -> the stripe-python release that pins it (None: the installed one).
RELEASES = {"2024-06-20": "10.12.0", "2025-03-31.basil": "12.0.0", PINNED: None}
# Versions a webhook may come in: one before basil, the first basil one, and the pinned one.
VERSIONS = tuple(RELEASES)

# The `object` value of each resource -> (module in the stripe package, class path in it).
CLASSES = {
    "event": ("_event", "Event"),
    "checkout.session": ("checkout/_session", "Session"),
    "subscription": ("_subscription", "Subscription"),
    "subscription_item": ("_subscription_item", "SubscriptionItem"),
    "invoice": ("_invoice", "Invoice"),
    "line_item": ("_invoice_line_item", "InvoiceLineItem"),
    "charge": ("_charge", "Charge"),
    "payment_intent": ("_payment_intent", "PaymentIntent"),
    "refund": ("_refund", "Refund"),
    "dispute": ("_dispute", "Dispute"),
    "customer": ("_customer", "Customer"),
    "price": ("_price", "Price"),
    "plan": ("_plan", "Plan"),
}


class ShapesUnavailable(Exception):
    """A stripe-python release could not be downloaded (no registry here)."""


def wheel(release: str) -> Path:
    """The stripe-python wheel of a release, downloaded from PyPI once into .cache/stripe-wheels/."""
    WHEELS.mkdir(parents=True, exist_ok=True)
    found = sorted(WHEELS.glob(f"stripe-{release}-*.whl"))
    if found:
        return found[0]
    result = subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
                             "--disable-pip-version-check", "--quiet", "-d", str(WHEELS), f"stripe=={release}"],
                            capture_output=True, text=True, timeout=300, env={**os.environ, "PIP_NO_INPUT": "1"})
    found = sorted(WHEELS.glob(f"stripe-{release}-*.whl"))
    if result.returncode or not found:
        raise ShapesUnavailable(f"pip could not download stripe=={release}: {result.stderr.strip()[-300:]}")
    return found[0]


def _source(version: str, module: str) -> str:
    release = RELEASES[version]
    if release is None:
        return (Path(stripe.__file__).parent / f"{module}.py").read_text(encoding="utf-8")
    with zipfile.ZipFile(wheel(release)) as archive:
        return archive.read(f"stripe/{module}.py").decode("utf-8")


@cache
def fields(version: str, kind: str) -> tuple[str, ...]:
    """The published fields of an object type (its `object` value) in an API version, in the class's order."""
    module, path = CLASSES[kind]
    body = ast.parse(_source(version, module)).body
    for name in path.split("."):
        body = next(node.body for node in body if isinstance(node, ast.ClassDef) and node.name == name)
    return tuple(node.target.id for node in body
                 if isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name)
                 and node.target.id != "OBJECT_NAME")


def _first_item(subscription: dict) -> dict:
    items = (subscription.get("items") or {}).get("data") or [{}]
    return items[0]


def _sub_details(invoice: dict) -> dict:
    return ((invoice.get("parent") or {}).get("subscription_details")) or {}


def _item_details(line: dict) -> dict:
    return ((line.get("parent") or {}).get("subscription_item_details")) or {}


def _invoice_payment_intent(invoice: dict):
    payments = (invoice.get("payments") or {}).get("data") or []
    return ((payments[0].get("payment") or {}).get("payment_intent")) if payments else None


# Where a field that Stripe's changelog moved lives in the pinned version (2025-03-31.basil moved these).
MOVED = {
    "invoice": {
        "subscription": lambda o: _sub_details(o).get("subscription"),
        "subscription_details": lambda o: {"metadata": _sub_details(o).get("metadata") or {}}
        if _sub_details(o) else None,
        "paid": lambda o: o.get("status") == "paid",
        "paid_out_of_band": lambda o: False,
        "payment_intent": _invoice_payment_intent,
        "discount": lambda o: None,
        "total_tax_amounts": lambda o: [],
    },
    "subscription": {
        "current_period_start": lambda o: _first_item(o).get("current_period_start"),
        "current_period_end": lambda o: _first_item(o).get("current_period_end"),
    },
    "line_item": {
        "subscription": lambda o: _item_details(o).get("subscription"),
        "subscription_item": lambda o: _item_details(o).get("subscription_item"),
        "proration": lambda o: bool(_item_details(o).get("proration")),
        "type": lambda o: "subscription" if _item_details(o) else "invoiceitem",
        "price": lambda o: ((o.get("pricing") or {}).get("price_details") or {}).get("price"),
        "tax_amounts": lambda o: [],
        "tax_rates": lambda o: [],
    },
}


def render(obj, version: str):
    """An object (and everything nested in it) with exactly the published fields of `version`."""
    if isinstance(obj, list):
        return [render(value, version) for value in obj]
    if not isinstance(obj, dict):
        return copy.deepcopy(obj)
    kind = obj.get("object")
    if not isinstance(kind, str) or kind not in CLASSES:
        return {key: render(value, version) for key, value in obj.items()}
    moved = MOVED.get(kind, {})
    out = {}
    for name in fields(version, kind):
        if name in obj:
            out[name] = render(obj[name], version)
        elif name in moved:
            out[name] = copy.deepcopy(moved[name](obj))
        else:
            out[name] = None
    return out


def event_in(event: dict, version: str) -> dict:
    """A webhook event as an endpoint in `version` receives it: the envelope and its object in that shape."""
    shaped = render(event, version)
    shaped["api_version"] = version
    shaped["data"] = {"object": render(event["data"]["object"], version)}
    if "previous_attributes" in event["data"]:
        shaped["data"]["previous_attributes"] = copy.deepcopy(event["data"]["previous_attributes"])
    return shaped
