"""Run the stages over the tables of a pipeline: one by one, or in parallel as `processing` says."""

from __future__ import annotations

from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from s3rs_dagster.adapters.storage import Storage, open_storage
from s3rs_dagster.config import Config
from s3rs_dagster.core.extract import ExtractReport, ProgressCallback, extract_table
from s3rs_dagster.core.load import LoadReport, load_table
from s3rs_dagster.core.target import check_target_names


@dataclass
class TableRun:
    """One table's part of a sync: the extract report, the load report, or both."""

    table: str
    extract: ExtractReport | None = None
    load: LoadReport | None = None

    @property
    def ok(self) -> bool:
        return all(report.ok for report in (self.extract, self.load) if report is not None)


def sync_pipeline(
    config: Config,
    pipeline: str,
    tables: Sequence[str] | None = None,
    *,
    extract: bool = True,
    load: bool = True,
    limit: int | None = None,
    max_chunks: int | None = None,
    dry_run: bool = False,
    adopt_strays: bool = False,
    storage: Storage | None = None,
    progress: ProgressCallback | None = None,
) -> list[TableRun]:
    """Extract and/or load the named tables (default: all of the pipeline's), in order.

    A table whose extraction failed is still loaded: the files it committed before are
    complete and loading them is safe; the run reports the failure either way.
    """
    pipeline_config = config.pipeline(pipeline)
    check_target_names(config, [pipeline])
    names = [config.table(pipeline, name)[0] for name in (tables or pipeline_config.tables)]
    storage = storage or open_storage(config.storage)

    def one(table: str) -> TableRun:
        run = TableRun(table)
        if extract:
            run.extract = extract_table(
                config,
                pipeline,
                table,
                limit=limit,
                max_chunks=max_chunks,
                dry_run=dry_run,
                storage=storage,
                progress=progress,
            )
        if load:
            run.load = load_table(
                config,
                pipeline,
                table,
                dry_run=dry_run,
                adopt_strays=adopt_strays,
                storage=storage,
            )
        return run

    processing = pipeline_config.processing
    if processing.strategy == "sequential" or len(names) == 1:
        return [one(table) for table in names]
    with ThreadPoolExecutor(max_workers=processing.max_parallel_tables) as pool:
        return list(pool.map(one, names))


def extract_pipeline(
    config: Config, pipeline: str, tables: Sequence[str] | None = None, **options: object
) -> list[ExtractReport]:
    """Extract only (`sync --backup-only`): one report per table."""
    runs = sync_pipeline(config, pipeline, tables, load=False, **options)  # type: ignore[arg-type]
    return [run.extract for run in runs if run.extract is not None]
