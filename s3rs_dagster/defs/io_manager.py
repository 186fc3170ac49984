"""The IO manager of the s3_batches assets: batch summaries as JSON next to the table's state.

An s3_batches output is a small summary of what one extraction committed (run id, partition,
refresh flag, files with rows and bytes, cursor range), never the data: the data files are
already in storage and listed in the manifests. It is written to
`_state/{pipeline}/{table}/dagster/{partition or 'all'}.json` and read back as the warehouse
asset's input. When it is missing (the files came from `s3rs sync`, or a crash came between a
file's commit and this write) it is rebuilt from the manifests, which are the authority.
"""

from __future__ import annotations

import json
from typing import Any

import dagster as dg

from s3rs_dagster.adapters.storage import ObjectNotFound, Storage
from s3rs_dagster.config import Config, load_config
from s3rs_dagster.core import naming
from s3rs_dagster.core.manifests import committed_files
from s3rs_dagster.core.state import Cursor, FileEntry, WatermarkStore
from s3rs_dagster.defs.resources import StorageResource

UNPARTITIONED = "all"


def cursor_text(cursor: Cursor | None) -> str | None:
    """A cursor as one line of text: 'timestamp | key, ...'."""
    if cursor is None:
        return None
    return " | ".join(part for part in (cursor.timestamp, ", ".join(cursor.key)) if part)


def batch_summary(
    run_id: str | None, partition: str | None, refresh: bool, files: list[FileEntry]
) -> dict[str, Any]:
    """The JSON summary of a batch of committed files (in commit order)."""
    return {
        "run_id": run_id,
        "partition": partition,
        "refresh": refresh,
        "files": [{"key": f.key, "rows": f.rows, "bytes": f.bytes} for f in files],
        "rows": sum(f.rows for f in files),
        "bytes": sum(f.bytes for f in files),
        "cursor_min": cursor_text(files[0].cursor_min) if files else None,
        "cursor_max": cursor_text(files[-1].cursor_max) if files else None,
    }


def summary_key(pipeline: str, table: str, partition: str | None) -> str:
    return f"{naming.state_prefix(pipeline, table)}dagster/{partition or UNPARTITIONED}.json"


def rebuild_summary(
    config: Config, storage: Storage, pipeline: str, table: str, partition: str | None
) -> dict[str, Any]:
    """The summary of the newest extraction run of a partition (or of the table), from the
    manifests; never a refresh, since whether a refresh's window was loaded is not known here."""
    watermark, _ = WatermarkStore(storage, pipeline, table, config.pipeline(pipeline).target).load()
    files = committed_files(storage, pipeline, table, watermark)
    if partition is not None:
        files = [entry for entry in files if entry.partition == partition]
    run_id = files[-1].run_id if files else None
    return batch_summary(
        run_id, partition, False, [entry for entry in files if entry.run_id == run_id]
    )


class BatchSummaryIOManager(dg.ConfigurableIOManager):
    """Stores s3_batches outputs as JSON in the project's storage (see the module docstring),
    through the storage resource, so S3 settings and credentials are configured once."""

    storage: StorageResource
    config_path: str | None = None
    """pipelines.yaml (for the tables' targets); None: $S3RS_CONFIG, else ./pipelines.yaml."""

    def handle_output(self, context: dg.OutputContext, obj: dict[str, Any]) -> None:
        pipeline, table = context.asset_key.path[:2]
        partition = context.partition_key if context.has_partition_key else None
        key = summary_key(pipeline, table, partition)
        body = json.dumps(obj, indent=2, ensure_ascii=False).encode()
        storage = self.storage.get_storage()
        storage.put_bytes(key, body, content_type="application/json")
        context.add_output_metadata({"summary": dg.MetadataValue.path(storage.uri(key))})

    def load_input(self, context: dg.InputContext) -> dict[str, Any]:
        pipeline, table = context.asset_key.path[:2]
        partition = context.asset_partition_key if context.has_asset_partitions else None
        storage = self.storage.get_storage()
        try:
            return json.loads(storage.get_bytes(summary_key(pipeline, table, partition))[0])
        except ObjectNotFound:
            context.log.info(
                f"no batch summary for {pipeline}/{table} "
                f"{partition or UNPARTITIONED}; rebuilt from the manifests"
            )
            config = load_config(self.config_path)
            return rebuild_summary(config, storage, pipeline, table, partition)
