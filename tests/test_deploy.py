"""The deploy test: the site as the host runs it, on Debian's Apache with mod_passenger, MariaDB, 127.0.0.1.

A clean copy of the checkout is the application root; the web root holds public/ with the project's .htaccess
(AllowOverride All) and decoy private files; Passenger runs the app with a virtual environment's Python as
www-data, its settings in the private file app/.env; cron's command line runs the worker. Over HTTP: the landing
page carries the CSP, Apache (not the app) serves the CSS, private files are refused, /healthz is ok, and a
subscriber signs in, subscribes and gets a batch of three images through the stand-ins in Chromium.

Needs root, apache2 and libapache2-mod-passenger (.ci/run installs them) besides MariaDB and Chromium; off CI
it skips without them and says why. The deployment's helpers are in tests/deploy_site.py.
"""

from __future__ import annotations

import contextlib
import pwd
import re
import secrets
import time
from html.parser import HTMLParser
from pathlib import Path

import pytest
import requests

from services import db
from tests import deploy_site
from tests.conftest import ROOT, _admin_connect, idp_settings, openai_settings, register_clients, unavailable
from tests.test_journey import compose, csp_problems, errors, start, stored_images, subscribe, wait_until_collected

pytestmark = [pytest.mark.browser, pytest.mark.mariadb]

DECOY = "decoy-" + secrets.token_hex(12)
# Files that must never be served from the web root, each with a marker the answers must not contain.
DECOYS = {".env": f"SECRET_KEY={DECOY}\n", "schema.sql": f"-- {DECOY}\nDROP TABLE users;\n",
          "cli.py": f"print('{DECOY}')\n", "var/secret.txt": f"{DECOY}\n"}
REFUSED = ["/.env", "/schema.sql", "/cli.py", "/var/", "/var/secret.txt", "/.htaccess"]
PROMPTS = ["a red fox in the snow", "a lighthouse at dusk", "a bowl of ramen"]
DONE = {"done", "delivered"}
HTTP_TIMEOUT = 30  # s: the first request waits for Passenger to start the app


@pytest.fixture(scope="module")
def deploy_machine():
    """This machine can deploy the site (Apache, Passenger, root); else skip (fail in CI) with the reason."""
    reason = deploy_site.missing_requirement()
    if reason:
        unavailable(reason)


@pytest.fixture(scope="module")
def deploy_database(mariadb_server):
    """A new, empty MariaDB database for the deployed site, dropped after the module."""
    name = f"iib_test_deploy_{secrets.token_hex(5)}"
    conn = _admin_connect()
    try:
        with conn.cursor() as cur:
            cur.execute(f"CREATE DATABASE `{name}` CHARACTER SET utf8mb4 COLLATE utf8mb4_unicode_ci")
        yield mariadb_server.rstrip("/") + "/" + name
    finally:
        with conn.cursor() as cur:
            cur.execute(f"DROP DATABASE IF EXISTS `{name}`")
        conn.close()


@pytest.fixture(scope="module")
def stand_ins():
    """The stand-ins on loopback ports, shared by the module: (identity provider, Stripe, OpenAI)."""
    from tools.fake_idp import FakeIdP
    from tools.fake_openai import FakeOpenAI
    from tools.fake_stripe import FakeStripe

    idp = FakeIdP()
    idp.add_realm("google", style="google")
    idp.add_realm("microsoft", style="microsoft")
    idp.add_account("google", sub="g-1001", name="Ana García", email="ana@example.com")
    idp.start()
    stripe = FakeStripe().start()
    openai = FakeOpenAI().start()
    yield idp, stripe, openai
    for server in (openai, stripe, idp):
        server.stop()


@pytest.fixture(scope="module")
def site(deploy_machine, deploy_database, stand_ins):
    """The deployed site, running: a deploy_site.Deployment (base_url, app_root, python, logs)."""
    from tools.demo import stripe_settings

    idp, stripe, openai = stand_ins
    deployment = deploy_site.Deployment(ROOT)
    try:
        started = time.monotonic()
        deployment.prepare(DECOYS)
        prepared = time.monotonic()
        register_clients(idp, deployment.base_url)
        settings = {
            "APP_MODE": "test",  # allows http and the stand-ins; everything else as in production
            "PUBLIC_BASE_URL": deployment.base_url,
            "DATABASE_URL": deploy_database,
            "SECRET_KEY": secrets.token_urlsafe(48),
            "SERVE_STATIC": "false",  # as in production: only Apache serves public/
            "WORKER_LAUNCH": "none",  # the test runs the worker, by cron's command line
            "LOG_LEVEL": "INFO",
            **idp_settings(idp), **openai_settings(openai),
            **{k: v for k, v in stripe_settings(stripe).items() if k != "STRIPE_WEBHOOK_SECRET"}}
        deployment.write_settings(settings)
        # As the operator does before the site opens: the schema, then Stripe (which makes the webhook endpoint
        # at this site's URL and prints its signing secret once), then the secret into the settings file.
        for command in (["initdb"], ["setup-stripe"]):
            result = deployment.cli(*command)
            assert result.returncode == 0, f"cli.py {' '.join(command)}:\n{result.stdout}{result.stderr}"
        secret = re.search(r"STRIPE_WEBHOOK_SECRET=(whsec_\S+)", result.stdout)
        assert secret, result.stdout
        deployment.write_settings({**settings, "STRIPE_WEBHOOK_SECRET": secret.group(1)})
        deployment.start()
        answer = requests.get(deployment.base_url + "/healthz", timeout=HTTP_TIMEOUT)  # Passenger starts the app
        assert answer.status_code == 200, f"{answer.status_code} {answer.text}\n{deployment.diagnostics()}"
        print(f"\ndeploy: venv {'built' if deployment.venv_built else 'cached'}, prepared in "
              f"{prepared - started:.1f} s, serving in {time.monotonic() - started:.1f} s at {deployment.base_url}")
        yield deployment
    except deploy_site.DeployError as exc:
        pytest.fail(f"the site could not be deployed: {exc}", pytrace=False)
    finally:
        leftovers = deployment.stop()
        deployment.remove()
    assert leftovers == [], f"processes outlived Apache's stop: {leftovers}"


@contextlib.contextmanager
def logs_on_failure(site):
    """Add Apache's, Passenger's and the app's log tails to a failure inside the block."""
    try:
        yield
    except Exception as exc:
        what = str(exc) if isinstance(exc, AssertionError) else f"{type(exc).__name__}: {exc}"
        raise AssertionError(f"{what}\n\n{site.diagnostics()}") from exc


class _Stylesheets(HTMLParser):
    """Collects the href of every <link rel="stylesheet">."""

    def __init__(self):
        super().__init__()
        self.hrefs: list[str] = []

    def handle_starttag(self, tag, attrs):
        values = dict(attrs)
        if tag == "link" and "stylesheet" in (values.get("rel") or "").split():
            self.hrefs.append(values.get("href") or "")


def get(site, path: str, **kwargs) -> requests.Response:
    """GET a path of the deployed site over real HTTP."""
    return requests.get(site.base_url + path, timeout=HTTP_TIMEOUT, allow_redirects=False, **kwargs)


def test_the_landing_page_comes_from_the_app_with_its_csp(site, stand_ins):
    with logs_on_failure(site):
        answer = get(site, "/")
        assert answer.status_code == 200 and answer.headers["Content-Type"].startswith("text/html")
        assert answer.headers.get("X-Request-Id")  # the app answered, through Passenger
        policies = answer.raw.headers.getlist("Content-Security-Policy")
        assert len(policies) == 1, policies  # one policy: a second one (from .htaccess) would apply as well
        assert "script-src 'self'" in policies[0] and "unsafe-inline" not in policies[0]
        assert stand_ins[1].base_url in policies[0]  # form-action from STRIPE_FORM_ORIGINS: the app's own policy


def test_the_css_is_served_by_apache_and_cached_for_a_year(site):
    with logs_on_failure(site):
        parser = _Stylesheets()
        parser.feed(get(site, "/").text)
        assert len(parser.hrefs) == 1 and parser.hrefs[0].startswith("/css/site.css?v="), parser.hrefs
        answer = get(site, parser.hrefs[0])
        assert answer.status_code == 200 and answer.headers["Content-Type"].startswith("text/css")
        assert "X-Request-Id" not in answer.headers  # not the app
        assert answer.headers.get("ETag") or answer.headers.get("Last-Modified")  # Apache's file handler
        assert "max-age=31536000" in answer.headers.get("Cache-Control", "")
        assert answer.headers.get("Content-Encoding") == "gzip"  # compressed by .htaccess's rules
        assert answer.content == (ROOT / "public" / "css" / "site.css").read_bytes()


@pytest.mark.parametrize("path", REFUSED)
def test_private_files_in_the_web_root_are_refused(site, path):
    with logs_on_failure(site):
        answer = get(site, path)
        assert answer.status_code in (403, 404), (answer.status_code, answer.text[:200])
        assert DECOY not in answer.text
        assert "Passenger" not in answer.text and "PassengerAppRoot" not in answer.text


def test_healthz_is_ok(site):
    with logs_on_failure(site):
        answer = get(site, "/healthz")
        assert answer.status_code == 200 and answer.headers.get("X-Request-Id")
        report = answer.json()
        assert (report["status"], report["database"], report["catalog"]) == ("ok", "ok", "ok"), report
        assert isinstance(report["schema_version"], int)


def test_passenger_runs_the_app_with_the_venv_as_www_data(site):
    with logs_on_failure(site):
        get(site, "/healthz")
        apps = [pid for pid, (_start, args) in site.processes().items() if "wsgi-loader" in args]
        assert apps, site.processes()
        for pid in apps:
            assert Path(f"/proc/{pid}").stat().st_uid == pwd.getpwnam("www-data").pw_uid
            assert Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")[0] == str(site.python).encode()


def test_a_subscriber_gets_a_batch_made_by_the_cron_worker(page, site, stand_ins):
    _idp, _stripe, openai = stand_ins
    base = site.base_url
    with logs_on_failure(site):
        subscribe(page, base)
        compose(page, base, PROMPTS, fmt="jpeg", ratio="16:9", quality="low")
        batch_id = start(page, base)
        database = db.Database(site.settings["DATABASE_URL"])
        runs = []
        for _ in range(3):  # cron runs the worker every minute until the queue is empty
            result = site.cli("worker", "--max-seconds", "50", timeout=90)
            runs.append(f"exit {result.returncode}: {result.stdout}{result.stderr}")
            assert result.returncode == 0, runs[-1]
            if {item["status"] for item in _items(database, batch_id)} <= DONE:
                break
        else:
            pytest.fail(f"the batch is not done after {len(runs)} worker runs:\n" + "\n".join(runs))
        wait_until_collected(page, 3)
        stored = stored_images(page, batch_id)
        assert [(s["type"], s["width"], s["height"]) for s in stored] == [("image/jpeg", 1536, 864)] * 3
        assert len(openai.requests) == 3
        deadline = time.monotonic() + 15
        while {item["status"] for item in _items(database, batch_id)} != {"delivered"}:
            assert time.monotonic() < deadline, _items(database, batch_id)
            time.sleep(0.2)
        assert csp_problems(page) == [] and errors(page) == [], page.problems
        report = get(site, "/healthz").json()
        assert report["status"] == "ok" and isinstance(report["worker_heartbeat_age"], int), report
        _logs_are_clean(site)


def _items(database: db.Database, batch_id: int) -> list[dict]:
    """A batch's items as the database has them now."""
    conn = database.connect()
    try:
        return db.batch_items_of(conn, batch_id)
    finally:
        conn.close()


def _logs_are_clean(site) -> None:
    """Apache's, Passenger's and the app's logs hold no secret value, no traceback, no warning about .env's mode."""
    secret_names = ("SECRET_KEY", "STRIPE_SECRET_KEY", "STRIPE_WEBHOOK_SECRET", "OPENAI_API_KEY",
                    "GOOGLE_CLIENT_SECRET", "MICROSOFT_CLIENT_SECRET")
    values = [site.settings[name] for name in secret_names if site.settings.get(name)]
    logs = [path for path in [*site.logs.iterdir(), *Path(site.app_root, "var").rglob("*.log")] if path.is_file()]
    for path in logs:
        text = path.read_text(encoding="utf-8", errors="replace")
        leaked = [value[:6] + "..." for value in values if value in text]
        assert not leaked, f"{path} holds secret values: {leaked}"
        assert "Traceback" not in text, f"{path}:\n{deploy_site.tail(path)}"
        assert "can be read by other users" not in text, f"{path}:\n{deploy_site.tail(path)}"
