"""The subscriber's whole journey in a real Chromium, every stand-in live over HTTP, on SQLite and MariaDB.

Sign in (identity stand-in) → subscribe (Stripe stand-in's Checkout) → compose → review → start →
the worker (a thread, as in the demo) generates through the OpenAI stand-in → batch.js stores each
image in IndexedDB and acknowledges it → the ZIP is built in the browser and checked with zipfile.
Screenshots of each page go to test-artifacts/ (not committed).
"""

from __future__ import annotations

import csv
import io
import os
import time
import zipfile
from pathlib import Path

import pytest
from PIL import Image

from services import credits, db, worker
from tests.axe import axe_violations, format_violations
from tests.conftest import ROOT, idp_settings, openai_settings, register_clients
from tests.jsbudget import own_and_total, shipped_js

pytestmark = pytest.mark.browser

ARTIFACTS = Path(os.environ.get("TEST_ARTIFACTS", ROOT / "test-artifacts"))
TIMEOUT = 60_000  # ms: a whole batch, on a slow shared machine

PROMPTS = ["a red fox in the snow", "a lighthouse at dusk", "a bowl of ramen", "a paper boat on a pond",
           "a snowy mountain cabin", "a hot air balloon over fields"]
NAMES = ["fox", "fox", "../../etc/passwd", "ramen 🍜 bowl", "cabin"]
EXPECTED_NAMES = ["fox.jpg", "fox-2.jpg", "etcpasswd.jpg", "ramen 🍜 bowl.jpg", "cabin.jpg",
                  "006-a-hot-air-balloon-over-fields.jpg"]


@pytest.fixture
def db_url(request):
    """SQLite, unless a test asks for MariaDB too (the whole journey runs on both)."""
    return request.getfixturevalue(f"{getattr(request, 'param', 'sqlite')}_url")


@pytest.fixture
def site(serve, idp, fake_stripe, fake_openai):
    """The app with sign-in, billing and generation on the stand-ins, and the demo's worker thread."""
    from services import billing
    from tools.demo import stripe_settings

    fake_openai.latency = 0.2
    base_url, app = serve(**idp_settings(idp), **stripe_settings(fake_stripe), **openai_settings(fake_openai),
                          WORKER_LAUNCH="none")
    register_clients(idp, base_url)
    fake_stripe.webhook_url = f"{base_url}/stripe/webhook"
    app.billing["price_id"] = billing.setup_price(billing.make_client(app.settings), app.settings)
    stop = worker.start_thread(app.settings, app.database, app.catalog)
    yield base_url, app
    stop.set()


def shot(page, name: str) -> None:
    """Save a full-page screenshot as a test artifact."""
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / f"{name}.png"), full_page=True)


def accessible(page) -> None:
    """No serious or critical axe-core violation on the page as it is now."""
    found = axe_violations(page)
    assert found == [], f"{page.url}:\n{format_violations(found)}"


def subscribe(page, base: str, account: str = "g-1001") -> None:
    """Sign in with the Google stand-in and pay the plan in the Stripe stand-in's Checkout."""
    page.goto(base + "/login?next=/pricing")
    page.click("a.provider-google")
    page.click(f"button.account[data-sub='{account}']")
    page.wait_for_url(base + "/pricing")
    page.click("#subscribe")
    page.wait_for_url("**/c/pay/**")
    page.click("#pay")
    page.wait_for_url(base + "/account?welcome=1")


def compose(page, base: str, prompts, names=(), style="", fmt="jpeg", ratio="9:16", quality="low") -> None:
    """Fill the compose form and go to the review."""
    page.goto(base + "/generate")
    page.fill("#prompts", "\n".join(prompts))
    page.fill("#names", "\n".join(names))
    page.fill("#style", style)
    page.check(f"input[name=format][value='{fmt}']")
    page.check(f"input[name=ratio][value='{ratio}']")
    page.check(f"input[name=quality][value='{quality}']")
    page.click("#review-button")
    page.wait_for_url(base + "/generate/review")


def start(page, base: str, button: str = "#start-button") -> int:
    """Press Start on the review; return the new batch's id."""
    page.click(button)
    page.wait_for_url(f"{base}/batches/*")
    return int(page.url.rsplit("/", 1)[1])


def wait_until_collected(page, count: int) -> None:
    """Wait until the batch page has stored `count` images in IndexedDB (every result shows its thumbnail)."""
    page.wait_for_function("(n) => document.querySelectorAll('.result-img:not([hidden])').length >= n", arg=count,
                           timeout=TIMEOUT)


def stored_images(page, batch_id: int) -> list[dict]:
    """The images this browser's IndexedDB holds for a batch: name, type, size and pixel size."""
    return page.evaluate("""async (batchId) => {
        const db = await new Promise((ok, fail) => {
            const r = indexedDB.open("images-in-bulk"); r.onsuccess = () => ok(r.result); r.onerror = fail; });
        const rows = await new Promise((ok, fail) => {
            const r = db.transaction("images").objectStore("images").index("batchId").getAll(batchId);
            r.onsuccess = () => ok(r.result); r.onerror = fail; });
        db.close();
        const out = [];
        for (const row of rows) {
            const bitmap = await createImageBitmap(row.blob);
            out.push({name: row.name, type: row.blob.type, bytes: row.blob.size,
                      width: bitmap.width, height: bitmap.height, position: row.position});
        }
        return out.sort((a, b) => a.position - b.position);
    }""", batch_id)


def download_zip(page) -> tuple[zipfile.ZipFile, str]:
    """Press "Download ZIP" and open what the browser saved."""
    page.wait_for_selector("#zip-button:not([hidden])", timeout=TIMEOUT)
    with page.expect_download(timeout=TIMEOUT) as info:
        page.click("#zip-button")
    download = info.value
    data = Path(download.path()).read_bytes()
    return zipfile.ZipFile(io.BytesIO(data)), download.suggested_filename


def errors(page) -> list[str]:
    """Console errors, but for the stand-ins' pages asking for a /favicon.ico they do not have."""
    return [p for p in page.problems if "/favicon.ico)" not in p]


def csp_problems(page) -> list[str]:
    """Console messages about the Content-Security-Policy."""
    return [p for p in page.problems if "Content Security Policy" in p or "Content-Security-Policy" in p]


@pytest.mark.parametrize("db_url", ["sqlite", pytest.param("mariadb", marks=pytest.mark.mariadb)], indirect=True)
def test_the_whole_journey_ends_in_a_zip_of_exact_images(page, site, fake_openai):
    base, app = site
    subscribe(page, base)
    shot(page, "01-account")
    accessible(page)

    compose(page, base, PROMPTS, NAMES, style="watercolor")
    shot(page, "03-review")
    accessible(page)
    warnings = page.text_content("#review-warnings")
    assert "fox-2.jpg" in warnings and "etcpasswd.jpg" in warnings and "5" in warnings and "6" in warnings
    assert "12" in page.text_content(".review-credits") and "300" in page.text_content(".review-credits")
    names = [cell.strip() for cell in page.locator(".review-name code").all_text_contents()]
    assert names == EXPECTED_NAMES
    assert page.locator(".review-final").first.text_content() == "a red fox in the snow, watercolor"

    batch_id = start(page, base)
    shot(page, "04-batch-running")
    wait_until_collected(page, 6)
    page.wait_for_function("() => document.querySelector('#batch-counter').textContent.includes(' 6 de 6 ')",
                           timeout=TIMEOUT)
    assert page.get_attribute("#batch-progress", "value") == "6"
    accessible(page)
    shot(page, "05-batch-done")

    stored = stored_images(page, batch_id)
    assert [s["name"] for s in stored] == EXPECTED_NAMES
    assert {(s["type"], s["width"], s["height"]) for s in stored} == {("image/jpeg", 864, 1536)}

    archive, suggested = download_zip(page)
    assert suggested.startswith("images-in-bulk-") and suggested.endswith(f"-{batch_id}.zip")
    images = [n for n in archive.namelist() if n != "manifest.csv"]
    assert sorted(images) == sorted(EXPECTED_NAMES)
    for name in images:
        with Image.open(io.BytesIO(archive.read(name))) as image:
            assert (image.format, image.size) == ("JPEG", (864, 1536)), name
    manifest = archive.read("manifest.csv")
    assert manifest.startswith("\ufeff".encode())
    rows = list(csv.DictReader(io.StringIO(manifest.decode("utf-8-sig"))))
    assert [r["file_name"] for r in rows] == EXPECTED_NAMES
    assert [r["prompt"] for r in rows] == PROMPTS
    assert rows[0]["final_prompt"] == "a red fox in the snow, watercolor"
    assert {(r["model"], r["size"], r["format"], r["status"]) for r in rows} == {("gpt-image-2", "864x1536", "jpeg",
                                                                                   "done")}

    conn = app.database.connect()
    try:
        items = db.batch_items_of(conn, batch_id)
        assert {i["status"] for i in items} == {"delivered"}  # every server copy is gone
        assert not any((app.settings.results_dir / i["result_path"]).exists() for i in items if i["result_path"])
        user_id = db.batch_get(conn, batch_id)["user_id"]
        assert credits.balance(conn, user_id) == 300 - 12
    finally:
        conn.close()
    assert len(fake_openai.requests) == 6
    assert csp_problems(page) == [] and errors(page) == [], page.problems


def test_a_reload_in_the_middle_finishes_without_duplicates_or_extra_charges(page, site, fake_openai):
    base, app = site
    fake_openai.latency = 0.6
    subscribe(page, base)
    compose(page, base, PROMPTS, fmt="png", ratio="1:1")
    batch_id = start(page, base)
    wait_until_collected(page, 2)
    page.reload()
    wait_until_collected(page, 6)
    stored = stored_images(page, batch_id)
    assert len(stored) == 6 and len({s["name"] for s in stored}) == 6
    assert {(s["type"], s["width"], s["height"]) for s in stored} == {("image/png", 1024, 1024)}
    conn = app.database.connect()
    try:
        assert {i["status"] for i in db.batch_items_of(conn, batch_id)} == {"delivered"}
        user_id = db.batch_get(conn, batch_id)["user_id"]
        assert conn.scalar("SELECT COUNT(*) AS n FROM credit_ledger WHERE user_id = ? AND reason = 'reserve'",
                           (user_id,)) == 6
        assert credits.balance(conn, user_id) == 300 - 6 * 2
    finally:
        conn.close()
    assert len(fake_openai.requests) == 6
    assert errors(page) == [], page.problems


def test_a_refused_prompt_shows_its_reason_gets_its_credits_back_and_is_edited_then_made(page, site, fake_openai):
    base, app = site
    subscribe(page, base)
    compose(page, base, ["a calm lake", "a FORBIDDEN thing", "a quiet forest"], fmt="jpeg", ratio="16:9")
    batch_id = start(page, base)
    failed = page.locator(".result[data-status='failed']")
    failed.wait_for(timeout=TIMEOUT)
    wait_until_collected(page, 2)
    assert "safety" in failed.locator(".result-error").text_content().lower() or \
        "seguridad" in failed.locator(".result-error").text_content().lower()
    # No plain retry for a refusal (it would be refused again): the row offers its prompt to rewrite.
    editor = failed.locator(".result-edit textarea")
    editor.wait_for(timeout=TIMEOUT)
    assert editor.input_value() == "a FORBIDDEN thing" and page.locator("#retry-form").is_hidden()
    conn = app.database.connect()
    try:
        user_id = db.batch_get(conn, batch_id)["user_id"]
        assert credits.balance(conn, user_id) == 300 - 2 * 2  # 16:9 low costs 2; the refused one came back
    finally:
        conn.close()
    shot(page, "06-batch-failure")
    accessible(page)
    sent_before = len(fake_openai.requests)
    editor.fill("a friendly thing")
    failed.locator(".result-edit button").click()
    wait_until_collected(page, 3)
    retried = fake_openai.requests[sent_before:]
    assert [r["prompt"] for r in retried] == ["a friendly thing"]
    stored = stored_images(page, batch_id)
    assert {(s["width"], s["height"]) for s in stored} == {(1536, 864)} and len(stored) == 3
    conn = app.database.connect()
    try:
        assert credits.balance(conn, user_id) == 300 - 3 * 2
    finally:
        conn.close()
    assert csp_problems(page) == []


def test_the_library_lists_zips_and_deletes_a_batch_in_english(browser, site):
    base, _app = site
    context = browser.new_context(locale="en-US", accept_downloads=True)
    page = context.new_page()
    page.problems = []
    page.on("console", lambda msg: msg.type == "error" and page.problems.append(
        f"{msg.text} ({msg.location.get('url', '')})"))
    try:
        subscribe(page, base)
        compose(page, base, PROMPTS[:3], names=["one", "two", "three"], fmt="jpeg", ratio="1:1")
        assert page.evaluate("document.documentElement.lang") == "en"
        batch_id = start(page, base)
        wait_until_collected(page, 3)
        page.goto(base + "/library")
        item = page.locator(f".library-item[data-batch-id='{batch_id}']")
        item.wait_for(timeout=TIMEOUT)
        assert "3 images" in item.text_content()
        page.wait_for_function("() => document.querySelector('#storage-text').textContent.length > 0")
        shot(page, "07-library")
        accessible(page)
        with page.expect_download(timeout=TIMEOUT) as info:
            item.locator(".library-zip").click()
        archive = zipfile.ZipFile(io.BytesIO(Path(info.value.path()).read_bytes()))
        assert sorted(archive.namelist()) == ["manifest.csv", "one.jpg", "three.jpg", "two.jpg"]
        page.once("dialog", lambda dialog: dialog.accept())
        item.locator(".library-delete").click()
        page.wait_for_selector("#library-empty:not([hidden])", timeout=TIMEOUT)
        assert stored_images(page, batch_id) == []
        assert errors(page) == [], page.problems
    finally:
        context.close()


def test_a_test_run_makes_three_then_the_rest(page, site, fake_openai):
    base, _app = site
    subscribe(page, base)
    compose(page, base, PROMPTS, fmt="png", ratio="16:9")
    batch_id = start(page, base, "#test-button")
    wait_until_collected(page, 3)
    page.wait_for_selector("#continue-button", timeout=TIMEOUT)
    assert len(fake_openai.requests) == 3
    page.click("#continue-button")
    wait_until_collected(page, 6)
    stored = stored_images(page, batch_id)
    assert len(stored) == 6 and {(s["type"], s["width"], s["height"]) for s in stored} == {("image/png", 1536, 864)}


def test_every_page_is_accessible_and_ships_js_only_where_needed(page, site):
    base, _app = site
    for path in ("/", "/terms", "/privacy", "/login", "/pricing", "/no-such-page"):
        assert shipped_js(page, base + path) == {}, path
        accessible(page)
    subscribe(page, base)
    for path in ("/account", "/generate"):
        assert shipped_js(page, base + path) == {}, path
        accessible(page)
    shot(page, "02-compose")
    compose(page, base, PROMPTS[:2])
    assert page.locator("script").count() == 0  # the review (a POST's answer) loads no script either
    accessible(page)
    batch_id = start(page, base)
    own, total = own_and_total(shipped_js(page, f"{base}/batches/{batch_id}"))
    assert own <= 8 * 1024 and total <= 12 * 1024, (own, total)
    own, total = own_and_total(shipped_js(page, f"{base}/library"))
    assert own <= 8 * 1024 and total <= 12 * 1024, (own, total)
    own, total = own_and_total(shipped_js(page, f"{base}/logout"))  # signout.js and store.js, no ZIP code
    assert own <= 3 * 1024 and total == own, (own, total)
    page.wait_for_selector("#signout-remove")  # shown by signout.js: checked with it
    accessible(page)
    assert csp_problems(page) == []


def test_small_screens_and_dark_mode_on_the_batch_page(browser, site):
    base, _app = site
    context = browser.new_context(viewport={"width": 360, "height": 740}, color_scheme="dark", locale="es-ES")
    page = context.new_page()
    try:
        subscribe(page, base)
        compose(page, base, PROMPTS[:3])
        start(page, base)
        wait_until_collected(page, 3)
        for path in ("/generate", page.url, "/library"):
            page.goto(path if path.startswith("http") else base + path)
            assert page.evaluate("document.documentElement.scrollWidth") <= 360, path
        accessible(page)
        shot(page, "08-library-dark-small")
    finally:
        context.close()


@pytest.mark.parametrize("db_url", ["sqlite", pytest.param("mariadb", marks=pytest.mark.mariadb)], indirect=True)
def test_an_economy_batch_waits_for_openai_then_ends_in_a_zip(page, site, fake_openai):
    base, app = site
    # OpenAI's Batch API on the stand-in: a few seconds in each state, so the page shows the wait.
    fake_openai.batch_pace = {"validating": 1.0, "per_request": 1.5, "finalizing": 1.0, "cancelling": 0.1}
    subscribe(page, base)
    page.goto(base + "/generate")
    page.fill("#prompts", "\n".join(PROMPTS[:4]))
    page.check("input[name=speed][value='economy']")
    page.check("input[name=format][value='png']")
    page.check("input[name=ratio][value='1:1']")
    page.check("input[name=quality][value='low']")
    page.click("#review-button")
    page.wait_for_url(base + "/generate/review")
    assert "Económico · 4 créditos" in page.text_content("#speed-economy")  # the site's default language
    assert "Ahora · 8 créditos" in page.text_content("#speed-now")
    assert page.locator("#test-button").count() == 0
    accessible(page)
    shot(page, "30-review-economy")

    batch_id = start(page, base)
    page.wait_for_selector("#economy-banner")
    assert "como mucho 24 h" in page.text_content("#economy-banner")
    # The demo's worker sends the batch upstream within seconds; the page then shows OpenAI's counts.
    page.wait_for_function("() => /OpenAI lleva \\d+ de 4/.test(document.querySelector('#economy-progress')"
                           ".textContent)", timeout=TIMEOUT)
    page.reload()  # rendered while OpenAI works (6 s or more): each image says so
    assert page.locator(".result-status", has_text="Esperando a OpenAI (económico)").count() == 4
    accessible(page)
    shot(page, "31-batch-economy-waiting")

    conn = app.database.connect()
    try:
        deadline = time.monotonic() + TIMEOUT / 1000
        while conn.scalar("SELECT COUNT(*) AS n FROM batch_items WHERE batch_id = ? AND status IN "
                          "('queued', 'waiting')", (batch_id,)) and time.monotonic() < deadline:
            time.sleep(0.2)
        page.reload()  # back later, as a subscriber would be (the page itself looks every 30 s)
        wait_until_collected(page, 4)
        stored = stored_images(page, batch_id)
        assert [s["name"] for s in stored] == [f"00{n}-{slug}.png" for n, slug in
                                              enumerate(["a-red-fox-in-the-snow", "a-lighthouse-at-dusk",
                                                         "a-bowl-of-ramen", "a-paper-boat-on-a-pond"], 1)]
        assert {(s["type"], s["width"], s["height"]) for s in stored} == {("image/png", 1024, 1024)}
        archive, _name = download_zip(page)
        assert len([n for n in archive.namelist() if n != "manifest.csv"]) == 4
        page.wait_for_function("() => [...document.querySelectorAll('.result')].every(r => r.dataset.status === "
                               "'delivered')", timeout=TIMEOUT)
        user_id = db.batch_get(conn, batch_id)["user_id"]
        assert credits.balance(conn, user_id) == 300 - 4
        assert [r["reason"] for r in conn.all("SELECT reason FROM credit_ledger WHERE user_id = ? AND reason <> "
                                              "'grant' ORDER BY id", (user_id,))] == ["economy"] * 4
    finally:
        conn.close()
    assert fake_openai.requests == []  # nothing went through the synchronous endpoint
    assert csp_problems(page) == [] and errors(page) == [], page.problems
