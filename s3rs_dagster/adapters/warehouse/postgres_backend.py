"""PostgreSQL: a table is filled with one COPY FROM STDIN per load, in binary COPY format built
from the Arrow columns (`pg_binary`), or as CSV that pyarrow writes when a destination column
has a type the binary encoder does not know.

Threads read the files ahead of the COPY (a file is read whole, decoded and encoded by pyarrow,
which releases the GIL), so the server reads one file's rows while the next files are fetched
and converted; at most FETCH_THREADS files are held at once (a file holds one extract chunk at
most, `batch_size` rows).
"""

from __future__ import annotations

import bisect
import io
import re
from collections.abc import Iterator, Sequence
from contextlib import ExitStack, contextmanager, suppress
from typing import Any

import psycopg
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from s3rs_dagster.adapters.storage import Storage
from s3rs_dagster.adapters.tunnel import TUNNELS
from s3rs_dagster.adapters.warehouse.base import (
    FETCH_THREADS,
    ConnectionLost,
    LoadError,
    Session,
    StagedFile,
    Warehouse,
    WarehouseError,
    prefetched,
    quote,
)
from s3rs_dagster.adapters.warehouse.pg_binary import HEADER, TRAILER, RowEncoder
from s3rs_dagster.adapters.warehouse.types import WarehouseType
from s3rs_dagster.config import PostgresTargetConfig

_SPELLING = {"VARBYTE": "BYTEA", "SUPER": "TEXT", "TIMESTAMPTZ": "TIMESTAMPTZ"}
_CONTEXT = re.compile(r"line (\d+), column ([^:]+)")


def read_back(
    data_type: str, length: int | None, precision: int | None, scale: int | None
) -> WarehouseType:
    """information_schema's description of a column, in the shared vocabulary."""
    kind = data_type.lower()
    if kind == "character varying":
        return WarehouseType("VARCHAR", length)
    if kind in ("text", "jsonb", "json"):
        return WarehouseType("VARCHAR")
    if kind in ("bytea", "binary varying"):
        return WarehouseType("VARBYTE")
    if kind == "super":
        return WarehouseType("SUPER")
    if kind == "numeric":
        return WarehouseType("DECIMAL", precision, scale)
    if kind == "timestamp without time zone":
        return WarehouseType("TIMESTAMP")
    if kind == "timestamp with time zone":
        return WarehouseType("TIMESTAMPTZ")
    return WarehouseType.parse(kind.upper())


def columns_of(session: Session, schema: str, table: str) -> dict[str, WarehouseType] | None:
    """Existing columns from information_schema (PostgreSQL and Redshift agree here)."""
    rows = session.query(
        "SELECT column_name, data_type, character_maximum_length, numeric_precision, "
        "numeric_scale FROM information_schema.columns WHERE table_schema = %s "
        "AND table_name = %s ORDER BY ordinal_position",
        (schema, table),
    )
    if not rows:
        return None
    return {
        name: read_back(kind, length, precision, scale)
        for name, kind, length, precision, scale in rows
    }


def csv_batch(batch: pa.RecordBatch) -> bytes:
    """CSV for COPY: strings quoted (so '' differs from NULL), binary as bytea hex."""
    arrays = []
    for array in batch.columns:
        if pa.types.is_binary(array.type) or pa.types.is_large_binary(array.type):
            array = pa.array(
                [None if value is None else "\\x" + value.hex() for value in array.to_pylist()],
                pa.string(),
            )
        arrays.append(array)
    table = pa.Table.from_arrays(arrays, names=batch.schema.names)
    sink = io.BytesIO()
    pacsv.write_csv(
        table,
        sink,
        write_options=pacsv.WriteOptions(include_header=False, quoting_style="needed"),
    )
    return sink.getvalue()


class PostgresSession(Session):
    def __init__(self, connection: psycopg.Connection[Any], description: str) -> None:
        self.connection = connection
        self.description = description

    def execute(self, sql: str, params: Sequence[Any] = ()) -> None:
        try:
            self.connection.execute(sql, list(params) or None)
        except psycopg.Error as exc:
            raise self._error("refused a statement", exc) from None

    def query(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        try:
            return self.connection.execute(sql, list(params) or None).fetchall()
        except psycopg.Error as exc:
            raise self._error("refused a query", exc) from None

    def begin(self) -> None:
        """psycopg opens the transaction with the first statement."""

    def commit(self) -> None:
        try:
            self.connection.commit()
        except psycopg.Error as exc:
            raise self._error("did not confirm the commit", exc) from None

    def rollback(self) -> None:
        if not self.connection.closed:
            with suppress(psycopg.Error):
                self.connection.rollback()

    def _error(self, what: str, exc: psycopg.Error) -> WarehouseError:
        """ConnectionLost when the link broke (the statement's fate is unknown), else the
        server's refusal."""
        if self.connection.broken or self.connection.closed:
            return ConnectionLost(
                f"lost the connection to {self.description} ({what}): {_message(exc)}"
            )
        return WarehouseError(f"{self.description} {what}: {_message(exc)}")

    def type_sql(self, kind: WarehouseType) -> str:
        if kind.name in _SPELLING:
            return _SPELLING[kind.name]
        return str(kind)

    def columns(self, schema: str, table: str) -> dict[str, WarehouseType] | None:
        return columns_of(self, schema, table)

    def fill(
        self,
        table: str,
        fields: Sequence[tuple[str, WarehouseType]],
        files: Sequence[StagedFile],
        storage: Storage,
    ) -> int:
        filesystem, base = storage.filesystem()
        encoder = RowEncoder.of(self._catalog(table, [name for name, _ in fields]))

        def rows_of(file: StagedFile) -> tuple[list[Any], int]:
            try:
                with filesystem.open_input_stream(f"{base}/{file.key}") as stream:
                    parquet = pq.ParquetFile(pa.BufferReader(stream.read_buffer()))
                    data = parquet.read(use_threads=False)
            except OSError as exc:
                raise LoadError(f"cannot read {file.uri}: {exc}") from None
            batches = data.to_batches(65_536)
            if encoder is None:
                return [csv_batch(batch) for batch in batches], data.num_rows
            try:
                return [encoder.encode(batch) for batch in batches], data.num_rows
            except ValueError as exc:
                raise LoadError(f"cannot copy {file.uri} to {self.description}: {exc}") from None

        names = ", ".join(quote(name) for name, _ in fields)
        form = "csv" if encoder is None else "binary"
        starts: list[int] = []
        """The COPY line of each file's first row, to name the file of a refused line."""
        rows = 0
        try:
            with (
                self.connection.cursor() as cursor,
                cursor.copy(f"COPY {table} ({names}) FROM STDIN (FORMAT {form})") as copy,
            ):
                if encoder is not None:
                    copy.write(HEADER)
                for _file, (chunks, count) in prefetched(files, rows_of, ahead=FETCH_THREADS):
                    starts.append(rows + 1)
                    for chunk in chunks:
                        copy.write(chunk)
                    rows += count
                if encoder is not None:
                    copy.write(TRAILER)
        except psycopg.Error as exc:
            if self.connection.broken:
                raise self._error("while copying staged files", exc) from None
            raise LoadError(_load_error(files, starts, exc)) from None
        return rows

    def _catalog(self, table: str, names: Sequence[str]) -> list[tuple[str, str, int]]:
        """The table's columns `names` as (name, type name, type modifier), from pg_catalog:
        binary COPY needs each column's own type."""
        found = {
            name: (kind, modifier)
            for name, kind, modifier in self.query(
                "SELECT attname, format_type(atttypid, NULL), atttypmod FROM pg_attribute "
                "WHERE attrelid = %s::regclass AND attnum > 0 AND NOT attisdropped",
                (table,),
            )
        }
        return [(name, *found.get(name, ("", -1))) for name in names]


def _message(exc: psycopg.Error) -> str:
    diag = getattr(exc, "diag", None)
    primary = diag.message_primary if diag is not None and diag.message_primary else str(exc)
    return primary.strip()


def _load_error(files: Sequence[StagedFile], starts: Sequence[int], exc: psycopg.Error) -> str:
    """The refused file and its row, from the COPY line PostgreSQL names."""
    where = _CONTEXT.search(exc.diag.context or "")
    if where is None or not starts:
        more = f" and {len(files) - 1} more" if len(files) > 1 else ""
        return f"PostgreSQL refused the COPY of {files[0].uri}{more}: {_message(exc)}"
    line = int(where.group(1))
    index = bisect.bisect_right(starts, line) - 1
    row = line - starts[index] + 1
    return (
        f"PostgreSQL refused {files[index].uri} at row {row}, column {where.group(2)}: "
        f"{_message(exc)}"
    )


class PostgresWarehouse(Warehouse):
    kind = "postgres"

    def __init__(self, name: str, config: PostgresTargetConfig) -> None:
        super().__init__(name, config.schema_)
        self.config = config

    @property
    def description(self) -> str:
        c = self.config
        return f"postgres target '{self.name}' ({c.username}@{c.host}:{c.port}/{c.database})"

    @contextmanager
    def connect(self, *, read_only: bool = False) -> Iterator[PostgresSession]:
        c = self.config
        with ExitStack() as stack:
            host, port = c.host, c.port
            if c.ssh_tunnel.enabled:
                host, port = stack.enter_context(TUNNELS.forward(c.ssh_tunnel, c.host, c.port))
            try:
                connection = psycopg.connect(
                    host=host,
                    port=port,
                    dbname=c.database,
                    user=c.username,
                    password=c.password.get_secret_value() or None,
                    sslmode=c.sslmode,
                    connect_timeout=15,
                    application_name="s3rs",
                    options=f"-c statement_timeout={c.statement_timeout_seconds * 1000}",
                    keepalives=1,
                    keepalives_idle=c.keepalive_seconds,
                    keepalives_interval=c.keepalive_seconds,
                    keepalives_count=3,
                    tcp_user_timeout=c.client_timeout_seconds * 1000,
                )
            except psycopg.Error as exc:
                raise WarehouseError(
                    f"cannot connect to {self.description}: {_message(exc)}"
                ) from None
            stack.callback(connection.close)
            session = PostgresSession(connection, self.description)
            try:
                yield session
            finally:
                session.rollback()
