"""Run a stage over the tables of a pipeline: one by one, or in parallel as `processing` says."""

from __future__ import annotations

from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor

from s3rs_dagster.adapters.storage import Storage, open_storage
from s3rs_dagster.config import Config
from s3rs_dagster.core.extract import ExtractReport, ProgressCallback, extract_table


def extract_pipeline(
    config: Config,
    pipeline: str,
    tables: Sequence[str] | None = None,
    *,
    limit: int | None = None,
    max_chunks: int | None = None,
    dry_run: bool = False,
    storage: Storage | None = None,
    progress: ProgressCallback | None = None,
) -> list[ExtractReport]:
    """Extract the named tables (default: all of the pipeline's), one report each, in order."""
    pipeline_config = config.pipeline(pipeline)
    names = [config.table(pipeline, name)[0] for name in (tables or pipeline_config.tables)]
    storage = storage or open_storage(config.storage)

    def one(table: str) -> ExtractReport:
        return extract_table(
            config,
            pipeline,
            table,
            limit=limit,
            max_chunks=max_chunks,
            dry_run=dry_run,
            storage=storage,
            progress=progress,
        )

    processing = pipeline_config.processing
    if processing.strategy == "sequential" or len(names) == 1:
        return [one(table) for table in names]
    with ThreadPoolExecutor(max_workers=processing.max_parallel_tables) as pool:
        return list(pool.map(one, names))
