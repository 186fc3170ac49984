"""The extract stage: one table from MySQL into immutable Parquet files, resumably.

A run holds the table's lease, reads its watermark, reflects and pins the schema, takes an
upper bound (the database's clock minus the configured lag, or MAX(id) for id_only), then
pages through the table in CDC order: one keyset query per chunk (`--limit` rows), streamed
from a server-side cursor in record batches, written as Parquet per partition window. Each
file is uploaded, then committed: a single conditional write of the watermark lists the file
and moves the cursor past its rows. A run killed anywhere restarts from the last commit; an
uploaded but uncommitted file is listed nowhere, so it is never loaded.

Rows whose timestamp cursor is NULL cannot be ordered by it. With a key to page on they are
extracted in a second pass ordered by that key (new NULL rows are picked up by later runs);
without one they are counted and reported in every run (docs/decisions.md).
"""

from __future__ import annotations

import math
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import ExitStack, nullcontext, suppress
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta, tzinfo
from pathlib import Path
from typing import Any, TypeVar, overload

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from sqlalchemy.engine import Engine
from sqlalchemy.exc import DBAPIError

from s3rs_dagster.adapters.source import (
    ConnectionLost,
    DatesUnreadable,
    SourceConnection,
    SourceError,
    explain_source_error,
    open_source,
)
from s3rs_dagster.adapters.storage import ObjectInfo, Storage, StorageError, open_storage
from s3rs_dagster.adapters.tunnel import TunnelError
from s3rs_dagster.config import AnySourceConfig, Config, SqliteSourceConfig, TableConfig
from s3rs_dagster.core import naming
from s3rs_dagster.core.cursor import (
    INTEGER_TYPES,
    CursorError,
    CursorSpec,
    Window,
    after,
    cursor_order,
    cursor_text,
    last_row_before,
    parameter,
    partition_window,
    resolve_cursor,
    timestamp_instant,
    timestamp_text,
    zone_of,
)
from s3rs_dagster.core.lease import Lease, LeaseHeld, LeaseLost
from s3rs_dagster.core.manifests import committed_files, write_manifest
from s3rs_dagster.core.schema import (
    IDENTIFIER_BYTES,
    SchemaError,
    SourceColumn,
    SourceTable,
    TablePlan,
    plan_table,
    quote_mysql,
    reflect_table,
)
from s3rs_dagster.core.state import (
    Cursor,
    FileEntry,
    InitialSnapshot,
    StateError,
    Watermark,
    WatermarkStore,
    utc_now,
)

FETCH_ROWS = 10_000
"""Rows fetched from the server-side cursor and converted to Arrow at a time."""
UPLOAD_THREADS = 4
"""Files of one chunk (or snapshot checkpoint) written and uploaded at once. Each thread
costs a malloc arena: at 10M rows, 8 threads peaked ~30 MB higher than 4, no faster."""
ARROW_BATCH_ROWS = 8_192
"""Rows per record batch from the Arrow reader: connectorx's memory grows with it (its
process peaked at ~125 MB with 65,536 rows, ~100 MB with 16,384, ~90 MB with 8,192, reading
no slower)."""
ROW_GROUP_ROWS = 131_072
"""Rows per Parquet row group of an initial snapshot's files (bounds the memory of writing)."""
FIRST_QUERY_ROWS = 65_536
"""Rows an initial snapshot asks for first, before the width of a row is known."""
CHECKPOINT_BYTES = 32 * 2**20
"""Arrow bytes an initial snapshot's checkpoint holds in memory (see _Checkpoint)."""
_CURSOR_TS, _CURSOR_KEY = "__s3rs_cursor_ts", "__s3rs_cursor_key"
"""Columns carrying each checkpoint row's cursor values, dropped when its Parquet is written."""
MANIFEST_EVERY = 100
"""Committed files kept in the watermark before they move into an immutable manifest."""
CONNECTION_RETRIES = 3
"""Attempts per chunk when the connection (or its tunnel) drops; waits 1, 2, 4 s between."""

_T = TypeVar("_T")

EXPECTED_ERRORS = (
    CursorError,
    LeaseHeld,
    LeaseLost,
    SchemaError,
    SourceError,
    StateError,
    StorageError,
    TunnelError,
)
"""Failures a user can act on: reported as the table's error, never as a traceback."""


@dataclass
class Progress:
    """Reported after every committed file."""

    pipeline: str
    table: str
    rows: int
    files: int
    bytes: int
    seconds: float

    @property
    def rows_per_second(self) -> float:
        return self.rows / self.seconds if self.seconds > 0 else 0.0


ProgressCallback = Callable[[Progress], None]


@dataclass
class DryRunPlan:
    rows_pending: int
    rows_to_extract: int
    chunks: int
    from_cursor: dict[str, Any] | None
    to_bound: str | None
    initial_snapshot: dict[str, Any] | None = None
    """Set when the rows would be read in key order: the snapshot's bound and last key."""


@dataclass
class WindowCount:
    """A partition window as the source held it when its extraction ended, for the checks.

    `rows` counts the source rows with the cursor in [start, min(end, bound)), `bound` being
    the run's upper bound; `changed_since` the rows of the whole table with the cursor at or
    after that bound. Rows updated since the bound have left the window in the source but not
    yet in the target, so a target may hold up to `changed_since` rows more than `rows`.
    The bounds are texts the target's cursor column compares with (see `core.target`).
    """

    column: str
    """The cursor column's name in the target."""
    kind: str
    """datetime (naive wall clock), date, timestamp (an instant, UTC) or epoch."""
    start: str
    end: str
    rows: int
    changed_since: int


@dataclass
class ExtractReport:
    """What one table's extraction did (or, for a dry run, would do)."""

    pipeline: str
    table: str
    run_id: str
    status: str = "running"
    rows: int = 0
    files: int = 0
    bytes: int = 0
    seconds: float = 0.0
    chunk_limit_reached: bool = False
    watermark_before: dict[str, Any] | None = None
    watermark_after: dict[str, Any] | None = None
    zero_dates: dict[str, int] = field(default_factory=dict)
    null_cursor_rows: int = 0
    warnings: list[str] = field(default_factory=list)
    file_keys: list[str] = field(default_factory=list)
    dry_run: DryRunPlan | None = None
    window: WindowCount | None = None
    reader: str | None = None
    """How rows were read from the source: 'connectorx' (Arrow) or 'pymysql'."""
    schema_change: dict[str, Any] | None = None
    """{'from', 'to' (fingerprints), 'added', 'removed' (source columns)} when the source's
    schema differs from the one the previous run pinned."""
    error: str | None = None

    @property
    def rows_per_second(self) -> float:
        return self.rows / self.seconds if self.seconds > 0 else 0.0

    @property
    def ok(self) -> bool:
        return self.status in ("success", "dry_run")


def extract_table(
    config: Config,
    pipeline: str,
    table: str,
    *,
    limit: int | None = None,
    max_chunks: int | None = None,
    dry_run: bool = False,
    partition: str | None = None,
    refresh: bool = False,
    storage: Storage | None = None,
    progress: ProgressCallback | None = None,
) -> ExtractReport:
    """Extract one table; never raises for a user-fixable failure (see report.status/error).

    With `partition` (a key like '2025-03-01'), only that window of the timestamp cursor is
    extracted: after the highest cursor committed for the window, or, with `refresh`, the whole
    window anew. The table-wide cursor does not move; the files are committed like any other.
    """
    table_key, table_config = config.table(pipeline, table)
    pipeline_config = config.pipeline(pipeline)
    report = ExtractReport(pipeline=pipeline, table=table_key, run_id=naming.new_run_id())
    started = time.monotonic()
    try:
        run = _Run(
            config=config,
            pipeline=pipeline,
            table=table_key,
            table_config=table_config,
            source=config.connections.sources[pipeline_config.source],
            source_name=pipeline_config.source,
            target=pipeline_config.target,
            storage=storage or open_storage(config.storage),
            limit=limit or pipeline_config.processing.batch_size,
            max_chunks=max_chunks,
            report=report,
            progress=progress,
            started_monotonic=started,
            partition=partition,
            refresh=refresh,
        )
        run.execute(dry_run=dry_run)
        report.status = "dry_run" if dry_run else "success"
    except EXPECTED_ERRORS as exc:
        report.status = "failed"
        report.error = str(exc)
    finally:
        report.seconds = time.monotonic() - started
    return report


@dataclass
class _Run:
    config: Config
    pipeline: str
    table: str
    table_config: TableConfig
    source: AnySourceConfig
    source_name: str
    target: str
    storage: Storage
    limit: int
    max_chunks: int | None
    report: ExtractReport
    progress: ProgressCallback | None
    started_monotonic: float
    partition: str | None = None
    refresh: bool = False
    started_at: datetime = field(default_factory=utc_now)
    store: WatermarkStore = field(init=False)
    watermark: Watermark = field(init=False)
    etag: str | None = field(init=False, default=None)
    lease: Lease | None = field(init=False, default=None)
    plan: TablePlan = field(init=False)
    spec: CursorSpec = field(init=False)
    zone: tzinfo = field(init=False)
    chunks_done: int = field(init=False, default=0)
    file_seq: int = field(init=False, default=0)
    upper: str | None = field(init=False, default=None)
    upper_at: datetime | None = field(init=False, default=None)
    window: Window | None = field(init=False, default=None)
    window_cursor: Cursor | None = field(init=False, default=None)
    arrow_reader: bool = field(init=False, default=False)
    unsaved: bool = field(init=False, default=False)
    scratch: Path = field(init=False)
    """The run's temporary folder, for files on their way to storage."""
    row_bytes: int | None = field(init=False, default=None)
    """Arrow bytes per row measured by the initial snapshot's last read (sizes its queries)."""
    native_datetimes: bool = field(init=False, default=True)
    """Whether the initial snapshot reads DATETIME columns as timestamps rather than as text
    (see `TablePlan.arrow_select_list`): until a zero or invalid date is met."""
    uploads: ThreadPoolExecutor = field(
        init=False, default_factory=lambda: ThreadPoolExecutor(UPLOAD_THREADS)
    )
    """Files uploaded and listed in the watermark in memory, not yet written (see commit_file)."""

    def __post_init__(self) -> None:
        self.store = WatermarkStore(self.storage, self.pipeline, self.table, self.target)
        self.zone = zone_of(self.source.time_zone)

    # ------------------------------------------------------------------ run

    def execute(self, *, dry_run: bool) -> None:
        lease = (
            nullcontext()
            if dry_run
            else Lease(
                self.storage,
                naming.lock_key(self.pipeline, self.table),
                run_id=self.report.run_id,
                purpose="extract",
            )
        )
        with lease as held, ExitStack() as stack:
            self.scratch = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="s3rs-")))
            stack.callback(self.uploads.shutdown)
            self.lease = held if isinstance(held, Lease) else None
            self.watermark, self.etag = self.store.load()
            self.report.watermark_before = _summary(self.watermark)
            meta = stack.enter_context(open_source(self.source))
            raw = stack.enter_context(open_source(self.source, raw_text=True))
            source_table = _reflect(meta, self.table, self.source, self.source_name)
            self.plan = plan_table(
                source_table,
                previous_mapping=self.watermark.column_mapping,
                max_name_bytes=IDENTIFIER_BYTES[self.config.target_for(self.pipeline).type],
            )
            self.spec = resolve_cursor(source_table, self.table_config)
            if self.partition is not None:
                self._open_window()
            connection = SourceConnection(raw, self.source, self.source_name)
            stack.callback(connection.close)
            self.arrow_reader = self._use_arrow_reader(connection)
            self.report.reader = "connectorx" if self.arrow_reader else "pymysql"
            if dry_run:
                self._dry_run(connection)
                return
            if self.arrow_reader:
                connection.start_arrow_reader()
            self._start(connection)
            try:
                self._extract(connection)
            except BaseException as exc:
                self._finish(error=str(exc) or type(exc).__name__)
                raise
            self._finish(error=None)

    def _use_arrow_reader(self, connection: SourceConnection) -> bool:
        """Read chunks through connectorx (`SourceConnection.stream_arrow`) when allowed and
        identical. Not for TIMESTAMP cursors: its connection runs in the server's time zone,
        and their conditions are written in UTC."""
        return (
            self.config.pipeline(self.pipeline).processing.reader == "auto"
            and connection.arrow_reader_available
            and self.spec.timestamp_kind != "timestamp"
            and self.plan.arrow_reader_supported
        )

    def _start(self, connection: SourceConnection) -> None:
        state = self.watermark.mysql_state
        mapping = self.plan.column_mapping
        if self.watermark.schema_fingerprint not in (None, self.plan.fingerprint):
            before = self.watermark.column_mapping
            self.report.schema_change = {
                "from": self.watermark.schema_fingerprint,
                "to": self.plan.fingerprint,
                "added": [name for name in mapping if name not in before],
                "removed": [name for name in before if name not in mapping],
            }
            self.report.warnings.append(
                f"the source schema changed since the last run (fingerprint "
                f"{self.watermark.schema_fingerprint} -> {self.plan.fingerprint}; added: "
                f"{', '.join(self.report.schema_change['added']) or 'none'}; removed: "
                f"{', '.join(self.report.schema_change['removed']) or 'none'}); new files "
                "carry the new schema"
            )
        self.watermark.column_mapping = dict(mapping)
        self.watermark.schema_fingerprint = self.plan.fingerprint
        key = self.table_config.primary_key or list(self.plan.source.primary_key)
        self.watermark.primary_key = [mapping[name] for name in key]
        timestamp = self.spec.timestamp
        self.watermark.cursor_column = mapping[timestamp.name] if timestamp else None
        state.status = "running"
        state.last_run_id = self.report.run_id
        state.last_run_started_at = self.started_at
        state.last_error = None
        if self.spec.strategy == "full_sync" and (
            state.snapshot_run_id is None or not self.spec.keys
        ):
            # Without a key a snapshot cannot resume, so each run starts a new one.
            state.snapshot_run_id = self.report.run_id
            state.cursor = None
        self._save()
        self._report_rows_outside(connection)

    def _finish(self, *, error: str | None) -> None:
        state = self.watermark.mysql_state
        state.last_run_finished_at = utc_now()
        state.status = "failed" if error else "success"
        state.last_error = error
        try:
            self._flush_manifest()
            self._save()
        except (StateError, StorageError, LeaseLost):
            if error is None:
                raise
        self.report.watermark_after = _summary(self.watermark)

    # ------------------------------------------------------------------ lanes

    def _open_window(self) -> None:
        granularity = self.table_config.partitioning or "none"
        if self.spec.timestamp is None or granularity == "none":
            raise CursorError(
                f"{self.table} is not time-partitioned (cdc_strategy: {self.spec.strategy}, "
                f"partitioning: {granularity}); extract it without a partition"
            )
        self.window = partition_window(str(self.partition), granularity, self.spec, self.zone)
        if self.refresh:
            return
        committed = [
            entry
            for entry in committed_files(self.storage, self.pipeline, self.table, self.watermark)
            if entry.partition == self.partition and entry.cursor_max and not entry.null_cursor
        ]
        if committed:
            highest = max(
                committed,
                key=lambda e: cursor_order(self.spec, e.cursor_max.timestamp, e.cursor_max.key),
            )
            self.window_cursor = highest.cursor_max

    def _extract(self, connection: SourceConnection) -> None:
        self.upper = self._upper_bound(connection)
        snapshot = self._initial_snapshot()
        if snapshot is not None and not self._snapshot_lane(connection, snapshot):
            return
        caught_up = self._lane(connection, null_lane=False)
        if self.window is not None:
            if caught_up and self.refresh and self.report.files == 0:
                self._commit_empty_window()
            self.report.window = self._count_window(connection)
            return
        if not caught_up:
            return
        if self.spec.strategy == "full_sync":
            state = self.watermark.mysql_state
            state.last_complete_snapshot = state.snapshot_run_id
            state.snapshot_run_id = None
            state.cursor = None
            self._save()
        elif self.spec.timestamp is not None and self.spec.keys:
            self._lane(connection, null_lane=True)

    def _lane(self, connection: SourceConnection, *, null_lane: bool) -> bool:
        """Run chunks until the lane is caught up (True) or --max-chunks stops it (False)."""
        while self._chunk_allowed():
            if self._chunk(connection, null_lane=null_lane):
                return True
        return False

    # ------------------------------------------------------------------ initial snapshot

    def _initial_snapshot(self) -> InitialSnapshot | None:
        """The initial snapshot this run continues or starts, or None to read in cursor order.

        A snapshot starts when nothing was extracted yet (first sync, or after `watermark
        reset`) and `processing.initial_snapshot` is auto; one in progress is always finished,
        as abandoning it would extract its rows again. Its bound is this run's upper bound.
        """
        state = self.watermark.mysql_state
        snapshot = state.initial_snapshot
        if self.window is not None or (snapshot is not None and not snapshot.in_progress):
            return None
        applies = self._snapshot_applies()
        if snapshot is not None:
            if not applies:
                raise CursorError(
                    f"{self.table} has an initial snapshot in progress (by primary key) but no "
                    "longer has a one-column integer primary key equal to its cdc_id_column; "
                    "run `s3rs watermark reset` to start it over in cursor order"
                )
            return snapshot
        processing = self.config.pipeline(self.pipeline).processing
        if (
            processing.initial_snapshot == "off"
            or not applies
            or state.cursor is not None
            or state.total_rows
        ):
            return None
        assert self.upper is not None and self.upper_at is not None
        state.initial_snapshot = InitialSnapshot(
            run_id=self.report.run_id,
            bound=self.upper,
            bound_at=self.upper_at,
            started_at=self.started_at,
        )
        return state.initial_snapshot

    def _snapshot_applies(self) -> bool:
        """Whether the table can be read in primary-key order: a hybrid cursor whose id column
        is the table's one-column integer primary key (its clustered index in InnoDB)."""
        spec = self.spec
        key = self.table_config.primary_key or list(self.plan.source.primary_key)
        return (
            spec.strategy == "hybrid"
            and spec.timestamp is not None
            and len(spec.keys) == 1
            and key == [spec.keys[0].name]
            and spec.keys[0].data_type in INTEGER_TYPES
        )

    def _snapshot_lane(self, connection: SourceConnection, snapshot: InitialSnapshot) -> bool:
        """Read the snapshot's remaining rows checkpoint by checkpoint; True when it finished,
        False when `--limit`/`--max-chunks` stopped it (the next run resumes it).

        A checkpoint's files are written and uploaded while the next one is read, and
        committed before the next one's are, so commits stay in key order. The run's row
        budget is limit x max_chunks, as for chunks in cursor order; what the snapshot leaves
        of it goes to the incremental lane that follows.
        """
        every = self.config.pipeline(self.pipeline).processing.snapshot_checkpoint_rows
        budget = None if self.max_chunks is None else self.limit * self.max_chunks
        read, after = 0, snapshot.last_key
        writing: _Checkpoint | None = None
        try:
            while True:
                size = every if budget is None else min(every, budget - read)
                if size <= 0:
                    if writing is not None:
                        self._commit_checkpoint(writing, snapshot)
                    self.chunks_done = self.max_chunks or 0
                    self.report.chunk_limit_reached = True
                    return False
                checkpoint = self._retrying(
                    connection,
                    lambda size=size, after=after: self._read_checkpoint(
                        connection, snapshot, after, size
                    ),
                )
                if writing is not None:
                    self._commit_checkpoint(writing, snapshot)
                writing = None
                read += checkpoint.rows
                if checkpoint.rows:
                    writing = checkpoint
                    self._start_writes(checkpoint)
                    after = checkpoint.last_key
                if checkpoint.reached_end:
                    break
            if writing is not None:
                self._commit_checkpoint(writing, snapshot)
                writing = None
        finally:
            if writing is not None:
                writing.discard()
        self.chunks_done += math.ceil(read / self.limit)
        self._finish_snapshot(connection, snapshot)
        return True

    def _snapshot_query(self, snapshot: InitialSnapshot, after: str | None, size: int) -> _Query:
        """Up to `size` rows after key `after`, in key order, with a cursor below the
        snapshot's bound (and at or after start_date): a range scan of the clustered index,
        where cursor order costs a key lookup per row through the cursor's index."""
        spec = self.spec
        assert spec.timestamp is not None
        ts, key = quote_mysql(spec.timestamp.name), quote_mysql(spec.keys[0].name)
        conditions, params = self._snapshot_where(snapshot, after)
        sources = None
        if self.arrow_reader:
            columns = self.plan.arrow_select_list(native_datetimes=self.native_datetimes)
            cursor_select, sources = self._arrow_cursor((spec.timestamp, spec.keys[0]))
        else:
            columns, cursor_select = self.plan.select_list, f", {ts}, {key}"
        sql = (
            f"SELECT {columns}{cursor_select} FROM {self._table_sql()}{_where_sql(conditions)} "
            f"ORDER BY {key} LIMIT {int(size)}"
        )
        return _Query(sql, params, 2, size, reaches_end=False, cursor_sources=sources)

    def _snapshot_where(
        self, snapshot: InitialSnapshot, after: str | None
    ) -> tuple[list[str], list[object]]:
        """The snapshot's rows after key `after`: stamped below its bound, from start_date."""
        spec = self.spec
        assert spec.timestamp is not None
        ts = quote_mysql(spec.timestamp.name)
        conditions = [f"{ts} < %s"]
        params = [parameter(spec.timestamp, snapshot.bound)]
        lower = self._lower_bound()
        if lower is not None:
            conditions.append(f"{ts} >= %s")
            params.append(parameter(spec.timestamp, lower))
        if after is not None:
            conditions.append(f"{quote_mysql(spec.keys[0].name)} > %s")
            params.append(parameter(spec.keys[0], after))
        return conditions, params

    def _read_checkpoint(
        self, connection: SourceConnection, snapshot: InitialSnapshot, after: str | None, size: int
    ) -> _Checkpoint:
        """Read up to `size` rows after key `after` into memory, as they arrive, and fewer if
        they would exceed CHECKPOINT_BYTES: until a row's width is known the first query asks
        for FIRST_QUERY_ROWS, and the next ones for what fits in the bytes left.

        DATETIME columns are read as timestamps until connectorx refuses a zero or invalid
        date; the checkpoint is then read again with them as text, as is the rest of the run
        (the text path turns such dates into NULL and counts them). Nothing was written yet:
        a checkpoint's files are written only once it is read."""
        try:
            return self._read_checkpoint_rows(connection, snapshot, after, size)
        except DatesUnreadable:
            if not self.native_datetimes:
                raise
            self.native_datetimes = False
            return self._read_checkpoint_rows(connection, snapshot, after, size)

    def _read_checkpoint_rows(
        self, connection: SourceConnection, snapshot: InitialSnapshot, after: str | None, size: int
    ) -> _Checkpoint:
        width = len(self.plan.columns)
        checkpoint = _Checkpoint(after)
        while checkpoint.rows < size:
            wanted = size - checkpoint.rows
            if self.row_bytes is None:
                wanted = min(wanted, FIRST_QUERY_ROWS)
            else:
                wanted = min(wanted, (CHECKPOINT_BYTES - checkpoint.nbytes) // self.row_bytes)
                if checkpoint.rows and wanted < checkpoint.rows // 8:
                    break  # nearly full: another query would cost more than it brings
                wanted = max(wanted, 1)
            query = self._snapshot_query(snapshot, checkpoint.last_key, wanted)
            before = checkpoint.rows
            for batch, zero_dates, cursors in self._batches(connection, query, width):
                for column, count in zero_dates.items():
                    self.report.zero_dates[column] = self.report.zero_dates.get(column, 0) + count
                checkpoint.add(batch, cursors.columns)
            if checkpoint.rows:
                self.row_bytes = max(1, -(-checkpoint.nbytes // checkpoint.rows))
            if checkpoint.rows - before < wanted:
                checkpoint.reached_end = True
                break
        return checkpoint

    def _start_writes(self, checkpoint: _Checkpoint) -> None:
        """Sort a read checkpoint by window in a thread, which then starts one file per window
        (written and uploaded in parallel threads) while the next checkpoint is read."""
        checkpoint.writes = self.uploads.submit(self._split_checkpoint, checkpoint)

    def _split_checkpoint(
        self, checkpoint: _Checkpoint
    ) -> list[tuple[str, int, Future[tuple[str, ObjectInfo, Cursor, Cursor]]]]:
        """One write per window of the checkpoint's rows: a stable sort by window keeps each
        window's rows in key order, the checkpoint is copied in that order a column at a time
        (`_take_in_place`), and each window is a slice of the copy."""
        schema, columns = checkpoint.release_columns()
        granularity = self.table_config.partitioning or "none"
        if granularity == "none":
            runs = [(0, checkpoint.rows, self.run_partition)]
        else:
            assert self.spec.timestamp is not None
            stamps = columns[
                schema.get_field_index(self.plan.column_mapping[self.spec.timestamp.name])
            ]
            buckets = _partition_buckets(stamps.combine_chunks(), granularity, self.spec)
            del stamps
            order = pc.sort_indices(pc.fill_null(buckets.cast(pa.int64()), _NULL_BUCKET))
            runs = list(_window_runs(buckets.take(order), granularity))
            _take_in_place(columns, order)
        table = pa.Table.from_arrays(columns, schema=schema)
        del columns
        writes = []
        for start, end, label in runs:
            rows = table.slice(start, end - start)
            key = self._next_key(label)
            writes.append((label, end - start, self.uploads.submit(self._write_window, rows, key)))
        return writes

    def _commit_checkpoint(self, checkpoint: _Checkpoint, snapshot: InitialSnapshot) -> None:
        """Once every file of the checkpoint is uploaded, list them all and move the snapshot
        past its last key in one conditional write: the checkpoint's commit point. A run
        killed before it leaves its files listed nowhere; the next run reads those keys
        again."""
        for label, rows, (key, info, cursor_min, cursor_max) in checkpoint.results():
            self._list_file(key, info, label, rows, cursor_min, cursor_max, False)
        snapshot.last_key = checkpoint.last_key
        snapshot.rows += checkpoint.rows
        self._save()
        if len(self.watermark.pending_files) >= MANIFEST_EVERY:
            self._flush_manifest()
            self._save()
        self._report_progress()

    def _write_window(self, rows: pa.Table, key: str) -> tuple[str, ObjectInfo, Cursor, Cursor]:
        """One window's rows as a Parquet file, uploaded under `key`; with the lowest and
        highest cursor among them."""
        spec = self.spec
        assert spec.timestamp is not None
        ts = self.plan.column_mapping[spec.timestamp.name]
        key_column = self.plan.column_mapping[spec.keys[0].name]
        lowest = _extreme_cursor(rows, ts, key_column, "min", spec)
        highest = _extreme_cursor(rows, ts, key_column, "max", spec)
        path = self.scratch / key.rsplit("_", 1)[-1]  # the file's number in the run
        try:
            with self.parquet_writer(path) as writer:
                writer.write_table(
                    rows.drop_columns([_CURSOR_TS, _CURSOR_KEY]), row_group_size=ROW_GROUP_ROWS
                )
            info = self.storage.put_file(path, key)
        finally:
            path.unlink(missing_ok=True)
        return key, info, lowest, highest

    def _finish_snapshot(self, connection: SourceConnection, snapshot: InitialSnapshot) -> None:
        """Hand over to the incremental lane: the cursor goes on the last row stamped below
        the bound (as `watermark set` would put it), so every row stamped at or after the
        bound, ties included, and every row updated since the snapshot began, comes next.
        Rows the snapshot took that are read again are merged by key on load."""
        cursor = last_row_before(
            self.spec, self._table_sql(), snapshot.bound, connection.rows, lower=self._lower_bound()
        )
        if cursor is not None:
            self._advance((cursor.timestamp, *cursor.key))
        snapshot.finished_at = utc_now()
        self._save()

    def _commit_empty_window(self) -> None:
        """A refresh that finds its window empty still commits a file, with no rows: the load
        replaces the window with it, so rows deleted from the source leave the target too."""
        folder = Path(tempfile.mkdtemp(prefix="s3rs-extract-"))
        try:
            path = folder / "empty.parquet"
            pq.ParquetWriter(path, self.plan.arrow_schema, compression="snappy").close()
            assert self.window is not None
            self.commit_file(path, self.window.key, 0, None, None, null_lane=False)
        finally:
            shutil.rmtree(folder, ignore_errors=True)

    def _chunk_allowed(self) -> bool:
        if self.max_chunks is not None and self.chunks_done >= self.max_chunks:
            self.report.chunk_limit_reached = True
            return False
        return True

    def _chunk(self, connection: SourceConnection, *, null_lane: bool) -> bool:
        """Extract one chunk; True when it reached the end of the lane."""
        self.chunks_done += 1
        return self._retrying(
            connection,
            # Built anew on each attempt: a retried chunk starts after the last commit.
            lambda: self._stream_chunk(
                connection, self._chunk_query(connection, null_lane), null_lane
            ),
        )

    def _retrying(self, connection: SourceConnection, work: Callable[[], _T]) -> _T:
        """Run `work` (which starts from the last commit), again on a new connection when the
        connection drops, up to CONNECTION_RETRIES times."""
        for attempt in range(CONNECTION_RETRIES + 1):
            try:
                if attempt:
                    connection.reconnect()
                return work()
            except ConnectionLost as lost:
                if attempt == CONNECTION_RETRIES:
                    raise SourceError(
                        f"lost the connection to the source ({_endpoint(self.source)}) "
                        f"{CONNECTION_RETRIES + 1} times in a row; last error: {lost}"
                    ) from None
                time.sleep(2**attempt)
        raise AssertionError("unreachable")

    def _where(self, null_lane: bool) -> tuple[list[str], list[object]]:
        """The chunk's conditions: after the cursor, below the run's upper bound."""
        spec = self.spec
        state = self.watermark.mysql_state
        conditions: list[str] = []
        params: list[object] = []
        ts = quote_mysql(spec.timestamp.name) if spec.timestamp else None
        if null_lane:
            conditions.append(f"{ts} IS NULL")
            if state.null_cursor_key:
                sql, values = after(spec.keys, state.null_cursor_key)
                conditions.append(sql)
                params += values
            return conditions, params
        position = self.window_cursor if self.window is not None else state.cursor
        lower = self._lower_bound()
        upper = self.upper
        if self.window is not None and self.upper_at is not None:
            lower = timestamp_text(self.window.start, spec, self.zone)
            upper = timestamp_text(min(self.window.end, self.upper_at), spec, self.zone)
        if position is not None:
            texts = ([position.timestamp] if spec.timestamp else []) + position.key
            sql, values = after(spec.order_columns, [str(text) for text in texts])
            conditions.append(sql)
            params += values
        elif ts is not None and lower is not None:
            conditions.append(f"{ts} >= %s")
            params.append(lower)
        if ts is not None:
            conditions.append(f"{ts} < %s")
            params.append(upper)
        elif spec.strategy == "id_only" and self.upper is not None:
            conditions.append(f"{quote_mysql(spec.keys[0].name)} <= %s")
            params.append(parameter(spec.keys[0], self.upper))
        return conditions, params

    def _chunk_query(self, connection: SourceConnection, null_lane: bool) -> _Query:
        spec = self.spec
        order = spec.keys if null_lane else spec.order_columns
        conditions, params = self._where(null_lane)
        limit: int | None = self.limit if order else None
        reaches_end = not order
        if order and not (null_lane or spec.keys):
            # timestamp_only without a key: a chunk must end at a timestamp boundary, so it
            # takes every row up to the timestamp of its limit-th row, ties included.
            ts = quote_mysql(order[0].name)
            boundary = connection.scalar(
                f"SELECT {ts} FROM {self._table_sql()}{_where_sql(conditions)} "
                f"ORDER BY {ts} LIMIT 1 OFFSET {self.limit - 1}",
                params,
            )
            limit = None
            reaches_end = boundary is None
            if boundary is not None:
                conditions = [*conditions, f"{ts} <= %s"]
                params = [*params, boundary]
        sources = None
        if self.arrow_reader:
            # As text: a chunk writes its files as it reads, a zero date met on the way would
            # leave them behind (the snapshot holds a checkpoint in memory until it is read).
            columns = self.plan.arrow_select_list(native_datetimes=False)
            cursor_select, sources = self._arrow_cursor(order)
        else:
            columns = self.plan.select_list
            cursor_select = "".join(f", {quote_mysql(column.name)}" for column in order)
        sql = f"SELECT {columns}{cursor_select} FROM {self._table_sql()}{_where_sql(conditions)}"
        if order:
            sql += f" ORDER BY {', '.join(quote_mysql(column.name) for column in order)}"
        if limit is not None:
            sql += f" LIMIT {int(limit)}"
        return _Query(sql, params, len(order), limit, reaches_end, cursor_sources=sources)

    def _arrow_cursor(self, columns: Sequence[SourceColumn]) -> tuple[str, tuple[int, ...] | None]:
        """For the Arrow reader: the SELECT suffix giving the cursor's values as text, exactly
        as the text protocol prints them, or none when the row's columns give those texts
        already (selecting them again costs the server and the reader about a third of their
        time), with which columns give them."""
        sources = [self.plan.arrow_text_source(column.name) for column in columns]
        found = tuple(source for source in sources if source is not None)
        if len(found) == len(columns):
            return "", found
        return "".join(f", CAST({quote_mysql(column.name)} AS CHAR)" for column in columns), None

    def _table_sql(self) -> str:
        return f"{quote_mysql(self.plan.source.schema)}.{quote_mysql(self.plan.source.name)}"

    def _stream_chunk(self, connection: SourceConnection, query: _Query, null_lane: bool) -> bool:
        """Stream one chunk into files; True when it reached the end of the lane."""
        width = len(self.plan.columns)
        total = 0
        writer = _PartitionedWriter(self, null_lane)
        try:
            for batch, zero_dates, cursors in self._batches(connection, query, width):
                for column, count in zero_dates.items():
                    self.report.zero_dates[column] = self.report.zero_dates.get(column, 0) + count
                writer.add(batch, cursors if query.cursor_columns else None)
                total += batch.num_rows
                if not query.cursor_columns and writer.rows_written >= self.limit:
                    # An unordered stream (full_sync without a key) is cut into chunks here.
                    writer.commit_all()
                    if not self._chunk_allowed():
                        return False
                    self.chunks_done += 1
            writer.commit_all()
        finally:
            writer.discard()
        return query.reaches_end or (query.limit is not None and total < query.limit)

    def _batches(
        self, connection: SourceConnection, query: _Query, width: int
    ) -> Iterator[tuple[pa.RecordBatch, dict[str, int], _ArrowRows]]:
        """The query's rows as batches of the plan's schema, with each row's cursor values
        (the text MySQL prints) as columns."""
        rows_wanted = query.limit or self.limit
        if self.arrow_reader:
            size = min(ARROW_BATCH_ROWS, rows_wanted)
            for raw in connection.stream_arrow(query.sql, query.params, size):
                if raw.num_rows == 0:  # an empty result still brings its (empty) batch
                    continue
                batch, zero_dates = self.plan.from_arrow(raw.columns[:width])
                cursors = raw.columns[width:]
                if query.cursor_sources is not None:
                    cursors = [raw.column(index) for index in query.cursor_sources]
                yield batch, zero_dates, _ArrowRows(cursors)
            return
        for rows in connection.stream(query.sql, query.params, min(FETCH_ROWS, rows_wanted)):
            batch, zero_dates = self.plan.to_record_batch([row[:width] for row in rows])
            cursors = [pa.array([row[i] for row in rows]) for i in range(width, len(rows[0]))]
            yield batch, zero_dates, _ArrowRows(cursors)

    # ------------------------------------------------------------------ bounds

    def _lower_bound(self) -> str | None:
        start = self.table_config.start_date
        if start is None or self.spec.timestamp is None:
            return None
        midnight = datetime.combine(start, datetime.min.time(), self.zone)
        if self.spec.timestamp_kind in ("epoch", "timestamp"):
            midnight = datetime.combine(start, datetime.min.time(), UTC)
        return timestamp_text(midnight, self.spec, self.zone)

    def _upper_bound(self, connection: SourceConnection) -> str | None:
        if self.spec.timestamp is not None:
            now_text = connection.scalar(connection.utc_now_sql, [])
            now = datetime.fromisoformat(str(now_text)).replace(tzinfo=UTC)
            self.upper_at = now - timedelta(seconds=self.table_config.cdc_lag_seconds)
            return timestamp_text(self.upper_at, self.spec, self.zone)
        if self.spec.strategy == "id_only":
            key = quote_mysql(self.spec.keys[0].name)
            value = connection.scalar(f"SELECT MAX({key}) FROM {self._table_sql()}", [])
            return None if value is None else str(value)
        return None

    def _count_window(self, connection: SourceConnection) -> WindowCount:
        window, spec, upper_at = self.window, self.spec, self.upper_at
        assert window is not None and spec.timestamp is not None and upper_at is not None
        ts = quote_mysql(spec.timestamp.name)
        table = self._table_sql()
        end = min(window.end, upper_at)
        rows = connection.scalar(
            f"SELECT COUNT(*) FROM {table} WHERE {ts} >= %s AND {ts} < %s",
            [timestamp_text(window.start, spec, self.zone), timestamp_text(end, spec, self.zone)],
        )
        changed = connection.scalar(f"SELECT COUNT(*) FROM {table} WHERE {ts} >= %s", [self.upper])
        kind = str(spec.timestamp_kind)

        def target_text(moment: datetime) -> str:
            if kind == "timestamp":
                return moment.astimezone(UTC).isoformat()
            return timestamp_text(moment, spec, self.zone)

        return WindowCount(
            column=self.plan.column_mapping[spec.timestamp.name],
            kind=kind,
            start=target_text(window.start),
            end=target_text(window.end),
            rows=int(rows),
            changed_since=int(changed),
        )

    def _report_rows_outside(self, connection: SourceConnection) -> None:
        """Warn, every run, about rows the timestamp cursor can never reach."""
        spec = self.spec
        if spec.timestamp is None:
            return
        ts = quote_mysql(spec.timestamp.name)
        table = self._table_sql()
        if not spec.keys:
            nulls = int(connection.scalar(f"SELECT COUNT(*) FROM {table} WHERE {ts} IS NULL", []))
            if nulls:
                self.report.null_cursor_rows = nulls
                self.report.warnings.append(
                    f"{nulls} rows have NULL {spec.timestamp.name} and the table has no key to "
                    "page them by: they are not extracted (give the table a primary key, or use "
                    "cdc_strategy: full_sync)"
                )
        lower = self._lower_bound()
        if lower is not None and self.watermark.mysql_state.cursor is None:
            before = int(
                connection.scalar(f"SELECT COUNT(*) FROM {table} WHERE {ts} < %s", [lower])
            )
            if before:
                self.report.warnings.append(
                    f"{before} rows have {spec.timestamp.name} before start_date "
                    f"{self.table_config.start_date} (or a zero date): they are not extracted; "
                    "set an earlier start_date to include them"
                )

    def _dry_run(self, connection: SourceConnection) -> None:
        self.upper = self._upper_bound(connection)
        table = self._table_sql()
        snapshot = self._initial_snapshot()
        if snapshot is not None and snapshot.last_key is not None:
            # Resuming: the snapshot's rows after its last key, then those stamped since.
            assert self.spec.timestamp is not None
            conditions, params = self._snapshot_where(snapshot, snapshot.last_key)
            ts = quote_mysql(self.spec.timestamp.name)
            conditions = [f"({' AND '.join(conditions)}) OR ({ts} >= %s AND {ts} < %s)"]
            params += [
                parameter(self.spec.timestamp, snapshot.bound),
                parameter(self.spec.timestamp, str(self.upper)),
            ]
        else:
            conditions, params = self._where(null_lane=False)
        pending = int(
            connection.scalar(f"SELECT COUNT(*) FROM {table}{_where_sql(conditions)}", params)
        )
        cap = pending if self.max_chunks is None else min(pending, self.limit * self.max_chunks)
        position = self.watermark.mysql_state.cursor
        self.report.dry_run = DryRunPlan(
            rows_pending=pending,
            rows_to_extract=cap,
            chunks=math.ceil(cap / self.limit) if cap else 0,
            from_cursor=position.model_dump() if position else None,
            to_bound=self.upper,
            initial_snapshot=None
            if snapshot is None
            else {"bound": snapshot.bound, "after_key": snapshot.last_key},
        )
        self.report.chunk_limit_reached = cap < pending
        self._report_rows_outside(connection)

    # ------------------------------------------------------------------ commits

    def commit_file(
        self,
        path: Path,
        partition: str,
        rows: int,
        first: tuple[Any, ...] | None,
        last: tuple[Any, ...] | None,
        null_lane: bool,
        *,
        save: bool = True,
    ) -> None:
        """Upload one finished Parquet file, then list it and move the cursor in one write.

        With save=False the write waits for the next one: a chunk that spans several partition
        windows uploads a file per window and commits them all with one write at its end. A run
        killed before that write leaves those files listed nowhere (never loaded, extracted
        again); a failing run's last write (`_finish`) lists them, as each was complete.
        """
        key, info = self.upload(path, partition).result()
        self.commit_uploaded(key, info, partition, rows, first, last, null_lane, save=save)

    def upload(self, path: Path, partition: str) -> Future[tuple[str, ObjectInfo]]:
        """Start uploading a finished file under its next key (the local file is removed
        once sent); uploads run in parallel, commits stay in order."""
        key = self._next_key(partition)

        def put() -> tuple[str, ObjectInfo]:
            try:
                return key, self.storage.put_file(path, key)
            finally:
                path.unlink(missing_ok=True)

        return self.uploads.submit(put)

    def _next_key(self, partition: str) -> str:
        """The storage key of the run's next file (numbered in the order they are started)."""
        if self.lease is not None:
            self.lease.check()
        self.file_seq += 1
        return naming.file_key(
            self.pipeline, self.table, partition, self.started_at, self.report.run_id, self.file_seq
        )

    def parquet_writer(self, path: Path) -> pq.ParquetWriter:
        """A writer of the run's pinned schema, with the plan's encodings."""
        return pq.ParquetWriter(
            path,
            self.plan.arrow_schema,
            compression="snappy",
            use_dictionary=self.plan.dictionary_columns,
        )

    @property
    def run_partition(self) -> str:
        """The partition of files of a table that is not time-partitioned: the run's day."""
        return self.started_at.date().isoformat()

    def commit_uploaded(
        self,
        key: str,
        info: ObjectInfo,
        partition: str,
        rows: int,
        first: tuple[Any, ...] | None,
        last: tuple[Any, ...] | None,
        null_lane: bool,
        *,
        save: bool = True,
    ) -> None:
        """List an uploaded file and move the cursor past its rows (see commit_file)."""
        state = self.watermark.mysql_state
        entry = self._list_file(
            key,
            info,
            partition,
            rows,
            self._cursor(first, null_lane),
            self._cursor(last, null_lane),
            null_lane,
        )
        if last is not None and self.window is not None:
            self.window_cursor = entry.cursor_max
        elif last is not None:
            if null_lane:
                state.null_cursor_key = [
                    cursor_text(c, v) for c, v in zip(self.spec.keys, last, strict=True)
                ]
            else:
                self._advance(last)
        if save:
            self._save()
        if len(self.watermark.pending_files) >= MANIFEST_EVERY:
            self._flush_manifest()
            self._save()
        self._report_progress()

    def _list_file(
        self,
        key: str,
        info: ObjectInfo,
        partition: str,
        rows: int,
        cursor_min: Cursor | None,
        cursor_max: Cursor | None,
        null_lane: bool,
    ) -> FileEntry:
        """Add an uploaded file to the watermark in memory (written by the caller) and count
        its rows; the cursor is the caller's to move."""
        state = self.watermark.mysql_state
        entry = FileEntry(
            key=key,
            uri=self.storage.uri(key),
            rows=rows,
            bytes=info.size,
            schema_fingerprint=self.plan.fingerprint,
            partition=partition,
            run_id=self.report.run_id,
            created_at=utc_now(),
            cursor_min=cursor_min,
            cursor_max=cursor_max,
            null_cursor=null_lane,
            snapshot_id=state.snapshot_run_id,
            refresh=self.refresh,
        )
        state.total_rows += rows
        self.watermark.pending_files.append(entry)
        if self.lease is not None:
            self.lease.check()
        self.unsaved = True
        self.report.rows += rows
        self.report.files += 1
        self.report.bytes += info.size
        self.report.file_keys.append(key)
        return entry

    def _report_progress(self) -> None:
        if self.progress is not None:
            self.progress(
                Progress(
                    self.pipeline,
                    self.table,
                    self.report.rows,
                    self.report.files,
                    self.report.bytes,
                    time.monotonic() - self.started_monotonic,
                )
            )

    def _cursor(self, values: tuple[Any, ...] | None, null_lane: bool) -> Cursor | None:
        if values is None:
            return None
        if null_lane:
            keys = [cursor_text(c, v) for c, v in zip(self.spec.keys, values, strict=True)]
            return Cursor(timestamp=None, key=keys)
        texts = [cursor_text(c, v) for c, v in zip(self.spec.order_columns, values, strict=True)]
        if self.spec.timestamp is not None:
            return Cursor(timestamp=texts[0], key=texts[1:])
        return Cursor(timestamp=None, key=texts)

    def _advance(self, last: tuple[Any, ...]) -> None:
        state = self.watermark.mysql_state
        cursor = self._cursor(last, null_lane=False)
        state.cursor = cursor
        assert cursor is not None
        if cursor.timestamp is not None:
            state.last_timestamp = timestamp_instant(cursor.timestamp, self.spec, self.zone)
        if cursor.key:
            key = cursor.key
            if len(key) == 1:
                state.last_id = int(key[0]) if key[0].lstrip("-").isdigit() else key[0]
            else:
                state.last_id = key

    def _flush_manifest(self) -> None:
        pending = self.watermark.pending_files
        if not pending:
            return
        seq = self.watermark.manifest_seq + 1
        write_manifest(self.storage, self.pipeline, self.table, self.report.run_id, seq, pending)
        self.watermark.manifest_seq = seq
        self.watermark.pending_files = []

    def _save(self) -> None:
        self.etag = self.store.save(self.watermark, self.etag)
        self.unsaved = False


@dataclass
class _Checkpoint:
    """An initial snapshot's rows read since the last commit, held in memory as they arrived
    (each batch with its rows' cursor values), and the writes of its files.

    Memory is what bounds a checkpoint besides `snapshot_checkpoint_rows`: it holds about
    CHECKPOINT_BYTES (see _Run._read_checkpoint), so wide rows make smaller checkpoints and
    memory stays flat however big the table is. Two are held at most: one being written
    while the next is read."""

    last_key: str | None
    batches: list[pa.RecordBatch] = field(default_factory=list)
    rows: int = 0
    nbytes: int = 0
    reached_end: bool = False
    """True when the snapshot has no rows after this checkpoint's."""
    writes: Future[list[tuple[str, int, Future[tuple[str, ObjectInfo, Cursor, Cursor]]]]] | None = (
        None
    )

    def add(self, batch: pa.RecordBatch, cursors: Sequence[pa.Array]) -> None:
        timestamps, keys = cursors
        schema = batch.schema.append(pa.field(_CURSOR_TS, timestamps.type)).append(
            pa.field(_CURSOR_KEY, keys.type)
        )
        # Copied: the reader's columns are views of the whole message they came in, which
        # holds every column's raw text too.
        columns = [pa.concat_arrays([column]) for column in [*batch.columns, timestamps, keys]]
        full = pa.RecordBatch.from_arrays(columns, schema=schema)
        self.batches.append(full)
        self.rows += full.num_rows
        self.nbytes += full.nbytes
        self.last_key = str(keys[-1].as_py())

    def release_columns(self) -> tuple[pa.Schema, list[pa.ChunkedArray]]:
        """The rows as chunked columns; the checkpoint lets go of its batches (each column
        then owns its buffers alone, as `add` copied them)."""
        schema = self.batches[0].schema
        columns = [
            pa.chunked_array([batch.column(index) for batch in self.batches], field.type)
            for index, field in enumerate(schema)
        ]
        self.batches = []
        return schema, columns

    def results(self) -> list[tuple[str, int, tuple[str, ObjectInfo, Cursor, Cursor]]]:
        """Each window's (label, rows, (key, info, lowest cursor, highest cursor)), once all
        are uploaded; the rows are released either way."""
        try:
            assert self.writes is not None
            return [(label, rows, future.result()) for label, rows, future in self.writes.result()]
        finally:
            self.discard()

    def discard(self) -> None:
        """Let every write end (a failing run's error is reported already), then release."""
        if self.writes is not None:
            with suppress(BaseException):
                for _, _, future in self.writes.result():
                    with suppress(BaseException):
                        future.result()
        self.batches = []


@dataclass(frozen=True)
class _Query:
    sql: str
    params: list[object]
    cursor_columns: int
    limit: int | None
    reaches_end: bool
    """True when the query reads to the end of its lane (no LIMIT cuts it short)."""
    cursor_sources: tuple[int, ...] | None = None
    """Arrow reader: the cursor's values are these data columns, printed by `cursor_text`
    (`TablePlan.arrow_text_source`), not extra text columns at the end of the row."""


def _where_sql(conditions: list[str]) -> str:
    return f" WHERE {' AND '.join(conditions)}" if conditions else ""


def _endpoint(source: AnySourceConfig) -> str:
    if isinstance(source, SqliteSourceConfig):
        return source.describe()
    where = f"{source.host}:{source.port}"
    if source.ssh_tunnel.enabled:
        tunnel = source.ssh_tunnel
        where += f" via SSH bastion {tunnel.username}@{tunnel.host}:{tunnel.port}"
    return where


class _ArrowRows(Sequence[tuple[Any, ...]]):
    """Rows of a few Arrow columns, made into tuples only when asked for (the writer needs
    the first and last cursor of each file, not every row's)."""

    def __init__(self, columns: Sequence[pa.Array]) -> None:
        self.columns = columns

    def __len__(self) -> int:
        return len(self.columns[0]) if self.columns else 0

    @overload
    def __getitem__(self, index: int) -> tuple[Any, ...]: ...
    @overload
    def __getitem__(self, index: slice) -> Sequence[tuple[Any, ...]]: ...
    def __getitem__(self, index: int | slice) -> Any:
        if isinstance(index, slice):
            return [self[i] for i in range(*index.indices(len(self)))]
        return tuple(column[index].as_py() for column in self.columns)


class _PartitionedWriter:
    """Writes one chunk's batches to Parquet, one file per partition window."""

    def __init__(self, run: _Run, null_lane: bool) -> None:
        self.run = run
        self.null_lane = null_lane
        self.folder = Path(tempfile.mkdtemp(prefix="s3rs-extract-"))
        self.partition: str | None = None
        self.writer: pq.ParquetWriter | None = None
        self.path: Path | None = None
        self.rows = 0
        self.first: tuple[Any, ...] | None = None
        self.last: tuple[Any, ...] | None = None
        self.uploads: list[
            tuple[
                Future[tuple[str, ObjectInfo]],
                str,
                int,
                tuple[Any, ...] | None,
                tuple[Any, ...] | None,
            ]
        ] = []

    def add(self, batch: pa.RecordBatch, cursors: Sequence[tuple[Any, ...]] | None) -> None:
        for start, end, partition in self._segments(batch):
            if partition != self.partition:
                self.commit_all(save=False)
                self.partition = partition
            if self.writer is None:
                self.path = self.folder / f"part-{self.run.file_seq + 1:05d}.parquet"
                self.writer = self.run.parquet_writer(self.path)
                self.first = cursors[start] if cursors else None
            self.writer.write_batch(batch.slice(start, end - start))
            self.rows += end - start
            self.last = cursors[end - 1] if cursors else None

    def commit_all(self, *, save: bool = True) -> None:
        """Finish the open file and start its upload; with save, commit every uploaded file
        of the chunk, in order, with one watermark write."""
        if self.writer is not None and self.path is not None:
            self.writer.close()
            self.writer = None
            upload = self.run.upload(self.path, str(self.partition))
            self.uploads.append((upload, str(self.partition), self.rows, self.first, self.last))
            self.rows = 0
        if not save:
            return
        pending, self.uploads = self.uploads, []
        for upload, partition, rows, first, last in pending:
            key, info = upload.result()
            self.run.commit_uploaded(
                key, info, partition, rows, first, last, self.null_lane, save=False
            )
        if self.run.unsaved:
            self.run._save()

    @property
    def rows_written(self) -> int:
        """Rows in this writer's files, committed or not (the unordered stream's chunk size)."""
        return self.rows + sum(rows for _, _, rows, _, _ in self.uploads)

    def discard(self) -> None:
        if self.writer is not None:
            self.writer.close()
            self.writer = None
        for upload, *_ in self.uploads:
            with suppress(Exception):  # the run is failing already; its error is reported
                upload.result()
        self.uploads = []
        shutil.rmtree(self.folder, ignore_errors=True)

    def _segments(self, batch: pa.RecordBatch) -> Iterator[tuple[int, int, str]]:
        """(start, end, partition) runs of consecutive rows in the same window."""
        run = self.run
        granularity = run.table_config.partitioning
        if self.null_lane or run.spec.timestamp is None or granularity == "none":
            yield 0, batch.num_rows, self._run_partition()
            return
        column = batch.column(run.plan.column_mapping[run.spec.timestamp.name])
        yield from _window_runs(_partition_buckets(column, granularity, run.spec), granularity)

    def _run_partition(self) -> str:
        if self.null_lane:
            return naming.NO_PARTITION
        return self.run.run_partition


_FORMATS = {"daily": "%Y-%m-%d", "hourly": "%Y-%m-%d-%H:00", "monthly": "%Y-%m"}


_UNITS = {"daily": "day", "hourly": "hour", "monthly": "month"}
_NULL_BUCKET = -(2**63)


def _extreme_cursor(rows: pa.Table, ts: str, key: str, pick: str, spec: CursorSpec) -> Cursor:
    """The lowest ('min') or highest ('max') (timestamp, key) among a window's rows, as the
    cursor texts MySQL prints for it."""
    stamps, keys = rows.column(ts), rows.column(key)
    stamp = pc.min_max(stamps)[pick]
    same = pc.equal(stamps, stamp)
    value = pc.min_max(pc.filter(keys, same))[pick]
    index = pc.indices_nonzero(pc.and_(same, pc.equal(keys, value)))[0].as_py()
    assert spec.timestamp is not None
    return Cursor(
        timestamp=cursor_text(spec.timestamp, rows.column(_CURSOR_TS)[index].as_py()),
        key=[cursor_text(spec.keys[0], rows.column(_CURSOR_KEY)[index].as_py())],
    )


def _take_in_place(columns: list[pa.ChunkedArray], order: pa.Array) -> None:
    """Replace each column by `column.take(order)`, one at a time: the old column is released
    as soon as its copy exists (when nothing else holds it), so sorting a checkpoint costs one
    column of extra memory, not a second copy of it."""
    for index, column in enumerate(columns):
        columns[index] = column.take(order)
        del column


def _window_runs(buckets: pa.Array, granularity: str) -> Iterator[tuple[int, int, str]]:
    """(start, end, label) of each run of consecutive equal window starts in `buckets`."""
    if len(buckets) == 0:
        return
    # Compare windows as integers (NULL as its own value); format only each run's first.
    keys = pc.fill_null(buckets.cast(pa.int64()), _NULL_BUCKET)
    changes = pc.indices_nonzero(pc.not_equal(keys[1:], keys[:-1])).to_pylist()
    bounds = [0, *(index + 1 for index in changes), len(buckets)]
    starts = pa.array(bounds[:-1], pa.int64())
    labels = pc.fill_null(
        pc.strftime(buckets.take(starts), format=_FORMATS[granularity]), naming.NO_PARTITION
    ).to_pylist()
    yield from zip(bounds[:-1], bounds[1:], labels, strict=True)


def _partition_buckets(column: pa.Array, granularity: str, spec: CursorSpec) -> pa.Array:
    """Each row's timestamp floored to its partition window's start (NULL for NULL or zero
    dates), the same windows as `cursor.partition_window`."""
    if spec.timestamp_kind == "epoch":
        micros = pc.multiply(column.cast(pa.int64()), 1_000_000 // spec.epoch_factor)
        column = micros.cast(pa.timestamp("us", tz="UTC"))
    elif pa.types.is_date(column.type):
        column = column.cast(pa.timestamp("us"))
    return pc.floor_temporal(column, unit=_UNITS[granularity])


def _reflect(engine: Engine, table: str, source: AnySourceConfig, source_name: str) -> SourceTable:
    """The table's schema; the first contact with the source, so connection errors surface here."""
    schema, _, name = table.partition(".")
    try:
        with engine.connect() as connection:
            return reflect_table(connection, schema, name)
    except DBAPIError as exc:
        raise explain_source_error(exc, source, source_name) from None


def _summary(watermark: Watermark) -> dict[str, Any]:
    state = watermark.mysql_state
    return {
        "last_timestamp": state.last_timestamp.isoformat() if state.last_timestamp else None,
        "last_id": state.last_id,
        "total_rows": state.total_rows,
        "status": state.status,
    }
