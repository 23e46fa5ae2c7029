"""The SQL module on both engines: rows as dicts, transactions, initdb and migrations."""

import gc
import shutil
import socket
import threading
from pathlib import Path

import pytest

from services import db


def test_rows_come_back_as_dicts_with_one_placeholder_style(conn):
    user_id = db.user_insert(conn, "Ana ñandú 🎨", "ana@example.com", 1000)
    row = db.user_get(conn, user_id)
    assert row == {"id": user_id, "display_name": "Ana ñandú 🎨", "email": "ana@example.com",
                   "created_at": 1000, "last_login_at": 1000, "billing_hold": None, "blocked_at": None,
                   "blocked_reason": None, "library_key": None}
    assert conn.scalar("SELECT COUNT(*) AS n FROM users WHERE email = ?", ("ana@example.com",)) == 1
    assert db.user_get(conn, user_id + 1) is None


def test_transaction_commits_on_success_and_rolls_back_on_error(conn, database):
    with conn.transaction():
        db.user_insert(conn, "kept", "", 1)
    with pytest.raises(RuntimeError):
        with conn.transaction():
            db.user_insert(conn, "dropped", "", 2)
            with conn.transaction():  # a nested block joins the outer one
                db.user_insert(conn, "dropped too", "", 3)
            raise RuntimeError("boom")
    assert not conn.in_transaction
    other = database.connect()
    try:
        names = [r["display_name"] for r in other.all("SELECT display_name FROM users ORDER BY id")]
    finally:
        other.close()
    assert names == ["kept"]


SCHEMAS = Path(__file__).resolve().parent / "schemas"


def test_initdb_is_idempotent_and_keeps_data(database):
    latest = db.schema_file_version(database.engine)
    conn = database.connect()
    try:
        user_id = db.user_insert(conn, "survivor", "s@example.com", 5)
    finally:
        conn.close()
    assert db.initdb(database) == (latest, latest)
    assert db.initdb(database) == (latest, latest)
    conn = database.connect()
    try:
        assert db.user_get(conn, user_id)["display_name"] == "survivor"
        assert conn.scalar("SELECT COUNT(*) AS n FROM schema_migrations") == 1
        assert db.schema_version(conn) == latest
    finally:
        conn.close()


def test_initdb_on_an_empty_database_reports_creation(db_url):
    database = db.Database(db_url)
    assert db.initdb(database) == (None, db.schema_file_version(database.engine))


def _describe(database):
    conn = database.connect()
    try:
        return db.describe_schema(conn)
    finally:
        conn.close()


FROZEN = sorted(int(p.name[1:]) for p in SCHEMAS.iterdir() if p.name.startswith("v"))


def test_every_released_version_is_frozen():
    latest = db.schema_file_version("mysql")
    assert FROZEN == list(range(1, latest)), "freeze the previous schema files under tests/schemas/vN"


@pytest.mark.parametrize("version", FROZEN)
def test_an_older_database_upgrades_to_the_current_schema_without_losing_data(db_url, tmp_path, version):
    database = db.Database(db_url)
    old_file = SCHEMAS / f"v{version}" / db.SCHEMA_FILES[database.engine].name
    assert db.initdb(database, migrations_dir=tmp_path / "none", schema_file=old_file) == (None, version)
    conn = database.connect()
    try:
        user_id = db.user_insert(conn, "from version 1", "v1@example.com", 11)
        conn.execute("INSERT INTO sessions (id, user_id, csrf_token, data, created_at, last_seen_at, expires_at) "
                     "VALUES (?, ?, ?, ?, ?, ?, ?)", ("a" * 64, user_id, "t", "{}", 1, 1, 99))
    finally:
        conn.close()

    latest = db.schema_file_version(database.engine)
    assert db.initdb(database) == (version, latest)
    conn = database.connect()
    try:
        assert db.user_get(conn, user_id)["email"] == "v1@example.com"
        assert db.session_get_with_user(conn, "a" * 64)["user_id"] == user_id
        assert [r["version"] for r in conn.all("SELECT version FROM schema_migrations ORDER BY version")] \
            == list(range(version, latest + 1))
    finally:
        conn.close()
    # The upgraded database equals one built from the current schema file (the engines' twins are
    # equal too, see test_schema.py, so a fresh SQLite database is the yardstick for both).
    fresh = db.Database(f"sqlite:///{tmp_path / 'fresh.db'}")
    db.initdb(fresh)
    assert _describe(database) == _describe(fresh)


def test_a_further_migration_applies_on_top_and_only_once(database, tmp_path):
    engine = database.engine
    latest = db.schema_file_version(engine)
    conn = database.connect()
    try:
        user_id = db.user_insert(conn, "before the upgrade", "", 7)
    finally:
        conn.close()
    # The next version, as a future change would bring it: the schema file and one more migration.
    folder = tmp_path / "migrations" / engine
    folder.mkdir(parents=True)
    for _number, path in db.list_migrations(engine):
        shutil.copy(path, folder / path.name)
    next_schema = tmp_path / "schema_next.sql"
    next_schema.write_text(db.SCHEMA_FILES[engine].read_text(encoding="utf-8")
                           .replace(f"-- schema-version: {latest}", f"-- schema-version: {latest + 1}"),
                           encoding="utf-8")
    column = "VARCHAR(8) NOT NULL DEFAULT 'es'" if engine == "mysql" else "TEXT NOT NULL DEFAULT 'es'"
    (folder / f"{latest + 1:04d}_user_locale.sql").write_text(
        f"-- users choose a language\nALTER TABLE users ADD COLUMN locale {column};\n", encoding="utf-8")

    options = {"migrations_dir": tmp_path / "migrations", "schema_file": next_schema}
    assert db.initdb(database, **options) == (latest, latest + 1)
    assert db.initdb(database, **options) == (latest + 1, latest + 1)
    conn = database.connect()
    try:
        row = conn.one("SELECT display_name, locale FROM users WHERE id = ?", (user_id,))
        assert row == {"display_name": "before the upgrade", "locale": "es"}
    finally:
        conn.close()


def test_schema_file_and_migrations_must_agree(db_url, tmp_path):
    database = db.Database(db_url)
    (tmp_path / "migrations" / database.engine).mkdir(parents=True)
    shutil.copy(db.SCHEMA_FILES[database.engine], tmp_path / "schema.sql")
    later = db.schema_file_version(database.engine) + 1
    (tmp_path / "migrations" / database.engine / f"{later:04d}_later.sql").write_text("SELECT 1;", encoding="utf-8")
    with pytest.raises(db.SchemaError, match="but the last"):
        db.initdb(database, migrations_dir=tmp_path / "migrations", schema_file=tmp_path / "schema.sql")


def test_shipped_schema_versions_match_the_shipped_migrations():
    for engine in ("sqlite", "mysql"):
        migrations = db.list_migrations(engine)
        assert db.schema_file_version(engine) == (migrations[-1][0] if migrations else 1)
    assert [p.name for _, p in db.list_migrations("sqlite")] == [p.name for _, p in db.list_migrations("mysql")]


def test_split_statements_drops_comments_and_blank_parts():
    script = "-- a comment; with a semicolon\nCREATE TABLE a (x INT);\n\n-- another\nCREATE TABLE b (y INT);\n"
    assert db.split_statements(script) == ["CREATE TABLE a (x INT)", "CREATE TABLE b (y INT)"]


def test_unreachable_mariadb_raises_database_unavailable_without_the_password():
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    database = db.Database(f"mysql://app:s3cret-pw@127.0.0.1:{port}/iib")
    with pytest.raises(db.DatabaseUnavailable) as caught:
        database.connect()
    assert "s3cret-pw" not in str(caught.value)
    assert "s3cret-pw" not in database.describe()


def test_mariadb_url_with_unix_socket_and_escaped_password():
    database = db.Database("mysql://u%40x:p%2Fw@localhost:3307/shop_db?unix_socket=/var/run/mysqld/mysqld.sock")
    assert database.params == {"host": "localhost", "port": 3307, "user": "u@x", "password": "p/w",
                               "database": "shop_db", "unix_socket": "/var/run/mysqld/mysqld.sock",
                               "ssl_disabled": True}


def test_tls_is_off_for_local_mariadb_and_on_request_only_elsewhere():
    """A new SSL context per connection cost ~77 ms of CPU on every request, for nothing over loopback."""
    assert db.Database("mysql://u:p@127.0.0.1:3306/x").params["ssl_disabled"] is True
    assert db.Database("mysql://u:p@localhost/x?unix_socket=/run/mysqld/mysqld.sock").params["ssl_disabled"] is True
    assert "ssl_disabled" not in db.Database("mysql://u:p@127.0.0.1:3306/x?ssl=on").params
    assert "ssl_disabled" not in db.Database("mysql://u:p@db.example.com:3306/x").params
    assert db.Database("mysql://u:p@db.example.com:3306/x?ssl=off").params["ssl_disabled"] is True


def test_batches_made_before_version_9_get_english_for_their_email(db_url, tmp_path):
    database = db.Database(db_url)
    old_file = SCHEMAS / "v8" / db.SCHEMA_FILES[database.engine].name
    db.initdb(database, migrations_dir=tmp_path / "none", schema_file=old_file)
    conn = database.connect()
    try:
        user_id = db.user_insert(conn, "before 9", "b9@example.com", 1)
        conn.execute("INSERT INTO batches (user_id, request_token, status, model, ratio, quality, image_format, "
                     "width, height, style, prompt_separator, item_count, credits_per_item, notify_email, "
                     "created_at, updated_at) VALUES (?, 't9', 'done', 'gpt-image-2', '1:1', 'low', 'png', 1024, "
                     "1024, '', ', ', 1, 2, 1, 1, 1)", (user_id,))
    finally:
        conn.close()
    assert db.initdb(database)[0] == 8
    conn = database.connect()
    try:
        row = conn.one("SELECT lang, notify_email, speed FROM batches WHERE request_token = 't9'")
        assert row == {"lang": "en", "notify_email": 1, "speed": "now"}
    finally:
        conn.close()


def test_a_thread_keeps_one_connection_and_gets_it_back_clean(database):
    """connection() hands a thread the same connection each time; release() ends what a request left open."""
    first = database.connection()
    first.fresh = False
    first._run("BEGIN IMMEDIATE" if first.engine == "sqlite" else "START TRANSACTION")
    first._depth = 1
    first.execute("INSERT INTO worker_state (name, value, updated_at) VALUES ('left-open', 'x', 1)")
    database.release(first)
    assert not first.in_transaction
    again = database.connection()
    assert again is first and again.fresh
    assert again.scalar("SELECT COUNT(*) AS n FROM worker_state WHERE name = 'left-open'") == 0

    other: list = []
    thread = threading.Thread(target=lambda: other.append(database.connection()))
    thread.start()
    thread.join()
    assert other[0] is not first  # each thread its own
    assert len(database._kept) == 2
    other.clear()  # the thread has ended: once nothing holds its connection, the database forgets it too
    gc.collect()
    assert len(database._kept) == 1

    first.broken = True  # a request found it lost: closed at release, a new one next time
    database.release(first)
    assert database.connection() is not first

    replaced = database.connection()
    replaced.pid = -1  # as after a fork: the child never uses (nor closes) its parent's connection
    assert database.connection() is not replaced
    database.close_kept()
