"""The HTTP layer: security headers and CSP on every response, CSRF and fetch metadata, session cookies, errors."""

import logging

import pytest

from routes import web
from services import db, sessions
from services.security import content_security_policy, safe_next
from tests.conftest import BufferedClient

NOW = 1_800_000_000


def add_test_routes(app):
    """Routes a later step would have: a form, a state change, a signed webhook, a crash."""

    @app.get("/_test/form")
    def form():
        return web.csrf_token()

    @app.post("/_test/change")
    def change():
        return "changed"

    @app.post("/_test/hook", csrf_exempt=True)
    def hook():
        return "hooked"

    @app.get("/_test/crash")
    def crash():
        raise RuntimeError("secret detail sk-should-not-leak")

    @app.get("/api/_test/crash")
    def api_crash():
        raise RuntimeError("secret detail sk-should-not-leak")

    return app


@pytest.fixture
def test_app(app):
    return add_test_routes(app)


@pytest.fixture
def tclient(test_app):
    return BufferedClient(test_app)


def session_cookie(response):
    return next((v for k, v in response.headers.items() if k == "Set-Cookie" and "iib_session" in v), None)


def start_session(tclient):
    """Get a form (which starts a session) and return its CSRF token."""
    response = tclient.get("/_test/form")
    assert response.status_code == 200
    return response.text


def test_every_route_carries_the_security_headers(tclient, test_app):
    csp = content_security_policy(test_app.settings.stripe_form_origins)
    paths = ["/", "/terms", "/privacy", "/lang/en?next=/terms", "/no-such-page", "/_test/crash",
             "/css/site.css", "/img/favicon.svg", "/robots.txt"]
    plain = [r.rule for r in test_app.routes if r.method == "GET" and "<" not in r.rule]
    assert {"/", "/terms", "/privacy"} <= set(plain)
    for path in set(paths) | set(plain):
        response = tclient.get(path)
        assert response.headers["Content-Security-Policy"] == csp, path
        assert response.headers["X-Content-Type-Options"] == "nosniff", path
        assert response.headers["Referrer-Policy"] == "strict-origin-when-cross-origin", path
        assert response.headers["X-Frame-Options"] == "DENY", path
        assert "Strict-Transport-Security" not in response.headers, path
    for path in ("/_test/change", "/_test/hook"):
        assert tclient.post(path).headers["Content-Security-Policy"] == csp


def test_csp_forbids_inline_code_and_lets_forms_reach_only_stripe():
    csp = content_security_policy(("https://checkout.stripe.com", "https://billing.stripe.com"))
    assert "'unsafe-inline'" not in csp
    assert "default-src 'none'" in csp and "script-src 'self';" in csp and "style-src 'self';" in csp
    assert "frame-ancestors 'none'" in csp
    assert "form-action 'self' https://checkout.stripe.com https://billing.stripe.com;" in csp


def test_https_sites_send_hsts_and_a_host_prefixed_secure_cookie(make_app, database):
    app = add_test_routes(make_app(PUBLIC_BASE_URL="https://images.example.com"))
    client = BufferedClient(app)
    response = client.get("/_test/form")
    assert response.headers["Strict-Transport-Security"].startswith("max-age=31536000")
    cookie = session_cookie(response)
    assert cookie.startswith("__Host-iib_session=")
    for attribute in ("Path=/", "HttpOnly", "SameSite=Lax", "Secure"):
        assert attribute in cookie
    assert "Domain=" not in cookie


def test_http_sites_use_a_plain_cookie_name_without_secure(tclient):
    cookie = session_cookie(tclient.get("/_test/form"))
    assert cookie.startswith("iib_session=")
    assert "HttpOnly" in cookie and "SameSite=Lax" in cookie and "Secure" not in cookie
    token = cookie.split(";")[0].split("=", 1)[1]
    assert len(token) >= 43


def test_plain_pages_start_no_session(tclient, conn):
    for path in ("/", "/terms", "/privacy"):
        response = tclient.get(path)
        assert session_cookie(response) is None
        assert "Cache-Control" not in response.headers
    assert conn.scalar("SELECT COUNT(*) AS n FROM sessions") == 0


def test_post_without_a_session_or_token_is_refused(tclient, conn):
    response = tclient.post("/_test/change", data={"x": "1"})
    assert response.status_code == 403
    assert "changed" not in response.text


def test_post_with_a_wrong_or_missing_token_is_refused(tclient):
    token = start_session(tclient)
    assert tclient.post("/_test/change", data={"x": "1"}).status_code == 403
    assert tclient.post("/_test/change", data={"csrf_token": token[:-2] + "xx"}).status_code == 403
    assert tclient.post("/_test/change", headers={"X-CSRF-Token": "nope"}).status_code == 403


def test_post_with_the_right_token_in_the_form_or_header_passes(tclient):
    token = start_session(tclient)
    response = tclient.post("/_test/change", data={"csrf_token": token})
    assert response.status_code == 200 and response.text == "changed"
    response = tclient.post("/_test/change", json={"a": 1}, headers={"X-CSRF-Token": token})
    assert response.status_code == 200


def test_cross_site_requests_are_refused_even_with_the_token(tclient):
    token = start_session(tclient)
    for site in ("cross-site", "same-site"):
        response = tclient.post("/_test/change", data={"csrf_token": token}, headers={"Sec-Fetch-Site": site})
        assert response.status_code == 403, site
    response = tclient.post("/_test/change", data={"csrf_token": token}, headers={"Sec-Fetch-Site": "same-origin"})
    assert response.status_code == 200


def test_a_token_from_another_session_is_refused(test_app):
    first, second = BufferedClient(test_app), BufferedClient(test_app)
    token = start_session(first)
    start_session(second)
    assert second.post("/_test/change", data={"csrf_token": token}).status_code == 403


def test_exempt_routes_skip_the_token_check(tclient):
    response = tclient.post("/_test/hook", data=b"{}", headers={"Sec-Fetch-Site": "cross-site"})
    assert response.status_code == 200 and response.text == "hooked"


def test_csrf_refusal_answers_json_to_api_clients(tclient):
    response = tclient.post("/_test/change", headers={"Accept": "application/json"})
    assert response.status_code == 403
    assert response.json["error"]["code"] == "forbidden"
    assert response.json["error"]["message"]


def test_a_signed_in_visitors_pages_are_not_stored(tclient, test_app, conn):
    user_id = db.user_insert(conn, "Ana Pérez", "ana@example.com", NOW)
    created = sessions.create(conn, test_app.settings, web.now(), user_id=user_id)
    tclient.set_cookie("iib_session", created.token)
    response = tclient.get("/")
    assert response.headers["Cache-Control"] == "no-store"
    assert "Ana Pérez" in response.text


def test_an_expired_session_cookie_is_cleared(tclient, test_app, conn):
    created = sessions.create(conn, test_app.settings, web.now() - test_app.settings.session_max_seconds - 5)
    tclient.set_cookie("iib_session", created.token)
    response = tclient.get("/")
    cookie = session_cookie(response)
    assert cookie.startswith("iib_session=;") and "Max-Age=0" in cookie
    assert db.session_get_with_user(conn, created.id) is None


def test_not_found_is_a_styled_page_in_the_visitors_language(tclient):
    response = tclient.get("/no-such-page", headers={"Accept-Language": "en"})
    assert response.status_code == 404
    assert "text/html" in response.headers["Content-Type"]
    assert "/css/site.css?v=" in response.text
    assert "Page not found" in response.text
    spanish = tclient.get("/no-such-page")
    assert '<html lang="es"' in spanish.text and "Page not found" not in spanish.text


def test_not_found_answers_json_to_api_clients(tclient):
    response = tclient.get("/api/nothing")
    assert response.status_code == 404
    assert response.json == {"error": {"code": "not_found", "message": response.json["error"]["message"]}}


def test_a_crash_shows_a_styled_500_page_without_details_and_logs_them(tclient, caplog):
    with caplog.at_level(logging.ERROR, logger="routes.web"):
        response = tclient.get("/_test/crash", headers={"Accept-Language": "en"})
    assert response.status_code == 500
    assert "Something went wrong" in response.text and "/css/site.css?v=" in response.text
    assert "sk-should-not-leak" not in response.text and "Traceback" not in response.text
    assert "RuntimeError" in caplog.text
    api = tclient.get("/api/_test/crash")
    assert api.status_code == 500 and api.json["error"]["code"] == "http_500"
    assert "sk-should-not-leak" not in api.text


def test_wrong_method_is_405_with_the_headers(tclient):
    response = tclient.post("/terms", data={})
    assert response.status_code in (403, 405)  # the CSRF guard may answer first; both are pages
    assert response.headers["Content-Security-Policy"].startswith("default-src 'none'")


def test_database_outage_answers_503_with_a_message(make_app, mariadb_server):
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    app = make_app(DATABASE_URL=f"mysql://app:pw@127.0.0.1:{port}/iib")
    client = BufferedClient(app)
    client.set_cookie("iib_session", "x" * 43)  # a cookie makes the page look the visitor up
    response = client.get("/", headers={"Accept-Language": "en"})
    assert response.status_code == 503
    assert "Temporarily unavailable" in response.text
    assert client.get("/terms").status_code in (200, 503)


@pytest.mark.parametrize("target, expected", [
    ("/account", "/account"),
    ("/batches/7?tab=failed", "/batches/7?tab=failed"),
    ("https://evil.example.com/", "/"),
    ("//evil.example.com/", "/"),
    ("/\\evil.example.com", "/"),
    ("javascript:alert(1)", "/"),
    ("", "/"),
    (None, "/"),
    ("/ok\r\nSet-Cookie: x=1", "/"),
])
def test_safe_next_accepts_only_same_site_paths(target, expected):
    assert safe_next(target) == expected


def test_headers_over_real_http(live_server):
    import urllib.request

    base, _app = live_server
    with urllib.request.urlopen(base + "/", timeout=10) as response:
        assert response.status == 200
        assert response.headers["Content-Security-Policy"] == content_security_policy(_app.settings.stripe_form_origins)
        assert response.headers["Content-Type"] == "text/html; charset=UTF-8"
        assert b"images-in-bulk" in response.read()


def test_the_web_roots_htaccess_guards_static_files_and_the_app_root_refuses_everything():
    """(The deploy test proves these rules in a real Apache; this keeps their key lines from going missing.)"""
    from tests.conftest import ROOT

    web_root = (ROOT / "public" / ".htaccess").read_text(encoding="utf-8")
    assert "Options -Indexes" in web_root and "Require all denied" in web_root
    assert 'Header always set Content-Security-Policy "default-src \'none\'' in web_root
    assert "max-age=31536000, immutable" in web_root and "PassengerStartupFile passenger_wsgi.py" in web_root
    block = web_root.split("# BEGIN Passenger (images-in-bulk)")[1].split("# END Passenger (images-in-bulk)")[0]
    assert "/home/CPANEL_USER/images-in-bulk" in block
    app_root = (ROOT / ".htaccess").read_text(encoding="utf-8")
    assert "Require all denied" in app_root
