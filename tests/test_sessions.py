"""Server-side sessions: opaque 256-bit tokens, HMAC'd ids, idle and absolute expiry, rotation, CSRF."""

from services import db, sessions
from services.config import load_settings

T0 = 1_800_000_000


def settings(**overrides):
    return load_settings({"APP_MODE": "test", "SESSION_IDLE_SECONDS": "3600", "SESSION_MAX_SECONDS": "86400",
                          **overrides}, environ={})


def test_a_new_session_has_a_long_random_token_and_stores_only_its_hmac(conn):
    s = settings()
    created = sessions.create(conn, s, T0)
    assert len(created.token) >= 43  # 32 random bytes, base64url: 256 bits
    assert created.id != created.token and len(created.id) == 64
    assert db.session_get_with_user(conn, created.token) is None
    assert conn.scalar("SELECT COUNT(*) AS n FROM sessions WHERE id = ?", (created.id,)) == 1
    loaded = sessions.load(conn, s, created.token, T0 + 1)
    assert loaded.id == created.id and loaded.csrf_token == created.csrf_token and loaded.token is None
    other = sessions.create(conn, s, T0)
    assert other.token != created.token and other.csrf_token != created.csrf_token


def test_the_same_token_under_another_secret_key_finds_nothing(conn):
    created = sessions.create(conn, settings(SECRET_KEY="a" * 40), T0)
    assert sessions.load(conn, settings(SECRET_KEY="b" * 40), created.token, T0) is None


def test_idle_expiry_ends_a_session_and_deletes_it(conn):
    s = settings()
    created = sessions.create(conn, s, T0)
    assert sessions.load(conn, s, created.token, T0 + 3599) is not None
    assert sessions.load(conn, s, created.token, T0 + 3599 + 3600) is None
    assert db.session_get_with_user(conn, created.id) is None


def test_activity_extends_idle_time_but_not_the_absolute_lifetime(conn):
    s = settings()
    created = sessions.create(conn, s, T0)
    moment = T0
    while moment + 3000 < T0 + 86400:
        moment += 3000
        assert sessions.load(conn, s, created.token, moment) is not None, moment
    assert sessions.load(conn, s, created.token, T0 + 86400) is None


def test_reading_a_session_writes_at_most_once_a_minute(conn):
    s = settings()
    created = sessions.create(conn, s, T0)
    sessions.load(conn, s, created.token, T0 + 30)
    assert db.session_get_with_user(conn, created.id)["last_seen_at"] == T0
    sessions.load(conn, s, created.token, T0 + 61)
    assert db.session_get_with_user(conn, created.id)["last_seen_at"] == T0 + 61


def test_rotation_gives_a_new_id_and_kills_the_old_one(conn):
    s = settings()
    before = sessions.create(conn, s, T0, data={"next": "/account"})
    user_id = db.user_insert(conn, "Ana", "", T0)
    after = sessions.rotate(conn, s, before, T0 + 5, user_id)
    assert after.token != before.token and after.csrf_token != before.csrf_token
    assert sessions.load(conn, s, before.token, T0 + 6) is None
    loaded = sessions.load(conn, s, after.token, T0 + 6)
    assert loaded.user_id == user_id and loaded.data == {"next": "/account"}
    assert loaded.expires_at == T0 + 5 + 86400


def test_csrf_tokens_are_compared_exactly(conn):
    created = sessions.create(conn, settings(), T0)
    assert sessions.csrf_ok(created, created.csrf_token)
    assert not sessions.csrf_ok(created, created.csrf_token[:-1])
    assert not sessions.csrf_ok(created, "")
    assert not sessions.csrf_ok(created, None)
    assert not sessions.csrf_ok(None, created.csrf_token)
    assert not sessions.csrf_ok(created, "ñ" * 43)


def test_data_is_saved_and_malformed_data_reads_as_empty(conn):
    s = settings()
    created = sessions.create(conn, s, T0)
    created.data["flow"] = "google"
    sessions.save_data(conn, created)
    assert sessions.load(conn, s, created.token, T0).data == {"flow": "google"}
    db.session_save_data(conn, created.id, "{not json")
    assert sessions.load(conn, s, created.token, T0).data == {}


def test_purge_removes_only_expired_sessions(conn):
    s = settings()
    old = sessions.create(conn, s, T0 - 90000)
    idle = sessions.create(conn, s, T0 - 4000)
    fresh = sessions.create(conn, s, T0 - 10)
    assert sessions.purge_expired(conn, s, T0) == 2
    assert db.session_get_with_user(conn, fresh.id) is not None
    assert db.session_get_with_user(conn, old.id) is None and db.session_get_with_user(conn, idle.id) is None


def test_destroy_ends_a_session(conn):
    s = settings()
    created = sessions.create(conn, s, T0)
    sessions.destroy(conn, created)
    assert sessions.load(conn, s, created.token, T0) is None


def test_absurd_tokens_are_not_looked_up(conn):
    s = settings()
    assert sessions.load(conn, s, "", T0) is None
    assert sessions.load(conn, s, "x" * 500, T0) is None
