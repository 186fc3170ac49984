"""DuckDB: the embedded warehouse. Staging is filled straight from Arrow record batches."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import duckdb
import pyarrow.parquet as pq

from s3rs_dagster.adapters.storage import Storage
from s3rs_dagster.adapters.warehouse.base import (
    LoadError,
    Session,
    StagedFile,
    Warehouse,
    WarehouseError,
    quote,
)
from s3rs_dagster.adapters.warehouse.types import WarehouseType
from s3rs_dagster.config import DuckdbTargetConfig

_SPELLING = {
    "VARCHAR": "VARCHAR",
    "VARBYTE": "BLOB",
    "SUPER": "VARCHAR",
    "DOUBLE PRECISION": "DOUBLE",
    "TIMESTAMPTZ": "TIMESTAMP WITH TIME ZONE",
}
_READ_BACK = {
    "BLOB": "VARBYTE",
    "DOUBLE": "DOUBLE PRECISION",
    "FLOAT": "REAL",
    "TIMESTAMP WITH TIME ZONE": "TIMESTAMPTZ",
}


class DuckdbSession(Session):
    placeholder = "?"

    def __init__(self, connection: duckdb.DuckDBPyConnection) -> None:
        self.connection = connection
        self.in_transaction = False

    def execute(self, sql: str, params: Sequence[Any] = ()) -> None:
        try:
            self.connection.execute(sql, list(params))
        except duckdb.Error as exc:
            raise WarehouseError(f"DuckDB refused a statement: {exc}") from None

    def query(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        try:
            return self.connection.execute(sql, list(params)).fetchall()
        except duckdb.Error as exc:
            raise WarehouseError(f"DuckDB refused a query: {exc}") from None

    def begin(self) -> None:
        self.execute("BEGIN TRANSACTION")
        self.in_transaction = True

    def commit(self) -> None:
        if self.in_transaction:
            self.execute("COMMIT")
            self.in_transaction = False

    def rollback(self) -> None:
        if self.in_transaction:
            self.in_transaction = False
            self.connection.execute("ROLLBACK")

    def ddl(self, sql: str) -> None:
        self.execute(sql)

    def type_sql(self, kind: WarehouseType) -> str:
        if kind.name in ("VARCHAR", "VARBYTE", "SUPER"):
            return _SPELLING[kind.name]
        return _SPELLING.get(kind.name, str(kind))

    def columns(self, schema: str, table: str) -> dict[str, WarehouseType] | None:
        rows = self.query(
            "SELECT column_name, data_type FROM information_schema.columns "
            "WHERE table_schema = ? AND table_name = ? ORDER BY ordinal_position",
            (schema, table),
        )
        if not rows:
            return None
        return {name: WarehouseType.parse(_READ_BACK.get(kind, kind)) for name, kind in rows}

    def fill(
        self,
        staging: str,
        fields: Sequence[tuple[str, WarehouseType]],
        files: Sequence[StagedFile],
        storage: Storage,
    ) -> int:
        filesystem, base = storage.filesystem()
        rows = 0
        for file in files:
            try:
                with filesystem.open_input_file(f"{base}/{file.key}") as handle:
                    reader = pq.ParquetFile(handle)
                    for batch in reader.iter_batches(batch_size=65_536):
                        self.connection.register("s3rs_batch", batch)
                        try:
                            self.connection.execute(
                                f"INSERT INTO {quote(staging)} SELECT * FROM s3rs_batch"
                            )
                        finally:
                            self.connection.unregister("s3rs_batch")
                        rows += batch.num_rows
            except duckdb.Error as exc:
                raise LoadError(f"DuckDB refused {file.uri}: {exc}") from None
            except OSError as exc:
                raise LoadError(f"cannot read {file.uri}: {exc}") from None
        return rows


class DuckdbWarehouse(Warehouse):
    kind = "duckdb"

    def __init__(self, name: str, config: DuckdbTargetConfig) -> None:
        super().__init__(name, config.schema_)
        self.config = config

    @property
    def description(self) -> str:
        return f"duckdb target '{self.name}' ({self.config.path})"

    @contextmanager
    def connect(self, *, read_only: bool = False) -> Iterator[DuckdbSession]:
        path = self.config.path
        try:
            if read_only:
                # A dry run must not create the database file; a missing one holds nothing.
                connection = duckdb.connect(str(path) if path.exists() else ":memory:")
            else:
                path.parent.mkdir(parents=True, exist_ok=True)
                connection = duckdb.connect(str(path))
        except duckdb.Error as exc:
            raise WarehouseError(f"cannot open {self.description}: {exc}") from None
        session = DuckdbSession(connection)
        try:
            yield session
        finally:
            session.rollback()
            connection.close()
