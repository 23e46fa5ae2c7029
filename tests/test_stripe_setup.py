"""`cli.py setup-stripe` against the Stripe stand-in: one command sets up the price, the webhook endpoint and the
portal; a second run changes nothing; `--check` catches each kind of drift; `--replace-webhook` moves the version."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

import cli
from services import billing, stripe_setup
from tests.conftest import ROOT

BASE = "https://shop.example.com"


@pytest.fixture
def env(fake_stripe, monkeypatch):
    """The operator's settings before the webhook secret exists (only the key, the API address, the site's URL)."""
    values = {"APP_MODE": "test", "STRIPE_SECRET_KEY": fake_stripe.api_key, "STRIPE_API_BASE": fake_stripe.base_url,
              "PUBLIC_BASE_URL": BASE}
    for name in list(os.environ):
        if name.startswith(("STRIPE_", "APP_MODE", "PUBLIC_BASE_URL")):
            monkeypatch.delenv(name)
    for name, value in values.items():
        monkeypatch.setenv(name, value)
    return values


def run(capsys, *args) -> tuple[int, str]:
    code = cli.main(["setup-stripe", *args])
    captured = capsys.readouterr()
    return code, captured.out + captured.err


def client(fake_stripe):
    import stripe

    return stripe.StripeClient(fake_stripe.api_key, base_addresses={"api": fake_stripe.base_url})


def endpoints(fake_stripe) -> list[dict]:
    return client(fake_stripe).v1.webhook_endpoints.list().to_dict()["data"]


def portals(fake_stripe) -> list[dict]:
    """The app's portal configurations (the account's default one, made in the Dashboard, is left alone)."""
    return [c for c in client(fake_stripe).v1.billing_portal.configurations.list().to_dict()["data"]
            if c["metadata"].get("app") == stripe_setup.APP_TAG]


def test_one_command_sets_everything_up_and_a_second_run_changes_nothing(fake_stripe, env):
    runs = []
    for _ in range(2):
        result = subprocess.run([sys.executable, "cli.py", "setup-stripe"], cwd=ROOT, capture_output=True, text=True,
                                timeout=60, env={**{k: v for k, v in os.environ.items()
                                                    if not k.startswith("STRIPE_WEBHOOK")}, **env})
        assert result.returncode == 0, result.stdout + result.stderr
        runs.append(result.stdout)
    first, second = runs
    assert "price price_" in first and "created" in first
    [endpoint] = endpoints(fake_stripe)
    assert endpoint["url"] == f"{BASE}/stripe/webhook"
    assert sorted(endpoint["enabled_events"]) == sorted(billing.HANDLED_EVENTS)
    assert endpoint["api_version"] == billing.PINNED_API_VERSION and endpoint["status"] == "enabled"
    secret_lines = [line for line in first.splitlines() if "STRIPE_WEBHOOK_SECRET=whsec_" in line]
    assert len(secret_lines) == 1
    [portal] = portals(fake_stripe)
    features = portal["features"]
    assert features["subscription_cancel"]["enabled"] and features["subscription_cancel"]["mode"] == "at_period_end"
    assert features["payment_method_update"]["enabled"] and features["invoice_history"]["enabled"]
    assert not features["subscription_update"]["enabled"] and not features["customer_update"]["enabled"]
    assert portal["default_return_url"] == f"{BASE}/account"
    assert "nothing to change" in second and "whsec_" not in second and "created" not in second
    assert len(endpoints(fake_stripe)) == 1 and len(portals(fake_stripe)) == 1 and len(fake_stripe.prices) == 1
    assert fake_stripe.api_key not in first + second
    check = subprocess.run([sys.executable, "cli.py", "setup-stripe", "--check"], cwd=ROOT, capture_output=True,
                           text=True, timeout=60, env={**os.environ, **env})
    assert check.returncode == 0 and "everything matches" in check.stdout, check.stdout + check.stderr


def test_check_finds_each_kind_of_drift_and_setup_fixes_it(fake_stripe, env, capsys):
    assert run(capsys)[0] == 0
    api = client(fake_stripe)
    [endpoint] = endpoints(fake_stripe)
    drifts = [
        (lambda: api.v1.webhook_endpoints.update(endpoint["id"], params={
            "enabled_events": ["invoice.paid", "customer.subscription.updated", "invoice.upcoming"]}),
         ["missing events", "charge.dispute.created", "extra events invoice.upcoming"]),
        (lambda: api.v1.webhook_endpoints.update(endpoint["id"], params={"disabled": True}), ["status disabled"]),
        (lambda: api.v1.webhook_endpoints.update(endpoint["id"], params={"url": "https://old.example.com/stripe/webhook"}),
         ["points at https://old.example.com/stripe/webhook"]),
        (lambda: api.v1.billing_portal.configurations.update(portals(fake_stripe)[0]["id"], params={
            "features": {"subscription_update": {"enabled": True, "default_allowed_updates": ["price"],
                                                 "products": [{"product": next(iter(fake_stripe.products)),
                                                               "prices": [next(iter(fake_stripe.prices))]}]},
                         "subscription_cancel": {"mode": "immediately"}}}),
         ["subscription_update.enabled is True", "subscription_cancel.mode is 'immediately'"]),
        (lambda: api.v1.prices.update(next(iter(fake_stripe.prices)), params={"active": False}),
         ["no active price with lookup key"]),
    ]
    for change, words in drifts:
        change()
        code, out = run(capsys, "--check")
        assert code == 1, out
        for word in words:
            assert word in out, (word, out)
        assert "drift found" in out
        code, out = run(capsys)
        assert code == 0 and "done" in out, out
        code, out = run(capsys, "--check")
        assert code == 0 and "everything matches" in out, out
    assert len(endpoints(fake_stripe)) == 1 and endpoints(fake_stripe)[0]["id"] == endpoint["id"]  # kept its secret


def test_an_endpoint_in_another_api_version_is_reported_and_replaced_only_when_asked(fake_stripe, env, capsys):
    api = client(fake_stripe)
    old = api.v1.webhook_endpoints.create(params={
        "url": f"{BASE}/stripe/webhook", "api_version": "2024-06-20",
        "enabled_events": sorted(billing.HANDLED_EVENTS)}).to_dict()
    code, out = run(capsys, "--check")
    assert code == 1 and "sends events in API version 2024-06-20" in out, out
    code, out = run(capsys)
    assert code == 0 and "--replace-webhook" in out and "whsec_" not in out, out
    assert [e["id"] for e in endpoints(fake_stripe)] == [old["id"]]
    code, out = run(capsys, "--replace-webhook")
    assert code == 0 and out.count("STRIPE_WEBHOOK_SECRET=whsec_") == 1, out
    [new] = endpoints(fake_stripe)
    assert new["id"] != old["id"] and new["api_version"] == billing.PINNED_API_VERSION
    assert run(capsys, "--check")[0] == 0


def test_without_the_secret_key_it_says_what_is_missing(fake_stripe, env, capsys, monkeypatch):
    monkeypatch.delenv("STRIPE_SECRET_KEY")
    code, out = run(capsys)
    assert code == 2 and "STRIPE_SECRET_KEY" in out


def test_stripe_down_is_a_clear_message_not_a_traceback(fake_stripe, env, capsys):
    fake_stripe.stop()
    code, out = run(capsys, "--check")
    assert code == 3 and "Traceback" not in out and "failed" in out


def test_the_portal_sessions_use_the_apps_configuration(shopper, fake_stripe, shop, conn):
    from tests.test_billing import subscribe

    configuration = stripe_setup.setup_portal(billing.make_client(shop[1].settings), shop[1].settings)
    subscribe(shopper, fake_stripe)
    response = shopper.client.post("/billing/portal", data={"csrf_token": shopper.csrf()})
    assert response.status_code == 303
    session_id = response.headers["Location"].rsplit("/", 1)[1]
    assert fake_stripe.portal_sessions[session_id]["configuration"] == configuration
