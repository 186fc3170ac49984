"""`s3rs status`: each table's watermark, last runs, files pending load, and lock holders."""

from __future__ import annotations

import sys

import click

from s3rs_dagster.commands.common import (
    EXIT_FAILED,
    Context,
    echo_json,
    handled,
    json_option,
    render_table,
)
from s3rs_dagster.core.status import TableStatus, table_status


@click.command()
@click.option(
    "-p",
    "--pipeline",
    "pipelines",
    multiple=True,
    metavar="PIPELINE",
    help="Pipeline to show; repeat for several. Default: every pipeline.",
)
@json_option
@click.pass_obj
@handled
def status(obj: Context, pipelines: tuple[str, ...], json_output: bool) -> None:
    """Show each table's watermark, last runs, files waiting to load, and who holds its locks.

    Exits 1 when some table's state could not be read (the reason is shown).

    \b
    Examples:
      s3rs status
      s3rs status -p us_dw --json-output
    """
    cfg = obj.config
    names = list(pipelines) or sorted(cfg.pipelines)
    statuses = [
        table_status(cfg, pipeline, table)
        for pipeline in names
        for table in cfg.pipeline(pipeline).tables
    ]
    if json_output:
        echo_json(statuses)
    else:
        _print(statuses)
    if not all(item.ok for item in statuses):
        sys.exit(EXIT_FAILED)


def _print(statuses: list[TableStatus]) -> None:
    rows = [
        (
            f"{item.pipeline}/{item.table}",
            item.last_timestamp or (str(item.last_id) if item.last_id is not None else None),
            item.extracted_rows,
            f"{item.extract_status} {_short(item.last_extract_at)}".strip(),
            f"{item.load_status} {_short(item.last_load_at)}".strip(),
            item.loaded_rows,
            item.pending_files,
            ", ".join(f"{lock.purpose} by {lock.hostname} pid {lock.pid}" for lock in item.locks)
            or None,
        )
        for item in statuses
    ]
    headers = (
        "table",
        "watermark",
        "extracted",
        "last extract",
        "last load",
        "loaded",
        "pending files",
        "lock",
    )
    click.echo(render_table(headers, rows))
    for item in statuses:
        for error in item.errors:
            click.secho(f"{item.pipeline}/{item.table}: {error}", fg="yellow")


def _short(moment: str | None) -> str:
    return moment[:19].replace("T", " ") if moment else ""
