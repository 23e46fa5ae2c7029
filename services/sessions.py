"""Server-side sessions behind an opaque random cookie, with idle and absolute expiry and a CSRF token.

The cookie carries 256 random bits; the database keeps only an HMAC of them, keyed with
SECRET_KEY. A session is created only when a page needs one (a form, a sign-in), so
anonymous visits to plain pages write nothing.
"""

from __future__ import annotations

import dataclasses
import hashlib
import hmac
import json
import secrets

from services import db
from services.config import Settings

# last_seen_at is written at most this often, so reading pages does not write on every request.
TOUCH_INTERVAL = 60


@dataclasses.dataclass
class Session:
    """A visitor's session; `token` is set only right after it was created or rotated."""

    id: str
    user_id: int | None
    csrf_token: str
    data: dict
    created_at: int
    last_seen_at: int
    expires_at: int
    token: str | None = None
    # The signed-in user's row, read with the session in one query (None: not read, or nobody signed in).
    user: dict | None = dataclasses.field(default=None, compare=False, repr=False)
    # With load(plan=True): the user's latest subscription row (or None) under "subscription" and credits left
    # under "credits", read in the same query (None: not read).
    plan: dict | None = dataclasses.field(default=None, compare=False, repr=False)


def cookie_name(settings: Settings) -> str:
    """The session cookie's name: the __Host- prefix when the site is served over https."""
    return "__Host-iib_session" if settings.is_https else "iib_session"


def cookie_attributes(settings: Settings) -> dict:
    """The session cookie's attributes (HttpOnly, SameSite=Lax, Path=/, Secure on https)."""
    return {"path": "/", "httponly": True, "samesite": "Lax", "secure": settings.is_https}


def session_id(settings: Settings, token: str) -> str:
    """The stored id of a cookie token: HMAC-SHA256 keyed with SECRET_KEY, in hex."""
    return hmac.new(settings.secret_key.encode(), token.encode(), hashlib.sha256).hexdigest()


def create(conn: db.Connection, settings: Settings, now: int, user_id: int | None = None,
           data: dict | None = None) -> Session:
    """Start a new session (with a fresh token and CSRF token) and store it."""
    token = secrets.token_urlsafe(32)
    session = Session(id=session_id(settings, token), user_id=user_id, csrf_token=secrets.token_urlsafe(32),
                      data=dict(data or {}), created_at=now, last_seen_at=now,
                      expires_at=now + settings.session_max_seconds, token=token)
    db.session_insert(conn, session.id, user_id, session.csrf_token, json.dumps(session.data), now,
                      session.expires_at)
    return session


def _alive(settings: Settings, row: dict, now: int) -> bool:
    """True when a stored session (its expires_at and last_seen_at) has neither expired nor idled out."""
    return row["expires_at"] > now and row["last_seen_at"] + settings.session_idle_seconds > now


def settled(settings: Settings, row: dict, now: int) -> bool:
    """True when a stored session is alive and owes no touch: `load` would return it unchanged, so a request may
    rely on it without loading it."""
    return _alive(settings, row, now) and now - row["last_seen_at"] < TOUCH_INTERVAL


def id_of_cookie(settings: Settings, token: str | None) -> str | None:
    """The stored id of a cookie's token, or None for no token or one no session could have."""
    return session_id(settings, token) if token and len(token) <= 128 else None


def load(conn: db.Connection, settings: Settings, token: str | None, now: int, plan: bool = False) -> Session | None:
    """The live session for a cookie token, or None; an expired one is deleted on sight. With `plan`, the signed-in
    user's subscription and credits are read in the same query (Session.plan)."""
    sid = id_of_cookie(settings, token)
    if sid is None:
        return None
    row = db.session_get_with_user(conn, sid, verified_emails=bool(settings.admin_emails), plan=plan)
    if row is None:
        return None
    if not _alive(settings, row, now):
        db.session_delete(conn, sid)
        return None
    if now - row["last_seen_at"] >= TOUCH_INTERVAL:
        db.session_touch(conn, sid, now)
        row["last_seen_at"] = now
    try:
        data = json.loads(row["data"]) if row["data"] else {}
    except ValueError:
        data = {}
    return Session(id=sid, user_id=row["user_id"], csrf_token=row["csrf_token"], data=data,
                   created_at=row["created_at"], last_seen_at=row["last_seen_at"], expires_at=row["expires_at"],
                   user=row["user"], plan={"subscription": row["subscription"], "credits": row["credits"]}
                   if plan and row["user"] is not None else None)


def rotate(conn: db.Connection, settings: Settings, old: Session | None, now: int,
           user_id: int | None) -> Session:
    """Replace a session with a new id and CSRF token (at sign-in): the old id stops working at once."""
    with conn.transaction():
        if old is not None:
            db.session_delete(conn, old.id)
        return create(conn, settings, now, user_id=user_id, data=old.data if old else None)


def destroy(conn: db.Connection, session: Session) -> None:
    """End a session (sign-out)."""
    db.session_delete(conn, session.id)


def save_data(conn: db.Connection, session: Session) -> None:
    """Store the session's data dict."""
    db.session_save_data(conn, session.id, json.dumps(session.data))


def csrf_ok(session: Session | None, submitted: str | None) -> bool:
    """True when the submitted token matches the session's, compared in constant time."""
    if session is None or not submitted:
        return False
    return hmac.compare_digest(session.csrf_token.encode(), submitted.encode())


def purge_expired(conn: db.Connection, settings: Settings, now: int) -> int:
    """Delete every expired session; return how many (used by the cleanup command)."""
    return db.session_delete_expired(conn, now, settings.session_idle_seconds)
