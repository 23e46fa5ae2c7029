"""Shared fixtures: fresh databases on SQLite and MariaDB, the app, an in-process client, a live server, Chromium.

MariaDB and Chromium are required in CI (CI=true): there a missing one fails the run. On a
laptop without them, the tests that need them skip and say why.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import threading
import uuid
from pathlib import Path
from urllib.parse import urlsplit

import pymysql
import pytest
from werkzeug.test import Client

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from app import create_app  # noqa: E402
from services import catalog, db  # noqa: E402

# The catalogue the tests run with: the real one without retirement dates, so that the tests of the models
# that retire (gpt-image-1.5 and gpt-image-1-mini on 2026-12-01) keep passing after that day. The tests of
# retirement itself pass dates, or a catalogue, of their own.
UNRETIRED_CATALOG_DATA = json.loads(catalog.DEFAULT_FILE.read_text(encoding="utf-8"))
for _entry in UNRETIRED_CATALOG_DATA["models"]:
    _entry["retires"] = None
TEST_CATALOG = catalog.parse(UNRETIRED_CATALOG_DATA, "the tests' catalogue")

REQUIRED = os.environ.get("CI", "").lower() in ("1", "true", "yes")
MARIADB_URL = os.environ.get("TEST_MARIADB_URL", "mysql://root@127.0.0.1:3306/")
CHROMIUM = os.environ.get("CHROMIUM_PATH", "/usr/bin/chromium")
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-quic"]


def unavailable(reason: str):
    """Fail in CI, skip elsewhere, with the reason."""
    if REQUIRED:
        pytest.fail(f"{reason} (required in CI)", pytrace=False)
    pytest.skip(reason)


def _admin_connect():
    parts = urlsplit(MARIADB_URL)
    return pymysql.connect(host=parts.hostname or "127.0.0.1", port=parts.port or 3306,
                           user=parts.username or "root", password=parts.password or "",
                           autocommit=True, connect_timeout=5)


@pytest.fixture(scope="session")
def mariadb_server():
    """A reachable MariaDB server (its admin URL), or a skip/fail with the reason."""
    try:
        conn = _admin_connect()
    except pymysql.err.MySQLError as exc:
        unavailable(f"MariaDB is not reachable at {MARIADB_URL}: {exc.args[-1]}")
    conn.close()
    return MARIADB_URL


@pytest.fixture
def mariadb_url(mariadb_server):
    """The URL of a new, empty, uniquely named MariaDB database, dropped after the test."""
    name = f"iib_test_{os.getpid()}_{uuid.uuid4().hex[:10]}"
    conn = _admin_connect()
    try:
        with conn.cursor() as cur:
            cur.execute(f"CREATE DATABASE `{name}` CHARACTER SET utf8mb4 COLLATE utf8mb4_unicode_ci")
        yield mariadb_server.rstrip("/") + "/" + name
    finally:
        with conn.cursor() as cur:
            cur.execute(f"DROP DATABASE IF EXISTS `{name}`")
        conn.close()


@pytest.fixture
def sqlite_url(tmp_path):
    """The URL of a new SQLite database file."""
    return f"sqlite:///{tmp_path / 'test.db'}"


@pytest.fixture(params=["sqlite", pytest.param("mariadb", marks=pytest.mark.mariadb)])
def db_url(request):
    """An empty database on each engine in turn: every test that touches SQL runs on both."""
    return request.getfixturevalue(f"{request.param}_url")


@pytest.fixture
def database(db_url):
    """A Database with the schema created."""
    found = db.Database(db_url)
    db.initdb(found)
    return found


@pytest.fixture
def conn(database):
    """A connection to the test database, closed afterwards."""
    connection = database.connect()
    yield connection
    connection.close()


@pytest.fixture
def make_app(db_url, tmp_path):
    """Build apps in test mode on the test database; keyword arguments are setting overrides.

    Each app keeps a database connection per thread that served it: they are closed when the test ends.
    """
    made = []

    def factory(**overrides):
        catalog_file = tmp_path / "models.json"
        if not catalog_file.exists():
            catalog_file.write_text(json.dumps(UNRETIRED_CATALOG_DATA), encoding="utf-8")
        settings = {"APP_MODE": "test", "DATABASE_URL": db_url, "VAR_DIR": str(tmp_path / "var"),
                    "MODEL_CATALOG": str(catalog_file)}
        settings.update(overrides)
        made.append(create_app(settings))
        return made[-1]

    yield factory
    for built in made:
        built.database.close_kept()


@pytest.fixture
def app(make_app, database):
    """A test-mode app on a database with the schema."""
    return make_app()


class BufferedClient(Client):
    """werkzeug's test client reading every response whole, so nothing is left open."""

    def open(self, *args, **kwargs):
        kwargs.setdefault("buffered", True)
        return super().open(*args, **kwargs)


@pytest.fixture
def client(app):
    """An in-process HTTP client for the app."""
    return BufferedClient(app)


@pytest.fixture
def serve(make_app, database):
    """Start the app under waitress on a free loopback port: serve(**overrides) -> (base_url, app); stops after."""
    import waitress.server

    running = []

    def start(**overrides):
        holder = {}
        server = waitress.server.create_server(lambda environ, respond: holder["app"](environ, respond),
                                               host="127.0.0.1", port=0, threads=4)
        base_url = f"http://127.0.0.1:{server.effective_port}"
        holder["app"] = make_app(PUBLIC_BASE_URL=base_url, **overrides)
        thread = threading.Thread(target=server.run, name="live-server", daemon=True)
        thread.start()
        running.append((server, thread))
        return base_url, holder["app"]

    yield start
    for server, thread in running:
        stop_server(server, thread)


@pytest.fixture
def live_server(serve):
    """The app under waitress on a free loopback port: (base_url, app)."""
    return serve()


def stop_server(server, thread):
    """Stop a waitress server from another thread: close every channel inside its own loop, then join."""

    def close_all():
        for channel in list(server._map.values()):
            channel.close()

    server.trigger.pull_trigger(close_all)
    thread.join(timeout=10)
    server.task_dispatcher.shutdown()
    assert not thread.is_alive(), "the live server did not stop"


# --- the identity-provider stand-in -------------------------------------------------------------

IDP_CLIENTS = {"google": ("google-client-id", "google-client-secret"),
               "microsoft": ("microsoft-client-id", "microsoft-client-secret")}


@pytest.fixture
def idp():
    """tools/fake_idp.py playing Google and Microsoft on a free loopback port, with two accounts each."""
    from tools.fake_idp import FakeIdP

    server = FakeIdP()
    server.add_realm("google", style="google")
    server.add_realm("microsoft", style="microsoft")
    server.add_account("google", sub="g-1001", name="Ana García", email="ana@example.com")
    server.add_account("google", sub="g-1002", name="Ben Carter", email="ben@example.com")
    server.add_account("microsoft", sub="m-2001", name="Ana García", email="ana@example.com")
    server.add_account("microsoft", sub="m-2002", name="Chloé Dubois", email="chloe@outlook.com")
    server.start()
    yield server
    server.stop()


def idp_settings(idp, **changes) -> dict:
    """App settings that point both providers at the stand-in."""
    from tools.demo import provider_settings

    return {**provider_settings(idp, IDP_CLIENTS), **changes}


def register_clients(idp, base_url: str) -> None:
    """Register our two clients at the stand-in with this app's exact redirect URIs."""
    for realm, (client_id, secret) in IDP_CLIENTS.items():
        idp.add_client(realm, client_id=client_id, client_secret=secret,
                       redirect_uris=[f"{base_url}/auth/{realm}/callback"])


@pytest.fixture
def signin_app(make_app, database, idp):
    """A test-mode app whose providers are the stand-in (in-process, base URL http://127.0.0.1:8000)."""
    app = make_app(**idp_settings(idp))
    register_clients(idp, app.settings.public_base_url)
    return app


# --- the Stripe stand-in ------------------------------------------------------------------------

@pytest.fixture
def fake_stripe():
    """tools/fake_stripe.py on a free loopback port."""
    from tools.fake_stripe import FakeStripe

    server = FakeStripe().start()
    yield server
    server.stop()


@pytest.fixture
def shop(serve, idp, fake_stripe):
    """A live app that signs in through the identity stand-in and bills through the Stripe stand-in.

    The stand-in sends its webhooks to this app over HTTP; the plan's price is set up. Yields (base_url, app).
    """
    from services import billing
    from tools.demo import stripe_settings

    base_url, app = serve(**idp_settings(idp), **stripe_settings(fake_stripe))
    register_clients(idp, base_url)
    fake_stripe.webhook_url = f"{base_url}/stripe/webhook"
    app.billing["price_id"] = billing.setup_price(billing.make_client(app.settings), app.settings)
    return base_url, app


@pytest.fixture
def shopper(shop):
    """A visitor of the shop signed in with Google (Ana García), not yet subscribed."""
    from tests.visitors import Visitor

    person = Visitor(shop[1])
    assert person.sign_in("google", "g-1001").status_code == 303
    return person


# --- the OpenAI stand-in and subscribers ---------------------------------------------------------

@pytest.fixture
def fake_openai():
    """tools/fake_openai.py on a free loopback port (no latency, no limit unless a test sets them)."""
    from tools.fake_openai import FakeOpenAI

    server = FakeOpenAI().start()
    yield server
    server.stop()


def openai_settings(fake, **changes) -> dict:
    """App settings that point generation at the stand-in, with short timeouts and backoffs for tests."""
    from tools.demo import openai_settings as settings_for

    return {**settings_for(fake), "OPENAI_READ_TIMEOUT": "2", "RETRY_BASE_MS": "20", "IMAGES_PER_MINUTE": "6000",
            **changes}


def make_subscriber(conn, name="Ana", email="ana@example.com", balance=300, status="active"):
    """A user with a subscription row and a period's credits, as Stripe's webhooks would leave them."""
    import time as _time

    from services import credits as _credits
    from services import db as _db

    now = int(_time.time())
    user_id = _db.user_insert(conn, name, email, now)
    _db.subscription_upsert(conn, user_id, {
        "id": f"sub_test_{user_id}", "customer": f"cus_test_{user_id}", "status": status, "price_id": "price_test",
        "current_period_start": now - 60, "current_period_end": now + 30 * 86400, "cancel_at_period_end": False,
        "cancel_at": None, "ended_at": None}, now)
    if balance:
        _credits.grant_period(conn, user_id, balance, f"in_test_{user_id}", now)
    return user_id


def signed_in_client(app, conn, user_id):
    """An in-process client with a session for the user; returns (client, csrf token)."""
    from routes import web as _web
    from services import sessions as _sessions

    session = _sessions.create(conn, app.settings, _web.now(), user_id=user_id)
    client = BufferedClient(app)
    client.set_cookie(_sessions.cookie_name(app.settings), session.token)
    return client, session.csrf_token


# --- Chromium -----------------------------------------------------------------------------------

@pytest.fixture(scope="session")
def browser():
    """Debian's Chromium driven by Playwright (no browser download), shared by the session."""
    if not (os.path.exists(CHROMIUM) or shutil.which(CHROMIUM)):
        unavailable(f"Chromium is not installed at {CHROMIUM} (apt-get install -y chromium)")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        unavailable("playwright is not installed (pip install -r requirements-dev.txt)")
    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield chromium
        chromium.close()


@pytest.fixture
def page(browser):
    """A fresh browser context and page; console errors and CSP violations are collected in page.problems."""
    context = browser.new_context(locale="es-ES")
    new_page = context.new_page()
    new_page.problems = []
    new_page.on("console", lambda msg: msg.type == "error" and new_page.problems.append(
        f"{msg.text} ({msg.location.get('url', '')})"))
    new_page.on("pageerror", lambda exc: new_page.problems.append(str(exc)))
    yield new_page
    context.close()
