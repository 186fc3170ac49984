"""The checks each materialisation of the asset pair reports about itself (in-asset checks).

On `s3_batches`:
- `files_match_manifest` (blocking): every file the run committed is in storage and its Parquet
  footer holds the rows its manifest records; a refresh also holds the rows the source had in
  the window. A failure stops the load of that run: the warehouse is not fed files that do not
  match the state.
- `watermark_never_moves_backwards` (warning): the table's cursor is not behind the one the
  previous materialisation saw. It moves back only when someone sets or resets it (the rows
  after the new position are then extracted again and merged, not duplicated); the check makes
  that visible.
- `source_schema_unchanged` (warning): the source's columns are those the previous run pinned;
  otherwise it names the columns added and removed (new files carry the new schema and the
  load evolves the target).

On the warehouse asset of a time-partitioned table:
- `window_rows_match_source`: the target's rows in the window equal the source's rows in it
  when the extraction ended. The target may hold up to `changed_since` more rows: rows updated
  since the extraction's bound have left the window in the source, and leave it in the target
  with the next load. Fewer rows, or more than that, fail with the difference.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from typing import Any

import dagster as dg
import pyarrow.parquet as pq

from s3rs_dagster.adapters.storage import Storage
from s3rs_dagster.config import Config
from s3rs_dagster.core.extract import ExtractReport
from s3rs_dagster.core.state import FileEntry, cursor_moved_back
from s3rs_dagster.core.target import target_window_rows

FILES_MATCH_MANIFEST = "files_match_manifest"
WATERMARK_NEVER_MOVES_BACKWARDS = "watermark_never_moves_backwards"
SOURCE_SCHEMA_UNCHANGED = "source_schema_unchanged"
WINDOW_ROWS_MATCH_SOURCE = "window_rows_match_source"


def batch_check_specs(key: dg.AssetKey) -> list[dg.AssetCheckSpec]:
    return [
        dg.AssetCheckSpec(
            FILES_MATCH_MANIFEST,
            asset=key,
            blocking=True,
            description="The run's files are in storage with the rows their manifest records "
            "(and, for a refresh, the rows the source had in the window).",
        ),
        dg.AssetCheckSpec(
            WATERMARK_NEVER_MOVES_BACKWARDS,
            asset=key,
            description="The table's cursor is not behind the one the previous run saw.",
        ),
        dg.AssetCheckSpec(
            SOURCE_SCHEMA_UNCHANGED,
            asset=key,
            description="The source's columns are those the previous run pinned.",
        ),
    ]


def warehouse_check_specs(key: dg.AssetKey, *, partitioned: bool) -> list[dg.AssetCheckSpec]:
    if not partitioned:
        return []
    return [
        dg.AssetCheckSpec(
            WINDOW_ROWS_MATCH_SOURCE,
            asset=key,
            description="The target's rows in the window equal the source's rows in it at "
            "extraction (up to the rows updated since).",
        )
    ]


def files_match_manifest(
    storage: Storage, files: list[FileEntry], report: ExtractReport
) -> dg.AssetCheckResult:
    filesystem, base = storage.filesystem()

    def footer_rows(entry: FileEntry) -> int | None:
        try:
            with filesystem.open_input_file(f"{base}/{entry.key}") as handle:
                return pq.ParquetFile(handle).metadata.num_rows
        except (OSError, ValueError):
            return None

    with ThreadPoolExecutor(max_workers=8) as pool:
        found = list(pool.map(footer_rows, files))
    problems = [
        f"{entry.key}: missing or unreadable"
        if rows is None
        else f"{entry.key}: {rows} rows, the manifest says {entry.rows}"
        for entry, rows in zip(files, found, strict=True)
        if rows != entry.rows
    ]
    file_rows = sum(rows or 0 for rows in found)
    if file_rows != report.rows and not problems:
        problems.append(f"the files hold {file_rows} rows, the run extracted {report.rows}")
    window = report.window
    metadata: dict[str, Any] = {"files": len(files), "file_rows": file_rows}
    if window is not None and any(entry.refresh for entry in files):
        metadata["source_rows_in_window"] = window.rows
        surplus = file_rows - window.rows
        if not 0 <= surplus <= window.changed_since:
            problems.append(
                f"the refresh wrote {file_rows} rows, the source holds {window.rows} in the "
                f"window: {_difference(surplus)}"
            )
    if problems:
        metadata["problems"] = dg.MetadataValue.md("\n".join(f"- {p}" for p in problems))
    return dg.AssetCheckResult(
        check_name=FILES_MATCH_MANIFEST,
        passed=not problems,
        metadata=metadata,
        description=problems[0] if problems else None,
    )


def watermark_never_moves_backwards(
    context: dg.AssetExecutionContext, key: dg.AssetKey, report: ExtractReport
) -> dg.AssetCheckResult:
    before = report.watermark_before or {}
    previous_event = context.instance.get_latest_materialization_event(key)
    previous: dict[str, Any] = {}
    if previous_event is not None and previous_event.asset_materialization is not None:
        value = previous_event.asset_materialization.metadata.get("watermark_after")
        previous = value.value if isinstance(value, dg.JsonMetadataValue) else {}  # type: ignore[assignment]
    moved_back = bool(previous) and cursor_moved_back(previous, before)
    within_run = cursor_moved_back(before, report.watermark_after or before)
    passed = not (moved_back or within_run)
    description = None
    if moved_back:
        description = (
            f"the cursor moved back from {_position(previous)} (after the previous run) to "
            f"{_position(before)}: was it set or reset? Rows after it are extracted again"
        )
    elif within_run:
        description = "this run moved the cursor backwards"
    return dg.AssetCheckResult(
        check_name=WATERMARK_NEVER_MOVES_BACKWARDS,
        passed=passed,
        severity=dg.AssetCheckSeverity.WARN,
        description=description,
        metadata={
            "previous_run_after": dg.MetadataValue.json(previous),
            "this_run_before": dg.MetadataValue.json(before),
        },
    )


def source_schema_unchanged(key: dg.AssetKey, report: ExtractReport) -> dg.AssetCheckResult:
    change = report.schema_change
    metadata: dict[str, Any] = {}
    description = None
    if change is not None:
        metadata = {
            "added": ", ".join(change["added"]) or "none",
            "removed": ", ".join(change["removed"]) or "none",
            "fingerprint": f"{change['from']} -> {change['to']}",
        }
        description = (
            f"the source schema of {'/'.join(key.path[:2])} changed: added "
            f"{metadata['added']}; removed {metadata['removed']}"
        )
    return dg.AssetCheckResult(
        check_name=SOURCE_SCHEMA_UNCHANGED,
        passed=change is None,
        severity=dg.AssetCheckSeverity.WARN,
        description=description,
        metadata=metadata,
    )


def window_rows_match_source(
    config: Config, pipeline: str, table: str, batch: dict[str, Any]
) -> dg.AssetCheckResult:
    window = batch.get("window")
    if window is None:
        return dg.AssetCheckResult(
            check_name=WINDOW_ROWS_MATCH_SOURCE,
            passed=True,
            severity=dg.AssetCheckSeverity.WARN,
            description="no source count for this window (its files came from `s3rs sync`); "
            "materialise the s3_batches partition to count it",
        )
    target_rows = target_window_rows(
        config, pipeline, table, window["column"], window["kind"], window["start"], window["end"]
    )
    surplus = (target_rows or 0) - window["rows"]
    passed = 0 <= surplus <= window["changed_since"]
    return dg.AssetCheckResult(
        check_name=WINDOW_ROWS_MATCH_SOURCE,
        passed=passed,
        description=None
        if passed
        else f"window {batch.get('partition')}: the target has {target_rows or 0} rows, the "
        f"source had {window['rows']}: {_difference(surplus)}",
        metadata={
            "target_rows": target_rows or 0,
            "source_rows": window["rows"],
            "target_minus_source": surplus,
            "source_rows_changed_since": window["changed_since"],
        },
    )


def _difference(surplus: int) -> str:
    if surplus < 0:
        return f"{-surplus} fewer (rows are missing from the target: refresh the window)"
    return (
        f"{surplus} more (rows deleted from the source, or written to the target by something "
        "else: a refresh of the window carries the deletes)"
    )


def _position(summary: dict[str, Any]) -> str:
    return f"({summary.get('last_timestamp')}, {summary.get('last_id')})"
