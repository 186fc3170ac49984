"""Read each writer's output back before its time counts: row count and sum of ids.

Parquet on S3 is read with pyarrow's S3FileSystem (the `id` column only); s3rs's output is
read file by file from its manifests (what a load would take); warehouse targets are queried;
a text dump is parsed. The table's ids are 1..N, so the expected sum is N(N+1)/2.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import boto3
import pyarrow.compute as pc
import pyarrow.fs as pafs
import pyarrow.parquet as pq


@dataclass
class Output:
    """What a writer produced, as read back."""

    rows: int
    id_sum: int
    bytes: int
    files: int

    def problem(self, expected_rows: int) -> str | None:
        """None when the output holds ids 1..expected_rows exactly once (by count and sum)."""
        want = expected_rows * (expected_rows + 1) // 2
        if self.rows != expected_rows or self.id_sum != want:
            return (
                f"read back {self.rows:,} rows with id sum {self.id_sum:,}; expected "
                f"{expected_rows:,} rows with id sum {want:,}"
            )
        return None


def s3_client(env: dict[str, str]) -> Any:
    return boto3.client(
        "s3",
        endpoint_url=env["S3_ENDPOINT_URL"],
        aws_access_key_id=env["AWS_ACCESS_KEY_ID"],
        aws_secret_access_key=env["AWS_SECRET_ACCESS_KEY"],
        region_name=env["AWS_REGION"],
    )


def s3_filesystem(env: dict[str, str]) -> pafs.S3FileSystem:
    endpoint = urlparse(env["S3_ENDPOINT_URL"])
    return pafs.S3FileSystem(
        access_key=env["AWS_ACCESS_KEY_ID"],
        secret_key=env["AWS_SECRET_ACCESS_KEY"],
        region=env["AWS_REGION"],
        endpoint_override=endpoint.netloc,
        scheme=endpoint.scheme,
    )


def list_objects(env: dict[str, str], prefix: str) -> list[tuple[str, int]]:
    """(key, size) of every object under a prefix of the stack's bucket."""
    client = s3_client(env)
    found = []
    for page in client.get_paginator("list_objects_v2").paginate(
        Bucket=env["S3_BUCKET"], Prefix=prefix
    ):
        found += [(item["Key"], item["Size"]) for item in page.get("Contents", [])]
    return found


def delete_prefix(env: dict[str, str], prefix: str) -> int:
    client = s3_client(env)
    keys = [key for key, _ in list_objects(env, prefix)]
    for start in range(0, len(keys), 1000):
        client.delete_objects(
            Bucket=env["S3_BUCKET"],
            Delete={"Objects": [{"Key": key} for key in keys[start : start + 1000]]},
        )
    return len(keys)


def _read_ids(filesystem: pafs.FileSystem, paths: list[str]) -> tuple[int, int]:
    rows = 0
    total = 0
    for path in paths:
        with filesystem.open_input_file(path) as handle:
            column = pq.read_table(handle, columns=["id"]).column("id")
        rows += len(column)
        value = pc.sum(column).as_py()
        total += int(value or 0)
    return rows, total


def parquet_prefix(env: dict[str, str], prefix: str) -> Output:
    """Every .parquet object under a prefix."""
    objects = [(key, size) for key, size in list_objects(env, prefix) if key.endswith(".parquet")]
    bucket = env["S3_BUCKET"]
    rows, total = _read_ids(s3_filesystem(env), [f"{bucket}/{key}" for key, _ in objects])
    return Output(rows, total, sum(size for _, size in objects), len(objects))


def s3rs_committed(env: dict[str, str], config_path: Path, pipeline: str, table: str) -> Output:
    """The files s3rs committed (its manifests and watermark), each read back."""
    from s3rs_dagster.adapters.storage import open_storage
    from s3rs_dagster.config import load_config
    from s3rs_dagster.core.manifests import committed_files
    from s3rs_dagster.core.state import WatermarkStore

    config = load_config(config_path, env=env)
    table_key = config.table(pipeline, table)[0]
    storage = open_storage(config.storage)
    watermark, _ = WatermarkStore(
        storage, pipeline, table_key, config.pipeline(pipeline).target
    ).load()
    entries = committed_files(storage, pipeline, table_key, watermark)
    filesystem, base = storage.filesystem()
    rows, total = _read_ids(filesystem, [f"{base}/{entry.key}" for entry in entries])
    return Output(rows, total, sum(entry.bytes for entry in entries), len(entries))


def warehouse_table(
    env: dict[str, str], kind: str, schema: str, table: str, duckdb_path: Path | None = None
) -> Output:
    """COUNT(*) and SUM(id) of the loaded table."""
    sql = f'SELECT COUNT(*), COALESCE(SUM(id), 0) FROM "{schema}"."{table}"'
    if kind == "duckdb":
        import duckdb

        with duckdb.connect(str(duckdb_path), read_only=True) as connection:
            rows, total = connection.execute(sql).fetchone()
    else:
        import psycopg

        database = env["POSTGRES_DATABASE"] if kind == "postgres" else env["REDSHIFT_DATABASE"]
        with psycopg.connect(
            host=env["POSTGRES_HOST"],
            port=int(env["POSTGRES_PORT"]),
            user=env["POSTGRES_USER"],
            password=env["POSTGRES_PASSWORD"],
            dbname=database,
        ) as connection:
            rows, total = connection.execute(sql).fetchone()
    return Output(int(rows), int(total), 0, 0)


def drop_schema(env: dict[str, str], kind: str, schema: str) -> None:
    """Drop a benchmark's schema from the stack's PostgreSQL (or the stand-in's database)."""
    if kind == "duckdb":
        return
    import psycopg

    database = env["POSTGRES_DATABASE"] if kind == "postgres" else env["REDSHIFT_DATABASE"]
    with psycopg.connect(
        host=env["POSTGRES_HOST"],
        port=int(env["POSTGRES_PORT"]),
        user=env["POSTGRES_USER"],
        password=env["POSTGRES_PASSWORD"],
        dbname=database,
        autocommit=True,
    ) as connection:
        connection.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')


def text_dump(path: Path) -> Output:
    """A `mariadb -B` dump: a header line, then one tab-separated row per line, id first."""
    rows = 0
    total = 0
    with path.open("rb") as handle:
        next(handle, None)
        for line in handle:
            rows += 1
            total += int(line[: line.index(b"\t")])
    return Output(rows, total, path.stat().st_size, 1)
