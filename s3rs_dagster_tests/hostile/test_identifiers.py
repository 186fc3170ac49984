"""Hostile identifiers: tables and columns named with quotes, backticks, semicolons, spaces,
unicode, reserved words and leading digits, synced end to end by `s3rs sync` into DuckDB and
PostgreSQL on the real stack. The target's rows must equal the source's, and nothing in a name
may reach SQL as SQL."""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
import yaml

from s3rs_dagster.adapters.storage import open_storage
from s3rs_dagster.config import Config
from s3rs_dagster_tests.conftest import Stack
from s3rs_dagster_tests.core.conftest import MakeConfig, SourceDb
from s3rs_dagster_tests.core.test_load import connect_target, drop_schema
from s3rs_dagster_tests.hostile.conftest import invoke

pytestmark = [pytest.mark.hostile, pytest.mark.stack]

BASE = datetime(2025, 3, 1, 12, 0, 0)
INJECTION = "x; DROP TABLE t; --"

# source column -> (MySQL type, the target column name s3rs documents for it)
COLUMNS: dict[str, tuple[str, str]] = {
    "id": ("BIGINT NOT NULL", "id"),
    "up dated": ("DATETIME(6) NOT NULL", "up_dated"),
    'na"me': ("VARCHAR(40)", "na_me"),
    "na'me": ("VARCHAR(40)", "na_me_2"),
    "we;ird": ("INT", "we_ird"),
    "back`tick": ("VARCHAR(40)", "back_tick"),
    "select": ("INT", "col_select"),
    "order": ("INT", "col_order"),
    "group": ("VARCHAR(10)", "col_group"),
    "190_time": ("TIME", "col_190_time"),
    INJECTION: ("VARCHAR(60)", "x__drop_table_t____"),
    "prix été €": ("DECIMAL(10,2)", "prix_été__"),
    "É" * 64: ("VARCHAR(10)", "é" * 63),  # 128 bytes: cut to 126 (Redshift: 127 at most)
}
LONG = "É" * 64
POSTGRES_LONG = "é" * 31  # PostgreSQL keeps 63 bytes: s3rs cuts the name itself
# Values that break naive quoting, CSV, COPY text format or string building.
NASTY_TEXT = [
    "'; DROP TABLE t; --",
    'he said "hi"',
    "back\\slash \\N",
    "tab\tand\nnewline\r",
    "ünï 列 🦆",
    "",
    None,
]

# table name -> a MySQL-side description; all of these must sync.
TABLES = ["ordres été", 'na"me', "we;ird", "back`tick", "select", "190_time"]
TARGET_NAMES = {
    "ordres été": "ordres_été",
    'na"me': "na_me",
    "we;ird": "we_ird",
    "back`tick": "back_tick",
    "select": "col_select",
    "190_time": "col_190_time",
}


def q(name: str) -> str:
    return "`" + name.replace("`", "``") + "`"


def create_hostile_table(db: SourceDb, table: str, rows: int) -> None:
    columns = ", ".join(f"{q(name)} {kind}" for name, (kind, _) in COLUMNS.items())
    db.execute(
        f"CREATE TABLE {q(table)} ({columns}, PRIMARY KEY (id), "
        f"KEY by_cursor ({q('up dated')}, id))"
    )
    upsert_rows(db, table, range(1, rows + 1), BASE)


def upsert_rows(db: SourceDb, table: str, ids: range | list[int], when: datetime) -> None:
    names = list(COLUMNS)
    placeholders = ", ".join(["%s"] * len(names))
    updates = ", ".join(f"{q(n)} = VALUES({q(n)})" for n in names if n != "id")
    rows = []
    for i in ids:
        text = NASTY_TEXT[i % len(NASTY_TEXT)]
        rows.append(
            (
                i,
                when + timedelta(seconds=i),
                text[:40] if text is not None else None,
                f"it's {i}",
                -i,
                "`" * (i % 5),
                i * 10,
                i * 100,
                "grp" if i % 2 else None,
                f"{i % 839}:00:0{i % 10}",
                text,
                Decimal(i) / 4,
                "é" * (i % 10),
            )
        )
    db.executemany(
        f"INSERT INTO {q(table)} ({', '.join(q(n) for n in names)}) VALUES ({placeholders}) "
        f"ON DUPLICATE KEY UPDATE {updates}",
        rows,
    )


def source_rows(db: SourceDb, table: str) -> list[tuple[Any, ...]]:
    names = ", ".join(q(n) for n in COLUMNS)
    return [tuple(row) for row in db.execute(f"SELECT {names} FROM {q(table)} ORDER BY id")]


def target_rows(config: Config, stack: Stack, table: str) -> tuple[list[str], list[tuple]]:
    """(column names, rows ordered by id) of a target table, read with the warehouse's driver."""
    target = config.connections.targets["wh"]
    sql = f'SELECT * FROM "{target.schema_}"."{table}" ORDER BY "id"'
    connection = connect_target(config, stack)
    try:
        if target.type == "duckdb":
            relation = connection.sql(sql)
            return list(relation.columns), [tuple(r) for r in relation.fetchall()]
        cursor = connection.execute(sql)
        names = [column.name for column in cursor.description]
        return names, [tuple(r.values()) for r in cursor.fetchall()]
    finally:
        connection.close()


def comparable(value: Any) -> Any:
    """A source or target value in one shape: TIME as its text, timedeltas too."""
    if isinstance(value, timedelta):
        seconds = int(value.total_seconds())
        return f"{seconds // 3600:02d}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"
    if isinstance(value, Decimal):
        return value.quantize(Decimal("0.01"))
    if isinstance(value, datetime):
        return value.replace(tzinfo=None)
    return value


def assert_equal(config: Config, stack: Stack, db: SourceDb, table: str) -> None:
    names, rows = target_rows(config, stack, TARGET_NAMES[table])
    expected_names = [target for _, target in COLUMNS.values()]
    if config.connections.targets["wh"].type == "postgres":
        expected_names[list(COLUMNS).index(LONG)] = POSTGRES_LONG
    assert names == expected_names, "documented sanitised names, in source order"
    source = [tuple(comparable(v) for v in row) for row in source_rows(db, table)]
    target = [tuple(comparable(v) for v in row) for row in rows]
    assert target == source, f"{table!r}: target rows differ from the source"


def hostile_config(
    make_config: MakeConfig, source_db: SourceDb, target: str, *, local: bool
) -> tuple[Config, Path]:
    table_options = {
        "cdc_strategy": "hybrid",
        "cdc_timestamp_column": "up dated",
        "cdc_id_column": "id",
        "start_date": "2020-01-01",
    }
    config = make_config(
        {f"{source_db.name}.{name}": dict(table_options) for name in TABLES},
        target=target,
        local_storage=local,
    )
    path = config.source_file
    assert path is not None
    return config, path


def canaries(db: SourceDb) -> None:
    """A table named `t` in the source: every injection in this file targets it."""
    db.execute("CREATE TABLE t (id INT PRIMARY KEY)")
    db.execute("INSERT INTO t VALUES (1), (2)")


@pytest.mark.parametrize(
    ("target", "local"),
    [("duckdb", True), ("postgres", False)],
    ids=["duckdb+file", "postgres+s3"],
)
def test_hostile_table_and_column_names_sync_end_to_end(
    source_db: SourceDb, make_config: MakeConfig, stack: Stack, target: str, local: bool
) -> None:
    """quoted/backticked/';'/unicode/reserved table and column names, `s3rs sync` -> rows equal
    the source's, documented sanitised names, canaries intact.

    Six tables (`ordres été`, `na"me`, `we;ird`, `` back`tick ``, `select`, `190_time`), each
    with such columns (a cursor named `up dated`, `x; DROP TABLE t; --`, a 64-character
    name), synced twice (inserts, then updates); a table `t` in the source and in the target
    schema must survive."""
    canaries(source_db)
    for table in TABLES:
        create_hostile_table(source_db, table, 12)
    config, path = hostile_config(make_config, source_db, target, local=local)
    try:
        if target == "postgres":
            with connect_target(config, stack) as connection:
                schema = config.connections.targets["wh"].schema_
                connection.execute(f'CREATE SCHEMA "{schema}"')
                connection.execute(f'CREATE TABLE "{schema}"."t" (id int)')
        first = invoke("--config", str(path), "sync", "-p", "p")
        assert first.exit_code == 0, first.output
        assert f"{len(TABLES)} table(s): {len(TABLES)} succeeded" in first.output
        for table in TABLES:
            assert_equal(config, stack, source_db, table)
        # Updates and new rows, then an incremental sync: merged by key, nothing doubled.
        for table in TABLES:
            upsert_rows(source_db, table, [3, 5, 13, 14], BASE + timedelta(days=1))
        second = invoke("--config", str(path), "sync", "-p", "p")
        assert second.exit_code == 0, second.output
        for table in TABLES:
            assert_equal(config, stack, source_db, table)
            # -t accepts the bare hostile name
            got = invoke("--config", str(path), "watermark", "get", "-p", "p", "-t", table)
            assert got.exit_code == 0, got.output
        assert source_db.execute("SELECT id FROM t ORDER BY id") == [(1,), (2,)]
        if target == "postgres":
            with connect_target(config, stack) as connection:
                schema = config.connections.targets["wh"].schema_
                found = connection.execute(
                    "SELECT count(*) AS n FROM information_schema.tables "
                    "WHERE table_schema = %s AND table_name = 't'",
                    (schema,),
                ).fetchone()
                assert found["n"] == 1, "the target's canary table survived"
    finally:
        drop_schema(config, stack)


def test_two_tables_whose_names_sanitise_alike_are_refused(
    source_db: SourceDb, make_config: MakeConfig, stack: Stack
) -> None:
    """tables `na"me` and `na'me` in one pipeline (same target name) -> refused, naming both.

    Both sanitise to `na_me`: loading both would merge two tables into one. The message names
    both tables and `target_name` as the fix; nothing is written; the fix then works."""
    for table in ('na"me', "na'me"):
        create_hostile_table(source_db, table, 3)
    config = make_config(
        {f"{source_db.name}.{name}": {"cdc_strategy": "full_sync"} for name in ('na"me', "na'me")},
        local_storage=True,
    )
    path = config.source_file
    assert path is not None
    result = invoke("--config", str(path), "sync", "-p", "p")
    assert result.exit_code == 2, result.output
    assert 'na"me' in result.output and "na'me" in result.output, result.output
    assert "na_me" in result.output and "target_name" in result.output, result.output
    storage = open_storage(config.storage)
    assert list(storage.list()) == [], "nothing was written"
    # The fix the message names works.
    document = yaml.safe_load(path.read_text())
    tables = document["pipelines"]["p"]["tables"]
    tables[f"{source_db.name}.na'me"]["target_name"] = "na_me_single"
    path.write_text(yaml.safe_dump(document, sort_keys=False))
    fixed = invoke("--config", str(path), "sync", "-p", "p")
    assert fixed.exit_code == 0, fixed.output


@pytest.mark.parametrize(
    "table",
    ["a/b", "dot/../dot", "back\\slash", "new\nline"],
    ids=["slash", "dotdot", "backslash", "newline"],
)
def test_table_names_that_cannot_be_storage_keys_are_refused(
    stack: Stack, tmp_path: Path, table: str
) -> None:
    """a table name with '/', '..', a backslash or a newline -> config refused, naming the table.

    Exit 2, naming the table and why: its files could not get a storage prefix of their own
    (`a/b`'s folder would sit inside table `a`'s, where `s3clean` would delete it)."""
    document = {
        "connections": {
            "sources": {"src": {"host": "h", "database": "d", "username": "u"}},
            "targets": {"wh": {"type": "duckdb", "path": "wh.duckdb"}},
        },
        "storage": {"url": str(tmp_path / "lake")},
        "pipelines": {
            "p": {
                "source": "src",
                "target": "wh",
                "tables": {f"db.{table}": {"cdc_strategy": "full_sync"}},
            }
        },
    }
    path = tmp_path / f"{uuid.uuid4().hex}.yaml"
    path.write_text(yaml.safe_dump(document))
    result = invoke("--config", str(path), "config", "validate")
    assert result.exit_code == 2, result.output
    assert str(path) in result.output
    assert "pipelines.p.tables" in result.output
    assert repr(f"db.{table}")[1:-1] in result.output or f"db.{table}" in result.output
    assert "storage key" in result.output, result.output
