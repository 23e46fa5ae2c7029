"""The owner walks the console in a real Chromium, signed in through the Google stand-in with a verified email.

Overview, a search, a subscriber's page, one support action, in Spanish and English, with
screenshots under test-artifacts/ and axe-core on each page; the strict CSP holds (the charts
are server-rendered SVG styled only from site.css).
"""

import time

import pytest

from services import credits, db
from tests.conftest import idp_settings, register_clients
from tests.test_admin import invoice, make_batch, settle_item
from tests.test_journey import accessible, csp_problems, errors, shot

pytestmark = pytest.mark.browser


@pytest.fixture
def console_site(serve, idp):
    base_url, app = serve(**idp_settings(idp), ADMIN_EMAILS="ana@example.com", WORKER_LAUNCH="none")
    register_clients(idp, base_url)
    return base_url, app


def fill(app) -> int:
    """A subscriber with a paid invoice, made and failed images; returns their id."""
    from tests.conftest import make_subscriber

    conn = app.database.connect()
    try:
        ben = make_subscriber(conn, name="Ben Carter", email="ben@example.com")
        now = int(time.time())
        invoice(conn, ben, "in_browser_1", 500, now - 3600)
        _batch, items = make_batch(conn, ben, ["a fox", "a whale", "a FORBIDDEN thing"])
        settle_item(conn, items[0], "done", now - 60, tokens=(100, 7024))
        settle_item(conn, items[1], "done", now - 86400 * 3, tokens=(100, 7024))
        settle_item(conn, items[2], "failed", now - 60, charged=0, error_code="refused")
        return ben
    finally:
        conn.close()


def test_the_owner_walks_the_console_in_both_languages(page, console_site):
    base, app = console_site
    ben = fill(app)
    page.goto(base + "/login?next=/admin")
    page.click("a.provider-google")
    page.click("button.account[data-sub='g-1001']")  # Ana, whose Google email is verified and is in ADMIN_EMAILS
    page.wait_for_url(base + "/admin")
    assert page.locator("a.nav-admin").count() == 1
    for lang in ("es", "en"):
        page.goto(f"{base}/lang/{lang}?next=/admin")
        page.wait_for_url(base + "/admin")
        assert page.evaluate("document.documentElement.lang") == lang
        assert page.locator("svg[role=img]").count() == 2
        assert page.text_content("#mrr").strip()
        accessible(page)
        shot(page, f"40-admin-overview-{lang}")
        page.click(".admin-nav a[href='/admin/users']")  # the subscribers' search, from the console's menu
        page.fill("#q", "ben")
        page.click(".admin-search button[type=submit]")
        page.wait_for_url(base + "/admin/users?q=ben")
        accessible(page)
        page.click(f"a[href='/admin/users/{ben}']")
        page.wait_for_url(f"{base}/admin/users/{ben}")
        assert "FORBIDDEN" not in page.content()
        accessible(page)
        shot(page, f"41-admin-subscriber-{lang}")
    page.fill("#adjust-credits", "25")
    page.fill("#adjust-reason", "a gift for the browser test")
    page.click("#adjust-form button[type=submit]")
    page.wait_for_url(f"{base}/admin/users/{ben}?done=adjust")
    assert page.text_content("#admin-message").strip() == "Credits adjusted."
    assert page.text_content("#user-balance").strip() == "325"
    assert "a gift for the browser test" in page.text_content("#audit")
    conn = app.database.connect()
    try:
        assert credits.balance(conn, ben) == 325
        assert db.admin_audit_of(conn, ben, 5)[0]["owner_email"] == "ana@example.com"
    finally:
        conn.close()
    assert csp_problems(page) == [] and errors(page) == [], page.problems


def test_a_subscriber_who_signs_in_sees_no_console(page, console_site):
    base, _app = console_site
    page.goto(base + "/login?next=/account")
    page.click("a.provider-google")
    page.click("button.account[data-sub='g-1002']")  # Ben: not an owner
    page.wait_for_url(base + "/account")
    assert page.locator("a.nav-admin").count() == 0
    response = page.goto(base + "/admin")
    assert response.status == 404
