"""Reading and changing a table's watermark by hand: `watermark get|set|reset`, `set-count`.

Every change is made while holding the table's extraction lease (so it cannot interleave with
a running extraction) and written with compare-and-swap, so a change either lands whole or not
at all. What each command changes, and why, is in docs/cli.md:

- `set` moves the extraction cursor to a moment (rows at or after it are extracted next; with
  an id, rows after (timestamp, id)) and sets the load cutoff to that moment (files written
  before it are not loaded).
- `reset` forgets the cursor, counts, statuses and cutoff; committed files stay committed and
  the ledger in the target still records what is loaded. Files written before the reset are
  not loaded afterwards (the next sync re-extracts their rows), so a reset never loads a file
  twice or loads rows the re-extraction also brings.
- `set-count` corrects `mysql_state.total_rows` (absolute or additive).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta, tzinfo
from typing import Any, Literal

from s3rs_dagster.adapters.storage import Storage, open_storage
from s3rs_dagster.adapters.tunnel import TunnelError
from s3rs_dagster.adapters.warehouse import WarehouseError
from s3rs_dagster.config import Config
from s3rs_dagster.core import naming
from s3rs_dagster.core.cursor import (
    last_row_before,
    parameter,
    timestamp_instant,
    timestamp_text,
    zone_of,
)
from s3rs_dagster.core.lease import Lease
from s3rs_dagster.core.ledger import loaded_files
from s3rs_dagster.core.manifests import committed_files, write_manifest
from s3rs_dagster.core.source_probe import SourceProbe, probe_source
from s3rs_dagster.core.state import (
    BrokenWatermark,
    Cursor,
    StateConflict,
    Watermark,
    WatermarkStore,
    utc_now,
)

ACCEPTED_TIMESTAMPS = (
    "2025-09-09",
    "2025-09-09 00:00:00",
    "2025-09-09T00:00:00.250000",
    "2025-09-09 00:00:00+02:00",
    "2025-09-09T00:00:00Z",
)
_TIMESTAMP = re.compile(
    r"\d{4}-\d{2}-\d{2}([ T]\d{2}:\d{2}(:\d{2}(\.\d{1,6})?)?)?(Z|[+-]\d{2}:\d{2})?"
)


class AdminError(Exception):
    """The request cannot be carried out as given; the message says why and what to do."""


def parse_timestamp(text: str, zone: tzinfo) -> datetime:
    """A user's timestamp as an aware datetime; a naive one is wall-clock time in `zone`."""
    cleaned = text.strip()
    moment: datetime | None = None
    if _TIMESTAMP.fullmatch(cleaned):
        try:
            moment = datetime.fromisoformat(cleaned.replace("Z", "+00:00"))
        except ValueError:
            moment = None
    if moment is None:
        raise _refused(text, "is not a timestamp")
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=zone)


def _refused(text: str, reason: str) -> AdminError:
    return AdminError(
        f"--timestamp {text!r} {reason}; accepted: {', '.join(ACCEPTED_TIMESTAMPS)} "
        "(without an offset it is read in the source's time_zone)"
    )


def parse_settable_timestamp(text: str, zone: tzinfo, now: datetime | None = None) -> datetime:
    """A moment `watermark set` may move to: parsed as `parse_timestamp`, and also one instant
    (a naive wall-clock time that a DST change skips or repeats in `zone` needs an offset), and
    not in the future (the cutoff would keep every file written until then from loading, and
    the cursor would skip every row changed until then)."""
    moment = parse_timestamp(text, zone)
    if _TIMESTAMP.fullmatch(text.strip()) and not re.search(r"(Z|[+-]\d{2}:\d{2})$", text.strip()):
        first, second = moment.replace(fold=0), moment.replace(fold=1)
        try:
            offsets = (first.utcoffset(), second.utcoffset())
            round_trip = first.astimezone(UTC).astimezone(zone).replace(tzinfo=None)
        except OverflowError:
            raise _refused(text, "is out of range") from None
        if round_trip != moment.replace(tzinfo=None):
            raise _refused(text, f"does not exist in {zone} (the clocks skip it); add an offset")
        if offsets[0] != offsets[1]:
            choices = " or ".join(_offset_text(offset) for offset in offsets)
            raise _refused(text, f"happens twice in {zone} (the clocks go back); add {choices}")
    try:
        in_future = moment.astimezone(UTC) > (now or utc_now())
    except OverflowError:
        raise _refused(text, "is out of range") from None
    if in_future:
        raise _refused(
            text,
            "is in the future: extraction would skip every row changed until then and no file "
            "written until then would load; give a moment in the past",
        )
    return moment


def _offset_text(offset: timedelta | None) -> str:
    minutes = int((offset or timedelta()).total_seconds() // 60)
    sign = "+" if minutes >= 0 else "-"
    return f"{sign}{abs(minutes) // 60:02d}:{abs(minutes) % 60:02d}"


def summary(watermark: Watermark) -> dict[str, Any]:
    """The fields people look at, JSON-ready."""
    state = watermark.mysql_state
    return {
        "last_timestamp": _iso(state.last_timestamp),
        "last_id": state.last_id,
        "cursor": state.cursor.model_dump() if state.cursor else None,
        "total_rows": state.total_rows,
        "status": state.status,
        "load_cutoff": _iso(watermark.load_cutoff),
        "redshift_total_rows": watermark.redshift_state.total_rows,
        "redshift_status": watermark.redshift_state.status,
    }


def _iso(moment: datetime | None) -> str | None:
    return moment.isoformat() if moment else None


# --------------------------------------------------------------------------- get


@dataclass
class FileState:
    """A committed file and where it stands: loaded, waiting, or before the cutoff."""

    key: str
    uri: str
    rows: int
    bytes: int
    partition: str
    written_at: datetime
    state: Literal["loaded", "waiting", "before cutoff", "unknown"]


@dataclass
class WatermarkView:
    pipeline: str
    table: str
    target: str
    uri: str
    exists: bool
    watermark: Watermark
    files: list[FileState] | None = None
    ledger_error: str | None = None


def read_watermark(
    config: Config,
    pipeline: str,
    table: str,
    *,
    show_files: bool = False,
    storage: Storage | None = None,
) -> WatermarkView:
    """The watermark; with show_files, every committed file and whether the ledger holds it."""
    table_key, _ = config.table(pipeline, table)
    storage = storage or open_storage(config.storage)
    target = config.pipeline(pipeline).target
    store = WatermarkStore(storage, pipeline, table_key, target)
    watermark, etag = store.load()
    view = WatermarkView(pipeline, table_key, target, store.uri, etag is not None, watermark)
    if show_files:
        ledger: dict[str, int] | None
        try:
            ledger = loaded_files(config, pipeline, table_key)
        except (WarehouseError, TunnelError) as exc:  # the files are still worth showing
            ledger = None
            view.ledger_error = f"cannot read the ledger in target '{target}': {exc}"
        view.files = [
            _file_state(entry, watermark.load_cutoff, ledger)
            for entry in committed_files(storage, pipeline, table_key, watermark)
        ]
    return view


def _file_state(entry: Any, cutoff: datetime | None, ledger: dict[str, int] | None) -> FileState:
    written = naming.file_timestamp(entry.key) or entry.created_at
    state: Literal["loaded", "waiting", "before cutoff", "unknown"]
    if ledger is None:
        state = "unknown"
    elif entry.key in ledger:
        state = "loaded"
    elif cutoff is not None and written <= cutoff:
        state = "before cutoff"
    else:
        state = "waiting"
    return FileState(entry.key, entry.uri, entry.rows, entry.bytes, entry.partition, written, state)


# --------------------------------------------------------------------------- set


@dataclass
class WatermarkChange:
    pipeline: str
    table: str
    uri: str
    before: dict[str, Any]
    after: dict[str, Any]
    notes: list[str] = field(default_factory=list)


def set_watermark(
    config: Config,
    pipeline: str,
    table: str,
    *,
    timestamp: str | None,
    id_value: str | None = None,
    storage: Storage | None = None,
) -> WatermarkChange:
    """Move the extraction cursor and the load cutoff to `timestamp` (and `id_value`).

    Without an id the next extraction starts at the first row whose cursor timestamp is at or
    after the moment (the cursor is put on the last row before it). With an id it resumes after
    (timestamp, id), the existing tool's rule. id_only tables take --id alone.
    """
    table_key, table_config = config.table(pipeline, table)
    if table_config.cdc_strategy == "full_sync":
        raise AdminError(
            f"{table_key} uses cdc_strategy: full_sync, which has no cursor: every run takes a "
            "whole snapshot. Use `s3rs watermark reset` to start over"
        )
    # Checked before the source is asked anything: a typo needs no database to be refused.
    zone = zone_of(config.source_for(pipeline).time_zone)
    moment = parse_settable_timestamp(timestamp, zone) if timestamp is not None else None
    storage = storage or open_storage(config.storage)
    notes: list[str] = []
    with probe_source(config, pipeline, table_key) as probe:
        cursor = cursor_at(probe, moment, id_value, notes)
    target = config.pipeline(pipeline).target
    store = WatermarkStore(storage, pipeline, table_key, target)
    with _holding(storage, pipeline, table_key, "watermark set"):
        watermark, etag = store.load()
        before = summary(watermark)
        state = watermark.mysql_state
        state.cursor = cursor
        state.last_timestamp = None
        state.last_id = None
        # A moved cursor is where extraction resumes: an initial snapshot in progress stops.
        state.initial_snapshot = None
        if cursor is not None:
            if cursor.timestamp is not None:
                state.last_timestamp = timestamp_instant(cursor.timestamp, probe.spec, probe.zone)
            if cursor.key:
                state.last_id = _id_value(cursor.key)
        if moment is not None:
            watermark.load_cutoff = moment
        store.save(watermark, etag)
    if moment is not None:
        notes.append(
            f"files written at or before {moment.isoformat()} are not loaded (load cutoff)"
        )
    return WatermarkChange(pipeline, table_key, store.uri, before, summary(watermark), notes)


def cursor_at(
    probe: SourceProbe, moment: datetime | None, id_value: str | None, notes: list[str]
) -> Cursor | None:
    """The extraction cursor for "resume at `moment`" (or after (moment, id)), in the extract
    stage's terms; appends what it decided to `notes`. Used by `set` and `watermark import`."""
    spec = probe.spec
    if spec.timestamp is None:  # id_only
        if id_value is None:
            raise AdminError(
                f"{probe.table.schema}.{probe.table.name} is id_only: give --id N (extraction "
                "resumes after that id); --timestamp alone only sets the load cutoff there"
            )
        _check_id(probe, id_value)
        notes.append(f"extraction resumes after {spec.keys[0].name} = {id_value}")
        return Cursor(timestamp=None, key=[id_value])
    if moment is None:
        raise AdminError("--timestamp is required, e.g. --timestamp '2025-09-09 00:00:00'")
    text = timestamp_text(moment, spec, probe.zone)
    column = spec.timestamp.name
    if id_value is not None:
        _check_id(probe, id_value)
        notes.append(
            f"extraction resumes after ({column}, {spec.keys[0].name}) = ({text}, {id_value})"
        )
        return Cursor(timestamp=text, key=[id_value])
    cursor = last_row_before(spec, probe.table_sql, text, probe.rows)
    notes.append(f"extraction resumes at the first row with {column} >= {text}")
    if cursor is None:
        start = probe.table_config.start_date
        if start is not None and start > moment.date():
            notes.append(f"start_date {start} is later, so extraction begins at start_date")
    return cursor


def _check_id(probe: SourceProbe, id_value: str) -> None:
    keys = probe.spec.keys
    if len(keys) != 1:
        names = ", ".join(column.name for column in keys)
        raise AdminError(f"--id needs a single-column key; this table's key is ({names})")
    try:
        parameter(keys[0], id_value)
    except ValueError:
        raise AdminError(
            f"--id {id_value!r} is not a value of {keys[0].name} ({keys[0].column_type})"
        ) from None


def _id_value(key: list[str]) -> int | str | list[str]:
    if len(key) > 1:
        return key
    return int(key[0]) if key[0].lstrip("-").isdigit() else key[0]


# --------------------------------------------------------------------------- reset


@dataclass
class ResetPlan:
    """What a reset forgets and keeps; `etag` guards against changes after confirmation."""

    pipeline: str
    table: str
    uri: str
    exists: bool
    forgets: list[str]
    keeps: list[str]
    etag: str | None
    done: bool = False
    broken: str | None = None
    """Why the stored document could not be read, when the reset replaces a broken one."""


def plan_reset(
    config: Config, pipeline: str, table: str, *, storage: Storage | None = None
) -> ResetPlan:
    """Describe the reset without changing anything (for the confirmation prompt)."""
    table_key, table_config = config.table(pipeline, table)
    storage = storage or open_storage(config.storage)
    store = WatermarkStore(storage, pipeline, table_key, config.pipeline(pipeline).target)
    try:
        watermark, etag = store.load()
    except BrokenWatermark as exc:
        return _plan_replacing_broken(store, table_config, exc)
    state = watermark.mysql_state
    files = committed_files(storage, pipeline, table_key, watermark)
    forgets = [
        f"the extraction cursor ({_position(watermark)})",
        f"the extracted-row count ({state.total_rows:,}) and the stage statuses "
        f"(extract: {state.status}, load: {watermark.redshift_state.status})",
        f"the load cutoff ({_iso(watermark.load_cutoff) or 'none'})",
    ]
    start = table_config.start_date
    keeps = [
        f"{len(files)} committed file(s) ({sum(f.rows for f in files):,} rows) stay in storage; "
        "those written before the reset will not be loaded",
        "the target table and its ledger (nothing already loaded is loaded again)",
        "the next sync re-extracts the table "
        + (f"from start_date {start}" if start else "from the beginning"),
    ]
    return ResetPlan(pipeline, table_key, store.uri, etag is not None, forgets, keeps, etag)


def _plan_replacing_broken(
    store: WatermarkStore, table_config: Any, broken: BrokenWatermark
) -> ResetPlan:
    """A reset of a document that cannot be read: it is replaced, as its bytes are now."""
    fresh = Watermark(pipeline=store.pipeline, table=store.table, target=store.target)
    files = committed_files(store.storage, store.pipeline, store.table, fresh)
    start = table_config.start_date
    forgets = [
        f"the unreadable watermark document ({broken.problem.split('. Nothing')[0]})",
    ]
    keeps = [
        f"{len(files)} file(s) listed in manifests stay in storage and are not loaded again; "
        "files listed only in the broken document show as strays (`s3rs s3clean list`)",
        "the target table and its ledger (nothing already loaded is loaded again)",
        "the next sync re-extracts the table "
        + (f"from start_date {start}" if start else "from the beginning"),
    ]
    return ResetPlan(
        store.pipeline, store.table, store.uri, True, forgets, keeps, broken.etag,
        broken=broken.problem,
    )  # fmt: skip


def reset_watermark(
    config: Config, plan: ResetPlan, *, storage: Storage | None = None
) -> ResetPlan:
    """Carry out a planned reset, unless the watermark changed since it was planned."""
    if not plan.exists:
        return plan
    storage = storage or open_storage(config.storage)
    target = config.pipeline(plan.pipeline).target
    store = WatermarkStore(storage, plan.pipeline, plan.table, target)
    with _holding(storage, plan.pipeline, plan.table, "watermark reset"):
        try:
            old, etag = store.load()
        except BrokenWatermark as exc:
            if plan.broken is None or exc.etag != plan.etag:
                raise
            old = Watermark(pipeline=plan.pipeline, table=plan.table, target=target)
            etag = exc.etag
        if etag != plan.etag:
            raise StateConflict(
                f"the watermark {store.uri} changed since the reset was planned (a run wrote "
                "it); nothing was reset. Run the command again"
            )
        seq = old.manifest_seq
        if old.pending_files:  # keep them committed: they move into a manifest of their own
            seq += 1
            run_id = f"reset{naming.new_run_id()[:7]}"
            write_manifest(storage, plan.pipeline, plan.table, run_id, seq, old.pending_files)
        # File names carry the run's start to the second: a cutoff one second before this one
        # can never skip a file of a run that starts after the reset.
        cutoff = utc_now().replace(microsecond=0) - timedelta(seconds=1)
        fresh = Watermark(
            pipeline=plan.pipeline,
            table=plan.table,
            target=target,
            load_cutoff=cutoff.astimezone(UTC),
            manifest_seq=seq,
            column_mapping=old.column_mapping,
            schema_fingerprint=old.schema_fingerprint,
            primary_key=old.primary_key,
            cursor_column=old.cursor_column,
        )
        store.save(fresh, etag)
    plan.done = True
    return plan


def _position(watermark: Watermark) -> str:
    state = watermark.mysql_state
    if state.cursor is None:
        return "none"
    parts = []
    if state.last_timestamp is not None:
        parts.append(state.last_timestamp.isoformat())
    if state.last_id is not None:
        parts.append(f"id {state.last_id}")
    return ", ".join(parts) or str(state.cursor.model_dump())


# --------------------------------------------------------------------------- set-count


def set_count(
    config: Config,
    pipeline: str,
    table: str,
    *,
    count: int,
    mode: Literal["absolute", "additive"],
    storage: Storage | None = None,
) -> WatermarkChange:
    """Correct the watermark's extracted-row count (mysql_state.total_rows).

    The loaded count (redshift_state.total_rows) is not settable: every load measures it with
    COUNT(*) on the target.
    """
    table_key, _ = config.table(pipeline, table)
    if mode == "absolute" and count < 0:
        raise AdminError(f"--count {count} is negative; an absolute count is 0 or more")
    storage = storage or open_storage(config.storage)
    store = WatermarkStore(storage, pipeline, table_key, config.pipeline(pipeline).target)
    with _holding(storage, pipeline, table_key, "watermark-count set-count"):
        watermark, etag = store.load()
        before = summary(watermark)
        new = count if mode == "absolute" else watermark.mysql_state.total_rows + count
        if new < 0:
            raise AdminError(
                f"adding {count:,} to {watermark.mysql_state.total_rows:,} gives {new:,}; "
                "a count cannot be negative. Nothing was changed"
            )
        watermark.mysql_state.total_rows = new
        store.save(watermark, etag)
    return WatermarkChange(pipeline, table_key, store.uri, before, summary(watermark))


def _holding(storage: Storage, pipeline: str, table: str, purpose: str) -> Lease:
    """The table's extraction lease: a manual change never interleaves with an extraction."""
    return Lease(
        storage, naming.lock_key(pipeline, table), run_id=naming.new_run_id(), purpose=purpose
    )
