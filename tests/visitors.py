"""A visitor's browser for tests: an in-process client for our app, plain HTTP for the stand-ins."""

from urllib.parse import parse_qs, urlencode, urlsplit

import requests

from routes import web
from services import sessions
from tests.conftest import BufferedClient


class Visitor:
    """A browser: cookies for our app (in-process) and plain HTTP requests to the stand-in."""

    def __init__(self, app):
        self.app = app
        self.client = BufferedClient(app)

    def cookie(self):
        found = self.client.get_cookie(sessions.cookie_name(self.app.settings))
        return found.value if found else None

    def start(self, provider, query=""):
        response = self.client.get(f"/auth/{provider}/start{query}")
        assert response.status_code == 302, response.text
        location = response.headers["Location"]
        parts = urlsplit(location)
        return f"{parts.scheme}://{parts.netloc}{parts.path}", {k: v[0] for k, v in parse_qs(parts.query).items()}

    def choose(self, authorize, account=None, cancel=False):
        url, params = authorize
        form = dict(params, cancel="1") if cancel else dict(params, account=account)
        with requests.post(url, data=form, allow_redirects=False, timeout=10) as answer:
            assert answer.status_code == 302, answer.text
            location = answer.headers["Location"]
        assert location.startswith(self.app.settings.public_base_url), location
        parts = urlsplit(location)
        return parts.path, {k: v[0] for k, v in parse_qs(parts.query).items()}

    def callback(self, returned):
        path, query = returned
        return self.client.get(f"{path}?{urlencode(query)}")

    def sign_in(self, provider, account, query=""):
        return self.callback(self.choose(self.start(provider, query), account))

    def csrf(self):
        """The CSRF token of this browser's session (what a form on the page would carry)."""
        conn = self.app.database.connect()
        try:
            return sessions.load(conn, self.app.settings, self.cookie(), web.now()).csrf_token
        finally:
            conn.close()

    def is_signed_in(self):
        response = self.client.get("/account")
        return response.status_code == 200


def signed_in_sessions(conn):
    return conn.scalar("SELECT COUNT(*) AS n FROM sessions WHERE user_id IS NOT NULL")


def assert_refused(response, visitor, conn, status=400, text=None):
    assert response.status_code == status, response.text
    assert "Location" not in response.headers
    assert signed_in_sessions(conn) == 0
    assert not visitor.is_signed_in()
    if text:
        assert text in response.text


def english(visitor):
    """Make the visitor's pages English (its language cookie)."""
    visitor.client.set_cookie(web.LANG_COOKIE, "en")
    return visitor
