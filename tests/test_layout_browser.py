"""Layout in a real Chromium: hidden things stay hidden (with JavaScript and without), the header is one row on a
phone in both languages, and a library card says what its batch is.

Signed in through the stand-ins as tests/test_journey.py does. Screenshots of the header go to test-artifacts/.
"""

from __future__ import annotations

import pytest

from tests.test_journey import (  # noqa: F401 (site is a fixture)
    PROMPTS,
    TIMEOUT,
    accessible,
    compose,
    errors,
    shot,
    site,
    start,
    subscribe,
    wait_until_collected,
)

pytestmark = pytest.mark.browser

PHONE = {"width": 390, "height": 844}
DESKTOP = {"width": 1280, "height": 800}
HEADER_MAX = 64  # px: one row (the brand, one shortcut, the menu button), the header's border included

# The elements with the hidden attribute that are rendered anyway: none, whatever class they carry.
SHOWN_HIDDEN = """() => [...document.querySelectorAll('[hidden]')]
  .filter(el => el.checkVisibility() || el.getClientRects().length > 0)
  .map(el => el.outerHTML.slice(0, 160))"""

HEADER = """() => {
  const box = s => { const el = document.querySelector(s); return el && el.getBoundingClientRect().toJSON(); };
  const name = document.querySelector('.brand-name');
  return {height: box('.site-header').height, brand: box('.brand'), lang: box('.lang-switch'),
          scrollWidth: document.documentElement.scrollWidth, nameCut: name.scrollWidth > name.clientWidth};
}"""


@pytest.fixture
def db_url(sqlite_url):
    """Layout is the same on either engine: SQLite is enough."""
    return sqlite_url


def new_page(browser, **options):
    """A page in a context of its own (closed with the page's context), collecting console errors."""
    context = browser.new_context(**{"locale": "es-ES", **options})
    page = context.new_page()
    page.problems = []
    if options.get("java_script_enabled", True):
        page.on("console", lambda msg: msg.type == "error" and page.problems.append(
            f"{msg.text} ({msg.location.get('url', '')})"))
        page.on("pageerror", lambda exc: page.problems.append(str(exc)))
    return page


def nothing_hidden_shows(page, where: str) -> None:
    """No element with the hidden attribute is rendered on the page as it is now."""
    shown = page.evaluate(SHOWN_HIDDEN)
    assert shown == [], f"{where} ({page.url}): {shown}"


def test_hidden_elements_stay_hidden_with_and_without_javascript(browser, site):  # noqa: F811 - the fixture
    base, _app = site
    page = new_page(browser)
    bare = new_page(browser, java_script_enabled=False)
    try:
        for path in ("/", "/pricing", "/login"):  # signed out
            for each, how in ((page, "js"), (bare, "no js")):
                each.goto(base + path)
                nothing_hidden_shows(each, f"signed out, {how}")

        subscribe(page, base)
        bare.context.add_cookies(page.context.cookies())
        compose(page, base, PROMPTS[:2], fmt="png", ratio="1:1")
        nothing_hidden_shows(page, "review, js")
        compose(bare, base, PROMPTS[:2], fmt="png", ratio="1:1")  # a plain form: no script needed
        nothing_hidden_shows(bare, "review, no js")
        batch_id = start(page, base)
        batch = f"{base}/batches/{batch_id}"

        # Without JavaScript the batch page cannot collect images: its "Download ZIP" stays hidden.
        bare.goto(batch)
        assert bare.locator("#zip-button").count() == 1
        assert not bare.is_visible("#zip-button")
        nothing_hidden_shows(bare, "batch, no js")
        # With it, the page shows and hides its parts as the batch runs, and once every image is stored.
        nothing_hidden_shows(page, "batch running, js")
        wait_until_collected(page, 2)
        page.wait_for_selector("#zip-button:not([hidden])", timeout=TIMEOUT)
        nothing_hidden_shows(page, "batch done, js")

        for path in ("/", "/pricing", "/login", "/account", "/generate", "/library", "/logout"):
            for each, how in ((page, "js"), (bare, "no js")):
                each.goto(base + path)
                if path == "/library" and each is page:
                    page.locator(f".library-item[data-batch-id='{batch_id}']").wait_for(timeout=TIMEOUT)
                    page.wait_for_function("() => document.querySelector('#storage-text').textContent.length > 0")
                if path == "/logout" and each is page:
                    page.wait_for_selector("#signout-remove")  # shown by signout.js
                nothing_hidden_shows(each, f"signed in, {how}")
        assert errors(page) == [], page.problems
    finally:
        page.context.close()
        bare.context.close()


def measure_phone_header(page, where: str) -> float:
    """The header at 390 px: one row no taller than HEADER_MAX, nothing wider than the screen, the brand whole."""
    found = page.evaluate(HEADER)
    assert found["height"] <= HEADER_MAX, (where, found)
    assert found["scrollWidth"] <= PHONE["width"], (where, found)
    assert not found["nameCut"], (where, found)
    assert page.is_visible(".header-menu-button") and not page.is_visible(".lang-switch"), where
    return found["height"]


def open_menu(page, where: str) -> None:
    """Open the header's menu (no script: a <details>): its links and the language switch show, and pass axe."""
    page.click(".header-menu-button")
    assert page.get_attribute(".header-menu", "open") is not None, where
    for link in (".site-nav a[href='/pricing']", ".lang-switch a[hreflang]"):
        assert page.is_visible(link), (where, link)
    accessible(page)


def test_the_header_is_one_row_on_a_phone_in_both_languages(browser, site):  # noqa: F811 - the fixture
    base, _app = site
    page = new_page(browser, viewport=PHONE)
    try:
        heights = {}
        for lang in ("es", "en"):
            page.goto(f"{base}/lang/{lang}?next=/pricing")
            assert page.evaluate("document.documentElement.lang") == lang
            heights[f"signed out, {lang}"] = measure_phone_header(page, f"signed out, {lang}")
            assert page.is_visible(".header-shortcut.nav-signin")
            accessible(page)
            open_menu(page, f"signed out, {lang}")
            shot(page, f"70-header-phone-signed-out-{lang}")

        subscribe(page, base)
        for lang in ("es", "en"):
            for path in ("/account", "/generate", "/library"):
                page.goto(f"{base}/lang/{lang}?next={path}")
                heights[f"signed in, {lang}, {path}"] = measure_phone_header(page, f"signed in, {lang}, {path}")
            assert page.is_visible(".header-shortcut.nav-generate")
            assert not page.is_visible(".nav-user")  # in the menu
            accessible(page)
            shot(page, f"71-header-phone-signed-in-{lang}")
            open_menu(page, f"signed in, {lang}")
            for link in (".nav-library", ".nav-user", ".nav-signout"):
                assert page.is_visible(link), (lang, link)
            assert not page.is_visible(".account-nav .nav-generate")  # on the row already
            shot(page, f"72-header-phone-menu-{lang}")
            # The menu's links work without a script.
            page.click(".site-nav a[href='/pricing']")
            page.wait_for_url(base + "/pricing")
        print("header heights at 390 px:", heights)  # shown with pytest -s
        assert errors(page) == [], page.problems
    finally:
        page.context.close()


def test_the_desktop_header_keeps_the_language_switch_on_the_logos_row(browser, site):  # noqa: F811 - the fixture
    base, _app = site
    page = new_page(browser, viewport=DESKTOP)
    try:
        subscribe(page, base)
        compose(page, base, PROMPTS[:1], fmt="png", ratio="1:1")
        batch_id = start(page, base)
        for lang in ("es", "en"):
            for path in ("/", "/pricing", "/account", "/generate", f"/batches/{batch_id}", "/library", "/logout"):
                page.goto(f"{base}/lang/{lang}?next={path}")
                found = page.evaluate(HEADER)
                brand, switch = found["brand"], found["lang"]
                assert switch["top"] < brand["bottom"] and switch["bottom"] > brand["top"], (lang, path, found)
                assert found["height"] <= HEADER_MAX and not found["nameCut"], (lang, path, found)
                assert not page.is_visible(".header-menu-button") and not page.is_visible(".header-shortcut")
                for link in (".site-nav a[href='/#faq']", ".account-nav .nav-generate", ".nav-library", ".nav-user",
                             ".nav-signout", ".lang-switch a[hreflang]"):
                    assert page.is_visible(link), (lang, path, link)
            accessible(page)
            # The owner's Admin link and a long name still fit: the name gives way, cut with an ellipsis.
            page.evaluate("""() => {
              const admin = document.createElement('a');
              admin.className = 'nav-admin'; admin.href = '/admin'; admin.textContent = 'Admin';
              document.querySelector('.nav-library').after(admin);
              document.querySelector('.nav-user').textContent = 'María Fernanda Castellanos de la Vega';
            }""")
            found = page.evaluate(HEADER)
            assert found["lang"]["top"] < found["brand"]["bottom"] and not found["nameCut"], (lang, found)
            assert found["scrollWidth"] <= DESKTOP["width"], (lang, found)
            shot(page, f"73-header-desktop-{lang}")
        assert errors(page) == [], page.problems
    finally:
        page.context.close()


def test_a_library_card_says_what_its_batch_is_in_the_pages_language(browser, site):  # noqa: F811 - the fixture
    base, _app = site
    page = new_page(browser, viewport=PHONE)
    try:
        subscribe(page, base)
        compose(page, base, PROMPTS[:1], fmt="png", ratio="1:1")
        single = start(page, base)
        wait_until_collected(page, 1)
        compose(page, base, PROMPTS[:2], fmt="jpeg", ratio="16:9")
        double = start(page, base)
        wait_until_collected(page, 2)
        for lang, one, two in (("es", f"Lote {single} · 1 imagen", f"Lote {double} · 2 imágenes"),
                               ("en", f"Batch {single} · 1 image", f"Batch {double} · 2 images")):
            page.goto(f"{base}/lang/{lang}?next=/library")
            card = page.locator(f".library-item[data-batch-id='{single}']")
            card.wait_for(timeout=TIMEOUT)
            assert card.locator(".library-title").text_content() == one
            assert page.locator(f".library-item[data-batch-id='{double}'] .library-title").text_content() == two
            facts = card.locator(".library-facts").text_content()
            day = page.evaluate("(lang) => new Date().toLocaleDateString(lang, {dateStyle: 'medium'})", lang)
            assert facts.startswith(day + " · "), facts
            assert "GPT Image 2 · 1024×1024 · PNG · " in facts, facts  # the model's label, not its id
            # ZIP and Delete side by side, each as wide as its label (not the card's whole width)
            zip_box = card.locator(".library-zip").bounding_box()
            delete_box = card.locator(".library-delete").bounding_box()
            assert abs(zip_box["y"] - delete_box["y"]) < 2 and zip_box["x"] + zip_box["width"] <= delete_box["x"]
            assert zip_box["width"] + delete_box["width"] < PHONE["width"] * 0.6, (zip_box, delete_box)
            accessible(page)
            shot(page, f"74-library-cards-{lang}")
        assert errors(page) == [], page.problems
    finally:
        page.context.close()
