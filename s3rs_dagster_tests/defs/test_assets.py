"""The asset pair of a daily hybrid table, materialised on the real stack into each warehouse."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime, timedelta

import dagster as dg
import pytest

from s3rs_dagster.config import Config
from s3rs_dagster.defs.assets import ExtractConfig, TableAssets, build_table_assets
from s3rs_dagster.defs.checks import build_checks
from s3rs_dagster.defs.io_manager import BatchSummaryIOManager
from s3rs_dagster_tests.conftest import Stack
from s3rs_dagster_tests.core.conftest import MakeConfig, SourceDb
from s3rs_dagster_tests.core.test_load import (
    ORDERS_DDL,
    connect_target,
    drop_schema,
    target_rows,
    upsert,
)

DAY = datetime(2025, 3, 1)
PARTITION = "2025-03-02"


@pytest.fixture(params=["postgres", "duckdb", "redshift"])
def orders_config(
    request: pytest.FixtureRequest, source_db: SourceDb, make_config: MakeConfig, stack: Stack
) -> Iterator[Config]:
    source_db.execute(ORDERS_DDL)
    config = make_config(
        {"orders": {"cdc_strategy": "hybrid", "start_date": "2025-01-01"}}, target=request.param
    )
    yield config
    drop_schema(config, stack)


def materialize(
    config: Config, *, refresh: bool = False
) -> tuple[dg.ExecuteInProcessResult, TableAssets, dg.AssetChecksDefinition]:
    [assets] = build_table_assets(config)
    [check] = build_checks(config, [assets])
    assert config.source_file is not None
    result = dg.materialize(
        [assets.batches, assets.warehouse, check],
        partition_key=PARTITION,
        resources={"io_manager": BatchSummaryIOManager(config_path=str(config.source_file))},
        run_config=dg.RunConfig(ops={assets.batches.op.name: ExtractConfig(refresh=refresh)}),
        raise_on_error=False,
    )
    return result, assets, check


def window_ids(db: SourceDb) -> list[int]:
    rows = db.execute(
        "SELECT id FROM orders WHERE updated_at >= %s AND updated_at < %s ORDER BY id",
        (DAY + timedelta(days=1), DAY + timedelta(days=2)),
    )
    return [row[0] for row in rows]


def test_a_partition_loads_exactly_its_window_and_the_check_passes(
    orders_config: Config, source_db: SourceDb, stack: Stack
) -> None:
    for offset in range(3):
        upsert(
            source_db,
            range(offset * 10 + 1, offset * 10 + 5),
            DAY + timedelta(days=offset, hours=1),
            "row",
        )
    result, assets, _ = materialize(orders_config)
    assert result.success
    assert [row["id"] for row in target_rows(orders_config, stack)] == window_ids(source_db)
    batches = result.asset_materializations_for_node(assets.batches.op.name)[0].metadata
    assert batches["dagster/row_count"].value == 4
    loaded = result.asset_materializations_for_node(assets.warehouse.op.name)[0].metadata
    assert loaded["dagster/row_count"].value == 4
    assert "dagster/column_schema" in loaded
    [evaluation] = result.get_asset_check_evaluations()
    assert evaluation.passed, evaluation.metadata


def test_a_refresh_removes_a_row_deleted_in_the_window(
    orders_config: Config, source_db: SourceDb, stack: Stack
) -> None:
    upsert(source_db, range(1, 6), DAY + timedelta(days=1, hours=1), "row")
    assert materialize(orders_config)[0].success
    source_db.execute("DELETE FROM orders WHERE id = 3")
    assert [row["id"] for row in target_rows(orders_config, stack)] == [1, 2, 3, 4, 5]
    result, _, _ = materialize(orders_config, refresh=True)
    assert result.success
    assert [row["id"] for row in target_rows(orders_config, stack)] == [1, 2, 4, 5]
    [evaluation] = result.get_asset_check_evaluations()
    assert evaluation.passed, evaluation.metadata


def test_the_check_fails_by_how_much_when_rows_come_from_elsewhere(
    orders_config: Config, source_db: SourceDb, stack: Stack
) -> None:
    upsert(source_db, range(1, 4), DAY + timedelta(days=1, hours=1), "row")
    result, _, check = materialize(orders_config)
    assert result.success
    schema = orders_config.connections.targets["wh"].schema_
    with connect_target(orders_config, stack) as connection:
        connection.execute(f'INSERT INTO "{schema}"."orders" SELECT * FROM "{schema}"."orders"')
    evaluation = check()
    assert not evaluation.passed
    assert evaluation.metadata["target_minus_watermark"].value == 3
    assert evaluation.metadata["target_rows_beyond_ledger"].value == 3
