"""Whether the provider vouched for a sign-in's email (identities.email_verified), set at every sign-in, on both
engines: through the real sign-in flow, the identity stand-in over HTTP playing Google and Microsoft personal accounts.

Google: `email_verified` true (JSON true or "true"), from the ID token or else userinfo. Microsoft: only a personal
account (the consumers tenant) whose ID token carries the optional claim `xms_edov` = true (services/oauth.py).
"""

from __future__ import annotations

import pytest

from services import db, oauth
from services.config import MICROSOFT_CONSUMERS_TENANT_ID
from tests.visitors import Visitor

WORK_TENANT = "72f988bf-86f1-41af-91ab-2d7cd011db47"


@pytest.fixture
def idp():
    """The stand-in with an app registration at Microsoft that asks for xms_edov, and accounts of each kind."""
    from tools.fake_idp import FakeIdP

    server = FakeIdP()
    server.add_realm("google", style="google")
    server.add_realm("microsoft", style="microsoft", optional_claims=("xms_edov",))
    server.add_account("google", sub="g-1001", name="Ana García", email="Ana.Garcia@Example.com")
    server.add_account("google", sub="g-1002", name="Ben Carter", email="ben@example.com", email_verified=False)
    server.add_account("google", sub="g-1003", name="Dee Ito", email="dee@example.com",
                       claims={"email_verified": "true"})  # the string, as Google's older endpoints send it
    server.add_account("microsoft", sub="m-2001", name="Ana García", email="ana.garcia@example.com")
    server.add_account("microsoft", sub="m-2002", name="Chloé Dubois", email="chloe@outlook.com",
                       email_verified=False)
    server.start()
    yield server
    server.stop()


@pytest.fixture
def visitor(signin_app):
    return Visitor(signin_app)


def sign_in(app, provider: str, account: str, query: str = "", visitor: Visitor | None = None) -> Visitor:
    person = visitor or Visitor(app)
    response = person.sign_in(provider, account, query)
    assert response.status_code == 303, response.text
    return person


def flag(conn, subject: str) -> int:
    return conn.scalar("SELECT email_verified FROM identities WHERE subject = ?", (subject,))


def user_of(conn, subject: str) -> int:
    return conn.scalar("SELECT user_id FROM identities WHERE subject = ?", (subject,))


# --- Google ------------------------------------------------------------------------------------------------------

def test_a_google_email_google_verified_is_flagged(signin_app, conn):
    sign_in(signin_app, "google", "g-1001")
    assert flag(conn, "g-1001") == 1
    assert db.user_verified_emails(conn, user_of(conn, "g-1001")) == ["ana.garcia@example.com"]


def test_a_google_email_not_verified_is_not(signin_app, conn):
    sign_in(signin_app, "google", "g-1002")
    assert flag(conn, "g-1002") == 0
    assert conn.scalar("SELECT email FROM identities WHERE subject = 'g-1002'") == "ben@example.com"
    assert db.user_verified_emails(conn, user_of(conn, "g-1002")) == []


def test_googles_true_as_a_string_counts_and_false_as_a_string_does_not(signin_app, conn, idp):
    sign_in(signin_app, "google", "g-1003")
    assert flag(conn, "g-1003") == 1
    idp.tamper("google", email_verified="false")
    sign_in(signin_app, "google", "g-1003")
    assert flag(conn, "g-1003") == 0


def test_an_email_from_userinfo_is_verified_by_userinfos_own_flag(signin_app, conn, idp):
    idp.omit_claims("google", ["email", "email_verified"])  # the app must ask userinfo
    sign_in(signin_app, "google", "g-1001")
    sign_in(signin_app, "google", "g-1002")
    assert (flag(conn, "g-1001"), flag(conn, "g-1002")) == (1, 0)
    idp.tamper_userinfo("google", email_verified=False)
    sign_in(signin_app, "google", "g-1001")
    assert flag(conn, "g-1001") == 0


# --- Microsoft personal accounts -------------------------------------------------------------------------------

def test_a_microsoft_personal_account_with_xms_edov_true_is_flagged(signin_app, conn):
    sign_in(signin_app, "microsoft", "m-2001")
    assert flag(conn, "m-2001") == 1
    assert db.user_verified_emails(conn, user_of(conn, "m-2001")) == ["ana.garcia@example.com"]


def test_a_microsoft_account_with_xms_edov_false_is_not(signin_app, conn):
    sign_in(signin_app, "microsoft", "m-2002")
    assert flag(conn, "m-2002") == 0


def test_without_the_optional_claim_or_outside_the_consumers_tenant_microsoft_vouches_for_nothing(
        signin_app, conn, idp):
    idp.tamper("microsoft", xms_edov=None)  # an app registration that does not ask for xms_edov
    sign_in(signin_app, "microsoft", "m-2001")
    assert flag(conn, "m-2001") == 0
    idp.tamper("microsoft", tid=WORK_TENANT)  # xms_edov true, but a work or school tenant's
    sign_in(signin_app, "microsoft", "m-2001")
    assert flag(conn, "m-2001") == 0
    idp.tamper("microsoft", xms_edov="true")  # the string counts as for Google
    sign_in(signin_app, "microsoft", "m-2001")
    assert flag(conn, "m-2001") == 1


def test_a_microsoft_email_taken_from_elsewhere_is_never_verified(signin_app, conn, idp):
    idp.omit_claims("microsoft", ["email"])  # no email claim: no xms_edov either; userinfo's email is used
    sign_in(signin_app, "microsoft", "m-2001")
    assert conn.scalar("SELECT email FROM identities WHERE subject = 'm-2001'") == "ana.garcia@example.com"
    assert flag(conn, "m-2001") == 0


def test_xms_edov_is_microsofts_alone_and_must_be_true(idp):
    with pytest.raises(ValueError, match="no optional claim"):
        idp.add_realm("google2", style="google", optional_claims=("xms_edov",))
    claims = {"iss": "x", "tid": MICROSOFT_CONSUMERS_TENANT_ID, "email": "a@b.example", "xms_edov": True}
    assert oauth.id_token_email_verified("microsoft", claims)
    assert not oauth.id_token_email_verified("microsoft", dict(claims, xms_edov=1))
    assert not oauth.id_token_email_verified("microsoft", dict(claims, email_verified=True, xms_edov=None))
    assert not oauth.id_token_email_verified("other", dict(claims, email_verified=True))


# --- every sign-in sets it again --------------------------------------------------------------------------------

@pytest.mark.parametrize("provider, account, claim", [("google", "g-1001", "email_verified"),
                                                      ("microsoft", "m-2001", "xms_edov")])
def test_the_flag_follows_each_later_sign_in(signin_app, conn, idp, provider, account, claim):
    sign_in(signin_app, provider, account)
    assert flag(conn, account) == 1
    idp.tamper(provider, **{claim: False})  # the provider stops vouching
    sign_in(signin_app, provider, account)
    assert flag(conn, account) == 0
    assert db.user_verified_emails(conn, user_of(conn, account)) == []
    sign_in(signin_app, provider, account)  # and vouches again
    assert flag(conn, account) == 1
    assert conn.scalar("SELECT COUNT(*) AS n FROM identities") == 1


def test_a_users_verified_emails_are_lowercased_distinct_and_only_verified(signin_app, conn, idp):
    ana = sign_in(signin_app, "google", "g-1001")  # Ana.Garcia@Example.com, verified
    sign_in(signin_app, "microsoft", "m-2001", "?link=1", visitor=ana)  # ana.garcia@example.com, verified
    user = user_of(conn, "g-1001")
    assert user_of(conn, "m-2001") == user
    assert db.user_verified_emails(conn, user) == ["ana.garcia@example.com"]
    idp.tamper("microsoft", email="other@example.com", xms_edov=False)
    sign_in(signin_app, "microsoft", "m-2001", "?link=1", visitor=ana)
    assert db.user_verified_emails(conn, user) == ["ana.garcia@example.com"]
    idp.tamper("microsoft", email="Second@Example.com")
    sign_in(signin_app, "microsoft", "m-2001", "?link=1", visitor=ana)
    assert db.user_verified_emails(conn, user) == ["ana.garcia@example.com", "second@example.com"]
    assert db.user_verified_emails(conn, user_of(conn, "g-1001") + 1000) == []
