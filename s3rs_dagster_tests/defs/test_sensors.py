"""The new-files sensor over the stack's S3, and a load run it requests without a batch summary."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime, timedelta

import dagster as dg
import pytest

from s3rs_dagster.config import Config
from s3rs_dagster.core.extract import extract_table
from s3rs_dagster.defs.assets import build_table_assets
from s3rs_dagster.defs.definitions import all_resources
from s3rs_dagster.defs.sensors import build_sensors
from s3rs_dagster_tests.conftest import Stack
from s3rs_dagster_tests.core.conftest import MakeConfig, SourceDb
from s3rs_dagster_tests.core.test_load import ORDERS_DDL, drop_schema, target_rows, upsert

DAY = datetime(2025, 3, 1)
HYBRID = {"cdc_strategy": "hybrid", "start_date": "2025-01-01"}


@pytest.fixture
def orders_config(source_db: SourceDb, make_config: MakeConfig, stack: Stack) -> Iterator[Config]:
    source_db.execute(ORDERS_DDL)
    config = make_config({"orders": HYBRID}, target="postgres")
    yield config
    drop_schema(config, stack)


def evaluate(sensor: dg.SensorDefinition, cursor: str | None, config: Config) -> dg.SensorResult:
    with dg.build_sensor_context(cursor=cursor, resources=all_resources(config)) as context:
        result = sensor(context)
    assert isinstance(result, dg.SensorResult)
    return result


def test_new_files_request_one_load_per_partition_and_the_load_runs_from_the_manifests(
    orders_config: Config, source_db: SourceDb, stack: Stack
) -> None:
    [assets] = build_table_assets(orders_config)
    [sensor] = build_sensors(orders_config, [assets])
    assert evaluate(sensor, None, orders_config).skip_reason
    upsert(source_db, range(1, 4), DAY + timedelta(hours=1), "row")
    upsert(source_db, range(11, 14), DAY + timedelta(days=1, hours=1), "row")
    for partition in ("2025-03-01", "2025-03-02"):
        assert extract_table(orders_config, "p", "orders", partition=partition).ok
    first = evaluate(sensor, None, orders_config)
    assert [request.partition_key for request in first.run_requests] == [
        "2025-03-01",
        "2025-03-02",
    ]
    assert evaluate(sensor, first.cursor, orders_config).run_requests == []
    upsert(source_db, [14], DAY + timedelta(days=1, hours=2), "late")
    assert extract_table(orders_config, "p", "orders", partition="2025-03-02").rows == 1
    second = evaluate(sensor, first.cursor, orders_config)
    assert [request.partition_key for request in second.run_requests] == ["2025-03-02"]
    assert second.run_requests[0].run_key not in {r.run_key for r in first.run_requests}

    result = dg.materialize(
        [assets.batches, assets.warehouse],
        selection=[assets.warehouse.key],
        partition_key="2025-03-02",
        resources=all_resources(orders_config),
    )
    assert result.success
    assert [row["id"] for row in target_rows(orders_config, stack)] == [1, 2, 3, 11, 12, 13, 14]
