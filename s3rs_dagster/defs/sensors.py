"""Per table, a sensor that loads the warehouse when new Parquet files land in S3.

It lists the table's data prefix with `dagster_aws.s3.sensor.get_objects`, keeps a cursor on
(LastModified, key) of the newest object seen, and requests a run of the table's warehouse
asset for each partition (the `dt=` folder) that has new files; the run key is a hash of those
file keys, so a file set is never loaded twice by the sensor. Files extracted by `s3rs sync`
or another Dagster run are caught the same way (the load asset then rebuilds its input from the
manifests). A run requested for files the load already took is harmless: it reports nothing
to do.

Files in a folder that is not a partition of the asset (`dt=none`, NULL cursors; or before
`start_date`) request no run of their own; every load takes every committed file, so the next
run loads them.

No `from __future__ import annotations`: Dagster reads the resource parameter's annotation.

On local storage (the embedded default) the sensor lists the folder through the storage
adapter instead; it reads every file's checksum, so it suits the demo and small set-ups.
"""

import hashlib
import json
from collections import defaultdict
from datetime import datetime, timedelta
from typing import Any

import dagster as dg
from dagster_aws.s3.sensor import get_objects

from s3rs_dagster.config import Config
from s3rs_dagster.core import naming
from s3rs_dagster.defs.assets import TableAssets
from s3rs_dagster.defs.resources import StorageResource

MINIMUM_INTERVAL_SECONDS = 60


def build_sensors(config: Config, tables: list[TableAssets]) -> list[dg.SensorDefinition]:
    """One sensor per table."""
    return [_new_files_sensor(config, assets) for assets in tables]


def sensor_name(pipeline: str, table: str) -> str:
    safe = "".join(c if c.isalnum() or c == "_" else "_" for c in f"{pipeline}__{table}")
    return f"{safe}__new_files"


def partition_of(key: str) -> str | None:
    """The `dt=` value of a data file's key."""
    return next((part[3:] for part in key.split("/") if part.startswith("dt=")), None)


def _new_files_sensor(config: Config, assets: TableAssets) -> dg.SensorDefinition:
    storage_config = config.storage
    table_prefix = naming.table_prefix(assets.pipeline, assets.table)
    root = f"{storage_config.prefix}/" if storage_config.prefix else ""
    prefix = root + table_prefix
    partitions_def = assets.partitions_def

    def objects_since(
        storage: StorageResource, since: datetime | None
    ) -> list[tuple[datetime, str]]:
        """(LastModified, key) of the objects under the table's prefix, from `since` on."""
        if storage_config.is_s3:
            found = get_objects(
                str(storage_config.bucket),
                prefix=prefix,
                # get_objects excludes its bound; objects sharing the cursor's second are
                # kept and filtered on (LastModified, key) by the caller.
                since_last_modified=since - timedelta(microseconds=1) if since else None,
                client=storage.s3.get_client(),
            )
            return [(obj["LastModified"], obj["Key"]) for obj in found]
        listing = storage.get_storage().list(table_prefix)
        return [
            (obj.last_modified, obj.key)
            for obj in listing
            if since is None or obj.last_modified >= since
        ]

    @dg.sensor(
        name=sensor_name(assets.pipeline, assets.table),
        target=[assets.warehouse.key],
        minimum_interval_seconds=MINIMUM_INTERVAL_SECONDS,
        description=f"Loads {assets.pipeline}/{assets.table} when new files land in {prefix}.",
    )
    def new_files(
        # The parameter's name is the resource key (resources.STORAGE_KEY).
        context: dg.SensorEvaluationContext,
        s3rs_storage: StorageResource,
    ) -> dg.SensorResult:
        position = _read_cursor(context.cursor)
        new = [
            (modified, key)
            for modified, key in objects_since(s3rs_storage, position[0] if position else None)
            if key.endswith(".parquet") and (position is None or (modified, key) > position)
        ]
        if not new:
            return dg.SensorResult(skip_reason="no new files")
        by_partition: dict[str | None, list[str]] = defaultdict(list)
        for _, key in new:
            partition = partition_of(key) if partitions_def is not None else None
            by_partition[partition].append(key)
        requests = []
        for partition, keys in sorted(by_partition.items(), key=lambda item: str(item[0])):
            if partitions_def is not None and not (
                partition and partitions_def.has_partition_key(partition)
            ):
                context.log.info(
                    f"{len(keys)} new file(s) in dt={partition}, not a partition: "
                    "the next load takes them"
                )
                continue
            run_key = hashlib.sha256("\n".join(sorted(keys)).encode()).hexdigest()[:32]
            requests.append(dg.RunRequest(run_key=run_key, partition_key=partition))
        return dg.SensorResult(run_requests=requests, cursor=_write_cursor(max(new)))

    return new_files


def _read_cursor(cursor: str | None) -> tuple[datetime, str] | None:
    if not cursor:
        return None
    data: dict[str, Any] = json.loads(cursor)
    return datetime.fromisoformat(data["last_modified"]), data["key"]


def _write_cursor(position: tuple[datetime, str]) -> str:
    return json.dumps({"last_modified": position[0].isoformat(), "key": position[1]})
