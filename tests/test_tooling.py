"""The test tools work: axe finds real violations under the strict CSP, and the JavaScript budget counts modules."""

import bottle
import pytest

from tests.axe import axe_violations, format_violations
from tests.jsbudget import own_and_total, shipped_js

pytestmark = pytest.mark.browser

BAD_PAGE = ('<!doctype html><html lang="en"><head><meta charset="utf-8"><title>Bad</title>'
            '<link rel="icon" href="/img/favicon.svg"></head><body><main>'
            '<h1>A page with faults</h1><img src="/img/favicon.svg"><input type="text" name="q">'
            '<script>document.title = "inline ran"</script></main></body></html>')


@pytest.fixture(params=["sqlite"])
def db_url(request, sqlite_url):
    """The tools read no data: SQLite is enough here."""
    return sqlite_url


def test_axe_finds_violations_on_a_bad_page_under_the_csp(page, live_server):
    base, app = live_server

    @app.get("/_test/bad")
    def bad():
        return BAD_PAGE

    response = page.goto(base + "/_test/bad")
    assert "script-src 'self'" in response.headers["content-security-policy"]
    assert page.title() == "Bad"  # the CSP is in force: the inline script was refused
    violations = axe_violations(page)
    found = {v["id"] for v in violations}
    assert {"image-alt", "label"} <= found, format_violations(violations)
    assert all(v["impact"] in ("serious", "critical") for v in violations)
    image_alt = next(v for v in violations if v["id"] == "image-alt")
    assert image_alt["nodes"][0]["target"] == "img" and "<img" in image_alt["nodes"][0]["html"]
    assert "image-alt" in format_violations(violations) and "<img" in format_violations(violations)
    # Injecting axe broke nothing: the one CSP report is the inline script's.
    refused = [p for p in page.problems if "Content Security Policy" in p]
    assert len(refused) == 1 and "script" in refused[0], page.problems
    assert [p for p in page.problems if p not in refused] == [], page.problems
    # Running it again on the same page reuses the injected axe and finds the same.
    assert {v["id"] for v in axe_violations(page)} == found


@pytest.mark.parametrize("color_scheme", ["light", "dark"])
def test_the_landing_page_has_no_serious_accessibility_violation(browser, live_server, color_scheme):
    base, _app = live_server
    context = browser.new_context(locale="es-ES", color_scheme=color_scheme)
    try:
        landing = context.new_page()
        landing.goto(base + "/")
        violations = axe_violations(landing)
        assert violations == [], format_violations(violations)
    finally:
        context.close()


def test_the_landing_page_ships_no_javascript(page, live_server):
    base, _app = live_server
    assert shipped_js(page, base + "/") == {}
    assert own_and_total({}) == (0, 0)


def test_shipped_js_counts_a_module_and_its_import(page, live_server):
    base, app = live_server
    javascript = {"Content-Type": "text/javascript; charset=utf-8"}

    @app.get("/_test/modules")
    def modules():
        return ('<!doctype html><html lang="en"><head><title>Modules</title><link rel="icon" href="/img/favicon.svg">'
                '<script type="module" src="/_test/a.js"></script></head><body><p id="p">x</p></body></html>')

    @app.get("/_test/a.js")
    def module_a():
        return bottle.HTTPResponse('import { mark } from "/_test/b.js";\nmark("a and b ran");\n', headers=javascript)

    @app.get("/_test/b.js")
    def module_b():
        return bottle.HTTPResponse('export function mark(text) {\n  document.title = text;\n}\n', headers=javascript)

    sizes = shipped_js(page, base + "/_test/modules")
    assert page.title() == "a and b ran"  # both modules loaded and ran under the CSP
    assert set(sizes) == {"/_test/a.js", "/_test/b.js"}, sizes
    assert all(size > 0 for size in sizes.values()), sizes
    assert own_and_total(sizes) == (0, sum(sizes.values()))
    assert own_and_total({"/js/app.js": 100, "/vendor/lib.js": 50}) == (100, 150)
    assert page.problems == []
