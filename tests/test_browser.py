"""The pages in a real Chromium: the strict CSP holds (no violation), the CSS applies, the switch works."""

import datetime

import babel.dates
import pytest

pytestmark = pytest.mark.browser


@pytest.fixture(params=["sqlite"])
def db_url(request, sqlite_url):
    """Pages read no data yet: SQLite is enough here (the HTTP tests cover both engines)."""
    return sqlite_url


def test_pages_render_under_the_csp_without_violations(page, live_server):
    base, _app = live_server
    for path in ("/", "/terms", "/privacy", "/no-such-page"):
        response = page.goto(base + path)
        assert response.status == (404 if path == "/no-such-page" else 200)
        # The style sheet loaded and applied: the page is not in the browser's default serif font.
        family = page.evaluate("getComputedStyle(document.body).fontFamily")
        assert "Times" not in family and family, path
        assert page.evaluate("document.styleSheets.length") >= 1
    # The one console error allowed is Chromium's own note that the 404 page answered 404.
    assert [p for p in page.problems if "status of 404" not in p] == [], page.problems
    assert len(page.problems) <= 1


def test_the_language_switch_changes_and_remembers_the_language(page, live_server):
    base, _app = live_server
    page.goto(base + "/privacy")
    assert page.evaluate("document.documentElement.lang") == "es"
    page.click(".lang-switch a[lang=en]")
    page.wait_for_url(base + "/privacy")
    assert page.evaluate("document.documentElement.lang") == "en"
    page.goto(base + "/")
    assert page.evaluate("document.documentElement.lang") == "en"
    assert page.problems == []


def test_english_browsers_get_english(browser, live_server):
    base, _app = live_server
    context = browser.new_context(locale="en-US")
    try:
        english = context.new_page()
        english.goto(base + "/")
        assert english.evaluate("document.documentElement.lang") == "en"
    finally:
        context.close()


def test_small_screens_do_not_scroll_sideways_and_dark_mode_applies(browser, live_server):
    base, _app = live_server
    context = browser.new_context(viewport={"width": 360, "height": 740}, color_scheme="dark")
    try:
        small = context.new_page()
        for path in ("/", "/terms", "/privacy"):
            small.goto(base + path)
            width = small.evaluate("document.documentElement.scrollWidth")
            assert width <= 360, (path, width)
        background = small.evaluate("getComputedStyle(document.body).backgroundColor")
        channels = [int(c) for c in background[background.index("(") + 1:background.index(")")].split(",")[:3]]
        assert sum(channels) / 3 < 80, background
    finally:
        context.close()


def test_keyboard_focus_is_visible(page, live_server):
    base, _app = live_server
    page.goto(base + "/")
    page.keyboard.press("Tab")
    outline = page.evaluate("getComputedStyle(document.activeElement).outlineStyle")
    assert outline not in ("none", ""), outline


def test_the_csp_really_blocks_inline_code(page, live_server):
    """Proves the check above can fail: an inline style and script are refused and reported."""
    base, app = live_server

    @app.get("/_test/inline")
    def inline():
        return ('<!doctype html><html lang="en"><head><style>body{color:red}</style></head>'
                '<body><p id="p">x</p><script>document.title = "ran"</script></body></html>')

    page.goto(base + "/_test/inline")
    assert page.title() != "ran"
    assert page.evaluate("getComputedStyle(document.getElementById('p')).color") != "rgb(255, 0, 0)"
    refused = [p for p in page.problems if "Content Security Policy" in p]
    assert len(refused) >= 2, page.problems


def test_sign_in_sign_out_and_sign_in_again_as_the_same_user(page, serve, idp):
    from tests.conftest import idp_settings, register_clients

    base, app = serve(**idp_settings(idp))
    register_clients(idp, base)
    for _round in range(2):
        page.goto(base + "/")
        page.click(".account-nav a[href='/login']")
        page.wait_for_url(base + "/login")
        page.click("a.provider-google")
        page.click("button.account[data-sub='g-1001']")  # the stand-in's account chooser
        page.wait_for_url(base + "/account")
        assert page.text_content(".account-name").strip() == "Ana García"
        assert page.text_content(".nav-user").strip() == "Ana García"
        page.click("#account-signout")  # to the sign-out page, which offers to remove this browser's images
        page.wait_for_url(base + "/logout")
        page.click("#signout-button")
        page.wait_for_url(base + "/")
        assert page.locator(".nav-user").count() == 0
    conn = app.database.connect()
    try:
        assert conn.scalar("SELECT COUNT(*) AS n FROM users") == 1
        assert conn.scalar("SELECT COUNT(*) AS n FROM sessions WHERE user_id IS NOT NULL") == 0
    finally:
        conn.close()
    assert [p for p in page.problems if "status of 404" not in p] == []


def test_microsoft_sign_in_and_cancel_in_the_browser(page, serve, idp):
    from tests.conftest import idp_settings, register_clients

    base, _app = serve(**idp_settings(idp))
    register_clients(idp, base)
    page.goto(base + "/login")
    page.click("a.provider-microsoft")
    page.click("#cancel")
    assert page.evaluate("document.documentElement.lang") == "es"
    assert "Inicio de sesión cancelado" in page.text_content("h1")
    page.click("a.button[href='/login']")
    page.click("a.provider-microsoft")
    page.click("button.account[data-sub='m-2002']")
    page.wait_for_url(base + "/account")
    assert page.text_content(".account-name").strip() == "Chloé Dubois"


def test_subscribe_through_checkout_then_cancel_in_the_portal(page, shop, fake_stripe):
    """Sign in, subscribe (a form POST redirected to Checkout: the CSP's form-action must allow it), pay,
    see the credits, cancel in the portal, and see the end date."""
    base, app = shop
    page.goto(base + "/login?next=/pricing")
    page.click("a.provider-google")
    page.click("button.account[data-sub='g-1001']")
    page.wait_for_url(base + "/pricing")
    page.click("#subscribe")
    page.wait_for_url(fake_stripe.base_url + "/c/pay/**")
    page.click("#pay")
    page.wait_for_url(base + "/account?welcome=1")
    assert page.text_content(".credits-left").strip() == "300"
    assert "Activo" in page.text_content(".plan-state")
    page.click("#manage-billing")
    page.wait_for_url(fake_stripe.base_url + "/p/session/**")
    page.click("#cancel-subscription")
    page.click("#return")
    page.wait_for_url(base + "/account")
    assert "Cancelado" in page.text_content(".plan-state")
    end = fake_stripe.subscriptions[next(iter(fake_stripe.subscriptions))]["items"]["data"][0]["current_period_end"]
    expected = datetime.datetime.fromtimestamp(end, tz=datetime.UTC).date()
    assert page.text_content(".plan-date").strip() == babel.dates.format_date(expected, format="long", locale="es")
    refused = [p for p in page.problems if "Content Security Policy" in p]
    assert refused == [], refused
