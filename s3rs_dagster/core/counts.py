"""Row counts of one table at every stage, side by side, with a verdict.

Four places hold a count: the source (COUNT(*) in MySQL), the committed files (the rows their
manifests list), the target (COUNT(*) in the warehouse, and the ledger's per-file rows), and the
watermark (`mysql_state.total_rows`, `redshift_state.total_rows`). Which of them must agree
depends on the write mode and on how far the table has got, so the comparisons are chosen to be
fair:

- The source is counted over what extraction covers (from `start_date`; rows with a NULL
  timestamp cursor only when the table has a key to page them by), both in total and up to the
  watermark's cursor. A row updated after it was extracted moves past the cursor but is still
  in the target, so "up to the cursor" is a lower bound for the target, the total an upper one.
- merge/replace: once nothing waits (no file to load, no source row past the cursor), the
  target must hold exactly the source's rows. append: the target must hold exactly the rows the
  ledger says were loaded (an updated row appears once per version).
- The watermark's extracted count must not exceed the committed files' rows (the existing
  tool's double-counting bug); it may be lower after a `watermark reset` or `set-count`.

`count_table` never raises for an unreachable source or target: it reports what it could
count, with the verdict "unknown" and a problem naming the error.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Literal

from s3rs_dagster.adapters.source import SourceError
from s3rs_dagster.adapters.storage import Storage, open_storage
from s3rs_dagster.adapters.tunnel import TunnelError
from s3rs_dagster.adapters.warehouse import WarehouseError
from s3rs_dagster.config import Config, TableConfig
from s3rs_dagster.core import naming
from s3rs_dagster.core.cursor import CursorError, after, timestamp_text
from s3rs_dagster.core.ledger import loaded_files
from s3rs_dagster.core.manifests import committed_files
from s3rs_dagster.core.schema import SchemaError, quote_mysql
from s3rs_dagster.core.source_probe import SourceProbe, probe_source
from s3rs_dagster.core.state import Watermark, WatermarkStore
from s3rs_dagster.core.target import target_facts, target_table_name

Verdict = Literal["ok", "behind", "mismatch", "unknown"]


@dataclass
class CountReport:
    """One table's counts; `problems` say what disagrees and by how much."""

    pipeline: str
    table: str
    target_table: str
    write_mode: str
    source_rows: int | None = None
    """Source rows up to the watermark's cursor (what extraction has passed)."""
    source_rows_total: int | None = None
    """Source rows extraction covers in all (from start_date)."""
    files: int = 0
    file_rows: int = 0
    imported_rows: int = 0
    """Rows of files the ledger holds that no manifest lists (carried over by `watermark
    import` from the existing tool): extracted, and committed, before s3rs."""
    loaded_files: int = 0
    loaded_rows: int = 0
    """Rows of the files the ledger records as loaded."""
    waiting_files: int = 0
    waiting_rows: int = 0
    cutoff_files: int = 0
    """Committed, not loaded, and before the load cutoff: they will not be loaded."""
    cutoff_rows: int = 0
    target_rows: int | None = None
    watermark_extracted: int = 0
    watermark_loaded: int = 0
    verdict: Verdict = "ok"
    problems: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """True unless something disagrees or could not be counted."""
        return self.verdict in ("ok", "behind")


def count_table(
    config: Config, pipeline: str, table: str, *, storage: Storage | None = None
) -> CountReport:
    """Count one table at the source, in the files, in the target and in the watermark."""
    table_key, table_config = config.table(pipeline, table)
    storage = storage or open_storage(config.storage)
    target = config.pipeline(pipeline).target
    watermark, _ = WatermarkStore(storage, pipeline, table_key, target).load()
    report = CountReport(
        pipeline=pipeline,
        table=table_key,
        target_table=target_table_name(table_key, table_config, config.target_for(pipeline).type),
        write_mode=_write_mode(table_config, watermark),
        watermark_extracted=watermark.mysql_state.total_rows,
        watermark_loaded=watermark.redshift_state.total_rows,
    )
    unknown: list[str] = []
    try:
        with probe_source(config, pipeline, table_key) as probe:
            report.source_rows_total, report.source_rows = _source_counts(probe, watermark)
    except (SourceError, TunnelError, SchemaError, CursorError) as exc:
        unknown.append(f"cannot count the source: {exc}")
    files = committed_files(storage, pipeline, table_key, watermark)
    report.files, report.file_rows = len(files), sum(entry.rows for entry in files)
    ledger: dict[str, int] | None = None
    try:
        ledger = loaded_files(config, pipeline, table_key)
        facts = target_facts(config, pipeline, table_key)
        report.target_rows = facts.rows
        report.target_table = facts.table
    except (WarehouseError, TunnelError) as exc:
        unknown.append(f"cannot count the target '{target}': {exc}")
    if ledger is not None:
        report.loaded_files, report.loaded_rows = len(ledger), sum(ledger.values())
        ours = {entry.key for entry in files}
        report.imported_rows = sum(rows for key, rows in ledger.items() if key not in ours)
        cutoff = watermark.load_cutoff
        for entry in files:
            if entry.key in ledger:
                continue
            written = naming.file_timestamp(entry.key) or entry.created_at
            if cutoff is not None and written <= cutoff:
                report.cutoff_files += 1
                report.cutoff_rows += entry.rows
            else:
                report.waiting_files += 1
                report.waiting_rows += entry.rows
    _compare(report, watermark, table_config)
    if unknown:
        report.problems[:0] = unknown
        report.verdict = "unknown"
    return report


def _write_mode(table_config: TableConfig, watermark: Watermark) -> str:
    if table_config.cdc_strategy == "full_sync":
        return "replace"
    if table_config.write_mode:
        return table_config.write_mode
    return "merge" if watermark.primary_key else "append"


def _source_counts(probe: SourceProbe, watermark: Watermark) -> tuple[int, int]:
    """(rows extraction covers in all, rows up to the watermark's cursor)."""
    spec = probe.spec
    state = watermark.mysql_state
    if spec.strategy == "full_sync":
        total = probe.count([], [])
        return total, total if state.last_complete_snapshot else 0
    if spec.timestamp is None:  # id_only
        total = probe.count([], [])
        if state.cursor is None:
            return total, 0
        sql, params = after(spec.keys, [str(text) for text in state.cursor.key])
        return total, probe.count([f"NOT ({sql})"], params)
    ts = quote_mysql(spec.timestamp.name)
    lower: list[str] = [f"{ts} IS NOT NULL"]
    lower_params: list[object] = []
    start = probe.table_config.start_date
    if start is not None:
        zone = UTC if spec.timestamp_kind in ("epoch", "timestamp") else probe.zone
        midnight = datetime.combine(start, datetime.min.time(), zone)
        lower, lower_params = [f"{ts} >= %s"], [timestamp_text(midnight, spec, probe.zone)]
    total = probe.count(lower, lower_params)
    covered = 0
    if state.cursor is not None:
        texts = [state.cursor.timestamp, *state.cursor.key]
        sql, params = after(spec.order_columns, [str(text) for text in texts])
        covered = probe.count([*lower, f"NOT ({sql})"], [*lower_params, *params])
    if spec.keys:  # NULL-cursor rows are extracted by key, after the timestamp pass
        total += probe.count([f"{ts} IS NULL"], [])
        if state.null_cursor_key:
            sql, params = after(spec.keys, state.null_cursor_key)
            covered += probe.count([f"{ts} IS NULL", f"NOT ({sql})"], params)
    return total, covered


def _compare(report: CountReport, watermark: Watermark, table_config: TableConfig) -> None:
    problems, notes = report.problems, report.notes
    extracted, in_files = report.watermark_extracted, report.file_rows + report.imported_rows
    if extracted > in_files:
        problems.append(
            f"the watermark counts {extracted:,} extracted rows but the committed files hold "
            f"{in_files:,} ({extracted - in_files:,} more): the count is inflated or files are "
            "missing. If `s3rs s3clean list` shows every file, correct it with `s3rs "
            f"watermark-count set-count -p {report.pipeline} -t {report.table} --count "
            f"{in_files} --mode absolute`"
        )
    elif extracted < in_files:
        notes.append(
            f"the watermark counts {extracted:,} extracted rows, the committed files hold "
            f"{in_files:,}: files committed before a `watermark reset` or `set-count` are "
            "not in its count"
        )
    if report.waiting_files:
        notes.append(
            f"{report.waiting_files} file(s) ({report.waiting_rows:,} rows) wait to be loaded: "
            f"`s3rs sync -p {report.pipeline} -t {report.table} --redshift-only`"
        )
    if report.cutoff_files:
        notes.append(
            f"{report.cutoff_files} file(s) ({report.cutoff_rows:,} rows) were written before "
            f"the load cutoff {watermark.load_cutoff} and will not be loaded"
        )
    target, source, total = report.target_rows, report.source_rows, report.source_rows_total
    if (
        target is not None
        and report.watermark_loaded != target
        and watermark.redshift_state.status != "never"
    ):
        notes.append(
            f"the target changed since the last load: it had {report.watermark_loaded:,} rows "
            f"then, {target:,} now"
        )
    behind = bool(report.waiting_files)
    past_cursor = total - source if source is not None and total is not None else 0
    if past_cursor > 0:
        behind = True
        notes.append(
            f"{past_cursor:,} source row(s) are past the watermark's cursor and wait for "
            "the next extraction"
        )
    if target is None:
        if report.loaded_rows:
            problems.append(
                f"the target table {report.target_table} does not exist, but the ledger "
                f"records {report.loaded_rows:,} loaded rows: was it dropped? Delete its ledger "
                "rows and load again, or restore the table"
            )
        else:
            behind = behind or in_files > 0 or bool(total)
    elif report.write_mode == "append":
        if target != report.loaded_rows:
            problems.append(
                f"the target has {target:,} rows but the ledger records {report.loaded_rows:,} "
                f"loaded ({_differ(target, report.loaded_rows)}): rows were changed in the "
                "target outside s3rs"
            )
    elif source is not None and total is not None:
        if report.write_mode == "replace":
            if not behind and target != total:
                behind = True
                notes.append(
                    f"the source has {total:,} rows now, the last snapshot loaded {target:,}; "
                    "the next sync takes a new snapshot"
                )
        elif target > total:
            problems.append(
                f"the target has {target:,} rows, the source {total:,} "
                f"({target - total:,} more): rows deleted in the source stay in the target "
                "until their window is refreshed (Dagster: materialize with refresh)"
            )
        elif not behind and target < source:
            problems.append(
                f"the target has {target:,} rows, the source {source:,} up to the watermark "
                f"(the target is short by {source - target:,})"
                + (
                    f"; {report.cutoff_files} file(s) before the load cutoff were not loaded"
                    if report.cutoff_files
                    else ""
                )
            )
    if problems:
        report.verdict = "mismatch"
    elif behind:
        report.verdict = "behind"


def _differ(a: int, b: int) -> str:
    return f"{abs(a - b):,} {'more' if a > b else 'fewer'}"
