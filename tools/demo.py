"""The local demo's stand-ins: started in this process, with the settings that point the app at them."""

from __future__ import annotations

import secrets
from collections.abc import Callable

from tools.fake_idp import FakeIdP
from tools.fake_openai import FakeOpenAI
from tools.fake_stripe import FakeStripe

# The demo's OpenAI stand-in answers like a quick real call: about a second per image, 60 images a minute.
DEMO_LATENCY = 1.0
DEMO_IMAGES_PER_MINUTE = 60


def provider_settings(idp: FakeIdP, clients: dict[str, tuple[str, str]]) -> dict[str, str]:
    """App settings for each realm of the stand-in: client id and secret, issuer and endpoints."""
    settings = {}
    for realm, (client_id, secret) in clients.items():
        endpoints = idp.endpoints(realm)
        prefix = realm.upper()
        settings.update({f"{prefix}_CLIENT_ID": client_id, f"{prefix}_CLIENT_SECRET": secret,
                         f"{prefix}_ISSUER": endpoints["issuer"],
                         f"{prefix}_AUTHORIZE_URL": endpoints["authorization_endpoint"],
                         f"{prefix}_TOKEN_URL": endpoints["token_endpoint"],
                         f"{prefix}_USERINFO_URL": endpoints["userinfo_endpoint"]})
    return settings


def stripe_settings(fake: FakeStripe) -> dict[str, str]:
    """App settings that point billing at the Stripe stand-in (API, webhook secret, Checkout/Portal origin)."""
    return {"STRIPE_SECRET_KEY": fake.api_key, "STRIPE_WEBHOOK_SECRET": fake.webhook_secret,
            "STRIPE_API_BASE": fake.base_url, "STRIPE_FORM_ORIGINS": fake.base_url}


def openai_settings(fake: FakeOpenAI) -> dict[str, str]:
    """App settings that point generation at the OpenAI stand-in."""
    return {"OPENAI_API_KEY": fake.api_key, "OPENAI_BASE_URL": f"{fake.base_url}/v1"}


def start_stand_ins(base_url: str) -> tuple[dict[str, str], list[Callable[[], None]]]:
    """Start the stand-ins for an app at base_url: the identity provider (as Google and Microsoft), Stripe, OpenAI.

    Returns the setting overrides for the app and the functions that stop what was started.
    """
    idp = FakeIdP()
    clients = {}
    for realm in ("google", "microsoft"):
        idp.add_realm(realm, style=realm)
        clients[realm] = (f"demo-{realm}-client", secrets.token_urlsafe(24))
        idp.add_client(realm, client_id=clients[realm][0], client_secret=clients[realm][1],
                       redirect_uris=[f"{base_url}/auth/{realm}/callback"])
    idp.with_demo_accounts().start()
    fake_stripe = FakeStripe(api_key="sk_test_demo_" + secrets.token_hex(12),
                             webhook_secret="whsec_demo_" + secrets.token_hex(16),
                             webhook_url=f"{base_url}/stripe/webhook").start()
    fake_openai = FakeOpenAI(api_key="sk-demo-" + secrets.token_hex(16), latency=DEMO_LATENCY,
                             images_per_minute=DEMO_IMAGES_PER_MINUTE).start()
    settings = {**provider_settings(idp, clients), **stripe_settings(fake_stripe), **openai_settings(fake_openai),
                "IMAGES_PER_MINUTE": str(DEMO_IMAGES_PER_MINUTE)}
    return settings, [idp.stop, fake_stripe.stop, fake_openai.stop]
