"""The faster result reader (services/mysql_wire.py) gives exactly what PyMySQL gives, on a real MariaDB.

Every check runs the same statements through PyMySQL's own Connection and through ours, and
compares rows, column descriptions, row counts and errors.
"""

import datetime
import decimal

import pymysql
import pymysql.cursors
import pytest

from services import db, mysql_wire

pytestmark = pytest.mark.mariadb

TABLE = """CREATE TABLE kinds (
  id BIGINT NOT NULL AUTO_INCREMENT PRIMARY KEY,
  tiny TINYINT, small SMALLINT, medium MEDIUMINT, whole INT, unsigned_big BIGINT UNSIGNED, yr YEAR,
  money DECIMAL(12, 2), ratio FLOAT, precise DOUBLE, flag BIT(3), kind ENUM('a', 'b'), letters CHAR(4),
  name VARCHAR(200), body TEXT, long_body LONGTEXT, raw VARBINARY(32), blob_value BLOB, meta JSON,
  day DATE, moment DATETIME(3), stamp TIMESTAMP NULL, span TIME
) CHARACTER SET utf8mb4 COLLATE utf8mb4_unicode_ci"""

NAMES = ["tiny", "small", "medium", "whole", "unsigned_big", "yr", "money", "ratio", "precise", "flag", "kind",
         "letters", "name", "body", "long_body", "raw", "blob_value", "meta", "day", "moment", "stamp", "span"]
ROWS = [
    (1, -2, 3, -4, 2**64 - 1, 2026, decimal.Decimal("-12.50"), 1.5, 2.25, b"\x05", "a", "ab", "Ana García 🎨",
     "x" * 250, "y" * 251, b"\x00\xff\x10", b"\x01" * 300, '{"k": [1, 2]}', datetime.date(2026, 12, 3),
     datetime.datetime(2026, 12, 3, 9, 30, 1, 250000), datetime.datetime(2026, 12, 3, 9, 30, 1),
     datetime.timedelta(hours=-5, minutes=3)),
    (None,) * 22,
    (0, 0, 0, 0, 0, 1901, decimal.Decimal("0.00"), 0.0, -0.0, b"\x00", "b", "", "", "", "z" * 65535 + "é",
     b"", b"", "[]", datetime.date(1000, 1, 1), datetime.datetime(1999, 1, 1), None, datetime.timedelta(0)),
]


@pytest.fixture
def both(mariadb_url):
    """A PyMySQL connection and one of ours to the same new database, with the table of column kinds filled."""
    params = db.Database(mariadb_url).params
    made = []

    def connect(cls, cursor=pymysql.cursors.DictCursor):
        connection = cls(**params, charset="utf8mb4", autocommit=True, cursorclass=cursor)
        made.append(connection)
        return connection

    stock = connect(pymysql.connections.Connection)
    with stock.cursor() as cur:
        cur.execute(TABLE)
        for row in ROWS:
            cur.execute(f"INSERT INTO kinds ({', '.join(NAMES)}) VALUES ({', '.join(['%s'] * len(row))})", row)
    yield connect
    for connection in made:
        connection.close()


def run(connection, sql, params=None):
    """rows, description, rowcount and lastrowid of one statement."""
    with connection.cursor() as cur:
        count = cur.execute(sql, params)
        return cur.fetchall(), cur.description, count, cur.lastrowid


QUERIES = [
    "SELECT * FROM kinds ORDER BY id",
    "SELECT a.id, b.id, a.name, b.name FROM kinds a JOIN kinds b ON b.id = a.id + 1",  # the same name twice
    "SELECT COUNT(*) AS n, SUM(money) AS total, MAX(name) AS top, GROUP_CONCAT(letters) AS g FROM kinds",
    "SELECT JSON_COMPACT(meta) AS j, JSON_OBJECT('k', name) AS o, NULL AS nothing, '' AS empty FROM kinds",
    "SELECT id FROM kinds WHERE id < 0",  # no row
    "SELECT REPEAT('é', 40000) AS wide, REPEAT('a', 70000) AS wider",  # 2- and 3-byte lengths
]


@pytest.mark.parametrize("cursor", [pymysql.cursors.DictCursor, pymysql.cursors.Cursor])
def test_rows_and_descriptions_are_pymysqls_for_every_column_kind(both, cursor):
    stock, ours = both(pymysql.connections.Connection, cursor), both(mysql_wire.Connection, cursor)
    assert isinstance(ours, mysql_wire.Connection) and not isinstance(stock, mysql_wire.Connection)
    for sql in QUERIES:
        for _ in range(2):  # the second time, the column definitions come from the connection's memory
            assert run(ours, sql) == run(stock, sql), sql


def test_statements_without_rows_report_the_same(both):
    stock, ours = both(pymysql.connections.Connection), both(mysql_wire.Connection)
    for connection in (stock, ours):
        run(connection, "CREATE TABLE IF NOT EXISTS notes (id INT AUTO_INCREMENT PRIMARY KEY, t VARCHAR(9))")
    assert run(ours, "INSERT INTO notes (t) VALUES ('a'), ('b')")[2:] == (2, 1)
    assert run(stock, "INSERT INTO notes (t) VALUES ('c')")[2:] == (1, 3)
    assert run(ours, "UPDATE notes SET t = 'z' WHERE id > 1")[2] == run(stock, "UPDATE notes SET t = 'y'")[2] - 1
    assert run(ours, "SELECT * FROM notes ORDER BY id") == run(stock, "SELECT * FROM notes ORDER BY id")


def test_a_row_longer_than_one_packet_is_joined(both):
    """A row over 16 MiB - 1 comes in several packets (the server's max_allowed_packet is 16 MiB)."""
    stock, ours = both(pymysql.connections.Connection), both(mysql_wire.Connection)
    sql = "SELECT REPEAT('a', 5600000) AS a, REPEAT('b', 5600000) AS b, REPEAT('é', 2800000) AS c, 7 AS n"
    rows = run(ours, sql)
    assert rows == run(stock, sql)
    assert [len(rows[0][0][key]) for key in "abc"] == [5600000, 5600000, 2800000] and rows[0][0]["n"] == 7
    assert run(ours, "SELECT 1 AS one")[0] == [{"one": 1}]  # the packets that followed were read in step


def test_an_error_in_the_middle_of_the_rows_raises_it_and_the_connection_goes_on(both):
    stock, ours = both(pymysql.connections.Connection), both(mysql_wire.Connection)
    # The subquery finds more than one row only from the third row on: the first rows are sent already.
    sql = "SELECT id, (SELECT k.id FROM kinds k WHERE k.id <= t.id + 0 AND t.id > 2) AS x FROM " \
          "(SELECT 1 AS id UNION ALL SELECT 2 UNION ALL SELECT 3 UNION ALL SELECT 4) t"
    errors = []
    for connection in (stock, ours):
        with pytest.raises(pymysql.err.MySQLError) as caught:
            run(connection, sql)
        errors.append((type(caught.value), caught.value.args))
        assert run(connection, "SELECT 2 AS two")[0] == [{"two": 2}]
    assert errors[0] == errors[1] and errors[0][1][0] == 1242  # ER_SUBQUERY_NO_1_ROW


def test_an_error_before_the_rows_and_a_changed_table(both):
    stock, ours = both(pymysql.connections.Connection), both(mysql_wire.Connection)
    with pytest.raises(pymysql.err.OperationalError) as caught:
        run(ours, "SELECT missing FROM kinds")
    assert caught.value.args[0] == 1054
    before = run(ours, "SELECT * FROM kinds WHERE id = 1")
    run(ours, "ALTER TABLE kinds MODIFY letters VARCHAR(8)")  # a new column definition, not the remembered one
    after = run(ours, "SELECT * FROM kinds WHERE id = 1")
    assert after == run(stock, "SELECT * FROM kinds WHERE id = 1")
    assert after[0] == before[0] and after[1][12] != before[1][12]


def test_unbuffered_cursors_are_pymysqls_own(both):
    ours = both(mysql_wire.Connection, pymysql.cursors.SSDictCursor)
    with ours.cursor() as cur:
        cur.execute("SELECT id, name FROM kinds ORDER BY id")
        assert [row["id"] for row in cur] == [1, 2, 3]


def test_the_app_connects_with_it(mariadb_url):
    connection = db.Database(mariadb_url).connect()
    try:
        assert isinstance(connection.raw, mysql_wire.Connection)
        assert connection.one("SELECT 'ñ' AS letter, 3 AS n") == {"letter": "ñ", "n": 3}
    finally:
        connection.close()
