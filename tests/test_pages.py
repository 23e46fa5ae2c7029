"""Public pages in Spanish and English: the landing page, terms, privacy, and the language switch."""

import pytest


@pytest.mark.parametrize("path", ["/", "/terms", "/privacy"])
def test_pages_answer_in_both_languages(client, path):
    spanish = client.get(path)
    english = client.get(path, headers={"Accept-Language": "en"})
    assert spanish.status_code == english.status_code == 200
    assert '<html lang="es">' in spanish.text
    assert '<html lang="en">' in english.text
    assert spanish.text != english.text
    assert english.headers["Vary"] == "Accept-Language, Cookie"


def test_spanish_is_the_fallback(client):
    for header in (None, "fr-FR,fr;q=0.9", "de", ""):
        headers = {"Accept-Language": header} if header is not None else {}
        assert '<html lang="es">' in client.get("/", headers=headers).text, header


def test_accept_language_is_read_with_its_weights(client):
    assert '<html lang="en">' in client.get("/", headers={"Accept-Language": "fr;q=0.9, en-GB;q=0.8, es;q=0.5"}).text
    assert '<html lang="es">' in client.get("/", headers={"Accept-Language": "en;q=0.2, es-MX"}).text
    assert '<html lang="es">' in client.get("/", headers={"Accept-Language": "en;q=0, es;q=0.1"}).text


def test_the_switch_remembers_the_choice_over_the_browser_preference(client):
    response = client.get("/lang/en?next=/privacy", headers={"Accept-Language": "es"})
    assert response.status_code == 303
    assert response.headers["Location"] == "http://127.0.0.1:8000/privacy"
    cookie = response.headers["Set-Cookie"]
    assert cookie.startswith("lang=en;") and "HttpOnly" in cookie and "SameSite=lax" in cookie.replace("Lax", "lax")
    assert '<html lang="en">' in client.get("/", headers={"Accept-Language": "es"}).text
    client.get("/lang/es?next=/")
    assert '<html lang="es">' in client.get("/", headers={"Accept-Language": "en"}).text


def test_the_switch_refuses_off_site_destinations_and_unknown_languages(client):
    response = client.get("/lang/en?next=https://evil.example.com/")
    assert response.headers["Location"] == "http://127.0.0.1:8000/"
    assert client.get("/lang/en?next=//evil.example.com").headers["Location"] == "http://127.0.0.1:8000/"
    assert client.get("/lang/fr").status_code == 404


def test_redirects_are_built_from_the_public_base_url_not_the_host_header(make_app, database):
    from tests.conftest import BufferedClient

    client = BufferedClient(make_app(PUBLIC_BASE_URL="https://images.example.com"))
    response = client.get("/lang/en?next=/terms", headers={"Host": "attacker.example.net"})
    assert response.headers["Location"] == "https://images.example.com/terms"


def test_the_page_links_to_the_other_language_and_keeps_the_place(client):
    text = client.get("/privacy").text
    assert 'href="/lang/en?next=/privacy"' in text


def test_landing_page_explains_the_service_and_the_plan(client, app):
    english = client.get("/", headers={"Accept-Language": "en"}).text
    spanish = client.get("/").text
    for text in (english, spanish):
        assert "USD" in text and str(app.settings.plan_price_usd) in text
        assert str(app.settings.plan_credits) in text
        assert str(app.settings.plan_max_prompts) in text
        assert "ZIP" in text
        assert 'id="how"' in text and 'id="plan"' in text
    assert "prompt" in english.lower()


def test_privacy_page_says_what_is_stored_where(client, app):
    english = client.get("/privacy", headers={"Accept-Language": "en"}).text
    for fact in ("IndexedDB", "OpenAI", "Stripe", "Google", "Microsoft", str(app.settings.image_retention_days)):
        assert fact in english, fact
    spanish = client.get("/privacy").text
    for fact in ("IndexedDB", "OpenAI", "Stripe", "Google", "Microsoft"):
        assert fact in spanish, fact


def test_terms_page_names_the_plan(client, app):
    english = client.get("/terms", headers={"Accept-Language": "en"}).text
    assert "Stripe" in english and str(app.settings.plan_credits) in english


def test_legal_pages_show_the_contact_address_when_set(make_app, database):
    from tests.conftest import BufferedClient

    client = BufferedClient(make_app(CONTACT_EMAIL="help@images.example.com"))
    for path in ("/terms", "/privacy"):
        for lang in ("es", "en"):
            text = client.get(path, headers={"Accept-Language": lang}).text
            assert 'href="mailto:help@images.example.com"' in text, (path, lang)


def test_public_pages_are_rendered_once_per_language_for_visitors_without_a_session(app, client):
    first = client.get("/terms", headers={"Accept-Language": "en"})
    assert ("pages/terms.html", "en", "/terms") in app.public_pages
    again = client.get("/terms", headers={"Accept-Language": "en"})
    assert again.text == first.text and "Set-Cookie" not in again.headers
    assert again.headers["Vary"] == "Accept-Language, Cookie" and again.headers["X-Request-Id"]
    assert '<html lang="es">' in client.get("/terms").text
    assert {key[1] for key in app.public_pages} == {"en", "es"}
    # A query string is never a cache key: the cache stays as small as the site's own pages.
    client.get("/terms?utm_source=x")
    assert len(app.public_pages) == 2


def test_a_signed_in_visitor_never_gets_the_anonymous_copy(app, client, conn):
    from tests.conftest import make_subscriber, signed_in_client

    client.get("/", headers={"Accept-Language": "en"})
    assert "/logout" not in app.public_pages[("pages/home.html", "en", "/")]
    user_client, _csrf = signed_in_client(app, conn, make_subscriber(conn, name="Ana Cached"))
    page = user_client.get("/", headers={"Accept-Language": "en"}).text
    assert "Ana Cached" in page and 'href="/logout"' in page
    assert "Ana Cached" not in app.public_pages[("pages/home.html", "en", "/")]
