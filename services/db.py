"""The one SQL module: connections to SQLite or MariaDB, transactions, schema set-up and every query.

Callers write `?` placeholders and get rows as dicts; the difference between sqlite3 and
PyMySQL stays in this file. Connections run in autocommit mode and group writes with
`transaction()`, which commits on success and rolls back on error: each service call is one
unit of work, so a request that fails half-way leaves only whole units behind. On SQLite a
transaction starts with BEGIN IMMEDIATE, which waits for the write lock up front instead of
failing later when a read turns into a write. Times are Unix seconds (integers) on both engines.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import sqlite3
import threading
import time
import weakref
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

import pymysql
import pymysql.cursors

from services import mysql_wire

log = logging.getLogger(__name__)

APP_ROOT = Path(__file__).resolve().parent.parent
SCHEMA_FILES = {"sqlite": APP_ROOT / "schema.sqlite.sql", "mysql": APP_ROOT / "schema.sql"}
MIGRATIONS_DIR = APP_ROOT / "migrations"

_VERSION_LINE = re.compile(r"^--\s*schema-version:\s*(\d+)\s*$", re.MULTILINE)
_MIGRATION_NAME = re.compile(r"^(\d{4})_[a-z0-9_]+\.sql$")


class DatabaseUnavailable(Exception):
    """The database cannot be reached right now (server down, file not writable)."""


class SchemaError(Exception):
    """The schema files or migrations are inconsistent."""


class Database:
    """Where the data lives, parsed from DATABASE_URL; hands out connections."""

    def __init__(self, url: str):
        parts = urlsplit(url)
        if parts.scheme == "sqlite":
            self.engine = "sqlite"
            self.path = Path(unquote(url[len("sqlite:///"):]))
            self.params: dict[str, Any] = {}
        elif parts.scheme in ("mysql", "mariadb"):
            self.engine = "mysql"
            query = {k: v[-1] for k, v in parse_qs(parts.query).items()}
            self.params = {
                "host": parts.hostname or "127.0.0.1",
                "port": parts.port or 3306,
                "user": unquote(parts.username or ""),
                "password": unquote(parts.password or ""),
                "database": unquote(parts.path.lstrip("/")),
            }
            if query.get("unix_socket"):
                self.params["unix_socket"] = query["unix_socket"]
            # PyMySQL offers TLS whenever the server might take it, building a new SSL context per connection
            # (about 77 ms of CPU, on every request). Over a socket or loopback it protects nothing: off there,
            # unless ?ssl=on asks for it; ?ssl=off turns it off for a remote server too.
            tls = query.get("ssl", "").lower()
            local = bool(query.get("unix_socket")) or self.params["host"] in ("localhost", "127.0.0.1", "::1")
            if tls in ("0", "off", "false", "disabled") or (local and tls not in ("1", "on", "true", "required")):
                self.params["ssl_disabled"] = True
        else:
            raise ValueError("DATABASE_URL must start with sqlite:/// or mysql://")
        self._local = threading.local()  # each thread's kept connection (see connection())
        # Every thread's, for close_kept(); weak, so a thread that ends takes its connection with it.
        self._kept: weakref.WeakSet[Connection] = weakref.WeakSet()
        self._kept_lock = threading.Lock()

    def describe(self) -> str:
        """Say where the database is without revealing a password."""
        if self.engine == "sqlite":
            return f"SQLite at {self.path}"
        p = self.params
        return f"MariaDB database {p['database']} on {p['host']}:{p['port']}"

    def connect(self) -> Connection:
        """Open a new connection; raise DatabaseUnavailable when the server or file cannot be reached."""
        if self.engine == "sqlite":
            try:
                self.path.parent.mkdir(parents=True, exist_ok=True)
                raw = sqlite3.connect(self.path, timeout=30, isolation_level=None, check_same_thread=False)
                raw.row_factory = _dict_row
                raw.execute("PRAGMA foreign_keys = ON")
                raw.execute("PRAGMA busy_timeout = 30000")
                raw.execute("PRAGMA synchronous = NORMAL")
            except (sqlite3.Error, OSError) as exc:
                raise DatabaseUnavailable(f"cannot open {self.describe()}: {exc}") from None
            return Connection(raw, "sqlite")
        conn = Connection(self._mysql(), "mysql")
        conn.reopen = self._mysql
        return conn

    def _mysql(self) -> Any:
        """A new PyMySQL connection, or DatabaseUnavailable."""
        try:
            return mysql_wire.Connection(  # pymysql.connect with a faster reader of result sets
                **self.params, charset="utf8mb4", autocommit=True, connect_timeout=5,
                cursorclass=pymysql.cursors.DictCursor,
                init_command="SET time_zone = '+00:00', sql_mode = 'STRICT_ALL_TABLES,NO_ZERO_DATE,"
                             "ERROR_FOR_DIVISION_BY_ZERO,NO_ENGINE_SUBSTITUTION'",
            )
        except pymysql.err.MySQLError as exc:
            raise DatabaseUnavailable(f"cannot connect to {self.describe()}: {exc.args[-1]}") from None

    def connection(self) -> Connection:
        """This thread's kept connection: opened on first use, checked cheaply, reopened after a loss or a fork.

        A request borrows it and gives it back with release(). Passenger runs one request at a
        time per process and waitress gives each thread its own, so nothing is shared. A
        connection used in the last IDLE_CHECK_SECONDS is used as it is (no round trip); one
        idle for longer is pinged first, and reopened if MariaDB closed it (wait_timeout, a
        restart). A read that finds the connection lost as the first statement of a request is
        run again on a new one (see Connection._run).
        """
        conn = getattr(self._local, "conn", None)
        if conn is not None and (conn.pid != os.getpid() or conn.broken):
            if conn.pid == os.getpid():  # a forked child must not close its parent's socket: it just lets go
                conn.close()
            self._forget(conn)
            conn = None
        if conn is None:
            conn = self.connect()
            self._local.conn = conn
            with self._kept_lock:
                self._kept.add(conn)
        else:
            conn.check()
        conn.fresh = True
        return conn

    def release(self, conn: Connection) -> None:
        """A request is over: roll back anything it left open; a connection that failed is closed and dropped."""
        if conn.broken:
            conn.close()
            self._forget(conn)
        elif conn.in_transaction:
            conn.rollback()
        conn.last_used = time.monotonic()

    def _forget(self, conn: Connection) -> None:
        if getattr(self._local, "conn", None) is conn:
            self._local.conn = None
        with self._kept_lock:
            self._kept.discard(conn)

    def close_kept(self) -> None:
        """Close every thread's kept connection (a test's end, a server's shutdown)."""
        with self._kept_lock:
            kept, self._kept = list(self._kept), weakref.WeakSet()
        for conn in kept:
            conn.close()
        self._local = threading.local()


IDLE_CHECK_SECONDS = 10.0  # a kept connection idle longer than this is pinged before use


def _dict_row(cursor: sqlite3.Cursor, row: tuple) -> dict:
    """Turn a sqlite3 row into a dict keyed by column name."""
    return {col[0]: value for col, value in zip(cursor.description, row, strict=True)}


_LOST = (pymysql.err.OperationalError, pymysql.err.InterfaceError)


class Connection:
    """One connection with `?` placeholders, dict rows and a nestable transaction()."""

    def __init__(self, raw: Any, engine: str):
        self.raw = raw
        self.engine = engine
        self._depth = 0
        self.pid = os.getpid()
        self.last_used = time.monotonic()
        self.broken = False  # lost or failed: close it rather than use it again
        self.fresh = False  # no statement run yet in this request (a lost read may then be run again)
        self.reopen: Any = None  # MariaDB: makes a new raw connection to replace a lost one

    def _replace(self) -> None:
        """Swap a lost MariaDB connection for a new one (DatabaseUnavailable if the server is still away)."""
        with contextlib.suppress(Exception):
            self.raw.close()
        try:
            self.raw = self.reopen()
        except DatabaseUnavailable:
            self.broken = True
            raise

    def check(self) -> None:
        """Before a request: ping a MariaDB connection idle for long, reconnecting if the server dropped it."""
        if self.engine != "mysql" or time.monotonic() - self.last_used < IDLE_CHECK_SECONDS:
            return
        try:
            self.raw.ping(reconnect=False)
        except pymysql.err.MySQLError:
            self._replace()

    def _sql(self, sql: str) -> str:
        # PyMySQL formats the query with %: a literal % (the modulo of the daily figures) is doubled first.
        return sql.replace("%", "%%").replace("?", "%s") if self.engine == "mysql" else sql

    def _run(self, sql: str, params: tuple | list = ()) -> Any:
        fresh, self.fresh = self.fresh, False
        try:
            if self.engine == "sqlite":
                return self.raw.execute(sql, params)
            cur = self.raw.cursor()
            cur.execute(self._sql(sql), tuple(params))
            return cur
        except sqlite3.OperationalError as exc:
            if "locked" in str(exc) or "unable to open" in str(exc):
                raise DatabaseUnavailable(str(exc)) from None
            raise
        except _LOST as exc:
            if not (exc.args and exc.args[0] in (0, 2003, 2006, 2013, 2055)):  # 0: PyMySQL's closed connection
                raise
            if fresh and not self._depth and sql.lstrip()[:6].upper() == "SELECT":
                # A kept connection found dead by a request's first statement (MariaDB restarted or timed it
                # out since): a read changes nothing, so it is run again once on a new connection.
                with contextlib.suppress(pymysql.err.MySQLError, DatabaseUnavailable):
                    self._replace()
                    cur = self.raw.cursor()
                    cur.execute(self._sql(sql), tuple(params))
                    return cur
            self.broken = True
            raise DatabaseUnavailable(f"lost the database connection: {exc.args[-1]}") from None

    def execute(self, sql: str, params: tuple | list = ()) -> int:
        """Run one statement; return the number of rows it changed."""
        return self._run(sql, params).rowcount

    def insert(self, sql: str, params: tuple | list = ()) -> int:
        """Run one INSERT; return the new row's id."""
        return self._run(sql, params).lastrowid

    def all(self, sql: str, params: tuple | list = ()) -> list[dict]:
        """Run a query; return every row as a dict."""
        return list(self._run(sql, params).fetchall())

    def one(self, sql: str, params: tuple | list = ()) -> dict | None:
        """Run a query; return its first row as a dict, or None."""
        return self._run(sql, params).fetchone()

    def scalar(self, sql: str, params: tuple | list = ()) -> Any:
        """Run a query; return the first column of its first row, or None."""
        row = self.one(sql, params)
        return None if row is None else next(iter(row.values()))

    @property
    def in_transaction(self) -> bool:
        """True while a transaction() block is open."""
        return self._depth > 0

    @contextlib.contextmanager
    def transaction(self) -> Iterator[Connection]:
        """Group statements: commit when the block ends, roll back if it raises. Nested blocks join the outer one."""
        if self._depth:
            self._depth += 1
            try:
                yield self
            finally:
                self._depth -= 1
            return
        self._run("BEGIN IMMEDIATE" if self.engine == "sqlite" else "START TRANSACTION")
        self._depth = 1
        try:
            yield self
        except BaseException:
            self._depth = 0
            self.rollback()
            raise
        self._depth = 0
        self._run("COMMIT")

    def rollback(self) -> None:
        """Roll back an open transaction, if any; never raises on a dead connection."""
        self._depth = 0
        with contextlib.suppress(Exception):
            self._run("ROLLBACK")

    def close(self) -> None:
        """Roll back anything left open and close the connection."""
        if self._depth:
            self.rollback()
        with contextlib.suppress(Exception):
            self.raw.close()


# --- schema ----------------------------------------------------------------------------------

def split_statements(script: str) -> list[str]:
    """Split a schema or migration script into statements (no semicolons inside literals)."""
    lines = [line for line in script.splitlines() if not line.strip().startswith("--")]
    return [s.strip() for s in "\n".join(lines).split(";") if s.strip()]


def schema_file_version(engine: str) -> int:
    """The schema version a schema file declares in its `-- schema-version: N` line."""
    match = _VERSION_LINE.search(SCHEMA_FILES[engine].read_text(encoding="utf-8"))
    if not match:
        raise SchemaError(f"{SCHEMA_FILES[engine].name} has no '-- schema-version: N' line")
    return int(match.group(1))


def list_migrations(engine: str, migrations_dir: Path = MIGRATIONS_DIR) -> list[tuple[int, Path]]:
    """The numbered migration files for an engine, in order."""
    folder = migrations_dir / engine
    found = []
    for path in sorted(folder.glob("*.sql")) if folder.is_dir() else []:
        match = _MIGRATION_NAME.match(path.name)
        if not match:
            raise SchemaError(f"migration {path.name} must be named NNNN_words.sql")
        found.append((int(match.group(1)), path))
    numbers = [n for n, _ in found]
    if len(set(numbers)) != len(numbers):
        raise SchemaError(f"two migrations share a number in {folder}")
    return found


def _table_exists(conn: Connection, name: str) -> bool:
    if conn.engine == "sqlite":
        sql = "SELECT name FROM sqlite_master WHERE type = 'table' AND name = ?"
    else:
        sql = "SELECT table_name FROM information_schema.tables WHERE table_schema = DATABASE() AND table_name = ?"
    return conn.one(sql, (name,)) is not None


def schema_version(conn: Connection) -> int | None:
    """The version the database is at, or None for a database without our schema."""
    if not _table_exists(conn, "schema_migrations"):
        return None
    return conn.scalar("SELECT MAX(version) AS v FROM schema_migrations")


@contextlib.contextmanager
def _init_lock(conn: Connection) -> Iterator[None]:
    """Keep two initdb runs from interleaving (SQLite serialises them through its write lock)."""
    if conn.engine != "mysql":
        yield
        return
    if conn.scalar("SELECT GET_LOCK(CONCAT(DATABASE(), '.initdb'), 60) AS got") != 1:
        raise DatabaseUnavailable("another initdb has held the schema lock for 60 seconds")
    try:
        yield
    finally:
        conn.scalar("SELECT RELEASE_LOCK(CONCAT(DATABASE(), '.initdb')) AS released")


def initdb(database: Database, migrations_dir: Path = MIGRATIONS_DIR,
           schema_file: Path | None = None) -> tuple[int | None, int]:
    """Create the schema on an empty database, or apply the pending migrations; return (from, to)."""
    engine = database.engine
    schema_file = schema_file or SCHEMA_FILES[engine]
    match = _VERSION_LINE.search(schema_file.read_text(encoding="utf-8"))
    if not match:
        raise SchemaError(f"{schema_file.name} has no '-- schema-version: N' line")
    target = int(match.group(1))
    migrations = list_migrations(engine, migrations_dir)
    if migrations and migrations[-1][0] != target:
        raise SchemaError(f"{schema_file.name} declares version {target} but the last "
                          f"{engine} migration is {migrations[-1][0]}")
    conn = database.connect()
    try:
        if engine == "sqlite":
            conn.execute("PRAGMA journal_mode = WAL")
        with _init_lock(conn):
            current = schema_version(conn)
            if current is None:
                # SQLite runs DDL inside the transaction, so a failed set-up leaves nothing;
                # MariaDB commits each DDL statement, and CREATE ... IF NOT EXISTS makes a rerun safe.
                with conn.transaction():
                    for statement in split_statements(schema_file.read_text(encoding="utf-8")):
                        conn.execute(statement)
                    conn.execute("INSERT INTO schema_migrations (version, applied_at) VALUES (?, ?)",
                                 (target, int(time.time())))
                log.info("created schema version %s on %s", target, database.describe())
                return None, target
            for number, path in migrations:
                if number <= current:
                    continue
                with conn.transaction():
                    for statement in split_statements(path.read_text(encoding="utf-8")):
                        conn.execute(statement)
                    conn.execute("INSERT INTO schema_migrations (version, applied_at) VALUES (?, ?)",
                                 (number, int(time.time())))
                log.info("applied migration %s on %s", path.name, database.describe())
            return current, max(current, target)
    finally:
        conn.close()


def describe_schema(conn: Connection) -> dict[str, dict]:
    """Tables with their columns (name, type family, nullable) and unique keys, for comparing engines."""
    result: dict[str, dict] = {}
    if conn.engine == "sqlite":
        tables = [r["name"] for r in conn.all(
            "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%' ORDER BY name")]
        for table in tables:
            columns = {r["name"]: (_family(r["type"]), not r["notnull"] and not r["pk"])
                       for r in conn.all(f"PRAGMA table_info({table})")}
            uniques = set()
            for index in conn.all(f"PRAGMA index_list({table})"):
                if index["unique"]:
                    cols = [r["name"] for r in conn.all(f"PRAGMA index_info({index['name']})")]
                    uniques.add(tuple(cols))
            pk = [r["name"] for r in conn.all(f"PRAGMA table_info({table})") if r["pk"]]
            uniques.add(tuple(pk))
            result[table] = {"columns": columns, "unique": uniques}
        return result
    rows = conn.all(
        "SELECT table_name AS t, column_name AS c, data_type AS d, is_nullable AS n "
        "FROM information_schema.columns WHERE table_schema = DATABASE() ORDER BY table_name, ordinal_position")
    for r in rows:
        table = result.setdefault(r["t"], {"columns": {}, "unique": set()})
        table["columns"][r["c"]] = (_family(r["d"]), r["n"] == "YES")
    keys: dict[tuple[str, str], list[str]] = {}
    for r in conn.all(
            "SELECT table_name AS t, index_name AS i, column_name AS c FROM information_schema.statistics "
            "WHERE table_schema = DATABASE() AND non_unique = 0 ORDER BY table_name, index_name, seq_in_index"):
        keys.setdefault((r["t"], r["i"]), []).append(r["c"])
    for (table, _), cols in keys.items():
        result[table]["unique"].add(tuple(cols))
    return result


def _family(declared: str) -> str:
    """Reduce a declared column type to int, text, real or blob."""
    declared = declared.lower()
    if "int" in declared:
        return "int"
    if any(word in declared for word in ("char", "text", "clob")):
        return "text"
    if any(word in declared for word in ("real", "floa", "doub", "dec")):
        return "real"
    return "blob"


# --- users -----------------------------------------------------------------------------------

def user_insert(conn: Connection, display_name: str, email: str, now: int) -> int:
    """Create a user; return its id."""
    return conn.insert(
        "INSERT INTO users (display_name, email, created_at, last_login_at) VALUES (?, ?, ?, ?)",
        (display_name, email, now, now))


_USER_COLUMNS = ("id", "display_name", "email", "created_at", "last_login_at", "billing_hold", "blocked_at",
                 "blocked_reason", "library_key")


def user_get(conn: Connection, user_id: int) -> dict | None:
    """One user by id, or None."""
    return conn.one(f"SELECT {', '.join(_USER_COLUMNS)} FROM users WHERE id = ?", (user_id,))


def user_lock(conn: Connection, user_id: int) -> None:
    """Lock a user's row until the transaction ends (MariaDB; SQLite's BEGIN IMMEDIATE already serialises)."""
    if conn.engine == "mysql":
        conn.one("SELECT id FROM users WHERE id = ? FOR UPDATE", (user_id,))


def user_library_key(conn: Connection, user_id: int, new_key: str) -> str:
    """The user's opaque key for the images kept in a browser; `new_key` is stored first if there is none yet."""
    conn.execute("UPDATE users SET library_key = ? WHERE id = ? AND library_key IS NULL", (new_key, user_id))
    return conn.scalar("SELECT library_key AS k FROM users WHERE id = ?", (user_id,))


# --- sessions --------------------------------------------------------------------------------

_SESSION_COLUMNS = "id, user_id, csrf_token, data, created_at, last_seen_at, expires_at"


def session_insert(conn: Connection, session_id: str, user_id: int | None, csrf_token: str, data: str,
                   now: int, expires_at: int) -> None:
    """Store a new session row."""
    conn.execute(
        f"INSERT INTO sessions ({_SESSION_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?)",
        (session_id, user_id, csrf_token, data, now, now, expires_at))


def session_get_with_user(conn: Connection, session_id: str, verified_emails: bool = False,
                          plan: bool = False) -> dict | None:
    """One session by id with its user's row under "user" (None when signed out or gone), in one query; or None.

    With `verified_emails`, the user row also carries "verified_emails" (user_verified_emails's list), for the
    owner check on every page while ADMIN_EMAILS is set. With `plan`, the row also carries what every page
    shows of the plan: "subscription" (subscription_latest's row, or None) and "credits" (credit_balance's).
    """
    columns = [f"s.{name}" for name in _SESSION_COLUMNS.split(", ")] + [f"u.{name} AS u_{name}"
                                                                         for name in _USER_COLUMNS]
    joins = ""
    if verified_emails:  # a newline never occurs in an email: it separates them
        joined = "GROUP_CONCAT(i.email SEPARATOR '\n')" if conn.engine == "mysql" else "group_concat(i.email, char(10))"
        columns.append(f"(SELECT {joined} FROM identities i WHERE i.user_id = u.id AND i.email_verified = 1 "
                       "AND i.email <> '') AS u_verified_emails")
    if plan:
        columns += [f"p.{name} AS p_{name}" for name in _SUBSCRIPTION_FIELDS]
        columns.append("(SELECT c.balance FROM credit_balances c WHERE c.user_id = u.id) AS u_credits")
        joins = " LEFT JOIN subscriptions p ON p.id = (SELECT MAX(id) FROM subscriptions WHERE user_id = u.id)"
    row = conn.one(f"SELECT {', '.join(columns)} FROM sessions s LEFT JOIN users u ON u.id = s.user_id{joins} "
                   "WHERE s.id = ?", (session_id,))
    if row is None:
        return None
    user = {name: row.pop(f"u_{name}") for name in _USER_COLUMNS}
    if verified_emails:
        user["verified_emails"] = sorted({e.strip().lower() for e in (row.pop("u_verified_emails") or "").split("\n")
                                          if e.strip()})
    if plan:
        subscription = {name: row.pop(f"p_{name}") for name in _SUBSCRIPTION_FIELDS}
        row["subscription"] = subscription if subscription["id"] is not None else None
        row["credits"] = row.pop("u_credits") or 0
    row["user"] = user if user["id"] is not None else None
    return row


def session_touch(conn: Connection, session_id: str, now: int) -> None:
    """Record activity on a session (for idle expiry)."""
    conn.execute("UPDATE sessions SET last_seen_at = ? WHERE id = ?", (now, session_id))


def session_save_data(conn: Connection, session_id: str, data: str) -> None:
    """Replace a session's data (a JSON text)."""
    conn.execute("UPDATE sessions SET data = ? WHERE id = ?", (data, session_id))


def session_delete(conn: Connection, session_id: str) -> int:
    """Delete one session; return 1 if it existed."""
    return conn.execute("DELETE FROM sessions WHERE id = ?", (session_id,))


def session_delete_expired(conn: Connection, now: int, idle_seconds: int) -> int:
    """Delete sessions past their absolute or idle expiry; return how many."""
    return conn.execute("DELETE FROM sessions WHERE expires_at <= ? OR last_seen_at <= ?",
                        (now, now - idle_seconds))


def user_update_profile(conn: Connection, user_id: int, display_name: str, email: str, now: int) -> None:
    """Refresh a user's name and email (kept for display and receipts) and the sign-in time."""
    conn.execute("UPDATE users SET display_name = ?, email = ?, last_login_at = ? WHERE id = ?",
                 (display_name, email, now, user_id))


# --- identities ------------------------------------------------------------------------------

def identity_find(conn: Connection, provider: str, issuer: str, subject: str) -> dict | None:
    """The identity for (provider, issuer, subject), or None."""
    return conn.one("SELECT id, user_id, provider, issuer, subject, email, display_name FROM identities "
                    "WHERE provider = ? AND issuer = ? AND subject = ?", (provider, issuer, subject))


def identity_insert(conn: Connection, user_id: int, provider: str, issuer: str, subject: str, email: str,
                    display_name: str, now: int, email_verified: bool = False) -> int:
    """Attach an identity to a user (with whether the provider vouched for its email); return its id."""
    return conn.insert(
        "INSERT INTO identities (user_id, provider, issuer, subject, email, display_name, created_at, last_login_at, "
        "email_verified) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
        (user_id, provider, issuer, subject, email, display_name, now, now, int(bool(email_verified))))


def identity_touch(conn: Connection, identity_id: int, email: str, display_name: str, now: int,
                   email_verified: bool = False) -> None:
    """Refresh an identity's details at sign-in, the email's verified flag too (a provider can stop vouching)."""
    conn.execute("UPDATE identities SET email = ?, display_name = ?, last_login_at = ?, email_verified = ? "
                 "WHERE id = ?", (email, display_name, now, int(bool(email_verified)), identity_id))


def identities_with_history(conn: Connection, user_id: int) -> tuple[list[dict], int]:
    """What the account page lists in one query: a user's identities, oldest first, and how many of their batches
    are finished (the ones `batches_finished` would return)."""
    rows = conn.all("SELECT p.id, p.provider, p.issuer, p.subject, p.email, p.display_name, p.created_at, "
                    f"p.last_login_at, (SELECT COUNT(*) FROM batches b WHERE {_FINISHED} AND b.user_id = u.id) "
                    "AS finished_batches FROM users u LEFT JOIN identities p ON p.user_id = u.id WHERE u.id = ? "
                    "ORDER BY p.id", (user_id,))
    finished = rows[0]["finished_batches"] if rows else 0
    for row in rows:
        del row["finished_batches"]
    return [row for row in rows if row["id"] is not None], int(finished or 0)


# --- sign-in flows ---------------------------------------------------------------------------

def auth_flow_insert(conn: Connection, session_id: str, provider: str, state: str, nonce: str, code_verifier: str,
                     next_path: str, link_user_id: int | None, now: int, expires_at: int) -> int:
    """Store a started sign-in flow."""
    return conn.insert(
        "INSERT INTO auth_flows (session_id, provider, state, nonce, code_verifier, next_path, link_user_id, "
        "created_at, expires_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
        (session_id, provider, state, nonce, code_verifier, next_path, link_user_id, now, expires_at))


def auth_flows_of_session(conn: Connection, session_id: str, provider: str, now: int) -> list[dict]:
    """A session's unexpired flows with one provider, newest first."""
    return conn.all("SELECT id, state, nonce, code_verifier, next_path, link_user_id, created_at, expires_at "
                    "FROM auth_flows WHERE session_id = ? AND provider = ? AND expires_at > ? ORDER BY id DESC",
                    (session_id, provider, now))


def auth_flow_delete(conn: Connection, flow_id: int) -> int:
    """Delete one flow; return 1 if this call deleted it (so only one callback can use it)."""
    return conn.execute("DELETE FROM auth_flows WHERE id = ?", (flow_id,))


def auth_flows_trim(conn: Connection, session_id: str, now: int, keep: int) -> None:
    """Delete a session's expired flows and all but its newest `keep` ones."""
    conn.execute("DELETE FROM auth_flows WHERE session_id = ? AND expires_at <= ?", (session_id, now))
    rows = conn.all("SELECT id FROM auth_flows WHERE session_id = ? ORDER BY id DESC", (session_id,))
    for row in rows[keep:]:
        conn.execute("DELETE FROM auth_flows WHERE id = ?", (row["id"],))


def auth_flows_delete_expired(conn: Connection, now: int) -> int:
    """Delete every expired flow; return how many."""
    return conn.execute("DELETE FROM auth_flows WHERE expires_at <= ?", (now,))


# --- throttling ------------------------------------------------------------------------------

def rate_limit_hit(conn: Connection, bucket: str, window_start: int) -> int:
    """Count one hit in a fixed window and return the window's hits so far (atomic on both engines)."""
    if conn.engine == "mysql":
        conn.execute("INSERT INTO rate_limits (bucket, window_start, hits) VALUES (?, ?, 1) "
                     "ON DUPLICATE KEY UPDATE hits = hits + 1", (bucket, window_start))
    else:
        conn.execute("INSERT INTO rate_limits (bucket, window_start, hits) VALUES (?, ?, 1) "
                     "ON CONFLICT (bucket, window_start) DO UPDATE SET hits = hits + 1", (bucket, window_start))
    return conn.scalar("SELECT hits FROM rate_limits WHERE bucket = ? AND window_start = ?", (bucket, window_start))


def rate_limits_delete_before(conn: Connection, window_start: int) -> int:
    """Delete the counters of windows that started before this time; return how many."""
    return conn.execute("DELETE FROM rate_limits WHERE window_start < ?", (window_start,))


# --- credits -----------------------------------------------------------------------------------

def credit_balance_ensure(conn: Connection, user_id: int, now: int) -> None:
    """Create a user's balance row (at zero) if it does not exist yet."""
    if conn.engine == "mysql":
        conn.execute("INSERT INTO credit_balances (user_id, balance, updated_at) VALUES (?, 0, ?) "
                     "ON DUPLICATE KEY UPDATE user_id = user_id", (user_id, now))
    else:
        conn.execute("INSERT INTO credit_balances (user_id, balance, updated_at) VALUES (?, 0, ?) "
                     "ON CONFLICT (user_id) DO NOTHING", (user_id, now))


def credit_balance(conn: Connection, user_id: int) -> int:
    """A user's credits left (0 without a balance row)."""
    return conn.scalar("SELECT balance FROM credit_balances WHERE user_id = ?", (user_id,)) or 0


def credit_balance_lock(conn: Connection, user_id: int) -> int | None:
    """Read a balance inside a transaction, locking its row on MariaDB (SQLite's BEGIN IMMEDIATE already does)."""
    suffix = " FOR UPDATE" if conn.engine == "mysql" else ""
    return conn.scalar(f"SELECT balance FROM credit_balances WHERE user_id = ?{suffix}", (user_id,))


def credit_balance_add(conn: Connection, user_id: int, delta: int, now: int) -> int:
    """Change a balance by delta only if it stays at zero or above; return 1 if it changed."""
    return conn.execute("UPDATE credit_balances SET balance = balance + ?, updated_at = ? "
                        "WHERE user_id = ? AND balance + ? >= 0", (delta, now, user_id, delta))


def credit_balance_set(conn: Connection, user_id: int, balance: int, now: int) -> None:
    """Set a balance (the period grant replaces what was left)."""
    conn.execute("UPDATE credit_balances SET balance = ?, updated_at = ? WHERE user_id = ?", (balance, now, user_id))


def credit_ledger_insert(conn: Connection, user_id: int, delta: int, reason: str, reference: str, now: int) -> bool:
    """Add a ledger line; False (and nothing added) when (reason, reference) is already there."""
    if conn.engine == "mysql":
        sql = ("INSERT INTO credit_ledger (user_id, delta, reason, reference, created_at) VALUES (?, ?, ?, ?, ?) "
               "ON DUPLICATE KEY UPDATE id = id")
    else:
        sql = ("INSERT INTO credit_ledger (user_id, delta, reason, reference, created_at) VALUES (?, ?, ?, ?, ?) "
               "ON CONFLICT (reason, reference) DO NOTHING")
    return conn.execute(sql, (user_id, delta, reason, reference, now)) == 1


def credit_ledger_find(conn: Connection, reason: str, reference: str) -> dict | None:
    """The ledger line for (reason, reference), or None."""
    return conn.one("SELECT id, user_id, delta, reason, reference, created_at FROM credit_ledger "
                    "WHERE reason = ? AND reference = ?", (reason, reference))


def credit_latest_grant_at(conn: Connection, user_id: int) -> int | None:
    """When the user's latest period grant was made (its invoice's time), or None."""
    value = conn.scalar("SELECT MAX(created_at) AS m FROM credit_ledger WHERE user_id = ? AND reason = 'grant'",
                        (user_id,))
    return None if value is None else int(value)


def credit_latest_grant(conn: Connection, user_id: int) -> dict | None:
    """The user's latest period grant (its invoice as reference, its period start as time), or None."""
    return conn.one("SELECT id, delta, reference, created_at FROM credit_ledger WHERE user_id = ? AND reason = 'grant' "
                    "ORDER BY created_at DESC, id DESC LIMIT 1", (user_id,))


def credit_ledger_recent(conn: Connection, user_id: int, since: int, limit: int) -> list[dict]:
    """A user's ledger lines since a time, newest first."""
    return conn.all("SELECT id, delta, reason, reference, created_at FROM credit_ledger "
                    "WHERE user_id = ? AND created_at >= ? ORDER BY id DESC LIMIT ?", (user_id, since, limit))


def credit_ledger_sum(conn: Connection, user_id: int) -> int:
    """The sum of a user's ledger lines (equals the balance)."""
    return int(conn.scalar("SELECT COALESCE(SUM(delta), 0) AS s FROM credit_ledger WHERE user_id = ?",
                           (user_id,)) or 0)


# --- billing -----------------------------------------------------------------------------------

def user_stripe_customer(conn: Connection, user_id: int) -> str | None:
    """The Stripe customer id of a user, or None."""
    return conn.scalar("SELECT stripe_customer_id FROM users WHERE id = ?", (user_id,))


def user_set_stripe_customer(conn: Connection, user_id: int, customer_id: str) -> None:
    """Remember a user's Stripe customer id."""
    conn.execute("UPDATE users SET stripe_customer_id = ? WHERE id = ?", (customer_id, user_id))


def user_by_stripe_customer(conn: Connection, customer_id: str) -> dict | None:
    """The user with this Stripe customer id, or None."""
    return conn.one("SELECT id, display_name, email FROM users WHERE stripe_customer_id = ?", (customer_id,))


_SUBSCRIPTION_COLUMNS = ("id, user_id, stripe_subscription_id, stripe_customer_id, status, price_id, "
                         "current_period_start, current_period_end, cancel_at_period_end, cancel_at, ended_at, "
                         "created_at, updated_at")


_SUBSCRIPTION_FIELDS = tuple(_SUBSCRIPTION_COLUMNS.split(", "))


def subscription_latest(conn: Connection, user_id: int) -> dict | None:
    """A user's most recent subscription row, or None."""
    return conn.one(f"SELECT {_SUBSCRIPTION_COLUMNS} FROM subscriptions WHERE user_id = ? ORDER BY id DESC LIMIT 1",
                    (user_id,))


def subscription_by_stripe_id(conn: Connection, stripe_subscription_id: str) -> dict | None:
    """The subscription row for a Stripe subscription id, or None."""
    return conn.one(f"SELECT {_SUBSCRIPTION_COLUMNS} FROM subscriptions WHERE stripe_subscription_id = ?",
                    (stripe_subscription_id,))


def subscription_upsert(conn: Connection, user_id: int, fields: dict, now: int) -> None:
    """Store a subscription as Stripe describes it now (insert, or update the row with its Stripe id)."""
    values = (fields["customer"], fields["status"], fields["price_id"], fields["current_period_start"],
              fields["current_period_end"], int(fields["cancel_at_period_end"]), fields["cancel_at"],
              fields["ended_at"], now)
    # One statement, not UPDATE-then-INSERT: two deliveries for a new subscription at once (a webhook and the
    # success page, say) made the second INSERT fail on MariaDB, whose REPEATABLE READ check saw no row yet.
    columns = ("stripe_customer_id", "status", "price_id", "current_period_start", "current_period_end",
               "cancel_at_period_end", "cancel_at", "ended_at", "updated_at")
    if conn.engine == "mysql":
        update = ", ".join(f"{c} = VALUES({c})" for c in columns)
        tail = f"ON DUPLICATE KEY UPDATE {update}"
    else:
        update = ", ".join(f"{c} = excluded.{c}" for c in columns)
        tail = f"ON CONFLICT (stripe_subscription_id) DO UPDATE SET {update}"
    conn.execute(
        "INSERT INTO subscriptions (user_id, stripe_subscription_id, stripe_customer_id, status, price_id, "
        "current_period_start, current_period_end, cancel_at_period_end, cancel_at, ended_at, updated_at, "
        f"created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) {tail}", (user_id, fields["id"], *values, now))


def user_set_billing_hold(conn: Connection, user_id: int, hold: str | None) -> None:
    """Set (a reason such as 'dispute') or clear (None) the hold that stops a user's new batches."""
    conn.execute("UPDATE users SET billing_hold = ? WHERE id = ?", (hold, user_id))


def dispute_upsert(conn: Connection, dispute: dict, now: int) -> None:
    """Store a dispute as Stripe describes it now (id, user_id, charge_id, invoice_id, status), in one statement."""
    if conn.engine == "mysql":
        tail = "ON DUPLICATE KEY UPDATE status = VALUES(status), updated_at = VALUES(updated_at)"
    else:
        tail = "ON CONFLICT (id) DO UPDATE SET status = excluded.status, updated_at = excluded.updated_at"
    conn.execute("INSERT INTO stripe_disputes (id, user_id, charge_id, invoice_id, status, created_at, updated_at) "
                 f"VALUES (?, ?, ?, ?, ?, ?, ?) {tail}", (dispute["id"], dispute["user_id"], dispute["charge_id"],
                                                          dispute["invoice_id"], dispute["status"], now, now))


def dispute_lost_for_invoice(conn: Connection, invoice_id: str) -> bool:
    """True when a dispute of this invoice's payment was lost."""
    return conn.one("SELECT id FROM stripe_disputes WHERE invoice_id = ? AND status = 'lost' LIMIT 1",
                    (invoice_id,)) is not None


def disputes_of(conn: Connection, user_id: int) -> list[dict]:
    """A user's disputes, newest first."""
    return conn.all("SELECT id, charge_id, invoice_id, status, created_at, updated_at FROM stripe_disputes "
                    "WHERE user_id = ? ORDER BY created_at DESC, id DESC", (user_id,))


def stripe_event_seen(conn: Connection, event_id: str) -> bool:
    """True when this webhook event was applied already."""
    return conn.one("SELECT id FROM stripe_events WHERE id = ?", (event_id,)) is not None


def stripe_event_insert(conn: Connection, event_id: str, kind: str, now: int) -> bool:
    """Record a webhook event as applied; False when it already was (call inside the effects' transaction)."""
    if conn.engine == "mysql":
        sql = "INSERT INTO stripe_events (id, type, received_at) VALUES (?, ?, ?) ON DUPLICATE KEY UPDATE id = id"
    else:
        sql = "INSERT INTO stripe_events (id, type, received_at) VALUES (?, ?, ?) ON CONFLICT (id) DO NOTHING"
    return conn.execute(sql, (event_id, kind, now)) == 1


def stripe_events_delete_before(conn: Connection, before: int) -> int:
    """Forget applied webhook events older than a time (Stripe stops retrying after three days)."""
    return conn.execute("DELETE FROM stripe_events WHERE received_at < ?", (before,))


# --- batches -----------------------------------------------------------------------------------

_BATCH_COLUMNS = ("id, user_id, request_token, status, pause_reason, model, ratio, quality, image_format, "
                  "resolution, complexity, speed, notify_email, notified_at, lang, width, "
                  "height, style, prompt_separator, item_count, credits_per_item, last_started_ms, created_at, "
                  "updated_at, change_seq")
_ITEM_COLUMNS = ("id, batch_id, position, prompt, file_name, status, attempts, charge, charged, "
                 "not_before_ms, lease_until, call_until, worker, error_code, error_message, request_id, result_path, "
                 "result_bytes, result_width, result_height, input_tokens, output_tokens, upstream_id, created_at, "
                 "started_at, finished_at, changed_seq")


# Delta polls: every change of a batch or of its items raises the batch's change_seq in the same transaction, and
# stamps the items it changed with the new value (changed_seq). The batch's row is taken first (a batch-level
# UPDATE, or _bump before the items), so changes of one batch commit in the order of their numbers: once a
# reader sees change_seq N, every item change numbered N or less is committed and visible.

def _bump(conn: Connection, batch_id: int) -> int:
    """Raise a batch's change count (taking its row until the transaction ends); the new count (0: no batch)."""
    if conn.engine == "mysql":
        return conn._run("UPDATE batches SET change_seq = LAST_INSERT_ID(change_seq + 1) WHERE id = ?",
                         (batch_id,)).lastrowid or 0
    rows = conn.all("UPDATE batches SET change_seq = change_seq + 1 WHERE id = ? RETURNING change_seq", (batch_id,))
    return rows[0]["change_seq"] if rows else 0


def _change_items(conn: Connection, batch_id: int, sql: str, params: tuple | list) -> int:
    """Run an UPDATE of one batch's items as a change of the batch; sql's first placeholder takes the new count."""
    with conn.transaction():
        return conn.execute(sql, (_bump(conn, batch_id), *params))


def _change_items_across(conn: Connection, sets: str, set_params: tuple, where: str, params: tuple) -> int:
    """Run an UPDATE of items that may span batches: batch by batch in id order, each a change of its batch."""
    with conn.transaction():
        found = conn.all(f"SELECT DISTINCT batch_id FROM batch_items WHERE {where} ORDER BY batch_id", params)
        return sum(_change_items(conn, row["batch_id"], f"UPDATE batch_items SET changed_seq = ?, {sets} "
                                 f"WHERE batch_id = ? AND {where}", (*set_params, row["batch_id"], *params))
                   for row in found)


def batch_insert(conn: Connection, user_id: int, token: str, checked, size: tuple[int, int], now: int) -> int:
    """Store a batch (status active); return its id."""
    return conn.insert(
        "INSERT INTO batches (user_id, request_token, status, model, ratio, quality, image_format, resolution, "
        "complexity, speed, notify_email, lang, width, height, style, prompt_separator, item_count, "
        "credits_per_item, created_at, updated_at) "
        "VALUES (?, ?, 'active', ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        (user_id, token, checked.model, checked.ratio, checked.quality, checked.image_format, checked.resolution,
         checked.complexity, checked.speed, int(checked.notify), checked.lang, size[0], size[1], checked.style,
         checked.separator, len(checked.items), checked.credits_per_item, now, now))


def batch_items_insert(conn: Connection, batch_id: int, items: list[tuple[int, str, str]], now: int,
                       hold_after: int | None = None) -> None:
    """Store a batch's items (position, prompt, file name) in list order: queued, or held past `hold_after`."""
    sql = ("INSERT INTO batch_items (batch_id, position, prompt, file_name, status, created_at) "
           "VALUES (?, ?, ?, ?, ?, ?)")
    for position, prompt, file_name in items:
        status = "held" if hold_after is not None and position > hold_after else "queued"
        conn.execute(sql, (batch_id, position, prompt, file_name, status, now))


def batch_items_release_held(conn: Connection, batch_id: int) -> int:
    """Queue the items a test run held back; return how many."""
    return _change_items(conn, batch_id, "UPDATE batch_items SET changed_seq = ?, status = 'queued' "
                         "WHERE batch_id = ? AND status = 'held'", (batch_id,))


def batch_by_token(conn: Connection, user_id: int, token: str) -> dict | None:
    """The user's batch created with this one-time token, or None."""
    return conn.one(f"SELECT {_BATCH_COLUMNS} FROM batches WHERE user_id = ? AND request_token = ?", (user_id, token))


def batch_get(conn: Connection, batch_id: int) -> dict | None:
    """One batch, or None."""
    return conn.one(f"SELECT {_BATCH_COLUMNS} FROM batches WHERE id = ?", (batch_id,))


def batches_of(conn: Connection, user_id: int, limit: int = 50, ids_only: bool = False) -> list[dict]:
    """A user's batches, newest first (with `ids_only`, just their ids)."""
    return conn.all(f"SELECT {'id' if ids_only else _BATCH_COLUMNS} FROM batches WHERE user_id = ? "
                    "ORDER BY id DESC LIMIT ?", (user_id, limit))


def batches_open_count(conn: Connection, user_id: int) -> int:
    """How many of a user's batches are unfinished: active, paused, or holding a test run's rest."""
    return conn.scalar(
        "SELECT COUNT(*) AS n FROM batches b WHERE b.user_id = ? AND (b.status IN ('active', 'paused') "
        "OR EXISTS (SELECT 1 FROM batch_items i WHERE i.batch_id = b.id AND i.status = 'held'))", (user_id,))


_FINISHED = ("b.status IN ('done', 'cancelled') AND NOT EXISTS (SELECT 1 FROM batch_items i "
             "WHERE i.batch_id = b.id AND i.status IN ('held', 'queued', 'running', 'waiting'))")


def batches_finished(conn: Connection, *, user_id: int | None = None, before: int | None = None,
                     limit: int = 1000) -> list[dict]:
    """Finished batches (done or cancelled, nothing held) of one user, or of everyone last changed before a time."""
    where, params = [_FINISHED], []
    if user_id is not None:
        where.append("b.user_id = ?")
        params.append(user_id)
    if before is not None:
        where.append("b.updated_at < ?")
        params.append(before)
    return conn.all(f"SELECT b.id, b.user_id FROM batches b WHERE {' AND '.join(where)} ORDER BY b.id LIMIT ?",
                    (*params, limit))


def batch_delete(conn: Connection, batch_id: int) -> list[str]:
    """Delete a batch and its items; return the result files its items still pointed at."""
    paths = [row["result_path"] for row in conn.all(
        "SELECT result_path FROM batch_items WHERE batch_id = ? AND result_path IS NOT NULL", (batch_id,))]
    conn.execute("DELETE FROM batch_items WHERE batch_id = ?", (batch_id,))
    conn.execute("DELETE FROM batches WHERE id = ?", (batch_id,))
    return paths


def batch_set_status(conn: Connection, batch_id: int, status: str, reason: str | None, now: int) -> None:
    """Set a batch's status (active, paused, done, cancelled) and why it is paused."""
    conn.execute("UPDATE batches SET status = ?, pause_reason = ?, updated_at = ?, change_seq = change_seq + 1 "
                 "WHERE id = ?", (status, reason, now, batch_id))


def batches_pause_active(conn: Connection, user_id: int, reason: str, now: int) -> int:
    """Pause every active batch of a user (the worker takes nothing from a paused batch); return how many."""
    return conn.execute("UPDATE batches SET status = 'paused', pause_reason = ?, updated_at = ?, "
                        "change_seq = change_seq + 1 WHERE user_id = ? AND status = 'active'", (reason, now, user_id))


def batches_pause_model(conn: Connection, model: str, reason: str, now: int) -> int:
    """Pause every active batch of a model, whoever owns it (OpenAI refused the model); return how many."""
    return conn.execute("UPDATE batches SET status = 'paused', pause_reason = ?, updated_at = ?, "
                        "change_seq = change_seq + 1 WHERE status = 'active' AND model = ?", (reason, now, model))


def batch_finish_if_idle(conn: Connection, batch_id: int, now: int) -> None:
    """Mark a batch done when none of its items is queued or running any more."""
    waiting = conn.scalar("SELECT COUNT(*) AS n FROM batch_items WHERE batch_id = ? "
                          "AND status IN ('queued', 'running', 'waiting')", (batch_id,))
    if not waiting:
        conn.execute("UPDATE batches SET status = 'done', pause_reason = NULL, updated_at = ?, "
                     "change_seq = change_seq + 1 WHERE id = ? AND status IN ('active', 'paused')", (now, batch_id))


def batch_items_of(conn: Connection, batch_id: int) -> list[dict]:
    """A batch's items in list order."""
    return conn.all(f"SELECT {_ITEM_COLUMNS} FROM batch_items WHERE batch_id = ? ORDER BY position", (batch_id,))


_PROGRESS_COLUMNS = ("id", "position", "prompt", "file_name", "status", "error_code", "result_bytes", "result_width",
                     "result_height", "started_at", "finished_at", "changed_seq")


def batch_items_progress(conn: Connection, batch_id: int, since: int | None = None) -> list[dict]:
    """A batch's items in list order (with `since`, those changed after that change count), with only what its
    page and its poll show (the poll runs every 2 s)."""
    changed, params = ("", (batch_id,)) if since is None else (" AND changed_seq > ?", (batch_id, since))
    return conn.all(f"SELECT {', '.join(_PROGRESS_COLUMNS)} FROM batch_items WHERE batch_id = ?{changed} "
                    "ORDER BY position", params)


_POLL_HEAD = ("SELECT " + ", ".join(f"b.{name}" for name in _BATCH_COLUMNS.split(", "))
              + ", (SELECT c.balance FROM credit_balances c WHERE c.user_id = b.user_id) AS credits_left, "
              "(SELECT w.value FROM worker_state w WHERE w.name = 'pause') AS service_pause")


def batch_poll_head(conn: Connection, batch_id: int) -> dict | None:
    """One batch with its owner's credits (credits_left) and the service-wide pause (service_pause, raw), or None."""
    return conn.one(f"{_POLL_HEAD} FROM batches b WHERE b.id = ?", (batch_id,))


# What a poll answers of its batch (describe() in routes/api.py, batches.status): fewer columns than the page's.
_POLL_COLUMNS = ("id", "user_id", "status", "pause_reason", "model", "ratio", "quality", "image_format", "resolution",
                 "complexity", "speed", "width", "height", "style", "prompt_separator", "item_count",
                 "credits_per_item", "created_at", "change_seq")


def batch_poll_check(conn: Connection, session_id: str, batch_id: int) -> dict | None:
    """What a poll needs of the batch (the _POLL_COLUMNS, credits_left, service_pause) and of the session
    (session_expires_at, session_last_seen_at), in one query, if this session's user owns the batch; or None."""
    return conn.one("SELECT " + ", ".join(f"b.{name}" for name in _POLL_COLUMNS)
                    + ", c.balance AS credits_left, w.value AS service_pause, s.expires_at AS session_expires_at, "
                    "s.last_seen_at AS session_last_seen_at FROM sessions s "
                    "JOIN batches b ON b.user_id = s.user_id AND b.id = ? "
                    "LEFT JOIN credit_balances c ON c.user_id = b.user_id "
                    "LEFT JOIN worker_state w ON w.name = 'pause' WHERE s.id = ?", (batch_id, session_id))


def batch_item_counts(conn: Connection, batch_id: int) -> list[dict]:
    """How many of a batch's items are in each status, by failure reason: rows of status, error_code, n."""
    return conn.all("SELECT status, error_code, COUNT(*) AS n FROM batch_items WHERE batch_id = ? "
                    "GROUP BY status, error_code", (batch_id,))


def batch_item_get(conn: Connection, item_id: int) -> dict | None:
    """One item, or None."""
    return conn.one(f"SELECT {_ITEM_COLUMNS} FROM batch_items WHERE id = ?", (item_id,))


def batch_items_queued(conn: Connection, batch_id: int) -> list[dict]:
    """A batch's items that have not started (queued, or held back by a test run)."""
    return conn.all(f"SELECT {_ITEM_COLUMNS} FROM batch_items WHERE batch_id = ? AND status IN ('queued', 'held')",
                    (batch_id,))


def batch_item_cancel(conn: Connection, batch_id: int, item_id: int, now: int) -> bool:
    """Cancel an item that has not started (queued or held); True if it was."""
    return _change_items(conn, batch_id, "UPDATE batch_items SET changed_seq = ?, status = 'cancelled', charged = 0, "
                         "finished_at = ? WHERE id = ? AND status IN ('queued', 'held')", (now, item_id)) == 1


def batch_items_retry_failed(conn: Connection, batch_id: int, now: int, item_id: int | None = None,
                             error_code: str | None = None, skip_code: str | None = None) -> int:
    """Queue a batch's failed items (or one, or those failed for one reason, or all but one reason) again as a new
    charge; how many."""
    only, params = "", [batch_id]
    if skip_code is not None:
        only, params = only + " AND (error_code IS NULL OR error_code <> ?)", [*params, skip_code]
    if item_id is not None:
        only, params = only + " AND id = ?", [*params, item_id]
    if error_code is not None:
        only, params = only + " AND error_code = ?", [*params, error_code]
    return _change_items(
        conn, batch_id, "UPDATE batch_items SET changed_seq = ?, status = 'queued', charge = charge + 1, charged = 0, "
        "attempts = 0, not_before_ms = 0, upstream_id = NULL, error_code = NULL, error_message = NULL, "
        "finished_at = NULL WHERE batch_id = ? AND status = 'failed'" + only, tuple(params))


def batch_item_edit_prompt(conn: Connection, batch_id: int, item_id: int, prompt: str) -> bool:
    """Give a failed item a new prompt (before it is queued again); True if it was failed."""
    return _change_items(conn, batch_id, "UPDATE batch_items SET changed_seq = ?, prompt = ? WHERE id = ? "
                         "AND status = 'failed'", (prompt, item_id)) == 1


def batch_set_speed(conn: Connection, batch_id: int, speed: str, credits_per_item: int, now: int) -> None:
    """Change how a batch's remaining items are made ('now' or 'economy') and what each costs from now on."""
    conn.execute("UPDATE batches SET speed = ?, credits_per_item = ?, updated_at = ?, change_seq = change_seq + 1 "
                 "WHERE id = ?", (speed, credits_per_item, now, batch_id))


def batches_economy_unfinished(conn: Connection, user_id: int) -> list[dict]:
    """A user's economy batches that still have items to send or waiting at OpenAI, newest first."""
    return conn.all(
        "SELECT b.id, b.item_count, b.model, b.created_at, b.status, (SELECT COUNT(*) FROM batch_items i "
        "WHERE i.batch_id = b.id AND i.status = 'waiting') AS waiting FROM batches b WHERE b.user_id = ? "
        "AND b.speed = 'economy' AND b.status IN ('active', 'paused') ORDER BY b.id DESC", (user_id,))


def batch_item_delivered(conn: Connection, batch_id: int, item_id: int, now: int) -> bool:
    """Mark a done item delivered (its file is about to be deleted); True if this call did it."""
    return _change_items(conn, batch_id, "UPDATE batch_items SET changed_seq = ?, status = 'delivered', "
                         "finished_at = COALESCE(finished_at, ?) WHERE id = ? AND status = 'done'", (now, item_id)) == 1


def items_usage(conn: Connection, since: int | None = None) -> list[dict]:
    """Every generated image's recorded tokens with its batch's model, quality, resolution and ratio (`prices`).

    Generated means done, delivered or expired (the image was made and paid for upstream); items
    without both token counts are left out, and with `since` those finished before that time.
    """
    where = ("i.status IN ('done', 'delivered', 'expired') AND i.input_tokens IS NOT NULL "
             "AND i.output_tokens IS NOT NULL")
    params: tuple = ()
    if since is not None:
        where += " AND i.finished_at >= ?"
        params = (since,)
    return conn.all("SELECT b.model, b.quality, b.resolution, b.ratio, i.input_tokens, i.output_tokens "
                    f"FROM batch_items i JOIN batches b ON b.id = i.batch_id WHERE {where}", params)


# --- the worker's queue --------------------------------------------------------------------------

# --- economy batches (OpenAI's Batch API) ------------------------------------------------------------

_UPSTREAM_COLUMNS = ("id, model, status, openai_batch_id, input_file_id, output_file_id, error_file_id, total, "
                     "completed, failed, error_message, polled_at, created_at, updated_at")
UPSTREAM_OPEN = ("submitted", "validating", "in_progress", "finalizing", "cancelling")


def economy_batches_waiting(conn: Connection) -> list[dict]:
    """The active economy batches with items queued and not yet sent upstream, oldest first."""
    return conn.all(f"SELECT {_BATCH_COLUMNS} FROM batches b WHERE b.status = 'active' AND b.speed = 'economy' "
                    "AND EXISTS (SELECT 1 FROM batch_items i WHERE i.batch_id = b.id AND i.status = 'queued' "
                    "AND i.upstream_id IS NULL) ORDER BY b.id")


def economy_items_to_send(conn: Connection, batch_id: int, limit: int) -> list[dict]:
    """A batch's queued items not yet sent upstream, in list order."""
    return conn.all(f"SELECT {_ITEM_COLUMNS} FROM batch_items WHERE batch_id = ? AND status = 'queued' "
                    "AND upstream_id IS NULL ORDER BY position LIMIT ?", (batch_id, limit))


def upstream_insert(conn: Connection, model: str, now: int) -> int:
    """A new upstream job row (status 'building', nothing sent yet); its id."""
    return conn.insert("INSERT INTO upstream_batches (model, status, created_at, updated_at) "
                       "VALUES (?, 'building', ?, ?)", (model, now, now))


def upstream_get(conn: Connection, upstream_id: int) -> dict | None:
    """One upstream job row, or None."""
    return conn.one(f"SELECT {_UPSTREAM_COLUMNS} FROM upstream_batches WHERE id = ?", (upstream_id,))


def upstream_update(conn: Connection, upstream_id: int, now: int, **fields) -> None:
    """Change an upstream job row's fields (status, file ids, counts, error_message, polled_at)."""
    allowed = {"status", "openai_batch_id", "input_file_id", "output_file_id", "error_file_id", "total", "completed",
               "failed", "error_message", "polled_at"}
    names = [name for name in fields if name in allowed]
    sets = ", ".join(f"{name} = ?" for name in names)
    conn.execute(f"UPDATE upstream_batches SET {sets}, updated_at = ? WHERE id = ?",
                 (*(fields[name] for name in names), now, upstream_id))


def upstreams_to_poll(conn: Connection, polled_before: int) -> list[dict]:
    """Upstream jobs still running upstream and not asked about since `polled_before`, plus finished ones to collect."""
    marks = ", ".join("?" * len(UPSTREAM_OPEN))
    return conn.all(f"SELECT {_UPSTREAM_COLUMNS} FROM upstream_batches WHERE (status IN ({marks}) AND polled_at <= ?) "
                    "OR status IN ('completed', 'failed', 'expired', 'cancelled') ORDER BY id",
                    (*UPSTREAM_OPEN, polled_before))


def upstreams_stale_building(conn: Connection, before: int) -> list[dict]:
    """Upstream jobs still 'building' since before `before`: a worker died between marking and sending them."""
    return conn.all(f"SELECT {_UPSTREAM_COLUMNS} FROM upstream_batches WHERE status = 'building' AND created_at < ?",
                    (before,))


def upstreams_of_batch(conn: Connection, batch_id: int) -> list[dict]:
    """The upstream jobs that hold items of this batch still waiting."""
    return conn.all(f"SELECT {_UPSTREAM_COLUMNS} FROM upstream_batches WHERE id IN (SELECT upstream_id FROM "
                    "batch_items WHERE batch_id = ? AND status = 'waiting')", (batch_id,))


def batch_items_send(conn: Connection, item_ids: list[int], upstream_id: int) -> int:
    """Mark queued items as sent to an upstream job (status 'waiting'); how many."""
    marks = ", ".join("?" * len(item_ids))
    return _change_items_across(conn, "status = 'waiting', upstream_id = ?", (upstream_id,),
                                f"id IN ({marks}) AND status = 'queued'", tuple(item_ids))


def batch_items_unsend(conn: Connection, upstream_id: int, item_ids: list[int] | None = None) -> int:
    """Put an upstream job's waiting items (or some of them) back in the queue, not sent after all; how many."""
    only = f" AND id IN ({', '.join('?' * len(item_ids))})" if item_ids else ""
    return _change_items_across(conn, "status = 'queued', upstream_id = NULL", (),
                                "upstream_id = ? AND status = 'waiting'" + only, (upstream_id, *(item_ids or ())))


def items_waiting_of(conn: Connection, upstream_id: int) -> list[dict]:
    """An upstream job's items still waiting for their result."""
    return conn.all(f"SELECT {_ITEM_COLUMNS} FROM batch_items WHERE upstream_id = ? AND status = 'waiting'",
                    (upstream_id,))


def item_settle_done(conn: Connection, batch_id: int, item_id: int, path: str, size: int, width: int, height: int,
                     request_id: str | None, usage: tuple[int | None, int | None], now: int) -> bool:
    """Mark a waiting (economy) item done with its file; True if it was still waiting."""
    return _change_items(
        conn, batch_id,
        "UPDATE batch_items SET changed_seq = ?, status = 'done', result_path = ?, result_bytes = ?, result_width = ?, "
        "result_height = ?, request_id = ?, input_tokens = ?, output_tokens = ?, finished_at = ? "
        "WHERE id = ? AND status = 'waiting'",
        (path, size, width, height, request_id, usage[0], usage[1], now, item_id)) == 1


def item_settle_cancelled(conn: Connection, batch_id: int, item_id: int, now: int) -> bool:
    """Mark a waiting (economy) item cancelled (its job was cancelled before it ran); True if it was waiting."""
    return _change_items(conn, batch_id, "UPDATE batch_items SET changed_seq = ?, status = 'cancelled', charged = 0, "
                         "finished_at = ? WHERE id = ? AND status = 'waiting'", (now, item_id)) == 1


def item_settle_failed(conn: Connection, batch_id: int, item_id: int, code: str, message: str,
                       request_id: str | None, now: int) -> bool:
    """Mark a waiting (economy) item failed with a reason; True if it was still waiting."""
    return _change_items(
        conn, batch_id,
        "UPDATE batch_items SET changed_seq = ?, status = 'failed', error_code = ?, error_message = ?, request_id = ?, "
        "finished_at = ? WHERE id = ? AND status = 'waiting'", (code, message[:500], request_id, now, item_id)) == 1


def worker_state_get(conn: Connection, name: str, lock: bool = False) -> str | None:
    """A worker state value (JSON text); with lock=True the row is locked until the transaction ends (MariaDB)."""
    suffix = " FOR UPDATE" if lock and conn.engine == "mysql" else ""
    return conn.scalar(f"SELECT value FROM worker_state WHERE name = ?{suffix}", (name,))


def worker_state_set(conn: Connection, name: str, value: str, now: int) -> None:
    """Write a worker state value."""
    if conn.engine == "mysql":
        conn.execute("INSERT INTO worker_state (name, value, updated_at) VALUES (?, ?, ?) "
                     "ON DUPLICATE KEY UPDATE value = VALUES(value), updated_at = VALUES(updated_at)",
                     (name, value, now))
    else:
        conn.execute("INSERT INTO worker_state (name, value, updated_at) VALUES (?, ?, ?) "
                     "ON CONFLICT (name) DO UPDATE SET value = excluded.value, updated_at = excluded.updated_at",
                     (name, value, now))


def items_running(conn: Connection, now: int) -> int:
    """Calls to the upstream in flight now (running items whose call is live), across all workers."""
    return conn.scalar("SELECT COUNT(*) AS n FROM batch_items WHERE status = 'running' AND call_until > ?", (now,))


def upstream_calls_since(conn: Connection, since_ms: int) -> tuple[int, int | None]:
    """How many upstream calls started since a time, and the oldest of them (ms)."""
    row = conn.one("SELECT COUNT(*) AS n, MIN(started_ms) AS oldest FROM upstream_calls WHERE started_ms > ?",
                   (since_ms,))
    return row["n"], row["oldest"]


def upstream_call_record(conn: Connection, started_ms: int) -> None:
    """Remember the start of an upstream call (for the images-per-minute budget)."""
    conn.execute("INSERT INTO upstream_calls (started_ms) VALUES (?)", (started_ms,))
    conn.execute("DELETE FROM upstream_calls WHERE started_ms < ?", (started_ms - 120_000,))


def next_batch_to_serve(conn: Connection, now: int, now_ms: int) -> dict | None:
    """The active batch whose owner has the fewest calls in flight, then the one served longest ago, with work ready."""
    return conn.one(
        "SELECT b.id, b.user_id, b.last_started_ms, "
        "(SELECT COUNT(*) FROM batch_items r JOIN batches rb ON rb.id = r.batch_id "
        " WHERE rb.user_id = b.user_id AND r.status = 'running' AND r.call_until > ?) AS running "
        "FROM batches b WHERE b.status = 'active' AND b.speed = 'now' "
        "AND EXISTS (SELECT 1 FROM batch_items i WHERE i.batch_id = b.id "
        " AND ((i.status = 'queued' AND i.not_before_ms <= ?) OR (i.status = 'running' AND i.lease_until <= ?))) "
        "ORDER BY running, b.last_started_ms, b.id LIMIT 1", (now, now_ms, now))


def next_item_of_batch(conn: Connection, batch_id: int, now: int, now_ms: int) -> dict | None:
    """A batch's first ready item in list order (queued and due, or running with an expired lease)."""
    return conn.one(
        f"SELECT {_ITEM_COLUMNS} FROM batch_items WHERE batch_id = ? AND ((status = 'queued' AND not_before_ms <= ?) "
        "OR (status = 'running' AND lease_until <= ?)) ORDER BY position LIMIT 1", (batch_id, now_ms, now))


def soonest_due_ms(conn: Connection) -> int | None:
    """When the next queued item of an active batch becomes due (ms), or None when nothing is queued."""
    return conn.scalar("SELECT MIN(i.not_before_ms) AS due FROM batch_items i JOIN batches b ON b.id = i.batch_id "
                       "WHERE b.status = 'active' AND b.speed = 'now' AND i.status = 'queued'")


def batch_item_claim(conn: Connection, batch_id: int, item_id: int, worker: str, lease_until: int, call_until: int,
                     now: int) -> bool:
    """Take a ready item for a worker (one attempt more, its call counted in flight); True if this call got it."""
    return _change_items(
        conn, batch_id,
        "UPDATE batch_items SET changed_seq = ?, status = 'running', attempts = attempts + 1, worker = ?, "
        "lease_until = ?, call_until = ?, started_at = ? "
        "WHERE id = ? AND (status = 'queued' OR (status = 'running' AND lease_until <= ?))",
        (worker, lease_until, call_until, now, item_id, now)) == 1


def batch_items_release_worker(conn: Connection, worker: str) -> int:
    """Queue again the items a worker thread holds (it lost its database mid-item); their charge stays reserved."""
    return _change_items_across(conn, "status = 'queued', lease_until = 0, call_until = 0, worker = NULL", (),
                                "worker = ? AND status = 'running'", (worker,))


def batch_item_call_ended(conn: Connection, item_id: int, worker: str) -> None:
    """The item's upstream call is over (its slot is free while the worker stores the result)."""
    conn.execute("UPDATE batch_items SET call_until = 0 WHERE id = ? AND worker = ?", (item_id, worker))


def batch_touch_started(conn: Connection, batch_id: int, now_ms: int) -> None:
    """Remember when a batch was last served (round robin among equals)."""
    conn.execute("UPDATE batches SET last_started_ms = ? WHERE id = ?", (now_ms, batch_id))


def batch_item_set_charged(conn: Connection, item_id: int, amount: int) -> None:
    """Record the credits an item holds (reserved) or 0 once refunded."""
    conn.execute("UPDATE batch_items SET charged = ? WHERE id = ?", (amount, item_id))


def batch_item_done(conn: Connection, batch_id: int, item_id: int, worker: str, path: str, size: int, width: int,
                    height: int,
                    request_id: str | None, now: int, usage: tuple[int | None, int | None] = (None, None)) -> bool:
    """Mark an item done with its file and the call's usage (input, output tokens), if this worker still holds it."""
    return _change_items(
        conn, batch_id,
        "UPDATE batch_items SET changed_seq = ?, status = 'done', result_path = ?, result_bytes = ?, result_width = ?, "
        "result_height = ?, request_id = ?, input_tokens = ?, output_tokens = ?, finished_at = ?, lease_until = 0, "
        "error_code = NULL, error_message = NULL WHERE id = ? AND status = 'running' AND worker = ?",
        (path, size, width, height, request_id, usage[0], usage[1], now, item_id, worker)) == 1


def batch_item_fail(conn: Connection, batch_id: int, item_id: int, worker: str, code: str, message: str,
                    request_id: str | None,
                    now: int) -> bool:
    """Mark an item failed with a reason, if this worker still holds it."""
    return _change_items(
        conn, batch_id,
        "UPDATE batch_items SET changed_seq = ?, status = 'failed', error_code = ?, error_message = ?, request_id = ?, "
        "finished_at = ?, lease_until = 0, charged = 0 WHERE id = ? AND status = 'running' AND worker = ?",
        (code, message[:500], request_id, now, item_id, worker)) == 1


def batch_item_requeue(conn: Connection, batch_id: int, item_id: int, worker: str, not_before_ms: int,
                       count_attempt: bool,
                       code: str | None, message: str | None) -> bool:
    """Put an item back in the queue (to retry after not_before_ms), if this worker still holds it."""
    return _change_items(
        conn, batch_id, "UPDATE batch_items SET changed_seq = ?, status = 'queued', lease_until = 0, "
        "not_before_ms = ?, "
        "attempts = attempts - ?, error_code = ?, error_message = ? WHERE id = ? AND status = 'running' AND worker = ?",
        (not_before_ms, 0 if count_attempt else 1, code, (message or "")[:500] or None, item_id, worker)) == 1


def batch_item_requeue_refunded(conn: Connection, batch_id: int, item_id: int, worker: str) -> bool:
    """Put an item back in the queue as a new charge (its reservation was refunded), if this worker holds it."""
    return _change_items(
        conn, batch_id, "UPDATE batch_items SET changed_seq = ?, status = 'queued', lease_until = 0, "
        "charge = charge + 1, charged = 0, "
        "attempts = attempts - 1 WHERE id = ? AND status = 'running' AND worker = ?", (item_id, worker)) == 1


def items_expired_results(conn: Connection, before: int) -> list[dict]:
    """Done items whose file waited since before this time."""
    return conn.all(f"SELECT {_ITEM_COLUMNS} FROM batch_items WHERE status = 'done' AND finished_at < ?", (before,))


def batch_item_expire(conn: Connection, batch_id: int, item_id: int, now: int) -> bool:
    """Mark a done item expired (its file is deleted); True if it was done."""
    return _change_items(conn, batch_id, "UPDATE batch_items SET changed_seq = ?, status = 'expired', "
                         "result_path = NULL WHERE id = ? AND status = 'done'", (item_id,)) == 1


def result_paths(conn: Connection) -> set[str]:
    """Every result file a done item still points to."""
    return {r["result_path"] for r in conn.all("SELECT result_path FROM batch_items WHERE status = 'done' "
                                                 "AND result_path IS NOT NULL")}


def items_stale_leases(conn: Connection, now: int) -> int:
    """Put running items whose worker died (lease expired) back in the queue; return how many."""
    return _change_items_across(conn, "status = 'queued', lease_until = 0", (),
                                "status = 'running' AND lease_until <= ?", (now,))


# --- batch emails ---

_NOTIFY_COUNT = "(SELECT COUNT(*) FROM batch_items c WHERE c.batch_id = b.id AND c.status IN ({statuses}))"


def batches_to_notify(conn: Connection, finished_since: int, limit: int) -> list[dict]:
    """Finished batches whose owner asked for an email not sent yet (oldest first), with the address and counts.

    Only batches last changed at or after `finished_since` (older ones have no image left to
    collect) and owners with an address. `ready` counts the images (done, or already delivered).
    """
    ready = _NOTIFY_COUNT.format(statuses="'done', 'delivered'")
    failed = _NOTIFY_COUNT.format(statuses="'failed'")
    cancelled = _NOTIFY_COUNT.format(statuses="'cancelled'")
    return conn.all(
        f"SELECT b.id, b.user_id, b.lang, b.item_count, u.email, {ready} AS ready, {failed} AS failed, "
        f"{cancelled} AS cancelled FROM batches b JOIN users u ON u.id = b.user_id "
        f"WHERE b.notify_email = 1 AND b.notified_at IS NULL AND u.email <> '' AND b.updated_at >= ? "
        f"AND {_FINISHED} ORDER BY b.id LIMIT ?", (finished_since, limit))


def batch_notify_claim(conn: Connection, batch_id: int, now: int) -> bool:
    """Mark a batch's email as sent before sending it; False when another run claimed it first."""
    return conn.execute("UPDATE batches SET notified_at = ? WHERE id = ? AND notify_email = 1 "
                        "AND notified_at IS NULL", (now, batch_id)) == 1


def batch_notify_release(conn: Connection, batch_id: int, claimed_at: int) -> bool:
    """Undo this run's claim (the server said try later): the next run sends the email again."""
    return conn.execute("UPDATE batches SET notified_at = NULL WHERE id = ? AND notified_at = ?",
                        (batch_id, claimed_at)) == 1


# --- the owner's console ----------------------------------------------------------------------------
# Days are UTC buckets computed in SQL (t - t % 86400) so each figure is one grouped query.

def admin_money_by_day(conn: Connection, since: int) -> list[dict]:
    """Paid and refunded amounts and paid invoices per UTC day (of payment) and currency, since a time."""
    return conn.all("SELECT paid_at - paid_at % 86400 AS day, currency, SUM(amount_paid) AS paid, "
                    "SUM(amount_refunded) AS refunded, SUM(CASE WHEN amount_paid > 0 THEN 1 ELSE 0 END) AS invoices "
                    "FROM invoices WHERE paid_at >= ? GROUP BY paid_at - paid_at % 86400, currency", (since,))


# An image's outcome in the daily figures: made (done, delivered or expired later: it was made), cancelled, or
# the failure's code.
_OUTCOME = ("CASE WHEN i.status IN ('done', 'delivered', 'expired') THEN 'made' WHEN i.status = 'failed' "
            "THEN COALESCE(i.error_code, 'other') ELSE i.status END")
_IMAGES_BY_DAY = (
    f"SELECT i.finished_at - i.finished_at % 86400 AS day, b.model, b.speed, {_OUTCOME} AS outcome, "
    "COUNT(*) AS images, COALESCE(SUM(i.charged), 0) AS credits, COALESCE(SUM(i.input_tokens), 0) AS input_tokens, "
    "COALESCE(SUM(i.output_tokens), 0) AS output_tokens, "
    "COALESCE(SUM(CASE WHEN i.output_tokens IS NULL THEN i.charged ELSE 0 END), 0) AS estimated_credits "
    "FROM batch_items i JOIN batches b ON b.id = i.batch_id WHERE i.finished_at >= ? AND i.finished_at < ? "
    "AND i.status IN ('done', 'delivered', 'expired', 'failed', 'cancelled') "
    f"GROUP BY i.finished_at - i.finished_at % 86400, b.model, b.speed, {_OUTCOME}")
_CREDITS_BY_DAY = ("SELECT created_at - created_at % 86400 AS day, reason, CASE WHEN delta > 0 THEN 1 ELSE 0 END "
                   "AS positive, SUM(delta) AS delta FROM credit_ledger WHERE created_at >= ? AND created_at < ? "
                   "GROUP BY created_at - created_at % 86400, reason, CASE WHEN delta > 0 THEN 1 ELSE 0 END")


def admin_images_by_day(conn: Connection, since: int, until: int) -> list[dict]:
    """Finished images per UTC day, model, speed and outcome between two times, from the items themselves."""
    return conn.all(_IMAGES_BY_DAY, (since, until))


def admin_credits_by_day(conn: Connection, since: int, until: int) -> list[dict]:
    """The ledger's sum per UTC day, reason and sign between two times, from the ledger itself."""
    return conn.all(_CREDITS_BY_DAY, (since, until))


def admin_first_day(conn: Connection) -> int | None:
    """The earliest time an image finished or a ledger line was written (where the rollups start), or None."""
    found = [t for t in (conn.scalar("SELECT MIN(finished_at) AS t FROM batch_items"),
                         conn.scalar("SELECT MIN(created_at) AS t FROM credit_ledger")) if t is not None]
    return min(found) if found else None


def admin_rollup(conn: Connection, since: int, until: int) -> None:
    """Roll the closed days between two UTC midnights up into daily_images and daily_credits (replacing them)."""
    conn.execute("DELETE FROM daily_images WHERE day >= ? AND day < ?", (since, until))
    conn.execute("DELETE FROM daily_credits WHERE day >= ? AND day < ?", (since, until))
    conn.execute("INSERT INTO daily_images (day, model, speed, outcome, images, credits, input_tokens, output_tokens, "
                 "estimated_credits) " + _IMAGES_BY_DAY, (since, until))
    conn.execute("INSERT INTO daily_credits (day, reason, positive, delta) " + _CREDITS_BY_DAY, (since, until))


def admin_rolled_images(conn: Connection, since: int) -> list[dict]:
    """The rolled-up images per day, model, speed and outcome since a time."""
    return conn.all("SELECT day, model, speed, outcome, images, credits, input_tokens, output_tokens, "
                    "estimated_credits FROM daily_images WHERE day >= ?", (since,))


def admin_rolled_credits(conn: Connection, since: int) -> list[dict]:
    """The rolled-up ledger per day, reason and sign since a time."""
    return conn.all("SELECT day, reason, positive, delta FROM daily_credits WHERE day >= ?", (since,))


_LATEST_SUBSCRIPTION = ("s.id = (SELECT MAX(s2.id) FROM subscriptions s2 WHERE s2.user_id = s.user_id)")


def admin_subscription_states(conn: Connection, now: int) -> list[dict]:
    """Users by their latest subscription's status, and whether it ends at its period's end."""
    return conn.all(
        "SELECT s.status, CASE WHEN s.cancel_at_period_end = 1 OR s.cancel_at IS NOT NULL THEN 1 ELSE 0 END "
        f"AS cancelling, COUNT(*) AS n FROM subscriptions s WHERE {_LATEST_SUBSCRIPTION} "
        "GROUP BY s.status, CASE WHEN s.cancel_at_period_end = 1 OR s.cancel_at IS NOT NULL THEN 1 ELSE 0 END")


def admin_paying_subscriptions(conn: Connection, now: int) -> int:
    """Subscriptions that bring the plan's price each month: active (cancelling ones until they end) or past due."""
    return conn.scalar(f"SELECT COUNT(*) AS n FROM subscriptions s WHERE {_LATEST_SUBSCRIPTION} AND "
                       "(s.status = 'past_due' OR (s.status = 'active' AND (s.cancel_at IS NULL OR s.cancel_at > ?)))",
                       (now,))


def admin_user_holds(conn: Connection) -> dict:
    """How many users have a disputed payment on hold, and how many are blocked."""
    return conn.one("SELECT SUM(CASE WHEN billing_hold IS NOT NULL THEN 1 ELSE 0 END) AS disputed, "
                    "SUM(CASE WHEN blocked_at IS NOT NULL THEN 1 ELSE 0 END) AS blocked FROM users "
                    "WHERE billing_hold IS NOT NULL OR blocked_at IS NOT NULL")


def admin_queue_counts(conn: Connection) -> list[dict]:
    """Items waiting or being made, by status."""
    return conn.all("SELECT status, COUNT(*) AS n FROM batch_items WHERE status IN ('held', 'queued', 'running', "
                    "'waiting') GROUP BY status")


def admin_upstream_open(conn: Connection) -> int:
    """Economy jobs OpenAI is working on."""
    return conn.scalar("SELECT COUNT(*) AS n FROM upstream_batches WHERE status IN ('submitted', 'validating', "
                       "'in_progress', 'finalizing', 'cancelling')")


def _like(text: str) -> str:
    """A LIKE pattern that finds the text anywhere, its own % and _ taken literally (escape character !)."""
    return "%" + text.replace("!", "!!").replace("%", "!%").replace("_", "!_") + "%"


def admin_users_search(conn: Connection, text: str, limit: int) -> list[dict]:
    """Users whose email or name contains the text (newest first), with their plan's status and balance."""
    where, params = "", []
    if text:
        where = "WHERE LOWER(u.email) LIKE ? ESCAPE '!' OR LOWER(u.display_name) LIKE ? ESCAPE '!' "
        params = [_like(text.lower())] * 2
    return conn.all(
        "SELECT u.id, u.display_name, u.email, u.created_at, u.blocked_at, u.billing_hold, "
        f"(SELECT s.status FROM subscriptions s WHERE s.user_id = u.id AND {_LATEST_SUBSCRIPTION}) AS status, "
        "(SELECT c.balance FROM credit_balances c WHERE c.user_id = u.id) AS balance "
        f"FROM users u {where}ORDER BY u.id DESC LIMIT ?", (*params, limit))


def admin_identities(conn: Connection, user_id: int) -> list[dict]:
    """A user's sign-ins: provider, email and whether the provider verified it."""
    return conn.all("SELECT provider, email, email_verified, created_at, last_login_at FROM identities "
                    "WHERE user_id = ? ORDER BY id", (user_id,))


def admin_ledger(conn: Connection, user_id: int, limit: int | None) -> list[dict]:
    """A user's ledger, newest first (all of it when limit is None)."""
    sql = "SELECT id, delta, reason, reference, created_at FROM credit_ledger WHERE user_id = ? ORDER BY id DESC"
    return conn.all(sql + (" LIMIT ?" if limit else ""), (user_id, limit) if limit else (user_id,))


def admin_batches(conn: Connection, user_id: int, limit: int) -> list[dict]:
    """A user's latest batches with their items counted by status (never their prompts)."""
    return conn.all(
        "SELECT b.id, b.status, b.pause_reason, b.model, b.speed, b.resolution, b.ratio, b.quality, b.item_count, "
        "b.credits_per_item, b.created_at, "
        "SUM(CASE WHEN i.status IN ('done', 'delivered') THEN 1 ELSE 0 END) AS done, "
        "SUM(CASE WHEN i.status = 'failed' THEN 1 ELSE 0 END) AS failed, "
        "SUM(CASE WHEN i.status IN ('held', 'queued', 'running', 'waiting') THEN 1 ELSE 0 END) AS open "
        "FROM batches b LEFT JOIN batch_items i ON i.batch_id = b.id WHERE b.user_id = ? "
        "GROUP BY b.id, b.status, b.pause_reason, b.model, b.speed, b.resolution, b.ratio, b.quality, b.item_count, "
        "b.credits_per_item, b.created_at ORDER BY b.id DESC LIMIT ?", (user_id, limit))


def admin_failures(conn: Connection, user_id: int, limit: int = 100) -> list[dict]:
    """A user's failed images, newest first: batch, item, reason, request id (no prompt)."""
    return conn.all("SELECT i.id, i.batch_id, i.position, i.error_code, i.error_message, i.request_id, i.finished_at "
                    "FROM batch_items i JOIN batches b ON b.id = i.batch_id WHERE b.user_id = ? AND "
                    "i.status = 'failed' ORDER BY i.id DESC LIMIT ?", (user_id, limit))


def admin_failed_count(conn: Connection, batch_id: int) -> int:
    """How many of a batch's images failed."""
    return conn.scalar("SELECT COUNT(*) AS n FROM batch_items WHERE batch_id = ? AND status = 'failed'", (batch_id,))


def admin_invoices(conn: Connection, user_id: int, limit: int = 50) -> list[dict]:
    """A user's paid invoices, newest first."""
    return conn.all("SELECT stripe_invoice_id, amount_paid, amount_refunded, currency, paid_at, refunded_at "
                    "FROM invoices WHERE user_id = ? ORDER BY paid_at DESC LIMIT ?", (user_id, limit))


def admin_audit_insert(conn: Connection, owner_id: int, action: str, user_id: int | None, reason: str, detail: str,
                       now: int) -> int:
    """Record an owner's action; its id."""
    return conn.insert("INSERT INTO admin_audit (admin_user_id, action, target_user_id, reason, detail, created_at) "
                       "VALUES (?, ?, ?, ?, ?, ?)", (owner_id, action, user_id, reason, detail, now))


def admin_audit_of(conn: Connection, user_id: int, limit: int) -> list[dict]:
    """The owners' actions on a user, newest first, with who did them."""
    return conn.all("SELECT a.id, a.action, a.reason, a.detail, a.created_at, u.email AS owner_email "
                    "FROM admin_audit a LEFT JOIN users u ON u.id = a.admin_user_id WHERE a.target_user_id = ? "
                    "ORDER BY a.id DESC LIMIT ?", (user_id, limit))


def admin_unfinished_batch_ids(conn: Connection, user_id: int) -> list[int]:
    """The ids of a user's batches with images held, queued or at OpenAI."""
    return [row["batch_id"] for row in conn.all(
        "SELECT DISTINCT i.batch_id FROM batch_items i JOIN batches b ON b.id = i.batch_id WHERE b.user_id = ? "
        "AND i.status IN ('held', 'queued', 'waiting')", (user_id,))]


def user_set_blocked(conn: Connection, user_id: int, at: int | None, reason: str | None) -> None:
    """Block a user (a time and a reason) or unblock them (None, None)."""
    conn.execute("UPDATE users SET blocked_at = ?, blocked_reason = ? WHERE id = ?", (at, reason, user_id))


def sessions_delete_user(conn: Connection, user_id: int) -> int:
    """End every session of a user (they are signed out everywhere); how many."""
    return conn.execute("DELETE FROM sessions WHERE user_id = ?", (user_id,))


# --- invoices and verified emails --------------------------------------------------------------
# invoices: what Stripe reported paid (amounts in the currency's smallest unit, e.g. cents), one row per invoice.

_INVOICE_COLUMNS = ("id, stripe_invoice_id, user_id, amount_paid, amount_refunded, currency, paid_at, refunded_at, "
                    "created_at, updated_at")


def invoice_record(conn: Connection, stripe_invoice_id: str, user_id: int, amount_paid: int, currency: str,
                   paid_at: int, now: int) -> bool:
    """Record a paid invoice once; True if this call added it (a row already there is left exactly as it is)."""
    if conn.engine == "mysql":
        tail = "ON DUPLICATE KEY UPDATE id = id"
    else:
        tail = "ON CONFLICT (stripe_invoice_id) DO NOTHING"
    return conn.execute(
        "INSERT INTO invoices (stripe_invoice_id, user_id, amount_paid, amount_refunded, currency, paid_at, "
        f"refunded_at, created_at, updated_at) VALUES (?, ?, ?, 0, ?, ?, NULL, ?, ?) {tail}",
        (stripe_invoice_id, user_id, amount_paid, currency, paid_at, now, now)) == 1


def invoice_refund(conn: Connection, stripe_invoice_id: str, amount_refunded: int, now: int) -> bool:
    """Set how much of an invoice's payment is refunded now (a total, never added to); True if that changed it."""
    return conn.execute("UPDATE invoices SET amount_refunded = ?, refunded_at = ?, updated_at = ? "
                        "WHERE stripe_invoice_id = ? AND amount_refunded <> ?",
                        (amount_refunded, now, now, stripe_invoice_id, amount_refunded)) == 1


def invoice_get(conn: Connection, stripe_invoice_id: str) -> dict | None:
    """The recorded invoice with this Stripe id, or None."""
    return conn.one(f"SELECT {_INVOICE_COLUMNS} FROM invoices WHERE stripe_invoice_id = ?", (stripe_invoice_id,))


def user_verified_emails(conn: Connection, user_id: int) -> list[str]:
    """The emails a provider vouched for at the user's identities' latest sign-ins: lowercased, distinct, sorted."""
    rows = conn.all("SELECT email FROM identities WHERE user_id = ? AND email_verified = 1 AND email <> ''",
                    (user_id,))
    return sorted({row["email"].strip().lower() for row in rows if row["email"].strip()})
