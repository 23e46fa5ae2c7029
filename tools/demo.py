"""The local demo's stand-ins: started in this process, with the settings that point the app at them."""

from __future__ import annotations

import logging
import secrets
import threading
from collections.abc import Callable, Mapping
from pathlib import Path

from services import db, notify
from services.config import ConfigError, Settings, load_settings
from tools.fake_idp import FakeIdP
from tools.fake_openai import FakeOpenAI
from tools.fake_smtp import FakeSMTP
from tools.fake_stripe import FakeStripe

log = logging.getLogger(__name__)

# The demo's OpenAI stand-in answers like a quick real call: about a second per image, 60 images a minute.
DEMO_LATENCY = 1.0
DEMO_IMAGES_PER_MINUTE = 60
# The demo sends its "your batch is ready" emails this often (cron's minute is too slow to watch).
DEMO_MAIL_EVERY = 2.0
DEMO_OWNER = "ana@example.com"  # a demo account (tools/fake_idp.demo_accounts) that may open /admin
MAIL_SPOOL = "demo-mail"  # under VAR_DIR: the SMTP stand-in writes each message there, /demo/mail reads them


def mail_spool(var_dir: Path) -> Path:
    """The folder where the demo's SMTP stand-in keeps what it received, one .eml file per message."""
    return Path(var_dir) / MAIL_SPOOL


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


def smtp_settings(fake: FakeSMTP) -> dict[str, str]:
    """App settings that send mail through the SMTP stand-in."""
    return fake.app_settings()


def start_stand_ins(base_url: str, var_dir: Path | None = None) -> tuple[dict[str, str], list[Callable[[], None]]]:
    """Start the stand-ins for an app at base_url: the identity provider (Google, Microsoft), Stripe, OpenAI, SMTP.

    The SMTP stand-in writes what it receives under `var_dir` (by default the VAR_DIR the demo's
    settings name), where the demo's /demo/mail page reads it. Returns the setting overrides for
    the app and the functions that stop what was started.
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
    var_dir = var_dir if var_dir is not None else _demo_var_dir()
    logging.getLogger("mail.log").setLevel(logging.WARNING)  # aiosmtpd's line per SMTP command
    fake_smtp = FakeSMTP(spool_dir=mail_spool(var_dir) if var_dir is not None else None).start()
    settings = {**provider_settings(idp, clients), **stripe_settings(fake_stripe), **openai_settings(fake_openai),
                **smtp_settings(fake_smtp), "IMAGES_PER_MINUTE": str(DEMO_IMAGES_PER_MINUTE),
                # Ana García (Google, verified email) is the demo's owner: she sees Admin.
                "ADMIN_EMAILS": DEMO_OWNER}
    return settings, [idp.stop, fake_stripe.stop, fake_openai.stop, fake_smtp.stop]


def _demo_var_dir() -> Path | None:
    """The VAR_DIR the demo's settings will have (the stand-ins' settings do not change it); None if they are wrong."""
    try:
        return load_settings({"APP_MODE": "demo"}).var_dir
    except ConfigError:  # the app reports the problem itself when it loads its settings, and stops
        return None


def start_mailer(settings: Settings, database: db.Database, translations: Mapping,
                 every: float = DEMO_MAIL_EVERY) -> Callable[[], None]:
    """The demo's cron for batch emails: notify.send_due() every `every` seconds in a thread; returns its stop."""
    stop = threading.Event()

    def loop() -> None:
        while not stop.wait(every):
            try:
                conn = database.connect()
                try:
                    notify.send_due(conn, settings, translations)
                finally:
                    conn.close()
            except Exception:  # the demo's loop outlives a bad run, as cron outlives one
                log.exception("demo mail run failed")

    thread = threading.Thread(target=loop, name="demo-mailer", daemon=True)
    thread.start()

    def halt() -> None:
        stop.set()
        thread.join(timeout=10)

    return halt
