"""The extract stage on the real stack: every row version in exactly one committed file."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner

from s3rs_dagster.adapters.storage import open_storage
from s3rs_dagster.adapters.tunnel import TUNNELS
from s3rs_dagster.cli import cli
from s3rs_dagster.core import extract as extract_module
from s3rs_dagster.core import naming
from s3rs_dagster.core import sync as sync_module
from s3rs_dagster.core.extract import extract_table
from s3rs_dagster.core.lease import Lease
from s3rs_dagster_tests.core.conftest import (
    MakeConfig,
    SourceDb,
    committed_files,
    read_committed,
    watermark_document,
)

ORDERS_DDL = """
CREATE TABLE orders (
  id BIGINT PRIMARY KEY,
  updated_at DATETIME(6) NOT NULL,
  amount DECIMAL(12,2),
  note VARCHAR(255) NULL,
  KEY by_updated (updated_at, id)
)
"""
HYBRID = {"cdc_strategy": "hybrid", "start_date": "2020-01-01"}
CURSOR_ORDER = {"initial_snapshot": "off"}
"""For tests of chunks in cursor order: a first run would otherwise read by primary key."""
BASE_TIME = datetime(2025, 3, 1, 12, 0, 0)


def versions(table) -> Counter:
    """(id, updated_at) pairs: one per row version."""
    ids = table.column("id").to_pylist()
    stamps = table.column("updated_at").to_pylist()
    return Counter(zip(ids, stamps, strict=True))


def source_versions(db: SourceDb) -> Counter:
    return Counter(db.execute("SELECT id, updated_at FROM orders"))


def insert_orders(db: SourceDb, rows: list[tuple[int, datetime]]) -> None:
    db.executemany(
        "INSERT INTO orders (id, updated_at, amount, note) VALUES (%s, %s, %s, %s)",
        [(i, ts, Decimal(i % 100_000) / 100, f"note {i}") for i, ts in rows],
    )


def test_timestamp_ties_across_chunks_and_sparse_ids(
    source_db: SourceDb, make_config: MakeConfig
) -> None:
    source_db.execute(ORDERS_DDL)
    tie = BASE_TIME
    ids = [
        97,
        3,
        1000000000001,
        55,
        12,
        8,
        400,
        2,
        77,
        61,
        5,
        90000,
        13,
        14,
        15,
        16,
        17,
        18,
        19,
        20,
        21,
        22,
        23,
        24,
        9_223_372_036_854_775_807,
    ]
    insert_orders(source_db, [(i, tie) for i in ids])
    insert_orders(source_db, [(i, tie + timedelta(seconds=i)) for i in (30, 31, 32)])
    config = make_config({"orders": HYBRID}, processing=CURSOR_ORDER)
    report = extract_table(config, "p", "orders", limit=10)
    assert report.status == "success", report.error
    assert report.rows == 28 and report.files == 3
    extracted = read_committed(config, f"{source_db.name}.orders")
    assert versions(extracted) == source_versions(source_db)
    watermark = watermark_document(open_storage(config.storage), "p", f"{source_db.name}.orders")
    assert watermark["mysql_state"]["total_rows"] == 28
    assert watermark["mysql_state"]["last_id"] == 32
    assert watermark["mysql_state"]["last_timestamp"] == "2025-03-01T12:00:32+00:00"


def test_updates_between_runs_and_rows_inserted_during_a_run(
    source_db: SourceDb, make_config: MakeConfig
) -> None:
    source_db.execute(ORDERS_DDL)
    insert_orders(source_db, [(i, BASE_TIME + timedelta(minutes=i)) for i in range(1, 41)])
    config = make_config({"orders": HYBRID})
    table = f"{source_db.name}.orders"
    inserted_during_run = []

    def insert_mid_run(progress) -> None:
        if progress.files == 1:
            now = datetime.now(UTC).replace(tzinfo=None)
            insert_orders(source_db, [(1000, now), (1001, now)])
            inserted_during_run.extend([1000, 1001])

    first = extract_table(config, "p", "orders", limit=15, progress=insert_mid_run)
    assert first.status == "success", first.error
    assert inserted_during_run
    all_versions = Counter(source_versions(source_db))
    source_db.execute(
        "UPDATE orders SET updated_at = %s, note = 'changed' WHERE id IN (5, 17, 33)",
        (datetime.now(UTC).replace(tzinfo=None),),
    )
    all_versions.update(source_versions(source_db))
    time.sleep(0.01)
    second = extract_table(config, "p", "orders", limit=15)
    assert second.status == "success", second.error
    assert first.rows == 40, "rows inserted during a run lie past its upper bound"
    assert second.rows == 5, "the 3 updated rows and the 2 inserted during the first run"
    extracted = versions(read_committed(config, table))
    expected = Counter(set(all_versions))
    assert extracted == expected, "every row version exactly once"


def test_limit_and_max_chunks_bound_the_run(source_db: SourceDb, make_config: MakeConfig) -> None:
    source_db.execute(ORDERS_DDL)
    insert_orders(source_db, [(i, BASE_TIME + timedelta(seconds=i)) for i in range(1, 101)])
    config = make_config({"orders": HYBRID}, processing=CURSOR_ORDER)
    report = extract_table(config, "p", "orders", limit=10, max_chunks=3)
    assert (report.rows, report.files, report.chunk_limit_reached) == (30, 3, True)
    assert versions(read_committed(config, f"{source_db.name}.orders")) == Counter(
        (i, BASE_TIME + timedelta(seconds=i)) for i in range(1, 31)
    )
    rest = extract_table(config, "p", "orders", limit=50)
    assert (rest.rows, rest.chunk_limit_reached) == (70, False)


def test_cli_limit_and_max_chunks_say_so(
    source_db: SourceDb, make_config: MakeConfig, tmp_path: Path
) -> None:
    source_db.execute(ORDERS_DDL)
    insert_orders(source_db, [(i, BASE_TIME + timedelta(seconds=i)) for i in range(1, 101)])
    make_config({"orders": HYBRID}, processing=CURSOR_ORDER)
    args = [
        "--config",
        str(tmp_path / "pipelines.yaml"),
        "sync",
        "-p",
        "p",
        "-t",
        "orders",
        "--backup-only",
        "--limit",
        "10",
        "--max-chunks",
        "3",
    ]
    result = CliRunner().invoke(cli, args, catch_exceptions=False)
    assert result.exit_code == 0, result.output
    assert "extracted 30 rows in 3 file(s)" in result.output
    assert "stopped at --max-chunks" in result.output
    result = CliRunner().invoke(cli, [*args, "--json-output"], catch_exceptions=False)
    report = json.loads(result.output)[0]["extract"]
    assert (report["rows"], report["files"], report["ok"]) == (30, 3, True)
    assert report["watermark_after"]["total_rows"] == 60


def test_dry_run_writes_nothing_and_says_what_it_would_do(
    source_db: SourceDb, make_config: MakeConfig
) -> None:
    source_db.execute(ORDERS_DDL)
    insert_orders(source_db, [(i, BASE_TIME + timedelta(seconds=i)) for i in range(1, 26)])
    config = make_config({"orders": HYBRID})
    report = extract_table(config, "p", "orders", limit=10, max_chunks=2, dry_run=True)
    assert report.status == "dry_run"
    plan = report.dry_run
    assert (plan.rows_pending, plan.rows_to_extract, plan.chunks) == (25, 20, 2)
    assert list(open_storage(config.storage).list()) == []


def test_second_concurrent_run_is_refused_naming_the_holder(
    source_db: SourceDb, make_config: MakeConfig
) -> None:
    source_db.execute(ORDERS_DDL)
    insert_orders(source_db, [(1, BASE_TIME)])
    config = make_config({"orders": HYBRID})
    table = f"{source_db.name}.orders"
    storage = open_storage(config.storage)
    with Lease(storage, naming.lock_key("p", table), run_id="otherrun1234", purpose="extract"):
        report = extract_table(config, "p", "orders")
        assert report.status == "failed"
        assert "another run holds this table: run otherrun1234 (extract)" in report.error
        assert "expires at" in report.error
    assert extract_table(config, "p", "orders").status == "success"


def test_kill_9_at_many_points_loses_nothing_and_duplicates_nothing(
    source_db: SourceDb, make_config: MakeConfig, tmp_path: Path
) -> None:
    source_db.execute(ORDERS_DDL)
    rows = [(i, BASE_TIME + timedelta(seconds=i // 3)) for i in range(1, 401)]
    insert_orders(source_db, rows)
    config = make_config({"orders": HYBRID}, processing=CURSOR_ORDER)
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
        "--limit",
        "7",
        "--max-chunks",
        "1000",
    ]
    kills = 0
    for kill_after_files in (1, 4, 9, 15, 22, 30):
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
    assert kills >= 3, "the kills landed mid-run"
    final = subprocess.run(command, capture_output=True, text=True, timeout=120, check=False)
    assert final.returncode == 0, final.stdout + final.stderr
    extracted = versions(read_committed(config, table))
    assert extracted == Counter(rows), "after kills and a rerun: every row exactly once"
    listed = {entry["key"] for entry in committed_files(storage, "p", table)}
    on_storage = {i.key for i in storage.list(f"p/{table}/")}
    assert listed <= on_storage
    watermark = watermark_document(storage, "p", table)
    assert watermark["mysql_state"]["total_rows"] == 400, "counts are absolute, not re-added"


def test_extraction_through_the_ssh_bastion(source_db: SourceDb, make_config: MakeConfig) -> None:
    source_db.execute(ORDERS_DDL)
    insert_orders(source_db, [(i, BASE_TIME + timedelta(seconds=i)) for i in range(1, 51)])
    config = make_config({"orders": HYBRID}, via_ssh=True)
    report = extract_table(config, "p", "orders", limit=20)
    assert report.status == "success", report.error
    assert report.reader == "connectorx", "the fast reader works through the tunnel too"
    assert versions(read_committed(config, f"{source_db.name}.orders")) == source_versions(
        source_db
    )


def test_local_storage_backend(source_db: SourceDb, make_config: MakeConfig) -> None:
    source_db.execute(ORDERS_DDL)
    insert_orders(source_db, [(i, BASE_TIME + timedelta(days=i)) for i in range(1, 6)])
    config = make_config({"orders": HYBRID}, local_storage=True)
    report = extract_table(config, "p", "orders", limit=100)
    assert report.status == "success", report.error
    assert report.files == 5, "one file per daily partition"
    keys = [
        entry["key"]
        for entry in committed_files(open_storage(config.storage), "p", f"{source_db.name}.orders")
    ]
    assert [key.split("/")[2] for key in keys] == [f"dt=2025-03-0{d}" for d in range(2, 7)]
    assert versions(read_committed(config, f"{source_db.name}.orders")) == source_versions(
        source_db
    )


def test_file_names_schema_and_manifest_entries(
    source_db: SourceDb, make_config: MakeConfig
) -> None:
    source_db.execute(ORDERS_DDL)
    insert_orders(source_db, [(i, BASE_TIME + timedelta(seconds=i)) for i in range(1, 21)])
    config = make_config({"orders": HYBRID}, processing=CURSOR_ORDER)
    table = f"{source_db.name}.orders"
    report = extract_table(config, "p", "orders", limit=8)
    storage = open_storage(config.storage)
    entries = committed_files(storage, "p", table)
    assert [entry["rows"] for entry in entries] == [8, 8, 4]
    schemas = set()
    for entry in entries:
        assert entry["key"].startswith(f"p/{table}/dt=2025-03-01/p_{source_db.name}_orders_")
        assert naming.file_timestamp(entry["key"]) is not None
        assert report.run_id in entry["key"]
        parquet = pq.ParquetFile(
            storage.filesystem()[0].open_input_file(f"{storage.filesystem()[1]}/{entry['key']}")
        )
        assert parquet.metadata.row_group(0).column(0).compression == "SNAPPY"
        schemas.add(parquet.schema_arrow.remove_metadata().to_string())
        assert entry["bytes"] == storage.head(entry["key"]).size
    assert len(schemas) == 1, "every file of the run has the same schema"
    assert entries[0]["cursor_min"] == {"timestamp": "2025-03-01 12:00:01.000000", "key": ["1"]}
    assert entries[-1]["cursor_max"] == {"timestamp": "2025-03-01 12:00:20.000000", "key": ["20"]}


def test_corrupt_watermark_stops_the_run_and_is_left_alone(
    source_db: SourceDb, make_config: MakeConfig
) -> None:
    source_db.execute(ORDERS_DDL)
    insert_orders(source_db, [(1, BASE_TIME)])
    config = make_config({"orders": HYBRID})
    table = f"{source_db.name}.orders"
    storage = open_storage(config.storage)
    key = naming.watermark_key("p", table)
    storage.put_bytes(key, b'{"format": "s3rs-watermark/1", "mysql_state": ')
    report = extract_table(config, "p", "orders")
    assert report.status == "failed"
    assert storage.uri(key) in report.error and "not valid JSON" in report.error
    assert "watermark reset" in report.error
    assert storage.get_bytes(key)[0] == b'{"format": "s3rs-watermark/1", "mysql_state": '
    assert not [i for i in storage.list(f"p/{table}/")], "nothing was extracted"


def test_null_cursor_rows_are_extracted_by_key_and_never_silently_dropped(
    source_db: SourceDb, make_config: MakeConfig
) -> None:
    source_db.execute("CREATE TABLE events (id INT PRIMARY KEY, updated_at DATETIME NULL, v INT)")
    source_db.executemany(
        "INSERT INTO events VALUES (%s, %s, %s)",
        [(i, None if i % 4 == 0 else BASE_TIME + timedelta(hours=i), i) for i in range(1, 21)],
    )
    source_db.execute("CREATE TABLE logs (updated_at DATETIME NULL, v INT)")
    source_db.executemany("INSERT INTO logs VALUES (%s, %s)", [(None, 1), (BASE_TIME, 2)])
    config = make_config(
        {"events": HYBRID, "logs": {"cdc_strategy": "timestamp_only", "start_date": "2020-01-01"}}
    )
    report = extract_table(config, "p", "events", limit=6)
    assert report.status == "success", report.error
    extracted = read_committed(config, f"{source_db.name}.events")
    assert sorted(extracted.column("id").to_pylist()) == list(range(1, 21))
    source_db.execute("INSERT INTO events VALUES (100, NULL, 100)")
    again = extract_table(config, "p", "events", limit=6)
    assert again.rows == 1, "a new NULL-cursor row is picked up by the next run, once"
    logs = extract_table(config, "p", "logs")
    assert logs.status == "success"
    assert logs.rows == 1 and logs.null_cursor_rows == 1
    assert any("1 rows have NULL updated_at" in warning for warning in logs.warnings)


def test_timestamp_only_without_a_key_never_splits_a_tie(
    source_db: SourceDb, make_config: MakeConfig
) -> None:
    source_db.execute("CREATE TABLE ticks (updated_at DATETIME(6) NOT NULL, v INT)")
    stamps = [BASE_TIME + timedelta(seconds=i // 4) for i in range(30)]
    source_db.executemany(
        "INSERT INTO ticks VALUES (%s, %s)", [(ts, i) for i, ts in enumerate(stamps)]
    )
    config = make_config({"ticks": {"cdc_strategy": "timestamp_only", "start_date": "2020-01-01"}})
    report = extract_table(config, "p", "ticks", limit=5)
    assert report.status == "success", report.error
    extracted = read_committed(config, f"{source_db.name}.ticks")
    assert sorted(extracted.column("v").to_pylist()) == list(range(30))


def test_integer_epoch_cursor_is_compared_as_raw_integers(
    source_db: SourceDb, make_config: MakeConfig
) -> None:
    source_db.execute(
        "CREATE TABLE ev (id INT PRIMARY KEY, updated_at BIGINT NOT NULL, KEY (updated_at, id))"
    )
    base = int(datetime(2025, 3, 1, tzinfo=UTC).timestamp() * 1000)
    source_db.executemany(
        "INSERT INTO ev VALUES (%s, %s)", [(i, base + (i // 2) * 1000) for i in range(1, 31)]
    )
    config = make_config(
        {"ev": {**HYBRID, "cdc_timestamp_unit": "milliseconds"}},
        source_extra={"time_zone": "+08:00"},
    )
    report = extract_table(config, "p", "ev", limit=7)
    assert report.status == "success", report.error
    extracted = read_committed(config, f"{source_db.name}.ev")
    assert sorted(extracted.column("id").to_pylist()) == list(range(1, 31))
    watermark = watermark_document(open_storage(config.storage), "p", f"{source_db.name}.ev")
    assert watermark["mysql_state"]["cursor"]["timestamp"] == str(base + 15 * 1000)
    assert watermark["mysql_state"]["last_timestamp"] == "2025-03-01T00:00:15+00:00"


def test_id_only_and_full_sync(source_db: SourceDb, make_config: MakeConfig) -> None:
    source_db.execute("CREATE TABLE ledger (id BIGINT UNSIGNED PRIMARY KEY, v INT)")
    source_db.executemany("INSERT INTO ledger VALUES (%s, %s)", [(i, i) for i in range(1, 24)])
    source_db.execute("CREATE TABLE small (code CHAR(3), name VARCHAR(20))")
    source_db.executemany(
        "INSERT INTO small VALUES (%s, %s)", [(f"c{i:02d}", f"n{i}") for i in range(12)]
    )
    config = make_config(
        {"ledger": {"cdc_strategy": "id_only"}, "small": {"cdc_strategy": "full_sync"}}
    )
    assert extract_table(config, "p", "ledger", limit=10).rows == 23
    source_db.execute("INSERT INTO ledger VALUES (18446744073709551615, 99)")
    assert extract_table(config, "p", "ledger", limit=10).rows == 1
    ids = read_committed(config, f"{source_db.name}.ledger").column("id").to_pylist()
    assert sorted(int(i) for i in ids) == [*range(1, 24), 18446744073709551615]
    first = extract_table(config, "p", "small", limit=5)
    second = extract_table(config, "p", "small", limit=5)
    assert (first.rows, second.rows) == (12, 12), "each full_sync run is a whole snapshot"
    storage = open_storage(config.storage)
    watermark = watermark_document(storage, "p", f"{source_db.name}.small")
    assert watermark["mysql_state"]["last_complete_snapshot"] == second.run_id
    snapshot_files = [
        e
        for e in committed_files(storage, "p", f"{source_db.name}.small")
        if e["snapshot_id"] == second.run_id
    ]
    assert sum(entry["rows"] for entry in snapshot_files) == 12


TYPES_DDL = """
CREATE TABLE every_type (
  id BIGINT UNSIGNED PRIMARY KEY,
  updated_at DATETIME(6) NOT NULL,
  ti TINYINT, tu TINYINT UNSIGNED, si SMALLINT, mi MEDIUMINT, i INT, iu INT UNSIGNED, bi BIGINT,
  bu BIGINT UNSIGNED, flag TINYINT(1), d38 DECIMAL(38,10), d65 DECIMAL(65,30), f FLOAT, db DOUBLE,
  dt DATE, dtm DATETIME(6), ts TIMESTAMP(6) NULL, tm TIME(6), yr YEAR, ch CHAR(4), vc VARCHAR(20),
  tx TEXT, js JSON, en ENUM('small','large'), st SET('a','b','c'), bn BINARY(4), vb VARBINARY(8),
  bl BLOB, b1 BIT(1), b10 BIT(10), b64 BIT(64)
)
"""


EVERY_TYPE_ROWS = [
    (
        1,
        "2025-03-01 00:00:00",
        -128,
        255,
        -32768,
        -8388608,
        -2147483648,
        4294967295,
        -9223372036854775808,
        18446744073709551615,
        1,
        Decimal("9999999999999999999999999999.9999999999"),
        Decimal("-12345678901234567890123456789012345.123456789012345678901234567890"),
        3.4028234663852886e38,
        1.7976931348623157e308,
        "2025-02-28",
        "2025-03-01 23:59:59.999999",
        "2025-03-30 02:30:00.123456",
        "-838:59:59.000000",
        2025,
        "ab",
        "😀 a\x00b",
        "",
        '{"k": [1, 2]}',
        "large",
        "a,c",
        b"\x01\x02",
        b"\x00\xff\x00",
        b"\x00" * 3,
        1,
        682,
        18446744073709551615,
    ),
    (
        2,
        "2025-03-01 00:00:01",
        127,
        0,
        32767,
        8388607,
        2147483647,
        0,
        9223372036854775807,
        0,
        0,
        Decimal("-0.0000000001"),
        Decimal("0.000000000000000000000000000001"),
        1.1754943508222875e-38,
        5e-324,
        "0000-00-00",
        "0000-00-00 00:00:00",
        "0000-00-00 00:00:00",
        "12:00:00.5",
        1901,
        None,
        "",
        None,
        None,
        "small",
        "",
        b"",
        b"",
        None,
        0,
        0,
        0,
    ),
]


def test_every_type_round_trips_exactly(source_db: SourceDb, make_config: MakeConfig) -> None:
    source_db.execute(TYPES_DDL)
    source_db.execute("SET SESSION sql_mode = ''")
    source_db.executemany(
        f"INSERT INTO every_type VALUES ({', '.join(['%s'] * 32)})", EVERY_TYPE_ROWS
    )
    config = make_config({"every_type": HYBRID})
    report = extract_table(config, "p", "every_type")
    assert report.status == "success", report.error
    assert report.zero_dates == {"dt": 1, "dtm": 1, "ts": 1}
    extracted = read_committed(config, f"{source_db.name}.every_type").sort_by("id").to_pylist()
    expected_first = {
        "id": Decimal(1),
        "updated_at": datetime(2025, 3, 1),
        "ti": -128,
        "tu": 255,
        "si": -32768,
        "mi": -8388608,
        "i": -2147483648,
        "iu": 4294967295,
        "bi": -9223372036854775808,
        "bu": Decimal(18446744073709551615),
        "flag": 1,
        "d38": EVERY_TYPE_ROWS[0][11],
        "d65": str(EVERY_TYPE_ROWS[0][12]),
        "f": pytest.approx(3.4028234663852886e38, rel=0, abs=0),
        "db": 1.7976931348623157e308,
        "dt": datetime(2025, 2, 28).date(),
        "dtm": datetime(2025, 3, 1, 23, 59, 59, 999999),
        "ts": datetime(2025, 3, 30, 2, 30, 0, 123456, tzinfo=UTC),
        "tm": "-838:59:59.000000",
        "yr": 2025,
        "ch": "ab",
        "vc": "😀 a\x00b",
        "tx": "",
        "js": '{"k": [1, 2]}',
        "en": "large",
        "st": "a,c",
        "bn": b"\x01\x02\x00\x00",
        "vb": b"\x00\xff\x00",
        "bl": b"\x00\x00\x00",
        "b1": True,
        "b10": 682,
        "b64": Decimal(18446744073709551615),
    }
    first = extracted[0]
    for column, value in expected_first.items():
        assert first[column] == value, column
    second = extracted[1]
    assert (second["dt"], second["dtm"], second["ts"]) == (None, None, None), "zero dates -> NULL"
    assert second["ch"] is None and second["tx"] is None and second["vc"] == "", "NULL vs ''"
    assert second["f"] == pytest.approx(1.1754943508222875e-38, rel=1e-7)
    assert second["db"] == 5e-324 and second["tm"] == "12:00:00.500000"
    assert second["d38"] == Decimal("-0.0000000001") and second["b1"] is False


def peak_rss_of_sync(config_path: Path, table: str) -> int:
    """Peak RSS (KiB) of a separate process running `s3rs sync --backup-only` on one table."""
    script = (
        "import resource, runpy, sys\n"
        f"sys.argv = ['s3rs', '--config', {str(config_path)!r}, 'sync', '-p', 'p', '-t', {table!r},"
        " '--backup-only', '--limit', '20000']\n"
        "try:\n    runpy.run_module('s3rs_dagster', run_name='__main__')\n"
        "except SystemExit as exit:\n    assert not exit.code, exit.code\n"
        "print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=300, check=False
    )
    assert result.returncode == 0, result.stderr
    return int(result.stdout.strip().splitlines()[-1])


def test_peak_memory_does_not_grow_with_table_size(
    source_db: SourceDb, make_config: MakeConfig, tmp_path: Path
) -> None:
    for name, rows in (("small", 40_000), ("large", 200_000)):
        source_db.execute(ORDERS_DDL.replace("orders", name).replace("by_updated", f"{name}_upd"))
        source_db.execute(
            f"INSERT INTO {name} SELECT seq, '2025-03-01' + INTERVAL seq SECOND, seq / 100,"
            f" REPEAT('x', seq % 200) FROM seq_1_to_{rows}"
        )
    make_config({"small": HYBRID, "large": HYBRID})
    small = peak_rss_of_sync(tmp_path / "pipelines.yaml", "small")
    large = peak_rss_of_sync(tmp_path / "pipelines.yaml", "large")
    print(f"peak RSS: 40k rows {small} KiB, 200k rows {large} KiB")
    assert large - small < 40 * 1024, f"peak RSS grew from {small} KiB to {large} KiB"


def test_tunnel_dropped_between_chunks_is_reopened(
    source_db: SourceDb, make_config: MakeConfig
) -> None:
    source_db.execute(ORDERS_DDL)
    insert_orders(source_db, [(i, BASE_TIME + timedelta(seconds=i)) for i in range(1, 61)])
    config = make_config({"orders": HYBRID}, via_ssh=True, processing=CURSOR_ORDER)
    drops = []

    def drop_the_bastion_link(progress) -> None:
        if progress.files in (1, 3):
            for shared in TUNNELS._tunnels.values():
                shared.forwarder._transport.close()
            drops.append(progress.files)

    report = extract_table(config, "p", "orders", limit=10, progress=drop_the_bastion_link)
    assert report.status == "success", report.error
    assert drops == [1, 3]
    assert versions(read_committed(config, f"{source_db.name}.orders")) == source_versions(
        source_db
    )


@pytest.mark.reliability(
    "three tables through one bastion with processing.strategy: parallel, max_parallel_tables 2",
    "one SSH tunnel is shared by all; at most 2 tables run at once; every table completes",
)
def test_parallel_tables_share_one_tunnel_and_respect_the_limit(
    source_db: SourceDb, make_config: MakeConfig, monkeypatch: pytest.MonkeyPatch
) -> None:
    names = ["t1", "t2", "t3"]
    for name in names:
        source_db.execute(ORDERS_DDL.replace("orders", name).replace("by_updated", f"{name}_u"))
        source_db.executemany(
            f"INSERT INTO {name} (id, updated_at) VALUES (%s, %s)",
            [(i, BASE_TIME + timedelta(seconds=i)) for i in range(1, 31)],
        )
    tunnels_seen = set()
    active = []
    peak = []
    real_extract = extract_module.extract_table

    def observed(*args, **kwargs):
        active.append(1)
        peak.append(len(active))
        try:
            return real_extract(*args, **kwargs)
        finally:
            active.pop()

    def on_progress(_progress) -> None:
        tunnels_seen.add(TUNNELS.open_count())

    config = make_config(
        dict.fromkeys(names, HYBRID),
        via_ssh=True,
        processing={"strategy": "parallel", "max_parallel_tables": 2},
    )
    monkeypatch.setattr(sync_module, "extract_table", observed)  # counts, then runs the real one
    reports = sync_module.extract_pipeline(config, "p", limit=10, progress=on_progress)
    assert [report.status for report in reports] == ["success"] * 3
    assert [report.table for report in reports] == [f"{source_db.name}.{n}" for n in names]
    assert tunnels_seen == {1}, "one tunnel per bastion, shared by the tables"
    assert max(peak) == 2, "at most max_parallel_tables at once"


def test_cli_refuses_conflicting_or_unbuilt_stages(tmp_path: Path) -> None:
    config = str(Path(__file__).resolve().parents[2] / "pipelines.yaml")
    both = CliRunner().invoke(
        cli, ["--config", config, "sync", "-p", "local", "--backup-only", "--redshift-only"]
    )
    assert both.exit_code == 2 and "exclude each other" in both.output
    unknown = CliRunner().invoke(
        cli, ["--config", config, "sync", "-p", "local", "-t", "nope", "--backup-only"]
    )
    assert (
        unknown.exit_code == 2
        and "table 'nope' is not defined in pipeline 'local'" in unknown.output
    )


def test_an_unreachable_source_fails_the_table_with_the_endpoint_and_keeps_state(
    source_db: SourceDb, make_config: MakeConfig
) -> None:
    source_db.execute("CREATE TABLE orders (id INT PRIMARY KEY, updated_at DATETIME(6))")
    config = make_config(
        {"orders": {"cdc_strategy": "id_only"}},
        local_storage=True,
        source_extra={"port": 1, "connect_timeout_seconds": 2},
    )
    report = extract_table(config, "p", "orders")
    assert report.status == "failed"
    assert "127.0.0.1:1" in str(report.error) and "cannot connect" in str(report.error)
    assert read_committed(config, "orders").num_rows == 0
    assert extract_table(config, "p", "orders").error == report.error, "the lease was released"


VALID_DATES = {15: "1000-01-01", 16: "9999-12-31 23:59:59.999999", 17: "1970-01-01 00:00:01"}
"""Row 2's zero dates (dt, dtm, ts) replaced by the extremes of their types."""


@pytest.mark.parametrize("zero_dates", [True, False], ids=["zero-dates", "valid-dates"])
def test_the_arrow_reader_writes_the_same_parquet_as_pymysql(
    source_db: SourceDb, make_config: MakeConfig, zero_dates: bool
) -> None:
    """For the whole type matrix. The initial snapshot reads DATETIME columns as timestamps;
    a zero date makes it read them again as text."""
    source_db.execute("SET SESSION sql_mode = ''")
    rows = EVERY_TYPE_ROWS
    if not zero_dates:
        rows = [rows[0], tuple(VALID_DATES.get(i, v) for i, v in enumerate(rows[1]))]
    extracted = {}
    for reader in ("auto", "pymysql"):
        table = f"every_type_{reader}"
        source_db.execute(TYPES_DDL.replace("every_type", table))
        source_db.executemany(f"INSERT INTO {table} VALUES ({', '.join(['%s'] * 32)})", rows)
        config = make_config({table: HYBRID}, processing={"reader": reader})
        report = extract_table(config, "p", table, limit=1)
        assert report.status == "success", report.error
        assert report.reader == ("connectorx" if reader == "auto" else "pymysql")
        assert report.zero_dates == ({"dt": 1, "dtm": 1, "ts": 1} if zero_dates else {})
        extracted[reader] = read_committed(config, f"{source_db.name}.{table}")
    fast, reference = extracted["auto"], extracted["pymysql"]
    assert fast.schema.equals(reference.schema, check_metadata=True)
    assert fast.num_rows == 2 and fast.equals(reference)
