"""The connection resources: built from pipelines.yaml with secrets as EnvVars, and really used.

Runs go through the resources, so a resource configured differently from the file (as a
deployment or the launchpad may) decides where the run reads and writes.
"""

from __future__ import annotations

import os
from datetime import datetime, timedelta
from pathlib import Path

import dagster as dg
import duckdb

from s3rs_dagster.config import Config
from s3rs_dagster.defs.assets import build_table_assets
from s3rs_dagster.defs.definitions import all_resources
from s3rs_dagster.defs.resources import (
    MySQLSourceResource,
    SSHTunnelResource,
    WarehouseResource,
    resources_for,
    source_key,
    warehouse_key,
)
from s3rs_dagster_tests.core.conftest import MakeConfig, SourceDb
from s3rs_dagster_tests.core.test_load import ORDERS_DDL, upsert

HYBRID = {"cdc_strategy": "hybrid", "start_date": "2025-01-01"}
DAY = datetime(2025, 3, 2)


def materialize(config: Config, resources: dict[str, object]) -> dg.ExecuteInProcessResult:
    [assets] = build_table_assets(config)
    return dg.materialize(
        [assets.batches, assets.warehouse],
        partition_key=DAY.date().isoformat(),
        resources=resources,
        raise_on_error=False,
    )


def test_secrets_become_env_vars_naming_their_variable(make_config: MakeConfig) -> None:
    config = make_config({"orders": HYBRID}, via_ssh=True, target="postgres")
    resources = resources_for(config)
    source = resources[source_key("src")]
    warehouse = resources[warehouse_key("wh")]
    assert isinstance(source, MySQLSourceResource)
    assert isinstance(warehouse, WarehouseResource)
    assert source.password == dg.EnvVar("MYSQL_PASSWORD")
    assert warehouse.password == dg.EnvVar("POSTGRES_PASSWORD")
    assert isinstance(source.ssh_tunnel, SSHTunnelResource)
    assert os.environ["MYSQL_PASSWORD"] not in repr(resources)


def test_a_window_extracts_through_the_bastion_tunnel_resource(
    make_config: MakeConfig, source_db: SourceDb
) -> None:
    source_db.execute(ORDERS_DDL)
    upsert(source_db, range(1, 6), DAY + timedelta(hours=3), "via bastion")
    config = make_config({"orders": HYBRID}, via_ssh=True, local_storage=True)
    result = materialize(config, all_resources(config))
    assert result.success
    target = config.connections.targets["wh"]
    with duckdb.connect(str(target.path), read_only=True) as connection:
        rows = connection.execute(
            f'SELECT id, note FROM "{target.schema_}"."orders" ORDER BY id'
        ).fetchall()
    assert rows == [(i, f"via bastion {i}") for i in range(1, 6)]


def test_the_warehouse_resource_decides_where_a_run_loads(
    make_config: MakeConfig, source_db: SourceDb, tmp_path: Path
) -> None:
    source_db.execute(ORDERS_DDL)
    upsert(source_db, range(1, 4), DAY + timedelta(hours=1), "row")
    config = make_config({"orders": HYBRID}, local_storage=True)
    elsewhere = tmp_path / "elsewhere.duckdb"
    resources = all_resources(config)
    resources[warehouse_key("wh")] = WarehouseResource(
        type="duckdb", path=str(elsewhere), schema_name="resource_schema"
    )
    assert materialize(config, resources).success
    with duckdb.connect(str(elsewhere), read_only=True) as connection:
        count = connection.execute('SELECT COUNT(*) FROM "resource_schema"."orders"').fetchone()
    assert count == (3,)
    assert not Path(str(config.connections.targets["wh"].path)).exists()


def test_a_source_resource_pointing_elsewhere_fails_the_run_naming_it(
    make_config: MakeConfig, source_db: SourceDb
) -> None:
    source_db.execute(ORDERS_DDL)
    config = make_config({"orders": HYBRID}, local_storage=True)
    resources = all_resources(config)
    good = config.connections.sources["src"]
    resources[source_key("src")] = MySQLSourceResource(
        host=good.host,
        port=1,
        database=good.database,
        username=good.username,
        password=dg.EnvVar("MYSQL_PASSWORD"),
        connect_timeout_seconds=2,
    )
    result = materialize(config, resources)
    assert not result.success
    [failure] = [e for e in result.all_events if e.is_step_failure]
    message = str(failure.step_failure_data.error)
    assert f"{good.host}:1" in message
    assert os.environ["MYSQL_PASSWORD"] not in message
