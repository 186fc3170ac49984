"""`s3rs watermark get|set|reset` and `s3rs watermark-count validate-counts|set-count`."""

from __future__ import annotations

import sys
from dataclasses import asdict
from typing import Any

import click

from s3rs_dagster.commands.common import (
    EXIT_FAILED,
    EXIT_USAGE,
    Context,
    echo_json,
    fail,
    handled,
    json_option,
    pipeline_option,
    render_table,
    resolve_pipeline,
    size_text,
)
from s3rs_dagster.core.counts import CountReport, count_table
from s3rs_dagster.core.legacy_import import (
    LegacyDocumentError,
    LegacyImportError,
    import_legacy_watermark,
    read_legacy_document,
)
from s3rs_dagster.core.watermark_admin import (
    ACCEPTED_TIMESTAMPS,
    WatermarkChange,
    plan_reset,
    read_watermark,
    reset_watermark,
    set_count,
    set_watermark,
)


def table_option(*, required: bool = True) -> Any:
    return click.option(
        "-t",
        "--table",
        required=required,
        metavar="TABLE",
        help="Table: schema.table, or the bare name when it is unambiguous.",
    )


@click.group()
def watermark() -> None:
    """Show and change a table's watermark (where extraction resumes, what loading skips).

    \b
    Examples:
      s3rs watermark get -p us_dw -t settle_orders
      s3rs watermark set -p us_dw -t settle_orders --timestamp '2025-09-09 00:00:00'
      s3rs watermark reset -p us_dw -t settle_orders
      s3rs watermark import -p us_dw -t settle_orders --from s3://old-bucket/settle_orders.json
    """


@watermark.command("get")
@pipeline_option
@table_option()
@click.option(
    "--show-files",
    is_flag=True,
    help="List every committed file and whether the target's ledger holds it as loaded.",
)
@json_option
@click.pass_obj
@handled
def watermark_get(
    obj: Context, pipeline: str | None, table: str, show_files: bool, json_output: bool
) -> None:
    """Show a table's watermark: cursor, row counts, stage statuses, load cutoff.

    \b
    Examples:
      s3rs watermark get -p us_dw -t settle_orders
      s3rs watermark get -t settle_orders --show-files
    """
    cfg = obj.config
    pipeline = resolve_pipeline(cfg, pipeline, table)
    view = read_watermark(cfg, pipeline, table, show_files=show_files)
    wm = view.watermark
    if json_output:
        echo_json(
            {
                "pipeline": view.pipeline,
                "table": view.table,
                "uri": view.uri,
                "exists": view.exists,
                "watermark": wm.model_dump(mode="json"),
                "files": view.files,
                "ledger_error": view.ledger_error,
            }
        )
        return
    state, loaded = wm.mysql_state, wm.redshift_state
    click.echo(f"watermark of {view.pipeline}/{view.table} -> {view.target}")
    click.echo(f"  stored at:        {view.uri}" + ("" if view.exists else " (not written yet)"))
    rows = [
        ("MySQL status:", f"{state.status}" + _when(state.last_run_finished_at, "finished")),
        ("last_timestamp:", _text(state.last_timestamp)),
        ("last_id:", _text(state.last_id)),
        ("extracted rows:", f"{state.total_rows:,}"),
        ("Redshift status:", f"{loaded.status}" + _when(loaded.last_loaded_at, "loaded")),
        ("loaded rows:", f"{loaded.total_rows:,} (COUNT(*) of the target after the last load)"),
        ("load cutoff:", _text(wm.load_cutoff) + ("" if wm.load_cutoff else " (load every file)")),
    ]
    if state.last_error:
        rows.append(("last MySQL error:", state.last_error))
    if loaded.last_error:
        rows.append(("last load error:", loaded.last_error))
    for label, value in rows:
        click.echo(f"  {label:<17} {value}")
    if view.files is not None:
        click.echo(f"  files:            {len(view.files)} committed")
        if view.ledger_error:
            click.secho(f"  warning: {view.ledger_error}", fg="yellow")
        table_rows = [
            (f.state, f.rows, size_text(f.bytes), f.written_at.isoformat(), f.uri)
            for f in view.files
        ]
        click.echo(render_table(("state", "rows", "size", "written", "file"), table_rows))


def _text(value: Any) -> str:
    if value is None:
        return "-"
    return value.isoformat() if hasattr(value, "isoformat") else str(value)


def _when(moment: Any, verb: str) -> str:
    return f" ({verb} {moment.isoformat()})" if moment else ""


@watermark.command("set")
@pipeline_option
@table_option()
@click.option(
    "--timestamp",
    metavar="TIME",
    help="Where extraction resumes and the load cutoff, e.g. '2025-09-09 00:00:00'; without "
    "an offset it is read in the source's time_zone. Accepted: " + ", ".join(ACCEPTED_TIMESTAMPS),
)
@click.option(
    "--id",
    "id_value",
    metavar="N",
    help="Resume after (TIME, N) instead of at TIME; for id_only tables, after N.",
)
@json_option
@click.pass_obj
@handled
def watermark_set(
    obj: Context,
    pipeline: str | None,
    table: str,
    timestamp: str | None,
    id_value: str | None,
    json_output: bool,
) -> None:
    """Set where extraction resumes and which files the load skips.

    The next extraction takes the rows whose cursor timestamp is at or after TIME (with --id,
    those after (TIME, N)); files written at or before TIME are not loaded. Nothing is deleted.

    \b
    Examples:
      s3rs watermark set -p us_dw -t settle_orders --timestamp '2025-09-09 00:00:00'
      s3rs watermark set -p us_dw -t settle_orders --timestamp '2025-09-09T00:00:00+02:00'
      s3rs watermark set -p us_dw -t settle_orders --timestamp '2025-09-09 16:00:00' --id 80453182
    """
    cfg = obj.config
    pipeline = resolve_pipeline(cfg, pipeline, table)
    if timestamp is None and id_value is None:
        raise click.UsageError(
            "give --timestamp (and optionally --id), e.g. --timestamp 2025-09-09"
        )
    with obj.run_log("watermark set") as log:
        change = set_watermark(cfg, pipeline, table, timestamp=timestamp, id_value=id_value)
        log.result = change
    if json_output:
        echo_json(change)
        return
    _print_change(change, ("last_timestamp", "last_id", "load_cutoff"))


def _print_change(change: WatermarkChange, fields: tuple[str, ...]) -> None:
    click.echo(f"watermark of {change.pipeline}/{change.table} updated ({change.uri})")
    for name in fields:
        old, new = change.before.get(name), change.after.get(name)
        click.echo(f"  {name + ':':<16} {_text(old)} -> {_text(new)}")
    for note in change.notes:
        click.echo(f"  {note}")


@watermark.command("reset")
@pipeline_option
@table_option()
@click.option("--yes", "-y", is_flag=True, help="Do not ask for confirmation.")
@json_option
@click.pass_obj
@handled
def watermark_reset(
    obj: Context, pipeline: str | None, table: str, yes: bool, json_output: bool
) -> None:
    """Forget a table's progress: the next sync extracts it again from start_date.

    Says what it forgets and keeps, and asks first (unless --yes). Committed files and the
    target's ledger stay, so nothing is ever loaded twice; files written before the reset are
    not loaded afterwards.

    \b
    Examples:
      s3rs watermark reset -p us_dw -t settle_orders
      s3rs watermark reset -p us_dw -t settle_orders --yes
    """
    cfg = obj.config
    pipeline = resolve_pipeline(cfg, pipeline, table)
    plan = plan_reset(cfg, pipeline, table)
    if not plan.exists:
        click.echo(f"{plan.pipeline}/{plan.table} has no watermark yet: nothing to reset")
        return
    if not json_output or not yes:
        out = {"err": json_output}
        click.echo(f"Resetting the watermark of {plan.pipeline}/{plan.table} forgets:", **out)
        for item in plan.forgets:
            click.echo(f"  - {item}", **out)
        click.echo("and keeps:", **out)
        for item in plan.keeps:
            click.echo(f"  - {item}", **out)
    if not yes and not click.confirm("Reset it?", default=False, err=True):
        click.echo("Nothing was changed.", err=True)
        sys.exit(EXIT_FAILED)
    with obj.run_log("watermark reset") as log:
        reset_watermark(cfg, plan)
        log.result = plan
    if json_output:
        echo_json(plan)
    else:
        click.echo(f"watermark of {plan.pipeline}/{plan.table} reset ({plan.uri})")


@watermark.command("import")
@pipeline_option
@table_option()
@click.option(
    "--from",
    "source_uri",
    required=True,
    metavar="URI",
    help="The existing tool's v2 watermark JSON: s3://bucket/key, file:///path or a path.",
)
@click.option(
    "--dry-run", is_flag=True, help="Check and show what would be imported; write nothing."
)
@click.option(
    "--force",
    is_flag=True,
    help="Replace a watermark s3rs already keeps, or import a document whose stages did not "
    "both succeed.",
)
@click.pass_obj
@handled
def watermark_import(
    obj: Context, pipeline: str | None, table: str, source_uri: str, dry_run: bool, force: bool
) -> None:
    """Carry over the existing tool's v2 watermark: cursor, counts and processed files.

    The cursor and the row counts become this table's watermark; the files the old tool
    loaded are recorded in the target's ledger, so they are never loaded again. Run it once
    per table before the first `s3rs sync` (see docs/migration.md).

    \b
    Examples:
      s3rs watermark import -p us_dw -t settle_orders --from s3://old/wm.json --dry-run
      s3rs watermark import -p us_dw -t settle_orders --from ./settle_orders_watermark.json
    """
    cfg = obj.config
    pipeline = resolve_pipeline(cfg, pipeline, table)
    with obj.run_log("watermark import") as log:
        try:
            document = read_legacy_document(source_uri, config=cfg)
            report = import_legacy_watermark(
                cfg, pipeline, table, document, source_uri=source_uri, dry_run=dry_run, force=force
            )
        except LegacyDocumentError as exc:
            fail(str(exc), EXIT_USAGE)
            return
        except LegacyImportError as exc:
            fail(str(exc), EXIT_FAILED)
            return
        log.result = report
    for line in report.lines():
        click.echo(line)
    for line in report.warning_lines():
        click.echo(line, err=True)


# --------------------------------------------------------------------------- watermark-count


@click.group("watermark-count")
def watermark_count() -> None:
    """Check and correct row counts: source, files, target and watermark side by side.

    \b
    Examples:
      s3rs watermark-count validate-counts -p us_dw -t settle_orders
      s3rs watermark-count set-count -p us_dw -t settle_orders --count 2500000 --mode absolute
    """


@watermark_count.command("validate-counts")
@pipeline_option
@click.option(
    "-t",
    "--table",
    "tables",
    multiple=True,
    metavar="TABLE",
    help="Table (schema.table or bare name); repeat for several. Default: all of the pipeline.",
)
@json_option
@click.pass_obj
@handled
def validate_counts(
    obj: Context, pipeline: str | None, tables: tuple[str, ...], json_output: bool
) -> None:
    """Count a table's rows in the source, the files, the target and the watermark.

    Prints the counts side by side with a verdict (ok, behind, mismatch, unknown) and, for
    each disagreement, what differs by how much and how to fix it. Exits 1 on a mismatch or
    when a count could not be taken.

    \b
    Examples:
      s3rs watermark-count validate-counts -p us_dw -t settle_orders
      s3rs watermark-count validate-counts -p us_dw --json-output
    """
    cfg = obj.config
    pipeline = resolve_pipeline(cfg, pipeline, tables[0] if len(tables) == 1 else None)
    names = list(tables) or list(cfg.pipeline(pipeline).tables)
    reports = [count_table(cfg, pipeline, name) for name in names]
    if json_output:
        echo_json([_count_json(report) for report in reports])
    else:
        for report in reports:
            _print_counts(report)
    if not all(report.ok for report in reports):
        sys.exit(EXIT_FAILED)


def _count_json(report: CountReport) -> dict[str, Any]:
    return {**asdict(report), "ok": report.ok}


def _print_counts(report: CountReport) -> None:
    colour = {"ok": "green", "behind": "yellow"}.get(report.verdict, "red")
    click.secho(
        f"{report.pipeline}/{report.table} -> {report.target_table} ({report.write_mode}): "
        f"{report.verdict.upper()}",
        fg=colour,
    )
    rows = [
        ("source, up to the watermark", report.source_rows),
        ("source, all", report.source_rows_total),
        (f"committed files ({report.files})", report.file_rows),
        (f"loaded files ({report.loaded_files}, ledger)", report.loaded_rows),
        (f"waiting files ({report.waiting_files})", report.waiting_rows),
        ("target", report.target_rows),
        ("watermark: extracted", report.watermark_extracted),
        ("watermark: loaded", report.watermark_loaded),
    ]
    table = render_table(("count of", "rows"), rows)
    click.echo("\n".join(f"  {line}" for line in table.splitlines()))
    for problem in report.problems:
        click.secho(f"  problem: {problem}", fg="red")
    for note in report.notes:
        click.echo(f"  note: {note}")


@watermark_count.command("set-count")
@pipeline_option
@table_option()
@click.option("--count", required=True, type=int, help="The count (absolute) or the change.")
@click.option(
    "--mode",
    type=click.Choice(["absolute", "additive"]),
    default="absolute",
    show_default=True,
    help="absolute: the count becomes N; additive: N is added (may be negative).",
)
@json_option
@click.pass_obj
@handled
def set_count_command(
    obj: Context, pipeline: str | None, table: str, count: int, mode: str, json_output: bool
) -> None:
    """Correct the watermark's extracted-row count (mysql_state.total_rows).

    The loaded count is measured with COUNT(*) on the target after every load, so it is not
    set here. Use validate-counts first: it says which count is right.

    \b
    Examples:
      s3rs watermark-count set-count -p us_dw -t settle_orders --count 2500000 --mode absolute
      s3rs watermark-count set-count -t settle_orders --count -1000 --mode additive
    """
    cfg = obj.config
    pipeline = resolve_pipeline(cfg, pipeline, table)
    with obj.run_log("watermark-count set-count") as log:
        change = set_count(cfg, pipeline, table, count=count, mode=mode)  # type: ignore[arg-type]
        log.result = change
    if json_output:
        echo_json(change)
        return
    _print_change(change, ("total_rows",))
