"""Signing in: starting and finishing a provider's flow, finding or creating the user, linking, throttling.

A flow's state, nonce and PKCE verifier live in `auth_flows`, bound to the visitor's
pre-login session, for ten minutes, and are deleted when the callback uses them (before the
code is exchanged, so a flow can never be used twice). Users are keyed by (provider,
issuer, subject) and never merged by email: Microsoft does not verify the email claim. Each
identity keeps whether its provider vouched for its email at the latest sign-in (email_verified).
"""

from __future__ import annotations

import hmac
import logging

from services import db, oauth
from services.config import Provider, Settings
from services.oauth import SignInError
from services.sessions import Session

log = logging.getLogger(__name__)

FLOW_SECONDS = 600
FLOWS_PER_SESSION = 5
THROTTLE_WINDOW = 600


class SignInExpired(SignInError):
    """No live flow of this browser matches the callback: missing, wrong, used or expired state."""

    code = "expired"


class SignInCancelled(SignInError):
    """The visitor cancelled at the provider."""

    code = "cancelled"


class ProviderReportedError(SignInError):
    """The provider sent the visitor back with an error other than a cancellation."""

    code = "provider_error"


class AlreadyLinked(SignInError):
    """The provider account already belongs to another user, so it cannot be linked."""

    code = "already_linked"


class TooManyStarts(SignInError):
    """Too many sign-ins started from one address in the throttling window."""

    code = "throttled"


def callback_url(settings: Settings, provider: Provider) -> str:
    """Our redirect URI at a provider (one per provider), built from the public base URL."""
    return settings.url(f"/auth/{provider.name}/callback")


def start(conn: db.Connection, settings: Settings, provider: Provider, session: Session, next_path: str,
          client_ip: str, now: int, link_user_id: int | None = None) -> str:
    """Record a new flow for this session and return the provider's authorization URL."""
    window = now - now % THROTTLE_WINDOW
    if db.rate_limit_hit(conn, f"auth-start:{client_ip}", window) > settings.auth_starts_per_ip:
        raise TooManyStarts(f"more than {settings.auth_starts_per_ip} sign-in starts from one address")
    fresh = oauth.new_secrets()
    with conn.transaction():
        db.auth_flows_trim(conn, session.id, now, keep=FLOWS_PER_SESSION - 1)
        db.auth_flow_insert(conn, session.id, provider.name, fresh["state"], fresh["nonce"], fresh["code_verifier"],
                            next_path, link_user_id, now, now + FLOW_SECONDS)
    return oauth.authorization_url(provider, callback_url(settings, provider), fresh["state"], fresh["nonce"],
                                   fresh["code_verifier"])


def _take_flow(conn: db.Connection, session: Session | None, provider: Provider, state: str | None,
               now: int) -> dict:
    """Find this browser's flow for the returned state (compared in constant time) and delete it."""
    if session is None or not state:
        raise SignInExpired("no session or no state at the callback")
    for flow in db.auth_flows_of_session(conn, session.id, provider.name, now):
        if hmac.compare_digest(flow["state"].encode(), state.encode()):
            if db.auth_flow_delete(conn, flow["id"]) != 1:
                break  # another request with the same state got there first
            return flow
    raise SignInExpired("the state matches no live flow of this session")


def finish(conn: db.Connection, settings: Settings, provider: Provider, session: Session | None,
           params: dict, now: int) -> tuple[int, str]:
    """Check the callback, exchange the code, check the ID token, and return (user id, where to go next)."""
    flow = _take_flow(conn, session, provider, params.get("state"), now)
    if params.get("error"):
        if params["error"] == "access_denied":
            raise SignInCancelled("cancelled at the provider")
        raise ProviderReportedError(f"the provider sent error={params['error'][:60]!r}")
    if not params.get("code"):
        raise ProviderReportedError("the callback carries no code")
    if flow["link_user_id"] is not None and session.user_id != flow["link_user_id"]:
        raise SignInExpired("the linking flow's user is no longer signed in")
    identity = oauth.identify(provider, callback_url(settings, provider), params["code"], flow["code_verifier"],
                              flow["nonce"], now)
    with conn.transaction():
        user_id = _user_for(conn, provider, identity, flow["link_user_id"], now)
    return user_id, flow["next_path"]


def _user_for(conn: db.Connection, provider: Provider, identity: oauth.Identity, link_user_id: int | None,
              now: int) -> int:
    """The user this identity signs in (created on first sign-in), or the linking user it is attached to."""
    found = db.identity_find(conn, provider.name, identity.issuer, identity.subject)
    if link_user_id is not None:
        if found is not None and found["user_id"] != link_user_id:
            raise AlreadyLinked("the provider account belongs to another user")
        user_id = link_user_id
    elif found is not None:
        user_id = found["user_id"]
    else:
        user_id = db.user_insert(conn, identity.name, identity.email, now)
    # Whether the provider vouches for the email is set at every sign-in: it can stop vouching (services/oauth.py).
    if found is None:
        db.identity_insert(conn, user_id, provider.name, identity.issuer, identity.subject, identity.email,
                           identity.name, now, email_verified=identity.email_verified)
    else:
        db.identity_touch(conn, found["id"], identity.email, identity.name, now,
                          email_verified=identity.email_verified)
    current = db.user_get(conn, user_id)
    db.user_update_profile(conn, user_id, identity.name or current["display_name"],
                           identity.email or current["email"], now)
    return user_id


def identities(conn: db.Connection, user_id: int) -> tuple[list[dict], int]:
    """The provider accounts a user signs in with, and how many finished batches the site keeps for them (the
    account page offers to delete them): one query."""
    return db.identities_with_history(conn, user_id)


def purge(conn: db.Connection, now: int) -> int:
    """Delete expired flows and old throttling counters; return how many flows went."""
    db.rate_limits_delete_before(conn, now - 2 * THROTTLE_WINDOW)
    return db.auth_flows_delete_expired(conn, now)
