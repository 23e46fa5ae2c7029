"""Sign-in with the Google and Microsoft stand-ins over real HTTP: the happy paths and every refusal.

The visitor's browser is an in-process client for our app and `requests` for the stand-in;
the app talks to the stand-in's token and userinfo endpoints over loopback HTTP. Every
refusal case checks that no signed-in session exists afterwards.
"""

import logging
import time
from urllib.parse import parse_qs, urlencode, urlsplit

import pytest
import requests

from routes import web
from services import db, oauth, sessions
from services.config import Provider
from tests.conftest import IDP_CLIENTS, BufferedClient, idp_settings, register_clients
from tests.visitors import Visitor, assert_refused, english, signed_in_sessions

BASE = "http://127.0.0.1:8000"


@pytest.fixture
def visitor(signin_app):
    return Visitor(signin_app)


# --- happy paths ---------------------------------------------------------------------------------

@pytest.mark.parametrize("provider, account, name", [("google", "g-1001", "Ana García"),
                                                     ("microsoft", "m-2002", "Chloé Dubois")])
def test_sign_in_lands_on_the_account_page(visitor, conn, idp, provider, account, name):
    response = visitor.sign_in(provider, account)
    assert response.status_code == 303
    assert response.headers["Location"] == f"{BASE}/account"
    page = visitor.client.get("/account")
    assert page.status_code == 200 and name in page.text
    assert page.headers["Cache-Control"] == "no-store"
    identity = conn.one("SELECT provider, issuer, subject FROM identities")
    assert identity == {"provider": provider, "issuer": idp.issuer(provider), "subject": account}
    assert conn.scalar("SELECT COUNT(*) AS n FROM auth_flows") == 0
    assert signed_in_sessions(conn) == 1


def test_the_same_account_signs_in_as_the_same_user(visitor, signin_app, conn):
    visitor.sign_in("google", "g-1001")
    first = conn.scalar("SELECT user_id FROM sessions WHERE user_id IS NOT NULL")
    again = Visitor(signin_app)
    again.sign_in("google", "g-1001")
    assert conn.scalar("SELECT COUNT(*) AS n FROM users") == 1
    assert {r["user_id"] for r in conn.all("SELECT user_id FROM sessions")} == {first}


def test_accounts_are_never_merged_by_email(visitor, signin_app, conn):
    visitor.sign_in("google", "g-1001")
    Visitor(signin_app).sign_in("microsoft", "m-2001")  # same email, other provider
    assert conn.scalar("SELECT COUNT(*) AS n FROM users") == 2
    assert conn.scalar("SELECT COUNT(DISTINCT user_id) AS n FROM identities") == 2


def test_name_and_email_come_from_userinfo_when_the_id_token_lacks_them(visitor, idp, conn):
    idp.omit_claims("google", ["name", "email"])
    visitor.sign_in("google", "g-1002")
    assert conn.one("SELECT display_name, email FROM users") == {"display_name": "Ben Carter",
                                                                 "email": "ben@example.com"}


def test_a_signed_in_user_links_the_other_provider(visitor, signin_app, conn):
    visitor.sign_in("google", "g-1001")
    page = visitor.client.get("/account")
    assert "/auth/microsoft/start?link=1" in page.text
    response = visitor.sign_in("microsoft", "m-2001", "?link=1&next=/account")
    assert response.status_code == 303
    assert conn.scalar("SELECT COUNT(*) AS n FROM users") == 1
    assert {r["provider"] for r in conn.all("SELECT provider FROM identities")} == {"google", "microsoft"}
    assert "/auth/microsoft/start?link=1" not in visitor.client.get("/account").text
    other = Visitor(signin_app)
    other.sign_in("microsoft", "m-2001")
    assert conn.scalar("SELECT COUNT(*) AS n FROM users") == 1


def test_an_account_of_another_user_cannot_be_linked(visitor, signin_app, conn):
    Visitor(signin_app).sign_in("microsoft", "m-2002")
    visitor.sign_in("google", "g-1001")
    english(visitor)
    response = visitor.sign_in("microsoft", "m-2002", "?link=1")
    assert response.status_code == 409 and "already in use" in response.text
    assert conn.scalar("SELECT COUNT(*) AS n FROM identities WHERE provider = 'microsoft'") == 1


def test_sign_in_over_real_http_for_both_providers(serve, idp, conn):
    base, _app = serve(**idp_settings(idp))
    register_clients(idp, base)
    for provider, account, name in (("google", "g-1002", "Ben Carter"), ("microsoft", "m-2002", "Chloé Dubois")):
        with requests.Session() as browser:
            answer = browser.get(f"{base}/auth/{provider}/start", allow_redirects=False, timeout=10)
            assert answer.status_code == 302
            parts = urlsplit(answer.headers["Location"])
            params = {k: v[0] for k, v in parse_qs(parts.query).items()}
            assert params["code_challenge_method"] == "S256" and len(params["state"]) >= 43
            assert params["scope"] == "openid email profile"
            assert "access_type" not in params and "prompt" not in params
            chosen = browser.post(f"{parts.scheme}://{parts.netloc}{parts.path}", data=dict(params, account=account),
                                  allow_redirects=True, timeout=10)
            assert chosen.status_code == 200 and chosen.url == f"{base}/account"
            assert name in chosen.text
            assert browser.get(f"{base}/login", allow_redirects=False, timeout=10).status_code == 303
    assert signed_in_sessions(conn) == 2


def test_sign_in_rotates_the_session_id(visitor, conn, signin_app):
    authorize = visitor.start("google")
    before = visitor.cookie()
    assert before
    response = visitor.callback(visitor.choose(authorize, "g-1001"))
    after = visitor.cookie()
    assert response.status_code == 303 and after and after != before
    # The pre-login id is dead: a browser holding it is not signed in, and its row is gone.
    old = BufferedClient(signin_app)
    old.set_cookie(sessions.cookie_name(signin_app.settings), before)
    assert old.get("/account").status_code == 303
    assert db.session_get_with_user(conn, sessions.session_id(signin_app.settings, before)) is None


def test_secrets_tokens_and_codes_stay_out_of_the_logs(visitor, idp, caplog):
    with caplog.at_level(logging.DEBUG):
        authorize = visitor.start("google")
        returned = visitor.choose(authorize, "g-1001")
        visitor.callback(returned)
        english(visitor).callback(returned)  # a replay, logged as a refusal
    assert "stopped (expired)" in caplog.text
    for secret in (IDP_CLIENTS["google"][1], returned[1]["code"], authorize[1]["state"], authorize[1]["nonce"]):
        assert secret not in caplog.text


# --- refusals: each leaves nobody signed in ----------------------------------------------------------

def test_refused_when_the_state_is_missing(visitor, conn):
    path, query = visitor.choose(visitor.start("google"), "g-1001")
    query.pop("state")
    assert_refused(english(visitor).callback((path, query)), visitor, conn, text="expired")


def test_refused_when_the_state_is_wrong(visitor, conn):
    path, query = visitor.choose(visitor.start("google"), "g-1001")
    query["state"] = query["state"][:-4] + "AAAA"
    assert_refused(english(visitor).callback((path, query)), visitor, conn, text="expired")


def test_refused_when_the_state_is_reused(visitor, conn):
    returned = visitor.choose(visitor.start("google"), "g-1001")
    assert visitor.callback(returned).status_code == 303
    session = sessions.load(conn, visitor.app.settings, visitor.cookie(), web.now())
    visitor.client.post("/logout", data={"csrf_token": session.csrf_token})
    assert signed_in_sessions(conn) == 0
    assert_refused(visitor.callback(returned), visitor, conn)


def test_refused_when_the_state_has_expired(visitor, conn):
    authorize = visitor.start("google")
    conn.execute("UPDATE auth_flows SET expires_at = ?", (int(time.time()) - 1,))
    assert_refused(visitor.callback(visitor.choose(authorize, "g-1001")), visitor, conn)


def test_refused_when_the_code_is_reused(visitor, signin_app, conn):
    first = visitor.choose(visitor.start("google"), "g-1001")
    assert visitor.callback(first).status_code == 303
    session = sessions.load(conn, signin_app.settings, visitor.cookie(), web.now())
    visitor.client.post("/logout", data={"csrf_token": session.csrf_token})
    second_path, second = visitor.choose(visitor.start("google"), "g-1001")
    second["code"] = first[1]["code"]  # a fresh state, but the code was already redeemed
    assert_refused(english(visitor).callback((second_path, second)), visitor, conn, text="refused")


def test_refused_with_a_wrong_pkce_verifier(visitor, conn):
    authorize = visitor.start("google")
    conn.execute("UPDATE auth_flows SET code_verifier = ?", ("x" * 64,))
    assert_refused(visitor.callback(visitor.choose(authorize, "g-1001")), visitor, conn)


def test_refused_when_the_nonce_does_not_match(visitor, idp, conn):
    idp.tamper("google", nonce="another-sign-in")
    assert_refused(english(visitor).sign_in("google", "g-1001"), visitor, conn, text="could not be verified")


def test_refused_when_a_google_issuer_comes_back_at_the_microsoft_callback(visitor, idp, conn):
    idp.tamper("microsoft", iss=idp.issuer("google"))
    assert_refused(visitor.sign_in("microsoft", "m-2001"), visitor, conn)


def test_refused_when_a_google_code_is_presented_at_the_microsoft_callback(visitor, conn):
    _google_path, google = visitor.choose(visitor.start("google"), "g-1001")
    microsoft_path, microsoft = visitor.choose(visitor.start("microsoft"), "m-2001")
    microsoft["code"] = google["code"]
    assert_refused(visitor.callback((microsoft_path, microsoft)), visitor, conn)
    # ... and the Google state does not open the Microsoft callback either.
    assert_refused(visitor.callback((microsoft_path, google)), visitor, conn)


def test_refused_when_the_audience_is_another_client(visitor, idp, conn):
    idp.tamper("google", aud="someone-elses-client")
    assert_refused(visitor.sign_in("google", "g-1001"), visitor, conn)


@pytest.mark.parametrize("provider, account", [("google", "g-1001"), ("microsoft", "m-2001")])
def test_refused_when_the_audience_lists_an_untrusted_client(visitor, idp, conn, provider, account):
    # OIDC Core 3.1.3.7 step 3: an extra audience we do not trust refuses the token, even with azp ours.
    client_id = IDP_CLIENTS[provider][0]
    idp.tamper(provider, aud=[client_id, "someone-elses-client"], azp=client_id)
    assert_refused(english(visitor).sign_in(provider, account), visitor, conn, text="could not be verified")
    assert conn.scalar("SELECT COUNT(*) AS n FROM users") == 0


@pytest.mark.parametrize("aud, azp, accepted", [
    ("cid", None, True), (["cid"], None, True), (["cid"], "cid", True), (["cid", "cid"], "cid", True),
    (["cid", "other"], "cid", False), (["other", "cid"], "cid", False), (["cid", "cid"], None, False),
    ([], "cid", False), ("other", "cid", False), (None, "cid", False), ([["cid"]], "cid", False),
    ("cid", "other", False), (["cid"], "other", False),
])
def test_the_audience_is_our_client_and_nobody_else(aud, azp, accepted):
    provider = Provider(name="google", label="Google", client_id="cid", client_secret="s",
                        issuers=("https://accounts.google.com",), authorize_url="https://a.example/authorize",
                        token_url="https://a.example/token", userinfo_url="https://a.example/userinfo")
    now = int(time.time())
    claims = {"iss": "https://accounts.google.com", "aud": aud, "sub": "1", "nonce": "n", "iat": now, "exp": now + 60}
    if azp is not None:
        claims["azp"] = azp
    if accepted:
        oauth.check_claims(provider, claims, "n", now)
    else:
        with pytest.raises(oauth.InvalidIdToken):
            oauth.check_claims(provider, claims, "n", now)


@pytest.mark.parametrize("provider, account", [("google", "g-1002"), ("microsoft", "m-2002")])
@pytest.mark.parametrize("sub", [None, "somebody-else"], ids=["no-sub", "another-sub"])
def test_refused_when_userinfo_does_not_carry_the_id_tokens_subject(visitor, idp, conn, provider, account, sub):
    # OIDC Core 5.3.2: a userinfo answer whose sub is missing or differs must not be used at all.
    idp.omit_claims(provider, ["name", "email", "preferred_username"])
    idp.tamper_userinfo(provider, sub=sub, name="Mallory", email="mallory@example.com")
    assert_refused(english(visitor).sign_in(provider, account), visitor, conn, text="could not be verified")
    assert conn.scalar("SELECT COUNT(*) AS n FROM users") == 0
    assert conn.scalar("SELECT COUNT(*) AS n FROM identities") == 0


def test_a_userinfo_without_subject_changes_no_existing_account(visitor, signin_app, idp, conn):
    visitor.sign_in("google", "g-1002")
    before = conn.one("SELECT id, display_name, email FROM users")
    session = sessions.load(conn, signin_app.settings, visitor.cookie(), web.now())
    visitor.client.post("/logout", data={"csrf_token": session.csrf_token})
    idp.omit_claims("google", ["name", "email"])
    idp.tamper_userinfo("google", sub=None, name="Mallory", email="mallory@example.com")
    again = english(Visitor(signin_app))
    assert_refused(again.sign_in("google", "g-1002"), again, conn, text="could not be verified")
    assert conn.one("SELECT id, display_name, email FROM users") == before
    assert conn.one("SELECT email, display_name FROM identities") == {"email": "ben@example.com",
                                                                     "display_name": "Ben Carter"}


@pytest.mark.parametrize("provider, account, iss", [
    ("google", "g-1001", "https://evil.example"),
    ("google", "g-1001", "accounts.google.com.evil.example"),
    ("microsoft", "m-2001", "google"),  # a Google response arriving at the Microsoft callback (mix-up)
])
def test_refused_when_the_authorization_response_names_another_issuer(visitor, idp, conn, caplog, provider,
                                                                       account, iss):
    # RFC 9207: a present iss must be the provider's issuer, or the code is never exchanged.
    idp.tamper_response(provider, iss=idp.issuer("google") if iss == "google" else iss)
    returned = visitor.choose(visitor.start(provider), account)
    with caplog.at_level(logging.INFO):
        response = english(visitor).callback(returned)
    assert_refused(response, visitor, conn, text="could not be verified")
    assert idp._codes[returned[1]["code"]].used is False  # refused before the token endpoint
    assert "stopped (invalid_token)" in caplog.text and returned[1]["code"] not in caplog.text
    assert conn.scalar("SELECT COUNT(*) AS n FROM users") == 0


@pytest.mark.parametrize("issuers, values, accepted", [
    (("https://accounts.google.com", "accounts.google.com"), [], True),
    (("https://accounts.google.com", "accounts.google.com"), ["https://accounts.google.com"], True),
    (("https://accounts.google.com", "accounts.google.com"), ["https://accounts.google.com/"], False),
    (("https://accounts.google.com", "accounts.google.com"), ["https://accounts.google.com"] * 2, False),
    (("https://accounts.google.com", "accounts.google.com"), [""], False),
    (("https://login.microsoftonline.com/9188040d-6c67-4c5b-b112-36a304b66dad/v2.0",),
     ["https://login.microsoftonline.com/9188040d-6c67-4c5b-b112-36a304b66dad/v2.0"], True),
    (("https://login.microsoftonline.com/9188040d-6c67-4c5b-b112-36a304b66dad/v2.0",),
     ["https://login.microsoftonline.com/72f988bf-86f1-41af-91ab-2d7cd011db47/v2.0"], False),
    (("https://login.microsoftonline.com/{tenantid}/v2.0",),
     ["https://login.microsoftonline.com/72f988bf-86f1-41af-91ab-2d7cd011db47/v2.0"], True),
    (("https://login.microsoftonline.com/{tenantid}/v2.0",), ["https://login.microsoftonline.com//v2.0"], False),
    (("https://login.microsoftonline.com/{tenantid}/v2.0",), ["https://login.microsoftonline.com/a/b/v2.0"], False),
    (("https://login.microsoftonline.com/{tenantid}/v2.0",), ["https://accounts.google.com"], False),
])
def test_the_authorization_response_issuer_check(issuers, values, accepted):
    provider = Provider(name="p", label="P", client_id="cid", client_secret="s", issuers=issuers,
                        authorize_url="https://a.example/authorize", token_url="https://a.example/token",
                        userinfo_url="https://a.example/userinfo")
    if accepted:
        oauth.check_response_issuer(provider, values)
    else:
        with pytest.raises(oauth.SignInError) as refused:
            oauth.check_response_issuer(provider, values)
        assert refused.value.code == "invalid_token"


def test_refused_when_the_authorization_response_carries_two_issuers(visitor, idp, conn):
    path, query = visitor.choose(visitor.start("google"), "g-1001")
    response = english(visitor).client.get(f"{path}?{urlencode(query)}&{urlencode({'iss': 'https://evil.example'})}")
    assert_refused(response, visitor, conn, text="could not be verified")


def test_an_authorization_response_issuer_is_refused_on_the_error_path_too(visitor, idp, conn):
    idp.tamper_response("google", iss="https://evil.example")
    response = english(visitor).callback(visitor.choose(visitor.start("google"), cancel=True))
    assert_refused(response, visitor, conn, text="could not be verified")


@pytest.mark.parametrize("provider, account, iss", [
    ("google", "g-1001", None),  # absent iss stays accepted
    ("microsoft", "m-2001", "microsoft"),  # Microsoft sends none today; its own issuer is fine
])
def test_an_authorization_response_with_the_right_or_no_issuer_is_accepted(visitor, idp, conn, provider, account,
                                                                            iss):
    idp.tamper_response(provider, iss=idp.issuer(provider) if iss else None)
    returned = visitor.choose(visitor.start(provider), account)
    assert ("iss" in returned[1]) == bool(iss)
    assert visitor.callback(returned).status_code == 303
    assert signed_in_sessions(conn) == 1


def test_refused_when_the_id_token_has_expired(visitor, idp, conn):
    now = int(time.time())
    idp.tamper("google", iat=now - 7200, exp=now - 3600)
    assert_refused(visitor.sign_in("google", "g-1001"), visitor, conn)


def test_refused_when_the_id_token_is_issued_in_the_future(visitor, idp, conn):
    now = int(time.time())
    idp.tamper("microsoft", iat=now + 3600, exp=now + 7200)
    assert_refused(visitor.sign_in("microsoft", "m-2001"), visitor, conn)


def test_refused_when_the_id_token_has_no_subject(visitor, idp, conn):
    idp.tamper("google", sub=None)
    assert_refused(visitor.sign_in("google", "g-1001"), visitor, conn)


def test_cancel_at_the_provider_shows_a_clear_page(visitor, conn):
    response = english(visitor).callback(visitor.choose(visitor.start("google"), cancel=True))
    assert_refused(response, visitor, conn, text="Sign-in cancelled")
    spanish = Visitor(visitor.app)
    response = spanish.callback(spanish.choose(spanish.start("microsoft"), cancel=True))
    assert_refused(response, spanish, conn, text="Inicio de sesión cancelado")


def test_other_provider_errors_are_refused(visitor, conn):
    path, query = visitor.choose(visitor.start("google"), "g-1001")
    query.pop("code")
    query["error"] = "server_error"
    assert_refused(english(visitor).callback((path, query)), visitor, conn, text="reported a problem")


def test_sign_in_csrf_a_callback_for_a_flow_this_browser_did_not_start(signin_app, conn):
    attacker, victim = Visitor(signin_app), Visitor(signin_app)
    planted = attacker.choose(attacker.start("google"), "g-1002")
    victim.start("google")  # the victim even has a flow of its own
    assert_refused(victim.callback(planted), victim, conn)
    fresh = Visitor(signin_app)  # and a browser with no session at all
    assert_refused(fresh.callback(planted), fresh, conn)


def test_a_wrong_client_secret_is_refused_by_the_provider(make_app, database, idp, conn):
    app = make_app(**idp_settings(idp, GOOGLE_CLIENT_SECRET="not-the-secret"))
    register_clients(idp, app.settings.public_base_url)
    visitor = english(Visitor(app))
    assert_refused(visitor.sign_in("google", "g-1001"), visitor, conn, text="refused")


def test_a_provider_that_is_down_gets_a_503_page(visitor, idp, conn):
    idp.fail_token_endpoint("google", status=503)
    assert_refused(english(visitor).sign_in("google", "g-1001"), visitor, conn, status=503,
                   text="not answering")


def test_an_unreachable_token_endpoint_gets_a_503_page(make_app, database, idp, conn):
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        dead = probe.getsockname()[1]
    app = make_app(**idp_settings(idp, GOOGLE_TOKEN_URL=f"http://127.0.0.1:{dead}/token"))
    register_clients(idp, app.settings.public_base_url)
    visitor = Visitor(app)
    assert_refused(visitor.sign_in("google", "g-1001"), visitor, conn, status=503)


def test_next_accepts_only_same_site_paths(visitor, conn):
    for target in ("https://evil.example.com/", "//evil.example.com/x", "/\\evil.example.com"):
        fresh = Visitor(visitor.app)
        response = fresh.sign_in("google", "g-1001", "?" + urlencode({"next": target}))
        assert response.headers["Location"] == f"{BASE}/account", target
    fresh = Visitor(visitor.app)
    response = fresh.sign_in("google", "g-1001", "?next=/privacy")
    assert response.headers["Location"] == f"{BASE}/privacy"


def test_logout_by_get_only_shows_the_sign_out_page(visitor, conn):
    visitor.sign_in("google", "g-1001")
    page = visitor.client.get("/logout")
    assert page.status_code == 200 and 'method="post" action="/logout"' in page.text
    assert 'id="signout-remove"' in page.text and 'data-library-key="' in page.text
    assert visitor.is_signed_in() and signed_in_sessions(conn) == 1


def test_the_sign_out_page_sends_a_signed_out_visitor_home(visitor):
    response = visitor.client.get("/logout")
    assert response.status_code == 303 and response.headers["Location"] == f"{BASE}/"


def test_logout_without_the_csrf_token_is_refused(visitor, conn):
    visitor.sign_in("google", "g-1001")
    assert visitor.client.post("/logout").status_code == 403
    assert visitor.client.post("/logout", data={"csrf_token": "forged"}).status_code == 403
    assert visitor.is_signed_in() and signed_in_sessions(conn) == 1


def test_logout_with_the_token_ends_the_session(visitor, conn):
    visitor.sign_in("google", "g-1001")
    session = sessions.load(conn, visitor.app.settings, visitor.cookie(), web.now())
    response = visitor.client.post("/logout", data={"csrf_token": session.csrf_token})
    assert response.status_code == 303 and response.headers["Location"] == f"{BASE}/"
    assert "Max-Age=0" in response.headers["Set-Cookie"]
    assert signed_in_sessions(conn) == 0 and not visitor.is_signed_in()


def test_starts_are_throttled_per_address(make_app, database, idp, conn):
    app = make_app(**idp_settings(idp, AUTH_STARTS_PER_IP="3"))
    visitor = english(Visitor(app))
    for _ in range(3):
        assert visitor.client.get("/auth/google/start").status_code == 302
    response = visitor.client.get("/auth/google/start")
    assert response.status_code == 429 and "Too many sign-in attempts" in response.text
    other = Visitor(app)
    assert other.client.get("/auth/google/start", environ_base={"REMOTE_ADDR": "10.9.8.7"}).status_code == 302


def test_flows_per_session_are_capped(visitor, conn):
    for _ in range(8):
        visitor.start("google")
    assert conn.scalar("SELECT COUNT(*) AS n FROM auth_flows") == 5


def test_unknown_or_unconfigured_providers_are_404(visitor, make_app, database):
    assert visitor.client.get("/auth/yahoo/start").status_code == 404
    assert visitor.client.get("/auth/yahoo/callback?code=x&state=y").status_code == 404
    bare = BufferedClient(make_app())
    assert bare.get("/auth/google/start").status_code == 404
    assert "Continue with Google" not in bare.get("/login", headers={"Accept-Language": "en"}).text


def test_the_login_page_offers_each_configured_provider(visitor, make_app, idp, database):
    page = english(visitor).client.get("/login?next=/privacy")
    assert "Continue with Google" in page.text and "Continue with Microsoft" in page.text
    assert 'href="/auth/google/start?next=/privacy"' in page.text
    only_microsoft = make_app(**{k: v for k, v in idp_settings(idp).items() if not k.startswith("GOOGLE")})
    text = BufferedClient(only_microsoft).get("/login").text
    assert "Continuar con Microsoft" in text and "Continuar con Google" not in text


def test_the_account_page_needs_a_signed_in_user(visitor):
    response = visitor.client.get("/account")
    assert response.status_code == 303 and response.headers["Location"] == f"{BASE}/login?next=/account"
