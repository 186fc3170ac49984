"""The watermark: one JSON document per (pipeline, table), read and written with compare-and-swap.

Field names follow the existing tool's v2 format (`mysql_state.last_timestamp`, `last_id`,
`total_rows`, `status`; `redshift_state.total_rows`, `status`) so its users can read it, with
timestamps in ISO 8601 with an offset. Counts are absolute: each committed file adds its rows
once, together with the cursor move, in one conditional write.

`pending_files` lists data files committed since the table's last manifest was written; the
extract stage moves them into an immutable manifest every so often. A file is listed (in a
manifest or here) in the same write that moves the cursor past its rows, so a crash can never
leave rows both re-extracted and listed, nor listed nowhere.

A document that cannot be read or does not validate stops the run: it is never treated as empty.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Annotated, Any, Literal

from pydantic import (
    AwareDatetime,
    BaseModel,
    ConfigDict,
    Field,
    PlainSerializer,
    ValidationError,
)

from s3rs_dagster.adapters.storage import (
    ObjectNotFound,
    PreconditionFailed,
    Storage,
    StorageError,
)
from s3rs_dagster.core.naming import watermark_key

WATERMARK_FORMAT = "s3rs-watermark/1"

Instant = Annotated[
    AwareDatetime, PlainSerializer(lambda value: value.isoformat(), return_type=str)
]
Status = Literal["never", "running", "success", "failed"]


def utc_now() -> datetime:
    return datetime.now(UTC)


class _Doc(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Cursor(_Doc):
    """A position in the table's CDC order, as the exact text MySQL printed for each value."""

    timestamp: str | None = None
    key: list[str] = []


class FileEntry(_Doc):
    """One immutable Parquet file, as listed in a manifest."""

    key: str
    uri: str
    rows: int
    bytes: int
    schema_fingerprint: str
    partition: str
    run_id: str
    created_at: Instant
    cursor_min: Cursor | None = None
    cursor_max: Cursor | None = None
    zero_dates: dict[str, int] = {}
    null_cursor: bool = Field(
        default=False, description="Rows whose timestamp cursor is NULL (see docs/decisions.md)."
    )
    snapshot_id: str | None = Field(
        default=None, description="full_sync: the snapshot this file belongs to."
    )
    refresh: bool = Field(
        default=False, description="Written by a refresh of its partition's whole window."
    )


class InitialSnapshot(_Doc):
    """A hybrid table's first read, in primary-key order instead of cursor order.

    It takes the rows whose cursor is below `bound` (the first run's upper bound) by ranges of
    the key; `last_key` is the highest key committed so far, so a killed run resumes after it.
    Rows at or above the bound, and rows updated while the snapshot runs, are taken by the
    incremental extraction that starts when it finishes (`finished_at`), from the bound on.
    Documents without this field have no snapshot in progress.
    """

    run_id: str
    bound: str = Field(description="Rows with a cursor timestamp below this text are read.")
    bound_at: Instant
    started_at: Instant
    last_key: str | None = Field(default=None, description="Highest key committed so far.")
    rows: int = 0
    finished_at: Instant | None = None

    @property
    def in_progress(self) -> bool:
        return self.finished_at is None


class MysqlState(_Doc):
    last_timestamp: Instant | None = None
    last_id: int | str | list[str] | None = None
    cursor: Cursor | None = None
    null_cursor_key: list[str] | None = None
    total_rows: int = 0
    status: Status = "never"
    last_run_id: str | None = None
    last_run_started_at: Instant | None = None
    last_run_finished_at: Instant | None = None
    last_error: str | None = None
    snapshot_run_id: str | None = Field(
        default=None, description="full_sync: the snapshot being written (None when complete)."
    )
    last_complete_snapshot: str | None = None
    initial_snapshot: InitialSnapshot | None = Field(
        default=None, description="hybrid: the first read in primary-key order (see its class)."
    )


class RedshiftState(_Doc):
    total_rows: int = 0
    status: Status = "never"
    last_loaded_at: Instant | None = None
    last_error: str | None = None


class Watermark(_Doc):
    format: Literal["s3rs-watermark/1"] = WATERMARK_FORMAT
    pipeline: str
    table: str
    target: str
    mysql_state: MysqlState = MysqlState()
    redshift_state: RedshiftState = RedshiftState()
    load_cutoff: Instant | None = Field(
        default=None, description="Files older than this are not loaded (watermark set)."
    )
    pending_files: list[FileEntry] = []
    manifest_seq: int = 0
    column_mapping: dict[str, str] = {}
    schema_fingerprint: str | None = None
    primary_key: list[str] = Field(
        default=[], description="Target names of the key the load merges on (empty: none)."
    )
    cursor_column: str | None = Field(
        default=None, description="Target name of the timestamp cursor: newest version wins."
    )
    updated_at: Instant | None = None

    def to_json(self) -> bytes:
        return json.dumps(self.model_dump(mode="json"), indent=2, ensure_ascii=False).encode()


class StateError(Exception):
    """The state cannot be used; the message names the document and the fix."""


class BrokenWatermark(StateError):
    """The stored watermark cannot be read as a watermark (not JSON, wrong fields or types).

    Only `watermark reset` may replace it, and only with compare-and-swap on the broken
    bytes (`etag`), so a document repaired in the meantime is never overwritten.
    """

    def __init__(self, message: str, problem: str, etag: str) -> None:
        super().__init__(message)
        self.problem = problem
        self.etag = etag


REQUIRED_FIELDS: dict[str, tuple[str, ...]] = {
    "": ("format", "pipeline", "table", "target", "mysql_state", "redshift_state"),
    "mysql_state": ("last_timestamp", "last_id", "cursor", "total_rows", "status"),
    "redshift_state": ("total_rows", "status"),
}
"""Fields every watermark s3rs wrote has held since its first version: a document without
one was cut or edited by hand, and reading it with the default (say, no cursor) would
silently start the table over."""


class StateConflict(StateError):
    """Another writer changed the document since it was read."""


class WatermarkStore:
    """Reads and conditionally writes one table's watermark document."""

    def __init__(self, storage: Storage, pipeline: str, table: str, target: str) -> None:
        self.storage = storage
        self.pipeline = pipeline
        self.table = table
        self.target = target
        self.key = watermark_key(pipeline, table)

    @property
    def uri(self) -> str:
        return self.storage.uri(self.key)

    def load(self) -> tuple[Watermark, str | None]:
        """The document and its version token; a fresh document (token None) if there is none."""
        try:
            data, etag = self.storage.get_bytes(self.key)
        except ObjectNotFound:
            return Watermark(pipeline=self.pipeline, table=self.table, target=self.target), None
        except StorageError as exc:
            raise StateError(
                f"cannot read the watermark {self.uri}: {exc}. Nothing was extracted; "
                "fix the access and run again"
            ) from None
        try:
            return self._parse(data), etag
        except StateError as exc:
            raise BrokenWatermark(str(exc), exc.args[0], etag) from None

    def save(self, watermark: Watermark, etag: str | None) -> str:
        """Write if nobody else wrote since `etag` was read; return the new token."""
        watermark.updated_at = utc_now()
        body = watermark.to_json()
        try:
            return self.storage.put_bytes(
                self.key,
                body,
                if_match=etag,
                if_none_match=etag is None,
                content_type="application/json",
            )
        except PreconditionFailed:
            # A retried request can be refused because its first attempt already succeeded.
            current = self._current()
            if current is not None and current[0] == body:
                return current[1]
            raise StateConflict(
                f"the watermark {self.uri} was changed by another writer while this run held "
                "it; this run stopped without writing. Check `s3rs status` for who else runs"
            ) from None
        except StorageError as exc:
            raise StateError(f"cannot write the watermark {self.uri}: {exc}") from None

    def _current(self) -> tuple[bytes, str] | None:
        try:
            return self.storage.get_bytes(self.key)
        except StorageError:
            return None

    def _parse(self, data: bytes) -> Watermark:
        fix = (
            f"Nothing was changed. Correct it by hand (or restore it from a backup), or run "
            f"`s3rs watermark reset -p {self.pipeline} -t {self.table}` to replace it and "
            "extract the table again from start_date"
        )
        where = f"the watermark {self.uri}"
        if not data.strip():
            raise StateError(f"{where} is empty ({len(data)} bytes). {fix}")
        try:
            raw = json.loads(data)
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise StateError(f"{where} is not valid JSON ({exc}). {fix}") from None
        if not isinstance(raw, dict):
            raise StateError(f"{where} is not a JSON object. {fix}")
        found = raw.get("format")
        if found is None and "mysql_state" in raw:
            raise StateError(
                f"{where} is in the existing tool's v2 format; carry it over "
                "with `s3rs watermark import` instead of editing it"
            )
        if found != WATERMARK_FORMAT:
            raise StateError(
                f"{where} has format {found!r}, not {WATERMARK_FORMAT!r} (written by another "
                f"version of s3rs? run that version, or upgrade). {fix}"
            )
        for section, names in REQUIRED_FIELDS.items():
            node = raw.get(section) if section else raw
            if not isinstance(node, dict):
                continue  # validation below names the wrong type
            missing = [name for name in names if name not in node]
            if missing:
                at = ", ".join(f"{section}.{name}" if section else name for name in missing)
                raise StateError(f"{where} lacks {at} (cut or edited by hand?). {fix}")
        try:
            watermark = Watermark.model_validate(raw)
        except ValidationError as exc:
            first = exc.errors(include_url=False)[0]
            at = ".".join(str(part) for part in first["loc"])
            value = first.get("input")
            shown = f" (found {json.dumps(value)[:80]})" if not isinstance(value, dict) else ""
            if first["type"] == "timezone_aware":
                shown += "; timestamps need an offset, e.g. 2025-03-01T12:00:00+00:00"
            raise StateError(f"{where} is invalid at {at}: {first['msg']}{shown}. {fix}") from None
        if (watermark.pipeline, watermark.table) != (self.pipeline, self.table):
            raise StateError(
                f"{where} belongs to {watermark.pipeline}/{watermark.table}, "
                f"not {self.pipeline}/{self.table}. {fix}"
            )
        state = watermark.mysql_state
        key = state.cursor.key if state.cursor is not None else []
        expected = None if not key else (key if len(key) > 1 else _id_of(key[0]))
        # Without a cursor key (none yet, an id-less cursor, a finished full_sync snapshot)
        # last_id is only a record of the last row; with one, it must say the same.
        if key and state.last_id != expected:
            raise StateError(
                f"{where} has mysql_state.last_id {json.dumps(state.last_id)}, but its cursor "
                f"(mysql_state.cursor.key, where extraction resumes) says "
                f"{json.dumps(expected)}: set last_id back to {json.dumps(expected)} (to move "
                "the cursor, use `s3rs watermark set --timestamp T --id N` on a readable "
                f"document). {fix}"
            )
        return watermark


def _id_of(text: str) -> int | str:
    """`last_id` as the extract stage writes it for a one-column key."""
    return int(text) if text.lstrip("-").isdigit() else text


def cursor_moved_back(before: dict[str, Any], after: dict[str, Any]) -> bool:
    """Whether a watermark summary's position (`last_timestamp`, `last_id`, as an extract
    report gives them) is behind an earlier one. Unknown positions never count as behind."""

    def position(summary: dict[str, Any]) -> tuple[datetime | None, Any]:
        stamp = summary.get("last_timestamp")
        return (datetime.fromisoformat(stamp) if stamp else None, summary.get("last_id"))

    (old_stamp, old_id), (new_stamp, new_id) = position(before), position(after)
    if old_stamp is not None and new_stamp is not None and new_stamp != old_stamp:
        return new_stamp < old_stamp
    if old_stamp is not None and new_stamp is None:
        return True
    if isinstance(old_id, int) and isinstance(new_id, int):
        return new_id < old_id
    return old_id is not None and new_id is None
