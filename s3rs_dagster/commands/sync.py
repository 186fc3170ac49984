"""`s3rs sync`: MySQL -> S3 Parquet -> warehouse, for one table or a whole pipeline."""

from __future__ import annotations

import sys
import threading
import time
from dataclasses import asdict
from typing import Any

import click

from s3rs_dagster.commands.common import (
    EXIT_FAILED,
    Context,
    echo_json,
    handled,
    pipeline_option,
    resolve_pipeline,
    size_text,
)
from s3rs_dagster.core.extract import ExtractReport, Progress
from s3rs_dagster.core.load import LoadReport
from s3rs_dagster.core.sync import TableRun, sync_pipeline


@click.command()
@pipeline_option
@click.option(
    "-t",
    "--table",
    "tables",
    multiple=True,
    help="Table (schema.table, or the bare name); repeat for several. Default: all.",
)
@click.option("--backup-only", is_flag=True, help="MySQL -> S3 only: extract, do not load.")
@click.option("--redshift-only", is_flag=True, help="S3 -> warehouse only: load existing files.")
@click.option(
    "--limit",
    type=click.IntRange(min=1),
    help="Rows per extraction chunk; alone, at most this many rows per table this run. "
    "Loading is not limited.",
)
@click.option(
    "--max-chunks",
    type=click.IntRange(min=1),
    help="Chunks per table at most (default: 1 with --limit, else no limit). "
    "Loading is not limited.",
)
@click.option(
    "--dry-run",
    is_flag=True,
    help="Write nothing; say what would be extracted, and which files would be loaded and why.",
)
@click.option("--json-output", is_flag=True, help="Print the run's report as JSON.")
@click.option(
    "--adopt-strays",
    is_flag=True,
    help="Load Parquet files s3rs wrote that no manifest lists (e.g. restored by hand).",
)
@click.option("-v", "--verbose", is_flag=True, help="Show every file decision and the SQL.")
@click.pass_obj
@handled
def sync(
    obj: Context,
    pipeline: str | None,
    tables: tuple[str, ...],
    backup_only: bool,
    redshift_only: bool,
    limit: int | None,
    max_chunks: int | None,
    dry_run: bool,
    json_output: bool,
    adopt_strays: bool,
    verbose: bool,
) -> None:
    """Back up tables from MySQL to S3 as Parquet, then load them into the warehouse.

    --limit and --max-chunks bound extraction only: --limit N alone extracts at most N rows
    per table (one chunk), with --max-chunks M at most N x M; without --limit, chunks of
    processing.batch_size until caught up. The load takes every committed file not loaded
    yet (after the watermark's cutoff), whoever wrote it. Exits 0 when every table succeeded,
    1 when any failed (named), 2 on a usage or config error.

    \b
    Examples:
      s3rs sync -p us_dw -t settlement.settle_orders
      s3rs sync -p us_dw -t settle_orders --backup-only --limit 1000
      s3rs sync -p us_dw -t settle_orders --redshift-only --verbose
      s3rs sync -p us_dw --backup-only --limit 10000 --max-chunks 5
      s3rs sync -p us_dw -t settle_orders --dry-run
    """
    if backup_only and redshift_only:
        raise click.UsageError("--backup-only and --redshift-only exclude each other")
    if redshift_only and (limit or max_chunks):
        raise click.UsageError(
            "--limit and --max-chunks bound extraction, and --redshift-only does not extract"
        )
    cfg = obj.config
    pipeline = resolve_pipeline(cfg, pipeline, tables[0] if len(tables) == 1 else None)
    names = [cfg.table(pipeline, name)[0] for name in tables] or None
    chunks = max_chunks if max_chunks is not None else (1 if limit else None)
    reporter = _ProgressPrinter(enabled=not json_output)
    with obj.run_log("sync", verbose=verbose) as log:
        runs = sync_pipeline(
            cfg,
            pipeline,
            names,
            extract=not redshift_only,
            load=not backup_only,
            limit=limit,
            max_chunks=chunks,
            dry_run=dry_run,
            adopt_strays=adopt_strays,
            progress=reporter,
        )
        failed = [run.table for run in runs if not run.ok]
        log.result = {
            "pipeline": pipeline,
            "tables": [_run_json(run) for run in runs],
            "failed": failed,
        }
        if json_output:
            echo_json(log.result["tables"])
        else:
            for run in runs:
                if run.extract is not None:
                    _print_extract(run.extract, limit, max_chunks)
                if run.load is not None:
                    _print_load(run.load, verbose=verbose or obj.verbose or dry_run)
                    if dry_run and run.extract is not None:
                        click.echo(
                            "  (the files this run would extract are not listed: they do not "
                            "exist yet; they would be loaded too)"
                        )
                _print_bounds(run, limit, chunks)
            ok = len(runs) - len(failed)
            click.echo(f"{len(runs)} table(s): {ok} succeeded, {len(failed)} failed")
            if log.log_path is not None:
                click.echo(f"log: {log.log_path}  summary: {log.summary_path}", err=True)
        if failed:
            if not json_output:
                click.secho(f"failed: {', '.join(failed)}", fg="red", err=True)
            sys.exit(EXIT_FAILED)


class _ProgressPrinter:
    """One line per table at most every second on stderr: rows, files, size and rate."""

    def __init__(self, *, enabled: bool) -> None:
        self.enabled = enabled
        self._last: dict[str, float] = {}
        self._lock = threading.Lock()

    def __call__(self, progress: Progress) -> None:
        if not self.enabled:
            return
        now = time.monotonic()
        with self._lock:
            if now - self._last.get(progress.table, 0.0) < 1.0:
                return
            self._last[progress.table] = now
        click.echo(
            f"  {progress.table}: {progress.rows:,} rows, {progress.files} files, "
            f"{size_text(progress.bytes)}, {progress.rows_per_second:,.0f} rows/s",
            err=True,
        )


def _watermark_text(summary: dict[str, Any] | None) -> str:
    if not summary or summary.get("status") == "never":
        return "(none)"
    return (
        f"{summary.get('last_timestamp') or '-'} / id {summary.get('last_id')} "
        f"({summary.get('total_rows'):,} rows, {summary.get('status')})"
    )


def _print_extract(report: ExtractReport, limit: int | None, max_chunks: int | None) -> None:
    colour = "green" if report.ok else "red"
    if report.dry_run is not None:
        plan = report.dry_run
        click.secho(f"{report.table}: dry run, nothing written", fg=colour)
        click.echo(
            f"  would extract {plan.rows_to_extract:,} of {plan.rows_pending:,} pending rows in "
            f"{plan.chunks} chunk(s), after {plan.from_cursor or 'the beginning'} "
            f"up to {plan.to_bound or 'the end'}"
        )
        if plan.initial_snapshot is not None:
            snapshot = plan.initial_snapshot
            click.echo(
                f"  initial snapshot in primary-key order (after key "
                f"{snapshot['after_key'] or 'none'}) of the rows stamped before "
                f"{snapshot['bound']}, then incrementally"
            )
    elif report.ok:
        click.secho(
            f"{report.table}: extracted {report.rows:,} rows in {report.files} file(s), "
            f"{size_text(report.bytes)}, {report.seconds:.1f}s, "
            f"{report.rows_per_second:,.0f} rows/s",
            fg=colour,
        )
        click.echo(
            f"  watermark: {_watermark_text(report.watermark_before)} -> "
            f"{_watermark_text(report.watermark_after)}"
        )
    else:
        click.secho(f"{report.table}: EXTRACT FAILED: {report.error}", fg=colour)
    if report.chunk_limit_reached:
        if max_chunks is None and limit:
            click.echo(f"  stopped at --limit {limit:,} rows; the rest waits for the next run")
        else:
            click.echo(
                f"  stopped at --max-chunks {max_chunks} (chunks of {limit or 'batch_size'} "
                "rows); the rest waits for the next run"
            )
    for column, count in sorted(report.zero_dates.items()):
        click.echo(f"  {count:,} zero dates in {column} became NULL")
    for warning in report.warnings:
        click.secho(f"  warning: {warning}", fg="yellow")


def _print_load(report: LoadReport, *, verbose: bool) -> None:
    colour = "green" if report.ok else "red"
    where = f"{report.target}.{report.target_table}" if report.target_table else report.target
    if report.status == "dry_run":
        click.secho(
            f"{report.table}: dry run: would load {report.files} file(s), {report.rows:,} rows "
            f"into {where} ({report.write_mode})",
            fg=colour,
        )
    elif report.status == "nothing_to_do":
        waiting = sum(1 for decision in report.decisions if not decision.include)
        click.secho(
            f"{report.table}: nothing to load into {where}: no new files"
            + (f" ({waiting} file(s) skipped, see --verbose)" if waiting else ""),
            fg=colour,
        )
    elif report.ok:
        click.secho(
            f"{report.table}: loaded {report.files} file(s), {report.rows:,} rows into {where} "
            f"({report.write_mode}) in {report.seconds:.1f}s; the target now has "
            f"{report.target_rows:,} rows",
            fg=colour,
        )
    else:
        click.secho(f"{report.table}: LOAD FAILED: {report.error}", fg=colour)
    if verbose:
        for decision in report.decisions:
            verb = "load" if decision.include else "skip"
            click.echo(f"  {verb} {decision.key} ({decision.rows:,} rows): {decision.reason}")
    for key in report.strays[:20]:
        click.echo(f"  stray (in no manifest, not loaded; see --adopt-strays): {key}")
    for warning in report.warnings:
        click.secho(f"  note: {warning}", fg="yellow")


def _print_bounds(run: TableRun, limit: int | None, chunks: int | None) -> None:
    """Say plainly that --limit bounded extraction and not the load (the Q&A's first worry)."""
    if not limit or run.extract is None or run.load is None or run.load.status != "success":
        return
    new = set(run.extract.file_keys)
    loaded = [decision for decision in run.load.decisions if decision.include]
    older = [decision for decision in loaded if decision.key not in new]
    cap = f"{limit * chunks:,} rows" if chunks else f"chunks of {limit:,} rows"
    click.echo(
        f"  --limit bounded extraction only ({cap}: {run.extract.rows:,} rows extracted); the "
        f"load stage loaded all {len(loaded)} waiting file(s), {run.load.rows:,} rows, "
        f"{len(older)} of them written by earlier runs"
    )


def _run_json(run: TableRun) -> dict[str, Any]:
    data: dict[str, Any] = {"table": run.table, "ok": run.ok}
    for stage, report in (("extract", run.extract), ("load", run.load)):
        if report is not None:
            data[stage] = {**asdict(report), "ok": report.ok}
            data[stage]["rows_per_second"] = round(report.rows_per_second, 1)
    return data
