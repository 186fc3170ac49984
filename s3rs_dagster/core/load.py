"""The load stage: committed Parquet files into the warehouse, each exactly once.

Which files: every file a manifest of this table lists (or the watermark's pending list) that
the warehouse's ledger does not hold, and whose effective time (the run timestamp in its name,
else its LastModified) is after the watermark's load cutoff. Objects under the table's prefix
that no manifest lists are reported as strays and not loaded. Every include and skip is logged
with its reason.

How: target DDL first (create, add columns, widen types; each change committed on its own, as
Redshift requires), then ONE transaction that stages the files, merges them into the target
(newest cursor wins, within the batch and against the target), appends, or replaces, and
inserts the files' ledger rows. The ledger row and the data commit together, so a crash
anywhere leaves each file either loaded with its ledger row or not at all. After the commit the
target's COUNT(*) goes into the watermark's redshift_state.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from contextlib import nullcontext
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from s3rs_dagster.adapters.storage import ObjectInfo, Storage, StorageError, open_storage
from s3rs_dagster.adapters.tunnel import TunnelError
from s3rs_dagster.adapters.warehouse import (
    ConnectionLost,
    LoadError,
    Session,
    StagedFile,
    WarehouseError,
    WarehouseType,
    open_warehouse,
    quote,
)
from s3rs_dagster.adapters.warehouse.base import batched, qualified
from s3rs_dagster.config import Config, TableConfig
from s3rs_dagster.core import naming
from s3rs_dagster.core.cursor import EPOCH_FACTORS, CursorError, CursorSpec, partition_window
from s3rs_dagster.core.ddl import AddColumn, SchemaChangeError, plan_changes, wider
from s3rs_dagster.core.lease import Lease, LeaseHeld, LeaseLost
from s3rs_dagster.core.manifests import committed_files_and_objects, write_manifest
from s3rs_dagster.core.schema import schema_fingerprint, warehouse_type
from s3rs_dagster.core.state import (
    FileEntry,
    StateConflict,
    StateError,
    Watermark,
    WatermarkStore,
    utc_now,
)
from s3rs_dagster.core.target import LEDGER_TABLE, target_table_name

logger = logging.getLogger(__name__)

CONNECTION_RETRIES = 3
"""Attempts after a lost warehouse connection (waits 1, 2, 4 s). Safe because every attempt
starts from the ledger; other errors (a refused statement, a bad file) are not retried."""

EXPECTED_ERRORS = (
    CursorError,
    LeaseHeld,
    LeaseLost,
    LoadError,
    SchemaChangeError,
    StateError,
    StorageError,
    TunnelError,
    WarehouseError,
)


@dataclass
class FileDecision:
    key: str
    rows: int
    include: bool
    reason: str


@dataclass
class LoadReport:
    """What one table's load did (or, for a dry run, would do)."""

    pipeline: str
    table: str
    target: str
    target_table: str = ""
    write_mode: str = ""
    status: str = "running"
    files: int = 0
    rows: int = 0
    target_rows: int | None = None
    seconds: float = 0.0
    decisions: list[FileDecision] = field(default_factory=list)
    strays: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.status in ("success", "nothing_to_do", "dry_run")

    @property
    def rows_per_second(self) -> float:
        return self.rows / self.seconds if self.seconds > 0 else 0.0


def load_table(
    config: Config,
    pipeline: str,
    table: str,
    *,
    dry_run: bool = False,
    adopt_strays: bool = False,
    refresh_run: str | None = None,
    storage: Storage | None = None,
) -> LoadReport:
    """Load one table's pending files; never raises for a user-fixable failure.

    With adopt_strays, Parquet files under the table's prefix that no manifest lists are first
    added to a manifest of their own, when s3rs wrote them (their fields carry warehouse types).

    With refresh_run (the run id of a partition refresh), the target's rows in that partition's
    window are replaced by that run's files, in the one transaction; the window's other files
    not loaded yet are recorded as superseded, so they can never bring deleted rows back.
    """
    table_key, table_config = config.table(pipeline, table)
    pipeline_config = config.pipeline(pipeline)
    report = LoadReport(pipeline=pipeline, table=table_key, target=pipeline_config.target)
    started = time.monotonic()
    try:
        load = _Load(config, pipeline, table_key, table_config, storage, report, refresh_run)
        load.run(dry_run, adopt_strays=adopt_strays and not dry_run)
    except EXPECTED_ERRORS as exc:
        report.status = "failed"
        report.error = str(exc)
    finally:
        report.seconds = time.monotonic() - started
    return report


class _Load:
    def __init__(
        self,
        config: Config,
        pipeline: str,
        table: str,
        table_config: TableConfig,
        storage: Storage | None,
        report: LoadReport,
        refresh_run: str | None = None,
    ) -> None:
        self.config = config
        self.refresh_run = refresh_run
        self.superseded: list[FileEntry] = []
        self.in_flight: list[FileEntry] = []
        self.retries: list[str] = []
        """Files of an attempt whose outcome is unknown until the ledger is read again."""
        self.pipeline = pipeline
        self.table = table
        self.table_config = table_config
        self.storage = storage or open_storage(config.storage)
        self.report = report
        target_name = config.pipeline(pipeline).target
        self.warehouse = open_warehouse(
            target_name, config.connections.targets[target_name], config.storage
        )
        self.store = WatermarkStore(self.storage, pipeline, table, target_name)

    def run(self, dry_run: bool, *, adopt_strays: bool = False) -> None:
        lease = (
            nullcontext()
            if dry_run
            else Lease(
                self.storage,
                naming.load_lock_key(self.pipeline, self.table),
                run_id=naming.new_run_id(),
                purpose="load",
            )
        )
        with lease:
            for attempt in range(CONNECTION_RETRIES + 1):
                try:
                    self._attempt(dry_run, adopt_strays=adopt_strays)
                    return
                except ConnectionLost as lost:
                    if attempt == CONNECTION_RETRIES:
                        raise ConnectionLost(
                            f"{lost}; gave up after {attempt + 1} attempts. Whatever the last "
                            "attempt committed is in the ledger, and the next run loads exactly "
                            "the files the ledger does not hold"
                        ) from None
                    wait = 2**attempt
                    logger.warning(
                        "%s; connecting again in %s s (the ledger says whether the lost "
                        "attempt committed)",
                        lost,
                        wait,
                    )
                    self.retries.append(f"retried after: {lost}")
                    time.sleep(wait)

    def _attempt(self, dry_run: bool, *, adopt_strays: bool) -> None:
        """One go at the load, on a fresh connection. Safe to repeat after a lost connection:
        the ledger, read first, holds exactly the files an earlier attempt committed."""
        self.report.decisions, self.report.strays = [], []
        self.report.warnings = list(self.retries)
        self.report.files = self.report.rows = 0
        self.superseded = []
        watermark, _ = self.store.load()
        self.report.target_table = target_table_name(
            self.table, self.table_config, self.config.target_for(self.pipeline).type
        )
        self.report.write_mode = self._write_mode(watermark)
        candidates, listing = committed_files_and_objects(
            self.storage, self.pipeline, self.table, watermark
        )
        with self.warehouse.connect(read_only=dry_run) as session:
            loaded = self._ledger(session, create=not dry_run)
            landed = [entry for entry in self.in_flight if entry.key in loaded]
            if landed:
                # The lost attempt's commit reached the warehouse: its files are loaded.
                self.report.files = len(landed)
                self.report.rows = sum(entry.rows for entry in landed)
                self.report.warnings.append(
                    f"the connection broke before the warehouse confirmed the commit of "
                    f"{len(landed)} file(s); the ledger holds them, so they are loaded once"
                )
            self.in_flight = []
            if adopt_strays:
                candidates += self._adopt(candidates, listing, loaded)
            chosen = self._choose(watermark, candidates, listing, loaded)
            if dry_run:
                self.report.status = "dry_run"
                self.report.files = len(chosen)
                self.report.rows = sum(entry.rows for entry in chosen)
                return
            if not chosen:
                self.report.status = "success" if landed else "nothing_to_do"
                if session.columns(self.warehouse.schema, self.report.target_table):
                    self.report.target_rows = self._count(session)
                    self._record_success(self.report.target_rows)
                return
            try:
                self.in_flight = list(chosen)
                self._load(session, watermark, chosen)
            except EXPECTED_ERRORS as exc:
                session.rollback()
                self._record_failure(str(exc))
                raise
            count = self._count(session)
        self.in_flight = []
        self.report.target_rows = count
        self._record_success(count)
        self.report.status = "success"

    def _count(self, session: Session) -> int:
        return int(session.query(f"SELECT COUNT(*) FROM {self._target()}")[0][0])

    # ------------------------------------------------------------------ choosing files

    def _choose(
        self,
        watermark: Watermark,
        candidates: list[FileEntry],
        listing: dict[str, ObjectInfo],
        loaded: dict[str, int],
    ) -> list[FileEntry]:
        cutoff = watermark.load_cutoff
        strategy = self.table_config.cdc_strategy
        snapshot = watermark.mysql_state.last_complete_snapshot
        chosen: list[FileEntry] = []
        skipped_by_cutoff = 0
        refresh = [entry for entry in candidates if entry.run_id == self.refresh_run]
        refreshed = {entry.partition for entry in refresh}
        if self.refresh_run is not None and not refresh:
            raise LoadError(f"no committed file belongs to the refresh run {self.refresh_run}")
        for entry in candidates:
            if entry.key in loaded:
                self._decide(entry, False, "already loaded (in the ledger)")
                continue
            if self.refresh_run is not None and entry.run_id != self.refresh_run:
                if entry.partition in refreshed:
                    self.superseded.append(entry)
                    self._decide(entry, False, "superseded by the refresh of its window")
                else:
                    self._decide(entry, False, "not part of this refresh")
                continue
            if strategy == "full_sync" and entry.snapshot_id != snapshot:
                reason = (
                    "snapshot not complete yet"
                    if entry.snapshot_id == watermark.mysql_state.snapshot_run_id
                    else f"superseded snapshot {entry.snapshot_id}"
                )
                self._decide(entry, False, reason)
                continue
            info = listing.get(entry.key)
            effective = naming.file_timestamp(entry.key) or (info and info.last_modified)
            if info is None and (effective is None or cutoff is None or effective > cutoff):
                raise LoadError(
                    f"{entry.uri} is committed and not loaded yet, but it is missing from "
                    "storage; restore it, or move the load cutoff past it with `s3rs "
                    "watermark set` (its rows are then not loaded)"
                )
            assert effective is not None
            if cutoff is not None and effective <= cutoff:
                skipped_by_cutoff += 1
                self._decide(
                    entry, False, f"before the cutoff ({effective.isoformat()} <= {cutoff})"
                )
                continue
            self._decide(entry, True, f"after the cutoff ({effective.isoformat()})")
            chosen.append(entry)
        # A file the ledger holds is loaded, whoever wrote it: not a stray (e.g. the existing
        # tool's files recorded by `s3rs watermark import`).
        listed = {entry.key for entry in candidates} | loaded.keys()
        for key in sorted(listing):
            if key.endswith(".parquet") and key not in listed:
                self.report.strays.append(key)
                logger.warning("not loading %s: no manifest lists it (stray)", key)
        if self.report.strays:
            self.report.warnings.append(
                f"{len(self.report.strays)} Parquet file(s) under the table's prefix are in no "
                "manifest (stray uploads or another tool's files) and were not loaded"
            )
        extracted = watermark.mysql_state.total_rows
        in_ledger = sum(loaded.values())
        if (
            not chosen
            and not skipped_by_cutoff
            and strategy != "full_sync"
            and extracted > in_ledger
        ):
            raise LoadError(
                f"the watermark records {extracted:,} extracted rows, the ledger holds "
                f"{in_ledger:,} loaded, and no committed file is waiting: files or manifests "
                "are missing. Nothing was loaded; check `s3rs s3clean list` and the "
                "manifests before resetting"
            )
        return chosen

    def _adopt(
        self, candidates: list[FileEntry], listing: dict[str, ObjectInfo], loaded: dict[str, int]
    ) -> list[FileEntry]:
        """List the strays s3rs wrote in a manifest of their own, so they load like the rest.

        Files the ledger already holds (loaded, e.g. imported from the existing tool) are not
        strays and are never adopted.
        """
        listed = {entry.key for entry in candidates} | loaded.keys()
        strays = [key for key in sorted(listing) if key.endswith(".parquet") and key not in listed]
        if not strays:
            return []
        filesystem, base = self.storage.filesystem()
        run_id = f"adopted{naming.new_run_id()[:5]}"
        adopted = []
        for key in strays:
            with filesystem.open_input_file(f"{base}/{key}") as handle:
                metadata = pq.read_metadata(handle)
            schema = metadata.schema.to_arrow_schema()
            if not all(warehouse_type(field_) for field_ in schema):
                raise LoadError(
                    f"{self.storage.uri(key)} was not written by s3rs (its fields carry no "
                    "warehouse types), so it cannot be adopted; move it out of the table's prefix"
                )
            partition = next(
                (part[3:] for part in key.split("/") if part.startswith("dt=")),
                naming.NO_PARTITION,
            )
            adopted.append(
                FileEntry(
                    key=key,
                    uri=self.storage.uri(key),
                    rows=metadata.num_rows,
                    bytes=listing[key].size,
                    schema_fingerprint=schema_fingerprint(schema),
                    partition=partition,
                    run_id=run_id,
                    created_at=listing[key].last_modified,
                )
            )
        write_manifest(self.storage, self.pipeline, self.table, run_id, 1, adopted)
        self.report.warnings.append(f"adopted {len(adopted)} stray file(s) into a manifest")
        return adopted

    def _decide(self, entry: FileEntry, include: bool, reason: str) -> None:
        self.report.decisions.append(FileDecision(entry.key, entry.rows, include, reason))
        logger.info("%s %s: %s", "including" if include else "skipping", entry.key, reason)

    # ------------------------------------------------------------------ loading

    def _load(self, session: Session, watermark: Watermark, files: list[FileEntry]) -> None:
        groups = self._groups(files)
        self._evolve(session, [fields for fields, _ in groups])
        mode = self.report.write_mode
        target = self._target()
        session.begin()
        for index, (fields, group) in enumerate(groups):
            staging = f"s3rs_stage_{index}"
            staged = [StagedFile(entry.key, entry.uri, entry.bytes, entry.rows) for entry in group]
            names = [name for name, _ in fields]
            direct = self._copies_directly(session, mode, watermark, names)
            if direct:
                rows = session.fill(target, fields, staged, self.storage)
            else:
                rows = session.stage(staging, fields, staged, self.storage)
            expected = sum(entry.rows for entry in group)
            if rows != expected:
                raise LoadError(
                    f"staged {rows:,} rows from {len(group)} file(s) whose manifests list "
                    f"{expected:,}; nothing was loaded"
                )
            if direct:
                self._dedup_copied(session, watermark, names, staging, rows)
                self.report.rows += rows
                self.report.files += len(group)
                continue
            if mode == "replace_window":
                if index == 0:
                    self._delete_window(session, watermark, group[0].partition)
                statements = append_sql(target, staging, names)
            elif mode == "replace":
                statements = replace_sql(target, staging, names, first=index == 0)
            elif mode == "append":
                statements = append_sql(target, staging, names)
            else:
                keys = watermark.primary_key
                statements = merge_sql(
                    target,
                    staging,
                    names,
                    keys,
                    watermark.cursor_column,
                    unique=keys_unique(session, quote(staging), keys, rows),
                )
            for statement in statements:
                logger.debug("warehouse SQL: %s", statement)
                session.execute(statement)
            session.unstage(staging)
            self.report.rows += rows
            self.report.files += len(group)
        self._insert_ledger(session, [*files, *self.superseded])
        session.commit()

    def _copies_directly(
        self, session: Session, mode: str, watermark: Watermark, names: list[str]
    ) -> bool:
        """Whether the files can be copied straight into the target, skipping the staging
        table (its write and its read by INSERT ... SELECT): when the target holds no rows and
        its columns are the files' fields in order (a first load), appending, or merging by a
        one-column key, gives the files' rows, each repeated key's newest version only."""
        if not session.fills_tables or mode not in ("append", "merge"):
            return False
        if mode == "merge" and len(watermark.primary_key) != 1:
            return False
        existing = session.columns(self.warehouse.schema, self.report.target_table) or {}
        if list(existing) != names:
            return False
        return not session.query(f"SELECT 1 FROM {self._target()} LIMIT 1")

    def _dedup_copied(
        self, session: Session, watermark: Watermark, names: list[str], staging: str, rows: int
    ) -> None:
        """After a merge's rows were copied straight into the empty target, drop the older
        versions of each repeated key (none, as a rule: one COUNT(DISTINCT) shows it)."""
        if self.report.write_mode != "merge":
            return
        [key] = watermark.primary_key
        if keys_unique(session, self._target(), [key], rows):
            return
        for statement in dedup_sql(
            self._target(), f"{staging}_dedup", names, key, watermark.cursor_column
        ):
            logger.debug("warehouse SQL: %s", statement)
            session.execute(statement)

    def _delete_window(self, session: Session, watermark: Watermark, partition: str) -> None:
        """Delete the target's rows in the refreshed partition's window (typed bounds)."""
        column = watermark.cursor_column
        existing = session.columns(self.warehouse.schema, self.report.target_table) or {}
        kind = existing.get(str(column))
        if column is None or kind is None:
            raise LoadError(f"cannot refresh a window of {self.table}: it has no timestamp cursor")
        unit = self.table_config.cdc_timestamp_unit
        if kind.name in ("SMALLINT", "INTEGER", "BIGINT", "DECIMAL"):
            spec = CursorSpec("hybrid", None, "epoch", (), EPOCH_FACTORS[unit])
        else:
            spec = CursorSpec(
                "hybrid", None, "timestamp" if kind.name == "TIMESTAMPTZ" else "datetime", ()
            )
        granularity = self.table_config.partitioning or "none"
        window = partition_window(partition, granularity, spec, UTC)
        bounds: tuple[Any, Any]
        if spec.timestamp_kind == "epoch":
            bounds = tuple(
                int(moment.timestamp() * spec.epoch_factor) for moment in (window.start, window.end)
            )
        elif spec.timestamp_kind == "timestamp":
            bounds = (window.start, window.end)
        else:
            bounds = (window.start.replace(tzinfo=None), window.end.replace(tzinfo=None))
        c, p = quote(column), session.placeholder
        session.execute(f"DELETE FROM {self._target()} WHERE {c} >= {p} AND {c} < {p}", bounds)

    def _groups(
        self, files: list[FileEntry]
    ) -> list[tuple[list[tuple[str, WarehouseType]], list[FileEntry]]]:
        """Files grouped by schema (in order), each with its fields' warehouse types."""
        filesystem, base = self.storage.filesystem()
        groups: dict[str, tuple[list[tuple[str, WarehouseType]], list[FileEntry]]] = {}
        for entry in files:
            if entry.schema_fingerprint not in groups:
                with filesystem.open_input_file(f"{base}/{entry.key}") as handle:
                    schema = pq.read_schema(handle)
                groups[entry.schema_fingerprint] = (_fields(schema, entry), [])
            groups[entry.schema_fingerprint][1].append(entry)
        return list(groups.values())

    def _evolve(self, session: Session, schemas: Sequence[list[tuple[str, WarehouseType]]]) -> None:
        wanted: dict[str, WarehouseType] = {}
        for fields in schemas:
            for name, kind in fields:
                merged = wider(wanted[name], kind) if name in wanted else kind
                wanted[name] = merged or kind
        schema, table = self.warehouse.schema, self.report.target_table
        existing = session.columns(schema, table)
        if existing is None:
            columns = ", ".join(f"{quote(n)} {session.type_sql(k)}" for n, k in wanted.items())
            session.ddl(f"CREATE TABLE {self._target()} ({columns})")
            return
        for change in plan_changes(f"{schema}.{table}", existing, list(wanted.items())):
            if isinstance(change, AddColumn):
                session.ddl(
                    f"ALTER TABLE {self._target()} ADD COLUMN {quote(change.column)} "
                    f"{session.type_sql(change.type)}"
                )
                self.report.warnings.append(f"added column {change.column} ({change.type})")
            else:
                session.widen(schema, table, change.column, change.new)
                self.report.warnings.append(
                    f"widened column {change.column} from {change.old} to {change.new}"
                )

    # ------------------------------------------------------------------ ledger

    def _ledger(self, session: Session, *, create: bool) -> dict[str, int]:
        return read_ledger(session, self.warehouse.schema, self.pipeline, self.table, create=create)

    def _insert_ledger(self, session: Session, files: list[FileEntry]) -> None:
        insert_ledger_rows(
            session,
            self.warehouse.schema,
            self.pipeline,
            self.table,
            self.report.target_table,
            [(entry.key, entry.rows, entry.run_id) for entry in files],
        )

    # ------------------------------------------------------------------ watermark

    def _record_success(self, count: int) -> None:
        def apply(watermark: Watermark) -> None:
            state = watermark.redshift_state
            state.total_rows = count
            state.status = "success"
            state.last_loaded_at = datetime.now(UTC)
            state.last_error = None

        self._update_watermark(apply)

    def _record_failure(self, error: str) -> None:
        def apply(watermark: Watermark) -> None:
            watermark.redshift_state.status = "failed"
            watermark.redshift_state.last_error = error

        try:
            self._update_watermark(apply)
        except (StateError, StorageError):
            logger.warning("could not record the failed load in the watermark")

    def _update_watermark(self, apply: Any) -> None:
        """Re-read and re-apply on a conflict: the extract stage may write it concurrently."""
        for _attempt in range(10):
            watermark, etag = self.store.load()
            apply(watermark)
            try:
                self.store.save(watermark, etag)
                return
            except StateConflict:
                continue
        raise StateError(f"the watermark {self.store.uri} kept changing; the load is committed")

    # ------------------------------------------------------------------ naming

    def _target(self) -> str:
        return qualified(self.warehouse.schema, self.report.target_table)

    def _write_mode(self, watermark: Watermark) -> str:
        if self.refresh_run is not None:
            return "replace_window"
        configured = self.table_config.write_mode
        if self.table_config.cdc_strategy == "full_sync":
            return "replace"
        if configured == "merge" and not watermark.primary_key:
            raise LoadError(
                f"write_mode: merge needs a primary key and {self.table} has none; set "
                "primary_key in its config, or write_mode: append"
            )
        if configured:
            return configured
        if watermark.primary_key:
            return "merge"
        if self.table_config.cdc_strategy != "id_only":
            self.report.warnings.append(
                f"{self.table} has no primary key, so rows are appended and an updated row "
                "appears once per version; set primary_key to merge instead"
            )
        return "append"


def _fields(schema: pa.Schema, entry: FileEntry) -> list[tuple[str, WarehouseType]]:
    fields = []
    for field_ in schema:
        kind = warehouse_type(field_)
        if not kind:
            raise LoadError(
                f"{entry.uri} was not written by s3rs (its fields carry no warehouse types)"
            )
        fields.append((field_.name, WarehouseType.parse(kind)))
    return fields


# ---------------------------------------------------------------------- the ledger


def read_ledger(
    session: Session, schema: str, pipeline: str, table: str, *, create: bool
) -> dict[str, int]:
    """{file key: rows} the ledger records for a pipeline's source table; with create, the
    ledger table (and its schema) is made when absent, else an absent ledger reads as empty."""
    ledger = qualified(schema, LEDGER_TABLE)
    if session.columns(schema, LEDGER_TABLE) is None:
        if not create:
            return {}
        session.ensure_schema(schema)
        session.ddl(
            f"CREATE TABLE IF NOT EXISTS {ledger} (pipeline VARCHAR(256), "
            "source_table VARCHAR(1024), target_table VARCHAR(1024), "
            "file_key VARCHAR(4096), file_rows BIGINT, run_id VARCHAR(64), "
            "loaded_at TIMESTAMP)"
        )
    p = session.placeholder
    rows = session.query(
        f"SELECT file_key, file_rows FROM {ledger} WHERE pipeline = {p} AND source_table = {p}",
        (pipeline, table),
    )
    return {key: int(count) for key, count in rows}


def insert_ledger_rows(
    session: Session,
    schema: str,
    pipeline: str,
    table: str,
    target_table: str,
    files: Sequence[tuple[str, int, str]],
) -> None:
    """Record files (key, rows, run id) as loaded, inside the caller's transaction."""
    ledger = qualified(schema, LEDGER_TABLE)
    p = session.placeholder
    now = utc_now().replace(tzinfo=None)
    for chunk in batched(files, 200):
        values = ", ".join(f"({p}, {p}, {p}, {p}, {p}, {p}, {p})" for _ in chunk)
        params: list[Any] = []
        for key, rows, run_id in chunk:
            params += [pipeline, table, target_table, key, rows, run_id, now]
        session.execute(
            f"INSERT INTO {ledger} (pipeline, source_table, target_table, file_key, "
            f"file_rows, run_id, loaded_at) VALUES {values}",
            params,
        )


# ---------------------------------------------------------------------- the shared SQL


def append_sql(target: str, staging: str, columns: Sequence[str]) -> list[str]:
    names = ", ".join(quote(name) for name in columns)
    return [f"INSERT INTO {target} ({names}) SELECT {names} FROM {quote(staging)}"]


def replace_sql(target: str, staging: str, columns: Sequence[str], *, first: bool) -> list[str]:
    """Replace the target's rows; DELETE, not TRUNCATE, which commits on Redshift."""
    statements = [f"DELETE FROM {target}"] if first else []
    return statements + append_sql(target, staging, columns)


def keys_unique(session: Session, table: str, keys: Sequence[str], rows: int) -> bool:
    """True when no key repeats among the `rows` rows of `table` (SQL-ready name), as in most
    batches (each row version extracted once): their merge needs no ranking of versions, which
    costs a sort of the batch.

    Counted for a one-column key only (COUNT(DISTINCT) is the cheap form in all three dialects);
    a NULL key or a composite key counts as repeating, which merely ranks as before."""
    if len(keys) != 1:
        return False
    distinct = session.query(f"SELECT COUNT(DISTINCT {quote(keys[0])}) FROM {table}")
    return int(distinct[0][0]) == rows


def dedup_sql(
    target: str, dedup_table: str, columns: Sequence[str], key: str, cursor: str | None
) -> list[str]:
    """Keep only the newest version of each repeated key of a target that held nothing before
    this batch was copied into it: the rows merge_sql leaves there (one version per key, the
    NULL key counting as one key, as ROW_NUMBER's partitions do), ranked as merge_sql ranks."""
    names = ", ".join(quote(name) for name in columns)
    k = quote(key)
    order = f"{quote(cursor)} DESC" if cursor else k
    dedup = quote(dedup_table)
    return [
        f"CREATE TEMP TABLE {dedup} AS SELECT {names} FROM (SELECT {names}, ROW_NUMBER() OVER "
        f"(PARTITION BY {k} ORDER BY {order}) AS s3rs_rank, COUNT(*) OVER (PARTITION BY {k}) "
        f"AS s3rs_versions FROM {target}) ranked WHERE s3rs_rank = 1 AND s3rs_versions > 1",
        f"DELETE FROM {target} USING {dedup} WHERE {target}.{k} = {dedup}.{k}",
        f"DELETE FROM {target} WHERE {k} IS NULL AND EXISTS "
        f"(SELECT 1 FROM {dedup} WHERE {dedup}.{k} IS NULL)",
        f"INSERT INTO {target} ({names}) SELECT {names} FROM {dedup}",
        f"DROP TABLE {dedup}",
    ]


def merge_sql(
    target: str,
    staging: str,
    columns: Sequence[str],
    keys: Sequence[str],
    cursor: str | None,
    *,
    unique: bool = False,
) -> list[str]:
    """Upsert by key: the newest cursor wins within the batch and against the target.

    With unique (no key repeats in the staging table), the staging rows are the newest versions
    already and merge as they are."""
    names = ", ".join(quote(name) for name in columns)
    partition = ", ".join(quote(key) for key in keys)
    order = f"{quote(cursor)} DESC" if cursor else partition
    dedup = quote(staging if unique else f"{staging}_dedup")
    join = " AND ".join(f"{target}.{quote(key)} = {dedup}.{quote(key)}" for key in keys)
    newer = ""
    if cursor:
        c = quote(cursor)
        newer = f" AND ({target}.{c} IS NULL OR {dedup}.{c} IS NULL OR {target}.{c} <= {dedup}.{c})"
    keep = " AND ".join(f"kept.{quote(key)} = {dedup}.{quote(key)}" for key in keys)
    upsert = [
        f"DELETE FROM {target} USING {dedup} WHERE {join}{newer}",
        f"INSERT INTO {target} ({names}) SELECT {names} FROM {dedup} WHERE NOT EXISTS "
        f"(SELECT 1 FROM {target} kept WHERE {keep})",
    ]
    if unique:
        return upsert
    return [
        f"CREATE TEMP TABLE {dedup} AS SELECT {names} FROM (SELECT {names}, ROW_NUMBER() OVER "
        f"(PARTITION BY {partition} ORDER BY {order}) AS s3rs_rank FROM {quote(staging)}) "
        "ranked WHERE s3rs_rank = 1",
        *upsert,
        f"DROP TABLE {dedup}",
    ]
