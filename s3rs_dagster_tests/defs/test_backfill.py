"""A backfill of three daily windows, in process and through `dagster asset materialize`."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path

import dagster as dg
import pytest

from s3rs_dagster.config import Config
from s3rs_dagster.defs.assets import build_table_assets
from s3rs_dagster.defs.definitions import all_resources
from s3rs_dagster_tests.conftest import Stack
from s3rs_dagster_tests.core.conftest import MakeConfig, SourceDb
from s3rs_dagster_tests.core.test_load import ORDERS_DDL, drop_schema, target_rows, upsert

REPO = Path(__file__).resolve().parents[2]
DAGSTER = Path(sys.executable).parent / "dagster"
DAY = datetime(2025, 3, 1)


@pytest.fixture
def orders_config(source_db: SourceDb, make_config: MakeConfig, stack: Stack) -> Iterator[Config]:
    """Five days of four rows each (ids 10*day + 1..4) in a daily hybrid table."""
    source_db.execute(ORDERS_DDL)
    for offset in range(5):
        ids = range(offset * 10 + 1, offset * 10 + 5)
        upsert(source_db, ids, DAY + timedelta(days=offset, hours=offset + 1), "row")
    config = make_config(
        {"orders": {"cdc_strategy": "hybrid", "start_date": "2025-01-01"}}, target="postgres"
    )
    yield config
    drop_schema(config, stack)


def window_ids(db: SourceDb, days: list[str]) -> list[int]:
    ids = []
    for day in days:
        start = datetime.fromisoformat(day)
        rows = db.execute(
            "SELECT id FROM orders WHERE updated_at >= %s AND updated_at < %s",
            (start, start + timedelta(days=1)),
        )
        ids += [row[0] for row in rows]
    return sorted(ids)


def test_a_backfill_of_three_windows_loads_exactly_their_rows(
    orders_config: Config, source_db: SourceDb, stack: Stack
) -> None:
    [assets] = build_table_assets(orders_config)
    resources = all_resources(orders_config)
    days = ["2025-03-02", "2025-03-03", "2025-03-04"]
    for day in days:
        result = dg.materialize(
            [assets.batches, assets.warehouse],
            partition_key=day,
            resources=resources,
        )
        assert result.success
    assert [row["id"] for row in target_rows(orders_config, stack)] == window_ids(source_db, days)
    assert window_ids(source_db, days) == [11, 12, 13, 14, 21, 22, 23, 24, 31, 32, 33, 34]


def test_dagster_asset_materialize_loads_a_window(
    orders_config: Config, source_db: SourceDb, stack: Stack, tmp_path: Path
) -> None:
    [assets] = build_table_assets(orders_config)
    selection = ",".join(key.to_user_string() for key in (assets.batches.key, assets.warehouse.key))
    home = tmp_path / "dagster_home"
    home.mkdir()
    result = subprocess.run(
        [
            str(DAGSTER),
            "asset",
            "materialize",
            "-m",
            "s3rs_dagster.defs",
            "--select",
            selection,
            "--partition",
            "2025-03-03",
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
        env={
            **os.environ,
            "S3RS_CONFIG": str(orders_config.source_file),
            "DAGSTER_HOME": str(home),
        },
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "RUN_SUCCESS" in result.stdout + result.stderr
    assert [row["id"] for row in target_rows(orders_config, stack)] == window_ids(
        source_db, ["2025-03-03"]
    )
    assert window_ids(source_db, ["2025-03-03"]) == [21, 22, 23, 24]
