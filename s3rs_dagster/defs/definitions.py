"""Everything the code location defines, from one validated config.

Each configured table becomes an asset pair (its S3 Parquet batches and its warehouse table,
`assets.py`) with the checks each materialisation reports (`batch_checks.py`), a whole-table
row-count check (`checks.py`) and, on S3 storage, a sensor that loads new files
(`sensors.py`, stopped until switched on). Connections are resources (`resources.py`); batch
summaries pass between the pair through `io_manager.py`. Pools and automation conditions are
described in docs/dagster.md.
"""

from __future__ import annotations

import dagster as dg

from s3rs_dagster.config import Config
from s3rs_dagster.core.target import check_target_names
from s3rs_dagster.defs.assets import build_table_assets
from s3rs_dagster.defs.checks import build_checks
from s3rs_dagster.defs.io_manager import BatchSummaryIOManager
from s3rs_dagster.defs.resources import STORAGE_KEY, StorageResource, resources_for
from s3rs_dagster.defs.sensors import build_sensors


def all_resources(config: Config) -> dict[str, dg.ConfigurableResource | dg.ConfigurableIOManager]:
    """The connection resources of pipelines.yaml, and the IO manager over its storage."""
    resources: dict[str, dg.ConfigurableResource | dg.ConfigurableIOManager] = dict(
        resources_for(config)
    )
    storage = resources[STORAGE_KEY]
    assert isinstance(storage, StorageResource)
    config_path = str(config.source_file.resolve()) if config.source_file else None
    resources["io_manager"] = BatchSummaryIOManager(storage=storage, config_path=config_path)
    return resources


def build_definitions(config: Config) -> dg.Definitions:
    check_target_names(config)
    tables = build_table_assets(config)
    return dg.Definitions(
        assets=[asset for pair in tables for asset in (pair.batches, pair.warehouse)],
        asset_checks=build_checks(config, tables),
        sensors=build_sensors(config, tables),
        resources=all_resources(config),
    )
