"""Per configured table, two assets: its Parquet batches in storage and its warehouse table.

Keys are `[pipeline, "schema.table", "s3_batches"]` and `[pipeline, "schema.table", "redshift"]`
(Dagster accepts the dot in a key component; the warehouse asset keeps the name `redshift` for
every target type, as the existing tool's users know it). Both are thin: the extract and load
stages of `s3rs_dagster.core` do all the work and keep all the state, exactly as `s3rs sync`.

Time-partitioned tables (`hybrid` / `timestamp_only` with daily, hourly or monthly
partitioning) get time-window partitions from `start_date` whose keys are the `dt=` values the
extract stage writes ('%Y-%m-%d', '%Y-%m-%d-%H:%M', '%Y-%m'). The partitions are in UTC and
include the current, still open window (`end_offset=1`): the extract stage stops at the
database clock anyway, and a later run of the window picks up what arrived since.

Extracts run in the concurrency pool `s3rs/source/<source>`, loads in `s3rs/warehouse/<target>`
(limits are set on the instance, docs/dagster.md). Automation: s3_batches assets extract their
latest window on the table's `cron` (hourly by default for daily and hourly partitioned
tables); every warehouse asset is `eager()`, loading a partition when its batches are updated.

No `from __future__ import annotations` here: Dagster reads the asset functions' `config`
annotation at definition time, and a string annotation is not resolved.
"""

import hashlib
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from datetime import datetime, time
from typing import Any

import dagster as dg

from s3rs_dagster.config import Config, TableConfig
from s3rs_dagster.core.extract import extract_table
from s3rs_dagster.core.load import load_table
from s3rs_dagster.core.manifests import committed_files
from s3rs_dagster.core.state import WatermarkStore
from s3rs_dagster.core.target import target_facts, target_table_name
from s3rs_dagster.defs.batch_checks import (
    batch_check_specs,
    files_match_manifest,
    source_schema_unchanged,
    warehouse_check_specs,
    watermark_never_moves_backwards,
    window_rows_match_source,
)
from s3rs_dagster.defs.io_manager import batch_summary
from s3rs_dagster.defs.resources import (
    STORAGE_KEY,
    StorageResource,
    runtime_config,
    source_key,
    warehouse_key,
)

BATCHES = "s3_batches"
WAREHOUSE = "redshift"


def source_pool(source: str) -> str:
    """The concurrency pool of every extract from one source (one database, one bastion)."""
    return f"s3rs/source/{source}"


def warehouse_pool(target: str) -> str:
    """The concurrency pool of every load into one target warehouse."""
    return f"s3rs/warehouse/{target}"


def extract_automation(table_config: TableConfig) -> dg.AutomationCondition | None:
    """`on_cron(table cron)`, or None when the table's `cron` is 'none'.

    On a time-partitioned asset it requests the latest (current, still open) window once per
    tick; on an unpartitioned one, the table. Tables without a cron are run by hand, by a
    schedule of their own or by `s3rs sync`.
    """
    if table_config.cron in (None, "none"):
        return None
    return dg.AutomationCondition.on_cron(table_config.cron)


class ExtractConfig(dg.Config):
    """Run config of an s3_batches asset."""

    refresh: bool = False
    """Extract the partition's whole window anew; its load then replaces the window."""
    limit: int | None = None
    """Rows per chunk (default: the pipeline's processing.batch_size)."""


@dataclass(frozen=True)
class TableAssets:
    """The asset pair of one table, and what sensors and checks need to know about it."""

    pipeline: str
    table: str
    batches: dg.AssetsDefinition
    warehouse: dg.AssetsDefinition
    partitions_def: dg.TimeWindowPartitionsDefinition | None


def code_version(table_config: TableConfig) -> str:
    """A short hash of the table's resolved config: changing it marks the assets stale."""
    return hashlib.sha256(table_config.model_dump_json().encode()).hexdigest()[:12]


def partitions_for(table_config: TableConfig) -> dg.TimeWindowPartitionsDefinition | None:
    """The table's time-window partitions, or None for id_only / full_sync tables."""
    granularity = table_config.partitioning
    if granularity in (None, "none") or table_config.start_date is None:
        return None
    start = datetime.combine(table_config.start_date, time())
    if granularity == "hourly":
        return dg.HourlyPartitionsDefinition(start_date=start, fmt="%Y-%m-%d-%H:%M", end_offset=1)
    if granularity == "monthly":
        # The month that contains start_date is the first partition.
        return dg.MonthlyPartitionsDefinition(
            start_date=start.replace(day=1), fmt="%Y-%m", end_offset=1
        )
    return dg.DailyPartitionsDefinition(start_date=start, fmt="%Y-%m-%d", end_offset=1)


def build_table_assets(config: Config) -> list[TableAssets]:
    """The asset pair of every table of every pipeline."""
    return [
        _table_assets(config, pipeline, table)
        for pipeline, pipeline_config in config.pipelines.items()
        for table in pipeline_config.tables
    ]


def _table_assets(s3rs_config: Config, pipeline: str, table: str) -> TableAssets:
    table_config = s3rs_config.pipelines[pipeline].tables[table]
    pipeline_config = s3rs_config.pipelines[pipeline]
    source_name, target_name = pipeline_config.source, pipeline_config.target
    source = s3rs_config.connections.sources[source_name]
    target = s3rs_config.target_for(pipeline)
    partitions_def = partitions_for(table_config)
    version = code_version(table_config)
    batches_key = dg.AssetKey([pipeline, table, BATCHES])
    warehouse_asset_key = dg.AssetKey([pipeline, table, WAREHOUSE])
    data_url = f"{s3rs_config.storage.url.rstrip('/')}/{pipeline}/{table}/"
    target_table = f"{target.schema_}.{target_table_name(table, table_config, target.type)}"

    @dg.asset(
        key=batches_key,
        group_name=pipeline,
        kinds={"mysql", "s3", "parquet"},
        description=(
            f"MySQL table `{table}` (source `{source_name}`, database "
            f"`{source.database}`) extracted as Parquet batches into {data_url} "
            f"({table_config.cdc_strategy})."
        ),
        code_version=version,
        partitions_def=partitions_def,
        pool=source_pool(source_name),
        automation_condition=extract_automation(table_config),
        required_resource_keys={STORAGE_KEY, source_key(source_name)},
        check_specs=batch_check_specs(batches_key),
    )
    def s3_batches(context: dg.AssetExecutionContext, config: ExtractConfig) -> Iterator[Any]:
        partition = context.partition_key if partitions_def is not None else None
        storage_resource: StorageResource = getattr(context.resources, STORAGE_KEY)
        run_config = runtime_config(
            s3rs_config,
            storage=storage_resource,
            sources={source_name: getattr(context.resources, source_key(source_name))},
        )
        storage = storage_resource.get_storage()
        context.log.info(
            f"extracting {pipeline}/{table}"
            + (f" window {partition}" if partition else "")
            + (" (refresh)" if config.refresh else "")
        )
        report = extract_table(
            run_config,
            pipeline,
            table,
            limit=config.limit,
            partition=partition,
            refresh=config.refresh,
            storage=storage,
            progress=lambda p: context.log.info(
                f"{p.rows:,} rows in {p.files} files ({p.rows_per_second:,.0f} rows/s)"
            ),
        )
        for warning in report.warnings:
            context.log.warning(warning)
        if not report.ok:
            raise dg.Failure(
                description=f"extracting {pipeline}/{table} failed: {report.error}",
                metadata={"run_id": report.run_id, "rows_committed": report.rows},
            )
        store = WatermarkStore(storage, pipeline, table, target_name)
        watermark, _ = store.load()
        files = [
            entry
            for entry in committed_files(storage, pipeline, table, watermark)
            if entry.run_id == report.run_id
        ]
        summary = batch_summary(report.run_id, partition, config.refresh, files)
        if report.window is not None:
            summary["window"] = asdict(report.window)
        metadata: dict[str, Any] = {
            "dagster/row_count": report.rows,
            "files": report.files,
            "bytes": report.bytes,
            "duration_s": round(report.seconds, 3),
            "rows_per_second": round(report.rows_per_second, 1),
            "run_id": report.run_id,
            "refresh": config.refresh,
            "watermark_after": dg.MetadataValue.json(report.watermark_after or {}),
            "schema_fingerprint": watermark.schema_fingerprint or "",
        }
        if report.window is not None:
            metadata["source_rows_in_window"] = report.window.rows
        for bound in ("cursor_min", "cursor_max"):
            if summary[bound] is not None:
                metadata[bound] = dg.MetadataValue.text(summary[bound])
        if report.chunk_limit_reached:
            context.log.warning("stopped at the chunk limit; the next run continues")
        # Evaluated before the output: the watermark check compares with the previous
        # materialisation, which this one's Output would replace.
        results = [
            files_match_manifest(storage, files, report),
            watermark_never_moves_backwards(context, batches_key, report),
            source_schema_unchanged(batches_key, report),
        ]
        yield dg.Output(value=summary, metadata=metadata)
        yield from results

    @dg.asset(
        key=warehouse_asset_key,
        group_name=pipeline,
        kinds={target.type},
        description=(
            f"`{table}` in the {target.type} target `{target_name}` as "
            f"`{target_table}`, loaded exactly once per file from {data_url}."
        ),
        code_version=version,
        partitions_def=partitions_def,
        ins={"batch": dg.AssetIn(key=batches_key)},
        pool=warehouse_pool(target_name),
        # Loads a partition when its batches are materialised (in the latest time window
        # only, as `eager()` does; backfills request their loads themselves).
        automation_condition=dg.AutomationCondition.eager(),
        required_resource_keys={STORAGE_KEY, warehouse_key(target_name)},
        check_specs=warehouse_check_specs(
            warehouse_asset_key, partitioned=partitions_def is not None
        ),
    )
    def redshift(context: dg.AssetExecutionContext, batch: dict[str, Any]) -> dg.MaterializeResult:
        storage_resource: StorageResource = getattr(context.resources, STORAGE_KEY)
        run_config = runtime_config(
            s3rs_config,
            storage=storage_resource,
            warehouses={target_name: getattr(context.resources, warehouse_key(target_name))},
        )
        storage = storage_resource.get_storage()
        refresh_run = _refresh_run(context, run_config, pipeline, table, batch)
        report = load_table(run_config, pipeline, table, refresh_run=refresh_run, storage=storage)
        for warning in report.warnings:
            context.log.warning(warning)
        if not report.ok:
            raise dg.Failure(description=f"loading {pipeline}/{table} failed: {report.error}")
        context.log.info(
            f"loaded {report.rows:,} rows from {report.files} files "
            f"({report.rows_per_second:,.0f} rows/s, {report.write_mode})"
        )
        facts = target_facts(run_config, pipeline, table)
        rows = report.target_rows if report.target_rows is not None else facts.rows
        metadata: dict[str, Any] = {
            "dagster/row_count": rows or 0,
            "files_loaded": report.files,
            "rows_loaded": report.rows,
            "write_mode": report.write_mode,
            "status": report.status,
            "duration_s": round(report.seconds, 3),
            "dagster/relation_identity": facts.table,
        }
        if facts.columns:
            metadata["dagster/column_schema"] = dg.TableSchema(
                columns=[dg.TableColumn(name, str(kind)) for name, kind in facts.columns.items()]
            )
        if report.strays:
            metadata["strays"] = len(report.strays)
        checks = []
        if partitions_def is not None:
            checks.append(window_rows_match_source(run_config, pipeline, table, batch))
        return dg.MaterializeResult(metadata=metadata, check_results=checks)

    return TableAssets(pipeline, table, s3_batches, redshift, partitions_def)


def _refresh_run(
    context: dg.AssetExecutionContext,
    config: Config,
    pipeline: str,
    table: str,
    batch: dict[str, Any],
) -> str | None:
    """The refresh run to load as a window replace, or None for an ordinary load.

    A batch summary stays a refresh after its load; loading it as one again would mark every
    newer file of the window superseded. So it is a refresh only while its files are unloaded
    (the load's dry run says which files it would include).
    """
    if not batch["refresh"]:
        return None
    keys = {file["key"] for file in batch["files"]}
    plan = load_table(config, pipeline, table, dry_run=True, refresh_run=batch["run_id"])
    if plan.ok and not any(d.include and d.key in keys for d in plan.decisions):
        context.log.info(f"the refresh {batch['run_id']} is loaded already; an ordinary load")
        return None
    return batch["run_id"]
