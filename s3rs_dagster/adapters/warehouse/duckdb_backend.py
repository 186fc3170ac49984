"""DuckDB: the embedded warehouse. Staging is filled by DuckDB's own Parquet reader.

DuckDB reads the files itself (`read_parquet` over a list of local files, in parallel and
without Python in the way), a batch of files per INSERT. Files in S3 are first copied to a
temporary folder, several at once and ahead of the INSERTs, and removed after their batch; the
embedded database has no S3 access of its own (httpfs is an extension it would download).

Memory is bounded by DuckDB's `memory_limit` (the target's setting): staging, the merge's
window and joins spill to DuckDB's temporary folder beyond it, so a load of 10M rows needs no
more memory than one of 2M. `preserve_insertion_order = false` lets inserts and joins run
without keeping row order, which nothing here relies on (every read-back orders explicitly).
"""

from __future__ import annotations

import tempfile
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import duckdb
import pyarrow.fs as pafs

from s3rs_dagster.adapters.storage import Storage
from s3rs_dagster.adapters.warehouse.base import (
    FETCH_THREADS,
    LoadError,
    Session,
    StagedFile,
    Warehouse,
    WarehouseError,
    prefetched,
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

INSERT_BYTES = 16 * 1024 * 1024
"""Parquet bytes per INSERT ... FROM read_parquet: enough files for DuckDB to read in parallel,
few enough that the temporary copies stay small."""
_COPY_CHUNK = 1024 * 1024


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
        columns = ", ".join(quote(name) for name, _ in fields)
        insert = f"INSERT INTO {quote(staging)} ({columns}) SELECT {columns} FROM read_parquet(?)"
        filesystem, base = storage.filesystem()
        rows = 0
        with tempfile.TemporaryDirectory(prefix="s3rs-duckdb-") as folder:

            def local_copy(file: StagedFile) -> Path:
                source = f"{base}/{file.key}"
                if isinstance(filesystem, pafs.LocalFileSystem):
                    return Path(source)
                path = Path(folder) / f"{len(file.key)}-{file.key.replace('/', '_')}"
                try:
                    with filesystem.open_input_stream(source) as stream, path.open("wb") as out:
                        while chunk := stream.read(_COPY_CHUNK):
                            out.write(chunk)
                except OSError as exc:
                    raise LoadError(f"cannot read {file.uri}: {exc}") from None
                return path

            batch: dict[Path, StagedFile] = {}
            size = 0
            copies = prefetched(files, local_copy, ahead=4 * FETCH_THREADS)
            for index, (file, path) in enumerate(copies):
                batch[path] = file
                size += file.size
                if size >= INSERT_BYTES or index == len(files) - 1:
                    rows += self._insert(insert, batch, temporary=Path(folder))
                    batch, size = {}, 0
        return rows

    def _insert(self, insert: str, batch: dict[Path, StagedFile], *, temporary: Path) -> int:
        """One INSERT of a batch of local files; their temporary copies are removed after."""
        try:
            counted = self.connection.execute(insert, [[str(path) for path in batch]]).fetchone()
        except duckdb.Error as exc:
            message = str(exc)
            for path, file in batch.items():
                message = message.replace(str(path), file.uri)
            uris = [file.uri for file in batch.values()]
            shown = ", ".join(uris[:3]) + (f" and {len(uris) - 3} more" if len(uris) > 3 else "")
            raise LoadError(f"DuckDB refused a file of {shown}: {message}") from None
        finally:
            for path in batch:
                if path.is_relative_to(temporary):
                    path.unlink(missing_ok=True)
        return int(counted[0]) if counted else 0


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
            connection.execute("SET memory_limit = ?", [self.config.memory_limit])
            connection.execute("SET preserve_insertion_order = false")
        except duckdb.Error as exc:
            raise WarehouseError(f"cannot open {self.description}: {exc}") from None
        session = DuckdbSession(connection)
        try:
            yield session
        finally:
            session.rollback()
            connection.close()
