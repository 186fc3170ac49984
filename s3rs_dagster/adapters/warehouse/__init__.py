"""Warehouses: one interface, three backends (redshift, postgres, duckdb).

The load stage speaks plain SQL that all three accept (CREATE TEMP TABLE ... AS, DELETE ...
USING, INSERT ... SELECT, ROW_NUMBER() OVER) with double-quoted identifiers. What differs is
isolated in the backends and named: how a staging table is filled from Parquet files (Redshift
COPY from an S3 manifest; PostgreSQL COPY FROM STDIN; DuckDB from Arrow), how a type is spelled,
how existing columns are read back, how a column is widened, and how DDL runs outside a
transaction where Redshift demands it.
"""

from __future__ import annotations

from s3rs_dagster.adapters.warehouse.base import (
    ConnectionLost,
    LoadError,
    Session,
    StagedFile,
    Warehouse,
    WarehouseError,
    quote,
)
from s3rs_dagster.adapters.warehouse.types import WarehouseType
from s3rs_dagster.config import (
    DuckdbTargetConfig,
    PostgresTargetConfig,
    RedshiftTargetConfig,
    StorageConfig,
)


def open_warehouse(
    name: str,
    config: RedshiftTargetConfig | PostgresTargetConfig | DuckdbTargetConfig,
    storage: StorageConfig,
) -> Warehouse:
    """The backend for a configured target (imported lazily: each has its own driver)."""
    if isinstance(config, DuckdbTargetConfig):
        from s3rs_dagster.adapters.warehouse.duckdb_backend import DuckdbWarehouse

        return DuckdbWarehouse(name, config)
    if isinstance(config, PostgresTargetConfig):
        from s3rs_dagster.adapters.warehouse.postgres_backend import PostgresWarehouse

        return PostgresWarehouse(name, config)
    from s3rs_dagster.adapters.warehouse.redshift_backend import RedshiftWarehouse

    return RedshiftWarehouse(name, config, storage)


__all__ = [
    "ConnectionLost",
    "LoadError",
    "Session",
    "StagedFile",
    "Warehouse",
    "WarehouseError",
    "WarehouseType",
    "open_warehouse",
    "quote",
]
