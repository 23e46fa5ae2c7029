"""The app factory, the WSGI entry point for Passenger, the demo command and the CLI."""

import os
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from app import create_app
from services import db
from services.config import SETTING_NAMES
from tests.conftest import ROOT, BufferedClient


def run(args, env=None, timeout=60, cwd=None):
    full_env = {k: v for k, v in os.environ.items() if k not in SETTING_NAMES}
    full_env.update(env or {})
    return subprocess.run([sys.executable, *args], cwd=cwd or ROOT, env=full_env, capture_output=True,
                          text=True, timeout=timeout)


def test_two_calls_give_two_independent_apps(db_url, database, tmp_path):
    first = create_app({"APP_MODE": "test", "DATABASE_URL": db_url, "PLAN_CREDITS": "10"})
    second = create_app({"APP_MODE": "test", "DATABASE_URL": db_url, "PLAN_CREDITS": "20"})
    assert first is not second
    assert first.settings.plan_credits == 10 and second.settings.plan_credits == 20
    assert first.settings.secret_key != second.settings.secret_key

    @first.get("/_only-first")
    def only_first():
        return "first"

    assert BufferedClient(first).get("/_only-first").text == "first"
    assert BufferedClient(second).get("/_only-first").status_code == 404


def test_importing_the_app_module_builds_nothing():
    result = run(["-c", "import app, bottle; print(len(bottle.default_app().routes))"])
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "0"


def test_passenger_entry_point_serves_with_production_settings(tmp_path):
    env = {"SECRET_KEY": "p" * 48, "PUBLIC_BASE_URL": "https://images.example.com",
           "MICROSOFT_CLIENT_ID": "ms-app", "MICROSOFT_CLIENT_SECRET": "ms-secret",
           "STRIPE_SECRET_KEY": "sk_test_passenger", "STRIPE_WEBHOOK_SECRET": "whsec_passenger",
           "OPENAI_API_KEY": "sk-passenger",
           "DATABASE_URL": f"sqlite:///{tmp_path / 'prod.db'}", "APP_MODE": "production"}
    code = ("import passenger_wsgi as p; from werkzeug.test import Client; "
            "r = Client(p.application).get('/', buffered=True); "
            "print(r.status_code, r.headers.get('Strict-Transport-Security'), p.application.settings.serve_static)")
    result = run(["-c", code], env=env, cwd=ROOT)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["200", "max-age=31536000", "False"]


def test_passenger_entry_point_refuses_to_start_without_secrets():
    result = run(["-c", "import passenger_wsgi; print(passenger_wsgi.application.__name__)"],
                 env={"APP_MODE": "production", "IIB_SETTINGS_FILE": "/nonexistent/.env"})
    assert result.returncode == 0 and result.stdout.strip() == "unavailable"  # every request: a bare 503
    assert "SECRET_KEY is missing" in result.stderr and "PUBLIC_BASE_URL is missing" in result.stderr


def test_initdb_command_creates_then_finds_nothing_to_do(db_url):
    env = {"APP_MODE": "test", "DATABASE_URL": db_url}
    first = run(["cli.py", "initdb"], env=env)
    assert first.returncode == 0, first.stderr
    latest = db.schema_file_version(db.Database(db_url).engine)
    assert f"created schema version {latest}" in first.stdout
    second = run(["cli.py", "initdb"], env=env)
    assert second.returncode == 0 and f"already at schema version {latest}" in second.stdout
    cleanup = run(["cli.py", "cleanup"], env=env)
    assert cleanup.returncode == 0
    assert cleanup.stdout.startswith("cleanup: 0 expired sessions and 0 expired sign-in flows removed, "
                                     "0 old webhook events forgotten, 0 uncollected images expired")


def test_cli_reports_bad_settings_and_a_dead_database_in_one_line(tmp_path):
    bad = run(["cli.py", "initdb"], env={"APP_MODE": "production"})
    assert bad.returncode == 2 and "SECRET_KEY is missing" in bad.stderr and "Traceback" not in bad.stderr
    dead = run(["cli.py", "initdb"], env={"APP_MODE": "test", "DATABASE_URL": "mysql://u:hidden-pw@127.0.0.1:9/x"})
    assert dead.returncode == 3 and "unavailable" in dead.stderr
    assert "hidden-pw" not in dead.stderr and "Traceback" not in dead.stderr


def sign_in_through_the_demo_stand_in(base):
    """A new visitor signs in with each demo provider: login page, the stand-in's chooser, the account page."""
    import html
    import re

    import requests

    for provider in ("google", "microsoft"):
        with requests.Session() as browser:
            login = browser.get(base + "/login", timeout=10, headers={"Accept-Language": "en"})
            assert f"/auth/{provider}/start" in login.text and "Demo sign-in" in login.text
            chooser = browser.get(f"{base}/auth/{provider}/start", timeout=10)
            assert chooser.status_code == 200 and "Ana García" in chooser.text
            form = re.search(r'<form method="post" action="([^"]+)"[^>]*>(.*?)</form>', chooser.text, re.S)
            fields = dict(re.findall(r'<input type="hidden" name="([^"]+)" value="([^"]*)">', form.group(2)))
            fields = {k: html.unescape(v) for k, v in fields.items()}
            sub = re.search(r'name="account" value="([^"]+)"', form.group(2)).group(1)
            action = requests.compat.urljoin(chooser.url, form.group(1))
            account = browser.post(action, data={**fields, "account": sub}, timeout=10)
            assert account.url == base + "/account", account.url
            assert "Ana García" in account.text
            if provider == "google":
                token = subscribe_through_the_demo_stand_in(browser, base)
                generate_through_the_demo_stand_in(browser, base, token)


def subscribe_through_the_demo_stand_in(browser, base):
    """The signed-in visitor subscribes: the pricing form, the stand-in's Checkout page, Pay, 300 credits."""
    import re

    pricing = browser.get(base + "/pricing", timeout=10)
    token = re.search(r'action="/billing/checkout">\s*<input type="hidden" name="csrf_token" value="([^"]+)"',
                      pricing.text).group(1)
    checkout = browser.post(base + "/billing/checkout", data={"csrf_token": token}, timeout=10)
    assert checkout.status_code == 200 and 'id="pay"' in checkout.text, checkout.url
    paid = browser.post(checkout.url, data={"action": "pay"}, timeout=10)
    assert paid.url == base + "/account?welcome=1", paid.url
    assert '<dd class="credits-left">300</dd>' in paid.text
    return token


def generate_through_the_demo_stand_in(browser, base, token):
    """The subscriber starts a batch through the JSON API; the demo's worker thread generates it, names and all."""
    import io

    from PIL import Image

    form = {"prompts": "a red fox\na lighthouse at dusk", "names": "fox", "style": "watercolour",
            "model": "gpt-image-2", "format": "png", "ratio": "9:16", "quality": "low"}
    created = browser.post(base + "/api/batches", json=form, headers={"X-CSRF-Token": token}, timeout=10)
    assert created.status_code == 201, created.text
    batch_id = created.json()["batch"]["id"]
    deadline = time.monotonic() + 30
    while (status := browser.get(f"{base}/api/batches/{batch_id}", timeout=10).json())["batch"]["status"] != "done":
        assert time.monotonic() < deadline, status
        time.sleep(0.2)
    assert [i["status"] for i in status["items"]] == ["done", "done"]
    assert [i["file_name"] for i in status["items"]] == ["fox.png", "002-a-lighthouse-at-dusk.png"]
    image = browser.get(f"{base}/api/batches/{batch_id}/items/{status['items'][0]['id']}/image", timeout=10)
    with Image.open(io.BytesIO(image.content)) as picture:
        assert (picture.size, picture.format) == ((864, 1536), "PNG")
    account = browser.get(base + "/account", timeout=10)
    assert '<dd class="credits-left">296</dd>' in account.text


def test_demo_command_serves_the_landing_page_in_both_languages(tmp_path):
    env = {k: v for k, v in os.environ.items() if k not in SETTING_NAMES}
    env.update({"VAR_DIR": str(tmp_path / "var"), "PYTHONUNBUFFERED": "1"})
    process = subprocess.Popen([sys.executable, "app.py", "--demo", "--port", "0"], cwd=ROOT, env=env,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        line = process.stdout.readline()
        assert "running at http://127.0.0.1:" in line, line + process.stderr.read() if process.poll() else line
        base = line.split("running at ")[1].split()[0].rstrip("/")
        pages = {}
        for lang in ("es", "en"):
            request = urllib.request.Request(base + "/", headers={"Accept-Language": lang})
            deadline = time.monotonic() + 20
            while True:
                try:
                    with urllib.request.urlopen(request, timeout=5) as response:
                        pages[lang] = (response.status, response.read().decode("utf-8"))
                    break
                except OSError:
                    if time.monotonic() > deadline:
                        raise
                    time.sleep(0.1)
        assert pages["es"][0] == pages["en"][0] == 200
        assert '<html lang="es">' in pages["es"][1] and '<html lang="en">' in pages["en"][1]
        assert Path(tmp_path / "var" / "demo.db").exists()
        sign_in_through_the_demo_stand_in(base)
    finally:
        process.terminate()
        try:
            process.communicate(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.communicate()
