"""Reading a table's committed files and its objects together, on local storage."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

from s3rs_dagster.adapters.storage import LocalStorage
from s3rs_dagster.core import naming
from s3rs_dagster.core.manifests import (
    committed_files,
    committed_files_and_objects,
    write_manifest,
)
from s3rs_dagster.core.state import FileEntry, Watermark

PIPELINE, TABLE = "p", "db.orders"


def entry(storage: LocalStorage, name: str, minutes: int) -> FileEntry:
    key = f"{naming.table_prefix(PIPELINE, TABLE)}dt=2025-01-01/{name}.parquet"
    storage.put_bytes(key, b"parquet")
    return FileEntry(
        key=key,
        uri=storage.uri(key),
        rows=1,
        bytes=7,
        schema_fingerprint="f",
        partition="2025-01-01",
        run_id="r",
        created_at=datetime(2025, 1, 1, tzinfo=UTC) + timedelta(minutes=minutes),
    )


def test_committed_files_and_objects_equal_committed_files_and_the_listing(
    tmp_path: Path,
) -> None:
    storage = LocalStorage(tmp_path)
    first, second, pending = (entry(storage, name, i) for i, name in enumerate("abc"))
    write_manifest(storage, PIPELINE, TABLE, "r1", 1, [second])
    write_manifest(storage, PIPELINE, TABLE, "r2", 1, [first, second])
    stray = f"{naming.table_prefix(PIPELINE, TABLE)}stray.parquet"
    storage.put_bytes(stray, b"x")
    watermark = Watermark(pipeline=PIPELINE, table=TABLE, target="t", pending_files=[pending])

    files, objects = committed_files_and_objects(storage, PIPELINE, TABLE, watermark)

    assert files == committed_files(storage, PIPELINE, TABLE, watermark)
    assert [file.key for file in files] == [first.key, second.key, pending.key]
    assert sorted(objects) == sorted([first.key, second.key, pending.key, stray])
    assert objects == {
        info.key: info for info in storage.list(naming.table_prefix(PIPELINE, TABLE))
    }
