"""Reflection, type mapping, column names and Arrow conversion, on the real MariaDB.

Values are inserted with the ordinary (decoding) driver, read back the way extraction reads them
(raw text over a streaming cursor, the plan's SELECT list) and compared with expectations built
here in plain Python, independently of the code under test.
"""

from __future__ import annotations

import dataclasses
import struct
import time
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Any

import pyarrow as pa
import pymysql
import pymysql.cursors
import pytest
import sqlalchemy as sa

from s3rs_dagster.adapters.source import open_source
from s3rs_dagster.config import SourceConfig
from s3rs_dagster.core.schema import (
    REDSHIFT_RESERVED_WORDS,
    SchemaError,
    SourceColumn,
    SourceTable,
    TablePlan,
    plan_table,
    quote_mysql,
    reflect_table,
    sanitize_column_names,
)
from s3rs_dagster_tests.adapters.test_source import direct_source
from s3rs_dagster_tests.conftest import Stack

# --------------------------------------------------------------------------- the test database


@pytest.fixture(scope="module")
def database(stack: Stack) -> Iterator[str]:
    """A database of its own for this module, dropped at the end."""
    name = f"s3rs_test_schema_{uuid.uuid4().hex[:10]}"
    with open_source(direct_source(stack)) as engine:
        run_sql(engine, f"CREATE DATABASE `{name}` CHARACTER SET utf8mb4")
        try:
            yield name
        finally:
            run_sql(engine, f"DROP DATABASE `{name}`")


def run_sql(engine: sa.Engine, *statements: str, params: tuple[Any, ...] | None = None) -> None:
    """Run statements on one DBAPI connection (no SQLAlchemy text(): ':59' is not a bind)."""
    connection = engine.raw_connection()
    try:
        with connection.cursor() as cursor:
            for statement in statements:
                cursor.execute(statement, params)
        connection.commit()
    finally:
        connection.close()


def source_for(stack: Stack, database: str, time_zone: str = "+00:00") -> SourceConfig:
    return direct_source(stack, database=database, time_zone=time_zone)


def read_rows(source: SourceConfig, plan: TablePlan, order_by: str) -> list[tuple[Any, ...]]:
    """Rows the way extraction reads them: raw text, streaming cursor, the plan's SELECT list."""
    table = plan.source
    sql = f"SELECT {plan.select_list} FROM `{table.schema}`.`{table.name}` ORDER BY {order_by}"
    with open_source(source, raw_text=True) as engine:
        connection = engine.raw_connection()
        try:
            cursor = connection.cursor(pymysql.cursors.SSCursor)
            cursor.execute(sql)
            rows = list(cursor.fetchall())
            cursor.close()
        finally:
            connection.close()
    return rows


# --------------------------------------------------------------------------- every type

EVERY_TYPE_DDL = """
CREATE TABLE everything (
    id INT NOT NULL PRIMARY KEY,
    ti TINYINT, tiu TINYINT UNSIGNED, tb TINYINT(1), si SMALLINT, siu SMALLINT UNSIGNED,
    mi MEDIUMINT, miu MEDIUMINT UNSIGNED, i INT, iu INT UNSIGNED, bi BIGINT, biu BIGINT UNSIGNED,
    dec38 DECIMAL(38,10), dec65 DECIMAL(65,30), f FLOAT, dbl DOUBLE,
    d DATE, dnn DATE NOT NULL DEFAULT '2000-01-01', dtm DATETIME(6),
    ts TIMESTAMP(6) NULL DEFAULT NULL, tm TIME(6), y YEAR,
    c CHAR(10), vc VARCHAR(50), tx TEXT, tt TINYTEXT, j JSON,
    e ENUM('small','medium','large','é€x'), st SET('a','b','c'),
    bn BINARY(4), vb VARBINARY(16), bl BLOB, g GEOMETRY,
    b1 BIT(1), b10 BIT(10), b64 BIT(64),
    `Order` INT, `190_time` VARCHAR(8), `we``ird col` INT
)
"""

MAX_DEC65 = "9" * 35 + "." + "9" * 30

# Inserted in this order (sql_mode for each row), then read back ordered by id.
EVERY_TYPE_ROWS: list[tuple[str | None, dict[str, Any]]] = [
    (
        None,
        {
            "id": 1, "ti": 127, "tiu": 255, "tb": 1, "si": 32767, "siu": 65535,
            "mi": 8388607, "miu": 16777215, "i": 2147483647, "iu": 4294967295,
            "bi": 9223372036854775807, "biu": 18446744073709551615,
            "dec38": "9999999999999999999999999999.9999999999", "dec65": MAX_DEC65,
            "f": 3.4028234663852886e38, "dbl": 1.7976931348623157e308,
            "d": "9999-12-31", "dnn": "9999-12-31", "dtm": "9999-12-31 23:59:59.999999",
            "ts": "2038-01-19 08:44:07.999999", "tm": "838:59:59.000000", "y": 2155,
            "c": "abc", "vc": "😀 emoji € ü", "tx": "x" * 5000 + "é", "tt": "tiny",
            "j": '{"a": [1, 2.5, "x"], "b": null}', "e": "é€x", "st": "a,c",
            "bn": b"\x01\x00", "vb": b"\x00\xff\x00", "bl": bytes(range(256)) * 4,
            "g": (1.0, 2.0), "b1": 1, "b10": 1023, "b64": 2**64 - 1,
            "Order": 1, "190_time": "late", "we`ird col": 7,
        },
    ),
    (
        None,
        {
            "id": 2, "ti": -128, "tiu": 0, "tb": 0, "si": -32768, "siu": 0,
            "mi": -8388608, "miu": 0, "i": -2147483648, "iu": 0,
            "bi": -9223372036854775808, "biu": 0,
            "dec38": "-9999999999999999999999999999.9999999999",
            "dec65": "-0.000000000000000000000000000001",
            "f": 1.1754943508222875e-38, "dbl": 5e-324,
            "d": "1000-01-01", "dnn": "1000-01-01", "dtm": "1000-01-01 00:00:00.000001",
            "ts": "1970-01-01 05:30:01.000000", "tm": "-838:59:59.000000", "y": 1901,
            "c": "", "vc": "a\0b", "tx": "", "tt": "", "j": "[]", "e": "small", "st": "",
            "bn": b"", "vb": b"", "bl": b"", "g": (-1.5, 1e300), "b1": 0, "b10": 0, "b64": 0,
            "Order": -1, "190_time": "", "we`ird col": 0,
        },
    ),
    (None, {"id": 3, "dnn": "2000-01-01"}),
    (
        "",
        {
            "id": 4, "d": "0000-00-00", "dnn": "0000-00-00", "dtm": "0000-00-00 00:00:00",
            "ts": "0000-00-00 00:00:00",
        },
    ),
    (
        "",
        {
            "id": 5, "d": "2025-00-10", "dnn": "2025-03-00", "dtm": "2025-03-00 10:00:00",
            "ts": "2025-03-30 08:00:00.123456",
        },
    ),
    (
        "ALLOW_INVALID_DATES",
        {
            "id": 6, "d": "2025-02-31", "dnn": "2024-02-30", "dtm": "2023-02-29 12:00:00",
            "dbl": -0.0,  # MariaDB stores it as 0.0 (and -0.0 == 0.0 here)
        },
    ),
    (
        None,
        {
            "id": 7, "d": "2024-02-29", "dnn": "2025-03-30", "dtm": "2025-03-30 02:30:00.123456",
            "tm": "12:34:56.789012", "f": -1.5, "dbl": 0.1, "dec38": "0.0000000001",
            "dec65": "12345.678", "y": 0, "bn": b"\xff\xff\xff\xff",
        },
    ),
]  # fmt: skip

EXPECTED_TYPES: dict[str, tuple[pa.DataType, str]] = {
    "id": (pa.int32(), "INTEGER"),
    "ti": (pa.int16(), "SMALLINT"),
    "tiu": (pa.int32(), "INTEGER"),
    "tb": (pa.int16(), "SMALLINT"),
    "si": (pa.int16(), "SMALLINT"),
    "siu": (pa.int32(), "INTEGER"),
    "mi": (pa.int32(), "INTEGER"),
    "miu": (pa.int32(), "INTEGER"),
    "i": (pa.int32(), "INTEGER"),
    "iu": (pa.int64(), "BIGINT"),
    "bi": (pa.int64(), "BIGINT"),
    "biu": (pa.decimal128(20, 0), "DECIMAL(20,0)"),
    "dec38": (pa.decimal128(38, 10), "DECIMAL(38,10)"),
    "dec65": (pa.string(), "VARCHAR(67)"),
    "f": (pa.float32(), "REAL"),
    "dbl": (pa.float64(), "DOUBLE PRECISION"),
    "d": (pa.date32(), "DATE"),
    "dnn": (pa.date32(), "DATE"),
    "dtm": (pa.timestamp("us"), "TIMESTAMP"),
    "ts": (pa.timestamp("us", tz="UTC"), "TIMESTAMPTZ"),
    "tm": (pa.string(), "VARCHAR(20)"),
    "y": (pa.int16(), "SMALLINT"),
    "c": (pa.string(), "VARCHAR(40)"),
    "vc": (pa.string(), "VARCHAR(200)"),
    "tx": (pa.string(), "VARCHAR(65535)"),
    "tt": (pa.string(), "VARCHAR(1020)"),
    "j": (pa.string(), "VARCHAR(65535)"),
    "e": (pa.string(), "VARCHAR(24)"),
    "st": (pa.string(), "VARCHAR(20)"),
    "bn": (pa.binary(), "VARBYTE(4)"),
    "vb": (pa.binary(), "VARBYTE(16)"),
    "bl": (pa.binary(), "VARBYTE(65535)"),
    "g": (pa.binary(), "VARBYTE(1024000)"),
    "b1": (pa.bool_(), "BOOLEAN"),
    "b10": (pa.int64(), "BIGINT"),
    "b64": (pa.decimal128(20, 0), "DECIMAL(20,0)"),
    "Order": (pa.int32(), "INTEGER"),
    "190_time": (pa.string(), "VARCHAR(32)"),
    "we`ird col": (pa.int32(), "INTEGER"),
}

SESSION_ZONE = "+05:30"


def _date_or_none(text: str) -> date | None:
    try:
        return date.fromisoformat(text)
    except ValueError:  # zero, partial-zero and impossible dates
        return None


def _datetime_or_none(text: str) -> datetime | None:
    try:
        return datetime.fromisoformat(text)
    except ValueError:
        return None


def _instant_or_none(text: str) -> datetime | None:
    """A TIMESTAMP written in the session zone, as the UTC instant it denotes."""
    local = _datetime_or_none(text + SESSION_ZONE)
    return None if local is None else local.astimezone(UTC)


def _mysql_point(xy: tuple[float, float]) -> bytes:
    """MySQL's internal geometry: a 4-byte SRID, then WKB (little-endian POINT)."""
    return struct.pack("<IBIdd", 0, 1, 1, *xy)


EXPECT: dict[str, Callable[[Any], Any]] = {
    "biu": Decimal,
    "b64": Decimal,
    "dec38": Decimal,
    "dec65": lambda text: f"{Decimal(text):.30f}",
    "d": _date_or_none,
    "dnn": _date_or_none,
    "dtm": _datetime_or_none,
    "ts": _instant_or_none,
    "bn": lambda raw: raw.ljust(4, b"\0"),
    "g": _mysql_point,
    "b1": bool,
}


def _insert(engine: sa.Engine, sql_mode: str | None, values: dict[str, Any]) -> None:
    """Insert one row of EVERY_TYPE_ROWS in the session zone, under `sql_mode` (None: the
    server's default, strict)."""
    names = ", ".join(f"`{name.replace('`', '``')}`" for name in values)
    slots = ", ".join("ST_PointFromText(%s)" if name == "g" else "%s" for name in values)
    params = tuple(f"POINT({v[0]!r} {v[1]!r})" if k == "g" else v for k, v in values.items())
    connection = engine.raw_connection()
    try:
        with connection.cursor() as cursor:
            cursor.execute(f"SET time_zone = '{SESSION_ZONE}'")
            if sql_mode is None:
                cursor.execute("SET SESSION sql_mode = @@GLOBAL.sql_mode")
            else:
                cursor.execute("SET SESSION sql_mode = %s", (sql_mode,))
            cursor.execute(f"INSERT INTO everything ({names}) VALUES ({slots})", params)
        connection.commit()
    finally:
        connection.close()


@pytest.fixture(scope="module")
def everything(stack: Stack, database: str) -> SourceTable:
    with open_source(source_for(stack, database)) as engine:
        run_sql(engine, "SET SESSION sql_mode = ''", EVERY_TYPE_DDL)
        for sql_mode, values in EVERY_TYPE_ROWS:
            _insert(engine, sql_mode, values)
        with engine.connect() as connection:
            return reflect_table(connection, database, "everything")


def test_every_type_maps_as_documented(everything: SourceTable) -> None:
    plan = plan_table(everything)
    got = {column.source.name: (column.arrow_type, column.redshift_type) for column in plan.columns}
    assert got == EXPECTED_TYPES
    assert plan.column_mapping["Order"] == "col_order"
    assert plan.column_mapping["190_time"] == "col_190_time"
    assert plan.column_mapping["we`ird col"] == "we_ird_col"
    as_super = plan_table(everything, json_as="super").columns
    assert {column.source.name: column.redshift_type for column in as_super}["j"] == "SUPER"

    schema = plan.arrow_schema
    assert schema.names == [plan.column_mapping[c.name] for c in everything.columns]
    assert schema.field("col_order").metadata == {
        b"mysql_name": b"Order",
        b"mysql_type": b"int(11)",
        b"warehouse_type": b"INTEGER",
    }
    assert schema.field("id").nullable is False
    assert schema.field("vc").nullable is True
    # NOT NULL in MySQL, but a zero date there becomes NULL.
    assert schema.field("dnn").nullable is True


def test_select_list_quotes_and_fixes_inexact_text(everything: SourceTable) -> None:
    select = {column.source.name: column.select_sql for column in plan_table(everything).columns}
    assert select["we`ird col"] == "`we``ird col`"
    assert select["f"] == "CAST(`f` AS DOUBLE) AS `f`"
    assert select["ts"] == "CAST(UNIX_TIMESTAMP(`ts`) * 1000000 AS SIGNED) AS `ts`"
    assert select["b64"] == "CAST(`b64` AS UNSIGNED) AS `b64`"


def test_every_value_survives_the_round_trip(
    stack: Stack, database: str, everything: SourceTable
) -> None:
    plan = plan_table(everything)
    rows = read_rows(source_for(stack, database, SESSION_ZONE), plan, "id")
    batch, zero_dates = plan.to_record_batch(rows)

    assert batch.schema == plan.arrow_schema
    assert batch.num_rows == len(EVERY_TYPE_ROWS)
    for column in everything.columns:
        convert = EXPECT.get(column.name, lambda value: value)
        expected = [
            None if values.get(column.name) is None else convert(values[column.name])
            for _, values in EVERY_TYPE_ROWS
        ]
        got = batch.column(plan.column_mapping[column.name]).to_pylist()
        assert got == expected, column.name
    assert zero_dates == {"d": 3, "dnn": 3, "dtm": 3, "ts": 1}

    utc = batch.column("ts").to_pylist()
    assert utc[4] == datetime(2025, 3, 30, 2, 30, 0, 123456, tzinfo=UTC)
    assert batch.column("ts").cast(pa.int64()).to_pylist()[4] == 1743301800123456
    assert batch.column("vc").to_pylist()[1] == "a\x00b"
    assert batch.column("c").to_pylist()[1] == ""  # empty, not NULL
    assert batch.column("c").to_pylist()[2] is None


def test_an_empty_read_gives_an_empty_batch(everything: SourceTable) -> None:
    plan = plan_table(everything)
    batch, zero_dates = plan.to_record_batch([])
    assert batch.num_rows == 0 and batch.schema == plan.arrow_schema and zero_dates == {}


# --------------------------------------------------------------------------- conversion units


def _column(name: str, data_type: str, column_type: str, **facts: Any) -> SourceColumn:
    values: dict[str, Any] = {
        "name": name,
        "ordinal": 1,
        "data_type": data_type,
        "column_type": column_type,
        "nullable": True,
        "numeric_precision": None,
        "numeric_scale": None,
        "datetime_precision": None,
        "char_max_length": None,
        "is_json": False,
    }
    return SourceColumn(**{**values, **facts})


def _table(*columns: SourceColumn) -> SourceTable:
    numbered = tuple(
        dataclasses.replace(column, ordinal=index) for index, column in enumerate(columns, start=1)
    )
    return SourceTable(schema="shop", name="orders", columns=numbered, primary_key=())


def test_to_arrow_nulls_and_counts_zero_dates() -> None:
    plan = plan_table(_table(_column("at", "datetime", "datetime(6)", datetime_precision=6)))
    values = ["2025-00-10 00:00:00.000000", None, "2025-01-02 03:04:05.000006", "0000-00-00"]
    array, zeros = plan.columns[0].to_arrow(values)
    assert array.to_pylist() == [None, None, datetime(2025, 1, 2, 3, 4, 5, 6), None]
    assert zeros == 2


def test_a_value_that_does_not_fit_names_the_column() -> None:
    plan = plan_table(_table(_column("qty", "smallint", "smallint(6)")))
    with pytest.raises(SchemaError, match=r"column `qty` \(smallint\(6\)\): cannot convert"):
        plan.columns[0].to_arrow(["1", "70000"])
    day = plan_table(_table(_column("day", "date", "date"))).columns[0]
    with pytest.raises(SchemaError, match="column `day`"):
        day.to_arrow(["not a date"])


def test_zerofill_text_converts() -> None:
    plan = plan_table(
        _table(
            _column("n", "int", "int(5) unsigned zerofill"),
            _column("p", "decimal", "decimal(10,2) unsigned zerofill", numeric_precision=10,
                    numeric_scale=2),
        )
    )  # fmt: skip
    batch, _ = plan.to_record_batch([("00042", "00000012.30")])
    assert batch.to_pylist() == [{"n": 42, "p": Decimal("12.30")}]


def test_rows_that_do_not_fit_the_plan_are_refused() -> None:
    plan = plan_table(_table(_column("a", "int", "int(11)"), _column("b", "int", "int(11)")))
    with pytest.raises(SchemaError, match=r"rows read from `shop`.`orders` do not fit its plan"):
        plan.to_record_batch([("1",)])


def test_unsupported_type_is_refused_with_the_column_and_type() -> None:
    with pytest.raises(SchemaError, match=r"column `id` of `shop`.`orders` has type uuid"):
        plan_table(_table(_column("id", "uuid", "uuid")))


def test_quote_mysql() -> None:
    assert quote_mysql("a`b") == "`a``b`"
    with pytest.raises(SchemaError, match="NUL"):
        quote_mysql("a\0b")


# --------------------------------------------------------------------------- reflection


@pytest.fixture(scope="module")
def keyed(stack: Stack, database: str) -> str:
    with open_source(source_for(stack, database)) as engine:
        run_sql(
            engine,
            "CREATE TABLE pk_order (a INT NOT NULL, b VARCHAR(10) NOT NULL, c INT NULL, "
            "doc JSON, notes LONGTEXT, PRIMARY KEY (b, a))",
            "CREATE TABLE no_key (x INT, u UUID)",
        )
    return database


def test_reflect_keys_nullability_and_json(stack: Stack, keyed: str) -> None:
    with open_source(source_for(stack, keyed)) as engine, engine.connect() as connection:
        table = reflect_table(connection, keyed, "pk_order")
        no_key = reflect_table(connection, keyed, "no_key")
    assert table.primary_key == ("b", "a")
    columns = {column.name: column for column in table.columns}
    assert [column.name for column in table.columns] == ["a", "b", "c", "doc", "notes"]
    assert [column.ordinal for column in table.columns] == [1, 2, 3, 4, 5]
    assert (columns["a"].nullable, columns["b"].nullable, columns["c"].nullable) == (
        False,
        False,
        True,
    )
    assert columns["doc"].is_json and columns["doc"].data_type == "longtext"
    assert not columns["notes"].is_json
    assert columns["b"].char_max_length == 10 and columns["b"].column_type == "varchar(10)"
    assert no_key.primary_key == ()
    with pytest.raises(SchemaError, match=r"column `u` of .* has type uuid"):
        plan_table(no_key)


def test_missing_table_and_schema_suggest_a_name(stack: Stack, keyed: str) -> None:
    with open_source(source_for(stack, keyed)) as engine, engine.connect() as connection:
        with pytest.raises(SchemaError) as missing_table:
            reflect_table(connection, keyed, "pk_ordr")
        with pytest.raises(SchemaError) as missing_schema:
            reflect_table(connection, keyed + "x", "pk_order")
    assert f"table `{keyed}`.`pk_ordr` does not exist" in str(missing_table.value)
    assert "did you mean 'pk_order'?" in str(missing_table.value)
    assert f"schema `{keyed}x` does not exist" in str(missing_schema.value)
    assert f"did you mean '{keyed}'?" in str(missing_schema.value)


# --------------------------------------------------------------------------- column names


def test_sanitize_column_names() -> None:
    mapping = sanitize_column_names(["190_time", "Order", "a b", "A_B", "", "Prénom", "naïve-x"])
    assert mapping == {
        "190_time": "col_190_time",
        "Order": "col_order",
        "a b": "a_b",
        "A_B": "a_b_2",
        "": "col",
        "Prénom": "prénom",
        "naïve-x": "naïve_x",
    }
    assert sanitize_column_names(["xmin", "select"]) == {"xmin": "col_xmin", "select": "col_select"}
    assert {"ORDER", "SELECT", "TIMESTAMP", "WITHOUT", "AZ64"} <= REDSHIFT_RESERVED_WORDS


def test_long_unicode_names_are_cut_on_a_character_boundary() -> None:
    long_name = "é" * 100  # 200 bytes of UTF-8
    twin = "É" * 100  # the same once lowercased
    mapping = sanitize_column_names([long_name, twin])
    first, second = mapping[long_name], mapping[twin]
    assert first == "é" * 63 and len(first.encode()) == 126
    assert second == "é" * 62 + "_2" and len(second.encode()) <= 127
    for name in (first, second):
        name.encode().decode("utf-8")  # whole characters only


def test_previous_mapping_is_kept_and_new_names_avoid_it() -> None:
    previous = {"A b": "a_b", "Gone": "gone", "x": "custom_x"}
    mapping = sanitize_column_names(["x", "a b", "A b", "gone"], previous)
    assert mapping == {"x": "custom_x", "a b": "a_b_2", "A b": "a_b", "gone": "gone_2"}
    assert sanitize_column_names(["x", "a b", "A b", "gone"], previous) == mapping


# --------------------------------------------------------------------------- fingerprint


def test_fingerprint_follows_names_and_types_only() -> None:
    base = _table(_column("id", "bigint", "bigint(20)"), _column("v", "varchar", "varchar(5)"))
    same = _table(_column("id", "bigint", "bigint"), _column("v", "varchar", "varchar(5)"))
    wider = _table(_column("id", "bigint", "bigint(20) unsigned"), base.columns[1])
    renamed = _table(_column("ID2", "bigint", "bigint(20)"), base.columns[1])
    fingerprint = plan_table(base).fingerprint
    assert len(fingerprint) == 16 and int(fingerprint, 16) >= 0
    assert plan_table(same).fingerprint == fingerprint  # only metadata differs
    assert plan_table(wider).fingerprint != fingerprint
    assert plan_table(renamed).fingerprint != fingerprint


# --------------------------------------------------------------------------- speed


def test_conversion_speed() -> None:
    table = _table(
        _column("id", "bigint", "bigint(20)"),
        _column("at", "datetime", "datetime(6)", datetime_precision=6),
        _column("qty", "int", "int(11)"),
        _column("price", "decimal", "decimal(12,2)", numeric_precision=12, numeric_scale=2),
        _column("sku", "varchar", "varchar(32)", char_max_length=32),
        _column("note", "varchar", "varchar(255)", char_max_length=255),
    )
    plan = plan_table(table)
    count = 200_000
    rows = [
        (
            str(9_000_000_000 + n),
            f"2025-{1 + n % 12:02d}-{1 + n % 28:02d} {n % 24:02d}:{n % 60:02d}:{n % 60:02d}"
            f".{n % 1_000_000:06d}",
            str(n % 100_000 - 50_000),
            f"{n % 10_000_000}.{n % 100:02d}",
            f"SKU-{n:08d}",
            None if n % 3 == 0 else f"note number {n} with some words",
        )
        for n in range(count)
    ]
    started = time.perf_counter()
    batch, zero_dates = plan.to_record_batch(rows)
    rate = count / (time.perf_counter() - started)
    print(f"\nconverted {count} rows x 6 columns at {rate:,.0f} rows/s")
    assert batch.num_rows == count and zero_dates == {}
    assert batch.column("price").to_pylist()[12345] == Decimal("12345.45")
    assert batch.column("at").to_pylist()[12345] == datetime(2025, 10, 26, 9, 45, 45, 12345)
    assert batch.column("note").null_count == (count + 2) // 3
    assert rate > 300_000
