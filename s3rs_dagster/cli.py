"""`s3rs`: the command line. A thin shell over the core; user mistakes exit 2, no traceback."""

from __future__ import annotations

import json
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import asdict
from functools import wraps
from typing import Any, TypeVar

import click

from s3rs_dagster import __version__
from s3rs_dagster.config import CONFIG_ENV_VAR, Config, ConfigError, load_config
from s3rs_dagster.core.extract import ExtractReport, Progress
from s3rs_dagster.core.load import LoadReport
from s3rs_dagster.core.sync import TableRun, sync_pipeline

EXIT_FAILED = 1
EXIT_USAGE = 2

F = TypeVar("F", bound=Callable[..., Any])


def _fail(message: str, code: int = EXIT_USAGE) -> None:
    click.secho(f"Error: {message}", fg="red", err=True)
    sys.exit(code)


def user_errors(func: F) -> F:
    """Turn the errors a user can fix into a message and exit code 2, never a traceback."""

    @wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except ConfigError as exc:
            _fail(str(exc))

    return wrapper  # type: ignore[return-value]


class Context:
    """What every command shares: the --config option, loaded on first use."""

    def __init__(self, config_path: str | None, verbose: bool) -> None:
        self.config_path = config_path
        self.verbose = verbose
        self._config: Config | None = None

    @property
    def config(self) -> Config:
        if self._config is None:
            self._config = load_config(self.config_path)
        return self._config


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.option(
    "--config",
    "config_path",
    metavar="PATH",
    help=f"pipelines.yaml to use (default: ${CONFIG_ENV_VAR}, else ./pipelines.yaml).",
)
@click.option("-v", "--verbose", is_flag=True, help="Show SQL and every decision.")
@click.version_option(__version__, prog_name="s3rs")
@click.pass_context
def cli(ctx: click.Context, config_path: str | None, verbose: bool) -> None:
    """Back up MySQL tables to S3 as Parquet and load them into Redshift, exactly once.

    \b
    Example:
      s3rs --config pipelines.yaml config validate
    """
    ctx.obj = Context(config_path, verbose)


@cli.group()
def config() -> None:
    """Check and inspect pipelines.yaml.

    \b
    Example:
      s3rs config validate
    """


@config.command("validate")
@click.pass_obj
@user_errors
def config_validate(obj: Context) -> None:
    """Validate the config file and list its pipelines and tables.

    Exits 0 when the file is valid, 2 (with every problem and its key path) when not.

    \b
    Example:
      s3rs --config pipelines.yaml config validate
    """
    cfg = obj.config
    click.echo(f"{cfg.source_file}: valid")
    click.echo(f"storage: {cfg.storage.url}")
    for name, pipeline in sorted(cfg.pipelines.items()):
        target = cfg.connections.targets[pipeline.target]
        source = cfg.connections.sources[pipeline.source]
        via = " via ssh" if source.ssh_tunnel.enabled else ""
        click.echo(
            f"pipeline {name}: {pipeline.source}{via} -> {pipeline.target} ({target.type}), "
            f"{len(pipeline.tables)} table(s), {pipeline.processing.strategy}"
        )
        width = max(len(table) for table in pipeline.tables)
        for table_name, table in sorted(pipeline.tables.items()):
            cursor = table.cdc_timestamp_column or table.cdc_id_column or "-"
            click.echo(
                f"  {table_name:<{width}}  {table.cdc_strategy:<14} cursor={cursor:<12} "
                f"partitioning={table.partitioning}"
            )


@cli.command()
@click.option("-p", "--pipeline", required=True, help="Pipeline name from pipelines.yaml.")
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
    help="Rows per extraction chunk (default: processing.batch_size). Loading is not limited.",
)
@click.option(
    "--max-chunks",
    type=click.IntRange(min=1),
    help="Chunks per table at most; the rest waits for the next run. Loading is not limited.",
)
@click.option("--dry-run", is_flag=True, help="Write nothing; say what would be extracted.")
@click.option("--json-output", is_flag=True, help="Print the run's report as JSON.")
@click.option(
    "--adopt-strays",
    is_flag=True,
    help="Load Parquet files s3rs wrote that no manifest lists (e.g. restored by hand).",
)
@click.option("-v", "--verbose", is_flag=True, help="Show every file decision.")
@click.pass_obj
@user_errors
def sync(
    obj: Context,
    pipeline: str,
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

    --limit and --max-chunks bound extraction only: at most LIMIT x MAX_CHUNKS new rows per
    table per run; the load takes every committed file not loaded yet (after the watermark's
    cutoff). Exits 0 when every table succeeded, 1 when any failed, 2 on a usage error.

    \b
    Examples:
      s3rs sync -p us_dw -t settlement.settle_orders
      s3rs sync -p us_dw -t settlement.settle_orders --backup-only
      s3rs sync -p us_dw -t settle_orders --redshift-only
      s3rs sync -p us_dw --backup-only --limit 10000 --max-chunks 5
      s3rs sync -p us_dw -t settle_orders --backup-only --dry-run
    """
    if backup_only and redshift_only:
        raise click.UsageError("--backup-only and --redshift-only exclude each other")
    cfg = obj.config
    names = list(tables) or None
    for name in names or []:
        cfg.table(pipeline, name)
    reporter = _ProgressPrinter(enabled=not json_output)
    runs = sync_pipeline(
        cfg,
        pipeline,
        names,
        extract=not redshift_only,
        load=not backup_only,
        limit=limit,
        max_chunks=max_chunks,
        dry_run=dry_run,
        adopt_strays=adopt_strays,
        progress=reporter,
    )
    if json_output:
        click.echo(json.dumps([_run_json(run) for run in runs], indent=2, default=str))
    else:
        for run in runs:
            if run.extract is not None:
                _print_extract(run.extract)
            if run.load is not None:
                _print_load(run.load, verbose=verbose or obj.verbose or dry_run)
    failed = [run.table for run in runs if not run.ok]
    if failed:
        if not json_output:
            click.secho(f"failed: {', '.join(failed)}", fg="red", err=True)
        sys.exit(EXIT_FAILED)


class _ProgressPrinter:
    """One line per table at most every second: rows, files, size and rate."""

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
            f"{_size(progress.bytes)}, {progress.rows_per_second:,.0f} rows/s",
            err=True,
        )


def _size(count: int) -> str:
    value = float(count)
    for unit in ("B", "KB", "MB", "GB"):
        if value < 1024 or unit == "GB":
            return f"{value:,.1f} {unit}" if unit != "B" else f"{count} B"
        value /= 1024
    return f"{value:,.1f} TB"


def _watermark_text(summary: dict[str, Any] | None) -> str:
    if not summary or summary.get("status") == "never":
        return "(none)"
    return (
        f"{summary.get('last_timestamp') or '-'} / id {summary.get('last_id')} "
        f"({summary.get('total_rows'):,} rows, {summary.get('status')})"
    )


def _print_extract(report: ExtractReport) -> None:
    colour = "green" if report.ok else "red"
    if report.dry_run is not None:
        plan = report.dry_run
        click.secho(f"{report.table}: dry run, nothing written", fg=colour)
        click.echo(
            f"  would extract {plan.rows_to_extract:,} of {plan.rows_pending:,} pending rows in "
            f"{plan.chunks} chunk(s), after {plan.from_cursor or 'the beginning'} "
            f"up to {plan.to_bound or 'the end'}"
        )
    elif report.ok:
        click.secho(
            f"{report.table}: extracted {report.rows:,} rows in {report.files} file(s), "
            f"{_size(report.bytes)}, {report.seconds:.1f}s, {report.rows_per_second:,.0f} rows/s",
            fg=colour,
        )
        click.echo(
            f"  watermark: {_watermark_text(report.watermark_before)} -> "
            f"{_watermark_text(report.watermark_after)}"
        )
    else:
        click.secho(f"{report.table}: FAILED: {report.error}", fg=colour)
    if report.chunk_limit_reached:
        click.echo("  stopped at --max-chunks; the rest waits for the next run")
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


def _run_json(run: TableRun) -> dict[str, Any]:
    data: dict[str, Any] = {"table": run.table, "ok": run.ok}
    for stage, report in (("extract", run.extract), ("load", run.load)):
        if report is not None:
            data[stage] = {**asdict(report), "ok": report.ok}
            data[stage]["rows_per_second"] = round(report.rows_per_second, 1)
    return data


def main() -> None:
    """Console-script entry point."""
    cli(prog_name="s3rs")
