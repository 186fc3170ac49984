"""The warehouse interface the load stage programs against."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Any, TypeVar

from s3rs_dagster.adapters.storage import Storage
from s3rs_dagster.adapters.warehouse.types import WarehouseType

FETCH_THREADS = 8
"""Files read from storage at once while staging. Data files are small (one per partition and
chunk), so one at a time leaves the link and the CPU waiting on each request's latency."""

T = TypeVar("T")


class WarehouseError(Exception):
    """The warehouse cannot be reached or refused a statement; says which target and why."""


class LoadError(WarehouseError):
    """The warehouse refused the data of a file: names the file, column, value and reason."""


class ConnectionLost(WarehouseError):
    """The connection to the warehouse broke mid-session (a dropped link or tunnel, a restarted
    server, no answer within the client timeout). An open transaction may or may not have
    committed: only the ledger can say, so the load re-reads it before anything else."""


@dataclass(frozen=True)
class StagedFile:
    """A Parquet file to load: its storage key, full URI, size and row count."""

    key: str
    uri: str
    size: int
    rows: int


def quote(identifier: str) -> str:
    """A double-quoted identifier (all three dialects), embedded quotes doubled."""
    if "\x00" in identifier:
        raise WarehouseError(f"identifier {identifier!r} contains a NUL character")
    return '"' + identifier.replace('"', '""') + '"'


def qualified(schema: str, table: str) -> str:
    return f"{quote(schema)}.{quote(table)}"


class Session(ABC):
    """One connection, used for one load: DDL first, then one data transaction."""

    placeholder = "%s"
    fills_tables = True
    """fill() loads any table, the target itself too, not only stage()'s temporary one."""

    @abstractmethod
    def execute(self, sql: str, params: Sequence[Any] = ()) -> None: ...

    @abstractmethod
    def query(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]: ...

    @abstractmethod
    def begin(self) -> None: ...

    @abstractmethod
    def commit(self) -> None: ...

    @abstractmethod
    def rollback(self) -> None: ...

    @abstractmethod
    def type_sql(self, kind: WarehouseType) -> str:
        """This dialect's spelling of a type from the shared (Redshift) vocabulary."""

    @abstractmethod
    def columns(self, schema: str, table: str) -> dict[str, WarehouseType] | None:
        """The table's columns in the shared vocabulary, or None when the table is absent."""

    def stage(
        self,
        staging: str,
        fields: Sequence[tuple[str, WarehouseType]],
        files: Sequence[StagedFile],
        storage: Storage,
    ) -> int:
        """Create the temporary table `staging` and fill it from the files; return its rows."""
        columns = ", ".join(f"{quote(name)} {self.type_sql(kind)}" for name, kind in fields)
        self.execute(f"DROP TABLE IF EXISTS {quote(staging)}")
        self.execute(f"CREATE TEMP TABLE {quote(staging)} ({columns})")
        return self.fill(quote(staging), fields, files, storage)

    def fill(
        self,
        table: str,
        fields: Sequence[tuple[str, WarehouseType]],
        files: Sequence[StagedFile],
        storage: Storage,
    ) -> int:
        """Copy the files' rows into `table` (SQL-ready: quoted, maybe schema-qualified), whose
        columns are the fields in order, this backend's way; return the rows copied. Every
        backend that keeps the default stage() implements it (and leaves fills_tables set)."""
        raise NotImplementedError

    def unstage(self, staging: str) -> None:
        """Drop what stage() made, once the batch is merged."""
        self.execute(f"DROP TABLE {quote(staging)}")

    def ddl(self, sql: str) -> None:
        """Run a schema change and make it durable (Redshift runs some only outside a
        transaction block; the others simply commit it)."""
        self.execute(sql)
        self.commit()

    def ensure_schema(self, schema: str) -> None:
        self.ddl(f"CREATE SCHEMA IF NOT EXISTS {quote(schema)}")

    def widen(self, schema: str, table: str, column: str, new: WarehouseType) -> None:
        self.ddl(
            f"ALTER TABLE {qualified(schema, table)} ALTER COLUMN {quote(column)} "
            f"TYPE {self.type_sql(new)}"
        )


class Warehouse(ABC):
    """A configured target."""

    kind: str

    def __init__(self, name: str, schema: str) -> None:
        self.name = name
        self.schema = schema

    @abstractmethod
    def connect(self, *, read_only: bool = False) -> AbstractContextManager[Session]:
        """A session; closed (and rolled back if a transaction is open) on exit.

        read_only promises that nothing will be written (a dry run), so a backend need not
        create anything to open it.
        """

    @property
    @abstractmethod
    def description(self) -> str:
        """Where the target is, for messages (never with a password)."""


def batched(items: Sequence[Any], size: int) -> Iterator[Sequence[Any]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def prefetched(
    files: Sequence[StagedFile], work: Callable[[StagedFile], T], *, ahead: int
) -> Iterator[tuple[StagedFile, T]]:
    """(file, work(file)) for each file in order, `work` running in FETCH_THREADS threads at
    most `ahead` files ahead of the consumer, so what is read ahead (memory, temporary disk)
    stays bounded whatever the number of files. Work not started when the consumer stops is
    cancelled; `work` must release the GIL for the threads to help (pyarrow's I/O does)."""
    pool = ThreadPoolExecutor(FETCH_THREADS, thread_name_prefix="s3rs-fetch")
    queue: deque[tuple[StagedFile, Future[T]]] = deque()
    remaining = iter(files)
    try:
        for file in remaining:
            queue.append((file, pool.submit(work, file)))
            if len(queue) >= ahead:
                break
        while queue:
            file, future = queue.popleft()
            result = future.result()
            following = next(remaining, None)
            if following is not None:
                queue.append((following, pool.submit(work, following)))
            yield file, result
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
