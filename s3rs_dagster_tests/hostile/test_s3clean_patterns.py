"""Hostile `s3rs s3clean clean --pattern` values on the stack's S3: whatever the pattern, only
objects under the table's own folder may be listed or deleted. Objects planted in a sibling
table's folder, a table whose name extends this one's, another pipeline, the storage root, the
state folder and the bucket root outside the storage prefix must all survive, byte for byte."""

from __future__ import annotations

import json
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

import boto3
import pytest

from s3rs_dagster.adapters.storage import open_storage
from s3rs_dagster.config import Config
from s3rs_dagster_tests.conftest import Stack
from s3rs_dagster_tests.core.conftest import MakeConfig, SourceDb
from s3rs_dagster_tests.hostile.conftest import invoke

pytestmark = [pytest.mark.hostile, pytest.mark.stack]

BASE = datetime(2025, 3, 1, 12, 0, 0)
DDL = (
    "CREATE TABLE {name} (id BIGINT PRIMARY KEY, updated_at DATETIME(6) NOT NULL, "
    "note VARCHAR(20), amount DECIMAL(8,2))"
)
# pattern -> must it be refused as a mistake (exit 2)? Otherwise it runs and may delete only
# the table's own files.
PATTERNS: list[tuple[str, bool]] = [
    ("", True),
    ("   ", True),
    ("/", True),
    ("/*", True),
    ("../*", True),
    ("../../other_table/*", True),
    ("dt=*/../../*", True),
    ("..", True),
    ("/etc/passwd", True),
    ("s3://{bucket}/{prefix}/p/{db}.orders_archive/*", True),
    ("{prefix}/p/{db}.orders_archive/*", False),  # a key from the bucket root: matches nothing
    ("p/{db}.orders_archive/dt=*/*", False),  # a sibling's key from the storage root: nothing
    ("p/{db}.orders/dt=*/*", False),  # this table's own key from the root: nothing either
    ("..\\*", False),
    ("[!a]*", False),
    ("*/*/*", False),
    ("*", False),
    ("**", False),
]


def s3_client(stack: Stack) -> Any:
    return boto3.client(
        "s3",
        endpoint_url=stack["S3_ENDPOINT_URL"],
        aws_access_key_id=stack["AWS_ACCESS_KEY_ID"],
        aws_secret_access_key=stack["AWS_SECRET_ACCESS_KEY"],
        region_name=stack["AWS_REGION"],
    )


def bucket_objects(stack: Stack, prefix: str) -> dict[str, str]:
    """key -> ETag of every object under `prefix` in the stack's bucket."""
    client = s3_client(stack)
    found: dict[str, str] = {}
    for page in client.get_paginator("list_objects_v2").paginate(
        Bucket=stack["S3_BUCKET"], Prefix=prefix
    ):
        for item in page.get("Contents", []):
            found[item["Key"]] = item["ETag"]
    return found


def fill(db: SourceDb, table: str, ids: range) -> None:
    db.executemany(
        f"INSERT INTO `{table}` (id, updated_at, note, amount) VALUES (%s, %s, %s, %s)",
        [(i, BASE + timedelta(hours=i * 5), f"n{i}", Decimal(i)) for i in ids],
    )


def storage_prefix(config: Config) -> str:
    return config.storage.prefix


@pytest.mark.slow
def test_hostile_patterns_never_reach_outside_the_tables_folder(
    source_db: SourceDb, make_config: MakeConfig, stack: Stack
) -> None:
    """s3clean clean --pattern '../*', '/', '**', '*', '../../other_table/*', keys, '' ->
    only the table's own files are listed or deleted; planted neighbours survive.

    Every accepted pattern runs as --dry-run (JSON: each listed key must lie in the table's
    folder) and then for real with --force; `..` segments, a leading '/', URLs and empty
    patterns are refused with exit 2 and a message naming the pattern. Afterwards every
    object outside the folder (sibling tables `orders_archive` and `other_table`, another
    pipeline, the storage root, `_state/`, the bucket root outside the storage prefix) has
    the same ETag."""
    for table in ("orders", "orders_archive", "other_table"):
        source_db.execute(DDL.format(name=table))
        fill(source_db, table, range(1, 16))
    options = {"cdc_strategy": "hybrid", "start_date": "2020-01-01"}
    config = make_config(
        {"orders": dict(options), "orders_archive": dict(options), "other_table": dict(options)}
    )
    path = str(config.source_file)
    synced = invoke("--config", path, "sync", "-p", "p")
    assert synced.exit_code == 0, synced.output
    db = source_db.name
    prefix = storage_prefix(config)
    own = f"{prefix}/p/{db}.orders/"
    storage = open_storage(config.storage)
    planted = [
        f"p/{db}.orders_archive/dt=2025-03-01/planted.parquet",
        f"p/{db}.other_table/planted.parquet",
        f"p2/{db}.orders/dt=2025-03-01/planted.parquet",
        "planted_at_storage_root.parquet",
        f"p/{db}.orders.parquet",
        f"p/{db}.orders_x/planted.parquet",
    ]
    for key in planted:
        storage.put_bytes(key, b"must survive")
    root_key = f"{prefix}-outside/planted.parquet"  # in the bucket, outside the storage root
    s3_client(stack).put_object(Bucket=stack["S3_BUCKET"], Key=root_key, Body=b"must survive")
    # A stray of our own under the folder, so that --force has something to take.
    storage.put_bytes(f"p/{db}.orders/dt=2025-03-01/test_stray.parquet", b"stray")
    outside_before = {
        key: etag for key, etag in bucket_objects(stack, prefix).items() if not key.startswith(own)
    }
    assert len(outside_before) > len(planted) + 5, "siblings' files and state are there"
    assert root_key in outside_before

    for raw, refused in PATTERNS:
        pattern = raw.format(bucket=stack["S3_BUCKET"], prefix=prefix, db=db)
        args = ("--config", path, "s3clean", "clean", "-p", "p", "-t", "orders")
        if refused:  # refused before anything is listed: one real run shows it
            done = invoke(*args, "--pattern", pattern, "--force")
            assert done.exit_code == 2, (pattern, done.output)
            assert repr(pattern) in done.output or "is empty" in done.output, done.output
        else:
            preview = invoke(*args, "--pattern", pattern, "--dry-run", "--json-output", "--force")
            assert preview.exit_code == 0, (pattern, preview.output)
            listed = json.loads(preview.stdout)["would_delete"]
            assert all(f"{prefix}/{key}".startswith(own) for key in listed), (pattern, listed)
            done = invoke(*args, "--pattern", pattern, "--force", "--json-output")
            assert done.exit_code == 0, (pattern, done.output)
            deleted = json.loads(done.stdout)["deleted"]
            assert all(f"{prefix}/{key}".startswith(own) for key in deleted), (pattern, deleted)
        outside_now = {
            key: etag
            for key, etag in bucket_objects(stack, prefix).items()
            if not key.startswith(own)
        }
        assert outside_now == outside_before, f"--pattern {pattern!r} touched something outside"

    assert bucket_objects(stack, own) == {}, "'**' took every file of the table itself"
    # The siblings still load and still hold their rows.
    again = invoke("--config", path, "sync", "-p", "p", "-t", "orders_archive")
    assert again.exit_code == 0, again.output
    s3_client(stack).delete_object(Bucket=stack["S3_BUCKET"], Key=root_key)
