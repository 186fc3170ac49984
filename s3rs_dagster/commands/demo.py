"""`s3rs demo`: the whole job on the embedded default, with nothing but Python."""

from __future__ import annotations

from pathlib import Path

import click

from s3rs_dagster.commands.common import EXIT_FAILED, fail, handled, render_table, size_text
from s3rs_dagster.core.demo import DEFAULT_ROWS, PIPELINE, TABLE, DemoError, run_demo


@click.command()
@click.option(
    "--dir",
    "folder",
    type=click.Path(file_okay=False, path_type=Path),
    default=Path("s3rs-demo"),
    show_default=True,
    help="Folder for the demo's source, lake, warehouse and pipelines.yaml (cleared if it "
    "holds a previous demo; refused if it holds anything else).",
)
@click.option(
    "--rows",
    type=click.IntRange(min=100, max=10_000_000),
    default=DEFAULT_ROWS,
    show_default=True,
    help="Orders in the sample source table.",
)
@handled
def demo(folder: Path, rows: int) -> None:
    """Run the whole job on the embedded default: SQLite -> Parquet files -> DuckDB.

    Builds a sample settle_orders table in SQLite, runs a full sync into a local Parquet lake
    and a DuckDB warehouse, changes the source (new and updated orders), runs an incremental
    sync, then validates the counts. No server is needed.

    \b
    Examples:
      s3rs demo
      s3rs demo --dir /tmp/s3rs-demo --rows 20000
    """
    try:
        report = run_demo(folder, rows=rows, echo=click.echo)
    except DemoError as exc:
        fail(str(exc))
        return
    rows_out = []
    for sync in report.syncs:
        rows_out.append(
            [
                f"{sync.name}: extract",
                sync.extract.rows,
                sync.extract.files,
                size_text(sync.extract.bytes),
                round(sync.extract.rate),
            ]
        )
        rows_out.append(
            [f"{sync.name}: load", sync.load.rows, sync.load.files, "", round(sync.load.rate)]
        )
    click.echo("")
    click.echo(render_table(["stage", "rows", "files", "size", "rows/s"], rows_out))
    counts = report.counts
    click.echo("")
    click.echo(
        f"counts: source {counts.source_rows_total or 0:,}, target {counts.target_rows or 0:,}, "
        f"watermark {counts.watermark_extracted:,} extracted / {counts.watermark_loaded:,} loaded"
    )
    for problem in counts.problems:
        click.echo(f"  problem: {problem}")
    failed = [sync for sync in report.syncs if not sync.ok]
    for sync in failed:
        click.echo(f"{sync.name} failed: {sync.error}", err=True)
    if report.ok:
        click.echo(f"counts agree. The demo took {report.seconds:.1f} s.")
    config = report.config_path
    click.echo("")
    click.echo("Look around:")
    click.echo(f"  s3rs --config {config} status")
    click.echo(f"  s3rs --config {config} watermark get -p {PIPELINE} -t {TABLE} --show-files")
    click.echo(f"  S3RS_CONFIG={config} dagster dev -m s3rs_dagster.defs")
    if not report.ok:
        fail("the demo did not finish cleanly (see above)", EXIT_FAILED)
