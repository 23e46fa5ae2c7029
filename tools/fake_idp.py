"""A small OpenID Connect provider on 127.0.0.1 that plays Google and Microsoft (personal accounts).

Used by the app's tests and by the local demo instead of the real identity providers. Each
*realm* (``/google``, ``/microsoft``, ...) is one provider with its own clients, accounts and
endpoints, and a *style* that decides the claim set and the shape of every error.

Standard library only. ID tokens are HS256-signed with a random per-server key and say so in
their header (``{"alg": "HS256", "kid": "fake", "typ": "JWT"}``); the JWKS is empty. The app
reads claims without verifying the signature, which OpenID Connect Core 3.1.3.7 allows for an
ID token received straight from the token endpoint over TLS.

Real behaviours copied (read in Google's "OpenID Connect" guide and "OpenID Connect API
reference" at developers.google.com/identity/openid-connect, Microsoft's "Microsoft identity
platform and OAuth 2.0 authorization code flow", "ID token claims reference", "UserInfo
endpoint" and "AADSTS error codes" pages at learn.microsoft.com/entra/identity-platform, and
in error bodies quoted verbatim in public issue threads, e.g. google/gmail-oauth2-tools#29,
openid/AppAuth-iOS#526, SocialiteProviders/Providers#564, snok/django-auth-adfs#354,
OfficeDev/microsoft-365-agents-toolkit#8621, davidjrh/dnn.azureadprovider#17):

* Authorization endpoint: an unknown ``client_id`` or a ``redirect_uri`` that is not exactly
  one registered for the client is shown as an error page (status 400) and never redirected
  to: Google's "Access blocked: This app's request is invalid / Error 400:
  redirect_uri_mismatch", Microsoft's "AADSTS50011: The redirect URI '...' specified in the
  request does not match the redirect URIs configured for the application '...'". Other
  problems go back to the redirect URI as ``error=...&error_description=...&state=...``.
  The user cancelling gives ``error=access_denied`` (Microsoft adds an AADSTS description).
* Success redirects carry ``code`` and ``state``; Google also ``scope`` (with ``email`` and
  ``profile`` spelled as their userinfo.* URLs), ``authuser``, ``prompt`` and ``iss`` (RFC
  9207, though Google's discovery document does not advertise
  ``authorization_response_iss_parameter_supported``: openiddict/openiddict-core#2428); the
  stand-in sends Google's ``iss`` on error redirects too. Microsoft's v2.0 endpoint sends no
  ``iss``. Google codes start ``4/0A`` (so the ``/`` must be URL-encoded, as with the real
  one); codes are single use and short lived.
* Token endpoint: form-encoded POST only (GET gets 405), ``client_secret_post`` or
  ``client_secret_basic``, PKCE ``code_verifier`` checked against the S256 challenge, the
  ``redirect_uri`` must equal the one used at /authorize. Answers carry ``Cache-Control:
  no-store`` and ``Pragma: no-cache``. Google errors: ``{"error": "invalid_grant",
  "error_description": "Bad Request"}`` (code reused or expired), ``"Invalid code verifier."``,
  ``"Malformed auth code."``, ``{"error": "invalid_client", "error_description":
  "Unauthorized"}`` with 401, ``redirect_uri_mismatch``, ``unsupported_grant_type``. Microsoft
  errors: ``error``, ``error_description`` (``AADSTSnnn: message`` then ``Trace ID``,
  ``Correlation ID`` and ``Timestamp`` lines), ``error_codes``, ``timestamp``, ``trace_id``,
  ``correlation_id`` (the ``client-request-id`` header when sent) and ``error_uri``, with
  AADSTS54005 (code already redeemed), AADSTS70008 (expired code), AADSTS501481 (verifier
  mismatch), AADSTS7000215 (wrong secret, 401), AADSTS7000218 (no secret, 401), AADSTS500112
  (redirect URI differs from the one at /authorize), AADSTS700016 (unknown application),
  AADSTS70003 (unsupported grant type), AADSTS900144 (missing parameter).
* Successful token response: ``access_token``, ``expires_in``, ``id_token``, ``scope``,
  ``token_type: Bearer`` (Microsoft adds ``ext_expires_in``).
* ID token claims. Google: iss, azp, aud, sub, email, email_verified, at_hash, nonce, name,
  picture, given_name, family_name, iat, exp (iat + 3600); email claims only with the
  ``email`` scope and profile claims only with the ``profile`` scope. Microsoft v2.0: ver
  "2.0", iss, sub, aud, exp, iat, nbf, name, preferred_username, oid (personal accounts look
  like ``00000000-0000-0000-xxxx-xxxxxxxxxxxx``), email, tid
  ``9188040d-6c67-4c5b-b112-36a304b66dad``, nonce, aio; name/preferred_username need
  ``profile``, email needs ``email``. A Microsoft realm made with ``optional_claims=("xms_edov",)``
  (an app registration that asks for that optional ID token claim) adds ``xms_edov`` (JSON boolean:
  "whether the user's email domain owner has been verified", the account's ``email_verified``), and,
  as Microsoft's optional claims reference says, only when the token carries ``email``.
* UserInfo (Google's openidconnect.googleapis.com/v1/userinfo, Microsoft's
  graph.microsoft.com/oidc/userinfo): ``Authorization: Bearer`` access token; sub, name,
  given_name, family_name, picture, email (Google also email_verified); a missing or bad
  token gets 401 with ``WWW-Authenticate: Bearer error="invalid_token"`` and the provider's
  body (Google ``{"error": "invalid_request", "error_description": "Invalid Credentials"}``,
  Graph ``{"error": {"code": "InvalidAuthenticationToken", ...}}``).

Where the stand-in is stricter than the real providers: PKCE with S256 is required on every
request (the real ones let confidential clients skip it and accept ``plain``), ``openid``
must be in the scope, only ``response_mode=query`` is offered, and there is no refresh-token
grant.

Python use::

    idp = FakeIdP(port=0, clock=time.time)          # clock: a callable, so tests can move time
    idp.add_realm("google", style="google").add_realm("microsoft", style="microsoft")
    # or add_realm("microsoft", style="microsoft", optional_claims=("xms_edov",)): the optional claim
    idp.add_client("google", client_id="gid", client_secret="gsecret", redirect_uris=[callback_url])
    idp.with_demo_accounts()                        # or add_account(realm, sub=..., name=..., email=...)
    idp.start(); ...; idp.stop()

Command line::

    python tools/fake_idp.py --port 9000 --realm google --realm microsoft \\
        --client google:gid:gsecret:http://127.0.0.1:8000/auth/google/callback \\
        --account "google:10001:Ana García:ana@example.com" --demo-accounts
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import hmac
import html
import json
import logging
import re
import secrets
import sys
import threading
import time
import uuid
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler
from urllib.parse import parse_qs, unquote_plus, urlencode, urlsplit, urlunsplit

try:
    from tools.standin_http import ServedStandIn, TrackingHTTPServer, serve_until_stopped
except ImportError:  # run as a file (python tools/<stand-in>.py): tools/ itself is on the path
    from standin_http import ServedStandIn, TrackingHTTPServer, serve_until_stopped

log = logging.getLogger("tools.fake_idp")

STYLES = ("google", "microsoft")
MSA_TENANT_ID = "9188040d-6c67-4c5b-b112-36a304b66dad"
MSA_ISSUER = f"https://login.microsoftonline.com/{MSA_TENANT_ID}/v2.0"
GOOGLE_ISSUER = "https://accounts.google.com"
ID_TOKEN_TTL = 3600
MAX_BODY = 64 * 1024
JWT_HEADER = {"alg": "HS256", "kid": "fake", "typ": "JWT"}
GOOGLE_SCOPE_URLS = {
    "email": "https://www.googleapis.com/auth/userinfo.email",
    "profile": "https://www.googleapis.com/auth/userinfo.profile",
}
AUTHORIZE_PARAMS = ("client_id", "redirect_uri", "response_type", "scope", "state", "nonce", "code_challenge",
                    "code_challenge_method", "response_mode", "prompt", "login_hint")
CHOICE_FIELDS = ("account", "cancel", "name", "email")
VERIFIER_RE = re.compile(r"^[A-Za-z0-9\-._~]{43,128}$")
EMAIL_RE = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")
REALM_NAME_RE = re.compile(r"^[a-z0-9][a-z0-9_-]*$")
DISPLAY = {"google": "Google (stand-in)", "microsoft": "Microsoft (stand-in)"}
# The optional ID token claims an app registration can ask each style for (Microsoft's optional claims).
OPTIONAL_CLAIMS = {"google": (), "microsoft": ("xms_edov",)}


def b64url(data: bytes) -> str:
    """Base64url without padding, as JWTs and PKCE use it."""
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def s256(verifier: str) -> str:
    """The PKCE S256 challenge for a verifier: BASE64URL(SHA256(ascii(verifier)))."""
    return b64url(hashlib.sha256(verifier.encode("ascii")).digest())


def decode_jwt_payload(token: str) -> dict:
    """The claims of a compact JWT, without checking the signature (a helper for tests)."""
    payload = token.split(".")[1]
    return json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))


def demo_accounts() -> list[dict]:
    """Two friendly accounts for the demo and for tests: keyword arguments for ``add_account``."""
    return [
        {"sub": "10001", "name": "Ana García", "email": "ana@example.com"},
        {"sub": "10002", "name": "Ben Carter", "email": "ben@example.com"},
    ]


@dataclass
class Account:
    """One user a realm can sign in."""

    sub: str
    name: str
    email: str
    email_verified: bool = True  # Google's email_verified; Microsoft's xms_edov when the realm asks for it
    given_name: str = ""
    family_name: str = ""
    picture: str = ""
    claims: dict = field(default_factory=dict)


@dataclass
class Client:
    """One registered application (client id, secret, exact redirect URIs)."""

    client_id: str
    client_secret: str
    redirect_uris: list[str]


@dataclass
class Realm:
    """One provider: its style, issuer, clients, accounts and the test switches."""

    name: str
    style: str
    issuer: str | None = None
    clients: dict[str, Client] = field(default_factory=dict)
    accounts: dict[str, Account] = field(default_factory=dict)
    tamper: dict = field(default_factory=dict)
    tamper_response: dict = field(default_factory=dict)
    tamper_userinfo: dict = field(default_factory=dict)
    omit: set = field(default_factory=set)
    fail_status: int | None = None
    optional_claims: tuple = ()


@dataclass
class _Code:
    realm: str
    client_id: str
    redirect_uri: str
    code_challenge: str
    nonce: str | None
    scope: list[str]
    sub: str
    expires_at: float
    used: bool = False


@dataclass
class _AccessToken:
    realm: str
    client_id: str
    sub: str
    scope: list[str]
    expires_at: float


class _Problem(Exception):
    """Something the provider refuses; ``kind`` says how it reaches the caller."""

    def __init__(self, kind: str, status: int, error: str, google: str, ms_code: int | None = None, ms: str = "",
                 ms_error: str | None = None):
        super().__init__(error)
        self.kind = kind  # "page" (HTML error page), "redirect" (back to the app) or "json"
        self.status = status
        self.error = error
        self.google = google
        self.ms_code = ms_code
        self.ms = ms
        self.ms_error = ms_error or error


def _page(status, error, google, ms_code=None, ms="", ms_error=None):
    return _Problem("page", status, error, google, ms_code, ms, ms_error)


def _redirect(error, google, ms_code=None, ms="", ms_error=None):
    return _Problem("redirect", 302, error, google, ms_code, ms, ms_error)


def _json(status, error, google, ms_code=None, ms="", ms_error=None):
    return _Problem("json", status, error, google, ms_code, ms, ms_error)


def _missing(kind, name, status=400):
    make = {"page": _page, "json": _json}.get(kind)
    google = f"Missing required parameter: {name}"
    ms = f"The request body must contain the following parameter: '{name}'."
    if make is None:
        return _redirect("invalid_request", google, 900144, ms)
    return make(status, "invalid_request", google, 900144, ms)


class FakeIdP(ServedStandIn):
    """An OpenID Connect provider over real HTTP on 127.0.0.1, playing Google and Microsoft at once."""

    label = "fake identity provider"
    thread_name = "fake-idp"
    log_name = "tools.fake_idp"

    def __init__(self, host: str = "127.0.0.1", port: int = 0, code_ttl: float = 60, token_ttl: int = 3600,
                 clock=None):
        if host != "127.0.0.1":
            raise ValueError("the fake identity provider binds 127.0.0.1 only")
        self.code_ttl = code_ttl
        self.token_ttl = int(token_ttl)
        self.clock = clock or time.time
        self.issued_codes: list[str] = []
        self._lock = threading.RLock()
        self._realms: dict[str, Realm] = {}
        self._codes: dict[str, _Code] = {}
        self._tokens: dict[str, _AccessToken] = {}
        self._key = secrets.token_bytes(32)
        self._server = _Server((host, port), _Handler)
        self._server.idp = self
        self._thread: threading.Thread | None = None
        self.base_url = f"http://{host}:{self._server.server_address[1]}"

    # ----- configuration -------------------------------------------------------------------------

    def add_realm(self, name: str, style: str | None = None, issuer: str | None = None,
                  optional_claims=()) -> FakeIdP:
        """Add a provider under ``/<name>`` in a style (google, microsoft), asking for optional claims (xms_edov)."""
        style = style or name
        if style not in STYLES:
            raise ValueError(f"style must be one of {STYLES}, not {style!r}")
        if not REALM_NAME_RE.match(name):
            raise ValueError(f"bad realm name {name!r}")
        unknown = [claim for claim in optional_claims if claim not in OPTIONAL_CLAIMS[style]]
        if unknown:
            raise ValueError(f"a {style} realm has no optional claim {unknown[0]!r}")
        with self._lock:
            if name in self._realms:
                raise ValueError(f"realm {name!r} already exists")
            self._realms[name] = Realm(name=name, style=style, issuer=issuer, optional_claims=tuple(optional_claims))
        return self

    def add_client(self, realm: str, client_id: str, client_secret: str, redirect_uris) -> FakeIdP:
        """Register an application in a realm, with the exact redirect URIs it may use."""
        if isinstance(redirect_uris, str):
            redirect_uris = [redirect_uris]
        with self._lock:
            self._realm(realm).clients[client_id] = Client(client_id, client_secret, list(redirect_uris))
        return self

    def add_account(self, realm: str, sub: str, name: str, email: str, email_verified: bool = True,
                    claims: dict | None = None, given_name: str | None = None, family_name: str | None = None,
                    picture: str | None = None) -> FakeIdP:
        """Add a user to a realm's account chooser; ``claims`` adds or overrides ID token claims."""
        first, _, last = name.partition(" ")
        with self._lock:
            r = self._realm(realm)
            r.accounts[str(sub)] = Account(
                sub=str(sub), name=name, email=email, email_verified=email_verified,
                given_name=first if given_name is None else given_name,
                family_name=last if family_name is None else family_name,
                picture=picture if picture is not None else _picture_url(r.style, str(sub)),
                claims=dict(claims or {}))
        return self

    def with_demo_accounts(self) -> FakeIdP:
        """Add the two demo accounts (Ana García, Ben Carter) to every realm that lacks them."""
        with self._lock:
            for name, r in self._realms.items():
                for acc in demo_accounts():
                    if acc["sub"] not in r.accounts:
                        self.add_account(name, **acc)
        return self

    def realm_url(self, realm: str) -> str:
        """The base URL of a realm, e.g. ``http://127.0.0.1:54321/google``."""
        self._realm(realm)
        return f"{self.base_url}/{realm}"

    def issuer(self, realm: str) -> str:
        """The ``iss`` a realm puts in its ID tokens and discovery document."""
        r = self._realm(realm)
        return r.issuer or self.realm_url(realm)

    def endpoints(self, realm: str) -> dict:
        """The issuer and endpoint URLs of a realm, as the discovery document lists them."""
        url = self.realm_url(realm)
        return {"issuer": self.issuer(realm), "authorization_endpoint": f"{url}/authorize",
                "token_endpoint": f"{url}/token", "userinfo_endpoint": f"{url}/userinfo", "jwks_uri": f"{url}/keys"}

    # ----- test switches -------------------------------------------------------------------------

    def tamper(self, realm: str, **claims) -> None:
        """Replace claims in the NEXT ID token this realm issues (None removes the claim); one-shot."""
        with self._lock:
            self._realm(realm).tamper.update(claims)

    def tamper_response(self, realm: str, **params) -> None:
        """Replace parameters (e.g. ``iss``) in the NEXT authorization response redirected back; None removes one."""
        with self._lock:
            self._realm(realm).tamper_response.update(params)

    def tamper_userinfo(self, realm: str, **fields) -> None:
        """Replace fields (e.g. ``sub``) in the NEXT userinfo answer this realm gives; None removes one."""
        with self._lock:
            self._realm(realm).tamper_userinfo.update(fields)

    def omit_claims(self, realm: str, names) -> None:
        """Until reset, leave these claims out of the realm's ID tokens (the app must call userinfo)."""
        with self._lock:
            self._realm(realm).omit = set(names)

    def fail_token_endpoint(self, realm: str, status: int = 503) -> None:
        """Until reset, the realm's token endpoint answers this status with a realistic error body."""
        if not 400 <= int(status) <= 599:
            raise ValueError("status must be 4xx or 5xx")
        with self._lock:
            self._realm(realm).fail_status = int(status)

    def reset(self) -> None:
        """Clear every tamper, tamper_response, tamper_userinfo, omit_claims and fail_token_endpoint setting."""
        with self._lock:
            for r in self._realms.values():
                r.tamper.clear()
                r.tamper_response.clear()
                r.tamper_userinfo.clear()
                r.omit = set()
                r.fail_status = None

    # ----- internals -----------------------------------------------------------------------------

    def _realm(self, name: str) -> Realm:
        try:
            return self._realms[name]
        except KeyError:
            raise KeyError(f"no realm {name!r}") from None

    def _now(self) -> float:
        return float(self.clock())

    def _sign(self, claims: dict) -> str:
        head = b64url(json.dumps(JWT_HEADER, separators=(",", ":")).encode())
        body = b64url(json.dumps(claims, separators=(",", ":"), ensure_ascii=False).encode("utf-8"))
        sig = hmac.new(self._key, f"{head}.{body}".encode("ascii"), hashlib.sha256).digest()
        return f"{head}.{body}.{b64url(sig)}"


def _picture_url(style: str, sub: str) -> str:
    digest = hashlib.sha256(sub.encode()).hexdigest()[:24]
    if style == "google":
        return f"https://lh3.googleusercontent.com/a/fake-{digest}=s96-c"
    return "https://graph.microsoft.com/v1.0/me/photo/$value"


def _derived_sub(realm: Realm, email: str) -> str:
    digest = hashlib.sha256(f"{realm.name}:{email.strip().lower()}".encode()).digest()
    if realm.style == "google":
        return "1" + str(int.from_bytes(digest[:16], "big") % 10**20).zfill(20)
    return b64url(digest)


def _oid(sub: str) -> str:
    digest = hashlib.sha256(f"oid:{sub}".encode()).hexdigest()
    return f"00000000-0000-0000-{digest[:4]}-{digest[4:16]}"


class _Server(TrackingHTTPServer):
    idp: FakeIdP


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "FakeIdP/1.0"
    sys_version = ""
    timeout = 15
    disable_nagle_algorithm = True  # headers and body go out in two writes: no 40 ms delayed-ACK stall
    server: _Server

    # ----- plumbing ------------------------------------------------------------------------------

    def log_request(self, code="-", size="-"):
        path = urlsplit(self.path).path  # never the query string: it may carry codes or tokens
        log.info("%s %s -> %s", self.command, path, code)

    def log_message(self, format, *args):
        log.info("%s", format % args)  # e.g. an idle keep-alive connection timing out

    def do_GET(self):
        self._dispatch("GET")

    def do_POST(self):
        self._dispatch("POST")

    def _dispatch(self, method):
        idp = self.server.idp
        parts = urlsplit(self.path)
        segments = parts.path.strip("/").split("/", 1)
        realm = idp._realms.get(segments[0])
        rest = segments[1] if len(segments) > 1 else ""
        routes = {
            ".well-known/openid-configuration": {"GET": self._discovery},
            "keys": {"GET": self._keys},
            "authorize": {"GET": self._authorize_get, "POST": self._authorize_post},
            "token": {"POST": self._token},
            "userinfo": {"GET": self._userinfo, "POST": self._userinfo},
        }
        try:
            body = self._read_body()
            if realm is None or rest not in routes:
                self._send_json(404, {"error": "not_found", "error_description": f"No such endpoint: {parts.path}"})
                return
            handler = routes[rest].get(method)
            if handler is None:
                allow = ", ".join(sorted(routes[rest]))
                self._send_json(405, {"error": "invalid_request", "error_description": f"Method {method} not allowed"},
                                {"Allow": allow})
                return
            query = parse_qs(parts.query, keep_blank_values=True)
            handler(realm, query, body)
        except _BodyTooLarge:
            self._send_json(413, {"error": "invalid_request", "error_description": "Request body too large"})
            self.close_connection = True

    def _read_body(self) -> dict:
        length = int(self.headers.get("Content-Length") or 0)
        if length > MAX_BODY:
            raise _BodyTooLarge
        raw = self.rfile.read(length) if length else b""
        ctype = (self.headers.get("Content-Type") or "").split(";")[0].strip().lower()
        if ctype != "application/x-www-form-urlencoded":
            return {}
        return parse_qs(raw.decode("utf-8", "replace"), keep_blank_values=True)

    def _send(self, status, body: bytes, ctype: str, headers=None):
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _send_json(self, status, obj, headers=None):
        body = json.dumps(obj, ensure_ascii=False, indent=2).encode("utf-8")
        self._send(status, body, "application/json; charset=utf-8", headers)

    def _send_html(self, status, markup: str):
        self._send(status, markup.encode("utf-8"), "text/html; charset=utf-8",
                   {"Cache-Control": "no-store", "Pragma": "no-cache", "X-Frame-Options": "DENY"})

    def _redirect_to(self, uri: str, params: dict):
        parts = urlsplit(uri)
        extra = urlencode([(k, v) for k, v in params.items() if v is not None])
        query = f"{parts.query}&{extra}" if parts.query else extra
        location = urlunsplit((parts.scheme, parts.netloc, parts.path, query, ""))
        self._send(302, b"", "text/html; charset=utf-8", {"Location": location, "Cache-Control": "no-store"})

    def _ms_ids(self):
        idp = self.server.idp
        now = idp._now()
        trace = str(uuid.uuid4())
        corr = self.headers.get("client-request-id") or str(uuid.uuid4())
        stamp = time.strftime("%Y-%m-%d %H:%M:%SZ", time.gmtime(now))
        return trace, corr, stamp

    def _ms_description(self, p: _Problem):
        trace, corr, stamp = self._ms_ids()
        text = f"AADSTS{p.ms_code}: {p.ms}\r\nTrace ID: {trace}\r\nCorrelation ID: {corr}\r\nTimestamp: {stamp}"
        return text, trace, corr, stamp

    # ----- discovery and keys --------------------------------------------------------------------

    def _discovery(self, realm: Realm, query, form):
        idp = self.server.idp
        doc = dict(idp.endpoints(realm.name))
        doc.update({
            "response_types_supported": ["code"],
            "response_modes_supported": ["query"],
            "grant_types_supported": ["authorization_code"],
            "id_token_signing_alg_values_supported": ["HS256"],
            "token_endpoint_auth_methods_supported": ["client_secret_post", "client_secret_basic"],
            "code_challenge_methods_supported": ["S256"],
        })
        if realm.style == "google":
            doc.update({
                "subject_types_supported": ["public"],
                "scopes_supported": ["openid", "email", "profile"],
                "claims_supported": ["aud", "email", "email_verified", "exp", "family_name", "given_name", "iat",
                                     "iss", "name", "picture", "sub", "azp", "at_hash", "nonce"],
            })
        else:
            doc.update({
                "subject_types_supported": ["pairwise"],
                "scopes_supported": ["openid", "profile", "email", "offline_access"],
                "claims_supported": ["sub", "iss", "aud", "exp", "iat", "nbf", "name", "nonce", "oid",
                                     "preferred_username", "tid", "ver", "email", "aio"],
                "tenant_region_scope": None,
                "cloud_instance_name": "microsoftonline.com",
            })
        self._send_json(200, doc, {"Cache-Control": "public, max-age=3600"})

    def _keys(self, realm, query, form):
        self._send_json(200, {"keys": []}, {"Cache-Control": "public, max-age=3600"})

    # ----- authorization endpoint ----------------------------------------------------------------

    def _authorize_get(self, realm: Realm, query, form):
        self._authorize(realm, query, choosing=False)

    def _authorize_post(self, realm: Realm, query, form):
        self._authorize(realm, form, choosing=True)

    def _authorize(self, realm: Realm, params: dict, choosing: bool):
        idp = self.server.idp
        one = {k: v[0] for k, v in params.items() if v}
        redirect_uri = None
        try:
            client, redirect_uri = self._check_client(realm, params, one)
            self._check_request(one)
            if not choosing:
                self._send_html(200, _chooser_page(realm, one))
                return
            if one.get("cancel"):
                raise _redirect("access_denied", "", 65004, "User declined to consent to access the app.")
            account = self._chosen_account(realm, one)
        except _Problem as p:
            if p.kind == "page":
                self._send_html(p.status, _error_page(realm, p, self._ms_ids()))
                return
            params_out = {"error": p.ms_error if realm.style == "microsoft" else p.error}
            if realm.style == "microsoft":
                params_out["error_description"] = self._ms_description(p)[0]
            elif p.google:
                params_out["error_description"] = p.google
            params_out["state"] = one.get("state")
            if realm.style == "google":
                params_out["iss"] = idp.issuer(realm.name)
            self._redirect_to(redirect_uri, _apply(idp, realm.tamper_response, params_out))
            return
        scope = one["scope"].split()
        if realm.style == "google":
            code = "4/0A" + secrets.token_urlsafe(48)
        else:
            code = "M.C5" + secrets.token_hex(1) + "_BAY.2.U." + secrets.token_urlsafe(48)
        with idp._lock:
            idp._codes[code] = _Code(realm=realm.name, client_id=client.client_id, redirect_uri=redirect_uri,
                                     code_challenge=one["code_challenge"], nonce=one.get("nonce"), scope=scope,
                                     sub=account.sub, expires_at=idp._now() + idp.code_ttl)
            idp.issued_codes.append(code)
        out = {"state": one.get("state"), "code": code}
        if realm.style == "google":
            out.update({"scope": " ".join(GOOGLE_SCOPE_URLS.get(s, s) for s in scope), "authuser": "0",
                        "prompt": "consent", "iss": idp.issuer(realm.name)})
        self._redirect_to(redirect_uri, _apply(idp, realm.tamper_response, out))

    def _check_client(self, realm: Realm, params, one):
        for name in AUTHORIZE_PARAMS:
            if len(params.get(name, [])) > 1:
                raise _page(400, "invalid_request", f"Parameter duplicated: {name}", 90015,
                            f"Requested query string is too long or contains a duplicated parameter '{name}'.")
        client_id = one.get("client_id")
        if not client_id:
            raise _missing("page", "client_id")
        client = realm.clients.get(client_id)
        if client is None:
            raise _page(400, "invalid_client", "The OAuth client was not found.", 700016,
                        f"Application with identifier '{client_id}' was not found in the directory "
                        "'Microsoft Accounts'. This can happen if the application has not been installed by the "
                        "administrator of the tenant or consented to by any user in the tenant. You might have sent "
                        "your authentication request to the wrong tenant.", ms_error="unauthorized_client")
        redirect_uri = one.get("redirect_uri")
        if not redirect_uri:
            raise _missing("page", "redirect_uri")
        if redirect_uri not in client.redirect_uris:
            raise _page(400, "redirect_uri_mismatch",
                        f"The redirect URI in the request, {redirect_uri}, does not match the ones authorized for "
                        "the OAuth client.", 50011,
                        f"The redirect URI '{redirect_uri}' specified in the request does not match the redirect URIs "
                        f"configured for the application '{client_id}'. Make sure the redirect URI sent in the "
                        "request matches one added to your application in the Azure portal. Navigate to "
                        "https://aka.ms/redirectUriMismatchError to learn more about how to fix this.",
                        ms_error="invalid_request")
        return client, redirect_uri

    def _check_request(self, one):
        response_type = one.get("response_type")
        if not response_type:
            raise _missing("redirect", "response_type")
        if response_type != "code":
            raise _redirect("unsupported_response_type", f"Unsupported response type: {response_type}", 700054,
                            f"response_type '{response_type}' is not enabled for the application.")
        scope = one.get("scope", "").split()
        if not scope:
            raise _missing("redirect", "scope")
        if "openid" not in scope:
            raise _redirect("invalid_scope", "This stand-in only serves OpenID Connect: the scope must include openid.",
                            70011, "The provided value for the input parameter 'scope' is not valid. The scope must "
                            "include 'openid'.")
        response_mode = one.get("response_mode", "query")
        if response_mode != "query":
            raise _redirect("invalid_request", f"Unsupported response_mode: {response_mode}", 900101,
                            f"The response_mode '{response_mode}' is not supported by this stand-in; use 'query'.")
        challenge = one.get("code_challenge")
        if not challenge:
            raise _missing("redirect", "code_challenge")
        method = one.get("code_challenge_method")
        if method != "S256":
            raise _redirect("invalid_request",
                            f"Invalid code_challenge_method: {method or '(missing, meaning plain)'}; use S256.",
                            50149, "Invalid Code_Challenge_method parameter. This stand-in accepts S256 only.")
        if not VERIFIER_RE.match(challenge):
            raise _redirect("invalid_request", "Invalid code_challenge.", 501491,
                            "Invalid size of Code_Challenge parameter.")

    def _chosen_account(self, realm: Realm, one) -> Account:
        idp = self.server.idp
        sub = one.get("account")
        with idp._lock:
            if sub:
                account = realm.accounts.get(sub)
                if account is None:
                    raise _page(400, "invalid_request", "Unknown account.", 50034,
                                "The user account does not exist in the directory.")
                return account
            email = (one.get("email") or "").strip()
            if not EMAIL_RE.match(email):
                raise _page(400, "invalid_request", "Choose an account, or enter a valid email address.", 50034,
                            "The user account does not exist. Enter a valid email address.")
            for account in realm.accounts.values():
                if account.email.lower() == email.lower():
                    return account
            name = (one.get("name") or "").strip() or email.split("@")[0]
            sub = _derived_sub(realm, email)
            idp.add_account(realm.name, sub=sub, name=name, email=email)
            return realm.accounts[sub]

    # ----- token endpoint ------------------------------------------------------------------------

    def _token(self, realm: Realm, query, form):
        headers = {"Cache-Control": "no-store", "Pragma": "no-cache"}
        try:
            body = self._redeem(realm, {k: v[0] for k, v in form.items() if v})
        except _Problem as p:
            if realm.style == "microsoft":
                text, trace, corr, stamp = self._ms_description(p)
                body = {"error": p.ms_error, "error_description": text, "error_codes": [p.ms_code],
                        "timestamp": stamp, "trace_id": trace, "correlation_id": corr,
                        "error_uri": f"https://login.microsoftonline.com/error?code={p.ms_code}"}
            else:
                body = {"error": p.error, "error_description": p.google}
            if p.status == 401:
                headers["WWW-Authenticate"] = 'Basic realm="token"'
            self._send_json(p.status, body, headers)
            return
        self._send_json(200, body, headers)

    def _client_credentials(self, form):
        auth = self.headers.get("Authorization") or ""
        if auth[:6].lower() == "basic ":
            try:
                decoded = base64.b64decode(auth[6:].strip(), validate=True).decode("utf-8")
                raw_id, _, raw_secret = decoded.partition(":")
            except (ValueError, UnicodeDecodeError):
                raise _json(401, "invalid_client", "Unauthorized", 7000215, "Invalid client secret provided.",
                            ms_error="invalid_client") from None
            client_id, secret = unquote_plus(raw_id), unquote_plus(raw_secret)
            if form.get("client_id") not in (None, client_id):
                raise _json(401, "invalid_client", "Unauthorized", 700016,
                            "The client_id in the body differs from the one in the Authorization header.")
            return client_id, secret
        return form.get("client_id"), form.get("client_secret")

    def _redeem(self, realm: Realm, form) -> dict:
        idp = self.server.idp
        if realm.fail_status:
            raise _failure(realm.fail_status)
        grant_type = form.get("grant_type")
        if not grant_type:
            raise _json(400, "unsupported_grant_type", "Invalid grant_type: ", 900144,
                        "The request body must contain the following parameter: 'grant_type'.",
                        ms_error="invalid_request")
        if grant_type != "authorization_code":
            raise _json(400, "unsupported_grant_type", f"Invalid grant_type: {grant_type}", 70003,
                        f"The app requested an unsupported grant type '{grant_type}'.")
        client_id, secret = self._client_credentials(form)
        if not client_id:
            raise _json(400, "invalid_request", "Could not determine client ID from request.", 900144,
                        "The request body must contain the following parameter: 'client_id'.")
        client = realm.clients.get(client_id)
        if client is None:
            raise _json(401, "invalid_client", "The OAuth client was not found.", 700016,
                        f"Application with identifier '{client_id}' was not found in the directory "
                        "'Microsoft Accounts'.", ms_error="unauthorized_client")
        if not secret:
            raise _json(401, "invalid_client", "Unauthorized", 7000218,
                        "The request body must contain the following parameter: 'client_assertion' or "
                        "'client_secret'.")
        if not hmac.compare_digest(secret.encode("utf-8"), client.client_secret.encode("utf-8")):
            raise _json(401, "invalid_client", "Unauthorized", 7000215,
                        "Invalid client secret provided. Ensure the secret being sent in the request is the client "
                        f"secret value, not the client secret ID, for a secret added to app '{client_id}'.")
        code = form.get("code")
        if not code:
            raise _missing("json", "code")
        redirect_uri = form.get("redirect_uri")
        verifier = form.get("code_verifier")
        with idp._lock:
            record = idp._codes.get(code)
            if record is None or record.realm != realm.name or record.client_id != client_id:
                raise _json(400, "invalid_grant", "Malformed auth code.", 70000,
                            "The provided value for the 'code' parameter is not valid.")
            if record.used:
                raise _json(400, "invalid_grant", "Bad Request", 54005,
                            "OAuth2 Authorization code was already redeemed, please retry with a new valid code or "
                            "use an existing refresh token.")
            if idp._now() >= record.expires_at:
                raise _json(400, "invalid_grant", "Bad Request", 70008,
                            "The provided authorization code or refresh token has expired due to inactivity. Send a "
                            "new interactive authorization request for this user and resource.")
            if not redirect_uri:
                raise _missing("json", "redirect_uri")
            if redirect_uri != record.redirect_uri:
                raise _json(400, "redirect_uri_mismatch", "Bad Request", 500112,
                            f"The reply address '{redirect_uri}' does not match the reply address "
                            f"'{record.redirect_uri}' provided when requesting Authorization code.",
                            ms_error="invalid_client")
            if not verifier:
                raise _json(400, "invalid_grant", "Missing code verifier.", 900144,
                            "The request body must contain the following parameter: 'code_verifier'.",
                            ms_error="invalid_request")
            if not VERIFIER_RE.match(verifier) or not hmac.compare_digest(s256(verifier), record.code_challenge):
                raise _json(400, "invalid_grant", "Invalid code verifier.", 501481,
                            "The Code_Verifier does not match the code_challenge supplied in the authorization "
                            "request.")
            record.used = True
            account = realm.accounts[record.sub]
            now = idp._now()
            prefix = "ya29.a0" if realm.style == "google" else "EwA"
            access_token = prefix + secrets.token_urlsafe(48)
            idp._tokens[access_token] = _AccessToken(realm.name, client_id, account.sub, record.scope,
                                                     now + idp.token_ttl)
            claims = _id_token_claims(idp, realm, client_id, account, record, access_token, int(now))
            for name in realm.omit:
                claims.pop(name, None)
            if "email" not in claims:  # Microsoft sends xms_edov only with the email claim
                claims.pop("xms_edov", None)
            for name, value in realm.tamper.items():
                if value is None:
                    claims.pop(name, None)
                else:
                    claims[name] = value
            realm.tamper.clear()
            id_token = idp._sign(claims)
        if realm.style == "google":
            scope = " ".join(GOOGLE_SCOPE_URLS.get(s, s) for s in record.scope)
            return {"access_token": access_token, "expires_in": idp.token_ttl, "scope": scope,
                    "token_type": "Bearer", "id_token": id_token}
        granted = [s for s in record.scope if s != "offline_access"]
        scope = " ".join(granted + ([] if "User.Read" in granted else ["User.Read"]))
        return {"token_type": "Bearer", "scope": scope, "expires_in": idp.token_ttl,
                "ext_expires_in": idp.token_ttl, "access_token": access_token, "id_token": id_token}

    # ----- userinfo ------------------------------------------------------------------------------

    def _userinfo(self, realm: Realm, query, form):
        idp = self.server.idp
        auth = self.headers.get("Authorization") or ""
        token = auth[7:].strip() if auth[:7].lower() == "bearer " else ""
        with idp._lock:
            record = idp._tokens.get(token) if token else None
            valid = record is not None and record.realm == realm.name and idp._now() < record.expires_at
            account = realm.accounts.get(record.sub) if valid else None
        if account is None:
            headers = {"WWW-Authenticate": 'Bearer error="invalid_token"', "Cache-Control": "no-store"}
            if realm.style == "google":
                body = {"error": "invalid_request", "error_description": "Invalid Credentials"}
            else:
                _, corr, _ = self._ms_ids()
                message = "Access token is empty." if not token else "Access token validation failure."
                body = {"error": {"code": "InvalidAuthenticationToken", "message": message,
                                  "innerError": {"date": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(idp._now())),
                                                 "request-id": str(uuid.uuid4()), "client-request-id": corr}}}
            self._send_json(401, body, headers)
            return
        info = {"sub": account.sub}
        if "profile" in record.scope:
            info.update({"name": account.name, "given_name": account.given_name,
                         "family_name": account.family_name, "picture": account.picture})
        if "email" in record.scope:
            info["email"] = account.email
            if realm.style == "google":
                info["email_verified"] = account.email_verified
        for key, value in account.claims.items():
            if key in ("name", "given_name", "family_name", "picture", "email", "email_verified", "locale", "hd"):
                info[key] = value
        self._send_json(200, _apply(idp, realm.tamper_userinfo, info), {"Cache-Control": "no-store"})


class _BodyTooLarge(Exception):
    pass


def _apply(idp: FakeIdP, tamper: dict, values: dict) -> dict:
    """Apply a one-shot tamper (None removes a key) to an answer's values, then clear it."""
    with idp._lock:
        for key, value in tamper.items():
            if value is None:
                values.pop(key, None)
            else:
                values[key] = value
        tamper.clear()
    return values


def _failure(status: int) -> _Problem:
    if status == 503:
        return _json(503, "temporarily_unavailable", "The service is currently unavailable.", 90033,
                     "A transient error has occurred. Please try again.")
    if status == 429:
        return _json(429, "temporarily_unavailable", "Rate limit exceeded.", 50196,
                     "The server terminated an operation because it encountered a client request loop.")
    if status >= 500:
        return _json(status, "server_error", "Internal error.", 90033,
                     "A transient error has occurred. Please try again.")
    if status == 401:
        return _json(401, "invalid_client", "Unauthorized", 7000215, "Invalid client secret provided.")
    return _json(status, "invalid_request", "Bad Request", 90014, "The request is not valid.")


def _id_token_claims(idp: FakeIdP, realm: Realm, client_id: str, account: Account, record: _Code,
                     access_token: str, now: int) -> dict:
    scope = record.scope
    if realm.style == "google":
        half = hashlib.sha256(access_token.encode("ascii")).digest()[:16]
        claims = {"iss": idp.issuer(realm.name), "azp": client_id, "aud": client_id, "sub": account.sub}
        if "email" in scope:
            claims.update({"email": account.email, "email_verified": account.email_verified})
        claims["at_hash"] = b64url(half)
        if record.nonce is not None:
            claims["nonce"] = record.nonce
        if "profile" in scope:
            claims.update({"name": account.name, "picture": account.picture, "given_name": account.given_name,
                           "family_name": account.family_name})
        claims.update({"iat": now, "exp": now + ID_TOKEN_TTL})
    else:
        claims = {"ver": "2.0", "iss": idp.issuer(realm.name), "sub": account.sub, "aud": client_id,
                  "exp": now + ID_TOKEN_TTL, "iat": now, "nbf": now}
        if "profile" in scope:
            claims.update({"name": account.name, "preferred_username": account.email})
        claims["oid"] = _oid(account.sub)
        if "email" in scope:
            claims["email"] = account.email
            if "xms_edov" in realm.optional_claims:  # "the presence of the email claim is required"
                claims["xms_edov"] = account.email_verified
        claims["tid"] = MSA_TENANT_ID
        if record.nonce is not None:
            claims["nonce"] = record.nonce
        claims["aio"] = secrets.token_urlsafe(66)
    claims.update(account.claims)
    return claims


# ----- HTML pages (the provider's own pages, not the app's: inline styles are fine here) ----------

_PAGE_STYLE = ("font-family:system-ui,sans-serif;max-width:28rem;margin:3rem auto;padding:1.5rem;"
               "border:1px solid #ccc;border-radius:8px")


def _e(value) -> str:
    return html.escape(str(value), quote=True)


def _hidden(one: dict) -> str:
    return "".join(f'<input type="hidden" name="{_e(k)}" value="{_e(v)}">'
                   for k, v in one.items() if k not in CHOICE_FIELDS)


def _chooser_page(realm: Realm, one: dict) -> str:
    title = DISPLAY[realm.style]
    action = f"/{realm.name}/authorize"
    hidden = _hidden(one)
    rows = []
    for account in realm.accounts.values():
        label = f"{account.name} <{account.email}>"
        rows.append(
            f'<form method="post" action="{_e(action)}" style="margin:.5rem 0">{hidden}'
            f'<button type="submit" name="account" value="{_e(account.sub)}" class="account" '
            f'data-sub="{_e(account.sub)}" style="width:100%;text-align:left;padding:.6rem">{_e(label)}</button>'
            "</form>")
    accounts = "".join(rows) or "<p>No accounts yet.</p>"
    return (
        '<!doctype html><html lang="en"><head><meta charset="utf-8">'
        f"<title>Sign in - {_e(title)}</title></head>"
        f'<body><main style="{_PAGE_STYLE}">'
        f'<h1 id="realm-title">{_e(title)}</h1>'
        f'<p>Choose an account to continue to <strong id="client-id">{_e(one.get("client_id", ""))}</strong>.</p>'
        f'<section id="accounts">{accounts}</section>'
        f'<h2 style="font-size:1rem">Use another account</h2>'
        f'<form method="post" action="{_e(action)}" id="another">{hidden}'
        '<p><label>Name <input type="text" name="name" autocomplete="name"></label></p>'
        '<p><label>Email <input type="email" name="email" required autocomplete="email"></label></p>'
        '<p><button type="submit" id="use-another">Continue</button></p></form>'
        f'<form method="post" action="{_e(action)}">{hidden}'
        '<button type="submit" name="cancel" value="1" id="cancel" formnovalidate>Cancel</button></form>'
        "</main></body></html>")


def _error_page(realm: Realm, p: _Problem, ids) -> str:
    trace, corr, stamp = ids
    if realm.style == "google":
        body = (
            '<h1>Access blocked: This app\u2019s request is invalid</h1>'
            "<p>You can\u2019t sign in because this app sent an invalid request. You can try again later, or "
            "contact the developer about this issue.</p>"
            f'<p><strong id="error-code" data-error="{_e(p.error)}">Error {p.status}: {_e(p.error)}</strong></p>'
            f'<p id="error-description">{_e(p.google)}</p>')
    else:
        body = (
            "<h1>Sign in</h1><p>Sorry, but we\u2019re having trouble signing you in.</p>"
            f'<p id="error-code" data-error="{_e(p.ms_error)}">AADSTS{p.ms_code}: {_e(p.ms)}</p>'
            f"<p>Request Id: {_e(trace)}<br>Correlation Id: {_e(corr)}<br>Timestamp: {_e(stamp)}</p>")
    return (
        '<!doctype html><html lang="en"><head><meta charset="utf-8">'
        f"<title>Error - {_e(DISPLAY[realm.style])}</title></head>"
        f'<body><main style="{_PAGE_STYLE}">{body}</main></body></html>')


# ----- command line ------------------------------------------------------------------------------

def parse_args(argv=None):
    """Parse the command line (see the module docstring)."""
    parser = argparse.ArgumentParser(description="Fake Google / Microsoft OpenID Connect provider on 127.0.0.1.")
    parser.add_argument("--port", type=int, default=9000, help="port on 127.0.0.1 (0 = any free port)")
    parser.add_argument("--realm", action="append", default=[], metavar="NAME[:STYLE]",
                        help="a provider under /NAME; STYLE google or microsoft (default: the name)")
    parser.add_argument("--issuer", action="append", default=[], metavar="REALM=URL", help="override a realm's iss")
    parser.add_argument("--client", action="append", default=[], metavar="REALM:ID:SECRET:REDIRECT_URI[,URI...]",
                        help="register an application")
    parser.add_argument("--account", action="append", default=[], metavar="REALM:SUB:NAME:EMAIL",
                        help="add an account to a realm's chooser")
    parser.add_argument("--demo-accounts", action="store_true", help="add Ana García and Ben Carter to every realm")
    parser.add_argument("--code-ttl", type=float, default=60, help="authorization code lifetime, seconds")
    parser.add_argument("--token-ttl", type=int, default=3600, help="access token lifetime, seconds")
    return parser.parse_args(argv)


def build_from_args(args) -> FakeIdP:
    """A configured (not yet started) FakeIdP from parsed command-line arguments."""
    idp = FakeIdP(port=args.port, code_ttl=args.code_ttl, token_ttl=args.token_ttl)
    issuers = dict(item.split("=", 1) for item in args.issuer)
    for spec in args.realm or ["google", "microsoft"]:
        name, _, style = spec.partition(":")
        idp.add_realm(name, style=style or None, issuer=issuers.get(name))
    for spec in args.client:
        realm, client_id, secret, uris = spec.split(":", 3)
        idp.add_client(realm, client_id, secret, [u for u in uris.split(",") if u])
    for spec in args.account:
        realm, sub, rest = spec.split(":", 2)
        name, _, email = rest.rpartition(":")
        idp.add_account(realm, sub=sub, name=name, email=email)
    if args.demo_accounts:
        idp.with_demo_accounts()
    return idp


def main(argv=None) -> int:
    """Run the stand-in from the command line until Ctrl+C."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    try:
        idp = build_from_args(parse_args(argv))
    except (ValueError, KeyError) as exc:
        print(f"fake_idp: {exc}", file=sys.stderr)
        return 2
    return serve_until_stopped(idp, idp.base_url, *(
        f"  {name}: {idp.realm_url(name)}/.well-known/openid-configuration" for name in idp._realms))



if __name__ == "__main__":
    sys.exit(main())
