"""`s3rs watermark get|set|reset` and `s3rs watermark-count` on the real stack."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

from s3rs_dagster.adapters.storage import open_storage
from s3rs_dagster.core.state import WatermarkStore
from s3rs_dagster_tests.commands.conftest import BASE_TIME, Orders, make_orders
from s3rs_dagster_tests.conftest import Stack
from s3rs_dagster_tests.core.conftest import MakeConfig, SourceDb


def stored_watermark(orders: Orders) -> dict:
    storage = open_storage(orders.config.storage)
    watermark, _ = WatermarkStore(storage, "p", orders.table, "wh").load()
    return watermark.model_dump(mode="json")


def test_naive_timestamp_is_read_in_the_source_zone_and_stored_with_its_offset(
    source_db: SourceDb, make_config: MakeConfig, stack: Stack, tmp_path: Path
) -> None:
    orders = make_orders(
        source_db,
        make_config,
        stack,
        tmp_path,
        local_storage=True,
        source_extra={"time_zone": "Europe/Berlin"},
    )
    orders.insert(range(1, 11), BASE_TIME, timedelta(minutes=30))  # 12:00 .. 16:30 wall clock
    result = orders.ok(
        "watermark", "set", "-p", "p", "-t", "orders", "--timestamp", "2025-03-01 14:00"
    )
    assert "load_cutoff:     - -> 2025-03-01T14:00:00+01:00" in result.output
    assert (
        "extraction resumes at the first row with updated_at >= 2025-03-01 14:00" in result.output
    )
    document = stored_watermark(orders)
    assert document["load_cutoff"] == "2025-03-01T14:00:00+01:00"
    assert document["mysql_state"]["last_id"] == 4  # the last row before 14:00 (13:30)
    shown = orders.ok("watermark", "get", "-t", "orders")  # -p is optional: one pipeline
    assert "load cutoff:      2025-03-01T14:00:00+01:00" in shown.output
    assert "last_id:          4" in shown.output
    orders.ok("sync", "-p", "p", "-t", "orders")
    assert orders.target_ids() == list(range(5, 11)), "rows from 14:00 Berlin time on"


def test_garbage_timestamp_is_refused_with_the_accepted_formats(orders: Orders) -> None:
    orders.insert(range(1, 4), BASE_TIME)
    for garbage in ("yesterday", "2025-13-01", "09/09/2025 00:00", "2025-09-09 25:00"):
        result = orders.run("watermark", "set", "-p", "p", "-t", "orders", "--timestamp", garbage)
        assert result.exit_code == 2, result.output
        assert f"--timestamp {garbage!r} is not a timestamp" in result.output
        assert "2025-09-09 00:00:00" in result.output and "2025-09-09T00:00:00Z" in result.output
    assert not (orders.path.parent / "lake" / "_state").exists(), "nothing was written"
    missing = orders.run("watermark", "set", "-p", "p", "-t", "orders")
    assert missing.exit_code == 2 and "give --timestamp" in missing.output


def test_set_with_an_id_resumes_after_the_pair(orders: Orders) -> None:
    orders.insert(range(1, 7), BASE_TIME, timedelta(0))  # six rows sharing one timestamp
    result = orders.ok(
        "watermark", "set", "-p", "p", "-t", "orders",
        "--timestamp", "2025-03-01 12:00:00", "--id", "3",
    )  # fmt: skip
    assert "extraction resumes after (updated_at, id) = (2025-03-01 12:00:00" in result.output
    orders.ok("sync", "-p", "p", "-t", "orders")
    assert orders.target_ids() == [4, 5, 6]
    bad = orders.run(
        "watermark", "set", "-p", "p", "-t", "orders", "--timestamp", "2025-03-01", "--id", "x1"
    )
    assert bad.exit_code == 2 and "--id 'x1' is not a value of id (bigint(20))" in bad.output


def test_reset_says_what_it_forgets_and_asks_first(orders: Orders) -> None:
    orders.insert(range(1, 21), BASE_TIME)
    orders.ok("sync", "-p", "p", "-t", "orders")
    before = stored_watermark(orders)
    declined = orders.run("watermark", "reset", "-p", "p", "-t", "orders", input="n\n")
    assert declined.exit_code == 1
    assert "forgets:" in declined.output
    assert "the extracted-row count (20)" in declined.output
    assert "the target table and its ledger (nothing already loaded is loaded again)" in (
        declined.output
    )
    assert "Nothing was changed." in declined.output
    assert stored_watermark(orders)["mysql_state"] == before["mysql_state"]
    orders.ok("watermark", "reset", "-p", "p", "-t", "orders", input="y\n")
    after = stored_watermark(orders)
    assert after["mysql_state"]["total_rows"] == 0 and after["mysql_state"]["cursor"] is None
    assert after["primary_key"] == ["id"], "the schema facts are kept"
    # The next sync re-extracts everything; the old files are not loaded a second time.
    sync = orders.ok("sync", "-p", "p", "-t", "orders", "--verbose")
    assert "extracted 20 rows" in sync.output
    assert "already loaded (in the ledger)" in sync.output
    assert orders.target_ids() == list(range(1, 21))
    assert orders.ok("watermark", "reset", "-p", "p", "-t", "orders", "--yes").exit_code == 0


def test_get_show_files_says_which_files_are_loaded(orders: Orders) -> None:
    orders.insert(range(1, 11), BASE_TIME)
    orders.ok("sync", "-p", "p", "-t", "orders", "--limit", "4", "--max-chunks", "2")
    orders.insert(range(11, 14), BASE_TIME + timedelta(hours=1))
    orders.ok("sync", "-p", "p", "-t", "orders", "--backup-only")
    shown = orders.ok("watermark", "get", "-p", "p", "-t", "orders", "--show-files")
    lines = [line for line in shown.output.splitlines() if line.endswith(".parquet")]
    assert [line.split()[0] for line in lines] == ["loaded", "loaded", "waiting"]
    assert "files:            3 committed" in shown.output
    data = orders.json("watermark", "get", "-p", "p", "-t", "orders", "--show-files")
    assert [f["rows"] for f in data["files"]] == [4, 4, 5]
    assert data["watermark"]["mysql_state"]["total_rows"] == 13


def test_set_count_absolute_and_additive(orders: Orders) -> None:
    orders.insert(range(1, 6), BASE_TIME)
    orders.ok("sync", "-p", "p", "-t", "orders", "--backup-only")
    result = orders.ok(
        "watermark-count", "set-count", "-t", "orders", "--count", "3000000", "--mode", "absolute"
    )
    assert "total_rows:      5 -> 3000000" in result.output
    orders.ok(
        "watermark-count", "set-count", "-t", "orders", "--count", "-500", "--mode", "additive"
    )
    assert stored_watermark(orders)["mysql_state"]["total_rows"] == 2_999_500
    negative = orders.run(
        "watermark-count", "set-count", "-t", "orders", "--count", "-1", "--mode", "absolute"
    )
    assert negative.exit_code == 2 and "an absolute count is 0 or more" in negative.output
    too_far = orders.run(
        "watermark-count", "set-count", "-t", "orders", "--count", "-3000000", "--mode", "additive"
    )
    assert too_far.exit_code == 2 and "a count cannot be negative" in too_far.output
    assert stored_watermark(orders)["mysql_state"]["total_rows"] == 2_999_500


def test_validate_counts_side_by_side_with_the_verdict(orders: Orders) -> None:
    orders.insert(range(1, 31), BASE_TIME)
    orders.ok("sync", "-p", "p", "-t", "orders")
    good = orders.ok("watermark-count", "validate-counts", "-p", "p", "-t", "orders")
    assert ": OK" in good.output
    for label, rows in (("source, all", 30), ("committed files (1)", 30), ("target", 30)):
        assert any(line.split() == [*label.split(), str(rows)] for line in good.output.splitlines())
    # The existing tool's double-counting bug: the watermark says more than the files hold.
    orders.ok("watermark-count", "set-count", "-t", "orders", "--count", "36", "--mode", "absolute")
    inflated = orders.run("watermark-count", "validate-counts", "-p", "p", "-t", "orders")
    assert inflated.exit_code == 1 and "MISMATCH" in inflated.output
    assert "the watermark counts 36 extracted rows but the committed files hold 30 (6 more)" in (
        inflated.output
    )
    assert "--count 30 --mode absolute" in inflated.output
    orders.ok("watermark-count", "set-count", "-t", "orders", "--count", "30")
    # New rows extracted but not loaded: behind, not wrong.
    orders.insert(range(31, 36), BASE_TIME + timedelta(hours=2))
    orders.ok("sync", "-p", "p", "-t", "orders", "--backup-only")
    behind = orders.json("watermark-count", "validate-counts", "-p", "p", "-t", "orders")[0]
    assert (behind["verdict"], behind["waiting_files"], behind["waiting_rows"]) == ("behind", 1, 5)
    assert behind["ok"] is True
    # Rows deleted in the source stay in the target: named, with by how much.
    orders.ok("sync", "-p", "p", "-t", "orders", "--redshift-only")
    orders.db.execute("DELETE FROM orders WHERE id <= 2")
    deleted = orders.run("watermark-count", "validate-counts", "-p", "p", "-t", "orders")
    assert deleted.exit_code == 1
    assert "the target has 35 rows, the source 33 (2 more)" in deleted.output
