"""The load stage on the real stack, for each warehouse: the target equals the source."""

from __future__ import annotations

import logging
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import duckdb
import pytest
from psycopg.rows import dict_row

from s3rs_dagster.adapters.storage import open_storage
from s3rs_dagster.config import Config
from s3rs_dagster.core import naming
from s3rs_dagster.core.extract import extract_table
from s3rs_dagster.core.load import load_table
from s3rs_dagster.core.state import WatermarkStore
from s3rs_dagster.core.sync import sync_pipeline
from s3rs_dagster.core.target import LEDGER_TABLE
from s3rs_dagster_tests.conftest import Stack
from s3rs_dagster_tests.core.conftest import (
    MakeConfig,
    SourceDb,
    committed_files,
    read_committed,
)
from s3rs_dagster_tests.core.test_extract import EVERY_TYPE_ROWS, TYPES_DDL

WAREHOUSES = ["duckdb", "postgres", "redshift"]
BASE_TIME = datetime(2025, 3, 1, 12, 0, 0)
ORDERS_DDL = """
CREATE TABLE orders (
  id BIGINT PRIMARY KEY,
  updated_at DATETIME(6) NOT NULL,
  amount DECIMAL(12,2),
  note VARCHAR(40) NULL,
  KEY by_updated (updated_at, id)
)
"""
HYBRID = {"cdc_strategy": "hybrid", "start_date": "2020-01-01"}


@pytest.fixture(params=WAREHOUSES)
def warehouse(request: pytest.FixtureRequest, stack: Stack) -> Iterator[str]:
    """Each test runs once per warehouse; PostgreSQL schemas it made are dropped after."""
    if request.param == "redshift" and "REDSHIFT_PORT" not in stack.env:
        pytest.fail("the Redshift stand-in is not in stack.env; restart the stack")
    yield request.param


def connect_target(config: Config, stack: Stack) -> Any:
    target = config.connections.targets["wh"]
    if target.type == "duckdb":
        return duckdb.connect(str(target.path))
    database = (
        stack["POSTGRES_DATABASE"] if target.type == "postgres" else stack.env["REDSHIFT_DATABASE"]
    )
    return stack.postgres(database, row_factory=dict_row)


def target_rows(config: Config, stack: Stack, table: str = "orders") -> list[dict[str, Any]]:
    """The target table's rows, read with the warehouse's own driver (not our code)."""
    target = config.connections.targets["wh"]
    sql = f'SELECT * FROM "{target.schema_}"."{table}" ORDER BY 1'
    connection = connect_target(config, stack)
    try:
        if target.type == "duckdb":
            return connection.sql(sql).to_arrow_table().to_pylist()
        return list(connection.execute(sql).fetchall())
    finally:
        connection.close()


def drop_schema(config: Config, stack: Stack) -> None:
    target = config.connections.targets["wh"]
    if target.type == "duckdb":
        return
    with connect_target(config, stack) as connection:
        connection.execute(f'DROP SCHEMA IF EXISTS "{target.schema_}" CASCADE')


@pytest.fixture
def orders_config(
    source_db: SourceDb, make_config: MakeConfig, warehouse: str, stack: Stack
) -> Iterator[Config]:
    source_db.execute(ORDERS_DDL)
    # Cursor-order chunks, whose file counts these tests rely on (the initial snapshot's
    # loads are tested in test_initial_snapshot.py).
    config = make_config(
        {"orders": HYBRID}, target=warehouse, processing={"initial_snapshot": "off"}
    )
    yield config
    drop_schema(config, stack)


def source_rows(db: SourceDb) -> list[dict[str, Any]]:
    with db.connection.cursor(__import__("pymysql").cursors.DictCursor) as cursor:
        cursor.execute("SELECT * FROM orders ORDER BY id")
        return list(cursor.fetchall())


def upsert(db: SourceDb, ids: range | list[int], when: datetime, note: str) -> None:
    db.executemany(
        "INSERT INTO orders (id, updated_at, amount, note) VALUES (%s, %s, %s, %s) "
        "ON DUPLICATE KEY UPDATE updated_at = VALUES(updated_at), amount = VALUES(amount), "
        "note = VALUES(note)",
        [(i, when + timedelta(microseconds=i), Decimal(i) / 7, f"{note} {i}") for i in ids],
    )


def assert_target_equals_source(config: Config, stack: Stack, db: SourceDb) -> None:
    expected = source_rows(db)
    actual = target_rows(config, stack)
    assert len({row["id"] for row in actual}) == len(actual), "no duplicate primary keys"
    assert [(row["id"], row["updated_at"], row["amount"], row["note"]) for row in actual] == [
        (row["id"], row["updated_at"], row["amount"].quantize(Decimal("0.01")), row["note"])
        for row in expected
    ]


def redshift_state_total(config: Config, table: str) -> int:
    storage = open_storage(config.storage)
    watermark, _ = WatermarkStore(storage, "p", table, "wh").load()
    return watermark.redshift_state.total_rows


def test_rounds_of_inserts_and_updates_keep_target_equal_to_source(
    orders_config: Config, source_db: SourceDb, stack: Stack
) -> None:
    table = f"{source_db.name}.orders"
    upsert(source_db, range(1, 31), BASE_TIME, "first")
    for round_number, (ids, note) in enumerate(
        [(range(1, 31), None), ([3, 7, 11, 12, 29], "updated"), ([*range(25, 45), 1], "again")]
    ):
        if note is not None:
            upsert(source_db, ids, BASE_TIME + timedelta(hours=round_number), note)
        runs = sync_pipeline(orders_config, "p", limit=7)
        assert runs[0].ok, (runs[0].extract, runs[0].load)
        assert_target_equals_source(orders_config, stack, source_db)
        assert redshift_state_total(orders_config, table) == len(source_rows(source_db))
    assert runs[0].load.write_mode == "merge"


def test_one_load_of_many_files_repeating_keys_keeps_the_newest_exact_values(
    orders_config: Config, source_db: SourceDb, stack: Stack
) -> None:
    """Three extractions, one load: the staged batch repeats keys across files (ranked, newest
    wins); a later batch repeats none (merged as staged). Exact decimals, microseconds, NULLs
    and 4-byte UTF-8 throughout."""
    table = f"{source_db.name}.orders"
    upsert(source_db, range(1, 61), BASE_TIME, "first")
    source_db.execute("UPDATE orders SET note = NULL WHERE id % 5 = 0")
    source_db.execute("UPDATE orders SET note = '😀 é\t\"q\",' WHERE id % 7 = 0")
    assert extract_table(orders_config, "p", table, limit=7).ok
    upsert(source_db, [*range(10, 30), *range(61, 71)], BASE_TIME + timedelta(days=1), "second")
    assert extract_table(orders_config, "p", table, limit=7).ok
    upsert(source_db, range(20, 26), BASE_TIME + timedelta(days=2), "third")
    assert extract_table(orders_config, "p", table, limit=7).ok
    files = len(committed_files(open_storage(orders_config.storage), "p", table))
    assert files > 12

    report = load_table(orders_config, "p", table)
    assert report.status == "success", report.error
    assert (report.files, report.rows) == (files, 60 + 30 + 6)
    assert_target_equals_source(orders_config, stack, source_db)

    upsert(source_db, range(65, 80), BASE_TIME + timedelta(days=3), "fourth")
    assert extract_table(orders_config, "p", table, limit=7).ok
    assert load_table(orders_config, "p", table).status == "success"
    assert_target_equals_source(orders_config, stack, source_db)
    assert redshift_state_total(orders_config, table) == 79


def test_every_type_loads_exactly_as_extracted(
    source_db: SourceDb, make_config: MakeConfig, warehouse: str, stack: Stack
) -> None:
    """The warehouse holds each value the Parquet holds: DECIMAL(38,10) and DECIMAL(20,0),
    microseconds, aware instants, NULL vs '', 4-byte UTF-8 and NUL, binary, BIT, YEAR."""
    rows = EVERY_TYPE_ROWS
    if warehouse != "duckdb":  # PostgreSQL (and Redshift) text cannot hold NUL characters
        rows = [
            tuple(v.replace("\x00", "") if isinstance(v, str) else v for v in row) for row in rows
        ]
    source_db.execute(TYPES_DDL)
    source_db.execute("SET SESSION sql_mode = ''")
    source_db.executemany(f"INSERT INTO every_type VALUES ({', '.join(['%s'] * 32)})", rows)
    config = make_config({"every_type": HYBRID}, target=warehouse)
    try:
        run = sync_pipeline(config, "p")[0]
        assert run.ok, (run.extract, run.load)
        expected = read_committed(config, f"{source_db.name}.every_type").sort_by("id")
        actual = target_rows(config, stack, "every_type")
        assert len(actual) == expected.num_rows == len(EVERY_TYPE_ROWS)
        for name in expected.column_names:
            got = [
                bytes(row[name]) if isinstance(row[name], memoryview) else row[name]
                for row in actual
            ]
            want = expected.column(name).to_pylist()
            if name == "f":  # REAL: the driver's text round trip of a float32
                want = [None if value is None else pytest.approx(value, rel=1e-6) for value in want]
            assert got == want, name
    finally:
        drop_schema(config, stack)


def reload_into_a_non_empty_target(config: Config, stack: Stack, table: str, keep: int) -> None:
    """Forget every loaded file (the ledger) and every target row but the one with id `keep`,
    then load again: the target is not empty, so the files go through the staging table."""
    schema = config.connections.targets["wh"].schema_
    with connect_target(config, stack) as connection:
        connection.execute(f'DELETE FROM "{schema}"."{LEDGER_TABLE}"')
        connection.execute(f'DELETE FROM "{schema}"."{table}" WHERE id <> {int(keep)}')
    report = load_table(config, "p", table)
    assert report.status == "success", report.error


def load_statements(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.getMessage().startswith("warehouse SQL")]


@pytest.mark.parametrize("warehouse", ["postgres", "redshift", "duckdb"], indirect=True)
def test_a_first_load_copied_straight_into_the_target_equals_a_staged_merge(
    source_db: SourceDb,
    make_config: MakeConfig,
    warehouse: str,
    stack: Stack,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Into an empty target the files are copied straight in (no staging, no merge SQL); into a
    non-empty one they are staged and merged. Every type of the type matrix comes out the same
    both ways."""
    source_db.execute(TYPES_DDL)
    source_db.execute("SET SESSION sql_mode = ''")
    rows = [
        tuple(v.replace("\x00", "") if isinstance(v, str) else v for v in row)
        for row in EVERY_TYPE_ROWS
    ]
    source_db.executemany(f"INSERT INTO every_type VALUES ({', '.join(['%s'] * 32)})", rows)
    config = make_config({"every_type": HYBRID}, target=warehouse)
    try:
        with caplog.at_level(logging.DEBUG, logger="s3rs_dagster.core.load"):
            run = sync_pipeline(config, "p")[0]
            assert run.ok, (run.extract, run.load)
            assert load_statements(caplog) == []
            copied = target_rows(config, stack, "every_type")
            reload_into_a_non_empty_target(config, stack, "every_type", keep=1)
            assert any("INSERT INTO" in statement for statement in load_statements(caplog))
        assert target_rows(config, stack, "every_type") == copied
    finally:
        drop_schema(config, stack)


@pytest.mark.parametrize("warehouse", ["postgres", "redshift", "duckdb"], indirect=True)
def test_repeating_keys_copied_into_an_empty_target_keep_the_newest_as_a_staged_merge_does(
    orders_config: Config, source_db: SourceDb, stack: Stack
) -> None:
    """One load of three extractions (keys repeat across files): copied straight into the empty
    target then deduplicated in place, it leaves what the staged merge leaves."""
    table = f"{source_db.name}.orders"
    upsert(source_db, range(1, 41), BASE_TIME, "first")
    source_db.execute("UPDATE orders SET note = NULL WHERE id % 4 = 0")
    assert extract_table(orders_config, "p", table, limit=7).ok
    upsert(source_db, range(10, 30), BASE_TIME + timedelta(days=1), "second")
    assert extract_table(orders_config, "p", table, limit=7).ok
    upsert(source_db, range(20, 26), BASE_TIME + timedelta(days=2), "third")
    assert extract_table(orders_config, "p", table, limit=7).ok
    report = load_table(orders_config, "p", table)
    assert report.status == "success", report.error
    assert report.rows == 40 + 20 + 6 and report.target_rows == 40
    assert_target_equals_source(orders_config, stack, source_db)
    copied = target_rows(orders_config, stack)
    reload_into_a_non_empty_target(orders_config, stack, "orders", keep=40)
    assert target_rows(orders_config, stack) == copied


def test_backup_only_then_redshift_only_in_another_process(
    orders_config: Config, source_db: SourceDb, stack: Stack, tmp_path: Path
) -> None:
    upsert(source_db, range(1, 21), BASE_TIME, "row")
    base = [
        sys.executable,
        "-m",
        "s3rs_dagster",
        "--config",
        str(tmp_path / "pipelines.yaml"),
        "sync",
        "-p",
        "p",
        "-t",
        "orders",
    ]
    backup = subprocess.run(
        [*base, "--backup-only", "--limit", "6", "--max-chunks", "100"],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert backup.returncode == 0, backup.stdout + backup.stderr
    storage = open_storage(orders_config.storage)
    files = {entry["key"] for entry in committed_files(storage, "p", f"{source_db.name}.orders")}
    assert len(files) == 4
    load = subprocess.run(
        [*base, "--redshift-only", "--verbose"],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert load.returncode == 0, load.stdout + load.stderr
    assert "loaded 4 file(s), 20 rows" in load.stdout
    for key in files:
        assert f"load {key}" in load.stdout
    assert_target_equals_source(orders_config, stack, source_db)
    again = subprocess.run(
        [*base, "--redshift-only"], capture_output=True, text=True, timeout=120, check=False
    )
    assert again.returncode == 0, again.stdout + again.stderr
    assert "nothing to load" in again.stdout and "no new files" in again.stdout
    assert len(target_rows(orders_config, stack)) == 20


KILL_POINTS = {
    "before the COPY": "s3rs_dagster.core.load:_Load._evolve",
    "between COPY and commit": "s3rs_dagster.core.load:_Load._insert_ledger",
    "between commit and the watermark write": "s3rs_dagster.core.load:_Load._record_success",
}


@pytest.mark.parametrize("point", list(KILL_POINTS))
def test_kill_9_during_the_load_then_rerun_loads_each_file_once(
    orders_config: Config, source_db: SourceDb, stack: Stack, tmp_path: Path, point: str
) -> None:
    upsert(source_db, range(1, 26), BASE_TIME, "row")
    config_path = str(tmp_path / "pipelines.yaml")
    backup = sync_pipeline(orders_config, "p", load=False, limit=8)
    assert backup[0].ok
    module, attribute = KILL_POINTS[point].split(":")
    owner, method = attribute.split(".")
    script = textwrap.dedent(f"""
        import os, signal, sys, runpy
        import {module} as target
        def die(*args, **kwargs):
            os.kill(os.getpid(), signal.SIGKILL)
        setattr(getattr(target, {owner!r}), {method!r}, die)
        sys.argv = ["s3rs", "--config", {config_path!r}, "sync", "-p", "p", "--redshift-only"]
        runpy.run_module("s3rs_dagster", run_name="__main__")
    """)
    killed = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=120, check=False
    )
    assert killed.returncode == -9, killed.stdout + killed.stderr
    lease = naming.load_lock_key("p", f"{source_db.name}.orders")
    assert open_storage(orders_config.storage).head(lease) is not None, "the dead run held it"
    rerun = load_table(orders_config, "p", "orders")
    assert rerun.ok, rerun.error
    assert_target_equals_source(orders_config, stack, source_db)
    assert redshift_state_total(orders_config, f"{source_db.name}.orders") == 25
    if point == "between commit and the watermark write":
        assert rerun.status == "nothing_to_do", "the ledger, not a guess, says it committed"
    else:
        assert (rerun.status, rerun.files) == ("success", 4)


def test_new_column_and_wider_types_reach_the_target(
    orders_config: Config, source_db: SourceDb, stack: Stack, warehouse: str
) -> None:
    upsert(source_db, range(1, 6), BASE_TIME, "row")
    assert sync_pipeline(orders_config, "p")[0].ok
    source_db.execute(
        "ALTER TABLE orders ADD COLUMN region VARCHAR(8) NULL, "
        "MODIFY note VARCHAR(300) NULL, MODIFY amount DECIMAL(18,4)"
    )
    source_db.executemany(
        "INSERT INTO orders VALUES (%s, %s, %s, %s, %s)",
        [(6, BASE_TIME + timedelta(days=1), Decimal("12345678901234.5678"), "n" * 300, "eu")],
    )
    run = sync_pipeline(orders_config, "p")[0]
    assert run.ok, (run.extract.error, run.load.error)
    rows = {row["id"]: row for row in target_rows(orders_config, stack)}
    assert rows[6]["region"] == "eu" and rows[6]["note"] == "n" * 300
    assert rows[6]["amount"] == Decimal("12345678901234.5678")
    assert rows[1]["region"] is None, "older rows get NULL in the new column"
    assert any("added column region" in note for note in run.load.warnings)
    assert any("widened column amount" in note for note in run.load.warnings)
    if warehouse != "duckdb":  # DuckDB's VARCHAR has no length to widen
        assert any("widened column note" in note for note in run.load.warnings)


def test_full_sync_replaces_the_target_and_carries_deletes(
    source_db: SourceDb, make_config: MakeConfig, warehouse: str, stack: Stack
) -> None:
    source_db.execute("CREATE TABLE codes (code CHAR(3) PRIMARY KEY, label VARCHAR(20))")
    source_db.executemany(
        "INSERT INTO codes VALUES (%s, %s)", [(f"c{i:02d}", f"l{i}") for i in range(10)]
    )
    config = make_config({"codes": {"cdc_strategy": "full_sync"}}, target=warehouse)
    try:
        assert sync_pipeline(config, "p", limit=4)[0].ok
        source_db.execute("DELETE FROM codes WHERE code IN ('c01', 'c02')")
        source_db.execute("UPDATE codes SET label = 'changed' WHERE code = 'c05'")
        run = sync_pipeline(config, "p", limit=4)[0]
        assert run.ok and run.load.write_mode == "replace"
        rows = target_rows(config, stack, "codes")
        assert [row["code"] for row in rows] == [f"c{i:02d}" for i in range(10) if i not in (1, 2)]
        assert {row["code"]: row["label"] for row in rows}["c05"] == "changed"
    finally:
        drop_schema(config, stack)


def test_strays_are_reported_not_loaded_and_missing_files_fail_loudly(
    orders_config: Config, source_db: SourceDb, stack: Stack
) -> None:
    table = f"{source_db.name}.orders"
    upsert(source_db, range(1, 11), BASE_TIME, "row")
    assert sync_pipeline(orders_config, "p", load=False, limit=5)[0].ok
    storage = open_storage(orders_config.storage)
    entries = committed_files(storage, "p", table)
    stray = f"p/{table}/dt=2025-03-01/someone_elses_export.parquet"
    storage.put_bytes(stray, storage.get_bytes(entries[0]["key"])[0])
    report = load_table(orders_config, "p", "orders")
    assert report.ok and report.strays == [stray]
    assert len(target_rows(orders_config, stack)) == 10, "the stray's rows were not loaded"
    upsert(source_db, [11], BASE_TIME + timedelta(days=1), "new")
    assert sync_pipeline(orders_config, "p", load=False)[0].ok
    newest = committed_files(storage, "p", table)[-1]["key"]
    storage.delete([newest])
    failed = load_table(orders_config, "p", "orders")
    assert failed.status == "failed"
    assert "missing from storage" in failed.error and newest in failed.error


def test_extracted_rows_with_no_file_to_load_is_a_failure_not_success(
    orders_config: Config, source_db: SourceDb
) -> None:
    table = f"{source_db.name}.orders"
    upsert(source_db, range(1, 6), BASE_TIME, "row")
    assert sync_pipeline(orders_config, "p", load=False)[0].ok
    storage = open_storage(orders_config.storage)
    store = WatermarkStore(storage, "p", table, "wh")
    watermark, etag = store.load()
    watermark.pending_files = []
    store.save(watermark, etag)
    storage.delete(i.key for i in storage.list(naming.manifests_prefix("p", table)))
    report = load_table(orders_config, "p", "orders")
    assert report.status == "failed"
    assert "records 5 extracted rows, the ledger holds 0 loaded" in report.error


def test_cutoff_skips_older_files_with_the_reason(
    orders_config: Config, source_db: SourceDb, stack: Stack
) -> None:
    table = f"{source_db.name}.orders"
    upsert(source_db, range(1, 6), BASE_TIME, "row")
    assert sync_pipeline(orders_config, "p", load=False)[0].ok
    storage = open_storage(orders_config.storage)
    store = WatermarkStore(storage, "p", table, "wh")
    watermark, etag = store.load()
    watermark.load_cutoff = datetime.now(UTC) + timedelta(minutes=1)
    store.save(watermark, etag)
    report = load_table(orders_config, "p", "orders")
    assert report.status == "nothing_to_do"
    assert [decision.include for decision in report.decisions] == [False]
    assert "before the cutoff" in report.decisions[0].reason


@pytest.mark.parametrize("warehouse", ["redshift"], indirect=True)
def test_rejected_value_is_diagnosed_with_file_column_value_and_reason(
    source_db: SourceDb, make_config: MakeConfig, warehouse: str, stack: Stack
) -> None:
    source_db.execute(
        "CREATE TABLE docs (id INT PRIMARY KEY, updated_at DATETIME NOT NULL, body LONGTEXT)"
    )
    source_db.executemany(
        "INSERT INTO docs VALUES (%s, %s, %s)",
        [(1, BASE_TIME, "fine"), (2, BASE_TIME, "é" * 40_000)],  # 80,000 bytes > VARCHAR(65535)
    )
    config = make_config({"docs": HYBRID}, target=warehouse)
    try:
        run = sync_pipeline(config, "p")[0]
        assert run.extract.ok and not run.load.ok
        message = run.load.error
        file_uri = committed_files(open_storage(config.storage), "p", f"{source_db.name}.docs")[0][
            "uri"
        ]
        assert f"Redshift rejected {file_uri} at row 2, column body" in message
        assert "String length exceeds DDL length" in message
        assert "value 'éééé" in message
        assert redshift_state_total(config, f"{source_db.name}.docs") == 0
        watermark, _ = WatermarkStore(
            open_storage(config.storage), "p", f"{source_db.name}.docs", "wh"
        ).load()
        assert watermark.redshift_state.status == "failed"
        assert "Redshift rejected" in watermark.redshift_state.last_error
    finally:
        drop_schema(config, stack)


@pytest.mark.parametrize("warehouse", ["postgres"], indirect=True)
@pytest.mark.parametrize("form", ["binary", "csv"])
def test_postgres_names_the_file_row_and_column_of_a_refused_value(
    source_db: SourceDb, make_config: MakeConfig, warehouse: str, stack: Stack, form: str
) -> None:
    """Binary COPY (PostgreSQL text refuses a NUL character) and CSV COPY, used when a target
    column has a type the binary encoder does not know (here a domain that refuses 'bad'),
    both locate the refused value in its file."""
    source_db.execute(
        "CREATE TABLE docs (id INT PRIMARY KEY, updated_at DATETIME NOT NULL, body VARCHAR(20))"
    )
    bad = "a\x00b" if form == "binary" else "bad"
    source_db.executemany(
        "INSERT INTO docs VALUES (%s, %s, %s)", [(1, BASE_TIME, "fine"), (2, BASE_TIME, bad)]
    )
    config = make_config({"docs": HYBRID}, target=warehouse)
    schema = config.connections.targets["wh"].schema_
    try:
        if form == "csv":
            with connect_target(config, stack) as connection:
                connection.execute(f'CREATE SCHEMA "{schema}"')
                connection.execute(
                    f"CREATE DOMAIN \"{schema}\".note AS VARCHAR(80) CHECK (VALUE <> 'bad')"
                )
                connection.execute(
                    f'CREATE TABLE "{schema}".docs (id INTEGER, updated_at TIMESTAMP, '
                    f'body "{schema}".note)'
                )
        run = sync_pipeline(config, "p")[0]
        assert run.extract.ok and not run.load.ok
        uri = committed_files(open_storage(config.storage), "p", f"{source_db.name}.docs")[0]["uri"]
        assert f"PostgreSQL refused {uri} at row 2, column body: " in run.load.error
        reason = "invalid byte sequence" if form == "binary" else "violates check constraint"
        assert reason in run.load.error
    finally:
        drop_schema(config, stack)


@pytest.mark.parametrize("warehouse", ["duckdb"], indirect=True)
def test_strays_load_only_when_adopted_and_only_if_s3rs_wrote_them(
    orders_config: Config, source_db: SourceDb, stack: Stack
) -> None:
    import io

    import pyarrow as pa
    import pyarrow.parquet as pq

    table = f"{source_db.name}.orders"
    upsert(source_db, range(1, 11), BASE_TIME, "row")
    assert sync_pipeline(orders_config, "p", load=False, limit=5)[0].ok
    storage = open_storage(orders_config.storage)
    restored = f"p/{table}/dt=2025-03-01/restored_by_hand.parquet"
    storage.put_bytes(
        restored, storage.get_bytes(committed_files(storage, "p", table)[0]["key"])[0]
    )
    adopted = load_table(orders_config, "p", "orders", adopt_strays=True)
    assert adopted.ok and adopted.files == 3 and adopted.strays == []
    assert "adopted 1 stray file(s) into a manifest" in adopted.warnings
    assert_target_equals_source(orders_config, stack, source_db)
    foreign = f"p/{table}/dt=2025-03-01/other_tool.parquet"
    buffer = io.BytesIO()
    pq.write_table(pa.table({"id": [99]}), buffer)
    storage.put_bytes(foreign, buffer.getvalue())
    refused = load_table(orders_config, "p", "orders", adopt_strays=True)
    assert refused.status == "failed" and "was not written by s3rs" in refused.error
    assert_target_equals_source(orders_config, stack, source_db)


def test_partition_windows_extract_incrementally_and_a_refresh_carries_deletes(
    orders_config: Config, source_db: SourceDb, stack: Stack
) -> None:
    table = f"{source_db.name}.orders"
    day = datetime(2025, 3, 1)
    for offset in range(3):
        upsert(
            source_db,
            range(offset * 10 + 1, offset * 10 + 5),
            day + timedelta(days=offset, hours=1),
            "row",
        )
    first = extract_table(orders_config, "p", "orders", partition="2025-03-02", limit=3)
    assert first.ok and first.rows == 4, first.error
    storage = open_storage(orders_config.storage)
    assert {entry["partition"] for entry in committed_files(storage, "p", table)} == {"2025-03-02"}
    upsert(source_db, [15], day + timedelta(days=1, hours=5), "late")
    again = extract_table(orders_config, "p", "orders", partition="2025-03-02")
    assert again.rows == 1, "only what is new in the window since its last commit"
    for key in ("2025-03-01", "2025-03-03"):
        assert extract_table(orders_config, "p", "orders", partition=key).rows == 4
    assert load_table(orders_config, "p", "orders").ok
    assert_target_equals_source(orders_config, stack, source_db)
    source_db.execute("DELETE FROM orders WHERE id = 12")
    source_db.execute("UPDATE orders SET note = 'fixed in place' WHERE id = 13")
    refresh = extract_table(orders_config, "p", "orders", partition="2025-03-02", refresh=True)
    assert refresh.ok and refresh.rows == 4
    loaded = load_table(orders_config, "p", "orders", refresh_run=refresh.run_id)
    assert loaded.ok, loaded.error
    assert loaded.write_mode == "replace_window" and loaded.rows == 4
    assert_target_equals_source(orders_config, stack, source_db)
    assert load_table(orders_config, "p", "orders").status == "nothing_to_do"
    wrong = extract_table(orders_config, "p", "orders", partition="2025-13-01")
    assert wrong.status == "failed" and "does not match daily partitions" in wrong.error


def test_dry_run_of_a_whole_sync_writes_nothing_anywhere(
    orders_config: Config, source_db: SourceDb, stack: Stack, warehouse: str
) -> None:
    upsert(source_db, range(1, 8), BASE_TIME, "row")
    runs = sync_pipeline(orders_config, "p", limit=3, dry_run=True)
    assert runs[0].ok
    assert runs[0].extract.dry_run.rows_to_extract == 7
    assert runs[0].load.status == "dry_run"
    assert list(open_storage(orders_config.storage).list()) == []
    target = orders_config.connections.targets["wh"]
    if warehouse == "duckdb":
        assert not target.path.exists()
    else:
        with connect_target(orders_config, stack) as connection:
            found = connection.execute(
                "SELECT 1 FROM information_schema.schemata WHERE schema_name = %s",
                (target.schema_,),
            ).fetchall()
        assert found == [], "not even the schema was created"


def test_refresh_of_a_window_emptied_in_the_source_empties_it_in_the_target(
    orders_config: Config, source_db: SourceDb, stack: Stack
) -> None:
    day = datetime(2025, 3, 1)
    upsert(source_db, [1, 2], day + timedelta(hours=3), "kept")
    upsert(source_db, [11, 12, 13], day + timedelta(days=1, hours=3), "doomed")
    assert sync_pipeline(orders_config, "p")[0].ok
    source_db.execute("DELETE FROM orders WHERE id > 10")
    refresh = extract_table(orders_config, "p", "orders", partition="2025-03-02", refresh=True)
    assert refresh.ok and (refresh.rows, refresh.files) == (0, 1), "an empty file marks the window"
    loaded = load_table(orders_config, "p", "orders", refresh_run=refresh.run_id)
    assert loaded.ok, loaded.error
    assert [row["id"] for row in target_rows(orders_config, stack)] == [1, 2]


def test_a_duckdb_load_imports_no_source_or_ssh_library() -> None:
    """A load reads no source and opens no tunnel: sqlalchemy, paramiko, sshtunnel and
    pyarrow.compute (~0.25 s of start-up together) stay unimported until something needs them."""
    heavy = ["sqlalchemy", "paramiko", "sshtunnel", "pyarrow.compute"]
    code = textwrap.dedent(
        f"""
        import sys
        import s3rs_dagster.core.load
        import s3rs_dagster.adapters.warehouse.duckdb_backend
        print([name for name in {heavy!r} if name in sys.modules])
        """
    )
    result = subprocess.run(
        [sys.executable, "-c", code],
        cwd=Path(__file__).resolve().parents[2],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    assert result.stdout.strip() == "[]"
