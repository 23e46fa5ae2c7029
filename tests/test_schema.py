"""schema.sql (MariaDB) and schema.sqlite.sql describe the same tables, columns and unique keys."""

from services import db


def test_schema_twins_match(sqlite_url, mariadb_url):
    described = {}
    for url in (sqlite_url, mariadb_url):
        database = db.Database(url)
        db.initdb(database)
        conn = database.connect()
        try:
            described[database.engine] = db.describe_schema(conn)
        finally:
            conn.close()
    sqlite, mysql = described["sqlite"], described["mysql"]
    assert sorted(sqlite) == sorted(mysql)
    assert {"users", "identities", "sessions", "schema_migrations", "auth_flows", "rate_limits",
            "subscriptions", "credit_balances", "credit_ledger", "stripe_events",
            "batches", "batch_items", "worker_state", "upstream_calls"} <= set(mysql)
    for table in mysql:
        assert sqlite[table]["columns"] == mysql[table]["columns"], table
        assert sqlite[table]["unique"] == mysql[table]["unique"], table


def test_identities_are_keyed_by_provider_issuer_and_subject(sqlite_url):
    database = db.Database(sqlite_url)
    db.initdb(database)
    conn = database.connect()
    try:
        assert ("provider", "issuer", "subject") in db.describe_schema(conn)["identities"]["unique"]
    finally:
        conn.close()
