"""The initial snapshot (hybrid tables read once in primary-key order), on the real stack:
nothing lost, nothing loaded twice, files in their windows, resumable at every checkpoint."""

from __future__ import annotations

import io
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from datetime import datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from s3rs_dagster.adapters.storage import S3Storage, StorageError, open_storage
from s3rs_dagster.adapters.tunnel import TUNNELS
from s3rs_dagster.config import Config
from s3rs_dagster.core import extract as extract_module
from s3rs_dagster.core import naming
from s3rs_dagster.core.extract import extract_table
from s3rs_dagster.core.load import load_table
from s3rs_dagster.core.state import WatermarkStore
from s3rs_dagster_tests.conftest import Stack
from s3rs_dagster_tests.core.conftest import (
    MakeConfig,
    SourceDb,
    committed_files,
    read_committed,
    watermark_document,
)
from s3rs_dagster_tests.core.test_load import redshift_state_total, target_rows

ORDERS_DDL = """
CREATE TABLE orders (
  id BIGINT PRIMARY KEY,
  updated_at DATETIME(6) NULL,
  amount DECIMAL(12,2),
  note VARCHAR(40) NULL,
  KEY by_updated (updated_at, id)
)
"""
HYBRID = {"cdc_strategy": "hybrid", "start_date": "2020-01-01"}
BASE_TIME = datetime(2025, 3, 1, 12, 0, 0)
SMALL_CHECKPOINTS = {"snapshot_checkpoint_rows": 50}


def seed(db: SourceDb, count: int = 300) -> None:
    """Ties (three ids per timestamp) over five days; every tenth id stamped days earlier
    than its neighbours (cursor order is not key order); five rows with a NULL cursor."""
    rows = []
    for i in range(1, count + 1):
        stamp = BASE_TIME + timedelta(hours=i // 3)
        if i % 10 == 0:
            stamp = BASE_TIME - timedelta(days=3, seconds=-i)
        rows.append((i, stamp, Decimal(i) / 4, f"note {i}" if i % 4 else None))
    rows += [(count + i, None, Decimal(i), "no cursor") for i in range(1, 6)]
    db.executemany("INSERT INTO orders (id, updated_at, amount, note) VALUES (%s,%s,%s,%s)", rows)


def source_versions(db: SourceDb) -> Counter:
    return Counter(db.execute("SELECT id, updated_at FROM orders"))


def versions(table: pa.Table) -> Counter:
    return Counter(
        zip(table.column("id").to_pylist(), table.column("updated_at").to_pylist(), strict=True)
    )


def source_rows(db: SourceDb) -> list[tuple[Any, ...]]:
    return db.execute("SELECT id, updated_at, amount, note FROM orders ORDER BY id")


def assert_target_equals_source(config: Config, stack: Stack, db: SourceDb) -> None:
    actual = target_rows(config, stack)
    assert len({row["id"] for row in actual}) == len(actual), "no duplicate primary keys"
    assert [(r["id"], r["updated_at"], r["amount"], r["note"]) for r in actual] == source_rows(db)


def snapshot_state(config: Config, table: str) -> dict[str, Any]:
    document = watermark_document(open_storage(config.storage), "p", table)
    assert document is not None
    return document["mysql_state"]


def test_snapshot_then_incremental_sync_equals_the_source(
    source_db: SourceDb, make_config: MakeConfig, stack: Stack
) -> None:
    source_db.execute(ORDERS_DDL)
    seed(source_db)
    config = make_config({"orders": HYBRID}, processing=SMALL_CHECKPOINTS)
    table = f"{source_db.name}.orders"
    storage = open_storage(config.storage)
    replaced: list[tuple[int, datetime]] = []
    checkpoints: list[int] = []

    def change_the_source(progress: Any) -> None:
        """After the first checkpoint: update a row it took and one it has not reached, stamp
        a row exactly at the snapshot's bound, insert rows after the bound and a NULL one."""
        checkpoints.append(progress.rows)
        if len(checkpoints) != 1:
            return
        watermark, _ = WatermarkStore(storage, "p", table, "wh").load()
        snapshot = watermark.mysql_state.initial_snapshot
        assert snapshot is not None and snapshot.in_progress and snapshot.last_key == "50"
        replaced.extend(source_db.execute("SELECT id, updated_at FROM orders WHERE id IN (5, 8)"))
        now = "UTC_TIMESTAMP(6)"
        source_db.execute(f"UPDATE orders SET updated_at = {now}, note = 'moved' WHERE id = 5")
        source_db.execute(f"UPDATE orders SET updated_at = {now}, note = 'ahead' WHERE id = 250")
        source_db.execute("UPDATE orders SET updated_at = %s WHERE id = 8", [snapshot.bound])
        source_db.execute(
            "INSERT INTO orders VALUES (1000, UTC_TIMESTAMP(6), 1.5, 'new'), "
            "(2000, NULL, 2.5, 'new, no cursor'), (3000, %s, 3.5, 'at the bound')",
            [snapshot.bound],
        )

    first = extract_table(config, "p", "orders", progress=change_the_source)
    assert first.status == "success", first.error
    assert len(checkpoints) >= 6, "300 rows in checkpoints of 50"
    state = snapshot_state(config, table)
    snapshot = state["initial_snapshot"]
    assert snapshot["finished_at"] is not None and snapshot["rows"] == 300 - 1
    assert state["cursor"]["timestamp"] < snapshot["bound"], "the cursor stands below the bound"
    for entry in committed_files(storage, "p", table):
        partition = entry["key"].split("/")[2]
        assert partition == f"dt={entry['partition']}"
        if entry["partition"] != "none":
            low, high = entry["cursor_min"]["timestamp"], entry["cursor_max"]["timestamp"]
            assert low[:10] == high[:10] == entry["partition"], "each file in its window"

    second = extract_table(config, "p", "orders")
    assert second.status == "success", second.error
    assert second.rows == 5, "ids 5, 8, 250, 1000, 3000 (the NULL row 2000 came in the first)"
    expected = source_versions(source_db) + Counter(replaced)
    assert versions(read_committed(config, table)) == expected, "every version exactly once"
    assert snapshot_state(config, table)["total_rows"] == sum(expected.values())

    loaded = load_table(config, "p", "orders")
    assert loaded.ok, loaded.error
    assert_target_equals_source(config, stack, source_db)
    assert redshift_state_total(config, table) == len(source_rows(source_db))


def test_failure_between_checkpoints_then_rerun_loses_nothing_and_loads_nothing_twice(
    source_db: SourceDb, make_config: MakeConfig, stack: Stack, monkeypatch: pytest.MonkeyPatch
) -> None:
    source_db.execute(ORDERS_DDL)
    seed(source_db)
    config = make_config({"orders": HYBRID}, processing=SMALL_CHECKPOINTS)
    table = f"{source_db.name}.orders"
    uploads = 0
    real_put = S3Storage.put_file

    def fail_in_the_third_checkpoint(self: S3Storage, path: Path, key: str) -> Any:
        nonlocal uploads
        uploads += 1
        if uploads == 12:
            raise StorageError("injected: the store went away")
        return real_put(self, path, key)

    monkeypatch.setattr(S3Storage, "put_file", fail_in_the_third_checkpoint)
    failed = extract_table(config, "p", "orders")
    monkeypatch.undo()
    assert failed.status == "failed" and "injected" in (failed.error or "")
    state = snapshot_state(config, table)
    assert state["initial_snapshot"]["finished_at"] is None
    committed_key = int(state["initial_snapshot"]["last_key"])
    assert 0 < committed_key < 300, "some checkpoints committed, not all"
    assert state["total_rows"] == state["initial_snapshot"]["rows"]

    early = load_table(config, "p", "orders")
    assert early.ok and early.rows == state["total_rows"], early.error

    rerun = extract_table(config, "p", "orders")
    assert rerun.status == "success", rerun.error
    assert versions(read_committed(config, table)) == source_versions(source_db)
    assert snapshot_state(config, table)["total_rows"] == len(source_rows(source_db))

    rest = load_table(config, "p", "orders")
    assert rest.ok, rest.error
    assert rest.files == rerun.files, "only the rerun's files: nothing is loaded twice"
    assert_target_equals_source(config, stack, source_db)


def test_kill_9_during_a_snapshot_then_rerun_takes_every_row_once(
    source_db: SourceDb, make_config: MakeConfig, tmp_path: Path
) -> None:
    source_db.execute(ORDERS_DDL)
    seed(source_db, 600)
    config = make_config({"orders": HYBRID}, processing={"snapshot_checkpoint_rows": 40})
    table = f"{source_db.name}.orders"
    storage = open_storage(config.storage)
    command = [
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
        "--backup-only",
    ]
    kills = 0
    for kill_after_files in (3, 20, 45, 80):
        process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 60
        while process.poll() is None and time.monotonic() < deadline:
            data_files = [i for i in storage.list(f"p/{table}/") if i.key.endswith(".parquet")]
            if len(data_files) >= kill_after_files:
                os.kill(process.pid, signal.SIGKILL)
                kills += 1
                break
            time.sleep(0.005)
        process.wait()
    assert kills >= 2, "the kills landed mid-run"
    final = subprocess.run(command, capture_output=True, text=True, timeout=120, check=False)
    assert final.returncode == 0, final.stdout + final.stderr
    assert versions(read_committed(config, table)) == source_versions(source_db)
    state = snapshot_state(config, table)
    assert state["total_rows"] == 605, "counts are absolute, not re-added"
    assert state["initial_snapshot"]["finished_at"] is not None


def test_limit_and_max_chunks_bound_a_snapshot_run_which_resumes(
    source_db: SourceDb, make_config: MakeConfig
) -> None:
    source_db.execute(ORDERS_DDL)
    seed(source_db)
    config = make_config({"orders": HYBRID})
    table = f"{source_db.name}.orders"
    first = extract_table(config, "p", "orders", limit=40, max_chunks=2)
    assert (first.status, first.rows, first.chunk_limit_reached) == ("success", 80, True)
    assert snapshot_state(config, table)["initial_snapshot"]["last_key"] == "80"
    plan = extract_table(config, "p", "orders", dry_run=True).dry_run
    assert plan is not None and plan.initial_snapshot is not None
    assert (plan.rows_pending, plan.initial_snapshot["after_key"]) == (300 - 80, "80")
    second = extract_table(config, "p", "orders", limit=1000, max_chunks=1)
    assert (second.status, second.rows) == ("success", 300 - 80), second.error
    assert snapshot_state(config, table)["initial_snapshot"]["finished_at"] is not None
    third = extract_table(config, "p", "orders")
    assert (third.status, third.rows) == ("success", 5), "the NULL-cursor rows, by key"
    assert versions(read_committed(config, table)) == source_versions(source_db)


def test_initial_snapshot_off_reads_in_cursor_order_as_before(
    source_db: SourceDb, make_config: MakeConfig
) -> None:
    source_db.execute(ORDERS_DDL)
    seed(source_db)
    config = make_config({"orders": HYBRID}, processing={"initial_snapshot": "off"})
    table = f"{source_db.name}.orders"
    report = extract_table(config, "p", "orders", limit=100)
    assert report.status == "success", report.error
    state = snapshot_state(config, table)
    assert state["initial_snapshot"] is None
    entries = committed_files(open_storage(config.storage), "p", table)
    cursors = [(e["cursor_min"]["timestamp"], int(e["cursor_min"]["key"][0])) for e in entries]
    timestamped = [c for e, c in zip(entries, cursors, strict=True) if e["partition"] != "none"]
    assert timestamped == sorted(timestamped), "files follow cursor order, chunk by chunk"
    assert versions(read_committed(config, table)) == source_versions(source_db)


def test_tables_without_a_one_column_integer_key_are_read_in_cursor_order(
    source_db: SourceDb, make_config: MakeConfig
) -> None:
    source_db.execute(
        "CREATE TABLE orders (code VARCHAR(10) PRIMARY KEY, updated_at DATETIME(6) NOT NULL)"
    )
    source_db.executemany(
        "INSERT INTO orders VALUES (%s, %s)",
        [(f"c{i:03d}", BASE_TIME + timedelta(minutes=i)) for i in range(20)],
    )
    config = make_config({"orders": {**HYBRID, "cdc_id_column": "code"}})
    report = extract_table(config, "p", "orders")
    assert report.status == "success", report.error
    assert snapshot_state(config, f"{source_db.name}.orders")["initial_snapshot"] is None


def test_checkpoints_are_sized_by_memory_and_each_file_holds_one_window_in_key_order(
    source_db: SourceDb, make_config: MakeConfig, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Checkpoints hold about CHECKPOINT_BYTES of rows, however many rows the setting allows;
    each file is one window's rows in key order, with that window's exact cursor extremes."""
    source_db.execute(ORDERS_DDL)
    seed(source_db)
    monkeypatch.setattr(extract_module, "FIRST_QUERY_ROWS", 20)
    monkeypatch.setattr(extract_module, "CHECKPOINT_BYTES", 4_000)
    config = make_config({"orders": {**HYBRID, "partitioning": "hourly"}})
    table = f"{source_db.name}.orders"
    committed: list[int] = []
    report = extract_table(
        config, "p", "orders", progress=lambda progress: committed.append(progress.rows)
    )
    assert report.status == "success", report.error
    sizes = [later - earlier for earlier, later in zip([0, *committed], committed, strict=False)]
    assert len(sizes) >= 4, f"300 rows in checkpoints of ~4 KB, not one of 1,000,000: {sizes}"
    assert all(20 < size <= 80 for size in sizes[:-1]), f"~4 KB of rows each: {sizes}"
    storage = open_storage(config.storage)
    entries = committed_files(storage, "p", table)
    by_id: dict[int, datetime | None] = {}
    for entry in entries:
        rows = pq.read_table(io.BytesIO(storage.get_bytes(entry["key"])[0])).to_pylist()
        ids = [row["id"] for row in rows]
        assert ids == sorted(ids), "a window's rows in key order"
        by_id.update({row["id"]: row["updated_at"] for row in rows})
        if entry["partition"] == "none":
            assert {row["updated_at"] for row in rows} == {None}, "the NULL-cursor lane's file"
            continue
        stamps = {row["updated_at"].strftime("%Y-%m-%d-%H:00") for row in rows}
        assert stamps == {entry["partition"]}, "one window per file"
        low = min((row["updated_at"], row["id"]) for row in rows)
        high = max((row["updated_at"], row["id"]) for row in rows)
        assert entry["cursor_min"] == {
            "timestamp": f"{low[0]:%Y-%m-%d %H:%M:%S.%f}",
            "key": [str(low[1])],
        }
        assert entry["cursor_max"] == {
            "timestamp": f"{high[0]:%Y-%m-%d %H:%M:%S.%f}",
            "key": [str(high[1])],
        }
    assert len(by_id) == 305 and sum(entry["rows"] for entry in entries) == 305


@pytest.mark.parametrize(
    ("column_type", "value", "table_extra"),
    [
        ("TIMESTAMP(6) NULL", lambda i: BASE_TIME + timedelta(hours=7 * i), {}),
        ("DATE NULL", lambda i: (BASE_TIME + timedelta(days=i // 4)).date(), {}),
        ("BIGINT NULL", lambda i: int(BASE_TIME.timestamp()) + 3_600 * 7 * i, {}),
        (
            "BIGINT NULL",
            lambda i: int(BASE_TIME.timestamp() * 1000) + 3_600_000 * 7 * i,
            {"cdc_timestamp_unit": "milliseconds"},
        ),
    ],
    ids=["timestamp", "date", "epoch-seconds", "epoch-milliseconds"],
)
def test_every_cursor_kind_snapshots_then_continues_incrementally(
    source_db: SourceDb,
    make_config: MakeConfig,
    column_type: str,
    value: Any,
    table_extra: dict[str, Any],
) -> None:
    source_db.execute(
        f"CREATE TABLE orders (id BIGINT PRIMARY KEY, updated_at {column_type}, note TEXT, "
        "KEY by_updated (updated_at, id))"
    )
    order = [i for i in range(1, 61) if i % 5] + [i for i in range(1, 61) if not i % 5]
    source_db.executemany(
        "INSERT INTO orders VALUES (%s, %s, %s)",
        [(i, value(position), f"row {i}") for position, i in enumerate(order)],
    )
    config = make_config(
        {"orders": {**HYBRID, **table_extra}}, processing={"snapshot_checkpoint_rows": 7}
    )
    table = f"{source_db.name}.orders"
    first = extract_table(config, "p", "orders")
    assert first.status == "success", first.error
    state = snapshot_state(config, table)
    assert state["initial_snapshot"]["finished_at"] is not None and first.rows == 60
    assert state["cursor"] is not None and state["last_timestamp"] is not None
    entries = committed_files(open_storage(config.storage), "p", table)
    assert len({e["partition"] for e in entries}) > 1, "rows spread over several windows"
    assert all(e["cursor_min"] and e["cursor_max"] for e in entries)
    source_db.execute(
        "UPDATE orders SET note = 'changed', updated_at = %s WHERE id = 3", [value(500)]
    )
    second = extract_table(config, "p", "orders")
    assert (second.status, second.rows) == ("success", 1), second.error
    committed = read_committed(config, table)
    assert sorted(committed.column("id").to_pylist()) == sorted([*range(1, 61), 3])


def test_bastion_link_dropped_during_a_snapshot_is_reopened_and_the_checkpoint_read_again(
    source_db: SourceDb, make_config: MakeConfig
) -> None:
    source_db.execute(ORDERS_DDL)
    seed(source_db, 120)
    config = make_config(
        {"orders": HYBRID}, via_ssh=True, processing={"snapshot_checkpoint_rows": 30}
    )
    drops = []

    def drop_the_bastion_link(progress: Any) -> None:
        if len(drops) < 2:
            for shared in TUNNELS._tunnels.values():
                shared.forwarder._transport.close()
            drops.append(progress.rows)

    report = extract_table(config, "p", "orders", progress=drop_the_bastion_link)
    assert report.status == "success", report.error
    assert len(drops) == 2
    table = f"{source_db.name}.orders"
    assert versions(read_committed(config, table)) == source_versions(source_db)
    assert snapshot_state(config, table)["total_rows"] == 125


@pytest.mark.parametrize(
    ("key_type", "stamp_type"),
    [
        ("BIGINT", "DATETIME(6)"),
        ("BIGINT", "DATETIME"),
        ("INT(6) UNSIGNED ZEROFILL", "DATETIME(3)"),
        ("INT", "DATE"),
    ],
    ids=["derived-from-the-row", "datetime-without-fraction", "zerofill-key-selected", "date"],
)
def test_file_cursors_are_the_texts_mysql_prints(
    source_db: SourceDb, make_config: MakeConfig, key_type: str, stamp_type: str
) -> None:
    """Whether the reader takes the cursor's texts from the row or selects them (ZEROFILL
    pads the key's text), each file's lowest and highest cursor are MySQL's own texts."""
    source_db.execute(
        f"CREATE TABLE orders (id {key_type} PRIMARY KEY, updated_at {stamp_type} NULL, "
        "KEY by_updated (updated_at, id))"
    )
    source_db.executemany(
        "INSERT INTO orders VALUES (%s, %s)",
        [(i, BASE_TIME + timedelta(hours=5 * i, microseconds=1234 * i)) for i in range(1, 41)],
    )
    config = make_config({"orders": HYBRID}, processing={"snapshot_checkpoint_rows": 15})
    report = extract_table(config, "p", "orders")
    assert report.status == "success", report.error
    texts = dict(source_db.execute("SELECT CAST(id AS CHAR), CAST(updated_at AS CHAR) FROM orders"))
    entries = committed_files(open_storage(config.storage), "p", f"{source_db.name}.orders")
    assert len(entries) > 3
    for entry in entries:
        for cursor in (entry["cursor_min"], entry["cursor_max"]):
            assert cursor["timestamp"] == texts[cursor["key"][0]], cursor


def test_a_zero_date_mid_snapshot_reads_the_checkpoint_again_as_text_and_leaves_no_file(
    source_db: SourceDb, make_config: MakeConfig
) -> None:
    """The snapshot reads DATETIME columns as timestamps (the server sends them packed) until
    connectorx refuses a zero date, in the fourth checkpoint here: that checkpoint is read
    again with the columns as text, and so is the rest. The files equal the PyMySQL reader's,
    the zero date is a counted NULL, and no object is left that no manifest lists."""
    source_db.execute("SET SESSION sql_mode = ''")
    extracted = {}
    for reader in ("auto", "pymysql"):
        name = f"shipments_{reader}"
        source_db.execute(
            f"CREATE TABLE {name} (id BIGINT PRIMARY KEY, updated_at DATETIME(6) NOT NULL, "
            "shipped_at DATETIME NULL, KEY by_updated (updated_at, id))"
        )
        source_db.executemany(
            f"INSERT INTO {name} VALUES (%s, %s, %s)",
            [
                (
                    i,
                    BASE_TIME + timedelta(hours=5 * i, microseconds=i),
                    "0000-00-00 00:00:00" if i == 50 else BASE_TIME + timedelta(days=i),
                )
                for i in range(1, 81)
            ],
        )
        config = make_config(
            {name: HYBRID}, processing={"reader": reader, "snapshot_checkpoint_rows": 15}
        )
        report = extract_table(config, "p", name)
        assert report.status == "success", report.error
        assert report.reader == ("connectorx" if reader == "auto" else "pymysql")
        assert report.zero_dates == {"shipped_at": 1}
        table = f"{source_db.name}.{name}"
        storage = open_storage(config.storage)
        committed = {entry["key"] for entry in committed_files(storage, "p", table)}
        listed = {info.key for info in storage.list(naming.table_prefix("p", table))}
        assert listed == committed, "no file left behind by the refused read"
        extracted[reader] = read_committed(config, table).sort_by("id")
    fast, reference = extracted["auto"], extracted["pymysql"]
    assert fast.schema.equals(reference.schema) and fast.equals(reference)
    assert fast.num_rows == 80 and fast.column("shipped_at")[49].as_py() is None
