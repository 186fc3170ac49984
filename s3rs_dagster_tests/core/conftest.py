"""Fixtures for core tests: a private MySQL database and storage prefix per test, a config
pointing at them, and a reader that returns every row the extract stage committed."""

from __future__ import annotations

import io
import json
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pymysql
import pytest
import yaml

from s3rs_dagster.adapters.storage import Storage, open_storage
from s3rs_dagster.config import Config, parse_config
from s3rs_dagster.core import naming
from s3rs_dagster.core.manifests import committed_files as list_committed
from s3rs_dagster.core.state import WatermarkStore
from s3rs_dagster_tests.conftest import Stack


@dataclass
class SourceDb:
    """A private database on the stack's MariaDB, dropped after the test."""

    name: str
    connection: pymysql.connections.Connection

    def execute(self, sql: str, params: Any = None) -> list[tuple[Any, ...]]:
        with self.connection.cursor() as cursor:
            cursor.execute(sql, params)
            return list(cursor.fetchall())

    def executemany(self, sql: str, rows: list[tuple[Any, ...]]) -> None:
        with self.connection.cursor() as cursor:
            cursor.executemany(sql, rows)


@pytest.fixture
def source_db(stack: Stack) -> Iterator[SourceDb]:
    name = f"s3rs_t_{uuid.uuid4().hex[:10]}"
    connection = pymysql.connect(
        host=stack["MYSQL_HOST"],
        port=int(stack["MYSQL_PORT"]),
        user=stack["MYSQL_USER"],
        password=stack["MYSQL_PASSWORD"],
        autocommit=True,
        charset="utf8mb4",
    )
    with connection.cursor() as cursor:
        cursor.execute(f"CREATE DATABASE `{name}`")
        cursor.execute(f"USE `{name}`")
        cursor.execute("SET time_zone = '+00:00'")
    try:
        yield SourceDb(name, connection)
    finally:
        with connection.cursor() as cursor:
            cursor.execute(f"DROP DATABASE IF EXISTS `{name}`")
        connection.close()


MakeConfig = Callable[..., Config]


@pytest.fixture
def make_config(stack: Stack, source_db: SourceDb, tmp_path: Path) -> MakeConfig:
    """Build a validated Config for one pipeline 'p' over the test's database."""
    prefix = f"test-extract/{uuid.uuid4().hex[:10]}"
    schema = f"t_{uuid.uuid4().hex[:10]}"

    def target_config(kind: str, schema: str) -> dict[str, Any]:
        if kind == "duckdb":
            return {"type": "duckdb", "path": str(tmp_path / "wh.duckdb"), "schema": schema}
        if kind == "postgres":
            return {
                "type": "postgres",
                "host": "${POSTGRES_HOST}",
                "port": "${POSTGRES_PORT}",
                "database": "${POSTGRES_DATABASE}",
                "username": "${POSTGRES_USER}",
                "password": "${POSTGRES_PASSWORD}",
                "schema": schema,
                "sslmode": "disable",
            }
        return {
            "type": "redshift",
            "host": "${REDSHIFT_HOST}",
            "port": "${REDSHIFT_PORT}",
            "database": "${REDSHIFT_DATABASE}",
            "username": "${REDSHIFT_USER}",
            "password": "${REDSHIFT_PASSWORD}",
            "iam_role": "${REDSHIFT_IAM_ROLE}",
            "schema": schema,
            "sslmode": "disable",
        }

    def build(
        tables: dict[str, dict[str, Any]],
        *,
        via_ssh: bool = False,
        local_storage: bool = False,
        processing: dict[str, Any] | None = None,
        source_extra: dict[str, Any] | None = None,
        target: str = "duckdb",
    ) -> Config:
        source: dict[str, Any] = {
            "host": "${MYSQL_HOST}",
            "port": "${MYSQL_PORT}",
            "database": source_db.name,
            "username": "${MYSQL_USER}",
            "password": "${MYSQL_PASSWORD}",
            **(source_extra or {}),
        }
        if via_ssh:
            source["ssh_tunnel"] = {
                "enabled": True,
                "host": "${SSH_BASTION_HOST}",
                "port": "${SSH_BASTION_PORT}",
                "username": "${SSH_BASTION_USER}",
                "private_key_path": "${SSH_BASTION_KEY_PATH}",
            }
        storage = (
            {"url": str(tmp_path / "lake")}
            if local_storage
            else {
                "url": f"s3://${{S3_BUCKET}}/{prefix}",
                "endpoint_url": "${S3_ENDPOINT_URL}",
                "region": "${AWS_REGION}",
            }
        )
        document = {
            "connections": {
                "sources": {"src": source},
                "targets": {"wh": target_config(target, schema)},
            },
            "storage": storage,
            "pipelines": {
                "p": {
                    "source": "src",
                    "target": "wh",
                    "processing": processing or {},
                    "tables": {
                        (key if "." in key else f"{source_db.name}.{key}"): value
                        for key, value in tables.items()
                    },
                }
            },
        }
        text = yaml.safe_dump(document, sort_keys=False)
        (tmp_path / "pipelines.yaml").write_text(text)
        return parse_config(text, file=tmp_path / "pipelines.yaml", env=stack.env)

    return build


def committed_files(storage: Storage, pipeline: str, table: str) -> list[dict[str, Any]]:
    """Every file entry the extract stage committed, as JSON-like dicts."""
    watermark, _ = WatermarkStore(storage, pipeline, table, "wh").load()
    return [
        entry.model_dump(mode="json")
        for entry in list_committed(storage, pipeline, table, watermark)
    ]


def watermark_document(storage: Storage, pipeline: str, table: str) -> dict[str, Any] | None:
    keys = {info.key for info in storage.list(naming.state_prefix(pipeline, table))}
    key = naming.watermark_key(pipeline, table)
    return json.loads(storage.get_bytes(key)[0]) if key in keys else None


def read_committed(config: Config, table: str, pipeline: str = "p") -> pa.Table:
    """All rows of all committed files of a table, as one Arrow table."""
    storage = open_storage(config.storage)
    tables = [
        pq.read_table(io.BytesIO(storage.get_bytes(entry["key"])[0]))
        for entry in committed_files(storage, pipeline, table)
    ]
    if not tables:
        return pa.table({})
    return pa.concat_tables(tables)
