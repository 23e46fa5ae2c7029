"""The identity-provider stand-in (tools/fake_idp.py) over real HTTP: it refuses what Google and Microsoft refuse."""

from __future__ import annotations

import base64
import hashlib
import json
import logging
import re
import secrets
import sys
import time
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import pytest
import requests

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from tools.fake_idp import (  # noqa: E402
    MSA_ISSUER,
    MSA_TENANT_ID,
    FakeIdP,
    build_from_args,
    decode_jwt_payload,
    parse_args,
)

GOOGLE_CB = "http://127.0.0.1:5000/auth/google/callback"
MS_CB = "http://127.0.0.1:5000/auth/microsoft/callback"
CLIENTS = {"google": ("gid", "gsecret", GOOGLE_CB), "microsoft": ("mid", "msecret", MS_CB)}


class Clock:
    def __init__(self):
        self.now = 1_700_000_000.0

    def __call__(self):
        return self.now


@pytest.fixture
def clock():
    return Clock()


@pytest.fixture
def idp(clock):
    server = FakeIdP(port=0, code_ttl=60, token_ttl=3600, clock=clock)
    server.add_realm("google", style="google")
    server.add_realm("microsoft", style="microsoft")
    for realm, (cid, secret, cb) in CLIENTS.items():
        server.add_client(realm, client_id=cid, client_secret=secret, redirect_uris=[cb])
    server.with_demo_accounts()
    server.start()
    yield server
    server.stop()


@pytest.fixture
def http():
    with requests.Session() as session:
        yield session


def pkce():
    verifier = secrets.token_urlsafe(48)
    challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()
    return verifier, challenge


def auth_params(realm, challenge, **overrides):
    cid, _, cb = CLIENTS[realm]
    params = {"client_id": cid, "redirect_uri": cb, "response_type": "code", "scope": "openid email profile",
              "state": "st-" + realm, "nonce": "n-" + realm, "code_challenge": challenge,
              "code_challenge_method": "S256"}
    params.update(overrides)
    return {k: v for k, v in params.items() if v is not None}


def query_of(location):
    return {k: v[0] for k, v in parse_qs(urlsplit(location).query).items()}


class FormParser(HTMLParser):
    """Collects each form's hidden inputs and its buttons."""

    def __init__(self):
        super().__init__()
        self.forms = []

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag == "form":
            self.forms.append({"action": a.get("action"), "hidden": {}, "buttons": []})
        elif tag == "input" and a.get("type") == "hidden" and self.forms:
            self.forms[-1]["hidden"][a["name"]] = a.get("value", "")
        elif tag == "button" and self.forms:
            self.forms[-1]["buttons"].append(a)


def forms_of(page):
    parser = FormParser()
    parser.feed(page)
    return parser.forms


def sign_in(http, idp, realm, sub="10001", **overrides):
    """Authorize as `sub` the way a browser would: GET the chooser, POST its form. Returns (verifier, query)."""
    verifier, challenge = pkce()
    params = auth_params(realm, challenge, **overrides)
    with http.get(f"{idp.realm_url(realm)}/authorize", params=params, allow_redirects=False) as r:
        assert r.status_code == 200, r.text
        forms = forms_of(r.text)
    form = next(f for f in forms if any(b.get("data-sub") == sub for b in f["buttons"]))
    data = dict(form["hidden"], account=sub)
    with http.post(idp.base_url + form["action"], data=data, allow_redirects=False) as r:
        assert r.status_code == 302, r.text
        location = r.headers["Location"]
    return verifier, query_of(location)


def redeem(http, idp, realm, code, verifier, basic=False, **overrides):
    cid, secret, cb = CLIENTS[realm]
    data = {"grant_type": "authorization_code", "code": code, "redirect_uri": cb, "code_verifier": verifier}
    auth = None
    if basic:
        auth = (cid, secret)
    else:
        data.update(client_id=cid, client_secret=secret)
    data.update(overrides)
    data = {k: v for k, v in data.items() if v is not None}
    with http.post(f"{idp.realm_url(realm)}/token", data=data, auth=auth) as r:
        return r.status_code, r.json(), r.headers


def assert_aadsts(body, code, error):
    assert body["error"] == error
    assert body["error_description"].startswith(f"AADSTS{code}:")
    assert body["error_codes"] == [code]
    assert re.fullmatch(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\dZ", body["timestamp"])
    assert body["trace_id"] and body["correlation_id"]


@pytest.mark.parametrize("realm", ["google", "microsoft"])
def test_discovery_lists_the_endpoints(idp, http, realm):
    with http.get(f"{idp.realm_url(realm)}/.well-known/openid-configuration") as r:
        assert r.status_code == 200
        doc = r.json()
    assert doc["issuer"] == f"{idp.base_url}/{realm}"
    for key, url in idp.endpoints(realm).items():
        assert doc[key] == url
    assert doc["response_types_supported"] == ["code"]
    assert "S256" in doc["code_challenge_methods_supported"]
    assert set(doc["token_endpoint_auth_methods_supported"]) >= {"client_secret_post", "client_secret_basic"}
    assert doc["subject_types_supported"] and doc["id_token_signing_alg_values_supported"] == ["HS256"]
    assert "openid" in doc["scopes_supported"] and "sub" in doc["claims_supported"]
    with http.get(doc["jwks_uri"]) as r:
        assert r.json() == {"keys": []}


def test_server_binds_loopback_only():
    with pytest.raises(ValueError):
        FakeIdP(host="0.0.0.0")


def test_unknown_path_is_404_json(idp, http):
    with http.get(f"{idp.base_url}/nowhere") as r:
        assert r.status_code == 404 and r.headers["Content-Type"].startswith("application/json")
    with http.get(f"{idp.realm_url('google')}/nothing") as r:
        assert r.status_code == 404 and r.json()["error"] == "not_found"


@pytest.mark.parametrize("realm,heading", [("google", "Google (stand-in)"), ("microsoft", "Microsoft (stand-in)")])
def test_authorize_shows_the_account_chooser(idp, http, realm, heading):
    idp.add_account(realm, sub="x<1>", name="Eve <script>", email="eve@example.com")
    _, challenge = pkce()
    params = auth_params(realm, challenge, state='s"&<x>')
    with http.get(f"{idp.realm_url(realm)}/authorize", params=params) as r:
        assert r.status_code == 200 and r.headers["Content-Type"].startswith("text/html")
        page = r.text
    assert heading in page
    assert "Ana García &lt;ana@example.com&gt;" in page and "Ben Carter &lt;ben@example.com&gt;" in page
    assert "<script>" not in page and "Eve &lt;script&gt;" in page
    forms = forms_of(page)
    subs = [b["data-sub"] for f in forms for b in f["buttons"] if b.get("class") == "account"]
    assert subs == ["10001", "10002", "x<1>"]
    for form in forms:
        assert form["action"] == f"/{realm}/authorize"
        assert form["hidden"] == params  # every authorize parameter survives, unescaped by the parser
    assert any(b.get("id") == "cancel" and b.get("name") == "cancel" for f in forms for b in f["buttons"])
    assert 'name="email"' in page and 'name="name"' in page


@pytest.mark.parametrize("realm,marker", [("google", "redirect_uri_mismatch"), ("microsoft", "AADSTS50011")])
def test_redirect_uri_mismatch_is_an_error_page_not_a_redirect(idp, http, realm, marker):
    _, challenge = pkce()
    evil = "https://evil.example/cb"
    for uri in (evil, CLIENTS[realm][2] + "/", CLIENTS[realm][2].upper()):
        params = auth_params(realm, challenge, redirect_uri=uri)
        with http.get(f"{idp.realm_url(realm)}/authorize", params=params, allow_redirects=False) as r:
            assert r.status_code == 400
            assert "Location" not in r.headers
            assert marker in r.text
    # the POST re-validates too
    data = dict(auth_params(realm, challenge, redirect_uri=evil), account="10001")
    with http.post(f"{idp.realm_url(realm)}/authorize", data=data, allow_redirects=False) as r:
        assert r.status_code == 400 and "Location" not in r.headers
    assert idp.issued_codes == []


@pytest.mark.parametrize("realm,marker", [("google", "invalid_client"), ("microsoft", "AADSTS700016")])
def test_unknown_client_is_an_error_page(idp, http, realm, marker):
    _, challenge = pkce()
    with http.get(f"{idp.realm_url(realm)}/authorize", params=auth_params(realm, challenge, client_id="nope"),
                  allow_redirects=False) as r:
        assert r.status_code == 400 and "Location" not in r.headers and marker in r.text


@pytest.mark.parametrize("realm", ["google", "microsoft"])
@pytest.mark.parametrize("overrides", [
    {"code_challenge": None, "code_challenge_method": None},
    {"code_challenge_method": "plain"},
    {"code_challenge_method": None},
    {"response_type": "token"},
    {"scope": "email profile"},
])
def test_bad_requests_with_a_good_redirect_uri_go_back_with_an_error(idp, http, realm, overrides):
    _, challenge = pkce()
    params = auth_params(realm, challenge, **overrides)
    with http.get(f"{idp.realm_url(realm)}/authorize", params=params, allow_redirects=False) as r:
        assert r.status_code == 302
        location = r.headers["Location"]
    assert location.startswith(CLIENTS[realm][2] + "?")
    q = query_of(location)
    assert q["state"] == f"st-{realm}"
    assert q["error"] in ("invalid_request", "unsupported_response_type", "invalid_scope")
    assert "code" not in q
    if realm == "microsoft":
        assert q["error_description"].startswith("AADSTS")


@pytest.mark.parametrize("realm", ["google", "microsoft"])
def test_choosing_an_account_redirects_with_code_and_state(idp, http, realm):
    _, q = sign_in(http, idp, realm)
    assert q["state"] == f"st-{realm}"
    assert q["code"] == idp.issued_codes[-1]
    assert len(q["code"]) >= 43
    if realm == "google":
        assert q["scope"].split()[0] == "openid" and q["iss"] == idp.issuer("google")


@pytest.mark.parametrize("realm", ["google", "microsoft"])
def test_cancel_redirects_with_access_denied(idp, http, realm):
    _, challenge = pkce()
    data = dict(auth_params(realm, challenge), cancel="1")
    with http.post(f"{idp.realm_url(realm)}/authorize", data=data, allow_redirects=False) as r:
        assert r.status_code == 302
        q = query_of(r.headers["Location"])
    assert q["error"] == "access_denied" and q["state"] == f"st-{realm}" and "code" not in q
    if realm == "microsoft":
        assert q["error_description"].startswith("AADSTS")
    assert idp.issued_codes == []


@pytest.mark.parametrize("basic", [False, True], ids=["client_secret_post", "client_secret_basic"])
def test_google_token_exchange(idp, http, clock, basic):
    verifier, q = sign_in(http, idp, "google")
    status, body, headers = redeem(http, idp, "google", q["code"], verifier, basic=basic)
    assert status == 200, body
    assert headers["Cache-Control"] == "no-store" and headers["Pragma"] == "no-cache"
    assert headers["Content-Type"] == "application/json; charset=utf-8"
    assert body["token_type"] == "Bearer" and body["expires_in"] == 3600 and body["access_token"]
    assert "openid" in body["scope"].split()
    head = body["id_token"].split(".")[0]
    assert json.loads(base64.urlsafe_b64decode(head + "=" * (-len(head) % 4))) == {"alg": "HS256", "kid": "fake",
                                                                                  "typ": "JWT"}
    claims = decode_jwt_payload(body["id_token"])
    assert claims["iss"] == f"{idp.base_url}/google"
    assert claims["aud"] == claims["azp"] == "gid"
    assert claims["sub"] == "10001" and claims["nonce"] == "n-google"
    assert claims["iat"] == int(clock.now) and claims["exp"] == claims["iat"] + 3600
    assert claims["email"] == "ana@example.com" and claims["email_verified"] is True
    assert claims["name"] == "Ana García" and claims["given_name"] == "Ana" and claims["family_name"] == "García"
    assert claims["picture"].startswith("https://")
    assert "=" not in body["id_token"]


@pytest.mark.parametrize("basic", [False, True], ids=["client_secret_post", "client_secret_basic"])
def test_microsoft_token_exchange(idp, http, clock, basic):
    verifier, q = sign_in(http, idp, "microsoft", sub="10002")
    status, body, _ = redeem(http, idp, "microsoft", q["code"], verifier, basic=basic)
    assert status == 200, body
    assert body["ext_expires_in"] == body["expires_in"] == 3600 and body["token_type"] == "Bearer"
    claims = decode_jwt_payload(body["id_token"])
    assert claims["ver"] == "2.0" and claims["iss"] == f"{idp.base_url}/microsoft"
    assert claims["aud"] == "mid" and claims["sub"] == "10002" and claims["nonce"] == "n-microsoft"
    assert claims["tid"] == MSA_TENANT_ID
    assert claims["iat"] == claims["nbf"] == int(clock.now) and claims["exp"] == claims["iat"] + 3600
    assert claims["name"] == "Ben Carter" and claims["preferred_username"] == claims["email"] == "ben@example.com"
    assert re.fullmatch(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}", claims["oid"])
    assert claims["aio"]


def test_basic_auth_credentials_are_url_decoded(http, clock):
    with FakeIdP(clock=clock) as idp:
        idp.add_realm("google")
        idp.add_client("google", "id:with space", "s3cr+t/=&", [GOOGLE_CB])
        idp.add_account("google", sub="1", name="A B", email="a@example.com")
        verifier, challenge = pkce()
        params = auth_params("google", challenge, client_id="id:with space")
        data = dict(params, account="1")
        with http.post(f"{idp.realm_url('google')}/authorize", data=data, allow_redirects=False) as r:
            code = query_of(r.headers["Location"])["code"]
        token = base64.b64encode(b"id%3Awith+space:s3cr%2Bt%2F%3D%26").decode()
        form = {"grant_type": "authorization_code", "code": code, "redirect_uri": GOOGLE_CB, "code_verifier": verifier}
        with http.post(f"{idp.realm_url('google')}/token", data=form, headers={"Authorization": f"Basic {token}"}) as r:
            assert r.status_code == 200, r.text


def test_issuer_can_be_overridden(http, clock):
    with FakeIdP(clock=clock) as idp:
        idp.add_realm("microsoft", style="microsoft", issuer=MSA_ISSUER)
        idp.add_client("microsoft", "mid", "msecret", [MS_CB])
        idp.with_demo_accounts()
        verifier, q = sign_in(http, idp, "microsoft")
        _, body, _ = redeem(http, idp, "microsoft", q["code"], verifier)
        assert decode_jwt_payload(body["id_token"])["iss"] == MSA_ISSUER
        assert idp.endpoints("microsoft")["issuer"] == MSA_ISSUER


def test_wrong_verifier_is_invalid_grant(idp, http):
    verifier, q = sign_in(http, idp, "google")
    status, body, _ = redeem(http, idp, "google", q["code"], pkce()[0])
    assert (status, body) == (400, {"error": "invalid_grant", "error_description": "Invalid code verifier."})
    status, body, _ = redeem(http, idp, "google", q["code"], None)
    assert status == 400 and body["error"] == "invalid_grant"
    verifier, q = sign_in(http, idp, "microsoft")
    status, body, _ = redeem(http, idp, "microsoft", q["code"], verifier[:-1] + ("A" if verifier[-1] != "A" else "B"))
    assert status == 400
    assert_aadsts(body, 501481, "invalid_grant")


def test_code_is_single_use(idp, http):
    verifier, q = sign_in(http, idp, "google")
    status, first, _ = redeem(http, idp, "google", q["code"], verifier)
    assert status == 200
    status, body, _ = redeem(http, idp, "google", q["code"], verifier)
    assert (status, body) == (400, {"error": "invalid_grant", "error_description": "Bad Request"})
    # the tokens from the first redemption are not revoked: the provider just refuses the second
    with http.get(f"{idp.realm_url('google')}/userinfo", headers={"Authorization": f"Bearer {first['access_token']}"}) \
            as r:
        assert r.status_code == 200
    verifier, q = sign_in(http, idp, "microsoft")
    assert redeem(http, idp, "microsoft", q["code"], verifier)[0] == 200
    status, body, _ = redeem(http, idp, "microsoft", q["code"], verifier)
    assert status == 400
    assert_aadsts(body, 54005, "invalid_grant")


def test_code_expires(idp, http, clock):
    verifier, q = sign_in(http, idp, "google")
    clock.now += 61
    status, body, _ = redeem(http, idp, "google", q["code"], verifier)
    assert (status, body["error"]) == (400, "invalid_grant")
    verifier, q = sign_in(http, idp, "microsoft")
    clock.now += 60
    status, body, _ = redeem(http, idp, "microsoft", q["code"], verifier)
    assert status == 400
    assert_aadsts(body, 70008, "invalid_grant")


def test_unknown_code_and_code_of_another_client_are_refused(idp, http):
    verifier, q = sign_in(http, idp, "google")
    status, body, _ = redeem(http, idp, "google", "4/0Anot-a-code", verifier)
    assert (status, body["error"]) == (400, "invalid_grant")
    idp.add_client("google", "other", "osecret", [GOOGLE_CB])
    with http.post(f"{idp.realm_url('google')}/token", data={
            "grant_type": "authorization_code", "code": q["code"], "redirect_uri": GOOGLE_CB,
            "code_verifier": verifier, "client_id": "other", "client_secret": "osecret"}) as r:
        assert r.status_code == 400 and r.json()["error"] == "invalid_grant"
    # nor may a Google code be redeemed at the Microsoft realm
    status, body, _ = redeem(http, idp, "microsoft", q["code"], verifier)
    assert status == 400 and body["error"] == "invalid_grant"


@pytest.mark.parametrize("realm", ["google", "microsoft"])
@pytest.mark.parametrize("basic", [False, True])
def test_wrong_secret_is_invalid_client_401(idp, http, realm, basic):
    verifier, q = sign_in(http, idp, realm)
    cid = CLIENTS[realm][0]
    auth = (cid, "wrong") if basic else None
    data = {"grant_type": "authorization_code", "code": q["code"], "redirect_uri": CLIENTS[realm][2],
            "code_verifier": verifier}
    if not basic:
        data.update(client_id=cid, client_secret="wrong")
    with http.post(f"{idp.realm_url(realm)}/token", data=data, auth=auth) as r:
        status, body = r.status_code, r.json()
    assert status == 401
    if realm == "google":
        assert body == {"error": "invalid_client", "error_description": "Unauthorized"}
    else:
        assert_aadsts(body, 7000215, "invalid_client")
        assert "msecret" not in body["error_description"]
    # a missing secret is refused too, and the code is still good afterwards
    with http.post(f"{idp.realm_url(realm)}/token", data={**data, "client_id": cid, "client_secret": ""}) as r:
        assert r.status_code == 401 and r.json()["error"] == "invalid_client"
    assert redeem(http, idp, realm, q["code"], verifier)[0] == 200


@pytest.mark.parametrize("realm", ["google", "microsoft"])
def test_redirect_uri_must_match_at_the_token_endpoint(idp, http, realm):
    verifier, q = sign_in(http, idp, realm)
    status, body, _ = redeem(http, idp, realm, q["code"], verifier, redirect_uri=CLIENTS[realm][2] + "x")
    assert status == 400
    if realm == "google":
        assert body["error"] == "redirect_uri_mismatch"
    else:
        assert_aadsts(body, 500112, "invalid_client")
    status, _, _ = redeem(http, idp, realm, q["code"], verifier, redirect_uri=None)
    assert status == 400


@pytest.mark.parametrize("realm", ["google", "microsoft"])
def test_unsupported_grant_type_and_get_on_token(idp, http, realm):
    status, body, _ = redeem(http, idp, realm, "whatever", "v" * 43, grant_type="refresh_token")
    assert (status, body["error"]) == (400, "unsupported_grant_type")
    with http.get(f"{idp.realm_url(realm)}/token") as r:
        assert r.status_code == 405 and r.headers["Allow"] == "POST"


def test_tamper_is_one_shot(idp, http):
    idp.tamper("microsoft", iss="https://accounts.google.com", tid=None)
    verifier, q = sign_in(http, idp, "microsoft")
    claims = decode_jwt_payload(redeem(http, idp, "microsoft", q["code"], verifier)[1]["id_token"])
    assert claims["iss"] == "https://accounts.google.com" and "tid" not in claims
    verifier, q = sign_in(http, idp, "microsoft")
    claims = decode_jwt_payload(redeem(http, idp, "microsoft", q["code"], verifier)[1]["id_token"])
    assert claims["iss"] == idp.issuer("microsoft") and claims["tid"] == MSA_TENANT_ID


def test_omit_claims_until_reset_and_userinfo_fills_in(idp, http):
    idp.omit_claims("google", ["name", "email"])
    for _ in range(2):
        verifier, q = sign_in(http, idp, "google")
        body = redeem(http, idp, "google", q["code"], verifier)[1]
        claims = decode_jwt_payload(body["id_token"])
        assert "name" not in claims and "email" not in claims and claims["sub"] == "10001"
    with http.get(f"{idp.realm_url('google')}/userinfo", headers={"Authorization": f"Bearer {body['access_token']}"}) \
            as r:
        assert r.status_code == 200
        info = r.json()
    assert info == {"sub": "10001", "name": "Ana García", "given_name": "Ana", "family_name": "García",
                    "picture": info["picture"], "email": "ana@example.com", "email_verified": True}
    idp.reset()
    verifier, q = sign_in(http, idp, "google")
    assert decode_jwt_payload(redeem(http, idp, "google", q["code"], verifier)[1]["id_token"])["name"] == "Ana García"


@pytest.mark.parametrize("realm", ["google", "microsoft"])
def test_authorization_response_iss_as_the_providers_send_it(idp, http, realm):
    # Google sends iss (RFC 9207) without advertising it in discovery; Microsoft's v2.0 sends none.
    _, q = sign_in(http, idp, realm)
    assert q.get("iss") == (idp.issuer("google") if realm == "google" else None)
    _, challenge = pkce()
    with http.post(f"{idp.realm_url(realm)}/authorize", data=dict(auth_params(realm, challenge), cancel="1"),
                   allow_redirects=False) as r:
        assert query_of(r.headers["Location"]).get("iss") == (idp.issuer("google") if realm == "google" else None)
    with http.get(f"{idp.realm_url(realm)}/.well-known/openid-configuration") as r:
        assert "authorization_response_iss_parameter_supported" not in r.json()


@pytest.mark.parametrize("realm", ["google", "microsoft"])
def test_tamper_response_is_one_shot(idp, http, realm):
    idp.tamper_response(realm, iss="https://evil.example", scope=None)
    _, q = sign_in(http, idp, realm)
    assert q["iss"] == "https://evil.example" and "scope" not in q and q["code"] == idp.issued_codes[-1]
    _, q = sign_in(http, idp, realm)
    assert q.get("iss") == (idp.issuer("google") if realm == "google" else None)
    idp.tamper_response(realm, iss=None)
    _, challenge = pkce()
    with http.post(f"{idp.realm_url(realm)}/authorize", data=dict(auth_params(realm, challenge), cancel="1"),
                   allow_redirects=False) as r:
        q = query_of(r.headers["Location"])
    assert q["error"] == "access_denied" and "iss" not in q  # error redirects are tampered too
    idp.tamper_response(realm, iss="https://evil.example")
    idp.reset()
    assert sign_in(http, idp, realm)[1].get("iss") != "https://evil.example"


@pytest.mark.parametrize("realm", ["google", "microsoft"])
def test_tamper_userinfo_is_one_shot(idp, http, realm):
    verifier, q = sign_in(http, idp, realm, sub="10002")
    token = redeem(http, idp, realm, q["code"], verifier)[1]["access_token"]
    url, headers = f"{idp.realm_url(realm)}/userinfo", {"Authorization": f"Bearer {token}"}
    idp.tamper_userinfo(realm, sub=None, name="Mallory")
    with http.get(url, headers=headers) as r:
        assert r.status_code == 200 and "sub" not in r.json() and r.json()["name"] == "Mallory"
    idp.tamper_userinfo(realm, sub="10001")
    with http.get(url, headers=headers) as r:
        assert r.json()["sub"] == "10001" and r.json()["name"] == "Ben Carter"
    with http.get(url, headers=headers) as r:
        assert r.json()["sub"] == "10002"
    idp.tamper_userinfo(realm, sub="10001")
    idp.reset()
    with http.get(url, headers=headers) as r:
        assert r.json()["sub"] == "10002"


@pytest.mark.parametrize("realm", ["google", "microsoft"])
def test_fail_token_endpoint_until_reset(idp, http, realm):
    verifier, q = sign_in(http, idp, realm)
    idp.fail_token_endpoint(realm, status=503)
    status, body, headers = redeem(http, idp, realm, q["code"], verifier)
    assert status == 503 and body["error"] == "temporarily_unavailable"
    assert headers["Cache-Control"] == "no-store"
    if realm == "microsoft":
        assert_aadsts(body, body["error_codes"][0], "temporarily_unavailable")
    idp.reset()
    assert redeem(http, idp, realm, q["code"], verifier)[0] == 200


@pytest.mark.parametrize("realm", ["google", "microsoft"])
def test_userinfo(idp, http, realm, clock):
    verifier, q = sign_in(http, idp, realm, sub="10002")
    token = redeem(http, idp, realm, q["code"], verifier)[1]["access_token"]
    url = f"{idp.realm_url(realm)}/userinfo"
    with http.get(url, headers={"Authorization": f"Bearer {token}"}) as r:
        assert r.status_code == 200
        info = r.json()
    assert info["sub"] == "10002" and info["email"] == "ben@example.com" and info["name"] == "Ben Carter"
    assert info["given_name"] == "Ben" and info["family_name"] == "Carter" and info["picture"]
    assert ("email_verified" in info) == (realm == "google")
    other = "microsoft" if realm == "google" else "google"
    for headers, target in [({}, url), ({"Authorization": "Bearer nope"}, url),
                            ({"Authorization": f"Bearer {token}"}, f"{idp.realm_url(other)}/userinfo")]:
        with http.get(target, headers=headers) as r:
            assert r.status_code == 401
            assert 'error="invalid_token"' in r.headers["WWW-Authenticate"]
    clock.now += 3601
    with http.get(url, headers={"Authorization": f"Bearer {token}"}) as r:
        assert r.status_code == 401


def test_use_another_account_derives_a_stable_sub(idp, http):
    subs = []
    for _ in range(2):
        verifier, challenge = pkce()
        data = dict(auth_params("google", challenge), name="Zoe New", email="zoe@example.com")
        with http.post(f"{idp.realm_url('google')}/authorize", data=data, allow_redirects=False) as r:
            assert r.status_code == 302
            q = query_of(r.headers["Location"])
        claims = decode_jwt_payload(redeem(http, idp, "google", q["code"], verifier)[1]["id_token"])
        assert claims["email"] == "zoe@example.com" and claims["name"] == "Zoe New"
        subs.append(claims["sub"])
    assert subs[0] == subs[1] and subs[0] not in ("10001", "10002")
    data = dict(auth_params("google", pkce()[1]), email="not-an-email")
    with http.post(f"{idp.realm_url('google')}/authorize", data=data, allow_redirects=False) as r:
        assert r.status_code == 400


def test_stop_returns_promptly_with_keep_alive_connections_open(clock):
    idp = FakeIdP(clock=clock).add_realm("google")
    idp.start()
    with requests.Session() as session:
        with session.get(f"{idp.realm_url('google')}/.well-known/openid-configuration") as r:
            assert r.status_code == 200
        started = time.monotonic()
        idp.stop()
        assert time.monotonic() - started < 2
    with pytest.raises(requests.ConnectionError), requests.get(idp.base_url, timeout=1):
        pass


def test_logs_never_carry_codes_tokens_or_secrets(idp, http, caplog):
    caplog.set_level(logging.DEBUG, logger="tools.fake_idp")
    verifier, q = sign_in(http, idp, "google")
    token = redeem(http, idp, "google", q["code"], verifier)[1]["access_token"]
    with http.get(f"{idp.realm_url('google')}/userinfo", headers={"Authorization": f"Bearer {token}"}) as r:
        assert r.status_code == 200
    with http.get(f"{idp.realm_url('google')}/userinfo?access_token={token}") as r:
        assert r.status_code == 401
    text = "\n".join(record.getMessage() for record in caplog.records)
    assert "POST /google/token -> 200" in text
    for secret in (q["code"], token, verifier, "gsecret", q["state"]):
        assert secret not in text


def test_command_line_configuration():
    args = parse_args(["--port", "0", "--realm", "google", "--realm", "msa:microsoft", "--issuer", f"msa={MSA_ISSUER}",
                       "--client", "google:gid:gsecret:http://127.0.0.1:8000/a/cb,http://localhost:8000/a/cb",
                       "--account", "google:10009:Dr: Who:who@example.com", "--demo-accounts"])
    idp = build_from_args(args)
    try:
        assert idp.endpoints("msa")["issuer"] == MSA_ISSUER
        assert idp.issuer("google") == f"{idp.base_url}/google"
        assert idp._realms["msa"].style == "microsoft"
        assert idp._realms["google"].clients["gid"].redirect_uris == ["http://127.0.0.1:8000/a/cb",
                                                                     "http://localhost:8000/a/cb"]
        who = idp._realms["google"].accounts["10009"]
        assert (who.name, who.email) == ("Dr: Who", "who@example.com")
        assert set(idp._realms["msa"].accounts) == {"10001", "10002"}
    finally:
        idp.stop()
