"""The pages in a real Chromium: the strict CSP holds (no violation), the CSS applies, the switch works."""

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
