"""The asset pair of a daily hybrid table, materialised on the real stack into each warehouse."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import dagster as dg
import pytest

from s3rs_dagster.adapters.storage import open_storage
from s3rs_dagster.config import Config
from s3rs_dagster.core.extract import extract_table
from s3rs_dagster.core.state import Cursor, WatermarkStore
from s3rs_dagster.defs.assets import ExtractConfig, TableAssets, build_table_assets
from s3rs_dagster.defs.checks import build_checks
from s3rs_dagster.defs.definitions import all_resources
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
    config: Config, *, refresh: bool = False, instance: dg.DagsterInstance | None = None
) -> tuple[dg.ExecuteInProcessResult, TableAssets, dg.AssetChecksDefinition]:
    [assets] = build_table_assets(config)
    [check] = build_checks(config, [assets])
    result = dg.materialize(
        [assets.batches, assets.warehouse, check],
        partition_key=PARTITION,
        resources=all_resources(config),
        run_config=dg.RunConfig(ops={assets.batches.op.name: ExtractConfig(refresh=refresh)}),
        instance=instance,
        raise_on_error=False,
    )
    return result, assets, check


def checks(result: dg.ExecuteInProcessResult) -> dict[str, dg.AssetCheckEvaluation]:
    return {e.check_name: e for e in result.get_asset_check_evaluations()}


def run_check(config: Config, check: dg.AssetChecksDefinition) -> dg.AssetCheckEvaluation:
    """The whole-table check on its own, in a run of its own as the UI's "Execute" starts."""
    [assets] = build_table_assets(config)
    result = dg.materialize(
        [assets.batches, assets.warehouse, check],
        selection=dg.AssetSelection.checks(check),
        resources=all_resources(config),
    )
    [evaluation] = result.get_asset_check_evaluations()
    return evaluation


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
    evaluations = checks(result)
    assert set(evaluations) == {
        "files_match_manifest",
        "watermark_never_moves_backwards",
        "source_schema_unchanged",
        "window_rows_match_source",
        "row_count_matches_state",
    }
    assert all(e.passed for e in evaluations.values()), evaluations
    window = evaluations["window_rows_match_source"].metadata
    assert (window["target_rows"].value, window["source_rows"].value) == (4, 4)


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
    evaluations = checks(result)
    assert all(e.passed for e in evaluations.values()), evaluations
    assert evaluations["files_match_manifest"].metadata["source_rows_in_window"].value == 4


def test_the_check_fails_by_how_much_when_rows_come_from_elsewhere(
    orders_config: Config, source_db: SourceDb, stack: Stack
) -> None:
    upsert(source_db, range(1, 4), DAY + timedelta(days=1, hours=1), "row")
    result, _, check = materialize(orders_config)
    assert result.success
    schema = orders_config.connections.targets["wh"].schema_
    with connect_target(orders_config, stack) as connection:
        connection.execute(f'INSERT INTO "{schema}"."orders" SELECT * FROM "{schema}"."orders"')
    evaluation = run_check(orders_config, check)
    assert not evaluation.passed
    assert evaluation.metadata["target_minus_watermark"].value == 3
    assert evaluation.metadata["target_rows_beyond_ledger"].value == 3
    assert "3 more rows" in str(evaluation.description)


def test_rows_deleted_from_the_target_fail_both_count_checks_by_how_much(
    orders_config: Config, source_db: SourceDb, stack: Stack
) -> None:
    upsert(source_db, range(1, 6), DAY + timedelta(days=1, hours=1), "row")
    result, _, check = materialize(orders_config)
    assert result.success
    schema = orders_config.connections.targets["wh"].schema_
    with connect_target(orders_config, stack) as connection:
        connection.execute(f'DELETE FROM "{schema}"."orders" WHERE id IN (2, 4)')
    whole_table = run_check(orders_config, check)
    assert not whole_table.passed
    assert "2 fewer rows" in str(whole_table.description)
    again, _, _ = materialize(orders_config)
    window = checks(again)["window_rows_match_source"]
    assert not window.passed
    assert window.metadata["target_minus_source"].value == -2
    assert "2 fewer" in str(window.description)


def test_a_watermark_moved_back_and_a_changed_source_schema_are_reported(
    orders_config: Config, source_db: SourceDb
) -> None:
    upsert(source_db, range(1, 4), DAY + timedelta(days=1, hours=1), "row")
    assert extract_table(orders_config, "p", "orders").ok  # moves the table-wide cursor
    instance = dg.DagsterInstance.ephemeral()
    first, _, _ = materialize(orders_config, instance=instance)
    assert all(e.passed for e in checks(first).values())

    table = orders_config.table("p", "orders")[0]
    store = WatermarkStore(open_storage(orders_config.storage), "p", table, "wh")
    watermark, etag = store.load()
    watermark.mysql_state.cursor = Cursor(timestamp="2025-01-01 00:00:00.000000", key=["0"])
    watermark.mysql_state.last_timestamp = datetime(2025, 1, 1, tzinfo=UTC)
    watermark.mysql_state.last_id = 0
    store.save(watermark, etag)
    source_db.execute("ALTER TABLE orders ADD COLUMN channel VARCHAR(16) NULL")

    second, _, _ = materialize(orders_config, instance=instance)
    assert second.success, "warnings do not stop the run"
    evaluations = checks(second)
    moved = evaluations["watermark_never_moves_backwards"]
    assert not moved.passed
    assert moved.severity == dg.AssetCheckSeverity.WARN
    assert "moved back" in str(moved.description)
    schema = evaluations["source_schema_unchanged"]
    assert not schema.passed
    assert "added channel" in str(schema.description)
