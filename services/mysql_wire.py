"""A faster reader of MariaDB result sets for PyMySQL: the same rows, in about half the CPU.

PyMySQL is pure Python and reads a result one method call at a time: a packet object per
column definition and per row, and four or five calls per value. On this site's pages that
was a third of a request's CPU (a batch poll reads 100 rows of 12 columns every 2 s). The
connection class here reads the same bytes with less work: a query run again is answered with
the same column definitions, which are recognised whole in the socket's buffer and taken in
one read (else each is read once and remembered); the rows already buffered are cut from one
look at the buffer, their values sliced in one loop, integers converted from their bytes
without decoding them first. Everything else (connecting, sending, OK and error packets, the
first packet of a result, unbuffered queries) is PyMySQL's own, and every row is what PyMySQL
would have made: tests/test_mysql_wire.py compares the two on every column type the schema
uses, NULLs, long values and errors in the middle of a result.

Written against PyMySQL 1.2.4 (requirements.txt pins it): it uses Connection._rfile,
_next_seq_id, _force_close and MySQLResult's fields, which are internal. A PyMySQL upgrade
must run that test file.
"""

from __future__ import annotations

import struct

from pymysql import connections, converters, err
from pymysql.constants import CR, FIELD_TYPE
from pymysql.protocol import MBLENGTH, MysqlPacket

COLUMNS_KEPT = 4096  # column definitions remembered per connection
MAX_PACKET_LEN = 0xFFFFFF  # a payload of this length continues in the next packet
_COLUMN_TAIL = struct.Struct("<xHIBHBxx")  # charset, length, type, flags, decimals (after the six strings)
_INTEGER_TYPES = frozenset({FIELD_TYPE.TINY, FIELD_TYPE.SHORT, FIELD_TYPE.LONG, FIELD_TYPE.LONGLONG,
                            FIELD_TYPE.INT24, FIELD_TYPE.YEAR})


class Field:
    """A result column as PyMySQL's FieldDescriptorPacket describes it (the attributes cursors read)."""

    __slots__ = ("catalog", "db", "table_name", "org_table", "name", "org_name", "charsetnr", "length", "type_code",
                 "flags", "scale")

    def description(self) -> tuple:
        """The PEP 249 7-item description, as PyMySQL gives it."""
        length = self.length
        if self.type_code == FIELD_TYPE.VAR_STRING:
            length //= MBLENGTH.get(self.charsetnr, 1)
        return (self.name, self.type_code, None, length, length, self.scale, self.flags % 2 == 0)


def _long_length(data: bytes, pos: int) -> tuple[int, int]:
    """A length-encoded integer of 2, 3 or 8 bytes at `pos` (its first byte 252, 253 or 254), and the offset after
    it. (A first byte below 251 is the length itself: the callers read that one in line.)"""
    first = data[pos]
    if first == 252:
        return data[pos + 1] | data[pos + 2] << 8, pos + 3
    if first == 253:
        return int.from_bytes(data[pos + 1:pos + 4], "little"), pos + 4
    return int.from_bytes(data[pos + 1:pos + 9], "little"), pos + 9


def _strings(data: bytes, count: int) -> tuple[list[bytes], int]:
    """`count` length-encoded strings from the start of a packet, and the offset after them."""
    out, pos = [], 0
    for _ in range(count):
        n = data[pos]
        n, pos = (n, pos + 1) if n < 251 else _long_length(data, pos)
        out.append(data[pos:pos + n])
        pos += n
    return out, pos


def _column(data: bytes, conn: connections.Connection) -> tuple[Field, tuple, tuple]:
    """A column definition packet read: its Field, its description, and how to read its values (text encoding or
    None, converter or None), as PyMySQL's _get_descriptions decides them."""
    encoding = conn.encoding
    (catalog, schema, table, org_table, name, org_name), pos = _strings(data, 6)
    field = Field()
    field.catalog, field.db = catalog, schema
    field.table_name, field.org_table = table.decode(encoding), org_table.decode(encoding)
    field.name, field.org_name = name.decode(encoding), org_name.decode(encoding)
    field.charsetnr, field.length, field.type_code, field.flags, field.scale = _COLUMN_TAIL.unpack_from(data, pos)
    kind = field.type_code
    if not conn.use_unicode:
        text = None
    elif kind == FIELD_TYPE.JSON:  # as PyMySQL: JSON is text in the connection's encoding
        text = encoding
    elif kind in connections.TEXT_TYPES:
        text = None if field.charsetnr == 63 else encoding  # 63: binary
    else:
        text = "ascii"
    converter = conn.decoders.get(kind)
    if converter is converters.through:
        converter = None
    if converter is int and text == "ascii" and kind in _INTEGER_TYPES:
        text = None  # int() reads the ASCII digits from the bytes themselves
    return field, field.description(), (text, converter)


class Result(connections.MySQLResult):
    """MySQLResult with the column definitions and the rows of a buffered result read in one loop each."""

    def _get_descriptions(self):
        conn = self.connection
        count, seq = self.field_count, conn._next_seq_id
        found = self._same_columns_as_before(conn, count, seq)
        if found is None:
            known = conn.columns_seen
            fields, plan, description, packets = [], [], [], []
            for _ in range(count):
                data = conn.read_payload()
                column = known.get(data)
                if column is None:
                    if len(known) >= COLUMNS_KEPT:  # bounded: the app's queries have a few hundred columns in all
                        known.clear()
                    column = known[data] = _column(data, conn)
                fields.append(column[0])
                description.append(column[1])
                plan.append(column[2])
                packets.append(len(data).to_bytes(3, "little") + bytes([seq]) + data)
                seq = (seq + 1) % 256
            found = b"".join(packets), fields, plan, tuple(description)
            blocks = conn.blocks_seen
            if len(blocks) >= COLUMNS_KEPT:
                blocks.clear()
            blocks[(count, packets[0])] = found
        self.fields, self.converters, self.description = found[1], found[2], found[3]
        end = MysqlPacket(conn.read_payload(), conn.encoding)
        if not end.is_eof_packet():
            raise err.InternalError("Protocol error, expecting EOF")

    @staticmethod
    def _same_columns_as_before(conn: Connection, count: int, seq: int) -> tuple | None:
        """When the column definitions waiting in the socket's buffer are, byte for byte (sequence numbers
        included), those of an earlier result starting with the same column, that result's reading of them
        (block, fields, plan, description), consumed from the buffer in one read; else None, nothing read.
        A query run again is answered with the same definitions: this is its usual case."""
        try:
            buffered = conn._rfile.peek(1)
        except OSError:
            return None  # the ordinary reads meet the lost connection and say so
        if len(buffered) < 4 or buffered[3] != seq:
            return None
        first = buffered[:4 + (buffered[0] | buffered[1] << 8 | buffered[2] << 16)]
        found = conn.blocks_seen.get((count, first))
        if found is None or not buffered.startswith(found[0]):
            return None
        conn._rfile.read(len(found[0]))
        conn._next_seq_id = (seq + count) % 256
        return found

    def _read_rowdata_packet(self):
        conn = self.connection
        plan, rows, seq = self.converters, [], conn._next_seq_id
        while True:
            # Every whole packet already in the socket's buffer is read from one look at it (a row costs a
            # slice, not two reads); a packet cut by the buffer's end, or anything unusual, is read_payload's.
            try:
                buffered = conn._rfile.peek(1)
            except OSError:
                buffered = b""  # read_payload below meets the lost connection and says so
            pos, size, data = 0, len(buffered), None
            while pos + 4 <= size:
                length = buffered[pos] | buffered[pos + 1] << 8 | buffered[pos + 2] << 16
                if pos + 4 + length > size or length >= MAX_PACKET_LEN or buffered[pos + 3] != seq:
                    break
                data = buffered[pos + 4:pos + 4 + length]
                pos, seq = pos + 4 + length, (seq + 1) % 256
                if data[:1] in (b"\xfe", b"\xff") and (data[0] == 0xFF or length < 9):
                    break  # the end of the rows, or an error: handled below
                rows.append(_row(data, plan))
                data = None
            if pos:
                conn._rfile.read(pos)  # what was used, from the buffer
                conn._next_seq_id = seq
            if data is None:  # no whole packet at hand: one read the ordinary way
                data = conn.read_payload()
                seq = conn._next_seq_id
                if not (data[0] == 0xFE and len(data) < 9):
                    rows.append(_row(data, plan))
                    continue
            elif data[0] == 0xFF:
                MysqlPacket(data, conn.encoding).raise_for_error()
            self._check_packet_is_eof(MysqlPacket(data, conn.encoding))  # the EOF packet that ends the rows
            break
        self.connection = None
        self.affected_rows = len(rows)
        self.rows = tuple(rows)


def _row(data: bytes, plan: list) -> tuple:
    """One row's values from its packet, each read as its column's (text, converter) says."""
    row, pos, end = [], 0, len(data)
    for text, converter in plan:
        if pos >= end:  # fewer values than columns: PyMySQL stops there too
            break
        n = data[pos]
        if n < 251:  # the usual case, read in line: this loop runs for every value of every row
            pos += 1
        elif n == 251:  # NULL
            row.append(None)
            pos += 1
            continue
        else:
            n, pos = _long_length(data, pos)
        value = data[pos:pos + n]
        pos += n
        if text is not None:
            value = value.decode(text)
        if converter is not None:
            value = converter(value)
        row.append(value)
    return tuple(row)


class Connection(connections.Connection):
    """PyMySQL's Connection reading buffered results with Result."""

    def __init__(self, *args, **kwargs):
        # Column definition packets seen on this connection, with what they were read as: a query run again
        # sends the same bytes, so its columns cost a dict look-up (per connection: the decoders are).
        self.columns_seen: dict[bytes, tuple[Field, tuple, tuple]] = {}
        # A result's column definitions as a whole (all their packets, as bytes), by their number and first
        # packet, with what they were read as: (block, fields, plan, description).
        self.blocks_seen: dict[tuple[int, bytes], tuple[bytes, list, list, tuple]] = {}
        super().__init__(*args, **kwargs)

    def read_payload(self) -> bytes:
        """The payload of the next packet (joined when it spans several), as _read_packet reads it; an error
        packet raises its error. The socket is read directly (not through _read_bytes: one call less per
        read, two per row), with _read_bytes's handling of a lost connection."""
        parts = []
        while True:
            header = self._read_exactly(4)
            if header[3] != self._next_seq_id:
                self._force_close()
                if header[3] == 0:  # MariaDB sends its error with sequence 0 when it shuts down
                    raise err.OperationalError(CR.CR_SERVER_LOST, "Lost connection to MySQL server during query")
                raise err.InternalError(f"Packet sequence number wrong - got {header[3]} expected "
                                        f"{self._next_seq_id}")
            self._next_seq_id = (self._next_seq_id + 1) % 256
            length = header[0] | header[1] << 8 | header[2] << 16
            data = self._read_exactly(length) if length else b""
            if length < MAX_PACKET_LEN and not parts:
                break
            parts.append(data)
            if length < MAX_PACKET_LEN:
                data = b"".join(parts)
                break
        if data[:1] == b"\xff":
            MysqlPacket(data, self.encoding).raise_for_error()
        return data

    def _read_exactly(self, count: int) -> bytes:
        """`count` bytes from the socket, or the connection closed and OperationalError (as _read_bytes)."""
        try:
            data = self._rfile.read(count)
        except OSError as exc:
            self._force_close()
            raise err.OperationalError(CR.CR_SERVER_LOST,
                                       f"Lost connection to MySQL server during query ({exc})") from None
        except BaseException:
            self._force_close()
            raise
        if len(data) < count:
            self._force_close()
            raise err.OperationalError(CR.CR_SERVER_LOST, "Lost connection to MySQL server during query")
        return data

    def _read_query_result(self, unbuffered=False):
        if unbuffered:
            return super()._read_query_result(unbuffered)
        self._result = None
        result = Result(self)
        result.read()
        self._result = result
        if result.server_status is not None:
            self.server_status = result.server_status
        return result.affected_rows
