"""Config building and target reading for the reliability tests: any endpoint can be routed
through a FaultProxy, and the target is read with the warehouse's own driver."""

from __future__ import annotations

import sys
import uuid
from collections.abc import Sequence
from datetime import datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import duckdb
import yaml

from s3rs_dagster.config import Config, parse_config
from s3rs_dagster_tests.conftest import Stack
from s3rs_dagster_tests.core.conftest import SourceDb

ORDERS_DDL = """
CREATE TABLE orders (
  id BIGINT PRIMARY KEY,
  updated_at DATETIME(6) NOT NULL,
  amount DECIMAL(12,2),
  note VARCHAR(60) NULL,
  KEY by_updated (updated_at, id)
)
"""
HYBRID = {"cdc_strategy": "hybrid", "start_date": "2020-01-01"}
BASE_TIME = datetime(2025, 3, 1, 12, 0, 0)


def upsert(db: SourceDb, ids: Sequence[int], when: datetime, note: str) -> None:
    db.executemany(
        "INSERT INTO orders (id, updated_at, amount, note) VALUES (%s, %s, %s, %s) "
        "ON DUPLICATE KEY UPDATE updated_at = VALUES(updated_at), amount = VALUES(amount), "
        "note = VALUES(note)",
        [(i, when + timedelta(microseconds=i), Decimal(i) / 7, f"{note} {i}") for i in ids],
    )


def build_config(
    stack: Stack,
    db: SourceDb,
    folder: Path,
    tables: dict[str, dict[str, Any]],
    *,
    target: str = "postgres",
    source: dict[str, Any] | None = None,
    storage: dict[str, Any] | None = None,
    warehouse: dict[str, Any] | None = None,
    processing: dict[str, Any] | None = None,
) -> Config:
    """A config for pipeline 'p' over `db`; the dicts override (e.g. a proxy's port)."""
    schema = f"r_{uuid.uuid4().hex[:10]}"
    if target == "duckdb":
        target_doc: dict[str, Any] = {
            "type": "duckdb",
            "path": str(folder / "wh.duckdb"),
            "schema": schema,
        }
    else:
        prefix = "POSTGRES" if target == "postgres" else "REDSHIFT"
        target_doc = {
            "type": target,
            "host": f"${{{prefix}_HOST}}",
            "port": f"${{{prefix}_PORT}}",
            "database": f"${{{prefix}_DATABASE}}",
            "username": f"${{{prefix}_USER}}",
            "password": f"${{{prefix}_PASSWORD}}",
            "schema": schema,
            "sslmode": "disable",
        }
        if target == "redshift":
            target_doc["iam_role"] = "${REDSHIFT_IAM_ROLE}"
    document = {
        "connections": {
            "sources": {
                "src": {
                    "host": "${MYSQL_HOST}",
                    "port": "${MYSQL_PORT}",
                    "database": db.name,
                    "username": "${MYSQL_USER}",
                    "password": "${MYSQL_PASSWORD}",
                    **(source or {}),
                }
            },
            "targets": {"wh": {**target_doc, **(warehouse or {})}},
        },
        "storage": storage
        or {
            "url": f"s3://${{S3_BUCKET}}/reliability/{uuid.uuid4().hex[:10]}",
            "endpoint_url": "${S3_ENDPOINT_URL}",
            "region": "${AWS_REGION}",
        },
        "pipelines": {
            "p": {
                "source": "src",
                "target": "wh",
                # Faults are injected after N files of cursor-order chunks.
                "processing": {"initial_snapshot": "off", **(processing or {})},
                "tables": {
                    (key if "." in key else f"{db.name}.{key}"): value
                    for key, value in tables.items()
                },
            }
        },
    }
    text = yaml.safe_dump(document, sort_keys=False)
    (folder / "pipelines.yaml").write_text(text)
    return parse_config(text, file=folder / "pipelines.yaml", env=stack.env)


def cli_command(folder: Path, *args: str) -> list[str]:
    config = str(folder / "pipelines.yaml")
    return [sys.executable, "-m", "s3rs_dagster", "--config", config, *args]


def _connect(config: Config, stack: Stack) -> Any:
    target = config.connections.targets["wh"]
    if target.type == "duckdb":
        return duckdb.connect(str(target.path))
    database = (
        stack["POSTGRES_DATABASE"] if target.type == "postgres" else stack["REDSHIFT_DATABASE"]
    )
    return stack.postgres(database)


def target_query(config: Config, stack: Stack, sql: str) -> list[tuple[Any, ...]]:
    connection = _connect(config, stack)
    try:
        return [tuple(row) for row in connection.execute(sql).fetchall()]
    finally:
        connection.close()


def drop_target_schema(config: Config, stack: Stack) -> None:
    target = config.connections.targets["wh"]
    if target.type != "duckdb":
        connection = _connect(config, stack)
        try:
            connection.execute(f'DROP SCHEMA IF EXISTS "{target.schema_}" CASCADE')
            connection.commit()
        finally:
            connection.close()


def assert_target_equals_source(config: Config, stack: Stack, db: SourceDb) -> None:
    """Same keys, same versions (updated_at, note), no key twice, no file in the ledger twice."""
    schema = config.connections.targets["wh"].schema_
    target = target_query(
        config, stack, f'SELECT id, updated_at, note FROM "{schema}"."orders" ORDER BY id'
    )
    ids = [row[0] for row in target]
    assert len(ids) == len(set(ids)), "a primary key appears twice in the target"
    source = db.execute("SELECT id, updated_at, note FROM orders ORDER BY id")
    assert [tuple(row) for row in target] == [tuple(row) for row in source]
    twice = target_query(
        config,
        stack,
        f'SELECT file_key, COUNT(*) FROM "{schema}".s3rs_loaded_files GROUP BY file_key '
        "HAVING COUNT(*) > 1",
    )
    assert twice == [], f"files in the ledger twice: {twice}"
