"""The demo's pipeline in Dagster with no server: SQLite -> file:// Parquet -> DuckDB.

What `dagster dev` shows for `S3RS_CONFIG=<demo>/pipelines.yaml`: the asset pair, its checks
and a sensor on the local lake; a partition materialises and the sensor sees new files.
"""

from __future__ import annotations

import sqlite3
from datetime import UTC, datetime
from pathlib import Path

import dagster as dg
import duckdb

from s3rs_dagster.config import load_config
from s3rs_dagster.core.demo import PIPELINE, TABLE, run_demo
from s3rs_dagster.core.extract import extract_table
from s3rs_dagster.defs.assets import build_table_assets
from s3rs_dagster.defs.definitions import all_resources, build_definitions


def test_the_demo_pipeline_materialises_and_senses_new_files_without_servers(
    tmp_path: Path,
) -> None:
    report = run_demo(tmp_path / "demo", rows=2000, echo=lambda _: None)
    assert report.ok
    config = load_config(report.config_path)
    defs = build_definitions(config)
    [sensor] = defs.sensors or []
    with dg.build_sensor_context(resources=all_resources(config)) as context:
        first = sensor(context)
    assert isinstance(first, dg.SensorResult)

    now = datetime.now(UTC).replace(tzinfo=None)
    today = now.strftime("%Y-%m-%d")
    source = report.folder / "source.sqlite"
    with sqlite3.connect(source) as connection:
        connection.execute(
            "INSERT INTO settle_orders (id, order_no, merchant_id, amount, currency, status, "
            "created_at, updated_at) VALUES (99999, 'SO-NEW', 1, '12.50', 'EUR', 'pending', ?, ?)",
            (now.isoformat(" "), now.isoformat(" ")),
        )
    assert extract_table(config, PIPELINE, TABLE).rows == 1
    with dg.build_sensor_context(cursor=first.cursor, resources=all_resources(config)) as context:
        second = sensor(context)
    assert isinstance(second, dg.SensorResult)
    assert [request.partition_key for request in second.run_requests] == [today]

    [assets] = build_table_assets(config)
    result = dg.materialize(
        [assets.batches, assets.warehouse], partition_key=today, resources=all_resources(config)
    )
    assert result.success
    evaluations = result.get_asset_check_evaluations()
    assert evaluations and all(e.passed for e in evaluations), evaluations
    with sqlite3.connect(source) as connection:
        expected = connection.execute("SELECT COUNT(*) FROM settle_orders").fetchone()
    with duckdb.connect(str(report.folder / "warehouse.duckdb"), read_only=True) as connection:
        assert connection.execute("SELECT COUNT(*) FROM settlement.settle_orders").fetchone() == (
            expected
        )
