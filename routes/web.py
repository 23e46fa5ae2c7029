"""The HTTP glue every route shares: the app class, per-request database and session, templates, errors.

Per-request state lives in the WSGI environ (Bottle's `request` is bound to it), under keys
that start with `iib.`. Security headers, the session cookie and giving back the database
connection happen in `App.wsgi`, around Bottle's own handling, because Bottle renders error
pages after its `after_request` hooks and replaces the response headers on the way: only the
outermost layer sees every response, the 404s and 500s included.
"""

from __future__ import annotations

import datetime
import functools
import hashlib
import io
import logging
import secrets
import time
from decimal import Decimal
from pathlib import Path

import babel.dates
import babel.numbers
import bottle
import jinja2
import markupsafe

from services import billing, credits, db, logs, security, sessions
from services.config import LANGUAGES, Settings
from services.i18n import LANGUAGE_NAMES, choose_language

log = logging.getLogger(__name__)
access = logging.getLogger("iib.access")

APP_ROOT = Path(__file__).resolve().parent.parent
VIEWS_DIR = APP_ROOT / "views"
PUBLIC_DIR = APP_ROOT / "public"

BODY_LIMIT = 65536  # bytes a POST may carry unless its route says more (max_body=N): sign-out, buttons, settings
WEBHOOK_BODY_LIMIT = 1048576  # Stripe's events are a few KB; 1 MB leaves room and bounds an unsigned flood

NOT_MODIFIED_HEADERS = ("etag", "cache-control", "x-request-id")

LANG_COOKIE = "lang"
LANG_COOKIE_SECONDS = 365 * 24 * 3600

def _(message: str) -> str:
    """Mark a string for translation (the extractor finds it); it is translated when rendered."""
    return message


ERROR_TEXTS = {
    400: (_("Bad request"), _("The request could not be understood. Go back and try again.")),
    403: (_("Not allowed"), _("This form has expired or was sent from another site. "
                              "Go back, reload the page and send it again.")),
    404: (_("Page not found"), _("There is nothing at this address. Check the link, "
                                 "or start again from the home page.")),
    405: (_("Not allowed"), _("This address does not accept that kind of request.")),
    413: (_("Too large"), _("What you sent is larger than this site accepts.")),
    500: (_("Something went wrong"), _("An unexpected error stopped this page. It has been logged; "
                                       "please try again in a moment.")),
    503: (_("Temporarily unavailable"), _("The service is briefly unavailable. Nothing you sent was lost; "
                                          "please try again in a minute.")),
}


class App(bottle.Bottle):
    """The images-in-bulk Bottle app: Bottle plus the settings, database and templates it runs with."""

    def __init__(self, settings: Settings, database: db.Database, translations: dict, catalog):
        super().__init__()
        self.settings = settings
        self.database = database
        self.catalog = catalog
        self.translations = translations
        self.templates = make_templates(translations, reload=settings.app_mode == "demo")
        # Made on first use when billing is configured: the StripeClient and the plan's price id.
        # (A dict: Bottle refuses to let an app attribute be assigned twice.)
        self.billing = {"client": None, "price_id": settings.stripe_price_id or None, "portal_configuration": None}
        self._static_versions: dict[str, str] = {}
        # The same for every response of a kind: worked out once (settings do not change while the app runs).
        self._security_headers = {private: security.security_headers(settings, private) for private in (False, True)}
        self._price_facts: dict[datetime.date, dict] = {}  # today's only (Bottle forbids reassigning attributes)
        # Public pages as a visitor without a session sees them, by (template, language, path): see render_public().
        self.public_pages: dict[tuple[str, str, str], str] = {}
        self.templates.globals["static_url"] = self.static_url

    def price_facts(self) -> dict:
        """What the public pages quote of the prices today (the catalogue's price_facts, worked out once a day)."""
        today = datetime.date.today()
        facts = self._price_facts.get(today)
        if facts is None:
            self._price_facts.clear()  # yesterday's
            facts = self._price_facts[today] = self.catalog.price_facts(today)
        return facts

    def static_url(self, path: str) -> str:
        """The URL of a file under public/, versioned by its content so it can be cached for long."""
        version = self._static_versions.get(path)
        if version is None:
            data = (PUBLIC_DIR / path).read_bytes()
            version = self._static_versions[path] = hashlib.sha256(data).hexdigest()[:10]
        return f"/{path}?v={version}"

    def wsgi(self, environ, start_response):
        """Run the request through Bottle, then add the security headers and cookies and close the database."""

        rid = secrets.token_hex(8)  # 16 hex digits, as a uuid4's first half was (without making the UUID)
        token = logs.request_id.set(rid)
        started = time.perf_counter()

        def finish(status, headers, exc_info=None):
            # The path only: a query string may carry a sign-in code or a token.
            access.info("%s %s -> %s (%.0f ms)", environ.get("REQUEST_METHOD"), environ.get("PATH_INFO", ""),
                        status.split(" ", 1)[0], (time.perf_counter() - started) * 1000)
            headers = [*headers, ("X-Request-Id", rid)]
            if status.startswith("304"):
                # A poll's "nothing new" has no body for the security headers to protect: the validator, the
                # cache rule and the request id are all it carries (a 200 of the same URL brings the rest).
                kept = [h for h in headers if h[0].lower() in NOT_MODIFIED_HEADERS]
                if environ.get("iib.session_cookie") is not None:
                    kept.append(("Set-Cookie", _session_cookie(self.settings, environ["iib.session_cookie"])))
                return start_response(status, kept)
            private = bool(environ.get("iib.private"))
            if private:  # a visitor with a session: nothing may be cached, whatever the route said
                headers = [h for h in headers if h[0].lower() not in ("cache-control", "expires")]
            names = {name.lower() for name, _ in headers}
            extra = [h for h in self._security_headers[private] if h[0].lower() not in names]
            content_type = next((v for k, v in headers if k.lower() == "content-type"), "")
            if content_type.startswith("text/html") and "vary" not in names:
                extra.append(("Vary", "Accept-Language, Cookie"))  # the language follows both
            cookie = environ.get("iib.session_cookie")
            if cookie is not None:
                extra.append(("Set-Cookie", _session_cookie(self.settings, cookie)))
            # The error is handled and logged by now; passing exc_info on would make some servers
            # (and test clients) raise it again although no header has been sent yet.
            return start_response(status, list(headers) + extra)

        try:
            return super().wsgi(environ, finish)
        finally:
            conn = environ.pop("iib.db", None)
            if conn is not None:
                self.database.release(conn)
            logs.request_id.reset(token)


def _session_cookie(settings: Settings, token: str) -> str:
    """The Set-Cookie value for a session token ('' clears the cookie)."""
    attrs = sessions.cookie_attributes(settings)
    parts = [f"{sessions.cookie_name(settings)}={token}", f"Path={attrs['path']}"]
    parts.append(f"Max-Age={settings.session_max_seconds if token else 0}")
    parts += ["HttpOnly", f"SameSite={attrs['samesite']}"]
    if attrs["secure"]:
        parts.append("Secure")
    return "; ".join(parts)


def make_templates(translations: dict, reload: bool = False) -> jinja2.Environment:
    """The project's Jinja2 environment: absolute path, autoescape on, gettext in the page's language.

    With `reload` (the local demo) an edited template shows on the next request; elsewhere each
    template is read once per process (a deploy restarts the processes), which saves looking at
    the files' times on every page.
    """
    env = jinja2.Environment(loader=jinja2.FileSystemLoader(str(VIEWS_DIR)), autoescape=True, auto_reload=reload,
                             undefined=jinja2.StrictUndefined, extensions=["jinja2.ext.i18n"])

    @jinja2.pass_context
    def gettext(context, message):
        return translations[context["lang"]].gettext(message)

    @jinja2.pass_context
    def ngettext(context, singular, plural, n):
        return translations[context["lang"]].ngettext(singular, plural, n)

    @jinja2.pass_context
    def day(context, timestamp):
        """A Unix time as a date in the page's language (e.g. 23 de noviembre de 2026)."""
        return _long_date(datetime.datetime.fromtimestamp(int(timestamp), tz=datetime.UTC).date(), context["lang"])

    @jinja2.pass_context
    def money(context, cents, currency="USD"):
        """An amount in cents in the page's language (e.g. US$1,234.56 or 1.234,56 US$)."""
        return babel.numbers.format_currency(Decimal(cents) / 100, currency.upper(), locale=context["lang"])

    @jinja2.pass_context
    def translated(context, message, **variables):
        """`_()` in one step: what the i18n extension's newstyle `_` does (the text marked safe, then the
        variables put in, escaped) through three calls, as a page has some forty of them."""
        return markupsafe.Markup(translations[context["lang"]].gettext(message)) % variables

    env.install_gettext_callables(gettext, ngettext, newstyle=True)
    env.globals["_"] = translated
    env.filters["day"] = day
    env.filters["money"] = money
    return env


@functools.lru_cache(maxsize=1024)
def _long_date(date: datetime.date, language: str) -> str:
    """A date in words in a language (Babel's long format costs some 20 µs: a ledger shows ten of them)."""
    return babel.dates.format_date(date, format="long", locale=language)


# --- per-request helpers ----------------------------------------------------------------------

def app() -> App:
    """The app handling the current request."""
    return bottle.request.app


def now() -> int:
    """The current time in Unix seconds."""
    return int(time.time())


def conn() -> db.Connection:
    """This request's database connection: the thread's kept one, borrowed until the response is done."""
    environ = bottle.request.environ
    connection = environ.get("iib.db")
    if connection is None:
        connection = environ["iib.db"] = app().database.connection()
    return connection


def header(name: str) -> str | None:
    """A request header, or None when it is absent or not UTF-8 (bottle would raise while decoding it)."""
    try:
        return bottle.request.headers.get(name)
    except UnicodeError:
        return None


def lang() -> str:
    """The language of this request: the remembered choice, else Accept-Language, else the default."""
    environ = bottle.request.environ
    if "iib.lang" not in environ:
        environ["iib.lang"] = choose_language(bottle.request.get_cookie(LANG_COOKIE), header("Accept-Language"),
                                              app().settings.default_language)
    return environ["iib.lang"]


def translate(message: str) -> str:
    """Translate a message into this request's language (a variable: the extractor does not look here)."""
    return app().translations[lang()].gettext(message)


def session_id() -> str | None:
    """The stored id of this request's session cookie (not checked: the session may be gone), or None."""
    return sessions.id_of_cookie(app().settings, bottle.request.get_cookie(sessions.cookie_name(app().settings)))


def session(create: bool = False) -> sessions.Session | None:
    """This visitor's session (loaded once per request); with create=True one is started if missing."""
    environ = bottle.request.environ
    if "iib.session" not in environ:
        settings = app().settings
        token = bottle.request.get_cookie(sessions.cookie_name(settings))
        # A page shows the plan (and often the credits) of whoever is signed in: read them with the session.
        page = not bottle.request.path.startswith("/api/")
        found = sessions.load(conn(), settings, token, now(), plan=page) if token else None
        if token and found is None:
            environ["iib.session_cookie"] = ""  # tell the browser to drop a dead cookie
        environ["iib.session"] = found
    current = environ["iib.session"]
    if current is None and create:
        current = sessions.create(conn(), app().settings, now())
        remember_session(current)
    if current is not None:
        environ["iib.private"] = True
    return current


def remember_session(new: sessions.Session) -> None:
    """Make a new or rotated session this request's session and send its cookie."""
    environ = bottle.request.environ
    environ["iib.session"] = new
    environ["iib.session_cookie"] = new.token
    environ["iib.private"] = True


def forget_session() -> None:
    """Drop this request's session and tell the browser to delete its cookie (sign-out)."""
    environ = bottle.request.environ
    environ["iib.session"] = None
    environ["iib.user"] = None
    environ["iib.session_cookie"] = ""


def current_user() -> dict | None:
    """The signed-in user's row, or None."""
    environ = bottle.request.environ
    if "iib.user" not in environ:
        found = session()
        if found and found.user_id:  # read with the session when it was loaded (one query for both)
            environ["iib.user"] = found.user if found.user is not None else db.user_get(conn(), found.user_id)
        else:
            environ["iib.user"] = None
    return environ["iib.user"]


def subscription() -> dict | None:
    """The signed-in user's latest subscription row (read once per request), or None."""
    user = current_user()
    if user is None:
        return None
    environ = bottle.request.environ
    if "iib.subscription" not in environ:
        found = session()
        preloaded = found.plan if found is not None and found.user_id == user["id"] else None
        environ["iib.subscription"] = preloaded["subscription"] if preloaded is not None \
            else billing.current_subscription(conn(), user["id"])
    return environ["iib.subscription"]


def forget_plan() -> None:
    """Forget the plan and credits read with the session: this request changed them (the page it renders reads
    them again)."""
    environ = bottle.request.environ
    environ.pop("iib.subscription", None)
    found = environ.get("iib.session")
    if found is not None:
        found.plan = None


def credits_left() -> int:
    """The signed-in user's credits as this request's session read them (a page's figure), else read now; 0 for
    nobody. An action that spends credits reads the balance itself, in its transaction."""
    user = current_user()
    if user is None:
        return 0
    found = session()
    if found is not None and found.plan is not None and found.user_id == user["id"]:
        return found.plan["credits"]
    return credits.balance(conn(), user["id"])


def plan() -> billing.Access | None:
    """What the signed-in user's plan allows now, or None for a visitor who is not signed in (blocked: nothing)."""
    user = current_user()
    if user is None:
        return None
    found = billing.access(subscription(), now(), hold=user.get("billing_hold"))
    if user.get("blocked_at"):  # the owner blocked the account: no new batch whatever the plan
        return billing.Access("blocked", False, found.period_end)
    return found


def is_owner() -> bool:
    """True when the signed-in user may open the owner's console (read once per request)."""
    environ = bottle.request.environ
    if "iib.owner" not in environ:
        from services import admin

        environ["iib.owner"] = admin.is_owner(conn(), app().settings, current_user())
    return environ["iib.owner"]


def library_key() -> str | None:
    """The signed-in user's opaque key for the images this browser keeps (made on first use), or None.

    The browser stamps it on every batch and image it stores and shows only the rows carrying it,
    so two people in one browser never see each other's images. Random, not derived from the user
    id or the email, so it says nothing about who it belongs to.
    """
    user = current_user()
    if user is None:
        return None
    environ = bottle.request.environ
    if "iib.library_key" not in environ:
        environ["iib.library_key"] = user.get("library_key") \
            or db.user_library_key(conn(), user["id"], secrets.token_urlsafe(24))
    return environ["iib.library_key"]


def csrf_token() -> str:
    """The CSRF token to put in a form (starts a session if the visitor has none)."""
    return session(create=True).csrf_token


def render(template: str, **context) -> str:
    """Render a template in this request's language with the values every page needs."""
    language = lang()
    path = bottle.request.fullpath
    user = current_user() if bottle.request.get_cookie(sessions.cookie_name(app().settings)) else None
    base = {
        "lang": language,
        "languages": [(code, LANGUAGE_NAMES[code]) for code in LANGUAGES],
        "current_path": path if not bottle.request.query_string else f"{path}?{bottle.request.query_string}",
        "user": user,
        # The plan's state drives the past-due banner on every page of a signed-in subscriber.
        "plan": plan() if user else None,
        "csrf_token": csrf_token,
        "library_key": library_key,
        "is_owner": is_owner,
        "settings": app().settings,
        "price_facts": app().price_facts(),
    }
    base.update(context)
    return app().templates.get_template(template).render(base)


def render_public(template: str) -> str:
    """A page that is the same for every visitor without a session: rendered once per language and path.

    A visitor with a session cookie, or a URL with a query string, gets a fresh rendering (the cache
    stays bounded by the app's own routes).
    """
    request = bottle.request
    if request.query_string or request.get_cookie(sessions.cookie_name(app().settings)) is not None:
        return render(template)
    key = (template, lang(), request.path)
    html = app().public_pages.get(key)
    if html is None:
        html = render(template)
        if not request.environ.get("iib.private"):  # rendering it did not start a session
            app().public_pages[key] = html
    return html


def redirect(path: str, code: int = 303) -> None:
    """Redirect to a site path, as an absolute URL built from PUBLIC_BASE_URL (never from the Host header)."""
    bottle.redirect(app().settings.url(path), code)


def wants_json() -> bool:
    """True when the client asked for JSON (an API call) rather than a page."""
    accept = header("Accept") or ""
    return bottle.request.path.startswith("/api/") or (
        "application/json" in accept and "text/html" not in accept)


def json_error(status: int, code: str, message: str) -> bottle.HTTPResponse:
    """A JSON error response in the shape {"error": {"code", "message"}}."""
    return bottle.HTTPResponse(status=status, body=bottle.json_dumps({"error": {"code": code, "message": message}}),
                               headers={"Content-Type": "application/json"})


# --- the plugin every route runs through ---------------------------------------------------------

def limit_body(limit: int) -> None:
    """Refuse (413) a request body larger than `limit` bytes before reading it; a chunked one is read at most limit + 1.

    A declared Content-Length over the limit is refused without reading a byte. A chunked body
    (no length) is read in 64 KB pieces and refused as soon as it passes the limit; one that fits
    is put back as a plain body of known length, so Bottle's own readers stay bounded too.
    """
    environ = bottle.request.environ
    if "chunked" in environ.get("HTTP_TRANSFER_ENCODING", "").lower():
        data = bytearray()
        for part in bottle.BaseRequest._iter_chunked(environ["wsgi.input"].read, 65536):
            data += part
            if len(data) > limit:
                raise bottle.HTTPError(413, "request body too large")
        environ["wsgi.input"] = io.BytesIO(bytes(data))
        environ["CONTENT_LENGTH"] = str(len(data))
        del environ["HTTP_TRANSFER_ENCODING"]
        return
    raw = environ.get("CONTENT_LENGTH") or "0"
    if not raw.isdigit():
        raise bottle.HTTPError(400, "unreadable Content-Length")
    if int(raw) > limit:
        raise bottle.HTTPError(413, "request body too large")


class RequestGuard:
    """Refuse oversized bodies, cross-site and token-less state changes; turn a database outage into a 503."""

    name = "request_guard"
    api = 2

    def apply(self, callback, route):
        """Wrap a route callback; `csrf_exempt=True` skips the token check (webhooks), `max_body=N` sets the limit."""
        exempt = bool(route.config.get("csrf_exempt", False))
        limit = int(route.config.get("max_body", BODY_LIMIT))

        def guarded(*args, **kwargs):
            request = bottle.request
            try:
                if request.method in security.UNSAFE_METHODS:
                    limit_body(limit)
                if request.method in security.UNSAFE_METHODS and not exempt:
                    if security.cross_site_request(header("Sec-Fetch-Site")):
                        raise bottle.HTTPError(403, "cross-site request refused")
                    try:
                        submitted = header("X-CSRF-Token") or request.forms.get("csrf_token")
                    except (ValueError, UnicodeError):  # a form bottle cannot parse (control characters, not UTF-8)
                        raise bottle.HTTPError(400, "unreadable form") from None
                    if not sessions.csrf_ok(session(), submitted):
                        raise bottle.HTTPError(403, "missing or wrong CSRF token")
                return callback(*args, **kwargs)
            except db.DatabaseUnavailable as exc:
                log.error("database unavailable: %s", exc)
                raise bottle.HTTPError(503, "database unavailable") from None

        return guarded


def error_page(error: bottle.HTTPError) -> str:
    """Render an error as a page or as JSON, in the visitor's language, without internal details."""
    status = error.status_code
    environ = bottle.request.environ
    connection = environ.get("iib.db")
    if connection is not None:
        connection.rollback()
    if status >= 500 and status != 503:
        log.error("%s %s failed: %r\n%s", bottle.request.method, bottle.request.path,
                  error.exception, error.traceback or "")
    title, text = ERROR_TEXTS.get(status, ERROR_TEXTS[500 if status >= 500 else 400])
    try:
        if wants_json():
            bottle.response.content_type = "application/json"
            code = {403: "forbidden", 404: "not_found", 413: "too_large", 503: "unavailable"}.get(status,
                                                                                                  f"http_{status}")
            return bottle.json_dumps({"error": {"code": code, "message": translate(text)}})
        if status >= 500:
            # Do not reach for the session: the database may be what just failed.
            environ["iib.session"] = environ.get("iib.session")
            environ.setdefault("iib.user", None)
        return render("errors/error.html", status=status, title=title, text=text)
    except Exception:  # the last resort must not fail: plain text, still no details
        log.exception("the error page itself failed")
        bottle.response.content_type = "text/plain; charset=utf-8"
        return f"{status} {title}"
