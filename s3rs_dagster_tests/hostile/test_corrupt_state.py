"""A corrupted or hand-edited watermark document in storage: every command and core function
that reads it refuses, naming the document and the fix (`s3rs watermark reset`, or `watermark
set`), and none of them resets, repairs or overwrites it: its bytes are the same after the
refused runs. `watermark reset` is the way out, and the table then syncs again."""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest

from s3rs_dagster.adapters.storage import open_storage
from s3rs_dagster.config import Config
from s3rs_dagster.core import naming
from s3rs_dagster.core.counts import count_table
from s3rs_dagster.core.extract import extract_table
from s3rs_dagster.core.load import load_table
from s3rs_dagster.core.state import StateError
from s3rs_dagster.core.watermark_admin import read_watermark
from s3rs_dagster_tests.core.conftest import MakeConfig, SourceDb
from s3rs_dagster_tests.hostile.conftest import invoke

pytestmark = [pytest.mark.hostile, pytest.mark.stack]

BASE = datetime(2025, 3, 1, 12, 0, 0)


def _edit(change: Callable[[dict[str, Any]], None]) -> Callable[[bytes], bytes]:
    def apply(good: bytes) -> bytes:
        document = json.loads(good)
        change(document)
        return json.dumps(document, indent=2).encode()

    return apply


def _set(path: str, value: Any) -> Callable[[dict[str, Any]], None]:
    *parents, last = path.split(".")

    def change(document: dict[str, Any]) -> None:
        node = document
        for part in parents:
            node = node[part]
        node[last] = value

    return change


def _drop(path: str) -> Callable[[dict[str, Any]], None]:
    *parents, last = path.split(".")

    def change(document: dict[str, Any]) -> None:
        node = document
        for part in parents:
            node = node[part]
        del node[last]

    return change


# name -> (how to break a good document, words the refusal must contain)
CORRUPTIONS: dict[str, tuple[Callable[[bytes], bytes], str]] = {
    "truncated": (lambda good: good[: len(good) // 2], "not valid JSON"),
    "empty file": (lambda good: b"", "is empty"),
    "whitespace only": (lambda good: b" \n\t\n", "is empty"),
    "not UTF-8": (lambda good: b"\xff\xfe" + good[2:], "not valid JSON"),
    "null": (lambda good: b"null", "not a JSON object"),
    "a list": (lambda good: b"[]", "not a JSON object"),
    'last_id "abc"': (_edit(_set("mysql_state.last_id", "abc")), "mysql_state.last_id"),
    "total_rows as text": (
        _edit(_set("mysql_state.total_rows", "many")),
        "mysql_state.total_rows",
    ),
    "cursor key not a list": (_edit(_set("mysql_state.cursor.key", 7)), "mysql_state.cursor"),
    "status unknown": (_edit(_set("mysql_state.status", "great")), "mysql_state.status"),
    "mysql_state missing": (_edit(_drop("mysql_state")), "lacks mysql_state"),
    "cursor missing": (_edit(_drop("mysql_state.cursor")), "lacks mysql_state.cursor"),
    "unknown version": (_edit(_set("format", "s3rs-watermark/9")), "s3rs-watermark/9"),
    "timestamp without offset": (
        _edit(_set("mysql_state.last_timestamp", "2025-03-01T12:00:00")),
        "mysql_state.last_timestamp",
    ),
    "cutoff not a date": (_edit(_set("load_cutoff", "yesterday")), "load_cutoff"),
    "another table's": (_edit(_set("table", "db.other")), "belongs to p/db.other"),
}


@pytest.fixture
def synced(source_db: SourceDb, make_config: MakeConfig) -> tuple[Config, str, str]:
    source_db.execute(
        "CREATE TABLE orders (id BIGINT PRIMARY KEY, updated_at DATETIME(6) NOT NULL, "
        "amount DECIMAL(10,2), KEY by_updated (updated_at, id))"
    )
    source_db.executemany(
        "INSERT INTO orders VALUES (%s, %s, %s)",
        [(i, BASE + timedelta(minutes=i), Decimal(i) / 4) for i in range(1, 21)],
    )
    config = make_config(
        {"orders": {"cdc_strategy": "hybrid", "start_date": "2020-01-01"}}, local_storage=True
    )
    path = str(config.source_file)
    first = invoke("--config", path, "sync", "-p", "p", "-t", "orders")
    assert first.exit_code == 0, first.output
    return config, path, f"{source_db.name}.orders"


@pytest.mark.slow
def test_corrupt_watermark_is_refused_by_every_reader_and_never_overwritten(
    synced: tuple[Config, str, str], source_db: SourceDb
) -> None:
    """broken watermark JSON (cut, empty, wrong types/fields/version) -> every reader refuses.

    Each of 16 corruptions (truncated, empty, non-UTF-8, `"last_id": "abc"`, wrong types,
    missing fields, unknown version, naive timestamps...) is refused naming the document and
    the fix, and the document's bytes are unchanged afterwards.

    Readers: `sync`, `sync --redshift-only`, `watermark get`, `watermark set`,
    `watermark-count validate-counts`, `s3clean list`, `status`, and the core's
    extract_table, load_table, read_watermark and count_table."""
    config, path, table = synced
    storage = open_storage(config.storage)
    key = naming.watermark_key("p", table)
    uri = storage.uri(key)
    good = storage.get_bytes(key)[0]
    table_args = ("-p", "p", "-t", "orders")
    commands = [
        ("sync", *table_args),
        ("sync", *table_args, "--redshift-only"),
        ("watermark", "get", *table_args, "--show-files"),
        ("watermark", "set", *table_args, "--timestamp", "2025-03-01"),
        ("watermark-count", "validate-counts", *table_args),
        ("s3clean", "list", "-t", "orders"),
        ("status",),
    ]
    source_db.execute("INSERT INTO orders VALUES (21, %s, 1)", (BASE + timedelta(days=1),))
    for name, (corrupt, words) in CORRUPTIONS.items():
        broken = corrupt(good)
        storage.put_bytes(key, broken)
        for command in commands:
            result = invoke("--config", path, *command)
            shown = f"[{name}] s3rs {' '.join(command)}:\n{result.output}"
            assert result.exit_code in (1, 2), shown
            assert uri in result.output, shown
            assert words in result.output, shown
            assert "s3rs watermark reset" in result.output, shown
            assert storage.get_bytes(key)[0] == broken, f"{shown}\nchanged the document"
        extracted = extract_table(config, "p", table)
        assert not extracted.ok and uri in (extracted.error or ""), (name, extracted.error)
        loaded = load_table(config, "p", table)
        assert not loaded.ok and uri in (loaded.error or ""), (name, loaded.error)
        for reader in (read_watermark, count_table):
            with pytest.raises(StateError, match="s3rs watermark reset") as raised:
                reader(config, "p", table)
            assert uri in str(raised.value), name
        assert storage.get_bytes(key)[0] == broken, f"[{name}] the core changed the document"


def test_reset_replaces_a_broken_watermark_and_the_table_syncs_again(
    synced: tuple[Config, str, str], source_db: SourceDb
) -> None:
    """a truncated watermark, then `watermark reset` (the fix named) -> replaced, syncs again.

    The next sync brings the target back to the source's rows, none twice."""
    config, path, table = synced
    storage = open_storage(config.storage)
    key = naming.watermark_key("p", table)
    storage.put_bytes(key, storage.get_bytes(key)[0][:40])
    source_db.execute(
        "UPDATE orders SET amount = 99, updated_at = %s WHERE id = 3", (BASE + timedelta(days=2),)
    )
    declined = invoke(
        "--config", path, "watermark", "reset", "-p", "p", "-t", "orders", input="n\n"
    )
    assert declined.exit_code == 1 and "unreadable watermark" in declined.output, declined.output
    reset = invoke("--config", path, "watermark", "reset", "-p", "p", "-t", "orders", "--yes")
    assert reset.exit_code == 0, reset.output
    json.loads(storage.get_bytes(key)[0])  # a whole document again
    synced_again = invoke("--config", path, "sync", "-p", "p", "-t", "orders")
    assert synced_again.exit_code == 0, synced_again.output
    import duckdb

    target = config.connections.targets["wh"]
    with duckdb.connect(str(target.path)) as connection:
        rows = connection.sql(
            f'SELECT id, amount FROM "{target.schema_}"."orders" ORDER BY id'
        ).fetchall()
    expected = source_db.execute("SELECT id, amount FROM orders ORDER BY id")
    assert rows == [tuple(row) for row in expected]
