"""DuckDB: the embedded warehouse. The staged batch is a view over its Parquet files.

DuckDB reads the files itself: the staging table is a temporary view, `read_parquet` over the
batch's files cast to the warehouse types, which the merge statements scan where they need it
(DuckDB's reader is parallel, and reads only the columns a statement uses), so nothing is staged
in memory. A first load into an empty target skips the view: one INSERT reads the files into
the target (`fill`), and the load deduplicates repeated keys in place only when a
COUNT(DISTINCT) over the stored keys finds any; staged, the files were read three times (the
key count, the merge's DELETE, its INSERT).

Files in S3 are first copied to a temporary folder, several at once, which the session removes
when it closes: a load needs local disk for its Parquet files (compressed, ~20 bytes a
row for the benchmark's orders); the embedded database has no S3 access of its own (httpfs is an
extension it would download).

Memory is bounded by DuckDB's `memory_limit` (the target's setting): the merge's joins and
window spill to DuckDB's temporary folder beyond it, so a load of 10M rows needs no more memory
than one of 2M. `preserve_insertion_order = false` lets inserts and joins run without keeping
row order, which nothing here relies on (every read-back orders explicitly).
"""

from __future__ import annotations

import hashlib
import logging
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

logger = logging.getLogger(__name__)

_COPY_CHUNK = 1024 * 1024
_GLOB = frozenset("*?[")
"""read_parquet expands these in a path; a local file whose path has one is copied first."""


class DuckdbSession(Session):
    placeholder = "?"

    def __init__(self, connection: duckdb.DuckDBPyConnection) -> None:
        self.connection = connection
        self.in_transaction = False
        self.scratch: tempfile.TemporaryDirectory[str] | None = None
        """Local copies of staged files from S3, for the session's life."""
        self.copies: dict[str, str] = {}
        """Local path -> storage URI of each staged file, so errors name the file itself."""

    def execute(self, sql: str, params: Sequence[Any] = ()) -> None:
        try:
            self.connection.execute(sql, list(params))
        except duckdb.Error as exc:
            raise WarehouseError(f"DuckDB refused a statement: {self._named(exc)}") from None

    def query(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        try:
            return self.connection.execute(sql, list(params)).fetchall()
        except duckdb.Error as exc:
            raise WarehouseError(f"DuckDB refused a query: {self._named(exc)}") from None

    def _named(self, exc: duckdb.Error) -> str:
        message = str(exc)
        for path, uri in self.copies.items():
            message = message.replace(path, uri)
        return message

    def close(self) -> None:
        """Remove the local copies of staged files."""
        if self.scratch is not None:
            self.scratch.cleanup()
            self.scratch = None

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

    def stage(
        self,
        staging: str,
        fields: Sequence[tuple[str, WarehouseType]],
        files: Sequence[StagedFile],
        storage: Storage,
    ) -> int:
        """The temporary view `staging` over the files, cast to the warehouse types; its rows."""
        columns, source = self._columns(fields), self._read_parquet(files, storage)
        self.execute(f"DROP VIEW IF EXISTS {quote(staging)}")
        try:
            self.connection.execute(
                f"CREATE TEMP VIEW {quote(staging)} AS SELECT {columns} FROM {source}"
            )
            counted = self.connection.execute(f"SELECT COUNT(*) FROM {quote(staging)}").fetchone()
        except duckdb.Error as exc:
            raise LoadError(f"DuckDB refused a staged file: {self._named(exc)}") from None
        return int(counted[0]) if counted else 0

    def fill(
        self,
        table: str,
        fields: Sequence[tuple[str, WarehouseType]],
        files: Sequence[StagedFile],
        storage: Storage,
    ) -> int:
        """Insert the files' rows into `table` in one statement, read by DuckDB's parallel
        Parquet reader; the rows inserted."""
        names = ", ".join(quote(name) for name, _ in fields)
        columns, source = self._columns(fields), self._read_parquet(files, storage)
        insert = f"INSERT INTO {table} ({names}) SELECT {columns} FROM"
        logger.debug("warehouse SQL: %s read_parquet([%d file(s)])", insert, len(files))
        try:
            inserted = self.connection.execute(f"{insert} {source}").fetchone()
        except duckdb.Error as exc:
            raise LoadError(f"DuckDB refused a staged file: {self._named(exc)}") from None
        return int(inserted[0]) if inserted else 0

    def _columns(self, fields: Sequence[tuple[str, WarehouseType]]) -> str:
        """The files' columns, each cast to its warehouse type."""
        return ", ".join(
            f"CAST({quote(name)} AS {self.type_sql(kind)}) AS {quote(name)}"
            for name, kind in fields
        )

    def _read_parquet(self, files: Sequence[StagedFile], storage: Storage) -> str:
        """`read_parquet` over local copies of the files."""
        paths = self._local_files(files, storage)
        listed = ", ".join("'" + path.replace("'", "''") + "'" for path in paths)
        return f"read_parquet([{listed}])"

    def unstage(self, staging: str) -> None:
        self.execute(f"DROP VIEW {quote(staging)}")

    def _local_files(self, files: Sequence[StagedFile], storage: Storage) -> list[str]:
        """Local paths of the files: a local storage's own files, else copies made in parallel."""
        filesystem, base = storage.filesystem()
        local = isinstance(filesystem, pafs.LocalFileSystem)
        if self.scratch is None:
            self.scratch = tempfile.TemporaryDirectory(prefix="s3rs-duckdb-")
        folder = Path(self.scratch.name)

        def local_path(file: StagedFile) -> str:
            source = f"{base}/{file.key}"
            if local and not _GLOB & set(source):
                return source
            path = folder / f"{hashlib.sha256(file.key.encode()).hexdigest()[:24]}.parquet"
            try:
                with filesystem.open_input_stream(source) as stream, path.open("wb") as out:
                    while chunk := stream.read(_COPY_CHUNK):
                        out.write(chunk)
            except OSError as exc:
                raise LoadError(f"cannot read {file.uri}: {exc}") from None
            return str(path)

        paths = [path for _, path in prefetched(files, local_path, ahead=4 * FETCH_THREADS)]
        self.copies.update((path, file.uri) for path, file in zip(paths, files, strict=True))
        return paths


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
            session.close()
