"""The users' Q&A scenarios, end to end on the real stack, each judged by the rows in the target."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from s3rs_dagster.config import load_config
from s3rs_dagster_tests.commands.conftest import BASE_TIME, Orders


def test_fresh_sync_from_a_date(orders_pg: Orders) -> None:
    """Q&A: reset, set the starting timestamp, sync: everything from that date on."""
    orders = orders_pg
    orders.insert(range(1, 31), BASE_TIME, timedelta(hours=12))  # 15 days, two rows a day
    orders.ok("watermark", "reset", "-p", "p", "-t", "orders", "--yes")
    orders.ok("watermark", "set", "-p", "p", "-t", "orders", "--timestamp", "2025-03-08 00:00:00")
    orders.ok("sync", "-p", "p", "-t", "orders")
    assert (
        orders.target_ids()
        == orders.source_ids("updated_at >= '2025-03-08'")
        == list(range(14, 31))
    )


def test_load_only_the_newest_files(orders: Orders) -> None:
    """Q&A: move the cutoff, then --redshift-only loads only the files written after it."""
    orders.insert(range(1, 21), BASE_TIME)
    orders.ok("sync", "-p", "p", "-t", "orders", "--backup-only")  # the "old" files
    time.sleep(1.1)  # file names carry their run's start to the second
    cutoff = datetime.now(UTC).replace(microsecond=0)
    time.sleep(1.1)
    orders.insert(range(21, 26), BASE_TIME + timedelta(days=1))
    orders.ok("sync", "-p", "p", "-t", "orders", "--backup-only")  # the recent files
    listed = orders.ok("s3clean", "list", "-t", "orders", "--show-timestamps")
    assert "2 file(s)" in listed.output
    orders.ok("watermark", "set", "-p", "p", "-t", "orders", "--timestamp", cutoff.isoformat())
    loaded = orders.ok("sync", "-p", "p", "-t", "orders", "--redshift-only", "--verbose")
    assert "loaded 1 file(s), 5 rows" in loaded.output
    assert "before the cutoff" in loaded.output
    assert orders.target_ids() == list(range(21, 26))


def test_small_dataset_first(orders: Orders) -> None:
    """Q&A: --limit 1000 --backup-only, check the files, move the cutoff, --redshift-only."""
    now = datetime.now(UTC).replace(tzinfo=None, microsecond=0)
    orders.insert(range(1, 3001), now - timedelta(days=2), timedelta(seconds=10))
    backup = orders.ok("sync", "-p", "p", "-t", "orders", "--limit", "1000", "--backup-only")
    assert "extracted 1,000 rows" in backup.output
    assert "stopped at --limit 1,000 rows" in backup.output
    listed = orders.json("s3clean", "list", "-t", "orders")
    assert listed["count"] >= 1 and all(f["kind"] == "waiting" for f in listed["files"])
    cutoff = (datetime.now(UTC) - timedelta(minutes=5)).strftime("%Y-%m-%d %H:%M:%S")
    orders.ok("watermark", "set", "-p", "p", "-t", "orders", "--timestamp", cutoff)
    orders.ok("sync", "-p", "p", "-t", "orders", "--redshift-only")
    assert orders.target_ids() == list(range(1, 1001)), "only the test extract was loaded"


def test_recover_from_failed_stages(orders_pg: Orders) -> None:
    """Q&A: a failed MySQL stage, then a failed warehouse stage, then the retries."""
    orders = orders_pg
    orders.insert(range(1, 51), BASE_TIME)

    def port(kind: str, value: int) -> Any:
        def change(document: dict[str, Any]) -> None:
            section = "sources" if kind == "source" else "targets"
            key = "src" if kind == "source" else "wh"
            document["connections"][section][key]["port"] = value

        return change

    no_source = orders.edit_config(port("source", 1), "no_source.yaml")
    failed = orders.run("sync", "-p", "p", "-t", "orders", config=no_source)
    assert failed.exit_code == 1
    assert f"{orders.table}: EXTRACT FAILED: source 'src'" in failed.output
    assert "cannot connect" in failed.output and f"failed: {orders.table}" in failed.output
    orders.ok("sync", "-p", "p", "-t", "orders", "--backup-only")  # retry the MySQL stage
    orders.insert(range(51, 61), BASE_TIME + timedelta(hours=1))
    no_warehouse = orders.edit_config(port("target", 1), "no_warehouse.yaml")
    failed = orders.run("sync", "-p", "p", "-t", "orders", config=no_warehouse)
    assert failed.exit_code == 1
    assert "extracted 10 rows" in failed.output
    assert f"{orders.table}: LOAD FAILED" in failed.output
    status = orders.json("watermark-count", "validate-counts", "-p", "p", "-t", "orders")[0]
    assert status["waiting_files"] == 2 and status["target_rows"] is None
    orders.ok("sync", "-p", "p", "-t", "orders", "--redshift-only")  # retry the load stage
    assert orders.target_ids() == orders.source_ids() == list(range(1, 61))
    assert orders.ok("watermark-count", "validate-counts", "-p", "p", "-t", "orders")


def test_migrate_to_a_new_pipeline(orders: Orders, tmp_path: Path) -> None:
    """Q&A: the new pipeline resumes from the old one's watermark with `watermark set`."""
    orders.insert(range(1, 21), BASE_TIME, timedelta(minutes=1))
    orders.ok("sync", "-p", "p", "-t", "orders")

    def add_pipeline(document: dict[str, Any]) -> None:
        targets = document["connections"]["targets"]
        targets["wh2"] = {**targets["wh"], "path": str(tmp_path / "new.duckdb")}
        document["pipelines"]["p2"] = {**document["pipelines"]["p"], "target": "wh2"}

    both = orders.edit_config(add_pipeline, "both.yaml")
    old = orders.json("watermark", "get", "-p", "p", "-t", "orders")["watermark"]
    resume_at = old["mysql_state"]["last_timestamp"]
    orders.insert(range(21, 31), BASE_TIME + timedelta(hours=1), timedelta(minutes=1))
    orders.ok("watermark", "set", "-p", "p2", "-t", "orders", "--timestamp", resume_at, config=both)
    orders.ok("sync", "-p", "p2", "-t", "orders", config=both)
    new_config = load_config(both)
    expected = orders.source_ids("updated_at >= %s", (datetime.fromisoformat(resume_at),))
    assert expected == [20, *range(21, 31)]
    new_rows = orders.target_ids(
        new_config.with_connections(targets={"wh": new_config.connections.targets["wh2"]})
    )
    assert new_rows == expected
    assert orders.target_ids() == list(range(1, 21)), "the old pipeline's target is untouched"
