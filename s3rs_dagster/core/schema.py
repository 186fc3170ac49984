"""Source schema -> extraction plan: reflection, type mapping, column names, Arrow conversion.

A table is reflected once per run from information_schema (`reflect_table`) and planned once
(`plan_table`): every column gets one Arrow type, one warehouse type, a sanitised target name
and the expression that selects it. The plan's Arrow schema is pinned for the whole run, so
every file of a table has the same schema (and the same `fingerprint`).

Rows are read without result decoders (`open_source(..., raw_text=True)`): each value is the
server's text (`str`), `bytes` for binary-charset columns, or None. `TablePlan.to_record_batch`
builds Arrow arrays straight from those values and casts them in Arrow; no Python Decimal or
datetime is built per value. Where the text protocol is not exact on its own, the SELECT
expression fixes it on the server (FLOAT, TIMESTAMP, BIT; see `ColumnPlan.select_sql`).

Mapping (MySQL -> Arrow -> Redshift), exact and never lossy:

    TINYINT, SMALLINT, YEAR          int16          SMALLINT
    MEDIUMINT, INT                   int32          INTEGER
    BIGINT                           int64          BIGINT
    UNSIGNED widens one step: TINYINT/SMALLINT/MEDIUMINT -> int32 INTEGER, INT -> int64 BIGINT,
    BIGINT -> decimal128(20,0) DECIMAL(20,0)
    DECIMAL(p,s), p <= 38            decimal128     DECIMAL(p,s)
    DECIMAL(p,s), p > 38             string         VARCHAR(p+2)  (exact text; see below)
    FLOAT / DOUBLE                   float32/64     REAL / DOUBLE PRECISION
    DATE / DATETIME(n)               date32 / timestamp[us]          DATE / TIMESTAMP
    TIMESTAMP(n)                     timestamp[us, UTC]              TIMESTAMPTZ
    TIME(n)                          string         VARCHAR(20)   (a duration up to +-838 h)
    CHAR/VARCHAR(n), ENUM, SET       string         VARCHAR(4 bytes per character, <= 65535)
    TINYTEXT / other TEXT            string         VARCHAR(1020) / VARCHAR(65535)
    JSON                             string         SUPER or VARCHAR(65535)
    BINARY/VARBINARY(n)              binary         VARBYTE(n)
    TINYBLOB, BLOB / larger BLOBs    binary         VARBYTE(65535) / VARBYTE(1024000)
    GEOMETRY and spatial types       binary         VARBYTE(1024000)  (MySQL's SRID + WKB)
    BIT(1) / BIT(2..63) / BIT(64)    bool / int64 / decimal128(20,0)

Zero and impossible dates ('0000-00-00', '2025-00-10', '2025-02-31' under ALLOW_INVALID_DATES)
become NULL and are counted, so DATE/DATETIME/TIMESTAMP fields are nullable in Arrow even when
the source column is NOT NULL.
"""

from __future__ import annotations

import calendar
import hashlib
import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

import pyarrow as pa

from s3rs_dagster.config import did_you_mean

if TYPE_CHECKING:
    import sqlalchemy as sa

JsonAs = Literal["varchar", "super"]

_REDSHIFT_RESERVED_TEXT = """
    AES128 AES256 ALL ALLOWOVERWRITE ANALYSE ANALYZE AND ANY ARRAY AS ASC AUTHORIZATION AZ64
    BACKUP BETWEEN BINARY BLANKSASNULL BOTH BYTEDICT BZIP2 CASE CAST CHECK COLLATE COLUMN
    CONSTRAINT CREATE CREDENTIALS CROSS CURRENT_DATE CURRENT_TIME CURRENT_TIMESTAMP CURRENT_USER
    CURRENT_USER_ID DEFAULT DEFERRABLE DEFLATE DEFRAG DELTA DELTA32K DESC DISABLE DISTINCT DO
    ELSE EMPTYASNULL ENABLE ENCODE ENCRYPT ENCRYPTION END EXCEPT EXPLICIT FALSE FOR FOREIGN
    FREEZE FROM FULL GLOBALDICT256 GLOBALDICT64K GRANT GROUP GZIP HAVING IDENTITY IGNORE ILIKE
    IN INITIALLY INNER INTERSECT INTERVAL INTO IS ISNULL JOIN LEADING LEFT LIKE LIMIT LOCALTIME
    LOCALTIMESTAMP LUN LUNS LZO LZOP MINUS MOSTLY16 MOSTLY32 MOSTLY8 NATURAL NEW NOT NOTNULL
    NULL NULLS OFF OFFLINE OFFSET OID OLD ON ONLY OPEN OR ORDER OUTER OVERLAPS PARALLEL
    PARTITION PERCENT PERMISSIONS PIVOT PLACING PRIMARY RAW READRATIO RECOVER REFERENCES
    REJECTLOG RESORT RESPECT RESTORE RIGHT SELECT SESSION_USER SIMILAR SNAPSHOT SOME SYSDATE
    SYSTEM TABLE TAG TDES TEXT255 TEXT32K THEN TIMESTAMP TO TOP TRAILING TRUE TRUNCATECOLUMNS
    UNION UNIQUE UNNEST UNPIVOT USER USING VERBOSE WALLET WHEN WHERE WITH WITHOUT
"""
REDSHIFT_RESERVED_WORDS = frozenset(_REDSHIFT_RESERVED_TEXT.split())
"""Amazon Redshift's documented reserved words (Database Developer Guide, "Reserved words")."""

SYSTEM_COLUMN_NAMES = frozenset(
    {"oid", "tableoid", "xmin", "cmin", "xmax", "cmax", "ctid", "insertxid", "deletexid"}
)
"""Names Redshift and PostgreSQL refuse for user columns ("conflicts with a system column")."""

MAX_IDENTIFIER_BYTES = 127
"""Redshift identifiers are at most 127 bytes of UTF-8."""

IDENTIFIER_BYTES = {
    "redshift": MAX_IDENTIFIER_BYTES,
    "postgres": 63,
    "duckdb": MAX_IDENTIFIER_BYTES,
}
"""The longest identifier each warehouse keeps whole (PostgreSQL cuts longer ones to 63 bytes
silently, and then finds no column by the long name)."""

VARCHAR_MAX = 65535
VARBYTE_MAX = 1024000

_SPATIAL_TYPES = frozenset(
    {
        "geometry",
        "point",
        "linestring",
        "polygon",
        "multipoint",
        "multilinestring",
        "multipolygon",
        "geometrycollection",
    }
)
_ASCII_DIGITS = frozenset("0123456789")
_JSON_CHECK = re.compile(r"\s*json_valid\s*\(\s*`((?:[^`]|``)+)`\s*\)\s*", re.IGNORECASE)
_DATE_TEXT = re.compile(r"(\d{4})-(\d\d)-(\d\d)")


class SchemaError(Exception):
    """A source table cannot be reflected, planned or converted; the message says what to do."""


# --------------------------------------------------------------------------- reflection


@dataclass(frozen=True)
class SourceColumn:
    """One column as information_schema describes it."""

    name: str
    ordinal: int
    data_type: str
    column_type: str
    nullable: bool
    numeric_precision: int | None
    numeric_scale: int | None
    datetime_precision: int | None
    char_max_length: int | None
    is_json: bool


@dataclass(frozen=True)
class SourceTable:
    """A reflected source table; `primary_key` is in key order, () when there is none."""

    schema: str
    name: str
    columns: tuple[SourceColumn, ...]
    primary_key: tuple[str, ...]

    @property
    def qualified_name(self) -> str:
        return f"{quote_mysql(self.schema)}.{quote_mysql(self.name)}"


def quote_mysql(identifier: str) -> str:
    """`identifier` quoted for MySQL, embedded backticks doubled."""
    if "\0" in identifier:
        raise SchemaError(
            f"identifier {identifier!r} contains a NUL character; MySQL cannot name it"
        )
    return "`" + identifier.replace("`", "``") + "`"


_COLUMNS_SQL = (
    "SELECT COLUMN_NAME, ORDINAL_POSITION, DATA_TYPE, COLUMN_TYPE, IS_NULLABLE,"
    " NUMERIC_PRECISION, NUMERIC_SCALE, DATETIME_PRECISION, CHARACTER_MAXIMUM_LENGTH"
    " FROM information_schema.COLUMNS"
    " WHERE TABLE_SCHEMA = :schema AND TABLE_NAME = :table ORDER BY ORDINAL_POSITION"
)
_PRIMARY_KEY_SQL = (
    "SELECT COLUMN_NAME FROM information_schema.STATISTICS"
    " WHERE TABLE_SCHEMA = :schema AND TABLE_NAME = :table AND INDEX_NAME = 'PRIMARY'"
    " ORDER BY SEQ_IN_INDEX"
)
_CHECKS_SQL = (
    "SELECT CHECK_CLAUSE FROM information_schema.CHECK_CONSTRAINTS"
    " WHERE CONSTRAINT_SCHEMA = :schema AND TABLE_NAME = :table"
)
_SCHEMAS_SQL = "SELECT SCHEMA_NAME FROM information_schema.SCHEMATA"
_TABLES_SQL = "SELECT TABLE_NAME FROM information_schema.TABLES WHERE TABLE_SCHEMA = :schema"


def _execute(
    connection: sa.engine.Connection, sql: str, params: dict[str, Any] | None = None
) -> sa.CursorResult[Any]:
    """Run one of the reflection queries. sqlalchemy is imported here, on the first reflection,
    not with this module: a load plans nothing from a source, and importing sqlalchemy costs
    ~0.1 s of its start-up."""
    from sqlalchemy import text

    return connection.execute(text(sql), params)


def reflect_table(connection: sa.engine.Connection, schema: str, table: str) -> SourceTable:
    """Reflect `schema`.`table` from information_schema, or raise SchemaError saying why not.

    MariaDB stores JSON as LONGTEXT with a `json_valid(`col`)` CHECK constraint; such columns
    (and MySQL's native JSON) get `is_json`.
    """
    if connection.dialect.name == "sqlite":
        return _reflect_sqlite(connection, schema, table)
    params = {"schema": schema, "table": table}
    rows = _execute(connection, _COLUMNS_SQL, params).all()
    if not rows:
        raise _missing_table(connection, schema, table)
    json_columns: set[str] = set()
    if getattr(connection.dialect, "is_mariadb", False):
        for (clause,) in _execute(connection, _CHECKS_SQL, params):
            match = _JSON_CHECK.fullmatch(str(clause))
            if match:
                json_columns.add(match.group(1).replace("``", "`"))
    columns = tuple(_source_column(row, json_columns) for row in rows)
    primary_key = tuple(str(name) for (name,) in _execute(connection, _PRIMARY_KEY_SQL, params))
    return SourceTable(schema=schema, name=table, columns=columns, primary_key=primary_key)


_SQLITE_TYPE = re.compile(r"\s*([A-Za-z ]+?)\s*(?:\(\s*(\d+)\s*(?:,\s*(\d+)\s*)?\))?\s*$")


def _reflect_sqlite(connection: sa.engine.Connection, schema: str, table: str) -> SourceTable:
    """A SQLite table (the demo source) described as the MySQL column it stands for.

    SQLite keeps a declared type per column; it is read the way MySQL would read the same
    declaration (INTEGER -> bigint, DECIMAL(p,s), VARCHAR(n), DATETIME as microsecond text...).
    """
    quoted = quote_mysql(schema) + "." if schema != "main" else ""
    rows = connection.exec_driver_sql(f"PRAGMA {quoted}table_info({quote_mysql(table)})").all()
    if not rows:
        tables = [
            str(name)
            for (name,) in connection.exec_driver_sql(
                "SELECT name FROM sqlite_master WHERE type = 'table'"
            )
        ]
        raise SchemaError(
            f"table {quote_mysql(schema)}.{quote_mysql(table)} does not exist in the SQLite "
            f"source{did_you_mean(table, tables)}; SQLite tables are named main.<table>"
        )
    columns = []
    keyed: list[tuple[int, str]] = []
    for cid, name, declared, notnull, _default, pk in rows:
        columns.append(_sqlite_column(int(cid) + 1, str(name), str(declared or ""), not notnull))
        if pk:
            keyed.append((int(pk), str(name)))
    primary_key = tuple(name for _, name in sorted(keyed))
    return SourceTable(schema=schema, name=table, columns=tuple(columns), primary_key=primary_key)


def _sqlite_column(ordinal: int, name: str, declared: str, nullable: bool) -> SourceColumn:
    match = _SQLITE_TYPE.fullmatch(declared)
    base = (match.group(1) if match else declared).lower()
    size = int(match.group(2)) if match and match.group(2) else None
    scale = int(match.group(3)) if match and match.group(3) else None
    precision = datetime_precision = length = None
    if base in ("tinyint", "boolean", "bool") and (size == 1 or base != "tinyint"):
        data_type, column_type = "tinyint", "tinyint(1)"
    elif "int" in base:
        data_type, column_type = "bigint", "bigint"
    elif base in ("decimal", "numeric") and size is not None:
        data_type, precision, scale = "decimal", size, scale or 0
        column_type = f"decimal({precision},{scale})"
    elif base in ("real", "double", "double precision", "float", "numeric", "decimal"):
        data_type, column_type = "double", "double"
    elif base in ("datetime", "timestamp"):
        data_type, column_type, datetime_precision = "datetime", "datetime(6)", 6
    elif base == "date":
        data_type = column_type = "date"
    elif base in ("char", "varchar", "character", "nvarchar", "nchar") and size is not None:
        data_type, length, column_type = "varchar", size, f"varchar({size})"
    elif base == "blob":
        data_type = column_type = "blob"
    else:  # TEXT, CLOB, JSON, or no declared type: SQLite's text
        data_type, length, column_type = "text", 65_535, "text"
    return SourceColumn(
        name=name,
        ordinal=ordinal,
        data_type=data_type,
        column_type=column_type,
        nullable=nullable,
        numeric_precision=precision,
        numeric_scale=scale if data_type == "decimal" else None,
        datetime_precision=datetime_precision,
        char_max_length=length,
        is_json=base == "json",
    )


def _source_column(row: sa.Row, json_columns: set[str]) -> SourceColumn:
    data_type = str(row.DATA_TYPE).lower()
    return SourceColumn(
        name=str(row.COLUMN_NAME),
        ordinal=int(row.ORDINAL_POSITION),
        data_type=data_type,
        column_type=str(row.COLUMN_TYPE),
        nullable=str(row.IS_NULLABLE).upper() == "YES",
        numeric_precision=_int_or_none(row.NUMERIC_PRECISION),
        numeric_scale=_int_or_none(row.NUMERIC_SCALE),
        datetime_precision=_int_or_none(row.DATETIME_PRECISION),
        char_max_length=_int_or_none(row.CHARACTER_MAXIMUM_LENGTH),
        is_json=data_type == "json" or str(row.COLUMN_NAME) in json_columns,
    )


def _int_or_none(value: object) -> int | None:
    return None if value is None else int(str(value))


def _missing_table(connection: sa.engine.Connection, schema: str, table: str) -> SchemaError:
    schemas = [str(name) for (name,) in _execute(connection, _SCHEMAS_SQL)]
    if schema not in schemas:
        return SchemaError(
            f"schema {quote_mysql(schema)} does not exist or is not visible to this user"
            f"{did_you_mean(schema, schemas)}; check the table key <schema>.<table> in the "
            f"pipeline's tables and the source user's grants"
        )
    tables = [str(name) for (name,) in _execute(connection, _TABLES_SQL, {"schema": schema})]
    return SchemaError(
        f"table {quote_mysql(schema)}.{quote_mysql(table)} does not exist or is not visible to "
        f"this user{did_you_mean(table, tables)}; check the table key in the pipeline's tables"
    )


# --------------------------------------------------------------------------- plan


@dataclass(frozen=True)
class ColumnPlan:
    """How one source column is selected, converted to Arrow, and typed in the warehouse."""

    source: SourceColumn
    target_name: str
    arrow_type: pa.DataType
    redshift_type: str
    select_sql: str

    @property
    def raw_type(self) -> pa.DataType:
        """The Arrow type of the values as they come off the wire: binary or text."""
        return pa.binary() if pa.types.is_binary(self.arrow_type) else pa.string()

    def to_arrow(self, values: Sequence[str | bytes | None]) -> tuple[pa.Array, int]:
        """(array of arrow_type, number of zero/invalid dates turned into NULL)."""
        return self.convert(pa.array(values, self.raw_type))

    def convert(self, raw: pa.Array) -> tuple[pa.Array, int]:
        """`to_arrow` for values already in an Arrow array of `raw_type`."""
        try:
            if self.source.data_type == "timestamp":
                return _instants_to_timestamps(raw, self.arrow_type)
            if self.source.data_type in ("date", "datetime"):
                return _text_to_dates(raw, self.arrow_type)
            if raw.type == self.arrow_type:
                return raw, 0
            if self.arrow_type == pa.float32():
                # Exact: the text is a round-trip double of a value that was a float32.
                return raw.cast(pa.float64()).cast(pa.float32()), 0
            return raw.cast(self.arrow_type), 0
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as exc:
            raise SchemaError(
                f"column {quote_mysql(self.source.name)} ({self.source.column_type}): cannot "
                f"convert a value to {self.arrow_type} ({exc}); the table may have changed since "
                f"it was reflected, run again to reflect it anew"
            ) from None


_NATIVE_TYPES = frozenset(
    {
        "tinyint", "smallint", "mediumint", "int", "bigint", "float", "double",
        "char", "varchar", "tinytext", "text", "mediumtext", "longtext", "enum", "set",
        "binary", "varbinary", "tinyblob", "blob", "mediumblob", "longblob",
    }
)  # fmt: skip
"""Source types a bulk Arrow reader (connectorx) returns exactly as integers, doubles, text or
bytes. Every other type is selected as its text (`CAST(... AS CHAR)`), exactly what the text
protocol prints, and converted by `ColumnPlan.convert` as on the PyMySQL path."""


INTEGER_TYPES = frozenset({"tinyint", "smallint", "mediumint", "int", "integer", "bigint"})


def _is_native(column: ColumnPlan) -> bool:
    source, arrow = column.source, column.arrow_type
    if source.is_json or source.data_type not in _NATIVE_TYPES:
        return False
    if source.data_type == "bigint" and "unsigned" in source.column_type.lower():
        return False  # beyond int64: DECIMAL(20,0), from its text
    return (
        pa.types.is_integer(arrow)
        or pa.types.is_floating(arrow)
        or pa.types.is_string(arrow)
        or pa.types.is_binary(arrow)
    )


def _is_plain_datetime(column: ColumnPlan) -> bool:
    """A DATETIME column selected as it is, which a bulk Arrow reader can read as timestamps."""
    source = column.source
    return source.data_type == "datetime" and column.select_sql == quote_mysql(source.name)


@dataclass(frozen=True)
class TablePlan:
    """The pinned plan for one table for one run."""

    source: SourceTable
    columns: tuple[ColumnPlan, ...]
    arrow_schema: pa.Schema
    fingerprint: str
    column_mapping: dict[str, str]

    @property
    def select_list(self) -> str:
        """The SELECT list, in column order, for the extraction query."""
        return ", ".join(column.select_sql for column in self.columns)

    @property
    def dictionary_columns(self) -> list[str]:
        """Columns worth Parquet dictionary encoding: short texts (ENUM, SET, CHAR/VARCHAR up to
        64 characters: statuses, codes, currencies), which repeat. Dictionary encoding every
        column doubles the write time and makes files of unique values (ids, amounts, notes,
        timestamps) larger, not smaller."""
        return [
            column.target_name
            for column in self.columns
            if pa.types.is_string(column.arrow_type)
            and not column.source.is_json
            and (
                column.source.data_type in ("enum", "set")
                or (
                    column.source.data_type in ("char", "varchar")
                    and (column.source.char_max_length or 0) <= 64
                )
            )
        ]

    def arrow_select_list(self, *, native_datetimes: bool) -> str:
        """The SELECT list for a bulk Arrow reader: native columns as they are, every other
        column as its text (see `_NATIVE_TYPES`); with native_datetimes, DATETIME columns as
        they are too (read as timestamps: the server sends them packed instead of printing
        them, ~25% of its CPU for the benchmark's orders), which connectorx refuses for a zero
        or invalid date (see `adapters.source.DatesUnreadable`)."""
        parts = []
        for index, column in enumerate(self.columns):
            quoted = quote_mysql(column.source.name)
            expression = column.select_sql.removesuffix(f" AS {quoted}")
            if not (_is_native(column) or (native_datetimes and _is_plain_datetime(column))):
                expression = f"CAST({expression} AS CHAR)"
            # Positional aliases: an alias named like its column would take that name's place
            # in ORDER BY, and order the rows by its text.
            parts.append(f"{expression} AS `c{index}`")
        return ", ".join(parts)

    def arrow_text_source(self, name: str) -> int | None:
        """The position of the column whose value, read with `arrow_select_list`, gives the
        text of `CAST(name AS CHAR)` (`cursor.cursor_text` prints integers and timestamps as
        MySQL does). None when only selecting the CAST gives it exactly (a computed select
        expression, ZEROFILL, which pads the text with zeros, or a native text or binary)."""
        for index, column in enumerate(self.columns):
            if column.source.name != name:
                continue
            if column.select_sql != quote_mysql(name):
                return None
            if not _is_native(column):
                return index
            integer = column.source.data_type in INTEGER_TYPES
            if integer and "zerofill" not in column.source.column_type.lower():
                return index
            return None
        return None

    @property
    def arrow_reader_supported(self) -> bool:
        """Whether every column can be read through `arrow_select_list` (binary columns other
        than the native ones, such as spatial values, cannot be cast to text)."""
        return all(
            _is_native(column) or not pa.types.is_binary(column.raw_type) for column in self.columns
        )

    def from_arrow(self, arrays: Sequence[pa.Array]) -> tuple[pa.RecordBatch, dict[str, int]]:
        """Convert arrays read with `arrow_select_list` into a batch of `arrow_schema`, with
        the same values as `to_record_batch` gives for the text protocol's rows."""
        converted = []
        zero_dates: dict[str, int] = {}
        for column, array in zip(self.columns, arrays, strict=True):
            if _is_native(column) or pa.types.is_timestamp(array.type):
                try:
                    converted.append(array.cast(column.arrow_type))
                except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as exc:
                    raise SchemaError(
                        f"column {quote_mysql(column.source.name)} ({column.source.column_type}):"
                        f" cannot convert a value to {column.arrow_type} ({exc})"
                    ) from None
                continue
            text = array.cast(column.raw_type)
            result, zeros = column.convert(text)
            converted.append(result)
            if zeros:
                zero_dates[column.source.name] = zeros
        return pa.RecordBatch.from_arrays(converted, schema=self.arrow_schema), zero_dates

    def to_record_batch(self, rows: Sequence[tuple]) -> tuple[pa.RecordBatch, dict[str, int]]:
        """Convert rows selected with `select_list` into a batch of `arrow_schema`.

        Returns the batch and the zero/invalid-date counts per source column (non-zero only).
        The rows are transposed in Arrow (one struct array of the raw values, then flattened),
        which is about twice as fast as `zip(*rows)` in Python.
        """
        raw_type = pa.struct(
            [pa.field(column.target_name, column.raw_type) for column in self.columns]
        )
        try:
            raw_columns = pa.array(rows, raw_type).flatten()
        except (pa.ArrowInvalid, pa.ArrowTypeError) as exc:
            raise SchemaError(
                f"rows read from {self.source.qualified_name} do not fit its plan ({exc}); select "
                f"them with the plan's select_list, and the raw-text connection"
            ) from None
        arrays = []
        zero_dates: dict[str, int] = {}
        for column, raw in zip(self.columns, raw_columns, strict=True):
            array, zeros = column.convert(raw)
            arrays.append(array)
            if zeros:
                zero_dates[column.source.name] = zeros
        return pa.RecordBatch.from_arrays(arrays, schema=self.arrow_schema), zero_dates


def plan_table(
    table: SourceTable,
    *,
    previous_mapping: Mapping[str, str] | None = None,
    json_as: JsonAs = "varchar",
    max_name_bytes: int = MAX_IDENTIFIER_BYTES,
) -> TablePlan:
    """Plan `table`: target names (keeping `previous_mapping`, at most `max_name_bytes`),
    types, and the Arrow schema."""
    mapping = sanitize_column_names(
        [column.name for column in table.columns], previous_mapping, max_bytes=max_name_bytes
    )
    columns = []
    fields = []
    for column in table.columns:
        arrow_type, redshift_type, select_sql = _map_type(table, column, json_as)
        plan = ColumnPlan(column, mapping[column.name], arrow_type, redshift_type, select_sql)
        columns.append(plan)
        fields.append(
            pa.field(
                plan.target_name,
                arrow_type,
                nullable=column.nullable or column.data_type in ("date", "datetime", "timestamp"),
                metadata={
                    b"mysql_name": column.name.encode(),
                    b"mysql_type": column.column_type.encode(),
                    b"warehouse_type": redshift_type.encode(),
                },
            )
        )
    schema = pa.schema(fields)
    return TablePlan(
        source=table,
        columns=tuple(columns),
        arrow_schema=schema,
        fingerprint=schema_fingerprint(schema),
        column_mapping=mapping,
    )


def warehouse_type(field: pa.Field) -> str:
    """The Redshift type a Parquet field was planned for (kept in the field's metadata)."""
    return (field.metadata or {}).get(b"warehouse_type", b"").decode()


def schema_fingerprint(schema: pa.Schema) -> str:
    """16 hex characters of sha256 over the field names, Arrow types and warehouse types."""
    described = json.dumps(
        [[field.name, str(field.type), warehouse_type(field)] for field in schema]
    )
    return hashlib.sha256(described.encode()).hexdigest()[:16]


def _map_type(
    table: SourceTable, column: SourceColumn, json_as: JsonAs
) -> tuple[pa.DataType, str, str]:
    """(Arrow type, Redshift type, SELECT expression) for one column."""
    quoted = quote_mysql(column.name)
    data_type = column.data_type
    unsigned = "unsigned" in column.column_type.lower()

    if column.is_json or data_type == "json":
        return pa.string(), "SUPER" if json_as == "super" else f"VARCHAR({VARCHAR_MAX})", quoted
    if data_type in ("tinyint", "smallint"):
        return (pa.int32(), "INTEGER", quoted) if unsigned else (pa.int16(), "SMALLINT", quoted)
    if data_type in ("mediumint", "int"):
        if unsigned and data_type == "int":
            return pa.int64(), "BIGINT", quoted
        return pa.int32(), "INTEGER", quoted
    if data_type == "bigint":
        if unsigned:
            return pa.decimal128(20, 0), "DECIMAL(20,0)", quoted
        return pa.int64(), "BIGINT", quoted
    if data_type == "decimal":
        return _decimal(table, column, quoted)
    if data_type == "float":
        # The text protocol prints FLOAT with 6 significant digits; a DOUBLE prints exactly.
        return pa.float32(), "REAL", f"CAST({quoted} AS DOUBLE) AS {quoted}"
    if data_type == "double":
        return pa.float64(), "DOUBLE PRECISION", quoted
    if data_type == "date":
        return pa.date32(), "DATE", quoted
    if data_type == "datetime":
        return pa.timestamp("us"), "TIMESTAMP", quoted
    if data_type == "timestamp":
        # The internal UTC instant, whatever the session time zone (and exact across DST).
        select = f"CAST(UNIX_TIMESTAMP({quoted}) * 1000000 AS SIGNED) AS {quoted}"
        return pa.timestamp("us", tz="UTC"), "TIMESTAMPTZ", select
    if data_type == "time":
        return pa.string(), "VARCHAR(20)", quoted
    if data_type == "year":
        return pa.int16(), "SMALLINT", quoted
    if data_type in ("char", "varchar", "enum", "set"):
        # information_schema gives characters: the declared length, ENUM's longest member, or
        # SET's members plus commas. Redshift counts bytes; utf8mb4 takes up to 4 per character.
        return pa.string(), _varchar(column.char_max_length), quoted
    if data_type == "tinytext":
        return pa.string(), "VARCHAR(1020)", quoted
    if data_type in ("text", "mediumtext", "longtext"):
        return pa.string(), f"VARCHAR({VARCHAR_MAX})", quoted
    if data_type in ("binary", "varbinary"):
        return pa.binary(), f"VARBYTE({max(column.char_max_length or 0, 1)})", quoted
    if data_type in ("tinyblob", "blob"):
        return pa.binary(), "VARBYTE(65535)", quoted
    if data_type in ("mediumblob", "longblob") or data_type in _SPATIAL_TYPES:
        return pa.binary(), f"VARBYTE({VARBYTE_MAX})", quoted
    if data_type == "bit":
        return _bit(column, quoted)
    raise SchemaError(
        f"column {quoted} of {table.qualified_name} has type {column.column_type}, which "
        f"s3rs cannot copy exactly; change the column's type or leave the table out of the "
        f"pipeline"
    )


def _decimal(table: SourceTable, column: SourceColumn, quoted: str) -> tuple[pa.DataType, str, str]:
    """DECIMAL(p,s) -> decimal128(p,s), or exact text when p > 38.

    Redshift's DECIMAL stops at 38 digits (MySQL's at 65), so wider columns are kept as their
    exact text in VARCHAR(p+2): digits, sign and decimal point.
    """
    precision, scale = column.numeric_precision, column.numeric_scale
    if precision is None or scale is None:
        raise SchemaError(
            f"column {quoted} of {table.qualified_name} ({column.column_type}) has no precision "
            f"or scale in information_schema; check the source server"
        )
    if precision <= 38:
        return pa.decimal128(precision, scale), f"DECIMAL({precision},{scale})", quoted
    return pa.string(), f"VARCHAR({precision + 2})", quoted


def _bit(column: SourceColumn, quoted: str) -> tuple[pa.DataType, str, str]:
    """BIT(n) selected as an unsigned integer, so the wire carries its decimal text."""
    width = column.numeric_precision or 1
    select = f"CAST({quoted} AS UNSIGNED) AS {quoted}"
    if width == 1:
        return pa.bool_(), "BOOLEAN", select
    if width < 64:
        return pa.int64(), "BIGINT", select
    return pa.decimal128(20, 0), "DECIMAL(20,0)", select


def _varchar(characters: int | None) -> str:
    if characters is None:
        return f"VARCHAR({VARCHAR_MAX})"
    return f"VARCHAR({min(max(characters, 1) * 4, VARCHAR_MAX)})"


# --------------------------------------------------------------------------- conversion


def _instants_to_timestamps(raw: pa.Array, arrow_type: pa.DataType) -> tuple[pa.Array, int]:
    """Microseconds since the epoch (UNIX_TIMESTAMP) -> UTC timestamps; 0 is the zero date.

    TIMESTAMP's range starts at 1970-01-01 00:00:01 UTC, so 0 can only be '0000-00-00 00:00:00'.
    """
    import pyarrow.compute as pc

    micros = raw.cast(pa.int64())
    zero = pc.equal(micros, 0)
    zeros = pc.sum(zero).as_py() or 0
    if zeros:
        micros = pc.if_else(zero, pa.scalar(None, pa.int64()), micros)
    return micros.cast(arrow_type), zeros


def _text_to_dates(raw: pa.Array, arrow_type: pa.DataType) -> tuple[pa.Array, int]:
    """'YYYY-MM-DD[ HH:MM:SS[.ffffff]]' -> date32 / timestamp[us].

    Arrow's cast parses the space-separated form and refuses impossible dates (month or day 00,
    February 31), so the common case is one cast. Only when it fails are the impossible dates
    found, among the distinct date parts, and set to NULL before casting again.
    """
    import pyarrow.compute as pc

    try:
        return raw.cast(arrow_type), 0
    except pa.ArrowInvalid:
        pass
    day_part = pc.utf8_slice_codeunits(raw, 0, 10)
    impossible = [
        text
        for text in pc.unique(day_part).to_pylist()
        if text is not None and not _is_real_date(text)
    ]
    if not impossible:
        return raw.cast(arrow_type), 0  # fails again, with Arrow's message for the bad value
    mask = pc.is_in(day_part, value_set=pa.array(impossible, pa.string()))
    zeros = pc.sum(mask).as_py() or 0
    cleaned = pc.if_else(mask, pa.scalar(None, pa.string()), raw)
    return cleaned.cast(arrow_type), zeros


def _is_real_date(text: str) -> bool:
    """False for MySQL's zero, partial-zero and invalid dates; True for any other text.

    Text that is not a date at all counts as real here, so that the cast reports it.
    """
    match = _DATE_TEXT.fullmatch(text)
    if match is None:
        return True
    year, month, day = (int(part) for part in match.groups())
    if not 1 <= month <= 12:
        return False
    days = 29 if month == 2 and calendar.isleap(year) else calendar.mdays[month]
    return 1 <= day <= days


# --------------------------------------------------------------------------- column names


def sanitize_column_names(
    names: Sequence[str],
    previous: Mapping[str, str] | None = None,
    *,
    max_bytes: int = MAX_IDENTIFIER_BYTES,
) -> dict[str, str]:
    """Source column name -> warehouse column name, deterministic, unique, <= `max_bytes`
    (127 for Redshift, 63 for PostgreSQL: `IDENTIFIER_BYTES`).

    Lowercase; characters other than letters, ASCII digits and '_' become '_'; a leading digit,
    a Redshift reserved word or a system column name gets the prefix 'col_'; an empty name
    becomes 'col'; collisions get '_2', '_3', ... in source column order. Names in `previous`
    (an earlier run's mapping) are kept for the columns that still exist, and no new name
    reuses any of them, not even one of a dropped column, whose target column may still exist.
    """
    previous = previous or {}
    taken = {target.lower() for target in previous.values()}
    mapping: dict[str, str] = {}
    for name in names:
        if name in previous:
            mapping[name] = previous[name]
            continue
        base = _sanitize(name, max_bytes)
        candidate = base
        suffix = 1
        while candidate.lower() in taken:
            suffix += 1
            tail = f"_{suffix}"
            candidate = _truncate(base, max_bytes - len(tail)) + tail
        taken.add(candidate.lower())
        mapping[name] = candidate
    return mapping


def _sanitize(name: str, max_bytes: int = MAX_IDENTIFIER_BYTES) -> str:
    text = "".join(
        char if char == "_" or char in _ASCII_DIGITS or char.isalpha() else "_"
        for char in name.lower()
    )
    if not text:
        return "col"
    if (
        text[0] in _ASCII_DIGITS
        or (text.isascii() and text.upper() in REDSHIFT_RESERVED_WORDS)
        or text in SYSTEM_COLUMN_NAMES
    ):
        text = f"col_{text}"
    return _truncate(text, max_bytes)


def _truncate(text: str, max_bytes: int) -> str:
    """At most `max_bytes` of UTF-8, never splitting a character."""
    return text.encode()[:max_bytes].decode("utf-8", errors="ignore")
