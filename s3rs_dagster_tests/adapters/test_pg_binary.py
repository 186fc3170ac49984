"""Binary COPY rows built from Arrow read back exactly as the CSV COPY of the same rows does."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Any

import psycopg
import pyarrow as pa
import pytest

from s3rs_dagster.adapters.warehouse.pg_binary import HEADER, TRAILER, RowEncoder
from s3rs_dagster.adapters.warehouse.postgres_backend import csv_batch
from s3rs_dagster_tests.conftest import Stack

COLUMNS = [
    ("si", "SMALLINT", pa.int16()),
    ("i", "INTEGER", pa.int32()),
    ("bi", "BIGINT", pa.int64()),
    ("d12", "NUMERIC(12,2)", pa.decimal128(12, 2)),
    ("d38", "NUMERIC(38,10)", pa.decimal128(38, 10)),
    ("d20", "NUMERIC(20,0)", pa.decimal128(20, 0)),
    ("d44", "NUMERIC(4,4)", pa.decimal128(4, 4)),
    ("d7", "NUMERIC(7,0)", pa.decimal128(7, 0)),
    ("f", "REAL", pa.float32()),
    ("db", "DOUBLE PRECISION", pa.float64()),
    ("flag", "BOOLEAN", pa.bool_()),
    ("dt", "DATE", pa.date32()),
    ("ts", "TIMESTAMP", pa.timestamp("us")),
    ("tz", "TIMESTAMPTZ", pa.timestamp("us", "UTC")),
    ("vc", "VARCHAR(20)", pa.string()),
    ("tx", "TEXT", pa.string()),
    ("vb", "BYTEA", pa.binary()),
]
ROWS: list[tuple[Any, ...]] = [
    (
        -32768,
        -2147483648,
        -9223372036854775808,
        Decimal("-9999999999.99"),
        Decimal("9999999999999999999999999999.9999999999"),
        Decimal(18446744073709551615),
        Decimal("-0.0001"),
        Decimal(-1234567),
        3.4028234663852886e38,
        1.7976931348623157e308,
        True,
        date(1, 1, 1),
        datetime(1, 1, 1),
        datetime(2025, 3, 30, 2, 30, 0, 123456, tzinfo=UTC),
        "😀 a",
        "",
        b"\x00\xff\x00",
    ),
    (None,) * len(COLUMNS),
    (
        32767,
        2147483647,
        9223372036854775807,
        Decimal("0.01"),
        Decimal("-0.0000000001"),
        Decimal(0),
        Decimal("0.9999"),
        Decimal(0),
        1.1754943508222875e-38,
        5e-324,
        False,
        date(9999, 12, 31),
        datetime(2025, 3, 1, 23, 59, 59, 999999),
        datetime(1970, 1, 1, tzinfo=UTC),
        "",
        "x" * 1000,
        b"",
    ),
    (
        0,
        0,
        0,
        Decimal("-0.00"),
        Decimal("-9999999999999999999999999999.9999999999"),
        Decimal(10**19 + 12345),
        Decimal("0.5"),
        Decimal(9999999),
        -0.0,
        -1.5,
        None,
        date(1999, 12, 31),
        datetime(1999, 12, 31, 23, 59, 59, 999999),
        None,
        None,
        'é\t"q",\n\\N',
        None,
    ),
]


@pytest.fixture
def connection(stack: Stack) -> Iterator[psycopg.Connection[Any]]:
    with stack.postgres() as connection:
        yield connection
        connection.rollback()


def copied(connection: psycopg.Connection[Any], table: str, form: str, chunks: list[Any]) -> Any:
    columns = ", ".join(f"{name} {kind}" for name, kind, _ in COLUMNS)
    connection.execute(f"CREATE TEMP TABLE {table} (n SERIAL, {columns})")
    names = ", ".join(name for name, _, _ in COLUMNS)
    with connection.cursor() as cursor:
        with cursor.copy(f"COPY {table} ({names}) FROM STDIN (FORMAT {form})") as copy:
            for chunk in chunks:
                copy.write(chunk)
        cursor.execute(f"SELECT {names} FROM {table} ORDER BY n")
        return cursor.fetchall()


def catalog(connection: psycopg.Connection[Any], table: str) -> list[tuple[str, str, int]]:
    rows = connection.execute(
        "SELECT attname, format_type(atttypid, NULL), atttypmod FROM pg_attribute "
        "WHERE attrelid = %s::regclass AND attnum > 1 ORDER BY attnum",
        (table,),
    ).fetchall()
    return [(name, kind, modifier) for name, kind, modifier in rows]


def test_binary_rows_read_back_as_the_csv_rows_do(connection: psycopg.Connection[Any]) -> None:
    """Every encoded type, NULLs, extremes, negative and 38-digit decimals, and batches that
    start mid-array (sliced, as record batches of a file are)."""
    batch = pa.RecordBatch.from_arrays(
        [pa.array([row[i] for row in ROWS], kind) for i, (_, _, kind) in enumerate(COLUMNS)],
        names=[name for name, _, _ in COLUMNS],
    )
    slices = [batch.slice(0, 1), batch.slice(1, 2), batch.slice(3)]
    expected = copied(connection, "by_csv", "csv", [csv_batch(part) for part in slices])
    encoder = RowEncoder.of(catalog(connection, "by_csv"))
    assert encoder is not None
    chunks = [HEADER, *(encoder.encode(part) for part in slices), TRAILER]
    assert copied(connection, "by_binary", "binary", chunks) == expected
    assert expected[0][6] == Decimal("-0.0001") and expected[2][4] == Decimal("-0.0000000001")


def test_columns_of_nulls_only_and_empty_batches_encode(
    connection: psycopg.Connection[Any],
) -> None:
    names = [name for name, _, _ in COLUMNS]
    nulls = pa.RecordBatch.from_arrays([pa.nulls(3, kind) for _, _, kind in COLUMNS], names=names)
    expected = copied(connection, "nulls_by_csv", "csv", [csv_batch(nulls)])
    encoder = RowEncoder.of(catalog(connection, "nulls_by_csv"))
    assert encoder is not None
    chunks = [HEADER, encoder.encode(nulls), encoder.encode(nulls.slice(0, 0)), TRAILER]
    assert copied(connection, "nulls_by_binary", "binary", chunks) == expected == [(None,) * 17] * 3


def test_a_type_without_an_encoder_leaves_the_table_to_csv() -> None:
    assert RowEncoder.of([("a", "bigint", -1), ("b", "jsonb", -1)]) is None
    assert RowEncoder.of([("a", "numeric", -1)]) is None, "NUMERIC without a precision"
    assert RowEncoder.of([("a", "numeric", (65 << 16) + 30 + 4)]) is None, "over 38 digits"
    assert RowEncoder.of([("a", "numeric", (12 << 16) + 2 + 4)]) is not None
