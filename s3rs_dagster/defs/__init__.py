"""The Dagster code location (`workspace.yaml` points here).

It loads pipelines.yaml through the same validated model as the CLI, so a broken file makes
the location fail to load with the CLI's message. Each configured table becomes an asset pair
(its S3 Parquet batches and its warehouse table, `assets.py`) with a row-count check
(`checks.py`) and, on S3 storage, a sensor that loads new files (`sensors.py`, stopped until
switched on). Batch summaries pass between the pair through `io_manager.py`. The assets'
pools and automation conditions are described in docs/dagster.md.
"""

from dagster import Definitions

from s3rs_dagster.config import load_config
from s3rs_dagster.defs.assets import build_table_assets
from s3rs_dagster.defs.checks import build_checks
from s3rs_dagster.defs.io_manager import BatchSummaryIOManager
from s3rs_dagster.defs.sensors import build_sensors

config = load_config()
tables = build_table_assets(config)

defs = Definitions(
    assets=[asset for pair in tables for asset in (pair.batches, pair.warehouse)],
    asset_checks=build_checks(config, tables),
    sensors=build_sensors(config, tables),
    resources={
        "io_manager": BatchSummaryIOManager(
            config_path=str(config.source_file.resolve()) if config.source_file else None
        )
    },
)
