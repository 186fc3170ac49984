"""`s3rs s3clean list|clean`: a table's data files in storage."""

from __future__ import annotations

import sys
from datetime import UTC, datetime

import click

from s3rs_dagster.adapters.storage import open_storage
from s3rs_dagster.commands.common import (
    EXIT_FAILED,
    Context,
    echo_json,
    handled,
    json_option,
    pipeline_option,
    render_table,
    resolve_pipeline,
    size_text,
)
from s3rs_dagster.core.clean import (
    CleanPlan,
    Listing,
    execute_clean,
    list_files,
    parse_age,
    plan_clean,
)


@click.group()
def s3clean() -> None:
    """List a table's files in storage, and delete old ones that are loaded.

    \b
    Examples:
      s3rs s3clean list -t settle_orders --show-timestamps
      s3rs s3clean clean -t settle_orders --older-than 7d --dry-run
    """


def _table_option(func: click.decorators.FC) -> click.decorators.FC:
    return click.option(
        "-t",
        "--table",
        required=True,
        metavar="TABLE",
        help="Table: schema.table, or the bare name when it is unambiguous.",
    )(func)


@s3clean.command("list")
@_table_option
@pipeline_option
@click.option(
    "--show-timestamps",
    is_flag=True,
    help="Show when each file was written, and the files per day.",
)
@json_option
@click.pass_obj
@handled
def s3clean_list(
    obj: Context, table: str, pipeline: str | None, show_timestamps: bool, json_output: bool
) -> None:
    """List the table's files: state, size, age; then count, total size and age histogram.

    A file's state is loaded (the target's ledger holds it), waiting (committed, not loaded
    yet), or stray (in no manifest: never loaded).

    \b
    Examples:
      s3rs s3clean list -t settle_orders
      s3rs s3clean list -p us_dw -t settle_orders --show-timestamps
    """
    cfg = obj.config
    pipeline = resolve_pipeline(cfg, pipeline, table)
    listing = list_files(cfg, pipeline, table)
    now = datetime.now(UTC)
    if json_output:
        echo_json(
            {
                "pipeline": listing.pipeline,
                "table": listing.table,
                "prefix": listing.prefix_uri,
                "files": listing.files,
                "count": len(listing.files),
                "total_bytes": listing.total_bytes,
                "age_histogram": listing.age_histogram(now),
                "by_day": listing.by_day(),
                "ledger_error": listing.ledger_error,
            }
        )
        return
    if listing.ledger_error:
        click.secho(f"warning: {listing.ledger_error}", fg="yellow", err=True)
    headers = ["state", "size", "age"] + (["written"] if show_timestamps else []) + ["file"]
    rows = [
        [f.kind, size_text(f.size), _age(now - f.written_at)]
        + ([f.written_at.strftime("%Y-%m-%d %H:%M:%S")] if show_timestamps else [])
        + [f.name]
        for f in listing.files
    ]
    if rows:
        click.echo(render_table(headers, rows))
    _print_summary(listing, now, by_day=show_timestamps)


def _print_summary(listing: Listing, now: datetime, *, by_day: bool) -> None:
    click.echo(
        f"{listing.prefix_uri}/: {len(listing.files)} file(s), {size_text(listing.total_bytes)}"
    )
    histogram = [
        (label, files, size_text(size)) for label, files, size in listing.age_histogram(now)
    ]
    click.echo(render_table(("age", "files", "size"), histogram))
    if by_day:
        days = [(day, files, size_text(size)) for day, files, size in listing.by_day()]
        click.echo(render_table(("written (UTC day)", "files", "size"), days))


def _age(delta: object) -> str:
    seconds = int(delta.total_seconds())  # type: ignore[attr-defined]
    if seconds < 3600:
        return f"{seconds // 60}m"
    if seconds < 86400:
        return f"{seconds // 3600}h"
    return f"{seconds // 86400}d"


@s3clean.command("clean")
@_table_option
@pipeline_option
@click.option(
    "--older-than",
    metavar="AGE",
    help="Only files written longer ago than AGE: 90s, 30m, 12h, 7d, 2w.",
)
@click.option(
    "--pattern",
    metavar="GLOB",
    help="Only files whose name (or path inside the table's folder) matches, e.g. 'test_*'.",
)
@click.option("--dry-run", is_flag=True, help="Say what would be deleted; delete nothing.")
@click.option(
    "--force",
    is_flag=True,
    help="Also delete files the target's ledger does not hold as loaded (their rows are lost).",
)
@json_option
@click.pass_obj
@handled
def s3clean_clean(
    obj: Context,
    table: str,
    pipeline: str | None,
    older_than: str | None,
    pattern: str | None,
    dry_run: bool,
    force: bool,
    json_output: bool,
) -> None:
    """Delete a table's loaded files (old ones, or those matching a pattern).

    Only files under the table's own folder are considered. A file is deleted only when the
    target's ledger holds it as loaded, unless --force. Prints every file it deletes.

    \b
    Examples:
      s3rs s3clean clean -t settle_orders --older-than 7d --dry-run
      s3rs s3clean clean -t settle_orders --older-than 30d
      s3rs s3clean clean -t settle_orders --pattern 'test_*' --force
    """
    if older_than is None and pattern is None:
        raise click.UsageError("give --older-than AGE and/or --pattern GLOB")
    age = parse_age(older_than) if older_than is not None else None
    cfg = obj.config
    pipeline = resolve_pipeline(cfg, pipeline, table)
    listing = list_files(cfg, pipeline, table)
    plan = plan_clean(listing, older_than=age, pattern=pattern, force=force)
    if not dry_run and plan.delete:
        with obj.run_log("s3clean clean") as log:
            execute_clean(plan, storage=open_storage(cfg.storage))
            log.result = _clean_json(plan, dry_run)
    if json_output:
        echo_json(_clean_json(plan, dry_run))
    else:
        _print_clean(plan, dry_run)
    if listing.ledger_error and plan.kept:
        sys.exit(EXIT_FAILED)


def _clean_json(plan: CleanPlan, dry_run: bool) -> dict[str, object]:
    return {
        "pipeline": plan.listing.pipeline,
        "table": plan.listing.table,
        "dry_run": dry_run,
        "would_delete" if dry_run else "deleted": [f.key for f in plan.delete],
        "bytes": plan.delete_bytes,
        "kept": [{"key": f.key, "reason": reason} for f, reason in plan.kept],
        "ledger_error": plan.listing.ledger_error,
    }


def _print_clean(plan: CleanPlan, dry_run: bool) -> None:
    listing = plan.listing
    if listing.ledger_error:
        click.secho(f"warning: {listing.ledger_error}", fg="yellow", err=True)
    verb = "would delete" if dry_run else "deleted"
    for stored in plan.delete:
        click.echo(f"{verb} {stored.name} ({size_text(stored.size)}, {stored.kind})")
    for stored, reason in plan.kept:
        click.echo(f"kept {stored.name}: {reason}")
    click.echo(
        f"{listing.table}: {verb} {len(plan.delete)} file(s), {size_text(plan.delete_bytes)}; "
        f"kept {len(plan.kept)} matching file(s)"
    )
    if any(stored.kind in ("waiting", "unknown") for stored in plan.delete) and not dry_run:
        click.secho(
            "note: some deleted files were never loaded; the next load stops at them until the "
            "load cutoff is past them (`s3rs watermark set`)",
            fg="yellow",
        )
