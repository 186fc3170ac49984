"""`s3rs watermark import`: carry over the existing tool's v2 watermark, so nothing is reloaded.

The existing tool kept one JSON document per table (its "v2.0 watermark"):

    {"mysql_state": {"last_timestamp": "2025-08-25T06:30:08", "last_id": 80453182,
                     "total_rows": 110000, "status": "success", ...},
     "redshift_state": {"total_rows": 110000, "status": "success", ...},
     "processed_files": ["s3://bucket/incremental/.../file1.parquet", ...]}

Importing it does three things, in this order, and writes nothing until the whole document has
been checked:

1. The cursor: `last_timestamp` (naive: wall-clock time in the source's configured
   `time_zone`; or with an offset) and `last_id` become our extraction cursor exactly as
   `s3rs watermark set --timestamp T --id N` would set it (`watermark_admin.cursor_at`): the
   next extraction takes the rows after (T, N), the existing tool's hybrid rule. Without
   `last_id` it takes the rows at or after T (re-reading the rows stamped T, merged by key).
2. `processed_files` are written into OUR ledger (`<schema>.s3rs_loaded_files` in the target)
   as loaded, in one transaction, with the row count from each file's Parquet footer (0 when
   the file is gone). Files under the storage root are recorded by their key, others by their
   full URI. The load stage only ever loads files our manifests list, so these are never
   loaded; the ledger rows also keep files under the table's prefix from being reported or
   adopted as strays, and let `s3clean` treat them as loaded.
3. The watermark document: cursor, `mysql_state.total_rows`/`status`,
   `redshift_state.total_rows`/`status`, written with compare-and-swap while holding the
   table's extraction lease. An existing watermark that holds a cursor, counts or committed
   files is not replaced unless `force`.

A failure between 2 and 3 leaves only ledger rows for files that are never loaded anyway;
running the import again completes it (ledger rows already present are not duplicated).
"""

from __future__ import annotations

import json
import re
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC
from pathlib import Path
from typing import Any, Literal
from urllib.parse import unquote, urlparse

import boto3
import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq
from botocore.exceptions import BotoCoreError, ClientError

from s3rs_dagster.adapters.storage import S3Storage, Storage, open_storage
from s3rs_dagster.adapters.warehouse import open_warehouse
from s3rs_dagster.config import Config
from s3rs_dagster.core import naming
from s3rs_dagster.core.cursor import timestamp_instant
from s3rs_dagster.core.lease import Lease
from s3rs_dagster.core.load import insert_ledger_rows, read_ledger
from s3rs_dagster.core.manifests import committed_files
from s3rs_dagster.core.source_probe import probe_source
from s3rs_dagster.core.state import Status, Watermark, WatermarkStore
from s3rs_dagster.core.target import LEDGER_TABLE, target_table_name
from s3rs_dagster.core.watermark_admin import AdminError, cursor_at, parse_timestamp, summary

LEGACY_RUN_ID = "legacy-v2"
"""The run id of the ledger rows an import writes (`run_id` column of the ledger)."""

KNOWN_MYSQL_FIELDS = frozenset({"last_timestamp", "last_id", "total_rows", "status"})
KNOWN_REDSHIFT_FIELDS = frozenset({"total_rows", "status"})
KNOWN_TOP_FIELDS = frozenset({"mysql_state", "redshift_state", "processed_files"})
_STATUS = {
    "success": "success",
    "completed": "success",
    "complete": "success",
    "failed": "failed",
    "error": "failed",
    "pending": "pending",
    "running": "pending",
    "in_progress": "pending",
}
_SCHEMES = {"s3": "s3", "s3a": "s3", "s3n": "s3", "file": "file"}
_FOOTER_THREADS = 16


class LegacyImportError(Exception):
    """The import was refused or failed; nothing was written. The message says why and what
    to do (the CLI exits 1)."""


class LegacyDocumentError(LegacyImportError):
    """The document is not a usable v2 watermark: names the field, what was found and what was
    expected; nothing was written (the CLI exits 2)."""


@dataclass(frozen=True)
class LegacyWatermark:
    """A validated v2 document, before any conversion that needs the source."""

    last_timestamp: str | None
    last_id: int | str | None
    mysql_total_rows: int
    mysql_status: str
    redshift_total_rows: int
    redshift_status: str
    processed_files: list[str]
    """Normalised URIs (s3://bucket/key, file:///path, or a bare key), each once."""
    duplicates: int
    ignored_fields: list[str]


@dataclass
class LegacyFile:
    uri: str
    ledger_key: str
    rows: int
    state: Literal["new", "already in the ledger", "missing"] = "new"
    error: str | None = None


@dataclass
class ImportReport:
    """What an import did (or, with dry_run, would do)."""

    pipeline: str
    table: str
    target: str
    source_uri: str
    watermark_uri: str
    dry_run: bool
    done: bool = False
    before: dict[str, Any] | None = None
    """The s3rs watermark before the import (None when there was none)."""
    after: dict[str, Any] = field(default_factory=dict)
    files: list[LegacyFile] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    @property
    def files_recorded(self) -> int:
        return sum(1 for f in self.files if f.state != "already in the ledger")

    @property
    def file_rows(self) -> int:
        return sum(f.rows for f in self.files)

    def lines(self) -> list[str]:
        """The messages the CLI prints, in order (warnings go to stderr: `warning_lines`)."""
        verb = "would import" if self.dry_run else "imported"
        after = self.after
        out = [
            f"{self.pipeline}/{self.table}: {verb} {self.source_uri}",
            f"  into {self.watermark_uri}"
            + (" (replacing an existing watermark)" if self.before else ""),
            f"  cursor: last_timestamp {after.get('last_timestamp') or '-'}, "
            f"last_id {after.get('last_id') if after.get('last_id') is not None else '-'}",
            f"  extracted rows {after.get('total_rows', 0):,} ({after.get('status')}), "
            f"loaded rows {after.get('redshift_total_rows', 0):,} "
            f"({after.get('redshift_status')})",
            f"  processed files: {len(self.files)} ({self.file_rows:,} rows in their footers); "
            f"{self.files_recorded} {'to record' if self.dry_run else 'recorded'} as loaded in "
            f"the ledger {LEDGER_TABLE} of target '{self.target}', "
            f"{len(self.files) - self.files_recorded} already there",
        ]
        out += [f"  note: {note}" for note in self.notes]
        if self.dry_run:
            out.append("  dry run: nothing was written")
        return out

    def warning_lines(self) -> list[str]:
        return [f"warning: {warning}" for warning in self.warnings]


# --------------------------------------------------------------------------- reading


def read_legacy_document(
    uri: str, *, config: Config | None = None, storage: Storage | None = None
) -> bytes:
    """The bytes of a v2 document at `uri`: `s3://bucket/key` (read with the storage adapter's
    S3 client when the storage is on S3, else the standard AWS credential chain), a `file://`
    URI, or a local path."""
    parsed = urlparse(uri)
    if parsed.scheme in ("s3", "s3a", "s3n"):
        bucket, key = parsed.netloc, parsed.path.lstrip("/")
        if not bucket or not key:
            raise LegacyImportError(f"--from {uri!r}: expected s3://bucket/path/watermark.json")
        if storage is None and config is not None:
            storage = open_storage(config.storage)
        client = storage.get_client() if isinstance(storage, S3Storage) else boto3.client("s3")
        try:
            return bytes(client.get_object(Bucket=bucket, Key=key)["Body"].read())
        except ClientError as exc:
            code = exc.response.get("Error", {}).get("Code", "?")
            hint = " (no such object)" if code in ("NoSuchKey", "404") else ""
            raise LegacyImportError(f"cannot read {uri}: {code}{hint}") from None
        except BotoCoreError as exc:
            raise LegacyImportError(f"cannot read {uri}: {exc}") from None
    if parsed.scheme in ("", "file"):
        path = Path(unquote(parsed.path) if parsed.scheme == "file" else uri).expanduser()
        try:
            return path.read_bytes()
        except OSError as exc:
            raise LegacyImportError(f"cannot read {path}: {exc.strerror or exc}") from None
    raise LegacyImportError(
        f"--from {uri!r}: expected s3://bucket/key, file:///path or a local path"
    )


# --------------------------------------------------------------------------- validating


def parse_legacy_document(document: bytes, source_uri: str = "the document") -> LegacyWatermark:
    """Check a v2 document field by field; raise LegacyDocumentError naming the first problem."""

    def bad(where: str, expected: str, found: Any) -> LegacyDocumentError:
        shown = json.dumps(found) if not isinstance(found, str) else repr(found)
        if len(shown) > 80:
            shown = shown[:77] + "..."
        return LegacyDocumentError(
            f"{source_uri}: {where} must be {expected}, found {shown}. Nothing was imported"
        )

    try:
        raw = json.loads(document)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise LegacyDocumentError(
            f"{source_uri} is not valid JSON ({exc}). Nothing was imported"
        ) from None
    if not isinstance(raw, dict):
        raise bad("the document", "a JSON object (the v2 watermark)", raw)
    if str(raw.get("format", "")).startswith("s3rs-watermark"):
        raise LegacyDocumentError(
            f"{source_uri} is already an s3rs watermark, not the existing tool's v2 document; "
            "nothing to import"
        )
    if "mysql_state" not in raw:
        raise LegacyDocumentError(
            f"{source_uri}: mysql_state is missing, so this is not a v2 watermark (a v1 "
            "document must first be migrated by the existing tool, which converts v1 to v2 on "
            "its next run). Nothing was imported"
        )
    mysql = raw["mysql_state"]
    if not isinstance(mysql, dict):
        raise bad("mysql_state", "an object", mysql)
    redshift = raw.get("redshift_state")
    if redshift is None:
        raise LegacyDocumentError(
            f"{source_uri}: redshift_state is missing (expected an object with total_rows and "
            "status). Nothing was imported"
        )
    if not isinstance(redshift, dict):
        raise bad("redshift_state", "an object", redshift)

    stamp = mysql.get("last_timestamp")
    if stamp is not None:
        if not isinstance(stamp, str):
            raise bad("mysql_state.last_timestamp", "an ISO 8601 timestamp text or null", stamp)
        try:
            parse_timestamp(stamp, UTC)
        except AdminError:
            raise bad(
                "mysql_state.last_timestamp",
                "an ISO 8601 timestamp like 2025-08-25T06:30:08 (wall-clock time in the "
                "source's time_zone) or 2025-08-25T06:30:08+00:00",
                stamp,
            ) from None
    last_id = mysql.get("last_id")
    if isinstance(last_id, bool) or not (last_id is None or isinstance(last_id, int | str)):
        raise bad("mysql_state.last_id", "an integer (or a key value as text) or null", last_id)
    if isinstance(last_id, str):
        last_id = last_id.strip()
        if not last_id:
            raise bad("mysql_state.last_id", "an integer (or a key value as text) or null", "")
        if re.fullmatch(r"-?\d+", last_id):
            last_id = int(last_id)
    if stamp is None and last_id is None and (mysql.get("total_rows") or 0):
        raise LegacyDocumentError(
            f"{source_uri}: mysql_state has neither last_timestamp nor last_id but counts "
            f"{mysql.get('total_rows')} rows; there is no cursor to continue from. Nothing "
            "was imported"
        )

    def count(where: str, value: Any) -> int:
        if value is None:
            return 0
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise bad(where, "a whole number, 0 or more", value)
        return value

    def status(where: str, value: Any) -> str:
        if not isinstance(value, str) or value.strip().lower() not in _STATUS:
            raise bad(where, f"one of {', '.join(_STATUS)}", value)
        return value.strip().lower()

    mysql_rows = count("mysql_state.total_rows", mysql.get("total_rows"))
    redshift_rows = count("redshift_state.total_rows", redshift.get("total_rows"))
    mysql_status = status("mysql_state.status", mysql.get("status"))
    redshift_status = status("redshift_state.status", redshift.get("status"))

    files_raw = raw.get("processed_files")
    if files_raw is None:
        files_raw = []
    if not isinstance(files_raw, list):
        raise bad("processed_files", "a list of S3 URIs", files_raw)
    files: dict[str, None] = {}
    for index, value in enumerate(files_raw):
        normalised = _normalise_uri(value) if isinstance(value, str) else None
        if normalised is None:
            raise bad(
                f"processed_files[{index}]",
                "an S3 URI like s3://bucket/path/file.parquet (or a key in the storage's bucket)",
                value,
            )
        files[normalised] = None
    ignored = sorted(
        [f"mysql_state.{k}" for k in mysql if k not in KNOWN_MYSQL_FIELDS]
        + [f"redshift_state.{k}" for k in redshift if k not in KNOWN_REDSHIFT_FIELDS]
        + [k for k in raw if k not in KNOWN_TOP_FIELDS]
    )
    return LegacyWatermark(
        last_timestamp=stamp,
        last_id=last_id,
        mysql_total_rows=mysql_rows,
        mysql_status=mysql_status,
        redshift_total_rows=redshift_rows,
        redshift_status=redshift_status,
        processed_files=list(files),
        duplicates=len(files_raw) - len(files),
        ignored_fields=ignored,
    )


def _normalise_uri(value: str) -> str | None:
    """s3://bucket/key (s3a/s3n too), file:///path, or a bare key; None when unusable."""
    text = value.strip()
    if not text or "\x00" in text:
        return None
    if "://" not in text:
        key = text.lstrip("/")
        return key if key and not key.endswith("/") else None
    parsed = urlparse(text)
    scheme = _SCHEMES.get(parsed.scheme.lower())
    if scheme == "file":
        return f"file://{parsed.path}" if parsed.path and not parsed.path.endswith("/") else None
    if scheme != "s3" or not parsed.netloc:
        return None
    key = parsed.path.lstrip("/")
    if not key or key.endswith("/"):
        return None
    return f"s3://{parsed.netloc}/{key}"


# --------------------------------------------------------------------------- importing


def import_legacy_watermark(
    config: Config,
    pipeline: str,
    table: str,
    document: bytes,
    *,
    source_uri: str,
    dry_run: bool = False,
    force: bool = False,
    storage: Storage | None = None,
) -> ImportReport:
    """Import the existing tool's v2 watermark of one table (see the module docstring).

    Raises LegacyDocumentError (an invalid document), LegacyImportError (refused: an s3rs
    watermark with progress exists and not force; the old tool's last run did not succeed and
    not force; a full_sync table), AdminError (the cursor does not fit the table), and the
    source, storage, warehouse and lease errors of the other commands. Nothing is written
    before every check has passed; dry_run writes nothing at all.
    """
    legacy = parse_legacy_document(document, source_uri)
    table_key, table_config = config.table(pipeline, table)
    target = config.pipeline(pipeline).target
    storage = storage or open_storage(config.storage)
    store = WatermarkStore(storage, pipeline, table_key, target)
    report = ImportReport(pipeline, table_key, target, source_uri, store.uri, dry_run)
    if table_config.cdc_strategy == "full_sync":
        raise LegacyImportError(
            f"{table_key} uses cdc_strategy: full_sync, which has no cursor to carry over: "
            "every sync takes a whole snapshot. Nothing was imported"
        )
    if legacy.ignored_fields:
        report.notes.append(f"not carried over: {', '.join(legacy.ignored_fields)}")
    if legacy.duplicates:
        report.notes.append(f"{legacy.duplicates} duplicate entries in processed_files")
    unfinished = [
        f"{stage}.status is {value}"
        for stage, value in (
            ("mysql_state", legacy.mysql_status),
            ("redshift_state", legacy.redshift_status),
        )
        if _STATUS[value] != "success"
    ]
    if unfinished:
        message = (
            f"the existing tool's last run did not finish ({'; '.join(unfinished)}): rows it "
            "extracted but did not load are in files s3rs will never load, and the cursor "
            "already lies after them. Finish it first (its `sync --redshift-only`) and export "
            "the watermark again"
        )
        if not force:
            raise LegacyImportError(f"{message}; or pass --force to import it as it is")
        report.warnings.append(message)

    # 1. The cursor, exactly as `watermark set --timestamp T --id N` computes it.
    notes: list[str] = []
    with probe_source(config, pipeline, table_key) as probe:
        moment = (
            parse_timestamp(legacy.last_timestamp, probe.zone) if legacy.last_timestamp else None
        )
        id_text = None if legacy.last_id is None else str(legacy.last_id)
        if probe.spec.timestamp is None:
            if moment is not None:
                notes.append("last_timestamp is not used: the table is id_only")
            moment = None
        elif moment is None:
            raise LegacyDocumentError(
                f"{source_uri}: mysql_state.last_timestamp is null, but {table_key} is "
                f"{table_config.cdc_strategy} and needs a timestamp to continue from. Nothing "
                "was imported"
            )
        elif id_text is not None and not probe.spec.keys:
            notes.append("last_id is not used: the table has no key to order ties by")
            id_text = None
        try:
            cursor = cursor_at(probe, moment, id_text, notes)
        except AdminError as exc:
            raise LegacyDocumentError(
                f"{source_uri}: mysql_state.last_id/last_timestamp do not fit {table_key}: "
                f"{str(exc).replace('--id', 'last_id').replace('--timestamp', 'last_timestamp')}"
            ) from None
        spec, zone = probe.spec, probe.zone
    if id_text is None and moment is not None:
        notes.append(
            "without last_id, rows stamped exactly at last_timestamp are extracted again "
            "(merged by key; appended again in tables without a key)"
        )
    report.notes += notes

    # 2. The processed files, with their rows from the Parquet footers.
    report.files = _legacy_files(storage, legacy.processed_files)
    missing = [f for f in report.files if f.state == "missing"]
    if missing:
        report.warnings.append(
            f"{len(missing)} processed file(s) could not be read (such as {missing[0].uri}: "
            f"{missing[0].error}); they are recorded with 0 rows"
        )
    file_rows = sum(f.rows for f in report.files)
    if legacy.mysql_total_rows > file_rows and report.files:
        report.warnings.append(
            f"mysql_state.total_rows counts {legacy.mysql_total_rows:,} extracted rows, the "
            f"processed files hold {file_rows:,}: the existing tool's count is inflated (its "
            "double-counting bug) or files were not loaded. `s3rs watermark-count "
            "validate-counts` will report it; once you have checked, correct it with "
            f"`s3rs watermark-count set-count -p {pipeline} -t {table_key} --count {file_rows} "
            "--mode absolute`"
        )

    warehouse = open_warehouse(target, config.target_for(pipeline), config.storage)
    target_table = target_table_name(table_key, table_config, config.target_for(pipeline).type)

    def apply(watermark: Watermark) -> None:
        state = watermark.mysql_state
        state.cursor = cursor
        state.null_cursor_key = None
        state.last_timestamp = None
        state.last_id = None
        if cursor is not None:
            if cursor.timestamp is not None:
                state.last_timestamp = timestamp_instant(cursor.timestamp, spec, zone)
            if cursor.key:  # as `watermark set` stores it
                only = cursor.key[0]
                digits = only.lstrip("-").isdigit()
                state.last_id = cursor.key if len(cursor.key) > 1 else int(only) if digits else only
        state.total_rows = legacy.mysql_total_rows
        state.status = _our_status(legacy.mysql_status)
        state.last_error = _imported_error(legacy.mysql_status, source_uri)
        redshift = watermark.redshift_state
        redshift.total_rows = legacy.redshift_total_rows
        redshift.status = _our_status(legacy.redshift_status)
        redshift.last_error = _imported_error(legacy.redshift_status, source_uri)

    if dry_run:
        watermark, etag = store.load()
        _check_replaceable(storage, store, watermark, etag, force, report)
        with warehouse.connect(read_only=True) as session:
            _mark_known(
                report, read_ledger(session, warehouse.schema, pipeline, table_key, create=False)
            )
        apply(watermark)
        report.after = summary(watermark)
        return report

    lease = Lease(
        storage,
        naming.lock_key(pipeline, table_key),
        run_id=naming.new_run_id(),
        purpose="watermark import",
    )
    with lease:
        watermark, etag = store.load()
        _check_replaceable(storage, store, watermark, etag, force, report)
        # 3. The ledger rows, in one transaction; then the watermark, compare-and-swap.
        with warehouse.connect() as session:
            known = read_ledger(session, warehouse.schema, pipeline, table_key, create=True)
            _mark_known(report, known)
            new = [
                (f.ledger_key, f.rows, LEGACY_RUN_ID)
                for f in report.files
                if f.state != "already in the ledger"
            ]
            if new:
                session.begin()
                insert_ledger_rows(
                    session, warehouse.schema, pipeline, table_key, target_table, new
                )
                session.commit()
        apply(watermark)
        store.save(watermark, etag)
    report.after = summary(watermark)
    report.done = True
    return report


def _check_replaceable(
    storage: Storage,
    store: WatermarkStore,
    watermark: Watermark,
    etag: str | None,
    force: bool,
    report: ImportReport,
) -> None:
    if etag is None:
        return
    report.before = summary(watermark)
    files = committed_files(storage, store.pipeline, store.table, watermark)
    progress = []
    if watermark.mysql_state.cursor is not None:
        progress.append("a cursor")
    if watermark.mysql_state.total_rows:
        progress.append(f"{watermark.mysql_state.total_rows:,} extracted rows")
    if files:
        progress.append(f"{len(files)} committed file(s)")
    if not progress:
        return
    message = f"{store.uri} already holds {', '.join(progress)}"
    if not force:
        raise LegacyImportError(
            f"{message}; s3rs has run for this table. Importing would move its cursor back and "
            "replace its counts. Pass --force to replace them (committed files and the ledger "
            "stay), or import into a table s3rs has not synced yet. Nothing was imported"
        )
    report.warnings.append(f"{message}; replacing its cursor and counts (--force)")


def _mark_known(report: ImportReport, ledger: dict[str, int]) -> None:
    for legacy_file in report.files:
        if legacy_file.ledger_key in ledger:
            legacy_file.state = "already in the ledger"


def _our_status(legacy: str) -> Status:
    mapped = _STATUS[legacy]
    return "failed" if mapped == "pending" else mapped  # type: ignore[return-value]


def _imported_error(legacy: str, source_uri: str) -> str | None:
    if _STATUS[legacy] == "success":
        return None
    return f"imported from {source_uri} with the existing tool's status {legacy!r}"


def _legacy_files(storage: Storage, uris: list[str]) -> list[LegacyFile]:
    """Each processed file with its ledger key and the rows its Parquet footer records.

    A bare key (no scheme) is an object in the storage's bucket (S3), or a path under the
    storage root (local). Files under the storage root get their storage key in the ledger,
    like the files s3rs loads; others their full URI.
    """
    root = storage.url.rstrip("/") + "/"
    base = f"s3://{storage.bucket}/" if isinstance(storage, S3Storage) else root
    s3: pafs.FileSystem | None = None
    if any(not uri.startswith("file://") for uri in uris):
        s3 = storage.filesystem()[0] if isinstance(storage, S3Storage) else pafs.S3FileSystem()

    def one(uri: str) -> LegacyFile:
        full = uri if "://" in uri else base + uri
        key = full[len(root) :] if full.startswith(root) else full
        legacy_file = LegacyFile(uri=full, ledger_key=key, rows=0)
        parsed = urlparse(full)
        try:
            if parsed.scheme == "file":
                filesystem, path = pafs.LocalFileSystem(), unquote(parsed.path)
            else:
                assert s3 is not None
                filesystem, path = s3, f"{parsed.netloc}/{parsed.path.lstrip('/')}"
            with filesystem.open_input_file(path) as handle:
                legacy_file.rows = pq.read_metadata(handle).num_rows
        except (OSError, ValueError, pa.ArrowException) as exc:
            legacy_file.state = "missing"
            legacy_file.error = str(exc).splitlines()[0][:200] if str(exc) else type(exc).__name__
        return legacy_file

    with ThreadPoolExecutor(max_workers=_FOOTER_THREADS) as pool:
        return list(pool.map(one, uris))
