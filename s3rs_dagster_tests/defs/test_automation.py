"""Concurrency pools and automation conditions of the asset pair, evaluated on an empty instance.

Only the config needs the stack (its source database); no run is launched here.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import dagster as dg

from s3rs_dagster.config import DEFAULT_CRON
from s3rs_dagster.defs.assets import build_table_assets
from s3rs_dagster.defs.definitions import all_resources
from s3rs_dagster_tests.core.conftest import MakeConfig

HYBRID = {"cdc_strategy": "hybrid", "start_date": "2025-01-01"}


def test_extract_runs_in_its_source_pool_and_load_in_its_warehouse_pool(
    make_config: MakeConfig,
) -> None:
    [assets] = build_table_assets(make_config({"orders": HYBRID}))
    assert assets.batches.op.pool == "s3rs/source/src"
    assert assets.warehouse.op.pool == "s3rs/warehouse/wh"


def test_conditions_are_hourly_cron_on_daily_and_hourly_batches_and_eager_on_the_load(
    make_config: MakeConfig,
) -> None:
    config = make_config(
        {
            "daily": HYBRID,
            "hourly": {**HYBRID, "partitioning": "hourly"},
            "monthly": {**HYBRID, "partitioning": "monthly"},
            "ids": {"cdc_strategy": "id_only"},
        }
    )
    by_table = {assets.table.split(".")[-1]: assets for assets in build_table_assets(config)}
    cron = dg.AutomationCondition.on_cron(DEFAULT_CRON)
    for table in ("daily", "hourly"):
        assert by_table[table].batches.automation_conditions_by_key == {
            by_table[table].batches.key: cron
        }
    for table in ("monthly", "ids"):
        assert by_table[table].batches.automation_conditions_by_key == {}
    for assets in by_table.values():
        assert assets.warehouse.automation_conditions_by_key == {
            assets.warehouse.key: dg.AutomationCondition.eager()
        }


def test_a_table_cron_replaces_the_default_and_none_turns_it_off(
    make_config: MakeConfig,
) -> None:
    config = make_config(
        {
            "nightly": {**HYBRID, "cron": "30 2 * * *"},
            "manual": {**HYBRID, "cron": "none"},
            "ids": {"cdc_strategy": "id_only", "cron": "*/15 * * * *"},
        }
    )
    by_table = {assets.table.split(".")[-1]: assets for assets in build_table_assets(config)}
    conditions = {
        name: assets.batches.automation_conditions_by_key.get(assets.batches.key)
        for name, assets in by_table.items()
    }
    assert conditions == {
        "nightly": dg.AutomationCondition.on_cron("30 2 * * *"),
        "manual": None,
        "ids": dg.AutomationCondition.on_cron("*/15 * * * *"),
    }


def test_a_cron_tick_requests_the_latest_window_and_new_batches_request_its_load(
    make_config: MakeConfig,
) -> None:
    config = make_config({"orders": HYBRID})
    [assets] = build_table_assets(config)
    defs = dg.Definitions(
        assets=[assets.batches, assets.warehouse], resources=all_resources(config)
    )
    instance = dg.DagsterInstance.ephemeral()
    before_tick = datetime(2025, 3, 2, 10, 30, tzinfo=UTC)
    first = dg.evaluate_automation_conditions(defs, instance, evaluation_time=before_tick)
    assert first.total_requested == 0

    after_tick = before_tick + timedelta(minutes=35)
    second = dg.evaluate_automation_conditions(
        defs, instance, evaluation_time=after_tick, cursor=first.cursor
    )
    # The load of the window is requested with its extract, in the same run.
    assert second.get_requested_partitions(assets.batches.key) == {"2025-03-02"}
    assert second.get_requested_partitions(assets.warehouse.key) == {"2025-03-02"}


def test_batches_materialised_outside_the_automation_request_their_load(
    make_config: MakeConfig,
) -> None:
    config = make_config({"orders": HYBRID})
    [assets] = build_table_assets(config)
    defs = dg.Definitions(
        assets=[assets.batches, assets.warehouse], resources=all_resources(config)
    )
    instance = dg.DagsterInstance.ephemeral()
    now = datetime(2025, 3, 2, 10, 30, tzinfo=UTC)
    first = dg.evaluate_automation_conditions(defs, instance, evaluation_time=now)
    assert first.total_requested == 0
    instance.report_runless_asset_event(
        dg.AssetMaterialization(asset_key=assets.batches.key, partition="2025-03-02")
    )
    second = dg.evaluate_automation_conditions(
        defs, instance, evaluation_time=now + timedelta(minutes=1), cursor=first.cursor
    )
    assert second.get_requested_partitions(assets.warehouse.key) == {"2025-03-02"}
    assert second.get_num_requested(assets.batches.key) == 0
